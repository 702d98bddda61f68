//! Integration tests on the real bundled models over real HTTP: the `localgem` binary is
//! started on a free port with a fresh data dir. They need the models present in
//! `LOCALGEM_MODELS_DIR` (`scripts/test.sh` pulls them), hence `#[ignore]` for plain
//! `cargo test`; `scripts/test.sh` runs them with `--include-ignored`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn real_generation_usage_and_determinism() {
    let dir = tempfile::tempdir().unwrap();
    // The defaults: a repeated request reuses the first one's KV and still answers the same.
    let s = start_default(dir.path(), &[]);
    let (st, a) = s.post(greedy("How does AI work?", 40));
    assert_eq!(st, 200, "{a}");
    let t = text(&a);
    assert!(
        t.split_whitespace().count() >= 5,
        "too short an answer: {t:?}"
    );
    let u = &a["usage"];
    assert!(u["total_input_tokens"].as_u64().unwrap() > 10, "{u}");
    assert!(u["total_output_tokens"].as_u64().unwrap() > 5, "{u}");
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["total_input_tokens"].as_u64().unwrap() + u["total_output_tokens"].as_u64().unwrap()
    );
    // temperature 0 is deterministic
    let (_, b) = s.post(greedy("How does AI work?", 40));
    assert_eq!(text(&b), t);
    // the same seed gives the same sample at temperature 1
    let seeded = json!({"model": "gemini-3-flash-preview", "input": "Write a short poem about rivers.",
                        "generation_config": {"temperature": 1.0, "seed": 1234, "max_output_tokens": 30}});
    let (_, c1) = s.post(seeded.clone());
    let (_, c2) = s.post(seeded);
    assert_eq!(text(&c1), text(&c2));
    // GET returns the same text
    let (st, g) = s.get(a["id"].as_str().unwrap());
    assert_eq!(st, 200);
    let g: Value = serde_json::from_str(&g).unwrap();
    assert_eq!(text(&g), t);
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn max_output_tokens_and_stop_sequences_on_the_real_model() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let (_, a) = s.post(greedy("Explain how AI works", 5));
    assert_eq!(a["status"], "incomplete");
    assert_eq!(a["usage"]["total_output_tokens"], 5);

    let (_, full) = s.post(greedy("Explain how AI works", 60));
    let full = text(&full);
    // stop at a word from the middle of the greedy answer: the output is exactly what came before it
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() > 8, "{full:?}");
    let stop = words[6];
    let cut = full.find(stop).unwrap();
    let mut req = greedy("Explain how AI works", 60);
    req["generation_config"]["stop_sequences"] = json!([stop]);
    let (_, b) = s.post(req);
    assert_eq!(b["status"], "completed");
    assert_eq!(text(&b), full[..cut]);
    assert!(!text(&b).contains(stop));
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn streaming_text_equals_stored_text_and_chains_carry_history() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let body = json!({"model": "gemini-3-flash-preview", "input": "I have 2 dogs in my house.", "stream": true,
                      "generation_config": {"max_output_tokens": 40}});
    let resp = client()
        .post(format!("{}/v1beta/interactions?alt=sse", s.url))
        .header("x-goog-api-key", "test-key")
        .json(&body)
        .send()
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let sse = resp.text().unwrap();
    let mut streamed = String::new();
    let mut id = String::new();
    let mut usage = Value::Null;
    for block in sse.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let data = block
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        match v["event_type"].as_str().unwrap() {
            "interaction.created" => id = v["interaction"]["id"].as_str().unwrap().to_owned(),
            "step.delta" => streamed.push_str(v["delta"]["text"].as_str().unwrap()),
            "interaction.completed" => usage = v["interaction"]["usage"].clone(),
            _ => {}
        }
    }
    assert!(sse.trim_end().ends_with("data: [DONE]"));
    assert!(!streamed.is_empty());
    let (_, g) = s.get(&id);
    let g: Value = serde_json::from_str(&g).unwrap();
    assert_eq!(text(&g), streamed);

    let (_, two) = s.post(json!({"model": "gemini-3-flash-preview", "input": "How many paws are in my house?",
                                  "previous_interaction_id": id, "generation_config": {"max_output_tokens": 20}}));
    let first_turn = usage["total_input_tokens"].as_u64().unwrap()
        + usage["total_output_tokens"].as_u64().unwrap();
    let second_input = two["usage"]["total_input_tokens"].as_u64().unwrap();
    assert!(
        second_input > first_turn,
        "turn 2 prompt ({second_input}) must hold turn 1 ({first_turn})"
    );

    // another key cannot see or chain it
    let (st, _) = s.post_key(
        "someone-else",
        json!({"model": "gemini-3-flash-preview", "input": "hi", "previous_interaction_id": id}),
    );
    assert_eq!(st, 404);
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn prompt_longer_than_the_context_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--ctx-size", "1024", "--parallel", "2"]);
    let (st, v) = s.post(greedy(&"word ".repeat(3000), 5));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("tokens"),
        "{v}"
    );
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn concurrent_requests_batch_and_match_sequential_greedy_output() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--parallel", "4"]);
    let prompts: Vec<String> = (0..6)
        .map(|i| format!("Tell me about the number {i}."))
        .collect();
    let sequential: Vec<String> = prompts
        .iter()
        .map(|p| text(&s.post(greedy(p, 24)).1))
        .collect();
    let url = s.url.clone();
    let handles: Vec<_> = prompts
        .iter()
        .cloned()
        .map(|p| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = client()
                    .post(format!("{url}/v1/interactions"))
                    .header("x-goog-api-key", "k")
                    .json(&greedy(&p, 24))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().unwrap()
            })
        })
        .collect();
    for (h, seq) in handles.into_iter().zip(&sequential) {
        let v = h.join().unwrap();
        assert!(
            matches!(v["status"].as_str(), Some("completed" | "incomplete")),
            "{v}"
        );
        assert!(!seq.is_empty());
        assert_eq!(
            &text(&v),
            seq,
            "batched greedy output differs from the sequential one"
        );
    }
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn gemma_without_a_template_serves_through_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        &["--model", "gemma-3-270m", "--default-model", "smollm2-135m"],
    );
    let (st, v) = s.post(
        json!({"model": "gemma-3-270m", "input": "What is the capital of France?",
                                "system_instruction": "Answer briefly.",
                                "generation_config": {"temperature": 0, "max_output_tokens": 30}}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(v["usage"]["total_output_tokens"].as_u64().unwrap() > 0);
    let (st, v) = s.post(json!({"model": "no-such-model", "input": "x"}));
    assert_eq!(st, 404);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("gemma-3-270m") && msg.contains("smollm2-135m"),
        "{msg}"
    );
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn kill_dash_nine_loses_no_completed_interaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &[]);
    let mut done = Vec::new();
    for i in 0..3 {
        let (st, v) = s.post(greedy(&format!("Tell me fact number {i} about cats."), 16));
        assert_eq!(st, 200);
        let id = v["id"].as_str().unwrap().to_owned();
        let (_, before) = s.get(&id);
        done.push((id, before));
    }
    // start a long streaming generation and kill the server while it runs
    let url = s.url.clone();
    let streamer = std::thread::spawn(move || {
        let body = json!({"model": "gemini-3-flash-preview", "input": "Write a very long story about a dragon.",
                          "stream": true, "generation_config": {"max_output_tokens": 1000}});
        let mut resp = client()
            .post(format!("{url}/v1beta/interactions"))
            .header("x-goog-api-key", "test-key")
            .json(&body)
            .send()
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // read until the connection dies
        while let Ok(n) = std::io::Read::read(&mut resp, &mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let partial = streamer.join().unwrap();
    let in_flight = partial
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .and_then(|v| v["interaction"]["id"].as_str().map(str::to_owned))
        .expect("the stream never started");
    assert!(
        !partial.contains("[DONE]"),
        "the generation finished before the kill; make it longer"
    );

    let s2 = start(dir.path(), &[]);
    for (id, before) in &done {
        let (st, after) = s2.get(id);
        assert_eq!(st, 200);
        assert_eq!(&after, before, "interaction {id} changed across the crash");
    }
    let (st, v) = s2.get(&in_flight);
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["status"], "failed");
    drop(s2);
    let out = Command::new("sqlite3")
        .arg(dir.path().join("localgem.sqlite"))
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("sqlite3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn client_disconnect_cancels_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    // one live sequence: the cancelled one must give it back
    let s = start(dir.path(), &["--parallel", "1"]);
    let body = json!({"model": "gemini-3-flash-preview", "input": "Write a very long story about a dragon.",
                      "stream": true, "generation_config": {"max_output_tokens": 1000}});
    let mut resp = client()
        .post(format!("{}/v1beta/interactions", s.url))
        .header("x-goog-api-key", "test-key")
        .json(&body)
        .send()
        .unwrap();
    let mut chunk = [0u8; 2048];
    let n = std::io::Read::read(&mut resp, &mut chunk).unwrap();
    let first = String::from_utf8_lossy(&chunk[..n]).into_owned();
    let id = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .and_then(|v| v["interaction"]["id"].as_str().map(str::to_owned))
        .unwrap();
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = s.get(&id);
        let v: Value = serde_json::from_str(&v).unwrap();
        if v["status"] == "cancelled" {
            assert!(v["usage"]["total_output_tokens"].as_u64().unwrap() < 1000);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after the client left",
            v["status"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // the sequence is freed: nothing runs, and the next request gets the only slot
    let running = "localgem_running_sequences{model=\"smollm2-135m\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&s.url, running) != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the cancelled sequence still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, v) = s.post(greedy("Say hello.", 8));
    assert_eq!(st, 200, "{v}");
    assert!(
        v["usage"]["total_output_tokens"].as_u64().unwrap() > 0,
        "{v}"
    );
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn kv_cache_follows_the_conversation_and_matches_a_fresh_prefill() {
    let turn1 = "I have 2 dogs in my house. Tell me something about dogs.";
    let turn2 = "How many paws are in my house?";
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let (_, one) = s.post(greedy(turn1, 40));
    assert_eq!(one["usage"]["total_cached_tokens"], 0);
    let mut req = greedy(turn2, 40);
    req["previous_interaction_id"] = one["id"].clone();
    // the answer is prefilled into the conversation's KV in the background: give it a moment
    std::thread::sleep(Duration::from_millis(300));
    let (_, two) = s.post(req);
    let cached = two["usage"]["total_cached_tokens"].as_u64().unwrap();
    let turn1_input = one["usage"]["total_input_tokens"].as_u64().unwrap();
    assert!(
        cached > turn1_input,
        "turn 2 reused {cached} tokens; turn 1's prompt ({turn1_input}) and answer should be cached"
    );
    assert!(cached < two["usage"]["total_input_tokens"].as_u64().unwrap());

    // A history whose first turn was rewritten must not reuse past the change.
    let rewritten = json!({"model": "gemini-3-flash-preview", "store": false,
        "input": [
            {"type": "user_input", "content": [{"type": "text", "text": "I have 3 cats in my house. Tell me something about dogs."}]},
            {"type": "model_output", "content": [{"type": "text", "text": text(&one)}]},
            {"type": "user_input", "content": [{"type": "text", "text": turn2}]}],
        "generation_config": {"temperature": 0, "max_output_tokens": 40}});
    let (_, re) = s.post(rewritten.clone());
    assert!(re["usage"]["total_cached_tokens"].as_u64().unwrap() < turn1_input);

    // A fresh server (nothing cached) gives the same tokens for the same histories.
    let dir2 = tempfile::tempdir().unwrap();
    let fresh = start(dir2.path(), &[]);
    let stateless = json!({"model": "gemini-3-flash-preview", "store": false,
        "input": [
            {"type": "user_input", "content": [{"type": "text", "text": turn1}]},
            {"type": "model_output", "content": [{"type": "text", "text": text(&one)}]},
            {"type": "user_input", "content": [{"type": "text", "text": turn2}]}],
        "generation_config": {"temperature": 0, "max_output_tokens": 40}});
    let (_, f) = fresh.post(stateless);
    assert_eq!(f["usage"]["total_cached_tokens"], 0);
    assert_eq!(text(&f), text(&two), "reused KV changed the output");
    let (_, f2) = fresh.post(rewritten);

    // the engine's counters saw the hit and the work
    let metrics = client()
        .get(format!("{}/metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
    };
    assert!(value("localgem_kv_cache_hits_total{model=\"smollm2-135m\"}") >= 1.0);
    assert!(value("localgem_kv_tokens_reused_total{model=\"smollm2-135m\"}") >= cached as f64);
    assert!(value("localgem_prefill_tokens_total{model=\"smollm2-135m\"}") > 0.0);
    assert!(value("localgem_decode_tokens_total{model=\"smollm2-135m\"}") >= 80.0);
    assert!(metrics.contains("localgem_time_to_first_token_seconds_bucket"));
    assert_eq!(
        text(&f2),
        text(&re),
        "a partly reused state changed the output"
    );
}

/// Turn 1 and 2 on one server; SIGKILL; a new server on the same data dir continues from the
/// states on disk. Every answer equals the one a server with nothing cached gives.
/// `spills_per_turn`: states written per turn (the prompt, then prompt and answer).
fn spilled_states_survive_a_kill(args: &[&str], model: &str, spills_per_turn: f64) {
    let system = long_system();
    let (q1, q2, q3) = (
        "Which shelf holds books about ships?",
        "And how many books are on shelf 7?",
        "Thank you. Which topic is on shelf 12?",
    );
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), args);
    let first = json!({"model": model, "input": q1, "system_instruction": system,
                       "generation_config": {"temperature": 0, "max_output_tokens": 24}});
    let (st, one) = a.post(first.clone());
    assert_eq!(st, 200, "{one}");
    assert!(input_tokens(&one) > 600, "{}", one["usage"]);
    // (each turn's states are on disk before the next turn: a turn that arrives while the
    // previous answer is still being prefilled takes over that work and the slot)
    let spills = format!("localgem_kv_spills_total{{model=\"{model}\"}}");
    wait_for_metric(&a.url, &spills, spills_per_turn);
    let (_, two) = a.post(chained(q2, &one, model, &system));
    assert!(cached(&two) > input_tokens(&one), "{}", two["usage"]);
    wait_for_metric(&a.url, &spills, 2.0 * spills_per_turn);
    drop(a); // SIGKILL

    let b = start(dir.path(), args);
    // Turn 3 first: turn 2's prompt comes back from disk.
    let (_, three) = b.post(chained(q3, &two, model, &system));
    assert!(cached(&three) >= input_tokens(&two), "{}", three["usage"]);
    let restores = format!("localgem_kv_restores_total{{model=\"{model}\"}}");
    assert_eq!(metric(&b.url, &restores), 1.0);
    // Turn 2 again (a retry): everything but its last two tokens is cached.
    let (_, two_again) = b.post(chained(q2, &one, model, &system));
    assert_eq!(
        cached(&two_again),
        input_tokens(&two) - 2,
        "{}",
        two_again["usage"]
    );
    assert_eq!(text(&two_again), text(&two));
    // A history whose first question was rewritten restores nothing of it.
    let (_, rewritten) = b.post(history(
        &[("Which shelf holds books about birds?", text(&one))],
        q2,
        model,
        &system,
    ));
    assert!(
        cached(&rewritten) < input_tokens(&one),
        "{}",
        rewritten["usage"]
    );
    drop(b);

    // Nothing cached anywhere: the same histories, prefilled from scratch.
    let dir2 = tempfile::tempdir().unwrap();
    let fresh = start(dir2.path(), &[args, &["--kv-disk-budget-mb", "0"]].concat());
    let (_, f2) = fresh.post(history(&[(q1, text(&one))], q2, model, &system));
    assert_eq!(cached(&f2), 0);
    assert_eq!(text(&f2), text(&two), "restored KV changed turn 2");
    let (_, f3) = fresh.post(history(
        &[(q1, text(&one)), (q2, text(&two))],
        q3,
        model,
        &system,
    ));
    assert_eq!(text(&f3), text(&three), "restored KV changed turn 3");
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn spilled_kv_states_survive_a_kill_and_restore_exactly_smollm2() {
    spilled_states_survive_a_kill(&[], "smollm2-135m", 2.0);
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn spilled_kv_states_survive_a_kill_and_restore_exactly_gemma_sliding_window() {
    spilled_states_survive_a_kill(
        &["--model", "gemma-3-270m", "--default-model", "gemma-3-270m"],
        "gemma-3-270m",
        2.0,
    );
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn an_evicted_conversation_is_restored_from_disk_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // One live sequence and two slots: two other conversations evict the first one.
    let s = start(dir.path(), &["--parallel", "1", "--kv-slots", "2"]);
    let model = "smollm2-135m";
    let system = "You answer in one short sentence.";
    let q1 = "My bicycle is green and my car is blue. What colour is the sea?";
    let q2 = "What colour is my bicycle?";
    let first = json!({"model": model, "input": q1, "system_instruction": system,
                       "generation_config": {"temperature": 0, "max_output_tokens": 24}});
    let (_, one) = s.post(first);
    // its prompt, then prompt and answer, are on disk
    let spills = format!("localgem_kv_spills_total{{model=\"{model}\"}}");
    wait_for_metric(&s.url, &spills, 2.0);
    // (own system instructions, so they share no reusable prefix with it or each other)
    for (sys, other) in [
        (
            "Trees.",
            "Name three kinds of trees that grow in cold places.",
        ),
        (
            "Poems.",
            "Write a short line about the moon over the mountains.",
        ),
    ] {
        let (st, _) = s.post(
            json!({"model": model, "input": other, "system_instruction": sys,
            "generation_config": {"temperature": 0, "max_output_tokens": 8}}),
        );
        assert_eq!(st, 200);
    }
    let evictions = format!("localgem_kv_cache_evictions_total{{model=\"{model}\"}}");
    assert!(metric(&s.url, &evictions) >= 1.0);
    let (_, two) = s.post(chained(q2, &one, model, system));
    // turn 1's prompt and (prefilled in the background) its answer come back from disk
    assert!(
        cached(&two) > input_tokens(&one),
        "{} vs turn 1 {}",
        two["usage"],
        one["usage"]
    );
    let restores = format!("localgem_kv_restores_total{{model=\"{model}\"}}");
    assert!(metric(&s.url, &restores) >= 1.0);

    let dir2 = tempfile::tempdir().unwrap();
    let fresh = start(dir2.path(), &["--kv-disk-budget-mb", "0"]);
    let (_, f) = fresh.post(history(&[(q1, text(&one))], q2, model, system));
    assert_eq!(cached(&f), 0);
    assert_eq!(
        text(&f),
        text(&two),
        "the restored state changed the answer"
    );
    // With no disk budget the evicted conversation is prefilled again, and nothing is spilled.
    assert_eq!(
        metric(
            &fresh.url,
            &format!("localgem_kv_spills_total{{model=\"{model}\"}}")
        ),
        0.0
    );
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn a_full_queue_answers_429_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--parallel", "1", "--max-queue", "1"]);
    let url = s.url.clone();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = client()
                    .post(format!("{url}/v1beta/interactions"))
                    .header("x-goog-api-key", "k")
                    .json(&json!({"model": "gemini-3-flash-preview",
                        "input": format!("Count from {i} to {} slowly, one number a line.", i + 200),
                        "generation_config": {"temperature": 0, "max_output_tokens": 120}}))
                    .send()
                    .unwrap();
                let status = r.status().as_u16();
                let retry = r.headers().get("retry-after").is_some();
                (status, retry, r.json::<Value>().unwrap())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let rejected: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(ok >= 1, "{results:?}");
    assert!(
        !rejected.is_empty(),
        "no request was turned away: {results:?}"
    );
    assert_eq!(ok + rejected.len(), 8, "{results:?}");
    for (_, retry, body) in rejected {
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
        assert!(retry, "429 without Retry-After");
    }
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn a_second_replica_on_the_same_data_dir_restores_the_first_ones_states() {
    let dir = tempfile::tempdir().unwrap();
    let model = "smollm2-135m";
    let system = long_system();
    let a = start(dir.path(), &[]);
    let first = json!({"model": model, "input": "Which shelf holds books about birds?",
                       "system_instruction": system,
                       "generation_config": {"temperature": 0, "max_output_tokens": 24}});
    let (_, one) = a.post(first);
    let spills = format!("localgem_kv_spills_total{{model=\"{model}\"}}");
    wait_for_metric(&a.url, &spills, 2.0);
    // B starts while A keeps running, and sees A's interactions and KV states.
    let b = start(dir.path(), &[]);
    let q2 = "How many books are on shelf 4?";
    let (st, on_b) = b.post(chained(q2, &one, model, &system));
    assert_eq!(st, 200, "{on_b}");
    assert!(cached(&on_b) > input_tokens(&one), "{}", on_b["usage"]);
    let restores = format!("localgem_kv_restores_total{{model=\"{model}\"}}");
    assert_eq!(metric(&b.url, &restores), 1.0);
    // and answers exactly as A, which continues from memory
    let (_, on_a) = a.post(chained(q2, &one, model, &system));
    assert_eq!(metric(&a.url, &restores), 0.0);
    assert_eq!(text(&on_b), text(&on_a));
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn a_graceful_stop_puts_the_last_answer_on_disk_too() {
    let dir = tempfile::tempdir().unwrap();
    let model = "smollm2-135m";
    let system = long_system();
    let mut a = start(dir.path(), &[]);
    let first = json!({"model": model, "input": "Describe shelf 3 and shelf 9 in detail.",
                       "system_instruction": system,
                       "generation_config": {"temperature": 0, "max_output_tokens": 120}});
    let (_, one) = a.post(first);
    // SIGTERM right away: the answer's background prefill has not started yet (it waits for
    // the engine to be idle for a moment), so the drain on shutdown must do it.
    a.stop();

    let b = start(dir.path(), &[]);
    let (_, two) = b.post(chained("And shelf 10?", &one, model, &system));
    let answer = one["usage"]["total_output_tokens"].as_u64().unwrap();
    assert!(
        cached(&two) >= input_tokens(&one) + answer / 2,
        "{} after {}",
        two["usage"],
        one["usage"]
    );
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn conversations_sent_back_to_back_all_survive_a_graceful_restart() {
    // Four conversations keep the engine busy, so the writer (which runs only on an idle
    // core) falls behind: their latest states must wait for it rather than be skipped, and
    // a graceful stop must write them all. After the restart each one's next turn restores
    // its latest state rather than an older one or none.
    let dir = tempfile::tempdir().unwrap();
    let model = "smollm2-135m";
    let system = long_system();
    let mut a = start_default(dir.path(), &[]);
    let shelves = [3, 17, 31, 44];
    // Each conversation its own library: with a shared system prompt, a conversation whose
    // prefix another one's slot already holds would rightly prefill its last turns rather
    // than read its whole state from disk.
    let systems: Vec<String> = shelves
        .iter()
        .map(|n| format!("Library number {n}.\n{system}"))
        .collect();
    let last: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = shelves
            .iter()
            .zip(&systems)
            .map(|(shelf, system)| {
                let a = &a;
                s.spawn(move || {
                    let first = json!({"model": model, "system_instruction": system,
                        "input": format!("What is on shelf {shelf}?"),
                        "generation_config": {"temperature": 0, "max_output_tokens": 24}});
                    let (st, mut prev) = a.post(first);
                    assert_eq!(st, 200, "{prev}");
                    for turn in 2..=3 {
                        let q = format!("And on shelf {}?", shelf + turn);
                        let (st, next) = a.post(chained(&q, &prev, model, system));
                        assert_eq!(st, 200, "{next}");
                        prev = next;
                    }
                    prev
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    a.stop();

    let b = start_default(dir.path(), &[]);
    for ((shelf, prev), system) in shelves.iter().zip(&last).zip(&systems) {
        let (st, next) = b.post(chained(
            &format!("And shelf {}?", shelf + 9),
            prev,
            model,
            system,
        ));
        assert_eq!(st, 200, "{next}");
        // The third turn's prompt at least (its answer too, unless a background prefill of
        // it was still to come).
        assert!(
            cached(&next) >= input_tokens(prev),
            "shelf {shelf}: {} after {}",
            next["usage"],
            prev["usage"]
        );
    }
    let restores = format!("localgem_kv_restores_total{{model=\"{model}\"}}");
    assert_eq!(metric(&b.url, &restores), 4.0);
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn conversations_moved_next_to_the_live_slots_answer_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // two live sequences, four slots: conversations end up in scattered slots
    let s = start(dir.path(), &["--parallel", "2", "--kv-slots", "4"]);
    let model = "smollm2-135m";
    let topics = ["rivers", "stars", "bread", "ships"];
    let mut firsts = Vec::new();
    for t in topics {
        let system = format!("You are an expert on {t}. Answer in one sentence.");
        let q = format!("Tell me one fact about {t}.");
        let (_, one) = s.post(
            json!({"model": model, "input": q, "system_instruction": system,
            "generation_config": {"temperature": 0, "max_output_tokens": 20}}),
        );
        firsts.push((system, q, one));
    }
    // Let the background work of the first turns finish (their answers prefilled into their
    // slots, their states written to disk). Continuing while it still runs can change the
    // answer of a moved conversation: with cold page caches (the first run after a build)
    // 300 ms was not enough and the continuation differed from a fresh computation, at this
    // commit and before it. That race is its own engine bug; this test is about relocation.
    std::thread::sleep(Duration::from_millis(3000));
    // continue the first and the last conversation at once
    let url = s.url.clone();
    let picks = [0usize, 3];
    let handles: Vec<_> = picks
        .iter()
        .map(|&i| {
            let (system, _, one) = firsts[i].clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let body = chained("And one more fact, please.", &one, "smollm2-135m", &system);
                post_json(&url, "test-key", &body).1
            })
        })
        .collect();
    let seconds: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (k, &i) in picks.iter().enumerate() {
        assert!(
            cached(&seconds[k]) >= input_tokens(&firsts[i].2),
            "{}",
            seconds[k]["usage"]
        );
    }
    let relocations = format!("localgem_kv_relocations_total{{model=\"{model}\"}}");
    assert!(metric(&s.url, &relocations) >= 1.0, "no state was moved");

    let dir2 = tempfile::tempdir().unwrap();
    let fresh = start(dir2.path(), &["--kv-disk-budget-mb", "0"]);
    for (k, &i) in picks.iter().enumerate() {
        let (system, q, one) = &firsts[i];
        let (_, f) = fresh.post(history(
            &[(q.as_str(), text(one))],
            "And one more fact, please.",
            model,
            system,
        ));
        assert_eq!(
            text(&f),
            text(&seconds[k]),
            "a moved state changed the answer"
        );
    }
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                          "required": ["location"]}})
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn tool_choice_any_always_gives_a_valid_call_and_the_result_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        &["--model", "smollm2-135m", "--model", "gemma-3-270m"],
    );
    for model in ["smollm2-135m", "gemma-3-270m"] {
        for seed in 0..3 {
            let (st, v) = s.post(
                json!({"model": model, "input": "What's the weather like in Hanoi today?",
                "tools": [weather_tool()],
                "generation_config": {"tool_choice": "any", "seed": seed, "temperature": 1.0}}),
            );
            assert_eq!(st, 200, "{v}");
            assert_eq!(v["status"], "requires_action", "{model} seed {seed}: {v}");
            let steps = v["steps"].as_array().unwrap();
            assert_eq!(steps.len(), 1, "{v}");
            let call = &steps[0];
            assert_eq!(call["type"], "function_call");
            assert_eq!(call["name"], "get_weather");
            let args = call["arguments"].as_object().unwrap();
            assert!(args["location"].is_string(), "{v}");
            assert!(args.keys().all(|k| k == "location" || k == "unit"), "{v}");
            if let Some(u) = args.get("unit") {
                assert!(u == "celsius" || u == "fahrenheit", "{v}");
            }
            if seed == 0 {
                // Stateful turn 2: the result goes back; the model answers in text.
                let (st, v2) = s.post(json!({"model": model, "previous_interaction_id": v["id"],
                    "tools": [weather_tool()],
                    "generation_config": {"temperature": 0, "max_output_tokens": 40},
                    "input": [{"type": "function_result", "call_id": call["id"], "name": "get_weather",
                               "result": {"temperature_c": 31, "sky": "sunny"}}]}));
                assert_eq!(st, 200, "{v2}");
                let last = v2["steps"].as_array().unwrap().last().unwrap().clone();
                assert_eq!(last["type"], "model_output", "{v2}");
                assert!(!text(&v2).trim().is_empty(), "{v2}");
            }
        }
    }
}

/// The small checks of the schema below, by hand.
fn recipe_ok(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.keys().all(|k| k == "recipe_name" || k == "ingredients")
            && o.get("recipe_name").is_some_and(Value::is_string)
            && o.get("ingredients")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().all(Value::is_string))
    })
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn json_schema_output_always_parses_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--model", "gemma-3-270m"]);
    let schema = json!({"type": "object", "properties": {
        "recipe_name": {"type": "string"},
        "ingredients": {"type": "array", "items": {"type": "string"}}},
        "required": ["recipe_name", "ingredients"]});
    for seed in 0..10 {
        let (st, v) = s.post(json!({"model": "gemma-3-270m",
            "input": "List a few popular cookie recipes, and include the amounts of ingredients.",
            "response_format": {"type": "text", "mime_type": "application/json", "schema": schema},
            "generation_config": {"seed": seed, "temperature": 1.0, "max_output_tokens": 200}}));
        assert_eq!(st, 200, "{v}");
        let t = text(&v);
        let parsed: Value =
            serde_json::from_str(&t).unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {t}"));
        assert!(recipe_ok(&parsed), "seed {seed}: {parsed}");
    }
    // An unsupported schema feature is a 400 that names it.
    let (st, v) = s.post(json!({"model": "gemma-3-270m", "input": "x",
        "response_format": {"type": "object", "if": {"type": "object"}}}));
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("if"),
        "{v}"
    );
}

/// A ChatML template that reasons in `<think>` tags, as Qwen-style templates do: the
/// generation prompt opens the thought unless `enable_thinking` is false.
const THINKING_TEMPLATE: &str = "{%- for m in messages -%}<|im_start|>{{ m.role }}\n{% if m.reasoning_content %}<think>\n{{ m.reasoning_content }}\n</think>\n\n{% endif %}{{ m.content }}<|im_end|>\n{% endfor -%}\
{%- if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking %}<think>\n{% else %}<think>\n\n</think>\n\n{% endif %}{% endif -%}";

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn the_thinking_budget_ends_the_thought_on_a_real_model() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("thinking.jinja");
    std::fs::write(&tpl, THINKING_TEMPLATE).unwrap();
    let s = start(dir.path(), &["--chat-template-file", tpl.to_str().unwrap()]);
    // Asked to reason at length, SmolLM2 does not close the thought itself: the budget does.
    let (st, v) = s.post(json!({"model": "gemini-3-flash-preview",
        "input": "Explain step by step, thinking carefully, why the sky is blue.",
        "generation_config": {"thinking_level": "low", "thinking_summaries": "auto", "temperature": 0,
                              "max_output_tokens": 30}}));
    assert_eq!(st, 200, "{v}");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["type"], "thought", "{v}");
    assert_eq!(steps[1]["type"], "model_output", "{v}");
    let thought = steps[0]["summary"][0]["text"].as_str().unwrap();
    assert!(
        !thought.contains("<think>") && !thought.contains("</think>"),
        "{thought}"
    );
    assert!(!text(&v).contains("</think>"), "{v}");
    let u = &v["usage"];
    let thought_tokens = u["total_thought_tokens"].as_u64().unwrap();
    // the budget (256 for `low`) plus the forced closing tag
    assert!((256..=262).contains(&thought_tokens), "{u}");
    assert!(u["total_output_tokens"].as_u64().unwrap() <= 30, "{u}");
    assert!(steps[0]["signature"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    // `minimal` switches thinking off through the template: no thought at all.
    let (_, v) = s.post(json!({"model": "gemini-3-flash-preview", "input": "How many paws do 2 dogs have?",
        "generation_config": {"thinking_level": "minimal", "temperature": 0, "max_output_tokens": 20}}));
    assert_eq!(v["steps"][0]["type"], "model_output", "{v}");
    assert_eq!(v["usage"]["total_thought_tokens"], 0, "{v}");

    // The thought comes back through its signature in stateless history and reaches the
    // template as `reasoning_content`: the prompt grows by the thought's tokens.
    let sig = steps[0]["signature"].as_str().unwrap();
    let history = |signature: &str| {
        json!({"model": "gemini-3-flash-preview", "store": false, "input": [
        {"type": "user_input", "content": [{"type": "text", "text": "How many paws do 2 dogs have?"}]},
        {"type": "thought", "signature": signature},
        {"type": "model_output", "content": [{"type": "text", "text": "Eight."}]},
        {"type": "user_input", "content": [{"type": "text", "text": "And 3 cats?"}]}],
        "generation_config": {"thinking_level": "minimal", "max_output_tokens": 1}})
    };
    let (_, with) = s.post(history(sig));
    let (_, without) = s.post(history("skip_thought_signature_validator"));
    let n = |v: &Value| v["usage"]["total_input_tokens"].as_u64().unwrap();
    assert!(
        n(&with) >= n(&without) + 200,
        "{} vs {}",
        n(&with),
        n(&without)
    );
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn api_keys_guard_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "# team keys\nkey-one\nkey-two\n").unwrap();
    let s = start(dir.path(), &["--api-keys-file", keys.to_str().unwrap()]);
    let body = greedy("Hi", 4);
    let (st, v) = post_json(&s.url, "", &body);
    assert_eq!(st, 401, "{v}");
    let (st, v) = post_json(&s.url, "key-three", &body);
    assert_eq!(st, 403, "{v}");
    let (st, v) = post_json(&s.url, "key-two", &body);
    assert_eq!(st, 200, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    // key-one is another tenant: key-two's interaction does not exist for it.
    let r = client()
        .get(format!("{}/v1beta/interactions/{id}", s.url))
        .header("x-goog-api-key", "key-one")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

/// Read one SSE stream to its end (or until the connection drops): the interaction id from
/// `interaction.created`, whether text arrived, and the final status if it completed.
fn read_stream(
    url: &str,
    body: &Value,
    started: &std::sync::mpsc::Sender<(usize, String)>,
    k: usize,
) -> Option<String> {
    let resp = client()
        .post(format!("{url}/v1beta/interactions"))
        .header("x-goog-api-key", "crash-test")
        .json(body)
        .send()
        .ok()?;
    let mut status = None;
    for line in BufReader::new(resp).lines() {
        let Ok(line) = line else { break };
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(ev) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        match ev["event_type"].as_str() {
            Some("interaction.created") => {
                let _ = started.send((k, ev["interaction"]["id"].as_str()?.to_owned()));
            }
            Some("interaction.completed") => {
                status = ev["interaction"]["status"].as_str().map(str::to_owned);
            }
            _ => {}
        }
    }
    status
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn sigkill_with_16_streams_keeps_every_finished_answer_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &["--parallel", "4"]);
    // A file, so that blobs are checked too.
    upload(
        &s.url,
        "crash-test",
        b"kept across the crash".to_vec(),
        "text/plain",
    );

    // 8 short streams first (FIFO admission: they finish first), then 8 long ones.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for k in 0..16 {
        let (max, prompt) = if k < 8 {
            (8, format!("Say hello number {k}."))
        } else {
            (
                2000,
                format!("Write a very long story number {k} about ships."),
            )
        };
        let body = json!({"model": "gemini-3-flash-preview", "input": prompt, "stream": true,
                          "generation_config": {"temperature": 0.7, "seed": k, "max_output_tokens": max}});
        let (url, tx) = (s.url.clone(), tx.clone());
        handles.push(std::thread::spawn(move || read_stream(&url, &body, &tx, k)));
        // Each stream is admitted before the next is sent.
        let (got, id) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("stream did not start");
        assert_eq!(got, k);
        ids.push(id);
    }
    let short: Vec<Option<String>> = handles.drain(..8).map(|h| h.join().unwrap()).collect();
    assert!(
        short.iter().all(|st| st.is_some()),
        "the short streams finished: {short:?}"
    );
    let get = |url: &str, id: &str| -> (u16, String) {
        let r = client()
            .get(format!("{url}/v1beta/interactions/{id}"))
            .header("x-goog-api-key", "crash-test")
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    // What the server has answered, byte for byte, just before the kill.
    let finished: Vec<(String, String)> = ids
        .iter()
        .filter_map(|id| {
            let (st, body) = get(&s.url, id);
            assert_eq!(st, 200);
            let v: Value = serde_json::from_str(&body).unwrap();
            (v["status"] != "in_progress").then(|| (id.clone(), body))
        })
        .collect();
    assert!(finished.len() >= 8, "{} finished", finished.len());
    assert!(
        finished.len() < 16,
        "some streams must still run at the kill"
    );
    s.child.kill().unwrap(); // SIGKILL
    let _ = s.child.wait();
    // A long stream that happened to end between the snapshot and the kill ends normally.
    let late: Vec<bool> = handles
        .into_iter()
        .map(|h| h.join().unwrap().is_some())
        .collect();
    drop(s);

    let s = start(dir.path(), &["--parallel", "4"]);
    for (id, before) in &finished {
        let (st, after) = get(&s.url, id);
        assert_eq!(st, 200);
        assert_eq!(&after, before, "{id} changed across the crash");
    }
    let mut failed = 0;
    for id in &ids {
        if finished.iter().any(|(f, _)| f == id) {
            continue;
        }
        let (st, body) = get(&s.url, id);
        assert_eq!(st, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["status"] == "failed" {
            failed += 1;
        } else {
            assert!(late.iter().any(|l| *l), "{body}");
            assert_ne!(v["status"], "in_progress", "{body}");
        }
    }
    assert!(failed > 0, "no stream was in flight at the kill");
    // The database is sound, and the files dir holds exactly the finished upload.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let check = rt.block_on(async {
        let db = localgem_store::SqliteStore::open(&dir.path().join("localgem.sqlite"))
            .await
            .unwrap();
        db.integrity_check().await.unwrap()
    });
    assert_eq!(check, "ok");
    let files: Vec<String> = std::fs::read_dir(dir.path().join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "one blob and tmp/: {files:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("files/tmp"))
            .unwrap()
            .count(),
        0
    );
}

/// State files in the KV spill dirs of `data` that belong to API key `key` (a state file's
/// header names its scope, the key's SHA-256).
fn kv_files(data: &Path, key: &str) -> usize {
    use sha2::Digest;
    let scope = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    std::fs::read_dir(data.join("kv"))
        .map(|dirs| {
            dirs.flatten()
                .filter_map(|d| std::fs::read_dir(d.path()).ok())
                .flat_map(|f| f.flatten())
                .filter(|f| f.file_type().is_ok_and(|t| t.is_file()))
                .filter(|f| {
                    std::fs::read(f.path()).is_ok_and(|b| {
                        b.windows(scope.len())
                            .take(4096)
                            .any(|w| w == scope.as_bytes())
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn deleting_an_interaction_removes_its_cached_kv_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let (st, v) = post_json(&s.url, "owner", &greedy(&long_system(), 4));
    assert_eq!(st, 200, "{v}");
    // Another key's state, which must stay.
    let (st, _) = post_json(
        &s.url,
        "bystander",
        &greedy("Tell me about lighthouses.", 4),
    );
    assert_eq!(st, 200);
    wait_for_metric(&s.url, "localgem_kv_spills_total", 2.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while kv_files(dir.path(), "owner") < 1 || kv_files(dir.path(), "bystander") < 1 {
        assert!(Instant::now() < deadline, "states never reached the disk");
        std::thread::sleep(Duration::from_millis(50));
    }
    let resident = metric(&s.url, "localgem_kv_resident_sequences");
    let r = client()
        .delete(format!(
            "{}/v1beta/interactions/{}",
            s.url,
            v["id"].as_str().unwrap()
        ))
        .header("x-goog-api-key", "owner")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The owner's states go (memory and disk); the bystander's stay. A request makes the
    // engine step, which applies the deletion.
    let (st, _) = post_json(&s.url, "bystander", &greedy("And about ships?", 2));
    assert_eq!(st, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while kv_files(dir.path(), "owner") > 0 {
        assert!(
            Instant::now() < deadline,
            "the owner's KV state is still on disk"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        kv_files(dir.path(), "bystander") >= 1,
        "the bystander's state went too"
    );
    assert!(metric(&s.url, "localgem_kv_resident_sequences") <= resident);
    // The owner's next identical prompt reuses nothing.
    let (_, again) = post_json(&s.url, "owner", &greedy(&long_system(), 4));
    assert_eq!(
        again["usage"]["total_cached_tokens"], 0,
        "{}",
        again["usage"]
    );
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn a_flood_past_the_queue_gets_429s_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--parallel", "2", "--max-queue", "4"]);
    let pid = s.child.id();
    // Warm up, so the baseline holds the model and the context.
    let (st, _) = s.post(greedy("Hello", 8));
    assert_eq!(st, 200);
    let before = rss_kb(pid);
    let codes = std::sync::Mutex::new(std::collections::HashMap::<u16, u32>::new());
    std::thread::scope(|scope| {
        for k in 0..48 {
            let (url, codes) = (&s.url, &codes);
            scope.spawn(move || {
                for i in 0..3 {
                    let body = greedy(
                        &format!("Client {k}, request {i}: a sentence about rain."),
                        16,
                    );
                    let r = client()
                        .post(format!("{url}/v1beta/interactions"))
                        .header("x-goog-api-key", format!("flood-{k}"))
                        .json(&body)
                        .send()
                        .unwrap();
                    let code = r.status().as_u16();
                    if code == 429 {
                        assert!(r.headers().contains_key("retry-after"));
                    }
                    *codes.lock().unwrap().entry(code).or_default() += 1;
                }
            });
        }
    });
    let after = rss_kb(pid);
    let codes = codes.into_inner().unwrap();
    eprintln!("flood: {codes:?}; RSS {before} kB before, {after} kB after");
    assert_eq!(codes.values().sum::<u32>(), 144);
    assert!(codes.keys().all(|c| *c == 200 || *c == 429), "{codes:?}");
    assert!(codes.get(&429).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(codes.get(&200).copied().unwrap_or(0) >= 6, "{codes:?}");
    assert!(
        after < before + 100 * 1024,
        "RSS grew from {before} kB to {after} kB under the flood"
    );
    // Still serving afterwards.
    let (st, _) = s.post(greedy("Still there?", 4));
    assert_eq!(st, 200);
}

fn organ_jpg() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/organ.jpg"
    ))
    .unwrap()
}

const ENCODED: &str = "localgem_images_encoded_total{model=\"gemma-3-270m\"}";

fn ask_about(image: Value, model: &str) -> Value {
    json!({"model": model, "generation_config": {"temperature": 0, "max_output_tokens": 24},
           "input": [{"type": "text", "text": "Tell me about this instrument"}, image]})
}

#[test]
#[ignore = "needs the bundled models and the generated test projector; run by scripts/test.sh"]
fn an_image_goes_through_the_projector_once_and_its_kv_follows_the_conversation() {
    let mmproj = test_mmproj("gemma-3-270m");
    let dir = tempfile::tempdir().unwrap();
    let proj = format!("gemma-3-270m={}", mmproj.display());
    let mut s = start(
        dir.path(),
        &[
            "--model",
            "gemma-3-270m",
            "--model",
            "smollm2-135m",
            "--mmproj",
            &proj,
        ],
    );
    // Upload, then the seed's request: text plus the image by uri.
    let uri = upload(&s.url, "test-key", organ_jpg(), "image/jpeg");
    let image = json!({"type": "image", "uri": uri, "mime_type": "image/jpeg"});
    let (st, plain) = s.post(
        json!({"model": "gemma-3-270m", "input": "Tell me about this instrument",
        "generation_config": {"temperature": 0, "max_output_tokens": 24}}),
    );
    assert_eq!(st, 200, "{plain}");
    let (st, first) = s.post(ask_about(image.clone(), "gemini-3-flash-preview"));
    assert_eq!(st, 200, "{first}");
    // 24 tokens is the cap: the answer ends there or before.
    assert!(
        first["status"] == "completed" || first["status"] == "incomplete",
        "{first}"
    );
    assert!(!text(&first).trim().is_empty(), "{first}");
    // The prompt holds the image: 16 embedding positions between its two marker tokens.
    assert!(
        input_tokens(&first) >= input_tokens(&plain) + 18,
        "image positions are not in the prompt: {} vs {}",
        input_tokens(&first),
        input_tokens(&plain)
    );
    assert_eq!(metric(&s.url, ENCODED), 1.0);
    let by = &first["usage"]["input_tokens_by_modality"];
    let image_tokens = by
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["modality"] == "image")
        .and_then(|m| m["tokens"].as_u64());
    assert_eq!(
        image_tokens,
        Some(input_tokens(&first) - input_tokens(&plain) - 1),
        "{by}"
    );

    // A follow-up reuses the conversation's KV, image included: nothing is encoded again.
    let next = json!({"model": "gemini-3-flash-preview", "previous_interaction_id": first["id"],
        "input": "What is it made of?", "generation_config": {"temperature": 0, "max_output_tokens": 24}});
    let (st, second) = s.post(next);
    assert_eq!(st, 200, "{second}");
    assert!(cached(&second) >= input_tokens(&first), "{second}");
    assert_eq!(metric(&s.url, ENCODED), 1.0);

    // The same conversation sent whole by another key (no cached state to find) is
    // prefilled from scratch, image included, and answers exactly the same.
    let other = "another-key";
    let uri2 = upload(&s.url, other, organ_jpg(), "image/jpeg");
    let replay = json!({"model": "gemini-3-flash-preview", "store": false,
        "generation_config": {"temperature": 0, "max_output_tokens": 24},
        "input": [
            {"type": "user_input", "content": [{"type": "text", "text": "Tell me about this instrument"},
                {"type": "image", "uri": uri2, "mime_type": "image/jpeg"}]},
            {"type": "model_output", "content": [{"type": "text", "text": text(&first)}]},
            {"type": "user_input", "content": [{"type": "text", "text": "What is it made of?"}]}]});
    let (st, fresh) = s.post_key(other, replay);
    assert_eq!(st, 200, "{fresh}");
    assert_eq!(cached(&fresh), 0, "{fresh}");
    assert_eq!(metric(&s.url, ENCODED), 2.0);
    assert_eq!(
        text(&fresh),
        text(&second),
        "reused image KV changed the answer"
    );
    assert_eq!(input_tokens(&fresh), input_tokens(&second));

    // Inline base64 data works like an upload.
    use base64::Engine as _;
    let inline = json!({"type": "image", "mime_type": "image/jpeg",
        "data": base64::engine::general_purpose::STANDARD.encode(organ_jpg())});
    let (st, v) = s.post_key("third-key", ask_about(inline, "gemma-3-270m"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(text(&v), text(&first), "inline and uploaded images differ");

    // A text-only model refuses the image, naming itself and the modality.
    let (st, v) = s.post(ask_about(image, "smollm2-135m"));
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        v["error"]["message"], "model smollm2-135m cannot take image input",
        "{v}"
    );

    // Images that do not decode: 400 naming the part, never a 5xx.
    let mut truncated = organ_jpg();
    truncated.truncate(truncated.len() / 3);
    for (bytes, mime, needle) in [
        (truncated, "image/jpeg", "cannot be decoded"),
        (
            b"not an image at all".to_vec(),
            "image/jpeg",
            "not a JPEG, PNG, WebP or GIF",
        ),
        (
            b"BM\x1e\0\0\0\0\0\0\0\x1a\0\0\0".to_vec(),
            "image/bmp",
            "BMP format are not supported",
        ),
    ] {
        let bad = upload(&s.url, "test-key", bytes, mime);
        let (st, v) = s.post(ask_about(
            json!({"type": "image", "uri": bad, "mime_type": mime}),
            "gemma-3-270m",
        ));
        assert_eq!(st, 400, "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle) && msg.contains("input step 0, content 1"),
            "{msg}"
        );
    }
    assert_eq!(metric(&s.url, ENCODED), 3.0);

    // The conversation's KV, image included, outlives the process: after a restart the
    // next turn restores it from disk and encodes nothing.
    s.stop();
    let args = [
        "--model",
        "gemma-3-270m",
        "--model",
        "smollm2-135m",
        "--mmproj",
        &proj,
    ];
    let b = start(dir.path(), &args);
    let third = json!({"model": "gemini-3-flash-preview", "previous_interaction_id": second["id"],
        "input": "Who plays it?", "generation_config": {"temperature": 0, "max_output_tokens": 8}});
    let (st, v) = b.post(third);
    assert_eq!(st, 200, "{v}");
    assert!(cached(&v) >= input_tokens(&second), "{v}");
    assert_eq!(metric(&b.url, ENCODED), 0.0);
}

/// A PNG of one colour with a bar whose place depends on `k`.
fn png(k: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 32, |x, _| {
        if x / 6 == u32::from(k % 8) {
            image::Rgb([250, 250, 250])
        } else {
            image::Rgb([k.wrapping_mul(37), 90, 200 - k])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[test]
#[ignore = "needs the bundled models and the generated test projector; run by scripts/test.sh"]
fn image_and_text_requests_run_together_each_image_encoded_once() {
    use base64::Engine as _;
    // SmolLM2 (llama architecture) with a projector: the second shape of text model the
    // projector path runs with.
    let mmproj = test_mmproj("smollm2-135m");
    let dir = tempfile::tempdir().unwrap();
    let proj = format!("smollm2-135m={}", mmproj.display());
    let s = start(
        dir.path(),
        &[
            "--model",
            "smollm2-135m",
            "--mmproj",
            &proj,
            "--parallel",
            "4",
        ],
    );
    // Six requests with different images and three without, each under its own key so that
    // nothing is reused: first one at a time, then all at once (four run, the rest queue and
    // are admitted next to running ones).
    let bodies: Vec<Value> = (0..9u8)
        .map(|k| {
            let mut input = vec![json!({"type": "text", "text": format!("Describe picture {k}.")})];
            if k < 6 {
                input.push(json!({"type": "image", "mime_type": "image/png",
                    "data": base64::engine::general_purpose::STANDARD.encode(png(k))}));
            }
            json!({"model": "smollm2-135m", "input": input,
                   "generation_config": {"temperature": 0, "max_output_tokens": 24}})
        })
        .collect();
    let encoded = "localgem_images_encoded_total{model=\"smollm2-135m\"}";
    let sequential: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(k, b)| {
            let (st, v) = s.post_key(&format!("seq-{k}"), b.clone());
            assert_eq!(st, 200, "{v}");
            v
        })
        .collect();
    assert_eq!(metric(&s.url, encoded), 6.0);
    let handles: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(k, b)| {
            let url = s.url.clone();
            std::thread::spawn(move || post_json(&url, &format!("par-{k}"), &b))
        })
        .collect();
    for (k, (h, seq)) in handles.into_iter().zip(&sequential).enumerate() {
        let (st, v) = h.join().unwrap();
        assert_eq!(st, 200, "request {k}: {v}");
        assert!(
            matches!(v["status"].as_str(), Some("completed" | "incomplete")),
            "request {k}: {v}"
        );
        assert!(!text(&v).trim().is_empty(), "request {k}: {v}");
        // The same prompt, image positions included, whatever ran beside it.
        assert_eq!(
            v["usage"]["input_tokens_by_modality"],
            seq["usage"]["input_tokens_by_modality"]
        );
        assert_eq!(cached(&v), 0, "request {k}: {v}");
    }
    assert_eq!(metric(&s.url, encoded), 12.0);
}
