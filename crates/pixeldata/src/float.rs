//! Float Pixel Data (7FE0,0008) and Double Float Pixel Data (7FE0,0009): the Floating Point
//! Image Pixel module (PS3.3 C.7.6.24, C.7.6.25) of parametric maps and other images whose
//! values are IEEE 754 numbers rather than integers.
//!
//! Such pixel data is always native (no compressed transfer syntax carries it): one sample
//! per pixel, 32-bit (OF) or 64-bit (OD) values, frame after frame. A frame is handed out
//! as its exact bytes in little endian, as WADO-RS frames send them (PS3.18 §8.7.3.3.2:
//! `application/octet-stream` is little endian), whatever the byte order it was stored in.
//!
//! The integer Pixel Data (7FE0,0010) readers ([`crate::decode_frame`] and the rest) are
//! not changed by this: a data set's float pixel data is read only here.

use radveil_part10::{DataSet, Element, Encoding, Grant, MemoryBudget, Value, DEFAULT_WAIT};
use radveil_standard::tags;

use crate::description::ImagePixel;
use crate::PixelError;

/// Which float pixel data an image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatKind {
    /// Float Pixel Data (7FE0,0008), OF: 32-bit IEEE 754 values.
    Float,
    /// Double Float Pixel Data (7FE0,0009), OD: 64-bit IEEE 754 values.
    Double,
}

impl FloatKind {
    /// The element's tag.
    pub fn tag(self) -> u32 {
        match self {
            FloatKind::Float => tags::FLOAT_PIXEL_DATA,
            FloatKind::Double => tags::DOUBLE_FLOAT_PIXEL_DATA,
        }
    }

    /// Bytes of one value.
    pub fn bytes(self) -> usize {
        match self {
            FloatKind::Float => 4,
            FloatKind::Double => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FloatKind::Float => "Float Pixel Data (7FE0,0008)",
            FloatKind::Double => "Double Float Pixel Data (7FE0,0009)",
        }
    }

    /// Reads one little-endian value of this kind from `c` (exactly [`FloatKind::bytes`]
    /// long; other lengths give NaN).
    pub fn value(self, c: &[u8]) -> f64 {
        match self {
            FloatKind::Float => {
                <[u8; 4]>::try_from(c).map_or(f64::NAN, |b| f64::from(f32::from_le_bytes(b)))
            }
            FloatKind::Double => <[u8; 8]>::try_from(c).map_or(f64::NAN, f64::from_le_bytes),
        }
    }
}

/// The float pixel data of a top-level data set, when it has some (and no integer Pixel
/// Data, which is read first wherever both are present).
pub fn float_pixel_data<'d, 'a>(ds: &'d DataSet<'a>) -> Option<(FloatKind, &'d Element<'a>)> {
    if ds.get(radveil_part10::PIXEL_DATA).is_some() {
        return None;
    }
    [FloatKind::Float, FloatKind::Double]
        .into_iter()
        .find_map(|k| ds.get(k.tag()).map(|e| (k, e)))
}

/// The description of a float image, checked against the Floating Point Image Pixel module
/// and against the bytes present: Bits Allocated 32 (OF) or 64 (OD) (the size of the values
/// when absent), one sample per pixel, and exactly Rows × Columns × Number of Frames values.
pub fn describe_float(
    ds: &DataSet<'_>,
    enc: Encoding,
) -> Result<(FloatKind, ImagePixel), PixelError> {
    let (kind, el) =
        float_pixel_data(ds).ok_or_else(|| PixelError::Malformed("no float pixel data".into()))?;
    let bits = u16::try_from(kind.bytes().saturating_mul(8)).unwrap_or(u16::MAX);
    match ds.u16_value(tags::BITS_ALLOCATED, enc) {
        None => {}
        Some(b) if b == bits => {}
        Some(b) => {
            return Err(PixelError::Malformed(format!(
                "Bits Allocated (0028,0100) is {b} where {} holds {bits}-bit values",
                kind.name()
            )))
        }
    }
    let mut d = ImagePixel::from_dataset(ds, enc)?;
    if d.bits_allocated != bits {
        // Absent: the values' own size (PS3.3 C.7.6.24 requires it to be this).
        d = ImagePixel::with_bits(d, bits)?;
    }
    if d.samples_per_pixel != 1 {
        return Err(PixelError::Unsupported(format!(
            "{} with {} samples per pixel (PS3.3 C.7.6.24 has one)",
            kind.name(),
            d.samples_per_pixel
        )));
    }
    let Value::Bytes(b) = &el.value else {
        return Err(PixelError::Malformed(format!(
            "{} is not a native value",
            kind.name()
        )));
    };
    if b.len() != d.native_len() {
        return Err(PixelError::Malformed(format!(
            "{} holds {} bytes but Rows × Columns × frames describe {}",
            kind.name(),
            b.len(),
            d.native_len()
        )));
    }
    Ok((kind, d))
}

/// Frame `index` (from 0) of the float pixel data of a top-level data set (`enc` is how its
/// values are encoded): its bytes in little endian, with the description and the kind. The
/// frame's bytes are reserved from `budget` first (waiting up to [`DEFAULT_WAIT`]) and held
/// by the returned [`Grant`].
pub fn decode_float_frame<'b>(
    ds: &DataSet<'_>,
    enc: Encoding,
    index: usize,
    budget: &'b MemoryBudget,
) -> Result<(FloatKind, ImagePixel, Vec<u8>, Grant<'b>), PixelError> {
    let (kind, d) = describe_float(ds, enc)?;
    if index >= d.number_of_frames {
        return Err(PixelError::Malformed(format!(
            "frame {} of {} frames",
            index.saturating_add(1),
            d.number_of_frames
        )));
    }
    let b = float_pixel_data(ds)
        .and_then(|(_, el)| el.bytes())
        .ok_or_else(|| PixelError::Malformed("no float pixel data".into()))?;
    let frame_len = d.frame_len();
    let grant = budget.reserve(frame_len as u64, DEFAULT_WAIT)?;
    let src = index
        .checked_mul(frame_len)
        .and_then(|start| b.get(start..start.checked_add(frame_len)?))
        .ok_or_else(|| PixelError::Malformed("frame beyond the pixel data".into()))?;
    let mut out = crate::with_capacity::<u8>(frame_len)?;
    if enc == Encoding::ExplicitBig {
        out.extend(
            src.chunks_exact(kind.bytes())
                .flat_map(|c| c.iter().rev().copied()),
        );
    } else {
        out.extend_from_slice(src);
    }
    Ok((kind, d, out, grant))
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use std::borrow::Cow;

    use radveil_part10::{Element, Vr};

    use super::*;

    fn us(tag: u32, v: u16, big: bool) -> Element<'static> {
        let b = if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        Element {
            tag,
            vr: Vr::US,
            value: Value::Bytes(Cow::Owned(b.to_vec())),
        }
    }

    fn image(kind: FloatKind, values: &[f64], frames: &str, big: bool) -> DataSet<'static> {
        let mut bytes = Vec::new();
        for v in values {
            match (kind, big) {
                (FloatKind::Float, false) => bytes.extend((*v as f32).to_le_bytes()),
                (FloatKind::Float, true) => bytes.extend((*v as f32).to_be_bytes()),
                (FloatKind::Double, false) => bytes.extend(v.to_le_bytes()),
                (FloatKind::Double, true) => bytes.extend(v.to_be_bytes()),
            }
        }
        let mut ds = DataSet::default();
        ds.elements.push(us(tags::ROWS, 2, big));
        ds.elements.push(us(tags::COLUMNS, 3, big));
        ds.elements
            .push(us(tags::BITS_ALLOCATED, (kind.bytes() * 8) as u16, big));
        ds.elements.push(Element {
            tag: tags::NUMBER_OF_FRAMES,
            vr: Vr::IS,
            value: Value::Bytes(Cow::Owned(frames.as_bytes().to_vec())),
        });
        ds.elements.push(Element {
            tag: kind.tag(),
            vr: if kind == FloatKind::Float {
                Vr::OF
            } else {
                Vr::OD
            },
            value: Value::Bytes(Cow::Owned(bytes)),
        });
        ds
    }

    fn values(kind: FloatKind, frame: &[u8]) -> Vec<f64> {
        frame
            .chunks_exact(kind.bytes())
            .map(|c| kind.value(c))
            .collect()
    }

    #[test]
    fn frames_are_the_exact_values_in_little_endian() {
        let v: Vec<f64> = (0..12).map(|i| f64::from(i) * -1.25 + 0.5).collect();
        for kind in [FloatKind::Float, FloatKind::Double] {
            for (big, enc) in [
                (false, Encoding::ExplicitLittle),
                (true, Encoding::ExplicitBig),
            ] {
                let ds = image(kind, &v, "2", big);
                let budget = MemoryBudget::new(1 << 20);
                for f in 0..2 {
                    let (k, d, frame, _g) = decode_float_frame(&ds, enc, f, &budget).unwrap();
                    assert_eq!(k, kind);
                    assert_eq!(d.number_of_frames, 2);
                    assert_eq!(frame.len(), 6 * kind.bytes());
                    assert_eq!(values(kind, &frame), v[f * 6..f * 6 + 6], "{kind:?} {big}");
                }
                assert!(decode_float_frame(&ds, enc, 2, &budget).is_err());
            }
        }
    }

    #[test]
    fn descriptions_must_match_the_values() {
        let v = [0.0; 12];
        let budget = MemoryBudget::new(1 << 20);
        let enc = Encoding::ExplicitLittle;
        // Three frames described, two present.
        let ds = image(FloatKind::Float, &v, "3", false);
        assert!(matches!(
            decode_float_frame(&ds, enc, 0, &budget),
            Err(PixelError::Malformed(_))
        ));
        // 64-bit values under Bits Allocated 32.
        let mut ds = image(FloatKind::Double, &v, "2", false);
        ds.get_mut(tags::BITS_ALLOCATED).unwrap().value =
            Value::Bytes(Cow::Owned(32u16.to_le_bytes().to_vec()));
        assert!(decode_float_frame(&ds, enc, 0, &budget).is_err());
        // Bits Allocated absent: the values' size.
        ds.elements.retain(|e| e.tag != tags::BITS_ALLOCATED);
        assert!(decode_float_frame(&ds, enc, 0, &budget).is_ok());
        // A frame larger than the budget is refused before it is allocated.
        let tiny = MemoryBudget::new(8);
        assert!(matches!(
            decode_float_frame(&ds, enc, 0, &tiny),
            Err(PixelError::Memory(_))
        ));
        // Integer Pixel Data present: the float element is not the image's pixel data.
        ds.elements.push(Element {
            tag: radveil_part10::PIXEL_DATA,
            vr: Vr::OW,
            value: Value::Bytes(Cow::Owned(vec![0; 12])),
        });
        assert!(float_pixel_data(&ds).is_none());
    }
}
