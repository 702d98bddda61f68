//! What each engine's HTTP API wants and sends back when it is driven with token ids: the
//! request body, the streamed chunks, the error bodies and what it says of itself (context
//! size, slots). Plain functions over JSON, tested against shapes taken from each engine's
//! documentation and source.
//!
//! | engine | endpoint | prompt | tokens back | cached tokens |
//! |---|---|---|---|---|
//! | llama-server | `POST /completion` | `prompt: [ids]` | `tokens` (with `return_tokens`) | `timings.cache_n` |
//! | vLLM | `POST /v1/completions` | `prompt: [ids]` | `choices[0].token_ids` (with `return_token_ids`) | `usage.prompt_tokens_details.cached_tokens` |
//! | SGLang | `POST /generate` | `input_ids` | `output_ids` | `meta_info.cached_tokens` |

use serde_json::{json, Value};

/// An engine's HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// llama.cpp's `llama-server`.
    LlamaServer,
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// SGLang's native API.
    Sglang,
}

/// One generation, as every dialect gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The prompt, as token ids of the model's vocabulary.
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// The k likeliest tokens only; 0 is off.
    pub top_k: u32,
    /// Sampler seed.
    pub seed: u32,
    /// JSON Schema the output must follow.
    pub json_schema: Option<Value>,
    /// Whose cached prefixes this request may share (the tenant), where the engine keeps them
    /// apart.
    pub cache_salt: Option<String>,
}

/// Why an engine stopped generating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// An end-of-generation token (or the grammar completed).
    Eos,
    /// The token limit of the request, or the context, was reached.
    Length,
    /// The engine aborted the request.
    Abort(String),
}

/// What one streamed chunk carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunk {
    /// Newly generated token ids.
    pub tokens: Vec<u32>,
    /// The text streamed with them, where the engine can leave ids out (llama-server sends
    /// no chunk for a token that ends inside a UTF-8 character: that token's bytes come at
    /// the front of the next chunk's text, its id nowhere).
    pub text: Option<String>,
    /// Tokens generated so far, where the engine says (llama-server), to find left-out ids.
    pub generated: Option<u64>,
    /// The generation ended, and why.
    pub end: Option<EndReason>,
    /// Prompt tokens the engine found cached (not computed again).
    pub cached_tokens: Option<u64>,
    /// The stream is over (the chunk was the terminator, or the engine closes after it).
    pub last: bool,
}

/// Per-stream parsing state (SGLang may send cumulative ids).
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    seen: usize,
}

/// What an engine says of itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Props {
    /// Context tokens one sequence can hold.
    pub context_tokens: Option<u64>,
    /// Sequences the engine runs at once.
    pub slots: Option<u32>,
}

/// A chunk that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunk from the engine: {0}")]
pub struct BadChunk(pub String);

impl Dialect {
    /// The dialect by the name used in configuration (`llama-server`, `vllm`, `sglang`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "llama-server" | "llama.cpp" | "llamacpp" => Some(Dialect::LlamaServer),
            "vllm" => Some(Dialect::Vllm),
            "sglang" => Some(Dialect::Sglang),
            _ => None,
        }
    }

    /// The name used in configuration and labels.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::LlamaServer => "llama-server",
            Dialect::Vllm => "vllm",
            Dialect::Sglang => "sglang",
        }
    }

    /// Path of the streaming generation endpoint.
    pub fn generate_path(self) -> &'static str {
        match self {
            Dialect::LlamaServer => "/completion",
            Dialect::Vllm => "/v1/completions",
            Dialect::Sglang => "/generate",
        }
    }

    /// Path that answers 200 once the engine can serve.
    pub fn health_path(self) -> &'static str {
        "/health"
    }

    /// Path that describes the engine (context size, slots).
    pub fn props_path(self) -> &'static str {
        match self {
            Dialect::LlamaServer => "/props",
            // SGLang serves the same list (`/get_model_info` has no context size).
            Dialect::Vllm | Dialect::Sglang => "/v1/models",
        }
    }

    /// The streaming request body for `job`.
    pub fn request(self, job: &Job) -> Value {
        // Sampling the way the in-process engine samples: top-k when asked, nucleus, then
        // temperature, nothing else (each engine's own defaults add top-k, min-p or
        // penalties). Each engine writes "off" for top-k its own way.
        let top_k = |off: i64| {
            if job.top_k == 0 {
                off
            } else {
                i64::from(job.top_k)
            }
        };
        match self {
            Dialect::LlamaServer => {
                let mut body = json!({
                    "prompt": job.prompt,
                    "stream": true,
                    "return_tokens": true,
                    "cache_prompt": true,
                    "n_predict": job.max_tokens,
                    "temperature": job.temperature,
                    "top_p": job.top_p,
                    "top_k": top_k(0),
                    "min_p": 0.0,
                    "typical_p": 1.0,
                    "repeat_penalty": 1.0,
                    "presence_penalty": 0.0,
                    "frequency_penalty": 0.0,
                    "dry_multiplier": 0.0,
                    "xtc_probability": 0.0,
                    "samplers": if job.top_k == 0 {
                        json!(["top_p", "temperature"])
                    } else {
                        json!(["top_k", "top_p", "temperature"])
                    },
                    "seed": job.seed,
                    // Prompt progress chunks, the first of which says how many prompt tokens
                    // were cached (the last chunk says it too, but a generation that ends on
                    // our side, at a stop sequence or a cap, never reads the last).
                    "return_progress": true,
                });
                if let Some(s) = &job.json_schema {
                    body["json_schema"] = s.clone();
                }
                body
            }
            Dialect::Vllm => {
                let mut body = json!({
                    "prompt": job.prompt,
                    "stream": true,
                    "stream_options": {"include_usage": true, "continuous_usage_stats": true},
                    "return_token_ids": true,
                    "max_tokens": job.max_tokens,
                    "temperature": job.temperature,
                    "top_p": job.top_p,
                    "top_k": top_k(-1),
                    "min_p": 0.0,
                    "seed": job.seed,
                    "skip_special_tokens": false,
                });
                if let Some(s) = &job.json_schema {
                    body["structured_outputs"] = json!({"json": s});
                }
                if let Some(salt) = &job.cache_salt {
                    body["cache_salt"] = json!(salt);
                }
                body
            }
            Dialect::Sglang => {
                let mut params = json!({
                    "max_new_tokens": job.max_tokens,
                    "temperature": job.temperature,
                    "top_p": job.top_p,
                    "top_k": top_k(-1),
                    "min_p": 0.0,
                    "sampling_seed": job.seed,
                    "skip_special_tokens": false,
                });
                if let Some(s) = &job.json_schema {
                    // SGLang takes the schema as a JSON string.
                    params["json_schema"] = json!(s.to_string());
                }
                json!({
                    "input_ids": job.prompt,
                    "sampling_params": params,
                    "stream": true,
                })
            }
        }
    }

    /// Parse one SSE `data:` payload of a generation stream.
    ///
    /// # Errors
    /// [`BadChunk`] when the payload is not the dialect's chunk.
    pub fn chunk(self, data: &str, state: &mut StreamState) -> Result<Chunk, BadChunk> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(Chunk {
                last: true,
                ..Chunk::default()
            });
        }
        let v: Value = serde_json::from_str(data).map_err(|e| BadChunk(e.to_string()))?;
        if let Some(message) = error_message(&v) {
            return Ok(Chunk {
                end: Some(EndReason::Abort(message)),
                last: true,
                ..Chunk::default()
            });
        }
        match self {
            Dialect::LlamaServer => {
                if let Some(p) = v.get("prompt_progress") {
                    // Its `tokens` hold a placeholder id, not a generated token.
                    return Ok(Chunk {
                        cached_tokens: p.get("cache").and_then(Value::as_u64),
                        ..Chunk::default()
                    });
                }
                let tokens = ids(v.get("tokens"))?;
                let stop = v.get("stop").and_then(Value::as_bool).unwrap_or(false);
                let end = stop.then(|| match v.get("stop_type").and_then(Value::as_str) {
                    Some("limit") => EndReason::Length,
                    // "eos", and "word" (no stop words are sent; the grammar may end it).
                    Some("eos" | "word") => EndReason::Eos,
                    other => EndReason::Abort(format!(
                        "llama-server stopped the generation ({})",
                        other.unwrap_or("no reason given")
                    )),
                });
                // `timings.cache_n`: prompt tokens reused from the slot (`tokens_cached` counts
                // the whole slot, answer included).
                let cached = v.pointer("/timings/cache_n").and_then(Value::as_u64);
                Ok(Chunk {
                    tokens,
                    text: v.get("content").and_then(Value::as_str).map(str::to_owned),
                    generated: v.get("tokens_predicted").and_then(Value::as_u64),
                    end,
                    cached_tokens: cached,
                    last: stop,
                })
            }
            Dialect::Vllm => {
                let choice = v.pointer("/choices/0");
                let tokens = ids(choice.and_then(|c| c.get("token_ids")))?;
                let end = choice
                    .and_then(|c| c.get("finish_reason"))
                    .and_then(Value::as_str)
                    .map(|r| match r {
                        "stop" => EndReason::Eos,
                        "length" => EndReason::Length,
                        other => EndReason::Abort(format!("vLLM finished with {other:?}")),
                    });
                let cached = v
                    .pointer("/usage/prompt_tokens_details/cached_tokens")
                    .and_then(Value::as_u64);
                Ok(Chunk {
                    tokens,
                    end,
                    cached_tokens: cached,
                    ..Chunk::default()
                })
            }
            Dialect::Sglang => {
                let all = ids(v.get("output_ids"))?;
                let meta = v.get("meta_info");
                let done = meta
                    .and_then(|m| m.get("completion_tokens"))
                    .and_then(Value::as_u64)
                    .map(|n| n as usize);
                // Incremental ids add up to the count so far; cumulative ones are the count.
                let tokens = match done {
                    Some(n) if all.len() == n && n != state.seen + all.len() => {
                        all.get(state.seen..).unwrap_or_default().to_vec()
                    }
                    _ => all,
                };
                state.seen += tokens.len();
                let end = meta
                    .and_then(|m| m.get("finish_reason"))
                    .filter(|r| !r.is_null())
                    .map(|r| match r.get("type").and_then(Value::as_str) {
                        Some("stop") => EndReason::Eos,
                        Some("length") => EndReason::Length,
                        _ => EndReason::Abort(format!(
                            "SGLang finished with {}",
                            r.get("message").and_then(Value::as_str).unwrap_or("abort")
                        )),
                    });
                let cached = meta
                    .and_then(|m| m.get("cached_tokens"))
                    .and_then(Value::as_u64);
                Ok(Chunk {
                    tokens,
                    cached_tokens: cached,
                    end,
                    ..Chunk::default()
                })
            }
        }
    }

    /// What the engine's description endpoint says (see [`Dialect::props_path`]).
    pub fn props(self, v: &Value) -> Props {
        match self {
            Dialect::LlamaServer => Props {
                context_tokens: v
                    .pointer("/default_generation_settings/n_ctx")
                    .and_then(Value::as_u64),
                slots: v
                    .get("total_slots")
                    .and_then(Value::as_u64)
                    .map(|n| n as u32),
            },
            Dialect::Vllm | Dialect::Sglang => Props {
                context_tokens: v.pointer("/data/0/max_model_len").and_then(Value::as_u64),
                slots: None,
            },
        }
    }
}

/// The message of an error body in any of the shapes the engines use:
/// `{"error": {"message": …}}`, `{"error": "…"}`, `{"object": "error", "message": …}`.
pub fn error_message(v: &Value) -> Option<String> {
    match v.get("error") {
        Some(Value::Object(e)) => Some(
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_owned(),
        ),
        Some(Value::String(s)) => Some(s.clone()),
        _ if v.get("object").and_then(Value::as_str) == Some("error") => Some(
            v.get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_owned(),
        ),
        _ => None,
    }
}

fn ids(v: Option<&Value>) -> Result<Vec<u32>, BadChunk> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| BadChunk(format!("token id {t} is not a u32")))
            })
            .collect(),
        Some(other) => Err(BadChunk(format!("token ids are not an array: {other}"))),
    }
}

#[cfg(test)]
mod tests;
