//! NIfTI-1 volumes (`.nii`, `.nii.gz`) in and out, through the `nifti` crate.
//!
//! The voxel-to-world affine is the sform when its code is set, else the qform (quaternion),
//! else the voxel sizes alone, as the NIfTI-1 standard orders them.

use std::path::Path;

use nifti::NiftiHeader;
use radveil_part10::{MemoryBudget, DEFAULT_WAIT};

use crate::volume::Volume;

/// Why a NIfTI file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    /// The file is not NIfTI-1 or is damaged.
    #[error("not a readable NIfTI-1 file: {0}")]
    Unreadable(String),
    /// A NIfTI file that is not a 3-D scalar volume.
    #[error("{0}")]
    Unsupported(String),
}

/// The largest volume accepted (voxels).
const MAX_VOXELS: usize = 1 << 28;

/// The largest uncompressed NIfTI file accepted (bytes).
const MAX_FILE: usize = 4 << 30;

/// Bytes a gzip-compressed file may hold after what its header describes (kept in the
/// defaced copy); more is refused rather than inflated.
const MAX_TRAILING: usize = 1 << 20;

/// Size of the NIfTI-1 header and of the extension flag that follows it.
const HEADER_LEN: usize = 348;

/// A NIfTI-1 file's bytes, inflated when the file was gzip-compressed: read once, both to
/// take the volume from ([`NiftiFile::volume`]) and to write the defaced copy
/// ([`NiftiFile::defaced`]).
#[derive(Debug, Clone)]
pub struct NiftiFile {
    /// The uncompressed file: header, extensions, voxels.
    pub bytes: Vec<u8>,
    /// Whether the file was gzip-compressed (its defaced copy is too).
    pub gz: bool,
}

impl NiftiFile {
    /// Reads a NIfTI-1 file (`.nii`, or gzip-compressed).
    pub fn open(path: &Path) -> Result<NiftiFile, NiftiError> {
        let raw = std::fs::read(path).map_err(|e| NiftiError::Unreadable(e.to_string()))?;
        NiftiFile::from_bytes(raw)
    }

    /// NIfTI-1 bytes, plain or gzip-compressed, within the process-wide
    /// [`radveil_pixeldata::default_budget`] (see [`NiftiFile::from_bytes_with_budget`]).
    pub fn from_bytes(raw: Vec<u8>) -> Result<NiftiFile, NiftiError> {
        NiftiFile::from_bytes_with_budget(raw, radveil_pixeldata::default_budget())
    }

    /// NIfTI-1 bytes, plain or gzip-compressed. A gzip stream is inflated only as far as
    /// its header needs: the header first, then the extensions and voxels it describes
    /// (checked arithmetic, at most 4 GiB, reserved from `budget` before they are
    /// allocated), and at most 1 MiB beyond; a stream that holds more is
    /// refused, never inflated to the end.
    pub fn from_bytes_with_budget(
        raw: Vec<u8>,
        budget: &MemoryBudget,
    ) -> Result<NiftiFile, NiftiError> {
        use std::io::Read;
        if !raw.starts_with(&[0x1F, 0x8B]) {
            return Ok(NiftiFile {
                bytes: raw,
                gz: false,
            });
        }
        let gzip = |e: std::io::Error| NiftiError::Unreadable(format!("gzip: {e}"));
        let mut stream = flate2::read::MultiGzDecoder::new(&raw[..]);
        let mut head = Vec::with_capacity(HEADER_LEN);
        (&mut stream)
            .take(HEADER_LEN as u64)
            .read_to_end(&mut head)
            .map_err(gzip)?;
        let header = NiftiHeader::from_reader(&head[..])
            .map_err(|e| NiftiError::Unreadable(e.to_string()))?;
        let needed = described_len(&header)?.max(HEADER_LEN);
        if needed > MAX_FILE {
            return Err(NiftiError::Unsupported(
                "larger than 4 GiB uncompressed".into(),
            ));
        }
        let limit = needed.saturating_add(MAX_TRAILING);
        let _grant = budget
            .reserve(limit as u64, DEFAULT_WAIT)
            .map_err(|e| NiftiError::Unsupported(e.to_string()))?;
        let mut out = Vec::new();
        out.try_reserve_exact(needed)
            .map_err(|_| NiftiError::Unsupported(format!("{needed} bytes cannot be allocated")))?;
        out.extend_from_slice(&head);
        stream
            .take((limit - head.len()) as u64 + 1)
            .read_to_end(&mut out)
            .map_err(gzip)?;
        if out.len() > limit {
            return Err(NiftiError::Unreadable(
                "the gzip stream holds more than its header describes".into(),
            ));
        }
        Ok(NiftiFile {
            bytes: out,
            gz: true,
        })
    }

    /// The volume (the first of a 4-D series) and the header, within the process-wide
    /// [`radveil_pixeldata::default_budget`].
    pub fn volume(&self) -> Result<(Volume, NiftiHeader), NiftiError> {
        parse(&self.bytes, radveil_pixeldata::default_budget())
    }

    /// [`NiftiFile::volume`], reserving the volume's values from `budget` while they are
    /// decoded (the returned volume is the caller's to account for).
    pub fn volume_with_budget(
        &self,
        budget: &MemoryBudget,
    ) -> Result<(Volume, NiftiHeader), NiftiError> {
        parse(&self.bytes, budget)
    }

    /// A copy of the file in which the voxels marked in `removed` (of the first 3-D volume,
    /// and likewise of every further volume of a 4-D series) hold their value in `values`
    /// (the new first volume, in the file's own units, before scaling). Everything else
    /// (header, extensions, other voxels) stays byte for byte. The copy is gzip-compressed
    /// when the file was.
    pub fn defaced(
        self,
        header: &NiftiHeader,
        removed: &[bool],
        values: &[f32],
    ) -> Result<Vec<u8>, NiftiError> {
        let NiftiFile { mut bytes, gz } = self;
        let size = (header.bitpix.max(8) / 8) as usize;
        let offset = header.vox_offset.max(0.0) as usize;
        let big = header.endianness == nifti::Endianness::Big;
        let unsupported = || NiftiError::Unsupported(format!("NIfTI datatype {}", header.datatype));
        if encode(0.0, header.datatype, big)
            .ok_or_else(unsupported)?
            .len()
            != size
        {
            return Err(NiftiError::Unsupported(
                "bitpix disagrees with the datatype".into(),
            ));
        }
        let per_volume = removed.len();
        let volumes = (bytes.len().saturating_sub(offset) / size / per_volume.max(1)).max(1);
        // Runs of voxels with one value are encoded once (defacing gives one fill value).
        let mut last: Option<(u32, Vec<u8>)> = None;
        for (i, _) in removed.iter().enumerate().filter(|(_, &r)| r) {
            let bits = values[i].to_bits();
            if !matches!(&last, Some((b, _)) if *b == bits) {
                let value = encode(values[i], header.datatype, big).ok_or_else(unsupported)?;
                last = Some((bits, value));
            }
            let Some((_, value)) = &last else { continue };
            for t in 0..volumes {
                let at = offset + (t * per_volume + i) * size;
                if let Some(slot) = bytes.get_mut(at..at + size) {
                    slot.copy_from_slice(value);
                }
            }
        }
        if gz {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(bytes.len() / 2),
                flate2::Compression::fast(),
            );
            enc.write_all(&bytes)
                .map_err(|e| NiftiError::Unreadable(format!("gzip: {e}")))?;
            enc.finish()
                .map_err(|e| NiftiError::Unreadable(format!("gzip: {e}")))
        } else {
            Ok(bytes)
        }
    }
}

/// Reads a NIfTI-1 file (`.nii`, or gzip-compressed) into a volume (the first volume of a
/// 4-D series).
pub fn read(path: &Path) -> Result<(Volume, NiftiHeader), NiftiError> {
    NiftiFile::open(path)?.volume()
}

/// Reads NIfTI-1 bytes (plain or gzip-compressed). The header is checked against the data
/// before anything is allocated for the volume, so a hostile header cannot exhaust memory.
pub fn read_bytes(raw: &[u8]) -> Result<(Volume, NiftiHeader), NiftiError> {
    read_bytes_with_budget(raw, radveil_pixeldata::default_budget())
}

/// [`read_bytes`] within `budget`: the inflated file and the volume's values are reserved
/// from it before they are allocated.
pub fn read_bytes_with_budget(
    raw: &[u8],
    budget: &MemoryBudget,
) -> Result<(Volume, NiftiHeader), NiftiError> {
    if raw.starts_with(&[0x1F, 0x8B]) {
        NiftiFile::from_bytes_with_budget(raw.to_vec(), budget)?.volume_with_budget(budget)
    } else {
        parse(raw, budget)
    }
}

/// Parses uncompressed NIfTI-1 bytes; the header is checked against the data first.
fn parse(bytes: &[u8], budget: &MemoryBudget) -> Result<(Volume, NiftiHeader), NiftiError> {
    let header =
        NiftiHeader::from_reader(bytes).map_err(|e| NiftiError::Unreadable(e.to_string()))?;
    let dim = header.dim;
    if dim[0] < 3 || dim[0] > 7 || dim[1] == 0 || dim[2] == 0 || dim[3] == 0 {
        return Err(NiftiError::Unsupported(format!(
            "a {}-D image of {}x{}x{} is not a volume",
            dim[0], dim[1], dim[2], dim[3]
        )));
    }
    let dims = [dim[1] as usize, dim[2] as usize, dim[3] as usize];
    let n = dims[0]
        .checked_mul(dims[1])
        .and_then(|v| v.checked_mul(dims[2]))
        .filter(|&n| n <= MAX_VOXELS)
        .ok_or_else(|| NiftiError::Unsupported("too many voxels".into()))?;
    let size = voxel_size(&header)?;
    let offset = header.vox_offset.max(0.0) as usize;
    if described_len(&header)? > bytes.len() {
        return Err(NiftiError::Unreadable(
            "the file is shorter than its header describes".into(),
        ));
    }
    let _values = budget
        .reserve((n as u64).saturating_mul(4), DEFAULT_WAIT)
        .map_err(|e| NiftiError::Unsupported(e.to_string()))?;
    // The first volume's voxels, decoded straight from the file's bytes (checked above to
    // hold them all).
    let raw = &bytes[offset..offset + n * size];
    let big = header.endianness == nifti::Endianness::Big;
    let data = decode_raw(raw, header.datatype, big)?;
    let affine = affine(&header);
    let v = Volume { dims, data, affine };
    if v.inverse().is_none() {
        return Err(NiftiError::Unsupported(
            "the voxel-to-world transform is singular".into(),
        ));
    }
    Ok((v, header))
}

/// Bytes of one voxel of a scalar datatype with its bit count.
fn voxel_size(header: &NiftiHeader) -> Result<usize, NiftiError> {
    Ok(match (header.datatype, header.bitpix) {
        (2 | 256, 8) => 1,
        (4 | 512, 16) => 2,
        (8 | 768 | 16, 32) => 4,
        (64 | 1024 | 1280, 64) => 8,
        (t, b) => {
            return Err(NiftiError::Unsupported(format!(
                "datatype {t} with {b} bits a voxel is not a scalar voxel type"
            )))
        }
    })
}

/// The bytes of a file with `header` up to its last voxel: the voxel offset plus every
/// voxel of every dimension (checked arithmetic; an error when it overflows, when the
/// offset is not a number, or for a header that is no scalar volume).
fn described_len(header: &NiftiHeader) -> Result<usize, NiftiError> {
    let dim = header.dim;
    if dim[0] < 1 || dim[0] > 7 {
        return Err(NiftiError::Unsupported(format!(
            "a {}-D image is not a volume",
            dim[0]
        )));
    }
    let all: usize = dim[1..=dim[0] as usize]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1) as usize))
        .ok_or_else(|| NiftiError::Unsupported("dimensions overflow".into()))?;
    if header.vox_offset.is_nan() {
        return Err(NiftiError::Unreadable(
            "the voxel offset is not a number".into(),
        ));
    }
    let offset = header.vox_offset.max(0.0) as usize;
    all.checked_mul(voxel_size(header)?)
        .and_then(|v| v.checked_add(offset))
        .ok_or_else(|| NiftiError::Unsupported("dimensions overflow".into()))
}

/// Voxel values of a NIfTI datatype code as `f32` (the scale slope is not applied: only
/// order matters for masks and renders).
fn decode_raw(raw: &[u8], datatype: i16, big: bool) -> Result<Vec<f32>, NiftiError> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {{
            let bytes = |c: &[u8]| -> [u8; $n] { c.try_into().unwrap_or([0; $n]) };
            let chunks = raw.chunks_exact($n);
            if big {
                chunks
                    .map(|c| <$t>::from_be_bytes(bytes(c)) as f32)
                    .collect()
            } else {
                chunks
                    .map(|c| <$t>::from_le_bytes(bytes(c)) as f32)
                    .collect()
            }
        }};
    }
    Ok(match datatype {
        2 => raw.iter().map(|&b| b as f32).collect(),
        256 => raw.iter().map(|&b| b as i8 as f32).collect(),
        4 => conv!(i16, 2),
        512 => conv!(u16, 2),
        8 => conv!(i32, 4),
        768 => conv!(u32, 4),
        16 => conv!(f32, 4),
        64 => conv!(f64, 8),
        1024 => conv!(i64, 8),
        1280 => conv!(u64, 8),
        other => {
            return Err(NiftiError::Unsupported(format!(
                "NIfTI datatype {other} is not a scalar voxel type"
            )))
        }
    })
}

/// The voxel-to-RAS+ affine of a header.
pub fn affine(h: &NiftiHeader) -> [[f64; 4]; 3] {
    let p = h.pixdim.map(|x| if x.is_finite() { x as f64 } else { 0.0 });
    let nonzero = |x: f64| if x == 0.0 { 1.0 } else { x };
    if h.sform_code > 0 {
        let r = |row: [f32; 4]| row.map(|x| x as f64);
        return [r(h.srow_x), r(h.srow_y), r(h.srow_z)];
    }
    if h.qform_code > 0 {
        let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - b * b - c * c,
            ],
        ];
        let qfac = if p[0] < 0.0 { -1.0 } else { 1.0 };
        let s = [
            nonzero(p[1].abs()),
            nonzero(p[2].abs()),
            nonzero(p[3].abs()) * qfac,
        ];
        let o = [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64];
        return [0, 1, 2].map(|row| [r[row][0] * s[0], r[row][1] * s[1], r[row][2] * s[2], o[row]]);
    }
    [
        [nonzero(p[1].abs()), 0.0, 0.0, 0.0],
        [0.0, nonzero(p[2].abs()), 0.0, 0.0],
        [0.0, 0.0, nonzero(p[3].abs()), 0.0],
    ]
}

/// A value in a NIfTI datatype's bytes.
fn encode(v: f32, datatype: i16, big: bool) -> Option<Vec<u8>> {
    macro_rules! enc {
        ($t:ty) => {{
            let x = v.round().clamp(<$t>::MIN as f32, <$t>::MAX as f32) as $t;
            Some(if big {
                x.to_be_bytes().to_vec()
            } else {
                x.to_le_bytes().to_vec()
            })
        }};
    }
    match datatype {
        2 => enc!(u8),
        256 => enc!(i8),
        4 => enc!(i16),
        512 => enc!(u16),
        8 => enc!(i32),
        768 => enc!(u32),
        1024 => enc!(i64),
        1280 => enc!(u64),
        16 => Some(if big {
            v.to_be_bytes().to_vec()
        } else {
            v.to_le_bytes().to_vec()
        }),
        64 => Some(if big {
            (v as f64).to_be_bytes().to_vec()
        } else {
            (v as f64).to_le_bytes().to_vec()
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A NIfTI-1 file of an 8 x 8 x 8 int16 volume (voxels 352 bytes in).
    fn nii() -> Vec<u8> {
        let mut h = vec![0u8; 352];
        h[0..4].copy_from_slice(&348i32.to_le_bytes());
        for (i, d) in [3i16, 8, 8, 8, 1, 1, 1, 1].iter().enumerate() {
            h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        h[70..72].copy_from_slice(&4i16.to_le_bytes());
        h[72..74].copy_from_slice(&16i16.to_le_bytes());
        for i in 0..8 {
            h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1f32.to_le_bytes());
        }
        h[108..112].copy_from_slice(&352f32.to_le_bytes());
        h[344..348].copy_from_slice(b"n+1\0");
        h.extend((0..512u16).flat_map(|v| (v % 7).to_le_bytes()));
        h
    }

    fn gz(parts: &[&[u8]], zeros: usize) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for p in parts {
            e.write_all(p).unwrap();
        }
        let chunk = vec![0u8; 1 << 20];
        let mut left = zeros;
        while left > 0 {
            let n = left.min(chunk.len());
            e.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        e.finish().unwrap()
    }

    #[test]
    fn a_gzip_stream_is_inflated_only_as_far_as_its_header_needs() {
        let plain = nii();
        let file = NiftiFile::from_bytes(gz(&[&plain], 0)).unwrap();
        assert_eq!(file.bytes, plain);
        assert_eq!(read_bytes(&gz(&[&plain], 0)).unwrap().0.dims, [8, 8, 8]);
        // A little trailing data is kept, byte for byte.
        let file = NiftiFile::from_bytes(gz(&[&plain], 100)).unwrap();
        assert_eq!(file.bytes.len(), plain.len() + 100);
        // 64 MiB past what the header describes: refused after at most 1 MiB more, where
        // the whole stream (up to 4 GiB) was inflated before.
        let bomb = gz(&[&plain], 64 << 20);
        let budget = MemoryBudget::new(4 << 20);
        assert!(matches!(
            NiftiFile::from_bytes_with_budget(bomb, &budget),
            Err(NiftiError::Unreadable(_))
        ));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn the_volume_is_decoded_within_the_budget() {
        let plain = nii();
        // 512 voxels as f32: 2 KiB.
        assert!(read_bytes_with_budget(&plain, &MemoryBudget::new(1 << 10)).is_err());
        let budget = MemoryBudget::new(4 << 10);
        assert_eq!(
            read_bytes_with_budget(&plain, &budget).unwrap().0.len(),
            512
        );
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_header_claiming_more_than_the_budget_is_refused_before_inflating() {
        let mut plain = nii();
        // 8 x 8 x 8 x 30000 x 30000 int16: 920 GB described.
        plain[40..42].copy_from_slice(&5i16.to_le_bytes());
        plain[48..50].copy_from_slice(&30000i16.to_le_bytes());
        plain[50..52].copy_from_slice(&30000i16.to_le_bytes());
        let r = NiftiFile::from_bytes_with_budget(gz(&[&plain], 0), &MemoryBudget::new(1 << 30));
        assert!(matches!(r, Err(NiftiError::Unsupported(_))), "{r:?}");
    }
}
