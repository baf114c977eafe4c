//! RFC 9162 §2.1 Merkle tree hashing, inclusion and consistency proofs, over SHA-256.
//!
//! Proof generation works on the list of leaf hashes (the slice functions, O(n) hashes) or
//! on a [`Tree`], which keeps the roots of its complete subtrees as leaves are added, so that
//! the root of any prefix and every proof cost O(log n) hashes; verification needs only the
//! proof, as a client that holds a checkpoint would do.

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

/// MTH(D\[n\]) of RFC 9162 over leaf hashes.
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

/// An append-only RFC 9162 tree kept level by level: level 0 holds the leaf hashes, level
/// *k* the root of every complete subtree of 2^*k* leaves (the nodes at `[i·2^k, (i+1)·2^k)`),
/// each added as the last leaf under it arrives (one node hash per leaf, amortized). Every
/// subtree of RFC 9162's definitions is a run of such nodes, so the root of any prefix
/// ([`Tree::root`]) and the inclusion and consistency proofs cost O(log n) hashes instead of
/// re-hashing the tree: a log's checkpoint no longer grows with the log. Memory: about
/// twice the leaf hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.leaves().len() as u64
    }

    /// Whether the tree has no leaf.
    pub fn is_empty(&self) -> bool {
        self.leaves().is_empty()
    }

    /// The leaf hashes, in order.
    pub fn leaves(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// Adds a leaf hash, and the roots of the complete subtrees it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut k = 0;
        loop {
            if self.levels.len() == k {
                self.levels.push(Vec::new());
            }
            let level = &mut self.levels[k];
            level.push(node);
            let n = level.len();
            if n % 2 == 1 {
                break;
            }
            node = node_hash(&level[n - 2], &level[n - 1]);
            k += 1;
        }
    }

    /// MTH of the leaves `[start, end)`, a subtree of RFC 9162's recursion (`start` a multiple
    /// of the largest power of two not above `end - start`): its complete subtrees from the
    /// left, folded from the right.
    fn range_root(&self, start: u64, end: u64) -> Hash {
        if start >= end {
            return empty_root();
        }
        let mut parts: Vec<Hash> = Vec::new();
        let mut p = start;
        while p < end {
            let left = end - p;
            // The largest complete subtree starting at p that fits.
            let mut k = (u64::BITS - 1 - left.leading_zeros()).min(p.trailing_zeros());
            while k > 0 && (p >> k) as usize >= self.levels.get(k as usize).map_or(0, Vec::len) {
                k -= 1;
            }
            parts.push(self.levels[k as usize][(p >> k) as usize]);
            p += 1 << k;
        }
        let mut root = parts.pop().unwrap_or_else(empty_root);
        while let Some(left) = parts.pop() {
            root = node_hash(&left, &root);
        }
        root
    }

    /// MTH of the first `size` leaves, or `None` beyond the tree.
    pub fn root(&self, size: u64) -> Option<Hash> {
        (size <= self.len()).then(|| self.range_root(0, size))
    }

    /// MTH of every leaf (the tree's head).
    pub fn head(&self) -> Hash {
        self.range_root(0, self.len())
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves (as
    /// [`inclusion_proof`] gives it), or `None` out of range.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.len() {
            return None;
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Some(proof)
    }

    /// PATH(m, D[start:end]) of RFC 9162 §2.1.3.1.
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n as usize) as u64;
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.range_root(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.range_root(start, start + k));
        }
    }

    /// The consistency proof between the trees of the first `old` and the first `new`
    /// leaves (as [`consistency_proof`] gives it), or `None` out of range.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Option<Vec<Hash>> {
        if old > new || new > self.len() {
            return None;
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Some(proof)
    }

    /// SUBPROOF(m, D[start:end], b) of RFC 9162 §2.1.4.1.
    fn subproof(&self, m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.range_root(start, end));
            }
            return;
        }
        let k = split(n as usize) as u64;
        if m <= k {
            self.subproof(m, start, start + k, complete, out);
            out.push(self.range_root(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range_root(start, start + k));
        }
    }
}

impl Extend<Hash> for Tree {
    fn extend<I: IntoIterator<Item = Hash>>(&mut self, leaves: I) {
        for leaf in leaves {
            self.push(leaf);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_gives_the_roots_and_proofs_of_the_leaf_list() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tree = Tree::new();
        assert_eq!(tree.root(0), Some(empty_root()));
        for (n, leaf) in leaves.iter().enumerate() {
            tree.push(*leaf);
            assert_eq!(tree.len(), n as u64 + 1);
        }
        assert_eq!(tree.leaves(), &leaves[..]);
        assert_eq!(tree.root(71), None);
        assert_eq!(tree.head(), root(&leaves));
        for size in 0..=leaves.len() {
            let d = &leaves[..size];
            assert_eq!(tree.root(size as u64), Some(root(d)), "root of {size}");
            for i in 0..=size {
                assert_eq!(
                    tree.inclusion_proof(i as u64, size as u64),
                    inclusion_proof(i, d),
                    "inclusion of {i} in {size}"
                );
                assert_eq!(
                    tree.consistency_proof(i as u64, size as u64),
                    consistency_proof(i, d),
                    "consistency of {i} with {size}"
                );
            }
        }
        // A tree extended with `extend` is the same tree.
        let mut other = Tree::new();
        other.extend(leaves.iter().copied());
        assert_eq!(other, tree);
    }
}
