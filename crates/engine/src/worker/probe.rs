//! Whether checking a draft in one batch gives exactly the logits one-token steps give, on
//! this model, build and context. Speculative decoding keeps a draft token only when the
//! sampler picks it from the batch's logits; if those differed in the last bit from the
//! logits of a one-token step, a near tie could go the other way and speculation would
//! change an answer. Which kernels a batch of a few tokens takes depends on the weights'
//! types, the backend and the attention path, so this is measured at load rather than
//! assumed: a few tokens decoded one by one, then the same tokens in batches of several
//! sizes, compared bit for bit.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

const TEXT: &str = "The keeper climbed the stairs of the lighthouse every evening at dusk, \
lit the lamp, wound the clockwork and wrote the weather in the log before supper.";
/// Prompt tokens before the checked ones: near the start of a context, and past 512 cells,
/// where llama.cpp's CPU flash attention splits a lone one-token step's attention across
/// threads (a batch of several rows is not split, and rounds differently). The deep one is
/// checked first: where it differs, that is found without the other.
const DEPTHS: [usize; 2] = [520, 40];
/// Tokens per prefill decode (within any batch size the engine is given).
const CHUNK: usize = 64;
/// Batch sizes checked (the next token plus drafts), ascending.
const SIZES: [usize; 4] = [2, 3, 5, 9];
/// The largest of them: one-token steps taken at each depth.
const MOST: usize = SIZES[SIZES.len() - 1];

/// Check in `slot` (left empty afterwards), whose stream holds `per_seq` cells (depths that
/// do not fit are skipped). `Err` says what differed or failed.
pub(super) fn verification_is_exact(
    ctx: &mut LlamaContext<'_>,
    model: &LlamaModel,
    slot: i32,
    per_seq: usize,
) -> Result<(), String> {
    let deepest = DEPTHS.iter().copied().max().unwrap_or(0);
    let mut tokens = Vec::new();
    while tokens.len() < deepest + MOST {
        let more = model.vocab().tokenize(TEXT.as_bytes(), false, false);
        if more.is_empty() {
            return Err("the probe text has no tokens for this tokenizer".into());
        }
        tokens.extend(more);
    }
    let mut result = Ok(());
    for depth in DEPTHS {
        if depth + MOST <= per_seq {
            result = run(ctx, &tokens, depth, slot);
        }
        if result.is_err() {
            break;
        }
    }
    let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
    result
}

fn run(
    ctx: &mut LlamaContext<'_>,
    tokens: &[LlamaToken],
    prefix: usize,
    slot: i32,
) -> Result<(), String> {
    let mut batch = LlamaBatch::new(CHUNK.max(MOST), 1);
    let decode = |ctx: &mut LlamaContext<'_>, batch: &mut LlamaBatch<'_>| {
        ctx.decode(batch).map_err(|e| format!("decode failed: {e}"))
    };
    let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
    for (c, part) in tokens[..prefix].chunks(CHUNK).enumerate() {
        batch.clear();
        for (i, &t) in part.iter().enumerate() {
            batch
                .add(t, (c * CHUNK + i) as i32, &[slot], false)
                .map_err(|e| e.to_string())?;
        }
        decode(ctx, &mut batch)?;
    }
    // One token a step.
    let mut single: Vec<Vec<f32>> = Vec::with_capacity(MOST);
    for (k, &t) in tokens[prefix..prefix + MOST].iter().enumerate() {
        batch.clear();
        batch
            .add(t, (prefix + k) as i32, &[slot], true)
            .map_err(|e| e.to_string())?;
        decode(ctx, &mut batch)?;
        single.push(ctx.get_logits_ith(0).to_vec());
    }
    // The same tokens as one batch, for each size.
    for n in SIZES {
        let _ = ctx.clear_kv_cache_seq(Some(slot as u32), Some(prefix as u32), None);
        batch.clear();
        for (k, &t) in tokens[prefix..prefix + n].iter().enumerate() {
            batch
                .add(t, (prefix + k) as i32, &[slot], true)
                .map_err(|e| e.to_string())?;
        }
        decode(ctx, &mut batch)?;
        for (k, want) in single.iter().take(n).enumerate() {
            same(ctx.get_logits_ith(k as i32), want).map_err(|d| {
                format!(
                    "{prefix} tokens into a context, in a batch of {n}, position {k}'s logits \
                     differ from a one-token step's by up to {d:e}"
                )
            })?;
        }
        // The first token kept, the rest rejected: the next one-token step must see the
        // KV the plain steps left.
        let _ = ctx.clear_kv_cache_seq(Some(slot as u32), Some(prefix as u32 + 1), None);
        batch.clear();
        batch
            .add(tokens[prefix + 1], prefix as i32 + 1, &[slot], true)
            .map_err(|e| e.to_string())?;
        decode(ctx, &mut batch)?;
        same(ctx.get_logits_ith(0), &single[1]).map_err(|d| {
            format!("after a rejected draft of {n}, the next step's logits differ by up to {d:e}")
        })?;
    }
    Ok(())
}

/// `Err(largest difference)` unless bit-identical.
fn same(got: &[f32], want: &[f32]) -> Result<(), f32> {
    if got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    {
        return Ok(());
    }
    Err(got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(f32::INFINITY.min(0.0), f32::max))
}
