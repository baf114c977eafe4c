//! Decodes arbitrary codestreams with every pixel codec of `radveil-pixeldata` (JPEG,
//! JPEG-LS, JPEG 2000), and arbitrary RLE and native pixel data through `decode_pixel_data`
//! and `for_each_frame` (which must agree): a malformed codestream must give an error,
//! never a panic, and nothing may be allocated beyond the memory budget.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use radveil_part10::{DataSet, Element, Encoding, MemoryBudget, Value, Vr};
use radveil_pixeldata::codec::{decode, dimensions, Codec};
use radveil_standard::tags;

fuzz_target!(|data: &[u8]| {
    let budget = MemoryBudget::new(64 << 20);
    for codec in [Codec::Jpeg, Codec::JpegLs, Codec::Jpeg2000] {
        // As the pixel decoder does: the codestream must declare the size the data set
        // describes (here, whatever it declares, up to a fuzzing-sized image).
        let expect = dimensions(codec, data).unwrap_or((8, 8, 1));
        if expect
            .0
            .saturating_mul(expect.1)
            .saturating_mul(expect.2.max(1))
            <= 1 << 20
        {
            let _ = decode(codec, data, expect, &budget);
        }
    }
    // The first 8 bytes describe an image (rows, columns, bits, frames); the rest is its
    // pixel data, as encapsulated fragments (RLE, JPEG-LS) and as native bytes.
    if data.len() < 8 {
        return;
    }
    let (head, rest) = data.split_at(8);
    let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    let mut ds = DataSet::default();
    let us = |tag: u32, v: u16| Element {
        tag,
        vr: Vr::US,
        value: Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec())),
    };
    ds.put(us(tags::ROWS, u16_at(0)));
    ds.put(us(tags::COLUMNS, u16_at(2)));
    ds.put(us(
        tags::BITS_ALLOCATED,
        [1, 8, 16, 32][head[4] as usize % 4],
    ));
    ds.put(us(tags::SAMPLES_PER_PIXEL, 1 + u16::from(head[5] % 3)));
    ds.put(us(tags::PLANAR_CONFIGURATION, u16::from(head[5] >> 7)));
    ds.put(Element::text(
        tags::NUMBER_OF_FRAMES,
        Vr::IS,
        &u16_at(6).to_string(),
    ));
    for (ts, value) in [
        (
            "1.2.840.10008.1.2.5",
            Value::Fragments(vec![Cow::Borrowed(&[][..]), Cow::Borrowed(rest)]),
        ),
        (
            "1.2.840.10008.1.2.4.80",
            Value::Fragments(rest.chunks(64).map(Cow::Borrowed).collect()),
        ),
        ("1.2.840.10008.1.2.1", Value::Bytes(Cow::Borrowed(rest))),
    ] {
        ds.put(Element {
            tag: radveil_part10::PIXEL_DATA,
            vr: Vr::OB,
            value,
        });
        let whole =
            radveil_pixeldata::decode_pixel_data(&ds, Encoding::ExplicitLittle, ts, &budget);
        if let Ok(d) = &whole {
            let description = d.description.clone().expect("pixel data present");
            assert_eq!(d.len(), description.native_len());
        }
        // Frame by frame (as the binding hash reads them): the same bytes, or an error.
        let mut frames = Vec::new();
        let streamed = radveil_pixeldata::for_each_frame(
            &ds,
            Encoding::ExplicitLittle,
            ts,
            &budget,
            &mut |f| frames.extend_from_slice(f),
        );
        if let (Ok(d), Ok(_)) = (&whole, &streamed) {
            assert_eq!(&d[..], &frames[..]);
        }
    }
    assert_eq!(budget.in_use(), 0);
});
