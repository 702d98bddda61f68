//! One behavioural suite that every [`Store`] implementation must pass.

use localgem_core::{FileRecord, FilesCursor, InteractionRecord, Store, StoreError};
use localgem_wire::{Content, Status, Step, Usage};

/// A record with one user turn and one answer.
pub fn record(tenant: &str, id: &str, status: Status) -> InteractionRecord {
    InteractionRecord {
        id: id.into(),
        tenant: tenant.into(),
        model: "m".into(),
        status,
        created: 1_700_000_000,
        updated: 1_700_000_001,
        previous_interaction_id: None,
        input: vec![Step::UserInput {
            content: vec![Content::text("Hi — ünïcode ✓")],
        }],
        output: vec![Step::ModelOutput {
            content: vec![Content::text("Hello")],
            error: None,
        }],
        usage: Usage::text(3, 1, 0),
        error: None,
    }
}

/// Run the suite against `store`, which must be empty.
///
/// # Panics
/// When the store misbehaves.
pub async fn run(store: &impl Store) {
    let mut a = record("tenant-a", "v1_one", Status::InProgress);
    a.output.clear();
    store.insert(&a).await.unwrap();
    assert!(matches!(
        store.insert(&a).await,
        Err(StoreError::Duplicate(_))
    ));

    // another tenant sees nothing and can change nothing
    assert_eq!(store.get("tenant-b", "v1_one").await.unwrap(), None);
    assert!(!store.delete("tenant-b", "v1_one").await.unwrap());
    let mut foreign = record("tenant-b", "v1_one", Status::Completed);
    foreign.output.clear();
    assert!(!store.finish(&foreign).await.unwrap());

    // finishing replaces the record atomically
    let done = record("tenant-a", "v1_one", Status::Completed);
    assert!(store.finish(&done).await.unwrap());
    assert_eq!(store.get("tenant-a", "v1_one").await.unwrap(), Some(done));

    // unfinished records fail at restart; finished ones stay
    let b = record("tenant-a", "v1_two", Status::InProgress);
    store.insert(&b).await.unwrap();
    assert_eq!(store.fail_unfinished("restarted").await.unwrap(), 1);
    let b = store.get("tenant-a", "v1_two").await.unwrap().unwrap();
    assert_eq!(b.status, Status::Failed);
    assert_eq!(
        store
            .get("tenant-a", "v1_one")
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Completed
    );

    // delete
    assert!(store.delete("tenant-a", "v1_one").await.unwrap());
    assert_eq!(store.get("tenant-a", "v1_one").await.unwrap(), None);
    assert!(!store.delete("tenant-a", "v1_one").await.unwrap());
    // finishing a deleted record reports it
    assert!(!store
        .finish(&record("tenant-a", "v1_one", Status::Completed))
        .await
        .unwrap());
}

/// A file record.
pub fn file(tenant: &str, id: &str, created_ms: i64) -> FileRecord {
    FileRecord {
        id: id.into(),
        tenant: tenant.into(),
        blob: format!("blobs/{tenant}-{id}"),
        display_name: Some(format!("{id}.txt")),
        mime_type: "text/plain".into(),
        size_bytes: 42,
        sha256_hex: "ab".repeat(32),
        created_ms,
        expires_ms: created_ms + 1000,
    }
}

/// The file half of the suite, against an empty `store`.
///
/// # Panics
/// When the store misbehaves.
pub async fn run_files(store: &dyn Store) {
    for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        store
            .insert_file(&file("t1", id, 1000 + i as i64))
            .await
            .unwrap();
    }
    store.insert_file(&file("t1", "e2", 1004)).await.unwrap();
    store.insert_file(&file("t2", "x", 5000)).await.unwrap();
    assert!(matches!(
        store.insert_file(&file("t1", "a", 1)).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        store.get_file("t1", "a").await.unwrap(),
        Some(file("t1", "a", 1000))
    );
    assert_eq!(
        store.get_file("t2", "a").await.unwrap(),
        None,
        "tenant-scoped"
    );
    // Names are unique per key: another key may use the same one, and each sees its own.
    store.insert_file(&file("t3", "a", 3000)).await.unwrap();
    assert_eq!(
        store.get_file("t3", "a").await.unwrap().unwrap().blob,
        "blobs/t3-a"
    );
    assert_eq!(
        store.get_file("t1", "a").await.unwrap().unwrap().blob,
        "blobs/t1-a"
    );
    assert!(store.delete_file("t3", "a").await.unwrap());
    assert!(store.get_file("t1", "a").await.unwrap().is_some());
    // pages of 2, newest first, ties broken by id
    let mut seen = Vec::new();
    let mut after: Option<FilesCursor> = None;
    loop {
        let page = store.list_files("t1", after.as_ref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|f| f.id.clone()));
        let last = page.last().unwrap();
        after = Some(FilesCursor {
            created_ms: last.created_ms,
            id: last.id.clone(),
        });
    }
    assert_eq!(seen, ["e2", "e", "d", "c", "b", "a"]);
    assert!(!store.delete_file("t2", "a").await.unwrap());
    assert!(store.delete_file("t1", "a").await.unwrap());
    assert!(!store.delete_file("t1", "a").await.unwrap());
    let mut expired: Vec<String> = store
        .expired_files(2002)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    expired.sort();
    assert_eq!(expired, ["b", "c"]);
}

/// Retention: old finished interactions go, recent and running ones stay.
///
/// # Panics
/// When the store misbehaves.
pub async fn run_retention(store: &dyn Store) {
    let mut old = record("t1", "old", Status::Completed);
    old.created = 100;
    let mut old_other = record("t2", "old2", Status::Failed);
    old_other.created = 150;
    let mut old_running = record("t1", "run", Status::InProgress);
    old_running.created = 100;
    let mut fresh = record("t1", "new", Status::Completed);
    fresh.created = 1000;
    for r in [&old, &old_other, &old_running, &fresh] {
        store.insert(r).await.unwrap();
    }
    assert_eq!(store.purge_before(500).await.unwrap(), 2);
    assert!(store.get("t1", "old").await.unwrap().is_none());
    assert!(store.get("t2", "old2").await.unwrap().is_none());
    assert!(store.get("t1", "run").await.unwrap().is_some());
    assert!(store.get("t1", "new").await.unwrap().is_some());
}
