//! Scripted batch decoding: JSONL prompts in, JSONL generations out, one line each.
//!
//! An input file is in mood's own line format or in OpenAI's Batch API format ([`openai`]),
//! told by its first line. A line of mood's format is an object with `id` and `prompt`, and
//! optionally any setting of [`Overrides`] (`weights`, `divergence`, `max_tokens`,
//! `temperature`, `top_p`, `top_k`, `min_p`, `seed`, `stop`, …) for that line alone. Output is
//! written line by line and flushed, so a crash or a kill loses nothing already written;
//! resuming skips what the output already holds. A bad line gets an error record with its
//! line number and the batch goes on.

pub mod openai;

use crate::apps::openai::request::ApiError;
use crate::apps::records::Done;
use crate::apps::score::{Response, Scorer};
use crate::apps::shard::Shard;
use crate::error::invalid;
use crate::input::{self, Lines, LINE_LIMIT};
use crate::pipeline::decode::{decode_all, Generation, Request};
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::logprobs::MAX_TOP_LOGPROBS;
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::{refuse_unknown, Overrides, Settings};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::io::{BufRead, Write};

/// One input line's request, after applying its overrides.
pub struct LineRequest {
    pub id: Value,
    pub prompt: String,
    pub recipe: Recipe,
    pub settings: Settings,
}

/// The keys of a line besides the overrides.
const LINE_KEYS: [&str; 3] = ["id", "prompt", "logprobs"];

/// Parses one input line, applying its overrides to the defaults (`normalize` is the
/// default of `normalize_weights`).
pub fn parse_line(
    line: &str,
    recipe: &Recipe,
    defaults: &Settings,
    normalize: bool,
) -> Result<LineRequest> {
    let v: Value = serde_json::from_str(line).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    let Value::Object(mut obj) = v else { bail!("a line must be a JSON object") };
    let id = obj.get("id").cloned().ok_or_else(|| invalid("id", "is missing"))?;
    check_id(&id)?;
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
    match obj.get("logprobs") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(false)) => settings.logprobs = None,
        Some(n) => {
            let n = n.as_u64().filter(|&n| n <= MAX_TOP_LOGPROBS as u64).ok_or_else(|| {
                invalid(
                    "logprobs",
                    format!(
                        "must be a number of alternatives from 0 to {MAX_TOP_LOGPROBS}, or false"
                    ),
                )
            })?;
            settings.logprobs = Some(n as usize);
        }
    }
    recipe.terms()?;
    Ok(LineRequest { id, prompt, recipe, settings })
}

/// The largest numeric id: JSON readers that hold numbers as doubles (most do) carry whole
/// numbers exactly only up to 2^53.
const MAX_NUMERIC_ID: u64 = 1 << 53;
/// The longest string id (bytes).
const MAX_ID_BYTES: usize = 1024;

fn check_id(id: &Value) -> Result<()> {
    match id {
        Value::String(s) if s.len() <= MAX_ID_BYTES => Ok(()),
        Value::String(_) => Err(invalid("id", format!("is longer than {MAX_ID_BYTES} bytes"))),
        Value::Number(n) if n.as_u64().is_some_and(|n| n <= MAX_NUMERIC_ID) => Ok(()),
        Value::Number(n) if n.as_i64().is_some_and(|n| n.unsigned_abs() <= MAX_NUMERIC_ID) => {
            Ok(())
        }
        Value::Number(n) => Err(invalid(
            "id",
            format!("{n} is not a whole number within ±2^53 (JSON readers would change it); use a string id"),
        )),
        _ => Err(invalid("id", "must be a string or a number")),
    }
}

/// The output object of one generation: what `generate --json` prints, plus `id`, `line`
/// and the settings used.
pub fn record(req: &LineRequest, line: usize, g: &Generation) -> Value {
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

/// Options of a batch run.
pub struct Options {
    /// What the output already holds (see [`crate::apps::records`]); those lines are skipped.
    pub done: Done,
    pub normalize: bool,
    pub fail_fast: bool,
    /// Implicit rewards with this β added to each record.
    pub score_beta: Option<f64>,
    /// How many prompts decode at once (lanes of one session).
    pub parallel: usize,
    pub session: SessionOptions,
    /// The model name in the answers of OpenAI batch lines.
    pub model: String,
    /// Chat template for policies that set none (OpenAI chat lines).
    pub template: String,
    /// Only the lines of this shard (see [`crate::apps::shard`]); the others are read for
    /// their ids (a duplicate id is one whichever shard the first line is in) and left out.
    pub shard: Option<Shard>,
}

/// A line ready to decode, in either format.
enum Job {
    Mood(LineRequest),
    OpenAi(openai::Line),
}

impl Job {
    /// The request to decode (an OpenAI line's compiled grammar moves into it).
    fn request(&mut self, engine: &Engine) -> Result<Request> {
        Ok(match self {
            Job::Mood(l) => Request::new(
                l.recipe.clone(),
                l.settings.clone(),
                engine.prompt_tokens(&l.prompt)?,
                false,
            ),
            Job::OpenAi(l) => {
                let mut request = l.request.clone();
                request.grammar = l.request.grammar.take();
                request
            }
        })
    }
}

/// A line that does not run (or failed), as the record its format gives it.
fn failure(format: Format, id: Option<Value>, line: usize, e: &anyhow::Error) -> Value {
    let message = format!("{e:#}");
    match format {
        Format::Mood => json!({ "id": id, "line": line, "error": message }),
        Format::OpenAi => {
            let custom_id = id.and_then(|v| v.as_str().map(str::to_string));
            openai::failure_record(&openai::Refusal::Line { custom_id, message }, line)
        }
    }
}

/// The line format of an input file, told by its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Mood,
    OpenAi,
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
    // Ids of lines with a generation (earlier runs' and this one's).
    let mut seen: HashSet<String> = done.ids.clone();
    let mut jobs: Vec<(usize, Job)> = Vec::new();
    let mut reader = Lines::new(input, LINE_LIMIT);
    let mut number = 0;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cx = openai::Context { model: &options.model, created, template: &options.template };
    let mut format = None;
    loop {
        let line =
            reader.next_line().with_context(|| format!("cannot read input line {}", number + 1))?;
        let Some(line) = line else { break };
        number += 1;
        if let input::Line::Text(t) = &line {
            if format.is_none() && !t.trim().is_empty() {
                let openai = openai::is_openai_line(t);
                if openai && options.score_beta.is_some() {
                    bail!(
                        "scores are added to mood's own line format only; run this OpenAI batch \
                         file without --score"
                    );
                }
                format = Some(if openai { Format::OpenAi } else { Format::Mood });
            }
        }
        let format = format.unwrap_or(Format::Mood);
        if options.shard.is_some_and(|s| !s.contains(number - 1)) {
            // Another shard's line: only its id counts here.
            if let input::Line::Text(t) = &line {
                seen.extend(match format {
                    Format::Mood => parse_line(t, recipe, defaults, options.normalize)
                        .ok()
                        .map(|req| req.id.to_string()),
                    Format::OpenAi => openai::parse(t, engine, recipe, defaults, &cx)
                        .ok()
                        .map(|l| json!(l.custom_id).to_string()),
                });
            }
            continue;
        }
        let parsed = match line {
            input::Line::Text(t) if t.trim().is_empty() => continue,
            _ if done.lines.contains(&number) => {
                summary.skipped += 1;
                continue;
            }
            input::Line::Text(t) => match format {
                Format::Mood => parse_line(&t, recipe, defaults, options.normalize)
                    .and_then(|req| {
                        if !seen.insert(req.id.to_string()) {
                            bail!("duplicate id {}: an earlier line has it", req.id);
                        }
                        Ok(Job::Mood(req))
                    })
                    .map_err(|e| {
                        let id = serde_json::from_str::<Value>(&t)
                            .ok()
                            .and_then(|v| v.get("id").cloned());
                        failure(format, id, number, &e)
                    }),
                Format::OpenAi => match openai::parse(&t, engine, recipe, defaults, &cx) {
                    Ok(l) if !seen.insert(json!(l.custom_id).to_string()) => {
                        let e = anyhow!(
                            "duplicate custom_id {:?}: an earlier line has it",
                            l.custom_id
                        );
                        Err(failure(format, Some(json!(l.custom_id)), number, &e))
                    }
                    Ok(l) => Ok(Job::OpenAi(l)),
                    Err(r) => Err(openai::failure_record(&r, number)),
                },
            },
            input::Line::NotUtf8(at) => Err(failure(
                format,
                None,
                number,
                &anyhow!("the line is not UTF-8 text (invalid byte at offset {at})"),
            )),
            input::Line::TooLong => Err(failure(
                format,
                None,
                number,
                &anyhow!("the line is longer than {} MiB; it was skipped", LINE_LIMIT >> 20),
            )),
        };
        match parsed {
            Ok(job) => jobs.push((number, job)),
            Err(rec) => {
                write_line(output, &rec)?;
                summary.errors += 1;
                progress(&summary);
                if options.fail_fast {
                    bail!("input line {number}: {}", error_message(&rec));
                }
            }
        }
    }
    let requests =
        jobs.iter_mut().map(|(_, job)| job.request(engine)).collect::<Result<Vec<_>>>()?;
    let mut scorer = match options.score_beta {
        Some(beta) if !requests.is_empty() => {
            Some(Scorer::new(engine, recipe, beta, options.session)?)
        }
        _ => None,
    };
    decode_all(engine, requests, options.parallel, options.session, &mut |i, outcome| {
        let (number, job) = &jobs[i];
        let rec = outcome.and_then(|g| {
            let rec = match job {
                Job::Mood(req) => {
                    let mut rec = record(req, *number, &g);
                    if let Some(scorer) = &mut scorer {
                        let s = scorer.score(&req.prompt, Response::Tokens(&g.tokens))?;
                        if let Value::Object(o) = &mut rec {
                            o.insert("scores".into(), json!(s));
                        }
                    }
                    rec
                }
                Job::OpenAi(l) => openai::record(l, *number, &g, &cx),
            };
            summary.tokens += g.tokens.len();
            Ok(rec)
        });
        match rec {
            Ok(rec) => {
                write_line(output, &rec)?;
                summary.done += 1;
            }
            // A lost RPC server stops the run: its lines get no error record, so that
            // --resume decodes them once the server is back.
            Err(_) if !engine.lost().is_empty() => {
                return Err(stopped_by_lost_server(engine));
            }
            Err(e) => {
                let rec = match job {
                    Job::Mood(req) => failure(Format::Mood, Some(req.id.clone()), *number, &e),
                    Job::OpenAi(l) => openai::failure_record(
                        &openai::Refusal::Body {
                            custom_id: l.custom_id.clone(),
                            kind: l.kind,
                            error: ApiError::server(format!("{e:#}")),
                        },
                        *number,
                    ),
                };
                write_line(output, &rec)?;
                summary.errors += 1;
                if options.fail_fast {
                    bail!("input line {number}: {e:#}");
                }
            }
        }
        progress(&summary);
        Ok(())
    })?;
    Ok(summary)
}

/// The error that ends a run whose RPC server was lost.
pub fn stopped_by_lost_server(engine: &Engine) -> anyhow::Error {
    let all: Vec<usize> = (0..engine.policies().len()).collect();
    let lost = engine.unavailable_for(&all).unwrap_or_else(|| anyhow!("an RPC server was lost"));
    lost.context("stopped (run it again with --resume once the server is back)")
}

/// The message of an error record of either format.
fn error_message(rec: &Value) -> String {
    let m = rec
        .get("error")
        .and_then(|e| e.as_str().or_else(|| e.get("message")?.as_str()))
        .or_else(|| rec.pointer("/response/body/error/message")?.as_str());
    m.unwrap_or("invalid line").to_string()
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
    use std::path::Path;

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
            sampling: SamplingParams::default(),
            plausibility: 1e-4,
            byte_tolerance: crate::pipeline::bytes::DEFAULT_TOLERANCE,
            draft_max: 0,
            ..Settings::default()
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
    fn ids_must_survive_json_readers() {
        let line = |id: &str| format!("{{\"id\": {id}, \"prompt\": \"x\"}}");
        for ok in ["1", "-5", "9007199254740992", "\"q0\""] {
            assert!(parse_line(&line(ok), &recipe(), &defaults(), false).is_ok(), "{ok}");
        }
        for bad in ["9007199254740993", "1.5", "1e300", "null", "[1]"] {
            let e = parse_line(&line(bad), &recipe(), &defaults(), false).err().unwrap();
            assert!(e.to_string().starts_with("id "), "{bad}: {e}");
        }
    }
}
