//! Turning command-line inputs into the list of files to process. Only regular files are
//! listed; everything else met on the way is returned by name with the reason, so a batch
//! reports it instead of hanging on a FIFO, reading a device forever, or skipping silently.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use radveil_part10::MemoryBudget;
use radveil_standard::tags;

use crate::input::{open_regular, FileKind, InputError};

/// An entry that is not processed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The path as named or found.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
    /// Whether the operator asked for it (named it, or a DICOMDIR named by the operator
    /// references it) rather than it being met while walking a directory: a named input
    /// that is not processed is a failure, a walked one is skipped.
    pub named: bool,
}

/// The files to process (sorted, without repeats) and the entries refused.
#[derive(Debug, Default)]
pub struct Walked {
    /// Regular files.
    pub files: Vec<PathBuf>,
    /// Everything else, by name.
    pub refused: Vec<Refused>,
}

/// Largest DICOMDIR read (its records only name files).
const MAX_DICOMDIR: u64 = 256 << 20;

/// Expands the inputs. Directories are walked (symbolic links to directories are reported,
/// not followed; links to regular files are followed); a file named DICOMDIR given directly
/// is replaced by the files it references.
pub fn collect(inputs: &[PathBuf], budget: &MemoryBudget) -> Walked {
    let mut files = BTreeSet::new();
    let mut refused = Vec::new();
    for input in inputs {
        let meta = match std::fs::metadata(input) {
            Ok(m) => m,
            Err(e) => {
                let reason = match std::fs::symlink_metadata(input) {
                    Ok(m) if m.file_type().is_symlink() => {
                        "a dangling symbolic link; not read".to_string()
                    }
                    _ => format!("cannot read: {e}"),
                };
                refused.push(Refused {
                    path: input.clone(),
                    reason,
                    named: true,
                });
                continue;
            }
        };
        match FileKind::of(meta.file_type()) {
            FileKind::Directory => walk(input, &mut files, &mut refused),
            FileKind::Regular if is_dicomdir_name(input) => {
                match dicomdir_references(input, budget) {
                    Ok(refs) => {
                        for r in refs {
                            match std::fs::metadata(&r) {
                                Ok(m) if m.is_file() => {
                                    files.insert(r);
                                }
                                Ok(m) => refused.push(Refused {
                                    reason: format!(
                                        "not a regular file but {}; not read",
                                        FileKind::of(m.file_type())
                                    ),
                                    path: r,
                                    named: true,
                                }),
                                Err(e) => refused.push(Refused {
                                    path: r,
                                    reason: format!("cannot read: {e}"),
                                    named: true,
                                }),
                            }
                        }
                    }
                    Err(e) => refused.push(Refused {
                        path: input.clone(),
                        reason: format!("DICOMDIR unreadable: {e}"),
                        named: true,
                    }),
                }
            }
            FileKind::Regular => {
                files.insert(input.clone());
            }
            kind => refused.push(Refused {
                path: input.clone(),
                reason: format!("not a regular file but {kind}; not read"),
                named: true,
            }),
        }
    }
    Walked {
        files: files.into_iter().collect(),
        refused,
    }
}

fn is_dicomdir_name(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
}

/// Walks `root` without recursion (a deep tree cannot exhaust the stack).
fn walk(root: &Path, files: &mut BTreeSet<PathBuf>, refused: &mut Vec<Refused>) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                refused.push(Refused {
                    path: dir.clone(),
                    reason: format!("cannot read directory: {e}"),
                    named: dir == root,
                });
                continue;
            }
        };
        let mut skip = |path: PathBuf, reason: String| {
            refused.push(Refused {
                path,
                reason,
                named: false,
            })
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    skip(dir.clone(), format!("cannot read directory: {e}"));
                    break;
                }
            };
            let path = entry.path();
            let kind = match entry.file_type() {
                Ok(t) => FileKind::of(t),
                Err(e) => {
                    skip(path, format!("cannot read: {e}"));
                    continue;
                }
            };
            match kind {
                FileKind::Directory => stack.push(path),
                FileKind::Regular => {
                    files.insert(path);
                }
                FileKind::Symlink => match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => {
                        files.insert(path);
                    }
                    Ok(m) if m.is_dir() => skip(
                        path,
                        "a symbolic link to a directory; not followed".to_string(),
                    ),
                    Ok(m) => skip(
                        path,
                        format!(
                            "a symbolic link to {}; not read",
                            FileKind::of(m.file_type())
                        ),
                    ),
                    Err(_) => skip(path, "a dangling symbolic link; not read".to_string()),
                },
                kind => skip(path, format!("not a regular file but {kind}; not read")),
            }
        }
    }
}

/// Why a DICOMDIR could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum DicomdirError {
    /// It could not be opened or read.
    #[error("{0}")]
    Input(#[from] InputError),
    /// It is not a readable DICOM file.
    #[error("{0}")]
    Read(#[from] radveil_part10::Error),
    /// It is larger than any DICOMDIR should be.
    #[error("larger than {MAX_DICOMDIR} bytes")]
    TooLarge,
    /// A Referenced File ID climbs out of the DICOMDIR's directory.
    #[error("Referenced File ID leaves the DICOMDIR's directory")]
    Escapes,
}

/// The files a DICOMDIR references (Referenced File ID of every directory record).
fn dicomdir_references(path: &Path, budget: &MemoryBudget) -> Result<Vec<PathBuf>, DicomdirError> {
    use radveil_part10 as p10;
    let file = open_regular(path)?;
    let len = file
        .metadata()
        .map_err(|e| DicomdirError::Input(InputError::Read(e)))?
        .len();
    if len > MAX_DICOMDIR {
        return Err(DicomdirError::TooLarge);
    }
    // The bytes and the element tree.
    let _grant = budget
        .reserve(len.saturating_mul(4), radveil_part10::DEFAULT_WAIT)
        .map_err(|e| DicomdirError::Input(InputError::Memory(e)))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_DICOMDIR)
        .read_to_end(&mut bytes)
        .map_err(|e| DicomdirError::Input(InputError::Read(e)))?;
    let meta = p10::read_file_meta(&bytes)?;
    let ts = p10::TransferSyntax::from_uid(&meta.transfer_syntax);
    let ds = p10::read_dataset(
        meta.body,
        p10::effective_encoding(meta.body, ts.encoding),
        p10::Limits::default(),
    )?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    if let Some(p10::Value::Sequence(records)) =
        ds.get(tags::DIRECTORY_RECORD_SEQUENCE).map(|e| &e.value)
    {
        for rec in records {
            if let Some(id) = rec.string(tags::REFERENCED_FILE_ID) {
                let mut p = base.to_path_buf();
                for comp in id.split('\\').map(str::trim).filter(|c| !c.is_empty()) {
                    if comp == ".." || comp.contains('/') {
                        return Err(DicomdirError::Escapes);
                    }
                    p.push(comp);
                }
                out.push(p);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_listed_and_the_rest_is_named() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("a.dcm"), b"x").unwrap();
        std::fs::write(root.join("sub/deeper/b.dcm"), b"x").unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(root.join("sub/fifo"))
            .status()
            .unwrap()
            .success());
        std::os::unix::fs::symlink("/dev/zero", root.join("zero")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("loop")).unwrap();
        std::os::unix::fs::symlink(root.join("a.dcm"), root.join("link.dcm")).unwrap();
        let budget = MemoryBudget::unlimited();
        let w = collect(
            &[
                root.to_path_buf(),
                PathBuf::from("/dev/null"),
                root.join("sub/fifo"),
                root.join("missing"),
            ],
            &budget,
        );
        assert_eq!(
            w.files,
            vec![
                root.join("a.dcm"),
                root.join("link.dcm"),
                root.join("sub/deeper/b.dcm")
            ]
        );
        let reason = |p: &Path, named: bool| {
            w.refused
                .iter()
                .find(|r| r.path == p && r.named == named)
                .map(|r| r.reason.clone())
                .unwrap_or_else(|| panic!("{p:?} not refused: {:?}", w.refused))
        };
        assert!(reason(&root.join("sub/fifo"), false).contains("FIFO"));
        assert!(reason(&root.join("sub/fifo"), true).contains("FIFO"));
        assert!(reason(&root.join("zero"), false).contains("character device"));
        assert!(reason(&root.join("dangling"), false).contains("dangling"));
        assert!(reason(&root.join("loop"), false).contains("not followed"));
        assert!(reason(Path::new("/dev/null"), true).contains("character device"));
        assert!(reason(&root.join("missing"), true).contains("cannot read"));
        assert_eq!(w.refused.len(), 7);
    }
}
