//! [`OverflowRegion`]: the public API, composing the layers below it.

mod compact;
#[cfg(test)]
mod fault_tests;
mod giveback;

pub use compact::CompactReport;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::budget::DiskBudget;
use crate::engine::EngineId;
use crate::error::{Error, Result};
use crate::header_map;
use crate::layout::{
    self, BOOT_ID_OFFSET, CHAIN_END_OFFSET, Counters, DATA_START, EXTENT_HEADER_LEN,
    FILE_HEADER_PROBE_LEN, IDENTITY_OFFSET, LiveHeader, LiveTagMemo, MAX_CAPACITY_OFFSET,
    MAX_SLOTS, NEXT_GENERATION_OFFSET, SLOT_HIGH_WATER_OFFSET, Tag,
};
use crate::reader::SlotRef;
use crate::recovery::{self, RecoveryReport};
use crate::slots::{LiveSlot, SlotLookup, SlotTable};
use crate::space::{Allocation, Extent, GRANULE, Released, Space};
use crate::stats::{Accounting, RegionStats};
use crate::sys::checksum;
use crate::sys::file::{self, Inode};
use crate::sys::mapping::{self, MAX_WRITE_PIECE, Mapping, part_ranges};
use crate::tuning::MemoryTuning;
use giveback::NewPayload;

/// A free remainder shorter than this stays inside the allocated extent as
/// slack rather than becoming a free extent of its own: a free extent must
/// hold at least a header, and one this small would only fragment the index.
const MIN_SPLIT: u64 = 64;

/// `OverflowRegion::header_map_changes` when the map must be written at
/// the next chance (after an open, whatever the file next to it holds).
const HEADER_MAP_MISSING: u64 = u64::MAX / 2;

/// Payloads of extents at least this long (96 KiB) written at the end of a
/// region that punches holes go into the file with `pwrite` instead of
/// zeros ahead and a copy through the mapping (see `Settings::direct_min`).
/// Measured on ext4 with the default threshold: even at 64 KiB the zeros
/// are faster (their 32 KiB pieces are written ahead, many payloads at a
/// time), at 96 KiB `pwrite` is (docs/PERFORMANCE.md).
const DIRECT_MIN: u64 = 96 << 10;

/// How long `open` waits for a writer's lock before it reports
/// `Error::Locked` (see `OverflowRegion::lock`).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(50);

/// The smallest capacity a region can have: the file header and one page.
const MIN_CAPACITY: u64 = DATA_START * 2;

const _: () = assert!(GRANULE == layout::EXTENT_ALIGN);

/// An mmap-backed overflow region owned by a single core.
///
/// The owner writes blobs into numbered slots, reads them back as slices of
/// the mapping (no copy), and frees them. Freed space is reused in O(1) with
/// a good fit (a two-level segregated fit index over free extents), free
/// neighbours are merged, and space at the end of the file is given back.
/// Every extent carries a self-describing header with checksums (the
/// payload's computed at the next [`sync`](Self::sync), or when the region
/// is dropped), so a region reopened after a crash finds every acknowledged
/// slot again (see [`OverflowRegion::recovery`] and `docs/FORMAT.md`).
///
/// `Send` but not `Sync`: one owner at a time, which may move it between
/// threads (a runtime that moves tasks, or a `Mutex<OverflowRegion>`), but
/// never two threads using it at once (`write` and `free` take `&mut
/// self`, and the file's lock keeps other writers out). The soundness
/// argument is on the mapping, in the `sys` module.
///
/// ```compile_fail
/// fn shared_between_threads<T: Sync>() {}
/// shared_between_threads::<overflow_region::OverflowRegion>();
/// ```
///
/// ```
/// use overflow_region::{EngineId, OverflowRegion};
///
/// # fn main() -> overflow_region::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("core-0.region");
/// let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 16 << 20)?;
/// let slot = region.write(b"cold row", EngineId::Query)?;
/// assert_eq!(region.read(slot)?, b"cold row");
/// region.sync()?;
/// drop(region);
///
/// let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 16 << 20)?;
/// assert_eq!(region.read(slot)?, b"cold row");
/// region.free(slot)?;
/// assert_eq!(region.used_bytes(), 0);
/// # Ok(())
/// # }
/// ```
///
/// # Soundness of zero-copy reads
///
/// [`read`](Self::read) returns a slice of the mapping. It is sound because
/// only one writer maps a file (an exclusive `flock` held for the region's
/// lifetime), the slice borrows `&self` so neither `write` nor `free`
/// (`&mut self`) can run while it lives, the mapping's base never moves, and
/// every length read from the file is checked before use. The one hazard
/// left is outside this process's control: another process that ignores the
/// lock and writes or truncates the file can change the bytes under a live
/// slice or make touching them raise SIGBUS. Do not let other programs write
/// a region file while it is open.
///
/// # One writer per file, not per path
///
/// The writer's lock is on the open file (the inode), as SQLite's locks
/// are. A region file that is unlinked or renamed away while its writer is
/// open is no longer at the path: a second writer opening the same path
/// creates a new, empty region there, and everything the first writer
/// writes lives on only in the unlinked file, gone when it is dropped. Do
/// not delete, rename or replace a region file while it is open;
/// [`sync`](Self::sync) returns [`Error::PathReplaced`] when it happened,
/// so the owner finds out.
///
/// # Durability
///
/// A process that dies (even by SIGKILL) loses nothing acknowledged: every
/// slot whose `write` returned and that was not freed reads back identical
/// after reopen, and a `free` that returned is never undone. After power
/// loss, everything before the last [`sync`](Self::sync) survives.
pub struct OverflowRegion {
    path: PathBuf,
    /// The inode the region's file was when it was opened: `sync` checks
    /// that `path` still names it.
    inode: Inode,
    /// The file's identity (`layout::IDENTITY_OFFSET`), carried by every
    /// `SlotRef` made here.
    identity: u64,
    /// The mapped file. Invariant: `mapping.len() >= space.cursor()`: every
    /// extent lies inside the file.
    mapping: Mapping,
    /// Free extents and the cursor. Invariant: together with the live slots'
    /// extents they tile `DATA_START..space.cursor()` exactly, and they agree
    /// with the tags in the file.
    space: Space,
    /// Slot index -> extent. Invariant: each live entry's extent carries a
    /// live header naming that index.
    slots: SlotTable,
    /// Per-engine live slots and bytes, and slack. Invariant: equal to the
    /// sums over the live slots.
    accounting: Accounting,
    /// Generation of the next write; its low 32 bits go in the header.
    next_generation: u64,
    /// What the last open found.
    recovery: RecoveryReport,
    /// The space policy's state: holes, the punching batch, long folios,
    /// growth and zeros ahead, the disk budget, and compaction's (see
    /// region/giveback.rs, which makes every decision on it).
    policy: giveback::Policy,
    /// Sizes, hole punching and shrinking, as opened.
    settings: Settings,
    /// The live tag of the last extent length written.
    live_tags: LiveTagMemo,
    /// A write-back error that `Mapping::write_back` reported (and so took
    /// from the file: `sync_file_range` checks the same error state as
    /// `fsync`), for the next `sync` to return.
    write_back_error: std::cell::Cell<Option<io::Error>>,
    /// Extents written, freed or moved since the header map next to the
    /// file was written (`header_map`); `HEADER_MAP_MISSING` when it must be
    /// written at the next `sync` or close whatever the count.
    header_map_changes: std::cell::Cell<u64>,
    /// Bytes of the header map's files charged to the disk budget (none
    /// without one): the map is disk the region holds too.
    header_map_charged: std::cell::Cell<u64>,
    /// Slots (index and generation) whose payload checksum is not computed
    /// yet: written (or moved, unsummed) since the last `sync`, which
    /// computes them (as does dropping the region). Invariant: every live
    /// slot whose header has no payload checksum is listed with its
    /// generation. Entries may be stale (the slot freed, reused or moved
    /// since: another generation); `sum_unsummed` skips those, and
    /// `note_unsummed` prunes them so the list stays within about twice
    /// the live slots, without reading the file.
    unsummed: std::cell::Cell<Vec<(u32, u32)>>,
    /// This boot's id could not be read, so no later open can tell a
    /// process crash from a machine crash and trust a payload without a
    /// checksum: every write (and move) computes its checksum at once,
    /// as `note_unsummed` would have the next sync do.
    sums_at_write: bool,
    /// The file is removed right after the region is dropped (a
    /// `SpillDir` in ephemeral mode): dropping it neither computes
    /// checksums nor punches what waits for a batch.
    ephemeral: bool,
}

impl std::fmt::Debug for OverflowRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverflowRegion")
            .field("path", &self.path)
            .field("capacity", &self.capacity())
            .field("max_capacity", &self.max_capacity())
            .field("used_bytes", &self.used_bytes())
            .field("live_bytes", &self.live_bytes())
            .field("slot_count", &self.slot_count())
            .field("live_slots", &self.live_slot_count())
            .finish_non_exhaustive()
    }
}

/// Computes the checksums of the slots written since the last sync, and
/// punches the free pages still waiting for a batch, so a closed region
/// keeps no more disk than punching promises, and the tail if long folios
/// are left there (see region/giveback.rs); none of it for a region whose
/// file is about to be removed.
impl Drop for OverflowRegion {
    fn drop(&mut self) {
        // After a failed store nothing more is stored: the next open
        // recovers what the file holds.
        if !self.ephemeral && self.mapping.store_failed().is_none() {
            // A clean shutdown writes the page cache back: with their
            // checksums the slots written since the last sync survive it too.
            self.sum_unsummed();
            self.punch_pending();
            self.give_back_long_folio_tail();
            self.write_header_map(true);
        }
        if let Some(budget) = &self.policy.disk_budget {
            budget.release(self.mapping.len() + self.header_map_charged.get());
        }
    }
}

/// Where a committed extent's payload comes from.
enum Payload<'a> {
    /// The caller's bytes, in order (one part for `write`).
    Parts(&'a [&'a [u8]]),
    /// Bytes already in the file at this offset (an extent being moved).
    Within { offset: u64 },
    /// The caller's bytes, already in place (`write_direct`, or
    /// `make_writable` with the refill of punched pages under them).
    Written,
}

/// Validated settings.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Size of a new file (page multiple, `MIN_CAPACITY..=max`).
    initial: u64,
    /// Size the file never passes (page multiple, at least `MIN_CAPACITY`).
    max: u64,
    /// Free extents at least this long are punched; 0 never (also after the
    /// file system said it cannot).
    punch_threshold: u64,
    /// Whether the file may shrink.
    shrink: bool,
    /// Space kept beyond the live bytes, in percent of them
    /// (`MemoryTuning::overflow_slack_percent`, at most 100).
    slack_percent: u64,
    /// Whether the region compacts itself (`MemoryTuning::overflow_auto_compact`).
    auto_compact: bool,
    /// Whether every store is a `pwrite` (`MemoryTuning::overflow_pwrite_stores`;
    /// `None`: on btrfs only).
    pwrite_stores: Option<bool>,
}

impl Settings {
    fn new(tuning: &MemoryTuning) -> Result<Settings> {
        tuning.validate()?;
        let page = mapping::page_size();
        // The file never passes `max`, so it is rounded down to whole pages.
        let max = tuning.overflow_max_bytes as u64 / page * page;
        let initial = tuning.overflow_initial_bytes as u64;
        let punch_threshold = tuning.overflow_punch_hole_bytes as u64;
        debug_assert!(initial <= max.next_multiple_of(page) && max >= MIN_CAPACITY);
        Ok(Settings {
            // `initial <= max <= MAX_RESERVATION` (validated): no overflow.
            initial: initial.next_multiple_of(page).clamp(MIN_CAPACITY, max),
            max,
            punch_threshold,
            shrink: tuning.overflow_shrink,
            slack_percent: u64::from(tuning.overflow_slack_percent),
            auto_compact: tuning.overflow_auto_compact,
            pwrite_stores: tuning.overflow_pwrite_stores,
        })
    }

    /// The error for a mapping of the file that failed: a reservation the
    /// kernel refused for want of address space is a configuration problem
    /// and names the maximum capacity.
    fn map_error(&self, path: &Path, source: io::Error) -> Error {
        if source.raw_os_error() == Some(libc::ENOMEM) {
            return Error::InvalidConfig {
                reason: format!(
                    "{}: could not reserve {} bytes of address space for the maximum capacity ({source}); \
                     use a smaller maximum capacity",
                    path.display(),
                    self.max
                ),
            };
        }
        Error::Io {
            path: path.to_owned(),
            operation: "mmap",
            source,
        }
    }

    /// Zeros are written in pieces of this many bytes that never cross a
    /// multiple of it (`Mapping::set_write_piece`), and holes are punched
    /// between its multiples, but in long free extents (see
    /// region/giveback.rs), so a hole cuts no folio of the page cache
    /// without writing it back first (a dirty one cut in part would bring
    /// its blocks back): the largest power of two at most half the threshold, so every
    /// free extent of the threshold's length holds at least one granule;
    /// from a page to `MAX_WRITE_PIECE`. `None` when holes are not punched.
    fn punch_granule(&self) -> Option<u64> {
        (self.punch_threshold != 0).then(|| {
            let half = (self.punch_threshold / 2).clamp(mapping::page_size(), MAX_WRITE_PIECE);
            1 << half.ilog2()
        })
    }

    /// The pieces zeros are written in: the punching granule, or the
    /// longest piece for a region that never punches holes.
    fn write_piece(&self) -> u64 {
        self.punch_granule().unwrap_or(MAX_WRITE_PIECE)
    }

    /// Extents at least this long written at the end of the region get
    /// their payload with `pwrite` (`OverflowRegion::write_direct`):
    /// `DIRECT_MIN`, and at least one punching threshold, so that freeing
    /// one in the middle of the region punches its middle at once (at the
    /// end, the tail is given back instead); for a region that never
    /// punches, `MAX_WRITE_PIECE` (its zeros are already written in pieces
    /// that long, and shorter payloads gain nothing).
    fn direct_min(&self) -> u64 {
        match self.punch_granule() {
            Some(_) => DIRECT_MIN.max(self.punch_threshold),
            None => MAX_WRITE_PIECE,
        }
    }
}

impl OverflowRegion {
    /// Default initial file size: 64 MiB.
    ///
    /// Corresponds to [`MemoryTuning::overflow_initial_bytes`].
    pub const DEFAULT_INITIAL_CAPACITY: usize = MemoryTuning::DEFAULT_INITIAL_BYTES;

    /// Default maximum file size: 1 GiB.
    ///
    /// Corresponds to [`MemoryTuning::overflow_max_bytes`].
    pub const DEFAULT_MAX_CAPACITY: usize = MemoryTuning::DEFAULT_MAX_BYTES;

    /// Opens or creates a region at `path` with the default capacities.
    ///
    /// A new (or empty) file is created at the initial capacity. An existing
    /// region file is recovered: every live slot comes back (see
    /// [`recovery`](Self::recovery)).
    ///
    /// # Errors
    ///
    /// [`Error::NotARegion`] or [`Error::UnsupportedVersion`] for a file that
    /// is not a region this build reads (the file is left untouched),
    /// [`Error::NotAFile`] for a path that names a directory, a device, a
    /// FIFO, a socket or a file on a kernel pseudo file system (nothing is
    /// written to it), [`Error::Locked`] if another writer has it open,
    /// [`Error::InvalidConfig`] if it is larger than the maximum capacity,
    /// [`Error::Io`] if a system call fails. A file this call created is
    /// removed again when it fails.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_config(
            path,
            Self::DEFAULT_INITIAL_CAPACITY,
            Self::DEFAULT_MAX_CAPACITY,
        )
    }

    /// Opens or creates a region with an explicit initial capacity and the
    /// default maximum.
    ///
    /// # Errors
    ///
    /// As [`open_with_config`](Self::open_with_config).
    pub fn open_with_capacity(path: &Path, initial_capacity: usize) -> Result<Self> {
        Self::open_with_config(
            path,
            initial_capacity,
            Self::DEFAULT_MAX_CAPACITY.max(initial_capacity),
        )
    }

    /// Opens or creates a region with the capacities of a [`MemoryTuning`].
    ///
    /// # Errors
    ///
    /// As [`open_with_config`](Self::open_with_config); and [`Error::Io`]
    /// (operation `flock`, kind [`io::ErrorKind::ResourceBusy`]) when, each
    /// of the few times this call took the lock of the file it had opened,
    /// another writer had just removed that file from the path (see
    /// `open_locked`).
    pub fn open_with_tuning(path: &Path, tuning: &MemoryTuning) -> Result<Self> {
        let settings = Settings::new(tuning)?;
        let file::Opened { file, created } = Self::open_locked(path, true, |_| Ok(()))?
            .expect("an open that creates the file always finds one");
        let file_len = file.metadata().map_err(Error::io(path, "stat"))?.len();
        if file_len == 0 {
            if !created {
                return Self::initialise(path, file, settings);
            }
            // Leave nothing behind that was not there, and remove it while
            // holding its lock (a second descriptor of the same open file
            // keeps the lock after `initialise` has dropped the file): an
            // opener waiting for the lock then finds the path gone and
            // starts again (`open_locked`), instead of getting the lock of
            // a file about to be unlinked under it.
            let held = match file.try_clone() {
                Ok(held) => held,
                Err(source) => {
                    let _ = std::fs::remove_file(path);
                    return Err(Error::io(path, "dup")(source));
                }
            };
            let region = Self::initialise(path, file, settings);
            if region.is_err() {
                let _ = std::fs::remove_file(path);
            }
            drop(held);
            return region;
        }
        let counters = layout::read_file_header(path, &file, file_len)?;
        if file_len < DATA_START {
            // Our own header, written by an initialisation that did not
            // finish (no slot was ever written): start it again, over the
            // old header. Not by cutting the file first: a reader may have
            // it mapped, and would fault on the cut page. (On btrfs the
            // interrupted initialisation turned copy-on-write off while the
            // file was empty, before it wrote the header.)
            return Self::initialise(path, file, settings);
        }
        if file_len > settings.max {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "{}: the file is {file_len} bytes, larger than the maximum capacity {}",
                    path.display(),
                    settings.max
                ),
            });
        }
        let inode = Inode::of(&file).map_err(Error::io(path, "stat"))?;
        // Chosen before anything is stored, so a failure leaves the file as
        // it was.
        let new_identity = match counters.identity {
            Some(_) => None,
            None => Some(file::random_nonzero_u64().map_err(Error::io(path, "getrandom"))?),
        };
        let unknown_long_folios = Self::drop_larger_folios(path, &file, &settings);
        // Before the walk: ask for every header page at once.
        let prefetched = counters.identity.map_or(0, |identity| {
            header_map::prefetch(path, &file, identity, file_len)
        });
        let mapping =
            Self::map(file, &settings).map_err(|source| settings.map_error(path, source))?;
        let holes = mapping
            .holes(DATA_START)
            .map_err(Error::io(path, "seek holes"))?;
        let mut region = Self::recover(
            path,
            mapping,
            counters,
            settings,
            holes,
            unknown_long_folios,
            inode,
        );
        region.recovery.header_pages_prefetched = prefetched;
        if let Some(identity) = new_identity {
            region.record_identity(identity);
        }
        // The repairs and the header's counters were stores too.
        region.check_stores()?;
        Ok(region)
    }

    /// Opens or creates a region with explicit initial and maximum capacity.
    ///
    /// The file is created at `initial_capacity` (rounded up to a page, at
    /// least 8 KiB) and grows as writes need, never past `max_capacity`
    /// (rounded down to a page). Address space for `max_capacity` is reserved
    /// once; the mapping never moves.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if `initial_capacity > max_capacity`, if
    /// `max_capacity` is below 8 KiB, or if the existing file is larger than
    /// `max_capacity`; otherwise as [`open`](Self::open).
    pub fn open_with_config(
        path: &Path,
        initial_capacity: usize,
        max_capacity: usize,
    ) -> Result<Self> {
        let tuning = MemoryTuning {
            overflow_initial_bytes: initial_capacity,
            overflow_max_bytes: max_capacity,
            ..MemoryTuning::default()
        };
        Self::open_with_tuning(path, &tuning)
    }

    /// Removes the region file at `path`, holding the writer's lock while it
    /// does: a spill directory's start-fresh mode. An empty file goes too.
    /// A path that names nothing (any more: another remover was first) is
    /// no error; the file is gone, as asked.
    ///
    /// The lock taken is checked to be the lock of the file the path names
    /// then, as in `open_locked`; between that check and the unlink, only
    /// the lock's holder (this call) could take the file from the path.
    ///
    /// # Errors
    ///
    /// [`Error::NotARegion`] (or another refusal of `open`, such as a
    /// dangling symbolic link) for a file that is not a region file,
    /// [`Error::Locked`] if a writer has it open; the file is left as it
    /// is. [`Error::Io`] (`flock`, [`io::ErrorKind::ResourceBusy`]) as in
    /// [`open_with_tuning`](Self::open_with_tuning).
    pub(crate) fn remove_region_file(path: &Path) -> Result<()> {
        // A region file is recognised before its lock is waited for.
        let is_region = |file: &File| {
            let file_len = file.metadata().map_err(Error::io(path, "stat"))?.len();
            if file_len != 0 {
                layout::read_file_header(path, file, file_len)?;
            }
            Ok(())
        };
        if Self::open_locked(path, false, is_region)?.is_none() {
            return Ok(());
        }
        // Holding the lock of the file the path names: only this call
        // could take it from the path now.
        std::fs::remove_file(path).map_err(Error::io(path, "remove"))?;
        header_map::remove(path).map_err(Error::io(&header_map::path_for(path), "remove"))
    }

    /// How many times `open_locked` and `remove_region_file` open the path
    /// again after finding, with the lock taken, that it names another
    /// file or none. Each time means another writer removed the file
    /// whose lock was awaited, just then; so many in a row is no race that
    /// settles, and is reported (`path_keeps_changing`).
    const LOCK_ATTEMPTS: u32 = 8;

    /// Opens the file at `path` for writing (creating it if missing, with
    /// `create`), lets `check` refuse it before its lock is waited for,
    /// and takes its writer's lock, for a file the path still names once
    /// the lock is held. `None` when, without `create`, nothing is at the
    /// path (not even a dangling symbolic link): a remover has nothing to
    /// remove. Used by `open_with_tuning` and `remove_region_file`.
    ///
    /// # Why the path is looked at again, with the lock held
    ///
    /// The lock is on the file (the inode), and a file can leave its path
    /// while an opener waits for the lock (`lock` waits up to
    /// `LOCK_PATIENCE`): an ephemeral [`SpillDir`](crate::SpillDir)
    /// removes its files when it is dropped or when its open fails,
    /// `remove_region_file` removes a previous run's, and a failed open
    /// removes the file it created. Each of them unlinks a path only while
    /// it holds the lock of the file the path names, and after checking
    /// that it names it. So:
    ///
    /// - an opener that holds the lock of a file and then finds the path
    ///   naming that file keeps it at the path for as long as it holds
    ///   the lock: no other remover unlinks it before taking the lock;
    /// - one that finds the path naming another file, or none, holds the
    ///   lock of a file its last holder removed: it lets it go and opens
    ///   the path again, where it finds the newer file (or creates one)
    ///   and waits for that one's lock in turn.
    ///
    /// A crash changes nothing in this: the lock goes with the process,
    /// and an unlink either happened (the path is gone, or names a newer
    /// file: the next opener looks again) or did not (the file is still
    /// there, an ordinary file to recover or remove). Not covered: another
    /// program that unlinks, renames or replaces a region file without its
    /// lock (see "One writer per file, not per path" on
    /// [`OverflowRegion`]; [`sync`](Self::sync) reports it).
    fn open_locked(
        path: &Path,
        create: bool,
        check: impl Fn(&File) -> Result<()>,
    ) -> Result<Option<file::Opened>> {
        for _ in 0..Self::LOCK_ATTEMPTS {
            let opened = match file::open_regular(path, create) {
                Ok(opened) => opened,
                Err(file::OpenRefused::Io(_, error))
                    if !create
                        && error.kind() == io::ErrorKind::NotFound
                        && Self::names_nothing(path) =>
                {
                    return Ok(None);
                }
                Err(file::OpenRefused::Io(_, error))
                    if error.kind() == io::ErrorKind::NotFound
                        && let Ok(target) = std::fs::read_link(path) =>
                {
                    return Err(Error::Io {
                        path: path.to_owned(),
                        operation: "open",
                        source: io::Error::new(
                            io::ErrorKind::NotFound,
                            format!(
                                "a symbolic link to {}, which names nothing (remove the link, \
                                 or make what it names)",
                                target.display()
                            ),
                        ),
                    });
                }
                Err(refused) => return Err(Error::open_refused(path, refused)),
            };
            check(&opened.file)?;
            if !Self::lock(&opened.file).map_err(Error::io(path, "flock"))? {
                return Err(Error::Locked {
                    path: path.to_owned(),
                });
            }
            if Self::names(path, &opened.file)? {
                return Ok(Some(opened));
            }
            // Dropping the file lets its lock go: its holder removed it.
        }
        Err(Self::path_keeps_changing(path))
    }

    /// Whether `path` names `file` now (the same device and inode); false
    /// when it names nothing.
    fn names(path: &Path, file: &File) -> Result<bool> {
        let locked = Inode::of(file).map_err(Error::io(path, "stat"))?;
        match Inode::at(path) {
            Ok(now) => Ok(now == locked),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(Error::io(path, "stat")(source)),
        }
    }

    /// Whether nothing at all is at `path`, not even a symbolic link
    /// (a dangling one is something a caller is told about).
    fn names_nothing(path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_err_and(|error| error.kind() == io::ErrorKind::NotFound)
    }

    /// The error when the path named another file each time its lock was
    /// taken (`LOCK_ATTEMPTS` times).
    fn path_keeps_changing(path: &Path) -> Error {
        Error::Io {
            path: path.to_owned(),
            operation: "flock",
            source: io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "each of the {} times the lock of the file opened there was taken, the \
                     path named another file or none (other writers kept removing it); try again",
                    Self::LOCK_ATTEMPTS
                ),
            ),
        }
    }

    /// Takes the writer's lock, waiting up to `LOCK_PATIENCE` for it: a
    /// writer that was just dropped in a process that spawns children can
    /// leave its lock held for a moment by a child between `fork` and `exec`
    /// (the child shares the open file until `exec` closes it).
    fn lock(file: &File) -> io::Result<bool> {
        let started = std::time::Instant::now();
        loop {
            if mapping::lock_exclusive(file)? {
                return Ok(true);
            }
            if started.elapsed() >= LOCK_PATIENCE {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Makes an empty file (or one whose initialisation was interrupted) a
    /// region: the header first, so an interrupted initialisation is
    /// recognised as ours, then the blocks, then a sync of file and directory.
    fn initialise(path: &Path, file: File, settings: Settings) -> Result<Self> {
        let inode = Inode::of(&file).map_err(Error::io(path, "stat"))?;
        let identity = file::random_nonzero_u64().map_err(Error::io(path, "getrandom"))?;
        // While the file is empty: on btrfs, no copy-on-write (a full disk
        // must not make a store into a written page fault).
        file::no_copy_on_write(&file)
            .map_err(Error::io(path, "set the no-copy-on-write attribute"))?;
        // The address space first: a reservation refused leaves the file as
        // it was (empty), not a header without a region.
        let mut mapping =
            Self::map(file, &settings).map_err(|source| settings.map_error(path, source))?;
        // Zeros to the end of what an unfinished initialisation left (less
        // than a page), so nothing of it is kept.
        let unfinished = usize::try_from(mapping.len()).unwrap_or(usize::MAX);
        debug_assert!(unfinished < DATA_START as usize);
        let mut header = vec![0u8; unfinished.max(FILE_HEADER_PROBE_LEN)];
        header[..28].copy_from_slice(&layout::encode_file_header());
        header[IDENTITY_OFFSET as usize..][..16]
            .copy_from_slice(&layout::encode_identity(identity));
        let boot_id = file::boot_id();
        header[BOOT_ID_OFFSET as usize..][..16].copy_from_slice(&boot_id.unwrap_or([0; 16]));
        mapping
            .start_file(&header)
            .map_err(Error::io(path, "write header"))?;
        mapping
            .grow(settings.initial)
            .map_err(Error::io(path, "fallocate"))?;
        let mut region = OverflowRegion {
            path: path.to_owned(),
            inode,
            identity,
            space: Space::new(DATA_START, settings.max, MIN_SPLIT),
            mapping,
            slots: SlotTable::default(),
            accounting: Accounting::default(),
            next_generation: 0,
            recovery: RecoveryReport {
                initialised: true,
                ..RecoveryReport::default()
            },
            settings,
            live_tags: LiveTagMemo::default(),
            write_back_error: std::cell::Cell::new(None),
            header_map_changes: std::cell::Cell::new(HEADER_MAP_MISSING),
            header_map_charged: std::cell::Cell::new(0),
            policy: giveback::Policy::new(false),
            unsummed: std::cell::Cell::default(),
            sums_at_write: boot_id.is_none(),
            ephemeral: false,
        };
        region.mapping.store_word(CHAIN_END_OFFSET, DATA_START);
        region.record_max_capacity();
        region.record_write_piece(false);
        region.flush()?;
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        mapping::sync_directory(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            operation: "fsync directory",
            source,
        })?;
        Ok(region)
    }

    /// Maps the file over a reservation of the maximum capacity, with zeros
    /// written in `Settings::write_piece`s.
    fn map(file: File, settings: &Settings) -> io::Result<Mapping> {
        let pwrite_stores = match settings.pwrite_stores {
            Some(choice) => choice,
            None => file::on_btrfs(&file)?,
        };
        let mut mapping = Mapping::new(file, settings.max)?;
        mapping.set_write_piece(settings.write_piece());
        mapping.set_pwrite_stores(pwrite_stores);
        Ok(mapping)
    }

    /// Gives the file an identity (one it did not have, or whose check
    /// failed): the value first, then its check, so a crash between the two
    /// leaves no identity and the next writer chooses again.
    fn record_identity(&mut self, identity: u64) {
        let bytes = layout::encode_identity(identity);
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        self.mapping.store_word(IDENTITY_OFFSET, word(0));
        self.mapping.store_word(IDENTITY_OFFSET + 8, word(8));
        self.identity = identity;
        self.recovery.repairs += 1;
    }

    /// Stores this boot's id in the file header (zeros if it is unknown),
    /// after a recovery that verified every payload: from now on, the page
    /// cache holds every store this writer makes, until the machine stops.
    fn record_boot_id(&mut self) {
        let id = file::boot_id().unwrap_or([0; 16]);
        let word = |at: usize| u64::from_le_bytes(id[at..at + 8].try_into().expect("8 bytes"));
        self.mapping.store_word(BOOT_ID_OFFSET, word(0));
        self.mapping.store_word(BOOT_ID_OFFSET + 8, word(8));
    }

    /// Stores the maximum capacity in the file header, where readers find
    /// how much address space to reserve.
    fn record_max_capacity(&mut self) {
        let max = self.space.limit();
        if self.mapping.load_word(MAX_CAPACITY_OFFSET) != Some(max) {
            self.mapping.store_word(MAX_CAPACITY_OFFSET, max);
        }
    }

    /// Rebuilds slots and free space from a mapped region file and applies
    /// the repairs recovery asks for.
    fn recover(
        path: &Path,
        mut mapping: Mapping,
        counters: Counters,
        settings: Settings,
        holes: Vec<(u64, u64)>,
        unknown_long_folios: bool,
        inode: Inode,
    ) -> Self {
        let space = Space::new(DATA_START, settings.max, MIN_SPLIT);
        let file = mapping
            .bytes(0, mapping.len())
            .expect("the whole file is in bounds");
        // Written on this boot: every store of the last writer is in the
        // page cache, so a live tag means its payload is there in full.
        // Written on another boot: payloads are checked, and those written
        // after the last sync (no checksum) were never promised: dropped.
        let boot_id = file::boot_id();
        let same_boot = boot_id.is_some_and(|boot| boot == counters.boot_id);
        let checks = recovery::Checks {
            verify_payloads: !same_boot,
            keep_unsummed: same_boot,
        };
        let recovered = recovery::recover(&mut recovery::Bytes(file), counters, space, checks)
            .expect("a walk over memory cannot fail");
        for &(offset, tag) in &recovered.repairs {
            mapping.store_word(offset, tag.encode());
        }
        let mut accounting = Accounting::default();
        for (_, slot) in recovered.slots.iter_live() {
            accounting.add(&slot);
        }
        let mut region = OverflowRegion {
            path: path.to_owned(),
            inode,
            identity: counters.identity.unwrap_or(0),
            mapping,
            space: recovered.space,
            slots: recovered.slots,
            accounting,
            next_generation: recovered.next_generation,
            recovery: recovered.report,
            settings,
            live_tags: LiveTagMemo::default(),
            write_back_error: std::cell::Cell::new(None),
            header_map_changes: std::cell::Cell::new(HEADER_MAP_MISSING),
            header_map_charged: std::cell::Cell::new(0),
            policy: giveback::Policy::new(unknown_long_folios),
            unsummed: std::cell::Cell::new(recovered.unsummed),
            sums_at_write: boot_id.is_none(),
            ephemeral: false,
        };
        for (start, end) in holes {
            region.policy.holes.insert(start, end);
        }
        // The holes were found before the repairs above stored their tags:
        // a page that holds one no longer reads as zeros, and zeros must
        // never be written over it to refill it.
        for &(offset, _) in &recovered.repairs {
            let (start, end) = pages_touching(offset, offset + 8);
            region.policy.holes.take(start, end);
        }
        region.policy.peak_end = region.space.cursor();
        region.policy.warm_end = region.space.cursor();
        for extent in recovered.to_free {
            region.free_extent(extent);
        }
        // The counters in the header are hints that a crash or damage can
        // leave behind; store what recovery found.
        let found = [
            (
                SLOT_HIGH_WATER_OFFSET,
                counters.slot_high_water,
                region.slots.len() as u64,
            ),
            (
                NEXT_GENERATION_OFFSET,
                counters.next_generation,
                region.next_generation,
            ),
            (CHAIN_END_OFFSET, counters.chain_end, region.space.cursor()),
        ];
        for (offset, stored, actual) in found {
            if stored != actual {
                region.mapping.store_word(offset, actual);
                region.recovery.repairs += 1;
            }
        }
        region.record_max_capacity();
        region.record_write_piece(false);
        region.recovery.trusted_same_boot = same_boot;
        if !same_boot {
            region.record_boot_id();
        }
        for dropped in &region.recovery.dropped {
            tracing::warn!(path = %path.display(), ?dropped, "recovery dropped an extent");
        }
        region
    }

    /// Writes `data` into a slot and returns the slot's index.
    ///
    /// The most recently freed index is handed out first. The extent comes
    /// from free space when any free extent is large enough (good fit, O(1)),
    /// else from the end of the region, growing the file as needed. When
    /// `write` returns, the slot survives a crash of the process; it survives
    /// power loss after the next [`sync`](Self::sync).
    ///
    /// # Errors
    ///
    /// [`Error::CapacityExceeded`] if the extent fits neither in free space
    /// nor under the maximum capacity, [`Error::BudgetExceeded`] if the
    /// file of a [`SpillDir`](crate::SpillDir)'s region would grow past the
    /// directory's disk budget, [`Error::Io`] if growing the file fails (a
    /// full disk), or if `pwrite` of a long payload does (see
    /// docs/FORMAT.md, "giving space back"). In all these cases the region
    /// is unchanged.
    /// [`Error::TooManySlots`] past 2^32 - 1 slot indices.
    /// Where the region stores with `pwrite`
    /// ([`MemoryTuning::overflow_pwrite_stores`](crate::MemoryTuning::overflow_pwrite_stores):
    /// btrfs by default), [`Error::Io`] if a store fails: the slot was
    /// taken in memory all the same, and the region refuses every later
    /// write, free, sync and compaction (with [`Error::Io`]) until it is
    /// reopened, when recovery finds what the file holds.
    ///
    /// # Time complexity
    ///
    /// O(1) plus the copy of `data`, independent of the number of free
    /// extents, with one bounded exception: a length that is not the
    /// shortest of its size class may walk the free extents of that one
    /// class (lengths within 1/32 of each other) when no larger class has one.
    /// Automatic compaction
    /// ([`MemoryTuning::overflow_auto_compact`](crate::MemoryTuning::overflow_auto_compact))
    /// may add a step while the region is over its disk budget: it looks
    /// at up to 256 free extents or slot-table entries, and moves live
    /// extents of at most 1 MiB each, 2 MiB in all (paid for by the bytes
    /// this and the pass's earlier operations wrote or freed). Each old
    /// place is freed as [`free`](Self::free) frees an extent: at once, or,
    /// for a slot synced before it moved, by the next `write` or `free`
    /// after a later sync (at most 256 wait).
    pub fn write(&mut self, data: &[u8], engine: EngineId) -> Result<usize> {
        self.write_parts(&[data], engine, 0)
    }

    /// Writes `data` into a slot with a tag of the caller's, and returns
    /// the slot's index: as [`write`](Self::write), and the `u64` tag is
    /// stored with the slot (in its extent header, under the header's
    /// checksum), comes back after a reopen, and is returned by
    /// [`tag`](Self::tag) and [`live_slots`](Self::live_slots). A tag of 0
    /// is what [`write`](Self::write) stores and takes no space; any other
    /// tag takes 8 bytes of the extent.
    ///
    /// ```
    /// use overflow_region::{EngineId, OverflowRegion};
    ///
    /// # fn main() -> overflow_region::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("core-0");
    /// let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 16 << 20)?;
    /// let partition = 0x7a11_u64;
    /// let slot = region.write_tagged(b"rows of partition 0x7a11", EngineId::Query, partition)?;
    /// drop(region);
    ///
    /// let region = OverflowRegion::open_with_config(&path, 1 << 20, 16 << 20)?;
    /// assert_eq!(region.tag(slot)?, partition);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn write_tagged(&mut self, data: &[u8], engine: EngineId, tag: u64) -> Result<usize> {
        self.write_parts(&[data], engine, tag)
    }

    /// Writes the concatenation of `parts` into a slot with a tag of the
    /// caller's (see [`write_tagged`](Self::write_tagged)), copying each
    /// part once, straight into the region: a key and a payload need no
    /// buffer of their own. The slot reads back as one slice.
    ///
    /// ```
    /// use overflow_region::{EngineId, OverflowRegion};
    ///
    /// # fn main() -> overflow_region::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut region = OverflowRegion::open_with_config(&dir.path().join("r"), 1 << 20, 16 << 20)?;
    /// let key = 42u64.to_le_bytes();
    /// let slot = region.write_vectored(&[&key, b"value"], EngineId::Query, 7)?;
    /// assert_eq!(region.read(slot)?, b"\x2a\0\0\0\0\0\0\0value");
    /// assert_eq!(region.tag(slot)?, 7);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn write_vectored(&mut self, parts: &[&[u8]], engine: EngineId, tag: u64) -> Result<usize> {
        self.write_parts(parts, engine, tag)
    }

    /// `write`, `write_tagged` and `write_vectored`. Inlined into each, so
    /// `write`'s one part costs no loop (measured with callgrind:
    /// docs/PERFORMANCE.md).
    #[inline(always)]
    fn write_parts(&mut self, parts: &[&[u8]], engine: EngineId, user_tag: u64) -> Result<usize> {
        self.refuse_after_failed_store()?;
        let payload_len: u64 = parts.iter().map(|part| part.len() as u64).sum();
        let header_len = layout::header_len(user_tag);
        let extent_len = layout::extent_len_for(payload_len, header_len)
            .ok_or_else(|| self.capacity_exceeded(payload_len))?;
        let slot = self.slots.next_index();
        if slot as u64 >= MAX_SLOTS {
            return Err(Error::TooManySlots { max: MAX_SLOTS });
        }
        let allocation = self
            .space
            .allocate(extent_len)
            .map_err(|_| self.capacity_exceeded(payload_len))?;
        let direct = self.writes_direct(&allocation);
        let new_payload = NewPayload {
            offset: allocation.extent.offset + header_len,
            len: payload_len,
            parts,
        };
        let placed = self.make_writable(&allocation, direct, Some(new_payload))?;
        let payload = if placed {
            Payload::Written
        } else if direct {
            // In the header before any long folio exists, so a kill during
            // the write leaves it there (see region/giveback.rs).
            self.record_write_piece(true);
            if let Err(source) = self.write_direct(allocation.extent, header_len, parts) {
                // Nothing points past the end of the chain yet; what was
                // written stays in the page cache there, as a freed
                // extent's would.
                self.note_long_folios(allocation.extent);
                self.space.undo_tail(allocation.extent);
                self.record_write_piece(false);
                return Err(self.io_error("pwrite", source));
            }
            Payload::Written
        } else {
            Payload::Parts(parts)
        };
        let header = LiveHeader {
            extent_len: allocation.extent.len,
            slot: slot as u32,
            generation: self.next_generation as u32,
            payload_len,
            engine,
            // Computed by the next `sync`, if the slot lives that long.
            payload_crc: None,
            user_tag,
        };
        let live = self.commit(&allocation, header, payload);
        if direct {
            self.record_write_piece(false);
        }
        let index = self.slots.occupy(live);
        debug_assert_eq!(index, slot);
        self.accounting.add(&live);
        self.note_header_change();
        self.note_unsummed(slot as u32, live.generation);
        self.keep_budget(live.extent_len);
        self.check_stores()?;
        Ok(slot)
    }

    /// After an operation's stores: if a `pwrite` store failed
    /// (`Mapping::set_pwrite_stores`), the file may not hold what memory
    /// says (a tag not stored, a payload half written), so the operation
    /// reports the error and the region refuses every later write, free,
    /// sync and compaction (`refuse_after_failed_store`). Reopening it
    /// runs recovery on what the file holds: every acknowledged operation
    /// is there, since none was acknowledged after the failure.
    #[inline]
    fn check_stores(&self) -> Result<()> {
        match self.mapping.store_failed() {
            None => Ok(()),
            Some(_) => self.report_failed_store(),
        }
    }

    /// The slow part of `check_stores`.
    #[cold]
    fn report_failed_store(&self) -> Result<()> {
        if let Some(source) = self.mapping.take_store_error() {
            tracing::error!(path = %self.path.display(), %source, "a store into the file failed; the region refuses changes until it is reopened");
            return Err(self.io_error("pwrite", source));
        }
        Ok(())
    }

    /// `Err` once a store has failed (`check_stores`; no store is made
    /// after it: `Mapping::store_failed`).
    fn refuse_after_failed_store(&self) -> Result<()> {
        match self.mapping.store_failed() {
            None => Ok(()),
            Some(kind) => Err(self.io_error(
                "pwrite",
                io::Error::new(
                    kind,
                    "an earlier store into the file failed: the region refuses changes until it is reopened",
                ),
            )),
        }
    }

    /// Whether `write_direct` writes the payload of `allocation`: a long
    /// extent at the end of the region (`Settings::direct_min`; the check
    /// against the constant first keeps short writes at one comparison).
    fn writes_direct(&self, allocation: &Allocation) -> bool {
        let len = allocation.extent.len;
        allocation.from_tail && len >= DIRECT_MIN && len >= self.settings.direct_min()
    }

    /// Writes the payload of a long extent at the end of the region, whose
    /// pages `warm_tail` left alone, with `pwrite`: one copy, where zeros
    /// ahead and then a copy through the mapping would be two, plus a fault
    /// per page. The middle, from the first multiple of the write piece
    /// past the header to the last one in the extent, goes in calls of up
    /// to `MAX_WRITE_PIECE`, so the page cache keeps it in long folios; each
    /// end goes in a call of its own, so no folio crosses the multiples
    /// where a hole punched after a free may start or end (see
    /// region/giveback.rs). The part `warm_tail` wrote zeros into before is
    /// copied through the mapping.
    ///
    /// A failed call is an error, not a fallback to stores through the
    /// mapping: those could fault where `pwrite` reported `ENOSPC`. It runs
    /// before `commit`, so the caller can still undo the allocation.
    fn write_direct(&mut self, extent: Extent, header_len: u64, parts: &[&[u8]]) -> io::Result<()> {
        let piece = self.settings.write_piece();
        let payload_offset = extent.offset + header_len;
        let payload_len: u64 = parts.iter().map(|part| part.len() as u64).sum();
        let payload_end = payload_offset + payload_len;
        let middle = (
            payload_offset.next_multiple_of(piece).min(payload_end),
            (extent.end() / piece * piece).clamp(payload_offset, payload_end),
        );
        let warm = self.policy.warm_end.clamp(payload_offset, payload_end);
        let mut at = warm;
        while at < payload_end {
            let to = if at < middle.0 {
                middle.0
            } else if at < middle.1 {
                (at + 1).next_multiple_of(MAX_WRITE_PIECE).min(middle.1)
            } else {
                payload_end
            };
            for (within, bytes) in part_ranges(parts, at - payload_offset, to - payload_offset) {
                self.mapping.write_bytes(payload_offset + within, bytes)?;
            }
            at = to;
        }
        self.policy.warm_end = self.policy.warm_end.max(payload_end);
        for (within, bytes) in part_ranges(parts, 0, warm.saturating_sub(payload_offset)) {
            self.mapping.store_bytes(payload_offset + within, bytes);
        }
        Ok(())
    }

    /// Writes a live extent into `allocation` and commits it. The stores
    /// follow the order in docs/FORMAT.md ("write"): everything before the
    /// live tag, which is the commit point.
    fn commit(
        &mut self,
        allocation: &Allocation,
        header: LiveHeader,
        payload: Payload<'_>,
    ) -> LiveSlot {
        let extent = allocation.extent;
        debug_assert_eq!(extent.len, header.extent_len);
        if allocation.from_tail && extent.end() + 8 <= self.mapping.len() {
            self.mapping.store_word(extent.end(), Tag::End.encode());
        }
        if let Some(remainder) = allocation.remainder {
            self.mapping
                .store_word(remainder.offset, Tag::Free { len: remainder.len }.encode());
        }
        let header_len = header.header_len();
        let payload_offset = extent.offset + header_len;
        let (live_tag, encoded) = header.encode(&mut self.live_tags);
        // Two fixed lengths, so neither copy is a call to `memcpy`.
        if header_len == EXTENT_HEADER_LEN {
            self.mapping.store_bytes(extent.offset + 8, &encoded[..24]);
        } else {
            self.mapping.store_bytes(extent.offset + 8, &encoded[..32]);
        }
        match payload {
            Payload::Written => {}
            Payload::Parts(parts) => {
                let mut at = payload_offset;
                for part in parts {
                    self.mapping.store_bytes(at, part);
                    at += part.len() as u64;
                }
            }
            Payload::Within { offset } => {
                self.mapping
                    .copy_in_file(offset, payload_offset, header.payload_len);
            }
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        self.mapping
            .store_word(NEXT_GENERATION_OFFSET, self.next_generation);
        if header.slot as usize == self.slots.len() {
            self.mapping
                .store_word(SLOT_HIGH_WATER_OFFSET, u64::from(header.slot) + 1);
        }
        self.mapping.store_word(extent.offset, live_tag);
        // After the commit: a chain end stored before it, with the end mark
        // still at `offset`, would send the walk scanning the uncommitted
        // payload for headers (docs/FORMAT.md, "write").
        if allocation.from_tail {
            self.mapping.store_word(CHAIN_END_OFFSET, extent.end());
        }
        self.policy.auto.note_written(header.slot, extent);
        LiveSlot::new(extent, &header)
    }

    /// The bytes of a slot: exactly the bytes its `write` took, as a slice of
    /// the mapping (no copy).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSlot`] for an index never handed out,
    /// [`Error::SlotFree`] for a freed one.
    ///
    /// # Time complexity
    ///
    /// O(1).
    #[inline]
    pub fn read(&self, slot_index: usize) -> Result<&[u8]> {
        let (offset, len) = self
            .slots
            .payload(slot_index)
            .map_err(|lookup| self.slot_error(slot_index, lookup))?;
        Ok(self
            .mapping
            .bytes(offset, len)
            .expect("live extents lie inside the file"))
    }

    /// The engine that wrote a slot.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn engine(&self, slot_index: usize) -> Result<EngineId> {
        Ok(self.live_slot(slot_index)?.engine)
    }

    /// The tag a slot was written with ([`write_tagged`](Self::write_tagged);
    /// 0 for [`write`](Self::write)).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn tag(&self, slot_index: usize) -> Result<u64> {
        let slot = self.live_slot(slot_index)?;
        Ok(self.user_tag(&slot))
    }

    /// Reads every live slot's payload and checks it against the checksum
    /// in its header: the full check that recovery leaves out for a file
    /// last written on this boot (see [`RecoveryReport`]). Slots written
    /// since the last [`sync`](Self::sync) have no checksum yet (`sync`
    /// computes them): they are counted in
    /// [`VerifyReport::slots_unsummed`], not checked. `progress` is called
    /// after each slot with the live payload bytes covered so far and in
    /// all. Nothing is changed: a damaged slot is reported, and stays
    /// readable until the caller frees it (a reopen after a reboot drops
    /// it).
    ///
    /// ```
    /// use overflow_region::{EngineId, OverflowRegion};
    ///
    /// # fn main() -> overflow_region::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut region = OverflowRegion::open_with_config(&dir.path().join("r"), 1 << 20, 16 << 20)?;
    /// region.write(&[7u8; 5000], EngineId::Query)?;
    /// assert_eq!(region.verify(|_, _| {}).slots_unsummed, 1);
    /// region.sync()?;
    /// let mut calls = 0;
    /// let report = region.verify(|_done, _total| calls += 1);
    /// assert!(report.damaged.is_empty());
    /// assert_eq!((report.slots_checked, report.bytes_checked, calls), (1, 5000, 1));
    /// assert_eq!(report.slots_unsummed, 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Time complexity
    ///
    /// O(live payload bytes): one read and one CRC32C of each.
    pub fn verify(&self, mut progress: impl FnMut(u64, u64)) -> VerifyReport {
        let total = self.accounting.live_bytes();
        let mut report = VerifyReport::default();
        let mut covered = 0;
        for (index, slot) in self.slots.iter_live() {
            covered += slot.payload_len;
            let header = self
                .mapping
                .bytes(slot.offset, slot.header_len())
                .expect("live extents lie inside the file");
            let payload = self
                .mapping
                .bytes(slot.payload_offset(), slot.payload_len)
                .expect("live extents lie inside the file");
            let header = LiveHeader::decode(header);
            if let Ok(LiveHeader {
                payload_crc: None, ..
            }) = header
            {
                report.slots_unsummed += 1;
                progress(covered, total);
                continue;
            }
            let computed = checksum::crc32c(payload);
            match header {
                Ok(header) if header.payload_crc == Some(computed) => {}
                Ok(header) => report.damaged.push(DamagedSlot {
                    slot: index,
                    stored: header.payload_crc,
                    computed,
                }),
                Err(_) => report.damaged.push(DamagedSlot {
                    slot: index,
                    stored: None,
                    computed,
                }),
            }
            report.slots_checked += 1;
            report.bytes_checked += slot.payload_len;
            progress(covered, total);
        }
        report
    }

    /// The user tag of a live slot, from its extent (not kept in memory).
    fn user_tag(&self, slot: &LiveSlot) -> u64 {
        if !slot.tagged {
            return 0;
        }
        self.mapping
            .load_word(slot.offset + EXTENT_HEADER_LEN)
            .expect("live extents lie inside the file")
    }

    /// Every live slot with its engine, tag and payload length, in index
    /// order, without reading any payload: after a restart, this is how an
    /// engine finds its data again (and rebuilds its own key map from the
    /// tags).
    ///
    /// ```
    /// use overflow_region::{EngineId, OverflowRegion};
    ///
    /// # fn main() -> overflow_region::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("core-0");
    /// let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 16 << 20)?;
    /// region.write_tagged(b"partition 3", EngineId::Query, 3)?;
    /// region.write_tagged(b"partition 9", EngineId::Query, 9)?;
    /// drop(region);
    ///
    /// let region = OverflowRegion::open_with_config(&path, 1 << 20, 16 << 20)?;
    /// let by_tag: std::collections::HashMap<u64, usize> =
    ///     region.live_slots().map(|entry| (entry.tag, entry.slot)).collect();
    /// assert_eq!(region.read(by_tag[&9])?, b"partition 9");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Time complexity
    ///
    /// O(slot indices handed out) for the whole walk: one step per index,
    /// and one 8-byte load from the mapping per tagged slot.
    pub fn live_slots(&self) -> impl Iterator<Item = SlotEntry> + '_ {
        self.slots.iter_live().map(|(slot, live)| SlotEntry {
            slot,
            engine: live.engine,
            tag: self.user_tag(&live),
            len: live.payload_len as usize,
        })
    }

    /// The bytes a [`SlotRef`] names, as [`read`](Self::read) gives them,
    /// only if the slot still holds the write the handle was made for:
    /// an engine that keeps handles instead of bare indices never reads a
    /// later tenant of a reused index.
    ///
    /// ```
    /// use overflow_region::{EngineId, Error, OverflowRegion};
    ///
    /// # fn main() -> overflow_region::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut region = OverflowRegion::open_with_config(&dir.path().join("r"), 1 << 20, 16 << 20)?;
    /// let slot = region.write(b"first", EngineId::Query)?;
    /// let handle = region.slot_ref(slot)?;
    /// assert_eq!(region.read_ref(&handle)?, b"first");
    /// region.free(slot)?;
    /// assert_eq!(region.write(b"later", EngineId::Query)?, slot);
    /// assert!(matches!(region.read_ref(&handle), Err(Error::SlotChanged { .. })));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::SlotChanged`] if the slot was freed, reused or moved by
    /// compaction since the handle was made, or the handle belongs to
    /// another file. A slot that moved and still holds the same bytes says
    /// so (`moved: true`, as long as its old place was not written again):
    /// [`slot_ref`](Self::slot_ref) gives a handle to the new place.
    ///
    /// # Time complexity
    ///
    /// O(1).
    pub fn read_ref(&self, handle: &SlotRef) -> Result<&[u8]> {
        let changed = |reason: &'static str| Error::SlotChanged {
            slot: handle.slot(),
            generation: handle.generation,
            reason,
            moved: false,
        };
        if handle.file != self.identity {
            return Err(changed("the handle belongs to another region file"));
        }
        let slot = match self.slots.get(handle.slot()) {
            Ok(slot) => slot,
            Err(_) => return Err(changed("it was freed")),
        };
        if widen_generation(slot.generation, self.next_generation) != handle.generation
            || slot.offset != handle.offset
            || slot.payload_len != handle.payload_len
        {
            if self.moved_from(handle) == Some(slot.generation) {
                return Err(Error::slot_moved(handle.slot(), handle.generation));
            }
            return Err(changed("its index now holds another write"));
        }
        Ok(self
            .mapping
            .bytes(slot.payload_offset(), slot.payload_len)
            .expect("live extents lie inside the file"))
    }

    /// If the place `handle` names holds the mark compaction leaves at the
    /// old place of a slot it moved (`layout::moved_from`): the generation
    /// of the copy. Reads nothing past the end of the region or in a
    /// punched hole (where on tmpfs even a read needs a new page).
    fn moved_from(&self, handle: &SlotRef) -> Option<u32> {
        let (start, end) = (handle.offset, handle.offset.checked_add(EXTENT_HEADER_LEN)?);
        if end > self.space.cursor()
            || self
                .policy
                .holes
                .next_from(start)
                .is_some_and(|hole| hole < end)
        {
            return None;
        }
        let header = self.mapping.bytes(start, EXTENT_HEADER_LEN)?;
        if LiveHeader::decode(header).is_ok() {
            return None;
        }
        layout::moved_from(header, handle.slot, handle.generation as u32)
    }

    /// Frees a slot: its index will be handed out again and its extent is
    /// merged with free neighbours, or given back to the end of the region.
    /// When `free` returns, the slot is gone even if the process crashes.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSlot`] for an index never handed out,
    /// [`Error::SlotFree`] for one already freed (a double free); the region
    /// is unchanged. Where the region stores with `pwrite` (see
    /// [`write`](Self::write)), [`Error::Io`] if a store fails: the slot was
    /// freed in memory all the same, and the region refuses every later
    /// write, free, sync and compaction until it is reopened.
    ///
    /// # Time complexity
    ///
    /// O(1), plus the disk it gives back: when the freed extent completes a
    /// batch of free pages waiting to be punched, every range waiting is
    /// punched (see
    /// [`MemoryTuning::overflow_punch_hole_bytes`](crate::MemoryTuning::overflow_punch_hole_bytes)),
    /// the middle of a long extent is punched at once, and when the end of
    /// the region moves down the file may be truncated or its tail punched.
    /// Automatic compaction may add a step, as in [`write`](Self::write).
    pub fn free(&mut self, slot_index: usize) -> Result<()> {
        self.refuse_after_failed_store()?;
        // Only `free_many` defers punching; a panic inside one (its owner
        // may go on, as a `SpillDir` does with a poisoned lock) must not
        // leave every later free deferring.
        self.policy.punch_after_frees = None;
        let extent_len = self.free_slot(slot_index)?;
        self.keep_budget(extent_len);
        self.check_stores()
    }

    /// Frees every slot of `slots`, as [`free`](Self::free) would one by
    /// one, but gives their space back together: the pages waiting to be
    /// punched are punched once, after the last, where `free` would punch
    /// the middle of each long extent at once. Freeing the many slots of
    /// one spill run this way makes one cut, and one write-back before it,
    /// at each end of the space they leave, rather than two per slot. Where
    /// the run ends the region, its space goes back as the tail does after
    /// `free` (see [`MemoryTuning::overflow_slack_percent`](crate::MemoryTuning::overflow_slack_percent)),
    /// and the middles of long extents in it are punched.
    ///
    /// ```
    /// # use overflow_region::{EngineId, OverflowRegion};
    /// # let dir = tempfile::tempdir()?;
    /// let mut region = OverflowRegion::open(&dir.path().join("spill"))?;
    /// let run: Vec<usize> = (0..8)
    ///     .map(|i| region.write(&vec![i as u8; 256 << 10], EngineId::Query))
    ///     .collect::<Result<_, _>>()?;
    /// region.free_many(&run)?;
    /// assert_eq!(region.live_slot_count(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A slot `free` would refuse ([`Error::UnknownSlot`],
    /// [`Error::SlotFree`], a slot listed twice) is passed over: the others
    /// are freed, and then the first such error is returned. [`Error::Io`]
    /// as for `free`, if a store fails: the slots before it were freed, and
    /// the region refuses every later change (the rest among them) until it
    /// is reopened.
    ///
    /// # Time complexity
    ///
    /// O(`slots.len()`), plus the disk it gives back, as for `free`.
    /// Automatic compaction takes one step after the last free, for the
    /// bytes of them all (within its bound per step), where `free` takes
    /// one after each.
    pub fn free_many(&mut self, slots: &[usize]) -> Result<()> {
        self.refuse_after_failed_store()?;
        self.policy.punch_after_frees = Some(false);
        let mut freed_bytes = 0;
        let mut refused = None;
        for &slot_index in slots {
            match self.free_slot(slot_index) {
                Ok(extent_len) => freed_bytes += extent_len,
                Err(error) => {
                    refused.get_or_insert(error);
                }
            }
            if self.mapping.store_failed().is_some() {
                break;
            }
        }
        if self.policy.punch_after_frees.take() == Some(true) {
            self.punch_pending();
            // Middles of long extents the run left past a lowered end: `free`
            // would have punched those before the end came down to them
            // (found in review: left alone, they stayed long folios, the
            // header's `LONG_FOLIOS` bit set).
            self.give_back_long_folio_tail();
        }
        self.keep_budget(freed_bytes);
        self.check_stores()?;
        refused.map_or(Ok(()), Err)
    }

    /// The part of `free` and `free_many` that frees one slot: the slot
    /// table, the accounting and the extent. Returns the extent's length.
    fn free_slot(&mut self, slot_index: usize) -> Result<u64> {
        let handed_out = self.slots.len();
        let slot = self
            .slots
            .vacate(slot_index)
            .map_err(|lookup| self.slot_error(slot_index, lookup))?;
        if self.slots.len() < handed_out {
            // A far slot kept apart at reopen was the highest index: the
            // header's counter follows the table down.
            self.mapping
                .store_word(SLOT_HIGH_WATER_OFFSET, self.slots.len() as u64);
        }
        self.accounting.remove(&slot);
        self.note_header_change();
        self.free_extent(slot.extent());
        self.free_retired(slot_index);
        Ok(slot.extent_len)
    }

    /// Marks a live extent free on disk (the commit point: one tag store),
    /// then merges it with its free neighbours or gives it back to the end,
    /// and gives disk space back where that is worth it.
    fn free_extent(&mut self, extent: Extent) {
        self.note_long_folios(extent);
        self.mapping
            .store_word(extent.offset, Tag::Free { len: extent.len }.encode());
        let after = self.free_extent_at(extent.end());
        match self.space.release(extent, after) {
            Released::Free(merged) => {
                if merged != extent {
                    self.mapping
                        .store_word(merged.offset, Tag::Free { len: merged.len }.encode());
                }
                self.policy.compact_from = self.policy.compact_from.min(merged.offset);
                self.punch_free_extent(extent, merged);
            }
            Released::Retracted { cursor } => {
                // The tail past the cursor is given back below, or kept as
                // headroom: either way not punched piecemeal.
                self.policy.pending_punch.take(cursor, u64::MAX);
                // The chain end first: a kill between the two stores then
                // leaves free extents up to the old end mark, which the
                // walk follows (docs/FORMAT.md, "free").
                self.mapping.store_word(CHAIN_END_OFFSET, cursor);
                self.mapping.store_word(cursor, Tag::End.encode());
                self.policy.compact_from = self.policy.compact_from.min(cursor);
                self.give_back_tail();
            }
        }
    }

    /// The free extent that starts at `offset`, if one does: its tag in the
    /// file says how long it is, and the free index confirms it (the index
    /// finds free extents by their end only: `Space::free_extent`). Every
    /// free extent's tag holds its whole length: `free_extent` stores the
    /// merged extent's, `commit` a remainder's, and recovery writes one tag
    /// over a run a crash left apart. That page is never punched. Nothing at
    /// or past the cursor is read (no free extent lies there, and the tail
    /// past it may be punched: on tmpfs even reading a punched page takes a
    /// new one).
    fn free_extent_at(&self, offset: u64) -> Option<Extent> {
        if offset >= self.space.cursor() {
            return None;
        }
        match Tag::decode(self.mapping.load_word(offset)?) {
            Some(Tag::Free { len }) => self.space.free_extent(offset, len),
            _ => None,
        }
    }

    /// Flushes every write and free so far to stable storage (`msync` of the
    /// mapping, then `fsync` of the file). After it returns they survive
    /// power loss.
    ///
    /// # Cost
    ///
    /// First it computes the payload checksum of every slot written (or
    /// moved) since the last `sync` and still live: O(those slots + their
    /// payload bytes). Their payloads are read through the mapping, so one
    /// the kernel already wrote back and evicted is read from disk again.
    /// Dropping the region does the same (but for an ephemeral
    /// [`SpillDir`](crate::SpillDir)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the kernel reports a write-back failure, here or in
    /// a write-back the region did since the last `sync` (before cutting a
    /// long folio: docs/FORMAT.md, "giving space back").
    /// [`Error::PathReplaced`] if everything was flushed but the region's
    /// path no longer names its file (unlinked, renamed away or replaced
    /// while open: the writer's lock is on the file, not the path, so
    /// another writer may have created a new file there). The data is safe
    /// in the open file only, and is lost when the region is dropped.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        // Durable, but reachable? The lock is on the inode: after an unlink
        // or rename another writer can open a new file at the path.
        match Inode::at(&self.path) {
            Ok(inode) if inode == self.inode => {
                self.write_header_map(false);
                Ok(())
            }
            Ok(_) => Err(Error::PathReplaced {
                path: self.path.clone(),
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Err(Error::PathReplaced {
                path: self.path.clone(),
            }),
            Err(source) => Err(self.io_error("stat", source)),
        }
    }

    /// Bytes from the start of the data area to the end of the last extent
    /// (headers, payloads, slack and free extents in between). It goes down
    /// when the last extents are freed; it is 0 for an empty region.
    pub fn used_bytes(&self) -> usize {
        (self.space.cursor() - DATA_START) as usize
    }

    /// Sum of the payload lengths of the live slots.
    pub fn live_bytes(&self) -> usize {
        self.accounting.live_bytes() as usize
    }

    /// A handle to a live slot that an [`OverflowReader`](crate::OverflowReader)
    /// in another thread or process can read, and that stops reading once
    /// the slot is freed or reused.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn slot_ref(&self, slot_index: usize) -> Result<SlotRef> {
        let slot = self.live_slot(slot_index)?;
        Ok(SlotRef {
            file: self.identity,
            slot: slot_index as u32,
            generation: widen_generation(slot.generation, self.next_generation),
            offset: slot.offset,
            payload_len: slot.payload_len,
        })
    }

    /// Lists a slot just written (or moved) without its payload checksum,
    /// first pruning the list of entries whose slot no longer has that
    /// generation if it has grown past twice the live slots (plus a
    /// constant), so a region that is never synced keeps it bounded: O(1)
    /// amortised, from the slot table alone.
    fn note_unsummed(&mut self, index: u32, generation: u32) {
        if self.sums_at_write {
            self.sum_slot(index, generation);
            return;
        }
        let slots = &self.slots;
        let unsummed = self.unsummed.get_mut();
        if unsummed.len() >= 2 * slots.live() + 1024 {
            unsummed.retain(|&(index, generation)| {
                slots
                    .get(index as usize)
                    .is_ok_and(|slot| slot.generation == generation)
            });
        }
        unsummed.push((index, generation));
    }

    /// Computes and stores the payload checksum of every listed slot that
    /// is still live with the generation listed and lacks one: `flush`
    /// does this before it syncs, so what a sync makes durable can be
    /// checked after a machine crash. O(listed slots + their payload
    /// bytes); a slot freed since its write costs nothing.
    fn sum_unsummed(&self) {
        let mut unsummed = self.unsummed.take();
        for &(index, generation) in &unsummed {
            self.sum_slot(index, generation);
        }
        unsummed.clear();
        self.unsummed.set(unsummed);
    }

    /// Computes and stores the payload checksum of slot `index` if it is
    /// live with `generation` and its header lacks one.
    fn sum_slot(&self, index: u32, generation: u32) {
        let Ok(live) = self.slots.get(index as usize) else {
            return;
        };
        if live.generation != generation {
            return;
        }
        let header = self
            .mapping
            .bytes(live.offset, live.header_len())
            .expect("live extents lie inside the file");
        // A header damaged in memory (another process wrote the file) is
        // left as it is, for recovery to drop.
        let Ok(
            header @ LiveHeader {
                payload_crc: None, ..
            },
        ) = LiveHeader::decode(header)
        else {
            return;
        };
        let payload = self
            .mapping
            .bytes(live.payload_offset(), live.payload_len)
            .expect("live extents lie inside the file");
        let word = header.checksum_word(checksum::crc32c(payload));
        self.mapping
            .store_checksum_word(live.offset + layout::CHECKSUM_WORD_OFFSET, word);
    }

    /// Counts an extent written, freed or moved against the header map.
    pub(super) fn note_header_change(&self) {
        let changes = &self.header_map_changes;
        changes.set(changes.get().saturating_add(1));
    }

    /// Writes the header map next to the file (`header_map`) if it is
    /// missing or an eighth of the extents changed since it was written,
    /// or at `closing` if anything did: O(extents log extents), so a
    /// `sync` pays it once per that many changes. A region of more than
    /// `header_map::MAX_EXTENTS` extents removes its map instead. Failure
    /// costs only a slower cold reopen, and is logged.
    fn write_header_map(&self, closing: bool) {
        let changes = self.header_map_changes.get();
        let extents = self.slots.live() + self.space.free_extent_count();
        if self.ephemeral
            || changes == 0
            || (!closing && changes.saturating_mul(8) < extents as u64)
        {
            return;
        }
        self.header_map_changes.set(0);
        let ranges = (extents <= header_map::MAX_EXTENTS).then(|| {
            let live = self
                .slots
                .iter_live()
                .map(|(_, live)| (live.offset, live.header_len()));
            let free = self.space.free_extents().map(|extent| (extent.offset, 8));
            header_map::ranges(live.chain(free).collect())
        });
        if let Err(error) = self.replace_header_map(ranges) {
            tracing::debug!(path = %self.path.display(), %error, "writing the header map failed");
        }
    }

    /// Writes the header map of `ranges` over the old one, or with `None`
    /// removes it. With a disk budget (a [`SpillDir`](crate::SpillDir)'s)
    /// the map's bytes are charged to it, the new map's before it is
    /// written (the old one is there until the new one is renamed over
    /// it); a map the budget cannot hold is not written, and the old one
    /// is removed with its bytes given back: a reopen without a map reads
    /// the same headers, one page at a time.
    fn replace_header_map(&self, ranges: Option<Vec<(u32, u32)>>) -> io::Result<()> {
        let Some(budget) = &self.policy.disk_budget else {
            return match ranges {
                Some(ranges) => header_map::write(&self.path, self.identity, &ranges),
                None => header_map::remove(&self.path),
            };
        };
        let old = self.header_map_charged.get();
        let written = match ranges {
            Some(ranges) => {
                let new = header_map::encoded_len(ranges.len());
                match budget.charge(new) {
                    Ok(()) => match header_map::write(&self.path, self.identity, &ranges) {
                        Ok(()) => {
                            budget.release(old);
                            self.header_map_charged.set(new);
                            return Ok(());
                        }
                        Err(error) => {
                            budget.release(new);
                            Err(error)
                        }
                    },
                    Err(charged) => Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!(
                            "a header map of {new} bytes does not fit the disk budget of {} \
                             bytes ({charged} in use)",
                            budget.limit()
                        ),
                    )),
                }
            }
            None => Ok(()),
        };
        // No new map: the old one (stale now) goes, and its bytes with it.
        header_map::remove(&self.path)?;
        budget.release(old);
        self.header_map_charged.set(0);
        written
    }

    /// The durable part of [`sync`](Self::sync), without the check of the
    /// path: payload checksums first, so everything it makes durable can be
    /// checked after a machine crash.
    fn flush(&self) -> Result<()> {
        self.refuse_after_failed_store()?;
        self.sum_unsummed();
        self.check_stores()?;
        self.mapping
            .sync()
            .map_err(|source| self.io_error("msync/fsync", source))?;
        match self.write_back_error.take() {
            Some(source) => Err(self.io_error("sync_file_range", source)),
            None => {
                self.policy.auto.note_flush();
                Ok(())
            }
        }
    }

    /// Live slots and bytes per engine, free extents and bytes, the largest
    /// free extent, slack, file size.
    ///
    /// # Time complexity
    ///
    /// O(1) but for the largest free extent, which walks one size class of
    /// free extents (extents within 1/32 of each other's length).
    pub fn stats(&self) -> RegionStats {
        let live_slots = self.slots.live() as u64;
        RegionStats {
            engines: self.accounting.engines,
            live_slots,
            live_bytes: self.accounting.live_bytes(),
            slot_count: self.slots.len() as u64,
            free_extents: self.space.free_extent_count() as u64,
            free_bytes: self.space.free_bytes(),
            largest_free_extent: self.space.largest_free().unwrap_or(0),
            slack_bytes: self.accounting.slack_bytes,
            header_bytes: self.accounting.header_bytes,
            punched_bytes: self.policy.holes.bytes(),
            used_bytes: self.space.cursor() - DATA_START,
            file_size: self.mapping.len(),
            auto_moved_extents: self.policy.auto.moved_extents,
            auto_moved_bytes: self.policy.auto.moved_bytes,
            retired_bytes: self.policy.auto.retired().map(|extent| extent.len).sum(),
            max_capacity: self.space.limit(),
        }
    }

    /// Number of slot indices handed out, occupied or freed.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Number of slots that hold data.
    pub fn live_slot_count(&self) -> usize {
        self.slots.live()
    }

    /// The file's current size in bytes.
    pub fn capacity(&self) -> usize {
        self.mapping.len() as usize
    }

    /// The size the file never grows past (the configured maximum, rounded
    /// down to a page).
    pub fn max_capacity(&self) -> usize {
        self.space.limit() as usize
    }

    /// The region file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the last open found: slots recovered, extents dropped and why,
    /// bytes scanned, repairs made, time taken.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Walks the whole file and checks that it agrees with the in-memory
    /// state: every live slot, every free extent, the end of the chain, and
    /// the internal indexes. Meant for tests and tools; O(file size).
    ///
    /// # Errors
    ///
    /// A description of the first disagreement found.
    ///
    /// # Panics
    ///
    /// If the free-space index contradicts itself (its own walk asserts its
    /// invariants): that is a bug in this crate, not in the file.
    pub fn check_consistency(&self) -> std::result::Result<(), String> {
        self.space.check_consistency();
        self.slots.check_consistency()?;
        let file = self
            .mapping
            .bytes(0, self.mapping.len())
            .expect("the whole file is in bounds");
        let counters =
            layout::decode_file_header(file).map_err(|error| format!("file header: {error:?}"))?;
        if counters.slot_high_water != self.slots.len() as u64 {
            return Err(format!(
                "the file header counts {} slot indices, the region {}",
                counters.slot_high_water,
                self.slots.len()
            ));
        }
        let walked = recovery::recover(
            &mut recovery::Bytes(file),
            counters,
            Space::new(DATA_START, self.space.limit(), MIN_SPLIT),
            recovery::Checks {
                verify_payloads: true,
                keep_unsummed: true,
            },
        )
        .expect("a walk over memory cannot fail");
        // The old places of moved slots that wait for a sync are live on
        // disk: the walk finds them as older copies, to be freed.
        let by_offset = |mut extents: Vec<Extent>| {
            extents.sort_by_key(|extent| extent.offset);
            extents
        };
        let older_copies = by_offset(walked.to_free.clone());
        let retired = by_offset(self.policy.auto.retired().collect());
        if older_copies != retired {
            return Err(format!(
                "older copies in the file {older_copies:?}, waiting for a sync {retired:?}"
            ));
        }
        if !walked.report.dropped.is_empty() || !walked.repairs.is_empty() {
            return Err(format!(
                "the file needs recovery: dropped {:?}, repairs {:?}",
                walked.report.dropped, walked.repairs
            ));
        }
        if walked.space.cursor() != self.space.cursor() {
            return Err(format!(
                "the file's chain ends at {}, the region's cursor is {}",
                walked.space.cursor(),
                self.space.cursor()
            ));
        }
        let on_disk = by_offset(walked.space.free_extents().collect());
        let in_memory = by_offset(self.space.free_extents().collect());
        if on_disk != in_memory {
            return Err(format!(
                "free extents differ: file {on_disk:?}, memory {in_memory:?}"
            ));
        }
        if walked.slots.live() != self.slots.live() {
            return Err(format!(
                "the file holds {} live slots, the region {}",
                walked.slots.live(),
                self.slots.live()
            ));
        }
        for (index, found) in walked.slots.iter_live() {
            let slot = self.slots.get(index).map_err(|lookup| {
                format!("slot {index} is live in the file but {lookup:?} in memory")
            })?;
            if slot.extent() != found.extent() || slot.payload_len != found.payload_len {
                return Err(format!("slot {index}: file has {found:?}, memory {slot:?}"));
            }
        }
        // A walk trusts the stored count only as far as the extents it
        // finds vouch for (docs/FORMAT.md, step 5 of recovery): after many
        // frees it forgets the freed indices past the highest live one.
        if walked.slots.len() > self.slots.len()
            || (walked.slots.len() < self.slots.len()
                && self
                    .slots
                    .iter_live()
                    .any(|(index, _)| index >= walked.slots.len()))
        {
            return Err(format!(
                "the file counts {} slot indices, the region {}",
                walked.slots.len(),
                self.slots.len()
            ));
        }
        if let Some((start, end)) = self
            .policy
            .pending_punch
            .iter()
            .find(|&(start, end)| self.policy.holes.overlaps(start, end))
        {
            return Err(format!(
                "pages {start}..{end} wait to be punched, but part of them is punched already"
            ));
        }
        Ok(())
    }

    fn live_slot(&self, slot_index: usize) -> Result<LiveSlot> {
        self.slots
            .get(slot_index)
            .map_err(|lookup| self.slot_error(slot_index, lookup))
    }

    #[cold]
    fn slot_error(&self, slot: usize, lookup: SlotLookup) -> Error {
        match lookup {
            SlotLookup::Unknown => Error::UnknownSlot {
                slot,
                slot_count: self.slots.len(),
            },
            SlotLookup::Free => Error::SlotFree { slot },
        }
    }

    fn capacity_exceeded(&self, requested: u64) -> Error {
        Error::CapacityExceeded {
            requested,
            extent: layout::extent_len_for(requested, EXTENT_HEADER_LEN).unwrap_or(u64::MAX),
            available: self.space.limit() - self.space.cursor(),
            max_capacity: self.space.limit(),
        }
    }

    fn io_error(&self, operation: &'static str, source: io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            operation,
            source,
        }
    }

    /// Marks the region as one whose file is removed once it is dropped (a
    /// `SpillDir` in ephemeral mode), so dropping it skips the work that
    /// only a file that stays needs.
    pub(crate) fn set_ephemeral(&mut self) {
        self.ephemeral = true;
    }

    /// The file the region holds (its path named it when the region took
    /// its lock).
    pub(crate) fn inode(&self) -> Inode {
        self.inode
    }

    /// Makes the region charge a shared disk budget for its file and its
    /// header map from now on (a [`SpillDir`](crate::SpillDir)'s): both as
    /// they are now are charged whatever the limit, the file's growth and
    /// each new map only while they fit.
    pub(crate) fn attach_budget(&mut self, budget: Arc<DiskBudget>) {
        let map = header_map::len_on_disk(&self.path);
        budget.charge_existing(self.mapping.len() + map);
        self.header_map_charged.set(map);
        self.policy.disk_budget = Some(budget);
    }
}

/// What [`OverflowRegion::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Live slots whose payload was read.
    pub slots_checked: u64,
    /// Live slots written since the last [`sync`](OverflowRegion::sync),
    /// whose checksum is not computed yet: not checked (the next `sync`
    /// computes their checksums).
    pub slots_unsummed: u64,
    /// Payload bytes read and checked.
    pub bytes_checked: u64,
    /// Slots whose bytes do not match their checksum (or whose header no
    /// longer checks out), by index.
    pub damaged: Vec<DamagedSlot>,
}

/// A slot [`OverflowRegion::verify`] found damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DamagedSlot {
    /// The slot index.
    pub slot: usize,
    /// The payload checksum its header holds (`None` if the header itself
    /// is damaged).
    pub stored: Option<u32>,
    /// The checksum of the bytes found.
    pub computed: u32,
}

/// One live slot, as [`OverflowRegion::live_slots`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SlotEntry {
    /// The slot index.
    pub slot: usize,
    /// The engine that wrote it.
    pub engine: EngineId,
    /// The tag it was written with (0 for [`OverflowRegion::write`]).
    pub tag: u64,
    /// The payload's length in bytes.
    pub len: usize,
}

/// The whole pages that `start..end` touches: `start` rounded down and `end`
/// rounded up to a page.
fn pages_touching(start: u64, end: u64) -> (u64, u64) {
    let page = mapping::page_size();
    (start / page * page, end.next_multiple_of(page))
}

/// The full generation whose low 32 bits are `low`: the most recent one
/// before `next` (headers keep only the low bits). For a slot written more
/// than 2^32 writes ago this is a later value with the same low bits, which
/// names the same tenant just as well: no write since has those low bits at
/// that place, or the slot would not be live.
fn widen_generation(low: u32, next: u64) -> u64 {
    let candidate = (next & !0xFFFF_FFFF) | u64::from(low);
    if candidate < next {
        candidate
    } else {
        candidate.wrapping_sub(1 << 32)
    }
}
