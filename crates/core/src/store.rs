//! The store seam: interactions, scoped by tenant (a hash of the API key).

use async_trait::async_trait;
use localgem_wire::{Status, Step, Usage};
use serde::{Deserialize, Serialize};

/// One stored interaction: its own turn (input steps and output steps), not the whole chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionRecord {
    /// Opaque id.
    pub id: String,
    /// Hash of the API key that created it.
    pub tenant: String,
    /// Model id as requested.
    pub model: String,
    /// Status.
    pub status: Status,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Last update, unix seconds.
    pub updated: i64,
    /// The interaction this one continues.
    pub previous_interaction_id: Option<String>,
    /// This turn's input as steps.
    pub input: Vec<Step>,
    /// This turn's output steps.
    pub output: Vec<Step>,
    /// Token usage.
    pub usage: Usage,
    /// Error message when `status` is failed.
    pub error: Option<String>,
    /// This turn's input as the model saw it, when that differs from `input`: documents as
    /// their text, uploaded images as content-addressed media (`media/<sha256>`). Later turns
    /// read this, so a conversation never depends on an upload that has since gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_input: Option<Vec<Step>>,
}

impl InteractionRecord {
    /// The input a later turn builds on: the resolved form when there is one.
    pub fn history_input(&self) -> &[Step] {
        self.resolved_input.as_deref().unwrap_or(&self.input)
    }
}

/// A running interaction of one owner, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Some replica asked for it to stop.
    pub cancel_requested: bool,
}

/// One uploaded file's metadata. Its bytes live in the data dir under [`FileRecord::blob`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Opaque id (the resource name is `files/<id>`).
    pub id: String,
    /// Hash of the API key that uploaded it. Ids are unique per tenant.
    pub tenant: String,
    /// Where its bytes are, relative to the files directory: a name no other upload uses.
    pub blob: String,
    /// Display name given at upload.
    pub display_name: Option<String>,
    /// MIME type.
    pub mime_type: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the bytes, lower-case hex.
    pub sha256_hex: String,
    /// Creation time, unix milliseconds.
    pub created_ms: i64,
    /// Expiry time, unix milliseconds.
    pub expires_ms: i64,
}

/// Where a files listing goes on from: the last file of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesCursor {
    /// Its creation time.
    pub created_ms: i64,
    /// Its id.
    pub id: String,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("storage failure: {0}")]
    Backend(String),
    /// A record could not be encoded or decoded.
    #[error("corrupt record {id}: {reason}")]
    Corrupt {
        /// Record id.
        id: String,
        /// What failed.
        reason: String,
    },
    /// The storage is full (a full disk): nothing was written.
    #[error("storage full: {0}")]
    Full(String),
    /// The database cannot be reached now (down, restarting, no free connection in time):
    /// nothing was written; trying again later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An insert hit an existing id (of the same tenant, for files).
    #[error("interaction {0} already exists")]
    Duplicate(String),
}

/// Durable interaction storage.
///
/// Every lookup takes the tenant: another tenant's record is indistinguishable from a missing one.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Insert a record that no replica owns (a finished one, say; a running one no lease
    /// protects is failed by the next replica that starts).
    async fn insert(&self, record: &InteractionRecord) -> Result<(), StoreError>;

    /// Fetch a record of this tenant.
    async fn get(&self, tenant: &str, id: &str) -> Result<Option<InteractionRecord>, StoreError>;

    /// Delete a record of this tenant. Returns whether it existed.
    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;

    /// Delete every finished interaction created before `cutoff` (unix seconds), of every
    /// tenant. Returns how many went.
    async fn purge_before(&self, cutoff: i64) -> Result<u64, StoreError>;

    /// Insert a running record owned by `owner` (a replica), whose lease runs until
    /// `lease_until_ms` (unix milliseconds) unless renewed.
    async fn insert_owned(
        &self,
        record: &InteractionRecord,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<(), StoreError>;

    /// Replace a running record of `owner` with its final state, and drop its event log.
    /// Fenced: returns false, changing nothing, when the record is gone or no longer runs
    /// under this owner (its lease expired and another replica failed it).
    async fn finish_owned(
        &self,
        record: &InteractionRecord,
        owner: &str,
    ) -> Result<bool, StoreError>;

    /// Extend the lease of every record `owner` runs to `lease_until_ms`; returns those
    /// records. A run the owner holds that is not among them was deleted or taken away.
    async fn renew(&self, owner: &str, lease_until_ms: i64) -> Result<Vec<RunState>, StoreError>;

    /// Ask the owner of a running record to stop it. Returns whether it was running.
    async fn request_cancel(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;

    /// At a replica's start: fail the unfinished records it owned before (and unowned ones,
    /// written before owners existed). Returns how many changed.
    async fn fail_owned(&self, owner: &str, reason: &str) -> Result<u64, StoreError>;

    /// Fail every unfinished record whose lease ended before `now_ms`: its owner died.
    /// Returns how many changed.
    async fn fail_expired(&self, now_ms: i64, reason: &str) -> Result<u64, StoreError>;

    /// A record of this tenant and the turns it continues, newest first, in one read; at
    /// most `limit`. Stops early where an earlier turn is missing (the last record's
    /// `previous_interaction_id` then names it).
    async fn chain(
        &self,
        tenant: &str,
        id: &str,
        limit: usize,
    ) -> Result<Vec<InteractionRecord>, StoreError>;

    /// Append events (encoded) to a running interaction's log; the first gets `first_seq`,
    /// the next one more, and so on.
    async fn append_events(
        &self,
        id: &str,
        first_seq: u64,
        events: &[String],
    ) -> Result<(), StoreError>;

    /// Up to `limit` logged events of an interaction with a position past `after`
    /// (all with `None`), in order.
    async fn events_after(
        &self,
        id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, StoreError>;

    /// Record that a tenant's cached KV state must go on every replica.
    async fn note_forget(&self, tenant: &str) -> Result<(), StoreError>;

    /// Forget notes past position `after`, oldest first: (position, tenant). With
    /// `after = None`, only the newest position (and no tenants), to start from.
    async fn forgets_after(&self, after: Option<i64>) -> Result<Vec<(i64, String)>, StoreError>;

    /// Insert a file's metadata.
    async fn insert_file(&self, file: &FileRecord) -> Result<(), StoreError>;

    /// A file of this tenant.
    async fn get_file(&self, tenant: &str, id: &str) -> Result<Option<FileRecord>, StoreError>;

    /// Up to `limit` files of this tenant, newest first, after `after`.
    async fn list_files(
        &self,
        tenant: &str,
        after: Option<&FilesCursor>,
        limit: u32,
    ) -> Result<Vec<FileRecord>, StoreError>;

    /// Delete a file's metadata. Returns whether it existed.
    async fn delete_file(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;

    /// Files of every tenant that expire at or before `now_ms`.
    async fn expired_files(&self, now_ms: i64) -> Result<Vec<FileRecord>, StoreError>;

    /// Close connections, writing out what is buffered (at shutdown).
    async fn close(&self) {}
}
