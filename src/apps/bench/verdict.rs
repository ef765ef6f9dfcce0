//! Whether a benchmark's figures can be trusted: how far its rounds spread, and the signs of
//! a machine that was busy while it ran (a model slower on more threads, MOD faster than the
//! model it runs). The figures are reported either way; the warnings say how to read them.

use super::{ModRun, SingleRun};

/// Rounds whose decode speeds spread by more than this (max − min over median) disagree.
pub const ROUND_SPREAD: f64 = 0.2;

/// (max − min) ÷ median of the rounds' speeds (0 for fewer than two).
pub fn spread(speeds: &[f64]) -> f64 {
    if speeds.len() < 2 {
        return 0.0;
    }
    let lo = speeds.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = speeds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let median = super::median(speeds.to_vec());
    if median > 0.0 {
        (hi - lo) / median
    } else {
        f64::INFINITY
    }
}

/// What a reader of the report should know before trusting its ratios.
pub fn warnings(
    rounds: usize,
    threads: usize,
    single: &[SingleRun],
    r#mod: &[ModRun],
) -> Vec<String> {
    let mut out = Vec::new();
    let again = "the machine was busy or its cores are shared; run again when it is idle, or \
                 with more --rounds";
    if rounds < 2 {
        out.push("one round: nothing to tell a busy machine by; use --rounds 3 or more".into());
    }
    for s in single.iter().filter(|s| s.spread > ROUND_SPREAD) {
        out.push(format!(
            "{} alone: the rounds differ by {:.0} % of the median ({again})",
            s.model,
            100.0 * s.spread
        ));
    }
    for m in r#mod.iter().filter(|m| m.spread > ROUND_SPREAD) {
        out.push(format!(
            "MOD {}{}: the rounds differ by {:.0} % of the median ({again})",
            m.strategy,
            if m.draft_max > 0 { "+spec" } else { "" },
            100.0 * m.spread
        ));
    }
    for s in single.iter().filter(|s| {
        s.share_threads < threads && s.tokens_per_second < 0.9 * s.tokens_per_second_at_share
    }) {
        out.push(format!(
            "{} alone ran slower on {threads} threads ({:.1} tok/s) than on {} ({:.1}): {again}",
            s.model, s.tokens_per_second, s.share_threads, s.tokens_per_second_at_share
        ));
    }
    // Without speculation MOD runs at least one model's forward pass per token: faster than
    // that model alone means the model-alone runs were slowed down.
    for m in r#mod.iter().filter(|m| m.draft_max == 0 && m.ratio > 1.1) {
        out.push(format!(
            "MOD {} ran {:.2}× one model alone without speculation, which it cannot: the \
             model-alone runs were disturbed ({again})",
            m.strategy, m.ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(tps: f64, at_share: f64, spread: f64) -> SingleRun {
        SingleRun {
            model: "m.gguf".into(),
            prompt_tokens_per_second: 500.0,
            tokens_per_second: tps,
            share_threads: 1,
            tokens_per_second_at_share: at_share,
            spread,
        }
    }

    fn run(ratio: f64, spread: f64, draft_max: usize) -> ModRun {
        ModRun {
            strategy: "mixed",
            rpc: false,
            policies: 2,
            contexts: 1,
            prompt_tokens_per_second: 400.0,
            tokens_per_second: 50.0 * ratio,
            ratio,
            floor_ratio: 1.0,
            forward_ms: 10.0,
            combine_ms: 0.1,
            sample_ms: 0.1,
            mixed: true,
            unmixed_because: None,
            draft_max,
            drafted: 0,
            accepted: 0,
            tokens_per_pass: 1.0,
            spread,
        }
    }

    #[test]
    fn spread_is_the_range_over_the_median() {
        assert!((spread(&[40.0, 50.0, 60.0]) - 0.4).abs() < 1e-12);
        assert_eq!(spread(&[50.0]), 0.0);
        assert_eq!(spread(&[50.0, 50.0, 50.0]), 0.0);
    }

    #[test]
    fn a_calm_run_has_no_warning() {
        let w =
            warnings(3, 2, &[single(60.0, 38.0, 0.05)], &[run(0.85, 0.08, 0), run(1.5, 0.1, 16)]);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn the_signs_of_a_busy_machine_are_each_reported() {
        // The reported case: the model alone at 1.2 tok/s, slower on 2 threads than on 1, and
        // MOD 30.95× faster.
        let w = warnings(3, 2, &[single(1.2, 30.0, 0.9)], &[run(30.95, 0.5, 0)]);
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].contains("m.gguf alone: the rounds differ by 90 %"), "{w:?}");
        assert!(w[1].contains("MOD mixed: the rounds differ by 50 %"), "{w:?}");
        assert!(w[2].contains("slower on 2 threads (1.2 tok/s) than on 1 (30.0)"), "{w:?}");
        assert!(w[3].contains("30.95×"), "{w:?}");
        // Speculation may beat one model; one round cannot be judged.
        let w = warnings(1, 2, &[single(60.0, 38.0, 0.0)], &[run(1.6, 0.0, 16)]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("one round"), "{w:?}");
    }
}
