//! Scans arbitrary bytes as a DICOM file (`radveil scan`'s per-file work): must never
//! panic, abort or hang, whatever the input; findings name tag paths, never values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = radveil_scan::scan(data) {
        for f in &s.findings {
            assert!(f.path.bytes().all(|b| b.is_ascii_graphic()));
        }
        let _ = radveil_scan::quasi::k_anonymity(std::slice::from_ref(&s.quasi));
    }
});
