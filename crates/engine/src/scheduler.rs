//! Per-step planning: which sequences put how many tokens into the next `decode`.
//!
//! Every decoding sequence gets exactly one token (so running streams never stall), then
//! the draft tokens of speculating sequences ([`crate::speculate`]) up to a cap, and the
//! remaining token budget goes to pending prompts in admission order (chunked prefill). While
//! streams are decoding, the prompt tokens of a step are also bounded in time
//! ([`StepBudget`]): a step carries only as many as keep it within the step-time target, so
//! a long new prompt slows the live streams a little for longer rather than stopping them
//! for seconds.

use std::time::Duration;

/// What the planner needs to know about one live sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqState {
    /// Prompt tokens not yet in the KV cache.
    pub pending_prompt: usize,
    /// Whether the sequence has finished its prompt and samples a token each step.
    pub decoding: bool,
    /// Draft tokens a decoding sequence proposes to verify after its next token.
    pub draft: usize,
}

/// What one step may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tokens in all.
    pub budget: usize,
    /// Prompt tokens.
    pub prefill_cap: usize,
    /// Draft tokens.
    pub draft_cap: usize,
    /// Whether prompt chunks share steps with other sequences' tokens.
    pub mixing: Mixing,
}

/// Whether a prompt chunk may go into one `decode` with other sequences' tokens.
///
/// With one KV stream per sequence, llama.cpp splits a batch into ubatches that take the
/// same number of tokens from every sequence in them, so a prompt chunk beside a decoding
/// sequence is computed one token at a time for as many tokens as its neighbours bring;
/// without flash attention a token computed alone rounds differently from one computed in a
/// chunk (see [`crate::kv::PREFILL_TAIL`]). Exact reuse therefore keeps prompt chunks apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixing {
    /// Decoders, drafts and prompt chunks of several sequences in one step.
    Together,
    /// A step carries either the decoders (and their drafts) or one sequence's prompt
    /// chunk. When both wait, `prompt_turn` says which goes now; the caller alternates it.
    Apart { prompt_turn: bool },
}

/// Prompt tokens to take from `pending` with `room` left in the step: never one token out
/// of a longer prompt and never one token left behind, since either would be computed alone
/// (see [`crate::kv::PREFILL_TAIL`]). 0 when `room` allows no such chunk.
pub fn chunk(pending: usize, room: usize) -> usize {
    if pending <= room {
        return pending;
    }
    let n = if pending - room == 1 {
        room.saturating_sub(1)
    } else {
        room
    };
    if n >= 2 {
        n
    } else {
        0
    }
}

/// [`chunk`], but for a step that carries nothing else: a room under three tokens, where
/// no clean split exists, gives up on it rather than on progress.
fn chunk_or_progress(pending: usize, room: usize) -> usize {
    match chunk(pending, room) {
        0 => pending.min(room),
        n => n,
    }
}

/// The first sequence, in order, with prompt tokens to take in.
fn first_prompt(seqs: &[SeqState]) -> Option<usize> {
    seqs.iter()
        .position(|s| !s.decoding && s.pending_prompt > 0)
}

/// Tokens to feed per sequence this step, index-aligned with the input; 0 means skip; a
/// decoding sequence's count is its next token plus the drafts it got. At most
/// `limits.budget` tokens in all, of which at most `prefill_cap` prompt tokens and
/// `draft_cap` draft tokens; drafts go before prompt chunks, in sequence order.
pub fn plan(seqs: &[SeqState], limits: Limits) -> Vec<usize> {
    if let Mixing::Apart { prompt_turn } = limits.mixing {
        let decoders = seqs.iter().any(|s| s.decoding);
        if let Some(i) = first_prompt(seqs).filter(|_| prompt_turn || !decoders) {
            let mut out = vec![0; seqs.len()];
            let room = limits.prefill_cap.min(limits.budget);
            out[i] = chunk_or_progress(seqs[i].pending_prompt, room);
            return out;
        }
        // The decoders' turn: the plan with no room for prompts.
        return plan(
            seqs,
            Limits {
                prefill_cap: 0,
                mixing: Mixing::Together,
                ..limits
            },
        );
    }
    let mut left = limits.budget;
    let mut out: Vec<usize> = seqs
        .iter()
        .map(|s| {
            if s.decoding && left > 0 {
                left -= 1;
                1
            } else {
                0
            }
        })
        .collect();
    let mut drafts = limits.draft_cap.min(left);
    for (i, s) in seqs.iter().enumerate() {
        if out[i] == 1 && s.draft > 0 && drafts > 0 {
            let n = s.draft.min(drafts);
            out[i] += n;
            drafts -= n;
            left -= n;
        }
    }
    let mut prefill = limits.prefill_cap.min(left);
    for (i, s) in seqs.iter().enumerate() {
        if !s.decoding && s.pending_prompt > 0 && prefill > 0 {
            let n = chunk(s.pending_prompt, prefill);
            out[i] = n;
            prefill -= n;
        }
    }
    if out.iter().all(|&n| n == 0) {
        if let Some(i) = first_prompt(seqs) {
            out[i] = chunk_or_progress(seqs[i].pending_prompt, limits.prefill_cap.min(left));
        }
    }
    out
}

/// What admission needs to know about a queued request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queued {
    /// Its caller went away: it is dropped, never admitted.
    pub cancelled: bool,
    /// A state for it is still being read from disk.
    pub reading: bool,
}

/// The queued request to admit next: the oldest still wanted whose state (if any) has been
/// read; one waiting for a read does not hold up those behind it.
pub fn next_to_admit(queue: &[Queued]) -> Option<usize> {
    queue.iter().position(|q| !q.cancelled && !q.reading)
}

/// How many prompt tokens a step may carry next to decoding sequences, from what steps have
/// cost so far: a step is kept within `target` (the live streams' inter-token latency while
/// a prompt is being taken in), but never below [`StepBudget::MIN_CHUNK`] prompt tokens, so
/// that a prompt always makes progress.
#[derive(Debug, Clone, PartialEq)]
pub struct StepBudget {
    /// The step-time target while sequences decode; zero: no time bound.
    target: Duration,
    /// Seconds per prompt token (moving average), once measured.
    per_prompt_token: Option<f64>,
    /// Seconds of a step that only decodes (moving average), once measured.
    decode_step: Option<f64>,
    /// Seconds of a step that decodes one token of one sequence, nothing else.
    single_step: Option<f64>,
    /// Seconds a draft token adds to such a step (moving average), once measured.
    per_draft_token: Option<f64>,
}

impl StepBudget {
    /// The fewest prompt tokens a step with a pending prompt carries.
    pub const MIN_CHUNK: usize = 16;
    /// Prompt tokens per step next to decoders before any step has been measured.
    pub const COLD_CHUNK: usize = 64;
    /// Weight of the newest measurement in the moving averages.
    const ALPHA: f64 = 0.3;

    /// A budget aiming at `target` per step (zero: bounded by tokens only).
    pub fn new(target: Duration) -> Self {
        StepBudget {
            target,
            per_prompt_token: None,
            decode_step: None,
            single_step: None,
            per_draft_token: None,
        }
    }

    fn average(old: Option<f64>, new: f64) -> f64 {
        old.map_or(new, |o| o + Self::ALPHA * (new - o))
    }

    /// A step of `prompt` prompt tokens and `decoded` decoded ones took `secs`.
    pub fn observe(&mut self, prompt: usize, decoded: usize, secs: f64) {
        if !secs.is_finite() || secs < 0.0 {
            return;
        }
        if prompt == 0 {
            if decoded > 0 {
                self.decode_step = Some(Self::average(self.decode_step, secs));
            }
            return;
        }
        // Small chunks say little about the per-token rate (fixed costs dominate them).
        if prompt < Self::MIN_CHUNK {
            return;
        }
        let decoding = if decoded > 0 {
            self.decode_step.unwrap_or(0.0)
        } else {
            0.0
        };
        let per = ((secs - decoding).max(0.0)) / prompt as f64;
        self.per_prompt_token = Some(Self::average(self.per_prompt_token, per));
    }

    /// The fewest draft tokens a step must carry for its time to count towards what a draft
    /// token costs: going from one row to a few takes other kernels, with a fixed cost that
    /// a one- or two-token draft would charge entirely to its tokens (on a 2-core EPYC that
    /// made drafting look dearer than its chance, while drafting every match ran SmolLM2's
    /// quote/edit/extract answers 1.19x faster than not drafting).
    pub const MIN_MEASURED_DRAFT: usize = 3;

    /// A step that decoded one token of one sequence, and `drafts` draft tokens after it,
    /// and nothing else, took `secs`.
    pub fn observe_single(&mut self, drafts: usize, secs: f64) {
        if !secs.is_finite() || secs <= 0.0 {
            return;
        }
        if drafts == 0 {
            self.single_step = Some(Self::average(self.single_step, secs));
        } else if let Some(t1) = self
            .single_step
            .filter(|_| drafts >= Self::MIN_MEASURED_DRAFT)
        {
            let per = (secs - t1).max(0.0) / drafts as f64;
            self.per_draft_token = Some(Self::average(self.per_draft_token, per));
        }
    }

    /// What a draft token costs relative to what one accepted draft token saves, with
    /// `decoders` sequences decoding: a draft token costs about what a prompt token does;
    /// an accepted one saves its sequence one step, which it shares with the other decoders.
    /// Drafting pays for the draft tokens whose chance of being accepted exceeds this.
    pub fn draft_cost_ratio(&self, decoders: usize) -> f64 {
        let n = decoders.max(1) as f64;
        match (self.per_prompt_token, self.single_step) {
            // A few draft tokens cost more each than a token of a long prompt does (a
            // small batch uses the hardware less well): measured where possible.
            (Some(c), Some(t1)) if t1 > 0.0 => {
                self.per_draft_token.unwrap_or(c).max(c) * n / (t1 + (n - 1.0) * c)
            }
            // Until measured: a CPU-like guess (a prompt token costs a third of a step).
            _ => n / (3.0 + (n - 1.0)),
        }
    }

    /// Prompt tokens the next step may carry when `decoders` sequences decode in it, of a
    /// token budget of `batch`.
    pub fn prefill_cap(&self, decoders: usize, batch: usize) -> usize {
        if decoders == 0 || self.target.is_zero() {
            return batch;
        }
        let cap = match self.per_prompt_token {
            None => Self::COLD_CHUNK,
            Some(per) => {
                let room = self.target.as_secs_f64() - self.decode_step.unwrap_or(0.0);
                if per > 0.0 {
                    (room.max(0.0) / per) as usize
                } else {
                    batch
                }
            }
        };
        cap.max(Self::MIN_CHUNK).min(batch)
    }
}

/// Tokens of finished answers to prefill into their conversations' KV this step: only when
/// no live sequence needs the step (prefilling an answer beside a decoding sequence slows
/// every one of its tokens, and beside a prompt delays its first token), and then at most
/// `cap`, so that a request arriving meanwhile waits for no more than a small prefill. Work
/// left undone is not lost: a conversation's next turn prefills the rest as part of its
/// prompt.
pub fn background_budget(seqs: &[SeqState], budget: usize, cap: usize) -> usize {
    if seqs.is_empty() {
        budget.min(cap)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_work_only_when_nothing_live_needs_the_step() {
        assert_eq!(background_budget(&[], 512, 16), 16);
        assert_eq!(background_budget(&[], 8, 16), 8);
        for seqs in [vec![dec()], vec![pre(100)], vec![dec(), pre(100)]] {
            assert_eq!(background_budget(&seqs, 512, 16), 0);
        }
    }

    fn dec() -> SeqState {
        SeqState {
            pending_prompt: 0,
            decoding: true,
            draft: 0,
        }
    }
    fn spec(draft: usize) -> SeqState {
        SeqState { draft, ..dec() }
    }
    fn pre(n: usize) -> SeqState {
        SeqState {
            pending_prompt: n,
            decoding: false,
            draft: 0,
        }
    }
    fn plan(seqs: &[SeqState], budget: usize, prefill_cap: usize) -> Vec<usize> {
        super::plan(
            seqs,
            Limits {
                budget,
                prefill_cap,
                draft_cap: 8,
                mixing: Mixing::Together,
            },
        )
    }

    #[test]
    fn drafts_after_every_next_token_and_before_prompts_within_their_cap() {
        let lim = |budget, draft_cap| Limits {
            budget,
            prefill_cap: budget,
            draft_cap,
            mixing: Mixing::Together,
        };
        assert_eq!(
            super::plan(&[pre(600), spec(5), dec(), spec(5)], lim(512, 8)),
            vec![501, 6, 1, 4]
        );
        // A small batch: next tokens first, then drafts, then the prompt.
        assert_eq!(
            super::plan(&[spec(5), pre(600), spec(5)], lim(8, 8)),
            vec![6, 0, 2]
        );
        assert_eq!(
            super::plan(&[spec(5), pre(600), spec(5)], lim(512, 0)),
            vec![1, 510, 1]
        );
        // Drafts of a sequence that is not decoding are nothing.
        let odd = SeqState {
            draft: 3,
            ..pre(10)
        };
        assert_eq!(super::plan(&[odd], lim(512, 8)), vec![10]);
    }

    #[test]
    fn admission_is_in_order_skipping_the_cancelled_and_passing_reads() {
        let (ok, gone, read) = (
            Queued::default(),
            Queued {
                cancelled: true,
                reading: false,
            },
            Queued {
                cancelled: false,
                reading: true,
            },
        );
        assert_eq!(next_to_admit(&[ok, ok]), Some(0));
        assert_eq!(next_to_admit(&[gone, ok]), Some(1));
        assert_eq!(next_to_admit(&[read, gone, ok, ok]), Some(2));
        assert_eq!(next_to_admit(&[read, gone]), None);
        assert_eq!(next_to_admit(&[]), None);
    }

    #[test]
    fn decoders_first_then_prefill_in_order() {
        assert_eq!(
            plan(&[pre(600), dec(), pre(10), dec()], 512, 512),
            vec![510, 1, 0, 1]
        );
        assert_eq!(
            plan(&[pre(100), dec(), pre(10)], 512, 512),
            vec![100, 1, 10]
        );
    }

    #[test]
    fn a_prompt_is_never_split_into_a_lone_token() {
        assert_eq!(chunk(10, 64), 10);
        assert_eq!(chunk(1, 64), 1, "a one-token prompt is what it is");
        assert_eq!(chunk(65, 64), 63, "not 64, which would leave one");
        assert_eq!(chunk(100, 64), 64);
        assert_eq!(chunk(3, 2), 0, "no clean split");
        assert_eq!(chunk(5, 1), 0);
        assert_eq!(chunk(1, 0), 0, "no room");
        // ...unless the step would otherwise carry nothing
        assert_eq!(plan(&[pre(3)], 2, 2), vec![2]);
        // in a plan: the second prompt gets what is left, unless that is one token
        assert_eq!(plan(&[pre(9), pre(5)], 10, 10), vec![9, 0]);
        assert_eq!(plan(&[pre(8), pre(5)], 10, 10), vec![8, 2]);
        assert_eq!(plan(&[dec(), pre(12)], 12, 12), vec![1, 10]);
    }

    #[test]
    fn apart_a_step_is_either_the_decoders_or_one_prompt_chunk() {
        let lim = |prompt_turn| Limits {
            budget: 64,
            prefill_cap: 32,
            draft_cap: 8,
            mixing: Mixing::Apart { prompt_turn },
        };
        let seqs = [dec(), pre(100), spec(3), pre(5)];
        assert_eq!(super::plan(&seqs, lim(false)), vec![1, 0, 4, 0]);
        assert_eq!(super::plan(&seqs, lim(true)), vec![0, 32, 0, 0]);
        // with nobody decoding a prompt goes whatever the turn; one prompt a step
        assert_eq!(
            super::plan(&[pre(33), pre(5)], lim(false)),
            vec![31, 0],
            "31, leaving two"
        );
        // with no prompt pending the decoders go whatever the turn
        assert_eq!(super::plan(&[dec(), dec()], lim(true)), vec![1, 1]);
        assert_eq!(super::plan(&[], lim(true)), Vec::<usize>::new());
    }

    #[test]
    fn long_prompt_never_starves_decoders() {
        let p = plan(&[pre(100_000), dec(), dec(), dec()], 64, 64);
        assert_eq!(p, vec![61, 1, 1, 1]);
    }

    #[test]
    fn budget_smaller_than_decoders() {
        assert_eq!(plan(&[dec(), dec(), dec()], 2, 2), vec![1, 1, 0]);
    }

    #[test]
    fn the_prefill_cap_bounds_prompt_tokens_not_decoders() {
        assert_eq!(
            plan(&[pre(600), dec(), pre(10), dec()], 512, 40),
            vec![40, 1, 0, 1]
        );
        assert_eq!(plan(&[pre(30), dec(), pre(100)], 512, 40), vec![30, 1, 10]);
        assert_eq!(plan(&[dec(), dec()], 512, 0), vec![1, 1]);
    }

    const TARGET: Duration = Duration::from_millis(200);

    #[test]
    fn a_step_next_to_decoders_carries_what_fits_the_target() {
        let mut b = StepBudget::new(TARGET);
        // Nothing measured: a modest chunk; without decoders the whole batch.
        assert_eq!(b.prefill_cap(4, 512), StepBudget::COLD_CHUNK);
        assert_eq!(b.prefill_cap(0, 512), 512);
        // Decode-only steps take 30 ms, prompt tokens 4 ms each (a prefill-only step of 512).
        b.observe(0, 4, 0.030);
        b.observe(512, 0, 2.048);
        // (200 - 30) ms / 4 ms = 42 tokens.
        assert_eq!(b.prefill_cap(4, 512), 42);
        assert_eq!(b.prefill_cap(0, 512), 512);
        assert_eq!(b.prefill_cap(4, 32), 32, "never past the batch");
        // A mixed step's decode share is taken out before its per-token cost is learned.
        let mut m = StepBudget::new(TARGET);
        m.observe(0, 4, 0.030);
        m.observe(100, 4, 0.430);
        assert_eq!(m.prefill_cap(4, 512), 42);
    }

    #[test]
    fn a_slow_model_still_gets_a_minimum_chunk_and_no_target_means_tokens_only() {
        let mut b = StepBudget::new(TARGET);
        b.observe(0, 8, 0.250); // decoding alone already takes longer than the target
        b.observe(64, 0, 6.4);
        assert_eq!(b.prefill_cap(8, 512), StepBudget::MIN_CHUNK);
        let mut off = StepBudget::new(Duration::ZERO);
        off.observe(64, 0, 6.4);
        assert_eq!(off.prefill_cap(8, 512), 512);
    }

    #[test]
    fn drafts_pay_alone_and_hardly_beside_many_decoders() {
        let mut b = StepBudget::new(TARGET);
        // A step of one token takes 9 ms, a prompt token 3 ms (in a prefill of 512).
        b.observe_single(0, 0.009);
        b.observe(512, 0, 512.0 * 0.003);
        let one = b.draft_cost_ratio(1);
        assert!((one - 1.0 / 3.0).abs() < 1e-9, "{one}");
        // Measured: a step with 4 drafts takes 33 ms, so a draft token costs 6 ms here.
        let mut m = b.clone();
        m.observe_single(4, 0.033);
        let measured = m.draft_cost_ratio(1);
        assert!((measured - 6.0 / 9.0).abs() < 1e-9, "{measured}");
        // Steps with one or two drafts carry the fixed cost of batching and are not counted.
        let mut short = b.clone();
        short.observe_single(1, 0.030);
        short.observe_single(2, 0.040);
        assert_eq!(short.draft_cost_ratio(1), one);
        // Eight decoders: the step takes 9 + 7 * 3 ms and an accepted token saves an eighth.
        let eight = b.draft_cost_ratio(8);
        assert!((eight - 0.8).abs() < 1e-9, "{eight}");
        // A GPU-like machine, where extra tokens in a step are almost free.
        let mut g = StepBudget::new(TARGET);
        g.observe_single(0, 0.010);
        g.observe(512, 0, 512.0 * 0.0001);
        assert!(g.draft_cost_ratio(8) < 0.1);
    }

    #[test]
    fn the_averages_follow_the_machine() {
        let mut b = StepBudget::new(TARGET);
        b.observe(0, 1, 0.010);
        for _ in 0..30 {
            b.observe(100, 0, 0.100); // 1 ms a token now
        }
        let cap = b.prefill_cap(1, 512);
        assert!((189..=190).contains(&cap), "{cap}");
        // Nonsense and tiny chunks are ignored.
        b.observe(4, 0, 9.0);
        b.observe(100, 0, f64::NAN);
        assert_eq!(b.prefill_cap(1, 512), cap);
    }
}
