//! De-identifies arbitrary bytes: must never panic, abort or hang, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_deid::{Config, Deidentifier, Key, ProfileOption};
use std::sync::OnceLock;

fn deidentifiers() -> &'static [Deidentifier; 2] {
    static D: OnceLock<[Deidentifier; 2]> = OnceLock::new();
    D.get_or_init(|| {
        let key = || Key::new(zeroize::Zeroizing::new(vec![0x5A; 32])).unwrap();
        let mut all = Config::default();
        all.profile.options = [
            ProfileOption::RetainSafePrivate,
            ProfileOption::RetainLongModifiedDates,
            ProfileOption::CleanDescriptors,
            ProfileOption::CleanStructuredContent,
            ProfileOption::CleanGraphics,
        ]
        .into_iter()
        .collect();
        all.crosswalk = true;
        [
            Deidentifier::new(key(), Config::default()).unwrap(),
            Deidentifier::new(key(), all).unwrap(),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    for d in deidentifiers() {
        if let Ok(out) = d.deidentify(data) {
            let out = out.file.to_vec();
            // Whatever we write must read back.
            let meta = radveil_part10::read_file_meta(&out).expect("output meta reads back");
            assert!(!meta.transfer_syntax.is_empty());
        }
    }
});
