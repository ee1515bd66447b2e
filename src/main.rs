//! `overflow-region`: the command-line tool of the `overflow-region` crate.
//!
//! ```text
//! overflow-region stat FILE [--json]        what the file holds, in figures
//! overflow-region verify FILE               check every header and checksum
//! overflow-region ls FILE [--json]          one line per live slot
//! overflow-region dump FILE SLOT            a slot's bytes, raw, on stdout
//! overflow-region map FILE --png OUT [--width W] [--whole-file]
//!                                           a picture of the file's layout
//! overflow-region bench [--dir DIR] [--ops N] [--only TEXT] [--quick] [--json]
//! ```
//!
//! `stat`, `verify`, `ls`, `dump` and `map` read a snapshot of the file with
//! [`RegionFile`]: they take no lock and write nothing, so they work on a file
//! a writer has open (a write caught half done shows as a damaged extent,
//! never as wrong bytes).
//!
//! `bench` runs the standard workloads of [`overflow_region::workload`] (the
//! same ones `cargo bench` measures) on region files in a fresh temporary
//! directory, shows a progress bar on a terminal, and prints a table: ops,
//! ops/s, MB/s, and the region's used bytes, live bytes and file size after
//! the run. The directory is removed at the end.
//!
//! Exit status: 0 on success, 1 on any error or damage (message on stderr),
//! 2 for a bad command line.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use overflow_region::workload::{self, Measured, Spec};
use overflow_region::{EngineId, Error, ExtentKind, MemoryTuning, RegionFile, RegionStats};
use serde_json::json;

#[path = "cli_map.rs"]
mod map;

/// A per-core, mmap-backed spill file: tools.
#[derive(Parser)]
#[command(name = "overflow-region", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints what a region file holds: sizes, slots, free space, holes,
    /// per-engine figures, free extents by size and fragmentation.
    Stat(StatArgs),
    /// Checks every header and checksum of a region file; exit status 1 and
    /// a list of the damaged extents if any is.
    ///
    /// A file a writer is changing may show a write in progress as damage:
    /// run it again, or on a closed file, to be sure.
    Verify(FileArg),
    /// Lists the live slots: index, engine, payload length, extent offset,
    /// extent length, generation.
    Ls(LsArgs),
    /// Writes a slot's bytes, raw, to stdout.
    Dump(DumpArgs),
    /// Draws the file's layout as a PNG: extents coloured by engine, free
    /// space, slack, damage and punched holes.
    Map(map::MapArgs),
    /// Runs the standard workloads (as `cargo bench`) and prints a table.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct FileArg {
    /// The region file (opened read-only, no lock taken)
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

#[derive(clap::Args)]
struct StatArgs {
    /// The region file (opened read-only, no lock taken)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct LsArgs {
    /// The region file (opened read-only, no lock taken)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print a JSON array of slot objects instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct DumpArgs {
    /// The region file (opened read-only, no lock taken)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The slot index
    #[arg(value_name = "SLOT")]
    slot: usize,
}

#[derive(clap::Args)]
struct BenchArgs {
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
}

/// Why a command stopped early.
enum Failure {
    /// A message for stderr (without the program name); exit status 1.
    Message(String),
    /// Stdout was closed by its reader (`| head`): stop quietly.
    BrokenPipe,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

impl From<io::Error> for Failure {
    /// An error writing to stdout.
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::Message(format!("cannot write to stdout: {error}"))
        }
    }
}

type Outcome = Result<ExitCode, Failure>;

fn main() -> ExitCode {
    // Usage errors exit with status 2, --help and --version with 0.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stat(args) => stat(&args),
        Command::Verify(args) => verify(&args.file),
        Command::Ls(args) => ls(&args),
        Command::Dump(args) => dump(&args),
        Command::Map(args) => map::run(&args).map_err(Failure::from),
        Command::Bench(args) => bench(&args),
    };
    match result {
        Ok(code) => code,
        Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message(message)) => {
            eprintln!("overflow-region: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Opens `path` read-only; the library's errors already name the file.
fn open(path: &Path) -> Result<RegionFile, String> {
    RegionFile::open(path).map_err(|error| error.to_string())
}

/// `warning: FILE: N damaged extents HOW (see ...)` on stderr when the
/// snapshot found damage: `stat`, `ls` and `map` still show the rest.
fn warn_if_damaged(file: &RegionFile, how: &str) {
    let dropped = file.recovery().dropped.len();
    if dropped > 0 {
        eprintln!(
            "overflow-region: warning: {}: {dropped} damaged extent{} {how} (see `overflow-region verify`)",
            file.path().display(),
            plural(dropped as u64)
        );
    }
}

// ---------------------------------------------------------------- stat

/// Free extents whose length is in `[min, 2 * min)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeClass {
    min: u64,
    extents: u64,
    bytes: u64,
}

/// Free extents by power-of-two size class, smallest first, empty classes
/// left out.
fn free_size_classes(file: &RegionFile) -> Vec<SizeClass> {
    let mut classes = [(0u64, 0u64); 64];
    for extent in file.extents() {
        if extent.kind == ExtentKind::Free && extent.len > 0 {
            let class = &mut classes[extent.len.ilog2() as usize];
            class.0 += 1;
            class.1 += extent.len;
        }
    }
    classes
        .iter()
        .enumerate()
        .filter(|(_, (extents, _))| *extents > 0)
        .map(|(bit, &(extents, bytes))| SizeClass {
            min: 1 << bit,
            extents,
            bytes,
        })
        .collect()
}

/// Used bytes per live payload byte, `None` with nothing live.
fn fragmentation(stats: &RegionStats) -> Option<f64> {
    (stats.live_bytes > 0).then(|| stats.used_bytes as f64 / stats.live_bytes as f64)
}

fn stat(args: &StatArgs) -> Outcome {
    let file = open(&args.file)?;
    let stats = file.stats();
    let classes = free_size_classes(&file);
    let dropped = &file.recovery().dropped;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        let engines: serde_json::Map<String, serde_json::Value> = EngineId::ALL
            .iter()
            .map(|&engine| {
                let figures = stats.engine(engine);
                (
                    engine.name().to_owned(),
                    json!({"live_slots": figures.live_slots, "live_bytes": figures.live_bytes}),
                )
            })
            .collect();
        let classes: Vec<serde_json::Value> = classes
            .iter()
            .map(|class| {
                json!({
                    "min_len": class.min,
                    "max_len": 2 * class.min - 1,
                    "extents": class.extents,
                    "bytes": class.bytes,
                })
            })
            .collect();
        let value = json!({
            "path": file.path().display().to_string(),
            "file_size": stats.file_size,
            "used_bytes": stats.used_bytes,
            "live_slots": stats.live_slots,
            "live_bytes": stats.live_bytes,
            "slot_count": stats.slot_count,
            "header_bytes": stats.header_bytes,
            "slack_bytes": stats.slack_bytes,
            "free_extents": stats.free_extents,
            "free_bytes": stats.free_bytes,
            "largest_free_extent": stats.largest_free_extent,
            "punched_bytes": stats.punched_bytes,
            "fragmentation": fragmentation(stats),
            "engines": engines,
            "free_size_classes": classes,
            "intact": file.is_intact(),
            "damaged_extents": dropped.len(),
            "damaged_bytes": dropped.iter().map(|d| d.len).sum::<u64>(),
        });
        writeln!(out, "{value}")?;
    } else {
        out.write_all(stat_table(&file, &classes).as_bytes())?;
    }
    out.flush()?;
    warn_if_damaged(&file, "counted as free space");
    Ok(ExitCode::SUCCESS)
}

fn stat_table(file: &RegionFile, classes: &[SizeClass]) -> String {
    let stats = file.stats();
    let mut s = String::new();
    let dropped = &file.recovery().dropped;
    let state = if dropped.is_empty() {
        "intact".to_owned()
    } else {
        format!(
            "DAMAGED: {} extent{}, {} bytes (see `overflow-region verify`)",
            dropped.len(),
            plural(dropped.len() as u64),
            dropped.iter().map(|d| d.len).sum::<u64>()
        )
    };
    let _ = writeln!(s, "{}: {state}\n", file.path().display());
    let mut row = |name: &str, bytes: u64, note: String| {
        let line = format!("{name:<18} {bytes:>14} {:>11}   {note}", human(bytes));
        let _ = writeln!(s, "{}", line.trim_end());
    };
    row("file size", stats.file_size, String::new());
    row(
        "used",
        stats.used_bytes,
        "data area up to the end of the last extent".into(),
    );
    row(
        "  live payload",
        stats.live_bytes,
        format!(
            "{} live slot{} of {} slot indices",
            stats.live_slots,
            plural(stats.live_slots),
            stats.slot_count
        ),
    );
    row(
        "  extent headers",
        stats.header_bytes,
        "32 bytes per live slot".into(),
    );
    row(
        "  slack",
        stats.slack_bytes,
        "inside live extents: alignment, remainders too small to split".into(),
    );
    row(
        "  free",
        stats.free_bytes,
        format!(
            "{} free extent{}, largest {}",
            stats.free_extents,
            plural(stats.free_extents),
            human(stats.largest_free_extent)
        ),
    );
    row(
        "punched",
        stats.punched_bytes,
        "holes: pages given back to the file system".into(),
    );
    let _ = writeln!(
        s,
        "{:<18} {:>14}   used bytes per live payload byte",
        "fragmentation",
        fragmentation(stats).map_or("-".to_owned(), |f| format!("{f:.3}"))
    );

    let _ = writeln!(
        s,
        "\n{:<12} {:>10} {:>14} {:>11} {:>7}",
        "engine", "slots", "bytes", "", "share"
    );
    for engine in EngineId::ALL {
        let figures = stats.engine(engine);
        let share = if stats.live_bytes == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.1}%",
                100.0 * figures.live_bytes as f64 / stats.live_bytes as f64
            )
        };
        let _ = writeln!(
            s,
            "{:<12} {:>10} {:>14} {:>11} {share:>7}",
            engine.name(),
            figures.live_slots,
            figures.live_bytes,
            human(figures.live_bytes)
        );
    }

    let _ = writeln!(s, "\nfree extents by size");
    if classes.is_empty() {
        let _ = writeln!(s, "  (none)");
    } else {
        let _ = writeln!(s, "{:<23} {:>10} {:>14}", "length", "extents", "bytes");
        for class in classes {
            let range = format!("{} .. {}", human(class.min), human(2 * class.min));
            let _ = writeln!(
                s,
                "{range:<23} {:>10} {:>14} {:>11}",
                class.extents,
                class.bytes,
                human(class.bytes)
            );
        }
    }
    s
}

// ---------------------------------------------------------------- verify

fn verify(path: &Path) -> Outcome {
    let file = open(path)?;
    let stats = file.stats();
    let mut out = BufWriter::new(io::stdout().lock());
    if file.is_intact() {
        writeln!(
            out,
            "ok: {} slot{}, {} bytes verified",
            stats.live_slots,
            plural(stats.live_slots),
            stats.live_bytes
        )?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let damaged: Vec<_> = file
        .extents()
        .iter()
        .filter_map(|extent| match &extent.kind {
            ExtentKind::Dropped { slot, reason } => {
                Some((extent.offset, extent.len, *slot, reason))
            }
            _ => None,
        })
        .collect();
    let bytes: u64 = damaged.iter().map(|d| d.1).sum();
    writeln!(
        out,
        "{}: {} damaged extent{}, {bytes} bytes (a writer's open would drop them):",
        path.display(),
        damaged.len(),
        plural(damaged.len() as u64)
    )?;
    for (offset, len, slot, reason) in &damaged {
        let slot = slot.map_or("slot unknown".to_owned(), |slot| format!("slot {slot}"));
        writeln!(out, "  offset {offset}, {len} bytes, {slot}: {reason}")?;
    }
    writeln!(
        out,
        "intact: {} slot{}, {} bytes",
        stats.live_slots,
        plural(stats.live_slots),
        stats.live_bytes
    )?;
    out.flush()?;
    drop(out);
    Err(Failure::Message(format!(
        "{}: damaged: {} extent{}",
        path.display(),
        damaged.len(),
        plural(damaged.len() as u64)
    )))
}

// ---------------------------------------------------------------- ls

fn ls(args: &LsArgs) -> Outcome {
    let file = open(&args.file)?;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        write!(out, "[")?;
        for (i, slot) in file.slots().iter().enumerate() {
            let value = json!({
                "slot": slot.slot,
                "engine": slot.engine.name(),
                "payload_len": slot.payload_len,
                "offset": slot.offset,
                "extent_len": slot.extent_len,
                "generation": slot.generation,
            });
            write!(out, "{}{value}", if i == 0 { "\n" } else { ",\n" })?;
        }
        writeln!(out, "\n]")?;
    } else {
        writeln!(
            out,
            "{:>10} {:<10} {:>12} {:>14} {:>12} {:>10}",
            "slot", "engine", "payload", "offset", "extent", "generation"
        )?;
        for slot in file.slots() {
            writeln!(
                out,
                "{:>10} {:<10} {:>12} {:>14} {:>12} {:>10}",
                slot.slot,
                slot.engine.name(),
                slot.payload_len,
                slot.offset,
                slot.extent_len,
                slot.generation
            )?;
        }
    }
    out.flush()?;
    warn_if_damaged(&file, "left out");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- dump

fn dump(args: &DumpArgs) -> Outcome {
    let file = open(&args.file)?;
    let bytes = file.read(args.slot).map_err(|error| {
        let damage = file
            .recovery()
            .dropped
            .iter()
            .find(|dropped| dropped.slot == Some(args.slot));
        match (error, damage) {
            (Error::SlotFree { .. }, Some(dropped)) => format!(
                "{}: slot {} is damaged (extent at offset {}, {} bytes): see `overflow-region verify`",
                args.file.display(),
                args.slot,
                dropped.offset,
                dropped.len
            ),
            (error, _) => format!("{}: {error}", args.file.display()),
        }
    })?;
    let mut out = io::stdout().lock();
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- bench

/// One row of the table.
struct Row {
    spec: Spec,
    measured: Measured,
    used_bytes: usize,
    live_bytes: usize,
    file_size: usize,
    tail_writes: u64,
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

fn bench(args: &BenchArgs) -> Outcome {
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
        return Err(Failure::Message(format!(
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

    let progress = ProgressBar::new(specs.iter().map(ops).sum());
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:<24} [{bar:30}] {percent:>3}% {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let result = specs
        .into_iter()
        .map(|spec| {
            run_one(
                spec,
                ops(&spec),
                dir.path(),
                args.punch_threshold,
                &progress,
            )
        })
        .collect::<Result<Vec<Row>, String>>();
    progress.finish_and_clear();
    drop(dir);
    let rows = result?;
    let total = started.elapsed();
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);

    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        let workloads: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                json!({
                    "name": row.spec.to_string(),
                    "group": row.spec.group(),
                    "id": row.spec.id(),
                    "ops": row.measured.ops,
                    "bytes": row.measured.bytes,
                    "seconds": row.measured.elapsed.as_secs_f64(),
                    "ops_per_sec": row.measured.ops_per_sec(),
                    "bytes_per_sec": row.measured.bytes_per_sec(),
                    "used_bytes": row.used_bytes,
                    "live_bytes": row.live_bytes,
                    "file_size": row.file_size,
                    "tail_writes": row.tail_writes,
                })
            })
            .collect();
        let value = json!({
            "quick": args.quick,
            "punch_threshold": args.punch_threshold,
            "total_seconds": total.as_secs_f64(),
            "dir": dir.display().to_string(),
            "workloads": workloads,
        });
        writeln!(out, "{value}")?;
    } else {
        print_table(&mut out, &rows)?;
        writeln!(
            out,
            "total {:.1} s, set-up included; region files were in {}; hole punching from {} bytes",
            total.as_secs_f64(),
            dir.display(),
            args.punch_threshold
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Sets up one workload, runs `total` measured ops in 100 chunks (for the
/// progress bar), and returns its row.
fn run_one(
    spec: Spec,
    total: u64,
    dir: &Path,
    punch_threshold: usize,
    progress: &ProgressBar,
) -> Result<Row, String> {
    progress.set_message(format!("{spec} (sync, set-up)"));
    workload::settle();
    let mut workload = spec
        .setup_with_punch_threshold(dir, punch_threshold)
        .map_err(|error| format!("{spec}: set-up: {error}"))?;
    progress.set_message(spec.to_string());
    let chunk = (total / 100).max(1);
    let mut measured = Measured::default();
    while measured.ops < total {
        let step = chunk.min(total - measured.ops);
        measured += workload
            .run(step)
            .map_err(|error| format!("{spec}: {error}"))?;
        progress.inc(step);
    }
    let region = workload.region();
    Ok(Row {
        spec,
        measured,
        used_bytes: region.used_bytes(),
        live_bytes: region.live_bytes(),
        file_size: region.capacity(),
        tail_writes: workload.tail_writes(),
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
            row.spec.to_string(),
            row.measured.ops,
            si(row.measured.ops_per_sec()),
            row.measured.bytes_per_sec() / 1e6,
            mib(row.used_bytes),
            mib(row.live_bytes),
            ratio,
            mib(row.file_size),
        )?;
    }
    writeln!(
        out,
        "\nops: fresh_write = one write; read = one read (first byte touched); \
         reuse = one write from free space\n(frees untimed); churn = one free + one write. \
         MB = 10^6 bytes of payload. Sizes in MiB.\nused/live: file bytes in use per live \
         payload byte. Region state is after the run."
    )?;
    for row in rows.iter().filter(|row| row.tail_writes > 0) {
        writeln!(
            out,
            "note: {}: {} of {} writes grew the region instead of reusing free space",
            row.spec, row.tail_writes, row.measured.ops
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------- helpers

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

/// `512 B`, `4 KiB`, `1.5 MiB`: a byte count with a binary unit (no
/// decimals when exact).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1 << (10 * (unit + 1)) {
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let scale = 1u64 << (10 * unit);
    if bytes.is_multiple_of(scale) {
        format!("{} {}", bytes / scale, UNITS[unit])
    } else {
        format!("{:.1} {}", bytes as f64 / scale as f64, UNITS[unit])
    }
}

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
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
