//! `mood batch` and `mood score`: wire flags and files to [`mood::apps::batch`] and
//! [`mood::apps::score`], with a progress bar on a terminal.

use super::wiring::{
    build_recipe, load_options, one_line, progress_bar, session_options, settings,
};
use super::{BatchArgs, ScoreArgs};
use anyhow::{anyhow, bail, Context, Result};
use mood::apps::batch::{self, Options};
use mood::apps::score::{Response, Scorer};
use mood::pipeline::engine::Engine;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::time::Instant;

pub fn run_batch(args: BatchArgs) -> Result<()> {
    let recipe = build_recipe(&args.policies)?;
    let defaults = settings(args.max_tokens, &args.stop, &args.sampling)?;
    let session = session_options(&args.run)?;
    let input = File::open(&args.input)
        .with_context(|| format!("cannot open input {}", args.input.display()))?;
    let total = BufReader::new(
        File::open(&args.input)
            .with_context(|| format!("cannot open input {}", args.input.display()))?,
    )
    .lines()
    .map_while(Result::ok)
    .filter(|l| !l.trim().is_empty())
    .count();
    if args.output.exists() && !args.resume {
        bail!(
            "output {} exists; pass --resume to continue it, or choose another file",
            args.output.display()
        );
    }
    let done = batch::scan_output(&args.output)?;
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = Engine::load(&policies, load_options(&args.run))?;
    let mut output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.output)
        .with_context(|| format!("cannot open output {}", args.output.display()))?;
    let bar = progress_bar(total as u64, "lines");
    let started = Instant::now();
    let options = Options {
        done,
        normalize: args.policies.normalize_weights,
        fail_fast: args.fail_fast,
        score_beta: args.score.then_some(args.beta),
        parallel: usize::from(args.parallel),
        session,
    };
    let summary = batch::run(
        &engine,
        &recipe,
        &defaults,
        &mut BufReader::new(input),
        &mut output,
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
    eprintln!(
        "mood batch: {} generated, {} skipped, {} errors, {:.1} tok/s → {}",
        summary.done,
        summary.skipped,
        summary.errors,
        summary.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
        args.output.display()
    );
    Ok(())
}

pub fn run_score(args: ScoreArgs) -> Result<()> {
    let recipe = build_recipe(&args.policies)?;
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = Engine::load(&policies, load_options(&args.run))?;
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
    for (i, line) in BufReader::new(input).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read input line {}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = (|| -> Result<Value> {
            let v: Value = serde_json::from_str(&line).map_err(|e| anyhow!("invalid JSON: {e}"))?;
            let text = |k: &str| {
                v.get(k).and_then(Value::as_str).ok_or_else(|| anyhow!("missing string '{k}'"))
            };
            let s = scorer.score(text("prompt")?, Response::Text(text("response")?))?;
            Ok(json!({ "id": v.get("id"), "line": i + 1, "scores": s }))
        })()
        .unwrap_or_else(|e| json!({ "line": i + 1, "error": one_line(&e) }));
        writeln!(out, "{record}").context("cannot write the output")?;
        out.flush().context("cannot write the output")?;
    }
    Ok(())
}
