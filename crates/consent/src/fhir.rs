//! FHIR R4 `Consent` in and out.
//!
//! A version is written as a Consent of scope `consentscope#research`, category LOINC
//! 59284-0 (Patient Consent), the patient as a Reference by identifier (the Patient ID as
//! value; the issuer as `urn:oid:` system when it is an OID, else as the assigner's
//! display), `policyRule` v3-ActCode `OPTIN`/`OPTOUT` after the site default, and a
//! provision whose nested provisions are the choices, one per purpose, each with its
//! purpose of use, the date it was given or withdrawn as `period.start`, and its
//! `dataPeriod`. `meta.versionId` is the version, `meta.lastUpdated` when it was recorded.
//!
//! Purposes of use: research is HL7 v3 ActReason `HRESCH`, AI training v3 ActReason
//! `MLTRAINING` (machine learning training, THO 4.0.0 and later). The vocabulary has no code
//! for commercial use, so the site code system `urn:radveil:purpose` is used: its codes are
//! `research`, `ai-training` and `commercial` (all three accepted in input, `commercial`
//! written).
//!
//! A `dataPeriod` end given as a year or a month stands for its first (start) or last (end)
//! day; one given as a dateTime stands for its date (the time and zone are not used: study
//! dates have none).
//!
//! Parsing is strict and bounded: the body at most [`MAX_BODY`] bytes, JSON nesting as
//! `serde_json` bounds it, only the elements of R4 Consent, and whatever this service would
//! not enforce as written (a provision by actor, action, class, code or data, a nested
//! provision below a choice, a modifier extension, an unknown purpose code) refused with
//! 422 rather than half-applied. Messages name elements, never values.

use serde_json::{json, Map, Value};

use crate::{
    is_dicom_date, is_fhir_id, Consent, DataPeriod, Defaults, Draft, DraftChoice, PatientId,
    Policy, Purpose, Status,
};

/// Largest Consent body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Most nested provisions (choices) in a Consent.
pub const MAX_PROVISIONS: usize = 16;

/// The media type of FHIR JSON.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Consent scope code system.
pub const CONSENT_SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// HL7 v3 ActCode (OPTIN, OPTOUT).
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// HL7 v3 ActReason (purposes of use).
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// The site code system of purposes the HL7 vocabulary lacks (and of all three, in input).
pub const SITE_PURPOSE: &str = "urn:radveil:purpose";

/// A Consent body that is refused: the HTTP status (400 not a Consent, 422 a Consent this
/// service does not take) and why, naming elements, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct Invalid {
    /// 400 or 422.
    pub status: u16,
    /// Why.
    pub why: String,
}

pub(crate) fn bad(why: impl Into<String>) -> Invalid {
    Invalid {
        status: 400,
        why: why.into(),
    }
}

pub(crate) fn unprocessable(why: impl Into<String>) -> Invalid {
    Invalid {
        status: 422,
        why: why.into(),
    }
}

/// The coding of `purpose`.
pub fn purpose_coding(purpose: Purpose) -> Value {
    match purpose {
        Purpose::Research => {
            json!({"system": ACT_REASON, "code": "HRESCH", "display": "healthcare research"})
        }
        Purpose::AiTraining => {
            json!({"system": ACT_REASON, "code": "MLTRAINING", "display": "machine learning training"})
        }
        Purpose::Commercial => {
            json!({"system": SITE_PURPOSE, "code": "commercial", "display": "commercial use"})
        }
    }
}

/// The purpose of a coding, `None` when it is none this service knows.
pub fn purpose_of(system: &str, code: &str) -> Option<Purpose> {
    match (system, code) {
        (ACT_REASON, "HRESCH") => Some(Purpose::Research),
        (ACT_REASON, "MLTRAINING") => Some(Purpose::AiTraining),
        (SITE_PURPOSE, c) => c.parse().ok(),
        _ => None,
    }
}

fn is_oid(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'))
        })
}

/// The patient as a FHIR Reference by identifier.
pub fn patient_reference(p: &PatientId) -> Value {
    let mut identifier = json!({"value": p.id});
    if is_oid(&p.issuer) {
        identifier["system"] = json!(format!("urn:oid:{}", p.issuer));
    } else if !p.issuer.is_empty() {
        identifier["assigner"] = json!({"display": p.issuer});
    }
    json!({"identifier": identifier})
}

/// A DICOM date (YYYYMMDD) as a FHIR date.
fn fhir_date(d: &str) -> String {
    match (d.get(0..4), d.get(4..6), d.get(6..8)) {
        (Some(y), Some(m), Some(dd)) => format!("{y}-{m}-{dd}"),
        _ => d.to_string(),
    }
}

/// `c` as a FHIR R4 Consent, under the site `defaults`.
pub fn to_fhir(c: &Consent, defaults: &Defaults) -> Value {
    let mut v = json!({
        "resourceType": "Consent",
        "id": c.id,
        "meta": {"versionId": c.version.to_string(), "lastUpdated": c.recorded},
        "status": c.status.as_str(),
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "research", "display": "Research"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": patient_reference(&c.patient),
        "dateTime": c.date_time,
    });
    v["policyRule"] = match defaults.common() {
        Some(Policy::OptIn) => {
            json!({"coding": [{"system": ACT_CODE, "code": "OPTIN", "display": "opt-in"}]})
        }
        Some(Policy::OptOut) => {
            json!({"coding": [{"system": ACT_CODE, "code": "OPTOUT", "display": "opt-out"}]})
        }
        None => json!({"text": format!(
            "site defaults: research {}, ai-training {}, commercial {}",
            defaults.research.as_str(), defaults.ai_training.as_str(), defaults.commercial.as_str()
        )}),
    };
    let mut provision = Map::new();
    let base = c.base.or_else(|| defaults.common().map(Policy::permits));
    if let Some(b) = base {
        provision.insert("type".into(), json!(if b { "permit" } else { "deny" }));
    }
    let nested: Vec<Value> = c
        .choices
        .iter()
        .map(|ch| {
            let mut p = json!({
                "type": if ch.permitted { "permit" } else { "deny" },
                "period": {"start": ch.since},
                "purpose": [purpose_coding(ch.purpose)],
            });
            if let Some(dp) = &ch.data_period {
                let mut period = Map::new();
                if let Some(s) = &dp.start {
                    period.insert("start".into(), json!(fhir_date(s)));
                }
                if let Some(e) = &dp.end {
                    period.insert("end".into(), json!(fhir_date(e)));
                }
                p["dataPeriod"] = Value::Object(period);
            }
            p
        })
        .collect();
    if !nested.is_empty() {
        provision.insert("provision".into(), Value::Array(nested));
    }
    if !provision.is_empty() {
        v["provision"] = Value::Object(provision);
    }
    v
}

/// A FHIR R4 Bundle of `kind` (`searchset`, `history`) holding `resources`.
pub fn bundle(kind: &str, resources: Vec<Value>) -> Value {
    let total = resources.len();
    let entry: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let mut e = json!({"resource": r});
            if kind == "searchset" {
                e["search"] = json!({"mode": "match"});
            } else if kind == "history" {
                let url = format!("Consent/{}", e["resource"]["id"].as_str().unwrap_or(""));
                e["request"] = json!({"method": "PUT", "url": url});
                e["response"] = json!({"status": "200"});
            }
            e
        })
        .collect();
    let mut b = json!({"resourceType": "Bundle", "type": kind, "total": total});
    if !entry.is_empty() {
        b["entry"] = Value::Array(entry);
    }
    b
}

/// A FHIR OperationOutcome with one issue: `code` from the IssueType value set (`invalid`,
/// `not-found`, `forbidden`, `conflict`, `exception`...) and `why` as diagnostics.
pub fn operation_outcome(code: &str, why: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": why}],
    })
}

/// Whether `s` is a FHIR date or dateTime (a year, year-month, date, or date and time to
/// the second with a time zone), the date existing.
pub fn is_date_time(s: &str) -> bool {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let Some((_, _, full)) = date_bounds(date) else {
        return false;
    };
    match time {
        None => true,
        Some(t) => full && is_time_with_zone(t),
    }
}

/// `hh:mm:ss(.f+)?(Z|±hh:mm)`.
fn is_time_with_zone(t: &str) -> bool {
    let digits = |s: &str, max: u32| {
        s.len() == 2
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u32>().is_ok_and(|n| n <= max)
    };
    let (clock, zone) = if let Some(c) = t.strip_suffix('Z') {
        (c, None)
    } else if t.len() > 6
        && (t.as_bytes()[t.len() - 6] == b'+' || t.as_bytes()[t.len() - 6] == b'-')
    {
        (&t[..t.len() - 6], Some(&t[t.len() - 5..]))
    } else {
        return false;
    };
    if let Some(z) = zone {
        let ok = z.len() == 5
            && z.as_bytes()[2] == b':'
            && ((digits(&z[0..2], 13) && digits(&z[3..5], 59)) || z == "14:00");
        if !ok {
            return false;
        }
    }
    let (hms, frac) = match clock.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (clock, None),
    };
    if frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let b = hms.as_bytes();
    b.len() == 8
        && b[2] == b':'
        && b[5] == b':'
        && digits(&hms[0..2], 23)
        && digits(&hms[3..5], 59)
        && digits(&hms[6..8], 60)
}

/// The first and last DICOM dates of a FHIR date (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`), and
/// whether it was a full date.
fn date_bounds(d: &str) -> Option<(String, String, bool)> {
    let parts: Vec<&str> = d.split('-').collect();
    let num = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let year = num(parts.first()?, 4)?;
    if year == 0 {
        return None;
    }
    match parts.as_slice() {
        [_] => Some((format!("{year:04}0101"), format!("{year:04}1231"), false)),
        [_, m] => {
            let m = num(m, 2)?;
            let last = radveil_standard::civil::days_in_month(i64::from(year), m)?;
            Some((
                format!("{year:04}{m:02}01"),
                format!("{year:04}{m:02}{last:02}"),
                false,
            ))
        }
        [_, m, dd] => {
            let (m, dd) = (num(m, 2)?, num(dd, 2)?);
            let s = format!("{year:04}{m:02}{dd:02}");
            is_dicom_date(&s).then(|| (s.clone(), s, true))
        }
        _ => None,
    }
}

pub(crate) fn obj<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Invalid> {
    v.as_object()
        .ok_or_else(|| bad(format!("{at}: an object expected")))
}

pub(crate) fn string<'a>(v: &'a Value, at: &str) -> Result<&'a str, Invalid> {
    v.as_str()
        .ok_or_else(|| bad(format!("{at}: a string expected")))
}

pub(crate) fn array<'a>(v: &'a Value, at: &str) -> Result<&'a Vec<Value>, Invalid> {
    v.as_array()
        .ok_or_else(|| bad(format!("{at}: an array expected")))
}

/// Refuses names outside `known` (400: not R4) and inside `refused` (422: R4, but not
/// something this service enforces).
pub(crate) fn only(
    m: &Map<String, Value>,
    at: &str,
    known: &[&str],
    refused: &[&str],
) -> Result<(), Invalid> {
    for k in m.keys() {
        let k = k.as_str();
        if refused.contains(&k) {
            return Err(unprocessable(format!(
                "{at}.{k} is not supported: this service could not enforce it"
            )));
        }
        if !known.contains(&k) {
            return Err(bad(format!("{at}: unknown element (not FHIR R4 Consent)")));
        }
    }
    Ok(())
}

/// A FHIR Period read as DICOM dates, both ends included.
fn data_period(v: &Value, at: &str) -> Result<DataPeriod, Invalid> {
    let m = obj(v, at)?;
    only(m, at, &["id", "extension", "start", "end"], &[])?;
    let end = |key: &str, first: bool| -> Result<Option<String>, Invalid> {
        let Some(v) = m.get(key) else { return Ok(None) };
        let s = string(v, &format!("{at}.{key}"))?;
        let date = s.split_once('T').map_or(s, |(d, _)| d);
        if !is_date_time(s) {
            return Err(bad(format!("{at}.{key}: not a FHIR dateTime")));
        }
        let (lo, hi, _) =
            date_bounds(date).ok_or_else(|| bad(format!("{at}.{key}: not a date")))?;
        Ok(Some(if first { lo } else { hi }))
    };
    let p = DataPeriod {
        start: end("start", true)?,
        end: end("end", false)?,
    };
    if let (Some(s), Some(e)) = (&p.start, &p.end) {
        if s > e {
            return Err(unprocessable(format!("{at}: ends before it starts")));
        }
    }
    if p.start.is_none() && p.end.is_none() {
        return Err(unprocessable(format!("{at}: neither start nor end")));
    }
    Ok(p)
}

fn provision_type(m: &Map<String, Value>, at: &str) -> Result<Option<bool>, Invalid> {
    match m.get("type") {
        None => Ok(None),
        Some(v) => match string(v, &format!("{at}.type"))? {
            "permit" => Ok(Some(true)),
            "deny" => Ok(Some(false)),
            _ => Err(bad(format!("{at}.type: permit or deny expected"))),
        },
    }
}

/// The JSON object of a resource of type `kind`.
pub(crate) fn resource<'a>(v: &'a Value, kind: &str) -> Result<&'a Map<String, Value>, Invalid> {
    let m = obj(v, kind)?;
    if m.get("resourceType").and_then(Value::as_str) != Some(kind) {
        return Err(bad(format!("resourceType: {kind} expected")));
    }
    Ok(m)
}

/// A resource's logical `id`, if it has one (a FHIR id).
pub(crate) fn logical_id(m: &Map<String, Value>) -> Result<Option<String>, Invalid> {
    let Some(v) = m.get("id") else {
        return Ok(None);
    };
    let s = string(v, "id")?;
    if !is_fhir_id(s) {
        return Err(bad("id: not a FHIR id"));
    }
    Ok(Some(s.to_string()))
}

/// The elements of a FHIR R4 Identifier.
pub(crate) const IDENTIFIER_KEYS: &[&str] = &[
    "id",
    "extension",
    "use",
    "type",
    "system",
    "value",
    "period",
    "assigner",
];
/// The elements of a FHIR R4 Reference.
pub(crate) const REFERENCE_KEYS: &[&str] = &[
    "id",
    "extension",
    "reference",
    "type",
    "identifier",
    "display",
];

/// The Patient ID and issuer of the Reference `v` (the element `at`, like `patient`).
pub(crate) fn patient_at(v: &Value, at: &str) -> Result<PatientId, Invalid> {
    let m = obj(v, at)?;
    only(m, at, REFERENCE_KEYS, &[])?;
    if m.contains_key("reference") {
        return Err(unprocessable(format!(
            "{at}: give the patient by identifier (Patient ID and issuer), not by reference"
        )));
    }
    let ident = m
        .get("identifier")
        .ok_or_else(|| unprocessable(format!("{at}.identifier is required")))?;
    let at_id = format!("{at}.identifier");
    let im = obj(ident, &at_id)?;
    only(im, &at_id, IDENTIFIER_KEYS, &[])?;
    let value = string(
        im.get("value")
            .ok_or_else(|| unprocessable(format!("{at_id}.value is required")))?,
        &format!("{at_id}.value"),
    )?;
    let from_system = match im.get("system") {
        None => None,
        Some(s) => {
            let s = string(s, &format!("{at_id}.system"))?;
            Some(match s.strip_prefix("urn:oid:") {
                Some(oid) if is_oid(oid) => oid.to_string(),
                _ => s.to_string(),
            })
        }
    };
    let from_assigner = match im.get("assigner") {
        None => None,
        Some(a) => {
            let am = obj(a, &format!("{at_id}.assigner"))?;
            match am.get("display") {
                None => None,
                Some(d) => Some(string(d, &format!("{at_id}.assigner.display"))?.to_string()),
            }
        }
    };
    let issuer = match (from_system, from_assigner) {
        (Some(s), Some(a)) if s != a => {
            return Err(unprocessable(format!(
                "{at_id}: system and assigner name different issuers"
            )))
        }
        (Some(s), _) => s,
        (None, Some(a)) => a,
        (None, None) => String::new(),
    };
    let p = PatientId {
        id: value.trim_matches([' ', '\0']).to_string(),
        issuer: issuer.trim_matches([' ', '\0']).to_string(),
    };
    let lo = |s: &str| s.chars().count() <= 64 && !s.chars().any(|c| c.is_control() || c == '\\');
    if p.id.is_empty() || !lo(&p.id) || !lo(&p.issuer) {
        return Err(unprocessable(format!(
            "{at_id}: a Patient ID and issuer of at most 64 characters, no backslash or control character"
        )));
    }
    Ok(p)
}

/// Whether the CodeableConcept `v` has the coding `system`#`code`.
fn has_coding(v: &Value, system: &str, code: &str) -> bool {
    v.get("coding").and_then(Value::as_array).is_some_and(|cs| {
        cs.iter().any(|c| {
            c.get("system").and_then(Value::as_str) == Some(system)
                && c.get("code").and_then(Value::as_str) == Some(code)
        })
    })
}

/// Parses a FHIR R4 Consent body into a [`Draft`] (its `id`, if any, checked as a FHIR
/// id; the caller compares it with the URL's).
pub fn parse(body: &[u8]) -> Result<Draft, Invalid> {
    if body.len() > MAX_BODY {
        return Err(Invalid {
            status: 413,
            why: format!("a Consent is at most {MAX_BODY} bytes"),
        });
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    let m = resource(&v, "Consent")?;
    only(
        m,
        "Consent",
        &[
            "resourceType",
            "id",
            "meta",
            "implicitRules",
            "language",
            "text",
            "contained",
            "extension",
            "identifier",
            "status",
            "scope",
            "category",
            "patient",
            "dateTime",
            "performer",
            "organization",
            "sourceAttachment",
            "sourceReference",
            "policy",
            "policyRule",
            "verification",
            "provision",
            "_status",
            "_dateTime",
            "_language",
            "_implicitRules",
        ],
        &["modifierExtension", "implicitRules"],
    )?;
    let id = logical_id(m)?;
    let status = match m.get("status").map(|s| string(s, "status")).transpose()? {
        Some("active") => Status::Active,
        Some("inactive") => Status::Inactive,
        Some("rejected") => Status::Rejected,
        Some("draft" | "proposed" | "entered-in-error") => {
            return Err(unprocessable(
                "status: active, inactive or rejected expected",
            ))
        }
        Some(_) => return Err(bad("status: not a Consent status")),
        None => return Err(unprocessable("status is required")),
    };
    let scope = m.get("scope").ok_or_else(|| bad("scope is required"))?;
    obj(scope, "scope")?;
    if !has_coding(scope, CONSENT_SCOPE, "research") {
        return Err(unprocessable(
            "scope: consentscope#research expected (this service records research consent)",
        ));
    }
    let category = array(
        m.get("category")
            .ok_or_else(|| bad("category is required"))?,
        "category",
    )?;
    if category.is_empty() {
        return Err(bad("category: at least one expected"));
    }
    let patient = patient_at(
        m.get("patient")
            .ok_or_else(|| unprocessable("patient is required"))?,
        "patient",
    )?;
    let date_time = match m.get("dateTime") {
        None => None,
        Some(v) => {
            let s = string(v, "dateTime")?;
            if !is_date_time(s) {
                return Err(bad("dateTime: not a FHIR dateTime"));
            }
            Some(s.to_string())
        }
    };
    let mut base = None;
    let mut choices: Vec<DraftChoice> = Vec::new();
    if let Some(p) = m.get("provision") {
        let pm = obj(p, "provision")?;
        only(
            pm,
            "provision",
            &["id", "extension", "type", "provision"],
            &[
                "modifierExtension",
                "period",
                "actor",
                "action",
                "securityLabel",
                "purpose",
                "class",
                "code",
                "dataPeriod",
                "data",
            ],
        )?;
        base = provision_type(pm, "provision")?;
        if let Some(nested) = pm.get("provision") {
            let nested = array(nested, "provision.provision")?;
            if nested.len() > MAX_PROVISIONS {
                return Err(unprocessable(format!(
                    "provision.provision: at most {MAX_PROVISIONS}"
                )));
            }
            for (i, n) in nested.iter().enumerate() {
                let at = format!("provision.provision[{i}]");
                let nm = obj(n, &at)?;
                only(
                    nm,
                    &at,
                    &["id", "extension", "type", "period", "purpose", "dataPeriod"],
                    &[
                        "modifierExtension",
                        "actor",
                        "action",
                        "securityLabel",
                        "class",
                        "code",
                        "data",
                        "provision",
                    ],
                )?;
                let permitted = provision_type(nm, &at)?
                    .ok_or_else(|| unprocessable(format!("{at}.type is required")))?;
                let since = match nm.get("period") {
                    None => None,
                    Some(pv) => {
                        let pm = obj(pv, &format!("{at}.period"))?;
                        only(
                            pm,
                            &format!("{at}.period"),
                            &["id", "extension", "start", "end"],
                            &[],
                        )?;
                        match pm.get("start") {
                            None => None,
                            Some(s) => {
                                let s = string(s, &format!("{at}.period.start"))?;
                                if !is_date_time(s) {
                                    return Err(bad(format!(
                                        "{at}.period.start: not a FHIR dateTime"
                                    )));
                                }
                                Some(s.to_string())
                            }
                        }
                    }
                };
                let data_period = nm
                    .get("dataPeriod")
                    .map(|d| data_period(d, &format!("{at}.dataPeriod")))
                    .transpose()?;
                let purposes = array(
                    nm.get("purpose")
                        .ok_or_else(|| unprocessable(format!("{at}.purpose is required")))?,
                    &format!("{at}.purpose"),
                )?;
                if purposes.is_empty() {
                    return Err(unprocessable(format!("{at}.purpose is required")));
                }
                for (j, c) in purposes.iter().enumerate() {
                    let cat = format!("{at}.purpose[{j}]");
                    let cm = obj(c, &cat)?;
                    let system = cm.get("system").and_then(Value::as_str).unwrap_or("");
                    let code = cm.get("code").and_then(Value::as_str).unwrap_or("");
                    let purpose = purpose_of(system, code).ok_or_else(|| {
                        unprocessable(format!(
                            "{cat}: unknown purpose of use (v3-ActReason HRESCH or MLTRAINING, or {SITE_PURPOSE} research, ai-training or commercial)"
                        ))
                    })?;
                    if choices.iter().any(|c| c.purpose == purpose) {
                        return Err(unprocessable(format!(
                            "{cat}: a second provision for the same purpose"
                        )));
                    }
                    choices.push(DraftChoice {
                        purpose,
                        permitted,
                        since: since.clone(),
                        data_period: data_period.clone(),
                    });
                }
            }
        }
    }
    choices.sort_by_key(|c| c.purpose);
    Ok(Draft {
        id,
        patient,
        status,
        date_time,
        base,
        choices,
    })
}
