//! The byte-level view and MOD over bytes against brute force: made-up models over two
//! different vocabularies of one small alphabet, whose next-byte distributions are computed
//! here by summing over every tokenization of every continuation.

use super::*;
use crate::pipeline::combine::Combiner;
use crate::pipeline::divergence::Divergence;
use crate::pipeline::recipe::Role;
use crate::pipeline::sample::{Rng, Sampler, SamplingParams};
use std::collections::HashMap;
use std::sync::Arc;

/// Two vocabularies over the bytes `a b c ␠`: single bytes, different merges, an
/// end-of-generation token and a control token each (empty pieces).
const VOCAB_A: &[&str] =
    &["", "", "a", "b", "c", " ", "ab", "bc", "ca", " a", "abc", "bca", "a ", "aa"];
const EOG_A: u32 = 0;
const VOCAB_B: &[&str] = &["", "a", "b", "c", " ", "ba", "cb", " c", "aa", "bca", "cab", " ab", ""];
const EOG_B: u32 = 12;

/// A made-up model: each token's logit after a token sequence is a hash of both, in [−3, 3].
struct Toy {
    pieces: Vec<Vec<u8>>,
    eog: u32,
    salt: u64,
    cache: HashMap<Vec<u32>, Vec<f64>>,
}

impl Toy {
    fn new(vocab: &[&str], eog: u32, salt: u64) -> Self {
        let pieces = vocab.iter().map(|p| p.as_bytes().to_vec()).collect();
        Self { pieces, eog, salt, cache: HashMap::new() }
    }

    fn byte_vocab(&self) -> Arc<ByteVocab> {
        let eog = self.eog;
        Arc::new(ByteVocab::new(self.pieces.clone(), move |t| t == eog))
    }

    fn logits(&self, path: &[u32]) -> Vec<f32> {
        (0..self.pieces.len() as u32)
            .map(|t| {
                let mut h = self.salt ^ 0x9E37_79B9_7F4A_7C15;
                for &x in path.iter().chain([t].iter()) {
                    h = (h ^ u64::from(x).wrapping_add(0x1234_5678)).wrapping_mul(0x100_0000_01B3);
                    h ^= h >> 29;
                }
                ((h % 10_000) as f32 / 10_000.0) * 6.0 - 3.0
            })
            .collect()
    }

    /// Next-token probabilities in f64, over the text tokens and the end (control tokens
    /// produce no text and get none).
    fn probs(&mut self, path: &[u32]) -> Vec<f64> {
        if let Some(p) = self.cache.get(path) {
            return p.clone();
        }
        let l = self.logits(path);
        let counts = |t: usize| t as u32 == self.eog || !self.pieces[t].is_empty();
        let z: f64 = (0..l.len()).filter(|&t| counts(t)).map(|t| f64::from(l[t]).exp()).sum();
        let p: Vec<f64> =
            (0..l.len()).map(|t| if counts(t) { f64::from(l[t]).exp() / z } else { 0.0 }).collect();
        self.cache.insert(path.to_vec(), p.clone());
        p
    }

    /// P(the text starts with `c`), by brute force over every tokenization.
    fn starts_with(&mut self, c: &[u8]) -> f64 {
        self.covering(&mut Vec::new(), 0, 1.0, c)
    }

    fn covering(&mut self, path: &mut Vec<u32>, pos: usize, p: f64, c: &[u8]) -> f64 {
        if pos == c.len() {
            return p;
        }
        let probs = self.probs(path);
        let mut total = 0.0;
        for (t, &pt) in probs.iter().enumerate() {
            let piece = self.pieces[t].clone();
            if piece.is_empty() || pt == 0.0 {
                continue;
            }
            let rest = &c[pos..];
            if piece.len() >= rest.len() {
                if piece.starts_with(rest) {
                    total += p * pt;
                }
            } else if rest.starts_with(&piece) {
                path.push(t as u32);
                total += self.covering(path, pos + piece.len(), p * pt, c);
                path.pop();
            }
        }
        total
    }

    /// P(the text is exactly `c`), by brute force.
    fn exactly(&mut self, path: &mut Vec<u32>, pos: usize, p: f64, c: &[u8]) -> f64 {
        let probs = self.probs(path);
        if pos == c.len() {
            return p * probs[self.eog as usize];
        }
        let mut total = 0.0;
        for (t, &pt) in probs.iter().enumerate() {
            let piece = self.pieces[t].clone();
            if !piece.is_empty() && c[pos..].starts_with(&piece) && pt > 0.0 {
                path.push(t as u32);
                total += self.exactly(path, pos + piece.len(), p * pt, c);
                path.pop();
            }
        }
        total
    }

    /// The next-outcome distribution after text `b`, by brute force.
    fn next(&mut self, b: &[u8]) -> Vec<f64> {
        let q = self.starts_with(b);
        let mut out: Vec<f64> = (0..=255u8)
            .map(|x| {
                let mut c = b.to_vec();
                c.push(x);
                self.starts_with(&c) / q
            })
            .collect();
        out.push(self.exactly(&mut Vec::new(), 0, 1.0, b) / q);
        out
    }
}

/// Runs the policy on every node the view wants.
fn supply(view: &mut ByteView, toy: &Toy) -> usize {
    let wanted = view.wanted();
    for w in &wanted {
        view.supply(w.id, &toy.logits(&w.tokens));
    }
    wanted.len()
}

fn distribution(view: &ByteView) -> Vec<f64> {
    let mut lp = [0.0; OUTCOMES];
    view.distribution(&mut lp);
    lp.iter().map(|l| l.exp()).collect()
}

fn tv(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / 2.0
}

/// Draws a byte (never the end) from `p`.
fn draw_byte(p: &[f64], rng: &mut Rng) -> u8 {
    let total: f64 = p[..256].iter().sum();
    let mut u = rng.next_f64() * total;
    for (x, &px) in p[..256].iter().enumerate() {
        u -= px;
        if u <= 0.0 && px > 0.0 {
            return x as u8;
        }
    }
    (0..256).rev().find(|&x| p[x] > 0.0).unwrap() as u8
}

fn toys() -> Vec<Toy> {
    vec![
        Toy::new(VOCAB_A, EOG_A, 1),
        Toy::new(VOCAB_B, EOG_B, 2),
        Toy::new(VOCAB_A, EOG_A, 3),
        Toy::new(VOCAB_B, EOG_B, 4),
    ]
}

#[test]
fn the_next_byte_distribution_equals_the_sum_over_every_tokenization() {
    let mut rng = Rng::new(7);
    for mut toy in toys() {
        for _walk in 0..3 {
            let mut view = ByteView::new(toy.byte_vocab(), 0.0, usize::MAX);
            let mut text = Vec::new();
            let mut runs = 0;
            for _ in 0..9 {
                runs += supply(&mut view, &toy);
                let got = distribution(&view);
                let want = toy.next(&text);
                assert!((want.iter().sum::<f64>() - 1.0).abs() < 1e-9, "brute force sums to 1");
                for o in 0..OUTCOMES {
                    assert!(
                        (got[o] - want[o]).abs() < 2e-6,
                        "salt {} text {:?} outcome {o}: {} vs brute force {}",
                        toy.salt,
                        String::from_utf8_lossy(&text),
                        got[o],
                        want[o]
                    );
                }
                let x = draw_byte(&want, &mut rng);
                view.advance(x).unwrap();
                text.push(x);
            }
            assert_eq!(view.text(), &text[..]);
            // Each tokenization is run once: as many runs as nodes ever born, far fewer
            // than the brute force's token sequences.
            assert!(runs >= 9, "at least one run per token boundary");
        }
    }
}

#[test]
fn pruning_drops_at_most_the_tolerance_and_the_next_byte_is_that_close() {
    let mut rng = Rng::new(11);
    let mut first_drops = 0;
    for mut toy in toys() {
        for tolerance in [0.01, 0.05, 0.2] {
            let mut view = ByteView::new(toy.byte_vocab(), tolerance, usize::MAX);
            let mut text = Vec::new();
            let mut dropped_before = 0.0;
            for _ in 0..9 {
                supply(&mut view, &toy);
                let got = distribution(&view);
                let want = toy.next(&text);
                if dropped_before == 0.0 {
                    // Nothing dropped yet, or only at the last byte: exact before, and within
                    // the share dropped right after the first drop.
                    assert!(tv(&got, &want) <= 2e-6 + 0.0, "exact before any drop");
                }
                // What the pruned view can follow (the exact text may need what it dropped).
                let x = draw_byte(&got, &mut rng);
                let dropped = view.advance(x).unwrap();
                text.push(x);
                assert!(dropped <= tolerance + 1e-12, "dropped {dropped} > τ {tolerance}");
                if dropped_before == 0.0 && dropped > 0.0 {
                    first_drops += 1;
                    supply(&mut view, &toy);
                    let got = distribution(&view);
                    let want = toy.next(&text);
                    let d = tv(&got, &want);
                    assert!(d <= dropped + 2e-6, "TV {d} after dropping a share {dropped}");
                }
                dropped_before += dropped;
            }
        }
    }
    assert!(first_drops > 4, "the tolerances were large enough to prune ({first_drops})");
}

#[test]
fn at_most_the_nodes_asked_for_are_followed() {
    let mut rng = Rng::new(5);
    for toy in toys() {
        let mut view = ByteView::new(toy.byte_vocab(), 0.0, 2);
        let mut text = Vec::new();
        for _ in 0..12 {
            supply(&mut view, &toy);
            assert!(view.n_nodes() <= 2);
            let x = draw_byte(&distribution(&view), &mut rng);
            view.advance(x).unwrap();
            text.push(x);
            assert!(view.n_nodes() <= 2);
        }
        // Nodes that went are reported once, so that their caches can be freed.
        let released = view.take_released();
        assert!(!released.is_empty());
        assert!(view.take_released().is_empty());
    }
}

#[test]
fn a_byte_no_token_spells_is_impossible_and_changes_nothing() {
    let toy = Toy::new(VOCAB_A, EOG_A, 1);
    let mut view = ByteView::new(toy.byte_vocab(), 0.0, usize::MAX);
    supply(&mut view, &toy);
    let before = distribution(&view);
    assert_eq!(before[b'z' as usize], 0.0);
    assert_eq!(view.advance(b'z'), Err(Impossible));
    assert!(view.text().is_empty());
    assert_eq!(distribution(&view), before);
}

// ---- MOD over bytes against an independent computation ----

/// g and h of each divergence, written from their definitions.
fn g(d: Divergence, x: f64) -> f64 {
    match d {
        Divergence::ReverseKl => x.ln() + 1.0,
        Divergence::ForwardKl => -1.0 / x,
        Divergence::Jsd => (2.0 * x / (1.0 + x)).ln(),
        Divergence::Alpha(a) => (1.0 - x.powf(-a)) / a,
        Divergence::Jeffreys => x.ln() - 1.0 / x + 1.0,
    }
}

fn h(d: Divergence, u: f64) -> f64 {
    match d {
        Divergence::ReverseKl => (u - 1.0).exp(),
        Divergence::ForwardKl => -1.0 / u,
        Divergence::Jsd => u.exp() / (2.0 - u.exp()),
        Divergence::Alpha(a) => (1.0 - a * u).powf(-1.0 / a),
        Divergence::Jeffreys => {
            // 1 / W0(e^(1−u)): Newton on w + ln w = 1 − u (w·e^w = e^(1−u) in logs).
            let l = 1.0 - u;
            let mut w = if l > 1.0 { l - l.ln() } else { l.exp() };
            for _ in 0..100 {
                w = (w - (w + w.ln() - l) / (1.0 + 1.0 / w)).max(1e-300);
            }
            1.0 / w
        }
    }
}

fn pole(d: Divergence) -> f64 {
    match d {
        Divergence::ForwardKl => 0.0,
        Divergence::Jsd => 2f64.ln(),
        Divergence::Alpha(a) => 1.0 / a,
        _ => f64::INFINITY,
    }
}

/// The MOD distribution over outcomes from each policy's probabilities (reference first),
/// normalised by bisection on Z; outcomes some policy finds impossible get none.
fn brute_mod(d: Divergence, weights: &[f64], p: &[Vec<f64>]) -> Vec<f64> {
    let n = p[0].len();
    let ok = |x: usize| p.iter().all(|q| q[x] > 0.0);
    let u: Vec<f64> = (0..n)
        .map(|x| {
            if !ok(x) {
                return f64::NAN;
            }
            weights.iter().zip(&p[1..]).map(|(w, q)| w * g(d, q[x] / p[0][x])).sum()
        })
        .collect();
    let mass =
        |z: f64| -> f64 { (0..n).filter(|&x| ok(x)).map(|x| p[0][x] * h(d, u[x] - z)).sum() };
    let top = (0..n).filter(|&x| ok(x)).map(|x| u[x]).fold(f64::NEG_INFINITY, f64::max);
    let (mut lo, mut hi) =
        if pole(d).is_finite() { (top - pole(d), top + 60.0) } else { (-60.0, 60.0) };
    for _ in 0..400 {
        let mid = 0.5 * (lo + hi);
        if mass(mid) > 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let z = 0.5 * (lo + hi);
    (0..n).map(|x| if ok(x) { p[0][x] * h(d, u[x] - z) } else { 0.0 }).collect()
}

/// Eq. 6 (Z = 0) scores, for greedy decoding.
fn brute_greedy(d: Divergence, weights: &[f64], p: &[Vec<f64>]) -> Option<usize> {
    let score = |x: usize| {
        let u: f64 = weights.iter().zip(&p[1..]).map(|(w, q)| w * g(d, q[x] / p[0][x])).sum();
        p[0][x] * h(d, u)
    };
    let ok: Vec<usize> = (0..p[0].len()).filter(|&x| p.iter().all(|q| q[x] > 0.0)).collect();
    let mut scored: Vec<(f64, usize)> = ok.iter().map(|&x| (score(x), x)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    // Only a clear winner is compared (the combiner works in f32 on the log scale).
    (scored.len() < 2 || scored[0].0 > scored[1].0 * 1.001).then(|| scored[0].1)
}

fn byte_mod(toys: &[Toy], d: Divergence, weights: &[f64], temperature: f64, seed: u64) -> ByteMod {
    let s: f64 = weights.iter().sum();
    let mut terms = vec![(Role::Reference, 1.0 - s)];
    terms.extend(weights.iter().enumerate().map(|(i, &w)| (Role::Expert(i), w)));
    let combiner = Combiner::new(d, &terms, 0.0).unwrap();
    let params =
        SamplingParams { temperature, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
    let views = toys.iter().map(|t| ByteView::new(t.byte_vocab(), 0.0, usize::MAX)).collect();
    ByteMod::new(views, combiner, Sampler::new(params, seed), temperature == 0.0)
}

fn supply_all(m: &mut ByteMod, toys: &[Toy]) {
    for (k, toy) in toys.iter().enumerate() {
        for w in m.wanted(k) {
            m.supply(k, w.id, &toy.logits(&w.tokens));
        }
    }
}

const DIVERGENCES: [Divergence; 5] = [
    Divergence::ReverseKl,
    Divergence::ForwardKl,
    Divergence::Jsd,
    Divergence::Alpha(0.5),
    Divergence::Jeffreys,
];

#[test]
fn mod_over_bytes_equals_brute_force_for_every_divergence() {
    // A reference and two experts: vocabulary A, B, A.
    let weights = [0.3, 0.7];
    for d in DIVERGENCES {
        for seed in 0..3u64 {
            let mut toys = vec![
                Toy::new(VOCAB_A, EOG_A, 10 + seed),
                Toy::new(VOCAB_B, EOG_B, 20 + seed),
                Toy::new(VOCAB_A, EOG_A, 30 + seed),
            ];
            let mut sampled = byte_mod(&toys, d, &weights, 1.0, seed);
            let mut greedy = byte_mod(&toys, d, &weights, 0.0, seed);
            let mut text: Vec<u8> = Vec::new();
            let mut greedy_checked = 0;
            for _ in 0..6 {
                let brute: Vec<Vec<f64>> = toys.iter_mut().map(|t| t.next(&text)).collect();
                // Sampling: the combined scores are the log of the MOD distribution.
                supply_all(&mut sampled, &toys);
                let choice = sampled.choose().unwrap();
                let scores = sampled.scores();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let z: f64 = scores.iter().map(|&s| f64::from(s - max).exp()).sum();
                let got: Vec<f64> = scores.iter().map(|&s| f64::from(s - max).exp() / z).collect();
                let want = brute_mod(d, &weights, &brute);
                assert!(tv(&got, &want) < 1e-4, "{d:?} {:?}: TV {}", text, tv(&got, &want));
                // Greedy: eq. 6's argmax.
                supply_all(&mut greedy, &toys);
                let pick = greedy.choose().unwrap();
                if let Some(best) = brute_greedy(d, &weights, &brute) {
                    let want = if best == END { Choice::End } else { Choice::Byte(best as u8) };
                    assert_eq!(pick, want, "{d:?} after {text:?}");
                    greedy_checked += 1;
                }
                // Both follow the sampled text (never its end, to go on).
                let x = match choice {
                    Choice::Byte(x) => x,
                    Choice::End => draw_byte(&want, &mut Rng::new(seed)),
                };
                sampled.advance(x).unwrap();
                greedy.advance(x).unwrap();
                text.push(x);
            }
            assert!(greedy_checked >= 4, "{d:?}: clear winners to compare");
        }
    }
}

#[test]
fn two_copies_of_one_policy_with_weights_summing_to_one_give_it_back() {
    let toys =
        vec![Toy::new(VOCAB_B, EOG_B, 5), Toy::new(VOCAB_A, EOG_A, 6), Toy::new(VOCAB_A, EOG_A, 6)];
    let mut m = byte_mod(&toys, Divergence::ReverseKl, &[0.35, 0.65], 1.0, 1);
    let mut single = ByteView::new(toys[1].byte_vocab(), 0.0, usize::MAX);
    let mut rng = Rng::new(3);
    for _ in 0..8 {
        supply_all(&mut m, &toys);
        supply(&mut single, &toys[1]);
        m.choose().unwrap();
        let scores = m.scores();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = scores.iter().map(|&s| f64::from(s - max).exp()).sum();
        let got: Vec<f64> = scores.iter().map(|&s| f64::from(s - max).exp() / z).collect();
        let want = distribution(&single);
        assert!(tv(&got, &want) < 1e-5, "TV {}", tv(&got, &want));
        let x = draw_byte(&want, &mut rng);
        m.advance(x).unwrap();
        single.advance(x).unwrap();
    }
}

#[test]
fn the_utf8_rule_allows_exactly_the_valid_prefixes() {
    let valid_prefix = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    let mut rng = Rng::new(9);
    let interesting: Vec<u8> = [
        0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1,
        0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF,
    ]
    .to_vec();
    for _ in 0..3000 {
        let mut state = Utf8::default();
        let mut text = Vec::new();
        for _ in 0..8 {
            assert_eq!(state.allows(END), std::str::from_utf8(&text).is_ok(), "{text:x?}");
            for x in 0..=255u8 {
                let mut next = text.clone();
                next.push(x);
                assert_eq!(state.allows(x as usize), valid_prefix(&next), "{next:x?}");
            }
            let allowed: Vec<u8> =
                interesting.iter().copied().filter(|&x| state.allows(x as usize)).collect();
            let x = allowed[(rng.next_u64() % allowed.len() as u64) as usize];
            state.push(x);
            text.push(x);
        }
    }
}

#[test]
fn units_parse_by_name() {
    for u in [Unit::Auto, Unit::Tokens, Unit::Bytes] {
        assert_eq!(Unit::parse(u.name()), Some(u));
    }
    assert_eq!(Unit::parse("byte"), None);
}
