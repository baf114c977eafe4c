//! Tests of a run: outputs written once and in place, resumed runs, memory bombs refused,
//! and inputs that change while they are de-identified.

use super::*;
use std::cell::RefCell;

use radveil_standard::tags;

use crate::sign::testing::{element, padded};

thread_local! {
    /// Called before the tail of an input is copied (tests only): lets a test change the
    /// input between parse and copy, deterministically.
    static BEFORE_COPY: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
}

/// The test hook (see [`BEFORE_COPY`]).
pub(crate) fn before_copy() {
    BEFORE_COPY.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f()
        }
    });
}

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

fn part10(body: &[u8], ts: &str, sop: &str) -> Vec<u8> {
    let mut meta = element(tags::FILE_META_INFORMATION_VERSION, b"OB", &[0, 1]);
    meta.extend(element(
        tags::MEDIA_STORAGE_SOP_CLASS_UID,
        b"UI",
        &padded(CT),
    ));
    meta.extend(element(
        tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
        b"UI",
        &padded(sop),
    ));
    meta.extend(element(tags::TRANSFER_SYNTAX_UID, b"UI", &padded(ts)));
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    f.extend(element(
        tags::FILE_META_INFORMATION_GROUP_LENGTH,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    ));
    f.extend(meta);
    f.extend_from_slice(body);
    f
}

/// A CT image whose Patient's Name is `name` and whose pixel data (`pixels` bytes) ends the
/// file.
fn ct_file(sop: &str, name: &str, pixels: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for (tag, vr, v) in [
        (tags::SOP_CLASS_UID, b"UI", CT),
        (tags::SOP_INSTANCE_UID, b"UI", sop),
        (tags::MODALITY, b"CS", "CT"),
        (tags::PATIENT_NAME, b"PN", name),
        (tags::PATIENT_ID, b"LO", "MRN0042"),
        (tags::STUDY_INSTANCE_UID, b"UI", "1.2.3.4.5.6"),
        (tags::SERIES_INSTANCE_UID, b"UI", "1.2.3.4.5.6.7"),
    ] {
        body.extend(element(tag, vr, &padded(v)));
    }
    body.extend(element(tags::PIXEL_DATA, b"OW", &vec![0x5Au8; pixels]));
    part10(&body, EXPLICIT_LE, sop)
}

fn deidentifier() -> Deidentifier {
    let key = radveil_deid::Key::new(zeroize::Zeroizing::new(vec![b'k'; 40])).unwrap();
    Deidentifier::new(key, radveil_deid::Config::default()).unwrap()
}

fn run(out: &Path, limit: u64, resume: bool) -> Run {
    Run::new(
        deidentifier(),
        out,
        &Settings {
            memory_limit: limit,
            resume,
        },
    )
    .unwrap()
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_large_file_is_written_with_its_tail_copied() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("in.dcm");
    std::fs::write(&src, ct_file("1.2.3.9.1", "DOE^JANE", 700_000)).unwrap();
    let out = d.path().join("out");
    let r = run(&out, 1 << 30, false);
    let mut scratch = Scratch::new();
    let o = r.deidentify_file(&src, &mut scratch, VisualFeatures::Untouched);
    let Outcome::Written { output, .. } = o else {
        panic!("{o:?}")
    };
    let bytes = std::fs::read(&output).unwrap();
    assert!(bytes.ends_with(&[0x5A; 700_000]));
    assert!(!bytes.windows(8).any(|w| w == b"DOE^JANE"));
    assert_eq!(files_under(&out), vec![output]);
    assert_eq!(r.budget().in_use(), 0);
}

#[test]
fn an_input_rewritten_between_parse_and_copy_is_not_written() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("in.dcm");
    let original = ct_file("1.2.3.9.2", "DOE^JANE", 700_000);
    std::fs::write(&src, &original).unwrap();
    // Rewritten (same size, as another transfer might) with a longer header: the range that
    // held the pixel data now starts inside the new header, whose elements were never parsed.
    let longer = "DOE^JANE^WITH^A^MUCH^LONGER^NAME";
    let grown = ct_file("1.2.3.9.2", longer, 700_000).len() - original.len();
    let rewritten = ct_file("1.2.3.9.2", longer, 700_000 - grown);
    assert_eq!(rewritten.len(), original.len());
    let out = d.path().join("out");
    let r = run(&out, 1 << 30, false);
    let target = src.clone();
    BEFORE_COPY.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            use std::io::{Seek, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.write_all(&rewritten).unwrap();
            f.sync_all().unwrap();
            // Times move at a clock tick; make sure this rewrite is seen by them too.
            f.set_modified(SystemTime::now() + std::time::Duration::from_secs(2))
                .unwrap();
        }))
    });
    let mut scratch = Scratch::new();
    let o = r.deidentify_file(&src, &mut scratch, VisualFeatures::Untouched);
    BEFORE_COPY.with(|h| *h.borrow_mut() = None);
    assert!(
        matches!(&o, Outcome::Failed(why) if why.contains("changed")),
        "{o:?}"
    );
    assert_eq!(files_under(&out), Vec::<PathBuf>::new());
}

#[test]
fn a_header_rewritten_with_its_time_put_back_is_seen() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("in.dcm");
    let original = ct_file("1.2.3.9.3", "DOE^JANE", 700_000);
    std::fs::write(&src, &original).unwrap();
    let meta = std::fs::metadata(&src).unwrap();
    let mtime = meta.modified().unwrap();
    let out = d.path().join("out");
    let r = run(&out, 1 << 30, false);
    let target = src.clone();
    BEFORE_COPY.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            let mut data = std::fs::read(&target).unwrap();
            let at = data.windows(8).position(|w| w == b"MRN0042\0").unwrap();
            data[at..at + 7].copy_from_slice(b"MRN9999");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, &data[..at + 8], 0).unwrap();
            // Put the modification time back: only the bytes tell.
            f.set_modified(mtime).unwrap();
        }))
    });
    let mut scratch = Scratch::new();
    let o = r.deidentify_file(&src, &mut scratch, VisualFeatures::Untouched);
    BEFORE_COPY.with(|h| *h.borrow_mut() = None);
    assert!(
        matches!(&o, Outcome::Failed(why) if why.contains("changed")),
        "{o:?}"
    );
    assert_eq!(files_under(&out), Vec::<PathBuf>::new());
}

#[test]
fn a_resumed_run_keeps_identical_outputs_and_refuses_others() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.dcm");
    let b = d.path().join("b.dcm");
    std::fs::write(&a, ct_file("1.2.3.9.4", "DOE^JANE", 700_000)).unwrap();
    std::fs::write(&b, ct_file("1.2.3.9.5", "DOE^JANE", 100)).unwrap();
    let out = d.path().join("out");
    let mut scratch = Scratch::new();
    let first: Vec<PathBuf> = {
        let r = run(&out, 1 << 30, false);
        [&a, &b]
            .iter()
            .map(
                |p| match r.deidentify_file(p, &mut scratch, VisualFeatures::Untouched) {
                    Outcome::Written { output, .. } => output,
                    o => panic!("{o:?}"),
                },
            )
            .collect()
    };
    // A temporary left by a killed run.
    let stale = first[0]
        .parent()
        .unwrap()
        .join(".radveil-deadbeef-0011.part");
    std::fs::write(&stale, b"partial").unwrap();
    // Without resume: existing outputs fail.
    {
        let r = run(&out, 1 << 30, false);
        let o = r.deidentify_file(&a, &mut scratch, VisualFeatures::Untouched);
        assert!(
            matches!(&o, Outcome::Failed(w) if w.contains("exists")),
            "{o:?}"
        );
        assert!(!stale.exists(), "stale temporary not removed");
        assert_eq!(r.stale_removed(), 1);
    }
    // With resume: identical outputs are kept; a changed one is not overwritten.
    let mut changed = std::fs::read(&first[1]).unwrap();
    let n = changed.len();
    changed[n - 1] ^= 1;
    std::fs::write(&first[1], &changed).unwrap();
    let r = run(&out, 1 << 30, true);
    let o = r.deidentify_file(&a, &mut scratch, VisualFeatures::Untouched);
    assert!(
        matches!(&o, Outcome::Kept { output, .. } if *output == first[0]),
        "{o:?}"
    );
    let o = r.deidentify_file(&b, &mut scratch, VisualFeatures::Untouched);
    assert!(
        matches!(&o, Outcome::Failed(w) if w.contains("differs")),
        "{o:?}"
    );
    assert_eq!(std::fs::read(&first[1]).unwrap(), changed);
    assert_eq!(files_under(&out), first);
}

#[test]
fn two_runs_cannot_share_an_output_directory() {
    let d = tempfile::tempdir().unwrap();
    let _a = run(d.path(), 1 << 30, false);
    let b = Run::new(
        deidentifier(),
        d.path(),
        &Settings {
            memory_limit: 1 << 30,
            resume: false,
        },
    );
    assert!(matches!(b, Err(OutputError::Locked(_))), "{b:?}");
}

/// A deflated data set that inflates to `inflated` bytes (zeros in a private OB element).
fn deflate_bomb(inflated: usize) -> Vec<u8> {
    use std::io::Write as _;
    // A private block (0009,10xx): its creator and one element. Private tags have no
    // PS3.6 keyword.
    const PRIVATE_CREATOR: u32 = 0x0009_0010;
    const PRIVATE_ELEMENT: u32 = 0x0009_1000;
    let sop = "1.2.3.9.6";
    let mut head = Vec::new();
    for (tag, vr, v) in [
        (tags::SOP_CLASS_UID, b"UI", CT),
        (tags::SOP_INSTANCE_UID, b"UI", sop),
        (PRIVATE_CREATOR, b"LO", "BOMB"),
    ] {
        head.extend(element(tag, vr, &padded(v)));
    }
    let rest = inflated - head.len() - 12;
    head.extend(element(PRIVATE_ELEMENT, b"OB", &[]));
    let n = head.len();
    head[n - 4..].copy_from_slice(&(rest as u32).to_le_bytes());
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&head).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = rest;
    while left > 0 {
        let k = left.min(zeros.len());
        enc.write_all(&zeros[..k]).unwrap();
        left -= k;
    }
    part10(&enc.finish().unwrap(), DEFLATED, sop)
}

#[test]
fn a_deflate_bomb_is_refused_before_it_is_inflated() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("bomb.dcm");
    std::fs::write(&src, deflate_bomb(200 << 20)).unwrap();
    let r = run(&d.path().join("out"), 64 << 20, false);
    let mut scratch = Scratch::new();
    let o = r.deidentify_file(&src, &mut scratch, VisualFeatures::Untouched);
    assert!(
        matches!(&o, Outcome::Failed(w) if w.contains("memory budget")),
        "{o:?}"
    );
    assert_eq!(r.budget().in_use(), 0);
    // With room for it, the same file goes through the de-identifier (and its own cap).
    let r = run(&d.path().join("out2"), 1 << 30, false);
    let o = r.deidentify_file(&src, &mut scratch, VisualFeatures::Untouched);
    assert!(
        !matches!(&o, Outcome::Failed(w) if w.contains("memory budget")),
        "{o:?}"
    );
}

#[test]
fn safe_components() {
    assert_eq!(safe_component("1.2.3"), "1.2.3");
    assert_eq!(safe_component(".."), "_");
    assert_eq!(safe_component(""), "_");
    assert_eq!(safe_component("a/b\\c"), "a_b_c");
}

#[test]
fn a_file_waits_for_memory_other_workers_hold_and_one_too_large_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("in.dcm");
    std::fs::write(&src, ct_file("1.2.3.9.7", "DOE^JANE", 400_000)).unwrap();
    let r = run(&d.path().join("out"), 1 << 20, false);
    let mut scratch = Scratch::new();
    std::thread::scope(|s| {
        // Another worker holds most of the budget for a while.
        let (tx, rx) = std::sync::mpsc::channel();
        let budget = r.budget();
        s.spawn(move || {
            let held = budget.try_reserve(900 << 10).unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        rx.recv().unwrap();
        let started = std::time::Instant::now();
        let o = r.deidentify_file(&src, &mut scratch, VisualFeatures::Untouched);
        assert!(matches!(o, Outcome::Written { .. }), "{o:?}");
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    });
    assert_eq!(r.budget().in_use(), 0);
    let big = d.path().join("big.dcm");
    std::fs::write(&big, ct_file("1.2.3.9.8", "DOE^JANE", 1 << 20)).unwrap();
    // Its pixel data ends it, so only the head is read: it goes through.
    let o = r.deidentify_file(&big, &mut scratch, VisualFeatures::Untouched);
    assert!(matches!(o, Outcome::Written { .. }), "{o:?}");
    // The same bytes followed by one more element must be read whole: more than the budget.
    let mut whole = ct_file("1.2.3.9.9", "DOE^JANE", 1 << 20);
    whole.extend(element(tags::DIGITAL_SIGNATURES_SEQUENCE, b"OB", &[0, 0]));
    let big2 = d.path().join("big2.dcm");
    std::fs::write(&big2, whole).unwrap();
    let o = r.deidentify_file(&big2, &mut scratch, VisualFeatures::Untouched);
    assert!(
        matches!(&o, Outcome::Failed(w) if w.contains("memory budget")),
        "{o:?}"
    );
    assert_eq!(r.budget().in_use(), 0);
}

#[test]
fn bytes_from_elsewhere_give_the_same_output_as_the_file() {
    let d = tempfile::tempdir().unwrap();
    let bytes = ct_file("1.2.3.9.10", "DOE^JANE", 700_000);
    let src = d.path().join("in.dcm");
    std::fs::write(&src, &bytes).unwrap();
    let mut scratch = Scratch::new();
    let a = run(&d.path().join("a"), 1 << 30, false);
    let Outcome::Written {
        output: from_file, ..
    } = a.deidentify_file(&src, &mut scratch, VisualFeatures::Untouched)
    else {
        panic!()
    };
    let b = run(&d.path().join("b"), 1 << 30, false);
    let o = b.deidentify_bytes(&bytes, VisualFeatures::Untouched);
    let Outcome::Written {
        output: from_bytes, ..
    } = o
    else {
        panic!("{o:?}")
    };
    assert_eq!(
        std::fs::read(from_file).unwrap(),
        std::fs::read(from_bytes).unwrap()
    );
    assert!(matches!(
        b.deidentify_bytes(&bytes, VisualFeatures::Untouched),
        Outcome::Duplicate
    ));
    assert_eq!(b.budget().in_use(), 0);
}
