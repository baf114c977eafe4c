//! A de-identification batch: inputs walked, files processed on all cores, outputs written
//! atomically and never over an existing file, one report line per input. One bad file never
//! stops the batch; memory is bounded by the number of workers, not by the batch.
//!
//! Under the Clean Recognizable Visual Features option the unit of work is a volume, not a
//! file: CT and MR images are grouped by series (single-frame slices of one orientation and
//! matrix, or one multi-frame image), each volume is defaced and checked for a face, and
//! its files are then de-identified one by one. A volume that shows a face and cannot be
//! defaced is held back whole.

use std::collections::{BTreeSet, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use radveil_deface::series::SeriesError;
use radveil_deid::{ActionCounts, DeidError, Deidentifier, VisualFeatures};
use serde::Serialize;

/// What one batch run is asked to do.
pub struct Batch<'a> {
    pub deidentifier: &'a Deidentifier,
    pub inputs: &'a [PathBuf],
    pub out: &'a Path,
    pub report: Option<&'a Path>,
    pub crosswalk: Option<&'a Path>,
    pub jobs: usize,
    /// Set under the Clean Recognizable Visual Features option: how head volumes are defaced.
    pub deface: Option<radveil_deface::DefaceOptions>,
}

/// The fate of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// De-identified and written.
    Written,
    /// Readable DICOM, deliberately not written (possible burned-in text).
    Held,
    /// Not readable, not DICOM, or not writable.
    Failed,
    /// Another input in this run has the same SOP instance.
    Duplicate,
    /// Left out by design (a DICOMDIR).
    Skipped,
}

/// One report line. Holds no PHI: paths as the operator gave them, reasons from the reader
/// (offsets and tags, never values), and counts.
#[derive(Debug, Serialize)]
struct Record {
    input: String,
    status: Status,
    output: Option<String>,
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actions: Option<ActionCounts>,
    /// What the Clean Recognizable Visual Features option did: `cleaned` (defaced) or
    /// `none-found` (the volume shows no face).
    #[serde(skip_serializing_if = "Option::is_none")]
    visual_features: Option<&'static str>,
}

impl Record {
    fn failed(input: &Path, status: Status, reason: String) -> Record {
        Record {
            input: input.display().to_string(),
            status,
            output: None,
            reason: Some(reason),
            actions: None,
            visual_features: None,
        }
    }
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

/// What every worker shares: SOP instances already written and the crosswalk.
struct Shared {
    claimed: Mutex<HashSet<u128>>,
    crosswalk: Mutex<BTreeSet<(&'static str, String, String)>>,
}

/// Totals of a run.
#[derive(Debug, Default)]
pub struct Summary {
    pub written: usize,
    pub held: usize,
    pub failed: usize,
    pub duplicate: usize,
    pub skipped: usize,
}

impl Summary {
    /// Whether nothing was held back or lost.
    pub fn all_written(&self) -> bool {
        self.held == 0 && self.failed == 0 && self.duplicate == 0
    }
}

/// Runs the batch and prints a summary on standard error.
pub fn run(batch: &Batch<'_>) -> Result<Summary> {
    let started = Instant::now();
    // Refuse to clobber earlier reports and crosswalks before doing any work.
    let report_file = match batch.report {
        Some(p) => Some(create_new(p, false).with_context(|| format!("report {}", p.display()))?),
        None => None,
    };
    if let Some(dir) = batch.crosswalk {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("crosswalk directory {}", dir.display()))?;
        for name in CROSSWALK_FILES {
            if dir.join(name).exists() {
                bail!(
                    "{} exists; crosswalks are never overwritten",
                    dir.join(name).display()
                );
            }
        }
    }
    std::fs::create_dir_all(batch.out)
        .with_context(|| format!("creating output directory {}", batch.out.display()))?;

    // Report lines are streamed as inputs finish, so memory does not grow with the batch.
    let sink = Mutex::new(Sink {
        report: report_file.map(std::io::BufWriter::new),
        summary: Summary::default(),
        error: None,
    });
    let (files, walk_errors) = crate::inputs::collect(batch.inputs);
    if let Ok(mut s) = sink.lock() {
        for (path, reason) in walk_errors {
            s.record(&Record::failed(&path, Status::Failed, reason));
        }
    }
    let total = files.len();
    let units = match batch.deface {
        Some(_) => plan_volumes(files, batch.jobs),
        None => files.into_iter().map(Unit::File).collect(),
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

    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let shared = Shared {
        claimed: Mutex::new(HashSet::new()),
        crosswalk: Mutex::new(BTreeSet::new()),
    };
    std::thread::scope(|s| {
        for _ in 0..batch.jobs.min(units.len().max(1)) {
            let worker = std::thread::Builder::new().stack_size(16 << 20);
            let spawned = worker.spawn_scoped(s, || {
                // One input buffer per worker, reused: memory is bounded by the workers.
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(unit) = units.get(i) else { break };
                    let mut finished = |record: Record| {
                        if let Ok(mut s) = sink.lock() {
                            s.record(&record);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        progress.inc(1);
                    };
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut records = Vec::new();
                        match unit {
                            Unit::File(path) => records.push(process(
                                batch,
                                path,
                                &shared,
                                &mut buf,
                                VisualFeatures::Untouched,
                            )),
                            Unit::Volume { files, duplicates } => {
                                process_volume(batch, files, &shared, &mut buf, &mut records);
                                for p in duplicates {
                                    records.push(Record::failed(
                                        p,
                                        Status::Duplicate,
                                        "same SOP instance as another input of this run; not written".into(),
                                    ));
                                }
                            }
                        }
                        records
                    }));
                    match outcome {
                        Ok(records) => records.into_iter().for_each(&mut finished),
                        Err(_) => {
                            for path in unit.files() {
                                finished(Record::failed(
                                    path,
                                    Status::Failed,
                                    "internal error (a bug in radveil; please report it)".into(),
                                ));
                            }
                        }
                    }
                    if buf.capacity() > 64 << 20 {
                        buf = Vec::new(); // do not hold on to a very large file's buffer
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!("could not start a worker thread: {e}");
            }
        }
    });
    progress.finish_and_clear();

    let Sink {
        report,
        summary,
        error,
    } = sink
        .into_inner()
        .map_err(|_| anyhow::anyhow!("internal error: report lock poisoned"))?;
    if let Some(e) = error {
        return Err(e).context("writing the report");
    }
    if let Some(mut w) = report {
        w.flush().context("writing the report")?;
    }
    let finished = done.into_inner();
    if finished != total {
        bail!(
            "internal error: {} inputs without a result (could not start workers?)",
            total - finished
        );
    }
    if let Some(dir) = batch.crosswalk {
        write_crosswalk(dir, &shared.crosswalk.into_inner().unwrap_or_default())?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "radveil deid: {} written, {} held back, {} failed, {} duplicate, {} skipped in {:.1} s ({:.0} files/s)",
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

/// Where finished inputs go: the report file and the running totals.
struct Sink {
    report: Option<std::io::BufWriter<std::fs::File>>,
    summary: Summary,
    error: Option<std::io::Error>,
}

impl Sink {
    fn record(&mut self, r: &Record) {
        match r.status {
            Status::Written => self.summary.written += 1,
            Status::Held => self.summary.held += 1,
            Status::Failed => self.summary.failed += 1,
            Status::Duplicate => self.summary.duplicate += 1,
            Status::Skipped => self.summary.skipped += 1,
        }
        if self.error.is_some() {
            return;
        }
        if let Some(w) = self.report.as_mut() {
            let line = serde_json::to_writer(&mut *w, r)
                .map_err(std::io::Error::from)
                .and_then(|()| w.write_all(b"\n"));
            if let Err(e) = line {
                self.error = Some(e);
            }
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

const CROSSWALK_FILES: [&str; 2] = ["patient_ids.csv", "uids.csv"];

/// Groups the inputs into units: the CT and MR images that could show a face are grouped
/// into volumes (read from their headers on all workers); everything else stays a file.
fn plan_volumes(files: Vec<PathBuf>, jobs: usize) -> Vec<Unit> {
    let next = AtomicUsize::new(0);
    let headers: Mutex<Vec<(usize, radveil_deface::series::ImageHeader)>> = Mutex::default();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(files.len()).max(1) {
            s.spawn(|| {
                let mut buf = Vec::new();
                let mut found = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    // Unreadable files stay files; their error is reported when processed.
                    if read_input(path, &mut buf).is_ok() {
                        if let Some(h) = radveil_deface::series::image_header(&buf) {
                            found.push((i, h));
                        }
                    }
                }
                if let Ok(mut h) = headers.lock() {
                    h.extend(found);
                }
            });
        }
    });
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
    paths: &[PathBuf],
    shared: &Shared,
    buf: &mut Vec<u8>,
    records: &mut Vec<Record>,
) {
    let Some(options) = batch.deface else {
        for p in paths {
            records.push(process(batch, p, shared, buf, VisualFeatures::Untouched));
        }
        return;
    };
    let hold_all = |records: &mut Vec<Record>, why: String| {
        for p in paths {
            records.push(Record::failed(p, Status::Held, format!("held back: {why}")));
        }
    };
    let mut series = match radveil_deface::series::assemble(paths) {
        Ok(s) => s,
        // A localizer or a few images: not a volume a face could be rendered from.
        Err(SeriesError::TooFewSlices(_)) => {
            for p in paths {
                records.push(process(batch, p, shared, buf, VisualFeatures::Untouched));
            }
            return;
        }
        Err(e) => {
            return hold_all(
                records,
                format!("cannot assemble a volume to look for a face: {e}"),
            )
        }
    };
    match radveil_deface::deface(&mut series.volume, options) {
        Ok(defaced) => {
            for (n, p) in series.files.iter().enumerate() {
                let record = match radveil_deface::series::rewrite(
                    &series,
                    n,
                    &defaced.removed,
                    &series.volume.data,
                ) {
                    Ok(bytes) => finish(batch, p, &bytes, None, shared, VisualFeatures::Cleaned),
                    Err(e) => Record::failed(p, Status::Failed, format!("cannot deface: {e}")),
                };
                records.push(record);
            }
        }
        Err(radveil_deface::DefaceError::NotAHead(why)) => {
            match radveil_deface::face_check(&series.volume) {
                Ok(fc) if !fc.face_found => {
                    for p in paths {
                        records.push(process(batch, p, shared, buf, VisualFeatures::NoneFound));
                    }
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

/// Reads and de-identifies one file.
fn process(
    batch: &Batch<'_>,
    path: &Path,
    shared: &Shared,
    buf: &mut Vec<u8>,
    visual: VisualFeatures,
) -> Record {
    let source = match read_input(path, buf) {
        Ok(s) => s,
        Err(e) => return Record::failed(path, Status::Failed, format!("cannot read: {e}")),
    };
    if buf.is_empty() {
        return Record::failed(path, Status::Failed, "empty file".into());
    }
    finish(batch, path, buf, Some(&source), shared, visual)
}

/// De-identifies one file's bytes (`source`: the rest of the input file, when `bytes` stop
/// before its pixel data) and writes the result.
fn finish(
    batch: &Batch<'_>,
    path: &Path,
    bytes: &[u8],
    source: Option<&Source>,
    shared: &Shared,
    visual: VisualFeatures,
) -> Record {
    let fail = |status: Status, reason: String| Record::failed(path, status, reason);
    let outcome = match batch.deidentifier.deidentify_with(bytes, visual) {
        Ok(o) => o,
        Err(e @ DeidError::HeldBack(_)) => return fail(Status::Held, e.to_string()),
        Err(e @ DeidError::Dicomdir) => return fail(Status::Skipped, e.to_string()),
        Err(e) => return fail(Status::Failed, e.to_string()),
    };
    let id = &outcome.identity;
    {
        let Ok(mut c) = shared.claimed.lock() else {
            return fail(Status::Failed, "internal error: lock poisoned".into());
        };
        if !c.insert(fingerprint(&id.sop_instance_uid)) {
            return fail(
                Status::Duplicate,
                "same SOP instance as another input of this run; not written".into(),
            );
        }
    }
    let dir = batch
        .out
        .join(safe_component(&id.patient))
        .join(safe_component(&id.study_uid))
        .join(safe_component(&id.series_uid));
    let target = dir.join(format!("{}.dcm", safe_component(&id.sop_instance_uid)));
    if let Err(e) = write_atomically(&dir, &target, &outcome.file, source) {
        return fail(Status::Failed, e);
    }
    if !outcome.crosswalk.is_empty() {
        if let Ok(mut c) = shared.crosswalk.lock() {
            for e in &outcome.crosswalk {
                c.insert((e.kind, e.old.clone(), e.new.clone()));
            }
        }
    }
    Record {
        input: path.display().to_string(),
        status: Status::Written,
        output: Some(target.display().to_string()),
        reason: None,
        actions: Some(outcome.counts),
        visual_features: match visual {
            VisualFeatures::Cleaned => Some("cleaned"),
            VisualFeatures::NoneFound => Some("none-found"),
            VisualFeatures::Untouched => None,
        },
    }
}

/// Writes to a temporary file beside the target, then links it into place only if the target
/// does not exist: readers never see a partial file, and no earlier output is overwritten.
fn write_atomically(
    dir: &Path,
    target: &Path,
    file: &radveil_part10::Encoded<'_>,
    source: Option<&Source>,
) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create output directory: {e}"))?;
    if target.exists() {
        return Err(format!(
            "output {} exists; not overwritten",
            target.display()
        ));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".radveil-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create temporary file: {e}"))?;
    {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, tmp.as_file_mut());
        file.write_to(&mut w)
            .and_then(|()| w.flush())
            .map_err(|e| format!("cannot write output: {e}"))?;
    }
    if let Some(tail) = source.and_then(|s| s.tail.as_ref()) {
        copy_tail(tail, tmp.as_file_mut()).map_err(|e| format!("cannot write output: {e}"))?;
    }
    tmp.persist_noclobber(target).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            format!("output {} exists; not overwritten", target.display())
        } else {
            format!("cannot move output into place: {}", e.error)
        }
    })?;
    Ok(())
}

/// Files at least this large are read in two steps: the part before the pixel data, then
/// (when the pixel data ends the file) the pixel data copied file to file by the kernel.
const SPLIT_READ_MIN: u64 = 512 * 1024;
/// How much of a large file is read to find its pixel data: a little first (most headers
/// are a few kilobytes), then more.
const PREFIX_LENS: [usize; 2] = [16 * 1024, 256 * 1024];

/// The input as read: `buf` holds the file, or the part before a trailing Pixel Data element
/// that is still to be copied from `tail`.
pub struct Source {
    tail: Option<Tail>,
}

/// A byte range of the input file to copy verbatim after the de-identified part.
struct Tail {
    file: std::fs::File,
    offset: u64,
    len: u64,
}

/// Reads an input into `buf`, reusing its allocation. A large file whose pixel data ends it
/// is read only up to the pixel data: the element is copied to the output later without
/// passing through memory (pixel data is never changed by de-identification).
fn read_input(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<Source> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    buf.clear();
    if len >= SPLIT_READ_MIN {
        for prefix in PREFIX_LENS {
            buf.reserve(prefix.saturating_sub(buf.len()));
            (&mut f)
                .take((prefix - buf.len().min(prefix)) as u64)
                .read_to_end(buf)?;
            if let Some(at) = radveil_part10::trailing_pixel_data(buf, len) {
                buf.truncate(at);
                return Ok(Source {
                    tail: Some(Tail {
                        file: f,
                        offset: at as u64,
                        len: len - at as u64,
                    }),
                });
            }
        }
    }
    buf.reserve((len as usize).saturating_sub(buf.len()).saturating_add(1));
    f.read_to_end(buf)?;
    Ok(Source { tail: None })
}

/// Copies the tail of the input into the output (`copy_file_range` where the kernel has it).
fn copy_tail(tail: &Tail, out: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    let mut f = &tail.file;
    f.seek(std::io::SeekFrom::Start(tail.offset))?;
    let copied = std::io::copy(&mut f.take(tail.len), out)?;
    if copied != tail.len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the input shrank while it was being de-identified",
        ));
    }
    Ok(())
}

/// A path component made only of characters that are safe in every file system.
fn safe_component(s: &str) -> String {
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

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_crosswalk(dir: &Path, entries: &BTreeSet<(&'static str, String, String)>) -> Result<()> {
    for (name, kind) in CROSSWALK_FILES.iter().zip(["patient_id", "uid"]) {
        let path = dir.join(name);
        let mut w = std::io::BufWriter::new(create_new(&path, true)?);
        writeln!(w, "id_old,id_new")?;
        for (_, old, new) in entries.iter().filter(|(k, _, _)| *k == kind) {
            writeln!(w, "{},{}", csv_field(old), csv_field(new))?;
        }
        w.flush()?;
    }
    Ok(())
}

/// Creates a file that must not exist yet; `private` makes it mode 0600.
fn create_new(path: &Path, private: bool) -> Result<std::fs::File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if private {
            opts.mode(0o600);
        }
    }
    #[cfg(not(unix))]
    let _ = private;
    opts.open(path).with_context(|| {
        format!(
            "creating {} (existing files are never overwritten)",
            path.display()
        )
    })
}
