//! Streaming an interaction that another replica runs: its events come from the store's log
//! (which the owner appends to every few tens of milliseconds) until the stored record is
//! final, and then from the record itself, resumed after the last event sent. Both carry the
//! same event positions, so the client sees one unbroken stream, and `last_event_id` works
//! on any replica.

use std::time::Duration;

use axum::response::Response;
use localgem_wire::StreamEvent;
use tokio::sync::mpsc;

use crate::events::{replay, resume_after, Cursor};
use crate::sse::{done, event, response, SEND_TIMEOUT};
use crate::AppState;

/// How often the store is asked for new events while nothing arrives.
const POLL: Duration = Duration::from_millis(40);
/// Events read per query.
const BATCH: u32 = 500;
/// How long a store that cannot be reached may stall a stream before it ends with an error.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// Stream interaction `id` of `tenant`, run by another replica, after `after`.
pub fn follow(st: AppState, tenant: String, id: String, after: Option<Cursor>) -> Response {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let send = |e: &StreamEvent| {
            let tx = tx.clone();
            let ev = event(e);
            async move {
                matches!(
                    tokio::time::timeout(SEND_TIMEOUT, tx.send(ev)).await,
                    Ok(Ok(()))
                )
            }
        };
        let mut cursor = after;
        let mut seq: Option<u64> = None;
        let mut trouble: Option<tokio::time::Instant> = None;
        loop {
            // The record first: once it is final, the logged events are gone and the record
            // holds everything.
            let record = match st.store.get(&tenant, &id).await {
                Ok(r) => r,
                Err(e) if trouble.is_none_or(|t| t.elapsed() < STORE_PATIENCE) => {
                    tracing::debug!(%id, "cannot read a followed interaction yet: {e}");
                    trouble.get_or_insert_with(tokio::time::Instant::now);
                    tokio::time::sleep(POLL * 5).await;
                    continue;
                }
                Err(e) => {
                    let _ = send(&store_error(e)).await;
                    return;
                }
            };
            let Some(record) = record else {
                let gone = crate::error::ApiError::not_found(format!(
                    "interaction {id:?} was deleted while it ran"
                ));
                let _ = send(&StreamEvent::Error {
                    error: gone.body(),
                    event_id: None,
                })
                .await;
                return;
            };
            if record.status.is_terminal() {
                let mut rest = replay(&record, true);
                if let Some(c) = cursor {
                    rest = resume_after(rest, c);
                }
                let mut failed = false;
                for e in &rest {
                    failed |= matches!(e, StreamEvent::Error { .. });
                    if !send(e).await {
                        return;
                    }
                }
                if !failed {
                    let _ = tx.send(done()).await;
                }
                return;
            }
            let logged = match st.store.events_after(&id, seq, BATCH).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(%id, "cannot read logged events yet: {e}");
                    trouble.get_or_insert_with(tokio::time::Instant::now);
                    tokio::time::sleep(POLL * 5).await;
                    continue;
                }
            };
            trouble = None;
            let full = logged.len() == BATCH as usize;
            for (n, text) in logged {
                seq = Some(n);
                let Ok(e) = serde_json::from_str::<StreamEvent>(&text) else {
                    tracing::warn!(%id, seq = n, "skipping an undecodable logged event");
                    continue;
                };
                let Some(at) = e.event_id().and_then(Cursor::parse) else {
                    continue;
                };
                let fresh = match cursor {
                    Some(c) => resume_after(vec![e], c),
                    None => vec![e],
                };
                for e in &fresh {
                    if !send(e).await {
                        return;
                    }
                }
                if cursor.is_none_or(|c| at > c) {
                    cursor = Some(at);
                }
            }
            if !full {
                tokio::time::sleep(POLL).await;
            }
        }
    });
    response(rx)
}

fn store_error(e: localgem_core::StoreError) -> StreamEvent {
    StreamEvent::Error {
        error: crate::error::ApiError::from(e).body(),
        event_id: None,
    }
}
