//! `docs/peers.png`: throughput relative to ours (grouped bars, log scale)
//! and, below, fragmentation after churn.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{self, Frag, Machine, Row};
use crate::stores::Kind;

const WIDTH: u32 = 1800;
const HEIGHT: u32 = 1100;
const FONT: &str = "sans-serif";

/// One colour per system, in `Kind::ALL` order.
static COLORS: [RGBColor; 5] = [
    RGBColor(40, 40, 40),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
];

fn color(kind: Kind) -> RGBColor {
    COLORS[kind.index()]
}

fn text(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
}

fn register_fonts() -> Result<(), Box<dyn Error>> {
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "DejaVu Sans regular is not a valid font")?;
    plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
        .map_err(|_| "DejaVu Sans bold is not a valid font")?;
    Ok(())
}

/// A bar label: two significant digits, no exponent (`0.00036`, `0.31`,
/// `4.2`, `120`).
fn short(value: f64) -> String {
    if value <= 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let digits = value.log10().floor() as i32;
    let decimals = (1 - digits).max(0) as usize;
    format!("{value:.decimals$}")
}

/// An axis label at a power of ten: `0.001×`, `1×`, `1000×`.
fn axis(value: f64) -> String {
    let decimals = (-value.log10().round()).max(0.0) as usize;
    format!("{value:.decimals$}×")
}

pub fn draw(
    path: &Path,
    rows: &[Row],
    frag: &[Frag],
    machine: &Machine,
    reps: usize,
) -> Result<(), Box<dyn Error>> {
    register_fonts()?;
    let rows: Vec<&Row> = rows.iter().filter(|row| !row.diagnostic).collect();
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(760);
    relative(&root, &top, &rows, machine, reps)?;
    if !frag.is_empty() {
        fragmentation(&root, &bottom, frag)?;
    }
    root.present()?;
    Ok(())
}

/// Upper panel: each peer's speed divided by ours, per workload.
fn relative(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    rows: &[&Row],
    machine: &Machine,
    reps: usize,
) -> Result<(), Box<dyn Error>> {
    let peers = [Kind::NodedbMem, Kind::Lmdb, Kind::Pwrite, Kind::Memory];
    let values: Vec<Vec<Option<f64>>> = rows
        .iter()
        .map(|row| peers.iter().map(|&kind| row.speed_vs_ours(kind)).collect())
        .collect();
    let all = values.iter().flatten().flatten().copied();
    let lo = all.clone().fold(1.0f64, f64::min);
    let hi = all.fold(1.0f64, f64::max);
    let lo = 10f64.powf((lo.log10() - 0.3).floor());
    let hi = 10f64.powf((hi.log10() + 0.3).ceil());
    let groups = rows.len().max(1);

    let fs_type = machine.filesystem.split(' ').next().unwrap_or("?");
    let discard = if machine
        .filesystem
        .split([',', ' ', '(', ')'])
        .any(|o| o == "discard")
    {
        " (discard)"
    } else {
        ""
    };
    let caption = format!(
        "overflow-region vs peers: speed relative to ours (ours = 1; below 1 = ours ahead) — {} × {}, {fs_type}{discard}",
        machine.nproc, machine.cpu
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 24).into_font().style(FontStyle::Bold))
        .margin(20)
        .margin_bottom(10)
        .x_label_area_size(90)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..groups as f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("their throughput ÷ ours (log scale)")
        .y_label_formatter(&|v| axis(*v))
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    // Group separators.
    for i in 1..groups {
        chart.draw_series(LineSeries::new(
            [(i as f64, lo), (i as f64, hi)],
            RGBColor(200, 200, 200),
        ))?;
    }

    let slot = 0.8 / peers.len() as f64;
    for (j, &kind) in peers.iter().enumerate() {
        let fill = color(kind).filled();
        let bars = values.iter().enumerate().filter_map(|(i, v)| {
            let value = v[j]?;
            let x0 = i as f64 + 0.1 + j as f64 * slot;
            Some(Rectangle::new(
                [(x0 + 0.01, lo), (x0 + slot - 0.01, value)],
                fill,
            ))
        });
        chart
            .draw_series(bars)?
            .label(kind.label())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 7), (x + 16, y + 7)], color(kind).filled())
            });
        let labels = values.iter().enumerate().map(|(i, v)| {
            let x = i as f64 + 0.1 + (j as f64 + 0.5) * slot;
            match v[j] {
                Some(value) => Text::new(
                    short(value),
                    (x, value * 1.15),
                    text(13)
                        .transform(FontTransform::Rotate270)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ),
                None => Text::new(
                    "n/a".to_owned(),
                    (x, lo * 1.1),
                    text(13).pos(Pos::new(HPos::Center, VPos::Bottom)),
                ),
            }
        });
        chart.draw_series(labels)?;
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1.0), (groups as f64, 1.0)],
            BLACK.stroke_width(2),
        ))?
        .label("ours = 1")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FONT, 16))
        .draw()?;

    // Workload names under the groups, on two lines.
    for (i, row) in rows.iter().enumerate() {
        let (line1, line2) = row.chart_label();
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo));
        let style = text(17).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(line1, (px, py + 8), style.clone()))?;
        root.draw(&Text::new(line2, (px, py + 30), style))?;
    }
    let (left, py) = chart.backend_coord(&(0.0, lo));
    let footnote = format!(
        "Median of {reps} passes per system, taking turns. reopen: 1 / time to reopen (nodedb-mem 0.0.6 \
         forgets its slots; n/a: cannot reopen its data). Figures and checks: docs/PEERS.md",
    );
    root.draw(&Text::new(
        footnote,
        (left, py + 58),
        text(15).color(&RGBColor(90, 90, 90)),
    ))?;
    Ok(())
}

/// Lower panel: file size, used bytes and allocated blocks per live byte
/// after churn.
fn fragmentation(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    frag: &[Frag],
) -> Result<(), Box<dyn Error>> {
    let fills = [
        RGBColor(90, 90, 160),
        RGBColor(140, 170, 220),
        RGBColor(190, 190, 190),
    ];
    let hi = frag
        .iter()
        .flat_map(|f| report::MEASURES.iter().map(move |m| (m.of)(f)))
        .fold(1.0f64, f64::max)
        * 1.25;
    let groups = frag.len();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Fragmentation after churn: bytes on disk per live payload byte (lower is better)",
            (FONT, 22).into_font().style(FontStyle::Bold),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..groups as f64, 0f64..hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("bytes per live byte")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let slot = 0.7 / report::MEASURES.len() as f64;
    for (j, (m, &fill)) in report::MEASURES.iter().zip(&fills).enumerate() {
        let (label, measure) = (m.label, m.of);
        let bars = frag.iter().enumerate().map(|(i, f)| {
            let x0 = i as f64 + 0.15 + j as f64 * slot;
            Rectangle::new(
                [(x0 + 0.01, 0.0), (x0 + slot - 0.01, measure(f))],
                fill.filled(),
            )
        });
        chart
            .draw_series(bars)?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 7), (x + 16, y + 7)], fill.filled()));
        let labels = frag.iter().enumerate().map(|(i, f)| {
            let x = i as f64 + 0.15 + (j as f64 + 0.5) * slot;
            let value = measure(f);
            Text::new(
                report::sig3(value),
                (x, value + hi * 0.01),
                text(14).pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        });
        chart.draw_series(labels)?;
    }
    for (i, f) in frag.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let style = text(18)
            .color(&COLORS[f.kind.index()])
            .pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(f.kind.label(), (px, py + 8), style))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FONT, 15))
        .draw()?;
    Ok(())
}
