//! Memory is sized by what a file proves, never by a number it merely
//! states (hostile-files finding 4): a damaged counter or one intact-looking
//! header with a huge slot index must not make an open allocate gigabytes.
//!
//! A counting global allocator measures the peak heap of each open; the
//! tests take a lock so their peaks do not mix.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use overflow_region::{EngineId, OverflowRegion, RegionFile};

#[path = "common/counting.rs"]
mod counting;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Peak heap bytes above the starting level while `f` runs.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (value, peak, _) = counting::measure(f);
    (value, peak)
}

const MIB: usize = 1 << 20;
/// Far more than a one-slot file needs, far less than the sizes the
/// findings reached (1 GiB for a flipped counter, 16 GiB and up for an
/// index near 2^32).
const BOUND: usize = 16 * MIB;

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

/// The slot-index counter in the file header (offset 64) is outside any
/// checksum: set to 30 million in a one-slot file, it used to size a slot
/// table of about 1.2 GB.
#[test]
fn a_damaged_slot_counter_does_not_size_the_slot_table() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, MIB, 1 << 30).unwrap();
    let slot = region.write(b"only slot", EngineId::Query).unwrap();
    drop(region);
    patch(&path, 64, &30_000_000u64.to_le_bytes());

    let (region, peak) =
        peak_during(|| OverflowRegion::open_with_config(&path, MIB, 1 << 30).unwrap());
    assert!(peak < BOUND, "open allocated {peak} bytes");
    assert_eq!(region.read(slot).unwrap(), b"only slot");
    region.check_consistency().unwrap();
    drop(region);

    let (file, peak) = peak_during(|| RegionFile::open(&path).unwrap());
    assert!(peak < BOUND, "RegionFile::open allocated {peak} bytes");
    assert_eq!(file.read(slot).unwrap(), b"only slot");
}

/// One live header with intact checksums whose slot index is near 2^32:
/// recovery keeps the slot, and its memory follows the one header found,
/// not the index, for a writer with the largest maximum capacity and for
/// the inspection tools.
#[test]
fn a_huge_slot_index_costs_no_table_of_that_size() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, MIB, 64 * MIB).unwrap();
    let slot = region.write(b"far away", EngineId::Query).unwrap();
    let offset = region.slot_ref(slot).unwrap().offset();
    drop(region);
    // Rewrite the slot index and the header's checksum (bytes 28..32 are
    // the CRC32C of bytes 0..28).
    let far: u32 = u32::MAX - 7;
    let mut header = [0u8; 32];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut header, offset)
        .unwrap();
    header[8..12].copy_from_slice(&far.to_le_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    patch(&path, offset, &header);

    let max = 1usize << 44;
    let (region, peak) = peak_during(|| OverflowRegion::open_with_config(&path, MIB, max).unwrap());
    assert!(peak < BOUND, "open allocated {peak} bytes");
    assert_eq!(region.read(far as usize).unwrap(), b"far away");
    assert_eq!(region.live_slot_count(), 1);
    region.check_consistency().unwrap();
    drop(region);

    let (file, peak) = peak_during(|| RegionFile::open(&path).unwrap());
    assert!(peak < BOUND, "RegionFile::open allocated {peak} bytes");
    assert_eq!(file.read(far as usize).unwrap(), b"far away");

    // New writes take low indices and never collide with the far slot.
    let mut region = OverflowRegion::open_with_config(&path, MIB, max).unwrap();
    for i in 0..100u32 {
        let new = region.write(&i.to_le_bytes(), EngineId::Wal).unwrap();
        assert_ne!(new, far as usize);
    }
    region.free(far as usize).unwrap();
    assert!(region.read(far as usize).is_err());
    region.check_consistency().unwrap();
}

/// A tool's look at a file costs a bounded number of bytes per extent: 200
/// k extents (every other one of 200 k slots freed, so live and free
/// extents alternate) open in at most 80 bytes each at the peak. It took
/// about 149 bytes each (1.49 GB for 10 M extents, `overflow-region stat`)
/// when every extent was kept as a whole `ExtentInfo` and sorted with a
/// buffer as long again.
#[test]
fn a_region_file_costs_a_bounded_number_of_bytes_per_extent() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let slots = 200_000usize;
    let mut region = OverflowRegion::open_with_config(&path, 16 * MIB, 1 << 30).unwrap();
    for _ in 0..slots {
        region.write(&[7u8; 16], EngineId::Query).unwrap();
    }
    for slot in (0..slots).step_by(2) {
        region.free(slot).unwrap();
    }
    drop(region);

    let (file, peak) = peak_during(|| RegionFile::open(&path).unwrap());
    let extents = file.extents().len();
    assert!(extents >= slots, "{extents} extents");
    assert_eq!(file.slots().len(), slots / 2);
    let per_extent = peak / extents;
    assert!(
        per_extent <= 80,
        "RegionFile::open peaked at {peak} bytes for {extents} extents: {per_extent} each"
    );
}
