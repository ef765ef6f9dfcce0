//! The regulariser f that MOD combines under (`docs/mod.md` §1): names, g = f′, h = g⁻¹, the
//! weight rules, and the numerically stable forms the combiner evaluates.
//!
//! Pure Rust, no FFI. Throughout, `t = log(π_i/π_ref)` is a policy's log-ratio to the
//! reference and `u = Σ_i w_i·g(r_i)` a token's score.
//!
//! For the divergences whose h has a pole at `u_max` (forward KL: 0, JSD: log 2, α: 1/A) the
//! combiner never forms u itself: near the pole `u_max − u` cancels catastrophically. It works
//! with the *gap* `c = u_max − u`, computed directly from the log-ratios as a sum of positive
//! terms (weights on the simplex), and with `H(γ) = h(u_max − γ)`:
//!
//! | name | c = u_max − u (S = 1) | H(γ) |
//! |---|---|---|
//! | forward KL | Σ w_i e^(−t_i) | 1/γ |
//! | JSD | Σ w_i softplus(−t_i) | 1/expm1(γ) |
//! | α (A) | (1/A) Σ w_i e^(−A·t_i) | (A·γ)^(−1/A) |
//!
//! Jeffreys has no pole; there `h(u) = 1/ω(1 − u)` with ω the Wright omega function
//! (ω(z) = W0(e^z)), evaluated as `log ω` so that neither e^(1−u) nor ω overflow.

use crate::error::invalid;
use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;

/// The values of A that `alpha:A` accepts. Near 0 the α-divergence tends to reverse KL; past
/// about 20 its terms (π_ref/π_i)^A overflow f64 on a 262k-token vocabulary.
pub const ALPHA_RANGE: (f64, f64) = (1e-6, 20.0);

/// How far from 1 a weight sum may be and still count as 1.
pub const UNIT_SUM_TOLERANCE: f64 = 1e-9;

/// A barrier f-divergence that MOD can combine policies under.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Divergence {
    /// f(x) = x log x. Closed form; any real weights.
    #[default]
    ReverseKl,
    /// f(x) = −log x. S = 1, Z = 0 gives the weighted harmonic mean of the experts.
    ForwardKl,
    /// Jensen–Shannon: f(x) = x log x − (x+1) log((x+1)/2).
    Jsd,
    /// Amari α-divergence with parameter A > 0: g(x) = (1 − x^(−A))/A.
    Alpha(f64),
    /// Jeffreys: f(x) = x log x − log x.
    Jeffreys,
}

impl Divergence {
    /// Every name accepted on the command line, for help texts.
    pub const NAMES: &'static str =
        "reverse-kl, forward-kl, jsd, alpha:A (A from 1e-6 to 20), jeffreys";

    /// The name used on the command line and in recipes.
    pub fn name(self) -> String {
        match self {
            Divergence::ReverseKl => "reverse-kl".into(),
            Divergence::ForwardKl => "forward-kl".into(),
            Divergence::Jsd => "jsd".into(),
            Divergence::Alpha(a) => format!("alpha:{a}"),
            Divergence::Jeffreys => "jeffreys".into(),
        }
    }

    /// Reverse KL is proven for any real weights; the others only on the simplex.
    pub fn needs_simplex(self) -> bool {
        self != Divergence::ReverseKl
    }

    /// The pole of h (the supremum of its domain), if it has one.
    pub fn pole(self) -> Option<f64> {
        match self {
            Divergence::ForwardKl => Some(0.0),
            Divergence::Jsd => Some(std::f64::consts::LN_2),
            Divergence::Alpha(a) => Some(1.0 / a),
            Divergence::ReverseKl | Divergence::Jeffreys => None,
        }
    }

    /// g(x) = f′(x), for x > 0.
    pub fn g(self, x: f64) -> f64 {
        match self {
            Divergence::ReverseKl => x.ln() + 1.0,
            Divergence::ForwardKl => -1.0 / x,
            Divergence::Jsd => (2.0 * x / (1.0 + x)).ln(),
            Divergence::Alpha(a) => (1.0 - x.powf(-a)) / a,
            Divergence::Jeffreys => x.ln() - 1.0 / x + 1.0,
        }
    }

    /// h(u) = g⁻¹(u), on h's domain (u below the pole, where there is one).
    pub fn h(self, u: f64) -> f64 {
        self.log_h(u).exp()
    }

    /// log h(u), evaluated stably; −∞ … +∞ at the domain's edges, NaN past a pole.
    pub fn log_h(self, u: f64) -> f64 {
        match self {
            Divergence::ReverseKl => u - 1.0,
            Divergence::Jeffreys => -log_wright_omega(1.0 - u),
            d => match d.pole() {
                Some(pole) if u < pole => d.log_h_gap(pole - u),
                Some(pole) if u == pole => f64::INFINITY,
                _ => f64::NAN,
            },
        }
    }

    /// For a divergence with a pole: log H(γ) = log h(u_max − γ), γ > 0.
    pub fn log_h_gap(self, gap: f64) -> f64 {
        self.log_h_log_gap(gap.ln())
    }

    /// log H(γ) from log γ, for gaps that f64 cannot hold (below e^−745 or above e^709, as
    /// α-divergences with a large α make them).
    pub fn log_h_log_gap(self, log_gap: f64) -> f64 {
        match self {
            Divergence::ForwardKl => -log_gap,
            // log(e^γ − 1) = log γ + log((e^γ − 1)/γ); the second term is below f64 precision
            // for γ < e^−40.
            Divergence::Jsd if log_gap < -40.0 => -log_gap,
            Divergence::Jsd => -log_expm1(log_gap.exp()),
            Divergence::Alpha(a) => -(a.ln() + log_gap) / a,
            _ => f64::NAN,
        }
    }

    /// γ · d/dγ log H(γ) from log γ (the normaliser's Newton steps, in log space).
    pub fn gap_slope(self, log_gap: f64) -> f64 {
        match self {
            Divergence::ForwardKl => -1.0,
            // −γ/(1 − e^−γ), which tends to −1 as γ → 0.
            Divergence::Jsd if log_gap < -40.0 => -1.0,
            Divergence::Jsd => {
                let gap = log_gap.exp();
                -gap / -(-gap).exp_m1()
            }
            Divergence::Alpha(a) => -1.0 / a,
            _ => f64::NAN,
        }
    }

    /// For a divergence with a pole: log of the gap `c = u_max − u` of a token whose experts
    /// have log-ratios `t[i]` to the reference, with simplex weights `w` (S = 1).
    pub fn log_gap(self, w: &[f64], t: &[f64]) -> f64 {
        let term = |wi: f64, ti: f64| -> f64 {
            match self {
                Divergence::ForwardKl => wi.ln() - ti,
                Divergence::Jsd => wi.ln() + log_softplus(-ti),
                Divergence::Alpha(a) => wi.ln() - a * ti,
                _ => f64::NAN,
            }
        };
        let mut max = f64::NEG_INFINITY;
        for (&wi, &ti) in w.iter().zip(t) {
            if wi > 0.0 {
                max = max.max(term(wi, ti));
            }
        }
        if max == f64::NEG_INFINITY {
            return max;
        }
        let sum: f64 = w
            .iter()
            .zip(t)
            .filter(|(wi, _)| **wi > 0.0)
            .map(|(&wi, &ti)| (term(wi, ti) - max).exp())
            .sum();
        let lse = max + sum.ln();
        match self {
            Divergence::Alpha(a) => lse - a.ln(),
            _ => lse,
        }
    }

    /// The score u = Σ w_i g(r_i) of a token from its log-ratios (used where h has no pole).
    pub fn score(self, w: &[f64], t: &[f64]) -> f64 {
        w.iter()
            .zip(t)
            .map(|(&wi, &ti)| {
                wi * match self {
                    Divergence::ReverseKl => ti + 1.0,
                    Divergence::Jeffreys => ti - (-ti).exp() + 1.0,
                    d => d.g(ti.exp()),
                }
            })
            .sum()
    }

    /// Applies the weight rules: reverse KL takes any finite weights; the others need the
    /// simplex (w ≥ 0, Σ = 1), or, with `normalize`, non-negative weights that are rescaled.
    pub fn check_weights(self, weights: &mut [f64], normalize: bool) -> Result<()> {
        if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
            return Err(invalid("weights", format!("hold {w}, which is not a finite number")));
        }
        if !self.needs_simplex() {
            return Ok(());
        }
        let name = self.name();
        if let Some(w) = weights.iter().find(|w| **w < 0.0) {
            return Err(invalid(
                "weights",
                format!("must be non-negative for {name} (got {w}); only reverse-kl takes negative weights"),
            ));
        }
        let sum: f64 = weights.iter().sum();
        if (sum - 1.0).abs() <= UNIT_SUM_TOLERANCE {
            return Ok(());
        }
        if !normalize {
            return Err(invalid(
                "weights",
                format!(
                    "must sum to 1 for {name} (they sum to {sum}); change them, or set \
                     `normalize_weights` to rescale them"
                ),
            ));
        }
        if sum <= 0.0 {
            return Err(invalid(
                "normalize_weights",
                format!("cannot rescale weights that sum to {sum}; at least one must be positive"),
            ));
        }
        for w in weights.iter_mut() {
            *w /= sum;
        }
        Ok(())
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Divergence {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim().to_ascii_lowercase();
        match name.as_str() {
            "reverse-kl" | "rkl" | "kl" => return Ok(Divergence::ReverseKl),
            "forward-kl" | "fkl" => return Ok(Divergence::ForwardKl),
            "jsd" | "jensen-shannon" => return Ok(Divergence::Jsd),
            "jeffreys" => return Ok(Divergence::Jeffreys),
            "tv" | "total-variation" | "chi2" | "chi-squared" | "chi-square" | "pearson" => bail!(
                "divergence '{name}' is refused: its f is not a barrier function (g(0) is \
                 finite), and for such f any decoding-time combination can be arbitrarily \
                 sub-optimal (Theorem 3 of Shi et al. 2024); use one of {}",
                Divergence::NAMES
            ),
            _ => {}
        }
        if let Some(a) = name.strip_prefix("alpha:").or_else(|| name.strip_prefix("alpha=")) {
            let a: f64 = a.parse().map_err(|_| {
                anyhow::anyhow!("divergence '{name}': A in alpha:A must be a number")
            })?;
            if !(ALPHA_RANGE.0..=ALPHA_RANGE.1).contains(&a) {
                bail!(
                    "divergence '{name}': A in alpha:A must be from {} to {} (beyond, f64 \
                     cannot represent the α-divergence's distribution over a large vocabulary)",
                    ALPHA_RANGE.0,
                    ALPHA_RANGE.1
                );
            }
            return Ok(Divergence::Alpha(a));
        }
        bail!("unknown divergence '{name}'; available: {}", Divergence::NAMES)
    }
}

/// log(e^x − 1) for x > 0, without overflow for large x or cancellation for small x.
pub fn log_expm1(x: f64) -> f64 {
    if x > 40.0 {
        x + (-(-x).exp()).ln_1p()
    } else {
        x.exp_m1().ln()
    }
}

/// log(log(1 + e^x)) = log softplus(x), stable for any x.
pub fn log_softplus(x: f64) -> f64 {
    if x < -37.0 {
        // softplus(x) = e^x (1 − e^x/2 + …); the correction is below f64 precision.
        x
    } else if x > 37.0 {
        // softplus(x) = x + log1p(e^−x).
        (x + (-x).exp()).ln()
    } else {
        x.exp().ln_1p().ln()
    }
}

/// log ω(z), where the Wright omega function ω solves ω + log ω = z (ω(z) = W0(e^z)).
///
/// Solves e^ℓ + ℓ = z for ℓ = log ω by Newton's method from an upper bound: the function is
/// convex and increasing, so the iterates decrease monotonically to the root. Accurate to
/// a few ulps over all finite z (e^z itself may over- or underflow; ℓ never does).
pub fn log_wright_omega(z: f64) -> f64 {
    if z.is_nan() {
        return z;
    }
    if z == f64::INFINITY {
        return f64::INFINITY;
    }
    if z < -700.0 {
        // ω = e^z (1 − e^z + …): ℓ = z to within 1e-304.
        return z;
    }
    let mut l = if z > 1.0 { z.ln() } else { z };
    for _ in 0..100 {
        let e = l.exp();
        let step = (e + l - z) / (e + 1.0);
        l -= step;
        if step.abs() <= 1e-15 * l.abs().max(1.0) {
            break;
        }
    }
    l
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every divergence, α at three values: the set the unit tests run over.
    pub(crate) const ALL: [Divergence; 7] = [
        Divergence::ReverseKl,
        Divergence::ForwardKl,
        Divergence::Jsd,
        Divergence::Alpha(0.5),
        Divergence::Alpha(1.0),
        Divergence::Alpha(2.0),
        Divergence::Jeffreys,
    ];

    #[test]
    fn names_round_trip() {
        for d in ALL {
            assert_eq!(d.name().parse::<Divergence>().unwrap(), d);
        }
        assert_eq!("ALPHA:0.25".parse::<Divergence>().unwrap(), Divergence::Alpha(0.25));
    }

    #[test]
    fn unknown_and_non_barrier_names_are_refused_with_reasons() {
        let e = "hellinger".parse::<Divergence>().unwrap_err().to_string();
        assert!(e.contains("hellinger") && e.contains("reverse-kl"), "{e}");
        for tv in ["tv", "total-variation", "chi2", "chi-squared"] {
            let e = tv.parse::<Divergence>().unwrap_err().to_string();
            assert!(e.contains("barrier") && e.contains("Theorem 3"), "{e}");
        }
        for bad in ["alpha:0", "alpha:-1", "alpha:x", "alpha:inf", "alpha:1e-300", "alpha:10000"] {
            assert!(bad.parse::<Divergence>().is_err(), "{bad}");
        }
    }

    #[test]
    fn h_inverts_g_from_1e_minus_30_to_1e30() {
        for d in ALL {
            let mut x = 1e-30f64;
            while x <= 1e30 {
                let u = d.g(x);
                let back = d.h(u);
                // JSD's g saturates at log 2 for large x: u carries no more than ~1/x of
                // information there, so h(g(x)) can only be checked where g(x) is resolvable.
                let resolvable = match d {
                    Divergence::Jsd => x < 1e9,
                    Divergence::Alpha(a) => x.powf(-a) > 1e-9,
                    _ => true,
                };
                if resolvable {
                    let rel = (back - x).abs() / x;
                    assert!(rel < 1e-6, "{d}: h(g({x:e})) = {back:e}");
                }
                x *= 7.3;
            }
        }
    }

    #[test]
    fn stable_path_round_trips_every_ratio_from_1e_minus_30_to_1e30() {
        // One expert of weight 1: MOD's h(g(r)) must give back r = π_1/π_ref, here evaluated
        // the way the combiner does it (from log r, through the gap or Wright omega), which
        // unlike the textbook g keeps full precision at both ends.
        for d in ALL.into_iter().filter(|d| *d != Divergence::ReverseKl) {
            let mut x = 1e-30f64;
            while x <= 1e30 {
                let t = x.ln();
                let log_back = match d {
                    Divergence::Jeffreys => -log_wright_omega(1.0 - d.score(&[1.0], &[t])),
                    _ => d.log_h_gap(d.log_gap(&[1.0], &[t]).exp()),
                };
                assert!(
                    (log_back - t).abs() < 1e-12 * t.abs().max(1.0),
                    "{d}: ratio {x:e} → {}",
                    log_back.exp()
                );
                x *= 7.3;
            }
        }
    }

    #[test]
    fn gap_forms_equal_the_direct_formulas_where_those_are_accurate() {
        let w = [0.3, 0.7];
        for d in
            [Divergence::ForwardKl, Divergence::Jsd, Divergence::Alpha(0.5), Divergence::Alpha(2.0)]
        {
            for t in [[-3.0, 2.0], [0.0, 0.0], [1.5, -0.5], [-8.0, -9.0]] {
                let u: f64 = w.iter().zip(t).map(|(wi, ti)| wi * d.g(f64::exp(ti))).sum();
                let gap = d.pole().unwrap() - u;
                let got = d.log_gap(&w, &t).exp();
                assert!((got - gap).abs() < 1e-12 * gap.max(1.0), "{d} t={t:?}: {got} vs {gap}");
                assert!((d.log_h_gap(gap) - d.h(u).ln()).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn wright_omega_solves_its_equation_everywhere() {
        for z in [-800.0, -700.0, -50.0, -1.0, 0.0, 0.5, 1.0, 2.0, 10.0, 1e3, 1e10, 1e300] {
            let l = log_wright_omega(z);
            let w = l.exp();
            // ω + log ω = z, checked in a form that does not overflow.
            let resid = if z.abs() < 1e6 { (w + l - z).abs() } else { (w + l - z).abs() / z };
            assert!(resid < 1e-12 * z.abs().max(1.0), "z={z}: ℓ={l}, residual {resid}");
        }
        // W0(1) = Ω = 0.5671432904097838.
        assert!((log_wright_omega(0.0).exp() - 0.567_143_290_409_783_8).abs() < 1e-15);
        // W0(e) = 1.
        assert!(log_wright_omega(1.0).abs() < 1e-15);
    }

    #[test]
    fn stable_helpers_match_naive_forms_in_range() {
        for x in [1e-8, 0.1, 1.0, 10.0, 39.0] {
            assert!((log_expm1(x) - x.exp_m1().ln()).abs() < 1e-12);
        }
        assert!((log_expm1(100.0) - 100.0).abs() < 1e-15);
        for x in [-30.0, -1.0, 0.0, 1.0, 30.0] {
            assert!((log_softplus(x) - x.exp().ln_1p().ln()).abs() < 1e-12);
        }
        assert!((log_softplus(-100.0) - -100.0).abs() < 1e-15);
        assert!((log_softplus(100.0) - 100f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn weight_rules() {
        let mut w = vec![1.5, -0.5];
        assert!(Divergence::ReverseKl.check_weights(&mut w, false).is_ok());
        for d in
            [Divergence::ForwardKl, Divergence::Jsd, Divergence::Alpha(0.5), Divergence::Jeffreys]
        {
            let e = d.check_weights(&mut [1.5, -0.5], true).unwrap_err().to_string();
            assert!(e.contains("non-negative"), "{e}");
            let e = d.check_weights(&mut [1.0, 1.0], false).unwrap_err().to_string();
            assert!(e.contains("sum to 1") && e.contains("normalize_weights"), "{e}");
            let mut w = vec![1.0, 3.0];
            d.check_weights(&mut w, true).unwrap();
            assert_eq!(w, vec![0.25, 0.75]);
            assert!(d.check_weights(&mut [0.0, 0.0], true).is_err());
            assert!(d.check_weights(&mut [0.4, 0.6], false).is_ok());
        }
        assert!(Divergence::ReverseKl.check_weights(&mut [f64::NAN], false).is_err());
    }
}
