//! `RegionStats` against a model: per-engine live slots and bytes, totals,
//! the accounting identity of the used area, and the same figures after a
//! reopen (recovery rebuilds them from the file alone) and compaction.

use std::collections::BTreeMap;
use std::path::Path;

use overflow_region::{EngineId, MemoryTuning, OverflowRegion, RegionStats};
use proptest::prelude::*;

/// Extent header length (docs/FORMAT.md).
const HEADER: u64 = 32;
/// Extents start at and are multiples of this.
const ALIGN: u64 = 16;
/// A free remainder shorter than this stays in the extent as slack
/// (`MIN_SPLIT` in src/region.rs).
const MIN_SPLIT: u64 = 64;

/// What the stats must say, kept by the test.
#[derive(Debug, Default, Clone)]
struct Model {
    /// Live slot -> (engine, payload length).
    live: BTreeMap<usize, (EngineId, u64)>,
    /// One more than the highest slot index handed out.
    high_water: usize,
}

impl Model {
    fn engine(&self, engine: EngineId) -> (u64, u64) {
        self.live
            .values()
            .filter(|(e, _)| *e == engine)
            .fold((0, 0), |(n, b), (_, len)| (n + 1, b + len))
    }
}

/// Every figure of `stats` that the model or the region's own accessors
/// determine, and the relations between the others.
fn check(region: &OverflowRegion, model: &Model) -> Result<RegionStats, TestCaseError> {
    let s = region.stats();
    for engine in EngineId::ALL {
        let (slots, bytes) = model.engine(engine);
        prop_assert_eq!(s.engine(engine).live_slots, slots, "{} live slots", engine);
        prop_assert_eq!(s.engine(engine).live_bytes, bytes, "{} live bytes", engine);
        prop_assert_eq!(s.engines[engine.as_u8() as usize], *s.engine(engine));
    }
    let live = model.live.len() as u64;
    let live_bytes: u64 = model.live.values().map(|(_, len)| len).sum();
    prop_assert_eq!(s.live_slots, live);
    prop_assert_eq!(s.live_bytes, live_bytes);
    prop_assert_eq!(s.engines.iter().map(|e| e.live_slots).sum::<u64>(), live);
    prop_assert_eq!(
        s.engines.iter().map(|e| e.live_bytes).sum::<u64>(),
        live_bytes
    );
    prop_assert_eq!(s.live_slots, region.live_slot_count() as u64);
    prop_assert_eq!(s.live_bytes, region.live_bytes() as u64);
    prop_assert_eq!(s.slot_count, model.high_water as u64);
    prop_assert_eq!(s.slot_count, region.slot_count() as u64);
    prop_assert_eq!(s.used_bytes, region.used_bytes() as u64);
    prop_assert_eq!(s.file_size, region.capacity() as u64);
    prop_assert_eq!(s.max_capacity, region.max_capacity() as u64);
    prop_assert_eq!(s.header_bytes, HEADER * live);

    // The used area is tiled by live extents (header + payload + slack),
    // free extents, and the old places of moved slots that wait for a sync
    // (automatic compaction).
    prop_assert_eq!(
        s.used_bytes,
        s.header_bytes + s.live_bytes + s.slack_bytes + s.free_bytes + s.retired_bytes,
        "used = headers + live + slack + free + retired: {:?}",
        s
    );
    // Slack per live extent: alignment (< 16) plus a remainder too short to
    // split off (a multiple of 16, < MIN_SPLIT).
    prop_assert!(
        s.slack_bytes <= live * (ALIGN - 1 + MIN_SPLIT - ALIGN),
        "slack {} for {} live slots",
        s.slack_bytes,
        live
    );
    // Free space: whole extents, each at least a header long.
    prop_assert_eq!(s.free_extents == 0, s.free_bytes == 0, "{:?}", s);
    prop_assert_eq!(s.largest_free_extent == 0, s.free_extents == 0, "{:?}", s);
    prop_assert!(s.largest_free_extent <= s.free_bytes, "{:?}", s);
    prop_assert!(s.free_bytes >= HEADER * s.free_extents, "{:?}", s);
    prop_assert!(
        s.free_extents == 0 || s.largest_free_extent * s.free_extents >= s.free_bytes,
        "largest free extent below the mean: {:?}",
        s
    );
    prop_assert_eq!(s.free_bytes % ALIGN, 0);
    prop_assert_eq!(s.largest_free_extent % ALIGN, 0);
    prop_assert_eq!(s.used_bytes % ALIGN, 0);
    // Free extents lie between live ones: never without a live slot.
    if live == 0 {
        prop_assert_eq!(s.used_bytes, 0, "{:?}", s);
        prop_assert_eq!(s.free_bytes, 0, "{:?}", s);
    }
    prop_assert!(s.used_bytes < s.file_size, "{:?}", s);
    prop_assert!(s.file_size <= s.max_capacity, "{:?}", s);
    prop_assert!(s.punched_bytes <= s.file_size, "{:?}", s);
    Ok(s)
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        engine: usize,
        len: usize,
    },
    /// Frees the live slot at this position (modulo the number live).
    Free(usize),
    /// Drop the region and open it again.
    Reopen,
    /// Compact, completely or within a budget of bytes moved.
    Compact(Option<u64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..EngineId::ALL.len(), prop_oneof![
            3 => 0usize..48,
            3 => 0usize..1500,
            1 => 0usize..40_000,
        ])
            .prop_map(|(engine, len)| Op::Write { engine, len }),
        4 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Reopen),
        1 => proptest::option::of(0u64..20_000).prop_map(Op::Compact),
    ]
}

fn tuning() -> MemoryTuning {
    MemoryTuning {
        overflow_initial_bytes: 8 << 10,
        overflow_max_bytes: 64 << 20,
        ..MemoryTuning::default()
    }
}

fn open(path: &Path) -> OverflowRegion {
    OverflowRegion::open_with_tuning(path, &tuning()).unwrap()
}

/// `stats` with `punched_bytes` and the counts since the open zeroed
/// (`RegionStats` is non-exhaustive, so
/// no struct update syntax out here).
fn without_punched(stats: &RegionStats) -> RegionStats {
    let mut stats = stats.clone();
    stats.punched_bytes = 0;
    // Counted since the open only.
    stats.auto_moved_extents = 0;
    stats.auto_moved_bytes = 0;
    stats
}

/// Reopens and checks that every figure the file determines came back.
/// `punched_bytes` is rediscovered from the file system's hole map and may
/// legitimately differ; the file size does not change on reopen; the free
/// space grows by the old places that waited for a sync.
fn reopen(region: OverflowRegion, model: &Model) -> Result<OverflowRegion, TestCaseError> {
    let before = check(&region, model)?;
    let path = region.path().to_owned();
    drop(region);
    let region = open(&path);
    prop_assert!(
        region.recovery().dropped.is_empty(),
        "{:?}",
        region.recovery()
    );
    let after = check(&region, model)?;
    // Old places of moved slots that waited for a sync are found as older
    // copies and freed by the reopen: the free space (and the end, if one
    // was last) changes by them.
    prop_assert_eq!(after.retired_bytes, 0);
    let retired = before.retired_bytes > 0;
    if retired {
        prop_assert!(after.used_bytes <= before.used_bytes);
        prop_assert!(after.free_bytes <= before.free_bytes + before.retired_bytes);
    }
    let comparable = |stats: &RegionStats| {
        let mut stats = without_punched(stats);
        stats.retired_bytes = 0;
        if retired {
            stats.used_bytes = 0;
            stats.free_bytes = 0;
            stats.free_extents = 0;
            stats.largest_free_extent = 0;
        }
        stats
    };
    prop_assert_eq!(comparable(&after), comparable(&before));
    Ok(region)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn stats_match_a_model_through_writes_frees_and_reopens(
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut region = open(&dir.path().join("r"));
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Write { engine, len } => {
                    let engine = EngineId::ALL[engine];
                    let slot = region.write(&vec![len as u8; len], engine).unwrap();
                    prop_assert!(!model.live.contains_key(&slot));
                    model.live.insert(slot, (engine, len as u64));
                    model.high_water = model.high_water.max(slot + 1);
                }
                Op::Free(at) => {
                    if model.live.is_empty() {
                        continue;
                    }
                    let slot = *model.live.keys().nth(at % model.live.len()).unwrap();
                    region.free(slot).unwrap();
                    model.live.remove(&slot);
                }
                Op::Reopen => region = reopen(region, &model)?,
                Op::Compact(budget) => {
                    let before = region.stats();
                    let report = match budget {
                        None => region.compact().unwrap(),
                        Some(budget) => region.compact_step(budget).unwrap(),
                    };
                    let after = check(&region, &model)?;
                    prop_assert_eq!(after.engines, before.engines);
                    // Compaction only moves extents down: the used area
                    // never grows; a complete one leaves no free extent.
                    prop_assert!(after.used_bytes <= before.used_bytes, "{:?}", report);
                    if report.complete {
                        prop_assert_eq!(after.free_extents, 0, "{:?}", report);
                        prop_assert_eq!(
                            after.used_bytes,
                            after.header_bytes
                                + after.live_bytes
                                + after.slack_bytes
                                + after.retired_bytes
                        );
                    }
                }
            }
            check(&region, &model)?;
        }
        region.check_consistency().map_err(TestCaseError::fail)?;
        let region = reopen(region, &model)?;
        region.check_consistency().map_err(TestCaseError::fail)?;
        for (&slot, &(engine, len)) in &model.live {
            prop_assert_eq!(region.engine(slot).unwrap(), engine);
            prop_assert_eq!(region.read(slot).unwrap().len() as u64, len);
        }
    }
}

/// A fixed scenario with every engine, checked by hand.
#[test]
fn per_engine_figures_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = open(&path);
    assert_eq!(region.stats().live_slots, 0);
    assert_eq!(region.stats().used_bytes, 0);
    let mut slots = Vec::new();
    for (i, engine) in EngineId::ALL.into_iter().enumerate() {
        // Engine i gets i + 1 slots of 100 * (i + 1) bytes.
        for _ in 0..=i {
            slots.push((
                region.write(&vec![1; 100 * (i + 1)], engine).unwrap(),
                engine,
            ));
        }
    }
    let stats = region.stats();
    for (i, engine) in EngineId::ALL.into_iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(stats.engine(engine).live_slots, n, "{engine}");
        assert_eq!(stats.engine(engine).live_bytes, n * 100 * n, "{engine}");
    }
    assert_eq!(stats.live_slots, 28);
    assert_eq!(stats.live_bytes, (1..=7u64).map(|n| 100 * n * n).sum());
    assert_eq!(stats.header_bytes, 28 * 32);
    // Nothing freed yet: the used area is headers, payloads and alignment.
    assert_eq!(stats.free_extents, 0);
    let slack: u64 = (1..=7u64)
        .map(|n| n * ((32 + 100 * n).next_multiple_of(16) - 32 - 100 * n))
        .sum();
    assert_eq!(stats.slack_bytes, slack);
    assert_eq!(
        stats.used_bytes,
        stats.header_bytes + stats.live_bytes + slack
    );

    // Free every Crdt slot: Crdt goes to zero, nobody else moves.
    for &(slot, engine) in &slots {
        if engine == EngineId::Crdt {
            region.free(slot).unwrap();
        }
    }
    let after = region.stats();
    assert_eq!(*after.engine(EngineId::Crdt), Default::default());
    for engine in EngineId::ALL {
        if engine != EngineId::Crdt {
            assert_eq!(after.engine(engine), stats.engine(engine));
        }
    }
    assert_eq!(after.live_slots, 25);
    // The three Crdt slots were adjacent: one free extent of 3 x 336 bytes.
    assert_eq!(after.free_extents, 1);
    assert_eq!(after.free_bytes, 3 * 336);
    assert_eq!(after.largest_free_extent, 3 * 336);
    assert_eq!(after.used_bytes, stats.used_bytes);
    assert_eq!(
        after.used_bytes,
        after.header_bytes + after.live_bytes + after.slack_bytes + after.free_bytes
    );
    drop(region);
    let region = open(&path);
    let reopened = region.stats();
    assert_eq!(without_punched(&reopened), without_punched(&after));
    println!("{reopened:#?}");
}

/// Complete compaction packs the live extents: it should leave the used
/// area no larger than it found it, and not turn free space into slack.
/// Here a 32-byte gap sits before a 48-byte extent that cannot move into it;
/// the 32-byte extent above it can (an earlier version moved the 48-byte
/// extent to the end instead, and grew the used area).
#[test]
fn compaction_does_not_grow_the_used_area() {
    let dir = tempfile::tempdir().unwrap();
    let mut region = open(&dir.path().join("r"));
    let a = region.write(b"", EngineId::Wal).unwrap(); // extent 32
    let b = region.write(&[2; 16], EngineId::Wal).unwrap(); // extent 48
    let c = region.write(b"", EngineId::Wal).unwrap(); // extent 32
    region.free(a).unwrap();
    let before = region.stats();
    assert_eq!(
        (before.used_bytes, before.free_bytes, before.slack_bytes),
        (112, 32, 0)
    );
    let report = region.compact().unwrap();
    let after = region.stats();
    region.check_consistency().unwrap();
    assert_eq!(region.read(b).unwrap(), &[2; 16]);
    assert_eq!(region.read(c).unwrap(), b"");
    println!("{report:?}\nbefore {before:?}\nafter  {after:?}");
    assert!(report.complete);
    assert_eq!(after.free_extents, 0);
    assert!(
        after.used_bytes <= before.used_bytes,
        "compaction grew the used area from {} to {} bytes (slack {} -> {})",
        before.used_bytes,
        after.used_bytes,
        before.slack_bytes,
        after.slack_bytes
    );
    // The best packing: 48 + 32 bytes, no slack.
    assert_eq!(after.used_bytes, 80, "{after:?}");
}
