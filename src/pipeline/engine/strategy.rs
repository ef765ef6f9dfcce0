//! How a session lays policies out over llama.cpp contexts, and how `auto` chooses.
//!
//! * `threads`: a context per policy; contexts decode concurrently on worker threads.
//! * `batched`: a context per model file (and adapter), one sequence per policy and lane,
//!   one batch per step.
//! * `mixed`: `batched`, and for requests where the identity holds (reverse KL, the lane's
//!   policies in one context, logits linear in the hidden state, no per-policy distribution
//!   needed) the output layer runs once per lane on the weighted sum of the policies' final
//!   hidden states instead of once per policy (see `vendor/README.md`).
//!
//! Which is fastest depends on the hardware (the CPU's cores and instruction sets, a GPU),
//! the model and the number of policies and lanes, so `auto` measures: the first time a
//! combination is met it times a few steps of each candidate and keeps the winner (in
//! memory, and in a cache file when the caller names one: see `tuning`).

use anyhow::{bail, Result};

/// How policies are laid out over llama.cpp contexts (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// The fastest of the others on this machine, measured once and remembered.
    #[default]
    Auto,
    Threads,
    Batched,
    Mixed,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Threads => "threads",
            Strategy::Batched => "batched",
            Strategy::Mixed => "mixed",
        }
    }

    /// Whether policies of one model file share a context.
    pub fn batches(self) -> bool {
        matches!(self, Strategy::Batched | Strategy::Mixed)
    }
}

impl std::str::FromStr for Strategy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Strategy::Auto),
            "threads" => Ok(Strategy::Threads),
            "batched" => Ok(Strategy::Batched),
            "mixed" => Ok(Strategy::Mixed),
            _ => bail!("unknown strategy '{s}'; available: auto, threads, batched, mixed"),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Total llama.cpp threads across all policies.
    pub threads: usize,
    /// Context length of each policy (prompt + generated tokens); 0 = the engine's default
    /// (see [`super::Engine::context_size`]).
    pub ctx_size: u32,
    pub strategy: Strategy,
}
