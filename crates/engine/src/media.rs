//! Media (images, audio) in a prompt, as the scheduler and the KV manager see them.
//!
//! A prompt with media is a token list in which each image or audio clip occupies the
//! positions its embeddings fill (the projector's wrapper tokens included), written as
//! *synthetic* token ids: negative numbers derived from the media's digest and the position
//! within it. Everything that matches prompts by token (prefix reuse across turns, states
//! kept on disk) then works unchanged: a later turn of the same conversation carries the
//! same ids for the same media, so its KV is reused and it is encoded only once. Two
//! different pieces differ at their first position (but for a 2^-30 chance), and a
//! synthetic id never equals a real token, which are non-negative.
//!
//! Synthetic positions are never put into a token batch: a prefill stops at a piece's
//! first position, and it is evaluated through the projector instead ([`MediaSpan`]).

use localgem_core::{Attachment, MediaTokens};
use sha2::{Digest, Sha256};

/// Where one piece of media sits in a prompt.
#[derive(Debug, Clone)]
pub struct MediaSpan {
    /// First position.
    pub start: usize,
    /// Positions it fills.
    pub len: usize,
    /// The media.
    pub media: Attachment,
}

impl MediaSpan {
    /// One past its last position.
    pub fn end(&self) -> usize {
        self.start + self.len
    }
}

/// The synthetic ids of media that fills `n` positions.
pub fn synthetic_ids(digest: &[u8; 32], n: usize) -> Vec<i32> {
    (0..n as u32)
        .map(|k| {
            let mut h = Sha256::new();
            h.update(digest);
            h.update(k.to_le_bytes());
            let d = h.finalize();
            let v = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) & 0x3fff_ffff;
            -1 - v as i32
        })
        .collect()
}

/// A reused prefix must not end inside an image or a clip (half of its KV is no use): cut
/// it back to its start.
pub fn align_reuse(spans: &[MediaSpan], reused: usize) -> usize {
    spans
        .iter()
        .find(|s| s.start < reused && reused < s.end())
        .map_or(reused, |s| s.start)
}

/// The index of the media that starts at `pos`, if one does.
pub fn starting_at(spans: &[MediaSpan], pos: usize) -> Option<usize> {
    spans.iter().position(|s| s.start == pos)
}

/// How many of `n` planned prompt tokens from `fed` on can go into a token batch: all of
/// them up to the next image or clip.
pub fn tokens_before_media(spans: &[MediaSpan], fed: usize, n: usize) -> usize {
    spans
        .iter()
        .filter(|s| s.start >= fed)
        .map(|s| s.start - fed)
        .min()
        .map_or(n, |gap| gap.min(n))
}

/// Every piece of media of the messages, in prompt order.
pub fn media_of(messages: &[localgem_core::ChatMessage]) -> Vec<Attachment> {
    messages.iter().flat_map(|m| m.media.clone()).collect()
}

/// The positions the spans fill, by the modality each was sent as.
pub fn tokens_by_modality(spans: &[MediaSpan]) -> MediaTokens {
    let mut t = MediaTokens::default();
    for s in spans {
        t.add(s.media.modality, s.len as u64);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use localgem_core::{Audio, Image};

    fn image(seed: u8) -> Image {
        Image::new(1, 1, vec![seed, 0, 0])
    }

    fn span(start: usize, len: usize) -> MediaSpan {
        MediaSpan {
            start,
            len,
            media: Attachment::image(image(0)),
        }
    }

    #[test]
    fn positions_count_as_the_modality_they_were_sent_as() {
        let clip = Attachment::audio(Audio::new(16_000, vec![0.0; 160]));
        let spans = [
            span(0, 10),
            MediaSpan {
                start: 10,
                len: 50,
                media: clip.clone(),
            },
            MediaSpan {
                start: 60,
                len: 7,
                media: clip.of_video(),
            },
            MediaSpan {
                start: 67,
                len: 3,
                media: Attachment::image(image(1)).of_video(),
            },
        ];
        let t = tokens_by_modality(&spans);
        assert_eq!((t.image, t.audio, t.video, t.total()), (10, 50, 10, 70));
    }

    #[test]
    fn synthetic_ids_are_negative_stable_and_distinct() {
        let (a, b) = (image(1), image(2));
        let ia = synthetic_ids(&a.digest, 64);
        assert!(ia.iter().all(|&t| t < 0));
        assert_eq!(ia, synthetic_ids(&a.digest, 64));
        assert_eq!(ia[..16], synthetic_ids(&a.digest, 16)[..]);
        let ib = synthetic_ids(&b.digest, 64);
        assert_ne!(ia[0], ib[0]);
        let distinct: std::collections::HashSet<_> = ia.iter().collect();
        assert_eq!(distinct.len(), 64);
    }

    #[test]
    fn reuse_never_ends_inside_an_image() {
        let spans = [span(10, 20), span(40, 5)];
        assert_eq!(align_reuse(&spans, 0), 0);
        assert_eq!(align_reuse(&spans, 10), 10);
        assert_eq!(align_reuse(&spans, 11), 10);
        assert_eq!(align_reuse(&spans, 29), 10);
        assert_eq!(align_reuse(&spans, 30), 30);
        assert_eq!(align_reuse(&spans, 44), 40);
        assert_eq!(align_reuse(&spans, 45), 45);
    }

    #[test]
    fn prefill_stops_at_the_next_image() {
        let spans = [span(10, 20), span(40, 5)];
        assert_eq!(tokens_before_media(&spans, 0, 64), 10);
        assert_eq!(tokens_before_media(&spans, 4, 3), 3);
        assert_eq!(tokens_before_media(&spans, 10, 64), 0);
        assert_eq!(tokens_before_media(&spans, 30, 64), 10);
        assert_eq!(tokens_before_media(&spans, 45, 64), 64);
        assert_eq!(starting_at(&spans, 40), Some(1));
        assert_eq!(starting_at(&spans, 10), Some(0));
        assert_eq!(starting_at(&spans, 41), None);
    }
}
