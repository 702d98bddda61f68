//! The Interactions API: [`Interactions`], the [`EventStream`] of a streamed answer, and the
//! [`StreamAccumulator`] that turns events back into an [`Interaction`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use localgem_wire::{Delta, StreamEvent};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{Client, Request};
use crate::error::{Error, Result};
use crate::request::InteractionRequest;
use crate::sse::{SseEvent, SseParser};
use crate::types::{Event, Interaction, MaybeKnown};

/// The Interactions API, from [`Client::interactions`].
#[derive(Debug, Clone)]
pub struct Interactions {
    client: Client,
}

/// Percent-encode one path segment (ids are URL-safe base64 in practice; this guards the rest).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Interactions {
    pub(crate) fn new(client: Client) -> Self {
        Interactions { client }
    }

    fn request(&self, method: Method, path: &str) -> Request {
        let mut r = Request::new(method, self.client.url(path));
        r.interactions = true;
        r
    }

    /// `POST /{v}/interactions`: create an interaction and wait for the whole answer.
    ///
    /// ```no_run
    /// # async fn run(client: localgem_client::Client) -> Result<(), localgem_client::Error> {
    /// use localgem_client::InteractionRequest;
    ///
    /// let it = client.interactions()
    ///     .create(InteractionRequest::new("gemini-3-flash-preview", "How does AI work?"))
    ///     .await?;
    /// println!("{}", it.output_text());
    /// # Ok(()) }
    /// ```
    pub async fn create(&self, request: impl Into<InteractionRequest>) -> Result<Interaction> {
        let mut body = request.into().into_wire();
        body.stream = None;
        let req = self
            .request(Method::POST, "interactions")
            .header("accept", "application/json")?
            .json(&body)?;
        self.client.execute(req).await?.json()
    }

    /// `POST /{v}/interactions` with `"stream": true`: the answer as a stream of events.
    ///
    /// The request is retried (per the client's [`RetryPolicy`](crate::RetryPolicy)) only
    /// until the first byte of the event stream arrives. An `error` event from the server is
    /// yielded as an event, as the official SDKs do; a broken connection or undecodable data
    /// is yielded as an `Err` and ends the stream.
    ///
    /// ```no_run
    /// # async fn run(client: localgem_client::Client) -> Result<(), localgem_client::Error> {
    /// use futures::StreamExt;
    /// use localgem_client::InteractionRequest;
    ///
    /// let mut stream = client.interactions()
    ///     .create_stream(InteractionRequest::new("gemini-3-flash-preview", "Explain how AI works"))
    ///     .await?;
    /// while let Some(event) = stream.next().await {
    ///     if let Some(text) = event?.text_delta() {
    ///         print!("{text}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn create_stream(
        &self,
        request: impl Into<InteractionRequest>,
    ) -> Result<EventStream> {
        let mut body = request.into().into_wire();
        body.stream = Some(true);
        let req = self
            .request(Method::POST, "interactions")
            .header("accept", "text/event-stream")?
            .json(&body)?;
        Ok(EventStream::new(self.client.execute_stream(req).await?))
    }

    /// `GET /{v}/interactions/{id}`: a stored interaction, with its input steps.
    pub async fn get(&self, id: &str) -> Result<Interaction> {
        let req = self
            .request(Method::GET, &format!("interactions/{}", segment(id)))
            .query("stream", "false")
            .header("accept", "application/json")?;
        self.client.execute(req).await?.json()
    }

    /// `GET /{v}/interactions/{id}?stream=true`: the events of a stored (typically background)
    /// interaction, replayed and then followed live; with `last_event_id`, only those after
    /// that event.
    pub async fn get_stream(&self, id: &str, last_event_id: Option<&str>) -> Result<EventStream> {
        let mut req = self.request(Method::GET, &format!("interactions/{}", segment(id)));
        if let Some(last) = last_event_id {
            req = req.query("last_event_id", last);
        }
        let req = req
            .query("stream", "true")
            .header("accept", "text/event-stream")?;
        Ok(EventStream::new(self.client.execute_stream(req).await?))
    }

    /// `DELETE /{v}/interactions/{id}`.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let req = self
            .request(Method::DELETE, &format!("interactions/{}", segment(id)))
            .header("accept", "application/json")?;
        self.client.execute(req).await?;
        Ok(())
    }

    /// `POST /{v}/interactions/{id}/cancel`: stop a background interaction.
    pub async fn cancel(&self, id: &str) -> Result<Interaction> {
        let req = self
            .request(
                Method::POST,
                &format!("interactions/{}/cancel", segment(id)),
            )
            .header("accept", "application/json")?;
        self.client.execute(req).await?.json()
    }
}

/// The events of a streamed answer: a [`Stream`] of [`Event`]s.
///
/// Ends after the server's `[DONE]` marker or when the connection closes.
pub struct EventStream {
    bytes: Option<BoxStream<'static, Result<Bytes>>>,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("open", &self.bytes.is_some())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl EventStream {
    /// Events decoded from any byte stream in `text/event-stream` format (for tests and for
    /// streams obtained elsewhere).
    pub fn from_bytes<S>(bytes: S) -> Self
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        EventStream::new(bytes.boxed())
    }

    fn new(bytes: BoxStream<'static, Result<Bytes>>) -> Self {
        EventStream {
            bytes: Some(bytes),
            parser: SseParser::new(),
            pending: VecDeque::new(),
        }
    }

    /// Read the whole stream and rebuild the [`Interaction`] it describes (see
    /// [`StreamAccumulator`]).
    pub async fn into_interaction(mut self) -> Result<Interaction> {
        let mut acc = StreamAccumulator::new();
        while let Some(event) = self.next().await {
            acc.push(&event?);
        }
        Ok(acc.finish())
    }

    fn decode(sse: SseEvent) -> Option<Result<Event>> {
        let data = sse.data.trim();
        if data == "[DONE]" {
            return None;
        }
        let mut value: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => return Some(Err(Error::decode(e, data.as_bytes()))),
        };
        // The SDKs dispatch on `event_type` inside the data; fill it from `event:` if absent.
        if let (Value::Object(obj), Some(name)) = (&mut value, sse.event.as_deref()) {
            if !obj.contains_key("event_type") && name != "message" {
                obj.insert("event_type".into(), Value::String(name.to_owned()));
            }
        }
        Some(serde_json::from_value::<Event>(value).map_err(|e| Error::decode(e, data.as_bytes())))
    }
}

impl Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(sse) = this.pending.pop_front() {
                match EventStream::decode(sse) {
                    Some(item) => return Poll::Ready(Some(item)),
                    None => {
                        // `[DONE]`: the stream is over.
                        this.bytes = None;
                        this.pending.clear();
                        return Poll::Ready(None);
                    }
                }
            }
            let Some(bytes) = this.bytes.as_mut() else {
                return Poll::Ready(None);
            };
            match bytes.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => this.pending.extend(this.parser.feed(&chunk)),
                Poll::Ready(Some(Err(e))) => {
                    this.bytes = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.bytes = None;
                    this.pending.extend(this.parser.finish());
                    if this.pending.is_empty() {
                        return Poll::Ready(None);
                    }
                }
            }
        }
    }
}

/// Rebuilds an [`Interaction`] from its stream events, as the SDKs' stream helpers do: the
/// `interaction.created`/`completed` events give id, status and usage; `step.start` shells
/// and `step.delta` fragments give the steps (text appended, thought summaries and signature
/// merged, function-call arguments parsed at `step.stop`).
///
/// The result's steps can be passed back as stateless history, like those of a unary answer.
///
/// ```
/// use localgem_client::{Event, StreamAccumulator};
///
/// let events = [
///     r#"{"event_type":"interaction.created","interaction":{"id":"v1_a","status":"in_progress"}}"#,
///     r#"{"event_type":"step.start","index":0,"step":{"type":"model_output"}}"#,
///     r#"{"event_type":"step.delta","index":0,"delta":{"type":"text","text":"Hel"}}"#,
///     r#"{"event_type":"step.delta","index":0,"delta":{"type":"text","text":"lo"}}"#,
///     r#"{"event_type":"step.stop","index":0}"#,
///     r#"{"event_type":"interaction.completed","interaction":{"id":"v1_a","status":"completed"}}"#,
/// ];
/// let mut acc = StreamAccumulator::new();
/// for e in events {
///     acc.push(&serde_json::from_str::<Event>(e).unwrap());
/// }
/// let it = acc.finish();
/// assert_eq!(it.id, "v1_a");
/// assert_eq!(it.output_text(), "Hello");
/// ```
#[derive(Debug, Default, Clone)]
pub struct StreamAccumulator {
    top: Map<String, Value>,
    steps: Vec<Value>,
    arguments: Vec<Option<String>>,
}

impl StreamAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    fn step(&mut self, index: u32) -> &mut Value {
        let i = index as usize;
        while self.steps.len() <= i {
            self.steps.push(Value::Object(Map::new()));
            self.arguments.push(None);
        }
        &mut self.steps[i]
    }

    fn merge_top(&mut self, interaction: Value) {
        if let Value::Object(obj) = interaction {
            for (k, v) in obj {
                if k != "steps" {
                    self.top.insert(k, v);
                }
            }
        }
    }

    /// Take one event into account.
    pub fn push(&mut self, event: &Event) {
        match event {
            MaybeKnown::Known(e) => self.push_known(e),
            MaybeKnown::Unknown(v) => self.push_unknown(v),
        }
    }

    fn push_known(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Created { interaction, .. }
            | StreamEvent::Completed { interaction, .. } => {
                self.merge_top(serde_json::to_value(interaction).unwrap_or(Value::Null));
            }
            StreamEvent::StatusUpdate { status, .. } => {
                self.top
                    .insert("status".into(), Value::String(status.as_str().into()));
            }
            StreamEvent::StepStart { index, step, .. } => {
                *self.step(*index) = step.clone();
                if step.get("type").and_then(Value::as_str) == Some("function_call") {
                    self.arguments[*index as usize] = Some(String::new());
                }
            }
            StreamEvent::StepDelta { index, delta, .. } => {
                let i = *index;
                match delta {
                    Delta::Text { text } => append_text(self.step(i), "content", text),
                    Delta::ThoughtSummary { content } => {
                        let c = serde_json::to_value(content).unwrap_or(Value::Null);
                        push_item(self.step(i), "summary", c);
                    }
                    Delta::ThoughtSignature { signature } => {
                        set(self.step(i), "signature", Value::String(signature.clone()));
                    }
                    Delta::ArgumentsDelta { arguments } => {
                        self.step(i);
                        self.arguments[i as usize]
                            .get_or_insert_with(String::new)
                            .push_str(arguments);
                    }
                }
            }
            StreamEvent::StepStop { index, .. } => self.stop(*index),
            StreamEvent::Error { error, .. } => {
                self.top.insert("status".into(), json!("failed"));
                let e = serde_json::to_value(error).unwrap_or(Value::Null);
                self.top.insert("error".into(), e);
            }
        }
    }

    fn push_unknown(&mut self, v: &Value) {
        // A delta this crate has no type for: media content and annotations of a
        // model_output, or the fields of a built-in tool step.
        if v.get("event_type").and_then(Value::as_str) != Some("step.delta") {
            return;
        }
        let (Some(index), Some(delta)) = (v.get("index").and_then(Value::as_u64), v.get("delta"))
        else {
            return;
        };
        let Ok(index) = u32::try_from(index) else {
            return;
        };
        let kind = delta.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "image" | "audio" | "video" | "document" => {
                push_item(self.step(index), "content", delta.clone())
            }
            "text_annotation_delta" => {
                let annotations = delta.get("annotations").cloned().unwrap_or(json!([]));
                let step = self.step(index);
                if let Some(last) = last_text_item(step) {
                    let list = last
                        .entry("annotations")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let (Value::Array(list), Value::Array(new)) = (list, annotations) {
                        list.extend(new);
                    }
                }
            }
            _ => {
                if let (Value::Object(step), Value::Object(fields)) = (self.step(index), delta) {
                    for (k, val) in fields {
                        if k != "type" {
                            step.insert(k.clone(), val.clone());
                        }
                    }
                }
            }
        }
    }

    fn stop(&mut self, index: u32) {
        let i = index as usize;
        if let Some(Some(args)) = self.arguments.get_mut(i).map(Option::take) {
            let parsed = if args.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(&args).unwrap_or(Value::String(args))
            };
            set(self.step(index), "arguments", parsed);
        }
    }

    /// The interaction so far: unfinished function-call arguments are parsed as they stand.
    pub fn finish(mut self) -> Interaction {
        for i in 0..self.steps.len() {
            self.stop(i as u32);
        }
        let mut top = self.top;
        top.insert("steps".into(), Value::Array(self.steps));
        top.entry("id").or_insert_with(|| json!(""));
        serde_json::from_value(Value::Object(top)).unwrap_or_default()
    }
}

fn set(step: &mut Value, key: &str, v: Value) {
    if !step.is_object() {
        *step = Value::Object(Map::new());
    }
    if let Value::Object(obj) = step {
        obj.insert(key.to_owned(), v);
    }
}

fn push_item(step: &mut Value, key: &str, item: Value) {
    if !step.is_object() {
        *step = Value::Object(Map::new());
    }
    if let Value::Object(obj) = step {
        let list = obj
            .entry(key.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if !list.is_array() {
            *list = Value::Array(Vec::new());
        }
        if let Value::Array(list) = list {
            list.push(item);
        }
    }
}

fn last_text_item(step: &mut Value) -> Option<&mut Map<String, Value>> {
    let last = step.get_mut("content")?.as_array_mut()?.last_mut()?;
    if last.get("type").and_then(Value::as_str) == Some("text") {
        last.as_object_mut()
    } else {
        None
    }
}

fn append_text(step: &mut Value, key: &str, text: &str) {
    if step.get("type").is_none() {
        set(step, "type", json!("model_output"));
    }
    if let Some(item) = last_text_item(step) {
        if let Some(Value::String(s)) = item.get_mut("text") {
            s.push_str(text);
            return;
        }
    }
    push_item(step, key, json!({"type": "text", "text": text}));
}

#[cfg(test)]
mod tests {
    use super::*;
    use localgem_wire::{Content, Status, Step};

    /// §4.6, the thinking transcript, verbatim apart from shortened ids.
    const THINKING: &str = r#"event: interaction.created
data: {"interaction":{"id":"v1_Chc","status":"in_progress","object":"interaction","model":"gemini-3.5-flash"},"event_type":"interaction.created"}

event: interaction.status_update
data: {"interaction_id":"v1_Chc","status":"in_progress","event_type":"interaction.status_update"}

event: step.start
data: {"index":0,"step":{"type":"thought"},"event_type":"step.start"}

event: step.delta
data: {"index":0,"delta":{"content":{"text":"**Defining the problem**\n\nI need the meeting time…","type":"text"},"type":"thought_summary"},"event_type":"step.delta"}

event: step.delta
data: {"index":0,"delta":{"signature":"ErAnCq0nARFNMg/dDvVl…","type":"thought_signature"},"event_type":"step.delta"}

event: step.stop
data: {"index":0,"event_type":"step.stop"}

event: step.start
data: {"index":1,"step":{"type":"model_output"},"event_type":"step.start"}

event: step.delta
data: {"index":1,"delta":{"text":"To find when and where the two","type":"text"},"event_type":"step.delta"}

event: step.delta
data: {"index":1,"delta":{"text":" trains meet, we can break the problem down.","type":"text"},"event_type":"step.delta"}

event: step.stop
data: {"index":1,"event_type":"step.stop"}

event: interaction.completed
data: {"interaction":{"id":"v1_Chc","status":"completed","usage":{"total_tokens":2517,"total_input_tokens":62,"input_tokens_by_modality":[{"modality":"text","tokens":62}],"total_cached_tokens":0,"total_output_tokens":1100,"total_tool_use_tokens":0,"total_thought_tokens":1355},"created":"2026-08-14T10:19:36Z","updated":"2026-08-14T10:19:36Z","service_tier":"standard","object":"interaction","model":"gemini-3.5-flash"},"event_type":"interaction.completed"}

event: done
data: [DONE]

"#;

    /// §4.6, the function-call transcript.
    const FUNCTION_CALL: &str = r#"event: interaction.created
data: {"interaction":{"id":"","status":"in_progress","object":"interaction","model":"gemini-3.7-flash"},"event_type":"interaction.created"}

event: step.start
data: {"index":0,"step":{"type":"thought"},"event_type":"step.start"}

event: step.delta
data: {"index":0,"delta":{"signature":"EtcCCtQCARFNMg/ZEQwX…","type":"thought_signature"},"event_type":"step.delta"}

event: step.stop
data: {"index":0,"event_type":"step.stop"}

event: step.start
data: {"index":1,"step":{"id":"call_3345913","type":"function_call","name":"get_weather","arguments":{}},"event_type":"step.start"}

event: step.delta
data: {"index":1,"delta":{"arguments":"{\"location\":\"Hobart, Tasmania\"}","type":"arguments_delta"},"event_type":"step.delta"}

event: step.stop
data: {"index":1,"event_type":"step.stop"}

event: interaction.completed
data: {"interaction":{"id":"","status":"completed","object":"interaction","model":"gemini-3.7-flash"},"event_type":"interaction.completed"}

event: done
data: [DONE]

"#;

    fn chunked(text: &str, size: usize) -> EventStream {
        let chunks: Vec<Result<Bytes>> = text
            .as_bytes()
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        EventStream::from_bytes(futures::stream::iter(chunks))
    }

    async fn collect(stream: EventStream) -> Vec<Event> {
        stream.map(|e| e.unwrap()).collect().await
    }

    #[tokio::test]
    async fn spec_transcript_decodes_in_any_chunking() {
        let whole = collect(chunked(THINKING, usize::MAX / 2)).await;
        assert_eq!(
            whole.len(),
            11,
            "[DONE] ends the stream and is not an event"
        );
        assert!(whole.iter().all(MaybeKnown::is_known));
        let text: String = whole.iter().filter_map(|e| e.text_delta()).collect();
        assert_eq!(
            text,
            "To find when and where the two trains meet, we can break the problem down."
        );
        for variant in [THINKING.replace('\n', "\r\n"), THINKING.replace('\n', "\r")] {
            for size in [1, 2, 3, 7, 64] {
                assert_eq!(
                    collect(chunked(&variant, size)).await,
                    whole,
                    "chunk {size}"
                );
            }
        }
    }

    #[tokio::test]
    async fn comments_and_missing_event_type_and_unknown_events() {
        let text = ": keep-alive\r\n\r\nevent: step.stop\r\ndata: {\"index\":2}\r\n\r\n: ping\r\ndata: {\"event_type\":\"agent.note\",\"n\":1}\r\n\r\n";
        let ev = collect(chunked(text, 1)).await;
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[0],
            MaybeKnown::Known(StreamEvent::StepStop {
                index: 2,
                event_id: None
            })
        );
        assert_eq!(ev[1].event_type(), Some("agent.note"));
        assert!(!ev[1].is_known());
    }

    #[tokio::test]
    async fn bad_json_is_an_error() {
        let mut s = chunked("data: {not json\n\n", 4);
        assert!(matches!(s.next().await, Some(Err(Error::Decode { .. }))));
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn stream_without_done_ends_at_eof() {
        let text = "data: {\"index\":0,\"event_type\":\"step.stop\"}";
        assert_eq!(collect(chunked(text, 5)).await.len(), 1);
    }

    #[tokio::test]
    async fn accumulates_the_thinking_transcript() {
        let it = chunked(THINKING, 10).into_interaction().await.unwrap();
        assert_eq!(it.id, "v1_Chc");
        assert_eq!(it.status, Status::Completed);
        assert_eq!(it.usage.as_ref().unwrap().total_tokens, 2517);
        assert_eq!(
            it.steps[0],
            Step::Thought {
                signature: Some("ErAnCq0nARFNMg/dDvVl…".into()),
                summary: Some(vec![Content::text(
                    "**Defining the problem**\n\nI need the meeting time…"
                )]),
            }
        );
        assert_eq!(
            it.output_text(),
            "To find when and where the two trains meet, we can break the problem down."
        );
    }

    #[tokio::test]
    async fn accumulates_the_function_call_transcript() {
        let it = chunked(FUNCTION_CALL, 3).into_interaction().await.unwrap();
        assert_eq!(it.id, "");
        assert_eq!(
            it.steps[1],
            Step::FunctionCall {
                id: "call_3345913".into(),
                name: "get_weather".into(),
                arguments: json!({"location": "Hobart, Tasmania"}),
            }
        );
    }

    #[test]
    fn accumulates_unknown_deltas() {
        let events = [
            json!({"event_type":"step.start","index":0,"step":{"type":"model_output"}}),
            json!({"event_type":"step.delta","index":0,"delta":{"type":"text","text":"See "}}),
            json!({"event_type":"step.delta","index":0,"delta":{"type":"text_annotation_delta","annotations":[{"type":"url_citation","url":"u"}]}}),
            json!({"event_type":"step.delta","index":0,"delta":{"type":"image","mime_type":"image/png","data":"AA=="}}),
            json!({"event_type":"step.start","index":1,"step":{"type":"code_execution_call","id":"c"}}),
            json!({"event_type":"step.delta","index":1,"delta":{"type":"code_execution_call","arguments":{"code":"1","language":"python"}}}),
        ];
        let mut acc = StreamAccumulator::new();
        for e in events {
            acc.push(&serde_json::from_value(e).unwrap());
        }
        let it = acc.finish();
        assert_eq!(
            it.steps[0].to_value(),
            json!({"type":"model_output","content":[
                {"type":"text","text":"See ","annotations":[{"type":"url_citation","url":"u"}]},
                {"type":"image","mime_type":"image/png","data":"AA=="}]})
        );
        assert_eq!(
            it.steps[1].unknown(),
            Some(
                &json!({"type":"code_execution_call","id":"c","arguments":{"code":"1","language":"python"}})
            )
        );
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("v1_Ab-9"), "v1_Ab-9");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
