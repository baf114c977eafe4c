//! DICOM series in and out: single-frame slices, or the frames of a multi-frame image,
//! assembled into a volume from Image Position and Image Orientation (Patient) and Pixel
//! Spacing (for multi-frame images, from the Plane Position, Plane Orientation and Pixel
//! Measures functional groups), and written back file by file with only the pixel values
//! changed, plus the record of what was done: Recognizable Visual
//! Features (0028,0302) = NO and the Clean Recognizable Visual Features Option (CID 7050,
//! 113102) in the De-identification Method Code Sequence.
//!
//! Pixel data is decoded by `radveil-pixeldata` (native, RLE, JPEG, JPEG-LS, JPEG 2000), from
//! its one checked description of the image, within a memory budget: a header that claims
//! more frames or pixels than the file holds is an error before anything is allocated.
//! Native files keep their transfer syntax; compressed ones are written in Explicit VR
//! Little Endian, since no encoder is built in (lossless either way).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use radveil_part10 as p10;
use radveil_part10::{DataSet, Element, Encoding, MemoryBudget, Value, Vr, DEFAULT_WAIT};
use radveil_pixeldata::ImagePixel;
use radveil_standard::tags;

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
    /// Too few slices to be a volume (a localizer, a single image).
    #[error("{0} slices are not a volume")]
    TooFewSlices(usize),
    /// The memory budget did not grant what assembling needs. `Busy` is worth another try
    /// once the caller holds nothing (other workers held the memory); `TooLarge` is not.
    #[error("{0}")]
    Memory(radveil_part10::BudgetError),
}

/// A pixel decoding error of `path`: a refusal of the budget is [`SeriesError::Memory`].
fn pixel_error(path: &Path, e: radveil_pixeldata::PixelError) -> SeriesError {
    match e {
        radveil_pixeldata::PixelError::Memory(b) => SeriesError::Memory(b),
        other => file_error(path, other),
    }
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> SeriesError {
    SeriesError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// One frame (a slice) as read: where it lies and its values in modality units (Rescale
/// Slope and Intercept applied, so CT is in HU whatever each slice's rescale).
struct Frame {
    file: usize,
    frame: usize,
    position: [f64; 3],
    values: Vec<f32>,
}

/// How the pixels are laid out, shared by every frame of the volume.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Layout {
    rows: usize,
    cols: usize,
    bits_allocated: u16,
    orientation: [f64; 6],
    spacing: [f64; 2],
}

impl Layout {
    /// Same matrix and pixel format, and orientation and spacing equal to within rounding.
    fn matches(&self, other: &Layout) -> bool {
        self.rows == other.rows
            && self.cols == other.cols
            && self.bits_allocated == other.bits_allocated
            && self
                .orientation
                .iter()
                .zip(&other.orientation)
                .all(|(a, b)| (a - b).abs() < 1e-4)
            && self
                .spacing
                .iter()
                .zip(&other.spacing)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * a.abs().max(1.0))
    }
}

/// A series assembled into a volume: slice k of the volume is frame `slices[k].1` of
/// `files[slices[k].0]` (single-frame files have frame 0 only).
#[derive(Debug)]
pub struct SeriesVolume {
    /// The volume (i = column, j = row, k = slice in order along the slice normal), in
    /// modality units (Rescale Slope and Intercept applied).
    pub volume: Volume,
    /// The files, in the order given.
    pub files: Vec<PathBuf>,
    /// (file, frame) of each slice.
    pub slices: Vec<(usize, usize)>,
}

/// Which volume a DICOM image belongs to, read from its header: single-frame slices of one
/// series with the same orientation and matrix make one volume; a multi-frame image is a
/// volume on its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackKey {
    /// A single-frame slice.
    Slices {
        /// Series Instance UID.
        series_uid: String,
        /// Image Orientation (Patient), to 1/1000.
        orientation: [i32; 6],
        /// Rows and Columns.
        matrix: (u16, u16),
    },
    /// A multi-frame image.
    MultiFrame,
}

/// What a header says about an image, for choosing what to deface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageHeader {
    /// Modality (0008,0060), upper case.
    pub modality: String,
    /// Which volume the image belongs to; `None` when it has no plane geometry.
    pub stack: Option<StackKey>,
    /// SOP Instance UID (0008,0018): the same image twice in a batch is one slice.
    pub sop_instance_uid: String,
    /// Image Position (Patient) of a single-frame image, to 1/100 mm: slices of several
    /// volumes in one series (echoes, repeats) share positions.
    pub position: Option<[i64; 3]>,
    /// Echo Numbers, Acquisition Number, Temporal Position Identifier and Instance Number:
    /// the order of images that share a position.
    pub order: [i64; 4],
}

/// Reads what decides whether and with which others an image is defaced. `bytes` may end
/// before the pixel data.
pub fn image_header(bytes: &[u8]) -> Option<ImageHeader> {
    let mut inflated = Vec::new();
    let (_, ds, enc) = open(Path::new(""), bytes, &mut inflated).ok()?;
    let modality = ds
        .string(tags::MODALITY)
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    let frames = number_of_frames(&ds);
    let stack = if frames > 1 {
        frame_geometry(&ds, 0).map(|_| StackKey::MultiFrame)
    } else {
        let orientation = numbers(&ds, tags::IMAGE_ORIENTATION_PATIENT);
        let series_uid = ds
            .string(tags::SERIES_INSTANCE_UID)
            .filter(|s| !s.is_empty());
        match (series_uid, <[f64; 6]>::try_from(orientation)) {
            (Some(series_uid), Ok(o)) if numbers(&ds, tags::IMAGE_POSITION_PATIENT).len() == 3 => {
                Some(StackKey::Slices {
                    series_uid,
                    orientation: o.map(|v| (v * 1000.0).round() as i32),
                    matrix: (
                        ds.u16_value(tags::ROWS, enc).unwrap_or(0),
                        ds.u16_value(tags::COLUMNS, enc).unwrap_or(0),
                    ),
                })
            }
            _ => None,
        }
    };
    let position = <[f64; 3]>::try_from(numbers(&ds, tags::IMAGE_POSITION_PATIENT))
        .ok()
        .map(|p| p.map(|v| (v * 100.0).round() as i64));
    let integer = |tag: u32| numbers(&ds, tag).first().map_or(0, |&v| v as i64);
    Some(ImageHeader {
        modality,
        stack,
        sop_instance_uid: ds.string(tags::SOP_INSTANCE_UID).unwrap_or_default(),
        position,
        order: [
            integer(tags::ECHO_NUMBERS),
            integer(tags::ACQUISITION_NUMBER),
            integer(tags::TEMPORAL_POSITION_IDENTIFIER),
            integer(tags::INSTANCE_NUMBER),
        ],
    })
}

/// Splits the single-frame slices of one stack into volumes: when every position holds the
/// same number of slices R (echoes, repeated acquisitions in one series), the r-th slice at
/// each position (in [`ImageHeader::order`]) goes to volume r. Otherwise the stack stays one
/// group (and fails to assemble if positions repeat).
pub fn split_volumes<T>(slices: Vec<(T, ImageHeader)>) -> Vec<Vec<T>> {
    use std::collections::BTreeMap;
    let mut at: BTreeMap<Option<[i64; 3]>, Vec<(T, ImageHeader)>> = BTreeMap::new();
    for s in slices {
        at.entry(s.1.position).or_default().push(s);
    }
    let counts: Vec<usize> = at.values().map(Vec::len).collect();
    let repeats = counts.first().copied().unwrap_or(0);
    let uniform = repeats > 1 && !at.contains_key(&None) && counts.iter().all(|&c| c == repeats);
    if !uniform {
        return vec![at.into_values().flatten().map(|(t, _)| t).collect()];
    }
    let mut volumes: Vec<Vec<T>> = (0..repeats).map(|_| Vec::new()).collect();
    for mut group in at.into_values() {
        group.sort_by_key(|(_, h)| h.order);
        for (r, (t, _)) in group.into_iter().enumerate() {
            volumes[r].push(t);
        }
    }
    volumes
}

/// The images of one volume to assemble, and the second copies of its SOP instances (the same
/// image given twice: never a slice of its own, never written undefaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup<T> {
    /// One image per SOP instance, in input order.
    pub images: Vec<T>,
    /// Second (and later) copies of an SOP instance already in `images`.
    pub duplicates: Vec<T>,
}

/// Groups DICOM images into the volumes they make, as `radveil deface` and `radveil deid`
/// both need them: single-frame slices by [`StackKey`] (series, orientation, matrix), each
/// multi-frame image on its own; second copies of an SOP instance set aside; and a stack
/// that holds several volumes at the same positions (echoes, repeats) split by
/// [`split_volumes`]. Returns the volumes (single-frame stacks in key order, then multi-frame
/// images in input order) and the images without plane geometry, which make no volume.
pub fn group_volumes<T>(
    images: impl IntoIterator<Item = (T, ImageHeader)>,
) -> (Vec<VolumeGroup<T>>, Vec<T>) {
    use std::collections::{BTreeMap, HashSet};
    let mut stacks: BTreeMap<(StackKey, usize), Vec<(T, ImageHeader)>> = BTreeMap::new();
    let mut loose = Vec::new();
    for (n, (t, h)) in images.into_iter().enumerate() {
        match h.stack.clone() {
            Some(key @ StackKey::MultiFrame) => stacks.entry((key, n)).or_default().push((t, h)),
            Some(key) => stacks.entry((key, 0)).or_default().push((t, h)),
            None => loose.push(t),
        }
    }
    let mut groups = Vec::new();
    for images in stacks.into_values() {
        let mut seen = HashSet::new();
        let (mut unique, mut duplicates) = (Vec::new(), Vec::new());
        for (t, h) in images {
            if h.sop_instance_uid.is_empty() || seen.insert(h.sop_instance_uid.clone()) {
                unique.push((t, h));
            } else {
                duplicates.push(t);
            }
        }
        // The duplicates go with the stack's first volume: they are reported once.
        let mut duplicates = Some(duplicates);
        for images in split_volumes(unique) {
            groups.push(VolumeGroup {
                images,
                duplicates: duplicates.take().unwrap_or_default(),
            });
        }
    }
    (groups, loose)
}

fn numbers(ds: &DataSet<'_>, tag: u32) -> Vec<f64> {
    ds.string(tag)
        .unwrap_or_default()
        .split('\\')
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .collect()
}

/// Number of Frames, as the pixel description reads it; an impossible value counts as a
/// multi-frame image here (it is refused when the image is read).
fn number_of_frames(ds: &DataSet<'_>) -> usize {
    radveil_pixeldata::number_of_frames(ds).unwrap_or(usize::MAX)
}

/// The first item of a sequence.
fn first_item<'d, 'b>(ds: &'d DataSet<'b>, tag: u32) -> Option<&'d DataSet<'b>> {
    match &ds.get(tag)?.value {
        Value::Sequence(items) => items.first(),
        _ => None,
    }
}

/// Where a frame lies: position, orientation, pixel spacing, rescale slope and intercept.
struct FrameGeometry {
    position: [f64; 3],
    orientation: [f64; 6],
    spacing: [f64; 2],
    rescale: (f64, f64),
}

/// The geometry of frame `n`: from the top level for a single-frame image, from the
/// functional groups (per-frame, else shared) for a multi-frame one.
fn frame_geometry(ds: &DataSet<'_>, n: usize) -> Option<FrameGeometry> {
    let per_frame = match ds
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .map(|e| &e.value)
    {
        Some(Value::Sequence(items)) => items.get(n),
        _ => None,
    };
    let shared = first_item(ds, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    // An attribute of a functional group macro: per-frame first, then shared; a
    // single-frame image without functional groups has it at the top level.
    let attribute = |group: u32, tag: u32| -> Vec<f64> {
        for fg in [per_frame, shared].into_iter().flatten() {
            if let Some(item) = first_item(fg, group) {
                let v = numbers(item, tag);
                if !v.is_empty() {
                    return v;
                }
            }
        }
        if per_frame.is_none() && shared.is_none() {
            numbers(ds, tag)
        } else {
            Vec::new()
        }
    };
    let position = <[f64; 3]>::try_from(attribute(
        tags::PLANE_POSITION_SEQUENCE,
        tags::IMAGE_POSITION_PATIENT,
    ))
    .ok()?;
    let orientation = <[f64; 6]>::try_from(attribute(
        tags::PLANE_ORIENTATION_SEQUENCE,
        tags::IMAGE_ORIENTATION_PATIENT,
    ))
    .ok()?;
    let spacing = <[f64; 2]>::try_from(attribute(
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::PIXEL_SPACING,
    ))
    .ok()?;
    let slope = attribute(
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        tags::RESCALE_SLOPE,
    )
    .first()
    .copied()
    .unwrap_or(1.0);
    let intercept = attribute(
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        tags::RESCALE_INTERCEPT,
    )
    .first()
    .copied()
    .unwrap_or(0.0);
    let valid = position
        .iter()
        .chain(&orientation)
        .chain(&spacing)
        .chain([&slope, &intercept])
        .all(|v| v.is_finite())
        && spacing.iter().all(|&s| s > 0.0)
        && slope != 0.0;
    valid.then_some(FrameGeometry {
        position,
        orientation,
        spacing,
        rescale: (slope, intercept),
    })
}

/// Parses a Part 10 file's meta and data set, naming the file in errors.
fn open<'b>(
    path: &Path,
    bytes: &'b [u8],
    inflated: &'b mut Vec<u8>,
) -> Result<(p10::FileMeta<'b>, DataSet<'b>, Encoding), SeriesError> {
    p10::read_file(bytes, inflated, p10::Limits::default()).map_err(|e| file_error(path, e))
}

/// The stored pixel format of an image.
#[derive(Debug, Clone, Copy)]
struct Format {
    rows: usize,
    cols: usize,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
}

fn format(
    path: &Path,
    ds: &DataSet<'_>,
    enc: Encoding,
) -> Result<(Format, ImagePixel), SeriesError> {
    let d = ImagePixel::from_dataset(ds, enc).map_err(|e| file_error(path, e))?;
    if d.samples_per_pixel != 1 {
        return Err(file_error(path, "not a greyscale image"));
    }
    let bits_allocated = d.bits_allocated;
    if !(bits_allocated == 8 || bits_allocated == 16) {
        return Err(file_error(path, "no 8- or 16-bit pixel data"));
    }
    let f = Format {
        rows: usize::from(d.rows),
        cols: usize::from(d.columns),
        bits_allocated,
        bits_stored: d.bits_stored.clamp(1, bits_allocated),
        signed: d.pixel_representation == 1,
    };
    Ok((f, d))
}

/// A vector of `len` values whose memory the system granted (an error where `vec!` or
/// `with_capacity` would abort the process on a refused allocation).
fn try_vec<T>(path: &Path, len: usize) -> Result<Vec<T>, SeriesError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| file_error(path, format!("{len} values cannot be allocated")))?;
    Ok(v)
}

/// Reads every frame of one file: the layout and, per frame, its position and values.
/// The pixel description is checked against the pixel data before anything is allocated,
/// and the frames' values are reserved from `budget`.
fn read_frames(
    path: &Path,
    bytes: &[u8],
    file: usize,
    budget: &MemoryBudget,
) -> Result<(Layout, Vec<Frame>), SeriesError> {
    let mut inflated = Vec::new();
    let (meta, ds, enc) = open(path, bytes, &mut inflated)?;
    frames_of(path, (&meta, &ds, enc), file, budget)
}

/// [`read_frames`] of a file already parsed.
fn frames_of(
    path: &Path,
    (meta, ds, enc): Parsed<'_, '_>,
    file: usize,
    budget: &MemoryBudget,
) -> Result<(Layout, Vec<Frame>), SeriesError> {
    let ds: &DataSet<'_> = ds;
    let (f, d) = format(path, ds, enc)?;
    let frames = d.number_of_frames;
    let pixels = radveil_pixeldata::decode_pixel_data(ds, enc, &meta.transfer_syntax, budget)
        .map_err(|e| pixel_error(path, e))?;
    let n = f.rows * f.cols;
    let bytes_per = f.bits_allocated as usize / 8;
    // The decoded pixels hold exactly `frames` frames of `n` samples (checked by the
    // description against the bytes present), so these sizes cannot overflow.
    if pixels.len() != d.frame_len().saturating_mul(frames) {
        return Err(file_error(path, "pixel data shorter than the image"));
    }
    let values_bytes = (pixels.len() / bytes_per).saturating_mul(std::mem::size_of::<f32>());
    // Taken only if free now: the decoded pixels hold memory of the budget, and a holder
    // that waited could be waiting for itself (or for workers who wait for it).
    let _values = budget
        .try_reserve(values_bytes as u64)
        .map_err(SeriesError::Memory)?;
    let mut layout: Option<Layout> = None;
    let mut out = try_vec(path, frames)?;
    for frame in 0..frames {
        let g = frame_geometry(ds, frame).ok_or_else(|| {
            file_error(
                path,
                if frames > 1 {
                    format!(
                        "frame {}: no Plane Position/Orientation or Pixel Measures",
                        frame + 1
                    )
                } else {
                    "no Image Position/Orientation (Patient) or Pixel Spacing".to_string()
                },
            )
        })?;
        let l = Layout {
            rows: f.rows,
            cols: f.cols,
            bits_allocated: f.bits_allocated,
            orientation: g.orientation,
            spacing: g.spacing,
        };
        match &layout {
            None => layout = Some(l),
            Some(first) if !first.matches(&l) => {
                return Err(file_error(
                    path,
                    format!(
                        "frame {}: orientation or spacing differs from frame 1",
                        frame + 1
                    ),
                ))
            }
            _ => {}
        }
        let (slope, intercept) = g.rescale;
        let raw = &pixels[frame * n * bytes_per..(frame + 1) * n * bytes_per];
        let stored = |v: u32| sample(v, f.bits_stored, f.signed) as f64 * slope + intercept;
        let mut values: Vec<f32> = try_vec(path, n)?;
        if bytes_per == 1 {
            values.extend(raw.iter().map(|&b| stored(b as u32) as f32));
        } else {
            values.extend(
                raw.chunks_exact(2)
                    .map(|c| stored(u16::from_le_bytes([c[0], c[1]]) as u32) as f32),
            );
        }
        out.push(Frame {
            file,
            frame,
            position: g.position,
            values,
        });
    }
    let layout = layout.ok_or_else(|| file_error(path, "no frames"))?;
    Ok((layout, out))
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

/// The fewest slices that make a volume.
pub const MIN_SLICES: usize = 8;

/// Assembles the frames of `paths` (single-frame slices of one series, or one multi-frame
/// image) into a volume, within the process-wide [`radveil_pixeldata::default_budget`].
pub fn assemble(paths: &[PathBuf]) -> Result<SeriesVolume, SeriesError> {
    assemble_with(paths, |p| std::fs::read(p))
}

/// [`assemble`], with the files' bytes from `read` (one file at a time, so a long series is
/// never all in memory as files).
pub fn assemble_with(
    paths: &[PathBuf],
    read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<SeriesVolume, SeriesError> {
    assemble_with_budget(paths, read, radveil_pixeldata::default_budget())
}

/// [`assemble_with`], reserving from `budget` the memory for each file's decoded pixels and
/// the volume's values while they are built (the returned volume is the caller's to
/// account for).
pub fn assemble_with_budget(
    paths: &[PathBuf],
    read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
    budget: &MemoryBudget,
) -> Result<SeriesVolume, SeriesError> {
    assemble_frames(
        paths,
        |file, p| {
            let bytes = read(p).map_err(|e| file_error(p, e))?;
            read_frames(p, &bytes, file, budget)
        },
        budget,
    )
}

/// A Part 10 file as read: its file meta, its data set and the encoding the data set was
/// read in.
pub type Parsed<'m, 'b> = (&'m p10::FileMeta<'b>, &'m DataSet<'b>, Encoding);

/// [`assemble_with_budget`] of files already parsed (`parsed[n]` is `paths[n]`, named in
/// errors), so that a caller that goes on to write them parses each file once.
pub fn assemble_parsed(
    paths: &[PathBuf],
    parsed: &[Parsed<'_, '_>],
    budget: &MemoryBudget,
) -> Result<SeriesVolume, SeriesError> {
    if parsed.len() != paths.len() {
        return Err(SeriesError::Geometry(
            "internal error: not one parsed file per path".into(),
        ));
    }
    assemble_frames(
        paths,
        |file, p| frames_of(p, parsed[file], file, budget),
        budget,
    )
}

/// Assembles the volume from each file's frames, as `frames` reads them (one file at a
/// time).
fn assemble_frames(
    paths: &[PathBuf],
    mut frames: impl FnMut(usize, &Path) -> Result<(Layout, Vec<Frame>), SeriesError>,
    budget: &MemoryBudget,
) -> Result<SeriesVolume, SeriesError> {
    let mut layout: Option<Layout> = None;
    let mut slices = Vec::with_capacity(paths.len());
    for (file, p) in paths.iter().enumerate() {
        let (l, frames) = frames(file, p)?;
        match &layout {
            None => layout = Some(l),
            Some(first) if !first.matches(&l) => {
                return Err(SeriesError::Geometry(format!(
                    "{}: its matrix, pixel format, orientation or spacing differs from the series'",
                    p.display()
                )))
            }
            _ => {}
        }
        slices.extend(frames);
    }
    let layout = layout.ok_or_else(|| SeriesError::Geometry("no slices".into()))?;
    if slices.len() < MIN_SLICES {
        return Err(SeriesError::TooFewSlices(slices.len()));
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
    if gaps.iter().any(|&g| g <= 1e-3) {
        return Err(SeriesError::Geometry(
            "several slices share a position (more than one volume in the series?)".into(),
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
    // Every slice's values are in memory already (reserved as they were read); the volume
    // is one more copy of them.
    let voxels = slices.iter().map(|s| s.values.len()).sum::<usize>();
    let _volume = budget
        .reserve(
            (voxels as u64).saturating_mul(std::mem::size_of::<f32>() as u64),
            DEFAULT_WAIT,
        )
        .map_err(SeriesError::Memory)?;
    let mut data = Vec::new();
    data.try_reserve_exact(voxels)
        .map_err(|_| SeriesError::Geometry(format!("{voxels} voxels cannot be allocated")))?;
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
        files: paths.to_vec(),
        slices: slices.into_iter().map(|s| (s.file, s.frame)).collect(),
    })
}

/// Clean Recognizable Visual Features Option (CID 7050).
pub const CLEAN_RECOGNIZABLE_VISUAL_FEATURES: (&str, &str) =
    radveil_standard::CLEAN_RECOGNIZABLE_VISUAL_FEATURES_CODE;

/// Re-encodes file `file` of `series` with the voxels marked in `removed` set to their
/// value in `values` (the new volume, in modality units; stored as the nearest
/// representable value) and the de-identification record added. Returns the new file's
/// bytes.
pub fn rewrite(
    series: &SeriesVolume,
    file: usize,
    removed: &[bool],
    values: &[f32],
) -> Result<Vec<u8>, SeriesError> {
    rewrite_with_budget(
        series,
        file,
        removed,
        values,
        radveil_pixeldata::default_budget(),
    )
}

/// [`rewrite`], reserving the memory for the file's decoded pixels from `budget`.
pub fn rewrite_with_budget(
    series: &SeriesVolume,
    file: usize,
    removed: &[bool],
    values: &[f32],
    budget: &MemoryBudget,
) -> Result<Vec<u8>, SeriesError> {
    let path = &series.files[file];
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let mut inflated = Vec::new();
    let (mut meta, mut ds, enc) = open(path, &bytes, &mut inflated)?;
    let _pixels = put_defaced(
        series,
        file,
        (&mut meta, &mut ds, enc),
        removed,
        values,
        budget,
    )?;
    let mut out = Vec::with_capacity(bytes.len() + 1024);
    p10::write_file(&meta.elements, &ds, &meta.transfer_syntax, &mut out);
    Ok(out)
}

/// The memory of the defaced pixel data [`put_defaced`] puts into a data set, held from the
/// budget until dropped (after the data set is written).
#[derive(Debug)]
pub struct DefacedPixels<'m> {
    _grants: [Option<p10::Grant<'m>>; 2],
}

/// Puts the defaced pixels of file `file` of `series` (already parsed: its file meta, data
/// set and encoding) into its data set, as [`rewrite`] writes them: the voxels marked in
/// `removed` set to their value in `values` (stored as the nearest representable value),
/// Pixel Data an owned value, the de-identification record added, and a compressed transfer
/// syntax replaced in the file meta by Explicit VR Little Endian. The decoded pixels are
/// reserved from `budget` for as long as the returned [`DefacedPixels`] is held.
pub fn put_defaced<'m>(
    series: &SeriesVolume,
    file: usize,
    (meta, ds, enc): (&mut p10::FileMeta<'_>, &mut DataSet<'_>, Encoding),
    removed: &[bool],
    values: &[f32],
    budget: &'m MemoryBudget,
) -> Result<DefacedPixels<'m>, SeriesError> {
    let path = series
        .files
        .get(file)
        .ok_or_else(|| SeriesError::Geometry(format!("no file {file} in the series")))?;
    let (f, _) = format(path, ds, enc)?;
    let decoded = radveil_pixeldata::decode_pixel_data(ds, enc, &meta.transfer_syntax, budget)
        .map_err(|e| pixel_error(path, e))?;
    // A borrowed decode is copied here: that copy is reserved too.
    let copy = match &decoded.pixels {
        Cow::Borrowed(b) => Some(
            budget
                .reserve(b.len() as u64, DEFAULT_WAIT)
                .map_err(SeriesError::Memory)?,
        ),
        Cow::Owned(_) => None,
    };
    let (mut pixels, grant) = decoded.into_owned();
    let [ni, nj, _] = series.volume.dims;
    let plane = ni * nj;
    let bytes_per = f.bits_allocated as usize / 8;
    for (k, _) in series
        .slices
        .iter()
        .enumerate()
        .filter(|(_, s)| s.0 == file)
    {
        let frame = series.slices[k].1;
        let g = frame_geometry(ds, frame)
            .ok_or_else(|| file_error(path, "the file changed while it was defaced"))?;
        let frame_len = plane * bytes_per;
        let frame_pixels = frame
            .checked_mul(frame_len)
            .and_then(|start| pixels.get_mut(start..start.checked_add(frame_len)?))
            .ok_or_else(|| file_error(path, "the file changed while it was defaced"))?;
        for (p, px) in frame_pixels.chunks_exact_mut(bytes_per).enumerate() {
            let v = k * plane + p;
            if removed.get(v) == Some(&true) {
                let value = values.get(v).copied().unwrap_or_default();
                let raw = stored_value(value, g.rescale, f).to_le_bytes();
                px.copy_from_slice(&raw[..bytes_per]);
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
    if !native {
        meta.transfer_syntax = p10::EXPLICIT_VR_LITTLE_ENDIAN.to_string();
    }
    if enc == Encoding::ExplicitBig && native && bytes_per == 2 {
        for c in pixels.chunks_exact_mut(2) {
            c.swap(0, 1);
        }
    }
    let vr = if bytes_per == 1 { Vr::OB } else { Vr::OW };
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    ds.put(Element {
        tag: p10::PIXEL_DATA,
        vr,
        value: Value::Bytes(Cow::Owned(pixels)),
    });
    record(ds);
    meta.elements.put(Element::text(
        tags::TRANSFER_SYNTAX_UID,
        Vr::UI,
        &meta.transfer_syntax,
    ));
    Ok(DefacedPixels {
        _grants: [copy, grant],
    })
}

/// The stored value (as written, little endian) nearest to `value` in modality units, within
/// the range Bits Stored allows.
fn stored_value(value: f32, (slope, intercept): (f64, f64), f: Format) -> u16 {
    let bits = f.bits_stored.clamp(1, 16) as u32;
    let (lo, hi) = if f.signed {
        (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
    } else {
        (0, (1i64 << bits) - 1)
    };
    let v = (((value as f64 - intercept) / slope).round() as i64).clamp(lo, hi);
    (v as u16) & if f.bits_allocated == 8 { 0xFF } else { 0xFFFF }
}

/// Records the defacing: Recognizable Visual Features NO, the CID 7050 code, the method.
fn record(ds: &mut DataSet<'_>) {
    ds.put(Element::text(
        tags::RECOGNIZABLE_VISUAL_FEATURES,
        Vr::CS,
        "NO",
    ));
    let method = match ds.string(tags::DEIDENTIFICATION_METHOD) {
        Some(m) if !m.trim().is_empty() && !m.contains("radveil deface") => {
            format!("{}\\radveil deface", m.trim())
        }
        Some(m) if !m.trim().is_empty() => m.trim().to_string(),
        _ => "radveil deface".to_string(),
    };
    ds.put(Element::text(
        tags::DEIDENTIFICATION_METHOD,
        Vr::LO,
        &method,
    ));
    let mut item = DataSet::default();
    item.put(Element::text(
        tags::CODE_VALUE,
        Vr::SH,
        CLEAN_RECOGNIZABLE_VISUAL_FEATURES.0,
    ));
    item.put(Element::text(tags::CODING_SCHEME_DESIGNATOR, Vr::SH, "DCM"));
    item.put(Element::text(
        tags::CODE_MEANING,
        Vr::LO,
        CLEAN_RECOGNIZABLE_VISUAL_FEATURES.1,
    ));
    let has = |items: &[DataSet<'_>]| {
        items.iter().any(|i| {
            i.string(tags::CODE_VALUE).as_deref() == Some(CLEAN_RECOGNIZABLE_VISUAL_FEATURES.0)
        })
    };
    match ds.get_mut(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE) {
        Some(Element {
            value: Value::Sequence(items),
            ..
        }) => {
            if !has(items) {
                items.push(item);
            }
        }
        _ => ds.put(Element {
            tag: tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
            vr: Vr::SQ,
            value: Value::Sequence(vec![item]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(z: i64, echo: i64) -> ImageHeader {
        ImageHeader {
            modality: "MR".into(),
            stack: None,
            sop_instance_uid: format!("1.2.{z}.{echo}"),
            position: Some([0, 0, z]),
            order: [echo, 0, 0, 0],
        }
    }

    /// A Part 10 file of a 4 x 4, 16-bit image with top-level plane geometry, claiming
    /// `frames` frames and holding `pixel_bytes` of pixel data.
    fn image_file(frames: &str, pixel_bytes: usize) -> Vec<u8> {
        image_file_in(frames, pixel_bytes, p10::EXPLICIT_VR_LITTLE_ENDIAN)
    }

    /// [`image_file`] in the transfer syntax `ts` (Explicit VR Little or Big Endian).
    fn image_file_in(frames: &str, pixel_bytes: usize, ts: &str) -> Vec<u8> {
        let big = ts == p10::EXPLICIT_VR_BIG_ENDIAN;
        let mut ds = DataSet::default();
        let us = |tag: u32, v: u16| Element {
            tag,
            vr: Vr::US,
            value: Value::Bytes(Cow::Owned(if big {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            })),
        };
        ds.put(Element::text(
            tags::SOP_CLASS_UID,
            Vr::UI,
            "1.2.840.10008.5.1.4.1.1.2",
        ));
        ds.put(Element::text(tags::SOP_INSTANCE_UID, Vr::UI, "1.2.3.4"));
        ds.put(Element::text(tags::MODALITY, Vr::CS, "CT"));
        ds.put(Element::text(tags::SERIES_INSTANCE_UID, Vr::UI, "1.2.3"));
        ds.put(Element::text(
            tags::IMAGE_POSITION_PATIENT,
            Vr::DS,
            "0\\0\\0",
        ));
        ds.put(Element::text(
            tags::IMAGE_ORIENTATION_PATIENT,
            Vr::DS,
            "1\\0\\0\\0\\1\\0",
        ));
        ds.put(Element::text(tags::PIXEL_SPACING, Vr::DS, "1\\1"));
        ds.put(us(tags::SAMPLES_PER_PIXEL, 1));
        ds.put(Element::text(tags::NUMBER_OF_FRAMES, Vr::IS, frames));
        ds.put(us(tags::ROWS, 4));
        ds.put(us(tags::COLUMNS, 4));
        ds.put(us(tags::BITS_ALLOCATED, 16));
        ds.put(us(tags::BITS_STORED, 16));
        ds.put(Element {
            tag: p10::PIXEL_DATA,
            vr: Vr::OW,
            value: Value::Bytes(Cow::Owned(vec![0; pixel_bytes])),
        });
        let mut meta = DataSet::default();
        meta.put(Element::text(
            tags::MEDIA_STORAGE_SOP_CLASS_UID,
            Vr::UI,
            "1.2.840.10008.5.1.4.1.1.2",
        ));
        meta.put(Element::text(
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
            Vr::UI,
            "1.2.3.4",
        ));
        meta.put(Element::text(tags::TRANSFER_SYNTAX_UID, Vr::UI, ts));
        let mut out = Vec::new();
        p10::write_file(&meta, &ds, ts, &mut out);
        out
    }

    #[test]
    fn a_frame_count_the_pixel_data_cannot_hold_is_an_error_not_a_panic() {
        let path = [PathBuf::from("hostile.dcm")];
        // 2^63 frames: a capacity overflow panic before; 2^40 frames: an allocation of
        // 2^40 frames that aborted the process.
        for frames in [
            "9223372036854775808",
            "1099511627776",
            "2305843009213693952",
        ] {
            let bytes = image_file(frames, 32);
            assert_eq!(
                image_header(&bytes).and_then(|h| h.stack),
                Some(StackKey::MultiFrame)
            );
            let r = assemble_with(&path, |_| Ok(bytes.clone()));
            assert!(
                matches!(r, Err(SeriesError::File { .. })),
                "{frames}: {r:?}"
            );
        }
        // Ten frames present and described are read; they share one position, so it is the
        // geometry that is refused.
        let bytes = image_file("10", 320);
        assert!(matches!(
            assemble_with(&path, |_| Ok(bytes.clone())),
            Err(SeriesError::Geometry(_))
        ));
    }

    #[test]
    fn a_volume_over_the_budget_is_refused_before_it_is_decoded() {
        let path = [PathBuf::from("big.dcm")];
        let bytes = image_file("10", 320);
        let budget = MemoryBudget::new(100);
        let r = assemble_with_budget(&path, |_| Ok(bytes.clone()), &budget);
        assert!(
            matches!(
                r,
                Err(SeriesError::Memory(
                    radveil_part10::BudgetError::TooLarge { .. }
                ))
            ),
            "{r:?}"
        );
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn memory_other_workers_hold_is_a_memory_error_the_caller_can_wait_for() {
        // Not a file error: the caller lets go of what it holds and tries again.
        let path = [PathBuf::from("slices.dcm")];
        let bytes = image_file_in("10", 320, p10::EXPLICIT_VR_BIG_ENDIAN);
        let budget = MemoryBudget::new(1000);
        let other = budget.try_reserve(900).unwrap();
        let r = assemble_with_budget(&path, |_| Ok(bytes.clone()), &budget);
        assert!(
            matches!(
                r,
                Err(SeriesError::Memory(
                    radveil_part10::BudgetError::Busy { .. }
                ))
            ),
            "{r:?}"
        );
        drop(other);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn reading_frames_never_waits_for_memory_its_own_decode_holds() {
        // Big endian: the decoded pixels are a swapped copy (320 bytes, held), and their
        // values need 640 more. Each fits a budget of 700, both do not: the values waited
        // 120 s for memory only this read held.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let path = [PathBuf::from("big-endian.dcm")];
            let bytes = image_file_in("10", 320, p10::EXPLICIT_VR_BIG_ENDIAN);
            let budget = MemoryBudget::new(700);
            let r = assemble_with_budget(&path, |_| Ok(bytes.clone()), &budget);
            let _ = tx.send((matches!(r, Err(SeriesError::Memory(_))), budget.in_use()));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(got, Ok((true, 0)));
        // Within a budget that holds both, the same file is read (and refused only for its
        // geometry: its frames share one position).
        let path = [PathBuf::from("big-endian.dcm")];
        let bytes = image_file_in("10", 320, p10::EXPLICIT_VR_BIG_ENDIAN);
        let budget = MemoryBudget::new(1000);
        let r = assemble_with_budget(&path, |_| Ok(bytes.clone()), &budget);
        assert!(matches!(r, Err(SeriesError::Geometry(_))), "{r:?}");
    }

    #[test]
    fn echoes_at_the_same_positions_become_volumes() {
        let slices: Vec<_> = (0..10)
            .flat_map(|z| [2, 1].map(|e| ((z, e), header(z, e))))
            .collect();
        let volumes = split_volumes(slices);
        assert_eq!(volumes.len(), 2);
        assert!(volumes[0].iter().all(|&(_, e)| e == 1) && volumes[0].len() == 10);
        assert!(volumes[1].iter().all(|&(_, e)| e == 2) && volumes[1].len() == 10);
        // Positions repeated unevenly: one group, for assembly to refuse.
        let mut uneven: Vec<_> = (0..10).map(|z| (z, header(z, 1))).collect();
        uneven.push((3, header(3, 2)));
        assert_eq!(split_volumes(uneven).len(), 1);
    }

    fn slice(series: &str, z: i64, echo: i64) -> ImageHeader {
        ImageHeader {
            stack: Some(StackKey::Slices {
                series_uid: series.into(),
                orientation: [1000, 0, 0, 0, 1000, 0],
                matrix: (64, 64),
            }),
            sop_instance_uid: format!("1.2.{series}.{z}.{echo}"),
            ..header(z, echo)
        }
    }

    #[test]
    fn images_are_grouped_into_volumes_with_duplicates_set_aside() {
        let mut images: Vec<(&str, ImageHeader)> = Vec::new();
        // Series 9 (given first): two echoes at ten positions, and one image given twice.
        for z in 0..10 {
            images.push(("s9e1", slice("9", z, 1)));
            images.push(("s9e2", slice("9", z, 2)));
        }
        images.push(("s9e1 again", slice("9", 4, 1)));
        // Series 1: one volume.
        images.extend((0..10).map(|z| ("s1", slice("1", z, 1))));
        // Two multi-frame images, and an image without plane geometry.
        let multi = |uid: &str| ImageHeader {
            stack: Some(StackKey::MultiFrame),
            sop_instance_uid: uid.into(),
            position: None,
            ..header(0, 0)
        };
        images.push(("mf-b", multi("1.3.2")));
        images.push(("mf-a", multi("1.3.1")));
        images.push(("loose", header(0, 0)));
        let (groups, loose) = group_volumes(images);
        assert_eq!(loose, ["loose"]);
        let names: Vec<(Vec<&str>, Vec<&str>)> = groups
            .into_iter()
            .map(|g| {
                let mut i = g.images;
                i.dedup();
                (i, g.duplicates)
            })
            .collect();
        assert_eq!(
            names,
            [
                (vec!["s1"], vec![]),
                (vec!["s9e1"], vec!["s9e1 again"]),
                (vec!["s9e2"], vec![]),
                (vec!["mf-b"], vec![]),
                (vec!["mf-a"], vec![]),
            ]
        );
    }

    /// Slice `z` of a 10-slice series of 4 x 4 images in `ts`, its pixels numbered.
    fn slice_file(z: usize, ts: &str) -> Vec<u8> {
        let bytes = image_file_in("1", 32, ts);
        let mut inflated = Vec::new();
        let (meta, mut ds, enc) = open(Path::new(""), &bytes, &mut inflated).unwrap();
        ds.put(Element::text(
            tags::IMAGE_POSITION_PATIENT,
            Vr::DS,
            &format!("0\\0\\{z}"),
        ));
        ds.put(Element::text(
            tags::SOP_INSTANCE_UID,
            Vr::UI,
            &format!("1.2.3.4.{z}"),
        ));
        let pixels: Vec<u8> = (0..16u16)
            .flat_map(|v| {
                let v = v + 16 * z as u16;
                if enc == Encoding::ExplicitBig {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }
            })
            .collect();
        ds.put(Element {
            tag: p10::PIXEL_DATA,
            vr: Vr::OW,
            value: Value::Bytes(Cow::Owned(pixels)),
        });
        let mut out = Vec::new();
        p10::write_file(&meta.elements, &ds, &meta.transfer_syntax, &mut out);
        out
    }

    #[test]
    fn a_parsed_series_is_assembled_and_rewritten_as_its_files_are() {
        // The one-pass path (parse once, assemble from the parsed data sets, put the defaced
        // pixels back into them, encode once) gives the volume and the files the path-based
        // one gives.
        for ts in [
            p10::EXPLICIT_VR_LITTLE_ENDIAN,
            p10::EXPLICIT_VR_BIG_ENDIAN,
            p10::IMPLICIT_VR_LITTLE_ENDIAN,
        ] {
            let dir = std::env::temp_dir().join(format!(
                "radveil-series-{}-{}",
                std::process::id(),
                ts.replace('.', "-")
            ));
            std::fs::create_dir_all(&dir).unwrap();
            // Given out of order: the volume sorts them along the normal.
            let paths: Vec<PathBuf> = (0..10)
                .map(|z| {
                    let z = (z * 3) % 10;
                    let p = dir.join(format!("{z}.dcm"));
                    std::fs::write(&p, slice_file(z, ts)).unwrap();
                    p
                })
                .collect();
            let budget = MemoryBudget::new(1 << 30);
            let by_path = assemble_with_budget(&paths, |p| std::fs::read(p), &budget).unwrap();
            let files: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
            let mut inflated: Vec<Vec<u8>> = paths.iter().map(|_| Vec::new()).collect();
            let mut parsed: Vec<_> = files
                .iter()
                .zip(inflated.iter_mut())
                .map(|(b, i)| p10::read_file(b, i, p10::Limits::default()).unwrap())
                .collect();
            let views: Vec<Parsed<'_, '_>> = parsed.iter().map(|(m, d, e)| (m, d, *e)).collect();
            let by_parse = assemble_parsed(&paths, &views, &budget).unwrap();
            drop(views);
            assert_eq!(by_parse.volume.data, by_path.volume.data, "{ts}");
            assert_eq!(by_parse.volume.dims, [4, 4, 10]);
            assert_eq!(by_parse.slices, by_path.slices);
            assert_eq!(by_parse.volume.affine, by_path.volume.affine);
            // Every third voxel removed, set to -1 (stored as 0: unsigned).
            let removed: Vec<bool> = (0..160).map(|v| v % 3 == 0).collect();
            let values = vec![-1.0f32; 160];
            for (n, (meta, ds, enc)) in parsed.iter_mut().enumerate() {
                let old = rewrite_with_budget(&by_path, n, &removed, &values, &budget).unwrap();
                let held = put_defaced(&by_parse, n, (meta, ds, *enc), &removed, &values, &budget)
                    .unwrap();
                let mut new = Vec::new();
                p10::write_file(&meta.elements, ds, &meta.transfer_syntax, &mut new);
                drop(held);
                assert_eq!(new, old, "{ts}: file {n}");
                assert_ne!(new, files[n], "{ts}: file {n} unchanged");
            }
            assert_eq!(budget.in_use(), 0);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn assembling_parsed_files_needs_one_per_path() {
        let budget = MemoryBudget::new(1 << 20);
        let r = assemble_parsed(&[PathBuf::from("a.dcm")], &[], &budget);
        assert!(matches!(r, Err(SeriesError::Geometry(_))), "{r:?}");
    }
}
