//! The decoding loop over bytes: policies whose vocabularies differ (or any, with `--unit
//! bytes`) are combined through their next-byte distributions (see
//! [`crate::pipeline::bytes`]).
//!
//! One session holds every policy; a policy's lanes hold the tokenizations its byte view
//! follows: a new tokenization is the prompt and its tokens, prefilled with the longest
//! start any of the policy's lanes holds kept (a branch copies its parent's cache and
//! decodes one token). Every policy's new tokenizations go in one pass per policy, all
//! policies in one session call; a policy whose tokenizations all end past the next byte is
//! not run at all. Then the views' distributions are combined, a byte drawn, and every view
//! takes it.
//!
//! Units: `max_tokens` counts bytes, a generation's `tokens` are its bytes, and its
//! log-probabilities are per byte (an alternative's `token` is a byte, or 256 for the end).

use super::{FinishReason, Flow, Generation, Timings};
use crate::error::invalid;
use crate::pipeline::bytes::{
    ByteMod, ByteView, Choice, NodeId, StepError, DEFAULT_MAX_NODES, END,
};
use crate::pipeline::combine::Combiner;
use crate::pipeline::engine::{Engine, LaneFill, Session, SessionOptions, Strategy};
use crate::pipeline::logprobs::{Alternative, TokenLogprob};
use crate::pipeline::recipe::Recipe;
use crate::pipeline::sample::{fresh_seed, Sampler, SamplingParams};
use crate::pipeline::settings::Settings;
use crate::pipeline::text::TextStream;
use anyhow::{anyhow, bail, Result};
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// What the byte path did, per policy that ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ByteFigures {
    /// Bytes generated per second of decode time.
    pub bytes_per_second: f64,
    /// Per policy: forward passes (each runs all of the policy's new tokenizations in one
    /// batch) per byte generated, and tokenizations run per byte.
    pub passes_per_byte: Vec<(String, f64)>,
    pub runs_per_byte: Vec<(String, f64)>,
    /// The largest share of a policy's probability of the text that pruning dropped at one
    /// byte (0: every step exact).
    pub most_dropped: f64,
}

/// Checks the settings the byte path honours: penalties and biases name tokens, grammars
/// work on tokens, log-probabilities are per token.
fn check_settings(settings: &Settings) -> Result<()> {
    let s = &settings.sampling;
    let refuse = |name: &str, why: &str| Err(invalid(name, format!("{why}; leave it out")));
    if s.repeat_penalty != 1.0 && s.repeat_penalty != SamplingParams::default().repeat_penalty {
        return refuse(
            "repeat_penalty",
            "does not apply over bytes (it would penalise every letter already used; the \
             default is left off there)",
        );
    }
    if s.presence_penalty != 0.0 || s.frequency_penalty != 0.0 {
        return refuse("presence_penalty", "does not apply over bytes (it counts tokens)");
    }
    if !s.logit_bias.is_empty() {
        return refuse(
            "logit_bias",
            "names token ids, which policies combined over bytes do not share",
        );
    }
    if settings.constraint.is_some() {
        return refuse("grammar", "constrains tokens, and MOD over bytes has none");
    }
    Ok(())
}

/// Which lane holds each tokenization of one policy in the current generation, and what
/// running it cost.
#[derive(Default)]
struct Lanes {
    held: HashMap<NodeId, usize>,
    free: Vec<usize>,
    passes: usize,
    runs: usize,
}

/// The tokens a step decodes: the fewest a new tokenization found cached, and those decoded.
#[derive(Default)]
struct Ran {
    reused: Option<usize>,
    decoded: usize,
}

/// Runs every term's policy on the tokenizations its view wants, all in one session call
/// (the policies take turns on the threads; a policy with nothing wanted is not run).
/// `policy[k]` is term `k`'s policy, which is also its member index in the session. Returns
/// `None` when a tokenization does not fit the context.
fn run(
    session: &mut Session,
    lanes: &mut [Lanes],
    m: &mut ByteMod,
    policy: &[usize],
    prompts: &[Vec<LlamaToken>],
    n_ctx: usize,
    reuse: bool,
) -> Result<Option<Ran>> {
    let mut fills: Vec<LaneFill> = Vec::new();
    let mut wanted = Vec::with_capacity(policy.len());
    for (k, &p) in policy.iter().enumerate() {
        let own = &mut lanes[k];
        for id in m.take_released(k) {
            if let Some(lane) = own.held.remove(&id) {
                own.free.push(lane);
            }
        }
        let want = m.wanted(k);
        for w in &want {
            if prompts[p].len() + w.tokens.len() >= n_ctx {
                return Ok(None);
            }
            let lane =
                own.free.pop().ok_or_else(|| anyhow!("internal: more tokenizations than lanes"))?;
            own.held.insert(w.id, lane);
            let mut tokens = prompts[p].clone();
            tokens.extend(w.tokens.iter().map(|&t| LlamaToken(t as i32)));
            let fill = match fills.iter_mut().position(|f| f.lane == lane) {
                Some(i) => &mut fills[i],
                None => {
                    let none = vec![None; prompts.len()];
                    fills.push(LaneFill { lane, prompts: none, reuse, mix: None });
                    fills.last_mut().expect("just pushed")
                }
            };
            fill.prompts[p] = Some(tokens);
        }
        if !want.is_empty() {
            own.passes += 1;
            own.runs += want.len();
        }
        wanted.push(want);
    }
    if fills.is_empty() {
        return Ok(Some(Ran::default()));
    }
    let filled = session.prefill_lanes(fills)?;
    for (k, want) in wanted.iter().enumerate() {
        for w in want {
            let lane = lanes[k].held[&w.id];
            m.supply(k, w.id, session.logits_in(policy[k], lane));
        }
    }
    Ok(Some(Ran {
        reused: filled.iter().map(|f| f.reused).min(),
        decoded: filled.iter().map(|f| f.decoded).sum(),
    }))
}

/// Decodes over bytes, one generation after another, keeping one session of every policy
/// (its lanes' caches hold what they decoded: a conversation's next turn decodes only what
/// is new).
pub struct ByteDecoder<'e> {
    engine: &'e Engine,
    options: SessionOptions,
    /// The policies take turns on the threads (else side by side; see [`ByteDecoder::new`]).
    turns: bool,
    session: Option<Session>,
}

impl<'e> ByteDecoder<'e> {
    /// A decoder whose session opens when a generation needs it. The policies take turns on
    /// all the threads, one pass after another (a policy's tokenizations all in one pass),
    /// unless `options.strategy` is `threads`: then each model runs side by side with the
    /// others on its share of the threads. Which is faster depends on the machine and the
    /// models (on a 2-core Xeon, turns: 66 bytes/s against 56 for the default pair), and
    /// `auto` takes turns, since the policies seldom all need a pass for the same byte.
    pub fn new(engine: &'e Engine, options: SessionOptions) -> Self {
        let turns = options.strategy != Strategy::Threads;
        // One cache shared by a policy's lanes (`mixed` sessions have one): a branch then
        // shares its parent's cells instead of copying them.
        let options = SessionOptions {
            strategy: Strategy::Mixed,
            ctx_size: engine.context_size(options.ctx_size),
            ..options
        };
        Self { engine, options, turns, session: None }
    }

    /// Opens the session now (a server finds out at start-up whether it fits).
    pub fn prepare(&mut self) -> Result<()> {
        self.session()?;
        Ok(())
    }

    fn session(&mut self) -> Result<&mut Session> {
        if self.session.is_none() {
            let session =
                self.engine.open_byte_session(DEFAULT_MAX_NODES, self.options, self.turns)?;
            self.session = Some(session);
        }
        Ok(self.session.as_mut().expect("just opened"))
    }

    /// Checks a request's recipe and settings for the byte path: an error here is the
    /// request's fault.
    pub fn check(engine: &Engine, recipe: &Recipe, settings: &Settings) -> Result<()> {
        settings.check()?;
        check_settings(settings)?;
        let terms = recipe.terms()?;
        Combiner::new(recipe.divergence, &terms, settings.plausibility)?;
        if terms.iter().any(|(role, _)| recipe.index_of(*role) >= engine.policies().len()) {
            bail!("the recipe names a policy the engine does not hold");
        }
        Ok(())
    }

    /// Decodes one prompt (each policy's own tokens) with the recipe's policies combined
    /// over bytes. `on_text` receives the text as it becomes safe to print and may stop the
    /// generation (finish reason `cancelled`). With `reuse`, each policy keeps what its
    /// caches hold of its prompt (a conversation's earlier turns).
    pub fn generate(
        &mut self,
        recipe: &Recipe,
        prompts: Vec<Vec<LlamaToken>>,
        settings: &Settings,
        reuse: bool,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        let engine = self.engine;
        Self::check(engine, recipe, settings)?;
        if prompts.len() != engine.policies().len() {
            bail!("{} prompts for {} policies", prompts.len(), engine.policies().len());
        }
        let terms = recipe.terms()?;
        let combiner = Combiner::new(recipe.divergence, &terms, settings.plausibility)?;
        let members: Vec<usize> = terms.iter().map(|(role, _)| recipe.index_of(*role)).collect();
        let n_ctx = self.options.ctx_size as usize;
        for &p in &members {
            if prompts[p].is_empty() {
                return Err(invalid("prompt", "is empty"));
            }
            if prompts[p].len() >= n_ctx {
                return Err(invalid(
                    "prompt",
                    format!(
                        "is {} tokens for policy '{}' but the context (`ctx_size`) holds \
                         {n_ctx}; shorten the prompt or raise `ctx_size`",
                        prompts[p].len(),
                        engine.policies()[p].name
                    ),
                ));
            }
        }
        let greedy = settings.sampling.temperature == 0.0;
        let seed = settings.sampling.seed.unwrap_or_else(fresh_seed);
        let sampler = Sampler::new(settings.sampling.clone(), seed);
        let views = members
            .iter()
            .map(|&p| {
                ByteView::new(engine.byte_vocab(p), settings.byte_tolerance, DEFAULT_MAX_NODES)
            })
            .collect();
        let mut m = ByteMod::new(views, combiner, sampler, greedy);
        let started = Instant::now();
        let mut lanes: Vec<Lanes> = members
            .iter()
            .map(|_| Lanes { free: (0..DEFAULT_MAX_NODES).rev().collect(), ..Lanes::default() })
            .collect();
        let session = self.session()?;
        // The prompts: each view's first tokenization (the empty one).
        let filled = run(session, &mut lanes, &mut m, &members, &prompts, n_ctx, reuse)?
            .ok_or_else(|| anyhow!("internal: a prompt checked to fit"))?;
        let (cached, prompt_decoded) = (filled.reused.unwrap_or(0), filled.decoded);
        for l in &mut lanes {
            (l.passes, l.runs) = (0, 0);
        }
        let prompt_ms = started.elapsed().as_secs_f64() * 1e3;
        let decode_start = Instant::now();
        let (mut forward, mut combining) = (0.0, 0.0);
        let mut text = TextStream::new(&settings.stops);
        let mut bytes: Vec<u32> = Vec::new();
        let mut logprobs = Vec::new();
        let finish = loop {
            if bytes.len() >= settings.max_tokens {
                break FinishReason::Length;
            }
            let t = Instant::now();
            let fits = run(session, &mut lanes, &mut m, &members, &prompts, n_ctx, true)?;
            forward += t.elapsed().as_secs_f64();
            if fits.is_none() {
                break FinishReason::Length;
            }
            let t = Instant::now();
            let choice = m.choose();
            combining += t.elapsed().as_secs_f64();
            let byte = match choice {
                Ok(Choice::End) => break FinishReason::Eog,
                Ok(Choice::Byte(x)) => x,
                Err(e) => return Err(step_error(e, engine, &members, &m)),
            };
            if let Some(top) = settings.logprobs {
                let (lp, alternatives, policies) = m.logprobs(usize::from(byte), top);
                let alt = |o: usize, logprob: f32| Alternative {
                    token: o as u32,
                    bytes: if o == END { Vec::new() } else { vec![o as u8] },
                    logprob,
                };
                let top = alternatives.into_iter().map(|(o, l)| alt(o, l)).collect();
                logprobs.push(TokenLogprob { chosen: alt(usize::from(byte), lp), top, policies });
            }
            m.advance(byte).map_err(|e| step_error(e, engine, &members, &m))?;
            bytes.push(u32::from(byte));
            let pushed = text.push(&[byte]);
            let flow = on_text(pushed.emit);
            if pushed.stopped {
                break FinishReason::Stop;
            }
            if flow == Flow::Stop {
                break FinishReason::Cancelled;
            }
        };
        let rest = text.finish().to_string();
        on_text(&rest);
        let decode_ms = decode_start.elapsed().as_secs_f64() * 1e3;
        let n = bytes.len().max(1) as f64;
        let name = |k: usize| engine.policies()[members[k]].name.clone();
        let each = |f: fn(&Lanes) -> usize| -> Vec<(String, f64)> {
            lanes.iter().enumerate().map(|(k, l)| (name(k), f(l) as f64 / n)).collect()
        };
        let per_second = bytes.len() as f64 / (decode_ms / 1e3).max(1e-9);
        let figures = ByteFigures {
            bytes_per_second: per_second,
            passes_per_byte: each(|l| l.passes),
            runs_per_byte: each(|l| l.runs),
            most_dropped: m.most_dropped,
        };
        Ok(Generation {
            text: text.text().to_string(),
            finish_reason: finish,
            prompt_tokens: engine
                .policies()
                .iter()
                .zip(&prompts)
                .map(|(p, t)| (p.name.clone(), t.len()))
                .collect(),
            cached_tokens: cached,
            seed,
            logprobs,
            policies: (0..members.len()).map(name).collect(),
            timings: Timings {
                prompt_ms,
                prompt_tokens_decoded: prompt_decoded,
                decode_ms,
                tokens_per_second: per_second,
                forward_ms: forward * 1e3,
                combine_ms: combining * 1e3,
                sample_ms: 0.0,
                strategy: if self.turns { "mixed" } else { "threads" },
                contexts: members.len(),
                policies: members.len(),
                mixed: false,
                unmixed_because: Some("MOD over bytes combines each policy's distribution"),
                drafted: 0,
                accepted: 0,
                passes: lanes.iter().map(|l| l.passes).max().unwrap_or(0),
            },
            tokens: bytes,
            bytes: Some(figures),
        })
    }
}

/// Decodes one prompt with the recipe's policies combined over bytes, on a session of its
/// own. `on_text` receives the text as it becomes safe to print.
pub fn generate_bytes(
    engine: &Engine,
    recipe: &Recipe,
    prompts: Vec<Vec<LlamaToken>>,
    settings: &Settings,
    options: SessionOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let mut decoder = ByteDecoder::new(engine, options);
    decoder.generate(recipe, prompts, settings, false, &mut |t| {
        on_text(t);
        Flow::Continue
    })
}

fn step_error(e: StepError, engine: &Engine, members: &[usize], m: &ByteMod) -> anyhow::Error {
    match e {
        StepError::NoFiniteScore => anyhow!(
            "the combined distribution over the next byte has no finite score (the policies \
             agree on no byte that keeps the text valid UTF-8, or the weights are beyond what \
             the arithmetic can represent)"
        ),
        StepError::Impossible(k) => anyhow!(
            "policy '{}' gives the text so far no probability (after {} bytes)",
            engine.policies()[members[k]].name,
            m.views()[k].text().len()
        ),
    }
}
