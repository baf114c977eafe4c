//! What an export de-identifies with: the site's profile (TOML, as `radveil deid --profile`
//! reads it) with the Annex E options added to it, the de-identification key, and the
//! profile's digest recorded in the lineage. One place for `radveil export` and the
//! privacy officer's export from the portal, so both record the same digest for the same
//! profile.

use radveil_deid::{Config, Deidentifier, Key, Profile, ProfileError};
use sha2::{Digest, Sha256};

/// Why a profile cannot be used. Names the profile's problem, never a patient.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The profile is not UTF-8 text.
    #[error("the profile is not UTF-8 text")]
    NotText,
    /// The profile, or an option added to it, is refused.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// A de-identifier made from a profile, with what the lineage records of it.
pub struct Recipe {
    /// The configured de-identifier.
    pub deidentifier: Deidentifier,
    /// SHA-256 (hex) of the profile's bytes and the options added to it.
    pub digest: String,
    /// The profile asks for Clean Recognizable Visual Features (heads defaced as volumes).
    pub clean_visual_features: bool,
}

impl std::fmt::Debug for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipe")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The de-identifier of `profile` (its file's bytes) with `options` added, keyed by `key`.
pub fn recipe(profile: &[u8], options: &[String], key: Key) -> Result<Recipe, RecipeError> {
    let text = std::str::from_utf8(profile).map_err(|_| RecipeError::NotText)?;
    let mut p = Profile::from_toml(text)?;
    for name in options {
        p.add_option(name)?;
    }
    let mut h = Sha256::new();
    h.update(profile);
    for o in options {
        h.update(b"\n--option ");
        h.update(o.as_bytes());
    }
    let digest = radveil_store::Handle::hex_of(&h.finalize());
    let clean_visual_features = p.clean_visual_features;
    let deidentifier = Deidentifier::new(
        key,
        Config {
            profile: p,
            ..Config::default()
        },
    )?;
    Ok(Recipe {
        deidentifier,
        digest,
        clean_visual_features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use radveil_deid::ProfileOption;

    fn key() -> Key {
        Key::new(zeroize::Zeroizing::new(vec![7u8; 32])).unwrap()
    }

    #[test]
    fn the_digest_covers_the_profile_and_its_options() {
        let a = recipe(b"", &[], key()).unwrap();
        let option = ProfileOption::RetainLongModifiedDates.name().to_string();
        let b = recipe(b"", &[option], key()).unwrap();
        let c = recipe(b"# another\n", &[], key()).unwrap();
        assert_eq!(a.digest.len(), 64);
        assert_ne!(a.digest, c.digest);
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn text_that_is_not_utf8_is_refused() {
        assert!(matches!(
            recipe(&[0xff, 0xfe], &[], key()),
            Err(RecipeError::NotText)
        ));
    }

    #[test]
    fn an_unknown_option_is_refused() {
        assert!(recipe(b"", &["NoSuchOption".into()], key()).is_err());
    }
}
