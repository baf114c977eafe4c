//! The per-file pipeline of radveil: open an input once, parse it once, run the steps a
//! command asked for on the parsed object, encode once, write once.
//!
//! A [`Run`] holds what every input of a run shares: the de-identifier, the memory budget,
//! the output directory (opened once and locked), the SOP instances already claimed and the
//! crosswalk. [`Run::deidentify_file`] and [`Run::deidentify_bytes`] take one input (a file,
//! or bytes received some other way) to an [`Outcome`]; a batch is a [`pool::Pool`] over
//! them, and a network gateway calls the same for each instance it receives.
//!
//! Files are written under `OUT/PATIENT/STUDY/SERIES/INSTANCE.dcm` (the pseudonyms) through
//! [`outdir::Dir`]: no link in the output tree is followed, nothing is overwritten, and no
//! reader sees a partial file. A resumed run (`resume`) keeps an existing output that is
//! byte for byte what it computes, and reports it as kept.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod input;
pub mod memory;
pub mod outdir;
pub mod pool;
pub mod report;
pub mod walk;

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use radveil_deid::{ActionCounts, DeidError, Deidentifier, VisualFeatures};
use radveil_part10::{BudgetError, MemoryBudget};

pub use input::{InputError, Scratch};
pub use outdir::{write_new_file, Dir, OutputError};
pub use radveil_part10::MemoryBudget as Budget;
pub use report::{Record, Status, Summary};

use input::{Input, Loaded};
use report::CrosswalkKind;

/// The fate of one input.
#[derive(Debug)]
pub enum Outcome {
    /// De-identified and written.
    Written {
        /// The output file.
        output: PathBuf,
        /// What was done.
        counts: ActionCounts,
    },
    /// De-identified; an identical output from an earlier run of the same work was kept.
    Kept {
        /// The output file.
        output: PathBuf,
        /// What was done.
        counts: ActionCounts,
    },
    /// Deliberately not written (possible burned-in text).
    Held(String),
    /// Not readable, not DICOM, too large for the memory budget, changed while read, or
    /// not writable.
    Failed(String),
    /// Another input of this run has the same SOP instance.
    Duplicate,
    /// Left out by design (a DICOMDIR).
    Skipped(String),
}

/// The reason given for a second copy of an SOP instance.
pub const DUPLICATE_REASON: &str = "same SOP instance as another input of this run; not written";

impl Outcome {
    /// The report status.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Written { .. } => Status::Written,
            Outcome::Kept { .. } => Status::Kept,
            Outcome::Held(_) => Status::Held,
            Outcome::Failed(_) => Status::Failed,
            Outcome::Duplicate => Status::Duplicate,
            Outcome::Skipped(_) => Status::Skipped,
        }
    }

    /// The report line for `input`; `visual` says what the Clean Recognizable Visual
    /// Features option did to it.
    pub fn into_record(self, input: &Path, visual: VisualFeatures) -> Record {
        let status = self.status();
        let (output, reason, actions) = match self {
            Outcome::Written { output, counts } => (Some(output), None, Some(counts)),
            Outcome::Kept { output, counts } => (
                Some(output),
                Some("an identical output from an earlier run was kept".to_string()),
                Some(counts),
            ),
            Outcome::Held(r) | Outcome::Failed(r) | Outcome::Skipped(r) => (None, Some(r), None),
            Outcome::Duplicate => (None, Some(DUPLICATE_REASON.to_string()), None),
        };
        let written = matches!(status, Status::Written | Status::Kept);
        Record {
            input: input.display().to_string(),
            status,
            output: output.map(|p| p.display().to_string()),
            reason,
            actions,
            visual_features: match visual {
                VisualFeatures::Cleaned if written => Some("cleaned"),
                VisualFeatures::NoneFound if written => Some("none-found"),
                _ => None,
            },
        }
    }
}

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bytes of memory all workers share.
    pub memory_limit: u64,
    /// Keep identical outputs of an earlier run of the same work (and report them `kept`)
    /// instead of failing them as existing.
    pub resume: bool,
}

/// What every input of a run shares.
#[derive(Debug)]
pub struct Run {
    deidentifier: Deidentifier,
    budget: MemoryBudget,
    out: Dir,
    /// Tags this run's temporaries, so they are never taken for stale ones.
    tag: String,
    started: SystemTime,
    resume: bool,
    claimed: Mutex<HashSet<u128>>,
    crosswalk: Mutex<BTreeSet<(CrosswalkKind, String, String)>>,
    sweeper: outdir::Sweeper,
}

impl Run {
    /// Opens (making it when missing) and locks the output directory `out`: one run at a
    /// time writes into it, so temporaries left by a killed run can be told from live ones.
    pub fn new(
        deidentifier: Deidentifier,
        out: &Path,
        settings: &Settings,
    ) -> Result<Run, OutputError> {
        let started = SystemTime::now();
        let dir = Dir::create(out)?;
        dir.lock()?;
        let mut r = [0u8; 4];
        let _ = getrandom::getrandom(&mut r);
        let tag = format!(
            "{:08x}{}-",
            u32::from_le_bytes(r) ^ std::process::id(),
            if r == [0; 4] { "p" } else { "" }
        );
        Ok(Run {
            deidentifier,
            budget: MemoryBudget::new(settings.memory_limit),
            out: dir,
            tag,
            started,
            resume: settings.resume,
            claimed: Mutex::new(HashSet::new()),
            crosswalk: Mutex::new(BTreeSet::new()),
            sweeper: outdir::Sweeper::default(),
        })
    }

    /// The memory budget every worker shares.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// The de-identifier.
    pub fn deidentifier(&self) -> &Deidentifier {
        &self.deidentifier
    }

    /// How many temporaries left by a killed run were removed.
    pub fn stale_removed(&self) -> usize {
        self.sweeper.removed()
    }

    /// The crosswalk pairs collected (when the de-identifier returns them).
    pub fn into_crosswalk(self) -> BTreeSet<(CrosswalkKind, String, String)> {
        self.crosswalk.into_inner().unwrap_or_default()
    }

    /// Reads and de-identifies one file and writes the result. The file is opened once and
    /// never blocks (a FIFO or device is refused); its memory is granted from the budget
    /// before it is read (a file that never fits is refused, one that fits waits);
    /// the part copied without parsing is copied from the same descriptor and the output
    /// dropped when the file changed meanwhile.
    pub fn deidentify_file(
        &self,
        path: &Path,
        scratch: &mut Scratch,
        visual: VisualFeatures,
    ) -> Outcome {
        let mut extra = 0;
        for _ in 0..2 {
            let input = match Input::open(path) {
                Ok(i) => i,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let mut loaded = match input::load(input, scratch, &self.budget, extra) {
                Ok(l) => l,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            // A deflated data set is inflated in memory: measured first (streaming, nothing
            // kept), then granted, so a bomb is refused before it is inflated.
            match self.inflation_needed(loaded.bytes) {
                Ok(0) => {}
                Ok(need) if need <= extra => {}
                Ok(need) => {
                    if loaded.grant.grow(need).is_err() {
                        // Wait for it holding nothing: give back this file's memory first.
                        drop(loaded);
                        scratch.free();
                        extra = need;
                        continue;
                    }
                }
                Err(e) => return Outcome::Failed(e.to_string()),
            }
            let outcome = self.finish(loaded.bytes, Some(&loaded), visual);
            drop(loaded);
            scratch.release();
            return outcome;
        }
        Outcome::Failed(BudgetError::Busy { requested: extra }.to_string())
    }

    /// De-identifies one object held in memory (an instance received from the network, or
    /// a file rewritten by defacing) and writes the result.
    pub fn deidentify_bytes(&self, bytes: &[u8], visual: VisualFeatures) -> Outcome {
        let need = match self.inflation_needed(bytes) {
            Ok(n) => n,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let need = need.saturating_add(input::work_allowance(bytes.len() as u64));
        let _grant = match self.budget.reserve(need, radveil_part10::DEFAULT_WAIT) {
            Ok(g) => g,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        self.finish(bytes, None, visual)
    }

    /// De-identifies one object held in memory whose memory the caller has already been
    /// granted (a file rewritten from a volume the caller reserved for), and writes it.
    pub fn deidentify_reserved(&self, bytes: &[u8], visual: VisualFeatures) -> Outcome {
        self.finish(bytes, None, visual)
    }

    /// The memory inflating a deflated data set takes (the inflated bytes, their growth,
    /// and the re-encoded output); 0 for other transfer syntaxes.
    fn inflation_needed(&self, bytes: &[u8]) -> Result<u64, BudgetError> {
        use radveil_part10 as p10;
        let Ok(meta) = p10::read_file_meta(bytes) else {
            return Ok(0); // the de-identifier reports what is wrong
        };
        if !p10::TransferSyntax::from_uid(&meta.transfer_syntax).deflated {
            return Ok(0);
        }
        const FACTOR: u64 = 3;
        let cap = (self.budget.limit() / FACTOR).min(p10::Limits::default().max_inflated as u64);
        let mut dec = flate2::read::DeflateDecoder::new(meta.body);
        let inflated = std::io::copy(
            &mut std::io::Read::take(&mut dec, cap.saturating_add(1)),
            &mut std::io::sink(),
        )
        .unwrap_or(0); // a broken stream: the de-identifier reports it
        if inflated > cap {
            return Err(BudgetError::TooLarge {
                requested: inflated.saturating_mul(FACTOR),
                limit: self.budget.limit(),
            });
        }
        Ok(inflated.saturating_mul(FACTOR))
    }

    /// De-identifies `bytes` (followed by `loaded`'s tail, when only the head was read) and
    /// writes the output.
    fn finish(
        &self,
        bytes: &[u8],
        loaded: Option<&Loaded<'_, '_>>,
        visual: VisualFeatures,
    ) -> Outcome {
        let outcome = match self.deidentifier.deidentify_with(bytes, visual) {
            Ok(o) => o,
            Err(e @ DeidError::HeldBack(_)) => return Outcome::Held(e.to_string()),
            Err(e @ DeidError::Dicomdir) => return Outcome::Skipped(e.to_string()),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let id = &outcome.identity;
        {
            let Ok(mut c) = self.claimed.lock() else {
                return Outcome::Failed("internal error: lock poisoned".into());
            };
            if !c.insert(fingerprint(&id.sop_instance_uid)) {
                return Outcome::Duplicate;
            }
        }
        let mut dir = None;
        for component in [&id.patient, &id.study_uid, &id.series_uid] {
            let c = safe_component(component);
            let next = match dir.as_ref().unwrap_or(&self.out).subdir(OsStr::new(&c)) {
                Ok(d) => d,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            dir = Some(next);
        }
        let Some(dir) = dir else {
            return Outcome::Failed("internal error: no output directory".into());
        };
        self.sweeper.sweep(&dir, &self.tag, self.started);
        let name = format!("{}.dcm", safe_component(&id.sop_instance_uid));
        let name = OsStr::new(&name);
        let file = &outcome.file;
        let write = |f: &mut std::fs::File| -> Result<(), OutputError> {
            {
                let mut w = std::io::BufWriter::with_capacity(64 * 1024, &mut *f);
                file.write_to(&mut w)
                    .and_then(|()| w.flush())
                    .map_err(|e| OutputError::Content(format!("cannot write output: {e}")))?;
            }
            if let Some(l) = loaded {
                #[cfg(test)]
                tests::before_copy();
                l.copy_tail(f)
                    .map_err(|e| OutputError::Content(e.to_string()))?;
            }
            Ok(())
        };
        let same = |w: &mut dyn Write| -> Result<(), OutputError> {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, w);
            file.write_to(&mut w)
                .and_then(|()| w.flush())
                .map_err(|e| OutputError::Content(format!("cannot compare output: {e}")))?;
            if let Some(l) = loaded {
                l.write_tail(&mut w)
                    .map_err(|e| OutputError::Content(e.to_string()))?;
                w.flush()
                    .map_err(|e| OutputError::Content(format!("cannot compare output: {e}")))?;
            }
            Ok(())
        };
        let result = match dir.write_new(name, &self.tag, write) {
            Ok(p) => Ok((p, false)),
            Err(OutputError::Exists(p)) if self.resume => match dir.same_content(name, same) {
                Ok(true) => Ok((p, true)),
                Ok(false) => Err(OutputError::ExistsDiffers(p).to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let (output, kept) = match result {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e),
        };
        if !outcome.crosswalk.is_empty() {
            if let Ok(mut c) = self.crosswalk.lock() {
                for e in &outcome.crosswalk {
                    c.insert((
                        CrosswalkKind::from_name(e.kind),
                        e.old.clone(),
                        e.new.clone(),
                    ));
                }
            }
        }
        let counts = outcome.counts;
        if kept {
            Outcome::Kept { output, counts }
        } else {
            Outcome::Written { output, counts }
        }
    }
}

/// A 128-bit fingerprint of a UID, to detect a second input with the same SOP instance
/// without keeping every UID of a large batch in memory.
fn fingerprint(uid: &str) -> u128 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    type H = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
    let a = H::default().hash_one(("radveil-sop-a", uid));
    let b = H::default().hash_one(("radveil-sop-b", uid));
    ((a as u128) << 64) | b as u128
}

/// A path component made only of characters that are safe in every file system.
pub fn safe_component(s: &str) -> String {
    let c: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if c.is_empty() || c.chars().all(|c| c == '.') {
        "_".into()
    } else {
        c
    }
}

#[cfg(test)]
mod tests;
