//! The interaction service: the one owner of this replica's runs.
//!
//! [`Runs`] holds the runs this process owns (their logs and cancel signals), the per-key
//! running counts, and this replica's identity and lease length. [`maintain`] is its
//! background loop: it renews the leases of the runs it owns (which also tells it which of
//! them another replica asked to cancel, or deleted), fails runs whose owner died (lease
//! expired), and drops the cached KV state of tenants whose interactions were deleted on
//! any replica.
//!
//! The decisions are plain code ([`Runs::to_stop`], [`Schedule`], [`StoreHealth`]) with unit
//! tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use localgem_core::RunState;

use crate::error::ApiError;
use crate::files::now_ms;
use crate::live::Live;
use crate::AppState;

/// How this replica takes part in shared state.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's name, unique among replicas sharing a store (its runs carry it).
    pub id: String,
    /// How long a run's lease lasts unless renewed; a run whose owner stops renewing is
    /// failed this long after.
    pub lease: Duration,
    /// How often the owner renews leases and looks for cancel requests.
    pub tick: Duration,
    /// Copy running interactions' events to the store, so that other replicas can stream
    /// them live. Only worth its cost (a small write every 25 ms per run) when other
    /// replicas share the store.
    pub share_events: bool,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            id: "local".into(),
            lease: Duration::from_secs(10),
            tick: Duration::from_millis(250),
            share_events: true,
        }
    }
}

/// This replica's runs.
#[derive(Debug)]
pub struct Runs {
    config: ReplicaConfig,
    limit_per_key: usize,
    local: Mutex<HashMap<String, Arc<Live>>>,
    per_key: Arc<Mutex<HashMap<String, usize>>>,
}

impl Runs {
    /// No runs yet.
    pub fn new(config: ReplicaConfig, limit_per_key: usize) -> Self {
        Runs {
            config,
            limit_per_key,
            local: Mutex::default(),
            per_key: Arc::default(),
        }
    }

    /// This replica's name.
    pub fn owner(&self) -> &str {
        &self.config.id
    }

    /// The settings.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Where a lease taken or renewed now ends.
    pub fn lease_until_ms(&self) -> i64 {
        now_ms() + self.config.lease.as_millis() as i64
    }

    /// A place among the key's running interactions; 429 past the limit.
    ///
    /// # Errors
    /// [`ApiError::overloaded`] when the key already runs its limit.
    pub fn slot(&self, tenant: &str) -> Result<KeySlot, ApiError> {
        let mut t = self.per_key.lock().expect("poisoned");
        let n = t.entry(tenant.to_owned()).or_insert(0);
        if self.limit_per_key > 0 && *n >= self.limit_per_key {
            let limit = self.limit_per_key;
            return Err(ApiError::overloaded(format!(
                "this API key already has {limit} interactions running; wait for one to finish"
            )));
        }
        *n += 1;
        Ok(KeySlot {
            table: self.per_key.clone(),
            tenant: tenant.to_owned(),
        })
    }

    /// Hold a run (stored, so it has an id).
    pub fn register(&self, id: &str, live: Arc<Live>) {
        self.local
            .lock()
            .expect("poisoned")
            .insert(id.to_owned(), live);
    }

    /// Let a run go (it ended and its end is stored).
    pub fn remove(&self, id: &str) {
        self.local.lock().expect("poisoned").remove(id);
    }

    /// A run this replica holds.
    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.local.lock().expect("poisoned").get(id).cloned()
    }

    /// Stop a run if this replica holds it; whether it did.
    pub fn cancel(&self, id: &str) -> bool {
        match self.get(id) {
            Some(live) => {
                live.cancel.notify_one();
                true
            }
            None => false,
        }
    }

    /// How many runs this replica holds.
    pub fn len(&self) -> usize {
        self.local.lock().expect("poisoned").len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of the runs it holds.
    pub fn ids(&self) -> Vec<String> {
        self.local
            .lock()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Which of the runs held before a renewal (`held`) must stop, given what the renewal
    /// returned (`stored`): those some replica asked to cancel, and those the store no longer
    /// has running under this owner (deleted, or failed after the lease was lost). The
    /// tenants of deleted runs come back too, for their KV state to go.
    pub fn to_stop(held: &[String], stored: &[RunState]) -> Vec<String> {
        let running: HashMap<&str, &RunState> = stored.iter().map(|r| (r.id.as_str(), r)).collect();
        held.iter()
            .filter(|id| running.get(id.as_str()).is_none_or(|r| r.cancel_requested))
            .cloned()
            .collect()
    }
}

/// A running interaction's place in its key's count; given back when dropped.
#[derive(Debug)]
pub struct KeySlot {
    table: Arc<Mutex<HashMap<String, usize>>>,
    tenant: String,
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().expect("poisoned");
        if let Some(n) = t.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.tenant);
            }
        }
    }
}

/// When the maintenance loop does what, counted in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Look for runs whose owner died every this many ticks.
    pub sweep_every: u64,
    /// Look for tenants to forget every this many ticks.
    pub forget_every: u64,
}

impl Schedule {
    /// Sweep about four times per lease (so a dead owner's run fails within 1.25 leases),
    /// and read forget notes about every half second.
    pub fn new(config: &ReplicaConfig) -> Self {
        let tick = config.tick.as_millis().max(1) as u64;
        let lease = config.lease.as_millis() as u64;
        Schedule {
            sweep_every: (lease / 4 / tick).max(1),
            forget_every: (500 / tick).max(1),
        }
    }
}

/// Whether this replica may fail other replicas' runs whose leases expired. While the store
/// is down nobody can renew, so every lease may run out during an outage without its owner
/// having died: after the store comes back, owners get a whole lease to renew before any
/// sweep, and only a run still expired then is failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// Since when (in ms) every store call has succeeded; `None` after a failure.
    up_since_ms: Option<i64>,
}

impl StoreHealth {
    /// A store call succeeded at `now_ms`.
    pub fn ok(&mut self, now_ms: i64) {
        self.up_since_ms.get_or_insert(now_ms);
    }

    /// A store call failed.
    pub fn failed(&mut self) {
        self.up_since_ms = None;
    }

    /// Whether expired leases may be swept at `now_ms`: the store has answered for a whole
    /// `lease` (a fresh replica waits one lease too, as its peers may just have come back).
    pub fn may_sweep(&self, now_ms: i64, lease: Duration) -> bool {
        self.up_since_ms
            .is_some_and(|t| now_ms - t >= lease.as_millis() as i64)
    }
}

/// The error a run gets when its owner stopped renewing its lease.
pub const OWNER_GONE: &str =
    "the replica running this interaction stopped before it finished (its lease expired)";

/// The background loop of a replica: renew, stop what was cancelled elsewhere, fail dead
/// owners' runs, forget deleted tenants' KV state. Runs until the process ends; store
/// failures are logged and retried on the next tick.
pub async fn maintain(st: AppState) {
    let runs = st.runs.clone();
    let schedule = Schedule::new(runs.config());
    let mut ticker = tokio::time::interval(runs.config().tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut forgets_seen: Option<i64> = None;
    let mut stopped: HashSet<String> = HashSet::new();
    let mut health = StoreHealth::default();
    for n in 0u64.. {
        ticker.tick().await;
        // Renew first, so that this replica's own sweep never finds its live runs expired.
        let mut renewed = true;
        let held = runs.ids();
        stopped.retain(|id| held.contains(id));
        if !held.is_empty() {
            match st.store.renew(runs.owner(), runs.lease_until_ms()).await {
                Ok(stored) => {
                    health.ok(now_ms());
                    for id in Runs::to_stop(&held, &stored) {
                        if stopped.insert(id.clone()) {
                            tracing::info!(%id, "stopping a run cancelled or deleted elsewhere");
                            runs.cancel(&id);
                        }
                    }
                }
                Err(e) => {
                    renewed = false;
                    health.failed();
                    tracing::warn!("cannot renew leases: {e}");
                }
            }
        }
        let sweep = renewed && n % schedule.sweep_every == 0;
        if sweep && health.may_sweep(now_ms(), runs.config().lease) {
            match st.store.fail_expired(now_ms(), OWNER_GONE).await {
                Ok(0) => {}
                Ok(k) => tracing::warn!("failed {k} interactions whose replica stopped"),
                Err(e) => {
                    health.failed();
                    tracing::debug!("cannot look for expired leases: {e}");
                }
            }
        }
        if n % schedule.forget_every == 0 {
            match st.store.forgets_after(forgets_seen).await {
                Ok(notes) => {
                    health.ok(now_ms());
                    for (seq, tenant) in notes {
                        if forgets_seen.is_some() {
                            st.engine.forget(&tenant).await;
                        }
                        forgets_seen = Some(seq);
                    }
                }
                Err(e) => {
                    health.failed();
                    tracing::debug!("cannot read forget notes: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, cancel: bool) -> RunState {
        RunState {
            id: id.into(),
            tenant: "t".into(),
            cancel_requested: cancel,
        }
    }

    #[test]
    fn runs_cancelled_deleted_or_taken_elsewhere_stop() {
        let held = ["a", "b", "c"].map(String::from).to_vec();
        let stored = [state("a", false), state("b", true), state("x", false)];
        // b: cancel requested; c: gone from the store (deleted, or failed after a lost
        // lease); x: not held here (it just finished locally), nothing to do.
        assert_eq!(Runs::to_stop(&held, &stored), ["b", "c"]);
        assert!(Runs::to_stop(&[], &stored).is_empty());
    }

    #[test]
    fn expired_leases_are_swept_only_a_lease_after_the_store_came_back() {
        let lease = Duration::from_secs(5);
        let mut h = StoreHealth::default();
        assert!(!h.may_sweep(0, lease), "nothing known yet");
        h.ok(1_000);
        assert!(!h.may_sweep(5_999, lease));
        assert!(h.may_sweep(6_000, lease));
        h.ok(7_000); // still up since 1 000
        assert!(h.may_sweep(7_000, lease));
        // An outage: owners could not renew; they get a whole lease once it is over.
        h.failed();
        assert!(!h.may_sweep(20_000, lease));
        h.ok(20_000);
        assert!(!h.may_sweep(24_999, lease));
        assert!(h.may_sweep(25_000, lease));
    }

    #[test]
    fn the_schedule_sweeps_a_few_times_per_lease() {
        let s = Schedule::new(&ReplicaConfig::default());
        assert_eq!(s.sweep_every, 10); // 10 s lease, 250 ms tick: every 2.5 s
        assert_eq!(s.forget_every, 2);
        let tiny = Schedule::new(&ReplicaConfig {
            lease: Duration::from_millis(100),
            tick: Duration::from_secs(1),
            ..ReplicaConfig::default()
        });
        assert_eq!((tiny.sweep_every, tiny.forget_every), (1, 1));
    }

    #[test]
    fn key_slots_count_and_give_back() {
        let runs = Runs::new(ReplicaConfig::default(), 2);
        let a = runs.slot("k").unwrap();
        let _b = runs.slot("k").unwrap();
        assert_eq!(runs.slot("k").unwrap_err().status.as_u16(), 429);
        let _other = runs.slot("other").unwrap();
        drop(a);
        assert!(runs.slot("k").is_ok());
    }
}
