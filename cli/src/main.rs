//! `overflow-region`: the command-line tool of the `overflow-region` crate.
//!
//! ```text
//! overflow-region stat FILE... [--json]     what each file holds, in figures
//! overflow-region verify FILE...            check every header and checksum
//!                                           (for stat and verify, a directory
//!                                           stands for the files in it)
//! overflow-region ls FILE [--json] [--engine ENGINE] [--tag TAG]
//!                                           one line per live slot
//! overflow-region dump FILE SLOT [--hex]    a slot's bytes on stdout
//! overflow-region map FILE --png OUT [--width W] [--whole-file]
//!                                           a picture of the file's layout
//! overflow-region bench [--dir DIR] [--ops N] [--only TEXT] [--quick] [--json]
//!                       [--punch-threshold BYTES] [--no-auto-compact] [--latency]
//! ```
//!
//! `stat`, `verify`, `ls`, `dump` and `map` read the file with
//! [`RegionFile`]: they take no lock and write nothing, so they work on a file
//! a writer has open (a write caught half done shows as a damaged extent,
//! never as wrong bytes). One module per subcommand.
//!
//! Exit status: 0 on success, 1 on an error (message on stderr), 2 for a bad
//! command line; `verify` exits 1 when it finds damage and 3 when a file
//! cannot be checked. Each subcommand's `--help` says which.

mod bench;
mod dump;
mod ls;
mod map;
mod stat;
mod verify;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use overflow_region::{RegionFile, RegionStats};

/// A per-core, mmap-backed spill file: tools.
#[derive(Parser)]
#[command(name = "overflow-region", version, about, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Exit statuses of the commands that read one file or run benchmarks.
const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  an error: the file cannot be opened or read, is not a region file, or
     (dump) holds no intact slot of that index; the message is on stderr
  2  a bad command line";

#[derive(Subcommand)]
enum Command {
    /// Prints what region files hold: sizes, capacity, slots, free space,
    /// holes, per-engine figures, free extents by size and fragmentation.
    #[command(after_help = stat::EXIT_STATUS)]
    Stat(stat::Args),
    /// Checks every header and checksum of region files, and lists the
    /// damaged extents.
    ///
    /// A file a writer is changing may show a write in progress as damage:
    /// run it again, or on a closed file, to be sure.
    #[command(after_help = verify::EXIT_STATUS)]
    Verify(verify::Args),
    /// Lists the live slots: index, engine, tag, payload length, extent
    /// offset, extent length, generation.
    #[command(after_help = EXIT_STATUS)]
    Ls(ls::Args),
    /// Writes a slot's bytes to stdout: raw, or as a hex dump.
    #[command(after_help = EXIT_STATUS)]
    Dump(dump::Args),
    /// Draws the file's layout as a PNG: extents coloured by engine, free
    /// space, slack, damage and punched holes.
    #[command(after_help = map::EXIT_STATUS)]
    Map(map::Args),
    /// Runs the standard workloads (as `cargo bench`) and prints a table.
    #[command(after_help = bench::EXIT_STATUS)]
    Bench(bench::Args),
}

/// The region file argument shared by the commands that read one file.
#[derive(clap::Args)]
struct FileArg {
    /// The region file (opened read-only, no lock taken)
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// The region files argument of the commands that take several.
#[derive(clap::Args)]
struct FilesArg {
    /// The region files (opened read-only, no lock taken); a directory
    /// (such as a spill directory) stands for the files in it, except
    /// header maps (`*.headers`)
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

impl FilesArg {
    /// The files named, each directory replaced by the files in it (see
    /// [`files_in`]); a directory that cannot be listed, or holds no file,
    /// is an error message in its place.
    fn expand(&self) -> Vec<Result<PathBuf, String>> {
        let mut expanded = Vec::new();
        for path in &self.files {
            if !path.is_dir() {
                expanded.push(Ok(path.clone()));
                continue;
            }
            match files_in(path) {
                Ok(files) if files.is_empty() => expanded.push(Err(format!(
                    "{}: a directory with no region file in it",
                    path.display()
                ))),
                Ok(files) => expanded.extend(files.into_iter().map(Ok)),
                Err(error) => expanded.push(Err(format!(
                    "{}: cannot list the directory: {error}",
                    path.display()
                ))),
            }
        }
        expanded
    }
}

/// The files in `dir` (following symbolic links), not its header maps
/// (`NAME.headers`, and `NAME.headers.new` left by a crash while one was
/// written) nor its subdirectories, in the order of their names with runs
/// of digits compared as numbers (`core-2` before `core-10`).
fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".headers") || name.ends_with(".headers.new") || path.is_dir() {
            continue;
        }
        files.push(path);
    }
    files.sort_by_cached_key(|path| {
        natural_key(&path.file_name().unwrap_or_default().to_string_lossy())
    });
    Ok(files)
}

/// A sort key that orders runs of digits by their value: the name split
/// into text and numbers (a number too long for `u128` stays text).
fn natural_key(name: &str) -> Vec<(String, u128)> {
    let mut key = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (part, tail) = if digits > 0 {
            rest.split_at(digits)
        } else {
            let text = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest.split_at(text)
        };
        match part.parse::<u128>() {
            Ok(number) if digits > 0 => key.push((String::new(), number)),
            _ => key.push((part.to_owned(), 0)),
        }
        rest = tail;
    }
    key
}

/// The `--json` switch.
#[derive(clap::Args)]
struct JsonArg {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

/// Why a command stopped early.
enum Failure {
    /// A message for stderr (without the program name), and the exit status.
    Message(u8, String),
    /// Stdout was closed by its reader (`| head`): stop quietly.
    BrokenPipe,
}

impl From<String> for Failure {
    /// An error: exit status 1.
    fn from(message: String) -> Self {
        Failure::Message(1, message)
    }
}

impl From<io::Error> for Failure {
    /// An error writing to stdout.
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::Message(1, format!("cannot write to stdout: {error}"))
        }
    }
}

type Outcome = Result<ExitCode, Failure>;

fn main() -> ExitCode {
    // Usage errors exit with status 2, --help and --version with 0.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stat(args) => stat::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Ls(args) => ls::run(&args),
        Command::Dump(args) => dump::run(&args),
        Command::Map(args) => map::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message(code, message)) => {
            eprintln!("overflow-region: {message}");
            ExitCode::from(code)
        }
    }
}

/// Opens `path` read-only; the library's errors already name the file.
fn open(path: &Path) -> Result<RegionFile, String> {
    RegionFile::open(path).map_err(|error| error.to_string())
}

/// `warning: FILE: N damaged extents HOW (see ...)` on stderr when the
/// file has damage: `stat`, `ls` and `map` still show the rest.
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

/// Used bytes per live payload byte, `None` with nothing live.
fn fragmentation(stats: &RegionStats) -> Option<f64> {
    (stats.live_bytes > 0).then(|| stats.used_bytes as f64 / stats.live_bytes as f64)
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
