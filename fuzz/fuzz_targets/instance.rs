//! The per-instance entry point the gateway will call for every object it receives:
//! `radveil_pipeline::Run::deidentify_bytes`, with the output written below a real output
//! directory. Whatever the bytes, it must never panic, abort or hang; what it writes must
//! read back as Part 10; every byte of memory it counted is given back; and the same input
//! given twice is never written twice (the second is a duplicate or fails as existing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_deid::{Config, Deidentifier, Key, VisualFeatures};
use radveil_pipeline::{Outcome, Run, Settings};
use std::sync::OnceLock;

fn run() -> &'static Run {
    static R: OnceLock<Run> = OnceLock::new();
    R.get_or_init(|| {
        let key = Key::new(zeroize::Zeroizing::new(vec![0x5A; 32])).unwrap();
        let d = Deidentifier::new(key, Config::default()).unwrap();
        let out = std::env::temp_dir().join(format!("radveil-fuzz-instance-{}", std::process::id()));
        Run::new(
            d,
            &out,
            &Settings {
                memory_limit: 64 << 20,
                resume: false,
            },
        )
        .expect("output directory")
    })
}

fuzz_target!(|data: &[u8]| {
    let run = run();
    let first = run.deidentify_bytes(data, VisualFeatures::Untouched);
    assert_eq!(run.budget().in_use(), 0, "memory not given back");
    if let Outcome::Written { output, .. } = &first {
        let written = std::fs::read(output).expect("the output is there");
        radveil_part10::read_file_meta(&written).expect("the output reads back as Part 10");
        let again = run.deidentify_bytes(data, VisualFeatures::Untouched);
        assert!(
            !matches!(again, Outcome::Written { .. }),
            "the same instance was written twice"
        );
        assert_eq!(run.budget().in_use(), 0, "memory not given back");
    }
});
