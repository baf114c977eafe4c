//! WADO-RS metadata (PS3.18 §10.4.1.1.2, `.../metadata` of a study, a series or an
//! instance): every attribute of each instance in DICOM JSON (PS3.18 F.2), with a
//! `BulkDataURI` in place of Pixel Data, Float and Double Float Pixel Data, encapsulated
//! values and binary values (OB, OD, OF, OL, OV, OW, UN) longer than [`BULK_THRESHOLD`]
//! bytes (as dcm4chee-arc and the Orthanc DICOMweb plugin do); shorter binary values are
//! `InlineBinary`.
//!
//! Answered from the index and the metadata copy the store keeps of each instance
//! ([`copy`], sealed by [`radveil_store::Store::put_with_metadata`] at STOW-RS), never by
//! opening the instances: a study's metadata opens one small copy per instance. Instances
//! stored before copies were kept have none; for those (only) the object is opened and
//! its JSON made from it ([`radveil_store::Store::metadata`] says which), and the copy is
//! then kept ([`radveil_store::Store::add_metadata`]), so each is opened once.
//!
//! The copy holds each `BulkDataURI` relative to the service root (`/studies/…/bulkdata/…`);
//! the base URL of the request is put in front when it is served ([`with_base`]), so a
//! copy does not depend on the host name a client used.

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use radveil_part10::{self as p10, DataSet, Element, Encoding, Limits, Value as P10Value, Vr};
use radveil_standard::tags;
use radveil_store::{Handle, Level, StoreError};
#[cfg(test)]
use serde_json::{json, Map, Value};

use crate::app::{base_url, error, handle, store_error, AppState, DICOM_JSON};
use crate::dicom_json::{charset, decode, Charset};
use crate::multipart::{media_type, split_unquoted};
use crate::scope::Scope;

/// Binary values longer than this many bytes are given by `BulkDataURI`, shorter ones
/// inline (dcm4chee-arc's and Orthanc's choice of 1 KiB).
pub const BULK_THRESHOLD: usize = 1024;

/// The segment of a bulk data URI after the instance's path.
pub const BULK_SEGMENT: &str = "bulkdata";

/// The key a bulk data URI is written under; in compact JSON it occurs only as a key
/// (a quote inside a string is always escaped), which [`with_base`] relies on.
const BULK_KEY: &[u8] = b"\"BulkDataURI\":\"";

/// The path of an instance under the service root.
pub fn instance_path(study: &str, series: &str, instance: &str) -> String {
    format!("/studies/{study}/series/{series}/instances/{instance}")
}

/// The metadata copy of a Part 10 file (kept by the store at STOW-RS): the data set in
/// DICOM JSON with bulk values replaced by URIs relative to the service root. `None` when
/// the file does not read or has no SOP Instance, Series or Study UID (STOW-RS refuses
/// those before storing anyway).
pub fn copy(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut inflated = Vec::new();
    let (_, ds, enc) = p10::read_file(bytes, &mut inflated, Limits::default()).ok()?;
    let uid = |t: u32| {
        ds.string(t)
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .filter(|s| !s.is_empty())
    };
    let path = instance_path(
        &uid(tags::STUDY_INSTANCE_UID)?,
        &uid(tags::SERIES_INSTANCE_UID)?,
        &uid(tags::SOP_INSTANCE_UID)?,
    );
    Some(to_json_bytes(&ds, enc, &path))
}

/// A data set in DICOM JSON (compact), bulk data URIs relative to the service root under
/// `path` (the instance's).
///
/// Written straight into one buffer (no `serde_json::Value` tree: STOW-RS makes one copy
/// per instance, and the tree cost a few hundred small allocations each). The output is
/// what serialising that tree gave, byte for byte: keys in the order of a sorted map
/// (tags ascending, a repeated tag written once with its last value; `BulkDataURI`,
/// `InlineBinary` or `Value` before `vr`), strings and numbers as `serde_json` writes them.
pub fn to_json_bytes(ds: &DataSet<'_>, enc: Encoding, path: &str) -> Vec<u8> {
    let cs = charset(ds);
    let mut out = Vec::with_capacity(4096);
    let mut uri = String::with_capacity(path.len().saturating_add(64));
    uri.push_str(path);
    uri.push('/');
    uri.push_str(BULK_SEGMENT);
    write_dataset(&mut out, ds, enc, cs, &mut uri, 0);
    out
}

/// Deepest sequence nesting written (the reader's own limit is 64).
const MAX_DEPTH: usize = 64;

/// Whether an element is written: group lengths are encoding, not content (PS3.5 §7.2),
/// and are left out; so are the file meta, item delimiters and Data Set Trailing Padding
/// (FFFC,FFFC).
fn written(tag: u32) -> bool {
    !(tag & 0xFFFF == 0 || matches!(tag >> 16, 0x0002 | 0xFFFE | 0xFFFC))
}

/// `s` as a JSON string (escaped as `serde_json` escapes it).
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Eight upper-case hex digits (a tag as DICOM JSON keys it).
fn hex8(v: u32) -> [u8; 8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut h = [0u8; 8];
    for (n, d) in h.iter_mut().enumerate() {
        let shift = 28usize.saturating_sub(n.saturating_mul(4));
        *d = HEX[usize::try_from((v >> shift) & 0xF).unwrap_or(0)];
    }
    h
}

/// A number as JSON, `null` when it is not finite.
fn push_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &f);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A data set as a JSON object; `uri` is its bulk data URI prefix (restored on return).
fn write_dataset(
    out: &mut Vec<u8>,
    ds: &DataSet<'_>,
    enc: Encoding,
    cs: Charset,
    uri: &mut String,
    depth: usize,
) {
    out.push(b'{');
    let mut first = true;
    let mut one = |out: &mut Vec<u8>, e: &Element<'_>, uri: &mut String| {
        if !first {
            out.push(b',');
        }
        first = false;
        let key = hex8(e.tag);
        out.push(b'"');
        out.extend_from_slice(&key);
        out.extend_from_slice(b"\":");
        let len = uri.len();
        uri.push('/');
        // The key is the URI's last segment (ASCII hex).
        uri.push_str(std::str::from_utf8(&key).unwrap_or_default());
        write_element(out, e, enc, cs, uri, depth);
        uri.truncate(len);
    };
    let mut last = None;
    let sorted = ds.elements.iter().filter(|e| written(e.tag)).all(|e| {
        let ok = last.is_none_or(|l| l < e.tag);
        last = Some(e.tag);
        ok
    });
    if sorted {
        for e in ds.elements.iter().filter(|e| written(e.tag)) {
            one(out, e, uri);
        }
    } else {
        // Out of order or repeated tags (a hostile file): the order of a sorted map, the
        // last of a repeated tag winning, as a map insert would have it.
        let mut order: Vec<&Element<'_>> = ds.elements.iter().filter(|e| written(e.tag)).collect();
        order.sort_by_key(|e| e.tag);
        for (n, e) in order.iter().enumerate() {
            if order
                .get(n.saturating_add(1))
                .is_some_and(|next| next.tag == e.tag)
            {
                continue;
            }
            one(out, e, uri);
        }
    }
    out.push(b'}');
}

/// Whether a value of this element is always bulk data, whatever its length.
fn always_bulk(tag: u32) -> bool {
    matches!(
        tag,
        tags::PIXEL_DATA | tags::FLOAT_PIXEL_DATA | tags::DOUBLE_FLOAT_PIXEL_DATA
    )
}

/// One element as a JSON object (its value, then `vr`); `uri` is its bulk data URI.
fn write_element(
    out: &mut Vec<u8>,
    e: &Element<'_>,
    enc: Encoding,
    cs: Charset,
    uri: &mut String,
    depth: usize,
) {
    out.push(b'{');
    match &e.value {
        P10Value::Sequence(items) => {
            if depth < MAX_DEPTH && !items.is_empty() {
                out.extend_from_slice(b"\"Value\":[");
                for (n, it) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    // Items are numbered from 1 in bulk data URIs.
                    let len = uri.len();
                    let _ =
                        std::fmt::Write::write_fmt(uri, format_args!("/{}", n.saturating_add(1)));
                    write_dataset(out, it, enc, cs, uri, depth.saturating_add(1));
                    uri.truncate(len);
                }
                out.extend_from_slice(b"],");
            }
        }
        P10Value::Fragments(_) => {
            out.extend_from_slice(b"\"BulkDataURI\":");
            push_str(out, uri);
            out.push(b',');
        }
        P10Value::Bytes(b) => {
            if !b.is_empty() {
                let mark = out.len();
                out.extend_from_slice(b"\"Value\":[");
                match write_values(out, b, e.vr, enc, cs) {
                    Some(true) => out.extend_from_slice(b"],"),
                    Some(false) => out.truncate(mark),
                    None => {
                        out.truncate(mark);
                        if always_bulk(e.tag) || b.len() > BULK_THRESHOLD {
                            out.extend_from_slice(b"\"BulkDataURI\":");
                            push_str(out, uri);
                        } else {
                            let b64 = base64::engine::general_purpose::STANDARD.encode(b);
                            out.extend_from_slice(b"\"InlineBinary\":");
                            push_str(out, &b64);
                        }
                        out.push(b',');
                    }
                }
            }
        }
    }
    out.extend_from_slice(b"\"vr\":");
    push_str(out, &String::from_utf8_lossy(&e.vr.code()));
    out.push(b'}');
}

/// The values of a non-binary element, comma-separated (PS3.18 F.2.3): strings, numbers
/// for IS, DS and the binary numbers, objects for person names, `null` for an empty value
/// among several. `Some(false)` when there are none, `None` for the binary VRs (inline
/// binary or bulk data instead).
fn write_values(out: &mut Vec<u8>, b: &[u8], vr: Vr, enc: Encoding, cs: Charset) -> Option<bool> {
    let big = enc == Encoding::ExplicitBig;
    let n2 = |c: &[u8]| [c[0], c[1]];
    let n4 = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    let n8 = |c: &[u8]| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
    macro_rules! nums {
        ($size:expr, $arr:expr, $t:ty, $write:expr) => {{
            let mut any = false;
            for c in b.chunks_exact($size) {
                if any {
                    out.push(b',');
                }
                any = true;
                let a = $arr(c);
                let v = if big {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                };
                $write(&mut *out, v);
            }
            any
        }};
    }
    let int = |out: &mut Vec<u8>, v: i128| {
        let _ = serde_json::to_writer(out, &v);
    };
    Some(match vr {
        Vr::US => nums!(2, n2, u16, |o, v: u16| int(o, i128::from(v))),
        Vr::SS => nums!(2, n2, i16, |o, v: i16| int(o, i128::from(v))),
        Vr::UL => nums!(4, n4, u32, |o, v: u32| int(o, i128::from(v))),
        Vr::SL => nums!(4, n4, i32, |o, v: i32| int(o, i128::from(v))),
        Vr::UV => nums!(8, n8, u64, |o, v: u64| int(o, i128::from(v))),
        Vr::SV => nums!(8, n8, i64, |o, v: i64| int(o, i128::from(v))),
        Vr::FL => nums!(4, n4, f32, |o, v: f32| push_f64(o, f64::from(v))),
        Vr::FD => nums!(8, n8, f64, push_f64),
        Vr::AT => {
            let mut any = false;
            for c in b.chunks_exact(4) {
                if any {
                    out.push(b',');
                }
                any = true;
                let (g, el) = if big {
                    (u16::from_be_bytes(n2(c)), u16::from_be_bytes(n2(&c[2..])))
                } else {
                    (u16::from_le_bytes(n2(c)), u16::from_le_bytes(n2(&c[2..])))
                };
                out.push(b'"');
                out.extend_from_slice(&hex8(u32::from(g) << 16 | u32::from(el)));
                out.push(b'"');
            }
            any
        }
        v if v.is_text() => write_text_values(out, b, v, cs),
        _ => return None,
    })
}

fn write_text_values(out: &mut Vec<u8>, b: &[u8], vr: Vr, cs: Charset) -> bool {
    // UI is padded with NUL, the others with spaces; LT, ST, UT and UR keep leading spaces.
    let text = decode(b, cs);
    if vr.is_single_valued_text() {
        let t = text.trim_end_matches([' ', '\0']);
        if t.is_empty() {
            return false;
        }
        push_str(out, t);
        return true;
    }
    if text
        .split('\\')
        .all(|p| p.trim_matches([' ', '\0']).is_empty())
    {
        return false;
    }
    for (n, p) in text.split('\\').enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let p = p.trim_matches([' ', '\0']);
        if p.is_empty() {
            out.extend_from_slice(b"null");
            continue;
        }
        match vr {
            Vr::IS => {
                if let Ok(i) = p.parse::<i64>() {
                    let _ = serde_json::to_writer(&mut *out, &i);
                } else if let Ok(f) = p.parse::<f64>() {
                    push_f64(out, f);
                } else {
                    out.extend_from_slice(b"null");
                }
            }
            Vr::DS => match p.parse::<f64>() {
                Ok(f) => push_f64(out, f),
                Err(_) => out.extend_from_slice(b"null"),
            },
            Vr::PN => {
                out.push(b'{');
                let mut first = true;
                for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"]
                    .iter()
                    .zip(p.split('='))
                {
                    if !group.is_empty() {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        push_str(out, name);
                        out.push(b':');
                        push_str(out, group);
                    }
                }
                out.push(b'}');
            }
            _ => push_str(out, p),
        }
    }
    true
}

/// Puts `base` (the service root's URL) in front of every bulk data URI of a copy.
pub fn with_base(copy: &[u8], base: &str, out: &mut Vec<u8>) {
    let mut rest = copy;
    while let Some(at) = memchr::memmem::find(rest, BULK_KEY) {
        let end = at.saturating_add(BULK_KEY.len());
        out.extend_from_slice(&rest[..end]);
        out.extend_from_slice(base.as_bytes());
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
}

/// Whether the client accepts DICOM JSON (`application/dicom+json`, `application/json` or
/// a wildcard); XML metadata is not offered.
fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return true;
    };
    let Ok(accept) = accept.to_str() else {
        return false;
    };
    split_unquoted(accept, ',').iter().any(|r| {
        let (m, _) = media_type(r);
        matches!(
            m.as_str(),
            DICOM_JSON | "application/json" | "application/*" | "*/*"
        )
    })
}

pub(crate) async fn study_metadata(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let r = metadata(&state, &scope, &headers, s, None, None).await;
    crate::audit::study(&state, &scope, &study, None, None, None).attach(r)
}

pub(crate) async fn series_metadata(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    let r = metadata(&state, &scope, &headers, s, Some(se), None).await;
    crate::audit::study(&state, &scope, &study, Some(&series), None, None).attach(r)
}

pub(crate) async fn instance_metadata(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series, inst)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    let i = handle(&state, Level::Instance, &inst);
    let r = metadata(&state, &scope, &headers, s, Some(se), Some(i)).await;
    crate::audit::study(&state, &scope, &study, Some(&series), Some(&inst), None).attach(r)
}

/// The metadata of the instances of a study, one of its series, or one instance, as a
/// DICOM JSON array: from the kept copies; an instance without one (stored before copies
/// were kept) is opened. An altered copy or object is a 500 naming it in the log, and
/// nothing of it is served.
async fn metadata(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    study: Handle,
    series: Option<Handle>,
    instance: Option<Handle>,
) -> Response {
    if !accepts_json(headers) {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            "metadata is offered as application/dicom+json only",
        );
    }
    // One instance is looked up alone: its series' other rows are never read.
    let rows = match instance {
        Some(i) => match state.store.instance_row(study, series, i).await {
            Ok(r) => vec![r],
            Err(StoreError::NotFound) => Vec::new(),
            Err(e) => return store_error(&e),
        },
        None => match state.store.rows(study, series).await {
            Ok(r) => r,
            Err(e) => return store_error(&e),
        },
    };
    let rows: Vec<_> = rows
        .into_iter()
        // Another patient's study is exactly as absent as a missing one.
        .filter(|r| scope.sees_row(r))
        .collect();
    if rows.is_empty() {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let copies = match state.store.metadata(rows.clone()).await {
        Ok(c) => c,
        Err(e) => return store_error(&e),
    };
    let base = base_url(state, headers);
    let mut body = Vec::with_capacity(copies.len().saturating_mul(4096).min(1 << 24));
    body.push(b'[');
    let mut n = 0usize;
    for (row, kept) in rows.iter().zip(copies) {
        let json = match kept {
            Ok(Some(c)) => c,
            // Stored before copies were kept: made from the object itself.
            Ok(None) => match state.store.open_row(row).await {
                Ok(bytes) => match copy(&bytes) {
                    Some(c) => {
                        // Kept, so that this object is opened for its metadata once only.
                        if let Err(e) = state.store.add_metadata(row, &c).await {
                            tracing::warn!(error = %e, "a metadata copy was not kept");
                        }
                        c
                    }
                    None => {
                        tracing::error!(object = %row.object, "a stored instance does not read");
                        return error(StatusCode::INTERNAL_SERVER_ERROR, "store error");
                    }
                },
                Err(StoreError::NotFound) => continue,
                Err(e) => return store_error(&e),
            },
            // Deleted since the rows were read.
            Err(StoreError::NotFound) => continue,
            Err(e) => return store_error(&e),
        };
        if n > 0 {
            body.push(b',');
        }
        with_base(&json, &base, &mut body);
        n = n.saturating_add(1);
    }
    if n == 0 {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    body.push(b']');
    state.metrics.retrieved(n);
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON));
    resp
}

/// The tree-building writer the metadata copy used before [`to_json_bytes`] wrote straight
/// into a buffer, kept to check that the two agree byte for byte.
#[cfg(test)]
mod reference {
    use super::*;

    /// A data set in DICOM JSON (compact), bulk data URIs relative to the service root under
    /// `path` (the instance's).
    pub(super) fn to_json_bytes(ds: &DataSet<'_>, enc: Encoding, path: &str) -> Vec<u8> {
        let cs = charset(ds);
        let obj = dataset(ds, enc, cs, &format!("{path}/{BULK_SEGMENT}"), 0);
        serde_json::to_vec(&obj).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Deepest sequence nesting written (the reader's own limit is 64).
    const MAX_DEPTH: usize = 64;

    fn dataset(ds: &DataSet<'_>, enc: Encoding, cs: Charset, bulk: &str, depth: usize) -> Value {
        let mut m = Map::new();
        for e in &ds.elements {
            // Group lengths are encoding, not content (PS3.5 §7.2), and are left out; so are
            // the file meta, item delimiters and Data Set Trailing Padding (FFFC,FFFC).
            if e.tag & 0xFFFF == 0 || matches!(e.tag >> 16, 0x0002 | 0xFFFE | 0xFFFC) {
                continue;
            }
            let key = format!("{:08X}", e.tag);
            let uri = format!("{bulk}/{key}");
            m.insert(key, element(e, enc, cs, &uri, depth));
        }
        Value::Object(m)
    }

    fn vr_text_old(vr: Vr) -> String {
        String::from_utf8_lossy(&vr.code()).into_owned()
    }

    /// Whether a value of this element is always bulk data, whatever its length.
    fn always_bulk(tag: u32) -> bool {
        matches!(
            tag,
            tags::PIXEL_DATA | tags::FLOAT_PIXEL_DATA | tags::DOUBLE_FLOAT_PIXEL_DATA
        )
    }

    fn element(e: &Element<'_>, enc: Encoding, cs: Charset, uri: &str, depth: usize) -> Value {
        let mut m = Map::new();
        m.insert("vr".into(), json!(vr_text_old(e.vr)));
        match &e.value {
            P10Value::Sequence(items) => {
                if depth < MAX_DEPTH && !items.is_empty() {
                    let vals: Vec<Value> = items
                        .iter()
                        .enumerate()
                        .map(|(n, it)| {
                            // Items are numbered from 1 in bulk data URIs.
                            let bulk = format!("{uri}/{}", n.saturating_add(1));
                            dataset(it, enc, cs, &bulk, depth.saturating_add(1))
                        })
                        .collect();
                    m.insert("Value".into(), Value::Array(vals));
                }
            }
            P10Value::Fragments(_) => {
                m.insert("BulkDataURI".into(), json!(uri));
            }
            P10Value::Bytes(b) => {
                if b.is_empty() {
                    return Value::Object(m);
                }
                if let Some(vals) = values(b, e.vr, enc, cs) {
                    if !vals.is_empty() {
                        m.insert("Value".into(), Value::Array(vals));
                    }
                } else if always_bulk(e.tag) || b.len() > BULK_THRESHOLD {
                    m.insert("BulkDataURI".into(), json!(uri));
                } else {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(b);
                    m.insert("InlineBinary".into(), json!(b64));
                }
            }
        }
        Value::Object(m)
    }

    fn number(f: f64) -> Value {
        if f.is_finite() {
            json!(f)
        } else {
            Value::Null
        }
    }

    /// The values of a non-binary element as JSON values (PS3.18 F.2.3): strings, numbers
    /// for IS, DS and the binary numbers, objects for person names, `null` for an empty value
    /// among several. `None` for the binary VRs (inline binary or bulk data instead).
    fn values(b: &[u8], vr: Vr, enc: Encoding, cs: Charset) -> Option<Vec<Value>> {
        let big = enc == Encoding::ExplicitBig;
        let n2 = |c: &[u8]| [c[0], c[1]];
        let n4 = |c: &[u8]| [c[0], c[1], c[2], c[3]];
        let n8 = |c: &[u8]| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
        macro_rules! nums {
            ($size:expr, $arr:expr, $t:ty, $conv:expr) => {
                b.chunks_exact($size)
                    .map(|c| {
                        let a = $arr(c);
                        let v = if big {
                            <$t>::from_be_bytes(a)
                        } else {
                            <$t>::from_le_bytes(a)
                        };
                        $conv(v)
                    })
                    .collect()
            };
        }
        Some(match vr {
            Vr::US => nums!(2, n2, u16, |v: u16| json!(v)),
            Vr::SS => nums!(2, n2, i16, |v: i16| json!(v)),
            Vr::UL => nums!(4, n4, u32, |v: u32| json!(v)),
            Vr::SL => nums!(4, n4, i32, |v: i32| json!(v)),
            Vr::UV => nums!(8, n8, u64, |v: u64| json!(v)),
            Vr::SV => nums!(8, n8, i64, |v: i64| json!(v)),
            Vr::FL => nums!(4, n4, f32, |v: f32| number(f64::from(v))),
            Vr::FD => nums!(8, n8, f64, number),
            Vr::AT => b
                .chunks_exact(4)
                .map(|c| {
                    let (g, el) = if big {
                        (u16::from_be_bytes(n2(c)), u16::from_be_bytes(n2(&c[2..])))
                    } else {
                        (u16::from_le_bytes(n2(c)), u16::from_le_bytes(n2(&c[2..])))
                    };
                    json!(format!("{g:04X}{el:04X}"))
                })
                .collect(),
            v if v.is_text() => text_values(b, v, cs),
            _ => return None,
        })
    }

    fn text_values(b: &[u8], vr: Vr, cs: Charset) -> Vec<Value> {
        // UI is padded with NUL, the others with spaces; LT, ST, UT and UR keep leading spaces.
        let text = decode(b, cs);
        if vr.is_single_valued_text() {
            let t = text.trim_end_matches([' ', '\0']);
            return if t.is_empty() {
                Vec::new()
            } else {
                vec![json!(t)]
            };
        }
        let parts: Vec<&str> = text
            .split('\\')
            .map(|p| p.trim_matches([' ', '\0']))
            .collect();
        if parts.iter().all(|p| p.is_empty()) {
            return Vec::new();
        }
        parts
            .into_iter()
            .map(|p| {
                if p.is_empty() {
                    return Value::Null;
                }
                match vr {
                    Vr::IS => p
                        .parse::<i64>()
                        .map(Value::from)
                        .or_else(|_| p.parse::<f64>().map(number))
                        .unwrap_or(Value::Null),
                    Vr::DS => p.parse::<f64>().map(number).unwrap_or(Value::Null),
                    Vr::PN => {
                        let mut pn = Map::new();
                        for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"]
                            .iter()
                            .zip(p.split('='))
                        {
                            if !group.is_empty() {
                                pn.insert((*name).into(), json!(group));
                            }
                        }
                        Value::Object(pn)
                    }
                    _ => json!(p),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn el(tag: u32, vr: Vr, b: &[u8]) -> Element<'static> {
        Element {
            tag,
            vr,
            value: P10Value::Bytes(Cow::Owned(b.to_vec())),
        }
    }

    #[test]
    fn every_kind_of_value_is_written_as_f2_says() {
        let mut item = DataSet::default();
        item.put(el(tags::CODE_VALUE, Vr::SH, b"T-1 "));
        let mut ds = DataSet::default();
        ds.put(el(0x0008_0000, Vr::UL, &[4, 0, 0, 0]));
        ds.put(el(tags::PATIENT_NAME, Vr::PN, b"DOE^J=D^J=do^j\\X^Y "));
        ds.put(el(tags::ROWS, Vr::US, &[0, 2]));
        ds.put(el(tags::WINDOW_CENTER, Vr::DS, b"40\\-1.5 "));
        ds.put(el(tags::SERIES_NUMBER, Vr::IS, b" 3"));
        ds.put(el(tags::IMAGE_TYPE, Vr::CS, b"A\\\\B "));
        ds.put(el(0x0028_0009, Vr::AT, &[0x18, 0, 0x63, 0x10]));
        ds.put(el(0x0018_9306, Vr::FD, &1.25f64.to_le_bytes()));
        ds.put(el(0x0029_1010, Vr::OB, &[1, 2, 3, 4]));
        ds.put(el(0x0029_1011, Vr::OB, &[0; 2000]));
        ds.put(el(tags::STUDY_DESCRIPTION, Vr::LO, b""));
        ds.put(Element {
            tag: 0x0008_1032,
            vr: Vr::SQ,
            value: P10Value::Sequence(vec![item]),
        });
        ds.put(el(tags::PIXEL_DATA, Vr::OW, &[0; 8]));
        let j: Value =
            serde_json::from_slice(&to_json_bytes(&ds, Encoding::ExplicitLittle, "/p")).unwrap();
        assert!(j.get("00080000").is_none(), "group length written");
        let pn = &j["00100010"]["Value"];
        assert_eq!(pn[0]["Alphabetic"], "DOE^J");
        assert_eq!(pn[0]["Ideographic"], "D^J");
        assert_eq!(pn[0]["Phonetic"], "do^j");
        assert_eq!(pn[1]["Alphabetic"], "X^Y");
        assert_eq!(j["00280010"]["Value"], json!([512]));
        assert_eq!(j["00281050"]["Value"], json!([40.0, -1.5]));
        assert_eq!(j["00200011"]["Value"], json!([3]));
        assert_eq!(j["00080008"]["Value"], json!(["A", null, "B"]));
        assert_eq!(j["00280009"]["Value"], json!(["00181063"]));
        assert_eq!(j["00189306"]["Value"], json!([1.25]));
        assert_eq!(j["00291010"]["InlineBinary"], "AQIDBA==");
        assert_eq!(j["00291011"]["BulkDataURI"], "/p/bulkdata/00291011");
        assert_eq!(j["00081030"], json!({"vr": "LO"}));
        assert_eq!(
            j["00081032"]["Value"][0]["00080100"]["Value"],
            json!(["T-1"])
        );
        assert_eq!(j["7FE00010"]["BulkDataURI"], "/p/bulkdata/7FE00010");
        assert_eq!(j["7FE00010"]["vr"], "OW");
    }

    #[test]
    fn the_base_goes_before_every_bulk_uri_and_nowhere_else() {
        let mut ds = DataSet::default();
        // A value that looks like the key, escaped in JSON, is left as it is.
        ds.put(el(tags::STUDY_DESCRIPTION, Vr::LO, br#""BulkDataURI":"x"#));
        ds.put(el(tags::PIXEL_DATA, Vr::OB, &[0; 8]));
        let c = to_json_bytes(&ds, Encoding::ExplicitLittle, "/s");
        let mut out = Vec::new();
        with_base(&c, "http://h/dicom-web", &mut out);
        let j: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            j["7FE00010"]["BulkDataURI"],
            "http://h/dicom-web/s/bulkdata/7FE00010"
        );
        assert_eq!(j["00081030"]["Value"][0], r#""BulkDataURI":"x"#);
    }

    /// The directories of pydicom's test files under the workspace's virtual environment.
    fn pydicom_test_files() -> Vec<std::path::PathBuf> {
        let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
        let mut files = Vec::new();
        for py in std::fs::read_dir(lib).into_iter().flatten().flatten() {
            let dir = py.path().join("site-packages/pydicom/data/test_files");
            for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if f.path().is_file() {
                    files.push(f.path());
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn the_buffer_writer_gives_what_the_json_tree_gave() {
        let files = pydicom_test_files();
        if files.is_empty() {
            eprintln!("SKIPPED: no pydicom test files under .venv (make the venv to run this)");
            return;
        }
        let mut compared = 0;
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            let mut inflated = Vec::new();
            let Ok((_, ds, enc)) = p10::read_file(&bytes, &mut inflated, Limits::default()) else {
                continue;
            };
            let new = to_json_bytes(&ds, enc, "/s/1/x");
            let old = reference::to_json_bytes(&ds, enc, "/s/1/x");
            assert!(new == old, "{} differs", f.display());
            // Out of order and repeated (as a hostile file might give them): still the
            // sorted map's output, the last repeated tag winning.
            let mut shuffled = ds.clone();
            shuffled.elements.reverse();
            if let Some(e) = ds.elements.get(ds.elements.len() / 2) {
                shuffled.elements.push(e.clone());
            }
            assert!(
                to_json_bytes(&shuffled, enc, "/s")
                    == reference::to_json_bytes(&shuffled, enc, "/s"),
                "{} (shuffled) differs",
                f.display()
            );
            compared += 1;
        }
        assert!(compared > 40, "only {compared} pydicom files read");
    }

    #[test]
    fn odd_values_are_written_as_the_json_tree_wrote_them() {
        let mut ds = DataSet::default();
        ds.put(el(tags::SPECIFIC_CHARACTER_SET, Vr::CS, b"ISO_IR 100"));
        ds.put(el(
            tags::PATIENT_NAME,
            Vr::PN,
            b"=\\A\xe9=B=C=D\\ \\\"q\"^\x01 ",
        ));
        ds.put(el(
            tags::WINDOW_CENTER,
            Vr::DS,
            b"NaN\\inf\\1e400\\-0\\x\\1e-7",
        ));
        ds.put(el(
            tags::SERIES_NUMBER,
            Vr::IS,
            b"9223372036854775808\\-3\\2.5\\ \\",
        ));
        ds.put(el(0x0018_9306, Vr::FD, &f64::NAN.to_le_bytes()));
        ds.put(el(0x0018_9307, Vr::FL, &[0, 0, 0x80, 0x7F, 1, 0, 0, 0]));
        ds.put(el(0x0018_9308, Vr::SV, &i64::MIN.to_le_bytes()));
        ds.put(el(0x0018_9309, Vr::UV, &u64::MAX.to_le_bytes()));
        ds.put(el(0x0018_930A, Vr::US, &[1]));
        ds.put(el(tags::STUDY_DESCRIPTION, Vr::LO, b" \0 "));
        ds.put(el(0x0008_1031, Vr::LT, b"  line\n\t\\x \0"));
        ds.put(el(0x0029_1011, Vr::UN, &[0; 1025]));
        ds.put(el(0x0029_1012, Vr::OB, &[0; 1024]));
        ds.put(el(0x0029_1013, Vr::AT, &[1, 2, 3]));
        ds.put(Element {
            tag: 0x0008_1032,
            vr: Vr::SQ,
            value: P10Value::Sequence(vec![DataSet::default(), DataSet::default()]),
        });
        ds.put(Element {
            tag: 0x0008_1033,
            vr: Vr::SQ,
            value: P10Value::Sequence(Vec::new()),
        });
        for enc in [Encoding::ExplicitLittle, Encoding::ExplicitBig] {
            let new = to_json_bytes(&ds, enc, "/a\"b");
            let old = reference::to_json_bytes(&ds, enc, "/a\"b");
            assert_eq!(String::from_utf8_lossy(&new), String::from_utf8_lossy(&old));
        }
    }
}
