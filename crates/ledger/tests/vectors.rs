//! Known-answer tests: the RFC 6962 reference tree (leaf inputs and root hashes of every size
//! from 0 to 8) and the transparency-dev/merkle verification vectors (inclusion and
//! consistency proofs, valid and mutated), bundled in `tests/vectors/`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use radveil_ledger::merkle::{self, Hash};
use serde_json::Value;

fn unhex(s: &str) -> Hash {
    let v: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn b64(v: &Value) -> Option<Hash> {
    B64.decode(v.as_str()?).ok()?.try_into().ok()
}

/// Any bytes: vectors include malformed hashes, which must simply fail to match.
fn bytes(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

fn leaves() -> Vec<Hash> {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    inputs.iter().map(|i| merkle::leaf_hash(i)).collect()
}

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn reference_tree_roots() {
    let l = leaves();
    for (n, want) in ROOTS.iter().enumerate() {
        assert_eq!(merkle::root(&l[..n]), unhex(want), "size {n}");
    }
}

#[test]
fn generated_proofs_verify_for_every_index_and_size() {
    let l = leaves();
    for n in 1..=8usize {
        let root = merkle::root(&l[..n]);
        for i in 0..n {
            let p = merkle::inclusion_proof(i, &l[..n]).unwrap();
            merkle::verify_inclusion(i as u64, n as u64, &l[i], &p, &root).unwrap();
        }
        for m in 1..=n {
            let p = merkle::consistency_proof(m, &l[..n]).unwrap();
            merkle::verify_consistency(m as u64, n as u64, &p, &merkle::root(&l[..m]), &root)
                .unwrap();
        }
    }
}

fn cases(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/vectors/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(vec![]),
        Value::Array(a) => a.iter().map(b64).collect(),
        _ => None,
    }
}

#[test]
fn transparency_dev_inclusion_vectors() {
    let all = cases("inclusion");
    assert!(all.len() > 90);
    for c in all {
        let want_err = c["wantErr"].as_bool().unwrap();
        let result = (|| {
            let leaf = bytes(&c["leafHash"]);
            let root = bytes(&c["root"]);
            let p = proof(&c["proof"]).ok_or(())?;
            let (idx, size) = (
                c["leafIdx"].as_i64().ok_or(())?,
                c["treeSize"].as_i64().ok_or(())?,
            );
            if idx < 0 || size < 0 {
                return Err(());
            }
            merkle::verify_inclusion(idx as u64, size as u64, &leaf, &p, &root).map_err(|_| ())
        })();
        assert_eq!(result.is_err(), want_err, "{}: {}", c["file"], c["desc"]);
    }
}

#[test]
fn transparency_dev_consistency_vectors() {
    let all = cases("consistency");
    assert!(all.len() > 90);
    for c in all {
        let want_err = c["wantErr"].as_bool().unwrap();
        let result = (|| {
            let r1 = bytes(&c["root1"]);
            let r2 = bytes(&c["root2"]);
            let p = proof(&c["proof"]).ok_or(())?;
            let (s1, s2) = (
                c["size1"].as_i64().ok_or(())?,
                c["size2"].as_i64().ok_or(())?,
            );
            if s1 < 0 || s2 < 0 {
                return Err(());
            }
            merkle::verify_consistency(s1 as u64, s2 as u64, &p, &r1, &r2).map_err(|_| ())
        })();
        assert_eq!(result.is_err(), want_err, "{}: {}", c["file"], c["desc"]);
    }
}
