//! Applications built on the pipeline: each turns its inputs into decoder requests and its
//! events into outputs.

pub mod batch;
pub mod bench;
pub mod chat;
pub mod openai;
#[cfg(feature = "plot")]
pub mod plot;
pub mod records;
pub mod score;
#[cfg(feature = "server")]
pub mod server;
pub mod shard;
pub mod sweep;
