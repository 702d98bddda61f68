//! Picking a sequence's next token from the logits of a decode: the sampler chain, the
//! output grammar, forced tokens; and checking a speculative draft against what is picked.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use llguidance::Matcher;
use localgem_core::{FinishReason, GenerateRequest};

use super::{Seq, CLOSE_MARGIN};
use crate::constrain::{try_token, Grammars, Pick, Verdict};

/// Whether a request samples greedily (temperature 0).
fn is_greedy(request: &GenerateRequest) -> bool {
    request.sampling.temperature <= 0.0
}

/// What [`sample_at`] can take from the logits before the sampler chain sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Preselect {
    /// The chain is greedy: its pick is the first of the highest logits.
    Greedy,
    /// The chain starts with top-k: only the k highest logits, sorted, reach it.
    TopK(usize),
    /// Every logit goes through the chain.
    All,
}

impl Preselect {
    pub(super) fn for_request(request: &GenerateRequest) -> Self {
        match request.sampling.top_k {
            _ if is_greedy(request) => Preselect::Greedy,
            0 => Preselect::All,
            k => Preselect::TopK(k as usize),
        }
    }
}

pub(super) fn sampler_for(request: &GenerateRequest) -> LlamaSampler {
    let s = request.sampling;
    if is_greedy(request) {
        LlamaSampler::greedy()
    } else {
        let mut chain = Vec::with_capacity(4);
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(s.top_k.min(i32::MAX as u32) as i32));
        }
        chain.push(LlamaSampler::top_p(
            s.top_p.clamp(f32::MIN_POSITIVE, 1.0),
            1,
        ));
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
        LlamaSampler::chain_simple(chain)
    }
}

thread_local! {
    /// The candidate array sampling fills, kept across tokens: a fresh one is as long as the
    /// vocabulary (262,144 entries, 3 MiB, for Gemma 3), and allocating and zeroing it for
    /// every token cost about 3% of Gemma 3's decode.
    static CANDIDATES: std::cell::RefCell<Vec<LlamaTokenData>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The k highest logits, for a chain that starts with top-k.
    static TOP: std::cell::RefCell<Vec<(usize, f32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The `k` highest of `values` as (index, value) into `out`, highest first (equal values:
/// lower index first).
pub(crate) fn highest(values: &[f32], k: usize, out: &mut Vec<(usize, f32)>) {
    out.clear();
    if k == 0 {
        return;
    }
    // Keep the best k seen; `low` is the place of the lowest of them, replaced by anything
    // higher (a value equal to it comes later, so it loses the tie).
    let mut low = 0;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if out.len() < k {
            out.push((i, v));
            if out.len() == k {
                low = lowest(out);
            }
        } else if v > out[low].1 {
            out[low] = (i, v);
            low = lowest(out);
        }
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// The place of the lowest value (the latest index among equals).
fn lowest(kept: &[(usize, f32)]) -> usize {
    let mut at = 0;
    for (j, &(i, v)) in kept.iter().enumerate() {
        let (ai, av) = kept[at];
        if v < av || (v == av && i > ai) {
            at = j;
        }
    }
    at
}

/// What `llama_sampler_sample` does (every token's logit, unsorted, through the sampler
/// chain), into a reused array. The chain's samplers (top-k, top-p, temperature, seeded
/// draw, greedy) keep no state that accepting a token would update. A vocabulary-sized
/// array costs time on a large vocabulary (Gemma 3: 262,144 entries, 3 MiB, every token),
/// so `pre` takes what it can off the logits first: a greedy pick is the first of the
/// highest, as llama.cpp's greedy sampler picks; a chain that starts with top-k gets the k
/// highest, sorted, as its top-k would leave them (only the order of equal logits may
/// differ).
pub(super) fn sample_at(
    sampler: &mut LlamaSampler,
    pre: Preselect,
    ctx: &LlamaContext<'_>,
    idx: i32,
) -> LlamaToken {
    if pre == Preselect::Greedy {
        return LlamaToken(first_highest(ctx.get_logits_ith(idx)) as i32);
    }
    let picked = CANDIDATES.with(|buf| {
        let mut data = std::mem::take(&mut *buf.borrow_mut());
        data.clear();
        let sorted = match pre {
            Preselect::TopK(k) => {
                TOP.with(|top| {
                    let mut top = top.borrow_mut();
                    highest(ctx.get_logits_ith(idx), k, &mut top);
                    data.extend(
                        top.iter()
                            .map(|&(i, l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
                    );
                });
                true
            }
            _ => {
                data.extend(ctx.candidates_ith(idx));
                false
            }
        };
        let mut arr = LlamaTokenDataArray::new(data, sorted);
        arr.apply_sampler(sampler);
        let tok = arr.selected_token();
        *buf.borrow_mut() = arr.data;
        tok
    });
    picked.unwrap_or_else(|| sampler.sample(ctx, idx))
}

/// The index of the first of the highest values (0 for none).
pub(crate) fn first_highest(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Sample under a grammar: the token the ordinary sampler picks is kept when the grammar
/// allows it (the common case, and cheap); otherwise the full mask is computed and the
/// sampler picks again among the allowed tokens only. `None` when nothing is allowed (the
/// grammar is complete).
pub(super) fn sample_constrained(
    sampler: &mut LlamaSampler,
    pre: Preselect,
    m: &mut Matcher,
    ctx: &LlamaContext<'_>,
    idx: i32,
    vocab: &LlamaVocab<'_>,
) -> Option<LlamaToken> {
    if m.is_stopped() {
        return None;
    }
    let first = sample_at(sampler, pre, ctx, idx);
    if vocab.is_eog(first) {
        if m.is_accepting().unwrap_or(false) {
            return Some(first);
        }
    } else if try_token(m, first.0 as u32) == Verdict::Accepted {
        return Some(first);
    }
    // The sampler's pick missed: the mask, and whether the grammar may end here.
    let (mask, accepting) = (m.compute_mask().ok()?, m.is_accepting().unwrap_or(false));
    let allowed: Vec<_> = ctx
        .candidates_ith(idx)
        .filter(|d| {
            let t = d.id();
            if vocab.is_eog(t) {
                accepting
            } else {
                mask.is_allowed(t.0 as u32)
            }
        })
        .collect();
    if allowed.is_empty() {
        return None;
    }
    let mut arr = LlamaTokenDataArray::new(allowed, false);
    arr.apply_sampler(sampler);
    let tok = arr.selected_token()?;
    if !vocab.is_eog(tok) && try_token(m, tok.0 as u32) != Verdict::Accepted {
        return None;
    }
    Some(tok)
}

/// How a sequence goes on after a token is picked for it.
pub(super) enum Next {
    /// Feed this token at the next position.
    Token(LlamaToken),
    /// Finished: why, and whether a stop sequence ended it.
    Done(FinishReason, bool),
}

/// Pick the token at batch index `idx` for `s` (a forced token, or sampled, under its grammar
/// when it has one), record it and stream its text. `s.n_past` is the number of positions in
/// its KV counting the token whose logits `idx` holds.
pub(super) fn take_token(
    s: &mut Seq,
    ctx: &LlamaContext<'_>,
    idx: i32,
    vocab: &LlamaVocab<'_>,
    grammars: &Grammars,
    per_seq: u32,
) -> Next {
    let tok = match s.forced.pop_front() {
        Some(t) => t,
        None => match s.matcher.as_mut() {
            Some(m) => {
                // Tokens left counting this one: to the output cap, and to the end of the
                // context (see the `ContextFull` check below).
                let room = s
                    .out
                    .max_output
                    .saturating_sub(s.out.answer_tokens())
                    .min(per_seq.saturating_sub(s.n_past as u32))
                    .max(1) as usize;
                // A quarter of what the answer could have had at most.
                let most = s
                    .out
                    .max_output
                    .min(per_seq.saturating_sub(s.prompt.len() as u32));
                let margin = CLOSE_MARGIN.min(most / 4) as usize;
                let wrap = s
                    .closer
                    .need(grammars, m)
                    .is_some_and(|need| room <= need + margin);
                let sampled = if wrap && m.is_accepting().unwrap_or(false) {
                    Some(vocab.eos())
                } else {
                    sample_constrained(&mut s.sampler, s.preselect, m, ctx, idx, vocab)
                };
                match sampled {
                    Some(t) if vocab.is_eog(t) => t,
                    Some(t) => match s.closer.settle(grammars, m, t.0 as u32, room, wrap) {
                        Pick::Token(t) => LlamaToken(t as i32),
                        Pick::End => vocab.eos(),
                    },
                    // The grammar allows nothing more: it is complete.
                    None => return Next::Done(FinishReason::Stop, false),
                }
            }
            None => sample_at(&mut s.sampler, s.preselect, ctx, idx),
        },
    };
    s.output.push(tok);
    s.history.push(tok.0);
    if vocab.is_eog(tok) {
        return Next::Done(FinishReason::Stop, false);
    }
    s.timing.first_token.get_or_insert_with(Instant::now);
    let stopped = s.out.token(&vocab.token_to_piece(tok, false, None));
    // A spent budget closes the thought: its closing tag is fed instead of sampled tokens.
    if s.forced.is_empty() {
        if let Some(close) = s.out.thought_spent() {
            s.forced
                .extend(vocab.tokenize(close.as_bytes(), false, true));
        }
    }
    if stopped {
        Next::Done(FinishReason::Stop, true)
    } else if s.matcher.as_ref().is_some_and(Matcher::is_stopped) {
        Next::Done(FinishReason::Stop, false)
    } else if s.out.capped() {
        Next::Done(FinishReason::MaxTokens, false)
    } else if s.n_past as u32 + 1 >= per_seq {
        Next::Done(FinishReason::ContextFull, false)
    } else {
        Next::Token(tok)
    }
}

/// After a decode that fed `s`'s next token at batch index `idx` followed by its draft at
/// `idx + 1..`: pick tokens position by position while each one picked is the draft token
/// fed after it (so the logits of the next position were computed from the right prefix).
/// Returns how the sequence goes on and how many draft tokens were kept; `s.n_past` counts
/// the positions whose KV stays valid.
pub(super) fn verify(
    s: &mut Seq,
    ctx: &LlamaContext<'_>,
    idx: i32,
    vocab: &LlamaVocab<'_>,
    grammars: &Grammars,
    per_seq: u32,
) -> (Next, usize) {
    let draft = std::mem::take(&mut s.draft);
    let base = s.n_past;
    let mut kept = 0;
    loop {
        s.n_past = base + kept as i32;
        let next = take_token(s, ctx, idx + kept as i32, vocab, grammars, per_seq);
        match next {
            Next::Token(t) if kept < draft.len() && t == draft[kept] => kept += 1,
            _ => return (next, kept),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{first_highest, highest};

    #[test]
    fn the_k_highest_come_sorted_with_ties_to_the_lower_index() {
        let v = [0.1, 5.0, -2.0, 5.0, 3.0, f32::NAN, 4.0, 3.0];
        let mut out = Vec::new();
        highest(&v, 3, &mut out);
        assert_eq!(out, vec![(1, 5.0), (3, 5.0), (6, 4.0)]);
        highest(&v, 5, &mut out);
        assert_eq!(out, vec![(1, 5.0), (3, 5.0), (6, 4.0), (4, 3.0), (7, 3.0)]);
        // Of equal values at the cut, the lower index stays.
        highest(&[1.0, 1.0, 1.0, 2.0], 2, &mut out);
        assert_eq!(out, vec![(3, 2.0), (0, 1.0)]);
        // k past the length: all of them (NaN left out).
        highest(&v, 50, &mut out);
        assert_eq!(out.len(), 7);
        highest(&v, 0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn the_first_of_the_highest_is_picked() {
        assert_eq!(first_highest(&[0.5, 2.0, -1.0, 2.0]), 1);
        assert_eq!(first_highest(&[3.0, 3.0]), 0);
        assert_eq!(first_highest(&[-5.0, f32::NEG_INFINITY, -4.0]), 2);
        assert_eq!(first_highest(&[]), 0);
    }
}
