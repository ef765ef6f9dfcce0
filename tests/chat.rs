//! `mood chat` driven through a pipe: turns, a weights change between them, history kept
//! (with the caches reused), commands, templates.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn chat(args: &[&str], input: &str) -> (String, String, Option<i32>) {
    let demo = demo_recipe();
    let all: Vec<&str> = ["chat", "-r", demo.to_str().unwrap(), "-n", "24"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    mood_with_input(&all, input)
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
    assert!(stderr.contains("weights poet=0.2 scientist=0.8"), "{stderr}");
    assert!(stderr.contains("unknown command /frobnicate"), "a bad command is answered: {stderr}");
    // One figures line per reply; the second turn found the first one's tokens cached.
    let reused: Vec<usize> = chat_figures(&stderr).iter().map(|f| f.reused).collect();
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
    let finishes: Vec<String> = chat_figures(&stderr).into_iter().map(|f| f.finish).collect();
    assert_eq!(finishes.len(), 2, "{stderr}");
    assert_eq!(finishes[0], "cancelled", "the first reply was cut: {stderr}");
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

#[test]
fn a_weight_change_keeps_every_policys_cache() {
    // The reference joins at turn 3 (weights summing to 2 need it), leaves at turn 4 and
    // joins again at turn 5: no policy reads the conversation from the start twice.
    let input = "My name is Alice.\nI live in Paris.\n/weights 1,1\nI like boats.\n\
                 /weights 0.5,0.5\nI have a cat.\n/weights 1,1\nWhat is my name?\n";
    let (_, stderr, code) = chat(&[], input);
    assert_eq!(code, Some(0), "{stderr}");
    let f = chat_figures(&stderr);
    assert_eq!(f.len(), 5, "{stderr}");
    // Turn 3: the reference reads the whole conversation, the experts only the new turn.
    assert_eq!(f[2].reused, 0, "the reference had nothing cached: {stderr}");
    // Turn 5: the reference kept turns 1–3, the experts everything but the new turn.
    assert!(f[4].reused > 40, "turn 5 reused only {} tokens: {stderr}", f[4].reused);
    assert!(
        f[4].decoded < f[2].decoded,
        "turn 5 decoded {} prompt tokens, turn 3 {}: {stderr}",
        f[4].decoded,
        f[2].decoded
    );
    // A divergence change keeps them too.
    let (_, stderr, code) = chat(&[], "My name is Alice.\n/divergence jsd\nWhat is my name?\n");
    assert_eq!(code, Some(0), "{stderr}");
    let f = chat_figures(&stderr);
    assert_eq!(f.len(), 2, "{stderr}");
    assert!(f[1].decoded < 2 * f[0].decoded + 30, "{stderr}");
}

#[test]
fn commands_show_set_by_name_save_a_recipe_and_load_a_conversation() {
    let dir = std::env::temp_dir().join(format!("mood-chat-cmds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (recipe, conv) = (dir.join("steered.toml"), dir.join("conv.json"));
    let input = format!(
        "/weights\nHello there.\n/weights scientist=1\n/weights\n/weights nobody=1\n\
         /temperature 0.5\n/divergence\n/help\n/save-recipe {}\n/save {}\n/quit\nnever sent\n",
        recipe.display(),
        conv.display()
    );
    let (stdout, stderr, code) = chat(&[], &input);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("weights poet=0.5 scientist=0.5"), "/weights alone shows: {stderr}");
    assert!(stderr.contains("weights poet=0.5 scientist=1"), "set by name: {stderr}");
    assert!(stderr.contains("no expert is named 'nobody'"), "{stderr}");
    assert!(stderr.contains("divergence reverse-kl"), "{stderr}");
    // /help lists the experts with what sets them apart, and the settings.
    assert!(stderr.contains("A short rhyming poem"), "{stderr}");
    assert!(stderr.contains("temperature 0.5"), "{stderr}");
    assert_eq!(chat_figures(&stderr).len(), 1, "/quit ends the chat: {stderr}");
    assert!(!stdout.contains("never"), "{stdout}");

    // The saved recipe is a recipe file: the weights, divergence and temperature of the
    // moment, usable from any folder.
    let saved = mood::pipeline::recipe::Recipe::load(&recipe).unwrap();
    assert_eq!(saved.weights, vec![0.5, 1.0]);
    assert_eq!(saved.temperature, Some(0.5));
    assert!(saved.experts.iter().all(|e| e.model.is_absolute()));
    assert_eq!(saved.experts[0].prefix, "A short rhyming poem for children:\n\n");

    // A chat on the saved recipe starts where the first left off, and /load brings the
    // conversation back.
    let demo = recipe.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["chat", "-r", demo, "-n", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = format!(
        "/weights\n/temperature\n/load {}\n/load {}\n/help\n/exit\n",
        conv.display(),
        recipe.display()
    );
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("weights poet=0.5 scientist=1"), "{stderr}");
    assert!(stderr.contains("temperature 0.5"), "{stderr}");
    assert!(stderr.contains("loaded 2 messages"), "{stderr}");
    assert!(stderr.contains("is not a conversation written by /save"), "{stderr}");
    assert!(stderr.contains("2 messages so far"), "a bad /load changed nothing: {stderr}");
}

#[test]
fn a_bad_load_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("mood-chat-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("system.json", r#"{"messages": [{"role": "system", "content": "x"}]}"#, "role 'system'"),
        ("weights.json", r#"{"weights": [1, 2, 3], "messages": []}"#, "3 value(s)"),
        ("huge.json", r#"{"weights": [1, -1e9], "messages": []}"#, "must be finite numbers"),
        ("truncated.json", r#"{"messages": [{"role": "user", "cont"#, "not a conversation"),
        ("extra.json", r#"{"messages": [], "surprise": 1}"#, "not a conversation"),
    ];
    let mut input = String::from("Hello.\n");
    for (name, text, _) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        input.push_str(&format!("/load {}\n", path.display()));
    }
    input.push_str(&format!("/load {}\n/help\n", dir.join("missing.json").display()));
    let (_, stderr, code) = chat(&[], &input);
    assert_eq!(code, Some(0), "{stderr}");
    for (name, _, expect) in cases {
        assert!(stderr.contains(expect), "{name}: {stderr}");
    }
    assert!(stderr.contains("missing.json"), "{stderr}");
    assert!(stderr.contains("2 messages so far"), "{stderr}");
    assert!(stderr.contains("weight 0.5 "), "{stderr}");
}

#[test]
fn the_figures_line_shows_the_seed_only_when_sampling() {
    let (_, greedy, code) = chat(&[], "Hello.\n");
    assert_eq!(code, Some(0), "{greedy}");
    let (_, sampled, code) = chat(&["--temp", "0.8", "--seed", "7"], "Hello.\n");
    assert_eq!(code, Some(0), "{sampled}");
    let (g, s) = (chat_figures(&greedy), chat_figures(&sampled));
    assert_eq!((g.len(), s.len()), (1, 1), "{greedy}\n{sampled}");
    assert_eq!(g[0].seed, None, "{greedy}");
    assert_eq!(s[0].seed, Some(7), "{sampled}");
    for f in g.iter().chain(&s) {
        assert!(["eog", "stop", "length"].contains(&f.finish.as_str()), "{f:?}");
    }
}

#[test]
fn in_a_terminal_lines_are_edited_with_history() {
    // A pseudo-terminal from util-linux's `script`: mood sees a terminal on stdin and edits
    // lines with rustyline; the up arrow brings back the last line.
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let demo = demo_recipe();
    let command = format!("{} chat -r {} -n 4", env!("CARGO_BIN_EXE_mood"), demo.display());
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        // A terminal that can edit lines, whatever the environment running the tests says
        // (on a `dumb` one rustyline reads plain lines, as it should).
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux's script (Debian's bsdutils)");
    let seen = Arc::new(Mutex::new(String::new()));
    let mut out = child.stdout.take().unwrap();
    let sink = Arc::clone(&seen);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_for = |what: &str, count: usize| {
        let started = Instant::now();
        while seen.lock().unwrap().matches(what).count() < count {
            let text = seen.lock().unwrap().clone();
            assert!(started.elapsed() < Duration::from_secs(60), "no {what:?} in {text:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    wait_for("/quit exits", 1);
    stdin.write_all(b"/weights scientist=0.7\r").unwrap();
    wait_for("weights poet=0.5 scientist=0.7", 1);
    stdin.write_all(b"/weights\r").unwrap();
    wait_for("weights poet=0.5 scientist=0.7", 2);
    // Up arrow twice: the first line again, edited at its end (Backspace, then 9).
    stdin.write_all(b"\x1b[A\x1b[A\x7f9\r").unwrap();
    wait_for("weights poet=0.5 scientist=0.9", 1);
    stdin.write_all(b"/quit\r").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{}", seen.lock().unwrap());
}
