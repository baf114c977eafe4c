use super::*;

fn kinds(text: &str) -> Vec<Kind> {
    scan_text_for_tests(text)
}

#[test]
fn clinical_text_is_clean() {
    for t in [
        "CT HEAD W/O CONTRAST",
        "AX T2 FLAIR 5mm",
        "MR BRAIN",
        "DR CHEST PA",
        "TK JAMY BRZUSZNEJ",
    ] {
        assert!(kinds(t).is_empty(), "{t}: {:?}", kinds(t));
    }
}

#[test]
fn each_kind_is_found() {
    assert_eq!(kinds("seen 12-Mar-1958"), vec![Kind::Date]);
    assert_eq!(kinds("seen 1958/03/12"), vec![Kind::Date]);
    assert_eq!(kinds("call (555) 123-4567"), vec![Kind::Phone]);
    assert_eq!(kinds("mail a.b@c.org"), vec![Kind::Email]);
    assert_eq!(kinds("MRN 8812345"), vec![Kind::Identifier]);
    assert_eq!(kinds("12 Baker Street"), vec![Kind::Address]);
    assert_eq!(kinds("read by Dr. Watson"), vec![Kind::PersonName]);
}

#[test]
fn names_look_real_or_not() {
    assert!(looks_like_a_name("Doe^Jane"));
    assert!(looks_like_a_name("山田^花子"));
    assert!(!looks_like_a_name("ANONYMOUS"));
    assert!(!looks_like_a_name("ANON^QK3JX0PZ7A"));
    assert!(!looks_like_a_name("RV8F3A9C"));
    assert!(!looks_like_a_name("RVAFPEBWXPLKGF"));
    assert!(!looks_like_a_name("XXXX^XXX"));
    assert!(!looks_like_a_name(""));
}

#[test]
fn pdf_streams_are_read() {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(b"BT /F1 12 Tf (Report for John Smith) Tj ET")
        .unwrap();
    let stream = z.finish().unwrap();
    let mut pdf = b"%PDF-1.4\n1 0 obj << /Filter /FlateDecode >>\nstream\n".to_vec();
    pdf.extend_from_slice(&stream);
    pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF");
    assert!(!String::from_utf8_lossy(&pdf).contains("John Smith"));
    let text = pdf_text(&pdf);
    assert!(String::from_utf8_lossy(&text).contains("Report for John Smith"));
    // A stream that does not inflate is skipped; a bomb stops at the limit.
    let bad = b"%PDF-1.4\nstream\nnot zlib\nendstream\n".to_vec();
    assert_eq!(pdf_text(&bad).len(), bad.len());
}
