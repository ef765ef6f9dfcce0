//! Shared helpers for the integration tests: model paths, running the binary, and an
//! independent single-context llama.cpp loop that does not go through mood's engine.
#![allow(dead_code)]

pub mod server;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::{Command, Output};

pub const POET: &str = "A short rhyming poem for children:\n\n";
pub const SCIENTIST: &str = "From a science textbook, chapter 4:\n\n";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{} is missing: run models/setup.sh first", path.display());
    path
}

/// The default model (Gemma 3 270M Q4_K_M).
pub fn default_model() -> PathBuf {
    require(root().join("models/gemma-3-270m-q4_k_m.gguf"))
}

pub fn demo_recipe() -> PathBuf {
    require(root().join("models/demo.toml"))
}

/// The assistant model (SmolLM2 135M Instruct Q4_1), fetched by models/fetch-assistant.sh.
pub fn assistant_model() -> PathBuf {
    require(root().join("models/smollm2-135m-instruct-q4_1.gguf"))
}

/// The assistant recipe: SmolLM2 with three experts in its own chat template.
pub fn assistant_recipe() -> PathBuf {
    assistant_model();
    require(root().join("models/assistant.toml"))
}

/// A tiny test model made by models/make-fixtures.py (`variant` "a" or "b").
pub fn tiny(variant: &str) -> PathBuf {
    require(root().join(format!("models/fixtures/tiny-{variant}.gguf")))
}

/// Runs the `mood` binary.
pub fn mood(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mood")).args(args).output().expect("run mood")
}

/// `mood ARGS…` with `input` on stdin: stdout, stderr, and the exit code.
pub fn mood_with_input(args: &[&str], input: &str) -> (String, String, Option<i32>) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mood");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (text(out.stdout), text(out.stderr), out.status.code())
}

/// `mood generate --recipe models/demo.toml ARGS… --json`, parsed. Unless ARGS choose a
/// strategy, each policy decodes in a context of its own (`--strategy threads`), as the
/// independent llama.cpp loops the tests compare with do: batching several sequences moves
/// llama.cpp's numbers a little.
pub fn generate_demo(args: &[&str]) -> serde_json::Value {
    let demo = demo_recipe();
    let mut all = vec!["generate", "-r", demo.to_str().unwrap()];
    if !args.contains(&"--strategy") {
        all.extend(["--strategy", "threads"]);
    }
    all.extend_from_slice(args);
    all.push("--json");
    mood_json(&all)
}

/// Sampler flags that leave the distribution whole: temperature 1, no top-k, top-p or min-p.
pub const WHOLE_DISTRIBUTION: [&str; 8] =
    ["--temperature", "1", "--top-k", "0", "--top-p", "1", "--min-p", "0"];

/// Runs `mood` expecting success and a JSON object on stdout.
pub fn mood_json(args: &[&str]) -> serde_json::Value {
    let out = mood(args);
    assert!(
        out.status.success(),
        "mood {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

pub fn tokens_of(v: &serde_json::Value) -> Vec<u32> {
    v["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

/// The llama.cpp backend, its log silenced (the library leaves it to the program).
pub fn backend() -> &'static llama_cpp_2::llama_backend::LlamaBackend {
    mood::silence_llama_log();
    mood::pipeline::engine::backend().unwrap()
}

/// An engine of `policies`, llama.cpp's log silenced.
pub fn engine(
    policies: &[mood::Policy],
    options: mood::pipeline::engine::LoadOptions,
) -> anyhow::Result<mood::pipeline::engine::Engine> {
    mood::silence_llama_log();
    mood::pipeline::engine::Engine::load(policies, options)
}

pub fn load_model(path: &PathBuf) -> LlamaModel {
    let backend = backend();
    LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).unwrap()
}

/// A plain llama.cpp context on its own, as llama.cpp's `simple` example would make it.
pub struct Plain<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    pos: i32,
}

impl<'m> Plain<'m> {
    pub fn new(model: &'m LlamaModel, n_ctx: u32, threads: i32) -> Self {
        let backend = backend();
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(512)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model.new_context(backend, params).unwrap();
        Self { model, ctx, pos: 0 }
    }

    /// Decodes `text` (BOS added) and returns the logits after its last token.
    pub fn prompt(&mut self, text: &str) -> Vec<f32> {
        let tokens = self.model.vocab().tokenize(text.as_bytes(), true, false);
        self.pos = 0;
        self.decode(&tokens)
    }

    /// Decodes `tokens` after what the context holds, in one batch, and returns the logits
    /// after the last of them.
    pub fn decode(&mut self, tokens: &[LlamaToken]) -> Vec<f32> {
        let mut batch = LlamaBatch::new(tokens.len().max(1), 1);
        for (i, t) in tokens.iter().enumerate() {
            batch.add(*t, self.pos + i as i32, &[0], i + 1 == tokens.len()).unwrap();
        }
        self.ctx.decode(&mut batch).unwrap();
        self.pos += tokens.len() as i32;
        self.ctx.get_logits_ith(batch.n_tokens() - 1).to_vec()
    }

    /// Drops every cached token from position `n` on.
    pub fn truncate(&mut self, n: usize) {
        assert!(self.ctx.clear_kv_cache_seq(Some(0), Some(n as u32), None).unwrap());
        self.pos = n as i32;
    }

    /// Decodes one token and returns the next logits.
    pub fn feed(&mut self, token: u32) -> Vec<f32> {
        self.decode(&[LlamaToken(token as i32)])
    }

    pub fn is_eog(&self, token: u32) -> bool {
        self.model.vocab().is_eog(LlamaToken(token as i32))
    }
}

/// Index of the largest value (lowest index on ties), written out independently.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0usize;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    best as u32
}

/// log_softmax in f64.
pub fn log_softmax64(l: &[f32]) -> Vec<f64> {
    log_softmax_f64(&l.iter().map(|&x| f64::from(x)).collect::<Vec<_>>())
}

pub fn log_softmax_f64(l: &[f64]) -> Vec<f64> {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z = m + l.iter().map(|&x| (x - m).exp()).sum::<f64>().ln();
    l.iter().map(|&x| x - z).collect()
}

/// A one-lane session of the given engine policies.
pub fn one_lane(
    engine: &mood::pipeline::engine::Engine,
    members: &[usize],
    options: mood::pipeline::engine::SessionOptions,
) -> mood::pipeline::engine::Session {
    engine.open_session(members, 1, options).unwrap()
}

/// Decodes each member's prompt afresh in lane 0.
pub fn prefill(session: &mut mood::pipeline::engine::Session, prompts: &[Vec<LlamaToken>]) {
    let prompts: Vec<_> = prompts.iter().cloned().map(Some).collect();
    session.prefill_lane(0, &prompts, false, None).unwrap();
}

/// Feeds one token to every member of lane 0.
pub fn feed(session: &mut mood::pipeline::engine::Session, token: u32) {
    session.step(&[Some(LlamaToken(token as i32))]).unwrap();
}

/// Log-likelihoods in a plain llama.cpp context, reused from one call to the next.
pub struct PlainScorer<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
}

impl<'m> PlainScorer<'m> {
    pub fn new(model: &'m LlamaModel) -> Self {
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(512))
            .with_n_threads(2)
            .with_n_threads_batch(2);
        let ctx = model.new_context(backend(), params).unwrap();
        Self { model, ctx }
    }

    /// Log-likelihood of the `response` tokens after `prompt`: the cache emptied, prompt
    /// (with BOS) and response decoded in one batch (as llama.cpp's perplexity tool does),
    /// the logits of every position that predicts a response token read, the response
    /// tokens' log-probabilities summed in f64.
    pub fn log_likelihood(&mut self, prompt: &str, response: &[u32]) -> f64 {
        let p = self.model.vocab().tokenize(prompt.as_bytes(), true, false);
        let all: Vec<LlamaToken> =
            p.iter().copied().chain(response.iter().map(|&t| LlamaToken(t as i32))).collect();
        self.ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(all.len(), 1);
        for (i, t) in all.iter().enumerate() {
            batch.add(*t, i as i32, &[0], i + 1 >= p.len()).unwrap();
        }
        self.ctx.decode(&mut batch).unwrap();
        (p.len() - 1..all.len() - 1)
            .map(|i| log_softmax64(self.ctx.get_logits_ith(i as i32))[all[i + 1].0 as usize])
            .sum()
    }
}

/// Kills `child` (SIGKILL) once its output file `output` holds `lines` lines (or after 60 s),
/// then appends `cut`, a record cut short as a kill mid-write would leave it. Returns the
/// whole lines the file held.
pub fn kill_after_lines(
    child: &mut std::process::Child,
    output: &std::path::Path,
    lines: usize,
    cut: &[u8],
) -> usize {
    let count = || std::fs::read_to_string(output).map(|s| s.lines().count()).unwrap_or(0);
    let started = std::time::Instant::now();
    while count() < lines && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let whole = count();
    let mut f = std::fs::OpenOptions::new().append(true).open(output).unwrap();
    std::io::Write::write_all(&mut f, cut).unwrap();
    whole
}

/// One figures line of `mood chat` (`[N tokens, X tok/s, eog, first text after T s,
/// [seed S, ]R prompt tokens reused, D decoded]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatFigures {
    pub tokens: usize,
    pub finish: String,
    pub seed: Option<u64>,
    pub reused: usize,
    pub decoded: usize,
}

/// The figures lines in `mood chat`'s stderr, one per reply.
pub fn chat_figures(stderr: &str) -> Vec<ChatFigures> {
    let number = |part: &str| part.split_whitespace().next().unwrap().parse::<usize>().unwrap();
    stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.ends_with(" decoded]"))
        .map(|l| {
            let parts: Vec<&str> = l.trim_matches(['[', ']']).split(", ").collect();
            let find = |suffix: &str| parts.iter().find(|p| p.ends_with(suffix)).copied();
            ChatFigures {
                tokens: number(parts[0]),
                finish: parts[2].to_string(),
                seed: parts
                    .iter()
                    .find_map(|p| p.strip_prefix("seed "))
                    .map(|s| s.parse().unwrap()),
                reused: number(find("prompt tokens reused").expect(l)),
                decoded: number(find(" decoded").expect(l)),
            }
        })
        .collect()
}
