//! Drafts for speculative decoding: tokens guessed to come next, which the policies then
//! check all at once, in one pass per context (see the decoder), and the rule that decides
//! whether a step drafts and how much.
//!
//! The guess is prompt lookup: the latest few tokens (four or five: shorter runs repeat by
//! chance too often), found earlier in the prompt or in the text so far, are likely followed
//! by what followed them there (a summary quotes its source, code repeats its names, a list
//! repeats its shape). No model runs for it, so looking up costs nothing worth counting; a
//! draft model, when there is one, guesses instead and its time is counted (see below).
//!
//! Checking a draft is not free: a pass that feeds a lane its token and a draft of `d` costs
//! more than a plain step, how much more depends on the machine and the models (on a CPU a
//! pass of 9 tokens may cost four plain steps, on a GPU barely more than one). So the rule
//! decides from what it measures on this run:
//!
//! * **What a pass costs** ([`PassCosts`]): the decoder times every pass and files the time
//!   under the pass's width (the most tokens it fed one lane: 1 for a plain step, `1 + d` with
//!   a draft of `d`), keeping the median of the latest few per width (the lower middle one
//!   of an even count: a busy machine only ever slows a pass down). A width not measured yet
//!   is estimated from those that were: between two measured widths along the straight line
//!   joining them; beyond the widest along the line through the two widest (never falling);
//!   with one width measured, in proportion to the width — a draft of `d` then looks as dear
//!   as `1 + d` plain steps, which no draft beats, so a draft proves itself once before it is
//!   chosen. A draft model's time per proposed token, measured the same way, is added for
//!   every token it drafts.
//! * **How often a draft token is accepted** ([`Acceptance`]): per request, the rate at which
//!   a draft token was taken given that the one before it was (each checked draft contributes
//!   its accepted tokens and, if it was cut short, one rejection), starting from one in two
//!   (worth a single check) and with older checks weighing less and less, so that the rate
//!   follows the text.
//! * **The choice** ([`best_length`]): with acceptance rate `p`, a pass with a draft of `d`
//!   yields `E(d) = 1 + p + … + p^d` tokens on average; the rule picks the `d` (up to what the
//!   lookup found, the request's maximum and the room left) with the most tokens per second,
//!   `E(d) / cost(d)`, and drafts only if that beats a plain step's `1 / cost(0)` by
//!   [`MARGIN`]. Otherwise the step drafts nothing.
//! * **Exploration** ([`DraftChoice`]): [`EXPLORE_EVERY`] steps after its last exploration,
//!   a request's next step that has something to draft explores: with no draft chosen it
//!   tries a short one ([`EXPLORE_DRAFT`] tokens at most), with a draft chosen it tries one
//!   twice as long (within what is available), so that the acceptance rate and the costs
//!   stay current — a width measured once at a bad moment (the machine busy) would otherwise
//!   look dear for good and never be tried again. A request's first chance to draft is an
//!   exploration. An exploration whose draft is not taken whole doubles the steps to the
//!   next one, up to [`EXPLORE_MAX`] (text with nothing to look up pays for one wider pass
//!   in that many steps, not in every [`EXPLORE_EVERY`]); one taken whole brings them back
//!   to [`EXPLORE_EVERY`].
//!
//! Whatever the rule decides, the output is the same: it changes only how many passes it
//! takes.

/// The most draft tokens per pass unless told otherwise.
pub const DEFAULT_DRAFT_MAX: usize = 16;

/// The longest and shortest run of latest tokens looked up.
pub const NGRAM_MAX: usize = 5;
pub const NGRAM_MIN: usize = 4;

/// How much faster than plain steps a draft must promise to be before it is fed: estimates
/// are noisy, and a draft that only breaks even is not worth the risk.
pub const MARGIN: f64 = 1.05;

/// Steps without a draft after which a short draft is tried anyway, and its most tokens.
pub const EXPLORE_EVERY: usize = 32;
pub const EXPLORE_DRAFT: usize = 2;
/// The most steps between explorations, after explorations that did not pay.
pub const EXPLORE_MAX: usize = 8 * EXPLORE_EVERY;

/// How much an earlier check of a draft token weighs against the next one (about the last
/// 30 checks count), and the prior: half an acceptance in one check, a rate of one in two
/// that the first checks soon outweigh.
const DECAY: f64 = 0.97;
const PRIOR_ACCEPTED: f64 = 0.5;
const PRIOR_CHECKED: f64 = 1.0;

/// Passes (or proposals) kept per width; the estimate is their median.
const RECENT: usize = 5;

/// Appends to `out` up to `max` tokens that followed the latest earlier occurrence of the
/// longest suffix of `context` (from [`NGRAM_MAX`] down to [`NGRAM_MIN`] tokens) found in it.
pub fn lookup(context: &[u32], max: usize, out: &mut Vec<u32>) {
    if max == 0 {
        return;
    }
    for n in (NGRAM_MIN..=NGRAM_MAX).rev() {
        if context.len() <= n {
            continue;
        }
        let pattern = &context[context.len() - n..];
        // Latest first: the most recent context is the likeliest to repeat.
        let found =
            (0..context.len() - n).rev().find(|&start| &context[start..start + n] == pattern);
        if let Some(start) = found {
            let from = start + n;
            let end = (from + max).min(context.len());
            out.extend_from_slice(&context[from..end]);
            return;
        }
    }
}

/// The tokens a pass with a draft of `d` yields on average when each draft token is
/// accepted with probability `p` given that the one before it was: the token after the last
/// accepted one is always gained, so `1 + p + … + p^d = (1 − p^(d+1)) / (1 − p)`.
pub fn expected_tokens(p: f64, d: usize) -> f64 {
    let p = p.clamp(0.0, 1.0);
    if p >= 1.0 {
        return (d + 1) as f64;
    }
    (1.0 - p.powi(d as i32 + 1)) / (1.0 - p)
}

/// The draft length in `0..=max` that yields the most tokens per second, `E(d) / cost(d)`
/// (the shortest among equals), where `cost(d)` is the time of a pass with a draft of `d`
/// (`cost(0)`: a plain step) and `p` the acceptance rate; 0 unless that beats a plain step by
/// [`MARGIN`], or when the costs are no use (not positive, not finite).
pub fn best_length(p: f64, max: usize, cost: impl Fn(usize) -> f64) -> usize {
    let plain = cost(0);
    if max == 0 || !(plain > 0.0 && plain.is_finite()) {
        return 0;
    }
    let (mut best, mut best_gain) = (0, 1.0);
    for d in 1..=max {
        let c = cost(d);
        if !(c > 0.0 && c.is_finite()) {
            continue;
        }
        let gain = expected_tokens(p, d) * plain / c;
        if gain > best_gain {
            (best, best_gain) = (d, gain);
        }
    }
    if best_gain >= MARGIN {
        best
    } else {
        0
    }
}

/// The latest few measurements of one kind, oldest overwritten first.
#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    samples: [f64; RECENT],
    len: usize,
    next: usize,
}

impl Recent {
    fn push(&mut self, x: f64) {
        self.samples[self.next] = x;
        self.next = (self.next + 1) % RECENT;
        self.len = (self.len + 1).min(RECENT);
    }

    /// The median of what is kept (the lower one of an even count); `None` before the first.
    fn median(&self) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        let mut kept = self.samples;
        let kept = &mut kept[..self.len];
        kept.sort_by(f64::total_cmp);
        Some(kept[(self.len - 1) / 2])
    }
}

/// What passes cost on this session, by width, and what a draft model takes per proposed
/// token (see the module documentation). Times are in seconds.
#[derive(Debug, Clone)]
pub struct PassCosts {
    /// Entry `w - 1`: passes of width `w`.
    by_width: Vec<Recent>,
    /// Seconds per token of the draft model's proposals.
    per_proposed: Recent,
}

impl PassCosts {
    /// Costs of passes up to `max_width` tokens per lane, none measured yet.
    pub fn new(max_width: usize) -> Self {
        Self {
            by_width: vec![Recent::default(); max_width.max(1)],
            per_proposed: Recent::default(),
        }
    }

    /// Files a pass of `width` tokens (the most fed to one lane) that took `seconds`. Widths
    /// beyond the table and empty passes are not filed.
    pub fn record_pass(&mut self, width: usize, seconds: f64) {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return;
        }
        if let Some(r) = width.checked_sub(1).and_then(|i| self.by_width.get_mut(i)) {
            r.push(seconds);
        }
    }

    /// Files a draft model's proposal of `tokens` that took `seconds`.
    pub fn record_proposal(&mut self, tokens: usize, seconds: f64) {
        if tokens > 0 && seconds.is_finite() && seconds >= 0.0 {
            self.per_proposed.push(seconds / tokens as f64);
        }
    }

    /// The estimated time of a pass of `width` tokens (see the module documentation). With
    /// nothing measured it is `width` (in units of a plain step).
    pub fn pass(&self, width: usize) -> f64 {
        let width = width.max(1);
        if let Some(c) = self.by_width.get(width - 1).and_then(Recent::median) {
            return c;
        }
        // (width, cost) of the passes measured, by index in the table.
        let measured = |i: usize| self.by_width[i].median().map(|c| (i + 1, c));
        let n = self.by_width.len();
        let below = (0..(width - 1).min(n)).rev().find_map(measured);
        let above = (width.min(n)..n).find_map(measured);
        let w = width as f64;
        match (below, above) {
            (Some((w0, c0)), Some((w1, c1))) => c0 + (c1 - c0) * (w - w0 as f64) / (w1 - w0) as f64,
            (Some((w1, c1)), None) => {
                match (0..w1 - 1).rev().find_map(measured) {
                    // Beyond the widest: along the line through the two widest, never falling.
                    Some((w0, c0)) => {
                        c1 + ((c1 - c0) / (w1 - w0) as f64).max(0.0) * (w - w1 as f64)
                    }
                    None => c1 * w / w1 as f64,
                }
            }
            (None, Some((w1, c1))) => c1 * w / w1 as f64,
            (None, None) => w,
        }
    }

    /// The estimated time of a step with a draft of `d`: the pass of width `1 + d`, and the
    /// draft model's time for `d` tokens once it has been measured.
    pub fn with_draft(&self, d: usize) -> f64 {
        // (Before any pass is measured the passes' unit is a plain step, not seconds.)
        let measured = self.by_width.iter().any(|r| r.len > 0);
        let proposing = self.per_proposed.median().filter(|_| d > 0 && measured);
        self.pass(1 + d) + proposing.map_or(0.0, |t| t * d as f64)
    }
}

/// A request's rate of accepted draft tokens (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct Acceptance {
    /// Accepted tokens and checks, each weighed down by [`DECAY`] at every later check.
    accepted: f64,
    checked: f64,
}

impl Acceptance {
    /// Learns from a draft of `drafted` tokens of which the first `accepted` were taken.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        let accepted = accepted.min(drafted);
        for _ in 0..accepted {
            self.check(true);
        }
        if accepted < drafted {
            self.check(false);
        }
    }

    fn check(&mut self, taken: bool) {
        self.accepted = self.accepted * DECAY + f64::from(u8::from(taken));
        self.checked = self.checked * DECAY + 1.0;
    }

    /// The estimated probability that a draft token is accepted given that the one before it
    /// was (always strictly between 0 and 1).
    pub fn rate(&self) -> f64 {
        (self.accepted + PRIOR_ACCEPTED) / (self.checked + PRIOR_CHECKED)
    }
}

/// How long a request's next draft is (see the module documentation): its acceptance rate,
/// and the steps since its last exploration.
#[derive(Debug, Clone)]
pub struct DraftChoice {
    acceptance: Acceptance,
    since_explored: usize,
    /// Steps between explorations, and whether the last draft was an exploration.
    interval: usize,
    exploring: bool,
}

impl Default for DraftChoice {
    fn default() -> Self {
        Self::new()
    }
}

impl DraftChoice {
    /// A request that has not drafted yet: its first chance to draft is an exploration.
    pub fn new() -> Self {
        Self {
            acceptance: Acceptance::default(),
            since_explored: EXPLORE_EVERY,
            interval: EXPLORE_EVERY,
            exploring: false,
        }
    }

    /// The length of this step's draft when up to `available` tokens could be drafted (what
    /// the lookup found, or what a draft model may propose, within the limits); 0: none.
    pub fn take(&mut self, available: usize, costs: &PassCosts) -> usize {
        let d = best_length(self.acceptance.rate(), available, |d| costs.with_draft(d));
        self.exploring = false;
        if available == 0 || self.since_explored + 1 < self.interval {
            self.since_explored = self.since_explored.saturating_add(1);
            return d;
        }
        self.since_explored = 0;
        self.exploring = true;
        if d == 0 {
            available.min(EXPLORE_DRAFT)
        } else {
            available.min(2 * d)
        }
    }

    /// Learns from a draft of `drafted` tokens of which the first `accepted` were taken.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        self.acceptance.record(drafted, accepted);
        if std::mem::take(&mut self.exploring) {
            self.interval = if accepted >= drafted {
                EXPLORE_EVERY
            } else {
                (2 * self.interval).min(EXPLORE_MAX)
            };
        }
    }

    /// The current acceptance rate.
    pub fn rate(&self) -> f64 {
        self.acceptance.rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafted(context: &[u32], max: usize) -> Vec<u32> {
        let mut out = Vec::new();
        lookup(context, max, &mut out);
        out
    }

    /// The same lookup written the slow, obvious way: every earlier occurrence of every
    /// suffix length, longest first, latest first.
    fn brute_force(context: &[u32], max: usize) -> Vec<u32> {
        for n in (NGRAM_MIN..=NGRAM_MAX).rev() {
            if context.len() <= n {
                continue;
            }
            let suffix = context[context.len() - n..].to_vec();
            let starts: Vec<usize> =
                (0..context.len() - n).filter(|&s| context[s..s + n] == suffix[..]).collect();
            if let Some(&s) = starts.iter().max() {
                return context[s + n..].iter().take(max).copied().collect();
            }
        }
        Vec::new()
    }

    #[test]
    fn a_repeated_run_is_continued_as_before() {
        // "a b c d e f | a b c d" → "e f a b c d" is what followed "a b c d" last time.
        let context = [1, 2, 3, 4, 5, 6, 1, 2, 3, 4];
        assert_eq!(drafted(&context, 3), [5, 6, 1]);
        assert_eq!(drafted(&context, 10), [5, 6, 1, 2, 3, 4]);
        assert_eq!(drafted(&context, 0), Vec::<u32>::new());
        // The latest occurrence wins, and the longest suffix before shorter ones.
        assert_eq!(drafted(&[7, 8, 9, 6, 1, 7, 8, 9, 6, 2, 7, 8, 9, 6], 1), [2]);
        assert_eq!(drafted(&[5, 1, 2, 3, 4, 9, 6, 1, 2, 3, 4, 8, 5, 1, 2, 3, 4], 1), [9]);
        // Nothing repeats, or only runs shorter than NGRAM_MIN: no draft.
        assert!(drafted(&[1, 2, 3, 4, 5, 6], 4).is_empty());
        assert!(drafted(&[1, 2, 3, 9, 1, 2, 3], 4).is_empty());
        assert!(drafted(&[], 4).is_empty());
    }

    #[test]
    fn lookup_equals_brute_force_on_random_contexts() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 40) as usize;
            let alphabet = 2 + next() % 5;
            let context: Vec<u32> = (0..len).map(|_| (next() % alphabet) as u32).collect();
            let max = (next() % 8) as usize;
            assert_eq!(drafted(&context, max), brute_force(&context, max), "{context:?} {max}");
        }
    }

    /// A small deterministic generator for the simulations.
    fn xorshift(mut state: u64) -> impl FnMut() -> f64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `E(d)` summed term by term.
    fn expected_by_sum(p: f64, d: usize) -> f64 {
        (0..=d).map(|i| p.powi(i as i32)).sum()
    }

    #[test]
    fn expected_tokens_is_the_geometric_sum() {
        for p in [0.0, 0.1, 0.5, 0.9, 0.999, 1.0] {
            for d in 0..=32 {
                let (closed, sum) = (expected_tokens(p, d), expected_by_sum(p, d));
                assert!((closed - sum).abs() < 1e-9 * sum, "p {p} d {d}: {closed} vs {sum}");
            }
        }
        assert_eq!(expected_tokens(0.0, 7), 1.0, "nothing accepted: the pass's own token");
        assert_eq!(expected_tokens(1.0, 7), 8.0, "everything accepted");
    }

    #[test]
    fn a_draft_that_costs_a_step_per_token_never_pays() {
        // cost(d) = c·(1 + d): E(d) < 1 + d for every p < 1, so no draft is ever faster.
        for c in [1e-4, 0.016, 3.0] {
            for p in [0.0, 0.3, 0.7, 0.95, 0.999] {
                for max in [1, 4, 16, 32] {
                    assert_eq!(best_length(p, max, |d| c * (1 + d) as f64), 0, "c {c} p {p}");
                }
            }
        }
        // Nor when the drafts could be any length: the same with the estimates of a table
        // that has measured plain steps only.
        let mut costs = PassCosts::new(33);
        costs.record_pass(1, 0.016);
        for p in [0.5, 0.9, 0.99] {
            assert_eq!(best_length(p, 32, |d| costs.with_draft(d)), 0, "p {p}");
        }
    }

    #[test]
    fn with_flat_costs_a_likely_draft_is_as_long_as_allowed() {
        // A pass costs the same at any width (a GPU with room to spare): E(d) grows with d
        // (while p^d still counts in floating point: at p = 0.2 it stops at about d = 23).
        for p in [0.5, 0.8, 0.95] {
            for max in [1, 2, 8, 16, 32] {
                assert_eq!(best_length(p, max, |_| 0.01), max, "p {p} max {max}");
            }
        }
        // A draft that is never accepted yields nothing more, at any cost.
        assert_eq!(best_length(0.0, 16, |_| 0.01), 0);
        // A one-token draft of cost c·(1 + a) pays when (1 + p) / (1 + a) beats the margin.
        for (p, a, drafts) in
            [(0.5, 0.3, true), (0.5, 0.45, false), (0.9, 0.8, true), (0.3, 0.3, false)]
        {
            let want = (1.0 + p) / (1.0 + a) >= MARGIN;
            assert_eq!(want, drafts, "the case itself: p {p} a {a}");
            assert_eq!(best_length(p, 1, |d| 0.02 * (1.0 + a * d as f64)), usize::from(drafts));
        }
    }

    #[test]
    fn the_length_chosen_is_the_brute_force_argmax() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut drafting = 0;
        for _ in 0..5000 {
            let p = next();
            let max = (next() * 33.0) as usize;
            // Random positive costs: flat, affine, concave or jagged.
            let base = 0.001 + next() * 0.1;
            let slope = next() * base * 1.5;
            let bend = next();
            let jag: Vec<f64> = (0..=max).map(|_| 1.0 + 0.3 * (next() - 0.5)).collect();
            let cost = |d: usize| (base + slope * (d as f64).powf(bend)) * jag[d];
            let speed = |d: usize| expected_by_sum(p, d) / cost(d);
            let mut best = 0;
            for d in 1..=max {
                if speed(d) > speed(best) {
                    best = d;
                }
            }
            let want = if best > 0 && speed(best) / speed(0) >= MARGIN { best } else { 0 };
            assert_eq!(best_length(p, max, cost), want, "p {p} max {max}");
            drafting += usize::from(want > 0);
        }
        assert!((500..4500).contains(&drafting), "the cases are not all alike: {drafting}");
    }

    #[test]
    fn unmeasured_widths_are_estimated_from_measured_ones() {
        let mut costs = PassCosts::new(17);
        // Nothing measured: a pass of w tokens counts as w plain steps.
        assert_eq!(costs.pass(1), 1.0);
        assert_eq!(costs.pass(9), 9.0);
        costs.record_pass(1, 0.02);
        // One width: in proportion to the width.
        assert!((costs.pass(5) - 0.1).abs() < 1e-12);
        costs.record_pass(5, 0.04);
        // Between: along the line; beyond the widest: the line through the two widest.
        assert!((costs.pass(3) - 0.03).abs() < 1e-12);
        assert!((costs.pass(9) - 0.06).abs() < 1e-12);
        costs.record_pass(9, 0.05);
        assert!((costs.pass(7) - 0.045).abs() < 1e-12);
        assert!((costs.pass(13) - 0.06).abs() < 1e-12, "slope of widths 5 and 9 only");
        // A widest pass measured cheaper than a narrower one: flat beyond, never falling.
        costs.record_pass(9, 0.03);
        costs.record_pass(9, 0.03);
        assert!((costs.pass(9) - 0.03).abs() < 1e-12, "the median of three");
        assert!((costs.pass(17) - 0.03).abs() < 1e-12);
        // Below the narrowest measured width: in proportion to it.
        let mut wide = PassCosts::new(17);
        wide.record_pass(3, 0.06);
        assert!((wide.pass(1) - 0.02).abs() < 1e-12);
        // Widths beyond the table and nonsense times are not filed.
        wide.record_pass(18, 1.0);
        wide.record_pass(0, 1.0);
        wide.record_pass(3, f64::NAN);
        assert!((wide.pass(17) - 0.34).abs() < 1e-12);
        // A draft model's time is added per drafted token.
        wide.record_proposal(4, 0.02);
        assert!((wide.with_draft(2) - (0.06 + 2.0 * 0.005)).abs() < 1e-12);
        assert!((wide.with_draft(0) - 0.02).abs() < 1e-12, "a plain step proposes nothing");
    }

    #[test]
    fn a_pass_cost_is_the_median_of_the_latest() {
        let mut costs = PassCosts::new(2);
        for t in [0.010, 0.011, 0.5, 0.012, 0.009] {
            costs.record_pass(1, t);
        }
        assert_eq!(costs.pass(1), 0.011, "an outlier does not move it");
        // Of two, the lower: a pass measured twice at a busy and a quiet moment costs what
        // the quiet one says.
        let mut two = PassCosts::new(2);
        two.record_pass(2, 0.091);
        assert_eq!(two.pass(2), 0.091);
        two.record_pass(2, 0.062);
        assert_eq!(two.pass(2), 0.062);
        // Older passes give way to newer ones.
        for _ in 0..RECENT / 2 + 1 {
            costs.record_pass(1, 0.030);
        }
        assert_eq!(costs.pass(1), 0.030);
    }

    /// Drafts of `d` whose tokens are each accepted with probability `q` while the one before
    /// was; returns the rate estimated after each draft.
    fn simulate(
        acceptance: &mut Acceptance,
        q: f64,
        d: usize,
        drafts: usize,
        seed: u64,
    ) -> Vec<f64> {
        let mut next = xorshift(seed);
        (0..drafts)
            .map(|_| {
                let accepted = (0..d).take_while(|_| next() < q).count();
                acceptance.record(d, accepted);
                acceptance.rate()
            })
            .collect()
    }

    #[test]
    fn the_acceptance_rate_converges_to_the_true_one_and_follows_changes() {
        for (i, q) in [0.05, 0.3, 0.5, 0.8, 0.95].into_iter().enumerate() {
            for d in [1, 3, 8] {
                let mut a = Acceptance::default();
                let rates = simulate(&mut a, q, d, 3000, 17 + i as u64);
                let late = &rates[1000..];
                let mean = late.iter().sum::<f64>() / late.len() as f64;
                assert!((mean - q).abs() < 0.04, "q {q} d {d}: {mean}");
                assert!(late.iter().all(|r| (0.0..1.0).contains(r) && *r > 0.0));
            }
        }
        // The text changes: the rate follows within some hundred checks.
        let mut a = Acceptance::default();
        simulate(&mut a, 0.95, 4, 500, 3);
        assert!(a.rate() > 0.85, "{}", a.rate());
        let rates = simulate(&mut a, 0.1, 4, 200, 4);
        assert!(rates[150..].iter().all(|&r| r < 0.3), "{:?}", &rates[150..]);
        // No draft, nothing learnt; the prior is one in two.
        let mut fresh = Acceptance::default();
        fresh.record(0, 0);
        assert_eq!(fresh.rate(), 0.5);
    }

    #[test]
    fn exploration_tries_a_short_draft_at_the_stated_interval() {
        // Passes cost a plain step per token: the rule itself never drafts.
        let mut costs = PassCosts::new(17);
        costs.record_pass(1, 0.01);
        costs.record_pass(3, 0.03);
        let mut choice = DraftChoice::new();
        let mut lengths = Vec::new();
        for step in 0..40 * EXPLORE_EVERY {
            // Every third step has nothing to draft at first, then the lookup always finds 16.
            let available = if step < 3 * EXPLORE_EVERY && step % 3 != 0 { 0 } else { 16 };
            let d = choice.take(available, &costs);
            assert!(d <= available.min(EXPLORE_DRAFT), "step {step}: {d}");
            if d > 0 {
                choice.update(d, 0);
                lengths.push((step, d));
            }
        }
        // The first chance explores; then, each exploration having been rejected, after twice
        // as many steps as the last time (up to EXPLORE_MAX), at the first step with
        // something to draft.
        let steps: Vec<usize> = lengths.iter().map(|&(s, _)| s).collect();
        assert_eq!(steps[0], 0);
        let mut interval = EXPLORE_EVERY;
        for w in steps.windows(2) {
            interval = (2 * interval).min(EXPLORE_MAX);
            assert!((interval..interval + 3).contains(&(w[1] - w[0])), "{steps:?}");
        }
        assert!(steps.len() >= 6, "the interval stops growing at EXPLORE_MAX: {steps:?}");
        assert!(lengths.iter().all(|&(_, d)| d == EXPLORE_DRAFT));
        // An exploration taken whole brings the interval back to EXPLORE_EVERY.
        let mut choice = DraftChoice::new();
        let mut explored = Vec::new();
        for step in 0..20 * EXPLORE_EVERY {
            let d = choice.take(16, &costs);
            if d > 0 {
                // Rejected up to step 8·EXPLORE_EVERY, taken whole from then on.
                let accepted = if step < 8 * EXPLORE_EVERY { 0 } else { d };
                choice.update(d, accepted);
                explored.push(step);
            }
        }
        let gaps: Vec<usize> = explored.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().any(|&g| g > EXPLORE_EVERY), "{explored:?}");
        assert!(gaps[gaps.len() - 3..].iter().all(|&g| g == EXPLORE_EVERY), "{explored:?}");
        // Nothing to draft: no draft, however long it has been.
        let mut idle = DraftChoice::new();
        assert!((0..100).all(|_| idle.take(0, &costs) == 0));
        assert_eq!(idle.take(1, &costs), 1, "exploring within what is available");
    }

    #[test]
    fn drafts_grow_as_they_are_accepted_on_cheap_passes_and_stop_when_rejected() {
        // A GPU-like table: a pass of 17 costs 10 % more than a plain step.
        let mut costs = PassCosts::new(17);
        costs.record_pass(1, 0.010);
        costs.record_pass(17, 0.011);
        let mut choice = DraftChoice::new();
        // At the prior's one in two, E(d) is nearly 2 from d = 6 on and the passes grow
        // dearer: the best draft is 6, and the first one explores twice that.
        assert_eq!(best_length(choice.rate(), 16, |d| costs.with_draft(d)), 6);
        assert_eq!(choice.take(16, &costs), 12, "{}", choice.rate());
        // Rejected again and again: even cheap drafts stop once the rate is below 5 %…
        let mut lengths = Vec::new();
        for _ in 0..60 {
            let d = choice.take(16, &costs);
            choice.update(d, 0);
            lengths.push(d);
        }
        let stopped = lengths.iter().position(|&d| d == 0).unwrap();
        assert!(stopped >= 5 && choice.rate() < 0.06, "{} {lengths:?}", choice.rate());
        // …until exploration tries a short one, EXPLORE_EVERY steps after the first.
        let again = EXPLORE_EVERY - 1;
        assert!(lengths[stopped..again].iter().all(|&d| d == 0), "{lengths:?}");
        assert_eq!(lengths[again], EXPLORE_DRAFT, "{lengths:?}");
        // A CPU-like table: only long, mostly accepted drafts pay.
        let mut cpu = PassCosts::new(17);
        for (w, c) in [(1, 0.016), (3, 0.034), (9, 0.066), (17, 0.090)] {
            cpu.record_pass(w, c);
        }
        let mut choice = DraftChoice::new();
        let first = choice.take(16, &cpu);
        assert_eq!(first, EXPLORE_DRAFT, "at one in two the first draft is an exploration");
        choice.update(first, first);
        let mut lengths = Vec::new();
        for _ in 0..40 {
            let d = choice.take(16, &cpu);
            choice.update(d, d);
            lengths.push(d);
        }
        assert_eq!(*lengths.last().unwrap(), 16, "{lengths:?}");
        assert!(lengths.windows(2).all(|w| w[0] <= w[1]), "{lengths:?}");
    }

    #[test]
    fn exploration_tries_drafts_twice_as_long_as_chosen_at_the_stated_interval() {
        // The GPU-like table again: at one in two the rule drafts 6.
        let mut costs = PassCosts::new(17);
        costs.record_pass(1, 0.010);
        costs.record_pass(17, 0.011);
        for available in [16, 8] {
            let mut choice = DraftChoice::new();
            let lengths: Vec<usize> =
                (0..3 * EXPLORE_EVERY).map(|_| choice.take(available, &costs)).collect();
            let probe = available.min(12);
            for (step, &d) in lengths.iter().enumerate() {
                let want = if step % EXPLORE_EVERY == 0 { probe } else { 6 };
                assert_eq!(d, want, "available {available}, step {step}: {lengths:?}");
            }
        }
    }

    #[test]
    fn a_width_measured_at_a_bad_moment_is_tried_again() {
        // Costs of a CPU, where one pass of width 5 happens to be measured at a busy moment
        // (half again as dear); every draft is accepted.
        let curve = [(1, 28.0), (3, 52.0), (5, 62.0), (9, 80.0), (17, 105.0)];
        let true_cost = |w: usize| {
            let i = curve.iter().rposition(|&(x, _)| x <= w).unwrap().min(curve.len() - 2);
            let ((w0, c0), (w1, c1)) = (curve[i], curve[i + 1]);
            (c0 + (c1 - c0) * (w - w0) as f64 / (w1 - w0) as f64) * 1e-3
        };
        let mut costs = PassCosts::new(17);
        let mut choice = DraftChoice::new();
        let (mut lengths, mut busy) = (Vec::new(), true);
        for _ in 0..3 * EXPLORE_EVERY {
            let d = choice.take(16, &costs);
            let mut t = true_cost(1 + d);
            if d == 4 && busy {
                (t, busy) = (t * 1.5, false);
            }
            costs.record_pass(1 + d, t);
            choice.update(d, d);
            lengths.push(d);
        }
        // The bad measurement held the drafts short until an exploration measured that width
        // again; then they grew to the longest.
        assert!(!busy, "the case itself: width 5 was tried: {lengths:?}");
        let stuck = lengths.iter().position(|&d| d == 4).unwrap();
        assert!(lengths[stuck + 1..EXPLORE_EVERY].iter().all(|&d| d < 4), "{lengths:?}");
        assert!(lengths[2 * EXPLORE_EVERY..].iter().all(|&d| d == 16), "{lengths:?}");
    }
}
