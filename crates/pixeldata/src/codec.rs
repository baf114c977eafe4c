//! Decoding encapsulated pixel data (PS3.5 A.4): JPEG (baseline,
//! extended 8-bit and lossless, via `jpeg-decoder`), JPEG-LS (lossless and near-lossless,
//! [`crate::jpegls`]) and JPEG 2000 (lossless and lossy, via `jpeg2k` on the pure-Rust
//! OpenJPEG port `openjp2`).
//!
//! Each frame comes out as samples interleaved by pixel, as the sample values the codec
//! stored (no colour transform is applied, so YBR stays YBR), for
//! [`crate::decode_pixel_data`] to lay out like native pixel data.
//!
//! A codestream's frame header is checked against the size the data set describes before
//! anything is decoded, and the memory the decoder will use is reserved from the budget
//! first: a small codestream that claims a huge image is refused, not decoded.

use radveil_part10::{MemoryBudget, DEFAULT_WAIT};
use std::time::Duration;

use crate::PixelError;

/// The codec a transfer syntax needs, if this build decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// ISO 10918-1 JPEG (baseline, extended 8-bit, lossless processes 14 and SV1).
    Jpeg,
    /// ISO 14495-1 JPEG-LS.
    JpegLs,
    /// ISO 15444-1 JPEG 2000 (and High-Throughput JPEG 2000).
    Jpeg2000,
}

impl Codec {
    /// The codec of an encapsulated transfer syntax (RLE is decoded elsewhere).
    pub fn for_transfer_syntax(uid: &str) -> Option<Codec> {
        Some(match uid {
            "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.57"
            | "1.2.840.10008.1.2.4.70" => Codec::Jpeg,
            "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => Codec::JpegLs,
            "1.2.840.10008.1.2.4.90"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.201"
            | "1.2.840.10008.1.2.4.202"
            | "1.2.840.10008.1.2.4.203" => Codec::Jpeg2000,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Samples per pixel.
    pub components: usize,
    /// Samples, row by row, interleaved by pixel, as two's complement bit patterns.
    pub samples: Vec<u32>,
}

/// The most samples one frame may decode to: 2^27 (a 16k × 8k image), far above any
/// radiograph or tile, and a bound on what a hostile header can make the decoder allocate.
const MAX_SAMPLES: usize = 1 << 27;

fn malformed(what: &str, e: impl std::fmt::Display) -> PixelError {
    PixelError::Malformed(format!("{what}: {e}"))
}

/// The size a codestream declares (columns, rows, components), read from its frame header
/// (JPEG SOFn, JPEG-LS SOF55, JPEG 2000 SIZ) without decoding anything.
// Offsets are positions inside `data` plus at most 44, and `data.len()` is at most
// `isize::MAX`: no overflow.
#[allow(clippy::arithmetic_side_effects)]
pub fn dimensions(codec: Codec, data: &[u8]) -> Option<(usize, usize, usize)> {
    match codec {
        Codec::Jpeg | Codec::JpegLs => jpeg_frame_header(data),
        Codec::Jpeg2000 => {
            let at = data
                .windows(4)
                .take(4096)
                .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
            let siz = data.get(at + 2..at + 44)?;
            let u32_at = |o: usize| {
                u32::from_be_bytes([siz[o], siz[o + 1], siz[o + 2], siz[o + 3]]) as usize
            };
            let (x, y, xo, yo) = (u32_at(6), u32_at(10), u32_at(14), u32_at(18));
            let c = u16::from_be_bytes([siz[38], siz[39]]) as usize;
            Some((x.checked_sub(xo)?, y.checked_sub(yo)?, c))
        }
    }
}

/// The number of tiles a JPEG 2000 codestream's SIZ declares, when the tiling is valid
/// (tiles of at least one sample that cover the image).
fn jpeg2000_tiles(data: &[u8]) -> Option<u64> {
    let at = data
        .windows(4)
        .take(4096)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    let siz = data.get(at.checked_add(2)?..at.checked_add(44)?)?;
    let u32_at = |o: usize| -> Option<u64> {
        Some(u64::from(u32::from_be_bytes(
            siz.get(o..o.checked_add(4)?)?.try_into().ok()?,
        )))
    };
    let (x, y) = (u32_at(6)?, u32_at(10)?);
    let (xt, yt, xto, yto) = (u32_at(22)?, u32_at(26)?, u32_at(30)?, u32_at(34)?);
    if xt == 0 || yt == 0 || xto > x || yto > y {
        return None;
    }
    x.checked_sub(xto)?
        .div_ceil(xt)
        .checked_mul(y.checked_sub(yto)?.div_ceil(yt))
}

/// The most tiles a JPEG 2000 codestream may have (Isot is a 16-bit tile index).
const MAX_TILES: u64 = 65_535;

/// The frame header of a JPEG or JPEG-LS codestream: walks the marker segments from SOI.
// `i` stays at most `data.len()` + 65537 (each step adds a checked 16-bit length to a
// position inside `data`), far from overflowing.
#[allow(clippy::arithmetic_side_effects)]
fn jpeg_frame_header(data: &[u8]) -> Option<(usize, usize, usize)> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    loop {
        // Fill bytes: any number of 0xFF before the marker code.
        while *data.get(i)? == 0xFF && *data.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *data.get(i)? != 0xFF {
            return None;
        }
        let marker = *data.get(i + 1)?;
        i += 2;
        if matches!(marker, 0x01 | 0xD0..=0xD9) {
            continue;
        }
        let len = u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]) as usize;
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
            || marker == 0xF7;
        if is_sof {
            let seg = data.get(i + 2..i + len)?;
            let h = u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]) as usize;
            let w = u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]) as usize;
            return Some((w, h, *seg.get(5)? as usize));
        }
        if marker == 0xDA || len < 2 {
            return None;
        }
        i += len;
    }
}

/// Bytes of working memory a decoder may use per sample of a frame: its own buffers and
/// the [`Frame`] (4 bytes a sample) it returns. JPEG 2000 keeps 32-bit component planes and
/// code-block buffers besides.
fn working_bytes_per_sample(codec: Codec) -> u64 {
    match codec {
        Codec::Jpeg | Codec::JpegLs => 8,
        Codec::Jpeg2000 => 12,
    }
}

/// Decodes one frame's codestream, which must declare `expect` (columns, rows, samples
/// per pixel): the frame header is checked against the data set's description before
/// anything is decoded, so a codestream cannot make the decoder allocate more than the
/// image described; the decoder's working memory is then reserved from `budget` (waiting
/// up to [`DEFAULT_WAIT`] for other work to release it) and released on return.
pub fn decode(
    codec: Codec,
    data: &[u8],
    expect: (usize, usize, usize),
    budget: &MemoryBudget,
) -> Result<Frame, PixelError> {
    decode_waiting(codec, data, expect, budget, DEFAULT_WAIT)
}

/// [`decode`], waiting up to `wait` for the working memory: a caller that already holds
/// memory of the budget passes `Duration::ZERO`, since waiting could only be for itself
/// or for other workers who may be waiting for it.
pub(crate) fn decode_waiting(
    codec: Codec,
    data: &[u8],
    expect: (usize, usize, usize),
    budget: &MemoryBudget,
    wait: Duration,
) -> Result<Frame, PixelError> {
    let declared = dimensions(codec, data)
        .ok_or_else(|| malformed("codestream", "no readable frame header"))?;
    if declared != expect {
        return Err(PixelError::Malformed(format!(
            "the codestream declares {}x{}x{} where {}x{}x{} is described",
            declared.0, declared.1, declared.2, expect.0, expect.1, expect.2
        )));
    }
    let samples = expect
        .0
        .checked_mul(expect.1)
        .and_then(|v| v.checked_mul(expect.2))
        .filter(|&n| n <= MAX_SAMPLES)
        .ok_or_else(|| malformed("codestream", "image too large"))?;
    if codec == Codec::Jpeg2000 && !jpeg2000_tiles(data).is_some_and(|t| t <= MAX_TILES) {
        // Each tile costs the decoder its own structures: a codestream of millions of
        // one-sample tiles would cost far more than its samples.
        return Err(malformed(
            "JPEG 2000",
            "invalid tiling or more than 65535 tiles",
        ));
    }
    let working = (samples as u64).saturating_mul(working_bytes_per_sample(codec));
    let _grant = budget.reserve(working, wait)?;
    let frame = match codec {
        Codec::Jpeg => contained("JPEG", || decode_jpeg(data))?,
        Codec::JpegLs => {
            let img = crate::jpegls::decode(data).map_err(|e| malformed("JPEG-LS", e))?;
            let mut samples = crate::with_capacity(img.samples.len())?;
            samples.extend(img.samples.into_iter().map(u32::from));
            Frame {
                width: img.width,
                height: img.height,
                components: img.components,
                samples,
            }
        }
        Codec::Jpeg2000 => contained("JPEG 2000", || decode_jpeg2000(data))?,
    };
    if (frame.width, frame.height, frame.components) != expect {
        return Err(PixelError::Malformed(format!(
            "a frame decodes to {}x{}x{} where {}x{}x{} is described",
            frame.width, frame.height, frame.components, expect.0, expect.1, expect.2
        )));
    }
    Ok(frame)
}

/// Runs a third-party decoder, turning a panic inside it into an error: `jpeg-decoder`
/// unwraps on some valid chroma-subsampled streams when asked for untransformed samples,
/// and one file must never end a batch. The decoder works on `data` and its own state
/// only, so nothing is left half-changed when it unwinds.
fn contained(
    what: &str,
    decoder: impl FnOnce() -> Result<Frame, PixelError>,
) -> Result<Frame, PixelError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decoder))
        .unwrap_or_else(|_| Err(malformed(what, "the decoder failed on this codestream")))
}

fn decode_jpeg(data: &[u8]) -> Result<Frame, PixelError> {
    let mut d = jpeg_decoder::Decoder::new(data);
    d.set_color_transform(jpeg_decoder::ColorTransform::None);
    d.set_max_decoding_buffer_size(MAX_SAMPLES.saturating_mul(2));
    d.read_info().map_err(|e| malformed("JPEG", e))?;
    let info = d
        .info()
        .ok_or_else(|| malformed("JPEG", "no frame header"))?;
    // `ColorTransform::None` lays a DCT image of three components out line by line, each
    // line's components one after the other (jpeg-decoder's `color_no_convert`); `RGB`
    // interleaves them by pixel without changing a value, which is the layout wanted.
    // (Lossless frames are interleaved whatever the transform.)
    if info.pixel_format == jpeg_decoder::PixelFormat::RGB24 {
        d.set_color_transform(jpeg_decoder::ColorTransform::RGB);
    }
    let four = info.pixel_format == jpeg_decoder::PixelFormat::CMYK32;
    if four && has_adobe_marker(data) {
        // An Adobe APP14 marker says the components are Adobe's (inverted CMYK, or YCCK to
        // convert): a convention DICOM does not define (PS3.5 8.2.1 leaves the components
        // as coded), so no reading of it is sure to give the pixels meant.
        return Err(PixelError::Unsupported(
            "JPEG of four components with an Adobe (APP14) colour transform marker".into(),
        ));
    }
    let mut pixels = d.decode().map_err(|e| malformed("JPEG", e))?;
    let (width, height) = (info.width as usize, info.height as usize);
    if four && info.coding_process != jpeg_decoder::CodingProcess::Lossless {
        // No transform interleaves four DCT components untouched: each line comes as its
        // four components one after the other, interleaved by pixel here.
        pixels = interleave_lines(&pixels, width, 4)?;
    }
    let components = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 | jpeg_decoder::PixelFormat::L16 => 1,
        jpeg_decoder::PixelFormat::RGB24 => 3,
        jpeg_decoder::PixelFormat::CMYK32 => 4,
    };
    let n = width
        .checked_mul(height)
        .and_then(|v| v.checked_mul(components))
        .ok_or_else(|| malformed("JPEG", "image too large"))?;
    // Lossless frames of more than 8 bits (of any component count) come as native-endian u16.
    let mut samples: Vec<u32> = crate::with_capacity(n)?;
    if Some(pixels.len()) == n.checked_mul(2) {
        samples.extend(
            pixels
                .chunks_exact(2)
                .map(|c| u16::from_ne_bytes([c[0], c[1]]) as u32),
        );
    } else if pixels.len() == n {
        samples.extend(pixels.iter().map(|&b| b as u32));
    } else {
        return Err(malformed(
            "JPEG",
            format!(
                "{} bytes decoded for {width}x{height}x{components}",
                pixels.len()
            ),
        ));
    }
    Ok(Frame {
        width,
        height,
        components,
        samples,
    })
}

/// Lines of `components` planes each (every line's first component for `width` pixels,
/// then its second, ...), interleaved by pixel.
fn interleave_lines(pixels: &[u8], width: usize, components: usize) -> Result<Vec<u8>, PixelError> {
    let line = width
        .checked_mul(components)
        .filter(|&l| pixels.len().checked_rem(l) == Some(0))
        .ok_or_else(|| malformed("JPEG", "decoded lines do not match the frame"))?;
    let mut out = crate::with_capacity::<u8>(pixels.len())?;
    for l in pixels.chunks_exact(line) {
        for x in 0..width {
            // `c * width + x` < `components * width` = `l.len()`.
            out.extend((0..components).filter_map(|c| {
                c.checked_mul(width)
                    .and_then(|o| o.checked_add(x))
                    .and_then(|i| l.get(i))
                    .copied()
            }));
        }
    }
    Ok(out)
}

/// Whether a JPEG codestream has an Adobe APP14 marker segment before its first scan.
// `i` stays at most `data.len()` + 65537, as in `jpeg_frame_header`.
#[allow(clippy::arithmetic_side_effects)]
fn has_adobe_marker(data: &[u8]) -> bool {
    let mut i = 2;
    loop {
        while data.get(i) == Some(&0xFF) && data.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(0xFF), Some(&marker)) = (data.get(i), data.get(i + 1)) else {
            return false;
        };
        i += 2;
        if matches!(marker, 0x01 | 0xD0..=0xD9) {
            continue;
        }
        let (Some(&a), Some(&b)) = (data.get(i), data.get(i + 1)) else {
            return false;
        };
        let len = u16::from_be_bytes([a, b]) as usize;
        if marker == 0xEE && data.get(i + 2..i + 7) == Some(b"Adobe") {
            return true;
        }
        if marker == 0xDA || len < 2 {
            return false;
        }
        i += len;
    }
}

fn decode_jpeg2000(data: &[u8]) -> Result<Frame, PixelError> {
    // Check the header before handing the stream to the decoder: size it and refuse absurd
    // images up front.
    let image = jpeg2k::Image::from_bytes(data).map_err(|e| malformed("JPEG 2000", e))?;
    let comps = image.components();
    let first = comps
        .first()
        .ok_or_else(|| malformed("JPEG 2000", "no components"))?;
    let (width, height) = (first.width() as usize, first.height() as usize);
    if comps
        .iter()
        .any(|c| c.width() as usize != width || c.height() as usize != height)
    {
        return Err(malformed("JPEG 2000", "subsampled components"));
    }
    let components = comps.len();
    let n = width
        .checked_mul(height)
        .and_then(|p| p.checked_mul(components))
        .filter(|&n| n <= MAX_SAMPLES)
        .ok_or_else(|| malformed("JPEG 2000", "image too large"))?;
    let mut samples = crate::zeroed::<u32>(n)?;
    // `width * height * components` = `n` did not overflow, and every index is below it.
    #[allow(clippy::arithmetic_side_effects)]
    for (c, comp) in comps.iter().enumerate() {
        let data = comp.data();
        if data.len() < width * height {
            return Err(malformed("JPEG 2000", "component shorter than its size"));
        }
        for (p, v) in data[..width * height].iter().enumerate() {
            samples[p * components + c] = *v as u32;
        }
    }
    Ok(Frame {
        width,
        height,
        components,
        samples,
    })
}

/// Splits encapsulated pixel data items (after the Basic Offset Table) into frames:
/// by the offset table when it has one entry per frame, one item per frame when the counts
/// agree, all items for a single frame, else at items that start a new codestream. Every
/// frame needs an item of its own, so `count` is checked against the items present before
/// anything is allocated for the frames.
pub fn frames<'a>(
    items: &'a [&'a [u8]],
    offsets: &[u8],
    count: usize,
) -> Result<Vec<Vec<u8>>, PixelError> {
    if count == 1 {
        return Ok(vec![items.concat()]);
    }
    if count > items.len() {
        return Err(PixelError::Malformed(format!(
            "{} pixel data items cannot hold the {count} frames described",
            items.len()
        )));
    }
    if items.len() == count {
        return Ok(items.iter().map(|f| f.to_vec()).collect());
    }
    let table: Vec<usize> = offsets
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    if table.len() == count {
        // Offsets count item headers (8 bytes each) and values from the first item.
        let mut pos = 0usize;
        let mut starts = Vec::with_capacity(items.len());
        for f in items {
            starts.push(pos);
            pos = pos.saturating_add(f.len()).saturating_add(8);
        }
        for (f, &start) in items.iter().zip(&starts) {
            let frame = table.iter().rposition(|&o| o <= start).unwrap_or(0);
            // `frame` < `table.len()` = `count` <= `items.len()`.
            while out.len() <= frame {
                out.push(Vec::new());
            }
            out[frame].extend_from_slice(f);
        }
    } else {
        for f in items {
            let starts_codestream = f.starts_with(&[0xFF, 0xD8]) || f.starts_with(&[0xFF, 0x4F]);
            if starts_codestream || out.is_empty() {
                out.push(Vec::new());
            }
            if let Some(last) = out.last_mut() {
                last.extend_from_slice(f);
            }
        }
    }
    if out.len() != count {
        return Err(PixelError::Malformed(format!(
            "{} frames found in the pixel data items where {count} are described",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test code on fixed, small values
mod tests {
    use super::*;

    /// A JPEG-LS codestream of an 8 x 1 black 8-bit image (one run).
    fn jpegls_black_line() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xF7, 0, 11, 8, 0, 1, 0, 8, 1, 1, 0x11, 0];
        v.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0, 0, 0xFC, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn a_frame_is_decoded_only_within_the_budget() {
        let data = jpegls_black_line();
        let frame = decode(Codec::JpegLs, &data, (8, 1, 1), &MemoryBudget::new(1 << 10)).unwrap();
        assert_eq!(frame.samples, vec![0; 8]);
        let small = MemoryBudget::new(16);
        assert!(matches!(
            decode(Codec::JpegLs, &data, (8, 1, 1), &small),
            Err(PixelError::Memory(_))
        ));
        // A codestream that declares another size than the data set is refused first.
        assert!(decode(Codec::JpegLs, &data, (8, 2, 1), &MemoryBudget::new(1 << 10)).is_err());
    }

    /// A colour baseline JPEG comes out interleaved by pixel, its values untransformed (it
    /// came out line by line, each line's Y, then Cb, then Cr).
    #[test]
    fn colour_jpeg_samples_are_interleaved_by_pixel() {
        let (w, h) = (16u16, 8u16);
        let ycbcr: Vec<u8> = (0..usize::from(w) * usize::from(h))
            .flat_map(|_| [100u8, 150, 60])
            .collect();
        let mut data = Vec::new();
        jpeg_encoder::Encoder::new(&mut data, 100)
            .encode(&ycbcr, w, h, jpeg_encoder::ColorType::Ycbcr)
            .unwrap();
        let budget = MemoryBudget::new(1 << 20);
        let frame = decode(Codec::Jpeg, &data, (16, 8, 3), &budget).unwrap();
        for px in frame.samples.chunks_exact(3) {
            for (got, want) in px.iter().zip([100u32, 150, 60]) {
                assert!(got.abs_diff(want) <= 2, "{px:?}");
            }
        }
    }

    /// The codestream without its Adobe APP14 segment.
    fn without_adobe(data: &[u8]) -> Vec<u8> {
        let at = data
            .windows(7)
            .position(|w| w[0] == 0xFF && w[1] == 0xEE && &w[4..7] == b"Ado")
            .expect("an APP14 segment");
        let len = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        [&data[..at], &data[at + 2 + len..]].concat()
    }

    /// A four-component baseline JPEG comes out interleaved by pixel, its values as coded
    /// (it came out line by line, each line's four components one after the other); one
    /// with an Adobe marker (inverted CMYK or YCCK, Adobe's convention) is refused with why.
    #[test]
    fn four_component_jpeg_is_interleaved_by_pixel_or_refused() {
        let (w, h) = (16u16, 8u16);
        let cmyk: Vec<u8> = (0..usize::from(w) * usize::from(h))
            .flat_map(|_| [10u8, 80, 160, 240])
            .collect();
        let mut data = Vec::new();
        jpeg_encoder::Encoder::new(&mut data, 100)
            .encode(&cmyk, w, h, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
        let budget = MemoryBudget::new(1 << 20);
        let e = decode(Codec::Jpeg, &data, (16, 8, 4), &budget).unwrap_err();
        assert!(
            matches!(&e, PixelError::Unsupported(why) if why.contains("Adobe")),
            "{e:?}"
        );
        // The encoder stored Adobe's inverted values; without the marker they are the
        // components as coded.
        let frame = decode(Codec::Jpeg, &without_adobe(&data), (16, 8, 4), &budget).unwrap();
        assert_eq!(frame.samples.len(), 16 * 8 * 4);
        for px in frame.samples.chunks_exact(4) {
            for (got, want) in px.iter().zip([245u32, 175, 95, 15]) {
                assert!(got.abs_diff(want) <= 2, "{px:?}");
            }
        }
    }

    #[test]
    fn a_jpeg2000_codestream_of_too_many_tiles_is_refused() {
        let siz = |tile: u32| {
            let mut v = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
            for x in [512u32, 512, 0, 0, tile, tile, 0, 0] {
                v.extend_from_slice(&x.to_be_bytes());
            }
            v.extend_from_slice(&[0, 1, 7, 1, 1]);
            v
        };
        assert_eq!(jpeg2000_tiles(&siz(1)), Some(512 * 512));
        assert_eq!(jpeg2000_tiles(&siz(512)), Some(1));
        assert_eq!(jpeg2000_tiles(&siz(0)), None);
        let e = decode(
            Codec::Jpeg2000,
            &siz(1),
            (512, 512, 1),
            &MemoryBudget::unlimited(),
        );
        assert!(format!("{e:?}").contains("tiles"), "{e:?}");
    }
}
