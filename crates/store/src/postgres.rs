use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use localgem_core::{FileRecord, FilesCursor, InteractionRecord, RunState, Store, StoreError};
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use crate::record::{assemble, contiguous, encode, inserted, now_ms};

mod files;

/// Interactions in a PostgreSQL database, which any number of replicas may share.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

/// How long a query waits for a connection (a new one included) before the database counts as
/// unavailable: a database that is down answers within this, not after sqlx's default 30 s.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A failure of the database, classified: a database that cannot be reached now (down,
/// restarting, shutting down, no connection in time) is [`StoreError::Unavailable`]; a full
/// disk is [`StoreError::Full`]; anything else is [`StoreError::Backend`].
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let msg = format!("{db} (SQLSTATE {code})");
            match code.as_str() {
                // Class 08: connection exception. 57P01 admin shutdown, 57P02 crash shutdown,
                // 57P03 cannot connect now (starting up, shutting down, recovering); 53300 too
                // many connections: all "try again later".
                c if c.starts_with("08") => StoreError::Unavailable(msg),
                "57P01" | "57P02" | "57P03" | "53300" => StoreError::Unavailable(msg),
                // disk_full
                "53100" => StoreError::Full(msg),
                _ => StoreError::Backend(msg),
            }
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// A failed migration, classified like [`backend`] where the database failed.
fn migrate_failed(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) => backend(e),
        MigrateError::ExecuteMigration(e, version) => match backend(e) {
            StoreError::Backend(msg) => StoreError::Backend(format!("migration {version}: {msg}")),
            other => other,
        },
        other => StoreError::Backend(other.to_string()),
    }
}

impl PostgresStore {
    /// Connect to the database at `url` (`postgres://user:password@host:port/database`) and
    /// run pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server cannot be reached within a few seconds;
    /// [`StoreError::Backend`] if the URL is malformed, the login or a migration fails.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(backend)?;
        Self::connect_with(options).await
    }

    /// [`PostgresStore::connect`] with parsed options.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let server = format!("{}:{}", options.get_host(), options.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.application_name("localgem"))
            .await
            .map_err(|e| match backend(e) {
                // Which server, since the pool's own words ("pool timed out") do not say.
                StoreError::Unavailable(msg) => {
                    StoreError::Unavailable(format!("PostgreSQL at {server}: {msg}"))
                }
                other => other,
            })?;
        // Replicas starting together are safe: sqlx holds an advisory lock while migrating.
        sqlx::migrate!("./migrations-pg")
            .run(&pool)
            .await
            .map_err(migrate_failed)?;
        Ok(PostgresStore { pool })
    }

    /// Close the pool: wait for connections in use to come back, then close them all.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn insert_with(
        &self,
        r: &InteractionRecord,
        owner: Option<&str>,
        lease_until_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let e = encode(r)?;
        let res = sqlx::query(
            "INSERT INTO interactions (id, tenant, model, status, created, updated, \
             previous_interaction_id, input, output, usage, error, resolved_input, owner, \
             lease_until_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&r.id)
        .bind(&r.tenant)
        .bind(&r.model)
        .bind(r.status.as_str())
        .bind(r.created)
        .bind(r.updated)
        .bind(&r.previous_interaction_id)
        .bind(e.input)
        .bind(e.output)
        .bind(e.usage)
        .bind(&r.error)
        .bind(e.resolved)
        .bind(owner)
        .bind(lease_until_ms)
        .execute(&self.pool)
        .await;
        inserted(res, &r.id, backend)
    }
}

fn decode(row: &PgRow) -> Result<InteractionRecord, StoreError> {
    let status: String = row.try_get("status").map_err(backend)?;
    let input: String = row.try_get("input").map_err(backend)?;
    let output: String = row.try_get("output").map_err(backend)?;
    let usage: String = row.try_get("usage").map_err(backend)?;
    let resolved: Option<String> = row.try_get("resolved_input").map_err(backend)?;
    assemble(
        row.try_get("id").map_err(backend)?,
        row.try_get("tenant").map_err(backend)?,
        row.try_get("model").map_err(backend)?,
        &status,
        row.try_get("created").map_err(backend)?,
        row.try_get("updated").map_err(backend)?,
        row.try_get("previous_interaction_id").map_err(backend)?,
        [&input, &output, &usage],
        resolved.as_deref(),
        row.try_get("error").map_err(backend)?,
    )
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert(&self, r: &InteractionRecord) -> Result<(), StoreError> {
        self.insert_with(r, None, None).await
    }

    async fn insert_owned(
        &self,
        r: &InteractionRecord,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        self.insert_with(r, Some(owner), Some(lease_until_ms)).await
    }

    async fn finish_owned(&self, r: &InteractionRecord, owner: &str) -> Result<bool, StoreError> {
        let e = encode(r)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let res = sqlx::query(
            "UPDATE interactions SET status = $1, updated = $2, input = $3, output = $4, \
             usage = $5, error = $6, resolved_input = $7, lease_until_ms = NULL \
             WHERE id = $8 AND tenant = $9 AND owner = $10 \
             AND status IN ('in_progress', 'queued')",
        )
        .bind(r.status.as_str())
        .bind(r.updated)
        .bind(e.input)
        .bind(e.output)
        .bind(e.usage)
        .bind(&r.error)
        .bind(e.resolved)
        .bind(&r.id)
        .bind(&r.tenant)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM interaction_events WHERE id = $1")
            .bind(&r.id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(res.rows_affected() == 1)
    }

    async fn renew(&self, owner: &str, lease_until_ms: i64) -> Result<Vec<RunState>, StoreError> {
        let rows = sqlx::query(
            "UPDATE interactions SET lease_until_ms = $1 \
             WHERE owner = $2 AND status IN ('in_progress', 'queued') \
             RETURNING id, tenant, cancel_requested",
        )
        .bind(lease_until_ms)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(RunState {
                    id: row.try_get("id").map_err(backend)?,
                    tenant: row.try_get("tenant").map_err(backend)?,
                    cancel_requested: row.try_get("cancel_requested").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn request_cancel(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE interactions SET cancel_requested = TRUE \
             WHERE id = $1 AND tenant = $2 AND status IN ('in_progress', 'queued')",
        )
        .bind(id)
        .bind(tenant)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(res.rows_affected() == 1)
    }

    async fn fail_owned(&self, owner: &str, reason: &str) -> Result<u64, StoreError> {
        // `updated`: unix seconds, truncated like SQLite's unixepoch().
        let res = sqlx::query(
            "UPDATE interactions SET status = 'failed', error = $1, \
             updated = FLOOR(EXTRACT(EPOCH FROM now()))::BIGINT, lease_until_ms = NULL \
             WHERE status IN ('in_progress', 'queued') AND (owner = $2 OR owner IS NULL)",
        )
        .bind(reason)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(res.rows_affected())
    }

    async fn fail_expired(&self, now_ms: i64, reason: &str) -> Result<u64, StoreError> {
        let res = sqlx::query(
            "UPDATE interactions SET status = 'failed', error = $1, \
             updated = FLOOR(EXTRACT(EPOCH FROM now()))::BIGINT, lease_until_ms = NULL \
             WHERE status IN ('in_progress', 'queued') AND lease_until_ms < $2",
        )
        .bind(reason)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(res.rows_affected())
    }

    async fn chain(
        &self,
        tenant: &str,
        id: &str,
        limit: usize,
    ) -> Result<Vec<InteractionRecord>, StoreError> {
        let rows = sqlx::query(
            "WITH RECURSIVE chain(id, depth) AS ( \
               SELECT id, 0::BIGINT FROM interactions WHERE id = $1 AND tenant = $2 \
               UNION ALL \
               SELECT i.previous_interaction_id, c.depth + 1 FROM chain c \
               JOIN interactions i ON i.id = c.id \
               WHERE i.previous_interaction_id IS NOT NULL AND c.depth + 1 < $3 \
             ) \
             SELECT i.* FROM chain c JOIN interactions i ON i.id = c.id AND i.tenant = $2 \
             ORDER BY c.depth",
        )
        .bind(id)
        .bind(tenant)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        contiguous(rows.iter().map(decode))
    }

    async fn append_events(
        &self,
        id: &str,
        first_seq: u64,
        events: &[String],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = (0..events.len() as u64)
            .map(|i| i64::try_from(first_seq + i).unwrap_or(i64::MAX))
            .collect();
        // Arrays rather than one placeholder per value: any batch size fits in one statement.
        sqlx::query(
            "INSERT INTO interaction_events (id, seq, event) \
             SELECT $1, s, e FROM UNNEST($2::BIGINT[], $3::TEXT[]) AS t(s, e) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(seqs)
        .bind(events)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn events_after(
        &self,
        id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let after = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let rows = sqlx::query(
            "SELECT seq, event FROM interaction_events WHERE id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64, _>("seq").map_err(backend)?.max(0) as u64,
                    row.try_get("event").map_err(backend)?,
                ))
            })
            .collect()
    }

    async fn note_forget(&self, tenant: &str) -> Result<(), StoreError> {
        // Readers go on from the highest position they saw, so positions must become visible
        // in order. A sequence alone does not ensure that (a later value can commit first);
        // a self-conflicting lock, which plain reads do not wait for, makes writers take turns.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("LOCK TABLE kv_forgets IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO kv_forgets (tenant, at_ms) VALUES ($1, $2)")
            .bind(tenant)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn forgets_after(&self, after: Option<i64>) -> Result<Vec<(i64, String)>, StoreError> {
        let Some(after) = after else {
            let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM kv_forgets")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            return Ok(vec![(row.try_get("seq").map_err(backend)?, String::new())]);
        };
        let rows = sqlx::query(
            "SELECT seq, tenant FROM kv_forgets WHERE seq > $1 ORDER BY seq LIMIT 1000",
        )
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("seq").map_err(backend)?,
                    row.try_get("tenant").map_err(backend)?,
                ))
            })
            .collect()
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<InteractionRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM interactions WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(decode).transpose()
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM interactions WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(res.rows_affected() == 1)
    }

    async fn purge_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        let res = sqlx::query(
            "DELETE FROM interactions WHERE created < $1 \
             AND status NOT IN ('in_progress', 'queued', 'requires_continuation')",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        // Forget notes matter only while replicas poll them: an hour is plenty.
        sqlx::query("DELETE FROM kv_forgets WHERE at_ms < $1")
            .bind(now_ms() - 3_600_000)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(res.rows_affected())
    }

    async fn insert_file(&self, f: &FileRecord) -> Result<(), StoreError> {
        self.insert_file_row(f).await
    }

    async fn get_file(&self, tenant: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        self.get_file_row(tenant, id).await
    }

    async fn list_files(
        &self,
        tenant: &str,
        after: Option<&FilesCursor>,
        limit: u32,
    ) -> Result<Vec<FileRecord>, StoreError> {
        self.list_file_rows(tenant, after, limit).await
    }

    async fn delete_file(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_file_row(tenant, id).await
    }

    async fn expired_files(&self, now_ms: i64) -> Result<Vec<FileRecord>, StoreError> {
        self.expired_file_rows(now_ms).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;
