//! End-to-end decode benchmark: MOD with the demo recipe (two prompted experts) next to the
//! default model decoding alone, in the same process, with the same threads, prompt and
//! token count, for each strategy; median of 3 alternating rounds. The same measurement as
//! `mood bench --recipe models/demo.toml`. Then batch throughput: 16 prompts decoded one after
//! another against all 16 at once (`mood batch --parallel 16`), aggregate tokens per second
//! of wall time. Needs the default model (models/setup.sh).

use mood::apps::bench::{self, Plan};
use mood::pipeline::decode::{decode_all, Request};
use mood::pipeline::engine::{Engine, SessionOptions, Strategy};
use mood::pipeline::recipe::Recipe;
use mood::pipeline::settings::Settings;
use std::path::Path;

fn main() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo.toml");
    let recipe = match Recipe::load(&demo) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("decode bench: {e:#}");
            std::process::exit(1);
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = Plan {
        recipe: &recipe,
        prompt: "The harbour town woke slowly. Fishing boats rocked against the stone quay, and \
                 everyone in town agreed that the ocean",
        settings: Settings { max_tokens: 128, ..Settings::default() },
        session: SessionOptions { threads, ctx_size: 1024, strategy: Strategy::Auto },
        strategies: vec![Strategy::Threads, Strategy::Batched, Strategy::Mixed],
        rounds: 3,
        load: Default::default(),
        draft_model: None,
        // `auto` measures afresh once per run; its engines share the measurement.
        strategy_cache: Some(
            std::env::temp_dir().join(format!("mood-bench-{}.json", std::process::id())),
        ),
        remeasure: false,
    };
    let report = bench::run(&plan, &mut |line| eprintln!("{line}")).unwrap_or_else(|e| {
        eprintln!("decode bench: {e:#}");
        std::process::exit(1);
    });
    for s in &report.single {
        println!("alone  {:<28} {:>7.1} tok/s", s.model, s.tokens_per_second);
    }
    batch_throughput(&recipe, &plan.settings, plan.session);
    for m in &report.r#mod {
        println!(
            "MOD    {:<8}{} {} policies  {:>7.1} tok/s  ratio {:.2}  forward {:.2} ms  combine {:.3} ms  sample {:.3} ms  {:.2} tokens/pass",
            m.strategy,
            if m.draft_max > 0 { "+spec" } else { "     " },
            m.policies,
            m.tokens_per_second,
            m.ratio,
            m.forward_ms,
            m.combine_ms,
            m.sample_ms,
            m.tokens_per_pass
        );
    }
}

/// 16 prompts with `parallel` 1 and 16, two alternating rounds each; prints aggregate tok/s.
fn batch_throughput(recipe: &Recipe, settings: &Settings, session: SessionOptions) {
    let prompts = [
        "The ocean",
        "The moon",
        "A river",
        "The forest",
        "My town",
        "The sky",
        "A mountain",
        "The city",
        "Winter",
        "The garden",
        "A storm",
        "The desert",
        "Morning",
        "The library",
        "A train",
        "The sea",
    ];
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = Engine::load(&policies, Default::default()).expect("the model loads");
    let mut settings = settings.clone();
    settings.max_tokens = 48;
    settings.draft_max = 0;
    let session = SessionOptions { ctx_size: 512, ..session };
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _round in 0..2 {
        for (k, parallel) in [1usize, 16].into_iter().enumerate() {
            let requests = prompts
                .iter()
                .map(|p| {
                    Request::new(
                        recipe.clone(),
                        settings.clone(),
                        engine.prompt_tokens(p).expect("a prompt"),
                        false,
                    )
                })
                .collect();
            let started = std::time::Instant::now();
            let mut tokens = 0;
            decode_all(&engine, requests, parallel, session, &mut |_, g| {
                tokens += g.map(|g| g.tokens.len()).unwrap_or(0);
                Ok(())
            })
            .expect("batch decodes");
            let rate = tokens as f64 / started.elapsed().as_secs_f64();
            eprintln!("batch of 16, parallel {parallel}: {rate:.1} tok/s");
            rates[k].push(rate);
        }
    }
    let (one, sixteen) = (bench::median(rates[0].clone()), bench::median(rates[1].clone()));
    println!("batch  16 prompts  parallel 1: {one:.1} tok/s  parallel 16: {sixteen:.1} tok/s  ratio {:.2}", sixteen / one);
}
