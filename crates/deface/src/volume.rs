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
    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
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
        let (i, j, k) = (x as usize, y as usize, z as usize);
        if i + 1 >= self.dims[0] || j + 1 >= self.dims[1] || k + 1 >= self.dims[2] {
            return None;
        }
        let (fx, fy, fz) = (
            (x - i as f64) as f32,
            (y - j as f64) as f32,
            (z - k as f64) as f32,
        );
        let at = |di, dj, dk| self.data[self.index(i + di, j + dj, k + dk)];
        let c00 = at(0, 0, 0) * (1.0 - fx) + at(1, 0, 0) * fx;
        let c10 = at(0, 1, 0) * (1.0 - fx) + at(1, 1, 0) * fx;
        let c01 = at(0, 0, 1) * (1.0 - fx) + at(1, 0, 1) * fx;
        let c11 = at(0, 1, 1) * (1.0 - fx) + at(1, 1, 1) * fx;
        let c0 = c00 * (1.0 - fy) + c10 * fy;
        let c1 = c01 * (1.0 - fy) + c11 * fy;
        Some(c0 * (1.0 - fz) + c1 * fz)
    }

    /// The value at quantile `q` (0..=1) of the finite voxels (a sampled estimate for large
    /// volumes).
    pub fn quantile(&self, q: f64) -> f32 {
        let step = (self.data.len() / 2_000_000).max(1);
        let mut v: Vec<f32> = self
            .data
            .iter()
            .step_by(step)
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return 0.0;
        }
        let n = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        let (_, x, _) = v.select_nth_unstable_by(n, |a, b| a.total_cmp(b));
        *x
    }
}
