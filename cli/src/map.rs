//! `overflow-region map`: the layout of a region file as a PNG.
//!
//! The drawn byte range (the data area, or with `--whole-file` the whole
//! file) is cut into cells of a power-of-two number of bytes, laid out left
//! to right in rows like a disk map. A cell takes the colour of what covers
//! most of its bytes (live extents by engine, slack, free space), except
//! that any damaged byte makes it red; a cell at least half in a punched
//! hole is hatched.

use std::path::PathBuf;
use std::process::ExitCode;

use overflow_region::{EngineId, ExtentKind, RegionFile};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{FileArg, Outcome, fragmentation, human, open, plural, warn_if_damaged};

pub(crate) const EXIT_STATUS: &str = "\
Exit status:
  0  the picture was written (damage is drawn, with a warning on stderr)
  1  the file cannot be opened or read, is not a region file, or the
     picture cannot be written (then no picture is left behind)
  2  a bad command line";

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    file: FileArg,
    /// Where to write the picture (PNG)
    #[arg(long, value_name = "OUT")]
    png: PathBuf,
    /// Width of the picture in pixels
    #[arg(long, value_name = "W", default_value_t = 1200,
          value_parser = clap::value_parser!(u32).range(640..=8192))]
    width: u32,
    /// Draw the whole file: the header page and the unused end past the
    /// last extent too, not only the data area
    #[arg(long)]
    whole_file: bool,
}

/// Offset of the first extent.
const DATA_START: u64 = RegionFile::DATA_START;
/// Length of an extent header.
const EXTENT_HEADER_LEN: u64 = RegionFile::EXTENT_HEADER_LEN;
/// Extents start at multiples of this; the smallest cell.
const ALIGN: u64 = RegionFile::EXTENT_ALIGN;
/// Rows are whole pages (of the usual 4 KiB) when they can be.
const PAGE: u64 = 4096;

const FONT: &str = "sans-serif";
const MARGIN: i32 = 16;
/// Room left of the map for the row offsets.
const LABELS: i32 = 84;

/// What a byte of the file is, as drawn. Engines' payloads are `0..7`, their
/// extent headers `7..14`.
const SLACK: usize = 14;
const FREE: usize = 15;
const DAMAGED: usize = 16;
const FILE_HEADER: usize = 17;
const UNUSED: usize = 18;
const KINDS: usize = 19;

fn header_kind(engine: EngineId) -> usize {
    EngineId::ALL.len() + engine.as_u8() as usize
}

/// One colour per engine, in `EngineId::ALL` order.
const ENGINE_COLORS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),  // vector: blue
    RGBColor(255, 127, 14),  // sparse: orange
    RGBColor(44, 160, 44),   // crdt: green
    RGBColor(148, 103, 189), // timeseries: purple
    RGBColor(140, 86, 75),   // query: brown
    RGBColor(23, 190, 207),  // wal: cyan
    RGBColor(227, 119, 194), // bridge: pink
];
const SLACK_COLOR: RGBColor = RGBColor(242, 204, 12);
const FREE_COLOR: RGBColor = RGBColor(222, 222, 222);
const DAMAGED_COLOR: RGBColor = RGBColor(214, 0, 0);
const FILE_HEADER_COLOR: RGBColor = RGBColor(70, 70, 70);
const UNUSED_COLOR: RGBColor = RGBColor(250, 250, 250);
const HATCH_COLOR: RGBColor = RGBColor(90, 90, 90);
const FRAME_COLOR: RGBColor = RGBColor(150, 150, 150);

fn darker(color: RGBColor) -> RGBColor {
    let RGBColor(r, g, b) = color;
    let scale = |c: u8| (u16::from(c) * 11 / 20) as u8;
    RGBColor(scale(r), scale(g), scale(b))
}

fn kind_color(kind: usize) -> RGBColor {
    match kind {
        k if k < 7 => ENGINE_COLORS[k],
        k if k < 14 => darker(ENGINE_COLORS[k - 7]),
        SLACK => SLACK_COLOR,
        FREE => FREE_COLOR,
        DAMAGED => DAMAGED_COLOR,
        FILE_HEADER => FILE_HEADER_COLOR,
        _ => UNUSED_COLOR,
    }
}

/// `[start, end)` of the file is `kind`.
type Segment = (u64, u64, usize);

/// Where the data area starts (the first extent's offset) and the cursor
/// (the end of the last extent).
fn bounds(file: &RegionFile) -> (u64, u64) {
    let size = file.stats().file_size;
    let data_start = file
        .extents()
        .next()
        .map_or(DATA_START, |extent| extent.offset)
        .min(size);
    let cursor = file
        .extents()
        .next_back()
        .map_or(data_start, |extent| extent.offset + extent.len)
        .max(data_start);
    (data_start, cursor)
}

/// The file, byte range by byte range, from 0 to its size, as the extents
/// are reached (a file of millions of extents is never listed whole).
fn segments(
    file: &RegionFile,
    (data_start, cursor): (u64, u64),
) -> impl Iterator<Item = Segment> + '_ {
    let size = file.stats().file_size;
    let mut at = data_start;
    let extents = file.extents().flat_map(move |extent| {
        let (start, end) = (extent.offset, extent.offset + extent.len);
        // Extents tile the data area; a gap would be a bug elsewhere, shown
        // as free space.
        let gap = (start > at).then_some((at, start, FREE));
        at = at.max(end);
        let parts = match extent.kind {
            ExtentKind::Live(slot) => {
                let header_end = (start + EXTENT_HEADER_LEN).min(end);
                let payload_end = (header_end + slot.payload_len).min(end);
                [
                    Some((start, header_end, header_kind(slot.engine))),
                    Some((header_end, payload_end, slot.engine.as_u8() as usize)),
                    Some((payload_end, end, SLACK)),
                ]
            }
            ExtentKind::Free => [Some((start, end, FREE)), None, None],
            ExtentKind::Dropped { .. } => [Some((start, end, DAMAGED)), None, None],
        };
        std::iter::once(gap).chain(parts).flatten()
    });
    std::iter::once((0, data_start, FILE_HEADER))
        .chain(extents)
        .chain(std::iter::once((cursor, size.max(cursor), UNUSED)))
        .filter(|&(start, end, _)| end > start)
}

/// How the drawn range is cut into cells and the cells into rows: rows of
/// cells `cell_width` pixels wide, each row a band `row_pitch` pixels high
/// (the last of which is a white gap, so the rows read apart).
#[derive(Debug, Clone, Copy)]
struct Grid {
    /// First byte drawn.
    start: u64,
    /// One past the last byte drawn.
    end: u64,
    /// Bytes per cell (a power of two, at least 16).
    cell_bytes: u64,
    /// Width of a cell in pixels.
    cell_width: u32,
    /// Height of a row in pixels, gap included.
    row_pitch: u32,
    /// Cells per row.
    columns: u64,
    /// Number of cells.
    cells: u64,
}

/// Rows are at least this high (gap included), so that a row reads as a band.
const MIN_PITCH: u64 = 4;
/// And at most this high.
const MAX_PITCH: u64 = 28;

impl Grid {
    /// The smallest cell (in bytes) that fits the range into rows `width`
    /// pixels wide and at least [`MIN_PITCH`] high within `height`, then the
    /// widest cell (up to 16 pixels) that still fits, then rows as high as
    /// the room allows.
    fn new(start: u64, end: u64, width: u32, height: u32) -> Grid {
        let len = (end - start).max(1);
        let room = u64::from(width) * (u64::from(height) / MIN_PITCH);
        let mut cell_bytes = ALIGN;
        while len.div_ceil(cell_bytes) > room {
            cell_bytes *= 2;
        }
        let cells = len.div_ceil(cell_bytes);
        let rows_for = |px: u32| cells.div_ceil(u64::from(width / px));
        let cell_width = (1..=16u32)
            .rev()
            .find(|&px| rows_for(px) * MIN_PITCH <= u64::from(height))
            .unwrap_or(1);
        // Rows of whole pages when a row holds a page or more: row offsets
        // are then round numbers, and punched holes (whole pages) line up.
        let mut columns = u64::from(width / cell_width);
        let page_cells = (PAGE / cell_bytes).max(1);
        if columns >= page_cells {
            columns -= columns % page_cells;
        }
        let rows = cells.div_ceil(columns);
        let row_pitch = (u64::from(height) / rows).clamp(MIN_PITCH, MAX_PITCH) as u32;
        Grid {
            start,
            end,
            cell_bytes,
            cell_width,
            row_pitch,
            columns,
            cells,
        }
    }

    fn rows(&self) -> u64 {
        self.cells.div_ceil(self.columns)
    }

    fn width_px(&self) -> u32 {
        self.columns as u32 * self.cell_width
    }

    fn height_px(&self) -> u32 {
        self.rows() as u32 * self.row_pitch
    }
}

/// Per cell: the kind it is drawn as, and whether it is hatched (punched).
/// `segments` come in order and do not overlap; one that reaches past a
/// cell is kept for the next.
fn classify(
    grid: &Grid,
    mut segments: impl Iterator<Item = Segment>,
    holes: &[(u64, u64)],
) -> Vec<(u8, bool)> {
    let mut cells = Vec::with_capacity(grid.cells as usize);
    let mut segment = segments.next();
    let mut hole = 0;
    for i in 0..grid.cells {
        let lo = grid.start + i * grid.cell_bytes;
        let hi = (lo + grid.cell_bytes).min(grid.end);
        let mut bytes = [0u64; KINDS];
        while let Some((start, end, kind)) = segment {
            if end <= lo {
                segment = segments.next();
                continue;
            }
            if start >= hi {
                break;
            }
            bytes[kind] += end.min(hi) - start.max(lo);
            if end > hi {
                break;
            }
            segment = segments.next();
        }
        while hole < holes.len() && holes[hole].1 <= lo {
            hole += 1;
        }
        let mut punched = 0;
        let mut j = hole;
        while j < holes.len() && holes[j].0 < hi {
            punched += holes[j].1.min(hi) - holes[j].0.max(lo);
            j += 1;
        }
        cells.push((pick(&bytes) as u8, 2 * punched >= hi - lo));
    }
    cells
}

/// The kind a cell is drawn as: damage if any; else what covers most of it,
/// an engine's header and payload counting together (the header's darker
/// shade wins only when it covers more of the cell than the payload).
fn pick(bytes: &[u64; KINDS]) -> usize {
    if bytes[DAMAGED] > 0 {
        return DAMAGED;
    }
    let engines = EngineId::ALL.len();
    let total = |kind: usize| {
        if kind < engines {
            bytes[kind] + bytes[kind + engines]
        } else {
            bytes[kind]
        }
    };
    let best = (0..engines)
        .chain(SLACK..KINDS)
        .max_by_key(|&kind| (total(kind), std::cmp::Reverse(kind)))
        .unwrap_or(UNUSED);
    if best < engines && bytes[best + engines] > bytes[best] {
        best + engines
    } else {
        best
    }
}

fn text(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
}

fn register_fonts() -> Result<(), String> {
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the built-in DejaVu Sans font is not valid".to_owned())?;
    plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
        .map_err(|_| "the built-in DejaVu Sans Bold font is not valid".to_owned())?;
    Ok(())
}

/// A legend entry: swatch, hatched or not, and its words.
struct Entry {
    color: RGBColor,
    hatched: bool,
    label: String,
}

fn legend(file: &RegionFile, cursor: u64) -> Vec<Entry> {
    let stats = file.stats();
    let mut entries: Vec<Entry> = EngineId::ALL
        .iter()
        .map(|&engine| {
            let figures = stats.engine(engine);
            Entry {
                color: ENGINE_COLORS[engine.as_u8() as usize],
                hatched: false,
                label: format!(
                    "{engine}: {} slot{}, {}",
                    figures.live_slots,
                    plural(figures.live_slots),
                    human(figures.live_bytes)
                ),
            }
        })
        .collect();
    let damaged = &file.recovery().dropped;
    entries.extend([
        Entry {
            color: darker(ENGINE_COLORS[0]),
            hatched: false,
            label: format!("extent headers (darker): {}", human(stats.header_bytes)),
        },
        Entry {
            color: SLACK_COLOR,
            hatched: false,
            label: format!("slack in live extents: {}", human(stats.slack_bytes)),
        },
        Entry {
            color: FREE_COLOR,
            hatched: false,
            label: format!(
                "free: {} in {} extent{}",
                human(stats.free_bytes),
                stats.free_extents,
                plural(stats.free_extents)
            ),
        },
        Entry {
            color: FREE_COLOR,
            hatched: true,
            label: format!("punched hole (hatched): {}", human(stats.punched_bytes)),
        },
        Entry {
            color: DAMAGED_COLOR,
            hatched: false,
            label: if damaged.is_empty() {
                "damaged: none".to_owned()
            } else {
                format!(
                    "damaged (ringed, marked left): {} in {} extent{}",
                    human(damaged.iter().map(|d| d.len).sum()),
                    damaged.len(),
                    plural(damaged.len() as u64)
                )
            },
        },
        Entry {
            color: FILE_HEADER_COLOR,
            hatched: false,
            label: "file header page".to_owned(),
        },
        Entry {
            color: UNUSED_COLOR,
            hatched: false,
            label: format!(
                "past the last extent: {}",
                human(stats.file_size.saturating_sub(cursor))
            ),
        },
    ]);
    entries
}

/// Hatch pattern of punched cells: diagonal lines, continuous across cells.
fn hatch(x: i32, y: i32) -> bool {
    (x + y).rem_euclid(5) == 0
}

pub(crate) fn run(args: &Args) -> Outcome {
    let file = open(&args.file.file)?;
    let (data_start, cursor) = bounds(&file);
    let size = file.stats().file_size;
    let (start, end) = if args.whole_file || cursor <= data_start {
        (0, size)
    } else {
        (data_start, cursor)
    };
    // Created first for a plain message if it cannot be; removed again if
    // the drawing fails.
    std::fs::File::create(&args.png)
        .map_err(|error| format!("{}: cannot create: {error}", args.png.display()))?;
    if let Err(error) = draw(args, &file, (data_start, cursor), start, end) {
        let _ = std::fs::remove_file(&args.png);
        return Err(format!("{}: {error}", args.png.display()).into());
    }
    warn_if_damaged(&file, "drawn in red");
    Ok(ExitCode::SUCCESS)
}

fn draw(
    args: &Args,
    file: &RegionFile,
    (data_start, cursor): (u64, u64),
    start: u64,
    end: u64,
) -> Result<(), String> {
    register_fonts()?;
    let width = args.width;
    let map_width = width - (LABELS + MARGIN) as u32;
    let grid = Grid::new(start, end, map_width, map_width * 5 / 8);
    let cells = classify(&grid, segments(file, (data_start, cursor)), file.holes());

    // Title and figures: two lines, three on a narrow picture.
    let stats = file.stats();
    let name = file.path().file_name().map_or_else(
        || file.path().display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let title = format!("overflow-region map: {name}");
    let frag = fragmentation(stats).map_or("-".to_owned(), |f| format!("{f:.3}"));
    let sizes = format!(
        "file {}, used {}, live {} in {} slot{}",
        human(stats.file_size),
        human(stats.used_bytes),
        human(stats.live_bytes),
        stats.live_slots,
        plural(stats.live_slots),
    );
    let space = format!(
        "used/live {frag}; free {} in {} extent{}; punched {}",
        human(stats.free_bytes),
        stats.free_extents,
        plural(stats.free_extents),
        human(stats.punched_bytes),
    );
    let what = if start == 0 && end == stats.file_size {
        "whole file"
    } else {
        "data area"
    };
    let line2 = format!(
        "{what}, offsets {start}..{end}: {} per {}, {} per row",
        human(grid.cell_bytes),
        if grid.cell_width == 1 {
            "pixel".to_owned()
        } else {
            format!("{} pixels", grid.cell_width)
        },
        human(grid.cell_bytes * grid.columns),
    );
    let lines = if width >= 1000 {
        vec![format!("{sizes}; {space}"), line2]
    } else {
        vec![sizes, space, line2]
    };

    let entries = legend(file, cursor);
    let legend_columns = (width as usize / 380).clamp(1, 4);
    let legend_rows = entries.len().div_ceil(legend_columns);
    let map_top = 56 + 24 * lines.len() as i32;
    let map_left = LABELS;
    let legend_top = map_top + grid.height_px() as i32 + 24;
    let height = legend_top as u32 + legend_rows as u32 * 26 + 56;

    let root = BitMapBackend::new(&args.png, (width, height)).into_drawing_area();
    let fail = |error: DrawingAreaErrorKind<_>| format!("cannot draw: {error}");
    root.fill(&WHITE).map_err(fail)?;
    let bold = TextStyle::from((FONT, 22).into_font().style(FontStyle::Bold));
    root.draw(&Text::new(title, (MARGIN, 14), bold))
        .map_err(fail)?;
    for (i, line) in lines.into_iter().enumerate() {
        root.draw(&Text::new(line, (MARGIN, 48 + 24 * i as i32), text(16)))
            .map_err(fail)?;
    }

    // The cells, drawn into a buffer of their own (pixel by pixel through
    // the drawing area would be slow) and blitted.
    let (cell_width, pitch) = (grid.cell_width as i32, grid.row_pitch as i32);
    let (map_w, map_h) = (grid.width_px() as i32, grid.height_px() as i32);
    let mut pixels = vec![255u8; map_w as usize * map_h as usize * 3];
    for (i, &(kind, punched)) in cells.iter().enumerate() {
        let column = (i as u64 % grid.columns) as i32;
        let row = (i as u64 / grid.columns) as i32;
        let color = kind_color(kind as usize);
        let (x0, y0) = (column * cell_width, row * pitch);
        for y in y0..y0 + pitch - 1 {
            for x in x0..x0 + cell_width {
                // The hatch is continuous across cells and the legend.
                let RGBColor(r, g, b) = if punched && hatch(map_left + x, map_top + y) {
                    HATCH_COLOR
                } else {
                    color
                };
                let at = 3 * (y * map_w + x) as usize;
                pixels[at..at + 3].copy_from_slice(&[r, g, b]);
            }
        }
    }
    let bitmap =
        BitMapElement::with_owned_buffer((map_left, map_top), (map_w as u32, map_h as u32), pixels)
            .ok_or("cannot draw: the map's buffer has the wrong size")?;
    root.draw(&bitmap).map_err(fail)?;
    root.draw(&Rectangle::new(
        [
            (map_left - 1, map_top - 1),
            (map_left + map_w, map_top + map_h),
        ],
        FRAME_COLOR,
    ))
    .map_err(fail)?;

    // Damage is rare and may be a few pixels: ring each damaged run and
    // mark its row left of the map.
    let mut i = 0;
    while i < cells.len() {
        if usize::from(cells[i].0) != DAMAGED {
            i += 1;
            continue;
        }
        let row = i as u64 / grid.columns;
        let mut j = i;
        while j < cells.len()
            && usize::from(cells[j].0) == DAMAGED
            && j as u64 / grid.columns == row
        {
            j += 1;
        }
        let y0 = map_top + row as i32 * pitch;
        let x0 = map_left + (i as u64 % grid.columns) as i32 * cell_width;
        let x1 = x0 + (j - i) as i32 * cell_width;
        for ring in 1..=2 {
            root.draw(&Rectangle::new(
                [
                    (x0 - 1 - ring, y0 - 1 - ring),
                    (x1 + ring, y0 + pitch - 1 + ring),
                ],
                DAMAGED_COLOR,
            ))
            .map_err(fail)?;
        }
        root.draw(&Rectangle::new(
            [(map_left - 7, y0 - 1), (map_left - 3, y0 + pitch - 1)],
            DAMAGED_COLOR.filled(),
        ))
        .map_err(fail)?;
        i = j;
    }

    // Row offsets, about every 48 px.
    let every = (48 / pitch).max(1) as u64;
    let label_style = text(13).pos(Pos::new(HPos::Right, VPos::Center));
    for row in (0..grid.rows()).step_by(every as usize) {
        let offset = start + row * grid.columns * grid.cell_bytes;
        let y = map_top + row as i32 * pitch + pitch / 2;
        root.draw(&Text::new(
            offset_label(offset, every * grid.columns * grid.cell_bytes),
            (map_left - 10, y),
            label_style.clone(),
        ))
        .map_err(fail)?;
    }

    // Legend.
    let column_width = (width as i32 - 2 * MARGIN) / legend_columns as i32;
    for (i, entry) in entries.iter().enumerate() {
        let x = MARGIN + (i / legend_rows) as i32 * column_width;
        let y = legend_top + (i % legend_rows) as i32 * 26;
        for dy in 0..18 {
            for dx in 0..26 {
                let (px_x, px_y) = (x + dx, y + dy);
                let color = if entry.hatched && hatch(px_x, px_y) {
                    HATCH_COLOR
                } else {
                    entry.color
                };
                root.draw_pixel((px_x, px_y), &color).map_err(fail)?;
            }
        }
        root.draw(&Rectangle::new([(x, y), (x + 26, y + 18)], FRAME_COLOR))
            .map_err(fail)?;
        root.draw(&Text::new(
            entry.label.clone(),
            (x + 34, y + 9),
            text(15).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(fail)?;
    }
    let notes = [
        "A cell shows what covers most of its bytes (an extent's header and payload count together);",
        "any damaged byte makes it red; hatched: at least half of it punched.",
    ];
    for (i, note) in notes.into_iter().enumerate() {
        root.draw(&Text::new(
            note,
            (
                MARGIN,
                legend_top + legend_rows as i32 * 26 + 10 + 18 * i as i32,
            ),
            text(13).color(&RGBColor(90, 90, 90)),
        ))
        .map_err(fail)?;
    }
    root.present().map_err(fail)?;
    Ok(())
}

/// A row offset: in KiB while labels are less than a MiB apart, else in
/// MiB; decimals only when not a whole number.
fn offset_label(offset: u64, step: u64) -> String {
    let (unit, name) = if step < 1 << 20 || offset < 1 << 20 {
        (1u64 << 10, "KiB")
    } else {
        (1 << 20, "MiB")
    };
    if offset.is_multiple_of(unit) {
        format!("{} {name}", offset / unit)
    } else {
        format!("{:.2} {name}", offset as f64 / unit as f64)
    }
}
