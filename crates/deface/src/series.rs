//! DICOM series in and out: single-frame slices assembled into a volume from Image Position
//! and Image Orientation (Patient) and Pixel Spacing, and written back slice by slice with
//! only the pixel values changed, plus the record of what was done: Recognizable Visual
//! Features (0028,0302) = NO and the Clean Recognizable Visual Features Option (CID 7050,
//! 113102) in the De-identification Method Code Sequence.
//!
//! Pixel data is decoded by `radveil-integrity` (native, RLE, JPEG, JPEG-LS, JPEG 2000).
//! Native files keep their transfer syntax; compressed ones are written in Explicit VR
//! Little Endian, since no encoder is built in (lossless either way).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use radveil_part10 as p10;
use radveil_part10::{DataSet, Element, Encoding, Value, Vr};

use crate::volume::Volume;

/// Why a series could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// A file that cannot be read as DICOM or lacks what a slice needs.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The slices do not make one regular volume.
    #[error("{0}")]
    Geometry(String),
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> SeriesError {
    SeriesError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// What a slice holds, as read.
struct SliceInfo {
    path: PathBuf,
    position: [f64; 3],
    values: Vec<f32>,
}

/// How the pixels are laid out, shared by every slice of the series.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Layout {
    rows: usize,
    cols: usize,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    orientation: [f64; 6],
    spacing: [f64; 2],
}

/// A series assembled into a volume; `files[k]` holds slice k.
#[derive(Debug)]
pub struct SeriesVolume {
    /// The volume (i = column, j = row, k = slice in order along the slice normal).
    pub volume: Volume,
    /// The file of each slice.
    pub files: Vec<PathBuf>,
}

/// The Series Instance UID of a DICOM file (to group files into series).
pub fn series_uid(bytes: &[u8]) -> Option<String> {
    let mut inflated = Vec::new();
    let (_, ds, _) = open(Path::new(""), bytes, &mut inflated).ok()?;
    ds.string(0x0020_000E).filter(|s| !s.is_empty())
}

fn numbers(ds: &DataSet<'_>, tag: u32) -> Vec<f64> {
    ds.string(tag)
        .unwrap_or_default()
        .split('\\')
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .collect()
}

/// Parses a Part 10 file's meta and data set, naming the file in errors.
fn open<'b>(
    path: &Path,
    bytes: &'b [u8],
    inflated: &'b mut Vec<u8>,
) -> Result<(p10::FileMeta<'b>, DataSet<'b>, Encoding), SeriesError> {
    p10::read_file(bytes, inflated, p10::Limits::default()).map_err(|e| file_error(path, e))
}

/// Reads one slice: its layout, position and values.
fn read_slice(path: &Path) -> Result<(Layout, SliceInfo), SeriesError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let mut inflated = Vec::new();
    let (meta, ds, enc) = open(path, &bytes, &mut inflated)?;
    let frames = ds
        .string(0x0028_0008)
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1);
    if frames != 1 {
        return Err(file_error(path, "multi-frame images are not handled yet"));
    }
    if ds.u16_value(0x0028_0002, enc).unwrap_or(1) != 1 {
        return Err(file_error(path, "not a greyscale image"));
    }
    let rows = ds.u16_value(0x0028_0010, enc).unwrap_or(0) as usize;
    let cols = ds.u16_value(0x0028_0011, enc).unwrap_or(0) as usize;
    let bits_allocated = ds.u16_value(0x0028_0100, enc).unwrap_or(0);
    let bits_stored = ds.u16_value(0x0028_0101, enc).unwrap_or(bits_allocated);
    let signed = ds.u16_value(0x0028_0103, enc).unwrap_or(0) == 1;
    if rows == 0 || cols == 0 || !(bits_allocated == 8 || bits_allocated == 16) {
        return Err(file_error(path, "no 8- or 16-bit pixel data"));
    }
    let position = numbers(&ds, 0x0020_0032);
    let orientation = numbers(&ds, 0x0020_0037);
    let spacing = numbers(&ds, 0x0028_0030);
    if position.len() != 3 || orientation.len() != 6 || spacing.len() != 2 {
        return Err(file_error(
            path,
            "no Image Position/Orientation (Patient) or Pixel Spacing",
        ));
    }
    let pixels = radveil_integrity::binding::decoded_pixels(&ds, enc, &meta.transfer_syntax)
        .map_err(|e| file_error(path, e))?;
    let n = rows * cols;
    let values: Vec<f32> = if bits_allocated == 8 {
        pixels
            .iter()
            .take(n)
            .map(|&b| sample(b as u32, bits_stored, signed))
            .collect()
    } else {
        pixels
            .chunks_exact(2)
            .take(n)
            .map(|c| sample(u16::from_le_bytes([c[0], c[1]]) as u32, bits_stored, signed))
            .collect()
    };
    if values.len() != n {
        return Err(file_error(path, "pixel data shorter than the image"));
    }
    let layout = Layout {
        rows,
        cols,
        bits_allocated,
        bits_stored,
        signed,
        orientation: [0, 1, 2, 3, 4, 5].map(|i| orientation[i]),
        spacing: [spacing[0], spacing[1]],
    };
    Ok((
        layout,
        SliceInfo {
            path: path.to_path_buf(),
            position: [position[0], position[1], position[2]],
            values,
        },
    ))
}

/// A stored sample as a number: cut to Bits Stored, sign-extended when signed.
fn sample(raw: u32, bits_stored: u16, signed: bool) -> f32 {
    let bits = bits_stored.clamp(1, 16) as u32;
    let v = raw & ((1u32 << bits) - 1);
    if signed && v & (1 << (bits - 1)) != 0 {
        (v as i32 - (1i32 << bits)) as f32
    } else {
        v as f32
    }
}

/// Assembles the slices of one series into a volume.
pub fn assemble(paths: &[PathBuf]) -> Result<SeriesVolume, SeriesError> {
    let mut layout: Option<Layout> = None;
    let mut slices = Vec::with_capacity(paths.len());
    for p in paths {
        let (l, s) = read_slice(p)?;
        match &layout {
            None => layout = Some(l),
            Some(first) if *first != l => {
                return Err(SeriesError::Geometry(format!(
                    "{}: its matrix, pixel format, orientation or spacing differs from the series'",
                    p.display()
                )))
            }
            _ => {}
        }
        slices.push(s);
    }
    let layout = layout.ok_or_else(|| SeriesError::Geometry("no slices".into()))?;
    if slices.len() < 8 {
        return Err(SeriesError::Geometry(format!(
            "{} slices are not a volume",
            slices.len()
        )));
    }
    let o = layout.orientation;
    let row_dir = [o[0], o[1], o[2]];
    let col_dir = [o[3], o[4], o[5]];
    let normal = [
        row_dir[1] * col_dir[2] - row_dir[2] * col_dir[1],
        row_dir[2] * col_dir[0] - row_dir[0] * col_dir[2],
        row_dir[0] * col_dir[1] - row_dir[1] * col_dir[0],
    ];
    let along = |p: &[f64; 3]| p[0] * normal[0] + p[1] * normal[1] + p[2] * normal[2];
    slices.sort_by(|a, b| along(&a.position).total_cmp(&along(&b.position)));
    let gaps: Vec<f64> = slices
        .windows(2)
        .map(|w| along(&w[1].position) - along(&w[0].position))
        .collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    let typical = sorted[sorted.len() / 2];
    if typical <= 1e-3 {
        return Err(SeriesError::Geometry(
            "several slices share a position".into(),
        ));
    }
    if gaps
        .iter()
        .any(|g| (g - typical).abs() > 0.1 * typical + 0.01)
    {
        return Err(SeriesError::Geometry(
            "the slices are not evenly spaced (missing slices?)".into(),
        ));
    }
    let first = slices[0].position;
    let last = slices[slices.len() - 1].position;
    let k_step = [0, 1, 2].map(|c| (last[c] - first[c]) / (slices.len() - 1) as f64);
    // Voxel (i = column, j = row, k) to LPS, then to RAS (x and y negated).
    let lps = [0, 1, 2].map(|c| {
        [
            row_dir[c] * layout.spacing[1],
            col_dir[c] * layout.spacing[0],
            k_step[c],
            first[c],
        ]
    });
    let affine = [lps[0].map(|v| -v), lps[1].map(|v| -v), lps[2]];
    let (rows, cols) = (layout.rows, layout.cols);
    let mut data = Vec::with_capacity(rows * cols * slices.len());
    for s in &slices {
        data.extend_from_slice(&s.values);
    }
    let volume = Volume {
        dims: [cols, rows, slices.len()],
        data,
        affine,
    };
    if volume.inverse().is_none() {
        return Err(SeriesError::Geometry("degenerate geometry".into()));
    }
    Ok(SeriesVolume {
        volume,
        files: slices.into_iter().map(|s| s.path).collect(),
    })
}

/// Clean Recognizable Visual Features Option (CID 7050).
pub const CLEAN_RECOGNIZABLE_VISUAL_FEATURES: (&str, &str) =
    ("113102", "Clean Recognizable Visual Features Option");

/// Re-encodes slice `k` of `series` with the voxels marked in `removed` set to `fill` (in
/// stored units) and the de-identification record added. Returns the new file's bytes.
pub fn rewrite_slice(
    series: &SeriesVolume,
    k: usize,
    removed: &[bool],
    fill: f32,
) -> Result<Vec<u8>, SeriesError> {
    let path = &series.files[k];
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let mut inflated = Vec::new();
    let (meta, mut ds, enc) = open(path, &bytes, &mut inflated)?;
    let bits = ds.u16_value(0x0028_0100, enc).unwrap_or(16);
    let signed = ds.u16_value(0x0028_0103, enc).unwrap_or(0) == 1;
    let mut pixels = radveil_integrity::binding::decoded_pixels(&ds, enc, &meta.transfer_syntax)
        .map_err(|e| file_error(path, e))?
        .into_owned();
    let [ni, nj, _] = series.volume.dims;
    let plane = ni * nj;
    let fill_raw: u32 = {
        let v = fill.round() as i64;
        let v = if signed { v } else { v.max(0) };
        (v as u32) & if bits == 8 { 0xFF } else { 0xFFFF }
    };
    for p in 0..plane {
        if removed[k * plane + p] {
            if bits == 8 {
                pixels[p] = fill_raw as u8;
            } else {
                pixels[2 * p..2 * p + 2].copy_from_slice(&(fill_raw as u16).to_le_bytes());
            }
        }
    }
    // Native syntaxes keep theirs; compressed ones become Explicit VR Little Endian.
    let native = matches!(
        meta.transfer_syntax.as_str(),
        p10::IMPLICIT_VR_LITTLE_ENDIAN
            | p10::EXPLICIT_VR_LITTLE_ENDIAN
            | p10::EXPLICIT_VR_BIG_ENDIAN
            | p10::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    );
    let transfer_syntax = if native {
        meta.transfer_syntax.clone()
    } else {
        p10::EXPLICIT_VR_LITTLE_ENDIAN.to_string()
    };
    if enc == Encoding::ExplicitBig && bits == 16 {
        for c in pixels.chunks_exact_mut(2) {
            c.swap(0, 1);
        }
    }
    let vr = if bits == 8 { Vr::OB } else { Vr::OW };
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    ds.put(Element {
        tag: p10::PIXEL_DATA,
        vr,
        value: Value::Bytes(Cow::Owned(pixels)),
    });
    record(&mut ds);
    let mut file_meta = meta.elements.clone();
    file_meta.put(Element::text(0x0002_0010, Vr::UI, &transfer_syntax));
    let mut out = Vec::with_capacity(bytes.len() + 1024);
    p10::write_file(&file_meta, &ds, &transfer_syntax, &mut out);
    Ok(out)
}

/// Records the defacing: Recognizable Visual Features NO, the CID 7050 code, the method.
fn record(ds: &mut DataSet<'_>) {
    ds.put(Element::text(0x0028_0302, Vr::CS, "NO"));
    let method = match ds.string(0x0012_0063) {
        Some(m) if !m.trim().is_empty() && !m.contains("radveil deface") => {
            format!("{}\\radveil deface", m.trim())
        }
        Some(m) if !m.trim().is_empty() => m.trim().to_string(),
        _ => "radveil deface".to_string(),
    };
    ds.put(Element::text(0x0012_0063, Vr::LO, &method));
    let mut item = DataSet::default();
    item.put(Element::text(
        0x0008_0100,
        Vr::SH,
        CLEAN_RECOGNIZABLE_VISUAL_FEATURES.0,
    ));
    item.put(Element::text(0x0008_0102, Vr::SH, "DCM"));
    item.put(Element::text(
        0x0008_0104,
        Vr::LO,
        CLEAN_RECOGNIZABLE_VISUAL_FEATURES.1,
    ));
    let has = |items: &[DataSet<'_>]| {
        items
            .iter()
            .any(|i| i.string(0x0008_0100).as_deref() == Some(CLEAN_RECOGNIZABLE_VISUAL_FEATURES.0))
    };
    match ds.get_mut(0x0012_0064) {
        Some(Element {
            value: Value::Sequence(items),
            ..
        }) => {
            if !has(items) {
                items.push(item);
            }
        }
        _ => ds.put(Element {
            tag: 0x0012_0064,
            vr: Vr::SQ,
            value: Value::Sequence(vec![item]),
        }),
    }
}
