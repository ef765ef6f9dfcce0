//! [`Params`]: what one call may change — the weights, the divergence and the settings of
//! one generation.

use crate::pipeline::constraint::ConstraintSpec;
use crate::pipeline::divergence::Divergence;
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::Settings;

/// The weights, divergence and settings of one call. `Default` (= [`Params::new`]) keeps the
/// recipe's weights and divergence and the default [`Settings`]: greedy, 256 tokens at most.
///
/// ```
/// let params = mood::Params::new().weights([0.7, 0.3]).temperature(0.8).seed(42).max_tokens(64);
/// assert_eq!(params.settings.max_tokens, 64);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// One weight per expert, in recipe order; `None`: the recipe's.
    pub weights: Option<Vec<f64>>,
    /// `None`: the recipe's.
    pub divergence: Option<Divergence>,
    /// Rescale non-negative weights to sum to 1 where the divergence needs it.
    pub normalize_weights: bool,
    pub settings: Settings,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// One weight per expert, in recipe order.
    pub fn weights(mut self, weights: impl Into<Vec<f64>>) -> Self {
        self.weights = Some(weights.into());
        self
    }

    pub fn divergence(mut self, divergence: Divergence) -> Self {
        self.divergence = Some(divergence);
        self
    }

    pub fn normalize_weights(mut self, yes: bool) -> Self {
        self.normalize_weights = yes;
        self
    }

    /// The most tokens to generate.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.settings.max_tokens = n;
        self
    }

    /// 0 is greedy decoding.
    pub fn temperature(mut self, t: f64) -> Self {
        self.settings.sampling.temperature = t;
        self
    }

    /// The seed of the sampler (the same seed, the same output).
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.sampling.seed = Some(seed);
        self
    }

    /// The penalty for tokens among the last 64 generated (1 = off; the default is 1.1, as
    /// llama.cpp's).
    pub fn repeat_penalty(mut self, penalty: f64) -> Self {
        self.settings.sampling.repeat_penalty = penalty;
        self
    }

    /// Speculation: the most tokens drafted and checked per pass (0 = off). The output is
    /// the same either way, up to llama.cpp's rounding.
    pub fn draft(mut self, max: usize) -> Self {
        self.settings.draft_max = max;
        self
    }

    /// Ends the generation where this text appears (it is not part of the output).
    pub fn stop(mut self, text: impl Into<String>) -> Self {
        self.settings.stops.push(text.into());
        self
    }

    /// The output must follow this GBNF grammar.
    pub fn grammar(mut self, gbnf: impl Into<String>) -> Self {
        self.settings.constraint = Some(ConstraintSpec::Grammar(gbnf.into()));
        self
    }

    /// The output must be JSON valid under this schema.
    pub fn json_schema(mut self, schema: serde_json::Value) -> Self {
        self.settings.constraint = Some(ConstraintSpec::JsonSchema(schema));
        self
    }

    /// Report each token's log-probability with this many alternatives.
    pub fn logprobs(mut self, top: usize) -> Self {
        self.settings.logprobs = Some(top);
        self
    }

    /// The recipe this call decodes with: `base` with the weights and divergence applied,
    /// checked against the divergence's rules.
    pub(crate) fn recipe(&self, base: &Recipe) -> anyhow::Result<Recipe> {
        let mut recipe = base.clone();
        if let Some(d) = self.divergence {
            recipe.divergence = d;
        }
        if let Some(w) = &self.weights {
            recipe.set_weights(w.clone())?;
        }
        recipe.apply_weight_rules(self.normalize_weights)?;
        recipe.terms()?;
        Ok(recipe)
    }
}
