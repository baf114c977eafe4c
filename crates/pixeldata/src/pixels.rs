//! Pixel data decoded to one layout, whatever the transfer syntax: native little endian,
//! samples interleaved by pixel, no padding.

use std::borrow::Cow;
use std::ops::Deref;

use radveil_part10::{DataSet, Encoding, Grant, MemoryBudget, Value, Vr, DEFAULT_WAIT};

use crate::codec::{self, Codec};
use crate::description::ImagePixel;
use crate::rle;
use crate::PixelError;

/// RLE Lossless.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Decoded pixel data, with the description it was decoded by and the memory it holds
/// reserved from the budget until it is dropped.
#[derive(Debug)]
pub struct DecodedPixels<'d, 'b> {
    /// The samples: native little endian, interleaved by pixel, frame after frame; for a
    /// bit-packed (1-bit) image, the packed bytes. Borrowed from the data set when nothing
    /// had to change.
    pub pixels: Cow<'d, [u8]>,
    /// The description the pixels were decoded by; `None` when the data set has no Pixel
    /// Data (and `pixels` is empty).
    pub description: Option<ImagePixel>,
    grant: Option<Grant<'b>>,
}

impl<'d, 'b> DecodedPixels<'d, 'b> {
    /// The pixels as an owned vector (a copy when they were borrowed), and the grant that
    /// accounts for their memory, for the caller to hold while it keeps them.
    pub fn into_owned(self) -> (Vec<u8>, Option<Grant<'b>>) {
        (self.pixels.into_owned(), self.grant)
    }

    /// The pixels as they are (borrowed or owned), and the grant that accounts for them.
    pub fn into_parts(self) -> (Cow<'d, [u8]>, Option<Grant<'b>>) {
        (self.pixels, self.grant)
    }
}

impl Deref for DecodedPixels<'_, '_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.pixels
    }
}

/// Decodes the Pixel Data of a top-level data set stored with `transfer_syntax` (`enc` is
/// how its values are encoded; a deflated data set must be given inflated) to native little
/// endian, samples interleaved by pixel, without padding. No Pixel Data gives no bytes.
///
/// The description ([`ImagePixel::from_dataset`]) must match the bytes present: native
/// Pixel Data exactly (one padding byte allowed), encapsulated Pixel Data one item at least
/// per frame. Memory for the decoded pixels is reserved from `budget` (waiting up to
/// [`DEFAULT_WAIT`]) before it is allocated, and held by the result. Decoded here: native
/// (little and big endian, planar or interleaved), RLE Lossless, and through [`codec`]
/// JPEG, JPEG-LS and JPEG 2000; other encapsulated syntaxes are
/// [`PixelError::Unsupported`].
pub fn decode_pixel_data<'d, 'b>(
    ds: &'d DataSet<'_>,
    enc: Encoding,
    transfer_syntax: &str,
    budget: &'b MemoryBudget,
) -> Result<DecodedPixels<'d, 'b>, PixelError> {
    let Some(el) = ds.get(radveil_part10::PIXEL_DATA) else {
        return Ok(DecodedPixels {
            pixels: Cow::Borrowed(&[]),
            description: None,
            grant: None,
        });
    };
    let d = ImagePixel::from_dataset(ds, enc)?;
    let spp = usize::from(d.samples_per_pixel);
    let bps = d.bytes_per_sample();
    let bit_packed = d.bits_allocated == 1;
    let planar = d.planar_configuration == 1 && spp > 1 && !bit_packed;
    let reserve = |bytes: usize| budget.reserve(bytes as u64, DEFAULT_WAIT);
    match &el.value {
        Value::Bytes(b) => {
            d.check_native_len(b.len())?;
            let v = &b[..d.native_len()];
            let swap = enc == Encoding::ExplicitBig && el.vr == Vr::OW && bps > 1;
            if !swap && !planar {
                return Ok(DecodedPixels {
                    pixels: Cow::Borrowed(v),
                    description: Some(d),
                    grant: None,
                });
            }
            // A copy (byte-swapped), and for planar frames a second one.
            let copies = if planar { 2 } else { 1 };
            let grant = reserve(v.len().saturating_mul(copies))?;
            let mut owned = crate::with_capacity(v.len())?;
            if swap {
                owned.extend(v.chunks(2).flat_map(|c| c.iter().rev().copied()));
            } else {
                owned.extend_from_slice(v);
            }
            if planar {
                owned = rle::interleave(owned, d.number_of_frames, d.pixels_per_frame(), spp, bps)?;
            }
            Ok(DecodedPixels {
                pixels: Cow::Owned(owned),
                description: Some(d),
                grant: Some(grant),
            })
        }
        Value::Fragments(frags) => {
            let rle = transfer_syntax == RLE_LOSSLESS;
            let codec = Codec::for_transfer_syntax(transfer_syntax);
            if !rle && codec.is_none() {
                return Err(PixelError::Unsupported(transfer_syntax.to_string()));
            }
            if bit_packed || (codec.is_some() && bps > 2) {
                return Err(PixelError::Malformed(format!(
                    "{}-bit samples in a compressed transfer syntax",
                    d.bits_allocated
                )));
            }
            let items: Vec<&[u8]> = frags.iter().skip(1).map(|f| f.as_ref()).collect();
            let offsets = frags.first().map_or(&[][..], |f| f.as_ref());
            // Checks the frame count against the items present before anything else.
            let frame_data = codec::frames(&items, offsets, d.number_of_frames)?;
            let total = d.native_len();
            // RLE decodes colour by plane: a second copy to interleave.
            let copies = if rle && spp > 1 { 2 } else { 1 };
            let grant = reserve(total.saturating_mul(copies))?;
            let mut out = crate::with_capacity::<u8>(total)?;
            match codec {
                None => {
                    for f in &frame_data {
                        out.extend(rle::rle_frame(f, d.pixels_per_frame(), spp, bps)?);
                    }
                    out = rle::interleave(out, d.number_of_frames, d.pixels_per_frame(), spp, bps)?;
                }
                Some(codec) => {
                    let expect = (usize::from(d.columns), usize::from(d.rows), spp);
                    for f in &frame_data {
                        let frame = codec::decode(codec, f, expect, budget)?;
                        for v in frame.samples {
                            out.extend_from_slice(&v.to_le_bytes()[..bps]);
                        }
                    }
                }
            }
            if out.len() != total {
                return Err(PixelError::Malformed(format!(
                    "the frames decode to {} bytes where {total} are described",
                    out.len()
                )));
            }
            Ok(DecodedPixels {
                pixels: Cow::Owned(out),
                description: Some(d),
                grant: Some(grant),
            })
        }
        Value::Sequence(_) => Err(PixelError::Malformed("pixel data is a sequence".into())),
    }
}

#[cfg(test)]
mod tests {
    use radveil_part10::{Element, Value, Vr};

    use super::*;

    fn image<'a>(rows: u16, cols: u16, frames: &str, pixels: Value<'a>) -> DataSet<'a> {
        let mut ds = DataSet::default();
        let us = |v: u16| Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec()));
        for (tag, v) in [
            (0x0028_0010u32, rows),
            (0x0028_0011, cols),
            (0x0028_0100, 16),
        ] {
            ds.put(Element {
                tag,
                vr: Vr::US,
                value: us(v),
            });
        }
        ds.put(Element::text(0x0028_0008, Vr::IS, frames));
        ds.put(Element {
            tag: radveil_part10::PIXEL_DATA,
            vr: Vr::OW,
            value: pixels,
        });
        ds
    }

    const EXPLICIT: &str = radveil_part10::EXPLICIT_VR_LITTLE_ENDIAN;

    #[test]
    fn native_pixels_must_match_their_description_exactly() {
        let budget = MemoryBudget::new(1 << 20);
        let bytes = vec![7u8; 2 * 4 * 4 * 2];
        let ok = image(4, 4, "2", Value::Bytes(Cow::Borrowed(&bytes)));
        let d = decode_pixel_data(&ok, Encoding::ExplicitLittle, EXPLICIT, &budget).unwrap();
        assert_eq!(d.len(), bytes.len());
        // One frame described, two present: the second would not be covered.
        let more = image(4, 4, "1", Value::Bytes(Cow::Borrowed(&bytes)));
        assert!(decode_pixel_data(&more, Encoding::ExplicitLittle, EXPLICIT, &budget).is_err());
        // 2^61 frames: the byte count overflowed to 0 and the pixels were hashed as none.
        let hostile = image(
            4,
            4,
            "2305843009213693952",
            Value::Bytes(Cow::Borrowed(&bytes)),
        );
        assert!(decode_pixel_data(&hostile, Encoding::ExplicitLittle, EXPLICIT, &budget).is_err());
    }

    #[test]
    fn encapsulated_frames_are_checked_against_items_and_budget() {
        let budget = MemoryBudget::new(1 << 18);
        let item: &[u8] = &[0xFF, 0xD8, 0xFF, 0xD9];
        let frags = || Value::Fragments(vec![Cow::Borrowed(&[][..]), Cow::Borrowed(item)]);
        // 2^63 frames in one item.
        let ds = image(512, 512, "9223372036854775808", frags());
        let e = decode_pixel_data(
            &ds,
            Encoding::ExplicitLittle,
            "1.2.840.10008.1.2.4.80",
            &budget,
        );
        assert!(matches!(e, Err(PixelError::Malformed(_))), "{e:?}");
        // One frame of 512 x 512 x 2 bytes: more than this budget, refused before decoding.
        let ds = image(512, 512, "1", frags());
        let e = decode_pixel_data(
            &ds,
            Encoding::ExplicitLittle,
            "1.2.840.10008.1.2.4.80",
            &budget,
        );
        assert!(matches!(e, Err(PixelError::Memory(_))), "{e:?}");
        assert_eq!(budget.in_use(), 0);
    }
}
