//! The byte stream a DICOM signature covers (PS3.3 C.12.1.1.3.1): the Data Elements Signed,
//! encoded in Explicit VR Little Endian in "signature format", followed by attributes of the
//! signature's own Digital Signatures Sequence item.

use radveil_part10::{DataSet, Element, Value, Vr, ITEM, SEQUENCE_DELIMITATION};
use radveil_standard::tags;

use crate::SignatureError;

/// Attributes of the Digital Signatures Sequence item that are part of the signed stream,
/// in order (PS3.3 C.12.1.1.3.1.2, as DCMTK implements it: the certificate, the signature
/// and the certified timestamp, which is added later, are not).
const ITEM_ATTRIBUTES: [u32; 5] = [
    tags::MACID_NUMBER,
    tags::DIGITAL_SIGNATURE_UID,
    tags::DIGITAL_SIGNATURE_DATE_TIME,
    tags::CERTIFICATE_TYPE,
    tags::DIGITAL_SIGNATURE_PURPOSE_CODE_SEQUENCE,
];

/// Builds the signed byte stream for `tags` of `ds` and the signature item `sig`. The data
/// set's values are taken to be little endian (the engine's encodings keep values as read;
/// big-endian data sets are rare and their binary values are swapped by [`swap`]).
/// How the data set's values are stored, which the stream must normalise.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamContext {
    /// Binary values are big endian (Explicit VR Big Endian): swapped to little endian.
    pub big_endian: bool,
    /// Pixel Representation is 1: "US or SS" elements read without an explicit VR are SS.
    pub signed_pixels: bool,
}

impl StreamContext {
    /// The context of a top-level data set stored in `enc`.
    pub fn of(top: &DataSet<'_>, enc: radveil_part10::Encoding) -> StreamContext {
        let pr = top
            .get(tags::PIXEL_REPRESENTATION)
            .and_then(|e| e.bytes())
            .filter(|b| b.len() >= 2);
        let signed_pixels = pr.is_some_and(|b| {
            if enc == radveil_part10::Encoding::ExplicitBig {
                b[1] == 1 && b[0] == 0
            } else {
                b[0] == 1 && b[1] == 0
            }
        });
        StreamContext {
            big_endian: enc == radveil_part10::Encoding::ExplicitBig,
            signed_pixels,
        }
    }
}

/// The byte stream a signature covers: the elements `tags` of `ds` and the attributes of
/// the Digital Signatures item `sig`, in the signature format of PS3.15 C.12.1.1.3.
pub fn signature_stream(
    ds: &DataSet<'_>,
    tags: &[u32],
    sig: &DataSet<'_>,
    ctx: StreamContext,
) -> Result<Vec<u8>, SignatureError> {
    let mut out = Vec::with_capacity(64 * 1024);
    for &tag in tags {
        let el = ds.get(tag).ok_or_else(|| {
            SignatureError::Malformed(format!(
                "signed attribute ({:04X},{:04X}) is missing",
                tag >> 16,
                tag & 0xFFFF
            ))
        })?;
        element(el, &mut out, ctx);
    }
    for tag in ITEM_ATTRIBUTES {
        if let Some(el) = sig.get(tag) {
            element(el, &mut out, ctx);
        }
    }
    Ok(out)
}

fn header(out: &mut Vec<u8>, tag: u32, vr: Vr) {
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&(tag as u16).to_le_bytes());
    out.extend_from_slice(&vr.code());
}

fn tag(out: &mut Vec<u8>, t: u32) {
    out.extend_from_slice(&((t >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&(t as u16).to_le_bytes());
}

fn element(el: &Element<'_>, out: &mut Vec<u8>, ctx: StreamContext) {
    let vr = if el.vr == Vr::US && ctx.signed_pixels && radveil_standard::is_us_or_ss(el.tag) {
        Vr::SS
    } else {
        el.vr
    };
    match &el.value {
        Value::Bytes(b) => {
            let odd = b.len() % 2 == 1;
            let len = b.len() + odd as usize;
            header(out, el.tag, vr);
            if vr.has_long_length() {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&(len as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(len as u16).to_le_bytes());
            }
            let unit = vr.swap_unit();
            if ctx.big_endian && unit > 1 {
                for chunk in b.chunks(unit) {
                    out.extend(chunk.iter().rev());
                }
            } else {
                out.extend_from_slice(b);
            }
            if odd {
                out.push(if el.vr.is_text() && el.vr != Vr::UI {
                    b' '
                } else {
                    0
                });
            }
        }
        Value::Sequence(items) => {
            // Signature format: no sequence or item lengths, no Item Delimitation Items; the
            // item tags and the Sequence Delimitation Item tag are kept.
            header(out, el.tag, Vr::SQ);
            out.extend_from_slice(&[0, 0]);
            for item in items {
                tag(out, ITEM);
                for e in &item.elements {
                    if e.tag & 0xFFFF != 0 {
                        element(e, out, ctx);
                    }
                }
            }
            tag(out, SEQUENCE_DELIMITATION);
        }
        Value::Fragments(frags) => {
            // Encapsulated pixel data the same way: each fragment is its item tag and bytes.
            header(out, el.tag, el.vr);
            out.extend_from_slice(&[0, 0]);
            for f in frags {
                tag(out, ITEM);
                out.extend_from_slice(f);
                if f.len() % 2 == 1 {
                    out.push(0);
                }
            }
            tag(out, SEQUENCE_DELIMITATION);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn el(tag: u32, vr: Vr, v: &[u8]) -> Element<'static> {
        Element {
            tag,
            vr,
            value: Value::Bytes(Cow::Owned(v.to_vec())),
        }
    }

    /// The signature format as DCMTK writes it (`dcmsign --dump`): no sequence or item
    /// lengths, item tags and the sequence delimitation tag kept, odd text padded.
    #[test]
    fn sequences_and_fragments_in_signature_format() {
        let mut item = DataSet::default();
        item.put(el(tags::CODE_VALUE, Vr::SH, b"1"));
        let mut ds = DataSet::default();
        ds.put(Element {
            tag: tags::REFERENCED_IMAGE_SEQUENCE,
            vr: Vr::SQ,
            value: Value::Sequence(vec![item]),
        });
        ds.put(Element {
            tag: tags::PIXEL_DATA,
            vr: Vr::OB,
            value: Value::Fragments(vec![Cow::Owned(vec![]), Cow::Owned(vec![1, 2])]),
        });
        let mut sig = DataSet::default();
        sig.put(el(tags::MACID_NUMBER, Vr::US, &[0, 0]));
        sig.put(el(tags::CERTIFICATE_OF_SIGNER, Vr::OB, &[9, 9])); // not in the stream
        let s = signature_stream(
            &ds,
            &[tags::REFERENCED_IMAGE_SEQUENCE, tags::PIXEL_DATA],
            &sig,
            StreamContext::default(),
        )
        .unwrap();
        let want: Vec<u8> = [
            &[0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0][..],
            &[0xFE, 0xFF, 0x00, 0xE0],
            &[0x08, 0x00, 0x00, 0x01, b'S', b'H', 2, 0, b'1', b' '],
            &[0xFE, 0xFF, 0xDD, 0xE0],
            &[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0],
            &[0xFE, 0xFF, 0x00, 0xE0],
            &[0xFE, 0xFF, 0x00, 0xE0, 1, 2],
            &[0xFE, 0xFF, 0xDD, 0xE0],
            &[0x00, 0x04, 0x05, 0x00, b'U', b'S', 2, 0, 0, 0],
        ]
        .concat();
        assert_eq!(s, want);
    }

    #[test]
    fn big_endian_values_are_swapped_and_us_or_ss_resolved() {
        let mut ds = DataSet::default();
        ds.put(el(tags::SMALLEST_IMAGE_PIXEL_VALUE, Vr::US, &[0x00, 0x05]));
        let ctx = StreamContext {
            big_endian: true,
            signed_pixels: true,
        };
        let s = signature_stream(
            &ds,
            &[tags::SMALLEST_IMAGE_PIXEL_VALUE],
            &DataSet::default(),
            ctx,
        )
        .unwrap();
        assert_eq!(s, [0x28, 0x00, 0x06, 0x01, b'S', b'S', 2, 0, 0x05, 0x00]);
    }

    #[test]
    fn a_missing_signed_attribute_is_an_error() {
        assert!(signature_stream(
            &DataSet::default(),
            &[tags::PATIENT_NAME],
            &DataSet::default(),
            StreamContext::default()
        )
        .is_err());
    }
}
