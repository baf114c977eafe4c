//! One memory budget for a whole run, shared by every worker.
//!
//! Hostile files claim sizes they do not have: a deflated data set that inflates to
//! gigabytes, a JPEG-LS header announcing a huge image, a Number of Frames of 2^63. Every
//! reader and decoder checks a claimed size against the bytes present first, and then asks
//! the budget for the memory it is about to allocate. A request larger than the whole budget
//! is refused at once; a request that fits the budget but not what other workers hold now
//! waits for them (up to a deadline), so one large file slows a run down instead of taking
//! the machine down, and a bomb is refused before anything is allocated.

use std::sync::{Condvar, Mutex};
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
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// How long a request that fits the budget waits for other workers to release memory.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            limit,
            used: Mutex::new(0),
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
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Grants `bytes`, or refuses at once when that can never fit or when the memory is in
    /// use now.
    pub fn try_reserve(&self, bytes: u64) -> Result<Grant<'_>, BudgetError> {
        self.reserve(bytes, Duration::ZERO)
    }

    /// Grants `bytes`, waiting up to `wait` for other workers to release memory. A request
    /// larger than the whole budget is refused without waiting.
    pub fn reserve(&self, bytes: u64, wait: Duration) -> Result<Grant<'_>, BudgetError> {
        if bytes > self.limit {
            return Err(BudgetError::TooLarge {
                requested: bytes,
                limit: self.limit,
            });
        }
        let deadline = Instant::now().checked_add(wait);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // `used <= limit` always holds, so neither saturates.
            if self.limit.saturating_sub(*used) >= bytes {
                *used = used.saturating_add(bytes);
                return Ok(Grant {
                    budget: self,
                    bytes,
                });
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d > now => d.saturating_duration_since(now),
                Some(_) => return Err(BudgetError::Busy { requested: bytes }),
                None => Duration::from_secs(3600),
            };
            used = self
                .freed
                .wait_timeout(used, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn release(&self, bytes: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(bytes);
        self.freed.notify_all();
    }
}

/// Memory granted by a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Grant<'b> {
    budget: &'b MemoryBudget,
    bytes: u64,
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
        self.bytes = self.bytes.saturating_add(extra.bytes);
        extra.bytes = 0; // moved into this grant; nothing to release twice
        Ok(())
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
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
