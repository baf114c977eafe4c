//! STOW-RS (PS3.18 §10.5): each part of a `multipart/related; type="application/dicom"`
//! request identified, checked against the token's scope and the request's study, and
//! stored (encrypted, durable) before the response; bad parts are refused with a PS3.18
//! failure reason while the good ones are stored.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use radveil_pipeline::ingest::{Examined, SignatureStatus};
use radveil_store::{Handle, InstanceIds, Level, Put, PutOutcome, StoreError};
use serde_json::{json, Map, Value};

use crate::app::{attr, base_url, error, tag_key, AppState, DICOM_JSON};
use crate::auth::Caller;
use crate::ingest::{Changed, Logged};
use crate::instance::{self, Identified, Refusal};
use crate::multipart;
use crate::scope::Scope;

pub(crate) async fn stow(
    state: State<AppState>,
    Extension(scope): Extension<Scope>,
    caller: Option<Extension<Caller>>,
    address: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let from = From {
        caller: caller.map(|c| c.0),
        address: address.map(|a| a.0 .0.ip().to_string()),
    };
    store_parts(state, scope, from, headers, body, None).await
}

pub(crate) async fn stow_study(
    state: State<AppState>,
    Extension(scope): Extension<Scope>,
    caller: Option<Extension<Caller>>,
    address: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let from = From {
        caller: caller.map(|c| c.0),
        address: address.map(|a| a.0 .0.ip().to_string()),
    };
    store_parts(state, scope, from, headers, body, Some(study)).await
}

/// Who sent a store request (for the signing policy and the audit of its refusals).
struct From {
    caller: Option<Caller>,
    address: Option<String>,
}

/// One part's result in a store response (and of [`store_made`]): stored (or already
/// stored, the same bytes), or what was identified of it and why not.
pub(crate) enum Stored {
    Ok(Identified),
    Failed(Option<Identified>, Refusal),
}

/// A part identified and checked, waiting for the ledger and the store.
struct Ready {
    id: Identified,
    bytes: Bytes,
    /// What integrity at ingest found (`None` when the gateway runs without it).
    examined: Option<Examined>,
    /// Its metadata copy, made from the same parse, without its ingest block yet.
    copy: Option<crate::ingest::MetadataCopy>,
    /// Its entry in the ledger.
    ledger_index: Option<u64>,
    /// The series' handles, to compare its geometry with the series.
    study: Handle,
    series: Handle,
}

/// A part's stage on its way through a store request.
enum Stage {
    Done(Box<Stored>),
    Ready(Box<Ready>),
}

fn done(s: Stored) -> Stage {
    Stage::Done(Box::new(s))
}

/// Failure Reason for an instance that the site requires of this client to be signed by
/// a trusted signer and is not: "Refused: Not Authorized" (0124H, PS3.7 C.5.x): the client
/// is not authorised to store it. (C000H "Cannot understand" would say the instance could
/// not be read, A900H that it does not match its SOP Class: neither is the case.)
pub const UNSIGNED_REFUSED: u16 = crate::auth::NOT_AUTHORIZED;

/// STOW-RS (PS3.18 §10.5): stores each part, refusing bad ones with a reason while the good
/// ones are stored; answers only once every stored part (and its ledger entry) is durable.
///
/// Each part is parsed once: its identifiers, search attributes and (with integrity at
/// ingest) its signatures, binding hash and advisories come from that parse. The ledger
/// entries of a request's parts are appended as one batch, before the parts are stored,
/// so each instance's sealed attributes carry its ledger index.
async fn store_parts(
    State(state): State<AppState>,
    scope: Scope,
    from: From,
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
    let principal = from.caller.as_ref().and_then(|c| c.principal.as_deref());
    let required = state
        .ingest
        .as_ref()
        .is_some_and(|i| i.require.applies(principal));
    // Parsing, signature checks, binding hashes and advisories are CPU work: off the
    // runtime's threads.
    let work = {
        let (state, study) = (state.clone(), study.clone());
        tokio::task::spawn_blocking(move || examine_parts(&state, scope, parts, study, required))
    };
    let Ok((mut stages, refused_unsigned)) = work.await else {
        tracing::error!("examining a store request's parts failed");
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    log_to_ledger(&state, &mut stages).await;
    let results = store_all(&state, stages).await;
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
    if !refused_unsigned.patients.is_empty() {
        if let Err(r) = audit_refusals(&state, &from, refused_unsigned).await {
            return r;
        }
    }
    let mut what = crate::audit::What::default();
    for r in &results {
        if let Stored::Ok(id) = r {
            what.add(&id.patient_id, &id.issuer, study_ref(id));
        }
    }
    what.attach(store_response(&state, &headers, study.as_deref(), &results))
}

/// Identifies and examines each part of a request (see [`examine`]), then adds the series
/// advisories; also what the signing policy refused, for the audit trail.
fn examine_parts(
    state: &AppState,
    scope: Scope,
    parts: Vec<multipart::Part>,
    study: Option<String>,
    required: bool,
) -> (Vec<Stage>, crate::audit::What) {
    let now = radveil_pipeline::verify::unix_now();
    let mut stages = Vec::with_capacity(parts.len());
    let mut refused_unsigned = crate::audit::What::default();
    for part in parts {
        let media = part
            .content_type
            .as_deref()
            .map(|c| multipart::media_type(c).0);
        if media.as_deref().is_some_and(|m| m != "application/dicom") {
            stages.push(done(Stored::Failed(
                None,
                Refusal {
                    reason: instance::CANNOT_UNDERSTAND,
                    why: "a part is not application/dicom".into(),
                },
            )));
            continue;
        }
        let (stage, policy) = examine(state, &scope, part.body, study.as_deref(), now, required);
        if let (Stage::Done(d), Policy::Refused) = (&stage, policy) {
            if let Stored::Failed(Some(id), _) = d.as_ref() {
                refused_unsigned.add(&id.patient_id, &id.issuer, study_ref(id));
            }
        }
        stages.push(stage);
    }
    series_advisories(state, &mut stages);
    (stages, refused_unsigned)
}

pub(crate) fn study_ref(id: &Identified) -> radveil_audit::StudyRef {
    radveil_audit::StudyRef {
        uid: id.study.clone(),
        instances: Some(1),
        ..Default::default()
    }
}

/// Why the signing policy refuses a part (followed by what its signatures are).
const POLICY: &str = "this client must send instances signed by a trusted signer";

/// The refusals of instances under the signing policy, as one audit event of their own
/// (a store whose outcome is a refusal, its detail saying why) besides the request's.
/// A refusal that cannot be audited fails the request (500), as every unaudited access.
async fn audit_refusals(
    state: &AppState,
    from: &From,
    what: crate::audit::What,
) -> Result<(), Response> {
    let Some(auditor) = &state.auditor else {
        return Ok(());
    };
    let n: u32 = what
        .patients
        .iter()
        .flat_map(|p| &p.studies)
        .filter_map(|s| s.instances)
        .sum();
    let refused = crate::audit::Refused {
        token: false,
        why: format!("refused: {n} instance(s) without a valid signature from a trusted signer, which this client must send"),
    };
    let event = crate::audit::event_of(
        radveil_audit::Action::Store,
        from.caller.as_ref(),
        Some(&refused),
        Some(&what),
        StatusCode::FORBIDDEN,
        from.address.clone(),
    );
    auditor.append(event).await.map_err(|e| {
        tracing::error!(error = %e, "a refusal could not be audited: the request is refused");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the audit trail could not be written: the request is refused",
        )
    })
}

/// Whether the signing policy refused a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Passed,
    Refused,
}

/// Identifies a part, checks it against the token's scope and the request's study, and
/// (with integrity at ingest) examines it and applies the signing policy: one parse.
fn examine(
    state: &AppState,
    scope: &Scope,
    bytes: Bytes,
    study: Option<&str>,
    now: i64,
    required: bool,
) -> (Stage, Policy) {
    let mut policy = Policy::Passed;
    let stage = examine_part(state, scope, bytes, study, now, required, &mut policy);
    (stage, policy)
}

fn examine_part(
    state: &AppState,
    scope: &Scope,
    bytes: Bytes,
    study: Option<&str>,
    now: i64,
    required: bool,
    policy: &mut Policy,
) -> Stage {
    let ingest = state.ingest.as_ref();
    let examined = instance::identify_with(&bytes, |id, ds, enc| {
        ingest.map(|i| {
            let ts = &id.transfer_syntax;
            let examined =
                radveil_pipeline::ingest::examine(&bytes, ts, ds, enc, &i.settings, now, &i.budget);
            // The metadata copy from the same parse (the store would parse the bytes again).
            (examined, crate::ingest::MetadataCopy::of(id, ds, enc))
        })
    });
    let (id, examined, copy) = match examined {
        Ok((id, Some((e, c)))) => (id, Some(e), Some(c)),
        Ok((id, None)) => (id, None, None),
        Err(r) => return done(Stored::Failed(None, r)),
    };
    let failed = |id, reason, why: String| done(Stored::Failed(Some(id), Refusal { reason, why }));
    if !scope.sees(&state.store.patient(&id.patient_id, &id.issuer)) {
        return failed(
            id,
            crate::auth::NOT_AUTHORIZED,
            "the token may not store instances of this patient".into(),
        );
    }
    if study.is_some_and(|s| s != id.study) {
        return failed(
            id,
            instance::PROCESSING_FAILURE,
            "(0020,000D) differs from the study of the request".into(),
        );
    }
    let examined = match examined.transpose() {
        Ok(e) => e,
        Err(e) => {
            return failed(
                id,
                instance::PROCESSING_FAILURE,
                format!("cannot be checked for the ledger: {e}"),
            )
        }
    };
    if let (Some(i), Some(e)) = (ingest, &examined) {
        i.counters.count(e.status, &e.advisories);
        if required && e.status != SignatureStatus::Trusted {
            i.counters.refused();
            *policy = Policy::Refused;
            return failed(
                id,
                UNSIGNED_REFUSED,
                format!("{POLICY}; its signatures: {}", e.status),
            );
        }
    }
    let study = state.store.uid(Level::Study, &id.study);
    let series = state.store.uid(Level::Series, &id.series);
    Stage::Ready(Box::new(Ready {
        id,
        bytes,
        examined,
        copy,
        ledger_index: None,
        study,
        series,
    }))
}

/// Adds the series advisories: each examined part against its series' stored instances
/// (the search catalogue) and the parts of this request before it.
fn series_advisories(state: &AppState, stages: &mut [Stage]) {
    if state.ingest.is_none() {
        return;
    }
    let mut earlier: Vec<(Handle, Handle, radveil_pipeline::ingest::Geometry)> = Vec::new();
    for stage in stages.iter_mut() {
        let Stage::Ready(r) = stage else { continue };
        let Some(e) = &mut r.examined else { continue };
        let mut check = radveil_pipeline::ingest::SeriesCheck::new(&e.geometry);
        // A position each; the whole geometry only when needed.
        state
            .catalogue
            .check_series(&r.study, &r.series, &mut check);
        for (.., g) in earlier
            .iter()
            .filter(|(st, se, _)| *st == r.study && *se == r.series)
        {
            check.other(&g.position, || g.clone());
        }
        let found = check.advisories();
        if let Some(i) = &state.ingest {
            i.counters.count_advisories(&found);
        }
        e.advisories.extend(found);
        earlier.push((r.study, r.series, e.geometry.clone()));
    }
}

/// Appends the examined parts' observations to the ledger as one batch (durable before
/// anything is acknowledged). A part the ledger holds other bytes for is refused as a
/// duplicate while the store holds the instance; when the store does not (it was deleted),
/// it is a new version and is logged anew. When the ledger cannot be written, every
/// examined part is refused.
async fn log_to_ledger(state: &AppState, stages: &mut [Stage]) {
    let Some(ingest) = &state.ingest else { return };
    let ready = |s: &Stage| match s {
        Stage::Ready(r) => r.examined.as_ref().map(|e| e.observation.clone()),
        Stage::Done(_) => None,
    };
    let observations: Vec<_> = stages.iter().filter_map(ready).collect();
    let logged = ingest.log(observations, Changed::Refused).await;
    let mut outcomes: Vec<Result<Logged, Refusal>> = match logged {
        Ok(l) => l.into_iter().map(Ok).collect(),
        Err(e) => {
            tracing::error!(error = %e, "instances refused: the ledger could not be written");
            let refusal = Refusal {
                reason: instance::OUT_OF_RESOURCES,
                why: "the ledger could not be written".into(),
            };
            vec![Err(refusal); stages.iter().filter_map(ready).count()]
        }
    };
    // Other bytes for a logged instance: a new version when the store no longer holds it.
    let mut anew = Vec::new();
    for (at, r) in stages
        .iter()
        .filter_map(|s| match s {
            Stage::Ready(r) if r.examined.is_some() => Some(r),
            _ => None,
        })
        .enumerate()
    {
        if !matches!(outcomes.get(at), Some(Ok(Logged::Changed))) {
            continue;
        }
        let handle = state.store.uid(Level::Instance, &r.id.sop_instance);
        match state.store.instance_row(r.study, None, handle).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => anew.push(at),
            Err(e) => {
                tracing::error!(error = %e, "the store could not be read");
                outcomes[at] = Err(Refusal {
                    reason: instance::OUT_OF_RESOURCES,
                    why: "the store could not be read".into(),
                });
            }
        }
    }
    if !anew.is_empty() {
        let mut observations = stages.iter().filter_map(ready);
        let mut again = Vec::new();
        let mut last = 0;
        for &at in &anew {
            again.extend(observations.nth(at - last));
            last = at + 1;
        }
        match ingest.log(again, Changed::Logged).await {
            Ok(l) => {
                for (&at, logged) in anew.iter().zip(l) {
                    outcomes[at] = Ok(logged);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "instances refused: the ledger could not be written");
                for &at in &anew {
                    outcomes[at] = Err(Refusal {
                        reason: instance::OUT_OF_RESOURCES,
                        why: "the ledger could not be written".into(),
                    });
                }
            }
        }
    }
    let mut outcomes = outcomes.into_iter();
    for stage in stages.iter_mut() {
        let Stage::Ready(r) = stage else { continue };
        let Some(e) = &mut r.examined else { continue };
        let refusal = match outcomes.next() {
            Some(Ok(Logged::At(index, advisories))) => {
                ingest.counters.count_advisories(&advisories);
                e.advisories.extend(advisories);
                r.ledger_index = Some(index);
                continue;
            }
            Some(Ok(Logged::Changed)) => Refusal {
                reason: instance::DUPLICATE_SOP_INSTANCE,
                why: "the ledger holds other bytes for this SOP Instance UID (0008,0018), which is stored".into(),
            },
            Some(Err(refusal)) => refusal,
            None => Refusal {
                reason: instance::OUT_OF_RESOURCES,
                why: "the ledger could not be written".into(),
            },
        };
        let Stage::Ready(r) = std::mem::replace(stage, done(Stored::Failed(None, refusal.clone())))
        else {
            continue;
        };
        *stage = done(Stored::Failed(Some(r.id), refusal));
    }
}

/// Stores the request's ready parts as one batch ([`radveil_store::Store::put_many`]: one
/// blocking task, one index commit), then catalogues those stored; the results in the
/// order of `stages`.
async fn store_all(state: &AppState, stages: Vec<Stage>) -> Vec<Stored> {
    let mut ids = Vec::new();
    let mut payloads = Vec::new();
    let mut results: Vec<Option<Stored>> = Vec::with_capacity(stages.len());
    for stage in stages {
        match stage {
            Stage::Done(s) => results.push(Some(*s)),
            Stage::Ready(r) => {
                let (id, payload) = prepare(*r);
                ids.push((results.len(), id));
                payloads.push(payload);
                results.push(None);
            }
        }
    }
    let before = state.catalogue.mark();
    let puts = ids
        .iter()
        .zip(payloads)
        .map(|((_, id), (bytes, meta, metadata, sha256))| Put {
            ids: instance_ids(id),
            bytes,
            meta,
            metadata,
            sha256,
        })
        .collect();
    let outcomes = state.store.put_many(puts).await;
    for ((at, id), outcome) in ids.into_iter().zip(outcomes) {
        results[at] = Some(finish(state, id, outcome, before).await);
    }
    results.into_iter().flatten().collect()
}

/// What the store keeps of a part: its bytes, sealed-attribute JSON and metadata copy, and
/// the SHA-256 digest of its bytes when ingest computed it for the ledger (the store need
/// not hash the bytes again).
type Payload = (Bytes, Vec<u8>, Option<Vec<u8>>, Option<[u8; 32]>);

/// The 32 bytes of a SHA-256 digest written as 64 hexadecimal digits (as the ledger's
/// observations hold it); `None` for anything else.
fn digest_of_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (b, pair) in d.iter_mut().zip(hex.chunks_exact(2)) {
        *b = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(d)
}

/// A ready part's identification (its attributes annotated with what ingest found), bytes,
/// sealed-attribute JSON, metadata copy and digest, for the store.
fn prepare(ready: Ready) -> (Identified, Payload) {
    let Ready {
        mut id,
        bytes,
        examined,
        copy,
        ledger_index,
        ..
    } = ready;
    if let Some(e) = &examined {
        crate::ingest::annotate(
            &mut id.attributes,
            e.status,
            e.signer.as_deref(),
            ledger_index,
            &e.advisories,
            &e.geometry,
        );
    }
    // The QIDO attributes (SOP Class and Transfer Syntax among them, and what ingest
    // found), sealed by the store.
    let meta = crate::dicom_json::attrs_to_json(&id.attributes)
        .to_string()
        .into_bytes();
    let copy = copy.map(|c| c.with_block(&id.attributes));
    // The ledger's observation hashed these very bytes.
    let sha256 = examined
        .as_ref()
        .and_then(|e| digest_of_hex(&e.observation.sha256));
    (id, (bytes, meta, copy, sha256))
}

fn instance_ids(id: &Identified) -> InstanceIds<'_> {
    InstanceIds {
        patient_id: &id.patient_id,
        issuer: &id.issuer,
        study: &id.study,
        series: &id.series,
        instance: &id.sop_instance,
    }
}

/// What storing one part came to; a stored instance joins the catalogue.
async fn finish(
    state: &AppState,
    id: Identified,
    outcome: Result<PutOutcome, StoreError>,
    before: crate::qido::Mark,
) -> Stored {
    match outcome {
        Ok(PutOutcome::Stored) => {
            let handles = state.store.handles(&instance_ids(&id));
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
fn store_response(
    state: &AppState,
    headers: &HeaderMap,
    study: Option<&str>,
    results: &[Stored],
) -> Response {
    use radveil_standard::tags;
    let base = base_url(state, headers);
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
                // Why, in words (naming tags, never values), in radveil's private block.
                item.insert(tag_key(crate::ingest::PRIVATE_CREATOR), attr("LO", vec![json!(crate::ingest::CREATOR)]));
                item.insert(tag_key(crate::ingest::FAILURE_DETAIL), attr("LT", vec![json!(why.why)]));
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

/// Stores instances the gateway made itself (the portal's accepted uploads, reconciled to
/// their patient) through the STOW-RS path: each parsed once, examined (signatures, binding
/// hash, advisories against its series), logged to the ledger in one batch, stored in one
/// batch ([`radveil_store::Store::put_many`]) and catalogued. No client sent them, so no
/// client's signing policy applies; only instances of a patient `scope` sees are stored.
/// Results in the order of `bodies`.
pub(crate) async fn store_made(state: &AppState, scope: Scope, bodies: Vec<Bytes>) -> Vec<Stored> {
    let n = bodies.len();
    let parts = bodies
        .into_iter()
        .map(|body| multipart::Part {
            content_type: None,
            disposition: None,
            body,
        })
        .collect();
    let work = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || examine_parts(&state, scope, parts, None, false))
    };
    let Ok((mut stages, _)) = work.await else {
        tracing::error!("examining instances to store failed");
        let failed = Refusal {
            reason: instance::OUT_OF_RESOURCES,
            why: "the instances could not be examined".into(),
        };
        return (0..n)
            .map(|_| Stored::Failed(None, failed.clone()))
            .collect();
    };
    log_to_ledger(state, &mut stages).await;
    let results = store_all(state, stages).await;
    let stored = results
        .iter()
        .filter(|r| matches!(r, Stored::Ok(_)))
        .count();
    state.metrics.stored(stored, results.len() - stored);
    results
}

#[cfg(test)]
mod digest_tests {
    use super::digest_of_hex;

    /// The ledger's hexadecimal SHA-256 reaches the store as the same 32 bytes; anything
    /// else is no digest (the store then hashes the bytes itself).
    #[test]
    fn a_hex_digest_is_read_as_its_bytes_and_nothing_else_is() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let d = digest_of_hex(abc).unwrap();
        assert_eq!(d[0], 0xba);
        assert_eq!(d[31], 0xad);
        assert_eq!(digest_of_hex(&abc.to_uppercase()), Some(d));
        for bad in [
            "",
            &abc[..62],
            &format!("{abc}00"),
            &abc.replace('b', "g"),
            &"é".repeat(32),
        ] {
            assert_eq!(digest_of_hex(bad), None, "{bad:?}");
        }
    }
}
