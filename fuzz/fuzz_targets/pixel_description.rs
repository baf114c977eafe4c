//! Reads arbitrary bytes as a DICOM data set and takes its pixel description
//! (`ImagePixel::from_dataset`): it must be an error or a description whose byte counts are
//! consistent (no overflow, a frame times the frames is the whole), never a panic; and
//! where native Pixel Data is present, decoding accepts it exactly when its length matches
//! the count the description implies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_part10::{MemoryBudget, Value};
use radveil_pixeldata::ImagePixel;

fuzz_target!(|data: &[u8]| {
    let mut inflated = Vec::new();
    let Ok((meta, ds, enc)) =
        radveil_part10::read_file(data, &mut inflated, radveil_part10::Limits::default())
    else {
        return;
    };
    let Ok(d) = ImagePixel::from_dataset(&ds, enc) else {
        return;
    };
    assert!(d.rows > 0 && d.columns > 0 && d.number_of_frames > 0);
    assert_eq!(
        d.pixels_per_frame(),
        usize::from(d.rows) * usize::from(d.columns)
    );
    if d.bits_allocated != 1 {
        assert_eq!(
            d.frame_len().checked_mul(d.number_of_frames),
            Some(d.native_len())
        );
    }
    if let Some(Value::Bytes(px)) = ds.get(radveil_part10::PIXEL_DATA).map(|e| &e.value) {
        let budget = MemoryBudget::new(64 << 20);
        let decoded =
            radveil_pixeldata::decode_pixel_data(&ds, enc, &meta.transfer_syntax, &budget);
        if !d.matches_native_len(px.len()) {
            assert!(decoded.is_err());
        } else if let Ok(p) = decoded {
            assert_eq!(p.len(), d.native_len());
        }
    }
});
