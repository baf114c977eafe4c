//! Decodes arbitrary codestreams with every pixel codec the binding hash uses (JPEG, JPEG-LS,
//! JPEG 2000): a malformed codestream must give an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_integrity::codec::{decode, Codec};

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::Jpeg, Codec::JpegLs, Codec::Jpeg2000] {
        let _ = decode(codec, data);
    }
});
