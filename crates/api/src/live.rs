//! A running interaction as this process holds it: its event log, which any number of
//! readers follow (the creating request, a `GET ?stream=true` attach, the writer that copies
//! it to the store for other replicas), its cancel signal, and the writer that turns engine
//! output into steps and events.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use localgem_core::InteractionRecord;
use localgem_wire::{Content, Delta, Step, StreamEvent};
use tokio::sync::{watch, Notify};

use crate::events::{shell, with_id, Cursor};

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

    pub(crate) fn push(&self, e: StreamEvent) {
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

    /// End the log with `outcome`; readers see it after every event.
    pub(crate) fn end(&self, outcome: Outcome) {
        self.inner.lock().expect("poisoned").outcome = Some(outcome);
        self.bump();
    }

    /// The events from index `from` on, without waiting.
    pub fn events_from(&self, from: usize) -> Vec<StreamEvent> {
        let g = self.inner.lock().expect("poisoned");
        g.events.get(from..).unwrap_or_default().to_vec()
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

impl CancelOnDrop {
    /// Cancel `live` when dropped (unless it ended).
    pub fn new(live: Arc<Live>) -> Self {
        CancelOnDrop(live)
    }
}

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

/// Builds output steps and their stream events from engine events.
pub(crate) struct StepWriter<'a> {
    pub(crate) live: &'a Live,
    pub(crate) ids: bool,
    pub(crate) summaries: bool,
    pub(crate) signer: &'a crate::signature::Signer,
    /// The open step: its index and kind.
    pub(crate) open: Option<(u32, OpenKind)>,
    pub(crate) thought: String,
    /// Bytes of the open model_output step's text.
    pub(crate) text_len: u64,
    pub(crate) calls: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenKind {
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

    pub(crate) fn open(&mut self, kind: OpenKind) -> u32 {
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

    pub(crate) fn thought(&mut self, t: &str) {
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

    pub(crate) fn text(&mut self, t: &str) {
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
    pub(crate) fn close(&mut self) {
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

    pub(crate) fn call(&mut self, name: String, arguments: serde_json::Value) {
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
