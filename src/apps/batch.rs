//! Scripted batch decoding: JSONL prompts in, JSONL generations out, one line each.
//!
//! Each input line is an object with `id` and `prompt`, and optionally any setting of
//! [`Overrides`] (`weights`, `divergence`, `max_tokens`, `temperature`, `top_p`, `top_k`,
//! `min_p`, `seed`, `stop`, …) for that line alone. Output is written line by line and
//! flushed, so a crash or a kill loses nothing already written; resuming skips what the
//! output already holds. A bad line gets an error record with its line number and the batch
//! goes on.

use crate::apps::score::{Response, Scorer};
use crate::pipeline::decode::{decode_all, Generation, Request};
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::{invalid, refuse_unknown, Overrides, Settings};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;

/// One line's request, after applying its overrides.
pub struct Line {
    pub id: Value,
    pub prompt: String,
    pub recipe: Recipe,
    pub settings: Settings,
}

/// The keys of a line besides the overrides.
const LINE_KEYS: [&str; 2] = ["id", "prompt"];

/// Parses one input line, applying its overrides to the defaults (`normalize` is the
/// default of `normalize_weights`).
pub fn parse_line(
    line: &str,
    recipe: &Recipe,
    defaults: &Settings,
    normalize: bool,
) -> Result<Line> {
    let v: Value = serde_json::from_str(line).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    let Value::Object(mut obj) = v else { bail!("a line must be a JSON object") };
    let id = obj.get("id").cloned().ok_or_else(|| invalid("id", "is missing"))?;
    if !(id.is_string() || id.is_number()) {
        return Err(invalid("id", "must be a string or a number"));
    }
    let prompt = match obj.get("prompt").cloned() {
        Some(Value::String(p)) if !p.trim().is_empty() => p,
        Some(Value::String(_)) => return Err(invalid("prompt", "is empty")),
        Some(_) => return Err(invalid("prompt", "must be a string")),
        None => return Err(invalid("prompt", "is missing")),
    };
    let overrides = Overrides::take(&mut obj)?;
    refuse_unknown(&obj, &LINE_KEYS)?;
    let (mut recipe, mut settings) = (recipe.clone(), defaults.clone());
    overrides.apply(&mut recipe, &mut settings, normalize)?;
    recipe.terms()?;
    Ok(Line { id, prompt, recipe, settings })
}

/// The output object of one generation: what `generate --json` prints, plus `id`, `line`
/// and the settings used.
pub fn record(req: &Line, line: usize, g: &Generation) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), req.id.clone());
    obj.insert("line".into(), json!(line));
    if let Value::Object(fields) = g.json(&req.recipe) {
        obj.extend(fields);
    }
    let s = &req.settings;
    obj.insert(
        "settings".into(),
        json!({
            "max_tokens": s.max_tokens,
            "temperature": s.sampling.temperature,
            "top_k": s.sampling.top_k,
            "top_p": s.sampling.top_p,
            "min_p": s.sampling.min_p,
            "repeat_penalty": s.sampling.repeat_penalty,
            "repeat_last_n": s.sampling.repeat_last_n,
            "seed": g.seed,
            "stop": s.stops,
            "plausibility": s.plausibility,
        }),
    );
    Value::Object(obj)
}

/// What an existing output file already holds, for resuming.
#[derive(Debug, Default)]
pub struct Done {
    /// Ids (as JSON text) of lines with a record.
    pub ids: HashSet<String>,
    /// Input line numbers with a record (errors included).
    pub lines: HashSet<usize>,
}

/// Reads `path` (if it exists), cuts off a last line that a kill left incomplete, and
/// returns what it holds.
pub fn scan_output(path: &Path) -> Result<Done> {
    let mut done = Done::default();
    let Ok(bytes) = std::fs::read(path) else { return Ok(done) };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut keep = 0;
    for raw in bytes[..complete].split_inclusive(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<Value>(raw) else { break };
        if let Some(line) = v.get("line").and_then(Value::as_u64) {
            done.lines.insert(line as usize);
        }
        if let Some(id) = v.get("id") {
            done.ids.insert(id.to_string());
        }
        keep += raw.len();
    }
    if keep < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {} to repair it", path.display()))?;
        f.set_len(keep as u64).with_context(|| format!("cannot truncate {}", path.display()))?;
    }
    Ok(done)
}

/// Options of a batch run.
pub struct Options {
    /// What the output already holds (see [`scan_output`]); those lines are skipped.
    pub done: Done,
    pub normalize: bool,
    pub fail_fast: bool,
    /// Implicit rewards with this β added to each record.
    pub score_beta: Option<f64>,
    /// How many prompts decode at once (lanes of one session).
    pub parallel: usize,
    pub session: SessionOptions,
}

/// Counts of a finished run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub done: usize,
    pub skipped: usize,
    pub errors: usize,
    pub tokens: usize,
}

/// Decodes every line of `input` into `output`, up to `options.parallel` at a time; records
/// are written in the order generations finish. `progress` is called after each record.
pub fn run(
    engine: &Engine,
    recipe: &Recipe,
    defaults: &Settings,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    options: &Options,
    progress: &mut dyn FnMut(&Summary),
) -> Result<Summary> {
    let done = &options.done;
    let mut summary = Summary::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut lines: Vec<(usize, Line)> = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let number = i + 1;
        let line = line.with_context(|| format!("cannot read input line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        if done.lines.contains(&number) {
            summary.skipped += 1;
            continue;
        }
        let parsed = parse_line(&line, recipe, defaults, options.normalize).and_then(|req| {
            let key = req.id.to_string();
            if !done.ids.contains(&key) && !seen.insert(key) {
                bail!("duplicate id {}: an earlier line has it", req.id);
            }
            Ok(req)
        });
        match parsed {
            Ok(req) if done.ids.contains(&req.id.to_string()) => summary.skipped += 1,
            Ok(req) => lines.push((number, req)),
            Err(e) => {
                let id =
                    serde_json::from_str::<Value>(&line).ok().and_then(|v| v.get("id").cloned());
                let msg = format!("{e:#}");
                write_line(output, &json!({ "id": id, "line": number, "error": msg }))?;
                summary.errors += 1;
                progress(&summary);
                if options.fail_fast {
                    bail!("input line {number}: {msg}");
                }
            }
        }
    }
    let requests = lines
        .iter()
        .map(|(_, l)| {
            let prompts = engine.prompt_tokens(&l.prompt)?;
            Ok(Request {
                recipe: l.recipe.clone(),
                settings: l.settings.clone(),
                prompts,
                reuse_cache: false,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut scorer = match options.score_beta {
        Some(beta) if !requests.is_empty() => {
            Some(Scorer::new(engine, recipe, beta, options.session)?)
        }
        _ => None,
    };
    decode_all(engine, requests, options.parallel, options.session, &mut |i, outcome| {
        let (number, req) = &lines[i];
        let rec = outcome.and_then(|g| {
            let mut rec = record(req, *number, &g);
            if let Some(scorer) = &mut scorer {
                let s = scorer.score(&req.prompt, Response::Tokens(&g.tokens))?;
                if let Value::Object(o) = &mut rec {
                    o.insert("scores".into(), json!(s));
                }
            }
            summary.tokens += g.tokens.len();
            Ok(rec)
        });
        match rec {
            Ok(rec) => {
                write_line(output, &rec)?;
                summary.done += 1;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                write_line(output, &json!({ "id": req.id, "line": number, "error": msg }))?;
                summary.errors += 1;
                if options.fail_fast {
                    bail!("input line {number}: {msg}");
                }
            }
        }
        progress(&summary);
        Ok(())
    })?;
    Ok(summary)
}

fn write_line(out: &mut dyn Write, v: &Value) -> Result<()> {
    let mut text = v.to_string();
    text.push('\n');
    out.write_all(text.as_bytes()).context("cannot write the output")?;
    out.flush().context("cannot write the output")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sample::SamplingParams;
    use std::path::PathBuf;

    fn recipe() -> Recipe {
        Recipe::parse(
            "[reference]\nmodel='m'\n[[expert]]\nname='a'\nmodel='m'\nweight=0.5\n[[expert]]\nname='b'\nmodel='m'\nweight=0.5\n",
            Path::new("."),
        )
        .unwrap()
    }

    fn defaults() -> Settings {
        Settings {
            max_tokens: 16,
            stops: vec![],
            sampling: SamplingParams::default(),
            plausibility: 1e-4,
        }
    }

    #[test]
    fn overrides_apply() {
        let r = parse_line(
            r#"{"id": 7, "prompt": "x", "weights": {"b": 0.9}, "max_tokens": 3, "temperature": 0.5, "top_k": 2, "seed": 9, "stop": ["."], "top_p": 0.5}"#,
            &recipe(),
            &defaults(),
            false,
        )
        .unwrap();
        assert_eq!(r.id, json!(7));
        assert_eq!(r.recipe.weights, vec![0.5, 0.9]);
        assert_eq!(r.settings.max_tokens, 3);
        assert_eq!(r.settings.sampling.temperature, 0.5);
        assert_eq!((r.settings.sampling.top_k, r.settings.sampling.seed), (2, Some(9)));
        assert_eq!(r.settings.stops, vec!["."]);
        let r = parse_line(
            r#"{"id":"a","prompt":"x","weights":[1,3],"divergence":"jsd"}"#,
            &recipe(),
            &defaults(),
            true,
        )
        .unwrap();
        assert_eq!(r.recipe.weights, vec![0.25, 0.75]);
    }

    #[test]
    fn bad_lines_say_why() {
        let cases = [
            ("{", "invalid JSON"),
            ("[1]", "JSON object"),
            (r#"{"prompt":"x"}"#, "id is missing"),
            (r#"{"id":1}"#, "prompt is missing"),
            (r#"{"id":1,"prompt":""}"#, "prompt is empty"),
            (r#"{"id":1,"prompt":"x","temprature":1}"#, "temprature is not a setting"),
            (r#"{"id":1,"prompt":"x","weights":[1]}"#, "1 value(s)"),
            (r#"{"id":1,"prompt":"x","weights":{"zz":1}}"#, "'zz'"),
            (r#"{"id":1,"prompt":"x","top_p":2}"#, "top_p must be"),
            (r#"{"id":1,"prompt":"x","min_p":2}"#, "min_p must be"),
            (r#"{"id":1,"prompt":"x","max_tokens":0}"#, "max_tokens"),
            (r#"{"id":1,"prompt":"x","divergence":"tv"}"#, "barrier"),
            (r#"{"id":1,"prompt":"x","stop":3}"#, "stop must"),
        ];
        for (line, want) in cases {
            let e = format!("{:#}", parse_line(line, &recipe(), &defaults(), false).err().unwrap());
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn scanning_repairs_a_truncated_last_line() {
        let dir = std::env::temp_dir().join(format!("mood-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path: PathBuf = dir.join("out.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"line\":1}\n{\"id\":2,\"line\":3,\"error\":\"x\"}\n{\"id\":\"c\",\"li",
        )
        .unwrap();
        let done = scan_output(&path).unwrap();
        assert!(
            done.ids.contains("\"a\"") && done.ids.contains("2") && !done.ids.contains("\"c\"")
        );
        assert_eq!(done.lines, [1, 3].into_iter().collect());
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("\"error\":\"x\"}\n"));
        assert!(scan_output(&dir.join("missing.jsonl")).unwrap().ids.is_empty());
    }
}
