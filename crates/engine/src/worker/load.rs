//! Loading a model, its context and its projector on the engine thread, and the thread's
//! loop.

use super::*;

pub(crate) fn run(
    spec: ModelSpec,
    config: EngineConfig,
    mut rx: mpsc::Receiver<Command>,
    state: &watch::Sender<LoadState>,
    prompter: &OnceLock<Arc<Prompter>>,
) {
    let ModelSpec {
        id: model_id,
        path,
        mmproj,
        draft,
        ..
    } = spec;
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
    // computation are bit-identical to a fresh one, so reuse never changes an answer: that is
    // `--exact`. By default flash attention is on (faster). Whether drafts checked in a batch
    // get the logits of one-token steps, which speculation needs, is measured: see `probe`.
    // The full-size SWA cache keeps every position, so sliding-window models (Gemma 3) reuse
    // too.
    let mut ctx = match model.new_context(backend, context_params(n_ctx, kv_slots, &config)) {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "cannot create a context for {}: {e}",
                path.display()
            ))
        }
    };
    let per_seq = ctx.n_ctx() / kv_slots;
    let draft_max = draft_limit(&model_id, config.draft_max, || {
        probe::verification_is_exact(&mut ctx, &model, kv_slots as i32 - 1, per_seq as usize)
    });
    let draft_model = match draft.as_deref() {
        Some(p) if draft_max > 0 => match drafter::load(backend, p, &model, gpu_layers) {
            Ok(m) => {
                tracing::info!(model = %model_id, draft = %p.display(),
                    "drafting with a draft model too");
                Some(m)
            }
            Err(e) => return fail(e),
        },
        Some(_) => {
            tracing::warn!(model = %model_id, "the draft model is not used: speculative \
                decoding is off (--draft-max N turns it on)");
            None
        }
        None => None,
    };
    let drafter = match draft_model.as_ref() {
        Some(m) => match Drafter::new(backend, m, kv_slots, per_seq, &config) {
            Ok(d) => Some(d),
            Err(e) => return fail(e),
        },
        None => None,
    };
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
    let grammars = Arc::new(Grammars::new());
    let _ = prompter.set(Arc::new(Prompter::new(
        model.clone(),
        template.clone(),
        &model_id,
        u64::from(per_seq.saturating_sub(1)),
        projector.as_ref().is_some_and(|p| p.ctx.support_vision()),
        projector.as_ref().and_then(|p| p.audio_rate),
        Some(grammars.clone()),
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
    let reader = spill
        .as_ref()
        .and_then(|d| start_reader(&model_id, d.clone(), &metrics));
    let mut w = Worker {
        model_id,
        model: &model,
        projector,
        grammars,
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
        draft_max,
        draft_always: config.draft_always,
        drafter,
        reuse_decoded_kv: config.reuse_decoded_kv,
        prompts_apart: !config.flash_attention,
        prompt_turn: false,
        copy_pending: false,
        swa: model
            .meta_val_str(&format!("{arch}.attention.sliding_window"))
            .is_ok(),
        spill,
        spill_tx,
        spill_writer,
        draining: None,
        reader,
        read_ids: 0,
        last_rescan: None,
        costs: RestoreCosts::default(),
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
        if let Some(tx) = &w.spill_tx {
            tx.nudge();
        }
        w.metrics.queue_depth.set(w.waiting.len() as f64);
        w.metrics.running.set(w.active.len() as f64);
        w.metrics.resident.set(w.kv.resident() as f64);
    }
    tracing::info!(model = %w.model_id, "engine thread stopped");
}

/// A context of `n_ctx` cells in `slots` streams (one per KV slot), as `config` asks.
pub(super) fn context_params(n_ctx: u32, slots: u32, config: &EngineConfig) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size)
        .with_n_seq_max(slots)
        .with_kv_unified(false)
        .with_swa_full(true)
        .with_flash_attention_policy(if config.flash_attention { 1 } else { 0 })
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads)
}

/// Draft tokens a step may verify: `configured` when set; by default
/// [`crate::DEFAULT_DRAFT_MAX`] where `exact` finds that checking drafts in a batch gives the
/// logits one-token steps give (so speculation never changes an answer), else none.
fn draft_limit(
    model_id: &str,
    configured: Option<usize>,
    exact: impl FnOnce() -> Result<(), String>,
) -> usize {
    match configured {
        Some(0) => {
            tracing::info!(model = %model_id, "speculative decoding off (--draft-max 0)");
            0
        }
        Some(n) => {
            if let Err(why) = exact() {
                tracing::warn!(model = %model_id,
                    "speculative decoding on (--draft-max {n}), though it may change near-tie \
                     tokens here: {why}");
            }
            n
        }
        None => match exact() {
            Ok(()) => {
                tracing::info!(model = %model_id, draft_max = crate::DEFAULT_DRAFT_MAX,
                    "speculative decoding on: drafts checked in a batch get the logits of \
                     one-token steps, bit for bit");
                crate::DEFAULT_DRAFT_MAX
            }
            Err(why) => {
                tracing::info!(model = %model_id,
                    "speculative decoding off: {why}, so it could change an answer \
                     (--draft-max N turns it on anyway)");
                0
            }
        },
    }
}
