//! Renders of the skin surface: what a person (or a face-recognition system) would see of a
//! head reconstructed from its scan.
//!
//! Orthographic rays are cast through the volume; the first point above the skin threshold
//! gives a depth map, which is smoothed and shaded with a light from above and in front, as
//! photographs are lit (detectors trained on photographs hardly see a face lit from below).

use crate::volume::{Occupancy, Volume};

/// A viewpoint around the head: `yaw` turns about the patient's superior axis (positive
/// towards the patient's left), `pitch` raises the eye above the face (positive looks down).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Name used in reports and file names.
    pub name: &'static str,
    /// Degrees about the superior axis.
    pub yaw: f64,
    /// Degrees of elevation.
    pub pitch: f64,
}

/// The views the face check renders: front, ±30° about the vertical, and slightly above and
/// below.
pub const VIEWS: [View; 5] = [
    View {
        name: "front",
        yaw: 0.0,
        pitch: 0.0,
    },
    View {
        name: "left30",
        yaw: 30.0,
        pitch: 0.0,
    },
    View {
        name: "right30",
        yaw: -30.0,
        pitch: 0.0,
    },
    View {
        name: "above15",
        yaw: 0.0,
        pitch: 15.0,
    },
    View {
        name: "below15",
        yaw: 0.0,
        pitch: -15.0,
    },
];

/// A grey image, row-major, one byte a pixel.
#[derive(Debug, Clone)]
pub struct Render {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixels.
    pub pixels: Vec<u8>,
}

/// Where the head is: its centre and radius in world millimetres, and the skin threshold.
#[derive(Debug, Clone, Copy)]
pub struct Scene {
    /// Centre of the head (RAS+ mm).
    pub centre: [f64; 3],
    /// Radius that encloses the head (mm).
    pub radius: f64,
    /// Intensity above which a voxel is tissue rather than air.
    pub threshold: f32,
    /// The volume's 0.1 % quantile ([`Volume::quantile`]), from the same gather.
    pub low: f32,
}

impl Scene {
    /// Finds the head: the threshold is 15 % of the 99th percentile (air and noise lie below
    /// it in CT and MR alike); the centre and radius are those of the voxels above it.
    pub fn of(volume: &Volume) -> Option<Scene> {
        let [p1, p99, low] = volume.quantiles(&[0.01, 0.99, 0.001]);
        if p99.partial_cmp(&p1) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let threshold = p1 + 0.15 * (p99 - p1);
        let [ni, nj, nk] = volume.dims;
        let stride = ((volume.len() / 4_000_000) as f64).cbrt().ceil().max(1.0) as usize;
        let (mut sum, mut n) = ([0.0f64; 3], 0usize);
        let mut points = Vec::new();
        for k in (0..nk).step_by(stride) {
            for j in (0..nj).step_by(stride) {
                for i in (0..ni).step_by(stride) {
                    if volume.data[volume.index(i, j, k)] > threshold {
                        let w = volume.world([i as f64, j as f64, k as f64]);
                        for c in 0..3 {
                            sum[c] += w[c];
                        }
                        n += 1;
                        points.push(w);
                    }
                }
            }
        }
        if n == 0 {
            return None;
        }
        let centre = sum.map(|s| s / n as f64);
        let mut d: Vec<f64> = points
            .iter()
            .map(|p| {
                ((p[0] - centre[0]).powi(2)
                    + (p[1] - centre[1]).powi(2)
                    + (p[2] - centre[2]).powi(2))
                .sqrt()
            })
            .collect();
        let idx = ((d.len() - 1) as f64 * 0.999) as usize;
        let (_, r, _) = d.select_nth_unstable_by(idx, |a, b| a.total_cmp(b));
        Some(Scene {
            centre,
            radius: *r * 1.1 + 5.0,
            threshold,
            low,
        })
    }
}

fn rotate(v: [f64; 3], yaw: f64, pitch: f64) -> [f64; 3] {
    // Pitch: about the patient's right-left axis (x); yaw: about the superior axis (z).
    let (sp, cp) = pitch.to_radians().sin_cos();
    let v = [v[0], v[1] * cp - v[2] * sp, v[1] * sp + v[2] * cp];
    let (sy, cy) = yaw.to_radians().sin_cos();
    [v[0] * cy - v[1] * sy, v[0] * sy + v[1] * cy, v[2]]
}

/// Renders the skin surface as seen from `view`, `size` pixels square: the first point
/// along each ray where the volume lies above `scene.threshold`, as `occupancy` (of the
/// volume, for that threshold) tells it.
pub fn render(occupancy: &Occupancy, scene: &Scene, view: View, size: usize) -> Render {
    let volume = occupancy.volume();
    // The eye looks at the face: from anterior (+y) towards posterior, up is superior.
    let forward = rotate([0.0, -1.0, 0.0], view.yaw, -view.pitch);
    let up = rotate([0.0, 0.0, 1.0], view.yaw, -view.pitch);
    // The viewer's right is the patient's left when facing them.
    let right = [
        forward[1] * up[2] - forward[2] * up[1],
        forward[2] * up[0] - forward[0] * up[2],
        forward[0] * up[1] - forward[1] * up[0],
    ];
    let r = scene.radius;
    let pixel = 2.0 * r / size as f64;
    // Half the smallest voxel size (0.15-1 mm), but no finer than a chord of the sphere
    // in MAX_STEPS coarse steps: a head is marched as its voxels ask, and a volume whose
    // header makes it kilometres wide costs no more than a head.
    const COARSE: f64 = 4.0;
    const MAX_STEPS: f64 = 1024.0;
    let step = (volume
        .spacing()
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .clamp(0.3, 2.0)
        * 0.5)
        .max(2.0 * r / (COARSE * MAX_STEPS));
    let mut depth = vec![f64::NAN; size * size];
    if let Some(to_voxel) = volume.world_to_voxel() {
        let origin = [
            volume.affine[0][3],
            volume.affine[1][3],
            volume.affine[2][3],
        ];
        let df = to_voxel([
            origin[0] + forward[0] * step,
            origin[1] + forward[1] * step,
            origin[2] + forward[2] * step,
        ]);
        // March in coarse steps through the head's sphere; on the first hit, bisect back
        // to the surface.
        let dc = df.map(|d| d * COARSE);
        let inside = |v: [f64; 3]| occupancy.above(v);
        for row in 0..size {
            let sv = r - (row as f64 + 0.5) * pixel;
            for col in 0..size {
                let su = -r + (col as f64 + 0.5) * pixel;
                let half = (r * r - su * su - sv * sv).max(0.0).sqrt();
                if half == 0.0 {
                    continue;
                }
                let start =
                    |c: usize| scene.centre[c] + right[c] * su + up[c] * sv - forward[c] * half;
                let start = [start(0), start(1), start(2)];
                let skipped = r - half;
                let mut v = to_voxel(start);
                let n = ((2.0 * half) / (step * COARSE)) as usize + 1;
                // Samples outside the volume's cells are below the threshold: the march
                // starts at the last step before the ray enters them and ends after it
                // leaves, stepping to the start as the march would (same positions).
                let Some((enter, leave)) = crate::volume::within_cells(v, dc, volume.dims) else {
                    continue;
                };
                let n = n.min(leave);
                let mut s = enter.min(n);
                for _ in 0..s {
                    v = [v[0] + dc[0], v[1] + dc[1], v[2] + dc[2]];
                }
                while s < n {
                    // Steps through blocks wholly below the threshold need no sample.
                    let (hit, k) = occupancy.probe(v, dc);
                    if !hit {
                        for _ in 0..k.min(n - s) {
                            v = [v[0] + dc[0], v[1] + dc[1], v[2] + dc[2]];
                        }
                        s += k;
                        continue;
                    }
                    // On the first hit, bisect back to the surface.
                    let (mut lo, mut hi) = (s as f64 - 1.0, s as f64);
                    if s > 0 {
                        for _ in 0..3 {
                            let mid = 0.5 * (lo + hi);
                            let t = hi - mid;
                            let p = [v[0] - dc[0] * t, v[1] - dc[1] * t, v[2] - dc[2] * t];
                            if inside(p) {
                                hi = mid;
                                v = p;
                            } else {
                                lo = mid;
                            }
                        }
                    }
                    depth[row * size + col] = skipped + hi.max(0.0) * step * COARSE;
                    break;
                }
            }
        }
    }
    shade(&depth, size, pixel)
}

/// Smooths a depth map and shades it: light from above and in front.
fn shade(depth: &[f64], size: usize, pixel: f64) -> Render {
    let mut d = depth.to_vec();
    for _ in 0..2 {
        let src = d.clone();
        for row in 1..size.saturating_sub(1) {
            for col in 1..size - 1 {
                let mut sum = 0.0;
                let mut n = 0.0;
                for dr in [-1i64, 0, 1] {
                    for dc in [-1i64, 0, 1] {
                        let v = src[(row as i64 + dr) as usize * size + (col as i64 + dc) as usize];
                        if v.is_finite() {
                            sum += v;
                            n += 1.0;
                        }
                    }
                }
                if src[row * size + col].is_finite() && n > 0.0 {
                    d[row * size + col] = sum / n;
                }
            }
        }
    }
    // Light direction in view coordinates (x right, y up, z towards the viewer).
    let l = {
        let v = [0.0f64, 0.6, 0.8];
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        v.map(|x| x / n)
    };
    let mut pixels = vec![0u8; size * size];
    for row in 1..size.saturating_sub(1) {
        for col in 1..size - 1 {
            let at = |r: usize, c: usize| d[r * size + c];
            let c0 = at(row, col);
            if !c0.is_finite() {
                continue;
            }
            let (dl, dr, du, dd) = (
                at(row, col - 1),
                at(row, col + 1),
                at(row - 1, col),
                at(row + 1, col),
            );
            let gx = if dl.is_finite() && dr.is_finite() {
                (dr - dl) / (2.0 * pixel)
            } else {
                0.0
            };
            // Depth grows away from the viewer; rows grow downwards.
            let gy = if du.is_finite() && dd.is_finite() {
                (du - dd) / (2.0 * pixel)
            } else {
                0.0
            };
            let n = [gx, gy, 1.0];
            let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
            let lambert = ((n[0] * l[0] + n[1] * l[1] + n[2] * l[2]) / len).max(0.0);
            pixels[row * size + col] =
                (255.0 * (0.12 + 0.88 * lambert)).round().clamp(0.0, 255.0) as u8;
        }
    }
    Render {
        width: size,
        height: size,
        pixels,
    }
}

impl Render {
    /// Encodes the render as an 8-bit greyscale PNG.
    pub fn to_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            if let Ok(mut w) = enc.write_header() {
                let _ = w.write_image_data(&self.pixels);
            }
        }
        out
    }
}
