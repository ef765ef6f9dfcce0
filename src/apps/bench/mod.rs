//! End-to-end speed and memory of MOD next to a single model, measured in one process with
//! the same threads, prompt and token count: what `mood bench` reports.
//!
//! Runs alternate (each round: every single model, then MOD with every strategy) so that a
//! noisy machine affects all of them alike; medians are reported. When the recipe places
//! policies on RPC servers, each MOD run is followed by the same run with every policy on this
//! machine, so that the cost of the protocol is measured side by side; models alone always run
//! here. Peak memory is the
//! process's peak resident set (Linux `VmHWM`), reset before each measurement.

pub mod curve;
mod verdict;

pub use verdict::{spread, warnings, ROUND_SPREAD};

use crate::pipeline::decode::{self, Generation};
use crate::pipeline::engine::{Engine, LoadOptions, SessionOptions, Strategy};
use crate::pipeline::recipe::{Policy, Recipe};
use crate::pipeline::settings::Settings;
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;

/// Decode speed of one model file decoding alone.
#[derive(Debug, Clone, Serialize)]
pub struct SingleRun {
    pub model: String,
    pub prompt_tokens_per_second: f64,
    pub tokens_per_second: f64,
    /// The same with only the thread share one MOD policy gets (threads ÷ policies, at
    /// least 1). A MOD step cannot beat the slowest policy's forward pass at that share,
    /// repeated ⌈policies ÷ threads⌉ times where policies outnumber threads.
    pub share_threads: usize,
    pub tokens_per_second_at_share: f64,
    /// (max − min) ÷ median of the rounds' decode speeds on all threads.
    pub spread: f64,
}

/// Decode speed of the recipe under one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct ModRun {
    pub strategy: &'static str,
    /// Whether the policies ran where the recipe (or `--rpc`) places them on RPC servers;
    /// false for runs on this machine (every run of a recipe without servers, and the
    /// all-local runs a recipe with servers is compared with).
    pub rpc: bool,
    /// Policies that run (zero-coefficient ones are skipped) and llama.cpp contexts.
    pub policies: usize,
    pub contexts: usize,
    pub prompt_tokens_per_second: f64,
    pub tokens_per_second: f64,
    /// MOD tokens/s ÷ the slowest of its models decoding alone.
    pub ratio: f64,
    /// MOD tokens/s ÷ that physical floor (see [`SingleRun::tokens_per_second_at_share`]).
    pub floor_ratio: f64,
    /// Per generated token: forward passes (all policies in parallel), combiner, sampler.
    pub forward_ms: f64,
    pub combine_ms: f64,
    pub sample_ms: f64,
    /// Whether the output layer ran once per step (mixed), and if not, why not.
    pub mixed: bool,
    pub unmixed_because: Option<&'static str>,
    /// Speculation: the most tokens drafted per pass (0: none), draft tokens proposed and
    /// accepted over the median run, and generated tokens per forward pass.
    pub draft_max: usize,
    pub drafted: usize,
    pub accepted: usize,
    pub tokens_per_pass: f64,
    /// (max − min) ÷ median of the rounds' decode speeds.
    pub spread: f64,
}

/// What `auto` runs for the recipe on this machine, and the step times it chose from.
#[derive(Debug, Clone, Serialize)]
pub struct AutoChoice {
    pub strategy: &'static str,
    /// Median milliseconds per step of each candidate, as measured when the choice was made.
    pub step_ms: Vec<(&'static str, f64)>,
    /// Whether the choice came from the cache file (measured on an earlier run).
    pub cached: bool,
    /// Whether the step times held still; an unsteady choice is not written to the cache.
    pub steady: bool,
}

/// Peak resident memory with `policies` prompted experts on one model file.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryRun {
    pub policies: usize,
    pub peak_rss_mb: f64,
    /// ÷ the peak with one policy.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub prompt: String,
    pub max_tokens: usize,
    pub threads: usize,
    pub rounds: usize,
    pub single: Vec<SingleRun>,
    pub r#mod: Vec<ModRun>,
    pub auto: AutoChoice,
    pub memory: Vec<MemoryRun>,
    /// The draft model of the speculative row, if any.
    pub draft_model: Option<String>,
    /// Signs that the machine was busy while the runs went (see [`warnings`]).
    pub warnings: Vec<String>,
}

/// What to measure.
pub struct Plan<'a> {
    pub recipe: &'a Recipe,
    pub prompt: &'a str,
    pub settings: Settings,
    pub session: SessionOptions,
    pub strategies: Vec<Strategy>,
    pub rounds: usize,
    pub load: LoadOptions,
    /// The draft model of the speculative row (prompt lookup without one).
    pub draft_model: Option<PathBuf>,
    /// Where `auto` keeps its measurements across engines (see
    /// [`Engine::set_strategy_cache`]), and whether to measure afresh.
    pub strategy_cache: Option<PathBuf>,
    pub remeasure: bool,
}

/// The engine of `policies` as the plan loads it.
fn load(policies: &[Policy], plan: &Plan) -> Result<Engine> {
    let mut engine = Engine::load(policies, plan.load.clone())?;
    engine.set_strategy_cache(plan.strategy_cache.clone(), plan.remeasure);
    Ok(engine)
}

/// Runs the speed part of the plan (memory is measured by [`memory_probe`] in separate
/// processes); `progress` receives a line per finished run.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in plan.recipe.policies() {
        if !files.contains(&p.model) {
            files.push(p.model.clone());
        }
    }
    let mut single: Vec<Vec<Generation>> = vec![Vec::new(); files.len()];
    let mut at_share: Vec<Vec<Generation>> = vec![Vec::new(); files.len()];
    // The strategies unspeculated, then (with a draft) speculative MOD as `auto` runs it.
    // What `auto` runs, measured (or remembered) first, so that the report says which.
    let auto = auto_choice(plan.recipe, plan)?;
    progress(&format!("auto runs {} here", auto.strategy));
    let speculative = plan.settings.draft_max > 0;
    let mut rows: Vec<(Strategy, usize)> = plan.strategies.iter().map(|&s| (s, 0)).collect();
    if speculative {
        let strategy = auto.strategy.parse().unwrap_or(Strategy::Auto);
        rows.push((strategy, plan.settings.draft_max));
    }
    // Each row's runs where the recipe places the policies, then (with RPC servers) on this
    // machine.
    let local = uses_rpc(plan.recipe, &plan.load).then(|| all_local(plan.recipe));
    let mut mods: Vec<Vec<Generation>> = vec![Vec::new(); rows.len()];
    let mut local_mods: Vec<Vec<Generation>> = vec![Vec::new(); rows.len()];
    let threads = plan.session.threads.max(1);
    let running = plan.recipe.members()?.len();
    let share = (threads / running).max(1);
    let passes_per_worker = running.div_ceil(threads) as f64;
    for round in 0..plan.rounds.max(1) {
        for (i, file) in files.iter().enumerate() {
            let alone = all_local(&alone_recipe(file));
            let g = generate(&alone, plan, Strategy::Threads, 0)?;
            progress(&format!(
                "round {}: {} alone: {:.1} tok/s",
                round + 1,
                short(file),
                g.timings.tokens_per_second
            ));
            single[i].push(g);
            let shared = SessionOptions { threads: share, ..plan.session };
            let g = generate_with(&alone, plan, shared, Strategy::Threads, 0)?;
            progress(&format!(
                "round {}: {} alone on {share} thread(s): {:.1} tok/s",
                round + 1,
                short(file),
                g.timings.tokens_per_second
            ));
            at_share[i].push(g);
        }
        for (s, &(strategy, draft_max)) in rows.iter().enumerate() {
            let g = generate(plan.recipe, plan, strategy, draft_max)?;
            progress(&format!(
                "round {}: MOD, {}{}{}: {:.1} tok/s",
                round + 1,
                g.timings.strategy,
                if draft_max > 0 { " speculative" } else { "" },
                if local.is_some() { " on RPC servers" } else { "" },
                g.timings.tokens_per_second
            ));
            mods[s].push(g);
            if let Some(recipe) = &local {
                let g = generate(recipe, plan, strategy, draft_max)?;
                progress(&format!(
                    "round {}: MOD, {}{} on this machine: {:.1} tok/s",
                    round + 1,
                    g.timings.strategy,
                    if draft_max > 0 { " speculative" } else { "" },
                    g.timings.tokens_per_second
                ));
                local_mods[s].push(g);
            }
        }
    }
    let rate =
        |runs: &[Generation]| median(runs.iter().map(|g| g.timings.tokens_per_second).collect());
    let single: Vec<SingleRun> = files
        .iter()
        .zip(single.iter().zip(&at_share))
        .map(|(f, (runs, shared))| SingleRun {
            model: short(f),
            prompt_tokens_per_second: median(runs.iter().map(prompt_rate).collect()),
            tokens_per_second: rate(runs),
            share_threads: share,
            tokens_per_second_at_share: rate(shared),
            spread: spread(&speeds(runs)),
        })
        .collect();
    let slowest = single.iter().map(|s| s.tokens_per_second).fold(f64::INFINITY, f64::min);
    let floor = single.iter().map(|s| s.tokens_per_second_at_share).fold(f64::INFINITY, f64::min)
        / passes_per_worker;
    let row = |runs: &[Generation], draft_max: usize, rpc: bool| {
        let per_token = |f: &dyn Fn(&Generation) -> f64| {
            median(runs.iter().map(|g| f(g) / g.tokens.len().max(1) as f64).collect())
        };
        let tps = median(runs.iter().map(|g| g.timings.tokens_per_second).collect());
        // The run whose speed is the median one, for the speculation counts.
        let typical = runs
            .iter()
            .min_by(|a, b| {
                let d = |g: &Generation| (g.timings.tokens_per_second - tps).abs();
                d(a).total_cmp(&d(b))
            })
            .unwrap_or(&runs[0]);
        ModRun {
            strategy: runs[0].timings.strategy,
            rpc,
            policies: running,
            contexts: runs[0].timings.contexts,
            prompt_tokens_per_second: median(runs.iter().map(prompt_rate).collect()),
            tokens_per_second: tps,
            ratio: tps / slowest,
            floor_ratio: tps / floor,
            forward_ms: per_token(&|g| g.timings.forward_ms),
            combine_ms: per_token(&|g| g.timings.combine_ms),
            sample_ms: per_token(&|g| g.timings.sample_ms),
            mixed: runs[0].timings.mixed,
            unmixed_because: runs[0].timings.unmixed_because,
            draft_max,
            drafted: typical.timings.drafted,
            accepted: typical.timings.accepted,
            tokens_per_pass: typical.tokens.len() as f64 / typical.timings.passes.max(1) as f64,
            spread: spread(&speeds(runs)),
        }
    };
    let mut r#mod = Vec::new();
    for ((runs, here), &(_, draft_max)) in mods.iter().zip(&local_mods).zip(&rows) {
        r#mod.push(row(runs, draft_max, local.is_some()));
        if !here.is_empty() {
            r#mod.push(row(here, draft_max, false));
        }
    }
    let mut warnings = warnings(plan.rounds.max(1), threads, &single, &r#mod);
    if !auto.steady {
        warnings.push(format!(
            "auto's step times disagreed when measured twice: it runs {} (the least work \
             per step) and did not remember the choice",
            auto.strategy
        ));
    }
    Ok(Report {
        prompt: plan.prompt.to_string(),
        max_tokens: plan.settings.max_tokens,
        threads: plan.session.threads,
        rounds: plan.rounds.max(1),
        single,
        r#mod,
        auto,
        memory: Vec::new(),
        draft_model: plan.draft_model.as_deref().map(short),
        warnings,
    })
}

/// Decodes with `k` prompted experts on the first expert's model file and returns this
/// process's peak resident memory in MB. Meant to run in a fresh process per `k` (as
/// `mood bench` does), so that nothing else has touched the process's memory.
pub fn memory_probe(plan: &Plan, k: usize) -> Result<Option<f64>> {
    let Some(first) = plan.recipe.experts.first() else { return Ok(None) };
    let experts: Vec<Policy> = (0..k)
        .map(|i| {
            let source = &plan.recipe.experts[i % plan.recipe.experts.len()];
            Policy {
                name: format!("expert{}", i + 1),
                prefix: format!("{}({})\n", source.prefix, i + 1),
                ..first.clone()
            }
        })
        .collect();
    let recipe = Recipe {
        divergence: crate::pipeline::divergence::Divergence::ReverseKl,
        reference: None,
        weights: vec![1.0 / k as f64; k],
        experts,
        temperature: None,
    };
    generate(&recipe, plan, Strategy::Auto, 0)?;
    Ok(peak_rss_mb())
}

/// What `auto` chooses for the recipe (measured now, or taken from the cache).
fn auto_choice(recipe: &Recipe, plan: &Plan) -> Result<AutoChoice> {
    let policies: Vec<Policy> = recipe.policies().cloned().collect();
    let engine = load(&policies, plan)?;
    let options = SessionOptions { strategy: Strategy::Auto, ..plan.session };
    let options = SessionOptions { ctx_size: engine.context_size(options.ctx_size), ..options };
    let m = engine.auto_strategy(&recipe.members()?, 1, options)?;
    Ok(AutoChoice {
        strategy: m.strategy.name(),
        step_ms: m.step_ms.iter().map(|(s, ms)| (s.name(), *ms)).collect(),
        cached: m.cached,
        steady: m.steady,
    })
}

/// Whether any policy of `recipe` runs on RPC servers with `load`.
fn uses_rpc(recipe: &Recipe, load: &LoadOptions) -> bool {
    recipe.policies().any(|p| !p.rpc.as_ref().unwrap_or(&load.rpc).is_empty())
}

/// `recipe` with every policy on this machine.
fn all_local(recipe: &Recipe) -> Recipe {
    let mut local = recipe.clone();
    for p in local.reference.iter_mut().chain(local.experts.iter_mut()) {
        p.rpc = Some(Vec::new());
    }
    local
}

fn alone_recipe(file: &std::path::Path) -> Recipe {
    Recipe {
        divergence: crate::pipeline::divergence::Divergence::ReverseKl,
        reference: None,
        experts: vec![Policy {
            name: "alone".into(),
            model: file.to_path_buf(),
            ..Policy::default()
        }],
        weights: vec![1.0],
        temperature: None,
    }
}

fn generate(
    recipe: &Recipe,
    plan: &Plan,
    strategy: Strategy,
    draft_max: usize,
) -> Result<Generation> {
    generate_with(recipe, plan, plan.session, strategy, draft_max)
}

fn generate_with(
    recipe: &Recipe,
    plan: &Plan,
    session: SessionOptions,
    strategy: Strategy,
    draft_max: usize,
) -> Result<Generation> {
    let policies: Vec<Policy> = recipe.policies().cloned().collect();
    let mut engine = load(&policies, plan)?;
    if let Some(path) = plan.draft_model.as_ref().filter(|_| draft_max > 0) {
        engine.load_draft_model(path, plan.load.n_gpu_layers)?;
    }
    let mut settings = plan.settings.clone();
    settings.draft_max = draft_max;
    // Stop strings would cut runs short; the speed of a fixed number of steps is wanted.
    settings.stops.clear();
    let session = SessionOptions { strategy, ..session };
    decode::generate(&engine, recipe, plan.prompt, &settings, session, &mut |_| {})
}

fn prompt_rate(g: &Generation) -> f64 {
    let tokens: usize = g.prompt_tokens.iter().map(|(_, n)| n).max().copied().unwrap_or(0);
    tokens as f64 / (g.timings.prompt_ms / 1e3).max(1e-9)
}

/// Each run's decode speed.
fn speeds(runs: &[Generation]) -> Vec<f64> {
    runs.iter().map(|g| g.timings.tokens_per_second).collect()
}

fn short(p: &std::path::Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The median (mean of the middle two for an even count); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Why peak memory cannot be measured here, or `None` where it can: it is read from
/// Linux's per-process accounting (`/proc/self/status`, reset through
/// `/proc/self/clear_refs`), which other systems lack.
pub fn peak_rss_unavailable() -> Option<&'static str> {
    if cfg!(target_os = "linux") && peak_rss_mb().is_some() {
        None
    } else {
        Some("peak memory is read from Linux's /proc/self/status, which this system lacks")
    }
}

/// Resets the kernel's peak-RSS counter of this process; false where that is unsupported.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Fills in each run's ratio to the first (one policy).
pub fn memory_runs(peaks: &[(usize, f64)]) -> Vec<MemoryRun> {
    let base = peaks.first().map_or(1.0, |p| p.1);
    peaks
        .iter()
        .map(|&(k, mb)| MemoryRun { policies: k, peak_rss_mb: mb, ratio: mb / base })
        .collect()
}

/// This process's peak resident set since start or the last reset, in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peak_rss_grows_with_a_touched_allocation_after_reset() {
        assert!(reset_peak_rss());
        let before = peak_rss_mb().unwrap();
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let after = peak_rss_mb().unwrap();
        assert!(after - before > 50.0, "{before} → {after}");
    }
}
