//! Defacing head CT and MRI, and checking that no face can be found afterwards.
//!
//! A head scan holds enough geometry to render a recognisable face. This crate reads
//! volumes ([`nifti_io`]), renders their skin surface from several views ([`render`]) and
//! runs a face detector on the renders ([`face`]).

#![forbid(unsafe_code)]

pub mod face;
pub mod nifti_io;
pub mod render;
pub mod volume;

pub use face::{check as face_check, FaceCheck, FACE_THRESHOLD};
pub use volume::Volume;
