//! Builds certificate paths through arbitrary graphs of cross-signed, duplicated, looping
//! intermediates (every signature valid): the search never panics, stays within its budget
//! of work, and accepts a signer only when a path to an anchor really exists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_integrity::trust::{synthetic_certificate, synthetic_store, Certificate, MAX_DEPTH};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

type Cache = HashMap<(u8, u8, u8, bool), Certificate>;

/// Certificates are costly to sign: keep the ones made so far.
fn cert(cache: &mut Cache, key: (u8, u8, u8, bool)) -> Certificate {
    cache
        .entry(key)
        .or_insert_with(|| {
            let (subject, issuer, copy, ca) = key;
            synthetic_certificate(
                &format!("N{subject}"),
                &format!("N{issuer}"),
                (u32::from(copy) << 8) | u32::from(subject),
                ca,
                7,
            )
            .expect("valid names")
        })
        .clone()
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    // Byte 0: the signer's issuer; then triples (subject, issuer, flags) of intermediates,
    // names from eight; name 0 is the anchor. At most 48 intermediates.
    let Some((&leaf_issuer, rest)) = data.split_first() else {
        return;
    };
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    let mut edges = BTreeSet::new();
    let mut intermediates = Vec::new();
    for t in rest.chunks_exact(3).take(48) {
        let (subject, issuer) = (t[0] % 8, t[1] % 8);
        let (ca, copy) = (t[2] & 1 == 1, t[2] >> 1);
        if subject == 0 {
            continue;
        }
        intermediates.push(cert(cache, (subject, issuer, copy, ca)));
        if ca {
            edges.insert((subject, issuer));
        }
    }
    let anchor = cert(cache, (0, 0, 0, true));
    let leaf = cert(cache, (9, leaf_issuer % 8, 0, false));
    let store = synthetic_store(vec![anchor], intermediates);
    let start = std::time::Instant::now();
    let outcome = store.check(&leaf, 1_795_437_486);
    assert!(
        start.elapsed().as_secs() < 5,
        "the path search ran for seconds"
    );
    // Reference: is the anchor's name reachable from the leaf's issuer within MAX_DEPTH
    // intermediates, along CA edges?
    let mut frontier = BTreeSet::from([leaf_issuer % 8]);
    let mut reachable = frontier.contains(&0);
    for _ in 0..MAX_DEPTH {
        if reachable {
            break;
        }
        frontier = edges
            .iter()
            .filter(|(s, _)| frontier.contains(s))
            .map(|&(_, i)| i)
            .collect();
        reachable = frontier.contains(&0);
    }
    match outcome {
        Ok(()) => assert!(reachable, "accepted a signer with no path to the anchor"),
        Err(why) if why.contains("within") => {} // budget spent: refused, never accepted
        Err(why) => assert!(!reachable, "a path exists, yet: {why}"),
    }
});
