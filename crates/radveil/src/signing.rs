//! `radveil sign` and `radveil verify`: DICOM digital signatures on files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use radveil_integrity::{MacAlgorithm, SignerIdentity};
use radveil_pipeline::pool::Pool;
use radveil_pipeline::tree::OutputTree;
use radveil_pipeline::{sign, verify, Dir};

use crate::dicom_file::default_budget;

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

/// Reports on standard error the inputs refused before reading; returns how many.
pub fn report_refused(refused: &[(PathBuf, String)]) -> usize {
    for (p, reason) in refused {
        eprintln!("radveil: {}: {reason}", p.display());
    }
    refused.len()
}

pub fn sign(args: SignArgs) -> Result<ExitCode> {
    let profile = parse_profile(args.profile.as_deref())?;
    let mac = MacAlgorithm::from_term(&args.mac)
        .filter(|m| *m != MacAlgorithm::Md5)
        .with_context(|| format!("unknown or unsafe MAC algorithm {:?}", args.mac))?;
    let key = crate::key::read_secret(&args.key, "signing key", args.keys)?;
    let signer = SignerIdentity::load(&key, &verify::read_certificates(&args.cert)?)?;
    let tags: Vec<u32> = args
        .tags
        .iter()
        .map(|t| parse_tag(t))
        .collect::<Result<_>>()?;
    let tsa = (args.tsa.as_deref())
        .map(|url| {
            radveil_pipeline::timestamp::HttpAuthority::new(url, args.ts.query_options()?)
                .map_err(anyhow::Error::from)
        })
        .transpose()?;
    let stamp = tsa.as_ref().map(|tsa| tsa.hook());
    // The output directory is opened once; every file is written below it without following
    // a link (a link planted in the output tree is refused, never written through).
    let out = Dir::create(&args.out)?;
    let (files, refused) = crate::inputs::collect(&args.inputs);
    let batch = sign::Batch {
        out: &out,
        tree: &OutputTree::new(&args.inputs),
        signer: &signer,
        choices: sign::Choices {
            mac,
            tags: (!tags.is_empty()).then_some(&tags),
            purpose: args.purpose.as_deref(),
            profile,
            item: args.item.as_deref(),
        },
        stamp: stamp.as_ref().map(|s| s as &sign::Stamp<'_>),
        budget: &default_budget(),
    };
    let failed = report_refused(&refused);
    // Files are signed on every core (`--jobs`); RSA signing dominates the time.
    let tally = batch.sign_files(&Pool::jobs(args.jobs), &files, |f, r| match r {
        Ok(done) => outln!("{done}"),
        Err(e) => eprintln!(
            "radveil: {}: not signed: {:#}",
            f.display(),
            anyhow::Error::from(e)
        ),
    });
    let failed = failed + tally.failed;
    eprintln!("radveil sign: {} signed, {failed} failed", tally.done);
    Ok(ExitCode::from(u8::from(failed > 0)))
}

pub fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let trust = verify::trust_store(&args.trust, &args.intermediates)?;
    let required = parse_profile(args.require_profile.as_deref())?;
    let budget = default_budget();
    let ledger = match &args.ledger {
        None => None,
        Some(dir) => {
            let (verifier, trusted) =
                (args.verifier.as_deref(), args.trusted_checkpoint.as_deref());
            match crate::ledger::open_verified(dir, verifier, trusted)? {
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
    };
    let b = &budget;
    let check = (ledger.as_ref()).map(|(l, key)| move |f: &Path| l.image_status(f, key, b));
    let batch = verify::Batch {
        checks: verify::Checks {
            trust: &trust,
            now: verify::unix_now(),
            required,
            binding: args.binding,
            require_timestamp: args.require_timestamp,
        },
        ledger: check.as_ref().map(|c| c as &verify::LedgerCheck<'_>),
        budget: &budget,
        allow_unsigned: args.allow_unsigned,
    };
    let (files, refused) = crate::inputs::collect(&args.inputs);
    // Files are verified on every core; their lines come out in input order.
    let tally = batch.verify_files(&Pool::all_cores(), &refused, &files, |path, finding| {
        outln!("{}", finding.line(path, args.json));
    });
    Ok(ExitCode::from(u8::from(!tally.all_done())))
}
