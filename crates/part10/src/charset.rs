//! Text as the Specific Character Set (0008,0005) says to read it (PS3.5 §6.1, PS3.3
//! C.12.1.1.2): single-byte sets, ISO 2022 code extensions (escape sequences switching
//! between ASCII, JIS X 0201/0208/0212, KS X 1001, GB 2312 and the ISO 8859 upper halves),
//! UTF-8, GB18030 and GBK.
//!
//! Each character decoded keeps where its bytes are ([`TextChar`]), so a caller that finds
//! a name in the decoded text can blank exactly those bytes in the encoded value, keeping
//! its length and its escape sequences valid, without an encoder for every set.
//! Decoding never fails: bytes that do not form a character of the active set become
//! U+FFFD, counted in [`Decoded::undecodable`] so a caller can refuse to call such text clean.

use encoding_rs::Encoding;

/// The 96-character sets an ISO 8859 part (or TIS 620) puts in G1 (bytes 0xA0..=0xFF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upper {
    Latin1,
    Other(&'static Encoding),
}

/// What G0 (bytes 0x21..=0x7E) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G0 {
    Ascii,
    /// JIS X 0201 Romaji: ASCII but for YEN SIGN and OVERLINE.
    Romaji,
    /// JIS X 0208 (ISO 2022 IR 87), two bytes a character.
    Jis0208,
    /// JIS X 0212 (ISO 2022 IR 159), two bytes a character.
    Jis0212,
}

/// What G1 (bytes 0xA0..=0xFF) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G1 {
    None,
    Upper(Upper),
    /// JIS X 0201 Katakana (ISO 2022 IR 13).
    Katakana,
    /// KS X 1001 (ISO 2022 IR 149), two bytes a character.
    Ksx1001,
    /// GB 2312 (ISO 2022 IR 58), two bytes a character.
    Gb2312,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Single-byte or ISO 2022 sets: G0 and G1 as the state machine has them.
    Iso2022 {
        extensions: bool,
    },
    Utf8,
    /// GB18030 (and GBK, a subset of it).
    Gb18030,
}

/// A Specific Character Set, parsed: how the text of one data set (and of items that do not
/// name their own) is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharacterSet {
    kind: Kind,
    g0: G0,
    g1: G1,
}

/// A Specific Character Set term radveil does not know (not a defined term of C.12.1.1.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Specific Character Set value {0} is not a defined term")]
pub struct UnknownTerm(pub usize);

impl Default for CharacterSet {
    /// The default repertoire (ISO IR 6, ASCII).
    fn default() -> CharacterSet {
        CharacterSet {
            kind: Kind::Iso2022 { extensions: false },
            g0: G0::Ascii,
            g1: G1::None,
        }
    }
}

/// One decoded character and where its bytes are in the encoded value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextChar {
    /// The character (U+FFFD for bytes that do not form one).
    pub ch: char,
    /// Offset of its first byte.
    pub at: usize,
    /// Number of its bytes (escape sequences are not part of any character).
    pub len: usize,
    /// It is a two-byte character of a 7-bit set in G0 (JIS X 0208/0212): its bytes can only
    /// be replaced by another character of that set.
    seven_bit_pair: Pair,
}

/// How a character is blanked: `X` per byte, or (where an ASCII byte would be read
/// otherwise) a neutral character of its own set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pair {
    None,
    Jis0208,
    Jis0212,
    /// A two-byte G1 character (KS X 1001, GB 2312) while G0 is a 7-bit two-byte set:
    /// FULLWIDTH X of both sets.
    HighTwo,
    /// A one-byte G1 character while G0 is a 7-bit two-byte set: this byte instead.
    High(u8),
}

/// The JIS X 0212 character a blanked one becomes (the set has no Latin letters in row 3).
const JIS0212_BLANK: [u8; 2] = [0x22, 0x37];

impl TextChar {
    /// Overwrites this character's bytes in `value` with a neutral character of the same
    /// length in the same set: `X` for every byte, or FULLWIDTH LATIN CAPITAL LETTER X for a
    /// two-byte character of JIS X 0208/0212 (whose bytes are 7-bit). What decodes as before
    /// stays decodable, and the value's length (its VR's limit) does not change.
    pub fn blank(&self, value: &mut [u8]) {
        let Some(end) = self.at.checked_add(self.len) else {
            return;
        };
        let Some(bytes) = value.get_mut(self.at..end) else {
            return;
        };
        match (self.seven_bit_pair, bytes.len()) {
            // JIS X 0208 row 3, cell 56: FULLWIDTH LATIN CAPITAL LETTER X.
            (Pair::Jis0208, 2) => bytes.copy_from_slice(&[0x23, 0x58]),
            (Pair::Jis0212, 2) => bytes.copy_from_slice(&JIS0212_BLANK),
            (Pair::HighTwo, 2) => bytes.copy_from_slice(&[0xA3, 0xD8]),
            (Pair::High(b), 1) => bytes.fill(b),
            _ => bytes.fill(b'X'),
        }
    }
}

/// A value decoded: its characters in order.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// The characters, each with where its bytes are.
    pub chars: Vec<TextChar>,
    /// How many characters were bytes that the active set does not define (U+FFFD).
    pub undecodable: usize,
}

impl Decoded {
    /// The characters as a string.
    pub fn text(&self) -> String {
        self.chars.iter().map(|c| c.ch).collect()
    }
}

fn upper(enc: &'static Encoding) -> G1 {
    G1::Upper(Upper::Other(enc))
}

/// The G1 set of a single-byte term's number (`100` for ISO_IR 100), `None` when unknown.
fn single_byte(ir: &str) -> Option<(G0, G1)> {
    use encoding_rs::*;
    Some(match ir {
        "6" => (G0::Ascii, G1::None),
        "100" => (G0::Ascii, G1::Upper(Upper::Latin1)),
        "101" => (G0::Ascii, upper(ISO_8859_2)),
        "109" => (G0::Ascii, upper(ISO_8859_3)),
        "110" => (G0::Ascii, upper(ISO_8859_4)),
        "144" => (G0::Ascii, upper(ISO_8859_5)),
        "127" => (G0::Ascii, upper(ISO_8859_6)),
        "126" => (G0::Ascii, upper(ISO_8859_7)),
        "138" => (G0::Ascii, upper(ISO_8859_8)),
        // ISO 8859-9 and TIS 620 are the upper halves of these (the WHATWG names map them
        // here; they differ only in 0x80..=0x9F, which G1 does not use).
        "148" => (G0::Ascii, upper(WINDOWS_1254)),
        "203" => (G0::Ascii, upper(ISO_8859_15)),
        "166" => (G0::Ascii, upper(WINDOWS_874)),
        "13" => (G0::Romaji, G1::Katakana),
        _ => return None,
    })
}

impl CharacterSet {
    /// Parses the values of Specific Character Set (already split at backslashes and
    /// trimmed). Value 1 sets the initial state; with code extensions, the other values
    /// only say which sets escape sequences may designate (escapes are honoured for any
    /// defined set, as readers do).
    pub fn from_terms<'a>(
        terms: impl IntoIterator<Item = &'a str>,
    ) -> Result<CharacterSet, UnknownTerm> {
        let terms: Vec<&str> = terms.into_iter().map(str::trim).collect();
        let first = terms.first().copied().unwrap_or("");
        let extensions = terms.len() > 1 || first.starts_with("ISO 2022");
        for (i, t) in terms.iter().enumerate() {
            let known = t.is_empty()
                || matches!(*t, "ISO_IR 192" | "GB18030" | "GBK")
                || t.strip_prefix("ISO_IR ").and_then(single_byte).is_some()
                || t.strip_prefix("ISO 2022 IR ").is_some_and(|n| {
                    single_byte(n).is_some() || matches!(n, "87" | "159" | "149" | "58")
                });
            if !known {
                return Err(UnknownTerm(i.saturating_add(1)));
            }
        }
        let kind = match first {
            "ISO_IR 192" => Kind::Utf8,
            "GB18030" | "GBK" => Kind::Gb18030,
            _ => Kind::Iso2022 { extensions },
        };
        let (g0, g1) = first
            .strip_prefix("ISO_IR ")
            .or_else(|| first.strip_prefix("ISO 2022 IR "))
            .and_then(single_byte)
            .unwrap_or((G0::Ascii, G1::None));
        Ok(CharacterSet { kind, g0, g1 })
    }

    /// Parses the encoded value of Specific Character Set (backslash-separated terms).
    pub fn from_value(value: &[u8]) -> Result<CharacterSet, UnknownTerm> {
        let text = String::from_utf8_lossy(value);
        CharacterSet::from_terms(text.split('\\'))
    }

    /// The character set of a data set: its own Specific Character Set, else `outer` (an
    /// item's parent's). A term that is not defined reads as the default repertoire here;
    /// a caller that keeps the attribute checks its value.
    pub fn of(ds: &crate::DataSet<'_>, outer: &CharacterSet) -> CharacterSet {
        match ds
            .get(radveil_standard::tags::SPECIFIC_CHARACTER_SET)
            .and_then(crate::Element::bytes)
        {
            Some(b) => CharacterSet::from_value(b).unwrap_or_default(),
            None => outer.clone(),
        }
    }

    /// Whether this is the default repertoire (no Specific Character Set, or an empty one).
    pub fn is_default(&self) -> bool {
        *self == CharacterSet::default()
    }

    /// Whether escape sequences switch sets (ISO 2022 code extensions).
    pub fn has_code_extensions(&self) -> bool {
        matches!(self.kind, Kind::Iso2022 { extensions: true })
    }

    /// Decodes one element's value (all of it: values separated by backslashes, and the
    /// code state returns to the initial one at each, at control characters, and at the
    /// `^` and `=` of person names, as PS3.5 §6.1.2.5.3 has writers do).
    pub fn decode(&self, value: &[u8]) -> Decoded {
        match self.kind {
            Kind::Utf8 => decode_utf8(value),
            Kind::Gb18030 => decode_gb18030(value),
            Kind::Iso2022 { extensions } => self.decode_iso2022(value, extensions),
        }
    }

    /// Decodes to a string (U+FFFD for what does not decode).
    pub fn decode_to_string(&self, value: &[u8]) -> String {
        self.decode(value).text()
    }

    fn decode_iso2022(&self, value: &[u8], extensions: bool) -> Decoded {
        let mut out = Decoded {
            chars: Vec::with_capacity(value.len()),
            undecodable: 0,
        };
        let (mut g0, mut g1) = (self.g0, self.g1);
        let mut i = 0usize;
        while let Some(&b) = value.get(i) {
            if b == 0x1B && extensions {
                if let Some((len, set0, set1)) = escape(value.get(i..).unwrap_or_default()) {
                    if let Some(s) = set0 {
                        g0 = s;
                    }
                    if let Some(s) = set1 {
                        g1 = s;
                    }
                    i = i.saturating_add(len);
                    continue;
                }
            }
            let two_byte_g0 = matches!(g0, G0::Jis0208 | G0::Jis0212);
            if b < 0x21 || (!two_byte_g0 && matches!(b, b'\\' | b'^' | b'=')) || b == 0x7F {
                // Controls, space and delimiters: one byte, and the initial state again.
                if b < 0x20 || matches!(b, b'\\' | b'^' | b'=') {
                    g0 = self.g0;
                    g1 = self.g1;
                }
                push(&mut out, char::from(b), i, 1, Pair::None);
                i = i.saturating_add(1);
                continue;
            }
            if b < 0x80 {
                let next = value.get(i.saturating_add(1)).copied();
                match g0 {
                    G0::Ascii => push(&mut out, char::from(b), i, 1, Pair::None),
                    G0::Romaji => {
                        let c = match b {
                            0x5C => '\u{A5}',
                            0x7E => '\u{203E}',
                            _ => char::from(b),
                        };
                        push(&mut out, c, i, 1, Pair::None);
                    }
                    G0::Jis0208 | G0::Jis0212 => {
                        let c = next
                            .filter(|n| (0x21..=0x7E).contains(n))
                            .and_then(|n| jis_pair(g0 == G0::Jis0212, b, n));
                        match c {
                            Some(c) => {
                                push(
                                    &mut out,
                                    c,
                                    i,
                                    2,
                                    if g0 == G0::Jis0212 {
                                        Pair::Jis0212
                                    } else {
                                        Pair::Jis0208
                                    },
                                );
                                i = i.saturating_add(2);
                                continue;
                            }
                            None => push(&mut out, '\u{FFFD}', i, 1, Pair::None),
                        }
                    }
                }
                i = i.saturating_add(1);
                continue;
            }
            // 0x80..=0xFF: G1 (0x80..=0x9F are C1 controls, undefined in text).
            let next = value.get(i.saturating_add(1)).copied();
            let (c, len) = match g1 {
                // Latin-1 text often carries Windows-1252 punctuation in 0x80..=0x9F.
                G1::Upper(Upper::Latin1) if b < 0xA0 => {
                    (decode_unit(encoding_rs::WINDOWS_1252, &[b]), 1)
                }
                _ if b < 0xA0 => (None, 1),
                G1::None => (None, 1),
                G1::Upper(Upper::Latin1) => (Some(char::from(b)), 1),
                G1::Upper(Upper::Other(enc)) => (decode_unit(enc, &[b]), 1),
                G1::Katakana => (
                    (0xA1..=0xDF)
                        .contains(&b)
                        .then(|| char::from_u32(u32::from(b).wrapping_add(0xFF61 - 0xA1)))
                        .flatten(),
                    1,
                ),
                G1::Ksx1001 | G1::Gb2312 => match next.filter(|n| (0xA1..=0xFE).contains(n)) {
                    Some(n) => {
                        let enc = if g1 == G1::Ksx1001 {
                            encoding_rs::EUC_KR
                        } else {
                            encoding_rs::GBK
                        };
                        (decode_unit(enc, &[b, n]), 2)
                    }
                    None => (None, 1),
                },
            };
            // While G0 holds a 7-bit two-byte set, an ASCII `X` would pair with the next
            // byte: a G1 character is blanked with one of its own set.
            let pair = if matches!(g0, G0::Jis0208 | G0::Jis0212) {
                match g1 {
                    G1::Ksx1001 | G1::Gb2312 if len == 2 => Pair::HighTwo,
                    G1::Katakana => Pair::High(0xB0),
                    _ => Pair::High(0xA0),
                }
            } else {
                Pair::None
            };
            match c {
                Some(c) => push(&mut out, c, i, len, pair),
                None => push(&mut out, '\u{FFFD}', i, len, pair),
            }
            i = i.saturating_add(len);
        }
        out
    }
}

fn push(out: &mut Decoded, ch: char, at: usize, len: usize, seven_bit_pair: Pair) {
    if ch == '\u{FFFD}' {
        out.undecodable = out.undecodable.saturating_add(1);
    }
    out.chars.push(TextChar {
        ch,
        at,
        len,
        seven_bit_pair,
    });
}

/// An ISO 2022 escape sequence at the start of `b` (PS3.3 Tables C.12-3 and C.12-4): its
/// length and the sets it designates to G0 and G1.
fn escape(b: &[u8]) -> Option<(usize, Option<G0>, Option<G1>)> {
    use encoding_rs::*;
    let g1 = |e: &'static Encoding| Some(G1::Upper(Upper::Other(e)));
    Some(match b {
        [0x1B, b'(', b'B', ..] => (3, Some(G0::Ascii), None),
        [0x1B, b'(', b'J', ..] => (3, Some(G0::Romaji), None),
        [0x1B, b')', b'I', ..] => (3, None, Some(G1::Katakana)),
        [0x1B, b'$', b'B', ..] | [0x1B, b'$', b'@', ..] => (3, Some(G0::Jis0208), None),
        [0x1B, b'$', b'(', b'D', ..] => (4, Some(G0::Jis0212), None),
        [0x1B, b'$', b')', b'C', ..] => (4, None, Some(G1::Ksx1001)),
        [0x1B, b'$', b')', b'A', ..] => (4, None, Some(G1::Gb2312)),
        [0x1B, b'-', f, ..] => {
            let set = match f {
                b'A' => Some(G1::Upper(Upper::Latin1)),
                b'B' => g1(ISO_8859_2),
                b'C' => g1(ISO_8859_3),
                b'D' => g1(ISO_8859_4),
                b'L' => g1(ISO_8859_5),
                b'G' => g1(ISO_8859_6),
                b'F' => g1(ISO_8859_7),
                b'H' => g1(ISO_8859_8),
                b'M' => g1(WINDOWS_1254),
                b'b' => g1(ISO_8859_15),
                b'T' => g1(WINDOWS_874),
                _ => return None,
            };
            (3, None, set)
        }
        _ => return None,
    })
}

/// A two-byte JIS X 0208 (or, with `x0212`, JIS X 0212) character from its 7-bit bytes.
fn jis_pair(x0212: bool, a: u8, b: u8) -> Option<char> {
    let (a, b) = (a | 0x80, b | 0x80);
    if x0212 {
        decode_unit(encoding_rs::EUC_JP, &[0x8F, a, b])
    } else {
        decode_unit(encoding_rs::EUC_JP, &[a, b])
    }
}

/// The one character `unit` decodes to in `enc`, if it is exactly one defined character.
fn decode_unit(enc: &'static Encoding, unit: &[u8]) -> Option<char> {
    let (text, had_errors) = enc.decode_without_bom_handling(unit);
    if had_errors {
        return None;
    }
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

fn decode_utf8(value: &[u8]) -> Decoded {
    let mut out = Decoded {
        chars: Vec::with_capacity(value.len()),
        undecodable: 0,
    };
    let mut at = 0usize;
    for chunk in value.utf8_chunks() {
        for (offset, ch) in chunk.valid().char_indices() {
            push(
                &mut out,
                ch,
                at.saturating_add(offset),
                ch.len_utf8(),
                Pair::None,
            );
        }
        at = at.saturating_add(chunk.valid().len());
        for _ in chunk.invalid() {
            push(&mut out, '\u{FFFD}', at, 1, Pair::None);
            at = at.saturating_add(1);
        }
    }
    out
}

fn decode_gb18030(value: &[u8]) -> Decoded {
    let mut out = Decoded {
        chars: Vec::with_capacity(value.len()),
        undecodable: 0,
    };
    let mut i = 0usize;
    while let Some(&b) = value.get(i) {
        let len = if b < 0x80 {
            1
        } else if value
            .get(i.saturating_add(1))
            .is_some_and(u8::is_ascii_digit)
        {
            4
        } else {
            2
        };
        let unit = value.get(i..i.saturating_add(len));
        let c = if b < 0x80 {
            Some(char::from(b))
        } else {
            unit.and_then(|u| decode_unit(encoding_rs::GB18030, u))
        };
        match c {
            Some(c) => push(&mut out, c, i, len, Pair::None),
            None => push(&mut out, '\u{FFFD}', i, 1, Pair::None),
        }
        i = i.saturating_add(if c.is_some() { len } else { 1 });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(v: &str) -> CharacterSet {
        CharacterSet::from_value(v.as_bytes()).unwrap()
    }

    fn text(set: &str, bytes: &[u8]) -> String {
        cs(set).decode_to_string(bytes)
    }

    #[test]
    fn default_repertoire_is_ascii() {
        assert_eq!(text("", b"Smith^John"), "Smith^John");
        // A high byte is not ASCII: undecodable, counted.
        let d = cs("").decode(b"A\xE9");
        assert_eq!(d.undecodable, 1);
    }

    #[test]
    fn single_byte_sets() {
        assert_eq!(text("ISO_IR 100", b"Buc^J\xe9r\xf4me"), "Buc^Jérôme");
        assert_eq!(text("ISO_IR 101", b"Grze\xb6kowiak"), "Grześkowiak");
        assert_eq!(text("ISO_IR 144", b"\xb8\xd2\xd0\xdd\xde\xd2"), "Иванов");
        assert_eq!(
            text("ISO_IR 126", b"\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2"),
            "Διονυσιος"
        );
        assert_eq!(text("ISO_IR 13", b"\xd4\xcf\xc0\xde"), "ﾔﾏﾀﾞ");
    }

    #[test]
    fn iso_2022_japanese_person_name() {
        // PS3.5 Annex H, H.3.1: Yamada^Tarou=山田^太郎=やまだ^たろう
        let v =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(
            text("\\ISO 2022 IR 87", v),
            "Yamada^Tarou=山田^太郎=やまだ^たろう"
        );
        let d = cs("\\ISO 2022 IR 87").decode(v);
        let yama = d.chars.iter().find(|c| c.ch == '山').unwrap();
        assert_eq!(yama.len, 2);
        let mut b = v.to_vec();
        yama.blank(&mut b);
        assert_eq!(
            cs("\\ISO 2022 IR 87").decode_to_string(&b),
            "Yamada^Tarou=Ｘ田^太郎=やまだ^たろう"
        );
    }

    #[test]
    fn iso_2022_korean_person_name() {
        // PS3.5 Annex I: Hong^Gildong=洪^吉洞=홍^길동
        let v = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(text("\\ISO 2022 IR 149", v), "Hong^Gildong=洪^吉洞=홍^길동");
    }

    #[test]
    fn utf8_and_gb18030() {
        assert_eq!(
            text("ISO_IR 192", "Wang^XiaoDong=王^小东".as_bytes()),
            "Wang^XiaoDong=王^小东"
        );
        let (gb, _, _) = encoding_rs::GB18030.encode("Wang^XiaoDong=王^小东");
        assert_eq!(text("GB18030", &gb), "Wang^XiaoDong=王^小东");
        let d = cs("ISO_IR 192").decode(b"a\xffb");
        assert_eq!(d.undecodable, 1);
        assert_eq!(d.text(), "a\u{FFFD}b");
    }

    #[test]
    fn blanking_keeps_length_and_validity() {
        let v = "Łukasz Grześkowiak".as_bytes();
        let d = cs("ISO_IR 192").decode(v);
        let mut b = v.to_vec();
        for c in d.chars.iter().skip(7) {
            c.blank(&mut b);
        }
        assert_eq!(b.len(), v.len());
        assert_eq!(std::str::from_utf8(&b).unwrap(), "Łukasz XXXXXXXXXXXX");
    }

    #[test]
    fn a_blanked_jis_x_0212_character_is_one() {
        let v = b"\x1b$(D\x30\x21\x1b(B";
        let set = cs("\\ISO 2022 IR 159");
        let d = set.decode(v);
        assert_eq!((d.undecodable, d.chars.len()), (0, 1));
        let mut b = v.to_vec();
        d.chars[0].blank(&mut b);
        let after = set.decode(&b);
        assert_eq!(after.undecodable, 0);
        assert_ne!(after.chars[0].ch, d.chars[0].ch);
    }

    #[test]
    fn a_g1_character_inside_a_jis_run_is_blanked_in_g1() {
        // Found by the fuzzer: ÿÿ in G1 (Latin-1) while G0 holds JIS X 0208.
        let v = b"\x1b$BB@\x1b-A\xff\xffO:\x1b(B";
        let set = cs("\\ISO 2022 IR 87\\ISO 2022 IR 100");
        let d = set.decode(v);
        assert_eq!(d.undecodable, 0);
        let mut b = v.to_vec();
        for c in d.chars.iter().filter(|c| c.ch == '\u{FF}') {
            c.blank(&mut b);
        }
        let after = set.decode(&b);
        assert_eq!(after.undecodable, 0);
        assert_eq!(after.chars.len(), d.chars.len());
        assert_eq!(after.text(), "太\u{A0}\u{A0}郎");
    }

    #[test]
    fn unknown_terms_are_refused() {
        assert_eq!(
            CharacterSet::from_value(b"ISO_IR 100\\KLINGON"),
            Err(UnknownTerm(2))
        );
        assert!(CharacterSet::from_value(b"ISO 2022 IR 6\\ISO 2022 IR 87").is_ok());
    }
}
