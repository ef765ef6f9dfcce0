//! A decoding session: policies in llama.cpp contexts, driven by persistent worker threads
//! (see [`super::worker`]), in one or more independent *lanes* (streams of tokens).
//!
//! Policies are placed in *groups*: one llama.cpp context each, holding one sequence per
//! policy of the group and lane (all on the same model). The [`Strategy`] decides the grouping:
//! `threads` gives every policy a context of its own, `batched` puts all policies of a model
//! file in one context and decodes them as one batch per step. Groups are spread over
//! `min(groups, threads)` workers, each with an equal share of the llama.cpp thread budget,
//! so the cores are never oversubscribed. A step hands the same token to every worker; they
//! decode concurrently and hand back each policy's logits in buffers that travel back and
//! forth, so nothing is allocated per step.

use super::worker::{self, Job, Lora};
use crate::pipeline::settings::invalid;
use anyhow::{anyhow, bail, Result};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The smallest context a policy may have.
pub const MIN_CTX: u32 = 8;

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
    /// Context length of each policy (prompt + generated tokens); 0 = the engine's default
    /// (see [`super::Engine::context_size`]).
    pub ctx_size: u32,
    pub strategy: Strategy,
}

/// One session member: the model it runs on and its LoRA adapter with the scale.
pub(super) struct MemberSpec {
    pub model: Arc<LlamaModel>,
    pub lora: Option<Lora>,
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

struct Worker {
    jobs: Option<Sender<Job>>,
    replies: Receiver<worker::Reply>,
    thread: Option<JoinHandle<()>>,
    /// Session member indices this worker decodes, in its slot order.
    members: Vec<usize>,
    /// The logits buffers while the worker is idle: index `slot · lanes + lane`.
    logits: Vec<Vec<f32>>,
    /// The step's tokens for the worker's members, same index; travels with the step job.
    tokens: Vec<Option<LlamaToken>>,
}

/// Policies decoding side by side, in one or more lanes.
///
/// A lane runs the members its last prefill gave a prompt: the others sit out that lane's
/// steps (their cache there stays as it was), so a request that needs fewer policies than
/// the session holds costs no more than a session of its own.
pub struct Session {
    workers: Vec<Worker>,
    /// For each member: (worker, slot within the worker).
    place: Vec<(usize, usize)>,
    lanes: usize,
    /// Tokens in each (member, lane)'s cache: index `member · lanes + lane`.
    positions: Vec<usize>,
    /// Whether each member runs in each lane: same index.
    running: Vec<bool>,
    n_ctx: u32,
    strategy: Strategy,
    n_contexts: usize,
}

impl Session {
    pub(super) fn start(
        models: Vec<MemberSpec>,
        options: SessionOptions,
        lanes: usize,
    ) -> Result<Self> {
        if models.is_empty() {
            bail!("a session needs at least one policy");
        }
        if lanes == 0 {
            bail!("a session needs at least one lane");
        }
        if options.ctx_size < MIN_CTX {
            return Err(invalid(
                "ctx_size",
                format!("must be at least {MIN_CTX} tokens, got {}", options.ctx_size),
            ));
        }
        let threads = options.threads.max(1);
        let strategy = options.strategy.resolve(false);
        let groups = plan_groups(&models, strategy);
        let n_contexts = groups.len();
        let n_workers = groups.len().min(threads);
        let mut by_worker: Vec<Vec<Vec<usize>>> = vec![Vec::new(); n_workers];
        for (g, group) in groups.into_iter().enumerate() {
            by_worker[g % n_workers].push(group);
        }
        let mut workers = Vec::with_capacity(n_workers);
        let mut ready = Vec::with_capacity(n_workers);
        for (w, worker_groups) in by_worker.into_iter().enumerate() {
            let plan = worker::Plan {
                lora_of_group: worker_groups
                    .iter()
                    .map(|g| models[g[0]].lora.as_ref().map(|(a, s)| (Arc::clone(a), *s)))
                    .collect(),
                model_of_group: worker_groups
                    .iter()
                    .map(|g| Arc::clone(&models[g[0]].model))
                    .collect(),
                group_sizes: worker_groups.iter().map(Vec::len).collect(),
                lanes,
                threads: threads / n_workers + usize::from(w < threads % n_workers),
                ctx_size: options.ctx_size,
            };
            let members: Vec<usize> = worker_groups.into_iter().flatten().collect();
            let (job_tx, job_rx) = channel();
            let (reply_tx, reply_rx) = channel();
            let (ready_tx, ready_rx) = channel();
            let thread = std::thread::Builder::new()
                .name(format!("mood-policy-{w}"))
                .spawn(move || worker::run(plan, job_rx, reply_tx, ready_tx))
                .map_err(|e| anyhow!("cannot start a worker thread: {e}"))?;
            ready.push(ready_rx);
            let slots = members.len() * lanes;
            workers.push(Worker {
                jobs: Some(job_tx),
                replies: reply_rx,
                thread: Some(thread),
                members,
                logits: vec![Vec::new(); slots],
                tokens: vec![None; slots],
            });
        }
        let mut place = vec![(0, 0); models.len()];
        for (w, worker) in workers.iter().enumerate() {
            for (slot, &m) in worker.members.iter().enumerate() {
                place[m] = (w, slot);
            }
        }
        let session = Session {
            workers,
            place,
            lanes,
            positions: vec![0; models.len() * lanes],
            running: vec![false; models.len() * lanes],
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
    fn len(&self) -> usize {
        self.place.len()
    }

    /// The strategy in use (never `Auto`).
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Number of llama.cpp contexts the session holds.
    pub fn n_contexts(&self) -> usize {
        self.n_contexts
    }

    /// True while every member running in `lane` has room for one more token.
    pub fn has_room_in(&self, lane: usize) -> bool {
        (0..self.len()).all(|m| {
            let i = m * self.lanes + lane;
            !self.running[i] || self.positions[i] < self.n_ctx as usize
        })
    }

    /// Makes `lane` run the members that `prompts` gives a prompt (one entry per member,
    /// `None`: the member sits this lane out) and decodes their prompts, all members in
    /// parallel; afterwards [`Session::logits_in`] holds each running member's next-token
    /// logits for the lane.
    ///
    /// Without `reuse` the lane starts from scratch: the same numbers as a fresh context.
    /// With `reuse`, each member keeps the longest start of its prompt already cached, in
    /// this lane (a conversation's next turn) or in another (a prefix or system prompt that
    /// prompts share, copied), and decodes only the rest; logits can then differ from a fresh
    /// prefill by llama.cpp's batch-split noise. Returns the fewest tokens a member reused.
    pub fn prefill_lane(
        &mut self,
        lane: usize,
        prompts: &[Option<Vec<LlamaToken>>],
        reuse: bool,
    ) -> Result<usize> {
        if lane >= self.lanes {
            bail!("lane {lane} of {}", self.lanes);
        }
        if prompts.len() != self.len() {
            bail!("{} prompts for {} policies", prompts.len(), self.len());
        }
        if prompts.iter().all(Option::is_none) {
            bail!("a lane needs at least one policy");
        }
        for p in prompts.iter().flatten() {
            if p.is_empty() {
                bail!("the prompt is empty");
            }
            if p.len() >= self.n_ctx as usize {
                return Err(invalid(
                    "ctx_size",
                    format!(
                        "is {} tokens but the prompt takes {}; shorten the prompt or raise `ctx_size`",
                        self.n_ctx,
                        p.len()
                    ),
                ));
            }
        }
        let mut reused = usize::MAX;
        let result = Self::run_collect(
            &mut self.workers,
            |members, logits, tokens| {
                let job = Job::Prefill {
                    lane,
                    prompts: members.iter().map(|&m| prompts[m].clone()).collect(),
                    reuse,
                    logits,
                };
                (job, tokens)
            },
            |_, _, kept| reused = reused.min(kept.iter().copied().min().unwrap_or(usize::MAX)),
        );
        for (m, p) in prompts.iter().enumerate() {
            let i = m * self.lanes + lane;
            self.running[i] = p.is_some();
            if let Some(p) = p {
                // After a failure the lane's caches are unknown: nothing reused next time.
                self.positions[i] = if result.is_ok() { p.len() } else { self.n_ctx as usize };
            }
        }
        result?;
        Ok(if reused == usize::MAX { 0 } else { reused })
    }

    /// Feeds each lane its token (`None`: the lane sits out), every member running in the
    /// lane the same token, all in one pass per context; fetches the next logits.
    pub fn step(&mut self, tokens: &[Option<LlamaToken>]) -> Result<()> {
        if tokens.len() != self.lanes {
            bail!("{} tokens for {} lanes", tokens.len(), self.lanes);
        }
        for (lane, t) in tokens.iter().enumerate() {
            if t.is_some() && !self.has_room_in(lane) {
                bail!("the context of lane {lane} is full ({} tokens)", self.n_ctx);
            }
        }
        let lanes = self.lanes;
        let running = &self.running;
        let result = Self::run_collect(
            &mut self.workers,
            |members, logits, mut buffer| {
                for (slot, &m) in members.iter().enumerate() {
                    for (lane, t) in tokens.iter().enumerate() {
                        buffer[slot * lanes + lane] = t.filter(|_| running[m * lanes + lane]);
                    }
                }
                (Job::Step { tokens: buffer, logits }, Vec::new())
            },
            |_, _, _| {},
        );
        for (lane, t) in tokens.iter().enumerate() {
            if t.is_some() {
                for m in 0..self.len() {
                    let i = m * self.lanes + lane;
                    if self.running[i] {
                        self.positions[i] += 1;
                    }
                }
            }
        }
        result
    }

    /// Each member's log-likelihood of `continuations[m]` after `prompts[m]` (natural log,
    /// summed over the continuation's tokens), from one forward pass over prompt and
    /// continuation per member, all members in parallel. Clears the session's state: prefill
    /// before decoding again.
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
                return Err(invalid(
                    "ctx_size",
                    format!(
                        "is {} tokens but prompt and response take {}; raise `ctx_size`",
                        self.n_ctx,
                        p.len() + c.len()
                    ),
                ));
            }
        }
        let mut scores = vec![0.0; self.len()];
        let result = Self::run_collect(
            &mut self.workers,
            |members, logits, tokens| {
                let texts = members
                    .iter()
                    .map(|&m| (prompts[m].clone(), continuations[m].clone()))
                    .collect();
                (Job::Score { texts, logits }, tokens)
            },
            |members, worker_scores, _| {
                for (&m, &s) in members.iter().zip(worker_scores) {
                    scores[m] = s;
                }
            },
        );
        // Nothing runs anywhere until the next prefill.
        self.running.iter_mut().for_each(|r| *r = false);
        result.map(|()| scores)
    }

    /// Member `m`'s latest next-token logits in `lane` (its model's whole vocabulary).
    pub fn logits_in(&self, m: usize, lane: usize) -> &[f32] {
        let (w, slot) = self.place[m];
        &self.workers[w].logits[slot * self.lanes + lane]
    }

    /// Sends one job to every worker, then waits for all of them; hands each worker's
    /// members, scores and reused-token counts to `collect`. `make` builds a worker's job
    /// from its members, its logits buffers and its token buffer, and gives back the token
    /// buffer when the job does not take it.
    fn run_collect(
        workers: &mut [Worker],
        make: impl Fn(
            &[usize],
            Vec<Vec<f32>>,
            Vec<Option<LlamaToken>>,
        ) -> (Job, Vec<Option<LlamaToken>>),
        mut collect: impl FnMut(&[usize], &[f64], &[usize]),
    ) -> Result<()> {
        let mut first_error = None;
        let mut sent = [false; 64];
        let mut sent_more = Vec::new();
        if workers.len() > sent.len() {
            sent_more = vec![false; workers.len()];
        }
        let sent: &mut [bool] =
            if sent_more.is_empty() { &mut sent[..workers.len()] } else { &mut sent_more };
        for (w, worker) in workers.iter_mut().enumerate() {
            let logits = std::mem::take(&mut worker.logits);
            let tokens = std::mem::take(&mut worker.tokens);
            let (job, kept) = make(&worker.members, logits, tokens);
            if !kept.is_empty() {
                worker.tokens = kept;
            }
            sent[w] = worker.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
            if !sent[w] {
                first_error.get_or_insert_with(|| "a policy worker has stopped".to_string());
            }
        }
        for (worker, &sent) in workers.iter_mut().zip(sent.iter()) {
            if !sent {
                continue;
            }
            match worker.replies.recv() {
                Ok(reply) => {
                    worker.logits = reply.logits;
                    if !reply.tokens.is_empty() {
                        worker.tokens = reply.tokens;
                    }
                    collect(&worker.members, &reply.scores, &reply.reused);
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
