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

/// The most samples one frame may decode to (a 64k × 64k × 4 image is 2^34: refused).
const MAX_SAMPLES: usize = 1 << 30;

fn malformed(what: &str, e: impl std::fmt::Display) -> BindingError {
    BindingError::Malformed(format!("{what}: {e}"))
}

/// Decodes one frame's codestream.
pub fn decode(codec: Codec, data: &[u8]) -> Result<Frame, BindingError> {
    match codec {
        Codec::Jpeg => decode_jpeg(data),
        Codec::JpegLs => {
            let img = crate::jpegls::decode(data).map_err(|e| malformed("JPEG-LS", e))?;
            Ok(Frame {
                width: img.width,
                height: img.height,
                components: img.components,
                samples: img.samples.into_iter().map(u32::from).collect(),
            })
        }
        Codec::Jpeg2000 => decode_jpeg2000(data),
    }
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
    let data = items;
    if count == 1 {
        return Ok(vec![data.concat()]);
    }
    if data.len() == count {
        return Ok(data.iter().map(|f| f.to_vec()).collect());
    }
    let table: Vec<usize> = offsets
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    if table.len() == count {
        // Offsets count item headers (8 bytes each) and values from the first item.
        let mut pos = 0usize;
        let mut starts = Vec::with_capacity(data.len());
        for f in data {
            starts.push(pos);
            pos += 8 + f.len();
        }
        for (i, f) in data.iter().enumerate() {
            let frame = table.iter().rposition(|&o| o <= starts[i]).unwrap_or(0);
            while out.len() <= frame {
                out.push(Vec::new());
            }
            out[frame].extend_from_slice(f);
        }
    } else {
        for f in data {
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
