//! Audio and video input on the real engine: the bundled gemma-3-270m with the generated
//! test projector (`tests/vision/make.sh`: a Gemma 3 vision encoder and an Ultravox-shaped
//! audio encoder, random weights), test media made here with ffmpeg (a sine tone in several
//! containers, a clip of ffmpeg's test picture with a tone). Every part of the path runs:
//! upload, decode, resample, projector, KV, reuse across turns and a restart, refusals.
//! Ignored by default: run by `scripts/test.sh`.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const AUDIO_ENCODED: &str = "localgem_audio_clips_encoded_total{model=\"gemma-3-270m\"}";
const IMAGES_ENCODED: &str = "localgem_images_encoded_total{model=\"gemma-3-270m\"}";

/// Run ffmpeg to make `out` in `dir` (quietly; the test fails if it cannot).
fn ffmpeg(dir: &Path, args: &[&str], out: &str) -> Vec<u8> {
    let path = dir.join(out);
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-nostdin"])
        .args(args)
        .arg(&path)
        .status()
        .expect("ffmpeg runs (scripts/install-deps.sh installs it)");
    assert!(st.success(), "ffmpeg could not make {out}");
    std::fs::read(path).unwrap()
}

/// A 3-second 440 Hz tone through ffmpeg's encoder for `codec` into `out`.
fn tone(dir: &Path, out: &str, codec: &[&str]) -> Vec<u8> {
    let mut args = vec!["-f", "lavfi", "-i", "sine=frequency=440:duration=3"];
    args.extend(codec);
    ffmpeg(dir, &args, out)
}

/// A clip of `secs` seconds of ffmpeg's test picture with a tone.
fn clip(dir: &Path, out: &str, secs: u32, size: &str, codecs: &[&str]) -> Vec<u8> {
    let video = format!("testsrc=duration={secs}:size={size}:rate=5");
    let audio = format!("sine=frequency=330:duration={secs}");
    let mut args = vec!["-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio];
    args.extend(codecs);
    args.push("-shortest");
    ffmpeg(dir, &args, out)
}

fn inline(kind: &str, bytes: &[u8], mime: &str) -> Value {
    json!({"type": kind, "mime_type": mime,
           "data": base64::engine::general_purpose::STANDARD.encode(bytes)})
}

fn ask(part: Value, model: &str) -> Value {
    json!({"model": model, "generation_config": {"temperature": 0, "max_output_tokens": 16},
           "input": [{"type": "text", "text": "Tell me about this recording"}, part]})
}

fn modality(v: &Value, name: &str) -> Option<u64> {
    v["usage"]["input_tokens_by_modality"]
        .as_array()?
        .iter()
        .find(|m| m["modality"] == name)
        .and_then(|m| m["tokens"].as_u64())
}

fn refused(s: &Server, part: Value, model: &str, needles: &[&str]) {
    let (st, v) = s.post(ask(part, model));
    assert_eq!(st, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    for n in needles {
        assert!(msg.contains(n), "{msg:?} does not say {n:?}");
    }
}

#[test]
#[ignore = "needs the bundled models, the generated test projector and ffmpeg; run by scripts/test.sh"]
fn audio_in_every_container_is_encoded_once_and_follows_the_conversation() {
    let media = tempfile::tempdir().unwrap();
    let m = media.path();
    let dir = tempfile::tempdir().unwrap();
    let proj = format!("gemma-3-270m={}", test_mmproj("gemma-3-270m").display());
    let args = [
        "--model",
        "gemma-3-270m",
        "--model",
        "smollm2-135m",
        "--mmproj",
        &proj,
        "--max-audio-seconds",
        "600",
    ];
    let mut s = start(dir.path(), &args);

    // The seed's request with an uploaded WAV (48 kHz stereo: downmixed, resampled to 16 kHz).
    let wav = tone(m, "tone.wav", &["-ar", "48000", "-ac", "2"]);
    let uri = upload(&s.url, "test-key", wav.clone(), "audio/wav");
    let part = json!({"type": "audio", "uri": uri, "mime_type": "audio/wav"});
    let (st, first) = s.post(ask(part.clone(), "gemini-3-flash-preview"));
    assert_eq!(st, 200, "{first}");
    assert!(!text(&first).trim().is_empty(), "{first}");
    // One started 30-second window is 50 positions of the test encoder.
    assert_eq!(modality(&first, "audio"), Some(50), "{first}");
    assert_eq!(metric(&s.url, AUDIO_ENCODED), 1.0);

    // The next turn reuses the conversation's KV, audio included: nothing is encoded again.
    let next = json!({"model": "gemini-3-flash-preview", "previous_interaction_id": first["id"],
        "input": "How long is it?", "generation_config": {"temperature": 0, "max_output_tokens": 16}});
    let (st, second) = s.post(next);
    assert_eq!(st, 200, "{second}");
    assert!(cached(&second) >= input_tokens(&first), "{second}");
    assert_eq!(modality(&second, "audio"), Some(50), "{second}");
    assert_eq!(metric(&s.url, AUDIO_ENCODED), 1.0);

    // The same conversation sent whole by another key is prefilled from scratch, audio
    // included, and answers exactly the same.
    let replay = json!({"model": "gemini-3-flash-preview", "store": false,
        "generation_config": {"temperature": 0, "max_output_tokens": 16},
        "input": [
            {"type": "user_input", "content": [{"type": "text", "text": "Tell me about this recording"},
                inline("audio", &wav, "audio/wav")]},
            {"type": "model_output", "content": [{"type": "text", "text": text(&first)}]},
            {"type": "user_input", "content": [{"type": "text", "text": "How long is it?"}]}]});
    let (st, fresh) = s.post_key("another-key", replay);
    assert_eq!(st, 200, "{fresh}");
    assert_eq!(cached(&fresh), 0, "{fresh}");
    assert_eq!(
        text(&fresh),
        text(&second),
        "reused audio KV changed the answer"
    );
    assert_eq!(metric(&s.url, AUDIO_ENCODED), 2.0);

    // Every container the API lists, inline: each decodes to the same tone.
    let raw = ffmpeg(
        m,
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=3",
            "-f",
            "s16le",
            "-ar",
            "24000",
        ],
        "tone.pcm",
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (tone(m, "tone.mp3", &[]), "audio/mp3"),
        (tone(m, "tone.flac", &[]), "audio/flac"),
        (tone(m, "tone.ogg", &["-c:a", "libvorbis"]), "audio/ogg"),
        (tone(m, "tone.opus", &["-c:a", "libopus"]), "audio/opus"),
        (tone(m, "tone.m4a", &["-c:a", "aac"]), "audio/m4a"),
        (tone(m, "tone.aac", &["-c:a", "aac"]), "audio/aac"),
        (tone(m, "tone.aiff", &[]), "audio/aiff"),
        (tone(m, "tone.webm", &["-c:a", "libopus"]), "audio/webm"),
        (raw, "audio/l16;rate=24000"),
    ];
    for (bytes, mime) in cases {
        let (st, v) = s.post(ask(inline("audio", &bytes, mime), "gemma-3-270m"));
        assert_eq!(st, 200, "{mime}: {v}");
        assert_eq!(modality(&v, "audio"), Some(50), "{mime}: {v}");
    }
    // Audio that decodes to the same samples is encoded once: lossless FLAC and AIFF of one
    // tone are the same audio, and so are its two Opus streams (Ogg, WebM).
    assert_eq!(metric(&s.url, AUDIO_ENCODED), 8.0);

    // A text-only model refuses audio, naming itself and the modality.
    refused(
        &s,
        part.clone(),
        "smollm2-135m",
        &["model smollm2-135m cannot take audio input"],
    );
    // Audio that does not decode, or is longer than the limit: 400 naming the part.
    let two_hours = ffmpeg(
        m,
        &[
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=8000:cl=mono",
            "-t",
            "7200",
            "-b:a",
            "8k",
        ],
        "long.mp3",
    );
    let mut cut = wav.clone();
    cut.truncate(wav.len() / 3);
    for (bytes, mime, needle) in [
        (cut, "audio/wav", "truncated"),
        (
            b"no sound in here at all".to_vec(),
            "audio/wav",
            "not a WAV",
        ),
        (two_hours, "audio/mpeg", "limit of 600 s"),
        (vec![1, 2, 3], "audio/l16", "3 bytes"),
    ] {
        let bad = upload(&s.url, "test-key", bytes, mime);
        refused(
            &s,
            json!({"type": "audio", "uri": bad, "mime_type": mime}),
            "gemma-3-270m",
            &["input step 0, content 1", needle],
        );
    }
    assert_eq!(metric(&s.url, AUDIO_ENCODED), 8.0);

    // The conversation's KV, audio included, outlives the process.
    s.stop();
    let b = start(dir.path(), &args);
    let third = json!({"model": "gemini-3-flash-preview", "previous_interaction_id": second["id"],
        "input": "Is it loud?", "generation_config": {"temperature": 0, "max_output_tokens": 8}});
    let (st, v) = b.post(third);
    assert_eq!(st, 200, "{v}");
    assert!(cached(&v) >= input_tokens(&second), "{v}");
    assert_eq!(metric(&b.url, AUDIO_ENCODED), 0.0);
}

#[test]
#[ignore = "needs the bundled models, the generated test projectors and ffmpeg; run by scripts/test.sh"]
fn video_is_frames_with_timestamps_and_its_soundtrack() {
    let media = tempfile::tempdir().unwrap();
    let m = media.path();
    let dir = tempfile::tempdir().unwrap();
    let gemma = format!("gemma-3-270m={}", test_mmproj("gemma-3-270m").display());
    let smol = format!("smollm2-135m={}", test_mmproj("smollm2-135m").display());
    let s = start(
        dir.path(),
        &[
            "--model",
            "gemma-3-270m",
            "--model",
            "smollm2-135m",
            "--mmproj",
            &gemma,
            "--mmproj",
            &smol,
            "--max-video-seconds",
            "60",
            "--max-video-frames",
            "4",
        ],
    );
    let mp4 = clip(
        m,
        "clip.mp4",
        3,
        "320x240",
        &["-c:v", "mpeg4", "-c:a", "aac"],
    );
    let uri = upload(&s.url, "test-key", mp4.clone(), "video/mp4");
    let part = json!({"type": "video", "uri": uri, "mime_type": "video/mp4"});
    let (st, first) = s.post(ask(part.clone(), "gemini-3-flash-preview"));
    assert_eq!(st, 200, "{first}");
    // Three frames (one a second; 16 positions and two markers each) and the soundtrack
    // (one 30-second window, 50 positions), all counted as video.
    assert_eq!(modality(&first, "video"), Some(3 * 18 + 50), "{first}");
    assert_eq!(modality(&first, "image"), None, "{first}");
    assert_eq!(metric(&s.url, IMAGES_ENCODED), 3.0);
    assert_eq!(metric(&s.url, AUDIO_ENCODED), 1.0);

    // A follow-up reuses the clip's KV.
    let next = json!({"model": "gemini-3-flash-preview", "previous_interaction_id": first["id"],
        "input": "What colour is it?", "generation_config": {"temperature": 0, "max_output_tokens": 8}});
    let (st, second) = s.post(next);
    assert_eq!(st, 200, "{second}");
    assert!(cached(&second) >= input_tokens(&first), "{second}");
    assert_eq!(metric(&s.url, IMAGES_ENCODED), 3.0);

    // Other containers; a longer clip is sampled at most --max-video-frames times; `resolution`
    // is taken; a clip without sound is frames alone.
    let webm = clip(
        m,
        "clip.webm",
        3,
        "160x120",
        &["-c:v", "libvpx", "-c:a", "libopus"],
    );
    let mov = clip(
        m,
        "clip.mov",
        2,
        "160x120",
        &["-c:v", "mpeg4", "-c:a", "aac"],
    );
    let long = clip(
        m,
        "long.mp4",
        20,
        "64x48",
        &["-c:v", "mpeg4", "-c:a", "aac"],
    );
    let silent = clip(m, "silent.mp4", 2, "64x48", &["-c:v", "mpeg4", "-an"]);
    for (part, tokens) in [
        (inline("video", &webm, "video/webm"), 3 * 18 + 50),
        (inline("video", &mov, "video/mov"), 2 * 18 + 50),
        (inline("video", &long, "video/mp4"), 4 * 18 + 50),
        (
            json!({"type": "video", "mime_type": "video/mp4", "resolution": "low",
                   "data": base64::engine::general_purpose::STANDARD.encode(&silent)}),
            2 * 18,
        ),
    ] {
        let (st, v) = s.post(ask(part, "gemma-3-270m"));
        assert_eq!(st, 200, "{v}");
        assert_eq!(modality(&v, "video"), Some(tokens), "{v}");
    }

    // A model whose projector sees but does not hear takes the frames alone (its image
    // markers are text of a few tokens in this vocabulary: measured on a one-frame clip),
    // and refuses audio.
    let one = clip(m, "one.mp4", 1, "64x48", &["-c:v", "mpeg4", "-an"]);
    let (st, v) = s.post(ask(inline("video", &one, "video/mp4"), "smollm2-135m"));
    assert_eq!(st, 200, "{v}");
    let frame = modality(&v, "video").unwrap();
    assert!(frame >= 16, "{v}");
    let (st, v) = s.post(ask(inline("video", &mp4, "video/mp4"), "smollm2-135m"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(modality(&v, "video"), Some(3 * frame), "{v}");
    let wav = tone(m, "tone.wav", &[]);
    refused(
        &s,
        inline("audio", &wav, "audio/wav"),
        "smollm2-135m",
        &["model smollm2-135m cannot take audio input"],
    );

    // Videos that do not decode, or are too long: 400 naming the part and the limit.
    let minute = clip(m, "minute.mp4", 61, "32x24", &["-c:v", "mpeg4", "-an"]);
    let mut cut = mp4.clone();
    cut.truncate(mp4.len() / 2);
    for (bytes, needle) in [
        (cut, "cannot be decoded"),
        (b"not a video".to_vec(), "cannot be decoded"),
        (wav, "no video stream"),
        (minute, "limit of 60 s"),
    ] {
        refused(
            &s,
            inline("video", &bytes, "video/mp4"),
            "gemma-3-270m",
            &["input step 0, content 1", needle],
        );
    }
    refused(
        &s,
        json!({"type": "video", "uri": uri, "mime_type": "video/mp4", "resolution": "8k"}),
        "gemma-3-270m",
        &["resolution"],
    );
}
