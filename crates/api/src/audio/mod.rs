//! Audio decoding: turns an uploaded audio file (WAV, MP3, FLAC, Ogg Vorbis, AAC/M4A, ALAC,
//! AIFF, WebM/Matroska Vorbis) or raw PCM / G.711 bytes into mono `f32` samples at a target
//! sample rate, refusing audio longer than a limit before decoding all of it.
//!
//! Decoding is CPU-bound and synchronous: call it from a blocking task.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::well_known as codec;
use symphonia::core::codecs::audio::{AudioCodecId, AudioCodecParameters, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, Track, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

mod raw;

use raw::decode_raw;
pub use raw::raw_params;

/// Raw PCM parameters a part may carry (`sample_rate`, `channels` fields, or `;rate=`/`;channels=` MIME parameters).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawParams {
    /// Samples per second per channel.
    pub sample_rate: Option<u32>,
    /// Number of interleaved channels.
    pub channels: Option<u32>,
}

/// Decoded audio: mono samples in `[-1, 1]` at `sample_rate`.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Mono samples in `[-1, 1]`, at `sample_rate`.
    pub samples: Vec<f32>,
    /// The sample rate of `samples` (the requested target rate).
    pub sample_rate: u32,
    /// Duration of the source in seconds.
    pub seconds: f64,
}

/// Why audio could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioError {
    /// A container or codec this decoder does not handle (the caller may try another decoder); the message names it.
    Unsupported(String),
    /// Bytes that do not decode: garbage, truncated, empty; message says what.
    Corrupt(String),
    /// Longer than the limit: `seconds` is the duration when known (else at least `limit`).
    TooLong {
        /// The duration of the audio, or a lower bound when it is not declared.
        seconds: f64,
        /// The limit in seconds.
        limit: f64,
    },
}

impl std::fmt::Display for AudioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsupported(what) => write!(f, "the audio cannot be decoded: {what}"),
            Self::Corrupt(what) => write!(f, "the audio cannot be decoded: {what}"),
            Self::TooLong { seconds, limit } => write!(
                f,
                "the audio lasts at least {seconds:.1} s, past the limit of {limit:.0} s; send \
                 a shorter clip"
            ),
        }
    }
}

impl std::error::Error for AudioError {}

const NOT_AUDIO: &str = "the data is not a WAV, MP3, FLAC, OGG, AAC/M4A, AIFF or WebM audio file";
/// Packets that fail to decode are skipped, up to this many.
const MAX_BAD_PACKETS: usize = 8;
/// Words in symphonia's `Unsupported` messages that mean a missing feature, not a damaged file.
const FEATURE_WORDS: &[&str] = &[
    "unsupported",
    "not supported",
    "no support",
    "only ",
    "too complex",
    "not implemented",
];
const RATES: std::ops::RangeInclusive<u32> = 1000..=384_000;
const CHANNELS: std::ops::RangeInclusive<u32> = 1..=16;

fn corrupt(msg: impl Into<String>) -> AudioError {
    AudioError::Corrupt(msg.into())
}

/// Decode `bytes` (declared `mime`, may be None or wrong: the format is probed from the bytes,
/// the MIME type only hints) to mono f32 at `target_rate`, refusing audio longer than
/// `max_seconds` before decoding it all: from the container's frame count when it declares
/// one, otherwise by counting decoded samples and stopping as soon as the limit is passed.
///
/// `audio/l16` and `audio/pcm` are raw signed 16-bit little-endian PCM (default 16000 Hz,
/// mono); `audio/alaw`, `audio/mulaw` and `audio/basic` are G.711 (default 8000 Hz, mono).
/// `raw` (see [`raw_params`]) overrides those defaults.
pub fn decode(
    bytes: &[u8],
    mime: Option<&str>,
    raw: RawParams,
    target_rate: u32,
    max_seconds: f64,
) -> Result<Decoded, AudioError> {
    if bytes.is_empty() {
        return Err(corrupt("the audio data is empty, there is no audio in it"));
    }
    let base = mime
        .and_then(|m| m.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let raw_kind = raw::kind_of(&base);
    let (mono, rate) = match raw_kind {
        Some(kind) => decode_raw(bytes, kind, raw_params(mime, raw), max_seconds)?,
        None => catch_unwind(AssertUnwindSafe(|| {
            decode_container(bytes, &base, max_seconds)
        }))
        // symphonia has known panics on crafted input; never let one take the server down.
        .unwrap_or_else(|_| {
            Err(corrupt(
                "the audio file is malformed and the decoder failed on it",
            ))
        })?,
    };
    let seconds = mono.len() as f64 / f64::from(rate);
    let samples = resample(&mono, rate, target_rate)?;
    Ok(Decoded {
        samples,
        sample_rate: target_rate,
        seconds,
    })
}

/// Resample mono f32 from `from` Hz to `to` Hz with rubato's FFT resampler (synchronous,
/// anti-aliased); identity when `from == to`. Channels must already be downmixed to mono
/// ([`decode`] averages them). The output is clamped to `[-1, 1]`.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == 0 || to == 0 {
        return Err(corrupt(format!(
            "cannot resample from {from} Hz to {to} Hz"
        )));
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let fail = |e: &dyn std::fmt::Display| {
        corrupt(format!("resampling from {from} Hz to {to} Hz failed: {e}"))
    };
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| fail(&e))?;
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Both)
        .map_err(|e| fail(&e))?;
    let output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| fail(&e))?;
    let mut out = output.take_data();
    out.iter_mut().for_each(|s| *s = s.clamp(-1.0, 1.0));
    Ok(out)
}

/// A file extension for the probe hint.
fn extension_for(base_mime: &str) -> Option<&'static str> {
    Some(match base_mime {
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "wav",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/flac" | "audio/x-flac" => "flac",
        "audio/ogg" | "audio/opus" | "audio/vorbis" | "application/ogg" => "ogg",
        "audio/aac" | "audio/aacp" => "aac",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" => "m4a",
        "audio/aiff" | "audio/x-aiff" => "aiff",
        "audio/webm" | "video/webm" => "webm",
        "audio/x-matroska" => "mka",
        _ => return None,
    })
}

/// A short human name for a container.
fn container_name(short_name: &str, long_name: &'static str) -> &'static str {
    match short_name {
        "wave" => "WAV",
        "aiff" => "AIFF",
        "flac" => "FLAC",
        "mp1" | "mp2" | "mp3" => "MPEG audio",
        "aac" => "AAC",
        "ogg" => "Ogg",
        "isomp4" => "MP4",
        "matroska" => "WebM/Matroska",
        _ => long_name,
    }
}

/// A human name for a codec symphonia knows but cannot decode.
fn codec_name(id: AudioCodecId) -> String {
    let name = match id {
        codec::CODEC_ID_OPUS => "Opus",
        codec::CODEC_ID_SPEEX => "Speex",
        codec::CODEC_ID_MP1 => "MPEG Layer I",
        codec::CODEC_ID_MP2 => "MPEG Layer II (MP2)",
        codec::CODEC_ID_AC3 => "Dolby Digital (AC-3)",
        codec::CODEC_ID_EAC3 => "Dolby Digital Plus (E-AC-3)",
        codec::CODEC_ID_DCA => "DTS",
        codec::CODEC_ID_WMA => "Windows Media Audio",
        codec::CODEC_ID_WAVPACK => "WavPack",
        codec::CODEC_ID_MONKEYS_AUDIO => "Monkey's Audio",
        codec::CODEC_ID_TTA => "TTA",
        codec::CODEC_ID_TRUEHD => "Dolby TrueHD",
        codec::CODEC_ID_ADPCM_G722 => "G.722",
        codec::CODEC_ID_ADPCM_G726 | codec::CODEC_ID_ADPCM_G726LE => "G.726",
        _ => return format!("codec {id}"),
    };
    name.to_string()
}

/// Map a symphonia error met in `context` to an [`AudioError`]: unsupported features stay
/// `Unsupported`, structural problems ("missing data chunk") and I/O errors are `Corrupt`.
fn from_symphonia(context: &str, err: &SymphoniaError) -> AudioError {
    match err {
        SymphoniaError::Unsupported(msg) if msg.starts_with("core (probe)") => corrupt(NOT_AUDIO),
        SymphoniaError::Unsupported(msg) if FEATURE_WORDS.iter().any(|m| msg.contains(m)) => {
            AudioError::Unsupported(format!(
                "{context} uses a feature this decoder does not support ({msg})"
            ))
        }
        SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            corrupt(format!("{context} ends unexpectedly, it is truncated"))
        }
        SymphoniaError::Unsupported(msg)
        | SymphoniaError::DecodeError(msg)
        | SymphoniaError::LimitError(msg) => corrupt(format!("{context} is damaged ({msg})")),
        other => corrupt(format!("{context} is damaged ({other})")),
    }
}

fn audio_params(track: &Track) -> Option<&AudioCodecParameters> {
    track.codec_params.as_ref().and_then(|p| p.audio())
}

fn declared_seconds(track: &Track, rate: Option<u32>) -> Option<f64> {
    if let (Some(frames), Some(rate)) = (track.num_frames, rate.filter(|r| *r > 0)) {
        return Some(frames as f64 / f64::from(rate));
    }
    let time = track.time_base?.calc_duration(track.duration?)?;
    Some(time.as_secs_f64())
}

fn decode_container(
    bytes: &[u8],
    base_mime: &str,
    max_seconds: f64,
) -> Result<(Vec<f32>, u32), AudioError> {
    let mut hint = Hint::new();
    if !base_mime.is_empty() {
        hint.mime_type(base_mime);
    }
    if let Some(ext) = extension_for(base_mime) {
        hint.with_extension(ext);
    }
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| from_symphonia("the audio file", &e))?;
    let container = container_name(
        format.format_info().short_name,
        format.format_info().long_name,
    );
    let codecs = symphonia::default::get_codecs();

    // The default audio track if it can be decoded, else the first one that can.
    let decodable =
        |t: &&Track| audio_params(t).is_some_and(|p| codecs.get_audio_decoder(p.codec).is_some());
    let Some(track) = (format.default_track(TrackType::Audio).filter(decodable))
        .or_else(|| format.tracks().iter().find(decodable))
    else {
        return Err(match format.tracks().iter().find_map(audio_params) {
            Some(p) => AudioError::Unsupported(format!(
                "{} audio in {container} format is not supported",
                codec_name(p.codec)
            )),
            None => corrupt(format!("the {container} file contains no audio track")),
        });
    };
    let track_id = track.id;
    let params = audio_params(track).cloned().unwrap_or_default();
    let context = format!("the {container} audio");
    if let Some(rate) = params.sample_rate.filter(|r| !RATES.contains(r)) {
        return Err(corrupt(format!(
            "{context} declares a sample rate of {rate} Hz, outside 1000 to 384000 Hz"
        )));
    }
    let declared = declared_seconds(track, params.sample_rate);
    // MPEG audio and ADTS readers estimate the length from the file size unless a Xing/LAME
    // header gives it; only an exact count can prove a cleanly ended stream was cut short.
    let exact = track.delay.is_some()
        || !matches!(
            format.format_info().short_name,
            "mp1" | "mp2" | "mp3" | "aac"
        );
    if let Some(seconds) = declared.filter(|s| *s > max_seconds) {
        return Err(AudioError::TooLong {
            seconds,
            limit: max_seconds,
        });
    }
    let mut decoder = codecs
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| from_symphonia(&context, &e))?;

    let mut mono: Vec<f32> = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    let mut rate: Option<u32> = None;
    let mut bad_packets = 0usize;
    let mut end_error = None;
    let mut bad_packet_error = None;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) | Err(SymphoniaError::ResetRequired) => break,
            Err(e) => {
                end_error = Some(e);
                break;
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(e) => {
                bad_packets += 1;
                if bad_packets > MAX_BAD_PACKETS {
                    return Err(match from_symphonia(&context, &e) {
                        unsupported @ AudioError::Unsupported(_) => unsupported,
                        _ => corrupt(format!(
                            "{context} is damaged: more than {MAX_BAD_PACKETS} packets failed to decode ({e})"
                        )),
                    });
                }
                bad_packet_error = Some(e);
                continue;
            }
        };
        let channels = buf.num_planes();
        if buf.frames() == 0 || channels == 0 {
            continue;
        }
        let buf_rate = buf.spec().rate();
        match rate {
            None if !RATES.contains(&buf_rate) => {
                return Err(corrupt(format!(
                    "{context} has a sample rate of {buf_rate} Hz, outside 1000 to 384000 Hz"
                )))
            }
            None => rate = Some(buf_rate),
            Some(r) if r != buf_rate => {
                return Err(AudioError::Unsupported(format!(
                    "{context} changes sample rate from {r} to {buf_rate} Hz"
                )))
            }
            Some(_) => {}
        }
        buf.copy_to_vec_interleaved(&mut interleaved);
        mono.extend(interleaved.chunks_exact(channels).map(|frame| {
            let sum: f32 = frame
                .iter()
                .map(|s| if s.is_finite() { *s } else { 0.0 })
                .sum();
            sum / channels as f32
        }));
        let seconds = mono.len() as f64 / f64::from(buf_rate);
        if seconds > max_seconds {
            return Err(AudioError::TooLong {
                seconds,
                limit: max_seconds,
            });
        }
    }

    let (Some(rate), false) = (rate, mono.is_empty()) else {
        return Err(match bad_packet_error.or(end_error) {
            Some(e) => from_symphonia(&context, &e),
            None => corrupt(format!("the {container} file contains no audio")),
        });
    };
    if let Some(declared) = declared.filter(|_| exact || end_error.is_some()) {
        let decoded = mono.len() as f64 / f64::from(rate);
        if decoded + (declared * 0.01).max(0.1) < declared {
            return Err(corrupt(format!(
                "the audio is truncated: {decoded:.1} s of {declared:.1} s"
            )));
        }
    }
    Ok((mono, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit PCM WAV file; `declared_data_len` overrides the data chunk size.
    fn wav(rate: u32, channels: u16, samples: &[i16], declared_data_len: Option<u32>) -> Vec<u8> {
        let data_len = declared_data_len.unwrap_or(samples.len() as u32 * 2);
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // PCM
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
        out.extend_from_slice(&(channels * 2).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        samples
            .iter()
            .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
        out
    }

    /// `seconds` of a sine at `freq` Hz, the same on every channel, interleaved.
    fn sine(rate: u32, channels: u16, freq: f64, seconds: f64) -> Vec<i16> {
        let frames = (f64::from(rate) * seconds) as usize;
        (0..frames)
            .flat_map(|i| {
                let v = (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin();
                std::iter::repeat_n((v * 16000.0) as i16, channels as usize)
            })
            .collect()
    }

    fn decode_wav(bytes: &[u8], target: u32) -> Result<Decoded, AudioError> {
        decode(bytes, Some("audio/wav"), RawParams::default(), target, 60.0)
    }

    fn assert_len(decoded: &Decoded, seconds: f64, target: u32) {
        assert!(
            (decoded.seconds - seconds).abs() < 0.01,
            "seconds {}",
            decoded.seconds
        );
        let expected = seconds * f64::from(target);
        let got = decoded.samples.len() as f64;
        assert!(
            (got - expected).abs() <= expected * 0.01,
            "{got} samples, expected {expected}"
        );
    }

    fn corrupt_message(result: Result<Decoded, AudioError>) -> String {
        match result {
            Err(AudioError::Corrupt(msg)) => msg,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn mono_wav_at_the_target_rate_is_unchanged_in_length() {
        let decoded =
            decode_wav(&wav(16_000, 1, &sine(16_000, 1, 440.0, 1.0), None), 16_000).unwrap();
        assert_eq!(decoded.sample_rate, 16_000);
        assert_eq!(decoded.samples.len(), 16_000);
        assert_len(&decoded, 1.0, 16_000);
        assert!(decoded.samples.iter().all(|s| (-1.0..=1.0).contains(s)));
    }

    #[test]
    fn stereo_44100_resampled_to_16000_keeps_its_pitch() {
        let decoded =
            decode_wav(&wav(44_100, 2, &sine(44_100, 2, 440.0, 2.0), None), 16_000).unwrap();
        assert_len(&decoded, 2.0, 16_000);
        let crossings = decoded
            .samples
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        let freq = crossings as f64 / decoded.seconds;
        assert!((freq - 440.0).abs() < 5.0, "about {freq} Hz");
        let peak = decoded.samples.iter().fold(0f32, |a, s| a.max(s.abs()));
        assert!((peak - 16000.0 / 32768.0).abs() < 0.05, "peak {peak}");
    }

    #[test]
    fn stereo_48000_and_upsampling_have_the_right_length() {
        let decoded =
            decode_wav(&wav(48_000, 2, &sine(48_000, 2, 1000.0, 1.5), None), 16_000).unwrap();
        assert_len(&decoded, 1.5, 16_000);
        let decoded =
            decode_wav(&wav(16_000, 1, &sine(16_000, 1, 440.0, 1.0), None), 24_000).unwrap();
        assert_len(&decoded, 1.0, 24_000);
    }

    #[test]
    fn the_mime_type_is_only_a_hint() {
        let bytes = wav(16_000, 1, &sine(16_000, 1, 440.0, 0.5), None);
        let decoded = decode(
            &bytes,
            Some("audio/mpeg"),
            RawParams::default(),
            16_000,
            60.0,
        )
        .unwrap();
        assert_len(&decoded, 0.5, 16_000);
        let decoded = decode(&bytes, None, RawParams::default(), 16_000, 60.0).unwrap();
        assert_len(&decoded, 0.5, 16_000);
    }

    #[test]
    fn truncated_wav_is_corrupt() {
        let mut bytes = wav(44_100, 2, &sine(44_100, 2, 440.0, 1.0), None);
        bytes.truncate(44 + (bytes.len() - 44) / 2);
        let msg = corrupt_message(decode_wav(&bytes, 16_000));
        assert!(msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn garbage_empty_and_broken_headers_are_corrupt() {
        let mut state = 0x2545_f491_u32;
        let garbage: Vec<u8> = (0..8192)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        for mime in [
            None,
            Some("audio/ogg"),
            Some("audio/webm;codecs=opus"),
            Some("audio/mpeg"),
        ] {
            let msg = corrupt_message(decode(&garbage, mime, RawParams::default(), 16_000, 60.0));
            assert!(msg.contains("not a WAV"), "{msg}");
        }
        let msg = corrupt_message(decode(
            &[],
            Some("audio/wav"),
            RawParams::default(),
            16_000,
            60.0,
        ));
        assert!(msg.contains("no audio"), "{msg}");
        let msg = corrupt_message(decode(
            &[],
            Some("audio/l16"),
            RawParams::default(),
            16_000,
            60.0,
        ));
        assert!(msg.contains("no audio"), "{msg}");
        assert!(decode_wav(&wav(16_000, 1, &[], None), 16_000).is_err());
        assert!(decode_wav(&wav(16_000, 1, &[1, 2, 3], None)[..30], 16_000).is_err());
        assert!(decode_wav(&[0u8; 100], 16_000).is_err());
    }

    #[test]
    fn a_declared_two_hour_wav_is_refused_before_decoding() {
        // The header claims 2 hours of 8 kHz mono; only 1 s of data follows. Decoding it would
        // report a truncated file, so TooLong shows the refusal came from the header.
        let two_hours = 2 * 3600 * 8000 * 2;
        let bytes = wav(8000, 1, &sine(8000, 1, 440.0, 1.0), Some(two_hours));
        match decode_wav(&bytes, 16_000) {
            Err(AudioError::TooLong { seconds, limit }) => {
                assert!((seconds - 7200.0).abs() < 0.01, "{seconds}");
                assert_eq!(limit, 60.0);
            }
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[test]
    fn an_undeclared_length_is_counted_while_decoding() {
        // A streamed WAV (sizes u32::MAX) of 3 s, with a 2 s limit.
        let mut bytes = wav(8000, 1, &sine(8000, 1, 440.0, 3.0), Some(u32::MAX));
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        match decode(&bytes, None, RawParams::default(), 16_000, 2.0) {
            Err(AudioError::TooLong { seconds, limit }) => {
                assert!(seconds > 2.0 && seconds < 2.5 && limit == 2.0)
            }
            other => panic!("expected TooLong, got {other:?}"),
        }
        let decoded = decode(&bytes, None, RawParams::default(), 8000, 5.0).unwrap();
        assert!(
            decoded.seconds > 2.9 && decoded.seconds <= 3.0,
            "{}",
            decoded.seconds
        );
    }

    #[test]
    fn raw_l16_uses_mime_parameters() {
        let samples = sine(24_000, 1, 440.0, 1.0);
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let decoded = decode(
            &bytes,
            Some("audio/L16;rate=24000"),
            RawParams::default(),
            16_000,
            60.0,
        )
        .unwrap();
        assert_len(&decoded, 1.0, 16_000);
        // Without a rate, 16 kHz is assumed; the explicit rate wins over the MIME parameter.
        let decoded = decode(
            &bytes,
            Some("audio/pcm"),
            RawParams::default(),
            16_000,
            60.0,
        )
        .unwrap();
        assert_len(&decoded, 1.5, 16_000);
        let explicit = RawParams {
            sample_rate: Some(48_000),
            channels: Some(2),
        };
        let decoded = decode(
            &bytes,
            Some("audio/l16; rate=24000"),
            explicit,
            16_000,
            60.0,
        )
        .unwrap();
        assert_len(&decoded, 0.25, 16_000);
        match decode(&bytes, Some("audio/l16"), RawParams::default(), 16_000, 1.0) {
            Err(AudioError::TooLong { seconds, .. }) => assert!((seconds - 1.5).abs() < 1e-9),
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[test]
    fn raw_formats_reject_bad_sizes_and_parameters() {
        let msg = corrupt_message(decode(
            &[0; 101],
            Some("audio/l16"),
            RawParams::default(),
            16_000,
            60.0,
        ));
        assert!(msg.contains("101 bytes"), "{msg}");
        let stereo = RawParams {
            sample_rate: None,
            channels: Some(2),
        };
        assert!(decode(&[0; 102], Some("audio/l16"), stereo, 16_000, 60.0).is_err());
        assert!(decode(
            &[0; 3],
            Some("audio/mulaw;channels=2"),
            RawParams::default(),
            8000,
            60.0
        )
        .is_err());
        for mime in [
            "audio/l16;rate=500",
            "audio/l16;rate=fast",
            "audio/l16;rate=400000",
            "audio/l16;channels=0",
            "audio/l16;channels=17",
        ] {
            let msg = corrupt_message(decode(
                &[0; 64],
                Some(mime),
                RawParams::default(),
                16_000,
                60.0,
            ));
            assert!(msg.contains("between"), "{mime}: {msg}");
        }
    }

    #[test]
    fn g711_expands_to_known_values() {
        assert_eq!(raw::mulaw_to_linear(0xFF), 0);
        assert_eq!(raw::mulaw_to_linear(0x7F), 0);
        assert_eq!(raw::mulaw_to_linear(0x00), -32124);
        assert_eq!(raw::mulaw_to_linear(0x80), 32124);
        assert_eq!(raw::alaw_to_linear(0xD5), 8);
        assert_eq!(raw::alaw_to_linear(0x55), -8);
        assert_eq!(raw::alaw_to_linear(0xAA), 32256);
        assert_eq!(raw::alaw_to_linear(0x2A), -32256);

        let decoded = decode(
            &[0x00; 800],
            Some("audio/basic"),
            RawParams::default(),
            8000,
            60.0,
        )
        .unwrap();
        assert_eq!(decoded.samples.len(), 800);
        assert!((decoded.seconds - 0.1).abs() < 1e-9);
        assert!(decoded.samples.iter().all(|s| (s + 0.98).abs() < 0.01));
        let decoded = decode(
            &[0xFF; 800],
            Some("audio/mulaw"),
            RawParams::default(),
            8000,
            60.0,
        )
        .unwrap();
        assert!(decoded.samples.iter().all(|s| *s == 0.0));
        let decoded = decode(
            &[0xD5; 800],
            Some("audio/alaw"),
            RawParams::default(),
            16_000,
            60.0,
        )
        .unwrap();
        assert_eq!(decoded.samples.len(), 1600);
        assert!(decoded.samples[400..1200]
            .iter()
            .all(|s| *s > 0.0 && *s < 0.001));
    }

    #[test]
    fn raw_params_are_parsed_case_insensitively() {
        let p = raw_params(
            Some("audio/L16; Rate=24000; CHANNELS=\"2\""),
            RawParams::default(),
        );
        assert_eq!((p.sample_rate, p.channels), (Some(24_000), Some(2)));
        let explicit = RawParams {
            sample_rate: Some(8000),
            channels: None,
        };
        let p = raw_params(Some("audio/l16;rate=24000;channels=2"), explicit);
        assert_eq!((p.sample_rate, p.channels), (Some(8000), Some(2)));
        let p = raw_params(
            Some("audio/l16;rate=24k;foo=bar;channels"),
            RawParams::default(),
        );
        assert_eq!((p.sample_rate, p.channels), (Some(0), None));
        let p = raw_params(None, explicit);
        assert_eq!((p.sample_rate, p.channels), (Some(8000), None));
    }

    #[test]
    fn resample_is_identity_at_equal_rates_and_rejects_zero() {
        let samples = vec![0.25f32; 1000];
        assert_eq!(resample(&samples, 16_000, 16_000).unwrap(), samples);
        assert!(resample(&[], 44_100, 16_000).unwrap().is_empty());
        assert!(resample(&samples, 0, 16_000).is_err());
        let out = resample(&samples, 8000, 16_000).unwrap();
        assert_eq!(out.len(), 2000);
        assert!(out[200..1800].iter().all(|s| (s - 0.25).abs() < 0.01));
    }

    #[test]
    fn errors_read_as_sentences() {
        let too_long = AudioError::TooLong {
            seconds: 7200.0,
            limit: 600.0,
        };
        assert_eq!(
            too_long.to_string(),
            "the audio lasts at least 7200.0 s, past the limit of 600 s; send a shorter clip"
        );
        assert_eq!(
            AudioError::Corrupt("it is empty".into()).to_string(),
            "the audio cannot be decoded: it is empty"
        );
    }
}
