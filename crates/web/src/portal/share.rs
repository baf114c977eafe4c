//! Share links: a patient (or a clinician, for a patient's study) makes a link to one study
//! that anyone holding it can open in the viewer without an account, until it expires (7
//! days unless chosen otherwise, 30 at most) or the patient or its maker revokes it; optionally it also needs a PIN, given
//! apart from the link. Whoever opens it gets a session that sees that study only, on
//! DICOMweb reads only ([`crate::scope::Scope::Study`]); everything they read is in the
//! audit trail, as "someone you shared a link with", in the patient's access log.
//!
//! The link's secret is 256 random bits; the server keeps only its SHA-256 (`DATA/shares.db`),
//! with the study, the patient and the PIN's Argon2id hash sealed (AES-256-GCM under
//! `DATA/keys/share-key`, the row's hash as associated data). Five wrong PINs lock a link.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use radveil_store::{Handle, Key};

/// The file of the share database under the gateway's data folder.
pub const SHARES_DB: &str = "shares.db";
/// The share key's file under the gateway's data folder.
pub const SHARE_KEY_FILE: &str = "keys/share-key";
/// How long a link lasts unless the patient says otherwise (days).
pub const DEFAULT_DAYS: u64 = 7;
/// The longest a link may last (days).
pub const MAX_DAYS: u64 = 30;
/// Wrong PINs after which a link is locked.
pub const MAX_FAILURES: u32 = 5;
/// Links one patient may have live at once.
pub const MAX_LIVE_PER_PATIENT: usize = 50;
/// Links one member of staff may have live at once.
pub const MAX_LIVE_PER_MAKER: usize = 200;
/// The shortest and longest PIN (digits).
pub const PIN_DIGITS: (usize, usize) = (4, 12);

const AAD: &[u8] = b"radveil share 1";

/// Why a share could not be made, found or used.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The database failed.
    #[error("share database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A row did not open with the key (altered, moved, or another key).
    #[error("a share link's record failed its integrity check")]
    Tampered,
    /// No randomness.
    #[error("no randomness from the operating system")]
    Random,
    /// The request is not acceptable (in words for the user).
    #[error("{0}")]
    Invalid(&'static str),
}

/// Why a link does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No such link (or never one).
    Unknown,
    /// Past its expiry.
    Expired,
    /// Revoked by the patient.
    Revoked,
    /// It needs its PIN.
    PinNeeded,
    /// The PIN given is wrong (tries left).
    WrongPin(u32),
    /// Too many wrong PINs.
    Locked,
}

/// A share link as the server keeps it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The link's public id (the first 16 hex digits of its secret's SHA-256): how the
    /// patient's page and the audit trail name it.
    pub id: String,
    /// The patient's handle.
    pub patient: Handle,
    /// The study's handle.
    pub study: Handle,
    /// The study's UID (sealed at rest).
    pub study_uid: String,
    /// The patient's ID and issuer (sealed at rest), for the share session's principal.
    pub patient_id: (String, String),
    /// Made (Unix seconds).
    pub created: u64,
    /// Good until (Unix seconds).
    pub expires: u64,
    /// Revoked at (Unix seconds).
    pub revoked: Option<u64>,
    /// Whether it needs a PIN.
    pub pin: bool,
    /// Wrong PINs so far.
    pub failures: u32,
    /// Who made it when not the patient: the staff member as the patient reads it
    /// ("Dr A. Smith (clinician)"; sealed at rest).
    pub made_by: Option<String>,
}

/// A link to be made ([`Shares::make`]).
pub struct NewLink<'a> {
    /// The patient's handle.
    pub patient: Handle,
    /// The patient's ID and issuer.
    pub patient_id: (&'a str, &'a str),
    /// The study's handle.
    pub study: Handle,
    /// The study's UID.
    pub study_uid: &'a str,
    /// How long it lasts (1 to [`MAX_DAYS`]).
    pub days: u64,
    /// The PIN it needs, if any.
    pub pin: Option<&'a str>,
    /// Who makes it when not the patient.
    pub maker: Option<Maker<'a>>,
}

/// A member of staff making a link for a patient.
#[derive(Clone, Copy)]
pub struct Maker<'a> {
    /// [`maker_key`] of their token's issuer and subject: how their links are found.
    pub key: [u8; 32],
    /// Their name as the patient reads it.
    pub name: &'a str,
}

/// The key a staff member's links are kept under: SHA-256 of their token's issuer and
/// subject (stable across sessions, not a name).
pub fn maker_key(issuer: &str, subject: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"radveil share maker\0");
    h.update(issuer.as_bytes());
    h.update(b"\0");
    h.update(subject.as_bytes());
    h.finalize().into()
}

impl Share {
    /// Whether it can still be opened at `now`.
    pub fn live(&self, now: u64) -> bool {
        self.revoked.is_none() && now < self.expires && self.failures < MAX_FAILURES
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    study_uid: String,
    patient_id: String,
    issuer: String,
    pin_salt: Option<String>,
    pin_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    made_by: Option<String>,
}

/// The share links of one data folder.
pub struct Shares {
    db: Mutex<Connection>,
    key: Key,
}

impl std::fmt::Debug for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shares(..)")
    }
}

fn hex(b: &[u8]) -> String {
    Handle::hex_of(b)
}

fn pin_hash(pin: &str, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, ShareError> {
    let mut out = Zeroizing::new([0u8; 32]);
    argon2::Argon2::default()
        .hash_password_into(pin.as_bytes(), salt, out.as_mut())
        .map_err(|_| ShareError::Invalid("the PIN could not be hashed"))?;
    Ok(out)
}

/// A PIN as people type it: digits only, 4 to 12 of them.
pub fn valid_pin(pin: &str) -> bool {
    (PIN_DIGITS.0..=PIN_DIGITS.1).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

impl Shares {
    /// Opens (making it 0600 on first use) the share database at `path`.
    pub fn open(path: &Path, key: Key) -> Result<Shares, ShareError> {
        radveil_store::create_private(path).map_err(|_| {
            ShareError::Invalid("the share database could not be made, or is not a regular file")
        })?;
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;
             CREATE TABLE IF NOT EXISTS share (
                 hash BLOB PRIMARY KEY, patient BLOB NOT NULL, study BLOB NOT NULL,
                 created INTEGER NOT NULL, expires INTEGER NOT NULL, revoked INTEGER,
                 failures INTEGER NOT NULL DEFAULT 0, sealed BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS share_patient ON share(patient);",
        )?;
        // Links made by staff (added after the first release: older files gain the column).
        let has_maker = db
            .prepare("SELECT 1 FROM pragma_table_info('share') WHERE name = 'maker'")?
            .exists([])?;
        if !has_maker {
            db.execute_batch("ALTER TABLE share ADD COLUMN maker BLOB")?;
        }
        db.execute_batch("CREATE INDEX IF NOT EXISTS share_maker ON share(maker)")?;
        Ok(Shares {
            db: Mutex::new(db),
            key,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a row's seal binds: its hash, patient, study, creation, expiry and maker (so
    /// none of them can be edited, say to extend a link or hand it to another member of
    /// staff, without the row failing to open).
    fn aad(
        hash: &[u8],
        patient: &[u8],
        study: &[u8],
        created: u64,
        expires: u64,
        maker: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut a = AAD.to_vec();
        for part in [hash, patient, study] {
            a.extend_from_slice(part);
        }
        a.extend_from_slice(&created.to_be_bytes());
        a.extend_from_slice(&expires.to_be_bytes());
        if let Some(m) = maker {
            a.extend_from_slice(b"maker");
            a.extend_from_slice(m);
        }
        a
    }

    /// Makes a link to `study` of `patient`, lasting `days` (1 to [`MAX_DAYS`]) from `now`,
    /// needing `pin` when given. Gives the link's secret (shown once) and the share.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        patient: Handle,
        patient_id: (&str, &str),
        study: Handle,
        study_uid: &str,
        days: u64,
        pin: Option<&str>,
        now: u64,
    ) -> Result<(Zeroizing<String>, Share), ShareError> {
        self.make(
            &NewLink {
                patient,
                patient_id,
                study,
                study_uid,
                days,
                pin,
                maker: None,
            },
            now,
        )
    }

    /// Makes the link `l` at `now` (by its patient, or by the staff member `l.maker`).
    /// Gives the link's secret (shown once) and the share.
    pub fn make(
        &self,
        l: &NewLink<'_>,
        now: u64,
    ) -> Result<(Zeroizing<String>, Share), ShareError> {
        let NewLink {
            patient,
            patient_id,
            study,
            study_uid,
            days,
            pin,
            maker,
        } = *l;
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(ShareError::Invalid("a link lasts from 1 to 30 days"));
        }
        if pin.is_some_and(|p| !valid_pin(p)) {
            return Err(ShareError::Invalid("a PIN is 4 to 12 digits"));
        }
        let live = self.list(&patient)?.iter().filter(|s| s.live(now)).count();
        if live >= MAX_LIVE_PER_PATIENT {
            return Err(ShareError::Invalid(
                "too many links to this patient's images are open: stop some first",
            ));
        }
        if let Some(m) = &maker {
            let live = self.made_by(&m.key)?.iter().filter(|s| s.live(now)).count();
            if live >= MAX_LIVE_PER_MAKER {
                return Err(ShareError::Invalid(
                    "you have too many links open: stop some first",
                ));
            }
        }
        let secret =
            Zeroizing::new(radveil_access::oidc::random_text(32).map_err(|_| ShareError::Random)?);
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let (pin_salt, pin_hash) = match pin {
            Some(p) => {
                let mut salt = [0u8; 16];
                getrandom::getrandom(&mut salt).map_err(|_| ShareError::Random)?;
                (Some(hex(&salt)), Some(hex(pin_hash(p, &salt)?.as_ref())))
            }
            None => (None, None),
        };
        let sealed = Zeroizing::new(
            serde_json::to_vec(&Sealed {
                study_uid: study_uid.to_string(),
                patient_id: patient_id.0.to_string(),
                issuer: patient_id.1.to_string(),
                pin_salt,
                pin_hash,
                made_by: maker.map(|m| m.name.to_string()),
            })
            .map_err(|_| ShareError::Invalid("the link could not be recorded"))?,
        );
        let expires = now.saturating_add(days * 86_400);
        let sealed = self
            .key
            .seal(
                &sealed,
                &Self::aad(
                    &hash,
                    &patient.0,
                    &study.0,
                    now,
                    expires,
                    maker.as_ref().map(|m| &m.key[..]),
                ),
            )
            .map_err(|_| ShareError::Invalid("the link could not be sealed"))?;
        self.db().execute(
            "INSERT INTO share (hash, patient, study, created, expires, sealed, maker) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![&hash[..], &patient.0[..], &study.0[..], now as i64, expires as i64, sealed, maker.as_ref().map(|m| m.key.to_vec())],
        )?;
        let share = Share {
            id: hex(&hash[..8]),
            patient,
            study,
            study_uid: study_uid.to_string(),
            patient_id: (patient_id.0.to_string(), patient_id.1.to_string()),
            created: now,
            expires,
            revoked: None,
            pin: pin.is_some(),
            failures: 0,
            made_by: maker.map(|m| m.name.to_string()),
        };
        Ok((secret, share))
    }

    fn row(&self, r: &rusqlite::Row<'_>) -> Result<(Share, Sealed), ShareError> {
        let hash: Vec<u8> = r.get(0)?;
        let patient: Vec<u8> = r.get(1)?;
        let study: Vec<u8> = r.get(2)?;
        let sealed: Vec<u8> = r.get(7)?;
        let maker: Option<Vec<u8>> = r.get(8)?;
        let created = u64::try_from(r.get::<_, i64>(3)?).map_err(|_| ShareError::Tampered)?;
        let expires = u64::try_from(r.get::<_, i64>(4)?).map_err(|_| ShareError::Tampered)?;
        let plain = Zeroizing::new(
            self.key
                .open(
                    &sealed,
                    &Self::aad(&hash, &patient, &study, created, expires, maker.as_deref()),
                )
                .ok_or(ShareError::Tampered)?,
        );
        let s: Sealed = serde_json::from_slice(&plain).map_err(|_| ShareError::Tampered)?;
        let handle = |b: &[u8]| Handle::from_slice(b).map_err(|_| ShareError::Tampered);
        let revoked: Option<i64> = r.get(5)?;
        let share = Share {
            id: hex(hash.get(..8).ok_or(ShareError::Tampered)?),
            patient: handle(&patient)?,
            study: handle(&study)?,
            study_uid: s.study_uid.clone(),
            patient_id: (s.patient_id.clone(), s.issuer.clone()),
            created,
            expires,
            revoked: revoked.map(|t| t.max(0) as u64),
            pin: s.pin_hash.is_some(),
            failures: r.get::<_, i64>(6)?.clamp(0, u32::MAX as i64) as u32,
            made_by: s.made_by.clone(),
        };
        Ok((share, s))
    }

    /// The patient's links, newest first.
    pub fn list(&self, patient: &Handle) -> Result<Vec<Share>, ShareError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT hash, patient, study, created, expires, revoked, failures, sealed, maker FROM share WHERE patient = ?1 ORDER BY created DESC",
        )?;
        let mut rows = st.query(params![&patient.0[..]])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let (share, s) = self.row(r)?;
            // A row moved to another patient's handle does not open as theirs.
            if share.patient != *patient {
                return Err(ShareError::Tampered);
            }
            drop(s);
            out.push(share);
        }
        Ok(out)
    }

    /// The links the staff member `maker` ([`maker_key`]) made, newest first.
    pub fn made_by(&self, maker: &[u8; 32]) -> Result<Vec<Share>, ShareError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT hash, patient, study, created, expires, revoked, failures, sealed, maker FROM share WHERE maker = ?1 ORDER BY created DESC",
        )?;
        let mut rows = st.query(params![&maker[..]])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(self.row(r)?.0);
        }
        Ok(out)
    }

    /// Revokes the link `id` that the staff member `maker` made; false when they made no
    /// such link.
    pub fn revoke_made_by(&self, maker: &[u8; 32], id: &str, now: u64) -> Result<bool, ShareError> {
        if !self.made_by(maker)?.iter().any(|s| s.id == id) {
            return Ok(false);
        }
        let n = self.db().execute(
            "UPDATE share SET revoked = ?1 WHERE maker = ?2 AND hex(substr(hash, 1, 8)) = upper(?3) AND revoked IS NULL",
            params![now as i64, &maker[..], id],
        )?;
        Ok(n > 0)
    }

    /// Revokes the patient's link `id`; false when they have no such link.
    pub fn revoke(&self, patient: &Handle, id: &str, now: u64) -> Result<bool, ShareError> {
        let Some(hash) = self
            .list(patient)?
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| s.id)
        else {
            return Ok(false);
        };
        let db = self.db();
        let n = db.execute(
            "UPDATE share SET revoked = ?1 WHERE patient = ?2 AND hex(substr(hash, 1, 8)) = upper(?3) AND revoked IS NULL",
            params![now as i64, &patient.0[..], hash],
        )?;
        Ok(n > 0)
    }

    /// Opens the link whose secret is `secret` at `now`, with `pin` when it needs one. A
    /// wrong PIN counts against the link (it locks after [`MAX_FAILURES`]).
    pub fn redeem(
        &self,
        secret: &str,
        pin: Option<&str>,
        now: u64,
    ) -> Result<Result<Share, Refused>, ShareError> {
        if secret.len() != 43
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(Err(Refused::Unknown));
        }
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let found = {
            let db = self.db();
            let mut st = db.prepare(
                "SELECT hash, patient, study, created, expires, revoked, failures, sealed, maker FROM share WHERE hash = ?1",
            )?;
            st.query_row(params![&hash[..]], |r| Ok(self.row(r)))
                .optional()?
        };
        let Some(found) = found else {
            return Ok(Err(Refused::Unknown));
        };
        let (share, sealed) = found?;
        if share.revoked.is_some() {
            return Ok(Err(Refused::Revoked));
        }
        if now >= share.expires {
            return Ok(Err(Refused::Expired));
        }
        if share.failures >= MAX_FAILURES {
            return Ok(Err(Refused::Locked));
        }
        if let (Some(salt), Some(want)) = (&sealed.pin_salt, &sealed.pin_hash) {
            let Some(pin) = pin.filter(|p| !p.is_empty()) else {
                return Ok(Err(Refused::PinNeeded));
            };
            let salt = (0..salt.len())
                .step_by(2)
                .filter_map(|i| salt.get(i..i + 2))
                .filter_map(|h| u8::from_str_radix(h, 16).ok())
                .collect::<Vec<u8>>();
            let got = if valid_pin(pin) {
                hex(pin_hash(pin, &salt)?.as_ref())
            } else {
                String::new()
            };
            if !super::session::constant_time_eq(got.as_bytes(), want.as_bytes()) {
                let db = self.db();
                db.execute(
                    "UPDATE share SET failures = failures + 1 WHERE hash = ?1",
                    params![&hash[..]],
                )?;
                let failures = share.failures + 1;
                return Ok(Err(if failures >= MAX_FAILURES {
                    Refused::Locked
                } else {
                    Refused::WrongPin(MAX_FAILURES - failures)
                }));
            }
        }
        Ok(Ok(share))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(dir: &Path) -> Shares {
        Shares::open(&dir.join(SHARES_DB), Key::from_slice(&[7; 32]).unwrap()).unwrap()
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_link_opens_until_it_expires_or_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let s = shares(dir.path());
        let (p, st) = (Handle([1; 32]), Handle([2; 32]));
        let (secret, share) = s.create(p, ("PID", ""), st, "1.2.3", 7, None, NOW).unwrap();
        assert_eq!(share.expires, NOW + 7 * 86_400);
        let opened = s.redeem(&secret, None, NOW + 10).unwrap().unwrap();
        assert_eq!((opened.study, opened.study_uid.as_str()), (st, "1.2.3"));
        assert_eq!(
            s.redeem(&secret, None, NOW + 7 * 86_400).unwrap(),
            Err(Refused::Expired)
        );
        // Another secret, a malformed one: unknown.
        let other = "A".repeat(43);
        assert_eq!(s.redeem(&other, None, NOW).unwrap(), Err(Refused::Unknown));
        assert_eq!(s.redeem("short", None, NOW).unwrap(), Err(Refused::Unknown));
        // Another patient cannot revoke it; its patient can.
        assert!(!s.revoke(&Handle([9; 32]), &share.id, NOW).unwrap());
        assert!(s.revoke(&p, &share.id, NOW).unwrap());
        assert_eq!(s.redeem(&secret, None, NOW).unwrap(), Err(Refused::Revoked));
        assert_eq!(s.list(&p).unwrap()[0].revoked, Some(NOW));
        // Lifetimes: 1 to 30 days.
        assert!(s
            .create(p, ("PID", ""), st, "1.2.3", 31, None, NOW)
            .is_err());
        assert!(s.create(p, ("PID", ""), st, "1.2.3", 0, None, NOW).is_err());
    }

    #[test]
    fn a_clinicians_link_is_theirs_and_the_patients_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let s = shares(dir.path());
        let (p, st) = (Handle([1; 32]), Handle([2; 32]));
        let dr = maker_key("https://idp", "dr-smith");
        let other = maker_key("https://idp", "dr-jones");
        let made = |s: &Shares| {
            s.make(
                &NewLink {
                    patient: p,
                    patient_id: ("PID", ""),
                    study: st,
                    study_uid: "1.2.3",
                    days: 3,
                    pin: None,
                    maker: Some(Maker {
                        key: dr,
                        name: "Dr A. Smith (clinician)",
                    }),
                },
                NOW,
            )
            .unwrap()
        };
        let (secret, share) = made(&s);
        assert_eq!(share.made_by.as_deref(), Some("Dr A. Smith (clinician)"));
        // Listed for its maker and its patient; nobody else's to stop.
        assert_eq!(s.made_by(&dr).unwrap()[0].id, share.id);
        assert_eq!(
            s.list(&p).unwrap()[0].made_by.as_deref(),
            Some("Dr A. Smith (clinician)")
        );
        assert!(s.made_by(&other).unwrap().is_empty());
        assert!(!s.revoke_made_by(&other, &share.id, NOW).unwrap());
        assert!(s.redeem(&secret, None, NOW).unwrap().is_ok());
        assert!(s.revoke_made_by(&dr, &share.id, NOW).unwrap());
        assert_eq!(s.redeem(&secret, None, NOW).unwrap(), Err(Refused::Revoked));
        // The patient stops a clinician's link too.
        let (secret, share) = made(&s);
        assert!(s.revoke(&p, &share.id, NOW).unwrap());
        assert_eq!(s.redeem(&secret, None, NOW).unwrap(), Err(Refused::Revoked));
        // The maker is bound: a link handed to another member of staff does not open.
        let (secret, _) = made(&s);
        s.db()
            .execute("UPDATE share SET maker = ?1", params![&other[..]])
            .unwrap();
        assert!(matches!(
            s.redeem(&secret, None, NOW),
            Err(ShareError::Tampered)
        ));
    }

    #[test]
    fn a_database_from_before_staff_links_gains_the_column_and_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SHARES_DB);
        let key = Key::from_slice(&[7; 32]).unwrap();
        {
            let s = Shares::open(&path, key.clone()).unwrap();
            s.db()
                .execute_batch("DROP INDEX share_maker; ALTER TABLE share DROP COLUMN maker;")
                .unwrap();
        }
        let s = Shares::open(&path, key).unwrap();
        let (secret, _) = s
            .create(
                Handle([1; 32]),
                ("PID", ""),
                Handle([2; 32]),
                "1.2",
                7,
                None,
                NOW,
            )
            .unwrap();
        assert!(s.redeem(&secret, None, NOW).unwrap().is_ok());
    }

    #[test]
    fn a_pin_is_needed_and_five_wrong_ones_lock_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let s = shares(dir.path());
        let (secret, _) = s
            .create(
                Handle([1; 32]),
                ("PID", ""),
                Handle([2; 32]),
                "1.2",
                7,
                Some("2468"),
                NOW,
            )
            .unwrap();
        assert_eq!(
            s.redeem(&secret, None, NOW).unwrap(),
            Err(Refused::PinNeeded)
        );
        assert!(s.redeem(&secret, Some("2468"), NOW).unwrap().is_ok());
        for left in (1..MAX_FAILURES).rev() {
            assert_eq!(
                s.redeem(&secret, Some("1111"), NOW).unwrap(),
                Err(Refused::WrongPin(left))
            );
        }
        assert_eq!(
            s.redeem(&secret, Some("0000"), NOW).unwrap(),
            Err(Refused::Locked)
        );
        // Locked even for the right PIN now.
        assert_eq!(
            s.redeem(&secret, Some("2468"), NOW).unwrap(),
            Err(Refused::Locked)
        );
        assert!(s
            .create(
                Handle([1; 32]),
                ("PID", ""),
                Handle([2; 32]),
                "1.2",
                7,
                Some("12a4"),
                NOW
            )
            .is_err());
    }

    #[test]
    fn nothing_identifying_is_kept_in_the_clear_and_rows_are_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = shares(dir.path());
        let (secret, _) = s
            .create(
                Handle([1; 32]),
                ("PID-SECRET-42", "HOSP"),
                Handle([2; 32]),
                "1.2.840.99999",
                7,
                Some("123456"),
                NOW,
            )
            .unwrap();
        drop(s);
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let b = std::fs::read(f.unwrap().path()).unwrap();
            for needle in [&b"PID-SECRET-42"[..], b"1.2.840.99999", secret.as_bytes()] {
                assert!(!b.windows(needle.len()).any(|w| w == needle));
            }
        }
        // A link's expiry pushed back does not open.
        let s = shares(dir.path());
        s.db()
            .execute_batch("UPDATE share SET expires = expires + 86400")
            .unwrap();
        assert!(matches!(
            s.redeem(&secret, Some("123456"), NOW),
            Err(ShareError::Tampered)
        ));
        // A row's sealed part moved under another hash does not open.
        let (secret2, _) = s
            .create(
                Handle([3; 32]),
                ("P2", ""),
                Handle([4; 32]),
                "1.9",
                7,
                None,
                NOW,
            )
            .unwrap();
        s.db()
            .execute_batch(
                "UPDATE share SET sealed = (SELECT sealed FROM share ORDER BY rowid LIMIT 1) WHERE patient = x'0303030303030303030303030303030303030303030303030303030303030303'",
            )
            .unwrap();
        assert!(matches!(
            s.redeem(&secret2, None, NOW),
            Err(ShareError::Tampered)
        ));
    }
}
