//! De-identifies arbitrary bytes: must never panic, abort or hang, whatever the input; under a
//! run's memory budget the output is the same (or the budget refuses) and the memory is given
//! back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_deid::{Config, Deidentifier, Key, ProfileOption, VisualFeatures};
use radveil_part10::MemoryBudget;
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
    let budget = MemoryBudget::new(16 << 20);
    for d in deidentifiers() {
        let plain = d.deidentify(data);
        if let Ok(out) = &plain {
            let out = out.file.to_vec();
            // Whatever we write must read back.
            let meta = radveil_part10::read_file_meta(&out).expect("output meta reads back");
            assert!(!meta.transfer_syntax.is_empty());
        }
        {
            let mut grant = budget.try_reserve(0).unwrap();
            let charged = d.deidentify_in(data, VisualFeatures::Untouched, &mut grant);
            if let (Ok(a), Ok(b)) = (&plain, &charged) {
                assert_eq!(a.file.to_vec(), b.file.to_vec(), "a budget changed the output");
            }
        }
        assert_eq!(budget.in_use(), 0, "memory not given back");
    }
});
