//! The two [`Surface`]s a figure is drawn on: an SVG document (text as glyph outlines,
//! each glyph defined once) whose physical size is given in inches, and an anti-aliased
//! raster written as a PNG that records its resolution (pHYs).

use super::canvas::{Affine, Seg, Surface};
use plotters_backend::BackendColor;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// A number for SVG: at most two decimals, no trailing zeros.
fn num(x: f32) -> String {
    let s = format!("{:.2}", x);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

fn path_data(path: &[Seg]) -> String {
    let mut d = String::new();
    for s in path {
        let _ = match *s {
            Seg::Move(x, y) => write!(d, "M{} {}", num(x), num(y)),
            Seg::Line(x, y) => write!(d, "L{} {}", num(x), num(y)),
            Seg::Quad(a, b, x, y) => write!(d, "Q{} {} {} {}", num(a), num(b), num(x), num(y)),
            Seg::Cubic(a, b, c, e, x, y) => {
                write!(d, "C{} {} {} {} {} {}", num(a), num(b), num(c), num(e), num(x), num(y))
            }
            Seg::Close => write!(d, "Z"),
        };
    }
    d
}

fn rgb(c: BackendColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.rgb.0, c.rgb.1, c.rgb.2)
}

/// `name="#rrggbb"`, and `name-opacity` when the colour is not opaque.
fn paint(name: &str, c: BackendColor) -> String {
    if c.alpha >= 1.0 {
        format!("{name}=\"{}\"", rgb(c))
    } else {
        format!("{name}=\"{}\" {name}-opacity=\"{}\"", rgb(c), num(c.alpha as f32))
    }
}

/// An SVG document of `size` units shown at `size / dpi` inches.
pub struct Svg {
    path: PathBuf,
    size: (u32, u32),
    dpi: f64,
    body: String,
    glyphs: BTreeMap<u16, String>,
}

impl Svg {
    pub fn new(path: PathBuf, size: (u32, u32), dpi: f64) -> Self {
        Self { path, size, dpi, body: String::new(), glyphs: BTreeMap::new() }
    }

    /// The whole document.
    pub fn document(&self) -> String {
        let (w, h) = self.size;
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" xmlns:xlink=\"http://www.w3.org/1999/xlink\" version=\"1.1\" width=\"{}in\" height=\"{}in\" viewBox=\"0 0 {w} {h}\">\n",
            w as f64 / self.dpi,
            h as f64 / self.dpi
        );
        out.push_str("<defs>\n");
        for (id, d) in &self.glyphs {
            let _ = writeln!(out, "<path id=\"g{id}\" d=\"{d}\"/>");
        }
        out.push_str("</defs>\n");
        out.push_str(&self.body);
        out.push_str("</svg>\n");
        out
    }
}

impl Surface for Svg {
    fn fill(&mut self, path: &[Seg], color: BackendColor) {
        let _ = writeln!(self.body, "<path d=\"{}\" {}/>", path_data(path), paint("fill", color));
    }

    fn stroke(&mut self, path: &[Seg], color: BackendColor, width: f32) {
        let _ = writeln!(
            self.body,
            "<path d=\"{}\" fill=\"none\" {} stroke-width=\"{}\" stroke-linejoin=\"round\"/>",
            path_data(path),
            paint("stroke", color),
            num(width)
        );
    }

    fn circle(&mut self, c: (f32, f32), r: f32, color: BackendColor, stroke: Option<f32>) {
        let style = match stroke {
            None => paint("fill", color),
            Some(w) => {
                format!("fill=\"none\" {} stroke-width=\"{}\"", paint("stroke", color), num(w))
            }
        };
        let _ = writeln!(
            self.body,
            "<circle cx=\"{}\" cy=\"{}\" r=\"{}\" {style}/>",
            num(c.0),
            num(c.1),
            num(r)
        );
    }

    fn glyph(&mut self, id: u16, outline: &[Seg], m: Affine, color: BackendColor) {
        self.glyphs.entry(id).or_insert_with(|| path_data(outline));
        let matrix = [m.a, m.b, m.c, m.d, m.e, m.f]
            .map(|x| format!("{x:.5}").trim_end_matches('0').trim_end_matches('.').to_string());
        let _ = writeln!(
            self.body,
            "<use xlink:href=\"#g{id}\" transform=\"matrix({})\" {}/>",
            matrix.join(" "),
            paint("fill", color)
        );
    }

    fn finish(&mut self) -> std::io::Result<()> {
        std::fs::write(&self.path, self.document())
    }
}

/// A raster of `size` pixels, white to start with, written as a PNG of `dpi` dots per inch.
pub struct Raster {
    path: PathBuf,
    pixmap: tiny_skia::Pixmap,
    dpi: f64,
    glyphs: BTreeMap<u16, Option<tiny_skia::Path>>,
}

fn skia_path(path: &[Seg]) -> Option<tiny_skia::Path> {
    let mut b = tiny_skia::PathBuilder::new();
    for s in path {
        match *s {
            Seg::Move(x, y) => b.move_to(x, y),
            Seg::Line(x, y) => b.line_to(x, y),
            Seg::Quad(a, c, x, y) => b.quad_to(a, c, x, y),
            Seg::Cubic(a, c, d, e, x, y) => b.cubic_to(a, c, d, e, x, y),
            Seg::Close => b.close(),
        }
    }
    b.finish()
}

fn skia_paint(c: BackendColor) -> tiny_skia::Paint<'static> {
    let mut p = tiny_skia::Paint::default();
    let a = (c.alpha.clamp(0.0, 1.0) * 255.0).round() as u8;
    p.set_color_rgba8(c.rgb.0, c.rgb.1, c.rgb.2, a);
    p.anti_alias = true;
    p
}

impl Raster {
    pub fn new(path: PathBuf, size: (u32, u32), dpi: f64) -> std::io::Result<Self> {
        let mut pixmap = tiny_skia::Pixmap::new(size.0, size.1).ok_or_else(|| {
            std::io::Error::other(format!("cannot make a {}×{} image", size.0, size.1))
        })?;
        pixmap.fill(tiny_skia::Color::WHITE);
        Ok(Self { path, pixmap, dpi, glyphs: BTreeMap::new() })
    }

    /// The image as 8-bit RGB rows, composited over white.
    pub fn rgb(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pixmap.data().len() / 4 * 3);
        for px in self.pixmap.data().chunks_exact(4) {
            // Premultiplied colour over white: c + (1 − α)·255.
            let rest = 255 - px[3];
            out.extend([px[0] + rest, px[1] + rest, px[2] + rest]);
        }
        out
    }

    /// The PNG file's bytes.
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.pixmap.width(), self.pixmap.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::High);
        let per_metre = (self.dpi / 0.0254).round() as u32;
        encoder.set_pixel_dims(Some(png::PixelDimensions {
            xppu: per_metre,
            yppu: per_metre,
            unit: png::Unit::Meter,
        }));
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer.write_image_data(&self.rgb()).map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)?;
        Ok(bytes)
    }
}

impl Surface for Raster {
    fn fill(&mut self, path: &[Seg], color: BackendColor) {
        if let Some(p) = skia_path(path) {
            let paint = skia_paint(color);
            let identity = tiny_skia::Transform::identity();
            self.pixmap.fill_path(&p, &paint, tiny_skia::FillRule::Winding, identity, None);
        }
    }

    fn stroke(&mut self, path: &[Seg], color: BackendColor, width: f32) {
        if let Some(p) = skia_path(path) {
            let stroke = tiny_skia::Stroke {
                width,
                line_join: tiny_skia::LineJoin::Round,
                ..Default::default()
            };
            let paint = skia_paint(color);
            self.pixmap.stroke_path(&p, &paint, &stroke, tiny_skia::Transform::identity(), None);
        }
    }

    fn circle(&mut self, c: (f32, f32), r: f32, color: BackendColor, stroke: Option<f32>) {
        let Some(p) = tiny_skia::PathBuilder::from_circle(c.0, c.1, r.max(0.1)) else { return };
        let paint = skia_paint(color);
        let identity = tiny_skia::Transform::identity();
        match stroke {
            None => self.pixmap.fill_path(&p, &paint, tiny_skia::FillRule::Winding, identity, None),
            Some(width) => {
                let stroke = tiny_skia::Stroke { width, ..Default::default() };
                self.pixmap.stroke_path(&p, &paint, &stroke, identity, None)
            }
        }
    }

    fn glyph(&mut self, id: u16, outline: &[Seg], m: Affine, color: BackendColor) {
        let path = self.glyphs.entry(id).or_insert_with(|| skia_path(outline));
        if let Some(p) = path {
            let t = tiny_skia::Transform::from_row(m.a, m.b, m.c, m.d, m.e, m.f);
            let paint = skia_paint(color);
            self.pixmap.fill_path(p, &paint, tiny_skia::FillRule::Winding, t, None);
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        std::fs::write(&self.path, self.encode()?)
    }
}
