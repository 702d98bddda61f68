//! Wire request → validated request. Everything a client can get wrong is caught here, before
//! the engine or the store see anything, and answered with a 400 that names the field.

use localgem_core::{
    Attachment, ChatMessage, FunctionDecl, OutputFormat, Role, Sampling, Thinking, ToolCall,
    ToolMode, MEDIA_MARKER,
};
use localgem_wire::{Content, CreateInteractionRequest, GenerationConfig, Step};
use serde_json::{json, Value};

use crate::content::Takes;
use crate::error::ApiError;
use crate::media::Expanded;
use crate::signature::Signer;

/// A create request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCreate {
    /// The model id as the client wrote it (echoed back).
    pub model: String,
    /// This turn's input as steps.
    pub input: Vec<Step>,
    /// System instruction.
    pub system_instruction: Option<String>,
    /// Sampling settings.
    pub sampling: Sampling,
    /// Stop strings.
    pub stop_sequences: Vec<String>,
    /// Output cap requested (None: server default).
    pub max_output_tokens: Option<u32>,
    /// Chain parent.
    pub previous_interaction_id: Option<String>,
    /// Keep the interaction.
    pub store: bool,
    /// Answer as SSE.
    pub stream: bool,
    /// Run in the background (return at once).
    pub background: bool,
    /// Functions offered (after `allowed_tools` filtering).
    pub tools: Vec<FunctionDecl>,
    /// How tools are used.
    pub tool_mode: ToolMode,
    /// Output format.
    pub format: OutputFormat,
    /// Reasoning budget.
    pub thinking: Thinking,
    /// Return the reasoning text as the thought's summary.
    pub thinking_summaries: bool,
    /// Which API the request came through (a label of its metrics).
    pub surface: Surface,
}

/// The API surfaces that run generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Surface {
    /// `POST /{v}/interactions`.
    #[default]
    Interactions,
    /// `models/{model}:generateContent` and `:streamGenerateContent`.
    GenerateContent,
}

impl Surface {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Interactions => "interactions",
            Surface::GenerateContent => "generate_content",
        }
    }
}

/// Sampling used when a request leaves `temperature`, `top_p` or (`generateContent`) `topK`
/// out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    /// Temperature.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Candidates kept before the nucleus is taken (0: all). 64 is Gemini's and Gemma's
    /// own default; keeping the whole vocabulary makes the nucleus a sort of every token's
    /// probability, each token (it halves Gemma 3's sampled decode, 262,144 tokens).
    pub top_k: u32,
}

impl Default for SamplingDefaults {
    fn default() -> Self {
        SamplingDefaults {
            temperature: 0.7,
            top_p: 0.95,
            top_k: 64,
        }
    }
}

const THINKING_LEVELS: [&str; 5] = ["minimal", "low", "medium", "high", "xhigh"];
const SERVICE_TIERS: [&str; 4] = ["flex", "standard", "priority", "deferred"];
const MAX_STOP_SEQUENCES: usize = 16;

/// Validate a parsed create request.
///
/// # Errors
/// A 400 naming the first problem found.
pub fn validate_create(
    req: CreateInteractionRequest,
    defaults: SamplingDefaults,
) -> Result<ValidCreate, ApiError> {
    if req.agent.is_some() || req.agent_config.is_some() {
        return Err(ApiError::bad_request(
            "agents are not served by this server; set `model` instead of `agent`",
        ));
    }
    let model = match req.model {
        Some(m) if !m.trim().is_empty() => m.trim().trim_start_matches("models/").to_owned(),
        Some(_) => return Err(ApiError::bad_request("`model` must not be empty")),
        None => return Err(ApiError::bad_request("`model` is required")),
    };
    if req.continuation_token.is_some() {
        return Err(ApiError::bad_request(
            "unknown `continuation_token`: this server never issues continuation tokens",
        ));
    }
    let store = req.store.unwrap_or(true);
    let background = req.background == Some(true);
    if background && !store {
        return Err(ApiError::bad_request(
            "`background: true` requires `store: true`",
        ));
    }
    let mut tools = parse_tools(req.tools.unwrap_or_default())?;
    if req.environment.is_some() {
        return Err(ApiError::bad_request(
            "`environment` applies to agents, which this server does not serve",
        ));
    }
    if let Some(tier) = &req.service_tier {
        if !SERVICE_TIERS.contains(&tier.as_str()) {
            return Err(ApiError::bad_request(format!(
                "`service_tier` must be one of {}; got {tier:?}",
                SERVICE_TIERS.join(", ")
            )));
        }
    }
    if let Some(mods) = &req.response_modalities {
        if let Some(m) = mods.iter().find(|m| m.as_str() != "text") {
            return Err(ApiError::bad_request(format!(
                "response modality {m:?} is not supported; this server answers with text"
            )));
        }
    }
    let format = parse_response_format(
        req.response_format.as_ref(),
        req.response_mime_type.as_deref(),
    )?;
    if let Some(id) = &req.previous_interaction_id {
        if id.is_empty() {
            return Err(ApiError::bad_request(
                "`previous_interaction_id` must not be empty",
            ));
        }
    }
    let input = match req.input {
        Some(v) => parse_input(v)?,
        None => return Err(ApiError::bad_request("`input` is required")),
    };
    let cfg = req.generation_config.unwrap_or_default();
    let (sampling, stop_sequences, max_output_tokens) = validate_generation_config(&cfg, defaults)?;
    let tool_mode = parse_tool_choice(cfg.tool_choice.as_ref(), &mut tools)?;
    let thinking = Thinking {
        budget: cfg.thinking_level.as_deref().map(thought_budget),
    };
    Ok(ValidCreate {
        background,
        tools,
        tool_mode,
        format,
        thinking,
        thinking_summaries: cfg.thinking_summaries.as_deref() == Some("auto"),
        surface: Surface::Interactions,
        model,
        input,
        system_instruction: req.system_instruction.filter(|s| !s.is_empty()),
        sampling,
        stop_sequences,
        max_output_tokens,
        previous_interaction_id: req.previous_interaction_id,
        store,
        stream: req.stream.unwrap_or(false),
    })
}

/// Thought-token budget of a `thinking_level`.
pub fn thought_budget(level: &str) -> u32 {
    match level {
        "minimal" => 0,
        "low" => 256,
        "medium" => 1024,
        "high" => 4096,
        _ => 16_384,
    }
}

const OTHER_TOOL_TYPES: [&str; 10] = [
    "google_search",
    "code_execution",
    "url_context",
    "file_search",
    "google_maps",
    "mcp_server",
    "computer_use",
    "retrieval",
    "tool_search",
    "function_declarations",
];

/// `tools` → function declarations.
///
/// # Errors
/// 400 for a tool type other than `function`, a missing or duplicate name, or a
/// `parameters` that is not a JSON Schema object.
pub fn parse_tools(tools: Vec<Value>) -> Result<Vec<FunctionDecl>, ApiError> {
    let mut out: Vec<FunctionDecl> = Vec::new();
    for (i, t) in tools.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let Value::Object(mut o) = t else {
            return Err(ApiError::bad_request(format!("{at} must be an object")));
        };
        match o.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) if OTHER_TOOL_TYPES.contains(&other) => {
                return Err(ApiError::bad_request(format!(
                    "{at}: tool type {other:?} is not available on this server; only \"function\" tools are supported"
                )))
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "{at}: unknown tool type {other:?}; only \"function\" tools are supported"
                )))
            }
            None => {
                return Err(ApiError::bad_request(format!(
                    "{at} needs \"type\": \"function\" (declarations are flat: type, name, description, parameters)"
                )))
            }
        }
        for key in o.keys() {
            if ![
                "type",
                "name",
                "description",
                "parameters",
                "short_description",
                "defer_loading",
            ]
            .contains(&key.as_str())
            {
                return Err(ApiError::bad_request(format!(
                    "{at}: unknown field {key:?} in a function declaration"
                )));
            }
        }
        let name = match o.remove("name") {
            Some(Value::String(n)) => n,
            _ => return Err(ApiError::bad_request(format!("{at}.name is required"))),
        };
        let valid_name = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
        if !valid_name {
            return Err(ApiError::bad_request(format!(
                "{at}.name {name:?} must be 1-128 characters of letters, digits, _ - . :"
            )));
        }
        if out.iter().any(|f| f.name == name) {
            return Err(ApiError::bad_request(format!(
                "{at}: function {name:?} is declared twice"
            )));
        }
        let description = match o.remove("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(d)) => d,
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{at}.description must be a string"
                )))
            }
        };
        let parameters = match o.remove("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p,
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{at}.parameters must be a JSON Schema object"
                )))
            }
        };
        out.push(FunctionDecl {
            name,
            description,
            parameters,
        });
    }
    Ok(out)
}

fn tool_mode(s: &str) -> Option<ToolMode> {
    match s {
        "auto" => Some(ToolMode::Auto),
        "any" => Some(ToolMode::Any),
        "none" => Some(ToolMode::None),
        "validated" => Some(ToolMode::Validated),
        _ => None,
    }
}

/// `generation_config.tool_choice` → mode; `allowed_tools` narrows `tools`.
///
/// # Errors
/// 400 for an unknown mode, an allowed tool that is not declared, or a mode that needs
/// tools when none are declared.
pub fn parse_tool_choice(
    choice: Option<&Value>,
    tools: &mut Vec<FunctionDecl>,
) -> Result<ToolMode, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "`generation_config.tool_choice` must be \"auto\", \"any\", \"none\", \"validated\" or {\"allowed_tools\": {\"mode\": …, \"tools\": [names]}}",
        )
    };
    let mode = match choice {
        None | Some(Value::Null) => ToolMode::Auto,
        Some(Value::String(s)) => tool_mode(s).ok_or_else(bad)?,
        Some(Value::Object(o)) => {
            let allowed = o.get("allowed_tools").ok_or_else(bad)?;
            if o.len() != 1 {
                return Err(bad());
            }
            let mode = match allowed.get("mode") {
                None | Some(Value::Null) => ToolMode::Auto,
                Some(Value::String(s)) => tool_mode(s).ok_or_else(bad)?,
                Some(_) => return Err(bad()),
            };
            let names: Vec<String> = match allowed.get("tools") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                    ApiError::bad_request(
                        "`tool_choice.allowed_tools.tools` must be a list of function names",
                    )
                })?,
            };
            for n in &names {
                if !tools.iter().any(|t| &t.name == n) {
                    return Err(ApiError::bad_request(format!(
                        "`tool_choice.allowed_tools.tools` names {n:?}, which is not among the declared `tools`"
                    )));
                }
            }
            if !names.is_empty() {
                tools.retain(|t| names.contains(&t.name));
            }
            mode
        }
        Some(_) => return Err(bad()),
    };
    if matches!(mode, ToolMode::Any | ToolMode::Validated) && tools.is_empty() {
        return Err(ApiError::bad_request(
            "`tool_choice` asks for function calls, but no function `tools` are declared",
        ));
    }
    Ok(mode)
}

/// Whether an object is a ResponseFormat rather than a bare schema (spec §2.6).
fn is_format_object(o: &serde_json::Map<String, Value>) -> bool {
    matches!(
        o.get("type").and_then(Value::as_str),
        Some("text" | "image" | "audio" | "video")
    ) && (o.contains_key("mime_type") || o.contains_key("schema") || o.contains_key("delivery"))
        || o.get("type").and_then(Value::as_str) == Some("text") && o.len() == 1
}

fn check_schema(schema: &Value, at: &str) -> Result<(), ApiError> {
    match schema {
        Value::Object(_) | Value::Bool(true) => Ok(()),
        _ => Err(ApiError::bad_request(format!(
            "{at} must be a JSON Schema object"
        ))),
    }
}

/// `response_format` (every shape of spec §2.6) and the deprecated `response_mime_type` →
/// output format.
///
/// # Errors
/// 400 for a non-text format, a MIME type other than text or JSON, or a schema that is not
/// an object.
pub fn parse_response_format(
    format: Option<&Value>,
    mime: Option<&str>,
) -> Result<OutputFormat, ApiError> {
    let json_mime = match mime {
        None | Some("text/plain") => false,
        Some("application/json") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`response_mime_type` {other:?} is not supported; use \"text/plain\" or \"application/json\""
            )))
        }
    };
    let any_json = || OutputFormat::JsonSchema(json!({}));
    let one = |v: &Value, at: &str| -> Result<Option<OutputFormat>, ApiError> {
        let Value::Object(o) = v else {
            return Err(ApiError::bad_request(format!("{at} must be an object")));
        };
        if !is_format_object(o) {
            // A bare JSON Schema.
            check_schema(v, at)?;
            return Ok(Some(OutputFormat::JsonSchema(v.clone())));
        }
        match o.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "{at}: {other:?} output is not supported; this server answers with text"
                )))
            }
            None => unreachable!("format objects have a type"),
        }
        let fmt_mime = o.get("mime_type").and_then(Value::as_str);
        match (fmt_mime, o.get("schema")) {
            (Some("application/json") | None, Some(schema)) => {
                check_schema(schema, &format!("{at}.schema"))?;
                Ok(Some(OutputFormat::JsonSchema(schema.clone())))
            }
            (Some("application/json"), None) => Ok(Some(any_json())),
            (Some("text/plain") | None, None) => Ok(None),
            (Some(m), _) => Err(ApiError::bad_request(format!(
                "{at}.mime_type {m:?} is not supported; use \"text/plain\" or \"application/json\""
            ))),
        }
    };
    let parsed = match format {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut found = None;
            for (i, item) in items.iter().enumerate() {
                if let Some(f) = one(item, &format!("response_format[{i}]"))? {
                    found = Some(f);
                }
            }
            found
        }
        Some(v @ Value::Object(_)) => one(v, "response_format")?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "`response_format` must be an object or a list of objects",
            ))
        }
    };
    Ok(match parsed {
        Some(f) => f,
        None if json_mime => any_json(),
        None => OutputFormat::Text,
    })
}

fn validate_generation_config(
    cfg: &GenerationConfig,
    defaults: SamplingDefaults,
) -> Result<(Sampling, Vec<String>, Option<u32>), ApiError> {
    let temperature = match cfg.temperature {
        Some(t) if !(0.0..=2.0).contains(&t) || !t.is_finite() => {
            return Err(ApiError::bad_request(format!(
                "`generation_config.temperature` must be between 0 and 2; got {t}"
            )))
        }
        Some(t) => t as f32,
        None => defaults.temperature,
    };
    let top_p = match cfg.top_p {
        Some(p) if !(0.0..=1.0).contains(&p) || !p.is_finite() => {
            return Err(ApiError::bad_request(format!(
                "`generation_config.top_p` must be between 0 and 1; got {p}"
            )))
        }
        Some(p) => p as f32,
        None => defaults.top_p,
    };
    // Seeds are int32 on Google's API; any integer is accepted and mapped onto 32 bits.
    let seed = match cfg.seed {
        Some(s) => s as u32,
        None => rand::random::<u32>(),
    };
    let max_output_tokens = match cfg.max_output_tokens {
        Some(n) if n < 1 => {
            return Err(ApiError::bad_request(format!(
                "`generation_config.max_output_tokens` must be at least 1; got {n}"
            )))
        }
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        None => None,
    };
    let stops = cfg.stop_sequences.clone().unwrap_or_default();
    if stops.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::bad_request(format!(
            "`generation_config.stop_sequences` holds at most {MAX_STOP_SEQUENCES} strings; got {}",
            stops.len()
        )));
    }
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::bad_request(
            "`generation_config.stop_sequences` must not contain empty strings",
        ));
    }
    if let Some(level) = &cfg.thinking_level {
        if !THINKING_LEVELS.contains(&level.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{level:?} is not a supported thinking level. Allowed values are: {}.",
                THINKING_LEVELS.join(", ")
            )));
        }
    }
    if let Some(s) = &cfg.thinking_summaries {
        if s != "auto" && s != "none" {
            return Err(ApiError::bad_request(format!(
                "`generation_config.thinking_summaries` must be \"auto\" or \"none\"; got {s:?}"
            )));
        }
    }
    for (name, v) in [
        ("image_config", &cfg.image_config),
        ("speech_config", &cfg.speech_config),
        ("video_config", &cfg.video_config),
    ] {
        if v.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request(format!(
                "`generation_config.{name}` is not supported: this server generates text only"
            )));
        }
    }
    Ok((
        Sampling {
            temperature,
            top_p,
            top_k: defaults.top_k,
            seed,
        },
        stops,
        max_output_tokens,
    ))
}

const CONTENT_TYPES: [&str; 5] = ["text", "image", "audio", "document", "video"];
const STEP_TYPES: [&str; 5] = [
    "user_input",
    "model_output",
    "thought",
    "function_call",
    "function_result",
];

fn type_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

fn parse_content(v: Value, at: &str) -> Result<Content, ApiError> {
    serde_json::from_value::<Content>(v)
        .map_err(|e| ApiError::bad_request(format!("invalid content at {at}: {e}")))
}

fn parse_contents(v: Value, at: &str) -> Result<Vec<Content>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![Content::text(s)]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, c)| parse_content(c, &format!("{at}[{i}]")))
            .collect(),
        Value::Object(_) => Ok(vec![parse_content(v, at)?]),
        _ => Err(ApiError::bad_request(format!(
            "{at} must be a string, a content object or a list of content objects"
        ))),
    }
}

/// A legacy `{"role": ..., "content"|"parts": ...}` turn.
fn parse_legacy_turn(v: Value, at: &str) -> Result<Step, ApiError> {
    let Value::Object(mut o) = v else {
        unreachable!("checked by caller")
    };
    let role = o
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user")
        .to_owned();
    let content = o
        .remove("content")
        .or_else(|| o.remove("parts"))
        .ok_or_else(|| ApiError::bad_request(format!("{at} has a `role` but no `content`")))?;
    let content = parse_contents(content, &format!("{at}.content"))?;
    match role.as_str() {
        "user" => Ok(Step::UserInput { content }),
        "model" | "assistant" => Ok(Step::ModelOutput {
            content,
            error: None,
        }),
        other => Err(ApiError::bad_request(format!(
            "{at}.role must be \"user\" or \"model\"; got {other:?}"
        ))),
    }
}

fn parse_step(v: Value, at: &str) -> Result<Step, ApiError> {
    serde_json::from_value::<Step>(v)
        .map_err(|e| ApiError::bad_request(format!("invalid step at {at}: {e}")))
}

/// Parse `input` in any of its four forms into steps.
///
/// # Errors
/// 400 for an empty input, a mix of content and steps, or malformed items.
pub fn parse_input(input: Value) -> Result<Vec<Step>, ApiError> {
    match input {
        Value::String(s) => Ok(vec![Step::UserInput {
            content: vec![Content::text(s)],
        }]),
        Value::Object(_) => match type_of(&input) {
            Some(t) if CONTENT_TYPES.contains(&t) => Ok(vec![Step::UserInput {
                content: vec![parse_content(input, "input")?],
            }]),
            Some(t) if STEP_TYPES.contains(&t) => Ok(vec![parse_step(input, "input")?]),
            None if input.get("role").is_some() || input.get("content").is_some() => {
                Ok(vec![parse_legacy_turn(input, "input")?])
            }
            Some(t) => Err(ApiError::bad_request(format!(
                "unsupported input type {t:?}"
            ))),
            None => Err(ApiError::bad_request(
                "`input` object needs a `type` (a content or step type)",
            )),
        },
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ApiError::bad_request("`input` must not be empty"));
            }
            let kinds: Vec<&str> = items
                .iter()
                .enumerate()
                .map(|(i, v)| match (v, type_of(v)) {
                    (Value::Object(_), Some(t)) if CONTENT_TYPES.contains(&t) => Ok("content"),
                    (Value::Object(_), Some(t)) if STEP_TYPES.contains(&t) => Ok("step"),
                    (Value::Object(o), None)
                        if o.contains_key("role") || o.contains_key("content") =>
                    {
                        Ok("turn")
                    }
                    (Value::Object(_), Some(t)) => Err(ApiError::bad_request(format!(
                        "unsupported type {t:?} at input[{i}]"
                    ))),
                    (Value::String(_), _) => Ok("content"),
                    _ => Err(ApiError::bad_request(format!(
                        "input[{i}] must be a content object or a step"
                    ))),
                })
                .collect::<Result<_, _>>()?;
            if kinds.iter().all(|k| *k == "content") {
                let content = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(Content::text(s)),
                        v => parse_content(v, &format!("input[{i}]")),
                    })
                    .collect::<Result<_, _>>()?;
                return Ok(vec![Step::UserInput { content }]);
            }
            if kinds.contains(&"content") {
                return Err(ApiError::bad_request(
                    "`input` mixes content objects and steps; send either a list of content or a list of steps",
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let at = format!("input[{i}]");
                    if type_of(&v).is_some() {
                        parse_step(v, &at)
                    } else {
                        parse_legacy_turn(v, &at)
                    }
                })
                .collect()
        }
        Value::Null => Err(ApiError::bad_request("`input` is required")),
        _ => Err(ApiError::bad_request(
            "`input` must be a string, a content object, a list of content or a list of steps",
        )),
    }
}

/// Reject content the model cannot take, naming the model and the modality: images and
/// video in user input need a model with a vision encoder, audio one with an audio encoder;
/// model output is text.
///
/// # Errors
/// 400 naming the model and the modality.
pub fn check_modalities(steps: &[Step], model: &str, takes: Takes) -> Result<(), ApiError> {
    for step in steps {
        let (contents, user): (&[Content], bool) = match step {
            Step::UserInput { content } => (content, true),
            Step::ModelOutput { content, .. } => (content, false),
            _ => continue,
        };
        for c in contents {
            let modality = match c {
                Content::Text { .. } => continue,
                Content::Image(_) | Content::Video(_) if user && takes.vision => continue,
                Content::Audio(_) if user && takes.audio_rate.is_some() => continue,
                // Documents in user input become text.
                Content::Document(_) if user => continue,
                Content::Image(_) => "image",
                Content::Audio(_) => "audio",
                Content::Document(_) => "document",
                Content::Video(_) => "video",
            };
            let place = if user { "" } else { " in model_output steps" };
            return Err(ApiError::bad_request(format!(
                "model {model} cannot take {modality} input{place}"
            )));
        }
    }
    Ok(())
}

/// Text as the prompt may carry it: without [`MEDIA_MARKER`], which only marks media.
fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(MEDIA_MARKER) {
        text.replace(MEDIA_MARKER, "").into()
    } else {
        text.into()
    }
}

/// Content's text alone: its media parts left out.
fn text_of(content: &[Content]) -> String {
    user_text(content, &mut std::iter::empty()).0
}

/// A user turn's text, with a [`MEDIA_MARKER`] where each piece of media goes, and those
/// pieces (from the next entries of `media`, which holds every decoded media part of the
/// timeline in order).
fn user_text(
    content: &[Content],
    media: &mut impl Iterator<Item = Expanded>,
) -> (String, Vec<Attachment>) {
    let mut parts: Vec<std::borrow::Cow<'_, str>> = Vec::new();
    let mut taken = Vec::new();
    for c in content {
        match c {
            Content::Text { text, .. } => parts.push(clean(text)),
            Content::Image(_) | Content::Audio(_) | Content::Video(_) => {
                if let Some(e) = media.next() {
                    parts.push(e.text.into());
                    taken.extend(e.media);
                }
            }
            Content::Document(_) => {}
        }
    }
    (parts.join("\n"), taken)
}

/// A function result as the text the model reads: strings as they are, content lists as
/// their text, anything else as JSON.
fn result_text(result: &Value) -> String {
    match result {
        Value::String(s) => clean(s).into_owned(),
        Value::Array(items) if items.iter().all(|i| i.get("type").is_some()) => items
            .iter()
            .map(|i| match i.get("text").and_then(Value::as_str) {
                Some(t) => clean(t).into_owned(),
                None => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => clean(&other.to_string()).into_owned(),
    }
}

/// Render a timeline of steps (history then this turn) as chat messages.
///
/// * consecutive user inputs are merged, and so are a model turn's text and calls;
/// * a `thought` whose signature is one of ours restores its reasoning onto the model turn
///   that follows; other signatures are ignored;
/// * each `function_result` is a tool message, named after its call when it names nothing.
///
/// # Errors
/// 400 when the conversation does not end with something for the model to answer.
pub fn to_messages(
    system: Option<&str>,
    steps: &[Step],
    signer: &Signer,
    media: Vec<Expanded>,
) -> Result<Vec<ChatMessage>, ApiError> {
    let mut media = media.into_iter();
    let mut out: Vec<ChatMessage> = Vec::new();
    if let Some(s) = system {
        out.push(ChatMessage::new(Role::System, clean(s)));
    }
    let mut reasoning: Option<String> = None;
    // A model turn is open while its steps (text, calls) keep coming.
    let mut model_open = false;
    let mut call_names: Vec<(String, String)> = Vec::new();
    for step in steps {
        match step {
            Step::UserInput { content } => {
                model_open = false;
                let (text, taken) = user_text(content, &mut media);
                match out.last_mut() {
                    Some(last) if last.role == Role::User => {
                        last.content.push_str("\n\n");
                        last.content.push_str(&text);
                        last.media.extend(taken);
                    }
                    _ => {
                        let mut m = ChatMessage::new(Role::User, text);
                        m.media = taken;
                        out.push(m);
                    }
                }
            }
            Step::Thought { signature, .. } => {
                if let Some(t) = signature.as_deref().and_then(|s| signer.verify(s)) {
                    reasoning = Some(clean(&t).into_owned());
                }
                model_open = false;
            }
            Step::ModelOutput { .. } | Step::FunctionCall { .. } if model_open => {
                let last = out.last_mut().expect("an open model turn exists");
                append_model(last, step, &mut call_names);
            }
            Step::ModelOutput { .. } | Step::FunctionCall { .. } => {
                let mut m = ChatMessage::new(Role::Model, "");
                m.reasoning = reasoning.take();
                append_model(&mut m, step, &mut call_names);
                out.push(m);
                model_open = true;
            }
            Step::FunctionResult {
                call_id,
                result,
                name,
                ..
            } => {
                model_open = false;
                let name = name.clone().or_else(|| {
                    call_names
                        .iter()
                        .find(|(id, _)| id == call_id)
                        .map(|(_, n)| n.clone())
                });
                out.push(ChatMessage {
                    role: Role::Tool,
                    content: result_text(result),
                    tool_call_id: Some(call_id.clone()),
                    name,
                    ..ChatMessage::default()
                });
            }
        }
    }
    match out.last() {
        Some(m) if m.role == Role::User || m.role == Role::Tool => Ok(out),
        _ => Err(ApiError::bad_request(
            "the conversation must end with a `user_input` or `function_result` step for the model to answer",
        )),
    }
}

fn append_model(m: &mut ChatMessage, step: &Step, call_names: &mut Vec<(String, String)>) {
    match step {
        Step::ModelOutput { content, .. } => {
            let text = text_of(content);
            if !m.content.is_empty() && !text.is_empty() {
                m.content.push_str("\n\n");
            }
            m.content.push_str(&text);
        }
        Step::FunctionCall {
            id,
            name,
            arguments,
        } => {
            call_names.push((id.clone(), name.clone()));
            m.tool_calls.push(ToolCall {
                id: id.clone(),
                name: name.clone(),
                arguments: if arguments.is_object() {
                    arguments.clone()
                } else {
                    json!({})
                },
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<ValidCreate, ApiError> {
        let r: CreateInteractionRequest = serde_json::from_value(v).unwrap();
        validate_create(r, SamplingDefaults::default())
    }

    #[test]
    fn four_input_forms() {
        let s = parse_input(json!("hi")).unwrap();
        assert_eq!(
            s,
            vec![Step::UserInput {
                content: vec![Content::text("hi")]
            }]
        );
        assert_eq!(
            parse_input(json!({"type": "text", "text": "hi"})).unwrap(),
            s
        );
        assert_eq!(
            parse_input(json!([{"type": "text", "text": "hi"}])).unwrap(),
            s
        );
        assert_eq!(
            parse_input(
                json!([{"type": "user_input", "content": [{"type": "text", "text": "hi"}]}])
            )
            .unwrap(),
            s
        );
        // legacy role turns
        assert_eq!(
            parse_input(json!([{"role": "user", "content": "hi"}])).unwrap(),
            s
        );
    }

    #[test]
    fn python_model_dump_history() {
        let steps = parse_input(json!([
            {"type": "user_input", "content": [{"type": "text", "text": "I have 2 dogs."}]},
            {"type": "model_output", "content": [{"type": "text", "text": "Nice", "annotations": null}], "error": null},
            {"type": "thought", "signature": null, "summary": null},
            {"type": "user_input", "content": [{"type": "text", "text": "Paws?"}]}
        ]))
        .unwrap();
        assert_eq!(steps.len(), 4);
        let msgs = to_messages(Some("sys"), &steps, &Signer::random(), Vec::new()).unwrap();
        assert_eq!(
            msgs,
            vec![
                ChatMessage::new(Role::System, "sys"),
                ChatMessage::new(Role::User, "I have 2 dogs."),
                ChatMessage::new(Role::Model, "Nice"),
                ChatMessage::new(Role::User, "Paws?"),
            ]
        );
    }

    #[test]
    fn bad_inputs() {
        for bad in [
            json!([]),
            json!(5),
            json!({"type": "bogus"}),
            json!([{"type": "text", "text": "a"}, {"type": "user_input", "content": []}]),
            json!([{"type": "text"}]),
            json!([{"type": "user_input", "content": "x", "extra": 1}, 3]),
        ] {
            assert_eq!(
                parse_input(bad.clone()).unwrap_err().status.as_u16(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn conversation_must_end_with_user() {
        let steps = parse_input(
            json!([{"type": "model_output", "content": [{"type": "text", "text": "x"}]}]),
        )
        .unwrap();
        assert!(to_messages(None, &steps, &Signer::random(), Vec::new()).is_err());
    }

    #[test]
    fn generation_config_ranges() {
        let ok = req(json!({"model": "m", "input": "x", "generation_config": {"temperature": 0, "seed": 7, "max_output_tokens": 3, "stop_sequences": ["a"], "thinking_level": "low"}})).unwrap();
        assert_eq!(ok.sampling.temperature, 0.0);
        assert_eq!(ok.sampling.seed, 7);
        // The Interactions API has no top_k: the default (Gemini's 64) always applies.
        assert_eq!(ok.sampling.top_k, 64);
        let unset = req(json!({"model": "m", "input": "x"})).unwrap();
        assert_eq!(
            (
                unset.sampling.temperature,
                unset.sampling.top_p,
                unset.sampling.top_k
            ),
            (0.7, 0.95, 64)
        );
        assert_eq!(ok.max_output_tokens, Some(3));
        for bad in [
            json!({"temperature": 3}),
            json!({"temperature": -1}),
            json!({"top_p": 1.5}),
            json!({"max_output_tokens": 0}),
            json!({"stop_sequences": [""]}),
            json!({"thinking_level": "extreme"}),
            json!({"thinking_summaries": "sometimes"}),
            json!({"tool_choice": "maybe"}),
        ] {
            let e = req(json!({"model": "m", "input": "x", "generation_config": bad.clone()}))
                .unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{bad}");
        }
    }

    #[test]
    fn top_level_rules() {
        assert!(req(json!({"input": "x"}))
            .unwrap_err()
            .message
            .contains("`model`"));
        assert!(req(json!({"model": "m"}))
            .unwrap_err()
            .message
            .contains("`input`"));
        assert!(
            req(json!({"model": "m", "input": "x", "store": false, "background": true})).is_err()
        );
        assert!(req(json!({"model": "m", "input": "x", "agent": "a"})).is_err());
        assert!(req(json!({"model": "m", "input": "x", "service_tier": "gold"})).is_err());
        assert!(req(json!({"model": "m", "input": "x", "response_format": {"type": "text", "mime_type": "text/plain"}})).is_ok());
        assert!(req(json!({"model": "m", "input": "x", "response_format": {"type": "object", "properties": {}}})).is_ok());
        let v = req(json!({"model": "models/gemini-3-flash-preview", "input": "x", "safety_settings": [], "labels": {"a": "b"}})).unwrap();
        assert_eq!(v.model, "gemini-3-flash-preview");
        assert!(v.store);
    }

    #[test]
    fn modalities_are_checked() {
        let none = Takes {
            vision: false,
            audio_rate: None,
        };
        let vision = Takes {
            vision: true,
            audio_rate: None,
        };
        let hearing = Takes {
            vision: false,
            audio_rate: Some(16_000),
        };
        let steps = parse_input(json!([{"type": "text", "text": "what"}, {"type": "image", "uri": "files/x", "mime_type": "image/png"}])).unwrap();
        let e = check_modalities(&steps, "smollm2-135m", none).unwrap_err();
        assert_eq!(e.message, "model smollm2-135m cannot take image input");
        assert!(check_modalities(&steps, "vlm", vision).is_ok());
        let audio =
            parse_input(json!([{"type": "audio", "uri": "files/x", "mime_type": "audio/wav"}]))
                .unwrap();
        let e = check_modalities(&audio, "vlm", vision).unwrap_err();
        assert_eq!(e.message, "model vlm cannot take audio input");
        assert!(check_modalities(&audio, "alm", hearing).is_ok());
        let video =
            parse_input(json!([{"type": "video", "uri": "files/x", "mime_type": "video/mp4"}]))
                .unwrap();
        let e = check_modalities(&video, "alm", hearing).unwrap_err();
        assert_eq!(e.message, "model alm cannot take video input");
        assert!(check_modalities(&video, "vlm", vision).is_ok());
        let doc =
            parse_input(json!([{"type": "document", "uri": "files/x", "mime_type": "text/plain"}]))
                .unwrap();
        assert!(check_modalities(&doc, "m", none).is_ok());
        let history = parse_input(
            json!([{"type": "user_input", "content": [{"type": "text", "text": "hi"}]},
            {"type": "model_output", "content": [{"type": "image", "uri": "files/x"}]},
            {"type": "user_input", "content": [{"type": "text", "text": "and?"}]}]),
        )
        .unwrap();
        let e = check_modalities(&history, "vlm", vision).unwrap_err();
        assert_eq!(
            e.message,
            "model vlm cannot take image input in model_output steps"
        );
    }

    #[test]
    fn media_go_where_their_parts_are() {
        let steps = parse_input(json!([
            {"type": "user_input", "content": [{"type": "text", "text": "look\u{fffc}"}, {"type": "image", "uri": "files/a"}, {"type": "text", "text": "and"}, {"type": "audio", "uri": "files/b"}]},
            {"type": "model_output", "content": [{"type": "text", "text": "ok\u{fffc}"}]},
            {"type": "user_input", "content": [{"type": "video", "uri": "files/c"}]},
            {"type": "user_input", "content": [{"type": "text", "text": "same?"}]}])).unwrap();
        let img = |v: u8| Attachment::image(localgem_core::Image::new(1, 1, vec![v, v, v]));
        let clip = Attachment::audio(localgem_core::Audio::new(16_000, vec![0.5; 16]));
        let video = Expanded {
            text: "[video]\n00:00 \u{fffc}\n[soundtrack] \u{fffc}".into(),
            media: vec![img(4).of_video(), clip.clone().of_video()],
        };
        let msgs = to_messages(
            Some("sys\u{fffc}"),
            &steps,
            &Signer::random(),
            vec![
                Expanded::one(img(1)),
                Expanded::one(clip.clone()),
                video.clone(),
            ],
        )
        .unwrap();
        assert_eq!(msgs[0].content, "sys");
        assert_eq!(msgs[1].content, "look\n\u{fffc}\nand\n\u{fffc}");
        assert_eq!(msgs[1].media, vec![img(1), clip]);
        assert_eq!(msgs[2].content, "ok");
        assert_eq!(msgs[3].content, format!("{}\n\nsame?", video.text));
        assert_eq!(msgs[3].media, video.media);
    }
}
