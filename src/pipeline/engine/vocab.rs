//! Vocabulary compatibility: may two models' next-token distributions be combined?
//!
//! The rule is llama.cpp's for speculative decoding (`docs/mod.md` §2): same vocabulary type,
//! same BOS/EOS handling, sizes within 128 of each other, and identical token text for every
//! id in the common range except the first few control ids. Distributions are then combined
//! over the common range only.

use anyhow::{bail, Result};

/// Token ids below this are control tokens that models may set differently.
pub const CHECK_START_ID: usize = 5;
/// The largest vocabulary size difference two combinable models may have.
pub const MAX_SIZE_DIFFERENCE: usize = 128;

/// What the check needs to know about one model's vocabulary.
pub trait VocabView {
    /// The file the vocabulary comes from, for messages.
    fn origin(&self) -> String;
    /// The tokenizer kind (SPM, BPE, …).
    fn kind(&self) -> String;
    fn n_tokens(&self) -> usize;
    fn add_bos(&self) -> bool;
    fn bos(&self) -> i32;
    fn add_eos(&self) -> bool;
    fn eos(&self) -> i32;
    /// The raw text of token `id` as stored in the model.
    fn text(&self, id: usize) -> Vec<u8>;
}

/// Checks that `a` and `b` can be combined; the error is one line naming both files.
pub fn check_compatible(a: &dyn VocabView, b: &dyn VocabView) -> Result<()> {
    let (fa, fb) = (a.origin(), b.origin());
    let pre = format!("models {fa} and {fb} cannot be combined");
    if a.kind() != b.kind() {
        bail!("{pre}: vocabulary types differ ({} vs {})", a.kind(), b.kind());
    }
    if a.add_bos() != b.add_bos() || (a.add_bos() && a.bos() != b.bos()) {
        bail!("{pre}: BOS tokens differ (id {} vs {})", a.bos(), b.bos());
    }
    if a.add_eos() != b.add_eos() || (a.add_eos() && a.eos() != b.eos()) {
        bail!("{pre}: EOS tokens differ (id {} vs {})", a.eos(), b.eos());
    }
    let (na, nb) = (a.n_tokens(), b.n_tokens());
    if na.abs_diff(nb) > MAX_SIZE_DIFFERENCE {
        bail!("{pre}: vocabulary sizes {na} and {nb} differ by more than {MAX_SIZE_DIFFERENCE}");
    }
    for id in CHECK_START_ID..na.min(nb) {
        let (ta, tb) = (a.text(id), b.text(id));
        if ta != tb {
            bail!(
                "{pre}: token {id} is {:?} in the first and {:?} in the second",
                String::from_utf8_lossy(&ta),
                String::from_utf8_lossy(&tb)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Fake {
        name: &'static str,
        kind: &'static str,
        tokens: Vec<String>,
        bos: i32,
        eos: i32,
    }

    impl VocabView for Fake {
        fn origin(&self) -> String {
            self.name.into()
        }
        fn kind(&self) -> String {
            self.kind.into()
        }
        fn n_tokens(&self) -> usize {
            self.tokens.len()
        }
        fn add_bos(&self) -> bool {
            true
        }
        fn bos(&self) -> i32 {
            self.bos
        }
        fn add_eos(&self) -> bool {
            false
        }
        fn eos(&self) -> i32 {
            self.eos
        }
        fn text(&self, id: usize) -> Vec<u8> {
            self.tokens[id].clone().into_bytes()
        }
    }

    fn fake(name: &'static str, n: usize) -> Fake {
        Fake {
            name,
            kind: "SPM",
            tokens: (0..n).map(|i| format!("t{i}")).collect(),
            bos: 2,
            eos: 1,
        }
    }

    #[test]
    fn identical_and_slightly_larger_vocabularies_pass() {
        assert!(check_compatible(&fake("a", 300), &fake("b", 300)).is_ok());
        assert!(check_compatible(&fake("a", 300), &fake("b", 428)).is_ok());
        // Control ids below CHECK_START_ID may differ.
        let mut b = fake("b", 300);
        b.tokens[3] = "<ctrl>".into();
        assert!(check_compatible(&fake("a", 300), &b).is_ok());
    }

    #[test]
    fn each_rule_is_enforced_with_a_named_message() {
        let a = fake("a.gguf", 300);
        let err = |b: &Fake| check_compatible(&a, b).unwrap_err().to_string();
        let e = err(&fake("b.gguf", 429));
        assert!(
            e.contains("a.gguf") && e.contains("b.gguf") && e.contains("300") && e.contains("429"),
            "{e}"
        );
        let mut b = fake("b.gguf", 300);
        b.tokens[42] = "hello".into();
        let e = err(&b);
        assert!(e.contains("token 42") && e.contains("\"t42\"") && e.contains("\"hello\""), "{e}");
        let b = Fake { kind: "BPE", ..fake("b.gguf", 300) };
        assert!(err(&b).contains("types differ"));
        let b = Fake { bos: 1, ..fake("b.gguf", 300) };
        assert!(err(&b).contains("BOS"));
    }
}
