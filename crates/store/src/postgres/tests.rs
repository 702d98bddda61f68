//! The store suite against a real PostgreSQL server, each part in a database of its own.
//!
//! `LOCALGEM_TEST_DATABASE_URL` names a server and a database to connect to first
//! (`scripts/pg.sh` starts one and prints it); its user must be allowed to create databases.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use localgem_core::{Store, StoreError};
use localgem_wire::Status;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::PostgresStore;

const URL_VAR: &str = "LOCALGEM_TEST_DATABASE_URL";

/// The server to test against; `None` (with a note) to skip, outside CI.
fn test_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{URL_VAR} is not set, but CI is: the test script must start PostgreSQL \
             (scripts/pg.sh DIR PORT prints the URL) and export {URL_VAR}"
        ),
        _ => {
            eprintln!(
                "note: {URL_VAR} is not set; skipping the PostgreSQL store suite \
                 (start a server with `scripts/pg.sh DIR` and set {URL_VAR} to its URL)"
            );
            None
        }
    }
}

/// A database name no other test run uses.
fn fresh_name(part: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "lg_test_{}_{}_{nanos}_{part}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Core,
    Files,
    Retention,
    Leases,
}

/// Run one part of the suite in a database created for it, and drop that database
/// afterwards, whether the part passed or panicked.
async fn in_fresh_database(url: &str, part: Part) {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
    let name = fresh_name(&format!("{part:?}").to_lowercase());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let options = PgConnectOptions::from_str(url).unwrap().database(&name);
    // In a task of its own, so that a failing part still gets its database dropped.
    let outcome = tokio::spawn(async move {
        let store = PostgresStore::connect_with(options.clone()).await.unwrap();
        match part {
            Part::Core => {
                crate::suite::run(&store).await;
                // A connection the server ends (57P01, admin shutdown) is "unavailable", and
                // the pool replaces it: the next query works.
                let err = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                    .execute(&store.pool)
                    .await
                    .map_err(super::backend)
                    .expect_err("the server ends this connection");
                assert!(
                    matches!(err, StoreError::Unavailable(_)),
                    "want Unavailable, got {err:?}"
                );
                assert_eq!(store.get("t1", "nothing").await.unwrap(), None);
                // Connecting again finds the schema in place (migrations are a no-op) and the
                // records kept.
                let rec = crate::suite::record("t1", "v1_kept", Status::Completed);
                store.insert(&rec).await.unwrap();
                store.close().await;
                let again = PostgresStore::connect_with(options).await.unwrap();
                assert_eq!(again.get("t1", "v1_kept").await.unwrap(), Some(rec));
                again.close().await;
            }
            Part::Files => crate::suite::run_files(&store).await,
            Part::Retention => crate::suite::run_retention(&store).await,
            Part::Leases => crate::suite::run_leases(&store).await,
        }
        store.close().await;
    })
    .await;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    admin.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    dropped.unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
}

#[tokio::test]
async fn postgres_passes_the_store_suite() {
    let Some(url) = test_url() else { return };
    for part in [Part::Core, Part::Files, Part::Retention, Part::Leases] {
        in_fresh_database(&url, part).await;
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_quickly() {
    // Nothing listens on port 1: the connection is refused, retried until the acquire
    // timeout, then reported as unavailable rather than hanging.
    let started = Instant::now();
    let err = PostgresStore::connect("postgres://x@127.0.0.1:1/x")
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(&err, StoreError::Unavailable(msg) if msg.contains("127.0.0.1:1")),
        "want Unavailable naming the server, got {err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn database_errors_are_classified() {
    assert!(matches!(
        super::backend(sqlx::Error::PoolTimedOut),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        super::backend(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        super::backend(sqlx::Error::RowNotFound),
        StoreError::Backend(_)
    ));
}
