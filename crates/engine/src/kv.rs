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

/// Prompt tokens always prefilled, never taken from a stored state: the last one for its
/// logits, and the one before it so that the last is never computed alone. llama.cpp's CPU
/// kernels take another path for a one-token matrix product than for a batch (its tinyBLAS
/// only for two rows or more), so without flash attention a token computed alone rounds
/// differently from the same token computed in any chunk of two or more, while any two
/// such chunkings agree bit for bit (`examples/kv_probe.rs`, cases B, E and F).
pub const PREFILL_TAIL: usize = 2;

/// How many leading tokens `a` and `b` share.
pub(crate) fn common_prefix(a: &[i32], b: &[i32]) -> usize {
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

    /// Shortest prefix, in tokens, worth reusing.
    pub fn min_reuse(&self) -> usize {
        self.min_reuse
    }

    /// Pick a slot for `prompt`. `None` when every slot is active.
    ///
    /// At least [`PREFILL_TAIL`] prompt tokens are always left to prefill. Another conversation's state is not cut short just because it
    /// shares a few tokens (a system prompt, say) with this prompt: in order of preference,
    /// 1. the longest resident state the prompt continues (all of it is reused);
    /// 2. the longest one that keeps at least half its tokens (an earlier turn was rewritten);
    /// 3. a free slot;
    /// 4. the least recently used state, reusing what it shares with the prompt.
    pub fn acquire(&mut self, scope: &str, prompt: &[i32]) -> Option<Lease> {
        self.clock += 1;
        let lease = self.choose(scope, prompt)?;
        self.slots[lease.slot as usize] = Slot::Active;
        Some(lease)
    }

    /// Like [`KvManager::acquire`], but keeping the slots of live sequences (`live`)
    /// contiguous: llama.cpp decodes sequences of separate KV streams in one ubatch only
    /// while their ids are consecutive, and every extra ubatch reads all the weights again.
    ///
    /// When the chosen slot would not join the live block, a slot next to the block that no
    /// live sequence holds (a free one first, else the least recently used) is taken instead;
    /// if the chosen slot had a reusable state, it is returned as the second value: copy that
    /// slot's KV into the new one (the original stays resident). When no such neighbour
    /// exists, the chosen slot is used as is.
    pub fn acquire_near(
        &mut self,
        scope: &str,
        prompt: &[i32],
        live: &[i32],
    ) -> Option<(Lease, Option<i32>)> {
        self.clock += 1;
        let lease = self.choose(scope, prompt)?;
        let joins = |slot: i32| {
            let mut all: Vec<i32> = live.iter().copied().chain([slot]).collect();
            all.sort_unstable();
            all.windows(2).all(|w| w[1] == w[0] + 1)
        };
        let target = if live.is_empty() || joins(lease.slot) {
            None
        } else {
            let lo = live.iter().copied().min().unwrap_or(0);
            let hi = live.iter().copied().max().unwrap_or(0);
            [lo - 1, hi + 1]
                .into_iter()
                .filter(|&t| t >= 0 && (t as usize) < self.slots.len())
                .filter(|&t| self.slots[t as usize] != Slot::Active)
                .min_by_key(|&t| match &self.slots[t as usize] {
                    Slot::Free => 0,
                    Slot::Resident { last_used, .. } => 1 + *last_used,
                    Slot::Active => u64::MAX,
                })
        };
        let Some(t) = target else {
            self.slots[lease.slot as usize] = Slot::Active;
            return Some((lease, None));
        };
        let evicted = matches!(self.slots[t as usize], Slot::Resident { .. });
        self.slots[t as usize] = Slot::Active;
        let copy_from = (lease.reused > 0).then_some(lease.slot);
        Some((
            Lease {
                slot: t,
                reused: lease.reused,
                evicted,
            },
            copy_from,
        ))
    }

    /// What [`KvManager::acquire`] would decide, without deciding it.
    pub fn choose(&self, scope: &str, prompt: &[i32]) -> Option<Lease> {
        let limit = prompt.len().saturating_sub(PREFILL_TAIL);
        // (slot, reused, tokens held, last used) for every resident state of this scope
        let matches: Vec<(usize, usize, usize, u64)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Resident {
                    scope: owner,
                    tokens,
                    last_used,
                } if owner == scope => Some((
                    i,
                    common_prefix(tokens, prompt).min(limit),
                    tokens.len(),
                    *last_used,
                )),
                _ => None,
            })
            .filter(|&(_, n, _, _)| n >= self.min_reuse)
            .collect();
        let best = |keep: &dyn Fn(usize, usize) -> bool| {
            matches
                .iter()
                .filter(|&&(_, n, len, _)| keep(n, len))
                .max_by_key(|&&(_, n, _, used)| (n, used))
                .map(|&(i, n, _, _)| Lease {
                    slot: i as i32,
                    reused: n,
                    evicted: false,
                })
        };
        if let Some(l) = best(&|n, len| n + PREFILL_TAIL >= len) {
            return Some(l);
        }
        if let Some(l) = best(&|n, len| 2 * n >= len) {
            return Some(l);
        }
        if let Some(i) = self.slots.iter().position(|s| *s == Slot::Free) {
            return Some(Lease {
                slot: i as i32,
                reused: 0,
                evicted: false,
            });
        }
        let lru = self.lru()?;
        let reused = matches.iter().find(|m| m.0 == lru).map_or(0, |m| m.1);
        Some(Lease {
            slot: lru as i32,
            reused,
            evicted: reused == 0,
        })
    }

    /// Prompt tokens [`KvManager::acquire`] would find in memory for `prompt`.
    pub fn reusable(&self, scope: &str, prompt: &[i32]) -> usize {
        self.choose(scope, prompt).map_or(0, |l| l.reused)
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

    /// Drop every resident state of `scope`; returns their slots (now free), whose KV the
    /// caller clears.
    pub fn forget(&mut self, scope: &str) -> Vec<i32> {
        let mut freed = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if matches!(s, Slot::Resident { scope: owner, .. } if owner == scope) {
                *s = Slot::Free;
                freed.push(i as i32);
            }
        }
        freed
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
    fn reuses_the_longest_prefix_and_leaves_two_tokens() {
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
        // identical prompt: everything but the last two tokens is reused
        let d = kv.acquire("a", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(
            d,
            Lease {
                slot: 0,
                reused: 6,
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
        let l = kv.acquire("a", &[1, 1, 1, 1, 1]).unwrap();
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
        let l = kv.acquire("a", &[1, 2, 3, 4, 5, 6, 7]).unwrap();
        assert_eq!((l.slot, l.reused), (0, 5));
        assert!(kv.acquire("a", &[1]).is_none(), "both slots active");
        kv.free(1);
        assert_eq!(kv.acquire("a", &[3]).unwrap().slot, 1);
    }

    #[test]
    fn forgetting_a_scope_frees_only_its_states() {
        let mut kv = KvManager::new(3, 1);
        for (scope, toks) in [("a", vec![1, 2]), ("b", vec![3, 4]), ("a", vec![5, 6])] {
            let l = kv.acquire(scope, &toks).unwrap();
            kv.finish(l.slot, scope, toks);
        }
        let mut freed = kv.forget("a");
        freed.sort();
        assert_eq!(freed, [0, 2]);
        assert_eq!(kv.resident(), 1);
        assert_eq!(kv.reusable("b", &[3, 4, 9, 9]), 2);
        assert_eq!(kv.reusable("a", &[1, 2, 9, 9]), 0);
    }

    #[test]
    fn states_are_reused_only_within_their_scope() {
        let mut kv = KvManager::new(2, 1);
        kv.acquire("a", &[1, 2, 3]).unwrap();
        kv.finish(0, "a", vec![1, 2, 3, 4]);
        let l = kv.acquire("b", &[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(
            (l.slot, l.reused),
            (1, 0),
            "another scope never sees slot 0"
        );
        kv.finish(1, "b", vec![1, 2, 3, 4, 5]);
        assert_eq!(kv.reusable("a", &[1, 2, 3, 4, 5, 6, 7]), 4);
        assert_eq!(kv.reusable("b", &[1, 2, 3, 4, 5, 6, 7]), 5);
        assert_eq!(kv.reusable("c", &[1, 2, 3, 4, 5, 6, 7]), 0);
    }

    #[test]
    fn take_empty_prefers_free_slots_then_evicts_the_lru() {
        let mut kv = KvManager::new(2, 1);
        assert_eq!(kv.take_empty(), Some((0, false)));
        kv.finish(0, "a", vec![1, 2]);
        assert_eq!(kv.take_empty(), Some((1, false)));
        kv.finish(1, "a", vec![3, 4]);
        assert_eq!(kv.take_empty(), Some((0, true)), "slot 0 is the older");
        assert_eq!(kv.take_empty(), Some((1, true)));
        assert_eq!(kv.take_empty(), None, "both slots active");
    }

    #[test]
    fn a_shared_system_prompt_does_not_cut_another_conversation_short() {
        let sys = [7, 7, 7, 7];
        let conv_a: Vec<i32> = sys.iter().copied().chain([1, 1, 1, 1, 1, 1]).collect();
        let conv_b: Vec<i32> = sys.iter().copied().chain([2, 2, 2, 2, 2, 2]).collect();
        let mut kv = KvManager::new(2, 2);
        kv.acquire("k", &conv_a).unwrap();
        kv.finish(0, "k", conv_a.clone());
        // b shares only the system prompt (4 of a's 10 tokens): a free slot is better
        let l = kv.acquire("k", &conv_b).unwrap();
        assert_eq!((l.slot, l.reused), (1, 0));
        kv.finish(1, "k", conv_b.clone());
        // a's next turn still finds all of a
        let next_a: Vec<i32> = conv_a.iter().copied().chain([3, 3]).collect();
        assert_eq!(kv.reusable("k", &next_a), 10);
        // with no free slot, a third conversation takes the least recently used slot (a's)
        // and keeps the system prompt it shares
        let conv_c: Vec<i32> = sys.iter().copied().chain([4, 4, 4]).collect();
        let l = kv.acquire("k", &conv_c).unwrap();
        assert_eq!(
            l,
            Lease {
                slot: 0,
                reused: 4,
                evicted: false
            }
        );
        // a rewritten last turn keeping most of a state reuses it rather than a free slot
        let mut kv = KvManager::new(2, 2);
        kv.acquire("k", &conv_a).unwrap();
        kv.finish(0, "k", conv_a.clone());
        let rewritten: Vec<i32> = conv_a[..8].iter().copied().chain([9, 9]).collect();
        assert_eq!(
            kv.acquire("k", &rewritten).unwrap(),
            Lease {
                slot: 0,
                reused: 8,
                evicted: false
            }
        );
    }

    #[test]
    fn live_slots_stay_contiguous() {
        let mut kv = KvManager::new(8, 2);
        // conversations resident in slots 0..6
        for i in 0..6 {
            let t = vec![i * 10; 5];
            kv.acquire("k", &t).unwrap();
            kv.finish(i, "k", t);
        }
        // two live sequences in slots 0 and 1 (continuing their conversations)
        let (a, copy) = kv.acquire_near("k", &[0, 0, 0, 0, 0, 1, 1], &[]).unwrap();
        assert_eq!((a.slot, a.reused, copy), (0, 5, None));
        let (b, copy) = kv
            .acquire_near("k", &[10, 10, 10, 10, 10, 1, 1], &[0])
            .unwrap();
        assert_eq!((b.slot, b.reused, copy), (1, 5, None), "already adjacent");
        // conversation 4 lives in slot 4: its state is copied next to the block (slot 2,
        // the least recently used neighbour) and slot 4 keeps it
        let (c, copy) = kv
            .acquire_near("k", &[40, 40, 40, 40, 40, 1, 1], &[0, 1])
            .unwrap();
        assert_eq!((c.slot, c.reused, c.evicted, copy), (2, 5, true, Some(4)));
        assert_eq!(
            kv.reusable("k", &[40, 40, 40, 40, 40, 2, 2]),
            5,
            "slot 4 still holds it"
        );
        // a new conversation takes the free neighbour... there is none (3 holds a state):
        // the LRU neighbour 3 is taken, with nothing to copy
        let (d, copy) = kv.acquire_near("k", &[99, 99, 99], &[0, 1, 2]).unwrap();
        assert_eq!((d.slot, d.reused, copy), (3, 0, None));
        // no neighbour left that is not live: the chosen slot is used as is
        let mut kv = KvManager::new(3, 2);
        let (x, _) = kv.acquire_near("k", &[1, 1, 1], &[]).unwrap();
        assert_eq!(x.slot, 0);
        kv.finish(0, "k", vec![1, 1, 1]);
        let (_, _) = kv.acquire_near("k", &[5, 5], &[]).unwrap(); // slot 1, live
        let (y, copy) = kv.acquire_near("k", &[1, 1, 1, 1, 1], &[1]).unwrap();
        assert_eq!((y.slot, y.reused, copy), (0, 3, None), "0 joins 1");
        let (z, copy) = kv.acquire_near("k", &[7, 7], &[0, 1]).unwrap();
        assert_eq!((z.slot, copy), (2, None));
    }
}
