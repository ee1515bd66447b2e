//! Giving space back: hole punching, shrinking, compaction.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use overflow_region::{EngineId, Error, MemoryTuning, OverflowReader, OverflowRegion};
use proptest::prelude::*;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn blocks_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn payload(slot: usize, len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8) ^ (slot as u8).wrapping_mul(31) ^ salt)
        .collect()
}

/// Writes `count` payloads of `len` bytes (`payload(first + i, len, salt)`)
/// and returns their slots.
fn write_many(
    region: &mut OverflowRegion,
    first: usize,
    count: usize,
    len: usize,
    salt: u8,
    engine: EngineId,
) -> Vec<usize> {
    (first..first + count)
        .map(|i| region.write(&payload(i, len, salt), engine).unwrap())
        .collect()
}

#[test]
fn freeing_long_extents_punches_their_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 4 * MIB, 64 * MIB).unwrap();
    let slots: Vec<usize> = write_many(&mut region, 0, 8, 256 * KIB, 1, EngineId::Vector);
    let before = blocks_bytes(&path);
    for &slot in &slots[1..7] {
        region.free(slot).unwrap();
    }
    let after = blocks_bytes(&path);
    let stats = region.stats();
    println!(
        "blocks before {before}, after {after}, punched {}",
        stats.punched_bytes
    );
    // Punched in 32 KiB granules (half the default 64 KiB threshold): all
    // but at most a granule at each end of the merged free extent.
    assert!(
        stats.punched_bytes >= (6 * 256 * KIB - 64 * KIB) as u64,
        "{stats:?}"
    );
    assert!(
        before - after >= stats.punched_bytes - 4 * KIB as u64,
        "st_blocks fell by {} bytes, punched {}",
        before - after,
        stats.punched_bytes
    );
    // The holes take writes as before, and the blocks come back.
    let again: Vec<usize> = write_many(&mut region, 100, 6, 256 * KIB, 2, EngineId::Wal);
    assert_eq!(region.stats().punched_bytes, 0);
    assert!(blocks_bytes(&path) >= before - 64 * KIB as u64);
    for (i, &slot) in again.iter().enumerate() {
        assert_eq!(region.read(slot).unwrap(), payload(100 + i, 256 * KIB, 2));
    }
    for &slot in [slots[0], slots[7]].iter() {
        assert_eq!(region.read(slot).unwrap().len(), 256 * KIB);
    }
    region.check_consistency().unwrap();
    drop(region);
    let region = OverflowRegion::open_with_config(&path, 4 * MIB, 64 * MIB).unwrap();
    region.check_consistency().unwrap();
    assert_eq!(region.read(again[5]).unwrap(), payload(105, 256 * KIB, 2));
}

/// Bytes a file lacks blocks for: its length less what `st_blocks` counts.
fn missing_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len() - blocks_bytes(path)
}

/// Frees every other 256 KiB extent of `slots[4..20]` (eight holes between
/// live neighbours) and syncs; then writes eight short slots into the
/// free space and syncs again. After each sync every byte punched since
/// the start must still be missing from the file. A hole that cut a page-cache folio gets
/// its blocks back at the first store to the rest of the folio: the free
/// tags the frees store next to each hole, and the short writes. (ext4 may
/// add a block of its own extent tree for the new holes, hence 8 KiB of
/// slack.)
fn assert_holes_survive_short_writes_next_to_them(region: &mut OverflowRegion, slots: &[usize]) {
    // Counted from here: after a reopen, ext4 reports the never written
    // tail as holes, which `punched_bytes` counts and `st_blocks` does not.
    let punched_before = region.stats().punched_bytes;
    let missing_before = missing_bytes(region.path());
    let assert_all_missing = |region: &OverflowRegion, when: &str| {
        let punched = region.stats().punched_bytes - punched_before;
        let missing = missing_bytes(region.path()) - missing_before;
        println!("{when}: punched {punched} bytes, the file lacks blocks for {missing}");
        assert!(
            missing + 8 * KIB as u64 >= punched,
            "{when}: punched {punched} bytes, but only {missing} are missing from the file"
        );
    };
    for &slot in slots[4..20].iter().step_by(2) {
        region.free(slot).unwrap();
    }
    region.sync().unwrap();
    assert!(
        region.stats().punched_bytes >= 8 * 192 * KIB as u64,
        "{:?}",
        region.stats()
    );
    assert_all_missing(region, "after the frees");
    for i in 0..8 {
        region
            .write(&payload(100 + i, 100, 3), EngineId::Wal)
            .unwrap();
    }
    region.sync().unwrap();
    assert_all_missing(region, "after the short writes");
    for &slot in slots[..4].iter().chain(&slots[20..]) {
        assert!(region.read(slot).unwrap() == &payload(slot, 256 * KIB, 1)[..]);
    }
    region.check_consistency().unwrap();
}

#[test]
fn holes_survive_short_writes_next_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 8 * MIB, 64 * MIB).unwrap();
    let slots = write_many(&mut region, 0, 24, 256 * KIB, 1, EngineId::Vector);
    region.sync().unwrap();
    assert_holes_survive_short_writes_next_to_them(&mut region, &slots);
}

/// A long payload written at the end goes into the page cache in long
/// folios (`pwrite` of its middle). Freed, and partly written again, what
/// is left of it must never be punched from inside one of those folios
/// while it is dirty: such a hole gets its blocks back at the next store
/// to the folio's other part. (The region punches a freed long extent at
/// once, before a write can reuse part of it; without that, the write-back
/// before the cut must save it.) Every byte the region counts as punched
/// must still be missing from the file after such stores. (Five extents,
/// reused by five lengths, so that some hole would start inside a long
/// folio whatever folio sizes the kernel picks.)
#[test]
fn holes_never_cut_the_long_folios_of_a_partly_reused_extent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap();
    // 48 MiB in use: pages wait to be punched until 1 MiB of them gathers.
    let slots = write_many(&mut region, 0, 192, 256 * KIB, 1, EngineId::Vector);
    region.sync().unwrap();
    assert_partly_reused_long_extents_keep_their_holes(&mut region, &slots);
}

/// As above, but the long payloads were written by the writer before. Their
/// long folios lie in the middles of live extents, which the next writer
/// finds by itself when it frees them: no page-cache drop is needed.
#[test]
fn holes_never_cut_the_long_folios_of_a_writer_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap();
    let slots = write_many(&mut region, 0, 192, 256 * KIB, 1, EngineId::Vector);
    drop(region);
    let mut region = OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap();
    assert_partly_reused_long_extents_keep_their_holes(&mut region, &slots);
}

/// The header word at 96 (docs/FORMAT.md): the writer's piece, and bit 62
/// while long folios may lie outside live extents.
fn write_piece_word(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    u64::from_le_bytes(bytes[96..104].try_into().unwrap())
}

/// After a close the next writer needs no page-cache drop: long payloads
/// still live, and a long payload freed at the end (its folios in the tail
/// kept as headroom are punched at close), leave the header saying so.
#[test]
fn a_closed_writer_leaves_no_long_folios_the_next_one_must_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap();
    let live = write_many(&mut region, 0, 8, 512 * KIB, 1, EngineId::Vector);
    let long = region
        .write(&payload(99, 8 * MIB, 2), EngineId::Vector)
        .unwrap();
    region.free(long).unwrap();
    assert_ne!(
        write_piece_word(&path) & (1 << 62),
        0,
        "freed, not punched yet"
    );
    drop(region);
    assert_eq!(write_piece_word(&path) & (1 << 62), 0);
    let region = OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap();
    for (i, &slot) in live.iter().enumerate() {
        assert!(region.read(slot).unwrap() == &payload(i, 512 * KIB, 1)[..]);
    }
}

/// Set in the environment of `killed_writer_child`: the file to use.
const CHILD_FILE: &str = "OVERFLOW_GIVEBACK_CHILD_FILE";

/// Run by `holes_never_cut_the_long_folios_a_killed_writer_left_in_the_tail`.
#[test]
#[ignore = "run as a child by holes_never_cut_the_long_folios_a_killed_writer_left_in_the_tail"]
fn killed_writer_child() {
    let path = std::env::var_os(CHILD_FILE).expect("run by the parent test");
    let path = Path::new(&path);
    let mut region = OverflowRegion::open_with_config(path, 64 * MIB, 64 * MIB).unwrap();
    write_many(&mut region, 0, 16, 256 * KIB, 1, EngineId::Vector);
    let long = region
        .write(&payload(99, 8 * MIB, 2), EngineId::Vector)
        .unwrap();
    // Back into the tail, which the file keeps (it is within its initial
    // size): the payload's long folios stay in the page cache.
    region.free(long).unwrap();
    // Killed: no close, so the tail is not punched either.
    std::process::exit(0);
}

/// A writer killed with long folios in free space: a long payload freed at
/// the end, its pages kept as the tail (it runs in a child process that
/// exits without closing the region; the page cache keeps everything). The
/// next writer cannot know where those folios are; the file header says
/// there are some, and it drops the page cache at open. It then writes
/// long slots over that tail, frees every other one (punched from inside
/// the old folios) and writes short slots next to the holes.
#[test]
fn holes_never_cut_the_long_folios_a_killed_writer_left_in_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    // Its output is captured, not interleaved with ours.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "killed_writer_child", "--ignored", "--nocapture"])
        .env(CHILD_FILE, &path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the child failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut region = OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap();
    // Over the tail the killed writer left.
    let slots = write_many(&mut region, 16, 24, 256 * KIB, 1, EngineId::Vector);
    region.sync().unwrap();
    assert_holes_survive_short_writes_next_to_them(&mut region, &slots);
}

fn assert_partly_reused_long_extents_keep_their_holes(
    region: &mut OverflowRegion,
    slots: &[usize],
) {
    let path = region.path().to_owned();
    // After a reopen the unused tail counts as punched (ext4 reports its
    // unwritten blocks as holes) though `st_blocks` counts it: compare
    // what changes from here.
    let punched_before = region.stats().punched_bytes;
    let missing_before = missing_bytes(&path);
    let reused = [100, 104, 108, 112, 116];
    // Each longer than what the earlier ones left free, so it reuses its own.
    let lengths = [200 * KIB, 175 * KIB, 150 * KIB, 135 * KIB, 130 * KIB];
    let mut shorts = Vec::new();
    for (&i, &len) in reused.iter().zip(&lengths) {
        let offset = region.slot_ref(slots[i]).unwrap().offset();
        region.free(slots[i]).unwrap();
        let short = region.write(&payload(i, len, 2), EngineId::Wal).unwrap();
        assert_eq!(
            region.slot_ref(short).unwrap().offset(),
            offset,
            "reused the freed extent's start"
        );
        shorts.push(short);
    }
    // A batch gathers and is punched.
    for i in [20, 40, 60, 80, 120, 140] {
        region.free(slots[i]).unwrap();
    }
    assert!(
        region.stats().punched_bytes > punched_before,
        "{:?}",
        region.stats()
    );
    // The short slots' places are written again.
    for (k, (&i, &len)) in reused.iter().zip(&lengths).enumerate() {
        region.free(shorts[k]).unwrap();
        shorts[k] = region.write(&payload(i, len, 3), EngineId::Wal).unwrap();
    }
    region.sync().unwrap();
    let punched = region.stats().punched_bytes - punched_before;
    let missing = missing_bytes(&path) - missing_before;
    println!("punched {punched} more bytes, the file lacks blocks for {missing} more");
    assert!(
        missing + 8 * KIB as u64 >= punched,
        "punched {punched} bytes, but only {missing} are missing from the file"
    );
    for (k, (&i, &len)) in reused.iter().zip(&lengths).enumerate() {
        assert!(region.read(shorts[k]).unwrap() == &payload(i, len, 3)[..]);
    }
    let freed = [20, 40, 60, 80, 120, 140];
    for (i, &slot) in slots.iter().enumerate() {
        if !freed.contains(&i) && !reused.contains(&i) {
            assert!(region.read(slot).unwrap() == &payload(i, 256 * KIB, 1)[..]);
        }
    }
    region.check_consistency().unwrap();
}

/// The page cache outlives the writer: a region that punches holes, opened
/// on a file the writer before it filled in 1 MiB pieces (it never punched),
/// must not cut the 1 MiB folios that writer left.
#[test]
fn holes_survive_a_writer_before_that_did_not_punch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let tuning = |punch| MemoryTuning {
        overflow_initial_bytes: 8 * MIB,
        overflow_max_bytes: 64 * MIB,
        overflow_punch_hole_bytes: punch,
        ..MemoryTuning::default()
    };
    let mut region = OverflowRegion::open_with_tuning(&path, &tuning(0)).unwrap();
    let slots = write_many(&mut region, 0, 24, 256 * KIB, 1, EngineId::Vector);
    region.sync().unwrap();
    drop(region);
    let mut region =
        OverflowRegion::open_with_tuning(&path, &tuning(MemoryTuning::DEFAULT_PUNCH_HOLE_BYTES))
            .unwrap();
    assert_holes_survive_short_writes_next_to_them(&mut region, &slots);
}

/// A page that reads as zeros at open (here: a lost page, punched behind
/// the region's back) but that recovery then stores a repair tag into is
/// not in the region's map of holes: refilling it with zeros later would
/// wipe the tag.
#[test]
fn a_repair_tag_in_a_page_that_read_as_a_hole_is_not_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 4 * MIB, 16 * MIB).unwrap();
    // Extents of exactly one page: 4064 payload bytes + the 32-byte header.
    let a = region
        .write(&payload(0, 4064, 1), EngineId::Vector)
        .unwrap();
    let b = region
        .write(&payload(1, 4064, 1), EngineId::Vector)
        .unwrap();
    let c = region.write(&payload(2, 100, 1), EngineId::Vector).unwrap();
    region.sync().unwrap();
    drop(region);
    // B's page (the second page of the data area) is lost: zeros, a hole.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        8192,
        4096,
    )
    .unwrap();
    drop(file);

    let mut region = OverflowRegion::open_with_config(&path, 4 * MIB, 16 * MIB).unwrap();
    let report = region.recovery();
    assert_eq!(report.dropped.len(), 1, "{report:?}");
    assert!(report.repairs > 0, "{report:?}");
    assert!(region.read(b).is_err());
    // A write into B's old place must not count it as a refilled hole.
    let punched = region.stats().punched_bytes;
    let again = region.write(&payload(3, 4064, 2), EngineId::Wal).unwrap();
    assert_eq!(
        region.slot_ref(again).unwrap().offset(),
        8192,
        "reused B's place"
    );
    assert_eq!(
        region.stats().punched_bytes,
        punched,
        "the repaired page was counted as a hole"
    );
    assert!(region.read(a).unwrap() == &payload(0, 4064, 1)[..]);
    assert!(region.read(c).unwrap() == &payload(2, 100, 1)[..]);
    region.check_consistency().unwrap();
}

/// Free pages are punched in batches (a tenth of the live bytes, about
/// 900 KiB here, with the default 64 KiB threshold): an extent freed and written again
/// before a batch gathers is never punched, its new bytes are intact, and
/// once a batch gathers its pages are punched. (Extents of 90 KiB: from
/// 96 KiB on, `write_direct` writes them at the end, and freeing one
/// punches its middle at once.) Automatic compaction is off: it punches
/// what waits as soon as the region holds more than half its slack beyond
/// its live bytes (`automatic_compaction_punches_the_batch_first` checks
/// that).
#[test]
fn free_pages_are_punched_in_batches_and_never_under_a_new_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let tuning = MemoryTuning {
        overflow_initial_bytes: 64 * MIB,
        overflow_max_bytes: 64 * MIB,
        overflow_auto_compact: false,
        ..MemoryTuning::default()
    };
    let mut region = OverflowRegion::open_with_tuning(&path, &tuning).unwrap();
    // 116 extents of 90 KiB live: the batch is a tenth of the live bytes,
    // 976 896 bytes after ten frees, 958 464 after twelve.
    let mut slots: Vec<(usize, Vec<u8>)> = (0..116)
        .map(|i| {
            let data = payload(i, 90 * KIB, 1);
            (region.write(&data, EngineId::Vector).unwrap(), data)
        })
        .collect();
    // Two non-adjacent extents freed: below the batch.
    for i in [10, 20] {
        region.free(slots[i].0).unwrap();
    }
    assert_eq!(region.stats().punched_bytes, 0, "punched before a batch");
    // Written again, in the same places.
    let used = region.used_bytes();
    for i in [10, 20] {
        let data = payload(1000 + i, 90 * KIB, 3);
        slots[i] = (region.write(&data, EngineId::Wal).unwrap(), data);
    }
    assert_eq!(
        region.used_bytes(),
        used,
        "the writes reused the freed extents"
    );
    // More frees, none adjacent, until a batch gathers. Each extent is
    // shorter than eight granules, so its whole 32 KiB granules wait: one or
    // two of them. Ten of those are short of the batch; thirty are not.
    let candidates: Vec<usize> = (1..31).map(|k| k * 3).collect();
    assert!(!candidates.contains(&10) && !candidates.contains(&20));
    let mut freed = Vec::new();
    for &i in &candidates {
        region.free(slots[i].0).unwrap();
        freed.push(i);
        if region.stats().punched_bytes > 0 {
            break;
        }
    }
    let punched = region.stats().punched_bytes;
    assert!(
        freed.len() > 10 && punched > 0,
        "punched {punched} bytes after {} frees",
        freed.len()
    );
    // The batch, in whole granules of the freed extents only (not the
    // pages written again above).
    assert!(
        punched >= 900 * KIB as u64
            && punched <= (freed.len() * 64 * KIB) as u64
            && punched.is_multiple_of(32 * KIB as u64),
        "punched {punched} bytes after {} frees, expected their whole granules",
        freed.len()
    );
    for (index, (slot, data)) in slots.iter().enumerate() {
        if !freed.contains(&index) {
            assert!(
                region.read(*slot).unwrap() == &data[..],
                "slot {slot} changed"
            );
        }
    }
    region.check_consistency().unwrap();
}

/// Free pages still waiting for a batch are punched when the region is
/// dropped.
#[test]
fn dropping_the_region_punches_the_pages_waiting_for_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap();
    let slots: Vec<usize> = write_many(&mut region, 0, 544, 90 * KIB, 1, EngineId::Vector);
    region.sync().unwrap();
    for i in [10, 20] {
        region.free(slots[i]).unwrap();
    }
    assert_eq!(region.stats().punched_bytes, 0, "punched before a batch");
    let before = blocks_bytes(&path);
    drop(region);
    let after = blocks_bytes(&path);
    assert!(
        before - after >= 2 * 32 * KIB as u64,
        "st_blocks fell by {} bytes",
        before - after
    );
    let region = OverflowRegion::open_with_config(&path, 64 * MIB, 64 * MIB).unwrap();
    assert!(region.read(slots[11]).unwrap() == &payload(11, 90 * KIB, 1)[..]);
    region.check_consistency().unwrap();
}

#[test]
fn punching_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let tuning = MemoryTuning {
        overflow_initial_bytes: 4 * MIB,
        overflow_max_bytes: 64 * MIB,
        overflow_punch_hole_bytes: 0,
        overflow_shrink: false,
        ..MemoryTuning::default()
    };
    let mut region = OverflowRegion::open_with_tuning(&path, &tuning).unwrap();
    let a = region.write(&vec![1; MIB], EngineId::Vector).unwrap();
    region.write(b"guard", EngineId::Vector).unwrap();
    region.free(a).unwrap();
    assert_eq!(region.stats().punched_bytes, 0);
    let bad = MemoryTuning {
        overflow_punch_hole_bytes: 100,
        ..tuning
    };
    let other = dir.path().join("other");
    assert!(matches!(
        OverflowRegion::open_with_tuning(&other, &bad),
        Err(Error::InvalidConfig { .. })
    ));
}

/// A long payload written at the end has its middle in long folios, which
/// the file is never truncated inside; freed, it must still let the file
/// shrink to within 1 MiB of where it would have (the live 4 MiB below it
/// and a quarter of that as headroom).
#[test]
fn the_file_shrinks_after_a_long_payload_at_the_end_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * KIB, 256 * MIB).unwrap();
    let live: Vec<usize> = write_many(&mut region, 0, 16, 256 * KIB, 3, EngineId::Query);
    let long = region
        .write(&payload(1, 32 * MIB, 4), EngineId::Query)
        .unwrap();
    let grown = region.capacity();
    region.free(long).unwrap();
    // Short writes and frees at the end, so the recent peak decays.
    for i in 0..16 {
        let slot = region.write(&payload(i, 100, 5), EngineId::Query).unwrap();
        region.free(slot).unwrap();
    }
    let shrunk = region.capacity();
    println!("grown to {grown}, shrunk to {shrunk}");
    assert!(
        shrunk <= 4 * MIB + MIB + 2 * MIB,
        "file {shrunk} after freeing the long payload, was {grown}"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), shrunk as u64);
    for (i, &slot) in live.iter().enumerate() {
        assert!(region.read(slot).unwrap() == &payload(i, 256 * KIB, 3)[..]);
    }
    region.check_consistency().unwrap();
}

/// Filled, then emptied in the order written: the end of the region moves
/// down only at the last free, when nothing is live; the file goes back to
/// its initial size then, whatever its recent peak.
#[test]
fn an_emptied_region_goes_back_to_its_initial_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, MIB, 256 * MIB).unwrap();
    let slots: Vec<usize> = write_many(&mut region, 0, 256, 256 * KIB, 3, EngineId::Query);
    let grown = region.capacity();
    assert!(grown >= 64 * MIB, "{grown}");
    for &slot in &slots {
        region.free(slot).unwrap();
    }
    assert_eq!(region.capacity(), MIB);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), MIB as u64);
    region.check_consistency().unwrap();
    // And it grows again as before.
    write_many(&mut region, 0, 8, 256 * KIB, 4, EngineId::Query);
    region.check_consistency().unwrap();
}

#[test]
fn the_file_shrinks_when_the_tail_is_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * KIB, 256 * MIB).unwrap();
    let slots: Vec<usize> = write_many(&mut region, 0, 64, 256 * KIB, 3, EngineId::Query);
    let grown = region.capacity();
    assert!(grown >= 16 * MIB);
    for &slot in slots.iter().rev() {
        region.free(slot).unwrap();
    }
    assert_eq!(region.used_bytes(), 0);
    let shrunk = region.capacity();
    println!("grown to {grown}, shrunk to {shrunk}");
    assert!(
        shrunk < grown / 4,
        "file {shrunk} after freeing everything, was {grown}"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), shrunk as u64);
    assert!(shrunk >= 64 * KIB);
    region.check_consistency().unwrap();
    let slot = region
        .write(&payload(1, 3 * MIB, 4), EngineId::Query)
        .unwrap();
    assert_eq!(region.read(slot).unwrap(), payload(1, 3 * MIB, 4));
}

#[test]
fn a_write_free_loop_at_the_edge_does_not_resize_the_file_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * KIB, 256 * MIB).unwrap();
    for i in 0..16 {
        region
            .write(&payload(i, 256 * KIB, 5), EngineId::Query)
            .unwrap();
    }
    let mut sizes = vec![region.capacity()];
    for i in 0..200 {
        let slot = region
            .write(&payload(i, 2 * MIB, 6), EngineId::Query)
            .unwrap();
        sizes.push(region.capacity());
        region.free(slot).unwrap();
        sizes.push(region.capacity());
    }
    let changes = sizes.windows(2).filter(|pair| pair[0] != pair[1]).count();
    assert!(
        changes <= 2,
        "the file changed size {changes} times: {sizes:?}"
    );
}

#[test]
fn readers_keep_the_file_from_shrinking_and_never_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * KIB, 256 * MIB).unwrap();
    let slots: Vec<usize> = write_many(&mut region, 0, 64, 256 * KIB, 7, EngineId::Sparse);
    let handles: Vec<_> = slots.iter().map(|&s| region.slot_ref(s).unwrap()).collect();
    let grown = region.capacity();
    let reader = OverflowReader::open(&path).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            let (mut ok, mut changed) = (0u64, 0u64);
            let mut buf = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, handle) in handles.iter().enumerate() {
                    match reader.read_into(handle, &mut buf) {
                        Ok(()) => {
                            assert_eq!(buf, payload(i, 256 * KIB, 7));
                            ok += 1;
                        }
                        Err(Error::SlotChanged { .. }) => changed += 1,
                        Err(other) => panic!("{other}"),
                    }
                }
            }
            (ok, changed)
        });
        for &slot in slots.iter().rev() {
            region.free(slot).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, changed) = reading.join().unwrap();
        println!("reads ok {ok}, changed {changed}");
        assert!(changed > 0);
    });
    assert_eq!(region.capacity(), grown, "the file shrank under a reader");
    assert!(
        region.stats().punched_bytes > 0,
        "the tail was not punched instead"
    );
    drop(reader);
    // With the reader gone, the next give-back shrinks the file.
    let slot = region.write(b"x", EngineId::Sparse).unwrap();
    region.free(slot).unwrap();
    assert!(
        region.capacity() < grown / 4,
        "{} vs {grown}",
        region.capacity()
    );
    region.check_consistency().unwrap();
}

#[test]
fn compaction_closes_every_gap_and_keeps_every_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * KIB, 256 * MIB).unwrap();
    let mut live = Vec::new();
    for i in 0..600 {
        let len = [10, 100, 1000, 5000, 70_000][i % 5];
        let slot = region
            .write(&payload(i, len, 8), EngineId::ALL[i % 7])
            .unwrap();
        live.push((slot, i, len));
    }
    let mut kept = Vec::new();
    for (n, entry) in live.into_iter().enumerate() {
        if n % 3 == 0 {
            kept.push(entry);
        } else {
            region.free(entry.0).unwrap();
        }
    }
    let live_bytes = region.live_bytes() as u64;
    let before = region.stats();
    let report = region.compact().unwrap();
    let after = region.stats();
    println!(
        "{report:?} free extents {} free bytes {}",
        after.free_extents, after.free_bytes
    );
    assert_eq!(report.complete, after.free_extents == 0);
    assert_eq!(
        after.used_bytes,
        after.header_bytes + live_bytes + after.slack_bytes + after.free_bytes
    );
    // Gaps no extent above them fits into may stay; they are few and small.
    assert!(
        after.used_bytes <= (live_bytes + 48 * kept.len() as u64) * 103 / 100,
        "used {} for {live_bytes} live bytes",
        after.used_bytes
    );
    assert!(report.file_size_after < report.file_size_before);
    assert!(before.used_bytes > after.used_bytes);
    for &(slot, i, len) in &kept {
        assert_eq!(region.read(slot).unwrap(), payload(i, len, 8));
        assert_eq!(region.engine(slot).unwrap(), EngineId::ALL[i % 7]);
    }
    region.check_consistency().unwrap();
    drop(region);
    let region = OverflowRegion::open_with_config(&path, 64 * KIB, 256 * MIB).unwrap();
    region.check_consistency().unwrap();
    for &(slot, i, len) in &kept {
        assert_eq!(region.read(slot).unwrap(), payload(i, len, 8));
    }
}

#[test]
fn compact_step_does_a_bounded_amount() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 64 * KIB, 256 * MIB).unwrap();
    let slots: Vec<usize> = (0..200)
        .map(|i| region.write(&payload(i, 4000, 9), EngineId::Crdt).unwrap())
        .collect();
    for &slot in slots.iter().step_by(2) {
        region.free(slot).unwrap();
    }
    let mut steps = 0;
    loop {
        let report = region.compact_step(16 * KIB as u64).unwrap();
        assert!(report.bytes_moved <= 16 * KIB as u64 + 4032, "{report:?}");
        region.check_consistency().unwrap();
        steps += 1;
        if report.complete {
            break;
        }
        assert!(report.extents_moved > 0, "no progress: {report:?}");
    }
    assert!(steps > 5, "{steps} steps");
    assert_eq!(region.stats().free_extents, 0);
    for &slot in slots.iter().skip(1).step_by(2) {
        assert_eq!(region.read(slot).unwrap(), payload(slot, 4000, 9));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Free(usize),
    CompactStep(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop_oneof![0usize..100, 100usize..5000, 60_000usize..140_000].prop_map(Op::Write),
        3 => any::<usize>().prop_map(Op::Free),
        1 => prop_oneof![Just(0u64), 1u64..20_000, Just(u64::MAX)].prop_map(Op::CompactStep),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn compaction_at_random_points_keeps_every_slot(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let open = || OverflowRegion::open_with_config(&path, 64 * KIB, 64 * MIB).unwrap();
        let mut region = open();
        let mut model = std::collections::BTreeMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Write(len) => {
                    let data = payload(n, len, n as u8);
                    let slot = region.write(&data, EngineId::Timeseries).unwrap();
                    model.insert(slot, data);
                }
                Op::Free(pick) if !model.is_empty() => {
                    let slot = *model.keys().nth(pick % model.len()).unwrap();
                    region.free(slot).unwrap();
                    model.remove(&slot);
                }
                Op::Free(_) => {}
                Op::CompactStep(budget) => {
                    let report = if budget == u64::MAX {
                        region.compact().unwrap()
                    } else {
                        region.compact_step(budget).unwrap()
                    };
                    prop_assert!(report.used_bytes_after <= report.used_bytes_before, "{:?}", report);
                    prop_assert_eq!(report.complete, region.stats().free_extents == 0);
                }
                Op::Reopen => {
                    drop(region);
                    region = open();
                }
            }
            prop_assert_eq!(region.check_consistency(), Ok(()));
            prop_assert_eq!(region.live_slot_count(), model.len());
            for (&slot, data) in &model {
                prop_assert_eq!(region.read(slot).unwrap(), &data[..]);
            }
        }
    }
}

/// A growing file keeps at most the slack of its live bytes ahead (and at
/// least a 1 MiB step): with the default 10 %, filling 96 MiB in 1 MiB
/// payloads from a 1 MiB file never holds more than 1.1 x live + 1 MiB of
/// blocks. With 0 % it holds nothing ahead: the file ends at the page
/// after the last payload, and its blocks pass that only by file-system
/// metadata (ext4's extent tree). (It grew by half its size before.)
#[test]
fn a_growing_file_holds_at_most_its_slack_ahead() {
    for slack in [MemoryTuning::DEFAULT_SLACK_PERCENT, 0] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let tuning = MemoryTuning {
            overflow_initial_bytes: MIB,
            overflow_max_bytes: 1 << 30,
            overflow_slack_percent: slack,
            ..MemoryTuning::default()
        };
        let mut region = OverflowRegion::open_with_tuning(&path, &tuning).unwrap();
        let mut worst = 0.0f64;
        for i in 0..96 {
            region.write(&payload(i, MIB, 1), EngineId::Query).unwrap();
            let stats = region.stats();
            let used = stats.live_bytes + stats.header_bytes + 4096;
            let (bound, metadata) = if slack == 0 {
                (used.next_multiple_of(4096), 16 << 10)
            } else {
                (used + used * u64::from(slack) / 100 + MIB as u64, 0)
            };
            let (file, blocks) = (stats.file_size, blocks_bytes(&path));
            assert!(
                file <= bound && blocks <= bound + metadata,
                "slack {slack}%: file {file}, blocks {blocks}, live {}, bound {bound}",
                stats.live_bytes
            );
            worst = worst.max(file as f64 / stats.live_bytes as f64);
        }
        // The bound is not loose: the file does grow ahead.
        assert!(worst > 1.0, "slack {slack}%: {worst}");
    }
}
