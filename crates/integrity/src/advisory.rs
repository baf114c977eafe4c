//! Advisory consistency checks: signs that an image was fabricated or tampered with that do
//! not need a signature — pixel data whose length contradicts its description, a Synthetic
//! Data flag, a series whose geometry does not hang together — and one that does: a device
//! certificate signing an image that names another device.

use radveil_part10::{DataSet, Encoding, Value};
use radveil_standard::tags;

/// What one image contributes to the series-level checks.
#[derive(Debug, Clone)]
pub struct ImageGeometry {
    /// Series Instance UID.
    pub series: String,
    /// SOP Instance UID.
    pub instance: String,
    /// Rows × Columns.
    pub matrix: (u16, u16),
    /// Pixel Spacing as written.
    pub spacing: String,
    /// Image Orientation (Patient) as written.
    pub orientation: String,
    /// Image Position (Patient) as written.
    pub position: String,
}

/// Checks each valid signature's signer against the equipment the image names: a signer
/// certificate whose subject carries a serial number (X.520 serialNumber, as device
/// certificates do) must name the image's Device Serial Number (0018,1000). A device key
/// signing an image that claims another device is a sign of a forged or re-attributed
/// image.
pub fn check_signer_equipment(ds: &DataSet<'_>, reports: &[crate::SignatureReport]) -> Vec<String> {
    let Some(device) = ds
        .string(tags::DEVICE_SERIAL_NUMBER)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    const SERIAL_NUMBER: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("2.5.4.5");
    let mut findings = Vec::new();
    for r in reports {
        if r.outcome != crate::Outcome::Valid {
            continue;
        }
        let Some(cert) = &r.certificate else { continue };
        let serials: Vec<String> = cert
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|atv| atv.oid == SERIAL_NUMBER)
            .filter_map(|atv| {
                der::asn1::PrintableStringRef::try_from(&atv.value)
                    .map(|s| s.as_str().to_string())
                    .or_else(|_| {
                        der::asn1::Utf8StringRef::try_from(&atv.value)
                            .map(|s| s.as_str().to_string())
                    })
                    .ok()
            })
            .collect();
        if !serials.is_empty() && !serials.iter().any(|s| s.trim() == device) {
            findings.push(format!(
                "signed by a device certificate whose subject serialNumber is not this image's Device Serial Number (0018,1000) (signer certificate SHA-256 {})",
                r.fingerprint
            ));
        }
    }
    findings
}

/// Checks one image; returns its findings and its geometry for [`check_series`].
pub fn check_image(ds: &DataSet<'_>, enc: Encoding) -> (Vec<String>, Option<ImageGeometry>) {
    let mut findings = Vec::new();
    if ds
        .string(tags::SYNTHETIC_DATA)
        .is_some_and(|s| s.eq_ignore_ascii_case("YES"))
    {
        findings.push(
            "Synthetic Data (0008,001C) is YES: the image says it is not a real acquisition".into(),
        );
    }
    let rows = ds.u16_value(tags::ROWS, enc);
    let cols = ds.u16_value(tags::COLUMNS, enc);
    if let (Some(Value::Bytes(px)), Some(_), Some(_)) = (
        ds.get(radveil_part10::PIXEL_DATA).map(|e| &e.value),
        rows,
        cols,
    ) {
        // The one checked description of the pixels (radveil-pixeldata).
        match radveil_pixeldata::ImagePixel::from_dataset(ds, enc) {
            Ok(d) if !d.matches_native_len(px.len()) => findings.push(format!(
                "Pixel Data holds {} bytes but Rows × Columns × frames × samples × bits describe {}",
                px.len(),
                d.native_len()
            )),
            Ok(_) => {}
            Err(e) => findings.push(format!("the pixel description is impossible: {e}")),
        }
    }
    let geometry = match (ds.string(tags::SERIES_INSTANCE_UID), rows, cols) {
        (Some(series), Some(r), Some(c)) if !series.is_empty() => Some(ImageGeometry {
            series,
            instance: ds.string(tags::SOP_INSTANCE_UID).unwrap_or_default(),
            matrix: (r, c),
            spacing: ds.string(tags::PIXEL_SPACING).unwrap_or_default(),
            orientation: ds
                .string(tags::IMAGE_ORIENTATION_PATIENT)
                .unwrap_or_default(),
            position: ds.string(tags::IMAGE_POSITION_PATIENT).unwrap_or_default(),
        }),
        _ => None,
    };
    (findings, geometry)
}

/// A series-level finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesFinding {
    /// The images concerned, as indexes into the slice given to [`check_series`]: those
    /// sharing a position, or every image of the series.
    pub images: Vec<usize>,
    /// What is wrong, naming attributes by tag, never by value (no UID, no position): it
    /// may be printed.
    pub finding: String,
}

/// Checks that the images of each series agree: one matrix size, pixel spacing and
/// orientation, and no two distinct instances at the same position.
pub fn check_series(images: &[ImageGeometry]) -> Vec<SeriesFinding> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_series: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in images.iter().enumerate() {
        by_series.entry(&g.series).or_default().push(i);
    }
    let mut out = Vec::new();
    let mut series: Vec<Vec<usize>> = by_series.into_values().collect();
    series.sort_by_key(|imgs| imgs[0]);
    for imgs in series {
        if imgs.len() < 2 {
            continue;
        }
        let first = &images[imgs[0]];
        let differ =
            |f: &dyn Fn(&ImageGeometry) -> String| imgs.iter().any(|&i| f(&images[i]) != f(first));
        let mut found = |at: &[usize], finding: String| {
            out.push(SeriesFinding {
                images: at.to_vec(),
                finding,
            })
        };
        if differ(&|g| format!("{:?}", g.matrix)) {
            found(&imgs, "images of one series (0020,000E) have different matrix sizes (Rows (0028,0010), Columns (0028,0011))".into());
        }
        if differ(&|g| g.spacing.clone()) {
            found(
                &imgs,
                "images of one series (0020,000E) have different Pixel Spacing (0028,0030)".into(),
            );
        }
        if differ(&|g| g.orientation.clone()) {
            found(&imgs, "images of one series (0020,000E) have different Image Orientation (Patient) (0020,0037)".into());
        }
        // Images at each position, one per distinct SOP Instance UID.
        let mut positions: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
        for &i in &imgs {
            let g = &images[i];
            if !g.position.is_empty() {
                positions
                    .entry(&g.position)
                    .or_default()
                    .entry(&g.instance)
                    .or_insert(i);
            }
        }
        let mut shared: Vec<BTreeSet<usize>> = positions
            .into_values()
            .filter(|instances| instances.len() > 1)
            .map(|instances| instances.into_values().collect())
            .collect();
        shared.sort();
        for at in shared {
            let at: Vec<usize> = at.into_iter().collect();
            found(
                &at,
                format!(
                    "{} instances (0008,0018) of one series (0020,000E) at the same position (Image Position (Patient) (0020,0032))",
                    at.len()
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(series: &str, inst: &str, matrix: (u16, u16), pos: &str) -> ImageGeometry {
        ImageGeometry {
            series: series.into(),
            instance: inst.into(),
            matrix,
            spacing: "0.5\\0.5".into(),
            orientation: "1\\0\\0\\0\\1\\0".into(),
            position: pos.into(),
        }
    }

    #[test]
    fn series_inconsistencies_are_found() {
        let ok = [
            geo("s", "1", (512, 512), "0\\0\\0"),
            geo("s", "2", (512, 512), "0\\0\\5"),
        ];
        assert!(check_series(&ok).is_empty());
        let bad = [
            geo("s", "1", (512, 512), "0\\0\\0"),
            geo("s", "2", (256, 256), "0\\0\\0"),
        ];
        let f = check_series(&bad);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|x| x.images == [0, 1]), "{f:?}");
    }

    #[test]
    fn series_findings_echo_no_values() {
        let bad = [
            geo("1.2.3.444", "1.2.3.444.1", (512, 512), "-12.5\\7\\99.25"),
            geo("9.9", "9.9.1", (512, 512), "0\\0\\0"),
            geo("1.2.3.444", "1.2.3.444.2", (256, 256), "-12.5\\7\\99.25"),
        ];
        let f = check_series(&bad);
        assert_eq!(f.len(), 2, "{f:?}");
        for x in &f {
            assert_eq!(x.images, [0, 2]);
            for value in ["1.2.3.444", "-12.5", "99.25", "256", "512"] {
                assert!(!x.finding.contains(value), "{x:?}");
            }
        }
        assert!(f[1].finding.contains("(0020,0032)"), "{f:?}");
    }
}
