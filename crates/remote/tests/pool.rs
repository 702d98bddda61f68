//! The upstream pool over HTTP, against small stand-in engines that answer with llama-server's
//! recorded shapes (the live llama-server runs in `tests/remote`): failover before the first
//! token, refusals that are not retried, probing back in, and the queue bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use localgem_remote::{Dialect, EndReason, Job, Pool, PoolConfig, StartError};
use serde_json::{json, Value};

/// What a stand-in engine answers to `/completion`.
#[derive(Clone, Copy)]
enum Mode {
    Serve,
    Fail500,
    Refuse400,
}

struct Fake {
    mode: Mode,
    requests: AtomicUsize,
    last: std::sync::Mutex<Value>,
}

async fn completion(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> impl IntoResponse {
    f.requests.fetch_add(1, Ordering::SeqCst);
    *f.last.lock().unwrap() = body;
    match f.mode {
        Mode::Fail500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":{"code":500,"message":"boom","type":"server_error"}}"#.to_owned(),
        ),
        Mode::Refuse400 => (
            StatusCode::BAD_REQUEST,
            r#"{"error":{"code":400,"message":"\"json_schema\": bad","type":"invalid_request_error"}}"#.to_owned(),
        ),
        Mode::Serve => (
            StatusCode::OK,
            [
                r#"{"content":"Hi","tokens":[5],"stop":false,"tokens_predicted":1,"timings":{"cache_n":2}}"#,
                r#"{"content":"","tokens":[],"stop":true,"stop_type":"eos","tokens_predicted":1,"timings":{"cache_n":2}}"#,
            ]
            .iter()
            .map(|d| format!("data: {d}\n\n"))
            .collect(),
        ),
    }
}

async fn spawn(mode: Mode) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        mode,
        requests: AtomicUsize::new(0),
        last: Default::default(),
    });
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/props",
            get(|| async {
                Json(json!({"default_generation_settings": {"n_ctx": 512}, "total_slots": 1}))
            }),
        )
        .route("/completion", post(completion))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn job() -> Job {
    Job {
        prompt: (0..100).collect(),
        max_tokens: 8,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
        json_schema: None,
        cache_salt: None,
    }
}

fn pool(urls: Vec<String>, max_queue: u32) -> Arc<Pool> {
    Pool::new(PoolConfig {
        model: "m".into(),
        dialect: Dialect::LlamaServer,
        urls,
        slots: 1,
        max_queue,
    })
    .unwrap()
}

#[tokio::test]
async fn a_5xx_before_the_first_token_goes_to_the_other_upstream() {
    let (bad, bad_fake) = spawn(Mode::Fail500).await;
    let (good, good_fake) = spawn(Mode::Serve).await;
    let p = pool(vec![bad.clone(), good.clone()], 8);
    p.probe_all().await;
    assert!(p.ready());
    assert_eq!(p.context_tokens(), Some(512));
    let mut served = 0;
    for _ in 0..4 {
        let mut s = p.start(&job(), "k", None).await.unwrap();
        assert_eq!(s.url(), good);
        let first = s.next().await.unwrap().unwrap();
        assert_eq!(first.tokens, vec![5]);
        assert_eq!(first.cached_tokens, Some(2));
        let last = s.next().await.unwrap().unwrap();
        assert_eq!(last.end, Some(EndReason::Eos));
        assert!(s.next().await.unwrap().is_none());
        served += 1;
    }
    assert_eq!(served, 4);
    // The failing one was tried once, then left out.
    assert_eq!(bad_fake.requests.load(Ordering::SeqCst), 1);
    assert_eq!(good_fake.requests.load(Ordering::SeqCst), 4);
    let health = p.health();
    assert!(!health[0].healthy && health[0].error.as_deref().unwrap().contains("500"));
    assert!(health[1].healthy);
    let sent = good_fake.last.lock().unwrap().clone();
    assert_eq!(sent["prompt"].as_array().unwrap().len(), 100);
    assert_eq!(sent["n_predict"], 8);
}

#[tokio::test]
async fn a_refusal_is_not_retried_and_names_the_engine() {
    let (a, fa) = spawn(Mode::Refuse400).await;
    let (b, fb) = spawn(Mode::Refuse400).await;
    let p = pool(vec![a, b], 8);
    p.probe_all().await;
    let Err(StartError::Rejected(m)) = p.start(&job(), "k", None).await else {
        panic!("not rejected")
    };
    assert!(
        m.contains("llama-server refused the request") && m.contains("json_schema"),
        "{m}"
    );
    assert_eq!(
        fa.requests.load(Ordering::SeqCst) + fb.requests.load(Ordering::SeqCst),
        1
    );
    assert!(
        p.health().iter().all(|u| u.healthy),
        "a refusal is not a failure"
    );
}

#[tokio::test]
async fn with_every_upstream_gone_the_answer_comes_at_once() {
    let p = pool(vec![dead_url(), dead_url()], 8);
    p.probe_all().await;
    assert!(!p.ready());
    let began = Instant::now();
    let Err(StartError::NoUpstream(m)) = p.start(&job(), "k", None).await else {
        panic!("started")
    };
    assert!(began.elapsed() < Duration::from_millis(200));
    assert!(m.contains("cannot connect"), "{m}");
    // Healthy in the router's eyes but dead: both tried, then none.
    let (url, _) = spawn(Mode::Serve).await;
    let p = pool(vec![url, dead_url()], 8);
    p.probe_all().await;
    assert_eq!(p.health().iter().filter(|u| u.healthy).count(), 1);
}

#[tokio::test]
async fn a_failed_upstream_is_probed_back_in() {
    let (url, _) = spawn(Mode::Serve).await;
    let p = pool(vec![url], 8);
    // Never probed: not serving yet.
    assert!(matches!(
        p.start(&job(), "k", None).await,
        Err(StartError::NoUpstream(_))
    ));
    tokio::spawn(Pool::probe_loop(Arc::downgrade(&p)));
    let began = Instant::now();
    while !p.ready() {
        assert!(began.elapsed() < Duration::from_secs(3), "not probed in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(p.start(&job(), "k", None).await.is_ok());
}

#[tokio::test]
async fn beyond_the_slots_and_queue_requests_are_refused_as_busy() {
    let (url, _) = spawn(Mode::Serve).await;
    let p = pool(vec![url], 1);
    p.probe_all().await;
    // One slot plus one queue place.
    let a = p.start(&job(), "k", None).await.unwrap();
    let b = p.start(&job(), "k", None).await.unwrap();
    assert!(matches!(
        p.start(&job(), "k", None).await,
        Err(StartError::Busy(_))
    ));
    drop(a);
    let c = p.start(&job(), "k", None).await;
    assert!(c.is_ok());
    drop((b, c));
    assert_eq!(p.health()[0].in_flight, 0);
}
