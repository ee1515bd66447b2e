//! [`SpillDir`]: one region per core under one directory, with one disk
//! budget for all of them.
//!
//! It composes regions through their public API and the shared
//! [`DiskBudget`]; it never reaches into a region.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::budget::DiskBudget;
use crate::engine::EngineId;
use crate::error::{Error, Result};
use crate::header_map;
use crate::reader::OverflowReader;
use crate::region::{CompactReport, OverflowRegion};
use crate::stats::RegionStats;
use crate::sys::file::Inode;
use crate::sys::mapping;
use crate::tuning::MemoryTuning;

/// What a [`SpillDir`] does with the region files it finds at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillMode {
    /// Recover what is there: every slot of every core comes back, as
    /// [`OverflowRegion::open`] finds it. The files stay when the directory
    /// is dropped. A directory holding region files of more cores than it
    /// is opened with is refused (see [`SpillDir::open`]).
    Persistent,
    /// Start empty: region files of a previous run (`core-N` files that
    /// are region files) are removed at open, and the directory's files
    /// are removed again when it is dropped, or when the open fails after
    /// creating some. What a killed process left behind is cleaned at the
    /// next open.
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
/// The budget bounds the bytes the region files (and, in persistent mode,
/// their header maps) hold together: a write that would make a file grow
/// past it fails with [`Error::BudgetExceeded`] before any disk is
/// touched, and nothing already written is lost; a header map the budget
/// cannot hold is not written (the reopen reads the same headers without
/// it, one page at a time). (Each file is charged as it is when the
/// directory opens, even past the budget: a new file's initial capacity,
/// or what a persistent directory finds; no file grows then until enough
/// is given back.) A file's length bounds the data blocks it
/// occupies, so the disk used ([`used_disk_space`](Self::used_disk_space),
/// the files' allocated blocks) passes the budget only by the file
/// system's own metadata: on ext4, a file whose holes and growth steps
/// make more than four extents also counts a 4 KiB block of its extent
/// tree (one per 340 extents).
///
/// Since a region's file never grows past the budget, each region's
/// maximum capacity (the address space it reserves) is at most the
/// budget plus the longer of the budget and the file found at open,
/// whatever `tuning` asks for: room past the longest file the budget
/// allows for any write the budget could hold, so such a write is
/// refused by the budget ([`Error::BudgetExceeded`]), never by the
/// capacity. A write longer than the whole budget may be refused with
/// [`Error::CapacityExceeded`] instead.
///
/// The cores are the files `core-0` .. `core-{cores - 1}`: a persistent
/// directory is reopened with at least as many cores as it has region
/// files, or the open is refused (the files past them would hold slots
/// nobody reaches and bytes outside the budget); an ephemeral one removes
/// every `core-N` region file at open, whatever the number of cores.
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
    /// that is less; its maximum capacity is bounded by the budget (see
    /// [`SpillDir`]).
    ///
    /// In [`SpillMode::Ephemeral`], an open that fails once some cores are
    /// open removes their files again (the files this open made, or found
    /// and took as its own); a file it could not open is left alone. In
    /// [`SpillMode::Persistent`], it removes the files it created (still
    /// without a slot) and leaves the files it found as they were.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for 0 cores, a budget below one minimal
    /// region per core, a `tuning` that [`MemoryTuning::validate`] refuses
    /// (its initial capacity lowered to the share first), or, in
    /// [`SpillMode::Persistent`], a directory that holds region files of
    /// more cores (`core-N` for N of `cores` or more: the message names
    /// them; open it with enough cores, or remove them and lose their
    /// slots); in [`SpillMode::Ephemeral`],
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
        if cores == 0 {
            return Err(Error::InvalidConfig {
                reason: "a spill directory needs one core or more, not 0 cores".to_owned(),
            });
        }
        if budget_bytes / (cores as u64) < minimum {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "a spill directory of {cores} cores needs a budget of at least {} bytes \
                     ({minimum} per core), not {budget_bytes}",
                    // No overflow for any number of cores.
                    u128::from(cores as u64) * u128::from(minimum)
                ),
            });
        }
        let share = (budget_bytes / cores as u64 / page * page) as usize;
        let tuning = MemoryTuning {
            overflow_initial_bytes: tuning.overflow_initial_bytes.min(share),
            ..tuning.clone()
        };
        // Checked before its maximum capacity is bounded by the budget
        // (below), which must not hide one no region can have.
        tuning.validate()?;
        std::fs::create_dir_all(dir).map_err(Error::io(dir, "create directory"))?;
        match mode {
            SpillMode::Ephemeral => remove_regions(dir)?,
            SpillMode::Persistent => refuse_more_cores(dir, cores)?,
        }
        // Built core by core: when a core fails to open, dropping what is
        // built closes the cores opened so far and, in ephemeral mode,
        // removes their files (see `Drop`).
        let mut spill = SpillDir {
            dir: dir.to_owned(),
            mode,
            // Grown core by core, not reserved for `cores` up front: a
            // count no process could open is an error at the core that
            // cannot be opened, not an allocation failure (an abort).
            cores: Vec::new(),
            budget: Arc::new(DiskBudget::new(budget_bytes)),
        };
        // In persistent mode, which cores' files this open created: a
        // failed open removes them again (`Drop` does it in ephemeral mode).
        let mut created = Vec::new();
        for core in 0..cores {
            let path = core_path(dir, core);
            let found = std::fs::symlink_metadata(&path).ok();
            // The length of the file the region opens: through a symbolic
            // link, the target's, not the link's.
            let found_len = std::fs::metadata(&path).map_or(0, |metadata| metadata.len());
            let tuning = MemoryTuning {
                overflow_max_bytes: core_max_capacity(&tuning, budget_bytes, found_len),
                ..tuning.clone()
            };
            let mut region = match OverflowRegion::open_with_tuning(&path, &tuning) {
                Ok(region) => region,
                Err(error) => {
                    if mode == SpillMode::Persistent {
                        spill.remove_created(&created);
                    }
                    return Err(error);
                }
            };
            created.push(found.is_none());
            region.attach_budget(Arc::clone(&spill.budget));
            if mode == SpillMode::Ephemeral {
                region.set_ephemeral();
            }
            spill.cores.push(Mutex::new(region));
        }
        Ok(spill)
    }

    /// Runs `f` with core `core`'s region, holding that core's lock (other
    /// cores stay free) for as long as `f` runs. `f` gets every call of the
    /// region through [`CoreRegion`], but not the region itself, which
    /// cannot be replaced.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCore`] past the number of cores; whatever `f`
    /// returns.
    pub fn with_core<T>(
        &self,
        core: usize,
        f: impl FnOnce(&mut CoreRegion<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut region = self.lock(core)?;
        f(&mut CoreRegion {
            region: &mut region,
        })
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
        f: impl FnOnce(&mut CoreRegion<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut region = match self.core(core)?.try_lock() {
            Ok(region) => region,
            // As in `lock`: every region call completes or changes nothing.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        f(&mut CoreRegion {
            region: &mut region,
        })
        .map(Some)
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

    /// Bytes of the budget in use: the lengths of the region files and
    /// their header maps together (what the budget is charged with; at
    /// least [`used_disk_space`](Self::used_disk_space) but for the file
    /// system's own metadata).
    pub fn budget_used(&self) -> u64 {
        self.budget.charged()
    }

    /// Disk the region files and their header maps occupy now: their
    /// allocated blocks (`st_blocks` × 512) added up, read from the file
    /// system without taking any core's lock. A file that cannot be looked
    /// at counts 0.
    pub fn used_disk_space(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        (0..self.cores.len())
            .flat_map(|core| {
                let path = core_path(&self.dir, core);
                [header_map::path_for(&path), path]
            })
            .filter_map(|path| std::fs::metadata(path).ok())
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

/// A core's region as [`SpillDir::with_core`] lends it: the calls of
/// [`OverflowRegion`] that read (through `Deref`) and those that write,
/// free and compact (here), but not the region itself. Swapped for
/// another (`*region = OverflowRegion::open(..)`, which a
/// `&mut OverflowRegion` would allow), the core would leave the
/// directory's disk budget and the directory its file.
///
/// ```compile_fail
/// use overflow_region::{MemoryTuning, OverflowRegion, SpillDir, SpillMode};
///
/// let dir = tempfile::tempdir().unwrap();
/// let other = tempfile::tempdir().unwrap();
/// let tuning = MemoryTuning::default();
/// let spill = SpillDir::open(dir.path(), 1, &tuning, SpillMode::Ephemeral, 16 << 20).unwrap();
/// spill.with_core(0, |region| {
///     // Found in review, when `region` was a `&mut OverflowRegion`: the
///     // core then wrote 64 MiB under a budget of 16 MiB, charging nothing.
///     *region = OverflowRegion::open(&other.path().join("core-0"))?;
///     Ok(())
/// })?;
/// # Ok::<(), overflow_region::Error>(())
/// ```
///
/// ```compile_fail
/// use overflow_region::{MemoryTuning, OverflowRegion, SpillDir, SpillMode};
///
/// let dir = tempfile::tempdir().unwrap();
/// let other = tempfile::tempdir().unwrap();
/// let tuning = MemoryTuning::default();
/// let spill = SpillDir::open(dir.path(), 1, &tuning, SpillMode::Ephemeral, 16 << 20).unwrap();
/// spill.with_core(0, |region| {
///     let outside = OverflowRegion::open(&other.path().join("core-0"))?;
///     drop(std::mem::replace(&mut **region, outside));
///     Ok(())
/// })?;
/// # Ok::<(), overflow_region::Error>(())
/// ```
#[derive(Debug)]
pub struct CoreRegion<'a> {
    region: &'a mut OverflowRegion,
}

impl std::ops::Deref for CoreRegion<'_> {
    type Target = OverflowRegion;

    fn deref(&self) -> &OverflowRegion {
        self.region
    }
}

impl CoreRegion<'_> {
    /// As [`OverflowRegion::write`].
    ///
    /// # Errors
    ///
    /// As [`OverflowRegion::write`].
    pub fn write(&mut self, data: &[u8], engine: EngineId) -> Result<usize> {
        self.region.write(data, engine)
    }

    /// As [`OverflowRegion::write_tagged`].
    ///
    /// # Errors
    ///
    /// As [`OverflowRegion::write_tagged`].
    pub fn write_tagged(&mut self, data: &[u8], engine: EngineId, tag: u64) -> Result<usize> {
        self.region.write_tagged(data, engine, tag)
    }

    /// As [`OverflowRegion::write_vectored`].
    ///
    /// # Errors
    ///
    /// As [`OverflowRegion::write_vectored`].
    pub fn write_vectored(&mut self, parts: &[&[u8]], engine: EngineId, tag: u64) -> Result<usize> {
        self.region.write_vectored(parts, engine, tag)
    }

    /// As [`OverflowRegion::free`].
    ///
    /// # Errors
    ///
    /// As [`OverflowRegion::free`].
    pub fn free(&mut self, slot_index: usize) -> Result<()> {
        self.region.free(slot_index)
    }

    /// As [`OverflowRegion::free_many`].
    ///
    /// # Errors
    ///
    /// As [`OverflowRegion::free_many`].
    pub fn free_many(&mut self, slots: &[usize]) -> Result<()> {
        self.region.free_many(slots)
    }

    /// As [`OverflowRegion::compact`].
    ///
    /// # Errors
    ///
    /// As [`OverflowRegion::compact`].
    pub fn compact(&mut self) -> Result<CompactReport> {
        self.region.compact()
    }

    /// As [`OverflowRegion::compact_step`].
    ///
    /// # Errors
    ///
    /// As [`OverflowRegion::compact_step`].
    pub fn compact_step(&mut self, budget_bytes: u64) -> Result<CompactReport> {
        self.region.compact_step(budget_bytes)
    }
}

impl SpillDir {
    /// After a persistent open failed at core `created.len()`: closes the
    /// cores opened so far and removes the files of those whose file this
    /// open created (`created[core]`) and which hold no slot, so that the
    /// directory is left as it was found. A file with a slot, which another
    /// process wrote after this open created it, stays.
    fn remove_created(&mut self, created: &[bool]) {
        let cores = std::mem::take(&mut self.cores);
        for ((core, region), &created) in cores.into_iter().enumerate().zip(created) {
            let mut region = region.into_inner().unwrap_or_else(PoisonError::into_inner);
            if created && region.slot_count() == 0 {
                // While the region holds the lock, as in `Drop`; and then
                // the region must not write its header map beside the path.
                remove_core_file(&core_path(&self.dir, core), region.inode());
                region.set_ephemeral();
            }
            drop(region);
        }
    }
}

impl Drop for SpillDir {
    /// In [`SpillMode::Ephemeral`], removes the regions' files and closes
    /// the regions.
    fn drop(&mut self) {
        if self.mode != SpillMode::Ephemeral {
            return;
        }
        let cores = std::mem::take(&mut self.cores);
        for (core, region) in cores.into_iter().enumerate() {
            // As in `lock`: a panic in a holder left the region usable.
            let region = region.into_inner().unwrap_or_else(PoisonError::into_inner);
            // The file goes first, while its region holds the lock: an
            // opener waiting for that lock gets it only once the path no
            // longer names the file, sees that, and opens the path again
            // (see `OverflowRegion::open_with_tuning`). Closed first, the
            // region would let the lock go while the path still named its
            // file, and an opener could take the file just before it went:
            // everything written through it would go with it. An ephemeral
            // region writes nothing to its path when dropped (no checksums,
            // no header map), so closing it after the unlink is harmless;
            // its dirty pages go with the unlinked file, never written.
            remove_core_file(&core_path(&self.dir, core), region.inode());
            drop(region);
        }
    }
}

/// Removes a core's region file at `path` if the path still names the
/// file its region opened (`opened`, which the region checked the path
/// named once it held the file's lock): a file put there since, by a
/// program that ignored the lock, is not the directory's. A failure is
/// logged: a drop has no one to report it to, and the next ephemeral open
/// cleans up.
fn remove_core_file(path: &Path, opened: Inode) {
    if Inode::at(path).is_ok_and(|now| now != opened) {
        tracing::warn!(
            path = %path.display(),
            "a spill file was not removed: the path names another file than its region's"
        );
        return;
    }
    if let Err(error) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), %error, "removing a spill file failed");
    }
}

/// The maximum capacity of a core's region: `tuning`'s, or less when the
/// budget is smaller. A region's file grows only while the files together
/// stay within `budget`, so it is never longer than the longer of the
/// budget and the file `found` at open (charged as it is); past that, room
/// for the longest write the budget could ever hold (`budget` bytes), so a
/// write is refused by the budget, not by the capacity, whenever it could
/// fit in the budget at all. Rounded down to whole pages by the region,
/// the result still holds `found` (the budget is at least two pages).
fn core_max_capacity(tuning: &MemoryTuning, budget: u64, found: u64) -> usize {
    let bound = budget.max(found).saturating_add(budget);
    usize::try_from(bound).map_or(tuning.overflow_max_bytes, |bound| {
        bound.min(tuning.overflow_max_bytes)
    })
}

/// The region file of core `core`.
fn core_path(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("core-{core}"))
}

/// The core whose region file is named `name`, as [`core_path`] names it:
/// `core-0`, `core-17`; not `core-017`, `core-+1` or `core-3.headers`.
fn core_of(name: &str) -> Option<usize> {
    let core: usize = name.strip_prefix("core-")?.parse().ok()?;
    (name == format!("core-{core}")).then_some(core)
}

/// How many of the files past the cores a refusal names; it counts them
/// all.
const MORE_CORES_LISTED: usize = 16;

/// Refuses to open `dir` as a persistent directory of `cores` cores when
/// it holds region files of more (`core-N`, N at least `cores`): their
/// slots would be out of reach, and their lengths outside the budget, so
/// the files would hold more than it. Nothing is opened or changed.
fn refuse_more_cores(dir: &Path, cores: usize) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(Error::io(dir, "read directory"))?;
    let mut more = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(dir, "read directory"))?;
        let core = entry.file_name().to_str().and_then(core_of);
        more.extend(core.filter(|&core| core >= cores));
    }
    more.sort_unstable();
    let Some(&last) = more.last() else {
        return Ok(());
    };
    let mut files: Vec<String> = more
        .iter()
        .take(MORE_CORES_LISTED)
        .map(|&core| core_path(dir, core).display().to_string())
        .collect();
    if more.len() > MORE_CORES_LISTED {
        files.push(format!("and {} more", more.len() - MORE_CORES_LISTED));
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    Err(Error::InvalidConfig {
        reason: format!(
            "{}: opened with {cores} core{} (core-0 .. core-{}), but it also holds the \
             region file{} of {} more core{}: {}. Their slots would be out of reach and \
             their bytes outside the budget. Open it with at least {} cores to recover \
             them, or remove those files (with their `.headers` files; their slots are \
             lost) to use {cores} core{}",
            dir.display(),
            plural(cores),
            cores - 1,
            plural(more.len()),
            more.len(),
            plural(more.len()),
            files.join(", "),
            // `core-{usize::MAX}` is a name too: no overflow.
            u128::from(last as u64) + 1,
            plural(cores),
        ),
    })
}

/// Removes the region files (`core-N`, named as `core_path` names them:
/// not `core-007`) a previous run left in `dir`, and
/// their header maps (`core-N.headers`, `core-N.headers.new`). A file with
/// a region's name that is not a region file, or one another writer has
/// open, stops it with an error; that file is left as it is.
fn remove_regions(dir: &Path) -> Result<()> {
    // Only the names `core_path` gives (found in review: any digits were
    // taken, and a `core-007` that is not a region file refused the open).
    let is_core = |name: &str| core_of(name).is_some();
    let entries = std::fs::read_dir(dir).map_err(Error::io(dir, "read directory"))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(dir, "read directory"))?;
        if entry.file_name().to_str().is_some_and(is_core) {
            OverflowRegion::remove_region_file(&entry.path())?;
        }
    }
    // Then the header maps no region file is left for (a removal stopped
    // between the two): no region of this run would read or replace
    // them, and each is charged to the budget (found in review: 9 MiB of
    // them stayed charged, and stayed after the drop).
    let entries = std::fs::read_dir(dir).map_err(Error::io(dir, "read directory"))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(dir, "read directory"))?;
        let is_map = entry.file_name().to_str().is_some_and(|name| {
            let region = name.strip_suffix(".new").unwrap_or(name);
            region.strip_suffix(".headers").is_some_and(is_core)
        });
        if is_map {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&path, "remove")(error));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The names of the cores' files, at their edges.
    use super::*;

    /// Only the names `core_path` makes name a core, up to the largest
    /// index.
    #[test]
    fn core_of_takes_only_the_names_core_path_makes() {
        for core in [0, 1, 17, usize::MAX] {
            let name = core_path(Path::new(""), core);
            assert_eq!(core_of(name.to_str().unwrap()), Some(core), "{name:?}");
        }
        for name in [
            "core-",
            "core-03",
            "core-00",
            "core-+1",
            "core--1",
            "core-1 ",
            "core-1.headers",
            "core-x",
            "Core-1",
            "core-18446744073709551616",
        ] {
            assert_eq!(core_of(name), None, "{name}");
        }
    }

    /// A file of the largest core index is refused like any other, and
    /// the count of cores it asks for does not overflow.
    #[test]
    fn a_file_of_the_largest_core_index_is_refused_without_overflow() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(core_path(dir.path(), usize::MAX), b"").unwrap();
        let error = refuse_more_cores(dir.path(), 2).unwrap_err();
        let Error::InvalidConfig { reason } = &error else {
            panic!("{error:?}");
        };
        assert!(
            reason.contains("at least 18446744073709551616 cores"),
            "{reason}"
        );
        refuse_more_cores(dir.path(), usize::MAX).unwrap_err();
    }
}
