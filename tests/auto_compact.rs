//! Automatic compaction (`MemoryTuning::overflow_auto_compact`): under
//! churn the region keeps its used bytes within its slack by moving a few
//! extents at each `write` and `free`; a move keeps every slot's index and
//! bytes, an old handle stops reading once the old place is freed, and a
//! slot whose payload was synced keeps its old place on disk until the next
//! sync. Nothing a crash finds is older than what was acknowledged, and a
//! freed slot never comes back.

use std::collections::HashMap;
use std::path::Path;

use overflow_region::{EngineId, Error, MemoryTuning, OverflowReader, OverflowRegion};

mod common;
use common::{Rng, mix};

const MIB: usize = 1 << 20;

/// Bytes that depend on `seed` and their position.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| mix(seed ^ (i as u64 / 8)).to_le_bytes()[i % 8])
        .collect()
}

/// Log-uniform from 16 B to 64 KiB.
fn size(rng: &mut Rng) -> usize {
    let unit = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    (16f64 * 4096f64.powf(unit)) as usize
}

fn open(path: &Path, auto_compact: bool) -> OverflowRegion {
    let tuning = MemoryTuning {
        overflow_initial_bytes: MIB,
        overflow_max_bytes: 256 * MIB,
        overflow_auto_compact: auto_compact,
        ..MemoryTuning::default()
    };
    OverflowRegion::open_with_tuning(path, &tuning).unwrap()
}

/// Live slots and the seed and length of what each holds.
type Model = HashMap<usize, (u64, usize)>;

/// Writes slots until `live` payload bytes are live.
fn fill(region: &mut OverflowRegion, rng: &mut Rng, model: &mut Model, live: usize) {
    while region.live_bytes() < live {
        let (seed, len) = (rng.next(), size(rng));
        let slot = region.write(&payload(seed, len), EngineId::Query).unwrap();
        model.insert(slot, (seed, len));
    }
}

/// Frees a random live slot and writes a new one, `ops / 2` times;
/// returns the largest `used_bytes / live_bytes` seen after each round.
fn churn(region: &mut OverflowRegion, rng: &mut Rng, model: &mut Model, ops: usize) -> f64 {
    let mut live: Vec<usize> = model.keys().copied().collect();
    live.sort_unstable();
    let mut worst: f64 = 0.0;
    for _ in 0..ops / 2 {
        let victim = live.swap_remove(rng.below(live.len() as u64) as usize);
        region.free(victim).unwrap();
        model.remove(&victim);
        let (seed, len) = (rng.next(), size(rng));
        let slot = region.write(&payload(seed, len), EngineId::Query).unwrap();
        model.insert(slot, (seed, len));
        live.push(slot);
        worst = worst.max(region.used_bytes() as f64 / region.live_bytes() as f64);
    }
    worst
}

fn check(region: &OverflowRegion, model: &Model) {
    for (&slot, &(seed, len)) in model {
        assert!(
            region.read(slot).unwrap() == &payload(seed, len)[..],
            "slot {slot} changed"
        );
    }
    region.check_consistency().unwrap();
}

/// The same churn with automatic compaction off and on: off, the free
/// space between live extents grows past the slack; on, the used bytes
/// end within it (and never pass it by more than half again), every slot
/// keeps its bytes, and extents were moved.
#[test]
fn churn_keeps_the_used_bytes_within_the_slack() {
    let mut last = Vec::new();
    for auto_compact in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut region = open(&dir.path().join("r"), auto_compact);
        let mut rng = Rng(7);
        let mut model = Model::new();
        fill(&mut region, &mut rng, &mut model, 8 * MIB);
        // Fragmentation builds up first.
        churn(&mut region, &mut rng, &mut model, 20_000);
        let worst = churn(&mut region, &mut rng, &mut model, 20_000);
        let stats = region.stats();
        let end = region.used_bytes() as f64 / region.live_bytes() as f64;
        println!(
            "auto_compact {auto_compact}: used/live {end:.3}, worst {worst:.3}, moved {} extents, {} bytes",
            stats.auto_moved_extents, stats.auto_moved_bytes
        );
        check(&region, &model);
        if auto_compact {
            // Between passes a write may land at the end before the next
            // moves: the bound holds at the end of a pass, with a margin
            // at every instant.
            assert!(end <= 1.10, "used/live ended at {end:.3}");
            assert!(worst <= 1.15, "used/live reached {worst:.3}");
            assert!(stats.auto_moved_extents > 0);
        } else {
            assert_eq!(stats.auto_moved_extents, 0);
        }
        last.push(end);
    }
    assert!(
        last[0] > 1.10 && last[1] < last[0],
        "off {:.3}, on {:.3}",
        last[0],
        last[1]
    );
}

/// A handle made before a slot moved reads the same bytes while the old
/// place is live and `SlotChanged` once it is freed; the slot's index
/// reads the bytes it was written with all along.
#[test]
fn a_handle_to_a_moved_slot_never_reads_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut region = open(&dir.path().join("r"), true);
    let mut rng = Rng(11);
    let mut model = Model::new();
    fill(&mut region, &mut rng, &mut model, 4 * MIB);
    let handles: Vec<_> = model
        .keys()
        .map(|&slot| (slot, region.slot_ref(slot).unwrap()))
        .collect();
    churn(&mut region, &mut rng, &mut model, 20_000);
    assert!(region.stats().auto_moved_extents > 0);
    let mut changed_but_live = 0;
    for (slot, handle) in handles {
        match (region.read_ref(&handle), model.get(&slot)) {
            (Ok(bytes), Some(&(seed, len))) => assert!(bytes == &payload(seed, len)[..]),
            (Ok(_), None) => panic!("slot {slot} was freed but its old handle reads"),
            (Err(Error::SlotChanged { .. }), Some(_)) => changed_but_live += 1,
            (Err(Error::SlotChanged { .. }), None) => {}
            (Err(error), _) => panic!("slot {slot}: {error}"),
        }
    }
    assert!(changed_but_live > 0, "no slot of the first fill was moved");
    check(&region, &model);
}

/// A handle to a slot that compaction moved says so (`moved: true`), from
/// the owner and from a reader, and a fresh handle from the owner reads the
/// same bytes; a handle to a freed slot never says the owner still has it.
#[test]
fn a_handle_to_a_moved_slot_says_it_moved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path, true);
    let mut rng = Rng(12);
    let mut model = Model::new();
    fill(&mut region, &mut rng, &mut model, 4 * MIB);
    let reader = OverflowReader::open(&path).unwrap();
    let mut buf = Vec::new();
    let (mut moved, mut moved_by_reader) = (0, 0);
    // Handles to every live slot, then a few operations, then the
    // handles are read: a moved slot's old place keeps its mark until the
    // space is written again.
    for _ in 0..50 {
        let handles: Vec<_> = model
            .keys()
            .map(|&slot| (slot, region.slot_ref(slot).unwrap()))
            .collect();
        churn(&mut region, &mut rng, &mut model, 400);
        for (slot, handle) in handles {
            let owner_says_moved = match region.read_ref(&handle) {
                Err(Error::SlotChanged { moved, .. }) => moved,
                Ok(_) => false,
                Err(error) => panic!("slot {slot}: {error}"),
            };
            let reader_says_moved = match reader.read_into(&handle, &mut buf) {
                Err(Error::SlotChanged { moved, .. }) => moved,
                Ok(()) => false,
                Err(error) => panic!("slot {slot}: {error}"),
            };
            moved_by_reader += usize::from(reader_says_moved);
            if !owner_says_moved {
                continue;
            }
            moved += 1;
            // The mark the owner found is the one the reader reads.
            assert!(reader_says_moved, "slot {slot}");
            let &(seed, len) = model
                .get(&slot)
                .unwrap_or_else(|| panic!("slot {slot} is free but said to have moved"));
            let fresh = region.slot_ref(slot).unwrap();
            assert!(region.read_ref(&fresh).unwrap() == &payload(seed, len)[..]);
            reader.read_into(&fresh, &mut buf).unwrap();
            assert!(buf == payload(seed, len));
        }
    }
    assert!(region.stats().auto_moved_extents > 0);
    assert!(moved > 0, "no handle said its slot moved");
    assert!(moved_by_reader >= moved);
    check(&region, &model);
}

/// Frees every other slot of a synced region in its upper part, so the
/// region holds more than its slack beyond the live bytes in gaps too
/// short to punch; the frees move synced slots. Returns where each slot
/// was at the sync.
fn fragment_synced(region: &mut OverflowRegion, model: &mut Model) -> HashMap<usize, u64> {
    let mut rng = Rng(5);
    for _ in 0..3000 {
        let (seed, len) = (rng.next(), 200 + rng.below(3000) as usize);
        let slot = region.write(&payload(seed, len), EngineId::Wal).unwrap();
        model.insert(slot, (seed, len));
    }
    region.sync().unwrap();
    let offsets = model
        .keys()
        .map(|&slot| (slot, region.slot_ref(slot).unwrap().offset()))
        .collect();
    for slot in (1000..3000).step_by(2) {
        region.free(slot).unwrap();
        model.remove(&slot);
    }
    offsets
}

/// A slot whose payload was synced is moved without losing that promise:
/// its old place stays live on disk until the next sync (a crash image
/// taken before it holds both copies, and reopens with every slot), and is
/// freed by the first `write`, `free` or `compact_step` after that sync.
#[test]
fn a_synced_slot_keeps_its_old_place_until_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path, true);
    let mut model = Model::new();
    fragment_synced(&mut region, &mut model);
    let stats = region.stats();
    assert!(stats.auto_moved_extents > 0, "{stats:?}");
    assert!(stats.retired_bytes > 0, "{stats:?}");
    check(&region, &model);
    // A process crash now: the page cache is the file.
    let crashed = dir.path().join("crashed");
    std::fs::copy(&path, &crashed).unwrap();
    {
        let reopened = open(&crashed, false);
        assert!(reopened.recovery().dropped.is_empty());
        check(&reopened, &model);
    }
    region.sync().unwrap();
    // A step that moves nothing frees what the sync made safe to free.
    assert_eq!(region.compact_step(0).unwrap().extents_moved, 0);
    assert_eq!(region.stats().retired_bytes, 0);
    check(&region, &model);
}

/// Freeing a moved slot whose old place waits for a sync frees both
/// places: after a crash the slot stays free.
#[test]
fn a_moved_slot_freed_before_the_next_sync_stays_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path, true);
    let mut model = Model::new();
    let offsets = fragment_synced(&mut region, &mut model);
    // Every moved slot's old place waits: its payload was synced.
    assert!(region.stats().retired_bytes > 0);
    let moved: Vec<usize> = offsets
        .iter()
        .filter(|&(&slot, &offset)| {
            model.contains_key(&slot) && region.slot_ref(slot).unwrap().offset() != offset
        })
        .map(|(&slot, _)| slot)
        .collect();
    assert!(!moved.is_empty());
    for &slot in &moved {
        region.free(slot).unwrap();
        model.remove(&slot);
    }
    let crashed = dir.path().join("crashed");
    std::fs::copy(&path, &crashed).unwrap();
    let reopened = open(&crashed, false);
    for slot in moved {
        assert!(
            matches!(reopened.read(slot), Err(Error::SlotFree { .. })),
            "slot {slot} came back"
        );
    }
    check(&reopened, &model);
}

/// Dropping a region whose synced slots were moved since the last sync
/// leaves their old places live on disk (a drop does not sync): the next
/// open pairs each with its copy, frees the old place, and loses nothing.
#[test]
fn old_places_waiting_at_drop_are_freed_by_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path, true);
    let mut model = Model::new();
    fragment_synced(&mut region, &mut model);
    let waiting = region.stats().retired_bytes;
    assert!(waiting > 0);
    drop(region);
    let reopened = open(&path, false);
    let recovery = reopened.recovery();
    assert!(recovery.dropped.is_empty(), "{recovery:?}");
    assert!(recovery.repairs > 0, "{recovery:?}");
    assert_eq!(reopened.stats().retired_bytes, 0);
    check(&reopened, &model);
    reopened.check_consistency().unwrap();
}
