//! MOD over bytes from the front ends: which path a recipe takes (`--unit`, `mood info`), the
//! units of the output, the settings refused, stop strings, and `chat`, `batch` and `serve`
//! on the real pair of models with different tokenizers (models/pair.toml).

mod common;

use common::server::{http, serve};
use common::*;
use serde_json::Value;
use std::path::PathBuf;

fn pair_recipe() -> PathBuf {
    default_model();
    assistant_model();
    root().join("models/pair.toml")
}

fn pair(args: &[&str]) -> std::process::Output {
    let recipe = pair_recipe();
    let mut all = vec!["generate", "-r", recipe.to_str().unwrap()];
    all.extend_from_slice(args);
    mood(&all)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_pair_of_vocabularies_goes_over_bytes_and_says_so() {
    let out = pair(&["-p", "The capital of France is", "-n", "24", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unit"], "bytes");
    let text = v["text"].as_str().unwrap();
    let bytes: Vec<u8> = tokens_of(&v).iter().map(|&b| u8::try_from(b).unwrap()).collect();
    assert_eq!(bytes, text.as_bytes(), "the tokens of a byte-level generation are its bytes");
    assert_eq!(v["completion_tokens"], bytes.len());
    assert!(bytes.len() <= 24, "-n counts bytes");
    for policy in ["gemma", "smollm"] {
        let passes = v["bytes"]["passes_per_byte"][policy].as_f64().unwrap();
        assert!(passes > 0.0 && passes <= 1.0, "{policy}: {passes} passes per byte");
    }
    assert!(v["bytes"]["most_dropped"].as_f64().unwrap() <= 1e-3);

    // Over tokens the pair is an error that says what to do instead.
    let out = pair(&["-p", "x", "-n", "4", "--unit", "tokens"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("vocabulary types differ") && err.contains("--unit bytes"), "{err}");
    let out = pair(&["-p", "x", "--unit", "words"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn the_policies_side_by_side_give_the_text_of_the_policies_taking_turns() {
    // `auto` lets the policies take turns on the threads, `threads` runs them side by side
    // on their shares: the same passes, so the same greedy text and passes per byte.
    let run = |strategy: &str| {
        let args = ["-p", "Rome was", "-n", "40", "--temp", "0", "--json", "--strategy", strategy];
        let out = pair(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let (turns, side) = (run("auto"), run("threads"));
    assert_eq!(turns["text"], side["text"]);
    assert_eq!(turns["bytes"]["passes_per_byte"], side["bytes"]["passes_per_byte"]);
    assert_eq!(turns["timings"]["strategy"], "mixed");
    assert_eq!(side["timings"]["strategy"], "threads");
    assert!(!turns["text"].as_str().unwrap().is_empty());
}

#[test]
fn mood_info_says_which_unit_two_files_are_combined_over() {
    let (gemma, smol) = (default_model(), assistant_model());
    let out = mood(&["info", gemma.to_str().unwrap(), smol.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "are combined over bytes (over tokens they cannot be: vocabulary types differ"
        ),
        "{text}"
    );
    let v = mood_json(&["info", "--json", gemma.to_str().unwrap(), smol.to_str().unwrap()]);
    assert_eq!(v["compatibility"][0]["unit"], "bytes");
    let v = mood_json(&["info", "--json", smol.to_str().unwrap(), smol.to_str().unwrap()]);
    assert_eq!(v["compatibility"][0]["unit"], "tokens");
}

#[test]
fn settings_that_name_tokens_are_refused_over_bytes_with_a_reason() {
    for (flags, named) in [
        (&["--repeat-penalty", "1.3"][..], "repeat_penalty"),
        (&["--presence-penalty", "0.5"][..], "presence_penalty"),
        (&["--logit-bias", "5=1"][..], "logit_bias"),
        (&["--grammar", "root ::= \"a\""][..], "grammar"),
    ] {
        let mut args = vec!["-p", "Hello", "-n", "4"];
        args.extend_from_slice(flags);
        let out = pair(&args);
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        let err = stderr(&out);
        // The command line names the flag, other front ends the field.
        let flag = format!("--{}", named.replace('_', "-"));
        assert!(
            (err.contains(named) || err.contains(&flag)) && err.contains("bytes"),
            "{flags:?}: {err}"
        );
    }
    // The default repetition penalty is left off; off is accepted.
    assert!(pair(&["-p", "Hello", "-n", "3", "--repeat-penalty", "1"]).status.success());
    let out = pair(&["-p", "Hello", "-n", "3", "--byte-tolerance", "1.5"]);
    assert!(stderr(&out).contains("--byte-tolerance"), "{}", stderr(&out));
}

#[test]
fn a_stop_string_ends_a_byte_level_generation() {
    let recipe = pair_recipe();
    let run = |extra: &[&str]| {
        let base = ["generate", "-r", recipe.to_str().unwrap(), "-p", "The capital of France is"];
        mood_json(&[&base[..], &["-n", "40", "--json"], extra].concat())
    };
    let full = run(&[]);
    let text = full["text"].as_str().unwrap();
    let cut = text.find('.').expect("a sentence ends within 40 bytes");
    let stopped = run(&["--stop", "."]);
    assert_eq!(stopped["finish_reason"], "stop");
    assert_eq!(stopped["text"], &text[..cut]);
}

#[test]
fn a_conversation_over_bytes_keeps_each_policys_cache() {
    let recipe = pair_recipe();
    let (out, err, code) = mood_with_input(
        &["chat", "-r", recipe.to_str().unwrap(), "-n", "24"],
        "What is the capital of France?\nAnd of Italy?\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.trim().is_empty());
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 2, "{err}");
    for l in &lines {
        assert!(l.contains(" bytes, ") && l.contains("bytes/s"), "{l}");
    }
    let reused: usize = lines[1]
        .split(", ")
        .find_map(|p| p.strip_suffix(" prompt tokens reused"))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(reused > 5, "the second turn reuses the first turn's cache: {}", lines[1]);
}

#[test]
fn batch_and_serve_decode_over_bytes() {
    let recipe = pair_recipe();
    let dir = std::env::temp_dir().join(format!("mood-bytes-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("in.jsonl"), dir.join("out.jsonl"));
    std::fs::write(&input, "{\"id\": 1, \"prompt\": \"The sky is\"}\n{\"id\": 2, \"prompt\": \"Water is\", \"max_tokens\": 8}\n").unwrap();
    let out = mood(&[
        "batch",
        "-r",
        recipe.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "-n",
        "12",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["unit"], "bytes", "{r}");
    }
    let second = records.iter().find(|r| r["id"] == 2).unwrap();
    assert!(second["text"].as_str().unwrap().len() <= 8);
    // The same prompt through generate gives the same text (greedy).
    let single = mood_json(&[
        "generate",
        "-r",
        recipe.to_str().unwrap(),
        "-p",
        "The sky is",
        "-n",
        "12",
        "--json",
    ]);
    let first = records.iter().find(|r| r["id"] == 1).unwrap();
    assert_eq!(first["text"], single["text"]);

    let server = serve(&recipe, &[]);
    let (status, body) = http(
        &server.addr,
        "POST",
        "/v1/completions",
        Some(r#"{"prompt": "The sky is", "max_tokens": 12, "temperature": 0}"#),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], single["text"]);
    let (status, body) = http(
        &server.addr,
        "POST",
        "/v1/completions",
        Some(r#"{"prompt": "The sky is", "max_tokens": 12, "grammar": "root ::= \"a\""}"#),
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bytes"), "{body}");
    // The server goes on after the refusal.
    let (status, body) = http(
        &server.addr,
        "POST",
        "/v1/chat/completions",
        Some(r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6}"#),
        None,
    );
    assert_eq!(status, 200, "{body}");
}
