//! The Files API: resumable upload, get, list (a paginating stream) and delete.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use localgem_wire::{File, FileList, UploadResponse};
use reqwest::Method;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

use crate::client::{Answer, Client, Request};
use crate::error::{Error, Result};
use crate::interactions::segment;

/// The chunk size of resumable uploads the SDKs use: 8 MiB.
pub const DEFAULT_CHUNK_SIZE: usize = 8 * 1024 * 1024;

/// Sleeps before re-sending a chunk whose answer had no `x-goog-upload-status`, as the SDKs do.
const STATUS_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

type Progress = Box<dyn FnMut(u64, u64) + Send>;

/// Options of an upload.
///
/// ```
/// use localgem_client::UploadConfig;
///
/// let config = UploadConfig::new()
///     .display_name("organ")
///     .mime_type("image/jpeg")
///     .on_progress(|sent, total| eprintln!("{sent}/{total} bytes"));
/// # let _ = config;
/// ```
#[derive(Default)]
pub struct UploadConfig {
    display_name: Option<String>,
    mime_type: Option<String>,
    name: Option<String>,
    chunk_size: Option<usize>,
    progress: Option<Progress>,
}

impl fmt::Debug for UploadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadConfig")
            .field("display_name", &self.display_name)
            .field("mime_type", &self.mime_type)
            .field("name", &self.name)
            .field("chunk_size", &self.chunk_size)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl UploadConfig {
    /// Default options: MIME type guessed from the file name, 8 MiB chunks.
    pub fn new() -> Self {
        Self::default()
    }

    /// The file's display name.
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// The MIME type, instead of guessing it from the file name.
    pub fn mime_type(mut self, mime: impl Into<String>) -> Self {
        self.mime_type = Some(mime.into());
        self
    }

    /// Choose the resource name (`files/<id>` or `<id>`); the server rejects a taken one.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.name = Some(if name.starts_with("files/") {
            name
        } else {
            format!("files/{name}")
        });
        self
    }

    /// Bytes per upload request (default [`DEFAULT_CHUNK_SIZE`]; at least 1). Rounded up to
    /// a multiple of the granularity the server announces, if any.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = Some(bytes.max(1));
        self
    }

    /// Called after each acknowledged chunk with `(bytes sent, total bytes)`.
    pub fn on_progress(mut self, f: impl FnMut(u64, u64) + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }
}

/// The MIME type of a file name's extension, for the types the Gemini API takes (images, audio,
/// video, PDF, text and office documents). `None` for an unknown extension.
///
/// ```
/// assert_eq!(localgem_client::mime_type_for_path("path/to/organ.JPG"), Some("image/jpeg"));
/// assert_eq!(localgem_client::mime_type_for_path("notes"), None);
/// ```
pub fn mime_type_for_path(path: impl AsRef<Path>) -> Option<&'static str> {
    let ext = path.as_ref().extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" | "jpe" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "svg" => "image/svg+xml",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "aif" | "aiff" => "audio/aiff",
        "aac" => "audio/aac",
        "ogg" | "oga" => "audio/ogg",
        "flac" => "audio/flac",
        "m4a" => "audio/m4a",
        "opus" => "audio/opus",
        "weba" => "audio/webm",
        "mp4" | "m4v" => "video/mp4",
        "mpeg" | "mpg" => "video/mpeg",
        "mov" | "qt" => "video/mov",
        "avi" => "video/avi",
        "flv" => "video/x-flv",
        "webm" => "video/webm",
        "wmv" => "video/wmv",
        "3gp" | "3gpp" => "video/3gpp",
        "pdf" => "application/pdf",
        "txt" | "text" | "log" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "xml" => "text/xml",
        "rtf" => "text/rtf",
        "js" | "mjs" => "text/javascript",
        "py" => "text/x-python",
        "json" => "application/json",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "odt" => "application/vnd.oasis.opendocument.text",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        "odp" => "application/vnd.oasis.opendocument.presentation",
        _ => return None,
    })
}

/// The id part of a file name: `abc` from `abc`, `files/abc` or a file URI
/// `https://host/v1beta/files/abc`.
pub(crate) fn file_id(name: &str) -> &str {
    let name = name.split(['?', '#']).next().unwrap_or(name);
    let id = match name.rfind("files/") {
        Some(i) => &name[i + "files/".len()..],
        None => name,
    };
    id.split(':').next().unwrap_or(id).trim_matches('/')
}

enum Source {
    File(tokio::fs::File),
    Bytes(Bytes),
}

impl Source {
    async fn read_chunk(&mut self, max: usize) -> Result<Bytes> {
        match self {
            Source::Bytes(b) => Ok(b.split_to(max.min(b.len()))),
            Source::File(f) => {
                let mut buf = vec![0u8; max];
                let mut filled = 0;
                while filled < max {
                    let n = f.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                buf.truncate(filled);
                Ok(Bytes::from(buf))
            }
        }
    }
}

/// The Files API, from [`Client::files`].
#[derive(Debug, Clone)]
pub struct Files {
    client: Client,
}

impl Files {
    pub(crate) fn new(client: Client) -> Self {
        Files { client }
    }

    /// Upload a file with the resumable protocol, its MIME type guessed from the extension.
    ///
    /// ```no_run
    /// # async fn run(client: localgem_client::Client) -> Result<(), localgem_client::Error> {
    /// let file = client.files().upload("path/to/organ.jpg").await?;
    /// println!("{} {}", file.uri, file.mime_type);
    /// # Ok(()) }
    /// ```
    pub async fn upload(&self, path: impl AsRef<Path>) -> Result<File> {
        self.upload_with(path, UploadConfig::new()).await
    }

    /// Upload a file with options (display name, MIME type, chunk size, progress callback).
    pub async fn upload_with(&self, path: impl AsRef<Path>, config: UploadConfig) -> Result<File> {
        let path = path.as_ref();
        let file = tokio::fs::File::open(path).await?;
        let total = file.metadata().await?.len();
        let base_name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        let mime = match &config.mime_type {
            Some(m) => m.clone(),
            None => mime_type_for_path(path)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "cannot tell the MIME type of {}: set UploadConfig::mime_type",
                        path.display()
                    ))
                })?
                .to_owned(),
        };
        self.run_upload(Source::File(file), total, mime, base_name, config)
            .await
    }

    /// Upload bytes held in memory. The MIME type comes from the config, else from the
    /// display name's extension, else it is `application/octet-stream`.
    pub async fn upload_bytes(
        &self,
        bytes: impl Into<Bytes>,
        config: UploadConfig,
    ) -> Result<File> {
        let bytes = bytes.into();
        let mime = config
            .mime_type
            .clone()
            .or_else(|| {
                config
                    .display_name
                    .as_deref()
                    .and_then(mime_type_for_path)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let total = bytes.len() as u64;
        self.run_upload(Source::Bytes(bytes), total, mime, None, config)
            .await
    }

    async fn run_upload(
        &self,
        mut source: Source,
        total: u64,
        mime: String,
        file_name: Option<String>,
        mut config: UploadConfig,
    ) -> Result<File> {
        let mut file = Map::new();
        if let Some(name) = &config.name {
            file.insert("name".into(), Value::String(name.clone()));
        }
        if let Some(d) = &config.display_name {
            file.insert("display_name".into(), Value::String(d.clone()));
        }
        file.insert("mime_type".into(), Value::String(mime.clone()));
        file.insert("size_bytes".into(), Value::from(total));
        let mut start = Request::new(Method::POST, self.client.upload_url("files"))
            .header("x-goog-upload-protocol", "resumable")?
            .header("x-goog-upload-command", "start")?
            .header("x-goog-upload-header-content-length", total.to_string())?
            .header("x-goog-upload-header-content-type", &mime)?;
        if let Some(n) = file_name.filter(|n| n.is_ascii()) {
            start = start.header("x-goog-upload-file-name", n)?;
        }
        let start = start.json(&serde_json::json!({ "file": file }))?;
        let answer = self.client.execute(start).await?;
        let url = answer
            .header("x-goog-upload-url")
            .ok_or_else(|| Error::Upload("the start answer has no x-goog-upload-url".into()))?
            .to_owned();
        let mut chunk_size = config.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
        if let Some(g) = answer
            .header("x-goog-upload-chunk-granularity")
            .and_then(|g| g.parse::<usize>().ok())
            .filter(|g| *g > 0)
        {
            chunk_size = chunk_size.div_ceil(g) * g;
        }

        let mut offset: u64 = 0;
        loop {
            let want = usize::try_from(total - offset).map_or(chunk_size, |r| r.min(chunk_size));
            let chunk = source.read_chunk(want).await?;
            let len = chunk.len() as u64;
            let last = offset + len >= total;
            if len < want as u64 {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank during the upload",
                )));
            }
            let req = Request {
                body: Some(chunk),
                ..Request::new(Method::POST, url.clone())
                    .header(
                        "x-goog-upload-command",
                        if last { "upload, finalize" } else { "upload" },
                    )?
                    .header("x-goog-upload-offset", offset.to_string())?
            };
            let answer = self.send_chunk(req).await?;
            offset += len;
            if let Some(progress) = config.progress.as_mut() {
                progress(offset, total);
            }
            let status = answer
                .header("x-goog-upload-status")
                .unwrap_or("")
                .to_ascii_lowercase();
            if last {
                if status != "final" {
                    return Err(Error::Upload(format!(
                        "the last chunk's answer has x-goog-upload-status {status:?}, not \"final\""
                    )));
                }
                return Ok(answer.json::<UploadResponse>()?.file);
            }
            if status == "final" {
                return Err(Error::Upload(format!(
                    "the server finalized the upload after {offset} of {total} bytes"
                )));
            }
        }
    }

    /// Send a chunk; re-send it (after 1, 2 and 4 s) while the answer lacks
    /// `x-goog-upload-status`, as the SDKs do.
    async fn send_chunk(&self, req: Request) -> Result<Answer> {
        let mut delays = STATUS_RETRY_DELAYS.iter();
        loop {
            let answer = self.client.execute(req.clone()).await?;
            if answer.header("x-goog-upload-status").is_some() {
                return Ok(answer);
            }
            match delays.next() {
                Some(d) => tokio::time::sleep(*d).await,
                None => {
                    return Err(Error::Upload(
                        "the chunk's answer has no x-goog-upload-status".into(),
                    ))
                }
            }
        }
    }

    /// `GET /{v}/files/{id}`. Takes `abc`, `files/abc` or the file's URI.
    pub async fn get(&self, name: &str) -> Result<File> {
        let req = Request::new(
            Method::GET,
            self.client
                .url(&format!("files/{}", segment(file_id(name)))),
        );
        self.client.execute(req).await?.json()
    }

    /// `DELETE /{v}/files/{id}`. Takes `abc`, `files/abc` or the file's URI.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let req = Request::new(
            Method::DELETE,
            self.client
                .url(&format!("files/{}", segment(file_id(name)))),
        );
        self.client.execute(req).await?;
        Ok(())
    }

    /// One page of `GET /{v}/files?pageSize=N&pageToken=T`.
    pub async fn list_page(
        &self,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<FileList> {
        let mut req = Request::new(Method::GET, self.client.url("files"));
        if let Some(n) = page_size {
            req = req.query("pageSize", n.to_string());
        }
        if let Some(t) = page_token {
            req = req.query("pageToken", t);
        }
        let answer = self.client.execute(req).await?;
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(FileList {
                files: Vec::new(),
                next_page_token: None,
            });
        }
        answer.json()
    }

    /// Every file, fetched page by page as the stream is read (following `nextPageToken`).
    ///
    /// ```no_run
    /// # async fn run(client: localgem_client::Client) -> Result<(), localgem_client::Error> {
    /// use futures::TryStreamExt;
    ///
    /// let files: Vec<_> = client.files().list().try_collect().await?;
    /// for f in files {
    ///     println!("{} {}", f.name, f.mime_type);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list(&self) -> BoxStream<'static, Result<File>> {
        self.list_with_page_size(None)
    }

    /// Like [`list`](Self::list), asking for pages of `page_size` files.
    pub fn list_with_page_size(&self, page_size: Option<u32>) -> BoxStream<'static, Result<File>> {
        let files = self.clone();
        // State: Some(token) for the page to fetch (None = the first), None when done.
        futures::stream::try_unfold(Some(None::<String>), move |state| {
            let files = files.clone();
            async move {
                let Some(token) = state else {
                    return Ok::<_, Error>(None);
                };
                let page = files.list_page(page_size, token.as_deref()).await?;
                let next = page.next_page_token.filter(|t| !t.is_empty()).map(Some);
                Ok(Some((page.files, next)))
            }
        })
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids() {
        assert_eq!(file_id("abc"), "abc");
        assert_eq!(file_id("files/abc"), "abc");
        assert_eq!(file_id("http://127.0.0.1:8080/v1beta/files/abc"), "abc");
        assert_eq!(
            file_id("https://h/v1beta/files/abc:download?alt=media"),
            "abc"
        );
    }

    #[test]
    fn mime_types() {
        assert_eq!(mime_type_for_path("a.png"), Some("image/png"));
        assert_eq!(mime_type_for_path("a.tar.PDF"), Some("application/pdf"));
        assert_eq!(mime_type_for_path("a.unknownext"), None);
    }

    #[test]
    fn upload_names_get_the_files_prefix() {
        assert_eq!(
            UploadConfig::new().name("x").name.as_deref(),
            Some("files/x")
        );
        assert_eq!(
            UploadConfig::new().name("files/x").name.as_deref(),
            Some("files/x")
        );
    }

    #[tokio::test]
    async fn sources_read_in_chunks() {
        let mut s = Source::Bytes(Bytes::from_static(b"abcdefg"));
        assert_eq!(&s.read_chunk(3).await.unwrap()[..], b"abc");
        assert_eq!(&s.read_chunk(3).await.unwrap()[..], b"def");
        assert_eq!(&s.read_chunk(3).await.unwrap()[..], b"g");
        assert!(s.read_chunk(3).await.unwrap().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        std::fs::write(&p, b"0123456789").unwrap();
        let mut s = Source::File(tokio::fs::File::open(&p).await.unwrap());
        assert_eq!(&s.read_chunk(4).await.unwrap()[..], b"0123");
        assert_eq!(&s.read_chunk(8).await.unwrap()[..], b"456789");
    }
}
