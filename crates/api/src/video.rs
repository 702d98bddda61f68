//! Video parts as the model takes them: frames sampled from the clip (one a second by
//! default, fewer when a server limit on frames would be passed) and its soundtrack, decoded
//! with the `ffprobe` and `ffmpeg` tools (Debian's `ffmpeg` package), which read every
//! container and codec a user is likely to send.
//!
//! The clip is written to a private temporary file (MP4 and MOV need a seekable input),
//! probed for its streams and length, and refused before any decoding when it is longer than
//! the limit. Frames come back as PPM images through a pipe, scaled so that their longer side
//! is at most the part's resolution; the soundtrack as mono 32-bit floats at the audio
//! encoder's rate. Every tool run has a deadline and is killed when dropped.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

/// Bounds on the cost of one video part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoLimits {
    /// Longest clip, in seconds.
    pub max_seconds: f64,
    /// Most frames sampled from one clip: a longer clip is sampled less often.
    pub max_frames: usize,
    /// Frames sampled per second of video, when the clip is short enough.
    pub fps: f64,
}

impl Default for VideoLimits {
    fn default() -> Self {
        VideoLimits {
            max_seconds: 1800.0,
            max_frames: 32,
            fps: 1.0,
        }
    }
}

/// One sampled frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Its time in the clip, in seconds.
    pub at: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGB pixels, row by row.
    pub rgb: Vec<u8>,
}

/// A decoded clip.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Its length in seconds.
    pub seconds: f64,
    /// The sampled frames, in order.
    pub frames: Vec<Frame>,
    /// Its soundtrack, mono at the asked rate, when it has one and one was asked for.
    pub audio: Option<Vec<f32>>,
}

/// Why a clip was not decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoError {
    /// The tools are not installed on this server.
    Unavailable(String),
    /// The bytes are not a video that decodes.
    Corrupt(String),
    /// Longer than the limit.
    TooLong {
        /// The clip's length.
        seconds: f64,
        /// The limit.
        limit: f64,
    },
}

impl std::fmt::Display for VideoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VideoError::Unavailable(m) | VideoError::Corrupt(m) => f.write_str(m),
            VideoError::TooLong { seconds, limit } => write!(
                f,
                "the video is {seconds:.0} s long, past this server's limit of {limit:.0} s \
                 (--max-video-seconds)"
            ),
        }
    }
}

/// How long one tool run may take.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Stream {
    codec_type: Option<String>,
    duration: Option<String>,
}

#[derive(Deserialize)]
struct Format {
    duration: Option<String>,
}

/// Tool runs at once, across all requests: one per core, so that ten videos arriving together
/// queue for the CPU rather than fight over it (and over memory).
fn slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        tokio::sync::Semaphore::new(cores)
    })
}

/// Run a tool to its end within the deadline: its standard output, or its last line of
/// errors.
async fn run(tool: &str, args: &[&str]) -> Result<Vec<u8>, VideoError> {
    let _slot = slots()
        .acquire()
        .await
        .map_err(|_| VideoError::Unavailable("the media decoder is shutting down".into()))?;
    let child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            VideoError::Unavailable(format!(
                "video input needs {tool} on this server, which cannot be run: {e} \
                 (install Debian's ffmpeg package)"
            ))
        })?;
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .map_err(|_| {
            VideoError::Corrupt(format!(
                "the video could not be decoded within {} s",
                DEADLINE.as_secs()
            ))
        })?
        .map_err(|e| VideoError::Corrupt(format!("the video could not be decoded: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no detail")
            .trim();
        // The tool names our temporary file; the user knows it as their part.
        let last = last.rsplit(": ").next().unwrap_or(last);
        return Err(VideoError::Corrupt(format!(
            "the file cannot be decoded as video or audio ({tool}: {last})"
        )));
    }
    Ok(out.stdout)
}

/// How many frames to sample from a clip of `seconds`, and how far apart.
pub fn sampling(seconds: f64, limits: &VideoLimits) -> (usize, f64) {
    let fps = if limits.fps > 0.0 { limits.fps } else { 1.0 };
    let wanted = (seconds * fps).ceil().max(1.0) as usize;
    let n = wanted.min(limits.max_frames.max(1));
    let every = if n < wanted {
        seconds / n as f64
    } else {
        1.0 / fps
    };
    (n, every)
}

/// Frames from a stream of binary PPM (P6, 8-bit) images.
pub fn split_ppm(mut bytes: &[u8]) -> Result<Vec<(u32, u32, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut fields = Vec::with_capacity(4);
        let mut i = 0;
        while fields.len() < 4 {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if start == i {
                return Err("a frame's header is cut short".into());
            }
            fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
        }
        i += 1; // the single whitespace before the pixels
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("bad frame header {s:?}"))
        };
        if fields[0] != "P6" || num(&fields[3])? != 255 {
            return Err("frames are not 8-bit RGB".into());
        }
        let (w, h) = (num(&fields[1])?, num(&fields[2])?);
        let len = (w as usize)
            .checked_mul(h as usize)
            .and_then(|n| n.checked_mul(3))
            .ok_or("a frame is too large")?;
        let end = i.checked_add(len).ok_or("a frame is too large")?;
        if w == 0 || h == 0 || end > bytes.len() {
            return Err("a frame is cut short".into());
        }
        out.push((w, h, bytes[i..end].to_vec()));
        bytes = &bytes[end..];
    }
    Ok(out)
}

/// The clip's bytes in a private temporary file (removed when dropped).
async fn spill(bytes: &[u8]) -> Result<tempfile::NamedTempFile, VideoError> {
    let file = tempfile::Builder::new()
        .prefix("localgem-media-")
        .tempfile()
        .map_err(|e| VideoError::Unavailable(format!("no room for a temporary file: {e}")))?;
    tokio::fs::write(file.path(), bytes)
        .await
        .map_err(|e| VideoError::Unavailable(format!("no room for a temporary file: {e}")))?;
    Ok(file)
}

/// A file's streams and length, when the container says.
async fn probe(path: &str) -> Result<(Probe, Option<f64>), VideoError> {
    let probe = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_type,duration",
            "-of",
            "json",
            path,
        ],
    )
    .await?;
    let probe: Probe = serde_json::from_slice(&probe)
        .map_err(|_| VideoError::Corrupt("the file cannot be read".into()))?;
    let seconds = probe
        .format
        .as_ref()
        .and_then(|f| f.duration.as_deref())
        .into_iter()
        .chain(probe.streams.iter().filter_map(|s| s.duration.as_deref()))
        .filter_map(|d| d.parse::<f64>().ok())
        .find(|d| d.is_finite() && *d > 0.0);
    Ok((probe, seconds))
}

impl Probe {
    fn has(&self, kind: &str) -> bool {
        self.streams
            .iter()
            .any(|s| s.codec_type.as_deref() == Some(kind))
    }
}

/// The first audio stream of the file at `path`, mono at `rate`, at most `max_seconds` of it.
async fn sound(path: &str, rate: u32, max_seconds: f64) -> Result<Vec<f32>, VideoError> {
    let rate = rate.to_string();
    let limit = format!("{max_seconds:.3}");
    let raw = run(
        "ffmpeg",
        &[
            "-v", "error", "-nostdin", "-i", path, "-map", "0:a:0", "-ac", "1", "-ar", &rate, "-t",
            &limit, "-f", "f32le", "-",
        ],
    )
    .await?;
    Ok(raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).clamp(-1.0, 1.0))
        .collect())
}

/// Decode audio the Rust decoder does not read (Opus, for one) with the tools: mono at
/// `rate`, refused before decoding when longer than `max_seconds`.
///
/// # Errors
/// As [`decode`]; [`VideoError::Corrupt`] too when the file has no audio stream.
pub async fn decode_audio(
    bytes: &[u8],
    rate: u32,
    max_seconds: f64,
) -> Result<Vec<f32>, VideoError> {
    let file = spill(bytes).await?;
    let path = file.path().to_string_lossy().into_owned();
    let (probe, seconds) = probe(&path).await?;
    if !probe.has("audio") {
        return Err(VideoError::Corrupt("the file has no audio stream".into()));
    }
    // Without a declared length, decoding stops at the limit.
    if let Some(seconds) = seconds.filter(|s| *s > max_seconds) {
        return Err(VideoError::TooLong {
            seconds,
            limit: max_seconds,
        });
    }
    let samples = sound(&path, rate, max_seconds).await?;
    if samples.is_empty() {
        return Err(VideoError::Corrupt("the file holds no audio".into()));
    }
    Ok(samples)
}

/// Decode a clip: its length, up to `limits.max_frames` frames whose longer side is at most
/// `side` pixels, and its soundtrack at `audio_rate` when one is given and it has one.
///
/// # Errors
/// [`VideoError::Unavailable`] without the tools; [`VideoError::TooLong`] past the limit
/// (before decoding); [`VideoError::Corrupt`] for bytes that are not a video with a picture.
pub async fn decode(
    bytes: &[u8],
    side: u32,
    audio_rate: Option<u32>,
    limits: &VideoLimits,
) -> Result<Decoded, VideoError> {
    let file = spill(bytes).await?;
    let path = file.path().to_string_lossy().into_owned();
    let (probe, seconds) = probe(&path).await?;
    if !probe.has("video") {
        return Err(VideoError::Corrupt(
            "the file has no video stream (send sound alone as an audio part)".into(),
        ));
    }
    if let Some(seconds) = seconds.filter(|s| *s > limits.max_seconds) {
        return Err(VideoError::TooLong {
            seconds,
            limit: limits.max_seconds,
        });
    }

    // A clip whose container does not say how long it is (a live recording's WebM) is sampled
    // at the usual rate up to the frame limit, and read no further than the length limit.
    let (n, every) = match seconds {
        Some(s) => sampling(s, limits),
        None => (limits.max_frames.max(1), 1.0 / limits.fps.max(1e-3)),
    };
    let limit = format!("{:.3}", limits.max_seconds);
    let filter = format!(
        "fps=1/{every:.6}:start_time=0,scale=w='min({side},iw)':h='min({side},ih)':\
         force_original_aspect_ratio=decrease"
    );
    let frames = n.to_string();
    let ppm = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-nostdin",
            "-i",
            &path,
            "-map",
            "0:v:0",
            "-vf",
            &filter,
            "-frames:v",
            &frames,
            "-t",
            &limit,
            "-f",
            "image2pipe",
            "-c:v",
            "ppm",
            "-",
        ],
    )
    .await?;
    let frames: Vec<Frame> = split_ppm(&ppm)
        .map_err(|e| VideoError::Corrupt(format!("the video cannot be decoded: {e}")))?
        .into_iter()
        .enumerate()
        .map(|(k, (width, height, rgb))| Frame {
            at: k as f64 * every,
            width,
            height,
            rgb,
        })
        .collect();
    if frames.is_empty() {
        return Err(VideoError::Corrupt(
            "the video has no picture that decodes".into(),
        ));
    }
    let audio = match audio_rate.filter(|_| probe.has("audio")) {
        Some(rate) => Some(sound(&path, rate, limits.max_seconds).await?).filter(|s| !s.is_empty()),
        None => None,
    };
    Ok(Decoded {
        seconds: seconds.unwrap_or(frames.len() as f64 * every),
        frames,
        audio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_frame_a_second_until_the_limit_spreads_them() {
        let limits = VideoLimits {
            max_seconds: 600.0,
            max_frames: 10,
            fps: 1.0,
        };
        assert_eq!(sampling(0.4, &limits), (1, 1.0));
        assert_eq!(sampling(5.0, &limits), (5, 1.0));
        assert_eq!(sampling(5.5, &limits), (6, 1.0));
        let (n, every) = sampling(100.0, &limits);
        assert_eq!(n, 10);
        assert!((every - 10.0).abs() < 1e-9);
        let two = VideoLimits { fps: 2.0, ..limits };
        assert_eq!(sampling(3.0, &two), (6, 0.5));
    }

    #[test]
    fn ppm_frames_split_and_damage_is_refused() {
        let mut s = b"P6\n2 1\n255\n".to_vec();
        s.extend([1, 2, 3, 4, 5, 6]);
        s.extend(b"P6 1 1 255\n");
        s.extend([7, 8, 9]);
        let f = split_ppm(&s).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], (2, 1, vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(f[1], (1, 1, vec![7, 8, 9]));
        assert!(split_ppm(&s[..s.len() - 1]).is_err());
        assert!(split_ppm(b"P5\n1 1\n255\n\x00").is_err());
        assert!(split_ppm(b"P6\n99999999 99999999\n255\n").is_err());
        assert!(split_ppm(b"P6\n1").is_err());
        assert_eq!(split_ppm(b"").unwrap().len(), 0);
    }
}
