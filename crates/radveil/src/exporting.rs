//! `radveil export` and `radveil lineage`: consent-checked research exports from the
//! gateway's store and where they went. The work is `radveil-export`'s; this module finds
//! the data folder's keys, opens the store (read only, beside a running `radveil serve`),
//! the consents, the lineage and the audit trail, and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use radveil_audit::{Actor, AuditLog, Role, AUDIT_DIR};
use radveil_consent::{Consents, Purpose};
use radveil_export::lineage::{Lineage, LINEAGE_DB, LINEAGE_KEY_FILE};
use radveil_store::{Key, Layout, Store};
use zeroize::Zeroizing;

use crate::key::{self, KeyPolicy};

/// The environment variable that may hold the key-encryption key (as `radveil serve`).
const KEK_ENV: &str = "RADVEIL_KEK";
/// Largest certificate file read for --encrypt-to.
const MAX_CERT_FILE: u64 = 1 << 20;

/// The gateway's data folder and the keys to open it.
#[derive(clap::Args)]
pub struct DataArgs {
    /// The gateway's data directory (`radveil serve --data`); read only, and usable while
    /// the gateway runs.
    #[arg(long)]
    data: PathBuf,
    /// The key-encryption key (default: RADVEIL_KEK, else DATA/keys/kek).
    #[arg(long)]
    kek_file: Option<PathBuf>,
    /// The audit key (default: RADVEIL_AUDIT_KEY, else DATA/keys/audit-key).
    #[arg(long)]
    audit_key_file: Option<PathBuf>,
    #[command(flatten)]
    keys: KeyPolicy,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    place: DataArgs,
    /// Which studies: KEY=VALUE keys matched as DICOM C-FIND/QIDO-RS match them (repeatable;
    /// every key must match). Keys: StudyDate, StudyTime, AccessionNumber, StudyDescription,
    /// StudyID, StudyInstanceUID, ReferringPhysicianName, PatientName, PatientID,
    /// IssuerOfPatientID, PatientBirthDate, PatientSex, ModalitiesInStudy, BodyPartExamined.
    /// Dates take ranges (StudyDate=20240101-20241231), text takes * and ? and lists
    /// separated by \ (PatientID=A\B). Without --query every study is taken.
    #[arg(long = "query", value_name = "KEY=VALUE", num_args = 1..)]
    query: Vec<String>,
    /// What the dataset is for: research, ai-training or commercial. Each patient's consent
    /// to it is checked now, study by study.
    #[arg(long, value_parser = parse_purpose)]
    purpose: Purpose,
    /// Who receives the dataset (shown to patients in their access log).
    #[arg(long)]
    recipient: String,
    /// The project the dataset is for (shown to patients in their access log).
    #[arg(long)]
    project: Option<String>,
    /// The de-identification profile (TOML, as `radveil deid --profile` takes it).
    #[arg(long)]
    profile: PathBuf,
    /// An Annex E option added to the profile's (repeatable), as `radveil deid --option`.
    #[arg(long = "option", value_name = "NAME")]
    options: Vec<String>,
    /// The de-identification key (as `radveil deid --key-file`; default RADVEIL_KEY).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The output directory: PATIENT/STUDY/SERIES/INSTANCE.dcm named after pseudonyms,
    /// never overwritten.
    #[arg(long)]
    out: PathBuf,
    /// Encrypt each output to this recipient's certificate (PEM; repeatable): written as
    /// INSTANCE.dcm.p7m, CMS EnvelopedData that `openssl cms -decrypt` opens with the
    /// recipient's key. Nothing is written in the clear.
    #[arg(long, value_name = "CERT.pem")]
    encrypt_to: Vec<PathBuf>,
    /// Write the export's report (JSON: counts, reasons; no patient named) to this new file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Memory all workers share, like 4G or 512M (default as `radveil deid`).
    #[arg(long, value_name = "SIZE", value_parser = crate::parse_memory_size)]
    memory_limit: Option<u64>,
}

#[derive(clap::Args)]
pub struct LineageArgs {
    #[command(flatten)]
    place: DataArgs,
    /// The patient (Patient ID) whose exports are listed.
    #[arg(long)]
    patient: String,
    /// The patient's Issuer of Patient ID, where the site uses it.
    #[arg(long)]
    issuer: Option<String>,
    /// Write a withdrawal notice (JSON, no identity: the export and the de-identified UIDs
    /// its recipient must delete) for each export affected into this directory.
    #[arg(long, value_name = "OUTDIR")]
    withdrawal_notices: Option<PathBuf>,
    /// With --withdrawal-notices: the purposes withdrawn (repeatable). Default: those the
    /// patient's current consent does not allow.
    #[arg(long, value_parser = parse_purpose)]
    purpose: Vec<Purpose>,
}

fn parse_purpose(text: &str) -> std::result::Result<Purpose, String> {
    text.parse::<Purpose>()
        .map_err(|_| "research, ai-training or commercial".into())
}

/// The KEK as `radveil serve` finds it (never made here: the gateway makes it).
fn load_kek(data: &Path, file: Option<&Path>, policy: KeyPolicy) -> Result<Key> {
    const WHAT: &str = "key-encryption key";
    if let Some(f) = file {
        return key::key_file(f, WHAT, policy, false);
    }
    if let Some(v) = std::env::var_os(KEK_ENV) {
        return Key::from_hex(&Zeroizing::new(v.into_encoded_bytes())).context(KEK_ENV);
    }
    key::key_file(
        &Layout::under(data).keys.with_file_name("kek"),
        WHAT,
        policy,
        false,
    )
}

/// The gateway's store in DATA, which must be one (nothing is made here).
fn open_store(place: &DataArgs) -> Result<Store> {
    let layout = Layout::under(&place.data);
    for p in [&layout.index, &layout.keys] {
        if !p.is_file() {
            bail!(
                "{} is not a gateway data directory (no {}): give the --data of `radveil serve`",
                place.data.display(),
                p.display()
            );
        }
    }
    let kek = load_kek(&place.data, place.kek_file.as_deref(), place.keys)?;
    Store::open(&layout, kek)
        .with_context(|| format!("opening the store in {}", place.data.display()))
}

/// The consents of DATA with the site's defaults (`[consent]` of DATA/radveil.toml).
fn open_consents(place: &DataArgs) -> Result<Consents> {
    let key = key::key_file(
        &place.data.join(radveil_consent::CONSENT_KEY_FILE),
        "consent key",
        place.keys,
        true,
    )?;
    let defaults = consent_defaults(&place.data)?;
    Consents::open(&place.data, key, defaults)
        .with_context(|| format!("opening the consents in {}", place.data.display()))
}

/// The site's consent defaults: the `[consent]` table of DATA/radveil.toml, read as
/// `radveil serve` reads it (opt-in where it says nothing, or when there is no file yet).
fn consent_defaults(data: &Path) -> Result<radveil_consent::Defaults> {
    let path = data.join(crate::serving::config::FILE_NAME);
    if !path.exists() {
        return Ok(radveil_consent::Defaults::default());
    }
    let text = radveil_pipeline::input::read_regular(&path, 1 << 20)
        .with_context(|| format!("reading {}", path.display()))?;
    let text = std::str::from_utf8(&text)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    Ok(crate::serving::config::parse(text, &path)?
        .consent
        .defaults())
}

/// The lineage of DATA, its key made on first use.
fn open_lineage(place: &DataArgs) -> Result<Lineage> {
    let key = key::key_file(
        &place.data.join(LINEAGE_KEY_FILE),
        "lineage key",
        place.keys,
        true,
    )?;
    let path = place.data.join(LINEAGE_DB);
    Lineage::open(&path, key).with_context(|| format!("opening {}", path.display()))
}

/// Who runs the command, for the audit trail.
fn operator(client: &str) -> Actor {
    Actor {
        subject: Some(
            std::env::var("USER")
                .unwrap_or_else(|_| format!("uid:{}", rustix::process::getuid().as_raw())),
        ),
        client: Some(client.into()),
        role: Some(Role::Admin),
        ..Actor::default()
    }
}

pub fn export(args: ExportArgs) -> Result<ExitCode> {
    let query = radveil_export::query::Query::parse(&args.query)?;
    let key = key::load_with(args.key_file.as_deref(), args.place.keys)?;
    let text = std::fs::read(&args.profile)
        .with_context(|| format!("reading profile {}", args.profile.display()))?;
    let radveil_export::recipe::Recipe {
        deidentifier,
        digest,
        clean_visual_features,
    } = radveil_export::recipe::recipe(&text, &args.options, key)
        .with_context(|| format!("profile {}", args.profile.display()))?;
    // The recipients' certificates of --encrypt-to.
    let mut certs = Vec::new();
    for f in &args.encrypt_to {
        let pem = radveil_pipeline::input::read_regular(f, MAX_CERT_FILE)
            .with_context(|| format!("reading {}", f.display()))?;
        let found = radveil_integrity::envelope::certificates_from_pem(&pem)
            .with_context(|| format!("--encrypt-to {}", f.display()))?;
        if found.is_empty() {
            bail!("--encrypt-to {}: no certificate in it", f.display());
        }
        certs.extend(found);
    }
    let store = open_store(&args.place)?;
    let consents = open_consents(&args.place)?;
    let mut lineage = open_lineage(&args.place)?;
    let audit_dir = args.place.data.join(AUDIT_DIR);
    if !audit_dir.join("origin").exists() {
        bail!(
            "no audit trail in {} (the gateway makes it on first run): an export must be recorded there",
            audit_dir.display()
        );
    }
    let audit_key = crate::auditing::audit_key(
        &args.place.data,
        args.place.audit_key_file.as_deref(),
        args.place.keys,
        false,
    )?;
    let mut audit = AuditLog::open(&audit_dir, audit_key)?;
    let run = radveil_pipeline::Run::new(
        deidentifier,
        &args.out,
        &radveil_pipeline::Settings {
            memory_limit: args
                .memory_limit
                .unwrap_or_else(radveil_pipeline::memory::default_limit),
            resume: false,
        },
    )
    .with_context(|| format!("opening the output directory {}", args.out.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let seal = |bytes: &[u8]| -> std::result::Result<Vec<u8>, String> {
        radveil_integrity::envelope::encrypt_to(&certs, bytes).map_err(|e| e.to_string())
    };
    let sealing = (!certs.is_empty()).then_some(radveil_pipeline::sealed::Sealing {
        seal: &seal,
        suffix: ".p7m",
    });
    let actor = operator("radveil export");
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let settings = radveil_export::run::Settings {
        purpose: args.purpose,
        recipient: &args.recipient,
        project: args.project.as_deref(),
        profile_digest: &digest,
        jobs,
        actor: &actor,
        sealing,
        clean_visual_features,
    };
    let report = radveil_export::run::export(
        radveil_export::run::Places {
            store: &store,
            runtime: runtime.handle(),
            consents: &consents,
            lineage: &mut lineage,
            audit: &mut audit,
            run: &run,
        },
        &query,
        &settings,
    )
    .with_context(|| {
        format!(
            "the export in {} is incomplete or not recorded: do not hand it out",
            args.out.display()
        )
    })?;
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        radveil_pipeline::write_new_file(path, &json)
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    for r in report.held_back.iter().chain(&report.failures) {
        eprintln!("radveil export: {} instance(s): {}", r.count, r.reason);
    }
    eprintln!("radveil export: {}", report.summary());
    outln!("{}", report.export);
    Ok(if report.counts.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn lineage(args: LineageArgs) -> Result<ExitCode> {
    let store = open_store(&args.place)?;
    let patient = store.patient(&args.patient, args.issuer.as_deref().unwrap_or(""));
    let lineage = open_lineage(&args.place)?;
    let held = lineage.exports_of(&patient)?;
    for h in &held {
        let e = &h.export;
        let project = e
            .project
            .as_deref()
            .map_or(String::new(), |p| format!(" ({p})"));
        outln!(
            "{}  {}  {}{}  {}  {} instance{}{}",
            e.id,
            e.time,
            e.recipient,
            project,
            e.purpose,
            h.instances,
            if h.instances == 1 { "" } else { "s" },
            if e.complete { "" } else { "  (cut short)" }
        );
    }
    eprintln!(
        "radveil lineage: {} export{} hold this patient's images",
        held.len(),
        if held.len() == 1 { "" } else { "s" }
    );
    let Some(dir) = &args.withdrawal_notices else {
        return Ok(ExitCode::SUCCESS);
    };
    let withdrawn = if args.purpose.is_empty() {
        let consents = open_consents(&args.place)?;
        let mut w = Vec::new();
        for p in Purpose::ALL {
            if !consents.decide(&patient, p, None)?.permitted {
                w.push(p);
            }
        }
        w
    } else {
        args.purpose.clone()
    };
    let notices = lineage.notices_for(&patient, &withdrawn)?;
    let out =
        radveil_pipeline::Dir::create(dir).with_context(|| format!("making {}", dir.display()))?;
    for n in &notices {
        let mut r = [0u8; 4];
        getrandom::getrandom(&mut r).context("no random numbers")?;
        let name = format!(
            "withdrawal-{}-{}.json",
            n.export,
            radveil_store::Handle::hex_of(&r)
        );
        let json = serde_json::to_vec_pretty(n)?;
        let path = out
            .write_bytes_at(Path::new(&name), &json)
            .with_context(|| format!("writing a notice in {}", dir.display()))?;
        outln!("{}", path.display());
    }
    eprintln!(
        "radveil lineage: {} withdrawal notice{} written",
        notices.len(),
        if notices.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}
