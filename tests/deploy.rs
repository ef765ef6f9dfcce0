//! Deployment: LoRA-adapter experts over one base model, `mood info`, and GPU options on a
//! build without a GPU backend.

mod common;

use common::*;
use mood::pipeline::engine::{SessionOptions, Strategy};
use mood::pipeline::recipe::Policy;
use std::path::PathBuf;

fn test_lora() -> PathBuf {
    let p = root().join("models/fixtures/test-lora.gguf");
    assert!(p.exists(), "{} is missing: run models/setup.sh", p.display());
    p
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn lora_applies_to_its_own_policy_only_and_the_base_loads_once() {
    let base = default_model();
    let lora = |scale: f32| Policy {
        model: base.clone(),
        lora: Some((test_lora(), scale)),
        ..Policy::default()
    };
    let policies = vec![
        Policy { name: "base".into(), model: base.clone(), ..Policy::default() },
        Policy { name: "adapted".into(), ..lora(1.0) },
        Policy { name: "scale0".into(), ..lora(0.0) },
        Policy { name: "adapted2".into(), ..lora(1.0) },
    ];
    let engine = common::engine(&policies, Default::default()).unwrap();
    assert_eq!(engine.n_models(), 1, "one copy of the base weights");
    assert_eq!(engine.n_adapters(), 1, "one copy of the adapter");
    let prompt = engine.tokenize(0, "The ocean");
    let prompts = vec![Some(prompt.clone()); 4];
    let open = |strategy| {
        let mut s = engine
            .open_session(&[0, 1, 2, 3], 1, SessionOptions { threads: 2, ctx_size: 128, strategy })
            .unwrap();
        s.prefill_lane(0, &prompts, false, None).unwrap();
        s
    };
    let s = open(Strategy::Threads);
    assert!(
        max_diff(s.logits_in(0, 0), s.logits_in(1, 0)) > 0.5,
        "the adapter changes its policy's logits"
    );
    assert!(max_diff(s.logits_in(0, 0), s.logits_in(2, 0)) < 1e-3, "scale 0 is the base model");
    assert!(max_diff(s.logits_in(1, 0), s.logits_in(3, 0)) < 1e-3, "same adapter, same logits");
    // The base policy is untouched by the adapters beside it: equal to a plain engine.
    let plain = common::engine(&policies[..1], Default::default()).unwrap();
    let options = SessionOptions { threads: 1, ctx_size: 128, strategy: Strategy::Threads };
    let mut p = plain.open_session(&[0], 1, options).unwrap();
    p.prefill_lane(0, &[Some(prompt)], false, None).unwrap();
    assert!(max_diff(p.logits_in(0, 0), s.logits_in(0, 0)) < 1e-3);
    // Batched: one context for the model, each adapter scaled per sequence. Every policy
    // gets what its own context gives it (up to the noise of batching four sequences).
    let b = open(Strategy::Batched);
    assert_eq!(b.n_contexts(), 1);
    assert!(max_diff(b.logits_in(0, 0), b.logits_in(1, 0)) > 0.5, "the adapter acts");
    assert!(max_diff(b.logits_in(0, 0), b.logits_in(2, 0)) < 1e-3, "scale 0 is the base");
    assert!(max_diff(b.logits_in(1, 0), b.logits_in(3, 0)) < 1e-3, "same adapter, same logits");
    // Prompts packed into one batch move llama.cpp's numbers a little (up to ~1 on a logit
    // of this model); the distributions stay close and the clear choices equal.
    for m in 0..4 {
        let (p, q) = (log_softmax64(b.logits_in(m, 0)), log_softmax64(s.logits_in(m, 0)));
        let tv: f64 = p.iter().zip(&q).map(|(x, y)| (x.exp() - y.exp()).abs()).sum::<f64>() / 2.0;
        assert!(
            tv < 0.1,
            "policy {m}: batched with per-sequence adapters vs its own context: TV {tv}"
        );
        let mut order: Vec<usize> = (0..q.len()).collect();
        order.sort_by(|&x, &y| q[y].total_cmp(&q[x]));
        if q[order[0]] - q[order[1]] > 0.5 {
            assert_eq!(argmax(b.logits_in(m, 0)) as usize, order[0], "policy {m}");
        }
    }
    // The adapted policy differs from the base by far more than that noise.
    let (p, q) = (log_softmax64(b.logits_in(0, 0)), log_softmax64(b.logits_in(1, 0)));
    let tv: f64 = p.iter().zip(&q).map(|(x, y)| (x.exp() - y.exp()).abs()).sum::<f64>() / 2.0;
    assert!(tv > 0.1, "the adapter moves the distribution by only {tv}");
}

#[test]
fn lora_errors_are_clear() {
    let base = default_model();
    let dir = std::env::temp_dir().join(format!("mood-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = |lora: &str, model: &PathBuf| {
        let p = dir.join("r.toml");
        std::fs::write(&p, format!("[[expert]]\nmodel = {model:?}\nlora = {lora:?}\n")).unwrap();
        p
    };
    let r = recipe("/nonexistent/adapter.gguf", &base);
    let out = mood(&["generate", "-r", r.to_str().unwrap(), "-p", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("LoRA adapter /nonexistent/adapter.gguf not found"), "{err}");
    // The test adapter is made for the default model, not for the tiny llama fixture.
    let r = recipe(test_lora().to_str().unwrap(), &tiny("a"));
    let out = mood(&["generate", "-r", r.to_str().unwrap(), "-p", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot load LoRA adapter") && !err.contains("panicked"), "{err}");
}

#[test]
fn info_reports_the_default_models_known_facts() {
    let m = default_model();
    let a = tiny("a");
    let v = mood_json(&["info", m.to_str().unwrap(), a.to_str().unwrap(), "--json"]);
    let g = &v["models"][0];
    assert_eq!(g["architecture"], "gemma3");
    assert_eq!(g["vocab_size"], 262_144);
    assert_eq!(g["vocab_type"], "SPM");
    assert_eq!(g["quantization"], "Q4_K_M");
    assert_eq!(g["file_size"], 253_113_024u64);
    assert_eq!(g["bos"], 2);
    assert_eq!(g["eog"], serde_json::json!([1, 106, 212]));
    assert_eq!(g["chat_template"], false);
    let params = g["parameters"].as_u64().unwrap();
    assert!((200_000_000..350_000_000).contains(&params), "{params}");
    assert_eq!(v["models"][1]["architecture"], "llama");
    assert_eq!(v["models"][1]["vocab_size"], 300);
    let c = &v["compatibility"][0];
    assert_eq!(c["compatible"], false);
    assert!(c["reason"].as_str().unwrap().contains("BOS"), "{c}");
    assert!(v["build"]["devices"].as_array().is_some_and(|d| !d.is_empty()));
}

#[test]
fn gpu_layers_without_a_gpu_backend_is_a_clear_error() {
    let info = mood_json(&["info", "--json"]);
    let demo = demo_recipe();
    let out = mood(&[
        "generate",
        "-r",
        demo.to_str().unwrap(),
        "-p",
        "The ocean",
        "-n",
        "2",
        "--n-gpu-layers",
        "99",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    if info["build"]["gpu_offload"] == false {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("no GPU backend") && err.contains("--features cuda"), "{err}");
    } else {
        assert!(out.status.success(), "{err}");
    }
}
