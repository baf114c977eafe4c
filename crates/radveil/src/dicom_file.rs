//! What `sign`, `verify`, `ledger` and `timestamp` share: reading a whole input under the
//! run's memory budget, rewriting a Part 10 file's data set in its own encoding, and naming
//! each output after its input's place in the input tree.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use radveil_part10 as p10;
use radveil_part10::{Grant, MemoryBudget, DEFAULT_WAIT};

/// An input file read whole, with the memory granted for it: its bytes, and what parsing
/// and rewriting charge as they grow.
pub struct WholeFile<'b> {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The memory granted; released when dropped.
    pub grant: Grant<'b>,
}

/// The memory budget of a run of these commands: the machine's default (see
/// `radveil_pipeline::memory::default_limit`).
pub fn default_budget() -> MemoryBudget {
    MemoryBudget::new(radveil_pipeline::memory::default_limit())
}

/// Reads the regular file at `path` whole under `budget`: its size is reserved before
/// anything is allocated (waiting for memory other workers hold), so a file larger than the
/// budget is refused unread; FIFOs, devices and sockets are refused unopened for reading.
pub fn read_whole<'b>(path: &Path, budget: &'b MemoryBudget) -> Result<WholeFile<'b>> {
    let file = radveil_pipeline::input::open_regular(path)?;
    let len = file.metadata()?.len();
    // One byte more, to see that the file did not grow while it was read.
    let whole = len.saturating_add(1);
    let grant = budget.reserve(whole, DEFAULT_WAIT)?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(usize::try_from(whole)?)?;
    file.take(whole).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        bail!("the file changed size while it was read");
    }
    Ok(WholeFile { bytes, grant })
}

/// Parses a Part 10 file, lets `change` alter its data set (given its encoding and transfer
/// syntax), and returns the file encoded again in its own transfer syntax. A deflated data
/// set is changed inflated and deflated again. The tree, the inflated bytes and the output
/// are charged to `grant`.
pub fn rewrite(
    bytes: &[u8],
    grant: &mut Grant<'_>,
    change: impl FnOnce(&mut p10::DataSet<'_>, p10::Encoding, &str) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut inflated = Vec::new();
    let (meta, mut ds, enc) =
        p10::read_file_in(bytes, &mut inflated, p10::Limits::default(), grant)?;
    if enc != p10::TransferSyntax::from_uid(&meta.transfer_syntax).encoding {
        bail!("the data set's encoding does not match its transfer syntax");
    }
    change(&mut ds, enc, &meta.transfer_syntax)?;
    // The output: about the input's size (a deflated one's inflated bytes are charged
    // already, by the reader).
    let estimate = bytes.len().saturating_add(8192);
    grant.grow(estimate as u64)?;
    let mut out = Vec::new();
    out.try_reserve(estimate)?;
    p10::write_file(&meta.elements, &ds, &meta.transfer_syntax, &mut out);
    Ok(out)
}

/// Parses a Part 10 file, charging the tree to `grant`, and hands its data set to `f`.
pub fn with_dataset<T>(
    bytes: &[u8],
    grant: &mut Grant<'_>,
    f: impl FnOnce(&p10::DataSet<'_>) -> Result<T>,
) -> Result<T> {
    let mut inflated = Vec::new();
    let (_, ds, _) = p10::read_file_in(bytes, &mut inflated, p10::Limits::default(), grant)?;
    f(&ds)
}

/// Where each input file's output goes, relative to the output directory: a file found
/// under a directory given on the command line keeps its path below that directory (so
/// `a/x.dcm` and `b/x.dcm` stay apart), a file referenced by a DICOMDIR keeps its path below
/// the DICOMDIR's directory, and a file given by name keeps its name.
pub struct OutputTree {
    bases: Vec<PathBuf>,
}

impl OutputTree {
    /// The tree of these command-line inputs.
    pub fn new(inputs: &[PathBuf]) -> OutputTree {
        let bases = inputs
            .iter()
            .filter_map(|input| {
                if input.is_dir() {
                    Some(input.clone())
                } else if input
                    .file_name()
                    .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
                {
                    Some(
                        input
                            .parent()
                            .filter(|p| !p.as_os_str().is_empty())
                            .unwrap_or(Path::new("."))
                            .to_path_buf(),
                    )
                } else {
                    None
                }
            })
            .collect();
        OutputTree { bases }
    }

    /// The relative output path of `file` (one of the files the inputs expand to). Only
    /// plain names come out: never an absolute path or `..`.
    pub fn relative(&self, file: &Path) -> Result<PathBuf> {
        let below = self
            .bases
            .iter()
            .filter_map(|b| file.strip_prefix(b).ok())
            .filter(|rel| is_plain(rel))
            .max_by_key(|rel| rel.components().count());
        match below {
            Some(rel) => Ok(rel.to_path_buf()),
            None => Ok(PathBuf::from(
                file.file_name().context("input without a file name")?,
            )),
        }
    }
}

/// Whether `rel` is a non-empty relative path of plain names.
fn is_plain(rel: &Path) -> bool {
    rel.components().next().is_some() && rel.components().all(|c| matches!(c, Component::Normal(_)))
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
        assert!(read_whole(&path, &small).is_err());
        assert_eq!(small.in_use(), 0);
        let enough = MemoryBudget::new(64 << 20);
        let whole = read_whole(&path, &enough).unwrap();
        assert_eq!(whole.bytes.len(), 10 << 20);
        assert!(enough.in_use() > 10 << 20);
        drop(whole);
        assert_eq!(enough.in_use(), 0);
        // Not a regular file: refused.
        assert!(read_whole(dir.path(), &enough).is_err());
    }

    #[test]
    fn outputs_keep_the_tree_below_each_directory_input() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        let single = dir.path().join("single.dcm");
        let tree = OutputTree::new(&[root.clone(), single.clone()]);
        assert_eq!(
            tree.relative(&root.join("a/x.dcm")).unwrap(),
            Path::new("a/x.dcm")
        );
        assert_eq!(
            tree.relative(&root.join("b/c/x.dcm")).unwrap(),
            Path::new("b/c/x.dcm")
        );
        assert_eq!(tree.relative(&single).unwrap(), Path::new("single.dcm"));
        // A nested directory given too: the longer path below the outer one wins.
        let tree = OutputTree::new(&[root.join("b"), root.clone()]);
        assert_eq!(
            tree.relative(&root.join("b/c/x.dcm")).unwrap(),
            Path::new("b/c/x.dcm")
        );
    }
}
