//! The server's routes that look at it rather than generate — `/tokenize`, `/detokenize`,
//! `/metrics`, `/v1/models` — against independent computations (llama.cpp's own tokenizer,
//! the usage of real answers, the model file's time), and llama.cpp's flag names as aliases.

mod common;

use common::server::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[test]
fn tokenize_and_detokenize_agree_with_llama_cpp_per_policy() {
    let server = start(&[]);
    let a = &server.addr;
    let model = load_model(&default_model());
    let tokenize = |text: &str, bos: bool| -> Vec<i64> {
        model.vocab().tokenize(text.as_bytes(), bos, false).iter().map(|t| i64::from(t.0)).collect()
    };
    let recipe = mood::pipeline::recipe::Recipe::load(&demo_recipe()).unwrap();
    let text = "The ocean, and a rhyme in ünïcode 🌊";
    let (status, v) = post(a, "/tokenize", &json!({ "content": text }));
    assert_eq!(status, 200, "{v}");
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect()
    };
    assert_eq!(ids(&v["tokens"]), tokenize(text, false));
    for p in recipe.policies() {
        let want = tokenize(&format!("{}{text}", p.prefix), true);
        assert_eq!(ids(&v["policies"][&p.name]), want, "{}", p.name);
    }
    // The pieces spell the text; detokenize gives it back.
    let (_, pieces) = post(a, "/tokenize", &json!({ "content": text, "with_pieces": true }));
    let spelled: String =
        pieces["tokens"].as_array().unwrap().iter().map(|t| t["piece"].as_str().unwrap()).collect();
    assert_eq!(spelled, text);
    let (status, back) = post(a, "/detokenize", &json!({ "tokens": v["tokens"] }));
    assert_eq!((status, back["content"].as_str().unwrap()), (200, text));

    // A conversation: each policy's prompt is as long as the answer's usage says.
    let messages =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]);
    let (_, t) = post(a, "/tokenize", &json!({ "messages": messages }));
    let (status, answer) =
        post(a, "/v1/chat/completions", &json!({ "messages": messages, "max_tokens": 2 }));
    assert_eq!(status, 200, "{answer}");
    for p in recipe.policies() {
        let n = t["policies"][&p.name].as_array().unwrap().len();
        assert_eq!(answer["mood"]["prompt_tokens"][&p.name], json!(n), "{}", p.name);
    }

    // Bad requests are 400s naming what is wrong.
    let vocab = model.vocab().n_tokens() as i64;
    for (route, body, text) in [
        ("/detokenize", json!({ "tokens": [vocab] }), "not in the vocabulary"),
        ("/detokenize", json!({ "tokens": [-1] }), "not in the vocabulary"),
        ("/detokenize", json!({ "tokens": "12" }), "tokens"),
        ("/tokenize", json!({}), "content or messages"),
        ("/tokenize", json!({ "content": "a", "messages": [] }), "content or messages"),
        ("/tokenize", json!({ "content": "a", "colour": 1 }), "colour"),
    ] {
        let (status, v) = post(a, route, &body);
        assert_eq!(status, 400, "{route} {body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(text), "{route} {body}: {v}");
    }
}

/// The metrics of a Prometheus text exposition, as `name{labels}` → value; every line that
/// is not a comment must be a sample.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(name.starts_with("mood_"), "{line}");
        out.insert(name.to_string(), value);
    }
    out
}

#[test]
fn metrics_count_requests_tokens_and_errors() {
    let server = start(&[]);
    let a = &server.addr;
    let mut completion_tokens = 0;
    for (route, body) in [
        ("/v1/completions", json!({ "prompt": "The ocean", "max_tokens": 4 })),
        ("/v1/completions", json!({ "prompt": "The moon", "max_tokens": 3 })),
        (
            "/v1/chat/completions",
            json!({ "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2 }),
        ),
    ] {
        let (status, v) = post(a, route, &body);
        assert_eq!(status, 200, "{v}");
        completion_tokens += v["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let (status, _) = post(a, "/v1/completions", &json!({ "prompt": "x", "top_p": 7 }));
    assert_eq!(status, 400);
    // The decoding thread updates its load at the end of a step, just after the answer.
    let started = std::time::Instant::now();
    let (status, head, text) = loop {
        let (status, head, text) = request(a, "GET", "/metrics", None, Some(KEY));
        let busy = samples(&text).get("mood_requests_decoding").is_some_and(|&n| n > 0.0);
        if !busy || started.elapsed().as_secs() > 5 {
            break (status, head, text);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status, 200, "{text}");
    assert!(head.to_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let m = samples(&text);
    assert_eq!(m["mood_requests_total{endpoint=\"completions\"}"], 3.0, "{text}");
    assert_eq!(m["mood_requests_total{endpoint=\"chat\"}"], 1.0, "{text}");
    assert_eq!(m["mood_errors_total{status=\"400\",type=\"invalid_request_error\"}"], 1.0);
    assert_eq!(m["mood_completion_tokens_total"], completion_tokens as f64);
    assert!(m["mood_tokens_per_second"] > 0.0, "{text}");
    assert_eq!(m["mood_queue_length"], 0.0);
    assert_eq!(m["mood_requests_decoding"], 0.0);
}

#[test]
fn models_report_the_model_files_time_and_the_alias() {
    let key_file = std::env::temp_dir().join(format!("mood-inspect-key-{}", std::process::id()));
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let server = serve(
        &demo_recipe(),
        &["--api-key-file", key_file.to_str().unwrap(), "--alias", "my-mood", "-c", "512"],
    );
    let (status, _, text) = request(&server.addr, "GET", "/v1/models", None, Some(KEY));
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let mtime = std::fs::metadata(default_model())
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(v["data"][0]["created"], json!(mtime));
    assert_eq!(v["data"][0]["id"], "my-mood");
    let (status, _, _) = request(&server.addr, "GET", "/v1/models", None, Some("wrong"));
    assert_eq!(status, 401, "the key from the file is required");
}

#[test]
fn llama_cpp_flag_names_mean_the_same() {
    let prompt_file =
        std::env::temp_dir().join(format!("mood-inspect-prompt-{}", std::process::id()));
    std::fs::write(&prompt_file, "The ocean").unwrap();
    let ours =
        generate_demo(&["-p", "The ocean", "-n", "6", "--temperature", "0.7", "--seed", "3"]);
    let theirs = generate_demo(&[
        "--file",
        prompt_file.to_str().unwrap(),
        "--n-predict",
        "6",
        "--temp",
        "0.7",
        "--seed",
        "3",
    ]);
    assert_eq!(ours["tokens"], theirs["tokens"]);
    // -r is not llama.cpp's reverse prompt here, and the help says so.
    let help = mood(&["generate", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--reverse-prompt"), "{help}");
    assert!(help.contains("-r, --recipe"), "{help}");
}
