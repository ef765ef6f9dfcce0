//! Speculative MOD: drafts found by prompt lookup, checked by every policy in one pass, give
//! the output decoding without them gives. On a small F32 model (no batch noise to speak of)
//! greedy and sampled outputs equal the unspeculative ones token for token, for every
//! strategy and several divergences; sampled tokens follow the MOD distribution (a
//! goodness-of-fit test against the distribution recomputed one token at a time); dropping
//! rejected drafts leaves every cache as if they had never been fed; on the default model
//! every token is the MOD argmax recomputed independently, up to llama.cpp's batch noise.

mod common;

use common::*;
use mood::pipeline::combine::Combiner;
use mood::pipeline::decode::{decode_all, generate, Generation, Request};
use mood::pipeline::draft::EXPLORE_DRAFT;
use mood::pipeline::engine::{Engine, SessionOptions, Strategy};
use mood::pipeline::recipe::Recipe;
use mood::pipeline::sample::{Rng, SamplingParams};
use mood::pipeline::settings::Settings;
use std::path::Path;

/// The tiny model that continues cycles of words as reference and two prompted experts,
/// combined by `divergence`.
fn tiny_recipe(divergence: &str) -> Recipe {
    let model = tiny("cycle");
    // Reverse KL takes any weights (the reference's is 1 minus their sum); the others a
    // point of the simplex.
    let (wa, wb) = if divergence == "reverse-kl" { (0.7, 0.6) } else { (0.6, 0.4) };
    let text = format!(
        "divergence = {divergence:?}\n[reference]\nmodel = {model:?}\n\
         [[expert]]\nname = 'a'\nmodel = {model:?}\nprefix = 'the cat '\nweight = {wa}\n\
         [[expert]]\nname = 'b'\nmodel = {model:?}\nprefix = 'a dog '\nweight = {wb}\n"
    );
    Recipe::parse(&text, Path::new(".")).unwrap()
}

fn engine_of(recipe: &Recipe) -> Engine {
    let policies: Vec<_> = recipe.policies().cloned().collect();
    common::engine(&policies, Default::default()).unwrap()
}

fn settings(temperature: f64, seed: u64, draft_max: usize, max_tokens: usize) -> Settings {
    Settings {
        max_tokens,
        stops: vec![],
        sampling: SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        plausibility: 0.0,
        byte_tolerance: mood::pipeline::bytes::DEFAULT_TOLERANCE,
        constraint: None,
        logprobs: None,
        draft_max,
    }
}

fn options(strategy: Strategy) -> SessionOptions {
    SessionOptions { threads: 2, ctx_size: 256, strategy }
}

fn run(
    engine: &Engine,
    recipe: &Recipe,
    prompt: &str,
    s: &Settings,
    o: SessionOptions,
) -> Generation {
    generate(engine, recipe, prompt, s, o, &mut |_| {}).unwrap()
}

const PROMPTS: [&str; 3] = ["the a cat", "hello world good bad", "sun moon star sky blue red"];

#[test]
fn greedy_speculation_gives_the_unspeculative_tokens() {
    let (mut drafted, mut accepted) = (0, 0);
    for divergence in ["reverse-kl", "jsd", "forward-kl"] {
        let recipe = tiny_recipe(divergence);
        let engine = engine_of(&recipe);
        for strategy in [Strategy::Threads, Strategy::Batched, Strategy::Mixed] {
            for prompt in PROMPTS {
                let plain =
                    run(&engine, &recipe, prompt, &settings(0.0, 0, 0, 40), options(strategy));
                let fast =
                    run(&engine, &recipe, prompt, &settings(0.0, 0, 8, 40), options(strategy));
                let what = format!("{divergence} {strategy:?} {prompt:?}");
                assert_eq!(plain.tokens, fast.tokens, "{what}");
                assert_eq!(plain.timings.drafted, 0, "{what}");
                assert!(fast.timings.accepted <= fast.timings.drafted, "{what}");
                assert!(fast.timings.passes <= plain.timings.passes, "{what}");
                drafted += fast.timings.drafted;
                accepted += fast.timings.accepted;
            }
        }
    }
    eprintln!("{accepted} of {drafted} draft tokens accepted");
    assert!(accepted > 50, "speculation hardly ran: {accepted} of {drafted} accepted");
}

#[test]
fn sampled_speculation_gives_the_unspeculative_samples() {
    for divergence in ["reverse-kl", "jsd"] {
        let recipe = tiny_recipe(divergence);
        let engine = engine_of(&recipe);
        let mut accepted = 0;
        for seed in 0..24 {
            let prompt = PROMPTS[seed as usize % PROMPTS.len()];
            let o = options(Strategy::Batched);
            let plain = run(&engine, &recipe, prompt, &settings(1.0, seed, 0, 24), o);
            let fast = run(&engine, &recipe, prompt, &settings(1.0, seed, 8, 24), o);
            assert_eq!(plain.tokens, fast.tokens, "{divergence} seed {seed}");
            accepted += fast.timings.accepted;
        }
        assert!(accepted > 20, "{divergence}: speculation hardly ran ({accepted} accepted)");
    }
}

/// The MOD distribution after `prompt` and `tokens`, recomputed in plain llama.cpp contexts
/// one token at a time (no draft, no batch), combined in f64 from each policy's logits.
fn mod_distributions(recipe: &Recipe, prompt: &str, tokens: &[u32]) -> Vec<Vec<f64>> {
    let model = load_model(&tiny("cycle"));
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let members = recipe.members().unwrap();
    let mut contexts: Vec<Plain> = members.iter().map(|_| Plain::new(&model, 256, 1)).collect();
    let mut now: Vec<Vec<f32>> = members
        .iter()
        .zip(&mut contexts)
        .map(|(&m, c)| c.prompt(&format!("{}{prompt}", policies[m].prefix)))
        .collect();
    let mut combiner = Combiner::new(recipe.divergence, &recipe.terms().unwrap(), 0.0).unwrap();
    let n = now[0].len();
    let mut out = Vec::new();
    for &t in tokens {
        let inputs: Vec<&[f32]> = now.iter().map(Vec::as_slice).collect();
        let mut scores = vec![0f32; n];
        combiner.combine(&inputs, false, &mut scores);
        let p: Vec<f64> = log_softmax64(&scores).into_iter().map(f64::exp).collect();
        out.push(p);
        now = contexts.iter_mut().map(|c| c.feed(t)).collect();
    }
    out
}

#[test]
fn sampled_speculation_follows_the_mod_distribution() {
    // Randomised probability integral transform: for a token x drawn from p,
    // u = P(X < x) + V·p(x) with V uniform is uniform on (0, 1). A Kolmogorov–Smirnov test of
    // every sampled position's u, against the distribution recomputed independently.
    for divergence in ["reverse-kl", "jsd"] {
        let recipe = tiny_recipe(divergence);
        let engine = engine_of(&recipe);
        let prompt = PROMPTS[0];
        let requests: Vec<Request> = (0..160)
            .map(|seed| {
                Request::new(
                    recipe.clone(),
                    settings(1.0, 1000 + seed, 8, 16),
                    engine.prompt_tokens(prompt).unwrap(),
                    false,
                )
            })
            .collect();
        let mut generations = Vec::new();
        decode_all(&engine, requests, 4, options(Strategy::Batched), &mut |_, g| {
            generations.push(g?);
            Ok(())
        })
        .unwrap();
        let accepted: usize = generations.iter().map(|g| g.timings.accepted).sum();
        assert!(accepted > 60, "{divergence}: speculation hardly ran ({accepted} accepted)");
        let mut rng = Rng::new(7);
        let mut us = Vec::new();
        for g in &generations {
            for (p, &x) in mod_distributions(&recipe, prompt, &g.tokens).iter().zip(&g.tokens) {
                let below: f64 = p[..x as usize].iter().sum();
                us.push(below + rng.next_f64() * p[x as usize]);
            }
        }
        us.sort_by(f64::total_cmp);
        let n = us.len() as f64;
        let d = us
            .iter()
            .enumerate()
            .map(|(i, &u)| (u - i as f64 / n).abs().max(((i + 1) as f64 / n - u).abs()))
            .fold(0.0, f64::max);
        // The 0.1 % critical value of the KS statistic.
        let critical = 1.95 / n.sqrt();
        eprintln!("{divergence}: KS D = {d:.4} over {n} tokens (critical {critical:.4})");
        assert!(d < critical, "{divergence}: D = {d} ≥ {critical}");
    }
}

#[test]
fn dropped_drafts_leave_the_caches_as_if_never_fed() {
    let recipe = tiny_recipe("reverse-kl");
    let engine = engine_of(&recipe);
    let model = load_model(&tiny("cycle"));
    let members = recipe.members().unwrap();
    let prompts = engine.prompt_tokens(PROMPTS[0]).unwrap();
    let tok = |s: &str| engine.tokenize_continuation(0, s)[0];
    let (a, b, c, d, x) = (tok(" cat"), tok(" dog"), tok(" sat"), tok(" on"), tok(" mat"));
    for strategy in [Strategy::Threads, Strategy::Batched, Strategy::Mixed] {
        let mut session = engine.open_session(&members, 1, options(strategy)).unwrap();
        let lane: Vec<_> = members.iter().map(|&m| Some(prompts[m].clone())).collect();
        session.prefill_lane(0, &lane, false, None).unwrap();
        // A pass with a draft of three, then one keeping `a` and `b` and feeding `x`.
        session.feed(&[vec![a, b, c, d]], &[0]).unwrap();
        session.feed(&[vec![x]], &[2]).unwrap();
        for (k, &m) in members.iter().enumerate() {
            let mut plain = Plain::new(&model, 256, 1);
            plain.decode(&prompts[m]);
            let want = plain.decode(&[a, b, x]);
            let got = session.logits_in(k, 0);
            let worst = want.iter().zip(got).map(|(w, g)| (w - g).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-3, "{strategy:?} policy {k}: logits differ by {worst}");
        }
        // And the logits of each position of a pass are those after each token.
        session.feed(&[vec![a, c]], &[0]).unwrap();
        let mut plain = Plain::new(&model, 256, 1);
        plain.decode(&prompts[members[0]]);
        plain.decode(&[a, b, x]);
        let after_a = plain.decode(&[a]);
        let after_c = plain.decode(&[c]);
        for (i, want) in [after_a, after_c].iter().enumerate() {
            let got = session.logits_at(0, 0, i);
            let worst = want.iter().zip(got).map(|(w, g)| (w - g).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-3, "{strategy:?} position {i}: logits differ by {worst}");
        }
    }
}

#[test]
fn on_the_default_model_every_token_is_the_mod_argmax() {
    let recipe = Recipe::load(&demo_recipe()).unwrap();
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = common::engine(&policies, Default::default()).unwrap();
    let prompt = "Repeat the following line exactly.\nLine: The quick brown fox jumps over the \
                  lazy dog while the small cat sleeps on the warm mat.\nRepeated line:";
    let g = run(&engine, &recipe, prompt, &settings(0.0, 0, 8, 40), options(Strategy::Mixed));
    assert!(g.timings.accepted >= 10, "{:?}", g.timings);
    let model = load_model(&default_model());
    let members = recipe.members().unwrap();
    let mut contexts: Vec<Plain> = members.iter().map(|_| Plain::new(&model, 512, 2)).collect();
    let mut now: Vec<Vec<f32>> = members
        .iter()
        .zip(&mut contexts)
        .map(|(&m, c)| c.prompt(&format!("{}{prompt}", policies[m].prefix)))
        .collect();
    let terms = recipe.terms().unwrap();
    let n = engine.n_common_vocab();
    let (mut compared, mut near_ties) = (0, 0);
    for (i, &t) in g.tokens.iter().enumerate() {
        // Reverse KL: Σ c_k log_softmax(l_k), in f64.
        let mut scores = vec![0f64; n];
        for ((_, c), l) in terms.iter().zip(&now) {
            for (s, x) in scores.iter_mut().zip(log_softmax64(&l[..n])) {
                *s += c * x;
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        if scores[order[0]] - scores[order[1]] > 0.3 {
            assert_eq!(t as usize, order[0], "step {i}: {:?}", g.text);
            compared += 1;
        } else {
            near_ties += 1;
        }
        now = contexts.iter_mut().map(|c| c.feed(t)).collect();
    }
    eprintln!("{compared} steps compared, {near_ties} near-ties skipped: {:?}", g.text);
    eprintln!("{} of {} draft tokens accepted", g.timings.accepted, g.timings.drafted);
    assert!(compared >= 25 && near_ties * 4 <= compared, "{compared} compared, {near_ties} ties");
}

#[test]
fn a_draft_never_runs_past_the_token_limit_or_the_context() {
    let recipe = tiny_recipe("reverse-kl");
    let engine = engine_of(&recipe);
    for max_tokens in [1, 2, 3, 5, 9] {
        let g = run(
            &engine,
            &recipe,
            PROMPTS[1],
            &settings(0.0, 0, 16, max_tokens),
            options(Strategy::Batched),
        );
        let plain = run(
            &engine,
            &recipe,
            PROMPTS[1],
            &settings(0.0, 0, 0, max_tokens),
            options(Strategy::Batched),
        );
        assert_eq!(g.tokens, plain.tokens);
        assert!(g.tokens.len() <= max_tokens);
    }
    // A context just larger than the prompt: generation ends at a full context, as without.
    let prompt_len = engine.prompt_tokens(PROMPTS[1]).unwrap().iter().map(Vec::len).max().unwrap();
    let small =
        SessionOptions { threads: 2, ctx_size: prompt_len as u32 + 6, strategy: Strategy::Threads };
    let g = run(&engine, &recipe, PROMPTS[1], &settings(0.0, 0, 16, 50), small);
    let plain = run(&engine, &recipe, PROMPTS[1], &settings(0.0, 0, 0, 50), small);
    assert_eq!(g.tokens, plain.tokens);
}

#[test]
fn a_draft_model_drafts_and_the_output_stays_the_same() {
    let recipe = tiny_recipe("reverse-kl");
    let plain_engine = engine_of(&recipe);
    let mut engine = engine_of(&recipe);
    // The reference itself without a prefix: shared, not loaded again.
    engine.load_draft_model(&tiny("cycle"), 0).unwrap();
    assert!(engine.has_draft_model());
    assert_eq!(engine.n_models(), plain_engine.n_models());
    let (mut runs, mut drafted, mut accepted) = (0, 0, 0);
    for (i, prompt) in PROMPTS.iter().enumerate() {
        for (temperature, seed) in [(0.0, 0), (1.0, i as u64), (1.0, 50 + i as u64)] {
            for strategy in [Strategy::Threads, Strategy::Mixed] {
                let s = settings(temperature, seed, 6, 30);
                let plain = run(
                    &plain_engine,
                    &recipe,
                    prompt,
                    &settings(temperature, seed, 0, 30),
                    options(strategy),
                );
                let fast = run(&engine, &recipe, prompt, &s, options(strategy));
                assert_eq!(
                    plain.tokens, fast.tokens,
                    "T={temperature} seed {seed} {strategy:?} {prompt:?}"
                );
                runs += 1;
                drafted += fast.timings.drafted;
                accepted += fast.timings.accepted;
            }
        }
    }
    eprintln!("{accepted} of {drafted} draft tokens accepted over {runs} runs");
    // A draft model as dear as a policy (here the reference itself) seldom pays, and the
    // measured costs say so; but every run tries a short draft at its first step.
    assert!(drafted >= runs * EXPLORE_DRAFT, "the draft model hardly drafted: {drafted}");
    assert!(accepted > 10, "the draft model's tokens were hardly taken: {accepted} of {drafted}");
    // A draft model of another vocabulary is refused, naming it.
    let mut other = engine_of(&recipe);
    let err = other.load_draft_model(&tiny("b"), 0).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("draft model") && msg.contains("tiny-b.gguf"), "{msg}");
    assert!(!other.has_draft_model());
}
