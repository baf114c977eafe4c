//! RFC 9162 §2.1 Merkle tree hashing, inclusion and consistency proofs, over SHA-256.
//!
//! Proof generation works on the list of leaf hashes (the slice functions), or on leaves
//! streamed once in order ([`Ranges`], with [`inclusion_ranges`] and [`consistency_ranges`]),
//! keeping O(log n) hashes; a [`Frontier`] keeps the roots of the complete subtrees, enough
//! to add leaves and sign the tree's head. Verification needs only the proof, as a client
//! that holds a checkpoint would do.

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

/// The frontier of an append-only RFC 9162 tree: the roots of its complete subtrees, one per
/// set bit of the size, largest first (at most 64 hashes whatever the size). Enough to add
/// leaves and to give the root of the whole tree; the root of a smaller tree and the proofs
/// need the leaves again ([`Ranges`] computes them from leaves streamed in order, without
/// keeping them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    len: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the tree has no leaf.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hashes held (one per complete subtree): what the frontier costs in memory.
    pub fn held(&self) -> usize {
        self.nodes.len()
    }

    /// Adds a leaf hash, merging the complete subtrees it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut n = self.len;
        while n & 1 == 1 {
            // A complete subtree of the same size is on the right: merge them.
            let left = self.nodes.pop().unwrap_or_else(empty_root);
            node = node_hash(&left, &node);
            n >>= 1;
        }
        self.nodes.push(node);
        self.len += 1;
    }

    /// MTH of every leaf: the complete subtrees folded from the right.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

impl Extend<Hash> for Frontier {
    fn extend<I: IntoIterator<Item = Hash>>(&mut self, leaves: I) {
        for leaf in leaves {
            self.push(leaf);
        }
    }
}

/// The leaf ranges `[start, end)` whose MTH make the inclusion proof of leaf `index` in the
/// tree of `size` leaves, in the proof's order (RFC 9162 §2.1.3.1, PATH), or `None` out of
/// range. The ranges are disjoint.
pub fn inclusion_ranges(index: u64, size: u64) -> Option<Vec<std::ops::Range<u64>>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    path_ranges(index, 0, size, &mut out);
    Some(out)
}

fn path_ranges(m: u64, start: u64, end: u64, out: &mut Vec<std::ops::Range<u64>>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split(n as usize) as u64;
    if m < k {
        path_ranges(m, start, start + k, out);
        out.push(start + k..end);
    } else {
        path_ranges(m - k, start + k, end, out);
        out.push(start..start + k);
    }
}

/// The leaf ranges whose MTH make the consistency proof between the trees of the first
/// `old` and `new` leaves, in the proof's order (RFC 9162 §2.1.4.1, SUBPROOF), or `None`
/// out of range. The ranges are disjoint.
pub fn consistency_ranges(old: u64, new: u64) -> Option<Vec<std::ops::Range<u64>>> {
    if old > new {
        return None;
    }
    let mut out = Vec::new();
    if old > 0 && old < new {
        subproof_ranges(old, 0, new, true, &mut out);
    }
    Some(out)
}

fn subproof_ranges(
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<std::ops::Range<u64>>,
) {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(start..end);
        }
        return;
    }
    let k = split(n as usize) as u64;
    if m <= k {
        subproof_ranges(m, start, start + k, complete, out);
        out.push(start + k..end);
    } else {
        subproof_ranges(m - k, start + k, end, false, out);
        out.push(start..start + k);
    }
}

/// The MTH of leaf ranges, computed from the leaves streamed once in order
/// ([`Ranges::push`]), keeping only a frontier per distinct range: how proofs are made from
/// a log whose leaves are not kept. The ranges may overlap or repeat (those of several
/// proofs: each distinct range is hashed once, and a leaf goes only to the ranges that hold
/// it, O(log n) of them for ranges of RFC 9162's recursion).
#[derive(Debug, Clone)]
pub struct Ranges {
    /// The distinct ranges, by start.
    distinct: Vec<std::ops::Range<u64>>,
    frontiers: Vec<Frontier>,
    /// For each range asked for, in order, its place in `distinct`.
    asked: Vec<usize>,
    /// The distinct ranges that hold the next leaf.
    active: Vec<usize>,
    /// The first distinct range not yet started.
    started: usize,
    /// The next leaf's index.
    next: u64,
}

impl Ranges {
    /// Ranges to compute (as [`inclusion_ranges`] and [`consistency_ranges`] give them).
    pub fn new(ranges: Vec<std::ops::Range<u64>>) -> Ranges {
        let mut distinct: Vec<std::ops::Range<u64>> =
            ranges.iter().filter(|r| r.start < r.end).cloned().collect();
        distinct.sort_by_key(|r| (r.start, r.end));
        distinct.dedup();
        let asked = ranges
            .iter()
            .map(|r| {
                distinct
                    .binary_search_by_key(&(r.start, r.end), |d| (d.start, d.end))
                    .unwrap_or(usize::MAX)
            })
            .collect();
        Ranges {
            frontiers: vec![Frontier::new(); distinct.len()],
            distinct,
            asked,
            active: Vec::new(),
            started: 0,
            next: 0,
        }
    }

    /// The next leaf (leaves come in order, from the first).
    pub fn push(&mut self, leaf: Hash) {
        let i = self.next;
        self.next += 1;
        let distinct = &self.distinct;
        self.active.retain(|&r| distinct[r].end > i);
        while let Some(r) = distinct.get(self.started) {
            if r.start > i {
                break;
            }
            if r.end > i {
                self.active.push(self.started);
            }
            self.started += 1;
        }
        for &r in &self.active {
            self.frontiers[r].push(leaf);
        }
    }

    /// The MTH of each range, in the order asked for, or `None` when a range did not get
    /// all of its leaves (or is empty).
    pub fn roots(&self) -> Option<Vec<Hash>> {
        self.asked
            .iter()
            .map(|&d| {
                let (r, f) = (self.distinct.get(d)?, &self.frontiers[d]);
                (f.len() == r.end - r.start).then(|| f.root())
            })
            .collect()
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
    fn a_frontier_and_streamed_ranges_give_the_roots_and_proofs_of_the_leaf_list() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), empty_root());
        for (n, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(frontier.len(), n as u64 + 1);
            assert_eq!(frontier.root(), root(&leaves[..=n]), "root of {}", n + 1);
            // One hash per set bit of the size.
            assert_eq!(frontier.held(), (n + 1).count_ones() as usize);
        }
        let streamed = |ranges: Vec<std::ops::Range<u64>>, size: usize| {
            let mut r = Ranges::new(ranges);
            for leaf in &leaves[..size] {
                r.push(*leaf);
            }
            r.roots().unwrap()
        };
        for size in 0..=leaves.len() {
            let d = &leaves[..size];
            for i in 0..=size {
                assert_eq!(
                    inclusion_ranges(i as u64, size as u64).map(|r| streamed(r, size)),
                    inclusion_proof(i, d),
                    "inclusion of {i} in {size}"
                );
                assert_eq!(
                    consistency_ranges(i as u64, size as u64).map(|r| streamed(r, size)),
                    consistency_proof(i, d),
                    "consistency of {i} with {size}"
                );
            }
        }
        // Ranges that overlap and repeat (those of several proofs): each one's MTH.
        let asked = vec![0..70, 3..9, 0..64, 3..9, 64..70, 10..11, 32..64];
        let mut r = Ranges::new(asked.clone());
        for leaf in &leaves {
            r.push(*leaf);
        }
        let want: Vec<Hash> = asked
            .iter()
            .map(|a| root(&leaves[a.start as usize..a.end as usize]))
            .collect();
        assert_eq!(r.roots(), Some(want));
        // A range short of leaves has no root.
        let mut r = Ranges::new(std::iter::once(0..4).collect());
        r.push(leaves[0]);
        assert_eq!(r.roots(), None);
        assert_eq!(consistency_ranges(5, 4), None);
        // A frontier extended with `extend` is the same frontier.
        let mut other = Frontier::new();
        other.extend(leaves.iter().copied());
        assert_eq!(other, frontier);
    }
}
