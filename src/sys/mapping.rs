//! The file and its memory mapping.
//!
//! A [`Mapping`] reserves address space for the region's maximum capacity
//! once, as one `MAP_SHARED` mapping of the file, and the file grows
//! underneath it. The base never moves (no `mremap`), and no byte at or past
//! the file's current length is ever touched, so no access can raise SIGBUS:
//! every access goes through [`Mapping::bytes`], [`Mapping::bytes_mut`],
//! [`Mapping::load_word`] or [`Mapping::store_word`], which check bounds
//! against the file length this mapping itself set.
//!
//! The remaining hazard is another process truncating or writing the file
//! while it is mapped; the exclusive lock taken by [`lock_exclusive`] keeps
//! cooperating writers out, and the hazard is documented on
//! [`crate::OverflowRegion`].
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FallocateFlags, FlockOperation};

use super::fault::{self, Call};
use rustix::mm::{Advice, MapFlags, MsyncFlags, ProtFlags};

/// How many cache lines of a range `SharedMapping::prefetch` asks for: the
/// hardware's own prefetcher takes over a stream after its first lines.
const PREFETCH_LINES: u64 = 16;

/// Stores of at least this many bytes (payloads, and moves' copies) bypass
/// the CPU's caches (`copy_streaming`): a payload lands where another was
/// freed long ago, whose lines are no longer cached, and an ordinary store
/// first reads each line it writes. Below this, the fence that ends a
/// streaming copy costs more than it saves (docs/PERFORMANCE.md,
/// "Payloads stored past the caches").
const STREAM_MIN: usize = 1024;

/// The longest piece `write_zeros` writes with one `pwrite` (see
/// [`Mapping::set_write_piece`]): 1 MiB. Longer pieces cost more per page
/// and varied more between runs, probably the cost of finding that much
/// contiguous memory for each folio (docs/PERFORMANCE.md, "writing ahead
/// of the end").
pub(crate) const MAX_WRITE_PIECE: u64 = 1 << 20;

/// The most address space one mapping of a region reserves (16 TiB): a
/// writer's maximum capacity is at most this, and a reader never reserves
/// more, whatever a file header says.
pub(crate) const MAX_RESERVATION: u64 = 1 << 44;

/// The pieces of `write_zeros` until [`Mapping::set_write_piece`] says
/// otherwise.
const DEFAULT_WRITE_PIECE: u64 = 32 << 10;

/// `MAX_WRITE_PIECE` zeros, for `pwrite` calls that write zeros.
fn zero_piece() -> &'static [u8] {
    static ZEROS: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();
    ZEROS.get_or_init(|| vec![0; MAX_WRITE_PIECE as usize].into_boxed_slice())
}

/// The pieces of the concatenation of `parts` between byte `from` and byte
/// `to` of it, each with its position in the concatenation.
pub(crate) fn part_ranges<'a>(
    parts: &'a [&'a [u8]],
    from: u64,
    to: u64,
) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
    let mut start = 0u64;
    parts.iter().filter_map(move |part| {
        let (part_start, part_end) = (start, start + part.len() as u64);
        start = part_end;
        let (lo, hi) = (from.max(part_start), to.min(part_end));
        (lo < hi).then(|| {
            (
                lo,
                &part[(lo - part_start) as usize..(hi - part_start) as usize],
            )
        })
    })
}

/// A file mapped over a fixed address-space reservation.
pub(crate) struct Mapping {
    /// Start of the reservation. Invariant: the range `base..base + reserved`
    /// is one live `MAP_SHARED` mapping of `file` from offset 0, owned by this
    /// value and unmapped only in `Drop`.
    base: NonNull<u8>,
    /// Length of the reservation in bytes (a multiple of the page size).
    reserved: usize,
    /// The length of the file in use. Invariant: `file_len <= reserved`, and
    /// the file is at least this long (only this mapping changes the file's
    /// length, in `grow` and `truncate`), so `base..base + file_len` is
    /// backed by the file.
    file_len: u64,
    /// The mapped file; kept open for growth, sync and its lock.
    file: File,
    /// `write_zeros` writes the pieces of its range between multiples of
    /// this with one `pwrite` each (a power of two, at most
    /// `MAX_WRITE_PIECE`).
    write_piece: u64,
    /// When true, every store (`store_word`, `store_checksum_word`,
    /// `store_bytes`, `copy_in_file`) is a `pwrite` of the file instead of a
    /// store through the mapping (which still serves every read: one page
    /// cache). On a full btrfs, a store into a mapped page that was written
    /// back can wait in the kernel's space reservation for minutes
    /// (`btrfs_page_mkwrite`), where `pwrite` of a no-copy-on-write file
    /// overwrites the blocks it has.
    pwrite_stores: bool,
    /// The first error a `pwrite` store met, until the region takes it
    /// (`take_store_error`): stores cannot fail through the mapping, so
    /// their callers learn of one afterwards.
    store_error: std::cell::Cell<Option<io::Error>>,
    /// Set by the first `pwrite` store that failed, for good: no store is
    /// made after it (a commit's last store, its tag, must never land
    /// after a store before it failed), until the file is mapped again.
    store_failed: std::cell::Cell<Option<io::ErrorKind>>,
}

/// Maps `file` from offset 0 over a fresh reservation of `reserved` bytes (a
/// page multiple) with protection `prot`, shared, and advises random access.
/// Returns the base and the length as `usize`. Only the pages backed by the
/// file may ever be touched: the callers keep that invariant.
fn map_reservation(
    file: &File,
    reserved: u64,
    prot: ProtFlags,
) -> io::Result<(NonNull<u8>, usize)> {
    let reserved = usize::try_from(reserved).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "reservation exceeds the address space",
        )
    })?;
    // SAFETY: a fresh mapping at an address the kernel chooses, so no
    // existing Rust object is aliased. MAP_SHARED of a file the caller keeps
    // open; pages past the file's end are reserved but never touched (the
    // callers' `file_len` invariants). NORESERVE: the file, not swap, backs it.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            reserved,
            prot,
            MapFlags::SHARED | MapFlags::NORESERVE,
            file,
            0,
        )?
    };
    let base = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns null on success");
    // SAFETY: advice on exactly the range mapped above; advice changes no
    // memory contents. Access is random by slot, so read-ahead only wastes
    // page cache (nodedb-mem 0.0.6 sets the same advice).
    if let Err(error) = unsafe { rustix::mm::madvise(ptr, reserved, Advice::Random) } {
        tracing::warn!(%error, "madvise(MADV_RANDOM) failed; continuing without it");
    }
    Ok((base, reserved))
}

/// Writes the file's dirty pages back and asks the kernel to drop its pages
/// from the page cache (`fdatasync`, then `posix_fadvise(DONTNEED)`). Pages
/// another process has mapped stay.
pub(crate) fn drop_page_cache(file: &File) -> io::Result<()> {
    file.sync_data()?;
    rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// The size of a memory page on this machine.
pub(crate) fn page_size() -> u64 {
    // Asked once: rustix asks libc's `sysconf` each time, which showed up
    // in profiles of the write path.
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| rustix::param::page_size() as u64)
}

impl Mapping {
    /// Maps `file` read-write over a reservation of `reserve` bytes (rounded up
    /// to a page). The file must not be longer than the reservation.
    pub(crate) fn new(file: File, reserve: u64) -> io::Result<Mapping> {
        let file_len = file.metadata()?.len();
        let reserved = reserve.next_multiple_of(page_size());
        if file_len > reserved {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("file of {file_len} bytes is longer than the {reserved}-byte reservation"),
            ));
        }
        let (base, reserved) =
            map_reservation(&file, reserved, ProtFlags::READ | ProtFlags::WRITE)?;
        Ok(Mapping {
            base,
            reserved,
            file_len,
            file,
            write_piece: DEFAULT_WRITE_PIECE,
            pwrite_stores: false,
            store_error: std::cell::Cell::new(None),
            store_failed: std::cell::Cell::new(None),
        })
    }

    /// Sets the pieces `write_zeros` writes: each `pwrite` covers at most
    /// `bytes` and never crosses a multiple of it, `bytes` being a power of
    /// two from a page to `MAX_WRITE_PIECE` (other values are rounded down
    /// into that range).
    ///
    /// The page cache keeps what one `pwrite` writes in folios of up to its
    /// length, aligned to their size, and one fault maps a whole folio, so
    /// long pieces make later stores cheaper. But a hole punched into part
    /// of a large dirty folio does not split it (seen on ext4; the kernel
    /// version is in docs/PERFORMANCE.md): the next store
    /// to the rest of the folio writes the punched blocks back. So a caller
    /// that punches holes passes the granule it punches in: holes that
    /// start and end on multiples of the piece never cut a folio made here.
    pub(crate) fn set_write_piece(&mut self, bytes: u64) {
        let bytes = bytes.clamp(page_size(), MAX_WRITE_PIECE);
        self.write_piece = 1 << bytes.ilog2();
    }

    /// The file's current length.
    pub(crate) fn len(&self) -> u64 {
        self.file_len
    }

    /// The mapped file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Grows the file to `new_len` bytes with its blocks allocated, so a full
    /// disk is this error and never a SIGBUS later. On error the file keeps
    /// its old length.
    pub(crate) fn grow(&mut self, new_len: u64) -> io::Result<()> {
        assert!(
            new_len <= self.reserved as u64,
            "growth past the reservation"
        );
        if new_len <= self.file_len {
            return Ok(());
        }
        let old_len = self.file_len;
        let result = match self.fallocate(
            Call::Fallocate,
            FallocateFlags::empty(),
            old_len,
            new_len - old_len,
        ) {
            Err(rustix::io::Errno::OPNOTSUPP) => self.write_zeros(old_len, new_len),
            other => other.map_err(io::Error::from),
        };
        if let Err(error) = result {
            // A failed fallocate (or `write_zeros`) may have extended the
            // file part of the way, with blocks. Put the length back, unless
            // a reader maps the file (it may have seen the longer length;
            // cutting it could fault it): then give the blocks back, so the
            // file holds no more disk than `file_len` says, which is what a
            // disk budget charges (found in review: with a reader open, a
            // growth that filled the disk left 3.8 MB allocated past the
            // 256 KiB charged). A longer file is harmless: nothing past
            // `file_len` is used, and the next growth starts from
            // `file_len` again.
            if let Ok(true) = ReadersLock::try_exclusive(&self.file) {
                let _ = self.file.set_len(old_len);
                let _ = ReadersLock::release(&self.file);
            } else if let Ok(metadata) = self.file.metadata()
                && metadata.len() > old_len
            {
                let _ = rustix::fs::fallocate(
                    &self.file,
                    FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                    old_len,
                    metadata.len() - old_len,
                );
            }
            return Err(error);
        }
        self.file_len = new_len;
        Ok(())
    }

    /// Writes zeros over `start..end` with `pwrite`, not through the
    /// mapping. The caller guarantees the range holds no live data (it lies
    /// past the end of the region, or reads as zeros already: a punched
    /// hole).
    ///
    /// Two uses. Blocks: a written range has its disk blocks allocated (or,
    /// with delayed allocation, reserved), so a later store through the
    /// mapping cannot fail for lack of space; a full disk is this error.
    /// Speed: the pages land in the page cache in one call, so the first
    /// store to each page through the mapping is a minor fault. A store to
    /// a page that is not cached costs a major fault that reads or zeroes
    /// it, several times what a page written this way costs (figures in
    /// docs/PERFORMANCE.md, "what a new page costs").
    pub(crate) fn write_zeros(&mut self, start: u64, end: u64) -> io::Result<()> {
        debug_assert!(start <= end && end <= self.reserved as u64);
        let zeros = zero_piece();
        let mut at = start;
        while at < end {
            let piece_end = (at + 1).next_multiple_of(self.write_piece).min(end);
            fault::check(Call::Pwrite)?;
            self.file
                .write_all_at(&zeros[..(piece_end - at) as usize], at)?;
            at = piece_end;
        }
        Ok(())
    }

    /// Writes `start..end` as `write_zeros` does (`pwrite`, in calls that
    /// never cross a multiple of the write piece), except that the `len`
    /// bytes from `at` on are `parts`, one after another, where they fall
    /// inside the range. The caller guarantees that nothing live lies in the range.
    /// A refill of punched pages that a payload is about to cover: the
    /// payload goes in with the call that allocates the blocks, where zeros
    /// and then stores through the mapping would copy twice and fault on
    /// every page.
    pub(crate) fn write_over(
        &mut self,
        start: u64,
        end: u64,
        at: u64,
        len: u64,
        parts: &[&[u8]],
    ) -> io::Result<()> {
        debug_assert!(start <= end && end <= self.file_len);
        let zeros = zero_piece();
        let payload_end = at + len;
        let mut slices: Vec<io::IoSlice<'_>> = Vec::with_capacity(parts.len() + 2);
        let mut piece_start = start;
        while piece_start < end {
            let piece_end = (piece_start + 1)
                .next_multiple_of(self.write_piece)
                .min(end);
            // Zeros before the payload, the payload's bytes in the piece,
            // zeros after it.
            let bytes_from = at.clamp(piece_start, piece_end);
            let bytes_to = payload_end.clamp(bytes_from, piece_end);
            slices.clear();
            if bytes_from > piece_start {
                slices.push(io::IoSlice::new(
                    &zeros[..(bytes_from - piece_start) as usize],
                ));
            }
            if bytes_from < bytes_to {
                for (_, bytes) in part_ranges(parts, bytes_from - at, bytes_to - at) {
                    slices.push(io::IoSlice::new(bytes));
                }
            }
            if piece_end > bytes_to {
                slices.push(io::IoSlice::new(&zeros[..(piece_end - bytes_to) as usize]));
            }
            let mut offset = piece_start;
            let mut rest = &mut slices[..];
            while !rest.is_empty() {
                fault::check(Call::Pwrite)?;
                let written = match rustix::io::pwritev(&self.file, rest, offset) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(written) => written,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(error) => return Err(error.into()),
                };
                offset += written as u64;
                io::IoSlice::advance_slices(&mut rest, written);
            }
            piece_start = piece_end;
        }
        Ok(())
    }

    /// Writes the first bytes of a file no longer than `header` (a new
    /// region's header) with `pwrite`; the file is then `header.len()`
    /// bytes long. Nothing is written if the file is longer. A file that
    /// is not empty (an initialisation cut short) is written over, never
    /// cut: a reader may have it mapped.
    pub(crate) fn start_file(&mut self, header: &[u8]) -> io::Result<()> {
        if self.file_len > header.len() as u64 || header.len() > self.reserved {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a header is written only over a shorter file that the reservation holds",
            ));
        }
        self.file.write_all_at(header, 0)?;
        self.file_len = header.len() as u64;
        Ok(())
    }

    /// Writes `data` into the file at `offset` with `pwrite`, not through
    /// the mapping (which sees the same bytes: one page cache). The page
    /// cache keeps what one call writes in folios up to its length, so the
    /// caller chooses where calls start and end.
    pub(crate) fn write_bytes(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        debug_assert!(offset + data.len() as u64 <= self.file_len);
        fault::check(Call::Pwrite)?;
        self.file.write_all_at(data, offset)
    }

    /// Writes the dirty pages of `offset..offset + len` back and waits for
    /// them (`sync_file_range` with `WAIT_BEFORE | WRITE | WAIT_AFTER`).
    /// A page-cache folio there is then clean, and a hole punched into part
    /// of it splits it or drops it whole (seen on ext4: a dirty one may
    /// stay whole, and its next store would bring the punched blocks back).
    /// Not a durability point: no metadata is written.
    pub(crate) fn write_back(&self, offset: u64, len: u64) -> io::Result<()> {
        fault::check(Call::WriteBack)?;
        self.sync_file_range(
            offset,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }

    /// Starts writing back the dirty pages of `offset..offset + len`
    /// without waiting (`sync_file_range` with `WRITE`), so that several
    /// ranges are in flight at once before `write_back` waits for each.
    /// A hint for speed only.
    pub(crate) fn start_write_back(&self, offset: u64, len: u64) -> io::Result<()> {
        self.sync_file_range(offset, len, libc::SYNC_FILE_RANGE_WRITE)
    }

    fn sync_file_range(&self, offset: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
        // 0 would mean "to the end of the file".
        debug_assert!(len > 0);
        let (offset, len) = (offset as libc::off64_t, len as libc::off64_t);
        // SAFETY: a system call on the descriptor `self.file` owns, open
        // for as long as `self`; it takes no pointers, so no memory of ours
        // is read or written.
        let rc = unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(&self.file),
                offset,
                len,
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Gives the whole pages of `offset..offset + len` back to the file
    /// system (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): they read as zeros and
    /// hold no disk blocks until written again. `Ok(false)` when the file
    /// system cannot punch holes.
    pub(crate) fn punch_hole(&mut self, offset: u64, len: u64) -> io::Result<bool> {
        debug_assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.file_len)
        );
        match self.fallocate(
            Call::Punch,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::OPNOTSUPP) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// `fallocate` (after the test seam's `call`), made again for as long
    /// as a signal interrupts it (`EINTR`): interrupted part of the way,
    /// asking again for the same range finishes it.
    fn fallocate(
        &self,
        call: Call,
        flags: FallocateFlags,
        offset: u64,
        len: u64,
    ) -> rustix::io::Result<()> {
        loop {
            let result = fault::check(call)
                .map_err(|error| {
                    rustix::io::Errno::from_io_error(&error).unwrap_or(rustix::io::Errno::IO)
                })
                .and_then(|()| rustix::fs::fallocate(&self.file, flags, offset, len));
            if result != Err(rustix::io::Errno::INTR) {
                return result;
            }
        }
    }

    /// The ranges of the file at or after `from` that the file system
    /// reports as holes; see [`find_holes`].
    pub(crate) fn holes(&self, from: u64) -> io::Result<Vec<(u64, u64)>> {
        find_holes(&self.file, from, self.file_len)
    }

    /// Shrinks the file to `new_len`. The caller guarantees that nothing at
    /// or past `new_len` is in use, here or in any reader's mapping (it holds
    /// the readers' lock exclusively: see [`ReadersLock`]).
    pub(crate) fn truncate(&mut self, new_len: u64) -> io::Result<()> {
        debug_assert!(new_len <= self.file_len);
        // Lower the bound first: from here on nothing past `new_len` is
        // touched, so the truncation cannot make a later access fault.
        let old_len = self.file_len;
        self.file_len = new_len;
        if let Err(error) = self.file.set_len(new_len) {
            self.file_len = old_len;
            return Err(error);
        }
        Ok(())
    }

    /// The bytes `offset..offset + len` of the file, or `None` if any of them
    /// lies past its end. The one place a range becomes a slice.
    #[inline]
    pub(crate) fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.file_len {
            return None;
        }
        // SAFETY: `offset + len <= file_len <= reserved`, so the range lies in
        // the live mapping and is backed by the file (struct invariants). The
        // mapping is readable. The slice borrows `self`; every mutation goes
        // through `&mut self`, so no `&mut` alias can exist while it lives.
        // Other processes writing the file are the documented hazard.
        Some(unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(offset as usize), len as usize)
        })
    }

    /// Asks the CPU to bring the cache line at `offset` of the mapping in
    /// ahead of a read (a hint: nothing happens past the end of the file,
    /// or on other targets than x86-64). Walks that read one word at each
    /// of many scattered places issue it a few places ahead, so the cache
    /// misses overlap.
    #[inline]
    pub(crate) fn prefetch(&self, offset: u64) {
        if let Some(byte) = self.bytes(offset, 1) {
            super::prefetch(&byte[0]);
        }
    }

    /// The bytes `offset..offset + len`, writable, or `None` if any lies past
    /// the end of the file.
    pub(crate) fn bytes_mut(&mut self, offset: u64, len: u64) -> Option<&mut [u8]> {
        let end = offset.checked_add(len)?;
        if end > self.file_len {
            return None;
        }
        // SAFETY: in bounds and backed as for `bytes`; the mapping is
        // writable; `&mut self` guarantees no other slice of this mapping is
        // alive.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(offset as usize), len as usize)
        })
    }

    /// The atomic word at `offset`, if it is 8-byte aligned and inside the file.
    fn word(&self, offset: u64) -> Option<&AtomicU64> {
        if !offset.is_multiple_of(8) || offset.checked_add(8)? > self.file_len {
            return None;
        }
        // SAFETY: in bounds and backed (checked above, struct invariants),
        // 8-byte aligned (offset is, and the base is page aligned), and valid
        // for the borrow of `self`. Within this process every access to tag
        // words is atomic or happens under `&mut self`, and header checksum
        // words are stored through `&self` only while no slice covers them
        // (`store_checksum_word`).
        Some(unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset as usize).cast::<u64>()) })
    }

    /// Loads the little-endian word at the 8-byte aligned `offset`.
    pub(crate) fn load_word(&self, offset: u64) -> Option<u64> {
        self.word(offset)
            .map(|word| u64::from_le(word.load(Ordering::Acquire)))
    }

    /// Stores a little-endian word at the 8-byte aligned `offset` with one
    /// store, ordered after every earlier write to the mapping (Release): the
    /// commit point of every extent state change.
    ///
    /// # Panics
    ///
    /// If `offset` is unaligned or past the end of the file (a bug in the caller).
    pub(crate) fn store_word(&mut self, offset: u64, value: u64) {
        self.store(offset, value);
    }

    /// Makes every store a `pwrite` (see `pwrite_stores`), or not.
    pub(crate) fn set_pwrite_stores(&mut self, on: bool) {
        self.pwrite_stores = on;
    }

    /// The first error a `pwrite` store met, if any and not taken yet.
    #[inline]
    pub(crate) fn take_store_error(&self) -> Option<io::Error> {
        // Read only, in the common case (every write and free asks).
        self.store_failed.get()?;
        self.store_error.take()
    }

    /// The kind of the first error a `pwrite` store met, if one did: no
    /// store has been made since.
    #[inline]
    pub(crate) fn store_failed(&self) -> Option<io::ErrorKind> {
        self.store_failed.get()
    }

    /// With `pwrite_stores`: writes `data` at `offset` with `pwrite`,
    /// unless a store failed before (`store_failed`); keeps the first
    /// error for `take_store_error`.
    fn pwrite_store(&self, offset: u64, data: &[u8]) {
        if self.store_failed.get().is_some() {
            return;
        }
        let written =
            fault::check(Call::Pwrite).and_then(|()| self.file.write_all_at(data, offset));
        if let Err(error) = written {
            self.store_failed.set(Some(error.kind()));
            self.store_error.set(Some(error));
        }
    }

    /// Stores `data` at `offset`: copied through the mapping, or written
    /// with `pwrite` (`pwrite_stores`).
    ///
    /// # Panics
    ///
    /// If the range lies past the end of the file (a bug in the caller).
    #[inline]
    pub(crate) fn store_bytes(&mut self, offset: u64, data: &[u8]) {
        if self.pwrite_stores {
            assert!(
                offset + data.len() as u64 <= self.file_len,
                "store at {offset} past a {}-byte file",
                self.file_len
            );
            self.pwrite_store(offset, data);
            return;
        }
        let file_len = self.file_len;
        let target = self
            .bytes_mut(offset, data.len() as u64)
            .unwrap_or_else(|| panic!("store at {offset} past a {file_len}-byte file"));
        if data.len() >= STREAM_MIN {
            copy_streaming(data, target);
        } else {
            target.copy_from_slice(data);
        }
    }

    /// Copies the `len` bytes at `from` to `to` within the file (ranges
    /// that do not overlap): through the mapping, or with one `pwrite` of
    /// the mapped source (`pwrite_stores`).
    ///
    /// # Panics
    ///
    /// If either range lies past the end of the file (a bug in the caller).
    pub(crate) fn copy_in_file(&mut self, from: u64, to: u64, len: u64) {
        if self.pwrite_stores {
            let source = self
                .bytes(from, len)
                .unwrap_or_else(|| panic!("copy from {from} past a {}-byte file", self.file_len));
            assert!(to + len <= self.file_len, "copy to {to} past the file");
            self.pwrite_store(to, source);
            return;
        }
        let file = self
            .bytes_mut(0, self.file_len)
            .expect("the whole file is in bounds");
        let (from, to, len) = (from as usize, to as usize, len as usize);
        if len < STREAM_MIN {
            file.copy_within(from..from + len, to);
            return;
        }
        // The ranges do not overlap: split the file between them.
        if from < to {
            let (low, high) = file.split_at_mut(to);
            copy_streaming(&low[from..from + len], &mut high[..len]);
        } else {
            let (low, high) = file.split_at_mut(from);
            copy_streaming(&high[..len], &mut low[to..to + len]);
        }
    }

    /// Stores an extent header's checksum word (payload and header
    /// checksums) at the 8-byte aligned `offset`, like
    /// [`store_word`](Self::store_word) but through `&self`: `sync` fills
    /// in payload checksums while the caller may hold payload slices. No
    /// slice ever covers a header's checksum word outside a `&mut self`
    /// borrow or a call that has returned (the region hands out payloads
    /// only), so the atomic store aliases nothing.
    ///
    /// # Panics
    ///
    /// If `offset` is unaligned or past the end of the file (a bug in the caller).
    pub(crate) fn store_checksum_word(&self, offset: u64, value: u64) {
        self.store(offset, value);
    }

    /// One store of the little-endian word at the 8-byte aligned `offset`:
    /// atomic through the mapping (Release), or a `pwrite`
    /// (`pwrite_stores`). Panics as `store_word` does.
    fn store(&self, offset: u64, value: u64) {
        let word = self.word(offset).unwrap_or_else(|| {
            panic!(
                "word store at {offset} outside a {}-byte file",
                self.file_len
            )
        });
        if self.pwrite_stores {
            // One `pwrite` of the aligned word: ordered after every earlier
            // store (each `pwrite` has copied its bytes into the page cache
            // before it returns). A reader racing with it may see it torn;
            // a tag's check bits and a header's checksum catch that.
            self.pwrite_store(offset, &value.to_le_bytes());
            return;
        }
        word.store(value.to_le(), Ordering::Release);
        // And every later store after it: a reader's seqlock (header, copy,
        // header again) needs a free tag seen before any byte a later
        // write puts into the freed extent, and a Release store orders
        // only the stores before it. The writer side of a seqlock (on
        // x86-64, whose stores are ordered anyway, this only keeps the
        // compiler from moving later stores above the tag).
        std::sync::atomic::fence(Ordering::Release);
    }

    /// Writes every dirty page of the mapping to the file and the file to
    /// stable storage (`msync(MS_SYNC)` then `fsync`).
    pub(crate) fn sync(&self) -> io::Result<()> {
        fault::check(Call::Sync)?;
        if self.file_len > 0 {
            // SAFETY: the range is the mapped, file-backed prefix of the
            // reservation (struct invariants); msync reads no Rust-visible
            // memory and changes none.
            unsafe {
                rustix::mm::msync(
                    self.base.as_ptr().cast(),
                    self.file_len as usize,
                    MsyncFlags::SYNC,
                )?;
            }
        }
        rustix::fs::fsync(&self.file)?;
        Ok(())
    }
}

// SAFETY: a `Mapping` owns its reservation outright (struct invariant: one
// live mapping, unmapped only in `Drop`), like a `Box<[u8]>` owns its
// heap block: nothing about it is tied to the thread that made it (mmap,
// munmap, msync and the file's `flock` belong to the process and the open
// file description, not to a thread). Moving it to another thread moves
// that ownership; every access still goes through `&self` / `&mut self`.
// It is deliberately not `Sync`: `bytes_mut` and `store_word` rely on
// `&mut self` for exclusive access, and `OverflowRegion` is used by one
// thread at a time.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the reservation is ours (struct invariant) and every slice
        // of it borrows `self`, so none outlives this call.
        if let Err(error) = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.reserved) }
        {
            tracing::warn!(%error, "munmap of an overflow region failed");
        }
    }
}

/// Takes the exclusive advisory lock (`flock`) on `file` without waiting.
/// `Ok(false)` when another open file description holds it: another writer in
/// this or another process.
pub(crate) fn lock_exclusive(file: &File) -> io::Result<bool> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Makes a new directory entry durable (`fsync` of the directory).
pub(crate) fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A read-only mapping of a region file that another thread or process may
/// be writing at the same time: the reader side of cross-thread reads.
///
/// Unlike [`Mapping`] it never hands out slices: bytes that can change while
/// they are read are only ever loaded with atomic loads and copied out, and
/// the caller checks the copy against the extent's header read before and
/// after it (tag, slot, generation and length: a seqlock).
/// The writer's stores reach this mapping through the shared page cache, a
/// different virtual address from the writer's own: to this process they are
/// memory changed by an outside agent, which atomic loads may observe.
pub(crate) struct SharedMapping {
    /// Start of the reservation. Invariant: `base..base + reserved` is one
    /// live, read-only `MAP_SHARED` mapping of `file` from offset 0, owned by
    /// this value and unmapped only in `Drop`.
    base: NonNull<u8>,
    /// Length of the reservation (a multiple of the page size).
    reserved: usize,
    /// The largest file length seen. Invariant: `<= reserved`, and the file
    /// was at least this long when it was read. Files only grow while readers
    /// are mapped (a writer truncates only when no reader holds the file), so
    /// `base..base + file_len` stays backed by the file.
    file_len: AtomicU64,
    /// The mapped file.
    file: File,
    /// True when reads go through `pread` instead of the mapping: on any
    /// file system but ext4, xfs and btrfs. On tmpfs (and an overlay over
    /// it) a read fault on a punched page must allocate memory, and on a
    /// full tmpfs that fault is a SIGBUS; `pread` of a hole returns zeros.
    pread: bool,
}

// SAFETY: the mapping is read-only, and this value reads its addresses only
// with atomic loads (`load_word`) or `copy_atomic` (`copy_out`), never
// through a reference. The bytes change under it only by stores made
// through other mappings of the file (the writer's, in this process or
// another): other addresses, to which these are memory changed by an
// outside agent. So sharing it between threads is as sound as sharing a
// `[AtomicU64]`; `file_len` is atomic and `File` is `Send + Sync`.
unsafe impl Send for SharedMapping {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Maps `file` read-only over a reservation of `reserve` bytes.
    pub(crate) fn new(file: File, reserve: u64) -> io::Result<SharedMapping> {
        let reserved = reserve.next_multiple_of(page_size());
        let (base, reserved_usize) = map_reservation(&file, reserved, ProtFlags::READ)?;
        // Only where a read fault on a hole is known never to need space;
        // when the file system cannot be told, `pread` is the safe choice.
        let pread = !super::file::maps_holes_without_allocating(&file).unwrap_or(false);
        let mapping = SharedMapping {
            base,
            reserved: reserved_usize,
            file_len: AtomicU64::new(0),
            file,
            pread,
        };
        mapping.refresh_len()?;
        Ok(mapping)
    }

    /// Re-reads the file's length (it grows while the writer works) and
    /// returns the length now usable.
    pub(crate) fn refresh_len(&self) -> io::Result<u64> {
        let len = self.file.metadata()?.len().min(self.reserved as u64);
        Ok(self.file_len.fetch_max(len, Ordering::AcqRel).max(len))
    }

    /// Makes sure `offset..offset + len` lies inside the file, re-reading its
    /// length once if needed.
    pub(crate) fn check_range(&self, offset: u64, len: u64) -> io::Result<bool> {
        let Some(end) = offset.checked_add(len) else {
            return Ok(false);
        };
        if end <= self.file_len.load(Ordering::Acquire) {
            return Ok(true);
        }
        Ok(end <= self.refresh_len()?)
    }

    /// Asks the CPU to bring in the first `PREFETCH_LINES` cache lines of
    /// `offset..offset + len` (fewer if the range is shorter) ahead of a
    /// read: a reader asks for its payload before it loads the header in
    /// front of it, so the two cache misses overlap instead of following
    /// each other. Nothing happens where the file is read with `pread`, or
    /// past the known end of the file.
    #[inline]
    pub(crate) fn prefetch(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len.min(PREFETCH_LINES * 64));
        if self.pread || end > self.file_len.load(Ordering::Relaxed) {
            return;
        }
        let mut line = offset / 64 * 64;
        while line < end {
            super::prefetch_address(self.base.as_ptr().wrapping_add(line as usize));
            line += 64;
        }
    }

    /// The word at `offset`, if it is aligned and inside the known file.
    pub(crate) fn load_word(&self, offset: u64) -> Option<u64> {
        if !offset.is_multiple_of(8)
            || offset.checked_add(8)? > self.file_len.load(Ordering::Acquire)
        {
            return None;
        }
        if self.pread {
            let mut bytes = [0u8; 8];
            self.file.read_exact_at(&mut bytes, offset).ok()?;
            return Some(u64::from_le_bytes(bytes));
        }
        // SAFETY: aligned (the base is page aligned), inside the file-backed
        // prefix of the live mapping (checked above; struct invariants), and
        // this mapping's addresses are only ever read atomically or by
        // `copy_atomic`, never through a reference. (A writer in this
        // process stores to the same pages through its own mapping, at
        // other addresses: see the `Send` impl.)
        let word =
            unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset as usize).cast::<u64>()) };
        Some(u64::from_le(word.load(Ordering::Acquire)))
    }

    /// Whether reads go through `pread` (see the field): each load is then
    /// a system call, so callers load several words with one
    /// [`load_words`](Self::load_words) where they can.
    pub(crate) fn reads_with_pread(&self) -> bool {
        self.pread
    }

    /// The words at `offset..offset + 8 * words.len()` into `words`, if
    /// `offset` is aligned and the range lies inside the known file: with
    /// `pread`, one call for all of them (which copies them in no promised
    /// order: the caller checks them as it checks a copy); through the
    /// mapping, one atomic load each, in order.
    pub(crate) fn load_words(&self, offset: u64, words: &mut [u64]) -> bool {
        let Some(end) = (words.len() as u64)
            .checked_mul(8)
            .and_then(|len| offset.checked_add(len))
        else {
            return false;
        };
        if !offset.is_multiple_of(8) || end > self.file_len.load(Ordering::Acquire) {
            return false;
        }
        if self.pread {
            let mut bytes = [0u8; 64];
            let Some(bytes) = bytes.get_mut(..8 * words.len()) else {
                return false;
            };
            if self.file.read_exact_at(bytes, offset).is_err() {
                return false;
            }
            for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
                *word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            }
            return true;
        }
        for (at, word) in (offset..).step_by(8).zip(words.iter_mut()) {
            match self.load_word(at) {
                Some(loaded) => *word = loaded,
                None => return false,
            }
        }
        true
    }

    /// Copies `offset..offset + len` into `out` (replacing its contents) with
    /// atomic loads (with `pread` off ext4, xfs and btrfs: see `pread`), or returns `false`
    /// if the range is not inside the known
    /// file or `offset` is not 8-byte aligned. The copy may mix old and new
    /// bytes if the writer is changing them: the caller verifies it.
    pub(crate) fn copy_out(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> bool {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        if !offset.is_multiple_of(8) || end > self.file_len.load(Ordering::Acquire) {
            return false;
        }
        if self.pread {
            out.clear();
            out.resize(len as usize, 0);
            return self.file.read_exact_at(out, offset).is_ok();
        }
        let len = len as usize;
        out.clear();
        out.reserve(len);
        let source = self.base.as_ptr().wrapping_add(offset as usize);
        // SAFETY: `offset..end` lies inside the file-backed prefix of the
        // live mapping (checked above; struct invariants), `offset` is
        // 8-byte aligned, and `reserve(len)` made the `len` bytes of spare
        // capacity in `out` that the copy writes.
        unsafe { copy_atomic(source, &mut out.spare_capacity_mut()[..len]) };
        // SAFETY: the copy initialised the first `len` spare bytes.
        unsafe { out.set_len(len) };
        std::sync::atomic::fence(Ordering::Acquire);
        true
    }
}

/// Copies `source` into `target` (of the same length), storing the whole
/// cache lines of `target` with non-temporal stores: they go to memory
/// without first reading the line into the cache, and leave no line behind
/// there. Such stores are ordered with no other store, so the copy is
/// fenced on both sides: every earlier store (the free tag that ended the
/// last tenancy of these bytes) is visible to other threads before any of
/// the copy, and the copy before any later store (the commit's tag, whose
/// `Release` orders only ordinary stores). So a reader's seqlock (header,
/// copy, header again) holds as with a plain copy.
/// Elsewhere than on x86-64, and under Miri, a plain copy.
fn copy_streaming(source: &[u8], target: &mut [u8]) {
    assert_eq!(source.len(), target.len(), "copy between unequal ranges");
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let len = target.len();
        let head = target.as_ptr().align_offset(64).min(len);
        let lines = (len - head) / 64;
        let tail = head + 64 * lines;
        target[..head].copy_from_slice(&source[..head]);
        // SAFETY: a fence has no memory-safety preconditions (SSE is part of
        // every x86-64 target).
        unsafe { _mm_sfence() };
        let from = source[head..tail].as_ptr();
        let to = target[head..tail].as_mut_ptr();
        for line in 0..lines {
            for quarter in 0..4 {
                let at = 64 * line + 16 * quarter;
                // SAFETY: `at + 16 <= tail - head`: both pointers stay inside
                // the slices they came from, which do not overlap (one is
                // borrowed shared, the other mutably). The load is unaligned;
                // the store is to `to + at`, a multiple of 16 because `to` is
                // 64-byte aligned (`head`).
                unsafe {
                    let value = _mm_loadu_si128(from.add(at).cast::<__m128i>());
                    _mm_stream_si128(to.add(at).cast::<__m128i>(), value);
                }
            }
        }
        // SAFETY: a fence has no memory-safety preconditions (SSE is part of
        // every x86-64 target).
        unsafe { _mm_sfence() };
        target[tail..].copy_from_slice(&source[tail..]);
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    target.copy_from_slice(source);
}

/// Copies `target.len()` bytes from `source` into `target` with loads the
/// writer's racing stores cannot make undefined: a byte-wise atomic memcpy
/// (C++ P1478). They may read old or new bytes; the caller's seqlock
/// (header before and after) rejects a mixed copy.
///
/// On x86-64 it is one `rep movsb`: as fast as `memcpy` for a few KiB, and
/// every load the instruction makes is an atomic load of the bytes it reads
/// (none is read torn); the assembly is opaque to the compiler, which must
/// assume it reads and writes memory. Elsewhere, and under Miri, it is a
/// loop of relaxed atomic word loads, which the compiler may not merge
/// into vector loads: about a cycle per word (measured in
/// docs/PERFORMANCE.md, "`read_into` copies with `rep movsb`").
///
/// # Safety
///
/// `source` must be 8-byte aligned, `source..source + target.len()` must
/// lie in a live mapping whose addresses this process never accesses
/// through a reference or with non-atomic stores (other mappings of the
/// same pages may be written), and not overlap `target`.
unsafe fn copy_atomic(source: *const u8, target: &mut [std::mem::MaybeUninit<u8>]) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: the caller's contract, and `target` is valid for writes of
    // its length; the direction flag is clear on entry to any Rust code
    // (the ABI), so `rep movsb` copies forwards, and it changes no flags.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") target.len() => _,
            inout("rsi") source => _,
            inout("rdi") target.as_mut_ptr() => _,
            options(nostack, preserves_flags)
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        let words = target.len() / 8;
        let (whole, rest) = target.split_at_mut(8 * words);
        for (i, slot) in whole.chunks_exact_mut(8).enumerate() {
            // SAFETY: an aligned word inside the source range (the caller's
            // contract), whose address is only ever accessed atomically.
            let word = unsafe { AtomicU64::from_ptr(source.add(8 * i).cast_mut().cast::<u64>()) };
            let word = word.load(Ordering::Relaxed);
            // SAFETY: `slot` is 8 bytes of `target`; an unaligned store of
            // a `u64` writes exactly those bytes.
            unsafe { slot.as_mut_ptr().cast::<u64>().write_unaligned(word) };
        }
        for (i, slot) in rest.iter_mut().enumerate() {
            // SAFETY: inside the source range; atomic access only (u8 needs
            // no alignment).
            let byte = unsafe {
                std::sync::atomic::AtomicU8::from_ptr(source.add(8 * words + i).cast_mut())
            };
            slot.write(byte.load(Ordering::Relaxed));
        }
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: the reservation is ours (struct invariant); no reference
        // into it escapes this type, so nothing outlives this call.
        if let Err(error) = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.reserved) }
        {
            tracing::warn!(%error, "munmap of an overflow reader failed");
        }
    }
}

/// The lock by which readers announce themselves to the writer, so the
/// writer never truncates a file that a reader has mapped (which would make
/// the reader's next access to the cut pages raise SIGBUS).
///
/// It is an open-file-description (OFD) `fcntl` lock on byte 0 of the region
/// file: readers hold it shared for as long as they are mapped; the writer
/// takes it exclusively, without waiting, just for the moment it truncates.
/// OFD locks belong to the open file, not the process, so a reader thread in
/// the writer's own process counts too; and on Linux they are independent of
/// the writer's `flock`.
pub(crate) struct ReadersLock;

impl ReadersLock {
    fn set(file: &File, command: libc::c_int, lock_type: libc::c_int) -> io::Result<()> {
        // SAFETY: `flock` is a plain C struct for which all-zero bytes are a
        // valid value (and OFD locks require `l_pid == 0`).
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = lock_type as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = 0;
        lock.l_len = 1;
        // SAFETY: `fcntl` with an OFD lock command reads the `flock` struct
        // through the pointer, which is valid for the call; the descriptor
        // is open (borrowed from `file`).
        let result =
            unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(file), command, &mut lock) };
        if result == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// A reader announces itself (waits while the writer is truncating;
    /// a signal that interrupts the wait is not an error: it waits again).
    pub(crate) fn hold_shared(file: &File) -> io::Result<()> {
        loop {
            match fault::check(Call::ReadersLock)
                .and_then(|()| Self::set(file, libc::F_OFD_SETLKW, libc::F_RDLCK))
            {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// The writer: `Ok(true)` if no reader holds the file, and then it is
    /// locked until [`ReadersLock::release`].
    pub(crate) fn try_exclusive(file: &File) -> io::Result<bool> {
        match Self::set(file, libc::F_OFD_SETLK, libc::F_WRLCK) {
            Ok(()) => Ok(true),
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::EACCES)
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Releases what `try_exclusive` took.
    pub(crate) fn release(file: &File) -> io::Result<()> {
        Self::set(file, libc::F_OFD_SETLK, libc::F_UNLCK)
    }
}

/// The ranges of `file` in `from..len` that the file system reports as holes
/// (`SEEK_HOLE`/`SEEK_DATA`), in order. A file system without hole reporting
/// reports none. Some (ext4) report allocated but never written space as
/// holes too.
pub(crate) fn find_holes(file: &File, from: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::SeekFrom;
    let mut holes = Vec::new();
    let mut at = from;
    while at < len {
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(at)) {
            Ok(hole) => hole,
            Err(rustix::io::Errno::NXIO) => break,
            Err(error) => return Err(error.into()),
        };
        if hole >= len {
            break;
        }
        let data = match rustix::fs::seek(file, SeekFrom::Data(hole)) {
            Ok(data) => data.min(len),
            Err(rustix::io::Errno::NXIO) => len,
            Err(error) => return Err(error.into()),
        };
        if data <= hole {
            break;
        }
        holes.push((hole, data));
        at = data;
    }
    Ok(holes)
}

#[cfg(test)]
mod tests {
    use super::{Mapping, copy_streaming};

    #[test]
    fn a_streaming_copy_copies_every_byte_at_every_alignment_and_length() {
        let source: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut target = vec![0u8; 4096 + 128];
        // Lengths around the line size and across several lines, at every
        // start within a line: the head, the whole lines and the tail.
        for start in 0..64 {
            for len in [0, 1, 15, 16, 63, 64, 65, 127, 128, 129, 1000, 1024, 4033] {
                target.fill(0xEE);
                copy_streaming(&source[..len], &mut target[start..start + len]);
                assert_eq!(
                    &target[start..start + len],
                    &source[..len],
                    "start {start} len {len}"
                );
                assert!(
                    target[..start].iter().all(|&b| b == 0xEE),
                    "written before: start {start} len {len}"
                );
                assert!(
                    target[start + len..].iter().all(|&b| b == 0xEE),
                    "written after: start {start} len {len}"
                );
            }
        }
    }

    #[test]
    fn a_copy_within_the_file_goes_either_way_and_streams_when_long() {
        let file = tempfile::tempfile().expect("a temporary file");
        let mut mapping = Mapping::new(file, 1 << 20).expect("a mapping");
        mapping.grow(64 << 10).expect("room");
        let pattern: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        // Short (a plain copy) and long (streamed), upwards and downwards,
        // at offsets that are not multiples of a cache line.
        for (len, from, to) in [
            (100, 8, 3000),
            (20_000, 40, 30_008),
            (20_000, 30_008, 40),
            (100, 3000, 8),
        ] {
            mapping.store_bytes(from, &pattern[..len]);
            mapping.copy_in_file(from, to, len as u64);
            assert_eq!(
                mapping.bytes(to, len as u64),
                Some(&pattern[..len]),
                "{len} bytes from {from} to {to}"
            );
        }
    }
}
