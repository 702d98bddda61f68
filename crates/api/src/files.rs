//! The Files API: get, list and delete of camelCase File resources, scoped by tenant like
//! interactions (uploads are in [`crate::upload`]). Files expire after [`FILE_TTL_MS`];
//! [`purge`] removes expired files and stale uploads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use localgem_core::{FileRecord, FilesCursor};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::tenant::Tenant;
pub use crate::upload::{
    prepare_dir, upload, FilesError, UploadStatus, Uploads, CHUNK, UPLOAD_IDLE,
};
use crate::AppState;

/// How long an uploaded file is kept (Google keeps files 48 hours).
pub const FILE_TTL_MS: i64 = 48 * 3600 * 1000;
/// Files listed per page when the request sets no `pageSize`, and the most per page.
const PAGE_DEFAULT: u32 = 10;
const PAGE_MAX: u32 = 100;

/// Where files live and how large they may be.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// `DATA_DIR/files`.
    pub dir: PathBuf,
    /// Largest file accepted, in bytes.
    pub max_file_bytes: u64,
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn fmt_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// The externally reachable base URL of a request: `X-Forwarded-Proto`/`-Host`, else `Host`.
pub fn public_base(headers: &HeaderMap) -> String {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let proto = h("x-forwarded-proto").unwrap_or_else(|| "http".into());
    let host = h("x-forwarded-host")
        .or_else(|| h("host"))
        .unwrap_or_else(|| "127.0.0.1".into());
    format!("{proto}://{host}")
}

/// The File resource (camelCase, `sizeBytes` as a string, like Google).
pub fn file_resource(f: &FileRecord, base: &str, version: &str) -> localgem_wire::File {
    localgem_wire::File {
        name: format!("files/{}", f.id),
        display_name: f.display_name.clone(),
        mime_type: f.mime_type.clone(),
        size_bytes: f.size_bytes.to_string(),
        create_time: fmt_ms(f.created_ms),
        update_time: fmt_ms(f.created_ms),
        expiration_time: fmt_ms(f.expires_ms),
        sha256_hash: base64::engine::general_purpose::STANDARD.encode(&f.sha256_hex),
        uri: format!("{base}/{version}/files/{}", f.id),
        state: "ACTIVE".into(),
        source: "UPLOADED".into(),
    }
}

/// [`file_resource`] as JSON.
pub fn file_json(f: &FileRecord, base: &str, version: &str) -> Value {
    serde_json::to_value(file_resource(f, base, version)).unwrap_or_default()
}

/// Normalise `abc`, `files/abc` or a URI ending in `/files/abc` to `abc`.
pub fn file_id(name: &str) -> Option<&str> {
    let id = name.rsplit_once("files/").map_or(name, |(_, id)| id);
    let id = id.split([':', '?']).next().unwrap_or(id);
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some(id)
}

/// The Files API's storage and uploads in progress, when it is enabled.
pub fn enabled(st: &AppState) -> Result<(&FilesConfig, &Arc<Uploads>), ApiError> {
    st.files
        .as_ref()
        .map(|(c, u)| (c, u))
        .ok_or_else(|| ApiError::not_found("the Files API is not enabled on this server"))
}

/// `GET /{v}/files/{name}`.
pub async fn get_file(
    State(st): State<AppState>,
    UrlPath((version, name)): UrlPath<(String, String)>,
    tenant: Result<Tenant, ApiError>,
    headers: HeaderMap,
) -> Result<Response, FilesError> {
    // Rejected keys answer in this API's envelope too.
    let tenant = tenant?;
    enabled(&st)?;
    if name.contains(':') {
        return Err(ApiError::not_found(format!(
            "{name:?}: only generated files can be downloaded, and this server generates none"
        ))
        .into());
    }
    let id =
        file_id(&name).ok_or_else(|| ApiError::not_found(format!("file {name:?} not found")))?;
    let f = st
        .store
        .get_file(&tenant.0, id)
        .await?
        .filter(|f| f.expires_ms > now_ms())
        .ok_or_else(|| ApiError::not_found(format!("file files/{id} not found")))?;
    Ok(Json(file_json(&f, &public_base(&headers), &version)).into_response())
}

/// `DELETE /{v}/files/{name}`.
pub async fn delete_file(
    State(st): State<AppState>,
    UrlPath((_version, name)): UrlPath<(String, String)>,
    tenant: Result<Tenant, ApiError>,
) -> Result<Response, FilesError> {
    let tenant = tenant?;
    let cfg = enabled(&st)?.0.clone();
    let id =
        file_id(&name).ok_or_else(|| ApiError::not_found(format!("file {name:?} not found")))?;
    let gone = || ApiError::not_found(format!("file files/{id} not found"));
    let f = st.store.get_file(&tenant.0, id).await?.ok_or_else(gone)?;
    if !st.store.delete_file(&tenant.0, id).await? {
        return Err(gone().into());
    }
    let _ = tokio::fs::remove_file(cfg.dir.join(&f.blob)).await;
    Ok(Json(json!({})).into_response())
}

fn encode_cursor(c: &FilesCursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{}", c.created_ms, c.id))
}

fn decode_cursor(t: &str) -> Option<FilesCursor> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (ms, id) = s.split_once(':')?;
    Some(FilesCursor {
        created_ms: ms.parse().ok()?,
        id: file_id(id)?.to_owned(),
    })
}

/// `GET /{v}/files?pageSize=N&pageToken=T`: newest first; `nextPageToken` only when more
/// files follow.
pub async fn list_files(
    State(st): State<AppState>,
    UrlPath(version): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    tenant: Result<Tenant, ApiError>,
    headers: HeaderMap,
) -> Result<Response, FilesError> {
    let tenant = tenant?;
    enabled(&st)?;
    let size = match query.get("pageSize").or_else(|| query.get("page_size")) {
        None => PAGE_DEFAULT,
        Some(v) => match v.parse::<u32>() {
            Ok(0) => PAGE_DEFAULT,
            Ok(n) => n.min(PAGE_MAX),
            Err(_) => {
                return Err(
                    ApiError::bad_request(format!("pageSize must be a number; got {v:?}")).into(),
                )
            }
        },
    };
    let after = match query.get("pageToken").or_else(|| query.get("page_token")) {
        None => None,
        Some(t) if t.is_empty() => None,
        Some(t) => Some(
            decode_cursor(t)
                .ok_or_else(|| ApiError::bad_request(format!("pageToken {t:?} is not valid")))?,
        ),
    };
    let now = now_ms();
    let mut page = st
        .store
        .list_files(&tenant.0, after.as_ref(), size + 1)
        .await?;
    let more = page.len() > size as usize;
    page.truncate(size as usize);
    let base = public_base(&headers);
    let files: Vec<Value> = page
        .iter()
        .filter(|f| f.expires_ms > now)
        .map(|f| file_json(f, &base, &version))
        .collect();
    let mut body = json!({});
    if !files.is_empty() {
        body["files"] = json!(files);
    }
    if more {
        if let Some(last) = page.last() {
            body["nextPageToken"] = json!(encode_cursor(&FilesCursor {
                created_ms: last.created_ms,
                id: last.id.clone(),
            }));
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], Json(body)).into_response())
}

/// Remove expired files (bytes and metadata) and uploads idle for [`UPLOAD_IDLE`]. Returns
/// how many files went.
pub async fn purge(st: &AppState) -> usize {
    let Ok((cfg, table)) = enabled(st) else {
        return 0;
    };
    table.drop_stale().await;
    let expired = match st.store.expired_files(now_ms()).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("cannot list expired files: {e}");
            return 0;
        }
    };
    let mut n = 0;
    for f in expired {
        if st
            .store
            .delete_file(&f.tenant, &f.id)
            .await
            .unwrap_or(false)
        {
            let _ = tokio::fs::remove_file(cfg.dir.join(&f.blob)).await;
            n += 1;
        }
    }
    n
}
