//! Integrity at ingest (the gateway's side of [`radveil_pipeline::ingest`]): every instance
//! STOW-RS receives has its digital signatures verified against the site's trusted signers,
//! its observation appended to the transparency ledger (`DATA/ledger`) before the response
//! goes, and the advisory checks run; what was found is kept with the instance as private
//! attributes of its sealed search attributes ([`PRIVATE_CREATOR`]), so QIDO-RS
//! (`includefield`) and the metadata show it. A site may require, per client, a valid
//! signature from a trusted signer ([`RequireSigned`]); an instance without one is refused.
//!
//! **Batched, durable appends.** The ledger re-reads its entries under its lock on each
//! append, so observations go through a channel to one writer thread ([`LedgerWriter`])
//! that appends whatever has queued up (the parts of one request come as one job; jobs of
//! concurrent requests merge) as one fsynced batch, and only then answers. It signs a
//! checkpoint when idle for a second, after every [`CHECKPOINT_EVERY`] entries and when the
//! server stops, so `radveil verify --ledger DATA/ledger --key-file DATA/keys/ledger-key`
//! proves what the gateway stored.
//!
//! Ledger records hold keyed hashes of UIDs, series and equipment and hashes of the bytes
//! and pixels: nothing identifying in plaintext (see [`radveil_ledger::Record`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use radveil_ledger::note::Signer;
use radveil_ledger::verdict::admit_after;
use radveil_ledger::{Admission, At, Intent, Ledger, Observation, Position, TornRepair};
use radveil_part10::{MemoryBudget, Vr};
use radveil_pipeline::ingest::{Advisory, Settings, SignatureStatus};
use radveil_pipeline::secret::PermissionPolicy;

use crate::dicom_json::{Attr, Attrs, Level};

/// Private Creator (0009,0010) of radveil's ingest block.
pub const PRIVATE_CREATOR: u32 = 0x0009_0010;
/// The Private Creator's value.
pub const CREATOR: &str = "RADVEIL INGEST 1";
/// (0009,1010) CS: the signature status at ingest (UNSIGNED, TRUSTED, UNTRUSTED, INVALID).
pub const SIGNATURE_STATUS: u32 = 0x0009_1010;
/// (0009,1011) LO: the SHA-256 fingerprint (hex) of the trusted signer's certificate.
pub const SIGNER_FINGERPRINT: u32 = 0x0009_1011;
/// (0009,1012) UL: the index of the instance's entry in the gateway's ledger.
pub const LEDGER_INDEX: u32 = 0x0009_1012;
/// (0009,1013) CS, multi-valued: the advisories found at ingest.
pub const ADVISORIES: u32 = 0x0009_1013;
/// (0009,1014) LT: in a store response's Failed SOP Sequence item, why the part was refused
/// (in words naming tags, never values).
pub const FAILURE_DETAIL: u32 = 0x0009_1014;

/// The private attributes of the block, as the search attributes know them (instance level).
pub const PRIVATE: &[(u32, Level, Vr)] = &[
    (PRIVATE_CREATOR, Level::Instance, Vr::LO),
    (SIGNATURE_STATUS, Level::Instance, Vr::CS),
    (SIGNER_FINGERPRINT, Level::Instance, Vr::LO),
    (LEDGER_INDEX, Level::Instance, Vr::UL),
    (ADVISORIES, Level::Instance, Vr::CS),
];

/// The geometry attributes kept with an instance (beyond Rows and Columns, which QIDO
/// keeps), to compare later instances of its series with. Not identifying.
pub const GEOMETRY: [u32; 3] = [
    radveil_standard::tags::PIXEL_SPACING,
    radveil_standard::tags::IMAGE_ORIENTATION_PATIENT,
    radveil_standard::tags::IMAGE_POSITION_PATIENT,
];

/// Entries between two signed checkpoints at most.
pub const CHECKPOINT_EVERY: u64 = 1000;
/// Most observations appended as one batch.
const MAX_BATCH: usize = 4096;

/// Which clients must send instances with a valid signature from a trusted signer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequireSigned {
    every: bool,
    clients: BTreeSet<String>,
}

impl RequireSigned {
    /// From `--require-signed` values: a client (`client_id`/`azp`) or subject (`sub`), or
    /// `*` for every client.
    pub fn new<S: AsRef<str>>(names: &[S]) -> RequireSigned {
        let mut r = RequireSigned::default();
        for n in names {
            match n.as_ref() {
                "*" => r.every = true,
                other => {
                    r.clients.insert(other.to_string());
                }
            }
        }
        r
    }

    /// Whether nothing is required of anyone.
    pub fn is_empty(&self) -> bool {
        !self.every && self.clients.is_empty()
    }

    /// Whether instances from `principal` (none: no access control) must be signed by a
    /// trusted signer. Without access control only `*` applies: there is no client to name.
    pub fn applies(&self, principal: Option<&radveil_access::Principal>) -> bool {
        if self.every {
            return true;
        }
        principal.is_some_and(|p| {
            p.client.as_ref().is_some_and(|c| self.clients.contains(c))
                || self.clients.contains(&p.subject)
        })
    }
}

/// Counters of what ingest found, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    statuses: [AtomicU64; 4],
    advisories: [AtomicU64; 7],
    refused_unsigned: AtomicU64,
}

impl Counters {
    /// Counts one instance's status and advisories.
    pub fn count(&self, status: SignatureStatus, advisories: &[Advisory]) {
        if let Some(i) = SignatureStatus::ALL.iter().position(|s| *s == status) {
            self.statuses[i].fetch_add(1, Ordering::Relaxed);
        }
        for a in advisories {
            if let Some(i) = Advisory::ALL.iter().position(|x| x == a) {
                self.advisories[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts advisories found after the instance was counted (series, ledger).
    pub fn count_advisories(&self, advisories: &[Advisory]) {
        for a in advisories {
            if let Some(i) = Advisory::ALL.iter().position(|x| x == a) {
                self.advisories[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts an instance refused for want of a trusted signature.
    pub fn refused(&self) {
        self.refused_unsigned.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of these counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let name = "radveil_ingest_signatures_total";
        out.push_str(&format!("# HELP {name} Instances received by STOW-RS, by the status of their digital signatures.\n# TYPE {name} counter\n"));
        for (s, v) in SignatureStatus::ALL.iter().zip(&self.statuses) {
            out.push_str(&format!(
                "{name}{{status=\"{}\"}} {}\n",
                s.term().to_ascii_lowercase(),
                v.load(Ordering::Relaxed)
            ));
        }
        let name = "radveil_ingest_advisories_total";
        out.push_str(&format!("# HELP {name} Advisory findings on instances received by STOW-RS.\n# TYPE {name} counter\n"));
        for (a, v) in Advisory::ALL.iter().zip(&self.advisories) {
            out.push_str(&format!(
                "{name}{{advisory=\"{}\"}} {}\n",
                a.term().to_ascii_lowercase(),
                v.load(Ordering::Relaxed)
            ));
        }
        let name = "radveil_ingest_refused_unsigned_total";
        out.push_str(&format!("# HELP {name} Instances refused for want of a valid signature from a trusted signer.\n# TYPE {name} counter\n{name} {}\n", self.refused_unsigned.load(Ordering::Relaxed)));
        out
    }
}

/// Integrity at ingest, shared by every request.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The trusted signers and the ledger's site key.
    pub settings: Arc<Settings>,
    /// Who must send signed instances.
    pub require: RequireSigned,
    /// What was found, for `/metrics`.
    pub counters: Arc<Counters>,
    /// The memory the parts being checked may decode pixels into at once (for their
    /// binding hash).
    pub budget: Arc<MemoryBudget>,
    ledger: LedgerHandle,
}

/// The memory all parts being checked at once may decode pixels into.
pub const PIXEL_BUDGET: u64 = 1 << 30;

/// What the ledger did with one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logged {
    /// Logged (now, or earlier with the same bytes) at this index, with the equipment
    /// advisories the ledger's earlier entries call for.
    At(u64, Vec<Advisory>),
    /// Not logged: the ledger holds other bytes for this instance.
    Changed,
}

/// Why observations could not be logged (no value from them).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerFailed {
    /// The writer thread is gone.
    #[error("the ledger writer has stopped")]
    Stopped,
    /// The ledger refused the append.
    #[error("the ledger could not be appended: {0}")]
    Log(String),
}

type Reply = tokio::sync::oneshot::Sender<Result<Vec<Logged>, String>>;

/// What writing the tombstones of deleted instances did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tombstoned {
    /// Tombstones appended.
    pub written: usize,
    /// Instances whose last entry was a tombstone already.
    pub already: usize,
    /// Instances the ledger never logged (stored before it existed): no entry to mark.
    pub never_logged: usize,
}

/// A job for the ledger writer.
enum Job {
    /// Observations to log, answered in order.
    Log(Vec<(Observation, Changed)>, Reply),
    /// Deleted instances (keyed instance hashes) to write tombstones for.
    Tombstones(
        Vec<String>,
        tokio::sync::oneshot::Sender<Result<Tombstoned, String>>,
    ),
}

/// The handle to the ledger writer.
#[derive(Debug, Clone)]
struct LedgerHandle {
    tx: mpsc::Sender<Job>,
}

/// The ledger's writer thread; [`LedgerWriter::finish`] waits for it once every [`Ingest`]
/// is dropped (it then signs its last checkpoint).
#[derive(Debug)]
pub struct LedgerWriter(std::thread::JoinHandle<Result<(), radveil_ledger::LedgerError>>);

impl LedgerWriter {
    /// Waits until every [`Ingest`] is gone and the last checkpoint is signed.
    pub fn finish(self) -> Result<(), radveil_ledger::LedgerError> {
        self.0.join().unwrap_or_else(|_| {
            Err(radveil_ledger::LedgerError::Layout(
                "the ledger writer stopped unexpectedly: the last checkpoint was not signed".into(),
            ))
        })
    }
}

impl Ingest {
    /// Starts the ledger writer on an open ledger, with its checkpoint signer.
    pub fn start(
        settings: Settings,
        require: RequireSigned,
        ledger: Ledger,
        signer: Signer,
    ) -> std::io::Result<(Ingest, LedgerWriter)> {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || write_loop(ledger, signer, rx))?;
        Ok((
            Ingest {
                settings: Arc::new(settings),
                require,
                counters: Arc::default(),
                budget: Arc::new(MemoryBudget::new(PIXEL_BUDGET)),
                ledger: LedgerHandle { tx },
            },
            LedgerWriter(handle),
        ))
    }

    /// Logs `observations` durably, in order; returns once they are fsynced. With
    /// [`Changed::Logged`], an instance the ledger holds with other bytes is logged anew
    /// (a new version of an instance the store no longer holds); with [`Changed::Refused`]
    /// it is [`Logged::Changed`].
    pub async fn log(
        &self,
        observations: Vec<Observation>,
        changed: Changed,
    ) -> Result<Vec<Logged>, LedgerFailed> {
        if observations.is_empty() {
            return Ok(Vec::new());
        }
        for why in observations
            .iter()
            .filter_map(|o| o.binding_left_out.as_deref())
        {
            tracing::warn!(reason = %why, "an instance's ledger entry is made without its binding hash");
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ledger
            .tx
            .send(Job::Log(
                observations.into_iter().map(|o| (o, changed)).collect(),
                tx,
            ))
            .map_err(|_| LedgerFailed::Stopped)?;
        rx.await
            .map_err(|_| LedgerFailed::Stopped)?
            .map_err(LedgerFailed::Log)
    }

    /// Records the deletion of the instances with these SOP Instance UIDs: a tombstone
    /// ([`radveil_ledger::RecordKind::Tombstone`]) after each one's last ingest entry,
    /// durably, before returning; `radveil verify --ledger` then says such an instance's
    /// file was deleted. An instance the ledger never logged has no entry to mark, and one
    /// already marked is not marked again (both counted).
    pub async fn tombstone(&self, uids: &[String]) -> Result<Tombstoned, LedgerFailed> {
        if uids.is_empty() {
            return Ok(Tombstoned::default());
        }
        let instances = uids
            .iter()
            .map(|u| radveil_pipeline::observe::instance_hash(&self.settings.key, u))
            .collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ledger
            .tx
            .send(Job::Tombstones(instances, tx))
            .map_err(|_| LedgerFailed::Stopped)?;
        rx.await
            .map_err(|_| LedgerFailed::Stopped)?
            .map_err(LedgerFailed::Log)
    }
}

/// What the ledger knows of instances, series and equipment, kept up to date by the
/// writer so that deciding on an instance and its equipment advisories cost a look-up, not
/// a pass over every entry (which made each append O(entries)). The ledger keeps no record
/// in memory: what is added is read once from its file past where this last stopped
/// ([`Ledger::entries_since`]), folded in, and dropped; an instance's last record is read
/// back from where its line is when it is asked for.
#[derive(Default)]
struct Known {
    series_equipment: HashMap<String, BTreeSet<String>>,
    equipment_signers: HashMap<String, BTreeSet<String>>,
    /// Where each instance's last entry is (index and line offset), by a hash of its keyed
    /// instance hash (8 bytes a key, not a copy of the 64 characters). Two instances whose
    /// hashes collide share a slot: a look-up checks the entry it finds and, when that is
    /// another instance's, searches the entries instead (see [`Known::last`]).
    last: HashMap<u64, At>,
    /// Hashes instance hashes with this process's random keys: a ledger's lines cannot be
    /// chosen to collide.
    hasher: std::collections::hash_map::RandomState,
    /// Where the entries folded in end.
    seen: Position,
}

impl Known {
    #[cfg(test)]
    fn of(ledger: &Ledger) -> Known {
        let mut k = Known::default();
        k.catch_up(ledger).unwrap();
        k
    }

    fn key(&self, instance: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(instance)
    }

    /// Folds in the entries added since the last call: this writer's own and those another
    /// process appended, read from the ledger's file past where the last call stopped. A
    /// ledger read again whole (cut or replaced: not one that only grows) is folded in
    /// again from its start. A read that fails part way is taken up again from where the
    /// last one ended (folding an entry twice changes nothing).
    fn catch_up(&mut self, ledger: &Ledger) -> Result<(), radveil_ledger::LedgerError> {
        let since = ledger.entries_since(&self.seen);
        if since.restarted() {
            *self = Known {
                hasher: std::mem::take(&mut self.hasher),
                ..Known::default()
            };
        }
        for entry in since {
            let (at, r) = entry?;
            let k = self.key(&r.instance);
            self.last.insert(k, at);
            if r.kind == radveil_ledger::RecordKind::Ingest {
                self.add(
                    r.series.as_deref(),
                    r.equipment.as_deref(),
                    r.signer.as_deref(),
                );
            }
        }
        self.seen = ledger.position();
        Ok(())
    }

    /// The index and record of `instance`'s last entry among those folded in by
    /// [`Known::catch_up`], read back from the ledger's file.
    fn last(
        &self,
        ledger: &Ledger,
        instance: &str,
    ) -> Result<Option<(u64, radveil_ledger::Record)>, radveil_ledger::LedgerError> {
        let Some(&at) = self.last.get(&self.key(instance)) else {
            return Ok(None);
        };
        let r = ledger.entry_at(at)?;
        if r.instance == instance {
            return Ok(Some((at.index, r)));
        }
        // Another instance with the same hash took the slot: search.
        ledger.find_instance(instance)
    }

    fn add(&mut self, series: Option<&str>, equipment: Option<&str>, signer: Option<&str>) {
        let Some(e) = equipment else { return };
        if let Some(s) = series {
            self.series_equipment
                .entry(s.to_string())
                .or_default()
                .insert(e.to_string());
        }
        if let Some(s) = signer {
            self.equipment_signers
                .entry(e.to_string())
                .or_default()
                .insert(s.to_string());
        }
    }

    /// As [`Ledger::equipment_advisories`], over the ledger's entries and those `pending`
    /// in the same append before this one.
    fn advisories(&self, obs: &Observation, pending: &[&Observation]) -> Vec<Advisory> {
        let Some(e) = obs.equipment.as_deref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // Some equipment (signer) is known for the series (equipment), and not this one.
        let foreign =
            |set: Option<&BTreeSet<String>>, earlier: &mut dyn Iterator<Item = &str>, v: &str| {
                let mut any = set.is_some_and(|s| !s.is_empty());
                if set.is_some_and(|s| s.contains(v)) {
                    return false;
                }
                for x in earlier {
                    if x == v {
                        return false;
                    }
                    any = true;
                }
                any
            };
        if let Some(s) = obs.series.as_deref() {
            let mut earlier = pending
                .iter()
                .filter(|p| p.series.as_deref() == Some(s))
                .filter_map(|p| p.equipment.as_deref());
            if foreign(self.series_equipment.get(s), &mut earlier, e) {
                out.push(Advisory::ForeignEquipment);
            }
        }
        if let Some(s) = obs.signer.as_deref() {
            let mut earlier = pending
                .iter()
                .filter(|p| p.equipment.as_deref() == Some(e))
                .filter_map(|p| p.signer.as_deref());
            if foreign(self.equipment_signers.get(e), &mut earlier, s) {
                out.push(Advisory::NewSigner);
            }
        }
        out
    }
}

fn checkpoint(ledger: &mut Ledger, signer: &Signer, pending: &mut u64) {
    if *pending == 0 {
        return;
    }
    match ledger.checkpoint(signer) {
        Ok(_) => *pending = 0,
        Err(e) => tracing::error!(error = %e, "the ledger could not be checkpointed"),
    }
}

/// What the ledger does with an instance it holds with other bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// Refuse it ([`Logged::Changed`]): it looks like an altered copy.
    Refused,
    /// Log it: a new version (the store no longer holds the old one).
    Logged,
}

/// Appends one batch; the results in the order of `observations`.
fn append(
    ledger: &mut Ledger,
    known: &mut Known,
    observations: &[(Observation, Changed)],
) -> Result<Vec<Logged>, String> {
    let now = radveil_ledger::rfc3339_now();
    let mut out = Vec::with_capacity(observations.len());
    let mut learned: Vec<&Observation> = Vec::new();
    let mut failed = None;
    ledger
        .append_with(TornRepair::Refuse, |fresh| {
            let start = fresh.size();
            if let Err(e) = known.catch_up(fresh) {
                failed = Some(e);
                return Vec::new();
            }
            let mut records: Vec<radveil_ledger::Record> = Vec::new();
            for (obs, changed) in observations {
                let intent = Intent::Ingest {
                    allow_changed: *changed == Changed::Logged,
                };
                let advisories = known.advisories(obs, &learned);
                let pending = records.iter().rposition(|r| r.instance == obs.instance);
                let earlier = match pending {
                    Some(i) => Some((start + i as u64, records[i].clone())),
                    None => match known.last(fresh, &obs.instance) {
                        Ok(found) => found,
                        Err(e) => {
                            failed = Some(e);
                            out.clear();
                            return Vec::new();
                        }
                    },
                };
                match admit_after(earlier.as_ref().map(|(_, r)| r), obs, intent, &now) {
                    Admission::Append(r) => {
                        out.push(Logged::At(start + records.len() as u64, advisories));
                        learned.push(obs);
                        records.push(r);
                    }
                    Admission::AlreadyLogged => {
                        out.push(match earlier {
                            Some((i, _)) => Logged::At(i, advisories),
                            None => Logged::Changed,
                        });
                    }
                    Admission::Changed => out.push(Logged::Changed),
                }
            }
            records
        })
        .map_err(|e| e.to_string())?;
    if let Some(e) = failed {
        return Err(e.to_string());
    }
    // The entries just written are folded in now (not at the next append, whose batch
    // would otherwise be told of them only then). They are durable already: a read that
    // fails here is taken up again by the next append.
    if let Err(e) = known.catch_up(ledger) {
        tracing::warn!(error = %e, "the ledger's new entries could not be read back; the next append reads them");
    }
    Ok(out)
}

/// Appends the tombstones of deleted instances (keyed instance hashes): each one's last
/// entry, found as an append finds it, is marked deleted as the `radveil ledger append
/// --tombstone` command marks it ([`admit_after`] with [`Intent::Tombstone`], on what the
/// ledger recorded of the instance).
fn append_tombstones(
    ledger: &mut Ledger,
    known: &mut Known,
    instances: &[String],
) -> Result<Tombstoned, String> {
    let now = radveil_ledger::rfc3339_now();
    let mut tally = Tombstoned::default();
    let mut failed = None;
    ledger
        .append_with(TornRepair::Refuse, |fresh| {
            if let Err(e) = known.catch_up(fresh) {
                failed = Some(e);
                return Vec::new();
            }
            let mut records: Vec<radveil_ledger::Record> = Vec::new();
            for instance in instances {
                if records.iter().any(|r| &r.instance == instance) {
                    tally.already += 1;
                    continue;
                }
                let last = match known.last(fresh, instance) {
                    Ok(last) => last,
                    Err(e) => {
                        failed = Some(e);
                        return Vec::new();
                    }
                };
                match last {
                    Some((_, r)) if r.kind == radveil_ledger::RecordKind::Ingest => {
                        if let Admission::Append(t) =
                            admit_after(Some(&r), &r.observation(), Intent::Tombstone, &now)
                        {
                            records.push(t);
                        }
                    }
                    Some(_) => tally.already += 1,
                    None => tally.never_logged += 1,
                }
            }
            tally.written = records.len();
            records
        })
        .map_err(|e| e.to_string())?;
    if let Some(e) = failed {
        return Err(e.to_string());
    }
    if let Err(e) = known.catch_up(ledger) {
        tracing::warn!(error = %e, "the ledger's new entries could not be read back; the next append reads them");
    }
    Ok(tally)
}

fn write_loop(
    mut ledger: Ledger,
    signer: Signer,
    rx: mpsc::Receiver<Job>,
) -> Result<(), radveil_ledger::LedgerError> {
    // Filled from the ledger's file by the first append (a failed read is retried there).
    let mut known = Known::default();
    let mut pending = 0u64;
    // A tombstone job met while gathering a batch, done after it (jobs keep their order).
    let mut deferred: Option<Job> = None;
    loop {
        let first = match deferred.take() {
            Some(j) => j,
            None => match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(j) => j,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    checkpoint(&mut ledger, &signer, &mut pending);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let first = match first {
            Job::Tombstones(instances, reply) => {
                let result = append_tombstones(&mut ledger, &mut known, &instances);
                match &result {
                    Ok(t) => pending += t.written as u64,
                    Err(e) => {
                        tracing::error!(error = %e, instances = instances.len(), "the ledger could not record deletions")
                    }
                }
                let _ = reply.send(result);
                continue;
            }
            Job::Log(obs, reply) => (obs, reply),
        };
        let mut count = first.0.len();
        let mut jobs = vec![first];
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(Job::Log(obs, reply)) => {
                    count += obs.len();
                    jobs.push((obs, reply));
                }
                Ok(tombstones) => {
                    deferred = Some(tombstones);
                    break;
                }
                Err(_) => break,
            }
        }
        let all: Vec<(Observation, Changed)> =
            jobs.iter().flat_map(|(o, _)| o.iter().cloned()).collect();
        let result = append(&mut ledger, &mut known, &all);
        match &result {
            Ok(_) => pending += all.len() as u64,
            Err(e) => {
                tracing::error!(error = %e, entries = all.len(), "the ledger could not be appended")
            }
        }
        let mut at = 0;
        for (obs, reply) in jobs {
            let n = obs.len();
            let _ = reply.send(
                result
                    .as_ref()
                    .map(|r| r[at..at + n].to_vec())
                    .map_err(Clone::clone),
            );
            at += n;
        }
        if pending >= CHECKPOINT_EVERY {
            checkpoint(&mut ledger, &signer, &mut pending);
        }
    }
    if pending > 0 {
        ledger.checkpoint(&signer)?;
    }
    Ok(())
}

/// The SOP Instance UIDs of the stored instances a DELETE of `study` (or of one of its
/// series, or one instance) is about to remove, read from their sealed attributes while
/// their keys still exist, so that their deletion can be recorded in the ledger
/// ([`Ingest::tombstone`]) once they are gone. Empty without a ledger, or when there is
/// nothing to delete (the DELETE answers 404 itself). An instance whose attributes do not
/// open is left out, and said (by count).
pub(crate) async fn doomed(
    state: &crate::app::AppState,
    study: radveil_store::Handle,
    series: Option<radveil_store::Handle>,
    instance: Option<radveil_store::Handle>,
) -> Result<Vec<String>, radveil_store::StoreError> {
    if state.ingest.is_none() {
        return Ok(Vec::new());
    }
    let rows = match state.store.rows(study, series).await {
        Ok(rows) => rows,
        Err(radveil_store::StoreError::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let handles: Vec<_> = rows
        .into_iter()
        .filter(|r| instance.is_none_or(|i| i == r.instance))
        .map(|r| r.instance)
        .collect();
    let mut uids = Vec::with_capacity(handles.len());
    let mut unopened = 0usize;
    for (_, meta) in state.store.metas_of(handles).await? {
        let uid = meta
            .ok()
            .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m).ok())
            .map(|v| crate::dicom_json::attrs_from_json(&v))
            .and_then(|attrs| {
                attrs
                    .into_iter()
                    .find(|(t, _)| *t == radveil_standard::tags::SOP_INSTANCE_UID)
                    .and_then(|(_, a)| {
                        a.values
                            .first()
                            .map(|u| u.trim_end_matches('\0').trim().to_string())
                    })
            })
            .filter(|u| !u.is_empty());
        match uid {
            Some(u) => uids.push(u),
            None => unopened += 1,
        }
    }
    if unopened > 0 {
        tracing::error!(
            instances = unopened,
            "instances being deleted whose SOP Instance UID (0008,0018) could not be read from their attributes: their deletion is not recorded in the ledger"
        );
    }
    Ok(uids)
}

/// Records in the ledger the deletion of the instances `doomed` named, once the store has
/// removed them; `None` when that is done (or there is no ledger), else the response: the
/// instances are gone, but their deletion could not be recorded.
pub(crate) async fn record_deletion(
    state: &crate::app::AppState,
    uids: &[String],
) -> Option<axum::response::Response> {
    let ingest = state.ingest.as_ref()?;
    match ingest.tombstone(uids).await {
        Ok(t) => {
            if t.never_logged > 0 {
                tracing::info!(
                    instances = t.never_logged,
                    "deleted instances the ledger never logged (stored before it existed): no tombstone"
                );
            }
            None
        }
        Err(e) => {
            tracing::error!(error = %e, instances = uids.len(), "deleted instances whose deletion the ledger could not record");
            Some(crate::app::error(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "deleted, but the ledger could not record the deletion",
            ))
        }
    }
}

/// The private attributes (and geometry) an instance keeps of its ingest, added to its
/// search attributes. Whatever the instance itself carried in the block is not read: the
/// attributes come only from what the gateway found.
pub fn annotate(
    attrs: &mut Attrs,
    status: SignatureStatus,
    signer: Option<&str>,
    index: Option<u64>,
    advisories: &[Advisory],
    geometry: &radveil_pipeline::ingest::Geometry,
) {
    let text = |vr: Vr, v: &str| Attr {
        vr,
        values: Box::new([v.into()]),
    };
    attrs.retain(|(t, _)| t >> 16 != 0x0009 && !GEOMETRY.contains(t));
    attrs.push((PRIVATE_CREATOR, text(Vr::LO, CREATOR)));
    attrs.push((SIGNATURE_STATUS, text(Vr::CS, status.term())));
    if let Some(s) = signer {
        attrs.push((SIGNER_FINGERPRINT, text(Vr::LO, s)));
    }
    if let Some(i) = index.filter(|i| u32::try_from(*i).is_ok()) {
        attrs.push((LEDGER_INDEX, text(Vr::UL, &i.to_string())));
    }
    if !advisories.is_empty() {
        attrs.push((
            ADVISORIES,
            Attr {
                vr: Vr::CS,
                values: advisories.iter().map(|a| a.term().into()).collect(),
            },
        ));
    }
    for (tag, v) in
        GEOMETRY
            .iter()
            .zip([&geometry.spacing, &geometry.orientation, &geometry.position])
    {
        if !v.is_empty() {
            attrs.push((
                *tag,
                Attr {
                    vr: Vr::DS,
                    values: v.iter().map(|f| f.to_string().into()).collect(),
                },
            ));
        }
    }
    attrs.sort_by_key(|(t, _)| *t);
}

/// An instance's WADO-RS metadata copy ([`crate::metadata`]) made from the parse STOW-RS
/// already did, waiting for its ingest block ([`MetadataCopy::with_block`]).
///
/// Private blocks are found by their creator, not by a fixed place (PS3.5 §7.8.1): the
/// block goes in the first slot (0009,00xx) the instance leaves free, so an instance's own
/// block at (0009,0010) (GE's, say) is kept as it is. A block the instance itself carries
/// under radveil's creator is a forged claim and is left out of the copy.
#[derive(Debug, Clone)]
pub struct MetadataCopy {
    json: Vec<u8>,
    slot: Option<u32>,
}

/// The data set's private creators of group 0009 (slot, value) and the tags of the blocks
/// reserved by radveil's creator.
fn private_slots(ds: &radveil_part10::DataSet<'_>) -> (Vec<u32>, Option<u32>) {
    let mut taken = Vec::new();
    let mut forged = Vec::new();
    for e in &ds.elements {
        let (group, element) = (e.tag >> 16, e.tag & 0xFFFF);
        if group != 0x0009 || !(0x10..=0xFF).contains(&element) {
            continue;
        }
        let creator = e.to_str().map(|c| c.trim_matches([' ', '\0']).to_string());
        if creator.as_deref() == Some(CREATOR) {
            forged.push(element);
        } else {
            taken.push(element);
        }
    }
    let drop = ds
        .elements
        .iter()
        .map(|e| e.tag)
        .filter(|t| {
            let (group, element) = (t >> 16, t & 0xFFFF);
            group == 0x0009 && (forged.contains(&element) || forged.contains(&(element >> 8)))
        })
        .collect();
    let slot = (0x10..=0xFF).find(|s| !taken.contains(s));
    (drop, slot)
}

impl MetadataCopy {
    /// The copy of the instance `id` parsed into `ds` (encoded as `enc`).
    pub fn of(
        id: &crate::instance::Identified,
        ds: &radveil_part10::DataSet<'_>,
        enc: radveil_part10::Encoding,
    ) -> MetadataCopy {
        let path = crate::metadata::instance_path(&id.study, &id.series, &id.sop_instance);
        let (drop, slot) = private_slots(ds);
        let json = if drop.is_empty() {
            crate::metadata::to_json_bytes(ds, enc, &path)
        } else {
            let kept = radveil_part10::DataSet {
                elements: ds
                    .elements
                    .iter()
                    .filter(|e| !drop.contains(&e.tag))
                    .cloned()
                    .collect(),
            };
            crate::metadata::to_json_bytes(&kept, enc, &path)
        };
        MetadataCopy { json, slot }
    }

    /// The copy with the ingest block of `attrs` (what [`annotate`] put there) in its slot.
    pub fn with_block(self, attrs: &Attrs) -> Vec<u8> {
        let Some(slot) = self.slot else {
            return self.json;
        };
        let mut block = serde_json::Map::new();
        for (tag, a) in attrs.iter().filter(|(t, _)| t >> 16 == 0x0009) {
            let moved = if *tag == PRIVATE_CREATOR {
                0x0009_0000 | slot
            } else {
                0x0009_0000 | slot << 8 | (tag & 0xFF)
            };
            block.insert(format!("{moved:08X}"), crate::dicom_json::to_json(a));
        }
        let inner = serde_json::Value::Object(block).to_string();
        let (Some(inner), Some(rest)) = (
            inner.strip_prefix('{').and_then(|i| i.strip_suffix('}')),
            self.json.strip_prefix(b"{"),
        ) else {
            return self.json;
        };
        if inner.is_empty() {
            return self.json;
        }
        let mut out = Vec::with_capacity(self.json.len() + inner.len() + 2);
        out.push(b'{');
        out.extend_from_slice(inner.as_bytes());
        if rest != b"}" {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        out
    }
}

/// The geometry of stored search attributes, as ingest compares it.
pub fn geometry_of(attrs: &Attrs) -> radveil_pipeline::ingest::Geometry {
    let get = |tag: u32| {
        attrs
            .binary_search_by_key(&tag, |(t, _)| *t)
            .ok()
            .map(|i| &attrs[i].1)
    };
    let text = |tag: u32| get(tag).map(|a| a.values.join("\\")).unwrap_or_default();
    let number = |tag: u32| {
        get(tag)
            .and_then(|a| a.values.first())
            .and_then(|v| v.trim().parse::<u16>().ok())
    };
    use radveil_standard::tags;
    radveil_pipeline::ingest::Geometry::from_text(
        number(tags::ROWS).zip(number(tags::COLUMNS)),
        &text(tags::PIXEL_SPACING),
        &text(tags::IMAGE_ORIENTATION_PATIENT),
        &text(tags::IMAGE_POSITION_PATIENT),
    )
}

/// The Image Position (Patient) of stored search attributes, parsed in place (no copy):
/// what a long series is compared by.
pub fn position_in(attrs: &Attrs) -> Option<[f64; 3]> {
    let tag = radveil_standard::tags::IMAGE_POSITION_PATIENT;
    let i = attrs.binary_search_by_key(&tag, |(t, _)| *t).ok()?;
    let v = &attrs[i].1.values;
    if v.len() != 3 {
        return None;
    }
    let mut out = [0.0; 3];
    for (o, x) in out.iter_mut().zip(v.iter()) {
        *o = x.trim().parse::<f64>().ok().filter(|f| f.is_finite())?;
    }
    Some(out)
}

/// The ingest status kept in stored search attributes (for tests and the metadata).
pub fn status_in(attrs: &Attrs) -> Option<SignatureStatus> {
    attrs
        .iter()
        .find(|(t, _)| *t == SIGNATURE_STATUS)
        .and_then(|(_, a)| a.values.first())
        .and_then(|v| SignatureStatus::from_term(v))
}

/// Why the gateway's ledger could not be opened or made.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A key file.
    #[error(transparent)]
    Secret(#[from] radveil_pipeline::secret::SecretError),
    /// The checkpoint signer's key.
    #[error(transparent)]
    Signer(#[from] radveil_pipeline::ledger::SignerKeyError),
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] radveil_ledger::LedgerError),
    /// The site key is too short.
    #[error("{0}")]
    Key(String),
    /// The trusted certificates.
    #[error(transparent)]
    Trust(#[from] radveil_pipeline::verify::CertificateError),
    /// The writer thread could not start.
    #[error("starting the ledger writer: {0}")]
    Thread(std::io::Error),
}

/// Where the gateway keeps its ledger and its keys, under the data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The ledger (`DATA/ledger`).
    pub ledger: PathBuf,
    /// The site key the ledger hashes UIDs with (`DATA/keys/ledger-key`): give it to
    /// `radveil verify --ledger … --key-file`.
    pub key: PathBuf,
    /// The checkpoint signer's key (`DATA/keys/ledger-signer.key`).
    pub signer: PathBuf,
}

impl Paths {
    /// The paths under `data` (the keys beside the store's, in `DATA/keys`).
    pub fn under(data: &Path) -> Paths {
        let keys = data.join("keys");
        Paths {
            ledger: data.join("ledger"),
            key: keys.join("ledger-key"),
            signer: keys.join("ledger-signer.key"),
        }
    }
}

/// Opens the gateway's ledger (made with its site key and checkpoint signer on first run,
/// `origin` naming it), reads the trusted certificates at `trust` and starts the writer.
/// `notes` gets what the operator should know (keys made, a torn line repaired).
pub fn open(
    paths: &Paths,
    origin: &str,
    trust: &[PathBuf],
    require: RequireSigned,
    policy: PermissionPolicy,
    notes: &mut dyn FnMut(String),
) -> Result<(Ingest, LedgerWriter), OpenError> {
    use radveil_pipeline::secret;
    let trust = radveil_pipeline::ingest::trust_from(trust)?;
    let (key, made) = secret::key_file(&paths.key, "ledger site key", policy, true)?;
    if made {
        notes(format!(
            "made the ledger's site key {} (mode 0600): `radveil verify --ledger` needs it",
            paths.key.display()
        ));
    }
    if let Some(w) = key.warning {
        notes(format!("warning: {w}"));
    }
    let key = radveil_deid::Key::new(key.bytes).map_err(|e| OpenError::Key(e.to_string()))?;
    let signer = if std::fs::symlink_metadata(&paths.signer).is_ok() {
        let s = secret::read_secret(&paths.signer, "ledger checkpoint signer key", policy)?;
        if let Some(w) = s.warning {
            notes(format!("warning: {w}"));
        }
        radveil_pipeline::ledger::parse_signer(&s.bytes, &paths.signer)?
    } else {
        let s = radveil_pipeline::ledger::create_signer(&paths.signer, origin)?;
        notes(format!(
            "made the ledger's checkpoint signer key {} (mode 0600)",
            paths.signer.display()
        ));
        s
    };
    let mut ledger = if paths.ledger.join("origin").exists() {
        Ledger::open(&paths.ledger)?
    } else {
        notes(format!("made the ledger {}", paths.ledger.display()));
        Ledger::init(&paths.ledger, origin, &signer)?
    };
    if ledger.torn_tail().is_some() {
        let done = ledger.append_with(TornRepair::Truncate, |_| Vec::new())?;
        if let Some((_, kept)) = done.repaired {
            notes(format!("warning: the ledger had a torn last line (an append that crashed before it was acknowledged); its bytes are kept in {}", kept.display()));
        }
    }
    Ingest::start(Settings { trust, key }, require, ledger, signer).map_err(OpenError::Thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(i: u8, series: &str, equipment: &str) -> Observation {
        Observation {
            instance: format!("{i:064x}"),
            sha256: format!("{:064x}", u32::from(i) + 1000),
            binding: None,
            signer: None,
            series: Some(series.into()),
            equipment: Some(equipment.into()),
            verification: radveil_ledger::Verification::Unsigned,
            binding_left_out: None,
        }
    }

    fn refused(o: Vec<Observation>) -> Vec<(Observation, Changed)> {
        o.into_iter().map(|o| (o, Changed::Refused)).collect()
    }

    fn ledger(dir: &Path) -> (Ledger, Signer) {
        let signer = Signer::from_seed("test/ingest", &[5; 32]).unwrap();
        (Ledger::init(dir, "test/ingest", &signer).unwrap(), signer)
    }

    #[test]
    fn a_batch_is_logged_with_indexes_and_equipment_advisories() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, _) = ledger(dir.path());
        let mut known = Known::of(&l);
        let first = append(
            &mut l,
            &mut known,
            &refused(vec![obs(1, "s", "a"), obs(2, "s", "b")]),
        )
        .unwrap();
        // The second instance's equipment is foreign to the series the first just joined.
        assert_eq!(
            first,
            [
                Logged::At(0, vec![]),
                Logged::At(1, vec![Advisory::ForeignEquipment])
            ]
        );
        // The same bytes again: the earlier entry; other bytes for a logged instance: refused.
        let mut changed = obs(1, "s", "a");
        changed.sha256 = format!("{:064x}", 7);
        let again = append(
            &mut l,
            &mut known,
            &refused(vec![obs(1, "s", "a"), changed.clone(), obs(3, "t", "a")]),
        )
        .unwrap();
        assert_eq!(
            again,
            [
                Logged::At(0, vec![]),
                Logged::Changed,
                Logged::At(2, vec![])
            ]
        );
        // A new version (the store no longer holds the old): logged, and its bytes are the
        // instance's from now on.
        let anew = append(&mut l, &mut known, &[(changed.clone(), Changed::Logged)]).unwrap();
        assert_eq!(anew, [Logged::At(3, vec![])]);
        assert_eq!(
            l.find_instance(&changed.instance)
                .unwrap()
                .unwrap()
                .1
                .sha256,
            changed.sha256
        );
        let reopened = Ledger::open(dir.path()).unwrap();
        assert_eq!(reopened.size(), 4);
        assert_eq!(
            Known::of(&reopened).advisories(&obs(9, "s", "c"), &[]),
            [Advisory::ForeignEquipment]
        );
    }

    /// Entries another process appended meanwhile (`radveil ledger append`) are folded into
    /// what the writer knows when it next takes the lock: their instances are already
    /// logged, and their equipment counts for the advisories.
    #[test]
    fn entries_appended_by_another_process_count_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, _) = ledger(dir.path());
        let mut known = Known::of(&l);
        assert_eq!(
            append(&mut l, &mut known, &refused(vec![obs(1, "s", "a")])).unwrap(),
            [Logged::At(0, vec![])]
        );
        let mut other = Ledger::open(dir.path()).unwrap();
        let mut theirs = Known::of(&other);
        assert_eq!(
            append(
                &mut other,
                &mut theirs,
                &refused(vec![obs(2, "t", "b"), obs(3, "u", "c")])
            )
            .unwrap(),
            [Logged::At(1, vec![]), Logged::At(2, vec![])]
        );
        let mut changed = obs(3, "u", "c");
        changed.sha256 = format!("{:064x}", 7);
        assert_eq!(
            append(
                &mut l,
                &mut known,
                &refused(vec![obs(2, "t", "b"), obs(4, "t", "d"), changed])
            )
            .unwrap(),
            [
                Logged::At(1, vec![]),
                // Series "t" holds equipment "b" from the other process's entry.
                Logged::At(3, vec![Advisory::ForeignEquipment]),
                Logged::Changed,
            ]
        );
        assert_eq!(l.size(), 4);
    }

    /// Two instances whose hashes share a slot of the index: each is still found (the slot
    /// is checked against the entry, and the entries searched when it is another's).
    #[test]
    fn an_instance_whose_slot_another_took_is_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, _) = ledger(dir.path());
        let mut known = Known::of(&l);
        append(
            &mut l,
            &mut known,
            &refused(vec![obs(1, "s", "a"), obs(2, "s", "a")]),
        )
        .unwrap();
        let (a, b) = (obs(1, "s", "a").instance, obs(2, "s", "a").instance);
        // As if b's hash were a's: a's slot now names b's entry.
        let ka = known.key(&a);
        let at_b = known.last[&known.key(&b)];
        known.last.insert(ka, at_b);
        let index = |found: Option<(u64, radveil_ledger::Record)>| found.map(|(i, _)| i);
        assert_eq!(index(known.last(&l, &a).unwrap()), Some(0));
        assert_eq!(index(known.last(&l, &b).unwrap()), Some(1));
        assert_eq!(
            append(&mut l, &mut known, &refused(vec![obs(1, "s", "a")])).unwrap(),
            [Logged::At(0, vec![])]
        );
        assert_eq!(
            index(known.last(&l, &obs(9, "s", "a").instance).unwrap()),
            None
        );
    }

    /// A deletion marks each instance's last ingest entry with a tombstone once; an
    /// instance never logged has none; the instance stored again afterwards is logged anew.
    #[test]
    fn deleted_instances_get_one_tombstone_after_their_last_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, _) = ledger(dir.path());
        let mut known = Known::of(&l);
        append(
            &mut l,
            &mut known,
            &refused(vec![obs(1, "s", "a"), obs(2, "s", "a")]),
        )
        .unwrap();
        let (one, never) = (obs(1, "s", "a").instance, obs(9, "s", "a").instance);
        let t = append_tombstones(&mut l, &mut known, &[one.clone(), one.clone(), never]).unwrap();
        assert_eq!(
            t,
            Tombstoned {
                written: 1,
                already: 1,
                never_logged: 1
            }
        );
        let (index, r) = l.find_instance(&one).unwrap().unwrap();
        assert_eq!((index, r.kind), (2, radveil_ledger::RecordKind::Tombstone));
        assert_eq!(r.sha256, obs(1, "s", "a").sha256);
        // Deleted again: already marked, nothing written.
        let t = append_tombstones(&mut l, &mut known, std::slice::from_ref(&one)).unwrap();
        assert_eq!((t.written, t.already), (0, 1));
        assert_eq!(l.size(), 3);
        // Stored again: logged anew, after its tombstone.
        assert_eq!(
            append(&mut l, &mut known, &refused(vec![obs(1, "s", "a")])).unwrap(),
            [Logged::At(3, vec![])]
        );
    }

    #[tokio::test]
    async fn the_writer_answers_each_job_and_signs_a_checkpoint_when_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (l, signer) = ledger(dir.path());
        let verifier = signer.verifier();
        let settings = Settings {
            trust: Default::default(),
            key: radveil_deid::Key::new(zeroize::Zeroizing::new(vec![1u8; 32])).unwrap(),
        };
        let (ingest, writer) =
            Ingest::start(settings, RequireSigned::default(), l, signer).unwrap();
        let (a, b) = tokio::join!(
            ingest.log(vec![obs(1, "s", "a"), obs(2, "s", "a")], Changed::Refused),
            ingest.log(vec![obs(3, "s", "a")], Changed::Refused)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.len(), 2);
        assert_eq!(b.len(), 1);
        let mut indexes: Vec<u64> = a
            .iter()
            .chain(&b)
            .map(|l| match l {
                Logged::At(i, _) => *i,
                Logged::Changed => panic!("{l:?}"),
            })
            .collect();
        indexes.sort_unstable();
        assert_eq!(indexes, [0, 1, 2]);
        drop(ingest);
        writer.finish().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let cp = l.verify_latest(&verifier, None).unwrap();
        assert_eq!(cp.size, 3);
    }

    #[test]
    fn require_signed_names_clients_subjects_or_everyone() {
        let p = |client: Option<&str>, sub: &str| radveil_access::Principal {
            issuer: "i".into(),
            subject: sub.into(),
            client: client.map(Into::into),
            roles: vec![],
            scopes: Default::default(),
            patient: None,
            name: None,
        };
        let r = RequireSigned::new(&["modality-1", "svc"]);
        assert!(r.applies(Some(&p(Some("modality-1"), "x"))));
        assert!(r.applies(Some(&p(None, "svc"))));
        assert!(!r.applies(Some(&p(Some("other"), "x"))));
        // Without access control there is no client to name: only `*` applies.
        assert!(!r.applies(None));
        assert!(RequireSigned::new(&["*"]).applies(None));
        assert!(RequireSigned::default().is_empty());
    }

    /// Per-instance cost of ingest on a real file: identify alone, and identify with the
    /// examination and the metadata copy from the same parse (`RADVEIL_BENCH_FILE=CT_small.dcm
    /// cargo test -p radveil-web --release -- --ignored --nocapture per_instance_cost`).
    #[test]
    #[ignore]
    fn per_instance_cost_of_ingest() {
        let Some(path) = std::env::var_os("RADVEIL_BENCH_FILE") else {
            return;
        };
        let bytes = std::fs::read(path).unwrap();
        let settings = Settings {
            trust: Default::default(),
            key: radveil_deid::Key::new(zeroize::Zeroizing::new(vec![1u8; 32])).unwrap(),
        };
        let budget = MemoryBudget::new(1 << 30);
        let rounds = 2000u32;
        let time = |f: &dyn Fn()| {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                f();
            }
            start.elapsed() / rounds
        };
        let alone = time(&|| {
            crate::instance::identify(&bytes).unwrap();
        });
        let copy = time(&|| {
            crate::metadata::copy(&bytes).unwrap();
        });
        let examined = time(&|| {
            crate::instance::identify_with(&bytes, |id, ds, enc| {
                let e = radveil_pipeline::ingest::examine(
                    &bytes,
                    &id.transfer_syntax,
                    ds,
                    enc,
                    &settings,
                    0,
                    &budget,
                )
                .unwrap();
                (e, MetadataCopy::of(id, ds, enc))
            })
            .unwrap();
        });
        println!(
            "per instance ({} bytes): identify {alone:?}; the store's metadata copy (a second parse) {copy:?}; identify + examine + copy from one parse {examined:?}",
            bytes.len()
        );
    }

    #[test]
    fn the_metadata_copy_gets_the_block_in_a_free_slot_and_loses_a_forged_one() {
        use radveil_part10::{DataSet, Element, Encoding};
        use radveil_standard::tags;
        let mut ds = DataSet::default();
        ds.put(Element::text(0x0009_0010, Vr::LO, "GEMS_IDEN_01"));
        ds.put(Element::text(0x0009_1001, Vr::LO, "GE VALUE"));
        ds.put(Element::text(0x0009_0011, Vr::LO, CREATOR));
        ds.put(Element::text(0x0009_1110, Vr::CS, "TRUSTED"));
        ds.put(Element::text(tags::SOP_INSTANCE_UID, Vr::UI, "1.2.3.4"));
        let id = crate::instance::Identified {
            sop_class: "1.2".into(),
            sop_instance: "1.2.3.4".into(),
            study: "1.2.3".into(),
            series: "1.2.3.1".into(),
            patient_id: String::new(),
            issuer: String::new(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            attributes: Vec::new(),
        };
        let copy = MetadataCopy::of(&id, &ds, Encoding::ExplicitLittle);
        let mut attrs = Attrs::new();
        annotate(
            &mut attrs,
            SignatureStatus::Unsigned,
            None,
            Some(3),
            &[],
            &Default::default(),
        );
        let out: serde_json::Value = serde_json::from_slice(&copy.with_block(&attrs)).unwrap();
        // GE's block is kept; the forged one is gone; radveil's is in the first free slot.
        assert_eq!(out["00090010"]["Value"][0], "GEMS_IDEN_01");
        assert_eq!(out["00091001"]["Value"][0], "GE VALUE");
        assert_eq!(out["00090011"]["Value"][0], CREATOR);
        assert_eq!(out["00091110"]["Value"][0], "UNSIGNED");
        assert_eq!(out["00091112"]["Value"][0], 3);
        assert_eq!(out["00080018"]["Value"][0], "1.2.3.4");
        // Without private data, the block goes at (0009,0010).
        let mut plain = DataSet::default();
        plain.put(Element::text(tags::SOP_INSTANCE_UID, Vr::UI, "1.2.3.4"));
        let out: serde_json::Value = serde_json::from_slice(
            &MetadataCopy::of(&id, &plain, Encoding::ExplicitLittle).with_block(&attrs),
        )
        .unwrap();
        assert_eq!(out["00090010"]["Value"][0], CREATOR);
        assert_eq!(out["00091010"]["Value"][0], "UNSIGNED");
    }

    #[test]
    fn annotations_replace_whatever_the_instance_claimed() {
        let forged = Attr {
            vr: Vr::CS,
            values: Box::new(["TRUSTED".into()]),
        };
        let mut attrs: Attrs = vec![(SIGNATURE_STATUS, forged)];
        annotate(
            &mut attrs,
            SignatureStatus::Unsigned,
            None,
            Some(4),
            &[Advisory::SyntheticData],
            &radveil_pipeline::ingest::Geometry::from_text(Some((2, 2)), "0.5\\0.5", "", ""),
        );
        assert_eq!(status_in(&attrs), Some(SignatureStatus::Unsigned));
        assert!(attrs.windows(2).all(|w| w[0].0 < w[1].0));
        let json = crate::dicom_json::attrs_to_json(&attrs);
        assert_eq!(json["00091010"]["Value"][0], "UNSIGNED");
        assert_eq!(json["00091012"]["Value"][0], 4);
        assert_eq!(json["00091013"]["Value"][0], "SYNTHETIC");
        assert_eq!(json["00090010"]["Value"][0], CREATOR);
        let g = geometry_of(&attrs);
        assert_eq!(g.spacing, [0.5, 0.5]);
    }
}
