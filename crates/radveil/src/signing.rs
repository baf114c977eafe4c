//! `radveil sign` and `radveil verify`: DICOM digital signatures on files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use radveil_integrity::{MacAlgorithm, SignerIdentity};
use radveil_part10 as p10;
use radveil_pipeline::ordered::for_each_in_order;
use radveil_pipeline::pool::{Flow, Pool};
use radveil_pipeline::sign::sign_file;
use radveil_pipeline::verify::{series_findings, verify_file, Checks, Finding, Status};

/// `radveil sign` arguments.
#[derive(clap::Args)]
pub struct SignArgs {
    /// DICOM files or directories to sign.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// RSA private key (PEM or DER, PKCS#8 or PKCS#1, unencrypted).
    #[arg(long)]
    key: PathBuf,
    /// The signer's X.509 certificate (PEM or DER).
    #[arg(long)]
    cert: PathBuf,
    /// MAC algorithm: sha256 (default), sha384, sha512, sha1, ripemd160.
    #[arg(long, default_value = "sha256")]
    mac: String,
    /// Sign only these attributes (repeatable; keyword or gggg,eeee); default: all.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Digital Signature Purpose code (CID 7007), e.g. 1 (author) or 14 (source).
    #[arg(long)]
    purpose: Option<String>,
    /// PS3.15 Annex C profile: base, creator, authorization, sr (adds what it requires to
    /// the signed attributes).
    #[arg(long)]
    profile: Option<String>,
    /// Sign a sequence item instead of the object, e.g. `ContentSequence[0]` or
    /// `(0040,A730)[0]/(0040,A730)[2]` (as dcmsign's --sign-item).
    #[arg(long, value_name = "PATH")]
    item: Option<String>,
    /// Output directory: a file keeps its path below the directory it was found in (its
    /// name when given by name); never overwritten.
    #[arg(long)]
    out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Certify each new signature's time at this RFC 3161 timestamp authority
    /// (http:// or https:// URL); a file whose timestamp fails is not written.
    #[arg(long, value_name = "URL")]
    tsa: Option<String>,
    #[command(flatten)]
    ts: crate::timestamping::QueryArgs,
    #[command(flatten)]
    keys: crate::key::KeyPolicy,
}

/// `radveil verify` arguments.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// DICOM files or directories to verify.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Accept files without any signature (they are reported as unsigned).
    #[arg(long)]
    allow_unsigned: bool,
    /// Print one JSON line per signature (and per unsigned or unreadable file).
    #[arg(long)]
    json: bool,
    /// Trusted certificates (PEM bundle or DER; repeatable): a valid signature whose signer
    /// is not one of them or issued by one, or whose certificate was not valid when it
    /// signed, is reported as untrusted.
    #[arg(long = "trust", value_name = "CERTS")]
    trust: Vec<PathBuf>,
    /// Intermediate CA certificates (PEM bundle or DER; repeatable), used to chain a signer
    /// to a --trust anchor; not trusted themselves.
    #[arg(long = "intermediate", value_name = "CERTS")]
    intermediates: Vec<PathBuf>,
    /// Also check each image against this transparency ledger: an image it never recorded
    /// (inserted) or whose bytes differ from its entry (altered) is flagged.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// The site key, to find images in the ledger (with --ledger).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The ledger's checkpoint verifier key, string or file (with --ledger).
    #[arg(long)]
    verifier: Option<String>,
    /// A checkpoint kept outside the ledger, which the ledger must extend (with --ledger).
    #[arg(long)]
    trusted_checkpoint: Option<PathBuf>,
    /// Require, for each file, a valid signature that satisfies this PS3.15 Annex C profile
    /// (base, creator, authorization, sr); a file without one is reported `insufficient`.
    #[arg(long)]
    require_profile: Option<String>,
    /// Also print each file's binding hash (pixels, geometry and identity; independent of
    /// the transfer syntax).
    #[arg(long)]
    binding: bool,
    /// Fail a valid signature that has no valid certified timestamp (as dcmsign's
    /// --require-ts).
    #[arg(long)]
    require_timestamp: bool,
    #[command(flatten)]
    keys: crate::key::KeyPolicy,
}

/// A PS3.15 Annex C profile named on the command line.
fn parse_profile(name: Option<&str>) -> Result<Option<radveil_integrity::SignatureProfile>> {
    name.map(|p| {
        radveil_integrity::SignatureProfile::from_name(p)
            .with_context(|| format!("unknown profile {p:?} (base, creator, authorization, sr)"))
    })
    .transpose()
}

fn parse_tag(s: &str) -> Result<u32> {
    radveil_deid::profile::parse_tag(s).with_context(|| format!("unknown attribute {s:?}"))
}

pub fn sign(args: SignArgs) -> Result<ExitCode> {
    let profile = parse_profile(args.profile.as_deref())?;
    let mac = MacAlgorithm::from_term(&args.mac)
        .filter(|m| *m != MacAlgorithm::Md5)
        .with_context(|| format!("unknown or unsafe MAC algorithm {:?}", args.mac))?;
    let key = crate::key::read_secret(&args.key, "signing key", args.keys)?;
    let cert =
        std::fs::read(&args.cert).with_context(|| format!("reading {}", args.cert.display()))?;
    let signer = SignerIdentity::load(&key, &cert)?;
    let tags = if args.tags.is_empty() {
        None
    } else {
        Some(
            args.tags
                .iter()
                .map(|t| parse_tag(t))
                .collect::<Result<Vec<_>>>()?,
        )
    };
    let tsa = match &args.tsa {
        Some(url) => Some(crate::timestamping::Tsa::new(
            url,
            args.ts.query_options()?,
        )?),
        None => None,
    };
    // The output directory is opened once; every file is written below it without following
    // a link (a link planted in the output tree is refused, never written through).
    let out_dir = radveil_pipeline::Dir::create(&args.out)?;
    // Each worker reserves a file's size before reading it, and waits for memory others
    // hold: a batch of large files never holds more than the budget.
    let budget = crate::dicom_file::default_budget();
    let (files, errors) = crate::inputs::collect(&args.inputs);
    let tree = crate::dicom_file::OutputTree::new(&args.inputs);
    let mut failed = errors.len();
    for (p, reason) in errors {
        eprintln!("radveil: {}: {reason}", p.display());
    }
    let choices = radveil_pipeline::sign::Choices {
        mac,
        tags: tags.as_deref(),
        purpose: args.purpose.as_deref(),
        profile,
        item: args.item.as_deref(),
    };
    let stamp = tsa.as_ref().map(|tsa| {
        move |ds: &mut p10::DataSet<'_>, uid: &str| {
            tsa.stamp(ds, Some(uid))
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        }
    });
    let stamp = stamp
        .as_ref()
        .map(|s| s as &radveil_pipeline::sign::Stamp<'_>);
    // Files are signed on every core (`--jobs`); RSA signing dominates the time.
    let signed = std::sync::atomic::AtomicUsize::new(0);
    let errors = std::sync::atomic::AtomicUsize::new(0);
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Pool::new(jobs).run(
        &files,
        || (),
        |(), f| {
            let rel = tree.relative(f)?;
            Ok(sign_file(
                f, &out_dir, &rel, &signer, &choices, stamp, &budget,
            )?)
        },
        |f, result| {
            match result.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(done) => {
                    signed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    outln!("{done}");
                }
                Err(e) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    eprintln!("radveil: {}: not signed: {e:#}", f.display());
                }
            }
            Flow::Continue
        },
    );
    let signed = signed.into_inner();
    failed += errors.into_inner();
    eprintln!("radveil sign: {signed} signed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let mut trust = radveil_integrity::TrustStore::default();
    for t in &args.trust {
        let bytes = std::fs::read(t).with_context(|| format!("reading {}", t.display()))?;
        trust.add(&bytes).with_context(|| t.display().to_string())?;
    }
    for t in &args.intermediates {
        let bytes = std::fs::read(t).with_context(|| format!("reading {}", t.display()))?;
        trust
            .add_intermediates(&bytes)
            .with_context(|| t.display().to_string())?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let required = parse_profile(args.require_profile.as_deref())?;
    let budget = crate::dicom_file::default_budget();
    let ledger = match &args.ledger {
        Some(dir) => {
            match crate::ledger::VerifiedLedger::open(
                dir,
                args.verifier.as_deref(),
                args.trusted_checkpoint.as_deref(),
            )? {
                Ok(v) => Some((
                    v,
                    crate::key::load_with(args.key_file.as_deref(), args.keys)?,
                )),
                Err(why) => {
                    eprintln!("radveil: ledger invalid: {why}");
                    return Ok(ExitCode::from(crate::ledger::LEDGER_INVALID));
                }
            }
        }
        None => None,
    };
    let checks = Checks {
        trust: &trust,
        now,
        required,
        binding: args.binding,
        require_timestamp: args.require_timestamp,
    };
    let (files, errors) = crate::inputs::collect(&args.inputs);
    let mut bad = 0;
    let mut geometries = Vec::new();
    let mut print = |path: &Path, finding: &Finding| {
        if finding.status.fails(args.allow_unsigned) {
            bad += 1;
        }
        outln!("{}", finding.line(path, args.json));
    };
    for (p, reason) in errors {
        print(&p, &Finding::new(Status::Unreadable, reason));
    }
    // Files are verified on every core; their lines come out in input order.
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    for_each_in_order(
        &Pool::new(jobs),
        &files,
        || (),
        |(), f| {
            let mut lines = Vec::new();
            if let Some((l, key)) = &ledger {
                let check = l.image_status(f, key, &budget);
                if let Some(advice) = check.advisory {
                    lines.push(Finding::new(Status::Advisory, advice));
                }
                let verdict = check.verdict;
                lines.push(Finding::new(Status::Ledger(verdict.status), verdict.reason));
            }
            let mut verified = verify_file(f, &checks, &budget);
            lines.append(&mut verified.findings);
            (lines, verified.geometry)
        },
        |f, result| {
            let (lines, geometry) = result
                .unwrap_or_else(|p| (vec![Finding::new(Status::Unreadable, p.to_string())], None));
            for finding in &lines {
                print(f, finding);
            }
            if let Some(g) = geometry {
                geometries.push((f.clone(), g));
            }
        },
    );
    for (path, finding) in series_findings(&geometries) {
        print(&path, &finding);
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
