//! Every divergence end to end on the default model, checked against an independent
//! recomputation of eq. 6 from the policies' own logits with the textbook g and h; and the
//! divergence rules at the command line.

mod common;

use common::*;

const PROMPT: &str = "The ocean";

/// log(π_ref·h(Σ w_i g(π_i/π_ref))) with textbook formulas, f64.
fn textbook_eq6(div: &str, w: &[f64], lp_ref: f64, lp: &[f64]) -> f64 {
    let r: Vec<f64> = lp.iter().map(|l| (l - lp_ref).exp()).collect();
    let u = |g: &dyn Fn(f64) -> f64| -> f64 { w.iter().zip(&r).map(|(wi, ri)| wi * g(*ri)).sum() };
    let s: f64 = w.iter().sum();
    match div {
        "reverse-kl" => (1.0 - s) * lp_ref + w.iter().zip(lp).map(|(wi, l)| wi * l).sum::<f64>(),
        "forward-kl" => lp_ref + (-1.0 / u(&|x| -1.0 / x)).ln(),
        "jsd" => {
            let e = u(&|x| (2.0 * x / (1.0 + x)).ln()).exp();
            lp_ref + (e / (2.0 - e)).ln()
        }
        "alpha:0.5" => {
            let a = 0.5;
            lp_ref + (1.0 - a * u(&|x| (1.0 - x.powf(-a)) / a)).powf(-1.0 / a).ln()
        }
        "jeffreys" => {
            let y = (1.0 - u(&|x| x.ln() - 1.0 / x + 1.0)).exp();
            if y.is_infinite() {
                return f64::NEG_INFINITY;
            }
            // W0(y) by Newton on w·e^w = y.
            let mut wv = if y > 3.0 { y.ln() - y.ln().ln() } else { 0.5 * y };
            for _ in 0..100 {
                let e = wv.exp();
                let next = wv - (wv * e - y) / (e * (wv + 1.0));
                if (next - wv).abs() < 1e-15 * wv.abs().max(1e-300) {
                    wv = next;
                    break;
                }
                wv = next;
            }
            lp_ref - wv.ln()
        }
        _ => unreachable!(),
    }
}

#[test]
fn greedy_tokens_follow_eq6_recomputed_from_each_policys_logits() {
    let model = load_model(&default_model());
    let w = [0.4, 0.6];
    let n = 10;
    // Reverse KL with weights summing to 1.2, so that the reference takes part there too.
    for (div, weights) in [
        ("reverse-kl", vec![0.5, 0.7]),
        ("forward-kl", w.to_vec()),
        ("jsd", w.to_vec()),
        ("alpha:0.5", w.to_vec()),
        ("jeffreys", w.to_vec()),
    ] {
        let ws = format!("{},{}", weights[0], weights[1]);
        let n = n.to_string();
        let out =
            generate_demo(&["-d", div, "-w", &ws, "-p", PROMPT, "-n", &n, "--repeat-penalty", "1"]);
        assert_eq!(out["divergence"], div);
        let tokens = tokens_of(&out);
        assert!(!tokens.is_empty(), "{div}: no tokens");

        let mut plains: Vec<Plain> = (0..3).map(|_| Plain::new(&model, 256, 1)).collect();
        let mut logits: Vec<Vec<f32>> = plains
            .iter_mut()
            .zip(["", POET, SCIENTIST])
            .map(|(p, pre)| p.prompt(&format!("{pre}{PROMPT}")))
            .collect();
        for (step, &t) in tokens.iter().enumerate() {
            let lp: Vec<Vec<f64>> = logits.iter().map(|l| log_softmax64(l)).collect();
            let scores: Vec<f64> = (0..lp[0].len())
                .map(|v| textbook_eq6(div, &weights, lp[0][v], &[lp[1][v], lp[2][v]]))
                .collect();
            let best = (0..scores.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
            // Equal, or a near-tie within float noise between the two implementations.
            assert!(
                t as usize == best || scores[best] - scores[t as usize] < 1e-4,
                "{div} step {step}: mood chose {t} ({}), eq. 6 picks {best} ({})",
                scores[t as usize],
                scores[best]
            );
            for (p, l) in plains.iter_mut().zip(logits.iter_mut()) {
                *l = p.feed(t);
            }
        }
    }
}

#[test]
fn sampling_works_for_every_divergence_and_is_reproducible() {
    for div in ["reverse-kl", "forward-kl", "jsd", "alpha:2", "jeffreys"] {
        let run = |tau: &str| {
            let mut args = vec!["-d", div, "-p", PROMPT, "-n", "12", "--seed", "9"];
            args.extend(WHOLE_DISTRIBUTION);
            args.extend(["--plausibility", tau]);
            tokens_of(&generate_demo(&args))
        };
        let a = run("1e-4");
        assert_eq!(a.len(), 12, "{div}");
        assert_eq!(a, run("1e-4"), "{div}: same seed, same sample");
        assert_eq!(run("0").len(), 12, "{div}: exact sampling over the whole vocabulary");
        // A strict plausibility set, recomputed from each expert's own logits: every drawn
        // token has at least τ × the top probability under one of the (positively weighted)
        // experts.
        let tau = 0.02f64;
        let drawn = run(&tau.to_string());
        let model = load_model(&default_model());
        let mut experts: Vec<Plain> = (0..2).map(|_| Plain::new(&model, 256, 1)).collect();
        let mut logits: Vec<Vec<f32>> = experts
            .iter_mut()
            .zip([POET, SCIENTIST])
            .map(|(p, pre)| p.prompt(&format!("{pre}{PROMPT}")))
            .collect();
        for (step, &t) in drawn.iter().enumerate() {
            let margin = logits
                .iter()
                .map(|l| {
                    let lp = log_softmax64(l);
                    let top = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    lp[t as usize] - top
                })
                .fold(f64::NEG_INFINITY, f64::max);
            assert!(margin >= tau.ln() - 1e-3, "{div} step {step}: token {t} at {margin}");
            for (p, l) in experts.iter_mut().zip(logits.iter_mut()) {
                *l = p.feed(t);
            }
        }
    }
}

/// Expects exit 1 with a one-line message containing every one of `want`.
fn refused(args: &[&str], want: &[&str]) {
    let out = mood(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
    }
}

#[test]
fn divergence_rules_are_enforced_with_clear_errors() {
    let demo = demo_recipe();
    let d = demo.to_str().unwrap();
    let m = default_model();
    let m = m.to_str().unwrap();
    refused(&["generate", "-r", d, "-d", "tv", "-p", "x"], &["tv", "barrier", "Theorem 3"]);
    refused(&["generate", "-r", d, "-d", "chi2", "-p", "x"], &["chi2", "barrier"]);
    refused(
        &["generate", "-r", d, "-d", "hellinger", "-p", "x"],
        &["unknown divergence", "jeffreys"],
    );
    refused(&["generate", "-r", d, "-d", "alpha:-1", "-p", "x"], &["alpha"]);
    refused(
        &["generate", "-r", d, "-d", "jsd", "-w", "0.7,0.7", "-p", "x"],
        &["sum to 1", "--normalize-weights"],
    );
    refused(&["generate", "-r", d, "-d", "jsd", "-w", "1.5,-0.5", "-p", "x"], &["non-negative"]);
    refused(
        &[
            "generate",
            "-r",
            d,
            "-d",
            "forward-kl",
            "-w",
            "1.5,-0.5",
            "--normalize-weights",
            "-p",
            "x",
        ],
        &["non-negative"],
    );
    // Experts without a reference: fine for reverse KL on the simplex, refused otherwise.
    refused(
        &["generate", "--expert", m, "--expert", m, "-d", "jeffreys", "-p", "x"],
        &["needs the reference"],
    );
    refused(&["generate", "-r", d, "-p", "x", "--plausibility", "1"], &["--plausibility"]);
    let v =
        generate_demo(&["-d", "jsd", "-w", "1,3", "--normalize-weights", "-p", PROMPT, "-n", "3"]);
    assert_eq!(v["weights"], serde_json::json!([0.25, 0.75]));
}
