//! The gateway's WADO-RS work on a stored instance, whatever its bytes: the metadata copy
//! (DICOM JSON made at STOW-RS) is an object whose bulk data URIs all take the base URL,
//! and frames, bulk data and rendering answer or refuse without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_web::{frames, metadata, rendered};

const KEY: &[u8] = b"\"BulkDataURI\":\"";
const BASE: &[u8] = b"http://h/dicom-web";

fuzz_target!(|data: &[u8]| {
    if let Some(copy) = metadata::copy(data) {
        assert!(copy.starts_with(b"{") && copy.ends_with(b"}"));
        let mut out = Vec::new();
        metadata::with_base(&copy, "http://h/dicom-web", &mut out);
        let keys = copy.windows(KEY.len()).filter(|w| *w == KEY).count();
        let based = out
            .windows(KEY.len() + BASE.len())
            .filter(|w| w.starts_with(KEY) && w.ends_with(BASE))
            .count();
        assert_eq!(keys, based, "every bulk data URI takes the base");
        assert_eq!(out.len(), copy.len() + keys * BASE.len());
    }
    let _ = frames::frames_of(data, &[1, 2], None);
    let opts = rendered::Options::default();
    let _ = rendered::render_file(data, 0, rendered::Rendered::Png, &opts);
});
