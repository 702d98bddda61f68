//! The thread that owns one model and its context.
//!
//! Threading model: llama.cpp's `LlamaContext` borrows the model and is not `Send`, so both live
//! on this one OS thread for their whole life. Requests arrive over a bounded tokio channel;
//! each step of the loop admits new requests, drops cancelled ones (their event receiver is
//! gone), plans one batch across all live sequences (one token per decoding sequence plus
//! chunks of pending prompts), runs one `decode`, and samples and streams one token per
//! sequence whose logits were computed.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::PathBuf;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use localgem_core::{
    EngineError, EngineEvent, FinishReason, GenerateRequest, Generation, TokenUsage,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::kv::KvManager;
use crate::scheduler::{plan, SeqState};
use crate::telemetry::EngineMetrics;
use crate::template::ChatTemplate;
use crate::text::{StopMatcher, Utf8Buffer};
use crate::{backend, EngineConfig};

/// A message to the worker.
pub(crate) enum Command {
    Generate {
        request: GenerateRequest,
        admit: oneshot::Sender<Result<Generation, EngineError>>,
    },
}

/// Load state reported by the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadState {
    Loading,
    Ready { context_tokens: u64 },
    Failed(String),
}

/// A request whose prompt is tokenized, waiting for a slot.
struct Pending {
    prompt: Vec<LlamaToken>,
    request: GenerateRequest,
    tx: mpsc::UnboundedSender<EngineEvent>,
}

/// A live sequence holding a KV slot.
struct Seq {
    slot: i32,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens found in the slot's KV at admission (not prefilled).
    reused: usize,
    fed: usize,
    n_past: i32,
    next: Option<LlamaToken>,
    sampler: LlamaSampler,
    tx: mpsc::UnboundedSender<EngineEvent>,
    utf8: Utf8Buffer,
    stop: StopMatcher,
    generated: u32,
    max_output: u32,
}

fn sampler_for(request: &GenerateRequest) -> LlamaSampler {
    let s = request.sampling;
    if s.temperature <= 0.0 {
        LlamaSampler::greedy()
    } else {
        LlamaSampler::chain_simple([
            LlamaSampler::top_p(s.top_p.clamp(f32::MIN_POSITIVE, 1.0), 1),
            LlamaSampler::temp(s.temperature),
            LlamaSampler::dist(s.seed),
        ])
    }
}

pub(crate) fn run(
    path: PathBuf,
    model_id: String,
    config: EngineConfig,
    mut rx: mpsc::Receiver<Command>,
    state: &watch::Sender<LoadState>,
) {
    let fail = |msg: String| {
        tracing::error!(model = %model_id, "{msg}");
        let _ = state.send(LoadState::Failed(msg));
    };
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let mut mparams = LlamaModelParams::default();
    if config.gpu_layers > 0 {
        mparams = mparams.with_n_gpu_layers(config.gpu_layers);
    }
    let model = match LlamaModel::load_from_file(backend, &path, &mparams) {
        Ok(m) => m,
        Err(e) => return fail(format!("cannot load {}: {e}", path.display())),
    };
    let parallel = config.parallel.max(1);
    let kv_slots = config.kv_slots.clamp(parallel, 256);
    let n_ctx = config.ctx_size.max(256 * kv_slots);
    // One KV stream per slot (live sequences and finished ones kept for reuse), each
    // `n_ctx / kv_slots` cells. Exactness needs both choices below (`examples/kv_probe.rs`):
    // in a unified buffer a sequence whose cells do not start at cell 0 rounds differently,
    // and with flash attention a prefill split across decodes rounds differently from a
    // one-shot one. With separate streams and no flash attention, batched, chunked and reused
    // computation are bit-identical to a fresh one, so reuse never changes an answer. The
    // full-size SWA cache keeps every position, so sliding-window models (Gemma 3) reuse too.
    let cparams = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size)
        .with_n_seq_max(kv_slots)
        .with_kv_unified(false)
        .with_swa_full(true)
        .with_flash_attention_policy(if config.flash_attention { 1 } else { 0 })
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads);
    let mut ctx = match model.new_context(backend, cparams) {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "cannot create a context for {}: {e}",
                path.display()
            ))
        }
    };
    let per_seq = ctx.n_ctx() / kv_slots;
    let arch = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let vocab = model.vocab();
    let piece =
        |t: LlamaToken| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    let gguf_template = model
        .chat_template(None)
        .ok()
        .and_then(|t| t.to_string().ok());
    let template = match ChatTemplate::new(
        gguf_template,
        &arch,
        &piece(vocab.bos()),
        &piece(vocab.eos()),
    ) {
        Ok(t) => t,
        Err(e) => {
            return fail(format!(
                "chat template of {} does not compile: {e}",
                path.display()
            ))
        }
    };
    tracing::info!(
        model = %model_id, arch = %arch, template = template.source, n_ctx = ctx.n_ctx(),
        per_seq, parallel, threads = config.threads, "model ready"
    );
    let _ = state.send(LoadState::Ready {
        context_tokens: u64::from(per_seq),
    });

    let metrics = EngineMetrics::new(&model_id);
    let mut w = Worker {
        model_id,
        model: &model,
        template,
        per_seq,
        kv: KvManager::new(kv_slots as usize, config.min_reuse.max(1) as usize),
        parallel: parallel as usize,
        waiting: VecDeque::new(),
        active: Vec::new(),
        max_queue: config.max_queue,
        batch: LlamaBatch::new(config.batch_size as usize, 1),
        batch_size: config.batch_size as usize,
        metrics,
    };
    loop {
        if w.active.is_empty() && w.waiting.is_empty() {
            match rx.blocking_recv() {
                Some(cmd) => w.handle(cmd),
                None => break,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            w.handle(cmd);
        }
        w.step(&mut ctx);
        w.metrics.queue_depth.set(w.waiting.len() as f64);
        w.metrics.running.set(w.active.len() as f64);
        w.metrics.resident.set(w.kv.resident() as f64);
    }
    tracing::info!(model = %w.model_id, "engine thread stopped");
}

struct Worker<'m> {
    model_id: String,
    model: &'m LlamaModel,
    template: ChatTemplate,
    per_seq: u32,
    kv: KvManager,
    parallel: usize,
    waiting: VecDeque<Pending>,
    active: Vec<Seq>,
    max_queue: usize,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    metrics: EngineMetrics,
}

impl Worker<'_> {
    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Generate { request, admit } => {
                let result = self.prepare(request);
                match result {
                    Ok(pending) => {
                        let (tx, events) = mpsc::unbounded_channel();
                        let prompt_tokens = pending.0.len() as u64;
                        let gen = Generation {
                            prompt_tokens,
                            events,
                        };
                        if admit.send(Ok(gen)).is_ok() {
                            self.waiting.push_back(Pending {
                                prompt: pending.0,
                                request: pending.1,
                                tx,
                            });
                        }
                    }
                    Err(e) => {
                        let _ = admit.send(Err(e));
                    }
                }
            }
        }
    }

    fn prepare(
        &self,
        request: GenerateRequest,
    ) -> Result<(Vec<LlamaToken>, GenerateRequest), EngineError> {
        if self.waiting.len() >= self.max_queue {
            return Err(EngineError::Overloaded(format!(
                "{} requests are already waiting for model {}",
                self.waiting.len(),
                self.model_id
            )));
        }
        let text = self.template.render(&request.messages).map_err(|e| {
            EngineError::InvalidPrompt(format!("the chat template rejected the conversation: {e}"))
        })?;
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), false, true);
        if vocab.should_add_bos() && tokens.first() != Some(&vocab.bos()) {
            tokens.insert(0, vocab.bos());
        }
        let limit = u64::from(self.per_seq.saturating_sub(1));
        if tokens.len() as u64 > limit {
            return Err(EngineError::PromptTooLong {
                model: self.model_id.clone(),
                tokens: tokens.len() as u64,
                limit,
            });
        }
        Ok((tokens, request))
    }

    /// Move waiting requests into slots (up to `parallel` live sequences), reusing the longest
    /// cached prefix; drop cancelled ones.
    fn admit(&mut self, ctx: &mut LlamaContext<'_>) {
        self.waiting.retain(|p| !p.tx.is_closed());
        while self.active.len() < self.parallel {
            let Some(p) = self.waiting.pop_front() else {
                break;
            };
            let ids: Vec<i32> = p.prompt.iter().map(|t| t.0).collect();
            let Some(lease) = self.kv.acquire(&ids) else {
                self.waiting.push_front(p);
                break;
            };
            let slot = lease.slot;
            let mut reused = lease.reused;
            // Drop whatever the slot holds past the reused prefix.
            let kept = ctx
                .clear_kv_cache_seq(Some(slot as u32), Some(reused as u32), None)
                .unwrap_or(false);
            if !kept {
                let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
                reused = 0;
            }
            tracing::debug!(
                slot,
                reused,
                prompt = ids.len(),
                evicted = lease.evicted,
                "admitted"
            );
            if reused > 0 {
                self.metrics.cache_hits.increment(1);
                self.metrics.tokens_reused.increment(reused as u64);
            } else {
                self.metrics.cache_misses.increment(1);
            }
            if lease.evicted {
                self.metrics.evictions.increment(1);
            }
            self.active.push(Seq {
                slot,
                sampler: sampler_for(&p.request),
                stop: StopMatcher::new(&p.request.stop_sequences),
                max_output: p.request.max_output_tokens.max(1),
                prompt: p.prompt,
                reused,
                fed: reused,
                n_past: reused as i32,
                next: None,
                tx: p.tx,
                utf8: Utf8Buffer::default(),
                generated: 0,
            });
        }
    }

    fn step(&mut self, ctx: &mut LlamaContext<'_>) {
        // Cancelled sequences free their slot before anything is computed for them.
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].tx.is_closed() {
                let s = self.active.swap_remove(i);
                self.discard(ctx, s.slot);
            } else {
                i += 1;
            }
        }
        self.admit(ctx);
        if self.active.is_empty() {
            return;
        }

        let states: Vec<SeqState> = self
            .active
            .iter()
            .map(|s| SeqState {
                pending_prompt: s.prompt.len() - s.fed,
                decoding: s.next.is_some(),
            })
            .collect();
        let planned = plan(&states, self.batch_size);
        self.batch.clear();
        let mut logits_at: Vec<Option<i32>> = vec![None; self.active.len()];
        let (mut prefilled, mut decoded) = (0u64, 0u64);
        for (i, (s, &n)) in self.active.iter_mut().zip(&planned).enumerate() {
            if n == 0 {
                continue;
            }
            if let Some(tok) = s.next.take() {
                if self.batch.add(tok, s.n_past, &[s.slot], true).is_err() {
                    continue;
                }
                s.n_past += 1;
                decoded += 1;
                logits_at[i] = Some(self.batch.n_tokens() - 1);
            } else {
                for k in 0..n {
                    let last = s.fed + k + 1 == s.prompt.len();
                    if self
                        .batch
                        .add(s.prompt[s.fed + k], s.n_past, &[s.slot], last)
                        .is_err()
                    {
                        break;
                    }
                    s.n_past += 1;
                    if last {
                        logits_at[i] = Some(self.batch.n_tokens() - 1);
                    }
                }
                s.fed += n;
                prefilled += n as u64;
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        // Each slot has its own KV stream and every sequence stays within its stream's size
        // (prompt limit at admission, `ContextFull` while generating), so evicting another
        // slot could never make room here: any decode failure fails the batch.
        if let Err(e) = ctx.decode(&mut self.batch) {
            self.fail_all(ctx, &format!("decode failed: {e}"));
            return;
        }

        self.metrics.prefill_tokens.increment(prefilled);
        self.metrics.decode_tokens.increment(decoded);
        let vocab = self.model.vocab();
        let mut finished: Vec<(usize, FinishReason, bool)> = Vec::new();
        for (i, s) in self.active.iter_mut().enumerate() {
            let Some(idx) = logits_at[i] else { continue };
            let tok = s.sampler.sample(ctx, idx);
            if vocab.is_eog(tok) {
                finished.push((i, FinishReason::Stop, false));
                continue;
            }
            s.generated += 1;
            let text = s.utf8.push(&vocab.token_to_piece(tok, false, None));
            let out = s.stop.push(&text);
            if !out.emit.is_empty() {
                let _ = s.tx.send(EngineEvent::Text(out.emit));
            }
            if out.stopped {
                finished.push((i, FinishReason::Stop, true));
            } else if s.generated >= s.max_output {
                finished.push((i, FinishReason::MaxTokens, false));
            } else if s.n_past as u32 + 1 >= self.per_seq {
                finished.push((i, FinishReason::ContextFull, false));
            } else {
                s.next = Some(tok);
            }
        }
        // Remove from the back so indices stay valid.
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (i, reason, stopped) in finished {
            let mut s = self.active.swap_remove(i);
            if !stopped {
                let rest = s.utf8.finish();
                let out = s.stop.push(&rest);
                let mut tail = out.emit;
                if !out.stopped {
                    tail.push_str(&s.stop.finish());
                }
                if !tail.is_empty() {
                    let _ = s.tx.send(EngineEvent::Text(tail));
                }
            }
            let _ = s.tx.send(EngineEvent::Finished {
                reason,
                usage: TokenUsage {
                    input_tokens: s.prompt.len() as u64,
                    output_tokens: u64::from(s.generated),
                    cached_tokens: s.reused as u64,
                },
            });
            // Keep only the prompt's KV resident. The generated tokens' K/V were written by
            // one-token decodes, which round differently from the batched prefill a fresh
            // request would do (`examples/kv_probe.rs`, case G), so reusing them could change
            // the next answer; the next turn prefills the answer again instead.
            let held: Vec<i32> = s.prompt.iter().map(|t| t.0).collect();
            let _ = ctx.clear_kv_cache_seq(Some(s.slot as u32), Some(held.len() as u32), None);
            self.kv.finish(s.slot, held);
        }
    }

    fn fail_all(&mut self, ctx: &mut LlamaContext<'_>, why: &str) {
        tracing::error!(model = %self.model_id, "{why}");
        for s in std::mem::take(&mut self.active) {
            let _ = s.tx.send(EngineEvent::Failed(why.to_owned()));
            self.discard(ctx, s.slot);
        }
    }

    /// Free a slot whose state is not worth keeping (cancelled or failed sequence).
    fn discard(&mut self, ctx: &mut LlamaContext<'_>, slot: i32) {
        if let Err(e) = ctx.clear_kv_cache_seq(Some(slot as u32), None, None) {
            tracing::error!("cannot clear KV of slot {slot}: {e}");
        }
        self.kv.free(slot);
    }
}
