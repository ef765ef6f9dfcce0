//! `mood generate` end to end on the default model: output fields, streaming, seeds, stop
//! strings, the token and context limits, and the vocabulary check.

mod common;

use common::*;

fn demo_args<'a>(demo: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["generate", "-r", demo, "-p", "The ocean"];
    v.extend_from_slice(extra);
    v
}

#[test]
fn json_output_has_every_documented_field() {
    let demo = demo_recipe();
    let v = mood_json(&demo_args(demo.to_str().unwrap(), &["-n", "8", "--json", "-w", "0.6,0.8"]));
    for key in [
        "text",
        "tokens",
        "finish_reason",
        "weights",
        "divergence",
        "prompt_tokens",
        "completion_tokens",
        "timings",
        "seed",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["weights"], serde_json::json!([0.6, 0.8]));
    assert_eq!(v["divergence"], "reverse-kl");
    assert_eq!(v["completion_tokens"].as_u64().unwrap() as usize, tokens_of(&v).len());
    // Prompt tokens per policy: the prefixes make the experts' prompts longer.
    let pt = &v["prompt_tokens"];
    assert!(pt["poet"].as_u64().unwrap() > pt["reference"].as_u64().unwrap());
    assert!(pt["scientist"].as_u64().unwrap() > pt["reference"].as_u64().unwrap());
    for key in ["prompt_ms", "decode_ms", "tokens_per_second"] {
        assert!(v["timings"][key].as_f64().unwrap() > 0.0, "{key}");
    }
}

#[test]
fn streamed_text_equals_json_text() {
    let demo = demo_recipe();
    let d = demo.to_str().unwrap();
    let v = mood_json(&demo_args(d, &["-n", "30", "--json", "--seed", "3"]));
    let out = mood(&demo_args(d, &["-n", "30", "--seed", "3"]));
    assert!(out.status.success());
    let streamed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(streamed.strip_suffix('\n').unwrap(), v["text"].as_str().unwrap());
}

#[test]
fn same_seed_same_sample_different_seed_differs() {
    let demo = demo_recipe();
    let d = demo.to_str().unwrap();
    let run = |seed: &str| {
        let mut extra = vec!["-n", "32", "--json", "--seed", seed];
        extra.extend(WHOLE_DISTRIBUTION);
        let v = mood_json(&demo_args(d, &extra));
        assert_eq!(v["seed"].as_u64().unwrap().to_string(), seed);
        tokens_of(&v)
    };
    let a = run("42");
    assert_eq!(a, run("42"), "same seed must reproduce the sample");
    assert_ne!(a, run("43"), "different seeds should sample differently");
}

#[test]
fn stop_string_ends_generation_and_is_not_included() {
    let demo = demo_recipe();
    let d = demo.to_str().unwrap();
    let full = mood_json(&demo_args(d, &["-n", "40", "--json"]));
    let text = full["text"].as_str().unwrap();
    // Stop at the third word of the unstopped output.
    let word = text.split_whitespace().nth(2).expect("a few words of output");
    let cut = text.find(word).unwrap();
    let v =
        mood_json(&demo_args(d, &["-n", "40", "--json", "--stop", word, "--stop", "@@never@@"]));
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(v["text"].as_str().unwrap(), &text[..cut]);
}

#[test]
fn max_tokens_and_context_limit_end_with_length() {
    let demo = demo_recipe();
    let d = demo.to_str().unwrap();
    let v = mood_json(&demo_args(d, &["-n", "5", "--json", "--stop", "@@never@@"]));
    assert_eq!(v["finish_reason"], "length");
    assert_eq!(v["completion_tokens"], 5);
    // With weights summing to 1 only the two experts run; their longest prompt bounds the room.
    let v = mood_json(&demo_args(
        d,
        &["-n", "500", "--json", "--ctx-size", "32", "--repeat-penalty", "1.3"],
    ));
    let longest = ["poet", "scientist"]
        .iter()
        .map(|k| v["prompt_tokens"][k].as_u64().unwrap())
        .max()
        .unwrap();
    let generated = v["completion_tokens"].as_u64().unwrap();
    // The last generated token comes from the logits of a full context and is not fed back.
    assert_eq!(v["finish_reason"], "length");
    assert_eq!(longest + generated, 33, "a 32-token context should be used to the last slot");
}

#[test]
fn incompatible_vocabularies_are_refused_over_tokens_naming_files_and_token() {
    let (a, b) = (tiny("a"), tiny("b"));
    let out = mood(&[
        "generate",
        "--unit",
        "tokens",
        "--expert",
        a.to_str().unwrap(),
        "--expert",
        b.to_str().unwrap(),
        "-p",
        "the cat",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    assert!(err.contains("tiny-a.gguf") && err.contains("tiny-b.gguf"), "{err}");
    assert!(
        err.contains("token 290") && err.contains("▁he") && err.contains("▁different"),
        "{err}"
    );

    let g = default_model();
    let out = mood(&[
        "generate",
        "--unit",
        "tokens",
        "--expert",
        g.to_str().unwrap(),
        "--expert",
        a.to_str().unwrap(),
        "-p",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("gemma-3-270m-q4_k_m.gguf") && err.contains("tiny-a.gguf"), "{err}");
}

#[test]
fn a_tiny_model_decodes_alone() {
    // One model alone is plain greedy decoding: the same tokens as a llama.cpp loop of our own.
    let a = tiny("a");
    let args = ["generate", "-m", a.to_str().unwrap(), "-p", "the cat", "-n", "6"];
    let v = mood_json(&[&args[..], &["--repeat-penalty", "1", "--json"]].concat());
    let model = load_model(&a);
    let mut plain = Plain::new(&model, 64, 1);
    let mut logits = plain.prompt("the cat");
    let mut want = Vec::new();
    while want.len() < 6 {
        let t = argmax(&logits);
        if plain.is_eog(t) {
            break;
        }
        want.push(t);
        logits = plain.feed(t);
    }
    assert!(!want.is_empty());
    assert_eq!(tokens_of(&v), want);
}

#[test]
fn presets_reduce_to_their_parts_at_trivial_weights() {
    let root = root();
    let preset =
        |name: &str| root.join(format!("models/presets/{name}.toml")).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all =
            vec!["generate", "-p", "The ocean", "-n", "16", "--repeat-penalty", "1", "--json"];
        all.extend_from_slice(args);
        tokens_of(&mood_json(&all))
    };
    let m = default_model();
    let base = run(&["-m", m.to_str().unwrap()]);
    // DExperts with α = 0 is the base model alone.
    assert_eq!(run(&["-r", &preset("dexperts"), "-w", "0,0"]), base);
    // CFG with γ = 1 is the conditioned model alone: the demo's poet.
    let demo = demo_recipe();
    assert_eq!(
        run(&["-r", &preset("cfg"), "-w", "1"]),
        run(&["-r", demo.to_str().unwrap(), "-w", "1,0"])
    );
    // The presets themselves steer away from the base model.
    for name in ["cfg", "dexperts", "contrastive"] {
        let t = run(&["-r", &preset(name)]);
        assert_eq!(t.len(), 16, "{name}");
        assert_ne!(t, base, "{name} should change the base model's output");
    }
}

#[test]
fn bench_reports_speed_breakdown_and_shared_weights() {
    let demo = demo_recipe();
    let v = mood_json(&[
        "bench",
        "-r",
        demo.to_str().unwrap(),
        "-n",
        "6",
        "--rounds",
        "1",
        "--memory",
        "1,2",
        "--json",
        "-p",
        "The ocean",
    ]);
    assert_eq!(v["single"].as_array().unwrap().len(), 1, "one distinct model file");
    let mods = v["mod"].as_array().unwrap();
    assert_eq!(mods.len(), 4, "three strategies and speculative MOD");
    for (m, strategy, contexts, mixed) in [
        (&mods[0], "threads", 2, false),
        (&mods[1], "batched", 1, false),
        (&mods[2], "mixed", 1, true),
    ] {
        assert_eq!(m["strategy"], strategy);
        assert_eq!(m["policies"], 2, "weights (0.5, 0.5) skip the reference");
        assert_eq!(m["contexts"], contexts);
        assert_eq!(m["mixed"], mixed, "{m}");
        assert!(m["ratio"].as_f64().unwrap() > 0.0 && m["floor_ratio"].as_f64().unwrap() > 0.0);
        assert!(m["forward_ms"].as_f64().unwrap() > m["combine_ms"].as_f64().unwrap());
    }
    // What auto runs is one of the measured strategies, and the speculative row runs it.
    let auto = v["auto"]["strategy"].as_str().unwrap();
    assert!(["threads", "batched", "mixed"].contains(&auto), "{auto}");
    let spec = &mods[3];
    assert_eq!(spec["strategy"], auto, "{spec}");
    assert_eq!(spec["draft_max"], 16, "{spec}");
    assert!(spec["accepted"].as_u64().unwrap() <= spec["drafted"].as_u64().unwrap(), "{spec}");
    assert!(spec["tokens_per_pass"].as_f64().unwrap() >= 1.0, "{spec}");
    for m in &mods[..3] {
        assert_eq!((m["draft_max"].as_u64(), m["drafted"].as_u64()), (Some(0), Some(0)), "{m}");
    }
    // Two prompted experts on one file hold one copy of the 253 MB weights: a second copy
    // would add at least ~240 MB of peak memory.
    let mem = v["memory"].as_array().unwrap();
    let (one, two) =
        (mem[0]["peak_rss_mb"].as_f64().unwrap(), mem[1]["peak_rss_mb"].as_f64().unwrap());
    assert!(one > 240.0, "the model's weights are resident: {one} MB");
    assert!(two - one < 150.0, "second policy added {} MB", two - one);
}
