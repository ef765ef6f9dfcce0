//! Batch work split over machines: `mood batch --shard K/N` and `mood sweep --shard K/N`, each
//! shard into its own output, then `--merge`. Shards 1/3, 2/3 and 3/3 merged give the records
//! of the run that was not split, in input order (bad lines and a duplicate id whose first
//! line is in another shard included); a shard killed with SIGKILL and resumed merges to the
//! same; a merge with a shard missing, a shard given twice or a shard cut short is a one-line
//! error that names the lines, and writes nothing. A sweep split in two and merged gives the
//! table of the sweep that was not split.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-shard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// `mood batch` of the demo recipe, one prompt at a time (so that every run decodes a line
/// exactly as every other run does), with `extra`.
fn batch_command(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mood"));
    c.args(["batch", "-r", demo_recipe().to_str().unwrap(), "-n", "8", "-c", "256"])
        .args(["--parallel", "1", "--threads", "2", "-i"])
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The one-line error of a failed run.
fn one_line_error(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("mood: error: ") && !err.contains("panicked"), "{err}");
    err
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a record: {l:?}")))
        .collect()
}

/// What a record must keep across runs: its line, id, and text and tokens or error (the
/// timings differ from run to run).
fn essence(r: &Value) -> Value {
    serde_json::json!([r["line"], r["id"], r["text"], r["tokens"], r["error"]])
}

/// 14 lines: prompts, a blank line, a line that is not JSON, a bad setting, and an id whose
/// first line (2) is in shard 2 of 3 and whose duplicate (9) is in shard 3.
fn batch_input() -> PathBuf {
    let mut lines: Vec<String> =
        (0..14).map(|i| format!("{{\"id\": {i}, \"prompt\": \"Tale number {i}:\"}}")).collect();
    lines[3] = String::new();
    lines[5] = "not json".into();
    lines[6] = "{\"id\": 6, \"prompt\": \"x\", \"top_p\": 7}".into();
    lines[8] = "{\"id\": 1, \"prompt\": \"a duplicate id\"}".into();
    let input = scratch("batch-in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    input
}

#[test]
fn batch_shards_merge_to_the_unsplit_run_and_a_killed_shard_resumes() {
    let input = batch_input();
    let whole = scratch("whole.jsonl");
    ok(&batch_command(&input, &whole, &[]).output().unwrap());
    let mut want: Vec<Value> = records(&whole).iter().map(essence).collect();
    want.sort_by_key(|r| r[0].as_u64());
    assert_eq!(want.len(), 13, "one record per non-blank line");
    assert!(want[7][4].as_str().unwrap().contains("duplicate"), "line 9: {}", want[7]);

    // Shards 1 and 3 run to their end; shard 2 is killed once it has written a record.
    let shards: Vec<PathBuf> = (1..=3).map(|k| scratch(&format!("shard-{k}.jsonl"))).collect();
    let shard = |k: usize| shards[k - 1].clone();
    for k in [1, 3] {
        let o = batch_command(&input, &shard(k), &["--shard", &format!("{k}/3")]).output().unwrap();
        ok(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("(shard {k}/3)")), "{err}");
        for r in records(&shard(k)) {
            let line = r["line"].as_u64().unwrap() as usize;
            assert_eq!((line - 1) % 3, k - 1, "shard {k} holds line {line}");
        }
    }
    let mut child = batch_command(&input, &shard(2), &["--shard", "2/3"]).spawn().unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(shard(2)).map_or(0, |t| t.lines().count()) < 1 {
        assert!(started.elapsed() < Duration::from_secs(120), "no record written");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let written = records(&shard(2)).len();
    assert!(written < 5, "shard 2 finished before it was killed ({written} records)");
    // A record cut short, as a kill in the middle of a write leaves it.
    let mut f = std::fs::OpenOptions::new().append(true).open(shard(2)).unwrap();
    std::io::Write::write_all(&mut f, b"{\"id\": 10, \"line\": 11, \"te").unwrap();
    drop(f);

    let merged = scratch("merged.jsonl");
    let merge = |shards: &[PathBuf]| {
        let mut c = batch_command(&input, &merged, &["--merge"]);
        c.args(shards);
        c.output().unwrap()
    };
    let all = [shard(1), shard(2), shard(3)];
    let e = one_line_error(&merge(&all));
    assert!(e.contains("cut short") && e.contains("--resume"), "{e}");
    assert!(!merged.exists(), "a failed merge writes nothing");

    let o = batch_command(&input, &shard(2), &["--shard", "2/3", "--resume"]).output().unwrap();
    ok(&o);
    let o = merge(&all);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("merged 3 shard(s): 13 records"));
    let got: Vec<Value> = records(&merged).iter().map(essence).collect();
    assert_eq!(got, want, "the merged shards equal the unsplit run, in input order");

    // A missing shard, a shard twice, a shard of another input: errors naming the lines.
    std::fs::remove_file(&merged).unwrap();
    let e = one_line_error(&merge(&[shard(1), shard(3)]));
    assert!(
        e.contains("5 line(s)") && e.contains("line 2, line 5, line 8, line 11, line 14"),
        "{e}"
    );
    let e = one_line_error(&merge(&[shard(1), shard(2), shard(3), shard(2)]));
    assert!(e.contains("two records") && e.contains("shard-2.jsonl"), "{e}");
    let short_input = scratch("short-in.jsonl");
    std::fs::write(&short_input, "{\"id\": 0, \"prompt\": \"Tale:\"}\n").unwrap();
    let mut c = batch_command(&short_input, &merged, &["--merge"]);
    let e = one_line_error(&c.args(&all).output().unwrap());
    assert!(e.contains("does not have"), "{e}");
    assert!(!merged.exists(), "a failed merge writes nothing");
    // An existing output is never overwritten.
    std::fs::write(&merged, "keep me\n").unwrap();
    let e = one_line_error(&merge(&all));
    assert!(e.contains("exists"), "{e}");
    assert_eq!(std::fs::read_to_string(&merged).unwrap(), "keep me\n");

    // Bad shard specifications: a usage error of the flag (exit 2), as for any flag value.
    for bad in ["0/3", "4/3", "3", "a/b"] {
        let o = batch_command(&input, &scratch("bad.jsonl"), &["--shard", bad]).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{bad}: {e}");
        let first = e.lines().next().unwrap_or_default();
        assert!(first.contains("'--shard <K/N>'") && first.contains("--shard takes K/N"), "{e}");
        assert!(!e.contains("panicked"), "{e}");
    }
}

fn sweep_command(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mood"));
    c.arg("sweep").arg("-r").arg(demo_recipe()).arg("-i").arg(input).arg("-o").arg(out);
    c.args(["--threads", "2", "--grid", "0:1:0.5", "-n", "8", "--parallel", "1"]).args(extra);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

#[test]
fn sweep_shards_merge_to_the_unsplit_table() {
    let input = scratch("sweep-in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"p0\", \"prompt\": \"The ocean\"}\n{\"id\": \"p1\", \"prompt\": \"The moon\"}\n",
    )
    .unwrap();
    let whole = scratch("sweep-whole");
    ok(&sweep_command(&input, &whole, &[]).output().unwrap());

    // 3 weight vectors × 2 prompts = 6 generations, 3 per shard.
    let (a, b) = (scratch("sweep-a"), scratch("sweep-b"));
    for (k, dir) in [(1, &a), (2, &b)] {
        let o = sweep_command(&input, dir, &["--shard", &format!("{k}/2")]).output().unwrap();
        ok(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("shard") && err.contains("3 to decode"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("generations.jsonl")).unwrap().lines().count(),
            3
        );
        assert!(!dir.join("sweep.csv").exists(), "a shard writes no table");
    }

    let merged = scratch("sweep-merged");
    let merge = |dirs: &[&PathBuf]| {
        let mut c = sweep_command(&input, &merged, &["--merge"]);
        c.args(dirs);
        c.output().unwrap()
    };
    let e = one_line_error(&merge(&[&a]));
    assert!(e.contains("3 of the sweep's 6 generations have no record"), "{e}");
    let e = one_line_error(&merge(&[&a, &b, &a]));
    assert!(e.contains("two records"), "{e}");
    assert!(!merged.join("generations.jsonl").exists(), "a failed merge writes nothing");

    ok(&merge(&[&b, &a]));
    for file in ["sweep.csv", "sweep.jsonl"] {
        assert_eq!(
            std::fs::read_to_string(merged.join(file)).unwrap(),
            std::fs::read_to_string(whole.join(file)).unwrap(),
            "{file}"
        );
    }
    // In sweep order: weight vector after weight vector, prompt after prompt.
    let got = records(&merged.join("generations.jsonl"));
    let ids: Vec<&str> = got.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["p0", "p1", "p0", "p1", "p0", "p1"]);
    for pair in got.chunks(2) {
        assert_eq!(pair[0]["weights"], pair[1]["weights"]);
    }
    let key = |r: &Value| serde_json::json!([r["weights"], r["id"], r["tokens"], r["rewards"]]);
    let mut got: Vec<Value> = got.iter().map(key).collect();
    let mut want: Vec<Value> = records(&whole.join("generations.jsonl")).iter().map(key).collect();
    got.sort_by_key(Value::to_string);
    want.sort_by_key(Value::to_string);
    assert_eq!(got, want, "the merged generations are those of the unsplit sweep");
}

/// What an OpenAI batch record must keep across runs: its line, custom_id, status and text or
/// error (ids and times differ from run to run).
fn openai_essence(r: &Value) -> Value {
    serde_json::json!([
        r["line"],
        r["custom_id"],
        r["response"]["status_code"],
        r["response"]["body"]["choices"][0]["text"],
        r["response"]["body"]["error"]["message"],
        r["error"]["message"],
    ])
}

#[test]
fn openai_batch_files_shard_and_merge_too() {
    let line = |id: &str, prompt: &str| {
        serde_json::json!({"custom_id": id, "method": "POST", "url": "/v1/completions",
            "body": {"model": "mood", "prompt": prompt, "max_tokens": 6, "temperature": 0}})
        .to_string()
    };
    // A custom_id first used in shard 1 (line 1) and repeated in shard 2 (line 4).
    let lines = [line("a", "The ocean"), line("b", "The moon"), "{".into(), line("a", "Again")];
    let input = scratch("openai-in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let whole = scratch("openai-whole.jsonl");
    ok(&batch_command(&input, &whole, &[]).output().unwrap());
    let mut want: Vec<Value> = records(&whole).iter().map(openai_essence).collect();
    want.sort_by_key(|r| r[0].as_u64());
    assert_eq!(want.len(), 4, "{want:?}");

    let shards: Vec<PathBuf> = (1..=2).map(|k| scratch(&format!("openai-{k}.jsonl"))).collect();
    for (k, out) in shards.iter().enumerate() {
        ok(&batch_command(&input, out, &["--shard", &format!("{}/2", k + 1)]).output().unwrap());
    }
    let merged = scratch("openai-merged.jsonl");
    let mut c = batch_command(&input, &merged, &["--merge"]);
    ok(&c.args(&shards).output().unwrap());
    let got: Vec<Value> = records(&merged).iter().map(openai_essence).collect();
    assert_eq!(got, want, "the merged shards equal the unsplit run, in input order");
    assert!(
        got[3].to_string().contains("duplicate"),
        "the repeated custom_id is refused in its shard: {}",
        got[3]
    );
}
