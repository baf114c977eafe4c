//! Verifies the digital signatures of arbitrary data sets: parsing MAC Parameters, Data
//! Elements Signed, certificates and signatures must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_part10::{read_dataset, Encoding, Limits};

fuzz_target!(|data: &[u8]| {
    for enc in [Encoding::ExplicitLittle, Encoding::ImplicitLittle, Encoding::ExplicitBig] {
        if let Ok(ds) = read_dataset(data, enc, Limits::default()) {
            let _ = radveil_integrity::verify(&ds, enc);
        }
    }
});
