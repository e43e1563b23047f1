//! PNG charts of a run, every peer on the same axes (plotters, bitmap backend).
//!
//! Text is drawn with ab_glyph from a TrueType file read at run time (DejaVu Sans from the
//! Debian package `fonts-dejavu-core`, which `scripts/install-deps.sh` installs), so no
//! fontconfig or FreeType is needed.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::peers::Peer;
use crate::rows::Row;

/// A whole PNG, or a part of one.
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Writes every chart the rows allow into `dir`; returns the files written.
pub(crate) fn draw_all(rows: &[Row], dir: &Path) -> Result<Vec<PathBuf>, String> {
    load_font()?;
    let mut written = Vec::new();
    let mut chart = |name: &str, draw: &dyn Fn(&Area<'_>) -> Result<(), String>| {
        let path = dir.join(name);
        let root = BitMapBackend::new(&path, (1200, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root)?;
        root.present().map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path.clone());
        Ok::<(), String>(())
    };
    if has(rows, "fanout") {
        chart("fanout.png", &|root| {
            let series = series(rows, "fanout", "deliveries_per_s");
            log_panel(
                root,
                "Fan-out: deliveries per second, one topic",
                "subscribers",
                "deliveries/s",
                &series,
            )
        })?;
    }
    if has(rows, "fanout_latency") {
        chart("fanout_latency.png", &|root| {
            let panels = root.split_evenly((1, 3));
            for (area, (metric, title)) in panels.iter().zip(PERCENTILES) {
                let series = series(rows, "fanout_latency", metric);
                log_panel(area, title, "subscribers", "ms", &series)?;
            }
            Ok(())
        })?;
    }
    if has(rows, "scale") {
        chart("scale.png", &|root| {
            let (left, right) = root.split_horizontally(600);
            let memory = series(rows, "scale", "bytes_per_conn");
            log_panel(&left, "Server memory per idle connection", "connections", "bytes", &memory)?;
            let accept = series(rows, "scale", "accept_per_s");
            log_panel(
                &right,
                "Accept rate (JWT upgrade to server_ready)",
                "connections",
                "connections/s",
                &accept,
            )
        })?;
    }
    if has(rows, "inbound") {
        chart("inbound.png", &|root| {
            let (left, right) = root.split_horizontally(600);
            for (area, format) in [(&left, "json"), (&right, "msgpack")] {
                let picked: Vec<Row> =
                    rows.iter().filter(|r| r.param.ends_with(format)).cloned().collect();
                let series = series(&picked, "inbound", "msgs_per_s");
                let title = format!("Inbound to the application, {format}: messages/s");
                log_panel(area, &title, "payload bytes", "messages/s", &series)?;
            }
            Ok(())
        })?;
    }
    Ok(written)
}

/// Each peer's (x, value) points of `metric` in `scenario`, ascending x.
fn series(rows: &[Row], scenario: &str, metric: &str) -> Vec<(Peer, Vec<(f64, f64)>)> {
    Peer::ALL
        .iter()
        .map(|&peer| {
            let mut points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.scenario == scenario && r.peer == peer)
                .filter_map(|r| Some((r.x, r.metric(metric)?)))
                .filter(|(x, y)| *x > 0.0 && *y > 0.0)
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (peer, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect()
}

/// One log-log chart with a line and dots per peer and a legend.
fn log_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(Peer, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.copied().unzip();
    if xs.is_empty() {
        return Ok(());
    }
    let x_range = padded(&xs, 1.3);
    // Room below the lowest line for the legend.
    let y_range = padded(&ys, 2.0);
    let y_range = y_range.start / LEGEND_ROOM..y_range.end;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.12))
        .x_label_formatter(&|x| log_label(*x))
        .y_label_formatter(&|y| log_label(*y))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (peer, points) in series {
        let color = color(*peer);
        let line = LineSeries::new(points.iter().copied(), color.stroke_width(2));
        chart.draw_series(line).map_err(err)?.label(peer.label()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
        });
        let dots = points.iter().map(|&p| Circle::new(p, 4, color.filled()));
        chart.draw_series(dots).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(emptiest_corner(series, &xs, &ys))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// The corner of a log-log panel with the fewest points, where the legend hides least.
fn emptiest_corner(
    series: &[(Peer, Vec<(f64, f64)>)],
    xs: &[f64],
    ys: &[f64],
) -> SeriesLabelPosition {
    let spread = |values: &[f64], factor: f64| {
        let range = padded(values, factor);
        (range.start.ln(), range.end.ln())
    };
    let ((x0, x1), (y0, y1)) = (spread(xs, 1.3), spread(ys, 2.0));
    let y0 = y0 - LEGEND_ROOM.ln();
    let mut counts = [0usize; 4];
    for &(x, y) in series.iter().flat_map(|(_, p)| p.iter()) {
        let nx = (x.ln() - x0) / (x1 - x0).max(f64::EPSILON);
        let ny = (y.ln() - y0) / (y1 - y0).max(f64::EPSILON);
        let left = nx < LEGEND_SHARE;
        let right = nx > 1.0 - LEGEND_SHARE;
        let low = ny < LEGEND_SHARE;
        let high = ny > 1.0 - LEGEND_SHARE;
        counts[0] += usize::from(high && left);
        counts[1] += usize::from(high && right);
        counts[2] += usize::from(low && left);
        counts[3] += usize::from(low && right);
    }
    let corners = [
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::LowerLeft,
        SeriesLabelPosition::LowerRight,
    ];
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(2);
    corners[best].clone()
}

/// The range of `values` widened by `factor` on both sides (log axes).
fn padded(values: &[f64], factor: f64) -> Range<f64> {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(0.0, f64::max);
    (low / factor)..(high * factor)
}

/// A log axis label: only 1, 2 and 5 times a power of ten are written, so labels do not
/// run into each other.
fn log_label(x: f64) -> String {
    let mantissa = x / 10f64.powf(x.log10().floor());
    let round = (mantissa - mantissa.round()).abs() < 0.01;
    if round && matches!(mantissa.round() as u32, 1 | 2 | 5) {
        short(x)
    } else {
        String::new()
    }
}

/// `1.5M`, `20k`, `512`, `0.25`.
fn short(x: f64) -> String {
    let (value, unit) = match x {
        x if x >= 1e9 => (x / 1e9, "G"),
        x if x >= 1e6 => (x / 1e6, "M"),
        x if x >= 1e3 => (x / 1e3, "k"),
        x => (x, ""),
    };
    let text = if value >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    format!("{text}{unit}")
}

fn color(peer: Peer) -> RGBColor {
    match peer {
        Peer::Wse => RGBColor(214, 39, 40),
        Peer::Legacy => RGBColor(31, 119, 180),
        Peer::Tokio => RGBColor(44, 160, 44),
        Peer::Websockets => RGBColor(255, 127, 14),
    }
}

fn has(rows: &[Row], scenario: &str) -> bool {
    rows.iter().any(|r| r.scenario == scenario && !r.metrics.is_empty())
}

/// Registers DejaVu Sans as `sans-serif` (once; the bytes live as long as the program).
fn load_font() -> Result<(), String> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = FONTS.iter().find(|p| Path::new(p).exists()).ok_or_else(|| {
                format!("no font for the charts: install fonts-dejavu-core ({})", FONTS.join(", "))
            })?;
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path}: not a font ab_glyph can read"))
        })
        .clone()
}

/// How far below the lowest value a value axis reaches (log scale), to leave the legend
/// a band of its own.
const LEGEND_ROOM: f64 = 8.0;
/// The share of a panel's width and height the legend may cover in a corner.
const LEGEND_SHARE: f64 = 0.45;
/// The latency percentiles charted, with their panel titles.
const PERCENTILES: [(&str, &str); 3] = [
    ("p50_ms", "Publish to receive, p50"),
    ("p99_ms", "Publish to receive, p99"),
    ("p99_9_ms", "Publish to receive, p99.9"),
];
/// Where the Debian font packages put DejaVu Sans.
const FONTS: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];
