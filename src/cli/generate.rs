//! `mood generate`: wires flags to a recipe, an engine and the decoding loop, and prints the
//! result (streamed text, or one JSON object).

use super::wiring::{build_recipe, constraint, load_engine, session_options, settings};
use super::GenerateArgs;
use anyhow::{bail, Context, Result};
use mood::pipeline::decode;
use std::io::Write;

pub fn run(args: GenerateArgs) -> Result<()> {
    let prompt = read_prompt(&args)?;
    let recipe = build_recipe(&args.policies)?;
    let mut settings = settings(args.max_tokens, &args.stop, &args.sampling)?;
    settings.constraint = constraint(&args.constraint)?;
    settings.logprobs = args.logprobs;
    if settings.logprobs.is_some() && !args.json {
        bail!("--logprobs needs --json (the log-probabilities are part of the JSON object)");
    }
    settings.check()?;
    let options = session_options(&args.run)?;
    if prompt.trim().is_empty() {
        bail!("the prompt is empty; give --prompt TEXT (or a non-empty --prompt-file)");
    }
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = load_engine(&policies, &args.run)?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut print = |s: &str| {
        if !args.json && !s.is_empty() {
            // A closed pipe (e.g. `| head`) must not abort generation with a panic.
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        }
    };
    let generation = decode::generate(&engine, &recipe, &prompt, &settings, options, &mut print)?;

    if args.json {
        writeln!(out, "{}", generation.json(&recipe)).context("cannot write to standard output")?;
    } else {
        let _ = writeln!(out);
    }
    Ok(())
}

fn read_prompt(args: &GenerateArgs) -> Result<String> {
    match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(path)) => mood::input::read_text(path, "prompt file"),
        (None, None) => bail!("no prompt: give --prompt TEXT or --prompt-file FILE"),
    }
}
