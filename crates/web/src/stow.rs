//! STOW-RS (PS3.18 §10.5): each part of a `multipart/related; type="application/dicom"`
//! request identified, checked against the token's scope and the request's study, and
//! stored (encrypted, durable) before the response; bad parts are refused with a PS3.18
//! failure reason while the good ones are stored.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use radveil_store::{InstanceIds, PutOutcome, StoreError};
use serde_json::{json, Map, Value};

use crate::app::{attr, base_url, error, tag_key, AppState, DICOM_JSON};
use crate::instance::{self, Identified, Refusal};
use crate::multipart;
use crate::scope::Scope;

pub(crate) async fn stow(
    state: State<AppState>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    store_parts(state, scope, headers, body, None).await
}

pub(crate) async fn stow_study(
    state: State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    store_parts(state, scope, headers, body, Some(study)).await
}

/// One part's result in a store response.
enum Stored {
    Ok(Identified),
    Failed(Option<Identified>, Refusal),
}

/// STOW-RS (PS3.18 §10.5): stores each part, refusing bad ones with a reason while the good
/// ones are stored; answers only once every stored part is durable.
async fn store_parts(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    body: Bytes,
    study: Option<String>,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let related = match multipart::related(ct) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e.to_string()),
    };
    if related
        .kind
        .as_deref()
        .is_some_and(|k| k != "application/dicom")
    {
        // Only the binary form (PS3.18 §10.5.1.2.1) is accepted.
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only multipart/related; type=\"application/dicom\" is accepted",
        );
    }
    let parts = match multipart::parts(&body, &related.boundary, state.limits.max_parts) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let mut results = Vec::with_capacity(parts.len());
    for part in parts {
        let media = part
            .content_type
            .as_deref()
            .map(|c| multipart::media_type(c).0);
        if media.as_deref().is_some_and(|m| m != "application/dicom") {
            results.push(Stored::Failed(
                None,
                Refusal {
                    reason: instance::CANNOT_UNDERSTAND,
                    why: "a part is not application/dicom".into(),
                },
            ));
            continue;
        }
        results.push(store_one(&state, &scope, part.body, study.as_deref()).await);
    }
    state.metrics.stored(
        results
            .iter()
            .filter(|r| matches!(r, Stored::Ok(_)))
            .count(),
        results
            .iter()
            .filter(|r| matches!(r, Stored::Failed(..)))
            .count(),
    );
    let mut what = crate::audit::What::default();
    for r in &results {
        if let Stored::Ok(id) = r {
            let study = radveil_audit::StudyRef {
                uid: id.study.clone(),
                instances: Some(1),
                ..Default::default()
            };
            what.add(&id.patient_id, &id.issuer, study);
        }
    }
    what.attach(store_response(&headers, study.as_deref(), &results))
}

async fn store_one(state: &AppState, scope: &Scope, bytes: Bytes, study: Option<&str>) -> Stored {
    let id = match instance::identify(&bytes) {
        Ok(id) => id,
        Err(r) => return Stored::Failed(None, r),
    };
    if !scope.sees(&state.store.patient(&id.patient_id, &id.issuer)) {
        let r = Refusal {
            reason: crate::auth::NOT_AUTHORIZED,
            why: "the token may not store instances of this patient".into(),
        };
        return Stored::Failed(Some(id), r);
    }
    if study.is_some_and(|s| s != id.study) {
        let r = Refusal {
            reason: instance::PROCESSING_FAILURE,
            why: "(0020,000D) differs from the study of the request".into(),
        };
        return Stored::Failed(Some(id), r);
    }
    // The QIDO attributes (SOP Class and Transfer Syntax among them), sealed by the store.
    let meta = crate::dicom_json::attrs_to_json(&id.attributes);
    let ids = InstanceIds {
        patient_id: &id.patient_id,
        issuer: &id.issuer,
        study: &id.study,
        series: &id.series,
        instance: &id.sop_instance,
    };
    let before = state.catalogue.mark();
    match state
        .store
        .put(&ids, bytes, meta.to_string().as_bytes())
        .await
    {
        Ok(PutOutcome::Stored) => {
            let handles = state.store.handles(&ids);
            let attrs = id.attributes.clone();
            state
                .catalogue
                .insert_stored(&state.store, &handles, attrs, before)
                .await;
            Stored::Ok(id)
        }
        Ok(PutOutcome::AlreadyStored) => Stored::Ok(id),
        Err(e) => {
            let reason = match e {
                StoreError::Conflict => instance::DUPLICATE_SOP_INSTANCE,
                StoreError::StudyOfAnotherPatient => instance::PROCESSING_FAILURE,
                _ => instance::OUT_OF_RESOURCES,
            };
            tracing::warn!(error = %e, "an instance was not stored");
            Stored::Failed(
                Some(id),
                Refusal {
                    reason,
                    why: e.to_string(),
                },
            )
        }
    }
}

/// The Store Instances Response (PS3.18 §10.5.3): 200 when all are stored, 202 when some
/// are, 409 when none is.
fn store_response(headers: &HeaderMap, study: Option<&str>, results: &[Stored]) -> Response {
    use radveil_standard::tags;
    let base = base_url(headers);
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Stored::Ok(id) => referenced.push(json!({
                tag_key(tags::REFERENCED_SOP_CLASS_UID): attr("UI", vec![json!(id.sop_class)]),
                tag_key(tags::REFERENCED_SOP_INSTANCE_UID): attr("UI", vec![json!(id.sop_instance)]),
                tag_key(tags::RETRIEVE_URL): attr("UR", vec![json!(format!(
                    "{base}/studies/{}/series/{}/instances/{}", id.study, id.series, id.sop_instance
                ))]),
            })),
            Stored::Failed(id, why) => {
                let mut item = Map::new();
                if let Some(id) = id {
                    item.insert(tag_key(tags::REFERENCED_SOP_CLASS_UID), attr("UI", vec![json!(id.sop_class)]));
                    item.insert(tag_key(tags::REFERENCED_SOP_INSTANCE_UID), attr("UI", vec![json!(id.sop_instance)]));
                }
                item.insert(tag_key(tags::FAILURE_REASON), attr("US", vec![json!(why.reason)]));
                tracing::info!(reason = why.reason, why = %why.why, "a part was refused");
                failed.push(Value::Object(item));
            }
        }
    }
    let mut out = Map::new();
    let study_uid = study.map(str::to_string).or_else(|| {
        let studies: std::collections::BTreeSet<&str> = results
            .iter()
            .filter_map(|r| match r {
                Stored::Ok(id) => Some(id.study.as_str()),
                Stored::Failed(..) => None,
            })
            .collect();
        (studies.len() == 1).then(|| studies.into_iter().next().unwrap_or_default().to_string())
    });
    if let Some(s) = study_uid {
        out.insert(
            tag_key(tags::RETRIEVE_URL),
            attr("UR", vec![json!(format!("{base}/studies/{s}"))]),
        );
    }
    let status = match (referenced.is_empty(), failed.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CONFLICT,
    };
    if !failed.is_empty() {
        out.insert(tag_key(tags::FAILED_SOP_SEQUENCE), attr("SQ", failed));
    }
    if !referenced.is_empty() {
        out.insert(
            tag_key(tags::REFERENCED_SOP_SEQUENCE),
            attr("SQ", referenced),
        );
    }
    (
        status,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        Value::Object(out).to_string(),
    )
        .into_response()
}
