//! One generation from admission to its stored end.
//!
//! [`start`] resolves the model, loads the conversation chain, admits the request to the
//! engine and (with `store`) writes an `in_progress` record. A spawned task then turns the
//! engine's events into output steps and stream events, appends the events to the
//! interaction's [`LiveLog`] (which every reader follows: the creating request, a
//! `GET ?stream=true` attach, a poll), and writes the final record before it marks the log
//! done, so a GET after the stream sees the same steps.
//!
//! The task stops the generation when the interaction is cancelled, or when the creating
//! request goes away, unless it runs in the background.
//!
//! Every event of a stored interaction carries an `event_id` that is a position in the
//! stream (see [`Cursor`]); the same positions are computed when a finished interaction is
//! replayed from the store, so `last_event_id` resumes at the same place either way.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use localgem_core::{EngineEvent, FinishReason, GenerateRequest, InteractionRecord};
use localgem_wire::{Content, Delta, Interaction, Status, Step, StreamEvent, Usage};
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::error::ApiError;
use crate::tenant::Tenant;
use crate::validate::{check_modalities, to_messages, ValidCreate};
use crate::AppState;

/// Chains longer than this are refused (a guard against cycles in a damaged store).
const MAX_CHAIN: usize = 100_000;

/// Quick tries at saving a finished interaction before it is marked failed.
const SAVE_TRIES: u32 = 3;
/// The longest wait between tries at saving the failed mark.
const SAVE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Save a finished interaction, trying again a few times. When the store cannot take it
/// (a full disk, say), the record to keep trying with is returned: the same turn marked
/// `failed`, so that no reader waits on it as if it still ran.
async fn save_end(st: &AppState, record: &InteractionRecord) -> Result<(), InteractionRecord> {
    let mut last = String::new();
    for i in 0..SAVE_TRIES {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(250 << i)).await;
        }
        match st.store.finish(record).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::error!(id = %record.id, "cannot save interaction (try {}): {e}", i + 1);
                last = e.to_string();
            }
        }
    }
    let mut failed = record.clone();
    failed.status = Status::Failed;
    failed.error = Some(format!(
        "the interaction ended but could not be saved: {last}"
    ));
    Err(failed)
}

/// Keep trying to store a failed mark until the store takes it (or the interaction was
/// deleted meanwhile); until then it stays among the running ones, whose log tells readers
/// in this process how it ended. Another process restarting on the store fails it too.
async fn keep_saving(st: AppState, failed: InteractionRecord) {
    let mut wait = std::time::Duration::from_millis(500);
    loop {
        match st.store.finish(&failed).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(id = %failed.id, "cannot mark interaction failed yet: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(SAVE_BACKOFF_MAX);
            }
        }
    }
    tracing::info!(id = %failed.id, "interaction marked failed after its save failed");
    st.running.lock().expect("poisoned").remove(&failed.id);
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

/// How a generation ended, as its log reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The interaction ended (any terminal status) and, with `store`, is saved.
    Done(Box<InteractionRecord>),
    /// Saving the result failed: nothing was stored.
    StoreFailed(String),
}

#[derive(Debug, Default)]
struct LogInner {
    events: Vec<StreamEvent>,
    /// Output steps so far (the last one may still be growing).
    steps: Vec<Step>,
    outcome: Option<Outcome>,
}

/// The events of one running interaction, in order, for any number of readers.
#[derive(Debug)]
pub struct LiveLog {
    inner: Mutex<LogInner>,
    changed: watch::Sender<u64>,
}

impl Default for LiveLog {
    fn default() -> Self {
        LiveLog {
            inner: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl LiveLog {
    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn push(&self, e: StreamEvent) {
        self.inner.lock().expect("poisoned").events.push(e);
        self.bump();
    }

    /// Events from index `from` on, waiting until there is at least one or the log is done;
    /// with the outcome once the log is done and every event was returned.
    pub async fn next(&self, from: usize) -> (Vec<StreamEvent>, Option<Outcome>) {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let g = self.inner.lock().expect("poisoned");
                if g.events.len() > from || g.outcome.is_some() {
                    let events = g.events.get(from..).unwrap_or_default().to_vec();
                    return (events, g.outcome.clone());
                }
            }
            if rx.changed().await.is_err() {
                return (Vec::new(), None);
            }
        }
    }

    /// Wait for the end.
    pub async fn outcome(&self) -> Option<Outcome> {
        let mut from = 0;
        loop {
            let (events, outcome) = self.next(from).await;
            if outcome.is_some() {
                return outcome;
            }
            if events.is_empty() {
                return None;
            }
            from += events.len();
        }
    }

    /// The outcome, if the log has ended (without waiting).
    pub fn ended(&self) -> Option<Outcome> {
        self.inner.lock().expect("poisoned").outcome.clone()
    }

    /// The output steps produced so far.
    pub fn steps(&self) -> Vec<Step> {
        self.inner.lock().expect("poisoned").steps.clone()
    }
}

/// What a running interaction shares with readers: its log and its cancel signal.
#[derive(Debug, Default)]
pub struct Live {
    /// The events.
    pub log: LiveLog,
    /// Notified to cancel.
    pub cancel: Notify,
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
    /// Its log and cancel signal.
    pub live: Arc<Live>,
    /// Cancels the generation when dropped, unless it runs in the background or has ended.
    pub guard: Option<CancelOnDrop>,
}

/// Cancels a generation when the request that started it goes away.
#[derive(Debug)]
pub struct CancelOnDrop(Arc<Live>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let done = self
            .0
            .log
            .inner
            .lock()
            .map(|g| g.outcome.is_some())
            .unwrap_or(true);
        if !done {
            self.0.cancel.notify_one();
        }
    }
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

/// A position in an interaction's event stream, carried as `event_id`.
///
/// `stage` 0 is `interaction.created`, 1 the status update, 2 the steps, 3 the end. Within a
/// step, `phase` 0 is its start, 1 its content deltas (with `offset`, the byte length of the
/// step's content after the delta), 2 a closing delta (a thought's signature), 3 its stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    stage: u8,
    index: u32,
    phase: u8,
    offset: u64,
}

impl Cursor {
    const CREATED: Cursor = Cursor::at(0, 0, 0, 0);
    const STATUS: Cursor = Cursor::at(1, 0, 0, 0);
    const END: Cursor = Cursor::at(3, 0, 0, 0);

    const fn at(stage: u8, index: u32, phase: u8, offset: u64) -> Cursor {
        Cursor {
            stage,
            index,
            phase,
            offset,
        }
    }

    fn step(index: u32, phase: u8, offset: u64) -> Cursor {
        Cursor::at(2, index, phase, offset)
    }

    /// The `event_id` string.
    pub fn id(self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.stage, self.index, self.phase, self.offset
        )
    }

    /// Parse an `event_id`.
    pub fn parse(s: &str) -> Option<Cursor> {
        let mut it = s.split('.');
        let c = Cursor {
            stage: it.next()?.parse().ok()?,
            index: it.next()?.parse().ok()?,
            phase: it.next()?.parse().ok()?,
            offset: it.next()?.parse().ok()?,
        };
        (it.next().is_none() && c.stage <= 3 && c.phase <= 3).then_some(c)
    }
}

fn with_id(mut e: StreamEvent, id: Option<String>) -> StreamEvent {
    *e.event_id_mut() = id;
    e
}

/// The events that follow `after`: whole events past it, and the unseen tail of a content
/// delta it falls inside (a replay sends a step's content as one delta where the live stream
/// sent many).
pub fn resume_after(events: Vec<StreamEvent>, after: Cursor) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    for e in events {
        let Some(c) = e.event_id().and_then(Cursor::parse) else {
            continue;
        };
        if c <= after {
            continue;
        }
        let same_content = c.stage == 2
            && c.phase == 1
            && after.stage == 2
            && after.phase == 1
            && after.index == c.index;
        if !same_content {
            out.push(e);
            continue;
        }
        // This delta covers bytes (c.offset - len, c.offset]; the client has up to after.offset.
        let StreamEvent::StepDelta {
            index,
            delta,
            event_id,
        } = e
        else {
            out.push(e);
            continue;
        };
        let cut = |s: &str| -> Option<String> {
            let start = c.offset - s.len() as u64;
            let skip = after.offset.saturating_sub(start) as usize;
            s.get(skip..).map(str::to_owned)
        };
        let trimmed = match &delta {
            Delta::Text { text } => cut(text).map(|text| Delta::Text { text }),
            Delta::ArgumentsDelta { arguments } => {
                cut(arguments).map(|arguments| Delta::ArgumentsDelta { arguments })
            }
            Delta::ThoughtSummary {
                content: Content::Text { text, .. },
            } => cut(text).map(|t| Delta::ThoughtSummary {
                content: Content::text(t),
            }),
            other => Some(other.clone()),
        };
        if let Some(delta) = trimmed {
            out.push(StreamEvent::StepDelta {
                index,
                delta,
                event_id,
            });
        }
    }
    out
}

/// The partial Interaction of stream events (and of a background create's answer).
pub fn partial(id: &str, model: &str, status: Status, created: i64) -> Interaction {
    Interaction {
        id: id.to_owned(),
        object: "interaction".into(),
        model: Some(model.to_owned()),
        status,
        created: Some(fmt_time(created)),
        updated: None,
        steps: None,
        usage: None,
        service_tier: None,
        previous_interaction_id: None,
    }
}

/// The first two events of every stream, `interaction.created` and the `in_progress` status
/// update, with their positions as `event_id` when `ids`.
fn opening(id: &str, model: &str, created: i64, ids: bool) -> [StreamEvent; 2] {
    [
        StreamEvent::Created {
            interaction: partial(id, model, Status::InProgress, created),
            event_id: ids.then(|| Cursor::CREATED.id()),
        },
        StreamEvent::StatusUpdate {
            interaction_id: id.to_owned(),
            status: Status::InProgress,
            event_id: ids.then(|| Cursor::STATUS.id()),
        },
    ]
}

/// Builds output steps and their stream events from engine events.
struct StepWriter<'a> {
    live: &'a Live,
    ids: bool,
    summaries: bool,
    signer: &'a crate::signature::Signer,
    /// The open step: its index and kind.
    open: Option<(u32, OpenKind)>,
    thought: String,
    /// Bytes of the open model_output step's text.
    text_len: u64,
    calls: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenKind {
    Thought,
    Output,
}

impl StepWriter<'_> {
    fn emit(&self, e: StreamEvent, at: Cursor) {
        self.live.log.push(with_id(e, self.ids.then(|| at.id())));
    }

    fn next_index(&self) -> u32 {
        self.live.log.inner.lock().expect("poisoned").steps.len() as u32
    }

    fn open(&mut self, kind: OpenKind) -> u32 {
        if let Some((i, k)) = self.open {
            if k == kind {
                return i;
            }
            self.close();
        }
        let index = self.next_index();
        let step = match kind {
            OpenKind::Thought => Step::Thought {
                signature: None,
                summary: None,
            },
            OpenKind::Output => Step::ModelOutput {
                content: vec![Content::text("")],
                error: None,
            },
        };
        let shell = shell(&step);
        self.live
            .log
            .inner
            .lock()
            .expect("poisoned")
            .steps
            .push(step);
        self.emit(
            StreamEvent::StepStart {
                index,
                step: shell,
                event_id: None,
            },
            Cursor::step(index, 0, 0),
        );
        self.open = Some((index, kind));
        index
    }

    /// Change the newest step in place (readers see steps so far).
    fn edit_last(&self, f: impl FnOnce(&mut Step)) {
        if let Some(step) = self
            .live
            .log
            .inner
            .lock()
            .expect("poisoned")
            .steps
            .last_mut()
        {
            f(step);
        }
    }

    fn thought(&mut self, t: &str) {
        let index = self.open(OpenKind::Thought);
        self.thought.push_str(t);
        if self.summaries {
            self.edit_last(|step| {
                if let Step::Thought { summary, .. } = step {
                    match summary.get_or_insert_with(Vec::new).first_mut() {
                        Some(Content::Text { text, .. }) => text.push_str(t),
                        _ => *summary = Some(vec![Content::text(t)]),
                    }
                }
            });
            self.emit(
                StreamEvent::StepDelta {
                    index,
                    delta: Delta::ThoughtSummary {
                        content: Content::text(t),
                    },
                    event_id: None,
                },
                Cursor::step(index, 1, self.thought.len() as u64),
            );
        }
    }

    fn text(&mut self, t: &str) {
        let index = self.open(OpenKind::Output);
        self.text_len += t.len() as u64;
        self.edit_last(|step| {
            if let Step::ModelOutput { content, .. } = step {
                if let Some(Content::Text { text, .. }) = content.first_mut() {
                    text.push_str(t);
                }
            }
        });
        self.emit(
            StreamEvent::StepDelta {
                index,
                delta: Delta::Text { text: t.to_owned() },
                event_id: None,
            },
            Cursor::step(index, 1, self.text_len),
        );
    }

    /// Close the open step (a thought gets its signature).
    fn close(&mut self) {
        let Some((index, kind)) = self.open.take() else {
            return;
        };
        if kind == OpenKind::Thought {
            let signature = self.signer.sign(&self.thought);
            self.edit_last(|step| {
                if let Step::Thought { signature: sig, .. } = step {
                    *sig = Some(signature.clone());
                }
            });
            self.emit(
                StreamEvent::StepDelta {
                    index,
                    delta: Delta::ThoughtSignature { signature },
                    event_id: None,
                },
                Cursor::step(index, 2, 0),
            );
            self.thought.clear();
        } else {
            self.text_len = 0;
        }
        self.emit(
            StreamEvent::StepStop {
                index,
                event_id: None,
            },
            Cursor::step(index, 3, 0),
        );
    }

    fn call(&mut self, name: String, arguments: serde_json::Value) {
        self.close();
        let index = self.next_index();
        let id = format!(
            "call_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 9]>())
        );
        let args = arguments.to_string();
        let step = Step::FunctionCall {
            id,
            name,
            arguments,
        };
        let shell = shell(&step);
        self.live
            .log
            .inner
            .lock()
            .expect("poisoned")
            .steps
            .push(step);
        self.calls += 1;
        self.emit(
            StreamEvent::StepStart {
                index,
                step: shell,
                event_id: None,
            },
            Cursor::step(index, 0, 0),
        );
        let len = args.len() as u64;
        self.emit(
            StreamEvent::StepDelta {
                index,
                delta: Delta::ArgumentsDelta { arguments: args },
                event_id: None,
            },
            Cursor::step(index, 1, len),
        );
        self.emit(
            StreamEvent::StepStop {
                index,
                event_id: None,
            },
            Cursor::step(index, 3, 0),
        );
    }
}

/// The `step.start` shell of a step: its type, and for a function call its id and name with
/// empty arguments (the arguments follow as a delta).
fn shell(step: &Step) -> serde_json::Value {
    match step {
        Step::FunctionCall { id, name, .. } => {
            json!({"type": "function_call", "id": id, "name": name, "arguments": {}})
        }
        other => {
            let mut v = serde_json::to_value(other).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.retain(|k, _| k == "type");
            }
            v
        }
    }
}

/// The stream events of a finished record, with the same positions a live stream has.
pub fn replay(r: &InteractionRecord, ids: bool) -> Vec<StreamEvent> {
    let id = |c: Cursor| ids.then(|| c.id());
    let mut out = opening(&r.id, &r.model, r.created, ids).to_vec();
    for (i, step) in r.output.iter().enumerate() {
        let index = i as u32;
        let start = |step: serde_json::Value| StreamEvent::StepStart {
            index,
            step,
            event_id: id(Cursor::step(index, 0, 0)),
        };
        let delta = |delta: Delta, c: Cursor| StreamEvent::StepDelta {
            index,
            delta,
            event_id: id(c),
        };
        out.push(start(shell(step)));
        match step {
            Step::ModelOutput { content, .. } => {
                let mut len = 0u64;
                for c in content {
                    if let Content::Text { text, .. } = c {
                        len += text.len() as u64;
                        out.push(delta(
                            Delta::Text { text: text.clone() },
                            Cursor::step(index, 1, len),
                        ));
                    }
                }
            }
            Step::Thought { signature, summary } => {
                let mut len = 0u64;
                for c in summary.iter().flatten() {
                    if let Content::Text { text, .. } = c {
                        len += text.len() as u64;
                        out.push(delta(
                            Delta::ThoughtSummary {
                                content: Content::text(text.clone()),
                            },
                            Cursor::step(index, 1, len),
                        ));
                    }
                }
                if let Some(sig) = signature {
                    out.push(delta(
                        Delta::ThoughtSignature {
                            signature: sig.clone(),
                        },
                        Cursor::step(index, 2, 0),
                    ));
                }
            }
            Step::FunctionCall { arguments, .. } => {
                let args = arguments.to_string();
                let len = args.len() as u64;
                out.push(delta(
                    Delta::ArgumentsDelta { arguments: args },
                    Cursor::step(index, 1, len),
                ));
            }
            _ => {}
        }
        out.push(StreamEvent::StepStop {
            index,
            event_id: id(Cursor::step(index, 3, 0)),
        });
    }
    out.push(end_event(r, ids));
    out
}

/// The last event of a finished interaction: `interaction.completed` (any terminal status
/// but failed), or `error`.
fn end_event(r: &InteractionRecord, ids: bool) -> StreamEvent {
    let event_id = ids.then(|| Cursor::END.id());
    if r.status == Status::Failed {
        let detail = r.error.as_deref().unwrap_or("generation failed");
        return StreamEvent::Error {
            error: ApiError::internal(detail).body(),
            event_id,
        };
    }
    StreamEvent::Completed {
        interaction: to_wire(r, StepsView::Omit),
        event_id,
    }
}

/// A running interaction's place in its key's count; given back when dropped.
struct KeySlot {
    table: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    tenant: String,
}

impl KeySlot {
    fn take(st: &AppState, tenant: &str) -> Result<KeySlot, ApiError> {
        let limit = st.config.max_running_per_key;
        let mut t = st.per_key.lock().expect("poisoned");
        let n = t.entry(tenant.to_owned()).or_insert(0);
        if limit > 0 && *n >= limit {
            return Err(ApiError::overloaded(format!(
                "this API key already has {limit} interactions running; wait for one to finish"
            )));
        }
        *n += 1;
        Ok(KeySlot {
            table: st.per_key.clone(),
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().expect("poisoned");
        if let Some(n) = t.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.tenant);
            }
        }
    }
}

/// Count a prompt's image positions as `image` input rather than `text`.
fn with_images(mut u: Usage, image_tokens: u64) -> Usage {
    if image_tokens > 0 {
        for m in &mut u.input_tokens_by_modality {
            if m.modality == "text" {
                m.tokens = m.tokens.saturating_sub(image_tokens);
            }
        }
        u.input_tokens_by_modality.retain(|m| m.tokens > 0);
        u.input_tokens_by_modality
            .push(localgem_wire::ModalityTokens {
                modality: "image".into(),
                tokens: image_tokens,
            });
    }
    u
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
    let key_slot = KeySlot::take(state, &tenant.0)?;
    let mut timeline = match &req.previous_interaction_id {
        Some(prev) => load_history(state, &tenant, prev).await?,
        None => Vec::new(),
    };
    timeline.extend(req.input.iter().cloned());
    // The model must take the media; documents become text, images pixels.
    let vision = served.iter().any(|m| m.id == engine_model && m.vision);
    check_modalities(&timeline, &engine_model, vision)?;
    let images = crate::content::resolve(state, &tenant, &mut timeline, vision).await?;
    let messages = to_messages(
        req.system_instruction.as_deref(),
        &timeline,
        &state.config.signer,
        images,
    )?;
    let model_label = engine_model.clone();
    let cap = output_cap(
        req.max_output_tokens,
        state.config.default_max_output_tokens,
        served.iter().find(|m| m.id == engine_model),
    );
    let generation = state
        .engine
        .generate(GenerateRequest {
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
        })
        .await?;

    let image_tokens = generation.image_tokens;
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
        usage: with_images(Usage::text(generation.prompt_tokens, 0, 0), image_tokens),
        error: None,
    };
    let live = Arc::new(Live::default());
    if req.store {
        state.store.insert(&record).await?;
        state
            .running
            .lock()
            .expect("poisoned")
            .insert(record.id.clone(), live.clone());
    }

    let id = record.id.clone();
    let st = state.clone();
    let store = req.store;
    let summaries = req.thinking_summaries;
    let task_live = live.clone();
    tokio::spawn(async move {
        let _key_slot = key_slot;
        let live = task_live;
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
        let ttft = metrics::histogram!("localgem_time_to_first_token_seconds", "model" => model_label.clone());
        let itl = metrics::histogram!("localgem_inter_token_latency_seconds", "model" => model_label.clone());
        let started = std::time::Instant::now();
        let mut last_token: Option<std::time::Instant> = None;
        let so_far = |fragments: u64| {
            with_images(
                Usage::text(generation.prompt_tokens, fragments, 0),
                image_tokens,
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
                            let mut u = with_images(
                                Usage::text(usage.input_tokens, usage.output_tokens, usage.cached_tokens),
                                image_tokens,
                            );
                            u.total_thought_tokens = usage.thought_tokens;
                            u.total_tokens += usage.thought_tokens;
                            break (status, u, None);
                        }
                        Some(EngineEvent::Failed(e)) => break (Status::Failed, so_far(fragments), Some(e)),
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
        metrics::counter!("localgem_interactions_total", "model" => model_label, "status" => status.as_str())
            .increment(1);
        record.status = status;
        record.usage = usage;
        record.error = error;
        record.updated = now();
        record.output = live.log.steps();
        let (outcome, unsaved) = if store {
            match save_end(&st, &record).await {
                Ok(()) => (Outcome::Done(Box::new(record.clone())), None),
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
        {
            let mut g = live.log.inner.lock().expect("poisoned");
            g.outcome = Some(outcome);
        }
        live.log.bump();
        match unsaved {
            // Readers here see the end through the log; the store gets it when it can.
            Some(failed) => {
                tokio::spawn(keep_saving(st.clone(), failed));
            }
            None if store => {
                st.running.lock().expect("poisoned").remove(&record.id);
            }
            None => {}
        }
        tracing::info!(
            id = %record.id, status = record.status.as_str(),
            input_tokens = record.usage.total_input_tokens,
            output_tokens = record.usage.total_output_tokens,
            thought_tokens = record.usage.total_thought_tokens, "interaction finished"
        );
    });
    let guard = (!req.background).then(|| CancelOnDrop(live.clone()));
    Ok(Running {
        id,
        model: req.model,
        created,
        live,
        guard,
    })
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
