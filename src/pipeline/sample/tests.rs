//! Tests of the sampler against closed forms and brute force.

use super::*;

fn params(temperature: f64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 0,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        logit_bias: Vec::new(),
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
        let logits: Vec<f32> = (0..1000).map(|_| (rng.next_f64() * 50.0).floor() as f32).collect();
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
    let mut s = sampler(SamplingParams { repeat_penalty: 2.0, repeat_last_n: 1, ..params(0.0) });
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
        e.downcast_ref::<crate::error::SettingError>().unwrap().setting.clone()
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

/// A constraint that allows a fixed set of tokens and counts how many it was asked about.
struct Allow {
    allowed: Vec<bool>,
    asked: usize,
}

impl crate::pipeline::constraint::Constraint for Allow {
    fn filter(&mut self, candidates: &mut [(u32, f32)]) {
        self.asked += candidates.len();
        for c in candidates {
            if !self.allowed.get(c.0 as usize).copied().unwrap_or(false) {
                c.1 = f32::NEG_INFINITY;
            }
        }
    }

    fn accept(&mut self, _: u32) -> Result<()> {
        Ok(())
    }
}

fn random_logits(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng.next_f64() * 20.0 - 10.0) as f32).collect()
}

#[test]
fn constrained_greedy_is_the_argmax_of_the_allowed_and_asks_little() {
    let mut rng = Rng::new(5);
    for trial in 0..200 {
        let n = 5000;
        let logits = random_logits(&mut rng, n);
        let density = [0.5, 0.01, 0.0005][trial % 3];
        let allowed: Vec<bool> = (0..n).map(|_| rng.next_f64() < density).collect();
        let want = (0..n)
            .filter(|&v| allowed[v])
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)));
        let mut c = Allow { allowed, asked: 0 };
        let mut s = sampler(params(0.0));
        let got = s.sample_constrained(&mut logits.clone(), &[], &mut c);
        match want {
            Some(w) => assert_eq!(got, Ok(w as u32), "trial {trial}"),
            None => assert_eq!(got, Err(NoToken::NothingAllowed)),
        }
        if density == 0.5 {
            assert!(c.asked < 200, "asked about {} tokens", c.asked);
        }
    }
}

#[test]
fn constrained_sampling_follows_the_masked_distribution() {
    // p ∝ exp(logits) over the allowed tokens only; 100k draws, each within 5 σ, for the
    // whole vocabulary and with top-k 3 (the 3 best allowed tokens).
    let logits = [2.0f32, 1.5, 1.0, 0.5, 0.0, -0.5];
    let allowed = vec![false, true, false, true, true, true];
    for top_k in [0usize, 3] {
        let mut s = sampler(SamplingParams { top_k, ..params(1.0) });
        let mut c = Allow { allowed: allowed.clone(), asked: 0 };
        let n = 100_000;
        let mut counts = [0usize; 6];
        for _ in 0..n {
            counts[s.sample_constrained(&mut logits.clone(), &[], &mut c).unwrap() as usize] += 1;
        }
        let kept: Vec<usize> = if top_k == 0 { vec![1, 3, 4, 5] } else { vec![1, 3, 4] };
        let z: f64 = kept.iter().map(|&v| f64::from(logits[v]).exp()).sum();
        for v in 0..6 {
            let p = if kept.contains(&v) { f64::from(logits[v]).exp() / z } else { 0.0 };
            let sigma = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
            let f = counts[v] as f64 / n as f64;
            assert!((f - p).abs() <= 5.0 * sigma, "top_k {top_k} token {v}: {f} vs {p}");
        }
    }
}

#[test]
fn constrained_top_k_equals_brute_force() {
    let mut rng = Rng::new(9);
    for trial in 0..100 {
        let n = 3000;
        let logits = random_logits(&mut rng, n);
        let allowed: Vec<bool> = (0..n).map(|_| rng.next_f64() < 0.02).collect();
        let k = 1 + trial % 50;
        let mut want: Vec<usize> = (0..n).filter(|&v| allowed[v]).collect();
        want.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        want.truncate(k);
        // A sharp temperature makes every kept token likely enough to be seen.
        let mut s = sampler(SamplingParams { top_k: k, ..params(1000.0) });
        let mut c = Allow { allowed, asked: 0 };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..(k * 60) {
            seen.insert(s.sample_constrained(&mut logits.clone(), &[], &mut c).unwrap() as usize);
        }
        let want: std::collections::BTreeSet<usize> = want.into_iter().collect();
        assert_eq!(seen, want, "trial {trial}");
    }
}

#[test]
fn the_window_holds_every_allowed_token_that_matters() {
    let mut logits = vec![-100.0f32; 1000];
    logits[3] = 5.0; // forbidden
    logits[7] = 1.0;
    logits[8] = -20.0;
    logits[9] = -40.0; // more than 30 nats below token 7
    let allowed: Vec<bool> = (0..1000).map(|v| v != 3).collect();
    let mut c = Allow { allowed, asked: 0 };
    let mut out = Vec::new();
    allowed_window(&logits, &mut c, &mut out).unwrap();
    assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), vec![7, 8]);
}

#[test]
fn presence_frequency_and_bias_follow_openai_rules() {
    // logit − (frequency · count + presence) for tokens among the recent ones; bias first.
    let mut l = [1.0f32, 1.0, 1.0, 1.0];
    let p = SamplingParams {
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        repeat_last_n: 3,
        logit_bias: vec![(3, -2.0), (99, 1.0)],
        ..params(0.0)
    };
    sampler(p).adjust(&mut l, &[0, 1, 1, 2]);
    // The last 3 tokens are [1, 1, 2]: token 1 twice, token 2 once, token 0 not counted.
    assert_eq!(l, [1.0, 1.0 - 1.0, 1.0 - 0.75, -1.0]);
}

#[test]
fn penalties_and_biases_out_of_range_are_refused() {
    let bad = |p: SamplingParams| {
        let e = p.check().unwrap_err();
        e.downcast_ref::<crate::error::SettingError>().unwrap().setting.clone()
    };
    assert_eq!(bad(SamplingParams { presence_penalty: 2.5, ..params(1.0) }), "presence_penalty");
    assert_eq!(
        bad(SamplingParams { frequency_penalty: f64::NAN, ..params(1.0) }),
        "frequency_penalty"
    );
    assert_eq!(bad(SamplingParams { logit_bias: vec![(1, 101.0)], ..params(1.0) }), "logit_bias");
    assert_eq!(
        bad(SamplingParams { logit_bias: vec![(1, f32::NAN)], ..params(1.0) }),
        "logit_bias"
    );
    let many = (0..2000).map(|t| (t, 1.0)).collect();
    assert_eq!(bad(SamplingParams { logit_bias: many, ..params(1.0) }), "logit_bias");
}
