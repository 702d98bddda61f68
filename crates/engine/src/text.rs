//! Turning token bytes into streamed text: UTF-8 reassembly across token boundaries, and stop
//! sequences that are never emitted even when they span several tokens.

/// Accumulates token bytes and releases only complete UTF-8.
#[derive(Debug, Default)]
pub struct Utf8Buffer {
    pending: Vec<u8>,
}

impl Utf8Buffer {
    /// Add bytes; return the longest complete UTF-8 text available. Invalid sequences become
    /// U+FFFD; an incomplete trailing sequence is held back for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: from_utf8 said this prefix is valid.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Release whatever is held (an unfinished sequence becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// Holds back text that may be the start of a stop sequence.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// Result of feeding text to a [`StopMatcher`].
#[derive(Debug, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text safe to emit now.
    pub emit: String,
    /// A stop sequence was found: generation must end, nothing after it is emitted.
    pub stopped: bool,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Feed new text.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopOutcome {
                emit: std::mem::take(&mut self.held),
                stopped: false,
            };
        }
        if let Some(pos) = self.stops.iter().filter_map(|s| self.held.find(s)).min() {
            let emit = self.held[..pos].to_owned();
            self.held.clear();
            return StopOutcome {
                emit,
                stopped: true,
            };
        }
        // Keep the longest suffix that is a proper prefix of some stop sequence.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let emit = self.held[..keep].to_owned();
        self.held.drain(..keep);
        StopOutcome {
            emit,
            stopped: false,
        }
    }

    /// Release held text at the end of generation (no stop sequence followed it).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens() {
        let mut b = Utf8Buffer::default();
        let bytes = "ế✓".as_bytes();
        assert_eq!(b.push(&bytes[..1]), "");
        assert_eq!(b.push(&bytes[1..4]), "ế");
        assert_eq!(b.push(&bytes[4..]), "✓");
        assert_eq!(b.finish(), "");
    }

    #[test]
    fn utf8_invalid_bytes_are_replaced() {
        let mut b = Utf8Buffer::default();
        assert_eq!(b.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(b.push(b"\xe2\x9c"), "");
        assert_eq!(b.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_sequence_across_tokens_is_never_emitted() {
        let mut m = StopMatcher::new(&["END".to_string()]);
        let mut out = String::new();
        let mut stopped = false;
        for piece in ["Hello E", "N", "D and more"] {
            let o = m.push(piece);
            out.push_str(&o.emit);
            if o.stopped {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert_eq!(out, "Hello ");
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(m.push("x EN").emit, "x ");
        assert_eq!(m.push("o").emit, "ENo");
        assert_eq!(m.push("E").emit, "");
        assert_eq!(m.finish(), "E");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(&["cd".to_string(), "b".to_string()]);
        assert_eq!(
            m.push("abcd"),
            StopOutcome {
                emit: "a".into(),
                stopped: true
            }
        );
    }

    #[test]
    fn no_stops_passes_through() {
        let mut m = StopMatcher::new(&[String::new()]);
        assert_eq!(m.push("abc").emit, "abc");
    }

    #[test]
    fn multibyte_holdback() {
        let mut m = StopMatcher::new(&["✓✓".to_string()]);
        assert_eq!(m.push("é✓").emit, "é");
        assert_eq!(m.push("✓").emit, "");
    }
}
