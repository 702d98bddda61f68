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

/// Characters a string may have when its schema sets no `maxLength`.
pub const DEFAULT_MAX_STRING: u64 = 160;
/// Items an array may have when its schema sets no `maxItems`.
pub const DEFAULT_MAX_ITEMS: u64 = 12;

/// Narrow a schema so that output following it ends: strings with no `maxLength` (and no
/// `enum`, `const`, `pattern` or `format`) get [`DEFAULT_MAX_STRING`], arrays with no
/// `maxItems` get [`DEFAULT_MAX_ITEMS`], and objects that list `properties` but say nothing of
/// `additionalProperties` get no others. Every output valid against the narrowed schema is
/// valid against the original; without this a small model can fill a string, or repeat an
/// array item, until the output cap cuts the JSON off.
pub fn bounded(schema: &Value) -> Value {
    let Value::Object(o) = schema else {
        return schema.clone();
    };
    let mut o = o.clone();
    let types: Vec<String> = match o.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let is = |t: &str| types.iter().any(|x| x == t);
    let has = |o: &serde_json::Map<String, Value>, k: &str| o.contains_key(k);
    if is("string")
        && !["maxLength", "enum", "const", "pattern", "format"]
            .iter()
            .any(|k| has(&o, k))
    {
        let min = o.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        o.insert("maxLength".into(), json!(DEFAULT_MAX_STRING.max(min)));
    }
    if is("array") && !has(&o, "maxItems") {
        let min = o.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        o.insert("maxItems".into(), json!(DEFAULT_MAX_ITEMS.max(min)));
    }
    if has(&o, "properties") && !has(&o, "additionalProperties") && !has(&o, "patternProperties") {
        o.insert("additionalProperties".into(), json!(false));
    }
    for (key, v) in o.iter_mut() {
        match (key.as_str(), v) {
            ("properties" | "$defs" | "definitions" | "patternProperties", Value::Object(m)) => {
                for sub in m.values_mut() {
                    *sub = bounded(sub);
                }
            }
            ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(items)) => {
                for sub in items.iter_mut() {
                    *sub = bounded(sub);
                }
            }
            ("items" | "additionalProperties" | "not", sub @ Value::Object(_)) => {
                *sub = bounded(sub);
            }
            _ => {}
        }
    }
    Value::Object(o)
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
                "arguments": bounded(&t.parameters),
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
/// * `tool_choice` `any`: one call, `<tool_call>\n{json}\n</tool_call>`, naming an offered
///   tool with arguments valid against its schema (one: small models given room for more
///   repeat the same call until the output cap);
/// * `validated`: either free text that writes no call, or such a call.
pub fn grammar_for(req: &GenerateRequest) -> Option<TopLevelGrammar> {
    let tools: Vec<&FunctionDecl> = req.tools.iter().collect();
    match req.tool_mode {
        ToolMode::Any | ToolMode::Validated if !tools.is_empty() => {
            let schema = with_layout(&call_schema(&tools));
            let calls = format!(
                "calls: call\ncall: {open:?} \"\\n\" %json {schema} \"\\n\" {close:?}\n",
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
            OutputFormat::JsonSchema(schema) => Some(TopLevelGrammar::from_json_schema(
                with_layout(&bounded(schema)),
            )),
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
    /// Tokens that close JSON (`"`, `]`, `}` and nothing else), with a preference rank.
    closers: Vec<(u32, u8)>,
}

/// How strongly a token's text closes JSON, 0 for not at all: 3 for `"` followed by `]`/`}`
/// (a string's end and its container's), 2 for a lone `"`, 1 for only `]`/`}`. Ending the
/// string comes first: inside a string `]` and `}` are just more text.
pub fn closing_rank(bytes: &[u8]) -> u8 {
    let closers = |b: &[u8]| b.iter().all(|c| b"]}".contains(c));
    match bytes {
        [] => 0,
        [b'"'] => 2,
        [b'"', rest @ ..] if closers(rest) => 3,
        b if closers(b) => 1,
        _ => 0,
    }
}

impl Grammars {
    /// No factory yet.
    pub fn new() -> Self {
        Grammars {
            factory: None,
            closers: Vec::new(),
        }
    }

    /// Tokens that only close JSON structure, with their [`closing_rank`].
    pub fn closers(&self) -> &[(u32, u8)] {
        &self.closers
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
            let env = env();
            let trie = env.tok_trie();
            self.closers = (0..trie.vocab_size() as u32)
                .filter_map(|t| {
                    let r = closing_rank(trie.token(t));
                    (r > 0).then_some((t, r))
                })
                .collect();
            let mut f = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
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
        assert!(!accepts(
            g(),
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"
        ), "one call");
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
            !accepts(g(), "{\"n\": 3, \"tags\": [], \"extra\": 1}"),
            "closed object"
        );
        assert!(
            !accepts(g(), "{ \"n\": 3, \"tags\": []}"),
            "no free whitespace"
        );
    }

    #[test]
    fn closing_ranks() {
        assert_eq!(closing_rank(b"\"]}"), 3);
        assert_eq!(closing_rank(b"\""), 2);
        assert_eq!(closing_rank(b"}}"), 1);
        assert_eq!(closing_rank(b"]\""), 0);
        assert_eq!(closing_rank(b"a"), 0);
        assert_eq!(closing_rank(b""), 0);
    }

    #[test]
    fn bounding_narrows_only_what_is_open() {
        let s = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "code": {"type": "string", "pattern": "^[A-Z]+$"},
                "tags": {"type": "array", "items": {"type": "string", "minLength": 500}, "minItems": 20},
                "meta": {"type": "object", "additionalProperties": {"type": "string"}},
                "any": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": ["string", "null"]}]}
            },
            "$defs": {"x": {"type": "array"}}
        });
        assert_eq!(
            bounded(&s),
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 160},
                    "code": {"type": "string", "pattern": "^[A-Z]+$"},
                    "tags": {"type": "array", "items": {"type": "string", "minLength": 500, "maxLength": 500}, "minItems": 20, "maxItems": 20},
                    "meta": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 160}},
                    "any": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": ["string", "null"], "maxLength": 160}]}
                },
                "$defs": {"x": {"type": "array", "maxItems": 12}},
                "additionalProperties": false
            })
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
