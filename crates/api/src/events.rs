//! The one encoder of an interaction's stream events, live and stored.
//!
//! Every event of a stored interaction carries an `event_id` that is a position in the
//! stream (see [`Cursor`]); the same positions are computed when a finished interaction is
//! replayed from the store ([`replay`]), so `last_event_id` resumes at the same place
//! whether the events come from the running log, another replica's logged events, or the
//! stored record.

use base64::Engine as _;
use localgem_core::InteractionRecord;
use localgem_wire::{Content, Delta, Interaction, Status, Step, StreamEvent};
use serde_json::json;

use crate::error::ApiError;

/// Now, in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Characters of an id that carry its conversation's key (after `v1_`).
pub const CHAIN_KEY_LEN: usize = 11;

/// The conversation key of an id: the 11 characters after `v1_`, when it has them.
pub fn chain_key(id: &str) -> Option<&str> {
    let key = id.strip_prefix("v1_")?.get(..CHAIN_KEY_LEN)?;
    key.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        .then_some(key)
}

/// A fresh interaction id: `v1_`, the conversation's key (inherited from the turn it
/// continues, else new), and 16 random bytes in base64url. A load balancer that hashes the
/// key sends every turn of a conversation to the same replica.
pub fn new_id(previous: Option<&str>) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let key = match previous.and_then(chain_key) {
        Some(k) => k.to_owned(),
        None => b64(&rand::random::<[u8; 9]>())[..CHAIN_KEY_LEN].to_owned(),
    };
    format!("v1_{key}{}", b64(&rand::random::<[u8; 16]>()))
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
    pub(crate) const CREATED: Cursor = Cursor::at(0, 0, 0, 0);
    pub(crate) const STATUS: Cursor = Cursor::at(1, 0, 0, 0);
    pub(crate) const END: Cursor = Cursor::at(3, 0, 0, 0);

    const fn at(stage: u8, index: u32, phase: u8, offset: u64) -> Cursor {
        Cursor {
            stage,
            index,
            phase,
            offset,
        }
    }

    pub(crate) fn step(index: u32, phase: u8, offset: u64) -> Cursor {
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

pub(crate) fn with_id(mut e: StreamEvent, id: Option<String>) -> StreamEvent {
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
pub(crate) fn opening(id: &str, model: &str, created: i64, ids: bool) -> [StreamEvent; 2] {
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

/// The `step.start` shell of a step: its type, and for a function call its id and name with
/// empty arguments (the arguments follow as a delta).
pub(crate) fn shell(step: &Step) -> serde_json::Value {
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

/// How a stored error that is meant for the client starts (see [`lost`]); other errors are
/// internal and reach clients as such.
const LOST: &str = "unavailable: ";

/// The stored error of a generation whose engine was lost (the client sees the message, as
/// an `unavailable` error).
pub(crate) fn lost(message: &str) -> String {
    format!("{LOST}{message}")
}

/// What a failed run tells its client: `unavailable` when its engine was lost, else the
/// generic internal error (the detail is logged).
pub(crate) fn failure(r: &InteractionRecord) -> ApiError {
    let detail = r.error.as_deref().unwrap_or("generation failed");
    match detail.strip_prefix(LOST) {
        Some(message) => ApiError::unavailable(message),
        None => ApiError::internal(detail),
    }
}

/// The last event of a finished interaction: `interaction.completed` (any terminal status
/// but failed), or `error`.
pub(crate) fn end_event(r: &InteractionRecord, ids: bool) -> StreamEvent {
    let event_id = ids.then(|| Cursor::END.id());
    if r.status == Status::Failed {
        return StreamEvent::Error {
            error: failure(r).body(),
            event_id,
        };
    }
    StreamEvent::Completed {
        interaction: to_wire(r, StepsView::Omit),
        event_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_conversations_key() {
        let first = new_id(None);
        assert_eq!(first.len(), 3 + CHAIN_KEY_LEN + 22);
        let key = chain_key(&first).unwrap().to_owned();
        let second = new_id(Some(&first));
        let third = new_id(Some(&second));
        assert_ne!(first, second);
        assert_eq!(chain_key(&second), Some(key.as_str()));
        assert_eq!(chain_key(&third), Some(key.as_str()));
        // Another conversation gets another key (11 random characters).
        assert_ne!(chain_key(&new_id(None)), Some(key.as_str()));
        // Ids of other shapes start a fresh key.
        assert_eq!(chain_key("short"), None);
        assert_eq!(chain_key("v1_abc"), None);
        assert_eq!(chain_key("v1_ab/cdefghijk"), None);
        assert_eq!(new_id(Some("nonsense")).len(), first.len());
    }
}
