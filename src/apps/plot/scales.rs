//! The scales of a figure: the colour of a weight vector (viridis, and which weight it
//! shows), axis ranges with a margin, and round tick steps with their labels.

use crate::apps::sweep::stats::Row;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;

/// The colour of a point whose weights give no share of the pair (see [`Shade`]).
pub const NO_SHARE: RGBColor = RGBColor(160, 160, 160);

/// The colour scale: viridis, its palest tenth left out so that rings stay visible.
pub fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.5 };
    ViridisRGB.get_color((0.9 * t) as f32)
}

/// How a point's colour is chosen (the conventions are in the documentation of `plot`).
pub enum Shade {
    /// Two experts: the first expert's weight, from `lo` to `hi`.
    First { lo: f64, hi: f64 },
    /// Three or more: the x expert's share of the pair's weight.
    Share,
}

impl Shade {
    pub fn of(rows: &[Row], experts: usize) -> Self {
        if experts != 2 {
            return Shade::Share;
        }
        let w = rows.iter().map(|r| r.weights[0]);
        let lo = w.clone().fold(f64::INFINITY, f64::min);
        let hi = w.fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi > lo {
            Shade::First { lo, hi }
        } else {
            let v = if lo.is_finite() { lo } else { 0.5 };
            Shade::First { lo: v - 0.5, hi: v + 0.5 }
        }
    }

    pub fn range(&self) -> (f64, f64) {
        match *self {
            Shade::First { lo, hi } => (lo, hi),
            Shade::Share => (0.0, 1.0),
        }
    }

    pub fn colour(&self, w: &[f64], a: usize, b: usize) -> RGBColor {
        match *self {
            Shade::First { lo, hi } => viridis((w[0] - lo) / (hi - lo)),
            Shade::Share => {
                let (x, y) = (w[a], w[b]);
                if x >= 0.0 && y >= 0.0 && x + y > 0.0 {
                    viridis(x / (x + y))
                } else {
                    NO_SHARE
                }
            }
        }
    }

    pub fn label(&self, experts: &[String]) -> String {
        match self {
            Shade::First { .. } => format!("weight of {}", experts[0]),
            Shade::Share => "w_x / (w_x + w_y)".into(),
        }
    }
}

/// An axis range holding `values` with a margin.
pub fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    let pad = if hi > lo { 0.08 * (hi - lo) } else { (0.05 * lo.abs()).max(0.5) };
    (lo - pad)..(hi + pad)
}

/// Tick positions for an axis: multiples of a step of 1, 2 or 5 × 10^k, the smallest step
/// that gives at most `most` ticks in `r`; and the decimals that step needs.
fn ticks(r: &std::ops::Range<f64>, most: usize) -> (Vec<f64>, usize) {
    let span = r.end - r.start;
    if !(span.is_finite() && span > 0.0) {
        return (vec![r.start], 2);
    }
    let mut k = (span / most as f64).log10().floor() as i32 - 1;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let step = m * 10f64.powi(k);
            let (first, last) = ((r.start / step).ceil() as i64, (r.end / step).floor() as i64);
            if last - first < most as i64 {
                let decimals = (-k).max(0) as usize;
                return ((first..=last).map(|i| i as f64 * step).collect(), decimals);
            }
        }
        k += 1;
    }
}

/// A linear axis over `range` with its ticks at given values.
pub struct Axis {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl Axis {
    pub fn new(range: std::ops::Range<f64>, most: usize) -> (Self, usize) {
        let (ticks, decimals) = ticks(&range, most);
        (Self { range, ticks }, decimals)
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// Tick labels with `decimals` decimals and a true minus sign (never "−0").
pub fn tick_format(decimals: usize) -> impl Fn(&f64) -> String {
    move |v: &f64| {
        let s = format!("{:.*}", decimals, v);
        let zero = s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.');
        if zero {
            s.trim_start_matches('-').to_string()
        } else {
            s.replace('-', "\u{2212}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_steps_inside_the_range() {
        let close = |got: (Vec<f64>, usize), want: &[f64], decimals: usize| {
            assert_eq!(got.1, decimals, "{got:?}");
            assert_eq!(got.0.len(), want.len(), "{got:?}");
            assert!(got.0.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{got:?}");
        };
        // The smallest step of 1, 2 or 5 × 10^k that gives at most `most` ticks.
        close(ticks(&(0.0..1.0), 6), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 1);
        close(ticks(&(0.0..1.0), 11), &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 1);
        close(ticks(&(-13.6..12.1), 7), &[-10.0, -5.0, 0.0, 5.0, 10.0], 0);
        close(ticks(&(-2.4..5.3), 7), &[-2.0, 0.0, 2.0, 4.0], 0);
        close(ticks(&(0.0312..0.0388), 4), &[0.032, 0.034, 0.036, 0.038], 3);
        for (lo, hi) in [(0.0, 1e-7), (-5e5, 3e6), (1.0, 1.0 + 1e-9), (-7.77, -7.1)] {
            let (t, _) = ticks(&(lo..hi), 7);
            assert!((2..=7).contains(&t.len()), "{lo}..{hi}: {t:?}");
            assert!(t.iter().all(|x| (lo..=hi).contains(x)), "{lo}..{hi}: {t:?}");
        }
        let f = tick_format(1);
        assert_eq!(
            (f(&1.5), f(&-2.0), f(&-0.0001)),
            ("1.5".into(), "\u{2212}2.0".into(), "0.0".into())
        );
        assert_eq!(tick_format(0)(&-20.0), "\u{2212}20");
    }

    #[test]
    fn colours_follow_the_weights() {
        let row = |w: Vec<f64>| Row {
            weights: w,
            rewards: vec![Some(0.0); 3],
            rewards_se: vec![None; 3],
            mean_tokens: Some(1.0),
            generations: 1,
            errors: 0,
            pareto: true,
        };
        let two = [row(vec![0.0, 1.0]), row(vec![1.0, 0.0])];
        let s = Shade::of(&two, 2);
        assert_eq!(s.range(), (0.0, 1.0));
        assert_eq!(s.colour(&[0.0, 1.0], 0, 1), viridis(0.0));
        assert_eq!(s.colour(&[1.0, 0.0], 0, 1), viridis(1.0));
        assert_ne!(viridis(0.0), viridis(1.0));
        let three = Shade::of(&[row(vec![0.2, 0.6, 0.2])], 3);
        assert_eq!(three.colour(&[0.2, 0.6, 0.2], 0, 1), viridis(0.25));
        assert_eq!(three.colour(&[0.0, 0.0, 1.0], 0, 1), NO_SHARE);
        assert_eq!(three.colour(&[-0.5, 1.0, 0.5], 0, 1), NO_SHARE);
    }
}
