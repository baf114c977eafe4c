//! Parses arbitrary bytes as a data set in every encoding and writes back what parsed: must
//! never panic, and a written data set must parse again to the same tree. The same bytes read
//! as a Part 10 file under a small memory budget parse to the same tree or fail cleanly, and
//! give all their memory back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radveil_part10::{
    read_dataset, read_file, read_file_budgeted, write_dataset, Encoding, Limits, MemoryBudget,
};

fuzz_target!(|data: &[u8]| {
    for enc in [
        Encoding::ImplicitLittle,
        Encoding::ExplicitLittle,
        Encoding::ExplicitBig,
    ] {
        if let Ok(ds) = read_dataset(data, enc, Limits::default()) {
            let mut out = Vec::new();
            write_dataset(&ds, enc, &mut out);
            let again = read_dataset(&out, enc, Limits::default());
            assert!(
                again.is_ok(),
                "re-encoded data set does not parse: {:?}",
                again.err()
            );
        }
    }
    let budget = MemoryBudget::new(8 << 20);
    {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let plain = read_file(data, &mut a, Limits::default());
        let charged = read_file_budgeted(data, &mut b, Limits::default(), &budget);
        if let (Ok((_, p, _)), Ok((_, c, _, _grant))) = (&plain, &charged) {
            assert_eq!(p, c, "a budget changed the tree");
        }
    }
    assert_eq!(budget.in_use(), 0, "memory not given back");
});
