use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use localgem_core::{InteractionRecord, Store, StoreError};
use localgem_wire::Status;

/// Interactions in a `HashMap`; for tests and `store`-less runs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // std Mutex: never held across an await.
    map: Mutex<HashMap<String, InteractionRecord>>,
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
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_passes_the_store_suite() {
        crate::suite::run(&super::MemoryStore::new()).await;
    }
}
