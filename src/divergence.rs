//! The regulariser f that MOD combines under (DESIGN.md §1), by its command-line name.
//!
//! Pure Rust, no FFI. This version implements reverse KL, the default, which accepts any real
//! weights and has a closed form (see [`crate::combine`]).

use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;

/// An f-divergence that MOD can combine policies under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Divergence {
    /// f(x) = x log x; p ∝ π_ref^(1−S) · Π π_i^(w_i).
    #[default]
    ReverseKl,
}

impl Divergence {
    /// The name used on the command line and in recipes.
    pub fn name(self) -> &'static str {
        match self {
            Divergence::ReverseKl => "reverse-kl",
        }
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Divergence {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "reverse-kl" | "rkl" | "kl" => Ok(Divergence::ReverseKl),
            other => bail!("unknown divergence '{other}'; available: reverse-kl"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        let d: Divergence = "reverse-kl".parse().unwrap();
        assert_eq!(d, Divergence::ReverseKl);
        assert_eq!(d.to_string().parse::<Divergence>().unwrap(), d);
        let e = "hellinger".parse::<Divergence>().unwrap_err().to_string();
        assert!(e.contains("hellinger") && e.contains("reverse-kl"), "{e}");
    }
}
