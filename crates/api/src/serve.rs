//! The HTTP/1.1 server loop, with the limits a server facing slow or hostile clients needs:
//!
//! - a request's headers must arrive within [`ServeLimits::header_read_timeout`], which also
//!   closes a kept-alive connection that sends no next request for that long;
//! - a request body that stalls (no bytes for [`ServeLimits::body_timeout`]) ends the request
//!   with a 408;
//! - at most [`ServeLimits::max_connections`] connections are served at once; one more is
//!   answered 503 with `Retry-After` and closed;
//! - on shutdown the listener closes, idle connections and connections still sending headers
//!   close at once, requests in flight get [`ServeLimits::shutdown_grace`] to finish, and
//!   whatever is left is then dropped, so shutdown never waits on a client.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Limits on connections and slow clients.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time for a request's headers to arrive (and for an idle kept-alive connection to
    /// send its next request).
    pub header_read_timeout: Duration,
    /// Longest a request body may go without sending a byte.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long requests in flight may run on after shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// The answer to a connection over the limit: written whole, then the connection closes.
fn busy_response() -> Vec<u8> {
    let body = r#"{"error":{"message":"the server has too many open connections; try again shortly","code":"unavailable","status":"UNAVAILABLE"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&busy_response()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Errors of `accept` that concern one connection only.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serve `app` on `listener` until `shutdown` resolves, then shut down within the grace.
///
/// # Errors
/// Never after it starts: accept errors (out of file descriptors, say) are logged and
/// retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
            // Reap finished connection tasks as they end.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, say: wait a little instead of spinning.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("localgem_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            async move {
                let resp = match app.oneshot(req.map(Body::new)).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        conns.spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(connections = open, "waiting for requests in flight");
    }
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = conns.len(),
            "requests still open after the shutdown grace; closing them"
        );
    }
    conns.shutdown().await;
    Ok(())
}
