//! Integrity at ingest: what a receiving service (the gateway's STOW-RS) checks of one
//! instance, on the data set it has already parsed — one parse serves the identifiers, the
//! signatures, the binding hash and the advisory checks, and the file's bytes are hashed
//! once for the ledger.
//!
//! - The signatures are verified against the site's trusted signers
//!   ([`radveil_integrity::verify_trusted`]) into one [`SignatureStatus`], with the trusted
//!   signer named by its certificate's SHA-256 fingerprint (never by a name the image
//!   carries).
//! - The ledger's [`Observation`] (keyed UID hashes, SHA-256, binding hash, signature
//!   outcome) is made by the same code `radveil ledger append` uses
//!   ([`crate::observe::observation`]), so `radveil verify --ledger` proves what was logged.
//! - Advisories ([`Advisory`]): a Synthetic Data flag, pixel data that contradicts its
//!   description, a device certificate naming another device, and (given the series'
//!   stored instances, [`series_advisories`]) geometry that disagrees with the series.
//!   They never refuse an instance.

use std::fmt;
use std::path::{Path, PathBuf};

use radveil_deid::Key;
use radveil_integrity::{advisory, Outcome, SignatureReport, TrustStore};
use radveil_ledger::Observation;
use radveil_part10::{DataSet, Encoding, MemoryBudget};
use radveil_standard::tags;

use crate::observe::ObserveError;
use crate::verify::CertificateError;

/// What an instance's digital signatures amount to at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignatureStatus {
    /// No Digital Signatures item at any level.
    Unsigned,
    /// Every signature verifies, and one at the top level of the object is from a trusted
    /// signer.
    Trusted,
    /// Every signature verifies, but none at the top level is from a trusted signer.
    Untrusted,
    /// A signature does not verify: something it covers changed.
    Invalid,
}

impl SignatureStatus {
    /// Every status, in a fixed order (for counters).
    pub const ALL: [SignatureStatus; 4] = [
        SignatureStatus::Unsigned,
        SignatureStatus::Trusted,
        SignatureStatus::Untrusted,
        SignatureStatus::Invalid,
    ];

    /// The defined term (a CS value, at most 16 characters).
    pub fn term(self) -> &'static str {
        match self {
            SignatureStatus::Unsigned => "UNSIGNED",
            SignatureStatus::Trusted => "TRUSTED",
            SignatureStatus::Untrusted => "UNTRUSTED",
            SignatureStatus::Invalid => "INVALID",
        }
    }

    /// The status for a defined term.
    pub fn from_term(term: &str) -> Option<SignatureStatus> {
        Self::ALL.into_iter().find(|s| s.term() == term)
    }
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureStatus::Unsigned => "unsigned",
            SignatureStatus::Trusted => "valid, from a trusted signer",
            SignatureStatus::Untrusted => "valid, from a signer that is not trusted",
            SignatureStatus::Invalid => "invalid",
        })
    }
}

/// An advisory finding at ingest: a sign of a fabricated or misattributed image that does
/// not refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Advisory {
    /// Synthetic Data (0008,001C) is YES.
    SyntheticData,
    /// Pixel Data holds another number of bytes than its description, or the description is
    /// impossible.
    PixelLength,
    /// Matrix, Pixel Spacing or Image Orientation (Patient) differs from the series'.
    SeriesGeometry,
    /// Another instance of the series is at the same Image Position (Patient).
    SeriesPosition,
    /// The equipment differs from what the series was logged with.
    ForeignEquipment,
    /// The equipment's images were logged signed by other signers than this one.
    NewSigner,
    /// A device certificate signed an image naming another Device Serial Number.
    SignerDevice,
}

impl Advisory {
    /// Every advisory, in a fixed order (for counters).
    pub const ALL: [Advisory; 7] = [
        Advisory::SyntheticData,
        Advisory::PixelLength,
        Advisory::SeriesGeometry,
        Advisory::SeriesPosition,
        Advisory::ForeignEquipment,
        Advisory::NewSigner,
        Advisory::SignerDevice,
    ];

    /// The defined term (a CS value, at most 16 characters).
    pub fn term(self) -> &'static str {
        match self {
            Advisory::SyntheticData => "SYNTHETIC",
            Advisory::PixelLength => "PIXEL_LENGTH",
            Advisory::SeriesGeometry => "SERIES_GEOMETRY",
            Advisory::SeriesPosition => "SERIES_POSITION",
            Advisory::ForeignEquipment => "FOREIGN_DEVICE",
            Advisory::NewSigner => "NEW_SIGNER",
            Advisory::SignerDevice => "SIGNER_DEVICE",
        }
    }

    /// The advisory for a defined term.
    pub fn from_term(term: &str) -> Option<Advisory> {
        Self::ALL.into_iter().find(|a| a.term() == term)
    }

    /// The ledger's equipment advisory as an ingest advisory.
    pub fn of_equipment(a: radveil_ledger::EquipmentAdvisory) -> Advisory {
        match a {
            radveil_ledger::EquipmentAdvisory::ForeignToSeries => Advisory::ForeignEquipment,
            radveil_ledger::EquipmentAdvisory::UnfamiliarSigner => Advisory::NewSigner,
        }
    }
}

impl fmt::Display for Advisory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Advisory::SyntheticData => "Synthetic Data (0008,001C) is YES",
            Advisory::PixelLength => "Pixel Data (7FE0,0010) does not match its description",
            Advisory::SeriesGeometry => "matrix, Pixel Spacing (0028,0030) or Image Orientation (Patient) (0020,0037) differs from its series (0020,000E)",
            Advisory::SeriesPosition => "another instance of its series (0020,000E) is at the same Image Position (Patient) (0020,0032)",
            Advisory::ForeignEquipment => "its equipment differs from what its series (0020,000E) was logged with",
            Advisory::NewSigner => "its equipment's images were logged signed by other signers",
            Advisory::SignerDevice => "signed by a device certificate naming another Device Serial Number (0018,1000)",
        })
    }
}

/// The geometry of an image, as numbers, to compare with its series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Geometry {
    /// Rows and Columns.
    pub matrix: Option<(u16, u16)>,
    /// Pixel Spacing (row, column), mm.
    pub spacing: Vec<f64>,
    /// Image Orientation (Patient): row and column direction cosines.
    pub orientation: Vec<f64>,
    /// Image Position (Patient), mm.
    pub position: Vec<f64>,
}

/// Decimal strings (`\`-separated) as numbers; a value that is not one makes the list empty
/// (nothing to compare).
fn numbers(text: &str) -> Vec<f64> {
    let v: Option<Vec<f64>> = text
        .split('\\')
        .map(|s| s.trim_matches([' ', '\0']).parse::<f64>().ok())
        .map(|f| f.filter(|f| f.is_finite()))
        .collect();
    v.unwrap_or_default()
}

fn close(a: &[f64], b: &[f64], tolerance: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance)
}

impl Geometry {
    /// The geometry from its values as text (DICOM DS, `\`-separated).
    pub fn from_text(
        matrix: Option<(u16, u16)>,
        spacing: &str,
        orientation: &str,
        position: &str,
    ) -> Geometry {
        Geometry {
            matrix,
            spacing: numbers(spacing),
            orientation: numbers(orientation),
            position: numbers(position),
        }
    }

    /// The geometry of a data set.
    pub fn of(ds: &DataSet<'_>, enc: Encoding) -> Geometry {
        let text = |t| ds.string(t).unwrap_or_default();
        let matrix = ds
            .u16_value(tags::ROWS, enc)
            .zip(ds.u16_value(tags::COLUMNS, enc));
        Geometry::from_text(
            matrix,
            &text(tags::PIXEL_SPACING),
            &text(tags::IMAGE_ORIENTATION_PATIENT),
            &text(tags::IMAGE_POSITION_PATIENT),
        )
    }

    /// Whether this image's matrix, spacing or orientation differs from `reference`'s
    /// (an attribute that one of them lacks is not compared).
    pub fn disagrees_with(&self, reference: &Geometry) -> bool {
        let differ =
            |a: &[f64], b: &[f64], tol: f64| !a.is_empty() && !b.is_empty() && !close(a, b, tol);
        matches!((self.matrix, reference.matrix), (Some(a), Some(b)) if a != b)
            || differ(&self.spacing, &reference.spacing, 1e-4)
            || differ(&self.orientation, &reference.orientation, 1e-4)
    }

    /// Whether both images are at the same position (within 1 µm) in the same orientation.
    pub fn same_position(&self, other: &Geometry) -> bool {
        self.position.len() == 3
            && close(&self.position, &other.position, 1e-3)
            && close(&self.orientation, &other.orientation, 1e-4)
    }
}

/// The series advisories of an image, gathered over the other instances of its series in
/// one pass (see [`series_advisories`]). Each other instance gives its position first; the
/// rest of its geometry is asked for (`whole`) only for the first instance (the series'
/// reference) and for one at the same position, so a long series costs a position each.
#[derive(Debug)]
pub struct SeriesCheck<'g> {
    geometry: &'g Geometry,
    reference: bool,
    disagrees: bool,
    shared: bool,
}

impl<'g> SeriesCheck<'g> {
    /// The check of an image of `geometry`.
    pub fn new(geometry: &'g Geometry) -> SeriesCheck<'g> {
        SeriesCheck {
            geometry,
            reference: false,
            disagrees: false,
            shared: false,
        }
    }

    /// Another instance of the series at `position`, its whole geometry from `whole`.
    pub fn other(&mut self, position: &[f64], whole: impl FnOnce() -> Geometry) {
        if !self.reference {
            self.reference = true;
            let g = whole();
            self.disagrees = self.geometry.disagrees_with(&g);
            self.shared = self.geometry.same_position(&g);
        } else if !self.shared
            && self.geometry.position.len() == 3
            && close(&self.geometry.position, position, 1e-3)
        {
            self.shared = self.geometry.same_position(&whole());
        }
    }

    /// [`Advisory::SeriesGeometry`] when the image disagrees with the reference,
    /// [`Advisory::SeriesPosition`] when another instance is at its position.
    pub fn advisories(self) -> Vec<Advisory> {
        let mut out = Vec::new();
        if self.disagrees {
            out.push(Advisory::SeriesGeometry);
        }
        if self.shared {
            out.push(Advisory::SeriesPosition);
        }
        out
    }
}

/// The series advisories of an image of `geometry` given the geometry of its series' other
/// instances (the first is the series' reference): [`Advisory::SeriesGeometry`] when it
/// disagrees with the reference, [`Advisory::SeriesPosition`] when another is at its
/// position.
pub fn series_advisories<'g>(
    geometry: &Geometry,
    others: impl IntoIterator<Item = &'g Geometry>,
) -> Vec<Advisory> {
    let mut check = SeriesCheck::new(geometry);
    for g in others {
        check.other(&g.position, || g.clone());
    }
    check.advisories()
}

/// What the site checks instances against.
#[derive(Clone)]
pub struct Settings {
    /// The trusted signers (anchors and intermediates); empty: every valid signature is
    /// [`SignatureStatus::Untrusted`].
    pub trust: TrustStore,
    /// The site key of the ledger: UIDs, series and equipment are logged as keyed hashes.
    pub key: Key,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("trusted", &!self.trust.is_empty())
            .finish_non_exhaustive()
    }
}

/// What ingest found of one instance.
#[derive(Debug, Clone)]
pub struct Examined {
    /// What its signatures amount to.
    pub status: SignatureStatus,
    /// The SHA-256 fingerprint of the trusted signer's certificate (with
    /// [`SignatureStatus::Trusted`]).
    pub signer: Option<String>,
    /// What the ledger logs of it.
    pub observation: Observation,
    /// The advisories found in the instance alone (the series and the ledger add theirs).
    pub advisories: Vec<Advisory>,
    /// Its geometry, for [`series_advisories`].
    pub geometry: Geometry,
}

/// The status of a set of signature reports (from [`radveil_integrity::verify_trusted`])
/// and the trusted signer's fingerprint.
pub fn status_of(reports: &[SignatureReport]) -> (SignatureStatus, Option<String>) {
    if reports.is_empty() {
        return (SignatureStatus::Unsigned, None);
    }
    if reports
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Invalid(_)))
    {
        return (SignatureStatus::Invalid, None);
    }
    // A trusted signature inside a sequence item vouches for that item, not the object.
    match reports
        .iter()
        .find(|r| r.location.is_empty() && r.outcome == Outcome::Valid)
    {
        Some(r) => (SignatureStatus::Trusted, Some(r.fingerprint.clone())),
        None => (SignatureStatus::Untrusted, None),
    }
}

/// Checks one instance, parsed once into `ds` (encoded as `enc`) from its Part 10 `bytes`
/// in `transfer_syntax`, at `now` (Unix seconds, for certificates without a signature time).
/// Pixels are decoded for the binding hash within `budget`.
pub fn examine(
    bytes: &[u8],
    transfer_syntax: &str,
    ds: &DataSet<'_>,
    enc: Encoding,
    settings: &Settings,
    now: i64,
    budget: &MemoryBudget,
) -> Result<Examined, ObserveError> {
    let reports = radveil_integrity::verify_trusted(ds, enc, &settings.trust, now);
    let (status, signer) = status_of(&reports);
    let observation = crate::observe::observation(
        bytes,
        transfer_syntax,
        ds,
        enc,
        &reports,
        &settings.key,
        budget,
    )?;
    let mut advisories = Vec::new();
    let (findings, _) = advisory::check_image(ds, enc);
    if ds
        .string(tags::SYNTHETIC_DATA)
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("YES"))
    {
        advisories.push(Advisory::SyntheticData);
    }
    // Every other finding of the image alone is about its pixel description.
    let synthetic = usize::from(advisories.contains(&Advisory::SyntheticData));
    if findings.len() > synthetic {
        advisories.push(Advisory::PixelLength);
    }
    if !advisory::check_signer_equipment(ds, &reports).is_empty() {
        advisories.push(Advisory::SignerDevice);
    }
    Ok(Examined {
        status,
        signer,
        observation,
        advisories,
        geometry: Geometry::of(ds, enc),
    })
}

/// The trust store of the certificate files at `paths`: each a PEM bundle or a DER
/// certificate (as `radveil verify --trust` takes), or a directory whose regular files are
/// each one (read in name order; links and other entries are left out).
pub fn trust_from(paths: &[PathBuf]) -> Result<TrustStore, CertificateError> {
    let mut files = Vec::new();
    for p in paths {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => {
                let read = std::fs::read_dir(p).map_err(|source| CertificateError::Read {
                    path: p.clone(),
                    source,
                })?;
                let mut found: Vec<PathBuf> = read
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.path())
                    .collect();
                found.sort();
                files.extend(found);
            }
            _ => files.push(p.clone()),
        }
    }
    crate::verify::trust_store(&files, &[])
}

/// The trust store's certificate files (see [`trust_from`]) for one directory.
pub fn trust_dir(dir: &Path) -> Result<TrustStore, CertificateError> {
    trust_from(&[dir.to_path_buf()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::testing;

    fn key() -> Key {
        Key::new(zeroize::Zeroizing::new(vec![7u8; 32])).unwrap()
    }

    fn examined(bytes: &[u8], trust: TrustStore) -> Examined {
        let mut inflated = Vec::new();
        let (meta, ds, enc) =
            radveil_part10::read_file(bytes, &mut inflated, Default::default()).unwrap();
        let settings = Settings { trust, key: key() };
        let budget = MemoryBudget::new(64 << 20);
        examine(
            bytes,
            &meta.transfer_syntax,
            &ds,
            enc,
            &settings,
            crate::verify::unix_now(),
            &budget,
        )
        .unwrap()
    }

    fn trusted() -> TrustStore {
        let mut t = TrustStore::default();
        t.add(testing::CERT).unwrap();
        t
    }

    #[test]
    fn unsigned_trusted_untrusted_and_invalid_are_told_apart() {
        let budget = MemoryBudget::new(64 << 20);
        let unsigned = examined(&testing::unsigned_file(), trusted());
        assert_eq!(unsigned.status, SignatureStatus::Unsigned);
        assert_eq!(unsigned.signer, None);
        let signed = testing::signed_file(&budget);
        let ok = examined(&signed, trusted());
        assert_eq!(ok.status, SignatureStatus::Trusted);
        let fingerprint = ok.signer.clone().unwrap();
        assert_eq!(fingerprint.len(), 64);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        // The ledger logs the same as `radveil ledger append` would.
        assert_eq!(
            ok.observation.verification,
            radveil_ledger::Verification::Valid
        );
        assert_eq!(ok.observation.signer.as_deref(), Some(fingerprint.as_str()));
        assert!(ok.observation.binding.is_some());
        // Without the signer among the trusted: valid, untrusted; still valid to the ledger.
        let untrusted = examined(&signed, TrustStore::default());
        assert_eq!(untrusted.status, SignatureStatus::Untrusted);
        assert_eq!(untrusted.signer, None);
        assert_eq!(
            untrusted.observation.verification,
            radveil_ledger::Verification::Valid
        );
        // One pixel byte changed after signing.
        let mut altered = signed.clone();
        let at = testing::find(&altered, &[1, 0, 2, 0, 3, 0, 4, 0]);
        altered[at] = 9;
        let bad = examined(&altered, trusted());
        assert_eq!(bad.status, SignatureStatus::Invalid);
        assert_eq!(
            bad.observation.verification,
            radveil_ledger::Verification::Invalid
        );
        assert_ne!(bad.observation.sha256, ok.observation.sha256);
    }

    #[test]
    fn a_synthetic_flag_is_an_advisory() {
        let plain = examined(&testing::unsigned_file(), TrustStore::default());
        assert!(!plain.advisories.contains(&Advisory::SyntheticData));
        let mut bytes = testing::unsigned_file();
        // (0008,001C) Synthetic Data "YES", in tag order before Modality (0008,0060).
        let at = testing::find(&bytes, &[0x08, 0x00, 0x60, 0x00, b'C', b'S']);
        let el = testing::element(tags::SYNTHETIC_DATA, b"CS", b"YES ");
        bytes.splice(at..at, el);
        let flagged = examined(&bytes, TrustStore::default());
        assert_eq!(flagged.advisories, [Advisory::SyntheticData]);
    }

    #[test]
    fn geometry_is_compared_as_numbers_with_the_series_reference() {
        let g = |m: u16, sp: &str, pos: &str| {
            Geometry::from_text(Some((m, m)), sp, "1\\0\\0\\0\\1\\0", pos)
        };
        let reference = g(512, "0.5\\0.5", "0\\0\\0");
        let next = g(512, "0.50\\0.500", "0\\0\\5");
        assert!(series_advisories(&next, [&reference]).is_empty());
        assert_eq!(series_advisories(&next, []), []);
        let other_matrix = g(256, "0.5\\0.5", "0\\0\\10");
        assert_eq!(
            series_advisories(&other_matrix, [&reference, &next]),
            [Advisory::SeriesGeometry]
        );
        let other_spacing = g(512, "0.7\\0.7", "0\\0\\10");
        assert_eq!(
            series_advisories(&other_spacing, [&reference]),
            [Advisory::SeriesGeometry]
        );
        // Only the first is the reference; a later image at the same place is found.
        let same_place = g(512, "0.5\\0.5", "0.0000\\0\\5.0");
        assert_eq!(
            series_advisories(&same_place, [&reference, &other_matrix, &next]),
            [Advisory::SeriesPosition]
        );
        // Nothing to compare is no finding.
        let bare = Geometry::from_text(None, "", "", "");
        assert!(series_advisories(&bare, [&reference]).is_empty());
        assert!(numbers("1\\x").is_empty());
    }

    #[test]
    fn terms_are_short_code_strings_and_read_back() {
        for s in SignatureStatus::ALL {
            assert!(s.term().len() <= 16);
            assert_eq!(SignatureStatus::from_term(s.term()), Some(s));
        }
        for a in Advisory::ALL {
            let t = a.term();
            assert!(t.len() <= 16 && t.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
            assert_eq!(Advisory::from_term(t), Some(a));
        }
    }

    #[test]
    fn a_trust_directory_reads_every_certificate_file_in_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("signer.pem"), testing::CERT).unwrap();
        let t = trust_dir(dir.path()).unwrap();
        assert!(!t.is_empty());
        std::fs::write(dir.path().join("junk.txt"), b"not a certificate").unwrap();
        assert!(trust_dir(dir.path()).is_err());
        assert!(trust_dir(&dir.path().join("missing")).is_err());
    }
}
