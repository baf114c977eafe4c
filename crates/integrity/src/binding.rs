//! The binding hash: a SHA-256 over an image's decoded pixels, its geometry and the identity
//! of its patient, study, series and instance, independent of the transfer syntax.
//!
//! A lossless transcode (deflate, RLE, a change of byte order or VR encoding) keeps it; any
//! pixel change, or moving the image to another patient or study, breaks it. A DICOM
//! signature covers the encoded bytes instead, which no transcode survives.
//!
//! Pixels are decoded by `radveil-pixeldata` (native pixel data, little and big endian,
//! planar or interleaved; RLE Lossless; JPEG, JPEG-LS and JPEG 2000), whose one checked
//! description of the image ([`radveil_pixeldata::ImagePixel`]) fixes how many bytes are
//! hashed: a description that does not match the bytes present (a Number of Frames whose
//! byte count overflows, frames that are missing or left out) is an error, never a hash
//! over fewer bytes. Sample values are cut to Bits Stored. Other syntaxes (MPEG, HEVC, JPEG
//! XL) are refused with [`BindingError::Unsupported`] rather than hashed in encoded form. A
//! lossy codestream binds the values this build's decoder produces; only lossless
//! transcodes of it are guaranteed to keep the hash.

use std::borrow::Cow;

use radveil_part10::{BudgetError, DataSet, Element, Encoding, MemoryBudget, Value};
use radveil_pixeldata::PixelError;
use radveil_standard::tags;
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
    /// Decoding the pixels would need more memory than the budget grants.
    #[error("pixel data: {0}")]
    Memory(BudgetError),
}

impl From<PixelError> for BindingError {
    fn from(e: PixelError) -> BindingError {
        match e {
            PixelError::Unsupported(ts) => BindingError::Unsupported(ts),
            PixelError::Malformed(why) => BindingError::Malformed(why),
            PixelError::Memory(e) => BindingError::Memory(e),
        }
    }
}

/// Identity attributes bound to the pixels.
const IDENTITY: [u32; 10] = [
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::MODALITY,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
];

/// Geometry attributes bound to the pixels (Planar Configuration is normalised away).
const GEOMETRY: [u32; 13] = [
    tags::SLICE_THICKNESS,
    tags::IMAGE_POSITION_PATIENT,
    tags::IMAGE_ORIENTATION_PATIENT,
    tags::SAMPLES_PER_PIXEL,
    tags::PHOTOMETRIC_INTERPRETATION,
    tags::NUMBER_OF_FRAMES,
    tags::ROWS,
    tags::COLUMNS,
    tags::PIXEL_SPACING,
    tags::BITS_ALLOCATED,
    tags::BITS_STORED,
    tags::HIGH_BIT,
    tags::PIXEL_REPRESENTATION,
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
/// (`enc` is how its values are encoded; a deflated data set must be given inflated),
/// decoding within the process-wide [`radveil_pixeldata::default_budget`].
pub fn binding_hash(
    ds: &DataSet<'_>,
    enc: Encoding,
    transfer_syntax: &str,
) -> Result<[u8; 32], BindingError> {
    binding_hash_with_budget(
        ds,
        enc,
        transfer_syntax,
        radveil_pixeldata::default_budget(),
    )
}

/// [`binding_hash`], reserving the memory for the decoded pixels from `budget` before
/// anything is allocated.
pub fn binding_hash_with_budget(
    ds: &DataSet<'_>,
    enc: Encoding,
    transfer_syntax: &str,
    budget: &MemoryBudget,
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
    let bits_allocated = ds.u16_value(tags::BITS_ALLOCATED, enc).unwrap_or(8) as u32;
    let bits_stored = ds
        .u16_value(tags::BITS_STORED, enc)
        .map_or(bits_allocated, |b| b as u32);
    // The pixels, frame by frame (one decoded frame in memory at a time): the length of
    // the whole goes first, as `put` writes it.
    let described = match ds.get(radveil_part10::PIXEL_DATA) {
        Some(_) => radveil_pixeldata::ImagePixel::from_dataset(ds, enc)?.native_len(),
        None => 0,
    };
    h.update(radveil_part10::PIXEL_DATA.to_be_bytes());
    h.update((described as u64).to_be_bytes());
    let mut hashed = 0usize;
    let mask_to = needs_mask(bits_allocated, bits_stored).then_some((bits_allocated, bits_stored));
    radveil_pixeldata::for_each_frame(ds, enc, transfer_syntax, budget, &mut |frame| {
        hashed = hashed.saturating_add(frame.len());
        match mask_to {
            None => h.update(frame),
            Some((allocated, stored)) => update_masked(&mut h, frame, allocated, stored),
        }
    })?;
    if hashed != described {
        return Err(BindingError::Malformed(format!(
            "{hashed} bytes of pixels decoded where {described} are described"
        )));
    }
    Ok(h.finalize().into())
}

/// Bytes of a frame cut to Bits Stored at a time: a fixed piece (even, so a 16-bit sample
/// never straddles two) that stays in the first-level cache between the cut and the hash,
/// where a copy of the whole frame went through memory three times and was reserved from
/// the budget while the decoder held the frame.
const MASK_CHUNK: usize = 8192;

/// Hashes `frame` cut to Bits Stored ([`mask`]), a piece at a time: the digest is that
/// of the whole frame masked.
fn update_masked(h: &mut Sha256, frame: &[u8], bits_allocated: u32, bits_stored: u32) {
    let mut buf = [0u8; MASK_CHUNK];
    for src in frame.chunks(MASK_CHUNK) {
        let piece = &mut buf[..src.len()];
        piece.copy_from_slice(src);
        mask(piece, bits_allocated, bits_stored);
        h.update(&*piece);
    }
}

fn needs_mask(bits_allocated: u32, bits_stored: u32) -> bool {
    (bits_allocated == 8 || bits_allocated == 16)
        && bits_stored != 0
        && bits_stored < bits_allocated
}

/// Sample values cut to Bits Stored: the bits above it (a sign extension, or old overlay
/// bits) are not image content, and codecs do not keep them.
fn mask(pixels: &mut [u8], bits_allocated: u32, bits_stored: u32) {
    if !needs_mask(bits_allocated, bits_stored) {
        return;
    }
    let mask = (1u32 << bits_stored) - 1;
    if bits_allocated == 8 {
        pixels.iter_mut().for_each(|b| *b &= mask as u8);
    } else {
        for c in pixels.chunks_exact_mut(2) {
            let v = u16::from_le_bytes([c[0], c[1]]) & mask as u16;
            c.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// The pixel data decoded to native little endian, samples interleaved, without padding
/// (see [`radveil_pixeldata::decode_pixel_data`], which this calls with the process-wide
/// default budget; the memory is no longer accounted once this returns).
pub fn decoded_pixels<'d>(
    ds: &'d DataSet<'_>,
    enc: Encoding,
    transfer_syntax: &str,
) -> Result<Cow<'d, [u8]>, BindingError> {
    let decoded = radveil_pixeldata::decode_pixel_data(
        ds,
        enc,
        transfer_syntax,
        radveil_pixeldata::default_budget(),
    )?;
    Ok(decoded.pixels)
}

#[cfg(test)]
mod tests {
    use radveil_part10::Vr;

    use super::*;

    fn image<'a>(frames: &str, pixels: &'a [u8]) -> DataSet<'a> {
        let mut ds = DataSet::default();
        let us = |v: u16| Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec()));
        for (tag, v) in [
            (tags::ROWS, 4u16),
            (tags::COLUMNS, 4),
            (tags::BITS_ALLOCATED, 16),
        ] {
            ds.put(Element {
                tag,
                vr: Vr::US,
                value: us(v),
            });
        }
        ds.put(Element::text(tags::SOP_INSTANCE_UID, Vr::UI, "1.2.3"));
        ds.put(Element::text(tags::NUMBER_OF_FRAMES, Vr::IS, frames));
        ds.put(Element {
            tag: radveil_part10::PIXEL_DATA,
            vr: Vr::OW,
            value: Value::Bytes(Cow::Borrowed(pixels)),
        });
        ds
    }

    const TS: &str = radveil_part10::EXPLICIT_VR_LITTLE_ENDIAN;

    #[test]
    fn a_number_of_frames_whose_byte_count_overflows_is_an_error_not_an_empty_hash() {
        let pixels = vec![9u8; 4 * 4 * 2 * 2];
        let good = image("2", &pixels);
        assert!(binding_hash(&good, Encoding::ExplicitLittle, TS).is_ok());
        // 4 × 4 × 2 bytes × 2^61 frames = 2^66: it wrapped to 0 bytes, and the hash covered
        // no pixel at all, so any pixel edit kept it.
        let mut edited = pixels.clone();
        edited[7] ^= 1;
        for frames in ["2305843009213693952", "9223372036854775808"] {
            let hostile = image(frames, &edited);
            assert!(
                binding_hash(&hostile, Encoding::ExplicitLittle, TS).is_err(),
                "{frames}"
            );
        }
    }

    #[test]
    fn pixel_bytes_the_description_leaves_out_are_an_error() {
        let pixels = vec![9u8; 4 * 4 * 2 * 2];
        // One frame described, two present: the second frame was not hashed.
        assert!(binding_hash(&image("1", &pixels), Encoding::ExplicitLittle, TS).is_err());
        // Fewer bytes than described.
        assert!(binding_hash(&image("3", &pixels), Encoding::ExplicitLittle, TS).is_err());
    }

    #[test]
    fn the_budget_bounds_the_decoded_pixels() {
        let pixels = vec![9u8; 4 * 4 * 2 * 2];
        let mut ds = image("2", &pixels);
        // Bits Stored 12: the masked copy needs 64 bytes.
        ds.put(Element {
            tag: tags::BITS_STORED,
            vr: Vr::US,
            value: Value::Bytes(Cow::Owned(12u16.to_le_bytes().to_vec())),
        });
        let small = MemoryBudget::new(16);
        assert!(matches!(
            binding_hash_with_budget(&ds, Encoding::ExplicitLittle, TS, &small),
            Err(BindingError::Memory(_))
        ));
        let enough = MemoryBudget::new(64);
        assert_eq!(
            binding_hash_with_budget(&ds, Encoding::ExplicitLittle, TS, &enough),
            binding_hash(&ds, Encoding::ExplicitLittle, TS)
        );
        assert_eq!(enough.in_use(), 0);
    }

    #[test]
    fn the_masked_copy_never_waits_for_memory_the_frame_holds() {
        // Planar RGB, Bits Stored 12: the frame is decoded into two copies (192 bytes, held
        // while it is hashed) and cut to Bits Stored a fixed piece at a time, taking nothing
        // more from the budget. A masked copy of the whole frame (96 bytes more) did not fit
        // a budget of 200 bytes: it waited 120 s for memory only this hash held, and later
        // failed for want of it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pixels = vec![9u8; 4 * 4 * 3 * 2];
            let mut ds = image("1", &pixels);
            for (tag, v) in [
                (tags::SAMPLES_PER_PIXEL, 3u16),
                (tags::PLANAR_CONFIGURATION, 1),
                (tags::BITS_STORED, 12),
            ] {
                ds.put(Element {
                    tag,
                    vr: Vr::US,
                    value: Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec())),
                });
            }
            let budget = MemoryBudget::new(200);
            let r = binding_hash_with_budget(&ds, Encoding::ExplicitLittle, TS, &budget);
            let whole = binding_hash(&ds, Encoding::ExplicitLittle, TS);
            let _ = tx.send((r.is_ok() && r == whole, budget.in_use()));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(got, Ok((true, 0)));
    }

    #[test]
    fn the_hash_of_masked_pixels_is_that_of_the_whole_frame_masked() {
        // Frames longer than a piece, of an odd length (the last byte is no whole sample
        // and stays as it is), for 16 and 8 bits allocated.
        for (allocated, stored, len) in [(16u32, 12u32, 3 * MASK_CHUNK + 7), (8, 5, MASK_CHUNK + 1)]
        {
            let frame: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8 ^ 0xF0).collect();
            let mut whole = frame.clone();
            mask(&mut whole, allocated, stored);
            assert_ne!(whole, frame);
            let mut h = Sha256::new();
            update_masked(&mut h, &frame, allocated, stored);
            assert_eq!(h.finalize()[..], Sha256::digest(&whole)[..]);
        }
    }
}
