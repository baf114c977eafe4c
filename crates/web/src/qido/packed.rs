//! Attributes packed into one allocation: how the catalogue keeps a study's or a series'
//! search attributes (one boxed byte string per entity instead of a vector of attributes
//! each with a boxed slice of boxed strings: a few hundred bytes instead of a few
//! kilobytes, and one allocation instead of dozens).
//!
//! Layout, attribute after attribute in ascending tag order:
//! `tag` (4 bytes, little endian) · VR (its 2 letters) · size of the values part (LEB128) ·
//! number of values (LEB128) · each value as its length (LEB128) then its UTF-8 bytes.
//! The size lets a look-up skip an attribute without reading its values. Only this module
//! writes it; reading stays total anyway (a malformed entry ends the attributes, never a
//! panic).

use radveil_part10::Vr;

use crate::dicom_json::{Attr, Attrs};

/// Attributes packed into one boxed byte string (see the module's documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Packed(Box<[u8]>);

/// One packed attribute, borrowed: its VR and its values, read as they are iterated.
#[derive(Debug, Clone, Copy)]
pub(super) struct View<'a> {
    /// The value representation.
    pub vr: Vr,
    count: usize,
    values: &'a [u8],
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Reads a LEB128 length at the start of `b`: the length and the bytes after it.
fn take_len(b: &[u8]) -> Option<(usize, &[u8])> {
    let mut n: usize = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let part = usize::from(byte & 0x7f);
        n |= part.checked_shl(u32::try_from(7 * i).ok()?)?;
        if byte & 0x80 == 0 {
            return Some((n, &b[i + 1..]));
        }
    }
    None
}

impl Packed {
    /// Packs attributes (in any order; they are kept in ascending tag order, the first of
    /// a repeated tag only).
    pub fn pack(attrs: &[(u32, Attr)]) -> Packed {
        let mut order: Vec<&(u32, Attr)> = attrs.iter().collect();
        order.sort_by_key(|(t, _)| *t);
        order.dedup_by_key(|(t, _)| *t);
        let mut out = Vec::new();
        let mut values = Vec::new();
        for (tag, a) in order {
            values.clear();
            for v in a.values.iter() {
                put_len(&mut values, v.len());
                values.extend_from_slice(v.as_bytes());
            }
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&a.vr.code());
            put_len(&mut out, values.len());
            put_len(&mut out, a.values.len());
            out.extend_from_slice(&values);
        }
        Packed(out.into_boxed_slice())
    }

    /// The packed attributes, in ascending tag order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, View<'_>)> + '_ {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let (entry, after) = entry(rest)?;
            rest = after;
            Some(entry)
        })
    }

    /// One attribute, if packed.
    pub fn get(&self, tag: u32) -> Option<View<'_>> {
        self.iter()
            .take_while(|(t, _)| *t <= tag)
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v)
    }

    /// Whether every tag of `attrs` is packed already.
    pub fn has_all(&self, attrs: &[(u32, Attr)]) -> bool {
        attrs.iter().all(|(t, _)| self.get(*t).is_some())
    }

    /// The attributes, unpacked (in ascending tag order).
    pub fn unpack(&self) -> Attrs {
        self.iter().map(|(t, v)| (t, v.to_attr())).collect()
    }

    /// Adds the attributes of `from` that are not packed yet (PS3.4 C.6: one value per
    /// entity, so what is there stays).
    pub fn merge(&mut self, from: &[(u32, Attr)]) {
        if self.has_all(from) {
            return;
        }
        let mut all = self.unpack();
        all.extend(from.iter().filter(|(t, _)| self.get(*t).is_none()).cloned());
        *self = Packed::pack(&all);
    }

    /// Bytes held (for tests of the footprint).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Reads the attribute at the start of `b`: it, and the bytes after it.
fn entry(b: &[u8]) -> Option<((u32, View<'_>), &[u8])> {
    let (tag, rest) = b.split_first_chunk::<4>()?;
    let (code, rest) = rest.split_first_chunk::<2>()?;
    let vr = Vr::from_bytes(*code)?;
    let (size, rest) = take_len(rest)?;
    let (count, rest) = take_len(rest)?;
    if size > rest.len() {
        return None;
    }
    let (values, after) = rest.split_at(size);
    Some((
        (u32::from_le_bytes(*tag), View { vr, count, values }),
        after,
    ))
}

impl<'a> View<'a> {
    /// The values, as text (empty strings for empty values).
    pub fn values(&self) -> Values<'a> {
        Values {
            left: self.count,
            rest: self.values,
        }
    }

    /// The attribute, owned.
    pub fn to_attr(self) -> Attr {
        Attr {
            vr: self.vr,
            values: self.values().map(Box::from).collect(),
        }
    }
}

/// The values of a [`View`].
#[derive(Debug, Clone)]
pub(super) struct Values<'a> {
    left: usize,
    rest: &'a [u8],
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some((len, rest)) = take_len(self.rest).filter(|(n, r)| *n <= r.len()) else {
            self.left = 0;
            return None;
        };
        let (v, after) = rest.split_at(len);
        self.rest = after;
        // Only `pack` writes these bytes, from `str`s.
        Some(std::str::from_utf8(v).unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(vr: Vr, vals: &[&str]) -> Attr {
        Attr {
            vr,
            values: vals.iter().map(|v| Box::<str>::from(*v)).collect(),
        }
    }

    const EVERY_VR: [Vr; 34] = {
        use Vr::*;
        [
            AE, AS, AT, CS, DA, DS, DT, FD, FL, IS, LO, LT, OB, OD, OF, OL, OV, OW, PN, SH, SL, SQ,
            SS, ST, SV, TM, UC, UI, UL, UN, UR, US, UT, UV,
        ]
    };

    #[test]
    fn every_vr_and_value_comes_back_as_it_went_in() {
        let long = "x".repeat(20_000);
        let mut attrs: Attrs = EVERY_VR
            .iter()
            .enumerate()
            .map(|(i, vr)| (0x0011_0000 + i as u32, attr(*vr, &["1", "two"])))
            .collect();
        attrs.extend([
            // Multi-valued, with empty values among them.
            (0x0008_0061, attr(Vr::CS, &["CT", "", "MR", ""])),
            // No value at all, and one empty value: not the same.
            (0x0008_0020, attr(Vr::DA, &[])),
            (0x0008_0050, attr(Vr::SH, &[""])),
            // Names in three groups, outside ASCII.
            (
                0x0010_0010,
                attr(Vr::PN, &["Yamada^Tarou=山田^太郎=やまだ^たろう"]),
            ),
            (0x0008_0090, attr(Vr::PN, &["Müller^Jürgen", "Ødegård^Åse"])),
            // Lengths that take two and three bytes to write.
            (0x0008_1030, attr(Vr::LO, &[&long[..200]])),
            (0x0032_4000, attr(Vr::LT, &[&long])),
            // The highest tag.
            (0xFFFF_FFFF, attr(Vr::UN, &["end"])),
        ]);
        let p = Packed::pack(&attrs);
        let mut sorted = attrs.clone();
        sorted.sort_by_key(|(t, _)| *t);
        assert_eq!(p.unpack(), sorted);
        for (tag, a) in &sorted {
            let v = p.get(*tag).unwrap();
            assert_eq!(v.vr, a.vr);
            assert_eq!(
                v.values().collect::<Vec<_>>(),
                a.values.iter().map(|s| &**s).collect::<Vec<_>>()
            );
        }
        assert!(p.get(0x0008_0021).is_none());
        assert!(p.get(0).is_none());
        assert_eq!(p.iter().count(), sorted.len());
    }

    #[test]
    fn an_empty_set_packs_to_nothing() {
        let p = Packed::pack(&[]);
        assert_eq!(p.len(), 0);
        assert!(p.unpack().is_empty());
        assert!(p.get(0x0010_0010).is_none());
    }

    #[test]
    fn packing_is_compact() {
        // What a study keeps: its UID, dates, patient, accession...
        let attrs: Attrs = vec![
            (0x0008_0020, attr(Vr::DA, &["20200101"])),
            (0x0008_0030, attr(Vr::TM, &["101010"])),
            (0x0008_0050, attr(Vr::SH, &["ACC12345"])),
            (0x0010_0010, attr(Vr::PN, &["DOE^JANE"])),
            (0x0010_0020, attr(Vr::LO, &["PID00001234"])),
            (0x0010_0030, attr(Vr::DA, &["19450302"])),
            (0x0010_0040, attr(Vr::CS, &["F"])),
            (
                0x0020_000D,
                attr(Vr::UI, &["2.25.123456789012345678901234.1.100000001"]),
            ),
        ];
        let text: usize = attrs
            .iter()
            .map(|(_, a)| a.values.iter().map(|v| v.len()).sum::<usize>())
            .sum();
        let p = Packed::pack(&attrs);
        // Eight bytes of framing per attribute and one per value, at most.
        assert!(p.len() <= text + 9 * attrs.len(), "{} for {text}", p.len());
    }

    #[test]
    fn merging_adds_only_what_is_missing() {
        let mut p = Packed::pack(&[
            (0x0020_000D, attr(Vr::UI, &["1.2.3"])),
            (0x0010_0010, attr(Vr::PN, &["DOE^JANE"])),
        ]);
        let before = p.clone();
        p.merge(&[(0x0010_0010, attr(Vr::PN, &["OTHER^NAME"]))]);
        assert_eq!(p, before, "what is there stays, and nothing is repacked");
        p.merge(&[
            (0x0010_0010, attr(Vr::PN, &["OTHER^NAME"])),
            (0x0008_1030, attr(Vr::LO, &["HEAD"])),
        ]);
        assert_eq!(
            p.unpack(),
            vec![
                (0x0008_1030, attr(Vr::LO, &["HEAD"])),
                (0x0010_0010, attr(Vr::PN, &["DOE^JANE"])),
                (0x0020_000D, attr(Vr::UI, &["1.2.3"])),
            ]
        );
    }

    #[test]
    fn a_repeated_tag_keeps_its_first_value() {
        let p = Packed::pack(&[
            (0x0008_0060, attr(Vr::CS, &["CT"])),
            (0x0008_0060, attr(Vr::CS, &["MR"])),
        ]);
        assert_eq!(p.unpack(), vec![(0x0008_0060, attr(Vr::CS, &["CT"]))]);
    }

    #[test]
    fn cut_bytes_end_the_attributes_without_a_panic() {
        let p = Packed::pack(&[
            (0x0008_0060, attr(Vr::CS, &["CT"])),
            (0x0010_0010, attr(Vr::PN, &["DOE^JANE", "X"])),
        ]);
        for n in 0..p.0.len() {
            let cut = Packed(p.0[..n].to_vec().into_boxed_slice());
            let got = cut.unpack();
            assert!(got.len() <= 2);
            if let Some(v) = cut.get(0x0010_0010) {
                assert!(v.values().count() <= 2);
            }
        }
        // An oversized length.
        let mut bad = p.0.to_vec();
        bad[6] = 0xff;
        let bad = Packed(bad.into_boxed_slice());
        let _ = bad.unpack();
        let over = Packed(
            vec![
                0x60, 0, 8, 0, b'C', b'S', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0x7f,
            ]
            .into_boxed_slice(),
        );
        assert!(over.unpack().is_empty());
    }
}
