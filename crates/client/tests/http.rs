//! HTTP behaviour against small in-process servers: paths and headers, retries, streams, the
//! resumable upload protocol, list pagination and error envelopes. No network beyond loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use futures::{StreamExt, TryStreamExt};
use localgem_client::{
    Client, ClientBuilder, Error, InteractionRequest, RetryPolicy, Status, UploadConfig,
};
use serde_json::{json, Value};

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn client(base: &str) -> Client {
    ClientBuilder::new()
        .api_key("test-key")
        .base_url(base)
        .retry_policy(
            RetryPolicy::default()
                .initial_backoff(Duration::from_millis(5))
                .max_backoff(Duration::from_millis(20)),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn answer(text: &str) -> Value {
    json!({"id": "v1_abc", "object": "interaction", "model": "gemini-3-flash-preview",
           "status": "completed",
           "steps": [{"type": "model_output", "content": [{"type": "text", "text": text}]}]})
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

async fn record(log: &Mutex<Vec<Seen>>, req: Request) -> Seen {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let seen = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    };
    log.lock().unwrap().push(seen.clone());
    seen
}

#[tokio::test]
async fn interactions_paths_headers_and_bodies() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let router = Router::new().fallback(any(move |req: Request| {
        let l = l.clone();
        async move {
            let seen = record(&l, req).await;
            if seen.method == "DELETE" {
                return json_response(StatusCode::OK, json!({}));
            }
            json_response(StatusCode::OK, answer("Hello"))
        }
    }));
    let base = serve(router).await;
    let c = ClientBuilder::new()
        .api_key("test-key")
        .base_url(format!("{base}/"))
        .api_version("v1beta")
        .build()
        .unwrap();
    let it = c
        .interactions()
        .create(InteractionRequest::new(
            "gemini-3-flash-preview",
            "How does AI work?",
        ))
        .await
        .unwrap();
    assert_eq!(it.output_text(), "Hello");
    assert_eq!(it.status, Status::Completed);
    c.interactions().get("v1_abc").await.unwrap();
    c.interactions().cancel("v1_abc").await.unwrap();
    c.interactions().delete("v1_abc").await.unwrap();

    let log = log.lock().unwrap();
    let lines: Vec<_> = log
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert_eq!(
        lines,
        [
            "POST /v1beta/interactions",
            "GET /v1beta/interactions/v1_abc?stream=false",
            "POST /v1beta/interactions/v1_abc/cancel",
            "DELETE /v1beta/interactions/v1_abc",
        ]
    );
    let create = &log[0];
    assert_eq!(create.headers["x-goog-api-key"], "test-key");
    assert_eq!(create.headers["api-revision"], "2026-05-20");
    assert_eq!(create.headers["content-type"], "application/json");
    assert_eq!(create.headers["accept"], "application/json");
    assert!(create.headers["x-goog-api-client"]
        .to_str()
        .unwrap()
        .starts_with("localgem-client/"));
    let body: Value = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(
        body,
        json!({"model": "gemini-3-flash-preview", "input": "How does AI work?"})
    );
    assert!(log[2].body.is_empty(), "cancel sends no body");
}

#[tokio::test]
async fn default_version_is_v1_and_delete_accepts_an_empty_body() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let router = Router::new().fallback(any(move |req: Request| {
        let l = l.clone();
        async move {
            record(&l, req).await;
            StatusCode::OK
        }
    }));
    let base = serve(router).await;
    let c = client(&base);
    c.interactions().delete("v1_x").await.unwrap();
    assert_eq!(log.lock().unwrap()[0].uri, "/v1/interactions/v1_x");
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let router = Router::new().route(
        "/v1/interactions",
        post(move || {
            let n = n.clone();
            async move {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": {"message": "loading", "code": "unavailable"}}),
                    )
                } else {
                    json_response(StatusCode::OK, answer("after retries"))
                }
            }
        }),
    );
    let c = client(&serve(router).await);
    let it = c
        .interactions()
        .create(InteractionRequest::new("m", "hi"))
        .await
        .unwrap();
    assert_eq!(it.output_text(), "after retries");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_429_with_retry_after_and_gives_up_after_max_attempts() {
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let router = Router::new().route(
        "/v1/interactions",
        post(move || {
            let n = n.clone();
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "0"), ("content-type", "application/json")],
                    r#"{"error":{"message":"queue full","code":"resource_exhausted"}}"#,
                )
            }
        }),
    );
    let c = ClientBuilder::new()
        .api_key("k")
        .base_url(serve(router).await)
        .retry_policy(RetryPolicy::default().max_attempts(3))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = c
        .interactions()
        .create(InteractionRequest::new("m", "hi"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "Retry-After: 0 replaces the 0.5 s backoff"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    match err {
        Error::Api {
            status,
            code,
            message,
            retry_after,
            ..
        } => {
            assert_eq!(status, 429);
            assert_eq!(code.as_deref(), Some("resource_exhausted"));
            assert_eq!(message, "queue full");
            assert_eq!(retry_after, Some(Duration::ZERO));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn client_errors_are_not_retried_and_carry_the_envelope() {
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let router = Router::new().route(
        "/v1/interactions",
        post(move || {
            let n = n.clone();
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"message": "Unknown parameter 'tool_choice'.", "code": "invalid_request"}}),
                )
            }
        }),
    );
    let c = client(&serve(router).await);
    let err = c
        .interactions()
        .create(InteractionRequest::new("m", "hi"))
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.to_string(), "400 Unknown parameter 'tool_choice'.");
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client(&format!("http://127.0.0.1:{port}"));
    let err = c.interactions().get("x").await.unwrap_err();
    assert!(
        matches!(err, Error::Http(ref e) if e.is_connect()),
        "{err:?}"
    );
}

const EVENT_1: &str = "event: interaction.created\r\ndata: {\"interaction\":{\"id\":\"v1_s\",\"status\":\"in_progress\"},\"event_type\":\"interaction.created\"}\r\n\r\n";
const EVENT_2: &str = ": keep-alive\r\n\r\nevent: step.delta\r\ndata: {\"index\":0,\"delta\":{\"type\":\"text\",\"text\":\"Hi\"},\"event_type\":\"step.delta\"}\r\n\r\n";

fn sse(chunks: Vec<Result<&'static str, std::io::Error>>) -> Response {
    // A pause before each chunk, so that what precedes a failure is flushed to the client.
    let body = Body::from_stream(futures::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        c
    }));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn stream_retried_before_first_byte_but_never_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen_accept = Arc::new(Mutex::new(Vec::new()));
    let (n, acc) = (calls.clone(), seen_accept.clone());
    let router = Router::new().route(
        "/v1/interactions",
        post(move |headers: HeaderMap, body: Bytes| {
            let (n, acc) = (n.clone(), acc.clone());
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["stream"], true);
                acc.lock()
                    .unwrap()
                    .push(headers["accept"].to_str().unwrap().to_owned());
                match n.fetch_add(1, Ordering::SeqCst) {
                    0 => json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": {"message": "busy", "code": "unavailable"}}),
                    ),
                    // 200, then the connection breaks before any byte of the body.
                    1 => sse(vec![Err(std::io::Error::other("boom"))]),
                    // One event, then the connection breaks mid-stream.
                    _ => sse(vec![Ok(EVENT_1), Err(std::io::Error::other("boom"))]),
                }
            }
        }),
    );
    let c = client(&serve(router).await);
    let mut stream = c
        .interactions()
        .create_stream(InteractionRequest::new("m", "hi"))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.event_type(), Some("interaction.created"));
    let second = stream.next().await.unwrap();
    assert!(second.is_err(), "a broken stream is an error: {second:?}");
    assert!(stream.next().await.is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "503 and the byte-less 200 were retried; the started stream was not"
    );
    assert!(seen_accept
        .lock()
        .unwrap()
        .iter()
        .all(|a| a == "text/event-stream"));
}

#[tokio::test]
async fn stream_events_split_across_chunks() {
    let router = Router::new().route(
        "/v1/interactions",
        post(|| async {
            let all = format!("{EVENT_1}{EVENT_2}event: done\r\ndata: [DONE]\r\n\r\n");
            let leaked: &'static str = Box::leak(all.into_boxed_str());
            let chunks: Vec<Result<&'static str, std::io::Error>> = leaked
                .as_bytes()
                .chunks(5)
                .map(|c| Ok(std::str::from_utf8(c).unwrap()))
                .collect();
            sse(chunks)
        }),
    );
    let c = client(&serve(router).await);
    let events: Vec<_> = c
        .interactions()
        .create_stream(InteractionRequest::new("m", "hi"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].text_delta(), Some("Hi"));
}

#[tokio::test]
async fn streaming_error_status_is_an_api_error() {
    let router = Router::new().route(
        "/v1/interactions",
        post(|| async {
            json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"message": "previous interaction not found", "code": "not_found"}}),
            )
        }),
    );
    let c = client(&serve(router).await);
    let err = c
        .interactions()
        .create_stream(InteractionRequest::new("m", "hi").previous_interaction_id("nope"))
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.api_message(), Some("previous interaction not found"));
}

fn file_json(base: &str, id: &str, size: usize) -> Value {
    json!({"name": format!("files/{id}"), "displayName": "organ", "mimeType": "image/jpeg",
           "sizeBytes": size.to_string(), "createTime": "2026-05-20T10:00:00Z",
           "updateTime": "2026-05-20T10:00:00Z", "expirationTime": "2026-05-22T10:00:00Z",
           "sha256Hash": "x", "uri": format!("{base}/v1/files/{id}"), "state": "ACTIVE",
           "source": "UPLOADED"})
}

#[tokio::test]
async fn resumable_upload_in_chunks_with_progress() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let base_cell = Arc::new(Mutex::new(String::new()));
    let (l, b) = (log.clone(), base_cell.clone());
    let router = Router::new().route(
        "/upload/v1/files",
        post(move |req: Request| {
            let (l, b) = (l.clone(), b.clone());
            async move {
                let base = b.lock().unwrap().clone();
                let seen = record(&l, req).await;
                let command = seen.headers["x-goog-upload-command"].to_str().unwrap();
                match command {
                    "start" => Response::builder()
                        .header(
                            "x-goog-upload-url",
                            format!(
                                "{base}/upload/v1/files?upload_id=u1&upload_protocol=resumable"
                            ),
                        )
                        .header("x-goog-upload-status", "active")
                        .body(Body::empty())
                        .unwrap(),
                    "upload" => Response::builder()
                        .header("x-goog-upload-status", "active")
                        .body(Body::empty())
                        .unwrap(),
                    "upload, finalize" => {
                        let total: usize = l
                            .lock()
                            .unwrap()
                            .iter()
                            .filter(|s| s.uri.contains("upload_id"))
                            .map(|s| s.body.len())
                            .sum();
                        Response::builder()
                            .header("x-goog-upload-status", "final")
                            .header("content-type", "application/json")
                            .body(Body::from(
                                json!({"file": file_json(&base, "abc", total)}).to_string(),
                            ))
                            .unwrap()
                    }
                    other => panic!("unexpected command {other}"),
                }
            }
        }),
    );
    let base = serve(router).await;
    *base_cell.lock().unwrap() = base.clone();
    let c = client(&base);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("organ.jpg");
    std::fs::write(&path, b"0123456789").unwrap();
    let progress = Arc::new(Mutex::new(Vec::new()));
    let p = progress.clone();
    let file = c
        .files()
        .upload_with(
            &path,
            UploadConfig::new()
                .display_name("organ")
                .chunk_size(4)
                .on_progress(move |sent, total| p.lock().unwrap().push((sent, total))),
        )
        .await
        .unwrap();
    assert_eq!(file.name, "files/abc");
    assert_eq!(file.size_bytes, "10");
    assert_eq!(*progress.lock().unwrap(), [(4, 10), (8, 10), (10, 10)]);

    let log = log.lock().unwrap();
    let start = &log[0];
    assert_eq!(start.uri, "/upload/v1/files");
    assert_eq!(start.headers["x-goog-upload-protocol"], "resumable");
    assert_eq!(start.headers["x-goog-upload-header-content-length"], "10");
    assert_eq!(
        start.headers["x-goog-upload-header-content-type"],
        "image/jpeg"
    );
    assert_eq!(start.headers["x-goog-upload-file-name"], "organ.jpg");
    assert_eq!(start.headers["x-goog-api-key"], "test-key");
    let body: Value = serde_json::from_slice(&start.body).unwrap();
    assert_eq!(
        body,
        json!({"file": {"display_name": "organ", "mime_type": "image/jpeg", "size_bytes": 10}})
    );
    let chunks: Vec<_> = log[1..]
        .iter()
        .map(|s| {
            (
                s.headers["x-goog-upload-command"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
                s.headers["x-goog-upload-offset"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
                String::from_utf8(s.body.to_vec()).unwrap(),
            )
        })
        .collect();
    let expect = |c: &str, o: &str, b: &str| (c.to_owned(), o.to_owned(), b.to_owned());
    assert_eq!(
        chunks,
        [
            expect("upload", "0", "0123"),
            expect("upload", "4", "4567"),
            expect("upload, finalize", "8", "89"),
        ]
    );
    assert!(log[1].uri.contains("upload_id=u1"));
}

#[tokio::test]
async fn upload_bytes_small_is_one_finalize_and_a_non_final_answer_fails() {
    let router = Router::new().route(
        "/upload/v1beta/files",
        post(
            |headers: HeaderMap, Query(q): Query<Vec<(String, String)>>| async move {
                let command = headers["x-goog-upload-command"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let host = headers["host"].to_str().unwrap().to_owned();
                if command == "start" {
                    return Response::builder()
                        .header(
                            "x-goog-upload-url",
                            format!("http://{host}/upload/v1beta/files?upload_id=z"),
                        )
                        .body(Body::empty())
                        .unwrap();
                }
                assert_eq!(q, [("upload_id".to_owned(), "z".to_owned())]);
                assert_eq!(command, "upload, finalize");
                // Wrong: says "active" for the last chunk.
                Response::builder()
                    .header("x-goog-upload-status", "active")
                    .body(Body::empty())
                    .unwrap()
            },
        ),
    );
    let c = ClientBuilder::new()
        .api_key("k")
        .base_url(serve(router).await)
        .api_version("v1beta")
        .build()
        .unwrap();
    let err = c
        .files()
        .upload_bytes(&b"tiny"[..], UploadConfig::new().display_name("t.txt"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Upload(_)), "{err:?}");
}

#[tokio::test]
async fn unknown_mime_type_is_a_config_error() {
    let c = client("http://127.0.0.1:9");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.weird");
    std::fs::write(&path, b"x").unwrap();
    let err = c.files().upload(&path).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[tokio::test]
async fn list_follows_page_tokens_and_get_delete_normalise_names() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let router = Router::new()
        .route(
            "/v1/files",
            get(move |Query(q): Query<Vec<(String, String)>>| {
                let l = l.clone();
                async move {
                    l.lock().unwrap().push(q.clone());
                    let token = q.iter().find(|(k, _)| k == "pageToken").map(|(_, v)| v.clone());
                    let base = "http://h";
                    match token.as_deref() {
                        None => json_response(
                            StatusCode::OK,
                            json!({"files": [file_json(base, "a", 1), file_json(base, "b", 1)],
                                   "nextPageToken": "p2"}),
                        ),
                        Some("p2") => json_response(
                            StatusCode::OK,
                            json!({"files": [file_json(base, "c", 1)]}),
                        ),
                        Some(other) => panic!("token {other}"),
                    }
                }
            }),
        )
        .route(
            "/v1/files/{id}",
            any(|req: Request| async move {
                let id = req.uri().path().rsplit('/').next().unwrap().to_owned();
                if id != "abc" {
                    return json_response(
                        StatusCode::NOT_FOUND,
                        json!({"error": {"code": 404, "message": format!("File files/{id} not found."), "status": "NOT_FOUND"}}),
                    );
                }
                if req.method() == "DELETE" {
                    return json_response(StatusCode::OK, json!({}));
                }
                json_response(StatusCode::OK, file_json("http://h", "abc", 3))
            }),
        );
    let c = client(&serve(router).await);
    let names: Vec<String> = c
        .files()
        .list_with_page_size(Some(2))
        .map_ok(|f| f.name)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(names, ["files/a", "files/b", "files/c"]);
    let queries = log.lock().unwrap().clone();
    assert_eq!(queries.len(), 2);
    assert!(queries[1].contains(&("pageToken".to_owned(), "p2".to_owned())));
    assert!(queries[0].contains(&("pageSize".to_owned(), "2".to_owned())));

    for name in ["abc", "files/abc", "http://h/v1/files/abc"] {
        assert_eq!(c.files().get(name).await.unwrap().name, "files/abc");
    }
    c.files().delete("files/abc").await.unwrap();
    let err = c.files().get("files/zzz").await.unwrap_err();
    match err {
        Error::Api {
            status,
            code,
            status_name,
            message,
            ..
        } => {
            assert_eq!(status, 404);
            assert_eq!(code.as_deref(), Some("404"));
            assert_eq!(status_name.as_deref(), Some("NOT_FOUND"));
            assert_eq!(message, "File files/zzz not found.");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn environment_like_the_sdks() {
    // The only test that touches the environment.
    for k in [
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_API_VERSION",
    ] {
        std::env::remove_var(k);
    }
    assert!(matches!(Client::new(), Err(Error::Config(_))));
    std::env::set_var("GEMINI_API_KEY", "gemini");
    std::env::set_var("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:8080/");
    let c = Client::new().unwrap();
    assert_eq!(c.base_url(), "http://127.0.0.1:8080");
    assert_eq!(c.api_version(), "v1");
    std::env::set_var("GOOGLE_GENAI_API_VERSION", "beta");
    assert_eq!(Client::new().unwrap().api_version(), "v1beta");
    std::env::set_var("GOOGLE_API_KEY", "google");
    // Builder setters win over the environment; GOOGLE_API_KEY wins over GEMINI_API_KEY.
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let router = Router::new().fallback(any(move |req: Request| {
        let l = l.clone();
        async move {
            record(&l, req).await;
            StatusCode::OK
        }
    }));
    let c = Client::builder()
        .base_url(serve(router).await)
        .api_version("v1alpha")
        .build()
        .unwrap();
    c.interactions().delete("x").await.unwrap();
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.uri, "/v1alpha/interactions/x");
    assert_eq!(seen.headers["x-goog-api-key"], "google");
    for k in [
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_API_VERSION",
    ] {
        std::env::remove_var(k);
    }
}
