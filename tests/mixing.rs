//! One output-layer product per lane (`--strategy mixed`): the combined logits computed as
//! W·Σ_j c_j·h_j inside llama.cpp agree with Σ_j c_j·logits_j from each policy's own pass up
//! to llama.cpp's batch noise, for weights summing to 1, weights that need the reference, a
//! negative weight, and several lanes; every case where the identity does not hold falls
//! back to the per-policy path and says why; and `auto` measures and remembers.

mod common;

use common::*;
use llama_cpp_2::token::LlamaToken;
use mood::pipeline::combine::{log_softmax, Combiner};
use mood::pipeline::engine::{Engine, Session, SessionOptions, Strategy};
use mood::pipeline::recipe::Recipe;
use serde_json::Value;

const PROMPTS: [&str; 2] = ["The ocean", "My town has a mill"];

fn options(strategy: Strategy) -> SessionOptions {
    SessionOptions { threads: 2, ctx_size: 256, strategy }
}

/// Opens a two-lane session of the recipe's policies, each lane with its prompt; with `mix`
/// the lanes mix with the recipe's coefficients.
fn lanes(engine: &Engine, recipe: &Recipe, strategy: Strategy, mix: bool) -> Session {
    let members = recipe.members().unwrap();
    let mut session = engine.open_session(&members, PROMPTS.len(), options(strategy)).unwrap();
    let coeffs: Vec<f32> = recipe.terms().unwrap().iter().map(|(_, c)| *c as f32).collect();
    for (lane, prompt) in PROMPTS.iter().enumerate() {
        let prompts: Vec<_> =
            members
                .iter()
                .map(|&m| {
                    Some(engine.tokenize(
                        m,
                        &format!("{}{prompt}", recipe.policies().nth(m).unwrap().prefix),
                    ))
                })
                .collect();
        session.prefill_lane(lane, &prompts, false, mix.then(|| coeffs.clone())).unwrap();
    }
    session
}

fn total_variation(a: &[f32], b: &[f32]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    log_softmax(&mut a);
    log_softmax(&mut b);
    a.iter().zip(&b).map(|(x, y)| (f64::from(*x).exp() - f64::from(*y).exp()).abs()).sum::<f64>()
        / 2.0
}

#[test]
fn mixed_logits_equal_the_weighted_sum_of_each_policys_logits_up_to_batch_noise() {
    // Prompted experts (the demo), and a LoRA expert next to its base model.
    for file in [demo_recipe(), root().join("models/lora.toml")] {
        check_mixing(&file);
    }
}

fn check_mixing(file: &std::path::Path) {
    let policies: Vec<_> = Recipe::load(file).unwrap().policies().cloned().collect();
    let engine = common::engine(&policies, Default::default()).unwrap();
    let n = engine.n_common_vocab();
    let mut compared = 0;
    let (mut worst_tv, mut worst_top) = (0f64, 0f32);
    for weights in [[0.5, 0.5], [0.6, 0.8], [1.5, -0.5]] {
        let mut recipe = Recipe::load(file).unwrap();
        recipe.set_weights(weights.to_vec()).unwrap();
        let mut combiner = Combiner::new(recipe.divergence, &recipe.terms().unwrap(), 0.0).unwrap();
        // Each policy's own logits from the same kind of context and the same batches (the
        // mixed strategy without a mix): what differs is only where the weighted sum is taken.
        let mut per_policy = lanes(&engine, &recipe, Strategy::Mixed, false);
        let mut mixed = lanes(&engine, &recipe, Strategy::Mixed, true);
        let k = recipe.members().unwrap().len();
        let mut combined = vec![0f32; n];
        for step in 0..12 {
            let mut tokens = Vec::new();
            for lane in 0..PROMPTS.len() {
                let inputs: Vec<&[f32]> = (0..k).map(|m| per_policy.logits_in(m, lane)).collect();
                combiner.combine(&inputs, true, &mut combined);
                let want = argmax(&combined);
                if step > 0 {
                    let got = mixed.mixed_logits(lane).expect("the lane mixes");
                    let tv = total_variation(got, &combined);
                    assert!(tv < 0.05, "w={weights:?} lane {lane} step {step}: TV {tv}");
                    let top = got[want as usize] - combined[want as usize];
                    (worst_tv, worst_top) = (worst_tv.max(tv), worst_top.max(top.abs()));
                    assert!(
                        top.abs() < 0.5,
                        "w={weights:?} lane {lane} step {step}: top logit moved {top}"
                    );
                    let mut order: Vec<usize> = (0..n).collect();
                    order.sort_by(|&x, &y| combined[y].total_cmp(&combined[x]));
                    if combined[order[0]] - combined[order[1]] > 0.5 {
                        assert_eq!(argmax(got), want, "w={weights:?} lane {lane} step {step}");
                        compared += 1;
                    }
                } else {
                    assert!(
                        mixed.mixed_logits(lane).is_none(),
                        "a prefill gives each policy's logits"
                    );
                }
                tokens.push(Some(LlamaToken(want as i32)));
            }
            per_policy.step(&tokens).unwrap();
            mixed.step(&tokens).unwrap();
        }
    }
    assert!(compared >= 24, "{}: only {compared} tie-free steps compared", file.display());
    eprintln!(
        "mixing {}: {compared} tie-free steps equal; largest TV {worst_tv:.4}, top logit {worst_top:.3}",
        file.display()
    );
}

fn scratch_recipe(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-mixing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn generate_json(args: &[&str]) -> Value {
    let mut all = vec!["generate", "-n", "6", "--json"];
    if !args.contains(&"-p") {
        all.extend(["-p", "The ocean"]);
    }
    all.extend_from_slice(args);
    mood_json(&all)
}

fn why(v: &Value) -> (bool, String) {
    let t = &v["timings"];
    (t["mixed"].as_bool().unwrap(), t["unmixed_because"].as_str().unwrap_or("").to_string())
}

#[test]
fn every_case_the_identity_does_not_cover_falls_back_and_says_why() {
    let demo = demo_recipe();
    let d = demo.to_str().unwrap();
    let model = default_model();
    let mixed = ["--strategy", "mixed"];
    // Mixed where it may be: greedy, and exact sampling (no plausibility set).
    let (on, _) = why(&generate_json(&[&["-r", d], &mixed[..]].concat()));
    assert!(on, "greedy reverse-kl on prompted experts mixes");
    let exact = [&["-r", d, "--temperature", "1", "--plausibility", "0"], &mixed[..]].concat();
    assert!(why(&generate_json(&exact)).0, "exact sampling needs only the weighted sum");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-r", d, "--strategy", "threads"], "the strategy is not mixed"),
        (vec!["-r", d, "--strategy", "batched"], "the strategy is not mixed"),
        (vec!["-r", d, "-d", "jsd", "--strategy", "mixed"], "divergence"),
        (vec!["-r", d, "--temperature", "1", "--strategy", "mixed"], "plausibility"),
        (vec!["-m", model.to_str().unwrap(), "--strategy", "mixed"], "one policy"),
    ];
    for (args, want) in cases {
        let (on, reason) = why(&generate_json(&args));
        assert!(!on && reason.contains(want), "{args:?}: mixed={on} because {reason:?}");
    }
    // Policies on different model files.
    let (a, b) = (tiny("a"), tiny("c"));
    let two = scratch_recipe(
        "two-files.toml",
        &format!("[[expert]]\nmodel = {a:?}\n[[expert]]\nmodel = {b:?}\n"),
    );
    let (on, reason) =
        why(&generate_json(&["-r", two.to_str().unwrap(), "-p", "cat", "--strategy", "mixed"]));
    assert!(!on && reason.contains("different contexts"), "{reason}");
    // A LoRA expert next to the base model shares its context and mixes...
    let lora = root().join("models/lora.toml");
    assert!(why(&generate_json(&["-r", lora.to_str().unwrap(), "--strategy", "mixed"])).0);
    // ...unless the adapter changes the output layer.
    let out = root().join("models/fixtures/tiny-lora-output.gguf");
    let adapted = scratch_recipe(
        "output-lora.toml",
        &format!("[[expert]]\nmodel = {a:?}\n[[expert]]\nmodel = {a:?}\nlora = {out:?}\n"),
    );
    let (on, reason) =
        why(&generate_json(&["-r", adapted.to_str().unwrap(), "-p", "cat", "--strategy", "mixed"]));
    assert!(!on && reason.contains("adapter changes the output layer"), "{reason}");
    // A model whose logits are soft-capped.
    let c = tiny("c");
    let args =
        ["-m", c.to_str().unwrap(), "--prefix", "the ", "--prefix", "a ", "--strategy", "mixed"];
    let (on, reason) = why(&generate_json(&args));
    assert!(!on && reason.contains("soft-caps"), "{reason}");
    // The same two experts on a model without soft-capping do mix.
    let a = tiny("a");
    let args =
        ["-m", a.to_str().unwrap(), "--prefix", "the ", "--prefix", "a ", "--strategy", "mixed"];
    assert!(why(&generate_json(&args)).0);
}

#[test]
fn auto_measures_once_remembers_and_measures_again_on_request() {
    let cache = std::env::temp_dir().join(format!("mood-auto-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let demo = demo_recipe();
    let bench = |remeasure: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mood"));
        c.args(["bench", "-r", demo.to_str().unwrap(), "-n", "4", "--rounds", "1", "--memory", ""])
            .args(["--strategies", "threads", "--json"])
            .env("MOOD_CACHE_DIR", &cache);
        if remeasure {
            c.env("MOOD_STRATEGY_REMEASURE", "1");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["auto"].clone()
    };
    let first = bench(false);
    assert_eq!(first["cached"], false);
    let times: Vec<(String, f64)> = first["step_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
        .collect();
    let names: Vec<&str> = times.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["threads", "batched", "mixed"], "every candidate is measured");
    let fastest = times.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    // A steady measurement is remembered; one taken while the cores were busy (the step
    // times spread even when measured twice) is not, and the next process measures again
    // (and may keep what it measures, if the cores are quiet by then).
    let kept = cache.join("strategy.json").exists();
    if first["steady"] == true {
        assert_eq!(first["strategy"], fastest.0.as_str(), "auto runs the fastest");
        assert!(kept, "a steady measurement is kept");
        let second = bench(false);
        assert_eq!(second["cached"], true, "remembered");
        assert_eq!(second["strategy"], first["strategy"]);
        assert_eq!(bench(true)["cached"], false, "measured again when asked");
    } else {
        assert_eq!(first["steady"], false);
        assert_eq!(first["strategy"], "mixed", "too busy to tell: the least work per step");
        assert!(!kept, "an unsteady measurement is not kept");
        assert_eq!(bench(false)["cached"], false, "measured again");
    }
}
