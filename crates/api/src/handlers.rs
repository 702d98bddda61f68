//! Route handlers. Each one parses, validates, calls the engine or the store through
//! [`crate::run`], and answers JSON or SSE; every error is an [`ApiError`] in the envelope.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use localgem_wire::{CreateInteractionRequest, Model, ModelList, Status};
use serde_json::json;

use crate::error::ApiError;
use crate::events::{self, to_wire, Cursor, StepsView};
use crate::live::Outcome;
use crate::run;
use crate::sse;
use crate::tenant::Tenant;
use crate::validate::validate_create;
use crate::AppState;

/// How long a cancel waits for the run to stop (on another replica: its next lease renewal,
/// a fraction of a second).
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The revision this server speaks; older ones get the live API's 400.
const API_REVISION: &str = "2026-05-20";

/// `GET /healthz`: 200 once the default model is loaded (for a model served by remote
/// engines: once one of them serves), with the remote engines' health when there are any.
pub async fn healthz(State(st): State<AppState>) -> Response {
    let upstreams = st.engine.upstreams();
    let (status, word) = if st.engine.ready() {
        (StatusCode::OK, "ok")
    } else if !upstreams.is_empty() && upstreams.iter().all(|u| u.error.is_some()) {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    };
    let body = if upstreams.is_empty() {
        json!({"status": word})
    } else {
        json!({"status": word, "upstreams": upstreams})
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let render = st
        .metrics
        .as_ref()
        .ok_or_else(|| ApiError::not_found("metrics are not enabled"))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
        .into_response())
}

fn check_revision(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(rev) = headers.get("api-revision").and_then(|v| v.to_str().ok()) {
        if rev.trim() < API_REVISION {
            return Err(ApiError::bad_request(
                "The legacy Interactions API schema is no longer supported. Use Api-Revision 2026-05-20 or later.",
            ));
        }
    }
    Ok(())
}

pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    to_bytes(body, limit).await.map_err(|e| {
        // Whether the error, or one it was caused by, is a `T`.
        fn caused_by<T: std::error::Error + 'static>(e: &axum::Error) -> bool {
            std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
                .any(|e| e.is::<T>())
        }
        if caused_by::<http_body_util::LengthLimitError>(&e) {
            ApiError::too_large(limit)
        } else if caused_by::<tower_http::timeout::TimeoutError>(&e) {
            ApiError::request_timeout("the request body stopped arriving; send it again")
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

/// `POST /{v}/interactions`.
pub async fn create(
    State(st): State<AppState>,
    Path(_version): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    tenant: Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_revision(&headers)?;
    let bytes = read_body(body, &headers, st.config.max_body_bytes).await?;
    let req: CreateInteractionRequest = serde_json::from_slice(&bytes).map_err(|e| {
        let msg = e.to_string();
        if let Some(field) = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            ApiError::bad_request(format!("Unknown parameter '{field}'."))
        } else {
            ApiError::bad_request(format!("Invalid JSON payload: {msg}"))
        }
    })?;
    let mut valid = validate_create(req, st.config.sampling)?;
    // `?alt=sse` is the older way to ask for a stream; honour it.
    if query.get("alt").is_some_and(|a| a == "sse") {
        valid.stream = true;
    }
    let (stream, background) = (valid.stream, valid.background);
    let running = run::start(&st, tenant, valid).await?;
    if stream {
        return Ok(sse::follow(running.live, None, running.guard));
    }
    if background {
        // Answer at once; the client polls or attaches.
        let mut it = events::partial(
            &running.id,
            &running.model,
            Status::InProgress,
            running.created,
        );
        it.updated.clone_from(&it.created);
        it.steps = Some(running.live.log.steps());
        it.service_tier = Some("standard".into());
        return Ok(Json(it).into_response());
    }
    // `running.guard` lives until the answer is ready: a client that goes away cancels.
    match running.live.log.outcome().await {
        Some(Outcome::Done(record)) => {
            Ok(Json(to_wire(&record, StepsView::Output)).into_response())
        }
        // The work is done and cannot be redone by a retry: answer what happened (the
        // stored record ends up `failed` with the same error), not a 5xx the SDKs retry.
        Some(Outcome::StoreFailed(e)) => {
            tracing::warn!(id = %running.id, "answered a finished interaction that was not saved: {e}");
            let mut it =
                events::partial(&running.id, &running.model, Status::Failed, running.created);
            it.steps = Some(running.live.log.steps());
            Ok(Json(it).into_response())
        }
        None => Err(ApiError::internal("generation task ended without a result")),
    }
}

fn parse_bool(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("false" | "False" | "0" | "") => Ok(false),
        Some("true" | "True" | "1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "query parameter `{name}` must be true or false; got {other:?}"
        ))),
    }
}

/// `GET /{v}/interactions/{id}` (JSON, or SSE replay with `stream=true`).
pub async fn get_interaction(
    State(st): State<AppState>,
    Path((_version, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    tenant: Tenant,
) -> Result<Response, ApiError> {
    let stream = parse_bool(&query, "stream")?;
    parse_bool(&query, "include_input")?;
    let after = match query.get("last_event_id").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(Cursor::parse(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`last_event_id` {v:?} is not an event id of this server"
            ))
        })?),
    };
    let mut record = st
        .store
        .get(&tenant.0, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("interaction {id:?} not found")))?;
    let live = st.runs.get(&id);
    if !stream {
        if let (false, Some(live)) = (record.status.is_terminal(), &live) {
            record.output = live.log.steps();
            if let Some(Outcome::StoreFailed(e)) = live.log.ended() {
                // Over, but not saved yet: say how it ended, not that it still runs.
                record.status = Status::Failed;
                record.error = Some(e);
            }
        }
        return Ok(Json(to_wire(&record, StepsView::All)).into_response());
    }
    if let Some(live) = live {
        // Running here: follow its log (attaching never cancels it).
        return Ok(sse::follow(live, after, None));
    }
    if record.status.is_terminal() {
        return Ok(sse::replay_response(&record, after));
    }
    // Running on another replica: follow its logged events through the store.
    Ok(crate::remote::follow(st.clone(), tenant.0, id, after))
}

/// `DELETE /{v}/interactions/{id}`: stops it if running, removes it, answers `{}`.
pub async fn delete_interaction(
    State(st): State<AppState>,
    Path((_version, id)): Path<(String, String)>,
    tenant: Tenant,
) -> Result<Response, ApiError> {
    if st.store.get(&tenant.0, &id).await?.is_none() {
        return Err(ApiError::not_found(format!("interaction {id:?} not found")));
    }
    // Stop it wherever it runs: here at once, on another replica at its next lease renewal
    // (which no longer finds it).
    st.runs.cancel(&id);
    if !st.store.delete(&tenant.0, &id).await? {
        return Err(ApiError::not_found(format!("interaction {id:?} not found")));
    }
    // Its conversation's cached KV state goes too, on every replica. States are not tied to
    // interactions, so every cached state of this key goes: later turns of its other
    // conversations prefill again, which costs time, never correctness.
    st.engine.forget(&tenant.0).await;
    if let Err(e) = st.store.note_forget(&tenant.0).await {
        tracing::warn!("cannot tell other replicas to drop this key's KV state: {e}");
    }
    Ok(Json(json!({})).into_response())
}

/// `POST /{v}/interactions/{id}/cancel`: stops a running interaction; a finished one is
/// returned unchanged.
pub async fn cancel(
    State(st): State<AppState>,
    Path((_version, id)): Path<(String, String)>,
    tenant: Tenant,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("interaction {id:?} not found"));
    let mut record = st.store.get(&tenant.0, &id).await?.ok_or_else(not_found)?;
    if !record.status.is_terminal() {
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        match st.runs.get(&id) {
            // Here: stop it now, and wait for its end through its log.
            Some(live) => {
                live.cancel.notify_one();
                let _ = tokio::time::timeout_at(deadline, live.log.outcome()).await;
                record = st.store.get(&tenant.0, &id).await?.ok_or_else(not_found)?;
            }
            // Elsewhere: its owner stops it at its next lease renewal; the store says when.
            None => {
                st.store.request_cancel(&tenant.0, &id).await?;
            }
        }
        while !record.status.is_terminal() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            record = st.store.get(&tenant.0, &id).await?.ok_or_else(not_found)?;
        }
        if !record.status.is_terminal() {
            return Err(ApiError::unavailable(
                "the interaction did not stop in time",
            ));
        }
    }
    Ok(Json(to_wire(&record, StepsView::All)).into_response())
}

fn wire_model(name: &str, info: &localgem_core::ModelInfo) -> Model {
    Model {
        name: format!("models/{name}"),
        base_model_id: info.id.clone(),
        version: "local".into(),
        display_name: info.display_name.clone(),
        description: format!("{} served locally by localgem", info.display_name),
        input_token_limit: info.context_tokens,
        // An answer can fill what the prompt leaves of the context.
        output_token_limit: info.context_tokens,
        supported_generation_methods: vec![
            "generateContent".into(),
            "streamGenerateContent".into(),
            "countTokens".into(),
            "interactions".into(),
        ],
    }
}

/// `GET /{v}/models`.
pub async fn list_models(State(st): State<AppState>, _caller: Tenant) -> Json<ModelList> {
    Json(ModelList {
        models: st
            .engine
            .models()
            .iter()
            .map(|m| wire_model(&m.id, m))
            .collect(),
    })
}

/// `GET /{v}/models/{id}` (aliases resolve).
pub async fn get_model(
    State(st): State<AppState>,
    Path((_version, id)): Path<(String, String)>,
    _caller: Tenant,
) -> Result<Json<Model>, ApiError> {
    let served = st.engine.models();
    let target = st.config.aliases.resolve(&id, &served)?;
    let info = served
        .iter()
        .find(|m| m.id == target)
        .ok_or_else(|| ApiError::not_found(format!("model {id:?} not found")))?;
    Ok(Json(wire_model(&id, info)))
}

/// Unknown paths.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

/// Known paths, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
