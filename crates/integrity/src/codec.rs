//! Decoding encapsulated pixel data (PS3.5 A.4) for the binding hash: JPEG (baseline,
//! extended 8-bit and lossless, via `jpeg-decoder`), JPEG-LS (lossless and near-lossless,
//! [`crate::jpegls`]) and JPEG 2000 (lossless and lossy, via `jpeg2k` on the pure-Rust
//! OpenJPEG port `openjp2`).
//!
//! Each frame comes out as samples interleaved by pixel, as the sample values the codec
//! stored (no colour transform is applied, so YBR stays YBR), for [`crate::binding`] to
//! lay out like native pixel data.

use crate::binding::BindingError;

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

fn malformed(what: &str, e: impl std::fmt::Display) -> BindingError {
    BindingError::Malformed(format!("{what}: {e}"))
}

/// The size a codestream declares (columns, rows, components), read from its frame header
/// (JPEG SOFn, JPEG-LS SOF55, JPEG 2000 SIZ) without decoding anything.
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

/// The frame header of a JPEG or JPEG-LS codestream: walks the marker segments from SOI.
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

/// Decodes one frame's codestream, which must declare `expect` (columns, rows, samples
/// per pixel): the frame header is checked against the data set's description before
/// anything is decoded, so a codestream cannot make the decoder allocate more than the
/// image described.
pub fn decode(
    codec: Codec,
    data: &[u8],
    expect: (usize, usize, usize),
) -> Result<Frame, BindingError> {
    let declared = dimensions(codec, data)
        .ok_or_else(|| malformed("codestream", "no readable frame header"))?;
    if declared != expect {
        return Err(BindingError::Malformed(format!(
            "the codestream declares {}x{}x{} where {}x{}x{} is described",
            declared.0, declared.1, declared.2, expect.0, expect.1, expect.2
        )));
    }
    if expect.0.saturating_mul(expect.1).saturating_mul(expect.2) > MAX_SAMPLES {
        return Err(malformed("codestream", "image too large"));
    }
    let frame = match codec {
        Codec::Jpeg => decode_jpeg(data)?,
        Codec::JpegLs => {
            let img = crate::jpegls::decode(data).map_err(|e| malformed("JPEG-LS", e))?;
            Frame {
                width: img.width,
                height: img.height,
                components: img.components,
                samples: img.samples.into_iter().map(u32::from).collect(),
            }
        }
        Codec::Jpeg2000 => decode_jpeg2000(data)?,
    };
    if (frame.width, frame.height, frame.components) != expect {
        return Err(BindingError::Malformed(format!(
            "a frame decodes to {}x{}x{} where {}x{}x{} is described",
            frame.width, frame.height, frame.components, expect.0, expect.1, expect.2
        )));
    }
    Ok(frame)
}

fn decode_jpeg(data: &[u8]) -> Result<Frame, BindingError> {
    let mut d = jpeg_decoder::Decoder::new(data);
    d.set_color_transform(jpeg_decoder::ColorTransform::None);
    d.set_max_decoding_buffer_size(MAX_SAMPLES * 2);
    d.read_info().map_err(|e| malformed("JPEG", e))?;
    let info = d
        .info()
        .ok_or_else(|| malformed("JPEG", "no frame header"))?;
    let pixels = d.decode().map_err(|e| malformed("JPEG", e))?;
    let (width, height) = (info.width as usize, info.height as usize);
    let components = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 | jpeg_decoder::PixelFormat::L16 => 1,
        jpeg_decoder::PixelFormat::RGB24 => 3,
        jpeg_decoder::PixelFormat::CMYK32 => 4,
    };
    let n = width * height * components;
    // Lossless frames of more than 8 bits (of any component count) come as native-endian u16.
    let samples: Vec<u32> = if pixels.len() == n * 2 {
        pixels
            .chunks_exact(2)
            .map(|c| u16::from_ne_bytes([c[0], c[1]]) as u32)
            .collect()
    } else if pixels.len() == n {
        pixels.iter().map(|&b| b as u32).collect()
    } else {
        return Err(malformed(
            "JPEG",
            format!(
                "{} bytes decoded for {width}x{height}x{components}",
                pixels.len()
            ),
        ));
    };
    Ok(Frame {
        width,
        height,
        components,
        samples,
    })
}

fn decode_jpeg2000(data: &[u8]) -> Result<Frame, BindingError> {
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
    let mut samples = vec![0u32; n];
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
/// agree, all items for a single frame, else at items that start a new codestream.
pub fn frames<'a>(
    items: &'a [&'a [u8]],
    offsets: &[u8],
    count: usize,
) -> Result<Vec<Vec<u8>>, BindingError> {
    if count == 1 {
        return Ok(vec![items.concat()]);
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
            pos += 8 + f.len();
        }
        for (i, f) in items.iter().enumerate() {
            let frame = table.iter().rposition(|&o| o <= starts[i]).unwrap_or(0);
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
        return Err(BindingError::Malformed(format!(
            "{} frames found in the pixel data items where {count} are described",
            out.len()
        )));
    }
    Ok(out)
}
