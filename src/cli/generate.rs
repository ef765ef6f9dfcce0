//! `mood generate`: wires flags to a recipe, an engine and the decoding loop, and prints the
//! result (streamed text, or one JSON object).

use super::{GenerateArgs, PolicyArgs, RunArgs, SamplingArgs};
use anyhow::{bail, Context, Result};
use mood::decode::{self, Settings};
use mood::engine::{Engine, LoadOptions, SessionOptions};
use mood::recipe::{parse_weights, Recipe};
use mood::sample::SamplingParams;
use std::io::{Read, Write};

pub fn run(args: GenerateArgs) -> Result<()> {
    let prompt = read_prompt(&args)?;
    let recipe = build_recipe(&args.policies)?;
    let settings = Settings {
        max_tokens: args.max_tokens,
        stops: args.stop.clone(),
        sampling: sampling_params(&args.sampling),
        plausibility: args.sampling.plausibility,
        session: session_options(&args.run)?,
    };
    settings.sampling.validate()?;
    if settings.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if prompt.trim().is_empty() {
        bail!("the prompt is empty; give --prompt TEXT (or a non-empty --prompt-file)");
    }
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = Engine::load(&policies, load_options(&args.run))?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut print = |s: &str| {
        if !args.json && !s.is_empty() {
            // A closed pipe (e.g. `| head`) must not abort generation with a panic.
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        }
    };
    let generation = decode::generate(&engine, &recipe, &prompt, &settings, &mut print)?;

    if args.json {
        let value = mood::batch::generation_json(&recipe, &settings, &generation);
        writeln!(out, "{value}").context("cannot write to standard output")?;
    } else {
        let _ = writeln!(out);
    }
    Ok(())
}

fn read_prompt(args: &GenerateArgs) -> Result<String> {
    match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the prompt from standard input")?;
            Ok(s)
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read prompt file {}", path.display())),
        (None, None) => bail!("no prompt: give --prompt TEXT or --prompt-file FILE"),
    }
}

/// The recipe from `--recipe`, or from the shorthand flags; `--weights` applied.
pub fn build_recipe(args: &PolicyArgs) -> Result<Recipe> {
    let mut recipe = match &args.recipe {
        Some(path) => Recipe::load(path)?,
        None => Recipe::from_flags(args.model.as_deref(), &args.expert, &args.prefix)?,
    };
    if let Some(d) = &args.divergence {
        recipe.divergence = d.parse()?;
    }
    if let Some(w) = &args.weights {
        recipe.set_weights(parse_weights(w)?)?;
    }
    recipe.apply_weight_rules(args.normalize_weights)?;
    Ok(recipe)
}

pub fn sampling_params(args: &SamplingArgs) -> SamplingParams {
    SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        seed: args.seed.unwrap_or_else(random_seed),
    }
}

pub fn load_options(args: &RunArgs) -> LoadOptions {
    LoadOptions { n_gpu_layers: args.n_gpu_layers, main_gpu: args.main_gpu }
}

pub fn session_options(args: &RunArgs) -> Result<SessionOptions> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(SessionOptions {
        threads: args.threads.map_or(cores, usize::from),
        ctx_size: args.ctx_size,
        strategy: args.strategy.parse()?,
    })
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
