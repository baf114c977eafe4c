//! Writing outputs: atomically (a temporary file beside the target, linked into place) and
//! never over an existing file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `target`, which must not exist: readers never see a partial file and
/// no input or earlier output is overwritten.
pub fn write_new(target: &Path, bytes: &[u8]) -> Result<()> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    if target.exists() {
        anyhow::bail!("output {} exists; not overwritten", target.display());
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".radveil-")
        .suffix(".part")
        .tempfile_in(dir)
        .context("cannot create temporary file")?;
    tmp.write_all(bytes).context("cannot write output")?;
    tmp.persist_noclobber(target).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("output {} exists; not overwritten", target.display())
        } else {
            anyhow::anyhow!("cannot move output into place: {}", e.error)
        }
    })?;
    Ok(())
}
