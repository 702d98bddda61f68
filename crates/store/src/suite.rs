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
        resolved_input: None,
    }
}

/// Run the suite against `store`, which must be empty.
///
/// # Panics
/// When the store misbehaves.
pub async fn run(store: &impl Store) {
    let mut a = record("tenant-a", "v1_one", Status::InProgress);
    a.output.clear();
    store.insert_owned(&a, "R", 10_000).await.unwrap();
    assert!(matches!(
        store.insert_owned(&a, "R", 10_000).await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(matches!(
        store.insert(&a).await,
        Err(StoreError::Duplicate(_))
    ));

    // another tenant sees nothing and can change nothing
    assert_eq!(store.get("tenant-b", "v1_one").await.unwrap(), None);
    assert!(!store.delete("tenant-b", "v1_one").await.unwrap());
    let mut foreign = record("tenant-b", "v1_one", Status::Completed);
    foreign.output.clear();
    assert!(!store.finish_owned(&foreign, "R").await.unwrap());

    // finishing replaces the record atomically
    let done = record("tenant-a", "v1_one", Status::Completed);
    assert!(store.finish_owned(&done, "R").await.unwrap());
    assert_eq!(store.get("tenant-a", "v1_one").await.unwrap(), Some(done));

    // unfinished records fail at restart; finished ones stay
    let b = record("tenant-a", "v1_two", Status::InProgress);
    store.insert_owned(&b, "R", 10_000).await.unwrap();
    assert_eq!(store.fail_owned("R", "restarted").await.unwrap(), 1);
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
    store
        .insert_owned(
            &record("tenant-a", "v1_three", Status::InProgress),
            "R",
            10_000,
        )
        .await
        .unwrap();
    assert!(store.delete("tenant-a", "v1_three").await.unwrap());
    assert!(!store
        .finish_owned(&record("tenant-a", "v1_three", Status::Completed), "R")
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

/// Runs owned by replicas: leases, fencing, cancel requests, expiry; chains in one read;
/// event logs; forget notes. Against an empty `store`.
///
/// # Panics
/// When the store misbehaves.
pub async fn run_leases(store: &dyn Store) {
    let running = |id: &str| {
        let mut r = record("t1", id, Status::InProgress);
        r.output.clear();
        r
    };
    store
        .insert_owned(&running("a1"), "A", 10_000)
        .await
        .unwrap();
    store
        .insert_owned(&running("a2"), "A", 10_000)
        .await
        .unwrap();
    store
        .insert_owned(&running("b1"), "B", 10_000)
        .await
        .unwrap();
    store.insert(&running("legacy")).await.unwrap();

    // renewing returns the owner's runs, with cancel requests
    assert!(store.request_cancel("t1", "a2").await.unwrap());
    assert!(
        !store.request_cancel("t2", "a1").await.unwrap(),
        "tenant-scoped"
    );
    let mut mine = store.renew("A", 20_000).await.unwrap();
    mine.sort_by(|x, y| x.id.cmp(&y.id));
    let summary: Vec<(&str, &str, bool)> = mine
        .iter()
        .map(|r| (r.id.as_str(), r.tenant.as_str(), r.cancel_requested))
        .collect();
    assert_eq!(summary, [("a1", "t1", false), ("a2", "t1", true)]);

    // event logs: appended in batches, read past a position, dropped when the run ends
    let evs = |r: std::ops::Range<u64>| r.map(|i| format!("{{\"n\":{i}}}")).collect::<Vec<_>>();
    store.append_events("a1", 0, &evs(0..3)).await.unwrap();
    store.append_events("a1", 3, &evs(3..5)).await.unwrap();
    store.append_events("a1", 3, &evs(3..4)).await.unwrap(); // a retried batch is harmless
    let all = store.events_after("a1", None, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(all[3].1, "{\"n\":3}");
    let tail = store.events_after("a1", Some(2), 1).await.unwrap();
    assert_eq!(tail, [(3, "{\"n\":3}".to_owned())]);
    assert!(store.events_after("b1", None, 10).await.unwrap().is_empty());

    // finishing is fenced by owner
    let mut done = record("t1", "a1", Status::Completed);
    done.resolved_input = Some(vec![Step::UserInput {
        content: vec![Content::text("[document: x]\nbody\n[end of document]")],
    }]);
    assert!(
        !store.finish_owned(&done, "B").await.unwrap(),
        "not B's run"
    );
    assert!(store.finish_owned(&done, "A").await.unwrap());
    assert!(
        !store.finish_owned(&done, "A").await.unwrap(),
        "finished once"
    );
    assert_eq!(store.get("t1", "a1").await.unwrap(), Some(done.clone()));
    assert!(store.events_after("a1", None, 10).await.unwrap().is_empty());
    assert_eq!(store.renew("A", 20_000).await.unwrap().len(), 1);

    // B's lease ends unrenewed: whoever notices fails it, and B can no longer finish it
    assert_eq!(store.fail_expired(15_000, "owner gone").await.unwrap(), 1);
    let b1 = store.get("t1", "b1").await.unwrap().unwrap();
    assert_eq!(b1.status, Status::Failed);
    assert_eq!(b1.error.as_deref(), Some("owner gone"));
    assert!(!store
        .finish_owned(&record("t1", "b1", Status::Completed), "B")
        .await
        .unwrap());
    assert!(store.renew("B", 30_000).await.unwrap().is_empty());

    // A restarting fails its own runs and unowned ones, never another owner's
    store
        .insert_owned(&running("b2"), "B", 10_000)
        .await
        .unwrap();
    assert_eq!(store.fail_owned("A", "A restarted").await.unwrap(), 2);
    assert_eq!(
        store.get("t1", "legacy").await.unwrap().unwrap().status,
        Status::Failed
    );
    assert_eq!(
        store.get("t1", "b2").await.unwrap().unwrap().status,
        Status::InProgress
    );

    // a deleted run drops out of its owner's renewals (the owner then stops it)
    assert_eq!(store.renew("B", 30_000).await.unwrap().len(), 1);
    assert!(store.delete("t1", "b2").await.unwrap());
    assert!(store.renew("B", 30_000).await.unwrap().is_empty());

    // a chain in one read, newest first, stopping at a gap and at the limit
    let mut prev: Option<String> = None;
    for i in 0..5 {
        let mut r = record("t1", &format!("c{i}"), Status::Completed);
        r.previous_interaction_id = prev.replace(r.id.clone());
        store.insert(&r).await.unwrap();
    }
    let ids = |v: Vec<InteractionRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.chain("t1", "c4", 100).await.unwrap()),
        ["c4", "c3", "c2", "c1", "c0"]
    );
    assert_eq!(ids(store.chain("t1", "c4", 2).await.unwrap()), ["c4", "c3"]);
    assert!(store.chain("t2", "c4", 100).await.unwrap().is_empty());
    assert!(store.delete("t1", "c2").await.unwrap());
    let cut = store.chain("t1", "c4", 100).await.unwrap();
    assert_eq!(ids(cut.clone()), ["c4", "c3"]);
    assert_eq!(cut[1].previous_interaction_id.as_deref(), Some("c2"));

    // forget notes: a reader starts at the newest and sees later ones in order
    store.note_forget("old").await.unwrap();
    let start = store.forgets_after(None).await.unwrap()[0].0;
    store.note_forget("t1").await.unwrap();
    store.note_forget("t2").await.unwrap();
    let seen = store.forgets_after(Some(start)).await.unwrap();
    assert_eq!(
        seen.iter().map(|f| f.1.as_str()).collect::<Vec<_>>(),
        ["t1", "t2"]
    );
    assert!(seen[0].0 > start && seen[1].0 > seen[0].0);
    assert!(store
        .forgets_after(Some(seen[1].0))
        .await
        .unwrap()
        .is_empty());
}
