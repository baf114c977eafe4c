//! Decodes arbitrary codestreams with every pixel codec the binding hash uses (JPEG, JPEG-LS,
//! JPEG 2000): a malformed codestream must give an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_integrity::codec::{decode, dimensions, Codec};

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::Jpeg, Codec::JpegLs, Codec::Jpeg2000] {
        // As the binding hash does: the codestream must declare the size the data set
        // describes (here, whatever it declares, up to a fuzzing-sized image).
        let expect = dimensions(codec, data).unwrap_or((8, 8, 1));
        if expect.0 * expect.1 * expect.2.max(1) <= 1 << 20 {
            let _ = decode(codec, data, expect);
        }
    }
});
