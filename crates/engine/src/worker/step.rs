//! One step of the engine: drafts, the batch plan, one `decode`, then picking and checking
//! tokens and finishing sequences (their KV kept for the next turn, prefilled with the
//! answer in the background).

use super::*;

impl Worker<'_> {
    /// Each decoding sequence's draft for this step: the tokens it is forced to take next,
    /// or what [`speculate::lookup`] finds in its prompt and answer, as long as its policy
    /// allows and its context and output cap have room.
    fn draft_all(&mut self) {
        let n_vocab = self.model.n_vocab();
        // Drafts pay only as far as their chance of acceptance beats their cost.
        let decoders = self.active.iter().filter(|s| s.next.is_some()).count();
        let ratio = if self.draft_always {
            0.0
        } else {
            self.step_budget.draft_cost_ratio(decoders)
        };
        // Sequences for the draft model: (index, tokens wanted).
        let mut for_model: Vec<(usize, usize)> = Vec::new();
        for (i, s) in self.active.iter_mut().enumerate() {
            s.draft.clear();
            s.forced_draft = false;
            if s.next.is_none() || self.draft_max == 0 {
                continue;
            }
            // The next token takes a position and an answer token; drafts the rest.
            let room = (self.per_seq as usize)
                .saturating_sub(s.n_past as usize + 2)
                .min(
                    s.out
                        .max_output
                        .saturating_sub(s.out.answer_tokens())
                        .saturating_sub(1) as usize,
                );
            if !s.forced.is_empty() {
                s.draft.extend(s.forced.iter().take(room));
                s.forced_draft = true;
                continue;
            }
            let want = s.policy.budget_at(ratio).min(room);
            if want > 0 {
                s.draft.extend(
                    speculate::lookup(&s.history, want, n_vocab)
                        .into_iter()
                        .map(LlamaToken),
                );
                if s.draft.is_empty() && self.drafter.is_some() {
                    for_model.push((i, want));
                }
            }
        }
        if for_model.is_empty() {
            return;
        }
        let Some(drafter) = self.drafter.as_mut() else {
            return;
        };
        let asks: Vec<drafter::Ask<'_>> = for_model
            .iter()
            .map(|&(i, want)| drafter::Ask {
                slot: self.active[i].slot,
                context: &self.active[i].history,
                want,
            })
            .collect();
        match drafter.propose(&asks) {
            Ok(drafts) => {
                for ((i, _), d) in for_model.into_iter().zip(drafts) {
                    self.active[i].draft.extend(d.into_iter().map(LlamaToken));
                }
            }
            Err(e) => {
                // Drafting is an optimisation: answers go on without it.
                tracing::error!(model = %self.model_id, "{e}; the draft model is not used again");
                self.drafter = None;
            }
        }
    }

    pub(super) fn step(&mut self, ctx: &mut LlamaContext<'_>) {
        if !self.forget_pending.is_empty() {
            self.apply_forgets(ctx);
        }
        // Cancelled sequences free their slot before anything is computed for them.
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].out.tx.is_closed() {
                let s = self.active.swap_remove(i);
                self.discard(ctx, s.slot);
            } else {
                i += 1;
            }
        }
        self.collect_reads();
        self.admit(ctx);
        if self.active.is_empty() && self.extensions.is_empty() {
            return;
        }
        // With one KV stream per slot, llama.cpp puts sequences into one ubatch only while
        // their ids appear in the batch as consecutive increasing numbers; every break starts
        // another ubatch, which reads all the weights again. So the batch goes in slot order
        // (and free slots are taken lowest first, keeping live slots contiguous where reuse
        // allows).
        self.active.sort_by_key(|s| s.slot);
        self.extensions.sort_by_key(|e| e.slot);
        if self.projector.is_some() {
            self.encode_media(ctx);
            if self.active.is_empty() && self.extensions.is_empty() {
                return;
            }
        }

        self.draft_all();
        let states: Vec<SeqState> = self
            .active
            .iter()
            .map(|s| SeqState {
                pending_prompt: s.prompt.len() - s.fed,
                decoding: s.next.is_some(),
                draft: s.draft.len(),
            })
            .collect();
        let decoders = states.iter().filter(|s| s.decoding).count();
        let limits = Limits {
            budget: self.batch_size,
            prefill_cap: self.step_budget.prefill_cap(decoders, self.batch_size),
            draft_cap: self.draft_max,
            mixing: if self.prompts_apart {
                Mixing::Apart {
                    prompt_turn: self.prompt_turn,
                }
            } else {
                Mixing::Together
            },
        };
        self.prompt_turn = !self.prompt_turn;
        let planned = plan(&states, limits);
        self.batch.clear();
        let mut logits_at: Vec<Option<i32>> = vec![None; self.active.len()];
        let (mut prefilled, mut decoded, mut drafted) = (0u64, 0u64, 0u64);
        for (i, (s, &n)) in self.active.iter_mut().zip(&planned).enumerate() {
            if n == 0 {
                s.draft.clear();
                continue;
            }
            if let Some(tok) = s.next.take() {
                // The next token, then the draft: logits at each, to check the draft.
                s.draft.truncate(n - 1);
                if self.batch.add(tok, s.n_past, &[s.slot], true).is_err() {
                    s.next = Some(tok);
                    s.draft.clear();
                    continue;
                }
                logits_at[i] = Some(self.batch.n_tokens() - 1);
                s.n_past += 1;
                decoded += 1;
                for (k, &d) in s.draft.iter().enumerate() {
                    if self
                        .batch
                        .add(d, s.n_past + k as i32, &[s.slot], true)
                        .is_err()
                    {
                        s.draft.truncate(k);
                        break;
                    }
                }
                drafted += s.draft.len() as u64;
            } else {
                // A prefill stops at an image (evaluated through the projector next step).
                let n = media::tokens_before_media(&s.media, s.fed, n);
                for k in 0..n {
                    let last = s.fed + k + 1 == s.prompt.len();
                    if self
                        .batch
                        .add(s.prompt[s.fed + k], s.n_past, &[s.slot], last)
                        .is_err()
                    {
                        break;
                    }
                    s.n_past += 1;
                    if last {
                        logits_at[i] = Some(self.batch.n_tokens() - 1);
                    }
                }
                s.fed += n;
                prefilled += n as u64;
            }
        }
        // What live work left of the budget goes to finished answers, one at a time (two in
        // one batch would be split into ubatches of equal parts, see `Mixing`).
        let room = background_budget(&states, self.batch_size, EXTEND_CHUNK);
        let mut extended: Vec<(usize, usize)> = Vec::new();
        if let Some(e) = self.extensions.first().filter(|_| room > 0) {
            let n = chunk(e.tokens.len() - e.fed, room);
            let mut added = 0;
            for j in 0..n {
                let pos = (e.fed + j) as i32;
                if self
                    .batch
                    .add(e.tokens[e.fed + j], pos, &[e.slot], false)
                    .is_err()
                {
                    break;
                }
                added += 1;
            }
            prefilled += added as u64;
            extended.push((0, added));
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        // Each slot has its own KV stream and every sequence stays within its stream's size
        // (prompt limit at admission, `ContextFull` while generating, drafts that fit), so
        // evicting another slot could never make room here: any decode failure fails the
        // batch.
        let started = Instant::now();
        self.copy_pending = false;
        if let Err(e) = ctx.decode(&mut self.batch) {
            self.fail_all(ctx, &format!("decode failed: {e}"));
            return;
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::trace!(prefilled, decoded, drafted, secs, "step");
        self.step_budget
            .observe(prefilled as usize, (decoded + drafted) as usize, secs);
        if prefilled == 0 && decoded == 1 {
            self.step_budget.observe_single(drafted as usize, secs);
        }
        if prefilled as usize >= RestoreCosts::MIN_PREFILL {
            self.costs
                .observe_prefill((prefilled + decoded + drafted) as usize, secs);
        }

        self.metrics.prefill_tokens.increment(prefilled);
        self.metrics.decode_tokens.increment(decoded);
        self.advance_extensions(ctx, &extended);
        let vocab = self.model.vocab();
        let mut finished: Vec<(usize, FinishReason, bool)> = Vec::new();
        let (mut proposed, mut accepted) = (0u64, 0u64);
        for (i, s) in self.active.iter_mut().enumerate() {
            let Some(idx) = logits_at[i] else { continue };
            let (n_draft, forced) = (s.draft.len(), s.forced_draft);
            let (next, kept) = sample::verify(s, ctx, idx, &vocab, &self.grammars, self.per_seq);
            if n_draft > 0 && !forced {
                s.policy.observe(n_draft, kept);
                s.timing.drafted += n_draft;
                s.timing.accepted += kept;
                proposed += n_draft as u64;
                accepted += kept as u64;
            }
            match next {
                sample::Next::Token(t) => {
                    if kept < n_draft {
                        // The rejected drafts' cells go; the KV holds positions 0..n_past.
                        let _ = ctx.clear_kv_cache_seq(
                            Some(s.slot as u32),
                            Some(s.n_past as u32),
                            None,
                        );
                    }
                    s.next = Some(t);
                }
                sample::Next::Done(reason, stopped) => finished.push((i, reason, stopped)),
            }
        }
        if proposed > 0 {
            self.metrics.record_drafts(proposed, accepted);
        }
        // Remove from the back so indices stay valid.
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (i, reason, stopped) in finished {
            let mut s = self.active.swap_remove(i);
            s.out
                .finish(reason, stopped, s.prompt.len() as u64, s.reused as u64);
            s.span.in_scope(|| {
                s.timing
                    .log(s.prompt.len(), s.reused, s.output.len(), reason);
            });
            // What stays in the slot. By default only the prompt's KV: the generated tokens'
            // K/V were written by one-token decodes, which round differently from the batched
            // prefill a fresh request would do (`examples/kv_probe.rs`, case G), so reusing
            // them could change the next answer; the answer is prefilled into the slot in the
            // background instead (see `Extension`). With `--reuse-decoded-kv` everything
            // decoded stays: the KV holds positions 0..n_past.
            let decoded = if self.reuse_decoded_kv {
                (s.n_past as usize).saturating_sub(s.prompt.len())
            } else {
                0
            };
            let held: Vec<i32> = s
                .prompt
                .iter()
                .chain(s.output.iter().take(decoded))
                .map(|t| t.0)
                .collect();
            let _ = ctx.clear_kv_cache_seq(Some(s.slot as u32), Some(held.len() as u32), None);
            // This state goes to disk now. An extended one follows once the answer is
            // prefilled; until then (or if that never completes, say because the server stops
            // first) this one is what a later turn restores.
            self.spill(ctx, s.slot, &s.scope, &held);
            let held_len = held.len();
            self.kv.finish(s.slot, &s.scope, held);
            if self.reuse_decoded_kv {
                continue;
            }
            let room = (self.per_seq as usize).saturating_sub(1);
            let mut tokens = s.prompt;
            tokens.extend(s.output);
            tokens.truncate(room);
            if tokens.len() > held_len {
                // A one-token answer goes in with the prompt's last token, so that neither is
                // computed alone (`kv::PREFILL_TAIL`).
                let mut fed = held_len;
                if tokens.len() == held_len + 1 && held_len >= 2 {
                    fed = held_len - 1;
                    let _ = ctx.clear_kv_cache_seq(Some(s.slot as u32), Some(fed as u32), None);
                    let kept = tokens[..fed].iter().map(|t| t.0).collect();
                    self.kv.finish(s.slot, &s.scope, kept);
                }
                self.extensions.push(Extension {
                    slot: s.slot,
                    scope: s.scope,
                    fed,
                    tokens,
                });
            }
        }
    }

    /// After a decode: record the answer tokens fed for each extension (`(index, tokens)`);
    /// a complete one makes its slot hold prompt and answer, and goes to disk.
    fn advance_extensions(&mut self, ctx: &LlamaContext<'_>, extended: &[(usize, usize)]) {
        let mut done = Vec::new();
        for &(k, n) in extended {
            let e = &mut self.extensions[k];
            e.fed += n;
            let held: Vec<i32> = e.tokens[..e.fed].iter().map(|t| t.0).collect();
            self.kv.finish(e.slot, &e.scope, held);
            if e.fed == e.tokens.len() {
                done.push(k);
            }
        }
        for k in done.into_iter().rev() {
            let e = self.extensions.swap_remove(k);
            let held: Vec<i32> = e.tokens.iter().map(|t| t.0).collect();
            self.spill(ctx, e.slot, &e.scope, &held);
        }
    }
}
