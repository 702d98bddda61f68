//! Which upstream a request goes to: plain decisions over plain state, unit-tested without a
//! network.
//!
//! * **Prefix affinity.** Each upstream remembers, as hashes of whole blocks of
//!   [`BLOCK`] tokens chained from the start, the prompts it was sent (bounded, oldest
//!   forgotten first). A request goes where the longest run of its leading blocks was sent
//!   before: the next turn of a conversation resends the last turn's prompt as its prefix, so
//!   it lands where that prefix is cached. The cache scope (the tenant) is hashed in, so two
//!   tenants' identical prompts are not matched to each other.
//! * **Least loaded** for everything else, and when the affine upstream already runs
//!   [`OVERLOAD`] times its slots.
//! * **Health.** An upstream that fails is out until a probe finds it well; probes back off
//!   from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]. Its remembered prefixes are dropped (a
//!   restarted engine has an empty cache).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// Tokens per hashed block.
pub const BLOCK: usize = 32;
/// Block hashes remembered per upstream.
pub const INDEX_CAPACITY: usize = 1 << 16;
/// An affine upstream running this many times its slots is passed over for the least loaded.
pub const OVERLOAD: u32 = 2;
/// First wait before a failed upstream is probed.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between probes of a failed upstream.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Chained hashes of `tokens`' whole blocks, salted with `scope`.
pub fn block_hashes(scope: &str, tokens: &[u32]) -> Vec<u64> {
    let mut h = DefaultHasher::new();
    scope.hash(&mut h);
    let mut chain = h.finish();
    tokens
        .chunks_exact(BLOCK)
        .map(|block| {
            let mut h = DefaultHasher::new();
            chain.hash(&mut h);
            block.hash(&mut h);
            chain = h.finish();
            chain
        })
        .collect()
}

#[derive(Debug, Default)]
struct PrefixIndex {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl PrefixIndex {
    fn matched(&self, hashes: &[u64]) -> usize {
        hashes.iter().take_while(|h| self.set.contains(h)).count()
    }

    fn insert(&mut self, hashes: &[u64]) {
        for &h in hashes {
            if self.set.insert(h) {
                self.order.push_back(h);
            }
        }
        while self.order.len() > INDEX_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn clear(&mut self) {
        self.set.clear();
        self.order.clear();
    }
}

/// One upstream's state as the router sees it.
#[derive(Debug)]
pub struct Upstream {
    /// Serving (it answered its last request or probe).
    pub healthy: bool,
    /// Requests it is running for us.
    pub in_flight: u32,
    /// Sequences it runs at once.
    pub slots: u32,
    /// Consecutive failures (sets the probe backoff).
    pub failures: u32,
    /// When it may be probed again (failed upstreams).
    pub probe_at: Option<Instant>,
    /// What went wrong last.
    pub last_error: Option<String>,
    index: PrefixIndex,
}

/// The routing state of one model's upstreams.
#[derive(Debug)]
pub struct Router {
    upstreams: Vec<Upstream>,
    /// Breaks ties between equally loaded upstreams, so new conversations spread.
    turn: usize,
}

impl Router {
    /// `n` upstreams of `slots` sequences each, not yet known to be healthy (the first probe
    /// is due at once).
    pub fn new(n: usize, slots: u32, now: Instant) -> Self {
        Router {
            upstreams: (0..n)
                .map(|_| Upstream {
                    healthy: false,
                    in_flight: 0,
                    slots: slots.max(1),
                    failures: 0,
                    probe_at: Some(now),
                    last_error: None,
                    index: PrefixIndex::default(),
                })
                .collect(),
            turn: 0,
        }
    }

    /// The upstreams' states, by index.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// Whether any upstream is serving.
    pub fn any_healthy(&self) -> bool {
        self.upstreams.iter().any(|u| u.healthy)
    }

    /// Requests in flight and the sequences the healthy upstreams run at once.
    pub fn load(&self) -> (u32, u32) {
        let healthy = self.upstreams.iter().filter(|u| u.healthy);
        (
            self.upstreams.iter().map(|u| u.in_flight).sum(),
            healthy.map(|u| u.slots).sum(),
        )
    }

    fn busy(u: &Upstream) -> f64 {
        f64::from(u.in_flight) / f64::from(u.slots)
    }

    /// Healthy upstreams for a prompt with these block hashes, best first: the one holding
    /// the longest prefix (unless overloaded), then by load. Empty when none is healthy.
    pub fn pick(&mut self, hashes: &[u64]) -> Vec<usize> {
        let mut healthy: Vec<usize> = (0..self.upstreams.len())
            .filter(|&i| self.upstreams[i].healthy)
            .collect();
        if healthy.is_empty() {
            return healthy;
        }
        let n = self.upstreams.len();
        let turn = self.turn;
        self.turn = self.turn.wrapping_add(1);
        // By load, ties rotating.
        healthy.sort_by(|&a, &b| {
            let (ua, ub) = (&self.upstreams[a], &self.upstreams[b]);
            Self::busy(ua)
                .total_cmp(&Self::busy(ub))
                .then(((a + n - turn % n) % n).cmp(&((b + n - turn % n) % n)))
        });
        let affine = healthy
            .iter()
            .map(|&i| (i, self.upstreams[i].index.matched(hashes)))
            .filter(|&(i, m)| {
                let u = &self.upstreams[i];
                m > 0 && u.in_flight < u.slots.saturating_mul(OVERLOAD)
            })
            // The longest match; among equal ones the least loaded (first in `healthy`).
            .fold(None::<(usize, usize)>, |best, (i, m)| match best {
                Some((_, bm)) if bm >= m => best,
                _ => Some((i, m)),
            });
        if let Some((i, _)) = affine {
            healthy.retain(|&j| j != i);
            healthy.insert(0, i);
        }
        healthy
    }

    /// A request went to upstream `i`: count it and remember its prompt there.
    pub fn started(&mut self, i: usize, hashes: &[u64]) {
        let u = &mut self.upstreams[i];
        u.in_flight += 1;
        u.index.insert(hashes);
    }

    /// A request to upstream `i` ended (however it ended).
    pub fn ended(&mut self, i: usize) {
        let u = &mut self.upstreams[i];
        u.in_flight = u.in_flight.saturating_sub(1);
    }

    /// Upstream `i` failed: out until a probe finds it well, at a backoff that doubles with
    /// each failure in a row.
    pub fn failed(&mut self, i: usize, error: String, now: Instant) {
        let u = &mut self.upstreams[i];
        let backoff = FIRST_BACKOFF
            .saturating_mul(1u32 << u.failures.min(10))
            .min(MAX_BACKOFF);
        u.healthy = false;
        u.failures = u.failures.saturating_add(1);
        u.probe_at = Some(now + backoff);
        u.last_error = Some(error);
        u.index.clear();
    }

    /// A probe found upstream `i` serving, with `slots` sequences when it says.
    pub fn recovered(&mut self, i: usize, slots: Option<u32>) {
        let u = &mut self.upstreams[i];
        if !u.healthy {
            u.index.clear();
        }
        u.healthy = true;
        u.failures = 0;
        u.probe_at = None;
        u.last_error = None;
        if let Some(s) = slots {
            u.slots = s.max(1);
        }
    }

    /// Failed upstreams whose probe is due.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.upstreams.len())
            .filter(|&i| {
                let u = &self.upstreams[i];
                !u.healthy && u.probe_at.is_some_and(|t| t <= now)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(seed: u32, n: usize) -> Vec<u32> {
        (0..n as u32).map(|i| seed * 100_000 + i).collect()
    }

    fn healthy(n: usize) -> Router {
        let mut r = Router::new(n, 2, Instant::now());
        for i in 0..n {
            r.recovered(i, None);
        }
        r
    }

    #[test]
    fn hashes_cover_whole_blocks_and_depend_on_scope_and_prefix() {
        let t = tokens(1, BLOCK * 3 + 5);
        let a = block_hashes("k", &t);
        assert_eq!(a.len(), 3);
        assert_ne!(a, block_hashes("other", &t));
        // A longer prompt with the same start shares the leading hashes.
        let mut longer = t.clone();
        longer.extend(tokens(2, BLOCK * 2));
        assert_eq!(block_hashes("k", &longer)[..3], a[..]);
        // A different first block changes every hash after it.
        let mut changed = t.clone();
        changed[0] += 1;
        let c = block_hashes("k", &changed);
        assert!(a.iter().zip(&c).all(|(x, y)| x != y));
    }

    #[test]
    fn a_conversation_stays_on_its_upstream_and_new_ones_spread() {
        let mut r = healthy(2);
        let mut home = Vec::new();
        for conv in 0..4 {
            let h = block_hashes("k", &tokens(conv, BLOCK * 4));
            let i = r.pick(&h)[0];
            r.started(i, &h);
            r.ended(i);
            home.push(i);
        }
        // Four idle new conversations alternate between the two upstreams.
        assert_eq!(home.iter().filter(|&&i| i == 0).count(), 2, "{home:?}");
        for turn in 1..6 {
            for (conv, &i) in home.iter().enumerate() {
                // The next turn: the previous prompt plus more.
                let mut t = tokens(conv as u32, BLOCK * 4);
                t.extend(tokens(50 + turn, BLOCK * turn as usize));
                let h = block_hashes("k", &t);
                let order = r.pick(&h);
                assert_eq!(order[0], i, "conversation {conv} turn {turn}");
                assert_eq!(order.len(), 2);
                r.started(order[0], &h);
                r.ended(order[0]);
            }
        }
    }

    #[test]
    fn new_requests_go_to_the_least_loaded() {
        let mut r = healthy(3);
        r.started(0, &[]);
        r.started(0, &[]);
        r.started(2, &[]);
        assert_eq!(r.pick(&block_hashes("k", &tokens(9, BLOCK)))[0], 1);
        assert_eq!(r.load(), (3, 6));
    }

    #[test]
    fn an_overloaded_affine_upstream_is_passed_over() {
        let mut r = healthy(2);
        let h = block_hashes("k", &tokens(1, BLOCK * 2));
        r.started(0, &h);
        assert_eq!(r.pick(&h)[0], 0);
        for _ in 0..3 {
            r.started(0, &[]);
        }
        // 4 in flight on 2 slots: the other takes it.
        assert_eq!(r.pick(&h), vec![1, 0]);
    }

    #[test]
    fn failed_upstreams_are_left_out_and_probed_with_backoff() {
        let t0 = Instant::now();
        let mut r = healthy(2);
        let h = block_hashes("k", &tokens(1, BLOCK * 2));
        r.started(0, &h);
        r.ended(0);
        r.failed(0, "connection refused".into(), t0);
        assert_eq!(r.pick(&h), vec![1]);
        assert!(r.due(t0).is_empty());
        assert_eq!(r.due(t0 + FIRST_BACKOFF), vec![0]);
        // Failing its probe doubles the wait.
        r.failed(0, "still down".into(), t0 + FIRST_BACKOFF);
        assert!(r.due(t0 + FIRST_BACKOFF * 2).is_empty());
        assert_eq!(r.due(t0 + FIRST_BACKOFF * 3), vec![0]);
        for _ in 0..20 {
            r.failed(0, "down".into(), t0);
        }
        assert_eq!(r.upstreams()[0].probe_at, Some(t0 + MAX_BACKOFF));
        r.failed(1, "down".into(), t0);
        assert!(r.pick(&h).is_empty());
        assert!(!r.any_healthy());
        // Back: its old prefixes are forgotten (a restarted engine's cache is empty).
        r.recovered(0, Some(4));
        assert_eq!(r.upstreams()[0].slots, 4);
        assert_eq!(r.upstreams()[0].index.matched(&h), 0);
        assert_eq!(r.pick(&h), vec![0]);
    }

    #[test]
    fn the_index_forgets_its_oldest_blocks_past_capacity() {
        let mut idx = PrefixIndex::default();
        let all: Vec<u64> = (0..INDEX_CAPACITY as u64 + 10).collect();
        idx.insert(&all);
        assert_eq!(idx.set.len(), INDEX_CAPACITY);
        assert_eq!(idx.matched(&all), 0);
        assert_eq!(idx.matched(&all[10..]), INDEX_CAPACITY);
    }
}
