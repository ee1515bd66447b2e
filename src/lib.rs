//! A per-core, mmap-backed spill file for thread-per-core databases.
//!
//! An [`OverflowRegion`] is a file owned by one core. The owner writes blobs
//! into numbered slots, reads them back as slices of the mapping with no
//! copy, frees them, and finds them all again after a restart.
//!
//! - Freed space is reused with a good fit in O(1) (a two-level segregated
//!   fit index), free neighbours are merged and the end of the region is
//!   given back.
//! - Every extent has a self-describing header with CRC32C checksums of
//!   header and payload (the payload's computed at the next `sync`, or when
//!   the region is dropped); reopening a file rebuilds every slot from the
//!   file alone, and a process killed at any instant loses nothing
//!   acknowledged.
//! - Bad files are errors, never panics; a file that is not a region is
//!   refused and left untouched.
//! - A slot can carry a `u64` tag of the caller's, and
//!   [`OverflowRegion::live_slots`] lists every live slot after a restart.
//! - A [`SpillDir`] keeps one region per core under one directory with one
//!   disk budget for all of them.
//!
//! ```
//! use std::collections::HashMap;
//!
//! use overflow_region::{EngineId, OverflowRegion};
//!
//! # fn main() -> overflow_region::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("core-0");
//! let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20)?;
//!
//! // Spill two blobs, each tagged with the engine's own key for it.
//! let a = region.write_tagged(b"spilled hash-join partition", EngineId::Query, 17)?;
//! let b = region.write_tagged(&[7u8; 4096], EngineId::Vector, 42)?;
//! assert_eq!(region.read(a)?, b"spilled hash-join partition");
//! assert_eq!(region.read(b)?.len(), 4096);
//!
//! // A freed index is reused; a handle never reads the later tenant.
//! let handle = region.slot_ref(a)?;
//! region.free(a)?;
//! let c = region.write(b"reuses a's index", EngineId::Wal)?;
//! assert_eq!(c, a);
//! assert!(region.read_ref(&handle).is_err());
//! region.sync()?;
//! drop(region);
//!
//! // After a restart (or a crash), rebuild the key map from the tags.
//! let region = OverflowRegion::open_with_config(&path, 1 << 20, 64 << 20)?;
//! let by_key: HashMap<u64, usize> = region
//!     .live_slots()
//!     .filter(|slot| slot.tag != 0)
//!     .map(|slot| (slot.tag, slot.slot))
//!     .collect();
//! assert_eq!(by_key.len(), 1);
//! assert_eq!(region.read(by_key[&42])?, &[7u8; 4096][..]);
//! assert_eq!(region.live_bytes(), 4096 + 16);
//! Ok(())
//! # }
//! ```
//!
//! The on-disk format is specified in [`file_format`] (docs/FORMAT.md in the
//! source repository).

#![deny(missing_docs)]

mod budget;
mod engine;
mod error;
mod header_map;
mod holes;
mod inspect;
mod layout;
mod reader;
mod recovery;
mod region;
mod slots;
mod space;
mod spill_dir;
mod stats;
mod sys;
mod tuning;
// Shared by the benchmarks and the command-line tool; not API.
#[doc(hidden)]
pub mod workload;

pub mod file_format {
    #![doc = include_str!("../docs/FORMAT.md")]
}

pub use engine::{EngineId, UnknownEngine};
pub use error::{Error, Result};
pub use inspect::{ExtentInfo, ExtentKind, RegionFile, SlotInfo};
pub use reader::{OverflowReader, SlotRef};
pub use recovery::{DropReason, DroppedExtent, RecoveryReport};
pub use region::{CompactReport, DamagedSlot, OverflowRegion, SlotEntry, VerifyReport};
pub use spill_dir::{CoreRegion, SpillDir, SpillMode};
pub use stats::{EngineStats, RegionStats};
pub use tuning::MemoryTuning;
