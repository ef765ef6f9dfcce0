//! mood: multi-objective decoding (MOD) on quantized GGUF models through llama.cpp.
//!
//! A reference policy and expert policies (GGUF models, prompted or with LoRA adapters) run
//! side by side; at every step their next-token distributions are combined for the chosen
//! f-divergence and weights, one token is picked, and every policy receives it. For reverse
//! KL the combination has a closed form:
//! `log p(v) = (1 − S)·log π_ref(v) + Σ_i w_i·log π_i(v) − log Z` with `S = Σ_i w_i`.
//!
//! ```no_run
//! use mood::{Mood, Options, Params, Recipe};
//!
//! # fn main() -> mood::Result<()> {
//! let recipe = Recipe::from_file("models/demo.toml")?;     // a poet and a scientist
//! let mood = Mood::load(recipe, Options::default())?;      // one copy of each model file
//! let mut session = mood.session();
//! for weights in [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]] {
//!     let out = session.generate("The ocean", &Params::new().weights(weights).max_tokens(32))?;
//!     println!("{weights:?}: {}", out.text);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The public API is what this page lists: [`Mood`] (a recipe's models, loaded),
//! [`Session`] (contexts and the decoding loop: [`Session::generate`],
//! [`Session::generate_streaming`], [`Session::stream`], [`Session::chat`],
//! [`Session::generate_many`], [`Session::score`], [`Session::steps`] for combinations of
//! one's own), [`Params`] per call, and [`Error`].
//!
//! The source is laid out as the pipeline: `pipeline` (recipe → engine → combine →
//! sample → decode; the math modules know nothing of llama.cpp), `apps` (batches, sweeps,
//! the server, built on the decoder), `api` (this page) and, in the binary, the command
//! line. `pipeline`, `apps` and `input` are public for the `mood` binary and the tests;
//! they are not part of the documented API.

mod api;
pub mod error;

#[doc(hidden)]
pub mod apps;
#[doc(hidden)]
pub mod input;
#[doc(hidden)]
pub mod output;
#[doc(hidden)]
pub mod pipeline;

pub use api::{
    silence_llama_log, CancelHandle, Chunk, Chunks, Mood, Options, Params, Session, Steps,
};
pub use apps::score::Scores;
pub use error::{Error, Result, SettingError};
pub use pipeline::constraint::ConstraintSpec;
pub use pipeline::decode::{FinishReason, Flow, Generation, Timings};
pub use pipeline::divergence::Divergence;
pub use pipeline::engine::chat::Message;
pub use pipeline::engine::Strategy;
pub use pipeline::logprobs::{Alternative, TokenLogprob};
pub use pipeline::recipe::{Policy, Recipe};
pub use pipeline::sample::SamplingParams;
pub use pipeline::settings::Settings;
