use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use localgem_core::{FileRecord, FilesCursor, InteractionRecord, RunState, Store, StoreError};
use localgem_wire::Status;

/// Interactions in a `HashMap`; for tests and `store`-less runs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // std Mutex: never held across an await.
    map: Mutex<HashMap<String, InteractionRecord>>,
    /// Owner, lease end and cancel request of owned records.
    runs: Mutex<HashMap<String, (String, i64, bool)>>,
    /// Event logs by interaction.
    events: Mutex<HashMap<String, std::collections::BTreeMap<u64, String>>>,
    forgets: Mutex<Vec<String>>,
    /// By (tenant, id): file names are unique per key.
    files: Mutex<HashMap<(String, String), FileRecord>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn fail_where(&self, reason: &str, pick: impl Fn(&str) -> bool) -> Result<u64, StoreError> {
        let mut map = self.map.lock().expect("poisoned");
        let mut n = 0;
        for r in map.values_mut() {
            if matches!(r.status, Status::InProgress | Status::Queued) && pick(&r.id) {
                r.status = Status::Failed;
                r.error = Some(reason.to_owned());
                n += 1;
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert(&self, record: &InteractionRecord) -> Result<(), StoreError> {
        let mut map = self.map.lock().expect("poisoned");
        if map.contains_key(&record.id) {
            return Err(StoreError::Duplicate(record.id.clone()));
        }
        map.insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn insert_owned(
        &self,
        record: &InteractionRecord,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<(), StoreError> {
        self.insert(record).await?;
        self.runs
            .lock()
            .expect("poisoned")
            .insert(record.id.clone(), (owner.to_owned(), lease_until_ms, false));
        Ok(())
    }

    async fn finish_owned(
        &self,
        record: &InteractionRecord,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let mut map = self.map.lock().expect("poisoned");
        let mut runs = self.runs.lock().expect("poisoned");
        self.events.lock().expect("poisoned").remove(&record.id);
        let owned = runs.get(&record.id).is_some_and(|(o, ..)| o == owner);
        match map.get_mut(&record.id) {
            Some(old) if old.tenant == record.tenant && owned && !old.status.is_terminal() => {
                *old = record.clone();
                runs.remove(&record.id);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn renew(&self, owner: &str, lease_until_ms: i64) -> Result<Vec<RunState>, StoreError> {
        let map = self.map.lock().expect("poisoned");
        let mut runs = self.runs.lock().expect("poisoned");
        let mut out = Vec::new();
        for (id, (o, lease, cancel)) in runs.iter_mut() {
            let Some(r) = map.get(id).filter(|r| !r.status.is_terminal()) else {
                continue;
            };
            if o == owner {
                *lease = lease_until_ms;
                out.push(RunState {
                    id: id.clone(),
                    tenant: r.tenant.clone(),
                    cancel_requested: *cancel,
                });
            }
        }
        Ok(out)
    }

    async fn request_cancel(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let map = self.map.lock().expect("poisoned");
        let running = map
            .get(id)
            .is_some_and(|r| r.tenant == tenant && !r.status.is_terminal());
        if running {
            if let Some(run) = self.runs.lock().expect("poisoned").get_mut(id) {
                run.2 = true;
            }
        }
        Ok(running)
    }

    async fn fail_owned(&self, owner: &str, reason: &str) -> Result<u64, StoreError> {
        let runs = self.runs.lock().expect("poisoned").clone();
        self.fail_where(reason, |id| runs.get(id).is_none_or(|(o, ..)| o == owner))
    }

    async fn fail_expired(&self, now_ms: i64, reason: &str) -> Result<u64, StoreError> {
        let runs = self.runs.lock().expect("poisoned").clone();
        self.fail_where(reason, |id| {
            runs.get(id).is_some_and(|(_, lease, _)| *lease < now_ms)
        })
    }

    async fn chain(
        &self,
        tenant: &str,
        id: &str,
        limit: usize,
    ) -> Result<Vec<InteractionRecord>, StoreError> {
        let map = self.map.lock().expect("poisoned");
        let mut out: Vec<InteractionRecord> = Vec::new();
        let mut next = Some(id.to_owned());
        while let Some(id) = next {
            let Some(r) = map.get(&id).filter(|r| r.tenant == tenant) else {
                break;
            };
            if out.len() >= limit {
                break;
            }
            next = r.previous_interaction_id.clone();
            out.push(r.clone());
        }
        Ok(out)
    }

    async fn append_events(
        &self,
        id: &str,
        first_seq: u64,
        events: &[String],
    ) -> Result<(), StoreError> {
        let mut logs = self.events.lock().expect("poisoned");
        let log = logs.entry(id.to_owned()).or_default();
        for (i, e) in events.iter().enumerate() {
            log.entry(first_seq + i as u64).or_insert_with(|| e.clone());
        }
        Ok(())
    }

    async fn events_after(
        &self,
        id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let logs = self.events.lock().expect("poisoned");
        Ok(logs
            .get(id)
            .map(|log| {
                log.iter()
                    .filter(|(seq, _)| after.is_none_or(|a| **seq > a))
                    .take(limit as usize)
                    .map(|(s, e)| (*s, e.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn note_forget(&self, tenant: &str) -> Result<(), StoreError> {
        self.forgets
            .lock()
            .expect("poisoned")
            .push(tenant.to_owned());
        Ok(())
    }

    async fn forgets_after(&self, after: Option<i64>) -> Result<Vec<(i64, String)>, StoreError> {
        let forgets = self.forgets.lock().expect("poisoned");
        let Some(after) = after else {
            return Ok(vec![(forgets.len() as i64, String::new())]);
        };
        Ok(forgets
            .iter()
            .enumerate()
            .map(|(i, t)| (i as i64 + 1, t.clone()))
            .filter(|(seq, _)| *seq > after)
            .collect())
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<InteractionRecord>, StoreError> {
        let map = self.map.lock().expect("poisoned");
        Ok(map.get(id).filter(|r| r.tenant == tenant).cloned())
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let mut map = self.map.lock().expect("poisoned");
        if map.get(id).is_some_and(|r| r.tenant == tenant) {
            map.remove(id);
            self.events.lock().expect("poisoned").remove(id);
            self.runs.lock().expect("poisoned").remove(id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn purge_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut map = self.map.lock().expect("poisoned");
        let before = map.len();
        map.retain(|_, r| r.created >= cutoff || !r.status.is_terminal());
        Ok((before - map.len()) as u64)
    }

    async fn insert_file(&self, file: &FileRecord) -> Result<(), StoreError> {
        let mut files = self.files.lock().expect("poisoned");
        let key = (file.tenant.clone(), file.id.clone());
        if files.contains_key(&key) {
            return Err(StoreError::Duplicate(file.id.clone()));
        }
        files.insert(key, file.clone());
        Ok(())
    }

    async fn get_file(&self, tenant: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let files = self.files.lock().expect("poisoned");
        Ok(files.get(&(tenant.to_owned(), id.to_owned())).cloned())
    }

    async fn list_files(
        &self,
        tenant: &str,
        after: Option<&FilesCursor>,
        limit: u32,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let files = self.files.lock().expect("poisoned");
        let mut mine: Vec<FileRecord> = files
            .values()
            .filter(|f| f.tenant == tenant)
            .filter(|f| after.is_none_or(|c| (f.created_ms, &f.id) < (c.created_ms, &c.id)))
            .cloned()
            .collect();
        mine.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
        mine.truncate(limit as usize);
        Ok(mine)
    }

    async fn delete_file(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let mut files = self.files.lock().expect("poisoned");
        Ok(files.remove(&(tenant.to_owned(), id.to_owned())).is_some())
    }

    async fn expired_files(&self, now_ms: i64) -> Result<Vec<FileRecord>, StoreError> {
        let files = self.files.lock().expect("poisoned");
        Ok(files
            .values()
            .filter(|f| f.expires_ms <= now_ms)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_passes_the_store_suite() {
        crate::suite::run(&super::MemoryStore::new()).await;
        crate::suite::run_files(&super::MemoryStore::new()).await;
        crate::suite::run_retention(&super::MemoryStore::new()).await;
        crate::suite::run_leases(&super::MemoryStore::new()).await;
    }
}
