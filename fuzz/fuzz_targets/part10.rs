//! Parses arbitrary bytes as a data set in every encoding and writes back what parsed: must
//! never panic, and a written data set must parse again to the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_part10::{read_dataset, write_dataset, Encoding, Limits};

fuzz_target!(|data: &[u8]| {
    for enc in [Encoding::ImplicitLittle, Encoding::ExplicitLittle, Encoding::ExplicitBig] {
        if let Ok(ds) = read_dataset(data, enc, Limits::default()) {
            let mut out = Vec::new();
            write_dataset(&ds, enc, &mut out);
            let again = read_dataset(&out, enc, Limits::default());
            assert!(again.is_ok(), "re-encoded data set does not parse: {:?}", again.err());
        }
    }
});
