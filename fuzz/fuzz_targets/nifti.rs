//! Reads arbitrary bytes as NIfTI-1 (plain or gzip): a malformed or hostile header must give
//! an error, never a panic or an allocation the data cannot back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = radveil_deface::nifti_io::read_bytes(data);
});
