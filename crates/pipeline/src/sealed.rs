//! De-identification of one object held in memory whose caller needs what it became: the
//! de-identified identity (a research export records the new UIDs as lineage), and,
//! optionally, the output sealed (encrypted to its recipients) before it reaches the disk,
//! so a de-identified file meant to leave only encrypted is never written in the clear.

use std::ffi::OsStr;

use radveil_deid::{Identity, VisualFeatures};
use radveil_part10::{BudgetError, DEFAULT_WAIT};

use crate::{fingerprint, safe_component, Outcome, OutputError, Run, Step};

/// Turns an encoded de-identified file into the bytes written (for instance CMS
/// EnvelopedData to the recipients' certificates); its error is words without a value.
pub type Seal<'s> = &'s (dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Sync);

/// How [`Run::deidentify_with`] writes its output.
#[derive(Clone, Copy)]
pub struct Sealing<'s> {
    /// What the encoded file is turned into.
    pub seal: Seal<'s>,
    /// Appended to the output's name (`INSTANCE.dcm` + suffix, like `.p7m`).
    pub suffix: &'s str,
}

impl Run {
    /// [`Run::deidentify_reserved`] (the bytes already counted in the budget by the caller),
    /// also returning the de-identified identity of what was written. With `sealing`, the
    /// encoded file is made in memory (its size reserved from the budget), handed to the
    /// seal, and only what the seal returns is written, as `INSTANCE.dcm` + the suffix,
    /// through the same output directory (no link followed, exclusive temporary, renamed
    /// into place without overwriting).
    pub fn deidentify_with(
        &self,
        bytes: &[u8],
        visual: VisualFeatures,
        sealing: Option<Sealing<'_>>,
    ) -> (Outcome, Option<Identity>) {
        let mut wait_for = 0;
        for _ in 0..crate::ATTEMPTS {
            if wait_for > 0 {
                if let Err(e) = self.budget().reserve(wait_for, DEFAULT_WAIT) {
                    return (Outcome::Failed(e.to_string()), None);
                }
            }
            let mut grant = match self.budget().reserve(0, DEFAULT_WAIT) {
                Ok(g) => g,
                Err(e) => return (Outcome::Failed(e.to_string()), None),
            };
            match self.deidentify_step(bytes, visual, &mut grant) {
                Step::Done(o) => {
                    let identity = o.identity.clone();
                    let outcome = match sealing {
                        None => self.write(o, None),
                        Some(s) => self.write_sealed(o, s),
                    };
                    let written = matches!(outcome, Outcome::Written { .. });
                    return (outcome, written.then_some(identity));
                }
                Step::Refused(o) => return (o, None),
                Step::Wait(need) => wait_for = need,
            }
        }
        (
            Outcome::Failed(
                BudgetError::Busy {
                    requested: wait_for,
                }
                .to_string(),
            ),
            None,
        )
    }

    /// Writes a de-identified object sealed: claims its SOP instance, encodes it into a
    /// buffer reserved from the budget, seals it, and writes what the seal returns.
    fn write_sealed(&self, outcome: radveil_deid::Outcome<'_>, sealing: Sealing<'_>) -> Outcome {
        let id = &outcome.identity;
        {
            let Ok(mut c) = self.claimed.lock() else {
                return Outcome::Failed("internal error: lock poisoned".into());
            };
            if !c.insert(fingerprint(&id.sop_instance_uid)) {
                return Outcome::Duplicate;
            }
        }
        // The plain encoding and the sealed copy (about as large) are both held at once.
        let len = outcome.file.len() as u64;
        let _grant = match self.budget().reserve(len.saturating_mul(2), DEFAULT_WAIT) {
            Ok(g) => g,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let plain = outcome.file.to_vec();
        let sealed = match (sealing.seal)(&plain) {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(format!("cannot encrypt the output: {e}")),
        };
        drop(plain);
        let dir = match self.series_dir([&id.patient, &id.study_uid, &id.series_uid]) {
            Ok(d) => d,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let name = format!(
            "{}.dcm{}",
            safe_component(&id.sop_instance_uid),
            safe_component(sealing.suffix)
        );
        let write = |f: &mut std::fs::File| -> Result<(), OutputError> {
            std::io::Write::write_all(f, &sealed)
                .map_err(|e| OutputError::Content(format!("cannot write output: {e}")))
        };
        match dir.write_new(OsStr::new(&name), &self.tag, write) {
            Ok(output) => Outcome::Written {
                output,
                counts: outcome.counts,
            },
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(out: &std::path::Path) -> Run {
        let key = radveil_deid::Key::new(zeroize::Zeroizing::new(vec![b'k'; 40])).unwrap();
        let d = radveil_deid::Deidentifier::new(key, radveil_deid::Config::default()).unwrap();
        Run::new(
            d,
            out,
            &crate::Settings {
                memory_limit: 1 << 30,
                resume: false,
            },
        )
        .unwrap()
    }

    #[test]
    fn the_identity_is_that_of_the_file_written_and_a_sealed_output_is_never_in_the_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = crate::volume::tests::slice(3, "DOE^JANE");
        let r = run(&tmp.path().join("plain"));
        let (o, id) = r.deidentify_with(&bytes, VisualFeatures::Untouched, None);
        let Outcome::Written { output, .. } = o else {
            panic!("{o:?}")
        };
        let id = id.unwrap();
        assert_eq!(
            output.file_name().unwrap().to_string_lossy(),
            format!("{}.dcm", id.sop_instance_uid)
        );
        assert!(output.parent().unwrap().ends_with(&id.series_uid));
        assert!(id.sop_instance_uid.starts_with("2.25."), "a new UID");
        let plain = std::fs::read(&output).unwrap();
        // Sealed: a reversible stand-in for encryption; the file holds only what it made.
        let seal = |b: &[u8]| -> Result<Vec<u8>, String> { Ok(b.iter().map(|x| !x).collect()) };
        let r = run(&tmp.path().join("sealed"));
        let sealing = Sealing {
            seal: &seal,
            suffix: ".p7m",
        };
        let (o, id2) = r.deidentify_with(&bytes, VisualFeatures::Untouched, Some(sealing));
        let Outcome::Written { output, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(id2.unwrap(), id);
        assert!(output.to_string_lossy().ends_with(".dcm.p7m"));
        let sealed = std::fs::read(&output).unwrap();
        assert_eq!(sealed.iter().map(|x| !x).collect::<Vec<_>>(), plain);
        // Nothing else was written under the output: no clear copy.
        let count = walk(&tmp.path().join("sealed"));
        assert_eq!(count, 1);
        // A second copy is a duplicate; a failing seal writes nothing.
        let (o, id3) = r.deidentify_with(&bytes, VisualFeatures::Untouched, Some(sealing));
        assert!(matches!(o, Outcome::Duplicate) && id3.is_none());
        let fail = |_: &[u8]| -> Result<Vec<u8>, String> { Err("no recipient".into()) };
        let r = run(&tmp.path().join("failed"));
        let (o, _) = r.deidentify_with(
            &bytes,
            VisualFeatures::Untouched,
            Some(Sealing {
                seal: &fail,
                suffix: ".p7m",
            }),
        );
        assert!(matches!(o, Outcome::Failed(ref why) if why.contains("no recipient")));
        assert_eq!(walk(&tmp.path().join("failed")), 0);
        assert_eq!(r.budget().in_use(), 0);
    }

    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            walk(&p)
                        } else {
                            // Outputs only (the run's lock file is not one).
                            usize::from(p.to_string_lossy().contains(".dcm"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}
