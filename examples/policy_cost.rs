//! What the space policy costs under churn, and what it keeps: two regions
//! side by side, one with the defaults (punching and automatic compaction
//! on) and one with the policy off (`overflow_punch_hole_bytes = 0`,
//! `overflow_auto_compact = false`), both churning the same way (sizes
//! log-uniform from 16 B to 64 KiB around 32 MiB live: one free and one
//! write per pair). They take turns in rounds of 1000 pairs, the order
//! alternating, so a slow spell of the machine hits both alike. Prints each
//! one's pairs per second, the bytes automatic compaction moved, and
//! `used_bytes`/live and allocated blocks (`st_blocks`)/live sampled after
//! every round (mean, largest and last), then the throughput of the policy on
//! divided by off.
//!
//! ```sh
//! cargo run --release --example policy_cost [-- DIR [ROUNDS [SEED [SLACK]]]]
//! ```
//!
//! ROUNDS defaults to 400 (400 k pairs each), SEED to 17, SLACK (the policy
//! on region's `overflow_slack_percent`) to the default, 10.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use overflow_region::{EngineId, MemoryTuning, OverflowRegion};

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

const LIVE: usize = 32 << 20;
const ROUND: usize = 1000;

/// One region and its churn.
struct Churn {
    name: &'static str,
    path: PathBuf,
    region: OverflowRegion,
    live: Vec<usize>,
    rng: Rng,
    busy: Duration,
    used_per_live: Samples,
    blocks_per_live: Samples,
}

#[derive(Default)]
struct Samples {
    sum: f64,
    count: f64,
    largest: f64,
    last: f64,
}

impl Samples {
    fn add(&mut self, value: f64) {
        self.sum += value;
        self.count += 1.0;
        self.largest = self.largest.max(value);
        self.last = value;
    }

    fn mean(&self) -> f64 {
        self.sum / self.count
    }
}

impl Churn {
    fn open(
        name: &'static str,
        path: &Path,
        tuning: &MemoryTuning,
        seed: u64,
        data: &[u8],
    ) -> overflow_region::Result<Churn> {
        let mut region = OverflowRegion::open_with_tuning(path, tuning)?;
        let mut rng = Rng(seed);
        let mut live = Vec::new();
        while region.live_bytes() < LIVE {
            live.push(region.write(&data[..rng.size()], EngineId::Query)?);
        }
        let mut churn = Churn {
            name,
            path: path.to_owned(),
            region,
            live,
            rng,
            busy: Duration::ZERO,
            used_per_live: Samples::default(),
            blocks_per_live: Samples::default(),
        };
        for _ in 0..50 {
            churn.pairs(ROUND, data)?;
        }
        churn.busy = Duration::ZERO;
        Ok(churn)
    }

    fn pairs(&mut self, count: usize, data: &[u8]) -> overflow_region::Result<()> {
        let started = Instant::now();
        for _ in 0..count {
            let victim = self.live.swap_remove(self.rng.below(self.live.len()));
            self.region.free(victim)?;
            let size = self.rng.size();
            self.live
                .push(self.region.write(&data[..size], EngineId::Query)?);
        }
        self.busy += started.elapsed();
        Ok(())
    }

    fn sample(&mut self) -> std::io::Result<()> {
        let live = self.region.live_bytes() as f64;
        self.used_per_live
            .add(self.region.used_bytes() as f64 / live);
        let blocks = std::fs::metadata(&self.path)?.blocks() * 512;
        self.blocks_per_live.add(blocks as f64 / live);
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("policy-cost-{}", std::process::id()));
    let rounds: usize = args.next().map_or(Ok(400), |n| n.parse())?;
    let seed: u64 = args.next().map_or(Ok(17), |n| n.parse())?;
    let slack: u32 = args
        .next()
        .map_or(Ok(MemoryTuning::default().overflow_slack_percent), |n| {
            n.parse()
        })?;
    std::fs::create_dir_all(&dir)?;
    let data = vec![0x5A; 1 << 16];
    let on = MemoryTuning {
        overflow_initial_bytes: 1 << 20,
        overflow_max_bytes: 1 << 30,
        overflow_slack_percent: slack,
        ..MemoryTuning::default()
    };
    // The region with the policy off keeps the default slack whatever
    // SLACK is, so every run is compared with the same baseline.
    let off = MemoryTuning {
        overflow_punch_hole_bytes: 0,
        overflow_auto_compact: false,
        overflow_slack_percent: MemoryTuning::default().overflow_slack_percent,
        ..on.clone()
    };
    let mut churns = [
        Churn::open("policy on ", &dir.join("on"), &on, seed, &data)?,
        Churn::open("policy off", &dir.join("off"), &off, seed, &data)?,
    ];
    let moved_before: Vec<u64> = churns
        .iter()
        .map(|churn| churn.region.stats().auto_moved_bytes)
        .collect();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for at in order {
            churns[at].pairs(ROUND, &data)?;
            churns[at].sample()?;
        }
    }
    let pairs = (rounds * ROUND) as f64;
    for (churn, moved_before) in churns.iter().zip(moved_before) {
        let moved = churn.region.stats().auto_moved_bytes - moved_before;
        println!(
            "{}: {:>6.0} k pairs/s, moved {:>6.1} MiB; used/live mean {:.3} largest {:.3} last {:.3}; allocated/live mean {:.3} largest {:.3} last {:.3}",
            churn.name,
            pairs / churn.busy.as_secs_f64() / 1e3,
            moved as f64 / f64::from(1 << 20),
            churn.used_per_live.mean(),
            churn.used_per_live.largest,
            churn.used_per_live.last,
            churn.blocks_per_live.mean(),
            churn.blocks_per_live.largest,
            churn.blocks_per_live.last,
        );
    }
    println!(
        "throughput, policy on / off: {:.3}",
        churns[1].busy.as_secs_f64() / churns[0].busy.as_secs_f64()
    );
    drop(churns);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
