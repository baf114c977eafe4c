//! Parses arbitrary text as signed-note keys, checkpoints and signed notes: never panics,
//! and never accepts a note not signed by the verifier's key. Then reads arbitrary bytes as
//! a ledger's `entries.jsonl`: never panics; complete lines are entries or the ledger is
//! refused, an incomplete last line is reported as torn (never an entry), and a ledger that
//! opens verifies against its own fresh checkpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_ledger::note::{Checkpoint, Signer, Verifier};
use radveil_ledger::Ledger;
use std::path::PathBuf;
use std::sync::OnceLock;

fn signer() -> &'static Signer {
    static S: OnceLock<Signer> = OnceLock::new();
    S.get_or_init(|| Signer::from_seed("fuzz.example/log", &[1; 32]).unwrap())
}

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| signer().verifier())
}

/// A ledger directory of this process, made once; its entries are replaced each run.
fn ledger_dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("radveil-fuzz-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Ledger::init(&dir, "fuzz.example/log", signer()).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Verifier::parse(text);
        let _ = Signer::parse(text);
        let _ = Checkpoint::parse(text);
        assert!(
            verifier().open(text).is_err(),
            "accepted a note nobody signed"
        );
    }

    let dir = ledger_dir();
    std::fs::write(dir.join("entries.jsonl"), data).unwrap();
    let Ok(mut ledger) = Ledger::open(dir) else {
        return;
    };
    let complete = data.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(ledger.size(), complete, "every complete line is an entry");
    match ledger.torn_tail() {
        Some(t) => {
            assert_eq!(t.offset + t.len, data.len() as u64);
            assert_eq!(t.entries, complete);
            assert!(!data[t.offset as usize..].contains(&b'\n'));
        }
        None => assert!(data.is_empty() || data.ends_with(b"\n")),
    }
    let note = ledger.checkpoint(signer()).unwrap();
    assert_eq!(
        ledger.verify_latest(verifier(), Some(&note)).unwrap().size,
        complete
    );
    let _ = std::fs::remove_dir_all(dir.join("checkpoints"));
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
});
