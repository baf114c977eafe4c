//! Decodes arbitrary text in an arbitrary Specific Character Set (the input's first line)
//! and blanks every letter and digit (what cleaning blanks; delimiters stay): never panics,
//! keeps the value's length, and what was decodable stays decodable (a multi-byte character
//! becomes as many `X`s as it had bytes, so never fewer characters) — how de-identification
//! cleans text in place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_part10::charset::CharacterSet;

fuzz_target!(|data: &[u8]| {
    let (head, value) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"\\ISO 2022 IR 87\\ISO 2022 IR 149"[..], data),
    };
    let Ok(set) = CharacterSet::from_value(head) else {
        return;
    };
    let before = set.decode(value);
    let mut blanked = value.to_vec();
    for c in before.chars.iter().filter(|c| c.ch.is_alphanumeric()) {
        c.blank(&mut blanked);
    }
    assert_eq!(blanked.len(), value.len());
    let after = set.decode(&blanked);
    if before.undecodable == 0 {
        assert_eq!(after.undecodable, 0, "a blanked character no longer decodes");
        assert!(after.chars.len() >= before.chars.len());
    }
});
