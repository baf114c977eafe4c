//! Inputs read whole under the memory budget, and Part 10 files rewritten in their own
//! encoding: what signing, verifying, timestamping and the ledger share (de-identification
//! reads only the head of a file, see [`crate::input`]).

use std::io::Read;
use std::path::Path;

use radveil_part10 as p10;
use radveil_part10::{BudgetError, Grant, MemoryBudget, DEFAULT_WAIT};

use crate::input::{open_regular, InputError};

/// An input file read whole, with the memory granted for it: its bytes, and what parsing
/// and rewriting charge as they grow.
#[derive(Debug)]
pub struct WholeFile<'b> {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The memory granted; released when dropped.
    pub grant: Grant<'b>,
}

/// Why a file could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not opened, or not a regular file.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Reading failed.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// The budget cannot hold the file.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// The file's size does not fit in memory on this machine.
    #[error(transparent)]
    Size(#[from] std::num::TryFromIntError),
    /// The allocator refused the file's size.
    #[error(transparent)]
    Alloc(#[from] std::collections::TryReserveError),
    /// The file grew or shrank while it was read.
    #[error("the file changed size while it was read")]
    Changed,
}

/// Reads the regular file at `path` whole under `budget`: its size is reserved before
/// anything is allocated (waiting for memory other workers hold), so a file larger than the
/// budget is refused unread; FIFOs, devices and sockets are refused unopened for reading.
pub fn read_whole<'b>(path: &Path, budget: &'b MemoryBudget) -> Result<WholeFile<'b>, ReadError> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    // One byte more, to see that the file did not grow while it was read.
    let whole = len.saturating_add(1);
    let grant = budget.reserve(whole, DEFAULT_WAIT)?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(usize::try_from(whole)?)?;
    file.take(whole).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(ReadError::Changed);
    }
    Ok(WholeFile { bytes, grant })
}

/// Why a Part 10 file could not be rewritten (what the change itself refuses is the
/// caller's error).
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// Not a readable Part 10 file, or over the budget while parsed.
    #[error(transparent)]
    Read(#[from] p10::Error),
    /// The data set is not encoded as its transfer syntax says.
    #[error("the data set's encoding does not match its transfer syntax")]
    Encoding,
    /// The budget cannot hold the output.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// The allocator refused the output.
    #[error(transparent)]
    Alloc(#[from] std::collections::TryReserveError),
}

/// Parses a Part 10 file, lets `change` alter its data set (given its encoding and transfer
/// syntax), and returns the file encoded again in its own transfer syntax. A deflated data
/// set is changed inflated and deflated again. The tree, the inflated bytes and the output
/// are charged to `grant`.
pub fn rewrite<E: From<RewriteError>>(
    bytes: &[u8],
    grant: &mut Grant<'_>,
    change: impl FnOnce(&mut p10::DataSet<'_>, p10::Encoding, &str) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let mut inflated = Vec::new();
    let (meta, mut ds, enc) =
        p10::read_file_in(bytes, &mut inflated, p10::Limits::default(), grant)
            .map_err(RewriteError::from)?;
    if enc != p10::TransferSyntax::from_uid(&meta.transfer_syntax).encoding {
        return Err(RewriteError::Encoding.into());
    }
    change(&mut ds, enc, &meta.transfer_syntax)?;
    // The output: about the input's size (a deflated one's inflated bytes are charged
    // already, by the reader).
    let estimate = bytes.len().saturating_add(8192);
    grant.grow(estimate as u64).map_err(RewriteError::from)?;
    let mut out = Vec::new();
    out.try_reserve(estimate).map_err(RewriteError::from)?;
    p10::write_file(&meta.elements, &ds, &meta.transfer_syntax, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_larger_than_the_budget_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.dcm");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(10 << 20).unwrap();
        let small = MemoryBudget::new(1 << 20);
        assert!(matches!(
            read_whole(&path, &small),
            Err(ReadError::Budget(_))
        ));
        assert_eq!(small.in_use(), 0);
        let enough = MemoryBudget::new(64 << 20);
        let whole = read_whole(&path, &enough).unwrap();
        assert_eq!(whole.bytes.len(), 10 << 20);
        assert!(enough.in_use() > 10 << 20);
        drop(whole);
        assert_eq!(enough.in_use(), 0);
        // Not a regular file: refused.
        assert!(matches!(
            read_whole(dir.path(), &enough),
            Err(ReadError::Input(InputError::NotRegular(_)))
        ));
    }

    #[test]
    fn a_file_that_is_not_part10_is_not_rewritten() {
        let budget = MemoryBudget::new(1 << 20);
        let mut grant = budget.reserve(0, DEFAULT_WAIT).unwrap();
        let r: Result<Vec<u8>, RewriteError> =
            rewrite(b"not dicom at all", &mut grant, |_, _, _| Ok(()));
        assert!(matches!(r, Err(RewriteError::Read(_))));
    }
}
