//! Bad input gets a one-line `mood: error: …` message naming the problem, exit code 1, and
//! never a panic.

mod common;

use common::*;
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs mood, expects failure with one line on stderr that contains every one of `want`.
fn fails_with(args: &[&str], want: &[&str]) {
    let out = mood(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "mood {args:?}: expected exit 1, stderr: {err}");
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line for {args:?}: {err}");
    assert!(err.starts_with("mood: error: "), "{err}");
    for w in want {
        assert!(err.contains(w), "mood {args:?}: {err:?} should mention {w:?}");
    }
}

#[test]
fn model_file_problems() {
    fails_with(
        &["generate", "-m", "/nonexistent/model.gguf", "-p", "x"],
        &["/nonexistent/model.gguf", "not found"],
    );
    let dir = scratch("a-folder.gguf");
    std::fs::create_dir_all(&dir).unwrap();
    fails_with(&["generate", "-m", dir.to_str().unwrap(), "-p", "x"], &["a-folder.gguf", "folder"]);
    let junk = scratch("junk.gguf");
    std::fs::write(&junk, b"this is not a model at all").unwrap();
    fails_with(
        &["generate", "-m", junk.to_str().unwrap(), "-p", "x"],
        &["junk.gguf", "not a GGUF"],
    );
    // A real GGUF cut short: the header reads, the tensors do not.
    let cut = scratch("truncated.gguf");
    let bytes = std::fs::read(tiny("a")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &["generate", "-m", cut.to_str().unwrap(), "-p", "x"],
        &["truncated.gguf", "cannot load"],
    );
    let corrupt = scratch("corrupt.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(&corrupt, bytes).unwrap();
    fails_with(
        &["generate", "-m", corrupt.to_str().unwrap(), "-p", "x"],
        &["corrupt.gguf", "cannot load"],
    );
}

#[test]
fn recipe_problems() {
    let m = default_model();
    let write = |name: &str, text: String| {
        let p = scratch(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let malformed = write("malformed.toml", "[[expert]\nmodel = ".into());
    fails_with(
        &["generate", "-r", malformed.to_str().unwrap(), "-p", "x"],
        &["malformed.toml", "line 1"],
    );
    let unknown = write("unknown.toml", format!("[[expert]]\nmodel = {:?}\ntemprature = 1\n", m));
    fails_with(
        &["generate", "-r", unknown.to_str().unwrap(), "-p", "x"],
        &["unknown.toml", "temprature"],
    );
    fails_with(&["generate", "-r", "/nonexistent/r.toml", "-p", "x"], &["/nonexistent/r.toml"]);
    let missing_ref = write("noref.toml", format!("[[expert]]\nmodel = {m:?}\nweight = 0.5\n"));
    fails_with(&["generate", "-r", missing_ref.to_str().unwrap(), "-p", "x"], &["reference"]);
}

#[test]
fn weight_problems() {
    let demo = demo_recipe();
    let d = demo.to_str().unwrap();
    fails_with(
        &["generate", "-r", d, "-w", "0.2,0.3,0.5", "-p", "x"],
        &["--weights", "3 value(s)", "2 expert(s)"],
    );
    fails_with(&["generate", "-r", d, "-w", "nan,1", "-p", "x"], &["--weights", "nan"]);
    fails_with(&["generate", "-r", d, "-w", "inf,0", "-p", "x"], &["--weights", "inf"]);
    fails_with(&["generate", "-r", d, "-w", "0.5,abc", "-p", "x"], &["--weights", "abc"]);
}

#[test]
fn prompt_and_sampling_problems() {
    let demo = demo_recipe();
    let d = demo.to_str().unwrap();
    fails_with(&["generate", "-r", d, "-p", ""], &["prompt is empty"]);
    fails_with(&["generate", "-r", d, "-p", "   "], &["prompt is empty"]);
    fails_with(&["generate", "-r", d], &["no prompt"]);
    let long = "word ".repeat(300);
    fails_with(&["generate", "-r", d, "-p", &long, "-c", "64"], &["--ctx-size", "64", "poet"]);
    fails_with(&["generate", "-r", d, "-p", "x", "--top-p", "0"], &["--top-p"]);
    fails_with(&["generate", "-r", d, "-p", "x", "--top-p", "1.5"], &["--top-p"]);
    fails_with(&["generate", "-r", d, "-p", "x", "--temperature", "-1"], &["--temperature"]);
    fails_with(&["generate", "-r", d, "-p", "x", "--min-p", "2"], &["--min-p"]);
    fails_with(&["generate", "-r", d, "-p", "x", "-n", "0"], &["--max-tokens"]);
    fails_with(
        &["generate", "-r", d, "--prompt-file", "/nonexistent/prompt.txt"],
        &["/nonexistent/prompt.txt"],
    );
    fails_with(&["generate", "--prefix", "x", "-p", "x"], &["--model"]);
}

/// Runs mood, expects clap's usage error (exit 2) whose first line names `flag` and says
/// what it takes.
fn usage_error(args: &[&str], flag: &str, takes: &str) {
    let out = mood(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "mood {args:?}: expected exit 2, stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.contains(&format!("'{flag}")) && first.contains(takes), "{args:?}: {err}");
}

#[test]
fn flag_values_are_typed_and_name_their_flag() {
    let m = default_model();
    let m = m.to_str().unwrap();
    // The number of alternatives is --logprobs' own range, named as such.
    usage_error(
        &["generate", "-m", m, "-p", "x", "--json", "--logprobs", "21"],
        "--logprobs",
        "0 to 20",
    );
    let out = mood(&["generate", "-m", m, "-p", "x", "--json", "--logprobs", "21"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("top-logprobs"));
    usage_error(
        &["generate", "-m", m, "-p", "x", "--strategy", "fast"],
        "--strategy",
        "auto, threads",
    );
    usage_error(
        &["bench", "-m", m, "--strategies", "threads,fast"],
        "--strategies",
        "auto, threads",
    );
    usage_error(&["bench", "-m", m, "--memory", "1,0"], "--memory", "positive whole numbers");
    usage_error(
        &["batch", "-m", m, "--input", "x", "--output", "y", "--shard", "9/3"],
        "--shard",
        "K/N",
    );
}

#[test]
fn a_model_path_that_is_a_pipe_is_refused_at_once() {
    let fifo = scratch("model.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Opening a pipe for reading waits for a writer: the file must be refused before that.
    let started = std::time::Instant::now();
    fails_with(
        &["generate", "-m", fifo.to_str().unwrap(), "-p", "x"],
        &["model.fifo", "not a regular file"],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn llama_cpp_short_flags_are_read_as_llama_cpp_means_them() {
    let m = default_model();
    let m = m.to_str().unwrap();
    let out = mood(&[
        "generate", "-m", m, "-p", "The sea", "-n", "2", "-ngl", "0", "-s", "42", "-fa", "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["seed"], 42, "-s is the seed");
    assert!(err.contains("-fa is accepted and changes nothing"), "{err}");
    for (flag, instead) in [("-hf", "never downloads"), ("-cnv", "mood chat"), ("-i", "mood chat")]
    {
        let out = mood(&["generate", "-m", m, "-p", "x", flag, "org/model"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{flag}: {err}");
        assert!(
            err.starts_with(&format!("mood: error: {flag}: ")) && err.contains(instead),
            "{err}"
        );
    }
}
