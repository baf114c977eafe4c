//! Verifying one file's digital signatures (PS3.15 Annex C) into [`Finding`]s: one per
//! signature, plus what else was asked (a required profile, the binding hash) and the
//! advisory checks of the image. Each finding prints as one line, tab-separated or JSON.

use std::fmt;
use std::path::{Path, PathBuf};

use radveil_integrity::advisory::{self, ImageGeometry};
use radveil_integrity::{
    Outcome, SignatureError, SignatureProfile, SignatureReport, TimestampOutcome, TrustStore,
};
use radveil_part10 as p10;
use radveil_part10::MemoryBudget;

use crate::observe::ImageCheck;
use crate::ordered::{map_in_order, FromPanic, Tally};
use crate::pool::{Panicked, Pool};
use crate::whole::{read_whole, WholeFile};

/// What a line of `radveil verify` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The file could not be read or parsed.
    Unreadable,
    /// A finding to look at (equipment, geometry), not a failure.
    Advisory,
    /// The transparency ledger's verdict on the image.
    Ledger(radveil_ledger::Status),
    /// A valid signature satisfies the required profile.
    Profile,
    /// No valid signature satisfies the required profile.
    Insufficient,
    /// The image's binding hash.
    Binding,
    /// The binding hash could not be computed.
    BindingUnavailable,
    /// The file has no digital signature.
    Unsigned,
    /// A signature verifies.
    Valid,
    /// A signature verifies but has no valid certified timestamp, and one is required.
    Unstamped,
    /// A signature verifies, but its signer is not trusted.
    Untrusted,
    /// A signature does not verify.
    Invalid,
}

impl Status {
    /// Whether a line with this status fails the run; `allow_unsigned` accepts unsigned
    /// files.
    pub fn fails(self, allow_unsigned: bool) -> bool {
        match self {
            Status::Unreadable
            | Status::Insufficient
            | Status::Unstamped
            | Status::Untrusted
            | Status::Invalid => true,
            Status::Unsigned => !allow_unsigned,
            Status::Ledger(s) => s != radveil_ledger::Status::Proven,
            Status::Valid
            | Status::Advisory
            | Status::Profile
            | Status::Binding
            | Status::BindingUnavailable => false,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Unreadable => "unreadable",
            Status::Advisory => "advisory",
            Status::Ledger(s) => return write!(f, "ledger-{s}"),
            Status::Profile => "profile",
            Status::Insufficient => "insufficient",
            Status::Binding => "binding",
            Status::BindingUnavailable => "binding-unavailable",
            Status::Unsigned => "unsigned",
            Status::Valid => "valid",
            Status::Unstamped => "unstamped",
            Status::Untrusted => "untrusted",
            Status::Invalid => "invalid",
        })
    }
}

/// One line of a verification: a status, its detail (no value taken from the file but the
/// signer's certificate subject) and, for a signature, its report.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What it says.
    pub status: Status,
    /// Why, or the value asked for.
    pub detail: String,
    /// The signature it is about.
    pub signature: Option<Box<SignatureReport>>,
}

impl Finding {
    /// A finding not about one signature.
    pub fn new(status: Status, detail: impl Into<String>) -> Finding {
        Finding {
            status,
            detail: detail.into(),
            signature: None,
        }
    }

    /// The line for `path`: tab-separated, or a JSON object.
    pub fn line<'a>(&'a self, path: &'a Path, json: bool) -> Line<'a> {
        Line {
            finding: self,
            path,
            json,
        }
    }

    fn json(&self, path: &Path) -> serde_json::Value {
        let mut v = serde_json::json!({
            "input": path.display().to_string(),
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        let Some(r) = &self.signature else {
            return v;
        };
        v["signature_uid"] = r.uid.clone().into();
        v["location"] = r.location.clone().into();
        v["mac"] = r.mac.map(|m| m.term()).into();
        v["signer"] = r.signer.clone().into();
        v["signer_sha256"] = r.fingerprint.clone().into();
        v["datetime"] = r.datetime.clone().into();
        v["purpose"] = r.purpose.clone().into();
        if let Some(t) = &r.timestamp {
            let (status, detail) = match &t.outcome {
                TimestampOutcome::Valid => ("valid", String::new()),
                TimestampOutcome::Untrusted(w) => ("untrusted", w.clone()),
                TimestampOutcome::Invalid(w) => ("invalid", w.clone()),
            };
            v["timestamp"] = serde_json::json!({
                "status": status,
                "detail": detail,
                "time": t.time_text,
                "tsa": t.tsa,
                "serial": t.serial,
                "policy": t.policy,
            });
        }
        v["covered"] = r
            .covered
            .iter()
            .map(|t| format!("{:04X},{:04X}", t >> 16, t & 0xFFFF))
            .collect::<Vec<_>>()
            .into();
        v
    }
}

/// A [`Finding`] printed for a path: `STATUS<TAB>PATH<TAB>DETAIL[<TAB>SIGNER]`, or one JSON
/// object.
#[derive(Debug)]
pub struct Line<'a> {
    finding: &'a Finding,
    path: &'a Path,
    json: bool,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Finding {
            status,
            detail,
            signature,
        } = self.finding;
        if self.json {
            return write!(f, "{}", self.finding.json(self.path));
        }
        write!(f, "{status}\t{}\t{detail}", self.path.display())?;
        if let Some(r) = signature {
            write!(f, "\t{}", r.signer)?;
        }
        Ok(())
    }
}

/// The largest certificate file read (`--cert`, `--trust`, `--intermediate`): far above
/// any real bundle, and bounded.
pub const MAX_CERTIFICATES: u64 = 16 << 20;

/// Why certificates named by the operator could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The file could not be read: missing, not a regular file, or too large.
    #[error("reading {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no certificate, or one that does not parse.
    #[error("{}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SignatureError,
    },
}

/// Reads a certificate file (PEM or DER) named by the operator: a regular file only (a FIFO
/// or device is refused, never waited on), at most [`MAX_CERTIFICATES`] bytes.
pub fn read_certificates(path: &Path) -> Result<Vec<u8>, CertificateError> {
    crate::input::read_regular(path, MAX_CERTIFICATES).map_err(|source| CertificateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The trust store of the certificates in the files `anchors` (trusted), and of those in
/// `intermediates` (used to chain a signer to an anchor, not trusted themselves).
pub fn trust_store(
    anchors: &[PathBuf],
    intermediates: &[PathBuf],
) -> Result<TrustStore, CertificateError> {
    let mut trust = TrustStore::default();
    let parse = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertificateError::Parse { path, source }
    };
    for path in anchors {
        trust.add(&read_certificates(path)?).map_err(parse(path))?;
    }
    for path in intermediates {
        (trust.add_intermediates(&read_certificates(path)?)).map_err(parse(path))?;
    }
    Ok(trust)
}

/// The time now, in seconds since the epoch, that certificates are checked at.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What every file of a verification is checked for.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    /// Trusted certificates; empty: signatures are checked, signers not.
    pub trust: &'a TrustStore,
    /// The time certificates are checked at (seconds since the epoch).
    pub now: i64,
    /// A profile some valid signature must satisfy.
    pub required: Option<SignatureProfile>,
    /// Report the binding hash.
    pub binding: bool,
    /// A valid signature needs a valid certified timestamp.
    pub require_timestamp: bool,
}

/// The verification of one file.
#[derive(Debug, Default)]
pub struct Verified {
    /// Its lines, in order.
    pub findings: Vec<Finding>,
    /// What it contributes to the series checks (see [`series_findings`]).
    pub geometry: Option<ImageGeometry>,
}

impl FromPanic for Verified {
    /// A file whose verification panicked (a bug): one `unreadable` line.
    fn from_panic(panicked: Panicked) -> Verified {
        Verified {
            findings: vec![Finding::new(Status::Unreadable, panicked.to_string())],
            geometry: None,
        }
    }
}

/// What a transparency ledger says of one image (see [`crate::ledger::Verified`]).
pub type LedgerCheck<'a> = dyn Fn(&Path) -> ImageCheck + Sync + 'a;

/// Verifying a batch of files.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    /// What each file is checked for.
    pub checks: Checks<'a>,
    /// Also check each image against a transparency ledger.
    pub ledger: Option<&'a LedgerCheck<'a>>,
    /// The memory every worker shares: each file is reserved before it is read.
    pub budget: &'a MemoryBudget,
    /// Unsigned files do not fail the run.
    pub allow_unsigned: bool,
}

impl Batch<'_> {
    /// Verifies `files` on `pool`'s workers and hands every finding to `emit` with the path
    /// it is about: first one `unreadable` finding per input refused before reading
    /// (`refused`: path and reason), then each file's findings in the order of `files` (the
    /// ledger's advisory and verdict first, when asked), then the series findings. Returns
    /// the findings counted: `failed` are those that fail the run (its exit status).
    pub fn verify_files(
        &self,
        pool: &Pool,
        refused: &[(PathBuf, String)],
        files: &[PathBuf],
        mut emit: impl FnMut(&Path, &Finding) + Send,
    ) -> Tally {
        let mut tally = Tally::default();
        let mut report = |path: &Path, finding: &Finding| {
            if finding.status.fails(self.allow_unsigned) {
                tally.failed += 1;
            } else {
                tally.done += 1;
            }
            emit(path, finding);
        };
        for (path, reason) in refused {
            report(path, &Finding::new(Status::Unreadable, reason.clone()));
        }
        let mut geometries = Vec::new();
        map_in_order(
            pool,
            files,
            |f| self.verify_one(f),
            |f, verified| {
                for finding in &verified.findings {
                    report(f, finding);
                }
                if let Some(g) = verified.geometry {
                    geometries.push((f.clone(), g));
                }
            },
        );
        for (path, finding) in series_findings(&geometries) {
            report(&path, &finding);
        }
        tally
    }

    /// One file's findings: the ledger's (when asked), then its own.
    fn verify_one(&self, path: &Path) -> Verified {
        let mut findings = Vec::new();
        if let Some(ledger) = self.ledger {
            let check = ledger(path);
            if let Some(advice) = check.advisory {
                findings.push(Finding::new(Status::Advisory, advice));
            }
            let verdict = check.verdict;
            findings.push(Finding::new(Status::Ledger(verdict.status), verdict.reason));
        }
        let mut verified = verify_file(path, &self.checks, self.budget);
        findings.append(&mut verified.findings);
        Verified {
            findings,
            geometry: verified.geometry,
        }
    }
}

/// `e` and its sources, as `outer: inner`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads the file at `path` whole under `budget` and verifies it.
pub fn verify_file(path: &Path, checks: &Checks<'_>, budget: &MemoryBudget) -> Verified {
    let unreadable = |e: &dyn std::error::Error| Verified {
        findings: vec![Finding::new(Status::Unreadable, chain(e))],
        geometry: None,
    };
    let WholeFile { bytes, mut grant } = match read_whole(path, budget) {
        Ok(w) => w,
        Err(e) => return unreadable(&e),
    };
    let mut inflated = Vec::new();
    match p10::read_file_in(&bytes, &mut inflated, p10::Limits::default(), &mut grant) {
        Ok((meta, ds, enc)) => verify_dataset(&ds, enc, &meta.transfer_syntax, checks, budget),
        Err(e) => unreadable(&e),
    }
}

/// Verifies a parsed data set (encoded as `enc`, in `transfer_syntax`).
pub fn verify_dataset(
    ds: &p10::DataSet<'_>,
    enc: p10::Encoding,
    transfer_syntax: &str,
    checks: &Checks<'_>,
    budget: &MemoryBudget,
) -> Verified {
    let reports = if checks.trust.is_empty() {
        radveil_integrity::verify(ds, enc)
    } else {
        radveil_integrity::verify_trusted(ds, enc, checks.trust, checks.now)
    };
    let (mut advisories, geometry) = advisory::check_image(ds, enc);
    advisories.extend(advisory::check_signer_equipment(ds, &reports));
    let mut findings = Vec::new();
    if let Some(profile) = checks.required {
        findings.push(match profile_outcome(ds, &reports, profile) {
            Ok(p) => Finding::new(
                Status::Profile,
                format!("a valid signature satisfies the {p} profile"),
            ),
            Err(why) => Finding::new(Status::Insufficient, why),
        });
    }
    findings.extend(
        advisories
            .into_iter()
            .map(|a| Finding::new(Status::Advisory, a)),
    );
    if checks.binding {
        findings.push(
            match radveil_integrity::binding_hash_with_budget(ds, enc, transfer_syntax, budget) {
                Ok(h) => Finding::new(Status::Binding, radveil_ledger::hex(&h)),
                Err(e) => Finding::new(Status::BindingUnavailable, e.to_string()),
            },
        );
    }
    if reports.is_empty() {
        findings.push(Finding::new(Status::Unsigned, "no digital signature"));
    }
    for r in reports {
        findings.push(signature_finding(r, checks.require_timestamp));
    }
    Verified { findings, geometry }
}

/// The line of one signature.
fn signature_finding(r: SignatureReport, require_timestamp: bool) -> Finding {
    let covers = |t: u32| r.location.is_empty() && r.covered.contains(&t);
    let coverage = format!(
        "covers {} attributes; PatientName {}; PixelData {}",
        r.covered.len(),
        if covers(radveil_standard::tags::PATIENT_NAME) {
            "yes"
        } else {
            "NO"
        },
        if covers(radveil_standard::tags::PIXEL_DATA) {
            "yes"
        } else {
            "NO"
        }
    );
    let stamp = match &r.timestamp {
        Some(t) if t.outcome == TimestampOutcome::Valid => {
            format!("; timestamp {} by {}", t.time_text, t.tsa)
        }
        _ => String::new(),
    };
    let (status, detail) = match &r.outcome {
        Outcome::Valid if require_timestamp && stamp.is_empty() => (
            Status::Unstamped,
            format!("no certified timestamp, and one is required; {coverage}"),
        ),
        Outcome::Valid => (Status::Valid, format!("{coverage}{stamp}")),
        Outcome::Untrusted(why) => (Status::Untrusted, format!("{why}; {coverage}")),
        Outcome::Invalid(why) => (Status::Invalid, why.clone()),
    };
    Finding {
        status,
        detail,
        signature: Some(Box::new(r)),
    }
}

/// Whether some signature of `ds` satisfies `profile`: `Ok(name)`, or why none does.
fn profile_outcome(
    ds: &p10::DataSet<'_>,
    reports: &[SignatureReport],
    profile: SignatureProfile,
) -> Result<&'static str, String> {
    let mut why = vec![];
    for r in reports {
        match radveil_integrity::satisfies(r, ds, profile) {
            Ok(()) => return Ok(profile.name()),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        why.push("no signature".into());
    }
    Err(why.join("; "))
}

/// The series-level findings of a verification, each on the line of the first image
/// concerned and naming the others by path (never the Series Instance UID or a position).
/// `images` pairs each image's path with its geometry.
pub fn series_findings(images: &[(PathBuf, ImageGeometry)]) -> Vec<(PathBuf, Finding)> {
    let geometries: Vec<ImageGeometry> = images.iter().map(|(_, g)| g.clone()).collect();
    let mut out = Vec::new();
    for found in advisory::check_series(&geometries) {
        let paths: Vec<&Path> = found
            .images
            .iter()
            .filter_map(|&i| images.get(i).map(|(p, _)| p.as_path()))
            .collect();
        let Some((first, others)) = paths.split_first() else {
            continue;
        };
        let others: Vec<String> = others.iter().map(|p| p.display().to_string()).collect();
        let detail = format!("{}; with {}", found.finding, others.join(", "));
        out.push((first.to_path_buf(), Finding::new(Status::Advisory, detail)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::testing;

    fn checks(trust: &TrustStore) -> Checks<'_> {
        Checks {
            trust,
            now: 0,
            required: None,
            binding: false,
            require_timestamp: false,
        }
    }

    #[test]
    fn a_signed_file_is_valid_and_a_changed_byte_makes_it_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let signed = testing::signed_file(&budget);
        let path = dir.path().join("signed.dcm");
        std::fs::write(&path, &signed).unwrap();
        let trust = TrustStore::default();
        let v = verify_file(&path, &checks(&trust), &budget);
        let statuses: Vec<Status> = v.findings.iter().map(|f| f.status).collect();
        assert_eq!(statuses, [Status::Valid]);
        let line = v.findings[0].line(&path, false).to_string();
        assert_eq!(
            line,
            format!(
                "valid\t{}\tcovers 16 attributes; PatientName yes; PixelData yes\tCN=radveil pipeline test signer",
                path.display()
            )
        );
        assert!(!Status::Valid.fails(false));

        // One byte of the Patient's Name changed: the signature no longer verifies.
        let at = testing::find(&signed, b"Doe^Jane");
        let mut tampered = signed.clone();
        tampered[at] = b'F';
        std::fs::write(&path, &tampered).unwrap();
        let v = verify_file(&path, &checks(&trust), &budget);
        assert_eq!(v.findings.len(), 1);
        assert_eq!(v.findings[0].status, Status::Invalid);
        assert!(v.findings[0].status.fails(true));
        let json: serde_json::Value =
            serde_json::from_str(&v.findings[0].line(&path, true).to_string()).unwrap();
        assert_eq!(json["status"], "invalid");
        assert_eq!(json["signer"], "CN=radveil pipeline test signer");
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn unsigned_and_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let trust = TrustStore::default();
        let path = dir.path().join("plain.dcm");
        std::fs::write(&path, testing::unsigned_file()).unwrap();
        let v = verify_file(&path, &checks(&trust), &budget);
        assert_eq!(v.findings.len(), 1);
        assert_eq!(v.findings[0].status, Status::Unsigned);
        assert!(v.findings[0].status.fails(false));
        assert!(!v.findings[0].status.fails(true));

        let missing = dir.path().join("missing.dcm");
        let v = verify_file(&missing, &checks(&trust), &budget);
        assert_eq!(v.findings[0].status, Status::Unreadable);
        assert!(v.findings[0].detail.starts_with("cannot read: "));

        // A directory is refused unread.
        let v = verify_file(dir.path(), &checks(&trust), &budget);
        assert_eq!(v.findings[0].status, Status::Unreadable);
        assert_eq!(
            v.findings[0].line(dir.path(), false).to_string(),
            format!(
                "unreadable\t{}\tnot a regular file but a directory; not read",
                dir.path().display()
            )
        );
    }

    /// A batch over `files` (refused: `refused`), its lines as (path, status) and its tally.
    fn run_batch(
        batch: &Batch<'_>,
        refused: &[(PathBuf, String)],
        files: &[PathBuf],
    ) -> (Vec<(PathBuf, Status)>, Tally) {
        let mut lines = Vec::new();
        let tally = batch.verify_files(&Pool::new(3), refused, files, |p, f| {
            lines.push((p.to_path_buf(), f.status));
        });
        (lines, tally)
    }

    #[test]
    fn a_batch_prints_refused_then_files_in_order_and_counts_what_fails() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let trust = TrustStore::default();
        let signed = dir.path().join("signed.dcm");
        std::fs::write(&signed, testing::signed_file(&budget)).unwrap();
        let plain = dir.path().join("plain.dcm");
        std::fs::write(&plain, testing::unsigned_file()).unwrap();
        let fifo = dir.path().join("fifo");
        let files = [plain.clone(), signed.clone(), plain.clone()];
        let refused = [(fifo.clone(), "not a regular file".to_string())];
        let mut batch = Batch {
            checks: checks(&trust),
            ledger: None,
            budget: &budget,
            allow_unsigned: false,
        };
        let (lines, tally) = run_batch(&batch, &refused, &files);
        assert_eq!(
            lines,
            [
                (fifo.clone(), Status::Unreadable),
                (plain.clone(), Status::Unsigned),
                (signed.clone(), Status::Valid),
                (plain.clone(), Status::Unsigned),
            ]
        );
        assert_eq!(tally, Tally { done: 1, failed: 3 });
        // Unsigned files allowed: only the refused input fails the run.
        batch.allow_unsigned = true;
        let (_, tally) = run_batch(&batch, &refused, &files);
        assert_eq!(tally, Tally { done: 3, failed: 1 });
        let (_, tally) = run_batch(&batch, &[], &files);
        assert!(tally.all_done());
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn the_ledger_speaks_first_and_a_panic_is_one_unreadable_line() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let trust = TrustStore::default();
        let signed = dir.path().join("signed.dcm");
        std::fs::write(&signed, testing::signed_file(&budget)).unwrap();
        let boom = dir.path().join("boom.dcm");
        std::fs::write(&boom, testing::signed_file(&budget)).unwrap();
        let ledger = |p: &Path| -> ImageCheck {
            if p.ends_with("boom.dcm") {
                panic!("ledger bug");
            }
            let mut check = ImageCheck::unreadable("");
            check.verdict.status = radveil_ledger::Status::Proven;
            check.advisory = Some("equipment differs".into());
            check
        };
        let batch = Batch {
            checks: checks(&trust),
            ledger: Some(&ledger),
            budget: &budget,
            allow_unsigned: false,
        };
        let files = [signed.clone(), boom.clone(), signed.clone()];
        let mut lines = Vec::new();
        let tally = batch.verify_files(&Pool::new(2), &[], &files, |p, f| {
            lines.push(f.line(p, false).to_string());
        });
        let proven = Status::Ledger(radveil_ledger::Status::Proven);
        let signed_lines = [
            format!("advisory\t{}\tequipment differs", signed.display()),
            format!("{proven}\t{}\t", signed.display()),
        ];
        assert_eq!(lines[..2], signed_lines);
        assert!(lines[2].starts_with("valid\t"), "{}", lines[2]);
        assert_eq!(
            lines[3],
            format!(
                "unreadable\t{}\tinternal error (a bug in radveil; please report it)",
                boom.display()
            )
        );
        assert_eq!(lines[4..6], signed_lines);
        assert_eq!(lines.len(), 7);
        assert_eq!(tally, Tally { done: 6, failed: 1 });
    }

    #[test]
    fn certificate_files_are_regular_bounded_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("signer.pem");
        std::fs::write(&cert, testing::CERT).unwrap();
        let trust = trust_store(std::slice::from_ref(&cert), &[]).unwrap();
        assert!(!trust.is_empty());
        assert!(trust_store(&[], &[]).unwrap().is_empty());
        // Too large to be a bundle: refused before it is read.
        let big = dir.path().join("big.pem");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_CERTIFICATES + 1).unwrap();
        let e = read_certificates(&big).map(|b| b.len()).unwrap_err();
        assert!(matches!(e, CertificateError::Read { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("reading {}", big.display()));
        // A FIFO is refused at once, never waited on.
        let fifo = dir.path().join("fifo.pem");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = trust_store(&[], std::slice::from_ref(&fifo)).unwrap_err();
        assert!(matches!(e, CertificateError::Read { .. }), "{e:?}");
        // Not a certificate: the file is named, and why.
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, b"not a certificate").unwrap();
        let e = trust_store(&[cert, junk.clone()], &[]).unwrap_err();
        assert!(matches!(e, CertificateError::Parse { .. }), "{e:?}");
        assert_eq!(e.to_string(), junk.display().to_string());
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn ledger_statuses_print_and_fail_as_before() {
        let proven = Status::Ledger(radveil_ledger::Status::Proven);
        let altered = Status::Ledger(radveil_ledger::Status::Altered);
        assert_eq!(proven.to_string(), "ledger-proven");
        assert_eq!(altered.to_string(), "ledger-altered");
        assert!(!proven.fails(false));
        assert!(altered.fails(true));
    }
}
