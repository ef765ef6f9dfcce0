//! Pareto-front figures of a sweep, for print: `pareto.png` (300 dpi) and `pareto.svg` (the
//! same drawing, text as outlines), drawn by plotters on mood's own backends ([`canvas`],
//! with the embedded font), with the colour and axis scales of `scales`.
//!
//! Conventions: each panel plots one expert's mean implicit reward against another's, a
//! point per weight vector with ±1 standard-error bars in both directions. Points of the
//! Pareto set (no other weight vector is at least as good for every expert and better for
//! one) are filled and outlined; dominated points are rings. The line is the front of the
//! panel's two experts, through the points no other point of the panel dominates. Colour
//! is the weight, read on the colour bar: the first expert's weight for two experts, and
//! for three or more the x-axis expert's share w_x / (w_x + w_y) of the pair's weight
//! (grey where that is not a share: a negative weight or both zero); then every pair of
//! experts has a panel, three to a row. Each point carries its weight as a small label
//! beside it ([`weight_labels`]); a label that finds no free spot around its point, clear of
//! the markers and of the labels placed before it, is left out. The axes are in nats: an
//! implicit reward β·log(π_i(y)/π_ref(y)) is a sum over the generation's tokens of natural
//! log-probabilities. A caption line names the model, recipe, divergence, β, prompts and
//! tokens.

pub mod canvas;
pub mod curve;
mod scales;
mod surfaces;

use crate::apps::sweep::stats::{pareto_set, Row};
use anyhow::{anyhow, Result};
use canvas::Canvas;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use scales::{range, tick_format, viridis, Axis, Shade};
use std::path::{Path, PathBuf};
use surfaces::{Raster, Svg};

/// Resolution of the PNG.
pub const DPI: f64 = 300.0;
/// One panel, the column with the legend and colour bar, and the caption band, in inches.
pub const PANEL_INCHES: (f64, f64) = (4.25, 3.4);
pub const SIDE_INCHES: f64 = 1.25;
pub const CAPTION_INCHES: f64 = 0.35;
/// Panels in a row of the grid.
pub const COLUMNS: usize = 3;

/// The pairs of experts with a panel: (0, 1) for two, every pair for more.
pub fn pairs(experts: usize) -> Vec<(usize, usize)> {
    (0..experts).flat_map(|a| (a + 1..experts).map(move |b| (a, b))).collect()
}

/// The figure's size in inches.
pub fn size_inches(experts: usize) -> (f64, f64) {
    let n = pairs(experts).len().max(1);
    let (cols, rows) = (n.min(COLUMNS), n.div_ceil(COLUMNS));
    (cols as f64 * PANEL_INCHES.0 + SIDE_INCHES, rows as f64 * PANEL_INCHES.1 + CAPTION_INCHES)
}

/// The figure's size in pixels at [`DPI`] (the SVG's view box is the same).
pub fn size_pixels(experts: usize) -> (u32, u32) {
    let (w, h) = size_inches(experts);
    ((w * DPI).round() as u32, (h * DPI).round() as u32)
}

/// What a figure shows.
pub struct Figure<'a> {
    pub rows: &'a [Row],
    pub experts: &'a [String],
    /// The caption's parts, joined with " · " and wrapped to the width.
    pub caption: &'a [String],
}

/// Writes `stem.png` and `stem.svg`; returns their paths.
pub fn pareto(figure: &Figure, stem: &Path) -> Result<(PathBuf, PathBuf)> {
    let size = size_pixels(figure.experts.len());
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let raster = Raster::new(png.clone(), size, DPI)?;
    draw_on(Canvas::new(size, raster), figure)
        .map_err(|e| anyhow!("cannot write {}: {e}", png.display()))?;
    draw_on(Canvas::new(size, Svg::new(svg.clone(), size, DPI)), figure)
        .map_err(|e| anyhow!("cannot write {}: {e}", svg.display()))?;
    Ok((png, svg))
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Draws `figure` on a plotters backend of [`size_pixels`]: [`pareto`] draws the PNG and the
/// SVG through it, and another backend (one that records what is drawn, say) takes the same
/// drawing.
pub fn draw_on<DB: DrawingBackend>(backend: DB, figure: &Figure) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let root = backend.into_drawing_area();
    let drawn: DrawResult<()> = draw(&root, figure).and_then(|()| Ok(root.present()?));
    drawn.map_err(|e| anyhow!("{e}"))
}

/// The title of expert `name`'s axis. Its values are means over prompts of implicit rewards
/// β·log(π_i(y)/π_ref(y)), each a sum over a generation's tokens of natural
/// log-probabilities: nats.
pub fn axis_title(name: &str) -> String {
    format!("{name}: mean implicit reward (nats)")
}

/// A weight as a label: at most two decimals, no trailing zeros, a true minus sign.
fn weight_text(w: f64) -> String {
    let s = format!("{w:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.replace('-', "\u{2212}")
    }
}

/// Whether the labels show the first expert's weight alone: two experts whose weights sum
/// to 1 in every row, where that weight (the colour bar's) determines the other.
fn first_weight_only(rows: &[Row]) -> bool {
    rows.iter().all(|r| r.weights.len() == 2 && (r.weights[0] + r.weights[1] - 1.0).abs() < 1e-9)
}

/// The label beside each row's point: the first expert's weight ("0.25") where that fixes
/// the vector (two experts, weights summing to 1), the whole weight vector in recipe order
/// otherwise ("0.2,0.6,0.2").
pub fn weight_labels(rows: &[Row]) -> Vec<String> {
    let first = first_weight_only(rows);
    rows.iter()
        .map(|r| {
            if first {
                weight_text(r.weights[0])
            } else {
                r.weights.iter().map(|&w| weight_text(w)).collect::<Vec<_>>().join(",")
            }
        })
        .collect()
}

/// A box in pixels: left, top, right, bottom.
type Rect = [f64; 4];

fn overlaps(a: &Rect, b: &Rect) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

/// Whether a circle of `radius` around `c` reaches into `r`.
fn circle_hits(r: &Rect, c: (f64, f64), radius: f64) -> bool {
    let dx = c.0 - c.0.clamp(r[0], r[2]);
    let dy = c.1 - c.1.clamp(r[1], r[3]);
    dx * dx + dy * dy < radius * radius
}

/// Whether the segment from `a` to `b` crosses `r` (Liang–Barsky clipping).
fn segment_hits(r: &Rect, a: (f64, f64), b: (f64, f64)) -> bool {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut enter, mut leave) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0 - r[0]), (dx, r[2] - a.0), (-dy, a.1 - r[1]), (dy, r[3] - a.1)] {
        if p == 0.0 {
            if q < 0.0 {
                return false;
            }
        } else if p < 0.0 {
            enter = enter.max(q / p);
        } else {
            leave = leave.min(q / p);
        }
    }
    enter <= leave
}

/// What labels are placed among, in pixels.
struct Scene<'a> {
    /// The points' centres.
    points: &'a [(f64, f64)],
    /// The markers' radius, and the gap left between a marker and its label.
    radius: f64,
    gap: f64,
    /// The plotting area, which every label stays inside.
    inside: Rect,
    /// Lines a label should rather not cover (error bars, the front).
    lines: &'a [[(f64, f64); 2]],
}

/// The top-left corner of each point's label of `sizes[i]` (width, height), or `None` where
/// no spot is free. Labels are placed in `order`, each at the first of eight spots around its
/// point (right, left, above, below, then the four corners) whose box stays inside the area
/// and clear of every marker and, by `gap` at least, of the labels placed before it; a spot
/// that also keeps off the lines is taken first.
fn place_labels(scene: &Scene, sizes: &[(f64, f64)], order: &[usize]) -> Vec<Option<(f64, f64)>> {
    let mut placed: Vec<Option<(f64, f64)>> = vec![None; scene.points.len()];
    let mut boxes: Vec<Rect> = Vec::new();
    let d = scene.radius + scene.gap;
    let c = d * std::f64::consts::FRAC_1_SQRT_2;
    for &i in order {
        let ((x, y), (w, h)) = (scene.points[i], sizes[i]);
        let spots = [
            (x + d, y - h / 2.0),
            (x - d - w, y - h / 2.0),
            (x - w / 2.0, y - d - h),
            (x - w / 2.0, y + d),
            (x + c, y - c - h),
            (x + c, y + c),
            (x - c - w, y - c - h),
            (x - c - w, y + c),
        ];
        let free = |r: &Rect| {
            let [l, t, rr, b] = scene.inside;
            // Labels keep the marker gap between each other too.
            let grown = [r[0] - scene.gap, r[1] - scene.gap, r[2] + scene.gap, r[3] + scene.gap];
            r[0] >= l
                && r[1] >= t
                && r[2] <= rr
                && r[3] <= b
                && !scene.points.iter().any(|&p| circle_hits(r, p, scene.radius))
                && !boxes.iter().any(|o| overlaps(&grown, o))
        };
        let boxed = |(l, t): (f64, f64)| [l, t, l + w, t + h];
        let clear = |r: &Rect| !scene.lines.iter().any(|s| segment_hits(r, s[0], s[1]));
        let spot = spots
            .iter()
            .find(|&&s| free(&boxed(s)) && clear(&boxed(s)))
            .or_else(|| spots.iter().find(|&&s| free(&boxed(s))));
        if let Some(&s) = spot {
            boxes.push(boxed(s));
            placed[i] = Some(s);
        }
    }
    placed
}

/// Points per inch, and pixels per point at the figure's resolution.
const PX_PER_PT: f64 = DPI / 72.0;

fn pt(x: f64) -> i32 {
    (x * PX_PER_PT).round() as i32
}

fn font(size_pt: f64) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size_pt * PX_PER_PT).into_font()).color(&INK)
}

const INK: RGBColor = RGBColor(30, 30, 30);
const GRID: RGBColor = RGBColor(228, 228, 228);
const MUTED: RGBColor = RGBColor(80, 80, 80);

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (w, h) = root.dim_in_pixel();
    let side = (SIDE_INCHES * DPI).round() as u32;
    let caption_h = (CAPTION_INCHES * DPI).round() as u32;
    let (body, caption) = root.split_vertically(h - caption_h);
    let (panels, side_area) = body.split_horizontally(w - side);
    let m = figure.experts.len();
    let shade = Shade::of(figure.rows, m);
    let pairs = pairs(m);
    let cols = pairs.len().clamp(1, COLUMNS);
    let areas = panels.split_evenly((pairs.len().div_ceil(cols).max(1), cols));
    for (&(a, b), area) in pairs.iter().zip(&areas) {
        draw_panel(area, figure, a, b, &shade)?;
    }
    draw_side(&side_area, figure, &shade, m)?;
    draw_caption(&caption, figure.caption, w)?;
    Ok(())
}

/// A chart on `area` over the two axes (each with its tick decimals) in the figures' style:
/// light grid at the ticks, muted axes, the axis titles; `right` and `y_labels` are the right
/// margin and the width of the y tick labels' band, in points.
fn framed_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    ((xa, xd), (ya, yd)): ((Axis, usize), (Axis, usize)),
    right: f64,
    y_labels: f64,
    (x_title, y_title): (String, String),
) -> DrawResult<ChartContext<'a, DB, Cartesian2d<Axis, Axis>>>
where
    DB::ErrorType: 'static,
{
    let (xf, yf) = (tick_format(xd), tick_format(yd));
    let mut chart = ChartBuilder::on(area)
        .margin_top(pt(10.0))
        .margin_right(pt(right))
        .margin_left(pt(4.0))
        .margin_bottom(pt(2.0))
        .x_label_area_size(pt(30.0))
        .y_label_area_size(pt(y_labels))
        .build_cartesian_2d(xa, ya)?;
    chart
        .configure_mesh()
        .bold_line_style(GRID.stroke_width(pt(0.5) as u32))
        .light_line_style(TRANSPARENT)
        .max_light_lines(0)
        .axis_style(MUTED.stroke_width(pt(0.6) as u32))
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style(font(8.0))
        .axis_desc_style(font(9.0))
        .x_desc(x_title)
        .y_desc(y_title)
        .set_all_tick_mark_size(pt(3.0))
        .draw()?;
    Ok(chart)
}

struct Point {
    x: f64,
    y: f64,
    sx: f64,
    sy: f64,
    pareto: bool,
    colour: RGBColor,
    label: String,
}

/// Marker radii and line widths, in points.
const MARKER_PT: f64 = 3.6;
const RING_PT: f64 = 2.9;
const RING_WIDTH_PT: f64 = 1.2;
const OUTLINE_PT: f64 = 0.6;
const BAR_PT: f64 = 0.7;
const CAP_PT: f64 = 1.8;
const FRONT_PT: f64 = 1.1;
/// The weight labels' type size, and their gap from the marker's edge, in points.
const LABEL_PT: f64 = 6.5;
const LABEL_GAP_PT: f64 = 1.2;

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    figure: &Figure,
    a: usize,
    b: usize,
    shade: &Shade,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let labels = weight_labels(figure.rows);
    let points: Vec<Point> = figure
        .rows
        .iter()
        .zip(labels)
        .filter_map(|(r, label)| {
            Some(Point {
                x: r.rewards[a]?,
                y: r.rewards[b]?,
                sx: r.rewards_se[a].unwrap_or(0.0),
                sy: r.rewards_se[b].unwrap_or(0.0),
                pareto: r.pareto,
                colour: shade.colour(&r.weights, a, b),
                label,
            })
        })
        .collect();
    let xr = range(points.iter().flat_map(|p| [p.x - p.sx, p.x + p.sx]));
    let yr = range(points.iter().flat_map(|p| [p.y - p.sy, p.y + p.sy]));
    let titles = (axis_title(&figure.experts[a]), axis_title(&figure.experts[b]));
    let mut chart = framed_chart(area, (Axis::new(xr, 7), Axis::new(yr, 7)), 12.0, 42.0, titles)?;
    if points.is_empty() {
        let (w, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            "no generation succeeded",
            (w as i32 / 2, h as i32 / 2),
            font(9.0).pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
        return Ok(());
    }
    // Error bars first, under everything else.
    let cap = pt(CAP_PT);
    for p in &points {
        let style = p.colour.mix(0.75).stroke_width(pt(BAR_PT) as u32);
        if p.sx > 0.0 {
            chart.draw_series([PathElement::new(
                vec![(p.x - p.sx, p.y), (p.x + p.sx, p.y)],
                style,
            )])?;
            for x in [p.x - p.sx, p.x + p.sx] {
                chart
                    .draw_series([EmptyElement::at((x, p.y))
                        + PathElement::new(vec![(0, -cap), (0, cap)], style)])?;
            }
        }
        if p.sy > 0.0 {
            chart.draw_series([PathElement::new(
                vec![(p.x, p.y - p.sy), (p.x, p.y + p.sy)],
                style,
            )])?;
            for y in [p.y - p.sy, p.y + p.sy] {
                chart
                    .draw_series([EmptyElement::at((p.x, y))
                        + PathElement::new(vec![(-cap, 0), (cap, 0)], style)])?;
            }
        }
    }
    // The front of this pair: its non-dominated points, left to right.
    let on_front = pareto_set(&points.iter().map(|p| vec![p.x, p.y]).collect::<Vec<_>>());
    let mut front: Vec<(f64, f64)> =
        points.iter().zip(&on_front).filter(|(_, &f)| f).map(|(p, _)| (p.x, p.y)).collect();
    front.sort_by(|p, q| p.0.total_cmp(&q.0).then(q.1.total_cmp(&p.1)));
    if front.len() > 1 {
        chart.draw_series(LineSeries::new(
            front.iter().copied(),
            INK.stroke_width(pt(FRONT_PT) as u32),
        ))?;
    }
    for p in points.iter().filter(|p| !p.pareto) {
        chart.draw_series([Circle::new(
            (p.x, p.y),
            pt(RING_PT),
            p.colour.stroke_width(pt(RING_WIDTH_PT) as u32),
        )])?;
    }
    for p in points.iter().filter(|p| p.pareto) {
        chart.draw_series([
            Circle::new((p.x, p.y), pt(MARKER_PT), p.colour.filled()),
            Circle::new((p.x, p.y), pt(MARKER_PT), INK.stroke_width(pt(OUTLINE_PT) as u32)),
        ])?;
    }
    draw_labels(&chart, &points, &front)
}

/// Each point's weight label beside it (see [`place_labels`]): the Pareto set's first, left
/// to right, then the dominated points'.
fn draw_labels<DB: DrawingBackend>(
    chart: &ChartContext<DB, Cartesian2d<Axis, Axis>>,
    points: &[Point],
    front: &[(f64, f64)],
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let pixel = |x: f64, y: f64| {
        let (px, py) = chart.backend_coord(&(x, y));
        (f64::from(px), f64::from(py))
    };
    let centres: Vec<(f64, f64)> = points.iter().map(|p| pixel(p.x, p.y)).collect();
    let mut lines: Vec<[(f64, f64); 2]> =
        front.windows(2).map(|s| [pixel(s[0].0, s[0].1), pixel(s[1].0, s[1].1)]).collect();
    for p in points {
        lines.push([pixel(p.x - p.sx, p.y), pixel(p.x + p.sx, p.y)]);
        lines.push([pixel(p.x, p.y - p.sy), pixel(p.x, p.y + p.sy)]);
    }
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let inside = [f64::from(xs.start), f64::from(ys.start), f64::from(xs.end), f64::from(ys.end)];
    let em = (LABEL_PT * PX_PER_PT) as f32;
    let sizes: Vec<(f64, f64)> = points
        .iter()
        .map(|p| {
            let l = canvas::layout(&p.label, em);
            (f64::from(l.width), f64::from(l.ascent - l.descent))
        })
        .collect();
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&i, &j| {
        points[j].pareto.cmp(&points[i].pareto).then(points[i].x.total_cmp(&points[j].x))
    });
    let scene = Scene {
        points: &centres,
        radius: f64::from(pt(MARKER_PT)),
        gap: f64::from(pt(LABEL_GAP_PT)),
        inside,
        lines: &lines,
    };
    let style = font(LABEL_PT).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Top));
    for (i, spot) in place_labels(&scene, &sizes, &order).into_iter().enumerate() {
        let Some((left, top)) = spot else { continue };
        let (p, c) = (&points[i], centres[i]);
        let offset = ((left - c.0).round() as i32, (top - c.1).round() as i32);
        chart.plotting_area().draw(
            &(EmptyElement::at((p.x, p.y)) + Text::new(p.label.clone(), offset, style.clone())),
        )?;
    }
    Ok(())
}

/// The legend (what the marks mean) above the colour bar.
fn draw_side<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    figure: &Figure,
    shade: &Shade,
    experts: usize,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    let sample = viridis(0.5);
    let (x, text_x, row) = (pt(10.0), pt(22.0), pt(13.0));
    let top = pt(18.0);
    let front = if experts > 2 { "front of the pair" } else { "front" };
    // What the small numbers beside the points are.
    let weights = if first_weight_only(figure.rows) {
        format!("weight of {}", figure.experts[0])
    } else {
        "weight vector".to_string()
    };
    let labels = ["Pareto set", "dominated", front, "±1 std. error", &weights];
    let label_style = font(8.0).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, label) in labels.iter().enumerate() {
        let y = top + i as i32 * row;
        match i {
            0 => {
                area.draw(&Circle::new((x, y), pt(MARKER_PT), sample.filled()))?;
                area.draw(&Circle::new(
                    (x, y),
                    pt(MARKER_PT),
                    INK.stroke_width(pt(OUTLINE_PT) as u32),
                ))?;
            }
            1 => area.draw(&Circle::new(
                (x, y),
                pt(RING_PT),
                sample.stroke_width(pt(RING_WIDTH_PT) as u32),
            ))?,
            2 => area.draw(&PathElement::new(
                vec![(x - pt(7.0), y), (x + pt(7.0), y)],
                INK.stroke_width(pt(FRONT_PT) as u32),
            ))?,
            4 => area.draw(&Text::new(
                "0.3",
                (x, y),
                font(LABEL_PT).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Center)),
            ))?,
            _ => {
                let style = sample.mix(0.75).stroke_width(pt(BAR_PT) as u32);
                area.draw(&PathElement::new(vec![(x - pt(6.0), y), (x + pt(6.0), y)], style))?;
                for dx in [-pt(6.0), pt(6.0)] {
                    area.draw(&PathElement::new(
                        vec![(x + dx, y - pt(CAP_PT)), (x + dx, y + pt(CAP_PT))],
                        style,
                    ))?;
                }
            }
        }
        area.draw(&Text::new(label.to_string(), (text_x, y), label_style.clone()))?;
    }
    // The colour bar, below the legend.
    let bar_top = top + labels.len() as i32 * row + pt(12.0);
    let bar = area.margin(bar_top as u32, pt(34.0) as u32, pt(8.0) as u32, 0);
    if bar_top as u32 + pt(60.0) as u32 > h || w < pt(40.0) as u32 {
        return Ok(());
    }
    let (lo, hi) = shade.range();
    let (axis, yd) = Axis::new(lo..hi, 6);
    let yf = tick_format(yd);
    let mut chart = ChartBuilder::on(&bar)
        .set_label_area_size(LabelAreaPosition::Right, pt(50.0))
        .build_cartesian_2d(0.0..1.0, axis)?;
    // Each step of the scale is a band from the bottom of the bar to its own top, drawn top
    // band first: every band lies on an opaque one, so no seam shows between bands when a
    // viewer smooths their edges.
    let steps = 256;
    chart.draw_series((0..steps).rev().map(|i| {
        let (t0, t1) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
        Rectangle::new([(0.0, lo), (1.0, lo + t1 * (hi - lo))], viridis((t0 + t1) / 2.0).filled())
    }))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .disable_x_axis()
        .axis_style(MUTED.stroke_width(pt(0.6) as u32))
        .y_label_formatter(&yf)
        .label_style(font(8.0))
        .axis_desc_style(font(8.5))
        .y_desc(shade.label(figure.experts))
        .set_all_tick_mark_size(pt(3.0))
        .draw()?;
    Ok(())
}

/// The caption parts joined with " · ", wrapped to `width` pixels (two lines at most; the
/// second takes what is left).
fn caption_lines(parts: &[String], width: f64, size_pt: f64) -> Vec<String> {
    let em = (size_pt * PX_PER_PT) as f32;
    let mut lines: Vec<String> = Vec::new();
    for part in parts {
        let full = lines.len() == 2;
        match lines.last_mut() {
            Some(line)
                if full
                    || f64::from(canvas::layout(&format!("{line} · {part}"), em).width)
                        <= width =>
            {
                line.push_str(" · ");
                line.push_str(part);
            }
            _ => lines.push(part.clone()),
        }
    }
    lines
}

fn draw_caption<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    parts: &[String],
    width: u32,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let size = 7.0;
    let left = pt(10.0);
    let lines = caption_lines(parts, f64::from(width) - 2.0 * f64::from(left), size);
    let style = font(size).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Top));
    for (i, line) in lines.iter().enumerate() {
        area.draw(&Text::new(
            line.clone(),
            (left, pt(3.0) + i as i32 * pt(size * 1.3)),
            style.clone(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_as_documented() {
        assert_eq!(size_inches(2), (5.5, 3.75));
        assert_eq!(size_pixels(2), (1650, 1125));
        assert_eq!(size_pixels(3), (4200, 1125), "three pairs in a row");
        assert_eq!(size_pixels(4), (4200, 2145), "six pairs in two rows");
        assert_eq!(pairs(3), vec![(0, 1), (0, 2), (1, 2)]);
    }

    #[test]
    fn captions_wrap_at_separators() {
        let parts: Vec<String> =
            ["model m.gguf", "recipe demo.toml", "reverse-kl", "β = 1"].map(String::from).into();
        let one = caption_lines(&parts, 1e6, 7.0);
        assert_eq!(one, vec!["model m.gguf · recipe demo.toml · reverse-kl · β = 1".to_string()]);
        let narrow = caption_lines(&parts, 10.0, 7.0);
        assert_eq!(narrow.len(), 2, "two lines at most: {narrow:?}");
        assert_eq!(narrow[0], "model m.gguf");
    }
}
