//! Raw audio: 16-bit little-endian PCM (`audio/l16`, `audio/pcm`) and G.711 A-law and
//! mu-law, whose rate and channels come from the part or its MIME type.

use super::{corrupt, AudioError, RawParams, CHANNELS, RATES};

/// The raw format a MIME type (its base, lower-case) names, if it names one.
pub(super) fn kind_of(base: &str) -> Option<RawKind> {
    match base {
        "audio/l16" | "audio/pcm" => Some(RawKind::L16),
        "audio/alaw" | "audio/x-alaw" | "audio/pcma" => Some(RawKind::ALaw),
        "audio/mulaw" | "audio/x-mulaw" | "audio/pcmu" | "audio/basic" => Some(RawKind::MuLaw),
        _ => None,
    }
}

/// Parse `;rate=N` and `;channels=N` MIME parameters (case-insensitive) into RawParams, the
/// explicit ones taking precedence. A value that is not a number becomes 0, which [`decode`]
/// rejects with a message, rather than silently falling back to a default.
pub fn raw_params(mime: Option<&str>, explicit: RawParams) -> RawParams {
    let mut parsed = RawParams::default();
    for param in mime.unwrap_or_default().split(';').skip(1) {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').parse::<u32>().unwrap_or(0);
        match key.trim().to_ascii_lowercase().as_str() {
            "rate" => parsed.sample_rate = Some(value),
            "channels" => parsed.channels = Some(value),
            _ => {}
        }
    }
    RawParams {
        sample_rate: explicit.sample_rate.or(parsed.sample_rate),
        channels: explicit.channels.or(parsed.channels),
    }
}

/// A raw sample format.
#[derive(Clone, Copy)]
pub(super) enum RawKind {
    L16,
    ALaw,
    MuLaw,
}

/// Raw bytes as mono samples, and their rate.
pub(super) fn decode_raw(
    bytes: &[u8],
    kind: RawKind,
    params: RawParams,
    max_seconds: f64,
) -> Result<(Vec<f32>, u32), AudioError> {
    let (default_rate, width) = match kind {
        RawKind::L16 => (16_000, 2),
        RawKind::ALaw | RawKind::MuLaw => (8_000, 1),
    };
    let rate = params.sample_rate.unwrap_or(default_rate);
    let channels = params.channels.unwrap_or(1);
    if !RATES.contains(&rate) {
        return Err(corrupt(format!(
            "the sample rate must be between 1000 and 384000 Hz, not {rate}"
        )));
    }
    if !CHANNELS.contains(&channels) {
        return Err(corrupt(format!(
            "the channel count must be between 1 and 16, not {channels}"
        )));
    }
    let frame = width * channels as usize;
    if !bytes.len().is_multiple_of(frame) {
        return Err(corrupt(format!(
            "the raw audio is {} bytes, not a whole number of {frame}-byte frames ({width} byte(s) per sample, {channels} channel(s))",
            bytes.len()
        )));
    }
    let frames = bytes.len() / frame;
    if frames == 0 {
        return Err(corrupt("the raw audio contains no audio samples"));
    }
    let seconds = frames as f64 / f64::from(rate);
    if seconds > max_seconds {
        return Err(AudioError::TooLong {
            seconds,
            limit: max_seconds,
        });
    }
    let sample = |b: &[u8]| -> f32 {
        let v = match kind {
            RawKind::L16 => i16::from_le_bytes([b[0], b[1]]),
            RawKind::ALaw => alaw_to_linear(b[0]),
            RawKind::MuLaw => mulaw_to_linear(b[0]),
        };
        f32::from(v) / 32768.0
    };
    let mono = bytes
        .chunks_exact(frame)
        .map(|f| f.chunks_exact(width).map(sample).sum::<f32>() / channels as f32)
        .collect();
    Ok((mono, rate))
}

/// G.711 mu-law expansion to 16-bit linear (ITU-T G.711).
pub(super) fn mulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let magnitude = (((i32::from(u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)) - 0x84;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// G.711 A-law expansion to 16-bit linear (ITU-T G.711).
pub(super) fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mantissa = i32::from(a & 0x0F) << 4;
    let magnitude = match (a >> 4) & 0x07 {
        0 => mantissa + 8,
        seg => (mantissa + 0x108) << (seg - 1),
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}
