//! WADO-RS bulk data (PS3.18 §10.4, the `BulkDataURI`s of [`crate::metadata`]:
//! `.../instances/{instance}/bulkdata/{path}`, where the path is the attribute's tag, or
//! for one inside a sequence the sequence's tag, the item number from 1 and the tag, as
//! often as it is nested: `7FE00010`, `00540016/1/00181074`).
//!
//! A value is given as one `application/octet-stream` part: its stored bytes. The Pixel
//! Data of a compressed image is given like its frames ([`crate::frames`]): one part per
//! frame, the stored bitstreams with their media type, or decoded to octet-stream where the
//! Accept header asks for it and radveil can decode. 406 when the Accept cannot be met.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use radveil_part10::{self as p10, DataSet, Element, Limits, Value};
use radveil_store::Level;

use crate::app::{error, handle, AppState};
use crate::frames::{choose, frames_of, multipart_response, open_instance, Refused};
use crate::scope::Scope;

/// Most steps (tags and item numbers) in a bulk data path.
const MAX_STEPS: usize = 2 * 64 + 1;

/// One step of a bulk data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Tag(u32),
    Item(usize),
}

/// Reads a bulk data path: tags (8 hex digits) and item numbers (from 1) alternating,
/// starting and ending with a tag.
fn steps(path: &str) -> Option<Vec<Step>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.len() > MAX_STEPS || segs.len().is_multiple_of(2) {
        return None;
    }
    segs.iter()
        .enumerate()
        .map(|(n, s)| {
            if n % 2 == 0 {
                (s.len() == 8)
                    .then(|| u32::from_str_radix(s, 16).ok())
                    .flatten()
                    .map(Step::Tag)
            } else {
                s.parse::<usize>().ok().filter(|&i| i > 0).map(Step::Item)
            }
        })
        .collect()
}

/// The element a path names in `ds`.
fn find<'d, 'a>(ds: &'d DataSet<'a>, steps: &[Step]) -> Option<&'d Element<'a>> {
    let mut cur = ds;
    let mut it = steps.iter();
    loop {
        let Some(Step::Tag(t)) = it.next() else {
            return None;
        };
        let e = cur.get(*t)?;
        match it.next() {
            None => return Some(e),
            Some(Step::Item(i)) => match &e.value {
                Value::Sequence(items) => cur = items.get(i.checked_sub(1)?)?,
                _ => return None,
            },
            Some(Step::Tag(_)) => return None,
        }
    }
}

/// The bulk data at `path` of a Part 10 file, as multipart parts with their Content-Type.
fn bulk_of(
    bytes: &[u8],
    path: &str,
    accept: Option<&HeaderValue>,
) -> Result<(Vec<Bytes>, String), Refused> {
    let missing = || Refused(StatusCode::NOT_FOUND, "no such bulk data".into());
    let steps = steps(path).ok_or_else(missing)?;
    let mut inflated = Vec::new();
    let (_, ds, _) = p10::read_file(bytes, &mut inflated, Limits::default()).map_err(|e| {
        Refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a stored instance does not read: {e}"),
        )
    })?;
    let e = find(&ds, &steps).ok_or_else(missing)?;
    let octet = || {
        choose(accept, None, true)
            .map(|_| ())
            .map_err(|why| Refused(StatusCode::NOT_ACCEPTABLE, why))
    };
    match &e.value {
        // The Pixel Data of a compressed image: its frames.
        Value::Fragments(_) if steps == [Step::Tag(p10::PIXEL_DATA)] => {
            let count = radveil_pixeldata::number_of_frames(&ds)
                .map_err(|e| Refused(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")))?;
            let all: Vec<usize> = (1..=count).collect();
            frames_of(bytes, &all, accept)
        }
        Value::Fragments(frags) => {
            octet()?;
            let v: Vec<u8> = frags
                .iter()
                .skip(1)
                .flat_map(|f| f.iter().copied())
                .collect();
            Ok((vec![Bytes::from(v)], "application/octet-stream".into()))
        }
        Value::Bytes(b) => {
            octet()?;
            Ok((
                vec![Bytes::copy_from_slice(b)],
                "application/octet-stream".into(),
            ))
        }
        Value::Sequence(_) => Err(missing()),
    }
}

pub(crate) async fn bulkdata(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series, inst, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    let i = handle(&state, Level::Instance, &inst);
    let r = match open_instance(&state, &scope, s, se, i).await {
        Ok(bytes) => {
            let accept = headers.get(header::ACCEPT).cloned();
            let done =
                tokio::task::spawn_blocking(move || bulk_of(&bytes, &path, accept.as_ref())).await;
            match done {
                Ok(Ok((parts, part_type))) => {
                    state.metrics.retrieved(1);
                    multipart_response(&parts, &part_type)
                }
                Ok(Err(Refused(status, why))) if status == StatusCode::INTERNAL_SERVER_ERROR => {
                    tracing::error!(error = %why, "bulk data of a stored instance");
                    error(status, "a stored instance does not read")
                }
                Ok(Err(Refused(status, why))) => error(status, &why),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            }
        }
        Err(r) => r,
    };
    crate::audit::study(&state, &scope, &study, Some(&series), Some(&inst), None).attach(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn paths_name_nested_values() {
        assert_eq!(steps("7FE00010"), Some(vec![Step::Tag(0x7FE0_0010)]));
        assert_eq!(
            steps("00540016/2/00181074"),
            Some(vec![
                Step::Tag(0x0054_0016),
                Step::Item(2),
                Step::Tag(0x0018_1074)
            ])
        );
        for bad in [
            "",
            "7FE0001",
            "00540016/0/00181074",
            "00540016/1",
            "x",
            "00540016/a/00181074",
        ] {
            assert_eq!(steps(bad), None, "{bad}");
        }
        let item = DataSet {
            elements: vec![Element {
                tag: 0x0018_1074,
                vr: radveil_part10::Vr::DS,
                value: Value::Bytes(Cow::Borrowed(b"1")),
            }],
        };
        let ds = DataSet {
            elements: vec![Element {
                tag: 0x0054_0016,
                vr: radveil_part10::Vr::SQ,
                value: Value::Sequence(vec![DataSet::default(), item]),
            }],
        };
        let s = steps("00540016/2/00181074").unwrap();
        assert_eq!(find(&ds, &s).and_then(|e| e.bytes()), Some(&b"1"[..]));
        assert!(find(&ds, &steps("00540016/3/00181074").unwrap()).is_none());
        assert!(find(&ds, &steps("00540016/1/00181074").unwrap()).is_none());
    }
}
