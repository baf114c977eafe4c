//! Refacing: the removed face replaced by a smooth surface that identifies nobody, so that
//! tools which expect a whole head (registration, segmentation, attenuation correction) are
//! not thrown by a missing face.
//!
//! The new surface is the quadric `y = q(x, z)` (RAS+: y anterior) that best fits the front
//! of the removed face, fitted twice, the second time without what stands more than 4 mm
//! out of the first fit (nose, lips, brow, chin). Six numbers describe it, the face's
//! overall breadth and curvature, which the skull behind it gives away anyway; it has no
//! eyes, nose, lips or chin. Removed voxels behind it, within the face's outline seen from
//! the front, get one tissue value (the median of the removed tissue); the rest stay
//! background. Only voxels the defacing removed change, so the brain is as safe as after
//! defacing, and the face check must still find no face, else refacing is declined.

use std::collections::HashMap;

use crate::deface::{DefaceError, Defaced};
use crate::render::Scene;
use crate::volume::Volume;

/// Bin size of the face's depth map (mm).
const BIN_MM: f64 = 2.0;
/// Length unit of the fit (mm), for a well-conditioned system.
const UNIT_MM: f64 = 100.0;
/// What stands further out of the first fit than this (mm) is left out of the second.
const RELIEF_MM: f64 = 4.0;

/// What refacing did.
#[derive(Debug, Clone)]
pub struct Refaced {
    /// Removed voxels given the tissue value (the new surface's inside).
    pub filled_voxels: usize,
    /// The tissue value they hold.
    pub tissue_value: f32,
    /// The face check after refacing.
    pub after: crate::FaceCheck,
}

/// Refaces `volume`, which holds the defaced data of `original` as `defaced` describes. On
/// an error `volume` is left as defaced.
pub fn reface(
    volume: &mut Volume,
    original: &Volume,
    defaced: &Defaced,
) -> Result<Refaced, DefaceError> {
    volume.check().map_err(DefaceError::NotAHead)?;
    original.check().map_err(DefaceError::NotAHead)?;
    if original.dims != volume.dims || defaced.removed.len() != volume.len() {
        return Err(DefaceError::NotAHead(
            "the defaced volume does not match the original".into(),
        ));
    }
    let scene =
        Scene::of(original).ok_or_else(|| DefaceError::NotAHead("the volume is empty".into()))?;
    let tissue = |i: usize| original.data[i] > scene.threshold;
    // The removed tissue: its box bounds the work, its median is the fill.
    let [ni, nj, nk] = volume.dims;
    let mut front: HashMap<(i64, i64), f64> = HashMap::new();
    let mut values = Vec::new();
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let idx = volume.index(i, j, k);
                if defaced.removed[idx] && tissue(idx) {
                    values.push(original.data[idx]);
                    let w = volume.world([i as f64, j as f64, k as f64]);
                    let y = front.entry(bin(w)).or_insert(f64::NEG_INFINITY);
                    *y = y.max(w[1]);
                }
            }
        }
    }
    if values.is_empty() {
        return Err(DefaceError::Declined(
            "no tissue was removed; there is nothing to reface".into(),
        ));
    }
    let mid = values.len() / 2;
    let (_, &mut tissue_value, _) = values.select_nth_unstable_by(mid, f32::total_cmp);
    let surface = Surface::fit(&front, defaced.nasion)?;
    let original_defaced = volume.data.clone();
    let mut filled_voxels = 0;
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let idx = volume.index(i, j, k);
                if !defaced.removed[idx] {
                    continue;
                }
                let w = volume.world([i as f64, j as f64, k as f64]);
                if front.contains_key(&bin(w)) && w[1] <= surface.y(w[0], w[2]) {
                    volume.data[idx] = tissue_value;
                    filled_voxels += 1;
                }
            }
        }
    }
    let after = crate::face::check(volume)
        .map_err(|e| DefaceError::Declined(format!("the face check failed: {e}")))?;
    if after.face_found {
        volume.data = original_defaced;
        return Err(DefaceError::Declined(format!(
            "the refaced surface is taken for a face (score {:.1})",
            after.score
        )));
    }
    Ok(Refaced {
        filled_voxels,
        tissue_value,
        after,
    })
}

/// The (x, z) bin of a world position, for the depth map seen from the front.
fn bin(w: [f64; 3]) -> (i64, i64) {
    (
        (w[0] / BIN_MM).floor() as i64,
        (w[2] / BIN_MM).floor() as i64,
    )
}

/// The smooth surface `y = q(x, z)`, a quadric in units of [`UNIT_MM`] about `origin`.
struct Surface {
    origin: [f64; 3],
    coef: [f64; 6],
}

impl Surface {
    /// Fits the depth map `front` ((x, z) bin → most anterior y), twice.
    fn fit(front: &HashMap<(i64, i64), f64>, origin: [f64; 3]) -> Result<Surface, DefaceError> {
        let points: Vec<[f64; 3]> = front
            .iter()
            .map(|(&(bx, bz), &y)| [(bx as f64 + 0.5) * BIN_MM, y, (bz as f64 + 0.5) * BIN_MM])
            .collect();
        let mut surface: Option<Surface> = None;
        for _ in 0..2 {
            let mut m = [[0.0f64; 7]; 6];
            let mut n = 0usize;
            for p in &points {
                if let Some(s) = &surface {
                    if p[1] - s.y(p[0], p[2]) > RELIEF_MM {
                        continue;
                    }
                }
                let row = Surface::terms(p[0] - origin[0], p[2] - origin[2]);
                let target = (p[1] - origin[1]) / UNIT_MM;
                for a in 0..6 {
                    for b in 0..6 {
                        m[a][b] += row[a] * row[b];
                    }
                    m[a][6] += row[a] * target;
                }
                n += 1;
            }
            let coef = solve(m).filter(|_| n >= 50).ok_or_else(|| {
                DefaceError::Declined("the removed face is too small to fit a surface to".into())
            })?;
            surface = Some(Surface { origin, coef });
        }
        surface.ok_or_else(|| DefaceError::Declined("no surface".into()))
    }

    fn terms(x: f64, z: f64) -> [f64; 6] {
        let (x, z) = (x / UNIT_MM, z / UNIT_MM);
        [1.0, x, z, x * x, x * z, z * z]
    }

    /// The surface's y (mm) at world (x, z).
    fn y(&self, x: f64, z: f64) -> f64 {
        let t = Surface::terms(x - self.origin[0], z - self.origin[2]);
        let v: f64 = t.iter().zip(&self.coef).map(|(a, b)| a * b).sum();
        self.origin[1] + v * UNIT_MM
    }
}

/// Solves a 6×6 system given as an augmented matrix (Gaussian elimination with partial
/// pivoting); `None` when it is singular.
fn solve(mut m: [[f64; 7]; 6]) -> Option<[f64; 6]> {
    for col in 0..6 {
        let pivot = (col..6).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let x = [0, 1, 2, 3, 4, 5].map(|i| m[i][6] / m[i][i]);
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_known_system() {
        let mut m = [[0.0; 7]; 6];
        let x = [1.0, -2.0, 0.5, 3.0, 0.0, -1.0];
        for (r, row) in m.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().take(6).enumerate() {
                *v = if r == c {
                    4.0
                } else {
                    1.0 / (1 + r + c) as f64
                };
            }
            row[6] = (0..6).map(|c| row[c] * x[c]).sum();
        }
        let got = solve(m).unwrap();
        assert!(
            got.iter().zip(x).all(|(a, b)| (a - b).abs() < 1e-9),
            "{got:?}"
        );
        assert!(solve([[0.0; 7]; 6]).is_none());
    }
}
