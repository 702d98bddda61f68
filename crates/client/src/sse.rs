//! A small incremental parser for server-sent events (the `text/event-stream` format).
//!
//! It follows the WHATWG event-stream rules the official SDKs follow: lines end in `\n`, `\r\n`
//! or `\r`; lines starting with `:` are comments; `data:` lines of one event are joined with
//! `\n`; a blank line dispatches the event; an event without any `data` line is dropped. Bytes
//! may be fed in chunks split anywhere, including inside a `\r\n` pair or a UTF-8 character.
//!
//! ```
//! use localgem_client::sse::SseParser;
//!
//! let mut parser = SseParser::new();
//! let mut events = parser.feed(b": keep-alive\r\nevent: step.delta\r\nda");
//! assert!(events.is_empty());
//! events.extend(parser.feed(b"ta: {\"index\":0}\r\n\r\n"));
//! assert_eq!(events[0].event.as_deref(), Some("step.delta"));
//! assert_eq!(events[0].data, "{\"index\":0}");
//! ```

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the event had one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` field seen on the stream so far.
    pub id: Option<String>,
    /// The `retry:` field (milliseconds), if the event had one.
    pub retry: Option<u64>,
}

/// Incremental event-stream parser: feed it bytes, get whole events back.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    first_line_done: bool,
    event: Option<String>,
    data: String,
    last_id: Option<String>,
    retry: Option<u64>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next bytes of the stream; returns the events they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    // The second half of a `\r\n` that ended the previous line.
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.end_line(&mut out);
                    self.after_cr = true;
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    /// The stream ended: returns the last event if it had data but no closing blank line.
    ///
    /// (A strict WHATWG parser drops it; the SDKs are lenient here, and so is this parser.)
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out);
        }
        self.dispatch(&mut out);
        out.pop()
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let bytes = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if !self.first_line_done {
            self.first_line_done = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned();
            }
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let retry = self.retry.take();
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` after the last data line
        out.push(SseEvent {
            event,
            data,
            id: self.last_id.clone(),
            retry,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = p.feed(input);
        out.extend(p.finish());
        out
    }

    fn parse_bytewise(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for b in input {
            out.extend(p.feed(std::slice::from_ref(b)));
        }
        out.extend(p.finish());
        out
    }

    const LIVE: &str = "event: interaction.created\n\
data: {\"interaction\":{\"id\":\"v1_a\",\"status\":\"in_progress\"},\"event_type\":\"interaction.created\"}\n\
\n\
event: step.delta\n\
data: {\"index\":1,\"delta\":{\"text\":\"Hello\",\"type\":\"text\"},\"event_type\":\"step.delta\"}\n\
\n\
event: done\n\
data: [DONE]\n\
\n";

    #[test]
    fn live_framing() {
        let ev = parse_all(LIVE.as_bytes());
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].event.as_deref(), Some("interaction.created"));
        assert!(ev[1].data.contains("\"Hello\""));
        assert_eq!(ev[2].data, "[DONE]");
    }

    #[test]
    fn crlf_cr_and_lf_give_the_same_events() {
        let lf = parse_all(LIVE.as_bytes());
        let crlf = parse_all(LIVE.replace('\n', "\r\n").as_bytes());
        let cr = parse_all(LIVE.replace('\n', "\r").as_bytes());
        assert_eq!(lf, crlf);
        assert_eq!(lf, cr);
    }

    #[test]
    fn byte_at_a_time_matches_whole_buffer() {
        for text in [
            LIVE.to_owned(),
            LIVE.replace('\n', "\r\n"),
            LIVE.replace('\n', "\r"),
        ] {
            assert_eq!(parse_bytewise(text.as_bytes()), parse_all(text.as_bytes()));
        }
    }

    #[test]
    fn split_inside_utf8_character() {
        let text = "data: {\"text\":\"Xin chào, สวัสดี\"}\r\n\r\n".as_bytes();
        let ev = parse_bytewise(text);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "{\"text\":\"Xin chào, สวัสดี\"}");
    }

    #[test]
    fn comments_are_ignored() {
        let ev = parse_all(
            b": keep-alive\r\n\r\n:another\r\ndata: x\r\n: in the middle\r\ndata: y\r\n\r\n",
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "x\ny");
        assert_eq!(ev[0].event, None);
    }

    #[test]
    fn multi_line_data_and_fields() {
        let ev = parse_all(
            b"id: e5\nevent: step.delta\nretry: 3000\ndata:first\ndata: second\ndata\n\n",
        );
        assert_eq!(
            ev,
            vec![SseEvent {
                event: Some("step.delta".into()),
                data: "first\nsecond\n".into(),
                id: Some("e5".into()),
                retry: Some(3000),
            }]
        );
    }

    #[test]
    fn events_without_data_are_dropped_and_id_persists() {
        let ev = parse_all(b"event: ping\n\nid: 7\n\ndata: a\n\nevent: x\ndata: b\n\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[0].event, None,
            "the event type of a dropped event does not leak"
        );
        assert_eq!(ev[0].id.as_deref(), Some("7"));
        assert_eq!(ev[1].id.as_deref(), Some("7"));
        assert_eq!(ev[1].event.as_deref(), Some("x"));
    }

    #[test]
    fn unterminated_last_event_is_kept() {
        let ev = parse_all(b"data: a\n\ndata: last");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].data, "last");
    }

    #[test]
    fn leading_bom_is_skipped() {
        let ev = parse_all("\u{feff}data: a\n\n".as_bytes());
        assert_eq!(ev[0].data, "a");
    }

    #[test]
    fn cr_at_chunk_end_then_lf() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: a\r").is_empty());
        let ev = p.feed(b"\n\r");
        assert_eq!(ev.len(), 1);
        assert!(
            p.feed(b"\n").is_empty(),
            "the LF after CR is not a second blank line"
        );
        assert!(p.finish().is_none());
    }
}
