//! Building recipes in code or from TOML text, with the public error type.

use crate::error::{Error, Result};
use crate::pipeline::divergence::Divergence;
use crate::pipeline::recipe::{Policy, Recipe};
use std::path::{Path, PathBuf};

/// A recipe error: a setting named as such, anything else as [`Error::Recipe`].
pub(super) fn recipe_error(e: anyhow::Error) -> Error {
    match Error::from_chain(e) {
        Error::Engine { message } => Error::Recipe { message },
        other => other,
    }
}

impl Recipe {
    /// A recipe from TOML text (the format of recipe files); relative model paths are taken
    /// from `base_dir`.
    pub fn from_toml(text: &str, base_dir: impl AsRef<Path>) -> Result<Self> {
        Self::parse(text, base_dir.as_ref()).map_err(recipe_error)
    }

    /// A recipe from a TOML file; relative model paths are taken from its folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(path.as_ref()).map_err(recipe_error)
    }

    /// A recipe of experts with equal weights (summing to 1), reverse KL, no reference.
    pub fn with_experts(experts: Vec<Policy>) -> Result<Self> {
        if experts.is_empty() {
            return Err(Error::Recipe { message: "a recipe needs at least one expert".into() });
        }
        let m = experts.len();
        Self::new(Divergence::default(), None, experts, vec![1.0 / m as f64; m])
            .map_err(recipe_error)
    }

    /// The same recipe with a reference policy (named `reference`).
    pub fn and_reference(mut self, reference: Policy) -> Result<Self> {
        self.reference = Some(Policy { name: "reference".into(), ..reference });
        self.checked()
    }

    /// The same recipe with these weights (one per expert).
    pub fn and_weights(mut self, weights: impl Into<Vec<f64>>) -> Result<Self> {
        self.set_weights(weights.into()).map_err(recipe_error)?;
        Ok(self)
    }

    /// The same recipe with this divergence.
    pub fn and_divergence(mut self, divergence: Divergence) -> Result<Self> {
        self.divergence = divergence;
        Ok(self)
    }

    fn checked(self) -> Result<Self> {
        Self::new(self.divergence, self.reference, self.experts, self.weights).map_err(recipe_error)
    }
}

impl Policy {
    /// A policy named `name` on the GGUF file `model`, with nothing else.
    pub fn new(name: impl Into<String>, model: impl Into<PathBuf>) -> Self {
        Policy { name: name.into(), model: model.into(), ..Policy::default() }
    }

    /// Text placed before every prompt of this policy (a prompted expert).
    pub fn prefix(mut self, text: impl Into<String>) -> Self {
        self.prefix = text.into();
        self
    }

    /// A LoRA adapter (GGUF) applied to this policy alone, at `scale`.
    pub fn lora(mut self, adapter: impl Into<PathBuf>, scale: f32) -> Self {
        self.lora = Some((adapter.into(), scale));
        self
    }

    /// The system prompt of this policy in conversations.
    pub fn system(mut self, text: impl Into<String>) -> Self {
        self.system = Some(text.into());
        self
    }

    /// The chat template: `model` (the GGUF's own), a llama.cpp built-in name, or `none`.
    pub fn template(mut self, name: impl Into<String>) -> Self {
        self.template = Some(name.into());
        self
    }
}
