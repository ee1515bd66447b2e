//! DataFusion spilling through `OverflowSpillFactory`, side by side with
//! DataFusion's default disk manager.
//!
//! ```sh
//! cargo run --release -p overflow-region-datafusion --example spill_sort
//! cargo run --release -p overflow-region-datafusion --example spill_sort -- --json
//! ```
//!
//! A table several times larger than the memory pool (64 MiB by default) is
//! generated in memory, then two queries run with each disk manager: an
//! `ORDER BY` over the whole table and a high-cardinality `GROUP BY`. For
//! each run it prints the wall time, the bytes DataFusion's operators
//! spilled (their `spilled_bytes` metrics), the peak disk the spill
//! directory held (allocated blocks, `st_blocks` x 512 of every file under
//! it, sampled every 0.5 ms), the files created, the peak number of file
//! descriptors open on files under the spill directory (`/proc/self/fd`,
//! same sampling) and a checksum of the result, which must be the same
//! for both (and for every run). DataFusion's fair memory pool is used,
//! and at most 8 spill files are merged at once (see `FAN_IN`).
//!
//! Options: `--pool-mib N` (64), `--rows N` (6 000 000), `--runs N` (1: the
//! best and the median time of N runs, the median spilled bytes and peak
//! disk, the largest descriptors), `--piece-kib N` (1024),
//! `--slack PERCENT` (the regions' `overflow_slack_percent`, 0), `--dir DIR`
//! (where the spill directories go; the system's temporary directory),
//! `--reservation-mib N` (DataFusion's `sort_spill_reservation_bytes`, in
//! MiB), `--fan-in N` (8), `--partitions N` (DataFusion's target
//! partitions and the spill directory's cores; the CPUs), `--json`.
//!
//! With `--partitions 1` DataFusion spills the same bytes in every run,
//! with either disk manager, so the peak disk compares the disk managers
//! alone; with more, what it spills varies from run to run.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use overflow_region::{MemoryTuning, SpillDir, SpillMode};
use overflow_region_datafusion::OverflowSpillFactory;

const MIB: u64 = 1 << 20;

/// DataFusion merges at most this many spill files at once (both disk
/// managers). With the default (no cap), or with DataFusion's greedy pool
/// instead of its fair one, the ORDER BY failed here for want of memory
/// with either disk manager: merging every sorted run at once asks the
/// 64 MiB pool for more than it has.
const FAN_IN: usize = 8;

/// How often the sampler reads the spill directory's blocks and the
/// descriptors open on it. A peak lasts as long as DataFusion holds the
/// inputs of a merge and its output at once.
const SAMPLE_EVERY: Duration = Duration::from_micros(500);

/// Runs that fail for want of memory are run again up to this many times.
const MAX_RETRIES: u64 = 10;

const QUERIES: [(&str, &str, bool); 2] = [
    ("order_by", "SELECT id, k, s FROM t ORDER BY k, id", true),
    (
        "group_by",
        "SELECT k % 2000003 AS g, count(*) AS n, sum(id) AS total, min(s) AS first \
         FROM t GROUP BY g",
        false,
    ),
];

#[derive(Debug, Clone)]
struct Options {
    pool_mib: u64,
    rows: u64,
    runs: u32,
    piece_kib: usize,
    slack: u32,
    dir: PathBuf,
    json: bool,
    reservation_mib: Option<usize>,
    fan_in: usize,
    partitions: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: spill_sort [--pool-mib N] [--rows N] [--runs N] [--piece-kib N] \
         [--slack PERCENT] [--dir DIR] [--reservation-mib N] [--fan-in N] [--partitions N] [--json]"
    );
    std::process::exit(2);
}

fn options() -> Options {
    let mut options = Options {
        pool_mib: 64,
        rows: 6_000_000,
        runs: 1,
        piece_kib: 1024,
        slack: 0,
        dir: std::env::temp_dir(),
        json: false,
        reservation_mib: None,
        fan_in: FAN_IN,
        partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let number = |text: String| text.parse::<u64>().unwrap_or_else(|_| usage());
        match arg.as_str() {
            "--pool-mib" => options.pool_mib = number(value()),
            "--rows" => options.rows = number(value()),
            "--runs" => options.runs = number(value()).clamp(1, 100) as u32,
            "--piece-kib" => options.piece_kib = number(value()) as usize,
            "--slack" => options.slack = number(value()).min(100) as u32,
            "--dir" => options.dir = PathBuf::from(value()),
            "--json" => options.json = true,
            "--reservation-mib" => options.reservation_mib = Some(number(value()) as usize),
            "--fan-in" => options.fan_in = number(value()) as usize,
            "--partitions" => options.partitions = number(value()).max(1) as usize,
            _ => usage(),
        }
    }
    if options.pool_mib == 0 || options.rows == 0 {
        usage();
    }
    options
}

/// The table: `id`, a key `k` with few ties, a 40-byte string `s`; in
/// `partitions` partitions of 8192-row batches.
fn table(rows: u64, partitions: usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("s", DataType::Utf8, false),
    ]));
    let mut parts = vec![Vec::new(); partitions];
    let mut start = 0;
    while start < rows {
        let end = (start + 8192).min(rows);
        let ids: Vec<i64> = (start as i64..end as i64).collect();
        let keys: Vec<i64> = ids.iter().map(|id| id * 7919 % 10_000_019).collect();
        let strings: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    "payload-{:07}-xxxxxxxxxxxxxxxxxxxxxxxx",
                    id * 31 % 1_000_003
                )
            })
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Int64Array::from(keys)),
                Arc::new(StringArray::from(strings)),
            ],
        )
        .expect("columns match the schema");
        parts[(start / 8192) as usize % partitions].push(batch);
        start = end;
    }
    MemTable::try_new(schema, parts).expect("batches match the schema")
}

/// What one query run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    secs: f64,
    /// The median time of the runs (set by `summarize`).
    median_secs: f64,
    /// The largest peak disk of the runs (set by `summarize`).
    max_peak_disk_bytes: u64,
    spilled_bytes: u64,
    spills: u64,
    peak_disk_bytes: u64,
    files: u64,
    peak_fds: u64,
    checksum: u64,
    rows: u64,
    lock_waits: u64,
    pieces: u64,
    /// Runs that failed for want of memory before this one succeeded.
    retries: u64,
}

impl Measured {
    /// Several runs of one query in one mode: the best and the median time,
    /// the median spilled bytes, spills and peak disk (what DataFusion
    /// spills varies from run to run, with either disk manager), the
    /// largest peak disk and descriptors, every retry and lock wait.
    fn summarize(runs: &[Measured]) -> Measured {
        let pick = |get: fn(&Measured) -> u64| median(runs.iter().map(|m| get(m) as f64).collect());
        let most = |get: fn(&Measured) -> u64| runs.iter().map(get).max().unwrap_or(0);
        let sum = |get: fn(&Measured) -> u64| runs.iter().map(get).sum();
        Measured {
            secs: runs.iter().map(|m| m.secs).fold(f64::INFINITY, f64::min),
            median_secs: median(runs.iter().map(|m| m.secs).collect()),
            spilled_bytes: pick(|m| m.spilled_bytes) as u64,
            spills: pick(|m| m.spills) as u64,
            peak_disk_bytes: pick(|m| m.peak_disk_bytes) as u64,
            max_peak_disk_bytes: most(|m| m.peak_disk_bytes),
            files: most(|m| m.files),
            peak_fds: most(|m| m.peak_fds),
            checksum: runs.last().map_or(0, |m| m.checksum),
            rows: runs.last().map_or(0, |m| m.rows),
            lock_waits: sum(|m| m.lock_waits),
            pieces: pick(|m| m.pieces) as u64,
            retries: sum(|m| m.retries),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "secs": self.secs,
            "median_secs": self.median_secs,
            "spilled_bytes": self.spilled_bytes,
            "peak_disk_bytes": self.peak_disk_bytes,
            "max_peak_disk_bytes": self.max_peak_disk_bytes,
            "files": self.files,
            "peak_fds": self.peak_fds,
            "retries": self.retries,
        })
    }
}

/// Samples the disk a directory holds and the process's descriptors.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64, HashSet<PathBuf>)>,
}

impl Sampler {
    fn start(dir: PathBuf) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut disk, mut fds, mut files) = (0, 0, HashSet::new());
            loop {
                let done = stopped.load(Ordering::Relaxed);
                disk = disk.max(allocated_under(&dir, &mut files));
                fds = fds.max(open_fds_under(&dir));
                if done {
                    return (disk, fds, files);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Sampler { stop, thread }
    }

    /// Peak allocated bytes, peak descriptors, files seen.
    fn finish(self) -> (u64, u64, HashSet<PathBuf>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler does not panic")
    }
}

/// Allocated bytes of every file under `dir`, noting each file's path.
fn allocated_under(dir: &Path, seen: &mut HashSet<PathBuf>) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.is_dir() {
            total += allocated_under(&entry.path(), seen);
        } else {
            total += metadata.blocks() * 512;
            seen.insert(entry.path());
        }
    }
    total
}

/// Descriptors of this process open on files under `dir`.
fn open_fds_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(dir))
        })
        .count() as u64
}

/// Sums a metric over every operator of a plan.
fn metric(plan: &dyn ExecutionPlan, get: &dyn Fn(&dyn ExecutionPlan) -> usize) -> u64 {
    get(plan) as u64
        + plan
            .children()
            .into_iter()
            .map(|child| metric(child.as_ref(), get))
            .sum::<u64>()
}

/// FNV-1a over `bytes`, from `hash`.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Hashes of the rows of a batch, one per row.
fn row_hashes(batch: &RecordBatch) -> Vec<u64> {
    let mut hashes = vec![0xcbf2_9ce4_8422_2325u64; batch.num_rows()];
    for column in batch.columns() {
        let strings: ArrayRef;
        let column = match column.data_type() {
            DataType::Int64 | DataType::Utf8 => column,
            _ => {
                strings = datafusion::arrow::compute::cast(column, &DataType::Utf8)
                    .expect("every column casts to text");
                &strings
            }
        };
        for (row, hash) in hashes.iter_mut().enumerate() {
            if column.is_null(row) {
                *hash = fnv(*hash, &[0xff]);
            } else if let DataType::Int64 = column.data_type() {
                let value = column.as_primitive::<Int64Type>().value(row);
                *hash = fnv(*hash, &value.to_le_bytes());
            } else {
                *hash = fnv(*hash, column.as_string::<i32>().value(row).as_bytes());
                *hash = fnv(*hash, &[0]);
            }
        }
    }
    hashes
}

/// Runs `sql` on `ctx`, sampling `spill_dir` and the descriptors open on
/// its files; the checksum depends on the order of the rows when
/// `ordered`.
async fn run(ctx: &SessionContext, sql: &str, ordered: bool, spill_dir: &Path) -> Result<Measured> {
    let sampler = Sampler::start(spill_dir.to_owned());
    let started = Instant::now();
    let plan = ctx.sql(sql).await?.create_physical_plan().await?;
    let mut stream = execute_stream(Arc::clone(&plan), ctx.task_ctx())?;
    let (mut checksum, mut rows) = (0u64, 0u64);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        for hash in row_hashes(&batch) {
            checksum = if ordered {
                fnv(checksum, &hash.to_le_bytes())
            } else {
                checksum.wrapping_add(hash)
            };
        }
    }
    drop(stream);
    let secs = started.elapsed().as_secs_f64();
    let (peak_disk_bytes, peak_fds, _) = sampler.finish();
    let spilled = |plan: &dyn ExecutionPlan| {
        plan.metrics()
            .and_then(|metrics| metrics.spilled_bytes())
            .unwrap_or(0)
    };
    let spills = |plan: &dyn ExecutionPlan| {
        plan.metrics()
            .and_then(|metrics| metrics.spill_count())
            .unwrap_or(0)
    };
    Ok(Measured {
        secs,
        spilled_bytes: metric(plan.as_ref(), &spilled),
        spills: metric(plan.as_ref(), &spills),
        peak_disk_bytes,
        peak_fds,
        checksum,
        rows,
        ..Measured::default()
    })
}

fn context(
    options: &Options,
    mode: DiskManagerMode,
    table: &Arc<MemTable>,
) -> Result<SessionContext> {
    let pool = FairSpillPool::new((options.pool_mib * MIB) as usize);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(mode)
                .with_max_spill_merge_fan_in(options.fan_in),
        )
        .build_arc()?;
    let mut config = SessionConfig::new().with_target_partitions(options.partitions);
    if let Some(mib) = options.reservation_mib {
        config = config.with_sort_spill_reservation_bytes(mib << 20);
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_table("t", Arc::clone(table) as _)?;
    Ok(ctx)
}

/// One run of `query` with the default disk manager, in a fresh directory.
async fn run_default(
    options: &Options,
    table: &Arc<MemTable>,
    sql: &str,
    ordered: bool,
) -> Result<Measured> {
    let root = tempfile::tempdir_in(&options.dir)?;
    let ctx = context(
        options,
        DiskManagerMode::Directories(vec![root.path().to_owned()]),
        table,
    )?;
    let mut measured = run(&ctx, sql, ordered, root.path()).await?;
    // Each of DataFusion's spills is a file of its own.
    measured.files = measured.spills;
    Ok(measured)
}

/// One run of `query` with ours: a spill directory of one region per
/// partition, opened for the run (its files and descriptors count as the
/// run's).
async fn run_ours(
    options: &Options,
    table: &Arc<MemTable>,
    sql: &str,
    ordered: bool,
) -> Result<Measured> {
    let root = tempfile::tempdir_in(&options.dir)?;
    let tuning = MemoryTuning {
        overflow_initial_bytes: MIB as usize,
        overflow_max_bytes: 256 << 30,
        overflow_slack_percent: options.slack,
        ..MemoryTuning::default()
    };
    let spill = SpillDir::open(
        root.path(),
        options.partitions,
        &tuning,
        SpillMode::Ephemeral,
        512 << 30,
    )
    .map_err(|error| datafusion::error::DataFusionError::External(Box::new(error)))?;
    let factory = OverflowSpillFactory::with_piece_bytes(Arc::new(spill), options.piece_kib << 10);
    let ctx = context(
        options,
        DiskManagerMode::Custom(Arc::new(factory.clone())),
        table,
    )?;
    let mut measured = run(&ctx, sql, ordered, root.path()).await?;
    measured.files = std::fs::read_dir(root.path())?.count() as u64;
    let stats = factory.stats();
    measured.spills = stats.files_created;
    measured.lock_waits = stats.lock_waits;
    measured.pieces = stats.pieces_written;
    Ok(measured)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Runs `attempt` until it does not fail for want of memory, at most
/// `MAX_RETRIES` more times. DataFusion 55's spilling sort with two
/// partitions sometimes runs out of its pool in the merge, with either
/// disk manager (the fair pool and a capped fan-in make it rarer); such a
/// run is counted, and run again.
async fn retried<F, Fut>(mut attempt: F) -> Result<Measured>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Measured>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Ok(measured) => {
                return Ok(Measured {
                    retries,
                    ..measured
                });
            }
            Err(error)
                if retries < MAX_RETRIES
                    && matches!(
                        error.find_root(),
                        DataFusionError::ResourcesExhausted(message)
                            if message.contains("memory pool")
                    ) =>
            {
                retries += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = options();
    let partitions = options.partitions;
    let table = Arc::new(table(options.rows, partitions));
    let mut report = Vec::new();
    for (name, sql, ordered) in QUERIES {
        let (mut default, mut ours) = (Vec::new(), Vec::new());
        // Every run of either, against the first run with the default.
        let mut expected = None;
        let mut equal = true;
        for run in 0..options.runs {
            // Which disk manager runs first alternates, so neither always
            // runs after the other's work.
            let run_d = || retried(|| run_default(&options, &table, sql, ordered));
            let run_o = || retried(|| run_ours(&options, &table, sql, ordered));
            let (d, o) = if run % 2 == 0 {
                let d = run_d().await?;
                (d, run_o().await?)
            } else {
                let o = run_o().await?;
                (run_d().await?, o)
            };
            let expected = *expected.get_or_insert((d.checksum, d.rows));
            equal &= (d.checksum, d.rows) == expected && (o.checksum, o.rows) == expected;
            default.push(d);
            ours.push(o);
        }
        let (default, ours) = (Measured::summarize(&default), Measured::summarize(&ours));
        report.push((name, equal, default, ours));
    }
    if options.json {
        let queries: Vec<_> = report
            .iter()
            .map(|(name, equal, default, ours)| {
                serde_json::json!({
                    "name": name,
                    "results_equal": equal,
                    "default": default.json(),
                    "ours": ours.json(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "queries": queries }));
        return Ok(());
    }
    println!(
        "{} rows, memory pool {} MiB, {partitions} partition(s) (= spill directory cores), pieces of {} KiB, slack {}%, best and median of {} run(s); \
         spilled bytes, spills and peak disk the medians (largest peak disk after it), \
         descriptors the largest",
        options.rows, options.pool_mib, options.piece_kib, options.slack, options.runs
    );
    println!(
        "{:<9} {:<8} {:>8} {:>8} {:>14} {:>15} {:>15} {:>6} {:>6} {:>9} {:>18} {:>7}",
        "query",
        "spill to",
        "secs",
        "median",
        "spilled bytes",
        "peak disk bytes",
        "largest peak",
        "spills",
        "files",
        "peak fds",
        "checksum",
        "equal"
    );
    for (name, equal, default, ours) in &report {
        for (label, m) in [("default", default), ("ours", ours)] {
            println!(
                "{name:<9} {label:<8} {:>8.2} {:>8.2} {:>14} {:>15} {:>15} {:>6} {:>6} {:>9} {:>18x} {:>7}",
                m.secs,
                m.median_secs,
                m.spilled_bytes,
                m.peak_disk_bytes,
                m.max_peak_disk_bytes,
                m.spills,
                m.files,
                m.peak_fds,
                m.checksum,
                equal
            );
        }
        println!(
            "{name:<9} ours/default: time {:.2}x (median {:.2}x), peak disk {:.2}x (per spilled byte \
             {:.2}x); ours: {} pieces, {} lock waits; runs retried for want of memory: default {}, \
             ours {}",
            ours.secs / default.secs,
            ours.median_secs / default.median_secs,
            ours.peak_disk_bytes as f64 / default.peak_disk_bytes.max(1) as f64,
            (ours.peak_disk_bytes as f64 / ours.spilled_bytes.max(1) as f64)
                / (default.peak_disk_bytes as f64 / default.spilled_bytes.max(1) as f64),
            ours.pieces,
            ours.lock_waits,
            default.retries,
            ours.retries
        );
    }
    Ok(())
}
