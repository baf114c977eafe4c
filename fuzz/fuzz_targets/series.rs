//! Reads arbitrary bytes as a DICOM image to deface: the header scan that groups files into
//! volumes, the grouping itself, and the assembly of a (multi-frame) image's frames from its
//! functional groups and pixel data must give an error, never a panic or an allocation the
//! data cannot back.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The whole input and its two halves, each given twice: every image must come out of the
    // grouping exactly once (in a volume, as a duplicate, or as a loose image).
    let half = data.len() / 2;
    let headers: Vec<_> = [data, &data[..half], &data[half..]]
        .into_iter()
        .flat_map(|d| [d, d])
        .enumerate()
        .filter_map(|(n, d)| Some((n, radveil_deface::series::image_header(d)?)))
        .collect();
    let given = headers.len();
    let (groups, loose) = radveil_deface::series::group_volumes(headers);
    let mut seen: Vec<usize> = groups
        .into_iter()
        .flat_map(|g| g.images.into_iter().chain(g.duplicates))
        .chain(loose)
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), given);
    // Within a small budget: whatever the header claims, nothing beyond it is allocated.
    let budget = radveil_part10::MemoryBudget::new(64 << 20);
    let _ = radveil_deface::series::assemble_with_budget(
        &[PathBuf::from("fuzz.dcm")],
        |_| Ok(data.to_vec()),
        &budget,
    );
    assert_eq!(budget.in_use(), 0);
});
