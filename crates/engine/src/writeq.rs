//! The queue between the engine thread and the thread that writes KV states to disk,
//! bounded by bytes rather than by a count of states.
//!
//! The writer runs only on a core the engine leaves idle, so while conversations come back
//! to back it may not run for a while. States then wait here, in memory. A new state
//! replaces the queued ones it covers (the same scope, a prefix of its tokens: an earlier
//! turn of its conversation), which would only be superseded on disk; past the byte budget
//! the oldest goes. One state is always accepted, however large, so a model with large
//! states still spills. Closing the queue lets the writer finish everything queued (a
//! graceful shutdown puts every state on disk) and then stop. [`WriteQueue::behind`] says
//! when the writer has fallen too far behind to keep waiting for idle cores.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the queue needs to know of a state.
pub trait Queued {
    /// Bytes the state holds in memory.
    fn bytes(&self) -> usize;
    /// Whether this (newer) state makes `older` worth less: it holds all of it.
    fn covers(&self, older: &Self) -> bool;
}

struct Inner<T> {
    /// Each state with the time it was queued.
    jobs: VecDeque<(Instant, T)>,
    bytes: usize,
    closed: bool,
}

/// A byte-bounded, closable queue of states for one writer thread.
pub struct WriteQueue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    budget: usize,
}

impl<T: Queued> WriteQueue<T> {
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                jobs: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // A panic elsewhere while holding the lock leaves the queue itself consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a state; returns how many queued states were dropped past the budget (the new
    /// one counts, as dropped, when the queue is closed). States it replaces are not counted.
    pub fn push(&self, job: T) -> usize {
        self.push_at(Instant::now(), job)
    }

    fn push_at(&self, now: Instant, job: T) -> usize {
        let mut q = self.lock();
        if q.closed {
            return 1;
        }
        let need = job.bytes();
        let mut replaced = 0;
        q.jobs.retain(|(_, old)| {
            let keep = !job.covers(old);
            if !keep {
                replaced += old.bytes();
            }
            keep
        });
        q.bytes -= replaced;
        let mut dropped = 0;
        while !q.jobs.is_empty() && q.bytes + need > self.budget {
            if let Some((_, old)) = q.jobs.pop_front() {
                q.bytes -= old.bytes();
                dropped += 1;
            }
        }
        q.bytes += need;
        q.jobs.push_back((now, job));
        drop(q);
        self.ready.notify_one();
        dropped
    }

    /// The next state to write, oldest first; waits for one. `None` once the queue is
    /// closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut q = self.lock();
        loop {
            if let Some((_, job)) = q.jobs.pop_front() {
                q.bytes -= job.bytes();
                return Some(job);
            }
            if q.closed {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// No more states: the writer finishes what is queued, then stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Whether the writer is behind: the oldest state has waited longer than `max_wait`, or
    /// the states waiting hold more than half the budget (so the next ones would soon be
    /// dropped).
    pub fn behind(&self, now: Instant, max_wait: Duration) -> bool {
        let q = self.lock();
        q.bytes > self.budget / 2
            || q.jobs
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > max_wait)
    }

    /// States and bytes waiting.
    pub fn pending(&self) -> (usize, usize) {
        let q = self.lock();
        (q.jobs.len(), q.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Debug, PartialEq)]
    struct S {
        scope: &'static str,
        tokens: Vec<i32>,
        size: usize,
    }

    fn s(scope: &'static str, n: i32, size: usize) -> S {
        S {
            scope,
            tokens: (0..n).collect(),
            size,
        }
    }

    impl Queued for S {
        fn bytes(&self) -> usize {
            self.size
        }
        fn covers(&self, older: &Self) -> bool {
            self.scope == older.scope && self.tokens.starts_with(&older.tokens)
        }
    }

    fn drain(q: &WriteQueue<S>) -> Vec<(&'static str, usize)> {
        q.close();
        std::iter::from_fn(|| q.pop())
            .map(|j| (j.scope, j.tokens.len()))
            .collect()
    }

    #[test]
    fn many_states_wait_while_they_fit_in_the_budget() {
        // Ten conversations: a count-bounded queue of two would have skipped eight of them.
        let q = WriteQueue::new(100);
        let mut dropped = 0;
        for conv in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] {
            dropped += q.push(s(conv, 10, 10));
        }
        assert_eq!(dropped, 0);
        assert_eq!(q.pending(), (10, 100));
        assert_eq!(drain(&q).len(), 10);
    }

    #[test]
    fn a_later_turn_replaces_the_earlier_ones_still_queued() {
        let q = WriteQueue::new(1000);
        q.push(s("a", 10, 10));
        q.push(s("b", 10, 10));
        q.push(s("a", 20, 20));
        // Another scope, or a branch that does not extend a's state, replaces nothing.
        q.push(s("z", 30, 30));
        let mut branch = s("b", 10, 10);
        branch.tokens[9] = 99;
        q.push(branch);
        assert_eq!(q.push(s("a", 30, 30)), 0, "replacing is not dropping");
        assert_eq!(q.pending(), (4, 80));
        assert_eq!(drain(&q), vec![("b", 10), ("z", 30), ("b", 10), ("a", 30)]);
    }

    #[test]
    fn past_the_budget_the_oldest_goes() {
        let q = WriteQueue::new(30);
        for conv in ["a", "b", "c"] {
            q.push(s(conv, 10, 10));
        }
        assert_eq!(q.push(s("z", 10, 15)), 2);
        assert_eq!(q.pending(), (2, 25));
        assert_eq!(drain(&q), vec![("c", 10), ("z", 10)]);
    }

    #[test]
    fn the_writer_is_behind_when_a_state_waited_too_long_or_half_the_budget_is_used() {
        let wait = Duration::from_secs(10);
        let t0 = Instant::now();
        let q = WriteQueue::new(100);
        assert!(!q.behind(t0, wait), "empty");
        q.push_at(t0, s("a", 1, 20));
        q.push_at(t0 + Duration::from_secs(8), s("b", 1, 20));
        assert!(!q.behind(t0 + Duration::from_secs(9), wait));
        assert!(
            q.behind(t0 + Duration::from_secs(11), wait),
            "a waited 11 s"
        );
        // Once a is written, b (queued at 8 s) is the oldest.
        assert_eq!(q.pop().map(|j| j.scope), Some("a"));
        assert!(!q.behind(t0 + Duration::from_secs(11), wait));
        // More than half the budget waiting.
        q.push_at(t0 + Duration::from_secs(11), s("c", 1, 31));
        assert!(q.behind(t0 + Duration::from_secs(11), wait));
    }

    #[test]
    fn one_state_larger_than_the_budget_is_still_written() {
        let q = WriteQueue::new(10);
        q.push(s("a", 5, 4));
        assert_eq!(q.push(s("b", 5, 50)), 1);
        assert_eq!(q.pending(), (1, 50));
        assert_eq!(drain(&q), vec![("b", 5)]);
    }

    #[test]
    fn closing_lets_the_writer_finish_what_is_queued_and_refuses_more() {
        let q = Arc::new(WriteQueue::<S>::new(1000));
        for n in 1..=3 {
            q.push(s(["a", "b", "c"][n - 1], 5, 1));
        }
        let writer = {
            let q = q.clone();
            std::thread::spawn(move || std::iter::from_fn(|| q.pop()).count())
        };
        q.close();
        assert_eq!(writer.join().unwrap(), 3);
        assert_eq!(q.push(s("a", 9, 1)), 1);
        assert_eq!(q.pending(), (0, 0));
    }

    #[test]
    fn the_writer_waits_for_a_state_rather_than_spinning_or_stopping() {
        let q = Arc::new(WriteQueue::<S>::new(1000));
        let writer = {
            let q = q.clone();
            std::thread::spawn(move || q.pop().map(|j| j.tokens.len()))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!writer.is_finished(), "pop returned with nothing queued");
        q.push(s("a", 7, 1));
        assert_eq!(writer.join().unwrap(), Some(7));
    }
}
