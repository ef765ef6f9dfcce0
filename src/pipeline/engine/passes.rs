//! What one llama.cpp forward pass costs by its width: the measured parameters of the cost
//! model of K objectives (`apps::bench::curve`).
//!
//! For each width `w`, a context of `w` sequences shares a short prompt (decoded once, then
//! copied with `seq_cp`); a pass feeds one token to each sequence at the same position and
//! is taken back out of the cache afterwards, so every pass sees the same context. Each width
//! is timed two ways: with every token's logits (what `batched` and `threads` compute) and
//! with one row of logits (the output layer once, as `mixed` does), so that their difference
//! is the output layer of `w − 1` rows. Widths alternate within each round, so that a noisy
//! machine slows them alike; an unmeasured first round warms the caches and llama.cpp's graph
//! allocations.
//!
//! The `threads` strategy runs a context per policy on workers of a share of the threads
//! each, at the same time; passes that run side by side share the memory bus and the caches,
//! so [`measure_alongside`] times one-token passes as that strategy runs them: a worker
//! thread per context, all passing at once.

use super::load::backend;
use anyhow::{anyhow, bail, Context, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Barrier;
use std::time::Instant;

/// The widest pass measured.
pub const MAX_WIDTH: usize = 8;
/// The most workers passing side by side (a thread and a context each).
pub const MAX_WORKERS: usize = 256;
/// Prompt tokens the sequences share before the measured position.
const PROMPT_TOKENS: usize = 64;
const PROMPT: &str = "The harbour town woke slowly. Fishing boats rocked against the stone quay, \
    gulls argued over the nets, and the baker opened her shutters to the smell of salt and \
    bread. Everyone in town agreed that the ocean had been restless all week.";

/// Median milliseconds per pass of each width from 1 on one model file.
#[derive(Debug, Clone, Serialize)]
pub struct PassCosts {
    pub threads: usize,
    /// How many such passes ran at once, each on `threads` threads of its own (1: alone).
    pub alongside: usize,
    /// Index `w − 1`: a pass of `w` sequences with every token's logits.
    pub every_row_ms: Vec<f64>,
    /// Index `w − 1`: the same pass with one row of logits.
    pub one_row_ms: Vec<f64>,
}

impl PassCosts {
    /// A pass of `w` sequences with every row, or with one; the widest measured for a
    /// wider `w`.
    pub fn ms(&self, w: usize, every_row: bool) -> f64 {
        let costs = if every_row { &self.every_row_ms } else { &self.one_row_ms };
        costs[w.clamp(1, costs.len()) - 1]
    }
}

/// Times passes of widths `1..=widest` (at most [`MAX_WIDTH`]) on `model` with `threads`
/// threads, `rounds` rounds.
///
/// The passes run on a thread of their own that ends with the measurement: llama.cpp's
/// OpenMP keeps a team of threads for each thread that computes, for as long as that thread
/// lives, and once the teams together outnumber the cores every barrier sleeps instead of
/// spinning, which would slow whatever decodes in this process afterwards.
pub fn measure(model: &Path, threads: usize, widest: usize, rounds: usize) -> Result<PassCosts> {
    if threads == 0 || rounds == 0 || widest == 0 || widest > MAX_WIDTH {
        bail!("a pass measurement needs a thread, a round and widths from 1 to {MAX_WIDTH}");
    }
    std::thread::scope(|s| {
        s.spawn(|| measure_here(model, threads, widest, rounds))
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the pass measurement failed")))
    })
}

fn measure_here(model: &Path, threads: usize, widest: usize, rounds: usize) -> Result<PassCosts> {
    let loaded = Loaded::new(model)?;
    let mut batch = LlamaBatch::new(PROMPT_TOKENS, MAX_WIDTH as i32);
    // A context per width and kind, shaped as the engine shapes it: `w` sequences, one cache
    // for all of them where the output is mixed, a cache per sequence otherwise.
    let mut contexts = Vec::with_capacity(2 * widest);
    for w in 1..=widest {
        for every_row in [true, false] {
            contexts.push((w, every_row, loaded.context(&mut batch, threads, w, every_row)?));
        }
    }
    let mut every = vec![Vec::with_capacity(rounds); widest];
    let mut one = vec![Vec::with_capacity(rounds); widest];
    for round in 0..=rounds {
        for (w, every_row, ctx) in &mut contexts {
            let ms = loaded.pass(ctx, &mut batch, *w, *every_row)?;
            if round > 0 {
                let times = if *every_row { &mut every } else { &mut one };
                times[*w - 1].push(ms);
            }
        }
    }
    Ok(PassCosts {
        threads,
        alongside: 1,
        every_row_ms: every.iter_mut().map(|t| median(t)).collect(),
        one_row_ms: one.iter_mut().map(|t| median(t)).collect(),
    })
}

/// Times one-token passes (every row) on `model` run by `workers` threads at once, each with
/// a context of its own computing on `threads` threads, `rounds` rounds: the passes of the
/// `threads` strategy. Every worker starts its pass of a round together with the others; the
/// result, at width 1, is the median over all workers' passes.
pub fn measure_alongside(
    model: &Path,
    threads: usize,
    workers: usize,
    rounds: usize,
) -> Result<PassCosts> {
    if threads == 0 || rounds == 0 || workers == 0 || workers > MAX_WORKERS {
        bail!("a pass measurement needs a thread, a round and from 1 to {MAX_WORKERS} workers");
    }
    std::thread::scope(|s| {
        s.spawn(|| alongside_here(model, threads, workers, rounds))
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the pass measurement failed")))
    })
}

fn alongside_here(
    model: &Path,
    threads: usize,
    workers: usize,
    rounds: usize,
) -> Result<PassCosts> {
    let loaded = Loaded::new(model)?;
    // Each worker opens its context and decodes the prompt itself, so that the only OpenMP
    // teams are the workers' own. Every worker reaches every barrier, whatever befell it, so
    // that none waits for good.
    let start = Barrier::new(workers);
    let timed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                let (loaded, start) = (&loaded, &start);
                s.spawn(move || {
                    let mut batch = LlamaBatch::new(PROMPT_TOKENS, 1);
                    let mut ctx = loaded.context(&mut batch, threads, 1, true);
                    let mut times = Vec::with_capacity(rounds);
                    for round in 0..=rounds {
                        start.wait();
                        let Ok(c) = &mut ctx else { continue };
                        match loaded.pass(c, &mut batch, 1, true) {
                            Ok(ms) if round > 0 => times.push(ms),
                            Ok(_) => {}
                            Err(e) => ctx = Err(e),
                        }
                    }
                    ctx.map(|_| times)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(anyhow!("a pass worker failed"))))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut all: Vec<f64> = timed.into_iter().flatten().collect();
    let ms = median(&mut all);
    Ok(PassCosts { threads, alongside: workers, every_row_ms: vec![ms], one_row_ms: vec![ms] })
}

/// A model file loaded for measuring, with the token each pass feeds.
struct Loaded {
    model: LlamaModel,
    shown: String,
    prompt: Vec<LlamaToken>,
    token: LlamaToken,
}

impl Loaded {
    fn new(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let model = LlamaModel::load_from_file(backend()?, path, &LlamaModelParams::default())
            .map_err(|e| anyhow!("cannot load {shown}: {e}"))?;
        let mut prompt = model.vocab().tokenize(PROMPT.as_bytes(), true, false);
        prompt.truncate(PROMPT_TOKENS);
        let Some(&token) = prompt.last() else { bail!("{shown}: the prompt has no tokens") };
        Ok(Self { model, shown, prompt, token })
    }

    /// A context of `w` sequences on `threads` threads, every sequence holding the prompt:
    /// one cache for all of them where one row of logits is asked for (as `mixed` has), a
    /// cache per sequence otherwise.
    fn context(
        &self,
        batch: &mut LlamaBatch,
        threads: usize,
        w: usize,
        every_row: bool,
    ) -> Result<LlamaContext<'_>> {
        let shown = &self.shown;
        let threads = i32::try_from(threads).context("too many threads")?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new((w * 2 * PROMPT_TOKENS) as u32))
            .with_n_batch(PROMPT_TOKENS as u32)
            .with_n_ubatch(PROMPT_TOKENS as u32)
            .with_n_seq_max(w as u32)
            .with_swa_full(false)
            .with_kv_unified(!every_row && w > 1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let mut ctx = self
            .model
            .new_context(backend()?, params)
            .map_err(|e| anyhow!("{shown}: context of {w}: {e}"))?;
        batch.clear();
        let last = self.prompt.len() - 1;
        for (i, &t) in self.prompt.iter().enumerate() {
            batch.add(t, i as i32, &[0], i == last)?;
        }
        ctx.decode(batch).map_err(|e| anyhow!("{shown}: prompt: {e}"))?;
        for s in 1..w as i32 {
            ctx.copy_kv_cache_seq(0, s, None, None)?;
        }
        Ok(ctx)
    }

    /// One timed pass of `w` sequences after the prompt (see [`pass`]).
    fn pass(
        &self,
        ctx: &mut LlamaContext,
        batch: &mut LlamaBatch,
        w: usize,
        every_row: bool,
    ) -> Result<f64> {
        let pos = self.prompt.len() as i32;
        pass(ctx, batch, self.token, pos, w, every_row)
            .with_context(|| format!("{}: a pass of {w}", self.shown))
    }
}

/// One pass of `w` sequences, a token each at `pos`, timed in milliseconds; the tokens are
/// removed from the cache afterwards.
fn pass(
    ctx: &mut LlamaContext,
    batch: &mut LlamaBatch,
    token: LlamaToken,
    pos: i32,
    w: usize,
    every_row: bool,
) -> Result<f64> {
    batch.clear();
    for s in 0..w {
        batch.add(token, pos, &[s as i32], every_row || s == 0)?;
    }
    let start = Instant::now();
    ctx.decode(batch)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    for s in 0..w {
        ctx.clear_kv_cache_seq(Some(s as u32), Some(pos as u32), None)?;
    }
    Ok(ms)
}

/// The median (the upper one of an even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
