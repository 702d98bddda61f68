//! The model's projector (vision and audio encoders): preparing media at admission and
//! evaluating it into a sequence's KV when its prefill reaches it.

use std::path::Path;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::mtmd::{
    MtmdBitmap, MtmdContext, MtmdContextParams, MtmdInputChunks, MtmdInputText,
};
use llama_cpp_2::token::LlamaToken;
use localgem_core::{Attachment, EngineError, MediaData};

use super::{Tokenized, Worker};
use crate::media::{self, MediaSpan};
use crate::EngineConfig;

/// A model's projector (llama.cpp's multimodal library): a vision encoder, an audio
/// encoder, or both.
pub(super) struct Projector {
    pub(super) ctx: MtmdContext,
    /// Its audio encoder's sample rate, when it has one.
    pub(super) audio_rate: Option<u32>,
    /// Positions each piece of media fills, by digest: a later turn with the same media
    /// needs its length but not its preprocessing.
    positions: std::collections::HashMap<[u8; 32], usize>,
}

/// The marker the projector's tokenizer replaces with a piece of media.
const MTMD_MARKER: &str = "<__media__>";

impl Projector {
    pub(super) fn load(
        path: &Path,
        model: &LlamaModel,
        config: &EngineConfig,
        use_gpu: bool,
    ) -> Result<Self, String> {
        let params = MtmdContextParams {
            use_gpu,
            print_timings: false,
            n_threads: config.threads,
            media_marker: std::ffi::CString::new(MTMD_MARKER).expect("no NUL"),
            image_min_tokens: -1,
            image_max_tokens: -1,
        };
        let p = path.to_string_lossy();
        let ctx = MtmdContext::init_from_file(&p, model, &params).map_err(|e| {
            format!(
                "cannot load the projector {} (is it made for this model?): {e}",
                path.display()
            )
        })?;
        let audio_rate = ctx
            .support_audio()
            .then(|| ctx.get_audio_sample_rate())
            .flatten();
        if !ctx.support_vision() && audio_rate.is_none() {
            return Err(format!(
                "{} has neither a vision nor an audio encoder",
                path.display()
            ));
        }
        Ok(Projector {
            ctx,
            audio_rate,
            positions: std::collections::HashMap::new(),
        })
    }

    /// Whether it takes this kind of media.
    fn takes(&self, media: &Attachment) -> bool {
        match &media.data {
            MediaData::Image(_) => self.ctx.support_vision(),
            MediaData::Audio(a) => self.audio_rate == Some(a.sample_rate),
        }
    }

    /// Media as projector input: an image preprocessed (resized, sliced), audio turned
    /// into mel frames, wrapped in the model's media tokens.
    fn chunks(&mut self, media: &Attachment) -> Result<MtmdInputChunks, String> {
        let what = media.kind();
        let bitmap = match &media.data {
            MediaData::Image(image) => {
                MtmdBitmap::from_image_data(image.width, image.height, &image.rgb)
            }
            MediaData::Audio(audio) => MtmdBitmap::from_audio_data(&audio.samples),
        }
        .map_err(|e| format!("the {what} cannot be prepared: {e}"))?;
        let text = MtmdInputText {
            text: MTMD_MARKER.to_owned(),
            add_special: false,
            parse_special: true,
        };
        let chunks = self
            .ctx
            .tokenize(text, &[&bitmap])
            .map_err(|e| format!("the {what} cannot be prepared: {e}"))?;
        if self.positions.len() >= 4096 {
            self.positions.clear();
        }
        self.positions
            .insert(*media.digest(), chunks.total_positions().max(0) as usize);
        Ok(chunks)
    }

    /// Positions media fills, with its projector input when that had to be prepared to
    /// find them (media seen before is prepared only if it has to be encoded again).
    fn prepare(&mut self, media: &Attachment) -> Result<(usize, Option<MtmdInputChunks>), String> {
        match self.positions.get(media.digest()) {
            Some(&n) => Ok((n, None)),
            None => self
                .chunks(media)
                .map(|c| (c.total_positions().max(0) as usize, Some(c))),
        }
    }
}

impl Worker<'_> {
    /// A prompt's tokens: its text runs (see [`Rendered::runs`]) with each piece of media
    /// between them, as the synthetic ids of the positions it fills.
    pub(super) fn place_media(
        &mut self,
        runs: Vec<Vec<LlamaToken>>,
        messages: &[localgem_core::ChatMessage],
    ) -> Result<Tokenized, EngineError> {
        let all = media::media_of(messages);
        let mut runs = runs.into_iter();
        let mut tokens = runs.next().unwrap_or_default();
        if all.is_empty() {
            return Ok(Tokenized {
                tokens,
                media: Vec::new(),
                prepared: Vec::new(),
            });
        }
        let cannot = |kind: &str| {
            EngineError::Unsupported(format!("model {} cannot take {kind} input", self.model_id))
        };
        let Some(projector) = self.projector.as_mut() else {
            return Err(cannot(all[0].kind()));
        };
        let mut spans = Vec::new();
        let mut prepared = Vec::new();
        for (i, (piece, run)) in all.iter().zip(runs).enumerate() {
            if !projector.takes(piece) {
                return Err(match &piece.data {
                    MediaData::Audio(a) if projector.audio_rate.is_some() => {
                        EngineError::InvalidPrompt(format!(
                            "audio {}: sampled at {} Hz, but the model's audio encoder takes {} Hz",
                            i + 1,
                            a.sample_rate,
                            projector.audio_rate.unwrap_or_default()
                        ))
                    }
                    _ => cannot(piece.kind()),
                });
            }
            let (n, chunks) = projector.prepare(piece).map_err(|e| {
                EngineError::InvalidPrompt(format!("{} {}: {e}", piece.kind(), i + 1))
            })?;
            prepared.push(chunks);
            spans.push(MediaSpan {
                start: tokens.len(),
                len: n,
                media: piece.clone(),
            });
            tokens.extend(
                media::synthetic_ids(piece.digest(), n)
                    .into_iter()
                    .map(LlamaToken),
            );
            tokens.extend(run);
        }
        if spans.last().is_some_and(|s| s.end() == tokens.len()) {
            // Its logits would be needed, and the projector's evaluation does not keep them.
            return Err(EngineError::InvalidPrompt(
                "the chat template ends the prompt with media".into(),
            ));
        }
        Ok(Tokenized {
            tokens,
            media: spans,
            prepared,
        })
    }

    /// Run the media that live sequences have reached through the projector, into their
    /// KV (each piece is encoded here once; later turns find its KV by its synthetic ids).
    /// Other sequences wait meanwhile: the projector's evaluation is not batched.
    pub(super) fn encode_media(&mut self, ctx: &mut LlamaContext<'_>) {
        let Some(projector) = self.projector.as_mut() else {
            return;
        };
        let mut failed: Vec<(usize, String)> = Vec::new();
        for (i, s) in self.active.iter_mut().enumerate() {
            if s.next.is_some() {
                continue;
            }
            while let Some(k) = media::starting_at(&s.media, s.fed) {
                let (end, piece) = (s.media[k].end(), s.media[k].media.clone());
                let started = Instant::now();
                let chunks = match s.prepared.get_mut(k).and_then(Option::take) {
                    Some(c) => Ok(c),
                    None => projector.chunks(&piece),
                };
                let evaluated = chunks.and_then(|chunks| {
                    chunks
                        .eval_chunks(
                            &mut projector.ctx,
                            ctx,
                            s.n_past,
                            s.slot,
                            self.batch_size as i32,
                            false,
                        )
                        .map_err(|e| format!("the {} could not be evaluated: {e}", piece.kind()))
                });
                match evaluated {
                    Ok(n_past) => {
                        tracing::debug!(
                            slot = s.slot,
                            positions = end - s.fed,
                            secs = started.elapsed().as_secs_f64(),
                            kind = piece.kind(),
                            "encoded media"
                        );
                        match piece.data {
                            MediaData::Image(_) => self.metrics.images_encoded.increment(1),
                            MediaData::Audio(_) => self.metrics.audio_encoded.increment(1),
                        }
                        self.metrics.prefill_tokens.increment((end - s.fed) as u64);
                        s.fed = end;
                        s.n_past = n_past;
                    }
                    Err(e) => {
                        failed.push((i, e));
                        break;
                    }
                }
            }
        }
        for (i, why) in failed.into_iter().rev() {
            let s = self.active.swap_remove(i);
            tracing::warn!(slot = s.slot, "{why}");
            s.out.fail(why);
            self.discard(ctx, s.slot);
        }
        self.active.sort_by_key(|s| s.slot);
    }
}
