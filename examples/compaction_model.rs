//! A model of the region's free space under churn, for trying compaction
//! strategies in a second instead of a build: extents are offsets and
//! lengths in `BTreeMap`s, allocation is best fit (lowest offset among equal
//! lengths) with a bump cursor, free extents coalesce, and nothing is
//! written anywhere. The churn is `policy_cost`'s (sizes log-uniform from
//! 16 B to 64 KiB, 32 MiB of extents live, one free of a random live extent
//! and one write per pair, 50 k pairs of warm-up, then 400 k measured);
//! extents are payload plus a 32-byte header, rounded up to 16 bytes.
//!
//! ```sh
//! cargo run --release --example compaction_model -- none [SEED]
//! cargo run --release --example compaction_model -- evacuate FROM TO [SEED]
//! cargo run --release --example compaction_model -- merge FROM TO [SEED]
//! cargo run --release --example compaction_model -- segregate SMALL CHUNK [SEED]
//! ```
//!
//! - `none`: no compaction.
//! - `evacuate FROM TO`: once the region's end passes `1 + FROM` times the
//!   live bytes, a pass moves the highest live extents into the best-fitting
//!   free space below `1 + TO` times the live bytes, until the end is down
//!   to that limit or the highest extent finds no room (the region's
//!   `evacuate`). A pass takes as many operations as its moves' bytes need
//!   credit (each operation earns the bytes it wrote and freed), as in the
//!   region.
//! - `merge FROM TO`: the same, after a merge step at the start of each
//!   pass (the region's `merge_gaps`): every live extent below the limit
//!   that follows a free extent and is at most a quarter as long as the
//!   free space on both sides is moved into the best-fitting free space
//!   below the limit, up to the pass's excess in bytes. Merges are
//!   instantaneous here (the region spreads them over operations).
//! - `segregate SMALL CHUNK`: no compaction; extents of at most `SMALL`
//!   bytes are packed into chunks of `CHUNK` bytes taken from the main
//!   space (best fit inside the chunks, a chunk given back once empty).
//!
//! Prints `used`/live (the region's end over the live extents' bytes),
//! sampled every 1000 pairs (mean and largest), and moves and bytes moved
//! per pair. The region's own figures are in docs/PERFORMANCE.md; the model
//! leaves out the slot table, punching, the credit cap and the automatic
//! pass's bounded walk, so it shows what a strategy can reach, not what it
//! costs.

use std::collections::{BTreeMap, BTreeSet};

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

const LIVE: u64 = 32 << 20;
const WARM_UP: usize = 50_000;
const PAIRS: usize = 400_000;
const HEADER: u64 = 32;
const GRANULE: u64 = 16;
/// A merge moves a live extent at most this many times shorter than the
/// free space around it (the region's `MERGE_RATIO`).
const MERGE_RATIO: u64 = 4;
/// Best fit below a limit looks at this many fitting free extents at most
/// (the region's `MOVE_VISITS`).
const MOVE_VISITS: usize = 32;

/// Free space: best fit with a bump cursor; free extents coalesce, and one
/// that reaches the cursor is taken back into it.
#[derive(Default)]
struct Space {
    by_start: BTreeMap<u64, u64>,
    by_len: BTreeSet<(u64, u64)>,
    cursor: u64,
}

impl Space {
    fn insert(&mut self, start: u64, len: u64) {
        self.by_start.insert(start, len);
        self.by_len.insert((len, start));
    }

    fn remove(&mut self, start: u64) -> u64 {
        let len = self.by_start.remove(&start).expect("a free extent");
        self.by_len.remove(&(len, start));
        len
    }

    /// Takes the front `len` bytes of the free extent `start`.
    fn carve(&mut self, start: u64, len: u64) -> u64 {
        let free = self.remove(start);
        if free > len {
            self.insert(start + len, free - len);
        }
        start
    }

    fn allocate(&mut self, len: u64) -> u64 {
        if let Some(&(_, start)) = self.by_len.range((len, 0)..).next() {
            return self.carve(start, len);
        }
        self.cursor += len;
        self.cursor - len
    }

    /// Best fit whose front `len` bytes end at or below `below`; never the
    /// cursor.
    fn allocate_below(&mut self, len: u64, below: u64) -> Option<u64> {
        let &(_, start) = self
            .by_len
            .range((len, 0)..)
            .take(MOVE_VISITS)
            .find(|&&(_, start)| start + len <= below)?;
        Some(self.carve(start, len))
    }

    fn release(&mut self, mut start: u64, mut len: u64) {
        if let Some((&before, &before_len)) = self.by_start.range(..start).next_back()
            && before + before_len == start
        {
            self.remove(before);
            start = before;
            len += before_len;
        }
        if self.by_start.contains_key(&(start + len)) {
            len += self.remove(start + len);
        }
        if start + len == self.cursor {
            self.cursor = start;
        } else {
            self.insert(start, len);
        }
    }
}

/// Live extents, by offset and in a vector to pick a random one from.
#[derive(Default)]
struct Live {
    by_offset: BTreeMap<u64, (u64, usize)>,
    offsets: Vec<u64>,
    bytes: u64,
}

impl Live {
    fn add(&mut self, offset: u64, len: u64) {
        self.by_offset.insert(offset, (len, self.offsets.len()));
        self.offsets.push(offset);
        self.bytes += len;
    }

    /// Takes out the live extent at position `at` of `offsets`.
    fn take(&mut self, at: usize) -> (u64, u64) {
        let offset = self.offsets.swap_remove(at);
        if let Some(&moved) = self.offsets.get(at) {
            self.by_offset.get_mut(&moved).expect("listed").1 = at;
        }
        let (len, _) = self.by_offset.remove(&offset).expect("listed");
        self.bytes -= len;
        (offset, len)
    }

    /// Moves the live extent at `from` into free space ending at or below
    /// `below`, if there is some.
    fn relocate(&mut self, space: &mut Space, from: u64, below: u64) -> Option<u64> {
        let (len, at) = self.by_offset[&from];
        let to = space.allocate_below(len, below)?;
        self.by_offset.remove(&from);
        self.by_offset.insert(to, (len, at));
        self.offsets[at] = to;
        space.release(from, len);
        Some(len)
    }
}

/// Small extents packed into chunks taken from the main space.
struct Chunks {
    small: u64,
    chunk: u64,
    /// Free space inside chunks (its cursor unused).
    free: Space,
    /// Live bytes per chunk, by the chunk's offset.
    live: BTreeMap<u64, u64>,
}

impl Chunks {
    fn allocate(&mut self, space: &mut Space, len: u64) -> u64 {
        if len > self.small {
            return space.allocate(len);
        }
        let offset = match self.free.by_len.range((len, 0)..).next() {
            Some(&(_, start)) => self.free.carve(start, len),
            None => {
                let chunk = space.allocate(self.chunk);
                self.live.insert(chunk, 0);
                self.free.insert(chunk + len, self.chunk - len);
                chunk
            }
        };
        *self.chunk_of(offset).1 += len;
        offset
    }

    fn chunk_of(&mut self, offset: u64) -> (u64, &mut u64) {
        let (&chunk, live) = self
            .live
            .range_mut(..=offset)
            .next_back()
            .expect("in a chunk");
        (chunk, live)
    }

    fn release(&mut self, space: &mut Space, offset: u64, len: u64) {
        if len > self.small {
            return space.release(offset, len);
        }
        let chunk_len = self.chunk;
        let (chunk, live) = self.chunk_of(offset);
        *live -= len;
        let empty = *live == 0;
        // Coalesce inside the chunk only.
        let (mut start, mut len) = (offset, len);
        if let Some((&before, &before_len)) = self.free.by_start.range(..start).next_back()
            && before >= chunk
            && before + before_len == start
        {
            self.free.remove(before);
            start = before;
            len += before_len;
        }
        if start + len < chunk + chunk_len && self.free.by_start.contains_key(&(start + len)) {
            len += self.free.remove(start + len);
        }
        if empty {
            self.live.remove(&chunk);
            space.release(chunk, chunk_len);
        } else {
            self.free.insert(start, len);
        }
    }
}

enum Strategy {
    None,
    Evacuate { from: f64, to: f64, merge: bool },
    Segregate(Chunks),
}

/// A pass under way: its limit, the credit its moves may spend, and the
/// offset below which the next extent to move lies.
struct Pass {
    limit: u64,
    credit: u64,
    below: u64,
}

#[derive(Default)]
struct Tally {
    moves: u64,
    moved: u64,
    merges: u64,
    merged: u64,
}

fn extent_len(payload: usize) -> u64 {
    (payload as u64 + HEADER).next_multiple_of(GRANULE)
}

/// At the start of a pass: moves each live extent below `limit` that sits
/// after a free extent and is at most `1 / MERGE_RATIO` as long as the free
/// space on both sides, up to `excess` bytes.
fn merge(space: &mut Space, live: &mut Live, limit: u64, mut excess: u64, tally: &mut Tally) {
    let gaps: Vec<(u64, u64)> = space
        .by_start
        .range(..limit)
        .map(|(&start, &len)| (start, len))
        .collect();
    for (start, len) in gaps {
        if space.by_start.get(&start) != Some(&len) {
            continue; // changed by an earlier merge
        }
        let offset = start + len;
        let Some(&(extent, _)) = live.by_offset.get(&offset) else {
            continue;
        };
        let after = space.by_start.get(&(offset + extent)).copied().unwrap_or(0);
        if MERGE_RATIO * extent > len + after || extent > excess {
            continue;
        }
        if let Some(moved) = live.relocate(space, offset, limit) {
            excess -= moved;
            tally.merges += 1;
            tally.merged += moved;
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |at: usize| args.get(at).map(String::as_str);
    let number = |at: usize| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(arg(at).ok_or("missing argument")?.parse()?)
    };
    let (mut strategy, seed_at) = match arg(0).unwrap_or("none") {
        "none" => (Strategy::None, 1),
        kind @ ("evacuate" | "merge") => (
            Strategy::Evacuate {
                from: number(1)?,
                to: number(2)?,
                merge: kind == "merge",
            },
            3,
        ),
        "segregate" => (
            Strategy::Segregate(Chunks {
                small: number(1)? as u64,
                chunk: number(2)? as u64,
                free: Space::default(),
                live: BTreeMap::new(),
            }),
            3,
        ),
        other => return Err(format!("unknown strategy {other:?}").into()),
    };
    let seed = arg(seed_at).map_or(Ok(17), str::parse)?;
    let mut rng = Rng(seed);
    let mut space = Space::default();
    let mut live = Live::default();
    let allocate = |strategy: &mut Strategy, space: &mut Space, len: u64| match strategy {
        Strategy::Segregate(chunks) => chunks.allocate(space, len),
        _ => space.allocate(len),
    };
    while live.bytes < LIVE {
        let len = extent_len(rng.size());
        let offset = allocate(&mut strategy, &mut space, len);
        live.add(offset, len);
    }
    let (mut sum, mut samples, mut largest) = (0.0, 0.0, 0.0f64);
    let mut tally = Tally::default();
    let mut pass: Option<Pass> = None;
    for pair in 0..WARM_UP + PAIRS {
        if pair == WARM_UP {
            tally = Tally::default();
        }
        let (offset, freed) = live.take(rng.below(live.offsets.len()));
        match &mut strategy {
            Strategy::Segregate(chunks) => chunks.release(&mut space, offset, freed),
            _ => space.release(offset, freed),
        }
        let len = extent_len(rng.size());
        let offset = allocate(&mut strategy, &mut space, len);
        live.add(offset, len);
        if let Strategy::Evacuate {
            from,
            to,
            merge: merging,
        } = strategy
        {
            if pass.is_none() && space.cursor as f64 > (1.0 + from) * live.bytes as f64 {
                let limit = ((1.0 + to) * live.bytes as f64) as u64;
                if merging {
                    let excess = space.cursor - limit;
                    merge(&mut space, &mut live, limit, excess, &mut tally);
                }
                pass = Some(Pass {
                    limit,
                    credit: 0,
                    below: u64::MAX,
                });
            }
            if let Some(current) = &mut pass {
                current.credit += freed + len;
                loop {
                    let highest = live.by_offset.range(..current.below).next_back();
                    let Some((&at, &(extent, _))) = highest else {
                        pass = None;
                        break;
                    };
                    if space.cursor <= current.limit || at + extent <= current.limit {
                        pass = None;
                        break;
                    }
                    if extent > current.credit {
                        break; // wait for the operations to come
                    }
                    match live.relocate(&mut space, at, current.limit.min(at)) {
                        Some(moved) => {
                            current.credit -= moved;
                            tally.moves += 1;
                            tally.moved += moved;
                        }
                        None => {
                            pass = None; // no room below: the end stays
                            break;
                        }
                    }
                }
            }
        }
        if pair >= WARM_UP && pair % 1000 == 0 {
            let ratio = space.cursor as f64 / live.bytes as f64;
            sum += ratio;
            samples += 1.0;
            largest = largest.max(ratio);
        }
    }
    let per_pair = |count: u64| count as f64 / PAIRS as f64;
    println!(
        "used/live mean {:.3} largest {:.3}; per pair: {:.3} evacuations ({:.0} B), {:.3} merges ({:.0} B)",
        sum / samples,
        largest,
        per_pair(tally.moves),
        per_pair(tally.moved),
        per_pair(tally.merges),
        per_pair(tally.merged),
    );
    Ok(())
}
