//! HTTP-level tests of the Interactions API over the scripted engine and the in-memory and
//! SQLite stores: wire shapes, validation, tenancy, chaining, streaming, cancellation.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use localgem_api::testing::FakeEngine;
use localgem_api::{router, ApiConfig, AppState, ModelAliases};
use localgem_core::{Role, Store};
use localgem_store::MemoryStore;
use serde_json::{json, Value};
use tower::ServiceExt;

struct App {
    state: AppState,
    engine: Arc<FakeEngine>,
}

fn app_with(engine: FakeEngine, store: Arc<dyn Store>, max_body: usize) -> App {
    let engine = Arc::new(engine);
    let state = AppState::new(
        engine.clone(),
        store,
        ApiConfig {
            aliases: ModelAliases::parse(&["gemini-*=default".into()], FakeEngine::MODEL).unwrap(),
            max_body_bytes: max_body,
            default_max_output_tokens: Some(64),
            sampling: Default::default(),
            signer: localgem_api::signature::Signer::new(b"test-key".to_vec()),
            keys: None,
            max_running_per_key: 0,
            media: Default::default(),
        },
    );
    App { state, engine }
}

fn app() -> App {
    app_with(FakeEngine::default(), Arc::new(MemoryStore::new()), 1 << 20)
}

impl App {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, String, String) {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-goog-api-key", key);
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let resp = router(self.state.clone())
            .oneshot(b.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn json(
        &self,
        method: &str,
        uri: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, ct, text) = self.call(method, uri, key, body).await;
        assert!(
            ct.starts_with("application/json"),
            "content-type {ct} for {text}"
        );
        (s, serde_json::from_str(&text).unwrap())
    }

    async fn create(&self, body: Value) -> Value {
        let (s, v) = self
            .json("POST", "/v1beta/interactions", "k", Some(body))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

fn text_of(v: &Value) -> &str {
    v["steps"].as_array().unwrap().last().unwrap()["content"][0]["text"]
        .as_str()
        .unwrap()
}

/// Parse an SSE body into (event line, data JSON or "[DONE]") pairs.
fn sse_events(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut ev = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    ev = e.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_owned();
                }
            }
            (ev, data)
        })
        .collect()
}

#[tokio::test]
async fn basic_create_matches_the_wire_shape() {
    let a = app();
    let v = a
        .create(json!({"model": "gemini-3-flash-preview", "input": "How does AI work?"}))
        .await;
    assert!(v["id"].as_str().unwrap().starts_with("v1_"));
    assert_eq!(v["object"], "interaction");
    assert_eq!(v["model"], "gemini-3-flash-preview");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["service_tier"], "standard");
    assert_eq!(text_of(&v), "Echo: How does AI work?");
    // create shows only output steps
    assert_eq!(v["steps"].as_array().unwrap().len(), 1);
    assert_eq!(v["steps"][0]["type"], "model_output");
    let u = &v["usage"];
    assert_eq!(u["total_output_tokens"], 5);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["total_input_tokens"].as_u64().unwrap() + u["total_output_tokens"].as_u64().unwrap()
    );
    let created = v["created"].as_str().unwrap();
    assert_eq!(created.len(), 20, "{created}");
    assert!(created.ends_with('Z'));
    // GET shows the input step too
    let id = v["id"].as_str().unwrap();
    let (s, g) = a
        .json(
            "GET",
            &format!("/v1/interactions/{id}?stream=false"),
            "k",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(g["steps"][0]["type"], "user_input");
    assert_eq!(g["steps"][0]["content"][0]["text"], "How does AI work?");
    assert_eq!(text_of(&g), text_of(&v));
}

#[tokio::test]
async fn system_instruction_and_generation_config_reach_the_engine() {
    let a = app();
    a.create(json!({
        "model": "gemini-3-flash-preview", "system_instruction": "You are a cat. Your name is Neko.",
        "input": "Hello there", "generation_config": {"temperature": 0.0, "seed": 42, "thinking_level": "low", "top_p": 0.5}
    }))
    .await;
    let reqs = a.engine.requests.lock().unwrap();
    let r = reqs.last().unwrap();
    assert_eq!(r.messages[0].role, Role::System);
    assert_eq!(r.messages[0].content, "You are a cat. Your name is Neko.");
    assert_eq!(r.sampling.temperature, 0.0);
    assert_eq!(r.sampling.seed, 42);
    assert_eq!(r.sampling.top_p, 0.5);
    assert_eq!(r.max_output_tokens, 64);
}

#[tokio::test]
async fn max_output_tokens_gives_incomplete_and_stop_sequences_cut() {
    let a = app();
    let v = a
        .create(json!({"model": "fake-model", "input": "one two three four", "generation_config": {"max_output_tokens": 2}}))
        .await;
    assert_eq!(v["status"], "incomplete");
    assert_eq!(text_of(&v), "Echo: one");
    let v = a
        .create(json!({"model": "fake-model", "input": "one two three", "generation_config": {"stop_sequences": ["thr"]}}))
        .await;
    assert_eq!(v["status"], "completed");
    assert_eq!(text_of(&v), "Echo: one two ");
}

#[tokio::test]
async fn previous_interaction_id_carries_the_whole_chain() {
    let a = app();
    let one = a.create(json!({"model": "gemini-3-flash-preview", "input": "I have 2 dogs in my house.", "system_instruction": "S1"})).await;
    let two = a
        .create(json!({"model": "gemini-3-flash-preview", "input": "How many paws?", "previous_interaction_id": one["id"]}))
        .await;
    assert_eq!(two["previous_interaction_id"], one["id"]);
    let three = a
        .create(json!({"model": "gemini-3-flash-preview", "input": "And cats?", "previous_interaction_id": two["id"]}))
        .await;
    let _ = three;
    let reqs = a.engine.requests.lock().unwrap();
    let last = reqs.last().unwrap();
    // system instruction is interaction-scoped: not inherited
    let roles: Vec<Role> = last.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Model, Role::User, Role::Model, Role::User]
    );
    assert_eq!(last.messages[0].content, "I have 2 dogs in my house.");
    assert_eq!(last.messages[1].content, "Echo: I have 2 dogs in my house.");
    assert_eq!(last.messages[4].content, "And cats?");
}

#[tokio::test]
async fn stateless_history_as_python_model_dump_sends_it() {
    let a = app();
    let one = a
        .create(json!({"model": "gemini-3-flash-preview", "store": false,
            "input": [{"type": "user_input", "content": [{"type": "text", "text": "I have 2 dogs in my house."}]}]}))
        .await;
    assert_eq!(one["id"], "");
    let mut history = vec![
        json!({"type": "user_input", "content": [{"type": "text", "text": "I have 2 dogs in my house."}]}),
    ];
    for step in one["steps"].as_array().unwrap() {
        let mut s = step.clone();
        // what pydantic's model_dump() adds
        s["content"][0]["annotations"] = Value::Null;
        s["error"] = Value::Null;
        history.push(s);
    }
    history.push(json!({"type": "user_input", "content": [{"type": "text", "text": "How many paws are in my house?"}]}));
    let two = a
        .create(json!({"model": "gemini-3-flash-preview", "store": false, "input": history}))
        .await;
    assert_eq!(text_of(&two), "Echo: How many paws are in my house?");
    let reqs = a.engine.requests.lock().unwrap();
    assert_eq!(reqs.last().unwrap().messages.len(), 3);
}

#[tokio::test]
async fn store_false_is_not_retrievable_or_chainable() {
    let a = app();
    let one = a
        .create(json!({"model": "fake-model", "input": "x", "store": false}))
        .await;
    assert_eq!(one["id"], "");
    let (s, v) = a.json("GET", "/v1/interactions/", "k", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = a
        .json(
            "POST",
            "/v1/interactions",
            "k",
            Some(
                json!({"model": "fake-model", "input": "y", "previous_interaction_id": "v1_nope"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn tenancy_hides_everything_from_other_keys() {
    let a = app();
    let one = a
        .create(json!({"model": "fake-model", "input": "secret"}))
        .await;
    let id = one["id"].as_str().unwrap();
    for (method, uri, body) in [
        ("GET", format!("/v1/interactions/{id}"), None),
        ("GET", format!("/v1/interactions/{id}?stream=true"), None),
        ("DELETE", format!("/v1/interactions/{id}"), None),
        ("POST", format!("/v1/interactions/{id}/cancel"), None),
        (
            "POST",
            "/v1/interactions".to_owned(),
            Some(json!({"model": "fake-model", "input": "x", "previous_interaction_id": id})),
        ),
    ] {
        let (s, _, body) = a.call(method, &uri, "other-key", body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {uri}: {body}");
    }
    // the owner still has it
    let (s, _) = a
        .json("GET", &format!("/v1/interactions/{id}"), "k", None)
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn delete_then_404() {
    let a = app();
    let one = a.create(json!({"model": "fake-model", "input": "x"})).await;
    let id = one["id"].as_str().unwrap();
    let (s, v) = a
        .json("DELETE", &format!("/v1beta/interactions/{id}"), "k", None)
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({})));
    let (s, v) = a
        .json("GET", &format!("/v1beta/interactions/{id}"), "k", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
    let (s, _) = a
        .json("DELETE", &format!("/v1beta/interactions/{id}"), "k", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn garbage_gets_clear_400s() {
    let a = app();
    let cases = [
        json!({"model": "fake-model", "input": "x", "tool_choice": "auto"}),
        json!({"model": "fake-model", "input": 5}),
        json!({"model": "fake-model"}),
        json!({"input": "x"}),
        json!({"model": 5, "input": "x"}),
        json!({"model": "fake-model", "input": "x", "generation_config": {"temperature": "hot"}}),
        json!({"model": "fake-model", "input": "x", "generation_config": {"top_k": 3}}),
        json!({"model": "fake-model", "input": "x", "generation_config": {"temperature": 9}}),
        json!({"model": "fake-model", "input": "x", "store": "yes"}),
        json!({"model": "fake-model", "input": [{"type": "model_output", "content": [{"type": "text", "text": "only the model"}]}]}),
        json!({"model": "fake-model", "input": [{"type": "text", "text": "hi"}, {"type": "image", "data": "aGk=", "mime_type": "image/png"}]}),
        json!([1, 2, 3]),
    ];
    for body in cases {
        let (s, v) = a
            .json("POST", "/v1/interactions", "k", Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (s, v) = a
        .json(
            "POST",
            "/v1/interactions",
            "k",
            Some(json!({"model": "fake-model", "input": "x", "tool_choice": "auto"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["message"], "Unknown parameter 'tool_choice'.");
    // not JSON at all
    let req = Request::builder()
        .method("POST")
        .uri("/v1/interactions")
        .header("content-type", "application/json")
        .body(Body::from("{\"model\": \"m\", \"input\": }"))
        .unwrap();
    let resp = router(a.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_model_names_the_available_ones() {
    let a = app();
    let (s, v) = a
        .json(
            "POST",
            "/v1/interactions",
            "k",
            Some(json!({"model": "gpt-4o", "input": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fake-model"),
        "{v}"
    );
    let (s, v) = a.json("GET", "/v1beta/models", "k", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["models"][0]["name"], "models/fake-model");
    let (s, v) = a
        .json("GET", "/v1beta/models/gemini-3-flash-preview", "k", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["baseModelId"], "fake-model");
}

#[tokio::test]
async fn oversized_bodies_get_413_and_legacy_revision_400() {
    let a = app_with(FakeEngine::default(), Arc::new(MemoryStore::new()), 1024);
    let (s, v) = a
        .json(
            "POST",
            "/v1/interactions",
            "k",
            Some(json!({"model": "fake-model", "input": "x".repeat(5000)})),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let req = Request::builder()
        .method("POST")
        .uri("/v1beta/interactions")
        .header("api-revision", "2026-05-07")
        .body(Body::from(
            json!({"model": "fake-model", "input": "x"}).to_string(),
        ))
        .unwrap();
    let resp = router(a.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let req = Request::builder()
        .method("POST")
        .uri("/v1beta/interactions")
        .header("api-revision", "2026-05-20")
        .body(Body::from(
            json!({"model": "fake-model", "input": "x"}).to_string(),
        ))
        .unwrap();
    assert_eq!(
        router(a.state.clone()).oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_use_the_envelope() {
    let a = app();
    let (s, v) = a.json("GET", "/v1/nothing-here", "k", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
    // axum's own rejections (a path segment that is not valid UTF-8) use it too
    let (s, v) = a.json("GET", "/v1/interactions/%FF%FE", "k", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request");
    let (s, v) = a.json("PUT", "/v1/interactions", "k", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["error"]["message"].is_string());
}

#[tokio::test]
async fn stream_follows_the_spec_event_sequence_and_matches_get() {
    let a = app();
    let (s, ct, body) = a
        .call("POST", "/v1/interactions", "k", Some(json!({"model": "gemini-3-flash-preview", "input": "Explain how AI works", "stream": true})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names[..3],
        [
            "interaction.created",
            "interaction.status_update",
            "step.start"
        ]
    );
    assert_eq!(
        names[names.len() - 3..],
        ["step.stop", "interaction.completed", "done"]
    );
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let mut text = String::new();
    let mut id = String::new();
    for (name, data) in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            v["event_type"],
            name.as_str(),
            "event line and event_type agree"
        );
        match name.as_str() {
            "interaction.created" => {
                id = v["interaction"]["id"].as_str().unwrap().to_owned();
                assert_eq!(v["interaction"]["status"], "in_progress");
            }
            "step.start" => assert_eq!(v["step"]["type"], "model_output"),
            "step.delta" => {
                assert_eq!(v["index"], 0);
                assert_eq!(v["delta"]["type"], "text");
                text.push_str(v["delta"]["text"].as_str().unwrap());
            }
            "interaction.completed" => {
                assert_eq!(v["interaction"]["status"], "completed");
                assert!(v["interaction"].get("steps").is_none());
                assert!(v["interaction"]["usage"]["total_tokens"].as_u64().unwrap() > 0);
            }
            _ => {}
        }
    }
    assert_eq!(text, "Echo: Explain how AI works");
    let (_, g) = a
        .json("GET", &format!("/v1/interactions/{id}"), "k", None)
        .await;
    assert_eq!(text_of(&g), text);
    // replay
    let (s, ct, replay) = a
        .call(
            "GET",
            &format!("/v1/interactions/{id}?stream=true"),
            "k",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/event-stream"));
    let names2: Vec<String> = sse_events(&replay).into_iter().map(|(e, _)| e).collect();
    assert_eq!(names2.first().unwrap(), "interaction.created");
    assert_eq!(names2.last().unwrap(), "done");
    // ?alt=sse also streams
    let (_, ct, _) = a
        .call(
            "POST",
            "/v1beta/interactions?alt=sse",
            "k",
            Some(json!({"model": "fake-model", "input": "x", "stream": true})),
        )
        .await;
    assert!(ct.starts_with("text/event-stream"));
}

#[tokio::test]
async fn stored_false_stream_has_empty_id() {
    let a = app();
    let (_, _, body) = a
        .call(
            "POST",
            "/v1/interactions",
            "k",
            Some(json!({"model": "fake-model", "input": "x", "stream": true, "store": false})),
        )
        .await;
    let events = sse_events(&body);
    let v: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(v["interaction"]["id"], "");
}

#[tokio::test]
async fn client_disconnect_stops_generation_and_records_it() {
    let store = Arc::new(MemoryStore::new());
    let a = app_with(
        FakeEngine::with_delay(Duration::from_millis(50)),
        store.clone(),
        1 << 20,
    );
    let req = Request::builder()
        .method("POST")
        .uri("/v1/interactions")
        .header("x-goog-api-key", "k")
        .body(Body::from(
            json!({"model": "fake-model", "input": "a b c d e f g h i j k l m n o p", "stream": true}).to_string(),
        ))
        .unwrap();
    let resp = router(a.state.clone()).oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    // read the first frames, then hang up
    let first = body.frame().await.unwrap().unwrap();
    let first = String::from_utf8(first.into_data().unwrap().to_vec()).unwrap();
    let created: Value = serde_json::from_str(sse_events(&first)[0].1.as_str()).unwrap();
    let id = created["interaction"]["id"].as_str().unwrap().to_owned();
    assert_eq!(a.engine.live.load(Ordering::SeqCst), 1);
    drop(body);
    let mut stopped = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if a.engine.live.load(Ordering::SeqCst) == 0 {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "generation still running after the client left");
    let tenant = localgem_api::tenant::Tenant::from_key("k");
    let mut rec = None;
    for _ in 0..50 {
        rec = store
            .get(&tenant.0, &id)
            .await
            .unwrap()
            .filter(|r| r.status.is_terminal());
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rec.unwrap().status, localgem_wire::Status::Cancelled);
}

#[tokio::test]
async fn cancel_stops_a_running_interaction() {
    let a = app_with(
        FakeEngine::with_delay(Duration::from_millis(100)),
        Arc::new(MemoryStore::new()),
        1 << 20,
    );
    let state = a.state.clone();
    let task = tokio::spawn(async move {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/interactions")
            .header("x-goog-api-key", "k")
            .body(Body::from(
                json!({"model": "fake-model", "input": "a b c d e f g h i j k l m n o p q r s"})
                    .to_string(),
            ))
            .unwrap();
        let resp = router(state).oneshot(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    });
    // find the running id
    let mut id = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(k) = a.state.runs.ids().first() {
            id = Some(k.clone());
            break;
        }
    }
    let id = id.expect("interaction never started");
    let (s, v) = a
        .json("POST", &format!("/v1/interactions/{id}/cancel"), "k", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    let unary = task.await.unwrap();
    assert_eq!(unary["status"], "cancelled");
    // cancelling a finished one returns it unchanged
    let (s, v2) = a
        .json("POST", &format!("/v1/interactions/{id}/cancel"), "k", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v2["status"], "cancelled");
}

#[tokio::test]
async fn sqlite_store_end_to_end() {
    let dir = tempfile_dir();
    let store = Arc::new(
        localgem_store::SqliteStore::open(&dir.join("db.sqlite"))
            .await
            .unwrap(),
    );
    let a = app_with(FakeEngine::default(), store, 1 << 20);
    let one = a
        .create(json!({"model": "gemini-3-flash-preview", "input": "I have 2 dogs"}))
        .await;
    let two = a
        .create(json!({"model": "gemini-3-flash-preview", "input": "paws?", "previous_interaction_id": one["id"]}))
        .await;
    let (_, g) = a
        .json(
            "GET",
            &format!("/v1/interactions/{}", two["id"].as_str().unwrap()),
            "k",
            None,
        )
        .await;
    assert_eq!(g["previous_interaction_id"], one["id"]);
    assert_eq!(text_of(&g), "Echo: paws?");
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("localgem-api-test-{}", rand_suffix()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn metrics_endpoint_exposes_latency_and_outcomes() {
    use std::sync::OnceLock;
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    let handle = HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .unwrap()
        })
        .clone();
    // without a renderer the endpoint is a 404 in the envelope
    let plain = app();
    let (s, v) = plain.json("GET", "/metrics", "k", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");

    let mut a = app();
    a.state = a
        .state
        .clone()
        .with_metrics(Arc::new(move || handle.render()));
    a.create(json!({"model": "fake-model", "input": "one two three"}))
        .await;
    let (s, ct, body) = a.call("GET", "/metrics", "k", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/plain"), "{ct}");
    for name in [
        "localgem_time_to_first_token_seconds",
        "localgem_inter_token_latency_seconds",
        "localgem_requests_total{model=\"fake-model\",surface=\"interactions\",status=\"completed\"}",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
}
