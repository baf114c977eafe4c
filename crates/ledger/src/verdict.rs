//! What the ledger says of an image: which record an image makes (and whether it may be
//! appended at all), and the verdict on an image checked against a verified checkpoint.
//!
//! The caller observes the image (keyed hashes, SHA-256, binding hash, outcome of its own
//! signatures) and hands the observation in as plain values: this crate knows nothing of
//! DICOM or signatures.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash};
use crate::note::Checkpoint;
use crate::{unhex, InclusionProof, Ledger, Record, RecordKind};

/// Outcome of an image's own digital signatures when it was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verification {
    /// No digital signature.
    Unsigned,
    /// Every signature verified.
    Valid,
    /// At least one signature failed.
    Invalid,
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verification::Unsigned => "unsigned",
            Verification::Valid => "valid",
            Verification::Invalid => "invalid",
        })
    }
}

/// What the caller observed of one image, all as hashes (no PHI). Hashes are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Keyed hash of the SOP Instance UID.
    pub instance: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// Transfer-syntax-independent binding hash, where the pixels could be decoded.
    pub binding: Option<String>,
    /// SHA-256 fingerprint of the first valid signature's signer certificate.
    pub signer: Option<String>,
    /// Keyed hash of the Series Instance UID.
    pub series: Option<String>,
    /// Keyed hash of the equipment attributes.
    pub equipment: Option<String>,
    /// Outcome of the image's own signatures.
    pub verification: Verification,
    /// Why `binding` is missing when it is (the pixels could not be decoded, or the memory
    /// budget for decoding them stayed busy), in words naming tags, never values: for the
    /// observer's log. Not recorded.
    pub binding_left_out: Option<String>,
}

impl Observation {
    /// The record this observation makes, of `kind`, at `time` (RFC 3339 UTC).
    pub fn record(&self, kind: RecordKind, time: &str) -> Record {
        Record {
            kind,
            instance: self.instance.clone(),
            sha256: self.sha256.clone(),
            binding: self.binding.clone(),
            signer: self.signer.clone(),
            series: self.series.clone(),
            equipment: self.equipment.clone(),
            verification: self.verification,
            time: time.to_string(),
        }
    }
}

impl Record {
    /// The observation this record was made from (its hashes and outcome): what a later
    /// record of the same image (a tombstone) is made from when the image itself is gone.
    pub fn observation(&self) -> Observation {
        Observation {
            instance: self.instance.clone(),
            sha256: self.sha256.clone(),
            binding: self.binding.clone(),
            signer: self.signer.clone(),
            series: self.series.clone(),
            equipment: self.equipment.clone(),
            verification: self.verification,
            binding_left_out: None,
        }
    }
}

/// What an append is asked to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// An ingest; `allow_changed` records an image whose bytes differ from its last ingest
    /// (a legitimate update) instead of refusing it.
    Ingest {
        /// Accept changed bytes.
        allow_changed: bool,
    },
    /// A deletion.
    Tombstone,
}

/// Whether an observed image is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Append this record.
    Append(Record),
    /// The same bytes are already logged (or pending in this append): nothing to add.
    AlreadyLogged,
    /// Refused: the bytes differ from the last ingest of this instance, which looks like
    /// an altered copy.
    Changed,
}

/// Decides what `obs` adds to `ledger`, given the records already `pending` in the same
/// append (which come after the ledger's). Must be called under the append lock
/// ([`Ledger::append_with`]): the decision is only sound against the ledger as it is when the
/// records are written. Looking the instance up in the ledger is a pass over its file
/// ([`Ledger::find_instance`]), which can fail.
pub fn admit(
    ledger: &Ledger,
    pending: &[Record],
    obs: &Observation,
    intent: Intent,
    time: &str,
) -> Result<Admission, crate::LedgerError> {
    if intent == Intent::Tombstone {
        return Ok(Admission::Append(obs.record(RecordKind::Tombstone, time)));
    }
    let logged;
    let previous = match pending.iter().rev().find(|r| r.instance == obs.instance) {
        Some(r) => Some(r),
        None => {
            logged = ledger.find_instance(&obs.instance)?;
            logged.as_ref().map(|(_, r)| r)
        }
    };
    Ok(admit_after(previous, obs, intent, time))
}

/// [`admit`], given the instance's last record (`previous`: the last of those pending in
/// the same append, else the ledger's last), which the caller found by an index of its
/// own: a writer that keeps one decides in constant time instead of a pass over the
/// ledger per image. Same lock rule as [`admit`].
pub fn admit_after(
    previous: Option<&Record>,
    obs: &Observation,
    intent: Intent,
    time: &str,
) -> Admission {
    let allow_changed = match intent {
        Intent::Tombstone => return Admission::Append(obs.record(RecordKind::Tombstone, time)),
        Intent::Ingest { allow_changed } => allow_changed,
    };
    match previous {
        Some(prev) if prev.kind == RecordKind::Ingest && prev.sha256 == obs.sha256 => {
            Admission::AlreadyLogged
        }
        Some(prev) if prev.kind == RecordKind::Ingest && !allow_changed => Admission::Changed,
        _ => Admission::Append(obs.record(RecordKind::Ingest, time)),
    }
}

/// The ledger's verdict on one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In the ledger, unaltered (or re-encoded with the same binding hash), included in the
    /// checkpoint.
    Proven,
    /// Never recorded: inserted?
    Unknown,
    /// Bytes differ from its entry, and so do the pixels, geometry or identity.
    Altered,
    /// Recorded as deleted.
    Deleted,
    /// Recorded after the checkpoint, or its inclusion could not be proven.
    Unproven,
    /// The image could not be read, so nothing could be said of it.
    Unreadable,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Proven => "proven",
            Status::Unknown => "unknown",
            Status::Altered => "altered",
            Status::Deleted => "deleted",
            Status::Unproven => "unproven",
            Status::Unreadable => "unreadable",
        })
    }
}

/// A verdict: the status, the image's entry when it has one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The status.
    pub status: Status,
    /// The image's last entry, if any.
    pub index: Option<u64>,
    /// Why, in words (no values from the image).
    pub reason: String,
}

/// An advisory finding about an image's equipment, from the ledger's earlier records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EquipmentAdvisory {
    /// The equipment differs from the ledger's earlier images of the image's series (a
    /// foreign image slipped into a series).
    ForeignToSeries,
    /// Signed by a key that never signed this equipment's logged images while another key
    /// did (an image made elsewhere passed off as this device's).
    UnfamiliarSigner,
}

impl fmt::Display for EquipmentAdvisory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EquipmentAdvisory::ForeignToSeries => "equipment (manufacturer, model, serial number, station) differs from the ledger's earlier images of this series",
            EquipmentAdvisory::UnfamiliarSigner => "signed by a key that never signed this equipment's images in the ledger, while another key did",
        })
    }
}

impl Ledger {
    /// The verdict on an observed image against `cp`, a checkpoint of this ledger that the
    /// caller has verified (see [`Ledger::verify_against`]). The ledger's file is read (its
    /// records are not kept in memory); when it cannot be, the image is unproven, saying why.
    pub fn verdict(&self, obs: &Observation, cp: &Checkpoint) -> Verdict {
        match self.find_instance(&obs.instance) {
            Ok(found) => self.verdict_on(found, obs, cp, &|i| self.check_inclusion(i, cp)),
            Err(e) => unreadable_ledger(None, &e),
        }
    }

    /// The verdict on an observed image and the advisories on its equipment
    /// ([`Ledger::verdict`], [`Ledger::equipment_advisories`]) from one pass over the
    /// ledger's file (and one more for the inclusion proof), rather than one each.
    pub fn check_observed(
        &self,
        obs: &Observation,
        cp: &Checkpoint,
    ) -> Result<(Verdict, Vec<EquipmentAdvisory>), crate::LedgerError> {
        let mut seen = Seen::default();
        for entry in self.entries() {
            let (at, r) = entry?;
            seen.add(obs, at.index, r);
        }
        let advisories = equipment_findings(obs, &seen.others, &seen.signers);
        let verdict = self.verdict_on(seen.last, obs, cp, &|i| self.check_inclusion(i, cp));
        Ok((verdict, advisories))
    }

    /// [`Ledger::check_observed`] for many images at once, in their order: two passes over
    /// the ledger's file in all (one for the images' entries and equipment, one for every
    /// inclusion proof) rather than two per image, which is what checking a folder of files
    /// against a large ledger needs.
    pub fn check_many(
        &self,
        observed: &[&Observation],
        cp: &Checkpoint,
    ) -> Result<Vec<(Verdict, Vec<EquipmentAdvisory>)>, crate::LedgerError> {
        use std::collections::HashMap;
        let mut last: HashMap<&str, Option<(u64, Record)>> = observed
            .iter()
            .map(|o| (o.instance.as_str(), None))
            .collect();
        let mut series_equipment: HashMap<&str, BTreeSet<String>> = observed
            .iter()
            .filter_map(|o| o.series.as_deref())
            .map(|s| (s, BTreeSet::new()))
            .collect();
        let mut equipment_signers: HashMap<&str, BTreeSet<String>> = observed
            .iter()
            .filter_map(|o| o.equipment.as_deref())
            .map(|e| (e, BTreeSet::new()))
            .collect();
        for entry in self.entries() {
            let (at, r) = entry?;
            if r.kind == RecordKind::Ingest {
                if let (Some(s), Some(e)) = (r.series.as_deref(), &r.equipment) {
                    if let Some(set) = series_equipment.get_mut(s) {
                        set.insert(e.clone());
                    }
                }
                if let (Some(e), Some(signer)) = (r.equipment.as_deref(), &r.signer) {
                    if let Some(set) = equipment_signers.get_mut(e) {
                        set.insert(signer.clone());
                    }
                }
            }
            if let Some(slot) = last.get_mut(r.instance.as_str()) {
                *slot = Some((at.index, r));
            }
        }
        // Every entry found within the checkpoint is proven in one more pass (those that
        // turn out altered or deleted are not looked at).
        let mut indexes: Vec<u64> = last
            .values()
            .flatten()
            .map(|(i, _)| *i)
            .filter(|i| *i < cp.size)
            .collect();
        indexes.sort_unstable();
        let proofs: HashMap<u64, Option<InclusionProof>> = indexes
            .iter()
            .copied()
            .zip(self.prove_inclusions(&indexes, cp.size)?)
            .collect();
        let empty = BTreeSet::new();
        Ok(observed
            .iter()
            .map(|o| {
                let found = last.get(o.instance.as_str()).cloned().flatten();
                let prove = |i: u64| check_proof(proofs.get(&i).cloned().flatten(), i, cp);
                let verdict = self.verdict_on(found, o, cp, &prove);
                let others = o.series.as_deref().and_then(|s| series_equipment.get(s));
                let signers = o
                    .equipment
                    .as_deref()
                    .and_then(|e| equipment_signers.get(e));
                let advisories =
                    equipment_findings(o, others.unwrap_or(&empty), signers.unwrap_or(&empty));
                (verdict, advisories)
            })
            .collect())
    }

    /// The verdict on `obs` given its last entry (`found`), proving its inclusion with
    /// `inclusion`.
    fn verdict_on(
        &self,
        found: Option<(u64, Record)>,
        obs: &Observation,
        cp: &Checkpoint,
        inclusion: &dyn Fn(u64) -> Result<(), String>,
    ) -> Verdict {
        let verdict = |status, index, reason: String| Verdict {
            status,
            index,
            reason,
        };
        let Some((index, record)) = found else {
            return verdict(
                Status::Unknown,
                None,
                "never recorded in the ledger (inserted?)".into(),
            );
        };
        if record.kind == RecordKind::Tombstone {
            return verdict(Status::Deleted, Some(index), "recorded as deleted".into());
        }
        let mut note = "";
        if record.sha256 != obs.sha256 {
            match (&record.binding, &obs.binding) {
                (Some(a), Some(b)) if a == b => {
                    // Same pixels, geometry and identity in another encoding.
                    note = if record.verification == Verification::Valid
                        && obs.verification != Verification::Valid
                    {
                        " (bytes differ, binding hash matches; the signature it had when logged is gone or broken)"
                    } else {
                        " (re-encoded: bytes differ, binding hash matches)"
                    };
                }
                _ => {
                    return verdict(
                        Status::Altered,
                        Some(index),
                        format!("bytes differ from ledger entry {index}, and so do the pixels, geometry or identity"),
                    )
                }
            }
        }
        if index >= cp.size {
            return verdict(
                Status::Unproven,
                Some(index),
                "recorded after the latest checkpoint".into(),
            );
        }
        match inclusion(index) {
            Ok(()) => verdict(
                Status::Proven,
                Some(index),
                format!(
                    "entry {index}, included in checkpoint of size {}{note}",
                    cp.size
                ),
            ),
            Err(why) => verdict(Status::Unproven, Some(index), why),
        }
    }

    /// The inclusion proof, in the tree of `cp`, of the entry of an image logged with exactly
    /// these bytes; else the verdict that says why there is none (unknown, deleted, altered
    /// or re-encoded, or recorded after the checkpoint).
    pub fn prove_observed(
        &self,
        obs: &Observation,
        cp: &Checkpoint,
    ) -> Result<InclusionProof, Verdict> {
        let found = self
            .find_instance(&obs.instance)
            .map_err(|e| unreadable_ledger(None, &e))?;
        let Some((index, record)) = found else {
            return Err(self.verdict(obs, cp));
        };
        if record.kind == RecordKind::Tombstone {
            return Err(self.verdict(obs, cp));
        }
        if record.sha256 != obs.sha256 {
            return Err(Verdict {
                status: Status::Altered,
                index: Some(index),
                reason: format!("bytes differ from ledger entry {index}: only an image logged with these bytes is proven"),
            });
        }
        if index >= cp.size {
            return Err(Verdict {
                status: Status::Unproven,
                index: Some(index),
                reason: format!(
                    "entry {index} is newer than the checkpoint (size {}): sign a checkpoint first",
                    cp.size
                ),
            });
        }
        self.prove_inclusion(index, cp.size)
            .map_err(|e| unreadable_ledger(Some(index), &e))?
            .ok_or(Verdict {
                status: Status::Unproven,
                index: Some(index),
                reason: "no inclusion proof".into(),
            })
    }

    /// Proves entry `index` included in the tree of `cp` and verifies the proof against the
    /// checkpoint's root.
    fn check_inclusion(&self, index: u64, cp: &Checkpoint) -> Result<(), String> {
        let p = self
            .prove_inclusion(index, cp.size)
            .map_err(|e| format!("the ledger could not be read: {e}"))?;
        check_proof(p, index, cp)
    }

    /// Advisories on an observed image's equipment, from the ledger's earlier ingests (one
    /// pass over its file).
    pub fn equipment_advisories(
        &self,
        obs: &Observation,
    ) -> Result<Vec<EquipmentAdvisory>, crate::LedgerError> {
        if obs.equipment.is_none() {
            return Ok(Vec::new());
        }
        let mut seen = Seen::default();
        for entry in self.entries() {
            let (at, r) = entry?;
            seen.add(obs, at.index, r);
        }
        Ok(equipment_findings(obs, &seen.others, &seen.signers))
    }
}

/// Verifies the inclusion proof of entry `index` (as [`Ledger::prove_inclusion`] gave it)
/// against the checkpoint's root.
fn check_proof(p: Option<InclusionProof>, index: u64, cp: &Checkpoint) -> Result<(), String> {
    let p = p.ok_or_else(|| "no inclusion proof".to_string())?;
    let proof: Vec<Hash> = p
        .proof
        .iter()
        .map(|h| unhex(h))
        .collect::<Option<_>>()
        .ok_or_else(|| "no inclusion proof".to_string())?;
    let leaf = unhex(&p.leaf).ok_or_else(|| "no inclusion proof".to_string())?;
    merkle::verify_inclusion(index, cp.size, &leaf, &proof, &cp.root)
        .map_err(|e| format!("inclusion proof failed: {e}"))
}

/// The advisories on an observed image's equipment, given the equipment logged for its
/// series (`others`) and the signers logged for its equipment.
fn equipment_findings(
    obs: &Observation,
    others: &BTreeSet<String>,
    signers: &BTreeSet<String>,
) -> Vec<EquipmentAdvisory> {
    let Some(equipment) = obs.equipment.as_deref() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if obs.series.is_some() && !others.is_empty() && !others.contains(equipment) {
        found.push(EquipmentAdvisory::ForeignToSeries);
    }
    if let Some(signer) = obs.signer.as_deref() {
        if !signers.is_empty() && !signers.contains(signer) {
            found.push(EquipmentAdvisory::UnfamiliarSigner);
        }
    }
    found
}

/// What one pass over a ledger's records finds for an observed image: its last entry, the
/// equipment logged for its series and the signers logged for its equipment.
#[derive(Default)]
struct Seen {
    last: Option<(u64, Record)>,
    others: BTreeSet<String>,
    signers: BTreeSet<String>,
}

impl Seen {
    fn add(&mut self, obs: &Observation, index: u64, r: Record) {
        if r.kind == RecordKind::Ingest {
            if obs.series.is_some() && r.series == obs.series {
                self.others.extend(r.equipment.clone());
            }
            if obs.equipment.is_some() && r.equipment == obs.equipment {
                self.signers.extend(r.signer.clone());
            }
        }
        if r.instance == obs.instance {
            self.last = Some((index, r));
        }
    }
}

/// The verdict on an image when the ledger's file could not be read (or no longer holds
/// what was read of it): unproven, saying why.
fn unreadable_ledger(index: Option<u64>, e: &crate::LedgerError) -> Verdict {
    Verdict {
        status: Status::Unproven,
        index,
        reason: format!("the ledger could not be read: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::Signer;
    use crate::TornRepair;

    fn obs(i: u32, bytes: u32) -> Observation {
        Observation {
            instance: format!("{i:064x}"),
            sha256: format!("{bytes:064x}"),
            binding: Some(format!("{:064x}", bytes + 50_000)),
            signer: None,
            series: Some(format!("{:064x}", 7)),
            equipment: Some(format!("{:064x}", 8)),
            verification: Verification::Unsigned,
            binding_left_out: None,
        }
    }

    const T: &str = "2026-11-23T12:00:00Z";

    fn ledger(dir: &std::path::Path) -> (Ledger, Signer) {
        let signer = Signer::from_seed("radveil.test/verdict", &[5; 32]).unwrap();
        (
            Ledger::init(dir, "radveil.test/verdict", &signer).unwrap(),
            signer,
        )
    }

    fn checkpoint(l: &mut Ledger, signer: &Signer) -> Checkpoint {
        let note = l.checkpoint(signer).unwrap();
        Checkpoint::open(&note, &signer.verifier()).unwrap()
    }

    #[test]
    fn statuses_display_as_their_names() {
        let all = [
            (Status::Proven, "proven"),
            (Status::Unknown, "unknown"),
            (Status::Altered, "altered"),
            (Status::Deleted, "deleted"),
            (Status::Unproven, "unproven"),
            (Status::Unreadable, "unreadable"),
        ];
        for (s, name) in all {
            assert_eq!(s.to_string(), name);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(Verification::Invalid.to_string(), "invalid");
    }

    #[test]
    fn admission_skips_same_bytes_and_refuses_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, _) = ledger(dir.path());
        let first = obs(1, 100);
        let ingest = Intent::Ingest {
            allow_changed: false,
        };
        let Admission::Append(r) = admit(&l, &[], &first, ingest, T).unwrap() else {
            panic!("a new image is appended");
        };
        assert_eq!(r.kind, RecordKind::Ingest);
        // Pending in the same append counts as logged.
        assert_eq!(
            admit(&l, std::slice::from_ref(&r), &first, ingest, T).unwrap(),
            Admission::AlreadyLogged
        );
        assert_eq!(
            admit(&l, std::slice::from_ref(&r), &obs(1, 101), ingest, T).unwrap(),
            Admission::Changed
        );
        l.append(&[r]).unwrap();
        assert_eq!(
            admit(&l, &[], &first, ingest, T).unwrap(),
            Admission::AlreadyLogged
        );
        assert_eq!(
            admit(&l, &[], &obs(1, 101), ingest, T).unwrap(),
            Admission::Changed
        );
        assert!(matches!(
            admit(
                &l,
                &[],
                &obs(1, 101),
                Intent::Ingest {
                    allow_changed: true
                },
                T
            )
            .unwrap(),
            Admission::Append(_)
        ));
        // A tombstone is always recorded; after it, the instance may be ingested again.
        let Admission::Append(t) = admit(&l, &[], &first, Intent::Tombstone, T).unwrap() else {
            panic!("tombstones are appended");
        };
        assert_eq!(t.kind, RecordKind::Tombstone);
        l.append(&[t]).unwrap();
        assert!(matches!(
            admit(&l, &[], &obs(1, 101), ingest, T).unwrap(),
            Admission::Append(_)
        ));
    }

    #[test]
    fn verdicts_cover_every_status() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, signer) = ledger(dir.path());
        let (a, b, c) = (obs(1, 100), obs(2, 200), obs(3, 300));
        l.append(&[
            a.record(RecordKind::Ingest, T),
            b.record(RecordKind::Ingest, T),
            b.record(RecordKind::Tombstone, T),
        ])
        .unwrap();
        let cp = checkpoint(&mut l, &signer);
        l.append(&[c.record(RecordKind::Ingest, T)]).unwrap();

        let v = l.verdict(&a, &cp);
        assert_eq!((v.status, v.index), (Status::Proven, Some(0)), "{v:?}");
        assert_eq!(l.verdict(&b, &cp).status, Status::Deleted);
        assert_eq!(l.verdict(&c, &cp).status, Status::Unproven);
        assert_eq!(l.verdict(&obs(4, 400), &cp).status, Status::Unknown);
        // Other bytes, other pixels: altered.
        let mut edited = obs(1, 101);
        assert_eq!(l.verdict(&edited, &cp).status, Status::Altered);
        // Other bytes, same binding hash: a lossless re-encode, still proven, with a note.
        edited.binding = a.binding.clone();
        let v = l.verdict(&edited, &cp);
        assert_eq!(v.status, Status::Proven);
        assert!(v.reason.contains("re-encoded"), "{v:?}");
        // Without a binding hash there is nothing to compare: altered.
        let mut unbound = edited.clone();
        unbound.binding = None;
        assert_eq!(l.verdict(&unbound, &cp).status, Status::Altered);
        // Checked all at once (two passes over the file), each verdict is the one alone,
        // and an image given twice gets it twice.
        let all = [&a, &b, &c, &edited, &unbound, &a];
        let one_by_one: Vec<_> = all
            .iter()
            .map(|o| l.check_observed(o, &cp).unwrap())
            .collect();
        let mut unknown = obs(4, 400);
        unknown.equipment = None;
        let mut with_unknown = all.to_vec();
        with_unknown.push(&unknown);
        let at_once = l.check_many(&with_unknown, &cp).unwrap();
        assert_eq!(at_once[..all.len()], one_by_one[..]);
        assert_eq!(at_once[all.len()].0.status, Status::Unknown);
        assert_eq!(l.check_many(&[], &cp).unwrap(), []);
        // Proofs of several entries from one pass are those given one at a time.
        assert_eq!(
            l.prove_inclusions(&[2, 0, 5, 1], 3).unwrap(),
            [
                l.prove_inclusion(2, 3).unwrap(),
                l.prove_inclusion(0, 3).unwrap(),
                None,
                l.prove_inclusion(1, 3).unwrap()
            ]
        );
        assert!(l.prove_inclusion(1, 3).unwrap().is_some());
    }

    #[test]
    fn proofs_are_given_only_for_the_logged_bytes_within_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, signer) = ledger(dir.path());
        let (a, b) = (obs(1, 100), obs(2, 200));
        l.append(&[
            a.record(RecordKind::Ingest, T),
            obs(3, 1).record(RecordKind::Ingest, T),
        ])
        .unwrap();
        let cp = checkpoint(&mut l, &signer);
        l.append(&[b.record(RecordKind::Ingest, T)]).unwrap();
        let p = l.prove_observed(&a, &cp).unwrap();
        assert_eq!((p.index, p.size), (0, 2));
        let proof: Vec<Hash> = p.proof.iter().map(|h| unhex(h).unwrap()).collect();
        merkle::verify_inclusion(0, 2, &unhex(&p.leaf).unwrap(), &proof, &cp.root).unwrap();
        assert_eq!(
            l.prove_observed(&b, &cp).unwrap_err().status,
            Status::Unproven
        );
        assert_eq!(
            l.prove_observed(&obs(1, 101), &cp).unwrap_err().status,
            Status::Altered
        );
        // Re-encoded (same binding hash) is proven by `verdict`, but has no proof of its bytes.
        let mut re = obs(1, 101);
        re.binding = a.binding.clone();
        assert_eq!(l.verdict(&re, &cp).status, Status::Proven);
        assert_eq!(
            l.prove_observed(&re, &cp).unwrap_err().status,
            Status::Altered
        );
        assert_eq!(
            l.prove_observed(&obs(9, 9), &cp).unwrap_err().status,
            Status::Unknown
        );
    }

    #[test]
    fn a_checkpoint_of_another_tree_proves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, _) = ledger(dir.path());
        let a = obs(1, 100);
        l.append(&[
            a.record(RecordKind::Ingest, T),
            obs(2, 1).record(RecordKind::Ingest, T),
        ])
        .unwrap();
        let forged = Checkpoint {
            origin: "radveil.test/verdict".into(),
            size: 2,
            root: [9; 32],
        };
        let v = l.verdict(&a, &forged);
        assert_eq!(v.status, Status::Unproven);
        assert!(v.reason.contains("inclusion proof failed"), "{v:?}");
    }

    #[test]
    fn equipment_advisories_compare_with_earlier_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, signer) = ledger(dir.path());
        let mut a = obs(1, 100);
        a.signer = Some("aa".repeat(32));
        l.append_with(
            TornRepair::Refuse,
            |_| vec![a.record(RecordKind::Ingest, T)],
        )
        .unwrap();
        let mut same = obs(2, 200);
        same.signer = a.signer.clone();
        assert!(l.equipment_advisories(&same).unwrap().is_empty());
        let mut foreign = obs(3, 300);
        foreign.equipment = Some(format!("{:064x}", 9));
        assert_eq!(
            l.equipment_advisories(&foreign).unwrap(),
            [EquipmentAdvisory::ForeignToSeries]
        );
        let mut other_key = obs(4, 400);
        other_key.signer = Some("bb".repeat(32));
        assert_eq!(
            l.equipment_advisories(&other_key).unwrap(),
            [EquipmentAdvisory::UnfamiliarSigner]
        );
        // One pass gives the verdict and the advisories that the two calls give.
        let cp = checkpoint(&mut l, &signer);
        for o in [&a, &same, &foreign, &other_key] {
            assert_eq!(
                l.check_observed(o, &cp).unwrap(),
                (l.verdict(o, &cp), l.equipment_advisories(o).unwrap())
            );
        }
    }

    /// Time of one image's verdict and equipment advisories at 100,000 entries (`cargo
    /// test -p radveil-ledger --release -- --ignored --nocapture verdict_time`): each reads
    /// the ledger's file (its records are not kept in memory).
    #[test]
    #[ignore]
    fn verdict_time_at_100000_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, signer) = ledger(dir.path());
        let records: Vec<Record> = (0..100_000)
            .map(|i| obs(i, i).record(RecordKind::Ingest, T))
            .collect();
        l.append(&records).unwrap();
        let cp = checkpoint(&mut l, &signer);
        let start = std::time::Instant::now();
        let v = l.verdict(&obs(50_000, 50_000), &cp);
        let verdict = start.elapsed();
        assert_eq!(v.status, Status::Proven);
        let start = std::time::Instant::now();
        l.equipment_advisories(&obs(50_000, 50_000)).unwrap();
        let advisories = start.elapsed();
        let start = std::time::Instant::now();
        let (v, _) = l.check_observed(&obs(50_000, 50_000), &cp).unwrap();
        assert_eq!(v.status, Status::Proven);
        let both = start.elapsed();
        let many: Vec<Observation> = (0..500).map(|i| obs(i * 200, i * 200)).collect();
        let refs: Vec<&Observation> = many.iter().collect();
        let start = std::time::Instant::now();
        let checked = l.check_many(&refs, &cp).unwrap();
        assert!(checked.iter().all(|(v, _)| v.status == Status::Proven));
        println!(
            "at 100,000 entries: verdict {verdict:?}; equipment advisories {advisories:?}; both in one pass {both:?}; 500 images at once {:?}",
            start.elapsed()
        );
    }
}
