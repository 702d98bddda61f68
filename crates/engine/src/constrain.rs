//! Constrained decoding with llguidance: the grammar a request needs (a JSON schema for
//! structured output, a function call for `tool_choice: any`), and the sampling step that
//! keeps the output inside it.
//!
//! Sampling checks the token the ordinary sampler picked against the grammar first and
//! computes the full-vocabulary mask only when that token is not allowed, so a constraint
//! costs almost nothing on the tokens the model would have written anyway.

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use localgem_core::{FunctionDecl, GenerateRequest, OutputFormat, ToolMode};
use serde_json::{json, Value};
use toktrie::TokEnv;

/// The tags a function call is written in, in the fallback prompt and in the grammar.
pub const CALL_OPEN: &str = "<tool_call>";
/// Closing tag of a function call.
pub const CALL_CLOSE: &str = "</tool_call>";

/// JSON layout the grammars ask for: compact separators with one space, no free whitespace
/// (a tiny model given free whitespace can loop on newlines forever).
fn layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// `schema` with the layout options attached (an explicit `x-guidance` of the caller's is
/// not allowed: it is ours).
fn with_layout(schema: &Value) -> Value {
    match schema {
        Value::Object(o) => {
            let mut o = o.clone();
            o.insert("x-guidance".into(), layout());
            Value::Object(o)
        }
        Value::Bool(true) => json!({"x-guidance": layout()}),
        other => other.clone(),
    }
}

/// The schema of one call `{"name": …, "arguments": {…}}` to any of `tools`.
pub fn call_schema(tools: &[&FunctionDecl]) -> Value {
    let one = |t: &FunctionDecl| {
        json!({
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": t.parameters,
            },
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    if tools.len() == 1 {
        one(tools[0])
    } else {
        json!({"anyOf": tools.iter().map(|t| one(t)).collect::<Vec<_>>()})
    }
}

/// The grammar a request's output must follow, if any.
///
/// * a JSON schema `response_format`: that schema;
/// * `tool_choice` `any`: one or more calls, each `<tool_call>\n{json}\n</tool_call>`, naming
///   an offered tool with arguments valid against its schema;
/// * `validated`: either free text that writes no call, or such calls.
pub fn grammar_for(req: &GenerateRequest) -> Option<TopLevelGrammar> {
    let tools: Vec<&FunctionDecl> = req.tools.iter().collect();
    match req.tool_mode {
        ToolMode::Any | ToolMode::Validated if !tools.is_empty() => {
            let schema = with_layout(&call_schema(&tools));
            let calls = format!(
                "calls: call (\"\\n\" call)*\ncall: {open:?} \"\\n\" %json {schema} \"\\n\" {close:?}\n",
                open = CALL_OPEN,
                close = CALL_CLOSE,
            );
            let start = if req.tool_mode == ToolMode::Any {
                "start: calls\n".to_owned()
            } else {
                // Free text that never opens a call, or calls.
                format!(
                    "start: calls | TEXT\nTEXT: /(?s:.+)/ & ~/(?s:.*){}(?s:.*)/\n",
                    regex_escape(CALL_OPEN)
                )
            };
            Some(TopLevelGrammar::from_lark(format!("{start}{calls}")))
        }
        _ => match &req.format {
            OutputFormat::Text => None,
            OutputFormat::JsonSchema(schema) => {
                Some(TopLevelGrammar::from_json_schema(with_layout(schema)))
            }
        },
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~/".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// Grammars of one model: the llguidance parser factory over its vocabulary, built on the
/// first constrained request (walking a 262k vocabulary takes a moment).
pub struct Grammars {
    factory: Option<ParserFactory>,
}

impl Grammars {
    /// No factory yet.
    pub fn new() -> Self {
        Grammars { factory: None }
    }

    /// A matcher for `grammar`, building the factory from `env` on first use.
    ///
    /// # Errors
    /// The grammar does not compile (an unsupported schema feature, say); the message names
    /// what.
    pub fn matcher(
        &mut self,
        env: impl FnOnce() -> TokEnv,
        grammar: TopLevelGrammar,
    ) -> Result<Matcher, String> {
        if self.factory.is_none() {
            let mut f = ParserFactory::new_simple(&env()).map_err(|e| e.to_string())?;
            f.set_stderr_log_level(0);
            self.factory = Some(f);
        }
        let factory = self.factory.as_ref().expect("set above");
        let parser = factory
            .create_parser(grammar)
            .map_err(|e| clean_error(&e.to_string()))?;
        Ok(Matcher::new(Ok(parser)))
    }
}

impl Default for Grammars {
    fn default() -> Self {
        Self::new()
    }
}

fn clean_error(e: &str) -> String {
    let e = e.trim();
    format!("the output schema cannot be enforced: {e}")
}

/// What the grammar says of a token the sampler picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed and consumed.
    Accepted,
    /// Not allowed; nothing consumed.
    Rejected,
}

/// Try `token` against the matcher; consume it when allowed.
pub fn try_token(m: &mut Matcher, token: u32) -> Verdict {
    match m.try_consume_tokens(&[token]) {
        Ok(1) => Verdict::Accepted,
        _ => Verdict::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use localgem_core::{ChatMessage, Role};
    use toktrie::ApproximateTokEnv;

    fn weather() -> FunctionDecl {
        FunctionDecl {
            name: "get_weather".into(),
            description: "Weather now".into(),
            parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}),
        }
    }

    fn req(mode: ToolMode, format: OutputFormat) -> GenerateRequest {
        let mut r = GenerateRequest::text("m", vec![ChatMessage::new(Role::User, "hi")]);
        r.tools = vec![
            weather(),
            FunctionDecl {
                name: "get_time".into(),
                description: String::new(),
                parameters: json!({"type": "object", "properties": {}}),
            },
        ];
        r.tool_mode = mode;
        r.format = format;
        r
    }

    /// Feed `text` byte by byte (the single-byte vocabulary); true when every byte was
    /// allowed and the grammar may end there.
    fn accepts(g: TopLevelGrammar, text: &str) -> bool {
        let mut grammars = Grammars::new();
        let mut m = grammars
            .matcher(ApproximateTokEnv::single_byte_env, g)
            .unwrap();
        for b in text.bytes() {
            if try_token(&mut m, u32::from(b)) == Verdict::Rejected {
                return false;
            }
        }
        m.is_accepting().unwrap_or(false)
    }

    #[test]
    fn any_mode_accepts_only_valid_calls() {
        let g = || grammar_for(&req(ToolMode::Any, OutputFormat::Text)).unwrap();
        assert!(accepts(
            g(),
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}\n</tool_call>"
        ));
        assert!(accepts(
            g(),
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"
        ));
        // unknown tool, missing required argument, wrong type, free text
        for bad in [
            "<tool_call>\n{\"name\": \"get_wether\", \"arguments\": {}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": 3}}\n</tool_call>",
            "Sure, the weather is nice.",
        ] {
            assert!(!accepts(g(), bad), "{bad}");
        }
    }

    #[test]
    fn validated_mode_allows_text_without_calls_or_valid_calls() {
        let g = || grammar_for(&req(ToolMode::Validated, OutputFormat::Text)).unwrap();
        assert!(accepts(g(), "It is sunny, no need to call anything."));
        assert!(accepts(
            g(),
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"
        ));
        assert!(!accepts(
            g(),
            "Let me check. <tool_call>\n{\"name\": \"nope\"}"
        ));
    }

    #[test]
    fn auto_mode_and_plain_text_are_unconstrained() {
        assert!(grammar_for(&req(ToolMode::Auto, OutputFormat::Text)).is_none());
        let mut r = req(ToolMode::Any, OutputFormat::Text);
        r.tools.clear();
        assert!(grammar_for(&r).is_none());
    }

    #[test]
    fn json_schema_output() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["n", "tags"]});
        let g = || {
            grammar_for(&req(
                ToolMode::None,
                OutputFormat::JsonSchema(schema.clone()),
            ))
            .unwrap()
        };
        assert!(accepts(g(), "{\"n\": 3, \"tags\": [\"a\", \"b\"]}"));
        assert!(!accepts(g(), "{\"n\": \"3\", \"tags\": []}"));
        assert!(!accepts(g(), "{\"n\": 3}"));
        assert!(
            !accepts(g(), "{ \"n\": 3, \"tags\": []}"),
            "no free whitespace"
        );
    }

    #[test]
    fn unsupported_schemas_are_named() {
        let mut grammars = Grammars::new();
        let bad =
            TopLevelGrammar::from_json_schema(json!({"type": "object", "if": {"type": "object"}}));
        match grammars.matcher(ApproximateTokEnv::single_byte_env, bad) {
            Err(e) => assert!(e.contains("if"), "{e}"),
            Ok(_) => panic!("an `if` schema compiled"),
        }
    }
}
