//! Implicit rewards: how much each expert prefers a response over the reference.
//!
//! An expert tuned from the reference with a KL penalty of strength β is, up to a constant
//! per prompt, the optimum for the reward R_i(y|x) = β·log(π_i(y|x)/π_ref(y|x)). Given a
//! prompt and a response, each policy's log-likelihood of the response (after its own prefix
//! and the prompt) comes from one forward pass; the rewards follow. A [`Scorer`] keeps its
//! policies' contexts from one response to the next.

use crate::error::invalid;
use crate::pipeline::engine::{Engine, Session, SessionOptions};
use crate::pipeline::recipe::Recipe;
use anyhow::{bail, Result};
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;

/// Log-likelihoods per policy and implicit rewards per expert, by name, in recipe order.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    pub log_likelihood: serde_json::Map<String, serde_json::Value>,
    pub rewards: serde_json::Map<String, serde_json::Value>,
    pub response_tokens: usize,
}

/// The response as token ids, or as text to tokenize (without BOS).
pub enum Response<'a> {
    Tokens(&'a [u32]),
    Text(&'a str),
}

/// Scores responses under every policy of an engine (the recipe's policies, reference
/// first), reusing one session throughout.
pub struct Scorer<'e> {
    engine: &'e Engine,
    session: Session,
    beta: f64,
}

impl<'e> Scorer<'e> {
    /// A scorer with implicit rewards of strength `beta`; the recipe needs a reference.
    pub fn new(
        engine: &'e Engine,
        recipe: &Recipe,
        beta: f64,
        options: SessionOptions,
    ) -> Result<Self> {
        if recipe.reference.is_none() {
            bail!("implicit rewards log(π_i/π_ref) need a [reference] policy in the recipe");
        }
        if !(beta.is_finite() && beta > 0.0) {
            return Err(invalid("beta", format!("must be a positive number, got {beta}")));
        }
        let members: Vec<usize> = (0..engine.policies().len()).collect();
        let session = engine.open_session(&members, 1, options)?;
        Ok(Self { engine, session, beta })
    }

    /// Scores `response` after `prompt` (each policy's prefix is put before the prompt).
    pub fn score(&mut self, prompt: &str, response: Response) -> Result<Scores> {
        let engine = self.engine;
        let tokens: Vec<LlamaToken> = match response {
            Response::Tokens(t) => t.iter().map(|&t| LlamaToken(t as i32)).collect(),
            Response::Text(text) => engine.tokenize_continuation(0, text),
        };
        let prompts = engine.prompt_tokens(prompt)?;
        let lls = self.session.score(&prompts, &vec![tokens.clone(); prompts.len()])?;
        let policies = engine.policies();
        let mut log_likelihood = serde_json::Map::new();
        for (p, ll) in policies.iter().zip(&lls) {
            log_likelihood.insert(p.name.clone(), serde_json::json!(ll));
        }
        let mut rewards = serde_json::Map::new();
        for (p, ll) in policies.iter().zip(&lls).skip(1) {
            rewards.insert(p.name.clone(), serde_json::json!(self.beta * (ll - lls[0])));
        }
        Ok(Scores { log_likelihood, rewards, response_tokens: tokens.len() })
    }
}
