//! `overflow-region ls`: one line per live slot.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use crate::{Failure, FileArg, JsonArg, Outcome, open, warn_if_damaged};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    file: FileArg,
    /// Print a JSON array of slot objects instead of a table
    #[command(flatten)]
    json: JsonArg,
}

pub(crate) fn run(args: &Args) -> Outcome {
    let file = open(&args.file.file)?;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json.json {
        // One slot a line, so that a large listing can be read line by line.
        write!(out, "[")?;
        for (i, slot) in file.slots().iter().enumerate() {
            write!(out, "{}", if i == 0 { "\n" } else { ",\n" })?;
            serde_json::to_writer(&mut out, slot)
                .map_err(|error| Failure::from(io::Error::from(error)))?;
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
