//! The cost-of-K figure (`cargo bench --bench curve`): MOD's decode speed as a ratio to the
//! model alone against the number of objectives K, a line per model file. Markers are
//! measured, at each K the fastest strategy measured, marked with its initial (m mixed,
//! b batched, t threads); the dashed line of the same colour is what the cost model predicts
//! for that strategy.

use super::canvas::Canvas;
use super::scales::{viridis, Axis};
use super::surfaces::{Raster, Svg};
use super::{draw_caption, font, framed_chart, pt, DrawResult, CAPTION_INCHES, DPI, INK, MUTED};
use crate::apps::bench::curve::{Curve, CurvePoint};
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// The plot and the legend column, in inches.
const PLOT_INCHES: (f64, f64) = (5.0, 3.6);
const LEGEND_INCHES: f64 = 1.9;

/// The fastest measured strategy at each K of `model`, in order of K.
pub fn best_points<'a>(curve: &'a Curve, model: &str) -> Vec<&'a CurvePoint> {
    let mut ks: Vec<usize> =
        curve.points.iter().filter(|p| p.model == model).map(|p| p.k).collect();
    ks.sort_unstable();
    ks.dedup();
    ks.iter()
        .filter_map(|&k| {
            curve
                .points
                .iter()
                .filter(|p| p.model == model && p.k == k)
                .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
        })
        .collect()
}

/// The models in the order they were measured.
fn models(curve: &Curve) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in &curve.points {
        if !names.contains(&p.model) {
            names.push(p.model.clone());
        }
    }
    names
}

/// Writes `stem.png` and `stem.svg`; returns their paths.
pub fn cost_curve(curve: &Curve, stem: &Path) -> Result<(PathBuf, PathBuf)> {
    let size = (
        ((PLOT_INCHES.0 + LEGEND_INCHES) * DPI).round() as u32,
        ((PLOT_INCHES.1 + CAPTION_INCHES) * DPI).round() as u32,
    );
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let raster = Raster::new(png.clone(), size, DPI)?;
    draw_on(Canvas::new(size, raster), curve)
        .map_err(|e| anyhow!("cannot write {}: {e}", png.display()))?;
    draw_on(Canvas::new(size, Svg::new(svg.clone(), size, DPI)), curve)
        .map_err(|e| anyhow!("cannot write {}: {e}", svg.display()))?;
    Ok((png, svg))
}

fn draw_on<DB: DrawingBackend>(backend: DB, curve: &Curve) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let root = backend.into_drawing_area();
    let drawn: DrawResult<()> = draw(&root, curve).and_then(|()| Ok(root.present()?));
    drawn.map_err(|e| anyhow!("{e}"))
}

fn colour(i: usize, n: usize) -> RGBColor {
    viridis(if n <= 1 { 0.0 } else { 0.85 * i as f64 / (n - 1) as f64 })
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curve: &Curve) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (w, h) = root.dim_in_pixel();
    let caption_h = (CAPTION_INCHES * DPI).round() as u32;
    let legend_w = (LEGEND_INCHES * DPI).round() as u32;
    let (body, caption) = root.split_vertically(h - caption_h);
    let (plot, legend) = body.split_horizontally(w - legend_w);
    let names = models(curve);
    let top = curve
        .points
        .iter()
        .flat_map(|p| [p.ratio, p.predicted])
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let k_max = curve.points.iter().map(|p| p.k).max().unwrap_or(8).max(2) as f64;
    let axes = (Axis::new(0.5..k_max + 0.5, 9), Axis::new(0.0..(top * 1.08), 7));
    let titles = (
        "objectives K (prompted experts on one model file)".to_string(),
        "decode speed ÷ the model alone".to_string(),
    );
    let mut chart = framed_chart(&plot, axes, 10.0, 38.0, titles)?;
    for (i, name) in names.iter().enumerate() {
        let c = colour(i, names.len());
        let best = best_points(curve, name);
        let measured: Vec<(f64, f64)> = best.iter().map(|p| (p.k as f64, p.ratio)).collect();
        let predicted: Vec<(f64, f64)> = best.iter().map(|p| (p.k as f64, p.predicted)).collect();
        chart.draw_series(LineSeries::new(
            measured.iter().copied(),
            c.stroke_width(pt(1.1) as u32),
        ))?;
        chart.draw_series(DashedLineSeries::new(
            predicted.iter().copied(),
            pt(3.0) as u32,
            pt(2.0) as u32,
            c.stroke_width(pt(0.8) as u32),
        ))?;
        for p in &best {
            let at = (p.k as f64, p.ratio);
            chart.draw_series([
                Circle::new(at, pt(3.2), c.filled()),
                Circle::new(at, pt(3.2), INK.stroke_width(pt(0.5) as u32)),
            ])?;
            let initial = if p.k == 1 { "" } else { &p.strategy[..1] };
            chart.draw_series([EmptyElement::at(at)
                + Text::new(
                    initial.to_string(),
                    (pt(4.5), -pt(4.5)),
                    font(6.5).pos(Pos::new(HPos::Left, VPos::Bottom)),
                )])?;
        }
    }
    // The legend: a swatch and the model's name per line, then the two line kinds.
    let step = pt(13.0);
    let x0 = pt(6.0);
    for (i, name) in names.iter().enumerate() {
        let y = pt(18.0) + i as i32 * step;
        let c = colour(i, names.len());
        legend.draw(&Circle::new((x0 + pt(4.0), y), pt(3.2), c.filled()))?;
        legend.draw(&Text::new(
            name.trim_end_matches(".gguf").to_string(),
            (x0 + pt(11.0), y),
            font(7.0).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    let y = pt(18.0) + names.len() as i32 * step + pt(6.0);
    for (j, text) in ["measured, fastest strategy", "cost model, same strategy"].iter().enumerate()
    {
        let yy = y + j as i32 * step;
        let line = vec![(x0, yy), (x0 + pt(9.0), yy)];
        if j == 0 {
            legend.draw(&PathElement::new(line, INK.stroke_width(pt(1.1) as u32)))?;
        } else {
            legend.draw(&PathElement::new(
                vec![(x0, yy), (x0 + pt(3.0), yy)],
                INK.stroke_width(pt(0.8) as u32),
            ))?;
            legend.draw(&PathElement::new(
                vec![(x0 + pt(6.0), yy), (x0 + pt(9.0), yy)],
                INK.stroke_width(pt(0.8) as u32),
            ))?;
        }
        legend.draw(&Text::new(
            text.to_string(),
            (x0 + pt(12.0), yy),
            font(6.5).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    legend.draw(&Text::new(
        "m mixed · b batched · t threads",
        (x0, y + 2 * step),
        font(6.5).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Center)),
    ))?;
    let parts = vec![
        curve.cpu.clone(),
        format!("{} threads", curve.threads),
        format!("{} greedy tokens, medians of {} rounds", curve.max_tokens, curve.rounds),
        "cargo bench --bench curve".to_string(),
    ];
    draw_caption(&caption, &parts, w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(model: &str, k: usize, strategy: &'static str, ratio: f64) -> CurvePoint {
        CurvePoint {
            model: model.into(),
            k,
            strategy,
            tokens_per_second: 10.0 * ratio,
            single_tokens_per_second: 10.0,
            ratio,
            predicted: ratio * 1.05,
            error: 0.05,
        }
    }

    fn curve() -> Curve {
        Curve {
            cpu: "test CPU".into(),
            threads: 2,
            rounds: 3,
            max_tokens: 32,
            points: vec![
                point("a.gguf", 1, "alone", 1.0),
                point("a.gguf", 2, "threads", 0.5),
                point("a.gguf", 2, "mixed", 0.9),
                point("a.gguf", 2, "batched", 0.7),
                point("b.gguf", 4, "batched", 0.6),
                point("b.gguf", 4, "mixed", 0.4),
            ],
            passes: Vec::new(),
        }
    }

    #[test]
    fn the_fastest_strategy_stands_for_each_k() {
        let c = curve();
        let best: Vec<(usize, &str)> =
            best_points(&c, "a.gguf").iter().map(|p| (p.k, p.strategy)).collect();
        assert_eq!(best, vec![(1, "alone"), (2, "mixed")]);
        let best: Vec<&str> = best_points(&c, "b.gguf").iter().map(|p| p.strategy).collect();
        assert_eq!(best, vec!["batched"]);
        assert!(best_points(&c, "missing.gguf").is_empty());
    }

    #[test]
    fn the_figure_is_written_as_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("mood-curve-figure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (png, svg) = cost_curve(&curve(), &dir.join("curve")).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") || text.contains("<svg"), "{}", &text[..100]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
