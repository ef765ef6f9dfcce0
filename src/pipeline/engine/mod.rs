//! The engine: loads GGUF models through llama.cpp (one copy per file, however many policies
//! name it), checks that their vocabularies can be combined, tokenizes, and opens
//! [`Session`]s in which policies decode on worker threads.
//!
//! It knows nothing of the command line or of how distributions are combined.

pub mod chat;
mod drafter;
mod gguf;
mod grammar;
pub mod info;
mod load;
pub mod passes;
pub mod quantize;
pub mod rpc;
mod session;
mod strategy;
mod tuning;
pub mod vocab;
mod worker;

pub use drafter::Drafter;
pub use grammar::Grammar;
#[cfg(feature = "dynamic-backends")]
pub use load::use_backends_from;
pub use load::{backend, check_gguf_file, rpc_endpoints, LoadOptions};
use load::{load_model, local_gpu, ModelVocab, Placement};
pub use session::{LaneFill, Prefilled, Session, MIN_CTX};
pub use strategy::{SessionOptions, Strategy};
pub use tuning::Measurement;

/// The context per policy when none is asked for (or the models' trained context, if less).
pub const DEFAULT_CTX: u32 = 4096;
/// llama.cpp's largest thread count.
const MAX_THREADS: usize = 512;

/// An upper bound of a model's KV-cache bytes per token and sequence: keys and values in f16
/// for every layer and KV head (sliding-window layers keep less).
fn kv_bytes_per_token(model: &LlamaModel) -> f64 {
    let arch = model.meta_val_str("general.architecture").unwrap_or_default();
    let meta =
        |k: &str| model.meta_val_str(&format!("{arch}.attention.{k}")).ok()?.parse::<f64>().ok();
    let head = f64::from(model.n_embd().max(1)) / f64::from(model.n_head().max(1));
    let (k, v) = (meta("key_length").unwrap_or(head), meta("value_length").unwrap_or(head));
    f64::from(model.n_layer()) * f64::from(model.n_head_kv().max(1)) * (k + v) * 2.0
}

/// Why a model's logits are not a linear function of its final hidden state — then a
/// weighted sum of hidden states does not give the weighted sum of logits — or `None`.
fn not_linear(model: &LlamaModel) -> Option<&'static str> {
    let arch = model.meta_val_str("general.architecture").unwrap_or_default();
    let softcap = model
        .meta_val_str(&format!("{arch}.final_logit_softcapping"))
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (softcap != 0.0).then_some("the model soft-caps its logits (not linear in the hidden state)")
}

/// Memory the system can give without swapping (Linux `MemAvailable`); `None` elsewhere.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

use crate::error::invalid;
use crate::pipeline::bytes::{ByteVocab, Unit};
use crate::pipeline::recipe::Policy;
use anyhow::Result;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use session::MemberSpec;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// One loaded GGUF file, on this machine or split over RPC servers.
struct LoadedModel {
    path: PathBuf,
    n_gpu_layers: u32,
    /// The servers holding its layers (none: local).
    servers: Vec<Arc<rpc::Server>>,
    model: Arc<LlamaModel>,
}

/// An index into the engine's adapters, and the scale a policy applies it with.
type AdapterUse = (usize, f32);

/// One loaded LoRA adapter (freed by llama.cpp with its model).
struct LoadedAdapter {
    path: PathBuf,
    model: usize,
    adapter: Arc<Mutex<LlamaLoraAdapter>>,
    /// Whether it changes the output projection (then the logits of its policy are not the
    /// shared output matrix applied to the hidden state).
    changes_output: bool,
}

/// Loaded models and adapters, and the policies that run on them.
pub struct Engine {
    // Adapters before models: fields drop in order, and an adapter belongs to its model.
    adapters: Vec<LoadedAdapter>,
    models: Vec<LoadedModel>,
    /// For each policy, the index of its model in `models`.
    policy_model: Vec<usize>,
    /// For each policy, its adapter in `adapters` and the scale.
    policy_adapter: Vec<Option<AdapterUse>>,
    policies: Vec<Policy>,
    n_common: usize,
    /// What distributions are combined over, and why not tokens when the vocabularies
    /// differ (the first difference found).
    unit: Unit,
    vocab_difference: Option<String>,
    /// Each model's vocabulary as byte strings, made when the byte path first needs it.
    byte_vocabs: Vec<OnceLock<Arc<ByteVocab>>>,
    /// The draft model for speculation, in `models` (see [`Engine::load_draft_model`]).
    draft: Option<usize>,
    /// What `auto` measured, and where it keeps it (see `tuning`).
    strategy_memory: tuning::StrategyMemory,
}

impl Engine {
    /// Number of distinct LoRA adapters loaded.
    pub fn n_adapters(&self) -> usize {
        self.adapters.len()
    }

    /// Whether policy `p`'s model is split over RPC servers.
    pub fn is_remote(&self, p: usize) -> bool {
        !self.models[self.policy_model[p]].servers.is_empty()
    }

    /// Why policy `p` cannot decode any more (a server holding its model was lost), or
    /// `None`. Cheap: asks llama.cpp's table of failed connections, not the servers.
    pub fn unavailable(&self, p: usize) -> Option<rpc::ServerLost> {
        let model = &self.models[self.policy_model[p]];
        let (server, why) = model.servers.iter().find_map(|s| Some((s, s.failure()?)))?;
        let users: Vec<String> = (0..self.policies.len())
            .filter(|&q| self.policy_model[q] == self.policy_model[p])
            .map(|q| format!("'{}'", self.policies[q].name))
            .collect();
        Some(rpc::ServerLost {
            server: server.endpoint().to_string(),
            message: format!(
                "RPC server {} was lost (it holds policy {}): {why}; restart rpc-server there \
                 and start mood again",
                server.endpoint(),
                users.join(", ")
            ),
        })
    }

    /// The error of a request that needs the policies `members`, when one of them cannot
    /// decode any more (a [`rpc::ServerLost`]).
    pub fn unavailable_for(&self, members: &[usize]) -> Option<anyhow::Error> {
        members.iter().find_map(|&p| self.unavailable(p)).map(anyhow::Error::new)
    }

    /// The policies that cannot decode any more (see [`Engine::unavailable`]).
    pub fn lost(&self) -> Vec<usize> {
        (0..self.policies.len()).filter(|&p| self.unavailable(p).is_some()).collect()
    }

    /// The policies, in the order given to [`Engine::load`].
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Number of distinct model files loaded (weights held once each).
    pub fn n_models(&self) -> usize {
        self.models.len()
    }

    /// The vocabulary range all models share: distributions are combined over `0..n`.
    pub fn n_common_vocab(&self) -> usize {
        self.n_common
    }

    /// The context size a session gets for `requested` tokens per policy: `0` stands for
    /// [`DEFAULT_CTX`], or the smallest trained context of the loaded models if that is less.
    pub fn context_size(&self, requested: u32) -> u32 {
        if requested != 0 {
            return requested;
        }
        let trained =
            self.models.iter().map(|m| m.model.n_ctx_train()).min().unwrap_or(DEFAULT_CTX);
        DEFAULT_CTX.min(trained.max(MIN_CTX))
    }

    /// Checks a session's settings against the models and the machine before anything is
    /// allocated: the context against each model's trained context, the caches' memory
    /// against the memory available, the threads against the cores.
    fn check_session(
        &self,
        members: &[usize],
        lanes: usize,
        options: &SessionOptions,
    ) -> Result<()> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let most = (4 * cores).min(MAX_THREADS);
        if options.threads == 0 || options.threads > most {
            return Err(invalid(
                "threads",
                format!(
                    "is {} but must be from 1 to {most} (4 × the {cores} cores this machine has)",
                    options.threads
                ),
            ));
        }
        let ctx = options.ctx_size;
        let mut bytes = 0f64;
        for &p in members {
            let model = self.model(p);
            // The caches of a model on RPC servers are held there.
            let remote = self.is_remote(p);
            let trained = model.n_ctx_train();
            if ctx > trained {
                return Err(invalid(
                    "ctx_size",
                    format!(
                        "is {ctx} but model {} was trained for {trained} tokens; use at most {trained}",
                        self.policies[p].model.display()
                    ),
                ));
            }
            if !remote {
                bytes += kv_bytes_per_token(model) * f64::from(ctx) * lanes as f64;
            }
        }
        if let Some(available) = available_memory() {
            if bytes > available as f64 {
                let gib = |b: f64| b / f64::from(1u32 << 30);
                return Err(invalid(
                    "ctx_size",
                    format!(
                        "is {ctx}: with {} lane(s) and {} policies the caches would take up to {:.1} \
                         GiB, more than the {:.1} GiB of memory available; lower `ctx_size` (or the \
                         number of requests decoded at once)",
                        lanes,
                        members.len(),
                        gib(bytes),
                        gib(available as f64)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Tokenizes `text` for policy `p` (BOS added where the model wants it).
    pub fn tokenize(&self, p: usize, text: &str) -> Vec<LlamaToken> {
        self.model(p).vocab().tokenize(text.as_bytes(), true, false)
    }

    /// Every policy's prompt for a completion: its prefix, then `prompt`, tokenized.
    pub fn prompt_tokens(&self, prompt: &str) -> Result<Vec<Vec<LlamaToken>>> {
        if prompt.trim().is_empty() {
            return Err(invalid("prompt", "is empty (or only white space)"));
        }
        let policies = self.policies.iter().enumerate();
        Ok(policies
            .map(|(p, policy)| self.tokenize(p, &format!("{}{prompt}", policy.prefix)))
            .collect())
    }

    /// Tokenizes text that continues a prompt (no BOS).
    pub fn tokenize_continuation(&self, p: usize, text: &str) -> Vec<LlamaToken> {
        self.model(p).vocab().tokenize(text.as_bytes(), false, false)
    }

    /// Whether `token` ends generation (EOS, end-of-turn, …).
    pub fn is_eog(&self, token: u32) -> bool {
        self.models[0].model.vocab().is_eog(LlamaToken(token as i32))
    }

    /// The bytes a token stands for (may be part of a UTF-8 character).
    pub fn piece(&self, token: u32, out: &mut Vec<u8>) {
        out.clear();
        self.models[0].model.vocab().token_to_piece_into(
            LlamaToken(token as i32),
            out,
            false,
            None,
        );
    }

    /// What the policies' distributions are combined over: [`Unit::Tokens`] or
    /// [`Unit::Bytes`] (see [`crate::pipeline::bytes`]).
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Why the policies' vocabularies cannot be combined token by token (`None`: they can).
    pub fn vocab_difference(&self) -> Option<&str> {
        self.vocab_difference.as_deref()
    }

    /// Policy `p`'s vocabulary as byte strings: each token's bytes as llama.cpp renders it
    /// without special tokens (SentencePiece's `▁` a space, byte tokens their byte, byte-level
    /// BPE's symbols their bytes; control tokens nothing).
    pub fn byte_vocab(&self, p: usize) -> Arc<ByteVocab> {
        let m = self.policy_model[p];
        let make = || {
            let vocab = self.models[m].model.vocab();
            let n = vocab.n_tokens().max(0) as u32;
            let mut pieces = Vec::with_capacity(n as usize);
            for t in 0..n {
                let mut piece = Vec::new();
                vocab.token_to_piece_into(LlamaToken(t as i32), &mut piece, false, None);
                pieces.push(piece);
            }
            Arc::new(ByteVocab::new(pieces, |t| vocab.is_eog(LlamaToken(t as i32))))
        };
        Arc::clone(self.byte_vocabs[m].get_or_init(make))
    }

    /// A session of every policy with `lanes` lanes each, for the byte path: a policy follows
    /// one tokenization per lane. With `turns`, the policies take turns on all the threads
    /// from one worker thread; without, each model runs on a worker of its own with its share
    /// of the threads, side by side. `options.strategy` must be concrete.
    pub fn open_byte_session(
        &self,
        lanes: usize,
        options: SessionOptions,
        turns: bool,
    ) -> Result<Session> {
        let options = SessionOptions { ctx_size: self.context_size(options.ctx_size), ..options };
        let all: Vec<usize> = (0..self.policies.len()).collect();
        self.check_session(&all, lanes, &options)?;
        self.start_session(&all, lanes, options, turns)
    }

    /// Opens a session in which the policies `members` (indices into [`Engine::policies`])
    /// decode side by side, in `lanes` independent streams (prompts decoded side by side,
    /// each lane with its own tokens). `Strategy::Auto` becomes the strategy measured fastest
    /// for these policies and lanes on this machine (see `tuning`).
    pub fn open_session(
        &self,
        members: &[usize],
        lanes: usize,
        options: SessionOptions,
    ) -> Result<Session> {
        if let Some(why) = &self.vocab_difference {
            return Err(invalid(
                "unit",
                format!("these policies are combined over bytes ({why}); this works over tokens"),
            ));
        }
        let options = SessionOptions { ctx_size: self.context_size(options.ctx_size), ..options };
        if options.ctx_size < MIN_CTX {
            return Err(invalid(
                "ctx_size",
                format!("must be at least {MIN_CTX} tokens, got {}", options.ctx_size),
            ));
        }
        self.check_session(members, lanes, &options)?;
        let strategy = match options.strategy {
            Strategy::Auto => self.auto_strategy(members, lanes, options)?.strategy,
            s => s,
        };
        self.start_session(members, lanes, SessionOptions { strategy, ..options }, false)
    }

    /// Starts a session with a concrete strategy (checked by the caller).
    fn start_session(
        &self,
        members: &[usize],
        lanes: usize,
        options: SessionOptions,
        one_worker: bool,
    ) -> Result<Session> {
        let specs = members
            .iter()
            .map(|&p| MemberSpec {
                model: Arc::clone(&self.models[self.policy_model[p]].model),
                lora: self.policy_adapter[p]
                    .map(|(a, scale)| (Arc::clone(&self.adapters[a].adapter), scale)),
                not_linear: not_linear(self.model(p)).or_else(|| {
                    self.policy_adapter[p]
                        .filter(|(a, _)| self.adapters[*a].changes_output)
                        .map(|_| "a LoRA adapter changes the output layer")
                }),
                servers: self.models[self.policy_model[p]].servers.clone(),
            })
            .collect();
        Session::start(specs, options, lanes, one_worker)
    }

    fn model(&self, p: usize) -> &LlamaModel {
        &self.models[self.policy_model[p]].model
    }
}
