//! Server-sent events out of a byte stream: the `data:` payload of each event, whatever the
//! network's chunking.

/// Collects bytes and yields complete events' data.
#[derive(Debug, Default)]
pub struct SseBuffer {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a blank line (less the 3 a separator could span).
    scanned: usize,
}

/// Bytes of one event past which the engine is taken to be broken.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

impl SseBuffer {
    /// Add bytes; the data of every event they complete, in order. An `error:` field (which
    /// llama-server has used for errors after the stream began) is returned as data too.
    ///
    /// # Errors
    /// When an event grows past [`MAX_EVENT_BYTES`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let from = self.scanned.saturating_sub(3);
            let Some((end, sep)) = find_blank_line(&self.buf[from..]).map(|(e, s)| (e + from, s))
            else {
                self.scanned = self.buf.len();
                break;
            };
            self.scanned = 0;
            let event: Vec<u8> = self.buf.drain(..end + sep).collect();
            if let Some(data) = data_of(&event[..end]) {
                out.push(data);
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(format!("an event of over {MAX_EVENT_BYTES} bytes"));
        }
        Ok(out)
    }

    /// The data of an unterminated last event, when the stream ends.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        self.scanned = 0;
        data_of(&rest)
    }
}

fn find_blank_line(b: &[u8]) -> Option<(usize, usize)> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if b[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

fn data_of(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let mut data: Option<String> = None;
    for line in text.lines() {
        let value = line
            .strip_prefix("data:")
            .or_else(|| line.strip_prefix("error:"));
        if let Some(v) = value {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_owned()),
            }
        }
    }
    data.filter(|d| !d.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\n: comment\n\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut s = SseBuffer::default();
            let mut got = s.push(&stream[..cut]).unwrap();
            got.extend(s.push(&stream[cut..]).unwrap());
            assert_eq!(
                got,
                vec!["{\"a\":1}", "{\"b\":2}", "[DONE]"],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn multi_line_data_errors_and_an_unterminated_tail() {
        let mut s = SseBuffer::default();
        let got = s
            .push(b"data: one\ndata: two\n\nerror: {\"message\":\"x\"}\n\ndata: {\"tail\":")
            .unwrap();
        assert_eq!(got, vec!["one\ntwo", "{\"message\":\"x\"}"]);
        s.push(b"1}").unwrap();
        assert_eq!(s.finish().as_deref(), Some("{\"tail\":1}"));
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut s = SseBuffer::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(s.push(&big).is_err());
    }
}
