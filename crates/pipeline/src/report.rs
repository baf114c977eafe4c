//! The report (one JSON line per input) and the crosswalk (original-to-new IDs and UIDs, PHI)
//! of a run. Both are prepared before any work: the target names must be free (a dangling
//! link counts as taken) and a temporary is made beside each, so a run that could not write
//! them fails before it starts. They are written to the temporaries and moved into place at
//! the end; a run that fails or is killed leaves no truncated report.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use radveil_deid::ActionCounts;
use serde::Serialize;

use crate::outdir::{Dir, OutputError, Pending};

/// The fate of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// De-identified and written.
    Written,
    /// De-identified; an identical output was already there (`--resume`) and was kept.
    Kept,
    /// Readable DICOM, deliberately not written (possible burned-in text, a face).
    Held,
    /// Not readable, not DICOM, not a regular file named as an input, or not writable.
    Failed,
    /// Another input in this run has the same SOP instance.
    Duplicate,
    /// Left out by design (a DICOMDIR; a FIFO, socket, device or link met while walking).
    Skipped,
}

/// One report line. Holds no PHI: paths as the operator gave them, reasons from the reader
/// (offsets and tags, never values), and counts.
#[derive(Debug, Serialize)]
pub struct Record {
    /// The input as named or found.
    pub input: String,
    /// What happened.
    pub status: Status,
    /// The output written or kept.
    pub output: Option<String>,
    /// Why it was not written.
    pub reason: Option<String>,
    /// Counts of actions, for a de-identified object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<ActionCounts>,
    /// What the Clean Recognizable Visual Features option did: `cleaned` (defaced) or
    /// `none-found` (the volume shows no face).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visual_features: Option<&'static str>,
}

impl Record {
    /// A record of an input that was not written, with the reason.
    pub fn not_written(input: &Path, status: Status, reason: impl Into<String>) -> Record {
        Record {
            input: input.display().to_string(),
            status,
            output: None,
            reason: Some(reason.into()),
            actions: None,
            visual_features: None,
        }
    }
}

/// Why the report or the crosswalk could not be prepared or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The target exists (it is never overwritten).
    #[error("{0} exists; reports and crosswalks are never overwritten")]
    Exists(PathBuf),
    /// A file system failure.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

/// A file prepared at the start of a run and moved into place at its end.
#[derive(Debug)]
pub struct Prepared {
    pending: Pending<'static>,
    name: OsString,
    target: PathBuf,
}

impl Prepared {
    /// Checks that `target` is free (a link, even a dangling one, is not), then makes a
    /// temporary beside it with `mode`. `dir` is the target's directory, opened.
    pub fn in_dir(dir: Dir, name: OsString, mode: u32) -> Result<Prepared, ReportError> {
        let target = dir.path().join(&name);
        if dir.exists(&name)? {
            return Err(ReportError::Exists(target));
        }
        let pending = dir.into_temp("", mode)?;
        Ok(Prepared {
            pending,
            name,
            target,
        })
    }

    /// Prepares `target`: its directory (the operator's path) is made when missing.
    pub fn new(target: &Path, mode: u32) -> Result<Prepared, ReportError> {
        let name = target
            .file_name()
            .ok_or_else(|| OutputError::BadName(target.display().to_string()))?
            .to_os_string();
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Prepared::in_dir(Dir::create(parent)?, name, mode)
    }

    /// Where the file will be.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temporary to write into.
    pub fn file(&mut self) -> &mut std::fs::File {
        self.pending.file()
    }

    /// Makes the content durable and moves it into place.
    pub fn commit(mut self) -> Result<PathBuf, ReportError> {
        self.pending.sync()?;
        match self.pending.commit(&self.name) {
            Ok(()) => Ok(self.target),
            Err(OutputError::Exists(p)) => Err(ReportError::Exists(p)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Written now.
    pub written: usize,
    /// Kept from an earlier run (identical).
    pub kept: usize,
    /// Held back.
    pub held: usize,
    /// Failed.
    pub failed: usize,
    /// Duplicates.
    pub duplicate: usize,
    /// Skipped by design.
    pub skipped: usize,
}

impl Summary {
    /// Whether nothing was held back or lost.
    pub fn all_written(&self) -> bool {
        self.held == 0 && self.failed == 0 && self.duplicate == 0
    }

    /// Counts one record.
    pub fn count(&mut self, status: Status) {
        match status {
            Status::Written => self.written += 1,
            Status::Kept => self.kept += 1,
            Status::Held => self.held += 1,
            Status::Failed => self.failed += 1,
            Status::Duplicate => self.duplicate += 1,
            Status::Skipped => self.skipped += 1,
        }
    }

    /// How many records were counted.
    pub fn total(&self) -> usize {
        self.written + self.kept + self.held + self.failed + self.duplicate + self.skipped
    }
}

/// The report being written: lines are streamed as inputs finish, so memory does not grow
/// with the batch.
#[derive(Debug)]
pub struct Report {
    file: Option<(Prepared, BufWriter<std::fs::File>)>,
    summary: Summary,
    error: Option<ReportError>,
}

impl Report {
    /// A report written to `target` (prepared now), or only counted.
    pub fn new(target: Option<&Path>) -> Result<Report, ReportError> {
        let file = match target {
            Some(t) => {
                let mut p = Prepared::new(t, 0o666)?;
                let w = p.file().try_clone().map_err(|source| ReportError::Write {
                    path: t.to_path_buf(),
                    source,
                })?;
                Some((p, BufWriter::new(w)))
            }
            None => None,
        };
        Ok(Report {
            file,
            summary: Summary::default(),
            error: None,
        })
    }

    /// Counts and writes one record. Returns `false` once writing has failed (the run
    /// should stop: its report cannot be complete).
    pub fn record(&mut self, r: &Record) -> bool {
        self.summary.count(r.status);
        if self.error.is_some() {
            return false;
        }
        if let Some((p, w)) = self.file.as_mut() {
            let line = serde_json::to_writer(&mut *w, r)
                .map_err(std::io::Error::from)
                .and_then(|()| w.write_all(b"\n"));
            if let Err(source) = line {
                self.error = Some(ReportError::Write {
                    path: p.target().to_path_buf(),
                    source,
                });
                return false;
            }
        }
        true
    }

    /// The totals so far.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Flushes the report and moves it into place.
    pub fn finish(self) -> Result<Summary, ReportError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if let Some((p, mut w)) = self.file {
            w.flush().map_err(|source| ReportError::Write {
                path: p.target().to_path_buf(),
                source,
            })?;
            drop(w);
            p.commit()?;
        }
        Ok(self.summary)
    }
}

/// The crosswalk files, in the order of [`CrosswalkKind`].
pub const CROSSWALK_FILES: [&str; 2] = ["patient_ids.csv", "uids.csv"];

/// Which crosswalk file a pair goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrosswalkKind {
    /// Patient ID (0010,0020).
    PatientId,
    /// A UID.
    Uid,
}

impl CrosswalkKind {
    /// The kind of a `radveil_deid::CrosswalkEntry::kind`.
    pub fn from_name(kind: &str) -> CrosswalkKind {
        if kind == "patient_id" {
            CrosswalkKind::PatientId
        } else {
            CrosswalkKind::Uid
        }
    }
}

/// The crosswalk, prepared before the run: its directory exists (made mode 0700 whatever
/// the umask) and both files are prepared (mode 0600).
#[derive(Debug)]
pub struct Crosswalk {
    files: Vec<Prepared>,
}

impl Crosswalk {
    /// Prepares the crosswalk in `dir`.
    pub fn prepare(dir: &Path) -> Result<Crosswalk, ReportError> {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dir
            .file_name()
            .ok_or_else(|| OutputError::BadName(dir.display().to_string()))?;
        let parent = Dir::create(parent)?;
        let (d, made) = parent.subdir_mode(name, 0o700)?;
        if made {
            d.set_mode(0o700)?;
        }
        let mut files = Vec::new();
        for f in CROSSWALK_FILES {
            files.push(Prepared::in_dir(d.try_clone()?, f.into(), 0o600)?);
        }
        Ok(Crosswalk { files })
    }

    /// Writes the pairs (sorted, one `id_old,id_new` line each) and moves both files into
    /// place.
    pub fn write(
        self,
        pairs: &BTreeSet<(CrosswalkKind, String, String)>,
    ) -> Result<(), ReportError> {
        for (mut file, kind) in self
            .files
            .into_iter()
            .zip([CrosswalkKind::PatientId, CrosswalkKind::Uid])
        {
            let path = file.target().to_path_buf();
            let err = |source| ReportError::Write {
                path: path.clone(),
                source,
            };
            let mut w = BufWriter::new(file.file());
            writeln!(w, "id_old,id_new").map_err(err)?;
            for (_, old, new) in pairs.iter().filter(|(k, _, _)| *k == kind) {
                writeln!(w, "{},{}", csv_field(old), csv_field(new)).map_err(err)?;
            }
            w.flush().map_err(err)?;
            drop(w);
            file.commit()?;
        }
        Ok(())
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_report_appears_only_when_finished() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("r.jsonl");
        let mut r = Report::new(Some(&t)).unwrap();
        assert!(r.record(&Record::not_written(Path::new("a"), Status::Failed, "x")));
        assert!(!t.exists());
        let s = r.finish().unwrap();
        assert_eq!(s.failed, 1);
        let text = std::fs::read_to_string(&t).unwrap();
        assert!(text.starts_with("{\"input\":\"a\",\"status\":\"failed\""));
        assert_eq!(names(d.path()), vec!["r.jsonl"]);
    }

    #[test]
    fn an_abandoned_report_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("r.jsonl");
        let r = Report::new(Some(&t)).unwrap();
        drop(r);
        assert!(names(d.path()).is_empty());
    }

    #[test]
    fn a_dangling_link_or_existing_file_is_refused_at_once() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("r.jsonl");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &t).unwrap();
        assert!(matches!(Report::new(Some(&t)), Err(ReportError::Exists(_))));
        assert!(!d.path().join("nowhere").exists());
        let cw = d.path().join("cw");
        std::fs::create_dir(&cw).unwrap();
        std::os::unix::fs::symlink(d.path().join("gone"), cw.join("uids.csv")).unwrap();
        assert!(matches!(
            Crosswalk::prepare(&cw),
            Err(ReportError::Exists(_))
        ));
        assert_eq!(names(&cw), vec!["uids.csv"]);
        assert!(Report::new(Some(&d.path().join("f/x/r.jsonl"))).is_ok());
        std::fs::write(d.path().join("file"), b"").unwrap();
        assert!(Report::new(Some(&d.path().join("file/r.jsonl"))).is_err());
    }

    #[test]
    fn the_crosswalk_directory_is_private_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let cw = d.path().join("cw");
        // The umask is per process: give the directory a wide mode to prove it is reset.
        let c = Crosswalk::prepare(&cw).unwrap();
        assert_eq!(
            std::fs::metadata(&cw).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut pairs = BTreeSet::new();
        pairs.insert((CrosswalkKind::Uid, "1.2".into(), "2.25.9".into()));
        pairs.insert((CrosswalkKind::PatientId, "A,B".into(), "X".into()));
        c.write(&pairs).unwrap();
        assert_eq!(names(&cw), vec!["patient_ids.csv", "uids.csv"]);
        assert_eq!(
            std::fs::read_to_string(cw.join("patient_ids.csv")).unwrap(),
            "id_old,id_new\n\"A,B\",X\n"
        );
        for f in CROSSWALK_FILES {
            assert_eq!(
                std::fs::metadata(cw.join(f)).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
