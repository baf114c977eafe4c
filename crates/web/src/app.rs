//! The HTTP application: routes, shared state and handlers (STOW-RS, WADO-RS, DELETE,
//! health). Handlers are small: they read the request, call the store, and shape the
//! PS3.18 response.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use radveil_store::{Handle, InstanceIds, Level, PutOutcome, Store, StoreError};
use serde_json::{json, Map, Value};

use crate::instance::{self, Identified, Refusal};
use crate::multipart;
use crate::scope::Scope;
use crate::transfer;

/// Limits on what one request may ask of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_request: usize,
    /// Most parts in one STOW-RS request.
    pub max_parts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request: 512 << 20,
            max_parts: 10_000,
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The encrypted store.
    pub store: Store,
    /// Request limits.
    pub limits: Limits,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How requests are authenticated and authorised.
    pub access: crate::auth::AccessControl,
    /// What QIDO-RS searches: the opened attributes of every stored instance, in memory
    /// (filled by [`crate::serve`] before it listens; kept up to date on store and delete).
    pub catalogue: crate::qido::Catalogue,
    /// The audit trail's writer: every request on the DICOMweb and audit routes is
    /// recorded through it before its response goes ([`crate::audit::record`]). `None`
    /// records nothing (for tests of other parts; `radveil serve` always gives one).
    pub auditor: Option<crate::audit::Auditor>,
}

/// The router of the whole gateway.
pub fn router(state: AppState) -> Router {
    let max = state.limits.max_request;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(crate::metrics::handler))
        .route("/dicom-web/studies", post(stow).get(crate::qido::studies))
        .route("/dicom-web/series", get(crate::qido::all_series))
        .route("/dicom-web/instances", get(crate::qido::all_instances))
        .route(
            "/dicom-web/studies/{study}/series",
            get(crate::qido::study_series),
        )
        .route(
            "/dicom-web/studies/{study}/instances",
            get(crate::qido::study_instances),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances",
            get(crate::qido::series_instances),
        )
        .route(
            "/dicom-web/studies/{study}",
            post(stow_study).get(wado_study).delete(delete_study),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}",
            get(wado_series).delete(delete_series),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}",
            get(wado_instance).delete(delete_instance),
        )
        .route("/audit", get(crate::audit_routes::audit))
        .route("/me/access-log", get(crate::audit_routes::access_log))
        .layer(DefaultBodyLimit::max(max))
        .with_state(state.clone())
        // So that every DICOMweb route (and unknown paths under it) is checked.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::check,
        ))
        // Outermost: refusals by access control are audited too.
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::audit::record,
        ))
}

/// The DICOM JSON media type.
const DICOM_JSON: &str = "application/dicom+json";

fn error(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{why}\n"),
    )
        .into_response()
}

/// A DICOM JSON attribute.
fn attr(vr: &str, values: Vec<Value>) -> Value {
    json!({ "vr": vr, "Value": values })
}

fn tag_key(tag: u32) -> String {
    format!("{tag:08X}")
}

pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}/dicom-web")
}

async fn stow(
    state: State<AppState>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    store_parts(state, scope, headers, body, None).await
}

async fn stow_study(
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

fn handle(state: &AppState, level: Level, uid: &str) -> Handle {
    state.store.uid(level, uid)
}

async fn wado_study(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let r = retrieve(&state, &scope, &headers, s, None, None).await;
    crate::audit::study(&state, &scope, &study, None, None, None).attach(r)
}

async fn wado_series(
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

async fn wado_instance(
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
    let rows = match state.store.rows(study, series).await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| instance.is_none_or(|i| i == r.instance))
        // Another patient's study is exactly as absent as a missing one.
        .filter(|r| scope.sees(&r.patient))
        .collect();
    if rows.is_empty() {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let mut parts = Vec::with_capacity(rows.len());
    let mut syntax = None;
    for r in &rows {
        let bytes = match state.store.open_row(r).await {
            Ok(b) => b,
            Err(e) => return store_error(&e),
        };
        match transfer::convert(bytes, &wanted) {
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

/// The response for a store error: missing things are 404; an altered object is a 500
/// that names the object (never its content); the rest 500.
fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::NotFound => error(StatusCode::NOT_FOUND, "not found"),
        StoreError::Tampered(_) => {
            tracing::error!(error = %e, "a stored object failed its integrity check");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a stored object failed its integrity check and is not served",
            )
        }
        _ => {
            tracing::error!(error = %e, "store error");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
    }
}

/// `Ok` when the study exists and its patient is in `scope`; else the response for a
/// missing study (so another patient's study and a missing one look the same).
async fn visible(state: &AppState, scope: &Scope, study: Handle) -> Result<(), Response> {
    if *scope == Scope::All {
        return Ok(());
    }
    // A study has one patient (the store refuses a second), so its first row says whose.
    match state.store.rows(study, None).await {
        Ok(rows) if rows.first().is_some_and(|r| scope.sees(&r.patient)) => Ok(()),
        Ok(_) => Err(store_error(&StoreError::NotFound)),
        Err(e) => Err(store_error(&e)),
    }
}

async fn delete_study(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(study): Path<String>,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    if let Err(r) = visible(&state, &scope, s).await {
        return r;
    }
    // Whose it was, read before it goes.
    let what = crate::audit::study(&state, &scope, &study, None, None, None);
    let r = state.store.delete_study(s).await;
    if r.is_ok() {
        state.catalogue.remove(&s, None, None);
    }
    what.attach(deleted(&state, r))
}

async fn delete_series(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    if let Err(r) = visible(&state, &scope, s).await {
        return r;
    }
    let what = crate::audit::study(&state, &scope, &study, Some(&series), None, None);
    let r = state.store.delete_series(s, se).await;
    if r.is_ok() {
        state.catalogue.remove(&s, Some(&se), None);
    }
    what.attach(deleted(&state, r))
}

async fn delete_instance(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series, inst)): Path<(String, String, String)>,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    let i = handle(&state, Level::Instance, &inst);
    if let Err(r) = visible(&state, &scope, s).await {
        return r;
    }
    let what = crate::audit::study(&state, &scope, &study, Some(&series), Some(&inst), None);
    let r = state.store.delete_instance(s, Some(se), i).await;
    if r.is_ok() {
        state.catalogue.remove(&s, Some(&se), Some(&i));
    }
    what.attach(deleted(&state, r))
}

fn deleted(state: &AppState, r: Result<radveil_store::Deleted, StoreError>) -> Response {
    match r {
        Ok(d) => {
            state.metrics.deleted(d.instances);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => store_error(&e),
    }
}
