//! A `generateContent` request → the validated request the Interactions API runs
//! ([`ValidCreate`], never stored), so both surfaces share one engine path: content
//! resolution, chat rendering, constrained decoding, thought signatures, tenancy and limits.
//!
//! The history a client resends becomes steps: user parts become `user_input` content,
//! `functionResponse` parts `function_result` steps, a model turn's text (split over parts
//! and over the per-chunk turns a streamed chat keeps) one `model_output` step, its calls
//! `function_call` steps, and a `thoughtSignature` the `thought` step it stands for, which
//! restores the reasoning when it is one of ours.

use localgem_core::{FunctionDecl, OutputFormat, Thinking, ToolMode};
use localgem_wire::classic::{
    ClassicContent, ClassicGenerationConfig, FunctionCallingConfig, GenerateContentRequest, Part,
    ThinkingConfig, Tool,
};
use localgem_wire::{Content, Media, Step};
use serde_json::{json, Value};

use super::schema::to_json_schema;
use crate::error::ApiError;
use crate::validate::{parse_tools, thought_budget, SamplingDefaults, Surface, ValidCreate};

/// Stop strings one request may set.
const MAX_STOP_SEQUENCES: usize = 16;
/// Thinking levels, lower-cased.
const LEVELS: [&str; 4] = ["minimal", "low", "medium", "high"];
/// Tools of the API that a local model cannot run, by their JSON names.
const BUILT_IN_TOOLS: [&str; 10] = [
    "googleSearch",
    "googleSearchRetrieval",
    "codeExecution",
    "urlContext",
    "fileSearch",
    "googleMaps",
    "computerUse",
    "enterpriseWebSearch",
    "retrieval",
    "mcpServers",
];

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// Convert a parsed request for `model` (the path's model id).
///
/// # Errors
/// 400 naming the field for anything the API rejects or this server cannot do.
pub fn convert(
    req: GenerateContentRequest,
    model: &str,
    stream: bool,
    defaults: SamplingDefaults,
) -> Result<ValidCreate, ApiError> {
    if req.cached_content.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(bad(
            "`cachedContent` is not served here: the server keeps the KV state of repeated \
             prompt prefixes by itself; send the whole conversation in `contents`",
        ));
    }
    let input = to_steps(req.contents)?;
    let system_instruction = match req.system_instruction {
        Some(s) => system_text(s)?,
        None => None,
    };
    let mut tools = to_functions(req.tools.unwrap_or_default())?;
    let tool_mode = tool_mode(
        req.tool_config
            .and_then(|c| c.function_calling_config)
            .unwrap_or_default(),
        &mut tools,
    )?;
    let cfg = req.generation_config.unwrap_or_default();
    let format = output_format(&cfg)?;
    let (thinking, include_thoughts) = thinking(cfg.thinking_config.as_ref())?;
    let sampling = sampling(&cfg, defaults)?;
    let max_output_tokens = match cfg.max_output_tokens {
        Some(n) if n < 1 => {
            return Err(bad(format!(
                "`generationConfig.maxOutputTokens` must be at least 1; got {n}"
            )))
        }
        n => n.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    };
    let stop_sequences = cfg.stop_sequences.clone().unwrap_or_default();
    if stop_sequences.len() > MAX_STOP_SEQUENCES || stop_sequences.iter().any(String::is_empty) {
        return Err(bad(format!(
            "`generationConfig.stopSequences` holds 1 to {MAX_STOP_SEQUENCES} non-empty strings"
        )));
    }
    unsupported(&cfg)?;
    Ok(ValidCreate {
        model: model.trim().trim_start_matches("models/").to_owned(),
        input,
        system_instruction,
        sampling,
        stop_sequences,
        max_output_tokens,
        previous_interaction_id: None,
        store: false,
        stream,
        background: false,
        tools,
        tool_mode,
        format,
        thinking,
        thinking_summaries: include_thoughts,
        surface: Surface::GenerateContent,
    })
}

/// Settings a local model cannot honour: a 400 when they ask for something.
fn unsupported(cfg: &ClassicGenerationConfig) -> Result<(), ApiError> {
    if cfg.candidate_count.is_some_and(|n| n != 1) {
        return Err(bad(
            "`generationConfig.candidateCount` must be 1: this server answers with one candidate",
        ));
    }
    if let Some(m) = cfg
        .response_modalities
        .iter()
        .flatten()
        .find(|m| !m.eq_ignore_ascii_case("text") && m.as_str() != "MODALITY_UNSPECIFIED")
    {
        return Err(bad(format!(
            "response modality {m:?} is not supported: this server answers with text"
        )));
    }
    for (name, v) in [
        ("presencePenalty", cfg.presence_penalty),
        ("frequencyPenalty", cfg.frequency_penalty),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(bad(format!(
                "`generationConfig.{name}` is not supported; leave it out or set 0"
            )));
        }
    }
    if cfg.response_logprobs == Some(true) || cfg.logprobs.is_some_and(|n| n > 0) {
        return Err(bad("log probabilities are not returned by this server"));
    }
    for (name, v) in [
        ("speechConfig", &cfg.speech_config),
        ("imageConfig", &cfg.image_config),
    ] {
        if v.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(bad(format!(
                "`generationConfig.{name}` is not supported: this server generates text only"
            )));
        }
    }
    Ok(())
}

fn sampling(
    cfg: &ClassicGenerationConfig,
    defaults: SamplingDefaults,
) -> Result<localgem_core::Sampling, ApiError> {
    let temperature = match cfg.temperature {
        Some(t) if !(0.0..=2.0).contains(&t) => {
            return Err(bad(format!(
                "`generationConfig.temperature` must be between 0 and 2; got {t}"
            )))
        }
        Some(t) => t as f32,
        None => defaults.temperature,
    };
    let top_p = match cfg.top_p {
        Some(p) if !(0.0..=1.0).contains(&p) => {
            return Err(bad(format!(
                "`generationConfig.topP` must be between 0 and 1; got {p}"
            )))
        }
        Some(p) => p as f32,
        None => defaults.top_p,
    };
    let top_k = match cfg.top_k {
        Some(k) if !(k >= 0.0 && k.is_finite()) => {
            return Err(bad(format!(
                "`generationConfig.topK` must be a non-negative integer; got {k}"
            )))
        }
        Some(k) => k.round().min(f64::from(u32::MAX)) as u32,
        None => defaults.top_k,
    };
    Ok(localgem_core::Sampling {
        temperature,
        top_p,
        top_k,
        // The API's seed is int32; any integer is taken and mapped onto 32 bits.
        seed: cfg.seed.map_or_else(rand::random::<u32>, |s| s as u32),
    })
}

fn output_format(cfg: &ClassicGenerationConfig) -> Result<OutputFormat, ApiError> {
    let schema = match (&cfg.response_schema, &cfg.response_json_schema) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "set `responseSchema` or `responseJsonSchema`, not both",
            ))
        }
        (Some(s), None) => Some(to_json_schema(s, "generationConfig.responseSchema")?),
        (None, Some(s)) => Some(to_json_schema(s, "generationConfig.responseJsonSchema")?),
        (None, None) => None,
    };
    match (cfg.response_mime_type.as_deref(), schema) {
        (Some("application/json"), schema) => Ok(OutputFormat::JsonSchema(
            schema.unwrap_or_else(|| json!({})),
        )),
        (None | Some("text/plain" | ""), None) => Ok(OutputFormat::Text),
        (None | Some("text/plain" | ""), Some(_)) => Err(bad(
            "a response schema needs `responseMimeType: \"application/json\"`",
        )),
        (Some("text/x.enum"), _) => Err(bad(
            "`responseMimeType` \"text/x.enum\" is not supported; use \"application/json\" \
             with a schema of `{\"type\": \"STRING\", \"enum\": [...]}`",
        )),
        (Some(other), _) => Err(bad(format!(
            "`responseMimeType` {other:?} is not supported; use \"text/plain\" or \"application/json\""
        ))),
    }
}

/// Reasoning settings, and whether thoughts are returned.
fn thinking(cfg: Option<&ThinkingConfig>) -> Result<(Thinking, bool), ApiError> {
    let Some(cfg) = cfg else {
        return Ok((Thinking::default(), false));
    };
    let budget = match (cfg.thinking_budget, cfg.thinking_level.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "set `thinkingConfig.thinkingBudget` or `thinkingLevel`, not both",
            ))
        }
        (Some(-1) | None, None) => None,
        (Some(n), None) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        (Some(n), None) => {
            return Err(bad(format!(
                "`thinkingConfig.thinkingBudget` must be -1 (the model decides), 0 (off) or a \
                 positive number of tokens; got {n}"
            )))
        }
        (None, Some(level)) => {
            let lower = level.to_ascii_lowercase();
            if lower == "thinking_level_unspecified" {
                None
            } else if LEVELS.contains(&lower.as_str()) {
                Some(thought_budget(&lower))
            } else {
                return Err(bad(format!(
                    "{level:?} is not a thinking level; use MINIMAL, LOW, MEDIUM or HIGH"
                )));
            }
        }
    };
    Ok((Thinking { budget }, cfg.include_thoughts == Some(true)))
}

/// Function declarations, as the Interactions API's `function` tools (whose checks they
/// pass through: names, duplicates, schema objects).
fn to_functions(tools: Vec<Tool>) -> Result<Vec<FunctionDecl>, ApiError> {
    let mut flat = Vec::new();
    for (i, tool) in tools.into_iter().enumerate() {
        if let Some(name) = tool.other.keys().next() {
            let squash = |s: &str| s.replace('_', "").to_ascii_lowercase();
            let known = BUILT_IN_TOOLS.iter().any(|b| squash(b) == squash(name));
            return Err(bad(if known {
                format!(
                    "tools[{i}]: `{name}` is not available on this server; declare functions \
                     with `functionDeclarations`"
                )
            } else {
                format!("tools[{i}]: unknown tool `{name}`")
            }));
        }
        for (j, f) in tool
            .function_declarations
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let at = format!("tools[{i}].functionDeclarations[{j}]");
            let parameters = match (f.parameters, f.parameters_json_schema) {
                (Some(_), Some(_)) => {
                    return Err(bad(format!(
                        "{at}: set `parameters` or `parametersJsonSchema`, not both"
                    )))
                }
                (Some(p), None) => Some(to_json_schema(&p, &format!("{at}.parameters"))?),
                (None, Some(p)) => Some(to_json_schema(&p, &format!("{at}.parametersJsonSchema"))?),
                (None, None) => None,
            };
            let mut decl = json!({"type": "function", "name": f.name});
            if let Some(d) = f.description {
                decl["description"] = Value::String(d);
            }
            if let Some(p) = parameters {
                decl["parameters"] = p;
            }
            flat.push(decl);
        }
    }
    parse_tools(flat)
}

fn tool_mode(
    cfg: FunctionCallingConfig,
    tools: &mut Vec<FunctionDecl>,
) -> Result<ToolMode, ApiError> {
    let mode = match cfg
        .mode
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("AUTO" | "MODE_UNSPECIFIED") => ToolMode::Auto,
        Some("ANY") => ToolMode::Any,
        Some("NONE") => ToolMode::None,
        Some("VALIDATED") => ToolMode::Validated,
        Some(other) => {
            return Err(bad(format!(
                "`toolConfig.functionCallingConfig.mode` must be AUTO, ANY, NONE or VALIDATED; got {other:?}"
            )))
        }
    };
    let names = cfg.allowed_function_names.unwrap_or_default();
    if let Some(n) = names.iter().find(|n| !tools.iter().any(|t| &t.name == *n)) {
        return Err(bad(format!(
            "`allowedFunctionNames` names {n:?}, which is not among the declared functions"
        )));
    }
    if !names.is_empty() {
        tools.retain(|t| names.contains(&t.name));
    }
    if matches!(mode, ToolMode::Any | ToolMode::Validated) && tools.is_empty() {
        return Err(bad(
            "function calling mode ANY or VALIDATED needs declared functions",
        ));
    }
    Ok(mode)
}

fn system_text(content: ClassicContent) -> Result<Option<String>, ApiError> {
    let mut texts = Vec::new();
    for (j, p) in content.parts.into_iter().enumerate() {
        match p.text {
            Some(t) => texts.push(t),
            None => return Err(bad(format!("systemInstruction.parts[{j}] must be text"))),
        }
    }
    let text = texts.join("\n");
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// The media kind of a MIME type, as the Interactions API's content types.
fn media(mime: Option<&str>, m: Media) -> Content {
    match mime.unwrap_or("") {
        t if t.starts_with("image/") => Content::Image(m),
        t if t.starts_with("audio/") => Content::Audio(m),
        t if t.starts_with("video/") => Content::Video(m),
        _ => Content::Document(m),
    }
}

/// What a part holds, by the API's field names (for messages).
fn kinds(p: &Part) -> Vec<&'static str> {
    [
        (p.text.is_some(), "text"),
        (p.inline_data.is_some(), "inlineData"),
        (p.file_data.is_some(), "fileData"),
        (p.function_call.is_some(), "functionCall"),
        (p.function_response.is_some(), "functionResponse"),
        (p.executable_code.is_some(), "executableCode"),
        (p.code_execution_result.is_some(), "codeExecutionResult"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

/// Builds the step timeline from turns.
#[derive(Default)]
struct Timeline {
    steps: Vec<Step>,
    /// The user content being gathered.
    user: Vec<Content>,
    /// Calls not yet answered: id and name.
    open_calls: Vec<(String, String)>,
    /// The last step is model text that the next text part continues.
    text_open: bool,
}

impl Timeline {
    fn flush_user(&mut self) {
        if !self.user.is_empty() {
            self.steps.push(Step::UserInput {
                content: std::mem::take(&mut self.user),
            });
        }
    }

    fn user_part(&mut self, p: Part, at: &str) -> Result<(), ApiError> {
        self.text_open = false;
        if let Some(t) = p.text {
            self.user.push(Content::text(t));
        } else if let Some(b) = p.inline_data {
            if b.data.is_empty() {
                return Err(bad(format!("{at}.inlineData.data is empty")));
            }
            let mime = Some(b.mime_type).filter(|m| !m.is_empty());
            self.user.push(media(
                mime.as_deref(),
                Media {
                    data: Some(b.data),
                    mime_type: mime.clone(),
                    ..Media::default()
                },
            ));
        } else if let Some(f) = p.file_data {
            if f.file_uri.is_empty() {
                return Err(bad(format!("{at}.fileData.fileUri is required")));
            }
            let kind = f.mime_type.clone();
            self.user.push(media(
                kind.as_deref(),
                Media {
                    uri: Some(f.file_uri),
                    mime_type: f.mime_type,
                    ..Media::default()
                },
            ));
        } else if let Some(r) = p.function_response {
            self.flush_user();
            let call_id = match r.id.filter(|id| !id.is_empty()) {
                Some(id) => {
                    self.open_calls.retain(|(open, _)| *open != id);
                    id
                }
                None => match self.open_calls.iter().position(|(_, n)| *n == r.name) {
                    Some(i) => self.open_calls.remove(i).0,
                    None => format!("call_{}", self.steps.len()),
                },
            };
            let is_error = r
                .response
                .as_object()
                .is_some_and(|o| o.len() == 1 && o.contains_key("error"));
            self.steps.push(Step::FunctionResult {
                call_id,
                result: r.response,
                name: Some(r.name).filter(|n| !n.is_empty()),
                is_error: is_error.then_some(true),
            });
        } else if p.thought_signature.is_none() {
            return Err(unusable(&p, at));
        }
        Ok(())
    }

    fn model_part(&mut self, p: Part, at: &str) -> Result<(), ApiError> {
        self.flush_user();
        if let Some(sig) = &p.thought_signature {
            self.steps.push(Step::Thought {
                signature: Some(sig.clone()),
                summary: None,
            });
            self.text_open = false;
        }
        if p.thought == Some(true) {
            // The reasoning itself comes back through its signature.
            return Ok(());
        }
        if let Some(t) = p.text {
            match self.steps.last_mut() {
                Some(Step::ModelOutput { content, .. }) if self.text_open => {
                    if let Some(Content::Text { text, .. }) = content.first_mut() {
                        text.push_str(&t);
                    }
                }
                _ => {
                    self.steps.push(Step::ModelOutput {
                        content: vec![Content::text(t)],
                        error: None,
                    });
                    self.text_open = true;
                }
            }
        } else if let Some(c) = p.function_call {
            self.text_open = false;
            if c.name.is_empty() {
                return Err(bad(format!("{at}.functionCall.name is required")));
            }
            let id =
                c.id.filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{}", self.steps.len()));
            self.open_calls.push((id.clone(), c.name.clone()));
            let arguments = match c.args {
                None | Some(Value::Null) => json!({}),
                Some(a @ Value::Object(_)) => a,
                Some(_) => return Err(bad(format!("{at}.functionCall.args must be an object"))),
            };
            self.steps.push(Step::FunctionCall {
                id,
                name: c.name,
                arguments,
            });
        } else if p.inline_data.is_some() || p.file_data.is_some() {
            return Err(bad(format!(
                "{at}: media in a model turn is not supported; this server's models answer with text"
            )));
        } else if p.thought_signature.is_none() {
            return Err(unusable(&p, at));
        }
        Ok(())
    }
}

fn unusable(p: &Part, at: &str) -> ApiError {
    match kinds(p).as_slice() {
        [] => bad(format!(
            "{at} holds no data: set one of text, inlineData, fileData, functionCall or functionResponse"
        )),
        [k, ..] => bad(format!("{at}: `{k}` parts are not supported by this server")),
    }
}

/// Turns → steps.
///
/// # Errors
/// 400 for an empty conversation, an unknown role, a part with no or several kinds of data,
/// or a conversation that does not end with the user's turn.
pub fn to_steps(contents: Vec<ClassicContent>) -> Result<Vec<Step>, ApiError> {
    if contents.is_empty() {
        return Err(bad("`contents` is required and must not be empty"));
    }
    let mut t = Timeline::default();
    for (i, c) in contents.into_iter().enumerate() {
        let model = match c.role.as_deref() {
            None | Some("" | "user" | "function" | "tool") => false,
            Some("model") => true,
            Some(other) => {
                return Err(bad(format!(
                    "contents[{i}].role must be \"user\" or \"model\"; got {other:?}"
                )))
            }
        };
        for (j, p) in c.parts.into_iter().enumerate() {
            let at = format!("contents[{i}].parts[{j}]");
            if kinds(&p).len() > 1 {
                return Err(bad(format!(
                    "{at} sets {}: a part holds one kind of data",
                    kinds(&p).join(" and ")
                )));
            }
            if model {
                t.model_part(p, &at)?;
            } else {
                t.user_part(p, &at)?;
            }
        }
    }
    t.flush_user();
    match t.steps.last() {
        Some(Step::UserInput { .. } | Step::FunctionResult { .. }) => Ok(t.steps),
        _ => Err(bad(
            "the last of `contents` must be the user's turn (text, media or functionResponse \
             parts) for the model to answer",
        )),
    }
}

#[cfg(test)]
mod tests;
