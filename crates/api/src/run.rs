//! One generation from admission to its stored end.
//!
//! [`start`] resolves the model, loads the conversation chain (one store read), admits the
//! request to the engine and (with `store`) writes an `in_progress` record owned by this
//! replica under a lease. [`drive`] then turns the engine's events into output steps and
//! stream events in the interaction's [`LiveLog`] (which every reader in this process
//! follows), while [`copy_log`] appends the same events to the store in small batches for
//! readers on other replicas. The final record is written, fenced by ownership, before the
//! log is marked done, so a GET after the stream sees the same steps.
//!
//! A run stops when it is cancelled (here, or from another replica through the store), or
//! when the creating request goes away, unless it runs in the background.

use std::sync::Arc;
use std::time::Duration;

use localgem_core::{
    EngineEvent, FinishReason, GenerateRequest, Generation, InteractionRecord, MediaTokens,
    StoreError,
};
use localgem_wire::{Status, Step, Usage};

use crate::content::Takes;
use crate::error::ApiError;
use crate::events::{end_event, new_id, now, opening, with_id, Cursor};
use crate::live::{CancelOnDrop, Live, OpenKind, Outcome, Running, StepWriter};
use crate::service::KeySlot;
use crate::tenant::Tenant;
use crate::validate::{check_modalities, to_messages, ValidCreate};
use crate::AppState;

/// Chains longer than this are refused (a guard against cycles in a damaged store).
const MAX_CHAIN: usize = 100_000;

/// Tries at saving a finished interaction when the store fails (a full disk, say) before
/// it is marked failed.
const SAVE_TRIES: u32 = 3;
/// How long to keep trying while the database cannot be reached at all (a restart).
const SAVE_UNAVAILABLE_FOR: Duration = Duration::from_secs(30);
/// The longest wait between tries at saving the failed mark.
const SAVE_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a running interaction's new events go to the store.
const LOG_COPY_EVERY: Duration = Duration::from_millis(25);

/// How saving the end went.
enum Saved {
    /// The store has this record.
    Ours,
    /// The store has something else: the record as another replica ended it (after this
    /// one lost its lease), or nothing (deleted meanwhile).
    Theirs(Option<Box<InteractionRecord>>),
}

/// Save a finished interaction, trying again while the store fails. When it cannot take it,
/// the record to keep trying with is returned: the same turn marked `failed`, so that no
/// reader waits on it as if it still ran.
async fn save_end(st: &AppState, record: &InteractionRecord) -> Result<Saved, InteractionRecord> {
    let owner = st.runs.owner();
    let began = tokio::time::Instant::now();
    let mut tries = 0;
    let last = loop {
        match st.store.finish_owned(record, owner).await {
            Ok(true) => return Ok(Saved::Ours),
            Ok(false) => {
                let stored = st
                    .store
                    .get(&record.tenant, &record.id)
                    .await
                    .ok()
                    .flatten();
                return Ok(Saved::Theirs(stored.map(Box::new)));
            }
            Err(e) => {
                tries += 1;
                tracing::error!(id = %record.id, "cannot save interaction (try {tries}): {e}");
                let down = matches!(e, StoreError::Unavailable(_));
                if (down && began.elapsed() >= SAVE_UNAVAILABLE_FOR)
                    || (!down && tries >= SAVE_TRIES)
                {
                    break e.to_string();
                }
                tokio::time::sleep(Duration::from_millis(250 << tries.min(3))).await;
            }
        }
    };
    let mut failed = record.clone();
    failed.status = Status::Failed;
    failed.error = Some(format!(
        "the interaction ended but could not be saved: {last}"
    ));
    Err(failed)
}

/// Keep trying to store a failed mark until the store takes it (or the interaction was
/// deleted or failed meanwhile); until then it stays among this replica's runs, whose log
/// tells readers here how it ended.
async fn keep_saving(st: AppState, failed: InteractionRecord) {
    let mut wait = Duration::from_millis(500);
    loop {
        match st.store.finish_owned(&failed, st.runs.owner()).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(id = %failed.id, "cannot mark interaction failed yet: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(SAVE_BACKOFF_MAX);
            }
        }
    }
    tracing::info!(id = %failed.id, "interaction marked failed after its save failed");
    st.runs.remove(&failed.id);
}

/// Copy a running interaction's events to the store every few tens of milliseconds, until
/// `stop` is set, so that other replicas can stream it. A batch the store refuses is tried
/// again with the next one.
async fn copy_log(st: AppState, id: String, live: Arc<Live>, stop: Arc<tokio::sync::Notify>) {
    let mut copied = 0usize;
    let mut stopping = std::pin::pin!(stop.notified());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOG_COPY_EVERY) => {}
            _ = &mut stopping => return,
        }
        let events = live.log.events_from(copied);
        if events.is_empty() {
            continue;
        }
        let encoded: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
        match st.store.append_events(&id, copied as u64, &encoded).await {
            Ok(()) => copied += encoded.len(),
            Err(e) => tracing::debug!(%id, "cannot log events yet: {e}"),
        }
    }
}

/// The output cap of a request: its own `max_output_tokens`, else the server's default, else
/// the model's default, else none (`u32::MAX`: the context's end stops the answer, as the
/// model's output limit does at Google).
pub fn output_cap(
    requested: Option<u32>,
    server_default: Option<u32>,
    model: Option<&localgem_core::ModelInfo>,
) -> u32 {
    requested
        .or(server_default)
        .or(model.and_then(|m| m.default_max_output_tokens))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The steps of the whole conversation before this turn, oldest first, from one store read.
/// Each turn contributes its input as the model saw it (documents as text, uploads as
/// kept media), so an upload that has since gone does not break the conversation.
async fn load_history(
    state: &AppState,
    tenant: &Tenant,
    first: &str,
) -> Result<Vec<Step>, ApiError> {
    let chain = state.store.chain(&tenant.0, first, MAX_CHAIN + 1).await?;
    let Some(newest) = chain.first() else {
        return Err(ApiError::not_found(format!(
            "interaction {first:?} not found"
        )));
    };
    if !newest.status.is_terminal() {
        return Err(ApiError::bad_request(format!(
            "interaction {first:?} is still {}; wait for it to finish before continuing it",
            newest.status.as_str()
        )));
    }
    if chain.len() > MAX_CHAIN {
        return Err(ApiError::bad_request("conversation chain is too long"));
    }
    if let Some(missing) = chain
        .last()
        .and_then(|r| r.previous_interaction_id.as_deref())
    {
        return Err(ApiError::not_found(format!(
            "interaction {missing:?}, an earlier turn of {first:?}, no longer exists"
        )));
    }
    Ok(chain
        .into_iter()
        .rev()
        .flat_map(|r| {
            let input = r.resolved_input.unwrap_or(r.input);
            input.into_iter().chain(r.output)
        })
        .collect())
}

/// Count a prompt's media positions as `image`, `audio` and `video` input rather than
/// `text`.
fn with_media(mut u: Usage, media: MediaTokens) -> Usage {
    if media.total() > 0 {
        for m in &mut u.input_tokens_by_modality {
            if m.modality == "text" {
                m.tokens = m.tokens.saturating_sub(media.total());
            }
        }
        u.input_tokens_by_modality.retain(|m| m.tokens > 0);
        for (modality, tokens) in [
            ("image", media.image),
            ("audio", media.audio),
            ("video", media.video),
        ] {
            if tokens > 0 {
                u.input_tokens_by_modality
                    .push(localgem_wire::ModalityTokens {
                        modality: modality.into(),
                        tokens,
                    });
            }
        }
    }
    u
}

/// A request's conversation, resolved and rendered as the engine takes it.
pub struct Prepared {
    /// This turn's input as the model saw it, when that differs from what was sent.
    pub resolved_input: Option<Vec<Step>>,
    /// The engine's request (sampling, tools, format and limits from `req`).
    pub request: GenerateRequest,
}

/// What a served model takes. Whether a model has an audio encoder is known once it is
/// loaded; until then a model with a projector is taken to hear at 16 kHz (the rate of the
/// Whisper-family encoders llama.cpp runs), and the engine refuses audio if it does not.
fn takes(model: Option<&localgem_core::ModelInfo>) -> Takes {
    match model {
        Some(m) => Takes {
            vision: m.vision,
            audio_rate: if m.ready {
                m.audio_sample_rate
            } else {
                m.vision.then_some(16_000)
            },
        },
        None => Takes {
            vision: false,
            audio_rate: None,
        },
    }
}

/// Resolve the model, load the conversation chain (one store read), resolve media and
/// render the messages.
///
/// # Errors
/// 4xx for an unknown model or chain, or content the model cannot take.
pub async fn prepare(
    state: &AppState,
    tenant: &Tenant,
    req: &ValidCreate,
) -> Result<Prepared, ApiError> {
    let served = state.engine.models();
    let engine_model = state.config.aliases.resolve(&req.model, &served)?;
    let mut timeline = match &req.previous_interaction_id {
        Some(prev) => load_history(state, tenant, prev).await?,
        None => Vec::new(),
    };
    let earlier = timeline.len();
    timeline.extend(req.input.iter().cloned());
    // The model must take the media; documents become text, images pixels, audio samples.
    let takes = takes(served.iter().find(|m| m.id == engine_model));
    check_modalities(&timeline, &engine_model, takes)?;
    let media = crate::content::resolve(state, tenant, &mut timeline, earlier, takes).await?;
    // What this turn's input resolved to, kept for later turns when it differs.
    let resolved_input = Some(timeline[earlier..].to_vec()).filter(|r| *r != req.input);
    let messages = to_messages(
        req.system_instruction.as_deref(),
        &timeline,
        &state.config.signer,
        media,
    )?;
    let cap = output_cap(
        req.max_output_tokens,
        state.config.default_max_output_tokens,
        served.iter().find(|m| m.id == engine_model),
    );
    let request = GenerateRequest {
        model: engine_model,
        messages,
        sampling: req.sampling,
        stop_sequences: req.stop_sequences.clone(),
        max_output_tokens: cap,
        cache_scope: tenant.0.clone(),
        tools: req.tools.clone(),
        tool_mode: req.tool_mode,
        format: req.format.clone(),
        thinking: req.thinking,
    };
    Ok(Prepared {
        resolved_input,
        request,
    })
}

/// Admit a validated request and start generating.
///
/// # Errors
/// 4xx for an unknown model or chain, content the model cannot take, or a prompt that does
/// not fit; 429/503 when the engine cannot take it now; 500 when the store fails.
pub async fn start(
    state: &AppState,
    tenant: Tenant,
    req: ValidCreate,
) -> Result<Running, ApiError> {
    let key_slot = state.runs.slot(&tenant.0)?;
    let Prepared {
        resolved_input,
        request,
    } = prepare(state, &tenant, &req).await?;
    let model_label = request.model.clone();
    let surface = req.surface.as_str();
    let id = if req.store {
        new_id(req.previous_interaction_id.as_deref())
    } else {
        String::new()
    };
    // The engine logs this request's timings within this span (queue wait, prefill,
    // decode), so that `LOCALGEM_LOG` shows them under the interaction's id.
    let span = tracing::info_span!("interaction", id = %id, model = %model_label);
    let generation =
        tracing::Instrument::instrument(state.engine.generate(request), span.clone()).await?;

    let media_tokens = generation.media_tokens;
    let created = now();
    let record = InteractionRecord {
        id,
        tenant: tenant.0,
        model: req.model.clone(),
        status: Status::InProgress,
        created,
        updated: created,
        previous_interaction_id: req.previous_interaction_id.clone(),
        input: req.input,
        output: Vec::new(),
        usage: with_media(Usage::text(generation.prompt_tokens, 0, 0), media_tokens),
        error: None,
        resolved_input,
    };
    let live = Arc::new(Live::default());
    if req.store {
        state
            .store
            .insert_owned(&record, state.runs.owner(), state.runs.lease_until_ms())
            .await?;
        state.runs.register(&record.id, live.clone());
    }
    let id = record.id.clone();
    let run = Run {
        st: state.clone(),
        record,
        live: live.clone(),
        store: req.store,
        summaries: req.thinking_summaries,
        model_label,
        surface,
        _key_slot: key_slot,
    };
    tokio::spawn(tracing::Instrument::instrument(
        drive(run, generation),
        span,
    ));
    let guard = (!req.background).then(|| CancelOnDrop::new(live.clone()));
    Ok(Running {
        id,
        model: req.model,
        created,
        live,
        guard,
    })
}

/// What [`drive`] needs of a started run.
struct Run {
    st: AppState,
    record: InteractionRecord,
    live: Arc<Live>,
    store: bool,
    summaries: bool,
    model_label: String,
    surface: &'static str,
    _key_slot: KeySlot,
}

/// Run a generation to its end: engine events into the log, the final record into the
/// store, the outcome into the log.
async fn drive(run: Run, generation: Generation) {
    let Run {
        st,
        mut record,
        live,
        store,
        summaries,
        model_label,
        surface,
        _key_slot,
    } = run;
    let created = record.created;
    let media_tokens = generation.media_tokens;
    let copy_stop = Arc::new(tokio::sync::Notify::new());
    let copier = (store && st.runs.config().share_events).then(|| {
        tokio::spawn(copy_log(
            st.clone(),
            record.id.clone(),
            live.clone(),
            copy_stop.clone(),
        ))
    });
    let mut w = StepWriter {
        live: &live,
        ids: store,
        summaries,
        signer: &st.config.signer,
        open: None,
        thought: String::new(),
        text_len: 0,
        calls: 0,
    };
    for e in opening(&record.id, &record.model, created, store) {
        live.log.push(e);
    }
    let mut events = generation.events;
    let mut fragments = 0u64;
    let ttft = metrics::histogram!("localgem_time_to_first_token_seconds",
        "model" => model_label.clone(), "surface" => surface);
    let itl = metrics::histogram!("localgem_inter_token_latency_seconds",
        "model" => model_label.clone(), "surface" => surface);
    let started = std::time::Instant::now();
    let mut last_token: Option<std::time::Instant> = None;
    let so_far = |fragments: u64| {
        with_media(
            Usage::text(generation.prompt_tokens, fragments, 0),
            media_tokens,
        )
    };
    let (status, usage, error) = loop {
        tokio::select! {
            ev = events.recv() => {
                if matches!(ev, Some(EngineEvent::Text(_) | EngineEvent::Thought(_))) {
                    let now = std::time::Instant::now();
                    match last_token {
                        None => ttft.record(now.duration_since(started).as_secs_f64()),
                        Some(prev) => itl.record(now.duration_since(prev).as_secs_f64()),
                    }
                    last_token = Some(now);
                    fragments += 1;
                }
                match ev {
                    Some(EngineEvent::Text(t)) => w.text(&t),
                    Some(EngineEvent::Thought(t)) => w.thought(&t),
                    Some(EngineEvent::ThoughtEnd) => {
                        if w.open.is_none() {
                            // An empty thought still gets its step.
                            w.open(OpenKind::Thought);
                        }
                        w.close();
                    }
                    Some(EngineEvent::Call { name, arguments }) => w.call(name, arguments),
                    Some(EngineEvent::Finished { reason, usage }) => {
                        let status = match reason {
                            FinishReason::Stop if w.calls > 0 => Status::RequiresAction,
                            FinishReason::Stop => Status::Completed,
                            FinishReason::MaxTokens | FinishReason::ContextFull => Status::Incomplete,
                        };
                        let mut u = with_media(
                            Usage::text(usage.input_tokens, usage.output_tokens, usage.cached_tokens),
                            media_tokens,
                        );
                        u.total_thought_tokens = usage.thought_tokens;
                        u.total_tokens += usage.thought_tokens;
                        break (status, u, None);
                    }
                    Some(EngineEvent::Failed(e)) => break (Status::Failed, so_far(fragments), Some(e)),
                    Some(EngineEvent::Lost(e)) => {
                        break (Status::Failed, so_far(fragments), Some(crate::events::lost(&e)))
                    }
                    None => break (Status::Failed, so_far(fragments), Some("the engine stopped".to_owned())),
                }
            }
            _ = live.cancel.notified() => {
                break (Status::Cancelled, so_far(fragments), None);
            }
        }
    };
    drop(events); // stops the engine sequence if it still runs
    if status != Status::Failed && w.calls == 0 && w.text_len == 0 {
        // Every answer has a model_output step, even an empty one (after a thought, say).
        let has_output = live
            .log
            .steps()
            .iter()
            .any(|s| matches!(s, Step::ModelOutput { .. }));
        if !has_output {
            w.open(OpenKind::Output);
        }
    }
    w.close();
    metrics::counter!("localgem_requests_total",
        "model" => model_label, "surface" => surface, "status" => status.as_str())
    .increment(1);
    record.status = status;
    record.usage = usage;
    record.error = error;
    record.updated = now();
    record.output = live.log.steps();
    // The stored record replaces the logged events for every reader from here on.
    copy_stop.notify_one();
    if let Some(copier) = copier {
        let _ = copier.await;
    }
    let (outcome, unsaved) = if store {
        match save_end(&st, &record).await {
            Ok(Saved::Ours) | Ok(Saved::Theirs(None)) => {
                (Outcome::Done(Box::new(record.clone())), None)
            }
            Ok(Saved::Theirs(Some(stored))) => {
                tracing::warn!(
                    status = stored.status.as_str(),
                    "the interaction was ended by another replica"
                );
                record = *stored;
                (Outcome::Done(Box::new(record.clone())), None)
            }
            Err(failed) => (
                Outcome::StoreFailed(failed.error.clone().unwrap_or_default()),
                Some(failed),
            ),
        }
    } else {
        (Outcome::Done(Box::new(record.clone())), None)
    };
    if matches!(outcome, Outcome::Done(_)) {
        live.log.push(with_id(
            end_event(&record, false),
            store.then(|| Cursor::END.id()),
        ));
    }
    live.log.end(outcome);
    match unsaved {
        // Readers here see the end through the log; the store gets it when it can.
        Some(failed) => {
            tokio::spawn(keep_saving(st.clone(), failed));
        }
        None if store => st.runs.remove(&record.id),
        None => {}
    }
    tracing::info!(
        status = record.status.as_str(),
        input_tokens = record.usage.total_input_tokens,
        output_tokens = record.usage.total_output_tokens,
        thought_tokens = record.usage.total_thought_tokens,
        "interaction finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(default: Option<u32>) -> localgem_core::ModelInfo {
        localgem_core::ModelInfo {
            id: "m".into(),
            display_name: "m".into(),
            context_tokens: 4096,
            ready: true,
            vision: false,
            audio_sample_rate: None,
            default_max_output_tokens: default,
        }
    }

    #[test]
    fn the_output_cap_is_the_requests_then_the_servers_then_the_models_then_none() {
        let tiny = model(Some(512));
        let real = model(None);
        assert_eq!(output_cap(Some(7), Some(100), Some(&tiny)), 7);
        assert_eq!(output_cap(None, Some(100), Some(&tiny)), 100);
        assert_eq!(output_cap(None, None, Some(&tiny)), 512);
        // No cap at all: the context's end stops the answer.
        assert_eq!(output_cap(None, None, Some(&real)), u32::MAX);
        assert_eq!(output_cap(None, None, None), u32::MAX);
        assert_eq!(output_cap(Some(0), None, None), 1);
    }
}
