//! Constrained MOD and log-probabilities on the default model: JSON-schema outputs parse and
//! validate for every divergence, greedy and sampled; greedy tokens are the argmax of the
//! masked combination computed independently (plain llama.cpp contexts, the grammar asked
//! about every token, f64); reported log-probabilities equal the combined distribution and
//! each policy's own, computed the same independent way.

mod common;

use common::*;
use mood::pipeline::constraint::{Constraint, ConstraintSpec};
use mood::pipeline::decode::{self, Generation};
use mood::pipeline::engine::{Engine, SessionOptions, Strategy};
use mood::pipeline::recipe::Recipe;
use mood::pipeline::sample::SamplingParams;
use mood::pipeline::settings::Settings;
use serde_json::{json, Value};

const PROMPT: &str = "A character sheet, as JSON:";

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "mood": {"enum": ["happy", "sad", "calm"]}
        },
        "required": ["name", "age", "mood"],
        "additionalProperties": false
    })
}

/// Checks `v` against [`schema`], written out by hand.
fn validates(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("not an object")?;
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["age", "mood", "name"] {
        return Err(format!("keys {keys:?}"));
    }
    let name = o["name"].as_str().ok_or("name is not a string")?;
    if name.chars().count() > 16 {
        return Err(format!("name {name:?} is too long"));
    }
    let age = o["age"].as_i64().ok_or("age is not an integer")?;
    if !(0..=150).contains(&age) {
        return Err(format!("age {age} is out of range"));
    }
    if !["happy", "sad", "calm"].contains(&o["mood"].as_str().unwrap_or_default()) {
        return Err(format!("mood {}", o["mood"]));
    }
    Ok(())
}

fn options() -> SessionOptions {
    SessionOptions { threads: 2, ctx_size: 512, strategy: Strategy::Threads }
}

fn settings(temperature: f64, seed: u64, constraint: Option<ConstraintSpec>) -> Settings {
    Settings {
        max_tokens: 96,
        stops: vec![],
        sampling: SamplingParams {
            temperature,
            repeat_penalty: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        plausibility: 0.0,
        byte_tolerance: mood::pipeline::bytes::DEFAULT_TOLERANCE,
        constraint,
        logprobs: None,
        draft_max: 0,
    }
}

fn load() -> (Engine, Recipe) {
    let recipe = Recipe::load(&demo_recipe()).unwrap();
    let policies: Vec<_> = recipe.policies().cloned().collect();
    (common::engine(&policies, Default::default()).unwrap(), recipe)
}

fn run(engine: &Engine, recipe: &Recipe, s: &Settings) -> Generation {
    decode::generate(engine, recipe, PROMPT, s, options(), &mut |_| {}).unwrap()
}

#[test]
fn json_schema_outputs_parse_and_validate_for_every_divergence() {
    let (engine, base) = load();
    let spec = ConstraintSpec::JsonSchema(schema());
    for div in ["reverse-kl", "forward-kl", "jsd", "alpha:0.5", "jeffreys"] {
        let mut recipe = base.clone();
        recipe.divergence = div.parse().unwrap();
        for (temperature, seed) in [(0.0, 0), (0.9, 1), (0.9, 2), (1.5, 3)] {
            let mut s = settings(temperature, seed, Some(spec.clone()));
            s.plausibility = 1e-4;
            let g = run(&engine, &recipe, &s);
            let what = format!("{div} T={temperature} seed {seed}: {:?}", g.text);
            assert_eq!(g.finish_reason, decode::FinishReason::Eog, "{what}");
            let v: Value = serde_json::from_str(&g.text).unwrap_or_else(|e| panic!("{what}: {e}"));
            validates(&v).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

/// The policies' logits step by step along `tokens`, from plain llama.cpp contexts, each
/// policy's prompt its prefix and [`PROMPT`]: `steps[i][k]` is term `k`'s before token `i`.
fn replay(recipe: &Recipe, tokens: &[u32]) -> Vec<Vec<Vec<f32>>> {
    let model = load_model(&default_model());
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let members = recipe.members().unwrap();
    let mut contexts: Vec<Plain> = members.iter().map(|_| Plain::new(&model, 512, 2)).collect();
    let mut now: Vec<Vec<f32>> = members
        .iter()
        .zip(&mut contexts)
        .map(|(&m, c)| c.prompt(&format!("{}{PROMPT}", policies[m].prefix)))
        .collect();
    let mut steps = Vec::new();
    for &t in tokens {
        steps.push(now.clone());
        now = contexts.iter_mut().map(|c| c.feed(t)).collect();
    }
    steps.push(now);
    steps
}

/// Σ_k c_k·log_softmax(l_k) over the first `n` tokens, in f64.
fn combined(recipe: &Recipe, logits: &[Vec<f32>], n: usize) -> Vec<f64> {
    let terms = recipe.terms().unwrap();
    let mut out = vec![0f64; n];
    for ((_, c), l) in terms.iter().zip(logits) {
        for (o, x) in out.iter_mut().zip(log_softmax64(&l[..n])) {
            *o += c * x;
        }
    }
    out
}

#[test]
fn greedy_tokens_are_the_argmax_of_the_masked_combination() {
    let (engine, base) = load();
    let n = engine.n_common_vocab();
    let spec = ConstraintSpec::JsonSchema(schema());
    let (mut compared, mut near_ties) = (0, 0);
    for weights in [[0.5, 0.5], [0.6, 0.8], [1.5, -0.5]] {
        let mut recipe = base.clone();
        recipe.set_weights(weights.to_vec()).unwrap();
        let g = run(&engine, &recipe, &settings(0.0, 0, Some(spec.clone())));
        let steps = replay(&recipe, &g.tokens);
        // A grammar of its own, asked about the whole vocabulary at every step.
        let mut grammar = engine.grammar(&spec).unwrap();
        let mut allowed = Vec::new();
        for (i, &t) in g.tokens.iter().enumerate() {
            grammar.allowed(n, &mut allowed);
            assert!(allowed[t as usize], "w={weights:?} step {i}: token {t} is not allowed");
            let scores = combined(&recipe, &steps[i], n);
            let mut best: Vec<(usize, f64)> =
                (0..n).filter(|&v| allowed[v]).map(|v| (v, scores[v])).collect();
            best.sort_by(|a, b| b.1.total_cmp(&a.1));
            let gap = best.get(1).map_or(f64::INFINITY, |s| best[0].1 - s.1);
            if gap > 0.2 {
                assert_eq!(t as usize, best[0].0, "w={weights:?} step {i}: {:?}", g.text);
                compared += 1;
            } else {
                near_ties += 1;
            }
            grammar.accept(t).unwrap();
        }
    }
    eprintln!("{compared} steps compared, {near_ties} near-ties skipped");
    assert!(compared >= 30, "only {compared} tie-free steps");
    assert!(near_ties * 5 <= compared, "{near_ties} near-ties of {compared}");
}

#[test]
fn logprobs_equal_the_combined_distribution_and_each_policys_own() {
    let (engine, recipe) = load();
    let n = engine.n_common_vocab();
    for (temperature, constraint) in [
        (0.0, None),
        (0.8, None),
        (0.0, Some(ConstraintSpec::JsonSchema(schema()))),
        (0.8, Some(ConstraintSpec::JsonObject)),
    ] {
        let mut s = settings(temperature, 4, constraint.clone());
        s.max_tokens = 24;
        s.logprobs = Some(5);
        let g = run(&engine, &recipe, &s);
        assert_eq!(g.logprobs.len(), g.tokens.len());
        assert_eq!(g.policies, vec!["poet", "scientist"]);
        let steps = replay(&recipe, &g.tokens);
        let mut grammar = constraint.as_ref().map(|c| engine.grammar(c).unwrap());
        let mut allowed = vec![true; n];
        for (i, (lp, &t)) in g.logprobs.iter().zip(&g.tokens).enumerate() {
            let what = format!("T={temperature} {constraint:?} step {i}");
            if let Some(gr) = grammar.as_mut() {
                gr.allowed(n, &mut allowed);
            }
            let scores = combined(&recipe, &steps[i], n);
            let masked: Vec<f64> =
                (0..n).map(|v| if allowed[v] { scores[v] } else { f64::NEG_INFINITY }).collect();
            let want = log_softmax_f64(&masked);
            assert_eq!(lp.chosen.token, t);
            assert!(
                (f64::from(lp.chosen.logprob) - want[t as usize]).abs() < 2e-3,
                "{what}: {} vs {}",
                lp.chosen.logprob,
                want[t as usize]
            );
            for (k, l) in steps[i].iter().enumerate() {
                let own = log_softmax64(&l[..n])[t as usize];
                assert!((f64::from(lp.policies[k]) - own).abs() < 2e-3, "{what} policy {k}");
            }
            // Under a constraint only the allowed tokens within 30 nats of the best allowed one
            // are asked about (e^-30 of its probability and less is left out).
            let best = want.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let floor = if constraint.is_some() { best - 30.0 + 1e-3 } else { f64::NEG_INFINITY };
            let possible = want.iter().filter(|w| w.is_finite() && **w >= floor).count();
            assert_eq!(lp.top.len(), possible.min(5), "{what}");
            assert!(lp.top.windows(2).all(|w| w[0].logprob >= w[1].logprob), "{what}");
            let mass: f64 = lp.top.iter().map(|a| f64::from(a.logprob).exp()).sum();
            assert!(mass <= 1.0 + 1e-5, "{what}: {mass}");
            for a in &lp.top {
                assert!(allowed[a.token as usize], "{what}: {} is not allowed", a.token);
                assert!((f64::from(a.logprob) - want[a.token as usize]).abs() < 2e-3, "{what}");
            }
            if let Some(gr) = grammar.as_mut() {
                gr.accept(t).unwrap();
            }
        }
    }
}

#[test]
fn bad_grammars_and_schemas_are_refused_with_the_setting_named() {
    let (engine, _) = load();
    let cases = [
        (ConstraintSpec::Grammar("root ::= \"a\" undefined".into()), "grammar"),
        (ConstraintSpec::Grammar("root ::= root \"a\"".into()), "grammar"),
        (ConstraintSpec::Grammar("rule ::= \"a\"".into()), "grammar"),
        (ConstraintSpec::Grammar("root ::= \"a\"{100000}".into()), "grammar"),
        (
            ConstraintSpec::JsonSchema(
                json!({"type": "object", "properties": {"a": {"$ref": "#/nope"}}}),
            ),
            "json_schema",
        ),
        (ConstraintSpec::JsonSchema(json!(["not", "a", "schema"])), "json_schema"),
    ];
    for (spec, setting) in cases {
        let e = engine.grammar(&spec).unwrap_err();
        let s = e
            .downcast_ref::<mood::error::SettingError>()
            .unwrap_or_else(|| panic!("{spec:?}: {e:#}"));
        assert_eq!(s.setting, setting, "{spec:?}: {s}");
    }
}
