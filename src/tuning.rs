//! [`MemoryTuning`]: the runtime settings a region is opened with.

use serde::{Deserialize, Serialize};

/// Capacity settings for a region, as they appear in a database's `[memory]`
/// configuration table.
///
/// Missing fields take their defaults, so an empty table loads:
///
/// ```
/// use overflow_region::MemoryTuning;
///
/// #[derive(serde::Deserialize)]
/// struct Config {
///     memory: MemoryTuning,
/// }
///
/// let config: Config = toml::from_str("[memory]\noverflow_max_bytes = 268435456\n").unwrap();
/// assert_eq!(config.memory.overflow_max_bytes, 256 << 20);
/// assert_eq!(config.memory.overflow_initial_bytes, 64 << 20);
///
/// let empty: Config = toml::from_str("[memory]\n").unwrap();
/// assert_eq!(empty.memory, MemoryTuning::default());
/// ```
///
/// Used with [`OverflowRegion::open_with_tuning`](crate::OverflowRegion::open_with_tuning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryTuning {
    /// File size of a new region, in bytes
    /// (default [`MemoryTuning::DEFAULT_INITIAL_BYTES`], 64 MiB).
    pub overflow_initial_bytes: usize,
    /// Size past which the region never grows, in bytes
    /// (default [`MemoryTuning::DEFAULT_MAX_BYTES`], 1 GiB).
    pub overflow_max_bytes: usize,
    /// Free extents at least this long are punched out of the file, giving
    /// the disk blocks and page cache back to the system (default
    /// [`MemoryTuning::DEFAULT_PUNCH_HOLE_BYTES`], 64 KiB; 0 never punches).
    /// Holes start and end on multiples of a granule: the largest power of
    /// two at most half this, from a page to 1 MiB (32 KiB by default), so
    /// an extent of this length always gives at least one granule back.
    /// Punching waits until such space adds up to 16 times this, or a
    /// thirty-second of the region's used bytes if that is less (but at
    /// least this), so space that is written again soon is not punched and
    /// refilled in turn; what is left waiting is punched when the region is
    /// dropped.
    ///
    /// The granule is also the piece in which the region writes zeros ahead
    /// of its end, because on Linux a hole punched into part of a larger
    /// page-cache folio comes back at the next store to the folio: so a
    /// larger threshold makes fresh writes faster. With 0 the pieces are
    /// 1 MiB, which makes short fresh writes faster (the figures are in
    /// docs/PERFORMANCE.md in the source repository).
    pub overflow_punch_hole_bytes: usize,
    /// Whether the file shrinks when the end of the region is given back
    /// (default true). It shrinks only while no
    /// [`OverflowReader`](crate::OverflowReader) maps it; otherwise the
    /// unused tail is punched instead.
    pub overflow_shrink: bool,
}

impl MemoryTuning {
    /// Default of [`MemoryTuning::overflow_initial_bytes`]: 64 MiB (also
    /// `OverflowRegion::DEFAULT_INITIAL_CAPACITY`, as in nodedb-mem 0.0.6).
    pub const DEFAULT_INITIAL_BYTES: usize = 64 << 20;
    /// Default of [`MemoryTuning::overflow_max_bytes`]: 1 GiB (also
    /// `OverflowRegion::DEFAULT_MAX_CAPACITY`, as in nodedb-mem 0.0.6).
    pub const DEFAULT_MAX_BYTES: usize = 1 << 30;
    /// Default of [`MemoryTuning::overflow_punch_hole_bytes`]: 64 KiB.
    pub const DEFAULT_PUNCH_HOLE_BYTES: usize = 64 << 10;
}

impl Default for MemoryTuning {
    fn default() -> Self {
        MemoryTuning {
            overflow_initial_bytes: MemoryTuning::DEFAULT_INITIAL_BYTES,
            overflow_max_bytes: MemoryTuning::DEFAULT_MAX_BYTES,
            overflow_punch_hole_bytes: MemoryTuning::DEFAULT_PUNCH_HOLE_BYTES,
            overflow_shrink: true,
        }
    }
}
