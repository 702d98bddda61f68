//! One generation's output side, whichever engine produced the tokens: token bytes become
//! UTF-8 text, the text is split into reasoning, answer and function calls, answer text goes
//! through the stop sequences, and the events go to the request. It counts answer and thought
//! tokens against the request's caps and says when the thought budget is spent.

use localgem_core::{EngineEvent, FinishReason, GenerateRequest, TokenUsage};
use tokio::sync::mpsc;

use crate::parse::{OutputParser, Piece, ThinkTags};
use crate::text::{StopMatcher, Utf8Buffer};

/// Thought tokens allowed when the request sets no budget.
pub(crate) const DEFAULT_THOUGHT_BUDGET: u32 = 1024;

/// The output of one generation.
pub(crate) struct Output {
    pub tx: mpsc::UnboundedSender<EngineEvent>,
    utf8: Utf8Buffer,
    stop: StopMatcher,
    parser: OutputParser,
    /// Generated tokens (reasoning included).
    pub generated: u32,
    /// Of those, reasoning.
    pub thought_tokens: u32,
    /// Thought-token budget.
    pub budget: u32,
    /// Answer-token cap.
    pub max_output: u32,
}

impl Output {
    pub fn new(
        request: &GenerateRequest,
        think: Option<ThinkTags>,
        in_thought: bool,
        tx: mpsc::UnboundedSender<EngineEvent>,
    ) -> Self {
        Output {
            tx,
            utf8: Utf8Buffer::default(),
            stop: StopMatcher::new(&request.stop_sequences),
            parser: OutputParser::new(think, in_thought, !request.tools.is_empty()),
            generated: 0,
            thought_tokens: 0,
            budget: request.thinking.budget.unwrap_or(DEFAULT_THOUGHT_BUDGET),
            max_output: request.max_output_tokens.max(1),
        }
    }

    /// Send one parsed piece: reasoning as is, answer text through the stop matcher. True
    /// when a stop sequence ended the answer.
    fn emit(&mut self, piece: Piece) -> bool {
        let event = match piece {
            Piece::Thought(t) => EngineEvent::Thought(t),
            Piece::ThoughtEnd => EngineEvent::ThoughtEnd,
            Piece::Call { name, arguments } => EngineEvent::Call { name, arguments },
            Piece::Text(t) => {
                let out = self.stop.push(&t);
                if !out.emit.is_empty() {
                    let _ = self.tx.send(EngineEvent::Text(out.emit));
                }
                return out.stopped;
            }
        };
        let _ = self.tx.send(event);
        false
    }

    fn feed(&mut self, text: &str) -> bool {
        for piece in self.parser.push(text) {
            if self.emit(piece) {
                return true;
            }
        }
        false
    }

    /// One generated token (not an end-of-generation one), as its bytes: counted, and what
    /// text it completes streamed. True when a stop sequence ended the answer.
    pub fn token(&mut self, bytes: &[u8]) -> bool {
        self.generated += 1;
        if self.parser.thinking() {
            self.thought_tokens += 1;
        }
        let text = self.utf8.push(bytes);
        self.feed(&text)
    }

    /// Output text that was not generated (a prefix the prompt already wrote, a suffix the
    /// grammar implies): parsed like generated text, counted as no token. True when a stop
    /// sequence ended the answer.
    pub fn text(&mut self, text: &str) -> bool {
        self.feed(text)
    }

    /// While reasoning with the budget spent: the text that closes the thought, to feed
    /// instead of sampling.
    pub fn thought_spent(&self) -> Option<String> {
        if !self.parser.thinking() || self.thought_tokens < self.budget {
            return None;
        }
        self.parser
            .close_tag()
            .map(|close| format!("\n{close}\n\n"))
    }

    /// Answer tokens so far.
    pub fn answer_tokens(&self) -> u32 {
        self.generated - self.thought_tokens
    }

    /// The answer reached its cap, or answer and reasoning together theirs.
    pub fn capped(&self) -> bool {
        self.answer_tokens() >= self.max_output
            || self.generated >= self.max_output.saturating_add(self.budget)
    }

    /// The generation ended: flush what is held back (unless a stop sequence ended it) and
    /// send `Finished`.
    pub fn finish(&mut self, reason: FinishReason, stopped: bool, input: u64, cached: u64) {
        if !stopped {
            let rest = self.utf8.finish();
            let mut pieces = self.parser.push(&rest);
            pieces.extend(self.parser.finish());
            let mut ended = false;
            for piece in pieces {
                if self.emit(piece) {
                    ended = true;
                    break;
                }
            }
            if !ended {
                let tail = self.stop.finish();
                if !tail.is_empty() {
                    let _ = self.tx.send(EngineEvent::Text(tail));
                }
            }
        }
        let _ = self.tx.send(EngineEvent::Finished {
            reason,
            usage: TokenUsage {
                input_tokens: input,
                output_tokens: u64::from(self.answer_tokens()),
                cached_tokens: cached,
                thought_tokens: u64::from(self.thought_tokens),
            },
        });
    }

    /// The generation failed after it was admitted.
    pub fn fail(&self, why: impl Into<String>) {
        let _ = self.tx.send(EngineEvent::Failed(why.into()));
    }

    /// The engine running the generation was lost (the message is for the client).
    pub fn lost(&self, why: impl Into<String>) {
        let _ = self.tx.send(EngineEvent::Lost(why.into()));
    }
}
