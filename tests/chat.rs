//! `mood chat` driven through a pipe: turns, a weights change between them, history kept
//! (with the caches reused), commands, templates.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn chat(args: &[&str], input: &str) -> (String, String, Option<i32>) {
    let demo = demo_recipe();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["chat", "-r", demo.to_str().unwrap(), "-n", "24"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code(),
    )
}

#[test]
fn two_turns_with_a_weights_change_keep_the_history() {
    let dir = std::env::temp_dir().join(format!("mood-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("conversation.json");
    let input = format!(
        "My name is Alice and I live in Paris.\n/weights 0.2,0.8\nWhat is my name?\n/frobnicate\n/save {}\n",
        saved.display()
    );
    let (stdout, stderr, code) = chat(&[], &input);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("weights [0.2, 0.8]"), "{stderr}");
    assert!(stderr.contains("unknown command /frobnicate"), "a bad command is answered: {stderr}");
    // One figures line per reply; the second turn found the first one's tokens cached.
    let reused: Vec<usize> = stderr
        .lines()
        .filter_map(|l| l.split(", ").find(|p| p.ends_with("prompt tokens reused]")))
        .map(|p| p.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(reused.len(), 2, "{stderr}");
    assert_eq!(reused[0], 0);
    assert!(reused[1] > 20, "the second turn reused only {} tokens", reused[1]);

    let conv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let msgs = conv["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[0]["content"], "My name is Alice and I live in Paris.");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(conv["weights"], serde_json::json!([0.2, 0.8]));
    // Both replies reached stdout, in order.
    let first = msgs[1]["content"].as_str().unwrap();
    let second = msgs[3]["content"].as_str().unwrap();
    let at = |s: &str| stdout.find(s).unwrap_or_else(|| panic!("{s:?} not in {stdout:?}"));
    assert!(at(first) < at(second));
}

#[test]
fn chat_templates_and_their_errors() {
    let (stdout, stderr, code) =
        chat(&["--template", "gemma", "--system", "Be brief."], "Hello there.\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.trim().is_empty());
    assert!(!stdout.contains("<start_of_turn>") && !stdout.contains("<end_of_turn>"), "{stdout}");

    // One model in Gemma's template: the reply is greedy decoding of the prompt written out
    // by hand here, up to the end-of-turn token.
    let m = default_model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["chat", "-m", m.to_str().unwrap(), "-n", "24", "--repeat-penalty", "1"])
        .args(["--template", "gemma", "--system", "Be brief."])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello there.\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply = String::from_utf8(out.stdout).unwrap();
    let rendered =
        "<start_of_turn>user\nBe brief.\n\nHello there.<end_of_turn>\n<start_of_turn>model\n";
    let model = load_model(&m);
    let mut plain = Plain::new(&model, 512, 2);
    let tokens = model.vocab().tokenize(rendered.as_bytes(), true, true);
    let mut logits = plain.decode(&tokens);
    let mut bytes = Vec::new();
    for _ in 0..24 {
        let t = argmax(&logits);
        if plain.is_eog(t) {
            break;
        }
        let token = llama_cpp_2::token::LlamaToken(t as i32);
        model.vocab().token_to_piece_into(token, &mut bytes, false, None);
        logits = plain.feed(t);
    }
    // A reply's line ends at its end are not printed as part of it.
    let want = String::from_utf8_lossy(&bytes);
    assert_eq!(
        reply.trim_end_matches('\n'),
        want.trim_end_matches('\n'),
        "the reply is greedy decoding of the template"
    );
    let (_, stderr, code) = chat(&["--template", "nosuch"], "Hello\n");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("nosuch") && stderr.lines().count() == 1, "{stderr}");
    let m = default_model();
    let (_, stderr, code) = chat(&["--template", "model"], "Hello\n");
    assert_eq!(code, Some(1), "the default model has no template of its own");
    assert!(stderr.contains(m.file_name().unwrap().to_str().unwrap()), "{stderr}");
}

#[test]
fn ctrl_c_stops_the_reply_not_the_program() {
    let demo = demo_recipe();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args([
            "chat",
            "-r",
            demo.to_str().unwrap(),
            "-n",
            "2000",
            "--stop",
            "@@never@@",
            "-c",
            "4096",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Tell me a very long story about the sea.\n").unwrap();
    stdin.flush().unwrap();
    // Wait until the reply is streaming, then interrupt it.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    let n = std::io::Read::read(&mut stdout, &mut first).unwrap();
    assert!(n > 0, "the reply started");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // The program is still there: a second turn is answered, then end of input exits.
    stdin.write_all(b"/weights 1,0\nAnd now?\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Cancelled"), "the first reply was cut: {stderr}");
    assert_eq!(stderr.matches("prompt tokens reused]").count(), 2, "{stderr}");
}

#[test]
fn a_grammar_holds_every_reply_of_the_conversation() {
    let schema = r#"{"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"], "additionalProperties": false}"#;
    let (out, err, code) =
        chat(&["--json-schema", schema], "Is the sky blue?\n/weights 0.1,0.9\nIs grass red?\n");
    assert_eq!(code, Some(0), "{err}");
    // Replies in a row, each a JSON object (laid out over lines as the model likes).
    let replies: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(replies.len(), 2, "{out}");
    for r in replies {
        let answer = r["answer"].as_str().unwrap_or_default();
        assert!(["yes", "no"].contains(&answer), "{r}");
    }
}
