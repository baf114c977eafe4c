//! A canonical grid: the head resampled onto 1 mm voxels aligned with the patient's axes
//! (RAS+), whatever the acquisition direction (axial, sagittal, coronal, oblique, flipped).
//! Masks are computed here and mapped back to the original voxels.

/// A boolean mask on a RAS-aligned grid with isotropic spacing.
#[derive(Debug, Clone)]
pub struct Grid {
    /// World position (RAS+ mm) of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// Voxel size (mm), the same on every axis.
    pub step: f64,
    /// Size along x (+ towards the patient's right), y (+ anterior), z (+ superior).
    pub dims: [usize; 3],
    /// Values, `x + dims[0] * (y + dims[1] * z)`.
    pub data: Vec<bool>,
}

impl Grid {
    /// The size of [`Grid::covering_box`]`(lo, hi, step)`, known before it is allocated.
    pub fn dims_covering(lo: [f64; 3], hi: [f64; 3], step: f64) -> [usize; 3] {
        [0, 1, 2].map(|c| (((hi[c] - lo[c]).max(0.0) / step).floor() as usize + 1).min(1024))
    }

    /// An empty grid covering the world box `lo..=hi` (RAS+ mm), at most 1024 voxels along
    /// each axis.
    pub fn covering_box(lo: [f64; 3], hi: [f64; 3], step: f64) -> Grid {
        let dims = Grid::dims_covering(lo, hi, step);
        Grid {
            origin: lo,
            step,
            dims,
            data: vec![false; dims[0] * dims[1] * dims[2]],
        }
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the grid has no voxels.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The linear index of (x, y, z).
    #[inline]
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        x + self.dims[0] * (y + self.dims[1] * z)
    }

    /// World position of a grid voxel.
    #[inline]
    pub fn world(&self, x: usize, y: usize, z: usize) -> [f64; 3] {
        [
            self.origin[0] + x as f64 * self.step,
            self.origin[1] + y as f64 * self.step,
            self.origin[2] + z as f64 * self.step,
        ]
    }

    /// The grid voxel nearest a world position, if inside.
    #[inline]
    pub fn at_world(&self, w: [f64; 3]) -> Option<usize> {
        let mut idx = [0usize; 3];
        for c in 0..3 {
            let f = round((w[c] - self.origin[c]) / self.step);
            if !(f >= 0.0 && (f as usize) < self.dims[c]) {
                return None;
            }
            idx[c] = f as usize;
        }
        Some(self.index(idx[0], idx[1], idx[2]))
    }

    /// Calls `f(idx, label)` for every voxel `idx` of a volume (`dims`, voxel-to-world
    /// `affine`) whose nearest grid voxel ([`Grid::at_world`], ties either way) has a
    /// nonzero `label` (one per grid voxel), in the volume's index order.
    pub fn each_voxel_in(
        &self,
        dims: [usize; 3],
        affine: &[[f64; 4]; 3],
        label: &[u8],
        mut f: impl FnMut(usize, u8),
    ) {
        // Which blocks of 8³ grid voxels hold a label or border one that does (with a ring
        // of blocks around the grid): runs of volume voxels far from every label are
        // skipped with one look-up.
        const B: usize = 8;
        let [nx, ny, nz] = self.dims;
        let nb = self.dims.map(|n| n.div_ceil(B) + 2);
        let mut near = vec![false; nb[0] * nb[1] * nb[2]];
        let block = |x: usize, y: usize, z: usize| x + nb[0] * (y + nb[1] * z);
        for z in 0..nz {
            for y in 0..ny {
                let row = &label[self.index(0, y, z)..][..nx];
                for (bx, chunk) in row.chunks(B).enumerate() {
                    if chunk.iter().any(|&l| l != 0) {
                        let (bx, by, bz) = (bx + 1, y / B + 1, z / B + 1);
                        for dz in 0..3 {
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    near[block(bx + dx - 1, by + dy - 1, bz + dz - 1)] = true;
                                }
                            }
                        }
                    }
                }
            }
        }
        // Grid position (before rounding) of a volume voxel: its row's offset plus its
        // offset along the row, in grid units (each computed once). Up to rounding in the
        // last bit, this is the position `at_world` rounds; a voxel exactly halfway between
        // two grid voxels may go to either.
        let [ni, nj, nk] = dims;
        let along = |axis: usize, n: usize| -> Vec<[f64; 3]> {
            (0..n)
                .map(|v| [0, 1, 2].map(|c| affine[c][axis] * v as f64 / self.step))
                .collect()
        };
        let (gi, gj, gk) = (along(0, ni), along(1, nj), along(2, nk));
        let start = [0, 1, 2].map(|c| (affine[c][3] - self.origin[c]) / self.step);
        let mut base = [0.0f64; 3];
        let at = |base: &[f64; 3], i: usize| -> [f64; 3] {
            [base[0] + gi[i][0], base[1] + gi[i][1], base[2] + gi[i][2]]
        };
        // A run of `run` voxels along i moves less than 7.5 grid voxels: each maps within a
        // block of the one the run starts in.
        let di = (0..3).map(|c| affine[c][0].powi(2)).sum::<f64>().sqrt() / self.step;
        let run = ((7.0 / di).floor() as usize).clamp(1, B);
        for (k, wk) in gk.iter().enumerate() {
            for (j, wj) in gj.iter().enumerate() {
                let row = ni * (j + nj * k);
                for c in 0..3 {
                    base[c] = start[c] + wj[c] + wk[c];
                }
                for i0 in (0..ni).step_by(run) {
                    let p = at(&base, i0);
                    // The block (counting the ring) of each coordinate: floor(p / B) + 1.
                    let block_of = |x: f64| x / B as f64 + 1.0;
                    let b = [block_of(p[0]), block_of(p[1]), block_of(p[2])];
                    let reachable = b.iter().zip(nb).all(|(&x, n)| x >= 0.0 && x < n as f64)
                        && near[block(b[0] as usize, b[1] as usize, b[2] as usize)];
                    if !reachable {
                        continue;
                    }
                    for i in i0..(i0 + run).min(ni) {
                        let p = at(&base, i);
                        let mut g = [0usize; 3];
                        let mut inside = true;
                        for c in 0..3 {
                            let r = round(p[c]);
                            inside &= r >= 0.0 && (r as usize) < self.dims[c];
                            g[c] = r as usize;
                        }
                        if inside {
                            let l = label[self.index(g[0], g[1], g[2])];
                            if l != 0 {
                                f(row + i, l);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Morphological closing with a ball of `radius` voxels: bridges gaps narrower than the
    /// ball (in a T1 head, the dark skull and CSF between scalp and brain; the ear canals).
    pub fn close(&mut self, radius: f64) {
        let r2 = (radius * radius) as f32;
        let to_set = self.distance_sq_within(true, r2);
        let dilated = Grid {
            data: to_set.iter().map(|&d| d <= r2).collect(),
            ..self.clone()
        };
        let to_unset = dilated.distance_sq_within(false, r2);
        for (v, d) in self.data.iter_mut().zip(&to_unset) {
            *v = *d > r2;
        }
    }

    /// Morphological opening with a ball of `radius` voxels: what is left after removing
    /// the parts thinner than the ball (ears, seen from the head).
    pub fn opened(&self, radius: f64) -> Vec<bool> {
        let r2 = (radius * radius) as f32;
        let depth = self.distance_sq_within(false, r2);
        let eroded = Grid {
            data: depth.iter().map(|&d| d > r2).collect(),
            ..self.clone()
        };
        eroded
            .distance_sq_within(true, r2)
            .iter()
            .map(|&d| d <= r2)
            .collect()
    }

    /// A grid of half the resolution: a coarse voxel is set when `any` (or, with
    /// `any == false`, all) of its 2×2×2 fine voxels are.
    pub fn halved(&self, any: bool) -> Grid {
        let [nx, ny, nz] = self.dims;
        let dims = [nx.div_ceil(2), ny.div_ceil(2), nz.div_ceil(2)];
        let mut data = vec![!any; dims[0] * dims[1] * dims[2]];
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let c = (x / 2) + dims[0] * ((y / 2) + dims[1] * (z / 2));
                    let v = self.data[self.index(x, y, z)];
                    if any {
                        data[c] |= v;
                    } else {
                        data[c] &= v;
                    }
                }
            }
        }
        Grid {
            origin: self.origin,
            step: self.step * 2.0,
            dims,
            data,
        }
    }

    /// Replaces every voxel's value `v` with `f(v, c)`, where `c` is the voxel of
    /// [`Grid::halved`] that holds it.
    pub fn update_halved(&mut self, mut f: impl FnMut(bool, usize) -> bool) {
        let [nx, ny, nz] = self.dims;
        let cx = nx.div_ceil(2);
        let cy = ny.div_ceil(2);
        let mut rows = self.data.chunks_exact_mut(nx.max(1));
        for z in 0..nz {
            for y in 0..ny {
                let coarse_row = cx * ((y / 2) + cy * (z / 2));
                if let Some(row) = rows.next() {
                    for (x, v) in row.iter_mut().enumerate() {
                        *v = f(*v, coarse_row + x / 2);
                    }
                }
            }
        }
    }

    /// Calls `f(i, c, [x, y, z])` for every voxel `i`, in order, at (x, y, z), with the
    /// voxel `c` of [`Grid::halved`] that holds it.
    #[inline]
    pub fn each_halved(&self, mut f: impl FnMut(usize, usize, [usize; 3])) {
        let [nx, ny, nz] = self.dims;
        let (cx, cy) = (nx.div_ceil(2), ny.div_ceil(2));
        let mut i = 0;
        for z in 0..nz {
            for y in 0..ny {
                let row = cx * ((y / 2) + cy * (z / 2));
                for x in 0..nx {
                    f(i, row + x / 2, [x, y, z]);
                    i += 1;
                }
            }
        }
    }

    /// The set voxels all of whose six neighbours are set too (erosion by one voxel).
    pub fn interior(&self) -> Vec<bool> {
        let [nx, ny, nz] = self.dims;
        let (sy, sz) = (nx, nx * ny);
        let mut out = vec![false; self.len()];
        if nx < 3 {
            return out;
        }
        for z in 1..nz.saturating_sub(1) {
            for y in 1..ny.saturating_sub(1) {
                let row = self.index(0, y, z);
                for (i, o) in out.iter_mut().enumerate().take(row + nx - 1).skip(row + 1) {
                    *o = self.data[i]
                        && self.data[i - 1]
                        && self.data[i + 1]
                        && self.data[i - sy]
                        && self.data[i + sy]
                        && self.data[i - sz]
                        && self.data[i + sz];
                }
            }
        }
        out
    }

    /// The box of voxels `lo..hi` (per axis; `hi` at most the grid's size) as a grid of
    /// its own.
    pub fn sub(&self, lo: [usize; 3], hi: [usize; 3]) -> Grid {
        let hi = [0, 1, 2].map(|c| hi[c].min(self.dims[c]));
        let lo = [0, 1, 2].map(|c| lo[c].min(hi[c]));
        let dims = [0, 1, 2].map(|c| hi[c] - lo[c]);
        let mut data = Vec::with_capacity(dims[0] * dims[1] * dims[2]);
        for z in lo[2]..hi[2] {
            for y in lo[1]..hi[1] {
                let row = self.index(lo[0], y, z);
                data.extend_from_slice(&self.data[row..row + dims[0]]);
            }
        }
        Grid {
            origin: [0, 1, 2].map(|c| self.origin[c] + lo[c] as f64 * self.step),
            step: self.step,
            dims,
            data,
        }
    }

    /// Keeps only the largest 6-connected component of true voxels.
    pub fn keep_largest_component(&mut self) {
        let n = self.len();
        let mut label = vec![0u32; n];
        let mut best = (0u32, 0usize);
        let mut next = 1u32;
        let mut stack = Vec::new();
        for start in 0..n {
            if !self.data[start] || label[start] != 0 {
                continue;
            }
            let mut size = 0usize;
            label[start] = next;
            stack.push(start);
            while let Some(v) = stack.pop() {
                size += 1;
                for u in self.neighbours(v) {
                    if self.data[u] && label[u] == 0 {
                        label[u] = next;
                        stack.push(u);
                    }
                }
            }
            if size > best.1 {
                best = (next, size);
            }
            next += 1;
        }
        for (d, l) in self.data.iter_mut().zip(&label) {
            *d = *l == best.0 && best.1 > 0;
        }
    }

    /// Fills cavities: every false voxel not connected to the grid's border becomes true.
    pub fn fill_holes(&mut self) {
        let n = self.len();
        let mut outside = vec![false; n];
        let mut stack = Vec::new();
        let [nx, ny, nz] = self.dims;
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let border =
                        x == 0 || y == 0 || z == 0 || x + 1 == nx || y + 1 == ny || z + 1 == nz;
                    let i = self.index(x, y, z);
                    if border && !self.data[i] && !outside[i] {
                        outside[i] = true;
                        stack.push(i);
                    }
                }
            }
        }
        while let Some(v) = stack.pop() {
            for u in self.neighbours(v) {
                if !self.data[u] && !outside[u] {
                    outside[u] = true;
                    stack.push(u);
                }
            }
        }
        for (d, o) in self.data.iter_mut().zip(&outside) {
            *d = !o;
        }
    }

    fn neighbours(&self, v: usize) -> impl Iterator<Item = usize> {
        let [nx, ny, nz] = self.dims;
        let x = v % nx;
        let y = (v / nx) % ny;
        let z = v / (nx * ny);
        let sxy = nx * ny;
        [
            (x > 0).then(|| v - 1),
            (x + 1 < nx).then(|| v + 1),
            (y > 0).then(|| v - nx),
            (y + 1 < ny).then(|| v + nx),
            (z > 0).then(|| v - sxy),
            (z + 1 < nz).then(|| v + sxy),
        ]
        .into_iter()
        .flatten()
    }

    /// [`Grid::distance_sq`] where that is at most `cap`, and a value above `cap`
    /// elsewhere: all that comparing with a radius needs. Each pass along y and z takes
    /// the least over the rows within `cap`'s reach, whole rows at a time, which for small
    /// caps is much cheaper than the lower envelope.
    pub fn distance_sq_within(&self, to: bool, cap: f32) -> Vec<f32> {
        let [nx, ny, nz] = self.dims;
        let mut d = self.distance_sq_x(to);
        // The largest offset whose square is within the cap.
        let mut reach = cap.max(0.0).sqrt() as usize;
        while ((reach + 1) * (reach + 1)) as f32 <= cap {
            reach += 1;
        }
        let lower = |out: &mut [f32], src: &[f32], w: f32| {
            for (o, &s) in out.iter_mut().zip(src) {
                let v = s + w;
                *o = if v < *o { v } else { *o };
            }
        };
        // Along y, plane by plane.
        let plane = nx * ny;
        let mut src = vec![0f32; plane];
        for p in d.chunks_exact_mut(plane.max(1)) {
            src.copy_from_slice(p);
            for y in 0..ny {
                let out = &mut p[y * nx..(y + 1) * nx];
                for dy in 1..=reach.min(ny) {
                    let w = (dy * dy) as f32;
                    if y >= dy {
                        lower(out, &src[(y - dy) * nx..][..nx], w);
                    }
                    if y + dy < ny {
                        lower(out, &src[(y + dy) * nx..][..nx], w);
                    }
                }
            }
        }
        // Along z.
        let src = d.clone();
        for z in 0..nz {
            let out = &mut d[z * plane..(z + 1) * plane];
            for dz in 1..=reach.min(nz) {
                let w = (dz * dz) as f32;
                if z >= dz {
                    lower(out, &src[(z - dz) * plane..][..plane], w);
                }
                if z + dz < nz {
                    lower(out, &src[(z + dz) * plane..][..plane], w);
                }
            }
        }
        d
    }

    /// Squared distance along x alone to the nearest voxel whose value is `to`.
    fn distance_sq_x(&self, to: bool) -> Vec<f32> {
        let [nx, ny, nz] = self.dims;
        let mut d = vec![INF; self.len()];
        // Along x, on the binary input: two sweeps give the exact 1-D distance.
        for z in 0..nz {
            for y in 0..ny {
                let base = self.index(0, y, z);
                let row = &self.data[base..base + nx];
                let out = &mut d[base..base + nx];
                let mut last: Option<usize> = None;
                for x in 0..nx {
                    if row[x] == to {
                        last = Some(x);
                    }
                    if let Some(l) = last {
                        out[x] = ((x - l) * (x - l)) as f32;
                    }
                }
                let mut next: Option<usize> = None;
                for x in (0..nx).rev() {
                    if row[x] == to {
                        next = Some(x);
                    }
                    if let Some(n) = next {
                        out[x] = out[x].min(((n - x) * (n - x)) as f32);
                    }
                }
            }
        }
        d
    }

    /// Squared Euclidean distance (in voxels²) from each voxel to the nearest voxel whose
    /// value is `to` (Felzenszwalb–Huttenlocher, separable, exact).
    pub fn distance_sq(&self, to: bool) -> Vec<f32> {
        let [nx, ny, nz] = self.dims;
        let mut d = self.distance_sq_x(to);
        let mut scratch = Scratch::default();
        let mut f = Vec::new();
        let mut out = Vec::new();
        // Along y.
        for z in 0..nz {
            for x in 0..nx {
                f.clear();
                f.extend((0..ny).map(|y| d[self.index(x, y, z)]));
                if edt_1d(&f, &mut out, &mut scratch) {
                    for (y, &o) in out.iter().enumerate().take(ny) {
                        let i = self.index(x, y, z);
                        d[i] = o;
                    }
                }
            }
        }
        // Along z.
        for y in 0..ny {
            for x in 0..nx {
                f.clear();
                f.extend((0..nz).map(|z| d[self.index(x, y, z)]));
                if edt_1d(&f, &mut out, &mut scratch) {
                    for (z, &o) in out.iter().enumerate().take(nz) {
                        let i = self.index(x, y, z);
                        d[i] = o;
                    }
                }
            }
        }
        d
    }
}

/// `x.round()` (half away from zero), without the library call that `f64::round` makes
/// on x86-64 without SSE4.1.
#[inline]
fn round(x: f64) -> f64 {
    if x.is_nan() || x.abs() >= 4.5e15 {
        return x.round();
    }
    // Without branches on the fraction (which is as good as random on an oblique volume,
    // and a branch on it mispredicts half the time).
    let t = x as i64;
    let r = x - t as f64;
    (t + (r >= 0.5) as i64 - (r <= -0.5) as i64) as f64
}

/// "No feature in reach" in squared distances.
const INF: f32 = 1e20;

/// Buffers reused across the rows of a distance transform.
#[derive(Default)]
struct Scratch {
    v: Vec<usize>,
    z: Vec<f64>,
}

/// One-dimensional squared distance transform of sampled function `f` (the lower envelope
/// of parabolas rooted at the finite samples); samples of 1e19 or more count as absent.
/// Returns false, leaving `out` alone, when the row needs no change (no finite sample, or
/// every sample zero).
fn edt_1d(f: &[f32], out: &mut Vec<f32>, scratch: &mut Scratch) -> bool {
    const ABSENT: f32 = 1e19;
    if f.iter().all(|&x| x >= ABSENT) || f.iter().all(|&x| x == 0.0) {
        return false;
    }
    let n = f.len();
    out.clear();
    out.resize(n, INF);
    let (v, z) = (&mut scratch.v, &mut scratch.z);
    v.clear();
    z.clear();
    for q in 0..n {
        if f[q] >= ABSENT {
            continue;
        }
        let fq = f[q] as f64 + (q * q) as f64;
        loop {
            match v.last() {
                None => {
                    v.push(q);
                    z.push(f64::NEG_INFINITY);
                    break;
                }
                Some(&p) => {
                    let s = (fq - (f[p] as f64 + (p * p) as f64)) / (2.0 * (q - p) as f64);
                    if v.len() > 1 && s <= *z.last().unwrap_or(&f64::NEG_INFINITY) {
                        v.pop();
                        z.pop();
                        continue;
                    }
                    v.push(q);
                    z.push(s);
                    break;
                }
            }
        }
    }
    let mut k = 0usize;
    for (q, o) in out.iter_mut().enumerate() {
        while k + 1 < v.len() && z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let dq = q as f64 - p as f64;
        *o = (dq * dq + f[p] as f64) as f32;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_transform_is_exact_on_a_point() {
        let mut g = Grid {
            origin: [0.0; 3],
            step: 1.0,
            dims: [7, 6, 5],
            data: vec![false; 7 * 6 * 5],
        };
        let c = g.index(3, 2, 1);
        g.data[c] = true;
        let d = g.distance_sq(true);
        for z in 0..5 {
            for y in 0..6 {
                for x in 0..7 {
                    let e = (x as f32 - 3.0).powi(2)
                        + (y as f32 - 2.0).powi(2)
                        + (z as f32 - 1.0).powi(2);
                    assert_eq!(d[g.index(x, y, z)], e);
                }
            }
        }
    }

    #[test]
    fn round_is_f64_round() {
        let mut x = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4503599627370495.5,
            1e300,
            -7.5000000001,
            f64::INFINITY,
        ]
        .to_vec();
        let mut seed = 3u64;
        for _ in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            x.push((seed >> 11) as f64 / (1u64 << 40) as f64 - 4096.0);
        }
        for v in x {
            assert_eq!(round(v), v.round(), "{v}");
        }
        assert!(round(f64::NAN).is_nan());
    }

    #[test]
    fn each_voxel_in_finds_the_voxels_at_world_does() {
        let mut g = Grid::covering_box([-30.0, -25.0, -20.0], [30.0, 35.0, 25.0], 1.0);
        let mut label = vec![0u8; g.len()];
        let mut seed = 11u64;
        for (i, l) in label.iter_mut().enumerate() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let z = i / (g.dims[0] * g.dims[1]);
            // Labels in a band only, so that whole runs are skipped.
            if (15..25).contains(&z) && seed.is_multiple_of(7) {
                *l = 1 + (seed % 2) as u8;
            }
        }
        g.data[0] = true;
        let dims = [40, 45, 30];
        let affine = [
            [0.9, 0.3, 0.1, -25.0],
            [-0.3, 0.95, 0.2, -20.0],
            [0.05, -0.2, 1.3, -22.0],
        ];
        let mut found = Vec::new();
        g.each_voxel_in(dims, &affine, &label, |idx, l| found.push((idx, l)));
        let v = crate::volume::Volume {
            dims,
            data: vec![0.0; dims[0] * dims[1] * dims[2]],
            affine,
        };
        let mut expected = Vec::new();
        // Voxels exactly halfway between grid voxels (up to rounding) may go either way.
        let mut ties = std::collections::HashSet::new();
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let w = v.world([i as f64, j as f64, k as f64]);
                    let halfway = (0..3).any(|c| {
                        let f = (w[c] - g.origin[c]) / g.step;
                        (f - f.floor() - 0.5).abs() < 1e-9
                    });
                    if halfway {
                        ties.insert(v.index(i, j, k));
                    } else if let Some(at) = g.at_world(w) {
                        if label[at] != 0 {
                            expected.push((v.index(i, j, k), label[at]));
                        }
                    }
                }
            }
        }
        assert!(
            expected.len() > 100 && ties.len() > 10,
            "{} {}",
            expected.len(),
            ties.len()
        );
        found.retain(|(idx, _)| !ties.contains(idx));
        assert_eq!(found, expected);
    }

    #[test]
    fn holes_fill_and_small_parts_go() {
        let mut g = Grid {
            origin: [0.0; 3],
            step: 1.0,
            dims: [9, 9, 9],
            data: vec![false; 729],
        };
        for z in 1..8 {
            for y in 1..8 {
                for x in 1..8 {
                    let shell = x == 1 || x == 7 || y == 1 || y == 7 || z == 1 || z == 7;
                    let i = g.index(x, y, z);
                    g.data[i] = shell;
                }
            }
        }
        let lone = g.index(0, 0, 8);
        g.data[lone] = true;
        g.keep_largest_component();
        assert!(!g.data[lone]);
        let centre = g.index(4, 4, 4);
        assert!(!g.data[centre]);
        g.fill_holes();
        assert!(g.data[centre]);
    }
}

#[cfg(test)]
mod brute {
    use super::*;

    #[test]
    fn distance_within_a_cap_is_exact_up_to_it() {
        let mut seed = 777u64;
        let mut g = Grid {
            origin: [0.0; 3],
            step: 1.0,
            dims: [23, 19, 17],
            data: vec![false; 23 * 19 * 17],
        };
        for v in g.data.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *v = seed.is_multiple_of(151);
        }
        for to in [true, false] {
            let exact = g.distance_sq(to);
            for cap in [0.0, 2.0, 6.25, 25.0, 156.25] {
                let within = g.distance_sq_within(to, cap);
                for (e, w) in exact.iter().zip(&within) {
                    assert!(if *e <= cap { w == e } else { *w > cap }, "{e} {w} {cap}");
                }
            }
        }
    }

    #[test]
    fn distance_transform_matches_brute_force() {
        let dims = [11, 9, 7];
        let mut seed = 12345u64;
        let mut g = Grid {
            origin: [0.0; 3],
            step: 1.0,
            dims,
            data: vec![false; 11 * 9 * 7],
        };
        for v in g.data.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *v = seed.is_multiple_of(9);
        }
        let d = g.distance_sq(true);
        for z in 0..7 {
            for y in 0..9 {
                for x in 0..11 {
                    let mut best = f32::INFINITY;
                    for z2 in 0..7 {
                        for y2 in 0..9 {
                            for x2 in 0..11 {
                                if g.data[g.index(x2, y2, z2)] {
                                    let e = ((x as i32 - x2 as i32).pow(2)
                                        + (y as i32 - y2 as i32).pow(2)
                                        + (z as i32 - z2 as i32).pow(2))
                                        as f32;
                                    best = best.min(e);
                                }
                            }
                        }
                    }
                    assert_eq!(d[g.index(x, y, z)], best, "at {x},{y},{z}");
                }
            }
        }
    }
}
