//! Naming each output of a batch after its input's place in the input tree, so that
//! `a/x.dcm` and `b/x.dcm` never meet in the output directory (`radveil sign`, `radveil
//! timestamp stamp` and `query`).

use std::path::{Component, Path, PathBuf};

/// An input file has no file name to name its output after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("input without a file name")]
pub struct NoFileName;

/// Where each input file's output goes, relative to the output directory: a file found
/// under a directory given on the command line keeps its path below that directory (so
/// `a/x.dcm` and `b/x.dcm` stay apart), a file referenced by a DICOMDIR keeps its path below
/// the DICOMDIR's directory, and a file given by name keeps its name.
#[derive(Debug, Clone, Default)]
pub struct OutputTree {
    bases: Vec<PathBuf>,
}

impl OutputTree {
    /// The tree of these command-line inputs (directories, DICOMDIRs and files).
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
    /// plain names come out: never an absolute path, `.` or `..`.
    pub fn relative(&self, file: &Path) -> Result<PathBuf, NoFileName> {
        let below = self
            .bases
            .iter()
            .filter_map(|b| file.strip_prefix(b).ok())
            .filter(|rel| is_plain(rel))
            .max_by_key(|rel| rel.components().count());
        match below {
            Some(rel) => Ok(rel.to_path_buf()),
            None => Ok(PathBuf::from(file.file_name().ok_or(NoFileName)?)),
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

    #[test]
    fn same_names_in_two_directory_inputs_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(a.join("s")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let tree = OutputTree::new(&[dir.path().to_path_buf()]);
        let x = tree.relative(&a.join("x.dcm")).unwrap();
        let y = tree.relative(&b.join("x.dcm")).unwrap();
        assert_eq!(
            (x.as_path(), y.as_path()),
            (Path::new("a/x.dcm"), Path::new("b/x.dcm"))
        );
        // A DICOMDIR given by name: its files keep their path below its directory.
        let tree = OutputTree::new(&[a.join("DICOMDIR")]);
        assert_eq!(tree.relative(&a.join("s/IM1")).unwrap(), Path::new("s/IM1"));
    }

    #[test]
    fn only_plain_relative_names_come_out() {
        let dir = tempfile::tempdir().unwrap();
        let tree = OutputTree::new(&[dir.path().to_path_buf()]);
        // Not below the input directory (`..`): its file name only.
        let outside = dir.path().join("../elsewhere/x.dcm");
        assert_eq!(tree.relative(&outside).unwrap(), Path::new("x.dcm"));
        // The input directory itself, or a path ending in `..`: no name to use.
        assert_eq!(
            tree.relative(dir.path()).unwrap(),
            Path::new(dir.path().file_name().unwrap())
        );
        assert_eq!(tree.relative(Path::new("/")), Err(NoFileName));
        assert_eq!(tree.relative(Path::new("a/..")), Err(NoFileName));
        assert_eq!(NoFileName.to_string(), "input without a file name");
    }
}
