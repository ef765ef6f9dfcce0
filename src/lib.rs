//! mood: multi-objective decoding (MOD) on quantized GGUF models through llama.cpp.
//!
//! The pipeline of DESIGN.md, one module per stage:
//! [`recipe`] (which policies, which weights) → [`engine`] (llama.cpp models, contexts and
//! worker threads) → [`combine`] (the MOD distribution; pure math) → [`sample`] (the next
//! token) → [`decode`] (the loop that feeds it back to every policy), with [`text`] turning
//! token bytes into printable text. [`divergence`] names the regulariser; [`bench`] measures
//! MOD against single models; [`score`] computes implicit rewards; [`batch`] decodes JSONL files,
//! several prompts at once through [`parallel`]; [`sweep`] and [`plot`] trace Pareto fronts
//! over the weights; [`chat`] holds a conversation; [`server`] serves
//! an OpenAI-compatible API.

pub mod batch;
pub mod bench;
pub mod chat;
pub mod combine;
pub mod decode;
pub mod divergence;
pub mod engine;
pub mod parallel;
pub mod plot;
pub mod recipe;
pub mod sample;
pub mod score;
pub mod server;
pub mod sweep;
pub mod text;
