//! The Image Pixel description of a data set (PS3.3 C.7.6.3), read once and checked.

use radveil_part10::{DataSet, Encoding};
use radveil_standard::tags;

use crate::PixelError;

/// How an image's pixels are described: the attributes of the Image Pixel module that fix
/// the size and layout of Pixel Data, and the byte counts they imply, computed with checked
/// arithmetic once, here. Every reader of pixel data (the binding hash, the advisory checks,
/// the series reader of defacing) takes its sizes from this one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePixel {
    /// Rows (0028,0010).
    pub rows: u16,
    /// Columns (0028,0011).
    pub columns: u16,
    /// Samples per Pixel (0028,0002); 1 when absent.
    pub samples_per_pixel: u16,
    /// Bits Allocated (0028,0100); 8 when absent.
    pub bits_allocated: u16,
    /// Bits Stored (0028,0101); Bits Allocated when absent.
    pub bits_stored: u16,
    /// Pixel Representation (0028,0103): 1 for two's complement samples.
    pub pixel_representation: u16,
    /// Number of Frames (0028,0008); 1 when absent or empty.
    pub number_of_frames: usize,
    /// Planar Configuration (0028,0006): 1 for colour by plane.
    pub planar_configuration: u16,
    /// Photometric Interpretation (0028,0004), trimmed; empty when absent.
    pub photometric_interpretation: String,
    pixels_per_frame: usize,
    frame_len: usize,
    native_len: usize,
}

fn overflow() -> PixelError {
    PixelError::Malformed(
        "Rows (0028,0010) × Columns (0028,0011) × Samples per Pixel (0028,0002) × \
         Number of Frames (0028,0008) × Bits Allocated (0028,0100) overflows"
            .into(),
    )
}

/// Number of Frames (0028,0008) of a data set: 1 when absent, empty or 0 (a single-frame
/// image); an error when it is not a non-negative integer that fits in memory sizes.
pub fn number_of_frames(ds: &DataSet<'_>) -> Result<usize, PixelError> {
    let Some(text) = ds.string(tags::NUMBER_OF_FRAMES) else {
        return Ok(1);
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(1);
    }
    let n = text
        .strip_prefix('+')
        .unwrap_or(text)
        .parse::<u64>()
        .map_err(|_| {
            PixelError::Malformed("Number of Frames (0028,0008) is not an integer".into())
        })?;
    usize::try_from(n.max(1)).map_err(|_| overflow())
}

impl ImagePixel {
    /// Reads and checks the description of the pixels of `ds` (values encoded as `enc`).
    ///
    /// Absent attributes take the values radveil has always assumed for them (one sample
    /// per pixel, 8 bits, one frame). Errors: Rows or Columns absent or zero, Bits Allocated
    /// zero or above 64, a Number of Frames that is not an integer, and sizes whose product
    /// overflows.
    pub fn from_dataset(ds: &DataSet<'_>, enc: Encoding) -> Result<ImagePixel, PixelError> {
        let rows = ds.u16_value(tags::ROWS, enc).unwrap_or(0);
        let columns = ds.u16_value(tags::COLUMNS, enc).unwrap_or(0);
        if rows == 0 || columns == 0 {
            return Err(PixelError::Malformed(
                "Rows (0028,0010) or Columns (0028,0011) is absent or zero".into(),
            ));
        }
        let samples_per_pixel = ds
            .u16_value(tags::SAMPLES_PER_PIXEL, enc)
            .unwrap_or(1)
            .max(1);
        let bits_allocated = ds.u16_value(tags::BITS_ALLOCATED, enc).unwrap_or(8);
        if bits_allocated == 0 || bits_allocated > 64 {
            return Err(PixelError::Malformed(
                "Bits Allocated (0028,0100) is not between 1 and 64".into(),
            ));
        }
        let bits_stored = ds
            .u16_value(tags::BITS_STORED, enc)
            .unwrap_or(bits_allocated);
        let number_of_frames = number_of_frames(ds)?;
        let pixels_per_frame = usize::from(rows)
            .checked_mul(usize::from(columns))
            .ok_or_else(overflow)?;
        let samples_per_frame = pixels_per_frame
            .checked_mul(usize::from(samples_per_pixel))
            .ok_or_else(overflow)?;
        let bytes_per_sample = usize::from(bits_allocated.div_ceil(8));
        let frame_len = samples_per_frame
            .checked_mul(bytes_per_sample)
            .ok_or_else(overflow)?;
        let native_len = if bits_allocated == 1 {
            // Bit-packed frames follow each other without padding (PS3.5 8.1.1).
            samples_per_frame
                .checked_mul(number_of_frames)
                .ok_or_else(overflow)?
                .div_ceil(8)
        } else {
            frame_len
                .checked_mul(number_of_frames)
                .ok_or_else(overflow)?
        };
        Ok(ImagePixel {
            rows,
            columns,
            samples_per_pixel,
            bits_allocated,
            bits_stored,
            pixel_representation: ds.u16_value(tags::PIXEL_REPRESENTATION, enc).unwrap_or(0),
            number_of_frames,
            planar_configuration: ds.u16_value(tags::PLANAR_CONFIGURATION, enc).unwrap_or(0),
            photometric_interpretation: ds
                .string(tags::PHOTOMETRIC_INTERPRETATION)
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            pixels_per_frame,
            frame_len,
            native_len,
        })
    }

    /// This description with Bits Allocated `bits` (and the byte counts it implies): for
    /// float pixel data, whose values' size stands when Bits Allocated is absent.
    pub(crate) fn with_bits(d: ImagePixel, bits: u16) -> Result<ImagePixel, PixelError> {
        let bytes = usize::from(bits.div_ceil(8));
        let frame_len = d
            .pixels_per_frame
            .checked_mul(usize::from(d.samples_per_pixel))
            .and_then(|n| n.checked_mul(bytes))
            .ok_or_else(overflow)?;
        let native_len = frame_len
            .checked_mul(d.number_of_frames)
            .ok_or_else(overflow)?;
        Ok(ImagePixel {
            bits_allocated: bits,
            bits_stored: bits,
            frame_len,
            native_len,
            ..d
        })
    }

    /// Rows × Columns.
    pub fn pixels_per_frame(&self) -> usize {
        self.pixels_per_frame
    }

    /// Bytes of one sample as decoded (Bits Allocated rounded up to whole bytes; 1 for
    /// bit-packed images).
    pub fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated.div_ceil(8))
    }

    /// Bytes of one decoded frame (Rows × Columns × Samples per Pixel × bytes per sample).
    /// For a bit-packed image, the bytes of a frame unpacked to one byte per sample.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Bytes of native (uncompressed) Pixel Data the description implies, without the
    /// padding byte of an odd length; also the size of the decoded pixels of an image of 8
    /// or more bits.
    pub fn native_len(&self) -> usize {
        self.native_len
    }

    /// Whether `len` bytes of native Pixel Data are what the description implies: exactly
    /// [`ImagePixel::native_len`], or one more when that is odd (the padding to even
    /// length). Neither fewer (a truncated image) nor more (bytes the description leaves
    /// out, which no hash over the described pixels would cover).
    pub fn matches_native_len(&self, len: usize) -> bool {
        len == self.native_len
            || (self.native_len % 2 == 1 && Some(len) == self.native_len.checked_add(1))
    }

    /// An error naming both counts when `len` bytes of native Pixel Data are not what the
    /// description implies ([`ImagePixel::matches_native_len`]).
    pub fn check_native_len(&self, len: usize) -> Result<(), PixelError> {
        if self.matches_native_len(len) {
            Ok(())
        } else {
            Err(PixelError::Malformed(format!(
                "Pixel Data (7FE0,0010) holds {len} bytes but Rows × Columns × frames × \
                 samples × bits describe {}",
                self.native_len
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use radveil_part10::{Element, Value, Vr};

    use super::*;

    fn image(rows: u16, cols: u16, spp: u16, bits: u16, frames: Option<&str>) -> DataSet<'static> {
        let mut ds = DataSet::default();
        let us = |v: u16| Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec()));
        for (tag, v) in [
            (tags::ROWS, rows),
            (tags::COLUMNS, cols),
            (tags::SAMPLES_PER_PIXEL, spp),
            (tags::BITS_ALLOCATED, bits),
        ] {
            ds.put(Element {
                tag,
                vr: Vr::US,
                value: us(v),
            });
        }
        if let Some(f) = frames {
            ds.put(Element::text(tags::NUMBER_OF_FRAMES, Vr::IS, f));
        }
        ds
    }

    #[test]
    fn byte_counts_follow_the_description() {
        let d =
            ImagePixel::from_dataset(&image(512, 256, 1, 16, Some("3")), Encoding::ExplicitLittle)
                .unwrap();
        assert_eq!(d.pixels_per_frame(), 512 * 256);
        assert_eq!(d.frame_len(), 512 * 256 * 2);
        assert_eq!(d.native_len(), 512 * 256 * 2 * 3);
        assert!(d.matches_native_len(d.native_len()));
        assert!(!d.matches_native_len(d.native_len() + 2));
        assert!(!d.matches_native_len(d.native_len() - 2));
        // Bit-packed frames are packed back to back; an odd length is padded by one byte.
        let d = ImagePixel::from_dataset(&image(3, 3, 1, 1, Some("2")), Encoding::ExplicitLittle)
            .unwrap();
        assert_eq!(d.native_len(), 3);
        assert!(d.matches_native_len(3) && d.matches_native_len(4) && !d.matches_native_len(5));
        // Absent or empty Number of Frames is one frame.
        let d = ImagePixel::from_dataset(&image(2, 2, 3, 8, Some(" ")), Encoding::ExplicitLittle)
            .unwrap();
        assert_eq!((d.number_of_frames, d.native_len()), (1, 12));
    }

    #[test]
    fn hostile_descriptions_are_errors_not_small_sizes() {
        for (frames, spp, bits) in [
            // 2^61 frames: the product overflows 64 bits (it wrapped to 0 before).
            ("2305843009213693952", 1, 16),
            ("9223372036854775808", 1, 8),
            ("18446744073709551615", 3, 64),
            ("99999999999999999999999", 1, 8),
            ("-1", 1, 8),
            ("1.5", 1, 8),
        ] {
            let ds = image(65535, 65535, spp, bits, Some(frames));
            assert!(
                ImagePixel::from_dataset(&ds, Encoding::ExplicitLittle).is_err(),
                "{frames}"
            );
        }
        for ds in [
            image(0, 512, 1, 16, None),
            image(512, 0, 1, 16, None),
            image(512, 512, 1, 0, None),
            image(512, 512, 1, 72, None),
        ] {
            assert!(ImagePixel::from_dataset(&ds, Encoding::ExplicitLittle).is_err());
        }
    }
}
