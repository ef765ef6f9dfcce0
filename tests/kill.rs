//! `mood batch` killed with SIGKILL at many moments — while loading, between error records
//! and generations, in the middle of writing — then resumed, again and again until it ends:
//! every input line has exactly one record, identical to an uninterrupted run's.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

fn command(input: &Path, output: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mood"));
    c.args(["batch", "-r", demo_recipe().to_str().unwrap(), "-n", "6", "-c", "256"])
        .arg("-i")
        .arg(input)
        .arg("-o")
        .arg(output)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if resume {
        c.arg("--resume");
    }
    c
}

/// Records by input line; panics if a line has two.
fn by_line(output: &Path) -> BTreeMap<u64, Value> {
    let mut map = BTreeMap::new();
    for l in std::fs::read_to_string(output).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|_| panic!("not a record: {l:?}"));
        let line = v["line"].as_u64().unwrap();
        assert!(map.insert(line, v).is_none(), "line {line} has two records");
    }
    map
}

#[test]
fn kills_at_many_moments_then_resume_equal_an_uninterrupted_run() {
    let mut text = String::new();
    for i in 0..8 {
        text.push_str(&format!("{{\"id\": {i}, \"prompt\": \"Tale number {i}:\"}}\n"));
        match i {
            1 => text.push_str("not json\n"),
            3 => text.push_str("{\"id\": 2, \"prompt\": \"a duplicate id\"}\n"),
            5 => text.push_str("{\"id\": 50, \"prompt\": \"x\", \"top_p\": 7}\n"),
            _ => {}
        }
    }
    let input = scratch("in.jsonl");
    std::fs::write(&input, &text).unwrap();

    let reference = scratch("reference.jsonl");
    assert!(command(&input, &reference, false).status().unwrap().success());
    let want = by_line(&reference);
    assert_eq!(want.len(), 11, "one record per input line");

    let output = scratch("killed.jsonl");
    let delays_ms = [30, 150, 300, 450, 550, 650, 750, 900, 1100, 1400, 1800, 2300];
    let mut finished = false;
    for (round, &delay) in delays_ms.iter().chain(std::iter::repeat(&5000)).enumerate() {
        assert!(round < 40, "the batch never finished");
        let mut child = command(&input, &output, round > 0).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "round {round}: {status}");
                finished = true;
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
            }
        }
    }
    assert!(finished);
    let got = by_line(&output);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (line, w) in &want {
        let g = &got[line];
        match w.get("error") {
            Some(e) => assert_eq!(g.get("error"), Some(e), "line {line}"),
            None => {
                assert_eq!(g["id"], w["id"], "line {line}");
                assert_eq!(g["tokens"], w["tokens"], "line {line}");
                assert_eq!(g["text"], w["text"], "line {line}");
            }
        }
    }
}
