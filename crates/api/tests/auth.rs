//! API keys and tenancy: with keys configured, no key is 401 and an unknown key 403 before
//! anything runs; and whatever one key made, another key cannot see, use, chain, cancel,
//! delete or attach to.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use localgem_api::files::FilesConfig;
use localgem_api::tenant::KeySet;
use localgem_api::testing::FakeEngine;
use localgem_api::{router, ApiConfig, AppState, ModelAliases};
use localgem_store::MemoryStore;
use serde_json::{json, Value};
use tower::ServiceExt;

struct App {
    state: AppState,
    fake: Arc<FakeEngine>,
    _tmp: tempfile::TempDir,
}

fn app(keys: Option<KeySet>, delay_ms: u64) -> App {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("files");
    localgem_api::files::prepare_dir(&dir).unwrap();
    let fake = Arc::new(FakeEngine::with_delay(Duration::from_millis(delay_ms)));
    let state = AppState::new(
        fake.clone(),
        Arc::new(MemoryStore::new()),
        ApiConfig {
            aliases: ModelAliases::parse(&["gemini-*=default".into()], FakeEngine::MODEL).unwrap(),
            keys,
            ..ApiConfig::default()
        },
    )
    .with_files(FilesConfig {
        dir,
        max_file_bytes: 1 << 20,
    });
    App {
        state,
        fake,
        _tmp: tmp,
    }
}

impl App {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value, String) {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "auth.test")
            .header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
        let resp = router(self.state.clone())
            .oneshot(b.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let upload_url = resp
            .headers()
            .get("x-goog-upload-url")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v, upload_url)
    }

    async fn as_key(
        &self,
        key: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, v, _) = self
            .send(method, uri, &[("x-goog-api-key", key)], body)
            .await;
        (s, v)
    }

    async fn upload(&self, key: &str, data: &[u8]) -> Value {
        let len = data.len().to_string();
        let (s, v, url) = self
            .send(
                "POST",
                "/upload/v1beta/files",
                &[
                    ("x-goog-api-key", key),
                    ("x-goog-upload-protocol", "resumable"),
                    ("x-goog-upload-command", "start"),
                    ("x-goog-upload-header-content-length", &len),
                    ("x-goog-upload-header-content-type", "text/plain"),
                ],
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let path = url.strip_prefix("http://auth.test").unwrap().to_owned();
        // The chunk carries no key at all, as the Python SDK sends it.
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header("x-goog-upload-command", "upload, finalize")
            .header("x-goog-upload-offset", "0")
            .body(Body::from(data.to_vec()))
            .unwrap();
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap()["file"].clone()
    }
}

#[tokio::test]
async fn with_keys_no_key_is_401_and_an_unknown_key_403_before_anything_runs() {
    let a = app(Some(KeySet::new(["alpha", "beta"])), 0);
    let body = json!({"model": "fake-model", "input": "hi"});
    let (s, v, _) = a
        .send("POST", "/v1beta/interactions", &[], Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "unauthenticated");
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
    for headers in [
        vec![("x-goog-api-key", "gamma")],
        vec![("authorization", "Bearer gamma")],
        vec![("x-goog-api-key", "alph")],
    ] {
        let (s, v, _) = a
            .send("POST", "/v1beta/interactions", &headers, Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{headers:?}: {v}");
        assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
    }
    let (s, _, _) = a
        .send(
            "POST",
            "/v1beta/interactions?key=gamma",
            &[],
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        a.fake.requests.lock().unwrap().is_empty(),
        "the engine saw a refused request"
    );
    // Every other endpoint too, the Files API included (Google's envelope there).
    for (method, uri) in [
        ("GET", "/v1beta/interactions/v1_x"),
        ("DELETE", "/v1beta/interactions/v1_x"),
        ("POST", "/v1beta/interactions/v1_x/cancel"),
        ("GET", "/v1beta/models"),
        ("GET", "/v1beta/models/fake-model"),
        ("GET", "/v1beta/files"),
        ("GET", "/v1beta/files/abc"),
        ("DELETE", "/v1beta/files/abc"),
        ("POST", "/upload/v1beta/files"),
    ] {
        let (s, v, _) = a.send(method, uri, &[], None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}: {v}");
    }
    let (s, v, _) = a.send("GET", "/v1beta/files", &[], None).await;
    assert_eq!(v["error"]["code"], 401, "{s} {v}");
    // Accepted keys, from each place a key can be.
    for (uri, headers) in [
        ("/v1beta/interactions", vec![("x-goog-api-key", "alpha")]),
        (
            "/v1beta/interactions",
            vec![("authorization", "Bearer beta")],
        ),
        ("/v1beta/interactions?key=alpha", vec![]),
    ] {
        let (s, v, _) = a.send("POST", uri, &headers, Some(body.clone())).await;
        assert_eq!(s, StatusCode::OK, "{uri} {headers:?}: {v}");
    }
    let (s, _, _) = a.send("GET", "/healthz", &[], None).await;
    assert_eq!(s, StatusCode::OK, "health needs no key");
    // An upload's chunks are authorised by the upload URL, not a key.
    let f = a.upload("alpha", b"hello").await;
    assert_eq!(f["sizeBytes"], "5");
}

#[tokio::test]
async fn a_percent_encoded_query_key_is_the_same_key_as_in_the_header() {
    let key = "a/b+c==";
    let a = app(Some(KeySet::new([key])), 0);
    let body = json!({"model": "fake-model", "input": "hi", "store": true});
    let (s, made, _) = a
        .send(
            "POST",
            "/v1beta/interactions?key=a%2Fb%2Bc%3D%3D",
            &[],
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{made}");
    // Same tenant whichever way the key came: the header reads what the query made.
    let id = made["id"].as_str().unwrap();
    let (s, v) = a
        .as_key(key, "GET", &format!("/v1beta/interactions/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Undecoded, it is another key.
    let (s, _, _) = a
        .send(
            "GET",
            &format!("/v1beta/interactions/{id}?key=a%2Fb"),
            &[],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn another_key_gets_404_for_everything_of_the_first() {
    let a = app(None, 25);
    // A's finished interaction, running background interaction and file.
    let (_, done) = a
        .as_key(
            "A",
            "POST",
            "/v1beta/interactions",
            Some(json!({"model": "fake-model", "input": "secret plans"})),
        )
        .await;
    let done_id = done["id"].as_str().unwrap().to_owned();
    let (_, running) = a
        .as_key(
            "A",
            "POST",
            "/v1beta/interactions",
            Some(json!({"model": "fake-model", "background": true,
            "input": "one two three four five six seven eight nine ten eleven twelve"})),
        )
        .await;
    let run_id = running["id"].as_str().unwrap().to_owned();
    let file = a.upload("A", b"A's private notes").await;
    let file_id = file["name"]
        .as_str()
        .unwrap()
        .strip_prefix("files/")
        .unwrap()
        .to_owned();

    for id in [&done_id, &run_id] {
        for (method, uri, body) in [
            ("GET", format!("/v1beta/interactions/{id}"), None),
            (
                "GET",
                format!("/v1beta/interactions/{id}?stream=true"),
                None,
            ),
            (
                "GET",
                format!("/v1beta/interactions/{id}?stream=true&last_event_id=1.0.0.0"),
                None,
            ),
            ("POST", format!("/v1beta/interactions/{id}/cancel"), None),
            ("DELETE", format!("/v1beta/interactions/{id}"), None),
            (
                "POST",
                "/v1beta/interactions".to_owned(),
                Some(
                    json!({"model": "fake-model", "previous_interaction_id": id, "input": "go on"}),
                ),
            ),
        ] {
            let (s, v) = a.as_key("B", method, &uri, body).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "B {method} {uri}: {v}");
        }
    }
    for (method, uri, body) in [
        ("GET", format!("/v1beta/files/{file_id}"), None),
        ("DELETE", format!("/v1beta/files/{file_id}"), None),
        (
            "POST",
            "/v1beta/interactions".to_owned(),
            Some(json!({"model": "fake-model", "input": [
            {"type": "document", "uri": file["uri"], "mime_type": "text/plain"}]})),
        ),
    ] {
        let (s, v) = a.as_key("B", method, &uri, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "B {method} {uri}: {v}");
    }
    let (s, v) = a.as_key("B", "GET", "/v1beta/files", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({})), "B lists nothing");
    // No key at all is a tenant of its own too.
    let (s, _, _) = a
        .send("GET", &format!("/v1beta/interactions/{done_id}"), &[], None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // B's deletes dropped none of A's cached state.
    assert!(a.fake.forgotten.lock().unwrap().is_empty());
    // A still has everything, untouched by B's attempts.
    let (s, v) = a
        .as_key("A", "GET", &format!("/v1beta/interactions/{done_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "completed");
    let (s, v) = a
        .as_key("A", "GET", &format!("/v1beta/files/{file_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for _ in 0..200 {
        let (_, v) = a
            .as_key("A", "GET", &format!("/v1beta/interactions/{run_id}"), None)
            .await;
        if v["status"] != "in_progress" {
            assert_eq!(
                v["status"], "completed",
                "B's cancel must not have reached it: {v}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("A's background run never finished");
}

#[tokio::test]
async fn deleting_an_interaction_drops_its_keys_cached_state() {
    let a = app(None, 0);
    let (_, v) = a
        .as_key(
            "A",
            "POST",
            "/v1beta/interactions",
            Some(json!({"model": "fake-model", "input": "x"})),
        )
        .await;
    let (s, _) = a
        .as_key(
            "A",
            "DELETE",
            &format!("/v1beta/interactions/{}", v["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        *a.fake.forgotten.lock().unwrap(),
        [localgem_api::tenant::Tenant::from_key("A").0]
    );
}

#[tokio::test]
async fn one_key_cannot_run_more_than_its_share() {
    let mut a = app(None, 30);
    a.state = AppState::new(
        a.fake.clone(),
        Arc::new(MemoryStore::new()),
        ApiConfig {
            aliases: ModelAliases::parse(&["gemini-*=default".into()], FakeEngine::MODEL).unwrap(),
            max_running_per_key: 2,
            ..ApiConfig::default()
        },
    );
    let run = json!({"model": "fake-model", "background": true, "input": "a b c d e f g h"});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, v) = a
            .as_key("A", "POST", "/v1beta/interactions", Some(run.clone()))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let req = Request::builder()
        .method("POST")
        .uri("/v1beta/interactions")
        .header("x-goog-api-key", "A")
        .header("content-type", "application/json")
        .body(Body::from(run.to_string()))
        .unwrap();
    let resp = router(a.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    // Another key is not held back by A.
    let (s, _) = a
        .as_key("B", "POST", "/v1beta/interactions", Some(run.clone()))
        .await;
    assert_eq!(s, StatusCode::OK);
    // Once A's runs end, A may start again.
    for id in &ids {
        for _ in 0..200 {
            let (_, v) = a
                .as_key("A", "GET", &format!("/v1beta/interactions/{id}"), None)
                .await;
            if v["status"] != "in_progress" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (s, v) = a
        .as_key("A", "POST", "/v1beta/interactions", Some(run))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
