//! RFC 9162 §2.1 Merkle tree hashing, inclusion and consistency proofs, over SHA-256.
//!
//! Proof generation works on the list of leaf hashes; verification needs only the proof, as
//! a client that holds a checkpoint would do.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of an entry: SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH(D[n]) of RFC 9162 over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `leaves` (RFC 9162 §2.1.3.1).
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    Some(proof)
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// The consistency proof between the tree of the first `old_size` leaves and the tree of all
/// `leaves` (RFC 9162 §2.1.4.1).
pub fn consistency_proof(old_size: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if old_size > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < leaves.len() {
        subproof(old_size, leaves, true, &mut proof);
    }
    Some(proof)
}

fn subproof(m: usize, d: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !complete {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], complete, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Index or sizes out of range.
    #[error("index or tree size out of range")]
    Range,
    /// The proof has the wrong number of hashes.
    #[error("proof has the wrong length")]
    Length,
    /// The recomputed root differs from the expected one.
    #[error("root mismatch")]
    Mismatch,
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2). Hashes are taken as bytes, so a
/// malformed one simply fails to match.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[Hash],
    root: &[u8],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Range);
    }
    if leaf.len() != 32 {
        return Err(ProofError::Length);
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r: Vec<u8> = leaf.to_vec();
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::Length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r).to_vec();
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p).to_vec();
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::Length);
    }
    if r == root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// Verifies a consistency proof between two tree heads (RFC 9162 §2.1.4.2). Requires
/// `0 < size1 <= size2`, as transparency-dev/merkle does: every tree extends the empty tree,
/// so there is nothing to prove from it.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    if size1 == 0 || size1 > size2 {
        return Err(ProofError::Range);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Length);
    }
    let mut nodes: Vec<Vec<u8>> = proof.iter().map(|h| h.to_vec()).collect();
    if size1.is_power_of_two() {
        nodes.insert(0, root1.to_vec());
    }
    let (mut f_n, mut s_n) = (size1 - 1, size2 - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (nodes[0].clone(), nodes[0].clone());
    for c in &nodes[1..] {
        if s_n == 0 {
            return Err(ProofError::Length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr).to_vec();
            sr = node_hash(c, &sr).to_vec();
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c).to_vec();
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::Length);
    }
    if fr == root1 && sr == root2 {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}
