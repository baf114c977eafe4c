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

use crate::whole::{read_whole, rewrite, ReadError, RewriteError, WholeFile};
use crate::{Dir, OutputError};

/// A timestamp authority: answers a query (TimeStampReq, DER) with its reply
/// (TimeStampResp, DER).
pub trait Authority: Sync {
    /// The reply to `query`, or why none came (one line, naming no input value).
    fn reply(&self, query: &[u8]) -> Result<Vec<u8>, String>;
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
