//! Grammars compiled by llama.cpp: its GBNF grammar sampler (and its JSON-schema-to-grammar
//! conversion) used as mood's [`Constraint`] on the combined distribution.
//!
//! The grammar works on the first model's vocabulary; the vocabulary check guarantees that
//! every model gives the same text to every token that can be combined.

use super::Engine;
use crate::error::invalid;
use crate::pipeline::constraint::{Constraint, ConstraintSpec, MAX_SPEC_BYTES};
use anyhow::Result;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

/// A grammar in progress: which tokens may come next, given those accepted so far.
pub struct Grammar {
    sampler: LlamaSampler,
    /// Scratch: the candidates in llama.cpp's form, reused from step to step.
    data: Vec<LlamaTokenData>,
}

// SAFETY: a Grammar owns its llama.cpp sampler exclusively (nothing else points to it) and
// the sampler keeps no state tied to the thread that made it (its grammar stacks are heap
// data; the vocabulary it reads is the model's, which is Sync). Moving it to another thread
// — a server compiles a request's grammar where it parses the request and decodes it on the
// decoding thread — is therefore sound. It is not Sync: one thread uses it at a time.
unsafe impl Send for Grammar {}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grammar")
    }
}

/// Any JSON object, as a schema for llama.cpp's conversion.
const ANY_OBJECT: &str = r#"{"type": "object"}"#;

impl Engine {
    /// Compiles a constraint (checked first: see [`ConstraintSpec::check`]); the error names
    /// the setting and says what llama.cpp refused.
    pub fn grammar(&self, spec: &ConstraintSpec) -> Result<Grammar> {
        spec.check()?;
        let setting = spec.setting();
        let gbnf = match spec {
            ConstraintSpec::Grammar(g) => g.clone(),
            ConstraintSpec::JsonSchema(schema) => schema_to_gbnf(&schema.to_string())?,
            ConstraintSpec::JsonObject => schema_to_gbnf(ANY_OBJECT)?,
        };
        // The converted grammar is bounded like a user's: a schema's lengths and counts turn
        // into repetitions.
        if !matches!(spec, ConstraintSpec::Grammar(_)) {
            ConstraintSpec::Grammar(gbnf.clone()).check().map_err(|e| {
                invalid(setting, format!("gives a grammar that is too large ({e:#})"))
            })?;
        }
        if !gbnf.lines().any(|l| l.trim_start().starts_with("root")) {
            return Err(invalid(setting, "has no `root` rule (the rule generation starts from)"));
        }
        let sampler = LlamaSampler::grammar(&self.models[0].model, &gbnf, "root").map_err(|e| {
            invalid(
                setting,
                format!(
                    "could not be compiled by llama.cpp ({e}): check its syntax, that every \
                     rule it uses is defined, and that no rule is left-recursive"
                ),
            )
        })?;
        Ok(Grammar { sampler, data: Vec::new() })
    }
}

/// llama.cpp's conversion of a JSON schema into GBNF.
fn schema_to_gbnf(schema: &str) -> Result<String> {
    if schema.len() > MAX_SPEC_BYTES {
        return Err(invalid("json_schema", "is too large"));
    }
    llama_cpp_2::json_schema_to_grammar(schema).map_err(|e| {
        invalid(
            "json_schema",
            format!(
                "could not be converted to a grammar by llama.cpp ({e}); is it a valid schema?"
            ),
        )
    })
}

impl Constraint for Grammar {
    fn filter(&mut self, candidates: &mut [(u32, f32)]) {
        if candidates.is_empty() {
            return;
        }
        self.data.clear();
        self.data.extend(
            candidates.iter().map(|&(v, _)| LlamaTokenData::new(LlamaToken(v as i32), 0.0, 0.0)),
        );
        let mut array = LlamaTokenDataArray::new(std::mem::take(&mut self.data), false);
        self.sampler.apply(&mut array);
        for (c, d) in candidates.iter_mut().zip(&array.data) {
            if d.logit() == f32::NEG_INFINITY {
                c.1 = f32::NEG_INFINITY;
            }
        }
        self.data = array.data;
    }

    fn accept(&mut self, token: u32) -> Result<()> {
        self.sampler
            .try_accept(LlamaToken(token as i32))
            .map_err(|e| anyhow::anyhow!("the grammar refused token {token}: {e}"))
    }
}
