//! Building create requests: [`InteractionRequest`], [`Input`], [`Tool`], [`ResponseFormat`]
//! and helpers for content parts and steps.

use base64::Engine as _;
use localgem_wire::{Content, CreateInteractionRequest, File, GenerationConfig, Media, Step};
use serde::Serialize;
use serde_json::{json, Value};

use crate::types::AnyStep;

/// The `input` of a create request, in any of the four accepted forms: a string, one content
/// object, a list of content objects (one user turn), or a list of steps (stateless history
/// and/or function results).
///
/// Usually built through `From`: `"text"`, a [`Content`], a `Vec<Content>`, a `Vec<Step>` or a
/// `Vec<AnyStep>` (for example the steps of an earlier answer).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Input(Value);

impl Input {
    /// The JSON sent as `input`.
    pub fn into_value(self) -> Value {
        self.0
    }

    /// The JSON sent as `input`.
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

impl From<&str> for Input {
    fn from(s: &str) -> Self {
        Input(Value::String(s.to_owned()))
    }
}

impl From<String> for Input {
    fn from(s: String) -> Self {
        Input(Value::String(s))
    }
}

impl From<&String> for Input {
    fn from(s: &String) -> Self {
        Input(Value::String(s.clone()))
    }
}

impl From<Content> for Input {
    fn from(c: Content) -> Self {
        Input(to_json(&c))
    }
}

impl From<Vec<Content>> for Input {
    fn from(c: Vec<Content>) -> Self {
        Input(to_json(&c))
    }
}

impl From<&[Content]> for Input {
    fn from(c: &[Content]) -> Self {
        Input(to_json(&c))
    }
}

impl From<Vec<Step>> for Input {
    fn from(s: Vec<Step>) -> Self {
        Input(to_json(&s))
    }
}

impl From<&[Step]> for Input {
    fn from(s: &[Step]) -> Self {
        Input(to_json(&s))
    }
}

impl From<Vec<AnyStep>> for Input {
    fn from(s: Vec<AnyStep>) -> Self {
        Input(to_json(&s))
    }
}

impl From<&[AnyStep]> for Input {
    fn from(s: &[AnyStep]) -> Self {
        Input(to_json(&s))
    }
}

impl From<&Vec<AnyStep>> for Input {
    fn from(s: &Vec<AnyStep>) -> Self {
        Input(to_json(s))
    }
}

impl From<Value> for Input {
    /// Any JSON, sent as is (for forms this crate has no type for).
    fn from(v: Value) -> Self {
        Input(v)
    }
}

fn to_json<T: Serialize + ?Sized>(t: &T) -> Value {
    // The wire types only hold strings, numbers and JSON values: serializing cannot fail.
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// A `text` content part.
pub fn text(text: impl Into<String>) -> Content {
    Content::text(text)
}

fn media(uri: Option<String>, data: Option<String>, mime_type: impl Into<String>) -> Media {
    Media {
        data,
        uri,
        mime_type: Some(mime_type.into()),
        extra: Default::default(),
    }
}

/// An `image` part referring to a URI (typically an uploaded file's [`File::uri`]).
pub fn image_uri(uri: impl Into<String>, mime_type: impl Into<String>) -> Content {
    Content::Image(media(Some(uri.into()), None, mime_type))
}

/// An `image` part carrying the bytes inline (base64-encoded here).
pub fn image_bytes(bytes: impl AsRef<[u8]>, mime_type: impl Into<String>) -> Content {
    Content::Image(media(None, Some(base64_encode(bytes.as_ref())), mime_type))
}

/// An `audio` part referring to a URI.
pub fn audio_uri(uri: impl Into<String>, mime_type: impl Into<String>) -> Content {
    Content::Audio(media(Some(uri.into()), None, mime_type))
}

/// A `video` part referring to a URI.
pub fn video_uri(uri: impl Into<String>, mime_type: impl Into<String>) -> Content {
    Content::Video(media(Some(uri.into()), None, mime_type))
}

/// A `document` part referring to a URI.
pub fn document_uri(uri: impl Into<String>, mime_type: impl Into<String>) -> Content {
    Content::Document(media(Some(uri.into()), None, mime_type))
}

/// A `document` part carrying the bytes inline.
pub fn document_bytes(bytes: impl AsRef<[u8]>, mime_type: impl Into<String>) -> Content {
    Content::Document(media(None, Some(base64_encode(bytes.as_ref())), mime_type))
}

/// A content part for an uploaded file: `image`, `audio` or `video` by its MIME type, else
/// `document`; with the file's `uri` and `mime_type`.
pub fn file(file: &File) -> Content {
    let m = media(Some(file.uri.clone()), None, file.mime_type.clone());
    let top = file.mime_type.split('/').next().unwrap_or("");
    match top {
        "image" => Content::Image(m),
        "audio" => Content::Audio(m),
        "video" => Content::Video(m),
        _ => Content::Document(m),
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A `user_input` step with the given content.
pub fn user_input(content: impl IntoIterator<Item = Content>) -> Step {
    Step::UserInput {
        content: content.into_iter().collect(),
    }
}

/// A `user_input` step holding one text part.
pub fn user_text(text: impl Into<String>) -> Step {
    Step::UserInput {
        content: vec![Content::text(text)],
    }
}

/// A `function_result` step answering the `function_call` step with id `call_id`.
///
/// `result` is an object, a string, or a list of content parts.
pub fn function_result(
    call_id: impl Into<String>,
    name: impl Into<String>,
    result: impl Into<Value>,
) -> Step {
    Step::FunctionResult {
        call_id: call_id.into(),
        result: result.into(),
        name: Some(name.into()),
        is_error: None,
    }
}

/// A tool declaration for the `tools` list.
///
/// ```
/// use localgem_client::Tool;
/// use serde_json::json;
///
/// let t = Tool::function("get_weather", "Current weather of a city",
///     json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}));
/// assert_eq!(t.as_value()["type"], "function");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Tool(Value);

impl Tool {
    /// A client-side function (`{"type":"function","name",…,"parameters"}`); `parameters` is a
    /// JSON Schema object.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Tool {
        Tool(json!({
            "type": "function",
            "name": name.into(),
            "description": description.into(),
            "parameters": parameters,
        }))
    }

    /// Google Search grounding (Google's endpoint only).
    pub fn google_search() -> Tool {
        Tool(json!({"type": "google_search"}))
    }

    /// Server-side code execution (Google's endpoint only).
    pub fn code_execution() -> Tool {
        Tool(json!({"type": "code_execution"}))
    }

    /// URL context (Google's endpoint only).
    pub fn url_context() -> Tool {
        Tool(json!({"type": "url_context"}))
    }

    /// Any tool object, sent as is.
    pub fn from_json(v: Value) -> Tool {
        Tool(v)
    }

    /// The JSON sent.
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

impl From<Value> for Tool {
    fn from(v: Value) -> Self {
        Tool(v)
    }
}

/// The `response_format` of a request (structured output).
///
/// ```
/// use localgem_client::ResponseFormat;
/// use serde_json::json;
///
/// let f = ResponseFormat::json_schema(json!({"type": "object", "properties": {"n": {"type": "integer"}}}));
/// assert_eq!(f.as_value()["mime_type"], "application/json");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ResponseFormat(Value);

impl ResponseFormat {
    /// JSON text that follows `schema` (a JSON Schema object):
    /// `{"type":"text","mime_type":"application/json","schema":…}`.
    pub fn json_schema(schema: Value) -> ResponseFormat {
        ResponseFormat(json!({"type": "text", "mime_type": "application/json", "schema": schema}))
    }

    /// Any JSON text: `{"type":"text","mime_type":"application/json"}`.
    pub fn json() -> ResponseFormat {
        ResponseFormat(json!({"type": "text", "mime_type": "application/json"}))
    }

    /// Plain text: `{"type":"text","mime_type":"text/plain"}`.
    pub fn text() -> ResponseFormat {
        ResponseFormat(json!({"type": "text", "mime_type": "text/plain"}))
    }

    /// Any `response_format` value, sent as is (a list of formats, a bare schema, …).
    pub fn from_json(v: Value) -> ResponseFormat {
        ResponseFormat(v)
    }

    /// The JSON sent.
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

impl From<Value> for ResponseFormat {
    fn from(v: Value) -> Self {
        ResponseFormat(v)
    }
}

/// A create request (`POST /{v}/interactions`), built step by step.
///
/// A thin builder over [`CreateInteractionRequest`]; [`Interactions::create`] and
/// [`Interactions::create_stream`] also take that wire type directly. Whether the answer is
/// streamed is decided by which of the two is called, not by the request.
///
/// ```
/// use localgem_client::{InteractionRequest, ResponseFormat};
/// use serde_json::json;
///
/// let req = InteractionRequest::new("gemini-3-flash-preview", "How does AI work?")
///     .system_instruction("Answer in one sentence.")
///     .thinking_level("low")
///     .temperature(0.2)
///     .response_format(ResponseFormat::text());
/// assert_eq!(req.to_json(), json!({
///     "model": "gemini-3-flash-preview",
///     "input": "How does AI work?",
///     "system_instruction": "Answer in one sentence.",
///     "generation_config": {"temperature": 0.2, "thinking_level": "low"},
///     "response_format": {"type": "text", "mime_type": "text/plain"}
/// }));
/// ```
///
/// [`Interactions::create`]: crate::Interactions::create
/// [`Interactions::create_stream`]: crate::Interactions::create_stream
#[derive(Debug, Clone, Default)]
pub struct InteractionRequest {
    inner: CreateInteractionRequest,
}

impl InteractionRequest {
    /// A request to `model` with `input`.
    pub fn new(model: impl Into<String>, input: impl Into<Input>) -> Self {
        InteractionRequest::default().model(model).input(input)
    }

    /// Set the model id (e.g. `gemini-3-flash-preview`).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.inner.model = Some(model.into());
        self
    }

    /// Set an agent id instead of a model.
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.inner.agent = Some(agent.into());
        self
    }

    /// Set the input: a string, content part(s), or steps.
    pub fn input(mut self, input: impl Into<Input>) -> Self {
        self.inner.input = Some(input.into().into_value());
        self
    }

    /// Set the system instruction (a plain string).
    pub fn system_instruction(mut self, instruction: impl Into<String>) -> Self {
        self.inner.system_instruction = Some(instruction.into());
        self
    }

    /// Replace the whole `generation_config`.
    pub fn generation_config(mut self, config: GenerationConfig) -> Self {
        self.inner.generation_config = Some(config);
        self
    }

    fn config(&mut self) -> &mut GenerationConfig {
        self.inner
            .generation_config
            .get_or_insert_with(Default::default)
    }

    /// `generation_config.temperature`.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.config().temperature = Some(temperature);
        self
    }

    /// `generation_config.top_p`.
    pub fn top_p(mut self, top_p: f64) -> Self {
        self.config().top_p = Some(top_p);
        self
    }

    /// `generation_config.seed`.
    pub fn seed(mut self, seed: i64) -> Self {
        self.config().seed = Some(seed);
        self
    }

    /// `generation_config.max_output_tokens`.
    pub fn max_output_tokens(mut self, max: i64) -> Self {
        self.config().max_output_tokens = Some(max);
        self
    }

    /// `generation_config.stop_sequences`.
    pub fn stop_sequences<S: Into<String>>(mut self, stops: impl IntoIterator<Item = S>) -> Self {
        self.config().stop_sequences = Some(stops.into_iter().map(Into::into).collect());
        self
    }

    /// `generation_config.thinking_level`: `minimal`, `low`, `medium`, `high` or `xhigh`.
    pub fn thinking_level(mut self, level: impl Into<String>) -> Self {
        self.config().thinking_level = Some(level.into());
        self
    }

    /// `generation_config.thinking_summaries`: `auto` or `none`.
    pub fn thinking_summaries(mut self, summaries: impl Into<String>) -> Self {
        self.config().thinking_summaries = Some(summaries.into());
        self
    }

    /// `generation_config.tool_choice`: `"auto"`, `"any"`, `"none"`, `"validated"` or an
    /// `{"allowed_tools":…}` object.
    pub fn tool_choice(mut self, choice: impl Into<Value>) -> Self {
        self.config().tool_choice = Some(choice.into());
        self
    }

    /// Add a tool declaration.
    pub fn tool(mut self, tool: impl Into<Tool>) -> Self {
        self.inner
            .tools
            .get_or_insert_with(Vec::new)
            .push(tool.into().0);
        self
    }

    /// Add several tool declarations.
    pub fn tools<T: Into<Tool>>(mut self, tools: impl IntoIterator<Item = T>) -> Self {
        let list = self.inner.tools.get_or_insert_with(Vec::new);
        list.extend(tools.into_iter().map(|t| t.into().0));
        self
    }

    /// Set `response_format` (structured output).
    pub fn response_format(mut self, format: impl Into<ResponseFormat>) -> Self {
        self.inner.response_format = Some(format.into().0);
        self
    }

    /// Continue the stored conversation of this interaction.
    pub fn previous_interaction_id(mut self, id: impl Into<String>) -> Self {
        self.inner.previous_interaction_id = Some(id.into());
        self
    }

    /// Whether the server keeps the interaction (default `true`); `false` for stateless use.
    pub fn store(mut self, store: bool) -> Self {
        self.inner.store = Some(store);
        self
    }

    /// Run in the background (poll with `get`).
    pub fn background(mut self, background: bool) -> Self {
        self.inner.background = Some(background);
        self
    }

    /// `service_tier`: `flex`, `standard`, `priority` or `deferred`.
    pub fn service_tier(mut self, tier: impl Into<String>) -> Self {
        self.inner.service_tier = Some(tier.into());
        self
    }

    /// The wire request.
    pub fn as_wire(&self) -> &CreateInteractionRequest {
        &self.inner
    }

    /// Mutable access to the wire request, for fields without a builder method.
    pub fn as_wire_mut(&mut self) -> &mut CreateInteractionRequest {
        &mut self.inner
    }

    /// The wire request.
    pub fn into_wire(self) -> CreateInteractionRequest {
        self.inner
    }

    /// The JSON body as it would be sent (without `stream`).
    pub fn to_json(&self) -> Value {
        to_json(&self.inner)
    }
}

impl From<CreateInteractionRequest> for InteractionRequest {
    fn from(inner: CreateInteractionRequest) -> Self {
        InteractionRequest { inner }
    }
}

impl From<InteractionRequest> for CreateInteractionRequest {
    fn from(r: InteractionRequest) -> Self {
        r.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Interaction, MaybeKnown};

    #[test]
    fn input_forms() {
        assert_eq!(Input::from("hi").into_value(), json!("hi"));
        assert_eq!(
            Input::from(text("hi")).into_value(),
            json!({"type": "text", "text": "hi"})
        );
        assert_eq!(
            Input::from(vec![
                text("What is in this picture?"),
                image_bytes([1u8, 2, 3], "image/png")
            ])
            .into_value(),
            json!([{"type":"text","text":"What is in this picture?"},
                   {"type":"image","data":"AQID","mime_type":"image/png"}])
        );
    }

    #[test]
    fn spec_step_list_input_round_trips() {
        // §2.3 (d), verbatim.
        let history = json!([
          {"type":"user_input","content":[{"type":"text","text":"Weather in Boston?"}]},
          {"type":"thought","signature":"EqcF…"},
          {"type":"function_call","id":"call_1","name":"get_weather","arguments":{"location":"Boston, MA"}},
          {"type":"function_result","call_id":"call_1","name":"get_weather","result":{"temp_f":40}},
          {"type":"model_output","content":[{"type":"text","text":"It is 40°F."}]},
          {"type":"user_input","content":[{"type":"text","text":"And tomorrow?"}]}
        ]);
        let steps: Vec<Step> = serde_json::from_value(history.clone()).unwrap();
        assert_eq!(Input::from(steps).into_value(), history);
        let any: Vec<AnyStep> = serde_json::from_value(history.clone()).unwrap();
        assert_eq!(Input::from(any).into_value(), history);
    }

    #[test]
    fn spec_stateful_function_result_turn() {
        // §3.8 turn 2.
        let weather = Tool::function(
            "get_weather",
            "Weather of a place",
            json!({"type": "object", "properties": {"location": {"type": "string"}}}),
        );
        let req = InteractionRequest::new(
            "gemini-3-flash-preview",
            vec![function_result(
                "call_3345913",
                "get_weather",
                json!([{"type": "text", "text": "Sunny, 18C, light breeze."}]),
            )],
        )
        .previous_interaction_id("v1_ChdGUVFJYXBXVUdLVEF4TjhQ…")
        .tool(weather.clone());
        assert_eq!(
            req.to_json(),
            json!({"model":"gemini-3-flash-preview",
                   "input":[{"type":"function_result","call_id":"call_3345913",
                             "result":[{"type":"text","text":"Sunny, 18C, light breeze."}],
                             "name":"get_weather"}],
                   "tools":[weather.as_value()],
                   "previous_interaction_id":"v1_ChdGUVFJYXBXVUdLVEF4TjhQ…"})
        );
        // The server's own parser accepts what the builder writes.
        let wire: CreateInteractionRequest = serde_json::from_value(req.to_json()).unwrap();
        assert_eq!(wire.tools.unwrap().len(), 1);
    }

    #[test]
    fn previous_steps_become_stateless_history() {
        let answer: Interaction = serde_json::from_value(json!({
            "id": "", "status": "completed",
            "steps": [{"type": "thought", "signature": "c2ln"},
                      {"type": "url_context_call", "id": "u1", "arguments": {"urls": ["x"]}},
                      {"type": "model_output", "content": [{"type": "text", "text": "You have 2 dogs."}]}]
        }))
        .unwrap();
        let mut history: Vec<AnyStep> = vec![user_text("I have 2 dogs in my house.").into()];
        history.extend(answer.steps.iter().cloned());
        history.push(MaybeKnown::Known(user_text("How many paws?")));
        let req = InteractionRequest::new("m", &history).store(false);
        assert_eq!(
            req.to_json(),
            json!({"model": "m", "store": false, "input": [
                {"type": "user_input", "content": [{"type": "text", "text": "I have 2 dogs in my house."}]},
                {"type": "thought", "signature": "c2ln"},
                {"type": "url_context_call", "id": "u1", "arguments": {"urls": ["x"]}},
                {"type": "model_output", "content": [{"type": "text", "text": "You have 2 dogs."}]},
                {"type": "user_input", "content": [{"type": "text", "text": "How many paws?"}]}
            ]})
        );
    }

    #[test]
    fn file_parts_by_mime_type() {
        let f: File = serde_json::from_value(json!({
            "name": "files/abc", "mimeType": "image/jpeg", "sizeBytes": "3",
            "createTime": "t", "updateTime": "t", "expirationTime": "t", "sha256Hash": "h",
            "uri": "http://127.0.0.1:8080/v1/files/abc", "state": "ACTIVE", "source": "UPLOADED"
        }))
        .unwrap();
        assert_eq!(
            to_json(&file(&f)),
            json!({"type": "image", "uri": "http://127.0.0.1:8080/v1/files/abc", "mime_type": "image/jpeg"})
        );
    }

    #[test]
    fn generation_config_shortcuts_merge() {
        let req = InteractionRequest::new("m", "x")
            .generation_config(GenerationConfig {
                seed: Some(7),
                ..Default::default()
            })
            .temperature(1.0)
            .max_output_tokens(64)
            .stop_sequences(["END"])
            .tool_choice("none");
        assert_eq!(
            req.to_json()["generation_config"],
            json!({"temperature": 1.0, "seed": 7, "stop_sequences": ["END"],
                   "max_output_tokens": 64, "tool_choice": "none"})
        );
    }
}
