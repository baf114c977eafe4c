//! Turning command-line inputs into the list of files to process, for the commands other
//! than `radveil deid` (which reports refused entries itself): see `radveil_pipeline::walk`.

use std::path::PathBuf;

/// Expands the inputs into a sorted, de-duplicated list of regular files. Directories are
/// walked (symbolic links to directories are not followed); a file named DICOMDIR given
/// directly is replaced by the files it references. Everything else (inputs that cannot be
/// read, FIFOs, sockets, devices, dangling links) comes back as (path, reason) pairs, so a
/// batch can report them and go on.
pub fn collect(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let budget = radveil_part10::MemoryBudget::new(radveil_pipeline::memory::default_limit());
    let walked = radveil_pipeline::walk::collect(inputs, &budget);
    let refused = walked
        .refused
        .into_iter()
        .map(|r| (r.path, r.reason))
        .collect();
    (walked.files, refused)
}
