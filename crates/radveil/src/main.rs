//! `radveil`: protects patients' medical images. This binary only wires the libraries to the
//! command line; see `docs/ARCHITECTURE.md`.

#![forbid(unsafe_code)]

/// Prints a line on standard output; a closed pipe (`radveil ... | head`) ends the program
/// quietly instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*), true)
    };
}

/// Prints text on standard output without a newline (see [`outln`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*), false)
    };
}

mod auditing;
mod batch;
mod defacing;
mod dicom_file;
mod exporting;
mod inputs;
mod key;
mod ledger;
mod scanning;
mod serving;
mod signing;
mod timestamping;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "radveil", version, about = "Protects patients' medical images", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// De-identify DICOM files to PS3.15 Annex E (Basic Profile plus the options chosen).
    Deid(DeidArgs),
    /// Add a DICOM digital signature (PS3.15 Annex C, RSA) to each file.
    Sign(signing::SignArgs),
    /// Verify the DICOM digital signatures of each file.
    Verify(signing::VerifyArgs),
    /// The transparency ledger of image hashes: init, append, checkpoint, prove, verify.
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// RFC 3161 certified timestamps on signatures: stamp (online), query, insert.
    Timestamp {
        #[command(subcommand)]
        command: timestamping::TimestampCommand,
    },
    /// Remove the face and ears from head CT/MRI volumes, checked by the face check.
    Deface(defacing::DefaceArgs),
    /// Render a head scan's skin surface from several views and look for a face.
    FaceCheck(defacing::FaceCheckArgs),
    /// Serve the DICOMweb gateway: an encrypted image store (STOW-RS, WADO-RS, DELETE).
    Serve(Box<serving::ServeArgs>),
    /// Print a bearer token from the dev issuer of `radveil serve --dev`, for trying things out.
    Token(serving::TokenArgs),
    /// The gateway's audit trail: verify it; export it (FHIR AuditEvent, DICOM, syslog).
    Audit {
        #[command(subcommand)]
        command: auditing::AuditCommand,
    },
    /// The gateway's keys: rotate the key-encryption key.
    Keys {
        #[command(subcommand)]
        command: serving::KeysCommand,
    },
    /// A consent-checked, de-identified research export from the gateway's store, recorded
    /// as lineage and in each patient's access log.
    Export(exporting::ExportArgs),
    /// List the exports that hold a patient's images; write withdrawal notices for them.
    Lineage(exporting::LineageArgs),
    /// Report what identifying content is left in a de-identified set, whoever made it:
    /// names, dates, phone numbers, addresses and IDs in text at any depth, attributes
    /// Annex E says must go, vendor UID roots; with --quasi, k-anonymity. Exit 0 when
    /// nothing is found, 1 otherwise.
    Scan(scanning::ScanArgs),
    /// Write a new random de-identification key to FILE (mode 0600; never overwrites).
    Keygen {
        /// Where to write the key.
        file: PathBuf,
    },
}

/// Which objects are held back for possible burned-in text.
#[derive(Clone, Copy, ValueEnum)]
enum BurnedIn {
    /// Only objects whose Burned In Annotation is YES.
    Never,
    /// Also objects of modalities that often burn text in (US, SC, OT, XC, ES...) unless
    /// their Burned In Annotation is NO.
    UnlessNo,
}

#[derive(clap::Args)]
struct DeidArgs {
    /// Files or directories to de-identify (directories are walked; a DICOMDIR given here is
    /// followed to the files it references).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output directory; files are written as PATIENT/STUDY/SERIES/INSTANCE.dcm, named after
    /// the pseudonyms, and never overwritten.
    #[arg(long)]
    out: PathBuf,
    /// File holding the secret key (at least 32 bytes; make one with `radveil keygen`).
    /// Without it, the RADVEIL_KEY environment variable is used.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// An Annex E option (repeatable): retain-safe-private, retain-uids,
    /// retain-device-identity, retain-institution-identity, retain-patient-characteristics,
    /// retain-long-full-dates, retain-long-modified-dates, clean-descriptors,
    /// clean-structured-content, clean-graphics, clean-recognizable-visual-features (CT and
    /// MR volumes are defaced and checked for a face; a volume that shows one and cannot be
    /// defaced is held back).
    #[arg(long = "option", value_name = "NAME")]
    options: Vec<String>,
    /// With clean-recognizable-visual-features: leave the ears on.
    #[arg(long)]
    keep_ears: bool,
    /// A TOML profile with options, a UID root and per-attribute site rules.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Write one JSON line per input (no PHI) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write original-to-new ID and UID pairs (PHI!) as CSV files, mode 0600, into this
    /// directory.
    #[arg(long)]
    crosswalk: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Which objects to hold back for possible burned-in text.
    #[arg(long, value_enum, default_value = "never")]
    assume_burned_in: BurnedIn,
    /// Memory all workers share, like 4G or 512M (default: half of the available memory,
    /// the cgroup's limit or `ulimit -v`, whichever is least). A file that needs more than
    /// the whole budget is refused with the reason; one that needs memory others hold waits.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_size)]
    memory_limit: Option<u64>,
    /// Finish an interrupted run into the same --out: an output already there that is byte
    /// for byte what this run computes is kept (reported `kept`); a different one is never
    /// overwritten.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    keys: key::KeyPolicy,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RADVEIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only on a terminal: a log file or journal gets plain lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { file } => key::keygen(&file).map(|()| ExitCode::SUCCESS),
        Command::Deid(args) => deid(args),
        Command::Ledger { command } => ledger::run(command),
        Command::Sign(args) => signing::sign(args),
        Command::Verify(args) => signing::verify(args),
        Command::Timestamp { command } => timestamping::run(command),
        Command::FaceCheck(args) => defacing::face_check(args),
        Command::Deface(args) => defacing::deface(args),
        Command::Serve(args) => serving::serve(*args),
        Command::Keys { command } => serving::keys(command),
        Command::Audit { command } => auditing::run(command),
        Command::Token(args) => serving::token(args),
        Command::Export(args) => exporting::export(args),
        Command::Lineage(args) => exporting::lineage(args),
        Command::Scan(args) => scanning::scan(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("radveil: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn deid(args: DeidArgs) -> Result<ExitCode> {
    let key = key::load_with(args.key_file.as_deref(), args.keys)?;
    let mut profile = match &args.profile {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading profile {}", p.display()))?;
            radveil_deid::Profile::from_toml(&text)
                .with_context(|| format!("profile {}", p.display()))?
        }
        None => radveil_deid::Profile::default(),
    };
    for name in &args.options {
        profile.add_option(name)?;
    }
    let deface = profile
        .clean_visual_features
        .then_some(radveil_deface::DefaceOptions {
            ears: !args.keep_ears,
            verify: true,
        });
    if args.keep_ears && deface.is_none() {
        anyhow::bail!("--keep-ears needs --option clean-recognizable-visual-features");
    }
    let config = radveil_deid::Config {
        profile,
        burned_in: match args.assume_burned_in {
            BurnedIn::Never => radveil_deid::BurnedInPolicy::OnlyWhenYes,
            BurnedIn::UnlessNo => radveil_deid::BurnedInPolicy::UnlessNo,
        },
        crosswalk: args.crosswalk.is_some(),
    };
    let deidentifier = radveil_deid::Deidentifier::new(key, config)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let summary = batch::run(&radveil_pipeline::batch::Batch {
        deidentifier: &deidentifier,
        inputs: &args.inputs,
        out: &args.out,
        report: args.report.as_deref(),
        crosswalk: args.crosswalk.as_deref(),
        jobs,
        memory_limit: args
            .memory_limit
            .unwrap_or_else(radveil_pipeline::memory::default_limit),
        resume: args.resume,
        deface,
    })?;
    Ok(if summary.all_written() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Parses `--memory-limit`.
fn parse_memory_size(text: &str) -> std::result::Result<u64, String> {
    radveil_pipeline::memory::parse_size(text).map_err(|e| format!("memory limit: {e}"))
}

/// Writes to standard output; exits quietly when the reader has gone away.
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let result = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("radveil: cannot write to standard output: {e}");
        std::process::exit(2);
    }
}
