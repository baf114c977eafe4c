//! The face check: renders the skin surface from several views and runs a face detector
//! (SeetaFace's frontal cascade through `rustface`, its model compiled in) on each.
//!
//! Scores are sums over merged detection windows, so the threshold holds only with the
//! window step and pyramid factor it was calibrated with (4 and 0.8). Measured here on
//! renders lit from above: real and population-mean heads score 17–45 over the views,
//! heads with their face removed at most about 14 (`../shared/notes/face-check.md`).

use crate::render::{render, Render, Scene, View, VIEWS};
use crate::volume::{Occupancy, Volume};

static MODEL: &[u8] = include_bytes!("../model/seeta_fd_frontal_v1.0.bin");

/// Above this score a render holds a face.
pub const FACE_THRESHOLD: f64 = 15.0;

/// Render size in pixels (square).
pub const RENDER_SIZE: usize = 256;

/// What the detector found in one view.
#[derive(Debug, Clone)]
pub struct ViewResult {
    /// The view.
    pub view: View,
    /// The best detection score (0 when nothing was detected).
    pub score: f64,
    /// The render itself (for `--render`).
    pub render: Render,
}

/// The outcome of a face check.
#[derive(Debug, Clone)]
pub struct FaceCheck {
    /// One result per view.
    pub views: Vec<ViewResult>,
    /// The best score over the views.
    pub score: f64,
    /// Whether some view holds a face.
    pub face_found: bool,
}

/// Why a face check could not run.
#[derive(Debug, thiserror::Error)]
pub enum FaceCheckError {
    /// Nothing above the background: not an image of a head.
    #[error("the volume holds nothing above its background")]
    Empty,
    /// The bundled model did not load.
    #[error("face model: {0}")]
    Model(String),
    /// A volume whose dimensions do not describe its values.
    #[error("{0}")]
    Volume(String),
}

/// Renders `volume` from every view of [`VIEWS`] and runs the detector on each.
pub fn check(volume: &Volume) -> Result<FaceCheck, FaceCheckError> {
    volume.check().map_err(FaceCheckError::Volume)?;
    let scene = Scene::of(volume).ok_or(FaceCheckError::Empty)?;
    check_scene(&Occupancy::new(volume, scene.threshold), &scene)
}

/// [`check`] where the volume's scene ([`Scene::of`]) is known already, with the volume's
/// occupancy for the scene's threshold.
pub fn check_scene(occupancy: &Occupancy, scene: &Scene) -> Result<FaceCheck, FaceCheckError> {
    check_views(occupancy, scene, false)
}

/// [`check_scene`] that stops at the first view holding a face: enough to know that there
/// is a face (before defacing), at a fifth of the work when the front view shows it. Its
/// `views` and `score` are those of the views rendered.
pub fn find_face(occupancy: &Occupancy, scene: &Scene) -> Result<FaceCheck, FaceCheckError> {
    check_views(occupancy, scene, true)
}

fn check_views(
    occupancy: &Occupancy,
    scene: &Scene,
    until_face: bool,
) -> Result<FaceCheck, FaceCheckError> {
    let model = rustface::read_model(MODEL).map_err(|e| FaceCheckError::Model(e.to_string()))?;
    let mut detector = rustface::create_detector_with_model(model);
    detector.set_min_face_size(24);
    detector.set_score_thresh(1.0);
    detector.set_pyramid_scale_factor(0.8);
    detector.set_slide_window_step(4, 4);
    let mut views = Vec::new();
    for view in VIEWS {
        let r = render(occupancy, scene, view, RENDER_SIZE);
        let image = rustface::ImageData::new(&r.pixels, r.width as u32, r.height as u32);
        let score = detector
            .detect(&image)
            .iter()
            .map(|f| f.score())
            .fold(0.0f64, f64::max);
        views.push(ViewResult {
            view,
            score,
            render: r,
        });
        if until_face && score >= FACE_THRESHOLD {
            break;
        }
    }
    let score = views.iter().map(|v| v.score).fold(0.0, f64::max);
    Ok(FaceCheck {
        views,
        score,
        face_found: score >= FACE_THRESHOLD,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ball of tissue on a small grid.
    fn ball(spacing: f64) -> Volume {
        let n = 24;
        let data = (0..n * n * n)
            .map(|i| {
                let (x, y, z) = (i % n, (i / n) % n, i / (n * n));
                let r2 = [x, y, z]
                    .iter()
                    .map(|&c| (c as f64 - 11.5).powi(2))
                    .sum::<f64>();
                if r2 < 64.0 {
                    500.0
                } else {
                    (i % 7) as f32
                }
            })
            .collect();
        Volume {
            dims: [n, n, n],
            data,
            affine: [
                [spacing, 0.0, 0.0, 0.0],
                [0.0, spacing, 0.0, 0.0],
                [0.0, 0.0, spacing, 0.0],
            ],
        }
    }

    #[test]
    fn a_volume_whose_dimensions_do_not_describe_its_values_is_an_error() {
        for dims in [[64, 64, 64], [usize::MAX, 2, 2], [1 << 40, 1 << 40, 1]] {
            let v = Volume {
                dims,
                data: vec![1.0; 8],
                affine: [
                    [1.0, 0.0, 0.0, 0.0],
                    [0.0, 1.0, 0.0, 0.0],
                    [0.0, 0.0, 1.0, 0.0],
                ],
            };
            assert!(matches!(check(&v), Err(FaceCheckError::Volume(_))));
            let mut w = v.clone();
            assert!(crate::deface(&mut w, crate::DefaceOptions::default()).is_err());
        }
    }

    #[test]
    fn a_ball_shows_no_face() {
        let fc = check(&ball(8.0)).unwrap();
        assert_eq!(fc.views.len(), VIEWS.len());
        assert!(!fc.face_found, "{}", fc.score);
        // The ball is rendered: its pixels are lit.
        assert!(fc.views[0].render.pixels.iter().filter(|&&p| p > 0).count() > 10_000);
    }

    #[test]
    fn a_volume_kilometres_wide_is_checked_promptly() {
        // A header can make voxels a kilometre wide; the march stays bounded per ray.
        let started = std::time::Instant::now();
        let fc = check(&ball(1e6)).unwrap();
        assert!(!fc.face_found);
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }
}
