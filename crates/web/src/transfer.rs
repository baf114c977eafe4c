//! Which transfer syntax a WADO-RS client accepts (PS3.18 §8.7.3.5) and giving it: the
//! stored original, or, for uncompressed little-endian originals, Explicit VR Little Endian
//! re-encoded from one parse.

use axum::http::HeaderValue;
use radveil_part10::{self as p10, Element, Limits, Vr};
use radveil_standard::tags;

use crate::multipart::{media_type, split_unquoted};

/// Explicit VR Little Endian, the default transfer syntax of `application/dicom`.
pub const EXPLICIT_LITTLE: &str = "1.2.840.10008.1.2.1";
/// Implicit VR Little Endian.
pub const IMPLICIT_LITTLE: &str = "1.2.840.10008.1.2";
/// Deflated Explicit VR Little Endian.
pub const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// The transfer syntax a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// `transfer-syntax=*`: the stored original.
    Original,
    /// No transfer-syntax parameter: Explicit VR Little Endian where radveil can re-encode,
    /// the original otherwise.
    Default,
    /// This transfer syntax.
    Syntax(String),
}

/// Reads an Accept header for a retrieve of instances; the first acceptable media range
/// wins. Errors say why nothing acceptable was offered.
pub fn accepted(accept: Option<&HeaderValue>) -> Result<Wanted, String> {
    let Some(accept) = accept else {
        return Ok(Wanted::Default);
    };
    let accept = accept
        .to_str()
        .map_err(|_| "the Accept header is not text".to_string())?;
    for range in split_unquoted(accept, ',')
        .into_iter()
        .filter(|r| !r.trim().is_empty())
    {
        let (media, params) = media_type(&range);
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let dicom_parts = match media.as_str() {
            "*/*" | "multipart/*" => true,
            "multipart/related" => get("type").is_none_or(|t| {
                t.eq_ignore_ascii_case("application/dicom") || t == "*/*" || t == "*"
            }),
            _ => false,
        };
        if !dicom_parts {
            continue;
        }
        return Ok(match get("transfer-syntax") {
            Some("*") => Wanted::Original,
            Some(ts) => Wanted::Syntax(ts.to_string()),
            None => Wanted::Default,
        });
    }
    Err("only multipart/related; type=\"application/dicom\" is offered".into())
}

/// The instance in the transfer syntax wanted, with that syntax's UID.
pub fn convert(bytes: Vec<u8>, wanted: &Wanted) -> Result<(Vec<u8>, String), String> {
    let original = p10::read_file_meta(&bytes)
        .map_err(|e| format!("a stored instance does not read: {e}"))?
        .transfer_syntax
        .trim_end_matches(['\0', ' '])
        .to_string();
    let reencodable = original == IMPLICIT_LITTLE || original == DEFLATED;
    match wanted {
        Wanted::Original => Ok((bytes, original)),
        Wanted::Syntax(ts) if *ts == original => Ok((bytes, original)),
        Wanted::Syntax(ts) if ts == EXPLICIT_LITTLE && reencodable => explicit_little(&bytes),
        Wanted::Syntax(ts) => Err(format!(
            "transfer syntax {} cannot be given for an instance stored in another",
            ts.chars()
                .filter(|c| c.is_ascii_digit() || *c == '.')
                .take(64)
                .collect::<String>()
        )),
        Wanted::Default if reencodable => explicit_little(&bytes),
        Wanted::Default => Ok((bytes, original)),
    }
}

/// Re-encodes an uncompressed little-endian Part 10 file in Explicit VR Little Endian.
fn explicit_little(bytes: &[u8]) -> Result<(Vec<u8>, String), String> {
    let mut inflated = Vec::new();
    let (mut meta, ds, _) = p10::read_file(bytes, &mut inflated, Limits::default())
        .map_err(|e| format!("a stored instance does not read: {e}"))?;
    meta.elements.put(Element::text(
        tags::TRANSFER_SYNTAX_UID,
        Vr::UI,
        EXPLICIT_LITTLE,
    ));
    let mut out = Vec::with_capacity(bytes.len().saturating_add(1024));
    p10::write_file(&meta.elements, &ds, EXPLICIT_LITTLE, &mut out);
    Ok((out, EXPLICIT_LITTLE.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn accept_headers_choose_the_transfer_syntax() {
        assert_eq!(accepted(None), Ok(Wanted::Default));
        assert_eq!(accepted(Some(&h("*/*"))), Ok(Wanted::Default));
        assert_eq!(
            accepted(Some(&h(
                r#"multipart/related; type="application/dicom"; transfer-syntax=*"#
            ))),
            Ok(Wanted::Original)
        );
        assert_eq!(
            accepted(Some(&h(
                r#"application/json, multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50"#
            ))),
            Ok(Wanted::Syntax("1.2.840.10008.1.2.4.50".into()))
        );
        assert!(accepted(Some(&h("application/json"))).is_err());
        assert!(accepted(Some(&h(r#"multipart/related; type="image/jpeg""#))).is_err());
    }
}
