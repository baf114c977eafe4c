//! `multipart/related` bodies (RFC 2387, RFC 2046 §5.1), as STOW-RS sends them and WADO-RS
//! answers with. Parsing is bounded: the boundary's length is checked, the number of parts
//! is capped, headers are bounded, and every part borrows from the body (no copies).

use bytes::Bytes;

/// Why a body or its Content-Type is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The Content-Type is not `multipart/related`.
    #[error("the content type is not multipart/related")]
    NotRelated,
    /// The Content-Type is not `multipart/form-data`.
    #[error("the content type is not multipart/form-data")]
    NotFormData,
    /// The `type` parameter names another media type than the one expected.
    #[error("the multipart type is not {0}")]
    WrongType(&'static str),
    /// No usable boundary parameter.
    #[error("no valid boundary parameter")]
    Boundary,
    /// The body does not hold the boundary as RFC 2046 requires.
    #[error("the body is not a complete multipart body")]
    Malformed,
    /// More parts than allowed.
    #[error("more than {0} parts")]
    TooManyParts(usize),
    /// A part's headers are longer than allowed.
    #[error("part headers longer than {0} bytes")]
    HeadersTooLong(usize),
}

/// Longest header block of one part.
pub const MAX_PART_HEADERS: usize = 8 * 1024;

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's Content-Type (lower-cased media type, parameters kept), if any.
    pub content_type: Option<String>,
    /// The part's Content-Disposition (RFC 7578: a form field's name and file name), if any.
    pub disposition: Option<String>,
    /// The part's body.
    pub body: Bytes,
}

/// The parameters of a `multipart/related` Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    /// The boundary.
    pub boundary: String,
    /// The `type` parameter (the root part's media type), lower-cased.
    pub kind: Option<String>,
}

/// Splits `a; b=c; d="e;f"` into the media type and its parameters (names lower-cased,
/// quoted values unquoted).
pub fn media_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = split_unquoted(value, ';').into_iter();
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(|v| v.replace("\\\"", "\""))
                .unwrap_or_else(|| v.to_string());
            Some((k.trim().to_ascii_lowercase(), v))
        })
        .collect();
    (media, params)
}

/// Splits a header value on `sep` outside quoted strings (RFC 9110 §5.6.4: a backslash in
/// quotes escapes the next character): `;` between parameters, `,` between list members.
pub(crate) fn split_unquoted(value: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
            }
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c == sep && !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The longest boundary accepted: RFC 2046's 70 for senders, with room for the senders that
/// exceed it.
pub const MAX_BOUNDARY: usize = 200;

/// Reads a `multipart/related` Content-Type.
pub fn related(content_type: &str) -> Result<Related, MultipartError> {
    let (media, params) = media_type(content_type);
    if media != "multipart/related" {
        return Err(MultipartError::NotRelated);
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let boundary = get("boundary").ok_or(MultipartError::Boundary)?;
    // RFC 2046 lets senders use 1 to 70 characters, not ending in a space. Real senders go
    // past 70 (Orthanc's DICOMweb plugin: two UUIDs, 73), so a reader takes up to
    // MAX_BOUNDARY: the search for it stays bounded all the same.
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY || boundary.ends_with(' ') {
        return Err(MultipartError::Boundary);
    }
    Ok(Related {
        boundary,
        kind: get("type").map(|t| t.to_ascii_lowercase()),
    })
}

/// The boundary of a `multipart/form-data` Content-Type (RFC 7578: a browser's form with
/// files).
pub fn form_data(content_type: &str) -> Result<String, MultipartError> {
    let (media, params) = media_type(content_type);
    if media != "multipart/form-data" {
        return Err(MultipartError::NotFormData);
    }
    let boundary = params
        .into_iter()
        .find(|(k, _)| k == "boundary")
        .map(|(_, v)| v)
        .ok_or(MultipartError::Boundary)?;
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY || boundary.ends_with(' ') {
        return Err(MultipartError::Boundary);
    }
    Ok(boundary)
}

impl Part {
    fn disposition_param(&self, name: &str) -> Option<String> {
        let (kind, params) = media_type(self.disposition.as_deref()?);
        (kind == "form-data")
            .then(|| params.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
            .flatten()
    }

    /// The form field a `multipart/form-data` part is for (its disposition's `name`).
    pub fn field(&self) -> Option<String> {
        self.disposition_param("name")
    }

    /// The file name a browser gave a file part (its disposition's `filename`; browsers
    /// send a folder's files with their relative path).
    pub fn file_name(&self) -> Option<String> {
        self.disposition_param("filename")
    }
}

/// Splits a multipart body into its parts (at most `max_parts`).
pub fn parts(body: &Bytes, boundary: &str, max_parts: usize) -> Result<Vec<Part>, MultipartError> {
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    // The first delimiter: at the start, or after a preamble ending in CRLF.
    let first = finder.find(body).ok_or(MultipartError::Malformed)?;
    if first != 0 && body.get(first.wrapping_sub(2)..first) != Some(b"\r\n") {
        return Err(MultipartError::Malformed);
    }
    let close = format!("\r\n--{boundary}");
    let close_finder = memchr::memmem::Finder::new(close.as_bytes());
    let mut at = first + delimiter.len();
    let mut out = Vec::new();
    loop {
        let rest = body.get(at..).ok_or(MultipartError::Malformed)?;
        if rest.starts_with(b"--") {
            // The close delimiter; an epilogue may follow.
            return Ok(out);
        }
        // Transport padding (spaces and tabs) may follow a delimiter before its CRLF.
        let pad = rest
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        if rest.get(pad..pad + 2) != Some(b"\r\n") {
            return Err(MultipartError::Malformed);
        }
        let start = at + pad + 2;
        if out.len() >= max_parts {
            return Err(MultipartError::TooManyParts(max_parts));
        }
        let part = body.get(start..).ok_or(MultipartError::Malformed)?;
        // The headers end at an empty line (a part may have no headers at all).
        let (headers, body_start) = if part.starts_with(b"\r\n") {
            (&part[..0], start + 2)
        } else {
            let end =
                memchr::memmem::find(&part[..part.len().min(MAX_PART_HEADERS + 4)], b"\r\n\r\n")
                    .ok_or(if part.len() > MAX_PART_HEADERS {
                        MultipartError::HeadersTooLong(MAX_PART_HEADERS)
                    } else {
                        MultipartError::Malformed
                    })?;
            (&part[..end], start + end + 4)
        };
        let content_type = header(headers, "content-type");
        let body_rest = body.get(body_start..).ok_or(MultipartError::Malformed)?;
        let len = close_finder
            .find(body_rest)
            .ok_or(MultipartError::Malformed)?;
        out.push(Part {
            content_type,
            disposition: header(headers, "content-disposition"),
            body: body.slice(body_start..body_start + len),
        });
        at = body_start + len + close.len();
    }
}

/// The value of a header in a part's header block (names compared case-insensitively;
/// folded lines are not used by DICOMweb and end the value).
fn header(block: &[u8], name: &str) -> Option<String> {
    block.split(|b| *b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|b| *b == b':')?;
        let (k, v) = line.split_at(colon);
        if k.eq_ignore_ascii_case(name.as_bytes()) {
            Some(String::from_utf8_lossy(&v[1..]).trim().to_string())
        } else {
            None
        }
    })
}

/// A fresh boundary for a response.
pub fn new_boundary() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("radveil-{t:016x}-{n:08x}")
}

/// Writes parts as a multipart body with `boundary`, each with `content_type`.
pub fn write(parts: &[Bytes], boundary: &str, content_type: &str) -> Vec<u8> {
    let size: usize = parts
        .iter()
        .map(|p| p.len().saturating_add(boundary.len()).saturating_add(64))
        .sum();
    let mut out = Vec::with_capacity(size.saturating_add(boundary.len() + 8));
    for p in parts {
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browsers_form_with_files_is_read_with_field_and_file_names() {
        let b = form_data("multipart/form-data; boundary=----WebKitFormBoundaryX1").unwrap();
        assert_eq!(b, "----WebKitFormBoundaryX1");
        assert_eq!(
            form_data("multipart/related; boundary=x"),
            Err(MultipartError::NotFormData)
        );
        assert_eq!(
            form_data("multipart/form-data"),
            Err(MultipartError::Boundary)
        );
        let body = Bytes::from(format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"CD/DICOM/IM1\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nDATA\r\n--{b}--\r\n"
        ));
        let p = parts(&body, &b, 10).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].field().as_deref(), Some("csrf"));
        assert_eq!(p[0].file_name(), None);
        assert_eq!(&p[0].body[..], b"abc");
        assert_eq!(p[1].field().as_deref(), Some("files"));
        assert_eq!(p[1].file_name().as_deref(), Some("CD/DICOM/IM1"));
        assert_eq!(&p[1].body[..], b"DATA");
    }

    #[test]
    fn content_types_are_read_with_quoted_parameters() {
        let r =
            related(r#"Multipart/Related; type="application/dicom"; boundary="a;b c""#).unwrap();
        assert_eq!(r.boundary, "a;b c");
        assert_eq!(r.kind.as_deref(), Some("application/dicom"));
        assert_eq!(
            related("multipart/related; boundary=x").unwrap().boundary,
            "x"
        );
        assert_eq!(
            related("multipart/form-data; boundary=x"),
            Err(MultipartError::NotRelated)
        );
        assert_eq!(related("multipart/related"), Err(MultipartError::Boundary));
        // Orthanc's 73 characters are read; past MAX_BOUNDARY is refused.
        let orthanc = "b".repeat(73);
        assert_eq!(
            related(&format!("multipart/related; boundary={orthanc}"))
                .unwrap()
                .boundary,
            orthanc
        );
        assert_eq!(
            related(&format!(
                "multipart/related; boundary={}",
                "b".repeat(MAX_BOUNDARY + 1)
            )),
            Err(MultipartError::Boundary)
        );
    }

    #[test]
    fn written_parts_read_back() {
        let parts_in = vec![
            Bytes::from_static(b"one"),
            Bytes::from_static(b""),
            Bytes::from_static(b"--x\r\n not a delimiter"),
        ];
        let body = Bytes::from(write(&parts_in, "BOUND", "application/dicom"));
        let got = parts(&body, "BOUND", 10).unwrap();
        assert_eq!(got.len(), 3);
        for (g, p) in got.iter().zip(&parts_in) {
            assert_eq!(&g.body, p);
            assert_eq!(g.content_type.as_deref(), Some("application/dicom"));
        }
    }

    #[test]
    fn preamble_padding_and_epilogue_are_allowed() {
        let body = Bytes::from_static(
            b"preamble\r\n--b  \r\nContent-Type: application/dicom\r\n\r\nX\r\n--b--\r\nepilogue",
        );
        let got = parts(&body, "b", 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].body[..], b"X");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [
            &b""[..],
            b"--b\r\nContent-Type: x\r\n\r\nunterminated",
            b"--b\r\nno blank line",
            b"junk--b\r\n\r\nX\r\n--b--",
            b"--bX\r\n\r\nX\r\n--b--",
        ] {
            assert_eq!(
                parts(&Bytes::copy_from_slice(bad), "b", 10),
                Err(MultipartError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_number_of_parts_and_header_length_are_capped() {
        let many = Bytes::from(write(&vec![Bytes::from_static(b"x"); 5], "b", "a/b"));
        assert_eq!(parts(&many, "b", 4), Err(MultipartError::TooManyParts(4)));
        let mut long = b"--b\r\nX-Long: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_PART_HEADERS + 10));
        long.extend_from_slice(b"\r\n\r\nX\r\n--b--");
        assert_eq!(
            parts(&Bytes::from(long), "b", 4),
            Err(MultipartError::HeadersTooLong(MAX_PART_HEADERS))
        );
    }

    #[test]
    fn a_part_without_headers_has_no_content_type() {
        let body = Bytes::from_static(b"--b\r\n\r\nX\r\n--b--");
        let got = parts(&body, "b", 4).unwrap();
        assert_eq!(got[0].content_type, None);
        assert_eq!(&got[0].body[..], b"X");
    }
}
