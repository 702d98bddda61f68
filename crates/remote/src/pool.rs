//! One model's upstream engines over HTTP: starting a streamed generation on the upstream the
//! [`Router`] picks (once more on another when the first fails before answering), reading its
//! chunks, probing failed upstreams back in, and the per-upstream metrics.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use localgem_core::UpstreamHealth;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use serde_json::Value;

use crate::dialect::{error_message, Chunk, Dialect, Job, Props, StreamState};
use crate::router::{block_hashes, Router};
use crate::sse::SseBuffer;

/// How long connecting to an upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a healthy upstream is probed (a failed one follows the router's backoff).
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Longest silence between two chunks of a stream (a long prompt's prefill included).
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(300);

/// A model served by engines elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Model id.
    pub model: String,
    /// The engines' API.
    pub dialect: Dialect,
    /// Base URLs, `http://host:port` (a path prefix is kept).
    pub urls: Vec<String>,
    /// Sequences each upstream runs at once, where it does not say.
    pub slots: u32,
    /// Requests that may wait beyond the upstreams' slots before new ones are refused.
    pub max_queue: u32,
}

/// Why a generation could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// No upstream is serving.
    #[error("{0}")]
    NoUpstream(String),
    /// Every slot and queue place is taken, here or upstream.
    #[error("{0}")]
    Busy(String),
    /// The engine refused the request itself (a 4xx): sending it elsewhere would not help.
    #[error("{0}")]
    Rejected(String),
}

struct Meters {
    requests: Counter,
    errors: Counter,
    first_token: Histogram,
    duration: Histogram,
    prompt_tokens: Counter,
    cached_tokens: Counter,
    healthy: Gauge,
    in_flight: Gauge,
}

impl Meters {
    fn new(model: &str, url: &str) -> Self {
        let labels = [("model", model.to_owned()), ("upstream", url.to_owned())];
        Meters {
            requests: counter!("localgem_upstream_requests_total", &labels),
            errors: counter!("localgem_upstream_errors_total", &labels),
            first_token: histogram!("localgem_upstream_first_token_seconds", &labels),
            duration: histogram!("localgem_upstream_request_seconds", &labels),
            prompt_tokens: counter!("localgem_upstream_prompt_tokens_total", &labels),
            cached_tokens: counter!("localgem_upstream_cached_tokens_total", &labels),
            healthy: gauge!("localgem_upstream_healthy", &labels),
            in_flight: gauge!("localgem_upstream_in_flight", &labels),
        }
    }
}

/// One model's upstreams.
pub struct Pool {
    config: PoolConfig,
    client: reqwest::Client,
    router: Mutex<Router>,
    /// Context per sequence: the least any upstream reported.
    context: Mutex<Option<u64>>,
    meters: Vec<Meters>,
}

/// A generation streaming from one upstream. Dropping it closes the connection, which stops
/// the generation there.
pub struct Stream {
    pool: Arc<Pool>,
    upstream: usize,
    response: reqwest::Response,
    sse: SseBuffer,
    state: StreamState,
    pending: std::collections::VecDeque<String>,
    started: Instant,
    tokens: u64,
    prompt_tokens: u64,
    /// The engine said how many prompt tokens it had cached (counted once).
    cached_seen: bool,
    done: bool,
}

impl Pool {
    /// A pool over `config.urls`; call [`Pool::probe_loop`] to bring its upstreams in.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(mut config: PoolConfig) -> Result<Arc<Self>, String> {
        for u in &mut config.urls {
            while u.ends_with('/') {
                u.pop();
            }
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let meters = config
            .urls
            .iter()
            .map(|u| Meters::new(&config.model, u))
            .collect();
        Ok(Arc::new(Pool {
            router: Mutex::new(Router::new(config.urls.len(), config.slots, Instant::now())),
            client,
            context: Mutex::new(None),
            meters,
            config,
        }))
    }

    /// The model id.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    fn router(&self) -> MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Context tokens one sequence can hold, once an upstream has said.
    pub fn context_tokens(&self) -> Option<u64> {
        *self.context.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an upstream is serving and the context size is known.
    pub fn ready(&self) -> bool {
        self.router().any_healthy() && self.context_tokens().is_some()
    }

    /// The upstreams and their health.
    pub fn health(&self) -> Vec<UpstreamHealth> {
        let r = self.router();
        r.upstreams()
            .iter()
            .zip(&self.config.urls)
            .map(|(u, url)| UpstreamHealth {
                model: self.config.model.clone(),
                url: url.clone(),
                dialect: self.config.dialect.name().to_owned(),
                healthy: u.healthy,
                in_flight: u.in_flight,
                error: u.last_error.clone(),
            })
            .collect()
    }

    fn mark_failed(&self, i: usize, error: String) {
        tracing::warn!(model = %self.config.model, upstream = %self.config.urls[i], "upstream out: {error}");
        self.meters[i].errors.increment(1);
        self.meters[i].healthy.set(0.0);
        self.router().failed(i, error, Instant::now());
    }

    fn ended(&self, i: usize) {
        let mut r = self.router();
        r.ended(i);
        self.meters[i]
            .in_flight
            .set(f64::from(r.upstreams()[i].in_flight));
    }

    /// Ask upstream `i` whether it serves, and what it is.
    async fn probe(&self, i: usize) -> Result<Props, String> {
        let d = self.config.dialect;
        let base = &self.config.urls[i];
        let get = |path: &'static str| {
            self.client
                .get(format!("{base}{path}"))
                .timeout(PROBE_TIMEOUT)
                .send()
        };
        let health = get(d.health_path()).await.map_err(|e| describe(&e))?;
        if !health.status().is_success() {
            return Err(format!("health check answered {}", health.status()));
        }
        let props = get(d.props_path()).await.map_err(|e| describe(&e))?;
        if !props.status().is_success() {
            return Err(format!("{} answered {}", d.props_path(), props.status()));
        }
        let v: Value = props
            .json()
            .await
            .map_err(|e| format!("{} is not JSON: {e}", d.props_path()))?;
        Ok(d.props(&v))
    }

    async fn probe_one(&self, i: usize) {
        match self.probe(i).await {
            Ok(props) => {
                if let Some(n) = props.context_tokens {
                    let mut c = self.context.lock().unwrap_or_else(|p| p.into_inner());
                    *c = Some(c.map_or(n, |old| old.min(n)));
                }
                let was = {
                    let mut r = self.router();
                    let was = r.upstreams()[i].healthy;
                    r.recovered(i, props.slots);
                    was
                };
                self.meters[i].healthy.set(1.0);
                if !was {
                    tracing::info!(model = %self.config.model, upstream = %self.config.urls[i],
                        context = ?props.context_tokens, slots = ?props.slots, "upstream serving");
                }
            }
            Err(e) => self.mark_failed(i, e),
        }
    }

    /// Probe every upstream now (failed ones included, whatever their backoff).
    pub async fn probe_all(&self) {
        let all = (0..self.config.urls.len()).map(|i| self.probe_one(i));
        futures::future::join_all(all).await;
    }

    /// Probe failed upstreams as their backoff allows and healthy ones every
    /// [`PROBE_EVERY`]; runs until the pool is dropped.
    pub async fn probe_loop(pool: std::sync::Weak<Pool>) {
        let mut last_full = Instant::now();
        loop {
            let Some(p) = pool.upgrade() else { return };
            let now = Instant::now();
            let due: Vec<usize> = if now.duration_since(last_full) >= PROBE_EVERY {
                last_full = now;
                (0..p.config.urls.len()).collect()
            } else {
                p.router().due(now)
            };
            futures::future::join_all(due.into_iter().map(|i| p.probe_one(i))).await;
            drop(p);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Start `job` on the upstream the router picks for it (`scope` salts its prefix
    /// hashes), skipping `avoid`. When that upstream cannot be reached or answers 5xx, the
    /// next one is tried, once.
    ///
    /// # Errors
    /// [`StartError`]: none serving, all busy, or the engine refused the request.
    pub async fn start(
        self: &Arc<Self>,
        job: &Job,
        scope: &str,
        avoid: Option<usize>,
    ) -> Result<Stream, StartError> {
        let hashes = block_hashes(scope, &job.prompt);
        let order = {
            let mut r = self.router();
            let (in_flight, slots) = r.load();
            if r.any_healthy() && in_flight >= slots + self.config.max_queue {
                return Err(StartError::Busy(format!(
                    "{in_flight} requests are already running or waiting for model {}",
                    self.config.model
                )));
            }
            let mut order = r.pick(&hashes);
            order.retain(|&i| Some(i) != avoid);
            order
        };
        if order.is_empty() {
            return Err(StartError::NoUpstream(self.down_message()));
        }
        let body = self.config.dialect.request(job);
        let mut last = String::new();
        for &i in order.iter().take(2) {
            let url = format!(
                "{}{}",
                self.config.urls[i],
                self.config.dialect.generate_path()
            );
            {
                let mut r = self.router();
                r.started(i, &hashes);
                self.meters[i]
                    .in_flight
                    .set(f64::from(r.upstreams()[i].in_flight));
            }
            self.meters[i].requests.increment(1);
            self.meters[i]
                .prompt_tokens
                .increment(job.prompt.len() as u64);
            let started = Instant::now();
            let sent = self.client.post(&url).json(&body).send().await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.ended(i);
                    last = format!("{}: {}", self.config.urls[i], describe(&e));
                    self.mark_failed(i, last.clone());
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                return Ok(Stream {
                    pool: self.clone(),
                    upstream: i,
                    response,
                    sse: SseBuffer::default(),
                    state: StreamState::default(),
                    pending: Default::default(),
                    started,
                    tokens: 0,
                    prompt_tokens: job.prompt.len() as u64,
                    cached_seen: false,
                    done: false,
                });
            }
            self.ended(i);
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .as_ref()
                .and_then(error_message)
                .unwrap_or_else(|| text.chars().take(300).collect());
            let engine = self.config.dialect.name();
            if status.as_u16() == 429 {
                return Err(StartError::Busy(format!("{engine} is busy: {message}")));
            }
            if status.is_client_error() {
                self.meters[i].errors.increment(1);
                return Err(StartError::Rejected(format!(
                    "{engine} refused the request: {message}"
                )));
            }
            last = format!("{} answered {status}: {message}", self.config.urls[i]);
            self.mark_failed(i, last.clone());
        }
        Err(StartError::NoUpstream(format!(
            "no upstream of model {} could take the request ({last})",
            self.config.model
        )))
    }

    fn down_message(&self) -> String {
        let r = self.router();
        let why: Vec<String> = r
            .upstreams()
            .iter()
            .zip(&self.config.urls)
            .map(|(u, url)| {
                format!(
                    "{url}: {}",
                    u.last_error.as_deref().unwrap_or("not probed yet")
                )
            })
            .collect();
        format!(
            "no upstream of model {} is serving ({})",
            self.config.model,
            why.join("; ")
        )
    }
}

/// A transport error in a few words (reqwest's own text repeats the URL).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "broken response"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut root = None;
    while let Some(s) = source {
        root = Some(s.to_string());
        source = s.source();
    }
    match root {
        Some(r) => format!("{kind} ({r})"),
        None => kind.to_owned(),
    }
}

impl Stream {
    /// Which upstream (index) runs this.
    pub fn upstream(&self) -> usize {
        self.upstream
    }

    /// The upstream's base URL.
    pub fn url(&self) -> &str {
        &self.pool.config.urls[self.upstream]
    }

    /// The next chunk; `None` once the stream is over.
    ///
    /// # Errors
    /// What went wrong, in words without the upstream's address (which is logged): the
    /// connection broke, the engine stalled for [`CHUNK_TIMEOUT`], or sent what does not
    /// parse. The upstream is taken out in the first two cases.
    pub async fn next(&mut self) -> Result<Option<Chunk>, String> {
        loop {
            if let Some(data) = self.pending.pop_front() {
                let chunk = self
                    .pool
                    .config
                    .dialect
                    .chunk(&data, &mut self.state)
                    .map_err(|e| e.to_string())?;
                self.observe(&chunk);
                if chunk.last {
                    self.done = true;
                }
                return Ok(Some(chunk));
            }
            if self.done {
                return Ok(None);
            }
            let got = tokio::time::timeout(CHUNK_TIMEOUT, self.response.chunk()).await;
            match got {
                Err(_) => {
                    let e = format!("sent nothing for {CHUNK_TIMEOUT:?}");
                    self.pool.mark_failed(self.upstream, e.clone());
                    return Err(e);
                }
                Ok(Err(e)) => {
                    let e = describe(&e);
                    self.pool.mark_failed(self.upstream, e.clone());
                    return Err(e);
                }
                Ok(Ok(None)) => {
                    self.done = true;
                    if let Some(rest) = self.sse.finish() {
                        self.pending.push_back(rest);
                    }
                }
                Ok(Ok(Some(bytes))) => {
                    let events = self
                        .sse
                        .push(&bytes)
                        .inspect_err(|e| self.pool.mark_failed(self.upstream, e.clone()))?;
                    self.pending.extend(events);
                }
            }
        }
    }

    fn observe(&mut self, chunk: &Chunk) {
        let m = &self.pool.meters[self.upstream];
        if self.tokens == 0 && !chunk.tokens.is_empty() {
            m.first_token.record(self.started.elapsed().as_secs_f64());
        }
        self.tokens += chunk.tokens.len() as u64;
        if let (Some(c), false) = (chunk.cached_tokens, self.cached_seen) {
            self.cached_seen = true;
            m.cached_tokens.increment(c.min(self.prompt_tokens));
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.pool.meters[self.upstream]
            .duration
            .record(self.started.elapsed().as_secs_f64());
        self.pool.ended(self.upstream);
    }
}
