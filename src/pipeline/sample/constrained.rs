//! Sampling under a constraint without asking it about the whole vocabulary.
//!
//! Asking llama.cpp's grammar about every one of 262,144 tokens takes tens of milliseconds
//! (more than a forward pass), about 64 of them a few microseconds. So the constraint sees
//! the best-scored tokens first, in growing slices, until the answer is certain: greedy
//! needs the best allowed token; top-k the k best allowed ones. Without top-k (and for
//! log-probabilities) the allowed tokens within [`WINDOW`] nats of the best allowed one are
//! gathered: the tokens left out hold less than `n · e^-WINDOW` of the mass (3·10⁻⁸ at
//! 262,144 tokens).

use super::{descending, draw, top_k_into, truncate_min_p, truncate_top_p, Sampler};
use crate::pipeline::constraint::Constraint;

/// How far below the best allowed token the tokens considered reach, in nats.
pub const WINDOW: f32 = 30.0;
/// The first slice of best-scored tokens shown to the constraint; each next one is 8 times
/// larger.
const FIRST_SLICE: usize = 64;

/// Why no token came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoToken {
    /// No token has a finite score.
    NoFiniteScore,
    /// The constraint allows none of the tokens with a finite score.
    NothingAllowed,
}

impl Sampler {
    /// As [`Sampler::sample`], drawing only among the tokens `constraint` allows (the
    /// combined distribution masked and renormalised). The caller tells the constraint which
    /// token was chosen.
    pub fn sample_constrained(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
        constraint: &mut dyn Constraint,
    ) -> Result<u32, NoToken> {
        self.adjust(logits, history);
        let c = &mut self.candidates;
        if self.params.temperature == 0.0 {
            return best_allowed(logits, constraint, c).map(|(t, _)| t);
        }
        let k = self.params.top_k;
        let total = if k > 0 {
            top_allowed(logits, k, constraint, c)?;
            let max = c[0].1;
            c.iter().map(|x| f64::from(x.1 - max).exp()).sum()
        } else {
            allowed_window(logits, constraint, c)?;
            let max = c[0].1;
            c.iter().map(|x| f64::from(x.1 - max).exp()).sum()
        };
        let max = c[0].1;
        truncate_top_p(c, self.params.top_p, max, total);
        truncate_min_p(c, self.params.min_p);
        Ok(draw(c, self.params.temperature, self.rng.next_f64()))
    }
}

/// The allowed token with the best score.
pub fn best_allowed(
    logits: &[f32],
    constraint: &mut dyn Constraint,
    scratch: &mut Vec<(u32, f32)>,
) -> Result<(u32, f32), NoToken> {
    let best = super::argmax(logits);
    let score = logits[best as usize];
    if !score.is_finite() {
        return Err(NoToken::NoFiniteScore);
    }
    let mut one = [(best, score)];
    constraint.filter(&mut one);
    if one[0].1.is_finite() {
        return Ok(one[0]);
    }
    let mut slice = FIRST_SLICE;
    loop {
        let exhausted = slice_of_best(logits, slice, scratch);
        constraint.filter(scratch);
        if let Some(&first) = scratch.iter().find(|x| x.1.is_finite()) {
            return Ok(first);
        }
        if exhausted {
            return Err(NoToken::NothingAllowed);
        }
        slice = slice.saturating_mul(8);
    }
}

/// The `k` best allowed tokens, best first, into `out`.
fn top_allowed(
    logits: &[f32],
    k: usize,
    constraint: &mut dyn Constraint,
    out: &mut Vec<(u32, f32)>,
) -> Result<(), NoToken> {
    let mut slice = (4 * k.min(logits.len())).max(FIRST_SLICE);
    loop {
        let exhausted = slice_of_best(logits, slice, out);
        if out.is_empty() {
            return Err(NoToken::NoFiniteScore);
        }
        constraint.filter(out);
        out.retain(|x| x.1.is_finite());
        if out.len() >= k || exhausted {
            out.truncate(k);
            return if out.is_empty() { Err(NoToken::NothingAllowed) } else { Ok(()) };
        }
        slice = slice.saturating_mul(8);
    }
}

/// The allowed tokens scored within [`WINDOW`] of the best allowed one, best first.
pub fn allowed_window(
    logits: &[f32],
    constraint: &mut dyn Constraint,
    out: &mut Vec<(u32, f32)>,
) -> Result<(), NoToken> {
    let (_, best) = best_allowed(logits, constraint, out)?;
    let floor = best - WINDOW;
    out.clear();
    out.extend(logits.iter().enumerate().filter(|(_, &l)| l >= floor).map(|(v, &l)| (v as u32, l)));
    constraint.filter(out);
    out.retain(|x| x.1.is_finite());
    out.sort_unstable_by(descending);
    Ok(())
}

/// The `n` best finite-scored tokens, best first, into `out`; whether that is all of them.
fn slice_of_best(logits: &[f32], n: usize, out: &mut Vec<(u32, f32)>) -> bool {
    out.clear();
    top_k_into(logits, n.min(logits.len()).max(1), out);
    out.retain(|x| x.1.is_finite());
    out.sort_unstable_by(descending);
    out.len() < n
}
