//! Which accesses deserve a second look, for the patient's access log and the auditor's
//! unusual-access report: one set of rules, two vocabularies.
//!
//! The rules, each read from one audit event alone (so the patient's log, which reads only
//! that patient's events, and the auditor's report, which reads a range, agree):
//! - **break-glass**: an emergency override of the usual access rules;
//! - **bulk**: more than 10 patients, or more than 20 studies (the patient's log counts
//!   theirs; the report counts every patient's);
//! - **night-time**: a clinician or administrator *reading* images (retrieve or search)
//!   within the site's night hours (`[portal] night_hours`, local to `utc_offset`). Stores
//!   at night are routine (modalities and routers send around the clock) and patients
//!   reading their own images are not staff access, so neither is marked;
//! - **outside the care team**: a clinician reading the images of a patient whose care
//!   teams in force at the time, as the EHR records them (`PUT /fhir/CareTeam`), are active
//!   and do not include them. A patient with no active care team then is not marked
//!   (nothing was known);
//! - **refused or failed**: anything that did not succeed.

use std::collections::{HashMap, HashSet};

use radveil_audit::{Action, Event, Outcome, Role};
use radveil_consent::careteam::History;

use crate::app::AppState;

/// Most patients one access may touch before it counts as bulk.
pub const BULK_PATIENTS: usize = 10;
/// Most studies one access may touch before it counts as bulk.
pub const BULK_STUDIES: usize = 20;

/// One reason an access is unusual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// An emergency override of the access rules.
    BreakGlass,
    /// Many patients or many studies at once.
    Bulk,
    /// Staff reading images in the site's night hours.
    NightTime,
    /// A clinician on none of the patient's care teams.
    OutsideCareTeam,
    /// Refused or failed.
    Refused,
}

impl Mark {
    /// The mark in the words a patient reads.
    pub fn for_patient(self) -> &'static str {
        match self {
            Mark::BreakGlass => "Emergency access (break-glass)",
            Mark::Bulk => "Bulk access",
            Mark::NightTime => "Night-time access",
            Mark::OutsideCareTeam => "Someone outside your care team",
            Mark::Refused => "Refused or failed",
        }
    }

    /// The mark in the words an auditor reads.
    pub fn for_staff(self) -> &'static str {
        match self {
            Mark::BreakGlass => "Break-glass",
            Mark::Bulk => "Bulk access",
            Mark::NightTime => "Night-time access",
            Mark::OutsideCareTeam => "Outside the care team",
            Mark::Refused => "Refused or failed",
        }
    }
}

/// Most patients of one event checked against their care teams (bulk access is marked
/// anyway).
const CARE_CHECKED_PER_EVENT: usize = 50;
/// Most patients whose care teams one page reads, the newest events first.
const MAX_CARE_CHECKS: usize = 10_000;

/// The subject of a clinician who read images successfully in `e`, whose care-team
/// membership matters.
fn clinician_reading(e: &Event) -> Option<&str> {
    let reading = matches!(e.action, Action::Retrieve | Action::Query);
    (e.actor.role == Some(Role::Clinician) && reading && e.outcome == Outcome::Success)
        .then_some(e.actor.subject.as_deref())
        .flatten()
}

/// The care-team histories of the patients whose images clinicians read among some
/// events, read from the care-team store in one blocking pass before marking; each read is
/// then judged against the teams in force at its time.
#[derive(Debug, Default)]
pub struct CareTeamCheck {
    /// By (Patient ID, issuer).
    histories: HashMap<(String, Option<String>), History>,
}

impl CareTeamCheck {
    /// Reads the histories of the patients of the clinicians' reads among `events` (of
    /// `patient` only, when given), the newest events first, at most [`MAX_CARE_CHECKS`].
    pub async fn of(
        state: &AppState,
        events: &[(u64, Event)],
        patient: Option<(&str, Option<&str>)>,
    ) -> CareTeamCheck {
        let Some(teams) = state.portal.careteams.clone() else {
            return CareTeamCheck::default();
        };
        let mut asked: HashSet<(String, Option<String>)> = HashSet::new();
        for (_, e) in events.iter().rev() {
            if asked.len() >= MAX_CARE_CHECKS {
                break;
            }
            if clinician_reading(e).is_none() {
                continue;
            }
            for p in e.patients.iter().take(CARE_CHECKED_PER_EVENT) {
                if patient.is_some_and(|(id, issuer)| p.id != id || p.issuer.as_deref() != issuer) {
                    continue;
                }
                asked.insert((p.id.clone(), p.issuer.clone()));
            }
        }
        if asked.is_empty() {
            return CareTeamCheck::default();
        }
        let store = state.store.clone();
        let histories = tokio::task::spawn_blocking(move || {
            asked
                .into_iter()
                .filter_map(|(id, issuer)| {
                    let h = store.patient(&id, issuer.as_deref().unwrap_or(""));
                    match teams.history(&h) {
                        Ok(history) => Some(((id, issuer), history)),
                        Err(e) => {
                            tracing::error!(error = %e, "a care team could not be read");
                            None
                        }
                    }
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        CareTeamCheck { histories }
    }

    fn outside(&self, e: &Event, patient: Option<(&str, Option<&str>)>) -> bool {
        let Some(subject) = clinician_reading(e) else {
            return false;
        };
        e.patients
            .iter()
            .take(CARE_CHECKED_PER_EVENT)
            .filter(|p| {
                patient.is_none_or(|(id, issuer)| p.id == id && p.issuer.as_deref() == issuer)
            })
            .any(|p| {
                self.histories
                    .get(&(p.id.clone(), p.issuer.clone()))
                    .is_some_and(|h| h.outside_at(subject, &e.time))
            })
    }
}

/// The site's night hours: `from` up to (not including) `to`, in minutes after local
/// midnight, local time being UTC plus `offset` minutes. Wraps past midnight when
/// `from > to`; empty when they are equal (no night rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NightHours {
    from: u16,
    to: u16,
    offset: i16,
}

impl Default for NightHours {
    /// 22:00 to 06:00 UTC.
    fn default() -> Self {
        NightHours {
            from: 22 * 60,
            to: 6 * 60,
            offset: 0,
        }
    }
}

/// Why night hours or an offset could not be read (the text is the site's, not PHI).
#[derive(Debug, thiserror::Error)]
pub enum NightHoursError {
    /// Not `HH:MM-HH:MM`.
    #[error("night hours are written HH:MM-HH:MM (for example 22:00-06:00)")]
    Hours,
    /// Not `+HH:MM` or `-HH:MM` within ±14:00.
    #[error("a UTC offset is written +HH:MM or -HH:MM, at most 14:00 (for example +01:00)")]
    Offset,
}

fn clock(t: &str) -> Option<u16> {
    let (h, m) = t.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl NightHours {
    /// Night hours from `HH:MM-HH:MM` and a UTC offset `±HH:MM` (`Z` or `+00:00` for UTC).
    pub fn parse(hours: &str, offset: &str) -> Result<Self, NightHoursError> {
        let (from, to) = hours.trim().split_once('-').ok_or(NightHoursError::Hours)?;
        let from = clock(from.trim()).ok_or(NightHoursError::Hours)?;
        let to = clock(to.trim()).ok_or(NightHoursError::Hours)?;
        let offset = offset.trim();
        let offset = if offset.eq_ignore_ascii_case("z") {
            0
        } else {
            let (sign, rest) = match offset.as_bytes().first() {
                Some(b'+') => (1, &offset[1..]),
                Some(b'-') => (-1, &offset[1..]),
                _ => return Err(NightHoursError::Offset),
            };
            let m = clock(rest).ok_or(NightHoursError::Offset)?;
            if m > 14 * 60 {
                return Err(NightHoursError::Offset);
            }
            sign * m as i16
        };
        Ok(NightHours { from, to, offset })
    }

    /// Whether an event's time (`YYYY-MM-DDThh:mm:ssZ`) falls in the night hours; an
    /// unreadable time does not.
    pub fn contains(&self, time: &str) -> bool {
        let Some(utc) = time.get(11..16).and_then(clock) else {
            return false;
        };
        let local = (i32::from(utc) + i32::from(self.offset)).rem_euclid(24 * 60) as u16;
        match self.from.cmp(&self.to) {
            std::cmp::Ordering::Less => (self.from..self.to).contains(&local),
            std::cmp::Ordering::Greater => local >= self.from || local < self.to,
            std::cmp::Ordering::Equal => false,
        }
    }
}

/// Why `e` is unusual, under the site's `night` hours and the care teams resolved in
/// `care`. With `patient` (an ID and its issuer), bulk counts that patient's studies and
/// only their care team counts; without, every patient's.
pub fn marks(
    e: &Event,
    patient: Option<(&str, Option<&str>)>,
    night: &NightHours,
    care: &CareTeamCheck,
) -> Vec<Mark> {
    let mut m = Vec::new();
    if e.is_break_glass() {
        m.push(Mark::BreakGlass);
    }
    let studies: usize = match patient {
        Some((id, issuer)) => e
            .patients
            .iter()
            .filter(|p| p.id == id && p.issuer.as_deref() == issuer)
            .map(|p| p.studies.len())
            .sum(),
        None => e.patients.iter().map(|p| p.studies.len()).sum(),
    };
    if e.patients.len() > BULK_PATIENTS || studies > BULK_STUDIES {
        m.push(Mark::Bulk);
    }
    let staff = matches!(e.actor.role, Some(Role::Clinician | Role::Admin));
    let reading = matches!(e.action, Action::Retrieve | Action::Query);
    if staff && reading && night.contains(&e.time) {
        m.push(Mark::NightTime);
    }
    if care.outside(e, patient) {
        m.push(Mark::OutsideCareTeam);
    }
    if e.outcome != Outcome::Success {
        m.push(Mark::Refused);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn night_hours_wrap_past_midnight_and_follow_the_offset() {
        let n = NightHours::default();
        assert!(n.contains("2026-03-03T23:10:00Z"));
        assert!(n.contains("2026-03-03T05:59:59Z"));
        assert!(!n.contains("2026-03-03T06:00:00Z"));
        assert!(!n.contains("2026-03-03T14:02:00Z"));
        assert!(!n.contains("garbage"));
        let paris = NightHours::parse("22:00-06:00", "+01:00").unwrap();
        assert!(paris.contains("2026-03-03T21:30:00Z"));
        assert!(!paris.contains("2026-03-03T05:30:00Z"));
        let day = NightHours::parse("01:00-05:00", "-05:00").unwrap();
        assert!(day.contains("2026-03-03T07:00:00Z"));
        assert!(!day.contains("2026-03-03T01:00:00Z"));
        let none = NightHours::parse("00:00-00:00", "Z").unwrap();
        assert!(!none.contains("2026-03-03T00:00:00Z"));
    }

    #[test]
    fn night_hours_refuse_what_is_not_a_clock() {
        for bad in [
            "22-06",
            "24:00-06:00",
            "22:60-06:00",
            "2200-0600",
            "",
            "-",
            "+1:00-2:00",
        ] {
            assert!(NightHours::parse(bad, "Z").is_err(), "{bad}");
        }
        for bad in ["01:00", "+15:00", "+1:00", "UTC", ""] {
            assert!(NightHours::parse("22:00-06:00", bad).is_err(), "{bad}");
        }
    }
}
