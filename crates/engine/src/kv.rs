//! The KV manager: which llama.cpp sequence slot holds which tokens.
//!
//! A finished sequence's KV stays resident, keyed by the tokens it holds. A new prompt takes
//! the slot whose tokens share the longest common prefix with it and prefills only the rest;
//! a slot whose tokens diverge is truncated to the common prefix, never reused past it. When
//! no slot is free, the least recently used resident one is evicted. Plain bookkeeping: the
//! worker applies the decisions to the llama.cpp context.
//!
//! Every state belongs to a scope (the API key's hash): a prompt only ever reuses states of
//! its own scope, so one key cannot learn from cache timing what another key sent.

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Free,
    /// In use by a live sequence.
    Active,
    /// Finished; its KV holds exactly `tokens` at positions `0..tokens.len()`.
    Resident {
        scope: String,
        tokens: Vec<i32>,
        last_used: u64,
    },
}

/// The decision for one new prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Slot (llama.cpp `seq_id`) to use.
    pub slot: i32,
    /// Prompt tokens already in that slot's KV (positions `0..reused`); the worker removes
    /// everything from `reused` on and prefills the rest.
    pub reused: usize,
    /// Whether a resident sequence was evicted (its KV must be cleared entirely; `reused` is 0).
    pub evicted: bool,
}

/// Slot bookkeeping for one context.
#[derive(Debug)]
pub struct KvManager {
    slots: Vec<Slot>,
    clock: u64,
    min_reuse: usize,
}

fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl KvManager {
    /// `n` slots. A resident prefix shorter than `min_reuse` tokens is not worth keeping a
    /// slot busy for, so such slots count as free.
    pub fn new(n: usize, min_reuse: usize) -> Self {
        KvManager {
            slots: vec![Slot::Free; n],
            clock: 0,
            min_reuse: min_reuse.max(1),
        }
    }

    /// Pick a slot for `prompt`. `None` when every slot is active.
    ///
    /// At least one prompt token is always left to prefill, since sampling needs the logits of
    /// the last prompt token.
    pub fn acquire(&mut self, scope: &str, prompt: &[i32]) -> Option<Lease> {
        self.clock += 1;
        if let Some((i, reused)) = self.best(scope, prompt) {
            self.slots[i] = Slot::Active;
            return Some(Lease {
                slot: i as i32,
                reused,
                evicted: false,
            });
        }
        if let Some(i) = self.slots.iter().position(|s| *s == Slot::Free) {
            self.slots[i] = Slot::Active;
            return Some(Lease {
                slot: i as i32,
                reused: 0,
                evicted: false,
            });
        }
        let lru = self.lru()?;
        self.slots[lru] = Slot::Active;
        Some(Lease {
            slot: lru as i32,
            reused: 0,
            evicted: true,
        })
    }

    /// The resident slot of `scope` sharing the longest useful prefix with `prompt`, and how
    /// many tokens of it [`KvManager::acquire`] would reuse (ties: most recently used).
    pub fn best(&self, scope: &str, prompt: &[i32]) -> Option<(usize, usize)> {
        let limit = prompt.len().saturating_sub(1);
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Resident {
                    scope: owner,
                    tokens,
                    last_used,
                } if owner == scope => {
                    Some((i, common_prefix(tokens, prompt).min(limit), *last_used))
                }
                _ => None,
            })
            .filter(|&(_, n, _)| n >= self.min_reuse)
            .max_by_key(|&(_, n, used)| (n, used))
            .map(|(i, n, _)| (i, n))
    }

    /// Take an empty slot to restore a spilled state into: a free one, else the least
    /// recently used resident one (returned with `evicted`). `None` when every slot is active.
    pub fn take_empty(&mut self) -> Option<(i32, bool)> {
        if let Some(i) = self.slots.iter().position(|s| *s == Slot::Free) {
            self.slots[i] = Slot::Active;
            return Some((i as i32, false));
        }
        let lru = self.lru()?;
        self.slots[lru] = Slot::Active;
        Some((lru as i32, true))
    }

    /// A live sequence ended normally (or a state was restored): its KV holds `tokens` and
    /// stays resident for `scope`.
    pub fn finish(&mut self, slot: i32, scope: &str, tokens: Vec<i32>) {
        self.clock += 1;
        self.slots[slot as usize] = if tokens.is_empty() {
            Slot::Free
        } else {
            Slot::Resident {
                scope: scope.to_owned(),
                tokens,
                last_used: self.clock,
            }
        };
    }

    /// A live sequence ended without a usable state (cancelled, failed): its KV is cleared.
    pub fn free(&mut self, slot: i32) {
        self.slots[slot as usize] = Slot::Free;
    }

    /// The least recently used resident slot.
    fn lru(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Resident { last_used, .. } => Some((i, *last_used)),
                _ => None,
            })
            .min_by_key(|&(_, used)| used)
            .map(|(i, _)| i)
    }

    /// Slots held by live sequences.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| **s == Slot::Active).count()
    }

    /// Slots holding finished sequences.
    pub fn resident(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Resident { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_longest_prefix_and_leaves_one_token() {
        let mut kv = KvManager::new(3, 1);
        let a = kv.acquire("a", &[1, 2, 3]).unwrap();
        assert_eq!(
            a,
            Lease {
                slot: 0,
                reused: 0,
                evicted: false
            }
        );
        kv.finish(0, "a", vec![1, 2, 3, 4, 5]);
        let b = kv.acquire("a", &[9, 9]).unwrap();
        assert_eq!(b.slot, 1, "a prompt sharing nothing takes a free slot");
        kv.finish(1, "a", vec![9, 9, 7]);
        // continuation of conversation in slot 0
        let c = kv.acquire("a", &[1, 2, 3, 4, 5, 6, 7]).unwrap();
        assert_eq!(
            c,
            Lease {
                slot: 0,
                reused: 5,
                evicted: false
            }
        );
        kv.finish(0, "a", vec![1, 2, 3, 4, 5, 6, 7, 8]);
        // identical prompt: everything but the last token is reused
        let d = kv.acquire("a", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(
            d,
            Lease {
                slot: 0,
                reused: 7,
                evicted: false
            }
        );
    }

    #[test]
    fn diverging_tokens_are_never_reused_past_the_divergence() {
        let mut kv = KvManager::new(1, 1);
        kv.acquire("a", &[1, 2, 3]).unwrap();
        kv.finish(0, "a", vec![1, 2, 3, 4, 5, 6]);
        // an earlier turn was rewritten (token 3 differs)
        let l = kv.acquire("a", &[1, 2, 30, 4, 5, 6, 7]).unwrap();
        assert_eq!(l.reused, 2);
    }

    #[test]
    fn evicts_least_recently_used_when_full() {
        let mut kv = KvManager::new(2, 2);
        kv.acquire("a", &[1, 1]).unwrap();
        kv.acquire("a", &[2, 2]).unwrap();
        kv.finish(0, "a", vec![1, 1, 1]);
        kv.finish(1, "a", vec![2, 2, 2]);
        // touch slot 0 again so slot 1 is the LRU
        let l = kv.acquire("a", &[1, 1, 1, 1]).unwrap();
        assert_eq!((l.slot, l.reused), (0, 3));
        kv.finish(0, "a", vec![1, 1, 1, 1, 5]);
        let l = kv.acquire("a", &[7, 7, 7]).unwrap();
        assert_eq!(
            l,
            Lease {
                slot: 1,
                reused: 0,
                evicted: true
            }
        );
        assert_eq!(kv.resident(), 1);
        assert_eq!(kv.active(), 1);
    }

    #[test]
    fn short_prefixes_do_not_count_and_active_slots_are_never_taken() {
        let mut kv = KvManager::new(2, 4);
        kv.acquire("a", &[1, 2, 3, 4, 5]).unwrap();
        kv.finish(0, "a", vec![1, 2, 3, 4, 5]);
        // shares only 2 tokens (< min_reuse 4): takes the free slot instead
        let l = kv.acquire("a", &[1, 2, 9, 9, 9]).unwrap();
        assert_eq!((l.slot, l.reused), (1, 0));
        let l = kv.acquire("a", &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!((l.slot, l.reused), (0, 5));
        assert!(kv.acquire("a", &[1]).is_none(), "both slots active");
        kv.free(1);
        assert_eq!(kv.acquire("a", &[3]).unwrap().slot, 1);
    }
}
