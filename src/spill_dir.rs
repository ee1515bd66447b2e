//! [`SpillDir`]: one region per core under one directory, with one disk
//! budget for all of them.
//!
//! It composes regions through their public API and the shared
//! [`DiskBudget`]; it never reaches into a region.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::budget::DiskBudget;
use crate::error::{Error, Result};
use crate::reader::OverflowReader;
use crate::region::OverflowRegion;
use crate::stats::RegionStats;
use crate::sys::mapping;
use crate::tuning::MemoryTuning;

/// What a [`SpillDir`] does with the region files it finds at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillMode {
    /// Recover what is there: every slot of every core comes back, as
    /// [`OverflowRegion::open`] finds it. The files stay when the directory
    /// is dropped.
    Persistent,
    /// Start empty: region files of a previous run (`core-N` files that
    /// are region files) are removed at open, and the directory's files
    /// are removed again when it is dropped. What a killed process left
    /// behind is cleaned at the next open.
    Ephemeral,
}

/// One region per core under one directory (`core-0`, `core-1`, ...), with
/// one disk budget shared by all of them. In [`SpillMode::Persistent`] each
/// region also keeps its header map next to it (`core-N.headers`, a few
/// bytes per extent, written at `sync` and close: see
/// [`RecoveryReport::header_pages_prefetched`](crate::RecoveryReport::header_pages_prefetched));
/// in [`SpillMode::Ephemeral`] the region files are the only files.
///
/// `Send + Sync`: each core's region sits behind its own lock, reached with
/// [`with_core`](Self::with_core), so a runtime that moves tasks between
/// threads can share one `SpillDir` (in an `Arc`). A thread-per-core
/// engine that owns its regions outright can keep using
/// [`OverflowRegion`] directly.
///
/// The budget bounds the bytes the region files hold together: a write
/// that would make a file grow past it fails with
/// [`Error::BudgetExceeded`] before any disk is touched, and nothing
/// already written is lost. (Each file is charged as it is when the
/// directory opens, even past the budget: a new file's initial capacity,
/// or what a persistent directory finds; no file grows then until enough
/// is given back.) A file's length bounds the data blocks it
/// occupies, so the disk used ([`used_disk_space`](Self::used_disk_space),
/// the files' allocated blocks) passes the budget only by the file
/// system's own metadata: on ext4, a file whose holes and growth steps
/// make more than four extents also counts a 4 KiB block of its extent
/// tree (one per 340 extents).
///
/// ```
/// use overflow_region::{EngineId, MemoryTuning, SpillDir, SpillMode};
///
/// # fn main() -> overflow_region::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let tuning = MemoryTuning {
///     overflow_initial_bytes: 1 << 20,
///     overflow_max_bytes: 64 << 20,
///     ..MemoryTuning::default()
/// };
/// let spill = SpillDir::open(dir.path(), 2, &tuning, SpillMode::Persistent, 16 << 20)?;
/// let slot = spill.with_core(1, |region| region.write_tagged(b"partition", EngineId::Query, 7))?;
/// drop(spill);
///
/// // A restart finds every slot again, by its tag.
/// let spill = SpillDir::open(dir.path(), 2, &tuning, SpillMode::Persistent, 16 << 20)?;
/// let found: Vec<(usize, u64)> =
///     spill.with_core(1, |region| Ok(region.live_slots().map(|e| (e.slot, e.tag)).collect()))?;
/// assert_eq!(found, [(slot, 7)]);
/// assert!(spill.used_disk_space() <= 16 << 20);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SpillDir {
    dir: PathBuf,
    mode: SpillMode,
    /// One region per core. Invariant: each holds `budget`.
    cores: Vec<Mutex<OverflowRegion>>,
    budget: Arc<DiskBudget>,
}

impl SpillDir {
    /// Opens (creating it if needed) the directory `dir` with `cores`
    /// regions named `core-0` .. `core-{cores - 1}`, each opened with
    /// `tuning`, sharing a disk budget of `budget_bytes`. A new region's
    /// initial capacity is `tuning`'s, or the budget's share per core if
    /// that is less.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for 0 cores or a budget below one minimal
    /// region per core; in [`SpillMode::Ephemeral`],
    /// [`Error::NotARegion`] for a file with a region's name that is not a
    /// region file (left untouched) and [`Error::Locked`] if another
    /// writer has one open; otherwise as
    /// [`OverflowRegion::open_with_tuning`].
    pub fn open(
        dir: &Path,
        cores: usize,
        tuning: &MemoryTuning,
        mode: SpillMode,
        budget_bytes: u64,
    ) -> Result<SpillDir> {
        let page = mapping::page_size();
        let minimum = 2 * page;
        if cores == 0 || budget_bytes / (cores as u64) < minimum {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "a spill directory of {cores} cores needs a budget of at least {} bytes \
                     ({minimum} per core), not {budget_bytes}",
                    (cores as u64).max(1) * minimum
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(Error::io(dir, "create directory"))?;
        if mode == SpillMode::Ephemeral {
            remove_regions(dir)?;
        }
        let share = (budget_bytes / cores as u64 / page * page) as usize;
        let tuning = MemoryTuning {
            overflow_initial_bytes: tuning.overflow_initial_bytes.min(share),
            ..tuning.clone()
        };
        let budget = Arc::new(DiskBudget::new(budget_bytes));
        let mut regions = Vec::with_capacity(cores);
        for core in 0..cores {
            let mut region = OverflowRegion::open_with_tuning(&core_path(dir, core), &tuning)?;
            region.attach_budget(Arc::clone(&budget));
            if mode == SpillMode::Ephemeral {
                region.set_ephemeral();
            }
            regions.push(Mutex::new(region));
        }
        Ok(SpillDir {
            dir: dir.to_owned(),
            mode,
            cores: regions,
            budget,
        })
    }

    /// Runs `f` with core `core`'s region, holding that core's lock (other
    /// cores stay free) for as long as `f` runs.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCore`] past the number of cores; whatever `f`
    /// returns.
    pub fn with_core<T>(
        &self,
        core: usize,
        f: impl FnOnce(&mut OverflowRegion) -> Result<T>,
    ) -> Result<T> {
        let mut region = self.lock(core)?;
        f(&mut region)
    }

    /// Like [`with_core`](Self::with_core), but returns `Ok(None)` at once,
    /// without running `f`, when another thread holds core `core`'s lock:
    /// a writer that may use any core can look for a free one instead of
    /// waiting.
    ///
    /// ```
    /// use overflow_region::{EngineId, MemoryTuning, SpillDir, SpillMode};
    ///
    /// # fn main() -> overflow_region::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let spill = SpillDir::open(dir.path(), 2, &MemoryTuning::default(), SpillMode::Ephemeral, 16 << 20)?;
    /// let slot = spill.try_with_core(0, |region| region.write(b"run", EngineId::Query))?;
    /// assert!(slot.is_some(), "nobody else holds core 0");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCore`] past the number of cores; whatever `f`
    /// returns.
    pub fn try_with_core<T>(
        &self,
        core: usize,
        f: impl FnOnce(&mut OverflowRegion) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut region = match self.core(core)?.try_lock() {
            Ok(region) => region,
            // As in `lock`: every region call completes or changes nothing.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        f(&mut region).map(Some)
    }

    /// Core `core`'s region, locked. A panic in another holder of the lock
    /// leaves the region as its last completed call left it: every region
    /// call either completes or changes nothing, so the lock is taken over.
    fn lock(&self, core: usize) -> Result<MutexGuard<'_, OverflowRegion>> {
        Ok(self
            .core(core)?
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Core `core`'s region, unlocked, or [`Error::UnknownCore`].
    fn core(&self, core: usize) -> Result<&Mutex<OverflowRegion>> {
        self.cores.get(core).ok_or(Error::UnknownCore {
            core,
            cores: self.cores.len(),
        })
    }

    /// A reader of core `core`'s region file: it reads slots by their
    /// [`SlotRef`](crate::SlotRef) (from
    /// [`OverflowRegion::slot_ref`]) without taking the core's lock, so
    /// reads never wait for that core's writer, nor it for them.
    ///
    /// While a reader is open, the region file does not shrink: its unused
    /// tail is punched instead, which gives the same blocks back (see
    /// [`MemoryTuning::overflow_shrink`]).
    ///
    /// ```
    /// use overflow_region::{EngineId, MemoryTuning, SpillDir, SpillMode};
    ///
    /// # fn main() -> overflow_region::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let spill = SpillDir::open(dir.path(), 2, &MemoryTuning::default(), SpillMode::Ephemeral, 16 << 20)?;
    /// let handle = spill.with_core(1, |region| {
    ///     let slot = region.write(b"sorted run", EngineId::Query)?;
    ///     region.slot_ref(slot)
    /// })?;
    /// let reader = spill.open_reader(1)?;
    /// let mut bytes = Vec::new();
    /// reader.read_into(&handle, &mut bytes)?;
    /// assert_eq!(bytes, b"sorted run");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCore`] past the number of cores; otherwise as
    /// [`OverflowReader::open`].
    pub fn open_reader(&self, core: usize) -> Result<OverflowReader> {
        self.core(core)?;
        OverflowReader::open(&core_path(&self.dir, core))
    }

    /// Number of cores (regions).
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The disk budget shared by the cores, in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.budget.limit()
    }

    /// Bytes of the budget in use: the lengths of the region files
    /// together (what the budget is charged with; at least
    /// [`used_disk_space`](Self::used_disk_space)).
    pub fn budget_used(&self) -> u64 {
        self.budget.charged()
    }

    /// Disk the region files occupy now: their allocated blocks
    /// (`st_blocks` × 512) added up, read from the file system without
    /// taking any core's lock. A file that cannot be looked at counts 0.
    pub fn used_disk_space(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        (0..self.cores.len())
            .filter_map(|core| std::fs::metadata(core_path(&self.dir, core)).ok())
            .map(|metadata| metadata.blocks().saturating_mul(512))
            .sum()
    }

    /// Core `core`'s region's statistics.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCore`] past the number of cores.
    pub fn core_stats(&self, core: usize) -> Result<RegionStats> {
        Ok(self.lock(core)?.stats())
    }
}

impl Drop for SpillDir {
    /// In [`SpillMode::Ephemeral`], closes the regions and removes their
    /// files.
    fn drop(&mut self) {
        if self.mode != SpillMode::Ephemeral {
            return;
        }
        let cores = self.cores.len();
        self.cores.clear();
        for core in 0..cores {
            let path = core_path(&self.dir, core);
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "removing a spill file failed");
            }
        }
    }
}

/// The region file of core `core`.
fn core_path(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("core-{core}"))
}

/// Removes the region files (`core-N`) a previous run left in `dir`. A
/// file with such a name that is not a region file, or one another writer
/// has open, stops it with an error; that file is left as it is.
fn remove_regions(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(Error::io(dir, "read directory"))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(dir, "read directory"))?;
        let name = entry.file_name();
        let is_core = name
            .to_str()
            .and_then(|name| name.strip_prefix("core-"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_core {
            OverflowRegion::remove_region_file(&entry.path())?;
        }
    }
    Ok(())
}
