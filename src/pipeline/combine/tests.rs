//! Tests of the combiner against closed forms and independent computations.

use super::exact::{eq6_log_scores, mod_log_probs, Scratch, PRUNE_MASS};
use super::*;
use crate::pipeline::divergence::tests::ALL;
use crate::pipeline::divergence::Divergence;
use crate::pipeline::recipe::{Policy, Recipe};
use crate::pipeline::sample::Rng;

/// A sampler that draws from the distribution as it is (no truncation, no penalty).
fn plain_sampler(seed: u64) -> crate::pipeline::sample::Sampler {
    let params = crate::pipeline::sample::SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 0,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        logit_bias: Vec::new(),
        seed: Some(seed),
    };
    crate::pipeline::sample::Sampler::new(params, seed)
}

/// The terms a recipe with a reference and `w.len()` experts gets for these weights.
fn terms(div: Divergence, w: &[f64]) -> Vec<Term> {
    let policy = |name: &str| Policy { name: name.into(), ..Policy::default() };
    let experts = (0..w.len()).map(|i| policy(&format!("e{i}"))).collect();
    let recipe = Recipe::new(div, Some(policy("reference")), experts, w.to_vec()).unwrap();
    recipe.terms().unwrap()
}

/// A combiner over a recipe with a reference (see [`terms`]).
fn combiner(div: Divergence, w: &[f64], plausibility: f64) -> Combiner {
    Combiner::new(div, &terms(div, w), plausibility).unwrap()
}

/// Index of a term's policy among (reference, expert 1, …).
fn index(role: Role) -> usize {
    match role {
        Role::Reference => 0,
        Role::Expert(i) => 1 + i,
    }
}

/// The experts' log-probabilities one after another, as the exact solvers take them.
fn flat(lp: &[Vec<f64>]) -> Vec<f64> {
    lp.concat()
}

fn norm(l: &[f64]) -> Vec<f64> {
    let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z = m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    l.iter().map(|v| v - z).collect()
}

fn random_logits(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| (rng.next_f64() - 0.5) * scale).collect()
}

fn random_simplex(rng: &mut Rng, m: usize) -> Vec<f64> {
    let raw: Vec<f64> = (0..m).map(|_| rng.next_f64() + 0.05).collect();
    let s: f64 = raw.iter().sum();
    raw.iter().map(|x| x / s).collect()
}

/// Plain bisection for Z in Σ_v π_ref(v)·h(u(v) − Z) = 1, using only the textbook h: an
/// independent check of the log-space solver.
fn plain_normalise(div: Divergence, p_ref: &[f64], u: &[f64]) -> Vec<f64> {
    let total = |z: f64| -> f64 {
        p_ref
            .iter()
            .zip(u)
            .map(|(p, u)| {
                if div.pole().is_some_and(|pole| u - z >= pole) {
                    f64::INFINITY
                } else {
                    p * div.h(u - z)
                }
            })
            .sum()
    };
    let (mut lo, mut hi) = match div.pole() {
        // Z must keep every u − Z below the pole.
        Some(pole) => {
            let umax = u.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            (umax - pole, umax - pole + 100.0)
        }
        None => (-100.0, 100.0),
    };
    for _ in 0..400 {
        let mid = 0.5 * (lo + hi);
        if total(mid) > 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let z = 0.5 * (lo + hi);
    p_ref.iter().zip(u).map(|(p, u)| p * div.h(u - z)).collect()
}

fn mod_probs(div: Divergence, w: &[f64], lp_ref: &[f64], lp: &[Vec<f64>]) -> Vec<f64> {
    let mut out = Vec::new();
    mod_log_probs(div, w, lp_ref, &flat(lp), &mut out, &mut Scratch::default());
    out.iter().map(|x| x.exp()).collect()
}

#[test]
fn optimality_mod_equals_the_optimum_for_the_weighted_reward() {
    // π_i = the f-regularised optimum for reward R_i (β = 1): π_i = π_ref·h(R_i − Z_i).
    // MOD's p for weights w must equal the optimum for Σ w_i R_i.
    let mut rng = Rng::new(2024);
    for div in ALL {
        for trial in 0..20 {
            let n = 6 + trial % 5;
            let m = 2 + trial % 3;
            let p_ref: Vec<f64> =
                norm(&random_logits(&mut rng, n, 4.0)).iter().map(|x| x.exp()).collect();
            let rewards: Vec<Vec<f64>> = (0..m).map(|_| random_logits(&mut rng, n, 3.0)).collect();
            let experts: Vec<Vec<f64>> =
                rewards.iter().map(|r| plain_normalise(div, &p_ref, r)).collect();
            let w = random_simplex(&mut rng, m);
            let combined: Vec<f64> =
                (0..n).map(|v| rewards.iter().zip(&w).map(|(r, wi)| wi * r[v]).sum()).collect();
            let want = plain_normalise(div, &p_ref, &combined);

            let lp_ref: Vec<f64> = p_ref.iter().map(|p| p.ln()).collect();
            let lp: Vec<Vec<f64>> =
                experts.iter().map(|e| e.iter().map(|p| p.ln()).collect()).collect();
            let got = mod_probs(div, &w, &lp_ref, &lp);
            for v in 0..n {
                assert!(
                    (got[v] - want[v]).abs() < 1e-9,
                    "{div} trial {trial} token {v}: {} vs {}",
                    got[v],
                    want[v]
                );
            }
        }
    }
}

#[test]
fn reverse_kl_is_the_weighted_product_with_reference_factor() {
    let mut rng = Rng::new(5);
    for w in [vec![0.3, 0.7], vec![0.8, 0.9], vec![1.5, -0.5], vec![2.0, -1.5, 0.25]] {
        let n = 50;
        let lp_ref = norm(&random_logits(&mut rng, n, 10.0));
        let lp: Vec<Vec<f64>> = w.iter().map(|_| norm(&random_logits(&mut rng, n, 10.0))).collect();
        let got = mod_probs(Divergence::ReverseKl, &w, &lp_ref, &lp);
        let s: f64 = w.iter().sum();
        let unnorm: Vec<f64> = (0..n)
            .map(|v| {
                lp_ref[v].exp().powf(1.0 - s)
                    * lp.iter().zip(&w).map(|(l, wi)| l[v].exp().powf(*wi)).product::<f64>()
            })
            .collect();
        let z: f64 = unnorm.iter().sum();
        for v in 0..n {
            assert!((got[v] - unnorm[v] / z).abs() < 1e-12, "w={w:?}");
        }
    }
}

#[test]
fn forward_kl_at_unit_sum_and_zero_normaliser_is_the_weighted_harmonic_mean() {
    let mut rng = Rng::new(6);
    let n = 40;
    let lp_ref = norm(&random_logits(&mut rng, n, 8.0));
    let lp: Vec<Vec<f64>> = (0..3).map(|_| norm(&random_logits(&mut rng, n, 8.0))).collect();
    let w = [0.2, 0.5, 0.3];
    let mut scores = Vec::new();
    eq6_log_scores(
        Divergence::ForwardKl,
        &w,
        &lp_ref,
        &flat(&lp),
        &mut scores,
        &mut Scratch::default(),
    );
    for v in 0..n {
        let harmonic = 1.0 / lp.iter().zip(w).map(|(l, wi)| wi / l[v].exp()).sum::<f64>();
        assert!((scores[v].exp() - harmonic).abs() < 1e-12 * harmonic.max(1e-300));
    }
}

#[test]
fn alpha_one_equals_forward_kl_and_alpha_to_zero_tends_to_reverse_kl() {
    let mut rng = Rng::new(7);
    let n = 60;
    let lp_ref = norm(&random_logits(&mut rng, n, 8.0));
    let lp: Vec<Vec<f64>> = (0..2).map(|_| norm(&random_logits(&mut rng, n, 8.0))).collect();
    let w = [0.35, 0.65];
    let fkl = mod_probs(Divergence::ForwardKl, &w, &lp_ref, &lp);
    let a1 = mod_probs(Divergence::Alpha(1.0), &w, &lp_ref, &lp);
    for v in 0..n {
        assert!((fkl[v] - a1[v]).abs() < 1e-12);
    }
    let rkl = mod_probs(Divergence::ReverseKl, &w, &lp_ref, &lp);
    let mut last = f64::INFINITY;
    for a in [0.1, 1e-2, 1e-3, 1e-4] {
        let pa = mod_probs(Divergence::Alpha(a), &w, &lp_ref, &lp);
        let dist: f64 = pa.iter().zip(&rkl).map(|(x, y)| (x - y).abs()).sum();
        assert!(dist < last, "α = {a}: L1 {dist} did not shrink (was {last})");
        last = dist;
    }
    assert!(last < 1e-3, "α = 1e-4 still {last} from reverse KL");
}

/// 262,144-token cases: extreme (ratios up to e^±60, a pole token), peaked and flat.
fn big_case(kind: &str, seed: u64) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = 262_144;
    let mut rng = Rng::new(seed);
    let (ref_scale, exp_scale) = match kind {
        "flat" => (0.1, 0.1),
        "peaked" => (40.0, 40.0),
        _ => (60.0, 60.0),
    };
    let mut lref = random_logits(&mut rng, n, ref_scale);
    let mut experts: Vec<Vec<f64>> =
        (0..2).map(|_| random_logits(&mut rng, n, exp_scale)).collect();
    if kind == "peaked" {
        lref[17] += 60.0;
        experts[0][17] += 60.0;
        experts[1][99] += 60.0;
    }
    if kind == "extreme" {
        // A token the reference finds nearly impossible but both experts boost: the pole.
        lref[5] -= 200.0;
        experts[0][5] += 40.0;
        experts[1][5] += 40.0;
    }
    (norm(&lref), experts.iter().map(|e| norm(e)).collect())
}

#[test]
fn normaliser_sums_to_one_at_full_vocabulary_size() {
    for kind in ["extreme", "peaked", "flat"] {
        let (lp_ref, lp) = big_case(kind, 11);
        for div in ALL {
            let p = mod_probs(div, &[0.4, 0.6], &lp_ref, &lp);
            let total: f64 = p.iter().sum();
            assert!((total - 1.0).abs() < 1e-9, "{div} {kind}: Σp = {total}");
            assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0), "{div} {kind}: bad value");
        }
    }
}

#[test]
fn pruning_drops_at_most_the_bounded_mass() {
    // Compare the pruned solve with a plain one over the whole set (bisection, textbook h):
    // the distributions may differ by at most PRUNE_MASS (plus rounding) in total variation.
    let n = 4096;
    let mut rng = Rng::new(12);
    // Ratios small enough that the textbook h stays accurate (JSD's plain g loses the gap to
    // its pole beyond ratios of ~e^20); three quarters of the tokens unlikely under every
    // policy alike, so that they can be pruned.
    let gen = |rng: &mut Rng| {
        let mut l = random_logits(rng, n, 10.0);
        l.iter_mut().skip(n / 4).for_each(|x| *x -= 45.0);
        norm(&l)
    };
    let lp_ref = gen(&mut rng);
    let lp: Vec<Vec<f64>> = (0..2).map(|_| gen(&mut rng)).collect();
    let w = [0.5, 0.5];
    for div in
        [Divergence::ForwardKl, Divergence::Jsd, Divergence::Alpha(0.5), Divergence::Jeffreys]
    {
        let mut out = Vec::new();
        let solve = mod_log_probs(div, &w, &lp_ref, &flat(&lp), &mut out, &mut Scratch::default());
        assert!(solve.pruned > n / 10, "{div}: only {} of {n} pruned", solve.pruned);
        let p_ref: Vec<f64> = lp_ref.iter().map(|x| x.exp()).collect();
        let u: Vec<f64> = (0..n)
            .map(|v| w.iter().zip(&lp).map(|(wi, l)| wi * div.g((l[v] - lp_ref[v]).exp())).sum())
            .collect();
        let want = plain_normalise(div, &p_ref, &u);
        let tv: f64 = out.iter().zip(&want).map(|(g, w)| (g.exp() - w).abs()).sum::<f64>() / 2.0;

        assert!(tv <= PRUNE_MASS + 1e-10, "{div}: TV {tv}");
    }
}

#[test]
fn reverse_kl_greedy_is_the_argmax_of_the_exact_distribution() {
    // The combiner's f32 weighted sum of raw logits against the general MOD formula with the
    // textbook g and h (p = π_ref·h(Σ w_i g(π_i/π_ref) − Z), Z by plain bisection).
    let mut rng = Rng::new(13);
    let n = 1000;
    for w in [vec![0.5, 0.5], vec![1.5, -0.5], vec![0.7, 0.6]] {
        let logits: Vec<Vec<f32>> = (0..3)
            .map(|_| random_logits(&mut rng, n, 20.0).iter().map(|&x| x as f32).collect())
            .collect();
        let mut c = combiner(Divergence::ReverseKl, &w, 0.0);
        let inputs: Vec<&[f32]> = c.terms().iter().map(|(r, _)| &logits[index(*r)][..]).collect();
        let mut out = vec![0f32; n];
        c.combine(&inputs, true, &mut out);
        let greedy = crate::pipeline::sample::argmax(&out);
        let lp: Vec<Vec<f64>> = logits
            .iter()
            .map(|l| norm(&l.iter().map(|&x| f64::from(x)).collect::<Vec<_>>()))
            .collect();
        let div = Divergence::ReverseKl;
        let p_ref: Vec<f64> = lp[0].iter().map(|x| x.exp()).collect();
        let u: Vec<f64> = (0..n)
            .map(|v| {
                w.iter().zip(&lp[1..]).map(|(wi, l)| wi * div.g((l[v] - lp[0][v]).exp())).sum()
            })
            .collect();
        let exact = plain_normalise(div, &p_ref, &u);
        let total: f64 = exact.iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "the textbook solve normalises: {total}");
        let best = (0..n).max_by(|&a, &b| exact[a].total_cmp(&exact[b])).unwrap();
        assert_eq!(greedy as usize, best, "w={w:?}");
        // And the whole distribution, not just its mode.
        let lse = logsumexp(&out);
        for v in 0..n {
            let got = (f64::from(out[v]) - lse).exp();
            assert!((got - exact[v]).abs() < 1e-5 * exact[v].max(1e-3), "w={w:?} v={v}");
        }
    }
}

/// Logits over a small vocabulary where token 3 is the pole: the reference gives it e^-40
/// of the top, both experts make it likely-ish but not top.
fn pole_case() -> Vec<Vec<f32>> {
    let mut lref = vec![0f32; 50];
    let mut e1 = vec![0f32; 50];
    let mut e2 = vec![0f32; 50];
    for v in 0..50 {
        lref[v] = -((v % 7) as f32);
        e1[v] = -((v % 5) as f32);
        e2[v] = -((v % 3) as f32);
    }
    lref[3] = -45.0;
    e1[3] = -6.0;
    e2[3] = -7.0;
    vec![lref, e1, e2]
}

#[test]
fn plausibility_keeps_pole_tokens_out_and_zero_keeps_them_in() {
    let logits = pole_case();
    for div in ALL {
        let inputs: Vec<&[f32]> = logits.iter().map(|v| &v[..]).collect();
        let mut c = combiner(div, &[0.5, 0.5], 1e-2);
        let inputs = if div == Divergence::ReverseKl { &inputs[1..] } else { &inputs[..] };
        let mut out = vec![0f32; 50];
        c.combine(inputs, false, &mut out);
        assert_eq!(out[3], f32::NEG_INFINITY, "{div}: the pole token must be excluded");
        let mut sampler = plain_sampler(1);
        for _ in 0..2000 {
            assert_ne!(sampler.sample(&mut out.clone(), &[]).unwrap(), 3, "{div}");
        }
        let mut c = combiner(div, &[0.5, 0.5], 0.0);
        c.combine(inputs, false, &mut out);
        assert!(out[3].is_finite(), "{div}: with τ = 0 every token has mass");
    }
}

#[test]
fn combiner_matches_exact_over_the_plausible_set() {
    // The f32 path (normalise, select, gather, scatter) against exact in f64 on the same set.
    let logits = pole_case();
    let inputs: Vec<&[f32]> = logits.iter().map(|v| &v[..]).collect();
    for div in ALL.into_iter().filter(|d| *d != Divergence::ReverseKl) {
        let mut c = combiner(div, &[0.3, 0.7], 0.0);
        let mut out = vec![0f32; 50];
        c.combine(&inputs, false, &mut out);
        let to64 = |l: &[f32]| norm(&l.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
        let p =
            mod_probs(div, &[0.3, 0.7], &to64(&logits[0]), &[to64(&logits[1]), to64(&logits[2])]);
        let lse = logsumexp(&out);
        for v in 0..50 {
            let got = (f64::from(out[v]) - lse).exp();
            assert!((got - p[v]).abs() < 1e-5, "{div} token {v}: {got} vs {}", p[v]);
        }
    }
}

#[test]
fn eq6_candidate_pruning_never_loses_the_argmax() {
    let mut rng = Rng::new(21);
    for div in ALL.into_iter().filter(|d| *d != Divergence::ReverseKl) {
        for _ in 0..20 {
            let n = 3000;
            let logits: Vec<Vec<f32>> = (0..3)
                .map(|_| random_logits(&mut rng, n, 25.0).iter().map(|&x| x as f32).collect())
                .collect();
            let inputs: Vec<&[f32]> = logits.iter().map(|v| &v[..]).collect();
            let mut c = combiner(div, &[0.5, 0.5], 0.0);
            let mut out = vec![0f32; n];
            c.combine(&inputs, true, &mut out);
            let got = crate::pipeline::sample::argmax(&out) as usize;
            let to64 = |l: &[f32]| norm(&l.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
            let (lr, l1, l2) = (to64(&logits[0]), to64(&logits[1]), to64(&logits[2]));
            let mut all = Vec::new();
            let mut scratch = Scratch::default();
            eq6_log_scores(div, &[0.5, 0.5], &lr, &flat(&[l1, l2]), &mut all, &mut scratch);
            let best = (0..n).max_by(|&a, &b| all[a].total_cmp(&all[b])).unwrap();
            assert!(all[best] - all[got] < 1e-4, "{div}: picked {got}, best {best}");
        }
    }
}

#[test]
fn combiner_refuses_bad_parameters() {
    let t = terms(Divergence::ReverseKl, &[0.5, 0.5]);
    assert!(Combiner::new(Divergence::ReverseKl, &t, 1.0).is_err(), "τ must be below 1");
    assert!(Combiner::new(Divergence::ReverseKl, &t, -0.1).is_err());
    assert!(Combiner::new(Divergence::ReverseKl, &[], 0.0).is_err(), "no terms");
    // Other divergences take the reference first.
    assert!(Combiner::new(Divergence::Jsd, &t, 0.0).is_err());
    assert!(Combiner::new(Divergence::Jsd, &terms(Divergence::Jsd, &[0.5, 0.5]), 0.0).is_ok());
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
fn fast_logsumexp_matches_f64() {
    let mut rng = Rng::new(3);
    for scale in [0.01, 1.0, 30.0, 200.0] {
        let x: Vec<f32> =
            random_logits(&mut rng, 262_144, scale).iter().map(|&v| v as f32).collect();
        let want = {
            let m = x.iter().map(|&v| f64::from(v)).fold(f64::NEG_INFINITY, f64::max);
            m + x.iter().map(|&v| (f64::from(v) - m).exp()).sum::<f64>().ln()
        };
        assert!((logsumexp(&x) - want).abs() < 2e-6 * want.abs().max(1.0), "scale {scale}");
    }
    for x in [-87.0f32, -20.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 20.0, 88.0] {
        let rel = (f64::from(exp_f32(x)) - f64::from(x).exp()).abs() / f64::from(x).exp();
        assert!(rel < 3e-7, "exp({x}): rel error {rel}");
    }
    assert_eq!(logsumexp(&[f32::NEG_INFINITY; 3]), f64::NEG_INFINITY);
    let mut y = [-1e30f32, 0.0, f32::NEG_INFINITY];
    log_softmax(&mut y);
    assert_eq!(y[1], 0.0);
    assert_eq!(y[2], f32::NEG_INFINITY);
}

#[test]
fn plausibility_zero_samples_the_exact_distribution() {
    // χ² goodness of fit of 40,000 draws against exact MOD probabilities over a whole
    // (small) vocabulary, for reverse KL with S ≠ 1 and for a pole divergence.
    let logits = pole_case();
    let inputs: Vec<&[f32]> = logits.iter().map(|v| &v[..]).collect();
    let to64 = |l: &[f32]| norm(&l.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
    for (div, w) in [(Divergence::ReverseKl, [0.7, 0.6]), (Divergence::ForwardKl, [0.5, 0.5])] {
        let mut c = combiner(div, &w, 0.0);
        let k = c.terms().len();
        let mut out = vec![0f32; 50];
        c.combine(&inputs[3 - k..], false, &mut out);
        let p = mod_probs(div, &w, &to64(&logits[0]), &[to64(&logits[1]), to64(&logits[2])]);
        let mut sampler = plain_sampler(77);
        let n = 40_000;
        let mut counts = vec![0usize; 50];
        for _ in 0..n {
            counts[sampler.sample(&mut out.clone(), &[]).unwrap() as usize] += 1;
        }
        // Pool tokens with expected count < 5 into one cell.
        let (mut chi2, mut cells, mut rare_e, mut rare_o) = (0.0, 0, 0.0, 0.0);
        for v in 0..50 {
            let e = p[v] * n as f64;
            if e < 5.0 {
                rare_e += e;
                rare_o += counts[v] as f64;
            } else {
                chi2 += (counts[v] as f64 - e).powi(2) / e;
                cells += 1;
            }
        }
        if rare_e > 0.0 {
            chi2 += (rare_o - rare_e).powi(2) / rare_e.max(1.0);
            cells += 1;
        }
        // 99.9th percentile of χ² with ≤ 50 degrees of freedom is below 90.
        assert!(chi2 < 90.0, "{div}: χ² = {chi2} over {cells} cells");
    }
}

#[test]
fn whole_scores_every_token_as_the_exact_formula_does() {
    // Greedy: eq. 6 at Z = 0 for every token (no pruning), so that a constraint that
    // forbids the tokens that would win still finds the best allowed one. Sampling: the
    // whole vocabulary, whatever the plausibility threshold.
    let mut rng = Rng::new(33);
    let n = 2000;
    for div in ALL.into_iter().filter(|d| *d != Divergence::ReverseKl) {
        let logits: Vec<Vec<f32>> = (0..3)
            .map(|_| random_logits(&mut rng, n, 25.0).iter().map(|&x| x as f32).collect())
            .collect();
        let inputs: Vec<&[f32]> = logits.iter().map(|v| &v[..]).collect();
        let to64 = |l: &[f32]| norm(&l.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
        let (lr, l1, l2) = (to64(&logits[0]), to64(&logits[1]), to64(&logits[2]));
        let mut want = Vec::new();
        let mut scratch = Scratch::default();
        eq6_log_scores(div, &[0.5, 0.5], &lr, &flat(&[l1, l2]), &mut want, &mut scratch);
        let mut c = combiner(div, &[0.5, 0.5], 0.1);
        let mut out = vec![0f32; n];
        c.combine_whole(&inputs, true, &mut out);
        // Scores carry a constant offset (the experts' logit scale): compare differences.
        let shift = f64::from(out[0]) - want[0];
        for v in 0..n {
            assert!((f64::from(out[v]) - want[v] - shift).abs() < 1e-3, "{div} token {v}");
        }
        c.combine_whole(&inputs, false, &mut out);
        let mut exact = vec![0f32; n];
        combiner(div, &[0.5, 0.5], 0.0).combine(&inputs, false, &mut exact);
        assert_eq!(out, exact, "{div}: sampling as with τ = 0");
        c.combine(&inputs, false, &mut out);
        assert!(out.iter().any(|x| !x.is_finite()), "{div}: τ = 0.1 leaves tokens out");
    }
}

#[test]
fn alpha_up_to_its_documented_limit_gives_a_distribution_on_disagreeing_experts() {
    // Experts that each rule out what the other prefers (log-ratios of ±100 nats), at every α
    // the help allows: the distribution is finite and sums to 1.
    let mut rng = Rng::new(5);
    for case in 0..40 {
        let n = 2000;
        let scale = [5.0, 30.0, 80.0, 150.0][case % 4];
        let mut lref = random_logits(&mut rng, n, scale);
        let mut experts: Vec<Vec<f64>> =
            (0..2).map(|_| random_logits(&mut rng, n, scale)).collect();
        let (first, second) = experts.split_at_mut(1);
        for (v, (x, y)) in first[0].iter_mut().zip(&mut second[0]).enumerate() {
            let (up, down) = if v % 2 == 0 { (x, y) } else { (y, x) };
            *up += 50.0;
            *down -= 50.0;
        }
        if case % 3 == 0 {
            lref[7] += 120.0;
        }
        let (lp_ref, lp) = (norm(&lref), experts.iter().map(|e| norm(e)).collect::<Vec<_>>());
        let w = random_simplex(&mut rng, 2);
        for a in [0.5, 2.0, 5.0, 10.0, 19.0, 20.0] {
            let div = Divergence::Alpha(a);
            let mut out = Vec::new();
            mod_log_probs(div, &w, &lp_ref, &flat(&lp), &mut out, &mut Scratch::default());
            let total: f64 = out.iter().map(|x| x.exp()).sum();
            assert!((total - 1.0).abs() < 1e-6, "case {case} alpha {a}: Σp = {total}");
            assert!(out.iter().all(|x| !x.is_nan()), "case {case} alpha {a}: NaN");
            // Ordered as the formula says: p/π_ref falls as the gap c(v) grows.
            let mut by_gap: Vec<(f64, f64)> = (0..n)
                .map(|v| {
                    let t: Vec<f64> = (0..2).map(|i| lp[i][v] - lp_ref[v]).collect();
                    (div.log_gap(&w, &t), out[v] - lp_ref[v])
                })
                .filter(|(_, r)| r.is_finite())
                .collect();
            by_gap.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(by_gap.windows(2).all(|p| p[1].1 <= p[0].1 + 1e-9), "case {case} alpha {a}");
            // The decoder's path (f32 logits, plausible set, sampler) draws a token.
            let logits: Vec<Vec<f32>> = std::iter::once(&lp_ref)
                .chain(&lp)
                .map(|l| l.iter().map(|&x| x as f32).collect())
                .collect();
            let inputs: Vec<&[f32]> = logits.iter().map(|v| &v[..]).collect();
            for plausibility in [0.0, 1e-4] {
                let mut c = combiner(div, &w, plausibility);
                let mut scores = vec![0f32; n];
                c.combine(&inputs, false, &mut scores);
                let drawn = plain_sampler(case as u64).sample(&mut scores, &[]);
                assert!(drawn.is_some(), "case {case} alpha {a} plausibility {plausibility}");
            }
        }
    }
}
