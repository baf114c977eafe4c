//! The HTTP application: routes, shared state, the DELETE handlers and the helpers the
//! handlers share. STOW-RS is in [`crate::stow`], WADO-RS in [`crate::wado`], QIDO-RS in
//! [`crate::qido`]. Handlers are small: they read the request, call the store, and shape
//! the PS3.18 response.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use radveil_store::{Handle, Level, Store, StoreError};
use serde_json::{json, Value};

use crate::scope::Scope;

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
    /// Integrity at ingest ([`crate::ingest`]): signatures verified, the ledger appended,
    /// advisories, the signing policy. `None` checks nothing (for tests of other parts;
    /// `radveil serve` always gives one).
    pub ingest: Option<crate::ingest::Ingest>,
    /// Served over TLS: the URLs the gateway writes (RetrieveURL, BulkDataURI) say https.
    pub https: bool,
    /// The free space kept on the data directory's filesystem ([`crate::disk`]); unwatched
    /// when `None`.
    pub disk: Option<Arc<crate::disk::DiskReserve>>,
    /// The patient's side: portal, viewer, consent ([`crate::portal`]).
    pub portal: crate::portal::PortalState,
}

/// The router of the whole gateway.
pub fn router(state: AppState) -> Router {
    let max = state.limits.max_request;
    // Every instance stored keeps a sealed metadata copy for WADO-RS metadata.
    state.store.keep_metadata(crate::metadata::copy);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(crate::metrics::handler))
        .route(
            "/dicom-web/studies",
            post(crate::stow::stow).get(crate::qido::studies),
        )
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
            post(crate::stow::stow_study)
                .get(crate::wado::wado_study)
                .delete(delete_study),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}",
            get(crate::wado::wado_series).delete(delete_series),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}",
            get(crate::wado::wado_instance).delete(delete_instance),
        )
        .route(
            "/dicom-web/studies/{study}/metadata",
            get(crate::metadata::study_metadata),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/metadata",
            get(crate::metadata::series_metadata),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(crate::metadata::instance_metadata),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/{*path}",
            get(crate::bulkdata::bulkdata),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(crate::frames::frames),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered",
            get(crate::rendered::instance_rendered),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
            get(crate::rendered::frame_rendered),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            get(crate::rendered::instance_thumbnail),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/thumbnail",
            get(crate::rendered::series_thumbnail),
        )
        .route(
            "/dicom-web/studies/{study}/thumbnail",
            get(crate::rendered::study_thumbnail),
        )
        .route(
            "/dicom-web/studies/{study}/rendered",
            get(crate::rendered::study_rendered),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/rendered",
            get(crate::rendered::series_rendered),
        )
        .route("/audit", get(crate::audit_routes::audit))
        .route("/me/access-log", get(crate::audit_routes::access_log))
        .route(
            "/fhir/CareTeam/{id}",
            get(crate::fhir_careteam::read).put(crate::fhir_careteam::put),
        )
        .route("/fhir/Consent", get(crate::fhir_consent::search))
        .route(
            "/fhir/Consent/{id}",
            get(crate::fhir_consent::read).put(crate::fhir_consent::put),
        )
        .route(
            "/fhir/Consent/{id}/_history",
            get(crate::fhir_consent::history),
        )
        .route(
            "/fhir/Consent/{id}/_history/{vid}",
            get(crate::fhir_consent::vread),
        )
        .route("/me/download", get(crate::download::download))
        .merge(crate::portal::routes())
        .route("/viewer", get(crate::viewer::root))
        .route("/viewer/", get(crate::viewer::serve))
        .route("/viewer/{*path}", get(crate::viewer::serve))
        .layer(DefaultBodyLimit::max(max))
        .with_state(state.clone())
        // Inside access control, outside the handlers: a body over the limit and a store the
        // disk has no room for are refused before the body is read.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::disk::refuse_early,
        ))
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
pub(crate) const DICOM_JSON: &str = "application/dicom+json";

pub(crate) fn error(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{why}\n"),
    )
        .into_response()
}

/// A DICOM JSON attribute.
pub(crate) fn attr(vr: &str, values: Vec<Value>) -> Value {
    json!({ "vr": vr, "Value": values })
}

pub(crate) fn tag_key(tag: u32) -> String {
    format!("{tag:08X}")
}

pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = if state.https { "https" } else { "http" };
    format!("{scheme}://{host}/dicom-web")
}

pub(crate) fn handle(state: &AppState, level: Level, uid: &str) -> Handle {
    state.store.uid(level, uid)
}

/// The response for a store error: missing things are 404; an altered object is a 500
/// that names the object (never its content); the rest 500.
pub(crate) fn store_error(e: &StoreError) -> Response {
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

/// The index rows of a study, or of one of its series, that `scope` may see, in the
/// index's order: another patient's rows are left out, so their study reads exactly as a
/// missing one (an empty list; the caller answers 404).
pub(crate) async fn visible_rows(
    state: &AppState,
    scope: &Scope,
    study: Handle,
    series: Option<Handle>,
) -> Result<Vec<radveil_store::Row>, Response> {
    let rows = state
        .store
        .rows(study, series)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(rows.into_iter().filter(|r| scope.sees_row(r)).collect())
}

/// `Ok` when the study exists and its patient is in `scope`; else the response for a
/// missing study (so another patient's study and a missing one look the same).
async fn visible(state: &AppState, scope: &Scope, study: Handle) -> Result<(), Response> {
    if *scope == Scope::All {
        return Ok(());
    }
    // A study has one patient (the store refuses a second), so its first row says whose.
    match state.store.rows(study, None).await {
        Ok(rows) if rows.first().is_some_and(|r| scope.sees_row(r)) => Ok(()),
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
    let uids = match crate::ingest::doomed(&state, s, None, None).await {
        Ok(uids) => uids,
        Err(e) => return what.attach(store_error(&e)),
    };
    let r = state.store.delete_study(s).await;
    if r.is_ok() {
        state.catalogue.remove(&s, None, None);
    }
    what.attach(deleted(&state, r, &uids).await)
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
    let uids = match crate::ingest::doomed(&state, s, Some(se), None).await {
        Ok(uids) => uids,
        Err(e) => return what.attach(store_error(&e)),
    };
    let r = state.store.delete_series(s, se).await;
    if r.is_ok() {
        state.catalogue.remove(&s, Some(&se), None);
    }
    what.attach(deleted(&state, r, &uids).await)
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
    let uids = match crate::ingest::doomed(&state, s, Some(se), Some(i)).await {
        Ok(uids) => uids,
        Err(e) => return what.attach(store_error(&e)),
    };
    let r = state.store.delete_instance(s, Some(se), i).await;
    if r.is_ok() {
        state.catalogue.remove(&s, Some(&se), Some(&i));
    }
    what.attach(deleted(&state, r, &uids).await)
}

/// The response to a DELETE, once the ledger has recorded the deletion of `uids` (the
/// instances [`crate::ingest::doomed`] named before they went).
async fn deleted(
    state: &AppState,
    r: Result<radveil_store::Deleted, StoreError>,
    uids: &[String],
) -> Response {
    match r {
        Ok(d) => {
            state.metrics.deleted(d.instances);
            match crate::ingest::record_deletion(state, uids).await {
                Some(failed) => failed,
                None => StatusCode::NO_CONTENT.into_response(),
            }
        }
        Err(e) => store_error(&e),
    }
}
