//! Running a [`Pool`] over a batch whose results must come out in the order of the inputs
//! (a report read line by line against its inputs, a ledger appended in input order): each
//! result is handed on as soon as every result before it has been, so output still streams
//! while the workers run ahead.

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
