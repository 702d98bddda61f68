//! Wire types of the classic Gemini API: `models/{model}:generateContent`,
//! `:streamGenerateContent` and `:countTokens`, as the official SDKs and REST send them.
//!
//! The API writes field names in camelCase and accepts snake_case too (the REST surface is a
//! proto JSON mapping), so every multi-word field has its snake_case alias. Fields the API
//! defines are accepted even where this server ignores them; anything else is rejected with
//! the field's name, as the API does. Function arguments, responses and schemas stay raw
//! JSON: their keys belong to the caller.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Body of `POST /{v}/models/{model}:generateContent` and `:streamGenerateContent`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateContentRequest {
    /// The conversation, oldest first; ends with the user's turn (or function responses).
    #[serde(default)]
    pub contents: Vec<ClassicContent>,
    /// Tools the model may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// How the model uses them.
    #[serde(
        default,
        alias = "tool_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub tool_config: Option<ToolConfig>,
    /// Accepted and ignored: a local model has no safety filters.
    #[serde(
        default,
        alias = "safety_settings",
        skip_serializing_if = "Option::is_none"
    )]
    pub safety_settings: Option<Vec<Value>>,
    /// The system instruction (its parts' text).
    #[serde(
        default,
        alias = "system_instruction",
        skip_serializing_if = "Option::is_none"
    )]
    pub system_instruction: Option<ClassicContent>,
    /// Sampling and output settings.
    #[serde(
        default,
        alias = "generation_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub generation_config: Option<ClassicGenerationConfig>,
    /// Cached content (not served here: a 400 when set).
    #[serde(
        default,
        alias = "cached_content",
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_content: Option<String>,
    /// The model, when the body names it too (inside `countTokens`' `generateContentRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Value>,
    /// Accepted and ignored.
    #[serde(
        default,
        alias = "service_tier",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_tier: Option<Value>,
    /// Accepted and ignored (the answer is never kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
}

/// One turn: a role and its parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassicContent {
    /// `user` or `model` (`function` and `tool` are taken as `user`); left out for the
    /// system instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The parts, in order.
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// One part of a turn: exactly one kind of data, plus the thought flag and signature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// Text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Bytes sent inline.
    #[serde(
        default,
        alias = "inline_data",
        skip_serializing_if = "Option::is_none"
    )]
    pub inline_data: Option<Blob>,
    /// A file of the Files API (or a URL).
    #[serde(default, alias = "file_data", skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    /// A call the model made.
    #[serde(
        default,
        alias = "function_call",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_call: Option<FunctionCall>,
    /// The result of a call.
    #[serde(
        default,
        alias = "function_response",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_response: Option<FunctionResponse>,
    /// Code the model wrote (code execution; not produced here).
    #[serde(
        default,
        alias = "executable_code",
        skip_serializing_if = "Option::is_none"
    )]
    pub executable_code: Option<Value>,
    /// Output of executed code (not produced here).
    #[serde(
        default,
        alias = "code_execution_result",
        skip_serializing_if = "Option::is_none"
    )]
    pub code_execution_result: Option<Value>,
    /// Whether this part is the model's reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// Opaque signature of the reasoning before this part (base64).
    #[serde(
        default,
        alias = "thought_signature",
        skip_serializing_if = "Option::is_none"
    )]
    pub thought_signature: Option<String>,
    /// Video clipping (accepted and ignored).
    #[serde(
        default,
        alias = "video_metadata",
        skip_serializing_if = "Option::is_none"
    )]
    pub video_metadata: Option<Value>,
    /// Per-part media resolution (accepted and ignored).
    #[serde(
        default,
        alias = "media_resolution",
        skip_serializing_if = "Option::is_none"
    )]
    pub media_resolution: Option<Value>,
    /// Caller metadata (accepted and ignored).
    #[serde(
        default,
        alias = "part_metadata",
        skip_serializing_if = "Option::is_none"
    )]
    pub part_metadata: Option<Value>,
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Part {
            text: Some(text.into()),
            ..Part::default()
        }
    }
}

/// Inline bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    /// MIME type.
    #[serde(default, alias = "mime_type")]
    pub mime_type: String,
    /// Base64 of the bytes.
    #[serde(default)]
    pub data: String,
    /// Display name (accepted and ignored).
    #[serde(
        default,
        alias = "display_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
}

/// A reference to a file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    /// MIME type (optional; the file's own when left out).
    #[serde(default, alias = "mime_type", skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The file's `uri` as the Files API gave it.
    #[serde(default, alias = "file_uri")]
    pub file_uri: String,
    /// Display name (accepted and ignored).
    #[serde(
        default,
        alias = "display_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
}

/// A function call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCall {
    /// Call id, echoed by the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Function name.
    #[serde(default)]
    pub name: String,
    /// Arguments object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

/// A function's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse {
    /// The id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Function name.
    #[serde(default)]
    pub name: String,
    /// The result object (`{"result": …}` or `{"error": …}` by convention).
    #[serde(default)]
    pub response: Value,
    /// Media parts of the result (accepted; their text is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<Value>>,
    /// Streaming function responses (accepted and ignored).
    #[serde(
        default,
        alias = "will_continue",
        skip_serializing_if = "Option::is_none"
    )]
    pub will_continue: Option<bool>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Value>,
}

/// A tool: function declarations (other built-in tools are refused).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    /// Functions the model may call.
    #[serde(
        default,
        alias = "function_declarations",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_declarations: Option<Vec<FunctionDeclaration>>,
    /// Any other tool (`googleSearch`, `codeExecution`, …), by name.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// A function the model may call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Arguments in the API's Schema (OpenAPI subset, upper-case types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Arguments as JSON Schema.
    #[serde(
        default,
        alias = "parameters_json_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub parameters_json_schema: Option<Value>,
    /// The result's Schema (accepted and ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// The result's JSON Schema (accepted and ignored).
    #[serde(
        default,
        alias = "response_json_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_json_schema: Option<Value>,
    /// Blocking behaviour (accepted and ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Value>,
}

/// `toolConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    /// Function calling mode.
    #[serde(
        default,
        alias = "function_calling_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_calling_config: Option<FunctionCallingConfig>,
    /// Location context for grounding tools (accepted and ignored).
    #[serde(
        default,
        alias = "retrieval_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub retrieval_config: Option<Value>,
    /// Accepted and ignored.
    #[serde(
        default,
        alias = "include_server_side_tool_invocations",
        skip_serializing_if = "Option::is_none"
    )]
    pub include_server_side_tool_invocations: Option<Value>,
}

/// `toolConfig.functionCallingConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    /// `AUTO`, `ANY`, `NONE` or `VALIDATED` (`MODE_UNSPECIFIED` is `AUTO`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// With `ANY` or `VALIDATED`: the functions the model may call.
    #[serde(
        default,
        alias = "allowed_function_names",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_function_names: Option<Vec<String>>,
    /// Streamed arguments (accepted and ignored).
    #[serde(
        default,
        alias = "stream_function_call_arguments",
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_function_call_arguments: Option<bool>,
}

/// `generationConfig`: every field the API defines is accepted; the ones a local model
/// cannot honour get a 400 when set to something other than their default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassicGenerationConfig {
    /// Strings that end the answer (never part of it).
    #[serde(
        default,
        alias = "stop_sequences",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_sequences: Option<Vec<String>>,
    /// `text/plain`, `application/json` or `text/x.enum`.
    #[serde(
        default,
        alias = "response_mime_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_mime_type: Option<String>,
    /// The answer's Schema (OpenAPI subset).
    #[serde(
        default,
        alias = "response_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_schema: Option<Value>,
    /// The answer's JSON Schema.
    #[serde(
        default,
        alias = "response_json_schema",
        alias = "_responseJsonSchema",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_json_schema: Option<Value>,
    /// Output modalities: only `TEXT` here.
    #[serde(
        default,
        alias = "response_modalities",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_modalities: Option<Vec<String>>,
    /// Answers per request: 1.
    #[serde(
        default,
        alias = "candidate_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub candidate_count: Option<i64>,
    /// Output cap in tokens.
    #[serde(
        default,
        alias = "max_output_tokens",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_output_tokens: Option<i64>,
    /// Sampling temperature, 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus mass.
    #[serde(default, alias = "top_p", skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Keep only the k likeliest tokens.
    #[serde(default, alias = "top_k", skip_serializing_if = "Option::is_none")]
    pub top_k: Option<f64>,
    /// Sampler seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Accepted; only 0 is honoured.
    #[serde(
        default,
        alias = "presence_penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub presence_penalty: Option<f64>,
    /// Accepted; only 0 is honoured.
    #[serde(
        default,
        alias = "frequency_penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub frequency_penalty: Option<f64>,
    /// Log probabilities (not served: a 400 when true).
    #[serde(
        default,
        alias = "response_logprobs",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_logprobs: Option<bool>,
    /// Top candidates' log probabilities (not served: a 400 when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<i64>,
    /// Accepted and ignored.
    #[serde(
        default,
        alias = "enable_enhanced_civic_answers",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_enhanced_civic_answers: Option<bool>,
    /// Speech output (not served: a 400 when set).
    #[serde(
        default,
        alias = "speech_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub speech_config: Option<Value>,
    /// Reasoning settings.
    #[serde(
        default,
        alias = "thinking_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub thinking_config: Option<ThinkingConfig>,
    /// Image output (not served: a 400 when set).
    #[serde(
        default,
        alias = "image_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_config: Option<Value>,
    /// Accepted and ignored.
    #[serde(
        default,
        alias = "media_resolution",
        skip_serializing_if = "Option::is_none"
    )]
    pub media_resolution: Option<Value>,
    /// Accepted and ignored.
    #[serde(
        default,
        alias = "audio_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub audio_timestamp: Option<bool>,
    /// Accepted and ignored.
    #[serde(
        default,
        alias = "enable_affective_dialog",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_affective_dialog: Option<bool>,
    /// Accepted and ignored.
    #[serde(
        default,
        alias = "routing_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub routing_config: Option<Value>,
    /// Accepted and ignored.
    #[serde(
        default,
        alias = "model_selection_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub model_selection_config: Option<Value>,
}

/// `generationConfig.thinkingConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThinkingConfig {
    /// Return the reasoning as `thought: true` parts.
    #[serde(
        default,
        alias = "include_thoughts",
        skip_serializing_if = "Option::is_none"
    )]
    pub include_thoughts: Option<bool>,
    /// Reasoning tokens; 0 turns reasoning off, -1 is the model's own choice.
    #[serde(
        default,
        alias = "thinking_budget",
        skip_serializing_if = "Option::is_none"
    )]
    pub thinking_budget: Option<i64>,
    /// `MINIMAL`, `LOW`, `MEDIUM` or `HIGH` (either case).
    #[serde(
        default,
        alias = "thinking_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub thinking_level: Option<String>,
}

/// A response of `generateContent`, and each chunk of `streamGenerateContent`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    /// One candidate.
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    /// Token counts (on every chunk; complete on the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    /// The model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Id of this response (the same on every chunk of a stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
}

/// A candidate answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// The answer so far (this chunk's parts, in a stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ClassicContent>,
    /// `STOP`, `MAX_TOKENS`, … on the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Why it stopped, when that needs words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_message: Option<String>,
    /// Always 0.
    #[serde(default)]
    pub index: u32,
}

/// Token counts of a response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Prompt tokens (the whole conversation sent).
    pub prompt_token_count: u64,
    /// Of those, tokens whose state was reused from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u64>,
    /// Answer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_token_count: Option<u64>,
    /// Reasoning tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u64>,
    /// Prompt + answer + reasoning.
    pub total_token_count: u64,
    /// Prompt tokens by modality.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_tokens_details: Vec<ModalityTokenCount>,
}

/// Tokens of one modality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModalityTokenCount {
    /// `TEXT`, `IMAGE`, `AUDIO`, `VIDEO` or `DOCUMENT`.
    pub modality: String,
    /// Tokens.
    pub token_count: u64,
}

/// Body of `POST /{v}/models/{model}:countTokens`: `contents`, or a whole
/// `generateContentRequest` (with its system instruction and tools).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CountTokensRequest {
    /// The conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<Vec<ClassicContent>>,
    /// A whole request to count.
    #[serde(
        default,
        alias = "generate_content_request",
        skip_serializing_if = "Option::is_none"
    )]
    pub generate_content_request: Option<GenerateContentRequest>,
}

/// Response of `countTokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountTokensResponse {
    /// Prompt tokens as the model sees them (chat template included).
    pub total_tokens: u64,
    /// By modality.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_tokens_details: Vec<ModalityTokenCount>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn camel_and_snake_case_both_parse() {
        let camel: GenerateContentRequest = serde_json::from_value(json!({
            "contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {"maxOutputTokens": 5, "thinkingConfig": {"thinkingBudget": 0}},
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}
        }))
        .unwrap();
        let snake: GenerateContentRequest = serde_json::from_value(json!({
            "contents": [{"role": "user", "parts": [{"inline_data": {"mime_type": "image/png", "data": "AA=="}}]}],
            "system_instruction": {"parts": [{"text": "be brief"}]},
            "generation_config": {"max_output_tokens": 5, "thinking_config": {"thinking_budget": 0}},
            "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["f"]}}
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&camel).unwrap(),
            serde_json::to_value(&snake).unwrap()
        );
        assert_eq!(
            camel.contents[0].parts[0]
                .inline_data
                .as_ref()
                .unwrap()
                .mime_type,
            "image/png"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e =
            serde_json::from_value::<GenerateContentRequest>(json!({"contentz": []})).unwrap_err();
        assert!(e.to_string().contains("contentz"), "{e}");
        let e = serde_json::from_value::<ClassicGenerationConfig>(json!({"temprature": 1}))
            .unwrap_err();
        assert!(e.to_string().contains("temprature"), "{e}");
    }

    #[test]
    fn responses_are_camel_case() {
        let r = GenerateContentResponse {
            candidates: vec![Candidate {
                content: Some(ClassicContent {
                    role: Some("model".into()),
                    parts: vec![Part::text("hi")],
                }),
                finish_reason: Some("STOP".into()),
                finish_message: None,
                index: 0,
            }],
            usage_metadata: Some(UsageMetadata {
                prompt_token_count: 3,
                candidates_token_count: Some(1),
                total_token_count: 4,
                ..UsageMetadata::default()
            }),
            model_version: Some("m".into()),
            response_id: Some("r".into()),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]},
                                   "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4},
                   "modelVersion": "m", "responseId": "r"})
        );
    }
}
