//! The thread that owns one model and its context.
//!
//! Threading model: llama.cpp's `LlamaContext` borrows the model and is not `Send`, so both live
//! on this one OS thread for their whole life (the model itself is shared, read-only, with the
//! callers, which render and tokenize prompts and compile output grammars:
//! [`crate::prompt`]). Requests arrive tokenized over a bounded tokio channel; states on disk
//! are found and read by a reader thread and written by a writer thread ([`disk`]). Each step
//! of the loop admits new requests ([`admit`]), drops cancelled ones (their event receiver is
//! gone), plans one batch across all live sequences (one token per decoding sequence, its
//! speculative draft, and chunks of pending prompts: [`crate::scheduler`]), runs one `decode`,
//! and picks, checks and streams tokens for each sequence whose logits were computed
//! ([`step`], [`sample`]).
//!
//! Files: [`load`] (loading, the loop), [`admit`], [`step`], [`sample`], [`projector`]
//! (images and audio), [`disk`] (KV states on disk). The decisions they act on are plain
//! code with unit tests that need no model: [`crate::scheduler`] (batch plan, step-time
//! budget), [`crate::kv`] (slot choice, eviction), [`crate::restore`] (restore or prefill),
//! [`crate::speculate`] (drafts).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::mtmd::MtmdInputChunks;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;
use localgem_core::{EngineError, EngineEvent, FinishReason, GenerateRequest, Generation};
use tokio::sync::{mpsc, oneshot, watch};

use crate::constrain::{Closer, Grammars};
use crate::device::{cell_bytes, describe, gpu_device};
use crate::fit;
use crate::kv::KvManager;
use crate::media::{self, MediaSpan};
use crate::output::Output;
use crate::prompt::{template_for, Prompter, Rendered};
use crate::restore::RestoreCosts;
use crate::scheduler::{background_budget, chunk, plan, Limits, Mixing, SeqState, StepBudget};
use crate::speculate::{self, DraftPolicy};
use crate::spill::SpillDir;
use crate::telemetry::EngineMetrics;
use crate::template::ChatTemplate;
use crate::{backend, EngineConfig, ModelSpec};

mod admit;
mod disk;
mod drafter;
mod load;
mod probe;
mod projector;
mod sample;
mod step;

use disk::{fingerprint, start_reader, start_writer, Reader, Restore, SpillTx};
use drafter::Drafter;
pub(crate) use load::run;
use projector::Projector;

/// A message to the worker.
pub(crate) enum Command {
    /// A request whose prompt the caller rendered and tokenized ([`Prompter`]).
    Generate {
        rendered: Box<Rendered>,
        admit: oneshot::Sender<Result<Generation, EngineError>>,
        /// The caller's span: the request's timings are logged within it.
        span: tracing::Span,
    },
    /// Finish what is running, prefill pending answers, write every state to disk, then stop
    /// and answer (graceful shutdown).
    Drain { done: oneshot::Sender<()> },
    /// Drop every cached state of a scope, in memory and on disk.
    Forget { scope: String },
}

/// Load state reported by the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadState {
    Loading,
    Ready {
        context_tokens: u64,
        vision: bool,
        audio_rate: Option<u32>,
    },
    Failed(String),
}

/// A request whose prompt is tokenized, waiting for a slot.
struct Pending {
    prompt: Vec<LlamaToken>,
    /// Images in the prompt.
    media: Vec<MediaSpan>,
    /// Projector input already prepared for them (by index).
    prepared: Vec<Option<MtmdInputChunks>>,
    request: GenerateRequest,
    tx: mpsc::UnboundedSender<EngineEvent>,
    /// The grammar the output must follow.
    matcher: Option<Matcher>,
    /// The rendered prompt already opened the reasoning block.
    in_thought: bool,
    /// The caller's span, and when the request was queued.
    span: tracing::Span,
    queued: Instant,
    /// A state on disk being read for it.
    restore: Restore,
}

/// When a sequence's request was queued, got its slot and its first token, and how its
/// drafts fared.
#[derive(Debug, Clone, Copy)]
struct Timing {
    queued: Instant,
    admitted: Instant,
    first_token: Option<Instant>,
    drafted: usize,
    accepted: usize,
}

impl Timing {
    /// Milliseconds from `a` to `b`.
    fn ms(a: Instant, b: Instant) -> f64 {
        b.saturating_duration_since(a).as_secs_f64() * 1000.0
    }

    /// Log a finished request's timings (at `info`, within the caller's span).
    fn log(&self, prompt: usize, reused: usize, output: usize, reason: FinishReason) {
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let decode_ms = Self::ms(first, now);
        let tokens_per_s = if decode_ms > 0.0 && output > 1 {
            (output - 1) as f64 / (decode_ms / 1000.0)
        } else {
            0.0
        };
        tracing::info!(
            queue_ms = format!("{:.1}", Self::ms(self.queued, self.admitted)),
            prefill_ms = format!("{:.1}", Self::ms(self.admitted, first)),
            ttft_ms = format!("{:.1}", Self::ms(self.queued, first)),
            decode_ms = format!("{decode_ms:.1}"),
            prompt,
            reused,
            output,
            tokens_per_s = format!("{tokens_per_s:.1}"),
            drafted = self.drafted,
            accepted = self.accepted,
            ?reason,
            "generation finished"
        );
    }
}

/// A prompt as tokens, with its images and the projector input prepared for them.
struct Tokenized {
    tokens: Vec<LlamaToken>,
    media: Vec<MediaSpan>,
    prepared: Vec<Option<MtmdInputChunks>>,
}

/// A rendered, tokenized request, before it is queued.
struct Prepared {
    prompt: Vec<LlamaToken>,
    media: Vec<MediaSpan>,
    prepared: Vec<Option<MtmdInputChunks>>,
    request: GenerateRequest,
    matcher: Option<Matcher>,
    in_thought: bool,
}

/// Under a grammar, within this many tokens (a quarter of the answer's room at most: the
/// cap, or the context left after the prompt) of the last one that still leaves room to
/// complete the output, the output wraps up: it ends as soon as the grammar allows, and
/// takes no token that makes completing it longer. (Completing it within the cap and the
/// context is kept possible at every token, see [`Closer`].)
const CLOSE_MARGIN: u32 = 48;

/// A live sequence holding a KV slot.
struct Seq {
    slot: i32,
    scope: String,
    prompt: Vec<LlamaToken>,
    /// Images in the prompt (their positions hold synthetic ids, see [`media`]).
    media: Vec<MediaSpan>,
    /// Projector input prepared at admission for those images (by index), taken when the
    /// image is encoded.
    prepared: Vec<Option<MtmdInputChunks>>,
    /// Prompt tokens found in the slot's KV at admission (not prefilled).
    reused: usize,
    fed: usize,
    n_past: i32,
    next: Option<LlamaToken>,
    sampler: LlamaSampler,
    /// What sampling takes off the logits before the sampler ([`sample::sample_at`]).
    preselect: sample::Preselect,
    /// Text, reasoning and calls streamed to the request; token counts and caps.
    out: Output,
    /// Sampled tokens, in order (the end-of-generation token included when one ended it).
    output: Vec<LlamaToken>,
    /// The grammar the output must follow.
    matcher: Option<Matcher>,
    /// Keeps the grammar's output completable within the tokens left.
    closer: Closer,
    /// Tokens to feed instead of sampling (closing a thought whose budget is spent).
    forced: VecDeque<LlamaToken>,
    /// Prompt and output ids, where drafts are looked up ([`speculate::lookup`]).
    history: Vec<i32>,
    /// How many tokens this sequence drafts.
    policy: DraftPolicy,
    /// The draft fed after the next token this step.
    draft: Vec<LlamaToken>,
    /// The draft is the forced tokens (certain, so not counted as speculation).
    forced_draft: bool,
    /// The caller's span, and the request's timings.
    span: tracing::Span,
    timing: Timing,
}

/// A finished conversation whose KV is being extended with its answer in the background, so
/// the next turn prefills only its new message. The answer is prefilled (not kept from the
/// one-token decodes that produced it, which round differently from a prefill), so the
/// extended state is exactly what a fresh prefill of the next prompt computes.
struct Extension {
    slot: i32,
    scope: String,
    /// Prompt and answer; `tokens[..fed]` are in the slot's KV.
    tokens: Vec<LlamaToken>,
    fed: usize,
}

/// How long the engine must have been idle before background answer prefill starts.
const IDLE_BEFORE_BACKGROUND: Duration = Duration::from_millis(25);

/// Background answer tokens per step (only ever taken when no live sequence needs the step).
const EXTEND_CHUNK: usize = 16;

struct Worker<'m> {
    model_id: String,
    model: &'m LlamaModel,
    projector: Option<Projector>,
    /// Output grammars (compiled by the prompter, off this thread; used here to close them).
    grammars: Arc<Grammars>,
    /// Scopes whose cached states are to be dropped at the next step.
    forget_pending: Vec<String>,
    template: Arc<ChatTemplate>,
    per_seq: u32,
    kv: KvManager,
    parallel: usize,
    waiting: VecDeque<Pending>,
    active: Vec<Seq>,
    extensions: Vec<Extension>,
    max_queue: usize,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    /// How many prompt tokens a step may carry next to decoding sequences.
    step_budget: StepBudget,
    /// Draft tokens a step may verify (0: no speculation).
    draft_max: usize,
    /// Draft whatever a draft costs ([`EngineConfig::draft_always`]).
    draft_always: bool,
    /// The draft model, when one is given: it drafts where prompt lookup finds nothing.
    drafter: Option<Drafter<'m>>,
    reuse_decoded_kv: bool,
    /// Prompt chunks go in steps of their own (no flash attention: exact reuse), the next
    /// one when both prompts and decoders wait if `prompt_turn`.
    prompts_apart: bool,
    prompt_turn: bool,
    /// A KV stream copy is queued for the next decode.
    copy_pending: bool,
    /// Whether the model has sliding-window layers (a restored state is then never cut).
    swa: bool,
    /// Finished states on disk, and the writer thread that puts them there.
    spill: Option<Arc<SpillDir>>,
    spill_tx: Option<SpillTx>,
    spill_writer: Option<std::thread::JoinHandle<()>>,
    /// Set by [`Command::Drain`]: who to tell once everything is on disk.
    draining: Option<oneshot::Sender<()>>,
    /// Finds and reads states on disk for queued requests.
    reader: Option<Reader>,
    read_ids: u64,
    /// When the reader thread was last asked to look for a state not in the index.
    last_rescan: Option<Instant>,
    /// Running estimates for deciding whether a restore is cheaper than a prefill.
    costs: RestoreCosts,
    metrics: EngineMetrics,
}

impl Worker<'_> {
    /// Graceful shutdown, once nothing is live: prefill the pending answers now (no idle wait),
    /// then let the writer thread put every state on disk.
    fn drain(&mut self, ctx: &mut LlamaContext<'_>) {
        let mut steps = 0;
        while !self.extensions.is_empty() && steps < 10_000 {
            self.step(ctx);
            steps += 1;
        }
        if let Some((states, bytes)) = self.spill_tx.as_ref().map(SpillTx::pending) {
            tracing::info!(model = %self.model_id, states, bytes, "writing queued KV states");
        }
        self.spill_tx = None;
        if let Some(writer) = self.spill_writer.take() {
            let _ = writer.join();
        }
        tracing::info!(model = %self.model_id, "engine drained");
    }

    fn fail_all(&mut self, ctx: &mut LlamaContext<'_>, why: &str) {
        tracing::error!(model = %self.model_id, "{why}");
        for e in std::mem::take(&mut self.extensions) {
            self.discard(ctx, e.slot);
        }
        for s in std::mem::take(&mut self.active) {
            s.out.fail(why);
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
