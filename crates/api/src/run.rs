//! One generation from admission to its stored end.
//!
//! [`start`] resolves the model, loads the conversation chain, admits the request to the
//! engine and (with `store`) writes an `in_progress` record. A spawned task then consumes the
//! engine's events, forwards text to the client as [`Progress`], and writes the final record
//! atomically before it reports [`Progress::Done`], so a GET after the stream sees the same
//! text. The task stops the generation when the client goes away (its receiver is dropped) or
//! when the interaction is cancelled.

use std::sync::Arc;

use base64::Engine as _;
use localgem_core::{EngineEvent, FinishReason, GenerateRequest, InteractionRecord};
use localgem_wire::{Content, Interaction, Status, Step, Usage};
use tokio::sync::{mpsc, Notify};

use crate::error::ApiError;
use crate::tenant::Tenant;
use crate::validate::{check_modalities, to_messages, ValidCreate};
use crate::AppState;

/// Chains longer than this are refused (a guard against cycles in a damaged store).
const MAX_CHAIN: usize = 100_000;

/// What a running generation reports.
#[derive(Debug)]
pub enum Progress {
    /// A text fragment of the answer.
    Text(String),
    /// The interaction ended (any terminal status) and, with `store`, is saved.
    Done(Box<InteractionRecord>),
    /// Saving the result failed: nothing was stored.
    StoreFailed(String),
}

/// A started generation.
#[derive(Debug)]
pub struct Running {
    /// The interaction's id (`""` without `store`).
    pub id: String,
    /// The model id as requested.
    pub model: String,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Progress; dropping it stops the generation.
    pub progress: mpsc::UnboundedReceiver<Progress>,
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh interaction id: `v1_` and 24 random bytes in base64url.
pub fn new_id() -> String {
    let bytes: [u8; 24] = rand::random();
    format!(
        "v1_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// RFC 3339 UTC with second precision, as the live API writes timestamps.
pub fn fmt_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// Which steps an Interaction body shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepsView {
    /// Input and output (GET).
    All,
    /// Output only (create).
    Output,
    /// None (`interaction.completed`).
    Omit,
}

/// The wire Interaction of a record.
pub fn to_wire(r: &InteractionRecord, view: StepsView) -> Interaction {
    let steps = match view {
        StepsView::All => Some(r.input.iter().chain(&r.output).cloned().collect()),
        StepsView::Output => Some(r.output.clone()),
        StepsView::Omit => None,
    };
    Interaction {
        id: r.id.clone(),
        object: "interaction".into(),
        model: Some(r.model.clone()),
        status: r.status,
        created: Some(fmt_time(r.created)),
        updated: Some(fmt_time(r.updated)),
        steps,
        usage: Some(r.usage.clone()),
        service_tier: Some("standard".into()),
        previous_interaction_id: r.previous_interaction_id.clone(),
    }
}

/// The steps of the whole conversation before this turn, oldest first.
async fn load_history(
    state: &AppState,
    tenant: &Tenant,
    first: &str,
) -> Result<Vec<Step>, ApiError> {
    let mut chain = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(id) = next {
        let rec = state.store.get(&tenant.0, &id).await?.ok_or_else(|| {
            if id == first {
                ApiError::not_found(format!("interaction {id:?} not found"))
            } else {
                ApiError::not_found(format!(
                    "interaction {id:?}, an earlier turn of {first:?}, no longer exists"
                ))
            }
        })?;
        if !rec.status.is_terminal() {
            return Err(ApiError::bad_request(format!(
                "interaction {id:?} is still {}; wait for it to finish before continuing it",
                rec.status.as_str()
            )));
        }
        next = rec.previous_interaction_id.clone();
        chain.push(rec);
        if chain.len() > MAX_CHAIN {
            return Err(ApiError::bad_request("conversation chain is too long"));
        }
    }
    Ok(chain
        .into_iter()
        .rev()
        .flat_map(|r| r.input.into_iter().chain(r.output))
        .collect())
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
    let served = state.engine.models();
    let engine_model = state.config.aliases.resolve(&req.model, &served)?;
    check_modalities(&req.input, &engine_model)?;
    let mut timeline = match &req.previous_interaction_id {
        Some(prev) => load_history(state, &tenant, prev).await?,
        None => Vec::new(),
    };
    timeline.extend(req.input.iter().cloned());
    let messages = to_messages(req.system_instruction.as_deref(), &timeline)?;
    let model_label = engine_model.clone();
    let generation = state
        .engine
        .generate(GenerateRequest {
            model: engine_model,
            messages,
            sampling: req.sampling,
            stop_sequences: req.stop_sequences.clone(),
            max_output_tokens: req
                .max_output_tokens
                .unwrap_or(state.config.default_max_output_tokens),
            cache_scope: tenant.0.clone(),
        })
        .await?;

    let created = now();
    let mut record = InteractionRecord {
        id: if req.store { new_id() } else { String::new() },
        tenant: tenant.0,
        model: req.model.clone(),
        status: Status::InProgress,
        created,
        updated: created,
        previous_interaction_id: req.previous_interaction_id.clone(),
        input: req.input,
        output: Vec::new(),
        usage: Usage::text(generation.prompt_tokens, 0, 0),
        error: None,
    };
    let cancel = Arc::new(Notify::new());
    if req.store {
        state.store.insert(&record).await?;
        state
            .running
            .lock()
            .expect("poisoned")
            .insert(record.id.clone(), cancel.clone());
    }

    let (tx, progress) = mpsc::unbounded_channel();
    let id = record.id.clone();
    let st = state.clone();
    let store = req.store;
    tokio::spawn(async move {
        let mut events = generation.events;
        let mut text = String::new();
        let mut fragments = 0u64;
        let ttft = metrics::histogram!("localgem_time_to_first_token_seconds", "model" => model_label.clone());
        let itl = metrics::histogram!("localgem_inter_token_latency_seconds", "model" => model_label.clone());
        let started = std::time::Instant::now();
        let mut last_text: Option<std::time::Instant> = None;
        let (status, usage, error) = loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(EngineEvent::Text(t)) => {
                        let now = std::time::Instant::now();
                        match last_text {
                            None => ttft.record(now.duration_since(started).as_secs_f64()),
                            Some(prev) => itl.record(now.duration_since(prev).as_secs_f64()),
                        }
                        last_text = Some(now);
                        text.push_str(&t);
                        fragments += 1;
                        // A closed receiver is noticed by the `closed()` branch.
                        let _ = tx.send(Progress::Text(t));
                    }
                    Some(EngineEvent::Finished { reason, usage }) => {
                        let status = match reason {
                            FinishReason::Stop => Status::Completed,
                            FinishReason::MaxTokens | FinishReason::ContextFull => Status::Incomplete,
                        };
                        break (status, Usage::text(usage.input_tokens, usage.output_tokens, usage.cached_tokens), None);
                    }
                    Some(EngineEvent::Failed(e)) => {
                        break (Status::Failed, Usage::text(generation.prompt_tokens, fragments, 0), Some(e));
                    }
                    None => {
                        break (Status::Failed, Usage::text(generation.prompt_tokens, fragments, 0), Some("the engine stopped".to_owned()));
                    }
                },
                _ = tx.closed() => {
                    break (Status::Cancelled, Usage::text(generation.prompt_tokens, fragments, 0), Some("the client disconnected".to_owned()));
                }
                _ = cancel.notified() => {
                    break (Status::Cancelled, Usage::text(generation.prompt_tokens, fragments, 0), None);
                }
            }
        };
        drop(events); // stops the engine sequence if it still runs
        metrics::counter!("localgem_interactions_total", "model" => model_label, "status" => status.as_str())
            .increment(1);
        record.status = status;
        record.usage = usage;
        record.error = error;
        record.updated = now();
        record.output = vec![Step::ModelOutput {
            content: vec![Content::text(text)],
            error: None,
        }];
        if store {
            let saved = st.store.finish(&record).await;
            st.running.lock().expect("poisoned").remove(&record.id);
            if let Err(e) = saved {
                tracing::error!(id = %record.id, "cannot save interaction: {e}");
                let _ = tx.send(Progress::StoreFailed(e.to_string()));
                return;
            }
        }
        tracing::info!(
            id = %record.id, status = record.status.as_str(),
            input_tokens = record.usage.total_input_tokens,
            output_tokens = record.usage.total_output_tokens, "interaction finished"
        );
        let _ = tx.send(Progress::Done(Box::new(record)));
    });
    Ok(Running {
        id,
        model: req.model,
        created,
        progress,
    })
}
