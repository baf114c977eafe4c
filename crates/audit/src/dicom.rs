//! DICOM PS3.15 A.5 audit messages (the DICOM audit message schema, XML): DICOM Instances
//! Transferred for a store (C) or a retrieve (R), Query, DICOM Study Deleted (a whole
//! study) or DICOM Instances Accessed (D) for a delete, Security Alert (Use of Restricted
//! Function) for a refused token, Audit Log Used for an audit read. A break-glass access
//! carries EventTypeCode Emergency Override Started and PurposeOfUse ETREAT. Messages are
//! one line (no line breaks, values escaped), ready for syslog.

use std::fmt::Write;

use base64::Engine;

use crate::event::{Action, Event, PatientAccess, PurposeOfUse, StudyRef};
use crate::fhir::Source;

/// The Study Root Query/Retrieve Information Model - FIND SOP Class, the query a QIDO-RS
/// search stands for.
const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";

/// Escapes text for an XML attribute or element (line breaks as character references, so a
/// message stays on one line).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\r' => o.push_str("&#13;"),
            '\t' => o.push_str("&#9;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

fn code(element: &str, csd: &str, system: &str, text: &str) -> String {
    format!(
        "<{element} csd-code=\"{}\" codeSystemName=\"{}\" originalText=\"{}\"/>",
        esc(csd),
        esc(system),
        esc(text)
    )
}

/// EventID of an event.
fn event_id(e: &Event) -> (&'static str, &'static str) {
    match e.action {
        Action::Store | Action::Retrieve => ("110104", "DICOM Instances Transferred"),
        Action::Query => ("110112", "Query"),
        Action::Delete => {
            let whole = e
                .patients
                .iter()
                .flat_map(|p| &p.studies)
                .all(|s| s.series.is_none() && s.instance.is_none());
            if whole {
                ("110105", "DICOM Study Deleted")
            } else {
                ("110103", "DICOM Instances Accessed")
            }
        }
        Action::TokenRefused => ("110113", "Security Alert"),
        Action::AuditRead => ("110101", "Audit Log Used"),
        Action::ConsentChange | Action::CareTeamChange => ("110110", "Patient Record"),
        Action::Export => ("110106", "Export"),
        Action::Share => ("110110", "Patient Record"),
        Action::Upload => ("110107", "Import"),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn patient(p: &PatientAccess, out: &mut String) {
    // The Patient ID as an HL7 CX with its issuer (ID^^^Issuer).
    let id = match &p.issuer {
        Some(i) => format!("{}^^^{}", p.id, i),
        None => p.id.clone(),
    };
    let _ = write!(
        out,
        "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\">{}",
        esc(&id),
        code("ParticipantObjectIDTypeCode", "2", "RFC-3881", "Patient Number")
    );
    if let Some(n) = &p.name {
        let _ = write!(
            out,
            "<ParticipantObjectName>{}</ParticipantObjectName>",
            esc(n)
        );
    }
    out.push_str("</ParticipantObjectIdentification>");
}

fn study(s: &StudyRef, out: &mut String) {
    let _ = write!(
        out,
        "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">{}",
        esc(&s.uid),
        code("ParticipantObjectIDTypeCode", "110180", "DCM", "Study Instance UID")
    );
    for (t, v) in [
        ("SeriesInstanceUID", &s.series),
        ("SOPInstanceUID", &s.instance),
    ] {
        if let Some(v) = v {
            let _ = write!(
                out,
                "<ParticipantObjectDetail type=\"{t}\" value=\"{}\"/>",
                b64(v)
            );
        }
    }
    if let Some(n) = s.instances {
        let _ = write!(
            out,
            "<ParticipantObjectDetail type=\"NumberOfInstances\" value=\"{}\"/>",
            b64(&n.to_string())
        );
    }
    out.push_str("</ParticipantObjectIdentification>");
}

/// The A.5 audit message of one event (all its patients and studies), on one line.
pub fn message(e: &Event, source: &Source) -> String {
    let mut o = String::with_capacity(2048);
    let (id, name) = event_id(e);
    let _ = write!(
        o,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage><EventIdentification EventActionCode=\"{}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">{}",
        e.action.action_code(),
        esc(&e.time),
        e.outcome.code(),
        code("EventID", id, "DCM", name)
    );
    if e.action == Action::TokenRefused {
        o.push_str(&code(
            "EventTypeCode",
            "110132",
            "DCM",
            "Use of Restricted Function",
        ));
    }
    if e.is_break_glass() {
        o.push_str(&code(
            "EventTypeCode",
            "110127",
            "DCM",
            "Emergency Override Started",
        ));
    }
    if let Some(d) = e.detail.as_ref().or(e.break_glass.as_ref()) {
        let _ = write!(
            o,
            "<EventOutcomeDescription>{}</EventOutcomeDescription>",
            esc(d)
        );
    }
    let mut purposes: Vec<PurposeOfUse> = e.purpose.into_iter().collect();
    if e.is_break_glass() && !purposes.contains(&PurposeOfUse::EmergencyTreatment) {
        purposes.push(PurposeOfUse::EmergencyTreatment);
    }
    for p in purposes {
        o.push_str(&code(
            "PurposeOfUse",
            p.code(),
            PurposeOfUse::OID,
            &p.to_string(),
        ));
    }
    o.push_str("</EventIdentification>");

    // Who sent and who received: for a retrieve the gateway is the source and the user the
    // destination; for a store or a query the other way round.
    let (user_role, server_role) = match e.action {
        Action::Retrieve | Action::Export => (
            Some(("110152", "Destination Role ID")),
            Some(("110153", "Source Role ID")),
        ),
        Action::Store | Action::Query => (
            Some(("110153", "Source Role ID")),
            Some(("110152", "Destination Role ID")),
        ),
        _ => (None, None),
    };
    let a = &e.actor;
    let _ = write!(
        o,
        "<ActiveParticipant UserID=\"{}\"",
        esc(a.subject.as_deref().unwrap_or("unauthenticated"))
    );
    if let Some(c) = &a.client {
        let _ = write!(o, " AlternativeUserID=\"{}\"", esc(c));
    }
    if let Some(n) = &a.name {
        let _ = write!(o, " UserName=\"{}\"", esc(n));
    }
    o.push_str(" UserIsRequestor=\"true\"");
    if let Some(addr) = &a.address {
        let kind = if addr.parse::<std::net::IpAddr>().is_ok() {
            "2"
        } else {
            "1"
        };
        let _ = write!(
            o,
            " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"{kind}\"",
            esc(addr)
        );
    }
    o.push('>');
    if let Some((c, t)) = user_role {
        o.push_str(&code("RoleIDCode", c, "DCM", t));
    }
    if let Some(r) = a.role {
        o.push_str(&code(
            "RoleIDCode",
            &r.to_string(),
            "radveil-role",
            &r.to_string(),
        ));
    }
    o.push_str("</ActiveParticipant>");
    let _ = write!(
        o,
        "<ActiveParticipant UserID=\"{}\" UserIsRequestor=\"false\">",
        esc(&source.id)
    );
    if let Some((c, t)) = server_role {
        o.push_str(&code("RoleIDCode", c, "DCM", t));
    }
    o.push_str("</ActiveParticipant>");

    let _ = write!(
        o,
        "<AuditSourceIdentification AuditSourceID=\"{}\"",
        esc(&source.id)
    );
    if let Some(site) = &source.site {
        let _ = write!(o, " AuditEnterpriseSiteID=\"{}\"", esc(site));
    }
    let _ = write!(
        o,
        ">{}</AuditSourceIdentification>",
        code(
            "AuditSourceTypeCode",
            "4",
            "DCM",
            "Application Server Process"
        )
    );

    for p in &e.patients {
        for s in &p.studies {
            study(s, &mut o);
        }
    }
    match e.action {
        Action::Query => {
            let _ = write!(
                o,
                "<ParticipantObjectIdentification ParticipantObjectID=\"{STUDY_ROOT_FIND}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">{}<ParticipantObjectQuery>{}</ParticipantObjectQuery></ParticipantObjectIdentification>",
                code("ParticipantObjectIDTypeCode", "110181", "DCM", "SOP Class UID"),
                b64(e.query.as_deref().unwrap_or(""))
            );
        }
        Action::AuditRead => {
            let _ = write!(
                o,
                "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"13\">{}</ParticipantObjectIdentification>",
                esc(&format!("urn:radveil:audit:{}", source.id)),
                code("ParticipantObjectIDTypeCode", "12", "RFC-3881", "URI")
            );
        }
        Action::TokenRefused => {
            let _ = write!(
                o,
                "<ParticipantObjectIdentification ParticipantObjectID=\"bearer-token\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"13\">{}",
                code("ParticipantObjectIDTypeCode", "12", "RFC-3881", "URI")
            );
            if let Some(d) = &e.detail {
                let _ = write!(
                    o,
                    "<ParticipantObjectDetail type=\"Alert Description\" value=\"{}\"/>",
                    b64(d)
                );
            }
            o.push_str("</ParticipantObjectIdentification>");
        }
        _ => {}
    }
    for p in &e.patients {
        patient(p, &mut o);
    }
    o.push_str("</AuditMessage>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    fn source() -> Source {
        Source {
            id: "radveil@test".into(),
            site: Some("HOSPITAL-A".into()),
        }
    }

    /// The attributes of the first element named `name` (a small reader for the tests).
    fn attr<'m>(m: &'m str, element: &str, name: &str) -> Option<&'m str> {
        let start = m.find(&format!("<{element} "))?;
        let end = start + m[start..].find('>')?;
        let tag = &m[start..end];
        let key = format!(" {name}=\"");
        let v = tag.find(&key)? + key.len();
        Some(&tag[v..v + tag[v..].find('"')?])
    }

    #[test]
    fn messages_carry_the_a5_event_ids_and_participants() {
        let ev = sample::events();
        let expect = [
            ("110104", "C"),
            ("110104", "R"),
            ("110112", "E"),
            ("110104", "R"),
            ("110113", "E"),
            ("110105", "D"),
            ("110101", "E"),
        ];
        for (e, (id, action)) in ev.iter().zip(expect) {
            let m = message(e, &source());
            assert!(!m.contains('\n'), "one line");
            assert!(m.starts_with("<?xml") && m.ends_with("</AuditMessage>"));
            assert_eq!(attr(&m, "EventID", "csd-code"), Some(id), "{m}");
            assert_eq!(attr(&m, "EventID", "codeSystemName"), Some("DCM"));
            assert_eq!(
                attr(&m, "EventIdentification", "EventActionCode"),
                Some(action)
            );
            assert_eq!(
                attr(&m, "EventIdentification", "EventDateTime"),
                Some(e.time.as_str())
            );
            assert!(m.contains("<ActiveParticipant UserID="));
            assert!(m.contains("UserIsRequestor=\"true\""));
            assert_eq!(
                attr(&m, "AuditSourceIdentification", "AuditSourceID"),
                Some("radveil@test")
            );
            assert_eq!(attr(&m, "AuditSourceTypeCode", "csd-code"), Some("4"));
            // Sections in the schema's order.
            let pos = |s: &str| m.find(s).unwrap_or(usize::MAX);
            assert!(pos("<EventIdentification") < pos("<ActiveParticipant"));
            assert!(pos("<ActiveParticipant") < pos("<AuditSourceIdentification"));
            if m.contains("<ParticipantObjectIdentification") {
                assert!(
                    pos("<AuditSourceIdentification") < pos("<ParticipantObjectIdentification")
                );
            }
        }
        // A retrieve: the study (110180) and the patient (type 1, role 1, with issuer),
        // the user as the destination.
        let m = message(&ev[1], &source());
        assert!(m.contains("ParticipantObjectID=\"1.2.826.0.1.3680043.8.498.1\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\"><ParticipantObjectIDTypeCode csd-code=\"110180\""));
        assert!(m.contains("ParticipantObjectID=\"PAT-JANE-0042^^^HOSPITAL-A\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\""));
        assert!(m.contains("<ParticipantObjectName>DOE^JANE</ParticipantObjectName>"));
        assert_eq!(attr(&m, "RoleIDCode", "csd-code"), Some("110152"));
        assert_eq!(attr(&m, "PurposeOfUse", "csd-code"), Some("TREAT"));
        // A query carries its query, base64.
        let m = message(&ev[2], &source());
        assert!(m.contains("<ParticipantObjectQuery>UGF0aWVudE5hbWU9RE9FKiZTdHVkeURhdGU9MjAyMy0yMDI0</ParticipantObjectQuery>"));
        // Break-glass: Emergency Override Started, ETREAT.
        let m = message(&ev[3], &source());
        assert_eq!(attr(&m, "EventTypeCode", "csd-code"), Some("110127"));
        assert_eq!(attr(&m, "PurposeOfUse", "csd-code"), Some("ETREAT"));
        // A refused token: a Security Alert, minor failure, use of a restricted function.
        let m = message(&ev[4], &source());
        assert_eq!(attr(&m, "EventTypeCode", "csd-code"), Some("110132"));
        assert_eq!(
            attr(&m, "EventIdentification", "EventOutcomeIndicator"),
            Some("4")
        );
        // Deleting one series is Instances Accessed (D), not Study Deleted.
        let mut e = ev[5].clone();
        e.patients[0].studies[0].series = Some("1.2.3".into());
        assert_eq!(
            attr(&message(&e, &source()), "EventID", "csd-code"),
            Some("110103")
        );
    }

    #[test]
    fn values_are_escaped() {
        let mut e = sample::events().remove(1);
        e.actor.name = Some("O'Brien <\"x\"> & co\nline".into());
        let m = message(&e, &source());
        assert!(m.contains("UserName=\"O&apos;Brien &lt;&quot;x&quot;&gt; &amp; co&#10;line\""));
        assert!(!m.contains('\n'));
    }
}
