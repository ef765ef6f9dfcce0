//! `mood batch` and `mood score`: wire flags and files to [`mood::apps::batch`] and
//! [`mood::apps::score`], with a progress bar on a terminal.

use super::wiring::{
    build_recipe, constraint, load_engine, model_name, one_line, progress_bar, session_options,
    settings,
};
use super::{BatchArgs, ScoreArgs};
use anyhow::{anyhow, bail, Context, Result};
use mood::apps::batch::{self, Options};
use mood::apps::records;
use mood::apps::score::{Response, Scorer};
use mood::apps::shard;
use mood::input::{Line, Lines, LINE_LIMIT};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::time::Instant;

pub fn run_batch(args: BatchArgs) -> Result<()> {
    if args.merge {
        let summary = shard::merge_batch(&args.input, &args.shards, &args.output)?;
        let skipped = match summary.skipped {
            0 => String::new(),
            n => format!(" ({n} damaged line(s) of the shards skipped)"),
        };
        eprintln!(
            "mood batch: merged {} shard(s): {} records, one per input line, → {}{skipped}",
            args.shards.len(),
            summary.records,
            args.output.display()
        );
        return Ok(());
    }
    let shard = args.shard;
    let recipe = build_recipe(&args.policies)?;
    let mut defaults = settings(args.max_tokens, &args.stop, &args.sampling, &recipe)?;
    defaults.constraint = constraint(&args.constraint)?;
    defaults.logprobs = args.logprobs;
    defaults.check()?;
    let session = session_options(&args.run)?;
    let input = File::open(&args.input)
        .with_context(|| format!("cannot open input {}", args.input.display()))?;
    let total = count_lines(&args.input);
    let created = !args.output.exists();
    let mut output = records::open_output(&args.output, args.resume)?;
    if !output.done.unreadable.is_empty() {
        eprintln!(
            "mood batch: {} line(s) of {} are not records ({}); left in place and ignored",
            output.done.unreadable.len(),
            args.output.display(),
            output
                .done
                .unreadable
                .iter()
                .take(5)
                .map(|n| format!("line {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let total = match (shard, total) {
        (Some(s), Some(t)) => Some(t / s.n as u64 + u64::from(t % s.n as u64 >= s.k as u64)),
        (_, t) => t,
    };
    let result = decode_into(&args, &recipe, &defaults, session, input, &mut output, total);
    if result.is_err() && created && output.file.metadata().is_ok_and(|m| m.len() == 0) {
        // Nothing was written: leave no empty file behind to block the next run.
        let _ = std::fs::remove_file(&args.output);
    }
    result
}

fn decode_into(
    args: &BatchArgs,
    recipe: &mood::pipeline::recipe::Recipe,
    defaults: &mood::pipeline::settings::Settings,
    session: mood::pipeline::engine::SessionOptions,
    input: File,
    output: &mut records::Output,
    total: Option<u64>,
) -> Result<()> {
    let shard = args.shard;
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = load_engine(&policies, &args.run)?;
    let bar = progress_bar(total, "lines");
    let started = Instant::now();
    let options = Options {
        done: std::mem::take(&mut output.done),
        normalize: args.policies.normalize_weights,
        fail_fast: args.fail_fast,
        score_beta: args.score.then_some(args.beta),
        parallel: usize::from(args.parallel),
        session,
        model: args.alias.clone().unwrap_or_else(|| model_name(&args.policies)),
        template: args.template.clone(),
        shard,
    };
    let summary = batch::run(
        &engine,
        recipe,
        defaults,
        &mut BufReader::new(input),
        &mut output.file,
        &options,
        &mut |s| {
            if let Some(bar) = &bar {
                bar.set_position((s.done + s.skipped + s.errors) as u64);
                let rate = s.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{rate:.1} tok/s, {} errors", s.errors));
            }
        },
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let summary = summary?;
    let of_shard = shard.map_or_else(String::new, |s| format!(" (shard {s})"));
    eprintln!(
        "mood batch{of_shard}: {} generated, {} skipped, {} errors, {:.1} tok/s → {}",
        summary.done,
        summary.skipped,
        summary.errors,
        summary.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
        args.output.display()
    );
    Ok(())
}

/// Non-blank lines of a regular file, counted in bounded memory; `None` for a stream.
fn count_lines(path: &std::path::Path) -> Option<u64> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let mut reader = BufReader::new(File::open(path).ok()?);
    let (mut count, mut blank) = (0u64, true);
    loop {
        let chunk = reader.fill_buf().ok()?;
        if chunk.is_empty() {
            return Some(count + u64::from(!blank));
        }
        for &b in chunk {
            if b == b'\n' {
                count += u64::from(!blank);
                blank = true;
            } else if !b.is_ascii_whitespace() {
                blank = false;
            }
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

pub fn run_score(args: ScoreArgs) -> Result<()> {
    let p = &args.policies;
    if p.weights.is_some() || p.divergence.is_some() || p.normalize_weights {
        bail!(
            "mood score scores the response under every policy of the recipe; --weights, \
             --divergence and --normalize-weights do not apply to it"
        );
    }
    let recipe = build_recipe(&args.policies)?;
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = load_engine(&policies, &args.run)?;
    let options = session_options(&args.run)?;
    let mut scorer = Scorer::new(&engine, &recipe, args.beta, options)?;
    let input = File::open(&args.input)
        .with_context(|| format!("cannot open input {}", args.input.display()))?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut lines = Lines::new(BufReader::new(input), LINE_LIMIT);
    let mut number = 0;
    while let Some(line) =
        lines.next_line().with_context(|| format!("cannot read input line {}", number + 1))?
    {
        number += 1;
        let record = match line {
            Line::Text(t) if t.trim().is_empty() => continue,
            Line::Text(t) => score_line(&mut scorer, &t, number),
            Line::NotUtf8(at) => {
                Err(anyhow!("the line is not UTF-8 text (invalid byte at offset {at})"))
            }
            Line::TooLong => Err(anyhow!("the line is longer than {} MiB", LINE_LIMIT >> 20)),
        }
        .unwrap_or_else(|e| json!({ "line": number, "error": one_line(&e) }));
        let written = writeln!(out, "{record}").and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            // A reader that stopped (`| head`) ends the run quietly, as Unix tools do.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("cannot write the output"),
        }
    }
    Ok(())
}

fn score_line(scorer: &mut Scorer, text: &str, number: usize) -> Result<Value> {
    let v: Value = serde_json::from_str(text).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    let field =
        |k: &str| v.get(k).and_then(Value::as_str).ok_or_else(|| anyhow!("missing string '{k}'"));
    let s = scorer.score(field("prompt")?, Response::Text(field("response")?))?;
    Ok(json!({ "id": v.get("id"), "line": number, "scores": s }))
}
