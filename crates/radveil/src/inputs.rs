//! Turning command-line inputs into the list of files to process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Expands the inputs into a sorted, de-duplicated list of files. Directories are walked
/// (symbolic links to directories are not followed); a file named DICOMDIR given directly is
/// replaced by the files it references. Inputs that cannot be read come back as
/// (path, reason) pairs, so a batch can report them and go on.
pub fn collect(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = BTreeSet::new();
    let mut errors = Vec::new();
    for input in inputs {
        let meta = match std::fs::metadata(input) {
            Ok(m) => m,
            Err(e) => {
                errors.push((input.clone(), format!("cannot read: {e}")));
                continue;
            }
        };
        if meta.is_dir() {
            walk(input, &mut files, &mut errors);
        } else if is_dicomdir_name(input) {
            match dicomdir_references(input) {
                Ok(refs) => files.extend(refs),
                Err(e) => errors.push((input.clone(), format!("DICOMDIR unreadable: {e}"))),
            }
        } else {
            files.insert(input.clone());
        }
    }
    (files.into_iter().collect(), errors)
}

fn is_dicomdir_name(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
}

fn walk(dir: &Path, files: &mut BTreeSet<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push((dir.to_path_buf(), format!("cannot read directory: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, files, errors),
            Ok(t) if t.is_file() => {
                files.insert(path);
            }
            Ok(t) if t.is_symlink() && path.is_file() => {
                files.insert(path);
            }
            _ => {}
        }
    }
}

/// The files a DICOMDIR references (Referenced File ID of every directory record).
fn dicomdir_references(path: &Path) -> Result<Vec<PathBuf>> {
    use radveil_part10 as p10;
    let bytes = std::fs::read(path)?;
    let meta = p10::read_file_meta(&bytes)?;
    let ts = p10::TransferSyntax::from_uid(&meta.transfer_syntax);
    let ds = p10::read_dataset(
        meta.body,
        p10::effective_encoding(meta.body, ts.encoding),
        p10::Limits::default(),
    )?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    if let Some(p10::Value::Sequence(records)) = ds.get(0x0004_1220).map(|e| &e.value) {
        for rec in records {
            if let Some(id) = rec.string(0x0004_1500) {
                let mut p = base.to_path_buf();
                for comp in id.split('\\').map(str::trim).filter(|c| !c.is_empty()) {
                    if comp == ".." || comp.contains('/') {
                        bail!("Referenced File ID leaves the DICOMDIR's directory");
                    }
                    p.push(comp);
                }
                out.push(p);
            }
        }
    }
    Ok(out)
}
