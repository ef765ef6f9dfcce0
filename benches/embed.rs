//! MOD's speed through the Rust API and the C ABI next to `mood generate`, in one run, round
//! by round (interleaved, so that the machine's noise hits all three alike): the library
//! must add nothing per token.
//!
//!     cargo build --release && cargo bench --bench embed [-- ROUNDS]
//!
//! Prints per-round figures and the medians: decode tokens/s as `Generation::timings`
//! reports it, for `mood generate --json` and the Rust API; and wall-clock tokens/s of one
//! call (prompt and decoding), for the Rust API and `mood_generate` (C, built with `cc`
//! against target/release/libmood.so). Demo recipe, mixed strategy, 128 greedy tokens.

use mood::{Mood, Options, Params, Recipe, Strategy};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const PROMPT: &str = "The harbour town woke slowly. Fishing boats rocked against the stone quay, \
                      and everyone in town agreed that the ocean";
const TOKENS: usize = 128;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The C program, compiled against the shared library.
fn c_program() -> PathBuf {
    let lib = root().join("target/release");
    assert!(lib.join("libmood.so").exists(), "build first: cargo build --release");
    let exe = std::env::temp_dir().join(format!("mood-embed-{}", std::process::id()));
    let status = Command::new("cc")
        .args(["-O2", "-std=c11"])
        .arg("-I")
        .arg(root().join("capi/include"))
        .arg(root().join("benches/embed.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lmood")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .status()
        .expect("cc");
    assert!(status.success());
    exe
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let demo = root().join("models/demo.toml");
    let mood_bin = root().join("target/release/mood");
    assert!(mood_bin.exists(), "build first: cargo build --release");
    let c = c_program();
    mood::silence_llama_log();
    let options = Options { strategy: Strategy::Mixed, ..Options::default() };
    let api = Mood::load(Recipe::from_file(&demo).expect("demo recipe"), options).expect("load");
    let params = Params::new().max_tokens(TOKENS);
    let settings = format!("{{\"max_tokens\": {TOKENS}}}");
    let recipe_text = std::fs::read_to_string(&demo).unwrap();
    let recipe_file = std::env::temp_dir().join(format!("mood-embed-{}.toml", std::process::id()));
    std::fs::write(&recipe_file, recipe_text).unwrap();
    let models = root().join("models");

    let (mut cli, mut rust, mut rust_wall, mut c_wall) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let out = Command::new(&mood_bin)
            .args(["generate", "-r"])
            .arg(&demo)
            .args(["-p", PROMPT, "-n", &TOKENS.to_string(), "--strategy", "mixed", "--json"])
            .output()
            .expect("mood generate");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        cli.push(v["timings"]["tokens_per_second"].as_f64().unwrap());

        let mut session = api.session();
        let started = Instant::now();
        let g = session.generate(PROMPT, &params).expect("generate");
        rust_wall.push(g.tokens.len() as f64 / started.elapsed().as_secs_f64());
        rust.push(g.timings.tokens_per_second);

        let out = Command::new(&c)
            .arg(&recipe_file)
            .arg(&models)
            .arg("{\"strategy\": \"mixed\"}")
            .arg(&settings)
            .arg(PROMPT)
            .output()
            .expect("the C program");
        let text = String::from_utf8_lossy(&out.stdout);
        let (n, s) = text.trim().split_once(' ').expect("TOKENS SECONDS");
        c_wall.push(n.parse::<f64>().unwrap() / s.parse::<f64>().unwrap());
        println!(
            "round {round}: mood generate {:.1} tok/s, Rust API {:.1} (wall {:.1}), C ABI wall {:.1}",
            cli[round - 1],
            rust[round - 1],
            rust_wall[round - 1],
            c_wall[round - 1]
        );
    }
    let _ = std::fs::remove_file(&c);
    let _ = std::fs::remove_file(&recipe_file);
    let (cli, rust, rust_wall, c_wall) =
        (median(cli), median(rust), median(rust_wall), median(c_wall));
    println!(
        "median decode tok/s: mood generate {cli:.1}, Rust API {rust:.1} ({:.3}x)",
        rust / cli
    );
    println!(
        "median wall tok/s of one call: Rust API {rust_wall:.1}, C ABI {c_wall:.1} ({:.3}x)",
        c_wall / rust_wall
    );
}
