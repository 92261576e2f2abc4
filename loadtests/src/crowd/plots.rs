//! The run's SVG plots (plotters, SVG backend only: no fonts or bitmaps are needed, the
//! browser renders the text).

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::analysis::RunResult;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type Quantile = fn(&super::metrics::LatencySummary) -> f64;

const W: u32 = 960;
const H: u32 = 420;
const ORANGE: RGBColor = RGBColor(230, 126, 34);
const GREEN2: RGBColor = RGBColor(39, 174, 96);
const GREY: RGBColor = RGBColor(120, 120, 120);
const PURPLE: RGBColor = RGBColor(142, 68, 173);

fn e(err: impl std::fmt::Display) -> String {
    format!("plot: {err}")
}

fn ymax(values: impl IntoIterator<Item = f64>) -> f64 {
    let m = values.into_iter().fold(0.0, f64::max);
    if m <= 0.0 {
        1.0
    } else {
        m * 1.1
    }
}

fn series(v: &[u64]) -> Vec<(f64, f64)> {
    v.iter()
        .enumerate()
        .map(|(i, n)| (i as f64, *n as f64))
        .collect()
}

/// A legend entry for a line in `pen`: a short stroke of its colour, 2 px wide.
fn legend(pen: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    let stroke = ShapeStyle {
        stroke_width: 2,
        ..pen
    };
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], stroke)
}

/// A white canvas of `size` pixels, written to `path` on `present`.
fn canvas(path: &Path, size: (u32, u32)) -> Result<Area<'_>, String> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    Ok(root)
}

/// How much of a canvas a chart takes: the whole of it, or one half side by side.
#[derive(Debug, Clone, Copy)]
enum Panel {
    Whole,
    Half,
}

/// A chart on `area` titled `caption`, both axes from 0 (to `x.0` and `y.0`, described as
/// `x.1` and `y.1`), its y labels `y_width` pixels wide; the grid is drawn.
fn chart<'a, 'b>(
    area: &'a Area<'b>,
    panel: Panel,
    caption: &str,
    y_width: u32,
    x: (f64, &str),
    y: (f64, &str),
) -> Result<Chart<'a, 'b>, String> {
    let (font, margin) = match panel {
        Panel::Whole => (18, 12),
        Panel::Half => (16, 10),
    };
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", font))
        .margin(margin)
        .x_label_area_size(36)
        .y_label_area_size(y_width)
        .build_cartesian_2d(0f64..x.0, 0f64..y.0)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc(x.1)
        .y_desc(y.1)
        .draw()
        .map_err(e)?;
    Ok(c)
}

/// The x axis of most charts.
const SINCE_START: &str = "seconds since the first arrival";

/// A whole-canvas [`chart`] over the run's seconds (0 to `xmax`).
fn over_time<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    y_width: u32,
    xmax: f64,
    y: (f64, &str),
) -> Result<Chart<'a, 'b>, String> {
    chart(area, Panel::Whole, caption, y_width, (xmax, SINCE_START), y)
}

/// Draws `points` as a line in `pen`, named `label` in the legend.
fn line(
    c: &mut Chart<'_, '_>,
    points: impl IntoIterator<Item = (f64, f64)>,
    pen: ShapeStyle,
    label: &str,
) -> Result<(), String> {
    c.draw_series(LineSeries::new(points, pen))
        .map_err(e)?
        .label(label)
        .legend(legend(pen));
    Ok(())
}

/// The series' legend in a box at `at`.
fn legend_box<'a, 'b: 'a, CT: CoordTranslate>(
    c: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    at: SeriesLabelPosition,
) -> Result<(), String> {
    c.configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)
}

/// Writes every plot that has data into `dir`; returns the file names.
pub fn write_all(dir: &Path, r: &RunResult) -> Result<Vec<String>, String> {
    type Draw = fn(&Area<'_>, &RunResult) -> Result<(), String>;
    let plots: [(&str, bool, (u32, u32), Draw); 7] = [
        ("rates.svg", true, (W, H), rates),
        ("queue.svg", true, (W, H), queue),
        ("active.svg", !r.admin_samples.is_empty(), (W, H), active),
        ("wait.svg", !r.wait_hist.is_empty(), (W, H), waits),
        ("fifo.svg", !r.admissions.is_empty(), (W, H), fifo),
        ("latency.svg", !r.latency.is_empty(), (W, H), latency),
        (
            "failures.svg",
            r.series.failures.iter().any(|n| *n > 0),
            (W, H / 2 + 60),
            failures,
        ),
    ];
    let mut files = Vec::new();
    for (name, has_data, size, draw) in plots {
        if has_data {
            let path = dir.join(name);
            let root = canvas(&path, size)?;
            draw(&root, r)?;
            root.present().map_err(e)?;
            files.push(name.to_owned());
        }
    }
    Ok(files)
}

fn rates(root: &Area<'_>, r: &RunResult) -> Result<(), String> {
    let s = &r.series;
    let xmax = s.arrivals.len().max(2) as f64;
    let target = r.rate.target_per_minute.map(|t| f64::from(t) / 60.0);
    let top = ymax(
        s.arrivals
            .iter()
            .chain(&s.admissions)
            .map(|n| *n as f64)
            .chain(target),
    );
    let caption = format!("{}: arrivals and entries per second", r.scenario);
    let mut c = over_time(root, &caption, 56, xmax, (top, "shoppers per second"))?;
    line(
        &mut c,
        series(&s.arrivals),
        BLUE.stroke_width(1),
        "arrivals",
    )?;
    line(
        &mut c,
        series(&s.admissions),
        GREEN2.stroke_width(2),
        "entries (pass received)",
    )?;
    if s.gave_up.iter().any(|n| *n > 0) {
        line(
            &mut c,
            series(&s.gave_up),
            ORANGE.stroke_width(1),
            "gave up",
        )?;
    }
    if let Some(t) = target {
        c.draw_series(DashedLineSeries::new(
            vec![(0.0, t), (xmax, t)],
            8,
            5,
            RED.stroke_width(2),
        ))
        .map_err(e)?
        .label(format!("target {:.1}/s", t))
        .legend(legend(RED.stroke_width(2)));
    }
    legend_box(&mut c, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn queue(root: &Area<'_>, r: &RunResult) -> Result<(), String> {
    let s = &r.series;
    let xmax = s.waiting.len().max(2) as f64;
    let admin: Vec<(f64, f64)> = r
        .admin_samples
        .iter()
        .map(|a| (a.t_ms as f64 / 1000.0, a.waiting as f64))
        .collect();
    let top = ymax(
        s.waiting
            .iter()
            .chain(&s.in_shop)
            .map(|n| *n as f64)
            .chain(admin.iter().map(|p| p.1)),
    );
    let caption = format!("{}: the line", r.scenario);
    let mut c = over_time(root, &caption, 64, xmax, (top, "shoppers"))?;
    line(
        &mut c,
        series(&s.waiting),
        BLUE.stroke_width(2),
        "waiting (simulator)",
    )?;
    if !admin.is_empty() {
        line(
            &mut c,
            admin,
            PURPLE.stroke_width(1),
            "waiting (admin API: issued - serving)",
        )?;
    }
    line(
        &mut c,
        series(&s.in_shop),
        GREEN2.stroke_width(2),
        "in the shop (simulator)",
    )?;
    legend_box(&mut c, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn active(root: &Area<'_>, r: &RunResult) -> Result<(), String> {
    let a = &r.admin_samples;
    let xmax = (a.last().map_or(1, |s| s.t_ms) as f64 / 1000.0).max(1.0) + 1.0;
    let top = ymax(
        a.iter()
            .flat_map(|s| [s.active as f64, f64::from(s.total_active_users)]),
    );
    let caption = format!(
        "{}: active shoppers against the cap (admin API)",
        r.scenario
    );
    let mut c = over_time(root, &caption, 64, xmax, (top, "shoppers"))?;
    line(
        &mut c,
        a.iter().map(|s| (s.t_ms as f64 / 1000.0, s.active as f64)),
        GREEN2.stroke_width(2),
        "active",
    )?;
    line(
        &mut c,
        a.iter()
            .map(|s| (s.t_ms as f64 / 1000.0, f64::from(s.total_active_users))),
        RED.stroke_width(2),
        "cap (total_active_users)",
    )?;
    legend_box(&mut c, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

fn waits(root: &Area<'_>, r: &RunResult) -> Result<(), String> {
    let (left, right) = root.split_horizontally(W / 2);
    let h = &r.wait_hist;
    let width = if h.len() > 1 { h[1].0 - h[0].0 } else { 1.0 };
    let xmax = h.last().map_or(1.0, |b| b.0 + width).max(1e-3);
    let top = ymax(h.iter().map(|b| b.1 as f64));
    let mut c = chart(
        &left,
        Panel::Half,
        "wait before entry (shoppers who waited)",
        56,
        (xmax, "seconds"),
        (top, "shoppers"),
    )?;
    c.draw_series(h.iter().map(|(x, n)| {
        Rectangle::new(
            [(*x, 0.0), (*x + width * 0.95, *n as f64)],
            BLUE.mix(0.6).filled(),
        )
    }))
    .map_err(e)?;
    let total: u64 = h.iter().map(|b| b.1).sum();
    let mut acc = 0u64;
    let cdf: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
        .chain(h.iter().map(|(x, n)| {
            acc += n;
            (x + width, acc as f64 / total.max(1) as f64)
        }))
        .collect();
    let mut c = chart(
        &right,
        Panel::Half,
        "cumulative share",
        48,
        (xmax, "seconds"),
        (1.0, "share admitted"),
    )?;
    c.draw_series(LineSeries::new(cdf, GREEN2.stroke_width(2)))
        .map_err(e)?;
    Ok(())
}

fn fifo(root: &Area<'_>, r: &RunResult) -> Result<(), String> {
    let pts = &r.admissions;
    let xmax = ymax(pts.iter().map(|p| p.0));
    let ymax_ = ymax(pts.iter().map(|p| p.1 as f64));
    // At most ~3,000 entries and ~1,000 inversions drawn, to keep the file small.
    let step = (pts.len() / 3000).max(1);
    let inverted = pts.iter().filter(|p| p.2).count();
    let inv_step = (inverted / 1000).max(1);
    let caption = format!(
        "{}: admission order ({} inversions in {} checked)",
        r.scenario, r.fifo.inversions, r.fifo.checked
    );
    let mut c = chart(
        root,
        Panel::Whole,
        &caption,
        70,
        (xmax, "entry time, seconds"),
        (ymax_, "place in the admission order"),
    )?;
    c.draw_series(
        pts.iter()
            .enumerate()
            .filter(|(i, p)| !p.2 && i % step == 0)
            .map(|(_, p)| Circle::new((p.0, p.1 as f64), 2, BLUE.mix(0.35).filled())),
    )
    .map_err(e)?
    .label("entry")
    .legend(|(x, y)| Circle::new((x + 9, y), 3, BLUE.filled()));
    c.draw_series(
        pts.iter()
            .filter(|p| p.2)
            .step_by(inv_step)
            .map(|p| Circle::new((p.0, p.1 as f64), 3, RED.filled())),
    )
    .map_err(e)?
    .label("inverted (later than someone behind, by more than a poll)")
    .legend(|(x, y)| Circle::new((x + 9, y), 3, RED.filled()));
    legend_box(&mut c, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

fn latency(root: &Area<'_>, r: &RunResult) -> Result<(), String> {
    let l = &r.latency;
    let n = l.len() as u32;
    let lo = l
        .iter()
        .map(|s| s.p50_ms)
        .fold(f64::INFINITY, f64::min)
        .clamp(0.01, 1.0)
        / 2.0;
    let hi = l.iter().map(|s| s.max_ms).fold(1.0, f64::max) * 2.0;
    let names: Vec<String> = l.iter().map(|s| s.endpoint.clone()).collect();
    let mut c = ChartBuilder::on(root)
        .caption(
            format!("{}: latency per endpoint (ms, log scale)", r.scenario),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (0u32..n.saturating_sub(1)).into_segmented(),
            (lo..hi).log_scale(),
        )
        .map_err(e)?;
    c.configure_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_desc("milliseconds")
        .draw()
        .map_err(e)?;
    let quantiles: [(&str, RGBColor, Quantile); 4] = [
        ("p50", GREEN2, |s| s.p50_ms),
        ("p90", BLUE, |s| s.p90_ms),
        ("p99", ORANGE, |s| s.p99_ms),
        ("max", GREY, |s| s.max_ms),
    ];
    for (label, color, f) in quantiles {
        c.draw_series(l.iter().enumerate().map(|(i, s)| {
            Circle::new(
                (SegmentValue::CenterOf(i as u32), f(s).max(lo)),
                5,
                color.filled(),
            )
        }))
        .map_err(e)?
        .label(label)
        .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
    }
    legend_box(&mut c, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn failures(root: &Area<'_>, r: &RunResult) -> Result<(), String> {
    let f = &r.series.failures;
    let xmax = f.len().max(2) as f64;
    let top = ymax(f.iter().map(|n| *n as f64));
    let caption = format!("{}: failed requests per second", r.scenario);
    let mut c = over_time(root, &caption, 56, xmax, (top, "failures"))?;
    c.draw_series(LineSeries::new(series(f), RED.stroke_width(2)))
        .map_err(e)?;
    Ok(())
}
