//! The gateway's `multipart/related` reader (STOW-RS request bodies), its
//! `multipart/form-data` reading (the portal's upload form: field and file names from each
//! part's Content-Disposition) and Content-Type parser: whatever the bytes, no panic,
//! bounded parts, and every part lies inside the body and comes back unchanged when written
//! and read again.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use radveil_web::multipart;

fuzz_target!(|data: &[u8]| {
    // The first line is the Content-Type, the rest the body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let ct = String::from_utf8_lossy(&data[..split]);
    let body = Bytes::copy_from_slice(data.get(split + 1..).unwrap_or_default());
    let _ = multipart::media_type(&ct);
    if let Ok(boundary) = multipart::form_data(&ct) {
        if let Ok(parts) = multipart::parts(&body, &boundary, 64) {
            assert!(parts.len() <= 64);
            for p in &parts {
                let _ = (p.field(), p.file_name());
            }
        }
        return;
    }
    let Ok(related) = multipart::related(&ct) else {
        return;
    };
    if let Ok(parts) = multipart::parts(&body, &related.boundary, 64) {
        assert!(parts.len() <= 64);
        let total: usize = parts.iter().map(|p| p.body.len()).sum();
        assert!(total <= body.len());
        // Parts that do not hold the delimiter survive a round trip.
        let delimiter = format!("\r\n--{}", related.boundary);
        if parts.iter().all(|p| {
            !p.body
                .windows(delimiter.len())
                .any(|w| w == delimiter.as_bytes())
        }) {
            let bodies: Vec<Bytes> = parts.iter().map(|p| p.body.clone()).collect();
            let again = Bytes::from(multipart::write(
                &bodies,
                &related.boundary,
                "application/dicom",
            ));
            let back = multipart::parts(&again, &related.boundary, 64).expect("written body reads");
            assert_eq!(
                back.iter().map(|p| &p.body).collect::<Vec<_>>(),
                bodies.iter().collect::<Vec<_>>()
            );
        }
    }
});
