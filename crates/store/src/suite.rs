//! One behavioural suite that every [`Store`] implementation must pass.

use localgem_core::{InteractionRecord, Store, StoreError};
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
