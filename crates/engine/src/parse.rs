//! Splits the model's text stream into reasoning, answer text and function calls.
//!
//! Fed one token's text at a time, [`OutputParser`] recognises
//! * a reasoning block `<think>…</think>` (the tags are the template's) at the start of the
//!   answer, or from the very first token when the prompt already opened it;
//! * function calls written as `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, or,
//!   when the whole answer is nothing but JSON, a bare call object or list of them.
//!
//! Text that might be the start of a tag is held back until the next token decides, so no tag
//! fragment ever reaches the client. The parser also says whether the token it was just fed
//! belongs to the reasoning, which is how the engine counts thought tokens and enforces the
//! thinking budget.

use serde_json::Value;

use crate::constrain::{CALL_CLOSE, CALL_OPEN};

/// Reasoning tags of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinkTags {
    /// Opening tag, e.g. `<think>`.
    pub open: String,
    /// Closing tag, e.g. `</think>`.
    pub close: String,
}

impl ThinkTags {
    /// `<think>` / `</think>`.
    pub fn think() -> Self {
        ThinkTags {
            open: "<think>".into(),
            close: "</think>".into(),
        }
    }
}

/// A piece of parsed output.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Reasoning text.
    Thought(String),
    /// The reasoning ended.
    ThoughtEnd,
    /// Answer text.
    Text(String),
    /// A function call.
    Call {
        /// Function name.
        name: String,
        /// Arguments object.
        arguments: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing decided yet: the answer may open with a reasoning block.
    Start,
    /// Inside the reasoning block.
    Thinking,
    /// Answer text.
    Answer,
    /// The answer began with `{` or `[`: maybe a bare call; held until the end.
    BareJson,
    /// Inside `<tool_call>…`.
    Call,
}

/// The streaming parser of one generation.
#[derive(Debug)]
pub struct OutputParser {
    think: Option<ThinkTags>,
    tools: bool,
    state: State,
    pending: String,
    thought_seen: bool,
    /// Answer text has been emitted (a later `{` is text, not a bare call).
    answered: bool,
    /// Reasoning text has been emitted (leading whitespace of a thought is dropped).
    thought_text: bool,
}

/// The longest suffix of `s` that is a proper prefix of `tag` (text to hold back).
fn partial_tag_suffix(s: &str, tag: &str) -> usize {
    let max = tag.len().saturating_sub(1).min(s.len());
    (1..=max)
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

/// Parse a call object `{"name": …, "arguments": {…}}` (also `parameters` for arguments).
fn call_from(v: &Value) -> Option<Piece> {
    let o = v.as_object()?;
    let name = o.get("name")?.as_str()?.to_owned();
    let arguments = match o.get("arguments").or_else(|| o.get("parameters")) {
        Some(Value::String(s)) => serde_json::from_str(s).ok()?,
        Some(v @ Value::Object(_)) => v.clone(),
        None => Value::Object(Default::default()),
        _ => return None,
    };
    arguments
        .is_object()
        .then_some(Piece::Call { name, arguments })
}

/// Calls in a JSON text: one call object or a list of them.
fn calls_in(text: &str) -> Option<Vec<Piece>> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    match &v {
        Value::Array(items) if !items.is_empty() => items.iter().map(call_from).collect(),
        Value::Object(_) => call_from(&v).map(|c| vec![c]),
        _ => None,
    }
}

impl OutputParser {
    /// A parser. `think`: the model's reasoning tags, if it reasons; `in_thought`: the prompt
    /// already opened the reasoning block; `tools`: calls are to be recognised.
    pub fn new(think: Option<ThinkTags>, in_thought: bool, tools: bool) -> Self {
        let state = if think.is_some() && in_thought {
            State::Thinking
        } else if think.is_some() {
            State::Start
        } else {
            State::Answer
        };
        OutputParser {
            think,
            tools,
            state,
            pending: String::new(),
            thought_seen: in_thought,
            answered: false,
            thought_text: false,
        }
    }

    /// Whether the parser is inside the reasoning block (so the next token is a thought
    /// token).
    pub fn thinking(&self) -> bool {
        self.state == State::Thinking
    }

    /// The closing tag to force when the thinking budget is spent.
    pub fn close_tag(&self) -> Option<&str> {
        self.think.as_ref().map(|t| t.close.as_str())
    }

    /// Feed one token's text.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        self.advance(&mut out, false);
        out
    }

    /// The generation ended: flush what is held back.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        self.advance(&mut out, true);
        out
    }

    fn emit_thought(&mut self, out: &mut Vec<Piece>, s: &str) {
        let s = if self.thought_text { s } else { s.trim_start() };
        if !s.is_empty() {
            self.thought_text = true;
            out.push(Piece::Thought(s.to_owned()));
        }
    }

    fn emit_text(&mut self, out: &mut Vec<Piece>, s: &str) {
        if s.is_empty() {
            return;
        }
        if s.trim().is_empty() && (self.tools || self.thought_seen) && !self.answered {
            // Whitespace before (or between) calls, or after a thought, is not an answer.
            return;
        }
        let s = if self.thought_seen && !self.answered {
            s.trim_start()
        } else {
            s
        };
        if !s.trim().is_empty() {
            self.answered = true;
        }
        if let Some(Piece::Text(t)) = out.last_mut() {
            t.push_str(s);
        } else {
            out.push(Piece::Text(s.to_owned()));
        }
    }

    fn advance(&mut self, out: &mut Vec<Piece>, end: bool) {
        loop {
            match self.state {
                State::Start => {
                    let tags = self.think.as_ref().expect("Start only with tags");
                    let trimmed = self.pending.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(tags.open.as_str()) {
                        self.pending = rest.to_owned();
                        self.state = State::Thinking;
                        self.thought_seen = true;
                    } else if !end && (trimmed.is_empty() || tags.open.starts_with(trimmed)) {
                        return;
                    } else {
                        self.state = State::Answer;
                    }
                }
                State::Thinking => {
                    let close = self.think.as_ref().expect("tags").close.clone();
                    if let Some(at) = self.pending.find(&close) {
                        let thought = self.pending[..at].to_owned();
                        self.emit_thought(out, &thought);
                        out.push(Piece::ThoughtEnd);
                        self.pending = self.pending[at + close.len()..].trim_start().to_owned();
                        self.state = State::Answer;
                        continue;
                    }
                    let keep = if end {
                        0
                    } else {
                        partial_tag_suffix(&self.pending, &close)
                    };
                    let cut = self.pending.len() - keep;
                    if cut > 0 {
                        let thought: String = self.pending.drain(..cut).collect();
                        self.emit_thought(out, &thought);
                    }
                    if end {
                        out.push(Piece::ThoughtEnd);
                        self.state = State::Answer;
                        continue;
                    }
                    return;
                }
                State::Answer => {
                    if !self.tools {
                        let s = std::mem::take(&mut self.pending);
                        self.emit_text(out, &s);
                        return;
                    }
                    let lead = self.pending.trim_start();
                    if !self.answered && lead.is_empty() && !end {
                        return;
                    }
                    if !self.answered && (lead.starts_with('{') || lead.starts_with('[')) {
                        self.state = State::BareJson;
                        continue;
                    }
                    if let Some(at) = self.pending.find(CALL_OPEN) {
                        let before = self.pending[..at].to_owned();
                        self.emit_text(out, before.trim_end());
                        self.pending.drain(..at + CALL_OPEN.len());
                        self.state = State::Call;
                        continue;
                    }
                    let keep = if end {
                        0
                    } else {
                        partial_tag_suffix(&self.pending, CALL_OPEN)
                    };
                    let cut = self.pending.len() - keep;
                    let s: String = self.pending.drain(..cut).collect();
                    self.emit_text(out, &s);
                    return;
                }
                State::BareJson => {
                    if !end {
                        return;
                    }
                    let s = std::mem::take(&mut self.pending);
                    match calls_in(&s) {
                        Some(calls) => out.extend(calls),
                        None => self.emit_text(out, &s),
                    }
                    self.state = State::Answer;
                    return;
                }
                State::Call => {
                    let close_at = self.pending.find(CALL_CLOSE);
                    if close_at.is_none() && !end {
                        return;
                    }
                    let body_end = close_at.unwrap_or(self.pending.len());
                    let body = self.pending[..body_end].to_owned();
                    match calls_in(&body) {
                        Some(calls) => out.extend(calls),
                        // Not a call after all: the text stays text.
                        None => self.emit_text(
                            out,
                            &format!(
                                "{CALL_OPEN}{body}{}",
                                if close_at.is_some() { CALL_CLOSE } else { "" }
                            ),
                        ),
                    }
                    self.answered = false;
                    let skip = close_at.map_or(body_end, |a| a + CALL_CLOSE.len());
                    self.pending.drain(..skip);
                    // Whitespace between calls is not answer text.
                    let rest = self.pending.trim_start().to_owned();
                    self.pending = rest;
                    self.state = State::Answer;
                    if end && self.pending.is_empty() {
                        return;
                    }
                }
            }
        }
    }

    /// Whether a reasoning block was seen.
    pub fn thought_seen(&self) -> bool {
        self.thought_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Run a scripted token stream through a parser; merge adjacent pieces of one kind.
    fn run(p: &mut OutputParser, tokens: &[&str]) -> Vec<Piece> {
        let mut all = Vec::new();
        for t in tokens {
            all.extend(p.push(t));
        }
        all.extend(p.finish());
        let mut merged: Vec<Piece> = Vec::new();
        for piece in all {
            match (merged.last_mut(), piece) {
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (Some(Piece::Thought(a)), Piece::Thought(b)) => a.push_str(&b),
                (_, p) => merged.push(p),
            }
        }
        merged
    }

    #[test]
    fn reasoning_is_split_from_the_answer_across_token_boundaries() {
        let mut p = OutputParser::new(Some(ThinkTags::think()), false, false);
        let out = run(
            &mut p,
            &[
                "<th",
                "ink>",
                "Two dogs",
                " have 8 paws.",
                "</",
                "think",
                ">\n\n",
                "Eight",
                ".",
            ],
        );
        assert_eq!(
            out,
            vec![
                Piece::Thought("Two dogs have 8 paws.".into()),
                Piece::ThoughtEnd,
                Piece::Text("Eight.".into())
            ]
        );
        assert!(p.thought_seen());
    }

    #[test]
    fn a_prompt_that_opened_the_thought_starts_in_it() {
        let mut p = OutputParser::new(Some(ThinkTags::think()), true, false);
        assert!(p.thinking());
        let out = run(&mut p, &["\n", "hmm", "</think>", "\n", "\n", "ok"]);
        assert_eq!(
            out,
            vec![
                Piece::Thought("hmm".into()),
                Piece::ThoughtEnd,
                Piece::Text("ok".into())
            ]
        );
    }

    #[test]
    fn thinking_flag_follows_the_tokens() {
        let mut p = OutputParser::new(Some(ThinkTags::think()), false, false);
        p.push("<think>");
        assert!(p.thinking());
        p.push("a");
        assert!(p.thinking());
        p.push("</think>");
        assert!(!p.thinking());
    }

    #[test]
    fn no_reasoning_block_means_all_answer() {
        let mut p = OutputParser::new(Some(ThinkTags::think()), false, false);
        let out = run(&mut p, &["<b>", "bold</b>"]);
        assert_eq!(out, vec![Piece::Text("<b>bold</b>".into())]);
        assert!(!p.thought_seen());
    }

    #[test]
    fn an_unclosed_thought_ends_at_the_end() {
        let mut p = OutputParser::new(Some(ThinkTags::think()), true, false);
        let out = run(&mut p, &["still thinking </thi"]);
        assert_eq!(
            out,
            vec![
                Piece::Thought("still thinking </thi".into()),
                Piece::ThoughtEnd
            ]
        );
    }

    #[test]
    fn tagged_calls_become_calls_and_text_stays_text() {
        let mut p = OutputParser::new(None, false, true);
        let out = run(
            &mut p,
            &[
                "Let me check.",
                " <tool",
                "_call>\n{\"name\": \"get_weather\", ",
                "\"arguments\": {\"location\": \"Paris\"}}\n</tool_call>",
                "\n<tool_call>{\"name\": \"get_time\", \"arguments\": \"{}\"}</tool_call>",
            ],
        );
        assert_eq!(
            out,
            vec![
                Piece::Text("Let me check. ".into()),
                Piece::Call {
                    name: "get_weather".into(),
                    arguments: json!({"location": "Paris"})
                },
                Piece::Call {
                    name: "get_time".into(),
                    arguments: json!({})
                },
            ]
        );
    }

    #[test]
    fn whitespace_around_calls_is_not_an_answer() {
        let mut p = OutputParser::new(None, false, true);
        let out = run(
            &mut p,
            &[
                "\n",
                "<tool_call>{\"name\": \"a\"}</tool_call>",
                "\n<",
                "tool_call>{\"name\": \"b\"}</tool_call>\n",
            ],
        );
        assert_eq!(
            out,
            vec![
                Piece::Call {
                    name: "a".into(),
                    arguments: json!({})
                },
                Piece::Call {
                    name: "b".into(),
                    arguments: json!({})
                },
            ]
        );
    }

    #[test]
    fn a_bare_json_answer_is_a_call_when_it_is_one() {
        let mut p = OutputParser::new(None, false, true);
        let out = run(
            &mut p,
            &[
                "{\"name\": \"get_weather\",",
                " \"parameters\": {\"location\": \"Oslo\"}}",
            ],
        );
        assert_eq!(
            out,
            vec![Piece::Call {
                name: "get_weather".into(),
                arguments: json!({"location": "Oslo"})
            }]
        );
        let mut p = OutputParser::new(None, false, true);
        let out = run(&mut p, &["{\"temp\": 3}"]);
        assert_eq!(out, vec![Piece::Text("{\"temp\": 3}".into())]);
    }

    #[test]
    fn a_broken_call_is_returned_as_text() {
        let mut p = OutputParser::new(None, false, true);
        let out = run(&mut p, &["<tool_call>{\"name\": ", "oops</tool_call> done"]);
        assert_eq!(
            out,
            vec![Piece::Text(
                "<tool_call>{\"name\": oops</tool_call>done".into()
            )]
        );
    }

    #[test]
    fn without_tools_tags_are_plain_text() {
        let mut p = OutputParser::new(None, false, false);
        let out = run(&mut p, &["<tool_call>{}</tool_call>"]);
        assert_eq!(out, vec![Piece::Text("<tool_call>{}</tool_call>".into())]);
    }

    #[test]
    fn multibyte_text_before_a_partial_tag_is_not_split() {
        let mut p = OutputParser::new(None, false, true);
        let out = run(&mut p, &["trời đẹp <", "b>"]);
        assert_eq!(out, vec![Piece::Text("trời đẹp <b>".into())]);
    }
}
