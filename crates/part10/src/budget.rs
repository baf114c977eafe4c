//! One memory budget for a whole run, shared by every worker.
//!
//! Hostile files claim sizes they do not have: a deflated data set that inflates to
//! gigabytes, a JPEG-LS header announcing a huge image, a Number of Frames of 2^63. Every
//! reader and decoder checks a claimed size against the bytes present first, and then asks
//! the budget for the memory it is about to allocate. A request larger than the whole budget
//! is refused at once; a request that fits the budget but not what other workers hold now
//! waits for them (up to a deadline), so one large file slows a run down instead of taking
//! the machine down, and a bomb is refused before anything is allocated.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Why memory was not granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The request alone exceeds the whole budget: it can never be granted.
    #[error(
        "needs {requested} bytes of memory, more than the whole memory budget of {limit} bytes"
    )]
    TooLarge {
        /// Bytes asked for.
        requested: u64,
        /// The budget's limit.
        limit: u64,
    },
    /// Other workers held the memory for longer than the deadline.
    #[error("needs {requested} bytes of memory; the memory budget stayed in use by other work")]
    Busy {
        /// Bytes asked for.
        requested: u64,
    },
}

/// A memory budget in bytes, shared by reference between threads.
///
/// A thread that holds memory of the budget never waits for more: its request is granted at
/// once or refused as [`BudgetError::Busy`]. Waiting while holding is how a worker deadlocks
/// with itself (a decoder holding the image's memory and waiting for a frame's) or with
/// another worker (each holding half and waiting for the other's); so only a thread that
/// holds nothing waits, and what it waits for is released by threads that do not wait.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    state: Mutex<State>,
    freed: Condvar,
}

/// What a budget has granted: in all, and per thread holding grants.
#[derive(Debug, Default)]
struct State {
    used: u64,
    held: HashMap<ThreadId, u64>,
}

/// How long a request that fits the budget waits for other workers to release memory.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            limit,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// A budget that grants everything (tests, tools that read one trusted file).
    pub fn unlimited() -> MemoryBudget {
        MemoryBudget::new(u64::MAX)
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes granted and not yet released.
    pub fn in_use(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).used
    }

    /// Grants `bytes`, or refuses at once when that can never fit or when the memory is in
    /// use now.
    pub fn try_reserve(&self, bytes: u64) -> Result<Grant<'_>, BudgetError> {
        self.reserve(bytes, Duration::ZERO)
    }

    /// Grants `bytes`, waiting up to `wait` for other workers to release memory. A request
    /// larger than the whole budget is refused without waiting, and so is one from a thread
    /// that already holds memory of this budget when the bytes are not free now (see
    /// [`MemoryBudget`]).
    pub fn reserve(&self, bytes: u64, wait: Duration) -> Result<Grant<'_>, BudgetError> {
        if bytes > self.limit {
            return Err(BudgetError::TooLarge {
                requested: bytes,
                limit: self.limit,
            });
        }
        let me = std::thread::current().id();
        let deadline = Instant::now().checked_add(wait);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // `used <= limit` always holds, so neither saturates.
            if self.limit.saturating_sub(state.used) >= bytes {
                state.used = state.used.saturating_add(bytes);
                if bytes > 0 {
                    let held = state.held.entry(me).or_insert(0);
                    *held = held.saturating_add(bytes);
                }
                return Ok(Grant {
                    budget: self,
                    bytes,
                    holder: me,
                });
            }
            if state.held.get(&me).is_some_and(|&h| h > 0) {
                return Err(BudgetError::Busy { requested: bytes });
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d > now => d.saturating_duration_since(now),
                Some(_) => return Err(BudgetError::Busy { requested: bytes }),
                None => Duration::from_secs(3600),
            };
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn release(&self, bytes: u64, holder: ThreadId) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.used = state.used.saturating_sub(bytes);
        if let Some(held) = state.held.get_mut(&holder) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                state.held.remove(&holder);
            }
        }
        self.freed.notify_all();
    }
}

/// Memory granted by a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Grant<'b> {
    budget: &'b MemoryBudget,
    bytes: u64,
    /// The thread the memory was granted to: it holds it until the grant is dropped,
    /// wherever that happens.
    holder: ThreadId,
}

impl Grant<'_> {
    /// Bytes this grant holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds `more` bytes to this grant (refused at once when they are not free now: a worker
    /// that already holds memory must not wait for others, who may be waiting for it).
    pub fn grow(&mut self, more: u64) -> Result<(), BudgetError> {
        let mut extra = self.budget.try_reserve(more)?;
        if extra.holder != self.holder {
            // Granted to this thread for a grant another thread holds: move the count over.
            let mut state = self.budget.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = state.held.get_mut(&extra.holder) {
                *h = h.saturating_sub(extra.bytes);
                if *h == 0 {
                    state.held.remove(&extra.holder);
                }
            }
            let h = state.held.entry(self.holder).or_insert(0);
            *h = h.saturating_add(extra.bytes);
        }
        self.bytes = self.bytes.saturating_add(extra.bytes);
        extra.bytes = 0; // moved into this grant; nothing to release twice
        Ok(())
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes, self.holder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_can_never_fit() {
        let b = MemoryBudget::new(100);
        assert_eq!(
            b.reserve(101, Duration::from_secs(10)).unwrap_err(),
            BudgetError::TooLarge {
                requested: 101,
                limit: 100
            }
        );
    }

    #[test]
    fn grants_are_released_on_drop() {
        let b = MemoryBudget::new(100);
        let g = b.try_reserve(60).unwrap();
        assert_eq!(b.in_use(), 60);
        assert_eq!(
            b.try_reserve(50).unwrap_err(),
            BudgetError::Busy { requested: 50 }
        );
        drop(g);
        assert_eq!(b.in_use(), 0);
        let mut g = b.try_reserve(50).unwrap();
        g.grow(50).unwrap();
        assert_eq!(g.bytes(), 100);
        assert!(g.grow(1).is_err());
        drop(g);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn a_thread_holding_memory_is_refused_at_once_instead_of_waiting_for_itself() {
        let b = MemoryBudget::new(100);
        let held = b.try_reserve(60).unwrap();
        let started = Instant::now();
        // Waiting here could only end when this very thread released its grant.
        assert_eq!(
            b.reserve(50, Duration::from_secs(30)).unwrap_err(),
            BudgetError::Busy { requested: 50 }
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // What is free is still granted.
        let more = b.reserve(40, Duration::from_secs(30)).unwrap();
        drop((held, more));
        assert_eq!(b.in_use(), 0);
        // Holding nothing again, it waits as before (and here gets it at once).
        assert!(b.reserve(100, Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn two_workers_each_holding_half_never_deadlock() {
        let b = MemoryBudget::new(100);
        let barrier = std::sync::Barrier::new(2);
        let started = Instant::now();
        std::thread::scope(|s| {
            let worker = || {
                let _half = b.try_reserve(50).unwrap();
                barrier.wait();
                // Each would wait for the other's half; instead one or both are refused.
                b.reserve(30, Duration::from_secs(60)).map(|g| g.bytes())
            };
            let a = s.spawn(worker);
            let c = s.spawn(worker);
            let (a, c) = (a.join().unwrap(), c.join().unwrap());
            assert!(a.is_err() || c.is_err(), "{a:?} {c:?}");
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn a_grant_dropped_on_another_thread_is_released_for_its_holder() {
        let b = MemoryBudget::new(100);
        let g = b.try_reserve(70).unwrap();
        std::thread::scope(|s| {
            s.spawn(move || drop(g));
        });
        assert_eq!(b.in_use(), 0);
        // This thread holds nothing now: it may wait again.
        assert!(b.reserve(100, Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_waiting_request_is_granted_when_memory_is_released() {
        let b = MemoryBudget::new(100);
        let g = b.try_reserve(80).unwrap();
        ::std::thread::scope(|s| {
            let waiter = s.spawn(|| b.reserve(50, Duration::from_secs(30)).map(|g| g.bytes()));
            ::std::thread::sleep(Duration::from_millis(50));
            drop(g);
            assert_eq!(waiter.join().unwrap(), Ok(50));
        });
    }
}
