//! WADO-RS retrieve (PS3.18 §10.4): studies, series and instances as
//! `multipart/related; type="application/dicom"`, in the original transfer syntax or one
//! the client asks for where radveil can convert.

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use radveil_store::{Handle, Level, StoreError};

use crate::app::{error, handle, store_error, visible_rows, AppState};
use crate::frames::Refused;
use crate::multipart;
use crate::scope::Scope;
use crate::streamed;
use crate::transfer;

pub(crate) async fn wado_study(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let r = retrieve(&state, &scope, &headers, s, None, None).await;
    crate::audit::study(&state, &scope, &study, None, None, None).attach(r)
}

pub(crate) async fn wado_series(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    let r = retrieve(&state, &scope, &headers, s, Some(se), None).await;
    crate::audit::study(&state, &scope, &study, Some(&series), None, None).attach(r)
}

pub(crate) async fn wado_instance(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series, inst)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    let i = handle(&state, Level::Instance, &inst);
    let r = retrieve(&state, &scope, &headers, s, Some(se), Some(i)).await;
    crate::audit::study(&state, &scope, &study, Some(&series), Some(&inst), None).attach(r)
}

/// WADO-RS retrieve of instances as `multipart/related; type="application/dicom"` in the
/// transfer syntax the client accepts (PS3.18 §10.4, §8.7.3.5.2).
async fn retrieve(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    study: Handle,
    series: Option<Handle>,
    instance: Option<Handle>,
) -> Response {
    let wanted = match transfer::accepted(headers.get(header::ACCEPT)) {
        Ok(w) => w,
        Err(why) => return error(StatusCode::NOT_ACCEPTABLE, &why),
    };
    // One instance is looked up alone (its series' other rows are never read) and opened
    // in the same step.
    if let Some(i) = instance {
        let sees = *scope;
        let opened = state
            .store
            .open_instance(study, series, i, move |r| sees.sees_row(r))
            .await;
        return match opened {
            Ok(bytes) => respond(state, vec![bytes], &wanted),
            // Another patient's study is exactly as absent as a missing one.
            Err(StoreError::NotFound) => error(StatusCode::NOT_FOUND, "not found"),
            Err(e) => store_error(&e),
        };
    }
    let rows = match visible_rows(state, scope, study, series).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // A study or series is sent an instance at a time as the client takes them: the
    // response holds a few instances' memory whatever the study's size.
    let boundary = multipart::new_boundary();
    let ct = format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let state = state.clone();
    let made = streamed::respond(&ct, move |tx: streamed::Parts| async move {
        for r in &rows {
            if tx.is_closed() {
                // The client is gone.
                return;
            }
            let part = match state.store.open_row(r).await {
                Ok(bytes) => match transfer::convert(bytes, &wanted) {
                    Ok((b, ts)) => {
                        state.metrics.retrieved(1);
                        let media = format!("application/dicom; transfer-syntax={ts}");
                        Ok(streamed::part(&boundary, &[("Content-Type", &media)], &b))
                    }
                    Err(why) => Err(Refused(StatusCode::NOT_ACCEPTABLE, why)),
                },
                Err(e) => Err(unopened(&e)),
            };
            let stop = part.is_err();
            if tx.send(part).await.is_err() || stop {
                return;
            }
        }
        let last = if rows.is_empty() {
            Err(Refused(StatusCode::NOT_FOUND, "not found".into()))
        } else {
            Ok(streamed::close(&boundary))
        };
        let _ = tx.send(last).await;
    })
    .await;
    match made {
        Ok(resp) => resp,
        Err(Refused(status, why)) => error(status, &why),
    }
}

/// Why a stored instance of a study or series did not open, in the words of
/// [`store_error`] (logged here: the client gets only the words).
fn unopened(e: &StoreError) -> Refused {
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    match e {
        StoreError::Tampered(_) => {
            tracing::error!(error = %e, "a stored object failed its integrity check");
            Refused(
                status,
                "a stored object failed its integrity check and is not served".into(),
            )
        }
        _ => {
            tracing::error!(error = %e, "store error");
            Refused(status, "store error".into())
        }
    }
}

/// The multipart response of opened instances, each in the transfer syntax wanted.
fn respond(state: &AppState, objects: Vec<Vec<u8>>, wanted: &transfer::Wanted) -> Response {
    let mut parts = Vec::with_capacity(objects.len());
    let mut syntax = None;
    for bytes in objects {
        match transfer::convert(bytes, wanted) {
            Ok((b, ts)) => {
                syntax.get_or_insert(ts);
                parts.push(Bytes::from(b));
            }
            Err(why) => return error(StatusCode::NOT_ACCEPTABLE, &why),
        }
    }
    state.metrics.retrieved(parts.len());
    let boundary = multipart::new_boundary();
    let part_type = match &syntax {
        Some(ts) if parts.len() == 1 => format!("application/dicom; transfer-syntax={ts}"),
        _ => "application/dicom".to_string(),
    };
    let body = multipart::write(&parts, &boundary, &part_type);
    let ct = format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let mut resp = Response::new(Body::from(body));
    if let Ok(v) = HeaderValue::from_str(&ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}
