//! A plotters drawing backend for print figures. Every shape plotters draws becomes a
//! vector path handed to a [`Surface`] — an SVG document or an anti-aliased raster — and
//! text is laid out with DejaVu Sans, compiled into the binary, and drawn as the font's
//! glyph outlines: neither output depends on fonts installed on any machine.
//!
//! Text sizes are the em size in pixels (a 9 pt font at 300 dpi is 37.5 px).

use ab_glyph::{Font, FontRef, GlyphId, OutlineCurve, PxScale, ScaleFont};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
    FontTransform,
};
use std::collections::HashMap;
use std::sync::OnceLock;

/// One step of a path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seg {
    Move(f32, f32),
    Line(f32, f32),
    /// Quadratic Bézier: control point, end point.
    Quad(f32, f32, f32, f32),
    /// Cubic Bézier: two control points, end point.
    Cubic(f32, f32, f32, f32, f32, f32),
    Close,
}

/// An affine map (x, y) ↦ (a·x + c·y + e, b·x + d·y + f), as SVG's `matrix(a b c d e f)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub d: f32,
    pub e: f32,
    pub f: f32,
}

impl Affine {
    pub fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (self.a * x + self.c * y + self.e, self.b * x + self.d * y + self.f)
    }
}

/// Where a figure's shapes go.
pub trait Surface {
    fn fill(&mut self, path: &[Seg], color: BackendColor);
    /// Strokes `path` with a line `width` pixels wide (butt caps, round joins).
    fn stroke(&mut self, path: &[Seg], color: BackendColor, width: f32);
    /// A circle, filled, or stroked `stroke` pixels wide.
    fn circle(&mut self, center: (f32, f32), radius: f32, color: BackendColor, stroke: Option<f32>);
    /// Fills glyph `id` of the font, whose outline is `outline` in font units (y up),
    /// placed by `placement`.
    fn glyph(&mut self, id: u16, outline: &[Seg], placement: Affine, color: BackendColor);
    /// Writes the result.
    fn finish(&mut self) -> std::io::Result<()>;
}

/// The embedded font.
pub fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(dejavu::sans::regular()).expect("the embedded font parses")
    })
}

/// A line of text laid out at an em size: each glyph with its pen position, in pixels.
#[derive(Debug, Clone)]
pub struct Layout {
    pub glyphs: Vec<(GlyphId, f32)>,
    pub width: f32,
    /// Above and below the baseline (descent is negative).
    pub ascent: f32,
    pub descent: f32,
    /// Pixels per font unit.
    pub scale: f32,
}

/// Lays out `text` in the embedded font at `em` pixels per em (advances and kerning).
pub fn layout(text: &str, em: f32) -> Layout {
    let f = font();
    let units = f.units_per_em().unwrap_or(1000.0);
    let height = f.ascent_unscaled() - f.descent_unscaled();
    let scaled = f.as_scaled(PxScale::from(em * height / units));
    let (mut x, mut prev, mut glyphs) = (0.0f32, None, Vec::new());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            x += scaled.kern(p, id);
        }
        glyphs.push((id, x));
        x += scaled.h_advance(id);
        prev = Some(id);
    }
    Layout {
        glyphs,
        width: x,
        ascent: scaled.ascent(),
        descent: scaled.descent(),
        scale: scaled.h_scale_factor(),
    }
}

/// A glyph's outline in font units, as closed subpaths.
fn outline(id: GlyphId) -> Vec<Seg> {
    let Some(o) = font().outline(id) else { return Vec::new() };
    let mut path = Vec::new();
    let mut at: Option<(f32, f32)> = None;
    for curve in &o.curves {
        let (start, end) = match curve {
            OutlineCurve::Line(a, b)
            | OutlineCurve::Quad(a, _, b)
            | OutlineCurve::Cubic(a, _, _, b) => (*a, *b),
        };
        if at.is_none_or(|(x, y)| (x - start.x).abs() > 1e-3 || (y - start.y).abs() > 1e-3) {
            if at.is_some() {
                path.push(Seg::Close);
            }
            path.push(Seg::Move(start.x, start.y));
        }
        path.push(match curve {
            OutlineCurve::Line(_, b) => Seg::Line(b.x, b.y),
            OutlineCurve::Quad(_, c, b) => Seg::Quad(c.x, c.y, b.x, b.y),
            OutlineCurve::Cubic(_, c1, c2, b) => Seg::Cubic(c1.x, c1.y, c2.x, c2.y, b.x, b.y),
        });
        at = Some((end.x, end.y));
    }
    if at.is_some() {
        path.push(Seg::Close);
    }
    path
}

/// A plotters backend of `size` pixels drawing onto a [`Surface`].
pub struct Canvas<S: Surface> {
    size: (u32, u32),
    surface: S,
    outlines: HashMap<GlyphId, Vec<Seg>>,
}

impl<S: Surface> Canvas<S> {
    pub fn new(size: (u32, u32), surface: S) -> Self {
        Self { size, surface, outlines: HashMap::new() }
    }
}

type DrawResult = Result<(), DrawingErrorKind<std::io::Error>>;

/// The centre of pixel `c`: lines through centres stay sharp.
fn centre(c: BackendCoord) -> (f32, f32) {
    (c.0 as f32 + 0.5, c.1 as f32 + 0.5)
}

fn polyline(points: impl IntoIterator<Item = BackendCoord>, close: bool) -> Vec<Seg> {
    let mut path: Vec<Seg> = points
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (x, y) = centre(c);
            if i == 0 {
                Seg::Move(x, y)
            } else {
                Seg::Line(x, y)
            }
        })
        .collect();
    if close && !path.is_empty() {
        path.push(Seg::Close);
    }
    path
}

impl<S: Surface> DrawingBackend for Canvas<S> {
    type ErrorType = std::io::Error;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }

    fn ensure_prepared(&mut self) -> DrawResult {
        Ok(())
    }

    fn present(&mut self) -> DrawResult {
        self.surface.finish().map_err(DrawingErrorKind::DrawingError)
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> DrawResult {
        self.draw_rect(point, point, &color, true)
    }

    fn draw_line<St: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &St,
    ) -> DrawResult {
        self.draw_path([from, to], style)
    }

    fn draw_rect<St: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &St,
        fill: bool,
    ) -> DrawResult {
        let (x0, y0) = (upper_left.0 as f32, upper_left.1 as f32);
        let (x1, y1) = (bottom_right.0 as f32 + 1.0, bottom_right.1 as f32 + 1.0);
        if fill {
            let path = [
                Seg::Move(x0, y0),
                Seg::Line(x1, y0),
                Seg::Line(x1, y1),
                Seg::Line(x0, y1),
                Seg::Close,
            ];
            self.surface.fill(&path, style.color());
        } else {
            let corners = [
                upper_left,
                (bottom_right.0, upper_left.1),
                bottom_right,
                (upper_left.0, bottom_right.1),
            ];
            self.surface.stroke(
                &polyline(corners, true),
                style.color(),
                style.stroke_width().max(1) as f32,
            );
        }
        Ok(())
    }

    fn draw_path<St: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &St,
    ) -> DrawResult {
        let path = polyline(path, false);
        if path.len() > 1 && style.color().alpha > 0.0 {
            self.surface.stroke(&path, style.color(), style.stroke_width().max(1) as f32);
        }
        Ok(())
    }

    fn draw_circle<St: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &St,
        fill: bool,
    ) -> DrawResult {
        if style.color().alpha > 0.0 {
            let stroke = (!fill).then(|| style.stroke_width().max(1) as f32);
            self.surface.circle(centre(center), radius as f32, style.color(), stroke);
        }
        Ok(())
    }

    fn fill_polygon<St: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &St,
    ) -> DrawResult {
        let path = polyline(vert, true);
        if path.len() > 2 && style.color().alpha > 0.0 {
            self.surface.fill(&path, style.color());
        }
        Ok(())
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> DrawResult {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let line = layout(text, style.size() as f32);
        let height = line.ascent - line.descent;
        // The text's box, anchored at `pos`, before rotation: its top-left corner, then the
        // baseline below it.
        let ox = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Center => -line.width / 2.0,
            HPos::Right => -line.width,
        };
        let oy = match style.anchor().v_pos {
            VPos::Top => 0.0,
            VPos::Center => -height / 2.0,
            VPos::Bottom => -height,
        } + line.ascent;
        // Rotation (x, y) ↦ (r0·x + r1·y, r2·x + r3·y), as plotters turns text.
        let [r0, r1, r2, r3] = match style.transform() {
            FontTransform::None => [1.0, 0.0, 0.0, 1.0],
            FontTransform::Rotate90 => [0.0, -1.0, 1.0, 0.0],
            FontTransform::Rotate180 => [-1.0, 0.0, 0.0, -1.0],
            FontTransform::Rotate270 => [0.0, 1.0, -1.0, 0.0],
        };
        let (px, py) = (pos.0 as f32, pos.1 as f32);
        let s = line.scale;
        for &(id, x) in &line.glyphs {
            let outline = self.outlines.entry(id).or_insert_with(|| outline(id));
            if outline.is_empty() {
                continue;
            }
            // Font units (X, Y up) ↦ (s·X + ox + x, −s·Y + oy), rotated, moved to `pos`.
            let (lx, ly) = (ox + x, oy);
            let placement = Affine {
                a: r0 * s,
                b: r2 * s,
                c: -r1 * s,
                d: -r3 * s,
                e: r0 * lx + r1 * ly + px,
                f: r2 * lx + r3 * ly + py,
            };
            self.surface.glyph(id.0, outline, placement, color);
        }
        Ok(())
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let line = layout(text, style.size() as f32);
        Ok((line.width.ceil() as u32, (line.ascent - line.descent).ceil() as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_lays_out_text() {
        let em = 100.0;
        let l = layout("Pareto β ±", em);
        assert_eq!(l.glyphs.len(), 10);
        // DejaVu Sans: 2048 units per em, ascent 1901, descent −483.
        assert!((l.ascent - em * 1901.0 / 2048.0).abs() < 0.5, "{}", l.ascent);
        assert!((l.descent + em * 483.0 / 2048.0).abs() < 0.5, "{}", l.descent);
        // Every character has a glyph of its own (none is the missing-glyph box, id 0).
        assert!(l.glyphs.iter().all(|(id, _)| id.0 != 0));
        assert!(l.width > 3.0 * em && l.width < 8.0 * em, "{}", l.width);
        // Wider text is wider; advances grow left to right.
        assert!(layout("WWWW", em).width > layout("iiii", em).width);
        assert!(l.glyphs.windows(2).all(|w| w[1].1 > w[0].1));
    }

    #[test]
    fn glyph_outlines_are_closed_subpaths() {
        let o = outline(font().glyph_id('o'));
        assert_eq!(
            o.iter().filter(|s| matches!(s, Seg::Move(..))).count(),
            2,
            "outer and inner contour"
        );
        assert_eq!(o.iter().filter(|s| matches!(s, Seg::Close)).count(), 2);
        assert!(outline(font().glyph_id(' ')).is_empty());
    }

    #[test]
    fn text_placement_rotates_as_plotters_does() {
        // A map from font units to pixels at 1 px per unit, for each rotation: the glyph's
        // advance direction (1, 0) in font units goes to the rotated x axis.
        struct Record(Vec<Affine>);
        impl Surface for Record {
            fn fill(&mut self, _: &[Seg], _: BackendColor) {}
            fn stroke(&mut self, _: &[Seg], _: BackendColor, _: f32) {}
            fn circle(&mut self, _: (f32, f32), _: f32, _: BackendColor, _: Option<f32>) {}
            fn glyph(&mut self, _: u16, _: &[Seg], m: Affine, _: BackendColor) {
                self.0.push(m);
            }
            fn finish(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut canvas = Canvas::new((100, 100), Record(Vec::new()));
        let font = plotters::style::FontDesc::new(
            plotters::style::FontFamily::SansSerif,
            20.0,
            plotters::style::FontStyle::Normal,
        );
        for (name, t, dir) in [
            ("none", FontTransform::None, (1.0, 0.0)),
            ("90", FontTransform::Rotate90, (0.0, 1.0)),
            ("270", FontTransform::Rotate270, (0.0, -1.0)),
        ] {
            let style = plotters::style::TextStyle::from(font.clone()).transform(t);
            canvas.draw_text("H", &style, (50, 50)).unwrap();
            let m = canvas.surface.0.pop().unwrap();
            let (x0, y0) = m.apply(0.0, 0.0);
            let (x1, y1) = m.apply(1000.0, 0.0);
            let n = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
            assert!(((x1 - x0) / n - dir.0).abs() < 1e-5 && ((y1 - y0) / n - dir.1).abs() < 1e-5);
            // Font units' y axis points up the glyph: perpendicular, turned left of the advance.
            let (ux, uy) = m.apply(0.0, 1000.0);
            let (ux, uy) = ((ux - x0) / n, (uy - y0) / n);
            assert!((ux - dir.1).abs() < 1e-5 && (uy + dir.0).abs() < 1e-5, "{name}");
        }
    }
}
