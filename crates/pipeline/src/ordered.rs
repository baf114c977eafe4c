//! Running a [`Pool`] over a batch whose results must come out in the order of the inputs
//! (a report read line by line against its inputs, a ledger appended in input order): each
//! result is handed on as soon as every result before it has been, so output still streams
//! while the workers run ahead.
//!
//! [`map_in_order`] is the batch loop of the file commands (`sign`, `verify`, `timestamp`;
//! an image check of the ledger is a [`FromPanic`] result too): one typed result per file,
//! in input order, a panic on one file being that file's failure; [`Tally`] counts them for
//! the summary and the exit status.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::pool::{Flow, Panicked, Pool};

/// Runs `work` on every item on `pool`'s workers (each with state made by `init`) and hands
/// each result to `emit` in the order of `items`, one at a time. A panic in `work` is handed
/// on as `Err(Panicked)` for that item only.
pub fn for_each_in_order<'a, T, S, R>(
    pool: &Pool,
    items: &'a [T],
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &T) -> R + Sync,
    emit: impl FnMut(&'a T, Result<R, Panicked>) + Send,
) where
    T: Sync,
    R: Send,
{
    let indexed: Vec<(usize, &T)> = items.iter().enumerate().collect();
    let state = Mutex::new(Reorder {
        next: 0,
        waiting: BTreeMap::new(),
        emit,
    });
    pool.run(
        &indexed,
        init,
        |s, &(_, item)| work(s, item),
        |&(i, _), result| {
            // A poisoned lock means `emit` panicked: nothing more can be handed on.
            let Ok(mut r) = state.lock() else {
                return Flow::Stop;
            };
            r.waiting.insert(i, result);
            while let Some(result) = {
                let next = r.next;
                r.waiting.remove(&next)
            } {
                let at = r.next;
                r.next += 1;
                if let Some(item) = items.get(at) {
                    (r.emit)(item, result);
                }
            }
            Flow::Continue
        },
    );
}

/// A per-item result that can stand for a panic while its item was worked on (a bug,
/// reported for that item only; the batch goes on).
pub trait FromPanic {
    /// The result of an item whose work panicked.
    fn from_panic(panicked: Panicked) -> Self;
}

impl<T, E: From<Panicked>> FromPanic for Result<T, E> {
    fn from_panic(panicked: Panicked) -> Self {
        Err(E::from(panicked))
    }
}

/// Runs `work` on every item on `pool`'s workers and hands each item's result to `emit` in
/// the order of `items`, as soon as every result before it has been handed on. A panic in
/// `work` becomes that item's result ([`FromPanic`]); the batch goes on.
pub fn map_in_order<'a, T, R>(
    pool: &Pool,
    items: &'a [T],
    work: impl Fn(&T) -> R + Sync,
    mut emit: impl FnMut(&'a T, R) + Send,
) where
    T: Sync,
    R: FromPanic + Send,
{
    for_each_in_order(
        pool,
        items,
        || (),
        |(), item| work(item),
        |item, result| emit(item, result.unwrap_or_else(R::from_panic)),
    );
}

/// How many items of a batch came out done, and how many failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Items done.
    pub done: usize,
    /// Items that failed (refused inputs counted by the caller included).
    pub failed: usize,
}

impl Tally {
    /// Counts one result.
    pub fn count<T, E>(&mut self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.done += 1,
            Err(_) => self.failed += 1,
        }
    }

    /// Whether nothing failed: the batch's exit status is success.
    pub fn all_done(&self) -> bool {
        self.failed == 0
    }
}

/// Results finished out of order, waiting for those before them.
struct Reorder<R, E> {
    /// The index of the next result to hand on.
    next: usize,
    waiting: BTreeMap<usize, Result<R, Panicked>>,
    emit: E,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_out_in_input_order_with_panics_in_place() {
        let items: Vec<u32> = (0..500).collect();
        let mut seen = Vec::new();
        for_each_in_order(
            &Pool::new(4),
            &items,
            || (),
            |(), &x| {
                if x % 97 == 5 {
                    panic!("boom");
                }
                // Uneven work, so workers finish out of order.
                if x % 7 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                x * 3
            },
            |&x, r| seen.push((x, r)),
        );
        assert_eq!(seen.len(), 500);
        for (i, (x, r)) in seen.into_iter().enumerate() {
            assert_eq!(x as usize, i);
            if x % 97 == 5 {
                assert_eq!(r, Err(Panicked));
            } else {
                assert_eq!(r, Ok(x * 3));
            }
        }
    }

    /// A result for the tests: a value, or the panic it stands for.
    #[derive(Debug, PartialEq)]
    enum Got {
        Value(u32),
        Panic,
    }

    impl FromPanic for Got {
        fn from_panic(p: Panicked) -> Got {
            assert_eq!(p, Panicked);
            Got::Panic
        }
    }

    #[test]
    fn map_in_order_gives_every_result_in_input_order_and_a_panic_as_its_result() {
        let items: Vec<u32> = (0..200).collect();
        let mut seen = Vec::new();
        map_in_order(
            &Pool::new(4),
            &items,
            |&x| {
                // The first items are the slowest: every later worker finishes first.
                if x < 4 {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                }
                if x % 50 == 7 {
                    panic!("boom");
                }
                Got::Value(x + 1)
            },
            |&x, r| seen.push((x, r)),
        );
        assert_eq!(seen.len(), 200);
        for (i, (x, r)) in seen.into_iter().enumerate() {
            assert_eq!(x as usize, i);
            let want = if x % 50 == 7 {
                Got::Panic
            } else {
                Got::Value(x + 1)
            };
            assert_eq!(r, want);
        }
    }

    #[test]
    fn a_panic_is_a_failed_result_and_counted_as_one() {
        #[derive(Debug, PartialEq)]
        struct Failed(String);
        impl From<Panicked> for Failed {
            fn from(p: Panicked) -> Failed {
                Failed(p.to_string())
            }
        }
        let items = [1u8, 2, 3, 4];
        let mut tally = Tally::default();
        let mut failures = Vec::new();
        map_in_order(
            &Pool::new(2),
            &items,
            |&x| -> Result<u8, Failed> {
                match x {
                    2 => panic!("boom"),
                    4 => Err(Failed("refused".into())),
                    _ => Ok(x),
                }
            },
            |&x, r| {
                tally.count(&r);
                if let Err(e) = r {
                    failures.push((x, e.0));
                }
            },
        );
        assert_eq!(tally, Tally { done: 2, failed: 2 });
        assert!(!tally.all_done());
        assert_eq!(
            failures,
            [
                (
                    2,
                    "internal error (a bug in radveil; please report it)".into()
                ),
                (4, "refused".to_string())
            ]
        );
        assert!(Tally { done: 3, failed: 0 }.all_done());
    }

    #[test]
    fn no_items_emit_nothing() {
        let mut n = 0;
        for_each_in_order(
            &Pool::new(2),
            &[] as &[u8],
            || (),
            |(), _| (),
            |_, _| n += 1,
        );
        assert_eq!(n, 0);
    }
}
