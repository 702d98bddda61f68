//! Media parts of an input: uploaded files (`files/ID`, or any URI whose path ends in
//! `/files/ID`) and inline base64 `data`, checked and loaded. Documents become text in the
//! prompt (plain text, Markdown, CSV, JSON and HTML as text; PDF through its text layer);
//! images (JPEG, PNG, WebP, GIF) are decoded to pixels for models with a vision projector;
//! other media are left for the model check, which names the model and the modality when
//! the model cannot take them.

use localgem_core::Attachment;
use localgem_wire::{Content, Media, Step};
use sha2::Digest as _;

use crate::cache::digest;
use crate::error::ApiError;
use crate::files::file_id;
use crate::media::{self, decode_image, Expanded};
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

/// Keep an uploaded media part's bytes (whose SHA-256, checked on load, is `sha`) under that
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
                    "{what}: media of an earlier turn are no longer on this server"
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

/// What the model can take, for [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takes {
    /// Images and video frames.
    pub vision: bool,
    /// Audio and soundtracks, at this sample rate.
    pub audio_rate: Option<u32>,
}

/// Keep an uploaded part's bytes for later turns and point the part at them.
async fn keep_part(
    st: &AppState,
    m: &mut Media,
    from: Option<(std::path::PathBuf, String)>,
    bytes: &[u8],
    mime: Option<&String>,
) -> Result<(), ApiError> {
    if let (Some(from), Ok((cfg, _))) = (from, crate::files::enabled(st)) {
        m.uri = Some(keep(&cfg.dir, &from, bytes).await?);
        m.mime_type = mime.cloned();
    }
    Ok(())
}

/// Check every media part of `steps`, turn documents into text and decode the media the
/// model takes (`takes`): returned in input order, one [`Expanded`] for each image, audio
/// and video part. Uploaded media are kept under their digest and their part rewritten to
/// it, so that the steps as resolved here serve later turns after the upload is gone. The
/// first `trusted` steps come from the store (they may name kept media); the rest from the
/// request.
///
/// # Errors
/// 400 for malformed parts, foreign URIs, unreadable documents and media that do not
/// decode or pass a limit; 404 for files that do not exist (or belong to another key).
pub async fn resolve(
    st: &AppState,
    tenant: &Tenant,
    steps: &mut [Step],
    trusted: usize,
    takes: Takes,
) -> Result<Vec<Expanded>, ApiError> {
    let limits = st.config.media;
    let mut out = Vec::new();
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
                Content::Image(m) if takes.vision => {
                    let (bytes, mime, from) = load(st, tenant, m, &what, trusted).await?;
                    keep_part(st, m, from, &bytes, mime.as_ref()).await?;
                    let key = digest(&[&bytes]);
                    let image = st
                        .images
                        .get_or_make(key, || decode_image(bytes, mime.as_deref(), &what))
                        .await?;
                    out.push(Expanded::one(Attachment::image(image)));
                }
                Content::Audio(m) if takes.audio_rate.is_some() => {
                    let rate = takes.audio_rate.unwrap_or(16_000);
                    let raw = media::raw_params(m);
                    let (bytes, mime, from) = load(st, tenant, m, &what, trusted).await?;
                    keep_part(st, m, from, &bytes, mime.as_ref()).await?;
                    let key = digest(&[
                        &bytes,
                        mime.as_deref().unwrap_or("").as_bytes(),
                        &rate.to_le_bytes(),
                        &raw.sample_rate.unwrap_or(0).to_le_bytes(),
                        &raw.channels.unwrap_or(0).to_le_bytes(),
                    ]);
                    let audio = st
                        .audio
                        .get_or_make(key, || {
                            media::decode_audio(bytes, mime, raw, rate, limits, &what)
                        })
                        .await?;
                    out.push(Expanded::one(Attachment::audio(audio)));
                }
                Content::Video(m) if takes.vision => {
                    let side = media::frame_side(m)
                        .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))?;
                    let (bytes, mime, from) = load(st, tenant, m, &what, trusted).await?;
                    keep_part(st, m, from, &bytes, mime.as_ref()).await?;
                    let rate = takes.audio_rate;
                    let key = digest(&[
                        &bytes,
                        &side.to_le_bytes(),
                        &rate.unwrap_or(0).to_le_bytes(),
                    ]);
                    let video = st
                        .videos
                        .get_or_make(key, || {
                            media::decode_video(bytes, side, rate, limits, &what)
                        })
                        .await?;
                    out.push((*video).clone());
                }
                Content::Image(m) | Content::Audio(m) | Content::Video(m) => {
                    // Checked only; the model check decides.
                    locate(st, tenant, m, &what, trusted).await?;
                }
            }
        }
    }
    Ok(out)
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
