//! Server-sent events: the exact framing of the live API, `event: <type>` and one `data:` line
//! of JSON carrying `event_type`, ending with `event: done` / `data: [DONE]`.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use localgem_core::InteractionRecord;
use localgem_wire::{Delta, Interaction, Status, Step, StreamEvent};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::run::{fmt_time, to_wire, Progress, Running, StepsView};

/// Encode one stream event.
pub fn event(e: &StreamEvent) -> Event {
    Event::default()
        .event(e.event_type())
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// An `error` event for a failure after the stream started; the detail is logged, the client
/// gets the generic internal-error body.
fn error_event(detail: impl std::fmt::Display) -> Event {
    event(&StreamEvent::Error {
        error: ApiError::internal(detail).body(),
        event_id: None,
    })
}

/// The closing `[DONE]` event.
pub fn done() -> Event {
    Event::default().event("done").data("[DONE]")
}

/// An SSE response fed by a channel of events.
pub fn response(rx: mpsc::Receiver<Event>) -> Response {
    let mut resp = Sse::new(ReceiverStream::new(rx).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn created(id: &str, model: &str, created: i64) -> StreamEvent {
    StreamEvent::Created {
        interaction: Interaction {
            id: id.to_owned(),
            object: "interaction".into(),
            model: Some(model.to_owned()),
            status: Status::InProgress,
            created: Some(fmt_time(created)),
            updated: None,
            steps: None,
            usage: None,
            service_tier: None,
            previous_interaction_id: None,
        },
        event_id: None,
    }
}

fn opening(id: &str, model: &str, created_at: i64) -> [StreamEvent; 2] {
    [
        created(id, model, created_at),
        StreamEvent::StatusUpdate {
            interaction_id: id.to_owned(),
            status: Status::InProgress,
            event_id: None,
        },
    ]
}

fn completed(r: &InteractionRecord) -> StreamEvent {
    StreamEvent::Completed {
        interaction: to_wire(r, StepsView::Omit),
        event_id: None,
    }
}

/// Events of one finished output step.
fn step_events(index: u32, step: &Step) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    match step {
        Step::ModelOutput { content, .. } => {
            out.push(StreamEvent::StepStart {
                index,
                step: json!({"type": "model_output"}),
                event_id: None,
            });
            for c in content {
                if let localgem_wire::Content::Text { text, .. } = c {
                    out.push(StreamEvent::StepDelta {
                        index,
                        delta: Delta::Text { text: text.clone() },
                        event_id: None,
                    });
                }
            }
        }
        Step::FunctionCall {
            id,
            name,
            arguments,
        } => {
            out.push(StreamEvent::StepStart {
                index,
                step: json!({"type": "function_call", "id": id, "name": name, "arguments": {}}),
                event_id: None,
            });
            out.push(StreamEvent::StepDelta {
                index,
                delta: Delta::ArgumentsDelta {
                    arguments: arguments.to_string(),
                },
                event_id: None,
            });
        }
        other => {
            let mut v = serde_json::to_value(other).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.retain(|k, _| k == "type");
            }
            out.push(StreamEvent::StepStart {
                index,
                step: v,
                event_id: None,
            });
            if let Step::Thought {
                signature: Some(sig),
                ..
            } = other
            {
                out.push(StreamEvent::StepDelta {
                    index,
                    delta: Delta::ThoughtSignature {
                        signature: sig.clone(),
                    },
                    event_id: None,
                });
            }
        }
    }
    out.push(StreamEvent::StepStop {
        index,
        event_id: None,
    });
    out
}

/// The complete event sequence of a finished record (for `GET ?stream=true`).
pub fn replay(r: &InteractionRecord) -> Vec<StreamEvent> {
    let mut out: Vec<StreamEvent> = opening(&r.id, &r.model, r.created).into();
    for (i, step) in r.output.iter().enumerate() {
        out.extend(step_events(i as u32, step));
    }
    out.push(completed(r));
    out
}

/// Stream a running generation: `created`, `status_update`, one `model_output` step whose
/// text arrives as deltas, `completed`, `[DONE]`.
pub fn live(mut run: Running) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        for e in opening(&run.id, &run.model, run.created) {
            if tx.send(event(&e)).await.is_err() {
                return;
            }
        }
        let start = StreamEvent::StepStart {
            index: 0,
            step: json!({"type": "model_output"}),
            event_id: None,
        };
        if tx.send(event(&start)).await.is_err() {
            return;
        }
        while let Some(p) = run.progress.recv().await {
            let ev = match p {
                Progress::Text(text) => event(&StreamEvent::StepDelta {
                    index: 0,
                    delta: Delta::Text { text },
                    event_id: None,
                }),
                Progress::Done(record) => {
                    let _ = tx
                        .send(event(&StreamEvent::StepStop {
                            index: 0,
                            event_id: None,
                        }))
                        .await;
                    if record.status == Status::Failed {
                        // One error event, then close (spec §4.5).
                        let detail = record.error.as_deref().unwrap_or("generation failed");
                        let _ = tx.send(error_event(detail)).await;
                        return;
                    }
                    let _ = tx.send(event(&completed(&record))).await;
                    let _ = tx.send(done()).await;
                    return;
                }
                Progress::StoreFailed(e) => {
                    let _ = tx.send(error_event(e)).await;
                    return;
                }
            };
            // The client went away: returning drops `run`, which stops the generation.
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    response(rx)
}

/// Stream a stored record's events, then `[DONE]`.
pub fn replay_response(r: &InteractionRecord) -> Response {
    let events = replay(r);
    let (tx, rx) = mpsc::channel::<Event>(events.len() + 1);
    for e in &events {
        let _ = tx.try_send(event(e));
    }
    let _ = tx.try_send(done());
    response(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use localgem_wire::{Content, Usage};

    #[test]
    fn replay_sequence() {
        let r = InteractionRecord {
            id: "v1_x".into(),
            tenant: "t".into(),
            model: "gemini-3-flash-preview".into(),
            status: Status::Completed,
            created: 0,
            updated: 1,
            previous_interaction_id: None,
            input: vec![Step::UserInput {
                content: vec![Content::text("q")],
            }],
            output: vec![Step::ModelOutput {
                content: vec![Content::text("a")],
                error: None,
            }],
            usage: Usage::text(1, 1, 0),
            error: None,
        };
        let types: Vec<&str> = replay(&r).iter().map(StreamEvent::event_type).collect();
        assert_eq!(
            types,
            [
                "interaction.created",
                "interaction.status_update",
                "step.start",
                "step.delta",
                "step.stop",
                "interaction.completed"
            ]
        );
    }
}
