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

use super::strategy::{SessionOptions, Strategy};
use super::worker::{self, Job, Lora, StepBuffers};
use crate::error::{invalid, tagged, Tag};
use anyhow::{anyhow, bail, Result};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The smallest context a policy may have.
pub const MIN_CTX: u32 = 8;

/// One session member: the model it runs on and its LoRA adapter with the scale.
pub(super) struct MemberSpec {
    pub model: Arc<LlamaModel>,
    pub lora: Option<Lora>,
    /// Why this member's logits are not linear in its final hidden state (output mixing is
    /// then wrong), or `None`.
    pub not_linear: Option<&'static str>,
    /// The RPC servers holding its model (none: local).
    pub servers: Vec<Arc<super::rpc::Server>>,
}

struct Worker {
    jobs: Option<Sender<Job>>,
    replies: Receiver<worker::Reply>,
    thread: Option<JoinHandle<()>>,
    /// Session member indices this worker decodes, in its slot order.
    members: Vec<usize>,
    /// The logits buffers while the worker is idle: index `slot · lanes + lane`.
    logits: Vec<Vec<f32>>,
    /// The step's tokens, drops and output-mix coefficients for the worker's members, same
    /// index; they travel with the step job.
    feed: StepBuffers,
}

/// Policies decoding side by side, in one or more lanes.
///
/// What a lane's prefill found cached and had to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefilled {
    /// The fewest prompt tokens a member found in its cache.
    pub reused: usize,
    /// Prompt tokens the members decoded, summed over the members.
    pub decoded: usize,
}

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
    /// Each member's context (group), and why a group's logits are not linear in the
    /// hidden state (output mixing does not apply there).
    group_of: Vec<usize>,
    not_linear: Vec<Option<&'static str>>,
    /// Each lane's output mix: one coefficient per member (0 for members not in it), or
    /// `None` when the lane takes each member's own logits.
    lane_mix: Vec<Option<Vec<f32>>>,
    /// The member whose logits buffer holds the lane's mixed logits after the last step.
    mixed_in: Vec<Option<usize>>,
    /// How many positions each lane's logits buffers hold (tokens fed in its last step).
    fed: Vec<usize>,
    /// Tokens each (member, lane) may be fed in one step.
    per_step: usize,
}

/// One lane to prefill (see [`Session::prefill_lane`]): a prompt per session member (`None`:
/// it sits the lane out), whether cached starts may be reused, and the output mix.
#[derive(Debug, Clone)]
pub struct LaneFill {
    pub lane: usize,
    pub prompts: Vec<Option<Vec<LlamaToken>>>,
    pub reuse: bool,
    pub mix: Option<Vec<f32>>,
}

/// Why a set of policies cannot share one output product in a session.
pub fn unmixed_reason(strategy: Strategy) -> Option<&'static str> {
    (strategy != Strategy::Mixed).then_some("the strategy is not mixed")
}

impl Session {
    /// Starts the session's workers. With `one_worker`, one worker drives every context
    /// with all the threads, the contexts taking turns (the byte path, whose policies rarely
    /// all need a pass at once): llama.cpp's threads then form one team, where a team per
    /// worker, each as large as the cores, would make them wait for each other (OpenMP
    /// stops spinning at its barriers when it manages more threads than there are cores,
    /// and a pass then takes two to three times as long).
    pub(super) fn start(
        models: Vec<MemberSpec>,
        options: SessionOptions,
        lanes: usize,
        one_worker: bool,
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
        let strategy = options.strategy;
        if strategy == Strategy::Auto {
            bail!("internal: a session needs a concrete strategy");
        }
        let groups = plan_groups(&models, strategy);
        let n_contexts = groups.len();
        let per_step =
            groups.iter().map(|g| worker::tokens_per_step(g.len() * lanes)).min().unwrap_or(1);
        let mut group_of = vec![0; models.len()];
        let mut not_linear = Vec::with_capacity(groups.len());
        for (g, group) in groups.iter().enumerate() {
            for &m in group {
                group_of[m] = g;
            }
            not_linear.push(group.iter().find_map(|&m| models[m].not_linear));
        }
        let n_workers = if one_worker { 1 } else { groups.len().min(threads) };
        let mut by_worker: Vec<Vec<Vec<usize>>> = vec![Vec::new(); n_workers];
        for (g, group) in groups.into_iter().enumerate() {
            by_worker[g % n_workers].push(group);
        }
        let mut workers = Vec::with_capacity(n_workers);
        let mut ready = Vec::with_capacity(n_workers);
        for (w, worker_groups) in by_worker.into_iter().enumerate() {
            let plan = worker::Plan {
                loras_of_group: worker_groups
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|&m| models[m].lora.as_ref().map(|(a, s)| (Arc::clone(a), *s)))
                            .collect()
                    })
                    .collect(),
                model_of_group: worker_groups
                    .iter()
                    .map(|g| Arc::clone(&models[g[0]].model))
                    .collect(),
                servers_of_group: worker_groups
                    .iter()
                    .map(|g| models[g[0]].servers.clone())
                    .collect(),
                group_sizes: worker_groups.iter().map(Vec::len).collect(),
                lanes,
                threads: threads / n_workers + usize::from(w < threads % n_workers),
                ctx_size: options.ctx_size,
                unified: strategy == Strategy::Mixed,
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
                feed: StepBuffers::new(slots),
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
            group_of,
            not_linear,
            lane_mix: vec![None; lanes],
            mixed_in: vec![None; lanes],
            fed: vec![1; lanes],
            per_step,
        };
        for r in ready {
            r.recv()
                .map_err(|_| anyhow!("a policy worker stopped while starting"))?
                .map_err(|e| tagged(Tag::Context, e))?;
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

    /// How many more tokens every member running in `lane` has room for.
    pub fn room_in(&self, lane: usize) -> usize {
        (0..self.len())
            .filter(|&m| self.running[m * self.lanes + lane])
            .map(|m| (self.n_ctx as usize).saturating_sub(self.positions[m * self.lanes + lane]))
            .min()
            .unwrap_or(0)
    }

    /// How many tokens a lane may be fed in one step (see [`Session::feed`]).
    pub fn tokens_per_step(&self) -> usize {
        self.per_step
    }

    /// Whether `members` can share one output product per step (see [`super::Strategy`]):
    /// `Err` says why not.
    pub fn can_mix(&self, members: &[usize]) -> Result<(), &'static str> {
        if let Some(why) = unmixed_reason(self.strategy) {
            return Err(why);
        }
        let Some(&first) = members.first() else { return Err("no policies") };
        if members.len() < 2 {
            return Err("one policy: nothing to mix");
        }
        let group = self.group_of[first];
        if members.iter().any(|&m| self.group_of[m] != group) {
            return Err("the policies are in different contexts (other model files, adapters or RPC servers)");
        }
        self.not_linear[group].map_or(Ok(()), Err)
    }

    /// The lane's combined logits when its last step mixed the policies' hidden states
    /// (`Σ_j c_j·logits_j` computed as `W·Σ_j c_j·h_j`); `None` when the lane holds each
    /// member's own logits (after a prefill, or without a mix).
    pub fn mixed_logits(&self, lane: usize) -> Option<&[f32]> {
        let last = self.fed.get(lane)?.saturating_sub(1);
        self.mixed_logits_at(lane, last)
    }

    /// The lane's mixed logits at position `i` of its last step (see [`Session::logits_at`]).
    pub fn mixed_logits_at(&self, lane: usize, i: usize) -> Option<&[f32]> {
        self.mixed_in.get(lane).copied().flatten().map(|m| self.logits_at(m, lane, i))
    }

    /// As [`Session::mixed_logits_at`], to change in place (the buffer is the lane's until
    /// its next step).
    pub fn mixed_logits_mut_at(&mut self, lane: usize, i: usize) -> Option<&mut [f32]> {
        let m = self.mixed_in.get(lane).copied().flatten()?;
        let (w, slot) = self.place[m];
        let buffer = &mut self.workers[w].logits[slot * self.lanes + lane];
        let n = buffer.len() / self.fed[lane].max(1);
        buffer.get_mut(i * n..(i + 1) * n)
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
    ///
    /// `mix`, one coefficient per member (0 for those not in the lane), makes the lane's
    /// later steps mix (see [`Session::can_mix`], which must allow the lane's members).
    pub fn prefill_lane(
        &mut self,
        lane: usize,
        prompts: &[Option<Vec<LlamaToken>>],
        reuse: bool,
        mix: Option<Vec<f32>>,
    ) -> Result<usize> {
        let fill = LaneFill { lane, prompts: prompts.to_vec(), reuse, mix };
        Ok(self.prefill_lanes(vec![fill])?[0].reused)
    }

    /// [`Session::prefill_lane`] for several lanes at once: their prompts share the decode
    /// batches (fewer passes over the weights than one lane after another). Returns, per
    /// lane, the fewest tokens a member reused and the tokens the members decoded.
    pub fn prefill_lanes(&mut self, fills: Vec<LaneFill>) -> Result<Vec<Prefilled>> {
        for f in &fills {
            self.check_fill(f)?;
        }
        for f in &fills {
            self.lane_mix[f.lane] = f.mix.clone();
            self.mixed_in[f.lane] = None;
            self.fed[f.lane] = 1;
        }
        let mut reused = vec![usize::MAX; fills.len()];
        let mut decoded = vec![0usize; fills.len()];
        let result = Self::run_collect(
            &mut self.workers,
            |members, logits, feed| {
                let lanes = fills
                    .iter()
                    .map(|f| worker::LanePrompts {
                        lane: f.lane,
                        prompts: members.iter().map(|&m| f.prompts[m].clone()).collect(),
                        reuse: f.reuse,
                    })
                    .collect();
                (Job::Prefill { lanes, logits }, feed)
            },
            |members, _, kept| {
                // `kept` holds, lane after lane, each of the worker's members.
                for (i, lane_kept) in kept.chunks(members.len().max(1)).enumerate() {
                    let fewest = lane_kept.iter().copied().min().unwrap_or(usize::MAX);
                    reused[i] = reused[i].min(fewest);
                    for (&m, &k) in members.iter().zip(lane_kept) {
                        if let Some(p) = &fills[i].prompts[m] {
                            decoded[i] += p.len().saturating_sub(k);
                        }
                    }
                }
            },
        );
        for f in &fills {
            for (m, p) in f.prompts.iter().enumerate() {
                let i = m * self.lanes + f.lane;
                self.running[i] = p.is_some();
                if let Some(p) = p {
                    // After a failure the lane's caches are unknown: nothing reused next time.
                    self.positions[i] = if result.is_ok() { p.len() } else { self.n_ctx as usize };
                }
            }
        }
        result?;
        Ok(reused
            .into_iter()
            .zip(decoded)
            .map(|(r, decoded)| Prefilled { reused: if r == usize::MAX { 0 } else { r }, decoded })
            .collect())
    }

    fn check_fill(&self, f: &LaneFill) -> Result<()> {
        let (lane, prompts) = (f.lane, &f.prompts);
        if lane >= self.lanes {
            bail!("lane {lane} of {}", self.lanes);
        }
        if prompts.len() != self.len() {
            bail!("{} prompts for {} policies", prompts.len(), self.len());
        }
        if prompts.iter().all(Option::is_none) {
            bail!("a lane needs at least one policy");
        }
        if let Some(coeffs) = &f.mix {
            let members: Vec<usize> = (0..self.len()).filter(|&m| prompts[m].is_some()).collect();
            if coeffs.len() != self.len() {
                bail!("{} mix coefficients for {} policies", coeffs.len(), self.len());
            }
            self.can_mix(&members).map_err(|why| anyhow!("cannot mix this lane: {why}"))?;
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
        Ok(())
    }

    /// Feeds each lane its token (`None`: the lane sits out), every member running in the
    /// lane the same token, all in one pass per context; fetches the next logits.
    pub fn step(&mut self, tokens: &[Option<LlamaToken>]) -> Result<()> {
        let feeds: Vec<Vec<LlamaToken>> =
            tokens.iter().map(|t| t.iter().copied().collect()).collect();
        self.feed(&feeds, &vec![0; tokens.len()])
    }

    /// Feeds each lane its tokens (none: the lane sits out), every member running in the
    /// lane the same ones, all in one pass per context, after dropping the last `drop[lane]`
    /// tokens of the lane's caches (draft tokens that were not accepted: the caches are then
    /// as if they had never been fed). Fetches the logits after every token fed: position
    /// `i` of [`Session::logits_at`] predicts the token after `tokens[lane][i]`. A lane may
    /// be fed up to [`Session::tokens_per_step`] tokens.
    pub fn feed(&mut self, tokens: &[Vec<LlamaToken>], drop: &[usize]) -> Result<()> {
        if tokens.len() != self.lanes || drop.len() != self.lanes {
            bail!("{} token lists and {} drops for {} lanes", tokens.len(), drop.len(), self.lanes);
        }
        for (lane, t) in tokens.iter().enumerate() {
            if t.len() > self.per_step {
                bail!("{} tokens for lane {lane}; a step takes at most {}", t.len(), self.per_step);
            }
            let fed = (0..self.len())
                .filter(|&m| self.running[m * self.lanes + lane])
                .map(|m| self.positions[m * self.lanes + lane])
                .min()
                .unwrap_or(0);
            if drop[lane] > fed {
                bail!("cannot drop {} tokens of lane {lane}, which holds {fed}", drop[lane]);
            }
            if !t.is_empty() && self.room_in(lane) + drop[lane] < t.len() {
                return Err(tagged(
                    Tag::Context,
                    format!("the context of lane {lane} is full ({} tokens)", self.n_ctx),
                ));
            }
        }
        let lanes = self.lanes;
        let (running, lane_mix) = (&self.running, &self.lane_mix);
        let result = Self::run_collect(
            &mut self.workers,
            |members, logits, mut feed| {
                for (slot, &m) in members.iter().enumerate() {
                    for (lane, t) in tokens.iter().enumerate() {
                        let i = slot * lanes + lane;
                        let runs = running[m * lanes + lane];
                        feed.tokens[i].clear();
                        if runs {
                            feed.tokens[i].extend_from_slice(t);
                        }
                        feed.drop[i] = if runs { drop[lane] } else { 0 };
                        feed.mix[i] = lane_mix[lane].as_ref().map_or(f32::NAN, |c| c[m]);
                    }
                }
                (Job::Step { feed, logits }, StepBuffers::default())
            },
            |_, _, _| {},
        );
        for (lane, t) in tokens.iter().enumerate() {
            for m in 0..self.len() {
                let i = m * self.lanes + lane;
                if self.running[i] {
                    self.positions[i] = self.positions[i] + t.len() - drop[lane];
                }
            }
            if t.is_empty() {
                continue;
            }
            self.fed[lane] = t.len();
            // The worker writes a mixed lane's logits to its first running member.
            self.mixed_in[lane] = match (&self.lane_mix[lane], &result) {
                (Some(_), Ok(())) => (0..self.len()).find(|&m| self.running[m * self.lanes + lane]),
                _ => None,
            };
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
            |members, logits, feed| {
                let texts = members
                    .iter()
                    .map(|&m| (prompts[m].clone(), continuations[m].clone()))
                    .collect();
                (Job::Score { texts, logits }, feed)
            },
            |members, worker_scores, _| {
                for (&m, &s) in members.iter().zip(worker_scores) {
                    scores[m] = s;
                }
            },
        );
        // Nothing runs anywhere until the next prefill.
        self.running.iter_mut().for_each(|r| *r = false);
        self.mixed_in.iter_mut().for_each(|m| *m = None);
        result.map(|()| scores)
    }

    /// Member `m`'s latest next-token logits in `lane` (its model's whole vocabulary): after
    /// the last token fed.
    pub fn logits_in(&self, m: usize, lane: usize) -> &[f32] {
        self.logits_at(m, lane, self.fed[lane].saturating_sub(1))
    }

    /// Member `m`'s logits in `lane` after the `i`-th token its last step fed (0 after a
    /// prefill); empty beyond them.
    pub fn logits_at(&self, m: usize, lane: usize, i: usize) -> &[f32] {
        let (w, slot) = self.place[m];
        let buffer = &self.workers[w].logits[slot * self.lanes + lane];
        let n = buffer.len() / self.fed[lane].max(1);
        buffer.get(i * n..(i + 1) * n).unwrap_or_default()
    }

    /// Sends one job to every worker, then waits for all of them; hands each worker's
    /// members, scores and reused-token counts to `collect`. `make` builds a worker's job
    /// from its members, its logits buffers and its token and mix buffers, and gives back
    /// the token and mix buffers when the job does not take them.
    fn run_collect(
        workers: &mut [Worker],
        make: impl Fn(&[usize], Vec<Vec<f32>>, StepBuffers) -> (Job, StepBuffers),
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
            let feed = std::mem::take(&mut worker.feed);
            let (job, kept) = make(&worker.members, logits, feed);
            if !kept.is_empty() {
                worker.feed = kept;
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
                    if !reply.feed.is_empty() {
                        worker.feed = reply.feed;
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

/// Groups of member indices, one llama.cpp context each. Batched groups join the members of
/// one model, whatever their LoRA adapters (a context scales each adapter per sequence).
fn plan_groups(models: &[MemberSpec], strategy: Strategy) -> Vec<Vec<usize>> {
    match strategy {
        Strategy::Batched | Strategy::Mixed => {
            let mut groups: Vec<Vec<usize>> = Vec::new();
            for m in 0..models.len() {
                match groups.iter_mut().find(|g| Arc::ptr_eq(&models[g[0]].model, &models[m].model))
                {
                    Some(g) => g.push(m),
                    None => groups.push(vec![m]),
                }
            }
            groups
        }
        _ => (0..models.len()).map(|m| vec![m]).collect(),
    }
}
