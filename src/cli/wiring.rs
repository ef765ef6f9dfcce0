//! Wiring shared by the front ends: flags to recipes, settings and engine options, and
//! errors worded with flags.

use super::{ConstraintArgs, PolicyArgs, RunArgs, SamplingArgs};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mood::error::{invalid, SettingError};
use mood::pipeline::constraint::{ConstraintSpec, MAX_SPEC_BYTES};
use mood::pipeline::divergence::Divergence;
use mood::pipeline::engine::rpc::{self, exposure_warning, Endpoint};
use mood::pipeline::engine::{rpc_endpoints, Engine, LoadOptions, SessionOptions, MIN_CTX};
use mood::pipeline::recipe::{parse_weights, Policy, Recipe};
use mood::pipeline::sample::SamplingParams;
use mood::pipeline::settings::Settings;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Decoding settings from the flags, checked.
/// The decoding settings the flags ask for; a recipe's saved `temperature` applies where
/// `--temp` is not given.
pub fn settings(
    max_tokens: usize,
    stops: &[String],
    sampling: &SamplingArgs,
    recipe: &Recipe,
) -> Result<Settings> {
    let mut params = sampling_params(sampling)?;
    if sampling.temperature.is_none() {
        params.temperature = recipe.temperature.unwrap_or(0.0);
    }
    let settings = Settings {
        max_tokens,
        stops: stops.to_vec(),
        sampling: params,
        plausibility: sampling.plausibility,
        byte_tolerance: sampling.byte_tolerance,
        constraint: None,
        logprobs: None,
        draft_max: sampling.draft_max,
    };
    settings.check()?;
    Ok(settings)
}

/// The constraint the flags ask for: `--grammar` (a file, or GBNF text holding "::=") or
/// `--json-schema` (a file, or JSON text starting with "{").
pub fn constraint(args: &ConstraintArgs) -> Result<Option<ConstraintSpec>> {
    let spec = match (&args.grammar, &args.json_schema) {
        (Some(g), _) if g.contains("::=") => Some(ConstraintSpec::Grammar(g.clone())),
        (Some(path), _) => Some(ConstraintSpec::Grammar(read_spec(path, "grammar")?)),
        (None, Some(s)) => {
            let text = if s.trim_start().starts_with('{') {
                s.clone()
            } else {
                read_spec(s, "json_schema")?
            };
            let schema = serde_json::from_str(&text).map_err(|e| {
                invalid(
                    "json_schema",
                    format!("is not valid JSON ({e}); give a file or the schema"),
                )
            })?;
            Some(ConstraintSpec::JsonSchema(schema))
        }
        (None, None) => None,
    };
    if let Some(c) = &spec {
        c.check()?;
    }
    Ok(spec)
}

/// A grammar or schema file, bounded in size.
fn read_spec(path: &str, setting: &str) -> Result<String> {
    let what = if setting == "grammar" { "grammar file" } else { "JSON schema file" };
    let text = mood::input::read_text(Path::new(path), what)?;
    if text.len() > MAX_SPEC_BYTES {
        return Err(invalid(setting, format!("file {path} is over {MAX_SPEC_BYTES} bytes")));
    }
    Ok(text)
}

/// The recipe from `--recipe`, or from the shorthand flags; `--divergence` and `--weights`
/// applied and checked.
pub fn build_recipe(args: &PolicyArgs) -> Result<Recipe> {
    let mut recipe = match &args.recipe {
        Some(path) => Recipe::load(path)?,
        None => from_flags(args.model.as_deref(), &args.expert, &args.prefix, &args.lora)?,
    };
    if let Some(d) = &args.divergence {
        recipe.divergence = d.parse()?;
    }
    if let Some(w) = &args.weights {
        recipe.set_weights(parse_weights(w)?)?;
    }
    recipe.apply_weight_rules(args.normalize_weights)?;
    recipe.terms()?;
    Ok(recipe)
}

/// A recipe from the shorthand flags: `model` is the reference and the model of every
/// prompted expert (`prefixes`); `expert_files` are experts that are model files of their
/// own. With no expert at all, `model` alone is the single policy.
pub fn from_flags(
    model: Option<&Path>,
    expert_files: &[PathBuf],
    prefixes: &[String],
    adapters: &[PathBuf],
) -> Result<Recipe> {
    if !prefixes.is_empty() && model.is_none() {
        bail!("--prefix needs --model: the model file the prompted experts run on");
    }
    if !adapters.is_empty() && model.is_none() {
        bail!("--lora needs --model: the model file the adapters apply to");
    }
    let mut experts: Vec<Policy> =
        expert_files.iter().map(|f| Policy { model: f.clone(), ..Policy::default() }).collect();
    if let Some(model) = model {
        experts.extend(prefixes.iter().map(|p| Policy {
            model: model.to_path_buf(),
            prefix: p.clone(),
            ..Policy::default()
        }));
        experts.extend(adapters.iter().map(|a| Policy {
            model: model.to_path_buf(),
            lora: Some((a.clone(), 1.0)),
            ..Policy::default()
        }));
        if experts.is_empty() {
            experts.push(Policy { model: model.to_path_buf(), ..Policy::default() });
        }
    }
    if experts.is_empty() {
        bail!("no policies: give --recipe FILE, or --model FILE (with --prefix TEXT / --expert FILE for experts)");
    }
    for (i, e) in experts.iter_mut().enumerate() {
        e.name = format!("expert{}", i + 1);
    }
    let reference = model.map(|m| Policy {
        name: "reference".into(),
        model: m.to_path_buf(),
        ..Policy::default()
    });
    let m = experts.len();
    Recipe::new(Divergence::default(), reference, experts, vec![1.0 / m as f64; m])
}

pub fn sampling_params(args: &SamplingArgs) -> Result<SamplingParams> {
    Ok(SamplingParams {
        temperature: args.temperature.unwrap_or(0.0),
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        logit_bias: args.logit_bias.iter().map(|b| parse_bias(b)).collect::<Result<_>>()?,
        seed: args.seed,
    })
}

/// One `--logit-bias`: TOKEN=BIAS, or llama.cpp's TOKEN+BIAS / TOKEN-BIAS.
fn parse_bias(text: &str) -> Result<(u32, f32)> {
    let bad = || {
        invalid("logit_bias", format!("must be TOKEN=BIAS (e.g. 1234=-5 or 1234+2), got {text:?}"))
    };
    let (token, bias) = match text.find(['=', '+', '-']) {
        Some(i) if text.as_bytes()[i] == b'=' => (&text[..i], &text[i + 1..]),
        Some(i) => (&text[..i], &text[i..]),
        None => return Err(bad()),
    };
    let token: u32 = token.trim().parse().map_err(|_| bad())?;
    let bias: f32 = bias.trim().trim_start_matches('+').parse().map_err(|_| bad())?;
    Ok((token, bias))
}

pub fn load_options(args: &RunArgs) -> LoadOptions {
    LoadOptions {
        n_gpu_layers: args.n_gpu_layers,
        main_gpu: args.main_gpu,
        rpc: args.rpc.clone(),
        unit: args.unit,
    }
}

/// Prints a warning for each RPC server address that is not loopback or private.
pub fn warn_exposed(endpoints: &[Endpoint]) {
    for e in endpoints {
        if let Some(w) = exposure_warning(e) {
            eprintln!("mood: warning: {w}");
        }
    }
}

/// Loads the policies' models (after warning about RPC servers on addresses that are not
/// loopback or private), and the draft model if one is given.
pub fn load_engine(policies: &[Policy], args: &RunArgs) -> Result<Engine> {
    let options = load_options(args);
    if rpc::AVAILABLE {
        warn_exposed(&rpc_endpoints(policies, &options)?);
    }
    let mut engine = Engine::load(policies, options)?;
    engine.set_strategy_cache(strategy_cache(), remeasure());
    if let Some(path) = &args.draft_model {
        engine.load_draft_model(path, args.n_gpu_layers)?;
    }
    Ok(engine)
}

/// The file in which `auto` keeps its measurements: `$MOOD_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/mood`, else `~/.cache/mood`, then `strategy.json`. `None` without a home.
pub fn strategy_cache() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let dir = var("MOOD_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("mood")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/mood")))?;
    Some(dir.join("strategy.json"))
}

/// Whether `MOOD_STRATEGY_REMEASURE` asks `auto` to measure again.
pub fn remeasure() -> bool {
    std::env::var_os("MOOD_STRATEGY_REMEASURE").is_some_and(|v| v != "0")
}

pub fn session_options(args: &RunArgs) -> Result<SessionOptions> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(SessionOptions {
        threads: args.threads.map_or(cores, usize::from),
        ctx_size: match args.ctx_size {
            Some(n) if n < MIN_CTX => {
                return Err(invalid(
                    "ctx_size",
                    format!("must be at least {MIN_CTX} tokens, got {n}"),
                ))
            }
            Some(n) => n,
            // The engine's default: 4096, or the models' trained context if less.
            None => 0,
        },
        strategy: args.strategy,
    })
}

/// A progress bar on stderr counting `what` (done/total, a message, ETA) when stderr is a
/// terminal; nothing in pipes.
pub fn progress_bar(total: Option<u64>, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    // Without a known total (an input that is a stream) it counts up.
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let template = format!("{{bar:30}} {{pos}}/{{len}} {what}  {{msg}}  ETA {{eta}}");
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// The flag a setting is given with on the command line.
pub fn flag(setting: &str) -> String {
    format!("--{}", setting.replace('_', "-"))
}

/// An error as one line for the command line: causes joined with ": ", settings named by
/// their flags.
pub fn one_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e
        .chain()
        .map(|c| match c.downcast_ref::<SettingError>() {
            Some(s) => s.render(&flag),
            None => c.to_string(),
        })
        .collect();
    parts.join(": ").replace('\n', " ")
}

/// The model name answers carry when no alias is given: mood-<recipe or model file name>.
pub fn model_name(policies: &PolicyArgs) -> String {
    policies
        .recipe
        .as_ref()
        .or(policies.model.as_ref())
        .and_then(|p| p.file_stem())
        .map_or_else(|| "mood".to_string(), |s| format!("mood-{}", s.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_flags_build_a_recipe() {
        let m = PathBuf::from("m.gguf");
        let r = from_flags(Some(&m), &[], &["A".into(), "B".into()], &[]).unwrap();
        assert_eq!(r.experts.len(), 2);
        assert_eq!(r.experts[1].prefix, "B");
        assert_eq!(r.reference.unwrap().model, m);
        assert_eq!(r.weights, vec![0.5, 0.5]);
        let single = from_flags(Some(&m), &[], &[], &[]).unwrap();
        assert_eq!(single.experts.len(), 1);
        assert_eq!(single.weights, vec![1.0]);
        let files = from_flags(None, &["x.gguf".into()], &[], &[]).unwrap();
        assert!(files.reference.is_none());
        assert!(from_flags(None, &[], &["A".into()], &[]).is_err());
        assert!(from_flags(None, &[], &[], &[]).is_err());
        assert!(from_flags(None, &[], &[], &["a.gguf".into()]).is_err());
        let l = from_flags(Some(&m), &[], &[], &["a.gguf".into()]).unwrap();
        assert_eq!(l.experts[0].lora, Some(("a.gguf".into(), 1.0)));
    }

    #[test]
    fn logit_bias_flags_parse_both_forms() {
        assert_eq!(parse_bias("12=-3.5").unwrap(), (12, -3.5));
        assert_eq!(parse_bias("12+2").unwrap(), (12, 2.0));
        assert_eq!(parse_bias("12-2").unwrap(), (12, -2.0));
        for bad in ["", "12", "x=1", "12=", "=3", "-1=2"] {
            assert!(parse_bias(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_flags() {
        let e = anyhow::Error::new(SettingError::new("top_p", "must be in (0, 1], got 2"))
            .context("input line 3");
        assert_eq!(one_line(&e), "input line 3: --top-p must be in (0, 1], got 2");
    }
}
