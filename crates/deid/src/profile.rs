//! Site profiles: a TOML file with the options to apply, a UID root, and per-attribute rules
//! that override Table E.1-1.
//!
//! ```toml
//! options = ["retain-long-modified-dates", "clean-descriptors"]
//! uid_root = "1.2.826.0.1.3680043.10.543"   # optional; default 2.25 UUID-derived UIDs
//!
//! [attributes]
//! PatientAge = "keep"
//! "(0008,1030)" = "remove"                    # StudyDescription
//! InstitutionName = { replace = "RESEARCH SITE 7" }
//! ```

use std::collections::{BTreeSet, HashMap};

use radveil_standard::ProfileOption;
use serde::Deserialize;

/// What a site rule does to one attribute, wherever it appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// Keep as is.
    Keep,
    /// Remove (still kept empty or dummy where the IOD requires it).
    Remove,
    /// Keep with an empty value.
    Empty,
    /// Replace with this value.
    Replace(String),
}

/// Options, UID root and site rules for one de-identification run.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Annex E options applied on top of the Basic Profile.
    pub options: BTreeSet<ProfileOption>,
    /// A UID root owned by the site, for remapped UIDs; `None` gives `2.25.` UIDs.
    pub uid_root: Option<String>,
    /// Per-tag rules that take precedence over the table.
    pub overrides: HashMap<u32, Override>,
    /// The Clean Recognizable Visual Features Option: head CT/MR series are defaced on the
    /// way through. It acts on pixels, so it is not one of Table E.1-1's columns
    /// ([`ProfileOption`]); the caller does the defacing and says so with
    /// [`crate::PixelWork`].
    pub clean_visual_features: bool,
}

/// Why a profile is refused.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The TOML does not parse or has unknown keys.
    #[error("profile file: {0}")]
    Toml(#[from] toml::de::Error),
    /// An option name that is not one of Annex E's.
    #[error("unknown option {0:?}; known options: {1}")]
    UnknownOption(String, String),
    /// An attribute that is neither a keyword of PS3.6 nor a `(gggg,eeee)` tag.
    #[error("unknown attribute {0:?} (use a PS3.6 keyword or \"(gggg,eeee)\")")]
    UnknownAttribute(String),
    /// A rule that is not keep, remove, empty or a replacement.
    #[error(
        "attribute {0}: rule must be \"keep\", \"remove\", \"empty\" or {{ replace = \"...\" }}"
    )]
    BadRule(String),
    /// Options that contradict each other.
    #[error("options {0} and {1} cannot be combined")]
    Conflict(&'static str, &'static str),
    /// A UID root that is not a valid UID prefix, or too long to leave room for a suffix.
    #[error("uid_root {0:?} is not a valid UID root of at most 40 characters")]
    BadUidRoot(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    options: Vec<String>,
    uid_root: Option<String>,
    #[serde(default)]
    attributes: HashMap<String, Rule>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Rule {
    Word(String),
    Replace { replace: String },
}

/// Parses an option name of Table E.1-1, with the list of valid names in the error.
pub fn parse_option(name: &str) -> Result<ProfileOption, ProfileError> {
    ProfileOption::from_name(name).ok_or_else(|| unknown_option(name))
}

fn unknown_option(name: &str) -> ProfileError {
    let mut all: Vec<&str> = ProfileOption::ALL.iter().map(|o| o.name()).collect();
    all.push(radveil_standard::CLEAN_RECOGNIZABLE_VISUAL_FEATURES_NAME);
    ProfileError::UnknownOption(name.to_string(), all.join(", "))
}

/// Parses `(gggg,eeee)`, `gggg,eeee`, `ggggeeee` or a PS3.6 keyword.
pub fn parse_tag(s: &str) -> Option<u32> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, '(' | ')' | ','))
        .collect();
    if hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return u32::from_str_radix(&hex, 16).ok();
    }
    radveil_standard::tag_for_keyword(s)
}

impl Profile {
    /// Turns on an option by name: one of Table E.1-1's or
    /// `clean-recognizable-visual-features`.
    pub fn add_option(&mut self, name: &str) -> Result<(), ProfileError> {
        if name == radveil_standard::CLEAN_RECOGNIZABLE_VISUAL_FEATURES_NAME {
            self.clean_visual_features = true;
        } else {
            self.options
                .insert(ProfileOption::from_name(name).ok_or_else(|| unknown_option(name))?);
        }
        Ok(())
    }

    /// Parses a profile file's text.
    pub fn from_toml(text: &str) -> Result<Profile, ProfileError> {
        let f: ProfileFile = toml::from_str(text)?;
        let mut p = Profile::default();
        for o in &f.options {
            p.add_option(o)?;
        }
        if let Some(root) = f.uid_root {
            let valid = root.len() <= 40 && crate::values::is_valid_uid(&root);
            if !valid {
                return Err(ProfileError::BadUidRoot(root));
            }
            p.uid_root = Some(root);
        }
        for (name, rule) in f.attributes {
            let tag =
                parse_tag(&name).ok_or_else(|| ProfileError::UnknownAttribute(name.clone()))?;
            let o = match rule {
                Rule::Word(w) => match w.as_str() {
                    "keep" => Override::Keep,
                    "remove" => Override::Remove,
                    "empty" => Override::Empty,
                    _ => return Err(ProfileError::BadRule(name)),
                },
                Rule::Replace { replace } => Override::Replace(replace),
            };
            p.overrides.insert(tag, o);
        }
        p.check()?;
        Ok(p)
    }

    /// Refuses contradictory option sets.
    pub fn check(&self) -> Result<(), ProfileError> {
        if self.options.contains(&ProfileOption::RetainLongFullDates)
            && self
                .options
                .contains(&ProfileOption::RetainLongModifiedDates)
        {
            return Err(ProfileError::Conflict(
                ProfileOption::RetainLongFullDates.name(),
                ProfileOption::RetainLongModifiedDates.name(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use radveil_standard::tags;

    #[test]
    fn parses_options_rules_and_root() {
        let p = Profile::from_toml(
            r#"
options = ["retain-long-modified-dates", "clean-descriptors"]
uid_root = "1.2.826.0.1.3680043.10.543"
[attributes]
PatientAge = "keep"
"(0008,1030)" = "remove"
InstitutionName = { replace = "SITE 7" }
"#,
        )
        .unwrap();
        assert!(p.options.contains(&ProfileOption::CleanDescriptors));
        assert!(!p.clean_visual_features);
        assert_eq!(p.overrides[&tags::PATIENT_AGE], Override::Keep);
        assert_eq!(p.overrides[&tags::STUDY_DESCRIPTION], Override::Remove);
        assert_eq!(
            p.overrides[&tags::INSTITUTION_NAME],
            Override::Replace("SITE 7".into())
        );
    }

    #[test]
    fn the_pixel_option_is_named_like_the_others() {
        let p = Profile::from_toml("options = [\"clean-recognizable-visual-features\"]").unwrap();
        assert!(p.clean_visual_features && p.options.is_empty());
        let e = Profile::from_toml("options = [\"clean-faces\"]").unwrap_err();
        assert!(e.to_string().contains("clean-recognizable-visual-features"));
    }

    #[test]
    fn refuses_bad_profiles() {
        assert!(Profile::from_toml("options = [\"retain-everything\"]").is_err());
        assert!(Profile::from_toml("[attributes]\nNoSuchKeyword = \"keep\"").is_err());
        assert!(Profile::from_toml("[attributes]\nPatientAge = \"maybe\"").is_err());
        assert!(Profile::from_toml("uid_root = \"1.02.3\"").is_err());
        assert!(Profile::from_toml("surprise = 1").is_err());
        assert!(Profile::from_toml(
            "options = [\"retain-long-full-dates\", \"retain-long-modified-dates\"]"
        )
        .is_err());
    }
}
