//! Media parts of an input: uploaded files (`files/ID`, or any URI whose path ends in
//! `/files/ID`) and inline base64 `data`, checked and loaded. Documents become text in the
//! prompt (plain text, Markdown, CSV, JSON and HTML as text; PDF through its text layer);
//! images (JPEG, PNG, WebP, GIF) are decoded to pixels for models with a vision projector;
//! other media are left for the model check, which names the model and the modality when
//! the model cannot take them.

use localgem_core::Image;
use localgem_wire::{Content, Media, Step};
use sha2::Digest as _;

use crate::error::ApiError;
use crate::files::file_id;
use crate::tenant::Tenant;
use crate::AppState;

/// Where a media part's bytes are.
enum Source {
    /// Inline `data`, decoded.
    Inline(Vec<u8>),
    /// An uploaded file whose bytes are there, with its metadata.
    File(std::path::PathBuf, localgem_core::FileRecord),
    /// Media an earlier turn kept (`media/<sha256>`), and its SHA-256.
    Kept(std::path::PathBuf, String),
}

/// The URI prefix of media kept for later turns (content-addressed under the files
/// directory). Only turns read back from the store may use it.
const KEPT: &str = "media/";

/// Keep an uploaded image's bytes (whose SHA-256, checked on load, is `sha`) under that
/// digest, apart from the upload (which may be
/// deleted or expire while the conversation goes on); returns its `media/<sha256>` URI.
async fn keep(
    dir: &std::path::Path,
    (from, sha): &(std::path::PathBuf, String),
    bytes: &[u8],
) -> Result<String, ApiError> {
    let kept = dir.join("media");
    let path = kept.join(sha);
    if tokio::fs::metadata(&path).await.is_err() {
        tokio::fs::create_dir_all(&kept)
            .await
            .map_err(ApiError::internal)?;
        // A hard link costs no space; another filesystem gets a copy, renamed into place
        // so that a reader never sees half of it.
        if tokio::fs::hard_link(from, &path).await.is_err() {
            let tmp = kept.join(format!(".{sha}.{}", rand::random::<u64>()));
            tokio::fs::write(&tmp, bytes)
                .await
                .map_err(ApiError::internal)?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(ApiError::internal)?;
        }
    }
    Ok(format!("{KEPT}{sha}"))
}

/// Check a media part (inline data that decodes, or an uploaded file of this key that is
/// still there) without reading a file; with its MIME type.
async fn locate(
    st: &AppState,
    tenant: &Tenant,
    m: &Media,
    what: &str,
    trusted: bool,
) -> Result<(Source, Option<String>), ApiError> {
    if let Some(sha) = m
        .uri
        .as_deref()
        .and_then(|u| u.strip_prefix(KEPT))
        .filter(|_| trusted)
    {
        let (cfg, _) = crate::files::enabled(st).map_err(|e| ApiError::bad_request(e.message))?;
        let valid = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(ApiError::bad_request(format!(
                "{what}: kept media {sha:?} is not a digest"
            )));
        }
        let path = cfg.dir.join("media").join(sha);
        return Ok((Source::Kept(path, sha.to_owned()), m.mime_type.clone()));
    }
    if let Some(data) = &m.data {
        let bytes = crate::signature::decode_base64(data)
            .map_err(|e| ApiError::bad_request(format!("{what}: `data` is not base64: {e}")))?;
        return Ok((Source::Inline(bytes), m.mime_type.clone()));
    }
    let Some(uri) = &m.uri else {
        return Err(ApiError::bad_request(format!(
            "{what} needs `data` (base64) or `uri` (an uploaded file)"
        )));
    };
    let is_ours = uri.starts_with("files/") || uri.contains("/files/");
    let id = file_id(uri).filter(|_| is_ours).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{what}: uri {uri:?} is not a file of this server; upload it with the Files API (its uri, or files/ID), or send `data`"
        ))
    })?;
    let (cfg, _) = crate::files::enabled(st).map_err(|e| ApiError::bad_request(e.message))?;
    let f = st
        .store
        .get_file(&tenant.0, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{what}: file files/{id} not found")))?;
    let path = cfg.dir.join(&f.blob);
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|_| damaged(what, &f, "its bytes are missing"))?;
    if meta.len() != f.size_bytes {
        return Err(damaged(
            what,
            &f,
            &format!("{} bytes of {} are there", meta.len(), f.size_bytes),
        ));
    }
    let mime = m.mime_type.clone().or(Some(f.mime_type.clone()));
    Ok((Source::File(path, f), mime))
}

/// A stored file whose bytes no longer match what was uploaded: never used, and said so.
fn damaged(what: &str, f: &localgem_core::FileRecord, how: &str) -> ApiError {
    tracing::warn!(file = %f.id, "stored file is damaged: {how}");
    ApiError::bad_request(format!(
        "{what}: file files/{} is damaged on this server ({how}); delete it and upload it again",
        f.id
    ))
}

/// Bytes with their SHA-256 in lower-case hex, hashed on the blocking pool.
async fn hashed(bytes: Vec<u8>) -> Result<(Vec<u8>, String), ApiError> {
    tokio::task::spawn_blocking(move || {
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        (bytes, sha)
    })
    .await
    .map_err(ApiError::internal)
}

/// The bytes and MIME type of a media part, and for an uploaded file its path and SHA-256.
/// A stored file's bytes are checked against the size and SHA-256 recorded at upload.
async fn load(
    st: &AppState,
    tenant: &Tenant,
    m: &Media,
    what: &str,
    trusted: bool,
) -> Result<
    (
        Vec<u8>,
        Option<String>,
        Option<(std::path::PathBuf, String)>,
    ),
    ApiError,
> {
    let (source, mime) = locate(st, tenant, m, what, trusted).await?;
    let mut from = None;
    let bytes = match source {
        Source::Inline(bytes) => bytes,
        Source::Kept(path, sha) => {
            let gone = || {
                ApiError::bad_request(format!(
                    "{what}: an image of an earlier turn is no longer on this server"
                ))
            };
            let bytes = tokio::fs::read(&path).await.map_err(|_| gone())?;
            let (bytes, digest) = hashed(bytes).await?;
            if digest != sha {
                tracing::warn!("kept media {sha} is damaged");
                return Err(gone());
            }
            bytes
        }
        Source::File(path, f) => {
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|_| damaged(what, &f, "its bytes cannot be read"))?;
            let (bytes, sha) = hashed(bytes).await?;
            if bytes.len() as u64 != f.size_bytes {
                let how = format!("{} bytes of {} are there", bytes.len(), f.size_bytes);
                return Err(damaged(what, &f, &how));
            }
            if sha != f.sha256_hex {
                return Err(damaged(what, &f, "its SHA-256 differs from the upload's"));
            }
            from = Some((path, sha));
            bytes
        }
    };
    Ok((bytes, mime, from))
}

/// Text of an HTML page: tags, scripts and styles removed, common entities decoded.
pub fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let rest = &lower[i..];
        if rest.starts_with("<script") || rest.starts_with("<style") {
            let close = if rest.starts_with("<script") {
                "</script>"
            } else {
                "</style>"
            };
            i = rest.find(close).map_or(html.len(), |e| i + e + close.len());
            continue;
        }
        if rest.starts_with('<') {
            let tag_end = rest.find('>').map_or(html.len(), |e| i + e + 1);
            let tag = &rest[..(tag_end - i).min(rest.len())];
            if ["<br", "<p", "</p", "<div", "</div", "<li", "<tr", "<h"]
                .iter()
                .any(|t| tag.starts_with(t))
            {
                out.push('\n');
            }
            i = tag_end;
            continue;
        }
        let next = rest.find('<').map_or(html.len(), |e| i + e);
        out.push_str(&html[i..next]);
        i = next;
    }
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let lines: Vec<&str> = decoded
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("\n")
}

/// A document's text, by MIME type.
///
/// # Errors
/// 400 for an unsupported type, text that is not UTF-8, or a PDF that does not parse.
pub async fn document_text(bytes: Vec<u8>, mime: &str, what: &str) -> Result<String, ApiError> {
    let mime = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let utf8 = |b: Vec<u8>| {
        String::from_utf8(b).map_err(|_| {
            ApiError::bad_request(format!("{what}: a {mime} document must be UTF-8 text"))
        })
    };
    match mime.as_str() {
        "application/pdf" => {
            let what = what.to_owned();
            // The PDF parser may panic on a damaged file: that is a bad file, not a crash.
            tokio::task::spawn_blocking(move || pdf_extract::extract_text_from_mem(&bytes))
                .await
                .map_err(|_| ApiError::bad_request(format!("{what}: the PDF cannot be read")))?
                .map_err(|e| ApiError::bad_request(format!("{what}: the PDF cannot be read: {e}")))
        }
        "text/html" => utf8(bytes).map(|h| html_text(&h)),
        "application/json" | "text/csv" | "text/markdown" | "text/plain" | "text/x-markdown" => {
            utf8(bytes)
        }
        m if m.starts_with("text/") => utf8(bytes),
        "" => Err(ApiError::bad_request(format!(
            "{what} needs a `mime_type` (text/plain, text/markdown, text/csv, application/json, text/html or application/pdf)"
        ))),
        other => Err(ApiError::bad_request(format!(
            "{what}: documents of type {other} are not supported; use text/plain, text/markdown, text/csv, application/json, text/html or application/pdf"
        ))),
    }
}

/// What was made from a media part's bytes (decoded pixels, a document's text), by the
/// SHA-256 of those bytes, so that the turns of a conversation that carry the same file
/// decode it once. Bounded by the size of what it holds; the oldest entries go first.
#[derive(Debug)]
pub struct DigestCache<V> {
    budget: usize,
    size: fn(&V) -> usize,
    inner: std::sync::Mutex<CacheInner<V>>,
}

#[derive(Debug)]
struct CacheInner<V> {
    map: std::collections::HashMap<[u8; 32], V>,
    order: std::collections::VecDeque<[u8; 32]>,
    bytes: usize,
}

impl<V: Clone> DigestCache<V> {
    /// A cache holding at most `budget` bytes, as `size` measures its values.
    pub fn new(budget: usize, size: fn(&V) -> usize) -> Self {
        DigestCache {
            budget,
            size,
            inner: std::sync::Mutex::new(CacheInner {
                map: std::collections::HashMap::new(),
                order: std::collections::VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    /// The value kept for this digest.
    pub fn get(&self, key: &[u8; 32]) -> Option<V> {
        self.inner.lock().expect("poisoned").map.get(key).cloned()
    }

    /// Keep a value (one larger than the whole budget is not kept).
    pub fn put(&self, key: [u8; 32], value: V) {
        let size = (self.size)(&value);
        if size > self.budget {
            return;
        }
        let mut c = self.inner.lock().expect("poisoned");
        if c.map.contains_key(&key) {
            return;
        }
        while c.bytes + size > self.budget {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some(v) = c.map.remove(&old) {
                c.bytes -= (self.size)(&v);
            }
        }
        c.bytes += size;
        c.order.push_back(key);
        c.map.insert(key, value);
    }

    /// The value kept for `key`, else what `make` gives, kept.
    ///
    /// # Errors
    /// What `make` fails with (nothing is kept then).
    pub async fn get_or_make<E, Fut>(
        &self,
        key: [u8; 32],
        make: impl FnOnce() -> Fut,
    ) -> Result<V, E>
    where
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        let v = make().await?;
        self.put(key, v.clone());
        Ok(v)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("poisoned").bytes
    }
}

/// Decoded images (256 MiB of pixels by default).
pub type ImageCache = DigestCache<Image>;

impl Default for ImageCache {
    fn default() -> Self {
        DigestCache::new(256 << 20, |i: &Image| i.rgb.len())
    }
}

/// Documents' text (64 MiB by default), keyed by their bytes and MIME type.
pub type TextCache = DigestCache<std::sync::Arc<str>>;

impl Default for TextCache {
    fn default() -> Self {
        DigestCache::new(64 << 20, |t: &std::sync::Arc<str>| t.len())
    }
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Largest side of an image, in pixels, and the memory its decoding may take.
const MAX_IMAGE_SIDE: u32 = 16_384;
const MAX_IMAGE_ALLOC: u64 = 512 << 20;

/// Decode an image (JPEG, PNG, WebP, or a GIF's first frame) to RGB pixels. The format is
/// read from the bytes; a MIME type that says otherwise is not trusted over them.
///
/// # Errors
/// 400 naming the part: a format that is not supported, or bytes that do not decode (a
/// truncated or damaged file, or one too large).
pub async fn decode_image(
    bytes: Vec<u8>,
    mime: Option<&str>,
    what: &str,
) -> Result<Image, ApiError> {
    use image::ImageFormat;
    let format = image::guess_format(&bytes).ok();
    let supported = [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::WebP,
        ImageFormat::Gif,
    ];
    let format = match format {
        Some(f) if supported.contains(&f) => f,
        Some(f) => {
            return Err(ApiError::bad_request(format!(
                "{what}: images in {} format are not supported; use JPEG, PNG, WebP or GIF",
                f.extensions_str().first().unwrap_or(&"this").to_uppercase()
            )))
        }
        None => {
            let m = mime.unwrap_or("image");
            return Err(ApiError::bad_request(format!(
                "{what}: the data is not a JPEG, PNG, WebP or GIF image (declared {m}) and cannot be decoded"
            )));
        }
    };
    // The JPEG decoder fills in what a truncated file lacks: a file cut short (no
    // end-of-image marker) is refused rather than shown to the model half grey.
    if format == ImageFormat::Jpeg && !bytes.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(ApiError::bad_request(format!(
            "{what}: the image cannot be decoded: the JPEG data is truncated (no end-of-image marker)"
        )));
    }
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        limits.max_alloc = Some(MAX_IMAGE_ALLOC);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| {
            ApiError::bad_request(format!("{what}: the image cannot be decoded: {e}"))
        })?;
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 {
            return Err(ApiError::bad_request(format!("{what}: the image is empty")));
        }
        Ok(Image::new(w, h, rgb.into_raw()))
    })
    .await
    .map_err(|_| ApiError::bad_request("an image cannot be decoded"))?
}

/// Check every media part of `steps`, turn documents into text and, when the model takes
/// images (`vision`), decode them: returned in input order. Uploaded images are kept under
/// their digest and their part rewritten to it, so that the steps as resolved here serve
/// later turns after the upload is gone. The first `trusted` steps come from the store (they
/// may name kept media); the rest from the request.
///
/// # Errors
/// 400 for malformed parts, foreign URIs, unreadable documents and images that do not
/// decode; 404 for files that do not exist (or belong to another key).
pub async fn resolve(
    st: &AppState,
    tenant: &Tenant,
    steps: &mut [Step],
    trusted: usize,
    vision: bool,
) -> Result<Vec<Image>, ApiError> {
    let mut images = Vec::new();
    for (si, step) in steps.iter_mut().enumerate() {
        let Step::UserInput { content } = step else {
            continue;
        };
        let trusted = si < trusted;
        for (ci, c) in content.iter_mut().enumerate() {
            let what = format!("input step {si}, content {ci}");
            match c {
                Content::Text { .. } => {}
                Content::Document(m) => {
                    let (bytes, mime, _) = load(st, tenant, m, &what, trusted).await?;
                    let mime = mime.unwrap_or_default();
                    let key = digest(&[&bytes, mime.as_bytes()]);
                    let text = st
                        .documents
                        .get_or_make(key, || async {
                            document_text(bytes, &mime, &what).await.map(Into::into)
                        })
                        .await?;
                    let label = m
                        .uri
                        .as_deref()
                        .and_then(file_id)
                        .map_or_else(|| mime.clone(), |id| format!("files/{id}, {mime}"));
                    *c = Content::text(format!(
                        "[document: {label}]\n{}\n[end of document]",
                        text.trim()
                    ));
                }
                Content::Image(m) if vision => {
                    let (bytes, mime, from) = load(st, tenant, m, &what, trusted).await?;
                    if let (Some(from), Ok((cfg, _))) = (from, crate::files::enabled(st)) {
                        m.uri = Some(keep(&cfg.dir, &from, &bytes).await?);
                        m.mime_type.clone_from(&mime);
                    }
                    let key = digest(&[&bytes]);
                    let image = st
                        .images
                        .get_or_make(key, || decode_image(bytes, mime.as_deref(), &what))
                        .await?;
                    images.push(image);
                }
                Content::Image(m) | Content::Audio(m) | Content::Video(m) => {
                    // Checked only; the model check decides.
                    locate(st, tenant, m, &what, trusted).await?;
                }
            }
        }
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_text() {
        let t = html_text(
            "<html><head><style>p{color:red}</style><script>alert(1)</script></head>\
             <body><h1>Title</h1><p>Fish &amp; chips &lt;3</p><ul><li>one</li><li>two</li></ul></body></html>",
        );
        assert_eq!(t, "Title\nFish & chips <3\none\ntwo");
    }

    #[test]
    fn the_image_cache_keeps_the_newest_within_its_budget() {
        let img = |v: u8| Image::new(2, 2, vec![v; 12]);
        let cache = ImageCache::new(30, |i: &Image| i.rgb.len());
        cache.put([1; 32], img(1));
        cache.put([2; 32], img(2));
        assert_eq!(cache.bytes(), 24);
        assert_eq!(cache.get(&[1; 32]), Some(img(1)));
        cache.put([3; 32], img(3));
        assert_eq!(cache.get(&[1; 32]), None, "the oldest goes first");
        assert_eq!(cache.get(&[2; 32]), Some(img(2)));
        assert_eq!(cache.get(&[3; 32]), Some(img(3)));
        assert_eq!(cache.bytes(), 24);
        cache.put([4; 32], Image::new(4, 4, vec![0; 48]));
        assert_eq!(cache.get(&[4; 32]), None, "larger than the budget");
        assert_eq!(cache.bytes(), 24);
    }

    #[tokio::test]
    async fn document_types() {
        assert_eq!(
            document_text(b"a,b\n1,2".to_vec(), "text/csv", "d")
                .await
                .unwrap(),
            "a,b\n1,2"
        );
        assert_eq!(
            document_text(b"# T".to_vec(), "text/markdown; charset=utf-8", "d")
                .await
                .unwrap(),
            "# T"
        );
        for (bytes, mime, needle) in [
            (vec![0xff, 0xfe], "text/plain", "UTF-8"),
            (b"x".to_vec(), "application/msword", "not supported"),
            (b"x".to_vec(), "", "mime_type"),
            (b"%PDF-1.4\n1 0 obj".to_vec(), "application/pdf", "PDF"),
        ] {
            let e = document_text(bytes, mime, "d").await.unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }
}
