//! `radveil deid` as a batch: the inputs walked, a worker pool over a shared [`Run`], the
//! report and the crosswalk prepared before any work and, under the Clean Recognizable
//! Visual Features option, head volumes defaced with `radveil-deface`.
//!
//! Under that option the unit of work is a volume, not a file: CT and MR images are grouped
//! by series (single-frame slices of one orientation and matrix, or one multi-frame image),
//! each volume is defaced and checked for a face, and its files are then de-identified one
//! by one. A volume that shows a face and cannot be defaced is held back whole.
//!
//! Progress is reported through [`Progress`], so a command line can draw a bar and a
//! gateway or a test can count, without this crate knowing how it is shown.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use radveil_deface::series::{ImageHeader, SeriesError};
use radveil_deface::DefaceOptions;
use radveil_deid::{Deidentifier, VisualFeatures};

use crate::input::{self, Input, Scratch};
use crate::pool::{Flow, Panicked, Pool};
use crate::report::{Crosswalk, Record, Report, ReportError, Status, Summary};
use crate::volume::VolumeOutcome;
use crate::{Outcome, OutputError, Run, Settings, DUPLICATE_REASON};

/// What one batch run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The de-identifier (key, profile, options).
    pub deidentifier: &'a Deidentifier,
    /// Files and directories, as the operator named them.
    pub inputs: &'a [PathBuf],
    /// The output directory (made when missing, locked while the batch runs).
    pub out: &'a Path,
    /// Where to write the report (one JSON line per input), if anywhere.
    pub report: Option<&'a Path>,
    /// The directory to write the crosswalk into, if any.
    pub crosswalk: Option<&'a Path>,
    /// Worker threads (at least one is used).
    pub jobs: usize,
    /// Bytes of memory all workers share.
    pub memory_limit: u64,
    /// Keep identical outputs of an earlier run of the same work.
    pub resume: bool,
    /// Set under the Clean Recognizable Visual Features option: how head volumes are defaced.
    pub deface: Option<DefaceOptions>,
}

/// How far a batch has got, for whoever shows it. Called from the worker threads.
pub trait Progress: Sync {
    /// The batch has `total` inputs (called once, after the inputs are walked and before
    /// any is worked on).
    fn start(&self, total: u64);
    /// `n` more inputs are done.
    fn advance(&self, n: u64);
}

/// Progress nobody watches.
impl Progress for () {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// What a finished batch did.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    /// The count of each status in the report.
    pub summary: Summary,
    /// Inputs: the files walked and the entries refused (each has one report line).
    pub total: usize,
    /// Temporaries a killed run left in the output directory, removed.
    pub stale_removed: usize,
    /// How long the batch took, from the report's preparation to its completion.
    pub elapsed: Duration,
}

/// Why a batch stopped before its end, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The report could not be prepared or written (the run stops: it could not be
    /// complete).
    #[error("report")]
    Report(#[source] ReportError),
    /// The crosswalk could not be prepared or written.
    #[error("crosswalk")]
    Crosswalk(#[source] ReportError),
    /// The output directory could not be made, opened or locked.
    #[error("output directory")]
    Output(#[source] OutputError),
    /// A lock was poisoned (a bug).
    #[error("internal error: report lock poisoned")]
    Poisoned,
    /// Some inputs got no report line (a bug): the report would not account for them.
    #[error("internal error: {0} inputs without a result")]
    Unaccounted(usize),
}

/// One unit of work: a file, or the files of one volume (defaced together) with the other
/// copies of its images found in the batch (reported as duplicates, never written: one of
/// them written undefaced would leak the face).
#[derive(Debug, PartialEq, Eq)]
enum Unit {
    File(PathBuf),
    Volume {
        files: Vec<PathBuf>,
        duplicates: Vec<PathBuf>,
    },
}

impl Unit {
    /// Every input of the unit (each gets one report line).
    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        let (files, duplicates) = match self {
            Unit::File(p) => (std::slice::from_ref(p), &[][..]),
            Unit::Volume { files, duplicates } => (&files[..], &duplicates[..]),
        };
        files.iter().chain(duplicates)
    }

    /// The unit's report lines: those its work gave, or, when the work panicked, one
    /// failure for each of its inputs (none is lost from the report).
    fn records(&self, result: Result<Vec<Record>, Panicked>) -> Vec<Record> {
        result.unwrap_or_else(|panicked| {
            self.files()
                .map(|p| Record::not_written(p, Status::Failed, panicked.to_string()))
                .collect()
        })
    }
}

/// Runs the batch: every input gets one report line, streamed as it finishes.
///
/// Everything that could stop the run is checked before any work: the report and the
/// crosswalk are prepared (their names free, temporaries made beside them) and the output
/// directory is opened and locked.
pub fn run(batch: &Batch<'_>, progress: &dyn Progress) -> Result<Done, BatchError> {
    let started = Instant::now();
    let mut report = Report::new(batch.report).map_err(BatchError::Report)?;
    let crosswalk = match batch.crosswalk {
        Some(dir) => Some(Crosswalk::prepare(dir).map_err(BatchError::Crosswalk)?),
        None => None,
    };
    let run = Run::new(
        batch.deidentifier.clone(),
        batch.out,
        &Settings {
            memory_limit: batch.memory_limit,
            resume: batch.resume,
        },
    )
    .map_err(BatchError::Output)?;

    let walked = crate::walk::collect(batch.inputs, run.budget());
    for r in &walked.refused {
        let status = if r.named {
            Status::Failed
        } else {
            Status::Skipped
        };
        report.record(&Record::not_written(&r.path, status, r.reason.clone()));
    }
    let total = walked.files.len().saturating_add(walked.refused.len());
    let units = match batch.deface {
        Some(_) => plan_volumes(walked.files, batch.jobs, &run),
        None => walked.files.into_iter().map(Unit::File).collect(),
    };
    progress.start(total as u64);
    progress.advance(walked.refused.len() as u64);

    // Report lines are streamed as inputs finish, so memory does not grow with the batch;
    // a report that cannot be written stops the run (it could not be complete).
    let report = Mutex::new(report);
    let finished = Pool::new(batch.jobs).run(
        &units,
        Scratch::new,
        |scratch, unit| process_unit(batch, &run, unit, scratch),
        |unit, result| {
            let records = unit.records(result);
            progress.advance(records.len() as u64);
            let Ok(mut r) = report.lock() else {
                return Flow::Stop;
            };
            // Every record is counted, even after a write failed.
            let mut ok = true;
            for rec in &records {
                ok &= r.record(rec);
            }
            if ok {
                Flow::Continue
            } else {
                Flow::Stop
            }
        },
    );
    let report = report.into_inner().map_err(|_| BatchError::Poisoned)?;
    let counted = report.summary().total();
    if !finished.stopped && counted != total {
        return Err(BatchError::Unaccounted(total.saturating_sub(counted)));
    }
    let stale_removed = run.stale_removed();
    if let Some(c) = crosswalk {
        c.write(&run.into_crosswalk())
            .map_err(BatchError::Crosswalk)?;
    }
    let summary = report.finish().map_err(BatchError::Report)?;
    Ok(Done {
        summary,
        total,
        stale_removed,
        elapsed: started.elapsed(),
    })
}

/// Works on one unit; one record per file.
fn process_unit(batch: &Batch<'_>, run: &Run, unit: &Unit, scratch: &mut Scratch) -> Vec<Record> {
    match unit {
        Unit::File(path) => vec![one_file(run, path, scratch, VisualFeatures::Untouched)],
        Unit::Volume { files, duplicates } => {
            let mut records = Vec::with_capacity(files.len().saturating_add(duplicates.len()));
            process_volume(batch.deface, run, files, scratch, &mut records);
            for p in duplicates {
                records.push(Record::not_written(p, Status::Duplicate, DUPLICATE_REASON));
            }
            records
        }
    }
}

fn one_file(run: &Run, path: &Path, scratch: &mut Scratch, visual: VisualFeatures) -> Record {
    run.deidentify_file(path, scratch, visual)
        .into_record(path, visual)
}

/// Groups the inputs into units: the CT and MR images that could show a face are grouped
/// into volumes (read from their headers on all workers); everything else stays a file.
/// Volumes come first: they take longest, so the files fill in around them.
fn plan_volumes(files: Vec<PathBuf>, jobs: usize, run: &Run) -> Vec<Unit> {
    let headers: Mutex<Vec<(usize, ImageHeader)>> = Mutex::default();
    let indexed: Vec<(usize, &PathBuf)> = files.iter().enumerate().collect();
    Pool::new(jobs).run(
        &indexed,
        Scratch::new,
        |scratch, &(i, path)| {
            // Unreadable files stay files; their error is reported when processed.
            let header = Input::open(path)
                .ok()
                .and_then(|f| input::load(f, scratch, run.budget(), 0).ok())
                .and_then(|l| radveil_deface::series::image_header(l.bytes));
            scratch.release();
            header.map(|h| (i, h))
        },
        |_, found| {
            if let Ok(Some(h)) = found {
                if let Ok(mut all) = headers.lock() {
                    all.push(h);
                }
            }
            Flow::Continue
        },
    );
    let mut header_of: Vec<Option<ImageHeader>> = vec![None; files.len()];
    for (i, h) in headers.into_inner().unwrap_or_default() {
        if let Some(slot) = header_of.get_mut(i) {
            *slot = Some(h);
        }
    }
    // Volumes of CT and MR images; every other file is a file of its own.
    let mut units = Vec::new();
    let mut images = Vec::new();
    for (path, header) in files.into_iter().zip(header_of) {
        match header.filter(|h| matches!(h.modality.as_str(), "CT" | "MR")) {
            Some(h) => images.push((path, h)),
            None => units.push(Unit::File(path)),
        }
    }
    let (groups, loose) = radveil_deface::series::group_volumes(images);
    units.extend(loose.into_iter().map(Unit::File));
    let mut out: Vec<Unit> = groups
        .into_iter()
        .map(|g| Unit::Volume {
            files: g.images,
            duplicates: g.duplicates,
        })
        .collect();
    out.extend(units);
    out
}

/// Defaces one volume and de-identifies its files; `records` gets one record per file.
fn process_volume(
    deface: Option<DefaceOptions>,
    run: &Run,
    paths: &[PathBuf],
    scratch: &mut Scratch,
    records: &mut Vec<Record>,
) {
    let each = |records: &mut Vec<Record>, scratch: &mut Scratch, visual| {
        for p in paths {
            records.push(one_file(run, p, scratch, visual));
        }
    };
    let hold_all = |records: &mut Vec<Record>, why: String| {
        for p in paths {
            records.push(Record::not_written(
                p,
                Status::Held,
                format!("held back: {why}"),
            ));
        }
    };
    let Some(options) = deface else {
        return each(records, scratch, VisualFeatures::Untouched);
    };
    // Each file read and parsed once, defaced and de-identified on the parsed data set,
    // encoded once; unless the files together can never fit in the budget.
    match run.deface_volume(paths, options) {
        VolumeOutcome::Deidentified(outcomes, visual) => {
            for (o, p) in outcomes.into_iter().zip(paths) {
                records.push(o.into_record(p, visual));
            }
            return;
        }
        VolumeOutcome::EachFile(visual) => return each(records, scratch, visual),
        VolumeOutcome::Held(why) => return hold_all(records, why),
        VolumeOutcome::TooLarge => {}
    }
    // Too large to hold parsed whole: the files are read one at a time to assemble the
    // volume, and again to write each. They are read one at a time (regular files only,
    // never blocking), the largest granted before any is read; the decoded pixels are
    // reserved by `assemble` itself.
    let largest = paths
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .max()
        .unwrap_or(0);
    let reading = match run.budget().reserve(largest, radveil_part10::DEFAULT_WAIT) {
        Ok(g) => g,
        Err(e) => return hold_all(records, format!("the volume cannot be defaced: {e}")),
    };
    let assembled = radveil_deface::series::assemble_with_budget(
        paths,
        |p| input::read_regular(p, largest),
        run.budget(),
    );
    drop(reading);
    let mut series = match assembled {
        Ok(s) => s,
        // A localizer or a few images: not a volume a face could be rendered from.
        Err(SeriesError::TooFewSlices(_)) => {
            return each(records, scratch, VisualFeatures::Untouched);
        }
        Err(e) => {
            return hold_all(
                records,
                format!("cannot assemble a volume to look for a face: {e}"),
            )
        }
    };
    // The volume (returned to us to account for) and the mask of removed voxels.
    let voxels = series.volume.data.len() as u64;
    let volume_grant = match run
        .budget()
        .reserve(voxels.saturating_mul(5), radveil_part10::DEFAULT_WAIT)
    {
        Ok(g) => g,
        Err(e) => return hold_all(records, format!("the volume cannot be defaced: {e}")),
    };
    match radveil_deface::deface(&mut series.volume, options) {
        Ok(defaced) => {
            for (n, p) in series.files.iter().enumerate() {
                let outcome = match radveil_deface::series::rewrite_with_budget(
                    &series,
                    n,
                    &defaced.removed,
                    &series.volume.data,
                    run.budget(),
                ) {
                    Ok(bytes) => run.deidentify_reserved(&bytes, VisualFeatures::Cleaned),
                    Err(e) => Outcome::Failed(format!("cannot deface: {e}")),
                };
                records.push(outcome.into_record(p, VisualFeatures::Cleaned));
            }
        }
        Err(radveil_deface::DefaceError::NotAHead(why)) => {
            match radveil_deface::face_check(&series.volume) {
                Ok(fc) if !fc.face_found => {
                    drop(series);
                    drop(volume_grant);
                    each(records, scratch, VisualFeatures::NoneFound);
                }
                Ok(fc) => hold_all(
                    records,
                    format!(
                        "a face is found (score {:.1}) but the volume is not recognised as a head ({why})",
                        fc.score
                    ),
                ),
                Err(e) => hold_all(records, format!("the face check failed: {e}")),
            }
        }
        Err(e) => hold_all(records, format!("defacing {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::sign::testing::{find, unsigned_file};
    use crate::volume::tests::{series, slice};

    fn deidentifier() -> Deidentifier {
        let key = radveil_deid::Key::new(zeroize::Zeroizing::new(vec![b'k'; 40])).unwrap();
        Deidentifier::new(key, radveil_deid::Config::default()).unwrap()
    }

    fn batch<'a>(d: &'a Deidentifier, inputs: &'a [PathBuf], out: &'a Path) -> Batch<'a> {
        Batch {
            deidentifier: d,
            inputs,
            out,
            report: None,
            crosswalk: None,
            jobs: 2,
            memory_limit: 1 << 30,
            resume: false,
            deface: None,
        }
    }

    /// Counts what a batch reports.
    #[derive(Default)]
    struct Counter {
        total: AtomicU64,
        done: AtomicU64,
    }

    impl Progress for Counter {
        fn start(&self, total: u64) {
            self.total.store(total, Ordering::Relaxed);
        }
        fn advance(&self, n: u64) {
            self.done.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn sorted(mut v: Vec<PathBuf>) -> Vec<PathBuf> {
        v.sort();
        v
    }

    #[test]
    fn planning_groups_ct_and_mr_series_and_leaves_other_files_as_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mr = series(tmp.path(), 10);
        // A second copy of one slice: never written (undefaced, it would show the face).
        let copy = tmp.path().join("copy-of-3.dcm");
        std::fs::copy(&mr[3], &copy).unwrap();
        // The same geometry, but ultrasound: no face to deface.
        let mut us = Vec::new();
        for z in 0..10 {
            let mut bytes = slice(z, "DOE^JANE");
            let at = find(&bytes, b"CS\x02\x00MR");
            bytes[at + 4..at + 6].copy_from_slice(b"US");
            let p = tmp.path().join(format!("us{z}.dcm"));
            std::fs::write(&p, bytes).unwrap();
            us.push(p);
        }
        // A CT image without plane geometry, and a file that is not DICOM.
        let ct = tmp.path().join("ct.dcm");
        std::fs::write(&ct, unsigned_file()).unwrap();
        let junk = tmp.path().join("junk");
        std::fs::write(&junk, b"not dicom").unwrap();

        let mut files = mr.clone();
        files.push(copy.clone());
        files.extend(us.iter().cloned());
        files.push(ct.clone());
        files.push(junk.clone());
        let run = Run::new(
            deidentifier(),
            &tmp.path().join("out"),
            &Settings {
                memory_limit: 1 << 30,
                resume: false,
            },
        )
        .unwrap();
        let units = plan_volumes(files, 2, &run);
        assert_eq!(run.budget().in_use(), 0);

        // The volume first, then every other input as a file of its own.
        let Some(Unit::Volume { files, duplicates }) = units.first() else {
            panic!("{units:?}");
        };
        assert_eq!(sorted(files.clone()), sorted(mr));
        assert_eq!(duplicates, &vec![copy]);
        let mut rest = Vec::new();
        for u in &units[1..] {
            match u {
                Unit::File(p) => rest.push(p.clone()),
                other => panic!("a second unit that is not a file: {other:?}"),
            }
        }
        let mut expected = us;
        expected.push(ct);
        expected.push(junk);
        assert_eq!(sorted(rest), sorted(expected));
    }

    #[test]
    fn refused_inputs_are_counted_and_every_input_has_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.dcm"), unsigned_file()).unwrap();
        std::fs::write(dir.join("junk"), b"not dicom").unwrap();
        // Met while walking: skipped. Named and missing: failed.
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), dir.join("dangling")).unwrap();
        let inputs = vec![dir, tmp.path().join("missing.dcm")];
        let out = tmp.path().join("out");
        let report = tmp.path().join("report.jsonl");
        let d = deidentifier();
        let progress = Counter::default();
        let done = run(
            &Batch {
                report: Some(&report),
                ..batch(&d, &inputs, &out)
            },
            &progress,
        )
        .unwrap();
        let s = done.summary;
        assert_eq!(
            (s.written, s.failed, s.skipped, s.held, s.duplicate, s.kept),
            (1, 2, 1, 0, 0, 0),
            "{s:?}"
        );
        assert_eq!(done.total, 4);
        assert_eq!(s.total(), done.total);
        assert_eq!(progress.total.load(Ordering::Relaxed), 4);
        assert_eq!(progress.done.load(Ordering::Relaxed), 4);
        let lines = std::fs::read_to_string(&report).unwrap();
        assert_eq!(lines.lines().count(), 4, "{lines}");
        assert!(lines.contains("missing.dcm") && lines.contains("dangling"));
        assert_eq!(done.stale_removed, 0);
    }

    #[test]
    fn a_unit_that_panicked_fails_every_one_of_its_files() {
        let (a, b, c) = ("a.dcm".into(), "b.dcm".into(), "c.dcm".into());
        let unit = Unit::Volume {
            files: vec![a, b],
            duplicates: vec![c],
        };
        let records = unit.records(Err(Panicked));
        let inputs: Vec<&str> = records.iter().map(|r| r.input.as_str()).collect();
        assert_eq!(inputs, ["a.dcm", "b.dcm", "c.dcm"]);
        for r in &records {
            assert_eq!(r.status, Status::Failed);
            assert!(r.output.is_none());
            assert!(r.reason.as_deref().unwrap().contains("internal error"));
        }
        // What the work returned is kept as it is.
        let one = Unit::File("x".into());
        let r = one.records(Ok(vec![Record::not_written(
            Path::new("x"),
            Status::Held,
            "why",
        )]));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, Status::Held);
    }

    #[test]
    fn a_volume_too_large_to_hold_parsed_whole_is_read_a_file_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        // Ten slices with long headers: about 35 KB together, but the volume assembled from
        // their pixels (and its mask) takes about 13 KB.
        let name = format!("DOE^{}", "J".repeat(3000));
        for z in 0..10 {
            std::fs::write(dir.join(format!("{z}.dcm")), slice(z, &name)).unwrap();
        }
        let limit = 24 << 10;
        let paths: Vec<PathBuf> = (0..10).map(|z| dir.join(format!("{z}.dcm"))).collect();
        let whole = Run::new(
            deidentifier(),
            &tmp.path().join("whole"),
            &Settings {
                memory_limit: limit,
                resume: false,
            },
        )
        .unwrap();
        assert!(matches!(
            whole.deface_volume(&paths, DefaceOptions::default()),
            VolumeOutcome::TooLarge
        ));
        drop(whole);
        let out = tmp.path().join("out");
        let report = tmp.path().join("report.jsonl");
        let d = deidentifier();
        let inputs = vec![dir];
        let done = run(
            &Batch {
                report: Some(&report),
                memory_limit: limit,
                deface: Some(DefaceOptions::default()),
                ..batch(&d, &inputs, &out)
            },
            &(),
        )
        .unwrap();
        // The volume was assembled one file at a time and looked at: ten flat slices are
        // no head, and hold nothing to find a face on, so the volume is held whole.
        let lines = std::fs::read_to_string(&report).unwrap();
        assert!(!lines.contains("DOE"), "{lines}");
        assert_eq!(done.total, 10);
        assert_eq!(done.summary.held, 10, "{lines}");
        let why = "held back: the face check failed: the volume holds nothing above its background";
        assert_eq!(lines.matches(why).count(), 10, "{lines}");
    }
}
