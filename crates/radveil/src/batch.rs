//! `radveil deid` as a batch: the wiring of `radveil-pipeline` (inputs walked, a worker pool
//! over a shared run, the report and the crosswalk prepared before any work) and, under the
//! Clean Recognizable Visual Features option, of `radveil-deface`.
//!
//! Under that option the unit of work is a volume, not a file: CT and MR images are grouped
//! by series (single-frame slices of one orientation and matrix, or one multi-frame image),
//! each volume is defaced and checked for a face, and its files are then de-identified one
//! by one. A volume that shows a face and cannot be defaced is held back whole.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use radveil_deface::series::SeriesError;
use radveil_deid::{Deidentifier, VisualFeatures};
use radveil_pipeline::input::{self, Input, Scratch};
use radveil_pipeline::pool::{Flow, Pool};
use radveil_pipeline::report::{Crosswalk, Record, Report, Status, Summary};
use radveil_pipeline::volume::VolumeOutcome;
use radveil_pipeline::{Outcome, Run, Settings, DUPLICATE_REASON};

/// What one batch run is asked to do.
pub struct Batch<'a> {
    pub deidentifier: &'a Deidentifier,
    pub inputs: &'a [PathBuf],
    pub out: &'a Path,
    pub report: Option<&'a Path>,
    pub crosswalk: Option<&'a Path>,
    pub jobs: usize,
    /// Bytes of memory all workers share.
    pub memory_limit: u64,
    /// Keep identical outputs of an earlier run of the same work.
    pub resume: bool,
    /// Set under the Clean Recognizable Visual Features option: how head volumes are defaced.
    pub deface: Option<radveil_deface::DefaceOptions>,
}

/// One unit of work: a file, or the files of one volume (defaced together) with the other
/// copies of its images found in the batch (reported as duplicates, never written: one of
/// them written undefaced would leak the face).
enum Unit {
    File(PathBuf),
    Volume {
        files: Vec<PathBuf>,
        duplicates: Vec<PathBuf>,
    },
}

impl Unit {
    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        let (files, duplicates) = match self {
            Unit::File(p) => (std::slice::from_ref(p), &[][..]),
            Unit::Volume { files, duplicates } => (&files[..], &duplicates[..]),
        };
        files.iter().chain(duplicates)
    }
}

/// Runs the batch and prints a summary on standard error.
pub fn run(batch: &Batch<'_>) -> Result<Summary> {
    let started = Instant::now();
    // Everything that could stop the run is checked before any work: the report and the
    // crosswalk are prepared (their names free, temporaries made beside them) and the output
    // directory is opened and locked.
    let mut report = Report::new(batch.report).context("report")?;
    let crosswalk = match batch.crosswalk {
        Some(dir) => Some(Crosswalk::prepare(dir).context("crosswalk")?),
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
    .context("output directory")?;

    let walked = radveil_pipeline::walk::collect(batch.inputs, run.budget());
    for r in &walked.refused {
        let status = if r.named {
            Status::Failed
        } else {
            Status::Skipped
        };
        report.record(&Record::not_written(&r.path, status, r.reason.clone()));
    }
    let total = walked.files.len() + walked.refused.len();
    let units = match batch.deface {
        Some(_) => plan_volumes(walked.files, batch.jobs, &run),
        None => walked.files.into_iter().map(Unit::File).collect(),
    };
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} files ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.inc(walked.refused.len() as u64);

    // Report lines are streamed as inputs finish, so memory does not grow with the batch;
    // a report that cannot be written stops the run (it could not be complete).
    let report = Mutex::new(report);
    let finished = Pool::new(batch.jobs).run(
        &units,
        Scratch::new,
        |scratch, unit| process_unit(batch, &run, unit, scratch),
        |unit, result| {
            let records = result.unwrap_or_else(|panicked| {
                unit.files()
                    .map(|p| Record::not_written(p, Status::Failed, panicked.to_string()))
                    .collect()
            });
            progress.inc(records.len() as u64);
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
    progress.finish_and_clear();
    let report = report
        .into_inner()
        .map_err(|_| anyhow::anyhow!("internal error: report lock poisoned"))?;
    let counted = report.summary().total();
    if !finished.stopped && counted != total {
        bail!(
            "internal error: {} inputs without a result",
            total.saturating_sub(counted)
        );
    }
    let stale = run.stale_removed();
    if let Some(c) = crosswalk {
        c.write(&run.into_crosswalk()).context("crosswalk")?;
    }
    let summary = report.finish().context("report")?;
    let secs = started.elapsed().as_secs_f64();
    let kept = if summary.kept > 0 || batch.resume {
        format!(", {} kept from an earlier run", summary.kept)
    } else {
        String::new()
    };
    let swept = if stale > 0 {
        format!("; {stale} temporaries of an interrupted run removed")
    } else {
        String::new()
    };
    eprintln!(
        "radveil deid: {} written{kept}, {} held back, {} failed, {} duplicate, {} skipped in {:.1} s ({:.0} files/s){swept}",
        summary.written,
        summary.held,
        summary.failed,
        summary.duplicate,
        summary.skipped,
        secs,
        total as f64 / secs.max(1e-9)
    );
    Ok(summary)
}

/// Works on one unit; one record per file.
fn process_unit(batch: &Batch<'_>, run: &Run, unit: &Unit, scratch: &mut Scratch) -> Vec<Record> {
    match unit {
        Unit::File(path) => vec![one_file(run, path, scratch, VisualFeatures::Untouched)],
        Unit::Volume { files, duplicates } => {
            let mut records = Vec::with_capacity(files.len() + duplicates.len());
            process_volume(batch, run, files, scratch, &mut records);
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
fn plan_volumes(files: Vec<PathBuf>, jobs: usize, run: &Run) -> Vec<Unit> {
    let headers: Mutex<Vec<(usize, radveil_deface::series::ImageHeader)>> = Mutex::default();
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
    let mut header_of: Vec<Option<radveil_deface::series::ImageHeader>> = vec![None; files.len()];
    for (i, h) in headers.into_inner().unwrap_or_default() {
        header_of[i] = Some(h);
    }
    // Volumes of CT and MR images; every other file is a file of its own.
    let mut units = Vec::new();
    let mut images = Vec::new();
    for (i, path) in files.into_iter().enumerate() {
        match header_of[i]
            .take()
            .filter(|h| matches!(h.modality.as_str(), "CT" | "MR"))
        {
            Some(h) => images.push((path, h)),
            None => units.push(Unit::File(path)),
        }
    }
    let (groups, loose) = radveil_deface::series::group_volumes(images);
    units.extend(loose.into_iter().map(Unit::File));
    // Volumes first: they take longest, so the files fill in around them.
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
    batch: &Batch<'_>,
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
    let Some(options) = batch.deface else {
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
        VolumeOutcome::Held(why) => {
            for p in paths {
                records.push(Record::not_written(
                    p,
                    Status::Held,
                    format!("held back: {why}"),
                ));
            }
            return;
        }
        VolumeOutcome::TooLarge => {}
    }
    // Too large to hold parsed whole: the files are read one at a time to assemble the
    // volume, and again to write each.
    let hold_all = |records: &mut Vec<Record>, why: String| {
        for p in paths {
            records.push(Record::not_written(
                p,
                Status::Held,
                format!("held back: {why}"),
            ));
        }
    };
    // The files are read one at a time (regular files only, never blocking), the largest
    // granted before any is read; the decoded pixels are reserved by `assemble` itself.
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
