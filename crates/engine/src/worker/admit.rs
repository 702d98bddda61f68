//! Requests coming in: queue checks, waiting for a state read from disk, and admission into
//! a KV slot (reusing the longest cached prefix); forgetting a scope's states.

use super::sample::sampler_for;
use super::*;
use crate::scheduler::{next_to_admit, Queued};

impl Worker<'_> {
    pub(super) fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Drain { done } => self.draining = Some(done),
            Command::Forget { scope } => self.forget(&scope),
            Command::Generate {
                rendered,
                admit,
                span,
            } => {
                let result = self.prepare(*rendered);
                match result {
                    Ok(p) => {
                        let (tx, events) = mpsc::unbounded_channel();
                        let prompt_tokens = p.prompt.len() as u64;
                        let gen = Generation {
                            prompt_tokens,
                            media_tokens: media::tokens_by_modality(&p.media),
                            events,
                        };
                        if admit.send(Ok(gen)).is_ok() {
                            let ids: Vec<i32> = p.prompt.iter().map(|t| t.0).collect();
                            let restore = self.request_restore(&p.request.cache_scope, &ids);
                            self.waiting.push_back(Pending {
                                restore,
                                prompt: p.prompt,
                                media: p.media,
                                prepared: p.prepared,
                                request: p.request,
                                tx,
                                matcher: p.matcher,
                                in_thought: p.in_thought,
                                span,
                                queued: Instant::now(),
                            });
                        }
                    }
                    Err(e) => {
                        let _ = admit.send(Err(e));
                    }
                }
            }
        }
    }

    pub(super) fn forget(&mut self, scope: &str) {
        // The context is needed to clear slots: do it at the next step.
        self.forget_pending.push(scope.to_owned());
    }

    /// Clear the slots and disk states of scopes whose owner asked them gone.
    pub(super) fn apply_forgets(&mut self, ctx: &mut LlamaContext<'_>) {
        for scope in std::mem::take(&mut self.forget_pending) {
            let freed = self.kv.forget(&scope);
            for slot in &freed {
                let _ = ctx.clear_kv_cache_seq(Some(*slot as u32), None, None);
                if let Some(d) = self.drafter.as_mut() {
                    d.forget(*slot);
                }
            }
            self.extensions.retain(|e| e.scope != scope);
            let on_disk = self.spill.as_ref().map_or(0, |d| d.forget_scope(&scope));
            tracing::debug!(
                slots = freed.len(),
                on_disk,
                "forgot a scope's cached states"
            );
        }
    }

    /// Queue checks and the media of a request the caller rendered and tokenized, its
    /// grammar compiled (the template, the tokenizer and the grammar compiler never run on
    /// this thread).
    fn prepare(&mut self, rendered: Rendered) -> Result<Prepared, EngineError> {
        if self.waiting.len() >= self.max_queue {
            return Err(EngineError::Overloaded(format!(
                "{} requests are already waiting for model {}",
                self.waiting.len(),
                self.model_id
            )));
        }
        let Rendered {
            request,
            matcher,
            runs,
            in_thought,
        } = rendered;
        let Tokenized {
            tokens,
            media,
            prepared,
        } = self.place_media(runs, &request.messages)?;
        let limit = u64::from(self.per_seq.saturating_sub(1));
        if tokens.len() as u64 > limit {
            return Err(EngineError::PromptTooLong {
                model: self.model_id.clone(),
                tokens: tokens.len() as u64,
                limit,
            });
        }
        Ok(Prepared {
            prompt: tokens,
            media,
            prepared,
            request,
            matcher,
            in_thought,
        })
    }

    /// Move waiting requests into slots (up to `parallel` live sequences), reusing the longest
    /// cached prefix; drop cancelled ones.
    pub(super) fn admit(&mut self, ctx: &mut LlamaContext<'_>) {
        self.waiting.retain(|p| !p.tx.is_closed());
        while self.active.len() < self.parallel {
            // In order, passing requests whose state is still being read from disk.
            let queue: Vec<Queued> = self
                .waiting
                .iter()
                .map(|p| Queued {
                    cancelled: p.tx.is_closed(),
                    reading: matches!(p.restore, Restore::Reading(_)),
                })
                .collect();
            let Some(k) = next_to_admit(&queue) else {
                break;
            };
            let Some(mut p) = self.waiting.remove(k) else {
                break;
            };
            let span = p.span.clone();
            let _entered = span.enter();
            let ids: Vec<i32> = p.prompt.iter().map(|t| t.0).collect();
            let scope = p.request.cache_scope.clone();
            let restore = std::mem::replace(&mut p.restore, Restore::Nothing);
            self.apply_restore(ctx, &scope, &ids, restore);
            let live: Vec<i32> = self.active.iter().map(|s| s.slot).collect();
            let Some((lease, copy_from)) = self.kv.acquire_near(&scope, &ids, &live) else {
                self.waiting.insert(k, p);
                break;
            };
            let slot = lease.slot;
            if let Some(src) = copy_from {
                // The conversation's state lives in another slot: copy it next to the live
                // ones (a bit-exact copy of the whole stream, done before the next decode).
                let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
                if let Err(e) = ctx.copy_kv_cache_seq(src, slot, None, None) {
                    tracing::warn!("cannot copy KV slot {src} to {slot}: {e}");
                }
                tracing::debug!(
                    from = src,
                    to = slot,
                    "moved a state next to the live slots"
                );
                self.copy_pending = true;
                self.metrics.relocations.increment(1);
            }
            self.extensions.retain(|e| e.slot != slot);
            let mut reused = media::align_reuse(&p.media, lease.reused);
            // Drop whatever the slot holds past the reused prefix.
            let kept = ctx
                .clear_kv_cache_seq(Some(slot as u32), Some(reused as u32), None)
                .unwrap_or(false);
            if !kept {
                let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
                reused = 0;
            }
            tracing::debug!(
                slot,
                reused,
                prompt = ids.len(),
                evicted = lease.evicted,
                "admitted"
            );
            if reused > 0 {
                self.metrics.cache_hits.increment(1);
                self.metrics.tokens_reused.increment(reused as u64);
            } else {
                self.metrics.cache_misses.increment(1);
            }
            if lease.evicted {
                self.metrics.evictions.increment(1);
            }
            let think = self.template.think_tags().cloned();
            self.active.push(Seq {
                timing: Timing {
                    queued: p.queued,
                    admitted: Instant::now(),
                    first_token: None,
                    drafted: 0,
                    accepted: 0,
                },
                span: p.span,
                slot,
                scope,
                out: Output::new(&p.request, think, p.in_thought, p.tx),
                matcher: p.matcher,
                closer: Closer::default(),
                forced: VecDeque::new(),
                sampler: sampler_for(&p.request),
                preselect: sample::Preselect::for_request(&p.request),
                history: ids,
                policy: DraftPolicy::new(self.draft_max),
                draft: Vec::new(),
                forced_draft: false,
                prompt: p.prompt,
                media: p.media,
                prepared: p.prepared,
                reused,
                fed: reused,
                n_past: reused as i32,
                next: None,
                output: Vec::new(),
            });
        }
    }
}
