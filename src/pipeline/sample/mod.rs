//! The sampler: picks the next token from the combined (MOD) logits.
//!
//! Pure Rust, no FFI. The stages run in llama.cpp's order: logit bias, then the repetition,
//! frequency and presence penalties, then a constraint if there is one (a grammar: tokens it
//! forbids are out), then greedy (temperature 0) or top-k → top-p → min-p (on the
//! distribution at temperature 1) → temperature → a draw from a seeded generator. Given the
//! same seed and logits, the same token comes out.

mod constrained;

pub use constrained::{allowed_window, best_allowed, NoToken, WINDOW};

use crate::error::invalid;
use anyhow::Result;

/// Sampling settings, as llama.cpp users know them.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax); otherwise logits are divided by it before the draw.
    pub temperature: f64,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p; 1 = off.
    pub top_p: f64,
    /// Drop tokens less likely than `min_p` × the top token's probability; 0 = off.
    pub min_p: f64,
    /// Penalty for tokens among the last `repeat_last_n` generated ones; 1 = off.
    pub repeat_penalty: f64,
    /// How many recent tokens the repetition, frequency and presence penalties look at;
    /// 0 = off.
    pub repeat_last_n: usize,
    /// Subtracted from a token's logit once if it is among the recent tokens (OpenAI's
    /// `presence_penalty`); 0 = off.
    pub presence_penalty: f64,
    /// Subtracted from a token's logit once per time it is among the recent tokens
    /// (OpenAI's `frequency_penalty`); 0 = off.
    pub frequency_penalty: f64,
    /// Added to the logits of these tokens before anything else (from −100 to 100).
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the random generator; `None` draws a fresh one per generation.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Checks every setting; an error names the setting and its valid range.
    pub fn check(&self) -> Result<()> {
        // Temperatures below 1e-3 would overflow f32 logits once divided: use 0 (greedy).
        let t = self.temperature;
        if !(t == 0.0 || (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&t)) {
            return Err(invalid(
                "temperature",
                format!(
                    "must be 0 (greedy) or from {MIN_TEMPERATURE} to {MAX_TEMPERATURE}, got {t}"
                ),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid("top_p", format!("must be in (0, 1], got {}", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(invalid("min_p", format!("must be in [0, 1], got {}", self.min_p)));
        }
        if let Some(seed) = self.seed.filter(|&s| s > MAX_SEED) {
            return Err(invalid(
                "seed",
                format!("is {seed}; seeds must be below 2^53 so that JSON carries them exactly"),
            ));
        }
        let r = self.repeat_penalty;
        if !(MIN_PENALTY..=MAX_PENALTY).contains(&r) {
            return Err(invalid(
                "repeat_penalty",
                format!("must be from {MIN_PENALTY} to {MAX_PENALTY} (1 = off), got {r}"),
            ));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-MAX_OPENAI_PENALTY..=MAX_OPENAI_PENALTY).contains(&v) {
                return Err(invalid(
                    name,
                    format!("must be from -{MAX_OPENAI_PENALTY} to {MAX_OPENAI_PENALTY} (0 = off), got {v}"),
                ));
            }
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS {
            return Err(invalid(
                "logit_bias",
                format!("holds {} tokens; at most {MAX_LOGIT_BIAS}", self.logit_bias.len()),
            ));
        }
        if let Some((t, b)) = self.logit_bias.iter().find(|(_, b)| b.is_nan() || b.abs() > MAX_BIAS)
        {
            return Err(invalid(
                "logit_bias",
                format!("gives token {t} the bias {b}; biases are from -{MAX_BIAS} to {MAX_BIAS}"),
            ));
        }
        Ok(())
    }
}

/// The range of presence and frequency penalties (OpenAI's).
pub const MAX_OPENAI_PENALTY: f64 = 2.0;
/// The most tokens a logit bias may name, and the largest bias (OpenAI's range).
pub const MAX_LOGIT_BIAS: usize = 1024;
pub const MAX_BIAS: f32 = 100.0;

/// The range of non-zero temperatures: outside it, dividing f32 logits overflows or does
/// nothing measurable.
pub const MIN_TEMPERATURE: f64 = 1e-3;
pub const MAX_TEMPERATURE: f64 = 1e3;
/// The range of repetition penalties (1 = off).
pub const MIN_PENALTY: f64 = 1e-3;
pub const MAX_PENALTY: f64 = 1e3;

/// The largest seed: JSON readers hold numbers as doubles, exact up to 2^53.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// A fresh seed for a generation that gave none: below 2^53, so that JSON (whose numbers
/// are doubles) carries it exactly and it can be replayed.
pub fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut rng = Rng::new(nanos ^ (u64::from(std::process::id()) << 32) ^ n.rotate_left(17));
    rng.next_u64() >> 11
}

/// A small, fast, seedable generator (SplitMix64): reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks tokens; owns its generator and scratch space (no allocation after the first step).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler drawing with the generator seeded by `seed` (the params' own seed is the
    /// caller's to resolve).
    pub fn new(params: SamplingParams, seed: u64) -> Self {
        Self { params, rng: Rng::new(seed), candidates: Vec::new() }
    }

    /// Picks the next token id from `logits` (modified in place by the penalty), given the
    /// tokens generated so far. `None` when no token has a finite score (every score NaN or
    /// −∞, or one +∞): there is no distribution to draw from.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Option<u32> {
        self.adjust(logits, history);
        self.pick(logits)
    }

    /// Applies the logit bias and the penalties to `logits`, given the tokens generated so
    /// far: the scores [`Sampler::sample`] draws from.
    pub fn adjust(&self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        for &(t, b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
        let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
        apply_repeat_penalty(logits, recent, p.repeat_penalty as f32);
        apply_count_penalties(
            logits,
            recent,
            p.presence_penalty as f32,
            p.frequency_penalty as f32,
        );
    }

    /// Picks from scores already adjusted.
    fn pick(&mut self, logits: &[f32]) -> Option<u32> {
        let p = &self.params;
        if p.temperature == 0.0 {
            let best = argmax(logits);
            return logits[best as usize].is_finite().then_some(best);
        }
        let (top_p, min_p, temperature) = (p.top_p, p.min_p, p.temperature);
        let (max, total) = self.collect_candidates(logits);
        if !max.is_finite() {
            return None;
        }
        let c = &mut self.candidates;
        truncate_top_p(c, top_p, max, total);
        truncate_min_p(c, min_p);
        Some(draw(c, temperature, self.rng.next_f64()))
    }

    /// Fills `candidates` with the tokens that can survive top-k and min-p, sorted by logit,
    /// descending, where top-p needs the order. Returns the top logit and the probability
    /// mass (temperature 1, relative to the top token) that top-p is measured against: the
    /// top-k set's when top-k is on, else the whole vocabulary's. Tokens below the min-p floor
    /// are never kept, but still count in that mass, so the result is exactly llama.cpp's
    /// top-k → top-p → min-p chain without sorting the whole vocabulary.
    fn collect_candidates(&mut self, logits: &[f32]) -> (f32, f64) {
        let p = &self.params;
        let c = &mut self.candidates;
        c.clear();
        let max = max_finite_or_inf(logits);
        if p.top_k > 0 {
            top_k_into(logits, p.top_k.min(logits.len()), c);
            c.sort_unstable_by(descending);
            let total = c.iter().map(|x| f64::from(x.1 - max).exp()).sum();
            return (max, total);
        }
        let floor = if p.min_p > 0.0 { max + p.min_p.ln() as f32 } else { f32::MIN };
        let mut total = 0.0;
        let need_total = p.top_p < 1.0;
        for (i, &l) in logits.iter().enumerate() {
            if need_total && l > f32::NEG_INFINITY {
                total += f64::from(l - max).exp();
            }
            if l >= floor {
                c.push((i as u32, l));
            }
        }
        if need_total {
            c.sort_unstable_by(descending);
        }
        (max, total)
    }
}

/// The largest score, NaN ignored (+∞ where one is +∞, −∞ where none is a number).
fn max_finite_or_inf(logits: &[f32]) -> f32 {
    logits.iter().copied().fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m })
}

/// Orders candidates by logit, descending; the lower id first on ties.
fn descending(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Puts the `k` largest finite logits into `out` (unordered), in one pass: whenever `out`
/// holds 2k candidates it is cut back to the best k, and the k-th becomes the bar to beat.
pub fn top_k_into(logits: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    let mut bar = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > bar {
            out.push((i as u32, l));
            if out.len() == 2 * k {
                out.select_nth_unstable_by(k - 1, descending);
                out.truncate(k);
                bar = out[k - 1].1;
            }
        }
    }
    if out.len() > k {
        out.select_nth_unstable_by(k - 1, descending);
        out.truncate(k);
    }
}

/// The repetition penalty of llama.cpp: a positive logit is divided by `penalty`, a negative
/// one multiplied, once per distinct token among `recent`.
pub fn apply_repeat_penalty(logits: &mut [f32], recent: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    for (i, &t) in recent.iter().enumerate() {
        if recent[..i].contains(&t) {
            continue;
        }
        if let Some(l) = logits.get_mut(t as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// OpenAI's presence and frequency penalties: a token seen `c` times among `recent` loses
/// `frequency · c + presence` from its logit.
pub fn apply_count_penalties(logits: &mut [f32], recent: &[u32], presence: f32, frequency: f32) {
    if presence == 0.0 && frequency == 0.0 {
        return;
    }
    for (i, &t) in recent.iter().enumerate() {
        if recent[..i].contains(&t) {
            continue;
        }
        let count = recent[i..].iter().filter(|&&x| x == t).count() as f32;
        if let Some(l) = logits.get_mut(t as usize) {
            *l -= frequency * count + presence;
        }
    }
}

/// Index of the largest logit; the lowest index wins ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_val = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_val {
            best = i;
            best_val = l;
        }
    }
    best as u32
}

/// Keeps the shortest prefix (candidates sorted descending) whose mass reaches `top_p` of
/// `total` (masses relative to the logit `max`).
fn truncate_top_p(c: &mut Vec<(u32, f32)>, top_p: f64, max: f32, total: f64) {
    if top_p >= 1.0 || c.is_empty() {
        return;
    }
    let target = top_p * total;
    let mut acc = 0.0;
    let mut keep = c.len();
    for (i, x) in c.iter().enumerate() {
        acc += f64::from(x.1 - max).exp();
        if acc >= target {
            keep = i + 1;
            break;
        }
    }
    c.truncate(keep);
}

/// Drops candidates whose probability is below `min_p` × the top probability.
fn truncate_min_p(c: &mut Vec<(u32, f32)>, min_p: f64) {
    if min_p <= 0.0 || c.is_empty() {
        return;
    }
    let max = c.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
    let floor = max + min_p.ln() as f32;
    c.retain(|x| x.1 >= floor);
}

/// Draws one candidate from softmax(logit / temperature) with the uniform number `u`.
fn draw(c: &[(u32, f32)], temperature: f64, u: f64) -> u32 {
    let max = c.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
    let t = temperature;
    let weight = |l: f32| (f64::from(l - max) / t).exp();
    let total: f64 = c.iter().map(|x| weight(x.1)).sum();
    let mut target = u * total;
    for &(id, l) in c {
        target -= weight(l);
        if target < 0.0 {
            return id;
        }
    }
    c.last().map_or(0, |x| x.0)
}

#[cfg(test)]
mod tests;
