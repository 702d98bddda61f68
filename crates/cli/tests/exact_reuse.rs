//! `--exact` on the real model: an answer computed with reused KV is the answer computed
//! fresh, token for token, also when the reused part ends one token before the prompt does
//! and when the rest of the prompt is taken in while another stream decodes. Without flash
//! attention llama.cpp computes a token alone on other kernels than a token in a chunk, so
//! the engine must never leave a prompt token alone (`kv::PREFILL_TAIL`, `Mixing::Apart`);
//! each of these prompts got a different answer when it did.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TOPICS: [&str; 6] = [
    "the number 1",
    "the number 3",
    "the number 6",
    "chess",
    "glass",
    "dogs",
];

fn ask(s: &Server, key: &str, body: Value) -> Value {
    let (st, v) = s.post_key(key, body);
    assert_eq!(st, 200, "{v}");
    v
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn a_repeated_prompt_gets_its_fresh_answer_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--parallel", "2"]);
    for t in TOPICS {
        let q = format!("Tell me about {t}.");
        // (from the second topic on, this one reuses the previous prompt's opening)
        let fresh = ask(&s, "k", greedy(&q, 48));
        let again = ask(&s, "k", greedy(&q, 48));
        assert!(cached(&again) > 0, "the second one reuses: {again}");
        assert_eq!(text(&again), text(&fresh), "{q}");
    }
}

/// Start a long streamed answer under `key` and return once its first text has arrived (it
/// is decoding), with the thread that reads the rest.
fn decoding_stream(url: &str, key: &str) -> std::thread::JoinHandle<String> {
    let body = json!({"model": "gemini-3-flash-preview", "stream": true,
                      "input": "Write a long story about a lighthouse keeper.",
                      "generation_config": {"temperature": 0, "max_output_tokens": 160}});
    let mut resp = client()
        .post(format!("{url}/v1beta/interactions"))
        .header("x-goog-api-key", key)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"text\"") {
        let n = resp.read(&mut chunk).unwrap();
        assert!(n > 0, "the stream ended before any text");
        seen.extend_from_slice(&chunk[..n]);
    }
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = resp.read_to_string(&mut rest);
        String::from_utf8_lossy(&seen).into_owned() + &rest
    })
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn a_turn_continued_beside_a_decoding_stream_matches_one_continued_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--parallel", "2"]);
    for (i, t) in TOPICS.iter().enumerate() {
        let q = format!("Tell me about {t}.");
        let second_turn = |key: &str, beside: bool| {
            let first = ask(&s, key, greedy(&q, 48));
            // idle: the first answer is prefilled into the conversation's state
            std::thread::sleep(Duration::from_millis(500));
            let other = beside.then(|| decoding_stream(&s.url, &format!("other{i}")));
            let next = json!({"model": "gemini-3-flash-preview",
                              "input": "Tell me more, in other words.",
                              "previous_interaction_id": first["id"],
                              "generation_config": {"temperature": 0, "max_output_tokens": 48}});
            let v = ask(&s, key, next);
            assert!(cached(&v) > 0, "the second turn reuses the first: {v}");
            if let Some(h) = other {
                let streamed = h.join().unwrap();
                assert!(streamed.contains("interaction.complete"), "{streamed}");
            }
            text(&v)
        };
        let alone = second_turn(&format!("alone{i}"), false);
        let beside = second_turn(&format!("beside{i}"), true);
        assert_eq!(beside, alone, "{q}");
    }
}
