//! FHIR R4 AuditEvent resources following IHE Basic Audit Log Patterns (BALP): one
//! AuditEvent per patient touched (an event touching no patient gives one without a patient
//! entity). DICOMweb requests are RESTful operations: `type` is `rest`, `subtype` the
//! RESTful interaction (`create` for STOW-RS, `read` for WADO-RS, `search` for QIDO-RS,
//! `delete`), with BALP's Patient* profiles when a patient is named. A refused token is a
//! DICOM Security Alert (Use of Restricted Function); a break-glass access carries the
//! purpose ETREAT, the code BTG and its reason.

use base64::Engine;
use serde_json::{json, Value};

use crate::event::{Action, Event, PatientAccess, PurposeOfUse, StudyRef};

/// The DICOM code system (DCM).
pub const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const USER_AGENT: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const BALP: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.";

/// Who records the events (the audit source).
#[derive(Debug, Clone)]
pub struct Source {
    /// The audit source's identity (the gateway, e.g. `radveil@host`).
    pub id: String,
    /// The enterprise site, when configured.
    pub site: Option<String>,
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

/// The type and subtype codings and the BALP profile name (without the `Patient` prefix).
fn kind(action: Action) -> (Value, Value, &'static str) {
    let rest = coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation");
    match action {
        Action::Store => (rest, coding(RESTFUL, "create", "create"), "Create"),
        Action::Retrieve => (rest, coding(RESTFUL, "read", "read"), "Read"),
        Action::Query => (rest, coding(RESTFUL, "search", "search"), "Query"),
        Action::Delete => (rest, coding(RESTFUL, "delete", "delete"), "Delete"),
        Action::AuditRead => (rest, coding(RESTFUL, "search", "search"), "Query"),
        Action::ConsentChange | Action::CareTeamChange => {
            (rest, coding(RESTFUL, "update", "update"), "Update")
        }
        Action::Share => (rest, coding(RESTFUL, "create", "create"), "Create"),
        Action::Export => (
            coding(DCM, "110106", "Export"),
            coding(DCM, "110106", "Export"),
            "",
        ),
        Action::Upload => (
            coding(DCM, "110107", "Import"),
            coding(DCM, "110107", "Import"),
            "",
        ),
        Action::TokenRefused => (
            coding(DCM, "110113", "Security Alert"),
            coding(DCM, "110132", "Use of Restricted Function"),
            "",
        ),
    }
}

fn purpose(p: PurposeOfUse) -> Value {
    json!({"coding": [coding(PurposeOfUse::SYSTEM, p.code(), &p.to_string())]})
}

fn network(address: &str) -> Value {
    // 2: IP address; 1: machine name.
    let kind = if address.parse::<std::net::IpAddr>().is_ok() {
        "2"
    } else {
        "1"
    };
    json!({"address": address, "type": kind})
}

fn agents(e: &Event, source: &Source) -> Vec<Value> {
    let mut out = Vec::new();
    let a = &e.actor;
    let mut user = json!({
        "type": {"coding": [coding(USER_AGENT, "UserOauthAgent", "User OAuth Agent participant")]},
        "requestor": true,
    });
    let mut who = serde_json::Map::new();
    if let Some(s) = &a.subject {
        who.insert("identifier".into(), json!({"value": s}));
    }
    if let Some(n) = &a.name {
        who.insert("display".into(), json!(n));
    }
    if who.is_empty() {
        who.insert("display".into(), json!("unauthenticated"));
    }
    user["who"] = Value::Object(who);
    if let Some(c) = &a.client {
        user["altId"] = json!(c);
    }
    if let Some(r) = a.role {
        user["role"] = json!([{"text": r.to_string()}]);
    }
    if let Some(p) = e.purpose {
        user["purposeOfUse"] = json!([purpose(p)]);
    }
    if let Some(addr) = &a.address {
        user["network"] = network(addr);
    }
    out.push(user);
    // The client is the Source Role ID and the server the Destination Role ID, as DICOM and
    // BALP have it for every RESTful operation.
    let mut client = json!({
        "type": {"coding": [coding(DCM, "110153", "Source Role ID")]},
        "who": {"display": a.client.as_deref().unwrap_or("client")},
        "requestor": false,
    });
    if let Some(addr) = &a.address {
        client["network"] = network(addr);
    }
    out.push(client);
    out.push(json!({
        "type": {"coding": [coding(DCM, "110152", "Destination Role ID")]},
        "who": {"display": source.id},
        "requestor": false,
    }));
    out
}

fn patient_entity(p: &PatientAccess) -> Value {
    let mut identifier = json!({"value": p.id});
    if let Some(i) = &p.issuer {
        identifier["assigner"] = json!({"display": i});
    }
    let mut what = json!({"type": "Patient", "identifier": identifier});
    if let Some(n) = &p.name {
        what["display"] = json!(n);
    }
    json!({
        "what": what,
        "type": coding(ENTITY_TYPE, "1", "Person"),
        "role": coding(OBJECT_ROLE, "1", "Patient"),
    })
}

fn study_entity(s: &StudyRef) -> Value {
    let mut detail = Vec::new();
    let mut add = |t: &str, v: &Option<String>| {
        if let Some(v) = v {
            detail.push(json!({"type": t, "valueString": v}));
        }
    };
    add("SeriesInstanceUID", &s.series);
    add("SOPInstanceUID", &s.instance);
    add("ModalitiesInStudy", &s.modality);
    add("StudyDate", &s.date);
    add("StudyDescription", &s.description);
    if let Some(n) = s.instances {
        detail.push(json!({"type": "NumberOfInstances", "valueString": n.to_string()}));
    }
    let mut v = json!({
        "what": {
            "type": "ImagingStudy",
            "identifier": {"system": "urn:dicom:uid", "value": format!("urn:oid:{}", s.uid)},
        },
        "type": coding(ENTITY_TYPE, "2", "System Object"),
        "role": coding(OBJECT_ROLE, "3", "Report"),
    });
    if !detail.is_empty() {
        v["detail"] = Value::Array(detail);
    }
    v
}

/// The AuditEvents of one event: one per patient touched (`only`, when given, keeps the
/// one of that patient: an export for one patient shows nothing of the others). `index` is
/// the event's position in the log, used in the resource ids.
pub fn audit_events(
    e: &Event,
    index: u64,
    source: &Source,
    only: Option<&dyn Fn(&PatientAccess) -> bool>,
) -> Vec<Value> {
    let (ty, subtype, profile) = kind(e.action);
    let mut base = json!({
        "resourceType": "AuditEvent",
        "type": ty,
        "subtype": [subtype],
        "action": e.action.action_code(),
        "recorded": e.time,
        "outcome": e.outcome.code(),
        "agent": agents(e, source),
        "source": {
            "observer": {"display": source.id},
            "type": [coding(SOURCE_TYPE, "4", "Application Server")],
        },
    });
    if let Some(site) = &source.site {
        base["source"]["site"] = json!(site);
    }
    if let Some(d) = &e.detail {
        base["outcomeDesc"] = json!(d);
    }
    let mut purposes = Vec::new();
    if let Some(p) = e.purpose {
        purposes.push(purpose(p));
    }
    if let Some(reason) = &e.break_glass {
        purposes.push(json!({
            "coding": [coding(ACT_CODE, "BTG", "break the glass")],
            "text": reason,
        }));
    }
    if !purposes.is_empty() {
        base["purposeOfEvent"] = Value::Array(purposes);
    }
    let mut common = Vec::new();
    if let Some(q) = &e.query {
        common.push(json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "24", "Query"),
            "query": base64::engine::general_purpose::STANDARD.encode(q),
        }));
    }
    let patients: Vec<(usize, &PatientAccess)> = e
        .patients
        .iter()
        .enumerate()
        .filter(|(_, p)| only.is_none_or(|f| f(p)))
        .collect();
    let with_profile = |v: &mut Value, name: String| {
        if !profile.is_empty() {
            v["meta"] = json!({"profile": [format!("{BALP}{name}")]});
        }
    };
    if patients.is_empty() {
        if only.is_some() && !e.patients.is_empty() {
            return Vec::new();
        }
        let mut v = base;
        v["id"] = json!(format!("radveil-audit-{index}"));
        with_profile(&mut v, profile.to_string());
        if !common.is_empty() {
            v["entity"] = Value::Array(common);
        }
        return vec![v];
    }
    patients
        .into_iter()
        .map(|(n, p)| {
            let mut v = base.clone();
            v["id"] = json!(format!("radveil-audit-{index}-{n}"));
            with_profile(&mut v, format!("Patient{profile}"));
            let mut entity = vec![patient_entity(p)];
            entity.extend(p.studies.iter().map(study_entity));
            entity.extend(common.iter().cloned());
            v["entity"] = Value::Array(entity);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    fn source() -> Source {
        Source {
            id: "radveil@test".into(),
            site: None,
        }
    }

    fn codes(v: &Value) -> (String, String) {
        (
            v["type"]["code"].as_str().unwrap().to_string(),
            v["subtype"][0]["code"].as_str().unwrap().to_string(),
        )
    }

    #[test]
    fn one_audit_event_per_patient_with_balp_codes() {
        let events = sample::events();
        // The search touched two patients: two AuditEvents, each naming one.
        let q = audit_events(&events[2], 2, &source(), None);
        assert_eq!(q.len(), 2);
        for (v, id) in q.iter().zip(["PAT-JANE-0042", "PAT-JOHN-0077"]) {
            assert_eq!(v["resourceType"], "AuditEvent");
            assert_eq!(codes(v), ("rest".into(), "search".into()));
            assert_eq!(v["action"], "E");
            assert_eq!(
                v["meta"]["profile"][0],
                format!("{BALP}PatientQuery").as_str()
            );
            let ent = v["entity"].as_array().unwrap();
            let patients: Vec<&Value> = ent.iter().filter(|e| e["role"]["code"] == "1").collect();
            assert_eq!(patients.len(), 1);
            assert_eq!(patients[0]["what"]["identifier"]["value"], id);
            assert_eq!(patients[0]["type"]["code"], "1");
            assert!(ent
                .iter()
                .any(|e| e["role"]["code"] == "24" && e["query"].as_str().is_some()));
        }
        // Kinds of DICOMweb requests.
        let r = &audit_events(&events[1], 1, &source(), None)[0];
        assert_eq!(codes(r), ("rest".into(), "read".into()));
        assert_eq!(r["action"], "R");
        assert_eq!(r["recorded"], "2026-12-02T10:15:00Z");
        assert_eq!(r["outcome"], "0");
        let study = r["entity"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["what"]["type"] == "ImagingStudy")
            .unwrap();
        assert_eq!(
            study["what"]["identifier"]["value"],
            "urn:oid:1.2.826.0.1.3680043.8.498.1"
        );
        assert_eq!(study["type"]["code"], "2");
        let s = &audit_events(&events[0], 0, &source(), None)[0];
        assert_eq!(
            (codes(s).1.as_str(), s["action"].as_str()),
            ("create", Some("C"))
        );
        let d = &audit_events(&events[5], 5, &source(), None)[0];
        assert_eq!(
            (codes(d).1.as_str(), d["action"].as_str()),
            ("delete", Some("D"))
        );
        // Agents: the user (requestor), the client (Source Role ID), the server.
        let agents = r["agent"].as_array().unwrap();
        assert_eq!(agents.len(), 3);
        assert_eq!(agents[0]["requestor"], true);
        assert_eq!(agents[0]["who"]["identifier"]["value"], "dr-house");
        assert_eq!(agents[0]["purposeOfUse"][0]["coding"][0]["code"], "TREAT");
        assert_eq!(agents[0]["network"]["type"], "2");
        assert_eq!(agents[1]["type"]["coding"][0]["code"], "110153");
        assert_eq!(agents[2]["type"]["coding"][0]["code"], "110152");
        assert_eq!(r["source"]["observer"]["display"], "radveil@test");
        assert_eq!(r["source"]["type"][0]["code"], "4");
    }

    #[test]
    fn break_glass_refusals_and_a_filtered_export() {
        let events = sample::events();
        let bg = &audit_events(&events[3], 3, &source(), None)[0];
        let purposes = bg["purposeOfEvent"].as_array().unwrap();
        assert_eq!(purposes[0]["coding"][0]["code"], "ETREAT");
        assert_eq!(purposes[1]["coding"][0]["code"], "BTG");
        assert_eq!(
            purposes[1]["text"],
            "unconscious patient in the emergency room"
        );
        let refused = audit_events(&events[4], 4, &source(), None);
        assert_eq!(refused.len(), 1);
        assert_eq!(codes(&refused[0]), ("110113".into(), "110132".into()));
        assert_eq!(refused[0]["type"]["system"], DCM);
        assert_eq!(refused[0]["outcome"], "4");
        assert_eq!(refused[0]["outcomeDesc"], "token expired");
        assert!(refused[0].get("entity").is_none());
        // For one patient: only their AuditEvent of a two-patient search.
        let john = |p: &PatientAccess| p.id == "PAT-JOHN-0077";
        let only = audit_events(&events[2], 2, &source(), Some(&john));
        assert_eq!(only.len(), 1);
        assert!(!only[0].to_string().contains("PAT-JANE"));
        assert!(audit_events(&events[1], 1, &source(), Some(&john)).is_empty());
    }
}
