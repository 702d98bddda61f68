//! The classic Gemini API that frameworks call: `POST /{v}/models/{model}:generateContent`,
//! `:streamGenerateContent` (SSE with `?alt=sse`, else a streamed JSON array) and
//! `:countTokens`, on the same engine, tenancy and limits as the Interactions API.
//!
//! A request becomes a [`crate::validate::ValidCreate`] that is never stored
//! ([`request`]), runs through [`crate::run::start`] like an interaction, and its output
//! becomes `GenerateContentResponse`s ([`response`]). Errors use Google's classic envelope,
//! `{"error": {"code": 400, "message": …, "status": "INVALID_ARGUMENT"}}`.

pub mod request;
pub mod response;
pub mod schema;

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use futures::StreamExt as _;
use localgem_wire::classic::{
    CountTokensRequest, CountTokensResponse, GenerateContentRequest, ModalityTokenCount,
};
use localgem_wire::{GoogleError, GoogleErrorBody};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::live::{Outcome, Running};
use crate::tenant::Tenant;
use crate::AppState;
use response::{Answer, Chunk, Chunker};

/// An error in Google's classic envelope (integer `code`, `status` name).
#[derive(Debug)]
pub struct ClassicError(pub ApiError);

impl<E: Into<ApiError>> From<E> for ClassicError {
    fn from(e: E) -> Self {
        ClassicError(e.into())
    }
}

/// The classic envelope of an error.
pub fn envelope(e: &ApiError) -> GoogleError {
    GoogleError {
        error: GoogleErrorBody {
            code: e.status.as_u16(),
            message: e.message.clone(),
            status: e.google_status().to_owned(),
        },
    }
}

impl IntoResponse for ClassicError {
    fn into_response(self) -> Response {
        let e = self.0;
        let mut resp = (e.status, Json(envelope(&e))).into_response();
        if let Some(s) = e.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// How long a stream waits for the client to take the next chunk.
const SEND_TIMEOUT: Duration = crate::sse::SEND_TIMEOUT;

/// `POST /{v}/models/{model}:{method}`.
pub async fn dispatch(
    State(st): State<AppState>,
    Path((_version, target)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    tenant: Result<Tenant, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ClassicError> {
    let tenant = tenant?;
    let Some((model, method)) = target.rsplit_once(':') else {
        return Err(ApiError::not_found(format!(
            "no such endpoint: POST models/{target}; use models/MODEL:generateContent, \
             :streamGenerateContent or :countTokens"
        ))
        .into());
    };
    if model.is_empty() {
        return Err(ApiError::bad_request("the model name is empty").into());
    }
    let sse = match query.get("alt").map(String::as_str) {
        None | Some("json") => false,
        Some("sse") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`alt` must be \"sse\" or \"json\"; got {other:?}"
            ))
            .into())
        }
    };
    let bytes = crate::handlers::read_body(body, &headers, st.config.max_body_bytes).await?;
    match method {
        "generateContent" => generate(st, tenant, model, &bytes).await,
        "streamGenerateContent" => stream(st, tenant, model, &bytes, sse).await,
        "countTokens" => count(st, tenant, model, &bytes).await,
        "embedContent" | "batchEmbedContents" | "generateAnswer" | "predict" => {
            Err(ApiError::bad_request(format!(
                "`{method}` is not served: this server's models generate text"
            ))
            .into())
        }
        other => Err(ApiError::not_found(format!(
            "no such method `{other}`; use generateContent, streamGenerateContent or countTokens"
        ))
        .into()),
    }
}

/// `bytes` without the commas that end a list or an object (`[1, 2,]`), outside strings.
fn without_trailing_commas(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b',' {
            let next = bytes[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
            if matches!(next, Some(b'}' | b']')) {
                continue;
            }
        }
        out.push(b);
    }
    out
}

/// Parse a JSON body, naming an unknown field as the API does. Trailing commas are
/// accepted, as the API accepts them (its own REST examples have them).
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let parsed = match serde_json::from_slice(bytes) {
        Err(e) if e.to_string().starts_with("trailing comma") => {
            serde_json::from_slice(&without_trailing_commas(bytes))
        }
        other => other,
    };
    parsed.map_err(|e| {
        let msg = e.to_string();
        match msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            Some(field) => ApiError::bad_request(format!(
                "Invalid JSON payload received. Unknown name \"{field}\": Cannot find field."
            )),
            None => ApiError::bad_request(format!("Invalid JSON payload received. {msg}")),
        }
    })
}

fn answer_for(valid: &crate::validate::ValidCreate) -> Answer {
    Answer {
        model: valid.model.clone(),
        response_id: base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(rand::random::<[u8; 12]>()),
        include_thoughts: valid.thinking_summaries,
    }
}

async fn generate(
    st: AppState,
    tenant: Tenant,
    model: &str,
    bytes: &Bytes,
) -> Result<Response, ClassicError> {
    let req: GenerateContentRequest = parse(bytes)?;
    let valid = request::convert(req, model, false, st.config.sampling)?;
    let answer = answer_for(&valid);
    // `running.guard` lives until the answer is ready: a client that goes away cancels.
    let running = crate::run::start(&st, tenant, valid).await?;
    match running.live.log.outcome().await {
        Some(Outcome::Done(record)) => {
            Ok(Json(response::from_record(&answer, &record)?).into_response())
        }
        Some(Outcome::StoreFailed(e)) => Err(ApiError::internal(e).into()),
        None => Err(ApiError::internal("generation task ended without a result").into()),
    }
}

/// How a stream is framed.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// `data: {chunk}` events.
    Sse,
    /// One JSON array whose elements arrive as they are made.
    Array,
}

impl Framing {
    fn item(self, json: &[u8], first: bool) -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 8);
        match self {
            Framing::Sse => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\r\n\r\n");
            }
            Framing::Array => {
                out.extend_from_slice(if first { b"[" } else { b",\r\n" });
                out.extend_from_slice(json);
            }
        }
        out.into()
    }

    fn end(self, any: bool) -> Option<Bytes> {
        match self {
            Framing::Sse => None,
            Framing::Array if any => Some(Bytes::from_static(b"]")),
            Framing::Array => Some(Bytes::from_static(b"[]")),
        }
    }
}

async fn stream(
    st: AppState,
    tenant: Tenant,
    model: &str,
    bytes: &Bytes,
    sse: bool,
) -> Result<Response, ClassicError> {
    let req: GenerateContentRequest = parse(bytes)?;
    let valid = request::convert(req, model, true, st.config.sampling)?;
    let answer = answer_for(&valid);
    let running = crate::run::start(&st, tenant, valid).await?;
    let framing = if sse { Framing::Sse } else { Framing::Array };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(follow(running, Chunker::new(answer), framing, tx));
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json; charset=utf-8"
    };
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>),
    );
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Send a running interaction's chunks until it ends (or the client goes away, which drops
/// the guard and cancels it).
async fn follow(running: Running, mut chunker: Chunker, framing: Framing, tx: mpsc::Sender<Bytes>) {
    let _guard = running.guard;
    let live = running.live;
    let mut from = 0usize;
    let mut sent = 0usize;
    let send = |b: Bytes| {
        let tx = tx.clone();
        async move {
            matches!(
                tokio::time::timeout(SEND_TIMEOUT, tx.send(b)).await,
                Ok(Ok(()))
            )
        }
    };
    'run: loop {
        let (events, outcome) = live.log.next(from).await;
        from += events.len();
        for e in &events {
            let Some(chunk) = chunker.on(e) else {
                continue;
            };
            let (json, last) = match chunk {
                Chunk::Response(r) => (serde_json::to_vec(&r).unwrap_or_default(), false),
                Chunk::Error(e) => (serde_json::to_vec(&envelope(&e)).unwrap_or_default(), true),
            };
            if !send(framing.item(&json, sent == 0)).await {
                return;
            }
            sent += 1;
            if last {
                break 'run;
            }
        }
        if outcome.is_some() || events.is_empty() {
            break;
        }
    }
    if let Some(end) = framing.end(sent > 0) {
        let _ = send(end).await;
    }
}

async fn count(
    st: AppState,
    tenant: Tenant,
    model: &str,
    bytes: &Bytes,
) -> Result<Response, ClassicError> {
    let req: CountTokensRequest = parse(bytes)?;
    let inner = match (req.contents, req.generate_content_request) {
        (Some(contents), None) => GenerateContentRequest {
            contents,
            ..GenerateContentRequest::default()
        },
        (None, Some(inner)) => inner,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "set `contents` or `generateContentRequest`, not both",
            )
            .into())
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "`contents` (or `generateContentRequest`) is required",
            )
            .into())
        }
    };
    let valid = request::convert(inner, model, false, st.config.sampling)?;
    let prepared = crate::run::prepare(&st, &tenant, &valid).await?;
    let total = st.engine.count_tokens(prepared.request).await?;
    Ok(Json(CountTokensResponse {
        total_tokens: total,
        prompt_tokens_details: vec![ModalityTokenCount {
            modality: "TEXT".into(),
            token_count: total,
        }],
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_commas_go_but_commas_in_strings_stay() {
        let body = br#"{"contents": [{"parts":[{"text": "a, }\", ]"},],},],}"#;
        let v: serde_json::Value = parse(&Bytes::from_static(body)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"contents": [{"parts": [{"text": "a, }\", ]"}]}]})
        );
        assert!(parse::<serde_json::Value>(&Bytes::from_static(b"[1,,]")).is_err());
    }
}
