//! The engine seam: a validated [`GenerateRequest`] goes in, a stream of [`EngineEvent`]s comes
//! out. Dropping the stream's receiver cancels the generation at the engine's next step.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system instruction.
    System,
    /// The user.
    User,
    /// The model (rendered as `assistant` for most chat templates).
    Model,
}

/// One message of the conversation, as the chat template sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// Seed of the sampler's random generator.
    pub seed: u32,
}

/// A generation request that has passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Resolved model id (a key of [`Engine::models`]).
    pub model: String,
    /// The conversation, oldest first; ends with a user message.
    pub messages: Vec<ChatMessage>,
    /// Sampling settings.
    pub sampling: Sampling,
    /// Stop strings; never emitted.
    pub stop_sequences: Vec<String>,
    /// Output cap in tokens.
    pub max_output_tokens: u32,
    /// Whose cached KV state this request may reuse and leave behind (the API key's hash):
    /// requests of different scopes never share cached state.
    pub cache_scope: String,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-generation token or a stop sequence.
    Stop,
    /// `max_output_tokens` reached.
    MaxTokens,
    /// The context window is full.
    ContextFull,
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens not prefilled because cached state was reused.
    pub cached_tokens: u64,
}

/// What the engine streams back for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A fragment of answer text (valid UTF-8, stop sequences removed).
    Text(String),
    /// Generation ended normally; the last event.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Token counts.
        usage: TokenUsage,
    },
    /// Generation failed after it was admitted; the last event.
    Failed(String),
}

/// An admitted generation: the prompt's size and the stream of its events.
#[derive(Debug)]
pub struct Generation {
    /// Prompt tokens after rendering the chat template.
    pub prompt_tokens: u64,
    /// Events; drop to cancel.
    pub events: mpsc::UnboundedReceiver<EngineEvent>,
}

/// A model the engine can serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Id used in requests.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// Context size available to one sequence.
    pub context_tokens: u64,
    /// Whether the model has been loaded and is ready.
    pub ready: bool,
}

/// Why the engine refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No model by that id.
    #[error("model {model} is not served; available: {available}")]
    UnknownModel {
        /// The id asked for.
        model: String,
        /// Comma-separated ids that are served.
        available: String,
    },
    /// The rendered prompt does not fit the context window.
    #[error("input is {tokens} tokens, more than the {limit} tokens model {model} accepts")]
    PromptTooLong {
        /// Model id.
        model: String,
        /// Prompt tokens.
        tokens: u64,
        /// Limit.
        limit: u64,
    },
    /// The request cannot be rendered with the model's chat template.
    #[error("{0}")]
    InvalidPrompt(String),
    /// The queue is full.
    #[error("the server is busy: {0}")]
    Overloaded(String),
    /// The model is still loading.
    #[error("model {0} is still loading")]
    Loading(String),
    /// The model failed to load or the engine stopped.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

/// A text-generation backend.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Models this engine serves.
    fn models(&self) -> Vec<ModelInfo>;

    /// Whether the default model is loaded.
    fn ready(&self) -> bool;

    /// Admit a request: renders and tokenizes the prompt, then streams the answer.
    ///
    /// # Errors
    /// [`EngineError`] when the model is unknown or not ready, the prompt does not fit, or
    /// the queue is full. Nothing has been generated in that case.
    async fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError>;
}
