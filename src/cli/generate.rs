//! `mood generate`: wires flags to a recipe, an engine and the decoding loop, and prints the
//! result (streamed text, or one JSON object).

use super::wiring::{build_recipe, constraint, load_engine, session_options, settings};
use super::GenerateArgs;
use anyhow::{bail, Context, Result};
use mood::pipeline::bytes::Unit;
use mood::pipeline::decode::{self, FinishReason, Generation};
use mood::pipeline::engine::chat::{Message, TRANSCRIPT_STOP};
use mood::pipeline::engine::Engine;
use std::io::Write;

pub fn run(args: GenerateArgs) -> Result<()> {
    let prompt = read_prompt(&args)?;
    let mut recipe = build_recipe(&args.policies)?;
    if let Some(system) = &args.system {
        for p in recipe.reference.iter_mut().chain(recipe.experts.iter_mut()) {
            p.system.get_or_insert_with(|| system.clone());
        }
    }
    let mut settings = settings(args.max_tokens, &args.stop, &args.sampling, &recipe)?;
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
    let prompts = if args.chat {
        if engine.uses_transcript(&args.template) {
            settings.stops.push(TRANSCRIPT_STOP.to_string());
        }
        let turn = [Message { role: "user".into(), content: prompt.clone() }];
        engine.chat_tokens(&turn, &args.template, None)?
    } else {
        engine.prompt_tokens(&prompt)?
    };
    let generation = if engine.unit() == Unit::Bytes {
        decode::bytes::generate_bytes(&engine, &recipe, prompts, &settings, options, &mut print)?
    } else {
        decode::generate_tokens(&engine, &recipe, prompts, &settings, options, &mut print)?
    };
    if generation.tokens.len() <= 1 && generation.text.trim().is_empty() {
        eprintln!("{}", empty_note(&generation, args.chat, &engine));
    }

    if args.json {
        writeln!(out, "{}", generation.json(&recipe)).context("cannot write to standard output")?;
    } else {
        let _ = writeln!(out);
    }
    Ok(())
}

/// Why nothing was printed, and what to try (on stderr; the exit status stays 0).
fn empty_note(g: &Generation, chat: bool, engine: &Engine) -> String {
    let ended = match g.finish_reason {
        FinishReason::Eog => "the model ended the text at once (an end-of-generation token)",
        FinishReason::Stop => "a stop string came at once",
        _ => "the generation produced no text",
    };
    let instruct = (0..engine.policies().len()).any(|p| engine.template_of(p, "auto") == "model");
    let hint = if chat {
        "try another --template or --system, or a longer --max-tokens"
    } else if instruct {
        "the model has a chat template: for a question or an instruction, add --chat"
    } else {
        "try a prompt that reads as the start of a text to continue"
    };
    format!("mood: no text: {ended}; {hint}")
}

fn read_prompt(args: &GenerateArgs) -> Result<String> {
    match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(path)) => mood::input::read_text(path, "prompt file"),
        (None, None) => bail!("no prompt: give --prompt TEXT or --prompt-file FILE"),
    }
}
