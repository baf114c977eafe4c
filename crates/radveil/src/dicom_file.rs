//! What `sign`, `verify`, `ledger` and `timestamp` share: the run's memory budget, and
//! naming each output after its input's place in the input tree. (Reading a whole input and
//! rewriting a Part 10 file are `radveil_pipeline::whole`'s.)

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use radveil_part10::MemoryBudget;

/// The memory budget of a run of these commands: the machine's default (see
/// `radveil_pipeline::memory::default_limit`).
pub fn default_budget() -> MemoryBudget {
    MemoryBudget::new(radveil_pipeline::memory::default_limit())
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
