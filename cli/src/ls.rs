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
    /// Only the slots of this engine (query, vector, ...)
    #[arg(long, value_name = "ENGINE")]
    engine: Option<overflow_region::EngineId>,
    /// Only the slots with this tag (decimal, or hexadecimal with 0x)
    #[arg(long, value_name = "TAG", value_parser = parse_tag)]
    tag: Option<u64>,
}

/// A tag in decimal or, with `0x`, hexadecimal.
fn parse_tag(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|error| format!("{text:?} is not a tag (a u64): {error}"))
}

pub(crate) fn run(args: &Args) -> Outcome {
    let file = open(&args.file.file)?;
    let wanted = |slot: &&overflow_region::SlotInfo| {
        args.engine.is_none_or(|engine| slot.engine == engine)
            && args.tag.is_none_or(|tag| slot.tag == tag)
    };
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json.json {
        // One slot a line, so that a large listing can be read line by line.
        write!(out, "[")?;
        for (i, slot) in file.slots().iter().filter(wanted).enumerate() {
            write!(out, "{}", if i == 0 { "\n" } else { ",\n" })?;
            serde_json::to_writer(&mut out, slot)
                .map_err(|error| Failure::from(io::Error::from(error)))?;
        }
        writeln!(out, "\n]")?;
    } else {
        writeln!(
            out,
            "{:>10} {:<10} {:>20} {:>12} {:>14} {:>12} {:>10}",
            "slot", "engine", "tag", "payload", "offset", "extent", "generation"
        )?;
        for slot in file.slots().iter().filter(wanted) {
            writeln!(
                out,
                "{:>10} {:<10} {:>20} {:>12} {:>14} {:>12} {:>10}",
                slot.slot,
                slot.engine.name(),
                slot.tag,
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
