//! localgem's llama.cpp engine: the only crate that links llama.cpp.
//!
//! One OS thread per served model owns the model and its context ([`worker`]); the
//! [`LlamaEngine`] handle implements [`localgem_core::Engine`] by sending commands to those
//! threads. The scheduling policy ([`scheduler`]), chat templates ([`template`]) and text
//! streaming ([`text`]) are plain code with unit tests that need no model.

pub mod constrain;
mod device;
pub mod fit;
pub mod kv;
pub mod media;
mod output;
pub mod parse;
mod prompt;
pub mod remote;
pub mod restore;
pub mod scheduler;
pub mod special;
pub mod speculate;
pub mod spill;
mod telemetry;
pub mod template;
pub mod text;
mod worker;
mod writeq;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use llama_cpp_2::llama_backend::LlamaBackend;
use localgem_core::{Engine, EngineError, GenerateRequest, Generation, ModelInfo};
use tokio::sync::{mpsc, oneshot, watch};

use prompt::Prompter;
use worker::{Command, LoadState};

/// A GGUF file served under an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Id used in requests.
    pub id: String,
    /// Path of the GGUF file.
    pub path: PathBuf,
    /// Human-readable name.
    pub display_name: String,
    /// A projector (mmproj GGUF) for the model: with a vision encoder it takes images and
    /// video frames, with an audio encoder audio and soundtracks.
    pub mmproj: Option<PathBuf>,
    /// A smaller model with the same vocabulary that drafts tokens for speculative decoding
    /// (`--draft-model`), beside the drafts prompt lookup finds.
    pub draft: Option<PathBuf>,
    /// Output cap for requests that set none; `None`: until the model stops or the context
    /// is full.
    pub default_max_output_tokens: Option<u32>,
}

/// Engine settings shared by all models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Total context (KV cells) per model, split evenly between the KV slots: each sequence
    /// can hold `ctx_size / kv_slots` tokens (prompt and answer). `None`: chosen at load
    /// ([`fit::context`]): [`fit::DEFAULT_CTX`], cut to the model's training context and to
    /// memory.
    pub ctx_size: Option<u32>,
    /// Sequences decoded together per step.
    pub parallel: u32,
    /// CPU threads for llama.cpp.
    pub threads: i32,
    /// Token budget of one `decode` (prompt chunks plus one token per decoding sequence).
    pub batch_size: u32,
    /// While sequences decode, a step carries only the prompt tokens that keep it within
    /// this long (learned from the steps so far; at least a few tokens), so that a long new
    /// prompt does not stop the live streams for seconds. Zero: bounded by `batch_size` only.
    pub max_step: std::time::Duration,
    /// Draft tokens a step may verify for speculative decoding from the conversation
    /// ([`speculate`]); 0 turns speculation off. `None`: [`DEFAULT_DRAFT_MAX`] where a check
    /// at load finds that verifying drafts in a batch cannot change an answer, else off.
    pub draft_max: Option<usize>,
    /// Draft whenever a lookup finds a continuation, whatever a draft token costs here. By
    /// default a sequence drafts only as many tokens as their estimated chance of acceptance
    /// beats their measured cost (on a CPU where a tiny model's decode is compute-bound, a
    /// draft token costs nearly a whole step, and drafting hardly ever pays).
    pub draft_always: bool,
    /// Requests that may wait for a free sequence before new ones get 429.
    pub max_queue: usize,
    /// Layers to offload to a GPU; `None`: all of them when the build has a GPU backend that
    /// found a device, else none.
    pub gpu_layers: Option<u32>,
    /// Sequence slots in the KV buffer: live sequences plus finished ones kept for prefix
    /// reuse (at least `parallel`, at most 256).
    pub kv_slots: u32,
    /// Shortest cached prefix, in tokens, worth reusing a slot for.
    pub min_reuse: u32,
    /// Use flash attention. On by default (faster); off for bit-exact reuse, since with it a
    /// prompt prefilled in chunks rounds differently from one prefilled at once.
    pub flash_attention: bool,
    /// Keep the K/V that decoding wrote for an answer, instead of prefilling the answer into
    /// the conversation's state again. On by default (saves that prefill); off for bit-exact
    /// reuse, since one-token decode steps round differently from a prefill, so a later turn
    /// may differ from a fresh computation.
    pub reuse_decoded_kv: bool,
    /// A Jinja chat template used instead of the one in the GGUF.
    pub chat_template: Option<String>,
    /// Where finished KV states are kept on disk (a directory per model fingerprint is made
    /// inside); `None` keeps them in memory only.
    pub spill_dir: Option<PathBuf>,
    /// Disk budget for those states, in bytes (least recently used ones are deleted).
    pub spill_budget: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ctx_size: None,
            parallel: 4,
            threads: std::thread::available_parallelism()
                .map(|n| n.get() as i32)
                .unwrap_or(2),
            batch_size: 512,
            max_step: std::time::Duration::from_millis(200),
            draft_max: None,
            draft_always: false,
            max_queue: 64,
            gpu_layers: None,
            kv_slots: 8,
            min_reuse: 16,
            flash_attention: true,
            reuse_decoded_kv: true,
            chat_template: None,
            spill_dir: None,
            spill_budget: 4 << 30,
        }
    }
}

/// Draft tokens a step verifies by default, where that is exact ([`EngineConfig::draft_max`]).
pub const DEFAULT_DRAFT_MAX: usize = 8;

/// How long a request waits for its model to finish loading before it gets 503.
const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The process-wide llama.cpp backend (it may be initialised only once).
pub(crate) fn backend() -> Result<&'static LlamaBackend, String> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| format!("cannot initialise llama.cpp: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

struct ModelWorker {
    spec: ModelSpec,
    tx: mpsc::Sender<Command>,
    state: watch::Receiver<LoadState>,
    /// Renders and tokenizes prompts in the requests' tasks; set once the model has loaded.
    prompter: Arc<OnceLock<Arc<Prompter>>>,
}

/// Handle to the engine threads; cheap to share behind an `Arc`.
pub struct LlamaEngine {
    models: BTreeMap<String, ModelWorker>,
    default_model: String,
}

impl LlamaEngine {
    /// Start one engine thread per model. Loading happens in the background; see
    /// [`LlamaEngine::wait_ready`] and [`Engine::ready`].
    ///
    /// # Errors
    /// When `default_model` is not among `models`, or a thread cannot be spawned.
    pub fn start(
        models: Vec<ModelSpec>,
        default_model: &str,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        if !models.iter().any(|m| m.id == default_model) {
            return Err(EngineError::UnknownModel {
                model: default_model.to_owned(),
                available: models
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut map = BTreeMap::new();
        for spec in models {
            let (tx, rx) = mpsc::channel(config.max_queue.max(1));
            let (state_tx, state) = watch::channel(LoadState::Loading);
            let (job, cfg) = (spec.clone(), config.clone());
            let prompter = Arc::new(OnceLock::new());
            let cell = prompter.clone();
            std::thread::Builder::new()
                .name(format!("engine-{}", spec.id))
                .spawn(move || {
                    let run = std::panic::AssertUnwindSafe(|| {
                        worker::run(job, cfg, rx, &state_tx, &cell)
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        // Queued requests see their channels close; health turns 503.
                        let _ =
                            state_tx.send(LoadState::Failed("the engine thread panicked".into()));
                    }
                })
                .map_err(|e| {
                    EngineError::Unavailable(format!("cannot spawn engine thread: {e}"))
                })?;
            map.insert(
                spec.id.clone(),
                ModelWorker {
                    spec,
                    tx,
                    state,
                    prompter,
                },
            );
        }
        Ok(LlamaEngine {
            models: map,
            default_model: default_model.to_owned(),
        })
    }

    /// Wait until the model has loaded.
    ///
    /// # Errors
    /// The model's load error, or an unknown id.
    pub async fn wait_ready(&self, model: &str) -> Result<(), EngineError> {
        let w = self.worker(model)?;
        let mut rx = w.state.clone();
        let state = rx
            .wait_for(|s| !matches!(s, LoadState::Loading))
            .await
            .map_err(|_| EngineError::Unavailable(format!("engine thread of {model} stopped")))?
            .clone();
        match state {
            LoadState::Failed(e) => Err(EngineError::Unavailable(e)),
            _ => Ok(()),
        }
    }

    /// Graceful shutdown: each engine thread finishes its live sequences, prefills pending
    /// answers into their states, writes every state to disk and stops. Waits at most
    /// `timeout` in all; requests sent afterwards fail.
    pub async fn drain(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waits = Vec::new();
        for (id, w) in &self.models {
            let (done, rx) = oneshot::channel();
            let sent = tokio::time::timeout_at(deadline, w.tx.send(Command::Drain { done })).await;
            if matches!(sent, Ok(Ok(()))) {
                waits.push((id, rx));
            }
        }
        for (id, rx) in waits {
            if tokio::time::timeout_at(deadline, rx).await.is_err() {
                tracing::warn!(model = %id, "engine did not drain in time");
            }
        }
    }

    /// The default model's id.
    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// The model's prompter once it has loaded (a model still loading is waited for,
    /// bounded, rather than refused).
    async fn prompter_of(&self, w: &ModelWorker) -> Result<Arc<Prompter>, EngineError> {
        let failed = {
            let mut state = w.state.clone();
            let loaded = tokio::time::timeout(
                LOAD_WAIT,
                state.wait_for(|s| !matches!(s, LoadState::Loading)),
            )
            .await;
            match loaded {
                Err(_) => return Err(EngineError::Loading(w.spec.id.clone())),
                Ok(Err(_)) => {
                    return Err(EngineError::Unavailable("the engine thread stopped".into()))
                }
                Ok(Ok(s)) => match &*s {
                    LoadState::Failed(e) => Some(e.clone()),
                    _ => None,
                },
            }
        };
        if let Some(e) = failed {
            return Err(EngineError::Unavailable(e));
        }
        w.prompter
            .get()
            .cloned()
            .ok_or_else(|| EngineError::Unavailable("the model is not loaded".into()))
    }

    fn worker(&self, model: &str) -> Result<&ModelWorker, EngineError> {
        self.models
            .get(model)
            .ok_or_else(|| EngineError::UnknownModel {
                model: model.to_owned(),
                available: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

#[async_trait]
impl Engine for LlamaEngine {
    fn models(&self) -> Vec<ModelInfo> {
        self.models
            .values()
            .map(|w| {
                let state = w.state.borrow().clone();
                ModelInfo {
                    id: w.spec.id.clone(),
                    display_name: w.spec.display_name.clone(),
                    context_tokens: match state {
                        LoadState::Ready { context_tokens, .. } => context_tokens,
                        _ => 0,
                    },
                    ready: matches!(state, LoadState::Ready { .. }),
                    // A projector that fails to load fails the model: never served text-only.
                    vision: match state {
                        LoadState::Ready { vision, .. } => vision,
                        _ => w.spec.mmproj.is_some(),
                    },
                    audio_sample_rate: match state {
                        LoadState::Ready { audio_rate, .. } => audio_rate,
                        _ => None,
                    },
                    default_max_output_tokens: w.spec.default_max_output_tokens,
                }
            })
            .collect()
    }

    fn ready(&self) -> bool {
        self.models
            .get(&self.default_model)
            .is_some_and(|w| matches!(*w.state.borrow(), LoadState::Ready { .. }))
    }

    async fn forget(&self, scope: &str) {
        for w in self.models.values() {
            let _ =
                w.tx.send(Command::Forget {
                    scope: scope.to_owned(),
                })
                .await;
        }
    }

    async fn count_tokens(&self, request: GenerateRequest) -> Result<u64, EngineError> {
        let w = self.worker(&request.model)?;
        let prompter = self.prompter_of(w).await?;
        tokio::task::spawn_blocking(move || prompter.count(request))
            .await
            .map_err(|e| EngineError::Unavailable(format!("counting the prompt failed: {e}")))?
    }

    async fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        let w = self.worker(&request.model)?;
        let prompter = self.prompter_of(w).await?;
        // The template and the tokenizer run here, on the blocking pool, not on the engine
        // thread: a huge prompt costs its own request time, never the other requests'.
        let rendered = tokio::task::spawn_blocking(move || prompter.render(request))
            .await
            .map_err(|e| EngineError::Unavailable(format!("preparing the prompt failed: {e}")))??;
        let (admit, admitted) = oneshot::channel();
        w.tx.try_send(Command::Generate {
            rendered: Box::new(rendered),
            admit,
            span: tracing::Span::current(),
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                EngineError::Overloaded("the request queue is full".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                EngineError::Unavailable("the engine thread stopped".into())
            }
        })?;
        admitted
            .await
            .map_err(|_| EngineError::Unavailable("the engine thread stopped".into()))?
    }
}
