//! Google's resumable upload protocol (`X-Goog-Upload-*`) for the Files API.
//!
//! An upload streams into `DATA_DIR/files/tmp/<upload id>`. When the last chunk arrives the
//! file is synced, renamed to a name of its own under `DATA_DIR/files/blobs/` (the directory
//! synced too), and only then is its metadata written and the file reported `ACTIVE`: a
//! failed, refused or abandoned upload never touches another upload's bytes.
//!
//! File names are unique per API key. A custom name is reserved when the upload starts, so
//! two uploads of one key cannot both take it, and another key's file of the same name is
//! neither visible nor touched. Chunk requests are authorised by their random upload id (the
//! Python SDK sends them without an API key). A chunk cut short keeps what arrived: `query`
//! answers the size received and the client goes on from there.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use http_body_util::BodyExt;
use localgem_core::FileRecord;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;
use crate::files::{enabled, file_id, file_json, now_ms, public_base, FilesConfig, FILE_TTL_MS};
use crate::tenant::Tenant;
use crate::AppState;

/// Chunk size the SDKs use; announced as the upload granularity.
pub const CHUNK: u64 = 8 * 1024 * 1024;
/// An upload with no chunk for this long is dropped by [`Uploads::drop_stale`], and its temp
/// file counts as abandoned when a server starts.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(3600);

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

/// Uploads in progress, by upload id, and the file names they have reserved.
#[derive(Debug, Default)]
pub struct Uploads {
    map: Mutex<HashMap<String, Upload>>,
    /// (tenant, file id) of every upload in progress: reserved from start to the end.
    names: Mutex<HashSet<(String, String)>>,
}

impl Uploads {
    /// Reserve a file name for an upload of `tenant`; false when an upload in progress has it.
    fn reserve(&self, tenant: &str, id: &str) -> bool {
        self.names
            .lock()
            .expect("poisoned")
            .insert((tenant.to_owned(), id.to_owned()))
    }

    fn release(&self, tenant: &str, id: &str) {
        self.names
            .lock()
            .expect("poisoned")
            .remove(&(tenant.to_owned(), id.to_owned()));
    }

    fn take(&self, upload_id: &str) -> Option<Upload> {
        self.map.lock().expect("poisoned").remove(upload_id)
    }

    fn put_back(&self, upload_id: &str, up: Upload) {
        self.map
            .lock()
            .expect("poisoned")
            .insert(upload_id.to_owned(), up);
    }

    /// Drop an upload: its temp file and its name go too.
    async fn abandon(&self, up: Upload) {
        let _ = tokio::fs::remove_file(&up.tmp).await;
        self.release(&up.tenant, &up.id);
    }

    /// Drop uploads idle for [`UPLOAD_IDLE`].
    pub async fn drop_stale(&self) {
        let stale: Vec<Upload> = {
            let mut map = self.map.lock().expect("poisoned");
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, u)| u.touched.elapsed() > UPLOAD_IDLE)
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|k| map.remove(k)).collect()
        };
        for up in stale {
            self.abandon(up).await;
        }
    }
}

/// Where an upload stands after a reply: every upload reply says so.
#[derive(Debug, Clone, Copy)]
pub enum UploadStatus {
    /// Not an upload reply (the Files API's other routes).
    None,
    /// The upload goes on; this many bytes are kept.
    Active(u64),
    /// The upload is over (finished, dropped, or unknown).
    Final,
}

/// The Files API's error: Google's classic envelope with an integer code (spec §5.4), and on
/// upload routes where the upload stands.
#[derive(Debug)]
pub struct FilesError(pub ApiError, pub UploadStatus);

impl From<ApiError> for FilesError {
    fn from(e: ApiError) -> Self {
        FilesError(e, UploadStatus::None)
    }
}

impl From<localgem_core::StoreError> for FilesError {
    fn from(e: localgem_core::StoreError) -> Self {
        FilesError(ApiError::from(e), UploadStatus::None)
    }
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let e = self.0;
        let retry_after = e.retry_after;
        let mut resp = (
            e.status,
            Json(
                json!({"error": {"code": e.status.as_u16(), "message": e.message,
                                   "status": e.google_status()}}),
            ),
        )
            .into_response();
        let h = resp.headers_mut();
        if let Some(s) = retry_after {
            h.insert("retry-after", HeaderValue::from(s));
        }
        match self.1 {
            UploadStatus::None => {}
            UploadStatus::Final => {
                h.insert("x-goog-upload-status", HeaderValue::from_static("final"));
            }
            UploadStatus::Active(n) => {
                h.insert("x-goog-upload-status", HeaderValue::from_static("active"));
                h.insert("x-goog-upload-size-received", HeaderValue::from(n));
            }
        }
        resp
    }
}

fn final_error(e: ApiError) -> FilesError {
    FilesError(e, UploadStatus::Final)
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

/// `n` random bytes as hex.
fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex::encode(bytes)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
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

fn size_field(v: Option<Value>) -> Result<Option<u64>, ApiError> {
    let bad = || ApiError::bad_request("`sizeBytes` must be a non-negative integer");
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
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
    let (cfg, table) = (cfg.clone(), table.clone());
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
    let declared = match size_field(field("size_bytes", "sizeBytes"))? {
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
        Some(name) => file_id(name)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "file name {name:?} must be `files/` and up to 64 lower-case letters, digits or dashes"
                ))
            })?
            .to_owned(),
        None => random_hex(9),
    };
    let exists = || ApiError::already_exists(format!("file files/{id} already exists"));
    // Reserved first, then checked against finished files: a finished upload holds its
    // reservation until its metadata is written, so one of the two always sees the other.
    if !table.reserve(&tenant.0, &id) {
        return Err(exists().into());
    }
    let made = async {
        if st.store.get_file(&tenant.0, &id).await?.is_some() {
            return Err(exists());
        }
        let upload_id = {
            let bytes: [u8; 24] = rand::random();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        let tmp = cfg.dir.join("tmp").join(&upload_id);
        tokio::fs::create_dir_all(cfg.dir.join("tmp"))
            .await
            .map_err(|e| disk_error("cannot start the upload", &e))?;
        tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| disk_error("cannot start the upload", &e))?;
        Ok((upload_id, tmp))
    }
    .await;
    let (upload_id, tmp) = match made {
        Ok(v) => v,
        Err(e) => {
            table.release(&tenant.0, &id);
            return Err(e.into());
        }
    };
    table.put_back(
        &upload_id,
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

/// A write that failed: a full disk is a 503 the client may retry later; anything else is
/// internal.
fn disk_error(what: &str, e: &std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        ApiError::unavailable(format!("{what}: the server's disk is full"))
    } else {
        ApiError::internal(format!("{what}: {e}"))
    }
}

/// How a chunk's body ended.
enum ChunkEnd {
    /// All of it arrived and was written.
    Whole,
    /// More than the upload may hold.
    TooLarge,
    /// The connection broke (or stalled) mid-chunk.
    CutShort,
    /// The disk refused a write.
    WriteFailed(std::io::Error),
}

/// Stream a chunk's body onto the end of the upload's temp file, at most `room` bytes. What
/// was written whole is hashed and counted even when the chunk does not end well; a frame a
/// failed write left half-written is cut off again.
async fn write_chunk(up: &mut Upload, mut body: Body, room: u64) -> ChunkEnd {
    let mut f = match tokio::fs::OpenOptions::new()
        .append(true)
        .open(&up.tmp)
        .await
    {
        Ok(f) => f,
        Err(e) => return ChunkEnd::WriteFailed(e),
    };
    let mut taken = 0u64;
    let end = loop {
        let data = match body.frame().await {
            None => break ChunkEnd::Whole,
            Some(Err(_)) => break ChunkEnd::CutShort,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        if taken + data.len() as u64 > room {
            break ChunkEnd::TooLarge;
        }
        if let Err(e) = f.write_all(&data).await {
            break ChunkEnd::WriteFailed(e);
        }
        up.hasher.update(&data);
        up.received += data.len() as u64;
        taken += data.len() as u64;
    };
    let flushed = f.flush().await;
    if matches!(end, ChunkEnd::WriteFailed(_)) || flushed.is_err() {
        // Keep exactly what was hashed.
        let _ = f.set_len(up.received).await;
    }
    match (end, flushed) {
        (ChunkEnd::Whole, Err(e)) => ChunkEnd::WriteFailed(e),
        (end, _) => end,
    }
}

async fn chunk(
    st: &AppState,
    upload_id: &str,
    version: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, FilesError> {
    let (cfg, table) = enabled(st).map_err(final_error)?;
    let (cfg, table) = (cfg.clone(), table.clone());
    // Taken out of the table while this chunk is written: a concurrent chunk of the same
    // upload finds nothing and gets a 404 instead of interleaving bytes.
    let mut up = table.take(upload_id).ok_or_else(|| {
        final_error(ApiError::not_found(format!(
            "no upload {upload_id:?} in progress (unknown, finished, or expired)"
        )))
    })?;
    let command = header_str(headers, "x-goog-upload-command")
        .unwrap_or("")
        .to_ascii_lowercase();
    let parts: Vec<&str> = command.split(',').map(str::trim).collect();
    if parts.contains(&"cancel") {
        table.abandon(up).await;
        let mut resp = StatusCode::OK.into_response();
        resp.headers_mut().insert(
            "x-goog-upload-status",
            HeaderValue::from_static("cancelled"),
        );
        return Ok(resp);
    }
    // Every refusal from here on leaves the upload as it was, and says so.
    let keep = |up: Upload, e: ApiError| {
        let received = up.received;
        table.put_back(upload_id, up);
        FilesError(e, UploadStatus::Active(received))
    };
    if parts.contains(&"query") {
        let mut resp = StatusCode::OK.into_response();
        let h = resp.headers_mut();
        h.insert("x-goog-upload-status", HeaderValue::from_static("active"));
        h.insert(
            "x-goog-upload-size-received",
            HeaderValue::from(up.received),
        );
        table.put_back(upload_id, up);
        return Ok(resp);
    }
    let finalize = parts.contains(&"finalize");
    if !parts.contains(&"upload") && !finalize {
        return Err(keep(
            up,
            ApiError::bad_request(
                "X-Goog-Upload-Command must be `upload`, `upload, finalize`, `query` or `cancel`",
            ),
        ));
    }
    let offset = match header_str(headers, "x-goog-upload-offset").map(str::parse::<u64>) {
        Some(Ok(o)) => o,
        _ => {
            return Err(keep(
                up,
                ApiError::bad_request("X-Goog-Upload-Offset is required on upload chunks"),
            ))
        }
    };
    if offset != up.received {
        let received = up.received;
        return Err(keep(
            up,
            ApiError::bad_request(format!(
                "chunk offset {offset} does not follow the {received} bytes received so far"
            )),
        ));
    }
    let limit = up
        .declared
        .unwrap_or(cfg.max_file_bytes)
        .min(cfg.max_file_bytes);
    let room = limit.saturating_sub(up.received);
    up.touched = Instant::now();
    match write_chunk(&mut up, body, room).await {
        ChunkEnd::Whole => {}
        ChunkEnd::TooLarge => {
            table.abandon(up).await;
            return Err(final_error(ApiError::payload_too_large(format!(
                "the upload is larger than {limit} bytes (the announced size or this server's limit); it was dropped"
            ))));
        }
        ChunkEnd::CutShort => {
            let received = up.received;
            return Err(keep(
                up,
                ApiError::bad_request(format!(
                    "the chunk ended early; {received} bytes are kept: query the upload and go on from there"
                )),
            ));
        }
        ChunkEnd::WriteFailed(e) => {
            return Err(keep(up, disk_error("cannot write the upload", &e)));
        }
    }
    up.touched = Instant::now();
    if !finalize {
        table.put_back(upload_id, up);
        let mut resp = StatusCode::OK.into_response();
        resp.headers_mut()
            .insert("x-goog-upload-status", HeaderValue::from_static("active"));
        return Ok(resp);
    }
    if let Some(n) = up.declared {
        if up.received != n {
            let got = up.received;
            table.abandon(up).await;
            return Err(final_error(ApiError::bad_request(format!(
                "the upload ended after {got} bytes, but {n} were announced; it was dropped"
            ))));
        }
    }
    let (tenant, id) = (up.tenant.clone(), up.id.clone());
    let done = keep_file(st, &cfg, up).await;
    table.release(&tenant, &id);
    let record = done.map_err(final_error)?;
    let mut resp =
        Json(json!({"file": file_json(&record, &public_base(headers), version)})).into_response();
    resp.headers_mut()
        .insert("x-goog-upload-status", HeaderValue::from_static("final"));
    Ok(resp)
}

/// Make a finished upload durable (its bytes synced under a new blob name, the directory
/// synced), then write its metadata. On any failure only this upload's own files go.
async fn keep_file(st: &AppState, cfg: &FilesConfig, up: Upload) -> Result<FileRecord, ApiError> {
    let created_ms = next_created_ms();
    let record = FileRecord {
        id: up.id.clone(),
        tenant: up.tenant.clone(),
        blob: format!("blobs/{}", random_hex(16)),
        display_name: up.display_name.clone(),
        mime_type: up.mime_type.clone(),
        size_bytes: up.received,
        sha256_hex: hex::encode(up.hasher.clone().finalize()),
        created_ms,
        expires_ms: created_ms + FILE_TTL_MS,
    };
    let dest = cfg.dir.join(&record.blob);
    let (tmp, dest2) = (up.tmp.clone(), dest.clone());
    let durable = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::File::open(&tmp)?.sync_all()?;
        let dir = dest2.parent().expect("blob path has a parent");
        std::fs::create_dir_all(dir)?;
        std::fs::rename(&tmp, &dest2)?;
        std::fs::File::open(dir)?.sync_all()
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if let Err(e) = durable {
        let _ = tokio::fs::remove_file(&up.tmp).await;
        let _ = tokio::fs::remove_file(&dest).await;
        return Err(disk_error("cannot keep the upload", &e));
    }
    if let Err(e) = st.store.insert_file(&record).await {
        let _ = tokio::fs::remove_file(&dest).await;
        return Err(match e {
            localgem_core::StoreError::Duplicate(id) => {
                ApiError::already_exists(format!("file files/{id} already exists"))
            }
            other => ApiError::from(other),
        });
    }
    Ok(record)
}

/// Prepare `dir` for uploads: create it, and remove temp files of uploads that are provably
/// abandoned (untouched for [`UPLOAD_IDLE`]). A younger temp file may be another server's
/// upload in progress on the same data dir, and is left alone.
///
/// # Errors
/// The directory cannot be created.
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("blobs"))?;
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    for entry in std::fs::read_dir(&tmp)?.flatten() {
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if idle.is_some_and(|d| d > UPLOAD_IDLE) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
