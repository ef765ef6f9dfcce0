//! The MOD distribution over a set of tokens, in f64, for every divergence.
//!
//! Inputs are normalised log-probabilities: `lp_ref[v]` of the reference and `lp[i·n + v]` of
//! expert i (n tokens, the experts one after another), for the tokens v of the set, with
//! weights `w` (on the simplex for every divergence but reverse KL). Outputs are
//! log-probabilities over the same tokens. A [`Scratch`] carries the working buffers from
//! call to call, so that a decoding step allocates nothing.
//!
//! * [`eq6_log_scores`]: log(π_ref(v)·h(u(v))) at Z = 0, whose argmax is the paper's greedy
//!   choice (eq. 6).
//! * [`mod_log_probs`]: the normalised p(v) = π_ref(v)·h(u(v) − Z), Z the unique root of
//!   Σ_v p(v) = 1, found by a bracketed, safeguarded Newton iteration in log space.
//!
//! **Pruning bound.** Before the last Newton steps the root is bracketed; for a pole
//! divergence Z = −c_min + e^s with s ≥ s_lo, so each token's probability at the root is at
//! most π_ref(v)·H(c(v) − c_min + e^(s_lo)) (H decreases); for Jeffreys Z ≥ Z_lo gives
//! p(v) ≤ π_ref(v)/ω(1 − u(v) + Z_lo). Tokens whose bound is below [`PRUNE_MASS`]/n (n the
//! number of tokens) are dropped before the final solve: together they hold at most
//! [`PRUNE_MASS`] of the exact distribution. They get log-probability −∞.

use crate::pipeline::divergence::{log_expm1, log_wright_omega, Divergence};

/// Total probability that pruning may drop.
pub const PRUNE_MASS: f64 = 1e-9;

/// How the normaliser was found (for tests and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Solve {
    /// The normaliser Z.
    pub z: f64,
    /// Newton/bisection iterations.
    pub iterations: usize,
    /// Tokens dropped by the pruning bound.
    pub pruned: usize,
}

/// Working buffers of the solvers, reused from call to call.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    values: Vec<f64>,
    ratios: Vec<f64>,
    gaps: Vec<f64>,
    active: Vec<usize>,
    terms: Vec<f64>,
    slopes: Vec<f64>,
}

fn lse(x: &[f64]) -> f64 {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Per-token quantity the divergence works with: the log gap log c(v) to the pole, or the
/// score u(v) where h has no pole (reverse KL's is its closed-form log-score).
fn token_values(div: Divergence, w: &[f64], lp_ref: &[f64], lp: &[f64], scratch: &mut Scratch) {
    let n = lp_ref.len();
    assert_eq!(lp.len(), w.len() * n, "one log-probability per expert and token");
    let s: f64 = w.iter().sum();
    let Scratch { values, ratios: t, .. } = scratch;
    values.clear();
    for v in 0..n {
        let expert = |i: usize| lp[i * n + v];
        values.push(match div {
            Divergence::ReverseKl => {
                (1.0 - s) * lp_ref[v]
                    + w.iter().enumerate().map(|(i, wi)| wi * expert(i)).sum::<f64>()
            }
            _ => {
                // Log-ratios t_i = lp_i(v) − lp_ref(v).
                t.clear();
                t.extend((0..w.len()).map(|i| expert(i) - lp_ref[v]));
                if div == Divergence::Jeffreys {
                    div.score(w, t)
                } else {
                    div.log_gap(w, t)
                }
            }
        });
    }
}

/// log(π_ref(v)·h(u(v))) for each token: eq. 6's greedy scores (Z = 0).
pub fn eq6_log_scores(
    div: Divergence,
    w: &[f64],
    lp_ref: &[f64],
    lp: &[f64],
    out: &mut Vec<f64>,
    scratch: &mut Scratch,
) {
    token_values(div, w, lp_ref, lp, scratch);
    let vals = &scratch.values;
    out.clear();
    out.extend(vals.iter().zip(lp_ref).map(|(&x, &a)| match div {
        Divergence::ReverseKl => x,
        Divergence::Jeffreys => a - log_wright_omega(1.0 - x),
        _ => a + div.log_h_log_gap(x),
    }));
}

/// The exact MOD log-probabilities over the given tokens (see the module documentation).
pub fn mod_log_probs(
    div: Divergence,
    w: &[f64],
    lp_ref: &[f64],
    lp: &[f64],
    out: &mut Vec<f64>,
    scratch: &mut Scratch,
) -> Solve {
    token_values(div, w, lp_ref, lp, scratch);
    out.clear();
    match div {
        Divergence::ReverseKl => {
            let vals = &scratch.values;
            let z = lse(vals);
            out.extend(vals.iter().map(|x| x - z));
            Solve { z, iterations: 0, pruned: 0 }
        }
        Divergence::Jeffreys => solve_jeffreys(lp_ref, out, scratch),
        _ => solve_pole(div, lp_ref, out, scratch),
    }
}

/// A decreasing function of one variable, bracketed and solved for F(x) = 0.
struct Root {
    lo: f64,
    hi: f64,
    iterations: usize,
}

impl Root {
    /// Safeguarded Newton: a step that leaves the bracket is replaced by bisection.
    /// `f` returns (F(x), F′(x)).
    fn solve(&mut self, mut x: f64, f: &mut dyn FnMut(f64) -> (f64, f64)) -> f64 {
        for _ in 0..200 {
            self.iterations += 1;
            let (fx, dfx) = f(x);
            if fx.abs() < 1e-14 {
                return x;
            }
            if fx > 0.0 {
                self.lo = x;
            } else {
                self.hi = x;
            }
            if self.hi - self.lo <= 1e-15 * x.abs().max(1.0) {
                return x;
            }
            let newton = x - fx / dfx;
            x = if newton.is_finite() && newton > self.lo && newton < self.hi {
                newton
            } else {
                0.5 * (self.lo + self.hi)
            };
        }
        x
    }
}

/// log Σ exp(x) and the softmax-weighted mean of `d` under it, together.
fn lse_and_mean(x: &[f64], d: &[f64]) -> (f64, f64) {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::INFINITY {
        return (m, f64::NEG_INFINITY);
    }
    let (mut s, mut sd) = (0.0, 0.0);
    for (xi, di) in x.iter().zip(d) {
        let e = (xi - m).exp();
        if e > 0.0 {
            s += e;
            sd += e * di;
        }
    }
    (m + s.ln(), sd / s)
}

/// Pole divergences: Z = −c_min + e^s, each token's gap c(v) + Z = (c(v) − c_min) + e^s.
/// The log gaps log c(v) are in `scratch.values`. Everything is done with logarithms of the
/// gaps: with a large α they span more than f64's range (c(v) = Σ_i w_i·e^(−α·t_i(v))/α).
fn solve_pole(div: Divergence, lp_ref: &[f64], out: &mut Vec<f64>, scratch: &mut Scratch) -> Solve {
    let n = lp_ref.len();
    let Scratch { values: log_c, gaps: log_d, active, terms, slopes, .. } = scratch;
    let lc_min = log_c.iter().copied().fold(f64::INFINITY, f64::min);
    // log d(v) = log(c(v) − c_min), −∞ for the token(s) nearest the pole.
    log_d.clear();
    log_d.extend(log_c.iter().map(|&lc| {
        if lc == lc_min {
            f64::NEG_INFINITY
        } else {
            lc_min + log_expm1(lc - lc_min)
        }
    }));
    let log_d = &*log_d;
    // log(d(v) + e^s).
    let log_gap = |v: usize, s: f64| log_add_exp(log_d[v], s);
    active.clear();
    active.extend(0..n);
    let eval = |s: f64, active: &[usize], terms: &mut Vec<f64>, slopes: &mut Vec<f64>| {
        terms.clear();
        slopes.clear();
        for &v in active {
            let lg = log_gap(v, s);
            terms.push(lp_ref[v] + div.log_h_log_gap(lg));
            // d/ds log H(gap) = γ·(log H)'(γ) · e^s/γ.
            slopes.push(div.gap_slope(lg) * (s - lg).exp());
        }
        lse_and_mean(terms, slopes)
    };
    // Z = 0 (s = log c_min) is an upper bracket on the full vocabulary (h of a convex
    // combination is at most the arithmetic mean); expand upward if a subset says otherwise.
    let start = if lc_min.is_finite() { lc_min } else { 0.0 };
    let (lo, hi) = bracket(start, 1e4, |s| eval(s, active, terms, slopes).0);
    // Pruning: p(v) ≤ π_ref(v)·H(d(v) + e^lo) at any root in the bracket.
    let bar = (PRUNE_MASS / n as f64).ln();
    active.retain(|&v| lp_ref[v] + div.log_h_log_gap(log_gap(v, lo)) >= bar);
    let pruned = n - active.len();
    let mut root = Root { lo, hi, iterations: 0 };
    let s = root.solve(0.5 * (lo + hi), &mut |s| eval(s, active, terms, slopes));
    out.clear();
    out.resize(n, f64::NEG_INFINITY);
    for &v in active.iter() {
        out[v] = lp_ref[v] + div.log_h_log_gap(log_gap(v, s));
    }
    Solve { z: s.exp() - lc_min.exp(), iterations: root.iterations, pruned }
}

/// log(e^a + e^b), exact for infinite arguments.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// A bracket [lo, hi] around the root of the decreasing `f`: hi climbs from `start` until
/// f(hi) ≤ 0, then lo descends from hi − 1 until f(lo) ≥ 0, each with doubling steps and
/// stopping at ±`limit`.
fn bracket(start: f64, limit: f64, mut f: impl FnMut(f64) -> f64) -> (f64, f64) {
    let mut hi = start;
    let mut step = 1.0;
    while f(hi) > 0.0 && hi < limit {
        hi += step;
        step *= 2.0;
    }
    let mut lo = hi - 1.0;
    step = 1.0;
    while f(lo) < 0.0 && lo > -limit {
        lo -= step;
        step *= 2.0;
    }
    (lo, hi)
}

/// Jeffreys: p(v) = π_ref(v)/ω(1 − u(v) + Z); Z is bracketed directly. The scores u(v) are
/// in `scratch.values`.
fn solve_jeffreys(lp_ref: &[f64], out: &mut Vec<f64>, scratch: &mut Scratch) -> Solve {
    let n = lp_ref.len();
    let Scratch { values: u, active, terms, slopes, .. } = scratch;
    let u = &*u;
    active.clear();
    active.extend(0..n);
    let eval = |z: f64, active: &[usize], terms: &mut Vec<f64>, slopes: &mut Vec<f64>| {
        terms.clear();
        slopes.clear();
        for &v in active {
            let l = log_wright_omega(1.0 - u[v] + z);
            terms.push(lp_ref[v] - l);
            slopes.push(-1.0 / (1.0 + l.exp()));
        }
        lse_and_mean(terms, slopes)
    };
    let (lo, hi) = bracket(0.0, 1e300, |z| eval(z, active, terms, slopes).0);
    let bar = (PRUNE_MASS / n as f64).ln();
    active.retain(|&v| lp_ref[v] - log_wright_omega(1.0 - u[v] + lo) >= bar);
    let pruned = n - active.len();
    let mut root = Root { lo, hi, iterations: 0 };
    let z = root.solve(0.5 * (lo + hi), &mut |z| eval(z, active, terms, slopes));
    out.clear();
    out.resize(n, f64::NEG_INFINITY);
    for &v in active.iter() {
        out[v] = lp_ref[v] - log_wright_omega(1.0 - u[v] + z);
    }
    Solve { z, iterations: root.iterations, pruned }
}
