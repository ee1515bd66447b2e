//! `overflow-region dump`: a slot's bytes on stdout, raw or as a hex dump.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use overflow_region::{Error, RegionFile};

use crate::{FileArg, Outcome, open, plural};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    file: FileArg,
    /// The slot index
    #[arg(value_name = "SLOT")]
    slot: usize,
    /// Print a hex dump (offset, 16 bytes in hex, the same as text, like
    /// `hexdump -C`) instead of the raw bytes
    #[arg(long)]
    hex: bool,
}

pub(crate) fn run(args: &Args) -> Outcome {
    let path = &args.file.file;
    let file = open(path)?;
    let bytes = file
        .read(args.slot)
        .map_err(|error| format!("{}: {}", path.display(), why(&file, args.slot, error)))?;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.hex {
        hex_dump(&mut out, &bytes)?;
    } else {
        out.write_all(&bytes)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Why `slot` cannot be dumped, in words that point at damage when the
/// file has any that could explain it.
fn why(file: &RegionFile, slot: usize, error: Error) -> String {
    let dropped = &file.recovery().dropped;
    if let Some(damage) = dropped.iter().find(|dropped| dropped.slot == Some(slot)) {
        return format!(
            "slot {slot} is damaged (extent at offset {}, {} bytes): see `overflow-region verify`",
            damage.offset, damage.len
        );
    }
    let unattributed = dropped.iter().filter(|d| d.slot.is_none()).count() as u64;
    match error {
        Error::SlotFree { .. } | Error::UnknownSlot { .. } if unattributed > 0 => format!(
            "slot {slot} holds no intact data: it was freed, or it is in one of the \
             {unattributed} damaged extent{} whose header cannot say which slot {} \
             (see `overflow-region verify`)",
            plural(unattributed),
            if unattributed == 1 {
                "it held"
            } else {
                "they held"
            }
        ),
        error => error.to_string(),
    }
}

/// Bytes per line of the hex dump.
const LINE: usize = 16;

/// `bytes` as `hexdump -C` prints them: offset, 16 bytes in hex in two
/// groups of 8, the printable ones as text; a run of identical lines as one
/// `*`; the length last.
fn hex_dump(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let mut previous: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in bytes.chunks(LINE).enumerate() {
        if line.len() == LINE && previous == Some(line) {
            if !starred {
                writeln!(out, "*")?;
                starred = true;
            }
            continue;
        }
        previous = Some(line);
        starred = false;
        let mut text = format!("{:08x}  ", i * LINE);
        for at in 0..LINE {
            match line.get(at) {
                Some(byte) => text.push_str(&format!("{byte:02x} ")),
                None => text.push_str("   "),
            }
            if at == LINE / 2 - 1 {
                text.push(' ');
            }
        }
        let printable: String = line
            .iter()
            .map(|&byte| {
                if byte.is_ascii_graphic() || byte == b' ' {
                    byte as char
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(out, "{text} |{printable}|")?;
    }
    if !bytes.is_empty() {
        writeln!(out, "{:08x}", bytes.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::hex_dump;

    fn dump(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        hex_dump(&mut out, bytes).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn it_prints_as_hexdump_c_does() {
        // Compared with `hexdump -C` (util-linux 2.38.1) on the same bytes.
        assert_eq!(
            dump(b"look at me\n"),
            "00000000  6c 6f 6f 6b 20 61 74 20  6d 65 0a                 |look at me.|\n\
             0000000b\n"
        );
        let mut bytes = vec![0u8; 64];
        bytes.extend_from_slice(b"0123456789abcdefXY");
        assert_eq!(
            dump(&bytes),
            "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             *\n\
             00000040  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|\n\
             00000050  58 59                                             |XY|\n\
             00000052\n"
        );
        assert_eq!(dump(b""), "");
    }
}
