//! MOD over bytes against each model alone: `models/pair.toml` (Gemma 3 270M and SmolLM2 135M
//! Instruct, different tokenizers) at weights (0.5, 0.5), next to each model decoding alone
//! over its own tokens, in the same process, greedy, the same prompt, threads and byte
//! budget; bytes of text per second of decode time, median of alternating rounds. Also each
//! model alone through the byte path (weights (1, 0) and (0, 1)), the pair with its models
//! side by side rather than taking turns, and the passes per byte. Needs the default and the
//! assistant models (models/setup.sh). `cargo bench --bench bytes -- ROUNDS BYTES`.

use mood::pipeline::bytes::{Unit, DEFAULT_TOLERANCE};
use mood::pipeline::decode::{self, bytes::generate_bytes, Generation};
use mood::pipeline::engine::{Engine, LoadOptions, SessionOptions, Strategy};
use mood::pipeline::recipe::Recipe;
use mood::pipeline::settings::Settings;
use std::path::Path;

const PROMPT: &str = "The history of the Roman Empire";

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let budget: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    mood::silence_llama_log();
    let pair = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/pair.toml");
    let recipe = Recipe::load(&pair).unwrap_or_else(|e| fail(e));
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = SessionOptions { threads, ctx_size: 1024, strategy: Strategy::Threads };
    let load = |policies: &[_], unit| {
        Engine::load(policies, LoadOptions { unit, ..Default::default() })
            .unwrap_or_else(|e| fail(e))
    };
    let both = load(&policies, Unit::Bytes);
    let alone: Vec<(String, Engine, Recipe)> = policies
        .iter()
        .map(|p| {
            let mut one = recipe.clone();
            one.experts.retain(|e| e.name == p.name);
            one.weights = vec![1.0];
            (p.name.clone(), load(std::slice::from_ref(p), Unit::Tokens), one)
        })
        .collect();
    let greedy = |max_tokens| Settings {
        max_tokens,
        sampling: mood::pipeline::sample::SamplingParams {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..Default::default()
        },
        draft_max: 0,
        ..Settings::default()
    };
    let bytes_per_second = |g: &Generation| g.text.len() as f64 / (g.timings.decode_ms / 1e3);
    let mut rows: Vec<(String, Vec<f64>, Vec<String>)> = Vec::new();
    let mut record = |name: String, g: Generation| {
        let extra = g.bytes.as_ref().map(|b| format!("passes/byte {:?}", b.passes_per_byte));
        let speed = bytes_per_second(&g);
        match rows.iter_mut().find(|r| r.0 == name) {
            Some(r) => r.1.push(speed),
            None => rows.push((name, vec![speed], extra.into_iter().collect())),
        }
    };
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        for (name, engine, one) in &alone {
            // About as many tokens as the byte budget takes (4 bytes a token), then bytes/s.
            let prompts = engine.prompt_tokens(PROMPT).unwrap_or_else(|e| fail(e));
            let g = decode::generate_tokens(
                engine,
                one,
                prompts,
                &greedy(budget / 4),
                options,
                &mut |_| {},
            )
            .unwrap_or_else(|e| fail(e));
            record(format!("{name} alone, tokens"), g);
        }
        // The policies taking turns on the threads (what `auto` runs), and, for the pair,
        // side by side on their shares of the threads (`--strategy threads`).
        let turns = SessionOptions { strategy: Strategy::Auto, ..options };
        // Also the pair with a looser pruning tolerance (`--byte-tolerance 0.01`).
        let default = DEFAULT_TOLERANCE;
        let runs = [
            (vec![1.0, 0.0], turns, default, ""),
            (vec![0.0, 1.0], turns, default, ""),
            (vec![0.5, 0.5], turns, default, ""),
            (vec![0.5, 0.5], options, default, ", side by side"),
            (vec![0.5, 0.5], turns, 0.01, ", tolerance 0.01"),
        ];
        for (weights, how, tolerance, label) in runs {
            let mut r = recipe.clone();
            r.set_weights(weights.clone()).unwrap_or_else(|e| fail(e));
            let prompts = both.prompt_tokens(PROMPT).unwrap_or_else(|e| fail(e));
            let settings = Settings { byte_tolerance: tolerance, ..greedy(budget) };
            let g = generate_bytes(&both, &r, prompts, &settings, how, &mut |_| {})
                .unwrap_or_else(|e| fail(e));
            record(format!("pair {weights:?}, bytes{label}"), g);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let slowest_alone = rows
        .iter()
        .filter(|r| r.0.ends_with("alone, tokens"))
        .map(|r| median(&r.1))
        .fold(f64::INFINITY, f64::min);
    println!("bytes of text per second of decode, median of {rounds} rounds, {threads} threads");
    for (name, speeds, extra) in &rows {
        let m = median(speeds);
        println!(
            "{name:<40} {m:>7.1} B/s  {:>5.2}× the slower model alone  {}",
            m / slowest_alone,
            extra.join(" ")
        );
    }
}

fn fail(e: anyhow::Error) -> ! {
    eprintln!("bytes bench: {e:#}");
    std::process::exit(1);
}
