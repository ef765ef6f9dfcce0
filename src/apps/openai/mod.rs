//! OpenAI's shapes: request bodies of `/v1/completions` and `/v1/chat/completions` validated
//! into decoder requests, and answers (whole, streamed, usage, log-probabilities) written in
//! OpenAI's JSON. The server speaks them over HTTP; batch files carry them line by line.

pub mod answer;
pub mod error;
pub mod fields;
pub mod request;
