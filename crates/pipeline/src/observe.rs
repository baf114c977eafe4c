//! Observing one image as the transparency ledger sees it ([`radveil_ledger::Observation`]):
//! keyed hashes of its instance, series and equipment (never a value in clear), the
//! SHA-256 of its bytes, its binding hash and the outcome of its own signatures.

use std::fmt;
use std::path::Path;

use radveil_deid::Key;
use radveil_integrity::Outcome;
use radveil_ledger::note::Checkpoint;
use radveil_ledger::verdict::admit_after;
use radveil_ledger::{
    hex, Admission, Appended, Intent, Ledger, LedgerError, Observation, Record, Status, TornRepair,
    Verdict, Verification,
};
use radveil_part10 as p10;
use radveil_part10::MemoryBudget;
use radveil_standard::tags;
use sha2::{Digest, Sha256};

use crate::verify::chain;
use crate::whole::{read_whole, ReadError, WholeFile};

/// Why an image could not be observed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The file could not be read (the reason says "cannot read" itself, once).
    #[error(transparent)]
    Read(ReadError),
    /// Not a readable Part 10 file.
    #[error(transparent)]
    Parse(#[from] p10::Error),
    /// It has no SOP Instance UID to find it by.
    #[error("no SOP Instance UID (0008,0018)")]
    NoInstance,
}

/// Reads the file at `path` whole under `budget` and observes it, its UIDs hashed with
/// `key`.
pub fn observe(path: &Path, key: &Key, budget: &MemoryBudget) -> Result<Observation, ObserveError> {
    let WholeFile { bytes, mut grant } = read_whole(path, budget).map_err(ObserveError::Read)?;
    let mut inflated = Vec::new();
    let (meta, ds, enc) =
        p10::read_file_in(&bytes, &mut inflated, p10::Limits::default(), &mut grant)?;
    let reports = radveil_integrity::verify(&ds, enc);
    observation(
        &bytes,
        &meta.transfer_syntax,
        &ds,
        enc,
        &reports,
        key,
        budget,
    )
}

/// The keyed hash (under the site key) by which the ledger knows the instance with this
/// SOP Instance UID: what [`observation`] records, and what a deletion's tombstone is
/// found by when only the UID is at hand.
pub fn instance_hash(key: &Key, sop_instance_uid: &str) -> String {
    hex(&key.mac("sop-instance", sop_instance_uid.as_bytes()))
}

/// The binding hash of an image (hex), decoding its pixels within `budget`. While the
/// budget is busy (other images being decoded hold it), it waits, holding nothing, until
/// what the hash asked for is free, and tries again, up to [`p10::DEFAULT_WAIT`] in all;
/// only then, or when the pixels cannot be decoded at all, is the hash left out, with the
/// reason (naming Pixel Data (7FE0,0010), never a value).
pub fn binding_of(
    ds: &p10::DataSet<'_>,
    enc: p10::Encoding,
    transfer_syntax: &str,
    budget: &MemoryBudget,
) -> Result<String, String> {
    use radveil_integrity::BindingError;
    let left_out =
        |e: &dyn std::fmt::Display| format!("binding hash of Pixel Data (7FE0,0010) left out: {e}");
    let deadline = std::time::Instant::now() + p10::DEFAULT_WAIT;
    loop {
        match radveil_integrity::binding_hash_with_budget(ds, enc, transfer_syntax, budget) {
            Ok(h) => return Ok(hex(&h)),
            Err(BindingError::Memory(p10::BudgetError::Busy { requested })) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                // A decoded frame and a copy of it are what the hash holds at once.
                let room = requested.saturating_mul(2).min(budget.limit());
                match budget.reserve(room, left) {
                    // Free now: let it go and try again (another worker may take it first;
                    // the deadline bounds the retries).
                    Ok(grant) => drop(grant),
                    Err(e) => return Err(left_out(&e)),
                }
                if left.is_zero() {
                    return Err(left_out(&"the memory budget stayed in use by other work"));
                }
            }
            Err(e) => return Err(left_out(&e)),
        }
    }
}

/// The observation of an image already parsed (`ds`, encoded as `enc`, from the Part 10
/// `bytes` in `transfer_syntax`) whose signatures were checked into `reports`: one parse
/// serves the signature check, the binding hash and the ledger. A signature that verifies
/// but whose signer is not trusted ([`Outcome::Untrusted`]) still verifies here: trust is
/// the reader's question, not the ledger's.
pub fn observation(
    bytes: &[u8],
    transfer_syntax: &str,
    ds: &p10::DataSet<'_>,
    enc: p10::Encoding,
    reports: &[radveil_integrity::SignatureReport],
    key: &Key,
    budget: &MemoryBudget,
) -> Result<Observation, ObserveError> {
    let verifies = |o: &Outcome| matches!(o, Outcome::Valid | Outcome::Untrusted(_));
    let verification = if reports.is_empty() {
        Verification::Unsigned
    } else if reports.iter().all(|r| verifies(&r.outcome)) {
        Verification::Valid
    } else {
        Verification::Invalid
    };
    let signer = reports
        .iter()
        .find(|r| verifies(&r.outcome))
        .map(|r| r.fingerprint.clone());
    let (binding, binding_left_out) = match binding_of(ds, enc, transfer_syntax, budget) {
        Ok(h) => (Some(h), None),
        Err(why) => (None, Some(why)),
    };
    let series = ds
        .string(tags::SERIES_INSTANCE_UID)
        .filter(|s| !s.is_empty())
        .map(|s| hex(&key.mac("series-instance", s.as_bytes())));
    let equipment_text: Vec<String> = [
        tags::MANUFACTURER,
        tags::MANUFACTURER_MODEL_NAME,
        tags::DEVICE_SERIAL_NUMBER,
        tags::STATION_NAME,
    ]
    .iter()
    .map(|t| ds.string(*t).unwrap_or_default())
    .collect();
    let equipment = equipment_text
        .iter()
        .any(|v| !v.is_empty())
        .then(|| hex(&key.mac("equipment", equipment_text.join("\\").as_bytes())));
    let uid = ds
        .string(tags::SOP_INSTANCE_UID)
        .filter(|u| !u.is_empty())
        .ok_or(ObserveError::NoInstance)?;
    Ok(Observation {
        instance: instance_hash(key, &uid),
        sha256: hex(&Sha256::digest(bytes)),
        binding,
        signer,
        series,
        equipment,
        verification,
        binding_left_out,
    })
}

/// What the ledger says of one image.
#[derive(Debug, Clone)]
pub struct ImageCheck {
    /// The verdict.
    pub verdict: Verdict,
    /// An advisory finding (equipment inconsistent with the series or signer), if any.
    pub advisory: Option<String>,
}

impl ImageCheck {
    /// The ledger's verdict on an image, with its equipment advisories in words.
    pub fn of(verdict: Verdict, advisories: &[radveil_ledger::EquipmentAdvisory]) -> ImageCheck {
        let advisories: Vec<String> = advisories.iter().map(ToString::to_string).collect();
        ImageCheck {
            verdict,
            advisory: (!advisories.is_empty()).then(|| advisories.join("; ")),
        }
    }

    /// An image that could not be read, for `reason`.
    pub fn unreadable(reason: impl Into<String>) -> ImageCheck {
        ImageCheck {
            verdict: Verdict {
                status: Status::Unreadable,
                index: None,
                reason: reason.into(),
            },
            advisory: None,
        }
    }

    /// The lines for the image at `path`: the advisory (if any), then the verdict; each
    /// `STATUS<TAB>PATH<TAB>REASON`, or a JSON object with the entry's index.
    pub fn lines<'a>(&'a self, path: &'a Path, json: bool) -> ImageLines<'a> {
        ImageLines {
            check: self,
            path,
            json,
        }
    }
}

impl crate::ordered::FromPanic for ImageCheck {
    /// An image whose check panicked (a bug): unreadable, for that reason.
    fn from_panic(panicked: crate::pool::Panicked) -> ImageCheck {
        ImageCheck::unreadable(panicked.to_string())
    }
}

/// An [`ImageCheck`] printed for a path (see [`ImageCheck::lines`]).
#[derive(Debug)]
pub struct ImageLines<'a> {
    check: &'a ImageCheck,
    path: &'a Path,
    json: bool,
}

impl fmt::Display for ImageLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Verdict {
            status,
            index,
            reason,
        } = &self.check.verdict;
        let line = |f: &mut fmt::Formatter<'_>, status: &str, reason: &str| {
            if self.json {
                let v = serde_json::json!({
                    "input": self.path.display().to_string(),
                    "status": status,
                    "entry": index,
                    "reason": reason,
                });
                write!(f, "{v}")
            } else {
                write!(f, "{status}\t{}\t{reason}", self.path.display())
            }
        };
        if let Some(advice) = &self.check.advisory {
            line(f, "advisory", advice)?;
            writeln!(f)?;
        }
        line(f, &status.to_string(), reason)
    }
}

/// Observes the image at `path` and gives the ledger's verdict on it against `checkpoint`,
/// with any equipment advisory.
pub fn check_image(
    ledger: &Ledger,
    checkpoint: &Checkpoint,
    path: &Path,
    key: &Key,
    budget: &MemoryBudget,
) -> ImageCheck {
    let obs = match observe(path, key, budget) {
        Ok(o) => o,
        Err(e) => return ImageCheck::unreadable(chain(&e)),
    };
    let (verdict, advisories) = match ledger.check_observed(&obs, checkpoint) {
        Ok(checked) => checked,
        Err(e) => {
            return ImageCheck {
                verdict: Verdict {
                    status: Status::Unproven,
                    index: None,
                    reason: format!("the ledger could not be read: {e}"),
                },
                advisory: None,
            }
        }
    };
    ImageCheck::of(verdict, &advisories)
}

/// What appending observed images did.
#[derive(Debug)]
pub struct Admitted<'a, T> {
    /// The entries appended (and a torn line repaired first).
    pub appended: Appended,
    /// Images whose bytes were already logged: nothing added.
    pub skipped: usize,
    /// Images refused: their bytes differ from their last ingest (altered?).
    pub refused: Vec<&'a T>,
}

/// Appends to `ledger` what `observed` (each image with what names it to the caller) calls
/// for under `intent`, decided under the ledger's lock against its entries as they are
/// then, so two appends at once never log the same image twice.
pub fn append_observed<'a, T>(
    ledger: &mut Ledger,
    observed: &'a [(T, Observation)],
    intent: Intent,
    repair: TornRepair,
    now: &str,
) -> Result<Admitted<'a, T>, LedgerError> {
    let mut skipped = 0;
    let mut refused = Vec::new();
    let mut failed = None;
    let appended = ledger.append_with(repair, |fresh| {
        // Each instance's last entry, found in one pass over the ledger's file (not one per
        // image: a batch of M images against N entries was M x N comparisons), keeping only
        // the records of the instances asked about.
        let mut last: std::collections::HashMap<&str, Record> =
            std::collections::HashMap::with_capacity(observed.len());
        if intent != Intent::Tombstone {
            let wanted: std::collections::HashMap<&str, &str> = observed
                .iter()
                .map(|(_, o)| (o.instance.as_str(), o.instance.as_str()))
                .collect();
            for entry in fresh.entries() {
                match entry {
                    Ok((_, r)) => {
                        if let Some(&name) = wanted.get(r.instance.as_str()) {
                            last.insert(name, r);
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        return Vec::new();
                    }
                }
            }
        }
        let mut records: Vec<Record> = Vec::new();
        // Where in `records` each instance's last pending record is.
        let mut pending: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (name, o) in observed {
            let previous = match pending.get(o.instance.as_str()) {
                Some(&i) => records.get(i),
                None => last.get(o.instance.as_str()),
            };
            match admit_after(previous, o, intent, now) {
                Admission::Append(r) => {
                    pending.insert(o.instance.as_str(), records.len());
                    records.push(r);
                }
                Admission::AlreadyLogged => skipped += 1,
                Admission::Changed => refused.push(name),
            }
        }
        records
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Admitted {
        appended,
        skipped,
        refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::testing;
    use radveil_ledger::admit;
    use radveil_ledger::note::Signer;

    fn key() -> Key {
        Key::new(zeroize::Zeroizing::new(vec![7u8; 32])).unwrap()
    }

    #[test]
    fn an_observed_image_is_proven_and_a_changed_pixel_is_altered() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let key = key();
        let signed = testing::signed_file(&budget);
        let image = dir.path().join("image.dcm");
        std::fs::write(&image, &signed).unwrap();

        let obs = observe(&image, &key, &budget).unwrap();
        assert_eq!(obs.verification, Verification::Valid);
        assert!(obs.signer.is_some() && obs.binding.is_some());
        assert!(obs.series.is_some() && obs.equipment.is_some());
        // No UID in clear.
        assert!(!obs.instance.contains("1.2.826"));
        assert_eq!(obs.sha256, hex(&Sha256::digest(&signed)));

        let signer = Signer::from_seed("test-ledger", &[3; 32]).unwrap();
        let ledger_dir = dir.path().join("ledger");
        Ledger::init(&ledger_dir, "example.org/test", &signer).unwrap();
        let mut ledger = Ledger::open(&ledger_dir).unwrap();
        ledger
            .append_with(TornRepair::Refuse, |l| {
                let intent = Intent::Ingest {
                    allow_changed: false,
                };
                match admit(l, &[], &obs, intent, "2026-12-03T10:00:00Z").unwrap() {
                    Admission::Append(r) => vec![r],
                    _ => panic!("not admitted"),
                }
            })
            .unwrap();
        let note = ledger.checkpoint(&signer).unwrap();
        let cp = ledger.verify_against(&note, &signer.verifier()).unwrap();
        assert_eq!(ledger.verdict(&obs, &cp).status, Status::Proven);
        let check = check_image(&ledger, &cp, &image, &key, &budget);
        assert_eq!(check.verdict.status, Status::Proven);
        assert_eq!(check.advisory, None);
        let line = check.lines(&image, false).to_string();
        assert!(
            line.starts_with(&format!("proven\t{}\t", image.display())),
            "{line}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&check.lines(&image, true).to_string()).unwrap();
        assert_eq!(json["status"], "proven");
        assert_eq!(json["entry"], 0);

        // One pixel byte changed: the same instance, other bytes and pixels.
        let mut altered = signed.clone();
        let at = testing::find(&altered, &[1, 0, 2, 0, 3, 0, 4, 0]);
        altered[at] = 9;
        std::fs::write(&image, &altered).unwrap();
        let changed = observe(&image, &key, &budget).unwrap();
        assert_eq!(changed.instance, obs.instance);
        assert_eq!(changed.verification, Verification::Invalid);
        assert_eq!(ledger.verdict(&changed, &cp).status, Status::Altered);
        let check = check_image(&ledger, &cp, &image, &key, &budget);
        assert_eq!(check.verdict.status, Status::Altered);
        let missing = dir.path().join("missing.dcm");
        let check = check_image(&ledger, &cp, &missing, &key, &budget);
        assert_eq!(check.verdict.status, Status::Unreadable);
        assert!(check
            .lines(&missing, false)
            .to_string()
            .starts_with(&format!(
                "unreadable\t{}\tcannot read: No such file",
                missing.display()
            )));
        let advised = ImageCheck {
            advisory: Some("equipment differs".into()),
            ..ImageCheck::unreadable("why")
        };
        assert_eq!(
            advised.lines(Path::new("x.dcm"), false).to_string(),
            "advisory\tx.dcm\tequipment differs\nunreadable\tx.dcm\twhy"
        );
        assert_eq!(budget.in_use(), 0);
    }

    /// 12 of 16 bits stored: the binding hash cuts a copy of each frame to Bits Stored.
    fn twelve_bit_file() -> Vec<u8> {
        let mut bytes = testing::unsigned_file();
        let stored = testing::find(&bytes, b"\x28\x00\x01\x01US\x02\x00\x10\x00");
        bytes[stored + 8] = 12;
        let high = testing::find(&bytes, b"\x28\x00\x02\x01US\x02\x00\x0f\x00");
        bytes[high + 8] = 11;
        bytes
    }

    /// Observes `bytes` (parsed under a budget of their own) with `pixels` as the budget
    /// for decoding the pixels, as the gateway does.
    fn observed(bytes: &[u8], pixels: &MemoryBudget) -> Observation {
        let parsing = MemoryBudget::new(1 << 20);
        let mut grant = parsing.reserve(0, p10::DEFAULT_WAIT).unwrap();
        let mut inflated = Vec::new();
        let (meta, ds, enc) =
            p10::read_file_in(bytes, &mut inflated, p10::Limits::default(), &mut grant).unwrap();
        observation(bytes, &meta.transfer_syntax, &ds, enc, &[], &key(), pixels).unwrap()
    }

    #[test]
    fn a_busy_pixel_budget_is_waited_for_and_the_binding_hash_kept() {
        let bytes = twelve_bit_file();
        let free = observed(&bytes, &MemoryBudget::new(64));
        assert!(free.binding.is_some() && free.binding_left_out.is_none());
        // Another worker holds all but 4 bytes (less than the 8-byte frame's copy) for a
        // while: the hash waits for it instead of being left out.
        let budget = MemoryBudget::new(64);
        let (held, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        let busy = std::thread::scope(|s| {
            s.spawn(|| {
                let grant = budget.try_reserve(60).unwrap();
                held.wait();
                release.wait();
                std::thread::sleep(std::time::Duration::from_millis(300));
                drop(grant);
            });
            held.wait();
            release.wait();
            observed(&bytes, &budget)
        });
        assert_eq!(busy.binding, free.binding);
        assert_eq!(busy.binding_left_out, None);
        assert_eq!(budget.in_use(), 0);
        // Pixels that cannot be decoded: left out, saying why by tag.
        let mut cut = bytes.clone();
        let at = testing::find(&cut, &[1, 0, 2, 0, 3, 0, 4, 0]);
        cut.truncate(at + 6);
        let len = testing::find(&cut, b"\xe0\x7f\x10\x00OW") + 8;
        cut[len..len + 4].copy_from_slice(&6u32.to_le_bytes());
        let cut = observed(&cut, &MemoryBudget::new(64));
        assert_eq!(cut.binding, None);
        let why = cut.binding_left_out.unwrap();
        assert!(
            why.starts_with("binding hash of Pixel Data (7FE0,0010) left out: "),
            "{why}"
        );
    }

    #[test]
    fn unreadable_and_uid_less_images_are_not_observed() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let missing = observe(&dir.path().join("missing.dcm"), &key(), &budget).unwrap_err();
        assert!(matches!(missing, ObserveError::Read(_)));
        // The reason is said once, not "cannot read: cannot read: ...".
        let text = chain(&missing);
        assert!(text.starts_with("cannot read: "), "{text}");
        assert_eq!(text.matches("cannot read").count(), 1, "{text}");
        let junk = dir.path().join("junk.dcm");
        std::fs::write(&junk, b"not dicom").unwrap();
        assert!(matches!(
            observe(&junk, &key(), &budget),
            Err(ObserveError::Parse(_))
        ));
        let bytes = testing::unsigned_file();
        let uid = b"1.2.826.0.1.3680043.10.1.1";
        // Blank the SOP Instance UID of the data set (its second occurrence; the first is
        // the file meta's).
        let first = testing::find(&bytes, uid);
        let second = first + 1 + testing::find(&bytes[first + 1..], uid);
        let mut no_uid = bytes.clone();
        no_uid[second..second + uid.len()].fill(b' ');
        let path = dir.path().join("no-uid.dcm");
        std::fs::write(&path, &no_uid).unwrap();
        assert!(matches!(
            observe(&path, &key(), &budget),
            Err(ObserveError::NoInstance)
        ));
    }

    #[test]
    fn appending_logs_an_image_once_and_refuses_changed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let key = key();
        let image = dir.path().join("image.dcm");
        let bytes = testing::unsigned_file();
        std::fs::write(&image, &bytes).unwrap();
        let obs = observe(&image, &key, &budget).unwrap();
        let mut changed_bytes = bytes.clone();
        let at = testing::find(&changed_bytes, &[1, 0, 2, 0, 3, 0, 4, 0]);
        changed_bytes[at] = 9;
        std::fs::write(&image, &changed_bytes).unwrap();
        let changed = observe(&image, &key, &budget).unwrap();

        let signer = Signer::from_seed("test-ledger", &[3; 32]).unwrap();
        let ledger_dir = dir.path().join("ledger");
        Ledger::init(&ledger_dir, "example.org/test", &signer).unwrap();
        let mut ledger = Ledger::open(&ledger_dir).unwrap();
        let ingest = Intent::Ingest {
            allow_changed: false,
        };
        let now = "2026-12-03T10:00:00Z";
        // The same image twice in one append: logged once.
        let both = [("a", obs.clone()), ("b", obs.clone())];
        let a = append_observed(&mut ledger, &both, ingest, TornRepair::Refuse, now).unwrap();
        assert_eq!(a.appended.range, 0..1);
        assert_eq!((a.skipped, a.refused.len()), (1, 0));
        // Again: already logged. Changed bytes: refused, unless allowed.
        let next = [("a", obs), ("c", changed.clone())];
        let a = append_observed(&mut ledger, &next, ingest, TornRepair::Refuse, now).unwrap();
        assert_eq!(a.appended.range, 1..1);
        assert_eq!(a.skipped, 1);
        assert_eq!(a.refused, [&"c"]);
        let allow = Intent::Ingest {
            allow_changed: true,
        };
        let update = [("c", changed)];
        let a = append_observed(&mut ledger, &update, allow, TornRepair::Refuse, now).unwrap();
        assert_eq!(a.appended.range, 1..2);
        assert!(a.refused.is_empty());
    }
}
