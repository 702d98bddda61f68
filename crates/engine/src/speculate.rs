//! Draft-free speculative decoding (prompt lookup).
//!
//! An answer that quotes, edits or extracts from what is already in the conversation repeats
//! runs of its tokens. [`lookup`] finds the latest earlier occurrence of the sequence's last
//! few tokens and proposes the tokens that followed it; the engine feeds them after the
//! sequence's next token in the same batch, samples at every position, and keeps the drafts
//! up to the first one the sampler does not pick. Each token kept is one the sampler drew
//! from the logits of exactly the prefix it follows, so the answer is the one decoding
//! without drafts produces (greedy: the same tokens; sampled: the same draws of the seeded
//! generator, one per token) and only the number of steps changes.
//!
//! [`DraftPolicy`] keeps a sequence from paying for drafts that do not land: after drafts
//! are rejected a few times in a row it pauses drafting for a while (longer each time), and
//! the draft length follows what was accepted lately.

/// The shortest run of the latest tokens looked up (shorter ones recur by chance in any
/// text, and their drafts mostly miss).
pub const MIN_NGRAM: usize = 3;
/// The longest run looked up (the longest match found first wins).
pub const MAX_NGRAM: usize = 5;

/// Up to `max` tokens that followed the latest earlier occurrence of `context`'s last
/// [`MAX_NGRAM`]..=[`MIN_NGRAM`] tokens (longest first). Tokens outside `0..vocab` (the
/// synthetic ids media positions hold) end a draft.
pub fn lookup(context: &[i32], max: usize, vocab: i32) -> Vec<i32> {
    let len = context.len();
    if max == 0 || len < MIN_NGRAM + 1 {
        return Vec::new();
    }
    for n in (MIN_NGRAM..=MAX_NGRAM.min(len - 1)).rev() {
        let key = &context[len - n..];
        // Latest start first; the occurrence must end before the key itself does, so that
        // at least one token follows it.
        for start in (0..len - n).rev() {
            if context[start..start + n] == *key {
                let draft: Vec<i32> = context[start + n..]
                    .iter()
                    .take(max)
                    .take_while(|&&t| (0..vocab).contains(&t))
                    .copied()
                    .collect();
                if !draft.is_empty() {
                    return draft;
                }
            }
        }
    }
    Vec::new()
}

/// How many of the tokens a draft model's stream holds (`held`, from position 0) it keeps
/// before taking `context`: the prefix both share, less one when that is all of `context`
/// (its last token is fed again, for the logits that follow it).
pub fn resume_at(held: &[i32], context: &[i32]) -> usize {
    let common = held.iter().zip(context).take_while(|(a, b)| a == b).count();
    if common == context.len() {
        common.saturating_sub(1)
    } else {
        common
    }
}

/// How many tokens one sequence drafts, from how its drafts fared.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftPolicy {
    max: usize,
    /// The current draft length (1..=max).
    len: usize,
    /// Drafts in a row of which nothing was accepted.
    misses: u32,
    /// Steps left without drafting.
    pause: u32,
    /// Draft tokens accepted, and drafts cut short by a rejection (for the chance that the
    /// next draft token is accepted), both fading with every step so that a sequence whose
    /// answer turns to copying its input after a while starts drafting again.
    accepted: f64,
    rejections: f64,
    /// Steps since drafting was last tried while its cost kept it off.
    since_probe: u32,
}

impl DraftPolicy {
    /// Misses in a row before drafting pauses.
    pub const PATIENCE: u32 = 2;
    /// The longest pause, in steps.
    pub const MAX_PAUSE: u32 = 64;
    /// What the evidence keeps of its weight each step (half of it after 23 steps).
    const FADE: f64 = 0.97;
    /// While a draft token costs more than its estimated chance, one token is still tried
    /// every this many steps: without it, on a machine where a draft costs more than the
    /// prior chance (1/2), a sequence would never draft and so never learn that its answer
    /// copies.
    pub const PROBE_EVERY: u32 = 16;

    /// A policy drafting up to `max` tokens (0: never).
    pub fn new(max: usize) -> Self {
        DraftPolicy {
            max,
            len: max.clamp(1, 4),
            misses: 0,
            pause: 0,
            accepted: 0.0,
            rejections: 0.0,
            since_probe: 0,
        }
    }

    /// The estimated chance that a draft token is accepted given the ones before it were
    /// (with a prior of one acceptance and one rejection).
    pub fn acceptance(&self) -> f64 {
        (self.accepted + 1.0) / (self.accepted + self.rejections + 2.0)
    }

    /// Tokens a draft may have at this step when a draft token costs `ratio` of what an
    /// accepted one saves: only those whose chance of acceptance (`acceptance()` to the
    /// power of their place) exceeds it, and one every [`Self::PROBE_EVERY`] steps when
    /// none does (outside a pause). Each call is one step.
    pub fn budget_at(&mut self, ratio: f64) -> usize {
        let most = self.budget();
        let p = self.acceptance();
        let mut chance = 1.0;
        let mut n = 0;
        while n < most {
            chance *= p;
            if chance <= ratio {
                break;
            }
            n += 1;
        }
        if n > 0 || most == 0 {
            self.since_probe = 0;
            return n;
        }
        self.since_probe += 1;
        if self.since_probe >= Self::PROBE_EVERY {
            self.since_probe = 0;
            return 1;
        }
        0
    }

    /// Tokens a draft may have at this step (0: do not draft). Each call is one step.
    pub fn budget(&mut self) -> usize {
        if self.max == 0 {
            return 0;
        }
        self.accepted *= Self::FADE;
        self.rejections *= Self::FADE;
        if self.pause > 0 {
            self.pause -= 1;
            return 0;
        }
        self.len
    }

    /// A draft of `proposed` tokens had its first `accepted` kept.
    pub fn observe(&mut self, proposed: usize, accepted: usize) {
        if proposed == 0 || self.max == 0 {
            return;
        }
        self.accepted += accepted as f64;
        if accepted < proposed {
            self.rejections += 1.0;
        }
        if accepted == 0 {
            self.misses += 1;
            self.len = (self.len / 2).max(1);
            if self.misses >= Self::PATIENCE {
                let doublings = (self.misses - Self::PATIENCE).min(6);
                self.pause = (2u32 << doublings).min(Self::MAX_PAUSE);
            }
            return;
        }
        self.misses = 0;
        self.len = if accepted == proposed {
            (self.len * 2).min(self.max)
        } else {
            (accepted + 1).clamp(1, self.max)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_longest_match_proposes_what_followed_it() {
        // ... 1 2 3 [9 9] ... 1 2 3 [7 8] ... 2 3 -> the later "2 3" continues with 7 8.
        let ctx = [1, 2, 3, 9, 9, 5, 1, 2, 3, 7, 8, 6, 1, 2, 3];
        assert_eq!(lookup(&ctx, 2, 100), vec![7, 8]);
        // A longer key beats a later shorter one: "0 1 2 3" (at 0) before "1 2 3" (at 6).
        let ctx = [0, 1, 2, 3, 4, 5, 1, 2, 3, 6, 0, 1, 2, 3];
        assert_eq!(lookup(&ctx, 3, 100), vec![4, 5, 1]);
        // The draft stops at the end of the context.
        let ctx = [4, 5, 6, 4, 5, 6];
        assert_eq!(lookup(&ctx, 8, 100), vec![4, 5, 6]);
    }

    #[test]
    fn a_draft_stream_keeps_what_it_shares_with_the_context() {
        // Rejected drafts (7 8) go; the accepted token and the next one are fed.
        assert_eq!(resume_at(&[1, 2, 3, 7, 8], &[1, 2, 3, 4, 5]), 3);
        // Another conversation held the slot: only the shared system prefix stays.
        assert_eq!(resume_at(&[1, 2, 9, 9], &[1, 2, 3]), 2);
        // Everything is held already: the last token is fed again for its logits.
        assert_eq!(resume_at(&[1, 2, 3], &[1, 2, 3]), 2);
        assert_eq!(resume_at(&[1, 2, 3, 4], &[1, 2, 3]), 2);
        assert_eq!(resume_at(&[], &[1, 2]), 0);
        assert_eq!(resume_at(&[5], &[]), 0);
    }

    #[test]
    fn nothing_to_propose() {
        assert!(lookup(&[1, 2, 3, 4, 5, 6], 4, 100).is_empty());
        assert!(lookup(&[1, 2, 3], 4, 100).is_empty());
        assert!(lookup(&[1, 2, 3, 1, 2, 3], 0, 100).is_empty());
        // Two repeated tokens are no evidence (keys are three tokens at least).
        assert!(lookup(&[7, 1, 2, 8, 1, 2], 4, 100).is_empty());
    }

    #[test]
    fn media_ids_end_a_draft() {
        // 500 and -3 stand for positions of an image (outside the vocabulary of 100).
        let ctx = [1, 2, 3, 5, 500, 6, 1, 2, 3];
        assert_eq!(lookup(&ctx, 4, 100), vec![5]);
        let ctx = [1, 2, 3, -3, 6, 1, 2, 3];
        assert!(lookup(&ctx, 4, 100).is_empty());
    }

    #[test]
    fn misses_pause_drafting_for_longer_each_time() {
        let mut p = DraftPolicy::new(8);
        assert_eq!(p.budget(), 4);
        p.observe(4, 0);
        assert_eq!(p.budget(), 2, "a miss halves the draft");
        p.observe(2, 0);
        // Two misses in a row: two steps without drafts.
        assert_eq!((p.budget(), p.budget(), p.budget()), (0, 0, 1));
        p.observe(1, 0);
        let paused = std::iter::from_fn(|| Some(p.budget()))
            .take_while(|&b| b == 0)
            .count();
        assert_eq!(paused, 4, "the next pause is twice as long");
        for _ in 0..20 {
            p.observe(1, 0);
        }
        while p.budget() == 0 {}
        assert_eq!(p.pause, 0);
        p.observe(1, 0);
        assert!(p.pause <= DraftPolicy::MAX_PAUSE);
    }

    #[test]
    fn accepted_drafts_grow_the_draft() {
        let mut p = DraftPolicy::new(8);
        p.observe(4, 4);
        assert_eq!(p.budget(), 8);
        p.observe(8, 8);
        assert_eq!(p.budget(), 8, "never past the maximum");
        p.observe(8, 3);
        assert_eq!(p.budget(), 4, "a partial hit keeps what landed, plus one");
        // A hit ends a run of misses.
        p.observe(4, 0);
        p.observe(2, 1);
        p.observe(2, 0);
        assert_eq!(p.budget(), 1, "one miss after a hit does not pause");
    }

    #[test]
    fn drafts_are_as_long_as_their_chance_pays() {
        let mut p = DraftPolicy::new(8);
        // No evidence: a chance of 1/2, so one token where it costs 0.4 of a step.
        assert_eq!(p.budget_at(0.4), 1);
        assert_eq!(p.budget_at(0.6), 0);
        // A sequence that copies: 40 accepted, 4 rejections; p = 41/46.
        let mut p = DraftPolicy::new(8);
        p.observe(4, 4);
        p.observe(8, 8);
        for _ in 0..4 {
            p.observe(8, 7);
        }
        assert!((p.acceptance() - 41.0 / 46.0).abs() < 1e-9);
        // 0.891^7 = 0.45 and 0.891^8 = 0.40: seven tokens pay at 0.4, all eight at 0.3.
        assert_eq!(p.budget_at(0.4), 7);
        assert_eq!(p.budget_at(0.3), 8);
        // One that does not: the chance falls below the cost and it stops drafting.
        let mut q = DraftPolicy::new(8);
        q.observe(1, 0);
        q.observe(1, 0);
        while q.pause > 0 {
            q.budget();
        }
        assert_eq!(q.budget_at(0.3), 0, "p is about 1/4");
        // The misses fade: about ten steps later a one-token draft is tried again.
        let later = (0..60).position(|_| q.budget_at(0.3) > 0);
        assert!(later.is_some_and(|k| (8..20).contains(&k)), "{later:?}");
    }

    #[test]
    fn a_draft_dearer_than_the_prior_chance_is_still_tried_and_learned_from() {
        // A machine where a draft token costs 0.7 of a step: the prior chance (1/2) never
        // pays, yet a token is tried every PROBE_EVERY steps.
        let mut p = DraftPolicy::new(8);
        let tries: Vec<usize> = (0..2 * DraftPolicy::PROBE_EVERY)
            .map(|_| p.budget_at(0.7))
            .collect();
        let at: Vec<usize> = (0..tries.len()).filter(|&k| tries[k] > 0).collect();
        let every = DraftPolicy::PROBE_EVERY as usize;
        assert_eq!(at, vec![every - 1, 2 * every - 1]);
        assert!(tries.iter().all(|&n| n <= 1));
        // An answer that copies: each probe lands, and once the chance passes the cost the
        // sequence drafts every step, more each time.
        p.observe(1, 1);
        p.observe(1, 1);
        assert!(p.acceptance() > 0.7);
        let mut lens = Vec::new();
        for _ in 0..4 {
            let n = p.budget_at(0.7);
            assert!(n > 0, "{lens:?}");
            p.observe(n, n);
            lens.push(n);
        }
        assert!(
            lens.windows(2).all(|w| w[1] >= w[0]) && lens[3] > 1,
            "{lens:?}"
        );
    }

    #[test]
    fn off_means_off() {
        let mut p = DraftPolicy::new(0);
        assert_eq!(p.budget(), 0);
        p.observe(3, 3);
        assert_eq!(p.budget(), 0);
    }
}
