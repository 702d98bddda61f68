//! Server-sent events: the exact framing of the live API, `event: <type>` and one `data:` line
//! of JSON carrying `event_type`, ending with `event: done` / `data: [DONE]`.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use localgem_core::InteractionRecord;
use localgem_wire::{Status, StreamEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::events::{replay, resume_after, Cursor};
use crate::live::{CancelOnDrop, Live, Outcome};

/// How long a stream waits for a client to take the next event.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(120);

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

/// Stream a running interaction from event `from` of its log (after `after`, when resuming),
/// ending with `[DONE]` (or right after an `error` event). `guard` is held while the client
/// reads: dropping it when the client goes away cancels a foreground generation.
pub fn follow(
    run_live: std::sync::Arc<Live>,
    after: Option<Cursor>,
    guard: Option<CancelOnDrop>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let _guard = guard;
        let mut from = 0usize;
        loop {
            let (events, outcome) = run_live.log.next(from).await;
            from += events.len();
            // The log ended without an outcome only if this batch is empty before filtering
            // (a resumed stream may filter a whole batch away and must keep waiting).
            let ended = events.is_empty();
            let events = match after {
                Some(c) => resume_after(events, c),
                None => events,
            };
            let mut failed = false;
            for e in &events {
                failed |= matches!(e, StreamEvent::Error { .. });
                // A client that stops reading for this long is gone: its stream ends (and a
                // foreground generation with it) instead of holding the task forever.
                let sent = tokio::time::timeout(SEND_TIMEOUT, tx.send(event(e))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
            match outcome {
                Some(Outcome::Done(_)) => {
                    if !failed {
                        let _ = tx.send(done()).await;
                    }
                    return;
                }
                Some(Outcome::StoreFailed(e)) => {
                    let _ = tx.send(error_event(e)).await;
                    return;
                }
                None if ended => return,
                None => {}
            }
        }
    });
    response(rx)
}

/// Stream a stored record's events (after `after`, when resuming), then `[DONE]`.
pub fn replay_response(r: &InteractionRecord, after: Option<Cursor>) -> Response {
    let mut events = replay(r, true);
    if let Some(c) = after {
        events = resume_after(events, c);
    }
    let failed = r.status == Status::Failed;
    let (tx, rx) = mpsc::channel::<Event>(events.len() + 1);
    for e in &events {
        let _ = tx.try_send(event(e));
    }
    if !failed {
        let _ = tx.try_send(done());
    }
    response(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use localgem_wire::{Content, Step, Usage};

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
            resolved_input: None,
        };
        let types: Vec<&str> = replay(&r, true)
            .iter()
            .map(StreamEvent::event_type)
            .collect();
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
