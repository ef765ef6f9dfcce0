//! The sampler: picks the next token from the combined (MOD) logits.
//!
//! Pure Rust, no FFI. The stages run in llama.cpp's order: repetition penalty, then greedy
//! (temperature 0) or top-k → top-p → min-p (on the distribution at temperature 1) →
//! temperature → a draw from a seeded generator. Given the same seed and logits, the same
//! token comes out.

use super::settings::invalid;
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
    /// How many recent tokens the repetition penalty looks at; 0 = off.
    pub repeat_last_n: usize,
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
        Ok(())
    }
}

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
        let p = &self.params;
        let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
        apply_repeat_penalty(logits, recent, p.repeat_penalty as f32);
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
fn top_k_into(logits: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
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
mod tests {
    use super::*;

    fn params(temperature: f64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed: Some(7),
        }
    }

    fn sampler(p: SamplingParams) -> Sampler {
        let seed = p.seed.unwrap_or(7);
        Sampler::new(p, seed)
    }

    #[test]
    fn greedy_is_argmax_lowest_index_on_ties() {
        let mut s = sampler(params(0.0));
        assert_eq!(s.sample(&mut [0.0, 3.0, -1.0, 3.0], &[]).unwrap(), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -5.0]), 1);
    }

    #[test]
    fn draws_follow_the_distribution() {
        // p = softmax(log [0.5, 0.3, 0.2]); 200k draws, each frequency within 5 σ.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = sampler(params(1.0));
        let n = 200_000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[s.sample(&mut logits.clone(), &[]).unwrap() as usize] += 1;
        }
        for (c, p) in counts.iter().zip([0.5, 0.3, 0.2]) {
            let sigma = (p * (1.0 - p) / n as f64).sqrt();
            assert!((*c as f64 / n as f64 - p).abs() < 5.0 * sigma, "{counts:?}");
        }
    }

    #[test]
    fn temperature_sharpens_as_closed_form() {
        // At T = 0.5, p ∝ p0^2: [0.25, 0.09, 0.04] / 0.38.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = sampler(params(0.5));
        let n = 200_000;
        let mut first = 0;
        for _ in 0..n {
            first += usize::from(s.sample(&mut logits.clone(), &[]).unwrap() == 0);
        }
        let p = 0.25 / 0.38;
        let sigma = (p * (1.0 - p) / n as f64).sqrt();
        assert!((first as f64 / n as f64 - p).abs() < 5.0 * sigma);
    }

    #[test]
    fn top_k_top_p_min_p_restrict_the_support() {
        let logits: Vec<f32> = [0.4f32, 0.3, 0.2, 0.06, 0.04].iter().map(|p| p.ln()).collect();
        let support = |p: SamplingParams| {
            let mut s = sampler(p);
            let mut seen = [false; 5];
            for _ in 0..5000 {
                seen[s.sample(&mut logits.clone(), &[]).unwrap() as usize] = true;
            }
            seen
        };
        let k2 = SamplingParams { top_k: 2, ..params(1.0) };
        assert_eq!(support(k2), [true, true, false, false, false]);
        let p85 = SamplingParams { top_p: 0.85, ..params(1.0) };
        assert_eq!(support(p85), [true, true, true, false, false]);
        let p65 = SamplingParams { top_p: 0.65, ..params(1.0) };
        assert_eq!(support(p65), [true, true, false, false, false]);
        // min_p 0.2: floor 0.08 keeps 0.4, 0.3, 0.2.
        let m = SamplingParams { min_p: 0.2, ..params(1.0) };
        assert_eq!(support(m), [true, true, true, false, false]);
    }

    #[test]
    fn top_k_equals_a_full_sort() {
        let mut rng = Rng::new(11);
        for k in [1usize, 3, 40, 999, 5000] {
            // Coarse values force many ties.
            let logits: Vec<f32> =
                (0..1000).map(|_| (rng.next_f64() * 50.0).floor() as f32).collect();
            let mut got = Vec::new();
            top_k_into(&logits, k, &mut got);
            got.sort_unstable_by(descending);
            let mut want: Vec<(u32, f32)> =
                logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
            want.sort_unstable_by(descending);
            want.truncate(k);
            let vals = |v: &[(u32, f32)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
            assert_eq!(vals(&got), vals(&want), "k={k}");
        }
    }

    #[test]
    fn top_p_counts_mass_below_the_min_p_floor() {
        // p = [0.5, 0.3, 0.2 spread over 1000 tiny tokens]. top_p 0.6 over the whole
        // vocabulary keeps the first two (0.5 < 0.6 ≤ 0.8); min_p 0.01 drops the tiny ones.
        // Were their mass ignored (total 0.8, target 0.48), top_p would keep just the first.
        let mut logits = vec![(0.2f32 / 1000.0).ln(); 1002];
        logits[0] = 0.5f32.ln();
        logits[1] = 0.3f32.ln();
        let p = SamplingParams { top_p: 0.6, min_p: 0.01, ..params(1.0) };
        let mut s = sampler(p);
        let mut seen = [false; 2];
        for _ in 0..2000 {
            let t = s.sample(&mut logits.clone(), &[]).unwrap() as usize;
            assert!(t < 2, "token {t} is below the min-p floor");
            seen[t] = true;
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn repeat_penalty_matches_llama_cpp_rule() {
        let mut l = [2.0f32, -2.0, 1.0];
        apply_repeat_penalty(&mut l, &[0, 1, 0, 0], 2.0);
        assert_eq!(l, [1.0, -4.0, 1.0]);
        // Greedy flips away from a repeated token.
        let mut s =
            sampler(SamplingParams { repeat_penalty: 2.0, repeat_last_n: 1, ..params(0.0) });
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0]).unwrap(), 1);
        assert_eq!(s.sample(&mut [2.0, 1.5], &[0, 1]).unwrap(), 0, "only the last 1 token counts");
    }

    #[test]
    fn same_seed_same_draws_different_seed_differs() {
        let logits: Vec<f32> = (0..1000).map(|i| (i % 17) as f32 * 0.1).collect();
        let run = |seed| {
            let mut s = sampler(SamplingParams { seed: Some(seed), ..params(1.0) });
            (0..50).map(|_| s.sample(&mut logits.clone(), &[]).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn validation_names_the_setting() {
        let bad = |p: SamplingParams| {
            let e = p.check().unwrap_err();
            e.downcast_ref::<crate::pipeline::settings::SettingError>().unwrap().setting.clone()
        };
        assert_eq!(bad(SamplingParams { top_p: 0.0, ..params(1.0) }), "top_p");
        assert_eq!(bad(SamplingParams { top_p: 1.5, ..params(1.0) }), "top_p");
        assert_eq!(bad(params(-1.0)), "temperature");
        assert_eq!(bad(params(f64::NAN)), "temperature");
        assert_eq!(bad(params(1e-9)), "temperature", "would overflow f32 logits");
        assert_eq!(bad(SamplingParams { min_p: 2.0, ..params(1.0) }), "min_p");
        assert_eq!(
            bad(SamplingParams { repeat_penalty: f64::INFINITY, ..params(1.0) }),
            "repeat_penalty"
        );
        assert_eq!(bad(SamplingParams { seed: Some(1 << 53), ..params(1.0) }), "seed");
        assert!(SamplingParams { seed: Some(MAX_SEED), ..params(1.0) }.check().is_ok());
        assert!(SamplingParams::default().check().is_ok());
    }

    #[test]
    fn no_finite_score_is_no_token_and_huge_top_k_is_all() {
        for t in [0.0, 1.0] {
            let mut s = sampler(params(t));
            assert_eq!(s.sample(&mut [f32::NAN; 4], &[]), None, "T={t}");
            assert_eq!(s.sample(&mut [f32::NEG_INFINITY; 4], &[]), None, "T={t}");
            assert_eq!(s.sample(&mut [f32::NAN, 1.0, f32::NAN], &[]), Some(1), "T={t}");
        }
        let mut s = sampler(SamplingParams { top_k: usize::MAX, ..params(1.0) });
        assert!(s.sample(&mut [0.0, 1.0, 2.0], &[]).is_some());
    }
}
