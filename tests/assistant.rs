//! The assistant recipe on a real instruct model with its own chat template (SmolLM2 135M
//! Instruct, ChatML): `mood chat` and `mood serve` stop replies at the template's end of turn,
//! leak no template tokens, and change replies with the weights; the vocabulary check between
//! two real model families (Gemma 3 and SmolLM2).

mod common;

use common::server::{post_json, request, serve, sse_events};
use common::*;
use mood::pipeline::recipe::Recipe;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

const KEY: &str = "assistant-key";

/// What must never reach a reply: ChatML's markers and the special-token spelling.
const TEMPLATE_MARKERS: [&str; 4] = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|"];

fn assert_clean(reply: &str) {
    for m in TEMPLATE_MARKERS {
        assert!(!reply.contains(m), "template marker {m:?} leaked into {reply:?}");
    }
}

/// `mood chat -r models/assistant.toml ARGS…` with `input` on stdin and `/save` at the end;
/// returns the saved messages and stderr.
fn chat(args: &[&str], input: &str) -> (Vec<Value>, String) {
    let dir = std::env::temp_dir().join(format!("mood-assistant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join(format!("chat-{}.json", args.join("_").replace(['/', ','], "-")));
    let recipe = assistant_recipe();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["chat", "-r", recipe.to_str().unwrap(), "-n", "96", "-c", "2048"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = format!("{input}/save {}\n", saved.display());
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_clean(&stdout);
    let conv: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    (conv["messages"].as_array().unwrap().clone(), stderr)
}

/// The finish reasons of the figures lines (`[N tokens, … tok/s, eog, …]`).
fn finishes(stderr: &str) -> Vec<String> {
    chat_figures(stderr).into_iter().map(|f| f.finish).collect()
}

#[test]
fn chat_uses_the_models_own_template_and_stops_at_the_end_of_turn() {
    let question = "What is the capital of France?";
    // One expert alone, greedy, no repetition penalty: the reply is greedy decoding of the
    // ChatML prompt written out by hand here, up to the end-of-turn token.
    let (msgs, stderr) = chat(&["-w", "1,0,0", "--repeat-penalty", "1"], &format!("{question}\n"));
    assert_eq!(finishes(&stderr), ["eog"], "the reply ends at the end of turn: {stderr}");
    let reply = msgs[1]["content"].as_str().unwrap();
    let recipe = Recipe::load(&assistant_recipe()).unwrap();
    let system = recipe.experts[0].system.clone().unwrap();
    let rendered = format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    );
    let model = load_model(&assistant_model());
    let mut plain = Plain::new(&model, 1024, 2);
    let tokens = model.vocab().tokenize(rendered.as_bytes(), true, true);
    let mut logits = plain.decode(&tokens);
    let mut bytes = Vec::new();
    let mut ended = false;
    for _ in 0..96 {
        let t = argmax(&logits);
        if plain.is_eog(t) {
            ended = true;
            break;
        }
        let token = llama_cpp_2::token::LlamaToken(t as i32);
        model.vocab().token_to_piece_into(token, &mut bytes, false, None);
        logits = plain.feed(t);
    }
    assert!(ended, "the plain decoding reached the end of turn too");
    assert_eq!(reply, String::from_utf8_lossy(&bytes).trim(), "the reply is the template's");
    assert!(!reply.is_empty());

    // Another expert, the same question: another reply.
    let (other, stderr) = chat(&["-w", "0,0,1", "--repeat-penalty", "1"], &format!("{question}\n"));
    assert_eq!(finishes(&stderr), ["eog"], "{stderr}");
    assert_ne!(other[1]["content"], msgs[1]["content"], "the weights change the reply");

    // The default weights over two turns: both end at the end of turn, the second reuses
    // the first turn's cache.
    let (msgs, stderr) = chat(&[], "Hi! What is your name?\nWhat is 2 + 2?\n");
    assert_eq!(finishes(&stderr), ["eog", "eog"], "{stderr}");
    assert_eq!(msgs.len(), 4);
    assert!(msgs.iter().all(|m| !m["content"].as_str().unwrap().is_empty()));
    let reused: Vec<usize> = chat_figures(&stderr).iter().map(|f| f.reused).collect();
    assert!(reused[1] > 40, "the second turn reused only {} tokens", reused[1]);
}

#[test]
fn serve_answers_with_the_assistant_recipe() {
    let server = serve(&assistant_recipe(), &["--api-key", KEY, "-c", "2048", "-n", "128"]);
    let a = &server.addr;

    // The recipe for the page, behind the key.
    let (status, _, body) = request(a, "GET", "/v1/mood", None, None);
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = request(a, "GET", "/v1/mood", None, Some(KEY));
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> =
        info["experts"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["concise", "friendly", "playful"]);
    assert_eq!(info["weights"], json!([0.6, 0.4, 0.0]));
    assert_eq!(info["divergence"], "reverse-kl");
    assert_eq!(info["reference"], true);
    assert!(info["experts"][0]["system"].as_str().unwrap().contains("short sentences"));

    let ask = |weights: Value, stream: bool| {
        json!({
            "messages": [{"role": "user", "content": "Hi! How are you today?"}],
            "weights": weights, "stream": stream,
        })
    };
    let (status, plain) =
        post_json(a, "/v1/chat/completions", &ask(json!([0.6, 0.4, 0]), false), Some(KEY));
    assert_eq!(status, 200, "{plain}");
    let text = plain["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.trim().is_empty());
    assert_clean(text);
    // "stop" with no stop strings set: the end-of-turn token ended it, before the limit.
    assert_eq!(plain["choices"][0]["finish_reason"], "stop", "{plain}");
    assert!(plain["usage"]["completion_tokens"].as_u64().unwrap() < 128);
    assert_eq!(plain["mood"]["weights"], json!([0.6, 0.4, 0.0]));

    // Streamed: the same text; the last chunk carries usage and the mood object (timings).
    let body = ask(json!([0.6, 0.4, 0]), true).to_string();
    let (status, _, raw) = request(a, "POST", "/v1/chat/completions", Some(&body), Some(KEY));
    assert_eq!(status, 200, "{raw}");
    let events = sse_events(&raw);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect::<Vec<_>>()
        .concat();
    assert_eq!(streamed, text);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["mood"]["divergence"], "reverse-kl");
    assert!(last["mood"]["timings"]["tokens_per_second"].as_f64().unwrap() > 0.0, "{last}");
    assert_eq!(last["usage"], plain["usage"]);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.get("mood").is_none()));

    // Other weights, another reply; a weight vector off the simplex runs the reference.
    let (_, playful) = post_json(
        a,
        "/v1/chat/completions",
        &ask(json!({"playful": 1, "concise": 0, "friendly": 0}), false),
        Some(KEY),
    );
    let other = playful["choices"][0]["message"]["content"].as_str().unwrap();
    assert_clean(other);
    assert_ne!(other, text, "the weights change the reply");
    let (status, extra) =
        post_json(a, "/v1/chat/completions", &ask(json!([1.2, 0.3, -0.2]), false), Some(KEY));
    assert_eq!(status, 200, "{extra}");
    assert_clean(extra["choices"][0]["message"]["content"].as_str().unwrap());

    // A conversation with history.
    let (status, v) = post_json(
        a,
        "/v1/chat/completions",
        &json!({"messages": [
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Nice to meet you, Ada!"},
            {"role": "user", "content": "What is my name?"}]}),
        Some(KEY),
    );
    assert_eq!(status, 200, "{v}");
    assert_clean(v["choices"][0]["message"]["content"].as_str().unwrap());
}

#[test]
fn gemma_and_smollm2_over_tokens_are_refused_and_the_error_says_why() {
    // By default they are combined over bytes (tests/bytes_cli.rs); over tokens they cannot be.
    let (gemma, smol) = (default_model(), assistant_model());
    let out = mood(&[
        "generate",
        "--unit",
        "tokens",
        "-m",
        gemma.to_str().unwrap(),
        "--expert",
        smol.to_str().unwrap(),
        "-p",
        "Hello",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("mood: error: ") && !err.contains("panicked"), "{err}");
    for name in ["gemma-3-270m-q4_k_m.gguf", "smollm2-135m-instruct-q4_1.gguf"] {
        assert!(err.contains(name), "the error names {name}: {err}");
    }
    assert!(err.contains("cannot be combined") && err.contains("vocabulary types differ"), "{err}");
}

#[test]
fn an_instruct_model_gets_its_own_template_by_default() {
    let model = assistant_model();
    let m = model.to_str().unwrap();
    let question = "What is 2+2?";
    let greedy = ["-n", "64", "--repeat-penalty", "1"];
    let chat = |extra: &[&str]| {
        let args: Vec<&str> =
            ["chat", "-m", m].iter().chain(&greedy).chain(extra).copied().collect();
        let (out, err, code) = mood_with_input(&args, &format!("{question}\n"));
        assert_eq!(code, Some(0), "{err}");
        (out.trim().to_string(), err)
    };
    // No --template: the GGUF's own (ChatML), exactly as when asked for by name; the reply
    // ends at the end of turn instead of running on into made-up turns.
    let (by_default, err) = chat(&[]);
    assert_eq!(finishes(&err), ["eog"], "{err}");
    assert_clean(&by_default);
    assert!(!by_default.is_empty());
    let (asked, _) = chat(&["--template", "model"]);
    assert_eq!(by_default, asked);
    let (transcript, _) = chat(&["--template", "none"]);
    assert_ne!(by_default, transcript, "the plain transcript is no longer the default");

    // generate: the question as text to continue ends at once; stderr says so and points
    // to --chat, which answers it as one user turn (the same reply as the chat's).
    let (out, err, code) = mood_with_input(&["generate", "-m", m, "-p", question, "-n", "64"], "");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.trim().is_empty(), "{out:?}");
    assert!(err.contains("no text") && err.contains("--chat"), "{err}");
    let args: Vec<&str> =
        ["generate", "-m", m, "--chat", "-p", question].iter().chain(&greedy).copied().collect();
    let (out, err, code) = mood_with_input(&args, "");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), by_default);
    assert!(!err.contains("no text"), "{err}");
    // --template and --system belong to --chat.
    let (_, err, code) =
        mood_with_input(&["generate", "-m", m, "-p", question, "--system", "Be brief."], "");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--chat"), "{err}");
}
