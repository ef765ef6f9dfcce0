//! Applications built on the pipeline: each turns its inputs into decoder requests and its
//! events into outputs.

pub mod batch;
pub mod bench;
pub mod chat;
pub mod openai;
pub mod plot;
pub mod score;
pub mod server;
pub mod shard;
pub mod sweep;
