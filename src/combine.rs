//! The combiner: turns the policies' next-token logits into the MOD distribution.
//!
//! Pure Rust, no FFI. For the reverse-KL regulariser (DESIGN.md §1) the MOD distribution is
//!
//! ```text
//! log p = (1 − S)·lp_ref + Σ_i w_i·lp_i − logsumexp(…),      S = Σ_i w_i
//! ```
//!
//! where `lp` are log-softmaxed logits. Each `lp_j = l_j − logsumexp(l_j)` differs from the raw
//! logits `l_j` by a constant over the vocabulary, and constants vanish in the final
//! normalisation, so the same distribution is `softmax((1 − S)·l_ref + Σ_i w_i·l_i)`: one
//! weighted sum of raw logits, no per-policy normalisation. [`Mixture`] holds those
//! coefficients; policies whose coefficient is zero (the reference when S = 1, an expert with
//! weight 0) are left out, so their forward passes are skipped.

use anyhow::{bail, Result};

/// How close to 1 the weight sum must be for the reference factor π_ref^(1−S) to vanish.
pub const UNIT_SUM_TOLERANCE: f64 = 1e-9;

/// Which policy a coefficient applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The reference policy π_ref.
    Reference,
    /// Expert policy number `i` (0-based, in recipe order).
    Expert(usize),
}

/// The linear combination of raw logits that gives reverse-KL MOD: `Σ_j c_j · l_j`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    /// Non-zero coefficients, one per policy whose forward pass is needed.
    pub terms: Vec<(Role, f64)>,
}

impl Mixture {
    /// Builds the reverse-KL mixture for expert weights `w` (any real numbers).
    ///
    /// `has_reference` says whether a reference policy exists; it is required exactly when
    /// the weights do not sum to 1.
    pub fn reverse_kl(weights: &[f64], has_reference: bool) -> Result<Self> {
        if weights.is_empty() {
            bail!("no experts: a recipe needs at least one [[expert]]");
        }
        if let Some((i, w)) = weights.iter().enumerate().find(|(_, w)| !w.is_finite()) {
            bail!("weight {} of expert {} is not a finite number", w, i + 1);
        }
        let sum: f64 = weights.iter().sum();
        let mut terms = Vec::with_capacity(weights.len() + 1);
        let ref_coeff = 1.0 - sum;
        if ref_coeff.abs() > UNIT_SUM_TOLERANCE {
            if !has_reference {
                bail!(
                    "weights sum to {sum} (not 1), so reverse-KL MOD needs the reference policy's \
                     factor π_ref^(1−S); add a [reference] to the recipe (or --model), or make \
                     the weights sum to 1"
                );
            }
            terms.push((Role::Reference, ref_coeff));
        }
        terms.extend(
            weights
                .iter()
                .enumerate()
                .filter(|(_, w)| **w != 0.0)
                .map(|(i, w)| (Role::Expert(i), *w)),
        );
        Ok(Self { terms })
    }

    /// Whether the policy with this role takes part (has a non-zero coefficient).
    pub fn uses(&self, role: Role) -> bool {
        self.terms.iter().any(|(r, _)| *r == role)
    }
}

/// Writes `out[v] = Σ_j coeffs[j] · inputs[j][v]` over `out.len()` tokens.
///
/// `inputs[j]` may be longer than `out` (a policy with a larger vocabulary); only the common
/// range is combined.
pub fn weighted_sum(coeffs: &[f32], inputs: &[&[f32]], out: &mut [f32]) {
    assert_eq!(coeffs.len(), inputs.len(), "one coefficient per input");
    let n = out.len();
    match (coeffs, inputs) {
        ([c0], [x0]) => {
            for (o, a) in out.iter_mut().zip(&x0[..n]) {
                *o = c0 * a;
            }
        }
        ([c0, c1], [x0, x1]) => {
            for ((o, a), b) in out.iter_mut().zip(&x0[..n]).zip(&x1[..n]) {
                *o = c0 * a + c1 * b;
            }
        }
        _ => {
            out.fill(0.0);
            for (c, x) in coeffs.iter().zip(inputs) {
                for (o, a) in out.iter_mut().zip(&x[..n]) {
                    *o += c * a;
                }
            }
        }
    }
}

/// `log Σ_v exp(x_v)`, accumulated in f64. Returns −∞ for an empty or all −∞ input.
pub fn logsumexp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return f64::from(max);
    }
    let sum: f64 = x.iter().map(|&v| f64::from(v - max).exp()).sum();
    f64::from(max) + sum.ln()
}

/// Turns logits into log-probabilities in place.
pub fn log_softmax(x: &mut [f32]) {
    let lse = logsumexp(x) as f32;
    for v in x.iter_mut() {
        *v -= lse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent f64 reference: normalise every policy first, then apply the formula of
    /// DESIGN.md §1 literally.
    fn closed_form(lref: &[f64], experts: &[Vec<f64>], w: &[f64]) -> Vec<f64> {
        let norm = |l: &[f64]| -> Vec<f64> {
            let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z = m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            l.iter().map(|v| v - z).collect()
        };
        let s: f64 = w.iter().sum();
        let lp_ref = norm(lref);
        let lps: Vec<Vec<f64>> = experts.iter().map(|e| norm(e)).collect();
        let raw: Vec<f64> = (0..lref.len())
            .map(|v| {
                (1.0 - s) * lp_ref[v] + w.iter().zip(&lps).map(|(wi, lp)| wi * lp[v]).sum::<f64>()
            })
            .collect();
        norm(&raw)
    }

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    fn mixture_log_probs(lref: &[f32], experts: &[Vec<f32>], w: &[f64]) -> Vec<f32> {
        let mix = Mixture::reverse_kl(w, true).unwrap();
        let coeffs: Vec<f32> = mix.terms.iter().map(|(_, c)| *c as f32).collect();
        let inputs: Vec<&[f32]> = mix
            .terms
            .iter()
            .map(|(r, _)| match r {
                Role::Reference => lref,
                Role::Expert(i) => &experts[*i][..],
            })
            .collect();
        let mut out = vec![0.0; lref.len()];
        weighted_sum(&coeffs, &inputs, &mut out);
        log_softmax(&mut out);
        out
    }

    fn check(w: &[f64], m: usize, n: usize, seed: u64) {
        let mut s = seed;
        let mut gen =
            |scale: f64| -> Vec<f64> { (0..n).map(|_| (lcg(&mut s) - 0.5) * scale).collect() };
        let lref = gen(20.0);
        let experts: Vec<Vec<f64>> = (0..m).map(|_| gen(20.0)).collect();
        let want = closed_form(&lref, &experts, w);
        let to32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        let got = mixture_log_probs(
            &to32(&lref),
            &experts.iter().map(|e| to32(e)).collect::<Vec<_>>(),
            w,
        );
        for v in 0..n {
            let tol = 1e-4 * (1.0 + want[v].abs());
            assert!(
                (f64::from(got[v]) - want[v]).abs() < tol,
                "w={w:?} token {v}: got {} want {}",
                got[v],
                want[v]
            );
        }
    }

    #[test]
    fn unit_sum_matches_closed_form() {
        check(&[0.3, 0.7], 2, 1000, 1);
        check(&[0.25, 0.25, 0.5], 3, 1000, 2);
    }

    #[test]
    fn non_unit_sum_keeps_reference_factor() {
        check(&[0.8, 0.9], 2, 1000, 3);
        check(&[0.2], 1, 500, 4);
    }

    #[test]
    fn negative_weights_match_closed_form() {
        // Proxy-tuning shape: base + α (expert − anti-expert), and CFG with γ > 1.
        check(&[1.5, -0.5], 2, 1000, 5);
        check(&[2.0, -1.5, 0.25], 3, 1000, 6);
    }

    #[test]
    fn reference_skipped_exactly_when_weights_sum_to_one() {
        let m = Mixture::reverse_kl(&[0.5, 0.5], true).unwrap();
        assert!(!m.uses(Role::Reference));
        let m = Mixture::reverse_kl(&[0.5, 0.6], true).unwrap();
        assert!(m.uses(Role::Reference));
        let (_, c) = m.terms[0];
        assert!((c + 0.1).abs() < 1e-12);
    }

    #[test]
    fn zero_weight_expert_is_skipped() {
        let m = Mixture::reverse_kl(&[1.0, 0.0], false).unwrap();
        assert_eq!(m.terms, vec![(Role::Expert(0), 1.0)]);
    }

    #[test]
    fn missing_reference_is_an_error_when_needed() {
        let e = Mixture::reverse_kl(&[0.5, 0.2], false).unwrap_err().to_string();
        assert!(e.contains("reference"), "{e}");
        assert!(Mixture::reverse_kl(&[f64::NAN, 1.0], true).is_err());
        assert!(Mixture::reverse_kl(&[f64::INFINITY], true).is_err());
        assert!(Mixture::reverse_kl(&[], true).is_err());
    }

    #[test]
    fn weighted_sum_uses_only_common_range() {
        let a = [1.0f32, 2.0, 3.0, 100.0];
        let b = [10.0f32, 20.0, 30.0];
        let mut out = [0.0f32; 3];
        weighted_sum(&[0.5, 2.0], &[&a, &b], &mut out);
        assert_eq!(out, [20.5, 41.0, 61.5]);
        let c = [1.0f32, 1.0, 1.0];
        weighted_sum(&[1.0, 1.0, -1.0], &[&a, &b, &c], &mut out);
        assert_eq!(out, [10.0, 21.0, 32.0]);
    }

    #[test]
    fn logsumexp_is_stable() {
        let x = [1000.0f32, 1000.0];
        assert!((logsumexp(&x) - (1000.0 + 2f64.ln())).abs() < 1e-9);
        let mut y = [-1e30f32, 0.0, f32::NEG_INFINITY];
        log_softmax(&mut y);
        assert_eq!(y[1], 0.0);
        assert_eq!(y[2], f32::NEG_INFINITY);
    }
}
