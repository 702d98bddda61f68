//! Audio and video parts through the API over the fake engine: what reaches the engine
//! (samples at the model's rate, frames with timestamps, in place among the text), usage by
//! modality, reuse across turns, and the 400s for what cannot be taken. The video checks run
//! ffmpeg, which `scripts/install-deps.sh` installs.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::App;
use localgem_api::media::MediaLimits;
use localgem_api::testing::FakeEngine;
use localgem_api::video::VideoLimits;
use localgem_api::ApiConfig;
use localgem_core::{ChatMessage, MediaData, Modality};
use serde_json::{json, Value};

/// An app whose model sees (`vision`) and hears at `audio_rate`, with these limits.
fn app(vision: bool, audio_rate: Option<u32>, media: MediaLimits) -> App {
    let fake = FakeEngine {
        vision,
        audio_rate,
        ..FakeEngine::default()
    };
    let config = ApiConfig {
        media,
        ..ApiConfig::default()
    };
    common::app_of(fake, config, 64 << 20)
}

/// A 16-bit PCM WAV of a 440 Hz tone.
fn wav(rate: u32, channels: u16, seconds: f64) -> Vec<u8> {
    let frames = (f64::from(rate) * seconds) as u32;
    let data = frames * u32::from(channels) * 2;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend(b"RIFF");
    out.extend((36 + data).to_le_bytes());
    out.extend(b"WAVEfmt ");
    out.extend(16u32.to_le_bytes());
    out.extend(1u16.to_le_bytes());
    out.extend(channels.to_le_bytes());
    out.extend(rate.to_le_bytes());
    out.extend((rate * u32::from(channels) * 2).to_le_bytes());
    out.extend((channels * 2).to_le_bytes());
    out.extend(16u16.to_le_bytes());
    out.extend(b"data");
    out.extend(data.to_le_bytes());
    for i in 0..frames {
        let t = f64::from(i) / f64::from(rate);
        let v = ((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 12_000.0) as i16;
        for _ in 0..channels {
            out.extend(v.to_le_bytes());
        }
    }
    out
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn audio_of(m: &ChatMessage) -> Vec<(Modality, u32, usize)> {
    m.media
        .iter()
        .filter_map(|a| match &a.data {
            MediaData::Audio(x) => Some((a.modality, x.sample_rate, x.samples.len())),
            MediaData::Image(_) => None,
        })
        .collect()
}

async fn ask(a: &App, parts: Value) -> common::Reply {
    a.interact("k", &json!({"model": "fake-model", "input": parts}))
        .await
}

fn message(r: &common::Reply) -> &str {
    r.body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn audio_reaches_the_model_resampled_in_place_and_is_counted_as_audio() {
    let a = app(false, Some(16_000), MediaLimits::default());
    // Uploaded 44.1 kHz stereo, and inline raw 24 kHz PCM: both 16 kHz mono at the engine.
    let up = a.upload("k", &wav(44_100, 2, 1.5), "tone").await;
    let pcm: Vec<u8> = wav(24_000, 1, 0.5)[44..].to_vec();
    let r = ask(
        &a,
        json!([
            {"type": "text", "text": "first"},
            {"type": "audio", "uri": up["uri"], "mime_type": "audio/wav"},
            {"type": "text", "text": "then"},
            {"type": "audio", "data": b64(&pcm), "mime_type": "audio/l16;rate=24000"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let msg = a.engine_requests().last().unwrap().messages[0].clone();
    assert_eq!(msg.content, "first\n\u{fffc}\nthen\n\u{fffc}");
    let clips = audio_of(&msg);
    assert_eq!(clips.len(), 2);
    assert_eq!((clips[0].0, clips[0].1), (Modality::Audio, 16_000));
    assert!((clips[0].2 as i64 - 24_000).abs() < 240, "{clips:?}");
    assert!((clips[1].2 as i64 - 8_000).abs() < 80, "{clips:?}");
    // The fake counts 16 positions a clip.
    let by = &r.body["usage"]["input_tokens_by_modality"];
    assert!(
        by.as_array()
            .unwrap()
            .contains(&json!({"modality": "audio", "tokens": 32})),
        "{by}"
    );

    // A later turn carries the clip again, decoded once: the very same samples.
    let body =
        json!({"model": "fake-model", "input": "and?", "previous_interaction_id": r.body["id"]});
    let r2 = a.interact("k", &body).await;
    assert_eq!(r2.status, StatusCode::OK, "{:?}", r2.body);
    let again = a.engine_requests().last().unwrap().messages[0].clone();
    let (MediaData::Audio(x), MediaData::Audio(y)) = (&msg.media[0].data, &again.media[0].data)
    else {
        panic!("not audio")
    };
    assert!(Arc::ptr_eq(&x.samples, &y.samples));
    // ... after the upload is gone, too.
    let id = up["name"].as_str().unwrap();
    assert_eq!(
        a.keyed("DELETE", &format!("/v1beta/{id}"), "k")
            .await
            .status,
        StatusCode::OK
    );
    let body =
        json!({"model": "fake-model", "input": "still?", "previous_interaction_id": r2.body["id"]});
    let r3 = a.interact("k", &body).await;
    assert_eq!(r3.status, StatusCode::OK, "{:?}", r3.body);
}

#[tokio::test]
async fn audio_that_cannot_be_taken_is_a_400_naming_the_part_or_the_limit() {
    let limits = MediaLimits {
        max_audio_seconds: 2.0,
        ..MediaLimits::default()
    };
    let a = app(true, Some(16_000), limits);
    let good = wav(16_000, 1, 1.0);
    let mut cut = wav(16_000, 1, 1.0);
    cut.truncate(cut.len() / 2);
    for (part, needle) in [
        (
            json!({"type": "audio", "data": b64(&cut), "mime_type": "audio/wav"}),
            "truncated",
        ),
        (
            json!({"type": "audio", "data": b64(b"just some text"), "mime_type": "audio/mp3"}),
            "not a WAV, MP3",
        ),
        (
            json!({"type": "audio", "data": "", "mime_type": "audio/wav"}),
            "cannot be decoded",
        ),
        (
            json!({"type": "audio", "data": b64(&wav(8_000, 1, 3.0)), "mime_type": "audio/wav"}),
            "limit of 2 s",
        ),
        (
            json!({"type": "audio", "data": b64(&[0, 1, 2]), "mime_type": "audio/l16"}),
            "3 bytes",
        ),
        (
            json!({"type": "audio", "data": b64(&good), "mime_type": "audio/l16", "sample_rate": 5}),
            "between",
        ),
    ] {
        let r = ask(&a, json!([{"type": "text", "text": "q"}, part])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{part}: {:?}", r.body);
        let m = message(&r);
        assert!(m.starts_with("input step 0, content 1: "), "{m}");
        assert!(m.contains(needle), "{needle}: {m}");
    }
    assert!(a.engine_requests().is_empty());

    // A model that does not hear refuses audio, naming itself and the modality.
    let deaf = app(true, None, MediaLimits::default());
    let r = ask(
        &deaf,
        json!([{"type": "audio", "data": b64(&good), "mime_type": "audio/wav"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&r), "model fake-model cannot take audio input");
    // One that does not see refuses video.
    let blind = app(false, Some(16_000), MediaLimits::default());
    let r = ask(
        &blind,
        json!([{"type": "video", "data": b64(&good), "mime_type": "video/mp4"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&r), "model fake-model cannot take video input");
}

/// A clip of ffmpeg's test picture, with a tone unless `silent`.
fn clip(seconds: u32, silent: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mp4");
    let video = format!("testsrc=duration={seconds}:size=96x64:rate=5");
    let audio = format!("sine=duration={seconds}");
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-f", "lavfi", "-i", &video]);
    if !silent {
        cmd.args(["-f", "lavfi", "-i", &audio, "-c:a", "aac"]);
    }
    let st = cmd
        .args(["-c:v", "mpeg4", "-shortest"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs (scripts/install-deps.sh installs it)");
    assert!(st.success());
    std::fs::read(out).unwrap()
}

#[tokio::test]
async fn a_video_is_frames_between_timestamps_then_its_soundtrack() {
    let limits = MediaLimits {
        max_audio_seconds: 60.0,
        video: VideoLimits {
            max_seconds: 30.0,
            max_frames: 4,
            fps: 1.0,
        },
    };
    let a = app(true, Some(16_000), limits);
    let mp4 = clip(3, false);
    let up = a.upload("k", &mp4, "clip").await;
    let r = ask(
        &a,
        json!([{"type": "video", "uri": up["uri"], "mime_type": "video/mp4", "resolution": "low"},
               {"type": "text", "text": "what happens?"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let msg = a.engine_requests().last().unwrap().messages[0].clone();
    assert_eq!(
        msg.content,
        "[video, 00:03 long, 3 frames]\n00:00 \u{fffc}\n00:01 \u{fffc}\n00:02 \u{fffc}\n\
         [soundtrack] \u{fffc}\n[end of video]\nwhat happens?"
    );
    assert!(msg.media.iter().all(|m| m.modality == Modality::Video));
    let frames: Vec<(u32, u32)> = msg
        .media
        .iter()
        .filter_map(|m| match &m.data {
            MediaData::Image(i) => Some((i.width, i.height)),
            MediaData::Audio(_) => None,
        })
        .collect();
    assert_eq!(frames, [(96, 64); 3]);
    let sound = audio_of(&msg);
    assert_eq!(sound.len(), 1);
    assert!((sound[0].2 as i64 - 48_000).abs() < 1_600, "{sound:?}");
    let by = &r.body["usage"]["input_tokens_by_modality"];
    assert!(
        by.as_array()
            .unwrap()
            .contains(&json!({"modality": "video", "tokens": 64})),
        "{by}"
    );

    // A longer clip is sampled at most max_frames times, evenly; a silent one is frames alone.
    let r = ask(
        &a,
        json!([{"type": "video", "data": b64(&clip(12, true)), "mime_type": "video/mp4"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let msg = a.engine_requests().last().unwrap().messages[0].clone();
    assert_eq!(msg.media.len(), 4);
    assert!(
        msg.content
            .contains("00:00 \u{fffc}\n00:03 \u{fffc}\n00:06 \u{fffc}\n00:09 \u{fffc}"),
        "{}",
        msg.content
    );
    assert!(!msg.content.contains("soundtrack"));

    // A WebM written to a pipe (as a live recording is) does not say how long it is: it is
    // sampled once a second up to the frame limit.
    let live = {
        let out = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-f", "lavfi", "-i"])
            .args([
                "testsrc=duration=10:size=96x64:rate=5",
                "-c:v",
                "libvpx",
                "-f",
                "webm",
                "-",
            ])
            .output()
            .expect("ffmpeg runs");
        assert!(out.status.success());
        out.stdout
    };
    let r = ask(
        &a,
        json!([{"type": "video", "data": b64(&live), "mime_type": "video/webm"}]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let msg = a.engine_requests().last().unwrap().messages[0].clone();
    assert_eq!(msg.media.len(), 4, "{}", msg.content);
    assert!(
        msg.content
            .starts_with("[video, 00:04 long, 4 frames]\n00:00 \u{fffc}\n00:01"),
        "{}",
        msg.content
    );

    // Too long, not a video, no picture, an unknown resolution: 400 naming the part.
    let wav = wav(16_000, 1, 1.0);
    for (part, needle) in [
        (
            json!({"type": "video", "data": b64(&clip(31, true)), "mime_type": "video/mp4"}),
            "limit of 30 s (--max-video-seconds)",
        ),
        (
            json!({"type": "video", "data": b64(&mp4[..mp4.len() / 3]), "mime_type": "video/mp4"}),
            "cannot be decoded",
        ),
        (
            json!({"type": "video", "data": b64(b"garbage"), "mime_type": "video/webm"}),
            "cannot be decoded",
        ),
        (
            json!({"type": "video", "data": b64(&wav), "mime_type": "video/mp4"}),
            "no video stream",
        ),
        (
            json!({"type": "video", "data": b64(&mp4), "mime_type": "video/mp4", "resolution": 5}),
            "`resolution`",
        ),
    ] {
        let r = ask(&a, json!([part])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        let m = message(&r);
        assert!(
            m.starts_with("input step 0, content 0: ") && m.contains(needle),
            "{needle}: {m}"
        );
    }
}
