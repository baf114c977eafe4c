//! WADO-RS frames (PS3.18 §10.4, `.../instances/{instance}/frames/{list}`) and what the
//! bulk data and rendered routes share with it: opening one instance a caller may see, the
//! media types of compressed transfer syntaxes (PS3.18 Table 8.7.3-2), and which form of
//! pixel data an Accept header asks for.
//!
//! A frame is given as `application/octet-stream` (uncompressed, little endian, samples
//! interleaved by pixel: the stored bytes of native pixel data, decoded by
//! `radveil-pixeldata` for compressed ones where it can) or, for a compressed image, as its
//! stored bitstream with the transfer syntax's media type (`image/jpeg`, `image/jls`,
//! `image/jp2`, `image/jphc`, `image/dicom-rle`, with a `transfer-syntax` parameter) when
//! the Accept header asks for it or for any type (`*/*`). 406 when the Accept cannot be
//! met. Frame numbers count from 1; a list that does not read (or a 0) is a 400, a frame
//! beyond Number of Frames a 404. Only the frames asked for are decoded; the instance is
//! opened (decrypted) once per request.

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use radveil_part10::{self as p10, Limits, Value};
use radveil_store::{Handle, Level};

use crate::app::{error, handle, store_error, AppState};
use crate::multipart::{self, media_type, split_unquoted};
use crate::scope::Scope;
use crate::transfer::EXPLICIT_LITTLE;

/// Most frames one request may list.
pub const MAX_FRAMES_LISTED: usize = 10_000;

/// RLE Lossless.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// The media type of the bitstream of one frame in a compressed transfer syntax (PS3.18
/// Table 8.7.3-2); `None` for uncompressed syntaxes (and unknown ones).
pub fn media_of(transfer_syntax: &str) -> Option<&'static str> {
    Some(match transfer_syntax {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        RLE_LOSSLESS => "image/dicom-rle",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "video/mpeg2",
        "1.2.840.10008.1.2.4.102"
        | "1.2.840.10008.1.2.4.103"
        | "1.2.840.10008.1.2.4.104"
        | "1.2.840.10008.1.2.4.105"
        | "1.2.840.10008.1.2.4.106" => "video/mp4",
        _ => return None,
    })
}

/// Whether a media type named in an Accept header is `media` (or an older name of it).
fn same_media(asked: &str, media: &str) -> bool {
    asked == media
        || matches!(
            (asked, media),
            ("image/x-dicom-rle", "image/dicom-rle") | ("image/x-jls", "image/jls")
        )
}

/// The form in which pixel data is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// Uncompressed, little endian, interleaved: `application/octet-stream`.
    Native,
    /// The stored bitstream of each frame, with this media type.
    Original(&'static str),
}

/// Which form of an image's pixel data the Accept header asks for: the first acceptable
/// media range wins. `compressed` is the stored syntax's media type (`None` when the pixel
/// data is native); `decodable` whether radveil can decode that syntax. Errors say why
/// nothing acceptable can be given.
pub fn choose(
    accept: Option<&HeaderValue>,
    compressed: Option<&'static str>,
    decodable: bool,
) -> Result<Form, String> {
    let best = || compressed.map_or(Form::Native, Form::Original);
    let Some(accept) = accept else {
        return Ok(best());
    };
    let accept = accept
        .to_str()
        .map_err(|_| "the Accept header is not text".to_string())?;
    let native_ok = compressed.is_none() || decodable;
    for range in split_unquoted(accept, ',') {
        if range.trim().is_empty() {
            continue;
        }
        let (media, params) = media_type(&range);
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let kind = match media.as_str() {
            "*/*" | "multipart/*" => "*/*".to_string(),
            "multipart/related" => get("type").unwrap_or("*/*").to_ascii_lowercase(),
            _ => continue,
        };
        let ts = get("transfer-syntax");
        match kind.as_str() {
            "*/*" | "*" if ts.is_none_or(|t| t == "*") => return Ok(best()),
            "application/octet-stream" if ts.is_none_or(|t| t == "*" || t == EXPLICIT_LITTLE) => {
                if native_ok {
                    return Ok(Form::Native);
                }
            }
            k => {
                if let Some(m) = compressed {
                    let type_ok = same_media(k, m) || k == "image/*" && m.starts_with("image/");
                    if type_ok {
                        return Ok(Form::Original(m));
                    }
                }
            }
        }
    }
    Err(match compressed {
        Some(m) if !decodable => format!("this image is given as {m} only"),
        Some(m) => format!("this image is given as {m} or application/octet-stream"),
        None => "this image is given as application/octet-stream".into(),
    })
}

/// Reads a frame list (`1,3,5`): numbers from 1, at most [`MAX_FRAMES_LISTED`].
pub fn frame_list(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for t in text.split(',') {
        let n: usize = t
            .trim()
            .parse()
            .map_err(|_| "a frame list is numbers from 1 separated by commas".to_string())?;
        if n == 0 {
            return Err("frames are numbered from 1".into());
        }
        if out.len() >= MAX_FRAMES_LISTED {
            return Err(format!("at most {MAX_FRAMES_LISTED} frames per request"));
        }
        out.push(n);
    }
    Ok(out)
}

/// The Part 10 bytes of one instance of the study (and series) named, opened, if the
/// caller's scope sees its patient; else the response for a missing instance (another
/// patient's answers exactly as a missing one).
pub(crate) async fn open_instance(
    state: &AppState,
    scope: &Scope,
    study: Handle,
    series: Handle,
    instance: Handle,
) -> Result<Vec<u8>, Response> {
    let row = match state
        .store
        .instance_row(study, Some(series), instance)
        .await
    {
        Ok(r) if scope.sees_row(&r) => r,
        Ok(_) => return Err(error(StatusCode::NOT_FOUND, "not found")),
        Err(e) => return Err(store_error(&e)),
    };
    state
        .store
        .open_row(&row)
        .await
        .map_err(|e| store_error(&e))
}

/// A `multipart/related` response of `parts`, each of `part_type` (`type` is its media
/// type without parameters).
pub(crate) fn multipart_response(parts: &[Bytes], part_type: &str) -> Response {
    let boundary = multipart::new_boundary();
    let body = multipart::write(parts, &boundary, part_type);
    let kind = part_type.split(';').next().unwrap_or(part_type).trim();
    let ct = format!("multipart/related; type=\"{kind}\"; boundary={boundary}");
    let mut resp = Response::new(Body::from(body));
    if let Ok(v) = HeaderValue::from_str(&ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Why frames could not be given: the status and words for the client (naming no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub StatusCode, pub String);

/// The frames `numbers` (from 1) of a Part 10 file in `form`, with the Content-Type of
/// each part. CPU-bound: run off the async threads.
pub fn frames_of(
    bytes: &[u8],
    numbers: &[usize],
    accept: Option<&HeaderValue>,
) -> Result<(Vec<Bytes>, String), Refused> {
    let bad = |why: String| Refused(StatusCode::INTERNAL_SERVER_ERROR, why);
    let mut inflated = Vec::new();
    let (meta, ds, enc) = p10::read_file(bytes, &mut inflated, Limits::default())
        .map_err(|e| bad(format!("a stored instance does not read: {e}")))?;
    let ts = meta
        .transfer_syntax
        .trim_end_matches(['\0', ' '])
        .to_string();
    let Some(pixels) = ds.get(p10::PIXEL_DATA) else {
        if radveil_pixeldata::float::float_pixel_data(&ds).is_some() {
            return float_frames(&ds, enc, numbers, accept);
        }
        return Err(Refused(
            StatusCode::NOT_FOUND,
            "the instance has no pixel data".into(),
        ));
    };
    let count = radveil_pixeldata::number_of_frames(&ds)
        .map_err(|e| Refused(StatusCode::NOT_FOUND, format!("{e}")))?;
    if let Some(n) = numbers.iter().find(|&&n| n > count) {
        return Err(Refused(
            StatusCode::NOT_FOUND,
            format!("frame {n} of an image of {count} frames"),
        ));
    }
    let encapsulated = matches!(pixels.value, Value::Fragments(_));
    let compressed = if encapsulated {
        Some(media_of(&ts).unwrap_or("application/octet-stream"))
    } else {
        None
    };
    let decodable = !encapsulated
        || ts == RLE_LOSSLESS
        || radveil_pixeldata::codec::Codec::for_transfer_syntax(&ts).is_some();
    let form = choose(accept, compressed, decodable)
        .map_err(|why| Refused(StatusCode::NOT_ACCEPTABLE, why))?;
    let budget = radveil_pixeldata::default_budget();
    match form {
        Form::Native => {
            let mut parts = Vec::with_capacity(numbers.len());
            // The frames' memory stays reserved until they are handed back.
            let mut grants = Vec::with_capacity(numbers.len());
            for &n in numbers {
                let (_, f, grant) =
                    radveil_pixeldata::decode_frame(&ds, enc, &ts, n.saturating_sub(1), budget)
                        .map_err(pixel_refusal)?;
                grants.push(grant);
                parts.push(Bytes::from(f));
            }
            Ok((parts, "application/octet-stream".into()))
        }
        Form::Original(media) => {
            let Value::Fragments(frags) = &pixels.value else {
                return Err(bad("native pixel data has no bitstream".into()));
            };
            let items: Vec<&[u8]> = frags.iter().skip(1).map(|f| f.as_ref()).collect();
            let offsets = frags.first().map_or(&[][..], |f| f.as_ref());
            // One item per frame (the usual case; a single frame may span items): the frames
            // asked for are copied, not every frame of the image.
            let split;
            let all: Vec<&[u8]> = if items.len() == count && count > 1 {
                items
            } else {
                split = radveil_pixeldata::codec::frames(&items, offsets, count)
                    .map_err(|e| bad(format!("{e}")))?;
                split.iter().map(Vec::as_slice).collect()
            };
            let mut parts = Vec::with_capacity(numbers.len());
            for &n in numbers {
                let f = n
                    .checked_sub(1)
                    .and_then(|i| all.get(i))
                    .ok_or_else(|| bad("fewer frames than described".into()))?;
                parts.push(Bytes::copy_from_slice(f));
            }
            Ok((parts, format!("{media}; transfer-syntax={ts}")))
        }
    }
}

/// The frames `numbers` (from 1) of an image of Float or Double Float Pixel Data
/// (7FE0,0008 / 7FE0,0009): `application/octet-stream` only (no compressed transfer syntax
/// carries float values), each frame its exact values in little endian, held within the
/// pixel memory budget until handed back.
fn float_frames(
    ds: &p10::DataSet<'_>,
    enc: p10::Encoding,
    numbers: &[usize],
    accept: Option<&HeaderValue>,
) -> Result<(Vec<Bytes>, String), Refused> {
    let count = radveil_pixeldata::number_of_frames(ds)
        .map_err(|e| Refused(StatusCode::NOT_FOUND, format!("{e}")))?;
    if let Some(n) = numbers.iter().find(|&&n| n > count) {
        return Err(Refused(
            StatusCode::NOT_FOUND,
            format!("frame {n} of an image of {count} frames"),
        ));
    }
    if choose(accept, None, true).map_err(|why| Refused(StatusCode::NOT_ACCEPTABLE, why))?
        != Form::Native
    {
        return Err(Refused(
            StatusCode::NOT_ACCEPTABLE,
            "float pixel data is offered as application/octet-stream only".into(),
        ));
    }
    let budget = radveil_pixeldata::default_budget();
    let mut parts = Vec::with_capacity(numbers.len());
    let mut grants = Vec::with_capacity(numbers.len());
    for &n in numbers {
        let (_, _, f, grant) =
            radveil_pixeldata::float::decode_float_frame(ds, enc, n.saturating_sub(1), budget)
                .map_err(pixel_refusal)?;
        grants.push(grant);
        parts.push(Bytes::from(f));
    }
    Ok((parts, "application/octet-stream".into()))
}

/// The response to pixel data that cannot be given: 406 for what radveil does not decode,
/// 503 when the memory budget has no room now, 500 (logged) for pixel data that does not
/// read.
pub(crate) fn pixel_refusal(e: radveil_pixeldata::PixelError) -> Refused {
    use radveil_pixeldata::PixelError as P;
    match e {
        P::Unsupported(_) => Refused(StatusCode::NOT_ACCEPTABLE, e.to_string()),
        P::Memory(_) => Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "not enough memory for this image now; try again later".into(),
        ),
        P::Malformed(_) => Refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(crate) async fn frames(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series, inst, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    let i = handle(&state, Level::Instance, &inst);
    let r = retrieve_frames(&state, &scope, &headers, (s, se, i), &list).await;
    crate::audit::study(&state, &scope, &study, Some(&series), Some(&inst), None).attach(r)
}

async fn retrieve_frames(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    (s, se, i): (Handle, Handle, Handle),
    list: &str,
) -> Response {
    let numbers = match frame_list(list) {
        Ok(n) => n,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let bytes = match open_instance(state, scope, s, se, i).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let accept = headers.get(header::ACCEPT).cloned();
    let done =
        tokio::task::spawn_blocking(move || frames_of(&bytes, &numbers, accept.as_ref())).await;
    match done {
        Ok(Ok((parts, part_type))) => {
            state.metrics.retrieved(1);
            multipart_response(&parts, &part_type)
        }
        Ok(Err(Refused(status, why))) => {
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(error = %why, "frames of a stored instance");
                return error(status, "a stored instance's pixel data does not read");
            }
            error(status, &why)
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn the_accept_header_chooses_the_form() {
        let jls = Some("image/jls");
        assert_eq!(choose(None, None, true), Ok(Form::Native));
        assert_eq!(choose(None, jls, true), Ok(Form::Original("image/jls")));
        let any = h(r#"multipart/related; type="*/*""#);
        assert_eq!(
            choose(Some(&any), jls, true),
            Ok(Form::Original("image/jls"))
        );
        assert_eq!(choose(Some(&any), None, true), Ok(Form::Native));
        let octet = h(r#"multipart/related; type="application/octet-stream""#);
        assert_eq!(choose(Some(&octet), jls, true), Ok(Form::Native));
        assert!(choose(Some(&octet), jls, false).is_err());
        let old = h(r#"multipart/related; type="image/x-jls"; transfer-syntax=*"#);
        assert_eq!(
            choose(Some(&old), jls, false),
            Ok(Form::Original("image/jls"))
        );
        let jpeg = h(r#"multipart/related; type="image/jpeg""#);
        assert!(choose(Some(&jpeg), jls, true).is_err());
        assert!(choose(Some(&jpeg), None, true).is_err());
        let both = h(
            r#"multipart/related; type="image/jpeg", multipart/related; type="application/octet-stream""#,
        );
        assert_eq!(choose(Some(&both), None, true), Ok(Form::Native));
        let other_ts = h(
            r#"multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.2"#,
        );
        assert!(choose(Some(&other_ts), None, true).is_err());
    }

    #[test]
    fn frame_lists_are_numbers_from_one() {
        assert_eq!(frame_list("1,3, 2"), Ok(vec![1, 3, 2]));
        assert!(frame_list("0").is_err());
        assert!(frame_list("1,,2").is_err());
        assert!(frame_list("-1").is_err());
        assert!(frame_list("99999999999999999999999").is_err());
        let many = vec!["1"; MAX_FRAMES_LISTED + 1].join(",");
        assert!(frame_list(&many).is_err());
    }
}
