//! The crate's one error type.

use std::io;
use std::path::{Path, PathBuf};

use crate::layout::{FORMAT_VERSION, FileHeaderError};
use crate::sys::file::OpenRefused;

/// Everything that can go wrong with a region. Each variant carries the
/// numbers involved, so a message alone says what happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A write's extent does not fit under the region's maximum capacity.
    /// The region is unchanged and usable.
    #[error(
        "write of {requested} bytes needs a {extent}-byte extent, but only {available} of \
         {max_capacity} bytes of capacity are free at the end of the region and no free extent is large enough"
    )]
    CapacityExceeded {
        /// Payload length asked for.
        requested: u64,
        /// Extent the payload needs (header and alignment included).
        extent: u64,
        /// Bytes left between the end of the last extent and the maximum capacity.
        available: u64,
        /// The region's maximum capacity.
        max_capacity: u64,
    },

    /// The slot index was never handed out by this region.
    #[error("unknown slot {slot}: the region has {slot_count} slot indices")]
    UnknownSlot {
        /// The index asked for.
        slot: usize,
        /// Number of indices the region has handed out (occupied or freed).
        slot_count: usize,
    },

    /// The slot index exists but holds no data (it was freed and not reused).
    #[error("slot {slot} is free")]
    SlotFree {
        /// The index asked for.
        slot: usize,
    },

    /// A [`SlotRef`](crate::SlotRef) no longer names the bytes it was made
    /// for: the slot was freed, reused or moved by compaction (or the file
    /// is damaged there).
    #[error("slot {slot} (generation {generation}) changed: {reason}")]
    #[non_exhaustive]
    SlotChanged {
        /// The slot index of the handle.
        slot: usize,
        /// The generation of the handle.
        generation: u64,
        /// What the reader found.
        reason: &'static str,
        /// True when the slot was moved by compaction: it still holds the
        /// same bytes, at a new place, and the owner can hand out a new
        /// [`SlotRef`](crate::SlotRef) for it
        /// ([`OverflowRegion::slot_ref`](crate::OverflowRegion::slot_ref)).
        /// False when it was freed or reused, or when the reader could not
        /// tell (the old place was written again since the move).
        moved: bool,
    },

    /// Every slot index the on-disk format can hold is in use.
    #[error("too many slots: the format holds at most {max} slot indices")]
    TooManySlots {
        /// The largest number of slot indices.
        max: u64,
    },

    /// The file exists but is not an overflow region (or is damaged before its
    /// first extent). It was not modified.
    #[error("{path}: not an overflow-region file: {reason}")]
    NotARegion {
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },

    /// The file is a region of a format version this build cannot read. It was
    /// not modified.
    #[error(
        "{path}: region format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the file header.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },

    /// Another writer (in this or another process) holds the file's lock
    /// (`open` waits up to 50 ms for it first).
    #[error("{path}: locked by another writer")]
    Locked {
        /// The file.
        path: PathBuf,
    },

    /// The path names something a region cannot live in: a directory, a
    /// device, a FIFO, a socket, or a file on a kernel pseudo file system
    /// such as `/proc`. Nothing was written to it.
    #[error(
        "{path}: is {kind}, not a regular file; a region file must be one (nothing was written to it)"
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it names ("a block device", "a FIFO", "a file on procfs", ...).
        kind: &'static str,
    },

    /// The region's path no longer names the file this writer has open: it
    /// was unlinked, renamed away or replaced while the region was open.
    /// Everything written lives on only in the open file, which is lost
    /// when the region is dropped; another writer may be using the path.
    #[error(
        "{path}: the path no longer names this region's file (it was unlinked, renamed or replaced \
         while open); data written through this region is not reachable from the path"
    )]
    PathReplaced {
        /// The region's path.
        path: PathBuf,
    },

    /// A write needs the region's file to grow past the disk budget of its
    /// [`SpillDir`](crate::SpillDir). Nothing was written and no disk was
    /// touched; everything written before is intact, and the write can be
    /// tried again once space is freed.
    #[error(
        "{path}: disk budget of {budget} bytes exceeded: the spill files hold {used} bytes \
         and this write needs the file to grow by {requested}"
    )]
    BudgetExceeded {
        /// The region's file.
        path: PathBuf,
        /// The budget shared by the directory's files.
        budget: u64,
        /// Bytes of file the directory's regions hold now.
        used: u64,
        /// Bytes the file needed to grow by.
        requested: u64,
    },

    /// A core index past the number of cores of a [`SpillDir`](crate::SpillDir).
    #[error("core {core} does not exist: the spill directory has {cores} cores")]
    UnknownCore {
        /// The index asked for.
        core: usize,
        /// Number of cores.
        cores: usize,
    },

    /// The capacities asked for cannot be used.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, with the numbers.
        reason: String,
    },

    /// A system call on the file failed.
    #[error("{path}: {operation} failed: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`open`, `fallocate`, `msync`, ...).
        operation: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// [`Error::SlotChanged`] for a handle to a slot that compaction moved
    /// (the mark at its old place says so): ask the owner for a new handle.
    pub(crate) fn slot_moved(slot: usize, generation: u64) -> Error {
        Error::SlotChanged {
            slot,
            generation,
            reason: "it was moved by compaction: the owner holds it at a new place (ask it for a new handle)",
            moved: true,
        }
    }

    /// Turns an I/O error of `operation` on the file at `path` into
    /// [`Error::Io`]: `.map_err(Error::io(path, "open"))`.
    pub(crate) fn io<'a>(
        path: &'a Path,
        operation: &'static str,
    ) -> impl FnOnce(io::Error) -> Error + 'a {
        move |source| Error::Io {
            path: path.to_owned(),
            operation,
            source,
        }
    }

    /// Why `path` could not be opened as a region file.
    pub(crate) fn open_refused(path: &Path, refused: OpenRefused) -> Error {
        match refused {
            OpenRefused::Unsuitable(kind) => Error::NotAFile {
                path: path.to_owned(),
                kind,
            },
            OpenRefused::Io(operation, source) => Error::Io {
                path: path.to_owned(),
                operation,
                source,
            },
        }
    }

    /// Why the file at `path` is refused, from its header.
    pub(crate) fn file_header(path: &Path, error: FileHeaderError) -> Error {
        match error {
            FileHeaderError::Foreign(reason) => Error::NotARegion {
                path: path.to_owned(),
                reason,
            },
            FileHeaderError::Version(found) => Error::UnsupportedVersion {
                path: path.to_owned(),
                found,
                supported: FORMAT_VERSION,
            },
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_and_messages_carry_numbers() {
        fn assert_send_sync<T: std::error::Error + Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        let message = Error::UnknownSlot {
            slot: 7,
            slot_count: 3,
        }
        .to_string();
        assert!(message.contains('7') && message.contains('3'), "{message}");
    }
}
