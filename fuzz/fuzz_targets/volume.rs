//! Defaces and face-checks arbitrary small volumes: values (NaN and infinities included) and
//! voxel-to-world affines (singular, huge, NaN) as a hostile NIfTI header or DICOM series can
//! give them. Every outcome must be a result or an error, never a panic or an allocation
//! the volume cannot back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_deface::{DefaceOptions, Volume};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, rest) = data.split_at(4);
    let mode = head[3];
    let dims = [0, 1, 2].map(|c| 8 + head[c] as usize % 33);
    let f32_at = |bytes: &[u8], i: usize| -> f32 {
        let mut b = [0u8; 4];
        for (k, x) in b.iter_mut().enumerate() {
            *x = bytes.get(4 * i + k).copied().unwrap_or(0);
        }
        f32::from_le_bytes(b)
    };
    let affine = if mode & 1 == 1 {
        // Raw affine: anything a header can hold.
        let mut a = [[0.0f64; 4]; 3];
        for (r, row) in a.iter_mut().enumerate() {
            for (c, x) in row.iter_mut().enumerate() {
                *x = f32_at(rest, 4 * r + c) as f64;
            }
        }
        a
    } else {
        // Spacing of 0.5-8 mm along the axes, as real heads have.
        let s = [0, 1, 2].map(|c| 0.5 + rest.get(c).copied().unwrap_or(0) as f64 / 34.0);
        [
            [s[0], 0.0, 0.0, -(dims[0] as f64) * s[0] / 2.0],
            [0.0, s[1], 0.0, -(dims[1] as f64) * s[1] / 2.0],
            [0.0, 0.0, s[2], -(dims[2] as f64) * s[2] / 2.0],
        ]
    };
    let values = rest.get(48..).unwrap_or(&[]);
    if values.is_empty() {
        return;
    }
    let n = dims[0] * dims[1] * dims[2];
    let voxels: Vec<f32> = if mode & 2 == 2 && values.len() >= 4 {
        let count = values.len() / 4;
        (0..n).map(|i| f32_at(values, i % count)).collect()
    } else {
        (0..n).map(|i| values[i % values.len()] as f32 * 8.0).collect()
    };
    let mut volume = Volume {
        dims,
        data: voxels,
        affine,
    };
    let _ = radveil_deface::face_check(&volume);
    let original = volume.clone();
    if let Ok(defaced) = radveil_deface::deface(&mut volume, DefaceOptions::default()) {
        let _ = radveil_deface::reface(&mut volume, &original, &defaced);
    }
});
