//! End-to-end decode benchmark: MOD with the demo recipe (two prompted experts) next to the
//! default model decoding alone, in the same process, with the same threads, prompt and
//! token count, for each strategy; median of 3 alternating rounds. The same measurement as
//! `mood bench --recipe models/demo.toml`. Needs the default model (models/setup.sh).

use mood::bench::{self, Plan};
use mood::decode::Settings;
use mood::engine::{SessionOptions, Strategy};
use mood::recipe::Recipe;
use mood::sample::SamplingParams;
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
        settings: Settings {
            max_tokens: 128,
            stops: Vec::new(),
            sampling: SamplingParams { temperature: 0.0, ..SamplingParams::default() },
            plausibility: mood::combine::DEFAULT_PLAUSIBILITY,
            session: SessionOptions { threads, ctx_size: 1024, strategy: Strategy::Auto },
        },
        strategies: vec![Strategy::Threads, Strategy::Batched],
        rounds: 3,
        load: Default::default(),
    };
    let report = bench::run(&plan, &mut |line| eprintln!("{line}")).unwrap_or_else(|e| {
        eprintln!("decode bench: {e:#}");
        std::process::exit(1);
    });
    for s in &report.single {
        println!("alone  {:<28} {:>7.1} tok/s", s.model, s.tokens_per_second);
    }
    for m in &report.r#mod {
        println!(
            "MOD    {:<8} {} policies  {:>7.1} tok/s  ratio {:.2}  forward {:.2} ms  combine {:.3} ms  sample {:.3} ms",
            m.strategy, m.policies, m.tokens_per_second, m.ratio, m.forward_ms, m.combine_ms, m.sample_ms
        );
    }
}
