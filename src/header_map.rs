//! The header map: which pages of a region file hold extent headers, kept
//! in a companion file (`<region file>.headers`) so that a reopen with a
//! cold page cache asks the kernel for all of them at once
//! (`posix_fadvise(WILLNEED)`, many reads in flight) instead of reading
//! them one random read at a time as the walk reaches them. With 1 MiB
//! payloads every header is a page of its own, and the walk cannot know
//! where the next header is before it has read the one before.
//!
//! Advisory only: recovery walks and checks the region file exactly as it
//! does without a map. A map that is missing, damaged, stale (written
//! before the last writes) or made for another file costs at most reads
//! the walk does not use; nothing in it is trusted, and no promise of the
//! region depends on it. It is not synced.
//!
//! Format, little-endian: the magic `OVFLHMAP` (8 bytes), the identity of
//! the region file it describes (`u64`), the number of ranges `n` (`u64`),
//! `n` ranges of pages (first page `u32`, page count `u32`, pages of
//! [`MAP_PAGE`] bytes, in order, neither overlapping nor touching), and the
//! CRC32C of all of it (`u32`).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::sys::checksum;

/// The first bytes of a header map.
const MAGIC: [u8; 8] = *b"OVFLHMAP";

/// The page size the map counts in, whatever the machine's: the unit
/// only sizes the reads asked for.
pub(crate) const MAP_PAGE: u64 = 4096;

/// Ranges this few pages apart are merged into one: reading a few pages
/// the walk does not need costs less than one more `fadvise` call each,
/// which a warm reopen pays too.
const MERGE_GAP: u64 = 8;

/// A region with more extents than this keeps no map: building one costs
/// a sort of every extent at a `sync`, and its file 8 bytes per range.
pub(crate) const MAX_EXTENTS: usize = 1 << 20;

/// The companion file of the region file at `region`.
pub(crate) fn path_for(region: &Path) -> PathBuf {
    let mut name = region.as_os_str().to_owned();
    name.push(".headers");
    PathBuf::from(name)
}

/// The ranges of pages `[first, first + count)` that hold the header bytes
/// `[offset, offset + len)` of each extent, in order, merged where they
/// are at most `MERGE_GAP` pages apart.
pub(crate) fn ranges(mut headers: Vec<(u64, u64)>) -> Vec<(u32, u32)> {
    headers.sort_unstable();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for (offset, len) in headers {
        let first = offset / MAP_PAGE;
        let last = (offset + len.max(1) - 1) / MAP_PAGE;
        let (Ok(first), Ok(last)) = (u32::try_from(first), u32::try_from(last)) else {
            break;
        };
        match ranges.last_mut() {
            Some((start, count))
                if u64::from(*start) + u64::from(*count) + MERGE_GAP >= u64::from(first) =>
            {
                let end = (*start + *count).max(last + 1);
                *count = end - *start;
            }
            _ => ranges.push((first, last - first + 1)),
        }
    }
    ranges
}

/// The bytes of a map of `ranges` for the file of identity `identity`.
pub(crate) fn encode(identity: u64, ranges: &[(u32, u32)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(encoded_len(ranges.len()) as usize);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&identity.to_le_bytes());
    bytes.extend_from_slice(&(ranges.len() as u64).to_le_bytes());
    for &(first, count) in ranges {
        bytes.extend_from_slice(&first.to_le_bytes());
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    let crc = checksum::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// The length of the map `encode` makes of `ranges` ranges.
pub(crate) const fn encoded_len(ranges: usize) -> u64 {
    28 + 8 * ranges as u64
}

/// The bytes the map of the region file at `region` and the temporary
/// file of an interrupted write hold, if they are regular files (a
/// symbolic link is not followed): what a disk budget charges for them.
pub(crate) fn len_on_disk(region: &Path) -> u64 {
    [path_for(region), temporary_for(region)]
        .iter()
        .filter_map(|path| std::fs::symlink_metadata(path).ok())
        .filter(|metadata| metadata.file_type().is_file())
        .map(|metadata| metadata.len())
        .sum()
}

/// The ranges of a map read from its file, if it is one, intact, made for
/// the file of identity `identity`, and of ranges in order, none empty,
/// overlapping or touching (as `ranges` makes them): a map of the same
/// pages again and again would otherwise ask the kernel to read them as
/// many times (found in review: 2^20 ranges of the whole file held an open
/// for 104 s).
pub(crate) fn decode(bytes: &[u8], identity: u64) -> Option<Vec<(u32, u32)>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if body.len() < 24 || body[..8] != MAGIC {
        return None;
    }
    if checksum::crc32c(body).to_le_bytes() != crc {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let count = usize::try_from(u64_at(16)).ok()?;
    if u64_at(8) != identity || body.len() != count.checked_mul(8)?.checked_add(24)? {
        return None;
    }
    let ranges: Vec<(u32, u32)> = body[24..]
        .chunks_exact(8)
        .map(|range| {
            let u32_at =
                |at: usize| u32::from_le_bytes(range[at..at + 4].try_into().expect("4 bytes"));
            (u32_at(0), u32_at(4))
        })
        .collect();
    let mut past = 0u64; // the first page a range may start at
    for &(first, count) in &ranges {
        if count == 0 || u64::from(first) < past {
            return None;
        }
        past = u64::from(first) + u64::from(count) + 1;
    }
    Some(ranges)
}

/// Writes the map of `ranges` next to the region file at `region`: into a
/// temporary file renamed over the old map, so a crash leaves the old map
/// or the new one (either is only advice).
///
/// The temporary file is made anew (`O_EXCL`, after removing whatever had
/// its name): a FIFO there would block the write, and a symbolic link would
/// make it overwrite the file it points to.
pub(crate) fn write(region: &Path, identity: u64, ranges: &[(u32, u32)]) -> io::Result<()> {
    use std::io::Write;
    let temporary = temporary_for(region);
    remove_if_there(&temporary)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)?
        .write_all(&encode(identity, ranges))?;
    std::fs::rename(&temporary, path_for(region))
}

/// The longest map `write` writes: `MAX_EXTENTS` ranges.
const MAX_MAP_LEN: u64 = encoded_len(MAX_EXTENTS);

/// The bytes of the map at `path`, if it is a regular file no longer than
/// `MAX_MAP_LEN`. Opened without following a symbolic link and without
/// blocking (a FIFO there would otherwise block the open for good), and
/// read only up to that length, so a damaged or hostile map costs neither
/// a hang nor memory sized by the file.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() || metadata.len() > MAX_MAP_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "not a header map: a {:?} of {} bytes",
                metadata.file_type(),
                metadata.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_MAP_LEN).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Where `write` writes the map before renaming it into place.
fn temporary_for(region: &Path) -> PathBuf {
    let mut name = path_for(region).into_os_string();
    name.push(".new");
    PathBuf::from(name)
}

/// Removes the map of the region file at `region`, and the temporary file
/// of a write a crash interrupted, if they are there.
pub(crate) fn remove(region: &Path) -> io::Result<()> {
    remove_if_there(&path_for(region))?;
    remove_if_there(&temporary_for(region))
}

/// Removes whatever `path` names, if anything.
fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Reads the map of the region file at `region` (of identity `identity`,
/// `file_len` bytes, open as `file`) and asks the kernel to read the pages
/// it names inside the file. Returns the number of pages asked for: 0
/// without a usable map.
pub(crate) fn prefetch(region: &Path, file: &File, identity: u64, file_len: u64) -> u64 {
    let bytes = match read_bounded(&path_for(region)) {
        Ok(bytes) => bytes,
        Err(error) => {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %region.display(), %error, "ignoring the header map");
            }
            return 0;
        }
    };
    let Some(ranges) = decode(&bytes, identity) else {
        tracing::debug!(path = %region.display(), "ignoring a header map that does not check out");
        return 0;
    };
    let mut pages = 0;
    for (first, count) in ranges {
        let start = u64::from(first) * MAP_PAGE;
        let len = (u64::from(count) * MAP_PAGE).min(file_len.saturating_sub(start));
        // Ranges are in order: the first one past the end ends the map.
        let Some(len) = std::num::NonZeroU64::new(len) else {
            break;
        };
        if rustix::fs::fadvise(file, start, Some(len), rustix::fs::Advice::WillNeed).is_err() {
            break;
        }
        pages += len.get().div_ceil(MAP_PAGE);
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_touching_pages_and_cover_headers_that_cross_a_page() {
        let headers = vec![
            (8192 + 4080, 32),
            (4096, 32),
            (4096 + 64, 40),
            (1 << 20, 32),
            ((256 + 9) * 4096, 32),
            ((256 + 19) * 4096, 32),
        ];
        // 4096..4136 is page 1; 12272..12304 crosses pages 2 and 3, which
        // touch page 1; 1 MiB is page 256, page 265 lies 8 pages past it,
        // page 275 9 pages past that.
        assert_eq!(ranges(headers), vec![(1, 3), (256, 10), (275, 1)]);
    }

    #[test]
    fn a_map_reads_back_only_intact_and_for_its_own_file() {
        let ranges = vec![(1, 3), (256, 1), (u32::MAX - 1, 1)];
        let bytes = encode(42, &ranges);
        assert_eq!(decode(&bytes, 42), Some(ranges));
        assert_eq!(decode(&bytes, 43), None, "another file's map");
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert_eq!(decode(&damaged, 42), None, "byte {at} flipped");
        }
        for len in 0..bytes.len() {
            assert_eq!(decode(&bytes[..len], 42), None, "cut to {len} bytes");
        }
    }

    #[test]
    fn a_map_of_ranges_out_of_order_empty_or_overlapping_is_not_used() {
        for ranges in [
            vec![(0, u32::MAX), (0, u32::MAX)],
            vec![(5, 1), (1, 1)],
            vec![(1, 3), (3, 1)],
            vec![(1, 3), (4, 1)],
            vec![(1, 0)],
        ] {
            assert_eq!(decode(&encode(42, &ranges), 42), None, "{ranges:?}");
        }
        let ranges = vec![(0, 1), (2, 1), (u32::MAX - 1, 1)];
        assert_eq!(decode(&encode(42, &ranges), 42), Some(ranges));
    }
}
