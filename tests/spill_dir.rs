//! `SpillDir`: per-core regions under one directory with one disk budget,
//! restarted in both modes, a budget hit from several threads at once, and
//! tags and enumeration after a reopen.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use overflow_region::{EngineId, Error, MemoryTuning, OverflowRegion, SpillDir, SpillMode};

const MIB: usize = 1 << 20;

const _: () = {
    const fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<SpillDir>();
};

fn tuning() -> MemoryTuning {
    MemoryTuning {
        overflow_initial_bytes: MIB,
        overflow_max_bytes: 64 * MIB,
        ..MemoryTuning::default()
    }
}

/// Every live slot of every core: (core, slot) -> (tag, bytes).
fn contents(spill: &SpillDir) -> BTreeMap<(usize, usize), (u64, Vec<u8>)> {
    let mut all = BTreeMap::new();
    for core in 0..spill.cores() {
        spill
            .with_core(core, |region| {
                for entry in region.live_slots() {
                    let bytes = region.read(entry.slot)?.to_vec();
                    assert_eq!(bytes.len(), entry.len);
                    all.insert((core, entry.slot), (entry.tag, bytes));
                }
                Ok(())
            })
            .unwrap();
    }
    all
}

fn fill(spill: &SpillDir, per_core: u64) -> BTreeMap<(usize, usize), (u64, Vec<u8>)> {
    let mut written = BTreeMap::new();
    for core in 0..spill.cores() {
        for i in 0..per_core {
            let tag = (core as u64) << 32 | i;
            let data = vec![(i % 251) as u8; 100 + (i as usize * 37) % 5000];
            let key = tag.to_le_bytes();
            let slot = spill
                .with_core(core, |region| {
                    region.write_vectored(&[&key, &data], EngineId::Query, tag)
                })
                .unwrap();
            let mut bytes = key.to_vec();
            bytes.extend_from_slice(&data);
            written.insert((core, slot), (tag, bytes));
        }
    }
    written
}

#[test]
fn persistent_mode_finds_every_slot_and_tag_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spill = SpillDir::open(dir.path(), 3, &tuning(), SpillMode::Persistent, 64 << 20).unwrap();
    let written = fill(&spill, 200);
    spill.with_core(2, |region| region.sync()).unwrap();
    drop(spill);
    for core in 0..3 {
        assert!(dir.path().join(format!("core-{core}")).exists());
    }

    let spill = SpillDir::open(dir.path(), 3, &tuning(), SpillMode::Persistent, 64 << 20).unwrap();
    assert_eq!(contents(&spill), written);
    // The restart story: rebuild a key map from the tags alone.
    let by_tag: BTreeMap<u64, (usize, usize)> = contents(&spill)
        .into_iter()
        .map(|(place, (tag, _))| (tag, place))
        .collect();
    assert_eq!(by_tag.len(), 600);
    let (core, slot) = by_tag[&(1u64 << 32 | 17)];
    assert_eq!(core, 1);
    let bytes = spill
        .with_core(core, |region| Ok(region.read(slot)?.to_vec()))
        .unwrap();
    assert_eq!(&bytes[..8], &(1u64 << 32 | 17).to_le_bytes());
}

#[test]
fn ephemeral_mode_starts_empty_and_removes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let spill = SpillDir::open(dir.path(), 2, &tuning(), SpillMode::Ephemeral, 64 << 20).unwrap();
    fill(&spill, 50);
    drop(spill);
    assert!(!dir.path().join("core-0").exists());
    assert!(!dir.path().join("core-1").exists());

    // What a killed process leaves: region files with data (and one more
    // core than this run has). The next open starts empty and cleans all.
    for core in 0..3 {
        let mut region =
            OverflowRegion::open_with_tuning(&dir.path().join(format!("core-{core}")), &tuning())
                .unwrap();
        region
            .write(b"left by a killed run", EngineId::Query)
            .unwrap();
    }
    let spill = SpillDir::open(dir.path(), 2, &tuning(), SpillMode::Ephemeral, 64 << 20).unwrap();
    assert!(contents(&spill).is_empty());
    assert!(!dir.path().join("core-2").exists());
    drop(spill);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn ephemeral_mode_refuses_a_foreign_file_with_a_region_name_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("core-1");
    std::fs::write(&foreign, b"not a region, but somebody's data").unwrap();
    let error =
        SpillDir::open(dir.path(), 2, &tuning(), SpillMode::Ephemeral, 64 << 20).unwrap_err();
    assert!(matches!(error, Error::NotARegion { .. }), "{error:?}");
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        b"not a region, but somebody's data"
    );
    // And a region another writer holds open is not removed.
    std::fs::remove_file(&foreign).unwrap();
    let held = OverflowRegion::open_with_tuning(&dir.path().join("core-0"), &tuning()).unwrap();
    let error =
        SpillDir::open(dir.path(), 2, &tuning(), SpillMode::Ephemeral, 64 << 20).unwrap_err();
    assert!(matches!(error, Error::Locked { .. }), "{error:?}");
    drop(held);
    assert!(dir.path().join("core-0").exists());
}

/// Four threads write into two cores until the budget says no: no write
/// passes it (the files' lengths; their blocks but for file-system
/// metadata), the error names it, and everything acknowledged reads back.
#[test]
fn a_budget_hit_from_several_threads_is_never_passed() {
    const BUDGET: u64 = 8 << 20;
    /// File-system metadata a file may hold beyond its data (per core).
    const METADATA_ALLOWANCE: u64 = 16 << 10;
    let dir = tempfile::tempdir().unwrap();
    let spill =
        Arc::new(SpillDir::open(dir.path(), 2, &tuning(), SpillMode::Ephemeral, BUDGET).unwrap());
    let refused = AtomicU64::new(0);
    let acknowledged: Vec<Vec<(usize, usize, u8)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u8)
            .map(|thread| {
                let spill = Arc::clone(&spill);
                let refused = &refused;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..400u32 {
                        let core = (i as usize + thread as usize) % 2;
                        let fill = thread.wrapping_mul(31).wrapping_add(i as u8);
                        let data = vec![fill; 48 << 10];
                        match spill.with_core(core, |region| region.write(&data, EngineId::Query)) {
                            Ok(slot) => mine.push((core, slot, fill)),
                            Err(Error::BudgetExceeded {
                                budget,
                                used,
                                requested,
                                ..
                            }) => {
                                assert_eq!(budget, BUDGET);
                                assert!(used + requested > BUDGET, "{used} + {requested}");
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(other) => panic!("write failed: {other}"),
                        }
                        assert!(spill.budget_used() <= BUDGET);
                        // Data blocks within the budget; ext4 adds a block
                        // of extent tree to a file of many extents: 140
                        // runs went over by 4096 or 8192 bytes in 39.
                        assert!(
                            spill.used_disk_space() <= BUDGET + 2 * METADATA_ALLOWANCE,
                            "{} > {BUDGET}",
                            spill.used_disk_space()
                        );
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the budget was never hit"
    );
    let mut lens = 0u64;
    for (core, slot, fill) in acknowledged.iter().flatten() {
        let ok = spill
            .with_core(*core, |region| {
                Ok(region.read(*slot)? == vec![*fill; 48 << 10])
            })
            .unwrap();
        assert!(ok, "core {core} slot {slot}");
        lens += 48 << 10;
    }
    assert!(lens <= BUDGET);
    assert!(spill.budget_used() <= BUDGET);
    // Freeing everything and compacting gives budget back: writes work again.
    for core in 0..2 {
        spill
            .with_core(core, |region| {
                let slots: Vec<usize> = region.live_slots().map(|e| e.slot).collect();
                for slot in slots {
                    region.free(slot)?;
                }
                region.compact().map(|_| ())
            })
            .unwrap();
    }
    spill
        .with_core(0, |region| region.write(&[1u8; 4 << 20], EngineId::Query))
        .unwrap();
    assert!(spill.core_stats(0).unwrap().live_bytes == 4 << 20);
    assert!(matches!(
        spill.core_stats(2),
        Err(Error::UnknownCore { core: 2, cores: 2 })
    ));
}

#[test]
fn a_budget_too_small_for_the_cores_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    for (cores, budget) in [(0, 1 << 20), (4, 4096)] {
        let error =
            SpillDir::open(dir.path(), cores, &tuning(), SpillMode::Ephemeral, budget).unwrap_err();
        assert!(matches!(error, Error::InvalidConfig { .. }), "{error:?}");
    }
    // Initial capacities shrink to the budget's share.
    let spill = SpillDir::open(dir.path(), 4, &tuning(), SpillMode::Ephemeral, 1 << 20).unwrap();
    assert!(spill.budget_used() <= 1 << 20);
    assert!(Path::new(&dir.path().join("core-3")).exists());
}

/// A spill directory of 2 cores with a 16 MiB budget.
fn two_cores(dir: &Path) -> SpillDir {
    SpillDir::open(dir, 2, &tuning(), SpillMode::Ephemeral, 16 * MIB as u64).unwrap()
}

/// Runs `f` while another thread holds core `core`'s lock.
fn while_held<T>(spill: &SpillDir, core: usize, f: impl FnOnce() -> T) -> T {
    let (held, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            spill
                .with_core(core, |_| {
                    held.wait();
                    release.wait();
                    Ok(())
                })
                .unwrap();
        });
        held.wait();
        let result = f();
        release.wait();
        result
    })
}

/// `try_with_core` does not wait for a core another thread holds: it says
/// so, and runs on a free core.
#[test]
fn try_with_core_skips_a_busy_core_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let spill = two_cores(dir.path());
    while_held(&spill, 0, || {
        let busy = spill
            .try_with_core(0, |region| region.write(b"x", EngineId::Query))
            .unwrap();
        assert_eq!(busy, None);
        let free = spill
            .try_with_core(1, |region| region.write(b"x", EngineId::Query))
            .unwrap();
        assert!(free.is_some());
        assert!(matches!(
            spill.try_with_core(2, |_| Ok(())),
            Err(Error::UnknownCore { core: 2, cores: 2 })
        ));
    });
    assert_eq!(spill.core_stats(0).unwrap().live_slots, 0);
    assert_eq!(spill.core_stats(1).unwrap().live_slots, 1);
}

/// A core's reader reads its slots while another thread holds the core's
/// lock (it never takes it), refuses a freed slot, and an unknown core is
/// an error.
#[test]
fn a_cores_reader_reads_without_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let spill = two_cores(dir.path());
    let (slot, handle) = spill
        .with_core(1, |region| {
            let slot = region.write(&[7; 5000], EngineId::Query)?;
            Ok((slot, region.slot_ref(slot)?))
        })
        .unwrap();
    let reader = spill.open_reader(1).unwrap();
    let bytes = while_held(&spill, 1, || {
        assert_eq!(
            spill.try_with_core(1, |_| Ok(())).unwrap(),
            None,
            "core 1 is locked"
        );
        let mut bytes = Vec::new();
        reader.read_into(&handle, &mut bytes).unwrap();
        bytes
    });
    assert_eq!(bytes, vec![7; 5000]);
    spill.with_core(1, |region| region.free(slot)).unwrap();
    assert!(matches!(
        reader.read_into(&handle, &mut Vec::new()),
        Err(Error::SlotChanged { .. })
    ));
    assert!(matches!(
        spill.open_reader(2),
        Err(Error::UnknownCore { core: 2, cores: 2 })
    ));
}
