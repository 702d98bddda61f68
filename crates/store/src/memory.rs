use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use localgem_core::{FileRecord, FilesCursor, InteractionRecord, Store, StoreError};
use localgem_wire::Status;

/// Interactions in a `HashMap`; for tests and `store`-less runs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // std Mutex: never held across an await.
    map: Mutex<HashMap<String, InteractionRecord>>,
    /// By (tenant, id): file names are unique per key.
    files: Mutex<HashMap<(String, String), FileRecord>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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

    async fn finish(&self, record: &InteractionRecord) -> Result<bool, StoreError> {
        let mut map = self.map.lock().expect("poisoned");
        match map.get_mut(&record.id) {
            Some(old) if old.tenant == record.tenant => {
                *old = record.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<InteractionRecord>, StoreError> {
        let map = self.map.lock().expect("poisoned");
        Ok(map.get(id).filter(|r| r.tenant == tenant).cloned())
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let mut map = self.map.lock().expect("poisoned");
        if map.get(id).is_some_and(|r| r.tenant == tenant) {
            map.remove(id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn fail_unfinished(&self, reason: &str) -> Result<u64, StoreError> {
        let mut map = self.map.lock().expect("poisoned");
        let mut n = 0;
        for r in map.values_mut() {
            if matches!(r.status, Status::InProgress | Status::Queued) {
                r.status = Status::Failed;
                r.error = Some(reason.to_owned());
                n += 1;
            }
        }
        Ok(n)
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
    }
}
