//! The standard benchmark workloads, shared by `cargo bench` and the CLI's
//! `bench` command so both measure the same thing. Benchmark plumbing, not
//! part of the crate's API (hidden from its docs; it may change in any
//! release).
//!
//! A [`Spec`] names a workload and its parameters; [`Spec::setup`] creates a
//! fresh region file in a directory and does the (untimed) set-up; then
//! [`Workload::run`] performs the measured operation any number of times and
//! returns how long the measured part took. `run` can be called again and
//! again on the same workload: criterion calls it from `iter_custom`, the CLI
//! calls it in chunks to drive its progress bar. Every workload is
//! deterministic: sizes and slot choices come from a fixed-seed PRNG.
//!
//! | workload | set-up | one measured op |
//! |---|---|---|
//! | `fresh_write/SIZE` | an empty region | one write of SIZE bytes at the end of the region |
//! | `read/SIZE` | `slots` writes of SIZE bytes | one read of a random slot (touching its first byte) |
//! | `reuse/N` | 2N writes of 16 B..4 KiB, every other one freed: N free extents that cannot merge | one write whose size was drawn from the freed slots' sizes, served from free space |
//! | `churn/LIVE` | writes of 16 B..64 KiB until LIVE bytes are live, then 10 rounds of churn | one free of a random live slot plus one write of 16 B..64 KiB |
//!
//! Sizes are log-uniform: every power of two in the range is as likely.
//!
//! ```no_run
//! use overflow_region::workload::Spec;
//!
//! # fn main() -> overflow_region::Result<()> {
//! let dir = std::env::temp_dir();
//! let mut workload = Spec::Reuse { freed: 50_000 }.setup(&dir)?;
//! let measured = workload.run(1_000_000)?;
//! println!("{}: {:.0} writes/s", workload.spec(), measured.ops_per_sec());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::hint::black_box;
use std::io;
use std::ops::AddAssign;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{EngineId, Error, MemoryTuning, OverflowRegion, Result};

/// The engine every workload writes as (the benchmarks do not depend on it).
const ENGINE: EngineId = EngineId::Query;

/// `fresh_write`: a region is replaced by a new, empty one (untimed) once its
/// used bytes reach this, so a long run never fills the disk.
const FRESH_BUDGET: usize = 256 << 20;

/// `reuse`: writes are timed in batches of this many, then freed (untimed),
/// which puts back exactly the free extents the batch took.
const REUSE_BATCH: usize = 64;

/// `reuse`: the range of payload sizes, in bytes (log-uniform).
pub const REUSE_SIZES: (usize, usize) = (16, 4096);

/// `churn`: the range of payload sizes, in bytes (log-uniform).
pub const CHURN_SIZES: (usize, usize) = (16, 64 << 10);

/// `churn`: untimed rounds of churn after the fill, each freeing and writing
/// as many slots as are live, so the measured part starts in steady state.
const CHURN_WARM_UP_ROUNDS: usize = 10;

/// `reuse` and `churn` draw sizes from a table of this many precomputed
/// sizes: small enough (16 KiB) to stay in cache, so picking a size costs no
/// cache miss that the region would be blamed for.
const SIZE_TABLE_LEN: usize = 4096;

/// A standard workload and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// Writes of `size` bytes into a fresh region (growing the file as it
    /// goes). Every 256 MiB of used space the region is replaced by a new
    /// empty file, untimed, so the region never comes near its maximum.
    FreshWrite {
        /// Payload bytes per write.
        size: usize,
    },
    /// Reads of `size`-byte slots in random order, out of `slots` slots.
    Read {
        /// Payload bytes per slot.
        size: usize,
        /// Number of slots written at set-up.
        slots: usize,
    },
    /// Writes served from free space while `freed` free extents of mixed
    /// sizes ([`REUSE_SIZES`]) exist. Only the writes are timed; after every
    /// batch of 64 the batch is freed, untimed, which merges each extent back
    /// and restores exactly `freed` free extents. The region is opened with
    /// `overflow_auto_compact` off, which would merge the free extents.
    Reuse {
        /// Number of free extents.
        freed: usize,
    },
    /// Mixed-size churn ([`CHURN_SIZES`]) around a steady live set: each op
    /// frees a random live slot and writes a new one (both timed).
    Churn {
        /// Live payload bytes the set-up writes (the number of live slots then
        /// stays fixed).
        live_bytes: usize,
    },
}

impl Spec {
    /// The standard workloads, in the order the CLI runs them.
    pub const STANDARD: [Spec; 8] = [
        Spec::FreshWrite { size: 64 },
        Spec::FreshWrite { size: 4 << 10 },
        Spec::FreshWrite { size: 1 << 20 },
        Spec::Read {
            size: 64,
            slots: 1 << 20,
        },
        Spec::Reuse { freed: 1_000 },
        Spec::Reuse { freed: 50_000 },
        Spec::Reuse { freed: 1_000_000 },
        Spec::Churn {
            live_bytes: 32 << 20,
        },
    ];

    /// The benchmark group: `fresh_write`, `read`, `reuse` or `churn`.
    pub fn group(&self) -> &'static str {
        match self {
            Spec::FreshWrite { .. } => "fresh_write",
            Spec::Read { .. } => "read",
            Spec::Reuse { .. } => "reuse",
            Spec::Churn { .. } => "churn",
        }
    }

    /// The parameter within the group: `64B`, `4KiB`, `50k`, `32MiB`, ...
    pub fn id(&self) -> String {
        match *self {
            Spec::FreshWrite { size } | Spec::Read { size, .. } => size_label(size),
            Spec::Reuse { freed } => count_label(freed),
            Spec::Churn { live_bytes } => size_label(live_bytes),
        }
    }

    /// Payload bytes of one measured op, when every op has the same size.
    pub fn bytes_per_op(&self) -> Option<u64> {
        match *self {
            Spec::FreshWrite { size } | Spec::Read { size, .. } => Some(size as u64),
            Spec::Reuse { .. } | Spec::Churn { .. } => None,
        }
    }

    /// The number of ops the CLI's `bench` runs by default: about a second of
    /// work each on a 2-core machine.
    pub fn default_ops(&self) -> u64 {
        match *self {
            Spec::FreshWrite { size } => ((512u64 << 20) / (size as u64 + 64)).min(5_000_000),
            Spec::Read { .. } => 5_000_000,
            Spec::Reuse { .. } => 5_000_000,
            Spec::Churn { .. } => 200_000,
        }
    }

    /// Creates the workload's region file in `dir` (named after the spec,
    /// replacing any file of that name) and does the untimed set-up.
    ///
    /// # Errors
    ///
    /// Any error of the region's `open_with_tuning`, `write` or `free`, or
    /// [`Error::Io`] if a stale file of the same name cannot be removed.
    pub fn setup(&self, dir: &Path) -> Result<Workload> {
        self.setup_with_punch_threshold(dir, MemoryTuning::DEFAULT_PUNCH_HOLE_BYTES)
    }

    /// As [`setup`](Self::setup), with a region that punches free extents
    /// of `punch_hole_bytes` or more (0: never), as
    /// [`MemoryTuning::overflow_punch_hole_bytes`] says.
    ///
    /// # Errors
    ///
    /// As [`setup`](Self::setup); [`Error::InvalidConfig`] for a threshold
    /// the region refuses.
    pub fn setup_with_punch_threshold(
        &self,
        dir: &Path,
        punch_hole_bytes: usize,
    ) -> Result<Workload> {
        self.setup_with_progress(dir, punch_hole_bytes, &mut |_| {})
    }

    /// As [`setup_with_punch_threshold`](Self::setup_with_punch_threshold),
    /// calling `progress` with the fraction of the set-up done (0 to 1)
    /// every few thousand operations, for set-ups that take seconds.
    ///
    /// # Errors
    ///
    /// As [`setup_with_punch_threshold`](Self::setup_with_punch_threshold).
    pub fn setup_with_progress(
        &self,
        dir: &Path,
        punch_hole_bytes: usize,
        progress: &mut dyn FnMut(f64),
    ) -> Result<Workload> {
        self.setup_with_policy(dir, punch_hole_bytes, true, progress)
    }

    /// As [`setup_with_progress`](Self::setup_with_progress), with
    /// automatic compaction on or off
    /// ([`MemoryTuning::overflow_auto_compact`]; `reuse` always runs with
    /// it off).
    ///
    /// # Errors
    ///
    /// As [`setup_with_punch_threshold`](Self::setup_with_punch_threshold).
    pub fn setup_with_policy(
        &self,
        dir: &Path,
        punch_hole_bytes: usize,
        auto_compact: bool,
        progress: &mut dyn FnMut(f64),
    ) -> Result<Workload> {
        let path = dir.join(format!("{}-{}.region", self.group(), self.id()));
        remove_if_present(&path)?;
        let (max_capacity, data_len) = match *self {
            Spec::FreshWrite { size } => (2 * FRESH_BUDGET + 2 * size, size),
            Spec::Read { size, .. } => (MemoryTuning::DEFAULT_MAX_BYTES << 2, size),
            Spec::Reuse { .. } => (MemoryTuning::DEFAULT_MAX_BYTES << 2, REUSE_SIZES.1),
            Spec::Churn { .. } => (MemoryTuning::DEFAULT_MAX_BYTES, CHURN_SIZES.1),
        };
        let tuning = MemoryTuning {
            overflow_initial_bytes: MemoryTuning::DEFAULT_INITIAL_BYTES,
            overflow_max_bytes: max_capacity,
            overflow_punch_hole_bytes: punch_hole_bytes,
            // `reuse` measures writes served from many free extents, which
            // automatic compaction would merge away.
            overflow_auto_compact: auto_compact && !matches!(self, Spec::Reuse { .. }),
            ..MemoryTuning::default()
        };
        let region = OverflowRegion::open_with_tuning(&path, &tuning)?;
        let mut workload = Workload {
            spec: *self,
            path,
            tuning,
            region,
            rng: Rng(0x5EED_0F0E_6F10_C0DE),
            data: (0..data_len).map(|i| (i % 251) as u8 + 1).collect(),
            state: State::Fresh,
            tail_writes: 0,
        };
        workload.state = match *self {
            Spec::FreshWrite { .. } => State::Fresh,
            Spec::Read { size, slots } => {
                for i in 0..slots {
                    workload.region.write(&workload.data[..size], ENGINE)?;
                    report(progress, i, slots);
                }
                State::Read { slots }
            }
            Spec::Reuse { freed } => workload.setup_reuse(freed, progress)?,
            Spec::Churn { live_bytes } => workload.setup_churn(live_bytes, progress)?,
        };
        progress(1.0);
        Ok(workload)
    }
}

impl fmt::Display for Spec {
    /// `group/id`, e.g. `reuse/50k`: the criterion benchmark's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group(), self.id())
    }
}

/// An operation [`Workload::run_timing_each`] times on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timed {
    /// One [`OverflowRegion::write`].
    Write,
    /// One [`OverflowRegion::free`].
    Free,
}

/// What one call of [`Workload::run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Measured ops performed.
    pub ops: u64,
    /// Payload bytes written or read by them.
    pub bytes: u64,
    /// Time spent in them (set-up and untimed housekeeping excluded).
    pub elapsed: Duration,
}

impl Measured {
    /// Ops per second (0 when nothing was timed).
    pub fn ops_per_sec(&self) -> f64 {
        per_sec(self.ops, self.elapsed)
    }

    /// Payload bytes per second (0 when nothing was timed).
    pub fn bytes_per_sec(&self) -> f64 {
        per_sec(self.bytes, self.elapsed)
    }
}

impl AddAssign for Measured {
    fn add_assign(&mut self, other: Measured) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
    }
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

/// A workload that is set up and ready to run: owns its region and its file,
/// which it removes when dropped.
pub struct Workload {
    spec: Spec,
    path: PathBuf,
    /// What the region was opened with.
    tuning: MemoryTuning,
    region: OverflowRegion,
    rng: Rng,
    /// The bytes written: `data[..len]` for a write of `len` bytes.
    data: Vec<u8>,
    state: State,
    /// `reuse`: writes that grew the region instead of reusing free space.
    tail_writes: u64,
}

/// Per-workload state.
enum State {
    Fresh,
    /// Slots `0..slots` are live.
    Read {
        slots: usize,
    },
    Reuse {
        /// Payload sizes drawn from the freed slots' sizes.
        sizes: Vec<u32>,
        /// Slots written by the current batch.
        batch: Vec<usize>,
    },
    Churn {
        /// Precomputed log-uniform sizes.
        sizes: Vec<u32>,
        /// The live slots.
        live: Vec<usize>,
    },
}

impl fmt::Debug for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workload")
            .field("spec", &self.spec)
            .field("region", &self.region)
            .field("tail_writes", &self.tail_writes)
            .finish_non_exhaustive()
    }
}

impl Workload {
    /// The spec this workload was set up from.
    pub fn spec(&self) -> Spec {
        self.spec
    }

    /// The region the workload runs on (for `fresh_write`, the current one).
    pub fn region(&self) -> &OverflowRegion {
        &self.region
    }

    /// `reuse` only: measured writes that were served from the end of the
    /// region rather than from free space (expected 0; each one is freed
    /// again, so the count of free extents still returns to `freed`).
    pub fn tail_writes(&self) -> u64 {
        self.tail_writes
    }

    /// Performs `ops` measured operations and returns what they did and how
    /// long they took. Untimed housekeeping (replacing a full `fresh_write`
    /// region, freeing a `reuse` batch) is excluded from `elapsed`.
    ///
    /// # Errors
    ///
    /// Any error from the region (none is expected), or [`Error::Io`] if a
    /// full `fresh_write` region cannot be replaced.
    pub fn run(&mut self, ops: u64) -> Result<Measured> {
        let mut measured = Measured::default();
        let Workload {
            path,
            tuning,
            region,
            rng,
            data,
            state,
            tail_writes,
            ..
        } = self;
        match state {
            State::Fresh => {
                let payload = &data[..];
                while measured.ops < ops {
                    if region.used_bytes() >= FRESH_BUDGET {
                        *region = replace_region(path, region, tuning)?;
                    }
                    let start = Instant::now();
                    let mut done = 0;
                    while measured.ops + done < ops && region.used_bytes() < FRESH_BUDGET {
                        region.write(payload, ENGINE)?;
                        done += 1;
                    }
                    measured.elapsed += start.elapsed();
                    measured.ops += done;
                }
                measured.bytes = ops * payload.len() as u64;
            }
            State::Read { slots } => {
                let mut touched = 0u8;
                let start = Instant::now();
                for _ in 0..ops {
                    let bytes = region.read(rng.below(*slots))?;
                    touched ^= bytes.first().copied().unwrap_or(0);
                    measured.bytes += bytes.len() as u64;
                }
                measured.elapsed = start.elapsed();
                measured.ops = ops;
                black_box(touched);
            }
            State::Reuse { sizes, batch } => {
                while measured.ops < ops {
                    let count = (ops - measured.ops).min(REUSE_BATCH as u64);
                    let start = Instant::now();
                    for _ in 0..count {
                        let size = sizes[rng.below(sizes.len())] as usize;
                        let used = region.used_bytes();
                        batch.push(region.write(&data[..size], ENGINE)?);
                        *tail_writes += u64::from(region.used_bytes() > used);
                        measured.bytes += size as u64;
                    }
                    measured.elapsed += start.elapsed();
                    measured.ops += count;
                    // Freed in reverse: each extent merges back with the
                    // remainder it was split from, so the free extents are
                    // exactly those before the batch.
                    while let Some(slot) = batch.pop() {
                        region.free(slot)?;
                    }
                }
            }
            State::Churn { sizes, live } => {
                let start = Instant::now();
                for _ in 0..ops {
                    measured.bytes += churn_once(region, rng, data, sizes, live)? as u64;
                }
                measured.elapsed = start.elapsed();
                measured.ops = ops;
            }
        }
        Ok(measured)
    }

    /// As [`run`](Self::run), and for a `churn` workload each `free` and
    /// each `write` is also timed on its own and passed to `record` (two
    /// more clock reads per op, so `elapsed` grows a little); other
    /// workloads record nothing.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub fn run_timing_each(
        &mut self,
        ops: u64,
        record: &mut dyn FnMut(Timed, Duration),
    ) -> Result<Measured> {
        let State::Churn { sizes, live } = &mut self.state else {
            return self.run(ops);
        };
        let mut measured = Measured::default();
        let start = Instant::now();
        for _ in 0..ops {
            let victim = live.swap_remove(self.rng.below(live.len()));
            let before = Instant::now();
            self.region.free(victim)?;
            let freed = Instant::now();
            record(Timed::Free, freed - before);
            let size = sizes[self.rng.below(sizes.len())] as usize;
            let slot = self.region.write(&self.data[..size], ENGINE)?;
            record(Timed::Write, freed.elapsed());
            live.push(slot);
            measured.bytes += size as u64;
        }
        measured.elapsed = start.elapsed();
        measured.ops = ops;
        Ok(measured)
    }

    /// 2N writes of mixed sizes, then every other one freed (so no two freed
    /// extents touch): N free extents.
    fn setup_reuse(&mut self, freed: usize, progress: &mut dyn FnMut(f64)) -> Result<State> {
        let mut freed_sizes = Vec::with_capacity(freed);
        for i in 0..2 * freed {
            report(progress, i, 3 * freed);
            let size = self.rng.log_uniform(REUSE_SIZES);
            let slot = self.region.write(&self.data[..size], ENGINE)?;
            debug_assert_eq!(slot, i, "a fresh region hands out indices in order");
            if i % 2 == 0 {
                freed_sizes.push(size as u32);
            }
        }
        let sizes = (0..SIZE_TABLE_LEN)
            .map(|_| freed_sizes[self.rng.below(freed_sizes.len())])
            .collect();
        // Slot 2i precedes slot 2i + 1 in the file, and the last slot
        // (odd) stays live, so no freed extent is merged or given back.
        for slot in (0..2 * freed).step_by(2) {
            self.region.free(slot)?;
            report(progress, 2 * freed + slot / 2, 3 * freed);
        }
        Ok(State::Reuse {
            sizes,
            batch: Vec::with_capacity(REUSE_BATCH),
        })
    }

    /// Writes of mixed sizes until `live_bytes` are live, then untimed churn
    /// until the layout is in steady state.
    fn setup_churn(&mut self, live_bytes: usize, progress: &mut dyn FnMut(f64)) -> Result<State> {
        let sizes: Vec<u32> = (0..SIZE_TABLE_LEN)
            .map(|_| self.rng.log_uniform(CHURN_SIZES) as u32)
            .collect();
        let mut live = Vec::new();
        // The fill counts as one round of the warm-up.
        let rounds = CHURN_WARM_UP_ROUNDS + 1;
        while self.region.live_bytes() < live_bytes {
            let size = sizes[self.rng.below(sizes.len())] as usize;
            live.push(self.region.write(&self.data[..size], ENGINE)?);
            if live.len().is_multiple_of(4096) {
                progress(self.region.live_bytes() as f64 / (live_bytes * rounds) as f64);
            }
        }
        let warm_up = CHURN_WARM_UP_ROUNDS * live.len();
        for i in 0..warm_up {
            report(progress, live.len() + i, live.len() * rounds);
            churn_once(
                &mut self.region,
                &mut self.rng,
                &self.data,
                &sizes,
                &mut live,
            )?;
        }
        Ok(State::Churn { sizes, live })
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // Unlinking a mapped file is fine: the mapping keeps the inode until
        // the region (dropped right after this) unmaps it.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Calls `progress` with `done / total` every 4096 steps.
fn report(progress: &mut dyn FnMut(f64), done: usize, total: usize) {
    if done.is_multiple_of(4096) && total > 0 {
        progress(done as f64 / total as f64);
    }
}

/// One churn op: frees a random live slot, writes one of a random size.
/// Returns the bytes written.
fn churn_once(
    region: &mut OverflowRegion,
    rng: &mut Rng,
    data: &[u8],
    sizes: &[u32],
    live: &mut Vec<usize>,
) -> Result<usize> {
    let victim = live.swap_remove(rng.below(live.len()));
    region.free(victim)?;
    let size = sizes[rng.below(sizes.len())] as usize;
    live.push(region.write(&data[..size], ENGINE)?);
    Ok(size)
}

/// Replaces a full `fresh_write` region with a new, empty file at the same
/// path (the old file is unlinked; its mapping goes when the old region drops).
fn replace_region(
    path: &Path,
    region: &OverflowRegion,
    tuning: &MemoryTuning,
) -> Result<OverflowRegion> {
    debug_assert_eq!(region.path(), path);
    remove_if_present(path)?;
    OverflowRegion::open_with_tuning(path, tuning)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(Error::Io {
            path: path.to_owned(),
            operation: "remove",
            source,
        }),
        _ => Ok(()),
    }
}

/// `64B`, `4KiB`, `1MiB`: a byte count with the largest binary unit that
/// divides it.
fn size_label(bytes: usize) -> String {
    match bytes {
        0 => "0B".to_owned(),
        b if b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// `1k`, `50k`, `1M`: a count with the largest decimal unit that divides it.
fn count_label(count: usize) -> String {
    match count {
        0 => "0".to_owned(),
        c if c % 1_000_000 == 0 => format!("{}M", c / 1_000_000),
        c if c % 1_000 == 0 => format!("{}k", c / 1_000),
        c => c.to_string(),
    }
}

/// SplitMix64: a tiny, fast, deterministic PRNG (not for cryptography).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), without a division.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Log-uniform in `lo..=hi` (`0 < lo <= hi`).
    fn log_uniform(&mut self, (lo, hi): (usize, usize)) -> usize {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let size = lo as f64 * ((hi + 1) as f64 / lo as f64).powf(unit);
        (size as usize).clamp(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let names: Vec<String> = Spec::STANDARD.iter().map(Spec::to_string).collect();
        assert_eq!(
            names,
            [
                "fresh_write/64B",
                "fresh_write/4KiB",
                "fresh_write/1MiB",
                "read/64B",
                "reuse/1k",
                "reuse/50k",
                "reuse/1M",
                "churn/32MiB"
            ]
        );
    }

    #[test]
    fn log_uniform_stays_in_range_and_covers_it() {
        let mut rng = Rng(1);
        let draws: Vec<usize> = (0..100_000).map(|_| rng.log_uniform((16, 4096))).collect();
        assert!(draws.iter().all(|&size| (16..=4096).contains(&size)));
        // About an eighth of the draws in each of the 8 doublings.
        let below_32 = draws.iter().filter(|&&size| size < 32).count();
        let from_2048 = draws.iter().filter(|&&size| size >= 2048).count();
        assert!((10_000..15_000).contains(&below_32), "{below_32}");
        assert!((10_000..15_000).contains(&from_2048), "{from_2048}");
    }

    #[test]
    fn every_workload_runs_and_keeps_its_shape() {
        let dir = tempfile::tempdir().unwrap();
        let small = [
            Spec::FreshWrite { size: 4 << 10 },
            Spec::Read {
                size: 64,
                slots: 1000,
            },
            Spec::Reuse { freed: 1000 },
            Spec::Churn {
                live_bytes: 1 << 20,
            },
        ];
        for spec in small {
            let mut workload = spec.setup(dir.path()).unwrap();
            let before = workload.region().stats();
            let measured = workload.run(1000).unwrap();
            assert_eq!(measured.ops, 1000, "{spec}");
            if let Some(size) = spec.bytes_per_op() {
                assert_eq!(measured.bytes, 1000 * size, "{spec}");
            }
            workload.region().check_consistency().unwrap();
            if let Spec::Reuse { freed } = spec {
                let after = workload.region().stats();
                assert_eq!(before.free_extents, freed as u64);
                assert_eq!(
                    after.free_extents, freed as u64,
                    "the free extents are restored"
                );
                assert_eq!(before.used_bytes, after.used_bytes);
                assert!(workload.tail_writes() < 10, "{}", workload.tail_writes());
            }
            let path = workload.region().path().to_owned();
            drop(workload);
            assert!(!path.exists(), "{spec}: the file is removed");
        }
    }

    #[test]
    fn fresh_write_replaces_a_full_region() {
        let dir = tempfile::tempdir().unwrap();
        let mut workload = Spec::FreshWrite { size: 1 << 20 }
            .setup(dir.path())
            .unwrap();
        let ops = (FRESH_BUDGET >> 20) as u64 + 10;
        assert_eq!(workload.run(ops).unwrap().ops, ops);
        assert!(workload.region().used_bytes() < 20 << 20);
    }
}
