//! The combiner: turns the policies' next-token logits into the MOD distribution.
//!
//! Pure Rust, no FFI. [`Combiner::combine`] writes, over the vocabulary all models share,
//! scores whose softmax is the distribution to sample from (or whose argmax is the greedy
//! choice), with −∞ for tokens left out.
//!
//! * **Reverse KL** has a closed form: `log p = (1 − S)·lp_ref + Σ_i w_i·lp_i − logsumexp`.
//!   Each `lp_j = l_j − logsumexp(l_j)` differs from the raw logits `l_j` by a constant, and
//!   constants vanish in the final normalisation, so the scores are the weighted sum of raw
//!   logits — no per-policy normalisation at all. Any real weights; the reference runs only
//!   when S ≠ 1.
//! * **Other divergences** (see [`crate::pipeline::divergence`]) normalise each policy, pick the
//!   candidate tokens, and evaluate [`exact`] there in f64. Greedy decoding takes eq. 6 at
//!   Z = 0 over the tokens that can win it: on the simplex π_ref·h(Σ w_i g(r_i)) lies between
//!   min_i π_i and max_i π_i (h and g increase), so a token whose best expert probability is
//!   below some token's worst expert probability cannot be the argmax. Sampling normalises
//!   over the plausible set below.
//! * **Plausibility** (sampling, every divergence): with τ > 0 only tokens to which some
//!   positive-weight policy gives at least τ × its top probability can be drawn — the
//!   DExperts / contrastive-decoding safeguard against a pole handing its mass to a token the
//!   reference finds nearly impossible. τ = 0 keeps the whole vocabulary (exact).
//!
//! Scores of divergences other than reverse KL are `log p + Σ_i w_i·logsumexp(l_i)`: the
//! experts' logit scale, so the repetition penalty acts on them as on reverse KL's.

pub mod exact;

use crate::error::invalid;
use crate::pipeline::divergence::Divergence;
use crate::pipeline::recipe::{Role, Term};
use anyhow::Result;
pub use exact::Solve;
use rayon::prelude::*;

/// Default plausibility threshold τ.
pub const DEFAULT_PLAUSIBILITY: f64 = 1e-4;

/// Combines the next-token logits of the policies it names into MOD scores.
#[derive(Debug, Clone)]
pub struct Combiner {
    divergence: Divergence,
    /// The policies whose logits `combine` takes, in that order, with their coefficient
    /// (see [`crate::pipeline::recipe::Recipe::terms`]).
    terms: Vec<Term>,
    plausibility: f64,
    coeffs: Vec<f32>,
    /// Weights of the experts in `terms` (divergences other than reverse KL).
    weights: Vec<f64>,
    // Scratch space, reused from step to step.
    candidates: Vec<u32>,
    scratch: Vec<f32>,
    lse: Vec<f32>,
    floors: Vec<f32>,
    lp_ref: Vec<f64>,
    /// The experts' log-probabilities on the candidates, one expert after another.
    lp: Vec<f64>,
    scores: Vec<f64>,
    exact: exact::Scratch,
}

impl Combiner {
    /// A combiner for the terms of a recipe ([`crate::pipeline::recipe::Recipe::terms`]).
    pub fn new(divergence: Divergence, terms: &[Term], plausibility: f64) -> Result<Self> {
        if terms.is_empty() {
            anyhow::bail!("no policies to combine");
        }
        if !(0.0..1.0).contains(&plausibility) {
            return Err(invalid(
                "plausibility",
                format!("must be in [0, 1) (0 = the whole vocabulary), got {plausibility}"),
            ));
        }
        if divergence != Divergence::ReverseKl && terms[0].0 != Role::Reference {
            anyhow::bail!("{} needs the reference as its first term", divergence.name());
        }
        let coeffs = terms.iter().map(|(_, c)| *c as f32).collect();
        let weights =
            terms.iter().filter(|(r, _)| *r != Role::Reference).map(|(_, w)| *w).collect();
        Ok(Self {
            divergence,
            terms: terms.to_vec(),
            plausibility,
            coeffs,
            weights,
            candidates: Vec::new(),
            scratch: Vec::new(),
            lse: Vec::new(),
            floors: Vec::new(),
            lp_ref: Vec::new(),
            lp: Vec::new(),
            scores: Vec::new(),
            exact: exact::Scratch::default(),
        })
    }

    /// The policies `combine` needs logits from, in order.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Each term's coefficient on its raw logits, in order (reverse KL's linear form).
    pub fn coefficients(&self) -> impl Iterator<Item = f64> + '_ {
        self.terms.iter().map(|(_, c)| *c)
    }

    /// Writes MOD scores for the vocabulary `0..out.len()` from `logits` (one slice per
    /// term, each at least `out.len()` long). `greedy` selects eq. 6 at Z = 0 instead of the
    /// normalised distribution.
    pub fn combine(&mut self, logits: &[&[f32]], greedy: bool, out: &mut [f32]) {
        self.combine_over(logits, greedy, false, out);
    }

    /// As [`Combiner::combine`], with a score for every token: greedy decoding does not
    /// leave out the tokens that cannot win, sampling ignores the plausibility set. A
    /// constraint that may forbid the tokens that would win needs it.
    pub fn combine_whole(&mut self, logits: &[&[f32]], greedy: bool, out: &mut [f32]) {
        self.combine_over(logits, greedy, true, out);
    }

    fn combine_over(&mut self, logits: &[&[f32]], greedy: bool, whole: bool, out: &mut [f32]) {
        assert_eq!(logits.len(), self.terms.len(), "one logits slice per term");
        if self.divergence == Divergence::ReverseKl {
            weighted_sum(&self.coeffs, logits, out);
            if !greedy && !whole && self.plausibility > 0.0 {
                // Only positively weighted policies vouch for a token (a floor of +∞ never
                // passes).
                self.floors.clear();
                self.floors.extend(logits.iter().zip(&self.terms).map(|(l, (_, c))| {
                    if *c > 0.0 {
                        plausibility_floor(l, self.plausibility)
                    } else {
                        f32::INFINITY
                    }
                }));
                extreme_over_policies(logits, &self.floors, out.len(), true, &mut self.scratch);
                for (o, &m) in out.iter_mut().zip(&self.scratch) {
                    if m < 0.0 {
                        *o = f32::NEG_INFINITY;
                    }
                }
            }
            return;
        }
        let n = out.len();
        // The policies' normalisers are independent 262k-token passes: run them on all cores
        // (the decoding workers are idle while the host combines).
        logits.par_iter().map(|l| logsumexp(l) as f32).collect_into_vec(&mut self.lse);
        let experts = &logits[1..];
        let expert_lse = &self.lse[1..];
        self.candidates.clear();
        if whole {
            self.candidates.extend(0..n as u32);
        } else if greedy {
            eq6_candidates(experts, expert_lse, n, &mut self.scratch, &mut self.candidates);
        } else if self.plausibility > 0.0 {
            self.floors.clear();
            self.floors.extend(experts.iter().map(|l| plausibility_floor(l, self.plausibility)));
            extreme_over_policies(experts, &self.floors, n, true, &mut self.scratch);
            let margin = self.scratch.iter().enumerate();
            self.candidates.extend(margin.filter(|(_, &m)| m >= 0.0).map(|(v, _)| v as u32));
        } else {
            self.candidates.extend(0..n as u32);
        }
        let cand = &self.candidates;
        let gather = |l: &[f32], z: f32, dst: &mut Vec<f64>| {
            dst.extend(cand.iter().map(|&v| f64::from(l[v as usize] - z)));
        };
        self.lp_ref.clear();
        gather(logits[0], self.lse[0], &mut self.lp_ref);
        self.lp.clear();
        for (l, &z) in experts.iter().zip(expert_lse) {
            gather(l, z, &mut self.lp);
        }
        let (w, div) = (&self.weights, self.divergence);
        if greedy {
            exact::eq6_log_scores(
                div,
                w,
                &self.lp_ref,
                &self.lp,
                &mut self.scores,
                &mut self.exact,
            );
        } else {
            exact::mod_log_probs(div, w, &self.lp_ref, &self.lp, &mut self.scores, &mut self.exact);
        }
        let offset: f64 = w.iter().zip(expert_lse).map(|(w, z)| w * f64::from(*z)).sum();
        out.fill(f32::NEG_INFINITY);
        for (&v, &s) in self.candidates.iter().zip(&self.scores) {
            out[v as usize] = (s + offset) as f32;
        }
    }
}

/// `out[v] = max_k (l_k[v] − shift_k)` (or min), elementwise over `0..n`, one policy at a
/// time so that each pass vectorises.
fn extreme_over_policies(
    policies: &[&[f32]],
    shifts: &[f32],
    n: usize,
    max: bool,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.resize(n, if max { f32::NEG_INFINITY } else { f32::INFINITY });
    for (l, &z) in policies.iter().zip(shifts) {
        for (o, &x) in out.iter_mut().zip(&l[..n]) {
            let y = x - z;
            *o = if max == (y > *o) { y } else { *o };
        }
    }
}

/// Tokens that can win eq. 6 (see the module documentation), with a small slack for f32
/// rounding of the log-probabilities.
fn eq6_candidates(
    experts: &[&[f32]],
    lse: &[f32],
    n: usize,
    scratch: &mut Vec<f32>,
    out: &mut Vec<u32>,
) {
    extreme_over_policies(experts, lse, n, false, scratch);
    let bar = max_f32(scratch) - 1e-3;
    extreme_over_policies(experts, lse, n, true, scratch);
    out.extend(scratch.iter().enumerate().filter(|(_, &b)| b >= bar).map(|(v, _)| v as u32));
}

/// The logit a token needs to reach τ × the policy's top probability. A token is plausible
/// where `max_k (l_k[v] − floor_k) ≥ 0`.
fn plausibility_floor(logits: &[f32], tau: f64) -> f32 {
    max_f32(logits) + tau.ln() as f32
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

/// e^x for f32 in a form the compiler vectorises: x = n·ln 2 + r with |r| ≤ ln 2 / 2,
/// e^r by a degree-7 minimax polynomial (the classic single-precision one), 2^n put in the
/// exponent bits. Only float and integer arithmetic, no branches or float-to-int
/// conversions. Inputs below −87 give ≈ 1e-38 instead of 0.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 · 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Minimax polynomial for (e^r − 1 − r)/r² on |r| ≤ ln 2 / 2 (about 1 ulp overall).
    let q = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = q * r * r + r + 1.0;
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    p * scale
}

/// `log Σ_v exp(x_v)`: vectorised exponentials, sums of 256 in f32, totals in f64.
/// Returns −∞ for an empty or all −∞ input, NaN if any input is NaN.
pub fn logsumexp(x: &[f32]) -> f64 {
    let max = max_f32(x);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return f64::from(max);
    }
    if max == f32::INFINITY {
        return f64::INFINITY;
    }
    let mut total = 0.0f64;
    for chunk in x.chunks(256) {
        let (blocks, tail) = chunk.as_chunks::<4>();
        let mut lanes = [0.0f32; 4];
        for block in blocks {
            for i in 0..4 {
                lanes[i] += exp_f32(block[i] - max);
            }
        }
        let tail: f32 = tail.iter().map(|&v| exp_f32(v - max)).sum();
        total += f64::from(lanes.iter().sum::<f32>() + tail);
    }
    f64::from(max) + total.ln()
}

/// The largest value (NaN ignored), in 8 independent lanes so that it vectorises.
pub fn max_f32(x: &[f32]) -> f32 {
    let (blocks, tail) = x.as_chunks::<8>();
    let mut lanes = [f32::NEG_INFINITY; 8];
    for block in blocks {
        for i in 0..8 {
            lanes[i] = if block[i] > lanes[i] { block[i] } else { lanes[i] };
        }
    }
    let tail = tail.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    lanes.iter().copied().fold(tail, f32::max)
}

/// Turns logits into log-probabilities in place.
pub fn log_softmax(x: &mut [f32]) {
    let lse = logsumexp(x) as f32;
    for v in x.iter_mut() {
        *v -= lse;
    }
}

#[cfg(test)]
mod tests;
