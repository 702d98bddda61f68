//! The error type of every fallible call.

use std::time::Duration;

use serde_json::Value;

/// Shorthand for `Result<T, localgem_client::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to the API.
///
/// [`Error::Api`] is an answer from the server with a non-2xx HTTP status; the other variants
/// mean no usable answer arrived. Like the official SDKs, callers should branch on the HTTP
/// status ([`Error::status`]) rather than on the code string, which differs between the
/// Interactions API (`"invalid_request"`) and the Files API (`404`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a non-2xx status.
    #[error("{status} {message}")]
    Api {
        /// HTTP status code, e.g. `400`.
        status: u16,
        /// The envelope's `error.code`: a lower-case string on the Interactions API
        /// (`invalid_request`, `not_found`, …), the numeric status as text on the Files API.
        code: Option<String>,
        /// The envelope's `error.status` (Google's canonical name, e.g. `NOT_FOUND`), if sent.
        status_name: Option<String>,
        /// The envelope's `error.message`, or the raw body when it was not the JSON envelope.
        message: String,
        /// How long the server asked the client to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The request could not be sent or the answer could not be read (connection refused,
    /// reset, TLS failure, …).
    #[error("HTTP transport error: {0}")]
    Http(#[from] reqwest::Error),
    /// No answer within the configured timeout.
    #[error("the request timed out")]
    Timeout,
    /// The answer arrived but is not the JSON the API documents.
    #[error("cannot decode the response: {message}")]
    Decode {
        /// What did not parse.
        message: String,
        /// The start of the offending text.
        body: String,
    },
    /// Reading a file to upload failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The client or the request is not usable as configured (no API key, unknown MIME type,
    /// invalid header value, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server broke the resumable upload protocol (no upload URL, chunk not acknowledged,
    /// last chunk not `final`).
    #[error("upload protocol error: {0}")]
    Upload(String),
}

impl Error {
    /// The HTTP status of an [`Error::Api`], `None` for the other variants.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server answered 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The server's message of an [`Error::Api`].
    pub fn api_message(&self) -> Option<&str> {
        match self {
            Error::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Build an [`Error::Api`] from a status and a response body.
    ///
    /// Understands both envelopes the API uses — `{"error":{"message","code":"invalid_request"}}`
    /// on the Interactions API and `{"error":{"code":404,"message","status":"NOT_FOUND"}}` on the
    /// Files API — and an error sent SSE-framed (`data: {"error":…}`). Any other body becomes
    /// the message as is.
    ///
    /// ```
    /// let e = localgem_client::Error::from_response_body(
    ///     404,
    ///     br#"{"error":{"message":"interaction not found","code":"not_found"}}"#,
    /// );
    /// assert_eq!(e.status(), Some(404));
    /// assert_eq!(e.to_string(), "404 interaction not found");
    /// ```
    pub fn from_response_body(status: u16, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(body);
        let envelope = serde_json::from_str::<Value>(text.trim())
            .ok()
            .and_then(|v| envelope_fields(&v))
            .or_else(|| {
                // Some errors found during generation arrive SSE-framed.
                text.lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                    .find_map(|v| envelope_fields(&v))
            });
        let (code, status_name, message) = match envelope {
            Some(fields) => fields,
            None => {
                let raw = text.trim();
                let message = if raw.is_empty() {
                    reqwest::StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("error")
                        .to_owned()
                } else {
                    truncate(raw, 2000)
                };
                (None, None, message)
            }
        };
        Error::Api {
            status,
            code,
            status_name,
            message,
            retry_after: None,
        }
    }

    pub(crate) fn decode(err: impl std::fmt::Display, body: &[u8]) -> Error {
        Error::Decode {
            message: err.to_string(),
            body: truncate(&String::from_utf8_lossy(body), 500),
        }
    }
}

type EnvelopeFields = (Option<String>, Option<String>, String);

fn envelope_fields(v: &Value) -> Option<EnvelopeFields> {
    let e = v.get("error")?;
    if let Some(s) = e.as_str() {
        return Some((None, None, s.to_owned()));
    }
    let e = e.as_object()?;
    let code = match e.get("code") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let status_name = e.get("status").and_then(Value::as_str).map(str::to_owned);
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| Value::Object(e.clone()).to_string());
    Some((code, status_name, message))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactions_envelope_with_string_code() {
        let e = Error::from_response_body(
            400,
            br#"{"error": {"message": "Unknown parameter 'tool_choice'.", "code": "invalid_request"}}"#,
        );
        match &e {
            Error::Api {
                status,
                code,
                status_name,
                message,
                ..
            } => {
                assert_eq!(*status, 400);
                assert_eq!(code.as_deref(), Some("invalid_request"));
                assert_eq!(status_name.as_deref(), None);
                assert_eq!(message, "Unknown parameter 'tool_choice'.");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.to_string(), "400 Unknown parameter 'tool_choice'.");
    }

    #[test]
    fn google_envelope_with_integer_code_and_status() {
        let e = Error::from_response_body(
            404,
            br#"{"error":{"code":404,"message":"File files/abc not found.","status":"NOT_FOUND"}}"#,
        );
        let Error::Api {
            code, status_name, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(code.as_deref(), Some("404"));
        assert_eq!(status_name.as_deref(), Some("NOT_FOUND"));
        assert!(e.is_not_found());
        assert_eq!(e.api_message(), Some("File files/abc not found."));
    }

    #[test]
    fn hybrid_envelope_keeps_both_codes() {
        let e = Error::from_response_body(
            400,
            br#"{"error":{"code":"invalid_request","message":"bad","status":"INVALID_ARGUMENT"}}"#,
        );
        let Error::Api {
            code, status_name, ..
        } = &e
        else {
            panic!()
        };
        assert_eq!(code.as_deref(), Some("invalid_request"));
        assert_eq!(status_name.as_deref(), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn sse_framed_error_body() {
        let body = b"event: error\r\ndata: {\"error\":{\"message\":\"Corrupted thought signature.\",\"code\":\"invalid_request\"},\"event_type\":\"error\"}\r\n\r\n";
        let e = Error::from_response_body(400, body);
        assert_eq!(e.api_message(), Some("Corrupted thought signature."));
    }

    #[test]
    fn plain_text_and_empty_bodies() {
        let e = Error::from_response_body(502, b"Bad gateway from proxy\n");
        assert_eq!(e.api_message(), Some("Bad gateway from proxy"));
        let e = Error::from_response_body(503, b"");
        assert_eq!(e.to_string(), "503 Service Unavailable");
    }
}
