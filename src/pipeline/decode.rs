//! The decoding loop: prompt → policies → combiner → sampler → the same token to every
//! policy, until an end-of-generation token, a stop string, the token limit or a full context.

use crate::pipeline::combine::{Combiner, Role};
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::Recipe;
use crate::pipeline::sample::{Sampler, SamplingParams};
use crate::pipeline::text::TextStream;
use anyhow::{bail, Result};
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;
use std::time::Instant;

/// Everything about one generation except the prompt and the policies.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_tokens: usize,
    pub stops: Vec<String>,
    pub sampling: SamplingParams,
    /// Plausibility threshold τ for sampling (DESIGN.md §1, "Poles"); 0 = whole vocabulary.
    pub plausibility: f64,
    pub session: SessionOptions,
}

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
    /// The user stopped it (Ctrl-C in `mood chat`).
    Cancelled,
}

/// Wall-clock times of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timings {
    pub prompt_ms: f64,
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
    pub timings: Timings,
}

/// Decodes a continuation of `prompt` with the recipe's policies combined by MOD.
/// `on_text` receives the text as it becomes safe to print.
pub fn generate(
    engine: &Engine,
    recipe: &Recipe,
    prompt: &str,
    settings: &Settings,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let mut stream = Stream::new(engine, recipe, prompt, settings)?;
    let members = stream.members.clone();
    let mut session = engine.session(&members, settings.session)?;
    let started = Instant::now();
    session.prefill(&stream.prompts_for(&members))?;
    stream.prompt_ms = started.elapsed().as_secs_f64() * 1e3;
    stream.started = Instant::now();
    let identity: Vec<usize> = (0..members.len()).collect();
    while let Some(token) =
        stream.advance(&identity, |k| session.logits(k), session.has_room(), on_text)
    {
        let t = Instant::now();
        session.append(LlamaToken(token as i32))?;
        stream.forward += t.elapsed().as_secs_f64();
    }
    Ok(stream.finish(session.strategy().name(), session.n_contexts()))
}

/// One generation in progress: its combiner, sampler, text and tokens. The decoding loops
/// ([`generate`], and several at once in [`crate::apps::parallel`]) feed it logits and take the
/// tokens it picks.
pub struct Stream<'e> {
    engine: &'e Engine,
    combiner: Combiner,
    /// Engine policy indices of the combiner's terms, in order.
    pub members: Vec<usize>,
    /// Every policy's prompt tokens (prefix + prompt).
    prompts: Vec<Vec<LlamaToken>>,
    sampler: Sampler,
    greedy: bool,
    max_tokens: usize,
    text: TextStream,
    tokens: Vec<u32>,
    piece: Vec<u8>,
    combined: Vec<f32>,
    finish: Option<FinishReason>,
    pub prompt_ms: f64,
    pub started: Instant,
    pub forward: f64,
    combining: f64,
    sampling: f64,
}

impl<'e> Stream<'e> {
    /// Checks the request and prepares its state; decoding has not started.
    pub fn new(
        engine: &'e Engine,
        recipe: &Recipe,
        prompt: &str,
        settings: &Settings,
    ) -> Result<Self> {
        if prompt.trim().is_empty() {
            bail!("the prompt is empty; give --prompt TEXT (or a non-empty --prompt-file)");
        }
        let prompts: Vec<Vec<LlamaToken>> = engine
            .policies()
            .iter()
            .enumerate()
            .map(|(p, policy)| engine.tokenize(p, &format!("{}{}", policy.prefix, prompt)))
            .collect();
        Self::with_prompts(engine, recipe, settings, prompts)
    }

    /// As [`Stream::new`], with every policy's prompt already tokenized (a chat rendered
    /// with each policy's template).
    pub fn with_prompts(
        engine: &'e Engine,
        recipe: &Recipe,
        settings: &Settings,
        prompts: Vec<Vec<LlamaToken>>,
    ) -> Result<Self> {
        if settings.max_tokens == 0 {
            bail!("--max-tokens must be at least 1");
        }
        settings.sampling.validate()?;
        let combiner = Combiner::new(
            recipe.divergence,
            &recipe.weights,
            recipe.reference.is_some(),
            settings.plausibility,
        )?;
        let members = engine_members(recipe, combiner.terms());
        let n_ctx = settings.session.ctx_size as usize;
        for &m in &members {
            if prompts[m].len() >= n_ctx {
                bail!(
                    "the prompt is {} tokens for policy '{}' but --ctx-size is {}; shorten the prompt or raise --ctx-size",
                    prompts[m].len(),
                    engine.policies()[m].name,
                    n_ctx
                );
            }
        }
        Ok(Self {
            engine,
            combiner,
            members,
            prompts,
            sampler: Sampler::new(settings.sampling.clone()),
            greedy: settings.sampling.temperature == 0.0,
            max_tokens: settings.max_tokens,
            text: TextStream::new(&settings.stops),
            tokens: Vec::new(),
            piece: Vec::new(),
            combined: vec![0f32; engine.n_common_vocab()],
            finish: None,
            prompt_ms: 0.0,
            started: Instant::now(),
            forward: 0.0,
            combining: 0.0,
            sampling: 0.0,
        })
    }

    /// The prompt tokens of the given engine policies (for a session's prefill).
    pub fn prompts_for(&self, policies: &[usize]) -> Vec<Vec<LlamaToken>> {
        policies.iter().map(|&p| self.prompts[p].clone()).collect()
    }

    /// Picks the next token from the current logits. `slots[k]` is where term `k`'s policy
    /// sits in the session, `logits(slot)` that policy's latest logits, `has_room` whether
    /// the contexts can take one more token. Returns the token to feed every policy, or
    /// `None` once the generation has ended.
    pub fn advance<'s>(
        &mut self,
        slots: &[usize],
        logits: impl Fn(usize) -> &'s [f32],
        has_room: bool,
        on_text: &mut dyn FnMut(&str),
    ) -> Option<u32> {
        let t0 = Instant::now();
        // The policies' logits, gathered without a heap allocation for up to 8 policies.
        let mut few: [&[f32]; 8] = [&[]; 8];
        let many: Vec<&[f32]>;
        let inputs: &[&[f32]] = if slots.len() <= few.len() {
            for (slot, &k) in few.iter_mut().zip(slots) {
                *slot = logits(k);
            }
            &few[..slots.len()]
        } else {
            many = slots.iter().map(|&k| logits(k)).collect();
            &many
        };
        self.combiner.combine(inputs, self.greedy, &mut self.combined);
        let t1 = Instant::now();
        let token = self.sampler.sample(&mut self.combined, &self.tokens);
        self.combining += (t1 - t0).as_secs_f64();
        self.sampling += t1.elapsed().as_secs_f64();
        let finish = if self.engine.is_eog(token) {
            Some(FinishReason::Eog)
        } else {
            self.tokens.push(token);
            self.engine.piece(token, &mut self.piece);
            let pushed = self.text.push(&self.piece);
            on_text(&pushed.emit);
            if pushed.stopped {
                Some(FinishReason::Stop)
            } else if self.tokens.len() >= self.max_tokens || !has_room {
                Some(FinishReason::Length)
            } else {
                None
            }
        };
        match finish {
            Some(reason) => {
                self.finish = Some(reason);
                on_text(&self.text.finish());
                None
            }
            None => Some(token),
        }
    }

    /// Ends the generation early (the user stopped it).
    pub fn cancel(&mut self, on_text: &mut dyn FnMut(&str)) {
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
            on_text(&self.text.finish());
        }
    }

    /// The finished generation.
    pub fn finish(self, strategy: &'static str, contexts: usize) -> Generation {
        let decode_ms = self.started.elapsed().as_secs_f64() * 1e3;
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
            timings: Timings {
                prompt_ms: self.prompt_ms,
                decode_ms,
                tokens_per_second: self.tokens.len() as f64 / (decode_ms / 1e3).max(1e-9),
                forward_ms: self.forward * 1e3,
                combine_ms: self.combining * 1e3,
                sample_ms: self.sampling * 1e3,
                strategy,
                contexts,
            },
            tokens: self.tokens,
        }
    }
}

/// Engine policy indices (reference first when present, then experts) of the combiner's
/// terms.
pub fn engine_members(recipe: &Recipe, terms: &[(Role, f64)]) -> Vec<usize> {
    terms.iter().map(|(role, _)| role.index(recipe.reference.is_some())).collect()
}
