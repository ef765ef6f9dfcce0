//! Command-line front end: every flag and its help text, in one place.

mod batch;
mod bench;
mod chat;
mod generate;
mod info;
pub mod llama_flags;
mod quantize;
mod serve;
mod sweep;
mod values;
mod wiring;

use clap::{Args, Parser, Subcommand};
use mood::apps::shard::Shard;
use mood::pipeline::bytes::Unit;
use mood::pipeline::engine::Strategy;
use std::path::PathBuf;
use values::{parse_counts, parse_shard, parse_strategy, parse_top_logprobs, parse_unit, Counts};

/// Multi-objective decoding (MOD) on GGUF models: steer a language model between several
/// objectives at decode time, with one weight per objective.
#[derive(Parser, Debug)]
#[command(name = "mood", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Decode one prompt with the policies of a recipe combined by MOD; streams the text.
    Generate(GenerateArgs),
    /// Measure MOD's decode speed against each model alone (same process, threads, prompt),
    /// for every strategy, with the per-token breakdown and peak memory.
    Bench(BenchArgs),
    /// Show the build's backends and devices, and for each GGUF file its architecture,
    /// size, quantization, vocabulary and special tokens; with several files, whether they
    /// can be combined.
    Info(InfoArgs),
    /// Decode a JSONL file of prompts (one object per line: id, prompt, optional overrides)
    /// into a JSONL file of generations, line by line; resumable.
    Batch(BatchArgs),
    /// Score JSONL prompt/response pairs: each policy's log-likelihood of the response and
    /// each expert's implicit reward β·log(π_i/π_ref).
    Score(ScoreArgs),
    /// Decode a prompt set at every weight vector of a grid, score the outputs with the
    /// experts' implicit rewards, keep every generation (resumable), and write a table (mean
    /// rewards with standard errors, the Pareto set) and a Pareto-front figure (PNG, SVG).
    Sweep(SweepArgs),
    /// Chat with the steered model in the terminal (or through a pipe): replies stream, the
    /// conversation is kept, and /weights, /divergence, /temperature, /reset, /save, /help
    /// change it between turns.
    Chat(ChatArgs),
    /// Serve an OpenAI-compatible HTTP API (chat and text completions, streaming or not)
    /// where each request may set its own weights and divergence, and a web page at / to chat
    /// and steer the replies with a slider per expert.
    Serve(ServeArgs),
    /// Quantize a GGUF model (F32, F16 or BF16) to a smaller type with llama.cpp's quantizer,
    /// as llama-quantize does: e.g. the random-weight bench models of models/ to Q4_K_M.
    Quantize(QuantizeArgs),
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The GGUF model to quantize.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// The GGUF file to write (whole or not at all).
    #[arg(value_name = "OUTPUT")]
    pub output: PathBuf,

    /// The type: Q4_0, Q4_1, Q5_0, Q8_0, Q4_K_S, Q4_K_M, Q5_K_M, Q6_K, F16 or BF16 (any case).
    #[arg(value_name = "TYPE", default_value = "Q4_K_M")]
    pub r#type: String,

    /// Threads to quantize with (default: every core).
    #[arg(short, long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,

    /// Address to listen on (loopback by default; 0.0.0.0 opens it to the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0 = any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Requests decoded at once; more wait in a queue.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,

    /// Require "Authorization: Bearer KEY" on every request.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=(1 << 30)))]
    pub max_body_bytes: u32,

    /// Requests that may wait for a free slot beyond the --parallel decoding; more are
    /// answered 503 with Retry-After.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub max_queue: u32,

    /// Seconds a client has to send a request's head, and again its body (408 after).
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u16).range(1..=3600))]
    pub read_timeout: u16,

    /// Connections served at once; one more is answered 503 and closed.
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: u32,

    /// Chat template for policies that set none: auto (the GGUF's own where it has one, else
    /// a plain transcript), none (a plain transcript, for base models), model (the GGUF's
    /// own), or a llama.cpp built-in name (gemma, chatml, llama3, …).
    #[arg(long, visible_alias = "chat-template", default_value = "auto", value_name = "NAME")]
    pub template: String,

    /// System prompt for policies that set none (a request's system messages replace it).
    #[arg(long, visible_alias = "system-prompt", value_name = "TEXT")]
    pub system: Option<String>,

    /// Read the API key from the first line of FILE (keeps it out of the process list).
    #[arg(long, value_name = "FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,

    /// The model name /v1/models reports and answers carry [default: mood-<recipe or model
    /// file name>].
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,

    /// Default generated-token limit (requests set max_tokens).
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,

    /// Refuse (400) every request field mood does not read. Without it, fields of the OpenAI
    /// and llama-server APIs that change nothing are dropped and named in an X-Mood-Ignored
    /// header (see docs/server.md).
    #[arg(long)]
    pub strict: bool,

    /// Let pages from ORIGIN call the API from a browser (repeatable; * for any origin).
    #[arg(long, value_name = "ORIGIN")]
    pub cors: Vec<String>,

    /// How the line logged on stderr per request is written.
    #[arg(long, default_value = "text", value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: String,

    /// A constraint for requests that give none (a request's grammar, json_schema or
    /// response_format replaces it).
    #[command(flatten)]
    pub constraint: ConstraintArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,

    /// Chat template for policies that set none: auto (the GGUF's own where it has one, else
    /// a plain "User:/Assistant:" transcript), none (the plain transcript, for base models),
    /// model (the GGUF's own), or a llama.cpp built-in name (gemma, chatml, llama3, …).
    #[arg(long, visible_alias = "chat-template", default_value = "auto", value_name = "NAME")]
    pub template: String,

    /// System prompt for policies that set none.
    #[arg(long, visible_alias = "system-prompt", value_name = "TEXT")]
    pub system: Option<String>,

    /// Generated-token limit per reply.
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,

    /// Stop a reply when this string appears (repeatable).
    #[arg(long, visible_alias = "reverse-prompt", value_name = "STRING")]
    pub stop: Vec<String>,

    #[command(flatten)]
    pub constraint: ConstraintArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,

    /// Prompts: JSONL with a "prompt" per line and optionally an "id" (the line number
    /// otherwise); other keys are ignored.
    #[arg(short, long, value_name = "FILE")]
    pub input: PathBuf,

    /// Folder for generations.jsonl (every generation), sweep.csv and sweep.jsonl (the
    /// table), pareto.png and pareto.svg (the figure); created if missing.
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: PathBuf,

    /// Continue the sweep whose generations.jsonl the folder holds: decode only what it
    /// lacks (a last line cut short by a kill is decoded again), then write the table and
    /// figure from all of it. Without it, an existing generations.jsonl is refused.
    #[arg(long)]
    pub resume: bool,

    /// Two experts: weights (w, 1 − w) for w from START to END in steps of STEP.
    #[arg(long, value_name = "START:END:STEP", conflicts_with_all = ["simplex", "list"])]
    pub grid: Option<String>,

    /// Any number of experts: every weight vector on the simplex in steps of 1/N.
    #[arg(long, value_name = "N", conflicts_with = "list")]
    pub simplex: Option<usize>,

    /// An explicit list of weight vectors, e.g. "0.2,0.8;0.5,0.5".
    #[arg(long, value_name = "W;W;…")]
    pub list: Option<String>,

    /// β of the implicit rewards β·log(π_i/π_ref).
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,

    /// Decode up to N generations at once (lanes of one session, as `mood batch`).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,

    /// Decode only shard K of N: the generations (weight vector after weight vector, prompt
    /// after prompt) whose index is K modulo N, into this run's own --output-dir; resumable.
    /// Join the shards with --merge.
    #[arg(long, value_name = "K/N", conflicts_with = "merge", value_parser = parse_shard)]
    pub shard: Option<Shard>,

    /// Join the generations of --shard runs (the SHARD_DIR folders, each with its
    /// generations.jsonl) into --output-dir, checking that every generation of the sweep is
    /// there exactly once, then write the table and figure; decodes nothing.
    #[arg(long, requires = "shard_dirs")]
    pub merge: bool,

    /// With --merge: the shards' output folders.
    #[arg(value_name = "SHARD_DIR", requires = "merge")]
    pub shard_dirs: Vec<PathBuf>,

    /// Generated-token limit per output.
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value_t = 64, value_name = "N")]
    pub max_tokens: usize,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,

    /// Input JSONL: {"id": …, "prompt": "…"} per line, optionally with weights, divergence,
    /// max_tokens, temperature, top_p, top_k, seed, stop; or an OpenAI Batch API file
    /// ({"custom_id", "method": "POST", "url": "/v1/chat/completions" or "/v1/completions",
    /// "body"} per line), told by its first line and answered in OpenAI's output format.
    #[arg(short, long, value_name = "FILE")]
    pub input: PathBuf,

    /// Output JSONL, written and flushed line by line.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Keep the output file and skip the lines it already holds (a line cut short by a
    /// crash is detected and redone); without it an existing output file is an error.
    #[arg(long)]
    pub resume: bool,

    /// Stop at the first bad line (exit 1) instead of writing an error record and going on;
    /// lines are checked before any decoding starts.
    #[arg(long)]
    pub fail_fast: bool,

    /// Decode up to N prompts at once (one batch per context and step holds all of them;
    /// each prompt still gets the output it would get alone).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,

    /// Add each policy's log-likelihood and each expert's implicit reward to every record
    /// (mood's own line format).
    #[arg(long)]
    pub score: bool,

    /// Decode only shard K of N: the input lines whose number is K modulo N (line 1 is in
    /// shard 1), into this run's own --output; resumable. Join the shards with --merge.
    #[arg(long, value_name = "K/N", conflicts_with = "merge", value_parser = parse_shard)]
    pub shard: Option<Shard>,

    /// Join the outputs of --shard runs (the SHARD files) into --output in input order,
    /// checking that every line of --input has exactly one record; decodes nothing.
    #[arg(long, requires = "shards")]
    pub merge: bool,

    /// With --merge: the shards' output files.
    #[arg(value_name = "SHARD", requires = "merge")]
    pub shards: Vec<PathBuf>,

    /// Chat template for policies that set none, for the chat lines of an OpenAI batch
    /// file: auto (the GGUF's own where it has one, else a plain transcript), none (a plain
    /// transcript), model (the GGUF's own), or a llama.cpp built-in name.
    #[arg(long, visible_alias = "chat-template", default_value = "auto", value_name = "NAME")]
    pub template: String,

    /// The model name in the answers of an OpenAI batch file [default: mood-<recipe or
    /// model file name>].
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,

    /// β of the implicit rewards β·log(π_i/π_ref).
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,

    /// Default generated-token limit per line.
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,

    /// Default stop string (repeatable).
    #[arg(long, visible_alias = "reverse-prompt", value_name = "STRING")]
    pub stop: Vec<String>,

    /// Add to every record each generated token's log-probability, the N most likely
    /// alternatives (0 to 20) and each policy's own (a line's "logprobs" overrides it).
    #[arg(long, value_name = "N", value_parser = parse_top_logprobs)]
    pub logprobs: Option<usize>,

    #[command(flatten)]
    pub constraint: ConstraintArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,

    /// Input JSONL: {"id": …, "prompt": "…", "response": "…"} per line.
    #[arg(short, long, value_name = "FILE")]
    pub input: PathBuf,

    /// Output JSONL (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// β of the implicit rewards β·log(π_i/π_ref).
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// GGUF model files to describe.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// llama.cpp RPC servers to report on: reachable or why not, their devices and memory.
    #[arg(long, value_name = "HOST:PORT,…", value_delimiter = ',')]
    pub rpc: Vec<String>,

    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Which policies take part: a recipe file, or the shorthand flags.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// TOML recipe naming the reference and expert policies and their weights
    /// (see models/demo.toml). Note: -r is the recipe here, not llama.cpp's reverse prompt
    /// (that is --stop, alias --reverse-prompt).
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["model", "expert", "prefix", "lora"])]
    pub recipe: Option<PathBuf>,

    /// Shorthand without a recipe: the reference model, also the model of every --prefix
    /// expert. Alone, it decodes that model by itself.
    #[arg(short, long, value_name = "FILE")]
    pub model: Option<PathBuf>,

    /// Shorthand: add a prompted expert on --model whose prompt starts with TEXT
    /// (repeatable; experts are numbered after the --expert files).
    #[arg(long, value_name = "TEXT")]
    pub prefix: Vec<String>,

    /// Shorthand: add an expert that is a model file of its own (repeatable).
    #[arg(long, value_name = "FILE")]
    pub expert: Vec<PathBuf>,

    /// Shorthand: add an expert that is --model with this LoRA adapter (GGUF; repeatable).
    /// Unlike llama.cpp's --lora, which changes the one model, each adapter here is an
    /// objective of its own, steered by its weight.
    #[arg(long, value_name = "FILE")]
    pub lora: Vec<PathBuf>,

    /// One weight per expert, e.g. 0.3,0.7; overrides the recipe. Reverse KL takes any real
    /// weights; a sum other than 1 needs a reference policy.
    #[arg(short, long, value_name = "W1,W2,…", allow_hyphen_values = true)]
    pub weights: Option<String>,

    /// The f-divergence to combine under, overriding the recipe: reverse-kl (default; any
    /// weights), forward-kl, jsd, alpha:A (A > 0), jeffreys (these need weights ≥ 0 that
    /// sum to 1).
    #[arg(short, long, value_name = "NAME")]
    pub divergence: Option<String>,

    /// Rescale non-negative weights to sum to 1 (for divergences other than reverse-kl).
    #[arg(long)]
    pub normalize_weights: bool,
}

/// Sampling flags, as in llama.cpp.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature of the combined distribution; 0 = greedy (the argmax) [default: the
    /// recipe's `temperature`, else 0].
    #[arg(long, visible_alias = "temp", allow_hyphen_values = true)]
    pub temperature: Option<f64>,

    /// Sample only among the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40, value_name = "K")]
    pub top_k: usize,

    /// Sample only among the most likely tokens that make up probability P, in (0, 1].
    #[arg(long, default_value_t = 0.95, value_name = "P", allow_hyphen_values = true)]
    pub top_p: f64,

    /// Drop tokens less likely than P × the most likely token's probability (0 = off).
    #[arg(long, default_value_t = 0.05, value_name = "P", allow_hyphen_values = true)]
    pub min_p: f64,

    /// Penalise tokens among the last --repeat-last-n generated ones: a positive combined
    /// logit is divided by it, a negative one multiplied (1 = off).
    #[arg(long, default_value_t = 1.1, allow_hyphen_values = true)]
    pub repeat_penalty: f64,

    /// How many recent generated tokens the repetition, presence and frequency penalties
    /// look at (0 = off).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub repeat_last_n: usize,

    /// Subtract P from the combined logit of every token among the last --repeat-last-n
    /// generated ones (OpenAI's presence_penalty, from -2 to 2; 0 = off).
    #[arg(long, default_value_t = 0.0, value_name = "P", allow_hyphen_values = true)]
    pub presence_penalty: f64,

    /// Subtract F × its count from the combined logit of every token among the last
    /// --repeat-last-n generated ones (OpenAI's frequency_penalty, from -2 to 2; 0 = off).
    #[arg(long, default_value_t = 0.0, value_name = "F", allow_hyphen_values = true)]
    pub frequency_penalty: f64,

    /// Add BIAS (from -100 to 100) to the combined logit of token id TOKEN: TOKEN=BIAS, or
    /// llama.cpp's TOKEN+BIAS / TOKEN-BIAS (repeatable).
    #[arg(long, value_name = "TOKEN=BIAS", allow_hyphen_values = true)]
    pub logit_bias: Vec<String>,

    /// When sampling, draw only tokens to which some positively weighted policy gives at
    /// least TAU × its top probability (guards against a divergence's pole; 0 = the whole
    /// vocabulary, exact). Greedy decoding ignores it.
    #[arg(long, default_value_t = mood::pipeline::combine::DEFAULT_PLAUSIBILITY, value_name = "TAU")]
    pub plausibility: f64,

    /// For policies combined over bytes: the share of each policy's probability of the text
    /// that following fewer tokenizations may drop at one byte (larger is faster; 0 drops
    /// nothing but what exceeds the 8 tokenizations followed per policy, reported as
    /// `most_dropped` in --json).
    #[arg(long, default_value_t = mood::pipeline::bytes::DEFAULT_TOLERANCE, value_name = "T")]
    pub byte_tolerance: f64,

    /// Seed for sampling, below 2^53; the same seed gives the same output [default: a fresh
    /// seed per generation, reported with the output].
    #[arg(long)]
    pub seed: Option<u64>,

    /// Speculation: guess up to N next tokens by looking the latest ones up in the prompt
    /// and the text so far, and check them all in one pass of every policy (0 = off, at
    /// most 32). The output is the same; text that repeats its prompt comes faster.
    #[arg(long, default_value_t = mood::pipeline::draft::DEFAULT_DRAFT_MAX, value_name = "N")]
    pub draft_max: usize,
}

/// What the output must follow: the constraint masks the combined distribution before
/// sampling (llama.cpp's grammar engine).
#[derive(Args, Debug, Clone, Default)]
pub struct ConstraintArgs {
    /// The output follows this grammar (llama.cpp's GBNF, with a `root` rule): a file, or
    /// the grammar itself when the text holds "::=".
    #[arg(
        long,
        visible_alias = "grammar-file",
        value_name = "FILE",
        conflicts_with = "json_schema"
    )]
    pub grammar: Option<String>,

    /// The output is JSON valid against this JSON schema (converted to a grammar by
    /// llama.cpp): a file, or the schema itself when the text starts with "{".
    #[arg(long, visible_alias = "json-schema-file", value_name = "FILE")]
    pub json_schema: Option<String>,
}

/// How the policies run.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Total llama.cpp threads, shared among the policies decoding in parallel (at most 4 ×
    /// the cores) [default: the number of cores].
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Context length of each policy in tokens (prompt + prefix + generated text); at most
    /// the models' trained context [default: 4096, or the trained context if smaller].
    #[arg(short, long, value_name = "N")]
    pub ctx_size: Option<u32>,

    /// Offload this many layers of each model to the GPU (policies may set n_gpu_layers in
    /// the recipe); needs a build with --features cuda, metal or vulkan.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub n_gpu_layers: u32,

    /// The GPU that holds the model when several are present.
    #[arg(long, default_value_t = 0, value_name = "I")]
    pub main_gpu: i32,

    /// llama.cpp RPC servers that hold and compute the models of policies whose recipe entry
    /// sets no `rpc` (all their layers unless --n-gpu-layers says how many); started with
    /// the rpc-server that models/build-rpc-server.sh builds. The protocol has no
    /// authentication: use loopback or private addresses (others draw a warning).
    #[arg(long, value_name = "HOST:PORT,…", value_delimiter = ',')]
    pub rpc: Vec<String>,

    /// How policies share llama.cpp contexts: threads (a context per policy, decoded
    /// concurrently), batched (a context per model file, its policies one batch per step),
    /// mixed (batched, and the output layer once per step on the weighted sum of the
    /// policies' hidden states where reverse KL allows it), or auto (the fastest here:
    /// measured on first use and remembered; MOOD_STRATEGY_REMEASURE=1 measures again).
    #[arg(long, default_value = "auto", value_name = "NAME", value_parser = parse_strategy)]
    pub strategy: Strategy,

    /// Speculation with a draft model instead of prompt lookup: a GGUF model of the
    /// policies' vocabulary (a smaller one of the same family, say) guesses the next
    /// --draft-max tokens, and every policy checks them in one pass. The output is the same.
    #[arg(long, visible_alias = "model-draft", value_name = "FILE")]
    pub draft_model: Option<PathBuf>,

    /// What the policies' next-step distributions are combined over: tokens, bytes (each
    /// policy's distribution of the next byte, exact over its tokenizations: policies may
    /// have different vocabularies), or auto (tokens where the vocabularies agree, bytes
    /// where they differ).
    #[arg(long, default_value = "auto", value_name = "UNIT", value_parser = parse_unit)]
    pub unit: Unit,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,

    /// The prompt to continue.
    #[arg(short, long, value_name = "TEXT", conflicts_with = "prompt_file")]
    pub prompt: Option<String>,

    /// Read the prompt from FILE ('-' = standard input).
    #[arg(short = 'f', long, visible_alias = "file", value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,

    /// Stop after this many generated tokens.
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,

    /// Stop when this string appears; it is not printed (repeatable).
    #[arg(long, visible_alias = "reverse-prompt", value_name = "STRING")]
    pub stop: Vec<String>,

    /// Print one JSON object (text, tokens, finish_reason, weights, timings, …) instead of
    /// streaming the text.
    #[arg(long)]
    pub json: bool,

    /// With --json: each generated token's log-probability in the combined distribution,
    /// the N most likely alternatives (0 to 20), and each policy's own log-probability.
    #[arg(long, value_name = "N", value_parser = parse_top_logprobs)]
    pub logprobs: Option<usize>,

    /// Treat the prompt as one user turn of a conversation: each policy renders it with its
    /// chat template and system prompt and the model writes the assistant's reply (for
    /// instruct models; without it the prompt is text to continue).
    #[arg(long)]
    pub chat: bool,

    /// With --chat: the template for policies that set none (auto: the GGUF's own where it
    /// has one, else a plain "User:/Assistant:" transcript; none, model, or a llama.cpp
    /// built-in name).
    #[arg(
        long,
        visible_alias = "chat-template",
        default_value = "auto",
        value_name = "NAME",
        requires = "chat"
    )]
    pub template: String,

    /// With --chat: the system prompt for policies that set none.
    #[arg(long, visible_alias = "system-prompt", value_name = "TEXT", requires = "chat")]
    pub system: Option<String>,

    #[command(flatten)]
    pub constraint: ConstraintArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub run: RunArgs,
}

const BENCH_PROMPT: &str = "The harbour town woke slowly. Fishing boats rocked against the \
    stone quay while gulls argued over the morning catch, and the baker on the corner pulled \
    the first loaves from his oven. Children ran down the narrow lanes toward the school, past \
    the chandler's shop and the old church whose bell had not rung in years. Out beyond the \
    breakwater, the sea was grey and calm, and a single sail was moving slowly toward the \
    horizon. Everyone in town agreed that the ocean";

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,

    /// The prompt every run continues (the default is a paragraph of about 100 tokens, so
    /// that prompt speed means something).
    #[arg(short, long, default_value = BENCH_PROMPT, value_name = "TEXT")]
    pub prompt: String,

    /// Tokens generated per run (stop strings are ignored; an end-of-generation token ends
    /// a run early).
    #[arg(short = 'n', long, visible_alias = "n-predict", default_value_t = 128, value_name = "N")]
    pub max_tokens: usize,

    /// Rounds of (each model alone, MOD per strategy); medians are reported.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub rounds: usize,

    /// Strategies to measure MOD with (comma-separated); the report also says which one
    /// `auto` runs on this machine.
    #[arg(
        long,
        default_value = "threads,batched,mixed",
        value_name = "LIST",
        value_delimiter = ',',
        value_parser = parse_strategy
    )]
    pub strategies: Vec<Strategy>,

    /// Numbers of prompted experts to measure peak memory with (comma-separated; empty to
    /// skip).
    #[arg(long, default_value = "1,2,4", value_name = "LIST", value_parser = parse_counts)]
    pub memory: Counts,

    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Internal: measure peak memory with K prompted experts in this process and print it.
    #[arg(long, hide = true, value_name = "K")]
    pub memory_probe: Option<usize>,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub run: RunArgs,
}

pub use wiring::one_line;

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Info(args) => info::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Batch(args) => batch::run_batch(args),
        Command::Score(args) => batch::run_score(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
