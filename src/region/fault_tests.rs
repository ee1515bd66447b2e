//! Error paths of write, free, sync, give-back and compaction, reached by
//! making the system calls fail on purpose (`sys::fault`), and states a
//! stopped process leaves behind, made by hand.

use super::*;
use crate::sys::fault::{self, Call};
use std::os::unix::fs::FileExt;

const MIB: usize = 1 << 20;

fn open(path: &Path) -> OverflowRegion {
    OverflowRegion::open_with_config(path, MIB, 64 * MIB).unwrap()
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed * 7) as u8).collect()
}

/// Asserts that `error` is a failed `pwrite`.
fn assert_pwrite_error(error: &Error) {
    assert!(
        matches!(
            error,
            Error::Io {
                operation: "pwrite",
                ..
            }
        ),
        "{error}"
    );
}

/// Writes 100 slots of 1000 bytes (`pattern(i, 1000)`) and frees the
/// even ones, so a compaction step has gaps to move the odd ones into.
fn write_and_free_every_second(region: &mut OverflowRegion) -> Vec<usize> {
    let slots: Vec<usize> = (0..100)
        .map(|i| region.write(&pattern(i, 1000), EngineId::Query).unwrap())
        .collect();
    for &slot in slots.iter().step_by(2) {
        region.free(slot).unwrap();
    }
    slots
}

/// Issue "space that keeps a budget": if the sync inside a compaction step
/// failed, the slot table pointed at the copies while the old places stayed
/// live on disk, so a later `free` freed only the copy and the slot came
/// back at the next open. The step is now undone when its sync fails.
#[test]
fn a_compaction_step_whose_sync_fails_is_undone_and_a_later_free_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    let slots = write_and_free_every_second(&mut region);
    region.sync().unwrap();
    let top = slots[99];
    let before = region.slot_ref(top).unwrap();

    fault::fail_after(Call::Sync, 0, libc::EIO);
    let error = region.compact_step(u64::MAX).unwrap_err();
    fault::disarm();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    region.check_consistency().unwrap();
    // The slots point at their old places again.
    assert_eq!(region.slot_ref(top).unwrap().offset(), before.offset());
    for (i, &slot) in slots.iter().enumerate().skip(1).step_by(2) {
        assert_eq!(region.read(slot).unwrap(), pattern(i, 1000));
    }

    region.free(top).unwrap();
    drop(region);
    let region = open(&path);
    assert!(
        region.recovery().dropped.is_empty(),
        "{:?}",
        region.recovery()
    );
    assert!(
        region.read(top).is_err(),
        "a free that returned came back at the next open"
    );
    for (i, &slot) in slots.iter().enumerate().skip(1).step_by(2).take(49) {
        assert_eq!(region.read(slot).unwrap(), pattern(i, 1000), "slot {slot}");
    }
    region.check_consistency().unwrap();
}

/// Review of the payload checksums at sync: a compaction step sums the
/// copies before its sync; when that sync failed and the moves were
/// undone, the old places were neither summed nor listed any more, so no
/// later sync summed them and a power loss after that sync dropped them.
#[test]
fn slots_unsummed_when_a_compaction_sync_fails_are_summed_by_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    write_and_free_every_second(&mut region);
    // No sync: the live slots are unsummed when the step moves them.
    fault::fail_after(Call::Sync, 0, libc::EIO);
    region.compact_step(u64::MAX).unwrap_err();
    fault::disarm();
    region.sync().unwrap();
    let report = region.verify(|_, _| {});
    assert_eq!(report.slots_unsummed, 0, "{report:?}");
    assert_eq!(report.slots_checked, 50, "{report:?}");
    region.check_consistency().unwrap();
}

/// Review of the payload checksums at sync: when this boot's id cannot be
/// read, no open can tell a process crash from a machine crash, so
/// recovery drops every payload without a checksum, and a kill -9 lost
/// every slot written since the last sync. Such a writer now sums each
/// payload at its write.
#[test]
fn without_a_boot_id_every_write_is_summed_at_once_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    // With a boot id, writes wait for the next sync to be summed.
    let mut region = open(&dir.path().join("control"));
    region.write(&pattern(0, 1000), EngineId::Query).unwrap();
    assert_eq!(region.verify(|_, _| {}).slots_unsummed, 1);

    fault::fail_after(Call::BootId, 0, libc::ENOENT);
    let mut region = open(&path);
    fault::disarm();
    let slots: Vec<usize> = (0..20)
        .map(|i| region.write(&pattern(i, 1000), EngineId::Query).unwrap())
        .collect();
    let report = region.verify(|_, _| {});
    assert_eq!(report.slots_unsummed, 0, "{report:?}");
    assert_eq!(report.slots_checked, 20, "{report:?}");
    // A process killed here leaves the file as the page cache holds it:
    // a copy taken while the region is open, before its drop sums.
    let killed = dir.path().join("killed");
    std::fs::copy(&path, &killed).unwrap();
    drop(region);
    fault::fail_after(Call::BootId, 0, libc::ENOENT);
    let region = open(&killed);
    fault::disarm();
    assert!(
        region.recovery().dropped.is_empty(),
        "{:?}",
        region.recovery()
    );
    for (i, &slot) in slots.iter().enumerate() {
        assert_eq!(region.read(slot).unwrap(), pattern(i, 1000));
    }
}

/// A write that needs the file to grow, when `fallocate` fails: an error,
/// and the region exactly as it was; the next write works.
#[test]
fn a_failed_growth_is_an_error_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    let kept = region.write(b"kept", EngineId::Wal).unwrap();
    let (capacity, used, count) = (region.capacity(), region.used_bytes(), region.slot_count());

    fault::fail_after(Call::Fallocate, 0, libc::ENOSPC);
    let error = region
        .write(&vec![1u8; 2 * MIB], EngineId::Query)
        .unwrap_err();
    fault::disarm();
    assert!(
        matches!(&error, Error::Io { operation: "fallocate", source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
        "{error}"
    );
    assert_eq!(
        (region.capacity(), region.used_bytes(), region.slot_count()),
        (capacity, used, count)
    );
    region.check_consistency().unwrap();
    let slot = region.write(&vec![2u8; 2 * MIB], EngineId::Query).unwrap();
    assert_eq!(region.read(slot).unwrap().len(), 2 * MIB);
    assert_eq!(region.read(kept).unwrap(), b"kept");
}

/// A signal that interrupts `fallocate` (`EINTR`) is not a failed growth:
/// the call is made again and the write succeeds.
#[test]
fn a_growth_interrupted_by_a_signal_is_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    let capacity = region.capacity();
    fault::fail_after(Call::Fallocate, 0, libc::EINTR);
    let written = region.write(&vec![1u8; 2 * MIB], EngineId::Query);
    let fired = !fault::armed(Call::Fallocate);
    fault::disarm();
    assert!(fired, "the growth did not call fallocate");
    let slot = written.unwrap();
    assert!(region.capacity() > capacity);
    assert_eq!(region.read(slot).unwrap(), vec![1u8; 2 * MIB]);
    region.check_consistency().unwrap();
}

/// A signal that interrupts a punch (`EINTR`) is not a file system that
/// cannot punch: the call is made again and the pages are given back.
#[test]
fn a_punch_interrupted_by_a_signal_is_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    region.write(&[1u8; 100], EngineId::Wal).unwrap();
    let big = region
        .write(&vec![2u8; 512 << 10], EngineId::Query)
        .unwrap();
    region.write(&[3u8; 100], EngineId::Wal).unwrap();
    let allocated = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path).unwrap().blocks() * 512
    };
    let before = allocated();
    fault::fail_after(Call::Punch, 0, libc::EINTR);
    // A long extent's middle is punched by its free, not later. (A failed
    // punch counts its range as a hole all the same: the blocks the file
    // holds are what tell.)
    region.free(big).unwrap();
    let fired = !fault::armed(Call::Punch);
    fault::disarm();
    assert!(fired, "the free punched nothing");
    let after = allocated();
    assert!(
        after + (256 << 10) <= before,
        "allocated {before} bytes before the free, {after} after"
    );
    region.check_consistency().unwrap();
}

/// A signal that interrupts a reader's wait for the readers' lock
/// (`EINTR`, while a writer truncates) is not an error: it waits again.
#[test]
fn a_reader_whose_lock_wait_is_interrupted_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    let slot = region.write(b"read me", EngineId::Wal).unwrap();
    let handle = region.slot_ref(slot).unwrap();
    fault::fail_after(Call::ReadersLock, 0, libc::EINTR);
    let reader = crate::OverflowReader::open(&path);
    let fired = !fault::armed(Call::ReadersLock);
    fault::disarm();
    assert!(fired, "opening a reader took no readers' lock");
    let mut out = Vec::new();
    reader.unwrap().read_into(&handle, &mut out).unwrap();
    assert_eq!(out, b"read me");
}

/// Refilling punched pages for a write into freed space, when `pwrite`
/// fails: an error, the pages still known as holes, and a later write
/// into the same place works and reads back.
#[test]
fn a_failed_refill_is_an_error_and_the_space_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    let first = region.write(&[1u8; 100], EngineId::Wal).unwrap();
    let big = region
        .write(&vec![2u8; 512 << 10], EngineId::Query)
        .unwrap();
    let last = region.write(&[3u8; 100], EngineId::Wal).unwrap();
    region.free(big).unwrap();
    region.sync().unwrap();
    assert!(
        region.stats().punched_bytes > 0,
        "the freed extent was punched"
    );
    let holes_before = region.policy.holes.bytes();

    fault::fail_after(Call::Pwrite, 0, libc::ENOSPC);
    let error = region
        .write(&vec![4u8; 40 << 10], EngineId::Query)
        .unwrap_err();
    fault::disarm();
    assert_pwrite_error(&error);
    assert_eq!(region.policy.holes.bytes(), holes_before);
    region.check_consistency().unwrap();

    let slot = region.write(&vec![4u8; 40 << 10], EngineId::Query).unwrap();
    assert_eq!(region.read(slot).unwrap(), vec![4u8; 40 << 10]);
    assert_eq!(region.read(first).unwrap(), [1u8; 100]);
    assert_eq!(region.read(last).unwrap(), [3u8; 100]);
    drop(region);
    let region = open(&path);
    assert!(region.recovery().dropped.is_empty());
    assert_eq!(region.read(slot).unwrap(), vec![4u8; 40 << 10]);
}

/// A refill that fails after part of a payload went into the holes
/// (the second of its `pwrite` calls): an error, the region unchanged
/// (the hole it failed in punched again, the part written too, and
/// known as one), and the same write then works.
#[test]
fn a_refill_that_fails_halfway_through_its_payload_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    region.write(&pattern(1, 100), EngineId::Wal).unwrap();
    let big = region
        .write(&pattern(2, 900 << 10), EngineId::Query)
        .unwrap();
    region.write(&pattern(3, 100), EngineId::Wal).unwrap();
    region.free(big).unwrap();
    let holes_before = region.policy.holes.bytes();
    let live_before = region.stats().live_bytes;

    fault::fail_after(Call::Pwrite, 1, libc::ENOSPC);
    let error = region
        .write(&pattern(4, 200 << 10), EngineId::Query)
        .unwrap_err();
    let fired = !fault::armed(Call::Pwrite);
    fault::disarm();
    assert!(fired, "the second pwrite failed");
    assert_pwrite_error(&error);
    assert_eq!(region.stats().live_bytes, live_before);
    // The hole it failed in, the first call's granules with it, is
    // punched again.
    assert_eq!(region.policy.holes.bytes(), holes_before);
    region.check_consistency().unwrap();

    let slot = region
        .write(&pattern(4, 200 << 10), EngineId::Query)
        .unwrap();
    assert_eq!(region.read(slot).unwrap(), pattern(4, 200 << 10));
    drop(region);
    let region = open(&path);
    assert_eq!(region.read(slot).unwrap(), pattern(4, 200 << 10));
    assert_eq!(region.live_slots().count(), 3);
}

/// `sync` reports a failed `msync`/`fsync`, and a later one that works
/// succeeds.
#[test]
fn a_failed_sync_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    region.write(b"x", EngineId::Wal).unwrap();
    fault::fail_after(Call::Sync, 0, libc::EIO);
    let error = region.sync().unwrap_err();
    fault::disarm();
    assert!(
        matches!(
            error,
            Error::Io {
                operation: "msync/fsync",
                ..
            }
        ),
        "{error}"
    );
    region.sync().unwrap();
}

/// A punch that fails leaves the pages allocated and known as such: the
/// region stays consistent and the space is reused.
#[test]
fn a_failed_punch_keeps_the_region_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    let a = region.write(&[1u8; 100], EngineId::Wal).unwrap();
    let big = region
        .write(&vec![2u8; 512 << 10], EngineId::Query)
        .unwrap();
    region.write(&[3u8; 100], EngineId::Wal).unwrap();
    fault::fail_after(Call::Punch, 0, libc::EIO);
    region.free(big).unwrap();
    region.sync().unwrap();
    fault::disarm();
    region.check_consistency().unwrap();
    let again = region
        .write(&vec![5u8; 300 << 10], EngineId::Query)
        .unwrap();
    assert_eq!(region.read(again).unwrap(), vec![5u8; 300 << 10]);
    assert_eq!(region.read(a).unwrap(), [1u8; 100]);
}

/// Writes a 100-byte slot, nine of 60 KiB and two more of 100 bytes, then
/// frees the nine: a free run of more than eight granules beside live
/// slots, so it is cut to the page next to them (inside their granules).
fn free_a_run_beside_live_slots(region: &mut OverflowRegion) {
    region.write(&[1u8; 100], EngineId::Query).unwrap();
    let run: Vec<usize> = (0..9)
        .map(|i| {
            region
                .write(&pattern(i, 60 << 10), EngineId::Query)
                .unwrap()
        })
        .collect();
    region.write(&[3u8; 100], EngineId::Query).unwrap();
    region.write(&[4u8; 100], EngineId::Query).unwrap();
    for slot in run {
        region.free(slot).unwrap();
    }
}

/// The ends of the holes that lie strictly inside a punching granule.
fn cuts_inside_granules(region: &OverflowRegion) -> Vec<u64> {
    let granule = region.settings.punch_granule().unwrap();
    region
        .policy
        .holes
        .iter()
        .flat_map(|(start, end)| [start, end])
        .filter(|&at| at % granule != 0 && at < region.mapping.len())
        .collect()
}

/// A long free run is cut to the page beside live data, inside the
/// granules the zeros ahead were written in; each such cut writes its
/// granule back first (a dirty folio cut in part may stay whole, and a
/// store to it would need the punched blocks again). When that write-back
/// fails, the cut is not made and the error reaches the next `sync`.
#[test]
fn a_cut_inside_a_granule_is_made_only_after_its_write_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    free_a_run_beside_live_slots(&mut region);
    assert!(
        !cuts_inside_granules(&region).is_empty(),
        "holes {:?}",
        region.policy.holes
    );
    region.sync().unwrap();

    let path = dir.path().join("failing");
    let mut region = open(&path);
    for _ in 0..64 {
        fault::fail_after(Call::WriteBack, 0, libc::EIO);
    }
    free_a_run_beside_live_slots(&mut region);
    fault::disarm();
    assert_eq!(
        cuts_inside_granules(&region),
        [],
        "holes {:?}",
        region.policy.holes
    );
    assert!(
        region.stats().punched_bytes > 0,
        "whole granules are still punched"
    );
    let error = region.sync().unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    region.check_consistency().unwrap();
}

/// A process that stops between the two stores that free a moved slot's
/// old place (the mark that tells readers it moved, then the free tag)
/// leaves a live tag over a header that no longer checks out: recovery
/// frees it as the old place of a move (the copy is committed), reports
/// nothing dropped, and the slot reads its bytes at the copy.
#[test]
fn a_process_stopped_between_the_mark_and_the_free_of_a_moved_slot_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    // A, B, C, D of 1000 bytes and a long E on top: with A freed, a step
    // finds no room below for E and moves D into A's place, so D's old
    // place lies between live C and E (freed on its own, not merged).
    let lens = [1000, 1000, 1000, 1000, 5000];
    let slots: Vec<usize> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| region.write(&pattern(i, len), EngineId::Query).unwrap())
        .collect();
    region.free(slots[0]).unwrap();
    let d = slots[3];
    let old = region.slots.get(d).unwrap();
    let handle = region.slot_ref(d).unwrap();
    assert_eq!(region.compact_step(u64::MAX).unwrap().extents_moved, 1);
    assert_ne!(region.slots.get(d).unwrap().offset, old.offset, "D moved");
    assert!(matches!(
        region.read_ref(&handle),
        Err(Error::SlotChanged { moved: true, .. })
    ));

    // Back to the moment between the two stores: the tag still live.
    region.mapping.store_word(
        old.offset,
        Tag::Live {
            len: old.extent_len,
        }
        .encode(),
    );
    let crashed = dir.path().join("crashed");
    std::fs::copy(&path, &crashed).unwrap();
    let reopened = open(&crashed);
    assert!(
        reopened.recovery().dropped.is_empty(),
        "{:?}",
        reopened.recovery()
    );
    assert!(reopened.recovery().repairs >= 1);
    for (i, &slot) in slots.iter().enumerate().skip(1) {
        assert_eq!(reopened.read(slot).unwrap(), pattern(i, lens[i]));
    }
    assert_eq!(reopened.stats().live_slots, 4);
    reopened.check_consistency().unwrap();
}

fn open_pwrite_stores(path: &Path) -> OverflowRegion {
    let tuning = MemoryTuning {
        overflow_initial_bytes: MIB,
        overflow_max_bytes: 64 * MIB,
        overflow_pwrite_stores: Some(true),
        ..MemoryTuning::default()
    };
    OverflowRegion::open_with_tuning(path, &tuning).unwrap()
}

/// `free_many` where every store is a `pwrite` and one fails partway
/// through the run: an error, the slots after it are not freed, and the
/// reopened region holds every slot the run did not reach, with its bytes,
/// and none of those it freed before the failure.
#[test]
fn free_many_stops_at_a_failed_store_and_the_slots_after_it_stay() {
    for skip in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let mut region = open_pwrite_stores(&path);
        let slots: Vec<usize> = (0..10)
            .map(|i| {
                region
                    .write(&pattern(i, 2000 + i), EngineId::Query)
                    .unwrap()
            })
            .collect();
        region.sync().unwrap();
        let run = &slots[2..8];
        fault::fail_after(Call::Pwrite, skip, libc::EIO);
        let error = region.free_many(run).unwrap_err();
        let fired = !fault::armed(Call::Pwrite);
        fault::disarm();
        assert!(fired, "skip {skip}: the store failed");
        assert!(matches!(error, Error::Io { .. }), "skip {skip}: {error}");
        // Freed in memory: the slots before the failure and the one it hit.
        let reached = run
            .iter()
            .filter(|&&slot| region.read(slot).is_err())
            .count();
        assert!(
            reached >= 1 && reached < run.len(),
            "skip {skip}: {reached} freed"
        );
        assert!(
            region.write(b"x", EngineId::Query).is_err(),
            "it refuses changes"
        );
        drop(region);

        let region = open(&path);
        for (i, &slot) in slots.iter().enumerate() {
            let position = run.iter().position(|&s| s == slot);
            match position {
                // Not in the run, or not reached: live with its bytes.
                None => assert_eq!(region.read(slot).unwrap(), pattern(i, 2000 + i)),
                Some(at) if at >= reached => {
                    assert_eq!(
                        region.read(slot).unwrap(),
                        pattern(i, 2000 + i),
                        "skip {skip}"
                    );
                }
                // The one whose free failed: its bytes or gone.
                Some(at) if at + 1 == reached => {
                    if let Ok(bytes) = region.read(slot) {
                        assert_eq!(bytes, pattern(i, 2000 + i));
                    }
                }
                Some(_) => assert!(
                    region.read(slot).is_err(),
                    "skip {skip}: slot {slot} came back"
                ),
            }
        }
    }
}

/// With every store a `pwrite` (btrfs, or `overflow_pwrite_stores`): a
/// store that fails at any point of a write or a free makes that call an
/// error, nothing is stored after it, and the region refuses changes until
/// it is reopened. The reopened region holds every acknowledged write with
/// its bytes and none of the acknowledged frees, and a slot whose write or
/// free failed reads its own bytes or is gone: never other bytes.
#[test]
fn a_failed_pwrite_store_stops_every_store_after_it_and_loses_nothing_acknowledged() {
    let mut refused = 0;
    for skip in 0..16 {
        for failing_free in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let mut region = open_pwrite_stores(&path);
            let mut model: Vec<(usize, Vec<u8>)> = (0..20)
                .map(|i| {
                    let bytes = pattern(i, 1000 + i);
                    (region.write(&bytes, EngineId::Query).unwrap(), bytes)
                })
                .collect();
            region.sync().unwrap();
            let (freed, _) = model.swap_remove(3);
            region.free(freed).unwrap();
            let mut doubtful = Vec::new();
            fault::fail_after(Call::Pwrite, skip, libc::EIO);
            let failed = if failing_free {
                let (slot, bytes) = model.swap_remove(7);
                let result = region.free(slot);
                if result.is_err() {
                    doubtful.push((slot, bytes));
                }
                result.is_err()
            } else {
                let bytes = pattern(99, 5000);
                let next = region.slots.next_index();
                match region.write(&bytes, EngineId::Query) {
                    Ok(slot) => {
                        model.push((slot, bytes));
                        false
                    }
                    Err(error) => {
                        assert!(matches!(error, Error::Io { .. }), "{error}");
                        doubtful.push((next, bytes));
                        true
                    }
                }
            };
            fault::disarm();
            if failed && region.mapping.store_failed().is_some() {
                refused += 1;
                let error = region.write(b"later", EngineId::Query).unwrap_err();
                assert!(error.to_string().contains("reopened"), "{error}");
                assert!(region.free(model[0].0).is_err());
                assert!(region.sync().is_err());
                assert!(region.compact_step(u64::MAX).is_err());
            }
            drop(region);
            let reopened = open(&path);
            for (slot, bytes) in &model {
                assert_eq!(reopened.read(*slot).unwrap(), &bytes[..], "skip {skip}");
            }
            if !model
                .iter()
                .chain(&doubtful)
                .any(|(slot, _)| *slot == freed)
            {
                assert!(
                    reopened.read(freed).is_err(),
                    "skip {skip}: a free came back"
                );
            }
            for (slot, bytes) in &doubtful {
                if let Ok(read) = reopened.read(*slot) {
                    assert_eq!(read, &bytes[..], "skip {skip}: slot {slot}");
                }
            }
            reopened.check_consistency().unwrap();
        }
    }
    assert!(refused > 0, "no failed store was ever reached");
}

/// The free neighbour after a freed extent is found from its tag in the
/// file (`free_extent_at`), so every free extent's tag must hold its whole
/// length. A process stopped between a free's commit and its merged tag
/// leaves two free tags side by side; recovery stores one over the run, and
/// a free before it then merges with all of it.
#[test]
fn a_free_run_a_crash_left_in_two_tags_is_merged_with_the_next_free_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    let slots: Vec<usize> = (0..5)
        .map(|i| region.write(&pattern(i, 1000), EngineId::Query).unwrap())
        .collect();
    let offsets: Vec<u64> = slots
        .iter()
        .map(|&slot| region.slot_ref(slot).unwrap().offset())
        .collect();
    region.free(slots[1]).unwrap();
    region.free(slots[2]).unwrap();
    region.sync().unwrap();
    drop(region);
    // As if stopped after the second free's commit (its own FREE tag) and
    // before the merged one over both.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for (at, len) in [
        (offsets[1], offsets[2] - offsets[1]),
        (offsets[2], offsets[3] - offsets[2]),
    ] {
        file.write_all_at(&Tag::Free { len }.encode().to_le_bytes(), at)
            .unwrap();
    }
    drop(file);

    let mut region = open(&path);
    assert!(region.recovery().repairs > 0, "{:?}", region.recovery());
    assert_eq!(region.stats().free_extents, 1);
    region.free(slots[0]).unwrap();
    assert_eq!(
        region.stats().free_extents,
        1,
        "merged with the whole run after it"
    );
    region.check_consistency().unwrap();
    assert_eq!(region.read(slots[3]).unwrap(), pattern(3, 1000));
}

/// An automatic pass lists the live extents near the end in pieces, after
/// merging gaps. A pass that ended in its merging (a move failed: here the
/// refill of the punched hole the move was to go into) leaves the listing
/// it started to the next pass, which lists the rest and brings the end
/// down. Were the listing taken as done, the next passes would find
/// nothing to move and the region would stay over its budget (tried: with
/// the listing marked done at the end of every pass, the end stays put).
#[test]
fn a_pass_stopped_by_a_failed_move_leaves_its_listing_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let tuning = MemoryTuning {
        overflow_initial_bytes: MIB,
        overflow_max_bytes: 64 * MIB,
        ..MemoryTuning::default()
    };
    let mut contents: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut trigger = None;
    {
        // Laid out with automatic compaction off: 250 slots of 4 KiB, each
        // followed by a 1000-byte gap (too short for any other extent, and
        // not worth merging: 4 KiB between two such gaps); a punched run of
        // 512 KiB; a slot of 72 000 bytes after it (worth merging: the run
        // is more than four times as long); then 100 slots of 4 KiB with
        // one of 100 000 bytes among them.
        let mut region = OverflowRegion::open_with_tuning(
            &path,
            &MemoryTuning {
                overflow_auto_compact: false,
                ..tuning.clone()
            },
        )
        .unwrap();
        let mut gaps = Vec::new();
        for i in 0..250 {
            let bytes = pattern(i, 4096);
            contents.push((region.write(&bytes, EngineId::Query).unwrap(), bytes));
            gaps.push(region.write(&pattern(i, 1000), EngineId::Query).unwrap());
        }
        let run = region
            .write(&vec![9u8; 512 << 10], EngineId::Query)
            .unwrap();
        let bytes = pattern(7, 72_000);
        contents.push((region.write(&bytes, EngineId::Query).unwrap(), bytes));
        for i in 0..100 {
            let bytes = pattern(1000 + i, 4096);
            contents.push((region.write(&bytes, EngineId::Query).unwrap(), bytes));
            if i == 50 {
                trigger = Some(region.write(&pattern(5, 100_000), EngineId::Query).unwrap());
            }
        }
        for gap in gaps {
            region.free(gap).unwrap();
        }
        region.free(run).unwrap();
        assert!(
            region.policy.holes.bytes() >= 384 << 10,
            "the run was punched: {} bytes of holes",
            region.policy.holes.bytes()
        );
    }
    let mut region = OverflowRegion::open_with_tuning(&path, &tuning).unwrap();
    let used_before = region.used_bytes() as u64;
    assert!(
        region.over_budget().is_some(),
        "over budget: {used_before} used for {} live",
        region.live_bytes()
    );

    // A pass starts at the next free, which pays for moves of up to about
    // 100 000 bytes. It merges first: its move of the 72 000-byte slot
    // into the punched run fails at the refill, and ends the pass before
    // it has listed anything.
    fault::fail_after(Call::Pwrite, 0, libc::ENOSPC);
    region.free(trigger.unwrap()).unwrap();
    assert!(!fault::armed(Call::Pwrite), "a move was tried");
    fault::disarm();

    // The next pass, as many operations later as a failed pass waits,
    // goes on with the listing, and moves the highest extents down into
    // the run (their old places are freed at each sync).
    let filler = pattern(3, 4096);
    for i in 0..400 {
        let slot = region.write(&filler, EngineId::Query).unwrap();
        region.free(slot).unwrap();
        if i % 20 == 19 {
            region.sync().unwrap();
        }
    }
    let used = region.used_bytes() as u64;
    assert!(
        used + (100 << 10) < used_before,
        "the end came down: used {used_before} -> {used} bytes, {} moved",
        region.stats().auto_moved_bytes
    );
    region.check_consistency().unwrap();
    for (slot, bytes) in &contents {
        assert_eq!(region.read(*slot).unwrap(), &bytes[..], "slot {slot}");
    }
}

/// A random mix of writes (16 B to 400 KB), frees, syncs, compaction steps
/// and whole compactions, with one system call made to fail on purpose
/// (`failure`) after a warm-up: afterwards the region is consistent, every
/// acknowledged slot reads back, no acknowledged free comes back, neither
/// in a copy of the file taken while the region is open (what a kill -9
/// leaves on the same boot) nor after a close and reopen, and the region
/// keeps working. An operation that failed may have been done or not: a
/// failed free's slot is checked only if it still reads.
fn mixed_workload_survives(failure: Option<(Call, u32, i32)>, seed: u64) -> Result<(), String> {
    use std::collections::{HashMap, HashSet};

    struct Ops {
        rng: u64,
        count: usize,
        live: HashMap<usize, Vec<u8>>,
        freed: HashSet<usize>,
    }
    impl Ops {
        fn below(&mut self, n: u64) -> u64 {
            self.rng = self
                .rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.rng >> 33) % n
        }
        fn len(&mut self) -> usize {
            match self.below(10) {
                0..=5 => 16 + self.below(3000) as usize,
                6..=7 => 20_000 + self.below(60_000) as usize,
                _ => 100_000 + self.below(300_000) as usize,
            }
        }
        fn one(&mut self, region: &mut OverflowRegion) {
            self.count += 1;
            let choice = self.below(100);
            if choice < 50 || self.live.len() < 20 {
                let bytes = pattern(self.count, self.len());
                if let Ok(slot) = region.write(&bytes, EngineId::Query) {
                    self.freed.remove(&slot);
                    self.live.insert(slot, bytes);
                }
            } else if choice < 92 {
                let mut slots: Vec<usize> = self.live.keys().copied().collect();
                slots.sort_unstable();
                let slot = slots[self.below(slots.len() as u64) as usize];
                let bytes = self.live.remove(&slot).expect("listed");
                match region.free(slot) {
                    Ok(()) => {
                        self.freed.insert(slot);
                    }
                    Err(_) if region.read(slot).is_ok() => {
                        self.live.insert(slot, bytes);
                    }
                    Err(_) => {}
                }
            } else if choice < 95 {
                let _ = region.sync();
            } else if choice < 99 {
                let budget = self.below(200_000);
                let _ = region.compact_step(budget);
            } else {
                let _ = region.compact();
            }
        }
        fn check(&self, region: &OverflowRegion, when: &str) -> Result<(), String> {
            region
                .check_consistency()
                .map_err(|error| format!("{when}: {error}"))?;
            for (&slot, bytes) in &self.live {
                match region.read(slot) {
                    Ok(got) if got == &bytes[..] => {}
                    Ok(got) => {
                        return Err(format!(
                            "{when}: slot {slot} reads {} other bytes",
                            got.len()
                        ));
                    }
                    Err(error) => return Err(format!("{when}: slot {slot} lost: {error}")),
                }
            }
            match self.freed.iter().find(|&&slot| region.read(slot).is_ok()) {
                Some(slot) => Err(format!("{when}: freed slot {slot} came back")),
                None => Ok(()),
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let tuning = MemoryTuning {
        overflow_initial_bytes: MIB,
        overflow_max_bytes: 256 * MIB,
        ..MemoryTuning::default()
    };
    let reopen = |path: &Path, when: &str| -> Result<OverflowRegion, String> {
        let region = OverflowRegion::open_with_tuning(path, &tuning)
            .map_err(|error| format!("{when}: {error}"))?;
        match region.recovery().dropped.is_empty() {
            true => Ok(region),
            false => Err(format!("{when}: dropped {:?}", region.recovery().dropped)),
        }
    };
    let mut region = OverflowRegion::open_with_tuning(&path, &tuning).unwrap();
    let mut ops = Ops {
        rng: seed,
        count: 0,
        live: HashMap::new(),
        freed: HashSet::new(),
    };
    for _ in 0..600 {
        ops.one(&mut region);
    }
    if let Some((call, skip, errno)) = failure {
        fault::fail_after(call, skip, errno);
    }
    for _ in 0..600 {
        ops.one(&mut region);
    }
    fault::disarm();
    ops.check(&region, "open")?;
    let killed = dir.path().join("killed");
    std::fs::copy(&path, &killed).unwrap();
    ops.check(
        &reopen(&killed, "a copy taken while open")?,
        "a copy taken while open",
    )?;
    for _ in 0..200 {
        ops.one(&mut region);
    }
    ops.check(&region, "after more work")?;
    drop(region);
    ops.check(&reopen(&path, "reopened")?, "reopened")
}

/// `mixed_workload_survives` with each kind of failing call at a few
/// points (every third call up to the 60th, two seeds, about four minutes,
/// with `OVERFLOW_SOAK` set).
#[test]
fn a_mixed_workload_survives_a_failed_system_call_anywhere() {
    mixed_workload_survives(None, 1).unwrap();
    let soak = std::env::var_os("OVERFLOW_SOAK").is_some();
    let (skips, seeds): (Vec<u32>, &[u64]) = if soak {
        ((0..60).step_by(3).collect(), &[1, 2])
    } else {
        (vec![0, 7, 31], &[1])
    };
    let mut failures = Vec::new();
    for (call, errno) in [
        (Call::Fallocate, libc::ENOSPC),
        (Call::Pwrite, libc::ENOSPC),
        (Call::Punch, libc::EIO),
        (Call::WriteBack, libc::EIO),
        (Call::Sync, libc::EIO),
    ] {
        for &skip in &skips {
            for &seed in seeds {
                if let Err(error) = mixed_workload_survives(Some((call, skip, errno)), seed) {
                    failures.push(format!("{call:?} after {skip}, seed {seed}: {error}"));
                }
                fault::disarm();
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An opener whose path names another file each time it has taken the
/// lock of the one it opened (other writers removing and creating it
/// again and again) gives up after `LOCK_ATTEMPTS` tries with an error
/// that says so, instead of looping for good, and never returns the lock
/// of a file that is no longer at the path.
#[test]
fn an_opener_gives_up_when_the_path_names_another_file_at_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let attempts = std::cell::Cell::new(0);
    // Between the open and the check of the path, a new file takes the
    // path each time (as a remover and a creator would).
    let replace = |_: &File| {
        attempts.set(attempts.get() + 1);
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, b"").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        Ok(())
    };
    let Err(error) = OverflowRegion::open_locked(&path, true, replace) else {
        panic!("opened though the path named another file at every attempt");
    };
    assert_eq!(attempts.get(), OverflowRegion::LOCK_ATTEMPTS);
    let Error::Io {
        operation, source, ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(*operation, "flock");
    assert_eq!(source.kind(), io::ErrorKind::ResourceBusy, "{error}");
    assert!(error.to_string().contains("each of the 8 times"), "{error}");

    // With the path left alone, the same call opens the file there.
    let opened = OverflowRegion::open_locked(&path, true, |_| Ok(()))
        .unwrap()
        .expect("a file is at the path");
    assert_eq!(Inode::of(&opened.file).unwrap(), Inode::at(&path).unwrap());
}

/// A header map is disk the region holds: with a disk budget, the map is
/// charged to it, and a map the budget cannot hold is not written (the
/// old one goes, and its bytes are given back). Before, maps were written
/// outside the budget (up to 8 MiB per core of a `SpillDir`).
#[test]
fn a_header_map_is_charged_to_the_disk_budget_or_not_written() {
    use crate::budget::DiskBudget;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let map = header_map::path_for(&path);
    let map_len = || std::fs::metadata(&map).map_or(0, |metadata| metadata.len());
    let mut region = open(&path);
    for i in 0..50 {
        region.write(&pattern(i, 40_000), EngineId::Query).unwrap();
    }
    let file_len = region.capacity() as u64;

    // Room for the file and a map: the map is written and charged.
    let roomy = Arc::new(DiskBudget::new(file_len + 4096));
    region.attach_budget(Arc::clone(&roomy));
    region.sync().unwrap();
    assert!(map_len() > 0, "no map written");
    assert_eq!(roomy.charged(), file_len + map_len());
    // Given back with the region (the map written at close is charged
    // first).
    drop(region);
    assert_eq!(roomy.charged(), 0);

    // A budget the file fills: the map found at open is charged, the new
    // one does not fit, so neither is kept.
    let mut region = open(&path);
    let found = map_len();
    assert!(found > 0);
    let full = Arc::new(DiskBudget::new(file_len));
    region.attach_budget(Arc::clone(&full));
    assert_eq!(full.charged(), file_len + found);
    region.free(0).unwrap();
    region.sync().unwrap();
    assert!(!map.exists(), "a map the budget cannot hold was written");
    assert_eq!(full.charged(), file_len);
    drop(region);
    assert_eq!(full.charged(), 0);
    let region = open(&path);
    assert_eq!(region.live_slot_count(), 49);
    region.check_consistency().unwrap();
}

/// A blob that holds a region extent (a spilled page of a region file):
/// a summed live header naming `slot` with generation `generation`, then a
/// payload, as docs/FORMAT.md lays it out.
fn blob_holding_an_extent(slot: u32, generation: u32) -> Vec<u8> {
    let payload = b"FAKE BYTES, NEVER WRITTEN AS A SLOT";
    let len = layout::extent_len_for(payload.len() as u64, EXTENT_HEADER_LEN).unwrap();
    let header = LiveHeader {
        extent_len: len,
        slot,
        generation,
        payload_len: payload.len() as u64,
        engine: EngineId::Query,
        payload_crc: Some(checksum::crc32c(payload)),
        user_tag: 0,
    };
    let (tag, encoded) = header.encode(&mut LiveTagMemo::default());
    let mut bytes = vec![0u8; len as usize];
    bytes[..8].copy_from_slice(&tag.to_le_bytes());
    bytes[8..32].copy_from_slice(&encoded[..24]);
    bytes[32..32 + payload.len()].copy_from_slice(payload);
    let mut blob = vec![7u8; 64];
    blob.extend_from_slice(&bytes);
    blob.extend_from_slice(&[9u8; 64]);
    blob
}

/// A process killed at any store of a write at the end of the file, or of
/// the free that gives that tail back, leaves the slots as they were
/// before the call or after it, even when the payload holds something
/// that reads as an extent. With every store a `pwrite`, a failed store
/// stops every store after it: what a kill between those two stores
/// leaves. The chain end used to be stored before a write's live tag and
/// after a retraction's end mark: either window left an end mark before
/// the stored chain end, the walk scanned the payload past it for a live
/// header, and took the blob's for slot 0 (newer, so it replaced the real
/// one: `read(0)` returned the blob's bytes). Found in review.
#[test]
fn a_kill_at_any_store_of_a_write_or_retraction_at_the_end_finds_no_extent_in_a_payload() {
    let real = pattern(1, 100);
    for freeing in [false, true] {
        let mut stopped = 0;
        for skip in 0..24 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let mut region = open_pwrite_stores(&path);
            assert_eq!(region.write(&real, EngineId::Query).unwrap(), 0);
            let blob = blob_holding_an_extent(0, 1000);
            if freeing {
                assert_eq!(region.write(&blob, EngineId::Query).unwrap(), 1);
            }
            region.sync().unwrap();
            fault::fail_after(Call::Pwrite, skip, libc::EIO);
            let result = if freeing {
                region.free(1)
            } else {
                region.write(&blob, EngineId::Query).map(drop)
            };
            let fired = !fault::armed(Call::Pwrite);
            fault::disarm();
            if result.is_err() {
                stopped += 1;
            }
            drop(region);
            let reopened = open(&path);
            assert_eq!(
                reopened.read(0).unwrap(),
                real,
                "freeing {freeing}, store {skip} failed: {:?}",
                reopened.recovery()
            );
            if let Ok(bytes) = reopened.read(1) {
                assert_eq!(bytes, blob, "freeing {freeing}, store {skip}");
            }
            assert!(
                reopened.recovery().dropped.is_empty(),
                "freeing {freeing}, store {skip}: {:?}",
                reopened.recovery()
            );
            reopened.check_consistency().unwrap();
            if !fired {
                break;
            }
        }
        assert!(
            stopped > 1,
            "freeing {freeing}: only {stopped} calls stopped"
        );
    }
}
