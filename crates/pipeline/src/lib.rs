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

pub mod batch;
pub mod deface;
pub mod ingest;
pub mod input;
pub mod ledger;
pub mod memory;
pub mod observe;
pub mod ordered;
pub mod outdir;
pub mod pool;
pub mod report;
pub mod sealed;
pub mod secret;
pub mod sign;
pub mod timestamp;
pub mod tree;
pub mod verify;
pub mod volume;
pub mod walk;
pub mod whole;

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use radveil_deid::{ActionCounts, DeidError, Deidentifier, VisualFeatures};
use radveil_part10::{BudgetError, Grant, MemoryBudget, DEFAULT_WAIT};

pub use input::{InputError, Scratch};
pub use outdir::{write_new_file, Dir, OutputError};
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

/// How often one input is tried when the memory it needs is in use by other workers.
const ATTEMPTS: usize = 3;

/// Where de-identifying one object stands.
enum Step<'a> {
    /// De-identified, to be written.
    Done(radveil_deid::Outcome<'a>),
    /// Not to be written, with the reason.
    Refused(Outcome),
    /// The memory (about this many bytes) is in use by other workers: wait and try again.
    Wait(u64),
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
    /// Series directories recently written into, open.
    dirs: Mutex<std::collections::HashMap<[String; 3], std::sync::Arc<Dir>>>,
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
            dirs: Mutex::default(),
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
    /// never blocks (a FIFO or device is refused); its bytes are granted from the budget
    /// before they are read and what de-identification allocates is charged to the same
    /// grant (a file that never fits is refused; one that fits waits, holding nothing, for
    /// other workers to give memory back); the part copied without parsing is copied from
    /// the same descriptor and the output dropped when the file changed meanwhile.
    pub fn deidentify_file(
        &self,
        path: &Path,
        scratch: &mut Scratch,
        visual: VisualFeatures,
    ) -> Outcome {
        let mut wait_for = 0;
        for _ in 0..ATTEMPTS {
            if wait_for > 0 {
                // Wait, holding nothing, until what this file needs is free; then try again.
                scratch.free();
                if let Err(e) = self.budget.reserve(wait_for, DEFAULT_WAIT) {
                    return Outcome::Failed(e.to_string());
                }
            }
            let input = match Input::open(path) {
                Ok(i) => i,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let len = input.len();
            let mut loaded = match input::load(input, scratch, &self.budget, 0) {
                Ok(l) => l,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let step = self.deidentify_step(loaded.bytes, visual, &mut loaded.grant);
            let outcome = match step {
                Step::Done(o) => self.write(o, Some(&loaded)),
                Step::Refused(o) => o,
                Step::Wait(need) => {
                    wait_for = need.saturating_add(len);
                    continue;
                }
            };
            drop(loaded);
            scratch.release();
            return outcome;
        }
        Outcome::Failed(
            BudgetError::Busy {
                requested: wait_for,
            }
            .to_string(),
        )
    }

    /// De-identifies one object held in memory (an instance received from the network, or
    /// a file rewritten by defacing) and writes the result. The bytes are counted in the
    /// budget while the work is done.
    pub fn deidentify_bytes(&self, bytes: &[u8], visual: VisualFeatures) -> Outcome {
        self.deidentify_held(bytes, visual, bytes.len() as u64)
    }

    /// De-identifies one object held in memory that the caller has already counted in the
    /// budget (a file rewritten from a volume the caller reserved for), and writes it.
    pub fn deidentify_reserved(&self, bytes: &[u8], visual: VisualFeatures) -> Outcome {
        self.deidentify_held(bytes, visual, 0)
    }

    fn deidentify_held(&self, bytes: &[u8], visual: VisualFeatures, held: u64) -> Outcome {
        let mut wait_for = 0;
        for _ in 0..ATTEMPTS {
            if wait_for > 0 {
                if let Err(e) = self.budget.reserve(wait_for, DEFAULT_WAIT) {
                    return Outcome::Failed(e.to_string());
                }
            }
            let mut grant = match self.budget.reserve(held, DEFAULT_WAIT) {
                Ok(g) => g,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            match self.deidentify_step(bytes, visual, &mut grant) {
                Step::Done(o) => return self.write(o, None),
                Step::Refused(o) => return o,
                Step::Wait(need) => wait_for = need.saturating_add(held),
            }
        }
        Outcome::Failed(
            BudgetError::Busy {
                requested: wait_for,
            }
            .to_string(),
        )
    }

    /// De-identifies `bytes`, charging what it allocates to `grant` (which grows without
    /// waiting). A deflated data set is measured first (streaming, nothing kept): one that
    /// can never fit is refused before it is inflated, one that does not fit now waits.
    fn deidentify_step<'a>(
        &self,
        bytes: &'a [u8],
        visual: VisualFeatures,
        grant: &mut Grant<'_>,
    ) -> Step<'a> {
        let inflation = match self.inflation_needed(bytes) {
            Ok(n) => n,
            Err(e) => return Step::Refused(Outcome::Failed(e.to_string())),
        };
        let estimate = radveil_part10::first_estimate(bytes.len()).saturating_add(inflation);
        if inflation > 0 && self.budget.try_reserve(inflation).is_err() {
            return Step::Wait(estimate);
        }
        match self.deidentifier.deidentify_in(bytes, visual, grant) {
            Ok(o) => Step::Done(o),
            Err(DeidError::Read(radveil_part10::Error::Budget(BudgetError::Busy { .. }))) => {
                Step::Wait(estimate)
            }
            Err(e @ DeidError::HeldBack(_)) => Step::Refused(Outcome::Held(e.to_string())),
            Err(e @ DeidError::Dicomdir) => Step::Refused(Outcome::Skipped(e.to_string())),
            Err(e) => Step::Refused(Outcome::Failed(e.to_string())),
        }
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

    /// Writes a de-identified object (followed by `loaded`'s tail, when only the head was
    /// read): claims its SOP instance, opens its directory, writes or (resumed) keeps it.
    fn write(
        &self,
        outcome: radveil_deid::Outcome<'_>,
        loaded: Option<&Loaded<'_, '_>>,
    ) -> Outcome {
        let id = &outcome.identity;
        {
            let Ok(mut c) = self.claimed.lock() else {
                return Outcome::Failed("internal error: lock poisoned".into());
            };
            if !c.insert(fingerprint(&id.sop_instance_uid)) {
                return Outcome::Duplicate;
            }
        }
        let dir = match self.series_dir([&id.patient, &id.study_uid, &id.series_uid]) {
            Ok(d) => d,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
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

impl Run {
    /// The directory `OUT/PATIENT/STUDY/SERIES` (names made safe), opened component by
    /// component without following links, made when missing; kept open for the next files
    /// of the series. A directory that was already there is swept of temporaries a killed
    /// run left in it.
    fn series_dir(&self, names: [&String; 3]) -> Result<std::sync::Arc<Dir>, OutputError> {
        let key = names.map(|n| safe_component(n));
        if let Some(d) = self.dirs.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(d);
        }
        let patient = self.out.subdir(OsStr::new(&key[0]))?;
        let study = patient.subdir(OsStr::new(&key[1]))?;
        let (series, made) = study.subdir_mode(OsStr::new(&key[2]), 0o777)?;
        if !made {
            self.sweeper.sweep(&series, &self.tag, self.started);
        }
        let series = std::sync::Arc::new(series);
        if let Ok(mut c) = self.dirs.lock() {
            if c.len() >= OPEN_DIRS {
                c.clear();
            }
            c.insert(key, series.clone());
        }
        Ok(series)
    }
}

/// How many series directories a run keeps open.
const OPEN_DIRS: usize = 64;

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
