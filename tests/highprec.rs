//! MOD scores against a 80-digit computation (tests/highprec.py, mpmath) on extreme cases:
//! log-ratios to ±60, a pole token, negative weights for reverse KL.

use mood::pipeline::combine::exact::{eq6_log_scores, mod_log_probs, Scratch, PRUNE_MASS};
use mood::pipeline::divergence::Divergence;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

fn norm(l: &[f64]) -> Vec<f64> {
    let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z = m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    l.iter().map(|v| v - z).collect()
}

struct Case {
    div: Divergence,
    w: Vec<f64>,
    lp_ref: Vec<f64>,
    lp: Vec<Vec<f64>>,
}

fn cases() -> Vec<Case> {
    // Log-ratios from −60 to +60; token 0 is a pole candidate (reference e^-60 below, experts
    // boost it), token 6 the opposite.
    let lref = norm(&[-60.0, -3.0, 0.0, 1.0, 2.5, -10.0, 5.0, -30.0]);
    let e1 = norm(&[-2.0, -1.0, 0.5, 1.0, -20.0, 3.0, -55.0, 0.0]);
    let e2 = norm(&[-1.0, 30.0, -0.5, 2.0, 1.0, -40.0, -50.0, 1.0]);
    let mut out = Vec::new();
    for div in [
        Divergence::ReverseKl,
        Divergence::ForwardKl,
        Divergence::Jsd,
        Divergence::Alpha(0.5),
        Divergence::Alpha(2.0),
        Divergence::Jeffreys,
    ] {
        // Weights that sum to exactly 1 in binary, so that both sides see S = 1.
        for w in [vec![0.5, 0.5], vec![0.875, 0.125], vec![0.0078125, 0.9921875]] {
            out.push(Case { div, w, lp_ref: lref.clone(), lp: vec![e1.clone(), e2.clone()] });
        }
    }
    for w in [vec![1.5, -0.5], vec![2.0, -1.5], vec![-0.7, 0.4]] {
        out.push(Case {
            div: Divergence::ReverseKl,
            w,
            lp_ref: lref.clone(),
            lp: vec![e1.clone(), e2.clone()],
        });
    }
    out
}

#[test]
fn mod_scores_agree_with_80_digit_arithmetic() {
    let cases = cases();
    let input: String = cases
        .iter()
        .map(|c| {
            json!({"div": c.div.name(), "w": c.w, "lp_ref": c.lp_ref, "lp": c.lp}).to_string()
                + "\n"
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/highprec.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed (models/setup.sh installs mpmath)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tests/highprec.py failed (is mpmath installed? run models/setup.sh)"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), cases.len());
    for (c, hp) in cases.iter().zip(&lines) {
        let lps = c.lp.concat();
        let (mut eq6, mut logp, mut scratch) = (Vec::new(), Vec::new(), Scratch::default());
        eq6_log_scores(c.div, &c.w, &c.lp_ref, &lps, &mut eq6, &mut scratch);
        mod_log_probs(c.div, &c.w, &c.lp_ref, &lps, &mut logp, &mut scratch);
        for (name, ours) in [("eq6", &eq6), ("logp", &logp)] {
            for (v, (&got, want)) in ours.iter().zip(hp[name].as_array().unwrap()).enumerate() {
                let want = want.as_f64().unwrap();
                // Log-space values agree to ~1e-10 relative, or both are negligible
                // (p < e^-300), or the token was pruned and its exact probability is indeed
                // below the pruning bound.
                let bound = (PRUNE_MASS / c.lp_ref.len() as f64).ln();
                let ok = (got - want).abs() <= 1e-10 * want.abs().max(1.0)
                    || (got < -300.0 && want < -300.0)
                    || (name == "logp" && got == f64::NEG_INFINITY && want < bound);
                assert!(ok, "{} w={:?} {name}[{v}]: ours {got}, 80-digit {want}", c.div, c.w);
            }
        }
    }
}
