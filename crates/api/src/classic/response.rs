//! Interaction output → `GenerateContentResponse`: a finished record at once, or a running
//! interaction's stream events chunk by chunk ([`Chunker`]).
//!
//! Thoughts become `thought: true` parts when the request asked for them; a thought's
//! signature rides on the next part (text or function call), as the API places it, so the
//! SDKs' chat history carries it back. Signatures are written in URL-safe base64, which the
//! Python SDK decodes to bytes and encodes back unchanged.

use base64::Engine as _;
use localgem_core::InteractionRecord;
use localgem_wire::classic::{
    Candidate, ClassicContent, FunctionCall, GenerateContentResponse, ModalityTokenCount, Part,
    UsageMetadata,
};
use localgem_wire::{Content, Delta, ErrorBody, Status, Step, StreamEvent, Usage};
use serde_json::Value;

use crate::error::ApiError;

/// What every chunk of one answer shares.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The model id as requested.
    pub model: String,
    /// Id of the response.
    pub response_id: String,
    /// Return thoughts as parts.
    pub include_thoughts: bool,
}

impl Answer {
    fn response(&self, parts: Vec<Part>, finish: Option<&str>) -> GenerateContentResponse {
        GenerateContentResponse {
            candidates: vec![Candidate {
                content: Some(ClassicContent {
                    role: Some("model".into()),
                    parts,
                }),
                finish_reason: finish.map(str::to_owned),
                finish_message: None,
                index: 0,
            }],
            usage_metadata: None,
            model_version: Some(self.model.clone()),
            response_id: Some(self.response_id.clone()),
        }
    }
}

/// A signature as the classic API writes it: the same bytes, URL-safe base64.
fn signature(sig: &str) -> String {
    match crate::signature::decode_base64(sig) {
        Ok(bytes) => base64::engine::general_purpose::URL_SAFE.encode(bytes),
        Err(_) => sig.to_owned(),
    }
}

/// The finish reason of a terminal status.
fn finish_reason(status: Status) -> &'static str {
    match status {
        Status::Incomplete | Status::BudgetExceeded => "MAX_TOKENS",
        Status::Completed | Status::RequiresAction => "STOP",
        _ => "OTHER",
    }
}

/// Token counts in the API's terms.
pub fn usage_metadata(u: &Usage) -> UsageMetadata {
    let some = |n: u64| (n > 0).then_some(n);
    UsageMetadata {
        prompt_token_count: u.total_input_tokens,
        cached_content_token_count: some(u.total_cached_tokens),
        candidates_token_count: Some(u.total_output_tokens),
        thoughts_token_count: some(u.total_thought_tokens),
        total_token_count: u.total_tokens,
        prompt_tokens_details: u
            .input_tokens_by_modality
            .iter()
            .map(|m| ModalityTokenCount {
                modality: m.modality.to_ascii_uppercase(),
                token_count: m.tokens,
            })
            .collect(),
    }
}

/// The HTTP error of a failed run's `error` event (a stream has only the event's body).
fn failure(e: &ErrorBody) -> ApiError {
    match e.code.as_str() {
        "unavailable" => ApiError::unavailable(e.message.clone()),
        "resource_exhausted" => ApiError::overloaded(e.message.clone()),
        _ => {
            let mut err = ApiError::internal(&e.message);
            err.message.clone_from(&e.message);
            err
        }
    }
}

/// A finished interaction as one response.
///
/// # Errors
/// The run's failure (503 when its engine was lost, 500 otherwise).
pub fn from_record(
    answer: &Answer,
    record: &InteractionRecord,
) -> Result<GenerateContentResponse, ApiError> {
    if record.status == Status::Failed {
        return Err(crate::events::failure(record));
    }
    let mut parts = Vec::new();
    let mut pending: Option<String> = None;
    let place = |mut part: Part, pending: &mut Option<String>, parts: &mut Vec<Part>| {
        part.thought_signature = pending.take().map(|s| signature(&s));
        parts.push(part);
    };
    for step in &record.output {
        match step {
            Step::Thought { signature, summary } => {
                let text: String = summary
                    .iter()
                    .flatten()
                    .filter_map(|c| match c {
                        Content::Text { text, .. } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                if answer.include_thoughts && !text.is_empty() {
                    parts.push(Part {
                        thought: Some(true),
                        ..Part::text(text)
                    });
                }
                pending.clone_from(signature);
            }
            Step::ModelOutput { content, .. } => {
                for c in content {
                    if let Content::Text { text, .. } = c {
                        if !text.is_empty() {
                            place(Part::text(text.clone()), &mut pending, &mut parts);
                        }
                    }
                }
            }
            Step::FunctionCall {
                id,
                name,
                arguments,
            } => place(
                call_part(id, name, arguments.clone()),
                &mut pending,
                &mut parts,
            ),
            _ => {}
        }
    }
    if parts.iter().all(|p| p.thought == Some(true)) || pending.is_some() {
        // Every answer has a non-thought part (the SDKs drop a turn without one from chat
        // history), and a signature needs a part to ride on.
        place(Part::text(""), &mut pending, &mut parts);
    }
    let mut r = answer.response(parts, Some(finish_reason(record.status)));
    r.usage_metadata = Some(usage_metadata(&record.usage));
    Ok(r)
}

fn call_part(id: &str, name: &str, args: Value) -> Part {
    Part {
        function_call: Some(FunctionCall {
            id: Some(id.to_owned()),
            name: name.to_owned(),
            // Always an object: the Python SDK runs a call only when `args` is there.
            args: Some(if args.is_object() {
                args
            } else {
                Value::Object(Default::default())
            }),
        }),
        ..Part::default()
    }
}

/// What a stream sends for one log event.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// A response chunk.
    Response(Box<GenerateContentResponse>),
    /// The run failed: the error to send, after which the stream ends.
    Error(ApiError),
}

/// Turns a running interaction's stream events into response chunks.
#[derive(Debug)]
pub struct Chunker {
    answer: Answer,
    /// A thought's signature waiting for the next part.
    pending: Option<String>,
    /// The function call whose arguments come next: id and name.
    call: Option<(String, String)>,
}

impl Chunker {
    /// A chunker for one answer.
    pub fn new(answer: Answer) -> Self {
        Chunker {
            answer,
            pending: None,
            call: None,
        }
    }

    fn part(&mut self, mut part: Part) -> Chunk {
        if part.thought != Some(true) {
            part.thought_signature = self.pending.take().map(|s| signature(&s));
        }
        Chunk::Response(Box::new(self.answer.response(vec![part], None)))
    }

    /// The chunk for one event, if it makes one.
    pub fn on(&mut self, event: &StreamEvent) -> Option<Chunk> {
        match event {
            StreamEvent::StepStart { step, .. } => {
                if step.get("type").and_then(Value::as_str) == Some("function_call") {
                    let field = |k: &str| {
                        step.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    self.call = Some((field("id"), field("name")));
                }
                None
            }
            StreamEvent::StepDelta { delta, .. } => match delta {
                Delta::Text { text } if !text.is_empty() => Some(self.part(Part::text(text))),
                Delta::Text { .. } => None,
                Delta::ThoughtSummary {
                    content: Content::Text { text, .. },
                } if self.answer.include_thoughts && !text.is_empty() => Some(self.part(Part {
                    thought: Some(true),
                    ..Part::text(text)
                })),
                Delta::ThoughtSummary { .. } => None,
                Delta::ThoughtSignature { signature } => {
                    self.pending = Some(signature.clone());
                    None
                }
                Delta::ArgumentsDelta { arguments } => {
                    let (id, name) = self.call.take().unwrap_or_default();
                    let args = serde_json::from_str(arguments).unwrap_or(Value::Null);
                    Some(self.part(call_part(&id, &name, args)))
                }
            },
            StreamEvent::Completed { interaction, .. } => {
                // The last chunk: finish reason and usage, on an empty text part (the SDKs'
                // chats drop a streamed turn with a chunk without parts), which also carries
                // a signature still waiting.
                let mut last = Part::text("");
                last.thought_signature = self.pending.take().map(|s| signature(&s));
                let mut r = self
                    .answer
                    .response(vec![last], Some(finish_reason(interaction.status)));
                r.usage_metadata = interaction.usage.as_ref().map(usage_metadata);
                Some(Chunk::Response(Box::new(r)))
            }
            StreamEvent::Error { error, .. } => Some(Chunk::Error(failure(error))),
            StreamEvent::Created { .. } | StreamEvent::StatusUpdate { .. } => None,
            StreamEvent::StepStop { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests;
