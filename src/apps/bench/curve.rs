//! The cost of K objectives: MOD with K = 1, 2, 4, 8 prompted experts on each model file,
//! under each strategy, as a ratio to the model decoding alone, measured ([`super::run`]) and
//! predicted from the cost of single forward passes ([`crate::pipeline::engine::passes`]).
//!
//! The cost model, per generated token (no drafts, one pass per step):
//! - one model alone: `P_T(1)`, a pass of one token on all `T` threads, plus sampling;
//! - `mixed`: `P_T(K, one row)`, one pass of the K policies' tokens with the output layer
//!   run once for their weighted sum, plus sampling;
//! - `batched`: `P_T(K, every row)`, one pass with every policy's logits, plus combining and
//!   sampling;
//! - `threads`: `W = min(K, T)` workers of `s = T / W` threads each run a context per
//!   policy; each worker runs `⌈K / W⌉` one-token passes one after another, so
//!   `⌈K / W⌉ · P_s(1 | W)`, plus combining and sampling, where `P_s(1 | W)` is a pass on `s`
//!   threads while `W` such passes run at once (they share the memory bus and the caches).
//!
//! The combining and sampling times are the ones the runs measured; the passes are measured
//! on their own (those of `threads` side by side, as that strategy runs them). The ratio
//! predicted is the single model's time over the strategy's.

use super::{Plan, Report};
use crate::pipeline::divergence::Divergence;
use crate::pipeline::engine::passes::{self, PassCosts, MAX_WIDTH};
use crate::pipeline::engine::{SessionOptions, Strategy};
use crate::pipeline::recipe::{Policy, Recipe};
use crate::pipeline::settings::Settings;
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The objectives counts of the curve.
pub const COUNTS: [usize; 4] = [1, 2, 4, 8];

/// What to measure.
pub struct CurvePlan {
    pub models: Vec<PathBuf>,
    pub counts: Vec<usize>,
    pub strategies: Vec<Strategy>,
    pub threads: usize,
    pub rounds: usize,
    pub pass_rounds: usize,
    pub max_tokens: usize,
    pub prompt: String,
}

/// One point of the curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub model: String,
    pub k: usize,
    pub strategy: &'static str,
    pub tokens_per_second: f64,
    pub single_tokens_per_second: f64,
    /// Measured: MOD's tokens per second ÷ the model alone's, medians of the rounds.
    pub ratio: f64,
    /// What the cost model predicts from the pass costs.
    pub predicted: f64,
    /// (predicted − ratio) ÷ ratio.
    pub error: f64,
}

/// Pass costs of one model file, at every thread count a strategy gives a context.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPasses {
    pub model: String,
    pub passes: Vec<PassCosts>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub cpu: String,
    pub threads: usize,
    pub rounds: usize,
    pub max_tokens: usize,
    pub points: Vec<CurvePoint>,
    pub passes: Vec<ModelPasses>,
}

/// Host work per token that a run measured (milliseconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Host {
    pub combine_ms: f64,
    pub sample_ms: f64,
}

/// How the `threads` strategy spreads `k` policies over `threads` threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadsSplit {
    /// Workers passing at once, each with a context of its own.
    pub workers: usize,
    /// Threads per context.
    pub share: usize,
    /// One-token passes each worker runs one after another per step.
    pub serial: usize,
}

/// The split of `k` policies over `threads` threads (see [`ThreadsSplit`]).
pub fn threads_split(k: usize, threads: usize) -> ThreadsSplit {
    let workers = k.min(threads).max(1);
    ThreadsSplit { workers, share: (threads / workers).max(1), serial: k.div_ceil(workers) }
}

/// Milliseconds per token the cost model gives `strategy` with `k` policies. `at(t, n)`
/// returns the pass costs measured on `t` threads with `n` such passes running at once.
pub fn predicted_ms(
    strategy: Strategy,
    k: usize,
    threads: usize,
    at: &dyn Fn(usize, usize) -> Option<PassCosts>,
    host: Host,
) -> Option<f64> {
    let full = at(threads, 1)?;
    let k = k.clamp(1, MAX_WIDTH);
    let forward = match strategy {
        _ if k == 1 => full.ms(1, true),
        Strategy::Mixed => full.ms(k, false),
        Strategy::Batched => full.ms(k, true),
        Strategy::Threads => {
            let split = threads_split(k, threads);
            split.serial as f64 * at(split.share, split.workers)?.ms(1, true)
        }
        Strategy::Auto => return None,
    };
    let combine = if k == 1 || strategy == Strategy::Mixed { 0.0 } else { host.combine_ms };
    Some(forward + combine + host.sample_ms)
}

/// The recipe of `k` prompted experts on `model`, equal weights summing to 1 (no reference).
pub fn experts(model: &std::path::Path, k: usize) -> Recipe {
    const ROLES: [&str; 8] = [
        "A poet writes:",
        "A scientist explains:",
        "A pirate tells:",
        "A cook describes:",
        "A child asks:",
        "A lawyer argues:",
        "A sailor recalls:",
        "A teacher says:",
    ];
    Recipe {
        divergence: Divergence::ReverseKl,
        reference: None,
        experts: (0..k)
            .map(|i| Policy {
                name: format!("expert{}", i + 1),
                model: model.to_path_buf(),
                prefix: format!("{} ", ROLES[i % ROLES.len()]),
                ..Policy::default()
            })
            .collect(),
        weights: vec![1.0 / k as f64; k],
        temperature: None,
    }
}

/// The CPU's model name (Linux), else "unknown CPU".
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Measures the curve; `progress` receives a line per finished run.
pub fn run(plan: &CurvePlan, progress: &mut dyn FnMut(&str)) -> Result<Curve> {
    if plan.counts.iter().any(|&k| k == 0 || k > MAX_WIDTH) {
        bail!("objective counts must be between 1 and {MAX_WIDTH}");
    }
    let threads = plan.threads.max(1);
    let mut points = Vec::new();
    let mut all_passes = Vec::new();
    let cache = std::env::temp_dir().join(format!("mood-curve-{}.json", std::process::id()));
    for model in &plan.models {
        let name = super::short(model);
        // Pass costs on all threads, every width; and one-token passes as `threads` runs them
        // for each split of the counts (several at once, on a share of the threads each).
        let mut splits: Vec<(usize, usize)> = plan
            .counts
            .iter()
            .map(|&k| threads_split(k, threads))
            .map(|s| (s.share, s.workers))
            .filter(|&split| split != (threads, 1))
            .collect();
        splits.sort_unstable();
        splits.dedup();
        let mut measured: BTreeMap<(usize, usize), PassCosts> = BTreeMap::new();
        let full = passes::measure(model, threads, MAX_WIDTH, plan.pass_rounds)?;
        measured.insert((threads, 1), full);
        for &(t, n) in &splits {
            measured.insert((t, n), passes::measure_alongside(model, t, n, plan.pass_rounds)?);
        }
        for ((t, n), costs) in &measured {
            progress(&format!(
                "{name}: passes on {t} thread(s), {n} at once: {}",
                costs.every_row_ms.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(" ")
            ));
        }
        let at = |t: usize, n: usize| measured.get(&(t, n)).cloned();
        for &k in &plan.counts {
            let recipe = experts(model, k);
            let strategies = if k == 1 { vec![Strategy::Threads] } else { plan.strategies.clone() };
            let bench = Plan {
                recipe: &recipe,
                prompt: &plan.prompt,
                settings: Settings {
                    max_tokens: plan.max_tokens,
                    draft_max: 0,
                    ..Settings::default()
                },
                session: SessionOptions { threads, ctx_size: 512, strategy: Strategy::Auto },
                strategies,
                rounds: plan.rounds,
                load: Default::default(),
                draft_model: None,
                strategy_cache: Some(cache.clone()),
                remeasure: false,
            };
            let report =
                super::run(&bench, &mut |line| progress(&format!("{name}, K={k}: {line}")))?;
            points.extend(points_of(&report, &name, k, threads, &at));
        }
        all_passes.push(ModelPasses { model: name, passes: measured.into_values().collect() });
    }
    let _ = std::fs::remove_file(&cache);
    Ok(Curve {
        cpu: cpu_name(),
        threads,
        rounds: plan.rounds,
        max_tokens: plan.max_tokens,
        points,
        passes: all_passes,
    })
}

/// The report's runs as points of the curve, each with its prediction.
fn points_of(
    report: &Report,
    model: &str,
    k: usize,
    threads: usize,
    at: &dyn Fn(usize, usize) -> Option<PassCosts>,
) -> Vec<CurvePoint> {
    let single = report.single.first().map_or(f64::NAN, |s| s.tokens_per_second);
    report
        .r#mod
        .iter()
        .filter(|m| m.draft_max == 0 && !m.rpc)
        .filter_map(|m| {
            let strategy: Strategy = m.strategy.parse().ok()?;
            let host = Host { combine_ms: m.combine_ms, sample_ms: m.sample_ms };
            let alone =
                predicted_ms(Strategy::Threads, 1, threads, at, Host { combine_ms: 0.0, ..host })?;
            let mod_ms = predicted_ms(strategy, k, threads, at, host)?;
            let predicted = alone / mod_ms;
            Some(CurvePoint {
                model: model.to_string(),
                k,
                strategy: if k == 1 { "alone" } else { m.strategy },
                tokens_per_second: m.tokens_per_second,
                single_tokens_per_second: single,
                ratio: m.ratio,
                predicted,
                error: (predicted - m.ratio) / m.ratio,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(threads: usize, alongside: usize, every: &[f64], one: &[f64]) -> PassCosts {
        PassCosts { threads, alongside, every_row_ms: every.to_vec(), one_row_ms: one.to_vec() }
    }

    #[test]
    fn threads_split_shares_the_cores_and_queues_the_rest() {
        let split = |k, t| {
            let s = threads_split(k, t);
            (s.workers, s.share, s.serial)
        };
        assert_eq!(split(1, 2), (1, 2, 1));
        assert_eq!(split(2, 2), (2, 1, 1));
        assert_eq!(split(4, 2), (2, 1, 2));
        assert_eq!(split(8, 2), (2, 1, 4));
        assert_eq!(split(2, 8), (2, 4, 1));
        assert_eq!(split(3, 8), (3, 2, 1));
        assert_eq!(split(4, 8), (4, 2, 1));
        assert_eq!(split(8, 8), (8, 1, 1));
        // Every split uses no more threads than there are, and runs every policy.
        for t in 1..=16 {
            for k in 1..=8 {
                let s = threads_split(k, t);
                assert!(s.workers * s.share <= t, "k={k} t={t}");
                assert!(s.workers * s.serial >= k, "k={k} t={t}");
                assert!((s.workers * (s.serial - 1)) < k, "k={k} t={t}");
            }
        }
    }

    #[test]
    fn predictions_follow_the_written_model() {
        let every: Vec<f64> = (1..=8).map(|w| 10.0 + 3.0 * w as f64).collect();
        let one: Vec<f64> = (1..=8).map(|w| 10.0 + 1.0 * w as f64).collect();
        let full = costs(2, 1, &every, &one);
        let half = costs(1, 2, &[20.0], &[20.0]);
        let half_alone = costs(1, 1, &[15.0], &[15.0]);
        let at = |t: usize, n: usize| match (t, n) {
            (2, 1) => Some(full.clone()),
            (1, 2) => Some(half.clone()),
            (1, 1) => Some(half_alone.clone()),
            _ => None,
        };
        let host = Host { combine_ms: 0.5, sample_ms: 0.25 };
        let p = |s, k| predicted_ms(s, k, 2, &at, host).unwrap();
        // Alone: one pass of one token, sampling, no combining.
        assert_eq!(p(Strategy::Mixed, 1), 13.0 + 0.25);
        assert_eq!(p(Strategy::Threads, 1), 13.0 + 0.25);
        // Mixed: one row of logits, no combining.
        assert_eq!(p(Strategy::Mixed, 4), 14.0 + 0.25);
        // Batched: every row, then the combiner.
        assert_eq!(p(Strategy::Batched, 4), 22.0 + 0.75);
        // Threads on 2 cores: 1 thread per context, two workers passing at once (their passes
        // measured side by side, not alone), two passes per worker with 4 policies.
        assert_eq!(p(Strategy::Threads, 2), 20.0 + 0.75);
        assert_eq!(p(Strategy::Threads, 4), 40.0 + 0.75);
        assert_eq!(p(Strategy::Threads, 8), 80.0 + 0.75);
        assert!(predicted_ms(Strategy::Auto, 2, 2, &at, host).is_none());
        // A thread count never measured gives no prediction rather than a guess.
        assert!(predicted_ms(Strategy::Threads, 2, 4, &at, host).is_none());
    }

    #[test]
    fn experts_recipe_has_k_distinct_prompted_policies_summing_to_one() {
        for k in 1..=8 {
            let r = experts(std::path::Path::new("m.gguf"), k);
            assert_eq!(r.experts.len(), k);
            let prefixes: std::collections::HashSet<_> =
                r.experts.iter().map(|e| e.prefix.clone()).collect();
            assert_eq!(prefixes.len(), k);
            assert!((r.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(r.reference.is_none());
        }
    }
}
