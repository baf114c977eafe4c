//! Signed checkpoints: the C2SP `tlog-checkpoint` body in a C2SP `signed-note` with Ed25519,
//! so witnesses and monitors of the transparency-dev ecosystem can read them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::merkle::Hash;

/// Why a key, note or checkpoint is refused.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    /// A key string that is not in the signed-note key format.
    #[error("malformed key: {0}")]
    Key(&'static str),
    /// A note without a signature block or with malformed lines.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// No signature by the expected key, or a signature that does not verify.
    #[error("no valid signature by {0}")]
    Signature(String),
    /// A checkpoint body that is not origin, size and root hash.
    #[error("malformed checkpoint: {0}")]
    Checkpoint(&'static str),
}

const ALG_ED25519: u8 = 0x01;

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// An Ed25519 note signer (the log's checkpoint key). Its secret is zeroized on drop.
pub struct Signer {
    name: String,
    id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}+{:08x})", self.name, self.id)
    }
}

impl Signer {
    /// A signer from a 32-byte seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Signer, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::Key(
                "name must be non-empty, without spaces or '+'",
            ));
        }
        let key = SigningKey::from_bytes(seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Signer {
            name: name.to_string(),
            id,
            key,
        })
    }

    /// A signer for the log `origin`, from a 32-byte seed: its key name is the origin
    /// with each space and '+' (which key names may not hold) made '_'.
    pub fn for_origin(origin: &str, seed: &[u8; 32]) -> Result<Signer, NoteError> {
        let name: String = origin
            .chars()
            .map(|c| {
                if c.is_whitespace() || c == '+' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        Signer::from_seed(&name, seed)
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`.
    pub fn parse(text: &str) -> Result<Signer, NoteError> {
        let text = text.trim();
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::Key("signer keys start with PRIVATE+KEY+"))?;
        // Names never contain '+'; base64 may.
        let mut parts = rest.splitn(3, '+');
        let (name, id, b64) = (parts.next(), parts.next(), parts.next());
        let (Some(b64), Some(id), Some(name)) = (b64, id, name) else {
            return Err(NoteError::Key("expected PRIVATE+KEY+name+id+key"));
        };
        let raw = Zeroizing::new(B64.decode(b64).map_err(|_| NoteError::Key("bad base64"))?);
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(NoteError::Key("not an Ed25519 key"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&raw[1..]);
        let signer = Signer::from_seed(name, &seed)?;
        if format!("{:08x}", signer.id) != id {
            return Err(NoteError::Key("key ID does not match the key"));
        }
        Ok(signer)
    }

    /// The secret key in signed-note form (handle as a secret).
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(vec![ALG_ED25519]);
        raw.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode(&*raw)
        ))
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs a note text (which must end with a newline) and returns the signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') || text.contains("\n\n") || text.contains('\r') {
            return Err(NoteError::Malformed(
                "text must be non-empty lines ending in newline",
            ));
        }
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// An Ed25519 note verifier key: `<name>+<id>+<base64(0x01 || public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }
}

impl Verifier {
    /// Parses a verifier key string.
    pub fn parse(text: &str) -> Result<Verifier, NoteError> {
        // Names never contain '+'; base64 may.
        let mut parts = text.trim().splitn(3, '+');
        let (name, id, b64) = (parts.next(), parts.next(), parts.next());
        let (Some(b64), Some(id), Some(name)) = (b64, id, name) else {
            return Err(NoteError::Key("expected name+id+key"));
        };
        if !valid_name(name) {
            return Err(NoteError::Key("bad key name"));
        }
        let raw = B64.decode(b64).map_err(|_| NoteError::Key("bad base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(NoteError::Key("not an Ed25519 key"));
        }
        let mut public = [0u8; 32];
        public.copy_from_slice(&raw[1..]);
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError::Key("invalid Ed25519 point"))?;
        let expected = key_id(name, &public);
        if format!("{expected:08x}") != id {
            return Err(NoteError::Key("key ID does not match the key"));
        }
        Ok(Verifier {
            name: name.to_string(),
            id: expected,
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that `note` carries a valid signature by this key; returns the signed text.
    /// Signatures by other keys are ignored, as the signed-note format prescribes.
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no signature block"))?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed(
                "signature block must end with a newline",
            ));
        }
        for line in sigs.lines() {
            let rest = line.strip_prefix("\u{2014} ").ok_or(NoteError::Malformed(
                "signature lines start with an em dash",
            ))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(NoteError::Malformed("signature line without signature"))?;
            if name != self.name {
                continue;
            }
            let Ok(blob) = B64.decode(b64) else { continue };
            if blob.len() != 68
                || u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) != self.id
            {
                continue;
            }
            let Ok(sig) = ed25519_dalek::Signature::from_slice(&blob[4..]) else {
                continue;
            };
            if self.key.verify(text.as_bytes(), &sig).is_ok() {
                return Ok(text);
            }
        }
        Err(NoteError::Signature(self.to_string()))
    }
}

/// A transparency log checkpoint (C2SP tlog-checkpoint): origin, tree size, root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's unique origin line.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// Root hash of the tree of those entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text of the checkpoint.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a checkpoint's note text (extension lines are allowed and ignored).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = text.lines();
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(NoteError::Checkpoint("no origin"))?;
        let size = lines.next().ok_or(NoteError::Checkpoint("no tree size"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::Checkpoint(
                "tree size must be a decimal without leading zeros",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| NoteError::Checkpoint("tree size too large"))?;
        let root = B64
            .decode(lines.next().ok_or(NoteError::Checkpoint("no root hash"))?)
            .map_err(|_| NoteError::Checkpoint("root hash is not base64"))?;
        let root: Hash = root
            .try_into()
            .map_err(|_| NoteError::Checkpoint("root hash is not 32 bytes"))?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }

    /// Opens a signed checkpoint note with `verifier` and parses it.
    pub fn open(note: &str, verifier: &Verifier) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse(verifier.open(note)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_open_and_reject_tampering() {
        let s = Signer::from_seed("example.com/log", &[7; 32]).unwrap();
        let v = Verifier::parse(&s.verifier().to_string()).unwrap();
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 42,
            root: [9; 32],
        };
        let note = s.sign(&cp.text()).unwrap();
        assert_eq!(Checkpoint::open(&note, &v).unwrap(), cp);
        let tampered = note.replacen("42", "43", 1);
        assert!(Checkpoint::open(&tampered, &v).is_err());
        let other = Signer::from_seed("example.com/log", &[8; 32])
            .unwrap()
            .verifier();
        assert!(Checkpoint::open(&note, &other).is_err());
        let again = Signer::parse(&s.to_secret_string()).unwrap();
        assert_eq!(again.verifier(), s.verifier());
    }

    /// The signed-note example of the Go implementation (golang.org/x/mod/sumdb/note), whose
    /// format C2SP signed-note specifies: a known verifier key, text and signature.
    #[test]
    fn verifies_the_reference_note() {
        let v =
            Verifier::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
                .unwrap();
        let note = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        assert_eq!(
            v.open(note).unwrap(),
            "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
        );
        let s = Signer::parse(
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        )
        .unwrap();
        assert_eq!(s.verifier(), v);
    }

    #[test]
    fn a_signer_for_an_origin_is_named_after_it_without_spaces_or_plus() {
        let s = Signer::for_origin("hospital.example/a b+c\tct", &[5; 32]).unwrap();
        let v = s.verifier();
        assert_eq!(v.name(), "hospital.example/a_b_c_ct");
        // The name makes a verifier key that parses back, and a note it opens.
        let parsed = Verifier::parse(&v.to_string()).unwrap();
        assert_eq!(parsed, v);
        assert_eq!(parsed.open(&s.sign("x\n").unwrap()).unwrap(), "x\n");
        // The same seed under another origin is another key.
        let other = Signer::for_origin("hospital.example/ct", &[5; 32]).unwrap();
        assert_ne!(other.verifier(), v);
        // No name can be made of nothing.
        assert!(matches!(
            Signer::for_origin("", &[5; 32]),
            Err(NoteError::Key(_))
        ));
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        for text in [
            "",
            "origin\n",
            "origin\n01\nAAAA\n",
            "origin\n1\nnot base64!\n",
            "origin\nx\n",
        ] {
            assert!(Checkpoint::parse(text).is_err(), "{text:?}");
        }
    }
}
