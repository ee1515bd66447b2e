//! Tests of the free-space manager: unit tests per operation and a
//! property test against a model.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Start of the data area in the tests (not zero, to catch offset mix-ups).
const START: u64 = 4096;

/// `n` granules in bytes.
fn g(n: u64) -> u64 {
    n * GRANULE
}

/// Shorthand for an extent.
fn ext(offset: u64, len: u64) -> Extent {
    Extent { offset, len }
}

/// A roomy space that splits off every non-empty remainder.
fn space() -> Space {
    Space::new(START, START + g(1 << 20), GRANULE)
}

/// Allocates `len` bytes, which must succeed, and checks the invariants.
fn alloc(space: &mut Space, len: u64) -> Extent {
    let allocation = space.allocate(len).expect("allocation failed");
    space.check_consistency();
    allocation.extent
}

/// The free extent that starts where `extent` ends, found by looking at every one: what
/// the region learns from the tag in its file.
fn free_after(space: &Space, extent: Extent) -> Option<Extent> {
    space
        .free_extents()
        .find(|free| free.offset == extent.end())
}

/// Releases `extent` (naming its free neighbour after it) and checks the invariants.
fn release(space: &mut Space, extent: Extent) -> Released {
    let after = free_after(space, extent);
    let released = space.release(extent, after);
    space.check_consistency();
    released
}

/// The free extents sorted by offset.
fn sorted_free(space: &Space) -> Vec<Extent> {
    let mut free: Vec<Extent> = space.free_extents().collect();
    free.sort_unstable_by_key(|extent| extent.offset);
    free
}

/// A deterministic pseudo-random permutation of `items` (xorshift-driven Fisher-Yates).
fn shuffled<T>(mut items: Vec<T>, mut seed: u64) -> Vec<T> {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    items
}

#[test]
fn lengths_below_64_granules_have_exact_classes() {
    for granules in 1..64 {
        let class = Class::containing(granules);
        assert_eq!(class.lower_bound(), granules);
        assert_eq!(class.width(), 1);
        assert_eq!(Class::smallest_fitting(granules), class);
    }
    assert_eq!(Class::containing(1), Class { fl: 0, sl: 0 });
    assert_eq!(Class::containing(3), Class { fl: 1, sl: 1 });
    assert_eq!(Class::containing(31), Class { fl: 4, sl: 15 });
    assert_eq!(Class::containing(32), Class { fl: 5, sl: 0 });
    assert_eq!(Class::containing(63), Class { fl: 5, sl: 31 });
}

#[test]
fn class_boundaries_from_64_granules_on() {
    assert_eq!(Class::containing(64), Class { fl: 6, sl: 0 });
    assert_eq!(Class::containing(65), Class { fl: 6, sl: 0 });
    assert_eq!(Class::containing(66), Class { fl: 6, sl: 1 });
    assert_eq!(Class::containing(127), Class { fl: 6, sl: 31 });
    assert_eq!(Class::containing(128), Class { fl: 7, sl: 0 });
    assert_eq!(Class::containing(65).width(), 2);
    assert_eq!(Class::containing(128).width(), 4);
}

#[test]
fn class_of_the_biggest_lengths() {
    assert_eq!(Class::containing(1 << 40), Class { fl: 40, sl: 0 });
    assert_eq!(Class::containing((1 << 40) - 1), Class { fl: 39, sl: 31 });
    assert_eq!(
        Class::containing((1 << 40) + (1 << 35)),
        Class { fl: 40, sl: 1 }
    );
    assert_eq!(Class::containing(1 << 40).width(), 1 << 35);
    assert_eq!(
        Class::containing(u64::MAX / GRANULE),
        Class { fl: 59, sl: 31 }
    );
    assert!(Class::smallest_fitting(u64::MAX / GRANULE).index() < CLASS_COUNT);
}

#[test]
fn smallest_fitting_rounds_up_to_the_next_class() {
    assert_eq!(Class::smallest_fitting(64), Class { fl: 6, sl: 0 });
    assert_eq!(Class::smallest_fitting(65), Class { fl: 6, sl: 1 });
    assert_eq!(Class::smallest_fitting(127), Class { fl: 7, sl: 0 });
    assert_eq!(
        Class::smallest_fitting((1 << 40) + 1),
        Class { fl: 40, sl: 1 }
    );
    assert_eq!(
        Class::smallest_fitting(u64::MAX / GRANULE),
        Class { fl: 60, sl: 0 }
    );
}

#[test]
fn classes_tile_all_lengths_in_index_order() {
    let mut next_lower = 1;
    let mut last_index = None;
    for fl in 0..60 {
        let classes_in_level = (1u64 << fl).min(SL_COUNT as u64) as u32;
        for sl in 0..classes_in_level {
            let class = Class { fl, sl };
            assert_eq!(class.lower_bound(), next_lower, "{class:?}");
            assert_eq!(Class::containing(next_lower), class);
            assert_eq!(Class::containing(next_lower + class.width() - 1), class);
            assert!(last_index < Some(class.index()));
            last_index = Some(class.index());
            next_lower += class.width();
        }
    }
    assert_eq!(next_lower, 1 << 60);
}

#[test]
fn allocating_from_an_empty_space_bumps_the_cursor() {
    let mut space = space();
    let allocation = space.allocate(g(3)).unwrap();
    assert_eq!(
        allocation,
        Allocation {
            extent: ext(START, g(3)),
            remainder: None,
            from_tail: true,
        }
    );
    assert_eq!(alloc(&mut space, g(1)), ext(START + g(3), g(1)));
    assert_eq!(space.cursor(), START + g(4));
    assert_eq!(space.free_extent_count(), 0);
    assert_eq!(space.free_bytes(), 0);
    assert_eq!(space.largest_free(), None);
}

#[test]
fn allocation_splits_a_free_extent_and_keeps_the_remainder_free() {
    let mut space = space();
    let a = alloc(&mut space, g(10));
    alloc(&mut space, g(1));
    assert_eq!(release(&mut space, a), Released::Free(a));
    let allocation = space.allocate(g(4)).unwrap();
    space.check_consistency();
    let remainder = ext(START + g(4), g(6));
    assert_eq!(
        allocation,
        Allocation {
            extent: ext(START, g(4)),
            remainder: Some(remainder),
            from_tail: false,
        }
    );
    assert_eq!(sorted_free(&space), [remainder]);
    assert_eq!(space.free_bytes(), g(6));
    assert_eq!(space.cursor(), START + g(11));
}

#[test]
fn a_remainder_shorter_than_min_split_stays_inside_as_slack() {
    let mut space = Space::new(START, START + g(1000), g(4));
    let a = alloc(&mut space, g(10));
    alloc(&mut space, g(1));
    release(&mut space, a);
    let allocation = space.allocate(g(7)).unwrap();
    assert_eq!(allocation.extent, a);
    assert_eq!(allocation.remainder, None);
    assert_eq!(space.free_extent_count(), 0);

    release(&mut space, a);
    let allocation = space.allocate(g(6)).unwrap();
    assert_eq!(allocation.extent, ext(START, g(6)));
    assert_eq!(allocation.remainder, Some(ext(START + g(6), g(4))));
    space.check_consistency();
}

/// Allocates three neighbours of different lengths and a guard behind them.
fn three_neighbours(space: &mut Space) -> [Extent; 3] {
    let extents = [g(2), g(3), g(5)].map(|len| alloc(space, len));
    alloc(space, g(1));
    extents
}

#[test]
fn release_coalesces_with_the_free_extent_before() {
    let mut space = space();
    let [a, b, _] = three_neighbours(&mut space);
    release(&mut space, a);
    assert_eq!(release(&mut space, b), Released::Free(ext(START, g(5))));
    assert_eq!(sorted_free(&space), [ext(START, g(5))]);
}

#[test]
fn release_coalesces_with_the_free_extent_after() {
    let mut space = space();
    let [_, b, c] = three_neighbours(&mut space);
    release(&mut space, c);
    assert_eq!(release(&mut space, b), Released::Free(ext(b.offset, g(8))));
    assert_eq!(space.free_extent_count(), 1);
    assert_eq!(space.free_bytes(), g(8));
}

#[test]
fn release_coalesces_with_both_neighbours() {
    let mut space = space();
    let [a, b, c] = three_neighbours(&mut space);
    release(&mut space, a);
    release(&mut space, c);
    assert_eq!(space.free_extent_count(), 2);
    assert_eq!(release(&mut space, b), Released::Free(ext(START, g(10))));
    assert_eq!(sorted_free(&space), [ext(START, g(10))]);
    assert_eq!(space.largest_free(), Some(g(10)));
}

#[test]
fn releasing_the_last_extent_retracts_the_cursor() {
    let mut space = space();
    let [a, b, c] = [g(2), g(3), g(5)].map(|len| alloc(&mut space, len));
    assert_eq!(
        release(&mut space, c),
        Released::Retracted { cursor: c.offset }
    );
    release(&mut space, a);
    // `b` merges with the free `a` before it, reaches the cursor and is given back whole.
    assert_eq!(
        release(&mut space, b),
        Released::Retracted { cursor: START }
    );
    assert_eq!(space.free_extent_count(), 0);
    assert_eq!(space.free_bytes(), 0);
}

#[test]
fn releasing_everything_in_any_order_returns_the_cursor_to_start() {
    for seed in 1..=20 {
        let mut space = space();
        let lens = (0..150).map(|i| g(1 + (i * 7 + seed) % 90));
        let extents: Vec<Extent> = lens.map(|len| alloc(&mut space, len)).collect();
        for extent in shuffled(extents, seed) {
            release(&mut space, extent);
        }
        assert_eq!(space.cursor(), START, "seed {seed}");
        assert_eq!(space.free_extent_count(), 0);
        assert_eq!(space.free_bytes(), 0);
    }
}

/// Frees one extent of `wanted` granules and, after it (so ahead of it in the list), two
/// shorter ones of the same class; each is kept apart from the others by a guard.
fn same_class_with_one_fit(space: &mut Space, wanted: u64, shorter: u64) -> Extent {
    assert_eq!(Class::containing(wanted), Class::containing(shorter));
    assert_ne!(Class::smallest_fitting(wanted), Class::containing(wanted));
    let fit = alloc(space, g(wanted));
    alloc(space, g(1));
    let short_ones = [alloc(space, g(shorter)), alloc(space, g(1))];
    let more = [alloc(space, g(shorter)), alloc(space, g(1))];
    release(space, fit);
    release(space, short_ones[0]);
    release(space, more[0]);
    fit
}

#[test]
fn a_free_extent_of_the_requested_length_is_served_before_the_tail() {
    let mut space = space();
    let fit = same_class_with_one_fit(&mut space, 71, 70);
    let cursor = space.cursor();
    let allocation = space.allocate(g(71)).unwrap();
    space.check_consistency();
    assert_eq!(allocation.extent, fit);
    assert!(!allocation.from_tail);
    assert_eq!(space.cursor(), cursor);
    assert_eq!(space.free_extent_count(), 2);
}

#[test]
fn the_biggest_lengths_round_trip() {
    let huge = g(1 << 40);
    let mut space = Space::new(0, 4 * huge, GRANULE);
    let a = alloc(&mut space, huge);
    let b = alloc(&mut space, huge - g(1));
    alloc(&mut space, g(1));
    release(&mut space, a);
    release(&mut space, b);
    assert_eq!(space.largest_free(), Some(2 * huge - g(1)));
    let c = alloc(&mut space, huge - g(1));
    assert_eq!(c, ext(0, huge - g(1)));
    assert_eq!(sorted_free(&space), [ext(huge - g(1), huge)]);
    assert_eq!(alloc(&mut space, huge), ext(huge - g(1), huge));
    assert_eq!(space.free_extent_count(), 0);
    assert_eq!(space.cursor(), 2 * huge);
}

#[test]
fn a_fruitless_walk_makes_the_list_bound_exact() {
    let mut space = space();
    let short = alloc(&mut space, g(70));
    alloc(&mut space, g(1));
    let fit = alloc(&mut space, g(71));
    alloc(&mut space, g(1));
    release(&mut space, short);
    let class = Class::containing(71).index();
    assert_eq!(space.free.lists[class].len_bound, g(70));

    // Nothing fits: served from the tail; the bound already excluded the list.
    assert!(space.allocate(g(71)).unwrap().from_tail);
    space.check_consistency();

    // A stale bound (its extent was taken) is made exact by the next fruitless walk.
    release(&mut space, fit);
    assert_eq!(space.free.lists[class].len_bound, g(71));
    assert_eq!(space.allocate(g(71)).unwrap().extent, fit);
    assert_eq!(space.free.lists[class].len_bound, g(71));
    assert!(space.allocate(g(71)).unwrap().from_tail);
    assert_eq!(space.free.lists[class].len_bound, g(70));
    space.check_consistency();
}

#[test]
fn largest_free_is_exact_within_its_class() {
    let mut space = space();
    same_class_with_one_fit(&mut space, 71, 70);
    assert_eq!(space.largest_free(), Some(g(71)));
    // A short allocation splits one of them (which one is the allocator's
    // choice): the largest is still exact.
    let small = alloc(&mut space, g(3));
    alloc(&mut space, g(1));
    release(&mut space, small);
    let longest = sorted_free(&space).iter().map(|extent| extent.len).max();
    assert_eq!(space.largest_free(), longest);
    assert!(longest >= Some(g(70)));
}

/// Everything observable about a space.
fn snapshot(space: &Space) -> (Vec<Extent>, u64, u64, usize, u64, Option<u64>) {
    (
        sorted_free(space),
        space.cursor(),
        space.limit(),
        space.free_extent_count(),
        space.free_bytes(),
        space.largest_free(),
    )
}

#[test]
fn out_of_space_changes_nothing() {
    let limit = START + g(10);
    let mut space = Space::new(START, limit, GRANULE);
    let a = alloc(&mut space, g(6));
    alloc(&mut space, g(2));
    release(&mut space, a);
    let before = snapshot(&space);
    assert_eq!(
        space.allocate(g(7)),
        Err(OutOfSpace {
            requested: g(7),
            cursor: START + g(8),
            limit,
        })
    );
    assert_eq!(snapshot(&space), before);
    assert!(space.allocate(u64::MAX - (GRANULE - 1)).is_err());
    assert_eq!(snapshot(&space), before);
    space.check_consistency();
    // What is left still serves.
    assert!(!space.allocate(g(6)).unwrap().from_tail);
    assert!(space.allocate(g(2)).unwrap().from_tail);
    assert_eq!(space.cursor(), limit);
}

#[test]
fn undo_tail_moves_the_cursor_back() {
    let mut space = space();
    let a = alloc(&mut space, g(2));
    let b = alloc(&mut space, g(3));
    assert_eq!(space.undo_tail(b), a.end());
    space.check_consistency();

    let b = alloc(&mut space, g(3));
    release(&mut space, a);
    // The free `a` just before it goes back too.
    assert_eq!(space.undo_tail(b), START);
    assert_eq!(space.free_extent_count(), 0);
    space.check_consistency();
}

#[test]
fn recovery_rebuilds_free_space_and_retracts_the_trailing_run() {
    let mut space = Space::new(START, START + g(8), GRANULE);
    space.recover_allocated(ext(START, g(2)));
    space.recover_free(ext(START + g(2), g(3)));
    space.recover_free(ext(START + g(5), g(1)));
    space.check_consistency();
    space.recover_allocated(ext(START + g(6), g(1)));
    space.recover_free(ext(START + g(7), g(2)));
    space.recover_free(ext(START + g(9), g(1)));
    space.check_consistency();
    assert_eq!(space.cursor(), START + g(10));
    assert_eq!(
        space.limit(),
        START + g(10),
        "the limit is raised to the data found"
    );
    assert_eq!(space.finish_recovery(), START + g(7));
    assert_eq!(space.finish_recovery(), START + g(7));
    space.check_consistency();
    assert_eq!(sorted_free(&space), [ext(START + g(2), g(4))]);
    assert_eq!(space.free_bytes(), g(4));
    assert!(!space.allocate(g(4)).unwrap().from_tail);
}

#[test]
fn a_recovered_index_serves_exactly_like_one_built_by_releases() {
    // Extents of varied lengths; every second one free, the last one live.
    let count = if cfg!(miri) { 201 } else { 2001 };
    let lens: Vec<u64> = (0..count).map(|i| g(1 + i * 7 % 97)).collect();
    let mut released = Space::new(START, u64::MAX / 2, GRANULE);
    let extents: Vec<Extent> = lens.iter().map(|&len| alloc(&mut released, len)).collect();
    let mut recovered = Space::new(START, u64::MAX / 2, GRANULE);
    for (i, &extent) in extents.iter().enumerate() {
        if i % 2 == 1 {
            release(&mut released, extent);
            recovered.recover_free(extent);
        } else {
            recovered.recover_allocated(extent);
        }
    }
    assert_eq!(recovered.finish_recovery(), released.cursor());
    recovered.check_consistency();
    assert_eq!(sorted_free(&recovered), sorted_free(&released));
    assert_eq!(recovered.free_bytes(), released.free_bytes());
    // Same neighbours: freeing the live extents coalesces identically.
    for &extent in extents.iter().step_by(4) {
        assert_eq!(
            release(&mut recovered, extent),
            release(&mut released, extent)
        );
    }
    // Same lists in the same order: the same allocations.
    for len in (1..count / 5).map(|i| g(1 + i * 13 % 120)) {
        assert_eq!(recovered.allocate(len), released.allocate(len));
    }
    recovered.check_consistency();
    assert_eq!(sorted_free(&recovered), sorted_free(&released));
}

#[test]
fn recovery_keeps_apart_free_extents_separated_by_a_gap() {
    let mut space = space();
    space.recover_free(ext(START, g(1)));
    space.recover_free(ext(START + g(2), g(1)));
    space.recover_free(ext(START + g(3), g(1)));
    space.check_consistency();
    assert_eq!(space.finish_recovery(), START + g(2));
    assert_eq!(sorted_free(&space), [ext(START, g(1))]);
}

#[test]
fn recovering_only_free_extents_ends_at_start() {
    let mut space = space();
    space.recover_free(ext(START, g(4)));
    space.recover_free(ext(START + g(4), g(4)));
    assert_eq!(space.finish_recovery(), START);
    assert_eq!(space.free_extent_count(), 0);
    space.check_consistency();
}

#[test]
fn allocating_finishes_recovery() {
    let mut space = space();
    space.recover_allocated(ext(START, g(1)));
    space.recover_free(ext(START + g(1), g(4)));
    assert_eq!(alloc(&mut space, g(2)), ext(START + g(1), g(2)));
    assert_eq!(space.free_extent_count(), 0);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "overlaps free space")]
fn releasing_twice_is_caught_in_debug_builds() {
    let mut space = space();
    let a = alloc(&mut space, g(1));
    alloc(&mut space, g(1));
    space.release(a, None);
    space.release(a, None);
}

#[test]
fn a_neighbour_the_index_does_not_confirm_is_not_merged() {
    let mut space = space();
    let [a, b, c] = three_neighbours(&mut space);
    // `b` is live: a claim that a free extent follows `a` there is wrong.
    assert_eq!(space.release(a, Some(b)), Released::Free(a));
    space.check_consistency();
    // A claim with the right start but another length is not confirmed either.
    release(&mut space, c);
    let wrong = ext(c.offset, c.len + g(1));
    assert_eq!(space.free_extent(c.offset, wrong.len), None);
    assert_eq!(space.free_extent(c.offset, c.len), Some(c));
    assert_eq!(space.free_extent(b.offset, b.len), None);
}

/// Reference semantics: the free extents (offset -> length) and the cursor.
struct Model {
    limit: u64,
    min_split: u64,
    cursor: u64,
    free: BTreeMap<u64, u64>,
}

impl Model {
    /// The free extent that starts where `extent` ends, if any.
    fn free_after(&self, extent: Extent) -> Option<Extent> {
        self.free
            .get(&extent.end())
            .map(|&len| ext(extent.end(), len))
    }

    /// Checks that `got` is a legal answer to a request of `len` bytes and applies it.
    fn allocate(&mut self, len: u64, got: Result<Allocation, OutOfSpace>) {
        if self.free.values().any(|&free_len| free_len >= len) {
            let got = got.expect("a free extent fits, yet the allocation failed");
            assert!(!got.from_tail, "a free extent fits, yet the tail served");
            self.take_free(len, got);
        } else if self.cursor + len <= self.limit {
            let extent = ext(self.cursor, len);
            let expected = Allocation {
                extent,
                remainder: None,
                from_tail: true,
            };
            assert_eq!(got, Ok(expected));
            self.cursor = extent.end();
        } else {
            let (cursor, limit) = (self.cursor, self.limit);
            let expected = OutOfSpace {
                requested: len,
                cursor,
                limit,
            };
            assert_eq!(got, Err(expected));
        }
    }

    /// Checks an allocation served from free space and applies it.
    fn take_free(&mut self, len: u64, got: Allocation) {
        let offset = got.extent.offset;
        let found = self.free.remove(&offset).expect("not a free extent");
        assert!(found >= len, "the free extent is too short");
        let remainder = found - len;
        if remainder > 0 && remainder >= self.min_split {
            assert_eq!(got.extent, ext(offset, len));
            assert_eq!(got.remainder, Some(ext(offset + len, remainder)));
            self.free.insert(offset + len, remainder);
        } else {
            assert_eq!(got.extent, ext(offset, found));
            assert_eq!(got.remainder, None);
        }
    }

    /// Releases `extent`, coalescing and retracting.
    fn release(&mut self, extent: Extent) -> Released {
        let mut merged = extent;
        let before = self.free.range(..extent.offset).next_back();
        if let Some((&offset, &len)) = before.filter(|(o, l)| **o + **l == extent.offset) {
            self.free.remove(&offset);
            merged = ext(offset, len + merged.len);
        }
        if merged.end() == self.cursor {
            self.cursor = merged.offset;
            return Released::Retracted {
                cursor: self.cursor,
            };
        }
        if let Some(len) = self.free.remove(&merged.end()) {
            merged.len += len;
        }
        self.free.insert(merged.offset, merged.len);
        Released::Free(merged)
    }

    /// The free extents sorted by offset.
    fn extents(&self) -> Vec<Extent> {
        self.free.iter().map(|(&o, &l)| ext(o, l)).collect()
    }
}

/// Asserts that `space` agrees with `model` and that `live` and free extents never overlap.
fn check_against(space: &Space, model: &Model, live: &[Extent]) {
    space.check_consistency();
    let free = sorted_free(space);
    assert_eq!(free, model.extents());
    assert_eq!(space.cursor(), model.cursor);
    assert_eq!(space.free_extent_count(), model.free.len());
    assert_eq!(space.free_bytes(), model.free.values().sum::<u64>());
    assert_eq!(space.largest_free(), model.free.values().copied().max());
    let mut all: Vec<Extent> = live.iter().copied().chain(free).collect();
    all.sort_unstable_by_key(|extent| extent.offset);
    for pair in all.windows(2) {
        assert!(pair[0].end() <= pair[1].offset, "{pair:?} overlap");
    }
    if let (Some(first), Some(last)) = (all.first(), all.last()) {
        assert!(first.offset >= START && last.end() <= space.cursor());
    }
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// Allocate this many bytes.
    Allocate(u64),
    /// Release the live extent picked by this index (nothing when none is live).
    Release(prop::sample::Index),
}

/// Mostly short requests (exact classes, many collisions), some of 64 to 72 granules
/// (two-length classes, exercising the first-fit walk), and releases.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..=8).prop_map(|n| Op::Allocate(g(n))),
        1 => (64u64..=72).prop_map(|n| Op::Allocate(g(n))),
        3 => any::<prop::sample::Index>().prop_map(Op::Release),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn agrees_with_a_simple_model(
        min_split in prop::sample::select(vec![0, g(1), g(3), g(10)]),
        capacity in 16u64..800,
        ops in prop::collection::vec(op(), 1..100),
        seed in any::<u64>(),
    ) {
        let limit = START + g(capacity);
        let mut space = Space::new(START, limit, min_split);
        let mut model = Model { limit, min_split, cursor: START, free: BTreeMap::new() };
        let mut live: Vec<Extent> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate(len) => {
                    let got = space.allocate(len);
                    model.allocate(len, got);
                    live.extend(got.ok().map(|allocation| allocation.extent));
                }
                Op::Release(index) if !live.is_empty() => {
                    let extent = live.swap_remove(index.index(live.len()));
                    let after = model.free_after(extent);
                    assert_eq!(space.release(extent, after), model.release(extent));
                }
                Op::Release(_) => {}
            }
            check_against(&space, &model, &live);
        }
        for extent in shuffled(live, seed | 1) {
            let after = model.free_after(extent);
            assert_eq!(space.release(extent, after), model.release(extent));
            space.check_consistency();
        }
        prop_assert_eq!(space.cursor(), START);
        prop_assert_eq!(space.free_extent_count(), 0);
        prop_assert_eq!(space.free_bytes(), 0);
    }
}
