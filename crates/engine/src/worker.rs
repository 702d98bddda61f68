//! The thread that owns one model and its context.
//!
//! Threading model: llama.cpp's `LlamaContext` borrows the model and is not `Send`, so both live
//! on this one OS thread for their whole life (the model itself is shared, read-only, with the
//! callers, which render and tokenize prompts: [`crate::prompt`]). Requests arrive tokenized
//! over a bounded tokio channel; each step of the loop admits new requests, drops cancelled
//! ones (their event receiver is gone), plans one batch across all live sequences (one token
//! per decoding sequence plus chunks of pending prompts), runs one `decode`, and samples and
//! streams one token per sequence whose logits were computed.

use std::collections::VecDeque;
use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::mtmd::{
    MtmdBitmap, MtmdContext, MtmdContextParams, MtmdInputChunks, MtmdInputText,
};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;
use localgem_core::{
    Attachment, EngineError, EngineEvent, FinishReason, GenerateRequest, Generation, MediaData,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::constrain::{try_token, Closer, Grammars, Pick, Verdict};
use crate::device::{cell_bytes, describe, gpu_device};
use crate::fit;
use crate::kv::KvManager;
use crate::media::{self, MediaSpan};
use crate::output::Output;
use crate::prompt::{template_for, Prompter, Rendered};
use crate::scheduler::{background_budget, plan, SeqState, StepBudget};
use crate::spill::{state_name, Candidate, SpillDir};
use crate::telemetry::EngineMetrics;
use crate::template::ChatTemplate;
use crate::{backend, EngineConfig};

/// A message to the worker.
pub(crate) enum Command {
    /// A request whose prompt the caller rendered and tokenized ([`Prompter`]).
    Generate {
        rendered: Box<Rendered>,
        admit: oneshot::Sender<Result<Generation, EngineError>>,
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

fn sampler_for(request: &GenerateRequest) -> LlamaSampler {
    let s = request.sampling;
    if s.temperature <= 0.0 {
        LlamaSampler::greedy()
    } else {
        let mut chain = Vec::with_capacity(4);
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(s.top_k.min(i32::MAX as u32) as i32));
        }
        chain.push(LlamaSampler::top_p(
            s.top_p.clamp(f32::MIN_POSITIVE, 1.0),
            1,
        ));
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
        LlamaSampler::chain_simple(chain)
    }
}

/// Sample under a grammar: the token the ordinary sampler picks is kept when the grammar
/// allows it (the common case, and cheap); otherwise the full mask is computed and the
/// sampler picks again among the allowed tokens only. `None` when nothing is allowed (the
/// grammar is complete).
fn sample_constrained(
    sampler: &mut LlamaSampler,
    m: &mut Matcher,
    ctx: &LlamaContext<'_>,
    idx: i32,
    vocab: &llama_cpp_2::vocab::LlamaVocab<'_>,
) -> Option<LlamaToken> {
    if m.is_stopped() {
        return None;
    }
    let first = sampler.sample(ctx, idx);
    if vocab.is_eog(first) {
        if m.is_accepting().unwrap_or(false) {
            return Some(first);
        }
    } else if try_token(m, first.0 as u32) == Verdict::Accepted {
        return Some(first);
    }
    // The sampler's pick missed: the mask, and whether the grammar may end here.
    let (mask, accepting) = (m.compute_mask().ok()?, m.is_accepting().unwrap_or(false));
    let allowed: Vec<_> = ctx
        .candidates_ith(idx)
        .filter(|d| {
            let t = d.id();
            if vocab.is_eog(t) {
                accepting
            } else {
                mask.is_allowed(t.0 as u32)
            }
        })
        .collect();
    if allowed.is_empty() {
        return None;
    }
    let mut arr = LlamaTokenDataArray::new(allowed, false);
    arr.apply_sampler(sampler);
    let tok = arr.selected_token()?;
    if !vocab.is_eog(tok) && try_token(m, tok.0 as u32) != Verdict::Accepted {
        return None;
    }
    Some(tok)
}

pub(crate) fn run(
    path: PathBuf,
    mmproj: Option<PathBuf>,
    model_id: String,
    config: EngineConfig,
    mut rx: mpsc::Receiver<Command>,
    state: &watch::Sender<LoadState>,
    prompter: &OnceLock<Arc<Prompter>>,
) {
    let fail = |msg: String| {
        tracing::error!(model = %model_id, "{msg}");
        let _ = state.send(LoadState::Failed(msg));
    };
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let gpu = gpu_device();
    let gpu_layers = fit::gpu_layers(config.gpu_layers, gpu.is_some());
    let mut mparams = LlamaModelParams::default();
    if gpu_layers > 0 {
        mparams = mparams.with_n_gpu_layers(gpu_layers);
    }
    // Shared with the request tasks, which render and tokenize prompts (`Prompter`).
    let model = match LlamaModel::load_from_file(backend, &path, &mparams) {
        Ok(m) => Arc::new(m),
        Err(e) => return fail(format!("cannot load {}: {e}", path.display())),
    };
    let parallel = config.parallel.max(1);
    let kv_slots = config.kv_slots.clamp(parallel, 256);
    let plan = fit::context(
        config.ctx_size,
        kv_slots,
        model.n_ctx_train(),
        cell_bytes(&model),
        fit::kv_budget(
            gpu_device()
                .filter(|_| gpu_layers > 0)
                .map(|d| d.memory_free as u64),
            fit::mem_available(),
        ),
    );
    let n_ctx = plan.total;
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
    let projector = match mmproj.as_deref() {
        Some(p) => match Projector::load(p, &model, &config, gpu_layers > 0) {
            Ok(v) => Some(v),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let arch = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let template = match template_for(&model, config.chat_template.clone()) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", path.display())),
    };
    let _ = prompter.set(Arc::new(Prompter::new(
        model.clone(),
        template.clone(),
        &model_id,
        u64::from(per_seq.saturating_sub(1)),
        projector.as_ref().is_some_and(|p| p.ctx.support_vision()),
        projector.as_ref().and_then(|p| p.audio_rate),
    )));
    describe(
        &model_id,
        &model,
        &template,
        &plan,
        per_seq,
        kv_slots,
        gpu.as_ref(),
        gpu_layers,
        projector.as_ref().is_some_and(|p| p.ctx.support_vision()),
        projector.as_ref().and_then(|p| p.audio_rate),
    );
    tracing::info!(
        model = %model_id, arch = %arch, template = template.source, n_ctx = ctx.n_ctx(),
        per_seq, parallel, threads = config.threads, "model ready"
    );
    let _ = state.send(LoadState::Ready {
        context_tokens: u64::from(per_seq),
        vision: projector.as_ref().is_some_and(|p| p.ctx.support_vision()),
        audio_rate: projector.as_ref().and_then(|p| p.audio_rate),
    });

    let metrics = EngineMetrics::new(&model_id);
    let spill = config.spill_dir.as_ref().and_then(|root| {
        let dir = root.join(fingerprint(
            &path,
            mmproj.as_deref(),
            kv_slots,
            config.flash_attention,
            config.reuse_decoded_kv,
        ));
        match SpillDir::open(dir, config.spill_budget) {
            Ok((d, _)) => {
                let (states, bytes) = d.usage();
                tracing::info!(model = %model_id, dir = %d.path().display(), states, bytes,
                    "KV states on disk");
                Some(Arc::new(d))
            }
            Err(e) => {
                tracing::warn!(model = %model_id, "KV states will not be kept on disk: {e}");
                None
            }
        }
    });
    let (spill_tx, spill_writer) = match spill.as_ref() {
        Some(d) => {
            let (tx, handle) = start_writer(&model_id, d.clone(), &metrics);
            (Some(tx), handle)
        }
        None => (None, None),
    };
    let mut w = Worker {
        model_id,
        model: &model,
        projector,
        grammars: Grammars::new(),
        forget_pending: Vec::new(),
        template,
        per_seq,
        kv: KvManager::new(kv_slots as usize, config.min_reuse.max(1) as usize),
        parallel: parallel as usize,
        waiting: VecDeque::new(),
        active: Vec::new(),
        extensions: Vec::new(),
        max_queue: config.max_queue,
        batch: LlamaBatch::new(config.batch_size as usize, 1),
        batch_size: config.batch_size as usize,
        step_budget: StepBudget::new(config.max_step),
        reuse_decoded_kv: config.reuse_decoded_kv,
        copy_pending: false,
        swa: model
            .meta_val_str(&format!("{arch}.attention.sliding_window"))
            .is_ok(),
        spill,
        spill_tx,
        spill_writer,
        draining: None,
        last_scan: Instant::now(),
        prefill_secs_per_token: 1.0 / 2000.0,
        restore_secs_per_byte: 1.0 / 200e6,
        metrics,
    };
    loop {
        if w.active.is_empty() && w.waiting.is_empty() {
            if let Some(done) = w.draining.take() {
                w.drain(&mut ctx);
                let _ = done.send(());
                break;
            }
            if w.extensions.is_empty() {
                match rx.blocking_recv() {
                    Some(cmd) => w.handle(cmd),
                    None => break,
                }
            } else {
                // Background work starts only once the engine has been idle for a moment:
                // under back-to-back requests it never runs (and never delays one); the next
                // turn then prefills its answer itself.
                let until = Instant::now() + IDLE_BEFORE_BACKGROUND;
                while Instant::now() < until {
                    match rx.try_recv() {
                        Ok(cmd) => {
                            w.handle(cmd);
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                }
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

/// A model's projector (llama.cpp's multimodal library): a vision encoder, an audio
/// encoder, or both.
struct Projector {
    ctx: MtmdContext,
    /// Its audio encoder's sample rate, when it has one.
    audio_rate: Option<u32>,
    /// Positions each piece of media fills, by digest: a later turn with the same media
    /// needs its length but not its preprocessing.
    positions: std::collections::HashMap<[u8; 32], usize>,
}

/// The marker the projector's tokenizer replaces with a piece of media.
const MTMD_MARKER: &str = "<__media__>";

impl Projector {
    fn load(
        path: &Path,
        model: &LlamaModel,
        config: &EngineConfig,
        use_gpu: bool,
    ) -> Result<Self, String> {
        let params = MtmdContextParams {
            use_gpu,
            print_timings: false,
            n_threads: config.threads,
            media_marker: std::ffi::CString::new(MTMD_MARKER).expect("no NUL"),
            image_min_tokens: -1,
            image_max_tokens: -1,
        };
        let p = path.to_string_lossy();
        let ctx = MtmdContext::init_from_file(&p, model, &params).map_err(|e| {
            format!(
                "cannot load the projector {} (is it made for this model?): {e}",
                path.display()
            )
        })?;
        let audio_rate = ctx
            .support_audio()
            .then(|| ctx.get_audio_sample_rate())
            .flatten();
        if !ctx.support_vision() && audio_rate.is_none() {
            return Err(format!(
                "{} has neither a vision nor an audio encoder",
                path.display()
            ));
        }
        Ok(Projector {
            ctx,
            audio_rate,
            positions: std::collections::HashMap::new(),
        })
    }

    /// Whether it takes this kind of media.
    fn takes(&self, media: &Attachment) -> bool {
        match &media.data {
            MediaData::Image(_) => self.ctx.support_vision(),
            MediaData::Audio(a) => self.audio_rate == Some(a.sample_rate),
        }
    }

    /// Media as projector input: an image preprocessed (resized, sliced), audio turned
    /// into mel frames, wrapped in the model's media tokens.
    fn chunks(&mut self, media: &Attachment) -> Result<MtmdInputChunks, String> {
        let what = media.kind();
        let bitmap = match &media.data {
            MediaData::Image(image) => {
                MtmdBitmap::from_image_data(image.width, image.height, &image.rgb)
            }
            MediaData::Audio(audio) => MtmdBitmap::from_audio_data(&audio.samples),
        }
        .map_err(|e| format!("the {what} cannot be prepared: {e}"))?;
        let text = MtmdInputText {
            text: MTMD_MARKER.to_owned(),
            add_special: false,
            parse_special: true,
        };
        let chunks = self
            .ctx
            .tokenize(text, &[&bitmap])
            .map_err(|e| format!("the {what} cannot be prepared: {e}"))?;
        if self.positions.len() >= 4096 {
            self.positions.clear();
        }
        self.positions
            .insert(*media.digest(), chunks.total_positions().max(0) as usize);
        Ok(chunks)
    }

    /// Positions media fills, with its projector input when that had to be prepared to
    /// find them (media seen before is prepared only if it has to be encoded again).
    fn prepare(&mut self, media: &Attachment) -> Result<(usize, Option<MtmdInputChunks>), String> {
        match self.positions.get(media.digest()) {
            Some(&n) => Ok((n, None)),
            None => self
                .chunks(media)
                .map(|c| (c.total_positions().max(0) as usize, Some(c))),
        }
    }
}

struct Worker<'m> {
    model_id: String,
    model: &'m LlamaModel,
    projector: Option<Projector>,
    grammars: Grammars,
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
    reuse_decoded_kv: bool,
    /// A KV stream copy is queued for the next decode.
    copy_pending: bool,
    /// Whether the model has sliding-window layers (a restored state is then never cut).
    swa: bool,
    /// Finished states on disk, and the writer thread that puts them there.
    spill: Option<Arc<SpillDir>>,
    spill_tx: Option<std_mpsc::SyncSender<SpillJob>>,
    spill_writer: Option<std::thread::JoinHandle<()>>,
    /// Set by [`Command::Drain`]: who to tell once everything is on disk.
    draining: Option<oneshot::Sender<()>>,
    last_scan: Instant,
    /// Running estimates for deciding whether a restore is cheaper than a prefill.
    prefill_secs_per_token: f64,
    restore_secs_per_byte: f64,
    metrics: EngineMetrics,
}

/// A finished state for the writer thread.
struct SpillJob {
    scope: String,
    tokens: Vec<i32>,
    payload: Vec<u8>,
    /// The scope's forget epoch when the state was taken.
    epoch: u64,
}

/// How often a miss may rescan the spill directory for states other replicas wrote.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// The directory name for states of this model file and KV layout: a state restores only
/// into a context whose per-sequence layout matches (llama.cpp checks the rest itself and
/// refuses a mismatched state, which is then deleted and prefilled instead).
fn fingerprint(
    path: &Path,
    mmproj: Option<&Path>,
    kv_slots: u32,
    flash_attention: bool,
    decoded_kv: bool,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    // The projector decides what an image's KV holds: states with images made under
    // another projector must not be found.
    for p in std::iter::once(path).chain(mmproj) {
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        h.update(len.to_le_bytes());
        let mut head = Vec::with_capacity(1 << 20);
        if let Ok(f) = std::fs::File::open(p) {
            let _ = f.take(1 << 20).read_to_end(&mut head);
        }
        h.update(&head);
    }
    h.update(kv_slots.to_le_bytes());
    // States computed differently (and so not bit-identical) live apart.
    h.update([
        u8::from(flash_attention),
        1, /* swa_full */
        u8::from(decoded_kv),
    ]);
    hex::encode(&h.finalize()[..8])
}

/// Set the disk gauges from the index (after anything that changes what is on disk).
fn report_disk(dir: &SpillDir, states: &metrics::Gauge, bytes: &metrics::Gauge) {
    let (n, total) = dir.usage();
    states.set(n as f64);
    bytes.set(total as f64);
}

/// Give the calling thread a lower scheduling priority, so that writing states to disk
/// yields the cores to the engine's compute threads.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its integer arguments; `0` names the calling thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS as _, 0, 10);
    }
}

/// Start the thread that writes finished states to disk, off the engine thread.
fn start_writer(
    model_id: &str,
    dir: Arc<SpillDir>,
    metrics: &EngineMetrics,
) -> (
    std_mpsc::SyncSender<SpillJob>,
    Option<std::thread::JoinHandle<()>>,
) {
    // Two states in flight at most: when the disk falls behind, states are skipped rather
    // than piling up in memory.
    let (tx, rx) = std_mpsc::sync_channel::<SpillJob>(2);
    let (spills, spill_bytes, disk_evictions) = (
        metrics.spills.clone(),
        metrics.spill_bytes.clone(),
        metrics.disk_evictions.clone(),
    );
    let (disk_states, disk_bytes) = (metrics.disk_states.clone(), metrics.disk_bytes.clone());
    report_disk(&dir, &disk_states, &disk_bytes);
    let model = model_id.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("kv-spill-{model_id}"))
        .spawn(move || {
            lower_priority();
            for job in rx {
                match dir.write_at(&job.scope, &job.tokens, &job.payload, job.epoch) {
                    Ok((0, _)) => {} // its scope was forgotten meanwhile
                    Ok((bytes, deleted)) => {
                        spills.increment(1);
                        spill_bytes.increment(bytes);
                        disk_evictions.increment(deleted.len() as u64);
                        report_disk(&dir, &disk_states, &disk_bytes);
                    }
                    Err(e) => tracing::warn!(model = %model, "cannot write a KV state: {e}"),
                }
            }
        });
    match spawned {
        Ok(handle) => (tx, Some(handle)),
        Err(e) => {
            tracing::warn!(model = %model_id, "cannot start the KV writer thread: {e}");
            (tx, None)
        }
    }
}

impl Worker<'_> {
    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Drain { done } => self.draining = Some(done),
            Command::Forget { scope } => self.forget(&scope),
            Command::Generate { rendered, admit } => {
                let result = self.prepare(*rendered);
                match result {
                    Ok(p) => {
                        let (tx, events) = mpsc::unbounded_channel();
                        let prompt_tokens = p.prompt.len() as u64;
                        let gen = Generation {
                            prompt_tokens,
                            media_tokens: media::tokens_by_modality(&p.media),
                            events,
                        };
                        if admit.send(Ok(gen)).is_ok() {
                            self.waiting.push_back(Pending {
                                prompt: p.prompt,
                                media: p.media,
                                prepared: p.prepared,
                                request: p.request,
                                tx,
                                matcher: p.matcher,
                                in_thought: p.in_thought,
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

    fn forget(&mut self, scope: &str) {
        // The context is needed to clear slots: do it at the next step.
        self.forget_pending.push(scope.to_owned());
    }

    /// Clear the slots and disk states of scopes whose owner asked them gone.
    fn apply_forgets(&mut self, ctx: &mut LlamaContext<'_>) {
        for scope in std::mem::take(&mut self.forget_pending) {
            let freed = self.kv.forget(&scope);
            for slot in &freed {
                let _ = ctx.clear_kv_cache_seq(Some(*slot as u32), None, None);
            }
            self.extensions.retain(|e| e.scope != scope);
            let on_disk = self.spill.as_ref().map_or(0, |d| d.forget_scope(&scope));
            tracing::debug!(
                slots = freed.len(),
                on_disk,
                "forgot a scope's cached states"
            );
        }
    }

    /// Queue checks, the output grammar and the images of a request the caller rendered and
    /// tokenized (the template and the tokenizer never run on this thread).
    fn prepare(&mut self, rendered: Rendered) -> Result<Prepared, EngineError> {
        if self.waiting.len() >= self.max_queue {
            return Err(EngineError::Overloaded(format!(
                "{} requests are already waiting for model {}",
                self.waiting.len(),
                self.model_id
            )));
        }
        let Rendered {
            request,
            grammar,
            runs,
            in_thought,
        } = rendered;
        let matcher = match grammar {
            Some(g) => {
                let model = self.model;
                Some(
                    self.grammars
                        .matcher(|| LlamaSampler::llguidance_tok_env(model), g)
                        .map_err(EngineError::Unsupported)?,
                )
            }
            None => None,
        };
        let Tokenized {
            tokens,
            media,
            prepared,
        } = self.place_media(runs, &request.messages)?;
        let limit = u64::from(self.per_seq.saturating_sub(1));
        if tokens.len() as u64 > limit {
            return Err(EngineError::PromptTooLong {
                model: self.model_id.clone(),
                tokens: tokens.len() as u64,
                limit,
            });
        }
        Ok(Prepared {
            prompt: tokens,
            media,
            prepared,
            request,
            matcher,
            in_thought,
        })
    }

    /// A prompt's tokens: its text runs (see [`Rendered::runs`]) with each piece of media
    /// between them, as the synthetic ids of the positions it fills.
    fn place_media(
        &mut self,
        runs: Vec<Vec<LlamaToken>>,
        messages: &[localgem_core::ChatMessage],
    ) -> Result<Tokenized, EngineError> {
        let all = media::media_of(messages);
        let mut runs = runs.into_iter();
        let mut tokens = runs.next().unwrap_or_default();
        if all.is_empty() {
            return Ok(Tokenized {
                tokens,
                media: Vec::new(),
                prepared: Vec::new(),
            });
        }
        let cannot = |kind: &str| {
            EngineError::Unsupported(format!("model {} cannot take {kind} input", self.model_id))
        };
        let Some(projector) = self.projector.as_mut() else {
            return Err(cannot(all[0].kind()));
        };
        let mut spans = Vec::new();
        let mut prepared = Vec::new();
        for (i, (piece, run)) in all.iter().zip(runs).enumerate() {
            if !projector.takes(piece) {
                return Err(match &piece.data {
                    MediaData::Audio(a) if projector.audio_rate.is_some() => {
                        EngineError::InvalidPrompt(format!(
                            "audio {}: sampled at {} Hz, but the model's audio encoder takes {} Hz",
                            i + 1,
                            a.sample_rate,
                            projector.audio_rate.unwrap_or_default()
                        ))
                    }
                    _ => cannot(piece.kind()),
                });
            }
            let (n, chunks) = projector.prepare(piece).map_err(|e| {
                EngineError::InvalidPrompt(format!("{} {}: {e}", piece.kind(), i + 1))
            })?;
            prepared.push(chunks);
            spans.push(MediaSpan {
                start: tokens.len(),
                len: n,
                media: piece.clone(),
            });
            tokens.extend(
                media::synthetic_ids(piece.digest(), n)
                    .into_iter()
                    .map(LlamaToken),
            );
            tokens.extend(run);
        }
        if spans.last().is_some_and(|s| s.end() == tokens.len()) {
            // Its logits would be needed, and the projector's evaluation does not keep them.
            return Err(EngineError::InvalidPrompt(
                "the chat template ends the prompt with media".into(),
            ));
        }
        Ok(Tokenized {
            tokens,
            media: spans,
            prepared,
        })
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
            let scope = p.request.cache_scope.clone();
            self.restore_if_cheaper(ctx, &scope, &ids);
            let live: Vec<i32> = self.active.iter().map(|s| s.slot).collect();
            let Some((lease, copy_from)) = self.kv.acquire_near(&scope, &ids, &live) else {
                self.waiting.push_front(p);
                break;
            };
            let slot = lease.slot;
            if let Some(src) = copy_from {
                // The conversation's state lives in another slot: copy it next to the live
                // ones (a bit-exact copy of the whole stream, done before the next decode).
                let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
                if let Err(e) = ctx.copy_kv_cache_seq(src, slot, None, None) {
                    tracing::warn!("cannot copy KV slot {src} to {slot}: {e}");
                }
                tracing::debug!(
                    from = src,
                    to = slot,
                    "moved a state next to the live slots"
                );
                self.copy_pending = true;
                self.metrics.relocations.increment(1);
            }
            self.extensions.retain(|e| e.slot != slot);
            let mut reused = media::align_reuse(&p.media, lease.reused);
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
            let think = self.template.think_tags().cloned();
            self.active.push(Seq {
                slot,
                scope,
                out: Output::new(&p.request, think, p.in_thought, p.tx),
                matcher: p.matcher,
                closer: Closer::default(),
                forced: VecDeque::new(),
                sampler: sampler_for(&p.request),
                prompt: p.prompt,
                media: p.media,
                prepared: p.prepared,
                reused,
                fed: reused,
                n_past: reused as i32,
                next: None,
                output: Vec::new(),
            });
        }
    }

    fn step(&mut self, ctx: &mut LlamaContext<'_>) {
        if !self.forget_pending.is_empty() {
            self.apply_forgets(ctx);
        }
        // Cancelled sequences free their slot before anything is computed for them.
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].out.tx.is_closed() {
                let s = self.active.swap_remove(i);
                self.discard(ctx, s.slot);
            } else {
                i += 1;
            }
        }
        self.admit(ctx);
        if self.active.is_empty() && self.extensions.is_empty() {
            return;
        }
        // With one KV stream per slot, llama.cpp puts sequences into one ubatch only while
        // their ids appear in the batch as consecutive increasing numbers; every break starts
        // another ubatch, which reads all the weights again. So the batch goes in slot order
        // (and free slots are taken lowest first, keeping live slots contiguous where reuse
        // allows).
        self.active.sort_by_key(|s| s.slot);
        self.extensions.sort_by_key(|e| e.slot);
        if self.projector.is_some() {
            self.encode_media(ctx);
            if self.active.is_empty() && self.extensions.is_empty() {
                return;
            }
        }

        let states: Vec<SeqState> = self
            .active
            .iter()
            .map(|s| SeqState {
                pending_prompt: s.prompt.len() - s.fed,
                decoding: s.next.is_some(),
            })
            .collect();
        let decoders = states.iter().filter(|s| s.decoding).count();
        let prefill_cap = self.step_budget.prefill_cap(decoders, self.batch_size);
        let planned = plan(&states, self.batch_size, prefill_cap);
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
                // A prefill stops at an image (evaluated through the projector next step).
                let n = media::tokens_before_media(&s.media, s.fed, n);
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
        // What live work left of the budget goes to finished answers.
        let mut room = background_budget(&states, self.batch_size, EXTEND_CHUNK);
        let mut extended: Vec<(usize, usize)> = Vec::new();
        for (k, e) in self.extensions.iter().enumerate() {
            if room == 0 {
                break;
            }
            let n = (e.tokens.len() - e.fed).min(room);
            let mut added = 0;
            for j in 0..n {
                let pos = (e.fed + j) as i32;
                if self
                    .batch
                    .add(e.tokens[e.fed + j], pos, &[e.slot], false)
                    .is_err()
                {
                    break;
                }
                added += 1;
            }
            room -= added;
            prefilled += added as u64;
            extended.push((k, added));
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        // Each slot has its own KV stream and every sequence stays within its stream's size
        // (prompt limit at admission, `ContextFull` while generating), so evicting another
        // slot could never make room here: any decode failure fails the batch.
        let started = Instant::now();
        self.copy_pending = false;
        if let Err(e) = ctx.decode(&mut self.batch) {
            self.fail_all(ctx, &format!("decode failed: {e}"));
            return;
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::trace!(prefilled, decoded, secs, prefill_cap, "step");
        self.step_budget
            .observe(prefilled as usize, decoded as usize, secs);
        if prefilled >= 64 {
            let per_token = started.elapsed().as_secs_f64() / (prefilled + decoded) as f64;
            self.prefill_secs_per_token = 0.8 * self.prefill_secs_per_token + 0.2 * per_token;
        }

        self.metrics.prefill_tokens.increment(prefilled);
        self.metrics.decode_tokens.increment(decoded);
        self.advance_extensions(ctx, &extended);
        let vocab = self.model.vocab();
        let mut finished: Vec<(usize, FinishReason, bool)> = Vec::new();
        for (i, s) in self.active.iter_mut().enumerate() {
            let Some(idx) = logits_at[i] else { continue };
            let tok = match s.forced.pop_front() {
                Some(t) => t,
                None => match s.matcher.as_mut() {
                    Some(m) => {
                        // Tokens left counting this one: to the output cap, and to the end
                        // of the context (see the `ContextFull` check below).
                        let room = s
                            .out
                            .max_output
                            .saturating_sub(s.out.answer_tokens())
                            .min(self.per_seq.saturating_sub(s.n_past as u32))
                            .max(1) as usize;
                        // A quarter of what the answer could have had at most.
                        let most = s
                            .out
                            .max_output
                            .min(self.per_seq.saturating_sub(s.prompt.len() as u32));
                        let margin = CLOSE_MARGIN.min(most / 4) as usize;
                        let wrap = s
                            .closer
                            .need(&self.grammars, m)
                            .is_some_and(|need| room <= need + margin);
                        let sampled = if wrap && m.is_accepting().unwrap_or(false) {
                            Some(vocab.eos())
                        } else {
                            sample_constrained(&mut s.sampler, m, ctx, idx, &vocab)
                        };
                        match sampled {
                            Some(t) if vocab.is_eog(t) => t,
                            Some(t) => {
                                match s.closer.settle(&self.grammars, m, t.0 as u32, room, wrap) {
                                    Pick::Token(t) => LlamaToken(t as i32),
                                    Pick::End => vocab.eos(),
                                }
                            }
                            None => {
                                // The grammar allows nothing more: it is complete.
                                finished.push((i, FinishReason::Stop, false));
                                continue;
                            }
                        }
                    }
                    None => s.sampler.sample(ctx, idx),
                },
            };
            s.output.push(tok);
            if vocab.is_eog(tok) {
                finished.push((i, FinishReason::Stop, false));
                continue;
            }
            let stopped = s.out.token(&vocab.token_to_piece(tok, false, None));
            // A spent budget closes the thought: its closing tag is fed instead of sampled
            // tokens.
            if s.forced.is_empty() {
                if let Some(close) = s.out.thought_spent() {
                    s.forced
                        .extend(vocab.tokenize(close.as_bytes(), false, true));
                }
            }
            if stopped {
                finished.push((i, FinishReason::Stop, true));
            } else if s.matcher.as_ref().is_some_and(Matcher::is_stopped) {
                finished.push((i, FinishReason::Stop, false));
            } else if s.out.capped() {
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
            s.out
                .finish(reason, stopped, s.prompt.len() as u64, s.reused as u64);
            // What stays in the slot. By default only the prompt's KV: the generated tokens'
            // K/V were written by one-token decodes, which round differently from the batched
            // prefill a fresh request would do (`examples/kv_probe.rs`, case G), so reusing
            // them could change the next answer; the answer is prefilled into the slot in the
            // background instead (see `Extension`). With `--reuse-decoded-kv` everything
            // decoded stays: the KV holds positions 0..n_past.
            let decoded = if self.reuse_decoded_kv {
                (s.n_past as usize).saturating_sub(s.prompt.len())
            } else {
                0
            };
            let held: Vec<i32> = s
                .prompt
                .iter()
                .chain(s.output.iter().take(decoded))
                .map(|t| t.0)
                .collect();
            let _ = ctx.clear_kv_cache_seq(Some(s.slot as u32), Some(held.len() as u32), None);
            // This state goes to disk now. An extended one follows once the answer is
            // prefilled; until then (or if that never completes, say because the server stops
            // first) this one is what a later turn restores.
            self.spill(ctx, s.slot, &s.scope, &held);
            let held_len = held.len();
            self.kv.finish(s.slot, &s.scope, held);
            if self.reuse_decoded_kv {
                continue;
            }
            let room = (self.per_seq as usize).saturating_sub(1);
            let mut tokens = s.prompt;
            tokens.extend(s.output);
            tokens.truncate(room);
            if tokens.len() > held_len {
                self.extensions.push(Extension {
                    slot: s.slot,
                    scope: s.scope,
                    fed: held_len,
                    tokens,
                });
            }
        }
    }

    /// Run the media that live sequences have reached through the projector, into their
    /// KV (each piece is encoded here once; later turns find its KV by its synthetic ids).
    /// Other sequences wait meanwhile: the projector's evaluation is not batched.
    fn encode_media(&mut self, ctx: &mut LlamaContext<'_>) {
        let Some(projector) = self.projector.as_mut() else {
            return;
        };
        let mut failed: Vec<(usize, String)> = Vec::new();
        for (i, s) in self.active.iter_mut().enumerate() {
            if s.next.is_some() {
                continue;
            }
            while let Some(k) = media::starting_at(&s.media, s.fed) {
                let (end, piece) = (s.media[k].end(), s.media[k].media.clone());
                let started = Instant::now();
                let chunks = match s.prepared.get_mut(k).and_then(Option::take) {
                    Some(c) => Ok(c),
                    None => projector.chunks(&piece),
                };
                let evaluated = chunks.and_then(|chunks| {
                    chunks
                        .eval_chunks(
                            &mut projector.ctx,
                            ctx,
                            s.n_past,
                            s.slot,
                            self.batch_size as i32,
                            false,
                        )
                        .map_err(|e| format!("the {} could not be evaluated: {e}", piece.kind()))
                });
                match evaluated {
                    Ok(n_past) => {
                        tracing::debug!(
                            slot = s.slot,
                            positions = end - s.fed,
                            secs = started.elapsed().as_secs_f64(),
                            kind = piece.kind(),
                            "encoded media"
                        );
                        match piece.data {
                            MediaData::Image(_) => self.metrics.images_encoded.increment(1),
                            MediaData::Audio(_) => self.metrics.audio_encoded.increment(1),
                        }
                        self.metrics.prefill_tokens.increment((end - s.fed) as u64);
                        s.fed = end;
                        s.n_past = n_past;
                    }
                    Err(e) => {
                        failed.push((i, e));
                        break;
                    }
                }
            }
        }
        for (i, why) in failed.into_iter().rev() {
            let s = self.active.swap_remove(i);
            tracing::warn!(slot = s.slot, "{why}");
            s.out.fail(why);
            self.discard(ctx, s.slot);
        }
        self.active.sort_by_key(|s| s.slot);
    }

    /// Hand a finished slot's state to the writer thread, unless it is already on disk.
    fn spill(&mut self, ctx: &LlamaContext<'_>, slot: i32, scope: &str, tokens: &[i32]) {
        let (Some(dir), Some(tx)) = (&self.spill, &self.spill_tx) else {
            return;
        };
        if tokens.len() < self.kv.min_reuse() || dir.contains(&state_name(scope, tokens)) {
            return;
        }
        let flags = LlamaStateSeqFlags::empty();
        let size = ctx.state_seq_get_size_ext(slot, flags);
        let mut payload = vec![0u8; size];
        // SAFETY: `payload` holds the `size` bytes llama.cpp just reported for this sequence,
        // and nothing touches the context between the two calls (this thread owns it).
        #[allow(unsafe_code)]
        let written = unsafe { ctx.state_seq_get_data_ext(payload.as_mut_ptr(), slot, flags) };
        if written != size {
            tracing::warn!(slot, size, written, "cannot copy a KV state");
            return;
        }
        let job = SpillJob {
            scope: scope.to_owned(),
            tokens: tokens.to_vec(),
            payload,
            epoch: dir.epoch(scope),
        };
        if tx.try_send(job).is_err() {
            self.metrics.spill_skipped.increment(1);
        }
    }

    /// Before `prompt` takes a slot: when a state on disk holds a longer prefix of it than
    /// any resident slot, and reading it costs less than prefilling the difference, restore
    /// it into an empty slot, where the KV manager then finds it like any resident state.
    fn restore_if_cheaper(&mut self, ctx: &mut LlamaContext<'_>, scope: &str, prompt: &[i32]) {
        let Some(dir) = self.spill.clone() else {
            return;
        };
        // A queued stream copy reads its source when the next decode starts; writing a
        // restored state into a slot before then could change what it copies.
        if self.copy_pending {
            return;
        }
        let resident = self.kv.reusable(scope, prompt);
        let allow_cut = !self.swa;
        let mut found = dir.best(scope, prompt, self.kv.min_reuse(), allow_cut);
        let worth = |f: &Option<Candidate>| {
            f.as_ref()
                .is_some_and(|c| c.usable >= resident + self.kv.min_reuse())
        };
        if !worth(&found) && self.last_scan.elapsed() >= RESCAN_EVERY {
            // Another replica (or an earlier run) may have written it since.
            self.last_scan = Instant::now();
            if let Err(e) = dir.scan() {
                tracing::warn!("cannot scan {}: {e}", dir.path().display());
            }
            report_disk(&dir, &self.metrics.disk_states, &self.metrics.disk_bytes);
            found = dir.best(scope, prompt, self.kv.min_reuse(), allow_cut);
        }
        if !worth(&found) {
            return;
        }
        let Some(Candidate {
            name,
            usable,
            bytes,
            tokens,
        }) = found
        else {
            return;
        };
        let restore_cost = bytes as f64 * self.restore_secs_per_byte;
        let prefill_cost = (usable - resident) as f64 * self.prefill_secs_per_token;
        if restore_cost >= prefill_cost {
            return;
        }
        let Some((slot, evicted)) = self.kv.take_empty() else {
            return;
        };
        self.extensions.retain(|e| e.slot != slot);
        if evicted {
            self.metrics.evictions.increment(1);
        }
        let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
        let started = Instant::now();
        let n = tokens.len();
        let restored = dir.read(&name, scope, &tokens).ok().is_some_and(|payload| {
            // SAFETY: the bytes are a state this module wrote (CRC-checked, for this scope and
            // these tokens, under this model's fingerprint); llama.cpp validates the layout
            // itself and returns 0, leaving the sequence empty, on any mismatch.
            #[allow(unsafe_code)]
            let ok =
                unsafe { ctx.state_seq_set_data_ext(&payload, slot, LlamaStateSeqFlags::empty()) };
            ok
        });
        // The restored cells must hold exactly positions 0..n.
        let exact = restored && ctx.kv_cache_seq_pos_max(slot) == n as i32 - 1;
        if exact {
            let secs = started.elapsed().as_secs_f64();
            self.restore_secs_per_byte =
                0.8 * self.restore_secs_per_byte + 0.2 * secs / bytes.max(1) as f64;
            self.metrics.restores.increment(1);
            self.metrics.tokens_restored.increment(usable as u64);
            tracing::debug!(
                slot,
                tokens = n,
                bytes,
                secs,
                "restored a KV state from disk"
            );
            self.kv.finish(slot, scope, tokens);
        } else {
            self.metrics.restore_failures.increment(1);
            tracing::warn!(slot, file = %name, "a KV state could not be restored; prefilling instead");
            dir.delete(&name);
            report_disk(&dir, &self.metrics.disk_states, &self.metrics.disk_bytes);
            let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
            self.kv.free(slot);
        }
    }

    /// Graceful shutdown, once nothing is live: prefill the pending answers now (no idle wait),
    /// then let the writer thread put every state on disk.
    fn drain(&mut self, ctx: &mut LlamaContext<'_>) {
        let mut steps = 0;
        while !self.extensions.is_empty() && steps < 10_000 {
            self.step(ctx);
            steps += 1;
        }
        self.spill_tx = None;
        if let Some(writer) = self.spill_writer.take() {
            let _ = writer.join();
        }
        tracing::info!(model = %self.model_id, "engine drained");
    }

    /// After a decode: record the answer tokens fed for each extension (`(index, tokens)`);
    /// a complete one makes its slot hold prompt and answer, and goes to disk.
    fn advance_extensions(&mut self, ctx: &LlamaContext<'_>, extended: &[(usize, usize)]) {
        let mut done = Vec::new();
        for &(k, n) in extended {
            let e = &mut self.extensions[k];
            e.fed += n;
            let held: Vec<i32> = e.tokens[..e.fed].iter().map(|t| t.0).collect();
            self.kv.finish(e.slot, &e.scope, held);
            if e.fed == e.tokens.len() {
                done.push(k);
            }
        }
        for k in done.into_iter().rev() {
            let e = self.extensions.swap_remove(k);
            let held: Vec<i32> = e.tokens.iter().map(|t| t.0).collect();
            self.spill(ctx, e.slot, &e.scope, &held);
        }
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
