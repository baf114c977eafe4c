//! Pixel data decoded to one layout, whatever the transfer syntax: native little endian,
//! samples interleaved by pixel, no padding.

use std::borrow::Cow;
use std::ops::Deref;
use std::time::Duration;

use radveil_part10::{
    BudgetError, DataSet, Encoding, Grant, MemoryBudget, Value, Vr, DEFAULT_WAIT,
};

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
/// [`DEFAULT_WAIT`]) before it is allocated, and held by the result; the working memory of
/// a frame is then taken only if it is free at once (a decoder holding memory never waits
/// for more: it could be waiting for itself, or for workers who wait for it). Decoded here: native
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
    if let Value::Bytes(b) = &el.value {
        d.check_native_len(b.len())?;
        if !needs_copy(&d, el.vr, enc) {
            return Ok(DecodedPixels {
                pixels: Cow::Borrowed(&b[..d.native_len()]),
                description: Some(d),
                grant: None,
            });
        }
    }
    let total = d.native_len();
    let grant = budget.reserve(total as u64, DEFAULT_WAIT)?;
    let mut out = crate::with_capacity::<u8>(total)?;
    frames_of(
        el,
        enc,
        &d,
        transfer_syntax,
        budget,
        Duration::ZERO,
        &mut |f| out.extend_from_slice(f),
    )?;
    Ok(DecodedPixels {
        pixels: Cow::Owned(out),
        description: Some(d),
        grant: Some(grant),
    })
}

/// [`decode_pixel_data`] one frame at a time: calls `each` with the decoded bytes of each
/// frame in order (for a bit-packed image, once with all of them), so that only one frame
/// is held in memory (and reserved from `budget`) at a time. Returns the description, or
/// `None` when the data set has no Pixel Data (and `each` is not called). What `each` was
/// given adds up to [`ImagePixel::native_len`] bytes when this returns `Ok`. `each` runs
/// while the frame's memory is held: memory it takes from `budget` must be taken without
/// waiting (`try_reserve`), or it could wait for itself.
///
/// An image whose decoded size exceeds the whole budget is refused before anything is
/// decoded, although only a frame would be held: no reader of this run could hold it, and
/// decoding it would be work out of all proportion to a small codestream that claims it.
pub fn for_each_frame(
    ds: &DataSet<'_>,
    enc: Encoding,
    transfer_syntax: &str,
    budget: &MemoryBudget,
    each: &mut dyn FnMut(&[u8]),
) -> Result<Option<ImagePixel>, PixelError> {
    let Some(el) = ds.get(radveil_part10::PIXEL_DATA) else {
        return Ok(None);
    };
    let d = ImagePixel::from_dataset(ds, enc)?;
    let total = d.native_len() as u64;
    if total > budget.limit() {
        return Err(PixelError::Memory(BudgetError::TooLarge {
            requested: total,
            limit: budget.limit(),
        }));
    }
    frames_of(el, enc, &d, transfer_syntax, budget, DEFAULT_WAIT, each)?;
    Ok(Some(d))
}

/// One frame (`index`, from 0) of the Pixel Data of a top-level data set, decoded like
/// [`decode_pixel_data`] (native little endian, samples interleaved by pixel), without
/// decoding or copying the other frames: what a WADO-RS frame or rendered request needs of
/// a multi-frame image. Only the frame's bytes are reserved from `budget`, and held by the
/// returned [`Grant`] until the caller drops it (with the frame). A frame number
/// beyond Number of Frames is [`PixelError::Malformed`]; bit-packed (1-bit) images of more
/// than one frame are [`PixelError::Unsupported`] (their frames do not start on a byte).
pub fn decode_frame<'b>(
    ds: &DataSet<'_>,
    enc: Encoding,
    transfer_syntax: &str,
    index: usize,
    budget: &'b MemoryBudget,
) -> Result<(ImagePixel, Vec<u8>, Grant<'b>), PixelError> {
    let el = ds
        .get(radveil_part10::PIXEL_DATA)
        .ok_or_else(|| PixelError::Malformed("no Pixel Data (7FE0,0010)".into()))?;
    let d = ImagePixel::from_dataset(ds, enc)?;
    if index >= d.number_of_frames {
        return Err(PixelError::Malformed(format!(
            "frame {} of {} frames",
            index.saturating_add(1),
            d.number_of_frames
        )));
    }
    if d.bits_allocated == 1 && d.number_of_frames > 1 {
        return Err(PixelError::Unsupported(
            "frames of a multi-frame bit-packed image".into(),
        ));
    }
    let spp = usize::from(d.samples_per_pixel);
    let bps = d.bytes_per_sample();
    let ppf = d.pixels_per_frame();
    let frame_len = d.frame_len();
    let grant = budget.reserve(frame_len.saturating_mul(2) as u64, DEFAULT_WAIT)?;
    let out = match &el.value {
        Value::Bytes(b) => {
            d.check_native_len(b.len())?;
            if d.bits_allocated == 1 {
                b[..d.native_len()].to_vec()
            } else {
                let start = index
                    .checked_mul(frame_len)
                    .ok_or_else(|| PixelError::Malformed("frame offset overflows".into()))?;
                let src = start
                    .checked_add(frame_len)
                    .and_then(|end| b.get(start..end))
                    .ok_or_else(|| PixelError::Malformed("frame beyond the pixel data".into()))?;
                let mut frame = crate::with_capacity::<u8>(frame_len)?;
                if enc == Encoding::ExplicitBig && el.vr == Vr::OW && bps > 1 {
                    frame.extend(src.chunks(2).flat_map(|c| c.iter().rev().copied()));
                } else {
                    frame.extend_from_slice(src);
                }
                if planar(&d) {
                    frame = rle::interleave(frame, 1, ppf, spp, bps)?;
                }
                frame
            }
        }
        Value::Fragments(frags) => {
            let (codec, _) = compressed(&d, transfer_syntax)?;
            let items: Vec<&[u8]> = frags.iter().skip(1).map(|f| f.as_ref()).collect();
            let offsets = frags.first().map_or(&[][..], |f| f.as_ref());
            let frame_data = codec::frames(&items, offsets, d.number_of_frames)?;
            let f = frame_data
                .get(index)
                .ok_or_else(|| PixelError::Malformed("frame beyond the pixel data".into()))?;
            match codec {
                None => rle::interleave(rle::rle_frame(f, ppf, spp, bps)?, 1, ppf, spp, bps)?,
                Some(codec) => {
                    let expect = (usize::from(d.columns), usize::from(d.rows), spp);
                    let frame = codec::decode_waiting(codec, f, expect, budget, Duration::ZERO)?;
                    let mut out = crate::with_capacity::<u8>(frame_len)?;
                    for v in frame.samples {
                        out.extend_from_slice(&v.to_le_bytes()[..bps]);
                    }
                    out
                }
            }
        }
        Value::Sequence(_) => return Err(PixelError::Malformed("pixel data is a sequence".into())),
    };
    if d.bits_allocated != 1 && out.len() != frame_len {
        return Err(PixelError::Malformed(format!(
            "a frame decodes to {} bytes where {frame_len} are described",
            out.len()
        )));
    }
    Ok((d, out, grant))
}

/// Whether native Pixel Data must be rewritten to give the decoded layout: byte-swapped
/// (big endian OW) or interleaved (colour by plane).
fn needs_copy(d: &ImagePixel, vr: Vr, enc: Encoding) -> bool {
    let swap = enc == Encoding::ExplicitBig && vr == Vr::OW && d.bytes_per_sample() > 1;
    swap || planar(d)
}

fn planar(d: &ImagePixel) -> bool {
    d.planar_configuration == 1 && d.samples_per_pixel > 1 && d.bits_allocated != 1
}

/// The decoding shared by [`decode_pixel_data`] and [`for_each_frame`]: checks the pixel
/// data against `d` and hands each decoded frame to `each`, holding one frame's working
/// memory (reserved from `budget`, waiting up to `wait`: `Duration::ZERO` when the caller
/// already holds memory of the budget) at a time. The codec's own working memory is taken
/// while the frame's is held, so it never waits.
/// The codec of encapsulated pixel data (`None` for RLE Lossless, decoded here) and
/// whether it is RLE, after the checks every compressed decode makes: a transfer syntax
/// radveil decodes, and samples the codecs take (no bit-packed data, at most 16 bits
/// outside RLE).
fn compressed(d: &ImagePixel, transfer_syntax: &str) -> Result<(Option<Codec>, bool), PixelError> {
    let rle = transfer_syntax == RLE_LOSSLESS;
    let codec = Codec::for_transfer_syntax(transfer_syntax);
    if !rle && codec.is_none() {
        return Err(PixelError::Unsupported(transfer_syntax.to_string()));
    }
    if d.bits_allocated == 1 || (codec.is_some() && d.bytes_per_sample() > 2) {
        return Err(PixelError::Malformed(format!(
            "{}-bit samples in a compressed transfer syntax",
            d.bits_allocated
        )));
    }
    Ok((codec, rle))
}

fn frames_of(
    el: &radveil_part10::Element<'_>,
    enc: Encoding,
    d: &ImagePixel,
    transfer_syntax: &str,
    budget: &MemoryBudget,
    wait: Duration,
    each: &mut dyn FnMut(&[u8]),
) -> Result<(), PixelError> {
    let spp = usize::from(d.samples_per_pixel);
    let bps = d.bytes_per_sample();
    let ppf = d.pixels_per_frame();
    let frame_len = d.frame_len();
    let reserve = |bytes: usize| budget.reserve(bytes as u64, wait);
    match &el.value {
        Value::Bytes(b) => {
            d.check_native_len(b.len())?;
            let v = &b[..d.native_len()];
            if !needs_copy(d, el.vr, enc) {
                each(v);
                return Ok(());
            }
            let swap = enc == Encoding::ExplicitBig && el.vr == Vr::OW && bps > 1;
            // A frame copied (byte-swapped), and for planar frames a second one.
            let copies = if planar(d) { 2 } else { 1 };
            // Byte pairs are swapped across the whole pixel data: frames of an odd length
            // (3-byte samples) are swapped as one unit, as they always were.
            let unit = if swap && frame_len % 2 == 1 {
                v.len()
            } else {
                frame_len
            };
            let frames_per_unit = unit.checked_div(frame_len).unwrap_or(1);
            let _grant = reserve(unit.saturating_mul(copies))?;
            let mut frame = crate::with_capacity::<u8>(unit)?;
            for src in v.chunks_exact(unit) {
                frame.clear();
                if swap {
                    // `frame_len` is a whole number of 2-byte samples here.
                    frame.extend(src.chunks(2).flat_map(|c| c.iter().rev().copied()));
                } else {
                    frame.extend_from_slice(src);
                }
                if planar(d) {
                    frame = rle::interleave(frame, frames_per_unit, ppf, spp, bps)?;
                }
                each(&frame);
            }
            Ok(())
        }
        Value::Fragments(frags) => {
            let (codec, rle) = compressed(d, transfer_syntax)?;
            let items: Vec<&[u8]> = frags.iter().skip(1).map(|f| f.as_ref()).collect();
            let offsets = frags.first().map_or(&[][..], |f| f.as_ref());
            // Checks the frame count against the items present before anything else.
            let frame_data = codec::frames(&items, offsets, d.number_of_frames)?;
            // One frame out; RLE decodes colour by plane, into a second copy to interleave.
            let copies = if rle && spp > 1 { 2 } else { 1 };
            let _grant = reserve(frame_len.saturating_mul(copies))?;
            let mut out = crate::with_capacity::<u8>(frame_len)?;
            for f in &frame_data {
                match codec {
                    None => {
                        out = rle::interleave(rle::rle_frame(f, ppf, spp, bps)?, 1, ppf, spp, bps)?
                    }
                    Some(codec) => {
                        let expect = (usize::from(d.columns), usize::from(d.rows), spp);
                        let frame =
                            codec::decode_waiting(codec, f, expect, budget, Duration::ZERO)?;
                        out.clear();
                        for v in frame.samples {
                            out.extend_from_slice(&v.to_le_bytes()[..bps]);
                        }
                    }
                }
                if out.len() != frame_len {
                    return Err(PixelError::Malformed(format!(
                        "a frame decodes to {} bytes where {frame_len} are described",
                        out.len()
                    )));
                }
                each(&out);
            }
            Ok(())
        }
        Value::Sequence(_) => Err(PixelError::Malformed("pixel data is a sequence".into())),
    }
}

#[cfg(test)]
mod tests {
    use radveil_part10::{Element, Value, Vr};
    use radveil_standard::tags;

    use super::*;

    fn image<'a>(rows: u16, cols: u16, frames: &str, pixels: Value<'a>) -> DataSet<'a> {
        let mut ds = DataSet::default();
        let us = |v: u16| Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec()));
        for (tag, v) in [
            (tags::ROWS, rows),
            (tags::COLUMNS, cols),
            (tags::BITS_ALLOCATED, 16),
        ] {
            ds.put(Element {
                tag,
                vr: Vr::US,
                value: us(v),
            });
        }
        ds.put(Element::text(tags::NUMBER_OF_FRAMES, Vr::IS, frames));
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
    fn frames_one_at_a_time_are_the_whole_decode() {
        let budget = MemoryBudget::new(1 << 20);
        let bytes: Vec<u8> = (0..2 * 4 * 4 * 2 * 3).map(|i| i as u8).collect();
        for enc in [Encoding::ExplicitLittle, Encoding::ExplicitBig] {
            let mut ds = DataSet::default();
            let us = |v: u16| {
                let b = if enc == Encoding::ExplicitBig {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                Value::Bytes(Cow::Owned(b.to_vec()))
            };
            for (tag, v) in [
                (tags::ROWS, 4u16),
                (tags::COLUMNS, 4),
                (tags::BITS_ALLOCATED, 16),
                (tags::SAMPLES_PER_PIXEL, 3),
                (tags::PLANAR_CONFIGURATION, 1),
            ] {
                ds.put(Element {
                    tag,
                    vr: Vr::US,
                    value: us(v),
                });
            }
            ds.put(Element::text(tags::NUMBER_OF_FRAMES, Vr::IS, "2"));
            ds.put(Element {
                tag: radveil_part10::PIXEL_DATA,
                vr: Vr::OW,
                value: Value::Bytes(Cow::Borrowed(&bytes)),
            });
            let whole = decode_pixel_data(&ds, enc, EXPLICIT, &budget).unwrap();
            let mut frames = Vec::new();
            let mut calls = 0;
            for_each_frame(&ds, enc, EXPLICIT, &budget, &mut |f| {
                frames.extend_from_slice(f);
                calls += 1;
            })
            .unwrap();
            assert_eq!(calls, 2);
            assert_eq!(frames, &whole[..]);
            // Each frame alone is its part of the whole decode; beyond the last is refused.
            let half = whole.len() / 2;
            for (i, part) in [&whole[..half], &whole[half..]].into_iter().enumerate() {
                let (d, f, grant) = decode_frame(&ds, enc, EXPLICIT, i, &budget).unwrap();
                assert_eq!(d.number_of_frames, 2);
                assert_eq!(&f[..], part, "frame {i}");
                assert!(
                    budget.in_use() >= f.len() as u64,
                    "the frame is accounted for"
                );
                drop(grant);
            }
            assert!(decode_frame(&ds, enc, EXPLICIT, 2, &budget).is_err());
            assert!(decode_frame(&ds, enc, EXPLICIT, usize::MAX, &budget).is_err());
            // Planar RGB: the first pixel is R, G, B from the three planes.
            let first: Vec<u8> = if enc == Encoding::ExplicitLittle {
                vec![0, 1, 32, 33, 64, 65]
            } else {
                vec![1, 0, 33, 32, 65, 64]
            };
            assert_eq!(&whole[..6], &first[..]);
            // An image larger than the whole budget is refused, though a frame would fit.
            let small = MemoryBudget::new(150);
            let r = for_each_frame(&ds, enc, EXPLICIT, &small, &mut |_| {});
            assert!(matches!(r, Err(PixelError::Memory(_))), "{r:?}");
        }
        assert_eq!(budget.in_use(), 0);
    }

    /// Runs `f` on its own thread: whether it returned within `secs` seconds.
    fn returns_within(secs: u64, f: impl FnOnce() + Send + 'static) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .is_ok()
    }

    #[test]
    fn a_decoder_holding_memory_never_waits_for_more() {
        // From fuzz/artifacts/pixels (a timeout), minimized to the 8 bytes
        // f7 01 ff 4f ff 51 00 00 (the target's rows, columns, bits, samples and frames):
        // 503 x 20479 RLE samples of 32 bits, 41 MB, in a 64 MiB budget. The decoded image
        // was reserved, then its frame working copy waited (120 s) for memory only this
        // same decoder held.
        assert!(returns_within(10, || {
            let budget = MemoryBudget::new(64 << 20);
            let junk: &[u8] = &[0x8d, 0xb8, 0x4e, 0xea, 0xd1, 0xe5];
            let mut ds = image(
                503,
                20479,
                "0",
                Value::Fragments(vec![Cow::Borrowed(&[][..]), Cow::Borrowed(junk)]),
            );
            ds.put(Element {
                tag: tags::BITS_ALLOCATED,
                vr: Vr::US,
                value: Value::Bytes(Cow::Owned(32u16.to_le_bytes().to_vec())),
            });
            let r = decode_pixel_data(&ds, Encoding::ExplicitLittle, RLE_LOSSLESS, &budget);
            assert!(matches!(r, Err(PixelError::Memory(_))), "{r:?}");
            drop(r);
            assert_eq!(budget.in_use(), 0);
        }));
        // Native planar RGB: the image (96 bytes) fits, and so would its two frame copies
        // (96 bytes) alone, but not both.
        assert!(returns_within(10, || {
            let budget = MemoryBudget::new(150);
            let bytes = vec![1u8; 96];
            let mut ds = image(4, 4, "2", Value::Bytes(Cow::Owned(bytes)));
            for (tag, v) in [
                (tags::SAMPLES_PER_PIXEL, 3u16),
                (tags::PLANAR_CONFIGURATION, 1),
            ] {
                ds.put(Element {
                    tag,
                    vr: Vr::US,
                    value: Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec())),
                });
            }
            ds.put(Element {
                tag: tags::BITS_ALLOCATED,
                vr: Vr::US,
                value: Value::Bytes(Cow::Owned(8u16.to_le_bytes().to_vec())),
            });
            let r = decode_pixel_data(&ds, Encoding::ExplicitLittle, EXPLICIT, &budget);
            assert!(matches!(r, Err(PixelError::Memory(_))), "{r:?}");
        }));
        // JPEG-LS frame by frame: the frame (4096 bytes) is held while the codec reserves its
        // working memory (32768 bytes); each fits the budget, both do not.
        assert!(returns_within(10, || {
            let budget = MemoryBudget::new(33_000);
            let sof: &[u8] = &[
                0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x0B, 0x08, 0x00, 0x40, 0x00, 0x40, 0x01, 0x01, 0x11,
                0x00,
            ];
            let mut ds = image(
                64,
                64,
                "1",
                Value::Fragments(vec![Cow::Borrowed(&[][..]), Cow::Borrowed(sof)]),
            );
            ds.put(Element {
                tag: tags::BITS_ALLOCATED,
                vr: Vr::US,
                value: Value::Bytes(Cow::Owned(8u16.to_le_bytes().to_vec())),
            });
            let r = for_each_frame(
                &ds,
                Encoding::ExplicitLittle,
                "1.2.840.10008.1.2.4.80",
                &budget,
                &mut |_| {},
            );
            assert!(matches!(r, Err(PixelError::Memory(_))), "{r:?}");
            assert_eq!(budget.in_use(), 0);
        }));
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
