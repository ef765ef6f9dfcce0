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
use anyhow::{anyhow, bail, Result};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
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
}

/// Policies decoding side by side, in one or more lanes.
pub struct Session {
    workers: Vec<Worker>,
    /// For each member: (worker, slot within the worker).
    place: Vec<(usize, usize)>,
    lanes: usize,
    /// Tokens in each (member, lane)'s cache: index `member · lanes + lane`.
    positions: Vec<usize>,
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
        if options.ctx_size < 8 {
            bail!("--ctx-size must be at least 8 tokens, got {}", options.ctx_size);
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
            let logits = vec![Vec::new(); members.len() * lanes];
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
        let session = Session {
            workers,
            place,
            lanes,
            positions: vec![0; models.len() * lanes],
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

    /// Number of lanes (independent token streams).
    pub fn lanes(&self) -> usize {
        self.lanes
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

    /// The context length of each policy in each lane.
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// True while every policy of lane 0 has room for one more token.
    pub fn has_room(&self) -> bool {
        self.has_room_in(0)
    }

    /// True while every policy of `lane` has room for one more token.
    pub fn has_room_in(&self, lane: usize) -> bool {
        (0..self.len()).all(|m| self.positions[m * self.lanes + lane] < self.n_ctx as usize)
    }

    /// Decodes each member's prompt in lane 0 (see [`Session::prefill_lane`]).
    pub fn prefill(&mut self, prompts: &[Vec<LlamaToken>]) -> Result<()> {
        self.prefill_lane(0, prompts)
    }

    /// Decodes each member's prompt in `lane`, all members in parallel, dropping whatever
    /// the lane held; afterwards [`Session::logits_in`] holds each member's next-token
    /// logits for the lane.
    pub fn prefill_lane(&mut self, lane: usize, prompts: &[Vec<LlamaToken>]) -> Result<()> {
        self.check_prompts(lane, prompts)?;
        self.load_lane(lane, prompts, false).map(|_| ())
    }

    fn check_prompts(&self, lane: usize, prompts: &[Vec<LlamaToken>]) -> Result<()> {
        if lane >= self.lanes {
            bail!("lane {lane} of {}", self.lanes);
        }
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
        Ok(())
    }

    /// Like [`Session::prefill_lane`], but keeps the longest start of each prompt already
    /// cached, in this lane (a conversation's next turn) or in another (a prefix or system
    /// prompt that prompts share, copied), and decodes only the rest. Returns the fewest
    /// tokens any member reused. Logits can differ from a fresh prefill by llama.cpp's
    /// batch-split noise.
    pub fn continue_lane(&mut self, lane: usize, prompts: &[Vec<LlamaToken>]) -> Result<usize> {
        self.check_prompts(lane, prompts)?;
        self.load_lane(lane, prompts, true)
    }

    fn load_lane(
        &mut self,
        lane: usize,
        prompts: &[Vec<LlamaToken>],
        reuse: bool,
    ) -> Result<usize> {
        let mut reused = usize::MAX;
        self.run_collect(
            |members, logits| Job::Prefill {
                lane,
                prompts: members.iter().map(|&m| prompts[m].clone()).collect(),
                reuse,
                logits,
            },
            |_, _, kept| reused = reused.min(kept.iter().copied().min().unwrap_or(0)),
        )?;
        for (m, p) in prompts.iter().enumerate() {
            self.positions[m * self.lanes + lane] = p.len();
        }
        Ok(if reused == usize::MAX { 0 } else { reused })
    }

    /// Feeds `token` to every member of lane 0 and fetches their next logits.
    pub fn append(&mut self, token: LlamaToken) -> Result<()> {
        let mut tokens = vec![None; self.lanes];
        tokens[0] = Some(token);
        self.step(&tokens)
    }

    /// Feeds each lane its token (`None`: the lane sits out), every member of a lane the
    /// same token, all in one pass per context; fetches the next logits.
    pub fn step(&mut self, tokens: &[Option<LlamaToken>]) -> Result<()> {
        if tokens.len() != self.lanes {
            bail!("{} tokens for {} lanes", tokens.len(), self.lanes);
        }
        for (lane, t) in tokens.iter().enumerate() {
            if t.is_some() && !self.has_room_in(lane) {
                bail!("the context of lane {lane} is full ({} tokens)", self.n_ctx);
            }
        }
        self.run(|_, logits| Job::Step { tokens: tokens.to_vec(), logits })?;
        for (lane, t) in tokens.iter().enumerate() {
            if t.is_some() {
                for m in 0..self.len() {
                    self.positions[m * self.lanes + lane] += 1;
                }
            }
        }
        Ok(())
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
            |members, worker_scores, _| {
                for (&m, &s) in members.iter().zip(worker_scores) {
                    scores[m] = s;
                }
            },
        )?;
        // No room anywhere until the next prefill.
        self.positions.iter_mut().for_each(|p| *p = self.n_ctx as usize);
        Ok(scores)
    }

    /// Member `m`'s latest next-token logits in lane 0 (its model's whole vocabulary).
    pub fn logits(&self, m: usize) -> &[f32] {
        self.logits_in(m, 0)
    }

    /// Member `m`'s latest next-token logits in `lane`.
    pub fn logits_in(&self, m: usize, lane: usize) -> &[f32] {
        let (w, slot) = self.place[m];
        &self.workers[w].logits[slot * self.lanes + lane]
    }

    /// Sends one job to every worker, then waits for all of them.
    fn run(&mut self, make: impl Fn(&[usize], Vec<Vec<f32>>) -> Job) -> Result<()> {
        self.run_collect(make, |_, _, _| {})
    }

    /// As [`Session::run`], handing each worker's members, scores and reused-token counts to
    /// `collect`.
    fn run_collect(
        &mut self,
        make: impl Fn(&[usize], Vec<Vec<f32>>) -> Job,
        mut collect: impl FnMut(&[usize], &[f64], &[usize]),
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
