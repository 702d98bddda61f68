//! Uploaded files' metadata in PostgreSQL.

use localgem_core::{FileRecord, FilesCursor, StoreError};
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{backend, PostgresStore};
use crate::record::inserted;

fn decode_file(row: &PgRow) -> Result<FileRecord, StoreError> {
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

impl PostgresStore {
    pub(super) async fn insert_file_row(&self, f: &FileRecord) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO files (id, tenant, blob, display_name, mime_type, size_bytes, \
             sha256_hex, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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

    pub(super) async fn get_file_row(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<FileRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM files WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(decode_file).transpose()
    }

    pub(super) async fn list_file_rows(
        &self,
        tenant: &str,
        after: Option<&FilesCursor>,
        limit: u32,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let rows = match after {
            Some(c) => sqlx::query(
                "SELECT * FROM files WHERE tenant = $1 AND (created_ms, id) < ($2, $3) \
                 ORDER BY created_ms DESC, id DESC LIMIT $4",
            )
            .bind(tenant)
            .bind(c.created_ms)
            .bind(&c.id)
            .bind(i64::from(limit)),
            None => sqlx::query(
                "SELECT * FROM files WHERE tenant = $1 \
                 ORDER BY created_ms DESC, id DESC LIMIT $2",
            )
            .bind(tenant)
            .bind(i64::from(limit)),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(decode_file).collect()
    }

    pub(super) async fn delete_file_row(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM files WHERE id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(res.rows_affected() == 1)
    }

    pub(super) async fn expired_file_rows(
        &self,
        now_ms: i64,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM files WHERE expires_ms <= $1")
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(decode_file).collect()
    }
}
