//! The [`Client`], its [`ClientBuilder`] and the [`RetryPolicy`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::error::{Error, Result};
use crate::files::Files;
use crate::interactions::Interactions;

/// Google's public endpoint, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// The API version path segment used by default, as in the 3.x SDKs (`v1beta` for 2.x).
pub const DEFAULT_API_VERSION: &str = "v1";

/// The Interactions API revision this crate speaks, sent as the `Api-Revision` header.
pub const API_REVISION: &str = "2026-05-20";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// When and how often a failed request is tried again.
///
/// The defaults are the official SDKs' rules: up to 4 retries (5 attempts) of a request that
/// got HTTP 408, 409, 429 or any 5xx, or that failed to connect or timed out; exponential
/// backoff from 0.5 s doubling up to 8 s, each delay shortened by up to 25 % of random jitter;
/// a `Retry-After` of at most 60 s from the server is honoured instead. A streaming request is
/// retried only until the first byte of the event stream has arrived, never after.
///
/// ```
/// use std::time::Duration;
/// use localgem_client::RetryPolicy;
///
/// let policy = RetryPolicy::default().max_attempts(3).initial_backoff(Duration::from_millis(100));
/// assert_eq!(policy.attempts(), 3);
/// assert_eq!(policy.delay(1), Duration::from_millis(100)); // before jitter
/// assert_eq!(policy.delay(2), Duration::from_millis(200));
/// assert_eq!(RetryPolicy::none().attempts(), 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    jitter: f64,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            jitter: 0.25,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// Total attempts including the first (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Delay before the first retry; doubled for each further one.
    pub fn initial_backoff(mut self, delay: Duration) -> Self {
        self.initial_backoff = delay;
        self
    }

    /// Upper bound of one backoff delay.
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.max_backoff = delay;
        self
    }

    /// Fraction (0 to 1) by which each delay may be randomly shortened.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The longest server `Retry-After` honoured; longer ones fall back to the backoff.
    pub fn max_retry_after(mut self, limit: Duration) -> Self {
        self.max_retry_after = limit;
        self
    }

    /// Total attempts including the first.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether an answer with this HTTP status is retried.
    pub fn is_retryable_status(status: u16) -> bool {
        matches!(status, 408 | 409 | 429) || (500..=599).contains(&status)
    }

    /// The backoff before retry number `retry` (1 for the first retry), without jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(20));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    fn jittered(&self, retry: u32) -> Duration {
        let base = self.delay(retry);
        if self.jitter <= 0.0 {
            return base;
        }
        let cut = rand::thread_rng().gen_range(0.0..=self.jitter);
        base.mul_f64(1.0 - cut)
    }
}

/// Builds a [`Client`]. [`Client::builder`] starts from the environment; every setter
/// overrides it.
///
/// ```
/// use std::time::Duration;
/// use localgem_client::{Client, RetryPolicy};
///
/// let client = Client::builder()
///     .api_key("local-key")
///     .base_url("http://127.0.0.1:8080")
///     .api_version("v1beta")
///     .timeout(Duration::from_secs(120))
///     .retry_policy(RetryPolicy::default().max_attempts(3))
///     .build()
///     .unwrap();
/// assert_eq!(client.base_url(), "http://127.0.0.1:8080");
/// assert_eq!(client.api_version(), "v1beta");
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    api_key: Option<String>,
    base_url: Option<String>,
    api_version: Option<String>,
    api_revision: Option<String>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    retry: RetryPolicy,
    headers: Vec<(String, String)>,
    http: Option<reqwest::Client>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("api_version", &self.api_version)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::new()
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn normalize_version(v: &str) -> String {
    match v {
        "beta" => "v1beta".to_owned(),
        "alpha" => "v1alpha".to_owned(),
        other => other.trim_matches('/').to_owned(),
    }
}

impl ClientBuilder {
    /// A builder that ignores the environment: no key, Google's endpoint, `v1`.
    pub fn new() -> Self {
        ClientBuilder {
            api_key: None,
            base_url: None,
            api_version: None,
            api_revision: Some(API_REVISION.to_owned()),
            timeout: Some(DEFAULT_TIMEOUT),
            connect_timeout: Some(Duration::from_secs(30)),
            retry: RetryPolicy::default(),
            headers: Vec::new(),
            http: None,
        }
    }

    /// A builder filled from the environment, as the official SDKs read it:
    ///
    /// * the key from `GOOGLE_API_KEY`, else `GEMINI_API_KEY` (when both are set,
    ///   `GOOGLE_API_KEY` wins, as in the SDKs);
    /// * the base URL from `GOOGLE_GEMINI_BASE_URL`;
    /// * the API version from `GOOGLE_GENAI_API_VERSION` (`beta` means `v1beta`).
    pub fn from_env() -> Self {
        let mut b = ClientBuilder::new();
        b.api_key = env_var("GOOGLE_API_KEY").or_else(|| env_var("GEMINI_API_KEY"));
        b.base_url = env_var("GOOGLE_GEMINI_BASE_URL");
        b.api_version = env_var("GOOGLE_GENAI_API_VERSION").map(|v| normalize_version(&v));
        b
    }

    /// The API key, sent as the `x-goog-api-key` header.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The server's base URL without a version, e.g. `http://127.0.0.1:8080`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The version path segment: `v1` (default), `v1beta`, `v1alpha`, …
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = Some(normalize_version(&version.into()));
        self
    }

    /// The `Api-Revision` header sent on Interactions calls (default [`API_REVISION`]);
    /// `None` sends none.
    pub fn api_revision(mut self, revision: Option<String>) -> Self {
        self.api_revision = revision;
        self
    }

    /// Time limit of one attempt (default 10 minutes). For a unary call it covers the whole
    /// answer; for a stream, until the first byte of the event stream.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// No time limit per attempt.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Time limit for establishing a connection (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How failed requests are retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Shorthand for a default [`RetryPolicy`] with this many attempts (1 disables retries).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.retry = self.retry.max_attempts(attempts);
        self
    }

    /// An extra header sent on every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Use this `reqwest` client (its proxy, TLS and pool settings) instead of a new one.
    /// The connect timeout of this builder then does not apply.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Build the client. Fails without an API key, as the official SDKs do.
    pub fn build(self) -> Result<Client> {
        let api_key = self.api_key.filter(|k| !k.is_empty()).ok_or_else(|| {
            Error::Config(
                "no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or call ClientBuilder::api_key"
                    .into(),
            )
        })?;
        let base_url = self
            .base_url
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "base URL {base_url:?} must start with http:// or https://"
            )));
        }
        let api_version = self
            .api_version
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        let mut headers = HeaderMap::new();
        let key_value = HeaderValue::from_str(&api_key)
            .map_err(|_| Error::Config("the API key is not a valid header value".into()))?;
        headers.insert("x-goog-api-key", sensitive(key_value));
        let agent = concat!("localgem-client/", env!("CARGO_PKG_VERSION"), " gl-rust");
        headers.insert("x-goog-api-client", HeaderValue::from_static(agent));
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Config(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| Error::Config(format!("invalid value for header {name}")))?;
            headers.insert(name, value);
        }
        let revision = match self.api_revision {
            Some(r) => Some(
                HeaderValue::from_str(&r)
                    .map_err(|_| Error::Config("invalid Api-Revision".into()))?,
            ),
            None => None,
        };
        let http = match self.http {
            Some(h) => h,
            None => {
                let mut b = reqwest::Client::builder()
                    .user_agent(concat!("localgem-client/", env!("CARGO_PKG_VERSION")));
                if let Some(t) = self.connect_timeout {
                    b = b.connect_timeout(t);
                }
                b.build()?
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                api_version,
                headers,
                revision,
                timeout: self.timeout,
                retry: self.retry,
            }),
        })
    }
}

fn sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// A client of the Gemini Interactions and Files APIs. Cheap to clone (the connection pool
/// is shared).
///
/// ```no_run
/// # async fn run() -> Result<(), localgem_client::Error> {
/// let client = localgem_client::Client::new()?; // GEMINI_API_KEY, GOOGLE_GEMINI_BASE_URL
/// let it = client.interactions()
///     .create(localgem_client::InteractionRequest::new("gemini-3-flash-preview", "Hi"))
///     .await?;
/// println!("{}", it.output_text());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    base_url: String,
    api_version: String,
    headers: HeaderMap,
    revision: Option<HeaderValue>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("api_version", &self.inner.api_version)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client configured from the environment ([`ClientBuilder::from_env`]).
    ///
    /// Fails when neither `GEMINI_API_KEY` nor `GOOGLE_API_KEY` is set.
    pub fn new() -> Result<Client> {
        ClientBuilder::from_env().build()
    }

    /// A builder starting from the environment.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::from_env()
    }

    /// The Interactions API: create, stream, get, delete, cancel.
    pub fn interactions(&self) -> Interactions {
        Interactions::new(self.clone())
    }

    /// The Files API: upload, get, list, delete.
    pub fn files(&self) -> Files {
        Files::new(self.clone())
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The API version path segment.
    pub fn api_version(&self) -> &str {
        &self.inner.api_version
    }

    /// `{base}/{version}/{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/{}",
            self.inner.base_url, self.inner.api_version, path
        )
    }

    /// `{base}/upload/{version}/{path}`.
    pub(crate) fn upload_url(&self, path: &str) -> String {
        format!(
            "{}/upload/{}/{}",
            self.inner.base_url, self.inner.api_version, path
        )
    }

    /// Send a request with retries and read the whole answer. Non-2xx answers become
    /// [`Error::Api`].
    pub(crate) async fn execute(&self, req: Request) -> Result<Answer> {
        let req = &req;
        self.retrying(|| async move {
            let answer = self.attempt(req).await?;
            Ok(if answer.status.is_success() {
                Ok(answer)
            } else {
                Err(answer)
            })
        })
        .await
    }

    /// Run `attempt` under the retry policy. It gives the result, an HTTP failure (`Err`
    /// with the answer) or a transport error; failures of a retryable kind are tried again
    /// after the server's `Retry-After` (when within the policy's limit) or a jittered
    /// backoff, until the attempts run out.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<std::result::Result<T, Answer>>>,
    {
        let policy = &self.inner.retry;
        let mut retries = 0;
        loop {
            let last = retries + 1 >= policy.max_attempts;
            let wait = match attempt().await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(answer)) => {
                    if last || !RetryPolicy::is_retryable_status(answer.status.as_u16()) {
                        return Err(answer.to_error());
                    }
                    retry_after(&answer.headers).filter(|d| *d <= policy.max_retry_after)
                }
                Err(e) => {
                    if last || !is_retryable_error(&e) {
                        return Err(e);
                    }
                    None
                }
            };
            retries += 1;
            tokio::time::sleep(wait.unwrap_or_else(|| policy.jittered(retries))).await;
        }
    }

    async fn attempt(&self, req: &Request) -> Result<Answer> {
        let send = async {
            let resp = self.http_request(req).send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        match self.inner.timeout {
            Some(t) => tokio::time::timeout(t, send)
                .await
                .unwrap_or(Err(Error::Timeout)),
            None => send.await,
        }
    }

    /// Send a request whose answer is an event stream. Retried (per the policy) until the
    /// first byte of a 2xx answer's body has arrived; from then on errors are the stream's.
    pub(crate) async fn execute_stream(
        &self,
        req: Request,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let req = &req;
        self.retrying(|| async move {
            Ok(match self.attempt_stream(req).await? {
                StreamStart::Open(stream) => Ok(stream),
                StreamStart::Failed(answer) => Err(answer),
            })
        })
        .await
    }

    async fn attempt_stream(&self, req: &Request) -> Result<StreamStart> {
        let open = async {
            let resp = self.http_request(req).send().await?;
            let status = resp.status();
            if !status.is_success() {
                let headers = resp.headers().clone();
                let body = resp.bytes().await?;
                return Ok(StreamStart::Failed(Answer {
                    status,
                    headers,
                    body,
                }));
            }
            let mut body = resp.bytes_stream();
            // Wait for the first byte: until then the request may still be retried.
            loop {
                match body.next().await {
                    Some(Ok(chunk)) if chunk.is_empty() => continue,
                    Some(Ok(chunk)) => {
                        let first = futures::stream::once(async move { Ok(chunk) });
                        let rest = body.map(|r| r.map_err(Error::from));
                        return Ok(StreamStart::Open(first.chain(rest).boxed()));
                    }
                    Some(Err(e)) => return Err(Error::from(e)),
                    None => return Ok(StreamStart::Open(futures::stream::empty().boxed())),
                }
            }
        };
        match self.inner.timeout {
            Some(t) => tokio::time::timeout(t, open)
                .await
                .unwrap_or(Err(Error::Timeout)),
            None => open.await,
        }
    }

    fn http_request(&self, req: &Request) -> reqwest::RequestBuilder {
        let mut b = self
            .inner
            .http
            .request(req.method.clone(), &req.url)
            .headers(self.inner.headers.clone());
        if req.interactions {
            if let Some(rev) = &self.inner.revision {
                b = b.header("api-revision", rev.clone());
            }
        }
        if !req.query.is_empty() {
            b = b.query(&req.query);
        }
        for (name, value) in &req.headers {
            b = b.header(name.clone(), value.clone());
        }
        if let Some(body) = &req.body {
            b = b.body(body.clone());
        }
        b
    }
}

enum StreamStart {
    Open(BoxStream<'static, Result<Bytes>>),
    Failed(Answer),
}

fn is_retryable_error(e: &Error) -> bool {
    match e {
        Error::Timeout => true,
        // Body and decode errors here are a connection that broke while the body was read (this
        // crate decodes JSON itself).
        Error::Http(e) => {
            e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
        }
        _ => false,
    }
}

/// `Retry-After` (seconds) or `retry-after-ms`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0));
    }
    let secs = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// One HTTP request, kept so that it can be sent again.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: Method,
    pub url: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Bytes>,
    /// Send `Api-Revision`.
    pub interactions: bool,
}

impl Request {
    pub fn new(method: Method, url: String) -> Self {
        Request {
            method,
            url,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            interactions: false,
        }
    }

    pub fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_owned(), value.into()));
        self
    }

    pub fn header(mut self, name: &'static str, value: impl AsRef<str>) -> Result<Self> {
        let v = HeaderValue::from_str(value.as_ref())
            .map_err(|_| Error::Config(format!("invalid value for header {name}")))?;
        self.headers.push((HeaderName::from_static(name), v));
        Ok(self)
    }

    pub fn json<T: serde::Serialize>(mut self, body: &T) -> Result<Self> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Config(e.to_string()))?;
        self.body = Some(Bytes::from(bytes));
        self.headers.push((
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        Ok(self)
    }
}

/// A complete answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn to_error(&self) -> Error {
        let mut e = Error::from_response_body(self.status.as_u16(), &self.body);
        if let Error::Api { retry_after: r, .. } = &mut e {
            *r = retry_after(&self.headers);
        }
        e
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::decode(e, &self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<f64> = (1..=6).map(|n| p.delay(n).as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]);
        for n in 1..=6 {
            let j = p.jittered(n);
            assert!(j <= p.delay(n) && j >= p.delay(n).mul_f64(0.75), "{j:?}");
        }
        assert_eq!(RetryPolicy::none().attempts(), 1);
        assert_eq!(RetryPolicy::default().max_attempts(0).attempts(), 1);
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 409, 429, 500, 502, 503, 504] {
            assert!(RetryPolicy::is_retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 422] {
            assert!(!RetryPolicy::is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn retry_after_header() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
    }

    #[test]
    fn builder_settings() {
        let c = ClientBuilder::new()
            .api_key("k")
            .base_url("http://localhost:1/")
            .api_version("beta")
            .build()
            .unwrap();
        assert_eq!(c.base_url(), "http://localhost:1");
        assert_eq!(c.api_version(), "v1beta");
        assert_eq!(
            c.url("interactions"),
            "http://localhost:1/v1beta/interactions"
        );
        assert_eq!(
            c.upload_url("files"),
            "http://localhost:1/upload/v1beta/files"
        );
        let c = ClientBuilder::new().api_key("k").build().unwrap();
        assert_eq!(c.url("files/a"), format!("{DEFAULT_BASE_URL}/v1/files/a"));
        assert!(matches!(
            ClientBuilder::new().build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            ClientBuilder::new()
                .api_key("k")
                .base_url("localhost:8080")
                .build(),
            Err(Error::Config(_))
        ));
        let debug = format!("{:?}", ClientBuilder::new().api_key("secret"));
        assert!(!debug.contains("secret"));
    }
}
