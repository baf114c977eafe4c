//! Keyed pseudonyms: everything derived from identifying values goes through HMAC-SHA-256
//! under the site's secret, so nobody without the key can recompute a pseudonym from a
//! known medical record number.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The smallest secret accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// The site's de-identification secret. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct Key(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<secret>)")
    }
}

/// Why a key was refused.
#[derive(Debug, thiserror::Error)]
#[error("the key has {0} bytes; at least {MIN_KEY_LEN} secret bytes are needed")]
pub struct KeyTooShort(pub usize);

impl Key {
    /// Wraps secret bytes (surrounding whitespace removed), refusing fewer than
    /// [`MIN_KEY_LEN`] of them.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Result<Key, KeyTooShort> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(KeyTooShort(trimmed.len()));
        }
        Ok(Key(Zeroizing::new(trimmed.to_vec())))
    }

    /// HMAC-SHA-256 of `domain`, a NUL, and `value`. The domain separates uses (UIDs, patient
    /// IDs, date offsets), so one pseudonym never reveals another.
    pub fn mac(&self, domain: &str, value: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key");
        m.update(domain.as_bytes());
        m.update(&[0]);
        m.update(value);
        m.finalize().into_bytes().into()
    }

    /// A pseudonymous UID for `uid`: `2.25.` followed by the decimal form of a version 8
    /// (RFC 9562 custom) UUID built from the keyed hash, or, with a site `root`, the root
    /// followed by as many keyed decimal digits as fit in 64 characters.
    pub fn uid(&self, uid: &str, root: Option<&str>) -> String {
        let h = self.mac("uid", uid.as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0F) | 0x80; // version 8
        b[8] = (b[8] & 0x3F) | 0x80; // RFC 9562 variant
        let n = u128::from_be_bytes(b);
        match root {
            None => format!("2.25.{n}"),
            Some(root) => {
                let room = 64usize.saturating_sub(root.len() + 1).min(39);
                let digits = n.to_string();
                let mut tail = digits[digits.len() - room.min(digits.len())..].to_string();
                // A UID component may not start with 0.
                while tail.len() > 1 && tail.starts_with('0') {
                    tail.remove(0);
                }
                format!("{root}.{tail}")
            }
        }
    }

    /// An uppercase base-32 pseudonym of `len` characters for `value` in `domain`.
    pub fn token(&self, domain: &str, value: &[u8], len: usize) -> String {
        const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let h = self.mac(domain, value);
        let mut bits: u64 = 0;
        let mut nbits = 0;
        let mut out = String::with_capacity(len);
        for &byte in h.iter() {
            bits = (bits << 8) | byte as u64;
            nbits += 8;
            while nbits >= 5 && out.len() < len {
                nbits -= 5;
                out.push(ALPHABET[((bits >> nbits) & 31) as usize] as char);
            }
        }
        out
    }

    /// The per-patient date offset in days: between 1 and 3,652 days into the past, derived
    /// from the patient's identity, so intervals within one patient are kept and the offset
    /// cannot be guessed without the key.
    pub fn date_offset_days(&self, patient: &[u8]) -> i64 {
        let h = self.mac("date-shift", patient);
        let v = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        -(1 + (v % 3652) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::new(Zeroizing::new(vec![b; 32])).unwrap()
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Key::new(Zeroizing::new(b"short\n".to_vec())).is_err());
    }

    #[test]
    fn uids_are_valid_deterministic_and_keyed() {
        let a = key(1).uid("1.2.3.4", None);
        assert_eq!(a, key(1).uid("1.2.3.4", None));
        assert_ne!(a, key(2).uid("1.2.3.4", None));
        assert!(a.starts_with("2.25.") && a.len() <= 64);
        assert!(a[5..].bytes().all(|c| c.is_ascii_digit()) && !a[5..].starts_with('0'));
        let r = key(1).uid("1.2.3.4", Some("1.2.826.0.1.3680043.10.99"));
        assert!(
            r.starts_with("1.2.826.0.1.3680043.10.99.") && r.len() <= 64,
            "{r}"
        );
    }

    #[test]
    fn offsets_stay_in_range() {
        for i in 0..200u32 {
            let d = key(3).date_offset_days(&i.to_le_bytes());
            assert!((-3652..=-1).contains(&d));
        }
    }

    #[test]
    fn tokens_have_the_asked_length() {
        let t = key(4).token("patient-id", b"12345", 12);
        assert_eq!(t.len(), 12);
        assert!(t
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
    }
}
