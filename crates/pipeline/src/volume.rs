//! One volume in one pass, under the Clean Recognizable Visual Features option: the files of a
//! head volume (single-frame slices of one series, or one multi-frame image) are each read
//! and parsed once, the volume is assembled from the parsed data sets and defaced, the
//! defaced pixels are put back into each data set, and each is de-identified, encoded once
//! and written through the run's output directory.
//!
//! Every file of the volume is held, parsed, while the volume is worked on: the files' bytes
//! are reserved from the run's budget before any is read and the trees are charged to the
//! same grant; a volume whose files together can never fit is left to the caller
//! ([`VolumeOutcome::TooLarge`]), which can deface it reading one file at a time.

use std::path::{Path, PathBuf};

use radveil_deface::series::{self, SeriesError};
use radveil_deface::{DefaceError, DefaceOptions};
use radveil_deid::{DeidError, VisualFeatures};
use radveil_part10 as p10;
use radveil_part10::{BudgetError, DataSet, DEFAULT_WAIT};

use crate::{Outcome, Run};

/// What became of a volume.
#[derive(Debug)]
pub enum VolumeOutcome {
    /// Each file de-identified from its parsed data set: one outcome per file, in the order
    /// given, and what was done to the pixels: defaced (cleaned), or nothing, a volume that
    /// is not a head and shows no face (none found).
    Deidentified(Vec<Outcome>, VisualFeatures),
    /// Too few images to be a volume: each file is to be de-identified on its own, its pixels
    /// untouched.
    EachFile(VisualFeatures),
    /// Every file held back, with why (a face that could not be removed, a volume that could
    /// not be checked).
    Held(String),
    /// The files together are larger than the run's whole memory budget: nothing was done.
    TooLarge,
}

impl Run {
    /// Defaces the volume made by `paths` and de-identifies its files, each parsed once and
    /// encoded once (see the module documentation).
    pub fn deface_volume(&self, paths: &[PathBuf], options: DefaceOptions) -> VolumeOutcome {
        let mut sizes = Vec::with_capacity(paths.len());
        for p in paths {
            sizes.push(std::fs::metadata(p).map_or(0, |m| m.len()));
        }
        let total = sizes.iter().fold(0u64, |a, &s| a.saturating_add(s));
        let mut wait_for = 0;
        for _ in 0..crate::ATTEMPTS {
            if wait_for > 0 {
                // Holding nothing (a thread that holds memory never waits for more): wait
                // until what the volume needs is free, then start again.
                match self.budget().reserve(wait_for, DEFAULT_WAIT) {
                    Ok(_) => {}
                    Err(BudgetError::TooLarge { .. }) => return VolumeOutcome::TooLarge,
                    Err(e) => return held(format!("the volume cannot be defaced: {e}")),
                }
            }
            match self.deface_volume_once(paths, &sizes, total, options) {
                Ok(outcome) => return outcome,
                Err(need) => wait_for = need,
            }
        }
        held(format!(
            "the volume cannot be defaced: {}",
            BudgetError::Busy {
                requested: wait_for
            }
        ))
    }

    /// One try of [`Run::deface_volume`]; `Err(bytes)` when memory other workers hold was
    /// needed while this one held some: about `bytes` are to be waited for, holding nothing.
    fn deface_volume_once(
        &self,
        paths: &[PathBuf],
        sizes: &[u64],
        total: u64,
        options: DefaceOptions,
    ) -> Result<VolumeOutcome, u64> {
        let budget = self.budget();
        // The files' bytes, granted before any is read; the trees grow the same grant.
        let mut grant = match budget.reserve(total, DEFAULT_WAIT) {
            Ok(g) => g,
            Err(BudgetError::TooLarge { .. }) => return Ok(VolumeOutcome::TooLarge),
            Err(e) => return Ok(held(format!("the volume cannot be defaced: {e}"))),
        };
        let mut files = Vec::with_capacity(paths.len());
        for (p, &size) in paths.iter().zip(sizes) {
            match crate::input::read_regular(p, size) {
                Ok(b) => files.push(b),
                Err(e) => return Ok(cannot_assemble(p, e)),
            }
        }
        let mut inflated: Vec<Vec<u8>> = paths.iter().map(|_| Vec::new()).collect();
        let mut parsed = Vec::with_capacity(paths.len());
        for ((p, bytes), inflated) in paths.iter().zip(&files).zip(inflated.iter_mut()) {
            match p10::read_file_in(bytes, inflated, p10::Limits::default(), &mut grant) {
                Ok(f) => parsed.push(f),
                Err(p10::Error::Budget(BudgetError::Busy { requested })) => {
                    return Err(grant.bytes().saturating_add(requested))
                }
                Err(e) => return Ok(cannot_assemble(p, e)),
            }
        }
        let views: Vec<series::Parsed<'_, '_>> =
            parsed.iter().map(|(m, d, e)| (m, d, *e)).collect();
        let assembled = series::assemble_parsed(paths, &views, budget);
        drop(views);
        let mut volume = match assembled {
            Ok(s) => s,
            // A localizer or a few images: not a volume a face could be rendered from.
            Err(SeriesError::TooFewSlices(_)) => {
                return Ok(VolumeOutcome::EachFile(VisualFeatures::Untouched))
            }
            // Memory other workers hold: let everything go and wait for it.
            Err(SeriesError::Memory(BudgetError::Busy { requested })) => {
                return Err(grant.bytes().saturating_add(requested))
            }
            Err(e) => {
                return Ok(held(format!(
                    "cannot assemble a volume to look for a face: {e}"
                )))
            }
        };
        // The volume (returned to us to account for) and the mask of removed voxels.
        let voxels = volume.volume.data.len() as u64;
        let _volume = match budget.reserve(voxels.saturating_mul(5), DEFAULT_WAIT) {
            Ok(g) => g,
            Err(BudgetError::Busy { requested }) => {
                return Err(grant.bytes().saturating_add(requested))
            }
            Err(e) => return Ok(held(format!("the volume cannot be defaced: {e}"))),
        };
        let defaced = match radveil_deface::deface(&mut volume.volume, options) {
            Ok(d) => d,
            Err(DefaceError::NotAHead(why)) => {
                return Ok(match radveil_deface::face_check(&volume.volume) {
                    Ok(fc) if !fc.face_found => {
                        // No face: each parsed file is de-identified as it is.
                        drop(volume);
                        let outcomes = parsed
                            .into_iter()
                            .zip(&files)
                            .map(|((meta, ds, _), bytes)| {
                                self.deidentify_parsed(
                                    &meta,
                                    ds,
                                    VisualFeatures::NoneFound,
                                    bytes.len() as u64,
                                )
                            })
                            .collect();
                        VolumeOutcome::Deidentified(outcomes, VisualFeatures::NoneFound)
                    }
                    Ok(fc) => held(format!(
                        "a face is found (score {:.1}) but the volume is not recognised as a head ({why})",
                        fc.score
                    )),
                    Err(e) => held(format!("the face check failed: {e}")),
                });
            }
            Err(e) => return Ok(held(format!("defacing {e}"))),
        };
        let mut outcomes = Vec::with_capacity(paths.len());
        for (n, ((mut meta, mut ds, enc), bytes)) in parsed.into_iter().zip(&files).enumerate() {
            let outcome = match series::put_defaced(
                &volume,
                n,
                (&mut meta, &mut ds, enc),
                &defaced.removed,
                &volume.volume.data,
                budget,
            ) {
                Ok(_pixels) => {
                    self.deidentify_parsed(&meta, ds, VisualFeatures::Cleaned, bytes.len() as u64)
                }
                Err(e) => Outcome::Failed(format!("cannot deface: {e}")),
            };
            outcomes.push(outcome);
        }
        Ok(VolumeOutcome::Deidentified(
            outcomes,
            VisualFeatures::Cleaned,
        ))
    }

    /// De-identifies a defaced data set (its tree already charged by the caller) and writes
    /// it. `len` (the file's size) is reserved, waiting for other workers, for what
    /// de-identification and encoding allocate; beyond it the grant grows without waiting.
    fn deidentify_parsed(
        &self,
        meta: &p10::FileMeta<'_>,
        ds: DataSet<'_>,
        visual: VisualFeatures,
        len: u64,
    ) -> Outcome {
        let mut grant = match self.budget().reserve(len, DEFAULT_WAIT) {
            Ok(g) => g,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        match self
            .deidentifier()
            .deidentify_parsed(meta, ds, visual, &mut grant)
        {
            Ok(o) => self.write(o, None),
            Err(e @ DeidError::HeldBack(_)) => Outcome::Held(e.to_string()),
            Err(e @ DeidError::Dicomdir) => Outcome::Skipped(e.to_string()),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

fn held(why: String) -> VolumeOutcome {
    VolumeOutcome::Held(why)
}

/// The volume held back because file `path` cannot be read or parsed (as assembling it would
/// have said).
fn cannot_assemble(path: &Path, why: impl std::fmt::Display) -> VolumeOutcome {
    let e = SeriesError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    held(format!("cannot assemble a volume to look for a face: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use radveil_deface::DefaceOptions;
    use radveil_part10::{Element, Value, Vr};
    use radveil_standard::tags;
    use std::borrow::Cow;

    /// Slice `z` of an MR series of 16 x 16 images (`name` as Patient's Name).
    pub(crate) fn slice(z: usize, name: &str) -> Vec<u8> {
        let us = |tag: u32, v: u16| Element {
            tag,
            vr: Vr::US,
            value: Value::Bytes(Cow::Owned(v.to_le_bytes().to_vec())),
        };
        let sop = format!("1.2.3.4.{z}");
        let mut ds = DataSet::default();
        ds.put(Element::text(
            tags::SOP_CLASS_UID,
            Vr::UI,
            "1.2.840.10008.5.1.4.1.1.4",
        ));
        ds.put(Element::text(tags::SOP_INSTANCE_UID, Vr::UI, &sop));
        ds.put(Element::text(tags::MODALITY, Vr::CS, "MR"));
        ds.put(Element::text(tags::PATIENT_NAME, Vr::PN, name));
        ds.put(Element::text(tags::SERIES_INSTANCE_UID, Vr::UI, "1.2.3"));
        ds.put(Element::text(
            tags::IMAGE_POSITION_PATIENT,
            Vr::DS,
            &format!("0\\0\\{z}"),
        ));
        ds.put(Element::text(
            tags::IMAGE_ORIENTATION_PATIENT,
            Vr::DS,
            "1\\0\\0\\0\\1\\0",
        ));
        ds.put(Element::text(tags::PIXEL_SPACING, Vr::DS, "1\\1"));
        ds.put(us(tags::SAMPLES_PER_PIXEL, 1));
        ds.put(us(tags::ROWS, 16));
        ds.put(us(tags::COLUMNS, 16));
        ds.put(us(tags::BITS_ALLOCATED, 16));
        ds.put(us(tags::BITS_STORED, 16));
        ds.put(Element {
            tag: p10::PIXEL_DATA,
            vr: Vr::OW,
            value: Value::Bytes(Cow::Owned(vec![1; 512])),
        });
        let mut meta = DataSet::default();
        meta.put(Element::text(
            tags::MEDIA_STORAGE_SOP_CLASS_UID,
            Vr::UI,
            "1.2.840.10008.5.1.4.1.1.4",
        ));
        meta.put(Element::text(
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
            Vr::UI,
            &sop,
        ));
        meta.put(Element::text(
            tags::TRANSFER_SYNTAX_UID,
            Vr::UI,
            p10::EXPLICIT_VR_LITTLE_ENDIAN,
        ));
        let mut out = Vec::new();
        p10::write_file(&meta, &ds, p10::EXPLICIT_VR_LITTLE_ENDIAN, &mut out);
        out
    }

    /// Slices 0 to `n - 1` of the series, as `dir/Z.dcm`.
    pub(crate) fn series(dir: &Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|z| {
                let p = dir.join(format!("{z}.dcm"));
                std::fs::write(&p, slice(z, "DOE^JANE")).unwrap();
                p
            })
            .collect()
    }

    fn run(out: &Path, limit: u64) -> Run {
        let key = radveil_deid::Key::new(zeroize::Zeroizing::new(vec![b'k'; 40])).unwrap();
        let d = radveil_deid::Deidentifier::new(key, radveil_deid::Config::default()).unwrap();
        Run::new(
            d,
            out,
            &crate::Settings {
                memory_limit: limit,
                resume: false,
            },
        )
        .unwrap()
    }

    fn options() -> DefaceOptions {
        DefaceOptions::default()
    }

    /// The DICOM files written under `dir`.
    fn written(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            written(&p)
                        } else {
                            usize::from(p.extension().is_some_and(|x| x == "dcm"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    #[test]
    fn a_volume_whose_files_never_fit_is_left_to_the_caller() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = series(tmp.path(), 10);
        let out = tmp.path().join("out");
        let one = std::fs::metadata(&paths[0]).unwrap().len();
        let r = run(&out, one * 5);
        assert!(matches!(
            r.deface_volume(&paths, options()),
            VolumeOutcome::TooLarge
        ));
        assert_eq!(r.budget().in_use(), 0);
        assert_eq!(written(&out), 0);
    }

    #[test]
    fn a_few_images_are_left_to_be_deidentified_one_by_one() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = series(tmp.path(), 3);
        let out = tmp.path().join("out");
        let r = run(&out, 1 << 30);
        assert!(matches!(
            r.deface_volume(&paths, options()),
            VolumeOutcome::EachFile(VisualFeatures::Untouched)
        ));
        assert_eq!(r.budget().in_use(), 0);
        assert_eq!(written(&out), 0);
    }

    #[test]
    fn a_file_that_cannot_be_parsed_holds_the_volume_back_without_quoting_it() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = series(tmp.path(), 10);
        let mut broken = slice(4, "DOE^JANE");
        broken.truncate(broken.len() - 100);
        broken.extend_from_slice(&[0xFF; 20]);
        std::fs::write(&paths[4], &broken).unwrap();
        let out = tmp.path().join("out");
        let r = run(&out, 1 << 30);
        match r.deface_volume(&paths, options()) {
            VolumeOutcome::Held(why) => {
                assert!(why.contains("4.dcm"), "{why}");
                assert!(!why.contains("DOE"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.budget().in_use(), 0);
        assert_eq!(written(&out), 0);
    }

    #[test]
    fn a_volume_that_is_no_head_is_never_written_defaced() {
        // Ten flat slices: not a head. Either no face is found (each parsed file is then
        // de-identified as it is, none of its pixels changed) or the volume is held.
        let tmp = tempfile::tempdir().unwrap();
        let paths = series(tmp.path(), 10);
        let out = tmp.path().join("out");
        let r = run(&out, 1 << 30);
        match r.deface_volume(&paths, options()) {
            VolumeOutcome::Deidentified(outcomes, VisualFeatures::NoneFound) => {
                assert_eq!(outcomes.len(), 10);
                for o in outcomes {
                    let Outcome::Written { output, .. } = o else {
                        panic!("{o:?}")
                    };
                    let bytes = std::fs::read(output).unwrap();
                    // The pixels as they came; the name gone.
                    assert!(bytes.ends_with(&[1; 512]));
                    assert!(!bytes.windows(3).any(|w| w == b"DOE"));
                }
                assert_eq!(written(&out), 10);
            }
            VolumeOutcome::Held(_) => assert_eq!(written(&out), 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.budget().in_use(), 0);
    }

    #[test]
    fn a_volume_waits_holding_nothing_for_memory_other_workers_hold() {
        // Another worker holds all but the files' bytes and releases it soon: the trees of
        // the parsed files cannot grow (this thread holds the files' memory, so it may not
        // wait), so the volume lets everything go, waits holding nothing, and tries again,
        // instead of being held back for memory.
        let tmp = tempfile::tempdir().unwrap();
        let paths = series(tmp.path(), 10);
        let total: u64 = paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        let out = tmp.path().join("out");
        let limit = 1 << 20;
        let r = run(&out, limit);
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let budget = r.budget();
            s.spawn(move || {
                let g = budget.try_reserve(limit - total).unwrap();
                taken_tx.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(300));
                drop(g);
            });
            taken_rx.recv().unwrap();
            let got = r.deface_volume(&paths, options());
            if let VolumeOutcome::Held(why) = &got {
                assert!(!why.contains("memory"), "{why}");
            }
        });
        assert_eq!(r.budget().in_use(), 0);
    }

    #[test]
    fn a_volume_waits_for_memory_other_workers_hold_while_it_is_assembled() {
        // Another worker holds part of the budget. Whatever its share, one try either goes
        // through, or asks to wait holding nothing (`Err`), or holds the volume back for a
        // reason that is not memory: a volume whose files and trees fit but whose decoded
        // slices or volume do not (memory others hold) is tried again, never held back.
        // What is left is swept upwards finely, so that some sizes leave room for parsing and
        // none for assembling (decoded slices, their values, the volume).
        let tmp = tempfile::tempdir().unwrap();
        let paths = series(tmp.path(), 10);
        let sizes: Vec<u64> = paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect();
        let total: u64 = sizes.iter().sum();
        let limit = 8 << 20;
        let r = run(&tmp.path().join("out"), limit);
        let mut waited = 0;
        // What is left to the volume goes from nothing to all of it, in steps of 8 KiB (the
        // window where parsing fits and assembling does not is about 20 KiB wide here).
        for left in (0..limit - total).step_by(8192) {
            let share = limit - total - left;
            let held = r.budget().try_reserve(share).unwrap();
            let got = r.deface_volume_once(&paths, &sizes, total, options());
            drop(held);
            match got {
                Err(_) => waited += 1,
                Ok(VolumeOutcome::Held(why)) => {
                    assert!(
                        !why.contains("memory"),
                        "another holding {share} bytes: {why}"
                    )
                }
                // Enough was left for the whole volume: larger shares of what is left change
                // nothing.
                Ok(_) => break,
            }
            assert_eq!(r.budget().in_use(), 0);
        }
        assert!(waited > 0, "no share of the budget made the volume wait");
    }
}
