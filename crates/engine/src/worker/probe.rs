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

const TEXT: &str = "The keeper climbed the stairs of the lighthouse every evening at dusk, \
lit the lamp, wound the clockwork and wrote the weather in the log before supper.";
/// Times the text is repeated, and the prompt tokens before the checked ones.
const REPEAT: usize = 2;
const PREFIX: usize = 40;
/// Batch sizes checked (the next token plus drafts).
const SIZES: [usize; 4] = [2, 3, 5, 9];

/// Check in `slot` (left empty afterwards). `Err` says what differed or failed.
pub(super) fn verification_is_exact(
    ctx: &mut LlamaContext<'_>,
    model: &LlamaModel,
    slot: i32,
) -> Result<(), String> {
    let result = run(ctx, model, slot);
    let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
    result
}

fn run(ctx: &mut LlamaContext<'_>, model: &LlamaModel, slot: i32) -> Result<(), String> {
    let most = SIZES.iter().copied().max().unwrap_or(1);
    let tokens = model
        .vocab()
        .tokenize(TEXT.repeat(REPEAT).as_bytes(), false, false);
    if tokens.len() < PREFIX + most {
        return Err("the probe text is too short for this tokenizer".into());
    }
    let mut batch = LlamaBatch::new(PREFIX + most, 1);
    let decode = |ctx: &mut LlamaContext<'_>, batch: &mut LlamaBatch<'_>| {
        ctx.decode(batch).map_err(|e| format!("decode failed: {e}"))
    };
    let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
    batch.clear();
    for (i, &t) in tokens[..PREFIX].iter().enumerate() {
        batch
            .add(t, i as i32, &[slot], false)
            .map_err(|e| e.to_string())?;
    }
    decode(ctx, &mut batch)?;
    // One token a step.
    let mut single: Vec<Vec<f32>> = Vec::with_capacity(most);
    for (k, &t) in tokens[PREFIX..PREFIX + most].iter().enumerate() {
        batch.clear();
        batch
            .add(t, (PREFIX + k) as i32, &[slot], true)
            .map_err(|e| e.to_string())?;
        decode(ctx, &mut batch)?;
        single.push(ctx.get_logits_ith(0).to_vec());
    }
    // The same tokens as one batch, for each size.
    for n in SIZES {
        let _ = ctx.clear_kv_cache_seq(Some(slot as u32), Some(PREFIX as u32), None);
        batch.clear();
        for (k, &t) in tokens[PREFIX..PREFIX + n].iter().enumerate() {
            batch
                .add(t, (PREFIX + k) as i32, &[slot], true)
                .map_err(|e| e.to_string())?;
        }
        decode(ctx, &mut batch)?;
        for (k, want) in single.iter().take(n).enumerate() {
            same(ctx.get_logits_ith(k as i32), want)
                .map_err(|d| format!("in a batch of {n}, position {k}'s logits differ from a one-token step's by up to {d:e}"))?;
        }
        // The first token kept, the rest rejected: the next one-token step must see the
        // KV the plain steps left.
        let _ = ctx.clear_kv_cache_seq(Some(slot as u32), Some(PREFIX as u32 + 1), None);
        batch.clear();
        batch
            .add(tokens[PREFIX + 1], PREFIX as i32 + 1, &[slot], true)
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
