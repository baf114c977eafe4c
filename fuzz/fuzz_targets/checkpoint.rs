//! Parses arbitrary text as signed-note keys, checkpoints and signed notes: never panics,
//! and never accepts a note not signed by the verifier's key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_ledger::note::{Checkpoint, Signer, Verifier};
use std::sync::OnceLock;

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| Signer::from_seed("fuzz.example/log", &[1; 32]).unwrap().verifier())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Verifier::parse(text);
    let _ = Signer::parse(text);
    let _ = Checkpoint::parse(text);
    assert!(verifier().open(text).is_err(), "accepted a note nobody signed");
});
