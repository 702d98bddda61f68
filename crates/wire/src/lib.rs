//! Wire types of the Gemini Interactions API (`steps` schema, revision 2026-05-20).
//!
//! These are the exact JSON shapes the official SDKs send and parse: snake_case throughout,
//! `type`-discriminated steps and content, `event_type`-discriminated stream events, and the
//! `{"error":{"message","code"}}` envelope. They hold no behaviour, so a Rust client can share
//! them with the server.

pub mod classic;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Body of `POST /{v}/interactions`.
///
/// Every field the spec lists is accepted; anything else is rejected (`deny_unknown_fields`),
/// as the live API does. `input` stays a raw JSON value because it has four accepted forms
/// (string, content, content list, step list) that are validated with precise messages later.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInteractionRequest {
    /// Model id, e.g. `gemini-3-flash-preview`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Agent id (agent interactions; not served by a local model server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Agent configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<Value>,
    /// The input: string, content object, content list or step list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// System instruction, a plain string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<String>,
    /// Sampling and generation settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    /// Tool declarations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// Structured output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Deprecated MIME type of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    /// Deprecated response modalities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_modalities: Option<Vec<String>>,
    /// Continue the conversation of this stored interaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_interaction_id: Option<String>,
    /// Keep the interaction (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// Answer as a server-sent event stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Run in the background.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// Continuation token from a `requires_continuation` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation_token: Option<String>,
    /// `flex`, `standard`, `priority` or `deferred`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Safety settings (accepted and ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_settings: Option<Value>,
    /// Labels (accepted and ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Value>,
    /// Deprecated cached content name (accepted and ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content: Option<String>,
    /// Agent environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Value>,
    /// Webhook configuration (accepted and ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_config: Option<Value>,
}

/// `generation_config` of a create request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationConfig {
    /// Sampling temperature; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Random seed; the same seed gives the same output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Strings that end generation; never part of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Output cap; hitting it gives `status: "incomplete"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<i64>,
    /// `minimal`, `low`, `medium`, `high` or `xhigh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<String>,
    /// `auto` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_summaries: Option<String>,
    /// Tool choice mode or allowed-tools object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Image generation settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<Value>,
    /// Speech generation settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speech_config: Option<Value>,
    /// Video generation settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_config: Option<Value>,
    /// Transcription settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription_config: Option<Value>,
}

/// A content object, discriminated by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Citations and other annotations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        annotations: Option<Vec<Value>>,
    },
    /// An image.
    Image(Media),
    /// Audio.
    Audio(Media),
    /// A document (PDF, text, …).
    Document(Media),
    /// A video.
    Video(Media),
}

impl Content {
    /// A text content without annotations.
    pub fn text(text: impl Into<String>) -> Self {
        Content::Text {
            text: text.into(),
            annotations: None,
        }
    }
}

/// The fields shared by media content objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Media {
    /// Base64 data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// File URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Other fields (`resolution`, `sample_rate`, …), kept as sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// One step of an interaction's timeline, discriminated by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    /// What the user said.
    UserInput {
        /// The user's content.
        #[serde(default)]
        content: Vec<Content>,
    },
    /// What the model answered.
    ModelOutput {
        /// The answer.
        #[serde(default)]
        content: Vec<Content>,
        /// Error detail, if generation of this step failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<Value>,
    },
    /// The model's reasoning.
    Thought {
        /// Opaque signature that restores the reasoning.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        /// Reasoning summary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<Vec<Content>>,
    },
    /// A client-side tool call requested by the model.
    FunctionCall {
        /// Call id, echoed by the result.
        id: String,
        /// Function name.
        name: String,
        /// Arguments object.
        #[serde(default)]
        arguments: Value,
    },
    /// The client's answer to a function call.
    FunctionResult {
        /// The id of the call this answers.
        call_id: String,
        /// The result: object, string or content list.
        result: Value,
        /// Function name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Whether the result is an error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
}

/// Status of an interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Generation is running.
    InProgress,
    /// Waiting for function results.
    RequiresAction,
    /// Finished normally.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled by the client.
    Cancelled,
    /// Stopped at an output cap.
    Incomplete,
    /// Budget exceeded.
    BudgetExceeded,
    /// Queued.
    Queued,
    /// Needs a continuation request.
    RequiresContinuation,
}

impl Status {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::RequiresAction => "requires_action",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Incomplete => "incomplete",
            Status::BudgetExceeded => "budget_exceeded",
            Status::Queued => "queued",
            Status::RequiresContinuation => "requires_continuation",
        }
    }

    /// Parse the wire string.
    pub fn parse(s: &str) -> Option<Status> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }

    /// Whether no further change happens to an interaction in this status.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Status::InProgress | Status::Queued | Status::RequiresContinuation
        )
    }
}

/// Token count for one modality.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModalityTokens {
    /// `text`, `image`, `audio`, `video` or `document`.
    pub modality: String,
    /// Token count.
    pub tokens: u64,
}

/// Token usage of an interaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Prompt tokens (history included).
    #[serde(default)]
    pub total_input_tokens: u64,
    /// Generated answer tokens.
    #[serde(default)]
    pub total_output_tokens: u64,
    /// Reasoning tokens (not part of output).
    #[serde(default)]
    pub total_thought_tokens: u64,
    /// Input tokens served from cache (a subset of input).
    #[serde(default)]
    pub total_cached_tokens: u64,
    /// Tokens of tool use.
    #[serde(default)]
    pub total_tool_use_tokens: u64,
    /// input + output + thought + tool use.
    #[serde(default)]
    pub total_tokens: u64,
    /// Input tokens by modality.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_tokens_by_modality: Vec<ModalityTokens>,
    /// Output tokens by modality.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_tokens_by_modality: Vec<ModalityTokens>,
}

impl Usage {
    /// Text-only usage with `total_tokens` computed.
    pub fn text(input: u64, output: u64, cached: u64) -> Self {
        let by = |n: u64| {
            if n == 0 {
                Vec::new()
            } else {
                vec![ModalityTokens {
                    modality: "text".into(),
                    tokens: n,
                }]
            }
        };
        Usage {
            total_input_tokens: input,
            total_output_tokens: output,
            total_thought_tokens: 0,
            total_cached_tokens: cached,
            total_tool_use_tokens: 0,
            total_tokens: input + output,
            input_tokens_by_modality: by(input),
            output_tokens_by_modality: by(output),
        }
    }
}

/// The Interaction resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Interaction {
    /// Opaque id; `""` when `store` was false.
    pub id: String,
    /// Always `interaction`.
    #[serde(default = "interaction_object")]
    pub object: String,
    /// Model id as requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Status.
    pub status: Status,
    /// Creation time, RFC 3339 UTC, second precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Last update time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// Timeline; absent in `interaction.completed` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Step>>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Service tier; always `standard` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Echo of the request's `previous_interaction_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_interaction_id: Option<String>,
}

fn interaction_object() -> String {
    "interaction".into()
}

/// A delta inside a `step.delta` event, discriminated by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    /// Answer text.
    Text {
        /// The text fragment.
        text: String,
    },
    /// Reasoning summary fragment.
    ThoughtSummary {
        /// The summary content.
        content: Content,
    },
    /// The thought's signature; the last delta of a thought step.
    ThoughtSignature {
        /// The signature.
        signature: String,
    },
    /// A fragment of a function call's JSON arguments.
    ArgumentsDelta {
        /// JSON text fragment.
        arguments: String,
    },
}

/// The body of an `error` event and of error responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Human-readable message.
    pub message: String,
    /// Lower-case code string, e.g. `invalid_request`.
    pub code: String,
    /// Google-style status, e.g. `INVALID_ARGUMENT` (ignored by the SDKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// One server-sent event of an interaction stream, discriminated by `event_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event_type")]
pub enum StreamEvent {
    /// The interaction exists (status `in_progress`).
    #[serde(rename = "interaction.created")]
    Created {
        /// Partial interaction: id, status, object, model.
        interaction: Interaction,
        /// Resume token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// Status change.
    #[serde(rename = "interaction.status_update")]
    StatusUpdate {
        /// The interaction's id.
        interaction_id: String,
        /// New status.
        status: Status,
        /// Resume token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// A new output step begins.
    #[serde(rename = "step.start")]
    StepStart {
        /// Position among output steps.
        index: u32,
        /// Step shell.
        step: Value,
        /// Resume token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// A fragment of the current step.
    #[serde(rename = "step.delta")]
    StepDelta {
        /// Position among output steps.
        index: u32,
        /// The fragment.
        delta: Delta,
        /// Resume token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// The step ended.
    #[serde(rename = "step.stop")]
    StepStop {
        /// Position among output steps.
        index: u32,
        /// Resume token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// The interaction ended; carries status and usage, no steps.
    #[serde(rename = "interaction.completed")]
    Completed {
        /// Partial interaction without steps.
        interaction: Interaction,
        /// Resume token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// Generation failed after the stream started.
    #[serde(rename = "error")]
    Error {
        /// The error.
        error: ErrorBody,
        /// Resume token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
}

impl StreamEvent {
    /// The resume token, when the event carries one.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            StreamEvent::Created { event_id, .. }
            | StreamEvent::StatusUpdate { event_id, .. }
            | StreamEvent::StepStart { event_id, .. }
            | StreamEvent::StepDelta { event_id, .. }
            | StreamEvent::StepStop { event_id, .. }
            | StreamEvent::Completed { event_id, .. }
            | StreamEvent::Error { event_id, .. } => event_id.as_deref(),
        }
    }

    /// The resume token, to set.
    pub fn event_id_mut(&mut self) -> &mut Option<String> {
        match self {
            StreamEvent::Created { event_id, .. }
            | StreamEvent::StatusUpdate { event_id, .. }
            | StreamEvent::StepStart { event_id, .. }
            | StreamEvent::StepDelta { event_id, .. }
            | StreamEvent::StepStop { event_id, .. }
            | StreamEvent::Completed { event_id, .. }
            | StreamEvent::Error { event_id, .. } => event_id,
        }
    }

    /// The `event_type` string, used for the SSE `event:` line.
    pub fn event_type(&self) -> &'static str {
        match self {
            StreamEvent::Created { .. } => "interaction.created",
            StreamEvent::StatusUpdate { .. } => "interaction.status_update",
            StreamEvent::StepStart { .. } => "step.start",
            StreamEvent::StepDelta { .. } => "step.delta",
            StreamEvent::StepStop { .. } => "step.stop",
            StreamEvent::Completed { .. } => "interaction.completed",
            StreamEvent::Error { .. } => "error",
        }
    }
}

/// A model as listed by `GET /{v}/models` (camelCase, like Google's models API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    /// `models/<id>`.
    pub name: String,
    /// Base model id.
    pub base_model_id: String,
    /// Version string.
    pub version: String,
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Context size in tokens.
    pub input_token_limit: u64,
    /// Output cap in tokens.
    pub output_token_limit: u64,
    /// Supported methods.
    pub supported_generation_methods: Vec<String>,
}

/// `GET /{v}/models` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelList {
    /// The models.
    pub models: Vec<Model>,
}

/// A File resource of the Files API (camelCase, like Google's; `sizeBytes` is a string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct File {
    /// `files/<id>`.
    pub name: String,
    /// Display name given at upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// MIME type.
    pub mime_type: String,
    /// Size in bytes, as a decimal string.
    pub size_bytes: String,
    /// RFC 3339 creation time.
    pub create_time: String,
    /// RFC 3339 update time.
    pub update_time: String,
    /// RFC 3339 expiry time (48 hours after creation).
    pub expiration_time: String,
    /// Base64 of the hex SHA-256 of the bytes.
    pub sha256_hash: String,
    /// What to put in a content part's `uri`.
    pub uri: String,
    /// Always `ACTIVE` here.
    pub state: String,
    /// Always `UPLOADED` here.
    pub source: String,
}

/// `GET /{v}/files` response; `nextPageToken` only when more files follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileList {
    /// This page's files (left out when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    /// Token of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// The final upload response: `{"file": File}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadResponse {
    /// The stored file.
    pub file: File,
}

/// The Files API's error envelope (Google's classic one, with an integer code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GoogleError {
    /// The error.
    pub error: GoogleErrorBody,
}

/// Body of [`GoogleError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GoogleErrorBody {
    /// HTTP status code.
    pub code: u16,
    /// Human-readable message.
    pub message: String,
    /// Google status, e.g. `NOT_FOUND`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_text_answer_round_trips() {
        let body = json!({
          "id": "v1_abc", "object": "interaction", "model": "gemini-3-flash-preview",
          "status": "completed", "created": "2026-05-20T12:25:15Z", "updated": "2026-05-20T12:25:15Z",
          "service_tier": "standard",
          "steps": [{"type": "model_output", "content": [{"type": "text", "text": "Hello!"}]}],
          "usage": {"total_input_tokens": 7, "total_output_tokens": 14, "total_thought_tokens": 0,
                    "total_cached_tokens": 0, "total_tool_use_tokens": 0, "total_tokens": 21,
                    "input_tokens_by_modality": [{"modality": "text", "tokens": 7}]}
        });
        let it: Interaction = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(it.status, Status::Completed);
        assert_eq!(serde_json::to_value(&it).unwrap(), body);
    }

    #[test]
    fn python_model_dump_step_with_nulls_parses() {
        let step = json!({"type": "model_output", "content": [{"type": "text", "text": "hi", "annotations": null}], "error": null});
        let s: Step = serde_json::from_value(step).unwrap();
        assert_eq!(
            s,
            Step::ModelOutput {
                content: vec![Content::text("hi")],
                error: None
            }
        );
    }

    #[test]
    fn events_carry_event_type() {
        let e = StreamEvent::StepDelta {
            index: 1,
            delta: Delta::Text { text: "Hi".into() },
            event_id: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"event_type": "step.delta", "index": 1, "delta": {"type": "text", "text": "Hi"}})
        );
        assert_eq!(e.event_type(), "step.delta");
    }

    #[test]
    fn unknown_generation_config_field_is_rejected() {
        let r: Result<GenerationConfig, _> = serde_json::from_value(json!({"top_k": 3}));
        assert!(r.unwrap_err().to_string().contains("top_k"));
    }

    #[test]
    fn status_strings() {
        for s in [Status::Completed, Status::Incomplete, Status::InProgress] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert!(Status::Completed.is_terminal());
        assert!(!Status::InProgress.is_terminal());
    }
}
