//! Models served by inference engines elsewhere (llama-server, vLLM, SGLang), driven with
//! token ids.
//!
//! The prompt is rendered and tokenized here, from a vocabulary-only load of the model's GGUF
//! (no weights), exactly as for the in-process engine; the engine gets the token ids and
//! streams token ids back, and those go through the same [`Output`] (UTF-8, reasoning, calls,
//! stop sequences, caps). So templates, stops, tool-call and thought parsing and thinking
//! budgets are the same whichever engine runs the model. Constrained output goes to the
//! engine as a JSON Schema: a `response_format` schema as it is; `tool_choice: any` as the
//! call's schema, after the call's opening tag is appended to the prompt. A spent thinking
//! budget closes the thought the way the in-process engine does: the engine's stream is
//! closed and a continuation (prompt, the output so far, the closing tag) is sent, which the
//! engine's prefix cache makes cheap.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use localgem_core::{
    Engine, EngineError, FinishReason, FunctionDecl, GenerateRequest, Generation, ModelInfo,
    OutputFormat, ToolMode, UpstreamHealth,
};
use localgem_remote::{Dialect, EndReason, Job, Pool, PoolConfig, StartError, Stream};
use tokio::sync::mpsc;

use crate::constrain::{bounded, call_schema, CALL_CLOSE, CALL_OPEN};
use crate::output::Output;
use crate::prompt::{template_for, Prompter, Rendered};
use crate::{backend, EngineConfig};

/// A model served by engines elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// Id used in requests.
    pub id: String,
    /// The model's GGUF: its vocabulary and chat template are read (not its weights).
    pub path: PathBuf,
    /// Human-readable name.
    pub display_name: String,
    /// The engines' API.
    pub dialect: Dialect,
    /// The engines' base URLs.
    pub urls: Vec<String>,
    /// Output cap for requests that set none.
    pub default_max_output_tokens: Option<u32>,
}

struct RemoteModel {
    spec: RemoteSpec,
    pool: Arc<Pool>,
    prompter: Arc<Prompter>,
}

/// Models served by remote engines; implements [`Engine`].
pub struct RemoteEngine {
    models: BTreeMap<String, RemoteModel>,
}

impl RemoteEngine {
    /// Read each model's vocabulary and template, and start probing its upstreams (in the
    /// current tokio runtime). Models are ready once an upstream answers.
    ///
    /// # Errors
    /// A GGUF that does not load, a template that does not compile, a bad upstream list.
    pub fn start(specs: Vec<RemoteSpec>, config: &EngineConfig) -> Result<Self, EngineError> {
        let backend = backend().map_err(EngineError::Unavailable)?;
        let mut models = BTreeMap::new();
        for spec in specs {
            let params = LlamaModelParams::default().with_vocab_only(true);
            let model = LlamaModel::load_from_file(backend, &spec.path, &params).map_err(|e| {
                EngineError::Unavailable(format!(
                    "cannot read the vocabulary of {}: {e}",
                    spec.path.display()
                ))
            })?;
            let template = template_for(&model, config.chat_template.clone())
                .map_err(|e| EngineError::Unavailable(format!("{}: {e}", spec.path.display())))?;
            let prompter = Arc::new(Prompter::new(
                Arc::new(model),
                template,
                &spec.id,
                u64::MAX,
                false,
                None,
                None,
            ));
            let pool = Pool::new(PoolConfig {
                model: spec.id.clone(),
                dialect: spec.dialect,
                urls: spec.urls.clone(),
                slots: config.parallel.max(1),
                max_queue: u32::try_from(config.max_queue).unwrap_or(u32::MAX),
            })
            .map_err(EngineError::Unavailable)?;
            tokio::spawn(Pool::probe_loop(Arc::downgrade(&pool)));
            tracing::info!(model = %spec.id, engine = spec.dialect.name(), upstreams = ?spec.urls,
                "serving through remote engines");
            models.insert(
                spec.id.clone(),
                RemoteModel {
                    spec,
                    pool,
                    prompter,
                },
            );
        }
        Ok(RemoteEngine { models })
    }

    fn model(&self, id: &str) -> Result<&RemoteModel, EngineError> {
        self.models
            .get(id)
            .ok_or_else(|| EngineError::UnknownModel {
                model: id.to_owned(),
                available: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

fn start_error(e: StartError) -> EngineError {
    match e {
        StartError::NoUpstream(m) => EngineError::Unavailable(m),
        StartError::Busy(m) => EngineError::Overloaded(m),
        StartError::Rejected(m) => EngineError::InvalidPrompt(m),
    }
}

#[async_trait]
impl Engine for RemoteEngine {
    fn models(&self) -> Vec<ModelInfo> {
        self.models
            .values()
            .map(|m| ModelInfo {
                id: m.spec.id.clone(),
                display_name: m.spec.display_name.clone(),
                context_tokens: m.pool.context_tokens().unwrap_or(0),
                ready: m.pool.ready(),
                vision: false,
                audio_sample_rate: None,
                default_max_output_tokens: m.spec.default_max_output_tokens,
            })
            .collect()
    }

    fn ready(&self) -> bool {
        self.models.values().all(|m| m.pool.ready())
    }

    fn upstreams(&self) -> Vec<UpstreamHealth> {
        self.models.values().flat_map(|m| m.pool.health()).collect()
    }

    async fn count_tokens(&self, request: GenerateRequest) -> Result<u64, EngineError> {
        // The vocabulary is here: counting needs no upstream.
        let prompter = self.model(&request.model)?.prompter.clone();
        tokio::task::spawn_blocking(move || prompter.count(request))
            .await
            .map_err(|e| EngineError::Unavailable(format!("counting the prompt failed: {e}")))?
    }

    async fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        let m = self.model(&request.model)?;
        let (id, engine) = (m.spec.id.clone(), m.spec.dialect.name());
        if let Some(m) = request.messages.iter().find_map(|msg| msg.media.first()) {
            let kind = m.kind();
            return Err(EngineError::Unsupported(format!(
                "model {id} is served by {engine}, and {kind} input is not sent to remote engines"
            )));
        }
        if request.tool_mode == ToolMode::Validated && !request.tools.is_empty() {
            return Err(EngineError::Unsupported(format!(
                "tool_choice \"validated\" is not available for model {id}: it is served by \
                 {engine}, which cannot be given a grammar of free text or a valid call; use \
                 \"auto\" or \"any\""
            )));
        }
        let context = match m.pool.context_tokens() {
            Some(c) => c,
            None if m.pool.health().iter().all(|u| u.error.is_some()) => {
                return Err(start_error(StartError::NoUpstream(format!(
                    "no upstream of model {id} is serving"
                ))))
            }
            None => return Err(EngineError::Loading(id)),
        };
        m.prompter.set_limit(context.saturating_sub(1));
        let prompter = m.prompter.clone();
        let Rendered {
            request,
            runs,
            in_thought,
            ..
        } = tokio::task::spawn_blocking(move || prompter.render(request))
            .await
            .map_err(|e| EngineError::Unavailable(format!("preparing the prompt failed: {e}")))??;
        let vocab = m.prompter.model().vocab();
        let mut prompt: Vec<u32> = runs.iter().flatten().map(|t| t.0 as u32).collect();
        let (schema, call) = match (&request.format, request.tool_mode) {
            (_, ToolMode::Any) if !request.tools.is_empty() => {
                let tools: Vec<&FunctionDecl> = request.tools.iter().collect();
                (Some(call_schema(&tools)), true)
            }
            (OutputFormat::JsonSchema(s), _) => (Some(bounded(s)), false),
            _ => (None, false),
        };
        if call {
            let open = format!("{CALL_OPEN}\n");
            prompt.extend(
                vocab
                    .tokenize(open.as_bytes(), false, true)
                    .iter()
                    .map(|t| t.0 as u32),
            );
        }
        let room = context.saturating_sub(prompt.len() as u64 + 1);
        if room == 0 {
            return Err(EngineError::PromptTooLong {
                model: id,
                tokens: prompt.len() as u64,
                limit: context.saturating_sub(1),
            });
        }
        let think = m.prompter.template().think_tags().cloned();
        let (tx, events) = mpsc::unbounded_channel();
        let mut out = Output::new(&request, think.clone(), in_thought, tx);
        let reasoning = think.is_some() && request.thinking.budget != Some(0) && schema.is_none();
        let cap = u64::from(out.max_output) + if reasoning { u64::from(out.budget) } else { 0 };
        let job = Job {
            max_tokens: cap.min(room) as u32,
            prompt,
            temperature: request.sampling.temperature.max(0.0),
            top_p: request.sampling.top_p,
            top_k: request.sampling.top_k,
            seed: request.sampling.seed,
            json_schema: schema,
            cache_salt: (!request.cache_scope.is_empty()).then(|| request.cache_scope.clone()),
        };
        let stream = m
            .pool
            .start(&job, &request.cache_scope, None)
            .await
            .map_err(start_error)?;
        if call {
            out.text(&format!("{CALL_OPEN}\n"));
        }
        let prompt_tokens = job.prompt.len() as u64;
        tokio::spawn(
            Drive {
                pool: m.pool.clone(),
                prompter: m.prompter.clone(),
                engine,
                scope: request.cache_scope,
                job,
                out,
                context,
                call,
                received: 0,
                output_ids: Vec::new(),
                output_bytes: Vec::new(),
                ids_exact: true,
                cached: None,
                retried: false,
            }
            .run(stream),
        );
        Ok(Generation {
            prompt_tokens,
            media_tokens: localgem_core::MediaTokens::default(),
            events,
        })
    }
}

/// How a remote generation ends.
enum Verdict {
    Go,
    Finish(FinishReason, bool),
    Fail(String),
    /// Close the stream and continue from `prompt` (a thought closed on its budget).
    Continue(Vec<u32>),
}

/// One remote generation, from its stream to its events.
struct Drive {
    pool: Arc<Pool>,
    prompter: Arc<Prompter>,
    engine: &'static str,
    scope: String,
    /// The first request (its prompt is the conversation's).
    job: Job,
    out: Output,
    context: u64,
    /// `tool_choice: any`: the prompt opened a call, the output is its JSON.
    call: bool,
    /// Tokens the current stream has generated so far (as the engine counts them).
    received: u64,
    output_ids: Vec<u32>,
    output_bytes: Vec<u8>,
    /// `output_ids` holds every generated token (the engine left none out).
    ids_exact: bool,
    cached: Option<u64>,
    retried: bool,
}

impl Drive {
    async fn run(mut self, mut stream: Stream) {
        let mut ended: Option<EndReason> = None;
        loop {
            let next = tokio::select! {
                // The request is gone: dropping the stream closes the engine's connection,
                // which stops its generation.
                () = self.out.tx.closed() => return,
                n = stream.next() => n,
            };
            let chunk = match next {
                Ok(Some(c)) => c,
                Ok(None) => {
                    if let Some(reason) = ended.take() {
                        return self.end(reason);
                    }
                    let why = "the engine closed the stream before the answer ended";
                    if self.broken(&mut stream, why.into()).await {
                        continue;
                    }
                    return;
                }
                Err(e) => {
                    if self.broken(&mut stream, e).await {
                        continue;
                    }
                    return;
                }
            };
            if self.cached.is_none() {
                self.cached = chunk.cached_tokens;
            }
            match self.tokens(&chunk.tokens, chunk.text.as_deref(), chunk.generated) {
                Verdict::Go => {}
                Verdict::Finish(reason, stopped) => return self.finish(reason, stopped),
                Verdict::Fail(why) => return self.out.fail(why),
                Verdict::Continue(prompt) => {
                    let job = Job {
                        max_tokens: self.left(prompt.len()),
                        prompt,
                        ..self.job.clone()
                    };
                    match self.pool.start(&job, &self.scope, None).await {
                        Ok(s) => {
                            stream = s;
                            self.received = 0;
                            continue;
                        }
                        Err(e) => return self.out.lost(e.to_string()),
                    }
                }
            }
            if let Some(reason) = chunk.end {
                ended = Some(reason);
            }
            if chunk.last {
                if let Some(reason) = ended.take() {
                    return self.end(reason);
                }
                return self
                    .out
                    .fail(format!("{} ended the stream without a reason", self.engine));
            }
        }
    }

    /// The stream broke. Before any token, the request is sent once more to another upstream
    /// (true: `stream` is the new one); after, the generation fails (a second engine's answer
    /// would not continue the first's).
    async fn broken(&mut self, stream: &mut Stream, why: String) -> bool {
        let url = stream.url().to_owned();
        if self.out.generated == 0 && self.received == 0 && !self.retried {
            self.retried = true;
            let again = self
                .pool
                .start(&self.job, &self.scope, Some(stream.upstream()))
                .await;
            return match again {
                Ok(s) => {
                    tracing::warn!(upstream = %url, "{why}; sent again to {}", s.url());
                    *stream = s;
                    true
                }
                Err(e) => {
                    self.out
                        .lost(format!("the {} upstream failed ({why}); {e}", self.engine));
                    false
                }
            };
        }
        tracing::warn!(upstream = %url, "{why}: the answer is lost");
        self.out.lost(format!(
            "the {} upstream serving this answer failed mid-answer: {why}",
            self.engine
        ));
        false
    }

    /// Tokens left for a continuation whose prompt has `prompt_len` tokens.
    fn left(&self, prompt_len: usize) -> u32 {
        let room = self.context.saturating_sub(prompt_len as u64 + 1);
        let cap = u64::from(self.out.max_output) + u64::from(self.out.budget);
        cap.saturating_sub(u64::from(self.out.generated))
            .min(room)
            .max(1) as u32
    }

    fn piece(&self, t: u32) -> Vec<u8> {
        self.prompter
            .model()
            .vocab()
            .token_to_piece(LlamaToken(t as i32), false, None)
    }

    fn tokens(&mut self, ids: &[u32], text: Option<&str>, generated: Option<u64>) -> Verdict {
        let prompter = self.prompter.clone();
        let vocab = prompter.model().vocab();
        let n_vocab = vocab.n_tokens().max(0) as u32;
        if let Some(bad) = ids.iter().find(|&&t| t >= n_vocab) {
            return Verdict::Fail(format!(
                "{} sent token id {bad}, outside the model's vocabulary of {n_vocab}: is it \
                 serving the same model?",
                self.engine
            ));
        }
        let pieces: Vec<Vec<u8>> = ids.iter().map(|&t| self.piece(t)).collect();
        // Tokens the engine generated but left out: their bytes lead this chunk's text.
        let missing = generated
            .map(|g| g.saturating_sub(self.received + ids.len() as u64))
            .unwrap_or(0);
        if missing > 0 {
            self.ids_exact = false;
            let own: Vec<u8> = pieces.concat();
            let gap = text
                .map(str::as_bytes)
                .and_then(|t| t.strip_suffix(own.as_slice()))
                .unwrap_or_default()
                .to_vec();
            self.received += missing;
            for i in 0..missing {
                let bytes: &[u8] = if i == 0 { &gap } else { &[] };
                self.output_bytes.extend_from_slice(bytes);
                if let v @ (Verdict::Finish(..) | Verdict::Continue(_)) = self.one(bytes) {
                    return v;
                }
            }
        }
        for (&t, piece) in ids.iter().zip(&pieces) {
            self.received += 1;
            if vocab.is_eog(LlamaToken(t as i32)) {
                return Verdict::Finish(FinishReason::Stop, false);
            }
            self.output_ids.push(t);
            self.output_bytes.extend_from_slice(piece);
            if let v @ (Verdict::Finish(..) | Verdict::Continue(_)) = self.one(piece) {
                return v;
            }
        }
        Verdict::Go
    }

    /// One generated token's bytes through the output, and what follows from it.
    fn one(&mut self, bytes: &[u8]) -> Verdict {
        if self.out.token(bytes) {
            return Verdict::Finish(FinishReason::Stop, true);
        }
        if self.out.capped() {
            return Verdict::Finish(FinishReason::MaxTokens, false);
        }
        if (self.job.prompt.len() as u64 + u64::from(self.out.generated)) + 1 >= self.context {
            return Verdict::Finish(FinishReason::ContextFull, false);
        }
        let Some(close) = self.out.thought_spent() else {
            return Verdict::Go;
        };
        let prompter = self.prompter.clone();
        let vocab = prompter.model().vocab();
        let close_ids: Vec<u32> = vocab
            .tokenize(close.as_bytes(), false, true)
            .iter()
            .map(|t| t.0 as u32)
            .collect();
        for &t in &close_ids {
            let piece = self.piece(t);
            self.output_bytes.extend_from_slice(&piece);
            self.output_ids.push(t);
            if self.out.token(&piece) {
                return Verdict::Finish(FinishReason::Stop, true);
            }
        }
        let mut prompt = self.job.prompt.clone();
        if self.ids_exact {
            prompt.extend(&self.output_ids);
        } else {
            prompt.extend(
                vocab
                    .tokenize(&self.output_bytes, false, true)
                    .iter()
                    .map(|t| t.0 as u32),
            );
        }
        Verdict::Continue(prompt)
    }

    /// The engine said the generation ended.
    fn end(&mut self, reason: EndReason) {
        match reason {
            EndReason::Eos => self.finish(FinishReason::Stop, false),
            EndReason::Length => {
                let used = self.job.prompt.len() as u64 + u64::from(self.out.generated);
                if used + 1 >= self.context {
                    self.finish(FinishReason::ContextFull, false);
                } else {
                    self.finish(FinishReason::MaxTokens, false);
                }
            }
            EndReason::Abort(why) => self.out.lost(format!("{}: {why}", self.engine)),
        }
    }

    fn finish(&mut self, reason: FinishReason, stopped: bool) {
        if self.call && !stopped {
            // The grammar ended with the call's JSON: its closing tag completes the call.
            self.out.text(&format!("\n{CALL_CLOSE}"));
        }
        let cached = self.cached.unwrap_or(0).min(self.job.prompt.len() as u64);
        self.out
            .finish(reason, stopped, self.job.prompt.len() as u64, cached);
    }
}
