//! A Files API app over the fake engine and real files in a temp dir, and the requests the
//! SDKs send to it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use localgem_api::files::FilesConfig;
use localgem_api::testing::FakeEngine;
use localgem_api::{router, ApiConfig, AppState};
use localgem_core::Store;
use localgem_store::MemoryStore;
use serde_json::{json, Value};
use tower::ServiceExt;

pub struct App {
    pub state: AppState,
    pub fake: Arc<FakeEngine>,
    pub store: Arc<MemoryStore>,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl App {
    /// What reached the engine.
    pub fn engine_requests(&self) -> Vec<localgem_core::GenerateRequest> {
        self.fake.requests.lock().unwrap().clone()
    }
}

pub fn app(max_file_bytes: u64) -> App {
    app_with(max_file_bytes, false)
}

/// Two replicas over one store and one files directory (as with PostgreSQL and a shared
/// directory), each with its own fake engine, replica name and background loop.
pub fn pair(
    replica: localgem_api::service::ReplicaConfig,
    delay: std::time::Duration,
) -> (App, App) {
    let a = app_with(1 << 20, true);
    let fake_a = Arc::new(FakeEngine {
        vision: true,
        delay,
        ..FakeEngine::default()
    });
    let a = App {
        state: AppState::new(fake_a.clone(), a.store.clone(), ApiConfig::default()).with_files(
            FilesConfig {
                dir: a.dir.clone(),
                max_file_bytes: 1 << 20,
            },
        ),
        fake: fake_a,
        ..a
    };
    let fake = Arc::new(FakeEngine {
        vision: true,
        delay,
        ..FakeEngine::default()
    });
    let twin = |state: AppState, name: &str| {
        state.with_replica(localgem_api::service::ReplicaConfig {
            id: name.into(),
            ..replica.clone()
        })
    };
    let b_state = AppState::new(fake.clone(), a.store.clone(), ApiConfig::default()).with_files(
        FilesConfig {
            dir: a.dir.clone(),
            max_file_bytes: 1 << 20,
        },
    );
    let b = App {
        state: twin(b_state, "B"),
        fake,
        store: a.store.clone(),
        dir: a.dir.clone(),
        _tmp: tempfile::tempdir().unwrap(),
    };
    let a = App {
        state: twin(a.state, "A"),
        ..a
    };
    (a, b)
}

pub fn app_with(max_file_bytes: u64, vision: bool) -> App {
    let fake = FakeEngine {
        vision,
        ..FakeEngine::default()
    };
    app_of(fake, ApiConfig::default(), max_file_bytes)
}

/// An app over this fake engine and configuration, with the Files API.
pub fn app_of(fake: FakeEngine, config: ApiConfig, max_file_bytes: u64) -> App {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("files");
    localgem_api::files::prepare_dir(&dir).unwrap();
    let store = Arc::new(MemoryStore::new());
    let fake = Arc::new(fake);
    let state = AppState::new(fake.clone(), store.clone(), config).with_files(FilesConfig {
        dir: dir.clone(),
        max_file_bytes,
    });
    App {
        state,
        fake,
        store,
        dir,
        _tmp: tmp,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl App {
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "files.test:8080");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = router(self.state.clone())
            .oneshot(b.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Start an upload as the Python SDK does; the upload URL's path and query.
    pub async fn start(&self, key: &str, size: usize, meta: Value) -> String {
        let len = size.to_string();
        let r = self
            .send(
                "POST",
                "/upload/v1beta/files",
                &[
                    ("x-goog-api-key", key),
                    ("content-type", "application/json"),
                    ("x-goog-upload-protocol", "resumable"),
                    ("x-goog-upload-command", "start"),
                    ("x-goog-upload-header-content-length", &len),
                    ("x-goog-upload-header-content-type", "text/plain"),
                ],
                meta.to_string().into_bytes(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.headers["x-goog-upload-status"], "active");
        let url = &r.headers["x-goog-upload-url"];
        let rest = url
            .strip_prefix("http://files.test:8080")
            .unwrap_or_else(|| panic!("upload URL {url} is not absolute on the request's host"));
        rest.to_owned()
    }

    /// Send a chunk (without an API key, as Python does).
    pub async fn chunk(&self, url: &str, offset: usize, data: &[u8], finalize: bool) -> Reply {
        let off = offset.to_string();
        let cmd = if finalize {
            "upload, finalize"
        } else {
            "upload"
        };
        self.send(
            "POST",
            url,
            &[
                ("x-goog-upload-command", cmd),
                ("x-goog-upload-offset", &off),
            ],
            data.to_vec(),
        )
        .await
    }

    pub async fn upload(&self, key: &str, data: &[u8], name: &str) -> Value {
        let url = self
            .start(
                key,
                data.len(),
                json!({"file": {"display_name": name, "mime_type": "text/plain"}}),
            )
            .await;
        let r = self.chunk(&url, 0, data, true).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.headers["x-goog-upload-status"], "final");
        r.body["file"].clone()
    }

    /// A bodiless request with API key `key`.
    pub async fn keyed(&self, method: &str, uri: &str, key: &str) -> Reply {
        self.send(method, uri, &[("x-goog-api-key", key)], vec![])
            .await
    }

    /// `POST /v1beta/interactions` with API key `key`.
    pub async fn interact(&self, key: &str, body: &Value) -> Reply {
        self.send(
            "POST",
            "/v1beta/interactions",
            &[
                ("x-goog-api-key", key),
                ("content-type", "application/json"),
            ],
            body.to_string().into_bytes(),
        )
        .await
    }

    /// Where the bytes of key `key`'s file `id` are kept.
    pub async fn blob(&self, key: &str, id: &str) -> PathBuf {
        let tenant = localgem_api::tenant::Tenant::from_key(key).0;
        let rec = self.store.get_file(&tenant, id).await.unwrap().unwrap();
        self.dir.join(rec.blob)
    }

    /// The names of the kept blobs.
    pub fn blobs(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}
