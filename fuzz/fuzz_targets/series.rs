//! Reads arbitrary bytes as a DICOM image to deface: the header scan that groups files into
//! volumes, and the assembly of a (multi-frame) image's frames from its functional groups
//! and pixel data must give an error, never a panic or an allocation the data cannot back.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = radveil_deface::series::image_header(data);
    let _ = radveil_deface::series::assemble_with(&[PathBuf::from("fuzz.dcm")], |_| Ok(data.to_vec()));
});
