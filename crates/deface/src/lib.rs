//! Defacing head CT and MRI, and checking that no face can be found afterwards.
//!
//! A head scan holds enough geometry to render a recognisable face. This crate reads
//! volumes (NIfTI: [`nifti_io`]; DICOM series: [`series`]), removes the face and ears with the head's own geometry
//! ([`deface`](mod@deface), on a patient-aligned [`grid`]), or replaces the face with a smooth surface
//! ([`reface`](mod@reface)), renders the skin surface from several views
//! ([`render`]) and runs a face detector on the renders ([`face`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod deface;
pub mod face;
pub mod grid;
pub mod nifti_io;
pub mod reface;
pub mod render;
pub mod series;
pub mod volume;

pub use deface::{deface, DefaceError, DefaceOptions, Defaced};
pub use face::{check as face_check, FaceCheck, FACE_THRESHOLD};
pub use reface::{reface, Refaced};
pub use volume::Volume;
