//! Thought signatures: an opaque token of ours that carries a thought's text, tagged with
//! HMAC-SHA256 under the server's key, so a thought that comes back in stateless history
//! restores the model's reasoning. A signature that is not ours (another server's, Google's,
//! or the documented bypass strings) is accepted and ignored: it restores nothing.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Base64 as clients send it: the standard or the URL-safe alphabet, padded or not (the
/// Python SDK writes bytes URL-safe; JSON from elsewhere uses the standard alphabet).
///
/// # Errors
/// When the text is not base64 in either alphabet.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let text = text.trim();
    if text.contains(['-', '_']) {
        URL.decode(text)
    } else {
        STD.decode(text)
    }
}

/// Marks a signature of this format.
const MAGIC: &[u8; 4] = b"LGT1";
/// Bytes of the HMAC tag kept.
const TAG: usize = 16;

/// Signs and verifies thought signatures with one key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer with this secret key.
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Signer { key: key.into() }
    }

    /// A signer with a fresh random key (signatures do not outlive the process).
    pub fn random() -> Self {
        Signer::new(rand::random::<[u8; 32]>().to_vec())
    }

    fn mac(&self, body: &[u8]) -> [u8; TAG] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&full[..TAG]);
        tag
    }

    /// The signature of a thought.
    pub fn sign(&self, thought: &str) -> String {
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(thought.as_bytes());
        let tag = self.mac(&body);
        body.extend_from_slice(&tag);
        STANDARD.encode(body)
    }

    /// The thought a signature carries, when it is one of ours and intact.
    pub fn verify(&self, signature: &str) -> Option<String> {
        let raw = decode_base64(signature).ok()?;
        if raw.len() < MAGIC.len() + TAG || !raw.starts_with(MAGIC) {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - TAG);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(body);
        mac.verify_truncated_left(tag).ok()?;
        String::from_utf8(body[MAGIC.len()..].to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let s = Signer::new(b"k1".to_vec());
        let sig = s.sign("Two dogs have 8 paws.");
        assert_eq!(s.verify(&sig).as_deref(), Some("Two dogs have 8 paws."));
        assert_eq!(s.verify(&s.sign("")).as_deref(), Some(""));
        // another key, garbling, foreign and bypass signatures restore nothing
        assert_eq!(Signer::new(b"k2".to_vec()).verify(&sig), None);
        let mut raw = STANDARD.decode(&sig).unwrap();
        raw[6] ^= 1;
        assert_eq!(s.verify(&STANDARD.encode(raw)), None);
        for foreign in [
            "skip_thought_signature_validator",
            "context_engineering_is_the_way_to_go",
            "EqcFCqQFARFNMg/QRx9+QFFSLwl9sdoW",
            "",
            "%%%",
        ] {
            assert_eq!(s.verify(foreign), None, "{foreign}");
        }
    }
}
