//! A scripted engine for fast API tests: no model, deterministic output.
//!
//! It answers `Echo: <last user message>` one word per event, honours `max_output_tokens`
//! (one word = one token) and stop sequences, and can pause between words so tests can
//! cancel or disconnect mid-generation.
//!
//! Scripted extras:
//! * a last user message containing `think` first produces a thought, `Thinking about: …`,
//!   one word per token, cut at the request's thought budget (`Some(0)`: no thought);
//! * with tools offered (mode not `none`) and a user message last, it calls the first tool
//!   with `{"n": <words in the message>}`;
//! * after a function result it answers `Result: <result text>`;
//! * a last user message containing `lose the engine` loses its engine after the first word
//!   (as when a remote engine dies mid-answer).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use localgem_core::{
    Engine, EngineError, EngineEvent, FinishReason, GenerateRequest, Generation, ModelInfo, Role,
    TokenUsage,
};
use tokio::sync::mpsc;

/// The fake engine.
#[derive(Debug, Default)]
pub struct FakeEngine {
    /// Pause between words.
    pub delay: Duration,
    /// Requests seen (for assertions).
    pub requests: Arc<std::sync::Mutex<Vec<GenerateRequest>>>,
    /// Generations still running (not cancelled or finished).
    pub live: Arc<AtomicUsize>,
    /// Scopes whose cached state was dropped (for assertions).
    pub forgotten: Arc<std::sync::Mutex<Vec<String>>>,
    /// Whether its model takes images (each piece of media counts 16 prompt tokens).
    pub vision: bool,
    /// The sample rate at which its model takes audio, if it does.
    pub audio_rate: Option<u32>,
}

impl FakeEngine {
    /// The id of the one model it serves.
    pub const MODEL: &'static str = "fake-model";

    /// A prompt's size: its words, 2 per message, 16 per piece of media, 8 per function
    /// offered.
    pub fn prompt_tokens(req: &GenerateRequest) -> u64 {
        let messages: u64 = req
            .messages
            .iter()
            .map(|m| m.content.split_whitespace().count() as u64 + 2 + 16 * m.media.len() as u64)
            .sum();
        messages + 8 * req.tools.len() as u64
    }

    /// A fake that pauses `delay` between words.
    pub fn with_delay(delay: Duration) -> Self {
        FakeEngine {
            delay,
            ..Self::default()
        }
    }
}

struct LiveGuard(Arc<AtomicUsize>);
impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Engine for FakeEngine {
    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            id: Self::MODEL.into(),
            display_name: "Fake".into(),
            context_tokens: 1000,
            ready: true,
            vision: self.vision,
            audio_sample_rate: self.audio_rate,
            default_max_output_tokens: None,
        }]
    }

    fn ready(&self) -> bool {
        true
    }

    async fn forget(&self, scope: &str) {
        self.forgotten
            .lock()
            .expect("poisoned")
            .push(scope.to_owned());
    }

    async fn count_tokens(&self, req: GenerateRequest) -> Result<u64, EngineError> {
        if req.model != Self::MODEL {
            return Err(EngineError::UnknownModel {
                model: req.model,
                available: Self::MODEL.into(),
            });
        }
        Ok(Self::prompt_tokens(&req))
    }

    async fn generate(&self, req: GenerateRequest) -> Result<Generation, EngineError> {
        if req.model != Self::MODEL {
            return Err(EngineError::UnknownModel {
                model: req.model,
                available: Self::MODEL.into(),
            });
        }
        self.requests.lock().expect("poisoned").push(req.clone());
        let prompt_tokens = Self::prompt_tokens(&req);
        if prompt_tokens > 1000 {
            return Err(EngineError::PromptTooLong {
                model: req.model,
                tokens: prompt_tokens,
                limit: 1000,
            });
        }
        let last = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let last_msg = req.messages.last().cloned().unwrap_or_default();
        let answer = if last_msg.role == Role::Tool {
            format!("Result: {}", last_msg.content)
        } else {
            format!("Echo: {last}")
        };
        let call = (last_msg.role == Role::User && req.tool_mode != localgem_core::ToolMode::None)
            .then(|| req.tools.first().map(|t| t.name.clone()))
            .flatten()
            .map(|name| EngineEvent::Call {
                name,
                arguments: serde_json::json!({"n": last.split_whitespace().count()}),
            });
        let thought: Vec<String> = if last.contains("think") && last_msg.role == Role::User {
            let budget = req.thinking.budget.unwrap_or(1024) as usize;
            format!("Thinking about: {last}")
                .split(' ')
                .take(budget)
                .map(str::to_owned)
                .collect()
        } else {
            Vec::new()
        };
        let (tx, events) = mpsc::unbounded_channel();
        let delay = self.delay;
        self.live.fetch_add(1, Ordering::SeqCst);
        let guard = LiveGuard(self.live.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let mut emitted = String::new();
            let mut n = 0u64;
            let mut reason = FinishReason::Stop;
            let thought_tokens = thought.len() as u64;
            for (i, word) in thought.iter().enumerate() {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let piece = if i == 0 {
                    word.clone()
                } else {
                    format!(" {word}")
                };
                if tx.send(EngineEvent::Thought(piece)).is_err() {
                    return;
                }
            }
            if !thought.is_empty() {
                let _ = tx.send(EngineEvent::ThoughtEnd);
            }
            if let Some(call) = call {
                let _ = tx.send(call);
                let _ = tx.send(EngineEvent::Finished {
                    reason,
                    usage: TokenUsage {
                        input_tokens: prompt_tokens,
                        output_tokens: 1,
                        cached_tokens: 0,
                        thought_tokens,
                    },
                });
                return;
            }
            for (i, word) in answer.split(' ').enumerate() {
                if n >= u64::from(req.max_output_tokens) {
                    reason = FinishReason::MaxTokens;
                    break;
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let piece = if i == 0 {
                    word.to_owned()
                } else {
                    format!(" {word}")
                };
                let candidate = format!("{emitted}{piece}");
                if let Some(pos) = req
                    .stop_sequences
                    .iter()
                    .filter_map(|s| candidate.find(s.as_str()))
                    .min()
                {
                    let rest = &candidate[emitted.len()..pos.max(emitted.len())];
                    if !rest.is_empty() {
                        let _ = tx.send(EngineEvent::Text(rest.to_owned()));
                    }
                    n += 1;
                    break;
                }
                if i == 1 && last.contains("lose the engine") {
                    let _ = tx.send(EngineEvent::Lost("the stand-in engine went away".into()));
                    return;
                }
                if tx.send(EngineEvent::Text(piece)).is_err() {
                    return; // cancelled
                }
                emitted = candidate;
                n += 1;
            }
            let _ = tx.send(EngineEvent::Finished {
                reason,
                usage: TokenUsage {
                    input_tokens: prompt_tokens,
                    output_tokens: n,
                    cached_tokens: 0,
                    thought_tokens,
                },
            });
        });
        Ok(Generation {
            prompt_tokens,
            media_tokens: {
                let mut t = localgem_core::MediaTokens::default();
                for m in req.messages.iter().flat_map(|m| &m.media) {
                    t.add(m.modality, 16);
                }
                t
            },
            events,
        })
    }
}
