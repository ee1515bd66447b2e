//! A disk budget shared by the regions of a [`SpillDir`](crate::SpillDir).
//!
//! Each region charges the budget before its file grows and gives the bytes
//! back when its file shrinks or the region is closed, so growth never
//! makes the lengths of all the files together pass the limit. The files
//! found at open are charged their lengths whatever the limit
//! (`charge_existing`: their blocks are on disk already), so together they
//! may pass it; then no file grows until enough is given back. The length
//! of a file bounds the disk blocks it occupies (punched holes only make it
//! occupy less), so the disk the files occupy passes the limit only when
//! their lengths do. Charging is one atomic compare-and-swap: regions on
//! many threads share one budget without a lock, and no two growths can
//! both pass it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of file length the regions sharing it may hold in all.
#[derive(Debug)]
pub(crate) struct DiskBudget {
    /// The most the files may hold together.
    limit: u64,
    /// What they hold now. Invariant: at most `limit`, except after
    /// `charge_existing` of files that were already larger.
    charged: AtomicU64,
}

impl DiskBudget {
    pub(crate) fn new(limit: u64) -> DiskBudget {
        DiskBudget {
            limit,
            charged: AtomicU64::new(0),
        }
    }

    /// The most the files may hold together.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// What the files hold now.
    pub(crate) fn charged(&self) -> u64 {
        self.charged.load(Ordering::Acquire)
    }

    /// Takes `bytes` from the budget, or returns what is charged already
    /// when they do not fit.
    pub(crate) fn charge(&self, bytes: u64) -> Result<(), u64> {
        let mut charged = self.charged.load(Ordering::Acquire);
        loop {
            let Some(after) = charged
                .checked_add(bytes)
                .filter(|&after| after <= self.limit)
            else {
                return Err(charged);
            };
            match self.charged.compare_exchange_weak(
                charged,
                after,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => charged = now,
            }
        }
    }

    /// Charges a file that exists already, whatever the limit: its blocks
    /// are on disk. Growth fails until enough is given back.
    pub(crate) fn charge_existing(&self, bytes: u64) {
        self.charged.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives `bytes` back.
    pub(crate) fn release(&self, bytes: u64) {
        let before = self.charged.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(before >= bytes, "released {bytes} of {before} charged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_never_pass_the_limit_from_many_threads() {
        let budget = DiskBudget::new(1000);
        let granted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if budget.charge(7).is_ok() {
                            granted.fetch_add(7, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(budget.charged(), granted.load(Ordering::Relaxed));
        assert!(budget.charged() <= 1000 && budget.charged() > 1000 - 7);
        assert_eq!(budget.charge(7), Err(budget.charged()));
        budget.release(500);
        assert!(budget.charge(7).is_ok());
        budget.charge_existing(10_000);
        assert!(budget.charge(1).is_err());
    }
}
