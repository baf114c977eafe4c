//! RFC 3161 certified timestamps on the signatures of one file at a time: stamped online by
//! an [`Authority`] (a TSA's HTTP endpoint, reached by the caller), or queries written out
//! for a TSA reached by other means. A file is read whole under the memory budget and its
//! outputs are written through [`Dir`], never over an existing file or through a link; a
//! file with no signature left to stamp is refused, and nothing is written for it.

use std::fmt;
use std::path::{Path, PathBuf};

use radveil_integrity::timestamp::{self, QueryOptions, TimestampError};
use radveil_part10 as p10;
use radveil_part10::MemoryBudget;

use crate::ordered::{map_in_order, Tally};
use crate::pool::{Panicked, Pool};
use crate::tree::{NoFileName, OutputTree};
use crate::whole::{read_whole, rewrite, ReadError, RewriteError, WholeFile};
use crate::{Dir, OutputError};

/// A timestamp authority: answers a query (TimeStampReq, DER) with its reply
/// (TimeStampResp, DER).
pub trait Authority: Sync {
    /// The reply to `query`, or why none came (one line, naming no input value).
    fn reply(&self, query: &[u8]) -> Result<Vec<u8>, String>;
}

/// A timestamp authority reached over HTTP (RFC 3161 §3.4: POST of
/// `application/timestamp-query`, answered by `application/timestamp-reply`); replies are
/// read up to [`MAX_REPLY`] bytes, and a request gives up after 30 seconds.
pub struct HttpAuthority {
    url: String,
    agent: ureq::Agent,
    /// How queries to it are made.
    pub options: QueryOptions,
}

/// Why an HTTP timestamp authority cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the TSA URL must start with http:// or https://")]
pub struct NotHttp;

impl HttpAuthority {
    /// A TSA at `url`, queried with `options`.
    pub fn new(url: &str, options: QueryOptions) -> Result<HttpAuthority, NotHttp> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(NotHttp);
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(30))
            .build();
        Ok(HttpAuthority {
            url: url.to_string(),
            agent,
            options,
        })
    }

    /// The hook `radveil sign --tsa` runs on each new signature: stamps it here.
    pub fn hook(&self) -> impl Fn(&mut p10::DataSet<'_>, &str) -> Result<(), String> + Sync + '_ {
        stamper(&self.options, self)
    }
}

impl Authority for HttpAuthority {
    fn reply(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        use std::io::Read;
        let resp = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/timestamp-query")
            .set("Accept", "application/timestamp-reply")
            .send_bytes(query)
            .map_err(|e| format!("timestamp authority {}: {e}", self.url))?;
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_REPLY + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading the timestamp reply: {e}"))?;
        if body.len() as u64 > MAX_REPLY {
            return Err(format!(
                "the timestamp reply is larger than {MAX_REPLY} bytes"
            ));
        }
        Ok(body)
    }
}

/// Why a file was not stamped, or its queries not written.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    /// The file could not be read within the budget.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The file could not be parsed or encoded again.
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
    /// The file is not Part 10.
    #[error(transparent)]
    Part10(#[from] p10::Error),
    /// A query, reply or token is not what RFC 3161 defines, or does not stamp its
    /// signature.
    #[error(transparent)]
    Timestamp(#[from] TimestampError),
    /// The authority gave no reply.
    #[error("{0}")]
    Authority(String),
    /// Every signature of the file has a timestamp already (or it has none).
    #[error("no signature without a timestamp")]
    NothingToStamp,
    /// The output path has no file name.
    #[error("input without a file name")]
    NoName,
    /// The output could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A file named by the operator could not be read.
    #[error("reading {path}")]
    Reading {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A query or reply file too large to be one.
    #[error("{} is larger than {MAX_REPLY} bytes: not a timestamp query or reply", .0.display())]
    TooLarge(PathBuf),
    /// Working on the file panicked (a bug).
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

impl From<NoFileName> for StampError {
    fn from(_: NoFileName) -> StampError {
        StampError::NoName
    }
}

/// The largest timestamp query or reply accepted (from a file, or from a TSA).
pub const MAX_REPLY: u64 = 1 << 20;

fn reading(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> StampError {
    StampError::Reading {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Reads a timestamp query or reply file (DER): a regular file only (a FIFO or device is
/// refused, never waited on), at most [`MAX_REPLY`] bytes.
pub fn read_der(path: &Path) -> Result<Vec<u8>, StampError> {
    use std::io::Read;
    let file = crate::input::open_regular(path).map_err(|e| reading(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_REPLY + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| reading(path, e))?;
    if bytes.len() as u64 > MAX_REPLY {
        return Err(StampError::TooLarge(path.to_path_buf()));
    }
    Ok(bytes)
}

/// Inserts a TSA's `reply` (TimeStampResp, DER) into the signature of the file `input` it
/// stamps, and writes the stamped file (same name) into the directory `out` (made when
/// missing; never over an existing file). When the `query` it answers is given, its
/// nonce, imprint and policy must match. Returns the file written.
pub fn insert_file(
    input: &Path,
    reply: &[u8],
    query: Option<&[u8]>,
    out: &Path,
    budget: &MemoryBudget,
) -> Result<PathBuf, StampError> {
    let query = query.map(timestamp::parse_query).transpose()?;
    let token = timestamp::token_from_reply(reply, query.as_ref(), None)?;
    let WholeFile { bytes, mut grant } =
        read_whole(input, budget).map_err(|e| reading(input, e))?;
    let stamped = rewrite(&bytes, &mut grant, |ds, _, _| {
        radveil_integrity::insert_timestamp(ds, &token)?;
        Ok::<(), StampError>(())
    })?;
    // One file named by the operator: the simple no-clobber, no-follow write.
    let target = out.join(input.file_name().ok_or(StampError::NoName)?);
    crate::write_new_file(&target, &stamped)?;
    Ok(target)
}

/// Stamps the signatures of `ds` that have no timestamp (only the one with UID `only`, when
/// given) at `authority`. Each reply must answer its query and stamp its signature. Returns
/// how many were stamped.
pub fn stamp(
    ds: &mut p10::DataSet<'_>,
    only: Option<&str>,
    options: &QueryOptions,
    authority: &dyn Authority,
) -> Result<usize, StampError> {
    let queries = radveil_integrity::timestamp_queries(ds, options)?;
    let mut n = 0;
    for (uid, query) in queries {
        if only.is_some_and(|o| o != uid) {
            continue;
        }
        let reply = authority.reply(&query).map_err(StampError::Authority)?;
        let parsed = timestamp::parse_query(&query)?;
        let token = timestamp::token_from_reply(&reply, Some(&parsed), None)?;
        radveil_integrity::insert_timestamp(ds, &token)?;
        n += 1;
    }
    Ok(n)
}

/// The hook `sign` runs on each new signature (see [`crate::sign::Stamp`]): stamps the
/// signature with that UID at `authority`; the error, its causes joined by `: `, is why the
/// file is not written.
pub fn stamper<'a>(
    options: &'a QueryOptions,
    authority: &'a dyn Authority,
) -> impl Fn(&mut p10::DataSet<'_>, &str) -> Result<(), String> + Sync + 'a {
    move |ds: &mut p10::DataSet<'_>, uid: &str| {
        stamp(ds, Some(uid), options, authority)
            .map(|_| ())
            .map_err(|e| crate::verify::chain(&e))
    }
}

/// A file whose signatures were stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// The stamped file written.
    pub output: PathBuf,
    /// How many signatures were stamped.
    pub count: usize,
}

impl fmt::Display for Stamped {
    /// `OUTPUT<TAB>COUNT`, what `radveil timestamp stamp` prints after the input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\t{}", self.output.display(), self.count)
    }
}

/// Stamps every signature of the file `path` that has no timestamp, and writes the stamped
/// file as `relative` below `out`.
pub fn stamp_file(
    path: &Path,
    relative: &Path,
    out: &Dir,
    options: &QueryOptions,
    authority: &dyn Authority,
    budget: &MemoryBudget,
) -> Result<Stamped, StampError> {
    let WholeFile { bytes, mut grant } = read_whole(path, budget)?;
    let mut count = 0;
    let stamped = rewrite(&bytes, &mut grant, |ds, _, _| {
        count = stamp(ds, None, options, authority)?;
        Ok::<(), StampError>(())
    })?;
    if count == 0 {
        return Err(StampError::NothingToStamp);
    }
    let output = out.write_bytes_at(relative, &stamped)?;
    Ok(Stamped { output, count })
}

/// The timestamp queries written for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    /// One query file per signature without a timestamp, in the signatures' order.
    pub written: Vec<PathBuf>,
}

impl fmt::Display for Queries {
    /// One `QUERY<TAB>signature N of M` line per query, what `radveil timestamp query`
    /// prints after the input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.written.len();
        for (i, q) in self.written.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}\tsignature {} of {n}", q.display(), i + 1)?;
        }
        Ok(())
    }
}

/// Writes a timestamp query (DER) for every signature of the file `path` without a
/// timestamp: `relative`'s name + `.tsq` below `out` (`.N.tsq` when it has several;
/// signatures are named by their order in the file, never by their UID).
pub fn query_file(
    path: &Path,
    relative: &Path,
    out: &Dir,
    options: &QueryOptions,
    budget: &MemoryBudget,
) -> Result<Queries, StampError> {
    let WholeFile { bytes, mut grant } = read_whole(path, budget)?;
    let queries = {
        let mut inflated = Vec::new();
        let (_, ds, _) =
            p10::read_file_in(&bytes, &mut inflated, p10::Limits::default(), &mut grant)?;
        radveil_integrity::timestamp_queries(&ds, options)?
    };
    if queries.is_empty() {
        return Err(StampError::NothingToStamp);
    }
    let name = relative
        .file_name()
        .ok_or(StampError::NoName)?
        .to_string_lossy();
    let mut written = Vec::with_capacity(queries.len());
    for (i, (_, der)) in queries.iter().enumerate() {
        let file = if queries.len() == 1 {
            format!("{name}.tsq")
        } else {
            format!("{name}.{}.tsq", i + 1)
        };
        written.push(out.write_bytes_at(&relative.with_file_name(file), der)?);
    }
    Ok(Queries { written })
}

/// Stamping, or writing queries for, a batch of files into one output directory.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    /// The output directory (opened once; nothing below it is overwritten or followed).
    pub out: &'a Dir,
    /// Each file's path below `out`.
    pub tree: &'a OutputTree,
    /// How queries are made.
    pub options: &'a QueryOptions,
    /// The memory every worker shares: each file is reserved before it is read.
    pub budget: &'a MemoryBudget,
}

impl Batch<'_> {
    /// Stamps every signature without a timestamp of each of `files` at `authority` (on
    /// `pool`'s workers: one query per worker at a time) and hands each file's result to
    /// `emit` in the order of `files`. Returns how many were stamped and how many failed.
    pub fn stamp_files<'f>(
        &self,
        pool: &Pool,
        files: &'f [PathBuf],
        authority: &dyn Authority,
        emit: impl FnMut(&'f Path, Result<Stamped, StampError>) + Send,
    ) -> Tally {
        self.each(pool, files, emit, |f, rel| {
            stamp_file(f, rel, self.out, self.options, authority, self.budget)
        })
    }

    /// Writes the timestamp queries of each of `files` (see [`query_file`]) and hands each
    /// file's result to `emit` in the order of `files`. Returns how many files had queries
    /// written and how many failed.
    pub fn query_files<'f>(
        &self,
        pool: &Pool,
        files: &'f [PathBuf],
        emit: impl FnMut(&'f Path, Result<Queries, StampError>) + Send,
    ) -> Tally {
        self.each(pool, files, emit, |f, rel| {
            query_file(f, rel, self.out, self.options, self.budget)
        })
    }

    fn each<'f, R: Send>(
        &self,
        pool: &Pool,
        files: &'f [PathBuf],
        mut emit: impl FnMut(&'f Path, Result<R, StampError>) + Send,
        work: impl Fn(&Path, &Path) -> Result<R, StampError> + Sync,
    ) -> Tally {
        let mut tally = Tally::default();
        map_in_order(
            pool,
            files,
            |f| work(f, &self.tree.relative(f)?),
            |f, result| {
                tally.count(&result);
                emit(f, result);
            },
        );
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::testing;
    use radveil_integrity::MacAlgorithm;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn options() -> QueryOptions {
        QueryOptions {
            mac: MacAlgorithm::Sha256,
            nonce: true,
            cert_req: true,
            policy: None,
        }
    }

    /// An authority that never answers, counting the queries it was sent.
    #[derive(Default)]
    struct Silent(AtomicUsize);

    impl Authority for Silent {
        fn reply(&self, query: &[u8]) -> Result<Vec<u8>, String> {
            assert!(timestamp::parse_query(query).is_ok());
            self.0.fetch_add(1, Ordering::Relaxed);
            Err("timestamp authority: connection refused".into())
        }
    }

    /// An authority answering garbage.
    struct Garbage;

    impl Authority for Garbage {
        fn reply(&self, _: &[u8]) -> Result<Vec<u8>, String> {
            Ok(vec![0x30, 0x03, 0x02, 0x01, 0x00])
        }
    }

    #[test]
    fn a_signed_file_gets_one_query_per_signature_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let input = dir.path().join("in.dcm");
        std::fs::write(&input, testing::signed_file(&budget)).unwrap();
        let out = Dir::create(&dir.path().join("out")).unwrap();
        let rel = Path::new("a/in.dcm");
        let q = query_file(&input, rel, &out, &options(), &budget).unwrap();
        let tsq = dir.path().join("out/a/in.dcm.tsq");
        assert_eq!(q.written, vec![tsq.clone()]);
        assert_eq!(
            q.to_string(),
            format!("{}\tsignature 1 of 1", tsq.display())
        );
        let der = std::fs::read(&tsq).unwrap();
        assert!(timestamp::parse_query(&der).is_ok());
        let again = query_file(&input, rel, &out, &options(), &budget);
        assert!(matches!(again, Err(StampError::Output(_))), "{again:?}");
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn an_unsigned_file_is_refused_and_no_authority_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let input = dir.path().join("in.dcm");
        std::fs::write(&input, testing::unsigned_file()).unwrap();
        let out = Dir::create(&dir.path().join("out")).unwrap();
        let rel = Path::new("in.dcm");
        let q = query_file(&input, rel, &out, &options(), &budget).unwrap_err();
        assert_eq!(q.to_string(), "no signature without a timestamp");
        let silent = Silent::default();
        let s = stamp_file(&input, rel, &out, &options(), &silent, &budget).unwrap_err();
        assert!(matches!(s, StampError::NothingToStamp), "{s:?}");
        assert_eq!(silent.0.load(Ordering::Relaxed), 0);
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_stamp_that_fails_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let input = dir.path().join("in.dcm");
        std::fs::write(&input, testing::signed_file(&budget)).unwrap();
        let out = Dir::create(&dir.path().join("out")).unwrap();
        let rel = Path::new("in.dcm");
        let silent = Silent::default();
        let e = stamp_file(&input, rel, &out, &options(), &silent, &budget).unwrap_err();
        assert_eq!(e.to_string(), "timestamp authority: connection refused");
        assert_eq!(silent.0.load(Ordering::Relaxed), 1);
        let e = stamp_file(&input, rel, &out, &options(), &Garbage, &budget).unwrap_err();
        assert!(matches!(e, StampError::Timestamp(_)), "{e:?}");
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_reply_that_is_not_one_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let input = dir.path().join("in.dcm");
        std::fs::write(&input, testing::signed_file(&budget)).unwrap();
        let out = dir.path().join("out");
        let e = insert_file(&input, b"not DER", None, &out, &budget).unwrap_err();
        assert!(matches!(e, StampError::Timestamp(_)), "{e:?}");
        assert!(!out.join("in.dcm").exists());
        // Query and reply files: regular, and small.
        let big = dir.path().join("big.tsr");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_REPLY + 1)
            .unwrap();
        let e = read_der(&big).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is larger than {MAX_REPLY} bytes: not a timestamp query or reply",
                big.display()
            )
        );
        let e = read_der(dir.path()).unwrap_err();
        assert!(matches!(e, StampError::Reading { .. }), "{e:?}");
        assert!(e.to_string().starts_with("reading "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let small = dir.path().join("q.tsq");
        std::fs::write(&small, b"\x30\x00").unwrap();
        assert_eq!(read_der(&small).unwrap(), b"\x30\x00");
    }

    #[test]
    fn a_batch_reports_each_file_in_input_order_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let input = dir.path().join("in");
        std::fs::create_dir_all(input.join("a")).unwrap();
        std::fs::create_dir_all(input.join("b")).unwrap();
        let signed = testing::signed_file(&budget);
        std::fs::write(input.join("a/x.dcm"), &signed).unwrap();
        std::fs::write(input.join("b/x.dcm"), &signed).unwrap();
        std::fs::write(input.join("a/plain.dcm"), testing::unsigned_file()).unwrap();
        let files = [
            input.join("b/x.dcm"),
            input.join("a/plain.dcm"),
            input.join("a/x.dcm"),
        ];
        let out = Dir::create(&dir.path().join("out")).unwrap();
        let tree = OutputTree::new(std::slice::from_ref(&input));
        let options = options();
        let batch = Batch {
            out: &out,
            tree: &tree,
            options: &options,
            budget: &budget,
        };
        let mut seen = Vec::new();
        let tally = batch.query_files(&Pool::new(3), &files, |f, r| {
            seen.push((f.to_path_buf(), r.map(|q| q.written)));
        });
        assert_eq!(tally, Tally { done: 2, failed: 1 });
        let paths: Vec<&PathBuf> = seen.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, files.iter().collect::<Vec<_>>());
        let q = |rel: &str| Some(vec![dir.path().join("out").join(rel)]);
        assert_eq!(seen[0].1.as_ref().ok().cloned(), q("b/x.dcm.tsq"));
        assert!(matches!(seen[1].1, Err(StampError::NothingToStamp)));
        assert_eq!(seen[2].1.as_ref().ok().cloned(), q("a/x.dcm.tsq"));

        // Stamping: an authority that never answers fails every file, and writes nothing.
        let stamped = Dir::create(&dir.path().join("stamped")).unwrap();
        let batch = Batch {
            out: &stamped,
            ..batch
        };
        let silent = Silent::default();
        let mut errors = Vec::new();
        let tally = batch.stamp_files(&Pool::new(2), &files, &silent, |_, r| {
            errors.push(r.unwrap_err().to_string());
        });
        assert_eq!(tally, Tally { done: 0, failed: 3 });
        assert_eq!(
            errors,
            [
                "timestamp authority: connection refused",
                "no signature without a timestamp",
                "timestamp authority: connection refused"
            ]
        );
        assert_eq!(silent.0.load(Ordering::Relaxed), 2);
        assert_eq!(std::fs::read_dir(stamped.path()).unwrap().count(), 0);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn the_sign_hook_stamps_only_the_new_signature_and_says_why_not() {
        let budget = MemoryBudget::new(64 << 20);
        let signed = testing::signed_file(&budget);
        let mut inflated = Vec::new();
        let (_, mut ds, _) =
            p10::read_file(&signed, &mut inflated, p10::Limits::default()).unwrap();
        let options = options();
        let silent = Silent::default();
        let hook = stamper(&options, &silent);
        // Another signature's UID: nothing asked, nothing stamped.
        hook(&mut ds, "2.25.1").unwrap();
        assert_eq!(silent.0.load(Ordering::Relaxed), 0);
        let uid = radveil_integrity::timestamp_queries(&ds, &options).unwrap()[0]
            .0
            .clone();
        let e = hook(&mut ds, &uid).unwrap_err();
        assert_eq!(e, "timestamp authority: connection refused");
        assert_eq!(silent.0.load(Ordering::Relaxed), 1);
        // A reply that is not one: refused, with the reason of the direct call.
        let direct = stamp(&mut ds, Some(&uid), &options, &Garbage).unwrap_err();
        let e = stamper(&options, &Garbage)(&mut ds, &uid).unwrap_err();
        assert_eq!(e, crate::verify::chain(&direct));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("in.dcm");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let budget = MemoryBudget::new(64 << 20);
        let out = Dir::create(&dir.path().join("out")).unwrap();
        let e = query_file(&fifo, Path::new("in.dcm"), &out, &options(), &budget).unwrap_err();
        assert!(matches!(e, StampError::Read(_)), "{e:?}");
        let e = read_der(&fifo).unwrap_err();
        assert!(matches!(e, StampError::Reading { .. }), "{e:?}");
    }
}
