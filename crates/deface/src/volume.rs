//! A scalar 3-D volume in patient space: voxel values and the affine that maps a voxel index
//! to RAS+ world coordinates in millimetres (NIfTI's convention; DICOM's LPS is converted).

/// A 3-D volume of scalar values.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Size along i, j, k (i varies fastest in `data`).
    pub dims: [usize; 3],
    /// Values, `i + dims[0] * (j + dims[1] * k)`.
    pub data: Vec<f32>,
    /// Voxel index (i, j, k, 1) → RAS+ millimetres, row-major 3×4.
    pub affine: [[f64; 4]; 3],
}

impl Volume {
    /// Number of voxels (saturating: a volume whose dimensions overflow is refused by
    /// [`Volume::check`]).
    pub fn len(&self) -> usize {
        self.dims[0]
            .saturating_mul(self.dims[1])
            .saturating_mul(self.dims[2])
    }

    /// Checks that the dimensions describe the values held: their product does not
    /// overflow and equals the number of values. Everything that walks a volume relies on
    /// it; the public entry points (defacing, refacing, the face check) check it first, so
    /// a volume built from a hostile header is an error, never an index out of bounds.
    pub fn check(&self) -> Result<(), String> {
        let n = self.dims[0]
            .checked_mul(self.dims[1])
            .and_then(|v| v.checked_mul(self.dims[2]));
        match n {
            Some(n) if n == self.data.len() => Ok(()),
            Some(n) => Err(format!(
                "the volume's dimensions describe {n} voxels but it holds {}",
                self.data.len()
            )),
            None => Err("the volume's dimensions overflow".into()),
        }
    }

    /// Whether the volume has no voxels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The linear index of voxel (i, j, k).
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// World (RAS+, mm) position of a voxel centre.
    pub fn world(&self, v: [f64; 3]) -> [f64; 3] {
        let a = &self.affine;
        [
            a[0][0] * v[0] + a[0][1] * v[1] + a[0][2] * v[2] + a[0][3],
            a[1][0] * v[0] + a[1][1] * v[1] + a[1][2] * v[2] + a[1][3],
            a[2][0] * v[0] + a[2][1] * v[1] + a[2][2] * v[2] + a[2][3],
        ]
    }

    /// The world-to-voxel map (fractional voxel at a RAS+ position), with the affine
    /// inverted once; `None` when the affine is singular.
    pub fn world_to_voxel(&self) -> Option<impl Fn([f64; 3]) -> [f64; 3]> {
        let inv = self.inverse()?;
        let origin = [self.affine[0][3], self.affine[1][3], self.affine[2][3]];
        Some(move |w: [f64; 3]| {
            let d = [w[0] - origin[0], w[1] - origin[1], w[2] - origin[2]];
            [
                inv[0][0] * d[0] + inv[0][1] * d[1] + inv[0][2] * d[2],
                inv[1][0] * d[0] + inv[1][1] * d[1] + inv[1][2] * d[2],
                inv[2][0] * d[0] + inv[2][1] * d[1] + inv[2][2] * d[2],
            ]
        })
    }

    /// The inverse of the affine's 3×3 part.
    pub fn inverse(&self) -> Option<[[f64; 3]; 3]> {
        let m = &self.affine;
        let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        let inv_det = 1.0 / det;
        Some([
            [
                (m[1][1] * m[2][2] - m[1][2] * m[2][1]) * inv_det,
                (m[0][2] * m[2][1] - m[0][1] * m[2][2]) * inv_det,
                (m[0][1] * m[1][2] - m[0][2] * m[1][1]) * inv_det,
            ],
            [
                (m[1][2] * m[2][0] - m[1][0] * m[2][2]) * inv_det,
                (m[0][0] * m[2][2] - m[0][2] * m[2][0]) * inv_det,
                (m[0][2] * m[1][0] - m[0][0] * m[1][2]) * inv_det,
            ],
            [
                (m[1][0] * m[2][1] - m[1][1] * m[2][0]) * inv_det,
                (m[0][1] * m[2][0] - m[0][0] * m[2][1]) * inv_det,
                (m[0][0] * m[1][1] - m[0][1] * m[1][0]) * inv_det,
            ],
        ])
    }

    /// Voxel size along each voxel axis, mm.
    pub fn spacing(&self) -> [f64; 3] {
        let a = &self.affine;
        [0, 1, 2].map(|c| (a[0][c].powi(2) + a[1][c].powi(2) + a[2][c].powi(2)).sqrt())
    }

    /// Trilinear sample at a fractional voxel position; `None` outside the volume.
    #[inline]
    pub fn sample(&self, v: [f64; 3]) -> Option<f32> {
        let [x, y, z] = v;
        if !(x >= 0.0 && y >= 0.0 && z >= 0.0) {
            return None;
        }
        let (i, j, k) = (floor_index(x), floor_index(y), floor_index(z));
        if i + 1 >= self.dims[0] || j + 1 >= self.dims[1] || k + 1 >= self.dims[2] {
            return None;
        }
        Some(self.interpolate([i, j, k], v))
    }

    /// The trilinear sample at `v` within the cell whose first corner is `[i, j, k]`
    /// (`v`'s whole part, the cell inside the volume).
    #[inline]
    fn interpolate(&self, [i, j, k]: [usize; 3], [x, y, z]: [f64; 3]) -> f32 {
        let (fx, fy, fz) = (
            (x - i as f64) as f32,
            (y - j as f64) as f32,
            (z - k as f64) as f32,
        );
        // The cell's corners, from one slice starting at its first.
        let (row, plane) = (self.dims[0], self.dims[0] * self.dims[1]);
        let cell = &self.data[self.index(i, j, k)..][..plane + row + 2];
        let at = |di: usize, dj: usize, dk: usize| cell[di + row * dj + plane * dk];
        let c00 = at(0, 0, 0) * (1.0 - fx) + at(1, 0, 0) * fx;
        let c10 = at(0, 1, 0) * (1.0 - fx) + at(1, 1, 0) * fx;
        let c01 = at(0, 0, 1) * (1.0 - fx) + at(1, 0, 1) * fx;
        let c11 = at(0, 1, 1) * (1.0 - fx) + at(1, 1, 1) * fx;
        let c0 = c00 * (1.0 - fy) + c10 * fy;
        let c1 = c01 * (1.0 - fy) + c11 * fy;
        c0 * (1.0 - fz) + c1 * fz
    }

    /// The value at quantile `q` (0..=1) of the finite voxels that are not padding (a
    /// sampled estimate for large volumes). Padding is the value many CT scanners store
    /// outside the reconstructed circle (-3024 or -2000 HU, below air): it would drag the
    /// skin threshold below air and make background of it, so it is left out.
    pub fn quantile(&self, q: f64) -> f32 {
        self.quantiles(&[q])[0]
    }

    /// The values at several quantiles (as [`Volume::quantile`] gives them one by one),
    /// with the voxels gathered once.
    pub fn quantiles<const N: usize>(&self, qs: &[f64; N]) -> [f32; N] {
        let step = (self.data.len() / 2_000_000).max(1);
        let mut v: Vec<f32> = self
            .data
            .iter()
            .step_by(step)
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return [0.0; N];
        }
        if let Some(padding) = padding(&mut v) {
            v.retain(|&x| x != padding);
        }
        let ranks = qs.map(|q| ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize);
        nth_smallest(&v, ranks)
    }
}

/// A key whose unsigned order is `f32::total_cmp`'s order of the values.
#[inline]
fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 1 << 31
    }
}

/// The `n`-th smallest of `v` (from 0, in `f32::total_cmp` order) for each `n` of `ranks`,
/// by a radix select on [`order_key`]: a count of the keys' high halves finds the one each
/// rank falls in, a count of the low halves among those finds the key. Two passes over
/// `v`, without reordering it: several times faster than `select_nth_unstable` on
/// millions of voxels.
fn nth_smallest<const N: usize>(v: &[f32], ranks: [usize; N]) -> [f32; N] {
    let mut counts = vec![0u32; 1 << 16];
    for &x in v {
        counts[(order_key(x) >> 16) as usize] += 1;
    }
    let high = ranks.map(|n| within(&counts, n));
    // One count of low halves per distinct high half.
    let mut bins: Vec<usize> = high.iter().map(|h| h.0).collect();
    bins.sort_unstable();
    bins.dedup();
    let mut low = vec![vec![0u32; 1 << 16]; bins.len()];
    for &x in v {
        let k = order_key(x);
        if let Ok(b) = bins.binary_search(&((k >> 16) as usize)) {
            low[b][(k & 0xffff) as usize] += 1;
        }
    }
    high.map(|(h, n)| {
        let b = bins.binary_search(&h).unwrap_or(0);
        let (l, _) = within(&low[b], n);
        let key = (h as u32) << 16 | l as u32;
        f32::from_bits(if key >> 31 == 1 {
            key & !(1 << 31)
        } else {
            !key
        })
    })
}

/// The bin of `counts` holding the `n`-th item (from 0), and `n` counted from that bin's
/// first item.
fn within(counts: &[u32], mut n: usize) -> (usize, usize) {
    for (bin, &c) in counts.iter().enumerate() {
        if n < c as usize {
            return (bin, n);
        }
        n -= c as usize;
    }
    // Past the last item (not reached for n < v.len()): the last non-empty bin.
    let bin = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
    (bin, counts[bin].saturating_sub(1) as usize)
}

/// The padding value among `v`, if any: the minimum, when it holds at least 1 % of the
/// voxels, lies far below all the others (more than a quarter of the range below the next
/// value), and the others still have a background of their own (at least 5 % of them in the
/// lowest 15 % of their range: the air inside the reconstructed circle). A volume whose
/// minimum is its only background (air stored as 0 in MR, a phantom in a uniform field) has
/// no padding.
fn padding(v: &mut [f32]) -> Option<f32> {
    let (min, at_min) = v.iter().fold((f32::INFINITY, 0usize), |(m, n), &x| {
        if x < m {
            (x, 1)
        } else {
            (m, n + (x == m) as usize)
        }
    });
    if at_min * 100 < v.len() || at_min == v.len() {
        return None;
    }
    let lo = v
        .iter()
        .copied()
        .filter(|&x| x != min)
        .fold(f32::INFINITY, f32::min);
    let n = ((v.len() - at_min - 1) as f64 * 0.99).round() as usize;
    // Whether the minimum lies apart from a value: false from some value on, so the n-th
    // of the others (their 99th percentile) is apart when more than n of them are; a count
    // settles it without ordering them, as it does in most volumes (MR, whose minimum is
    // its background).
    let apart_from = |x: f32| (lo - min) as f64 > 0.25 * (x - min) as f64;
    if v.iter().filter(|&&x| x != min && apart_from(x)).count() <= n {
        return None;
    }
    let mut rest: Vec<f32> = v.iter().copied().filter(|&x| x != min).collect();
    let (_, &mut hi, _) = rest.select_nth_unstable_by(n, f32::total_cmp);
    let apart = apart_from(hi);
    let air = lo + 0.15 * (hi - lo);
    let background = rest.iter().filter(|&&x| x < air).count() * 20 >= rest.len();
    (apart && background).then_some(min)
}

/// The whole part of a coordinate known not to be negative (nor NaN), as `x as usize`
/// gives it for every index a volume can have (larger ones saturate, and stay out of range).
#[inline]
fn floor_index(x: f64) -> usize {
    x as i64 as usize
}

/// The steps `s` of the ray `v + s d` (voxel units) that can lie in the volume's cells
/// (`0 <= x < dims - 1` along each axis, where a trilinear sample exists): from the last
/// step before it enters them to the first after it leaves (exclusive), or `None` when it
/// misses them. Generous by a step at each end, so rounding never loses a sample.
pub(crate) fn within_cells(v: [f64; 3], d: [f64; 3], dims: [usize; 3]) -> Option<(usize, usize)> {
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    for c in 0..3 {
        let top = dims[c] as f64 - 1.0;
        if d[c] == 0.0 {
            if !(v[c] >= 0.0 && v[c] < top) {
                return None;
            }
            continue;
        }
        let (a, b) = ((0.0 - v[c]) / d[c], (top - v[c]) / d[c]);
        lo = lo.max(a.min(b));
        hi = hi.min(a.max(b));
    }
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return None;
    }
    let enter = (lo.floor() - 1.0).max(0.0);
    let leave = hi.ceil() + 2.0;
    Some((enter as usize, leave.min(1e12) as usize))
}

/// Side of the blocks of voxel cells that [`Occupancy`] summarises.
const BLOCK: usize = 4;

/// Where a volume lies wholly above, or wholly at or below, a threshold, in blocks of 4³
/// voxel cells: [`Occupancy::above`] answers `sample(v) > threshold` without interpolating
/// where the answer is the same throughout a block (air around the head, the inside of
/// the scalp), and interpolates elsewhere, so its answers are exactly the sample's.
#[derive(Debug, Clone)]
pub struct Occupancy<'a> {
    volume: &'a Volume,
    threshold: f32,
    /// Blocks along each voxel axis.
    blocks: [usize; 3],
    /// Per block: [`EMPTY`], [`FULL`] or [`MIXED`].
    state: Vec<u8>,
    /// Per block, for [`EMPTY`] and [`FULL`]: the Chebyshev distance (in blocks, at most
    /// [`REACH`]) to the nearest block not in that state (for [`FULL`], outside the
    /// volume counts as such): every block nearer than that is in the state too.
    reach: [Vec<u8>; 2],
}

/// The largest distance [`Occupancy`] keeps between blocks in one state and the others.
const REACH: usize = 8;

const EMPTY: u8 = 0;
const FULL: u8 = 1;
const MIXED: u8 = 2;

impl<'a> Occupancy<'a> {
    /// Summarises `volume` against `threshold` (one pass over the voxels).
    pub fn new(volume: &'a Volume, threshold: f32) -> Occupancy<'a> {
        let [ni, nj, nk] = volume.dims;
        let blocks = [ni, nj, nk].map(|n| n.div_ceil(BLOCK));
        let [bi, bj, bk] = blocks;
        // Per block, the range of its own voxels; NaN or infinite values make it unusable.
        let mut lo = vec![f32::INFINITY; bi * bj * bk];
        let mut hi = vec![f32::NEG_INFINITY; bi * bj * bk];
        let mut odd = vec![false; bi * bj * bk];
        for k in 0..nk {
            for j in 0..nj {
                let row = volume.index(0, j, k);
                let b_row = bi * (j / BLOCK + bj * (k / BLOCK));
                for (c, chunk) in volume.data[row..row + ni].chunks(BLOCK).enumerate() {
                    let b = b_row + c;
                    // `x * 0.0` is NaN for NaN and the infinities, 0 otherwise.
                    let (l, h, z) = chunk.iter().fold((lo[b], hi[b], 0.0f32), |(l, h, z), &x| {
                        (l.min(x), h.max(x), z + x * 0.0)
                    });
                    lo[b] = l;
                    hi[b] = h;
                    odd[b] |= z.is_nan();
                }
            }
        }
        // A cell's interpolation reads its corner voxels up to one further along each
        // axis: the block's range takes in the next blocks' too. Interpolation stays
        // within the corners' range up to rounding (a few float ulps, allowed for here).
        let margin = |x: f32| (x.abs() + threshold.abs()) as f64 * 1e-5;
        let mut state = vec![MIXED; bi * bj * bk];
        for k in 0..bk {
            for j in 0..bj {
                for i in 0..bi {
                    let (mut l, mut h, mut o) = (f32::INFINITY, f32::NEG_INFINITY, false);
                    for dk in 0..2 {
                        for dj in 0..2 {
                            for di in 0..2 {
                                let (x, y, z) = (i + di, j + dj, k + dk);
                                if x < bi && y < bj && z < bk {
                                    let b = x + bi * (y + bj * z);
                                    l = l.min(lo[b]);
                                    h = h.max(hi[b]);
                                    o |= odd[b];
                                }
                            }
                        }
                    }
                    let t = threshold as f64;
                    state[i + bi * (j + bj * k)] = if o {
                        MIXED
                    } else if h as f64 + margin(h) <= t {
                        EMPTY
                    } else if l as f64 - margin(l) > t {
                        FULL
                    } else {
                        MIXED
                    };
                }
            }
        }
        let reach = [EMPTY, FULL].map(|which| reach(&state, blocks, which));
        Occupancy {
            volume,
            threshold,
            blocks,
            state,
            reach,
        }
    }

    /// What [`Occupancy::above`] answers at `v`, and for how many of the samples at `v`,
    /// `v + d`, `v + 2d`, … in a row (at least one) it answers the same, as far as the
    /// blocks tell without interpolating: more than one only where `v` lies in a block
    /// wholly above or wholly below the threshold.
    #[inline]
    pub fn probe(&self, v: [f64; 3], d: [f64; 3]) -> (bool, usize) {
        let [x, y, z] = v;
        if !(x >= 0.0 && y >= 0.0 && z >= 0.0) {
            return (false, 1);
        }
        let (i, j, k) = (floor_index(x), floor_index(y), floor_index(z));
        let dims = self.volume.dims;
        if i + 1 >= dims[0] || j + 1 >= dims[1] || k + 1 >= dims[2] {
            return (false, 1);
        }
        let b = [i / BLOCK, j / BLOCK, k / BLOCK];
        let at = b[0] + self.blocks[0] * (b[1] + self.blocks[1] * b[2]);
        let (value, reach) = match self.state[at] {
            EMPTY => (false, self.reach[0][at] as f64),
            FULL => (true, self.reach[1][at] as f64),
            _ => return (self.volume.interpolate([i, j, k], v) > self.threshold, 1),
        };
        // The cube of blocks nearer than `reach` holds the state; for FULL it lies within
        // the volume's cells (which end one voxel short of its last plane).
        const EPS: f64 = 1e-6;
        let mut steps = f64::INFINITY;
        for c in 0..3 {
            let mut lo = (b[c] as f64 - reach + 1.0) * BLOCK as f64 + EPS;
            let mut hi = (b[c] as f64 + reach) * BLOCK as f64 - EPS;
            if value {
                lo = lo.max(EPS);
                hi = hi.min(dims[c] as f64 - 1.0 - EPS);
            }
            if !(v[c] >= lo && v[c] < hi) {
                return (value, 1);
            }
            if d[c] > 0.0 {
                steps = steps.min((hi - v[c]) / d[c]);
            } else if d[c] < 0.0 {
                steps = steps.min((v[c] - lo) / -d[c]);
            }
        }
        // Whole steps (`steps` is not negative: the cast truncates).
        (value, steps.min(1e9) as usize + 1)
    }

    /// The volume summarised.
    pub fn volume(&self) -> &'a Volume {
        self.volume
    }

    /// The threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Whether the trilinear sample at fractional voxel `v` lies above the threshold
    /// (false outside the volume): `volume.sample(v).is_some_and(|s| s > threshold)`.
    #[inline]
    pub fn above(&self, v: [f64; 3]) -> bool {
        let [x, y, z] = v;
        if !(x >= 0.0 && y >= 0.0 && z >= 0.0) {
            return false;
        }
        let (i, j, k) = (floor_index(x), floor_index(y), floor_index(z));
        let dims = self.volume.dims;
        if i + 1 >= dims[0] || j + 1 >= dims[1] || k + 1 >= dims[2] {
            return false;
        }
        let b = i / BLOCK + self.blocks[0] * (j / BLOCK + self.blocks[1] * (k / BLOCK));
        match self.state[b] {
            EMPTY => false,
            FULL => true,
            _ => self.volume.interpolate([i, j, k], v) > self.threshold,
        }
    }
}

/// Per block in state `which`: the Chebyshev distance (in blocks, at most [`REACH`]) to the
/// nearest block in another state, outside the grid counting as another state unless
/// `which` is [`EMPTY`]; 0 for blocks in another state. Separable: the distance along x,
/// then along y and z, each the least over the line of max(offset, distance so far).
fn reach(state: &[u8], blocks: [usize; 3], which: u8) -> Vec<u8> {
    let cap = REACH as u8;
    let mut d: Vec<u8> = state
        .iter()
        .map(|&s| if s == which { cap } else { 0 })
        .collect();
    let outside_counts = which != EMPTY;
    let strides = [1, blocks[0], blocks[0] * blocks[1]];
    let mut line = Vec::new();
    for axis in 0..3 {
        let n = blocks[axis];
        let stride = strides[axis];
        let others: Vec<usize> = (0..3).filter(|&c| c != axis).collect();
        for u in 0..blocks[others[0]] {
            for w in 0..blocks[others[1]] {
                let base = u * strides[others[0]] + w * strides[others[1]];
                line.clear();
                line.extend((0..n).map(|t| d[base + t * stride]));
                for t in 0..n {
                    let mut best = line[t];
                    if outside_counts {
                        best = best.min((t + 1).min(n - t).min(REACH) as u8);
                    }
                    // Only lines nearer than `best` can lower it (`best` is at most REACH,
                    // the window of the least).
                    if best > 1 {
                        let w = best as usize - 1;
                        let lo = t.saturating_sub(w);
                        let hi = (t + w).min(n - 1);
                        for (q, &f) in line.iter().enumerate().take(hi + 1).skip(lo) {
                            best = best.min(f.max(t.abs_diff(q) as u8));
                        }
                    }
                    d[base + t * stride] = best;
                }
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A ball of tissue with a dark cavity in noisy air, on a tilted, anisotropic grid.
    fn head() -> Volume {
        let dims = [37, 41, 29];
        let mut seed = 7u64;
        let mut data = Vec::new();
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let r = ((i as f64 - 18.0).powi(2)
                        + (j as f64 - 20.0).powi(2)
                        + (1.4 * (k as f64 - 14.0)).powi(2))
                    .sqrt();
                    let tissue = if r < 5.0 {
                        40.0
                    } else if r < 15.0 {
                        800.0
                    } else {
                        0.0
                    };
                    data.push((tissue + 60.0 * xorshift(&mut seed)) as f32);
                }
            }
        }
        Volume {
            dims,
            data,
            affine: [
                [0.98, 0.17, 0.0, -20.0],
                [-0.17, 0.98, 0.05, -30.0],
                [0.0, -0.07, 1.4, 5.0],
            ],
        }
    }

    #[test]
    fn occupancy_answers_as_the_sample_does() {
        let v = head();
        let t = 300.0;
        let occ = Occupancy::new(&v, t);
        let mut seed = 99u64;
        let (mut known, mut runs) = (0, 0);
        for _ in 0..20_000 {
            let p = [0, 1, 2].map(|c| xorshift(&mut seed) * (v.dims[c] as f64 + 4.0) - 2.0);
            assert_eq!(occ.above(p), v.sample(p).is_some_and(|s| s > t), "at {p:?}");
            let d = [0, 1, 2].map(|_| xorshift(&mut seed) * 3.0 - 1.5);
            let (value, n) = occ.probe(p, d);
            if n > 1 {
                known += 1;
                runs += n;
            }
            {
                let mut q = p;
                for _ in 0..n {
                    assert_eq!(v.sample(q).is_some_and(|s| s > t), value, "at {q:?}");
                    q = [q[0] + d[0], q[1] + d[1], q[2] + d[2]];
                }
            }
        }
        // Runs beyond one sample are found often.
        assert!(known > 2_000 && runs > 2 * known, "{known} {runs}");
    }

    #[test]
    fn rays_sample_nothing_outside_their_steps_within_cells() {
        let v = head();
        let mut seed = 3u64;
        let mut entered = 0;
        for _ in 0..5_000 {
            let p = [0, 1, 2].map(|c| xorshift(&mut seed) * (v.dims[c] as f64 + 60.0) - 30.0);
            let mut d = [0, 1, 2].map(|_| xorshift(&mut seed) * 4.0 - 2.0);
            if xorshift(&mut seed) < 0.2 {
                d[(xorshift(&mut seed) * 3.0) as usize] = 0.0;
            }
            let range = within_cells(p, d, v.dims);
            for s in 0..200usize {
                let q = [0, 1, 2].map(|c| p[c] + s as f64 * d[c]);
                if v.sample(q).is_some() {
                    let (enter, leave) = range.expect("a ray that samples the volume enters it");
                    assert!(s >= enter && s < leave, "step {s} outside {enter}..{leave}");
                    entered += 1;
                }
            }
        }
        assert!(entered > 4_000, "{entered}");
    }

    #[test]
    fn ct_padding_is_left_out_of_quantiles() {
        let dims = [20, 20, 20];
        // Padding outside the circle, air inside it, a head of soft tissue and bone.
        let data: Vec<f32> = (0..8000)
            .map(|i| match i % 20 {
                0..=3 => -3024.0,
                4..=9 => -1000.0 + (i % 7) as f32,
                10..=17 => 40.0 + (i % 11) as f32,
                _ => 1200.0,
            })
            .collect();
        let v = Volume {
            dims,
            data,
            affine: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
            ],
        };
        assert_eq!(v.quantile(0.0), -1000.0);
        // Without padding nothing is left out: MR background at 0, a ball in a flat field.
        let mr = Volume {
            data: (0..8000)
                .map(|i| if i % 3 == 0 { 0.0 } else { (i % 50) as f32 })
                .collect(),
            ..v.clone()
        };
        assert_eq!(mr.quantile(0.0), 0.0);
        let ball = Volume {
            data: (0..8000)
                .map(|i| if i % 4 == 0 { 400.0 } else { 2.0 })
                .collect(),
            ..v
        };
        assert_eq!(ball.quantile(0.0), 2.0);
    }

    #[test]
    fn nth_smallest_is_the_sorted_order() {
        let mut seed = 5u64;
        let mut v: Vec<f32> = (0..5000)
            .map(|i| match i % 9 {
                0 => 0.0,
                1 => -0.0,
                2 => -3024.0,
                3 => f32::MIN_POSITIVE / 4.0,
                4 => -(xorshift(&mut seed) as f32) * 1e-30,
                _ => ((xorshift(&mut seed) - 0.3) * 5000.0) as f32,
            })
            .collect();
        v.push(f32::MAX);
        v.push(f32::MIN);
        let mut sorted = v.clone();
        sorted.sort_by(f32::total_cmp);
        for n in (0..v.len()).step_by(7).chain([0, v.len() - 1]) {
            let [a, b] = nth_smallest(&v, [n, v.len() - 1 - n]);
            assert_eq!(a.to_bits(), sorted[n].to_bits(), "n = {n}");
            assert_eq!(b.to_bits(), sorted[v.len() - 1 - n].to_bits(), "n = {n}");
        }
    }

    #[test]
    fn quantiles_match_one_by_one() {
        let v = head();
        let [a, b, c] = v.quantiles(&[0.01, 0.5, 0.99]);
        assert_eq!(
            [a, b, c],
            [0.01, 0.5, 0.99].map(|q| {
                let mut x: Vec<f32> = v.data.clone();
                x.sort_by(|p, q| p.total_cmp(q));
                x[((x.len() - 1) as f64 * q).round() as usize]
            })
        );
    }
}
