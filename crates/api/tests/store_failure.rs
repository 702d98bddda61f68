//! A store that cannot take the end of a run (a full disk): the run still ends in a terminal
//! state that readers see at once, and the store gets the failed mark as soon as it can.
//! The store here is the in-memory one behind a switch that refuses `finish` the way SQLite
//! does on a full disk; `crates/cli/tests/hardening.rs` does the same on a real full tmpfs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use localgem_api::testing::FakeEngine;
use localgem_api::{router, ApiConfig, AppState, ModelAliases};
use localgem_core::{FileRecord, FilesCursor, InteractionRecord, RunState, Store, StoreError};
use localgem_store::MemoryStore;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The in-memory store, whose `finish` fails while `full` is set.
#[derive(Default)]
struct FullDisk {
    inner: MemoryStore,
    full: AtomicBool,
}

fn disk_full() -> StoreError {
    StoreError::Backend("database or disk is full".into())
}

#[async_trait]
impl Store for FullDisk {
    async fn insert(&self, r: &InteractionRecord) -> Result<(), StoreError> {
        self.inner.insert(r).await
    }
    async fn get(&self, t: &str, id: &str) -> Result<Option<InteractionRecord>, StoreError> {
        self.inner.get(t, id).await
    }
    async fn insert_owned(
        &self,
        r: &InteractionRecord,
        owner: &str,
        lease: i64,
    ) -> Result<(), StoreError> {
        self.inner.insert_owned(r, owner, lease).await
    }
    async fn finish_owned(&self, r: &InteractionRecord, owner: &str) -> Result<bool, StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(disk_full());
        }
        self.inner.finish_owned(r, owner).await
    }
    async fn renew(&self, owner: &str, lease: i64) -> Result<Vec<RunState>, StoreError> {
        self.inner.renew(owner, lease).await
    }
    async fn request_cancel(&self, t: &str, id: &str) -> Result<bool, StoreError> {
        self.inner.request_cancel(t, id).await
    }
    async fn fail_owned(&self, owner: &str, reason: &str) -> Result<u64, StoreError> {
        self.inner.fail_owned(owner, reason).await
    }
    async fn fail_expired(&self, now_ms: i64, reason: &str) -> Result<u64, StoreError> {
        self.inner.fail_expired(now_ms, reason).await
    }
    async fn chain(
        &self,
        t: &str,
        id: &str,
        limit: usize,
    ) -> Result<Vec<InteractionRecord>, StoreError> {
        self.inner.chain(t, id, limit).await
    }
    async fn append_events(&self, id: &str, first: u64, ev: &[String]) -> Result<(), StoreError> {
        self.inner.append_events(id, first, ev).await
    }
    async fn events_after(
        &self,
        id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.inner.events_after(id, after, limit).await
    }
    async fn note_forget(&self, t: &str) -> Result<(), StoreError> {
        self.inner.note_forget(t).await
    }
    async fn forgets_after(&self, after: Option<i64>) -> Result<Vec<(i64, String)>, StoreError> {
        self.inner.forgets_after(after).await
    }
    async fn delete(&self, t: &str, id: &str) -> Result<bool, StoreError> {
        self.inner.delete(t, id).await
    }
    async fn purge_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.inner.purge_before(cutoff).await
    }
    async fn insert_file(&self, f: &FileRecord) -> Result<(), StoreError> {
        self.inner.insert_file(f).await
    }
    async fn get_file(&self, t: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        self.inner.get_file(t, id).await
    }
    async fn list_files(
        &self,
        t: &str,
        after: Option<&FilesCursor>,
        limit: u32,
    ) -> Result<Vec<FileRecord>, StoreError> {
        self.inner.list_files(t, after, limit).await
    }
    async fn delete_file(&self, t: &str, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_file(t, id).await
    }
    async fn expired_files(&self, now_ms: i64) -> Result<Vec<FileRecord>, StoreError> {
        self.inner.expired_files(now_ms).await
    }
}

fn app(store: Arc<FullDisk>) -> AppState {
    AppState::new(
        Arc::new(FakeEngine::with_delay(Duration::from_millis(5))),
        store,
        ApiConfig {
            aliases: ModelAliases::parse(&["gemini-*=default".into()], FakeEngine::MODEL).unwrap(),
            ..ApiConfig::default()
        },
    )
}

async fn call(st: &AppState, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, String) {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-goog-api-key", "k")
        .header("content-type", "application/json");
    if body.is_none() {
        b = b.header("content-length", "0");
    }
    let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
    let resp = router(st.clone())
        .oneshot(b.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn a_run_whose_end_cannot_be_saved_ends_failed_and_nobody_waits_on_it() {
    let store = Arc::new(FullDisk::default());
    let st = app(store.clone());
    store.full.store(true, Ordering::SeqCst);

    // A background run ends while the disk is full.
    let (s, body) = call(
        &st,
        "POST",
        "/v1beta/interactions",
        Some(json!({"model": "fake-model", "input": "one two three", "background": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Polling sees it end as failed within the quick retries, not `in_progress` forever.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let (_, body) = call(&st, "GET", &format!("/v1beta/interactions/{id}"), None).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["status"] != "in_progress" || Instant::now() > deadline {
            break v["status"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, "failed");
    // An attach ends at once with the error, instead of waiting for a run that no longer runs.
    let t = Instant::now();
    let (s, body) = tokio::time::timeout(
        Duration::from_secs(10),
        call(
            &st,
            "GET",
            &format!("/v1beta/interactions/{id}?stream=true"),
            None,
        ),
    )
    .await
    .expect("the stream of an ended run must end");
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("event: error"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(5));

    // A foreground request is answered with what happened (not a 5xx the SDKs would retry,
    // running the work twice).
    let (s, body) = call(
        &st,
        "POST",
        "/v1beta/interactions",
        Some(json!({"model": "fake-model", "input": "hello"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "failed", "{v}");
    let fg = v["id"].as_str().unwrap().to_owned();

    // The disk has room again: both failed marks reach the store.
    store.full.store(false, Ordering::SeqCst);
    let tenant = localgem_api::tenant::Tenant::from_key("k").0;
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in [&id, &fg] {
        loop {
            let r = store.inner.get(&tenant, id).await.unwrap().unwrap();
            if r.status.as_str() == "failed" {
                assert!(r.error.unwrap().contains("could not be saved"));
                break;
            }
            assert!(Instant::now() < deadline, "{id} never stored as failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And it is no longer held as running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !st.runs.is_empty() {
        assert!(Instant::now() < deadline, "still held as running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_short_outage_still_saves_the_answer() {
    let store = Arc::new(FullDisk::default());
    let st = app(store.clone());
    store.full.store(true, Ordering::SeqCst);
    let s2 = store.clone();
    // Room again before the quick retries run out.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s2.full.store(false, Ordering::SeqCst);
    });
    let (s, body) = call(
        &st,
        "POST",
        "/v1beta/interactions",
        Some(json!({"model": "fake-model", "input": "hi"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "completed", "{v}");
    let (_, body) = call(
        &st,
        "GET",
        &format!("/v1beta/interactions/{}", v["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert!(body.contains("\"completed\""), "{body}");
}
