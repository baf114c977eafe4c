//! The binding hash: a SHA-256 over an image's decoded pixels, its geometry and the identity
//! of its patient, study, series and instance, independent of the transfer syntax.
//!
//! A lossless transcode (deflate, RLE, a change of byte order or VR encoding) keeps it; any
//! pixel change, or moving the image to another patient or study, breaks it. A DICOM
//! signature covers the encoded bytes instead, which no transcode survives.
//!
//! Decoded here: native pixel data (little and big endian, planar or interleaved), RLE
//! Lossless, and through [`crate::codec`] JPEG, JPEG-LS and JPEG 2000. Sample values are cut
//! to Bits Stored. Other syntaxes (MPEG, HEVC, JPEG XL) are refused with
//! [`BindingError::Unsupported`] rather than hashed in encoded form. A lossy codestream
//! binds the values this build's decoder produces; only lossless transcodes of it are
//! guaranteed to keep the hash.

use std::borrow::Cow;

use radveil_part10::{DataSet, Element, Encoding, Value, Vr};
use sha2::{Digest, Sha256};

/// Why no binding hash could be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// Pixel data in a transfer syntax this build cannot decode.
    #[error("pixel data in transfer syntax {0} cannot be decoded here")]
    Unsupported(String),
    /// Pixel data that does not match its description.
    #[error("pixel data: {0}")]
    Malformed(String),
}

/// Identity attributes bound to the pixels.
const IDENTITY: [u32; 10] = [
    0x0008_0016, // SOP Class UID
    0x0008_0018, // SOP Instance UID
    0x0008_0060, // Modality
    0x0010_0010, // Patient's Name
    0x0010_0020, // Patient ID
    0x0010_0021, // Issuer of Patient ID
    0x0010_0030, // Patient's Birth Date
    0x0010_0040, // Patient's Sex
    0x0020_000D, // Study Instance UID
    0x0020_000E, // Series Instance UID
];

/// Geometry attributes bound to the pixels (Planar Configuration is normalised away).
const GEOMETRY: [u32; 13] = [
    0x0018_0050, // Slice Thickness
    0x0020_0032, // Image Position (Patient)
    0x0020_0037, // Image Orientation (Patient)
    0x0028_0002, // Samples per Pixel
    0x0028_0004, // Photometric Interpretation
    0x0028_0008, // Number of Frames
    0x0028_0010, // Rows
    0x0028_0011, // Columns
    0x0028_0030, // Pixel Spacing
    0x0028_0100, // Bits Allocated
    0x0028_0101, // Bits Stored
    0x0028_0102, // High Bit
    0x0028_0103, // Pixel Representation
];

/// A value in a transfer-syntax-independent form: text trimmed, binary little endian.
fn canonical(el: &Element<'_>, enc: Encoding) -> Vec<u8> {
    match &el.value {
        Value::Bytes(b) if el.vr.is_text() => radveil_part10::trim_text(b).to_vec(),
        Value::Bytes(b) => {
            let unit = el.vr.swap_unit();
            if enc == Encoding::ExplicitBig && unit > 1 {
                b.chunks(unit)
                    .flat_map(|c| c.iter().rev().copied())
                    .collect()
            } else {
                b.to_vec()
            }
        }
        _ => Vec::new(),
    }
}

fn put(h: &mut Sha256, tag: u32, value: &[u8]) {
    h.update(tag.to_be_bytes());
    h.update((value.len() as u64).to_be_bytes());
    h.update(value);
}

/// Computes the binding hash of a top-level data set stored with `transfer_syntax`
/// (`enc` is how its values are encoded; a deflated data set must be given inflated).
pub fn binding_hash(
    ds: &DataSet<'_>,
    enc: Encoding,
    transfer_syntax: &str,
) -> Result<[u8; 32], BindingError> {
    let mut h = Sha256::new();
    h.update(b"radveil-binding-v2\0");
    for tag in IDENTITY.iter().chain(GEOMETRY.iter()) {
        if let Some(el) = ds.get(*tag) {
            put(&mut h, *tag, &canonical(el, enc));
        } else {
            put(&mut h, *tag, b"\xFF<absent>");
        }
    }
    let pixels = decoded_pixels(ds, enc, transfer_syntax)?;
    let bits_allocated = ds.u16_value(0x0028_0100, enc).unwrap_or(8) as u32;
    let bits_stored = ds
        .u16_value(0x0028_0101, enc)
        .map_or(bits_allocated, |b| b as u32);
    put(
        &mut h,
        radveil_part10::PIXEL_DATA,
        &masked(pixels, bits_allocated, bits_stored),
    );
    Ok(h.finalize().into())
}

/// Sample values cut to Bits Stored: the bits above it (a sign extension, or old overlay
/// bits) are not image content, and codecs do not keep them.
fn masked(pixels: Cow<'_, [u8]>, bits_allocated: u32, bits_stored: u32) -> Cow<'_, [u8]> {
    if !(bits_allocated == 8 || bits_allocated == 16)
        || bits_stored == 0
        || bits_stored >= bits_allocated
    {
        return pixels;
    }
    let mask = (1u32 << bits_stored) - 1;
    let mut out = pixels.into_owned();
    if bits_allocated == 8 {
        out.iter_mut().for_each(|b| *b &= mask as u8);
    } else {
        for c in out.chunks_exact_mut(2) {
            let v = u16::from_le_bytes([c[0], c[1]]) & mask as u16;
            c.copy_from_slice(&v.to_le_bytes());
        }
    }
    Cow::Owned(out)
}

/// The pixel data decoded to native little endian, samples interleaved, without padding.
pub fn decoded_pixels<'d>(
    ds: &'d DataSet<'_>,
    enc: Encoding,
    transfer_syntax: &str,
) -> Result<Cow<'d, [u8]>, BindingError> {
    let Some(el) = ds.get(radveil_part10::PIXEL_DATA) else {
        return Ok(Cow::Borrowed(&[]));
    };
    let rows = ds.u16_value(0x0028_0010, enc).unwrap_or(0) as usize;
    let cols = ds.u16_value(0x0028_0011, enc).unwrap_or(0) as usize;
    let spp = ds.u16_value(0x0028_0002, enc).unwrap_or(1).max(1) as usize;
    let bits = ds.u16_value(0x0028_0100, enc).unwrap_or(8) as usize;
    let planar = ds.u16_value(0x0028_0006, enc).unwrap_or(0) == 1;
    let frames = ds
        .string(0x0028_0008)
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let pixels_per_frame = rows * cols;
    let (frame_len, bytes_per_sample) = if bits == 1 {
        ((pixels_per_frame * spp).div_ceil(8), 1)
    } else {
        let b = bits.div_ceil(8);
        (pixels_per_frame * spp * b, b)
    };
    let total = frame_len * frames;
    let native: Cow<'d, [u8]> = match &el.value {
        Value::Bytes(b) => {
            if b.len() < total {
                return Err(BindingError::Malformed(format!(
                    "{} bytes where {total} are described",
                    b.len()
                )));
            }
            let v = &b[..total];
            if enc == Encoding::ExplicitBig && el.vr == Vr::OW && bytes_per_sample > 1 {
                Cow::Owned(v.chunks(2).flat_map(|c| c.iter().rev().copied()).collect())
            } else {
                Cow::Borrowed(v)
            }
        }
        Value::Fragments(frags) => {
            let rle = transfer_syntax == "1.2.840.10008.1.2.5";
            let codec = crate::codec::Codec::for_transfer_syntax(transfer_syntax);
            if !rle && codec.is_none() {
                return Err(BindingError::Unsupported(transfer_syntax.to_string()));
            }
            let items: Vec<&[u8]> = frags.iter().skip(1).map(|f| f.as_ref()).collect();
            let offsets = frags.first().map_or(&[][..], |f| f.as_ref());
            let frame_data = crate::codec::frames(&items, offsets, frames)?;
            let mut out = Vec::with_capacity(total);
            let Some(codec) = codec else {
                for f in &frame_data {
                    out.extend(rle_frame(f, pixels_per_frame, spp, bytes_per_sample)?);
                }
                // RLE decodes colour by plane.
                return Ok(Cow::Owned(interleave(
                    out,
                    frames,
                    pixels_per_frame,
                    spp,
                    bytes_per_sample,
                    true,
                )));
            };
            if bytes_per_sample > 2 || bits == 1 {
                return Err(BindingError::Malformed(format!(
                    "{bits}-bit samples in a compressed transfer syntax"
                )));
            }
            for f in &frame_data {
                let frame = crate::codec::decode(codec, f, (cols, rows, spp))?;
                for v in frame.samples {
                    out.extend_from_slice(&v.to_le_bytes()[..bytes_per_sample]);
                }
            }
            return Ok(Cow::Owned(out));
        }
        Value::Sequence(_) => {
            return Err(BindingError::Malformed("pixel data is a sequence".into()))
        }
    };
    if spp > 1 && bits != 1 && planar {
        return Ok(Cow::Owned(interleave(
            native.into_owned(),
            frames,
            pixels_per_frame,
            spp,
            bytes_per_sample,
            true,
        )));
    }
    Ok(native)
}

/// Converts colour-by-plane frames to colour-by-pixel (when `planar`).
fn interleave(
    data: Vec<u8>,
    frames: usize,
    pixels: usize,
    spp: usize,
    bps: usize,
    planar: bool,
) -> Vec<u8> {
    if !planar || spp == 1 {
        return data;
    }
    let frame_len = pixels * spp * bps;
    let mut out = vec![0u8; data.len()];
    for f in 0..frames {
        let src = &data[f * frame_len..((f + 1) * frame_len).min(data.len())];
        let dst = &mut out[f * frame_len..((f + 1) * frame_len).min(data.len())];
        for s in 0..spp {
            for p in 0..pixels {
                let from = (s * pixels + p) * bps;
                let to = (p * spp + s) * bps;
                if from + bps <= src.len() && to + bps <= dst.len() {
                    dst[to..to + bps].copy_from_slice(&src[from..from + bps]);
                }
            }
        }
    }
    out
}

/// Decodes one RLE Lossless frame (PS3.5 Annex G) to colour-by-plane, little-endian samples.
fn rle_frame(frame: &[u8], pixels: usize, spp: usize, bps: usize) -> Result<Vec<u8>, BindingError> {
    if frame.len() < 64 {
        return Err(BindingError::Malformed(
            "RLE header shorter than 64 bytes".into(),
        ));
    }
    let word = |i: usize| {
        u32::from_le_bytes([
            frame[4 * i],
            frame[4 * i + 1],
            frame[4 * i + 2],
            frame[4 * i + 3],
        ]) as usize
    };
    let segments = word(0);
    if segments != spp * bps || segments > 15 {
        return Err(BindingError::Malformed(format!(
            "{segments} RLE segments for {spp} samples of {bps} bytes"
        )));
    }
    let mut out = vec![0u8; pixels * spp * bps];
    for seg in 0..segments {
        let start = word(seg + 1);
        let end = if seg + 1 < segments {
            word(seg + 2)
        } else {
            frame.len()
        };
        if start < 64 || start > end || end > frame.len() {
            return Err(BindingError::Malformed(
                "RLE segment offsets out of range".into(),
            ));
        }
        let decoded = packbits(&frame[start..end], pixels)?;
        // Segment order: for each sample, its bytes from most to least significant.
        let (sample, byte_from_msb) = (seg / bps, seg % bps);
        let byte_le = bps - 1 - byte_from_msb;
        for (p, v) in decoded.iter().enumerate() {
            out[(sample * pixels + p) * bps + byte_le] = *v;
        }
    }
    Ok(out)
}

/// PackBits as used by DICOM RLE: decodes up to `len` bytes.
fn packbits(src: &[u8], len: usize) -> Result<Vec<u8>, BindingError> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while i < src.len() && out.len() < len {
        let n = src[i] as i8;
        i += 1;
        if n >= 0 {
            let count = n as usize + 1;
            let end = (i + count).min(src.len());
            out.extend_from_slice(&src[i..end]);
            i = end;
        } else if n != -128 {
            let count = (1 - n as isize) as usize;
            let Some(&v) = src.get(i) else { break };
            out.extend(std::iter::repeat_n(v, count));
            i += 1;
        }
    }
    if out.len() < len {
        return Err(BindingError::Malformed(
            "RLE segment decodes to too few bytes".into(),
        ));
    }
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_literals_and_runs() {
        // 2 literals, then a run of 3 'z'.
        assert_eq!(packbits(&[1, b'a', b'b', 0xFE, b'z'], 5).unwrap(), b"abzzz");
        assert!(packbits(&[0x00, b'a'], 2).is_err());
    }

    #[test]
    fn planar_frames_are_interleaved() {
        // 2 pixels, RGB, planar: RR GG BB -> RGB RGB
        let planar = vec![1, 2, 3, 4, 5, 6];
        assert_eq!(interleave(planar, 1, 2, 3, 1, true), vec![1, 3, 5, 2, 4, 6]);
    }
}
