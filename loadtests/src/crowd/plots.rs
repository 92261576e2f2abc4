//! The run's SVG plots (plotters, SVG backend only: no fonts or bitmaps are needed, the
//! browser renders the text).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::analysis::RunResult;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
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

fn legend(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
}

/// Writes every plot that has data into `dir`; returns the file names.
pub fn write_all(dir: &Path, r: &RunResult) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    rates(&dir.join("rates.svg"), r)?;
    files.push("rates.svg".to_owned());
    queue(&dir.join("queue.svg"), r)?;
    files.push("queue.svg".to_owned());
    if !r.admin_samples.is_empty() {
        active(&dir.join("active.svg"), r)?;
        files.push("active.svg".to_owned());
    }
    if !r.wait_hist.is_empty() {
        waits(&dir.join("wait.svg"), r)?;
        files.push("wait.svg".to_owned());
    }
    if !r.admissions.is_empty() {
        fifo(&dir.join("fifo.svg"), r)?;
        files.push("fifo.svg".to_owned());
    }
    if !r.latency.is_empty() {
        latency(&dir.join("latency.svg"), r)?;
        files.push("latency.svg".to_owned());
    }
    if r.series.failures.iter().any(|n| *n > 0) {
        failures(&dir.join("failures.svg"), r)?;
        files.push("failures.svg".to_owned());
    }
    Ok(files)
}

fn rates(path: &Path, r: &RunResult) -> Result<(), String> {
    let root: Area<'_> = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
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
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("{}: arrivals and entries per second", r.scenario),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xmax, 0f64..top)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("seconds since the first arrival")
        .y_desc("shoppers per second")
        .draw()
        .map_err(e)?;
    c.draw_series(LineSeries::new(series(&s.arrivals), BLUE.stroke_width(1)))
        .map_err(e)?
        .label("arrivals")
        .legend(legend(BLUE));
    c.draw_series(LineSeries::new(
        series(&s.admissions),
        GREEN2.stroke_width(2),
    ))
    .map_err(e)?
    .label("entries (pass received)")
    .legend(legend(GREEN2));
    if s.gave_up.iter().any(|n| *n > 0) {
        c.draw_series(LineSeries::new(series(&s.gave_up), ORANGE.stroke_width(1)))
            .map_err(e)?
            .label("gave up")
            .legend(legend(ORANGE));
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
        .legend(legend(RED));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn queue(path: &Path, r: &RunResult) -> Result<(), String> {
    let root: Area<'_> = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
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
    let mut c = ChartBuilder::on(&root)
        .caption(format!("{}: the line", r.scenario), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..xmax, 0f64..top)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("seconds since the first arrival")
        .y_desc("shoppers")
        .draw()
        .map_err(e)?;
    c.draw_series(LineSeries::new(series(&s.waiting), BLUE.stroke_width(2)))
        .map_err(e)?
        .label("waiting (simulator)")
        .legend(legend(BLUE));
    if !admin.is_empty() {
        c.draw_series(LineSeries::new(admin, PURPLE.stroke_width(1)))
            .map_err(e)?
            .label("waiting (admin API: issued - serving)")
            .legend(legend(PURPLE));
    }
    c.draw_series(LineSeries::new(series(&s.in_shop), GREEN2.stroke_width(2)))
        .map_err(e)?
        .label("in the shop (simulator)")
        .legend(legend(GREEN2));
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn active(path: &Path, r: &RunResult) -> Result<(), String> {
    let root: Area<'_> = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let a = &r.admin_samples;
    let xmax = (a.last().map_or(1, |s| s.t_ms) as f64 / 1000.0).max(1.0) + 1.0;
    let top = ymax(
        a.iter()
            .flat_map(|s| [s.active as f64, f64::from(s.total_active_users)]),
    );
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: active shoppers against the cap (admin API)",
                r.scenario
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..xmax, 0f64..top)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("seconds since the first arrival")
        .y_desc("shoppers")
        .draw()
        .map_err(e)?;
    c.draw_series(LineSeries::new(
        a.iter().map(|s| (s.t_ms as f64 / 1000.0, s.active as f64)),
        GREEN2.stroke_width(2),
    ))
    .map_err(e)?
    .label("active")
    .legend(legend(GREEN2));
    c.draw_series(LineSeries::new(
        a.iter()
            .map(|s| (s.t_ms as f64 / 1000.0, f64::from(s.total_active_users))),
        RED.stroke_width(2),
    ))
    .map_err(e)?
    .label("cap (total_active_users)")
    .legend(legend(RED));
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn waits(path: &Path, r: &RunResult) -> Result<(), String> {
    let root: Area<'_> = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (left, right) = root.split_horizontally(W / 2);
    let h = &r.wait_hist;
    let width = if h.len() > 1 { h[1].0 - h[0].0 } else { 1.0 };
    let xmax = h.last().map_or(1.0, |b| b.0 + width).max(1e-3);
    let top = ymax(h.iter().map(|b| b.1 as f64));
    let mut c = ChartBuilder::on(&left)
        .caption(
            "wait before entry (shoppers who waited)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xmax, 0f64..top)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("shoppers")
        .draw()
        .map_err(e)?;
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
    let mut c = ChartBuilder::on(&right)
        .caption("cumulative share", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..xmax, 0f64..1.0)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("share admitted")
        .draw()
        .map_err(e)?;
    c.draw_series(LineSeries::new(cdf, GREEN2.stroke_width(2)))
        .map_err(e)?;
    root.present().map_err(e)
}

fn fifo(path: &Path, r: &RunResult) -> Result<(), String> {
    let root: Area<'_> = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let pts = &r.admissions;
    let xmax = ymax(pts.iter().map(|p| p.0));
    let ymax_ = ymax(pts.iter().map(|p| p.1 as f64));
    // At most ~3,000 entries and ~1,000 inversions drawn, to keep the file small.
    let step = (pts.len() / 3000).max(1);
    let inverted = pts.iter().filter(|p| p.2).count();
    let inv_step = (inverted / 1000).max(1);
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: admission order ({} inversions in {} checked)",
                r.scenario, r.fifo.inversions, r.fifo.checked
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax_)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("entry time, seconds")
        .y_desc("place in the admission order")
        .draw()
        .map_err(e)?;
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
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn latency(path: &Path, r: &RunResult) -> Result<(), String> {
    let root: Area<'_> = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
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
    let mut c = ChartBuilder::on(&root)
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
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn failures(path: &Path, r: &RunResult) -> Result<(), String> {
    let root: Area<'_> = SVGBackend::new(path, (W, H / 2 + 60)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let f = &r.series.failures;
    let xmax = f.len().max(2) as f64;
    let top = ymax(f.iter().map(|n| *n as f64));
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("{}: failed requests per second", r.scenario),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xmax, 0f64..top)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("seconds since the first arrival")
        .y_desc("failures")
        .draw()
        .map_err(e)?;
    c.draw_series(LineSeries::new(series(f), RED.stroke_width(2)))
        .map_err(e)?;
    root.present().map_err(e)
}
