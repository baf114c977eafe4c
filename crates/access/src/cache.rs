//! A bounded cache of verified tokens, so that a client sending the same bearer token on
//! every request is not charged a signature verification each time (ed25519 or RSA: most
//! of what a small request costs).
//!
//! - Keyed by the SHA-256 of the whole token text: a token differing in any byte (a
//!   tampered one sharing a prefix) is another key, verified in full. The token itself is
//!   never kept.
//! - An entry is good strictly before the token's `exp` (never beyond it, even where the
//!   verifier's leeway would still accept the token: past `exp`, the token is verified
//!   again, with the leeway, as if never seen).
//! - An entry remembers the generation of its issuer's key set it was verified against;
//!   when the set is replaced (fetched again: a key rotated away or withdrawn), the entry no
//!   longer counts and the token is verified again against the new set.
//! - At most [`CAPACITY`] entries: when full, expired entries go first, then everything
//!   (a miss only costs one verification).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::principal::Principal;

/// Most tokens kept.
pub const CAPACITY: usize = 4096;

/// The cache key of a token: the SHA-256 of its text.
pub(crate) type TokenHash = [u8; 32];

/// The cache key of `token`.
pub(crate) fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    principal: Principal,
    /// The token's `exp` (Unix seconds): good while the clock is before it.
    exp: u64,
    /// Which trusted issuer, and the generation of its key set, verified it.
    issuer: usize,
    generation: u64,
}

/// Verified tokens (see the module's documentation).
#[derive(Default)]
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<TokenHash, Entry>>,
}

impl TokenCache {
    /// The principal of a token verified before, if its entry is still good at `now`
    /// (Unix seconds) and `generation` says which key-set generation each issuer is at.
    pub(crate) fn get(
        &self,
        key: &TokenHash,
        now: u64,
        generation: impl Fn(usize) -> Option<u64>,
    ) -> Option<Principal> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.get(key)?;
        if now < e.exp && generation(e.issuer) == Some(e.generation) {
            return Some(e.principal.clone());
        }
        entries.remove(key);
        None
    }

    /// Keeps a token verified at `now` until its `exp`.
    pub(crate) fn put(
        &self,
        key: TokenHash,
        principal: &Principal,
        exp: u64,
        issuer: usize,
        generation: u64,
        now: u64,
    ) {
        if now >= exp {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            entries.retain(|_, e| now < e.exp);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                principal: principal.clone(),
                exp,
                issuer,
                generation,
            },
        );
    }

    /// How many tokens are kept (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smart::Scopes;

    fn principal(n: usize) -> Principal {
        Principal {
            issuer: "i".into(),
            subject: format!("user-{n}"),
            client: None,
            roles: Vec::new(),
            scopes: Scopes::default(),
            patient: None,
            name: None,
        }
    }

    /// The cache holds at most CAPACITY tokens, expired ones dropped first; an entry counts
    /// only before its exp and at its issuer's key-set generation.
    #[test]
    fn entries_are_bounded_and_good_only_before_exp_at_their_generation() {
        let c = TokenCache::default();
        let gen0 = |_| Some(0);
        for n in 0..CAPACITY {
            c.put(
                hash(&n.to_string()),
                &principal(n),
                100 + (n % 2) as u64,
                0,
                0,
                50,
            );
        }
        assert_eq!(c.len(), CAPACITY);
        // Full at 100: the entries expiring at 100 go, the others stay.
        c.put(hash("new"), &principal(0), 200, 0, 0, 100);
        assert_eq!(c.len(), CAPACITY / 2 + 1);
        assert!(c.get(&hash("1"), 100, gen0).is_some());
        assert!(c.get(&hash("0"), 99, gen0).is_none(), "dropped");
        // Never beyond exp.
        assert!(c.get(&hash("3"), 101, gen0).is_none());
        assert!(c.get(&hash("3"), 100, gen0).is_none(), "removed once stale");
        // Another generation of the key set.
        assert!(c.get(&hash("5"), 100, |_| Some(1)).is_none());
        assert!(c.get(&hash("7"), 100, |_| None).is_none());
        assert_eq!(c.get(&hash("9"), 100, gen0).unwrap().subject, "user-9");
        // Full of live entries: emptied rather than grown.
        for n in 0..CAPACITY + 10 {
            c.put(hash(&format!("x{n}")), &principal(n), 1000, 0, 0, 100);
        }
        assert!(c.len() <= CAPACITY);
        // Nothing is kept for a token already at its exp.
        c.put(hash("late"), &principal(0), 100, 0, 0, 100);
        assert!(c.get(&hash("late"), 99, gen0).is_none());
    }
}
