//! The MOD pipeline: recipe → engine → combine → sample → decode (see the crate documentation).
//! The math modules ([`divergence`], [`combine`], [`bytes`], [`sample`], [`constraint`], [`logprobs`],
//! [`text`], [`recipe`]) know nothing of llama.cpp and are tested and benchmarked alone.

pub mod bytes;
pub mod combine;
pub mod constraint;
pub mod decode;
pub mod divergence;
pub mod draft;
pub mod engine;
pub mod logprobs;
pub mod recipe;
pub mod sample;
pub mod settings;
pub mod text;
