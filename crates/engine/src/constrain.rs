//! Constrained decoding with llguidance: the grammar a request needs (a JSON schema for
//! structured output, a function call for `tool_choice: any`), the sampling step that
//! keeps the output inside it, and the [`Closer`] that keeps it completable within the tokens
//! it has left.
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
///
/// Definitions are narrowed where they stand, so every `$ref` still resolves, to the
/// narrowed definition. An object composed with others that may add properties (an `allOf`
/// branch beside other branches or properties, a `$ref` or `anyOf` beside properties, or a
/// definition referenced so) is not closed: closing it would refuse their properties. A
/// schema under `not` (or referenced from under one) is left as it is: narrowing it would
/// widen what the `not` allows.
pub fn bounded(schema: &Value) -> Value {
    bound(schema, &mut String::new(), Use::Plain, &ref_uses(schema))
}

/// How a schema is used, for [`bounded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Use {
    /// On its own: may be narrowed.
    Plain,
    /// Composed with schemas that may add properties: narrowed, but not closed.
    Extended,
    /// Under a `not`: left as it is.
    Negated,
}

/// Sources of properties of an object schema: its own, a `$ref`'s, each `allOf` branch's,
/// the `anyOf`/`oneOf` alternatives'. With more than one, none of them may be closed.
fn property_sources(o: &serde_json::Map<String, Value>) -> usize {
    usize::from(o.contains_key("properties") || o.contains_key("patternProperties"))
        + usize::from(o.contains_key("$ref"))
        + o.get("allOf").and_then(Value::as_array).map_or(0, Vec::len)
        + usize::from(o.contains_key("anyOf") || o.contains_key("oneOf"))
}

/// `segment` escaped for a JSON pointer (`~` as `~0`, `/` as `~1`).
fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The JSON pointer of a local `$ref` (`#`, `#/…`), percent-decoded.
fn local_pointer(reference: &str) -> Option<String> {
    let fragment = reference.strip_prefix('#')?.as_bytes();
    let mut out = Vec::with_capacity(fragment.len());
    let mut i = 0;
    while i < fragment.len() {
        let hex = fragment
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (fragment[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Where a subschema stands in its parent object.
#[derive(Debug, Clone, Copy)]
enum Slot<'a> {
    /// `parent[key]`.
    Key(&'a str),
    /// `parent[key][name]`.
    Member(&'a str, &'a str),
    /// `parent[key][i]`.
    Index(&'a str, usize),
}

impl Slot<'_> {
    /// The JSON pointer from the parent.
    fn pointer(self) -> String {
        match self {
            Slot::Key(k) => format!("/{}", pointer_segment(k)),
            Slot::Member(k, n) => format!("/{}/{}", pointer_segment(k), pointer_segment(n)),
            Slot::Index(k, i) => format!("/{}/{i}", pointer_segment(k)),
        }
    }

    fn get_mut(self, parent: &mut serde_json::Map<String, Value>) -> Option<&mut Value> {
        let (Slot::Key(k) | Slot::Member(k, _) | Slot::Index(k, _)) = self;
        let v = parent.get_mut(k)?;
        match self {
            Slot::Key(_) => Some(v),
            Slot::Member(_, n) => v.get_mut(n),
            Slot::Index(_, i) => v.get_mut(i),
        }
    }
}

/// The subschemas of `o` that [`bounded`] walks, where they stand, and how each is used
/// given how `o` is.
fn subschemas(o: &serde_json::Map<String, Value>, used: Use) -> Vec<(Slot<'_>, &Value, Use)> {
    let composed = if property_sources(o) > 1 {
        used.max(Use::Extended)
    } else {
        used
    };
    // What is under a negated schema stays negated; anything else stands on its own.
    let inner = if used == Use::Negated {
        used
    } else {
        Use::Plain
    };
    let mut out = Vec::new();
    for (key, v) in o {
        match (key.as_str(), v) {
            ("properties" | "$defs" | "definitions" | "patternProperties", Value::Object(m)) => {
                for (name, sub) in m {
                    out.push((Slot::Member(key, name), sub, inner));
                }
            }
            ("anyOf" | "oneOf" | "allOf", Value::Array(items)) => {
                for (i, sub) in items.iter().enumerate() {
                    out.push((Slot::Index(key, i), sub, composed));
                }
            }
            ("prefixItems", Value::Array(items)) => {
                for (i, sub) in items.iter().enumerate() {
                    out.push((Slot::Index(key, i), sub, inner));
                }
            }
            ("items" | "additionalProperties", sub @ Value::Object(_)) => {
                out.push((Slot::Key(key), sub, inner));
            }
            ("not", sub @ Value::Object(_)) => out.push((Slot::Key(key), sub, Use::Negated)),
            _ => {}
        }
    }
    out
}

/// How each local `$ref` target (by JSON pointer) is used, where that is more than
/// [`Use::Plain`]: a `$ref` composed with properties extends its target, one under `not`
/// negates it (and so on through the targets' own references, to a fixed point).
fn ref_uses(schema: &Value) -> std::collections::HashMap<String, Use> {
    fn walk(
        v: &Value,
        path: &str,
        used: Use,
        uses: &std::collections::HashMap<String, Use>,
        found: &mut Vec<(String, Use)>,
    ) {
        let Value::Object(o) = v else { return };
        let used = used.max(uses.get(path).copied().unwrap_or(Use::Plain));
        let here = if property_sources(o) > 1 {
            used.max(Use::Extended)
        } else {
            used
        };
        if here > Use::Plain {
            if let Some(p) = o
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(local_pointer)
            {
                found.push((p, here));
            }
        }
        for (slot, sub, u) in subschemas(o, used) {
            walk(sub, &format!("{path}{}", slot.pointer()), u, uses, found);
        }
    }
    let mut uses = std::collections::HashMap::new();
    loop {
        let mut found = Vec::new();
        walk(schema, "", Use::Plain, &uses, &mut found);
        let mut grew = false;
        for (p, u) in found {
            let e = uses.entry(p).or_insert(Use::Plain);
            if u > *e {
                *e = u;
                grew = true;
            }
        }
        if !grew {
            return uses;
        }
    }
}

fn bound(
    schema: &Value,
    path: &mut String,
    used: Use,
    uses: &std::collections::HashMap<String, Use>,
) -> Value {
    let Value::Object(o) = schema else {
        return schema.clone();
    };
    let used = used.max(uses.get(path.as_str()).copied().unwrap_or(Use::Plain));
    if used == Use::Negated {
        return schema.clone();
    }
    let mut out = o.clone();
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
    let has = |k: &str| o.contains_key(k);
    if is("string")
        && !["maxLength", "enum", "const", "pattern", "format"]
            .iter()
            .any(|k| has(k))
    {
        let min = o.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        out.insert("maxLength".into(), json!(DEFAULT_MAX_STRING.max(min)));
    }
    if is("array") && !has("maxItems") {
        let min = o.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        out.insert("maxItems".into(), json!(DEFAULT_MAX_ITEMS.max(min)));
    }
    if has("properties")
        && !has("additionalProperties")
        && !has("patternProperties")
        && used == Use::Plain
        && property_sources(o) == 1
    {
        out.insert("additionalProperties".into(), json!(false));
    }
    for (slot, sub, u) in subschemas(o, used) {
        let len = path.len();
        path.push_str(&slot.pointer());
        let narrowed = bound(sub, path, u, uses);
        path.truncate(len);
        if let Some(v) = slot.get_mut(&mut out) {
            *v = narrowed;
        }
    }
    Value::Object(out)
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

/// `schema`, to be embedded in another, made a schema resource of its own (an `$id` of
/// `urn:localgem:{name}` unless it has one): its references (`#`, `#/$defs/…`,
/// `#/definitions/…`) then resolve within it, as its author wrote them, and not against the
/// document it is embedded in.
fn resource(schema: Value, name: &str) -> Value {
    let Value::Object(mut o) = schema else {
        return schema;
    };
    // Drafts 3 and 4 spell the keyword `id`; the embedding document (2020-12) finds its
    // resources by `$id`, so such a schema gets both.
    let old_draft = o
        .get("$schema")
        .and_then(Value::as_str)
        .is_some_and(|d| d.contains("draft-04") || d.contains("draft-03"));
    let id = o
        .get("$id")
        .or_else(|| o.get("id").filter(|_| old_draft))
        .cloned()
        .unwrap_or_else(|| json!(format!("urn:localgem:{name}")));
    if old_draft {
        o.entry("id").or_insert_with(|| id.clone());
    }
    o.entry("$id").or_insert(id);
    Value::Object(o)
}

/// The schema of one call `{"name": …, "arguments": {…}}` to any of `tools`. Each tool's
/// parameters are a [`resource`] of their own, so their references resolve.
pub fn call_schema(tools: &[&FunctionDecl]) -> Value {
    let one = |i: usize, t: &FunctionDecl| {
        json!({
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": resource(bounded(&t.parameters), &format!("arguments:{i}")),
            },
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    if tools.len() == 1 {
        one(0, tools[0])
    } else {
        json!({"anyOf": tools.iter().enumerate().map(|(i, t)| one(i, t)).collect::<Vec<_>>()})
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
    built: std::sync::OnceLock<Result<Built, String>>,
}

/// The parser factory, and the token of each byte where the vocabulary has one.
struct Built {
    factory: ParserFactory,
    byte_tokens: Vec<Option<u32>>,
}

impl Grammars {
    /// No factory yet.
    pub fn new() -> Self {
        Grammars {
            built: std::sync::OnceLock::new(),
        }
    }

    fn factory(&self) -> Option<&ParserFactory> {
        Some(&self.built.get()?.as_ref().ok()?.factory)
    }

    fn byte_token(&self, b: u8) -> Option<u32> {
        let built = self.built.get()?.as_ref().ok()?;
        built.byte_tokens.get(usize::from(b)).copied().flatten()
    }

    /// A matcher for `grammar`, building the factory from `env` on first use.
    ///
    /// # Errors
    /// The grammar does not compile (an unsupported schema feature, say); the message names
    /// what.
    pub fn matcher(
        &self,
        env: impl FnOnce() -> TokEnv,
        grammar: TopLevelGrammar,
    ) -> Result<Matcher, String> {
        let built = self.built.get_or_init(|| {
            let env = env();
            let trie = env.tok_trie();
            let byte_tokens = (0..=255u8).map(|b| trie.token_id(&[b])).collect();
            let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
            factory.set_stderr_log_level(0);
            Ok(Built {
                factory,
                byte_tokens,
            })
        });
        let factory = &built.as_ref().map_err(Clone::clone)?.factory;
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

/// Where a JSON text stands: the containers open and what may come next. Outside the
/// top-level value it is lenient: bytes that cannot start one (the tags around a function
/// call, free text) are passed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonScan {
    /// Open containers, `{` or `[`, innermost last.
    stack: Vec<u8>,
    at: At,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum At {
    /// Outside any value (before the top-level one, or after it).
    #[default]
    Top,
    /// A value is due (after `: `, or `, ` in an array).
    Value,
    /// Just after `[`: a value or `]`.
    ArrayStart,
    /// Just after `{`: a key or `}`.
    ObjectStart,
    /// After `, ` in an object: a key is due.
    Key,
    /// In a string (a key's or a value's), just after a backslash when `escaped`.
    Str { key: bool, escaped: bool },
    /// After a key: `: ` and a value are due.
    Colon,
    /// In a number or a literal.
    Scalar,
    /// After a value in a container: `, ` or the container's end.
    AfterValue,
}

impl JsonScan {
    /// Move past `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    fn after_value(&self) -> At {
        if self.stack.is_empty() {
            At::Top
        } else {
            At::AfterValue
        }
    }

    fn byte(&mut self, b: u8) {
        if let At::Str { key, escaped } = self.at {
            self.at = match (escaped, b) {
                (true, _) => At::Str {
                    key,
                    escaped: false,
                },
                (false, b'\\') => At::Str { key, escaped: true },
                (false, b'"') if key => At::Colon,
                (false, b'"') => self.after_value(),
                _ => self.at,
            };
            return;
        }
        let value_due = matches!(self.at, At::Top | At::Value | At::ArrayStart);
        let nested = !self.stack.is_empty();
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b'"' if value_due => {
                self.at = At::Str {
                    key: false,
                    escaped: false,
                }
            }
            b'"' if matches!(self.at, At::ObjectStart | At::Key) => {
                self.at = At::Str {
                    key: true,
                    escaped: false,
                }
            }
            b'{' | b'[' if value_due => {
                self.stack.push(b);
                self.at = if b == b'{' {
                    At::ObjectStart
                } else {
                    At::ArrayStart
                };
            }
            b'}' | b']' if nested => {
                self.stack.pop();
                self.at = self.after_value();
            }
            b':' if self.at == At::Colon => self.at = At::Value,
            b',' if nested && matches!(self.at, At::AfterValue | At::Scalar) => {
                self.at = if self.stack.last() == Some(&b'{') {
                    At::Key
                } else {
                    At::Value
                };
            }
            _ if nested && matches!(self.at, At::Value | At::ArrayStart) => self.at = At::Scalar,
            _ => {}
        }
    }

    /// Bytes the shortest syntactic end takes from here (a schema may need more).
    pub fn distance(&self) -> usize {
        let here = match self.at {
            At::Top | At::Scalar | At::AfterValue | At::ObjectStart | At::ArrayStart => 0,
            At::Value => 1,
            At::Str {
                key: false,
                escaped,
            } => 1 + usize::from(escaped),
            At::Colon => 3,
            At::Str { key: true, escaped } => 4 + usize::from(escaped),
            At::Key => 5,
        };
        self.stack.len() + here
    }

    /// The moves that end what is open here soonest, best first: the string's quote, the
    /// container's end (or, where the schema wants more in it, the next item), or the
    /// shortest values (at the top an object or array first, as a JSON answer is expected
    /// to be).
    fn moves(&self) -> &'static [&'static [u8]] {
        const TOP: &[&[u8]] = &[b"{}", b"[]", b"\"\"", b"0", b"null"];
        const VALUE: &[&[u8]] = &[b"0", b"\"\"", b"[]", b"{}", b"null", b"false", b"true"];
        const ARRAY: &[&[u8]] = &[
            b"]", b"0", b"\"\"", b"[]", b"{}", b"null", b"false", b"true",
        ];
        match self.at {
            At::Top => TOP,
            At::Value => VALUE,
            At::ArrayStart => ARRAY,
            At::ObjectStart => &[b"}"],
            At::Str { escaped: false, .. } => &[b"\""],
            At::Colon => &[b": "],
            At::AfterValue | At::Scalar if self.stack.last() == Some(&b'{') => &[b"}", b", "],
            At::AfterValue | At::Scalar => &[b"]", b", "],
            At::Key | At::Str { escaped: true, .. } => &[],
        }
    }
}

/// Most bytes a planned completion may take: output that would need more to close is not
/// let through.
const MAX_PLAN_BYTES: usize = 1024;

/// Single bytes tried first, in this order, when no move of [`JsonScan::moves`] fits.
const FILLERS: &[u8] = b"\"0}],: a1-.e";

/// A way to complete the grammar from some state: its bytes and their tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    bytes: Vec<u8>,
    tokens: Vec<u32>,
}

impl Plan {
    /// The completion's text.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The completion's tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

impl Grammars {
    /// Tokens spelling exactly `bytes` (longest tokens first), if the vocabulary can.
    fn tokens_of(&self, bytes: &[u8]) -> Option<Vec<u32>> {
        let trie = self.factory()?.tok_env().tok_trie();
        let tokens = trie.greedy_tokenize(bytes);
        (trie.decode_raw(&tokens) == bytes).then_some(tokens)
    }

    /// Feed `bytes` to `m` if it takes them all; otherwise leave it as it was.
    fn take(&self, m: &mut Matcher, bytes: &[u8]) -> bool {
        let Some(tokens) = self.tokens_of(bytes) else {
            return false;
        };
        matches!(m.validate_tokens(&tokens), Ok(n) if n == tokens.len())
            && m.consume_tokens(&tokens).is_ok()
    }

    /// The byte `m` takes that leaves the least [`JsonScan::distance`]: among [`FILLERS`]
    /// when any fits (cheap), else among all single-byte tokens (the full mask).
    fn filler(&self, m: &mut Matcher, scan: &JsonScan) -> Option<u8> {
        let left = |b: u8| {
            let mut s = scan.clone();
            s.feed(&[b]);
            s.distance()
        };
        let token = |b: u8| self.byte_token(b);
        let cheap = FILLERS
            .iter()
            .copied()
            .filter(|&b| token(b).is_some_and(|t| matches!(m.validate_tokens(&[t]), Ok(1))))
            .min_by_key(|&b| left(b));
        if cheap.is_some() {
            return cheap;
        }
        let mask = m.compute_mask().ok()?;
        (0x20..=0xfe_u8)
            .chain(0..0x20)
            .filter(|&b| token(b).is_some_and(|t| mask.is_allowed(t)))
            .min_by_key(|&b| left(b))
    }

    /// A short completion of the grammar from `m`'s state, `scan` being where the JSON
    /// stands: forced bytes as the grammar forces them, else the move of
    /// [`JsonScan::moves`] that ends what is open soonest, else the byte that brings the
    /// end nearest. `None` when none is found within [`MAX_PLAN_BYTES`]. `m` is not changed.
    pub fn plan(&self, m: &Matcher, scan: &JsonScan) -> Option<Plan> {
        let mut m = m.clone();
        let mut scan = scan.clone();
        let mut bytes = Vec::new();
        loop {
            if m.is_error() {
                return None;
            }
            if m.is_stopped() || m.is_accepting().unwrap_or(false) {
                break;
            }
            if bytes.len() > MAX_PLAN_BYTES {
                return None;
            }
            let forced = m.compute_ff_bytes();
            let step = if !forced.is_empty() && self.take(&mut m, &forced) {
                forced
            } else if let Some(mv) = scan.moves().iter().find(|mv| self.take(&mut m, mv)) {
                mv.to_vec()
            } else {
                let b = self.filler(&mut m, &scan)?;
                if !self.take(&mut m, &[b]) {
                    return None;
                }
                vec![b]
            };
            scan.feed(&step);
            bytes.extend_from_slice(&step);
        }
        let tokens = self.tokens_of(&bytes)?;
        Some(Plan { bytes, tokens })
    }

    fn token_bytes(&self, t: u32) -> Vec<u8> {
        self.factory()
            .map(|f| f.tok_env().tok_trie().token(t).to_vec())
            .unwrap_or_default()
    }
}

/// Keeps a constrained output closable within the tokens it has left (to the output cap or
/// the context's end, whichever is nearer). A sampled token is kept only when the grammar
/// can still be completed after it within what is left ([`Grammars::plan`]); otherwise the
/// output goes on along the completion planned before it, which fit by the same rule. So
/// the output ends complete however deep the model had nested, as long as the first plan
/// fit (a cap too small for any valid output cuts it as usual).
#[derive(Debug, Default)]
pub struct Closer {
    scan: JsonScan,
    /// The completion from here, once planned (`None`: none found).
    plan: Option<Plan>,
    planned: bool,
}

/// What the output takes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// This token (already taken by the matcher).
    Token(u32),
    /// The end of generation: the grammar is complete.
    End,
}

impl Closer {
    /// Tokens the completion from here takes (0: the grammar may end here); `None` when no
    /// completion was found. Plans on first use, so call it before [`Closer::settle`].
    pub fn need(&mut self, g: &Grammars, m: &Matcher) -> Option<usize> {
        if !self.planned {
            self.plan = g.plan(m, &self.scan);
            self.planned = true;
        }
        self.plan.as_ref().map(|p| p.tokens.len())
    }

    /// `t` was sampled and taken by `m`, with `room` tokens left counting `t`; with `wrap`
    /// (near the cap) the completion may not grow either. What goes out: `t`; or else, in
    /// its place (taken by `m`), the first token of `t`'s bytes and their completion spelled
    /// in fewer tokens, or the next token of the completion planned before; or the end when
    /// that completion is empty.
    pub fn settle(
        &mut self,
        g: &Grammars,
        m: &mut Matcher,
        t: u32,
        room: usize,
        wrap: bool,
    ) -> Pick {
        let before = if self.planned { self.plan.take() } else { None };
        self.planned = true;
        let t_bytes = g.token_bytes(t);
        let mut scan = self.scan.clone();
        scan.feed(&t_bytes);
        let after = g.plan(m, &scan);
        let limit = before.as_ref().map(|b| b.tokens.len());
        // `n` tokens out from here, of which `rest` complete the grammar after the first.
        let fits = |n: usize, rest: usize| n <= room && !(wrap && limit.is_some_and(|l| rest > l));
        if let Some(a) = &after {
            if fits(1 + a.tokens.len(), a.tokens.len()) {
                self.scan = scan;
                self.plan = after;
                return Pick::Token(t);
            }
        }
        if before.is_none() || m.rollback(1).is_err() {
            // Nothing planned to fall back on (or `t` cannot be taken back): keep `t`.
            self.scan = scan;
            self.plan = after;
            return Pick::Token(t);
        }
        if let Some(a) = after {
            let mut bytes = t_bytes;
            bytes.extend_from_slice(&a.bytes);
            if let Some(tokens) = g.tokens_of(&bytes) {
                if tokens.first().is_some_and(|&f| f != t) && fits(tokens.len(), tokens.len() - 1) {
                    if let Some(p) = self.go(g, m, Plan { bytes, tokens }) {
                        return p;
                    }
                }
            }
        }
        match before {
            Some(b) if b.tokens.is_empty() => {
                self.plan = Some(b);
                Pick::End
            }
            Some(b) => self.go(g, m, b).unwrap_or(Pick::End),
            None => Pick::End,
        }
    }

    /// Send out the first token of `plan` (taken by `m`), the rest staying planned.
    fn go(&mut self, g: &Grammars, m: &mut Matcher, plan: Plan) -> Option<Pick> {
        let first = *plan.tokens.first()?;
        if try_token(m, first) != Verdict::Accepted {
            return None;
        }
        let n = g.token_bytes(first).len();
        self.scan.feed(&plan.bytes[..n]);
        self.plan = Some(Plan {
            bytes: plan.bytes[n..].to_vec(),
            tokens: plan.tokens[1..].to_vec(),
        });
        Some(Pick::Token(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use localgem_core::{ChatMessage, Role};
    use std::sync::Arc;
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
        let grammars = Grammars::new();
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
        let grammars = Grammars::new();
        let bad =
            TopLevelGrammar::from_json_schema(json!({"type": "object", "if": {"type": "object"}}));
        match grammars.matcher(ApproximateTokEnv::single_byte_env, bad) {
            Err(e) => assert!(e.contains("if"), "{e}"),
            Ok(_) => panic!("an `if` schema compiled"),
        }
    }

    fn plan_route() -> FunctionDecl {
        FunctionDecl {
            name: "plan_route".into(),
            description: "Plan a route".into(),
            parameters: json!({
                "$defs": {"stop": {"type": "object", "title": "Stop",
                    "properties": {"name": {"type": "string"}, "lat": {"type": "number"},
                                   "lon": {"type": "number"}},
                    "required": ["name", "lat", "lon"]}},
                "type": "object",
                "properties": {"start": {"$ref": "#/$defs/stop"}, "end": {"$ref": "#/$defs/stop"}},
                "required": ["start", "end"]
            }),
        }
    }

    fn call(name: &str, args: &str) -> String {
        format!("<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {args}}}\n</tool_call>")
    }

    #[test]
    fn tool_references_resolve_where_the_tool_wrote_them() {
        // Another tool whose `#/$defs/stop` is something else: each resolves in its own.
        let other = FunctionDecl {
            name: "stop_at".into(),
            description: String::new(),
            parameters: json!({"$defs": {"stop": {"type": "integer"}}, "type": "object",
                               "properties": {"n": {"$ref": "#/$defs/stop"}}, "required": ["n"]}),
        };
        let stop = r#"{"name": "Louvre", "lat": 48.86, "lon": 2.34}"#;
        let long = "x".repeat(DEFAULT_MAX_STRING as usize + 1);
        for mode in [ToolMode::Any, ToolMode::Validated] {
            for tools in [vec![plan_route()], vec![plan_route(), other.clone()]] {
                let mut r = req(mode, OutputFormat::Text);
                r.tools = tools;
                let two = r.tools.len() == 2;
                let g = || grammar_for(&r).unwrap();
                let ok = format!(r#"{{"start": {stop}, "end": {stop}}}"#);
                assert!(accepts(g(), &call("plan_route", &ok)), "{mode:?}");
                for bad in [
                    format!(r#"{{"start": {{"name": "L", "lat": 1}}, "end": {stop}}}"#),
                    format!(r#"{{"start": {{"name": "L", "lat": "1", "lon": 2}}, "end": {stop}}}"#),
                    format!(
                        r#"{{"start": {stop}, "end": {{"name": "L", "lat": 1, "lon": 2, "x": 1}}}}"#
                    ),
                    format!(
                        r#"{{"start": {stop}, "end": {{"name": "{long}", "lat": 1, "lon": 2}}}}"#
                    ),
                    format!(r#"{{"start": {stop}}}"#),
                ] {
                    assert!(!accepts(g(), &call("plan_route", &bad)), "{mode:?}: {bad}");
                }
                if two {
                    assert!(accepts(g(), &call("stop_at", r#"{"n": 3}"#)));
                    assert!(!accepts(
                        g(),
                        &call("stop_at", &format!(r#"{{"n": {stop}}}"#))
                    ));
                }
            }
        }
    }

    /// A tree through `#`, its label in `definitions` under a name that needs escaping in a
    /// pointer (`~1` for `/`, `~0` for `~`) and percent-encoding in a URI (`%25` for `%`).
    fn tree() -> Value {
        json!({"type": "object", "properties": {
                "label": {"$ref": "#/definitions/a~1b~0c%25d"},
                "children": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["label", "children"],
            "definitions": {"a/b~c%d": {"type": "string", "maxLength": 5}}})
    }

    #[test]
    fn recursive_and_escaped_references_resolve() {
        let good = r#"{"label": "root", "children": [{"label": "a", "children": []}, {"label": "b", "children": [{"label": "c", "children": []}]}]}"#;
        let bad = [
            r#"{"label": "root", "children": [{"label": "a"}]}"#,
            r#"{"label": "toolong", "children": []}"#,
            r#"{"label": "r", "children": [{"label": 3, "children": []}]}"#,
            r#"{"label": "r", "children": [{"label": "a", "children": [], "x": 1}]}"#,
        ];
        let g = || grammar_for(&req(ToolMode::None, OutputFormat::JsonSchema(tree()))).unwrap();
        assert!(accepts(g(), good));
        for b in bad {
            assert!(!accepts(g(), b), "{b}");
        }
        // The same as a tool's parameters, and in draft 4, whose id keyword is `id`.
        let mut draft4 = tree();
        draft4["$schema"] = json!("http://json-schema.org/draft-04/schema#");
        for parameters in [tree(), draft4] {
            let mut r = req(ToolMode::Any, OutputFormat::Text);
            r.tools = vec![FunctionDecl {
                name: "file".into(),
                description: String::new(),
                parameters,
            }];
            let g = || grammar_for(&r).unwrap();
            assert!(accepts(g(), &call("file", good)));
            for b in bad {
                assert!(!accepts(g(), &call("file", b)), "{b}");
            }
        }
    }

    #[test]
    fn response_format_defs_are_bounded_through_references() {
        let schema = json!({"$defs": {"Recipe": {"type": "object",
                "properties": {"recipe_name": {"type": "string"}}, "required": ["recipe_name"]}},
            "type": "array", "items": {"$ref": "#/$defs/Recipe"}});
        let g = || {
            grammar_for(&req(
                ToolMode::None,
                OutputFormat::JsonSchema(schema.clone()),
            ))
            .unwrap()
        };
        assert!(accepts(
            g(),
            r#"[{"recipe_name": "Shortbread"}, {"recipe_name": "Macaron"}]"#
        ));
        let long = "x".repeat(DEFAULT_MAX_STRING as usize + 1);
        for bad in [
            format!(r#"[{{"recipe_name": "{long}"}}]"#),
            r#"[{"recipe_name": "a", "extra": 1}]"#.to_owned(),
            r#"[{}]"#.to_owned(),
            format!(
                "[{}]",
                vec![r#"{"recipe_name": "a"}"#; DEFAULT_MAX_ITEMS as usize + 1].join(", ")
            ),
        ] {
            assert!(!accepts(g(), &bad), "{bad}");
        }
    }

    #[test]
    fn composed_objects_stay_open_and_negations_as_they_are() {
        // `allOf` of a referenced base and the object's own properties: closing either would
        // refuse the other's keys, and with `name` required nothing would validate.
        let schema = json!({"$defs": {"base": {"type": "object",
                "properties": {"name": {"type": "string"}}, "required": ["name"]}},
            "allOf": [{"$ref": "#/$defs/base"}],
            "properties": {"extra": {"type": "string"}}});
        let b = bounded(&schema);
        assert_eq!(b["$defs"]["base"].get("additionalProperties"), None, "{b}");
        assert_eq!(b.get("additionalProperties"), None, "{b}");
        assert_eq!(
            b["$defs"]["base"]["properties"]["name"]["maxLength"], 160,
            "{b}"
        );
        let g = || {
            grammar_for(&req(
                ToolMode::None,
                OutputFormat::JsonSchema(schema.clone()),
            ))
            .unwrap()
        };
        assert!(accepts(g(), r#"{"name": "a", "extra": "b"}"#));
        assert!(!accepts(g(), r#"{"extra": "b"}"#));
        // pydantic v1 wraps a described reference in a one-branch `allOf`: still closed.
        let v1 = json!({"definitions": {"Stop": {"type": "object",
                "properties": {"name": {"type": "string"}}}},
            "type": "object",
            "properties": {"start": {"allOf": [{"$ref": "#/definitions/Stop"}], "description": "from"}}});
        assert_eq!(
            bounded(&v1)["definitions"]["Stop"]["additionalProperties"],
            false
        );
        // Under `not` nothing is narrowed (that would widen what the `not` allows), also
        // through a reference.
        let neg = json!({"$defs": {"s": {"type": "string"}},
            "type": "object", "properties": {"a": {"not": {"$ref": "#/$defs/s"}},
                                             "b": {"not": {"type": "array"}}}});
        let b = bounded(&neg);
        assert_eq!(b["$defs"], neg["$defs"], "{b}");
        assert_eq!(b["properties"], neg["properties"], "{b}");
    }

    #[test]
    fn the_scan_follows_json() {
        let at = |text: &str| {
            let mut s = JsonScan::default();
            s.feed(text.as_bytes());
            (s.stack.len(), s.at, s.distance())
        };
        assert_eq!(at(""), (0, At::Top, 0));
        assert_eq!(at("<tool_call>\n"), (0, At::Top, 0));
        assert_eq!(at(r#"{"}": {"}": {"#).0, 3);
        assert_eq!(
            at(r#"{"}": {"}": {""#),
            (
                3,
                At::Str {
                    key: true,
                    escaped: false
                },
                7
            )
        );
        assert_eq!(
            at(r#"{"a\"": "b\"#),
            (
                1,
                At::Str {
                    key: false,
                    escaped: true
                },
                3
            )
        );
        assert_eq!(at(r#"{"a": "b\\""#), (1, At::AfterValue, 1));
        assert_eq!(
            at(r#"{"a": "b\\"#),
            (
                1,
                At::Str {
                    key: false,
                    escaped: false
                },
                2
            )
        );
        assert_eq!(at(r#"{"a": "]}""#), (1, At::AfterValue, 1));
        assert_eq!(at(r#"[1, {"a""#), (2, At::Colon, 5));
        assert_eq!(at(r#"[1, {"a": "#), (2, At::Value, 3));
        assert_eq!(at(r#"[1, {"a": -1.5"#), (2, At::Scalar, 2));
        assert_eq!(at(r#"[1, {"a": [], "#), (2, At::Key, 7));
        assert_eq!(at(r#"[[]"#), (1, At::AfterValue, 1));
        assert_eq!(at(r#"[{}, ["#), (2, At::ArrayStart, 2));
        assert_eq!(at("\"a\" {"), (1, At::ObjectStart, 1));
        assert_eq!(at(r#"{"a": 1}"#), (0, At::Top, 0));
    }

    /// Feed `text` to a matcher of `g` over single bytes and plan the rest from there.
    fn plan_after(g: TopLevelGrammar, text: &str) -> Plan {
        let grammars = Grammars::new();
        let mut m = grammars
            .matcher(ApproximateTokEnv::single_byte_env, g)
            .unwrap();
        for b in text.bytes() {
            assert_eq!(
                try_token(&mut m, u32::from(b)),
                Verdict::Accepted,
                "{text:?}"
            );
        }
        let mut scan = JsonScan::default();
        scan.feed(text.as_bytes());
        grammars
            .plan(&m, &scan)
            .unwrap_or_else(|| panic!("no plan after {text:?}"))
    }

    #[test]
    fn every_prefix_is_completed_to_valid_json() {
        let json_mode =
            || grammar_for(&req(ToolMode::None, OutputFormat::JsonSchema(json!({})))).unwrap();
        let text = r#"[{"recipe_name": "Choc \"chip\"\n", "n": -1.5e+3, "ok": [true, null, {"}": {"}": {"a": "#;
        for k in 0..=text.len() {
            let p = plan_after(json_mode(), &text[..k]);
            let whole = format!("{}{}", &text[..k], String::from_utf8(p.bytes).unwrap());
            serde_json::from_str::<Value>(&whole).unwrap_or_else(|e| panic!("{whole:?}: {e}"));
        }
        assert_eq!(
            plan_after(json_mode(), "").bytes(),
            b"{}",
            "an empty answer closes as {{}}"
        );
        // Required keys, a minimum of items, an enum: the plan fills in what the schema needs.
        let schema = json!({"type": "object", "properties": {
                "recipe_name": {"type": "string"},
                "ingredients": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "kind": {"enum": ["drop", "bar"]}},
            "required": ["recipe_name", "ingredients", "kind"]});
        let g = || {
            grammar_for(&req(
                ToolMode::None,
                OutputFormat::JsonSchema(schema.clone()),
            ))
            .unwrap()
        };
        let text = r#"{"recipe_name": "Sugar cookies", "ingredients": ["flour", "sugar"], "kind": "drop"}"#;
        for k in 0..=text.len() {
            let p = plan_after(g(), &text[..k]);
            let whole = format!("{}{}", &text[..k], String::from_utf8(p.bytes).unwrap());
            let v: Value =
                serde_json::from_str(&whole).unwrap_or_else(|e| panic!("{whole:?}: {e}"));
            assert!(v["recipe_name"].is_string(), "{whole}");
            assert!(!v["ingredients"].as_array().unwrap().is_empty(), "{whole}");
            assert!(v["kind"] == "drop" || v["kind"] == "bar", "{whole}");
        }
        // A function call: the plan closes the JSON and writes the closing tag.
        let mut r = req(ToolMode::Any, OutputFormat::Text);
        r.tools = vec![plan_route()];
        let text = call(
            "plan_route",
            r#"{"start": {"name": "Louvre", "lat": 48.86, "lon": 2.34}, "end": {"name": "Eiffel", "lat": 48.85, "lon": 2.29}}"#,
        );
        for k in 0..=text.len() {
            let p = plan_after(grammar_for(&r).unwrap(), &text[..k]);
            let whole = format!("{}{}", &text[..k], String::from_utf8(p.bytes).unwrap());
            assert!(accepts(grammar_for(&r).unwrap(), &whole), "{whole:?}");
        }
    }

    /// Single bytes, `words`, and the end of generation last.
    fn vocab(words: &[&str]) -> TokEnv {
        let mut all: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        all.extend(words.iter().map(|w| w.as_bytes().to_vec()));
        all.push(b"\xFF<|end|>".to_vec());
        let info = toktrie::TokRxInfo::new(all.len() as u32, all.len() as u32 - 1);
        Arc::new(ApproximateTokEnv::new(toktrie::TokTrie::from(&info, &all)))
    }

    /// Generate under `g` within `cap` tokens as the worker does (wrapping up within
    /// `margin`, every token settled), the model always taking the first of `wants` the
    /// grammar allows, else the lowest allowed token: the text and its token count.
    fn generate(
        env: &TokEnv,
        g: TopLevelGrammar,
        cap: usize,
        margin: usize,
        wants: &[&str],
    ) -> (String, usize) {
        let grammars = Grammars::new();
        let e = env.clone();
        let mut m = grammars.matcher(move || e, g).unwrap();
        let trie = env.tok_trie();
        let wants: Vec<u32> = wants
            .iter()
            .map(|w| trie.token_id(w.as_bytes()).unwrap())
            .collect();
        let mut closer = Closer::default();
        let (mut out, mut used) = (Vec::new(), 0);
        while used < cap && !m.is_stopped() {
            let room = cap - used;
            let wrap = closer
                .need(&grammars, &m)
                .is_some_and(|n| room <= n + margin);
            if wrap && m.is_accepting().unwrap() {
                break;
            }
            let t = match wants
                .iter()
                .copied()
                .find(|&t| try_token(&mut m, t) == Verdict::Accepted)
            {
                Some(t) => t,
                None => {
                    let mask = m.compute_mask().unwrap();
                    let Some(t) = (0..trie.vocab_size() as u32 - 1).find(|&t| mask.is_allowed(t))
                    else {
                        break;
                    };
                    assert_eq!(try_token(&mut m, t), Verdict::Accepted);
                    t
                }
            };
            match closer.settle(&grammars, &mut m, t, room, wrap) {
                Pick::Token(t) => out.extend_from_slice(trie.token(t)),
                Pick::End => break,
            }
            used += 1;
        }
        (String::from_utf8(out).unwrap(), used)
    }

    const WORDS: &[&str] = &[
        "{\"",
        "}\": ",
        "\": ",
        "\"}",
        "\"}}",
        "}}",
        "}}}",
        "{}",
        "[]",
        "[{\"",
        "\"}]",
        "recipe_name",
        "Chocolate Chip",
        " Oatmeal",
        ", \"",
        "]}",
    ];

    #[test]
    fn a_model_that_nests_forever_is_closed_within_every_cap() {
        // The cookbook failure: `{"}": {"}": …` until the cap cut it.
        let env = vocab(WORDS);
        let json_mode =
            || grammar_for(&req(ToolMode::None, OutputFormat::JsonSchema(json!({})))).unwrap();
        for cap in 1..=60 {
            for margin in [0, cap / 4] {
                let (text, used) = generate(&env, json_mode(), cap, margin, &["{\"", "}\": ", "{"]);
                assert!(used <= cap);
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("cap {cap}, margin {margin}: {text:?}: {e}"));
                if cap == 1 {
                    assert_eq!(text, "{}");
                }
            }
        }
        // A schema, and a model that writes one long string after another.
        let schema = json!({"type": "array", "items": {"type": "object",
            "properties": {"recipe_name": {"type": "string"}}, "required": ["recipe_name"]}});
        let g = || {
            grammar_for(&req(
                ToolMode::None,
                OutputFormat::JsonSchema(schema.clone()),
            ))
            .unwrap()
        };
        for cap in 1..=60 {
            let (text, _) = generate(
                &env,
                g(),
                cap,
                0,
                &["[{\"", "recipe_name", "\": ", "Chocolate Chip", " Oatmeal"],
            );
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("cap {cap}: {text:?}: {e}"));
            assert!(
                v.as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["recipe_name"].is_string()),
                "{text}"
            );
        }
        // A function call with nested references, within a cap that only just holds one.
        let mut r = req(ToolMode::Any, OutputFormat::Text);
        r.tools = vec![plan_route()];
        for cap in [160, 200, 300] {
            let (text, _) = generate(
                &env,
                grammar_for(&r).unwrap(),
                cap,
                0,
                &["Chocolate Chip", " Oatmeal"],
            );
            assert!(
                accepts(grammar_for(&r).unwrap(), &text),
                "cap {cap}: {text:?}"
            );
        }
    }
}
