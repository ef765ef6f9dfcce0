//! MOD over bytes: policies whose vocabularies differ are combined through the byte-level
//! distributions their token-level distributions imply.
//!
//! A token-level model is a distribution over texts, hence over byte strings. [`ByteView`]
//! turns one policy into the distribution of the next byte of the text (257 outcomes: the
//! 256 bytes and the end of text), exactly, by following the tokenizations that cover the
//! text so far; the divergences of [`crate::pipeline::combine`] then apply to these 257-outcome
//! distributions unchanged, and the sampler picks a byte that every policy then receives.
//! [`ByteVocab`] holds a vocabulary as byte strings, [`Utf8`] keeps the output valid UTF-8.
//!
//! Pure Rust, no llama.cpp: the engine supplies each policy's next-token logits for the token
//! sequences a view asks for.

mod step;
mod view;
mod vocab;

pub use step::{ByteMod, Choice, StepError};
pub use view::{ByteView, Impossible, NodeId, Wanted};
pub use vocab::ByteVocab;

/// The outcome standing for the end of the text.
pub const END: usize = 256;
/// Outcomes of a next-byte distribution: 256 bytes and the end.
pub const OUTCOMES: usize = 257;

/// Default share of the text's probability that pruning may drop at each byte (see
/// [`ByteView`]).
pub const DEFAULT_TOLERANCE: f64 = 1e-3;
/// Default number of tokenizations followed per policy.
pub const DEFAULT_MAX_NODES: usize = 8;

/// What the policies' distributions are combined over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unit {
    /// Tokens where the policies share a vocabulary, bytes where they do not.
    #[default]
    Auto,
    /// Tokens (policies with different vocabularies are an error).
    Tokens,
    /// Bytes, whatever the vocabularies.
    Bytes,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Auto => "auto",
            Unit::Tokens => "tokens",
            Unit::Bytes => "bytes",
        }
    }

    /// The unit named `name` (`auto`, `tokens`, `bytes`).
    pub fn parse(name: &str) -> Option<Self> {
        [Unit::Auto, Unit::Tokens, Unit::Bytes].into_iter().find(|u| u.name() == name)
    }
}

/// Which bytes may come next for the text to stay valid UTF-8, and whether it may end here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Utf8 {
    /// Continuation bytes still due, and the range the next one must lie in.
    due: u8,
    lo: u8,
    hi: u8,
}

impl Utf8 {
    /// Whether `outcome` (a byte, or [`END`]) keeps the text a valid UTF-8 prefix (for the
    /// end: a whole text).
    pub fn allows(&self, outcome: usize) -> bool {
        if self.due > 0 {
            return outcome < 256 && (self.lo..=self.hi).contains(&(outcome as u8));
        }
        matches!(outcome, 0x00..=0x7F | 0xC2..=0xF4 | END)
    }

    /// Takes `byte` (which [`Utf8::allows`]).
    pub fn push(&mut self, byte: u8) {
        *self = if self.due > 0 {
            Self { due: self.due - 1, lo: 0x80, hi: 0xBF }
        } else {
            let (due, lo, hi) = match byte {
                0xC2..=0xDF => (1, 0x80, 0xBF),
                0xE0 => (2, 0xA0, 0xBF),
                0xED => (2, 0x80, 0x9F),
                0xE1..=0xEF => (2, 0x80, 0xBF),
                0xF0 => (3, 0x90, 0xBF),
                0xF4 => (3, 0x80, 0x8F),
                0xF1..=0xF3 => (3, 0x80, 0xBF),
                _ => (0, 0, 0),
            };
            Self { due, lo, hi }
        };
    }
}

#[cfg(test)]
mod tests;
