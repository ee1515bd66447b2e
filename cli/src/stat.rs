//! `overflow-region stat`: what region files hold, in figures.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use overflow_region::{EngineId, ExtentKind, RegionFile, RegionStats};
use serde::Serialize;

use crate::{Failure, FilesArg, JsonArg, Outcome, fragmentation, human, open, plural};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    files: FilesArg,
    /// Print one JSON object per file, one per line, instead of a table
    #[command(flatten)]
    json: JsonArg,
}

pub(crate) const EXIT_STATUS: &str = "\
Exit status:
  0  every file was read (damage is reported, with a warning on stderr)
  1  a file cannot be opened or read, or is not a region file (the others
     are still shown; the message is on stderr)
  2  a bad command line";

/// Free extents whose length is in `[min_len, max_len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct SizeClass {
    min_len: u64,
    max_len: u64,
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
            min_len: 1 << bit,
            max_len: (1 << bit) * 2 - 1,
            extents,
            bytes,
        })
        .collect()
}

/// Bytes the region can still append: its maximum capacity less the end of
/// its last extent.
fn headroom(stats: &RegionStats) -> u64 {
    stats
        .max_capacity
        .saturating_sub(RegionFile::DATA_START + stats.used_bytes)
}

/// `stat --json`: one file.
#[derive(Serialize)]
struct Json<'a> {
    path: String,
    intact: bool,
    #[serde(flatten)]
    stats: &'a RegionStats,
    allocated_bytes: u64,
    headroom_bytes: u64,
    fragmentation: Option<f64>,
    free_size_classes: Vec<SizeClass>,
    damaged_extents: usize,
    damaged_bytes: u64,
}

pub(crate) fn run(args: &Args) -> Outcome {
    let mut status = ExitCode::SUCCESS;
    let mut first = true;
    for path in args.files.expand() {
        let path = match path {
            Ok(path) => path,
            Err(message) => {
                eprintln!("overflow-region: {message}");
                status = ExitCode::FAILURE;
                continue;
            }
        };
        let path = &path;
        let file = match open(path) {
            Ok(file) => file,
            Err(message) => {
                eprintln!("overflow-region: {message}");
                status = ExitCode::FAILURE;
                continue;
            }
        };
        let classes = free_size_classes(&file);
        let mut out = BufWriter::new(io::stdout().lock());
        if args.json.json {
            let dropped = &file.recovery().dropped;
            let json = Json {
                path: file.path().display().to_string(),
                intact: file.is_intact(),
                stats: file.stats(),
                allocated_bytes: file.allocated_bytes(),
                headroom_bytes: headroom(file.stats()),
                fragmentation: fragmentation(file.stats()),
                free_size_classes: classes,
                damaged_extents: dropped.len(),
                damaged_bytes: dropped.iter().map(|d| d.len).sum(),
            };
            serde_json::to_writer(&mut out, &json)
                .map_err(|error| Failure::from(io::Error::from(error)))?;
            writeln!(out)?;
        } else {
            if !first {
                writeln!(out)?;
            }
            out.write_all(table(&file, &classes).as_bytes())?;
        }
        out.flush()?;
        first = false;
        crate::warn_if_damaged(&file, "counted as free space");
    }
    Ok(status)
}

fn table(file: &RegionFile, classes: &[SizeClass]) -> String {
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
    row(
        "max capacity",
        stats.max_capacity,
        "the size the file may grow to, as the file records it".into(),
    );
    row(
        "headroom",
        headroom(stats),
        "max capacity less the end of the last extent".into(),
    );
    row("file size", stats.file_size, String::new());
    row(
        "allocated",
        file.allocated_bytes(),
        "disk blocks the file system gives the file".into(),
    );
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
        format!("{} bytes per live slot", RegionFile::EXTENT_HEADER_LEN),
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
        "holes as the file system reports them: punched pages, and on ext4 \
         also space allocated ahead and never written (see allocated)"
            .into(),
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
            let range = format!("{} .. {}", human(class.min_len), human(class.max_len + 1));
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
