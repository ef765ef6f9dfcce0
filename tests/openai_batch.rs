//! OpenAI batch files in `mood batch`: chat and completion lines answer as the server answers
//! the same bodies, refused and malformed lines get OpenAI's error records, the output parses
//! with the `openai` package's types (tests/openai_batch.py), and a run killed with SIGKILL
//! resumes to the uninterrupted run's records.

mod common;

use common::server::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-openai-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// The demo recipe's `mood batch`, with the flags the test server runs with.
fn batch_command(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mood"));
    c.args(["batch", "-r", demo_recipe().to_str().unwrap(), "-c", "1024"])
        .args(["--strategy", "threads"])
        .arg("-i")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(extra);
    c
}

fn line(custom_id: &str, url: &str, body: Value) -> String {
    json!({ "custom_id": custom_id, "method": "POST", "url": url, "body": body }).to_string()
}

fn chat(custom_id: &str, system: &str, user: &str, extra: Value) -> String {
    let mut body = json!({
        "model": "mood",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": 10,
        "temperature": 0,
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    line(custom_id, "/v1/chat/completions", body)
}

fn completion(custom_id: &str, prompt: &str, extra: Value) -> String {
    let mut body = json!({ "model": "mood", "prompt": prompt, "max_tokens": 10, "temperature": 0 });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    line(custom_id, "/v1/completions", body)
}

/// Answers by custom_id and failures by "line N"; each exactly once.
fn by_custom_id(output: &Path) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for l in std::fs::read_to_string(output).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let key = match v["custom_id"].as_str() {
            Some(id) if v["response"]["status_code"] == 200 => id.to_string(),
            _ => format!("line {}", v["line"]),
        };
        assert!(map.insert(key.clone(), v).is_none(), "{key} has two records");
    }
    map
}

fn check_with_openai_types(input: &Path, output: &Path) {
    let out = Command::new("python3")
        .arg(root().join("tests/openai_batch.py"))
        .arg(input)
        .arg(output)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the output does not parse with the openai types (is the openai package installed? run \
         models/setup.sh)\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chat_and_completion_lines_answer_as_the_server_does() {
    let lines = [
        chat("greet", "Be brief.", "Hello!", json!({})),
        completion("ocean", "The ocean", json!({"weights": [1, 0], "logprobs": 2})),
        chat(
            "json",
            "Answer in JSON.",
            "Who are you?",
            json!({"response_format": {"type": "json_object"}, "max_tokens": 40}),
        ),
        completion("moon", "The moon", json!({"weights": {"poet": 0.2, "scientist": 0.8}})),
        chat(
            "tools",
            "x",
            "y",
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
        ),
        line("embed", "/v1/embeddings", json!({"input": "x"})),
        completion("stream", "x", json!({"stream": true})),
        "{\"custom_id\": \"cut".to_string(),
        completion("greet", "A duplicate custom_id", json!({})),
    ];
    let input = scratch("run-in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = scratch("run-out.jsonl");
    let out = batch_command(&input, &output, &["--parallel", "2"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = by_custom_id(&output);
    assert_eq!(recs.len(), lines.len(), "one record per line: {recs:?}");
    check_with_openai_types(&input, &output);

    // A refused body gets the server's 400 answer; a line that is no request an error object.
    assert_eq!(recs["line 5"]["custom_id"], "tools");
    assert_eq!(recs["line 5"]["response"]["status_code"], 400);
    assert_eq!(recs["line 5"]["response"]["body"]["error"]["param"], "tools");
    assert_eq!(recs["line 7"]["response"]["status_code"], 400);
    assert_eq!(recs["line 7"]["response"]["body"]["error"]["param"], "stream");
    for key in ["line 6", "line 8", "line 9"] {
        assert!(recs[key]["response"].is_null(), "{key}: {}", recs[key]);
        assert!(recs[key]["error"]["message"].is_string(), "{key}: {}", recs[key]);
    }
    assert!(recs["line 9"]["error"]["message"].as_str().unwrap().contains("duplicate"));

    // The answers are the server's answers to the same bodies.
    let server = start(&[]);
    for (key, l) in lines.iter().take(4).enumerate() {
        let req: Value = serde_json::from_str(l).unwrap();
        let id = req["custom_id"].as_str().unwrap();
        let (status, want) = post(&server.addr, req["url"].as_str().unwrap(), &req["body"]);
        assert_eq!(status, 200, "{want}");
        let got = &recs[id]["response"];
        assert_eq!(got["status_code"], 200, "line {key}: {}", recs[id]);
        let body = &got["body"];
        // Equal up to llama.cpp's batch noise (lanes decoded together or apart).
        let (got, want_choice) = (&body["choices"][0], &want["choices"][0]);
        for k in ["text", "message", "finish_reason"] {
            assert_eq!(got[k], want_choice[k], "{id}: {k}");
        }
        if let Some(lp) = want_choice["logprobs"]["token_logprobs"].as_array() {
            assert_eq!(got["logprobs"]["tokens"], want_choice["logprobs"]["tokens"], "{id}");
            for (a, b) in got["logprobs"]["token_logprobs"].as_array().unwrap().iter().zip(lp) {
                assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 0.3, "{id}: {a} {b}");
            }
        }
        assert_eq!(body["usage"], want["usage"], "{id}");
        assert_eq!(body["object"], want["object"], "{id}");
    }
    let json_reply = recs["json"]["response"]["body"]["choices"][0]["message"]["content"].as_str();
    let parsed: Value = serde_json::from_str(json_reply.unwrap()).expect("json_object gives JSON");
    assert!(parsed.is_object(), "{parsed}");
}

#[test]
fn a_killed_openai_batch_resumes_to_the_uninterrupted_result() {
    let prompts = ["The ocean", "The moon", "A river", "The forest", "My town", "The sky"];
    let lines: Vec<String> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 0 {
                completion(&format!("c{i}"), p, json!({"max_tokens": 30}))
            } else {
                chat(&format!("c{i}"), "Be brief.", p, json!({"max_tokens": 30}))
            }
        })
        .collect();
    let input = scratch("kill-in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let full = scratch("kill-full.jsonl");
    assert!(batch_command(&input, &full, &[]).status().unwrap().success());

    let output = scratch("kill-out.jsonl");
    let mut child = batch_command(&input, &output, &[]).spawn().unwrap();
    let cut = b"{\"id\": \"batch_req_6\", \"custom_id\": \"c5\", \"li";
    let partial = kill_after_lines(&mut child, &output, 2, cut);
    assert!(partial < prompts.len(), "the run finished before it could be killed");

    let out = batch_command(&input, &output, &["--resume"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (got, want) = (by_custom_id(&output), by_custom_id(&full));
    assert_eq!(got.len(), prompts.len(), "every line exactly once: {got:?}");
    for (id, w) in &want {
        let (g, w) = (&got[id]["response"]["body"], &w["response"]["body"]);
        assert_eq!(g["choices"][0]["text"], w["choices"][0]["text"], "{id}");
        assert_eq!(g["choices"][0]["message"], w["choices"][0]["message"], "{id}");
    }
    check_with_openai_types(&input, &output);
}
