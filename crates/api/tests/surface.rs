//! HTTP-level tests of tools, structured output, thinking and background runs over the
//! scripted engine (see `localgem_api::testing` for its script).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use localgem_api::signature::Signer;
use localgem_api::testing::FakeEngine;
use localgem_api::{router, ApiConfig, AppState, ModelAliases};
use localgem_core::{OutputFormat, Role, ToolMode};
use localgem_store::MemoryStore;
use serde_json::{json, Value};
use tower::ServiceExt;

struct App {
    state: AppState,
    engine: Arc<FakeEngine>,
}

fn app(delay_ms: u64) -> App {
    let engine = Arc::new(FakeEngine::with_delay(Duration::from_millis(delay_ms)));
    let state = AppState::new(
        engine.clone(),
        Arc::new(MemoryStore::new()),
        ApiConfig {
            aliases: ModelAliases::parse(&["gemini-*=default".into()], FakeEngine::MODEL).unwrap(),
            signer: Signer::new(b"surface-test-key".to_vec()),
            ..ApiConfig::default()
        },
    );
    App { state, engine }
}

impl App {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, String) {
        let b = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-goog-api-key", "k")
            .header("content-type", "application/json");
        let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
        let resp = router(self.state.clone())
            .oneshot(b.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn json(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (s, text) = self.call(method, uri, body).await;
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, body: Value) -> Value {
        let (s, v) = self.json("POST", "/v1beta/interactions", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    fn last_request(&self) -> localgem_core::GenerateRequest {
        self.engine
            .requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap()
    }
}

/// (event_type, data) of each SSE event.
fn sse(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .filter(|d| *d != "[DONE]")
                .map(|d| serde_json::from_str(d).unwrap())
        })
        .collect()
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}})
}

#[tokio::test]
async fn function_call_round_trip_stateful_and_stateless() {
    let a = app(0);
    let turn1 = a
        .create(
            json!({"model": "gemini-3-flash-preview", "input": "Weather in Boston?",
                       "tools": [weather_tool()]}),
        )
        .await;
    assert_eq!(turn1["status"], "requires_action", "{turn1}");
    let call = &turn1["steps"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], json!({"n": 3}));
    let call_id = call["id"].as_str().unwrap().to_owned();
    assert!(call_id.starts_with("call_"));
    let req = a.last_request();
    assert_eq!(req.tools.len(), 1);
    assert_eq!(req.tools[0].name, "get_weather");
    assert_eq!(req.tool_mode, ToolMode::Auto);

    // Stateful turn 2: the result reaches the model as a tool message after the call.
    let turn2 = a
        .create(json!({"model": "gemini-3-flash-preview", "previous_interaction_id": turn1["id"],
                       "tools": [weather_tool()],
                       "input": [{"type": "function_result", "call_id": call_id, "name": "get_weather",
                                  "result": {"temp_f": 40}}]}))
        .await;
    assert_eq!(turn2["status"], "completed");
    assert_eq!(
        turn2["steps"][0]["content"][0]["text"],
        "Result: {\"temp_f\":40}"
    );
    let req = a.last_request();
    let n = req.messages.len();
    assert_eq!(req.messages[n - 2].role, Role::Model);
    assert_eq!(req.messages[n - 2].tool_calls[0].id, call_id);
    assert_eq!(req.messages[n - 2].tool_calls[0].arguments, json!({"n": 3}));
    assert_eq!(req.messages[n - 1].role, Role::Tool);
    assert_eq!(
        req.messages[n - 1].tool_call_id.as_deref(),
        Some(call_id.as_str())
    );

    // Stateless: the same history sent in full, result without a name (found by call id),
    // result as a content list.
    let turn2b = a
        .create(json!({"model": "gemini-3-flash-preview", "store": false, "tools": [weather_tool()],
                       "input": [
                          {"type": "user_input", "content": [{"type": "text", "text": "Weather in Boston?"}]},
                          call,
                          {"type": "function_result", "call_id": call_id,
                           "result": [{"type": "text", "text": "Sunny, 18C"}]}]}))
        .await;
    assert_eq!(turn2b["id"], "");
    assert_eq!(
        turn2b["steps"][0]["content"][0]["text"],
        "Result: Sunny, 18C"
    );
    let req = a.last_request();
    assert_eq!(
        req.messages.last().unwrap().name.as_deref(),
        Some("get_weather")
    );
}

#[tokio::test]
async fn tool_choice_modes_and_allowed_tools_reach_the_engine() {
    let a = app(0);
    let time_tool = json!({"type": "function", "name": "get_time"});
    let v = a
        .create(json!({"model": "fake-model", "input": "x", "tools": [weather_tool(), time_tool],
                       "generation_config": {"tool_choice": {"allowed_tools": {"mode": "any", "tools": ["get_time"]}}}}))
        .await;
    assert_eq!(v["steps"][0]["name"], "get_time");
    let req = a.last_request();
    assert_eq!(req.tool_mode, ToolMode::Any);
    assert_eq!(req.tools.len(), 1);
    assert_eq!(
        req.tools[0].parameters,
        json!({"type": "object", "properties": {}})
    );

    let v = a
        .create(
            json!({"model": "fake-model", "input": "x", "tools": [weather_tool()],
                       "generation_config": {"tool_choice": "none"}}),
        )
        .await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["steps"][0]["type"], "model_output");
    assert_eq!(a.last_request().tool_mode, ToolMode::None);
}

#[tokio::test]
async fn bad_tools_get_clear_400s() {
    let a = app(0);
    for (tools, cfg, needle) in [
        (
            json!([{"type": "google_search"}]),
            json!({}),
            "google_search",
        ),
        (
            json!([{"type": "code_execution"}]),
            json!({}),
            "code_execution",
        ),
        (json!([{"name": "f"}]), json!({}), "type"),
        (json!([{"type": "function"}]), json!({}), "name"),
        (
            json!([{"type": "function", "name": "a b"}]),
            json!({}),
            "name",
        ),
        (
            json!([{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]),
            json!({}),
            "twice",
        ),
        (
            json!([{"type": "function", "name": "f", "parameters": 3}]),
            json!({}),
            "parameters",
        ),
        (
            json!([{"type": "function", "name": "f", "function": {}}]),
            json!({}),
            "function",
        ),
        (json!([]), json!({"tool_choice": "any"}), "no function"),
        (
            json!([weather_tool()]),
            json!({"tool_choice": {"allowed_tools": {"tools": ["nope"]}}}),
            "nope",
        ),
        (
            json!([weather_tool()]),
            json!({"tool_choice": "sometimes"}),
            "tool_choice",
        ),
    ] {
        let (s, v) = a
            .json("POST", "/v1/interactions", Some(json!({"model": "fake-model", "input": "x", "tools": tools, "generation_config": cfg})))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{tools} {cfg}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg} should name {needle}");
        assert_eq!(v["error"]["code"], "invalid_request");
    }
}

#[tokio::test]
async fn streamed_calls_send_the_shell_then_arguments() {
    let a = app(0);
    let (s, body) = a
        .call("POST", "/v1/interactions", Some(json!({"model": "fake-model", "input": "a b", "stream": true, "tools": [weather_tool()]})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let events = sse(&body);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "interaction.created",
            "interaction.status_update",
            "step.start",
            "step.delta",
            "step.stop",
            "interaction.completed"
        ]
    );
    assert_eq!(events[2]["step"]["type"], "function_call");
    assert_eq!(events[2]["step"]["name"], "get_weather");
    assert_eq!(events[2]["step"]["arguments"], json!({}));
    assert!(events[2]["step"]["id"]
        .as_str()
        .unwrap()
        .starts_with("call_"));
    assert_eq!(
        events[3]["delta"],
        json!({"type": "arguments_delta", "arguments": "{\"n\":2}"})
    );
    assert_eq!(events[5]["interaction"]["status"], "requires_action");
}

#[tokio::test]
async fn response_format_in_every_shape() {
    let a = app(0);
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    for (rf, mime, expect) in [
        (
            json!({"type": "text", "mime_type": "application/json", "schema": schema}),
            None,
            Some(schema.clone()),
        ),
        (
            schema.clone(),
            Some("application/json"),
            Some(schema.clone()),
        ),
        (schema.clone(), None, Some(schema.clone())),
        (
            json!([{"type": "text", "mime_type": "application/json", "schema": schema}]),
            None,
            Some(schema.clone()),
        ),
        (
            json!({"type": "text", "mime_type": "application/json"}),
            None,
            Some(json!({})),
        ),
        (Value::Null, Some("application/json"), Some(json!({}))),
        (
            json!({"type": "text", "mime_type": "text/plain"}),
            None,
            None,
        ),
    ] {
        let mut body = json!({"model": "fake-model", "input": "x"});
        if !rf.is_null() {
            body["response_format"] = rf.clone();
        }
        if let Some(m) = mime {
            body["response_mime_type"] = json!(m);
        }
        a.create(body).await;
        let got = a.last_request().format;
        let want = expect.map_or(OutputFormat::Text, OutputFormat::JsonSchema);
        assert_eq!(got, want, "{rf} {mime:?}");
    }
    for (rf, needle) in [
        (json!({"type": "image", "mime_type": "image/png"}), "image"),
        (json!({"type": "text", "mime_type": "text/csv"}), "text/csv"),
        (json!("json"), "response_format"),
        (
            json!({"type": "text", "mime_type": "application/json", "schema": 5}),
            "schema",
        ),
    ] {
        let (s, v) = a
            .json(
                "POST",
                "/v1/interactions",
                Some(json!({"model": "fake-model", "input": "x", "response_format": rf})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{rf}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
}

#[tokio::test]
async fn thought_steps_carry_signatures_that_restore_the_reasoning() {
    let a = app(0);
    let v = a
        .create(json!({"model": "fake-model", "input": "think about dogs",
                       "generation_config": {"thinking_level": "low", "thinking_summaries": "auto"}}))
        .await;
    assert_eq!(a.last_request().thinking.budget, Some(256));
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["type"], "thought");
    assert_eq!(
        steps[0]["summary"][0]["text"],
        "Thinking about: think about dogs"
    );
    let sig = steps[0]["signature"].as_str().unwrap().to_owned();
    assert_eq!(
        Signer::new(b"surface-test-key".to_vec())
            .verify(&sig)
            .as_deref(),
        Some("Thinking about: think about dogs")
    );
    assert_eq!(steps[1]["type"], "model_output");
    assert_eq!(v["usage"]["total_thought_tokens"], 5);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        [
            "total_input_tokens",
            "total_output_tokens",
            "total_thought_tokens"
        ]
        .iter()
        .map(|k| v["usage"][k].as_u64().unwrap())
        .sum::<u64>()
    );

    // Without summaries: the signature alone.
    let v2 = a
        .create(json!({"model": "fake-model", "input": "think twice", "generation_config": {"thinking_level": "minimal"}}))
        .await;
    assert_eq!(a.last_request().thinking.budget, Some(0));
    assert_eq!(
        v2["steps"][0]["type"], "model_output",
        "budget 0: no thought"
    );
    let v3 = a
        .create(json!({"model": "fake-model", "input": "think twice"}))
        .await;
    assert_eq!(v3["steps"][0]["type"], "thought");
    assert!(v3["steps"][0].get("summary").is_none(), "{v3}");

    // Stateless history: our signature restores the reasoning on the model turn; a foreign
    // or bypass signature is accepted and restores nothing.
    for (signature, restored) in [
        (sig.as_str(), Some("Thinking about: think about dogs")),
        ("skip_thought_signature_validator", None),
        ("EqcFCqQFARFNMg/QRx9+QFFSLwl9sdoW", None),
    ] {
        a.create(json!({"model": "fake-model", "store": false, "input": [
            {"type": "user_input", "content": [{"type": "text", "text": "think about dogs"}]},
            {"type": "thought", "signature": signature},
            {"type": "model_output", "content": [{"type": "text", "text": "Dogs have 4 paws."}]},
            {"type": "user_input", "content": [{"type": "text", "text": "And cats?"}]}]}))
            .await;
        let req = a.last_request();
        assert_eq!(req.messages[1].role, Role::Model);
        assert_eq!(
            req.messages[1].reasoning.as_deref(),
            restored,
            "{signature}"
        );
    }
    // Stateful: the stored thought restores too.
    a.create(
        json!({"model": "fake-model", "previous_interaction_id": v["id"], "input": "And cats?"}),
    )
    .await;
    assert_eq!(
        a.last_request().messages[1].reasoning.as_deref(),
        Some("Thinking about: think about dogs")
    );
}

#[tokio::test]
async fn streamed_thoughts_follow_the_spec_order() {
    let a = app(0);
    let (_, body) = a
        .call(
            "POST",
            "/v1/interactions",
            Some(
                json!({"model": "fake-model", "input": "think hard", "stream": true,
              "generation_config": {"thinking_summaries": "auto"}}),
            ),
        )
        .await;
    let events = sse(&body);
    let shape: Vec<String> = events
        .iter()
        .map(|e| {
            let t = e["event_type"].as_str().unwrap();
            match t {
                "step.start" => format!("start:{}", e["step"]["type"].as_str().unwrap()),
                "step.delta" => format!("delta:{}", e["delta"]["type"].as_str().unwrap()),
                other => other.to_owned(),
            }
        })
        .collect();
    let mut want = vec![
        "interaction.created",
        "interaction.status_update",
        "start:thought",
    ];
    want.extend(["delta:thought_summary"; 4]);
    want.extend(["delta:thought_signature", "step.stop", "start:model_output"]);
    want.extend(["delta:text"; 3]);
    want.extend(["step.stop", "interaction.completed"]);
    assert_eq!(shape, want);
    assert_eq!(events[7]["index"], 0);
    assert_eq!(events[9]["index"], 1);
}

/// Poll GET until the interaction is terminal.
async fn wait_done(a: &App, id: &str) -> Value {
    for _ in 0..200 {
        let (_, v) = a
            .json("GET", &format!("/v1beta/interactions/{id}"), None)
            .await;
        if !["in_progress", "queued"].contains(&v["status"].as_str().unwrap()) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} never finished");
}

#[tokio::test]
async fn background_runs_poll_attach_resume_and_cancel() {
    let a = app(15);
    let input = "one two three four five six seven eight nine ten";
    let v = a
        .create(json!({"model": "fake-model", "input": input, "background": true}))
        .await;
    assert_eq!(v["status"], "in_progress");
    let id = v["id"].as_str().unwrap().to_owned();
    // Attach while it runs: the whole stream, every event with an id.
    let (s, live) = a
        .call(
            "GET",
            &format!("/v1beta/interactions/{id}?stream=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let events = sse(&live);
    assert!(events.iter().all(|e| e["event_id"].is_string()), "{live}");
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, format!("Echo: {input}"));
    let done = wait_done(&a, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["steps"][0]["type"], "user_input");
    assert_eq!(done["steps"][1]["content"][0]["text"], text);

    // Resume after every event of the live stream: what follows, and nothing before.
    for (k, e) in events.iter().enumerate() {
        let eid = e["event_id"].as_str().unwrap();
        let (s, body) = a
            .call(
                "GET",
                &format!("/v1beta/interactions/{id}?stream=true&last_event_id={eid}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let rest = sse(&body);
        let before: String = events[..=k]
            .iter()
            .filter_map(|e| e["delta"]["text"].as_str())
            .collect();
        let after: String = rest
            .iter()
            .filter_map(|e| e["delta"]["text"].as_str())
            .collect();
        assert_eq!(format!("{before}{after}"), text, "resume after {eid}");
        assert_eq!(
            rest.last().map(|e| e["event_type"].clone()),
            (k + 1 < events.len()).then(|| json!("interaction.completed")),
            "resume after {eid}"
        );
    }
    let (s, v) = a
        .json(
            "GET",
            &format!("/v1beta/interactions/{id}?stream=true&last_event_id=garbage"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // A background run survives its creator going away; cancel stops it and keeps its steps.
    let v = a
        .create(json!({"model": "fake-model", "input": input, "background": true}))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let (_, polled) = a
        .json("GET", &format!("/v1beta/interactions/{id}"), None)
        .await;
    assert_eq!(polled["status"], "in_progress");
    let partial = polled["steps"][1]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        partial.starts_with("Echo:"),
        "steps so far are visible: {polled}"
    );
    let (s, c) = a
        .json("POST", &format!("/v1beta/interactions/{id}/cancel"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["status"], "cancelled");
    let kept = c["steps"][1]["content"][0]["text"].as_str().unwrap();
    assert!(
        kept.starts_with(&partial) && kept.len() < text.len(),
        "{kept}"
    );
    // Cancelling again returns it unchanged.
    let (_, c2) = a
        .json("POST", &format!("/v1beta/interactions/{id}/cancel"), None)
        .await;
    assert_eq!(c2, c);

    // background needs store
    let (s, _) = a
        .json(
            "POST",
            "/v1/interactions",
            Some(json!({"model": "fake-model", "input": "x", "background": true, "store": false})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_background_run_outlives_a_dropped_attach() {
    let a = app(20);
    let v = a
        .create(json!({"model": "fake-model", "input": "a b c d e f g h", "background": true}))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    // Attach and drop after the first bytes.
    let req = Request::builder()
        .uri(format!("/v1/interactions/{id}?stream=true"))
        .header("x-goog-api-key", "k")
        .body(Body::empty())
        .unwrap();
    let resp = router(a.state.clone()).oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    let _ = body.frame().await;
    drop(body);
    let done = wait_done(&a, &id).await;
    assert_eq!(done["status"], "completed");
}

#[tokio::test]
async fn resuming_at_the_newest_event_of_a_running_interaction_waits_for_more() {
    let a = app(30);
    let input = "one two three four five six seven eight";
    let v = a
        .create(json!({"model": "fake-model", "input": input, "background": true}))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let live = a.state.runs.get(&id).unwrap();
    let (seen, outcome) = live.log.next(0).await;
    assert!(outcome.is_none(), "still running");
    let newest = serde_json::to_value(seen.last().unwrap()).unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before: String = seen
        .iter()
        .filter_map(|e| match e {
            localgem_wire::StreamEvent::StepDelta {
                delta: localgem_wire::Delta::Text { text },
                ..
            } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let (s, body) = a
        .call(
            "GET",
            &format!("/v1beta/interactions/{id}?stream=true&last_event_id={newest}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let rest = sse(&body);
    let after: String = rest
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(
        format!("{before}{after}"),
        format!("Echo: {input}"),
        "{body}"
    );
    assert_eq!(rest.last().unwrap()["event_type"], "interaction.completed");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
}

#[tokio::test]
async fn a_lost_engine_fails_the_run_with_a_message_for_the_client() {
    let a = app(0);
    let (s, body) = a
        .call(
            "POST",
            "/v1beta/interactions",
            Some(json!({"model": "fake-model", "input": "please lose the engine now", "stream": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let events = sse(&body);
    let last = events.last().unwrap();
    assert_eq!(last["event_type"], "error", "{events:?}");
    assert_eq!(last["error"]["code"], "unavailable");
    assert_eq!(
        last["error"]["message"], "the stand-in engine went away",
        "the client sees why, not `internal`"
    );
    let id = events[0]["interaction"]["id"].as_str().unwrap().to_owned();
    let (s, v) = a
        .json("GET", &format!("/v1beta/interactions/{id}"), None)
        .await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("failed")));
    // Replayed from the store: the same error.
    let (_, replay) = a
        .call(
            "GET",
            &format!("/v1beta/interactions/{id}?stream=true"),
            None,
        )
        .await;
    assert_eq!(sse(&replay).last().unwrap()["error"], last["error"]);
}
