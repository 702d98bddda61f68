//! A draft model (`--draft-model`): a smaller model with the same vocabulary proposes each
//! sequence's next tokens, greedily, for the served model to check in one batch like any
//! other draft ([`super::step`]). It helps where prompt lookup finds nothing to copy.
//!
//! The draft model has its own context with one KV stream per slot of the served model, and
//! remembers which tokens each stream holds. Before drafting for a sequence it keeps the
//! longest prefix its stream shares with the sequence's context (prompt and answer so far),
//! removes the rest (drafts that were rejected, or another conversation that held the slot),
//! and feeds what is missing; then it decodes one token a round, for every drafting sequence
//! in one batch. It never changes an answer: only the served model's logits pick tokens.

use std::path::Path;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::speculate::resume_at;
use crate::EngineConfig;

/// A draft model's file, loaded, after checking that it tokenizes like the served model.
pub(crate) fn load(
    backend: &LlamaBackend,
    path: &Path,
    target: &LlamaModel,
    gpu_layers: u32,
) -> Result<LlamaModel, String> {
    let mut params = LlamaModelParams::default();
    if gpu_layers > 0 {
        params = params.with_n_gpu_layers(gpu_layers);
    }
    let draft = LlamaModel::load_from_file(backend, path, &params)
        .map_err(|e| format!("cannot load draft model {}: {e}", path.display()))?;
    same_vocabulary(target, &draft)
        .map_err(|e| format!("draft model {} does not fit: {e}", path.display()))?;
    Ok(draft)
}

/// Whether `draft`'s token ids mean what `target`'s do (every id the same text).
fn same_vocabulary(target: &LlamaModel, draft: &LlamaModel) -> Result<(), String> {
    let (n, m) = (target.n_vocab(), draft.n_vocab());
    if n != m {
        return Err(format!("its vocabulary has {m} tokens, the model's {n}"));
    }
    let (tv, dv) = (target.vocab(), draft.vocab());
    for id in 0..n {
        let t = LlamaToken(id);
        if tv.token_to_piece(t, true, None) != dv.token_to_piece(t, true, None) {
            return Err(format!("token {id} differs"));
        }
    }
    Ok(())
}

/// Tokens of a context one call takes in for a sequence at most: a long new prompt reaches
/// the draft model over several steps (no draft for it meanwhile), so that no step stalls
/// the live streams for the whole prompt.
const CATCH_UP: usize = 256;

/// One sequence's request for a draft.
pub(super) struct Ask<'a> {
    /// The served model's KV slot (the draft model's stream).
    pub slot: i32,
    /// Prompt and answer so far, the next token last.
    pub context: &'a [i32],
    /// Tokens wanted.
    pub want: usize,
}

pub(super) struct Drafter<'m> {
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    /// The tokens each stream holds, from position 0.
    held: Vec<Vec<i32>>,
    n_vocab: i32,
}

impl<'m> Drafter<'m> {
    /// A context for `model` with `slots` streams of `per_seq` cells each.
    pub fn new(
        backend: &LlamaBackend,
        model: &'m LlamaModel,
        slots: u32,
        per_seq: u32,
        config: &EngineConfig,
    ) -> Result<Self, String> {
        let params = super::load::context_params(per_seq.saturating_mul(slots), slots, config);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| format!("cannot create the draft model's context: {e}"))?;
        Ok(Drafter {
            ctx,
            batch: LlamaBatch::new(config.batch_size as usize, 1),
            batch_size: config.batch_size as usize,
            held: vec![Vec::new(); slots as usize],
            n_vocab: model.n_vocab(),
        })
    }

    /// Empty one stream (its conversation's states were deleted: nothing of it stays here).
    pub fn forget(&mut self, slot: i32) {
        if let Some(held) = self.held.get_mut(slot as usize) {
            let _ = self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
            held.clear();
        }
    }

    /// Drafts for `asks`, in order (empty where the context holds media, which the draft
    /// model cannot read, and while a long context is still being taken in).
    pub fn propose(&mut self, asks: &[Ask<'_>]) -> Result<Vec<Vec<i32>>, String> {
        let mut drafts: Vec<Vec<i32>> = vec![Vec::new(); asks.len()];
        // Catch up: each stream keeps what it shares with its context and takes the rest,
        // logits at the last token. Feeds go in batches of at most `batch_size` tokens; a
        // sequence's first draft token is picked in the decode that holds its last token.
        let mut feeds: Vec<(usize, i32, i32, bool)> = Vec::new();
        for (i, a) in asks.iter().enumerate() {
            let Some(held) = self.held.get_mut(a.slot as usize) else {
                continue;
            };
            if a.want == 0
                || a.context.is_empty()
                || a.context.iter().any(|t| !(0..self.n_vocab).contains(t))
            {
                continue;
            }
            let keep = resume_at(held, a.context);
            if keep < held.len() {
                self.ctx
                    .clear_kv_cache_seq(Some(a.slot as u32), Some(keep as u32), None)
                    .map_err(|e| format!("cannot trim draft stream {}: {e}", a.slot))?;
                held.truncate(keep);
            }
            let last = a.context.len() - 1;
            let end = a.context.len().min(keep + CATCH_UP);
            for (p, &t) in a.context[..end].iter().enumerate().skip(keep) {
                feeds.push((i, p as i32, t, p == last));
            }
            held.extend_from_slice(&a.context[keep..end]);
        }
        for part in feeds.chunks(self.batch_size) {
            self.batch.clear();
            for &(i, pos, t, logits) in part {
                self.batch
                    .add(LlamaToken(t), pos, &[asks[i].slot], logits)
                    .map_err(|e| e.to_string())?;
            }
            self.decode()?;
            for (k, &(i, _, _, logits)) in part.iter().enumerate() {
                if logits {
                    drafts[i].push(self.argmax(k as i32));
                }
            }
        }
        // Then one token a round for every sequence that wants more.
        loop {
            self.batch.clear();
            let mut fed: Vec<usize> = Vec::new();
            for (i, a) in asks.iter().enumerate() {
                let d = &drafts[i];
                if d.is_empty() || d.len() >= a.want {
                    continue;
                }
                let held = &mut self.held[a.slot as usize];
                let t = d[d.len() - 1];
                self.batch
                    .add(LlamaToken(t), held.len() as i32, &[a.slot], true)
                    .map_err(|e| e.to_string())?;
                held.push(t);
                fed.push(i);
            }
            if fed.is_empty() {
                break;
            }
            self.decode()?;
            for (k, &i) in fed.iter().enumerate() {
                let t = self.argmax(k as i32);
                drafts[i].push(t);
            }
        }
        Ok(drafts)
    }

    fn decode(&mut self) -> Result<(), String> {
        self.ctx.decode(&mut self.batch).map_err(|e| {
            // What the streams hold is unknown after a failed decode: start afresh.
            self.ctx.clear_kv_cache();
            self.held.iter_mut().for_each(Vec::clear);
            format!("draft model decode failed: {e}")
        })
    }

    /// The most likely token at batch row `idx`.
    fn argmax(&self, idx: i32) -> i32 {
        super::sample::first_highest(self.ctx.get_logits_ith(idx)) as i32
    }
}
