//! The engine seam: a validated [`GenerateRequest`] goes in, a stream of [`EngineEvent`]s comes
//! out. Dropping the stream's receiver cancels the generation at the engine's next step.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Marks, in a [`ChatMessage`]'s text, where the next of its [`ChatMessage::media`] goes
/// (U+FFFC OBJECT REPLACEMENT CHARACTER). Text from users never carries it: the API removes
/// it from what it passes on.
pub const MEDIA_MARKER: char = '\u{FFFC}';

/// A decoded image: 8-bit RGB pixels, row by row.
#[derive(Clone)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub rgb: Arc<[u8]>,
    /// SHA-256 of the size and pixels: equal digests are the same image (the engine keys its
    /// cached state by it).
    pub digest: [u8; 32],
}

impl Image {
    /// An image from RGB pixels, digested.
    ///
    /// # Panics
    /// When `rgb` is not `width * height * 3` bytes.
    pub fn new(width: u32, height: u32, rgb: Vec<u8>) -> Self {
        use sha2::{Digest, Sha256};
        assert_eq!(rgb.len(), width as usize * height as usize * 3, "RGB size");
        let mut h = Sha256::new();
        h.update(width.to_le_bytes());
        h.update(height.to_le_bytes());
        h.update(&rgb);
        Image {
            width,
            height,
            rgb: rgb.into(),
            digest: h.finalize().into(),
        }
    }
}

impl PartialEq for Image {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Image({}x{}, {:02x}{:02x}{:02x}{:02x})",
            self.width, self.height, self.digest[0], self.digest[1], self.digest[2], self.digest[3]
        )
    }
}

/// Decoded audio: mono samples in [-1, 1] at the rate the model's audio projector takes.
#[derive(Clone)]
pub struct Audio {
    /// Samples per second.
    pub sample_rate: u32,
    /// The samples.
    pub samples: Arc<[f32]>,
    /// SHA-256 of the rate and samples: equal digests are the same audio.
    pub digest: [u8; 32],
}

impl Audio {
    /// Audio from mono samples, digested.
    pub fn new(sample_rate: u32, samples: Vec<f32>) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"audio");
        h.update(sample_rate.to_le_bytes());
        for s in &samples {
            h.update(s.to_le_bytes());
        }
        Audio {
            sample_rate,
            samples: samples.into(),
            digest: h.finalize().into(),
        }
    }

    /// Its length in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate.max(1))
    }
}

impl PartialEq for Audio {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl std::fmt::Debug for Audio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Audio({:.2} s at {} Hz, {:02x}{:02x}{:02x}{:02x})",
            self.seconds(),
            self.sample_rate,
            self.digest[0],
            self.digest[1],
            self.digest[2],
            self.digest[3]
        )
    }
}

/// What a user sent a piece of media as, for usage by modality (a video's frames and
/// soundtrack count as `video`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    /// An image part.
    Image,
    /// An audio part.
    Audio,
    /// A video part.
    Video,
}

/// Decoded media as a projector takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaData {
    /// Pixels, for the vision projector.
    Image(Image),
    /// Samples, for the audio projector.
    Audio(Audio),
}

/// One piece of media in a message: what the projector encodes, and what it was sent as.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// The decoded media.
    pub data: MediaData,
    /// The part it came from.
    pub modality: Modality,
}

impl Attachment {
    /// An image sent as an image.
    pub fn image(image: Image) -> Self {
        Attachment {
            data: MediaData::Image(image),
            modality: Modality::Image,
        }
    }

    /// Audio sent as audio.
    pub fn audio(audio: Audio) -> Self {
        Attachment {
            data: MediaData::Audio(audio),
            modality: Modality::Audio,
        }
    }

    /// The same media, counted as part of a video.
    #[must_use]
    pub fn of_video(mut self) -> Self {
        self.modality = Modality::Video;
        self
    }

    /// The digest of the decoded media.
    pub fn digest(&self) -> &[u8; 32] {
        match &self.data {
            MediaData::Image(i) => &i.digest,
            MediaData::Audio(a) => &a.digest,
        }
    }

    /// `image` or `audio`: what the model needs to take it.
    pub fn kind(&self) -> &'static str {
        match self.data {
            MediaData::Image(_) => "image",
            MediaData::Audio(_) => "audio",
        }
    }
}

/// Prompt positions filled by media, by the modality they were sent as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaTokens {
    /// Image parts.
    pub image: u64,
    /// Audio parts.
    pub audio: u64,
    /// Video parts (frames and soundtrack).
    pub video: u64,
}

impl MediaTokens {
    /// Add `n` positions of `modality`.
    pub fn add(&mut self, modality: Modality, n: u64) {
        match modality {
            Modality::Image => self.image += n,
            Modality::Audio => self.audio += n,
            Modality::Video => self.video += n,
        }
    }

    /// All of them.
    pub fn total(&self) -> u64 {
        self.image + self.audio + self.video
    }
}

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system instruction.
    System,
    /// The user.
    #[default]
    User,
    /// The model (rendered as `assistant` for most chat templates).
    Model,
    /// A function's result, answering one of the model's calls.
    Tool,
}

/// A function call the model made (in a [`Role::Model`] message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, echoed by the result.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments object.
    pub arguments: serde_json::Value,
}

/// One message of the conversation, as the chat template sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Speaker.
    pub role: Role,
    /// Text (for [`Role::Tool`], the result as text or JSON).
    pub content: String,
    /// The model's reasoning before this answer, when it is known (a thought restored from
    /// its signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Function calls the model made in this turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For [`Role::Tool`]: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For [`Role::Tool`]: the function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Media in this message, in order: the n-th goes where the n-th [`MEDIA_MARKER`] is
    /// in `content`.
    #[serde(skip)]
    pub media: Vec<Attachment>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            ..ChatMessage::default()
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDecl {
    /// Name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of its arguments object.
    pub parameters: serde_json::Value,
}

/// Whether and which functions the model may or must call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolMode {
    /// The model decides; calls are parsed from its output.
    #[default]
    Auto,
    /// The model must call a function; decoding is constrained to a valid call.
    Any,
    /// No calls: functions are not shown to the model.
    None,
    /// The model decides, but decoding keeps any call valid.
    Validated,
}

/// What the output must look like.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OutputFormat {
    /// Free text.
    #[default]
    Text,
    /// JSON valid against this JSON Schema (constrained decoding).
    JsonSchema(serde_json::Value),
}

/// Reasoning settings for models whose template thinks in tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thinking {
    /// Thought-token budget; when spent the thought is closed. `Some(0)` turns thinking off
    /// (through the template where it can, else by closing the thought at once). `None` is
    /// the model's default.
    pub budget: Option<u32>,
}

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// Keep only the `top_k` likeliest tokens; 0 keeps them all.
    pub top_k: u32,
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
    /// Functions the model may call.
    pub tools: Vec<FunctionDecl>,
    /// How tools are used.
    pub tool_mode: ToolMode,
    /// Output format.
    pub format: OutputFormat,
    /// Reasoning settings.
    pub thinking: Thinking,
}

impl GenerateRequest {
    /// A plain text request with default settings (for tests and simple callers).
    pub fn text(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        GenerateRequest {
            model: model.into(),
            messages,
            sampling: Sampling {
                temperature: 0.0,
                top_p: 1.0,
                top_k: 0,
                seed: 0,
            },
            stop_sequences: Vec::new(),
            max_output_tokens: 256,
            cache_scope: String::new(),
            tools: Vec::new(),
            tool_mode: ToolMode::Auto,
            format: OutputFormat::Text,
            thinking: Thinking::default(),
        }
    }
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
    /// Generated tokens spent reasoning (not in `output_tokens`).
    #[serde(default)]
    pub thought_tokens: u64,
}

/// What the engine streams back for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A fragment of answer text (valid UTF-8, stop sequences removed).
    Text(String),
    /// A fragment of the model's reasoning.
    Thought(String),
    /// The reasoning ended (sent once, before any answer text, when there was reasoning).
    ThoughtEnd,
    /// A complete function call parsed from the output.
    Call {
        /// Function name.
        name: String,
        /// Arguments object.
        arguments: serde_json::Value,
    },
    /// Generation ended normally; the last event.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Token counts.
        usage: TokenUsage,
    },
    /// Generation failed after it was admitted; the last event. The message is for the logs.
    Failed(String),
    /// The engine running the generation was lost mid-answer (a remote engine died or its
    /// connection broke); the last event. The message says so to the client.
    Lost(String),
}

/// An admitted generation: the prompt's size and the stream of its events.
#[derive(Debug)]
pub struct Generation {
    /// Prompt tokens after rendering the chat template.
    pub prompt_tokens: u64,
    /// Of those, positions filled by media.
    pub media_tokens: MediaTokens,
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
    /// Whether the model takes images (it has a vision projector).
    #[serde(default)]
    pub vision: bool,
    /// The sample rate of the model's audio projector, when it has one (known once the
    /// model is loaded): it takes audio.
    #[serde(default)]
    pub audio_sample_rate: Option<u32>,
    /// Output cap for requests that set none (a tiny model that rambles has one); without
    /// it an answer runs until the model stops or the context is full.
    #[serde(default)]
    pub default_max_output_tokens: Option<u32>,
}

/// An upstream engine a model is served from (remote engines), as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamHealth {
    /// Model id.
    pub model: String,
    /// Its base URL.
    pub url: String,
    /// Its API (`llama-server`, `vllm`, `sglang`).
    pub dialect: String,
    /// Serving: it answered its last request or probe.
    pub healthy: bool,
    /// Requests it is running for this server.
    pub in_flight: u32,
    /// What went wrong last, while it is out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// The request asks for something the model or the engine cannot do (an unsupported
    /// schema feature, say).
    #[error("{0}")]
    Unsupported(String),
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

    /// The prompt's size in tokens as [`Engine::generate`] would render it (chat template
    /// and tool declarations included), without generating. Prompts longer than the context
    /// are counted too.
    ///
    /// # Errors
    /// As [`Engine::generate`] before admission, but never for length or a full queue.
    async fn count_tokens(&self, request: GenerateRequest) -> Result<u64, EngineError> {
        Err(EngineError::Unsupported(format!(
            "model {} cannot count tokens",
            request.model
        )))
    }

    /// Drop every cached state of `scope` (KV kept in memory and on disk), as when its owner
    /// deletes a conversation. Live generations are not affected.
    async fn forget(&self, scope: &str) {
        let _ = scope;
    }

    /// The upstream engines behind remote models and their health (none for in-process
    /// models).
    fn upstreams(&self) -> Vec<UpstreamHealth> {
        Vec::new()
    }
}
