//! The library's public API: load a recipe's models once ([`Mood`]), open [`Session`]s on
//! them, and generate with per-call weights, divergence and settings ([`Params`]).
//!
//! ```no_run
//! use mood::{Mood, Options, Params, Recipe};
//!
//! # fn main() -> mood::Result<()> {
//! let recipe = Recipe::from_toml(
//!     r#"
//!     [[expert]]
//!     name = "poet"
//!     model = "models/gemma-3-270m-q4_k_m.gguf"
//!     prefix = "A poem about the sea.\n\n"
//!
//!     [[expert]]
//!     name = "scientist"
//!     model = "models/gemma-3-270m-q4_k_m.gguf"
//!     prefix = "A scientific fact about the sea.\n\n"
//!     "#,
//!     ".",
//! )?;
//! let mood = Mood::load(recipe, Options::default())?;
//! let mut session = mood.session();
//! let out = session.generate("The ocean", &Params::new().weights([0.7, 0.3]).max_tokens(40))?;
//! println!("{}", out.text);
//! # Ok(())
//! # }
//! ```
//!
//! Everything here returns [`crate::Error`]. Nothing reads environment variables, changes
//! process-wide settings or writes files unless asked: llama.cpp's log is left as llama.cpp
//! sets it ([`silence_llama_log`] silences it), and `auto`'s strategy measurements stay in memory
//! unless [`Options::strategy_cache`] names a file.

mod params;
mod recipe;
mod session;
mod steps;

pub use params::Params;
pub use session::{CancelHandle, Chunk, Chunks, Session};
pub use steps::Steps;

use crate::error::{Error, Result};
use crate::pipeline::engine::{Engine, LoadOptions, SessionOptions, Strategy};
use crate::pipeline::recipe::Recipe;
use std::path::PathBuf;
use std::sync::Arc;

/// How models are loaded and sessions run. `Default` gives every core to llama.cpp, a
/// context of 4096 tokens per policy (or the models' trained context, if less), the
/// strategy measured on this machine, no GPU offload and no RPC servers.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// llama.cpp threads across all policies; `None`: one per core.
    pub threads: Option<usize>,
    /// Context length per policy (prompt and generated tokens); 0: the default.
    pub ctx_size: u32,
    /// How policies are laid out over llama.cpp contexts (see [`Strategy`]).
    pub strategy: Strategy,
    /// Layers offloaded to a GPU for policies whose recipe entry does not say.
    pub n_gpu_layers: u32,
    /// The GPU that holds the models when there are several.
    pub main_gpu: i32,
    /// llama.cpp RPC servers (`HOST:PORT`) for policies whose recipe entry does not say.
    pub rpc: Vec<String>,
    /// A GGUF model of the policies' vocabulary that drafts tokens for speculation.
    pub draft_model: Option<PathBuf>,
    /// A file in which `auto` keeps the strategy it measured for each setup, read before
    /// measuring; `None`: measured once per [`Mood`], kept in memory.
    pub strategy_cache: Option<PathBuf>,
}

impl Options {
    /// Options from a JSON object with any of the keys `threads`, `ctx_size`, `strategy`
    /// (`auto`, `threads`, `batched`, `mixed`), `n_gpu_layers`, `main_gpu`, `rpc` (an array of
    /// `HOST:PORT`), `draft_model` and `strategy_cache` (paths); others are refused. For the
    /// C and Python bindings, which take options as JSON.
    pub fn from_json(json: &str) -> Result<Self> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Keys {
            threads: Option<usize>,
            ctx_size: Option<u32>,
            strategy: Option<String>,
            n_gpu_layers: Option<u32>,
            main_gpu: Option<i32>,
            rpc: Option<Vec<String>>,
            draft_model: Option<PathBuf>,
            strategy_cache: Option<PathBuf>,
        }
        let parsed = (|| {
            let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                crate::error::invalid("options", format!("are not valid JSON: {e}"))
            })?;
            let k: Keys = crate::pipeline::settings::from_json(value)?;
            let strategy = match k.strategy {
                Some(s) => s
                    .parse()
                    .map_err(|e: anyhow::Error| crate::error::invalid("strategy", e.to_string()))?,
                None => Strategy::Auto,
            };
            anyhow::Ok(Options {
                threads: k.threads,
                ctx_size: k.ctx_size.unwrap_or(0),
                strategy,
                n_gpu_layers: k.n_gpu_layers.unwrap_or(0),
                main_gpu: k.main_gpu.unwrap_or(0),
                rpc: k.rpc.unwrap_or_default(),
                draft_model: k.draft_model,
                strategy_cache: k.strategy_cache,
            })
        })();
        parsed.map_err(Error::from_chain)
    }
}

/// A recipe's models, loaded once (one copy of the weights per file), ready to open
/// sessions. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Mood {
    engine: Arc<Engine>,
    recipe: Recipe,
    options: SessionOptions,
}

impl Mood {
    /// Loads every model and adapter the recipe names, checks that their vocabularies can
    /// be combined, and checks the recipe's weights.
    pub fn load(mut recipe: Recipe, options: Options) -> Result<Self> {
        recipe
            .apply_weight_rules(false)
            .and_then(|()| recipe.terms())
            .map_err(recipe::recipe_error)?;
        Self::load_inner(recipe, options).map_err(Error::from_chain)
    }

    fn load_inner(recipe: Recipe, options: Options) -> anyhow::Result<Self> {
        let session = session_options(&options)?;
        let policies: Vec<_> = recipe.policies().cloned().collect();
        let load = LoadOptions {
            n_gpu_layers: options.n_gpu_layers,
            main_gpu: options.main_gpu,
            rpc: options.rpc.clone(),
            // The library combines over tokens: policies must share a vocabulary.
            unit: crate::pipeline::bytes::Unit::Tokens,
        };
        let mut engine = Engine::load(&policies, load)?;
        if let Some(path) = &options.draft_model {
            engine.load_draft_model(path, options.n_gpu_layers)?;
        }
        engine.set_strategy_cache(options.strategy_cache.clone(), false);
        Ok(Self { engine: Arc::new(engine), recipe, options: session })
    }

    /// The recipe as loaded (its weights and divergence are each call's defaults).
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// The policies' names, reference first, in the order of per-policy results.
    pub fn policy_names(&self) -> Vec<&str> {
        self.recipe.policies().map(|p| p.name.as_str()).collect()
    }

    /// A new session: llama.cpp contexts opened with its first generation and kept, with
    /// their caches, until it is dropped.
    pub fn session(&self) -> Session {
        Session::new(Arc::clone(&self.engine), self.recipe.clone(), self.options)
    }

    /// Generates once on a session of its own (see [`Session::generate`]).
    pub fn generate(&self, prompt: &str, params: &Params) -> Result<crate::Generation> {
        self.session().generate(prompt, params)
    }

    /// Params from a JSON object of settings, the keys of batch lines and HTTP bodies
    /// (`weights` as an array or by expert name, `divergence`, `max_tokens`, `temperature`,
    /// `seed`, `stop`, `grammar`, `json_schema`, …); unknown keys are refused.
    pub fn params_from_json(&self, json: &str) -> Result<Params> {
        let parsed = (|| {
            let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                crate::error::invalid("settings", format!("are not valid JSON: {e}"))
            })?;
            if !value.is_object() {
                return Err(crate::error::invalid("settings", "must be a JSON object"));
            }
            let overrides: crate::pipeline::settings::Overrides =
                crate::pipeline::settings::from_json(value)?;
            let mut recipe = self.recipe.clone();
            let mut settings = crate::Settings::default();
            overrides.apply(&mut recipe, &mut settings, false)?;
            recipe.terms()?;
            anyhow::Ok(Params {
                weights: Some(recipe.weights),
                divergence: Some(recipe.divergence),
                normalize_weights: false,
                settings,
            })
        })();
        parsed.map_err(Error::from_chain)
    }

    /// Weights from `(expert name, weight)` pairs; experts not named keep the recipe's.
    pub fn weights_by_name(&self, named: &[(&str, f64)]) -> Result<Vec<f64>> {
        let mut weights = self.recipe.weights.clone();
        for (name, w) in named {
            let Some(i) = self.recipe.experts.iter().position(|e| e.name == *name) else {
                return Err(crate::error::SettingError::new(
                    "weights",
                    format!("names '{name}', which is not an expert of the recipe"),
                )
                .into());
            };
            weights[i] = *w;
        }
        Ok(weights)
    }
}

/// The engine's session options from the public ones.
fn session_options(options: &Options) -> anyhow::Result<SessionOptions> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let most = 4 * cores;
    if let Some(n) = options.threads.filter(|&n| n == 0 || n > most) {
        return Err(crate::error::invalid(
            "threads",
            format!("is {n} but must be from 1 to {most} (4 × the {cores} cores this machine has)"),
        ));
    }
    let ctx_size = options.ctx_size;
    if ctx_size != 0 && ctx_size < crate::pipeline::engine::MIN_CTX {
        return Err(crate::error::invalid(
            "ctx_size",
            format!("must be at least {} tokens, got {ctx_size}", crate::pipeline::engine::MIN_CTX),
        ));
    }
    Ok(SessionOptions {
        threads: options.threads.unwrap_or(cores),
        ctx_size,
        strategy: options.strategy,
    })
}

/// Silences llama.cpp's own log lines (model loading, context creation) for the whole
/// process; llama.cpp prints them to standard error unless told otherwise. The library never
/// calls this itself; the `mood` binary does.
pub fn silence_llama_log() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
}
