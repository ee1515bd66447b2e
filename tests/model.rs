//! A shadow-model property test: random sequences of writes, frees, double
//! and unknown frees, reads and reopens, run against the region and against a
//! `BTreeMap` of what every live slot must hold.
//!
//! After every operation the region must agree with the model: the file walk
//! of `check_consistency()` holds, the counters match, and every live slot
//! reads back its bytes and engine. Payloads are derived from the slot index
//! and the operation number, so bytes left by an earlier tenant of a slot or
//! an extent are detected. The maximum capacity is small, so writes also run
//! out of space; a refused write must leave the model unchanged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use overflow_region::{EngineId, Error, MemoryTuning, OverflowRegion};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const INITIAL: usize = 8 << 10;
const MAX: usize = 256 << 10;
const DATA_START: usize = 4096;

#[derive(Debug, Clone)]
enum Op {
    Write {
        len: usize,
        engine: EngineId,
    },
    /// Free the live slot at this position (modulo) in index order.
    Free(usize),
    /// Free an index that was freed and not reused: `SlotFree`.
    DoubleFree(usize),
    /// Free an index never handed out: `UnknownSlot`.
    FreeUnknown(usize),
    /// Read the live slot at this position (modulo) in index order.
    Read(usize),
    /// Drop the region and open the file again.
    Reopen,
}

fn len_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => Just(0usize),
        12 => 1..64usize,
        10 => 64..4096usize,
        2 => (16usize << 10)..(64 << 10),
        1 => (64usize << 10)..(192 << 10),
    ]
}

fn write_strategy() -> impl Strategy<Value = Op> {
    (len_strategy(), 0..EngineId::ALL.len()).prop_map(|(len, engine)| Op::Write {
        len,
        engine: EngineId::ALL[engine],
    })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => write_strategy(),
        8 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::DoubleFree),
        1 => (0..1000usize).prop_map(Op::FreeUnknown),
        3 => any::<usize>().prop_map(Op::Read),
        1 => Just(Op::Reopen),
    ]
}

/// What the region must hold.
#[derive(Debug, Default)]
struct Model {
    live: BTreeMap<usize, (Vec<u8>, EngineId)>,
    /// Freed indices not handed out again; the next write takes the last.
    freed: Vec<usize>,
    slot_count: usize,
}

impl Model {
    fn next_index(&self) -> usize {
        self.freed.last().copied().unwrap_or(self.slot_count)
    }

    fn live_bytes(&self) -> usize {
        self.live.values().map(|(data, _)| data.len()).sum()
    }

    fn pick_live(&self, pick: usize) -> Option<usize> {
        let n = self.live.len();
        (n > 0).then(|| *self.live.keys().nth(pick % n).unwrap())
    }
}

/// Bytes that depend on the slot, the operation number and the position.
fn payload(slot: usize, op: usize, len: usize) -> Vec<u8> {
    let mut state = ((slot as u64) << 32 ^ op as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&state.to_le_bytes()[..take]);
    }
    out
}

fn extent_for(len: usize) -> usize {
    (32 + len).next_multiple_of(16)
}

/// How often the interesting outcomes happened, over all cases: the test
/// fails if a run never reaches them.
#[derive(Default)]
struct Coverage {
    writes: AtomicUsize,
    reused_index: AtomicUsize,
    from_free_space: AtomicUsize,
    capacity_exceeded: AtomicUsize,
    frees: AtomicUsize,
    double_frees: AtomicUsize,
    reopens: AtomicUsize,
    emptied: AtomicUsize,
}

fn bump(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A directory for one case's file: in memory when `/dev/shm` exists, so the
/// `fsync` of every new file costs nothing.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

thread_local! {
    /// Whether this thread's regions write with `pwrite`
    /// (`MemoryTuning::overflow_pwrite_stores`).
    static PWRITE_STORES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn open(path: &Path) -> Result<OverflowRegion, TestCaseError> {
    let tuning = MemoryTuning {
        overflow_initial_bytes: INITIAL,
        overflow_max_bytes: MAX,
        overflow_pwrite_stores: Some(PWRITE_STORES.get()),
        ..MemoryTuning::default()
    };
    OverflowRegion::open_with_tuning(path, &tuning)
        .map_err(|error| TestCaseError::fail(format!("open: {error}")))
}

/// Everything the region must agree with the model on.
fn check(region: &OverflowRegion, model: &Model, path: &Path) -> Result<(), TestCaseError> {
    if let Err(problem) = region.check_consistency() {
        return Err(TestCaseError::fail(format!("check_consistency: {problem}")));
    }
    prop_assert_eq!(region.slot_count(), model.slot_count);
    prop_assert_eq!(region.live_slot_count(), model.live.len());
    prop_assert_eq!(region.live_bytes(), model.live_bytes());
    let extents: usize = model
        .live
        .values()
        .map(|(data, _)| extent_for(data.len()))
        .sum();
    prop_assert!(region.used_bytes() >= extents);
    if model.live.is_empty() {
        prop_assert_eq!(
            region.used_bytes(),
            0,
            "everything freed: the tail is given back"
        );
    }
    prop_assert!(region.used_bytes() + DATA_START <= region.capacity());
    prop_assert!(region.capacity() <= region.max_capacity());
    prop_assert_eq!(region.max_capacity(), MAX);
    prop_assert_eq!(
        std::fs::metadata(path).unwrap().len() as usize,
        region.capacity()
    );
    for (&slot, (data, engine)) in &model.live {
        let read = region
            .read(slot)
            .map_err(|error| TestCaseError::fail(format!("read {slot}: {error}")))?;
        prop_assert!(
            read == &data[..],
            "slot {} does not read back its bytes",
            slot
        );
        prop_assert_eq!(region.engine(slot).unwrap(), *engine);
    }
    for &slot in &model.freed {
        prop_assert!(
            matches!(region.read(slot), Err(Error::SlotFree { slot: s }) if s == slot),
            "freed slot {} is readable",
            slot
        );
    }
    let result = region.read(model.slot_count);
    prop_assert!(
        matches!(
            result,
            Err(Error::UnknownSlot { slot, slot_count })
                if slot == model.slot_count && slot_count == model.slot_count
        ),
        "read past the last index: {:?}",
        result
    );
    Ok(())
}

fn run(ops: &[Op], coverage: &Coverage) -> Result<(), TestCaseError> {
    let dir = scratch_dir();
    let path = dir.path().join("region");
    let mut region = open(&path)?;
    let mut model = Model::default();
    check(&region, &model, &path)?;

    for (number, op) in ops.iter().enumerate() {
        match *op {
            Op::Write { len, engine } => {
                bump(&coverage.writes);
                let slot = model.next_index();
                let data = payload(slot, number, len);
                let stats = region.stats();
                let fits_in_free_space = stats.largest_free_extent as usize >= extent_for(len);
                let used = region.used_bytes();
                match region.write(&data, engine) {
                    Ok(written) => {
                        prop_assert_eq!(written, slot, "op {}: wrong index", number);
                        if model.freed.last() == Some(&slot) {
                            model.freed.pop();
                            bump(&coverage.reused_index);
                        } else {
                            model.slot_count += 1;
                        }
                        model.live.insert(slot, (data, engine));
                        if fits_in_free_space {
                            prop_assert_eq!(
                                region.used_bytes(),
                                used,
                                "op {}: a free extent fits {} bytes but the write went to the tail",
                                number,
                                len
                            );
                            bump(&coverage.from_free_space);
                        }
                    }
                    Err(Error::CapacityExceeded {
                        requested,
                        extent,
                        available,
                        max_capacity,
                    }) => {
                        bump(&coverage.capacity_exceeded);
                        prop_assert_eq!(requested as usize, len);
                        prop_assert_eq!(extent as usize, extent_for(len));
                        prop_assert_eq!(max_capacity as usize, MAX);
                        prop_assert_eq!(available as usize, MAX - DATA_START - used);
                        prop_assert!(extent > available, "refused although the tail has room");
                        prop_assert!(
                            !fits_in_free_space,
                            "refused although a free extent of {} bytes fits",
                            stats.largest_free_extent
                        );
                        prop_assert_eq!(region.used_bytes(), used);
                    }
                    Err(error) => {
                        return Err(TestCaseError::fail(format!("op {number}: write: {error}")));
                    }
                }
            }
            Op::Free(pick) => {
                if let Some(slot) = model.pick_live(pick) {
                    bump(&coverage.frees);
                    region
                        .free(slot)
                        .map_err(|error| TestCaseError::fail(format!("free {slot}: {error}")))?;
                    model.live.remove(&slot);
                    model.freed.push(slot);
                    if model.live.is_empty() {
                        bump(&coverage.emptied);
                    }
                }
            }
            Op::DoubleFree(pick) => {
                if !model.freed.is_empty() {
                    bump(&coverage.double_frees);
                    let slot = model.freed[pick % model.freed.len()];
                    let used = region.used_bytes();
                    let result = region.free(slot);
                    prop_assert!(
                        matches!(result, Err(Error::SlotFree { slot: s }) if s == slot),
                        "double free of {}: {:?}",
                        slot,
                        result
                    );
                    prop_assert_eq!(region.used_bytes(), used);
                }
            }
            Op::FreeUnknown(offset) => {
                let slot = model.slot_count + offset;
                let used = region.used_bytes();
                let result = region.free(slot);
                prop_assert!(
                    matches!(
                        result,
                        Err(Error::UnknownSlot { slot: s, slot_count })
                            if s == slot && slot_count == model.slot_count
                    ),
                    "free of unknown {}: {:?}",
                    slot,
                    result
                );
                prop_assert_eq!(region.used_bytes(), used);
            }
            Op::Read(pick) => match model.pick_live(pick) {
                Some(slot) => {
                    let (data, engine) = &model.live[&slot];
                    prop_assert!(region.read(slot).unwrap() == &data[..]);
                    prop_assert_eq!(region.engine(slot).unwrap(), *engine);
                }
                None => {
                    let result = region.read(pick);
                    prop_assert!(
                        matches!(
                            result,
                            Err(Error::UnknownSlot { .. } | Error::SlotFree { .. })
                        ),
                        "read {} with no live slot: {:?}",
                        pick,
                        result
                    );
                }
            },
            Op::Reopen => {
                bump(&coverage.reopens);
                let used = region.used_bytes();
                drop(region);
                region = open(&path)?;
                let report = region.recovery();
                prop_assert!(!report.initialised);
                prop_assert_eq!(report.slots_recovered, model.live.len());
                prop_assert!(report.dropped.is_empty(), "{:?}", report);
                prop_assert_eq!(report.repairs, 0, "{:?}", report);
                prop_assert_eq!(region.used_bytes(), used);
                // The file does not record the order of frees: after a
                // reopen the lowest freed index is handed out first.
                model.freed.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
        check(&region, &model, &path)
            .map_err(|error| TestCaseError::fail(format!("after op {number} ({op:?}): {error}")))?;
    }
    Ok(())
}

#[test]
fn region_agrees_with_a_shadow_model() {
    agrees_with_a_shadow_model(200);
}

/// The same with every store a `pwrite` (as on btrfs).
#[test]
fn region_agrees_with_a_shadow_model_when_it_writes_with_pwrite() {
    PWRITE_STORES.set(true);
    agrees_with_a_shadow_model(100);
}

fn agrees_with_a_shadow_model(cases: u32) {
    let config = Config {
        cases,
        // Failing cases are printed, not written into the source tree.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let coverage = Coverage::default();
    let ops = prop::collection::vec(op_strategy(), 1..200);
    let result = runner.run(&ops, |ops| run(&ops, &coverage));
    if let Err(error) = result {
        panic!("{error}");
    }
    let counts = [
        ("writes", &coverage.writes),
        ("reused indices", &coverage.reused_index),
        ("writes from free space", &coverage.from_free_space),
        ("capacity exceeded", &coverage.capacity_exceeded),
        ("frees", &coverage.frees),
        ("double frees", &coverage.double_frees),
        ("reopens", &coverage.reopens),
        ("regions emptied", &coverage.emptied),
    ];
    for (name, count) in counts {
        let count = count.load(Ordering::Relaxed);
        eprintln!("{name}: {count}");
        assert!(count > 0, "the random operations never reached: {name}");
    }
}
