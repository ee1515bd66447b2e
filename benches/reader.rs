//! Criterion benchmarks of `OverflowReader`: reads from a thread other than
//! the owner's, and the owner's write+free speed while readers run.
//!
//! ```text
//! cargo bench --bench reader                  # everything, about a minute
//! cargo bench --bench reader -- reader/       # the reads only
//! cargo bench --bench reader -- owner/        # the owner's write+free only
//! ```
//!
//! - `reader/read_into_4KiB/owner_idle`: one reader thread (criterion's)
//!   copies random 4 KiB slots of a prefilled region (4096 slots, 16 MiB)
//!   whose owner, another thread, does nothing. Target: >= 1 M reads/s.
//! - `reader/read_into_4KiB/owner_idle_hot`: the same over only 128 slots
//!   (512 KiB, cache-resident): the reader's own cost, without memory's.
//! - `reader/read_into_4KiB/owner_churning`: the same while the owner
//!   writes and frees other 4 KiB slots as fast as it can.
//! - `reader/with_slot_4KiB/owner_idle`: the same through `with_slot`.
//! - `reader/slab_copy_4KiB`: the baseline of issue "restart and
//!   checksums" (`read_into` within 1.5x of it): the same random 4 KiB
//!   copies into a `Vec`, from an in-memory slab of 4096 boxed slots (a
//!   `Vec<Box<[u8]>>`, 16 MiB) instead of the region.
//! - `owner/write_free_4KiB/readers_N`: the owner (criterion's thread) frees
//!   a 4 KiB slot and writes another into its place, in a ring of 1024,
//!   while N reader threads read the prefilled slots as fast as they can.
//!   Target: the same speed with 0, 1 and 2 readers, within noise (on a
//!   machine with a core per thread).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use overflow_region::{EngineId, OverflowReader, OverflowRegion, SlotRef};

const SLOT_LEN: usize = 4096;
/// Prefilled slots the readers read: 16 MiB of payload.
const PREFILLED: usize = 4096;
/// Slots read by the `_hot` variant: 512 KiB, which stays in the L2 cache,
/// so it measures the reader's own cost rather than memory's.
const HOT: usize = 128;
/// Slots the owner keeps cycling through in the write+free benchmarks.
const RING: usize = 1024;

/// CPU time the calling thread has run, from `/proc/thread-self/schedstat`
/// (no `unsafe`, no extra dependency). Wall time is what criterion reports;
/// CPU time is printed beside it, because on a loaded machine (other jobs,
/// or more busy threads than cores) wall time mostly measures the
/// scheduler, while CPU time per operation still shows interference between
/// the owner and its readers (cache lines, page tables, locks).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(nanos)
}

/// Operations done and CPU time spent on them, summed over samples.
#[derive(Default)]
struct CpuMeter {
    ops: u64,
    cpu: Duration,
}

impl CpuMeter {
    /// Runs `op` `iters` times; returns the wall time, adds the CPU time.
    fn run(&mut self, iters: u64, mut op: impl FnMut()) -> Duration {
        let cpu = thread_cpu();
        let wall = Instant::now();
        for _ in 0..iters {
            op();
        }
        let elapsed = wall.elapsed();
        self.cpu += thread_cpu() - cpu;
        self.ops += iters;
        elapsed
    }

    fn per_op(&self) -> String {
        if self.ops == 0 || self.cpu.is_zero() {
            return "n/a".to_string();
        }
        let nanos = self.cpu.as_nanos() as f64 / self.ops as f64;
        format!(
            "{nanos:.0} ns CPU/op = {:.2} M/s per CPU-second",
            1e3 / nanos
        )
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fixed random order of indices into `0..n`, as long as a power of two.
fn random_order(n: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..1 << 16)
        .map(|_| {
            state = splitmix(state);
            (state % n as u64) as u32
        })
        .collect()
}

fn open(path: &std::path::Path) -> OverflowRegion {
    OverflowRegion::open_with_config(path, 64 << 20, 1 << 30).expect("open the region")
}

/// Writes the slots readers read; returns their handles.
fn prefill(region: &mut OverflowRegion) -> Vec<SlotRef> {
    (0..PREFILLED)
        .map(|i| {
            let slot = region
                .write(&[i as u8; SLOT_LEN], EngineId::Query)
                .expect("prefill");
            region.slot_ref(slot).expect("a live slot")
        })
        .collect()
}

/// An owner on its own thread (a region is not `Send`, so it is created
/// there): prefills, hands the path and handles over, then idles or churns
/// until stopped.
struct OwnerThread {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<CpuMeter>>,
}

impl OwnerThread {
    fn start(path: PathBuf, churn: bool) -> (OwnerThread, Vec<SlotRef>) {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut region = open(&path);
                tx.send(prefill(&mut region)).expect("send the handles");
                let mut ops = 0u64;
                let cpu = thread_cpu();
                if churn {
                    let data = [7u8; SLOT_LEN];
                    let mut ring: Vec<usize> = (0..RING)
                        .map(|_| region.write(&data, EngineId::Wal).expect("write"))
                        .collect();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            let at = i % RING;
                            region.free(ring[at]).expect("free");
                            ring[at] = region.write(&data, EngineId::Wal).expect("write");
                            i += 1;
                        }
                        ops += 64;
                    }
                } else {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                CpuMeter {
                    ops,
                    cpu: thread_cpu() - cpu,
                }
            })
        };
        let handles = rx.recv().expect("the owner's handles");
        (
            OwnerThread {
                stop,
                thread: Some(thread),
            },
            handles,
        )
    }

    /// Stops the owner; returns the write+free pairs it did and their CPU
    /// time.
    fn stop(mut self) -> CpuMeter {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the owner thread")
    }
}

impl Drop for OwnerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut group = c.benchmark_group("reader");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    {
        // The baseline: the same copies from memory the process owns.
        let slab: Vec<Box<[u8]>> = (0..PREFILLED)
            .map(|i| vec![i as u8; SLOT_LEN].into_boxed_slice())
            .collect();
        let order = random_order(PREFILLED, 1);
        let mut next = 0usize;
        let mut buf: Vec<u8> = Vec::with_capacity(SLOT_LEN);
        group.bench_function("slab_copy_4KiB", |b| {
            b.iter(|| {
                let slot = &slab[order[next & 0xFFFF] as usize];
                next += 1;
                buf.clear();
                buf.extend_from_slice(slot);
                black_box(&buf);
            })
        });
    }
    for (name, churn, via_with_slot, hot) in [
        ("read_into_4KiB/owner_idle", false, false, PREFILLED),
        ("read_into_4KiB/owner_idle_hot", false, false, HOT),
        ("read_into_4KiB/owner_churning", true, false, PREFILLED),
        ("with_slot_4KiB/owner_idle", false, true, PREFILLED),
    ] {
        let path = dir.path().join(name.replace('/', "-"));
        // Set up on first use only, so a filtered-out benchmark costs nothing.
        let mut setup: Option<(OwnerThread, Vec<SlotRef>, OverflowReader)> = None;
        let order = random_order(hot, 1);
        let mut next = 0usize;
        let mut buf = Vec::with_capacity(SLOT_LEN);
        let mut meter = CpuMeter::default();
        group.bench_function(name, |b| {
            let (_, handles, reader) = setup.get_or_insert_with(|| {
                let (owner, handles) = OwnerThread::start(path.clone(), churn);
                let reader = OverflowReader::open(&path).expect("open a reader");
                (owner, handles, reader)
            });
            if via_with_slot {
                b.iter_custom(|iters| {
                    meter.run(iters, || {
                        let handle = &handles[order[next & 0xFFFF] as usize];
                        next += 1;
                        reader
                            .with_slot(handle, |bytes| black_box(bytes[bytes.len() - 1]))
                            .expect("a pinned slot reads");
                    })
                });
            } else {
                b.iter_custom(|iters| {
                    meter.run(iters, || {
                        let handle = &handles[order[next & 0xFFFF] as usize];
                        next += 1;
                        reader
                            .read_into(handle, &mut buf)
                            .expect("a pinned slot reads");
                        black_box(&buf);
                    })
                });
            }
        });
        if let Some((owner, _, _)) = setup {
            eprintln!("  reader: {}", meter.per_op());
            let owner = owner.stop();
            if churn {
                eprintln!("  owner meanwhile (write+free): {}", owner.per_op());
            }
        }
    }
    group.finish();
}

fn owner_with_readers(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut group = c.benchmark_group("owner");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    for readers in 0..=2usize {
        let name = format!("write_free_4KiB/readers_{readers}");
        let path = dir.path().join(format!("owner-{readers}"));
        let mut region: Option<(OverflowRegion, Vec<SlotRef>, Vec<usize>)> = None;
        let stop = AtomicBool::new(false);
        let reads_done = AtomicU64::new(0);
        let reading_nanos = AtomicU64::new(0);
        let reading_cpu_nanos = AtomicU64::new(0);
        let mut meter = CpuMeter::default();
        std::thread::scope(|scope| {
            let mut reader_threads = Vec::new();
            let mut ready_txs = Vec::new();
            for r in 0..readers {
                let (tx, rx) = mpsc::channel::<Vec<SlotRef>>();
                ready_txs.push(tx);
                let (stop, reads_done, reading_nanos, reading_cpu_nanos, path) = (
                    &stop,
                    &reads_done,
                    &reading_nanos,
                    &reading_cpu_nanos,
                    &path,
                );
                reader_threads.push(scope.spawn(move || {
                    // Waits for the owner's handles (sent on first use).
                    let Ok(handles) = rx.recv() else { return };
                    let reader = OverflowReader::open(path).expect("open a reader");
                    let order = random_order(handles.len(), 100 + r as u64);
                    let mut buf = Vec::with_capacity(SLOT_LEN);
                    let mut n = 0u64;
                    let started = Instant::now();
                    let cpu = thread_cpu();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            let handle = &handles[order[n as usize & 0xFFFF] as usize];
                            reader
                                .read_into(handle, &mut buf)
                                .expect("a pinned slot reads");
                            black_box(&buf);
                            n += 1;
                        }
                    }
                    reads_done.fetch_add(n, Ordering::Relaxed);
                    reading_cpu_nanos
                        .fetch_add((thread_cpu() - cpu).as_nanos() as u64, Ordering::Relaxed);
                    reading_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }));
            }
            let data = [9u8; SLOT_LEN];
            let mut at = 0usize;
            group.bench_function(&name, |b| {
                let (region, _, ring) = region.get_or_insert_with(|| {
                    let mut region = open(&path);
                    let handles = prefill(&mut region);
                    let ring = (0..RING)
                        .map(|_| region.write(&data, EngineId::Wal).expect("write"))
                        .collect();
                    for tx in &ready_txs {
                        tx.send(handles.clone()).expect("a reader thread");
                    }
                    (region, handles, ring)
                });
                b.iter_custom(|iters| {
                    meter.run(iters, || {
                        let i = at % RING;
                        at += 1;
                        region.free(ring[i]).expect("free");
                        ring[i] = region.write(&data, EngineId::Wal).expect("write");
                    })
                });
            });
            stop.store(true, Ordering::Relaxed);
            drop(ready_txs);
            for thread in reader_threads {
                thread.join().expect("a reader thread");
            }
        });
        eprintln!("  owner (write+free): {}", meter.per_op());
        if readers > 0 {
            let reads = reads_done.load(Ordering::Relaxed) as f64;
            let wall = reading_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let cpu = reading_cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            eprintln!(
                "  {readers} reader thread(s) meanwhile: {:.2} M reads/s per thread (wall), {:.0} ns CPU/read",
                reads / wall / 1e6,
                cpu / reads * 1e9
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // No plots: plotters needs system fonts, which a CI machine may lack
    // (it panicked with `FontUnavailable` here); the numbers are printed.
    config = Criterion::default().without_plots();
    targets = reads, owner_with_readers
}
criterion_main!(benches);
