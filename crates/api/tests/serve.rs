//! The server loop over real TCP: slow and silent clients are cut off, a connection past the
//! limit gets a 503 it can read, and shutdown finishes within its grace whatever clients do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use localgem_api::serve::{serve, ServeLimits};
use localgem_api::testing::FakeEngine;
use localgem_api::{router, ApiConfig, AppState, ModelAliases};
use localgem_store::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ServeLimits, delay: Duration) -> Server {
    let state = AppState::new(
        Arc::new(FakeEngine::with_delay(delay)),
        Arc::new(MemoryStore::new()),
        ApiConfig {
            aliases: ModelAliases::parse(&["gemini-*=default".into()], FakeEngine::MODEL).unwrap(),
            ..ApiConfig::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, router(state), limits, async {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(tx),
        done,
    }
}

fn limits() -> ServeLimits {
    ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        max_connections: 64,
        shutdown_grace: Duration::from_secs(2),
    }
}

/// Everything the server sends until it closes the connection (at most `wait`); `None` if it
/// is still open then.
async fn read_to_close(s: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

const POST_HEAD: &str = "POST /v1beta/interactions HTTP/1.1\r\nhost: t\r\nx-goog-api-key: k\r\n\
                         content-type: application/json\r\n";

#[tokio::test]
async fn silent_and_trickling_clients_are_cut_off() {
    let srv = start(limits(), Duration::ZERO).await;
    // Connects and sends nothing.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    // Sends half a header and stops.
    let mut half = TcpStream::connect(srv.addr).await.unwrap();
    half.write_all(POST_HEAD.as_bytes()).await.unwrap();
    // Sends a header a byte at a time, slower than the header timeout allows in all.
    let mut trickle = TcpStream::connect(srv.addr).await.unwrap();
    let trickler = tokio::spawn(async move {
        for b in POST_HEAD.bytes() {
            if trickle.write_all(&[b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    let t = Instant::now();
    assert!(read_to_close(&mut silent, Duration::from_secs(5))
        .await
        .is_some());
    assert!(read_to_close(&mut half, Duration::from_secs(5))
        .await
        .is_some());
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(
        tokio::time::timeout(Duration::from_secs(10), trickler)
            .await
            .unwrap()
            .unwrap(),
        "the trickling client was never cut off"
    );

    // A body that stops arriving: 408 in the API's envelope.
    let mut stalled = TcpStream::connect(srv.addr).await.unwrap();
    stalled
        .write_all(format!("{POST_HEAD}content-length: 100\r\n\r\n{{\"model\":").as_bytes())
        .await
        .unwrap();
    let reply = read_to_close(&mut stalled, Duration::from_secs(5))
        .await
        .expect("a stalled body is answered and closed");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"request_timeout\""), "{reply}");

    // A kept-alive connection idle after its request is closed too.
    let mut kept = TcpStream::connect(srv.addr).await.unwrap();
    let body = r#"{"model":"fake-model","input":"hi"}"#;
    kept.write_all(format!("{POST_HEAD}content-length: {}\r\n\r\n{body}", body.len()).as_bytes())
        .await
        .unwrap();
    let reply = read_to_close(&mut kept, Duration::from_secs(5))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test]
async fn past_the_connection_limit_a_client_reads_503() {
    let srv = start(
        ServeLimits {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 3,
            ..limits()
        },
        Duration::ZERO,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(srv.addr).await.unwrap();
    let reply = read_to_close(&mut extra, Duration::from_secs(5))
        .await
        .expect("refused at once");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.to_lowercase().contains("retry-after: 1"), "{reply}");
    assert!(reply.contains("\"UNAVAILABLE\""), "{reply}");
    // Freed connections are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ok = TcpStream::connect(srv.addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_to_close(&mut ok, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test]
async fn shutdown_is_bounded_whatever_clients_do() {
    let mut srv = start(
        ServeLimits {
            header_read_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            ..limits()
        },
        Duration::from_millis(50),
    )
    .await;
    // Half a header, half a body, an idle connection, and a request that finishes within the
    // grace (the fake engine takes 50 ms a word).
    let mut half_head = TcpStream::connect(srv.addr).await.unwrap();
    half_head.write_all(POST_HEAD.as_bytes()).await.unwrap();
    let mut half_body = TcpStream::connect(srv.addr).await.unwrap();
    half_body
        .write_all(format!("{POST_HEAD}content-length: 100\r\n\r\n{{\"mo").as_bytes())
        .await
        .unwrap();
    let _idle = TcpStream::connect(srv.addr).await.unwrap();
    let mut working = TcpStream::connect(srv.addr).await.unwrap();
    let body = r#"{"model":"fake-model","input":"one two three four five"}"#;
    working
        .write_all(
            format!(
                "{POST_HEAD}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    srv.stop.take().unwrap().send(()).unwrap();
    let reply = read_to_close(&mut working, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "in-flight work finishes: {reply}"
    );
    tokio::time::timeout(Duration::from_secs(5), &mut srv.done)
        .await
        .expect("serve returned within the grace")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // New connections are refused once it has stopped.
    assert!(TcpStream::connect(srv.addr).await.is_err());
    drop((half_head, half_body));
}
