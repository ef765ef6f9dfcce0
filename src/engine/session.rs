//! A decoding session: policies in llama.cpp contexts, driven by persistent worker threads.
//!
//! Policies are placed in *groups*: one llama.cpp context each, holding one sequence per
//! policy of the group (all on the same model). The [`Strategy`] decides the grouping:
//! `threads` gives every policy a context of its own, `batched` puts all policies of a model
//! file in one context and decodes them as one batch per step. Groups are spread over
//! `min(groups, threads)` workers, each with an equal share of the llama.cpp thread budget,
//! so the cores are never oversubscribed. A step hands the same token to every worker; they
//! decode concurrently and hand back each policy's logits in buffers that travel back and
//! forth, so nothing is allocated per step.

use anyhow::{anyhow, bail, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How policies are laid out over llama.cpp contexts.
///
/// Measured on a 2-core CPU with the default model (`mood bench`): one context per policy
/// on its own thread beats one batched context at 2, 3 and 4 policies (the 262k-token output
/// layer makes a multi-token batch cost nearly as much per token as separate passes), so
/// `Auto` picks `Threads` on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The better one for the hardware: `threads` on the CPU, `batched` with GPU offload.
    Auto,
    /// One context per policy; contexts decode concurrently on worker threads.
    Threads,
    /// One context per model file, one sequence per policy, one batch per step.
    Batched,
}

impl Strategy {
    /// The strategy `Auto` stands for, with or without GPU offload.
    pub fn resolve(self, offload: bool) -> Strategy {
        match self {
            Strategy::Auto if offload => Strategy::Batched,
            Strategy::Auto => Strategy::Threads,
            s => s,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Threads => "threads",
            Strategy::Batched => "batched",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Strategy::Auto),
            "threads" => Ok(Strategy::Threads),
            "batched" => Ok(Strategy::Batched),
            _ => bail!("unknown strategy '{s}'; available: auto, threads, batched"),
        }
    }
}

/// How a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Total llama.cpp threads across all policies.
    pub threads: usize,
    /// Context length of each policy (prompt + generated tokens).
    pub ctx_size: u32,
    pub strategy: Strategy,
}

/// Prompt tokens are decoded in chunks of at most this many.
const PREFILL_CHUNK: usize = 512;
/// llama.cpp's physical batch: smaller than the chunk to keep each context's compute buffer
/// and sliding-window cache small (it costs little prompt speed on a CPU).
const UBATCH: usize = 256;

/// llama.cpp contexts must be created one at a time.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

enum Job {
    Prefill {
        prompts: Vec<Vec<LlamaToken>>,
        logits: Vec<Vec<f32>>,
    },
    Append {
        token: LlamaToken,
        logits: Vec<Vec<f32>>,
    },
    /// Log-likelihood of each member's (prompt, continuation); clears the caches.
    Score {
        texts: Vec<(Vec<LlamaToken>, Vec<LlamaToken>)>,
        logits: Vec<Vec<f32>>,
    },
}

struct Reply {
    logits: Vec<Vec<f32>>,
    scores: Vec<f64>,
    result: std::result::Result<(), String>,
}

/// One session member: the model it runs on and its LoRA adapter with the scale.
pub(super) struct MemberSpec {
    pub model: Arc<LlamaModel>,
    pub lora: Option<(Arc<Mutex<LlamaLoraAdapter>>, f32)>,
}

impl MemberSpec {
    /// Whether two members can share one context (same model, same adapter and scale).
    fn same_setup(&self, other: &MemberSpec) -> bool {
        let lora_eq = match (&self.lora, &other.lora) {
            (None, None) => true,
            (Some((a, s)), Some((b, t))) => Arc::ptr_eq(a, b) && s == t,
            _ => false,
        };
        Arc::ptr_eq(&self.model, &other.model) && lora_eq
    }
}

/// What a worker thread decodes: groups of session members, each group one context.
struct WorkerPlan {
    // Adapters before models: fields drop in order, and an adapter belongs to its model.
    lora_of_group: Vec<Option<(Arc<Mutex<LlamaLoraAdapter>>, f32)>>,
    model_of_group: Vec<Arc<LlamaModel>>,
    /// For each group, how many sequences (members) it holds.
    group_sizes: Vec<usize>,
    threads: usize,
    ctx_size: u32,
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
    strategy: Strategy,
    n_contexts: usize,
}

impl Session {
    pub(super) fn start(models: Vec<MemberSpec>, options: SessionOptions) -> Result<Self> {
        if models.is_empty() {
            bail!("a session needs at least one policy");
        }
        if options.ctx_size < 8 {
            bail!("--ctx-size must be at least 8 tokens, got {}", options.ctx_size);
        }
        let threads = options.threads.max(1);
        let strategy = options.strategy.resolve(false);
        let groups = plan_groups(&models, strategy);
        let n_workers = groups.len().min(threads);
        let mut by_worker: Vec<Vec<Vec<usize>>> = vec![Vec::new(); n_workers];
        for (g, group) in groups.into_iter().enumerate() {
            by_worker[g % n_workers].push(group);
        }
        let mut workers = Vec::with_capacity(n_workers);
        let mut ready = Vec::with_capacity(n_workers);
        for (w, worker_groups) in by_worker.into_iter().enumerate() {
            let plan = WorkerPlan {
                lora_of_group: worker_groups
                    .iter()
                    .map(|g| models[g[0]].lora.as_ref().map(|(a, s)| (Arc::clone(a), *s)))
                    .collect(),
                model_of_group: worker_groups
                    .iter()
                    .map(|g| Arc::clone(&models[g[0]].model))
                    .collect(),
                group_sizes: worker_groups.iter().map(Vec::len).collect(),
                threads: threads / n_workers + usize::from(w < threads % n_workers),
                ctx_size: options.ctx_size,
            };
            let members: Vec<usize> = worker_groups.into_iter().flatten().collect();
            let (job_tx, job_rx) = channel();
            let (reply_tx, reply_rx) = channel();
            let (ready_tx, ready_rx) = channel();
            let thread = std::thread::Builder::new()
                .name(format!("mood-policy-{w}"))
                .spawn(move || run_worker(plan, job_rx, reply_tx, ready_tx))
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
        let n_contexts = match strategy {
            Strategy::Batched => plan_groups(&models, strategy).len(),
            _ => models.len(),
        };
        let session = Session {
            workers,
            place,
            positions: vec![0; models.len()],
            n_ctx: options.ctx_size,
            strategy,
            n_contexts,
        };
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

    /// The strategy in use (never `Auto`).
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Number of llama.cpp contexts the session holds.
    pub fn n_contexts(&self) -> usize {
        self.n_contexts
    }

    /// Number of worker threads.
    pub fn n_workers(&self) -> usize {
        self.workers.len()
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

    /// Each member's log-likelihood of `continuations[m]` after `prompts[m]` (natural log,
    /// summed over the continuation's tokens), from one forward pass over prompt and
    /// continuation per member, all members in parallel. Clears the session's state: call
    /// [`Session::prefill`] before decoding again.
    pub fn score(
        &mut self,
        prompts: &[Vec<LlamaToken>],
        continuations: &[Vec<LlamaToken>],
    ) -> Result<Vec<f64>> {
        if prompts.len() != self.len() || continuations.len() != self.len() {
            bail!("score needs one prompt and one continuation per policy");
        }
        for (p, c) in prompts.iter().zip(continuations) {
            if p.is_empty() {
                bail!("the prompt is empty");
            }
            if p.len() + c.len() > self.n_ctx as usize {
                bail!(
                    "prompt and response are {} tokens but the context holds {}; raise --ctx-size",
                    p.len() + c.len(),
                    self.n_ctx
                );
            }
        }
        let mut scores = vec![0.0; self.len()];
        self.run_collect(
            |members, logits| Job::Score {
                texts: members
                    .iter()
                    .map(|&m| (prompts[m].clone(), continuations[m].clone()))
                    .collect(),
                logits,
            },
            |members, worker_scores| {
                for (&m, &s) in members.iter().zip(worker_scores) {
                    scores[m] = s;
                }
            },
        )?;
        for pos in &mut self.positions {
            *pos = self.n_ctx as usize; // no room until the next prefill
        }
        Ok(scores)
    }

    /// Member `m`'s latest next-token logits (its model's whole vocabulary).
    pub fn logits(&self, m: usize) -> &[f32] {
        let (w, slot) = self.place[m];
        &self.workers[w].logits[slot]
    }

    /// Sends one job to every worker, then waits for all of them.
    fn run(&mut self, make: impl Fn(&[usize], Vec<Vec<f32>>) -> Job) -> Result<()> {
        self.run_collect(make, |_, _| {})
    }

    /// As [`Session::run`], handing each worker's scores (with its members) to `collect`.
    fn run_collect(
        &mut self,
        make: impl Fn(&[usize], Vec<Vec<f32>>) -> Job,
        mut collect: impl FnMut(&[usize], &[f64]),
    ) -> Result<()> {
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
                    collect(&worker.members, &reply.scores);
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

/// Groups of member indices, one llama.cpp context each. Batched groups join members with
/// the same model and adapter (a context applies one adapter to all its sequences).
fn plan_groups(models: &[MemberSpec], strategy: Strategy) -> Vec<Vec<usize>> {
    match strategy {
        Strategy::Batched => {
            let mut groups: Vec<Vec<usize>> = Vec::new();
            for m in 0..models.len() {
                match groups.iter_mut().find(|g| models[g[0]].same_setup(&models[m])) {
                    Some(g) => g.push(m),
                    None => groups.push(vec![m]),
                }
            }
            groups
        }
        _ => (0..models.len()).map(|m| vec![m]).collect(),
    }
}

/// A worker thread: creates its contexts (one at a time, process-wide), signals `ready`,
/// then serves jobs until the session drops its sender.
fn run_worker(
    plan: WorkerPlan,
    jobs: Receiver<Job>,
    replies: Sender<Reply>,
    ready: Sender<std::result::Result<(), String>>,
) {
    let mut groups = match create_contexts(&plan) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let max_seqs = plan.group_sizes.iter().copied().max().unwrap_or(1);
    let mut batch = LlamaBatch::new(PREFILL_CHUNK.max(max_seqs), 1);
    if ready.send(Ok(())).is_err() {
        return;
    }
    while let Ok(job) = jobs.recv() {
        let mut scores = Vec::new();
        let (logits, result) = match job {
            Job::Score { texts, logits } => {
                let mut r = Ok(());
                let mut slot = 0;
                for g in &mut groups {
                    let n = g.positions.len();
                    for (s, (prompt, cont)) in texts[slot..slot + n].iter().enumerate() {
                        match score(g, &mut batch, s, prompt, cont) {
                            Ok(v) => scores.push(v),
                            Err(e) => r = Err(e),
                        }
                    }
                    slot += n;
                    if r.is_err() {
                        break;
                    }
                }
                (logits, r)
            }
            Job::Prefill { prompts, mut logits } => {
                let mut r = Ok(());
                let mut slot = 0;
                for g in &mut groups {
                    let n = g.positions.len();
                    r = prefill(
                        g,
                        &mut batch,
                        &prompts[slot..slot + n],
                        &mut logits[slot..slot + n],
                    );
                    slot += n;
                    if r.is_err() {
                        break;
                    }
                }
                (logits, r)
            }
            Job::Append { token, mut logits } => {
                let mut r = Ok(());
                let mut slot = 0;
                for g in &mut groups {
                    let n = g.positions.len();
                    r = append(g, &mut batch, token, &mut logits[slot..slot + n]);
                    slot += n;
                    if r.is_err() {
                        break;
                    }
                }
                (logits, r)
            }
        };
        if replies.send(Reply { logits, scores, result }).is_err() {
            return;
        }
    }
}

/// A context and, for each of its sequences, the number of tokens in the KV cache.
struct GroupContext<'m> {
    ctx: LlamaContext<'m>,
    positions: Vec<usize>,
}

fn create_contexts(plan: &WorkerPlan) -> std::result::Result<Vec<GroupContext<'_>>, String> {
    let backend = super::backend().map_err(|e| e.to_string())?;
    let threads = i32::try_from(plan.threads).unwrap_or(i32::MAX);
    let _one_at_a_time = CONTEXT_CREATION.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    plan.model_of_group
        .iter()
        .zip(&plan.group_sizes)
        .zip(&plan.lora_of_group)
        .map(|((model, &seqs), lora)| {
            // Each sequence gets ctx_size tokens of the context's cache.
            let n_ctx = plan.ctx_size.saturating_mul(seqs as u32);
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(n_ctx))
                .with_n_batch(PREFILL_CHUNK.max(seqs) as u32)
                .with_n_ubatch(UBATCH.max(seqs) as u32)
                .with_n_seq_max(seqs as u32)
                // Sliding-window layers keep only their window (Gemma 3: 5 of every 6
                // layers); sessions never roll tokens back, which is what a full cache allows.
                .with_swa_full(false)
                .with_n_threads(threads)
                .with_n_threads_batch(threads);
            let mut ctx = model
                .new_context(backend, params)
                .map_err(|e| format!("cannot create a llama.cpp context of {n_ctx} tokens: {e}"))?;
            if let Some((adapter, scale)) = lora {
                let mut adapter = adapter.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                ctx.lora_adapter_set(&mut adapter, *scale)
                    .map_err(|e| format!("cannot apply a LoRA adapter to a context: {e}"))?;
            }
            Ok(GroupContext { ctx, positions: vec![0; seqs] })
        })
        .collect()
}

/// Decodes the sequences' prompts, packed into batches of up to PREFILL_CHUNK tokens, and
/// copies each sequence's last-token logits into `out`.
fn prefill(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    prompts: &[Vec<LlamaToken>],
    out: &mut [Vec<f32>],
) -> std::result::Result<(), String> {
    g.ctx.clear_kv_cache();
    // (sequence, batch index) of last tokens in the pending batch.
    let mut wanted: Vec<(usize, i32)> = Vec::new();
    batch.clear();
    for (s, prompt) in prompts.iter().enumerate() {
        for (i, &t) in prompt.iter().enumerate() {
            let last = i + 1 == prompt.len();
            if last {
                wanted.push((s, batch.n_tokens()));
            }
            batch.add(t, i as i32, &[s as i32], last).map_err(|e| e.to_string())?;
            if batch.n_tokens() as usize == PREFILL_CHUNK {
                decode_and_copy(g, batch, &mut wanted, out)?;
            }
        }
        g.positions[s] = prompt.len();
    }
    if batch.n_tokens() > 0 {
        decode_and_copy(g, batch, &mut wanted, out)?;
    }
    Ok(())
}

fn decode_and_copy(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    wanted: &mut Vec<(usize, i32)>,
    out: &mut [Vec<f32>],
) -> std::result::Result<(), String> {
    g.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"))?;
    for &(s, i) in wanted.iter() {
        out[s].clear();
        out[s].extend_from_slice(g.ctx.get_logits_ith(i));
    }
    wanted.clear();
    batch.clear();
    Ok(())
}

/// Feeds `token` to every sequence of the group in one batch and copies their logits.
fn append(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    token: LlamaToken,
    out: &mut [Vec<f32>],
) -> std::result::Result<(), String> {
    batch.clear();
    for (s, pos) in g.positions.iter_mut().enumerate() {
        batch.add(token, *pos as i32, &[s as i32], true).map_err(|e| e.to_string())?;
        *pos += 1;
    }
    g.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"))?;
    for (s, o) in out.iter_mut().enumerate() {
        o.clear();
        o.extend_from_slice(g.ctx.get_logits_ith(s as i32));
    }
    Ok(())
}

/// Log-likelihood of `cont` after `prompt` for sequence `s` of the group: one pass over both
/// (in chunks), logits only where a continuation token is predicted.
fn score(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    s: usize,
    prompt: &[LlamaToken],
    cont: &[LlamaToken],
) -> std::result::Result<f64, String> {
    g.ctx.clear_kv_cache();
    g.positions.iter_mut().for_each(|p| *p = 0);
    let all: Vec<LlamaToken> = prompt.iter().chain(cont).copied().collect();
    let first_predicting = prompt.len() - 1;
    let mut total = 0.0;
    for (c, chunk) in all.chunks(PREFILL_CHUNK).enumerate() {
        let start = c * PREFILL_CHUNK;
        batch.clear();
        let mut wanted = Vec::new();
        for (i, &t) in chunk.iter().enumerate() {
            let pos = start + i;
            let want = pos >= first_predicting && pos + 1 < all.len();
            if want {
                wanted.push((batch.n_tokens(), all[pos + 1]));
            }
            batch.add(t, pos as i32, &[s as i32], want).map_err(|e| e.to_string())?;
        }
        g.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"))?;
        for (i, next) in wanted {
            let logits = g.ctx.get_logits_ith(i);
            let lse = crate::combine::logsumexp(logits);
            total += f64::from(logits[next.0 as usize]) - lse;
        }
    }
    Ok(total)
}
