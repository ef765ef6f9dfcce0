//! The decoding loop — the one every front end drives.
//!
//! A [`Decoder`] owns a session of policies with one or more *lanes* (independent token
//! streams) and a queue of requests. Each [`Decoder::step`] fills free lanes with waiting
//! requests (decoding their prompts), then, in every active lane, combines the policies'
//! logits into the MOD distribution, samples a token and hands it to the caller as an
//! [`Event`]; finally it feeds every lane's token to that lane's policies in one pass per
//! context. A request ends at an end-of-generation token, a stop string, its token limit,
//! a full context, or when the caller stops it.
//!
//! With speculation a lane also feeds a draft after its token and takes several tokens from
//! one pass (see the lane module). Each pass is timed and filed under its width, the most
//! tokens it fed one lane, in a table of what passes cost on this session: the lanes draft
//! only where the measured costs and their acceptance rates say it pays (see the draft
//! module). The table lives as long as the session.
//!
//! `generate` (one prompt), a conversation, a JSONL batch and the HTTP server are thin
//! drivers: they build [`Request`]s and react to events.

pub mod bytes;
mod lane;
mod stream;

use super::bytes::Unit;
use super::divergence::Divergence;
use super::draft::PassCosts;
use super::engine::{Drafter, Engine, Grammar, LaneFill, Session, SessionOptions};
use super::logprobs::{Alternative, TokenLogprob};
use super::recipe::Recipe;
use super::settings::{Settings, MAX_DRAFT};
use anyhow::{anyhow, Result};
use lane::{Advanced, Lane, Pass};
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::time::Instant;
use stream::Stream;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    Eog,
    /// A stop string appeared.
    Stop,
    /// `max_tokens` was reached or the context is full.
    Length,
    /// The caller stopped it (Ctrl-C in `mood chat`, a client that went away).
    Cancelled,
}

impl FinishReason {
    /// The name JSON output uses: `eog`, `stop`, `length`, `cancelled`.
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Eog => "eog",
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Wall-clock times of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timings {
    pub prompt_ms: f64,
    /// Prompt tokens the policies decoded before the first step, summed over the policies:
    /// what their caches did not already hold.
    pub prompt_tokens_decoded: usize,
    pub decode_ms: f64,
    /// Generated tokens per second of decode time.
    pub tokens_per_second: f64,
    /// Of the decode time: the policies' forward passes (all in parallel), the combiner, and
    /// the sampler.
    pub forward_ms: f64,
    pub combine_ms: f64,
    pub sample_ms: f64,
    /// The strategy the session used, and its llama.cpp contexts.
    pub strategy: &'static str,
    pub contexts: usize,
    /// The policies this generation ran (the reference only where the weights need it).
    pub policies: usize,
    /// Whether the output layer ran once per step on the weighted sum of the policies' hidden
    /// states (`mixed` strategy) rather than once per policy; and if not, why not.
    pub mixed: bool,
    pub unmixed_because: Option<&'static str>,
    /// Speculation: draft tokens proposed and accepted, and the forward passes decoding took
    /// (tokens per pass above 1 is what speculation saved).
    pub drafted: usize,
    pub accepted: usize,
    pub passes: usize,
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    /// Ids of the generated tokens (an end-of-generation token is not included).
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    /// (policy name, prompt tokens including its prefix), for every policy of the recipe.
    pub prompt_tokens: Vec<(String, usize)>,
    /// Prompt tokens found already cached (the fewest over the policies that ran).
    pub cached_tokens: usize,
    /// The seed the sampler drew with (given, or drawn fresh).
    pub seed: u64,
    /// Each generated token's log-probabilities, when the settings ask for them.
    pub logprobs: Vec<TokenLogprob>,
    /// The policies this generation ran, in the order of [`TokenLogprob::policies`].
    pub policies: Vec<String>,
    pub timings: Timings,
    /// For MOD over bytes (then `tokens` are the bytes): what it took.
    pub bytes: Option<bytes::ByteFigures>,
}

impl Generation {
    /// The JSON object of a generation (what `mood generate --json` prints; batch records
    /// add to it).
    pub fn json(&self, recipe: &Recipe) -> Value {
        let prompt_tokens: Map<String, Value> =
            self.prompt_tokens.iter().map(|(n, c)| (n.clone(), json!(c))).collect();
        let mut v = json!({
            "text": self.text,
            "tokens": self.tokens,
            "finish_reason": self.finish_reason,
            "weights": recipe.weights,
            "experts": recipe.experts.iter().map(|e| &e.name).collect::<Vec<_>>(),
            "divergence": recipe.divergence.name(),
            "seed": self.seed,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": self.tokens.len(),
            "timings": self.timings,
        });
        if !self.logprobs.is_empty() {
            v["logprobs"] = self.logprobs.iter().map(|t| self.logprob_json(t)).collect();
        }
        if let Some(b) = &self.bytes {
            v["unit"] = json!("bytes");
            let per_policy = |list: &[(String, f64)]| -> Map<String, Value> {
                list.iter().map(|(n, x)| (n.clone(), json!(x))).collect()
            };
            v["bytes"] = json!({
                "bytes_per_second": b.bytes_per_second,
                "passes_per_byte": per_policy(&b.passes_per_byte),
                "runs_per_byte": per_policy(&b.runs_per_byte),
                "most_dropped": b.most_dropped,
            });
        }
        v
    }

    /// One token's log-probabilities as `generate --json` and batch records write them.
    pub fn logprob_json(&self, t: &TokenLogprob) -> Value {
        let alt = |a: &Alternative| json!({"token": a.token, "text": String::from_utf8_lossy(&a.bytes), "logprob": a.logprob});
        let policies: Map<String, Value> =
            self.policies.iter().zip(&t.policies).map(|(n, l)| (n.clone(), json!(l))).collect();
        let mut v = alt(&t.chosen);
        v["top_logprobs"] = t.top.iter().map(alt).collect();
        v["policies"] = Value::Object(policies);
        v
    }
}

/// One generation to decode.
#[derive(Debug)]
pub struct Request {
    /// The policies' weights and the divergence (the policies are the engine's).
    pub recipe: Recipe,
    pub settings: Settings,
    /// Every policy's prompt, in [`Engine::policies`] order (see [`Engine::prompt_tokens`]).
    pub prompts: Vec<Vec<LlamaToken>>,
    /// Keep what the caches already hold of the prompt (a conversation's history, a prefix
    /// another lane holds). Otherwise the prompt is decoded afresh, so that the output is a
    /// function of the request alone.
    pub reuse_cache: bool,
    /// `settings.constraint` compiled already, by a front end that checks requests before
    /// submitting them (the server answers a bad grammar with a 400 before it streams);
    /// `None`: compiled when the request is submitted. Either way it is compiled once.
    pub grammar: Option<Grammar>,
}

impl Request {
    /// A request whose constraint (if any) is compiled when submitted.
    pub fn new(
        recipe: Recipe,
        settings: Settings,
        prompts: Vec<Vec<LlamaToken>>,
        reuse_cache: bool,
    ) -> Self {
        Self { recipe, settings, prompts, reuse_cache, grammar: None }
    }
}

impl Clone for Request {
    /// The copy compiles its constraint again when submitted (a compiled grammar holds the
    /// state of one generation).
    fn clone(&self) -> Self {
        Self::new(
            self.recipe.clone(),
            self.settings.clone(),
            self.prompts.clone(),
            self.reuse_cache,
        )
    }
}

/// What happened to a request during a step.
#[derive(Debug)]
pub enum Event<'a> {
    /// A token was generated (not an end-of-generation token); `text` is what became safe
    /// to print (often empty: a character or a possible stop string is incomplete);
    /// `logprob` its log-probabilities when the request asks for them.
    Token { token: u32, text: &'a str, logprob: Option<&'a TokenLogprob> },
    /// Text held back until the end (an incomplete character, the start of a stop string
    /// that did not follow), released as the generation ends.
    Text(&'a str),
    /// The generation ended; the last text event came before.
    Done(Box<Generation>),
    /// The engine failed on this request (other requests go on).
    Failed(anyhow::Error),
}

/// What the caller wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// End this request now (finish reason `cancelled`).
    Stop,
}

/// Receives each request's events, with the tag it was submitted under. An error ends the
/// step and is returned from it.
pub type Sink<'s> = dyn FnMut(u64, Event<'_>) -> Result<Flow> + 's;

/// The decoding loop for up to `lanes` requests at once (see the module documentation).
pub struct Decoder<'e> {
    engine: &'e Engine,
    options: SessionOptions,
    lanes: Vec<Option<Lane<'e>>>,
    /// Each lane's combined-scores buffer, reused by the requests it serves.
    combined: Vec<Vec<f32>>,
    queue: VecDeque<(u64, Stream<'e>)>,
    running: Option<Running<'e>>,
    /// Scratch: each lane's tokens for the next pass (its last token, then any draft), and
    /// how many draft tokens of the last pass to drop from its caches first.
    feeds: Vec<Vec<LlamaToken>>,
    drops: Vec<usize>,
}

/// The session and the engine policies it holds, in order.
struct Running<'e> {
    members: Vec<usize>,
    session: Session,
    /// The draft model's context, when the engine has a draft model.
    drafter: Option<Drafter<'e>>,
    /// What this session's passes cost by width (measured in [`Decoder::step`]) and the
    /// draft model per proposed token: what speculation weighs its drafts against.
    costs: PassCosts,
}

impl<'e> Decoder<'e> {
    /// A decoder with `lanes` lanes (at least 1). Its session opens with the first request.
    pub fn new(engine: &'e Engine, lanes: usize, options: SessionOptions) -> Self {
        let lanes = lanes.max(1);
        let options = SessionOptions { ctx_size: engine.context_size(options.ctx_size), ..options };
        Self {
            engine,
            options,
            lanes: (0..lanes).map(|_| None).collect(),
            combined: vec![Vec::new(); lanes],
            queue: VecDeque::new(),
            running: None,
            feeds: vec![Vec::new(); lanes],
            drops: vec![0; lanes],
        }
    }

    /// Checks a request and queues it under `tag`. A bad request is an error here and
    /// never reaches the engine.
    pub fn submit(&mut self, tag: u64, request: Request) -> Result<()> {
        let stream = Stream::new(self.engine, request, self.options.ctx_size)?;
        self.queue.push_back((tag, stream));
        Ok(())
    }

    /// Opens the session now with (at least) the engine policies `members`, instead of with
    /// the first request: a server finds out at start-up whether its contexts fit. Policies
    /// whose RPC server was lost are left out.
    pub fn prepare(&mut self, members: &[usize]) -> Result<()> {
        let mut all = self.running.take().map(|r| r.members).unwrap_or_default();
        all.extend_from_slice(members);
        all.sort_unstable();
        all.dedup();
        self.running = Some(self.open(all)?);
        Ok(())
    }

    /// Requests decoding now.
    pub fn active(&self) -> usize {
        self.lanes.iter().flatten().count()
    }

    /// Requests waiting for a lane.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued or decoding.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.active() == 0
    }

    /// Steps until every request has ended.
    pub fn run(&mut self, sink: &mut Sink<'_>) -> Result<()> {
        while self.step(sink)? {}
        Ok(())
    }

    /// One step of every lane (see the module documentation). Returns whether requests
    /// remain. Only an error of the sink is returned; engine failures reach the requests
    /// they hit as [`Event::Failed`].
    pub fn step(&mut self, sink: &mut Sink<'_>) -> Result<bool> {
        self.fill_lanes(sink)?;
        let n_vocab = self.engine.n_common_vocab();
        let Some(running) = self.running.as_mut() else { return Ok(!self.is_idle()) };
        let (strategy, contexts) =
            (running.session.strategy().name(), running.session.n_contexts());
        for lane in 0..self.lanes.len() {
            self.feeds[lane].clear();
            self.drops[lane] = 0;
            let Some(active) = &mut self.lanes[lane] else { continue };
            let tag = active.tag;
            let mut pass = Pass {
                session: &mut running.session,
                drafter: running.drafter.as_mut(),
                costs: &mut running.costs,
                lane,
                n_vocab,
            };
            let (feed, drop) = (&mut self.feeds[lane], &mut self.drops[lane]);
            let finish =
                match active.advance(&mut pass, &mut self.combined[lane], sink, feed, drop)? {
                    Advanced::Fed => continue,
                    Advanced::Failed(e) => {
                        self.lanes[lane] = None;
                        sink(tag, Event::Failed(e))?;
                        continue;
                    }
                    Advanced::Finished(reason) => reason,
                };
            if let Some(mut ended) = self.lanes[lane].take() {
                let rest = ended.stream.end(finish);
                if !rest.is_empty() {
                    sink(tag, Event::Text(rest))?;
                }
                sink(tag, Event::Done(Box::new(ended.stream.finish(strategy, contexts))))?;
            }
        }
        // The pass's width: the most tokens fed to one lane (1 + its draft).
        let width = self.feeds.iter().map(Vec::len).max().unwrap_or(0);
        if width > 0 {
            let started = Instant::now();
            let result = running.session.feed(&self.feeds, &self.drops);
            let elapsed = started.elapsed().as_secs_f64();
            if result.is_ok() {
                running.costs.record_pass(width, elapsed);
            }
            if let Err(e) = result {
                let lost = self.engine.lost();
                if lost.is_empty() {
                    // The caches are in an unknown state: fail what was decoding, start afresh.
                    self.running = None;
                }
                // With a lost RPC server every other context still decoded its step: only the
                // requests that need the lost policies end.
                for slot in self.lanes.iter_mut() {
                    let hit = |a: &Lane<'_>| {
                        lost.is_empty() || a.stream.members.iter().any(|m| lost.contains(m))
                    };
                    if let Some(a) = slot.take_if(|a| hit(a)) {
                        let error = self.engine.unavailable_for(&a.stream.members);
                        sink(a.tag, Event::Failed(error.unwrap_or_else(|| anyhow!("{e:#}"))))?;
                    }
                }
            }
            for a in self.lanes.iter_mut().flatten() {
                a.stream.clock.forward += elapsed;
                a.stream.clock.passes += 1;
            }
        }
        Ok(!self.is_idle())
    }

    /// Moves waiting requests into free lanes, in order, decoding their prompts. A request
    /// that needs a policy the session lacks waits until every lane is free; the session is
    /// then reopened with every policy the waiting requests need.
    fn fill_lanes(&mut self, sink: &mut Sink<'_>) -> Result<()> {
        // The lanes to fill now, their prompts decoded together below.
        let mut fills: Vec<LaneFill> = Vec::new();
        let mut starting: Vec<(u64, Stream<'e>)> = Vec::new();
        for lane in 0..self.lanes.len() {
            if self.lanes[lane].is_some() {
                continue;
            }
            // Requests that need a policy whose RPC server was lost fail at once.
            while let Some(error) =
                self.queue.front().and_then(|(_, s)| self.engine.unavailable_for(&s.members))
            {
                let (tag, _) = self.queue.pop_front().expect("a queued request");
                sink(tag, Event::Failed(error))?;
            }
            let Some((_, next)) = self.queue.front() else { break };
            let fits = self
                .running
                .as_ref()
                .is_some_and(|r| next.members.iter().all(|m| r.members.contains(m)));
            if !fits {
                if self.active() > 0 || !fills.is_empty() {
                    break;
                }
                if let Err(e) = self.reopen() {
                    let (tag, _) = self.queue.pop_front().expect("a queued request");
                    sink(tag, Event::Failed(e))?;
                    continue;
                }
            }
            let (tag, mut stream) = self.queue.pop_front().expect("a queued request");
            let Some(running) = &self.running else { continue };
            let prompts: Vec<Option<Vec<LlamaToken>>> = running
                .members
                .iter()
                .map(|m| stream.members.contains(m).then(|| stream.prompts[*m].clone()))
                .collect();
            // One output product per lane where the request and the session allow it.
            stream.unmixed_because = stream.mix_reason.or_else(|| {
                running.session.can_mix(&slots_of(&running.members, &stream.members)).err()
            });
            let mix = stream.unmixed_because.is_none().then(|| {
                let mut coeffs = vec![0f32; running.members.len()];
                for (&m, c) in stream.members.iter().zip(stream.coefficients()) {
                    if let Some(k) = running.members.iter().position(|x| *x == m) {
                        coeffs[k] = c as f32;
                    }
                }
                coeffs
            });
            fills.push(LaneFill { lane, prompts, reuse: stream.reuse_cache, mix });
            starting.push((tag, stream));
        }
        let Some(running) = &mut self.running else { return Ok(()) };
        if fills.is_empty() {
            return Ok(());
        }
        let lanes: Vec<usize> = fills.iter().map(|f| f.lane).collect();
        let started = Instant::now();
        let prefilled = match running.session.prefill_lanes(fills) {
            Ok(cached) => cached,
            Err(e) => {
                let lost = self.engine.lost();
                // With a lost RPC server, the requests that do not need it wait their turn
                // again (nothing of theirs was reported yet); the others fail.
                for (tag, stream) in starting.into_iter().rev() {
                    if !lost.is_empty() && !stream.members.iter().any(|m| lost.contains(m)) {
                        self.queue.push_front((tag, stream));
                        continue;
                    }
                    let error = self.engine.unavailable_for(&stream.members);
                    sink(tag, Event::Failed(error.unwrap_or_else(|| anyhow!("{e:#}"))))?;
                }
                return Ok(());
            }
        };
        let prompt_ms = started.elapsed().as_secs_f64() * 1e3;
        for ((lane, (tag, mut stream)), prefilled) in lanes.into_iter().zip(starting).zip(prefilled)
        {
            stream.cached = prefilled.reused;
            stream.decoded_at_start = prefilled.decoded;
            stream.clock.prompt_ms = prompt_ms;
            stream.clock.started = Instant::now();
            let slots = slots_of(&running.members, &stream.members);
            let n = self.engine.n_common_vocab();
            self.combined[lane].resize(n, 0.0);
            self.lanes[lane] = Some(Lane { tag, stream, slots });
        }
        Ok(())
    }

    /// A session of `members` but those whose RPC server was lost, and the draft model's
    /// context if the engine has one.
    fn open(&self, mut members: Vec<usize>) -> Result<Running<'e>> {
        let lost = self.engine.lost();
        members.retain(|m| !lost.contains(m));
        let session = self.engine.open_session(&members, self.lanes.len(), self.options)?;
        let (lanes, o) = (self.lanes.len(), self.options);
        let drafter = self.engine.open_drafter(lanes, o.ctx_size)?;
        Ok(Running { members, session, drafter, costs: PassCosts::new(MAX_DRAFT + 1) })
    }

    /// Opens a session with the policies the old one held and every waiting request needs.
    fn reopen(&mut self) -> Result<()> {
        let mut members = self.running.take().map(|r| r.members).unwrap_or_default();
        members.extend(self.queue.iter().flat_map(|(_, s)| s.members.iter().copied()));
        members.sort_unstable();
        members.dedup();
        self.running = Some(self.open(members)?);
        Ok(())
    }
}

/// Decodes one prompt with the recipe's policies combined by MOD, on a session of its own.
/// `on_text` receives the text as it becomes safe to print.
pub fn generate(
    engine: &Engine,
    recipe: &Recipe,
    prompt: &str,
    settings: &Settings,
    options: SessionOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    generate_tokens(engine, recipe, engine.prompt_tokens(prompt)?, settings, options, on_text)
}

/// [`generate`] with each policy's prompt already tokenized (e.g. a chat turn rendered with
/// each policy's template).
pub fn generate_tokens(
    engine: &Engine,
    recipe: &Recipe,
    prompts: Vec<Vec<LlamaToken>>,
    settings: &Settings,
    options: SessionOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let request = Request::new(recipe.clone(), settings.clone(), prompts, false);
    let mut decoder = Decoder::new(engine, 1, options);
    decoder.submit(0, request)?;
    let mut outcome = None;
    decoder.run(&mut |_, event| {
        match event {
            Event::Token { text, .. } | Event::Text(text) => on_text(text),
            Event::Done(g) => outcome = Some(Ok(*g)),
            Event::Failed(e) => outcome = Some(Err(e)),
        }
        Ok(Flow::Continue)
    })?;
    outcome.unwrap_or_else(|| Err(anyhow!("the generation produced no result")))
}

/// Why a request needs each policy's own logits, so that the policies cannot share one output
/// product: `None` when the weighted sum of logits is all it needs.
fn mix_reason(recipe: &Recipe, settings: &Settings) -> Option<&'static str> {
    if recipe.divergence != Divergence::ReverseKl {
        return Some("the divergence is not reverse-kl (it needs each policy's distribution)");
    }
    if settings.sampling.temperature != 0.0 && settings.plausibility > 0.0 {
        return Some("sampling with a plausibility set needs each policy's distribution");
    }
    if settings.logprobs.is_some() {
        return Some("log-probabilities report each policy's own");
    }
    None
}

/// Where each of `members` sits among the session's members.
fn slots_of(session: &[usize], members: &[usize]) -> Vec<usize> {
    members.iter().map(|m| session.iter().position(|x| x == m).unwrap_or(0)).collect()
}

/// Decodes `requests` with up to `lanes` at once (each with its own recipe and settings) on
/// a session of their own; `done(index, outcome)` receives each outcome as soon as it is
/// known, in finishing order. A bad request reports its error and the others go on; an
/// error returned by `done` ends the run. Policies combined over bytes decode the requests
/// one after another.
pub fn decode_all(
    engine: &Engine,
    requests: Vec<Request>,
    lanes: usize,
    options: SessionOptions,
    done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
) -> Result<()> {
    if engine.unit() == Unit::Bytes {
        let mut decoder = bytes::ByteDecoder::new(engine, options);
        for (i, r) in requests.into_iter().enumerate() {
            let Request { recipe, settings, prompts, reuse_cache, .. } = r;
            let outcome =
                decoder.generate(&recipe, prompts, &settings, reuse_cache, &mut |_| Flow::Continue);
            done(i, outcome)?;
        }
        return Ok(());
    }
    let lanes = lanes.clamp(1, requests.len().max(1));
    let mut decoder = Decoder::new(engine, lanes, options);
    for (i, request) in requests.into_iter().enumerate() {
        if let Err(e) = decoder.submit(i as u64, request) {
            done(i, Err(e))?;
        }
    }
    decoder.run(&mut |tag, event| {
        match event {
            Event::Done(g) => done(tag as usize, Ok(*g))?,
            Event::Failed(e) => done(tag as usize, Err(e))?,
            Event::Token { .. } | Event::Text(_) => {}
        }
        Ok(Flow::Continue)
    })
}

#[cfg(test)]
mod tests {
    use super::FinishReason;

    #[test]
    fn finish_reason_names_are_the_json_ones() {
        for r in
            [FinishReason::Eog, FinishReason::Stop, FinishReason::Length, FinishReason::Cancelled]
        {
            assert_eq!(serde_json::to_value(r).unwrap(), serde_json::json!(r.name()));
        }
    }
}
