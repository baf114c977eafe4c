//! `radveil timestamp`: RFC 3161 certified timestamps on DICOM signatures, online (a TSA's
//! HTTP endpoint, RFC 3161 §3.4) or offline (query files out, reply files in, as dcmsign's
//! `+ts` and `--insert-timestamp`).

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use radveil_integrity::timestamp::QueryOptions;
use radveil_integrity::MacAlgorithm;
use radveil_pipeline::ordered::Tally;
use radveil_pipeline::pool::Pool;
use radveil_pipeline::timestamp::{insert_file, read_der, Batch, HttpAuthority, StampError};
use radveil_pipeline::tree::OutputTree;
use radveil_pipeline::Dir;

use crate::dicom_file::default_budget;

/// How timestamp queries are made.
#[derive(clap::Args, Clone)]
pub struct QueryArgs {
    /// Digest of the timestamp imprint: sha256 (default), sha384, sha512, sha1, ripemd160.
    #[arg(long, value_name = "MAC", default_value = "sha256")]
    ts_mac: String,
    /// Request this TSA policy OID.
    #[arg(long, value_name = "OID")]
    ts_policy: Option<String>,
    /// Leave the random nonce out of the query.
    #[arg(long)]
    ts_no_nonce: bool,
    /// Do not ask the TSA to include its certificate in the token.
    #[arg(long)]
    ts_no_cert: bool,
}

impl QueryArgs {
    /// The query options these arguments ask for.
    pub fn query_options(&self) -> Result<QueryOptions> {
        let mac = MacAlgorithm::from_term(&self.ts_mac)
            .filter(|m| *m != MacAlgorithm::Md5)
            .with_context(|| format!("unknown or unsafe timestamp MAC {:?}", self.ts_mac))?;
        Ok(QueryOptions {
            mac,
            nonce: !self.ts_no_nonce,
            cert_req: !self.ts_no_cert,
            policy: self.ts_policy.clone(),
        })
    }
}

/// `radveil timestamp` subcommands.
#[derive(clap::Subcommand)]
pub enum TimestampCommand {
    /// Stamp every signature without a timestamp at a TSA over HTTP, writing the stamped
    /// files to DIR.
    Stamp {
        /// Signed DICOM files or directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The TSA's URL (http:// or https://).
        #[arg(long, value_name = "URL")]
        tsa: String,
        /// Output directory: a file keeps its path below the directory it was found in
        /// (its name when given by name); never overwritten.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        ts: QueryArgs,
    },
    /// Write a timestamp query (.tsq, DER) for every signature without a timestamp, to be
    /// sent to a TSA by other means (e.g. `openssl ts -reply` or `curl`).
    Query {
        /// Signed DICOM files or directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Directory for the queries: NAME.tsq (NAME.N.tsq when a file has several
        /// signatures), below the path the file had in the directory it was found in;
        /// never overwritten.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        ts: QueryArgs,
    },
    /// Insert a TSA's reply (.tsr, DER) into the signature it stamps.
    Insert {
        /// The signed DICOM file.
        input: PathBuf,
        /// The TSA's reply (TimeStampResp, DER).
        #[arg(long)]
        reply: PathBuf,
        /// The query it answers: its nonce, imprint and policy must match.
        #[arg(long)]
        query: Option<PathBuf>,
        /// Output directory (the file keeps its name; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a `radveil timestamp` subcommand.
pub fn run(cmd: TimestampCommand) -> Result<ExitCode> {
    let pool = Pool::all_cores(); // signing's pace: one query per worker at a time
    match cmd {
        TimestampCommand::Stamp {
            inputs,
            tsa,
            out,
            ts,
        } => {
            let tsa = HttpAuthority::new(&tsa, ts.query_options()?)?;
            batch(&inputs, &out, &tsa.options, "stamped", |b, files, emit| {
                b.stamp_files(&pool, files, &tsa, emit)
            })
        }
        TimestampCommand::Query { inputs, out, ts } => batch(
            &inputs,
            &out,
            &ts.query_options()?,
            "query",
            |b, files, emit| b.query_files(&pool, files, emit),
        ),
        TimestampCommand::Insert {
            input,
            reply,
            query,
            out,
        } => {
            let reply = read_der(&reply)?;
            let query = query.as_deref().map(read_der).transpose()?;
            let target = insert_file(&input, &reply, query.as_deref(), &out, &default_budget())?;
            outln!("inserted\t{}\t{}", input.display(), target.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What a batch hands each file's result to.
type Emit<'e, R> = dyn FnMut(&Path, Result<R, StampError>) + Send + 'e;

/// Runs `each` over the input files into `out`; prints each file's lines (`VERB<TAB>INPUT<TAB>
/// ...`) in input order, and each failure, then the summary; the batch goes on after one.
fn batch<R: Display>(
    inputs: &[PathBuf],
    out: &Path,
    options: &QueryOptions,
    verb: &str,
    each: impl FnOnce(&Batch<'_>, &[PathBuf], &mut Emit<'_, R>) -> Tally,
) -> Result<ExitCode> {
    let tree = OutputTree::new(inputs);
    let out = Dir::create(out)?;
    let budget = default_budget();
    let (files, refused) = crate::inputs::collect(inputs);
    let failed = crate::signing::report_refused(&refused);
    let batch = Batch {
        out: &out,
        tree: &tree,
        options,
        budget: &budget,
    };
    let tally = each(&batch, &files, &mut |f, result| match result {
        Ok(done) => {
            for l in done.to_string().lines() {
                outln!("{verb}\t{}\t{l}", f.display());
            }
        }
        Err(e) => eprintln!("radveil: {}: {:#}", f.display(), anyhow::Error::from(e)),
    });
    let failed = failed + tally.failed;
    eprintln!("radveil timestamp: {} done, {failed} failed", tally.done);
    Ok(ExitCode::from(u8::from(failed > 0)))
}
