//! Pareto-front plots of a sweep (PNG and SVG): mean implicit reward of one expert against
//! another, a point per weight vector, labelled with it; for three or more experts a grid of
//! every pair. Headless: SVG needs no fonts; PNG labels use a TrueType font found on the
//! system (DejaVu Sans and a few common others) and are left out if there is none.

use crate::apps::sweep::Row;
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers a font for bitmap text once; false if none could be found.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        FONT_PATHS.iter().any(|p| match std::fs::read(p) {
            Ok(bytes) => {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            }
            Err(_) => false,
        })
    })
}

/// Writes `stem.png` and `stem.svg`; returns whether the PNG has text labels.
pub fn pareto(rows: &[Row], experts: &[String], stem: &Path) -> Result<bool> {
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let labels = font_ready();
    let size = panel_size(experts.len());
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw(&root, rows, experts, labels)
            .map_err(|e| anyhow!("cannot draw {}: {e}", png.display()))?;
        root.present().map_err(|e| anyhow!("cannot write {}: {e}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw(&root, rows, experts, true)
            .map_err(|e| anyhow!("cannot draw {}: {e}", svg.display()))?;
        root.present().map_err(|e| anyhow!("cannot write {}: {e}", svg.display()))?;
    }
    Ok(labels)
}

fn panel_size(experts: usize) -> (u32, u32) {
    let pairs = experts.saturating_sub(1).max(1) as u32;
    (640 * pairs.min(3), 480 * pairs.div_ceil(3))
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[Row],
    experts: &[String],
    labels: bool,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let pairs: Vec<(usize, usize)> = if experts.len() <= 2 {
        vec![(0, 1.min(experts.len().saturating_sub(1)))]
    } else {
        (0..experts.len()).flat_map(|a| (a + 1..experts.len()).map(move |b| (a, b))).collect()
    };
    let cols = pairs.len().min(3);
    let panels = root.split_evenly((pairs.len().div_ceil(cols), cols));
    for (&(a, b), area) in pairs.iter().zip(panels.iter()) {
        draw_pair(area, rows, experts, a, b, labels)?;
    }
    Ok(())
}

fn draw_pair<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[Row],
    experts: &[String],
    a: usize,
    b: usize,
    labels: bool,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.rewards[a], r.rewards[b])).collect();
    let range = |f: fn(&(f64, f64)) -> f64| {
        let lo = points.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.15).max(1e-3);
        (lo - pad)..(hi + pad)
    };
    let mut builder = ChartBuilder::on(area);
    builder.margin(16);
    if labels {
        builder
            .caption(
                format!("MOD Pareto front: {} vs {}", experts[a], experts[b]),
                ("sans-serif", 20),
            )
            .x_label_area_size(40)
            .y_label_area_size(56);
    }
    let mut chart = builder.build_cartesian_2d(range(|p| p.0), range(|p| p.1))?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc(format!("mean implicit reward, {}", experts[a]))
            .y_desc(format!("mean implicit reward, {}", experts[b]));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), BLUE.mix(0.5)))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, BLUE.filled())))?;
    if labels {
        // Each point labelled with its weights, just right of and above the marker.
        chart.draw_series(rows.iter().zip(&points).map(|(r, &p)| {
            let w: Vec<String> = r.weights.iter().map(|x| format!("{x:.2}")).collect();
            EmptyElement::at(p)
                + Text::new(
                    format!("w=({})", w.join(",")),
                    (8, -14),
                    ("sans-serif", 12).into_font(),
                )
        }))?;
    }
    Ok(())
}
