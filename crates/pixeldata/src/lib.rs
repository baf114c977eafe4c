//! Pixel data of DICOM images: one checked description of the pixels (rows, columns,
//! samples, bits, frames) and the codecs that decode them, within a memory budget.
//!
//! Every size a data set or a codestream claims is computed with checked arithmetic and
//! compared with the bytes present before anything is allocated; what is then allocated is
//! first reserved from a [`MemoryBudget`], so a hostile header gives an error, never a
//! smaller result, a panic or an allocation the process cannot make.
//!
//! - [`ImagePixel`]: the Image Pixel description of a data set and the byte counts it implies.
//! - [`decode_pixel_data`]: the pixel data decoded to native little endian, samples
//!   interleaved (native, RLE Lossless here; JPEG, JPEG-LS and JPEG 2000 through [`codec`]).
//! - [`float`]: Float and Double Float Pixel Data (7FE0,0008 and 7FE0,0009), one frame at a
//!   time.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::arithmetic_side_effects)]

pub mod codec;
mod description;
pub mod float;
pub mod jpegls;
mod pixels;
mod rle;

use std::sync::OnceLock;

pub use description::{number_of_frames, ImagePixel};
pub use pixels::{decode_frame, decode_pixel_data, for_each_frame, DecodedPixels};
pub use radveil_part10::{BudgetError, MemoryBudget};

/// Why pixel data could not be described or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PixelError {
    /// Pixel data in a transfer syntax this build cannot decode.
    #[error("pixel data in transfer syntax {0} cannot be decoded here")]
    Unsupported(String),
    /// Pixel data, or its description, that is inconsistent or impossible.
    #[error("pixel data: {0}")]
    Malformed(String),
    /// Decoding would need more memory than the budget grants.
    #[error("pixel data: {0}")]
    Memory(#[from] BudgetError),
}

/// The limit of [`default_budget`]: 4 GiB, above the decoded size of any single image a
/// scanner writes (a 16k × 8k × 16-bit frame is 256 MiB), far below what a hostile header
/// can claim.
pub const DEFAULT_BUDGET_BYTES: u64 = 4 << 30;

/// A process-wide budget of [`DEFAULT_BUDGET_BYTES`], for callers that do not pass their
/// run's own budget (the functions without `_with_budget`). Shared by every thread, so
/// concurrent decodes together stay within it.
pub fn default_budget() -> &'static MemoryBudget {
    static BUDGET: OnceLock<MemoryBudget> = OnceLock::new();
    BUDGET.get_or_init(|| MemoryBudget::new(DEFAULT_BUDGET_BYTES))
}

/// A vector of `len` zeroed values whose memory the system actually granted: an allocation
/// the system refuses is an error here, where `vec!` would abort the process (an abort no
/// `catch_unwind` can turn into a per-file error).
pub(crate) fn zeroed<T: Clone + Default>(len: usize) -> Result<Vec<T>, PixelError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| PixelError::Malformed(format!("{len} values cannot be allocated")))?;
    v.resize(len, T::default());
    Ok(v)
}

/// An empty vector with room for `len` values granted by the system (see [`zeroed`]).
pub(crate) fn with_capacity<T>(len: usize) -> Result<Vec<T>, PixelError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| PixelError::Malformed(format!("{len} values cannot be allocated")))?;
    Ok(v)
}
