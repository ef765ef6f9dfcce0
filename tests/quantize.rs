//! `mood quantize`: llama.cpp's quantizer on a small F32 model the project makes. The
//! quantized model says its type, is smaller, and gives the F32 model's next-token
//! distribution to within what the type loses; bad input gets one line and leaves no file.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-quantize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The top 20 next tokens after a prompt and their log-probabilities.
fn next_token(model: &Path) -> Vec<(u64, f64)> {
    let path = model.to_str().unwrap();
    let args = ["generate", "-m", path, "-p", "the cat", "-n", "1", "--temp", "0"];
    let v = mood_json(&[&args[..], &["--json", "--logprobs", "20", "-t", "1"]].concat());
    let top = v["logprobs"][0]["top_logprobs"].as_array().expect("top_logprobs").clone();
    top.iter().map(|t| (t["token"].as_u64().unwrap(), t["logprob"].as_f64().unwrap())).collect()
}

fn quantization(model: &Path) -> Value {
    let v = mood_json(&["info", model.to_str().unwrap(), "--json"]);
    v["models"][0]["quantization"].clone()
}

/// The mean difference of log-probability over `reference`'s five likeliest tokens (a token
/// missing from `other`'s top 20 counts as a difference of 10).
fn distance(reference: &[(u64, f64)], other: &[(u64, f64)]) -> f64 {
    let diff = |&(token, lp): &(u64, f64)| {
        other.iter().find(|(t, _)| *t == token).map_or(10.0, |&(_, q)| (q - lp).abs())
    };
    reference[..5].iter().map(diff).sum::<f64>() / 5.0
}

#[test]
fn a_quantized_model_keeps_the_distribution_within_what_its_type_loses() {
    let f32_model = tiny("a");
    let reference = next_token(&f32_model);
    // How far apart two different models of the same shape and vocabulary are.
    let other_model = distance(&reference, &next_token(&tiny("cycle")));
    let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len();
    let mut distances = Vec::new();
    for name in ["F16", "q8_0", "Q4_0"] {
        let out_path = scratch(&format!("tiny-{name}.gguf"));
        let out =
            mood(&["quantize", f32_model.to_str().unwrap(), out_path.to_str().unwrap(), name]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("wrote"), "{}", stderr(&out));
        assert_eq!(quantization(&out_path), name.to_uppercase());
        assert!(size(&out_path) < size(&f32_model) * 6 / 10, "{name} is smaller");
        distances.push(distance(&reference, &next_token(&out_path)));
    }
    eprintln!("distance to F32: F16, Q8_0, Q4_0 {distances:?}; another model {other_model}");
    // The same model, losing more the fewer bits it keeps, and far closer than another one.
    assert!(distances[0] <= distances[1] && distances[1] <= distances[2], "{distances:?}");
    assert!(distances[0] < 0.01, "{distances:?}");
    assert!(distances[2] < other_model / 3.0, "{distances:?} against {other_model}");
}

#[test]
fn bad_input_gets_one_line_and_leaves_no_file() {
    let f32_model = tiny("a");
    let input = f32_model.to_str().unwrap();
    let one_line = |out: &std::process::Output, what: &str| {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
        let err = stderr(out);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("mood: error")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(what), "{err}");
    };
    let out_path = scratch("bad.gguf");
    let output = out_path.to_str().unwrap();
    one_line(&mood(&["quantize", input, output, "q9_9"]), "Q4_K_M");
    one_line(&mood(&["quantize", input, output, "-t", "0"]), "--threads");
    one_line(&mood(&["quantize", input, output, "-t", "99999999999"]), "--threads");
    one_line(&mood(&["quantize", "/nonexistent/model.gguf", output]), "not found");
    let text = scratch("not-a-model.gguf");
    std::fs::write(&text, "hello").unwrap();
    one_line(&mood(&["quantize", text.to_str().unwrap(), output]), "not-a-model.gguf");
    // Quantized already: llama.cpp refuses to quantize it again.
    let q8 = scratch("q8.gguf");
    assert!(mood(&["quantize", input, q8.to_str().unwrap(), "Q8_0"]).status.success());
    one_line(&mood(&["quantize", q8.to_str().unwrap(), output, "Q4_0"]), "already quantized");
    one_line(&mood(&["quantize", q8.to_str().unwrap(), q8.to_str().unwrap()]), "the input");
    assert!(!out_path.exists(), "no output after a failure");
    let dir = out_path.parent().unwrap();
    let partial = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".partial"));
    assert!(!partial, "no partial file left");
    assert_eq!(quantization(&q8), "Q8_0", "the input is untouched");
}
