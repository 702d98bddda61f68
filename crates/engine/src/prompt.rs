//! Rendering and tokenizing a request's prompt, off the engine thread.
//!
//! The chat template and the tokenizer cost time in proportion to the prompt, and the engine
//! thread decodes for every tenant: a prompt of many megabytes prepared there would stall
//! them all. A [`Prompter`] holds what this needs (the model's vocabulary, read-only, and
//! the compiled template) and is called from the request's own task (on tokio's blocking
//! pool); the engine thread receives the tokens. llama.cpp's tokenizer only reads the
//! vocabulary, so it is safe next to a running decode (`LlamaModel` is `Send + Sync`).
//!
//! A prompt that is surely too long is refused before it is tokenized at all: no token
//! stands for more bytes of text than the vocabulary's longest token, so a prompt of more
//! than `limit * longest` bytes has more than `limit` tokens.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;
use llguidance::api::TopLevelGrammar;
use llguidance::Matcher;
use localgem_core::{EngineError, GenerateRequest, MediaData, ToolMode, MEDIA_MARKER};
use metrics::{counter, Counter};

use crate::constrain::{grammar_for, Grammars};
use crate::special::{pieces, SpecialTexts};
use crate::template::ChatTemplate;

/// A request with its prompt rendered and its text tokenized, ready for the engine thread.
pub(crate) struct Rendered {
    /// The request (functions dropped under [`ToolMode::None`]; no thinking under a
    /// grammar).
    pub request: GenerateRequest,
    /// The grammar the output must follow, compiled (only where the prompter compiles
    /// grammars: for the engine thread).
    pub matcher: Option<Matcher>,
    /// The prompt's text tokens: one run before each image and one after the last (the
    /// first starts with BOS where the model wants one).
    pub runs: Vec<Vec<LlamaToken>>,
    /// The rendered prompt already opened the reasoning block.
    pub in_thought: bool,
}

/// Renders and tokenizes prompts for one model; shared with the request tasks.
pub(crate) struct Prompter {
    model: Arc<LlamaModel>,
    template: Arc<ChatTemplate>,
    model_id: String,
    /// Most prompt tokens a sequence takes (a remote model learns it from its engines).
    limit: AtomicU64,
    /// Most bytes of text one token stands for, where that bound holds for the tokenizer.
    max_token_bytes: Option<usize>,
    /// The model takes images.
    vision: bool,
    /// The sample rate of its audio encoder, when it takes audio.
    audio_rate: Option<u32>,
    /// Compiles output grammars (llguidance) for the engine thread; `None` where the output
    /// is constrained elsewhere (a remote engine).
    grammars: Option<Arc<Grammars>>,
    refused_untokenized: Counter,
}

/// The texts special-token parsing turns into single tokens that text from a request must
/// never become: those of control and unknown tokens.
pub(crate) fn special_texts(model: &LlamaModel) -> Result<SpecialTexts, String> {
    let vocab = model.vocab();
    SpecialTexts::new(vocab.tokens().filter_map(|t| {
        let attr = vocab.attr(t);
        (attr.contains(LlamaTokenAttr::Control) || attr.contains(LlamaTokenAttr::Unknown))
            .then(|| {
                vocab
                    .text(t)
                    .map(|s| String::from_utf8_lossy(s.to_bytes()).into_owned())
            })
            .flatten()
    }))
}

/// The model's chat template (`chat_template` instead of the GGUF's, when given), with the
/// texts of its special tokens, which text from a request may never become.
pub(crate) fn template_for(
    model: &LlamaModel,
    chat_template: Option<String>,
) -> Result<Arc<ChatTemplate>, String> {
    let arch = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let vocab = model.vocab();
    let piece =
        |t: LlamaToken| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    let gguf_template = model
        .chat_template(None)
        .ok()
        .and_then(|t| t.to_string().ok());
    let (template_src, source) = match chat_template {
        Some(t) => (Some(t), "file"),
        None => (gguf_template, "gguf"),
    };
    let template = ChatTemplate::with_source(
        template_src,
        source,
        &arch,
        &piece(vocab.bos()),
        &piece(vocab.eos()),
    )
    .map_err(|e| format!("the chat template does not compile: {e}"))?;
    Ok(Arc::new(template.with_specials(special_texts(model)?)))
}

/// The most bytes of input text one token can stand for, when the tokenizer keeps every
/// byte of its input (byte-level BPE and SentencePiece as llama.cpp runs them, without
/// tokens that swallow the whitespace next to them); `None` otherwise.
fn max_token_bytes(model: &LlamaModel) -> Option<usize> {
    let kind = model.meta_val_str("tokenizer.ggml.model").ok()?;
    if !matches!(kind.as_str(), "gpt2" | "llama") {
        return None;
    }
    let vocab = model.vocab();
    let mut longest = 4; // an unknown character: at most 4 bytes of UTF-8
    for t in vocab.tokens() {
        let attr = vocab.attr(t);
        if attr.contains(LlamaTokenAttr::LStrip) || attr.contains(LlamaTokenAttr::RStrip) {
            return None;
        }
        // Its text as stored (SentencePiece writes a space as 3 bytes there) and as
        // written out: both at least what it stands for.
        let stored = vocab.text(t).map_or(0, |s| s.to_bytes().len());
        let piece = vocab.token_to_piece(t, true, None).len();
        longest = longest.max(stored).max(piece);
    }
    Some(longest)
}

impl Prompter {
    pub fn new(
        model: Arc<LlamaModel>,
        template: Arc<ChatTemplate>,
        model_id: &str,
        limit: u64,
        vision: bool,
        audio_rate: Option<u32>,
        grammars: Option<Arc<Grammars>>,
    ) -> Self {
        let max_token_bytes = max_token_bytes(&model);
        tracing::debug!(model = %model_id, ?max_token_bytes, "longest token");
        Prompter {
            model,
            template,
            model_id: model_id.to_owned(),
            limit: AtomicU64::new(limit),
            max_token_bytes,
            vision,
            audio_rate,
            grammars,
            refused_untokenized: counter!(
                "localgem_prompts_refused_untokenized_total", "model" => model_id.to_owned()
            ),
        }
    }

    fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Change the most prompt tokens a sequence takes.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The model (its vocabulary).
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    fn too_long(&self, tokens: u64) -> EngineError {
        EngineError::PromptTooLong {
            model: self.model_id.clone(),
            tokens,
            limit: self.limit(),
        }
    }

    /// Render `request`'s prompt and tokenize its text.
    ///
    /// # Errors
    /// The template rejects the conversation, the media do not match their places, or the
    /// prompt is longer than the context allows.
    pub fn render(&self, request: GenerateRequest) -> Result<Rendered, EngineError> {
        let (mut rendered, grammar) = self.render_with(request, true)?;
        // Compiling a schema can take a while: it happens here too, not on the engine thread.
        if let (Some(g), Some(grammars)) = (grammar, &self.grammars) {
            let model = &self.model;
            rendered.matcher = Some(
                grammars
                    .matcher(|| LlamaSampler::llguidance_tok_env(model), g)
                    .map_err(EngineError::Unsupported)?,
            );
        }
        Ok(rendered)
    }

    /// The prompt's text tokens (BOS included), whatever its length; media positions are
    /// not known before the engine thread encodes them and are not counted.
    ///
    /// # Errors
    /// The template rejects the conversation, or the media do not match their places.
    pub fn count(&self, request: GenerateRequest) -> Result<u64, EngineError> {
        let (rendered, _) = self.render_with(request, false)?;
        Ok(rendered.runs.iter().map(Vec::len).sum::<usize>() as u64)
    }

    fn render_with(
        &self,
        mut request: GenerateRequest,
        check_limit: bool,
    ) -> Result<(Rendered, Option<TopLevelGrammar>), EngineError> {
        if request.tool_mode == ToolMode::None {
            request.tools.clear();
        }
        let grammar = grammar_for(&request);
        // Constrained output starts with the first token: a reasoning block would break it.
        let thinking_off = request.thinking.budget == Some(0) || grammar.is_some();
        if grammar.is_some() {
            request.thinking.budget = Some(0);
        }
        let mut text = self
            .template
            .render(&request.messages, &request.tools, thinking_off)
            .map_err(|e| {
                EngineError::InvalidPrompt(format!(
                    "the chat template rejected the conversation: {e}"
                ))
            })?;
        let mut in_thought = false;
        if let Some(tags) = self.template.think_tags() {
            if text.trim_end().ends_with(tags.open.as_str()) {
                if request.thinking.budget == Some(0) {
                    // The template opened a thought it cannot leave out: close it in the
                    // prompt, so the first generated token is the answer's.
                    text.push_str(&format!("\n{}\n\n", tags.close));
                } else {
                    in_thought = true;
                }
            }
        }
        let media: usize = request.messages.iter().map(|m| m.media.len()).sum();
        for m in request.messages.iter().flat_map(|m| &m.media) {
            let takes = match m.data {
                MediaData::Image(_) => self.vision,
                MediaData::Audio(_) => self.audio_rate.is_some(),
            };
            if !takes {
                return Err(EngineError::Unsupported(format!(
                    "model {} cannot take {} input",
                    self.model_id,
                    m.kind()
                )));
            }
        }
        let parts: Vec<Vec<(&str, bool)>> = text.split(MEDIA_MARKER).map(pieces).collect();
        if parts.len() != media + 1 {
            return Err(EngineError::InvalidPrompt(format!(
                "the prompt places {} pieces of media but the request has {media}: text may \
                 not contain U+FFFC (the object replacement character), which marks where \
                 media go",
                parts.len() - 1,
            )));
        }
        let bytes: usize = parts.iter().flatten().map(|(s, _)| s.len()).sum();
        if let Some(max) = self.max_token_bytes.filter(|_| check_limit) {
            if bytes as u64 > self.limit().saturating_mul(max as u64) {
                self.refused_untokenized.increment(1);
                return Err(self.too_long(bytes.div_ceil(max) as u64));
            }
        }
        let vocab = self.model.vocab();
        let mut runs: Vec<Vec<LlamaToken>> = parts
            .iter()
            .map(|part| {
                let mut run = Vec::new();
                for &(s, special) in part {
                    // Room for the usual count, so llama.cpp tokenizes it once.
                    run.reserve(s.len() / 2 + 8);
                    vocab.tokenize_into(s.as_bytes(), &mut run, false, special);
                }
                run
            })
            .collect();
        if vocab.should_add_bos() {
            let bos = vocab.bos();
            if runs[0].first() != Some(&bos) {
                runs[0].insert(0, bos);
            }
        }
        // With media the engine thread adds their positions and checks the whole.
        let tokens: usize = runs.iter().map(Vec::len).sum();
        if check_limit && media == 0 && tokens as u64 > self.limit() {
            return Err(self.too_long(tokens as u64));
        }
        Ok((
            Rendered {
                request,
                matcher: None,
                runs,
                in_thought,
            },
            grammar,
        ))
    }
}
