//! Two replicas over one store: a run streams, resumes, cancels and deletes from the replica
//! that does not run it; a dead owner's run fails when its lease ends and its late result
//! cannot overwrite that; a restart fails only the restarting replica's runs; a conversation
//! keeps its key across turns and replicas, and outlives its uploads.
//!
//! The fake engine stands in for llama.cpp; `tests/scale/run.sh` does the same with real
//! models, PostgreSQL and HAProxy.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::{pair, App};
use http_body_util::BodyExt;
use localgem_api::service::{maintain, ReplicaConfig, OWNER_GONE};
use localgem_core::Store;
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "k";

fn replicas(delay_ms: u64) -> (App, App) {
    pair(
        ReplicaConfig {
            lease: Duration::from_millis(600),
            tick: Duration::from_millis(50),
            ..ReplicaConfig::default()
        },
        Duration::from_millis(delay_ms),
    )
}

/// A request's status and body text.
async fn raw(app: &App, method: &str, uri: &str, body: Option<Value>) -> (u16, String) {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-goog-api-key", KEY)
        .header("content-type", "application/json");
    if body.is_none() {
        b = b.header("content-length", "0");
    }
    let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
    let resp = localgem_api::router(app.state.clone())
        .oneshot(b.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn json_of(app: &App, method: &str, uri: &str, body: Option<Value>) -> Value {
    let (status, text) = raw(app, method, uri, body).await;
    assert_eq!(status, 200, "{method} {uri}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The JSON events of an SSE body.
fn events(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["event_type"] == "step.delta" && e["delta"]["type"] == "text")
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect()
}

/// Generations running in a replica's engine.
fn generating(app: &App) -> usize {
    app.fake.live.load(std::sync::atomic::Ordering::SeqCst)
}

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn background(app: &App, input: &str) -> String {
    let v = json_of(
        app,
        "POST",
        "/v1beta/interactions",
        Some(json!({"model": "fake-model", "input": input, "background": true})),
    )
    .await;
    v["id"].as_str().unwrap().to_owned()
}

async fn status(app: &App, id: &str) -> String {
    let v = json_of(app, "GET", &format!("/v1beta/interactions/{id}"), None).await;
    v["status"].as_str().unwrap().to_owned()
}

async fn until(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !ok().await {
        assert!(began.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    began.elapsed()
}

#[tokio::test]
async fn the_other_replica_streams_a_live_run_and_resumes_it_exactly() {
    let (a, b) = replicas(15);
    let _loops = [
        tokio::spawn(maintain(a.state.clone())),
        tokio::spawn(maintain(b.state.clone())),
    ];
    let input = words(60);
    let id = background(&a, &input).await;
    assert!(a.state.runs.get(&id).is_some() && b.state.runs.get(&id).is_none());
    // B follows the run through the store while A generates it.
    let uri = format!("/v1beta/interactions/{id}?stream=true");
    let (s, body) = raw(&b, "GET", &uri, None).await;
    assert_eq!(s, 200);
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let seen = events(&body);
    let done = json_of(&a, "GET", &format!("/v1beta/interactions/{id}"), None).await;
    assert_eq!(done["status"], "completed");
    let answer = done["steps"][1]["content"][0]["text"].as_str().unwrap();
    assert_eq!(text_of(&seen), answer);
    assert!(answer.contains("w0 w1"), "{answer}");
    assert_eq!(seen.first().unwrap()["event_type"], "interaction.created");
    assert_eq!(seen.last().unwrap()["event_type"], "interaction.completed");
    // Many deltas, as the owner streamed them, not one replayed block.
    let deltas = seen
        .iter()
        .filter(|e| e["event_type"] == "step.delta")
        .count();
    assert!(deltas > 10, "{deltas} deltas");

    // Resuming on either replica from any event gives exactly the rest.
    for cut in [3, seen.len() / 2, seen.len() - 2] {
        let last = seen[cut]["event_id"].as_str().unwrap();
        let before = text_of(&seen[..=cut]);
        for app in [&a, &b] {
            let (_, rest) = raw(app, "GET", &format!("{uri}&last_event_id={last}"), None).await;
            assert_eq!(format!("{before}{}", text_of(&events(&rest))), answer);
        }
    }

    // And resuming mid-run on B, while A still generates.
    let id = background(&a, &words(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, first) = raw(
        &b,
        "GET",
        &format!("/v1beta/interactions/{id}?stream=true"),
        None,
    )
    .await;
    let first = events(&first);
    let mid = first
        .iter()
        .position(|e| e["event_type"] == "step.delta")
        .unwrap()
        + 5;
    let last = first[mid]["event_id"].as_str().unwrap();
    let (_, rest) = raw(
        &b,
        "GET",
        &format!("/v1beta/interactions/{id}?stream=true&last_event_id={last}"),
        None,
    )
    .await;
    assert_eq!(
        format!("{}{}", text_of(&first[..=mid]), text_of(&events(&rest))),
        text_of(&first)
    );
}

#[tokio::test]
async fn cancel_and_delete_sent_to_the_other_replica_stop_the_owners_run() {
    let (a, b) = replicas(20);
    let _loops = [
        tokio::spawn(maintain(a.state.clone())),
        tokio::spawn(maintain(b.state.clone())),
    ];
    let id = background(&a, &words(500)).await;
    until("A generating", Duration::from_secs(2), async || {
        generating(&a) == 1
    })
    .await;
    let began = Instant::now();
    let v = json_of(
        &b,
        "POST",
        &format!("/v1beta/interactions/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(v["status"], "cancelled", "{v}");
    let took = until("A stopped", Duration::from_secs(2), async || {
        generating(&a) == 0
    })
    .await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    eprintln!("cancel through the other replica: stopped after {took:?}");
    assert_eq!(status(&a, &id).await, "cancelled");

    let id = background(&a, &words(500)).await;
    until("A generating", Duration::from_secs(2), async || {
        generating(&a) == 1
    })
    .await;
    a.fake.forgotten.lock().unwrap().clear();
    assert_eq!(
        json_of(&b, "DELETE", &format!("/v1beta/interactions/{id}"), None).await,
        json!({})
    );
    until(
        "A stopped after DELETE",
        Duration::from_secs(2),
        async || generating(&a) == 0,
    )
    .await;
    // The key's cached KV state goes on A too, not only where DELETE landed.
    until("A forgot the key", Duration::from_secs(2), async || {
        !a.fake.forgotten.lock().unwrap().is_empty()
    })
    .await;
    assert!(!b.fake.forgotten.lock().unwrap().is_empty());
    assert_eq!(
        raw(&a, "GET", &format!("/v1beta/interactions/{id}"), None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_dead_owners_run_fails_when_its_lease_ends_and_its_late_end_is_refused() {
    let (a, b) = replicas(20);
    // A never renews: it is as good as dead to the others (its generation runs on).
    let _b_loop = tokio::spawn(maintain(b.state.clone()));
    let id = background(&a, &words(150)).await;
    let uri = format!("/v1beta/interactions/{id}?stream=true");
    let follower = tokio::spawn({
        let b = b.state.clone();
        async move {
            let resp = localgem_api::router(b)
                .oneshot(
                    Request::get(uri)
                        .header("x-goog-api-key", KEY)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    });
    let waited = until("failed by B", Duration::from_secs(3), async || {
        status(&b, &id).await == "failed"
    })
    .await;
    eprintln!("dead owner's run failed after {waited:?} (lease 600 ms)");
    let r = b
        .store
        .get(&localgem_api::tenant::Tenant::from_key(KEY).0, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.error.as_deref(), Some(OWNER_GONE));
    // The stream on B ends with the failure instead of waiting forever.
    let body = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("stream on B ended")
        .unwrap();
    let evs = events(&body);
    assert_eq!(evs.last().unwrap()["event_type"], "error", "{body}");
    assert!(!text_of(&evs).is_empty(), "the events A logged came first");
    // A finishes later; its result cannot overwrite the failure.
    until("A done", Duration::from_secs(10), async || {
        a.state.runs.is_empty()
    })
    .await;
    let r = b
        .store
        .get(&localgem_api::tenant::Tenant::from_key(KEY).0, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status.as_str(), "failed");
    assert_eq!(r.error.as_deref(), Some(OWNER_GONE));
}

#[tokio::test]
async fn a_restarting_replica_fails_only_its_own_runs() {
    let (a, b) = replicas(20);
    let _a_loop = tokio::spawn(maintain(a.state.clone()));
    let id = background(&a, &words(200)).await;
    // B restarts: it fails what it ran before, nothing of A's.
    let n = b.store.fail_owned("B", "B restarted").await.unwrap();
    assert_eq!(n, 0);
    assert_eq!(status(&b, &id).await, "in_progress");
    a.store.fail_owned("A", "A restarted").await.unwrap();
    assert_eq!(status(&b, &id).await, "failed");
}

#[tokio::test]
async fn a_conversation_keeps_its_key_on_every_replica_and_outlives_its_uploads() {
    let (a, b) = replicas(0);
    let doc = a
        .upload(KEY, b"The secret ingredient is cardamom.", "recipe.txt")
        .await;
    let uri = doc["uri"].as_str().unwrap().to_owned();
    let image = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/organ.jpg"
    ))
    .unwrap();
    let img = a.upload(KEY, &image, "organ.jpg").await;
    let img_uri = img["uri"].as_str().unwrap().to_owned();
    let first = json_of(
        &a,
        "POST",
        "/v1beta/interactions",
        Some(json!({"model": "fake-model", "input": [
            {"type": "text", "text": "Read this."},
            {"type": "document", "uri": uri, "mime_type": "text/plain"},
            {"type": "image", "uri": img_uri, "mime_type": "image/jpeg"},
        ]})),
    )
    .await;
    let id1 = first["id"].as_str().unwrap().to_owned();
    // Both uploads go away.
    for f in [&doc, &img] {
        let name = f["name"].as_str().unwrap();
        assert_eq!(
            a.keyed("DELETE", &format!("/v1beta/{name}"), KEY)
                .await
                .status,
            200
        );
    }
    // Turn 2 on the other replica, turn 3 back on the first.
    let second = json_of(
        &b,
        "POST",
        "/v1beta/interactions",
        Some(json!({"model": "fake-model", "input": "And then?", "previous_interaction_id": id1})),
    )
    .await;
    let id2 = second["id"].as_str().unwrap().to_owned();
    let third = json_of(
        &a,
        "POST",
        "/v1beta/interactions",
        Some(json!({"model": "fake-model", "input": "Last.", "previous_interaction_id": id2})),
    )
    .await;
    let id3 = third["id"].as_str().unwrap();
    let key = |id: &str| id[3..14].to_owned();
    assert_eq!(key(&id2), key(&id1));
    assert_eq!(key(id3), key(&id1));
    // Both later turns saw the document's text and the image, after the uploads were gone.
    for fake in [&b.fake, &a.fake] {
        let reqs = fake.requests.lock().unwrap();
        let last = reqs.last().unwrap();
        let prompt: String = last.messages.iter().map(|m| m.content.clone()).collect();
        assert!(prompt.contains("cardamom"), "{prompt}");
        assert_eq!(
            last.messages.iter().map(|m| m.media.len()).sum::<usize>(),
            1
        );
    }
    let other = background(&a, "another conversation").await;
    assert_ne!(key(&other), key(&id1));
    // What the user sent is what GET shows: the upload's URI, not what it resolved to.
    let got = json_of(&b, "GET", &format!("/v1beta/interactions/{id1}"), None).await;
    assert_eq!(got["steps"][0]["content"][1]["uri"], uri);
    // A request cannot name kept media itself.
    let sha = a
        .store
        .get(&localgem_api::tenant::Tenant::from_key(KEY).0, &id1)
        .await
        .unwrap()
        .unwrap();
    let kept = serde_json::to_value(sha.resolved_input.unwrap()).unwrap();
    let kept_uri = kept[0]["content"][2]["uri"]
        .as_str()
        .unwrap_or_else(|| panic!("{kept}"))
        .to_owned();
    assert!(kept_uri.starts_with("media/"), "{kept_uri}");
    let (s, text) = raw(
        &a,
        "POST",
        "/v1beta/interactions",
        Some(json!({"model": "fake-model", "input": [
            {"type": "image", "uri": kept_uri, "mime_type": "image/jpeg"}]})),
    )
    .await;
    assert_eq!(s, 400, "{text}");
}

#[tokio::test]
async fn events_go_to_the_store_only_when_replicas_share_it() {
    for share in [true, false] {
        let (a, _b) = pair(
            ReplicaConfig {
                share_events: share,
                ..ReplicaConfig::default()
            },
            Duration::from_millis(15),
        );
        let id = background(&a, &words(40)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let logged = a.store.events_after(&id, None, 100).await.unwrap();
        assert_eq!(
            !logged.is_empty(),
            share,
            "share_events {share}: {logged:?}"
        );
        // Either way the run's own replica streams it live.
        let (s, body) = raw(
            &a,
            "GET",
            &format!("/v1beta/interactions/{id}?stream=true"),
            None,
        )
        .await;
        assert_eq!(s, 200);
        assert!(body.contains("interaction.completed"), "{body}");
    }
}
