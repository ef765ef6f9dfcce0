//! A decoding session: one llama.cpp context per policy, driven by persistent worker threads.
//!
//! Policies are spread over `min(policies, threads)` workers; each worker gets an equal share
//! of the llama.cpp thread budget, so the cores are never oversubscribed. A step hands the
//! same token to every worker; they decode concurrently and hand back each policy's logits in
//! buffers that travel back and forth, so nothing is allocated per step.

use anyhow::{anyhow, bail, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Total llama.cpp threads across all policies.
    pub threads: usize,
    /// Context length of each policy (prompt + generated tokens).
    pub ctx_size: u32,
}

/// Prompt tokens are decoded in chunks of this many.
const PREFILL_CHUNK: usize = 512;

/// llama.cpp contexts must be created one at a time.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

enum Job {
    Prefill { prompts: Vec<Vec<LlamaToken>>, logits: Vec<Vec<f32>> },
    Append { token: LlamaToken, logits: Vec<Vec<f32>> },
}

struct Reply {
    logits: Vec<Vec<f32>>,
    result: std::result::Result<(), String>,
}

struct Worker {
    jobs: Option<Sender<Job>>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
    /// Session member indices this worker decodes, in its slot order.
    members: Vec<usize>,
    /// The logits buffers while the worker is idle.
    logits: Vec<Vec<f32>>,
}

/// Policies decoding the same continuation side by side.
pub struct Session {
    workers: Vec<Worker>,
    /// For each member: (worker, slot within the worker).
    place: Vec<(usize, usize)>,
    positions: Vec<usize>,
    n_ctx: u32,
}

impl Session {
    pub(super) fn start(models: Vec<Arc<LlamaModel>>, options: SessionOptions) -> Result<Self> {
        if models.is_empty() {
            bail!("a session needs at least one policy");
        }
        if options.ctx_size < 8 {
            bail!("--ctx-size must be at least 8 tokens, got {}", options.ctx_size);
        }
        let threads = options.threads.max(1);
        let n_workers = models.len().min(threads);
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); n_workers];
        for m in 0..models.len() {
            groups[m % n_workers].push(m);
        }
        let mut workers = Vec::with_capacity(n_workers);
        let mut ready = Vec::with_capacity(n_workers);
        for (w, members) in groups.into_iter().enumerate() {
            let share = threads / n_workers + usize::from(w < threads % n_workers);
            let worker_models: Vec<Arc<LlamaModel>> =
                members.iter().map(|&m| Arc::clone(&models[m])).collect();
            let (job_tx, job_rx) = channel();
            let (reply_tx, reply_rx) = channel();
            let (ready_tx, ready_rx) = channel();
            let ctx_size = options.ctx_size;
            let thread = std::thread::Builder::new()
                .name(format!("mood-policy-{w}"))
                .spawn(move || {
                    run_worker(worker_models, share, ctx_size, job_rx, reply_tx, ready_tx)
                })
                .map_err(|e| anyhow!("cannot start a worker thread: {e}"))?;
            ready.push(ready_rx);
            let logits = vec![Vec::new(); members.len()];
            workers.push(Worker {
                jobs: Some(job_tx),
                replies: reply_rx,
                thread: Some(thread),
                members,
                logits,
            });
        }
        let mut place = vec![(0, 0); models.len()];
        for (w, worker) in workers.iter().enumerate() {
            for (slot, &m) in worker.members.iter().enumerate() {
                place[m] = (w, slot);
            }
        }
        let session =
            Session { workers, place, positions: vec![0; models.len()], n_ctx: options.ctx_size };
        for r in ready {
            r.recv()
                .map_err(|_| anyhow!("a policy worker stopped while starting"))?
                .map_err(|e| anyhow!(e))?;
        }
        Ok(session)
    }

    /// Number of policies in the session.
    pub fn len(&self) -> usize {
        self.place.len()
    }

    /// Always false: a session has at least one policy.
    pub fn is_empty(&self) -> bool {
        self.place.is_empty()
    }

    /// The context length of each policy.
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// True while every policy has room for one more token.
    pub fn has_room(&self) -> bool {
        self.positions.iter().all(|&p| p < self.n_ctx as usize)
    }

    /// Decodes each member's prompt (all in parallel); afterwards [`Session::logits`] holds
    /// each member's next-token logits. Any earlier state is cleared.
    pub fn prefill(&mut self, prompts: &[Vec<LlamaToken>]) -> Result<()> {
        if prompts.len() != self.len() {
            bail!("{} prompts for {} policies", prompts.len(), self.len());
        }
        for p in prompts {
            if p.is_empty() {
                bail!("the prompt is empty");
            }
            if p.len() >= self.n_ctx as usize {
                bail!(
                    "the prompt is {} tokens but the context holds {}; shorten the prompt or raise --ctx-size",
                    p.len(),
                    self.n_ctx
                );
            }
        }
        self.run(|members, logits| Job::Prefill {
            prompts: members.iter().map(|&m| prompts[m].clone()).collect(),
            logits,
        })?;
        for (pos, p) in self.positions.iter_mut().zip(prompts) {
            *pos = p.len();
        }
        Ok(())
    }

    /// Feeds `token` to every member (concurrently) and fetches their next logits.
    pub fn append(&mut self, token: LlamaToken) -> Result<()> {
        if !self.has_room() {
            bail!("the context is full ({} tokens)", self.n_ctx);
        }
        self.run(|_, logits| Job::Append { token, logits })?;
        for pos in &mut self.positions {
            *pos += 1;
        }
        Ok(())
    }

    /// Member `m`'s latest next-token logits (its model's whole vocabulary).
    pub fn logits(&self, m: usize) -> &[f32] {
        let (w, slot) = self.place[m];
        &self.workers[w].logits[slot]
    }

    /// Sends one job to every worker, then waits for all of them.
    fn run(&mut self, make: impl Fn(&[usize], Vec<Vec<f32>>) -> Job) -> Result<()> {
        for worker in &mut self.workers {
            let logits = std::mem::take(&mut worker.logits);
            let job = make(&worker.members, logits);
            let sent = worker.jobs.as_ref().map(|tx| tx.send(job).is_ok()).unwrap_or(false);
            if !sent {
                bail!("a policy worker has stopped");
            }
        }
        let mut first_error = None;
        for worker in &mut self.workers {
            match worker.replies.recv() {
                Ok(reply) => {
                    worker.logits = reply.logits;
                    if let Err(e) = reply.result {
                        first_error.get_or_insert(e);
                    }
                }
                Err(_) => {
                    first_error
                        .get_or_insert_with(|| "a policy worker stopped unexpectedly".into());
                }
            }
        }
        match first_error {
            Some(e) => Err(anyhow!(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.jobs.take();
        }
        for worker in &mut self.workers {
            if let Some(t) = worker.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A worker thread: creates its contexts (one at a time, process-wide), signals `ready`,
/// then serves jobs until the session drops its sender.
fn run_worker(
    models: Vec<Arc<LlamaModel>>,
    threads: usize,
    ctx_size: u32,
    jobs: Receiver<Job>,
    replies: Sender<Reply>,
    ready: Sender<std::result::Result<(), String>>,
) {
    let contexts = match create_contexts(&models, threads, ctx_size) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut contexts = contexts;
    let mut batch = LlamaBatch::new(PREFILL_CHUNK, 1);
    if ready.send(Ok(())).is_err() {
        return;
    }
    while let Ok(job) = jobs.recv() {
        let (logits, result) = match job {
            Job::Prefill { prompts, mut logits } => {
                let r = contexts
                    .iter_mut()
                    .zip(&prompts)
                    .zip(logits.iter_mut())
                    .try_for_each(|((ctx, prompt), out)| prefill(ctx, &mut batch, prompt, out));
                (logits, r)
            }
            Job::Append { token, mut logits } => {
                let r = contexts.iter_mut().zip(logits.iter_mut()).try_for_each(|(ctx, out)| {
                    let pos = ctx.position;
                    ctx.position += 1;
                    decode_chunk(ctx, &mut batch, &[token], pos, Some(out))
                });
                (logits, r)
            }
        };
        if replies.send(Reply { logits, result }).is_err() {
            return;
        }
    }
}

/// A context and the number of tokens in its KV cache.
struct PolicyContext<'m> {
    ctx: LlamaContext<'m>,
    position: usize,
}

fn create_contexts(
    models: &[Arc<LlamaModel>],
    threads: usize,
    ctx_size: u32,
) -> std::result::Result<Vec<PolicyContext<'_>>, String> {
    let backend = super::backend().map_err(|e| e.to_string())?;
    let threads = i32::try_from(threads).unwrap_or(i32::MAX);
    let _one_at_a_time = CONTEXT_CREATION.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    models
        .iter()
        .map(|model| {
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(ctx_size))
                .with_n_batch(PREFILL_CHUNK as u32)
                .with_n_ubatch(PREFILL_CHUNK as u32)
                .with_n_threads(threads)
                .with_n_threads_batch(threads);
            model
                .new_context(backend, params)
                .map(|ctx| PolicyContext { ctx, position: 0 })
                .map_err(|e| format!("cannot create a llama.cpp context of {ctx_size} tokens: {e}"))
        })
        .collect()
}

fn prefill(
    pc: &mut PolicyContext<'_>,
    batch: &mut LlamaBatch,
    prompt: &[LlamaToken],
    out: &mut Vec<f32>,
) -> std::result::Result<(), String> {
    pc.ctx.clear_kv_cache();
    pc.position = 0;
    let n_chunks = prompt.len().div_ceil(PREFILL_CHUNK);
    for (i, chunk) in prompt.chunks(PREFILL_CHUNK).enumerate() {
        let pos = pc.position;
        pc.position += chunk.len();
        let want = (i + 1 == n_chunks).then_some(&mut *out);
        decode_chunk(pc, batch, chunk, pos, want)?;
    }
    Ok(())
}

/// Decodes `tokens` at positions `pos..`; with `out`, copies the last one's logits there.
fn decode_chunk(
    pc: &mut PolicyContext<'_>,
    batch: &mut LlamaBatch,
    tokens: &[LlamaToken],
    pos: usize,
    out: Option<&mut Vec<f32>>,
) -> std::result::Result<(), String> {
    batch.clear();
    let last = tokens.len() - 1;
    for (i, &t) in tokens.iter().enumerate() {
        let want = i == last && out.is_some();
        batch.add(t, (pos + i) as i32, &[0], want).map_err(|e| e.to_string())?;
    }
    pc.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"))?;
    if let Some(out) = out {
        out.clear();
        out.extend_from_slice(pc.ctx.get_logits_ith(last as i32));
    }
    Ok(())
}
