//! What a reader's copy costs against the same copy from memory: 4096
//! random 4 KiB slots (16 MiB) read with `OverflowReader::read_into` from a
//! thread other than the owner's, and the same copies out of an in-memory
//! slab of 4096 boxed slots (a `Vec<Box<[u8]>>`), into a `Vec` each time.
//! The two take turns in rounds of 64 Ki copies, so a slow spell of the
//! machine hits both alike (the criterion bench `reader` measures them one
//! after the other, seconds apart). Prints the median time per copy of
//! each and the median of the rounds' ratios, over all rounds and over
//! the rounds each went first in: the two data sets together fill about
//! the last-level cache, so whichever goes second finds its bytes partly
//! evicted by the other, and the ratio depends on the order (on the
//! 2-core EPYC VM, about 1.3 with `read_into` first and 1.8 with the slab
//! first; docs/PERFORMANCE.md).
//!
//! ```sh
//! cargo run --release --example read_cost [-- DIR [ROUNDS]]
//! ```
//!
//! ROUNDS defaults to 30.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use overflow_region::{EngineId, OverflowReader, OverflowRegion};

#[path = "support/rng.rs"]
#[allow(dead_code)] // `size` is for the churn examples
mod rng;
use rng::Rng;

const SLOTS: usize = 4096;
const SLOT_LEN: usize = 4096;
const COPIES_PER_ROUND: usize = 1 << 16;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let rounds: usize = args.next().map_or(Ok(30), |n| n.parse())?;
    let path = dir.join(format!("read-cost-{}", std::process::id()));

    let mut region = OverflowRegion::open_with_config(&path, 1 << 20, 1 << 30)?;
    let mut handles = Vec::with_capacity(SLOTS);
    for i in 0..SLOTS {
        let slot = region.write(&vec![i as u8; SLOT_LEN], EngineId::Query)?;
        handles.push(region.slot_ref(slot)?);
    }
    let slab: Vec<Box<[u8]>> = (0..SLOTS)
        .map(|i| vec![i as u8; SLOT_LEN].into_boxed_slice())
        .collect();
    let mut rng = Rng(1);
    let order: Vec<usize> = (0..COPIES_PER_ROUND).map(|_| rng.below(SLOTS)).collect();

    let reader_thread = std::thread::spawn({
        let path = path.clone();
        move || -> overflow_region::Result<(f64, f64, f64, f64, f64)> {
            let reader = OverflowReader::open(&path)?;
            let mut out = Vec::with_capacity(SLOT_LEN);
            let (mut slab_ns, mut region_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            // The rounds' ratios by which went first: [slab first, read_into first].
            let mut by_order = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                let mut times = [0.0; 2];
                // Which goes first alternates too.
                for turn in [round % 2, 1 - round % 2] {
                    let started = Instant::now();
                    for &k in &order {
                        if turn == 0 {
                            out.clear();
                            out.extend_from_slice(&slab[k]);
                        } else {
                            reader.read_into(&handles[k], &mut out)?;
                        }
                        black_box(&out);
                    }
                    times[turn] = started.elapsed().as_nanos() as f64 / COPIES_PER_ROUND as f64;
                }
                slab_ns.push(times[0]);
                region_ns.push(times[1]);
                ratios.push(times[1] / times[0]);
                by_order[round % 2].push(times[1] / times[0]);
            }
            let [mut slab_first, mut region_first] = by_order;
            Ok((
                median(&mut slab_ns),
                median(&mut region_ns),
                median(&mut ratios),
                median(&mut slab_first),
                median(&mut region_first),
            ))
        }
    });
    let (slab_ns, region_ns, ratio, slab_first, region_first) =
        reader_thread.join().expect("the reader thread")?;
    println!("slab copy {slab_ns:.0} ns, read_into {region_ns:.0} ns (medians of {rounds} rounds)");
    println!(
        "read_into / slab copy: {ratio:.2} (median of the rounds' ratios); {region_first:.2} in the rounds read_into went first, {slab_first:.2} in those the slab went first"
    );
    drop(region);
    std::fs::remove_file(&path)?;
    Ok(())
}
