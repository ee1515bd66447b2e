//! The measured loops, generic over [`Store`], and their untimed set-ups and
//! checks.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::stores::{Reader, Store, Writer};

/// Size range of `write+free` (log-uniform), bytes.
pub const REUSE_SIZES: (usize, usize) = (16, 4096);
/// Size range of `churn` (log-uniform), bytes.
pub const CHURN_SIZES: (usize, usize) = (16, 64 << 10);
/// Sizes in the measured loops come from a table this long (16 KiB: stays
/// in cache, so drawing a size costs nothing a system would be blamed for).
const SIZE_TABLE_LEN: usize = 4096;
/// Checks read back at most this many slots.
const CHECK_SAMPLE: usize = 10_000;

/// How much one timed pass does: `max_ops` operations, or fewer if
/// `budget` runs out first (slow systems).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub max_ops: u64,
    pub budget: Duration,
}

/// Operations done and the time they took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    pub ops: u64,
    pub secs: f64,
}

impl Rate {
    pub fn per_sec(self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Read-back check: slots read, how many came back with the wrong length,
/// and how many with the right length but wrong bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Check {
    pub checked: u64,
    pub wrong_len: u64,
    pub wrong_bytes: u64,
}

impl std::ops::AddAssign for Check {
    fn add_assign(&mut self, other: Check) {
        self.checked += other.checked;
        self.wrong_len += other.wrong_len;
        self.wrong_bytes += other.wrong_bytes;
    }
}

/// SplitMix64: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
    /// Log-uniform in `lo..=hi`: every power of two as likely.
    pub fn log_uniform(&mut self, (lo, hi): (usize, usize)) -> usize {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let size = lo as f64 * ((hi + 1) as f64 / lo as f64).powf(unit);
        (size as usize).clamp(lo, hi)
    }
}

/// A table of log-uniform sizes.
pub fn size_table(seed: u64, range: (usize, usize)) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..SIZE_TABLE_LEN)
        .map(|_| rng.log_uniform(range) as u32)
        .collect()
}

/// The bytes every write takes a prefix of: 1 MiB of pseudo-random bytes.
pub fn payload() -> Vec<u8> {
    let mut rng = Rng::new(0x5eed);
    (0..1 << 20).map(|_| rng.next_u64() as u8).collect()
}

/// Runs `chunk(n)` (n operations, one batch) until the plan is done and
/// returns the operations and the time inside the chunks. Batches are
/// `S::batch(max_len)` operations for LMDB; for the others they start at 1
/// and double to 1024, so a very slow system stops close to its budget.
fn timed<S: Store>(plan: Plan, max_len: usize, mut chunk: impl FnMut(usize)) -> Rate {
    let fixed = S::batch(max_len);
    let mut n = fixed.unwrap_or(1);
    let mut ops = 0u64;
    let mut elapsed = Duration::ZERO;
    while ops < plan.max_ops && elapsed < plan.budget {
        let k = n.min((plan.max_ops - ops) as usize);
        let start = Instant::now();
        chunk(k);
        elapsed += start.elapsed();
        ops += k as u64;
        if fixed.is_none() {
            n = (n * 2).min(1024);
        }
    }
    Rate {
        ops,
        secs: elapsed.as_secs_f64(),
    }
}

/// Writes `sizes` (untimed set-up), in batches; returns (slot, len) pairs.
pub fn fill<S: Store>(s: &mut S, sizes: &[usize], data: &[u8]) -> Vec<(u64, u32)> {
    let max_len = sizes.iter().copied().max().unwrap_or(1);
    let batch = S::batch(max_len).unwrap_or(usize::MAX);
    let mut slots = Vec::with_capacity(sizes.len());
    for group in sizes.chunks(batch) {
        let mut w = s.writer();
        for &size in group {
            slots.push((w.write(&data[..size]), size as u32));
        }
        S::commit(w);
    }
    slots
}

/// Frees `slots` (untimed), in batches.
pub fn free_all<S: Store>(s: &mut S, slots: &[u64], max_len: usize) {
    let batch = S::batch(max_len).unwrap_or(usize::MAX);
    for group in slots.chunks(batch) {
        let mut w = s.writer();
        for &slot in group {
            w.free(slot);
        }
        S::commit(w);
    }
}

/// Reads back up to `CHECK_SAMPLE` of `slots` (evenly spread) and compares
/// them with what was written.
pub fn check<S: Store>(s: &mut S, slots: &[(u64, u32)], data: &[u8]) -> Check {
    let step = slots.len().div_ceil(CHECK_SAMPLE).max(1);
    let mut result = Check::default();
    let mut r = s.reader();
    for &(slot, len) in slots.iter().step_by(step) {
        let len = len as usize;
        let (len_ok, bytes_ok) = r.with_bytes(slot, |bytes| {
            (
                bytes.len() == len,
                bytes[..bytes.len().min(len)] == data[..bytes.len().min(len)],
            )
        });
        result.checked += 1;
        result.wrong_len += u64::from(!len_ok);
        result.wrong_bytes += u64::from(len_ok && !bytes_ok);
    }
    result
}

/// `fresh write/SIZE`: writes of `size` bytes into a new store. Returns the
/// rate and the slots written (for the check).
pub fn fresh<S: Store>(s: &mut S, size: usize, plan: Plan, data: &[u8]) -> (Rate, Vec<(u64, u32)>) {
    let mut slots = Vec::new();
    let bytes = &data[..size];
    let rate = timed::<S>(plan, size, |n| {
        let mut w = s.writer();
        for _ in 0..n {
            slots.push(w.write(bytes));
        }
        S::commit(w);
    });
    let slots = slots.into_iter().map(|slot| (slot, size as u32)).collect();
    (rate, slots)
}

/// `read/SIZE`: reads of random slots, touching first and last byte.
/// Returns the rate and the number of reads whose length was not `size`.
pub fn read<S: Store>(
    s: &mut S,
    slots: &[(u64, u32)],
    size: usize,
    plan: Plan,
    seed: u64,
) -> (Rate, u64) {
    let mut rng = Rng::new(seed);
    let mut sink = 0u64;
    let mut wrong_len = 0u64;
    let rate = timed::<S>(plan, size, |n| {
        let mut r = s.reader();
        for _ in 0..n {
            let slot = slots[rng.below(slots.len())].0;
            let (len, touch) = r.with_bytes(slot, |bytes| {
                let first = bytes.first().copied().unwrap_or(0);
                let last = bytes.last().copied().unwrap_or(0);
                (bytes.len(), u64::from(first) + u64::from(last))
            });
            sink = sink.wrapping_add(touch);
            wrong_len += u64::from(len != size);
        }
    });
    black_box(sink);
    (rate, wrong_len)
}

/// Set-up of `write+free/N`: 2N writes of log-uniform 16 B..4 KiB, then
/// every other one freed: N freed extents between live ones.
pub fn setup_reuse<S: Store>(s: &mut S, freed: usize, data: &[u8], seed: u64) {
    let mut rng = Rng::new(seed);
    let sizes: Vec<usize> = (0..2 * freed)
        .map(|_| rng.log_uniform(REUSE_SIZES))
        .collect();
    let slots = fill(s, &sizes, data);
    let even: Vec<u64> = slots.iter().step_by(2).map(|&(slot, _)| slot).collect();
    free_all(s, &even, REUSE_SIZES.1);
}

/// `write+free/N`: a write of a log-uniform 16 B..4 KiB size, then a free
/// of that new slot, so the N freed extents stay.
pub fn write_free<S: Store>(s: &mut S, sizes: &[u32], plan: Plan, data: &[u8], seed: u64) -> Rate {
    let mut rng = Rng::new(seed);
    timed::<S>(plan, REUSE_SIZES.1, |n| {
        let mut w = s.writer();
        for _ in 0..n {
            let size = sizes[rng.below(sizes.len())] as usize;
            let slot = w.write(&data[..size]);
            w.free(slot);
        }
        S::commit(w);
    })
}

/// After `write+free`: writes `sizes` (untimed), reads them back, frees
/// them. The store has the same freed extents afterwards.
pub fn check_reuse<S: Store>(s: &mut S, sizes: &[u32], data: &[u8]) -> Check {
    let sizes: Vec<usize> = sizes.iter().take(1000).map(|&len| len as usize).collect();
    let slots = fill(s, &sizes, data);
    let result = check(s, &slots, data);
    let slots: Vec<u64> = slots.into_iter().map(|(slot, _)| slot).collect();
    free_all(s, &slots, REUSE_SIZES.1);
    result
}

/// The live set of `churn`.
pub struct Live {
    pub slots: Vec<(u64, u32)>,
    pub bytes: u64,
}

/// Set-up of `churn`: writes until `live_bytes` are live, then `warm_up`
/// untimed churn ops so the layout is in a steady state.
pub fn setup_churn<S: Store>(
    s: &mut S,
    live_bytes: u64,
    warm_up: u64,
    sizes: &[u32],
    data: &[u8],
    seed: u64,
) -> Live {
    let mut rng = Rng::new(seed);
    let mut fill_sizes = Vec::new();
    let mut total = 0u64;
    while total < live_bytes {
        let size = sizes[rng.below(sizes.len())] as usize;
        total += size as u64;
        fill_sizes.push(size);
    }
    let slots = fill(s, &fill_sizes, data);
    let mut live = Live {
        slots,
        bytes: total,
    };
    let plan = Plan {
        max_ops: warm_up,
        budget: Duration::MAX,
    };
    churn(s, &mut live, sizes, plan, data, seed ^ 0xc0ffee);
    live
}

/// `churn`: frees a random live slot, writes one of a random size.
pub fn churn<S: Store>(
    s: &mut S,
    live: &mut Live,
    sizes: &[u32],
    plan: Plan,
    data: &[u8],
    seed: u64,
) -> Rate {
    let mut rng = Rng::new(seed);
    timed::<S>(plan, CHURN_SIZES.1, |n| {
        let mut w = s.writer();
        for _ in 0..n {
            let victim = rng.below(live.slots.len());
            let (slot, len) = live.slots.swap_remove(victim);
            w.free(slot);
            let size = sizes[rng.below(sizes.len())] as usize;
            live.slots.push((w.write(&data[..size]), size as u32));
            live.bytes = live.bytes - u64::from(len) + size as u64;
        }
        S::commit(w);
    })
}
