//! `auto`: the strategy measured on this machine for this setup, once, and remembered.
//!
//! A setup is the CPU (model name and logical cores), the thread budget, the lanes, and the
//! policies' model files (name and size), adapters, offload and RPC servers. The first time a
//! setup is met, each candidate strategy decodes a short prompt and then a few steps in every
//! lane; the one with the lowest median step time wins. It is kept in memory for the engine's
//! life and, when the caller names a cache file ([`Engine::set_strategy_cache`]), written
//! there with every candidate's time and read back by later processes.
//!
//! A measurement taken while something else used the cores is not one to keep: when a
//! candidate's step times spread by more than [`STEADY_SPREAD`] (interquartile range over
//! median), every candidate is measured again; if they still spread, noise would choose,
//! so `auto` runs the strategy that does the least work ([`least_work`]) and writes nothing
//! to the cache file: a later process measures afresh.

use super::strategy::{SessionOptions, Strategy};
use super::Engine;
use anyhow::Result;
use llama_cpp_2::token::LlamaToken;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where `auto` remembers its measurements: in memory always, in a file when one is named.
#[derive(Debug, Default)]
pub(super) struct StrategyMemory {
    file: Option<PathBuf>,
    remeasure: bool,
    seen: std::sync::Mutex<Vec<(String, Measurement)>>,
}

/// What `auto` chose for a setup, and the median step times it chose from.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub strategy: Strategy,
    /// (candidate, median milliseconds per step in every lane).
    pub step_ms: Vec<(Strategy, f64)>,
    /// Whether it came from the cache file rather than from measuring now.
    pub cached: bool,
    /// Whether the step times held still (see the module documentation); an unsteady
    /// measurement is not written to the cache file.
    pub steady: bool,
}

/// The largest spread of a candidate's step times (interquartile range ÷ median) that counts
/// as a steady measurement.
pub const STEADY_SPREAD: f64 = 0.25;

/// Interquartile range ÷ median of `times` (0 for fewer than two).
pub fn spread(times: &[f64]) -> f64 {
    if times.len() < 2 {
        return 0.0;
    }
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let x = q * (t.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x.fract());
        t[i] + f * (t[(i + 1).min(t.len() - 1)] - t[i])
    };
    let median = at(0.5);
    if median > 0.0 {
        (at(0.75) - at(0.25)) / median
    } else {
        f64::INFINITY
    }
}

/// The median of `times` (∞ for none).
fn median(times: &[f64]) -> f64 {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    match t.len() {
        0 => f64::INFINITY,
        n if n % 2 == 1 => t[n / 2],
        n => 0.5 * (t[n / 2 - 1] + t[n / 2]),
    }
}

/// The strategy that does the least work per step among `candidates`: `mixed` (one output
/// layer for all policies), else `batched` (one pass per model file), else `threads`. What
/// `auto` runs when the machine is too busy to tell them apart: the same choice in every
/// process, where timing noise would pick one at random.
pub fn least_work(candidates: &[Strategy]) -> Strategy {
    [Strategy::Mixed, Strategy::Batched]
        .into_iter()
        .find(|s| candidates.contains(s))
        .unwrap_or(Strategy::Threads)
}

/// Whether every candidate's step times held still.
pub fn steady(times: &[(Strategy, Vec<f64>)]) -> bool {
    times.iter().all(|(_, t)| !t.is_empty() && spread(t) <= STEADY_SPREAD)
}

/// Steps timed per candidate, after two to warm up.
const TIMED_STEPS: usize = 8;

impl Engine {
    /// The strategy `auto` stands for with these policies (engine indices), lanes and
    /// options: from the cache, or measured now (see the module documentation).
    pub fn auto_strategy(
        &self,
        members: &[usize],
        lanes: usize,
        options: SessionOptions,
    ) -> Result<Measurement> {
        let candidates = self.candidates(members);
        if candidates.len() == 1 {
            return Ok(Measurement {
                strategy: candidates[0],
                step_ms: Vec::new(),
                cached: false,
                steady: true,
            });
        }
        let key = self.setup_key(members, lanes, options);
        let memory = &self.strategy_memory;
        let seen = |k: &str| {
            let seen = memory.seen.lock().ok()?;
            seen.iter().find(|(s, _)| s == k).map(|(_, m)| m.clone())
        };
        if let Some(found) = seen(&key) {
            return Ok(found);
        }
        if !memory.remeasure {
            let file = memory.file.as_deref();
            if let Some(found) =
                file.and_then(|f| read_cache(f, &key)).filter(|m| candidates.contains(&m.strategy))
            {
                return Ok(found);
            }
        }
        let mut times = Vec::new();
        for _attempt in 0..2 {
            times.clear();
            for &strategy in &candidates {
                times.push((strategy, self.time_steps(members, lanes, options, strategy)?));
            }
            if steady(&times) {
                break;
            }
        }
        let step_ms: Vec<(Strategy, f64)> = times.iter().map(|(s, t)| (*s, median(t))).collect();
        let steady = steady(&times);
        let best = if steady {
            step_ms.iter().min_by(|a, b| a.1.total_cmp(&b.1)).map_or(Strategy::Threads, |b| b.0)
        } else {
            least_work(&candidates)
        };
        let found = Measurement { strategy: best, step_ms, cached: false, steady };
        if let (Some(file), true) = (&memory.file, found.steady) {
            write_cache(file, &key, &found);
        }
        if let Ok(mut seen) = memory.seen.lock() {
            seen.push((key, Measurement { cached: true, ..found.clone() }));
        }
        Ok(found)
    }

    /// Names the file in which `auto` keeps its measurements across processes (`None`: in
    /// memory only); with `remeasure`, the file is not read, only written.
    pub fn set_strategy_cache(&mut self, file: Option<PathBuf>, remeasure: bool) {
        self.strategy_memory = StrategyMemory { file, remeasure, seen: Default::default() };
    }

    /// The strategies that differ for these policies: batching needs two policies on one
    /// model file and adapter; mixing needs them all there, with linear logits.
    fn candidates(&self, members: &[usize]) -> Vec<Strategy> {
        let setup = |p: usize| {
            (self.policy_model[p], self.policy_adapter[p].map(|(a, s)| (a, s.to_bits())))
        };
        let mut setups: Vec<_> = members.iter().map(|&p| setup(p)).collect();
        let all_one = setups.windows(2).all(|w| w[0] == w[1]);
        setups.sort_unstable();
        setups.dedup();
        let mut out = vec![Strategy::Threads];
        if setups.len() < members.len() {
            out.push(Strategy::Batched);
        }
        let linear = members.first().is_some_and(|&p| super::not_linear(self.model(p)).is_none());
        if members.len() > 1 && all_one && linear {
            out.push(Strategy::Mixed);
        }
        out
    }

    /// Milliseconds of each timed step in every lane with `strategy`.
    fn time_steps(
        &self,
        members: &[usize],
        lanes: usize,
        options: SessionOptions,
        strategy: Strategy,
    ) -> Result<Vec<f64>> {
        let mut session =
            self.start_session(members, lanes, SessionOptions { strategy, ..options }, false)?;
        let prompts: Vec<Option<Vec<LlamaToken>>> =
            members.iter().map(|&p| Some(self.tokenize(p, "The morning was"))).collect();
        let all: Vec<usize> = (0..members.len()).collect();
        let mix =
            session.can_mix(&all).ok().map(|()| vec![1.0 / members.len() as f32; members.len()]);
        for lane in 0..lanes {
            session.prefill_lane(lane, &prompts, false, mix.clone())?;
        }
        let room =
            options.ctx_size as usize - prompts.iter().flatten().map(Vec::len).max().unwrap_or(0);
        let token = self.tokenize_continuation(members[0], " the").last().copied();
        let tokens: Vec<Vec<_>> = vec![token.into_iter().collect(); lanes];
        let drops = vec![0; lanes];
        let mut times = Vec::with_capacity(TIMED_STEPS);
        for step in 0..(TIMED_STEPS + 2).min(room.saturating_sub(1)) {
            let started = Instant::now();
            session.feed(&tokens, &drops)?;
            if step >= 2 {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(times)
    }

    /// What makes strategies rank differently: the machine, the thread budget, the lanes,
    /// the policies' files, adapters, offload and RPC servers.
    fn setup_key(&self, members: &[usize], lanes: usize, options: SessionOptions) -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(str::to_string))
            .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let policies: Vec<String> = members
            .iter()
            .map(|&p| {
                let model = &self.models[self.policy_model[p]];
                let name = model
                    .path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                let size = std::fs::metadata(&model.path).map_or(0, |m| m.len());
                let adapter =
                    self.policy_adapter[p].map_or(String::new(), |(a, s)| format!("+lora{a}@{s}"));
                let servers: Vec<String> =
                    model.servers.iter().map(|s| s.endpoint().to_string()).collect();
                let rpc = if servers.is_empty() {
                    String::new()
                } else {
                    format!("@rpc:{}", servers.join("+"))
                };
                format!("{name}:{size}:gpu{}{adapter}{rpc}", model.n_gpu_layers)
            })
            .collect();
        format!(
            "{cpu}|{cores} cores|{} threads|{lanes} lanes|{}",
            options.threads,
            policies.join(",")
        )
    }
}

fn read_cache(path: &Path, key: &str) -> Option<Measurement> {
    let text = std::fs::read_to_string(path).ok()?;
    let all: Value = serde_json::from_str(&text).ok()?;
    let entry = all.get(key)?;
    // Entries from before measurements were checked for steadiness do not say so: measure
    // again rather than trust one taken on a busy machine.
    if entry.get("steady") != Some(&Value::Bool(true)) {
        return None;
    }
    let strategy = entry.get("strategy")?.as_str()?.parse().ok()?;
    let step_ms = entry
        .get("step_ms")?
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_f64()?)))
        .collect();
    Some(Measurement { strategy, step_ms, cached: true, steady: true })
}

/// Adds the measurement to the cache file (best effort: a cache that cannot be written
/// only means measuring again next time).
fn write_cache(path: &Path, key: &str, m: &Measurement) {
    let mut all: Map<String, Value> = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let step_ms: Map<String, Value> =
        m.step_ms.iter().map(|(s, ms)| (s.name().to_string(), json!(ms))).collect();
    all.insert(
        key.to_string(),
        json!({ "strategy": m.strategy.name(), "step_ms": step_ms, "steady": m.steady }),
    );
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_string_pretty(&Value::Object(all)).unwrap_or_default();
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_interquartile_range_over_the_median() {
        // Quartiles of 1..=9 by linear interpolation: 3 and 7, median 5.
        let t: Vec<f64> = (1..=9).map(f64::from).collect();
        assert!((spread(&t) - 4.0 / 5.0).abs() < 1e-12);
        assert_eq!(spread(&[10.0; 8]), 0.0);
        assert_eq!(spread(&[4.0]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn the_cache_file_keeps_steady_measurements_and_ignores_older_entries() {
        let dir = std::env::temp_dir().join(format!("mood-tuning-{}", std::process::id()));
        let file = dir.join("strategy.json");
        let m = Measurement {
            strategy: Strategy::Mixed,
            step_ms: vec![(Strategy::Threads, 20.0), (Strategy::Mixed, 12.5)],
            cached: false,
            steady: true,
        };
        write_cache(&file, "setup", &m);
        assert_eq!(read_cache(&file, "setup"), Some(Measurement { cached: true, ..m.clone() }));
        assert_eq!(read_cache(&file, "other"), None);
        // An entry written without the steadiness check is measured again.
        let old = r#"{"setup": {"strategy": "threads", "step_ms": {"threads": 9.0}}}"#;
        std::fs::write(&file, old).unwrap();
        assert_eq!(read_cache(&file, "setup"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_busy_machine_is_not_a_steady_measurement() {
        let calm = vec![10.0, 10.2, 9.9, 10.1, 10.0, 10.3, 9.8, 10.0];
        // Another program took the cores for half the steps.
        let busy = vec![10.0, 25.0, 10.1, 24.0, 9.9, 26.0, 10.0, 23.0];
        // One stray slow step does not make a measurement unsteady.
        let one_slow = vec![10.0, 10.1, 9.9, 40.0, 10.0, 10.2, 9.8, 10.0];
        assert!(steady(&[(Strategy::Threads, calm.clone()), (Strategy::Mixed, one_slow)]));
        assert!(!steady(&[(Strategy::Threads, calm.clone()), (Strategy::Mixed, busy)]));
        assert!(!steady(&[(Strategy::Threads, calm), (Strategy::Mixed, Vec::new())]));
        let all = [Strategy::Threads, Strategy::Batched, Strategy::Mixed];
        assert_eq!(least_work(&all), Strategy::Mixed);
        assert_eq!(least_work(&all[..2]), Strategy::Batched);
        assert_eq!(least_work(&all[..1]), Strategy::Threads);
    }
}
