//! Response types: the Interaction resource, its steps and the stream events, parsed leniently.
//!
//! The request side uses the [`localgem_wire`] types as they are. The response side wraps the
//! ones that may grow on the live API ([`Step`], [`StreamEvent`], [`Status`]) in
//! [`MaybeKnown`], so a step, event or status this crate does not know is kept as raw JSON
//! instead of failing the whole answer — what the official SDKs do (`UnknownStep`).

use std::fmt;

use localgem_wire::{Content, Delta, Status, Step, StreamEvent, Usage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A value of a known wire type, or any other JSON kept as received.
///
/// Deserializing never fails on well-formed JSON: if the value does not parse as `T` (an
/// unknown `type`, a missing field, …) it is kept as [`MaybeKnown::Unknown`]. Serializing
/// writes back what was parsed, or the raw JSON unchanged, so unknown steps round-trip.
///
/// ```
/// use localgem_client::{AnyStep, MaybeKnown};
///
/// let step: AnyStep = serde_json::from_str(
///     r#"{"type":"code_execution_call","id":"c1","arguments":{"code":"print(1)","language":"python"}}"#,
/// ).unwrap();
/// assert!(!step.is_known());
/// assert_eq!(step.step_type(), Some("code_execution_call"));
/// // Sent back unchanged, e.g. as stateless history.
/// assert_eq!(serde_json::to_value(&step).unwrap()["arguments"]["code"], "print(1)");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum MaybeKnown<T> {
    /// Parsed as the wire type.
    Known(T),
    /// Anything else, as received.
    Unknown(Value),
}

impl<T> MaybeKnown<T> {
    /// The parsed value, if it is known.
    pub fn known(&self) -> Option<&T> {
        match self {
            MaybeKnown::Known(t) => Some(t),
            MaybeKnown::Unknown(_) => None,
        }
    }

    /// The parsed value, if it is known.
    pub fn into_known(self) -> Option<T> {
        match self {
            MaybeKnown::Known(t) => Some(t),
            MaybeKnown::Unknown(_) => None,
        }
    }

    /// Whether the value parsed as the wire type.
    pub fn is_known(&self) -> bool {
        matches!(self, MaybeKnown::Known(_))
    }

    /// The raw JSON of an unknown value.
    pub fn unknown(&self) -> Option<&Value> {
        match self {
            MaybeKnown::Known(_) => None,
            MaybeKnown::Unknown(v) => Some(v),
        }
    }
}

impl<T: Serialize> MaybeKnown<T> {
    /// The JSON form, as it would be sent.
    pub fn to_value(&self) -> Value {
        match self {
            MaybeKnown::Known(t) => serde_json::to_value(t).unwrap_or(Value::Null),
            MaybeKnown::Unknown(v) => v.clone(),
        }
    }
}

impl<T> From<T> for MaybeKnown<T> {
    fn from(t: T) -> Self {
        MaybeKnown::Known(t)
    }
}

impl<T: PartialEq> PartialEq<T> for MaybeKnown<T> {
    fn eq(&self, other: &T) -> bool {
        self.known() == Some(other)
    }
}

impl<T: Serialize> Serialize for MaybeKnown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MaybeKnown::Known(t) => t.serialize(s),
            MaybeKnown::Unknown(v) => v.serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for MaybeKnown<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(d)?;
        Ok(match T::deserialize(&raw) {
            Ok(t) => MaybeKnown::Known(t),
            Err(_) => MaybeKnown::Unknown(raw),
        })
    }
}

/// A step of an interaction: a known [`Step`] or an unknown one kept as JSON.
pub type AnyStep = MaybeKnown<Step>;

/// A stream event: a known [`StreamEvent`] or an unknown one kept as JSON.
pub type Event = MaybeKnown<StreamEvent>;

impl MaybeKnown<Step> {
    /// The step's `type` (`user_input`, `model_output`, `thought`, …), known or not.
    pub fn step_type(&self) -> Option<&str> {
        match self {
            MaybeKnown::Known(step) => Some(match step {
                Step::UserInput { .. } => "user_input",
                Step::ModelOutput { .. } => "model_output",
                Step::Thought { .. } => "thought",
                Step::FunctionCall { .. } => "function_call",
                Step::FunctionResult { .. } => "function_result",
            }),
            MaybeKnown::Unknown(v) => v.get("type").and_then(Value::as_str),
        }
    }

    /// The content of a `user_input` or `model_output` step (empty for other steps).
    pub fn content(&self) -> &[Content] {
        match self {
            MaybeKnown::Known(Step::UserInput { content })
            | MaybeKnown::Known(Step::ModelOutput { content, .. }) => content,
            _ => &[],
        }
    }

    /// The concatenated text items of the step's content.
    pub fn text(&self) -> String {
        self.content()
            .iter()
            .filter_map(|c| match c {
                Content::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl MaybeKnown<StreamEvent> {
    /// The event's `event_type` (`step.delta`, `interaction.completed`, …), known or not.
    pub fn event_type(&self) -> Option<&str> {
        match self {
            MaybeKnown::Known(e) => Some(e.event_type()),
            MaybeKnown::Unknown(v) => v.get("event_type").and_then(Value::as_str),
        }
    }

    /// The text of a `step.delta` event whose delta is `{"type":"text"}`.
    pub fn text_delta(&self) -> Option<&str> {
        match self {
            MaybeKnown::Known(StreamEvent::StepDelta {
                delta: Delta::Text { text },
                ..
            }) => Some(text),
            _ => None,
        }
    }
}

/// The Interaction resource, as returned by create, get and cancel.
///
/// The same fields as [`localgem_wire::Interaction`], with lenient [`steps`](Self::steps) and
/// [`status`](Self::status), and any other top-level field (`continuation_token`, `agent`,
/// `errors`, …) kept in [`extra`](Self::extra).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// Opaque id; `""` when the request set `store: false`.
    #[serde(default)]
    pub id: String,
    /// `interaction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The model id as requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Status; compare with `interaction.status == Status::Completed`.
    #[serde(default = "missing_status")]
    pub status: MaybeKnown<Status>,
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Last update time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// The timeline: on create, the steps the model produced; on get, the input steps too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<AnyStep>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Service tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Echo of the request's `previous_interaction_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_interaction_id: Option<String>,
    /// Every other top-level field, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn missing_status() -> MaybeKnown<Status> {
    MaybeKnown::Unknown(Value::Null)
}

impl Default for Interaction {
    /// An empty interaction: id `""`, no status (`null`), no steps.
    fn default() -> Self {
        Interaction {
            id: String::new(),
            object: None,
            model: None,
            status: missing_status(),
            created: None,
            updated: None,
            steps: Vec::new(),
            usage: None,
            service_tier: None,
            previous_interaction_id: None,
            extra: Map::new(),
        }
    }
}

impl Interaction {
    /// The answer text, computed like the official SDKs' `output_text`.
    ///
    /// Walks the steps backwards from the end, skipping `thought` steps, and joins the trailing
    /// run of `text` items of the last `model_output` step(s); it stops at any other step (a
    /// `user_input`, a `function_call`, …) or at a non-text item. Empty when there is no such
    /// text (for example when the model asked for a function call).
    ///
    /// ```
    /// let it: localgem_client::Interaction = serde_json::from_value(serde_json::json!({
    ///     "id": "v1_a", "status": "completed",
    ///     "steps": [
    ///         {"type": "thought", "signature": "c2ln"},
    ///         {"type": "model_output", "content": [{"type": "text", "text": "Hello"},
    ///                                              {"type": "text", "text": " world"}]}
    ///     ]
    /// })).unwrap();
    /// assert_eq!(it.output_text(), "Hello world");
    /// ```
    pub fn output_text(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        'steps: for step in self.steps.iter().rev() {
            match step {
                MaybeKnown::Known(Step::Thought { .. }) => continue,
                MaybeKnown::Known(Step::ModelOutput { content, .. }) => {
                    for c in content.iter().rev() {
                        match c {
                            Content::Text { text, .. } => parts.push(text),
                            _ => break 'steps,
                        }
                    }
                }
                _ => break,
            }
        }
        parts.iter().rev().copied().collect()
    }

    /// The status, if it is one this crate knows.
    pub fn known_status(&self) -> Option<Status> {
        self.status.known().copied()
    }

    /// The `function_call` steps: `(id, name, arguments)`.
    pub fn function_calls(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.steps.iter().filter_map(|s| match s {
            MaybeKnown::Known(Step::FunctionCall {
                id,
                name,
                arguments,
            }) => Some((id.as_str(), name.as_str(), arguments)),
            _ => None,
        })
    }
}

impl fmt::Display for Interaction {
    /// Writes [`Interaction::output_text`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.output_text())
    }
}

impl From<localgem_wire::Interaction> for Interaction {
    fn from(w: localgem_wire::Interaction) -> Self {
        Interaction {
            id: w.id,
            object: Some(w.object),
            model: w.model,
            status: MaybeKnown::Known(w.status),
            created: w.created,
            updated: w.updated,
            steps: w
                .steps
                .unwrap_or_default()
                .into_iter()
                .map(MaybeKnown::Known)
                .collect(),
            usage: w.usage,
            service_tier: w.service_tier,
            previous_interaction_id: w.previous_interaction_id,
            extra: Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// §3.6 of the spec, verbatim.
    fn spec_text_answer() -> Value {
        json!({
          "id": "v1_ChdPU0F4YWFtNkFwS2kxZThQZ05lbXdROBIXT1NBeGFhbTZBcEtpMWU4UGdOZW13UTg",
          "object": "interaction",
          "model": "gemini-3-flash-preview",
          "status": "completed",
          "created": "2026-05-20T12:25:15Z",
          "updated": "2026-05-20T12:25:15Z",
          "service_tier": "standard",
          "steps": [
            {"type": "model_output",
             "content": [{"type": "text", "text": "Hello! I'm doing well. How can I help you today?"}]}
          ],
          "usage": {"total_input_tokens": 7, "total_output_tokens": 14, "total_thought_tokens": 0,
                    "total_cached_tokens": 0, "total_tool_use_tokens": 0, "total_tokens": 21,
                    "input_tokens_by_modality": [{"modality": "text", "tokens": 7}]}
        })
    }

    #[test]
    fn spec_text_answer_round_trips() {
        let body = spec_text_answer();
        let it: Interaction = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(it.status, Status::Completed);
        assert_eq!(
            it.output_text(),
            "Hello! I'm doing well. How can I help you today?"
        );
        assert_eq!(it.usage.as_ref().unwrap().total_tokens, 21);
        assert!(it.extra.is_empty());
        assert_eq!(serde_json::to_value(&it).unwrap(), body);
    }

    #[test]
    fn spec_thinking_answer_round_trips() {
        // §3.7
        let body = json!({
          "id": "v1_ChcxLXQtYXE2ekhkYnJqdU1QOHV6NmdBMBIXMS10LWFxNnpIZGJyanVNUDh1ejZnQTA",
          "object": "interaction",
          "model": "gemini-3.5-flash",
          "status": "completed",
          "created": "2026-08-14T10:19:36Z",
          "updated": "2026-08-14T10:19:41Z",
          "service_tier": "standard",
          "steps": [
            {"type": "thought",
             "signature": "EqcFCqQFARFNMg/QRx9+QFFSLwl9sdoW…",
             "summary": [{"type": "text", "text": "**Defining the problem**\n\nI need the meeting time of two trains…"}]},
            {"type": "model_output",
             "content": [{"type": "text", "text": "The trains meet at 11:18 AM, 138 km from Station A."}]}
          ],
          "usage": {"total_input_tokens": 62, "total_output_tokens": 171, "total_thought_tokens": 297,
                    "total_cached_tokens": 0, "total_tool_use_tokens": 0, "total_tokens": 530}
        });
        let it: Interaction = serde_json::from_value(body.clone()).unwrap();
        assert!(it.steps.iter().all(MaybeKnown::is_known));
        assert_eq!(it.steps[0].step_type(), Some("thought"));
        assert_eq!(
            it.output_text(),
            "The trains meet at 11:18 AM, 138 km from Station A."
        );
        assert_eq!(serde_json::to_value(&it).unwrap(), body);
    }

    #[test]
    fn spec_function_call_answer() {
        // §3.8
        let body = json!({
          "id": "v1_ChdGUVFJYXBXVUdLVEF4TjhQ…",
          "object": "interaction",
          "model": "gemini-3-flash-preview",
          "status": "requires_action",
          "created": "2026-05-20T12:22:47Z",
          "updated": "2026-05-20T12:22:47Z",
          "steps": [
            {"type": "thought", "signature": "EtcCCtQCARFNMg/ZEQwX…"},
            {"type": "function_call", "id": "call_3345913", "name": "get_weather",
             "arguments": {"location": "Boston, MA"}}
          ],
          "usage": {"total_input_tokens": 75, "total_output_tokens": 19, "total_thought_tokens": 51,
                    "total_cached_tokens": 0, "total_tool_use_tokens": 0, "total_tokens": 145}
        });
        let it: Interaction = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(it.status, Status::RequiresAction);
        assert_eq!(it.output_text(), "");
        let calls: Vec<_> = it.function_calls().collect();
        assert_eq!(
            calls,
            vec![(
                "call_3345913",
                "get_weather",
                &json!({"location": "Boston, MA"})
            )]
        );
        assert_eq!(serde_json::to_value(&it).unwrap(), body);
    }

    #[test]
    fn unknown_step_types_are_kept_verbatim() {
        let mut body = spec_text_answer();
        let unknown = json!({"type": "google_search_call", "id": "s1",
                             "arguments": {"queries": ["weather"]}, "signature": "abc"});
        let odd_content = json!({"type": "model_output",
                                 "content": [{"type": "hologram", "frames": 3}]});
        body["steps"] = json!([
            unknown.clone(),
            odd_content.clone(),
            body["steps"][0].clone()
        ]);
        let it: Interaction = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(it.steps.len(), 3);
        assert_eq!(it.steps[0].unknown(), Some(&unknown));
        assert_eq!(it.steps[0].step_type(), Some("google_search_call"));
        assert_eq!(
            it.steps[1].unknown(),
            Some(&odd_content),
            "a step with an unknown content type is kept whole"
        );
        assert!(it.steps[2].is_known());
        assert_eq!(serde_json::to_value(&it).unwrap(), body);
    }

    #[test]
    fn unknown_status_and_fields_are_kept() {
        let body = json!({"id": "x", "status": "paused_for_review", "agent": "deep-research",
                          "continuation_token": "tok", "steps": []});
        let it: Interaction = serde_json::from_value(body).unwrap();
        assert_eq!(it.known_status(), None);
        assert_eq!(it.status.unknown(), Some(&json!("paused_for_review")));
        assert_eq!(it.extra["continuation_token"], "tok");
        assert_eq!(it.extra["agent"], "deep-research");
    }

    #[test]
    fn lenient_like_the_python_sdk() {
        // No status, no steps, nulls from a Python model_dump.
        let it: Interaction = serde_json::from_value(json!({"id": "x"})).unwrap();
        assert_eq!(it.output_text(), "");
        let it: Interaction = serde_json::from_value(json!({"id": "x", "status": "completed",
            "steps": [{"type": "model_output", "content": [{"type": "text", "text": "hi", "annotations": null}], "error": null}]}))
        .unwrap();
        assert_eq!(it.output_text(), "hi");
    }

    #[test]
    fn output_text_rules() {
        let it = |steps: Value| -> Interaction {
            serde_json::from_value(json!({"id": "x", "status": "completed", "steps": steps}))
                .unwrap()
        };
        let text = |t: &str| json!({"type": "text", "text": t});
        let out = |c: Vec<Value>| json!({"type": "model_output", "content": c});
        // Trailing run of model_output steps, thoughts skipped.
        assert_eq!(
            it(json!([out(vec![text("a")]), {"type": "thought"}, out(vec![text("b"), text("c")]), {"type":"thought"}]))
                .output_text(),
            "abc"
        );
        // Stops at user_input.
        assert_eq!(
            it(json!([out(vec![text("old")]), {"type": "user_input", "content": [text("q")]}, out(vec![text("new")])]))
                .output_text(),
            "new"
        );
        // Stops at a non-text item.
        let image = json!({"type": "image", "data": "AAAA", "mime_type": "image/png"});
        assert_eq!(
            it(json!([out(vec![text("a"), image, text("b")])])).output_text(),
            "b"
        );
        // Stops at a function call.
        assert_eq!(
            it(json!([out(vec![text("a")]), {"type": "function_call", "id": "1", "name": "f", "arguments": {}}]))
                .output_text(),
            ""
        );
    }

    #[test]
    fn spec_stream_events_parse() {
        // §4.6, including an unknown event and an unknown delta type.
        let lines = [
            r#"{"interaction":{"id":"v1_Chc","status":"in_progress","object":"interaction","model":"gemini-3.5-flash"},"event_type":"interaction.created"}"#,
            r#"{"interaction_id":"v1_Chc","status":"in_progress","event_type":"interaction.status_update"}"#,
            r#"{"index":0,"step":{"type":"thought"},"event_type":"step.start"}"#,
            r#"{"index":0,"delta":{"content":{"text":"**Defining the problem**","type":"text"},"type":"thought_summary"},"event_type":"step.delta"}"#,
            r#"{"index":0,"delta":{"signature":"ErAnCq0nARFNMg/dDvVl…","type":"thought_signature"},"event_type":"step.delta"}"#,
            r#"{"index":0,"event_type":"step.stop"}"#,
            r#"{"index":1,"step":{"type":"model_output"},"event_type":"step.start"}"#,
            r#"{"index":1,"delta":{"text":"To find when","type":"text"},"event_type":"step.delta"}"#,
            r#"{"index":1,"delta":{"type":"text_annotation_delta","annotations":[]},"event_type":"step.delta"}"#,
            r#"{"index":1,"event_type":"step.stop"}"#,
            r#"{"interaction":{"id":"v1_Chc","status":"completed","usage":{"total_tokens":2517,"total_input_tokens":62,"input_tokens_by_modality":[{"modality":"text","tokens":62}],"total_cached_tokens":0,"total_output_tokens":1100,"total_tool_use_tokens":0,"total_thought_tokens":1355},"created":"2026-08-14T10:19:36Z","updated":"2026-08-14T10:19:36Z","service_tier":"standard","object":"interaction","model":"gemini-3.5-flash"},"event_type":"interaction.completed"}"#,
            r#"{"event_type":"interaction.heartbeat","at":1}"#,
        ];
        let events: Vec<Event> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let types: Vec<_> = events.iter().map(|e| e.event_type().unwrap()).collect();
        assert_eq!(
            types,
            [
                "interaction.created",
                "interaction.status_update",
                "step.start",
                "step.delta",
                "step.delta",
                "step.stop",
                "step.start",
                "step.delta",
                "step.delta",
                "step.stop",
                "interaction.completed",
                "interaction.heartbeat"
            ]
        );
        assert_eq!(events[7].text_delta(), Some("To find when"));
        assert!(!events[8].is_known(), "unknown delta type kept");
        assert!(!events[11].is_known(), "unknown event type kept");
        for (line, e) in lines.iter().zip(&events) {
            let back = e.to_value();
            let orig: Value = serde_json::from_str(line).unwrap();
            assert_eq!(back, orig, "round trip of {line}");
        }
    }
}
