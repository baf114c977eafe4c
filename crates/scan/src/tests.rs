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
