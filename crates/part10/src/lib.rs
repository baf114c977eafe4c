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
//!
//! Memory: what a reader allocates grows with what the input claims, not with its size (a
//! deflated data set inflates; a data set of tiny elements makes a tree many times its
//! encoded size). Every reader caps both ([`Limits`]); the `_in` variants
//! ([`read_file_in`], [`read_dataset_in`], [`inflate_in`], [`read_items_in`]) also charge
//! the inflated bytes and the tree's size to a [`Grant`] of the run's [`MemoryBudget`], so a
//! bomb fails its own file instead of taking the process down.
//!
//! Messages never quote a value taken from the input: errors name elements by tag and byte
//! position only.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::arithmetic_side_effects)]

use std::borrow::Cow;
use std::io::Read;

use radveil_standard::tags;
pub use radveil_standard::Vr;

mod budget;
pub mod charset;
pub use budget::{BudgetError, Grant, MemoryBudget, DEFAULT_WAIT};

/// Tag of Item (FFFE,E000).
pub const ITEM: u32 = 0xFFFE_E000;
/// Tag of Item Delimitation Item (FFFE,E00D).
pub const ITEM_DELIMITATION: u32 = 0xFFFE_E00D;
/// Tag of Sequence Delimitation Item (FFFE,E0DD).
pub const SEQUENCE_DELIMITATION: u32 = 0xFFFE_E0DD;
/// The group (`tag >> 16`) of the item and delimitation tags (FFFE,eeee): not attributes,
/// never in a data set, always with an implicit VR (PS3.5 §7.5).
pub const ITEM_GROUP: u32 = 0xFFFE;
/// The group (`tag >> 16`) of the File Meta Information (0002,eeee), always Explicit VR
/// Little Endian (PS3.10 §7.1).
pub const FILE_META_GROUP: u32 = 0x0002;
/// Tag of Pixel Data (7FE0,0010); the same as `radveil_standard::tags::PIXEL_DATA`.
pub const PIXEL_DATA: u32 = tags::PIXEL_DATA;
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

/// Bytes of memory one element of a tree is charged: the element itself, twice over for the
/// spare capacity a growing `Vec` keeps.
pub const ELEMENT_COST: usize = 2 * std::mem::size_of::<Element<'static>>();
/// Bytes of memory one sequence item (or fragment) is charged.
pub const ITEM_COST: usize = 2 * std::mem::size_of::<DataSet<'static>>();
/// A tree's charge is taken from the budget in steps of this many bytes, so the budget's lock
/// is not taken once per element.
const CHARGE_STEP: usize = 256 * 1024;

/// Formats a tag as `(gggg,eeee)`: how every message of this crate names an element.
pub fn tag_name(tag: u32) -> String {
    format!("({:04X},{:04X})", tag >> 16, tag & 0xFFFF)
}

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
    /// Something in the encoding breaks PS3.5. `what` names tags and never holds a value.
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
    /// The data set holds more elements and items than [`Limits::max_elements`].
    #[error("more than {0} elements and items in one data set")]
    TooManyElements(usize),
    /// A deflated data set could not be inflated.
    #[error("deflated data set: {0}")]
    Deflate(#[from] std::io::Error),
    /// The memory budget refused what reading this file needs.
    #[error("memory budget: {0}")]
    Budget(#[from] BudgetError),
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

/// Bounds on what a reader accepts, so hostile input can exhaust neither the stack nor memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest sequence nesting accepted.
    pub max_depth: usize,
    /// Largest inflated size of a deflated data set, in bytes (per file).
    pub max_inflated: usize,
    /// Most elements, items and fragments one data set may hold, nested ones included: a
    /// body of tiny elements builds a tree several times its own size.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            // Deflated data sets are SR, waveforms and small images; nothing real comes near.
            max_inflated: 1 << 29,
            // A tree of this many elements takes about 320 MB; the largest real objects
            // (enhanced multi-frame with thousands of frames) hold a few hundred thousand.
            max_elements: 1 << 22,
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
        .map_or(0, |p| p.saturating_add(1));
    let head = b.get(..end).unwrap_or_default();
    let start = head.iter().position(|&c| c != b' ').unwrap_or(end);
    head.get(start..).unwrap_or_default()
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
        let two: [u8; 2] = b.get(..2)?.try_into().ok()?;
        Some(if enc == Encoding::ExplicitBig {
            u16::from_be_bytes(two)
        } else {
            u16::from_le_bytes(two)
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

    /// An item of the Code Sequence Macro (PS3.3 Table 8.8-1): Code Value (SH), Coding
    /// Scheme Designator (SH) and Code Meaning (LO). The one builder of code items, so every
    /// writer of a coded record (CID 7050 de-identification methods, signature purposes)
    /// writes them alike.
    pub fn code_item(value: &str, scheme: &str, meaning: &str) -> DataSet<'static> {
        DataSet {
            elements: vec![
                Element::text(tags::CODE_VALUE, Vr::SH, value),
                Element::text(tags::CODING_SCHEME_DESIGNATOR, Vr::SH, scheme),
                Element::text(tags::CODE_MEANING, Vr::LO, meaning),
            ],
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
    let start = if file.get(128..132) == Some(b"DICM") {
        132
    } else if file.get(..4) == Some(b"DICM") {
        4
    } else if file.len() >= 8
        && file.get(..2) == Some(&[0x02, 0x00])
        && file.get(4..6) == Some(b"UL")
    {
        0
    } else {
        return Err(Error::NotPart10);
    };
    let mut charge = Charge::new(Limits::default(), Account::none());
    let mut r = Reader {
        buf: file,
        pos: start,
        enc: Encoding::ExplicitLittle,
        limits: Limits::default(),
        charge: &mut charge,
    };
    let mut meta = DataSet::default();
    while r.left() >= 8 {
        if u32::from(r.u16_at(r.pos)?) != FILE_META_GROUP {
            break;
        }
        r.charge.element()?;
        let el = r.element(0)?;
        meta.elements.push(el);
    }
    if meta.elements.is_empty() {
        return Err(Error::InvalidMeta("empty file meta group"));
    }
    let ts = meta
        .string(tags::TRANSFER_SYNTAX_UID)
        .filter(|s| !s.is_empty())
        .ok_or(Error::InvalidMeta("no Transfer Syntax UID (0002,0010)"))?;
    let body = file.get(r.pos..).unwrap_or_default();
    Ok(FileMeta {
        elements: meta,
        transfer_syntax: ts,
        body,
    })
}

/// Inflates a deflated data set body, refusing to grow beyond `limit` bytes.
pub fn inflate(body: &[u8], limit: usize) -> Result<Vec<u8>> {
    inflate_charged(body, limit, &mut Account::none())
}

/// Inflates a deflated data set body like [`inflate`], charging every byte of the buffer it
/// allocates to `grant` first: inflation stops as soon as the budget refuses more.
pub fn inflate_in(body: &[u8], limit: usize, grant: &mut Grant<'_>) -> Result<Vec<u8>> {
    inflate_charged(body, limit, &mut Account::growing(grant))
}

fn inflate_charged(body: &[u8], limit: usize, account: &mut Account<'_, '_>) -> Result<Vec<u8>> {
    let mut dec = flate2::read::DeflateDecoder::new(body);
    let mut out: Vec<u8> = Vec::new();
    // Bytes of `out`'s capacity already charged to the grant.
    let mut charged: usize = 0;
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = dec.read(&mut chunk)?;
        if n == 0 {
            return Ok(out);
        }
        let len = out.len().saturating_add(n);
        if len > limit {
            return Err(Error::Malformed {
                offset: 0,
                what: format!("inflated data set larger than {limit} bytes"),
            });
        }
        if len > out.capacity() {
            // Grow geometrically, never past the limit, and charge before allocating.
            let cap = out
                .capacity()
                .saturating_mul(2)
                .max(len)
                .max(64 * 1024)
                .min(limit);
            account.take(cap.saturating_sub(charged))?;
            charged = cap;
            // Fallible: under an address-space limit a refused allocation fails this file,
            // never the process.
            out.try_reserve_exact(cap.saturating_sub(out.len()))
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::OutOfMemory,
                        format!("cannot allocate {cap} bytes for the inflated data set"),
                    )
                })?;
        }
        out.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
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
    let mut charge = Charge::new(limits, Account::none());
    dataset_charged(buf, encoding, limits, &mut charge)
}

/// Parses an encoded data set like [`read_dataset`], charging the tree's size to `grant`.
pub fn read_dataset_in<'a>(
    buf: &'a [u8],
    encoding: Encoding,
    limits: Limits,
    grant: &mut Grant<'_>,
) -> Result<DataSet<'a>> {
    let mut charge = Charge::new(limits, Account::growing(grant));
    dataset_charged(buf, encoding, limits, &mut charge)
}

fn dataset_charged<'a>(
    buf: &'a [u8],
    encoding: Encoding,
    limits: Limits,
    charge: &mut Charge<'_, '_>,
) -> Result<DataSet<'a>> {
    let mut r = Reader {
        buf,
        pos: 0,
        enc: effective_encoding(buf, encoding),
        limits,
        charge,
    };
    r.dataset_until(None, 0, false)
}

/// Parses the items of a sequence whose value was kept as bytes (a UN or private sequence
/// with defined length): items are read until the bytes end.
pub fn read_items(buf: &[u8], encoding: Encoding, limits: Limits) -> Result<Vec<DataSet<'_>>> {
    let mut charge = Charge::new(limits, Account::none());
    items_charged(buf, encoding, limits, &mut charge)
}

/// Parses the items of a sequence kept as bytes like [`read_items`], charging the tree's
/// size to `grant`.
pub fn read_items_in<'a>(
    buf: &'a [u8],
    encoding: Encoding,
    limits: Limits,
    grant: &mut Grant<'_>,
) -> Result<Vec<DataSet<'a>>> {
    let mut charge = Charge::new(limits, Account::growing(grant));
    items_charged(buf, encoding, limits, &mut charge)
}

fn items_charged<'a>(
    buf: &'a [u8],
    encoding: Encoding,
    limits: Limits,
    charge: &mut Charge<'_, '_>,
) -> Result<Vec<DataSet<'a>>> {
    let mut r = Reader {
        buf,
        pos: 0,
        enc: encoding,
        limits,
        charge,
    };
    r.items(Some(buf.len()), 1)
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
    let body_start = prefix.len().checked_sub(meta.body.len())?;
    let limits = Limits::default();
    let mut charge = Charge::new(limits, Account::none());
    let mut r = Reader {
        buf: meta.body,
        pos: 0,
        enc: effective_encoding(meta.body, ts.encoding),
        limits,
        charge: &mut charge,
    };
    loop {
        let (tag, _vr, len, header) = r.header().ok()?;
        if tag == PIXEL_DATA {
            if len == UNDEFINED_LENGTH {
                return None;
            }
            let start = body_start.checked_add(r.pos)?;
            let end = (start as u64)
                .checked_add(header as u64)?
                .checked_add(u64::from(len))?;
            return (end == file_len).then_some(start);
        }
        if tag > PIXEL_DATA || tag >> 16 == ITEM_GROUP {
            return None;
        }
        r.charge.element().ok()?;
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
    read_file_charged(file, inflated, limits, Account::none())
}

/// Reads a Part 10 file like [`read_file`], charging the inflated data set and the tree's
/// size to `grant` (which the caller keeps until it drops the tree).
pub fn read_file_in<'b>(
    file: &'b [u8],
    inflated: &'b mut Vec<u8>,
    limits: Limits,
    grant: &mut Grant<'_>,
) -> Result<(FileMeta<'b>, DataSet<'b>, Encoding)> {
    read_file_charged(file, inflated, limits, Account::growing(grant))
}

/// Reads a Part 10 file like [`read_file`] under the run's `budget`: the memory is reserved
/// (waiting up to [`DEFAULT_WAIT`] for other workers for a first estimate, then growing
/// without waiting) and the returned [`Grant`] holds it until dropped, after the tree.
pub fn read_file_budgeted<'b, 'm>(
    file: &'b [u8],
    inflated: &'b mut Vec<u8>,
    limits: Limits,
    budget: &'m MemoryBudget,
) -> Result<(FileMeta<'b>, DataSet<'b>, Encoding, Grant<'m>)> {
    let mut grant = budget.reserve(first_estimate(file.len()).min(budget.limit()), DEFAULT_WAIT)?;
    let account = Account::drawing_on(&mut grant);
    let (meta, ds, enc) = read_file_charged(file, inflated, limits, account)?;
    Ok((meta, ds, enc, grant))
}

/// A first reservation for reading a file of `len` bytes: room for a typical tree and, for a
/// deflated one, a typical inflation; what a file really needs beyond it is charged as it
/// grows.
pub fn first_estimate(len: usize) -> u64 {
    (len as u64).saturating_mul(4).saturating_add(1 << 20)
}

fn read_file_charged<'b>(
    file: &'b [u8],
    inflated: &'b mut Vec<u8>,
    limits: Limits,
    mut account: Account<'_, '_>,
) -> Result<(FileMeta<'b>, DataSet<'b>, Encoding)> {
    let meta = read_file_meta(file)?;
    let ts = TransferSyntax::from_uid(&meta.transfer_syntax);
    let body: &[u8] = if ts.deflated {
        *inflated = inflate_charged(meta.body, limits.max_inflated, &mut account)?;
        inflated
    } else {
        meta.body
    };
    let enc = effective_encoding(body, ts.encoding);
    let mut charge = Charge::new(limits, account);
    let ds = dataset_charged(body, enc, limits, &mut charge)?;
    Ok((meta, ds, enc))
}

/// Reads the encoding that [`read_dataset`] actually used for a body (implicit VR detected in
/// a body declared explicit), so that a writer can keep it.
pub fn effective_encoding(buf: &[u8], declared: Encoding) -> Encoding {
    match buf.get(4..6) {
        Some(&[a, b])
            if declared == Encoding::ExplicitLittle && Vr::from_bytes([a, b]).is_none() =>
        {
            Encoding::ImplicitLittle
        }
        _ => declared,
    }
}

/// Where a reader takes the memory it allocates from: nowhere (only [`Limits`] apply), or a
/// [`Grant`], first from the part of it reserved for this read (`credit`), then by growing
/// it without waiting.
struct Account<'g, 'm> {
    grant: Option<&'g mut Grant<'m>>,
    credit: u64,
}

impl<'g, 'm> Account<'g, 'm> {
    fn none() -> Account<'g, 'm> {
        Account {
            grant: None,
            credit: 0,
        }
    }

    /// Every byte grows the grant: what it already holds belongs to the caller.
    fn growing(grant: &'g mut Grant<'m>) -> Account<'g, 'm> {
        Account {
            grant: Some(grant),
            credit: 0,
        }
    }

    /// What the grant holds was reserved for this read and is used first.
    fn drawing_on(grant: &'g mut Grant<'m>) -> Account<'g, 'm> {
        let credit = grant.bytes();
        Account {
            grant: Some(grant),
            credit,
        }
    }

    fn take(&mut self, bytes: usize) -> Result<()> {
        let Some(g) = self.grant.as_deref_mut() else {
            return Ok(());
        };
        let bytes = bytes as u64;
        if self.credit >= bytes {
            self.credit = self.credit.saturating_sub(bytes);
        } else {
            g.grow(bytes.saturating_sub(self.credit))?;
            self.credit = 0;
        }
        Ok(())
    }
}

/// What a tree being read costs: a count of its elements against [`Limits::max_elements`],
/// and its bytes against a [`Grant`] when one is given.
struct Charge<'g, 'm> {
    max_elements: usize,
    elements: usize,
    /// Bytes of tree counted so far.
    bytes: usize,
    /// Bytes taken from the grant so far (at least `bytes`).
    taken: usize,
    account: Account<'g, 'm>,
}

impl<'g, 'm> Charge<'g, 'm> {
    fn new(limits: Limits, account: Account<'g, 'm>) -> Charge<'g, 'm> {
        Charge {
            max_elements: limits.max_elements,
            elements: 0,
            bytes: 0,
            taken: 0,
            account,
        }
    }

    /// Counts one element before it is added to the tree.
    fn element(&mut self) -> Result<()> {
        self.add(ELEMENT_COST)
    }

    /// Counts one sequence item or fragment before it is added to the tree.
    fn item(&mut self) -> Result<()> {
        self.add(ITEM_COST)
    }

    fn add(&mut self, cost: usize) -> Result<()> {
        self.elements = self.elements.saturating_add(1);
        if self.elements > self.max_elements {
            return Err(Error::TooManyElements(self.max_elements));
        }
        self.bytes = self.bytes.saturating_add(cost);
        if self.bytes > self.taken {
            let step = CHARGE_STEP.max(self.bytes.saturating_sub(self.taken));
            self.account.take(step)?;
            self.taken = self.taken.saturating_add(step);
        }
        Ok(())
    }
}

struct Reader<'a, 'c, 'g, 'm> {
    buf: &'a [u8],
    pos: usize,
    enc: Encoding,
    limits: Limits,
    charge: &'c mut Charge<'g, 'm>,
}

impl<'a> Reader<'a, '_, '_, '_> {
    /// Bytes left after the current position.
    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn need(&self, n: usize, what: &'static str) -> Result<()> {
        if self.left() < n {
            Err(Error::Truncated {
                offset: self.pos,
                what,
            })
        } else {
            Ok(())
        }
    }

    /// Moves past `n` bytes that [`Reader::need`] found present.
    fn skip(&mut self, n: usize, what: &'static str) -> Result<()> {
        self.need(n, what)?;
        self.pos = self.pos.saturating_add(n);
        Ok(())
    }

    fn array_at<const N: usize>(&self, p: usize) -> Result<[u8; N]> {
        p.checked_add(N)
            .and_then(|end| self.buf.get(p..end))
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::Truncated {
                offset: p,
                what: "element header",
            })
    }

    fn u16_at(&self, p: usize) -> Result<u16> {
        let b = self.array_at::<2>(p)?;
        Ok(if self.enc.big() {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32_at(&self, p: usize) -> Result<u32> {
        let b = self.array_at::<4>(p)?;
        Ok(if self.enc.big() {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn tag_at(&self, p: usize) -> Result<u32> {
        // Item tags are always encoded in the data set's byte order like any other tag.
        let group = self.u16_at(p)?;
        let element = self.u16_at(p.saturating_add(2))?;
        Ok((u32::from(group) << 16) | u32::from(element))
    }

    /// Reads elements until `end` (defined length) or, with `end` `None`, the end of the
    /// buffer or (`in_item`) an Item Delimitation Item.
    fn dataset_until(
        &mut self,
        end: Option<usize>,
        depth: usize,
        in_item: bool,
    ) -> Result<DataSet<'a>> {
        let mut ds = DataSet::default();
        loop {
            match end {
                Some(end) if self.pos >= end => break,
                None if self.pos >= self.buf.len() => {
                    if in_item {
                        return Err(Error::Truncated {
                            offset: self.pos,
                            what: "item without Item Delimitation Item",
                        });
                    }
                    break;
                }
                _ => {}
            }
            // Trailing padding of fewer than 8 bytes after the last element is tolerated.
            if !in_item
                && self.left() < 8
                && self
                    .buf
                    .get(self.pos..)
                    .is_some_and(|rest| rest.iter().all(|&b| b == 0))
            {
                self.pos = self.buf.len();
                break;
            }
            self.need(8, "element header")?;
            let tag = self.tag_at(self.pos)?;
            if tag == ITEM_DELIMITATION {
                if !in_item {
                    return Err(Error::Malformed {
                        offset: self.pos,
                        what: "Item Delimitation Item outside an item".into(),
                    });
                }
                self.skip(8, "item delimitation")?;
                if end.is_none() {
                    return Ok(ds);
                }
                continue;
            }
            if tag == SEQUENCE_DELIMITATION && !in_item {
                // Stray sequence delimiter at the top level: seen in the wild as trailing junk.
                self.skip(8, "sequence delimitation")?;
                continue;
            }
            if tag >> 16 == ITEM_GROUP {
                return Err(Error::Malformed {
                    offset: self.pos,
                    what: format!("unexpected delimiter {} in a data set", tag_name(tag)),
                });
            }
            self.charge.element()?;
            let el = self.element(depth)?;
            if end.is_some_and(|end| self.pos > end) {
                return Err(Error::Malformed {
                    offset: self.pos,
                    what: format!("element {} runs past the end of its item", tag_name(tag)),
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
        let tag = self.tag_at(start)?;
        let (vr, len, header) = if self.enc == Encoding::ImplicitLittle || tag >> 16 == ITEM_GROUP {
            let vr = implicit_vr(tag);
            (vr, self.u32_at(start.saturating_add(4))?, 8)
        } else {
            let code = self.array_at::<2>(start.saturating_add(4))?;
            let Some(vr) = Vr::from_bytes(code) else {
                // The code found is not quoted: a message never holds bytes of the input.
                return Err(Error::Malformed {
                    offset: start,
                    what: format!("invalid VR code for {}", tag_name(tag)),
                });
            };
            if vr.has_long_length() {
                self.need(12, "element header")?;
                (vr, self.u32_at(start.saturating_add(8))?, 12)
            } else {
                (vr, u32::from(self.u16_at(start.saturating_add(6))?), 8)
            }
        };
        Ok((tag, vr, len, header))
    }

    fn element(&mut self, depth: usize) -> Result<Element<'a>> {
        let (tag, vr, len, header) = self.header()?;
        let group = (tag >> 16) as u16;
        self.skip(header, "element header")?;
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
            let items = self.items(None, depth.saturating_add(1));
            self.enc = saved;
            return Ok(Element {
                tag,
                vr: Vr::SQ,
                value: Value::Sequence(items?),
            });
        }
        let len = len as usize;
        self.need(len, "element value")?;
        let end = self.pos.saturating_add(len);
        if vr == Vr::SQ {
            if depth >= self.limits.max_depth {
                return Err(Error::TooDeep(self.limits.max_depth));
            }
            let items = self.items(Some(end), depth.saturating_add(1))?;
            self.pos = end;
            return Ok(Element {
                tag,
                vr,
                value: Value::Sequence(items),
            });
        }
        let value = self.buf.get(self.pos..end).ok_or(Error::Truncated {
            offset: self.pos,
            what: "element value",
        })?;
        self.pos = end;
        Ok(Element {
            tag,
            vr,
            value: Value::Bytes(Cow::Borrowed(value)),
        })
    }

    /// Reads sequence items until `end` or, with `end` `None`, a Sequence Delimitation Item.
    fn items(&mut self, end: Option<usize>, depth: usize) -> Result<Vec<DataSet<'a>>> {
        let mut items = Vec::new();
        loop {
            if end.is_some_and(|end| self.pos >= end) {
                return Ok(items);
            }
            self.need(8, "item header")?;
            let at = self.pos;
            let tag = self.tag_at(at)?;
            let len = self.u32_at(at.saturating_add(4))?;
            self.skip(8, "item header")?;
            match tag {
                SEQUENCE_DELIMITATION => {
                    if end.is_none() {
                        return Ok(items);
                    }
                }
                ITEM => {
                    self.charge.item()?;
                    if len == UNDEFINED_LENGTH {
                        items.push(self.dataset_until(None, depth, true)?);
                    } else {
                        let len = len as usize;
                        self.need(len, "item value")?;
                        let item_end = self.pos.saturating_add(len);
                        if end.is_some_and(|end| item_end > end) {
                            return Err(Error::Malformed {
                                offset: self.pos,
                                what: "item runs past the end of its sequence".into(),
                            });
                        }
                        items.push(self.dataset_until(Some(item_end), depth, true)?);
                        self.pos = item_end;
                    }
                }
                other => {
                    return Err(Error::Malformed {
                        offset: at,
                        what: format!("expected an item in a sequence, found {}", tag_name(other)),
                    })
                }
            }
        }
    }

    fn fragments(&mut self) -> Result<Vec<Cow<'a, [u8]>>> {
        let mut frags = Vec::new();
        loop {
            self.need(8, "fragment header")?;
            let at = self.pos;
            let tag = self.tag_at(at)?;
            let len = self.u32_at(at.saturating_add(4))?;
            self.skip(8, "fragment header")?;
            match tag {
                SEQUENCE_DELIMITATION => return Ok(frags),
                ITEM if len != UNDEFINED_LENGTH => {
                    let len = len as usize;
                    self.need(len, "fragment")?;
                    let end = self.pos.saturating_add(len);
                    let frag = self.buf.get(self.pos..end).ok_or(Error::Truncated {
                        offset: self.pos,
                        what: "fragment",
                    })?;
                    self.charge.item()?;
                    frags.push(Cow::Borrowed(frag));
                    self.pos = end;
                }
                _ => {
                    return Err(Error::Malformed {
                        offset: at,
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
    if group == ITEM_GROUP {
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
        self.len = self.len.saturating_add(bytes.len());
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
                self.len = self.len.saturating_add(b.len());
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
        if el.tag & 0xFFFF == 0 && el.tag >> 16 != FILE_META_GROUP {
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

/// The length field of a value of `n` bytes once padded to even length. A value read from a
/// file is below 4 GiB (its length was a 32-bit field); a larger one could only be built in
/// memory and is clamped to the largest even defined length rather than wrapped.
fn encoded_len(n: usize) -> u32 {
    let padded = n.saturating_add(n % 2);
    u32::try_from(padded).unwrap_or(UNDEFINED_LENGTH - 1)
}

fn write_element<'a>(el: &Element<'a>, enc: Encoding, out: &mut impl Sink<'a>) {
    match &el.value {
        Value::Bytes(b) => {
            let odd = b.len() % 2 == 1;
            let len = encoded_len(b.len());
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
                put_u32(out, encoded_len(f.len()), enc);
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
        if el.tag == tags::FILE_META_INFORMATION_GROUP_LENGTH || el.tag >> 16 != FILE_META_GROUP {
            continue;
        }
        write_element(el, Encoding::ExplicitLittle, &mut group);
    }
    put_header(
        out,
        tags::FILE_META_INFORMATION_GROUP_LENGTH,
        Vr::UL,
        4,
        Encoding::ExplicitLittle,
    );
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
        inner.put(Element::text(tags::PATIENT_NAME, Vr::PN, "DOE^JOHN"));
        let mut ds = DataSet::default();
        ds.put(Element::text(tags::SOP_INSTANCE_UID, Vr::UI, "1.2.3"));
        ds.put(Element {
            tag: tags::REFERENCED_IMAGE_SEQUENCE,
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
            assert_eq!(
                back.get(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap(),
                "1.2.3"
            );
            let Value::Sequence(items) = &back.get(tags::REFERENCED_IMAGE_SEQUENCE).unwrap().value
            else {
                panic!("not a sequence")
            };
            assert_eq!(items.len(), 2);
            assert_eq!(items[0].string(tags::PATIENT_NAME).unwrap(), "DOE^JOHN");
            let Value::Fragments(f) = &back.get(PIXEL_DATA).unwrap().value else {
                panic!("not fragments")
            };
            assert_eq!(f[1].as_ref(), &[1, 2, 3, 4]);
        }
    }

    #[test]
    fn hostile_length_is_an_error_not_an_allocation() {
        let mut buf = explicit(tags::PATIENT_NAME, b"PN", b"AB");
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
        assert_eq!(items[0].string(tags::PATIENT_NAME).unwrap(), "AB^C");
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
            tags::TRANSFER_SYNTAX_UID,
            Vr::UI,
            EXPLICIT_VR_LITTLE_ENDIAN,
        ));
        meta
    }

    #[test]
    fn file_meta_round_trip() {
        let meta = explicit_meta();
        let mut ds = DataSet::default();
        ds.put(Element::text(tags::PATIENT_ID, Vr::LO, "ID"));
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
        ds.put(Element::text(tags::PATIENT_ID, Vr::LO, "ID"));
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
    fn invalid_vr_message_names_the_tag_not_the_bytes() {
        // A valid first element (so the body is read as explicit VR), then one whose VR
        // code is not a VR: the message names the tag and never quotes the code found.
        let mut buf = explicit(tags::SOP_INSTANCE_UID, b"UI", b"1\0");
        buf.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'Z', b'Q', 2, 0, b'A', b'B']);
        let msg = read_dataset(&buf, Encoding::ExplicitLittle, Limits::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("(0010,0010)"), "{msg}");
        assert!(!msg.contains("ZQ"), "{msg}");
    }

    /// `n` empty elements of an explicit VR little endian body (8 bytes each).
    fn tiny_elements(n: usize) -> Vec<u8> {
        // Private elements (0009,1000)-(0009,10FF), which have no PS3.6 keyword.
        const PRIVATE_BLOCK: u32 = 0x0009_1000;
        let mut body = Vec::with_capacity(n.saturating_mul(8));
        for i in 0..n {
            body.extend_from_slice(&explicit(PRIVATE_BLOCK | (i as u32 & 0xFF), b"LO", b""));
        }
        body
    }

    fn deflated_file(body: &[u8]) -> Vec<u8> {
        let mut meta = DataSet::default();
        meta.put(Element::text(
            tags::TRANSFER_SYNTAX_UID,
            Vr::UI,
            DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        ));
        let mut out = Vec::new();
        write_file(
            &meta,
            &DataSet::default(),
            EXPLICIT_VR_LITTLE_ENDIAN,
            &mut out,
        );
        out.extend_from_slice(&deflate(body));
        out
    }

    #[test]
    fn element_count_is_capped() {
        let body = tiny_elements(1000);
        let limits = Limits {
            max_elements: 999,
            ..Limits::default()
        };
        let err = read_dataset(&body, Encoding::ExplicitLittle, limits).unwrap_err();
        assert!(matches!(err, Error::TooManyElements(999)), "{err}");
        let limits = Limits {
            max_elements: 1000,
            ..Limits::default()
        };
        assert_eq!(
            read_dataset(&body, Encoding::ExplicitLittle, limits)
                .unwrap()
                .elements
                .len(),
            1000
        );
    }

    #[test]
    fn default_limits_refuse_a_tree_of_millions_of_tiny_elements() {
        // 4.2 million empty elements: 34 MB encoded, a tree of some 300 MB.
        let body = tiny_elements(Limits::default().max_elements + 1);
        let err = read_dataset(&body, Encoding::ExplicitLittle, Limits::default()).unwrap_err();
        assert!(matches!(err, Error::TooManyElements(_)), "{err}");
    }

    #[test]
    fn inflation_is_capped_per_file() {
        let file = deflated_file(&tiny_elements(10_000));
        let limits = Limits {
            max_inflated: 50_000,
            ..Limits::default()
        };
        let mut inflated = Vec::new();
        let err = read_file(&file, &mut inflated, limits).unwrap_err();
        assert!(err.to_string().contains("larger than 50000"), "{err}");
    }

    #[test]
    fn a_deflate_bomb_is_refused_by_the_budget_and_releases_it() {
        // 200,000 tiny elements: 1.6 MB inflated, a tree of about 16 MB; the budget is 4 MB.
        let file = deflated_file(&tiny_elements(200_000));
        assert!(file.len() < 100_000);
        let budget = MemoryBudget::new(4 << 20);
        let mut inflated = Vec::new();
        let err = read_file_budgeted(&file, &mut inflated, Limits::default(), &budget).unwrap_err();
        assert!(matches!(err, Error::Budget(_)), "{err}");
        assert_eq!(budget.in_use(), 0);
        // Inflation alone is charged too.
        let meta = read_file_meta(&file).unwrap();
        let mut grant = budget.try_reserve(0).unwrap();
        let small = MemoryBudget::new(1 << 20);
        let mut small_grant = small.try_reserve(0).unwrap();
        assert!(matches!(
            inflate_in(meta.body, 1 << 30, &mut small_grant),
            Err(Error::Budget(_))
        ));
        let inflated = inflate_in(meta.body, 1 << 30, &mut grant).unwrap();
        assert_eq!(inflated.len(), 1_600_000);
        assert!(grant.bytes() >= inflated.capacity() as u64);
    }

    #[test]
    fn budgeted_reads_give_the_same_tree_and_hold_its_memory() {
        let file = deflated_file(&tiny_elements(5_000));
        let budget = MemoryBudget::new(64 << 20);
        let mut a = Vec::new();
        let mut b = Vec::new();
        let (_, plain, _) = read_file(&file, &mut a, Limits::default()).unwrap();
        let (_, charged, _, grant) =
            read_file_budgeted(&file, &mut b, Limits::default(), &budget).unwrap();
        assert_eq!(plain, charged);
        assert!(grant.bytes() >= (5_000 * ELEMENT_COST) as u64);
        assert_eq!(budget.in_use(), grant.bytes());
        drop(grant);
        assert_eq!(budget.in_use(), 0);
    }

    /// Every truncation and every single-byte corruption of a data set whose values, VR codes
    /// and lengths are made of a marker's letters: no error message quotes any of it.
    #[test]
    fn no_error_message_quotes_the_input() {
        const MARKER: &[u8] = b"QZXW";
        let mut item = DataSet::default();
        item.put(Element::text(tags::PATIENT_NAME, Vr::PN, "QZXW^QZXW"));
        let mut ds = DataSet::default();
        ds.put(Element::text(tags::SOP_INSTANCE_UID, Vr::UI, "1.2.3"));
        ds.put(Element::text(tags::STUDY_DESCRIPTION, Vr::LO, "QZXWQZXW"));
        ds.put(Element {
            tag: tags::REFERENCED_IMAGE_SEQUENCE,
            vr: Vr::SQ,
            value: Value::Sequence(vec![item]),
        });
        let mut clean = Vec::new();
        write_dataset(&ds, Encoding::ExplicitLittle, &mut clean);
        let mut checked = 0usize;
        let mut check = |buf: &[u8]| {
            for enc in [
                Encoding::ExplicitLittle,
                Encoding::ImplicitLittle,
                Encoding::ExplicitBig,
            ] {
                if let Err(e) = read_dataset(buf, enc, Limits::default()) {
                    let msg = e.to_string();
                    for w in MARKER.windows(2) {
                        let w = std::str::from_utf8(w).unwrap();
                        assert!(!msg.contains(w), "{msg}");
                    }
                    checked = checked.saturating_add(1);
                }
            }
        };
        for cut in 0..clean.len() {
            check(&clean[..cut]);
        }
        for at in 0..clean.len() {
            for b in MARKER {
                let mut bad = clean.clone();
                bad[at] = *b;
                check(&bad);
            }
            // The marker as a VR code at every position.
            let mut bad = clean.clone();
            if let Some(two) = bad.get_mut(at..at.saturating_add(2)) {
                if two.len() == 2 {
                    two.copy_from_slice(b"QZ");
                    check(&bad);
                }
            }
        }
        assert!(checked > 100, "only {checked} errors");
    }

    #[test]
    fn code_items_are_sorted_and_padded() {
        let item = DataSet::code_item("113100", "DCM", "Basic Application Confidentiality Profile");
        let order: Vec<u32> = item.elements.iter().map(|e| e.tag).collect();
        assert_eq!(
            order,
            [
                tags::CODE_VALUE,
                tags::CODING_SCHEME_DESIGNATOR,
                tags::CODE_MEANING
            ]
        );
        assert!(item
            .elements
            .iter()
            .all(|e| e.bytes().unwrap().len() % 2 == 0));
        assert_eq!(item.string(tags::CODING_SCHEME_DESIGNATOR).unwrap(), "DCM");
    }

    #[test]
    fn trim_text_strips_padding() {
        assert_eq!(trim_text(b" AB \0"), b"AB");
        assert_eq!(trim_text(b"   "), b"");
    }
}
