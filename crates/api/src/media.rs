//! Media parts decoded as the model takes them: images to pixels, audio to samples at the
//! audio encoder's rate ([`crate::audio`], with the `ffmpeg` tools for what it does not
//! read), video to frames with timestamps between them and its soundtrack
//! ([`crate::video`]). Each part becomes an [`Expanded`]: the text that stands for it in
//! the prompt, with a [`MEDIA_MARKER`] where each decoded piece goes.

use std::sync::Arc;

use localgem_core::{Attachment, Audio, Image, MEDIA_MARKER};

use crate::audio::{self, AudioError, RawParams};
use crate::cache::DigestCache;
use crate::error::ApiError;
use crate::video::{self, VideoError, VideoLimits};

/// What one media part stands for in the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    /// Its text, with a [`MEDIA_MARKER`] where each of `media` goes.
    pub text: String,
    /// The decoded pieces, in order.
    pub media: Vec<Attachment>,
}

impl Expanded {
    /// One piece alone.
    pub fn one(piece: Attachment) -> Self {
        Expanded {
            text: MEDIA_MARKER.to_string(),
            media: vec![piece],
        }
    }

    fn bytes(&self) -> usize {
        self.media
            .iter()
            .map(|m| match &m.data {
                localgem_core::MediaData::Image(i) => i.rgb.len(),
                localgem_core::MediaData::Audio(a) => a.samples.len() * 4,
            })
            .sum::<usize>()
            + self.text.len()
    }
}

/// Bounds on what one audio or video part may cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaLimits {
    /// Longest audio part, in seconds.
    pub max_audio_seconds: f64,
    /// Video length, frames and sampling rate.
    pub video: VideoLimits,
}

impl Default for MediaLimits {
    fn default() -> Self {
        MediaLimits {
            max_audio_seconds: 1800.0,
            video: VideoLimits::default(),
        }
    }
}

/// Decoded audio (256 MiB of samples by default).
pub type AudioCache = DigestCache<Audio>;

impl Default for AudioCache {
    fn default() -> Self {
        DigestCache::new(256 << 20, |a: &Audio| a.samples.len() * 4)
    }
}

/// Decoded videos (256 MiB of frames and samples by default).
pub type VideoCache = DigestCache<Arc<Expanded>>;

impl Default for VideoCache {
    fn default() -> Self {
        DigestCache::new(256 << 20, |v: &Arc<Expanded>| v.bytes())
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

/// The raw-PCM parameters of an audio part: its `sample_rate` and `channels` fields.
pub fn raw_params(m: &localgem_wire::Media) -> RawParams {
    let num = |k: &str| {
        m.extra
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    audio::raw_params(
        m.mime_type.as_deref(),
        RawParams {
            sample_rate: num("sample_rate"),
            channels: num("channels"),
        },
    )
}

fn audio_error(what: &str, e: &AudioError) -> ApiError {
    match e {
        AudioError::TooLong { seconds, limit } => ApiError::bad_request(format!(
            "{what}: the audio is {seconds:.0} s long, past this server's limit of {limit:.0} s \
             (--max-audio-seconds)"
        )),
        other => ApiError::bad_request(format!("{what}: {other}")),
    }
}

fn video_error(what: &str, e: &VideoError) -> ApiError {
    ApiError::bad_request(format!("{what}: {e}"))
}

/// Decode an audio part to mono samples at `rate`: with the Rust decoder, else (Opus, and
/// other codecs it does not read) with `ffmpeg`.
///
/// # Errors
/// 400 naming the part: bytes that do not decode, or audio longer than the limit.
pub async fn decode_audio(
    bytes: Vec<u8>,
    mime: Option<String>,
    raw: RawParams,
    rate: u32,
    limits: MediaLimits,
    what: &str,
) -> Result<Audio, ApiError> {
    let max = limits.max_audio_seconds;
    let (decoded, bytes) = tokio::task::spawn_blocking(move || {
        let r = audio::decode(&bytes, mime.as_deref(), raw, rate, max);
        (r, bytes)
    })
    .await
    .map_err(|_| ApiError::bad_request(format!("{what}: the audio cannot be decoded")))?;
    match decoded {
        Ok(d) => Ok(Audio::new(rate, d.samples)),
        Err(AudioError::Unsupported(why)) => {
            tracing::debug!("{what}: {why}; decoding with ffmpeg");
            let samples = video::decode_audio(&bytes, rate, max)
                .await
                .map_err(|e| match e {
                    VideoError::Unavailable(_) => {
                        audio_error(what, &AudioError::Unsupported(why.clone()))
                    }
                    other => video_error(what, &other),
                })?;
            Ok(Audio::new(rate, samples))
        }
        Err(e) => Err(audio_error(what, &e)),
    }
}

/// The longest side of a video's frames for the part's `resolution`.
pub fn frame_side(m: &localgem_wire::Media) -> Result<u32, String> {
    let r = m.extra.get("resolution");
    match r.map(|v| v.as_str().ok_or(v)) {
        None | Some(Ok("high")) => Ok(768),
        Some(Ok("low")) => Ok(256),
        Some(Ok("medium")) => Ok(512),
        Some(Ok("ultra_high")) => Ok(1024),
        Some(Ok(other)) => Err(format!(
            "`resolution` {other:?} is not one of low, medium, high, ultra_high"
        )),
        Some(Err(v)) => Err(format!(
            "`resolution` must be one of low, medium, high, ultra_high, not {v}"
        )),
    }
}

/// `MM:SS` (or `H:MM:SS`) of a time in a clip.
pub fn timestamp(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// A video part as frames with their timestamps between them, then its soundtrack when
/// `audio_rate` is given and it has one: all counted as `video` input.
///
/// # Errors
/// 400 naming the part: bytes that are not a video, a clip longer than the limit, or a
/// server without the `ffmpeg` tools.
pub async fn decode_video(
    bytes: Vec<u8>,
    side: u32,
    audio_rate: Option<u32>,
    limits: MediaLimits,
    what: &str,
) -> Result<Arc<Expanded>, ApiError> {
    let clip = video::decode(&bytes, side, audio_rate, &limits.video)
        .await
        .map_err(|e| video_error(what, &e))?;
    // Nothing here depends on where the bytes came from (an upload, inline data, media
    // kept for later turns): every turn must render the clip the same, for its KV to be
    // found again.
    let mut text = format!(
        "[video, {} long, {} frames]",
        timestamp(clip.seconds),
        clip.frames.len()
    );
    let mut media = Vec::with_capacity(clip.frames.len() + 1);
    for f in clip.frames {
        text.push_str(&format!("\n{} {MEDIA_MARKER}", timestamp(f.at)));
        media.push(Attachment::image(Image::new(f.width, f.height, f.rgb)).of_video());
    }
    if let (Some(samples), Some(rate)) = (clip.audio, audio_rate) {
        text.push_str(&format!("\n[soundtrack] {MEDIA_MARKER}"));
        media.push(Attachment::audio(Audio::new(rate, samples)).of_video());
    }
    text.push_str("\n[end of video]");
    Ok(Arc::new(Expanded { text, media }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_resolutions() {
        assert_eq!(timestamp(0.0), "00:00");
        assert_eq!(timestamp(61.4), "01:01");
        assert_eq!(timestamp(3725.0), "1:02:05");
        let media = |r: serde_json::Value| localgem_wire::Media {
            data: None,
            uri: None,
            mime_type: None,
            extra: [("resolution".to_owned(), r)].into_iter().collect(),
        };
        assert_eq!(frame_side(&media("low".into())), Ok(256));
        assert_eq!(frame_side(&media("ultra_high".into())), Ok(1024));
        assert!(frame_side(&media("huge".into())).is_err());
        assert!(frame_side(&media(5.into())).is_err());
    }

    #[test]
    fn raw_parameters_come_from_the_part_and_its_mime_type() {
        let m: localgem_wire::Media = serde_json::from_value(serde_json::json!({
            "mime_type": "audio/l16;rate=24000", "channels": 2
        }))
        .unwrap();
        let p = raw_params(&m);
        assert_eq!((p.sample_rate, p.channels), (Some(24000), Some(2)));
    }
}
