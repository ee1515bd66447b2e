//! `overflow-region bench`: the standard workloads, as `cargo bench` runs
//! them, on region files in a fresh temporary directory; a progress bar on
//! a terminal, then a table (or JSON) of ops, ops/s, MB/s, and the region's
//! used bytes, live bytes and file size after the run. The directory is
//! removed at the end.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use overflow_region::MemoryTuning;
use overflow_region::workload::{Measured, Spec, Timed};
use serde::Serialize;

use crate::{Failure, Outcome};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Directory for the region files (a unique subdirectory is made in it
    /// and removed at the end) [default: the system temp directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Run this many measured ops of every workload instead of each one's default
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    ops: Option<u64>,
    /// Run only the workloads whose name contains TEXT (e.g. `reuse`, `64B`)
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// A few seconds instead of about a minute: smaller set-ups (read over
    /// 64 Ki slots, reuse with up to 50 k free extents, churn around 4 MiB)
    /// and a twentieth of the default ops
    #[arg(long)]
    quick: bool,
    /// Print the results as one JSON object instead of a table
    #[arg(long)]
    json: bool,
    /// Punch free extents of this many bytes or more out of the file (0:
    /// never); larger values give back less space and make fresh writes
    /// faster (`MemoryTuning::overflow_punch_hole_bytes`)
    #[arg(long, value_name = "BYTES", default_value_t = MemoryTuning::DEFAULT_PUNCH_HOLE_BYTES)]
    punch_threshold: usize,
    /// Open the regions with automatic compaction off
    /// (`MemoryTuning::overflow_auto_compact = false`)
    #[arg(long)]
    no_auto_compact: bool,
    /// Time every write and free of the churn workloads on its own and
    /// print their latency percentiles (two more clock reads per op)
    #[arg(long)]
    latency: bool,
}

pub(crate) const EXIT_STATUS: &str = "\
Workloads (the part after the slash means one thing per group):
  fresh_write/SIZE  one write of SIZE bytes at the end of a fresh region
  read/SIZE         one read of a random SIZE-byte slot (first byte touched)
  reuse/N           one write served from free space while N free extents
                    of 16 B..4 KiB exist (the frees are not timed)
  churn/SIZE        one free plus one write of 16 B..64 KiB around SIZE
                    bytes of live payload

Exit status:
  0  every workload ran
  1  a workload failed, or the directory cannot be used (message on stderr)
  2  a bad command line";

/// One row of the table.
#[derive(Serialize)]
struct Row {
    name: String,
    group: &'static str,
    id: String,
    ops: u64,
    bytes: u64,
    seconds: f64,
    ops_per_sec: f64,
    bytes_per_sec: f64,
    used_bytes: usize,
    live_bytes: usize,
    file_size: usize,
    tail_writes: u64,
    /// With `--latency`, for churn: each write's and each free's latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency: Option<Latency>,
}

/// Latency percentiles of one workload's writes and frees.
#[derive(Serialize)]
struct Latency {
    write: Percentiles,
    free: Percentiles,
}

/// Percentiles of one kind of op, in nanoseconds.
#[derive(Serialize)]
struct Percentiles {
    count: u64,
    p50_ns: u64,
    p99_ns: u64,
    p99_9_ns: u64,
    p99_99_ns: u64,
    max_ns: u64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: histogram.len(),
            p50_ns: histogram.value_at_quantile(0.5),
            p99_ns: histogram.value_at_quantile(0.99),
            p99_9_ns: histogram.value_at_quantile(0.999),
            p99_99_ns: histogram.value_at_quantile(0.9999),
            max_ns: histogram.max(),
        }
    }
}

/// `bench --json`.
#[derive(Serialize)]
struct Json<'a> {
    quick: bool,
    punch_threshold: usize,
    auto_compact: bool,
    total_seconds: f64,
    dir: String,
    workloads: &'a [Row],
}

/// The workloads of `bench --quick`: the standard ones with smaller set-ups.
const QUICK: [Spec; 7] = [
    Spec::FreshWrite { size: 64 },
    Spec::FreshWrite { size: 4 << 10 },
    Spec::FreshWrite { size: 1 << 20 },
    Spec::Read {
        size: 64,
        slots: 1 << 16,
    },
    Spec::Reuse { freed: 1_000 },
    Spec::Reuse { freed: 50_000 },
    Spec::Churn {
        live_bytes: 4 << 20,
    },
];

/// `bench --quick` runs this fraction of each workload's default ops.
const QUICK_DIVISOR: u64 = 20;

pub(crate) fn run(args: &Args) -> Outcome {
    let all: &[Spec] = if args.quick { &QUICK } else { &Spec::STANDARD };
    let specs: Vec<Spec> = all
        .iter()
        .copied()
        .filter(|spec| {
            args.only
                .as_deref()
                .is_none_or(|only| spec.to_string().contains(only))
        })
        .collect();
    if specs.is_empty() {
        return Err(Failure::from(format!(
            "no workload matches --only {:?}; the workloads are: {}",
            args.only.as_deref().unwrap_or_default(),
            all.iter()
                .map(|spec| spec.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let ops = |spec: &Spec| {
        args.ops.unwrap_or_else(|| {
            if args.quick {
                (spec.default_ops() / QUICK_DIVISOR).max(10)
            } else {
                spec.default_ops()
            }
        })
    };
    let dir = ScratchDir::new(args.dir.as_deref().unwrap_or(&std::env::temp_dir()))?;

    // One bar per workload: its set-up, then its measured ops.
    let progress = ProgressBar::new(100);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:<32} [{bar:30}] {percent:>3}% {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let count = specs.len();
    let result = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let step = format!("{}/{count} {spec}", i + 1);
            run_one(spec, ops(&spec), dir.path(), args, &progress, &step)
        })
        .collect::<Result<Vec<Row>, String>>();
    progress.finish_and_clear();
    drop(dir);
    let rows = result?;
    let total = started.elapsed();
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);

    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        let json = Json {
            quick: args.quick,
            punch_threshold: args.punch_threshold,
            auto_compact: !args.no_auto_compact,
            total_seconds: total.as_secs_f64(),
            dir: dir.display().to_string(),
            workloads: &rows,
        };
        serde_json::to_writer(&mut out, &json)
            .map_err(|error| Failure::from(io::Error::from(error)))?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &rows)?;
        writeln!(
            out,
            "total {:.1} s, set-up included; region files were in {}; hole punching from {} bytes; \
             automatic compaction {}",
            total.as_secs_f64(),
            dir.display(),
            args.punch_threshold,
            if args.no_auto_compact { "off" } else { "on" }
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Flushes all dirty data of every file system to disk (`sync(2)`) and waits
/// for it, so the write-back (and, on a file system mounted with `discard`,
/// the discards) left by one workload are not billed to the next one.
fn settle() {
    rustix::fs::sync();
}

/// Sets up one workload (the bar shows the set-up's own progress), runs
/// `total` measured ops in 100 chunks (the bar starts again for them), and
/// returns its row.
fn run_one(
    spec: Spec,
    total: u64,
    dir: &Path,
    args: &Args,
    progress: &ProgressBar,
    step: &str,
) -> Result<Row, String> {
    progress.set_message(format!("{step}: sync"));
    progress.set_length(100);
    progress.set_position(0);
    settle();
    progress.set_message(format!("{step}: set-up"));
    let mut workload = spec
        .setup_with_policy(
            dir,
            args.punch_threshold,
            !args.no_auto_compact,
            &mut |done| progress.set_position((done * 100.0) as u64),
        )
        .map_err(|error| format!("{spec}: set-up: {error}"))?;
    progress.set_message(format!("{step}: run"));
    progress.set_length(total);
    progress.set_position(0);
    let chunk = (total / 100).max(1);
    let mut measured = Measured::default();
    // Up to an hour in nanoseconds, three significant digits.
    let histogram =
        || Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
    let (mut writes, mut frees) = (histogram(), histogram());
    let timed = args.latency && matches!(spec, Spec::Churn { .. });
    while measured.ops < total {
        let step = chunk.min(total - measured.ops);
        let done = if timed {
            workload.run_timing_each(step, &mut |op, took| {
                let histogram = match op {
                    Timed::Write => &mut writes,
                    Timed::Free => &mut frees,
                };
                histogram.saturating_record(took.as_nanos() as u64);
            })
        } else {
            workload.run(step)
        };
        measured += done.map_err(|error| format!("{spec}: {error}"))?;
        progress.inc(step);
    }
    let region = workload.region();
    Ok(Row {
        name: spec.to_string(),
        group: spec.group(),
        id: spec.id(),
        ops: measured.ops,
        bytes: measured.bytes,
        seconds: measured.elapsed.as_secs_f64(),
        ops_per_sec: measured.ops_per_sec(),
        bytes_per_sec: measured.bytes_per_sec(),
        used_bytes: region.used_bytes(),
        live_bytes: region.live_bytes(),
        file_size: region.capacity(),
        tail_writes: workload.tail_writes(),
        latency: timed.then(|| Latency {
            write: Percentiles::of(&writes),
            free: Percentiles::of(&frees),
        }),
    })
}

fn print_table(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    writeln!(
        out,
        "{:<18} {:>10} {:>12} {:>10} {:>12} {:>12} {:>9} {:>12}",
        "workload", "ops", "ops/s", "MB/s", "used_bytes", "live_bytes", "used/live", "file size"
    )?;
    for row in rows {
        let ratio = if row.live_bytes == 0 {
            "-".to_owned()
        } else {
            format!("{:.3}", row.used_bytes as f64 / row.live_bytes as f64)
        };
        writeln!(
            out,
            "{:<18} {:>10} {:>12} {:>10.1} {:>12} {:>12} {:>9} {:>12}",
            row.name,
            row.ops,
            si(row.ops_per_sec),
            row.bytes_per_sec / 1e6,
            mib(row.used_bytes),
            mib(row.live_bytes),
            ratio,
            mib(row.file_size),
        )?;
    }
    writeln!(
        out,
        "\nworkloads: fresh_write/SIZE = one write of SIZE bytes; read/SIZE = one read of a \
         SIZE-byte slot\n(first byte touched); reuse/N = one write from free space while N \
         free extents exist (frees\nuntimed); churn/SIZE = one free + one write around SIZE \
         of live payload. MB = 10^6 bytes of\npayload. Sizes in MiB. used/live: file bytes in \
         use per live payload byte. Region state is\nafter the run."
    )?;
    let timed: Vec<(&Row, &Latency)> = rows
        .iter()
        .filter_map(|row| row.latency.as_ref().map(|latency| (row, latency)))
        .collect();
    if !timed.is_empty() {
        writeln!(
            out,
            "\n{:<18} {:<6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (us)", "op", "count", "p50", "p99", "p99.9", "p99.99", "max"
        )?;
        for (row, latency) in timed {
            for (op, percentiles) in [("write", &latency.write), ("free", &latency.free)] {
                let us = |ns: u64| format!("{:.2}", ns as f64 / 1e3);
                writeln!(
                    out,
                    "{:<18} {:<6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    row.name,
                    op,
                    percentiles.count,
                    us(percentiles.p50_ns),
                    us(percentiles.p99_ns),
                    us(percentiles.p99_9_ns),
                    us(percentiles.p99_99_ns),
                    us(percentiles.max_ns),
                )?;
            }
        }
    }
    for row in rows.iter().filter(|row| row.tail_writes > 0) {
        writeln!(
            out,
            "note: {}: {} of {} writes grew the region instead of reusing free space",
            row.name, row.tail_writes, row.ops
        )?;
    }
    Ok(())
}

/// `12.35 M`, `640.0 k`: a rate with a decimal unit.
fn si(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2} G", v / 1e9),
        v if v >= 1e6 => format!("{:.2} M", v / 1e6),
        v if v >= 1e3 => format!("{:.1} k", v / 1e3),
        v => format!("{v:.1}"),
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// A uniquely named directory, removed with everything in it when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(parent: &Path) -> Result<ScratchDir, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let path = parent.join(format!(
            "overflow-region-bench-{}-{nanos:09}",
            std::process::id()
        ));
        std::fs::create_dir(&path)
            .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            eprintln!(
                "overflow-region: warning: cannot remove {}: {error}",
                self.0.display()
            );
        }
    }
}
