//! One step of MOD over bytes: each policy's next-byte distribution (its [`ByteView`]), the
//! combiner over the 257 outcomes, the UTF-8 rule, the sampler; then every view takes the
//! byte chosen.

use super::{ByteView, Utf8, Wanted, END, OUTCOMES};
use crate::pipeline::combine::Combiner;
use crate::pipeline::sample::Sampler;

/// What a step chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Byte(u8),
    End,
}

/// Why a step chose nothing, or could not take its choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepError {
    /// No outcome has a finite combined score.
    NoFiniteScore,
    /// The policy of this term gives the text chosen no probability.
    Impossible(usize),
}

/// MOD over bytes for the terms of a combiner, one view per term in the combiner's order.
pub struct ByteMod {
    views: Vec<ByteView>,
    combiner: Combiner,
    sampler: Sampler,
    greedy: bool,
    utf8: Utf8,
    /// The outcomes combined this step, each policy's log-probabilities on them, and their
    /// combined scores.
    kept: Vec<usize>,
    dists: Vec<Vec<f32>>,
    compact: Vec<f32>,
    /// Scores of every outcome (−∞ for those not combined).
    scores: Vec<f32>,
    /// Each policy's log-probabilities of every outcome at the last choice.
    last: Vec<[f64; OUTCOMES]>,
    /// The largest share of a policy's text probability pruning dropped at one byte.
    pub most_dropped: f64,
}

impl ByteMod {
    /// `views` in the order of `combiner`'s terms; `greedy`: eq. 6 instead of the normalised
    /// distribution (the sampler's temperature must then be 0).
    pub fn new(views: Vec<ByteView>, combiner: Combiner, sampler: Sampler, greedy: bool) -> Self {
        let dists = vec![Vec::with_capacity(OUTCOMES); views.len()];
        Self {
            views,
            combiner,
            sampler,
            greedy,
            utf8: Utf8::default(),
            kept: Vec::with_capacity(OUTCOMES),
            dists,
            compact: Vec::with_capacity(OUTCOMES),
            scores: vec![0.0; OUTCOMES],
            last: Vec::new(),
            most_dropped: 0.0,
        }
    }

    /// The views, one per term.
    pub fn views(&self) -> &[ByteView] {
        &self.views
    }

    /// The token sequences term `k`'s policy must be run on before [`ByteMod::choose`].
    pub fn wanted(&self, k: usize) -> Vec<Wanted> {
        self.views[k].wanted()
    }

    /// Term `k`'s next-token logits after node `id` (see [`ByteView::supply`]).
    pub fn supply(&mut self, k: usize, id: super::NodeId, logits: &[f32]) {
        self.views[k].supply(id, logits);
    }

    /// Nodes of term `k` dropped since the last call.
    pub fn take_released(&mut self, k: usize) -> Vec<super::NodeId> {
        self.views[k].take_released()
    }

    /// The combined scores of the last [`ByteMod::choose`] (−∞ where UTF-8 forbids).
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// Each policy's next-byte distribution, combined, restricted to what keeps the text
    /// valid UTF-8, and drawn from (every wanted node supplied first).
    pub fn choose(&mut self) -> Result<Choice, StepError> {
        // Only the outcomes every policy finds possible and UTF-8 allows are combined: one a
        // policy finds impossible cannot be taken (its view could not follow), and left in
        // it would still bound the normaliser of a divergence with a pole.
        let mut possible = [true; OUTCOMES];
        for (o, ok) in possible.iter_mut().enumerate() {
            *ok = self.utf8.allows(o);
        }
        let all = &mut self.last;
        all.resize(self.views.len(), [0.0; OUTCOMES]);
        for (view, lp) in self.views.iter().zip(all.iter_mut()) {
            view.distribution(lp);
            for (ok, &l) in possible.iter_mut().zip(lp.iter()) {
                *ok &= l > f64::NEG_INFINITY;
            }
        }
        self.kept.clear();
        self.kept.extend((0..OUTCOMES).filter(|&o| possible[o]));
        for (dist, lp) in self.dists.iter_mut().zip(all.iter()) {
            dist.clear();
            dist.extend(self.kept.iter().map(|&o| lp[o] as f32));
        }
        self.compact.resize(self.kept.len(), 0.0);
        if !self.kept.is_empty() {
            let inputs: Vec<&[f32]> = self.dists.iter().map(|d| &d[..]).collect();
            self.combiner.combine(&inputs, self.greedy, &mut self.compact);
        }
        self.scores.fill(f32::NEG_INFINITY);
        for (&o, &s) in self.kept.iter().zip(&self.compact) {
            self.scores[o] = if s.is_nan() { f32::NEG_INFINITY } else { s };
        }
        match self.sampler.sample(&mut self.scores, &[]) {
            None => Err(StepError::NoFiniteScore),
            Some(o) if o as usize == END => Ok(Choice::End),
            Some(o) => Ok(Choice::Byte(o as u8)),
        }
    }

    /// The log-probabilities of the last choice: of the outcome `chosen` and of the `top`
    /// likeliest outcomes (best first) in the combined distribution — normalised over the
    /// outcomes combined, the MOD distribution even where greedy decoding picked by eq. 6 —
    /// and of `chosen` in each policy's own.
    pub fn logprobs(&mut self, chosen: usize, top: usize) -> (f32, Vec<(usize, f32)>, Vec<f32>) {
        let mut normalised = vec![f32::NEG_INFINITY; self.kept.len()];
        if !self.kept.is_empty() {
            let inputs: Vec<&[f32]> = self.dists.iter().map(|d| &d[..]).collect();
            self.combiner.combine_whole(&inputs, false, &mut normalised);
        }
        let max = normalised.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = normalised.iter().map(|&s| f64::from(s - max).exp()).sum();
        let log_z = f64::from(max) + sum.ln();
        let mut all: Vec<(usize, f32)> = self
            .kept
            .iter()
            .zip(&normalised)
            .map(|(&o, &s)| (o, (f64::from(s) - log_z) as f32))
            .filter(|(_, l)| l.is_finite())
            .collect();
        let lp_chosen = all.iter().find(|(o, _)| *o == chosen).map_or(f32::NEG_INFINITY, |x| x.1);
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(top);
        let policies = self.last.iter().map(|lp| lp[chosen] as f32).collect();
        (lp_chosen, all, policies)
    }

    /// Gives `byte` to every view.
    pub fn advance(&mut self, byte: u8) -> Result<(), StepError> {
        for (k, view) in self.views.iter_mut().enumerate() {
            let dropped = view.advance(byte).map_err(|_| StepError::Impossible(k))?;
            self.most_dropped = self.most_dropped.max(dropped);
        }
        self.utf8.push(byte);
        Ok(())
    }
}
