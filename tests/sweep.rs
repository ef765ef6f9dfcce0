//! `mood sweep`: a table row per weight vector and valid PNG and SVG Pareto plots.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn setup(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("mood-sweep-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("prompts.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 1, \"prompt\": \"The ocean\"}\n{\"id\": 2, \"prompt\": \"The moon\"}\n",
    )
    .unwrap();
    (input, dir.join("out"))
}

fn sweep(input: &Path, out: &Path, weights: &[&str]) -> std::process::Output {
    let demo = demo_recipe();
    let mut args = vec![
        "sweep",
        "-r",
        demo.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-n",
        "8",
        "--parallel",
        "2",
    ];
    args.extend_from_slice(weights);
    mood(&args)
}

#[test]
fn sweep_writes_a_row_per_weight_vector_and_valid_plots() {
    let (input, out) = setup("grid");
    let o = sweep(&input, &out, &["--grid", "0:1:0.5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "w_poet,w_scientist,reward_poet,reward_scientist,mean_tokens,tokens_per_second,errors"
    );
    assert_eq!(lines.len(), 4, "header + 3 weight vectors");
    assert!(lines[1].starts_with("0,1,") && lines[3].starts_with("1,0,"), "{csv}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.join("sweep.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    // MOD steers: the poet's mean reward grows with the poet's weight.
    let poet = |r: &serde_json::Value| r["rewards"][0].as_f64().unwrap();
    assert!(poet(&rows[2]) > poet(&rows[0]), "{rows:?}");

    let png = std::fs::read(out.join("pareto.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (640, 480));
    let svg = std::fs::read_to_string(out.join("pareto.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<circle").count(), 3, "one marker per weight vector");
    assert!(svg.contains("w=(0.50,0.50)"));
}

#[test]
fn simplex_and_list_sweeps_and_bad_grids() {
    let (input, out) = setup("simplex");
    let o = sweep(&input, &out, &["--simplex", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(out.join("sweep.csv")).unwrap().lines().count(), 4);
    let o = sweep(&input, &out, &["--list", "0.3,0.7;0.9,0.1"]);
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(out.join("sweep.csv")).unwrap().lines().count(), 3);
    let o = sweep(&input, &out, &["--grid", "1:0:0.1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--grid"));
    let o = sweep(&input, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
}
