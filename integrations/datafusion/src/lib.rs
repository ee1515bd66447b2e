//! A [DataFusion] spill backend on per-core overflow regions.
//!
//! DataFusion's default disk manager creates one temporary file (and one
//! descriptor) per spill. [`OverflowSpillFactory`] puts every spill into
//! the regions of one [`SpillDir`] instead: one file per core, whatever the
//! number of spills, one disk budget for all of them, and nothing left
//! behind by a killed process once the directory is opened again in
//! [`SpillMode::Ephemeral`](overflow_region::SpillMode::Ephemeral).
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use datafusion_execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
//! use overflow_region::{MemoryTuning, SpillDir, SpillMode};
//! use overflow_region_datafusion::OverflowSpillFactory;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Spill files are written once, read once and dropped: keep no slack.
//! let tuning = MemoryTuning {
//!     overflow_initial_bytes: 1 << 20,
//!     overflow_max_bytes: 256 << 30,
//!     overflow_slack_percent: 0,
//!     ..MemoryTuning::default()
//! };
//! let spill = SpillDir::open(
//!     "/var/tmp/my-engine-spill".as_ref(),
//!     std::thread::available_parallelism()?.get(),
//!     &tuning,
//!     SpillMode::Ephemeral,
//!     64 << 30, // one disk budget for every core: 64 GiB
//! )?;
//! let factory = OverflowSpillFactory::new(Arc::new(spill));
//! let disk_manager = DiskManagerBuilder::default()
//!     .with_mode(DiskManagerMode::Custom(Arc::new(factory)))
//!     .build()?;
//! // Hand `disk_manager` to a `RuntimeEnvBuilder` (`with_disk_manager_builder`
//! // takes the builder instead).
//! # drop(disk_manager);
//! # Ok(())
//! # }
//! ```
//!
//! # How a spill file is stored
//!
//! A spill file is a chain of slots. Its writer gathers what DataFusion
//! writes into pieces of [`OverflowSpillFactory::DEFAULT_PIECE_BYTES`]
//! (a write at least that long goes straight into a slot, without the
//! copy) and writes each full piece as one slot; `flush` and `finish` write
//! what is gathered, so a reader of a file still being written (DataFusion's
//! spill pool) sees every flushed byte. Dropping the last handle to the
//! file frees its slots, each core's with one `free_many` (one lock, and
//! their space given back with one cut).
//!
//! # Which core a write goes to
//!
//! DataFusion moves tasks between threads, so a writer is not tied to a
//! core. Each file has a home core (files take the cores in turn); each
//! piece goes to the first core, starting from the file's home, whose lock
//! is free at that moment, and waits for the home core only when every core
//! is busy ([`SpillStats::lock_waits`] counts those waits). A piece the budget
//! refuses on one core, or that a region full to its maximum capacity
//! (`overflow_max_bytes`) cannot hold, is tried on the others before the
//! write fails, since another core may have room inside its file or under
//! its capacity. A file's pieces may so lie in several regions; it
//! remembers where each one is.
//!
//! # Reads
//!
//! [`read_stream`](SpillFile::read_stream) yields the file's pieces in
//! order, each copied out of its region under that core's lock into
//! [`Bytes`] of its own. The copy is deliberate: a slice of the mapping
//! handed to DataFusion would stay valid only while nobody frees, moves or
//! compacts under it, and the region cannot enforce that across its lock.
//! DataFusion's own file reads copy too (from the page cache into its
//! buffer). A piece whose pages were evicted is read from disk by page
//! faults on the polling thread, as a blocking read would.
//!
//! # The budget
//!
//! The directory's budget bounds the region files together. A spill that
//! would pass it, or that no core's region has room for under its maximum
//! capacity, fails with [`DataFusionError::ResourcesExhausted`], naming the
//! piece's size, the growth or extent it needed, the budget and the bytes in
//! use; nothing spilled before is lost. From `finish` that is the
//! error itself; from a write (inside DataFusion's `std::io::Write`),
//! DataFusion wraps it, and [`DataFusionError::find_root`] returns it. DataFusion's
//! own `max_temp_directory_size` does not apply to a custom factory.
//!
//! # Tuning
//!
//! Open the directory with `overflow_slack_percent: 0`: a spill file is
//! written once, read once and dropped, so freed space is given back at once
//! and the files grow by what each piece needs, holding nothing ahead. With the regions' default of 10 %
//! the ORDER BY of the `spill_sort` example peaked 6 % higher on disk
//! (docs/DATAFUSION.md in the source repository).
//!
//! [DataFusion]: https://datafusion.apache.org

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use datafusion_common::{DataFusionError, Result};
use datafusion_execution::spill_file::{SpillFile, SpillWriter, TempFileFactory};
use futures::Stream;
use overflow_region::{CoreRegion, EngineId, SpillDir};

/// A [`TempFileFactory`] that stores DataFusion's spill files in the
/// regions of a [`SpillDir`]. See the [crate documentation](crate).
#[derive(Debug, Clone)]
pub struct OverflowSpillFactory {
    shared: Arc<Shared>,
}

/// What the factory and its files share.
#[derive(Debug)]
struct Shared {
    dir: Arc<SpillDir>,
    piece_bytes: usize,
    /// Number of files created so far; the next file's id (and tag).
    next_file: AtomicU64,
    files_live: AtomicU64,
    pieces_written: AtomicU64,
    bytes_written: AtomicU64,
    lock_waits: AtomicU64,
    free_errors: AtomicU64,
}

/// Counters of an [`OverflowSpillFactory`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpillStats {
    /// Spill files created.
    pub files_created: u64,
    /// Spill files not dropped yet.
    pub files_live: u64,
    /// Pieces (slots) written.
    pub pieces_written: u64,
    /// Bytes written into pieces.
    pub bytes_written: u64,
    /// Pieces that found no core free to take them at once (every lock
    /// taken, or the budget reached, or the regions full) and waited for a
    /// lock: the contention between writers, when neither the budget nor
    /// the regions' capacity is the cause.
    pub lock_waits: u64,
    /// Times a dropped file could not free all of its pieces in one core's
    /// region (the region refused a free; never seen in the tests). Their
    /// space stays in use until the directory is opened again in ephemeral
    /// mode.
    pub free_errors: u64,
}

impl OverflowSpillFactory {
    /// Bytes a writer gathers before it writes them as one slot: 1 MiB.
    /// Smaller pieces cost more slots and lock round trips, larger ones
    /// more memory per open writer (docs/DATAFUSION.md has the figures).
    pub const DEFAULT_PIECE_BYTES: usize = 1 << 20;

    /// A factory over the regions of `dir`, with pieces of
    /// [`DEFAULT_PIECE_BYTES`](Self::DEFAULT_PIECE_BYTES).
    pub fn new(dir: Arc<SpillDir>) -> OverflowSpillFactory {
        Self::with_piece_bytes(dir, Self::DEFAULT_PIECE_BYTES)
    }

    /// A factory over the regions of `dir` whose writers gather pieces of
    /// `piece_bytes` (clamped to 4 KiB ..= 64 MiB).
    pub fn with_piece_bytes(dir: Arc<SpillDir>, piece_bytes: usize) -> OverflowSpillFactory {
        OverflowSpillFactory {
            shared: Arc::new(Shared {
                dir,
                piece_bytes: piece_bytes.clamp(4 << 10, 64 << 20),
                next_file: AtomicU64::new(0),
                files_live: AtomicU64::new(0),
                pieces_written: AtomicU64::new(0),
                bytes_written: AtomicU64::new(0),
                lock_waits: AtomicU64::new(0),
                free_errors: AtomicU64::new(0),
            }),
        }
    }

    /// The directory the spill files live in.
    pub fn dir(&self) -> &Arc<SpillDir> {
        &self.shared.dir
    }

    /// Bytes a writer gathers before it writes them as one slot.
    pub fn piece_bytes(&self) -> usize {
        self.shared.piece_bytes
    }

    /// The factory's counters.
    pub fn stats(&self) -> SpillStats {
        let shared = &self.shared;
        SpillStats {
            files_created: shared.next_file.load(Ordering::Relaxed),
            files_live: shared.files_live.load(Ordering::Relaxed),
            pieces_written: shared.pieces_written.load(Ordering::Relaxed),
            bytes_written: shared.bytes_written.load(Ordering::Relaxed),
            lock_waits: shared.lock_waits.load(Ordering::Relaxed),
            free_errors: shared.free_errors.load(Ordering::Relaxed),
        }
    }
}

impl TempFileFactory for OverflowSpillFactory {
    /// A new, empty spill file: no disk is touched until its writer writes
    /// a piece.
    fn create_temp_file(&self, description: &str) -> Result<Arc<dyn SpillFile>> {
        let id = self.shared.next_file.fetch_add(1, Ordering::Relaxed);
        self.shared.files_live.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(RegionSpillFile {
            inner: Arc::new(FileInner {
                shared: Arc::clone(&self.shared),
                id,
                home: (id % self.shared.dir.cores() as u64) as usize,
                description: description.to_owned(),
                pieces: Mutex::new(Pieces::default()),
            }),
        }))
    }
}

/// Why the cores asked last did not take a piece: the numbers of the last
/// refusal of each kind, as the region gave them (read again after the
/// refusal, the bytes in use may have changed and no longer explain it).
#[derive(Debug, Default)]
struct Refusals {
    /// The last refusal by the directory's budget.
    budget: Option<BudgetRefusal>,
    /// The last refusal by a region full to its maximum capacity.
    capacity: Option<CapacityRefusal>,
}

/// The numbers of an [`overflow_region::Error::BudgetExceeded`].
#[derive(Debug)]
struct BudgetRefusal {
    /// The directory's budget.
    budget: u64,
    /// Bytes of the budget in use when the region asked.
    used: u64,
    /// Bytes the region's file needed to grow by for the piece and its
    /// header.
    requested: u64,
}

/// The numbers of an [`overflow_region::Error::CapacityExceeded`].
#[derive(Debug)]
struct CapacityRefusal {
    /// The extent the piece needs, its header included.
    extent: u64,
    /// Bytes free at the end of the region.
    available: u64,
    /// The region's maximum capacity.
    max_capacity: u64,
}

impl Refusals {
    /// Keeps the numbers of `error` if it is a refusal another core may not
    /// give (the budget's or a full region's); returns any other error.
    fn note(&mut self, error: overflow_region::Error) -> Result<(), overflow_region::Error> {
        match error {
            overflow_region::Error::BudgetExceeded {
                budget,
                used,
                requested,
                ..
            } => {
                self.budget = Some(BudgetRefusal {
                    budget,
                    used,
                    requested,
                });
            }
            overflow_region::Error::CapacityExceeded {
                extent,
                available,
                max_capacity,
                ..
            } => {
                self.capacity = Some(CapacityRefusal {
                    extent,
                    available,
                    max_capacity,
                });
            }
            error => return Err(error),
        }
        Ok(())
    }
}

/// A spill file: a chain of slots in the regions of a [`SpillDir`]. Its
/// streams and writers share its state, whose drop frees the slots.
#[derive(Debug)]
struct RegionSpillFile {
    inner: Arc<FileInner>,
}

/// A spill file's state: its slots are freed when the file and every
/// stream and writer of it are dropped.
struct FileInner {
    shared: Arc<Shared>,
    /// The tag of its slots (`overflow-region ls` shows it).
    id: u64,
    /// The core its pieces try first.
    home: usize,
    description: String,
    pieces: Mutex<Pieces>,
}

/// Where a spill file's pieces are, in order.
#[derive(Debug, Default)]
struct Pieces {
    list: Vec<Piece>,
    bytes: u64,
}

/// One piece: a slot of one core's region.
#[derive(Debug, Clone, Copy)]
struct Piece {
    core: u32,
    slot: usize,
}

impl fmt::Debug for FileInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileInner")
            .field("id", &self.id)
            .field("home", &self.home)
            .field("description", &self.description)
            .field("size", &self.lock_pieces().bytes)
            .finish()
    }
}

impl FileInner {
    fn lock_pieces(&self) -> MutexGuard<'_, Pieces> {
        // A panic while the list was locked left it as a push left it.
        self.pieces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bytes` as the file's next piece, on the first free core from
    /// the home core on (see the crate docs).
    fn append(&self, bytes: &[u8]) -> Result<()> {
        let dir = &self.shared.dir;
        let cores = dir.cores();
        let write =
            |region: &mut CoreRegion<'_>| region.write_tagged(bytes, EngineId::Query, self.id);
        let order = || (0..cores).map(|i| (self.home + i) % cores);
        let mut refusals = Refusals::default();
        let mut placed = None;
        for core in order() {
            match dir.try_with_core(core, write) {
                Ok(Some(slot)) => {
                    placed = Some((core, slot));
                    break;
                }
                Ok(None) => {}
                // The budget, or a region full to its maximum capacity:
                // another core may have room in its file or under its
                // capacity.
                Err(error) => refusals
                    .note(error)
                    .map_err(|error| self.region_error(error))?,
            }
        }
        if placed.is_none() {
            // Every core was busy or refused: wait for each in turn, the
            // home core first (a core that refused may have room by now).
            // Only this pass's refusals explain a failure: it asks every
            // core, so if none takes the piece, each one refused it here.
            refusals = Refusals::default();
            self.shared.lock_waits.fetch_add(1, Ordering::Relaxed);
            for core in order() {
                match dir.with_core(core, write) {
                    Ok(slot) => {
                        placed = Some((core, slot));
                        break;
                    }
                    Err(error) => refusals
                        .note(error)
                        .map_err(|error| self.region_error(error))?,
                }
            }
        }
        let Some((core, slot)) = placed else {
            return Err(self.refused_error(bytes.len(), &refusals));
        };
        let mut pieces = self.lock_pieces();
        pieces.list.push(Piece {
            core: core as u32,
            slot,
        });
        pieces.bytes += bytes.len() as u64;
        drop(pieces);
        self.shared.pieces_written.fetch_add(1, Ordering::Relaxed);
        self.shared
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Piece `index` copied out of its region, or `None` past the last.
    fn read_piece(&self, index: usize) -> Result<Option<Bytes>> {
        let Some(piece) = self.lock_pieces().list.get(index).copied() else {
            return Ok(None);
        };
        self.shared
            .dir
            .with_core(piece.core as usize, |region| {
                region.read(piece.slot).map(Bytes::copy_from_slice)
            })
            .map(Some)
            .map_err(|error| self.region_error(error))
    }

    /// DataFusion's error for a piece of `piece` bytes that every core
    /// refused, with the numbers of `refusals`: the budget's refusal has
    /// the growth asked for and the bytes in use when it was refused (so
    /// the two add up to more than the budget); a full region's has the
    /// extent and its room.
    fn refused_error(&self, piece: usize, refusals: &Refusals) -> DataFusionError {
        let cause = match (&refusals.budget, &refusals.capacity) {
            (Some(refusal), None) => format!(
                "needs more disk than the spill directory's budget of {} bytes allows",
                refusal.budget
            ),
            (Some(refusal), Some(_)) => format!(
                "needs more disk than the spill directory's budget of {} bytes allows on some \
                 cores, and more room than the regions' maximum capacity allows on the others",
                refusal.budget
            ),
            (None, _) => "needs more room than the regions' maximum capacity allows".to_owned(),
        };
        let mut needs = Vec::new();
        if let Some(refusal) = &refusals.budget {
            needs.push(format!(
                "a region file to grow by {} bytes (past the room at its end) while {} bytes \
                 are in use",
                refusal.requested, refusal.used
            ));
        }
        if let Some(refusal) = &refusals.capacity {
            needs.push(format!(
                "an extent of {} bytes, which a full region neither has free nor can add under \
                 its maximum capacity (the last one asked has {} of its {} bytes free at its end)",
                refusal.extent, refusal.available, refusal.max_capacity
            ));
        }
        let mut message = format!(
            "spilling ({}) {cause}: a piece of {piece} bytes (with its header) needs {}",
            self.description,
            needs.join(", or ")
        );
        if refusals.budget.is_none() {
            // No refusal carries the budget's numbers: they are read now,
            // for a full region they only tell how much disk is held.
            let dir = &self.shared.dir;
            message.push_str(&format!(
                "; {} bytes of the spill directory's budget of {} bytes are in use",
                dir.budget_used(),
                dir.budget_bytes()
            ));
        }
        DataFusionError::ResourcesExhausted(message)
    }

    /// DataFusion's error for any other failure of a region: the region's
    /// error, with the file it happened to.
    fn region_error(&self, error: overflow_region::Error) -> DataFusionError {
        DataFusionError::External(Box::new(error))
            .context(format!("spill file {} ({})", self.id, self.description))
    }
}

impl Drop for FileInner {
    fn drop(&mut self) {
        let pieces = std::mem::take(&mut *self.lock_pieces());
        let dir = &self.shared.dir;
        // Each core's pieces in one call: one lock, and the space they
        // leave given back at once (`free_many`).
        let mut by_core: Vec<(u32, Vec<usize>)> = Vec::new();
        for piece in pieces.list {
            match by_core.iter_mut().find(|(core, _)| *core == piece.core) {
                Some((_, slots)) => slots.push(piece.slot),
                None => by_core.push((piece.core, vec![piece.slot])),
            }
        }
        for (core, slots) in by_core {
            if dir
                .with_core(core as usize, |region| region.free_many(&slots))
                .is_err()
            {
                self.shared.free_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.shared.files_live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SpillFile for RegionSpillFile {
    /// The bytes written into the file's pieces so far: after `finish`,
    /// everything written; before, what `flush` or a full piece wrote.
    fn size(&self) -> Option<u64> {
        Some(self.inner.lock_pieces().bytes)
    }

    fn read_stream(&self) -> Result<Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>> {
        // The stream asks for the pieces by index, so pieces flushed after
        // it was created are read too.
        Ok(Box::pin(PieceStream {
            file: Arc::clone(&self.inner),
            next: Some(0),
        }))
    }

    fn open_writer(&self) -> Result<Box<dyn SpillWriter>> {
        Ok(Box::new(RegionSpillWriter {
            file: Arc::clone(&self.inner),
            gathered: Vec::new(),
        }))
    }
}

/// The pieces of a spill file, in order, each copied out of its region.
struct PieceStream {
    file: Arc<FileInner>,
    /// The next piece, or `None` after an error.
    next: Option<usize>,
}

impl Stream for PieceStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        let Some(next) = self.next else {
            return Poll::Ready(None);
        };
        Poll::Ready(match self.file.read_piece(next) {
            Ok(Some(bytes)) => {
                self.next = Some(next + 1);
                Some(Ok(bytes))
            }
            Ok(None) => None,
            Err(error) => {
                self.next = None;
                Some(Err(error))
            }
        })
    }
}

/// Gathers what DataFusion writes into pieces and writes each full piece
/// as a slot.
struct RegionSpillWriter {
    file: Arc<FileInner>,
    /// Bytes written since the last piece (at most a piece).
    gathered: Vec<u8>,
}

impl RegionSpillWriter {
    /// Writes what is gathered as a piece. On failure what is gathered
    /// stays: earlier writes accepted it (returned `Ok`), so a later flush
    /// or `finish` tries it again.
    fn write_gathered(&mut self) -> Result<()> {
        if !self.gathered.is_empty() {
            self.file.append(&self.gathered)?;
            self.gathered.clear();
        }
        Ok(())
    }
}

impl io::Write for RegionSpillWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let piece = self.file.shared.piece_bytes;
        if self.gathered.is_empty() && buf.len() >= piece {
            // A whole piece from the caller's buffer: no copy.
            self.file.append(&buf[..piece]).map_err(io_error)?;
            return Ok(piece);
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(piece);
        }
        let before = self.gathered.len();
        let taken = buf.len().min(piece - before);
        self.gathered.extend_from_slice(&buf[..taken]);
        if self.gathered.len() == piece
            && let Err(error) = self.write_gathered()
        {
            // On `Err`, `io::Write` promises that none of `buf` was
            // written: give its bytes back, or a retry of them would find
            // the piece full (`Ok(0)`, which `write_all` reports as
            // `WriteZero`) and the next piece would hold them twice.
            self.gathered.truncate(before);
            return Err(io_error(error));
        }
        Ok(taken)
    }

    /// Writes what is gathered as a piece, so a reader of the file sees it.
    fn flush(&mut self) -> io::Result<()> {
        self.write_gathered().map_err(io_error)
    }
}

impl SpillWriter for RegionSpillWriter {
    fn finish(&mut self) -> Result<()> {
        self.write_gathered()?;
        self.gathered = Vec::new();
        Ok(())
    }
}

/// A DataFusion error inside an `io::Error`, reachable through
/// `Error::source` (an `io::Error`'s own `source` skips the error it
/// wraps), so [`DataFusionError::find_root`] finds it again.
#[derive(Debug)]
struct InIo(DataFusionError);

impl fmt::Display for InIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InIo {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn io_error(error: DataFusionError) -> io::Error {
    io::Error::other(InIo(error))
}
