//! RFC 5424 syslog lines carrying DICOM PS3.15 A.5 audit messages, as PS3.15 A.6 and IHE
//! ATNA send them: facility authpriv (10), severity notice (5) for a success and warning (4)
//! otherwise, APP-NAME `radveil`, MSGID `DICOM+RFC3881`, no structured data, and the message
//! as UTF-8 after a byte order mark.

use crate::event::{Event, Outcome};
use crate::fhir::Source;

/// RFC 5424 header field: printable US-ASCII without spaces, at most `max` characters, or
/// the nil value `-`.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// One syslog line (without its newline) for an event, from `hostname`.
pub fn line(e: &Event, source: &Source, hostname: &str) -> String {
    // PRI = facility * 8 + severity; authpriv is 10.
    let severity = if e.outcome == Outcome::Success { 5 } else { 4 };
    let pri = 10 * 8 + severity;
    format!(
        "<{pri}>1 {} {} radveil - DICOM+RFC3881 - \u{FEFF}{}",
        header_field(&e.time, 64),
        header_field(hostname, 255),
        crate::dicom::message(e, source)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn lines_follow_rfc5424_with_the_a5_message() {
        let src = Source {
            id: "radveil@test".into(),
            site: None,
        };
        let ev = sample::events();
        let l = line(&ev[1], &src, "pacs one");
        assert!(l.starts_with(
            "<85>1 2026-12-02T10:15:00Z pacsone radveil - DICOM+RFC3881 - \u{FEFF}<?xml"
        ));
        assert!(l.ends_with("</AuditMessage>"));
        assert!(!l.contains('\n'));
        // A refusal is a warning.
        assert!(line(&ev[4], &src, "h").starts_with("<84>1 "));
        assert!(line(&ev[4], &src, "").contains(" - radveil - "));
    }
}
