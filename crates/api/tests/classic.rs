//! HTTP-level tests of the classic API (`models/{model}:generateContent`,
//! `:streamGenerateContent`, `:countTokens`) over the scripted engine (see
//! `localgem_api::testing` for its script): wire shapes in both key spellings, streaming in
//! both framings, function calling, thoughts and their signatures, structured output,
//! counting, errors in Google's envelope, and metrics by surface.

use std::sync::Arc;

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

fn app() -> App {
    let engine = Arc::new(FakeEngine::default());
    let state = AppState::new(
        engine.clone(),
        Arc::new(MemoryStore::new()),
        ApiConfig {
            aliases: ModelAliases::parse(&["gemini-*=default".into()], FakeEngine::MODEL).unwrap(),
            signer: Signer::new(b"classic-test-key".to_vec()),
            default_max_output_tokens: Some(64),
            ..ApiConfig::default()
        },
    );
    App { state, engine }
}

const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
const COUNT: &str = "/v1beta/models/gemini-2.5-flash:countTokens";

impl App {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, String, String) {
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
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn json(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        let (s, ct, text) = self.call("POST", uri, Some(body)).await;
        assert!(ct.starts_with("application/json"), "{ct}: {text}");
        (s, serde_json::from_str(&text).unwrap())
    }

    async fn ok(&self, uri: &str, body: Value) -> Value {
        let (s, v) = self.json(uri, body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// The chunks of an `alt=sse` stream, checking its framing.
    async fn sse(&self, body: Value) -> Vec<Value> {
        let (s, ct, text) = self.call("POST", STREAM, Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        assert_eq!(ct, "text/event-stream");
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
        text.split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e.strip_prefix("data: ").unwrap_or_else(|| panic!("{e:?}"));
                assert!(!data.contains('\n'), "one line per event: {e:?}");
                serde_json::from_str(data).unwrap()
            })
            .collect()
    }

    fn last_request(&self) -> localgem_core::GenerateRequest {
        self.engine.requests.lock().unwrap().last().unwrap().clone()
    }
}

fn user(text: &str) -> Value {
    json!({"role": "user", "parts": [{"text": text}]})
}

fn text(v: &Value) -> String {
    v["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["thought"] != json!(true))
        .filter_map(|p| p["text"].as_str())
        .collect()
}

#[tokio::test]
async fn generate_content_answers_in_the_sdk_shape_on_v1_and_v1beta() {
    let a = app();
    for uri in [GENERATE, "/v1/models/gemini-2.5-flash:generateContent"] {
        let v = a
            .ok(uri, json!({"contents": [user("How does AI work?")]}))
            .await;
        let c = &v["candidates"][0];
        assert_eq!(c["content"]["role"], "model");
        assert_eq!(
            c["content"]["parts"],
            json!([{"text": "Echo: How does AI work?"}])
        );
        assert_eq!(c["finishReason"], "STOP");
        assert_eq!(c["index"], 0);
        let u = &v["usageMetadata"];
        let prompt = u["promptTokenCount"].as_u64().unwrap();
        assert!(prompt > 0);
        assert_eq!(u["candidatesTokenCount"], 5);
        assert_eq!(u["totalTokenCount"].as_u64().unwrap(), prompt + 5);
        assert_eq!(
            u["promptTokensDetails"],
            json!([{"modality": "TEXT", "tokenCount": prompt}])
        );
        assert_eq!(v["modelVersion"], "gemini-2.5-flash");
        assert!(!v["responseId"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn snake_case_and_camel_case_requests_are_the_same_request() {
    let a = app();
    let camel = json!({
        "contents": [user("hi there")],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0, "topP": 0.5, "topK": 3.0, "seed": 7,
                             "maxOutputTokens": 2, "stopSequences": ["zzz"]}
    });
    let snake = json!({
        "contents": [user("hi there")],
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "generation_config": {"temperature": 0, "top_p": 0.5, "top_k": 3, "seed": 7,
                              "max_output_tokens": 2, "stop_sequences": ["zzz"]}
    });
    let v1 = a.ok(GENERATE, camel).await;
    let r1 = a.last_request();
    let v2 = a.ok(GENERATE, snake).await;
    let r2 = a.last_request();
    assert_eq!(r1, r2);
    assert_eq!(
        r1.messages[0],
        localgem_core::ChatMessage::new(Role::System, "Be brief.")
    );
    assert_eq!(
        (
            r1.sampling.temperature,
            r1.sampling.top_p,
            r1.sampling.top_k,
            r1.sampling.seed
        ),
        (0.0, 0.5, 3, 7)
    );
    assert_eq!(r1.max_output_tokens, 2);
    assert_eq!(r1.stop_sequences, vec!["zzz".to_owned()]);
    // Two tokens, then the cap.
    assert_eq!(text(&v1), "Echo: hi");
    assert_eq!(v1["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v1["candidates"], v2["candidates"]);
}

#[tokio::test]
async fn streams_as_server_sent_events_and_as_a_json_array() {
    let a = app();
    let body = json!({"contents": [user("one two three")]});
    let whole = a.ok(GENERATE, body.clone()).await;
    let chunks = a.sse(body.clone()).await;
    assert!(chunks.len() >= 3, "{chunks:?}");
    let streamed: String = chunks.iter().map(text).collect();
    assert_eq!(streamed, text(&whole));
    // Every chunk is a whole response with a model content; only the last finishes.
    for c in &chunks {
        assert_eq!(c["candidates"][0]["content"]["role"], "model");
        assert!(!c["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .is_empty());
        assert_eq!(c["responseId"], chunks[0]["responseId"]);
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"], whole["usageMetadata"]);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["candidates"][0].get("finishReason").is_none()));

    // Without `alt=sse`: one JSON array, element by element.
    let (s, ct, raw) = a
        .call(
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("application/json"), "{ct}");
    let array: Vec<Value> = serde_json::from_str(&raw).unwrap();
    assert_eq!(array.len(), chunks.len());
    assert_eq!(array.iter().map(text).collect::<String>(), streamed);
}

fn weather_tool() -> Value {
    json!({"functionDeclarations": [{
        "name": "get_weather", "description": "Weather of a city.",
        "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}},
                       "required": ["city"]}}]})
}

#[tokio::test]
async fn function_calls_come_back_as_parts_and_their_results_as_tool_messages() {
    let a = app();
    let v = a
        .ok(
            GENERATE,
            json!({"contents": [user("weather in Paris")], "tools": [weather_tool()]}),
        )
        .await;
    let part = &v["candidates"][0]["content"]["parts"][0];
    let call = &part["functionCall"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["args"], json!({"n": 3}));
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    let r = a.last_request();
    assert_eq!(r.tool_mode, ToolMode::Auto);
    // The API's Schema became JSON Schema.
    assert_eq!(
        r.tools[0].parameters,
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    );

    // The history comes back as the Python SDK's automatic function calling sends it: the
    // model's turn as returned, the result without an id.
    let v = a
        .ok(
            GENERATE,
            json!({"contents": [
                user("weather in Paris"),
                {"role": "model", "parts": [part]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                    "response": {"result": "sunny"}}}]}],
                "tools": [weather_tool()]}),
        )
        .await;
    assert_eq!(text(&v), r#"Result: {"result":"sunny"}"#);
    let r = a.last_request();
    let model = &r.messages[1];
    assert_eq!(model.role, Role::Model);
    assert_eq!(model.tool_calls[0].id, call["id"].as_str().unwrap());
    let tool = &r.messages[2];
    assert_eq!(tool.role, Role::Tool);
    assert_eq!(tool.tool_call_id.as_deref(), call["id"].as_str());
    assert_eq!(tool.name.as_deref(), Some("get_weather"));
}

#[tokio::test]
async fn function_calling_modes_and_allowed_names() {
    let a = app();
    let tools = json!([{"functionDeclarations": [
        {"name": "a", "parametersJsonSchema": {"type": "object", "properties": {}}},
        {"name": "b"}]}]);
    for (mode, expect) in [
        ("ANY", ToolMode::Any),
        ("any", ToolMode::Any),
        ("NONE", ToolMode::None),
        ("VALIDATED", ToolMode::Validated),
        ("AUTO", ToolMode::Auto),
    ] {
        a.ok(
            GENERATE,
            json!({"contents": [user("x")], "tools": tools,
                   "toolConfig": {"functionCallingConfig": {"mode": mode, "allowedFunctionNames": ["b"]}}}),
        )
        .await;
        let r = a.last_request();
        assert_eq!(r.tool_mode, expect, "{mode}");
        assert_eq!(
            r.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
    }
    let (s, v) = a
        .json(
            GENERATE,
            json!({"contents": [user("x")], "tools": tools,
                   "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["zz"]}}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("zz"),
        "{v}"
    );
}

#[tokio::test]
async fn thoughts_are_parts_and_their_signature_restores_the_reasoning() {
    let a = app();
    let ask = user("think about cats");
    let cfg = json!({"thinkingConfig": {"includeThoughts": true, "thinkingBudget": 100}});
    let v = a
        .ok(
            GENERATE,
            json!({"contents": [ask], "generationConfig": cfg}),
        )
        .await;
    let parts = v["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(parts[0]["thought"], true);
    assert_eq!(parts[0]["text"], "Thinking about: think about cats");
    assert_eq!(parts[1]["text"], "Echo: think about cats");
    let sig = parts[1]["thoughtSignature"].as_str().unwrap();
    assert!(!sig.contains(['+', '/']), "URL-safe base64: {sig}");
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 5);
    assert_eq!(a.last_request().thinking.budget, Some(100));

    // Without includeThoughts the thought is not shown, but its signature still rides on
    // the answer.
    let v = a.ok(GENERATE, json!({"contents": [ask]})).await;
    let parts = v["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(parts.len(), 1);
    assert!(parts[0]["thoughtSignature"].is_string());

    // The history as a chat sends it back (thought parts included, and the signature in the
    // standard alphabet, as JSON from elsewhere writes it): the reasoning is restored once.
    let standard = sig.replace('-', "+").replace('_', "/");
    let mut back = parts.clone();
    back[0]["thoughtSignature"] = json!(standard);
    a.ok(
        GENERATE,
        json!({"contents": [ask, {"role": "model", "parts": [{"text": "Thinking about: x", "thought": true}, back[0]]},
                            user("and dogs?")]}),
    )
    .await;
    let r = a.last_request();
    assert_eq!(r.messages[1].role, Role::Model);
    assert_eq!(r.messages[1].content, "Echo: think about cats");
    assert_eq!(
        r.messages[1].reasoning.as_deref(),
        Some("Thinking about: think about cats")
    );
    // A signature that is not ours (the bypass strings clients send) restores nothing.
    a.ok(
        GENERATE,
        json!({"contents": [ask, {"role": "model", "parts": [{"text": "hi",
            "thoughtSignature": "skip_thought_signature_validator"}]}, user("and?")]}),
    )
    .await;
    assert_eq!(a.last_request().messages[1].reasoning, None);

    // Thinking off, and levels.
    for (cfg, budget) in [
        (json!({"thinkingBudget": 0}), Some(0)),
        (json!({"thinking_budget": -1}), None),
        (json!({"thinkingLevel": "HIGH"}), Some(4096)),
        (json!({"thinking_level": "low"}), Some(256)),
    ] {
        a.ok(
            GENERATE,
            json!({"contents": [user("x")], "generationConfig": {"thinkingConfig": cfg}}),
        )
        .await;
        assert_eq!(a.last_request().thinking.budget, budget, "{cfg}");
    }
}

#[tokio::test]
async fn streamed_chat_history_is_one_model_turn_again() {
    // The SDKs' chats keep one model content per streamed chunk; the prompt must be the
    // answer as generated, not its chunks joined with separators.
    let a = app();
    a.ok(
        GENERATE,
        json!({"contents": [user("hi"),
            {"role": "model", "parts": [{"text": "Echo:"}]},
            {"role": "model", "parts": [{"text": " hi"}]},
            {"role": "model", "parts": [{"text": ""}]},
            user("again")]}),
    )
    .await;
    let r = a.last_request();
    assert_eq!(r.messages.len(), 3);
    assert_eq!(
        r.messages[1],
        localgem_core::ChatMessage::new(Role::Model, "Echo: hi")
    );
}

#[tokio::test]
async fn response_schemas_constrain_the_output() {
    let a = app();
    let schema = json!({"type": "OBJECT", "properties": {"name": {"type": "STRING"}},
                        "property_ordering": ["name"]});
    a.ok(
        GENERATE,
        json!({"contents": [user("x")], "generationConfig": {
            "responseMimeType": "application/json", "responseSchema": schema}}),
    )
    .await;
    assert_eq!(
        a.last_request().format,
        OutputFormat::JsonSchema(
            json!({"type": "object", "properties": {"name": {"type": "string"}}})
        )
    );
    let js = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "title": "M"});
    a.ok(
        GENERATE,
        json!({"contents": [user("x")], "generationConfig": {
            "response_mime_type": "application/json", "response_json_schema": js}}),
    )
    .await;
    assert_eq!(a.last_request().format, OutputFormat::JsonSchema(js));
    a.ok(
        GENERATE,
        json!({"contents": [user("x")], "generationConfig": {"responseMimeType": "application/json"}}),
    )
    .await;
    assert_eq!(a.last_request().format, OutputFormat::JsonSchema(json!({})));
}

#[tokio::test]
async fn count_tokens_counts_the_prompt_as_generate_content_sends_it() {
    let a = app();
    let v = a
        .ok(COUNT, json!({"contents": [user("one two three")]}))
        .await;
    let total = v["totalTokens"].as_u64().unwrap();
    assert_eq!(total, 5);
    let gen = a
        .ok(GENERATE, json!({"contents": [user("one two three")]}))
        .await;
    assert_eq!(
        gen["usageMetadata"]["promptTokenCount"].as_u64(),
        Some(total)
    );
    // A whole request: its system instruction and tools count too.
    let v = a
        .ok(
            COUNT,
            json!({"generateContentRequest": {"model": "models/gemini-2.5-flash",
                "contents": [user("one two three")], "systemInstruction": {"parts": [{"text": "be brief"}]},
                "tools": [weather_tool()]}}),
        )
        .await;
    assert_eq!(v["totalTokens"].as_u64(), Some(total + 4 + 8));
    assert_eq!(
        a.engine.requests.lock().unwrap().len(),
        1,
        "counting generates nothing"
    );
}

async fn expect_error(a: &App, uri: &str, body: Value, status: u16, needle: &str) {
    let (s, v) = a.json(uri, body.clone()).await;
    assert_eq!(s.as_u16(), status, "{body} → {v}");
    let e = &v["error"];
    assert_eq!(e["code"], status, "{v}");
    assert!(e["status"].is_string(), "{v}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
}

#[tokio::test]
async fn bad_requests_get_400s_in_googles_envelope() {
    let a = app();
    let u = user("x");
    for (body, needle) in [
        (json!({"contentz": []}), "Unknown name \"contentz\""),
        (json!({"contents": []}), "`contents` is required"),
        (json!({}), "`contents` is required"),
        (
            json!({"contents": [u, {"role": "model", "parts": [{"text": "y"}]}]}),
            "last of `contents`",
        ),
        (
            json!({"contents": [{"role": "system", "parts": [{"text": "y"}]}]}),
            "role",
        ),
        (
            json!({"contents": [{"role": "user", "parts": [{}]}]}),
            "holds no data",
        ),
        (
            json!({"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {"mimeType": "image/png", "data": "AA"}}]}]}),
            "one kind",
        ),
        (
            json!({"contents": [u], "generationConfig": {"candidateCount": 2}}),
            "candidateCount",
        ),
        (
            json!({"contents": [u], "generationConfig": {"temprature": 1}}),
            "temprature",
        ),
        (
            json!({"contents": [u], "generationConfig": {"temperature": 5}}),
            "temperature",
        ),
        (
            json!({"contents": [u], "generationConfig": {"topK": -1}}),
            "topK",
        ),
        (
            json!({"contents": [u], "generationConfig": {"maxOutputTokens": 0}}),
            "maxOutputTokens",
        ),
        (
            json!({"contents": [u], "generationConfig": {"responseSchema": {"type": "STRING"}}}),
            "application/json",
        ),
        (
            json!({"contents": [u], "generationConfig": {"responseMimeType": "application/json", "responseSchema": {"type": "TEXT"}}}),
            "unknown type",
        ),
        (
            json!({"contents": [u], "generationConfig": {"responseModalities": ["IMAGE"]}}),
            "IMAGE",
        ),
        (
            json!({"contents": [u], "generationConfig": {"thinkingConfig": {"thinkingBudget": -5}}}),
            "thinkingBudget",
        ),
        (
            json!({"contents": [u], "generationConfig": {"thinkingConfig": {"thinkingLevel": "EXTREME"}}}),
            "EXTREME",
        ),
        (
            json!({"contents": [u], "tools": [{"googleSearch": {}}]}),
            "googleSearch",
        ),
        (
            json!({"contents": [u], "tools": [{"functionDeclarations": [{"name": "bad name"}]}]}),
            "name",
        ),
        (
            json!({"contents": [u], "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
            "declared functions",
        ),
        (
            json!({"contents": [u], "cachedContent": "cachedContents/x"}),
            "cachedContent",
        ),
        (
            json!({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "text/plain", "data": "!!"}}]}]}),
            "base64",
        ),
        (
            json!({"contents": [{"role": "user", "parts": [{"executableCode": {"code": "1"}}]}]}),
            "executableCode",
        ),
        (json!({"contents": "hello"}), "Invalid JSON payload"),
    ] {
        expect_error(&a, GENERATE, body, 400, needle).await;
    }
    expect_error(&a, STREAM, json!({"contents": []}), 400, "contents").await;
    expect_error(&a, COUNT, json!({}), 400, "required").await;
    expect_error(
        &a,
        "/v1beta/models/llama-9:generateContent",
        json!({"contents": [u]}),
        404,
        "llama-9",
    )
    .await;
    expect_error(
        &a,
        "/v1beta/models/gemini-2.5-flash:fooBar",
        json!({}),
        404,
        "fooBar",
    )
    .await;
    expect_error(
        &a,
        "/v1beta/models/gemini-2.5-flash:embedContent",
        json!({}),
        400,
        "embedContent",
    )
    .await;
    expect_error(
        &a,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=xml",
        json!({"contents": [u]}),
        400,
        "alt",
    )
    .await;
    // Garbage that is not JSON at all.
    let resp = router(a.state.clone())
        .oneshot(
            Request::post(GENERATE)
                .header("x-goog-api-key", "k")
                .body(Body::from("{\"contents\": [{\"parts\": [{\"text\": \"x"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        a.engine.requests.lock().unwrap().is_empty(),
        "nothing reached the engine"
    );
}

#[tokio::test]
async fn an_engine_lost_mid_answer_is_a_503_or_an_error_chunk() {
    let a = app();
    let body = json!({"contents": [user("please lose the engine now")]});
    expect_error(&a, GENERATE, body.clone(), 503, "stand-in engine").await;
    let (s, _, raw) = a.call("POST", STREAM, Some(body)).await;
    assert_eq!(s, StatusCode::OK);
    let last = raw
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .last()
        .unwrap();
    let v: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["error"]["code"], 503, "{v}");
    assert!(
        last.starts_with("data: {\"error\":"),
        "the SDKs look for a leading error key"
    );
}

#[tokio::test]
async fn models_list_the_classic_methods() {
    let a = app();
    let (s, _, body) = a.call("GET", "/v1beta/models", None).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    let methods = &v["models"][0]["supportedGenerationMethods"];
    for m in ["generateContent", "streamGenerateContent", "countTokens"] {
        assert!(methods.as_array().unwrap().contains(&json!(m)), "{v}");
    }
    let (s, _, body) = a.call("GET", "/v1beta/models/gemini-2.5-flash", None).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "models/gemini-2.5-flash");
}

#[tokio::test]
async fn metrics_say_which_surface_a_request_came_through() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _ = metrics::set_global_recorder(recorder);
    let a = app();
    a.ok(GENERATE, json!({"contents": [user("x")]})).await;
    let body = handle.render();
    assert!(
        body.contains("localgem_requests_total{model=\"fake-model\",surface=\"generate_content\",status=\"completed\"}"),
        "{body}"
    );
}

#[tokio::test]
async fn a_key_past_its_running_limit_gets_429_in_googles_envelope() {
    let engine = Arc::new(FakeEngine::with_delay(std::time::Duration::from_millis(
        200,
    )));
    let state = AppState::new(
        engine.clone(),
        Arc::new(MemoryStore::new()),
        ApiConfig {
            aliases: ModelAliases::parse(&["gemini-*=default".into()], FakeEngine::MODEL).unwrap(),
            max_running_per_key: 1,
            ..ApiConfig::default()
        },
    );
    let a = App { state, engine };
    let slow = {
        let router = router(a.state.clone());
        tokio::spawn(async move {
            let req = Request::post(GENERATE)
                .header("x-goog-api-key", "k")
                .body(Body::from(
                    json!({"contents": [user("one two three")]}).to_string(),
                ))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let resp = router(a.state.clone())
        .oneshot(
            Request::post(GENERATE)
                .header("x-goog-api-key", "k")
                .body(Body::from(json!({"contents": [user("x")]}).to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], 429, "{body}");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
}
