//! Hashing throughput on one core: the SHA-2 MACs of a signature stream and the binding hash
//! (decoded pixels of a large native image). Prints GB/s; run with
//! `cargo bench -p radveil-integrity --bench hashing`.

use std::borrow::Cow;
use std::time::Instant;

use radveil_integrity::{binding_hash, MacAlgorithm};
use radveil_part10::{DataSet, Element, Encoding, Value, Vr};
use radveil_standard::tags;

fn main() {
    let size = 256 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    for mac in [
        MacAlgorithm::Sha256,
        MacAlgorithm::Sha384,
        MacAlgorithm::Sha512,
        MacAlgorithm::Ripemd160,
    ] {
        let t = Instant::now();
        let d = mac.digest(&data);
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:<10} {:>6.2} GB/s ({} bytes of digest)",
            mac.term(),
            size as f64 / s / 1e9,
            d.len()
        );
    }
    // A 4096 x 4096 x 8-frame 16-bit image: 256 MiB of pixel data.
    let mut ds = DataSet::default();
    let us = |v: u16| Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec()));
    for (tag, v) in [
        (tags::ROWS, 4096u16),
        (tags::COLUMNS, 4096),
        (tags::BITS_ALLOCATED, 16),
        (tags::SAMPLES_PER_PIXEL, 1),
    ] {
        ds.put(Element {
            tag,
            vr: Vr::US,
            value: us(v),
        });
    }
    ds.put(Element::text(tags::NUMBER_OF_FRAMES, Vr::IS, "8"));
    ds.put(Element {
        tag: radveil_part10::PIXEL_DATA,
        vr: Vr::OW,
        value: Value::Bytes(Cow::Borrowed(&data)),
    });
    let t = Instant::now();
    let h = binding_hash(
        &ds,
        Encoding::ExplicitLittle,
        radveil_part10::EXPLICIT_VR_LITTLE_ENDIAN,
    )
    .unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "{:<10} {:>6.2} GB/s (binding hash {:02x}{:02x}..)",
        "binding",
        size as f64 / s / 1e9,
        h[0],
        h[1]
    );
}
