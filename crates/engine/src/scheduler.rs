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

/// Tokens of finished answers to prefill into their conversations' KV this step, from the
/// budget `plan` left over. Live work always comes first; while sequences are decoding, the
/// background work is capped at `cap_while_decoding` tokens so their next token is not held
/// back by more than a small prefill.
pub fn background_budget(
    seqs: &[SeqState],
    planned: &[usize],
    budget: usize,
    cap_while_decoding: usize,
) -> usize {
    let left = budget.saturating_sub(planned.iter().sum());
    if seqs.iter().any(|s| s.decoding) {
        left.min(cap_while_decoding)
    } else {
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_work_takes_only_what_live_work_leaves() {
        let seqs = [dec(), pre(100)];
        let planned = plan(&seqs, 512);
        assert_eq!(background_budget(&seqs, &planned, 512, 32), 32);
        let seqs = [pre(600)];
        let planned = plan(&seqs, 512);
        assert_eq!(background_budget(&seqs, &planned, 512, 32), 0);
        let seqs = [pre(100)];
        let planned = plan(&seqs, 512);
        assert_eq!(background_budget(&seqs, &planned, 512, 32), 412);
        assert_eq!(background_budget(&[], &[], 512, 32), 512);
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
