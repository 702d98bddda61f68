//! An async client for Google's Gemini **Interactions API** (the `steps` schema, revision
//! 2026-05-20) and the **Files API**.
//!
//! It talks to Google's endpoint or to any server that speaks the same wire format, such as a
//! local [localgem](https://github.com/localgem/localgem) server, and shares its serde wire
//! types with that server ([`localgem_wire`], re-exported as [`wire`]).
//!
//! # Configuration
//!
//! [`Client::new`] reads the environment like the official SDKs: the key from
//! `GEMINI_API_KEY` or `GOOGLE_API_KEY`, the server from `GOOGLE_GEMINI_BASE_URL` (default
//! `https://generativelanguage.googleapis.com`) and optionally `GOOGLE_GENAI_API_VERSION`
//! (default `v1`). [`Client::builder`] overrides any of these and sets the timeout and the
//! [`RetryPolicy`] (408, 409, 429 and 5xx answers and connection errors are retried with
//! exponential backoff; a stream only before its first byte). The key travels in the
//! `x-goog-api-key` header; paths are `/{version}/interactions…`, `/{version}/files…` and
//! `/upload/{version}/files`.
//!
//! # Example
//!
//! Building a request needs no server; the JSON is exactly what is sent:
//!
//! ```
//! use localgem_client::{input, InteractionRequest};
//! use serde_json::json;
//!
//! let request = InteractionRequest::new(
//!     "gemini-3-flash-preview",
//!     vec![input::text("Tell me about this instrument"),
//!          input::image_uri("https://example.com/v1/files/abc", "image/jpeg")],
//! )
//! .system_instruction("You are a cat. Your name is Neko.")
//! .thinking_level("low");
//!
//! assert_eq!(request.to_json(), json!({
//!     "model": "gemini-3-flash-preview",
//!     "input": [
//!         {"type": "text", "text": "Tell me about this instrument"},
//!         {"type": "image", "uri": "https://example.com/v1/files/abc", "mime_type": "image/jpeg"}
//!     ],
//!     "system_instruction": "You are a cat. Your name is Neko.",
//!     "generation_config": {"thinking_level": "low"}
//! }));
//! ```
//!
//! Sending it, streaming an answer, and continuing the conversation:
//!
//! ```no_run
//! use futures::StreamExt;
//! use localgem_client::{Client, InteractionRequest};
//!
//! # async fn run() -> Result<(), localgem_client::Error> {
//! let client = Client::new()?;
//!
//! let first = client.interactions()
//!     .create(InteractionRequest::new("gemini-3-flash-preview", "I have 2 dogs in my house."))
//!     .await?;
//! println!("{}", first.output_text());
//!
//! let mut stream = client.interactions()
//!     .create_stream(
//!         InteractionRequest::new("gemini-3-flash-preview", "How many paws are in my house?")
//!             .previous_interaction_id(&first.id),
//!     )
//!     .await?;
//! while let Some(event) = stream.next().await {
//!     if let Some(text) = event?.text_delta() {
//!         print!("{text}");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Stateless history
//!
//! With `store(false)` the server keeps nothing; pass the earlier steps back as input. The
//! steps of an answer ([`Interaction::steps`], or [`EventStream::into_interaction`] for a
//! stream) are [`AnyStep`]s: steps of a type this crate does not know are kept as raw JSON and
//! sent back unchanged.
//!
//! ```no_run
//! use localgem_client::{input, AnyStep, Client, InteractionRequest};
//!
//! # async fn run(client: Client) -> Result<(), localgem_client::Error> {
//! let mut history: Vec<AnyStep> = vec![input::user_text("I have 2 dogs in my house.").into()];
//! let first = client.interactions()
//!     .create(InteractionRequest::new("gemini-3-flash-preview", &history).store(false))
//!     .await?;
//! history.extend(first.steps);
//! history.push(input::user_text("How many paws are in my house?").into());
//! let second = client.interactions()
//!     .create(InteractionRequest::new("gemini-3-flash-preview", &history).store(false))
//!     .await?;
//! println!("{}", second.output_text());
//! # Ok(()) }
//! ```
//!
//! # Files
//!
//! ```no_run
//! use localgem_client::{input, Client, InteractionRequest, UploadConfig};
//!
//! # async fn run(client: Client) -> Result<(), localgem_client::Error> {
//! let file = client.files()
//!     .upload_with("path/to/organ.jpg", UploadConfig::new().on_progress(|sent, total| {
//!         eprintln!("uploaded {sent} of {total} bytes");
//!     }))
//!     .await?;
//! let it = client.interactions()
//!     .create(InteractionRequest::new(
//!         "gemini-3-flash-preview",
//!         vec![input::text("Tell me about this instrument"), input::file(&file)],
//!     ))
//!     .await?;
//! println!("{}", it.output_text());
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Every call returns [`Result`]. An answer with a non-2xx status is [`Error::Api`] with the
//! HTTP status and the server's code and message, from either error envelope the API uses.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod error;
mod files;
mod interactions;
mod request;
pub mod sse;
mod types;

/// Content parts, steps and input for requests.
pub mod input {
    pub use crate::request::{
        audio_uri, document_bytes, document_uri, file, function_result, image_bytes, image_uri,
        text, user_input, user_text, video_uri, Input,
    };
}

pub use client::{
    Client, ClientBuilder, RetryPolicy, API_REVISION, DEFAULT_API_VERSION, DEFAULT_BASE_URL,
};
pub use error::{Error, Result};
pub use files::{mime_type_for_path, Files, UploadConfig, DEFAULT_CHUNK_SIZE};
pub use interactions::{EventStream, Interactions, StreamAccumulator};
pub use request::{Input, InteractionRequest, ResponseFormat, Tool};
pub use types::{AnyStep, Event, Interaction, MaybeKnown};

/// The wire types shared with the localgem server.
pub use localgem_wire as wire;
pub use localgem_wire::{
    Content, CreateInteractionRequest, Delta, ErrorBody, File, FileList, GenerationConfig, Media,
    Status, Step, StreamEvent, Usage,
};

/// The README's example is compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
