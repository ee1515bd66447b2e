//! `overflow-region verify`: check every header and checksum of region files.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use overflow_region::{ExtentKind, RegionFile};

use crate::{FilesArg, Outcome, open, plural};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    files: FilesArg,
}

pub(crate) const EXIT_STATUS: &str = "\
Exit status:
  0  every file is intact
  1  damage found in a file (and every file could be checked)
  2  a bad command line
  3  a file could not be checked: it cannot be opened or read (no such file,
     no permission, a directory, ...), is not a region file, or is of
     another format version
With several files the status is the highest that applies.";

/// Exit status: damage found.
const DAMAGED: u8 = 1;
/// Exit status: a file could not be checked.
const UNCHECKED: u8 = 3;

pub(crate) fn run(args: &Args) -> Outcome {
    let mut status = 0;
    // Stdout closed by its reader (`| head`): the files are still checked,
    // and the exit status and stderr still say what was found.
    let mut stdout_open = true;
    for path in args.files.expand() {
        let path = match path {
            Ok(path) => path,
            Err(message) => {
                eprintln!("overflow-region: {message}");
                status = status.max(UNCHECKED);
                continue;
            }
        };
        let path = &path;
        match open(path) {
            Ok(file) => {
                if stdout_open {
                    match report(&file) {
                        Ok(()) => {}
                        Err(crate::Failure::BrokenPipe) => stdout_open = false,
                        Err(failure) => return Err(failure),
                    }
                }
                if !file.is_intact() {
                    let damaged = damaged(&file).len();
                    eprintln!(
                        "overflow-region: {}: damaged: {damaged} extent{}",
                        file.path().display(),
                        plural(damaged as u64)
                    );
                    status = status.max(DAMAGED);
                }
            }
            Err(message) => {
                eprintln!("overflow-region: {message}");
                status = status.max(UNCHECKED);
            }
        }
    }
    Ok(ExitCode::from(status))
}

/// The extents the check dropped: offset, length, slot, why.
fn damaged(file: &RegionFile) -> Vec<(u64, u64, Option<usize>, String)> {
    file.extents()
        .filter_map(|extent| match extent.kind {
            ExtentKind::Dropped { slot, reason } => Some((extent.offset, extent.len, slot, reason)),
            _ => None,
        })
        .collect()
}

/// Prints what the check of `file` found on stdout.
fn report(file: &RegionFile) -> Result<(), crate::Failure> {
    let stats = file.stats();
    let mut out = BufWriter::new(io::stdout().lock());
    let unsummed = file.recovery().payloads_unsummed;
    if file.is_intact() {
        write!(
            out,
            "{}: ok: {} slot{}, {} bytes",
            file.path().display(),
            stats.live_slots,
            plural(stats.live_slots),
            stats.live_bytes
        )?;
        if unsummed > 0 {
            // Kept because the file was written on this boot; not checkable.
            writeln!(
                out,
                " ({unsummed} slot{} written since the last sync, with no checksum yet, not verified)",
                plural(unsummed as u64)
            )?;
        } else {
            writeln!(out, " verified")?;
        }
        out.flush()?;
        return Ok(());
    }
    let damaged = damaged(file);
    let bytes: u64 = damaged.iter().map(|d| d.1).sum();
    let path = file.path().display();
    writeln!(
        out,
        "{path}: {} damaged extent{}, {bytes} bytes (a writer's open after a reboot would \
         drop them; on the boot that wrote the file it checks headers only):",
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
    Ok(())
}
