//! [`MemoryTuning`]: the runtime settings a region is opened with.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// Capacity settings for a region, as they appear in a database's `[memory]`
/// configuration table.
///
/// Missing fields take their defaults, so an empty table loads; the initial
/// capacity defaults to the smaller of 64 MiB and the maximum. Sizes are
/// integers (bytes) or strings with a unit (`"256MiB"`, `"1GiB"`, `"64
/// KiB"`; `"1GB"` is 10^9 bytes), and a key this type does not know is an
/// error that names it (a typo is never silently ignored):
///
/// ```
/// use overflow_region::MemoryTuning;
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Config {
///     memory: MemoryTuning,
/// }
///
/// let config: Config = toml::from_str("[memory]\noverflow_max_bytes = \"256MiB\"\n").unwrap();
/// assert_eq!(config.memory.overflow_max_bytes, 256 << 20);
/// assert_eq!(config.memory.overflow_initial_bytes, 64 << 20);
///
/// // A small maximum alone is enough: the initial capacity follows it.
/// let small: Config = toml::from_str("[memory]\noverflow_max_bytes = 65536\n").unwrap();
/// assert_eq!(small.memory.overflow_initial_bytes, 65536);
/// small.memory.validate().unwrap();
///
/// let empty: Config = toml::from_str("[memory]\n").unwrap();
/// assert_eq!(empty.memory, MemoryTuning::default());
///
/// let typo = toml::from_str::<Config>("[memory]\noverflow_max_byte = 4096\n").unwrap_err();
/// assert!(typo.to_string().contains("overflow_max_byte"), "{typo}");
/// ```
///
/// Used with [`OverflowRegion::open_with_tuning`](crate::OverflowRegion::open_with_tuning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TuningTable")]
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
    /// an extent of this length always gives at least one granule back. A
    /// free extent of eight granules or more is punched to the page beside
    /// live data instead (each cut inside a granule writes it back first).
    /// Punching waits until such space adds up to a tenth of the region's
    /// live bytes (at least this, at most 256 times this), so space that is
    /// written again soon is not punched and refilled in turn; with
    /// automatic compaction on (`overflow_auto_compact`), it waits further
    /// while the disk the region holds below its end (these pages included)
    /// is within its live extents and their slack, so more may wait. What
    /// is left waiting is punched when the region is dropped.
    ///
    /// The granule is also the piece in which the region writes zeros ahead
    /// of its end, because on Linux a hole punched into part of a dirty
    /// page-cache folio may come back at the next store to the folio: so a
    /// larger threshold makes fresh writes faster. With 0 the pieces are
    /// 1 MiB, which makes short fresh writes faster (the figures are in
    /// docs/PERFORMANCE.md in the source repository).
    pub overflow_punch_hole_bytes: usize,
    /// Whether the file shrinks when the end of the region is given back
    /// (default true). It shrinks only while no
    /// [`OverflowReader`](crate::OverflowReader) maps it; otherwise the
    /// unused tail is punched instead.
    pub overflow_shrink: bool,
    /// Space the file may hold beyond its live bytes, in percent of them
    /// (default [`MemoryTuning::DEFAULT_SLACK_PERCENT`], 10). It bounds
    /// four things: how far ahead the file grows (at least 1 MiB at a
    /// time), how much free space waits to be punched in one batch, how
    /// far past where the live extents would end the unused tail keeps its
    /// blocks (what lies past that is punched once it is two slacks long,
    /// so that the swings of the live bytes under churn do not punch and
    /// refill it in turn), and the free space between live extents that
    /// automatic compaction allows (`overflow_auto_compact`). A spill
    /// directory whose files are written once, read once and dropped (a
    /// query engine's) wants a small value; a region under churn, whose
    /// freed space is written again soon, the default.
    ///
    /// With 0 the file holds nothing ahead of use: it grows by what each
    /// write at its end needs (one `fallocate` per such write) and fills
    /// punched holes only where a write lands.
    pub overflow_slack_percent: u32,
    /// Whether the region compacts itself (default true): when the disk it
    /// holds below its end (used bytes less punched holes and free pages
    /// waiting to be punched) passes its live extents plus 13/16 of their
    /// slack (`overflow_slack_percent`), each `write` and `free` moves a few
    /// live extents, paid for by the bytes the operations of the pass so
    /// far wrote or freed (at most 2 MiB at once, an extent at most 1 MiB):
    /// first the short ones that keep free extents apart, then the ones at
    /// the end of the region into free space below, until it holds at most
    /// 10/16 of the slack beyond the live extents. Extents over
    /// 1 MiB are not moved automatically;
    /// [`OverflowRegion::compact`](crate::OverflowRegion::compact) moves
    /// everything. A moved slot keeps its index and bytes and gets a new
    /// generation: a [`SlotRef`](crate::SlotRef) made before the move reads
    /// the same bytes until the old place is freed, then
    /// [`Error::SlotChanged`]. The old place of a slot synced before the
    /// move stays on disk until the next `sync`. With it off, free space
    /// between live extents is reused by writes only, and waits to be
    /// punched in batches of the slack. Under churn of 16 B to 64 KiB
    /// payloads around 32 MiB live, a region with it off ran about 1.1
    /// times as fast and held 1.20-1.27 times its live bytes on disk on
    /// average, against 1.18-1.19 with it on (docs/PERFORMANCE.md in the
    /// source repository, "What merges and the tail's two slacks buy").
    pub overflow_auto_compact: bool,
    /// Whether the region writes its file with `pwrite` instead of storing
    /// through its mapping (reads always go through the mapping). `None`
    /// (the default): only on btrfs. On a full btrfs a store into a mapped
    /// page that was written back since can wait in the kernel's space
    /// reservation for minutes (`btrfs_page_mkwrite`), where a `pwrite` of
    /// the region's no-copy-on-write file overwrites the blocks it has.
    /// Each header, tag and payload store is then a system call: on btrfs
    /// (Linux 6.18) 64-byte writes went from 3.7 M/s to 47 k/s and churn
    /// from 0.84-0.99 M to 35 k free+write pairs/s (docs/PERFORMANCE.md in
    /// the source repository). `Some(false)` stores through the mapping
    /// on btrfs too, for that speed, at the risk of a process stalled in
    /// the kernel when the file system fills up; `Some(true)` writes with
    /// `pwrite` everywhere. A store that a `pwrite` refused is an
    /// [`Error::Io`] from the call that made it, and the region then
    /// refuses every later write, free, sync and compaction: reopen it,
    /// and recovery finds what the file holds.
    pub overflow_pwrite_stores: Option<bool>,
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
    /// Default of [`MemoryTuning::overflow_slack_percent`]: 10.
    pub const DEFAULT_SLACK_PERCENT: u32 = 10;
}

/// A `[memory]` table as written: every key optional, sizes with units,
/// unknown keys refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TuningTable {
    #[serde(default, deserialize_with = "size")]
    overflow_initial_bytes: Option<usize>,
    #[serde(default, deserialize_with = "size")]
    overflow_max_bytes: Option<usize>,
    #[serde(default, deserialize_with = "size")]
    overflow_punch_hole_bytes: Option<usize>,
    #[serde(default)]
    overflow_shrink: Option<bool>,
    #[serde(default)]
    overflow_slack_percent: Option<u32>,
    #[serde(default)]
    overflow_auto_compact: Option<bool>,
    #[serde(default)]
    overflow_pwrite_stores: Option<bool>,
}

impl From<TuningTable> for MemoryTuning {
    fn from(table: TuningTable) -> MemoryTuning {
        let defaults = MemoryTuning::default();
        let max = table
            .overflow_max_bytes
            .unwrap_or(defaults.overflow_max_bytes);
        MemoryTuning {
            overflow_initial_bytes: table
                .overflow_initial_bytes
                .unwrap_or(MemoryTuning::DEFAULT_INITIAL_BYTES.min(max)),
            overflow_max_bytes: max,
            overflow_punch_hole_bytes: table
                .overflow_punch_hole_bytes
                .unwrap_or(defaults.overflow_punch_hole_bytes),
            overflow_shrink: table.overflow_shrink.unwrap_or(defaults.overflow_shrink),
            overflow_slack_percent: table
                .overflow_slack_percent
                .unwrap_or(defaults.overflow_slack_percent),
            overflow_auto_compact: table
                .overflow_auto_compact
                .unwrap_or(defaults.overflow_auto_compact),
            overflow_pwrite_stores: table.overflow_pwrite_stores,
        }
    }
}

/// A size in bytes: an integer, or a string with a unit that `bytesize`
/// reads (`"256MiB"`, `"1 GiB"`, `"4096"`).
fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    let bytes = match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => bytes,
        Size::Text(text) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|error| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a size (bytes, or a number with a unit such as \"256MiB\"): {error}"
                ))
            })?
            .as_u64(),
    };
    usize::try_from(bytes)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{bytes} bytes do not fit in a usize")))
}

impl MemoryTuning {
    /// Checks the settings as
    /// [`OverflowRegion::open_with_tuning`](crate::OverflowRegion::open_with_tuning) will, without opening
    /// anything, and reports every problem at once, each with its key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] listing every problem found.
    pub fn validate(&self) -> Result<()> {
        let page = crate::sys::mapping::page_size() as usize;
        let max_reservation = crate::sys::mapping::MAX_RESERVATION;
        // The file header and one page of data.
        let minimum = 2 * crate::layout::DATA_START as usize;
        let (initial, max, punch) = (
            self.overflow_initial_bytes,
            self.overflow_max_bytes,
            self.overflow_punch_hole_bytes,
        );
        let mut problems = Vec::new();
        if initial > max {
            problems.push(format!(
                "overflow_initial_bytes: initial capacity {initial} is larger than \
                 overflow_max_bytes, the maximum capacity {max}"
            ));
        }
        if max as u64 > max_reservation {
            problems.push(format!(
                "overflow_max_bytes: maximum capacity {max} is larger than the \
                 {max_reservation} bytes (16 TiB) of address space a region reserves at most"
            ));
        }
        if max / page * page < minimum {
            problems.push(format!(
                "overflow_max_bytes: maximum capacity {max} (rounded down to whole pages: {}) \
                 is below the minimum of {minimum} bytes",
                max / page * page
            ));
        }
        if punch != 0 && punch < 2 * page {
            problems.push(format!(
                "overflow_punch_hole_bytes: hole punching threshold {punch} is below two \
                 pages ({} bytes); use 0 to disable it",
                2 * page
            ));
        }
        if self.overflow_slack_percent > 100 {
            problems.push(format!(
                "overflow_slack_percent: slack of {}% is above 100%",
                self.overflow_slack_percent
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidConfig {
                reason: problems.join("; "),
            })
        }
    }
}

impl Default for MemoryTuning {
    fn default() -> Self {
        MemoryTuning {
            overflow_initial_bytes: MemoryTuning::DEFAULT_INITIAL_BYTES,
            overflow_max_bytes: MemoryTuning::DEFAULT_MAX_BYTES,
            overflow_punch_hole_bytes: MemoryTuning::DEFAULT_PUNCH_HOLE_BYTES,
            overflow_shrink: true,
            overflow_slack_percent: MemoryTuning::DEFAULT_SLACK_PERCENT,
            overflow_auto_compact: true,
            overflow_pwrite_stores: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(table: &str) -> std::result::Result<MemoryTuning, toml::de::Error> {
        toml::from_str(table)
    }

    #[test]
    fn sizes_take_units_and_unknown_keys_are_named() {
        let tuning = parse(
            "overflow_initial_bytes = \"1 MiB\"\noverflow_max_bytes = \"1GiB\"\n\
             overflow_punch_hole_bytes = 131072\noverflow_shrink = false\n\
             overflow_slack_percent = 2\noverflow_auto_compact = false\n\
             overflow_pwrite_stores = true\n",
        )
        .unwrap();
        assert_eq!(
            tuning,
            MemoryTuning {
                overflow_initial_bytes: 1 << 20,
                overflow_max_bytes: 1 << 30,
                overflow_punch_hole_bytes: 128 << 10,
                overflow_shrink: false,
                overflow_slack_percent: 2,
                overflow_auto_compact: false,
                overflow_pwrite_stores: Some(true),
            }
        );
        let error = parse("overflow_max_bytes = \"lots\"\n").unwrap_err();
        assert!(error.to_string().contains("lots"), "{error}");
        let error = parse("overflow_shrinks = true\n").unwrap_err();
        assert!(error.to_string().contains("overflow_shrinks"), "{error}");
        // Written back as plain integers, and read again.
        let text = toml::to_string(&tuning).unwrap();
        assert_eq!(parse(&text).unwrap(), tuning);
        // A key left to its default (`None`) is left out, and read as such.
        let defaults = MemoryTuning::default();
        let text = toml::to_string(&defaults).unwrap();
        assert!(!text.contains("overflow_pwrite_stores"), "{text}");
        assert_eq!(parse(&text).unwrap(), defaults);
    }

    #[test]
    fn validate_reports_every_problem_with_its_key() {
        let tuning = MemoryTuning {
            overflow_initial_bytes: 1 << 20,
            overflow_max_bytes: 4096,
            overflow_punch_hole_bytes: 100,
            overflow_shrink: true,
            overflow_slack_percent: 101,
            overflow_auto_compact: true,
            overflow_pwrite_stores: None,
        };
        let Err(Error::InvalidConfig { reason }) = tuning.validate() else {
            panic!("accepted {tuning:?}");
        };
        for key in [
            "overflow_initial_bytes: initial capacity 1048576",
            "overflow_max_bytes: maximum capacity 4096",
            "overflow_punch_hole_bytes: hole punching threshold 100",
            "overflow_slack_percent: slack of 101% is above 100%",
        ] {
            assert!(reason.contains(key), "{key:?} missing from {reason:?}");
        }
        MemoryTuning::default().validate().unwrap();
    }
}
