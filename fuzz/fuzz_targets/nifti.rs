//! Reads arbitrary bytes as NIfTI-1, plain and gzip-compressed: a malformed or hostile
//! header must give an error, never a panic or an allocation the data cannot back, and a
//! gzip stream must never be inflated past what its header describes (plus the allowed
//! trailing bytes).
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use radveil_part10::MemoryBudget;

fuzz_target!(|data: &[u8]| {
    let _ = radveil_deface::nifti_io::read_bytes(data);
    // The same bytes as a .nii.gz (the header and what follows, inflated lazily), within a
    // small budget.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if gz.write_all(data).is_err() {
        return;
    }
    let Ok(gz) = gz.finish() else { return };
    let budget = MemoryBudget::new(64 << 20);
    if let Ok(file) = radveil_deface::nifti_io::NiftiFile::from_bytes_with_budget(gz, &budget) {
        assert!(file.bytes.len() <= data.len());
        let _ = file.volume_with_budget(&budget);
    }
    assert_eq!(budget.in_use(), 0);
});
