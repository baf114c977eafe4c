//! Care teams: who treats a patient, as the EHR records it (FHIR R4 `CareTeam`, put by the
//! EHR's integration at `PUT /fhir/CareTeam/{id}`), so that a clinician reading a patient's
//! images who is on none of the patient's active care teams can be marked "outside the care
//! team" in the patient's access log and the auditor's report. A patient without any care
//! team recorded is not marked: nothing is known.
//!
//! A member is named by the identifier of their `participant.member` Reference, whose value
//! is the user's subject in the site's OpenID provider (the `sub` of their tokens, which the
//! audit trail records). Kept in `DATA/careteam.db` (SQLite, 0600): one row per version of
//! each care team (its logical id as a keyed hash, the patient's store handle, the version),
//! the version sealed (AES-256-GCM under `DATA/keys/careteam-key`) with those as associated
//! data. Every version is kept, so an access is judged against the teams in force when it
//! happened ([`History::outside_at`]), not as they are now.

use std::path::Path;
use std::sync::Mutex;

use radveil_store::{Handle, Key};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::fhir::{
    array, bad, logical_id, obj, only, patient_at, patient_reference, resource, string,
    unprocessable, Invalid, IDENTIFIER_KEYS, REFERENCE_KEYS,
};
use crate::PatientId;

/// The file of the care-team database under the gateway's data folder.
pub const CARETEAM_DB: &str = "careteam.db";
/// The care-team key's file under the gateway's data folder.
pub const CARETEAM_KEY_FILE: &str = "keys/careteam-key";
/// Largest CareTeam body accepted.
pub const MAX_BODY: usize = 256 * 1024;
/// Most participants in one care team.
pub const MAX_MEMBERS: usize = 500;
/// Longest member identifier (an OpenID subject is at most 255 ASCII characters).
pub const MAX_MEMBER: usize = 255;
/// Most care teams one patient may have.
pub const MAX_TEAMS_PER_PATIENT: usize = 100;
/// Most versions kept of one patient's care teams (all teams together).
pub const MAX_VERSIONS_PER_PATIENT: usize = 2000;
/// Largest sealed team read back.
const MAX_SEALED: usize = 1 << 20;
const AAD_LABEL: &[u8] = b"radveil-careteam-v1";

/// A row as read: id hash, patient handle, version, sealed team.
type Row = (Vec<u8>, Vec<u8>, i64, Vec<u8>);

/// One care team as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CareTeam {
    /// The logical id (the EHR's).
    pub id: String,
    /// The patient.
    pub patient: PatientId,
    /// Whether the team is active (only active teams count).
    pub active: bool,
    /// The members' subjects.
    pub members: Vec<String>,
    /// The version (1 for the first PUT of this id).
    pub version: u64,
    /// When this version was recorded (RFC 3339 UTC).
    pub recorded: String,
}

/// A CareTeam as parsed from FHIR, before it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The id in the body, if any (must match the URL's).
    pub id: Option<String>,
    /// The patient (`subject`).
    pub patient: PatientId,
    /// `status` is `active`.
    pub active: bool,
    /// The members' subjects, without repeats.
    pub members: Vec<String>,
}

/// Why a care team could not be kept or read.
#[derive(Debug, thiserror::Error)]
pub enum CareTeamError {
    /// The database failed.
    #[error("care-team database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A stored team does not open (altered, moved, or another key).
    #[error("a care team's record failed its integrity check")]
    Sealed,
    /// The id is a care team of another patient.
    #[error("this id is another patient's CareTeam")]
    OtherPatient,
    /// Too many teams, or versions of them, for one patient.
    #[error("this patient has too many care teams or versions of them")]
    TooMany,
    /// Sealing failed, or the lock was poisoned.
    #[error("the care-team store failed")]
    Failed,
}

/// Parses a FHIR R4 CareTeam strictly: `subject` by identifier, `status`, and each
/// `participant.member` by identifier (the user's subject). What radveil does not use is
/// allowed where R4 has it; anything else is refused.
pub fn parse(body: &[u8]) -> Result<Draft, Invalid> {
    if body.len() > MAX_BODY {
        return Err(bad("the CareTeam is too large"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    let m = resource(&v, "CareTeam")?;
    only(
        m,
        "CareTeam",
        &[
            "resourceType",
            "id",
            "meta",
            "implicitRules",
            "language",
            "text",
            "contained",
            "extension",
            "identifier",
            "status",
            "category",
            "name",
            "subject",
            "encounter",
            "period",
            "participant",
            "reasonCode",
            "reasonReference",
            "managingOrganization",
            "telecom",
            "note",
            "_status",
            "_name",
        ],
        &["modifierExtension", "implicitRules"],
    )?;
    let id = logical_id(m)?;
    let active = match m.get("status").map(|s| string(s, "status")).transpose()? {
        Some("active") => true,
        Some("proposed" | "suspended" | "inactive" | "entered-in-error") => false,
        Some(_) => return Err(bad("status: not a CareTeam status")),
        None => return Err(unprocessable("status is required")),
    };
    let patient = patient_at(
        m.get("subject")
            .ok_or_else(|| unprocessable("subject is required"))?,
        "subject",
    )?;
    let mut members: Vec<String> = Vec::new();
    if let Some(ps) = m.get("participant") {
        let ps = array(ps, "participant")?;
        if ps.len() > MAX_MEMBERS {
            return Err(unprocessable("participant: too many"));
        }
        for (i, p) in ps.iter().enumerate() {
            let at = format!("participant[{i}]");
            let pm = obj(p, &at)?;
            only(
                pm,
                &at,
                &["id", "extension", "role", "member", "onBehalfOf", "period"],
                &["modifierExtension"],
            )?;
            let Some(member) = pm.get("member") else {
                return Err(unprocessable(format!("{at}.member is required")));
            };
            let at = format!("{at}.member");
            let mm = obj(member, &at)?;
            only(mm, &at, REFERENCE_KEYS, &[])?;
            let ident = mm.get("identifier").ok_or_else(|| {
                unprocessable(format!(
                    "{at}: give the member by identifier (their subject at the site's OpenID provider)"
                ))
            })?;
            let at = format!("{at}.identifier");
            let im = obj(ident, &at)?;
            only(im, &at, IDENTIFIER_KEYS, &[])?;
            let value = string(
                im.get("value")
                    .ok_or_else(|| unprocessable(format!("{at}.value is required")))?,
                &format!("{at}.value"),
            )?;
            if value.is_empty() || value.len() > MAX_MEMBER || value.chars().any(char::is_control) {
                return Err(unprocessable(format!(
                    "{at}.value: 1 to 255 characters, no control character"
                )));
            }
            if !members.iter().any(|x| x == value) {
                members.push(value.to_string());
            }
        }
    }
    Ok(Draft {
        id,
        patient,
        active,
        members,
    })
}

/// The FHIR R4 CareTeam of `t`.
pub fn to_fhir(t: &CareTeam) -> Value {
    let participants: Vec<Value> = t
        .members
        .iter()
        .map(|m| json!({"member": {"identifier": {"value": m}}}))
        .collect();
    let mut v = json!({
        "resourceType": "CareTeam",
        "id": t.id,
        "meta": {"versionId": t.version.to_string(), "lastUpdated": t.recorded},
        "status": if t.active { "active" } else { "inactive" },
        "subject": patient_reference(&t.patient),
    });
    if !participants.is_empty() {
        v["participant"] = Value::Array(participants);
    }
    v
}

/// The care teams of one data folder.
pub struct CareTeams {
    db: Mutex<rusqlite::Connection>,
    key: Key,
}

impl std::fmt::Debug for CareTeams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CareTeams(..)")
    }
}

fn aad(id: &Handle, patient: &Handle, version: u64) -> Vec<u8> {
    let mut a = AAD_LABEL.to_vec();
    a.extend_from_slice(&id.0);
    a.extend_from_slice(&patient.0);
    a.extend_from_slice(&version.to_be_bytes());
    a
}

impl CareTeams {
    /// Opens (making it 0600) the care-team database at `path`.
    pub fn open(path: &Path, key: Key) -> Result<CareTeams, CareTeamError> {
        radveil_store::create_private(path).map_err(|_| CareTeamError::Failed)?;
        let db = rusqlite::Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;
             CREATE TABLE IF NOT EXISTS careteam (
                 id BLOB NOT NULL, patient BLOB NOT NULL, version INTEGER NOT NULL,
                 sealed BLOB NOT NULL, PRIMARY KEY (id, version));
             CREATE INDEX IF NOT EXISTS careteam_patient ON careteam(patient);",
        )?;
        Ok(CareTeams {
            db: Mutex::new(db),
            key,
        })
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, rusqlite::Connection>, CareTeamError> {
        self.db.lock().map_err(|_| CareTeamError::Failed)
    }

    fn id_hash(&self, id: &str) -> Handle {
        self.key.blind("careteam id", &[id.as_bytes()])
    }

    fn open_row(
        &self,
        id: &[u8],
        patient: &[u8],
        version: i64,
        sealed: &[u8],
    ) -> Result<CareTeam, CareTeamError> {
        let id = Handle::from_slice(id).map_err(|_| CareTeamError::Sealed)?;
        let patient = Handle::from_slice(patient).map_err(|_| CareTeamError::Sealed)?;
        let version = u64::try_from(version).map_err(|_| CareTeamError::Sealed)?;
        if sealed.len() > MAX_SEALED {
            return Err(CareTeamError::Sealed);
        }
        let plain = zeroize::Zeroizing::new(
            self.key
                .open(sealed, &aad(&id, &patient, version))
                .ok_or(CareTeamError::Sealed)?,
        );
        let t: CareTeam = serde_json::from_slice(&plain).map_err(|_| CareTeamError::Sealed)?;
        if t.version != version || self.id_hash(&t.id) != id {
            return Err(CareTeamError::Sealed);
        }
        Ok(t)
    }

    /// The care team `id`, if recorded.
    pub fn get(&self, id: &str) -> Result<Option<CareTeam>, CareTeamError> {
        let h = self.id_hash(id);
        let db = self.db()?;
        let row = db
            .query_row(
                "SELECT id, patient, version, sealed FROM careteam WHERE id = ?1 ORDER BY version DESC LIMIT 1",
                params![&h.0[..]],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )
            .optional()?;
        drop(db);
        row.map(|(i, p, v, s)| self.open_row(&i, &p, v, &s))
            .transpose()
    }

    /// Records `draft` as the care team `id` of the patient whose store handle is
    /// `patient`: a new version when it exists (of the same patient only). Gives the team.
    pub fn put(
        &self,
        id: &str,
        patient: &Handle,
        draft: Draft,
        recorded: String,
    ) -> Result<CareTeam, CareTeamError> {
        let h = self.id_hash(id);
        let mut db = self.db()?;
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<(Vec<u8>, i64)> = tx
            .query_row(
                "SELECT patient, version FROM careteam WHERE id = ?1 ORDER BY version DESC LIMIT 1",
                params![&h.0[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (teams, versions): (i64, i64) = tx.query_row(
            "SELECT count(DISTINCT id), count(*) FROM careteam WHERE patient = ?1",
            params![&patient.0[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if versions as usize >= MAX_VERSIONS_PER_PATIENT {
            return Err(CareTeamError::TooMany);
        }
        let version = match current {
            Some((p, _)) if p != patient.0 => return Err(CareTeamError::OtherPatient),
            Some((_, v)) => u64::try_from(v).map_err(|_| CareTeamError::Sealed)? + 1,
            None if teams as usize >= MAX_TEAMS_PER_PATIENT => return Err(CareTeamError::TooMany),
            None => 1,
        };
        let team = CareTeam {
            id: id.to_string(),
            patient: draft.patient,
            active: draft.active,
            members: draft.members,
            version,
            recorded,
        };
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(&team).map_err(|_| CareTeamError::Failed)?);
        let sealed = self
            .key
            .seal(&plain, &aad(&h, patient, version))
            .map_err(|_| CareTeamError::Failed)?;
        tx.execute(
            "INSERT INTO careteam (id, patient, version, sealed) VALUES (?1, ?2, ?3, ?4)",
            params![&h.0[..], &patient.0[..], version as i64, sealed],
        )?;
        tx.commit()?;
        Ok(team)
    }

    /// Every version of `patient`'s care teams, to judge accesses at their time.
    pub fn history(&self, patient: &Handle) -> Result<History, CareTeamError> {
        let rows: Vec<Row> = {
            let db = self.db()?;
            let mut st = db.prepare(
                "SELECT id, patient, version, sealed FROM careteam WHERE patient = ?1 LIMIT ?2",
            )?;
            let rows = st
                .query_map(
                    params![&patient.0[..], MAX_VERSIONS_PER_PATIENT as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?
                .collect::<Result<_, _>>()?;
            rows
        };
        let mut versions = rows
            .into_iter()
            .map(|(i, p, v, s)| self.open_row(&i, &p, v, &s))
            .collect::<Result<Vec<_>, _>>()?;
        versions.sort_by(|a, b| (&a.id, a.version).cmp(&(&b.id, b.version)));
        Ok(History { versions })
    }

    /// Whether `subject` is on an active care team of `patient` now: `None` when the
    /// patient has no active care team (nothing is known).
    pub fn is_member(
        &self,
        patient: &Handle,
        subject: &str,
    ) -> Result<Option<bool>, CareTeamError> {
        Ok(self.history(patient)?.member_at(subject, None))
    }
}

/// Every version of one patient's care teams.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// By id, then version.
    versions: Vec<CareTeam>,
}

impl History {
    /// Whether `subject` was on an active care team in force at `time` (RFC 3339 UTC, as
    /// the audit trail writes it; `None`: now): for each team, its latest version recorded
    /// at or before then. `None` when no active team was in force (nothing was known).
    pub fn member_at(&self, subject: &str, time: Option<&str>) -> Option<bool> {
        let mut any = false;
        let mut at = 0;
        while at < self.versions.len() {
            let id = &self.versions[at].id;
            let end = self.versions[at..]
                .iter()
                .position(|v| &v.id != id)
                .map_or(self.versions.len(), |n| at + n);
            let in_force = self.versions[at..end]
                .iter()
                .rev()
                .find(|v| time.is_none_or(|t| v.recorded.as_str() <= t));
            if let Some(v) = in_force.filter(|v| v.active) {
                any = true;
                if v.members.iter().any(|m| m == subject) {
                    return Some(true);
                }
            }
            at = end;
        }
        any.then_some(false)
    }

    /// Whether an access by `subject` at `time` was outside the care teams then in force.
    pub fn outside_at(&self, subject: &str, time: &str) -> bool {
        self.member_at(subject, Some(time)) == Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(status: &str, members: &[&str]) -> Vec<u8> {
        let ps: Vec<Value> = members
            .iter()
            .map(|m| json!({"member": {"identifier": {"value": m}, "display": "Dr X"}}))
            .collect();
        serde_json::to_vec(&json!({
            "resourceType": "CareTeam",
            "id": "ct-1",
            "status": status,
            "name": "Neuro-oncology",
            "subject": {"identifier": {"system": "urn:oid:1.2.3", "value": "PID-1"}},
            "participant": ps,
        }))
        .unwrap()
    }

    fn teams(dir: &Path) -> CareTeams {
        CareTeams::open(&dir.join(CARETEAM_DB), Key::from_slice(&[5; 32]).unwrap()).unwrap()
    }

    #[test]
    fn a_care_team_parses_by_identifiers_and_refuses_the_rest() {
        let d = parse(&team("active", &["dr-smith", "dr-smith", "nurse-lee"])).unwrap();
        assert_eq!(d.id.as_deref(), Some("ct-1"));
        assert_eq!(
            (d.patient.id.as_str(), d.patient.issuer.as_str()),
            ("PID-1", "1.2.3")
        );
        assert!(d.active);
        assert_eq!(d.members, ["dr-smith", "nurse-lee"]);
        assert!(!parse(&team("inactive", &["dr-smith"])).unwrap().active);
        for (body, status) in [
            (&b"[]"[..], 400),
            (b"{\"resourceType\":\"Consent\"}", 400),
            (b"{\"resourceType\":\"CareTeam\",\"status\":\"active\"}", 422),
            (
                b"{\"resourceType\":\"CareTeam\",\"status\":\"active\",\"subject\":{\"reference\":\"Patient/1\"}}",
                422,
            ),
            (
                b"{\"resourceType\":\"CareTeam\",\"status\":\"bogus\",\"subject\":{\"identifier\":{\"value\":\"P\"}}}",
                400,
            ),
            (
                b"{\"resourceType\":\"CareTeam\",\"status\":\"active\",\"subject\":{\"identifier\":{\"value\":\"P\"}},\"participant\":[{\"member\":{\"reference\":\"Practitioner/1\"}}]}",
                422,
            ),
            (
                b"{\"resourceType\":\"CareTeam\",\"status\":\"active\",\"subject\":{\"identifier\":{\"value\":\"P\"}},\"surprise\":1}",
                400,
            ),
        ] {
            assert_eq!(parse(body).map_err(|e| e.status), Err(status), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn membership_counts_active_teams_only_and_is_unknown_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = teams(dir.path());
        let (p, q) = (Handle([1; 32]), Handle([2; 32]));
        assert_eq!(t.is_member(&p, "dr-smith").unwrap(), None);
        let d = parse(&team("active", &["dr-smith"])).unwrap();
        let kept = t.put("ct-1", &p, d, "2026-12-04T10:00:00Z".into()).unwrap();
        assert_eq!(kept.version, 1);
        assert_eq!(t.is_member(&p, "dr-smith").unwrap(), Some(true));
        assert_eq!(t.is_member(&p, "dr-jones").unwrap(), Some(false));
        assert_eq!(t.is_member(&q, "dr-jones").unwrap(), None);
        // The id is this patient's: another patient cannot take it.
        let d = parse(&team("active", &["dr-jones"])).unwrap();
        assert!(matches!(
            t.put("ct-1", &q, d, "2026-12-04T10:00:00Z".into()),
            Err(CareTeamError::OtherPatient)
        ));
        // A new version: the team ended.
        let d = parse(&team("inactive", &["dr-smith"])).unwrap();
        assert_eq!(
            t.put("ct-1", &p, d, "2026-12-04T11:00:00Z".into())
                .unwrap()
                .version,
            2
        );
        assert_eq!(t.is_member(&p, "dr-smith").unwrap(), None);
        assert_eq!(t.get("ct-1").unwrap().unwrap().version, 2);
        let fhir = to_fhir(&t.get("ct-1").unwrap().unwrap());
        assert_eq!(fhir["status"], "inactive");
        assert_eq!(fhir["meta"]["versionId"], "2");
    }

    #[test]
    fn an_access_is_judged_against_the_teams_in_force_at_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let t = teams(dir.path());
        let p = Handle([1; 32]);
        let put = |status: &str, members: &[&str], when: &str| {
            t.put(
                "ct-1",
                &p,
                parse(&team(status, members)).unwrap(),
                when.into(),
            )
            .unwrap()
        };
        put("active", &["dr-smith"], "2026-03-01T00:00:00Z");
        put("active", &["dr-smith", "dr-jones"], "2026-06-01T00:00:00Z");
        put(
            "inactive",
            &["dr-smith", "dr-jones"],
            "2026-09-01T00:00:00Z",
        );
        let h = t.history(&p).unwrap();
        // Before any team: nothing known.
        assert!(!h.outside_at("dr-jones", "2026-02-01T00:00:00Z"));
        // Dr Jones joined in June: outside in April, inside in July.
        assert!(h.outside_at("dr-jones", "2026-04-01T00:00:00Z"));
        assert!(!h.outside_at("dr-jones", "2026-07-01T00:00:00Z"));
        assert!(!h.outside_at("dr-smith", "2026-04-01T00:00:00Z"));
        // The team ended in September: nothing known after, marks before stay.
        assert!(!h.outside_at("dr-lee", "2026-10-01T00:00:00Z"));
        assert!(h.outside_at("dr-lee", "2026-08-01T00:00:00Z"));
        assert_eq!(h.member_at("dr-lee", None), None);
    }

    #[test]
    fn nothing_identifying_is_kept_in_the_clear_and_rows_are_bound() {
        let dir = tempfile::tempdir().unwrap();
        let t = teams(dir.path());
        let (p, q) = (Handle([1; 32]), Handle([2; 32]));
        let d = parse(&team("active", &["dr-smith-unique"])).unwrap();
        t.put("ct-secret-id", &p, d.clone(), "2026-12-04T10:00:00Z".into())
            .unwrap();
        t.put("ct-other", &q, d, "2026-12-04T10:00:00Z".into())
            .unwrap();
        drop(t);
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let b = std::fs::read(f.unwrap().path()).unwrap();
            for needle in [&b"PID-1"[..], b"dr-smith-unique", b"ct-secret-id"] {
                assert!(!b.windows(needle.len()).any(|w| w == needle));
            }
        }
        // A team moved to another patient does not open.
        let t = teams(dir.path());
        t.db()
            .unwrap()
            .execute(
                "UPDATE careteam SET patient = ?1 WHERE patient = ?2",
                params![&q.0[..], &p.0[..]],
            )
            .unwrap();
        assert!(matches!(t.is_member(&q, "x"), Err(CareTeamError::Sealed)));
    }
}
