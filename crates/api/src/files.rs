//! The Files API: Google's resumable upload protocol (`X-Goog-Upload-*`), and get, list and
//! delete of camelCase File resources, scoped by tenant like interactions.
//!
//! An upload streams into `DATA_DIR/files/tmp/<upload id>` and is renamed to
//! `DATA_DIR/files/<file id>` when the last chunk arrives, then its metadata goes to the
//! store: a failed or abandoned upload never leaves a half-written file in place. Chunk
//! requests are authorised by their random upload id (the Python SDK sends them without an
//! API key). Files expire after [`FILE_TTL_MS`]; [`purge`] removes expired files and stale
//! uploads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use localgem_core::{FileRecord, FilesCursor};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;
use crate::tenant::Tenant;
use crate::AppState;

/// How long an uploaded file is kept (Google keeps files 48 hours).
pub const FILE_TTL_MS: i64 = 48 * 3600 * 1000;
/// Chunk size the SDKs use; announced as the upload granularity.
pub const CHUNK: u64 = 8 * 1024 * 1024;
/// An upload with no chunk for this long is dropped by [`purge`].
pub const UPLOAD_IDLE: Duration = Duration::from_secs(3600);
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

/// An upload in progress.
#[derive(Debug)]
struct Upload {
    tenant: String,
    id: String,
    display_name: Option<String>,
    mime_type: String,
    /// Size announced at start, if any.
    declared: Option<u64>,
    received: u64,
    hasher: Sha256,
    tmp: PathBuf,
    touched: Instant,
}

/// Uploads in progress, by upload id.
#[derive(Debug, Default)]
pub struct Uploads {
    map: Mutex<HashMap<String, Upload>>,
}

/// The Files API's error: Google's classic envelope with an integer code (spec §5.4).
#[derive(Debug)]
pub struct FilesError(pub ApiError, pub bool);

impl From<ApiError> for FilesError {
    fn from(e: ApiError) -> Self {
        FilesError(e, false)
    }
}

impl From<localgem_core::StoreError> for FilesError {
    fn from(e: localgem_core::StoreError) -> Self {
        FilesError(ApiError::from(e), false)
    }
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let e = self.0;
        let mut resp = (
            e.status,
            Json(
                json!({"error": {"code": e.status.as_u16(), "message": e.message,
                                   "status": e.google_status()}}),
            ),
        )
            .into_response();
        if self.1 {
            // An upload reply always says where the upload stands.
            resp.headers_mut()
                .insert("x-goog-upload-status", HeaderValue::from_static("final"));
        }
        resp
    }
}

fn upload_error(e: ApiError) -> FilesError {
    FilesError(e, true)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Creation times strictly increase within a process, so a listing keeps upload order even
/// for uploads finished in the same millisecond.
fn next_created_ms() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let prev = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(prev + 1)
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

fn new_file_id() -> String {
    let bytes: [u8; 9] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The Files API's storage and uploads in progress, when it is enabled.
pub fn enabled(st: &AppState) -> Result<(&FilesConfig, &Arc<Uploads>), ApiError> {
    st.files
        .as_ref()
        .map(|(c, u)| (c, u))
        .ok_or_else(|| ApiError::not_found("the Files API is not enabled on this server"))
}

/// `POST /upload/{v}/files`: starts an upload, or (with `upload_id`) takes a chunk.
pub async fn upload(
    State(st): State<AppState>,
    UrlPath(version): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    tenant: Result<Tenant, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FilesError> {
    match query.get("upload_id") {
        // The upload id authorises a chunk, whatever key (or none) it carries.
        Some(upload_id) => chunk(&st, upload_id, &version, &headers, body).await,
        None => start(&st, tenant?, &version, &headers, body).await,
    }
}

async fn start(
    st: &AppState,
    tenant: Tenant,
    version: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, FilesError> {
    let (cfg, table) = enabled(st)?;
    let cfg = cfg.clone();
    let command = header_str(headers, "x-goog-upload-command").unwrap_or("");
    if header_str(headers, "x-goog-upload-protocol") != Some("resumable") || command != "start" {
        return Err(ApiError::bad_request(
            "uploads use the resumable protocol: `X-Goog-Upload-Protocol: resumable` and `X-Goog-Upload-Command: start`",
        )
        .into());
    }
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|_| ApiError::bad_request("the upload start body must be a small JSON object"))?;
    let meta: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON payload: {e}")))?
    };
    let file = meta.get("file").cloned().unwrap_or(json!({}));
    let field = |snake: &str, camel: &str| file.get(snake).or_else(|| file.get(camel)).cloned();
    let as_size =
        |v: Option<Value>| -> Result<Option<u64>, ApiError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                    ApiError::bad_request("`sizeBytes` must be a non-negative integer")
                }),
                Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                    ApiError::bad_request("`sizeBytes` must be a non-negative integer")
                }),
                Some(_) => Err(ApiError::bad_request(
                    "`sizeBytes` must be a non-negative integer",
                )),
            }
        };
    let declared = match as_size(field("size_bytes", "sizeBytes"))? {
        Some(n) => Some(n),
        None => header_str(headers, "x-goog-upload-header-content-length")
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request("X-Goog-Upload-Header-Content-Length must be a number")
                })
            })
            .transpose()?,
    };
    if let Some(n) = declared {
        if n > cfg.max_file_bytes {
            return Err(ApiError::payload_too_large(format!(
                "the file is {n} bytes, more than the {}-byte limit of this server",
                cfg.max_file_bytes
            ))
            .into());
        }
    }
    let mime_type = field("mime_type", "mimeType")
        .and_then(|v| v.as_str().map(str::to_owned))
        .or_else(|| header_str(headers, "x-goog-upload-header-content-type").map(str::to_owned))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into());
    let display_name = field("display_name", "displayName")
        .and_then(|v| v.as_str().map(str::to_owned))
        .or_else(|| header_str(headers, "x-goog-upload-file-name").map(str::to_owned))
        .filter(|d| !d.is_empty());
    let id = match file.get("name").and_then(Value::as_str) {
        Some(name) => {
            let id = file_id(name).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "file name {name:?} must be `files/` and up to 64 lower-case letters, digits or dashes"
                ))
            })?;
            if st.store.get_file(&tenant.0, id).await?.is_some() {
                return Err(
                    ApiError::bad_request(format!("file files/{id} already exists")).into(),
                );
            }
            id.to_owned()
        }
        None => new_file_id(),
    };
    let upload_id = {
        let bytes: [u8; 24] = rand::random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let tmp_dir = cfg.dir.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(ApiError::internal)?;
    let tmp = tmp_dir.join(&upload_id);
    tokio::fs::File::create(&tmp)
        .await
        .map_err(ApiError::internal)?;
    table.map.lock().expect("poisoned").insert(
        upload_id.clone(),
        Upload {
            tenant: tenant.0,
            id,
            display_name,
            mime_type,
            declared,
            received: 0,
            hasher: Sha256::new(),
            tmp,
            touched: Instant::now(),
        },
    );
    let url = format!(
        "{}/upload/{version}/files?upload_id={upload_id}&upload_protocol=resumable",
        public_base(headers)
    );
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert(
        "x-goog-upload-url",
        HeaderValue::from_str(&url).map_err(ApiError::internal)?,
    );
    h.insert("x-goog-upload-status", HeaderValue::from_static("active"));
    h.insert("x-goog-upload-chunk-granularity", HeaderValue::from(CHUNK));
    Ok(resp)
}

/// Drop an upload: its temp file goes too.
async fn abandon(up: Upload) {
    let _ = tokio::fs::remove_file(&up.tmp).await;
}

async fn chunk(
    st: &AppState,
    upload_id: &str,
    version: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, FilesError> {
    let (cfg, table) = enabled(st).map_err(upload_error)?;
    let (cfg, table) = (cfg.clone(), table.clone());
    // Taken out of the table while this chunk is written: a concurrent chunk of the same
    // upload finds nothing and gets a 404 instead of interleaving bytes.
    let mut up = table
        .map
        .lock()
        .expect("poisoned")
        .remove(upload_id)
        .ok_or_else(|| {
            upload_error(ApiError::not_found(format!(
                "no upload {upload_id:?} in progress (unknown, finished, or expired)"
            )))
        })?;
    let put_back = |up: Upload| {
        table
            .map
            .lock()
            .expect("poisoned")
            .insert(upload_id.to_owned(), up);
    };
    let command = header_str(headers, "x-goog-upload-command")
        .unwrap_or("")
        .to_ascii_lowercase();
    let parts: Vec<&str> = command.split(',').map(str::trim).collect();
    if parts.contains(&"cancel") {
        abandon(up).await;
        let mut resp = StatusCode::OK.into_response();
        resp.headers_mut().insert(
            "x-goog-upload-status",
            HeaderValue::from_static("cancelled"),
        );
        return Ok(resp);
    }
    if parts.contains(&"query") {
        let mut resp = StatusCode::OK.into_response();
        let h = resp.headers_mut();
        h.insert("x-goog-upload-status", HeaderValue::from_static("active"));
        h.insert(
            "x-goog-upload-size-received",
            HeaderValue::from(up.received),
        );
        put_back(up);
        return Ok(resp);
    }
    let finalize = parts.contains(&"finalize");
    if !parts.contains(&"upload") && !finalize {
        put_back(up);
        return Err(upload_error(ApiError::bad_request(
            "X-Goog-Upload-Command must be `upload`, `upload, finalize`, `query` or `cancel`",
        )));
    }
    let offset = match header_str(headers, "x-goog-upload-offset").map(str::parse::<u64>) {
        Some(Ok(o)) => o,
        _ => {
            put_back(up);
            return Err(upload_error(ApiError::bad_request(
                "X-Goog-Upload-Offset is required on upload chunks",
            )));
        }
    };
    if offset != up.received {
        let received = up.received;
        put_back(up);
        return Err(upload_error(ApiError::bad_request(format!(
            "chunk offset {offset} does not follow the {received} bytes received so far"
        ))));
    }
    let limit = up
        .declared
        .unwrap_or(cfg.max_file_bytes)
        .min(cfg.max_file_bytes);
    let room = limit.saturating_sub(up.received);
    let bytes = match axum::body::to_bytes(body, usize::try_from(room).unwrap_or(usize::MAX)).await
    {
        Ok(b) => b,
        Err(_) => {
            abandon(up).await;
            return Err(upload_error(ApiError::payload_too_large(
                format!("the upload is larger than {limit} bytes (the announced size or this server's limit); it was dropped"),
            )));
        }
    };
    let written = async {
        let mut f = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&up.tmp)
            .await?;
        f.write_all(&bytes).await?;
        f.flush().await
    }
    .await;
    if let Err(e) = written {
        abandon(up).await;
        return Err(upload_error(ApiError::internal(format!(
            "cannot write upload: {e}"
        ))));
    }
    up.hasher.update(&bytes);
    up.received += bytes.len() as u64;
    up.touched = Instant::now();
    if !finalize {
        put_back(up);
        let mut resp = StatusCode::OK.into_response();
        resp.headers_mut()
            .insert("x-goog-upload-status", HeaderValue::from_static("active"));
        return Ok(resp);
    }
    if let Some(n) = up.declared {
        if up.received != n {
            let got = up.received;
            abandon(up).await;
            return Err(upload_error(ApiError::bad_request(format!(
                "the upload ended after {got} bytes, but {n} were announced; it was dropped"
            ))));
        }
    }
    let created_ms = next_created_ms();
    let record = FileRecord {
        id: up.id.clone(),
        tenant: up.tenant.clone(),
        display_name: up.display_name.clone(),
        mime_type: up.mime_type.clone(),
        size_bytes: up.received,
        sha256_hex: hex::encode(up.hasher.clone().finalize()),
        created_ms,
        expires_ms: created_ms + FILE_TTL_MS,
    };
    let dest = cfg.dir.join(&record.id);
    if let Err(e) = tokio::fs::rename(&up.tmp, &dest).await {
        abandon(up).await;
        return Err(upload_error(ApiError::internal(format!(
            "cannot keep upload: {e}"
        ))));
    }
    if let Err(e) = st.store.insert_file(&record).await {
        let _ = tokio::fs::remove_file(&dest).await;
        let e = match e {
            localgem_core::StoreError::Duplicate(id) => {
                ApiError::bad_request(format!("file files/{id} already exists"))
            }
            other => ApiError::from(other),
        };
        return Err(upload_error(e));
    }
    let mut resp =
        Json(json!({"file": file_json(&record, &public_base(headers), version)})).into_response();
    resp.headers_mut()
        .insert("x-goog-upload-status", HeaderValue::from_static("final"));
    Ok(resp)
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
    if !st.store.delete_file(&tenant.0, id).await? {
        return Err(ApiError::not_found(format!("file files/{id} not found")).into());
    }
    let _ = tokio::fs::remove_file(cfg.dir.join(id)).await;
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
    let stale: Vec<Upload> = {
        let mut map = table.map.lock().expect("poisoned");
        let ids: Vec<String> = map
            .iter()
            .filter(|(_, u)| u.touched.elapsed() > UPLOAD_IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        ids.iter().filter_map(|k| map.remove(k)).collect()
    };
    for up in stale {
        abandon(up).await;
    }
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
            let _ = tokio::fs::remove_file(cfg.dir.join(&f.id)).await;
            n += 1;
        }
    }
    n
}

/// Prepare `dir` for uploads: create it, and remove temp files of uploads a previous run
/// left unfinished.
///
/// # Errors
/// The directory cannot be created.
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp)
}
