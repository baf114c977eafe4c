//! Parses arbitrary timestamp replies, queries and tokens: RFC 3161 / CMS decoding and
//! token verification must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_integrity::timestamp;

fuzz_target!(|data: &[u8]| {
    let _ = timestamp::parse_query(data);
    let _ = timestamp::token_from_reply(data, None, Some(b"signature"));
    let _ = timestamp::check("CMS_TSP", data, b"signature", &[]);
});
