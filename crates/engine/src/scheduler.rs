//! Per-step planning: which sequences put how many tokens into the next `decode`.
//!
//! Every decoding sequence gets exactly one token (so running streams never stall), and the
//! remaining token budget goes to pending prompts in admission order (chunked prefill).

/// What the planner needs to know about one live sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqState {
    /// Prompt tokens not yet in the KV cache.
    pub pending_prompt: usize,
    /// Whether the sequence has finished its prompt and samples a token each step.
    pub decoding: bool,
}

/// Tokens to feed per sequence this step, index-aligned with the input; 0 means skip.
pub fn plan(seqs: &[SeqState], budget: usize) -> Vec<usize> {
    let mut left = budget;
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
    for (i, s) in seqs.iter().enumerate() {
        if !s.decoding && s.pending_prompt > 0 && left > 0 {
            let n = s.pending_prompt.min(left);
            out[i] = n;
            left -= n;
        }
    }
    out
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
        }
    }
    fn pre(n: usize) -> SeqState {
        SeqState {
            pending_prompt: n,
            decoding: false,
        }
    }

    #[test]
    fn decoders_first_then_prefill_in_order() {
        assert_eq!(
            plan(&[pre(600), dec(), pre(10), dec()], 512),
            vec![510, 1, 0, 1]
        );
        assert_eq!(plan(&[pre(100), dec(), pre(10)], 512), vec![100, 1, 10]);
    }

    #[test]
    fn long_prompt_never_starves_decoders() {
        let p = plan(&[pre(100_000), dec(), dec(), dec()], 64);
        assert_eq!(p, vec![61, 1, 1, 1]);
    }

    #[test]
    fn budget_smaller_than_decoders() {
        assert_eq!(plan(&[dec(), dec(), dec()], 2), vec![1, 1, 0]);
    }
}
