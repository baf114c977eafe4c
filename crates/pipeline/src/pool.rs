//! The worker pool every batch command uses: `jobs` threads take the next item from an atomic
//! counter, each with state of its own (an input buffer, reused), so memory grows with the
//! workers and not with the batch. A panic while working on one item is caught and reported
//! for that item; the worker starts again with fresh state and the batch goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Whether the pool should go on after an item is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Take the next item.
    Continue,
    /// Take no more items (the items under way are still finished).
    Stop,
}

/// Work on an item panicked: a bug, reported for that item only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("internal error (a bug in radveil; please report it)")]
pub struct Panicked;

/// What a pool run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Items handed to `finish`.
    pub done: usize,
    /// Whether `finish` asked to stop before every item was taken.
    pub stopped: bool,
}

/// A pool of worker threads.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    jobs: usize,
    stack_size: usize,
}

impl Pool {
    /// A pool of `jobs` threads (at least one) with 16 MiB stacks (parsers recurse into
    /// sequences, capped in depth, and the stack must hold that depth).
    pub fn new(jobs: usize) -> Pool {
        Pool {
            jobs: jobs.max(1),
            stack_size: 16 << 20,
        }
    }

    /// A pool of one thread per core the process may use (one when that is unknown).
    pub fn all_cores() -> Pool {
        Pool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// A pool of `jobs` threads when given (`--jobs`), else of all cores.
    pub fn jobs(jobs: Option<usize>) -> Pool {
        jobs.map_or_else(Pool::all_cores, Pool::new)
    }

    /// Sets each worker's stack size.
    pub fn stack_size(self, bytes: usize) -> Pool {
        Pool {
            stack_size: bytes,
            ..self
        }
    }

    /// Runs `work` on every item and hands each result to `finish` (on the worker's
    /// thread, as soon as it is ready). `init` makes a worker's state; it is made again
    /// after a panic. When no thread can be started the items run on the calling thread.
    pub fn run<T, S, R>(
        &self,
        items: &[T],
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, &T) -> R + Sync,
        finish: impl Fn(&T, Result<R, Panicked>) -> Flow + Sync,
    ) -> Finished
    where
        T: Sync,
    {
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let worker = || {
            let mut state = init();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = catch_unwind(AssertUnwindSafe(|| work(&mut state, item)));
                let result = match result {
                    Ok(r) => Ok(r),
                    Err(_) => {
                        state = init();
                        Err(Panicked)
                    }
                };
                let flow =
                    catch_unwind(AssertUnwindSafe(|| finish(item, result))).unwrap_or(Flow::Stop);
                done.fetch_add(1, Ordering::Relaxed);
                if flow == Flow::Stop {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        };
        let started = std::thread::scope(|s| {
            let mut started = 0;
            for _ in 0..self.jobs.min(items.len()) {
                let b = std::thread::Builder::new().stack_size(self.stack_size);
                if b.spawn_scoped(s, worker).is_ok() {
                    started += 1;
                }
            }
            started
        });
        if started == 0 && !items.is_empty() {
            worker();
        }
        let done = done.into_inner();
        Finished {
            done,
            stopped: stop.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_item_once_with_worker_state() {
        let items: Vec<u32> = (0..1000).collect();
        let seen = Mutex::new(Vec::new());
        let states = AtomicUsize::new(0);
        let f = Pool::new(4).run(
            &items,
            || {
                states.fetch_add(1, Ordering::Relaxed);
                0u32
            },
            |count, &x| {
                *count += 1;
                x * 2
            },
            |&x, r| {
                assert_eq!(r, Ok(x * 2));
                seen.lock().unwrap().push(x);
                Flow::Continue
            },
        );
        assert_eq!(
            f,
            Finished {
                done: 1000,
                stopped: false
            }
        );
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, items);
        assert!(states.into_inner() <= 4);
    }

    #[test]
    fn a_panic_is_reported_for_its_item_and_the_batch_goes_on() {
        let items: Vec<u32> = (0..50).collect();
        let panicked = Mutex::new(Vec::new());
        let f = Pool::new(2).run(
            &items,
            Vec::<u8>::new,
            |_, &x| {
                if x % 10 == 3 {
                    panic!("boom");
                }
                x
            },
            |&x, r| {
                if r == Err(Panicked) {
                    panicked.lock().unwrap().push(x);
                }
                Flow::Continue
            },
        );
        assert_eq!(f.done, 50);
        let mut p = panicked.into_inner().unwrap();
        p.sort_unstable();
        assert_eq!(p, vec![3, 13, 23, 33, 43]);
    }

    #[test]
    fn stop_takes_no_more_items() {
        let items: Vec<u32> = (0..10_000).collect();
        let f = Pool::new(2).run(
            &items,
            || (),
            |_, &x| x,
            |&x, _| if x == 5 { Flow::Stop } else { Flow::Continue },
        );
        assert!(f.stopped);
        assert!(f.done < 10_000, "{f:?}");
    }

    #[test]
    fn jobs_default_to_all_cores_and_never_to_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(Pool::jobs(None).jobs, cores);
        assert_eq!(Pool::all_cores().jobs, cores);
        assert_eq!(Pool::jobs(Some(3)).jobs, 3);
        assert_eq!(Pool::jobs(Some(0)).jobs, 1);
    }

    #[test]
    fn no_items() {
        let f = Pool::new(3).run(&[] as &[u8], || (), |_, _| (), |_, _| Flow::Continue);
        assert_eq!(f.done, 0);
    }
}
