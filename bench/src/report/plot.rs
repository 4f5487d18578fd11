//! PNG plots of a run: delivered messages per second and p99 latency against push rate, and
//! server memory against connections.
//!
//! plotters draws into an RGB buffer that `png` encodes. Text needs a TrueType font; it is read
//! at run time from Debian's fonts-dejavu-core, so no font library is linked. Without the font
//! the plots are skipped and the report says so on stderr.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::Results;
use crate::scenario::rate::Fanout;

pub(crate) const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Line colours, readable on white.
const COLORS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];
const SIZE: (u32, u32) = (960, 600);

/// Registers the font once per process; false when it cannot be read.
pub(crate) fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let Ok(bytes) = std::fs::read(FONT) else { return false };
        // plotters keeps fonts for the life of the process and wants `'static` bytes.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub(crate) struct Chart<'a> {
    pub file: &'a str,
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
    pub log_x: bool,
    pub log_y: bool,
}

/// Draws every plot the results allow; returns `(file, title)` of each one written.
pub fn all(r: &Results, dir: &Path) -> Vec<(String, String)> {
    if !font_ready() {
        eprintln!("plots skipped: cannot read the font {FONT} (Debian package fonts-dejavu-core)");
        return Vec::new();
    }
    let mut written = Vec::new();
    let rate_series = |value: fn(&crate::scenario::rate::RateStep) -> f64| -> Vec<Series> {
        r.rates
            .iter()
            .map(|s| Series {
                name: match s.fanout {
                    Fanout::Room => format!("{}, 1 room", super::label(s.target, s.protocol)),
                    Fanout::Rooms(n) => format!("{}, {n} rooms", super::label(s.target, s.protocol)),
                    Fanout::Users => format!("{}, users", super::label(s.target, s.protocol)),
                },
                points: s.steps.iter().filter(|x| x.received > 0).map(|x| (x.rate, value(x))).collect(),
            })
            .collect()
    };
    let charts = [
        (
            Chart {
                file: "delivered.png",
                title: "Delivered messages per second against push rate",
                x: "pushes per second",
                y: "delivered messages per second",
                log_x: true,
                log_y: true,
            },
            rate_series(|x| x.delivered_per_sec),
        ),
        (
            Chart {
                file: "p99.png",
                title: "p99 push → receive latency against push rate",
                x: "pushes per second",
                y: "p99 latency (ms)",
                log_x: true,
                log_y: true,
            },
            rate_series(|x| x.p99_ms.max(0.01)),
        ),
        (
            Chart {
                file: "memory.png",
                title: "Server memory (RSS growth) against idle connections",
                x: "connections",
                y: "RSS growth (MB)",
                log_x: false,
                log_y: false,
            },
            memory_series(r),
        ),
    ];
    for (chart, series) in charts {
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        match draw(&dir.join(chart.file), &chart, &series) {
            Ok(()) => written.push((chart.file.to_string(), chart.title.to_string())),
            Err(e) => eprintln!("plot {} failed: {e:#}", chart.file),
        }
    }
    written
}

fn memory_series(r: &Results) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for i in &r.idle {
        let name = super::label(i.target, i.protocol);
        let point = (i.connected as f64, i.rss_after.saturating_sub(i.rss_before) as f64 / 1e6);
        match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => out.push(Series { name, points: vec![(0.0, 0.0), point] }),
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn axis(v: f64, log: bool) -> f64 {
    if log { v.max(1e-9).log10() } else { v }
}

/// A tick label: log axes are drawn in log10 units and labelled with the real value.
fn label(v: f64, log: bool) -> String {
    let v = if log { 10f64.powf(v) } else { v };
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6).replace(".0M", "M")
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3).replace(".0k", "k")
    } else if v >= 1.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn range(values: impl Iterator<Item = f64>, log: bool) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    if log {
        (lo.floor())..(hi.ceil().max(lo.floor() + 1.0))
    } else {
        let top = if hi > 0.0 { hi * 1.1 } else { 1.0 };
        lo.min(0.0)..top
    }
}

pub(crate) fn draw(path: &Path, c: &Chart, series: &[Series]) -> Result<()> {
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let xs = range(series.iter().flat_map(|s| s.points.iter().map(|p| axis(p.0, c.log_x))), c.log_x);
        let ys = range(series.iter().flat_map(|s| s.points.iter().map(|p| axis(p.1, c.log_y))), c.log_y);
        let mut chart = ChartBuilder::on(&root)
            .caption(c.title, ("sans-serif", 24))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(xs, ys)
            .map_err(|e| anyhow!("{e}"))?;
        let (lx, ly) = (c.log_x, c.log_y);
        chart
            .configure_mesh()
            .x_desc(c.x)
            .y_desc(c.y)
            .x_label_formatter(&|v| label(*v, lx))
            .y_label_formatter(&|v| label(*v, ly))
            .label_style(("sans-serif", 14))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, s) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let color = c.stroke_width(2);
            let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (axis(p.0, lx), axis(p.1, ly))).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color))
                .map_err(|e| anyhow!("{e}"))?
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    enc.write_header()?.write_image_data(&buf)?;
    Ok(())
}
