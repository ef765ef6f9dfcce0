//! The decoding loop: prompt → policies → combiner → sampler → the same token to every
//! policy, until an end-of-generation token, a stop string, the token limit or a full context.

use crate::combine::{Combiner, Role};
use crate::engine::{Engine, SessionOptions};
use crate::recipe::Recipe;
use crate::sample::{Sampler, SamplingParams};
use crate::text::TextStream;
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
    if prompt.trim().is_empty() {
        bail!("the prompt is empty; give --prompt TEXT (or a non-empty --prompt-file)");
    }
    if settings.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    settings.sampling.validate()?;
    let mut combiner = Combiner::new(
        recipe.divergence,
        &recipe.weights,
        recipe.reference.is_some(),
        settings.plausibility,
    )?;
    let members = engine_members(recipe, combiner.terms());
    let greedy = settings.sampling.temperature == 0.0;

    let prompts: Vec<Vec<LlamaToken>> = engine
        .policies()
        .iter()
        .enumerate()
        .map(|(p, policy)| engine.tokenize(p, &format!("{}{}", policy.prefix, prompt)))
        .collect();
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

    let mut session = engine.session(&members, settings.session)?;
    let started = Instant::now();
    session.prefill(&members.iter().map(|&m| prompts[m].clone()).collect::<Vec<_>>())?;
    let prompt_ms = started.elapsed().as_secs_f64() * 1e3;

    let decode_started = Instant::now();
    let mut combined = vec![0f32; engine.n_common_vocab()];
    let mut sampler = Sampler::new(settings.sampling.clone());
    let mut stream = TextStream::new(&settings.stops);
    let mut tokens: Vec<u32> = Vec::new();
    let mut piece = Vec::new();
    let (mut forward, mut combining, mut sampling) = (0.0, 0.0, 0.0);
    let finish_reason = loop {
        let t0 = Instant::now();
        // The policies' logits, gathered without a heap allocation for up to 8 policies.
        let mut few: [&[f32]; 8] = [&[]; 8];
        let many: Vec<&[f32]>;
        let inputs: &[&[f32]] = if members.len() <= few.len() {
            for (k, slot) in few.iter_mut().enumerate().take(members.len()) {
                *slot = session.logits(k);
            }
            &few[..members.len()]
        } else {
            many = (0..members.len()).map(|k| session.logits(k)).collect();
            &many
        };
        combiner.combine(inputs, greedy, &mut combined);
        let t1 = Instant::now();
        let token = sampler.sample(&mut combined, &tokens);
        let t2 = Instant::now();
        combining += (t1 - t0).as_secs_f64();
        sampling += (t2 - t1).as_secs_f64();
        if engine.is_eog(token) {
            break FinishReason::Eog;
        }
        tokens.push(token);
        engine.piece(token, &mut piece);
        let pushed = stream.push(&piece);
        on_text(&pushed.emit);
        if pushed.stopped {
            break FinishReason::Stop;
        }
        if tokens.len() >= settings.max_tokens || !session.has_room() {
            break FinishReason::Length;
        }
        let t3 = Instant::now();
        session.append(LlamaToken(token as i32))?;
        forward += t3.elapsed().as_secs_f64();
    };
    on_text(&stream.finish());
    let decode_ms = decode_started.elapsed().as_secs_f64() * 1e3;

    Ok(Generation {
        text: stream.text().to_string(),
        finish_reason,
        prompt_tokens: engine
            .policies()
            .iter()
            .zip(&prompts)
            .map(|(p, t)| (p.name.clone(), t.len()))
            .collect(),
        timings: Timings {
            prompt_ms,
            decode_ms,
            tokens_per_second: tokens.len() as f64 / (decode_ms / 1e3).max(1e-9),
            forward_ms: forward * 1e3,
            combine_ms: combining * 1e3,
            sample_ms: sampling * 1e3,
            strategy: session.strategy().name(),
            contexts: session.n_contexts(),
        },
        tokens,
    })
}

/// Engine policy indices (reference first when present, then experts) of the combiner's
/// terms.
pub fn engine_members(recipe: &Recipe, terms: &[(Role, f64)]) -> Vec<usize> {
    let offset = usize::from(recipe.reference.is_some());
    terms
        .iter()
        .map(|(role, _)| match role {
            Role::Reference => 0,
            Role::Expert(i) => offset + i,
        })
        .collect()
}
