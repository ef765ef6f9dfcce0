//! mood: multi-objective decoding (MOD) on quantized GGUF models through llama.cpp.
//!
//! Two layers, as the source tree shows them:
//!
//! * [`pipeline`]: what one MOD generation is made of, stage by stage — [`pipeline::recipe`]
//!   (which policies, which weights) → [`pipeline::engine`] (llama.cpp models, contexts and
//!   worker threads) → [`pipeline::combine`] (the MOD distribution; pure math, with
//!   [`pipeline::divergence`]) → [`pipeline::sample`] (the next token) →
//!   [`pipeline::decode`] (the one decoding loop, which feeds the token back to every policy,
//!   for one request or many side by side), with [`pipeline::text`] turning token bytes into
//!   printable text.
//! * [`apps`]: what is built on it — JSONL batches, implicit rewards, weight sweeps and their
//!   plots, conversations, the HTTP server, and speed measurements. Each drives the decoder
//!   and knows nothing of llama.cpp.
//!
//! The mathematics every part honours is written out in `docs/mod.md`.

pub mod apps;
pub mod input;
pub mod pipeline;
