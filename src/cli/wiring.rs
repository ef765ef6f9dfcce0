//! Wiring shared by the front ends: flags to recipes, settings and engine options.

use super::{PolicyArgs, RunArgs, SamplingArgs};
use anyhow::Result;
use mood::pipeline::decode::Settings;
use mood::pipeline::engine::{LoadOptions, SessionOptions};
use mood::pipeline::recipe::{parse_weights, Recipe};
use mood::pipeline::sample::SamplingParams;

/// Decoding settings from the flags, checked.
pub fn settings(
    max_tokens: usize,
    stops: &[String],
    sampling: &SamplingArgs,
    run: &RunArgs,
) -> Result<Settings> {
    let settings = Settings {
        max_tokens,
        stops: stops.to_vec(),
        sampling: sampling_params(sampling),
        plausibility: sampling.plausibility,
        session: session_options(run)?,
    };
    settings.sampling.validate()?;
    Ok(settings)
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
