//! Pixel data of DICOM images: one checked description of the pixels (rows, columns,
//! samples, bits, frames) and the codecs that decode them, within a memory budget.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
