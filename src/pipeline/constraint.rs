//! Constraints on what may be generated: a grammar (GBNF), a JSON schema, or any JSON object.
//!
//! Pure Rust. A [`ConstraintSpec`] is what a user asks for; [`ConstraintSpec::check`] bounds
//! it (size, nesting, repetition counts) before anything compiles it, so that no request can
//! make the grammar compiler exhaust the stack or the memory. The engine compiles a spec
//! into something that implements [`Constraint`] (llama.cpp's grammar sampler); the sampler
//! asks it which candidate tokens are allowed and tells it which token was chosen.
//!
//! A constraint masks the *combined* MOD distribution: disallowed tokens get probability 0
//! and the rest is renormalised (greedy decoding takes the argmax of what is allowed).

use crate::error::invalid;
use anyhow::Result;
use serde_json::Value;

/// The largest grammar or JSON schema accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 64 << 10;
/// The deepest nesting accepted: JSON schema levels, grammar parentheses.
pub const MAX_NESTING: usize = 32;
/// The largest repetition count `{m,n}` in a grammar, and the largest sum of them (each one
/// is expanded into that many symbols).
pub const MAX_REPETITION: u64 = 4096;
pub const MAX_REPETITION_TOTAL: u64 = 65_536;

/// A constraint a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// A grammar in llama.cpp's GBNF, with a `root` rule.
    Grammar(String),
    /// A JSON schema; the output is JSON valid against it.
    JsonSchema(Value),
    /// Any JSON object.
    JsonObject,
}

impl ConstraintSpec {
    /// The setting it came from, for messages.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Grammar(_) => "grammar",
            Self::JsonSchema(_) | Self::JsonObject => "json_schema",
        }
    }

    /// Checks the bounds above; the error names the setting.
    pub fn check(&self) -> Result<()> {
        match self {
            Self::Grammar(g) => check_grammar(g).map_err(|e| invalid("grammar", e)),
            Self::JsonSchema(schema) => {
                let bytes = schema.to_string().len();
                if bytes > MAX_SPEC_BYTES {
                    return Err(invalid(
                        "json_schema",
                        format!("is {bytes} bytes; at most {MAX_SPEC_BYTES} are accepted"),
                    ));
                }
                if !(schema.is_object() || schema.is_boolean()) {
                    return Err(invalid("json_schema", "must be a JSON object (a schema)"));
                }
                let depth = json_depth(schema);
                if depth > MAX_NESTING {
                    return Err(invalid(
                        "json_schema",
                        format!("nests {depth} levels deep; at most {MAX_NESTING}"),
                    ));
                }
                Ok(())
            }
            Self::JsonObject => Ok(()),
        }
    }
}

/// A compiled constraint, as the sampler uses it.
pub trait Constraint {
    /// Sets to −∞ the score of every candidate `(token, score)` that may not come next.
    fn filter(&mut self, candidates: &mut [(u32, f32)]);
    /// Records `token` as generated; the next [`Constraint::filter`] continues after it.
    fn accept(&mut self, token: u32) -> Result<()>;
    /// Whether each of the tokens `0..n` may come next (`out[v]`).
    fn allowed(&mut self, n: usize, out: &mut Vec<bool>) {
        let mut all: Vec<(u32, f32)> = (0..n as u32).map(|v| (v, 0.0)).collect();
        self.filter(&mut all);
        out.clear();
        out.extend(all.iter().map(|c| c.1.is_finite()));
    }
}

/// Nesting depth of a JSON value (a scalar is 0).
fn json_depth(v: &Value) -> usize {
    // Iterative, so that a hostile document cannot exhaust the stack here either.
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// Checks a GBNF grammar's size, parenthesis nesting and repetition counts, skipping quoted
/// literals, character classes and comments (where braces and parentheses mean nothing).
fn check_grammar(g: &str) -> std::result::Result<(), String> {
    if g.len() > MAX_SPEC_BYTES {
        return Err(format!("is {} bytes; at most {MAX_SPEC_BYTES} are accepted", g.len()));
    }
    if g.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let bytes = g.as_bytes();
    let (mut depth, mut total, mut i) = (0usize, 0u64, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'[' => {
                let close = if bytes[i] == b'"' { b'"' } else { b']' };
                i += 1;
                while i < bytes.len() && bytes[i] != close {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!("nests parentheses deeper than {MAX_NESTING}"));
                }
            }
            b')' => depth = depth.saturating_sub(1),
            b'{' => {
                let end = g[i..].find('}').map_or(bytes.len(), |e| i + e);
                for n in g[i + 1..end].split(',') {
                    let n = n.trim();
                    if n.is_empty() {
                        continue;
                    }
                    let count: u64 = n.parse().map_err(|_| {
                        format!("has a repetition count that is not a number: {{{n}}}")
                    })?;
                    if count > MAX_REPETITION {
                        return Err(format!(
                            "repeats {count} times; repetition counts are at most {MAX_REPETITION}"
                        ));
                    }
                    total += count;
                }
                if total > MAX_REPETITION_TOTAL {
                    return Err(format!(
                        "has repetition counts summing to over {MAX_REPETITION_TOTAL}"
                    ));
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(spec: ConstraintSpec, want: &str) {
        let e = spec.check().unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }

    #[test]
    fn ordinary_grammars_and_schemas_pass() {
        let g = r#"root ::= "{" ws ( "a" | [}{(] ){2,8} "}" # a {brace} in a comment
                   ws ::= [ \t\n]*"#;
        ConstraintSpec::Grammar(g.into()).check().unwrap();
        let s = json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}});
        ConstraintSpec::JsonSchema(s).check().unwrap();
        ConstraintSpec::JsonSchema(json!(true)).check().unwrap();
    }

    #[test]
    fn hostile_grammars_and_schemas_are_refused() {
        refused(ConstraintSpec::Grammar("root ::= \"a\"{99999}".into()), "repeats 99999");
        let many = "root ::= ".to_string() + &"\"a\"{4000} ".repeat(20);
        refused(ConstraintSpec::Grammar(many), "summing");
        refused(ConstraintSpec::Grammar("root ::= \"a\"{x}".into()), "not a number");
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100));
        refused(ConstraintSpec::Grammar(deep), "deeper");
        refused(ConstraintSpec::Grammar("x".repeat(MAX_SPEC_BYTES + 1)), "bytes");
        refused(ConstraintSpec::Grammar("root ::= \"\0\"".into()), "NUL");
        let mut s = json!({"type": "string"});
        for _ in 0..40 {
            s = json!({"type": "array", "items": s});
        }
        refused(ConstraintSpec::JsonSchema(s), "levels deep");
        refused(ConstraintSpec::JsonSchema(json!("object")), "JSON object");
    }

    #[test]
    fn depth_counts_levels() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({"a": [1, {"b": 2}]})), 3);
    }
}
