//! `radveil sign` and `radveil verify`: DICOM digital signatures on files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use radveil_integrity::{MacAlgorithm, Outcome, SignRequest, SignerIdentity};
use radveil_part10 as p10;
use radveil_pipeline::pool::{Flow, Pool};

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
    let choices = SignChoices {
        mac,
        tags: tags.as_deref(),
        purpose: args.purpose.as_deref(),
        profile,
        item: args.item.as_deref(),
        tsa: tsa.as_ref(),
    };
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
            tree.relative(f)
                .and_then(|rel| sign_file(f, &out_dir, &rel, &signer, &choices, &budget))
        },
        |f, result| {
            match result.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(out) => {
                    signed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    outln!("signed\t{}\t{}", f.display(), out.display());
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

/// A fresh Digital Signature UID (2.25 form of a random UUID).
fn new_uid() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    Ok(format!("2.25.{}", u128::from_be_bytes(b)))
}

fn now_dt() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let t = radveil_ledger::rfc3339_at(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    // 2026-11-23T12:00:00Z -> 20261123120000.123456+0000
    format!(
        "{}{}{}{}{}{}.{:06}+0000",
        &t[0..4],
        &t[5..7],
        &t[8..10],
        &t[11..13],
        &t[14..16],
        &t[17..19],
        now.subsec_micros()
    )
}

/// What every signature of one `radveil sign` run is made of.
struct SignChoices<'a> {
    mac: MacAlgorithm,
    tags: Option<&'a [u32]>,
    purpose: Option<&'a str>,
    profile: Option<radveil_integrity::SignatureProfile>,
    item: Option<&'a str>,
    /// Stamp each new signature at this timestamp authority.
    tsa: Option<&'a crate::timestamping::Tsa>,
}

/// Signs the file at `path` and writes it as `relative` below `out`; returns its path.
fn sign_file(
    path: &Path,
    out: &radveil_pipeline::Dir,
    relative: &Path,
    signer: &SignerIdentity,
    choices: &SignChoices<'_>,
    budget: &radveil_part10::MemoryBudget,
) -> Result<PathBuf> {
    let SignChoices {
        mac,
        tags,
        purpose,
        profile,
        item,
        tsa,
    } = *choices;
    let crate::dicom_file::WholeFile { bytes, mut grant } =
        crate::dicom_file::read_whole(path, budget)?;
    let uid = new_uid()?;
    let signed = crate::dicom_file::rewrite(&bytes, &mut grant, |ds, enc, transfer_syntax| {
        let request = SignRequest {
            mac,
            tags: tags.map(|t| t.to_vec()),
            uid: uid.clone(),
            datetime: now_dt(),
            purpose: purpose.map(str::to_string),
            profile,
        };
        match item {
            None => radveil_integrity::sign(ds, signer, &request, enc, transfer_syntax)?,
            Some(path) => {
                if profile.is_some() {
                    bail!("profiles apply to whole objects, not to sequence items");
                }
                let target = item_mut(ds, path)?;
                radveil_integrity::sign(target, signer, &request, enc, transfer_syntax)?
            }
        }
        if let Some(tsa) = tsa {
            tsa.stamp(ds, Some(&uid))?;
        }
        Ok(())
    })?;
    Ok(out.write_bytes_at(relative, &signed)?)
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
    let check = |ds: &p10::DataSet<'_>, enc: p10::Encoding| {
        if trust.is_empty() {
            radveil_integrity::verify(ds, enc)
        } else {
            radveil_integrity::verify_trusted(ds, enc, &trust, now)
        }
    };
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
    let (files, errors) = crate::inputs::collect(&args.inputs);
    let mut bad = 0;
    let mut geometries = Vec::new();
    let mut geometry_files: Vec<&Path> = Vec::new();
    for (p, reason) in errors {
        bad += 1;
        line(args.json, &p, "unreadable", &reason, None);
    }
    for f in &files {
        if let Some((l, key)) = &ledger {
            let check = l.image_status(f, key, &budget);
            if let Some(advice) = &check.advisory {
                line(args.json, f, "advisory", advice, None);
            }
            let verdict = check.verdict;
            if verdict.status != radveil_ledger::Status::Proven {
                bad += 1;
            }
            line(
                args.json,
                f,
                &format!("ledger-{}", verdict.status),
                &verdict.reason,
                None,
            );
        }
        let crate::dicom_file::WholeFile { bytes, mut grant } =
            match crate::dicom_file::read_whole(f, &budget) {
                Ok(w) => w,
                Err(e) => {
                    bad += 1;
                    line(args.json, f, "unreadable", &format!("{e:#}"), None);
                    continue;
                }
            };
        let examine = |ds: &p10::DataSet<'_>, enc: p10::Encoding, ts: &str| {
            let reports = check(ds, enc);
            let (mut findings, geometry) = radveil_integrity::advisory::check_image(ds, enc);
            findings.extend(radveil_integrity::advisory::check_signer_equipment(
                ds, &reports,
            ));
            let profile = required.map(|p| profile_outcome(ds, &reports, p));
            (
                reports,
                radveil_integrity::binding_hash_with_budget(ds, enc, ts, &budget),
                (findings, geometry),
                profile,
            )
        };
        let mut inflated = Vec::new();
        let parsed = p10::read_file_in(&bytes, &mut inflated, p10::Limits::default(), &mut grant)
            .map(|(meta, ds, enc)| examine(&ds, enc, &meta.transfer_syntax));
        let reports = match parsed {
            Ok((r, binding, (findings, geometry), profile)) => {
                if let Some(outcome) = profile {
                    match outcome {
                        Ok(p) => line(
                            args.json,
                            f,
                            "profile",
                            &format!("a valid signature satisfies the {p} profile"),
                            None,
                        ),
                        Err(why) => {
                            bad += 1;
                            line(args.json, f, "insufficient", &why, None);
                        }
                    }
                }
                for finding in findings {
                    line(args.json, f, "advisory", &finding, None);
                }
                if let Some(g) = geometry {
                    geometries.push(g);
                    geometry_files.push(f);
                }
                if args.binding {
                    match binding {
                        Ok(h) => line(args.json, f, "binding", &radveil_ledger::hex(&h), None),
                        Err(e) => line(args.json, f, "binding-unavailable", &e.to_string(), None),
                    }
                }
                r
            }
            Err(e) => {
                bad += 1;
                line(args.json, f, "unreadable", &format!("{e:#}"), None);
                continue;
            }
        };
        if reports.is_empty() {
            if !args.allow_unsigned {
                bad += 1;
            }
            line(args.json, f, "unsigned", "no digital signature", None);
            continue;
        }
        for r in &reports {
            let covers = |t: u32| r.location.is_empty() && r.covered.contains(&t);
            let coverage = format!(
                "covers {} attributes; PatientName {}; PixelData {}",
                r.covered.len(),
                if covers(0x0010_0010) { "yes" } else { "NO" },
                if covers(0x7FE0_0010) { "yes" } else { "NO" }
            );
            let stamp = match &r.timestamp {
                Some(t) if t.outcome == radveil_integrity::TimestampOutcome::Valid => {
                    format!("; timestamp {} by {}", t.time_text, t.tsa)
                }
                _ => String::new(),
            };
            let (status, why) = match &r.outcome {
                Outcome::Valid if args.require_timestamp && stamp.is_empty() => {
                    bad += 1;
                    (
                        "unstamped",
                        format!("no certified timestamp, and one is required; {coverage}"),
                    )
                }
                Outcome::Valid => ("valid", format!("{coverage}{stamp}")),
                Outcome::Untrusted(why) => {
                    bad += 1;
                    ("untrusted", format!("{why}; {coverage}"))
                }
                Outcome::Invalid(why) => {
                    bad += 1;
                    ("invalid", why.clone())
                }
            };
            line(args.json, f, status, &why, Some(r));
        }
    }
    // Series findings go on the line of the first image concerned, naming the others by
    // path (never the Series Instance UID or a position).
    for found in radveil_integrity::advisory::check_series(&geometries) {
        let paths: Vec<&Path> = found
            .images
            .iter()
            .filter_map(|&i| geometry_files.get(i).copied())
            .collect();
        let Some((first, others)) = paths.split_first() else {
            continue;
        };
        let others: Vec<String> = others.iter().map(|p| p.display().to_string()).collect();
        let detail = format!("{}; with {}", found.finding, others.join(", "));
        line(args.json, first, "advisory", &detail, None);
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The sequence item at `path` (`Keyword[i]` or `(gggg,eeee)[i]` steps separated by `/` or `.`).
fn item_mut<'d, 'a>(ds: &'d mut p10::DataSet<'a>, path: &str) -> Result<&'d mut p10::DataSet<'a>> {
    let mut current = ds;
    for step in path.split(['/', '.']).filter(|s| !s.is_empty()) {
        let (name, index) = step
            .strip_suffix(']')
            .and_then(|s| s.rsplit_once('['))
            .with_context(|| format!("item path step {step:?} is not NAME[INDEX]"))?;
        let tag = parse_tag(name)?;
        let index: usize = index
            .parse()
            .with_context(|| format!("bad item index in {step:?}"))?;
        let el = current
            .get_mut(tag)
            .with_context(|| format!("{name} is not in the data set"))?;
        let p10::Value::Sequence(items) = &mut el.value else {
            bail!("{name} is not a sequence");
        };
        let count = items.len();
        current = items
            .get_mut(index)
            .with_context(|| format!("{name} has {count} items, not {}", index + 1))?;
    }
    Ok(current)
}

/// Whether some signature of `ds` satisfies `profile`: `Ok(name)`, or why none does.
fn profile_outcome(
    ds: &p10::DataSet<'_>,
    reports: &[radveil_integrity::SignatureReport],
    profile: radveil_integrity::SignatureProfile,
) -> std::result::Result<&'static str, String> {
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

fn line(
    json: bool,
    path: &Path,
    status: &str,
    detail: &str,
    r: Option<&radveil_integrity::SignatureReport>,
) {
    if json {
        let mut v = serde_json::json!({"input": path.display().to_string(), "status": status, "detail": detail});
        if let Some(r) = r {
            v["signature_uid"] = r.uid.clone().into();
            v["location"] = r.location.clone().into();
            v["mac"] = r.mac.map(|m| m.term()).into();
            v["signer"] = r.signer.clone().into();
            v["signer_sha256"] = r.fingerprint.clone().into();
            v["datetime"] = r.datetime.clone().into();
            v["purpose"] = r.purpose.clone().into();
            if let Some(t) = &r.timestamp {
                let (status, detail) = match &t.outcome {
                    radveil_integrity::TimestampOutcome::Valid => ("valid", String::new()),
                    radveil_integrity::TimestampOutcome::Untrusted(w) => ("untrusted", w.clone()),
                    radveil_integrity::TimestampOutcome::Invalid(w) => ("invalid", w.clone()),
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
        }
        outln!("{v}");
    } else {
        let signer = r.map(|r| format!("\t{}", r.signer)).unwrap_or_default();
        outln!("{status}\t{}\t{detail}{signer}", path.display());
    }
}
