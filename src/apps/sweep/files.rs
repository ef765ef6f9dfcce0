//! `generations.jsonl`: every generation of a sweep, one JSON object per line — weights,
//! prompt id and text, the output's text and tokens, each policy's log-likelihood, each
//! expert's implicit reward, and the settings it was made with. Lines are appended and flushed as generations finish,
//! so a crash or a kill loses nothing already written; a resumed sweep reads the file back
//! (every line bounded in length), cuts off a last line that a kill left incomplete, and
//! refuses records made with other settings.

use super::input::{read_lines, Prompt, MAX_LINE_BYTES};
use super::stats::Sample;
use crate::apps::score::Scores;
use crate::pipeline::decode::Generation;
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::Settings;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;

/// The name of the generations file in the output folder.
pub const GENERATIONS: &str = "generations.jsonl";

/// What the generations of a sweep are made with. Every record carries it; a resumed sweep
/// must have the same.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub divergence: String,
    /// β of the implicit rewards.
    pub beta: f64,
    pub experts: Vec<String>,
    /// The decoding settings: max_tokens, the sampler's, stop strings, plausibility.
    pub settings: Value,
}

impl Config {
    pub fn new(recipe: &Recipe, settings: &Settings, beta: f64) -> Self {
        let s = &settings.sampling;
        Self {
            divergence: recipe.divergence.name(),
            beta,
            experts: recipe.experts.iter().map(|e| e.name.clone()).collect(),
            settings: json!({
                "max_tokens": settings.max_tokens,
                "temperature": s.temperature,
                "top_k": s.top_k,
                "top_p": s.top_p,
                "min_p": s.min_p,
                "repeat_penalty": s.repeat_penalty,
                "repeat_last_n": s.repeat_last_n,
                "seed": s.seed,
                "stop": settings.stops,
                "plausibility": settings.plausibility,
            }),
        }
    }

    fn fields(&self) -> [(&'static str, Value); 4] {
        [
            ("divergence", json!(self.divergence)),
            ("beta", json!(self.beta)),
            ("experts", json!(self.experts)),
            ("settings", self.settings.clone()),
        ]
    }
}

/// The record of one finished generation: the weights and prompt, the output, each
/// policy's log-likelihood and each expert's implicit reward, the configuration and the
/// generation's timings.
pub fn record(
    config: &Config,
    weights: &[f64],
    prompt: &Prompt,
    g: &Generation,
    scores: &Scores,
) -> Value {
    let mut obj = head(weights, prompt);
    obj.insert("text".into(), json!(g.text));
    obj.insert("tokens".into(), json!(g.tokens));
    obj.insert("completion_tokens".into(), json!(g.tokens.len()));
    obj.insert("finish_reason".into(), json!(g.finish_reason));
    obj.insert("seed".into(), json!(g.seed));
    obj.insert("log_likelihood".into(), Value::Object(scores.log_likelihood.clone()));
    obj.insert("rewards".into(), Value::Object(scores.rewards.clone()));
    obj.extend(config.fields().map(|(k, v)| (k.to_string(), v)));
    obj.insert("timings".into(), json!(g.timings));
    Value::Object(obj)
}

/// The record of a generation that failed.
pub fn error_record(config: &Config, weights: &[f64], prompt: &Prompt, error: &str) -> Value {
    let mut obj = head(weights, prompt);
    obj.insert("error".into(), json!(error));
    obj.extend(config.fields().map(|(k, v)| (k.to_string(), v)));
    Value::Object(obj)
}

fn head(weights: &[f64], prompt: &Prompt) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("weights".into(), json!(weights));
    obj.insert("id".into(), prompt.id.clone());
    obj.insert("prompt".into(), json!(prompt.text));
    obj
}

/// Writes one record as a line and flushes it.
pub fn append(out: &mut dyn Write, record: &Value) -> Result<()> {
    let mut line = record.to_string();
    line.push('\n');
    out.write_all(line.as_bytes()).with_context(|| format!("cannot write {GENERATIONS}"))?;
    out.flush().with_context(|| format!("cannot write {GENERATIONS}"))
}

/// A record read back from the generations file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Its line number.
    pub line: usize,
    pub weights: Vec<f64>,
    /// The prompt's id and text.
    pub id: Value,
    pub prompt: String,
    /// What it adds to the table, or the generation's error.
    pub outcome: std::result::Result<Sample, String>,
}

/// Reads the generations file at `path` (none is an empty list). Every record must have
/// been made with `config`. A last line without a newline — a write a kill cut short — is
/// cut off the file; the number of bytes cut is returned with the records.
pub fn read_generations(path: &Path, config: &Config) -> Result<(Vec<Stored>, u64)> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    let mut stored = Vec::new();
    let complete = read_lines(path, MAX_LINE_BYTES, &mut |n, bytes, ended| {
        if ended {
            stored.push(
                parse_record(bytes, config)
                    .map_err(|e| anyhow!("{} line {n}: {e}", path.display()))?,
            );
            if let Some(s) = stored.last_mut() {
                s.line = n;
            }
        }
        Ok(())
    })?;
    if complete < len {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {} to repair it", path.display()))?;
        f.set_len(complete).with_context(|| format!("cannot truncate {}", path.display()))?;
    }
    Ok((stored, len - complete))
}

pub(super) fn parse_record(bytes: &[u8], config: &Config) -> Result<Stored> {
    let fix = "move the file away or write the sweep to another folder";
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| anyhow!("invalid JSON ({e}); {fix}"))?;
    let Value::Object(obj) = v else { bail!("not a JSON object; {fix}") };
    for (key, want) in config.fields() {
        let got = obj.get(key).unwrap_or(&Value::Null);
        if let Some(what) = difference(key, got, &want) {
            bail!(
                "was made with {what}: resume with the same recipe and settings, or write the \
                 sweep to another folder"
            );
        }
    }
    parse_fields(&obj, config).map_err(|e| anyhow!("{e}; {fix}"))
}

fn parse_fields(obj: &Map<String, Value>, config: &Config) -> Result<Stored> {
    let weights: Vec<f64> = obj
        .get("weights")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
        .filter(|w| w.len() == config.experts.len())
        .ok_or_else(|| anyhow!("\"weights\" must be {} numbers", config.experts.len()))?;
    let id = match obj.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => bail!("\"id\" must be a string or a number"),
    };
    let prompt = obj
        .get("prompt")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("\"prompt\" must be a string"))?
        .to_string();
    let outcome = if let Some(e) = obj.get("error") {
        Err(e.as_str().unwrap_or("an error").to_string())
    } else {
        let tokens = obj
            .get("tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("\"tokens\" must be an array"))?
            .len();
        let rewards = obj.get("rewards").and_then(Value::as_object);
        let rewards: Vec<f64> = config
            .experts
            .iter()
            .map(|name| {
                rewards
                    .and_then(|r| r.get(name))
                    .and_then(Value::as_f64)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| anyhow!("\"rewards\" needs a number for expert '{name}'"))
            })
            .collect::<Result<_>>()?;
        Ok(Sample { rewards, tokens })
    };
    Ok(Stored { line: 0, weights, id, prompt, outcome })
}

/// Where `got` (a record's) and `want` (this sweep's) differ, worded for a message: the
/// first differing key of an object. Numbers are equal within 1e-12 relative, as JSON's
/// last digit may not survive a round trip.
fn difference(key: &str, got: &Value, want: &Value) -> Option<String> {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w.keys().chain(g.keys()).find_map(|k| {
            let null = Value::Null;
            difference(k, g.get(k).unwrap_or(&null), w.get(k).unwrap_or(&null))
        }),
        (Value::Number(g), Value::Number(w)) => {
            let same = match (g.as_u64(), w.as_u64()) {
                (Some(a), Some(b)) => a == b,
                _ => match (g.as_f64(), w.as_f64()) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0),
                    _ => false,
                },
            };
            (!same).then(|| format!("{key} {g}, this sweep has {w}"))
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => g
            .iter()
            .zip(w)
            .find_map(|(a, b)| difference(key, a, b))
            .map(|_| format!("{key} {got}, this sweep has {want}")),
        _ if got == want => None,
        _ => Some(format!("{key} {got}, this sweep has {want}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::{FinishReason, Timings};
    use crate::pipeline::divergence::Divergence;
    use crate::pipeline::recipe::Policy;
    use crate::pipeline::sample::SamplingParams;
    use std::path::PathBuf;

    fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mood-sweep-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    fn config(max_tokens: usize) -> Config {
        let m = PathBuf::from("m.gguf");
        let policy =
            |name: &str| Policy { name: name.into(), model: m.clone(), ..Policy::default() };
        let recipe = Recipe::new(
            Divergence::default(),
            Some(policy("reference")),
            vec![policy("a"), policy("b")],
            vec![0.5, 0.5],
        )
        .unwrap();
        let settings = Settings {
            max_tokens,
            stops: vec![],
            sampling: SamplingParams::default(),
            plausibility: 1e-4,
            byte_tolerance: crate::pipeline::bytes::DEFAULT_TOLERANCE,
            constraint: None,
            logprobs: None,
            draft_max: 0,
        };
        Config::new(&recipe, &settings, 0.5)
    }

    fn generation(tokens: Vec<u32>) -> Generation {
        let timings = Timings {
            prompt_ms: 1.0,
            prompt_tokens_decoded: 5,
            decode_ms: 2.0,
            tokens_per_second: 3.0,
            forward_ms: 1.0,
            combine_ms: 0.1,
            sample_ms: 0.1,
            strategy: "threads",
            contexts: 2,
            policies: 2,
            mixed: false,
            unmixed_because: None,
            drafted: 0,
            accepted: 0,
            passes: 0,
        };
        Generation {
            text: "text".into(),
            tokens,
            finish_reason: FinishReason::Length,
            prompt_tokens: vec![],
            cached_tokens: 0,
            seed: 9,
            logprobs: vec![],
            policies: vec![],
            timings,
            bytes: None,
        }
    }

    fn scores(a: f64, b: f64) -> Scores {
        let map =
            |pairs: &[(&str, f64)]| pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        Scores {
            log_likelihood: map(&[
                ("reference", -3.0),
                ("a", -3.0 + a / 0.5),
                ("b", -3.0 + b / 0.5),
            ]),
            rewards: map(&[("a", a), ("b", b)]),
            response_tokens: 2,
        }
    }

    #[test]
    fn generations_read_back_and_a_cut_line_is_repaired() {
        let c = config(8);
        let prompt = |id: Value| Prompt { id, text: "The sea".into() };
        let mut bytes = Vec::new();
        append(
            &mut bytes,
            &record(
                &c,
                &[0.25, 0.75],
                &prompt(json!("x")),
                &generation(vec![1, 2, 3]),
                &scores(1.5, -2.0),
            ),
        )
        .unwrap();
        append(&mut bytes, &error_record(&c, &[1.0, 0.0], &prompt(json!(4)), "too long")).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(b"{\"weights\": [0.5, 0.5], \"id\": \"y\", \"te");
        let p = scratch("generations.jsonl", &bytes);
        let (stored, cut) = read_generations(&p, &c).unwrap();
        assert_eq!(cut as usize, bytes.len() - whole);
        assert_eq!(std::fs::metadata(&p).unwrap().len() as usize, whole, "the cut line is gone");
        assert_eq!(stored.len(), 2);
        assert_eq!(
            (stored[0].line, &stored[0].weights, &stored[0].id),
            (1, &vec![0.25, 0.75], &json!("x"))
        );
        assert_eq!(stored[0].outcome, Ok(Sample { rewards: vec![1.5, -2.0], tokens: 3 }));
        assert_eq!(stored[1].outcome, Err("too long".to_string()));
        // Read again: nothing more to cut; a missing file is an empty sweep.
        assert_eq!(read_generations(&p, &c).unwrap(), (stored, 0));
        assert_eq!(read_generations(&p.with_extension("none"), &c).unwrap(), (vec![], 0));
    }

    #[test]
    fn generations_of_other_settings_or_damaged_lines_are_refused() {
        let c = config(8);
        let prompt = Prompt { id: json!(1), text: "p".into() };
        let good = record(&c, &[0.5, 0.5], &prompt, &generation(vec![1]), &scores(0.0, 0.0));
        let mut bytes = Vec::new();
        append(&mut bytes, &good).unwrap();
        let p = scratch("other.jsonl", &bytes);
        let e = message(read_generations(&p, &config(16)));
        assert!(e.contains("line 1: was made with max_tokens 8, this sweep has 16"), "{e}");
        let mut c2 = c.clone();
        c2.beta = 1.0;
        assert!(message(read_generations(&p, &c2)).contains("beta 0.5, this sweep has 1.0"));
        let damaged =
            [("not json\n", "line 2: invalid JSON"), ("[1]\n", "line 2: not a JSON object")];
        for (extra, want) in damaged {
            let mut b = bytes.clone();
            b.extend_from_slice(extra.as_bytes());
            let e = message(read_generations(&scratch("damaged.jsonl", &b), &c));
            assert!(e.contains(want) && e.contains("move the file away"), "{e}");
        }
        let mut wrong = good.clone();
        wrong["rewards"]["b"] = Value::Null;
        let mut b = Vec::new();
        append(&mut b, &wrong).unwrap();
        let e = message(read_generations(&scratch("wrong.jsonl", &b), &c));
        assert!(e.contains("\"rewards\" needs a number for expert 'b'"), "{e}");
        wrong = good.clone();
        wrong["weights"] = json!([0.5]);
        b.clear();
        append(&mut b, &wrong).unwrap();
        assert!(message(read_generations(&scratch("wrong.jsonl", &b), &c))
            .contains("\"weights\" must be 2 numbers"));
    }
}
