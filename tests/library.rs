//! The public Rust API as an embedder uses it: results equal to the `mood` binary's, the
//! streaming forms equal to the whole, step-by-step decoding that reproduces greedy MOD when
//! the caller picks the argmax of the weighted log-probabilities, lanes that agree with
//! one-by-one decoding, cancellation, chat, scores against an independent llama.cpp loop,
//! typed errors, and the examples run.

mod common;

use common::{assistant_recipe, demo_recipe, generate_demo, root, tokens_of, PlainScorer};
use mood::{Error, FinishReason, Flow, Message, Mood, Options, Params, Policy, Recipe, Strategy};
use std::sync::OnceLock;

/// The demo recipe loaded once (a poet and a scientist on the default model, a reference),
/// each policy in a context of its own as the binary's comparison runs use.
fn demo() -> &'static Mood {
    static MOOD: OnceLock<Mood> = OnceLock::new();
    MOOD.get_or_init(|| {
        mood::silence_llama_log();
        let recipe = Recipe::from_file(demo_recipe()).unwrap();
        let options =
            Options { strategy: Strategy::Threads, threads: Some(2), ..Options::default() };
        Mood::load(recipe, options).unwrap()
    })
}

#[test]
fn generations_equal_the_binarys() {
    let mut session = demo().session();
    let greedy =
        session.generate("The ocean", &Params::new().weights([0.3, 0.7]).max_tokens(24)).unwrap();
    let cli = generate_demo(&["-p", "The ocean", "--weights", "0.3,0.7", "-n", "24"]);
    assert_eq!(greedy.tokens, tokens_of(&cli));
    assert_eq!(greedy.text, cli["text"].as_str().unwrap());

    let params = Params::new().weights([1.5, -0.5]).temperature(0.9).seed(11).max_tokens(24);
    let sampled = session.generate("The moon", &params).unwrap();
    let cli = generate_demo(&[
        "-p",
        "The moon",
        "--weights",
        "1.5,-0.5",
        "--temperature",
        "0.9",
        "--seed",
        "11",
        "-n",
        "24",
    ]);
    assert_eq!(sampled.tokens, tokens_of(&cli));
    assert_eq!(sampled.seed, 11);
}

#[test]
fn streamed_pieces_make_the_whole_text() {
    let mood = demo();
    let params = Params::new().temperature(0.8).seed(5).max_tokens(32);
    let whole = mood.generate("A river", &params).unwrap();

    let mut session = mood.session();
    let mut pieces = String::new();
    let mut tokens = Vec::new();
    let streamed = session
        .generate_streaming("A river", &params, |c| {
            pieces.push_str(&c.text);
            tokens.extend(c.token);
            Flow::Continue
        })
        .unwrap();
    assert_eq!(pieces, whole.text);
    assert_eq!(tokens, whole.tokens);
    assert_eq!(streamed.tokens, whole.tokens);

    let mut chunks = session.stream("A river", &params).unwrap();
    let mut iterated = String::new();
    for c in chunks.by_ref() {
        iterated.push_str(&c.text);
    }
    let finished = chunks.finish().unwrap();
    assert_eq!(iterated, whole.text);
    assert_eq!(finished.text, whole.text);

    // A stream dropped half-way leaves the session ready for the next call.
    let mut partial = session.stream("A river", &params).unwrap();
    let first = partial.next();
    assert!(first.is_some());
    drop(partial);
    let again = session.generate("A river", &params).unwrap();
    assert_eq!(again.text, whole.text);
}

#[test]
fn cancelling_returns_what_was_decoded() {
    let mut session = demo().session();
    let params = Params::new().max_tokens(40);
    // The callback stops: not an error, finish reason `cancelled`.
    let mut seen = 0;
    let stopped = session
        .generate_streaming("The ocean", &params, |c| {
            seen += usize::from(c.token.is_some());
            if seen == 3 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Cancelled);
    assert_eq!(stopped.tokens.len(), 3);

    // A handle cancels from another thread: an error carrying the partial generation.
    let handle = session.cancel_handle();
    let canceller = std::thread::spawn(move || handle.cancel());
    canceller.join().unwrap();
    match session.generate("The ocean", &params) {
        Err(Error::Cancelled { partial }) => {
            assert_eq!(partial.tokens.len(), 1);
            assert_eq!(partial.finish_reason, FinishReason::Cancelled);
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
    // The cancellation was used up: the next call runs to its end.
    let full = session.generate("The ocean", &Params::new().max_tokens(5)).unwrap();
    assert_eq!(full.tokens.len(), 5);
}

#[test]
fn steps_reproduce_greedy_mod_when_the_caller_takes_the_argmax() {
    let mood = demo();
    let weights = [0.3f64, 0.7];
    // Without speculation and repetition penalty, greedy MOD is the argmax of
    // Σ w_i log π_i at every step (weights summing to 1: the reference cancels).
    let params = Params::new().weights(weights).repeat_penalty(1.0).max_tokens(24).draft(0);
    let library = mood.generate("The ocean", &params).unwrap();

    let mut session = mood.session();
    let mut steps = session.steps("The ocean", 24).unwrap();
    assert_eq!(steps.policies(), vec!["reference", "poet", "scientist"]);
    let mut step = 0;
    while !steps.is_done() {
        let lp = steps.logprobs();
        let n = lp[0].len();
        for p in lp {
            let total: f64 = p.iter().map(|&x| f64::from(x).exp()).sum();
            assert!((total - 1.0).abs() < 1e-3, "log-probabilities normalised: {total}");
        }
        let score = |v: usize| weights[0] * f64::from(lp[1][v]) + weights[1] * f64::from(lp[2][v]);
        let best = (0..n).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap();
        if let Some(&theirs) = library.tokens.get(step) {
            let gap = score(best) - score(theirs as usize);
            assert!(gap < 1e-3, "step {step}: library chose {theirs}, argmax {best}, gap {gap}");
            if theirs as usize != best {
                break; // a tie within rounding: the two texts part here
            }
        }
        steps.choose(best as u32).unwrap();
        step += 1;
    }
    assert!(step >= library.tokens.len().min(20), "only {step} steps compared");
    assert!(steps.text().starts_with(&library.text[..library.text.len().min(10)]));
    assert!(matches!(
        steps.choose(u32::MAX),
        Err(Error::Setting { .. }) | Err(Error::Engine { .. })
    ));
}

#[test]
fn lanes_agree_with_one_by_one_decoding() {
    let mood = demo();
    let prompts = ["The ocean", "The moon", "A river", "The forest"];
    let params = Params::new().repeat_penalty(1.0).max_tokens(16).draft(0);
    let mut session = mood.session();
    let side_by_side = session.generate_many(&prompts, &params, 4);
    assert_eq!(side_by_side.len(), 4);
    // Each lane's tokens teacher-forced through step-by-step decoding: every one is the
    // greedy choice, or within llama.cpp's batch-split noise of it (lanes batch tokens of
    // several prompts, which moves logits by up to ~0.2 nats).
    let mut flips = 0;
    for (prompt, result) in prompts.iter().zip(&side_by_side) {
        let g = result.as_ref().unwrap();
        assert_eq!(g.tokens.len(), 16, "{prompt}");
        let mut steps = session.steps(prompt, 16).unwrap();
        for &t in &g.tokens {
            let lp = steps.logprobs();
            let score = |v: usize| 0.5 * (lp[1][v] + lp[2][v]);
            let best = (0..lp[0].len()).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap();
            assert!(score(best) - score(t as usize) < 0.3, "{prompt}: {t} vs {best}");
            flips += usize::from(best != t as usize);
            steps.choose(t).unwrap();
        }
    }
    assert!(flips <= 3, "{flips} near-tie flips in 64 tokens");
    // A bad prompt fails alone.
    let mixed = session.generate_many(&["The sea", "   "], &params, 2);
    assert!(mixed[0].is_ok());
    assert!(matches!(&mixed[1], Err(Error::Setting { setting, .. }) if setting == "prompt"));
}

#[test]
fn chat_uses_the_template_and_keeps_the_conversation_cached() {
    mood::silence_llama_log();
    let recipe = Recipe::from_file(assistant_recipe()).unwrap();
    let mood = Mood::load(recipe, Options::default()).unwrap();
    let mut session = mood.session();
    let mut messages = vec![Message { role: "user".into(), content: "What is the sea?".into() }];
    let first = session.chat(&messages, &Params::new().max_tokens(48)).unwrap();
    assert!(!first.text.trim().is_empty());
    assert!(!first.text.contains("<|im_"), "template markers are special tokens: {}", first.text);
    messages.push(Message { role: "assistant".into(), content: first.text.trim().into() });
    messages.push(Message { role: "user".into(), content: "And the sky?".into() });
    let second = session.chat(&messages, &Params::new().max_tokens(16)).unwrap();
    assert!(second.cached_tokens > 20, "the first turn stays cached: {}", second.cached_tokens);
}

#[test]
fn scores_equal_an_independent_llama_cpp_loop() {
    let mood = demo();
    let mut session = mood.session();
    let scores = session.score("The ocean", " is deep and blue.", 0.5).unwrap();
    let model = common::load_model(&common::default_model());
    let mut plain = PlainScorer::new(&model);
    let response: Vec<u32> = model
        .vocab()
        .tokenize(b" is deep and blue.", false, false)
        .iter()
        .map(|t| t.0 as u32)
        .collect();
    let reference = plain.log_likelihood("The ocean", &response);
    let poet = plain.log_likelihood(&format!("{}The ocean", common::POET), &response);
    let got = |k: &str, name: &str| scores_field(&scores, k, name);
    assert!(
        (got("log_likelihood", "reference") - reference).abs() < 0.05 * reference.abs().max(1.0)
    );
    assert!((got("log_likelihood", "poet") - poet).abs() < 0.05 * poet.abs().max(1.0));
    let reward = got("rewards", "poet");
    let expected = 0.5 * (got("log_likelihood", "poet") - got("log_likelihood", "reference"));
    assert!((reward - expected).abs() < 1e-9);
}

fn scores_field(scores: &mood::Scores, kind: &str, name: &str) -> f64 {
    let map = if kind == "rewards" { &scores.rewards } else { &scores.log_likelihood };
    map[name].as_f64().unwrap()
}

#[test]
fn errors_are_typed_with_what_a_caller_needs() {
    mood::silence_llama_log();
    let model = common::default_model();
    // Recipes.
    assert!(matches!(Recipe::from_toml("[[expert", "."), Err(Error::Recipe { .. })));
    assert!(matches!(
        Recipe::with_experts(vec![]).and_then(|r| Mood::load(r, Options::default())),
        Err(Error::Recipe { .. })
    ));
    let twice = vec![Policy::new("a", &model), Policy::new("a", &model)];
    assert!(matches!(Recipe::with_experts(twice), Err(Error::Recipe { .. })));
    match Recipe::from_file(root().join("models/no-such-recipe.toml")) {
        Err(Error::Io { kind, .. }) => assert_eq!(kind, std::io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    // Settings, named.
    let two =
        || Recipe::with_experts(vec![Policy::new("a", &model), Policy::new("b", &model)]).unwrap();
    match two().and_weights([1.0]) {
        Err(Error::Setting { setting, problem, .. }) => {
            assert_eq!(setting, "weights");
            assert!(problem.contains("1 value(s)"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    let bad_threads = Options { threads: Some(0), ..Options::default() };
    assert_eq!(
        Mood::load(two(), bad_threads)
            .err()
            .and_then(|e| e.setting().map(str::to_string))
            .as_deref(),
        Some("threads")
    );
    let mut session = demo().session();
    for (params, setting) in [
        (Params::new().weights([f64::NAN, 0.5]), "weights"),
        (Params::new().temperature(-1.0), "temperature"),
        (Params::new().max_tokens(0), "max_tokens"),
        (Params::new().divergence(mood::Divergence::Jsd).weights([0.7, 0.7]), "weights"),
    ] {
        let e = session.generate("The ocean", &params).unwrap_err();
        assert_eq!(e.setting(), Some(setting), "{e}");
        assert!(!e.to_string().contains('\n'));
    }
    assert!(matches!(demo().params_from_json("{\"temprature\": 1}"), Err(Error::Setting { .. })));
    let p = demo()
        .params_from_json("{\"weights\": {\"poet\": 0.9, \"scientist\": 0.1}, \"seed\": 3}")
        .unwrap();
    assert_eq!(p.weights, Some(vec![0.9, 0.1]));
    assert_eq!(demo().weights_by_name(&[("scientist", 0.2)]).unwrap(), vec![0.5, 0.2]);
    // Model files, named.
    let missing = Recipe::with_experts(vec![Policy::new("a", "/nonexistent/m.gguf")]).unwrap();
    match Mood::load(missing, Options::default()) {
        Err(Error::ModelFile { path, message }) => {
            assert_eq!(path, std::path::PathBuf::from("/nonexistent/m.gguf"));
            assert!(message.contains("not found"), "{message}");
        }
        other => panic!("{:?}", other.err()),
    }
    let not_gguf = Recipe::with_experts(vec![Policy::new("a", root().join("Cargo.toml"))]).unwrap();
    assert!(matches!(Mood::load(not_gguf, Options::default()), Err(Error::ModelFile { .. })));
    let adapter =
        Recipe::with_experts(vec![Policy::new("a", &model).lora(root().join("README.md"), 1.0)])
            .unwrap();
    assert!(
        matches!(Mood::load(adapter, Options::default()), Err(Error::ModelFile { path, .. }) if path.ends_with("README.md"))
    );
    // Vocabularies, naming both files.
    let pair = vec![Policy::new("gemma", &model), Policy::new("smol", common::assistant_model())];
    match Mood::load(Recipe::with_experts(pair).unwrap(), Options::default()) {
        Err(Error::Vocabulary { first, second, message }) => {
            assert!(first.ends_with("gemma-3-270m-q4_k_m.gguf"), "{first:?}");
            assert!(second.ends_with("smollm2-135m-instruct-q4_1.gguf"), "{second:?}");
            assert!(message.contains("cannot be combined"), "{message}");
        }
        other => panic!("{:?}", other.err()),
    }
    // A context the model was not trained for.
    let big = Options { ctx_size: 1 << 30, ..Options::default() };
    let e = Mood::load(two(), big).unwrap().generate("The ocean", &Params::new()).unwrap_err();
    assert_eq!(e.setting(), Some("ctx_size"), "{e}");
}

/// Runs an example cargo built with the tests.
fn example(name: &str) -> String {
    let exe = root().join("target/release/examples").join(name);
    let out = std::process::Command::new(&exe).current_dir(root()).output().expect("the example");
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_examples_run() {
    let steer = example("steer");
    assert_eq!(steer.matches("(poet, scientist) = ").count(), 3, "{steer}");
    let lora = example("lora");
    assert_eq!(lora.matches("(base, adapted) = ").count(), 3, "{lora}");
    let hook = example("hook");
    let line = |prefix: &str| {
        hook.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_default().to_string()
    };
    let (by_hand, library) = (line("by hand: "), line("mood:    "));
    assert!(by_hand.len() > 20 && library.len() > 20, "{hook}");
    assert_eq!(by_hand[..20], library[..20], "{hook}");
}
