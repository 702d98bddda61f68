use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use localgem_core::{FileRecord, FilesCursor, InteractionRecord, RunState, Store, StoreError};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::record::{assemble, contiguous, encode, inserted, now_ms};

/// Interactions in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    let msg = e.to_string();
    // SQLITE_FULL ("database or disk is full"): a full disk, not a broken database.
    if msg.contains("disk is full") {
        StoreError::Full(msg)
    } else {
        StoreError::Backend(msg)
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and run pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the file cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(backend)?;
        Ok(SqliteStore { pool })
    }

    /// Run `PRAGMA integrity_check`; returns its first line (`ok` when healthy).
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the query fails.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let row = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        row.try_get::<String, _>(0).map_err(backend)
    }

    /// Close the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn decode(row: &sqlx::sqlite::SqliteRow) -> Result<InteractionRecord, StoreError> {
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

impl SqliteStore {
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
             lease_until_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

fn decode_file(row: &sqlx::sqlite::SqliteRow) -> Result<FileRecord, StoreError> {
    Ok(FileRecord {
        id: row.try_get("id").map_err(backend)?,
        tenant: row.try_get("tenant").map_err(backend)?,
        blob: row.try_get("blob").map_err(backend)?,
        display_name: row.try_get("display_name").map_err(backend)?,
        mime_type: row.try_get("mime_type").map_err(backend)?,
        size_bytes: row.try_get::<i64, _>("size_bytes").map_err(backend)?.max(0) as u64,
        sha256_hex: row.try_get("sha256_hex").map_err(backend)?,
        created_ms: row.try_get("created_ms").map_err(backend)?,
        expires_ms: row.try_get("expires_ms").map_err(backend)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
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
        // Two autocommit statements, not a transaction: a COMMIT that fails on a full disk
        // would leave the pooled connection inside an open transaction that holds the write
        // lock, and every later write would wait on it. Events left behind by a failed
        // DELETE are harmless (readers go by the record) and go with the interaction.
        let res = sqlx::query(
            "UPDATE interactions SET status = ?, updated = ?, input = ?, output = ?, usage = ?, \
             error = ?, resolved_input = ?, lease_until_ms = NULL \
             WHERE id = ? AND tenant = ? AND owner = ? AND status IN ('in_progress', 'queued')",
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
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if let Err(err) = sqlx::query("DELETE FROM interaction_events WHERE id = ?")
            .bind(&r.id)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(id = %r.id, "cannot drop the event log of a finished interaction: {err}");
        }
        Ok(res.rows_affected() == 1)
    }

    async fn renew(&self, owner: &str, lease_until_ms: i64) -> Result<Vec<RunState>, StoreError> {
        let rows = sqlx::query(
            "UPDATE interactions SET lease_until_ms = ? \
             WHERE owner = ? AND status IN ('in_progress', 'queued') \
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
                    cancel_requested: row.try_get::<i64, _>("cancel_requested").map_err(backend)?
                        != 0,
                })
            })
            .collect()
    }

    async fn request_cancel(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE interactions SET cancel_requested = 1 \
             WHERE id = ? AND tenant = ? AND status IN ('in_progress', 'queued')",
        )
        .bind(id)
        .bind(tenant)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(res.rows_affected() == 1)
    }

    async fn fail_owned(&self, owner: &str, reason: &str) -> Result<u64, StoreError> {
        let res = sqlx::query(
            "UPDATE interactions SET status = 'failed', error = ?, updated = unixepoch(), \
             lease_until_ms = NULL WHERE status IN ('in_progress', 'queued') \
             AND (owner = ? OR owner IS NULL)",
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
            "UPDATE interactions SET status = 'failed', error = ?, updated = unixepoch(), \
             lease_until_ms = NULL WHERE status IN ('in_progress', 'queued') \
             AND lease_until_ms < ?",
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
               SELECT id, 0 FROM interactions WHERE id = ? AND tenant = ? \
               UNION ALL \
               SELECT i.previous_interaction_id, c.depth + 1 FROM chain c \
               JOIN interactions i ON i.id = c.id \
               WHERE i.previous_interaction_id IS NOT NULL AND c.depth + 1 < ? \
             ) \
             SELECT i.* FROM chain c JOIN interactions i ON i.id = c.id AND i.tenant = ? \
             ORDER BY c.depth",
        )
        .bind(id)
        .bind(tenant)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(tenant)
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
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR IGNORE INTO interaction_events (id, seq, event) ",
        );
        q.push_values(events.iter().enumerate(), |mut b, (i, e)| {
            b.push_bind(id)
                .push_bind(i64::try_from(first_seq + i as u64).unwrap_or(i64::MAX))
                .push_bind(e);
        });
        q.build().execute(&self.pool).await.map_err(backend)?;
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
            "SELECT seq, event FROM interaction_events WHERE id = ? AND seq > ? \
             ORDER BY seq LIMIT ?",
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
        sqlx::query("INSERT INTO kv_forgets (tenant, at_ms) VALUES (?, ?)")
            .bind(tenant)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
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
        let rows =
            sqlx::query("SELECT seq, tenant FROM kv_forgets WHERE seq > ? ORDER BY seq LIMIT 1000")
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
        let row = sqlx::query("SELECT * FROM interactions WHERE id = ? AND tenant = ?")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(decode).transpose()
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM interactions WHERE id = ? AND tenant = ?")
            .bind(id)
            .bind(tenant)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(res.rows_affected() == 1)
    }

    async fn purge_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        let res = sqlx::query(
            "DELETE FROM interactions WHERE created < ? \
             AND status NOT IN ('in_progress', 'queued', 'requires_continuation')",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        // Forget notes matter only while replicas poll them: an hour is plenty.
        sqlx::query("DELETE FROM kv_forgets WHERE at_ms < ?")
            .bind(now_ms() - 3_600_000)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(res.rows_affected())
    }

    async fn insert_file(&self, f: &FileRecord) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO files (id, tenant, blob, display_name, mime_type, size_bytes, \
             sha256_hex, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&f.id)
        .bind(&f.tenant)
        .bind(&f.blob)
        .bind(&f.display_name)
        .bind(&f.mime_type)
        .bind(i64::try_from(f.size_bytes).unwrap_or(i64::MAX))
        .bind(&f.sha256_hex)
        .bind(f.created_ms)
        .bind(f.expires_ms)
        .execute(&self.pool)
        .await;
        inserted(res, &f.id, backend)
    }

    async fn get_file(&self, tenant: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM files WHERE id = ? AND tenant = ?")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(decode_file).transpose()
    }

    async fn list_files(
        &self,
        tenant: &str,
        after: Option<&FilesCursor>,
        limit: u32,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let rows = match after {
            Some(c) => sqlx::query(
                "SELECT * FROM files WHERE tenant = ? AND (created_ms, id) < (?, ?) \
                 ORDER BY created_ms DESC, id DESC LIMIT ?",
            )
            .bind(tenant)
            .bind(c.created_ms)
            .bind(&c.id)
            .bind(i64::from(limit)),
            None => sqlx::query(
                "SELECT * FROM files WHERE tenant = ? ORDER BY created_ms DESC, id DESC LIMIT ?",
            )
            .bind(tenant)
            .bind(i64::from(limit)),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(decode_file).collect()
    }

    async fn delete_file(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM files WHERE id = ? AND tenant = ?")
            .bind(id)
            .bind(tenant)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(res.rows_affected() == 1)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn expired_files(&self, now_ms: i64) -> Result<Vec<FileRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM files WHERE expires_ms <= ?")
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(decode_file).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use localgem_wire::Status;

    #[tokio::test]
    async fn sqlite_passes_the_store_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        crate::suite::run(&store).await;
        crate::suite::run_files(&store).await;
        let dir2 = tempfile::tempdir().unwrap();
        let fresh = SqliteStore::open(&dir2.path().join("r.sqlite"))
            .await
            .unwrap();
        crate::suite::run_retention(&fresh).await;
        let dir3 = tempfile::tempdir().unwrap();
        let leases = SqliteStore::open(&dir3.path().join("l.sqlite"))
            .await
            .unwrap();
        crate::suite::run_leases(&leases).await;
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
    }

    #[tokio::test]
    async fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let rec = crate::suite::record("t1", "v1_a", Status::Completed);
        {
            let store = SqliteStore::open(&path).await.unwrap();
            store.insert(&rec).await.unwrap();
            let mut unfinished = crate::suite::record("t1", "v1_b", Status::InProgress);
            unfinished.output.clear();
            store.insert(&unfinished).await.unwrap();
            // no close: like a crash, the pool is just dropped
        }
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.get("t1", "v1_a").await.unwrap(), Some(rec));
        assert_eq!(store.fail_owned("any", "crash").await.unwrap(), 1);
        let b = store.get("t1", "v1_b").await.unwrap().unwrap();
        assert_eq!(b.status, Status::Failed);
        assert_eq!(b.error.as_deref(), Some("crash"));
    }
}
