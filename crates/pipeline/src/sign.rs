//! Signing one file (PS3.15 Annex C digital signature, RSA): read whole under the budget,
//! a new signature added to the object or to one of its sequence items, optionally stamped
//! by a caller's hook (a timestamp authority), encoded again in its own transfer syntax and
//! written as a new file of the output directory.

use std::fmt;
use std::path::{Path, PathBuf};

use radveil_integrity::SignerIdentity;
use radveil_integrity::{MacAlgorithm, SignRequest, SignatureError, SignatureProfile};
use radveil_part10 as p10;
use radveil_part10::MemoryBudget;

use crate::ordered::{map_in_order, Tally};
use crate::outdir::{Dir, OutputError};
use crate::pool::{Panicked, Pool};
use crate::tree::{NoFileName, OutputTree};
use crate::whole::{read_whole, rewrite, ReadError, RewriteError, WholeFile};

/// What every signature of one run is made of.
#[derive(Debug, Clone, Copy)]
pub struct Choices<'a> {
    /// The MAC algorithm.
    pub mac: MacAlgorithm,
    /// The tags to sign; `None`: every signable element.
    pub tags: Option<&'a [u32]>,
    /// A Digital Signature Purpose code (CID 7007).
    pub purpose: Option<&'a str>,
    /// A PS3.15 Annex C profile (whole objects only).
    pub profile: Option<SignatureProfile>,
    /// Sign this sequence item (see [`item_mut`]) instead of the object.
    pub item: Option<&'a str>,
}

/// Why a file was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The file could not be parsed or encoded again.
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
    /// No random bytes for the Digital Signature UID.
    #[error("random source: {0}")]
    Random(String),
    /// The sequence item to sign was not found.
    #[error("{0}")]
    Item(String),
    /// A profile was asked for a sequence item.
    #[error("profiles apply to whole objects, not to sequence items")]
    ProfileOnItem,
    /// Signing failed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The caller's stamp refused the signature.
    #[error("{0}")]
    Stamp(String),
    /// The output could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The input has no name to name its output after.
    #[error(transparent)]
    NoFileName(#[from] NoFileName),
    /// Signing the file panicked (a bug).
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

/// A file signed and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The input.
    pub input: PathBuf,
    /// The signed copy.
    pub output: PathBuf,
}

impl fmt::Display for Signed {
    /// `signed<TAB>INPUT<TAB>OUTPUT`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "signed\t{}\t{}",
            self.input.display(),
            self.output.display()
        )
    }
}

/// A hook run on each new signature, given the data set and the new Digital Signature UID
/// (a timestamp authority's stamp); its error is the reason the file is not written.
pub type Stamp<'a> = dyn Fn(&mut p10::DataSet<'_>, &str) -> Result<(), String> + Sync + 'a;

/// Signs the file at `path` and writes it as `relative` below `out`.
pub fn sign_file(
    path: &Path,
    out: &Dir,
    relative: &Path,
    signer: &SignerIdentity,
    choices: &Choices<'_>,
    stamp: Option<&Stamp<'_>>,
    budget: &MemoryBudget,
) -> Result<Signed, SignError> {
    let WholeFile { bytes, mut grant } = read_whole(path, budget)?;
    let signed = sign_bytes(&bytes, &mut grant, signer, choices, stamp)?;
    let output = out.write_bytes_at(relative, &signed)?;
    Ok(Signed {
        input: path.to_path_buf(),
        output,
    })
}

/// Signing a batch of files into one output directory.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    /// The output directory (opened once; nothing below it is overwritten or followed).
    pub out: &'a Dir,
    /// Each file's path below `out`.
    pub tree: &'a OutputTree,
    /// Who signs.
    pub signer: &'a SignerIdentity,
    /// What each signature is made of.
    pub choices: Choices<'a>,
    /// Run on each new signature (a timestamp authority's stamp).
    pub stamp: Option<&'a Stamp<'a>>,
    /// The memory every worker shares: each file is reserved before it is read.
    pub budget: &'a MemoryBudget,
}

impl Batch<'_> {
    /// Signs `files` on `pool`'s workers and hands each file's result to `emit` in the
    /// order of `files`; one file that fails (or panics) never stops the others. Returns
    /// how many were signed and how many failed.
    pub fn sign_files<'f>(
        &self,
        pool: &Pool,
        files: &'f [PathBuf],
        mut emit: impl FnMut(&'f Path, Result<Signed, SignError>) + Send,
    ) -> Tally {
        let mut tally = Tally::default();
        map_in_order(
            pool,
            files,
            |f| {
                let rel = self.tree.relative(f)?;
                let (signer, choices) = (self.signer, &self.choices);
                sign_file(f, self.out, &rel, signer, choices, self.stamp, self.budget)
            },
            |f, result| {
                tally.count(&result);
                emit(f, result);
            },
        );
        tally
    }
}

/// Adds a signature to the Part 10 file `bytes` and returns the file encoded again; what it
/// takes is charged to `grant`.
pub fn sign_bytes(
    bytes: &[u8],
    grant: &mut p10::Grant<'_>,
    signer: &SignerIdentity,
    choices: &Choices<'_>,
    stamp: Option<&Stamp<'_>>,
) -> Result<Vec<u8>, SignError> {
    let uid = new_uid()?;
    rewrite(bytes, grant, |ds, enc, transfer_syntax| {
        let request = SignRequest {
            mac: choices.mac,
            tags: choices.tags.map(<[u32]>::to_vec),
            uid: uid.clone(),
            datetime: now_dt(),
            purpose: choices.purpose.map(str::to_string),
            profile: choices.profile,
        };
        match choices.item {
            None => radveil_integrity::sign(ds, signer, &request, enc, transfer_syntax)?,
            Some(path) => {
                if choices.profile.is_some() {
                    return Err(SignError::ProfileOnItem);
                }
                let target = item_mut(ds, path)?;
                radveil_integrity::sign(target, signer, &request, enc, transfer_syntax)?
            }
        }
        if let Some(stamp) = stamp {
            stamp(ds, &uid).map_err(SignError::Stamp)?;
        }
        Ok(())
    })
}

/// A fresh Digital Signature UID (2.25 form of a random UUID).
fn new_uid() -> Result<String, SignError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| SignError::Random(e.to_string()))?;
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    Ok(format!("2.25.{}", u128::from_be_bytes(b)))
}

/// The time now as a DICOM DT in UTC, to the microsecond.
fn now_dt() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let t = radveil_ledger::rfc3339_at(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    // 2026-11-23T12:00:00Z -> 20261123120000.123456+0000
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    format!("{digits}.{:06}+0000", now.subsec_micros())
}

/// The attribute named `s` (a keyword, or `gggg,eeee`).
fn parse_tag(s: &str) -> Result<u32, SignError> {
    radveil_deid::profile::parse_tag(s)
        .ok_or_else(|| SignError::Item(format!("unknown attribute {s:?}")))
}

/// The sequence item at `path` (`Keyword[i]` or `(gggg,eeee)[i]` steps separated by `/` or
/// `.`).
pub fn item_mut<'d, 'a>(
    ds: &'d mut p10::DataSet<'a>,
    path: &str,
) -> Result<&'d mut p10::DataSet<'a>, SignError> {
    let mut current = ds;
    for step in path.split(['/', '.']).filter(|s| !s.is_empty()) {
        let (name, index) = step
            .strip_suffix(']')
            .and_then(|s| s.rsplit_once('['))
            .ok_or_else(|| {
                SignError::Item(format!("item path step {step:?} is not NAME[INDEX]"))
            })?;
        let tag = parse_tag(name)?;
        let index: usize = index
            .parse()
            .map_err(|e| SignError::Item(format!("bad item index in {step:?}: {e}")))?;
        let el = current
            .get_mut(tag)
            .ok_or_else(|| SignError::Item(format!("{name} is not in the data set")))?;
        let p10::Value::Sequence(items) = &mut el.value else {
            return Err(SignError::Item(format!("{name} is not a sequence")));
        };
        let count = items.len();
        current = items.get_mut(index).ok_or_else(|| {
            SignError::Item(format!("{name} has {count} items, not {}", index + 1))
        })?;
    }
    Ok(current)
}

/// Test files and a test signer, for the tests of this crate.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) const KEY: &[u8] = include_bytes!("testdata/signer.key.pem");
    pub(crate) const CERT: &[u8] = include_bytes!("testdata/signer.crt.pem");

    /// One explicit VR little endian element.
    pub(crate) fn element(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        v.extend_from_slice(&(tag as u16).to_le_bytes());
        v.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    /// A text value padded to even length with NUL.
    pub(crate) fn padded(s: &str) -> Vec<u8> {
        let mut b = s.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            b.push(0);
        }
        b
    }

    /// A small explicit VR little endian CT image, unsigned.
    pub(crate) fn unsigned_file() -> Vec<u8> {
        use radveil_standard::tags;
        const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
        const SOP: &str = "1.2.826.0.1.3680043.10.1.1";
        let mut meta = element(tags::FILE_META_INFORMATION_VERSION, b"OB", &[0, 1]);
        meta.extend(element(
            tags::MEDIA_STORAGE_SOP_CLASS_UID,
            b"UI",
            &padded(CT),
        ));
        meta.extend(element(
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
            b"UI",
            &padded(SOP),
        ));
        meta.extend(element(
            tags::TRANSFER_SYNTAX_UID,
            b"UI",
            &padded("1.2.840.10008.1.2.1"),
        ));
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend(element(
            tags::FILE_META_INFORMATION_GROUP_LENGTH,
            b"UL",
            &(meta.len() as u32).to_le_bytes(),
        ));
        f.extend(meta);
        for (tag, vr, v) in [
            (tags::SOP_CLASS_UID, b"UI", CT),
            (tags::SOP_INSTANCE_UID, b"UI", SOP),
            (tags::MODALITY, b"CS", "CT"),
            (tags::MANUFACTURER, b"LO", "ACME"),
            (tags::PATIENT_NAME, b"PN", "Doe^Jane"),
            (tags::STUDY_INSTANCE_UID, b"UI", "1.2.826.0.1.3680043.10.1"),
            (
                tags::SERIES_INSTANCE_UID,
                b"UI",
                "1.2.826.0.1.3680043.10.1.2",
            ),
        ] {
            f.extend(element(tag, vr, &padded(v)));
        }
        let us = |tag, v: u16| element(tag, b"US", &v.to_le_bytes());
        f.extend(us(tags::SAMPLES_PER_PIXEL, 1));
        f.extend(element(
            tags::PHOTOMETRIC_INTERPRETATION,
            b"CS",
            b"MONOCHROME2 ",
        ));
        f.extend(us(tags::ROWS, 2));
        f.extend(us(tags::COLUMNS, 2));
        f.extend(us(tags::BITS_ALLOCATED, 16));
        f.extend(us(tags::BITS_STORED, 16));
        f.extend(us(tags::HIGH_BIT, 15));
        f.extend(us(tags::PIXEL_REPRESENTATION, 0));
        f.extend(element(tags::PIXEL_DATA, b"OW", &[1, 0, 2, 0, 3, 0, 4, 0]));
        f
    }

    /// The test signer.
    pub(crate) fn signer() -> SignerIdentity {
        SignerIdentity::load(KEY, CERT).unwrap()
    }

    /// Where `needle` first occurs in `hay`.
    pub(crate) fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).position(|w| w == needle).unwrap()
    }

    /// [`unsigned_file`] signed whole with SHA-256.
    pub(crate) fn signed_file(budget: &MemoryBudget) -> Vec<u8> {
        let bytes = unsigned_file();
        let mut grant = budget.reserve(0, p10::DEFAULT_WAIT).unwrap();
        let choices = Choices {
            mac: MacAlgorithm::Sha256,
            tags: None,
            purpose: None,
            profile: None,
            item: None,
        };
        sign_bytes(&bytes, &mut grant, &signer(), &choices, None).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices() -> Choices<'static> {
        Choices {
            mac: MacAlgorithm::Sha256,
            tags: None,
            purpose: None,
            profile: None,
            item: None,
        }
    }

    #[test]
    fn a_file_is_signed_written_once_and_its_line_printed() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.dcm");
        std::fs::write(&input, testing::unsigned_file()).unwrap();
        let out = Dir::create(&dir.path().join("out")).unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let signer = testing::signer();
        let rel = Path::new("a/in.dcm");
        let signed = sign_file(&input, &out, rel, &signer, &choices(), None, &budget).unwrap();
        assert_eq!(signed.output, dir.path().join("out/a/in.dcm"));
        assert_eq!(
            signed.to_string(),
            format!(
                "signed\t{}\t{}",
                input.display(),
                dir.path().join("out/a/in.dcm").display()
            )
        );
        let bytes = std::fs::read(&signed.output).unwrap();
        let mut inflated = Vec::new();
        let (_, ds, enc) = p10::read_file(&bytes, &mut inflated, p10::Limits::default()).unwrap();
        let reports = radveil_integrity::verify(&ds, enc);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].outcome, radveil_integrity::Outcome::Valid);
        // Never overwritten.
        let again = sign_file(&input, &out, rel, &signer, &choices(), None, &budget);
        assert!(matches!(again, Err(SignError::Output(_))), "{again:?}");
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_stamp_that_fails_keeps_the_file_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.dcm");
        std::fs::write(&input, testing::unsigned_file()).unwrap();
        let out = Dir::create(&dir.path().join("out")).unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let refuse = |_: &mut p10::DataSet<'_>, uid: &str| -> Result<(), String> {
            assert!(uid.starts_with("2.25."));
            Err("no timestamp".into())
        };
        let r = sign_file(
            &input,
            &out,
            Path::new("in.dcm"),
            &testing::signer(),
            &choices(),
            Some(&refuse),
            &budget,
        );
        assert_eq!(r.unwrap_err().to_string(), "no timestamp");
        assert!(!dir.path().join("out/in.dcm").exists());
    }

    #[test]
    fn item_paths_are_checked() {
        let budget = MemoryBudget::new(64 << 20);
        let bytes = testing::unsigned_file();
        let mut grant = budget.reserve(0, p10::DEFAULT_WAIT).unwrap();
        let signer = testing::signer();
        for (item, why) in [
            (
                "ContentSequence",
                "item path step \"ContentSequence\" is not NAME[INDEX]",
            ),
            (
                "ContentSequence[0]",
                "ContentSequence is not in the data set",
            ),
            ("PatientName[0]", "PatientName is not a sequence"),
            ("NoSuchKeyword[0]", "unknown attribute \"NoSuchKeyword\""),
        ] {
            let c = Choices {
                item: Some(item),
                ..choices()
            };
            let e = sign_bytes(&bytes, &mut grant, &signer, &c, None).unwrap_err();
            assert_eq!(e.to_string(), why);
        }
        let c = Choices {
            item: Some("ContentSequence[0]"),
            profile: Some(SignatureProfile::Base),
            ..choices()
        };
        let e = sign_bytes(&bytes, &mut grant, &signer, &c, None).unwrap_err();
        assert!(matches!(e, SignError::ProfileOnItem));
    }

    #[test]
    fn a_batch_signs_in_input_order_and_a_bad_file_does_not_stop_it() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        for d in ["a", "b"] {
            std::fs::create_dir_all(input.join(d)).unwrap();
            std::fs::write(input.join(d).join("x.dcm"), testing::unsigned_file()).unwrap();
        }
        std::fs::write(input.join("a/bad.dcm"), b"not DICOM").unwrap();
        let files = [
            input.join("a/bad.dcm"),
            input.join("a/x.dcm"),
            input.join("b/x.dcm"),
            input.join("a/missing.dcm"),
        ];
        let out = Dir::create(&dir.path().join("out")).unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let signer = testing::signer();
        let tree = OutputTree::new(std::slice::from_ref(&input));
        let batch = Batch {
            out: &out,
            tree: &tree,
            signer: &signer,
            choices: choices(),
            stamp: None,
            budget: &budget,
        };
        let mut seen = Vec::new();
        let tally = batch.sign_files(&Pool::new(3), &files, |f, r| {
            seen.push((f.to_path_buf(), r.map(|s| s.output)));
        });
        assert_eq!(tally, Tally { done: 2, failed: 2 });
        let paths: Vec<&PathBuf> = seen.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, files.iter().collect::<Vec<_>>());
        assert!(
            matches!(seen[0].1, Err(SignError::Rewrite(_))),
            "{:?}",
            seen[0]
        );
        // a/x.dcm and b/x.dcm do not meet in the output directory.
        assert_eq!(seen[1].1.as_ref().unwrap(), &dir.path().join("out/a/x.dcm"));
        assert_eq!(seen[2].1.as_ref().unwrap(), &dir.path().join("out/b/x.dcm"));
        assert!(
            matches!(seen[3].1, Err(SignError::Read(_))),
            "{:?}",
            seen[3]
        );
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_panicking_stamp_fails_its_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..3)
            .map(|i| dir.path().join(format!("{i}.dcm")))
            .collect();
        for f in &files {
            std::fs::write(f, testing::unsigned_file()).unwrap();
        }
        let out = Dir::create(&dir.path().join("out")).unwrap();
        let budget = MemoryBudget::new(64 << 20);
        let signer = testing::signer();
        let tree = OutputTree::default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let stamp = |_: &mut p10::DataSet<'_>, _: &str| -> Result<(), String> {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                panic!("stamp bug");
            }
            Ok(())
        };
        let batch = Batch {
            out: &out,
            tree: &tree,
            signer: &signer,
            choices: choices(),
            stamp: Some(&stamp),
            budget: &budget,
        };
        let mut lines = Vec::new();
        let tally = batch.sign_files(&Pool::new(1), &files, |_, r| {
            lines.push(r.map(|s| s.to_string()).map_err(|e| e.to_string()));
        });
        assert_eq!(tally, Tally { done: 2, failed: 1 });
        assert_eq!(
            lines[0],
            Err("internal error (a bug in radveil; please report it)".into())
        );
        assert!(lines[1].as_ref().unwrap().starts_with("signed\t"));
        assert!(!dir.path().join("out/0.dcm").exists());
        assert!(dir.path().join("out/2.dcm").exists());
    }

    #[test]
    fn signature_time_is_a_dicom_datetime() {
        let dt = now_dt();
        assert_eq!(dt.len(), "20261123120000.123456+0000".len(), "{dt}");
        assert!(dt[..14].bytes().all(|b| b.is_ascii_digit()));
        assert!(dt.ends_with("+0000"));
    }
}
