//! RLE Lossless (PS3.5 Annex G) and the layout of colour-by-plane frames.

use crate::PixelError;

fn malformed(why: &str) -> PixelError {
    PixelError::Malformed(why.into())
}

/// The most bytes a PackBits segment can decode to per byte it holds: a two-byte run code
/// gives 128 bytes.
const MAX_EXPANSION: usize = 64;

/// Decodes one RLE Lossless frame to colour-by-plane, little-endian samples. The segment
/// table is checked against the frame's bytes, and every segment against the bytes it must
/// decode to, before the frame is allocated.
pub(crate) fn rle_frame(
    frame: &[u8],
    pixels: usize,
    spp: usize,
    bps: usize,
) -> Result<Vec<u8>, PixelError> {
    if frame.len() < 64 {
        return Err(malformed("RLE header shorter than 64 bytes"));
    }
    let word = |i: usize| -> usize {
        let b = |k: usize| {
            frame
                .get(i.saturating_mul(4).saturating_add(k))
                .copied()
                .unwrap_or(0)
        };
        u32::from_le_bytes([b(0), b(1), b(2), b(3)]) as usize
    };
    let segments = word(0);
    if Some(segments) != spp.checked_mul(bps) || segments > 15 {
        return Err(PixelError::Malformed(format!(
            "{segments} RLE segments for {spp} samples of {bps} bytes"
        )));
    }
    let mut ranges = Vec::with_capacity(segments);
    for seg in 0..segments {
        // `seg` < 15: no overflow.
        #[allow(clippy::arithmetic_side_effects)]
        let (start, end) = (
            word(seg + 1),
            if seg + 1 < segments {
                word(seg + 2)
            } else {
                frame.len()
            },
        );
        if start < 64 || start > end || end > frame.len() {
            return Err(malformed("RLE segment offsets out of range"));
        }
        #[allow(clippy::arithmetic_side_effects)] // end >= start, checked above
        let len = end - start;
        if len.saturating_mul(MAX_EXPANSION) < pixels {
            return Err(malformed(
                "an RLE segment is too short for the pixels described",
            ));
        }
        ranges.push((start, end));
    }
    let total = pixels
        .checked_mul(segments)
        .ok_or_else(|| malformed("RLE frame size overflows"))?;
    let mut out = crate::zeroed::<u8>(total)?;
    for (seg, &(start, end)) in ranges.iter().enumerate() {
        let decoded = packbits(&frame[start..end], pixels)?;
        // Segment order: for each sample, its bytes from most to least significant. All
        // indices are below `pixels * spp * bps` = `total`.
        #[allow(clippy::arithmetic_side_effects)]
        {
            let (sample, byte_from_msb) = (seg / bps, seg % bps);
            let byte_le = bps - 1 - byte_from_msb;
            for (p, v) in decoded.iter().enumerate() {
                out[(sample * pixels + p) * bps + byte_le] = *v;
            }
        }
    }
    Ok(out)
}

/// PackBits as used by DICOM RLE: decodes up to `len` bytes.
pub(crate) fn packbits(src: &[u8], len: usize) -> Result<Vec<u8>, PixelError> {
    let mut out = crate::with_capacity(len)?;
    let mut i = 0usize;
    while i < src.len() && out.len() < len {
        let n = src[i] as i8;
        i = i.saturating_add(1);
        if n >= 0 {
            // 1 to 128 literal bytes.
            let count = usize::from(n.unsigned_abs()).saturating_add(1);
            let end = i.saturating_add(count).min(src.len());
            out.extend_from_slice(&src[i..end]);
            i = end;
        } else if n != -128 {
            // A run of 2 to 128 bytes.
            let count = usize::from(n.unsigned_abs()).saturating_add(1);
            let Some(&v) = src.get(i) else { break };
            out.extend(std::iter::repeat(v).take(count));
            i = i.saturating_add(1);
        }
    }
    if out.len() < len {
        return Err(malformed("RLE segment decodes to too few bytes"));
    }
    out.truncate(len);
    Ok(out)
}

/// Converts colour-by-plane frames to colour-by-pixel, in place of `data`.
pub(crate) fn interleave(
    data: Vec<u8>,
    frames: usize,
    pixels: usize,
    spp: usize,
    bps: usize,
) -> Result<Vec<u8>, PixelError> {
    if spp == 1 {
        return Ok(data);
    }
    let frame_len = pixels
        .checked_mul(spp)
        .and_then(|v| v.checked_mul(bps))
        .filter(|&f| f > 0 && f.checked_mul(frames) == Some(data.len()))
        .ok_or_else(|| malformed("planar frames do not fill the pixel data"))?;
    let mut out = crate::zeroed::<u8>(data.len())?;
    for (src, dst) in data
        .chunks_exact(frame_len)
        .zip(out.chunks_exact_mut(frame_len))
    {
        // Every index is below `frame_len` = pixels * spp * bps.
        #[allow(clippy::arithmetic_side_effects)]
        for s in 0..spp {
            for p in 0..pixels {
                let from = (s * pixels + p) * bps;
                let to = (p * spp + s) * bps;
                dst[to..to + bps].copy_from_slice(&src[from..from + bps]);
            }
        }
    }
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
        assert_eq!(
            interleave(planar, 1, 2, 3, 1).unwrap(),
            vec![1, 3, 5, 2, 4, 6]
        );
        assert!(interleave(vec![1, 2, 3, 4, 5], 1, 2, 3, 1).is_err());
    }

    #[test]
    fn an_rle_segment_too_short_for_its_image_is_refused_before_allocating() {
        // One segment of 2 bytes (a run of 128) cannot fill 2^40 pixels.
        let mut frame = vec![0u8; 64];
        frame[0] = 1;
        frame[4] = 64;
        frame.extend_from_slice(&[0x81, 7]);
        assert!(rle_frame(&frame, 1 << 40, 1, 1).is_err());
        assert_eq!(rle_frame(&frame, 128, 1, 1).unwrap(), vec![7; 128]);
    }
}
