//! The cost of K objectives (`mood::apps::bench::curve`): MOD with K = 1, 2, 4, 8 prompted
//! experts on each model file under each strategy, as a ratio to the model alone, next to
//! what the cost model predicts from single passes. Prints a table, writes `curve.json` and
//! the figure `curve.png` / `curve.svg` to `target/cost-curve/`.
//! `cargo bench --bench curve -- [--rounds R] [--tokens N] [MODEL.gguf …]`; without models:
//! the default and assistant models and whichever bench models `models/make-bench-models.sh`
//! made.

use mood::apps::bench::curve::{self, CurvePlan, COUNTS};
use mood::apps::plot;
use mood::pipeline::engine::Strategy;
use std::path::{Path, PathBuf};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (mut rounds, mut tokens, mut models) = (3, 32, Vec::<PathBuf>::new());
    while let Some(a) = args.next() {
        let mut number = |what: &str| {
            args.next()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&v| v > 0)
                .unwrap_or_else(|| fail(&format!("{what} needs a positive number")))
        };
        match a.as_str() {
            "--rounds" => rounds = number("--rounds"),
            "--tokens" => tokens = number("--tokens"),
            _ => models.push(PathBuf::from(a)),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if models.is_empty() {
        models = [
            "gemma-3-270m-q4_k_m.gguf",
            "smollm2-135m-instruct-q4_1.gguf",
            "bench-0.5b-q4_k_m.gguf",
            "bench-1b-q4_k_m.gguf",
            "bench-3b-q4_k_m.gguf",
        ]
        .iter()
        .map(|f| root.join("models").join(f))
        .filter(|p| p.exists())
        .collect();
    }
    mood::silence_llama_log();
    let plan = CurvePlan {
        models,
        counts: COUNTS.to_vec(),
        strategies: vec![Strategy::Threads, Strategy::Batched, Strategy::Mixed],
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rounds,
        pass_rounds: 9,
        max_tokens: tokens,
        prompt: "The harbour town woke slowly, and the ocean".into(),
    };
    let curve = curve::run(&plan, &mut |line| eprintln!("{line}"))
        .unwrap_or_else(|e| fail(&format!("{e:#}")));
    println!(
        "{}, {} threads, {} tokens, medians of {} rounds\n",
        curve.cpu, curve.threads, curve.max_tokens, curve.rounds
    );
    println!("| model | K | strategy | tok/s | alone tok/s | ÷ alone | predicted | error |");
    println!("|---|---|---|---|---|---|---|---|");
    for p in &curve.points {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:+.0} % |",
            p.model,
            p.k,
            p.strategy,
            p.tokens_per_second,
            p.single_tokens_per_second,
            p.ratio,
            p.predicted,
            100.0 * p.error
        );
    }
    let dir = root.join("target/cost-curve");
    let written = std::fs::create_dir_all(&dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            Ok(std::fs::write(dir.join("curve.json"), serde_json::to_string_pretty(&curve)?)?)
        })
        .and_then(|()| plot::curve::cost_curve(&curve, &dir.join("curve")));
    match written {
        Ok((png, _)) => println!("\nfigure: {}", png.display()),
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn fail(why: &str) -> ! {
    eprintln!("curve bench: {why}");
    std::process::exit(1);
}
