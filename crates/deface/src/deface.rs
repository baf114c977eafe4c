//! Defacing: removes the face (eyes' surface, nose, lips, chin) and the ears from a head
//! volume, never the brain, using the head's own geometry; no template, no registration.
//!
//! 1. The head is resampled onto a 1 mm grid aligned with the patient's axes ([`Grid`]), so
//!    every acquisition direction is handled alike; its mask is the largest connected part
//!    above the skin threshold, made solid inside (closing and hole filling on a 2 mm copy).
//! 2. Landmarks come from the mid-sagittal profile of the face: the nose tip (the most
//!    anterior point 60-170 mm below the top of the head) and the nasion (where the profile,
//!    going up from the tip, turns forward again at the brow).
//! 3. A conservative brain region is estimated: tissue at least 18 mm under the skin above
//!    the brow, and at least 25 mm under it 40 mm or more behind the nasion (temporal lobes,
//!    brainstem). The face is everything in front of a cut that passes 18 mm behind the
//!    nasion skin, comes forward through the brow above it, and slopes back below it to
//!    25 mm behind the nasion, straight down to the chin (a shear, as quickshear makes). The
//!    cut never comes within 4 mm of the brain region.
//! 4. The ears are what a morphological opening with a 5 mm ball takes off the sides of the
//!    head at ear height, behind the face.
//! 5. Checks: the input must look like a head (a plausible size, a nose); after defacing,
//!    the face check must find no face, else the cut goes 4 mm deeper and is tried again;
//!    when that would reach the brain region, the volume is declined.

use crate::grid::Grid;
use crate::render::Scene;
use crate::volume::{Occupancy, Volume};

/// What to remove.
#[derive(Debug, Clone, Copy)]
pub struct DefaceOptions {
    /// Also remove the ears (default: yes).
    pub ears: bool,
    /// Run the face check after defacing and decline when a face remains (default: yes).
    pub verify: bool,
}

impl Default for DefaceOptions {
    fn default() -> DefaceOptions {
        DefaceOptions {
            ears: true,
            verify: true,
        }
    }
}

/// Why a volume was declined.
#[derive(Debug, thiserror::Error)]
pub enum DefaceError {
    /// The volume does not look like a head.
    #[error("not a head: {0}")]
    NotAHead(String),
    /// Defacing would not remove the face without reaching the brain.
    #[error("declined: {0}")]
    Declined(String),
}

/// The outcome of defacing.
#[derive(Debug, Clone)]
pub struct Defaced {
    /// Per original voxel: whether it was removed.
    pub removed: Vec<bool>,
    /// Tissue voxels (above the skin threshold) removed from the face.
    pub face_voxels: usize,
    /// Tissue voxels removed from the ears.
    pub ear_voxels: usize,
    /// Landmarks found (RAS+ mm): nose tip, nasion.
    pub nose_tip: [f64; 3],
    /// The nasion.
    pub nasion: [f64; 3],
    /// How far behind the nasion skin the cut went (mm).
    pub depth: f64,
    /// The value removed voxels were set to (the background).
    pub fill: f32,
    /// The face check before defacing, when run: it stops at the first view that holds a
    /// face ([`crate::face::find_face`]).
    pub before: Option<crate::FaceCheck>,
    /// The face check after defacing, when run.
    pub after: Option<crate::FaceCheck>,
}

const GRID_MM: f64 = 1.0;
/// Grid labels: the voxel goes with the face, or with an ear.
const FACE: u8 = 1;
const EAR: u8 = 2;
/// Closing radius for the head mask: bridges the dark skull and CSF (in T1) and the ear
/// canals, so the head is solid and the ears are thin plates on it.
const HEAD_CLOSING_MM: f64 = 5.0;
/// Opening radius that takes the ears off.
const EAR_OPENING_MM: f64 = 5.0;
/// Above the brow, tissue this deep under the skin is taken for brain.
const BRAIN_DEPTH_MM: f64 = 18.0;
/// Further back (temporal lobes, brainstem), tissue this deep under the skin.
const BACK_BRAIN_DEPTH_MM: f64 = 25.0;
/// Distance kept between the cut and the brain region.
const CLEARANCE_MM: f64 = 4.0;
/// How far behind the nasion skin the cut starts, at most goes, and must be able to go.
const START_DEPTH_MM: f64 = 18.0;
const MAX_DEPTH_MM: f64 = 34.0;
const MIN_DEPTH_MM: f64 = 10.0;

fn mm(v: f64) -> usize {
    (v / GRID_MM).round() as usize
}

/// The cut, in the mid-sagittal plane: everything anterior to it is face. At depth `d`
/// behind the nasion skin at nasion height; above, it comes forward 1 mm per mm (out
/// through the brow); below, it goes back 0.5 mm per mm until it is `d + 7` mm behind
/// the nasion skin, and runs straight down from there (through the lips and chin).
#[derive(Debug, Clone, Copy)]
struct Cut {
    nasion_y: f64,
    nasion_z: f64,
}

impl Cut {
    /// y (grid units) of the cut at height z, for depth `d` mm.
    fn y(&self, d: f64, z: f64) -> f64 {
        let dz = (z - self.nasion_z) * GRID_MM;
        let rel = if dz >= 0.0 {
            -d + dz
        } else {
            (-d + 0.5 * dz).max(-d - 7.0)
        };
        self.nasion_y + rel / GRID_MM
    }
}

/// Defaces `volume` in place and reports what was removed.
pub fn deface(volume: &mut Volume, options: DefaceOptions) -> Result<Defaced, DefaceError> {
    volume.check().map_err(DefaceError::NotAHead)?;
    let scene =
        Scene::of(volume).ok_or_else(|| DefaceError::NotAHead("the volume is empty".into()))?;
    // The grid covers the tissue's world bounding box (plus a margin), not the whole field
    // of view.
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    {
        // World coordinates are monotonic along a row of voxels: its first and last tissue
        // voxels hold the row's extremes.
        let [ni, nj, nk] = volume.dims;
        for k in 0..nk {
            for j in 0..nj {
                let row = &volume.data[volume.index(0, j, k)..][..ni];
                let first = row.iter().position(|&v| v > scene.threshold);
                let last = row.iter().rposition(|&v| v > scene.threshold);
                for i in first.into_iter().chain(last) {
                    let w = volume.world([i as f64, j as f64, k as f64]);
                    for c in 0..3 {
                        lo[c] = lo[c].min(w[c]);
                        hi[c] = hi[c].max(w[c]);
                    }
                }
            }
        }
    }
    let margin = 12.0 + volume.spacing().iter().cloned().fold(0.0, f64::max);
    let (lo, hi) = (lo.map(|v| v - margin), hi.map(|v| v + margin));
    // Checked before the grid is allocated (a hostile header can make the box huge).
    if Grid::dims_covering(lo, hi, GRID_MM)
        .iter()
        .product::<usize>()
        > 600 * 600 * 600
    {
        return Err(DefaceError::NotAHead(
            "the field of view is larger than any head".into(),
        ));
    }
    let mut head = Grid::covering_box(lo, hi, GRID_MM);
    // 1. Head mask on the canonical grid.
    let to_voxel = volume
        .world_to_voxel()
        .ok_or_else(|| DefaceError::NotAHead("singular voxel-to-world transform".into()))?;
    let occupancy = Occupancy::new(volume, scene.threshold);
    let [gx, gy, gz] = head.dims;
    // One grid step along x, in voxels.
    let dx = {
        let (a, b) = (to_voxel(head.world(0, 0, 0)), to_voxel(head.world(1, 0, 0)));
        [0, 1, 2].map(|c| b[c] - a[c])
    };
    for z in 0..gz {
        for y in 0..gy {
            let row = head.index(0, y, z);
            // The row's first grid voxel in voxel coordinates; the others are `x` steps on.
            let v0 = to_voxel(head.world(0, y, z));
            // Grid voxels outside the volume's cells stay false (as a sample there is).
            let Some((enter, leave)) = crate::volume::within_cells(v0, dx, volume.dims) else {
                continue;
            };
            let gx = gx.min(leave);
            let mut x = enter.min(gx);
            while x < gx {
                let v = [0, 1, 2].map(|c| v0[c] + x as f64 * dx[c]);
                let (value, n) = occupancy.probe(v, dx);
                let end = (x + n).min(gx);
                head.data[row + x..row + end].fill(value);
                x = end;
            }
        }
    }
    // The head is the largest connected object, made solid inside: components, closing and
    // hole filling run on a 2 mm grid (an eighth of the work at 1 mm); its interior is added
    // to the 1 mm mask, so the outline stays the 1 mm one.
    {
        let mut coarse = head.halved(true);
        coarse.keep_largest_component();
        head.update_halved(|v, c| v && coarse.data[c]);
        coarse.close(HEAD_CLOSING_MM / coarse.step);
        coarse.fill_holes();
        let inner = coarse.interior();
        head.update_halved(|v, c| v || inner[c]);
    }
    let head_ml = head.data.iter().filter(|&&b| b).count() as f64 * GRID_MM.powi(3) / 1000.0;
    if !(400.0..=12_000.0).contains(&head_ml) {
        return Err(DefaceError::NotAHead(format!(
            "the largest object is {head_ml:.0} ml; a head is 0.4-12 l"
        )));
    }
    let extent = extent(&head);
    for (c, name) in [(0usize, "left-right"), (1, "front-back")] {
        let size = (extent.1[c] - extent.0[c]) as f64 * GRID_MM;
        if !(90.0..=260.0).contains(&size) {
            return Err(DefaceError::NotAHead(format!(
                "{size:.0} mm {name}; a head is 90-260 mm"
            )));
        }
    }
    // 2. Landmarks from the face profile.
    let profile = Profile::of(&head, extent);
    let (nose_z, nasion_z) = profile.landmarks().ok_or_else(|| {
        DefaceError::NotAHead(
            "no nose found on the face profile (is the face in the field of view?)".into(),
        )
    })?;
    let nose_y = profile.front[nose_z].unwrap_or(0);
    let nasion_y = profile.front[nasion_z].unwrap_or(0);
    let mid_x = profile.mid_x;
    // 3. Brain region and the cut.
    // Depth under the skin on a 2 mm grid whose voxels are wholly inside the head: never
    // deeper than the truth, so the guard errs towards keeping tissue.
    let coarse = head.halved(false);
    let deepest = BRAIN_DEPTH_MM.max(BACK_BRAIN_DEPTH_MM) / coarse.step;
    let inside = coarse.distance_sq_within(false, (deepest * deepest) as f32);
    let deep = |c: usize, mm: f64| inside[c] as f64 >= (mm / coarse.step).powi(2);
    let mut brain_guard = vec![false; head.len()];
    head.each_halved(|i, c, [_, y, z]| {
        brain_guard[i] = head.data[i]
            && ((z >= nasion_z + mm(8.0) && deep(c, BRAIN_DEPTH_MM))
                || (deep(c, BACK_BRAIN_DEPTH_MM) && (y as i64) <= nasion_y - mm(40.0) as i64));
    });
    // Per height, the most anterior y of the brain region (any x).
    let mut brain_front = vec![i64::MIN; gz];
    for (z, front) in brain_front.iter_mut().enumerate() {
        for y in (0..gy).rev() {
            let row = head.index(0, y, z);
            if brain_guard[row..row + gx].contains(&true) {
                *front = y as i64;
                break;
            }
        }
    }
    let cut = Cut {
        nasion_y: nasion_y as f64,
        nasion_z: nasion_z as f64,
    };
    let clear = |depth: f64| {
        (0..gz).all(|z| {
            brain_front[z] == i64::MIN
                || cut.y(depth, z as f64) >= brain_front[z] as f64 + CLEARANCE_MM / GRID_MM
        })
    };
    // The deepest cut the brain region allows.
    let mut max_depth = MAX_DEPTH_MM;
    while max_depth > 0.0 && !clear(max_depth) {
        max_depth -= 1.0;
    }
    if max_depth < MIN_DEPTH_MM {
        return Err(DefaceError::Declined(format!(
            "the brain region comes within {max_depth:.0} mm of the skin at the nasion; the face cannot be cut off safely"
        )));
    }
    // Ear band: from 25 mm above the nasion to 45 mm below the nose tip, behind the face.
    let ears = if options.ears {
        ear_region(
            &head,
            mid_x,
            nasion_z + 25,
            nose_z.saturating_sub(45),
            nose_y,
        )
    } else {
        vec![false; head.len()]
    };
    let fill = scene.low.min(scene.threshold * 0.2);
    let before = if options.verify {
        crate::face::find_face(&occupancy, &scene).ok()
    } else {
        None
    };
    // The voxels set to `fill`, with their original values (restored before a deeper cut,
    // and when the volume is declined).
    let mut saved: Vec<(usize, f32)> = Vec::new();
    // Start 18 mm behind the nasion skin and go deeper while a face is still detected.
    let mut depth = START_DEPTH_MM.min(max_depth);
    loop {
        for &(idx, v) in &saved {
            volume.data[idx] = v;
        }
        saved.clear();
        // Per grid voxel: 0 kept, FACE or EAR removed.
        let mut label: Vec<u8> = ears.iter().map(|&e| if e { EAR } else { 0 }).collect();
        // Down to the chin, 75 mm below the nose tip; the neck is left alone.
        for z in nose_z.saturating_sub(mm(75.0))..gz {
            let limit = cut.y(depth, z as f64);
            for y in 0..gy {
                if (y as f64) < limit {
                    continue;
                }
                for x in 0..gx {
                    let i = head.index(x, y, z);
                    // Air in front of the cut goes too (specks of noise above the skin
                    // threshold that are not part of the head would show on renders).
                    if !brain_guard[i] {
                        label[i] = FACE;
                    }
                }
            }
        }
        // Map back to the original voxels: about a grid cell's worth of them per label.
        let labelled = label.iter().filter(|&&l| l != 0).count() as f64;
        let voxel_ml = volume.spacing().iter().product::<f64>();
        let expected = labelled * GRID_MM.powi(3) / voxel_ml.max(1e-3) * 1.05;
        saved.reserve((expected as usize).min(volume.len()));
        let mut removed = vec![false; volume.len()];
        let (mut face_voxels, mut ear_voxels) = (0usize, 0usize);
        let data = &mut volume.data;
        head.each_voxel_in(volume.dims, &volume.affine, &label, |idx, l| {
            let tissue = data[idx] > scene.threshold;
            if l == FACE {
                face_voxels += tissue as usize;
            } else {
                ear_voxels += tissue as usize;
            }
            removed[idx] = true;
            saved.push((idx, data[idx]));
            data[idx] = fill;
        });
        let after = if options.verify {
            crate::face::check(volume).ok()
        } else {
            None
        };
        let face_left = after.as_ref().is_some_and(|a| a.face_found);
        if !face_left {
            let world = |y: i64, z: usize| head.world(mid_x, y.max(0) as usize, z);
            return Ok(Defaced {
                removed,
                face_voxels,
                ear_voxels,
                nose_tip: world(nose_y, nose_z),
                depth,
                nasion: world(nasion_y, nasion_z),
                fill,
                before,
                after,
            });
        }
        if depth >= max_depth {
            for &(idx, v) in &saved {
                volume.data[idx] = v;
            }
            return Err(DefaceError::Declined(format!(
                "a face is still detected (score {:.1}) after cutting {depth:.0} mm behind the nasion, as deep as the brain allows",
                after.map_or(0.0, |a| a.score)
            )));
        }
        depth = (depth + 4.0).min(max_depth);
    }
}

/// Bounding box of the true voxels (inclusive).
fn extent(g: &Grid) -> ([usize; 3], [usize; 3]) {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let [nx, ny, nz] = g.dims;
    for z in 0..nz {
        for y in 0..ny {
            let row = &g.data[g.index(0, y, z)..][..nx];
            let (Some(first), Some(last)) =
                (row.iter().position(|&b| b), row.iter().rposition(|&b| b))
            else {
                continue;
            };
            for (c, (l, h)) in [(first, last), (y, y), (z, z)].into_iter().enumerate() {
                lo[c] = lo[c].min(l);
                hi[c] = hi[c].max(h);
            }
        }
    }
    (lo, hi)
}

/// The face's mid-sagittal profile: per height z, the most anterior head voxel near the
/// midline.
struct Profile {
    front: Vec<Option<i64>>,
    mid_x: usize,
    top_z: usize,
    bottom_z: usize,
}

impl Profile {
    fn of(head: &Grid, extent: ([usize; 3], [usize; 3])) -> Profile {
        let [_, gy, gz] = head.dims;
        let mid_x = (extent.0[0] + extent.1[0]) / 2;
        let band = (12.0 / GRID_MM) as usize;
        let mut front = vec![None; gz];
        for (z, f) in front.iter_mut().enumerate() {
            let mut best: Option<i64> = None;
            for x in mid_x.saturating_sub(band)..=(mid_x + band).min(head.dims[0] - 1) {
                for y in (0..gy).rev() {
                    if head.data[head.index(x, y, z)] {
                        best = Some(best.map_or(y as i64, |b: i64| b.max(y as i64)));
                        break;
                    }
                }
            }
            *f = best;
        }
        Profile {
            front,
            mid_x,
            top_z: extent.1[2],
            bottom_z: extent.0[2],
        }
    }

    /// (nose tip z, nasion z), if the profile has a nose.
    fn landmarks(&self) -> Option<(usize, usize)> {
        let mm = |v: f64| (v / GRID_MM) as usize;
        // The nose tip: the most anterior point 60-170 mm below the top of the head.
        let hi = self.top_z.checked_sub(mm(60.0))?;
        let lo = self.top_z.saturating_sub(mm(170.0)).max(self.bottom_z);
        let nose_z = (lo..=hi)
            .filter(|&z| self.front[z].is_some())
            .max_by_key(|&z| self.front[z])?;
        let nose_y = self.front[nose_z]?;
        // The nasion: going up from the tip, the profile recedes to the nasion and comes
        // forward again at the brow; where the brow is faint, the point deepest below the
        // chord from the tip to 60 mm above it.
        let a = (nose_z + mm(10.0)).min(self.top_z);
        let b = (nose_z + mm(60.0)).min(self.top_z);
        let smooth = |z: usize| -> Option<f64> {
            let lo = z.saturating_sub(2);
            let v: Vec<i64> = (lo..=z + 2)
                .filter_map(|k| self.front.get(k).copied().flatten())
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<i64>() as f64 / v.len() as f64)
        };
        let mut best = (f64::INFINITY, a);
        let mut local = None;
        for z in a..=b {
            let Some(v) = smooth(z) else { continue };
            if v < best.0 {
                best = (v, z);
            } else if v - best.0 >= 2.0 / GRID_MM && z > best.1 + mm(3.0) {
                local = Some(best.1);
                break;
            }
        }
        let nasion_z = match local {
            Some(z) => z,
            None => {
                let (ya, yb) = (smooth(a)?, smooth(b)?);
                (a..=b)
                    .filter_map(|z| {
                        let chord = ya + (yb - ya) * (z - a) as f64 / (b - a).max(1) as f64;
                        Some((smooth(z)? - chord, z))
                    })
                    .min_by(|p, q| p.0.total_cmp(&q.0))?
                    .1
            }
        };
        let nasion_y = self.front[nasion_z]?;
        // A nose stands out at least 8 mm in front of the nasion, and there is a forehead
        // above it.
        let forehead = self.front.get(nasion_z + mm(30.0)).copied().flatten();
        let nose_ok = (nose_y - nasion_y) as f64 * GRID_MM >= 8.0;
        (nose_ok && forehead.is_some() && nose_z > self.bottom_z + 2).then_some((nose_z, nasion_z))
    }
}

/// The ears: what an opening with a 5 mm ball takes off the sides of the head between
/// heights `z_lo` and `z_hi`, posterior to `front_y` minus 30 mm, and away from the midline.
fn ear_region(head: &Grid, mid_x: usize, z_hi: usize, z_lo: usize, front_y: i64) -> Vec<bool> {
    let [gx, gy, gz] = head.dims;
    let mut ears = vec![false; head.len()];
    // The region: behind the face, and 45 mm or more to either side of the midline.
    let last_y = front_y - (30.0 / GRID_MM) as i64;
    if last_y < 0 {
        return ears;
    }
    let y_end = (last_y as usize + 1).min(gy);
    let half = (45.0 / GRID_MM) as usize;
    let sides = [
        (0, (mid_x + 1).saturating_sub(half)),
        ((mid_x + half).min(gx), gx),
    ];
    // The opening is computed on the ear band only, with a margin of the ball's radius
    // above and below; across and along the head, on a box around each side's region
    // reaching two ball radii and a voxel beyond it, where the opening is the same as
    // on the whole band.
    let margin = mm(EAR_OPENING_MM) + 1;
    let z0 = z_lo.saturating_sub(margin).min(gz);
    let z1 = (z_hi + margin).min(gz).max(z0);
    let wide = 2 * mm(EAR_OPENING_MM) + 2;
    for (x_start, x_end) in sides.into_iter().filter(|(a, b)| a < b) {
        let lo = [x_start.saturating_sub(wide), 0, z0];
        let hi = [(x_end + wide).min(gx), (y_end + wide).min(gy), z1];
        let part = head.sub(lo, hi);
        let opened = part.opened(EAR_OPENING_MM / GRID_MM);
        for z in z_lo.min(gz)..z_hi.min(gz) {
            for y in 0..y_end {
                for x in x_start..x_end {
                    let i = head.index(x, y, z);
                    let o = part.index(x - lo[0], y, z - lo[2]);
                    ears[i] = head.data[i] && !opened.get(o).copied().unwrap_or(true);
                }
            }
        }
    }
    ears
}
