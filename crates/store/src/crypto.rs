//! The store's cryptography: 256-bit keys that zeroize themselves, AES-256-GCM sealing with
//! associated data (the identity of what is sealed, so a sealed value moved to another row
//! or object does not open), key wrapping, and keyed blind indexes (HMAC-SHA-256) that let
//! the index match an identifier without holding it.
//!
//! AES-256-GCM is ring's (the stitched AES-NI/VAES and carry-less multiply code, several
//! times faster on large objects than a block-at-a-time GHASH); the sealed format is the
//! standard one (`nonce || ciphertext || tag`), so what was sealed before still opens.
//! ring does not wipe its expanded key schedule, which lives on the stack for one call;
//! the 32 key bytes themselves stay in a [`Key`], wiped when dropped.

use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::StoreError;

/// Bytes of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext: a random nonce before it, the tag after.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of a wrapped key.
pub const WRAPPED_LEN: usize = 32 + SEAL_OVERHEAD;

/// A 256-bit secret key, wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A new key from the operating system's random source.
    pub fn random() -> Result<Key, StoreError> {
        let mut k = [0u8; 32];
        getrandom::getrandom(&mut k).map_err(|e| StoreError::Random(e.to_string()))?;
        Ok(Key(k))
    }

    /// A key from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Key, StoreError> {
        let k: [u8; 32] = bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt("a key is not 32 bytes".into()))?;
        Ok(Key(k))
    }

    /// A key written as 64 hexadecimal digits (surrounding whitespace ignored), as radveil's
    /// key files hold them.
    pub fn from_hex(text: &[u8]) -> Result<Key, StoreError> {
        let text = text.trim_ascii();
        if text.len() != 64 {
            return Err(StoreError::KeyText);
        }
        let mut raw = [0u8; 32];
        for (i, pair) in text.chunks(2).enumerate() {
            let digit = std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok());
            match digit {
                Some(b) => raw[i] = b,
                None => {
                    raw.zeroize();
                    return Err(StoreError::KeyText);
                }
            }
        }
        Ok(Key(raw))
    }

    /// The key as 64 lower-case hexadecimal digits (for a key file; never to log).
    pub fn to_hex(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(Handle::hex_of(&self.0))
    }

    /// The raw bytes (to seal under another key; never to log).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The AEAD key of this key (expanded for one call, not kept).
    fn aead(&self) -> Result<LessSafeKey, StoreError> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| StoreError::Crypto)
    }

    /// Seals `plain` under this key: `nonce || ciphertext || tag`. `aad` binds the sealed
    /// value to what it belongs to; opening with other associated data fails.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.seal_after(b"", plain, aad)
    }

    /// `prefix` followed by what [`Key::seal`] makes of `plain`, encrypted in place in the
    /// one buffer returned (a large object is copied once, not three times).
    pub fn seal_after(
        &self,
        prefix: &[u8],
        plain: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| StoreError::Random(e.to_string()))?;
        let body = prefix.len().saturating_add(NONCE_LEN);
        let mut out = Vec::with_capacity(
            body.saturating_add(plain.len())
                .saturating_add(SEAL_OVERHEAD - NONCE_LEN),
        );
        out.extend_from_slice(prefix);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .aead()?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[body..],
            )
            .map_err(|_| StoreError::Crypto)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens what [`Key::seal`] made with the same associated data; `None` when the key,
    /// the associated data or any byte differs (tampering, a wrong key, a shredded key).
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let mut buf = sealed.to_vec();
        self.open_in_place(&mut buf, 0, aad).then_some(buf)
    }

    /// Opens in place what [`Key::seal_after`] made after a prefix of `skip` bytes (read
    /// whole into `buf`): on success `buf` holds the plaintext alone (no second buffer for a
    /// large object) and `true` is returned; `false` when the key, the associated data or any
    /// byte differs, and `buf` is then emptied (nothing unchecked is left to read).
    pub fn open_in_place(&self, buf: &mut Vec<u8>, skip: usize, aad: &[u8]) -> bool {
        let opened = (|| {
            let body = skip.checked_add(NONCE_LEN)?;
            if buf.len() < body.checked_add(TAG_LEN)? {
                return None;
            }
            let nonce = Nonce::try_assume_unique_for_key(&buf[skip..body]).ok()?;
            let key = self.aead().ok()?;
            // Decrypted to the front of the buffer in the same pass (no second move of a
            // large object to drop the prefix and nonce).
            let n = key
                .open_within(nonce, Aad::from(aad), &mut buf[..], body..)
                .ok()?
                .len();
            Some(n)
        })();
        match opened {
            Some(n) => {
                buf.truncate(n);
                true
            }
            None => {
                buf.clear();
                false
            }
        }
    }

    /// Wraps (seals) another key under this one.
    pub fn wrap(&self, key: &Key, aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.seal(&key.0, aad)
    }

    /// Unwraps a key sealed by [`Key::wrap`] with the same associated data.
    pub fn unwrap_key(&self, wrapped: &[u8], aad: &[u8]) -> Option<Key> {
        let mut plain = self.open(wrapped, aad)?;
        let key = Key::from_slice(&plain).ok();
        plain.zeroize();
        key
    }

    /// A keyed blind index of `parts`: HMAC-SHA-256 over each part with its length, under a
    /// domain label, so that equal identifiers match without the index holding them, and
    /// no two different part lists give the same input.
    pub fn blind(&self, domain: &str, parts: &[&[u8]]) -> Handle {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&(domain.len() as u64).to_be_bytes());
        mac.update(domain.as_bytes());
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        Handle(mac.finalize().into_bytes().into())
    }
}

/// The opaque name of a patient, study, series or instance in the store: a keyed blind
/// index of its identifier. Without the index key it tells nothing about the identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub [u8; 32]);

impl Handle {
    /// Lower-case hexadecimal, as used in object names.
    pub fn hex(&self) -> String {
        Handle::hex_of(&self.0)
    }

    /// Lower-case hexadecimal of any bytes.
    pub fn hex_of(bytes: &[u8]) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(bytes.len().saturating_mul(2));
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// A handle from the 32 bytes kept in the index.
    pub fn from_slice(bytes: &[u8]) -> Result<Handle, StoreError> {
        Ok(Handle(bytes.try_into().map_err(|_| {
            StoreError::Corrupt("a handle is not 32 bytes".into())
        })?))
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix is enough to tell handles apart in logs.
        write!(f, "Handle({}..)", &self.hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sealing after a prefix in one buffer makes what sealing and prefixing make: it opens
    /// after the prefix, only with its key and associated data, and no byte can change.
    #[test]
    fn sealed_after_a_prefix_opens_as_a_seal_does() {
        let k = Key::random().unwrap();
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let s = k.seal_after(b"MAGIC", &plain, b"instance 1").unwrap();
        assert_eq!(s.len(), 5 + plain.len() + SEAL_OVERHEAD);
        let body = s.strip_prefix(b"MAGIC").unwrap();
        assert_eq!(k.open(body, b"instance 1").unwrap(), plain);
        assert!(k.open(body, b"instance 2").is_none());
        assert!(Key::random().unwrap().open(body, b"instance 1").is_none());
        for i in [0, NONCE_LEN, NONCE_LEN + 500, body.len() - 1] {
            let mut t = body.to_vec();
            t[i] ^= 1;
            assert!(k.open(&t, b"instance 1").is_none(), "byte {i}");
        }
        assert_eq!(
            k.open(&k.seal_after(b"", b"", b"a").unwrap(), b"a")
                .unwrap(),
            b""
        );
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_associated_data() {
        let k = Key::random().unwrap();
        let s = k.seal(b"pixels", b"instance 1").unwrap();
        assert_eq!(s.len(), 6 + SEAL_OVERHEAD);
        assert_eq!(k.open(&s, b"instance 1").unwrap(), b"pixels");
        assert!(
            k.open(&s, b"instance 2").is_none(),
            "moved to another object"
        );
        assert!(Key::random().unwrap().open(&s, b"instance 1").is_none());
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert!(k.open(&t, b"instance 1").is_none(), "bit flipped at {i}");
        }
        assert!(k.open(&s[..SEAL_OVERHEAD - 1], b"instance 1").is_none());
    }

    /// The sealed format is standard AES-256-GCM (`nonce || ciphertext || tag`): objects,
    /// keys and attributes sealed before (with another AES-GCM implementation) still open.
    /// The vectors are the GCM specification's test cases 13 and 14 (McGrew and Viega).
    #[test]
    fn standard_aes_256_gcm_vectors_open() {
        let k = Key::from_slice(&[0; 32]).unwrap();
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let empty = [vec![0; 12], hex("530f8afbc74536b9a963b4f1c4cb738b")].concat();
        assert_eq!(k.open(&empty, b"").unwrap(), b"");
        let zeros = [
            vec![0; 12],
            hex("cea7403d4d606b6e074ec5d3baf39d18"),
            hex("d0d1c8a799996bf0265b98b5d48ab919"),
        ]
        .concat();
        assert_eq!(k.open(&zeros, b"").unwrap(), vec![0; 16]);
        let mut after = [b"RVS1".to_vec(), zeros.clone()].concat();
        assert!(k.open_in_place(&mut after, 4, b""));
        assert_eq!(after, vec![0; 16]);
        let mut bad = [b"RVS1".to_vec(), zeros].concat();
        bad[20] ^= 1;
        assert!(!k.open_in_place(&mut bad, 4, b""));
        assert!(bad.is_empty(), "nothing unchecked is left");
        let mut short = vec![0; 4 + SEAL_OVERHEAD - 1];
        assert!(!k.open_in_place(&mut short, 4, b""));
        assert!(!k.open_in_place(&mut vec![1, 2], usize::MAX, b""));
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let k = Key::random().unwrap();
        assert_ne!(k.seal(b"x", b"").unwrap(), k.seal(b"x", b"").unwrap());
    }

    #[test]
    fn wrapped_keys_unwrap_to_the_same_key() {
        let kek = Key::random().unwrap();
        let dk = Key::random().unwrap();
        let w = kek.wrap(&dk, b"a").unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(kek.unwrap_key(&w, b"a").unwrap().expose(), dk.expose());
        assert!(kek.unwrap_key(&w, b"b").is_none());
    }

    #[test]
    fn blind_indexes_are_keyed_and_unambiguous() {
        let k = Key::random().unwrap();
        let a = k.blind("patient", &[b"ISSUER", b"ID"]);
        assert_eq!(a, k.blind("patient", &[b"ISSUER", b"ID"]));
        assert_ne!(
            a,
            k.blind("patient", &[b"ISSUERI", b"D"]),
            "part boundaries count"
        );
        assert_ne!(a, k.blind("study", &[b"ISSUER", b"ID"]), "domains differ");
        assert_ne!(
            a,
            Key::random().unwrap().blind("patient", &[b"ISSUER", b"ID"])
        );
    }

    #[test]
    fn keys_read_from_hex_and_only_from_64_hex_digits() {
        let k = Key::random().unwrap();
        let text = format!("  {}\n", k.to_hex().as_str());
        assert_eq!(Key::from_hex(text.as_bytes()).unwrap().expose(), k.expose());
        for bad in [
            "",
            "00",
            &"0".repeat(63),
            &"0".repeat(65),
            &"g".repeat(64),
            &"é".repeat(32),
        ] {
            assert!(Key::from_hex(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_do_not_print() {
        let k = Key::from_slice(&[7; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "Key(..)");
    }
}
