//! DICOM Part 10 files and PS3.5 data set encoding, read and written losslessly.
//!
//! This is the layer the de-identifier works on: a data set is a tree of elements whose
//! values are kept as the encoded bytes (borrowed from the input where possible), so pixel
//! data of any transfer syntax, compressed or not, passes through byte for byte and nothing is
//! decoded that the caller does not ask for.
//!
//! Why not dicom-rs's object model: a de-identifier reads hostile input and must never abort
//! or overflow the stack on it, must walk sequences that dicom-rs keeps opaque (UN with
//! undefined length, private sequences), and spends most of its time copying pixel data that
//! it never changes. Here every length is checked against the bytes that are left before
//! anything is allocated, nesting depth is capped, and values are slices of the input.

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::io::Read;

pub use radveil_standard::Vr;

mod budget;
pub use budget::{BudgetError, Grant, MemoryBudget, DEFAULT_WAIT};

/// Tag of Item (FFFE,E000).
pub const ITEM: u32 = 0xFFFE_E000;
/// Tag of Item Delimitation Item (FFFE,E00D).
pub const ITEM_DELIMITATION: u32 = 0xFFFE_E00D;
/// Tag of Sequence Delimitation Item (FFFE,E0DD).
pub const SEQUENCE_DELIMITATION: u32 = 0xFFFE_E0DD;
/// Tag of Pixel Data (7FE0,0010).
pub const PIXEL_DATA: u32 = 0x7FE0_0010;
/// Undefined length (PS3.5 §7.1.1).
pub const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;

/// Implicit VR Little Endian.
pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
/// Deflated Explicit VR Little Endian.
pub const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
/// Explicit VR Big Endian (retired).
pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// Why a file or data set could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes end before the structure they announce.
    #[error("truncated at byte {offset}: {what}")]
    Truncated {
        /// Offset into the data set or file where more bytes were needed.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// The file lacks the 128-byte preamble and `DICM` prefix, and has no file meta group.
    #[error("not a DICOM Part 10 file (no DICM prefix or file meta information)")]
    NotPart10,
    /// The file meta information is missing something a reader needs.
    #[error("invalid file meta information: {0}")]
    InvalidMeta(&'static str),
    /// Something in the encoding breaks PS3.5.
    #[error("malformed data set at byte {offset}: {what}")]
    Malformed {
        /// Offset of the element concerned.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// Sequences nest deeper than the configured limit.
    #[error("sequences nested deeper than {0} levels")]
    TooDeep(usize),
    /// A deflated data set could not be inflated.
    #[error("deflated data set: {0}")]
    Deflate(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// How a data set is encoded (PS3.5 §7 and §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Implicit VR Little Endian: the VR comes from the data dictionary.
    ImplicitLittle,
    /// Explicit VR Little Endian.
    ExplicitLittle,
    /// Explicit VR Big Endian.
    ExplicitBig,
}

impl Encoding {
    fn big(self) -> bool {
        self == Encoding::ExplicitBig
    }
}

/// What a Transfer Syntax UID says about how to read the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSyntax {
    /// Element encoding.
    pub encoding: Encoding,
    /// Whether the data set after the file meta is deflated (RFC 1951).
    pub deflated: bool,
}

impl TransferSyntax {
    /// Classifies a Transfer Syntax UID. Every other UID under the DICOM root is an
    /// encapsulated (compressed) syntax, all of which use Explicit VR Little Endian.
    pub fn from_uid(uid: &str) -> TransferSyntax {
        let (encoding, deflated) = match uid {
            IMPLICIT_VR_LITTLE_ENDIAN => (Encoding::ImplicitLittle, false),
            EXPLICIT_VR_BIG_ENDIAN => (Encoding::ExplicitBig, false),
            DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN | "1.2.840.10008.1.2.8.1" => {
                (Encoding::ExplicitLittle, true)
            }
            _ => (Encoding::ExplicitLittle, false),
        };
        TransferSyntax { encoding, deflated }
    }
}

/// Bounds on what a reader accepts, so hostile input cannot exhaust the stack.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest sequence nesting accepted.
    pub max_depth: usize,
    /// Largest inflated size of a deflated data set, in bytes.
    pub max_inflated: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_inflated: 1 << 31,
        }
    }
}

/// An element's value, kept in its encoded form.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// The value bytes, in the data set's byte order, padding included.
    Bytes(Cow<'a, [u8]>),
    /// A sequence of items.
    Sequence(Vec<DataSet<'a>>),
    /// Encapsulated pixel data: the fragments in order, the Basic Offset Table first.
    Fragments(Vec<Cow<'a, [u8]>>),
}

/// One data element.
#[derive(Debug, Clone, PartialEq)]
pub struct Element<'a> {
    /// `(group << 16) | element`.
    pub tag: u32,
    /// The VR as read (explicit) or looked up (implicit; UN when unknown).
    pub vr: Vr,
    /// The value.
    pub value: Value<'a>,
}

impl<'a> Element<'a> {
    /// A text element with the value padded to even length as its VR requires.
    pub fn text(tag: u32, vr: Vr, value: &str) -> Element<'static> {
        let mut bytes = value.as_bytes().to_vec();
        if bytes.len() % 2 == 1 {
            bytes.push(if vr == Vr::UI { 0 } else { b' ' });
        }
        Element {
            tag,
            vr,
            value: Value::Bytes(Cow::Owned(bytes)),
        }
    }

    /// The group number.
    pub fn group(&self) -> u16 {
        (self.tag >> 16) as u16
    }

    /// Whether the element is private (odd group).
    pub fn is_private(&self) -> bool {
        self.group() % 2 == 1
    }

    /// The raw value bytes, when the value is not a sequence or fragments.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The value as text with trailing padding (spaces, NULs) and leading spaces removed,
    /// when the value is bytes.
    pub fn trimmed(&self) -> Option<&[u8]> {
        self.bytes().map(trim_text)
    }

    /// The value as a UTF-8 string (lossy), trimmed.
    pub fn to_str(&self) -> Option<Cow<'_, str>> {
        self.trimmed().map(String::from_utf8_lossy)
    }
}

/// Removes trailing spaces and NULs and leading spaces from a text value.
pub fn trim_text(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(0, |p| p + 1);
    let start = b[..end].iter().position(|&c| c != b' ').unwrap_or(end);
    &b[start..end]
}

/// A data set or sequence item: elements in the order read (ascending tags in valid input).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataSet<'a> {
    /// The elements.
    pub elements: Vec<Element<'a>>,
}

impl<'a> DataSet<'a> {
    /// The element with this tag, if present.
    pub fn get(&self, tag: u32) -> Option<&Element<'a>> {
        self.elements.iter().find(|e| e.tag == tag)
    }

    /// Mutable access to the element with this tag.
    pub fn get_mut(&mut self, tag: u32) -> Option<&mut Element<'a>> {
        self.elements.iter_mut().find(|e| e.tag == tag)
    }

    /// The first value of a US element with this tag, read in the data set's byte order.
    pub fn u16_value(&self, tag: u32, enc: Encoding) -> Option<u16> {
        let b = self.get(tag)?.bytes()?;
        (b.len() >= 2).then(|| {
            if enc == Encoding::ExplicitBig {
                u16::from_be_bytes([b[0], b[1]])
            } else {
                u16::from_le_bytes([b[0], b[1]])
            }
        })
    }

    /// The trimmed text of the element with this tag, lossily as UTF-8.
    pub fn string(&self, tag: u32) -> Option<String> {
        self.get(tag)
            .and_then(|e| e.to_str())
            .map(|s| s.into_owned())
    }

    /// Inserts or replaces an element, keeping tags in ascending order.
    pub fn put(&mut self, element: Element<'a>) {
        match self.elements.binary_search_by_key(&element.tag, |e| e.tag) {
            Ok(i) => self.elements[i] = element,
            Err(i) => self.elements.insert(i, element),
        }
    }

    /// Removes the element with this tag; returns whether it was there.
    pub fn remove(&mut self, tag: u32) -> bool {
        let before = self.elements.len();
        self.elements.retain(|e| e.tag != tag);
        before != self.elements.len()
    }
}

/// A parsed Part 10 file: the file meta elements (group 0002) and the body.
#[derive(Debug)]
pub struct FileMeta<'a> {
    /// Group 0002 elements as read.
    pub elements: DataSet<'a>,
    /// Transfer Syntax UID of the data set.
    pub transfer_syntax: String,
    /// The bytes after the file meta group: the encoded data set (deflated when the syntax is).
    pub body: &'a [u8],
}

/// Reads the preamble, prefix and file meta group of a Part 10 file.
///
/// A file without the 128-byte preamble but starting with the meta group is accepted, as most
/// readers do; a bare data set without meta information is refused with [`Error::NotPart10`].
pub fn read_file_meta(file: &[u8]) -> Result<FileMeta<'_>> {
    let start = if file.len() >= 132 && &file[128..132] == b"DICM" {
        132
    } else if file.len() >= 4 && &file[..4] == b"DICM" {
        4
    } else if file.len() >= 8 && file[0] == 0x02 && file[1] == 0x00 && file[4..6] == *b"UL" {
        0
    } else {
        return Err(Error::NotPart10);
    };
    let mut r = Reader {
        buf: file,
        pos: start,
        enc: Encoding::ExplicitLittle,
        limits: Limits::default(),
    };
    let mut meta = DataSet::default();
    while r.pos + 8 <= file.len() {
        let group = u16::from_le_bytes([file[r.pos], file[r.pos + 1]]);
        if group != 0x0002 {
            break;
        }
        let el = r.element(0)?;
        meta.elements.push(el);
    }
    if meta.elements.is_empty() {
        return Err(Error::InvalidMeta("empty file meta group"));
    }
    let ts = meta
        .string(0x0002_0010)
        .filter(|s| !s.is_empty())
        .ok_or(Error::InvalidMeta("no Transfer Syntax UID (0002,0010)"))?;
    Ok(FileMeta {
        elements: meta,
        transfer_syntax: ts,
        body: &file[r.pos..],
    })
}

/// Inflates a deflated data set body, refusing to grow beyond `limit` bytes.
pub fn inflate(body: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() * 4);
    let mut dec = flate2::read::DeflateDecoder::new(body).take(limit as u64 + 1);
    dec.read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(Error::Malformed {
            offset: 0,
            what: format!("inflated data set larger than {limit} bytes"),
        });
    }
    Ok(out)
}

/// Deflates an encoded data set for the Deflated Explicit VR Little Endian syntax.
pub fn deflate(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// Parses an encoded data set (the body of a Part 10 file, or an item's content).
///
/// For `Encoding::ExplicitLittle`, a body that is really implicit VR (a known writer bug) is
/// detected from its first element and read as implicit VR.
pub fn read_dataset(buf: &[u8], encoding: Encoding, limits: Limits) -> Result<DataSet<'_>> {
    let mut enc = encoding;
    if enc == Encoding::ExplicitLittle
        && buf.len() >= 6
        && Vr::from_bytes([buf[4], buf[5]]).is_none()
    {
        enc = Encoding::ImplicitLittle;
    }
    let mut r = Reader {
        buf,
        pos: 0,
        enc,
        limits,
    };
    r.dataset_until(buf.len(), 0, false)
}

/// Parses the items of a sequence whose value was kept as bytes (a UN or private sequence
/// with defined length): items are read until the bytes end.
pub fn read_items(buf: &[u8], encoding: Encoding, limits: Limits) -> Result<Vec<DataSet<'_>>> {
    let mut r = Reader {
        buf,
        pos: 0,
        enc: encoding,
        limits,
    };
    r.items(buf.len(), 1)
}

/// Finds where the top-level Pixel Data element starts in a Part 10 file of which only
/// `prefix` has been read, when that element has a defined length and ends exactly at
/// `file_len`, the end of the file.
///
/// Returns the file offset of the element's header. Everything before it is the de-identified
/// part; the element itself can then be copied from file to file without passing through
/// memory. `None` (deflated syntax, encapsulated or non-final pixel data, a prefix too short,
/// malformed input) means: read the whole file.
pub fn trailing_pixel_data(prefix: &[u8], file_len: u64) -> Option<usize> {
    let meta = read_file_meta(prefix).ok()?;
    let ts = TransferSyntax::from_uid(&meta.transfer_syntax);
    if ts.deflated {
        return None;
    }
    let body_start = prefix.len() - meta.body.len();
    let mut r = Reader {
        buf: meta.body,
        pos: 0,
        enc: effective_encoding(meta.body, ts.encoding),
        limits: Limits::default(),
    };
    loop {
        let (tag, _vr, len, header) = r.header().ok()?;
        if tag == PIXEL_DATA {
            if len == UNDEFINED_LENGTH {
                return None;
            }
            let start = body_start + r.pos;
            let end = start as u64 + header as u64 + len as u64;
            return (end == file_len).then_some(start);
        }
        if tag > PIXEL_DATA || tag >> 16 == 0xFFFE {
            return None;
        }
        r.element(0).ok()?;
    }
}

/// Reads a Part 10 file: its meta, its data set and the encoding the data set actually uses
/// (see [`effective_encoding`]). A deflated data set is inflated into `inflated`, which the
/// data set then borrows.
pub fn read_file<'b>(
    file: &'b [u8],
    inflated: &'b mut Vec<u8>,
    limits: Limits,
) -> Result<(FileMeta<'b>, DataSet<'b>, Encoding)> {
    let meta = read_file_meta(file)?;
    let ts = TransferSyntax::from_uid(&meta.transfer_syntax);
    let body: &[u8] = if ts.deflated {
        *inflated = inflate(meta.body, limits.max_inflated)?;
        inflated
    } else {
        meta.body
    };
    let enc = effective_encoding(body, ts.encoding);
    let ds = read_dataset(body, enc, limits)?;
    Ok((meta, ds, enc))
}

/// Reads the encoding that [`read_dataset`] actually used for a body (implicit VR detected in
/// a body declared explicit), so that a writer can keep it.
pub fn effective_encoding(buf: &[u8], declared: Encoding) -> Encoding {
    if declared == Encoding::ExplicitLittle
        && buf.len() >= 6
        && Vr::from_bytes([buf[4], buf[5]]).is_none()
    {
        Encoding::ImplicitLittle
    } else {
        declared
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    enc: Encoding,
    limits: Limits,
}

impl<'a> Reader<'a> {
    fn need(&self, n: usize, what: &'static str) -> Result<()> {
        if self.buf.len().saturating_sub(self.pos) < n {
            Err(Error::Truncated {
                offset: self.pos,
                what,
            })
        } else {
            Ok(())
        }
    }

    fn u16_at(&self, p: usize) -> u16 {
        let b = [self.buf[p], self.buf[p + 1]];
        if self.enc.big() {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, p: usize) -> u32 {
        let b = [
            self.buf[p],
            self.buf[p + 1],
            self.buf[p + 2],
            self.buf[p + 3],
        ];
        if self.enc.big() {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn tag_at(&self, p: usize) -> u32 {
        // Item tags are always encoded in the data set's byte order like any other tag.
        ((self.u16_at(p) as u32) << 16) | self.u16_at(p + 2) as u32
    }

    /// Reads elements until `end` (defined length) or an Item Delimitation Item (`in_item`
    /// with undefined length, signalled by `end == usize::MAX`).
    fn dataset_until(&mut self, end: usize, depth: usize, in_item: bool) -> Result<DataSet<'a>> {
        let mut ds = DataSet::default();
        loop {
            if end != usize::MAX && self.pos >= end {
                break;
            }
            if end == usize::MAX && self.pos >= self.buf.len() {
                if in_item {
                    return Err(Error::Truncated {
                        offset: self.pos,
                        what: "item without Item Delimitation Item",
                    });
                }
                break;
            }
            // Trailing padding of fewer than 8 bytes after the last element is tolerated.
            if !in_item
                && self.buf.len() - self.pos < 8
                && self.buf[self.pos..].iter().all(|&b| b == 0)
            {
                self.pos = self.buf.len();
                break;
            }
            self.need(8, "element header")?;
            let tag = self.tag_at(self.pos);
            if tag == ITEM_DELIMITATION {
                if !in_item {
                    return Err(Error::Malformed {
                        offset: self.pos,
                        what: "Item Delimitation Item outside an item".into(),
                    });
                }
                self.pos += 8;
                if end == usize::MAX {
                    return Ok(ds);
                }
                continue;
            }
            if tag == SEQUENCE_DELIMITATION && !in_item {
                // Stray sequence delimiter at the top level: seen in the wild as trailing junk.
                self.pos += 8;
                continue;
            }
            if tag >> 16 == 0xFFFE {
                return Err(Error::Malformed {
                    offset: self.pos,
                    what: format!(
                        "unexpected delimiter (FFFE,{:04X}) in a data set",
                        tag & 0xFFFF
                    ),
                });
            }
            let el = self.element(depth)?;
            if end != usize::MAX && self.pos > end {
                return Err(Error::Malformed {
                    offset: self.pos,
                    what: "element runs past the end of its item".into(),
                });
            }
            ds.elements.push(el);
        }
        Ok(ds)
    }

    /// Reads the header at the current position: tag, VR, value length, header length.
    fn header(&self) -> Result<(u32, Vr, u32, usize)> {
        let start = self.pos;
        self.need(8, "element header")?;
        let tag = self.tag_at(self.pos);
        let group = (tag >> 16) as u16;
        let (vr, len, header) = if self.enc == Encoding::ImplicitLittle || tag >> 16 == 0xFFFE {
            let vr = implicit_vr(tag);
            (vr, self.u32_at(self.pos + 4), 8)
        } else {
            let code = [self.buf[self.pos + 4], self.buf[self.pos + 5]];
            let vr = match Vr::from_bytes(code) {
                Some(vr) => vr,
                None => {
                    return Err(Error::Malformed {
                        offset: start,
                        what: format!(
                            "invalid VR {:?} for ({group:04X},{:04X})",
                            String::from_utf8_lossy(&code),
                            tag & 0xFFFF
                        ),
                    })
                }
            };
            if vr.has_long_length() {
                self.need(12, "element header")?;
                (vr, self.u32_at(self.pos + 8), 12)
            } else {
                (vr, self.u16_at(self.pos + 6) as u32, 8)
            }
        };
        Ok((tag, vr, len, header))
    }

    fn element(&mut self, depth: usize) -> Result<Element<'a>> {
        let (tag, vr, len, header) = self.header()?;
        let group = (tag >> 16) as u16;
        self.pos += header;
        if len == UNDEFINED_LENGTH {
            if depth >= self.limits.max_depth {
                return Err(Error::TooDeep(self.limits.max_depth));
            }
            if vr != Vr::SQ
                && (tag == PIXEL_DATA
                    || (group == 0x7FE0 && matches!(tag & 0xFFFF, 0x0008 | 0x0009)))
            {
                let frags = self.fragments()?;
                return Ok(Element {
                    tag,
                    vr,
                    value: Value::Fragments(frags),
                });
            }
            // SQ, or UN / unknown with undefined length: a sequence. UN content is always
            // implicit VR little endian (PS3.5 §6.2.2).
            let saved = self.enc;
            if vr == Vr::UN {
                self.enc = Encoding::ImplicitLittle;
            }
            let items = self.items(usize::MAX, depth + 1);
            self.enc = saved;
            return Ok(Element {
                tag,
                vr: Vr::SQ,
                value: Value::Sequence(items?),
            });
        }
        let len = len as usize;
        self.need(len, "element value")?;
        if vr == Vr::SQ {
            if depth >= self.limits.max_depth {
                return Err(Error::TooDeep(self.limits.max_depth));
            }
            let end = self.pos + len;
            let items = self.items(end, depth + 1)?;
            self.pos = end;
            return Ok(Element {
                tag,
                vr,
                value: Value::Sequence(items),
            });
        }
        let value = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(Element {
            tag,
            vr,
            value: Value::Bytes(Cow::Borrowed(value)),
        })
    }

    /// Reads sequence items until `end` or a Sequence Delimitation Item.
    fn items(&mut self, end: usize, depth: usize) -> Result<Vec<DataSet<'a>>> {
        let mut items = Vec::new();
        loop {
            if end != usize::MAX && self.pos >= end {
                return Ok(items);
            }
            self.need(8, "item header")?;
            let tag = self.tag_at(self.pos);
            let len = self.u32_at(self.pos + 4);
            self.pos += 8;
            match tag {
                SEQUENCE_DELIMITATION => {
                    if end == usize::MAX {
                        return Ok(items);
                    }
                }
                ITEM => {
                    if len == UNDEFINED_LENGTH {
                        items.push(self.dataset_until(usize::MAX, depth, true)?);
                    } else {
                        let len = len as usize;
                        self.need(len, "item value")?;
                        let item_end = self.pos + len;
                        if end != usize::MAX && item_end > end {
                            return Err(Error::Malformed {
                                offset: self.pos,
                                what: "item runs past the end of its sequence".into(),
                            });
                        }
                        items.push(self.dataset_until(item_end, depth, true)?);
                        self.pos = item_end;
                    }
                }
                other => {
                    return Err(Error::Malformed {
                        offset: self.pos - 8,
                        what: format!(
                            "expected an item in a sequence, found ({:04X},{:04X})",
                            other >> 16,
                            other & 0xFFFF
                        ),
                    })
                }
            }
        }
    }

    fn fragments(&mut self) -> Result<Vec<Cow<'a, [u8]>>> {
        let mut frags = Vec::new();
        loop {
            self.need(8, "fragment header")?;
            let tag = self.tag_at(self.pos);
            let len = self.u32_at(self.pos + 4);
            self.pos += 8;
            match tag {
                SEQUENCE_DELIMITATION => return Ok(frags),
                ITEM if len != UNDEFINED_LENGTH => {
                    let len = len as usize;
                    self.need(len, "fragment")?;
                    frags.push(Cow::Borrowed(&self.buf[self.pos..self.pos + len]));
                    self.pos += len;
                }
                _ => {
                    return Err(Error::Malformed {
                        offset: self.pos - 8,
                        what: "bad item in encapsulated pixel data".into(),
                    })
                }
            }
        }
    }
}

/// The VR an implicit VR reader assigns to a tag.
pub fn implicit_vr(tag: u32) -> Vr {
    let group = tag >> 16;
    let element = tag & 0xFFFF;
    if group == 0xFFFE {
        return Vr::UN;
    }
    if element == 0 {
        return Vr::UL;
    }
    if group % 2 == 1 {
        return if (0x0010..=0x00FF).contains(&element) {
            Vr::LO
        } else {
            Vr::UN
        };
    }
    radveil_standard::dictionary_entry(tag).map_or(Vr::UN, |e| e.vr)
}

/// Where encoded bytes go: a plain buffer, or an [`Encoded`] file that borrows large values
/// from the input instead of copying them.
pub trait Sink<'a> {
    /// Appends encoded bytes.
    fn put(&mut self, bytes: &[u8]);
    /// Appends a value as read; a sink may keep a reference instead of a copy (which is why
    /// it takes the `Cow`: only borrowed values can be referenced).
    #[allow(clippy::ptr_arg)]
    fn put_value(&mut self, value: &Cow<'a, [u8]>) {
        self.put(value)
    }
}

impl<'a> Sink<'a> for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Values at least this large are referenced rather than copied by [`Encoded`].
const BORROW_THRESHOLD: usize = 16 * 1024;

/// An encoded file as pieces: encoded headers and small values, and large values (pixel
/// data, above all) borrowed from the input, so they are copied once, to the output file.
#[derive(Debug, Default)]
pub struct Encoded<'a> {
    pieces: Vec<Piece<'a>>,
    len: usize,
}

#[derive(Debug)]
enum Piece<'a> {
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
}

impl<'a> Encoded<'a> {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was encoded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Wraps a complete buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Encoded<'a> {
        Encoded {
            len: bytes.len(),
            pieces: vec![Piece::Owned(bytes)],
        }
    }

    /// Writes every piece in order.
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        for p in &self.pieces {
            match p {
                Piece::Owned(v) => w.write_all(v)?,
                Piece::Borrowed(b) => w.write_all(b)?,
            }
        }
        Ok(())
    }

    /// The whole file in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for p in &self.pieces {
            match p {
                Piece::Owned(o) => v.extend_from_slice(o),
                Piece::Borrowed(b) => v.extend_from_slice(b),
            }
        }
        v
    }
}

impl<'a> Sink<'a> for Encoded<'a> {
    fn put(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        match self.pieces.last_mut() {
            Some(Piece::Owned(v)) => v.extend_from_slice(bytes),
            _ => {
                let mut v = Vec::with_capacity(bytes.len().max(4096));
                v.extend_from_slice(bytes);
                self.pieces.push(Piece::Owned(v));
            }
        }
    }

    #[allow(clippy::ptr_arg)]
    fn put_value(&mut self, value: &Cow<'a, [u8]>) {
        match value {
            Cow::Borrowed(b) if b.len() >= BORROW_THRESHOLD => {
                self.len += b.len();
                self.pieces.push(Piece::Borrowed(b));
            }
            _ => self.put(value),
        }
    }
}

/// Appends the encoding of a data set to `out`.
///
/// Sequences and items are written with undefined length (valid in every syntax and robust
/// to the changes a de-identifier makes); group length elements other than the meta group's
/// are left out, since they would be stale.
pub fn write_dataset<'a>(ds: &DataSet<'a>, enc: Encoding, out: &mut impl Sink<'a>) {
    for el in &ds.elements {
        if el.tag & 0xFFFF == 0 && el.tag >> 16 != 0x0002 {
            continue;
        }
        write_element(el, enc, out);
    }
}

fn put_u16<'a>(out: &mut impl Sink<'a>, v: u16, enc: Encoding) {
    if enc.big() {
        out.put(&v.to_be_bytes())
    } else {
        out.put(&v.to_le_bytes())
    }
}

fn put_u32<'a>(out: &mut impl Sink<'a>, v: u32, enc: Encoding) {
    if enc.big() {
        out.put(&v.to_be_bytes())
    } else {
        out.put(&v.to_le_bytes())
    }
}

fn put_tag<'a>(out: &mut impl Sink<'a>, tag: u32, enc: Encoding) {
    put_u16(out, (tag >> 16) as u16, enc);
    put_u16(out, tag as u16, enc);
}

fn put_header<'a>(out: &mut impl Sink<'a>, tag: u32, vr: Vr, len: u32, enc: Encoding) {
    put_tag(out, tag, enc);
    if enc == Encoding::ImplicitLittle {
        put_u32(out, len, enc);
        return;
    }
    let vr = if !vr.has_long_length() && len > 0xFFFF {
        // Too long for a 2-byte length: PS3.5 §6.2.2 allows UN for such values.
        Vr::UN
    } else {
        vr
    };
    out.put(&vr.code());
    if vr.has_long_length() {
        out.put(&[0, 0]);
        put_u32(out, len, enc);
    } else {
        put_u16(out, len as u16, enc);
    }
}

fn write_element<'a>(el: &Element<'a>, enc: Encoding, out: &mut impl Sink<'a>) {
    match &el.value {
        Value::Bytes(b) => {
            let odd = b.len() % 2 == 1;
            let len = (b.len() + odd as usize) as u32;
            put_header(out, el.tag, el.vr, len, enc);
            out.put_value(b);
            if odd {
                out.put(&[if el.vr.is_text() && el.vr != Vr::UI {
                    b' '
                } else {
                    0
                }]);
            }
        }
        Value::Sequence(items) => {
            // A sequence read from UN content is written as SQ in explicit syntaxes; its
            // items use the surrounding encoding.
            put_header(out, el.tag, Vr::SQ, UNDEFINED_LENGTH, enc);
            for item in items {
                put_tag(out, ITEM, enc);
                put_u32(out, UNDEFINED_LENGTH, enc);
                write_dataset(item, enc, out);
                put_tag(out, ITEM_DELIMITATION, enc);
                put_u32(out, 0, enc);
            }
            put_tag(out, SEQUENCE_DELIMITATION, enc);
            put_u32(out, 0, enc);
        }
        Value::Fragments(frags) => {
            put_header(out, el.tag, el.vr, UNDEFINED_LENGTH, enc);
            for f in frags {
                put_tag(out, ITEM, enc);
                let odd = f.len() % 2 == 1;
                put_u32(out, (f.len() + odd as usize) as u32, enc);
                out.put_value(f);
                if odd {
                    out.put(&[0]);
                }
            }
            put_tag(out, SEQUENCE_DELIMITATION, enc);
            put_u32(out, 0, enc);
        }
    }
}

/// Writes a complete Part 10 file: a zero preamble, `DICM`, the meta group (with a fresh
/// group length) and the data set encoded per the transfer syntax.
pub fn write_file<'a>(
    meta: &DataSet<'_>,
    dataset: &DataSet<'a>,
    transfer_syntax: &str,
    out: &mut impl Sink<'a>,
) {
    out.put(&[0u8; 128]);
    out.put(b"DICM");
    let mut group = Vec::with_capacity(256);
    for el in &meta.elements {
        if el.tag == 0x0002_0000 || el.tag >> 16 != 0x0002 {
            continue;
        }
        write_element(el, Encoding::ExplicitLittle, &mut group);
    }
    put_header(out, 0x0002_0000, Vr::UL, 4, Encoding::ExplicitLittle);
    out.put(&(group.len() as u32).to_le_bytes());
    out.put(&group);
    let ts = TransferSyntax::from_uid(transfer_syntax);
    if ts.deflated {
        let mut body = Vec::with_capacity(1 << 16);
        write_dataset(dataset, ts.encoding, &mut body);
        out.put(&deflate(&body));
    } else {
        write_dataset(dataset, ts.encoding, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        v.extend_from_slice(&(tag as u16).to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn round_trips_every_encoding_with_nested_sequences() {
        let mut inner = DataSet::default();
        inner.put(Element::text(0x0010_0010, Vr::PN, "DOE^JOHN"));
        let mut ds = DataSet::default();
        ds.put(Element::text(0x0008_0018, Vr::UI, "1.2.3"));
        ds.put(Element {
            tag: 0x0008_1140,
            vr: Vr::SQ,
            value: Value::Sequence(vec![inner.clone(), DataSet::default()]),
        });
        ds.put(Element {
            tag: PIXEL_DATA,
            vr: Vr::OB,
            value: Value::Fragments(vec![
                Cow::Borrowed(&[][..]),
                Cow::Borrowed(&[1, 2, 3, 4][..]),
            ]),
        });
        for enc in [
            Encoding::ImplicitLittle,
            Encoding::ExplicitLittle,
            Encoding::ExplicitBig,
        ] {
            let mut out = Vec::new();
            write_dataset(&ds, enc, &mut out);
            let back = read_dataset(&out, enc, Limits::default()).unwrap();
            assert_eq!(back.get(0x0008_0018).unwrap().to_str().unwrap(), "1.2.3");
            let Value::Sequence(items) = &back.get(0x0008_1140).unwrap().value else {
                panic!("not a sequence")
            };
            assert_eq!(items.len(), 2);
            assert_eq!(items[0].string(0x0010_0010).unwrap(), "DOE^JOHN");
            let Value::Fragments(f) = &back.get(PIXEL_DATA).unwrap().value else {
                panic!("not fragments")
            };
            assert_eq!(f[1].as_ref(), &[1, 2, 3, 4]);
        }
    }

    #[test]
    fn hostile_length_is_an_error_not_an_allocation() {
        let mut buf = explicit(0x0010_0010, b"PN", b"AB");
        buf.extend_from_slice(&[
            0x10, 0x00, 0x20, 0x00, b'U', b'T', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF,
        ]);
        let err = read_dataset(&buf, Encoding::ExplicitLittle, Limits::default()).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut buf = Vec::new();
        for _ in 0..200 {
            buf.extend_from_slice(&[
                0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            buf.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let err = read_dataset(&buf, Encoding::ExplicitLittle, Limits::default()).unwrap_err();
        assert!(matches!(err, Error::TooDeep(64)));
    }

    #[test]
    fn un_with_undefined_length_is_read_as_implicit_sequence() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&[
            0x09, 0x00, 0x10, 0x10, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        buf.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        // implicit VR inside: (0010,0010) length 4
        buf.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, 4, 0, 0, 0]);
        buf.extend_from_slice(b"AB^C");
        buf.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        buf.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let ds = read_dataset(&buf, Encoding::ExplicitLittle, Limits::default()).unwrap();
        let Value::Sequence(items) = &ds.elements[0].value else {
            panic!()
        };
        assert_eq!(items[0].string(0x0010_0010).unwrap(), "AB^C");
    }

    #[test]
    fn implicit_body_declared_explicit_is_detected() {
        let buf = [0x08, 0x00, 0x18, 0x00, 2, 0, 0, 0, b'1', 0];
        assert_eq!(
            effective_encoding(&buf, Encoding::ExplicitLittle),
            Encoding::ImplicitLittle
        );
        let ds = read_dataset(&buf, Encoding::ExplicitLittle, Limits::default()).unwrap();
        assert_eq!(ds.elements[0].vr, Vr::UI);
    }

    fn explicit_meta() -> DataSet<'static> {
        let mut meta = DataSet::default();
        meta.put(Element::text(
            0x0002_0010,
            Vr::UI,
            EXPLICIT_VR_LITTLE_ENDIAN,
        ));
        meta
    }

    #[test]
    fn file_meta_round_trip() {
        let meta = explicit_meta();
        let mut ds = DataSet::default();
        ds.put(Element::text(0x0010_0020, Vr::LO, "ID"));
        let mut out = Vec::new();
        write_file(&meta, &ds, EXPLICIT_VR_LITTLE_ENDIAN, &mut out);
        let m = read_file_meta(&out).unwrap();
        assert_eq!(m.transfer_syntax, EXPLICIT_VR_LITTLE_ENDIAN);
        let back = read_dataset(m.body, Encoding::ExplicitLittle, Limits::default()).unwrap();
        assert_eq!(back, ds);
        assert!(matches!(read_file_meta(b"hello"), Err(Error::NotPart10)));
    }

    #[test]
    fn finds_trailing_pixel_data_only_when_it_ends_the_file() {
        let meta = explicit_meta();
        let mut ds = DataSet::default();
        ds.put(Element::text(0x0010_0020, Vr::LO, "ID"));
        ds.put(Element {
            tag: PIXEL_DATA,
            vr: Vr::OW,
            value: Value::Bytes(Cow::Owned(vec![7; 1000])),
        });
        let mut out = Vec::new();
        write_file(&meta, &ds, EXPLICIT_VR_LITTLE_ENDIAN, &mut out);
        let at = trailing_pixel_data(&out[..out.len() - 900], out.len() as u64).unwrap();
        assert_eq!(&out[at..at + 4], &[0xE0, 0x7F, 0x10, 0x00]);
        assert_eq!(out.len() - at, 12 + 1000);
        // Something after the pixel data, or a wrong total length: read it all.
        assert!(trailing_pixel_data(&out, out.len() as u64 + 2).is_none());
        // A prefix that stops before the pixel data header.
        assert!(trailing_pixel_data(&out[..at], out.len() as u64).is_none());
    }

    #[test]
    fn trim_text_strips_padding() {
        assert_eq!(trim_text(b" AB \0"), b"AB");
        assert_eq!(trim_text(b"   "), b"");
    }
}
