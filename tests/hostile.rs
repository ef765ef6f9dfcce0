//! Hostile input at the command line and in batch files: what must never lose work, hang,
//! exhaust memory or take mood down. Each case is one a user or an attacker can produce.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn batch(input: &Path, output: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mood"))
        .arg("batch")
        .arg("-r")
        .arg(demo_recipe())
        .arg("-i")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["-n", "4", "-c", "256"])
        .args(extra)
        .output()
        .unwrap()
}

fn records(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Expects exit 1 and one line on stderr containing `want`.
fn refused(out: &Output, want: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(want), "{err:?} lacks {want:?}");
}

#[test]
fn resume_refuses_a_file_that_is_not_ours_and_keeps_every_record() {
    let input = write("in.jsonl", b"{\"id\": 1, \"prompt\": \"The sea\"}\n");
    let notes = write("notes.csv", b"name,score\nalice,3\n");
    refused(&batch(&input, &notes, &["--resume"]), "not a mood batch output");
    assert_eq!(std::fs::read(&notes).unwrap(), b"name,score\nalice,3\n", "left untouched");

    // Our own output with a damaged line in the middle: every valid record stays, and only
    // the lines without a record are decoded.
    let lines: String = (1..=5)
        .map(|i| format!("{{\"id\": {i}, \"prompt\": \"Line {i} of the sea\"}}\n"))
        .collect();
    let input = write("five.jsonl", lines.as_bytes());
    let output = scratch("five-out.jsonl");
    assert!(batch(&input, &output, &[]).status.success());
    let full = std::fs::read_to_string(&output).unwrap();
    let kept: Vec<&str> = full.lines().collect();
    // Drop line 3's record, damage a line in the middle, cut the last record short.
    let mut damaged = String::new();
    for (i, l) in kept.iter().enumerate() {
        let rec: Value = serde_json::from_str(l).unwrap();
        if rec["line"] == 3 {
            continue;
        }
        damaged.push_str(l);
        damaged.push('\n');
        if i == 1 {
            damaged.push_str("{\"id\": 99, \"li\n");
        }
    }
    let last = kept.last().unwrap();
    let cut = &last[..last.len() / 2];
    let damaged = damaged.replacen(&format!("{last}\n"), cut, 1);
    std::fs::write(&output, &damaged).unwrap();
    let out = batch(&input, &output, &["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not records"), "the damaged line is reported");
    let recs = records(&output);
    let mut lines: Vec<u64> = recs.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    lines.sort_unstable();
    assert_eq!(lines, [1, 2, 3, 4, 5], "every input line has exactly one record");
    let after = std::fs::read_to_string(&output).unwrap();
    assert!(after.contains("{\"id\": 99, \"li\n"), "the unreadable line is left in place");
    for original in &kept[..kept.len() - 1] {
        let rec: Value = serde_json::from_str(original).unwrap();
        if rec["line"] != 3 {
            assert!(after.contains(original), "a valid record was deleted: {original:.60}");
        }
    }
}

#[test]
fn an_error_record_of_a_duplicate_id_does_not_mark_the_first_line_done() {
    let input = write(
        "dup.jsonl",
        b"{\"id\": \"q0\", \"prompt\": \"The sea\"}\n{\"id\": \"q1\", \"prompt\": \"The sky\"}\n{\"id\": \"q0\", \"prompt\": \"again\"}\n",
    );
    // The run died after writing line 3's error record, before line 1 was decoded.
    let output = write(
        "dup-out.jsonl",
        b"{\"id\":\"q0\",\"line\":3,\"error\":\"duplicate id \\\"q0\\\": an earlier line has it\"}\n",
    );
    let out = batch(&input, &output, &["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = records(&output);
    let first: Vec<&Value> = recs.iter().filter(|r| r["line"] == 1).collect();
    assert_eq!(first.len(), 1, "{recs:?}");
    assert!(first[0]["text"].is_string(), "line 1 was generated: {recs:?}");
    assert_eq!(recs.iter().filter(|r| r["line"] == 3).count(), 1, "line 3 keeps its one record");
}

#[test]
fn a_second_run_on_the_same_output_is_refused_while_the_first_runs() {
    let lines: String =
        (0..40).map(|i| format!("{{\"id\": {i}, \"prompt\": \"Story {i}:\"}}\n")).collect();
    let input = write("long.jsonl", lines.as_bytes());
    let output = scratch("long-out.jsonl");
    let mut first = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["batch", "-r", demo_recipe().to_str().unwrap(), "-n", "16", "-c", "256"])
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first run has its output open (and locked).
    let started = std::time::Instant::now();
    while !output.exists() {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    refused(&batch(&input, &output, &["--resume"]), "in use by another mood batch");
    refused(&batch(&input, &output, &[]), "exists");
    let _ = first.kill();
    let _ = first.wait();
    let ids: Vec<String> = records(&output).iter().map(|r| r["id"].to_string()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "no id written twice");
}

#[test]
fn lines_that_are_not_text_or_too_long_get_error_records_and_the_batch_finishes() {
    let mut bytes =
        b"{\"id\": 1, \"prompt\": \"The sea\"}\n{\"id\": 2, \"prompt\": \"caf\xe9\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"id\": 3, \"prompt\": \"");
    bytes.extend(std::iter::repeat_n(b'a', 17 << 20));
    bytes.extend_from_slice(b"\"}\n{\"id\": 4, \"prompt\": \"The sky\", \"top_k\": 18446744073709551615, \"temperature\": 1}\n");
    let input = write("bytes.jsonl", &bytes);
    let output = scratch("bytes-out.jsonl");
    let out = batch(&input, &output, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = records(&output);
    let by_line =
        |n: u64| recs.iter().find(|r| r["line"] == n).unwrap_or_else(|| panic!("{recs:?}"));
    assert!(by_line(1)["text"].is_string());
    assert!(by_line(2)["error"].as_str().unwrap().contains("not UTF-8"));
    assert!(by_line(3)["error"].as_str().unwrap().contains("longer than"));
    assert!(by_line(4)["text"].is_string(), "top_k = 2^64 − 1 is the whole vocabulary");
    // And resuming such a file finishes at once: nothing is left to do.
    let out = batch(&input, &output, &["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(records(&output).len(), 4);
}

#[test]
fn unbounded_files_and_devices_are_refused_in_bounded_memory() {
    let out =
        mood(&["generate", "-r", demo_recipe().to_str().unwrap(), "--prompt-file", "/dev/zero"]);
    refused(&out, "larger than 16 MiB");
    let out = mood(&["generate", "-r", "/dev/zero", "-p", "x"]);
    refused(&out, "larger than 16 MiB");
    let input = write("one.jsonl", b"{\"id\": 1, \"prompt\": \"x\"}\n");
    refused(&batch(&input, Path::new("/dev/full"), &["--resume"]), "not a regular file");
    refused(&batch(&input, Path::new("/dev/null"), &[]), "exists");
}

#[test]
fn limits_are_checked_up_front_with_the_reason() {
    let demo = demo_recipe();
    let d = demo.to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["-c", "1000000000"], "trained for 32768 tokens"),
        (&["-c", "30000", "--strategy", "threads"], ""),
        (&["--threads", "20000"], "--threads is 20000"),
        (&["--threads", "65535"], "--threads is 65535"),
        (&["-w", "1e308,-1e308"], "--weights"),
        (&["-d", "alpha:10000"], "alpha"),
        (&["-d", "alpha:1e-300"], "alpha"),
        (&["--seed", "9007199254740993"], "--seed"),
    ];
    for (args, want) in cases {
        let mut all = vec!["generate", "-r", d, "-p", "The sea", "-n", "2"];
        all.extend_from_slice(args);
        let out = mood(&all);
        if want.is_empty() {
            // A large but possible context is fine (its caches fit this machine's memory).
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        } else {
            refused(&out, want);
        }
    }
    let names = write("ref.toml", b"[[expert]]\nname = 'reference'\nmodel = 'm.gguf'\n");
    refused(&mood(&["generate", "-r", names.to_str().unwrap(), "-p", "x"]), "named 'reference'");
}

#[test]
fn batch_settings_and_seeds_are_written_as_given_and_fresh_per_line() {
    let input = write(
        "seeds.jsonl",
        b"{\"id\": 1, \"prompt\": \"The sea\", \"temperature\": 0.8}\n{\"id\": 2, \"prompt\": \"The sea\", \"temperature\": 0.8}\n{\"id\": 3, \"prompt\": \"x\", \"seed\": 9007199254740993}\n{\"id\": 9007199254740993, \"prompt\": \"x\"}\n",
    );
    let output = scratch("seeds-out.jsonl");
    assert!(batch(&input, &output, &[]).status.success());
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(text.contains("\"temperature\":0.8,"), "0.8 stays 0.8: {text:.300}");
    let recs = records(&output);
    let seed = |id: u64| recs.iter().find(|r| r["id"] == id).unwrap()["seed"].as_u64().unwrap();
    assert_ne!(seed(1), seed(2), "each line draws its own seed");
    assert!(seed(1) < 1 << 53 && seed(2) < 1 << 53);
    let error = |line: u64| recs.iter().find(|r| r["line"] == line).unwrap()["error"].clone();
    assert!(error(3).as_str().unwrap().starts_with("seed "), "{recs:?}");
    assert!(error(4).as_str().unwrap().starts_with("id "), "{recs:?}");
}

#[test]
fn score_ends_quietly_when_the_reader_stops_and_refuses_flags_it_ignores() {
    let lines: String = (0..30)
        .map(|i| format!("{{\"id\": {i}, \"prompt\": \"The sea\", \"response\": \" is blue.\"}}\n"))
        .collect();
    let input = write("score.jsonl", lines.as_bytes());
    let demo = demo_recipe();
    let shell = format!(
        "{} score -r {} -i {} | head -1",
        env!("CARGO_BIN_EXE_mood"),
        demo.display(),
        input.display()
    );
    let out = Command::new("bash").args(["-c", &shell]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(!stderr(&out).to_lowercase().contains("pipe"), "{}", stderr(&out));
    for flag in [["-w", "1,0"], ["-d", "jsd"]] {
        let mut args = vec!["score", "-r", demo.to_str().unwrap(), "-i", input.to_str().unwrap()];
        args.extend_from_slice(&flag);
        refused(&mood(&args), "do not apply");
    }
}

#[test]
fn chat_survives_lines_that_are_not_text() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["chat", "-r", demo_recipe().to_str().unwrap(), "-n", "6", "-c", "512"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"My name is \xff\xfe.\n/weights 1e308,0\n/temperature nan\nHello there.\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("not UTF-8"), "{err}");
    assert!(err.contains("--weights"), "{err}");
    assert!(err.contains("temperature"), "{err}");
    assert_eq!(chat_figures(&err).len(), 1, "the good message got its reply: {err}");
}
