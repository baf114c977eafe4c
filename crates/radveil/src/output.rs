//! Writing the few outputs of the commands other than `radveil deid`: atomically (a
//! temporary file beside the target, moved into place) and never over an existing file or
//! through a link (`radveil_pipeline::outdir`).

use std::path::Path;

use anyhow::Result;

/// Writes `bytes` to `target`, which must not exist: readers never see a partial file and
/// no input or earlier output is overwritten. The parent directory is made when missing.
pub fn write_new(target: &Path, bytes: &[u8]) -> Result<()> {
    radveil_pipeline::write_new_file(target, bytes)?;
    Ok(())
}
