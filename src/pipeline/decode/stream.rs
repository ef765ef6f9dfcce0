//! One request in progress: its combiner, constraint, sampler, text, tokens, log-probabilities
//! and timings. The [`super::Decoder`] hands each step's logits to it and feeds its tokens.

use super::{FinishReason, Generation, Request, Timings};
use crate::error::invalid;
use crate::pipeline::combine::Combiner;
use crate::pipeline::constraint::Constraint;
use crate::pipeline::divergence::Divergence;
use crate::pipeline::draft::DraftChoice;
use crate::pipeline::engine::{Engine, Grammar};
use crate::pipeline::logprobs::{self, Alternative, TokenLogprob};
use crate::pipeline::sample::{allowed_window, fresh_seed, NoToken, Sampler};
use crate::pipeline::text::TextStream;
use anyhow::{anyhow, Result};
use llama_cpp_2::token::LlamaToken;
use std::time::Instant;

/// What a lane's scores gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    Token(u32),
    /// An end-of-generation token.
    End,
    /// The constraint allows none of the tokens scored (the plausibility set, or the tokens
    /// that can win): score every token and pick again.
    Rescore,
}

/// One request in progress (see the module documentation). Fields the decoder reads are
/// `pub(super)`.
pub(super) struct Stream<'e> {
    pub(super) engine: &'e Engine,
    combiner: Combiner,
    /// Engine policy indices of the combiner's terms, in order.
    pub(super) members: Vec<usize>,
    /// Every policy's prompt tokens.
    pub(super) prompts: Vec<Vec<LlamaToken>>,
    pub(super) reuse_cache: bool,
    sampler: Sampler,
    seed: u64,
    greedy: bool,
    divergence: Divergence,
    /// The compiled constraint, if the request has one.
    constraint: Option<Grammar>,
    pub(super) logprobs: Logprobs,
    pub(super) max_tokens: usize,
    pub(super) text: TextStream,
    pub(super) tokens: Vec<u32>,
    pub(super) piece: Vec<u8>,
    finish: Option<FinishReason>,
    pub(super) cached: usize,
    /// Prompt tokens the policies decoded at the start, summed over the policies.
    pub(super) decoded_at_start: usize,
    /// Why the request cannot share one output product per lane (its own reasons), and why
    /// it did not (its own or the session's); `None`: it did.
    pub(super) mix_reason: Option<&'static str>,
    pub(super) unmixed_because: Option<&'static str>,
    pub(super) clock: Clock,
    pub(super) speculation: Speculation,
}

/// Log-probabilities, when a request asks for them.
pub(super) struct Logprobs {
    /// Alternatives to report per token; `None`: none asked for.
    pub(super) top: Option<usize>,
    pub(super) list: Vec<TokenLogprob>,
    /// Greedy decoding under a divergence other than reverse KL picks from eq. 6's scores;
    /// log-probabilities come from the normalised distribution, combined here.
    combiner: Option<Combiner>,
    scores: Vec<f32>,
    scratch: Vec<(u32, f32)>,
}

/// Where a request's time goes (see [`Timings`]).
pub(super) struct Clock {
    pub(super) prompt_ms: f64,
    pub(super) started: Instant,
    /// Seconds in forward passes, and the passes the lane took part in after its prompt.
    pub(super) forward: f64,
    pub(super) passes: usize,
    combining: f64,
    sampling: f64,
    /// Steps whose logits came mixed from the session.
    pub(super) mixed_steps: usize,
}

/// Speculation: the draft fed after the lane's last token (checked at the next step), the
/// most tokens a draft may have, what decides each draft's length (the request's acceptance
/// rate, see [`DraftChoice`]), the tokens looked up (a prompt, then the output), and the draft
/// tokens proposed and accepted so far.
pub(super) struct Speculation {
    pub(super) draft: Vec<u32>,
    pub(super) draft_max: usize,
    pub(super) choice: DraftChoice,
    pub(super) lookup: Vec<u32>,
    drafted: usize,
    accepted: usize,
}

impl<'e> Stream<'e> {
    pub(super) fn new(engine: &'e Engine, request: Request, ctx_size: u32) -> Result<Self> {
        let Request { recipe, settings, prompts, reuse_cache, grammar } = request;
        settings.check()?;
        if prompts.len() != engine.policies().len() {
            anyhow::bail!("{} prompts for {} policies", prompts.len(), engine.policies().len());
        }
        let terms = recipe.terms()?;
        let combiner = Combiner::new(recipe.divergence, &terms, settings.plausibility)?;
        let members: Vec<usize> = terms.iter().map(|(role, _)| recipe.index_of(*role)).collect();
        for &m in &members {
            if prompts[m].len() >= ctx_size as usize {
                return Err(invalid(
                    "prompt",
                    format!(
                        "is {} tokens for policy '{}' but the context (`ctx_size`) holds \
                         {ctx_size}; shorten the prompt or raise `ctx_size`",
                        prompts[m].len(),
                        engine.policies()[m].name,
                    ),
                ));
            }
        }
        let vocab = engine.n_common_vocab();
        if let Some((t, _)) =
            settings.sampling.logit_bias.iter().find(|(t, _)| *t as usize >= vocab)
        {
            return Err(invalid(
                "logit_bias",
                format!("names token {t}, but the vocabulary has tokens 0 to {}", vocab - 1),
            ));
        }
        let constraint = match grammar {
            Some(g) => Some(g),
            None => settings.constraint.as_ref().map(|c| engine.grammar(c)).transpose()?,
        };
        let greedy = settings.sampling.temperature == 0.0;
        let logprob_combiner =
            (settings.logprobs.is_some() && greedy && recipe.divergence != Divergence::ReverseKl)
                .then(|| Combiner::new(recipe.divergence, &terms, 0.0))
                .transpose()?;
        let seed = settings.sampling.seed.unwrap_or_else(fresh_seed);
        let lookup = prompts[members[0]].iter().map(|t| t.0 as u32).collect();
        let mix_reason = super::mix_reason(&recipe, &settings);
        Ok(Self {
            engine,
            combiner,
            members,
            prompts,
            reuse_cache,
            sampler: Sampler::new(settings.sampling.clone(), seed),
            seed,
            greedy,
            divergence: recipe.divergence,
            constraint,
            logprobs: Logprobs {
                top: settings.logprobs,
                list: Vec::new(),
                combiner: logprob_combiner,
                scores: Vec::new(),
                scratch: Vec::new(),
            },
            max_tokens: settings.max_tokens,
            text: TextStream::new(&settings.stops),
            tokens: Vec::new(),
            piece: Vec::new(),
            finish: None,
            cached: 0,
            decoded_at_start: 0,
            mix_reason,
            unmixed_because: mix_reason,
            clock: Clock {
                prompt_ms: 0.0,
                started: Instant::now(),
                forward: 0.0,
                passes: 0,
                combining: 0.0,
                sampling: 0.0,
                mixed_steps: 0,
            },
            speculation: Speculation {
                draft: Vec::new(),
                draft_max: settings.draft_max,
                choice: DraftChoice::new(),
                lookup,
                drafted: 0,
                accepted: 0,
            },
        })
    }

    /// Records a checked draft of `drafted` tokens of which the first `accepted` were taken.
    pub(super) fn speculated(&mut self, drafted: usize, accepted: usize) {
        self.speculation.drafted += drafted;
        self.speculation.accepted += accepted;
        self.speculation.choice.update(drafted, accepted);
    }

    /// Each term's coefficient on its raw logits, in order (reverse KL's linear form).
    pub(super) fn coefficients(&self) -> impl Iterator<Item = f64> + '_ {
        self.combiner.coefficients()
    }

    /// Whether the first combination of a step should score every token: greedy decoding
    /// under a constraint, with a divergence whose greedy scores leave out the tokens that
    /// cannot win unconstrained (the constraint may forbid all of those).
    pub(super) fn whole_first(&self) -> bool {
        self.constraint.is_some() && self.greedy && self.divergence != Divergence::ReverseKl
    }

    /// Combines the policies' current logits into `combined` (`whole`: a score for every
    /// token, see [`Combiner::combine_whole`]): `slots[k]` is where term `k`'s policy sits in
    /// the session, `logits(slot)` its latest logits.
    pub(super) fn combine<'s>(
        &mut self,
        slots: &[usize],
        logits: impl Fn(usize) -> &'s [f32],
        combined: &mut [f32],
        whole: bool,
    ) {
        let started = Instant::now();
        with_inputs(slots, logits, |inputs| {
            if whole {
                self.combiner.combine_whole(inputs, self.greedy, combined);
            } else {
                self.combiner.combine(inputs, self.greedy, combined);
            }
        });
        self.clock.combining += started.elapsed().as_secs_f64();
    }

    /// Before a greedy step under another divergence than reverse KL, with log-probabilities
    /// asked for: the normalised distribution they come from, with the same bias and
    /// penalties as the scores the token is picked from.
    pub(super) fn prepare_logprobs<'s>(
        &mut self,
        slots: &[usize],
        logits: impl Fn(usize) -> &'s [f32],
    ) {
        let Some(combiner) = self.logprobs.combiner.as_mut() else { return };
        let n = self.engine.n_common_vocab();
        self.logprobs.scores.resize(n, 0.0);
        let started = Instant::now();
        let scores = &mut self.logprobs.scores;
        with_inputs(slots, logits, |inputs| combiner.combine_whole(inputs, false, scores));
        self.sampler.adjust(scores, &self.tokens);
        self.clock.combining += started.elapsed().as_secs_f64();
    }

    /// Picks the next token from the combined scores (changed in place by the logit bias and
    /// the penalties). A token other than an end-of-generation one is recorded in the
    /// history here; the caller pushes its text and then calls [`Stream::accept`].
    pub(super) fn pick(&mut self, scores: &mut [f32]) -> Result<Next> {
        let started = Instant::now();
        let token = match self.constraint.as_mut() {
            None => self.sampler.sample(scores, &self.tokens).ok_or(NoToken::NoFiniteScore),
            Some(g) => self.sampler.sample_constrained(scores, &self.tokens, g),
        };
        self.clock.sampling += started.elapsed().as_secs_f64();
        let token = match token {
            Ok(t) => t,
            Err(NoToken::NothingAllowed) => return Ok(Next::Rescore),
            Err(NoToken::NoFiniteScore) => {
                return Err(anyhow!(
                    "the combined distribution has no finite score (the weights or divergence \
                     parameters are beyond what the arithmetic can represent)"
                ))
            }
        };
        if self.engine.is_eog(token) {
            return Ok(Next::End);
        }
        self.tokens.push(token);
        Ok(Next::Token(token))
    }

    /// Records the log-probabilities of `token`, just picked from `scores`, if they are
    /// asked for: in the combined distribution (under the constraint, before it accepts the
    /// token) and in each policy's own.
    pub(super) fn record_logprobs<'s>(
        &mut self,
        token: u32,
        scores: &[f32],
        slots: &[usize],
        logits: impl Fn(usize) -> &'s [f32],
    ) {
        let Some(top_n) = self.logprobs.top else { return };
        let started = Instant::now();
        let scores =
            if self.logprobs.combiner.is_some() { &self.logprobs.scores[..] } else { scores };
        let allowed = match self.constraint.as_mut() {
            Some(g) => {
                let mut window = Vec::new();
                allowed_window(scores, g, &mut window).ok().map(|()| window)
            }
            None => None,
        };
        let (lp, top) = logprobs::combined(
            scores,
            allowed.as_deref(),
            token,
            top_n,
            &mut self.logprobs.scratch,
        );
        let n = self.engine.n_common_vocab();
        let policies = slots.iter().map(|&k| logprobs::of_policy(logits(k), n, token)).collect();
        let alternative = |token: u32, logprob: f32| {
            let mut bytes = Vec::new();
            self.engine.piece(token, &mut bytes);
            Alternative { token, bytes, logprob }
        };
        let top = top.into_iter().map(|(t, l)| alternative(t, l)).collect();
        self.logprobs.list.push(TokenLogprob { chosen: alternative(token, lp), top, policies });
        self.clock.sampling += started.elapsed().as_secs_f64();
    }

    /// Tells the constraint which token was chosen. An end or a second failure to find an
    /// allowed token pass through; a token the constraint refuses is an error.
    pub(super) fn accept(&mut self, next: Next) -> Result<Next> {
        match (next, self.constraint.as_mut()) {
            (Next::Rescore, _) => Err(anyhow!("the constraint allows none of the tokens")),
            (Next::Token(t), Some(g)) => g.accept(t).map(|()| next),
            _ => Ok(next),
        }
    }

    /// Ends the generation for `reason`; returns the text held back until now.
    pub(super) fn end(&mut self, reason: FinishReason) -> &str {
        self.finish = Some(reason);
        self.text.finish()
    }

    /// The finished generation.
    pub(super) fn finish(mut self, strategy: &'static str, contexts: usize) -> Generation {
        self.text.finish();
        let decode_ms = self.clock.started.elapsed().as_secs_f64() * 1e3;
        let names = self.members.iter().map(|&m| self.engine.policies()[m].name.clone());
        Generation {
            text: self.text.text().to_string(),
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
            prompt_tokens: self
                .engine
                .policies()
                .iter()
                .zip(&self.prompts)
                .map(|(p, t)| (p.name.clone(), t.len()))
                .collect(),
            cached_tokens: self.cached,
            seed: self.seed,
            logprobs: self.logprobs.list,
            policies: names.collect(),
            timings: Timings {
                prompt_ms: self.clock.prompt_ms,
                prompt_tokens_decoded: self.decoded_at_start,
                decode_ms,
                tokens_per_second: self.tokens.len() as f64 / (decode_ms / 1e3).max(1e-9),
                forward_ms: self.clock.forward * 1e3,
                combine_ms: self.clock.combining * 1e3,
                sample_ms: self.clock.sampling * 1e3,
                strategy,
                contexts,
                policies: self.members.len(),
                mixed: self.clock.mixed_steps > 0,
                unmixed_because: self.unmixed_because,
                drafted: self.speculation.drafted,
                accepted: self.speculation.accepted,
                passes: self.clock.passes,
            },
            tokens: self.tokens,
            bytes: None,
        }
    }
}

/// Calls `f` with the policies' logits for `slots`, gathered without a heap allocation for
/// up to 8 policies.
fn with_inputs<'s, R>(
    slots: &[usize],
    logits: impl Fn(usize) -> &'s [f32],
    f: impl FnOnce(&[&[f32]]) -> R,
) -> R {
    let mut few: [&[f32]; 8] = [&[]; 8];
    if slots.len() <= few.len() {
        for (slot, &k) in few.iter_mut().zip(slots) {
            *slot = logits(k);
        }
        f(&few[..slots.len()])
    } else {
        let many: Vec<&[f32]> = slots.iter().map(|&k| logits(k)).collect();
        f(&many)
    }
}
