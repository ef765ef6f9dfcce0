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
pub mod rpc;
mod session;
mod strategy;
mod tuning;
pub mod vocab;
mod worker;

pub use drafter::Drafter;
pub use grammar::Grammar;
pub use session::{LaneFill, Session, MIN_CTX};
pub use strategy::{cache_path, SessionOptions, Strategy};
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

use session::MemberSpec;

use crate::pipeline::recipe::Policy;
use crate::pipeline::settings::invalid;
use anyhow::{anyhow, bail, Context, Result};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use vocab::VocabView;

/// The process-wide llama.cpp backend (llama.cpp allows one initialisation per process).
/// llama.cpp's own log lines are silenced: errors reach the user as `mood` messages.
pub fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(
                llama_cpp_2::LogOptions::default().with_logs_enabled(false),
            );
            #[cfg(feature = "dynamic-backends")]
            load_backends();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow!("cannot initialise llama.cpp: {e}"))
}

/// Loads llama.cpp's backend libraries (a `dynamic-backends` build): from `MOOD_BACKENDS_DIR`
/// when set, else from the folder of the `mood` executable, else from the folder the build
/// made them in. llama.cpp picks the best CPU variant for the machine it runs on.
#[cfg(feature = "dynamic-backends")]
fn load_backends() {
    let chosen = std::env::var_os("MOOD_BACKENDS_DIR").map(PathBuf::from).or_else(|| {
        let exe = std::env::current_exe().ok()?;
        let dir = exe.parent()?;
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libggml-cpu"))
            .then(|| dir.to_path_buf())
    });
    match chosen {
        // The bindings want UTF-8 paths; other paths fall back to the build's folder.
        Some(dir) if dir.to_str().is_some() => {
            llama_cpp_2::llama_backend::load_backends_from_path(&dir)
        }
        _ => llama_cpp_2::llama_backend::load_backends(),
    }
}

/// How models are loaded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Layers to offload to the GPU for policies that do not set `n_gpu_layers` themselves.
    pub n_gpu_layers: u32,
    /// The GPU that holds the model when several are present.
    pub main_gpu: i32,
    /// RPC servers (`HOST:PORT`) for policies that do not set `rpc` themselves.
    pub rpc: Vec<String>,
}

/// Layers offloaded to a policy's devices when nothing says how many: all of them (llama.cpp
/// caps the count at the model's layers and its output layer).
const ALL_LAYERS: u32 = 999;

/// One loaded GGUF file, on this machine or split over RPC servers.
struct LoadedModel {
    path: PathBuf,
    n_gpu_layers: u32,
    /// The servers holding its layers (none: local).
    servers: Vec<Arc<rpc::Server>>,
    model: Arc<LlamaModel>,
}

/// Whether llama.cpp sees a GPU on this machine (RPC servers do not count).
fn local_gpu() -> bool {
    use llama_cpp_2::LlamaBackendDeviceType as Kind;
    llama_cpp_2::list_llama_ggml_backend_devices()
        .iter()
        .any(|d| matches!(d.device_type, Kind::Gpu | Kind::IntegratedGpu) && d.backend != "RPC")
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
    /// The draft model for speculation, in `models` (see [`Engine::load_draft_model`]).
    draft: Option<usize>,
}

impl Engine {
    /// Loads every distinct model file named by `policies` once per placement (on this
    /// machine, or over a list of RPC servers), and every distinct LoRA adapter once per
    /// model, and checks that all vocabularies are compatible (`docs/mod.md` §2). Every RPC
    /// server is connected to first: one that cannot be reached is an error naming it.
    pub fn load(policies: &[Policy], options: LoadOptions) -> Result<Self> {
        if policies.is_empty() {
            bail!("no policies to load");
        }
        let placements = placements(policies, &options)?;
        rpc::check_built(placements.iter().any(|p| !p.is_empty()))?;
        let backend = backend()?;
        let layers_of = |p: &Policy, servers: &[rpc::Endpoint]| match p.n_gpu_layers {
            Some(n) => n,
            None if !servers.is_empty() && options.n_gpu_layers == 0 => ALL_LAYERS,
            None => options.n_gpu_layers,
        };
        let offload_here = policies
            .iter()
            .zip(&placements)
            .any(|(p, servers)| servers.is_empty() && layers_of(p, servers) > 0);
        if offload_here && !local_gpu() {
            return Err(invalid(
                "n_gpu_layers",
                "asks for GPU offload, but this build of mood has no GPU backend; rebuild with \
                 --features cuda (or metal, vulkan), or drop the setting to run on the CPU",
            ));
        }
        let mut paths = Vec::with_capacity(policies.len());
        for policy in policies {
            paths.push(check_gguf_file(&policy.model, "model file")?);
        }
        let mut servers: Vec<Arc<rpc::Server>> = Vec::new();
        for (policy, list) in policies.iter().zip(&placements) {
            for endpoint in list {
                if !servers.iter().any(|s| s.endpoint() == endpoint) {
                    let user = format!("policy '{}'", policy.name);
                    servers.push(rpc::connect(endpoint, &user)?);
                }
            }
        }
        let mut models: Vec<LoadedModel> = Vec::new();
        let mut policy_model = Vec::with_capacity(policies.len());
        for ((policy, path), list) in policies.iter().zip(&paths).zip(&placements) {
            let layers = layers_of(policy, list);
            let on: Vec<Arc<rpc::Server>> = list
                .iter()
                .filter_map(|e| servers.iter().find(|s| s.endpoint() == e).cloned())
                .collect();
            let same_place = |m: &LoadedModel| {
                &m.path == path
                    && m.servers.len() == on.len()
                    && m.servers.iter().zip(&on).all(|(a, b)| Arc::ptr_eq(a, b))
            };
            let index = match models.iter().position(same_place) {
                Some(i) => {
                    if models[i].n_gpu_layers != layers {
                        bail!(
                            "policies on {} ask for different n_gpu_layers ({} and {}); one \
                             loaded copy of a model has one offload setting",
                            policy.model.display(),
                            models[i].n_gpu_layers,
                            layers
                        );
                    }
                    i
                }
                None => {
                    let place = Placement { layers, main_gpu: options.main_gpu, servers: on };
                    models.push(load_model(backend, &policy.model, path, place)?);
                    models.len() - 1
                }
            };
            policy_model.push(index);
        }
        let views: Vec<ModelVocab> = models.iter().map(ModelVocab::new).collect();
        for other in &views[1..] {
            vocab::check_compatible(&views[0], other)?;
        }
        let n_common = views.iter().map(|v| v.n_tokens()).min().unwrap_or(0);
        drop(views);
        let (adapters, policy_adapter) = load_adapters(policies, &policy_model, &mut models)?;
        Ok(Self {
            adapters,
            models,
            policy_model,
            policy_adapter,
            policies: policies.to_vec(),
            n_common,
            draft: None,
        })
    }

    /// Number of distinct LoRA adapters loaded.
    pub fn n_adapters(&self) -> usize {
        self.adapters.len()
    }

    /// Whether any model has layers offloaded to a GPU (of this machine or an RPC server).
    pub fn offloads(&self) -> bool {
        self.models.iter().any(|m| m.n_gpu_layers > 0)
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

    /// Opens a session in which the policies `members` (indices into [`Engine::policies`])
    /// decode side by side, in `lanes` independent streams (prompts decoded side by side,
    /// each lane with its own tokens). With offload, `Strategy::Auto` becomes one batched
    /// context per model (one pass over the weights per step); on the CPU it becomes a
    /// context per policy.
    pub fn open_session(
        &self,
        members: &[usize],
        lanes: usize,
        options: SessionOptions,
    ) -> Result<Session> {
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
        self.start_session(members, lanes, SessionOptions { strategy, ..options })
    }

    /// Starts a session with a concrete strategy (checked by the caller).
    fn start_session(
        &self,
        members: &[usize],
        lanes: usize,
        options: SessionOptions,
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
        Session::start(specs, options, lanes)
    }

    fn model(&self, p: usize) -> &LlamaModel {
        &self.models[self.policy_model[p]].model
    }
}

/// The RPC servers of each policy: its own `rpc` list, or the command line's.
fn placements(policies: &[Policy], options: &LoadOptions) -> Result<Vec<Vec<rpc::Endpoint>>> {
    policies
        .iter()
        .map(|p| {
            rpc::parse_list(p.rpc.as_ref().unwrap_or(&options.rpc))
                .with_context(|| format!("policy '{}'", p.name))
        })
        .collect()
}

/// The distinct RPC servers `policies` would run on with `options`, checked (for warnings
/// about exposed addresses before anything connects).
pub fn rpc_endpoints(policies: &[Policy], options: &LoadOptions) -> Result<Vec<rpc::Endpoint>> {
    let placements = placements(policies, options)?;
    Ok(rpc::distinct(placements.iter().map(Vec::as_slice)))
}

/// Where a model's layers go.
struct Placement {
    layers: u32,
    main_gpu: i32,
    servers: Vec<Arc<rpc::Server>>,
}

/// Loads one model file with its offload setting, on this machine or over RPC servers.
fn load_model(
    backend: &LlamaBackend,
    shown: &Path,
    path: &Path,
    place: Placement,
) -> Result<LoadedModel> {
    let params =
        LlamaModelParams::default().with_n_gpu_layers(place.layers).with_main_gpu(place.main_gpu);
    #[cfg(feature = "rpc")]
    let params = if place.servers.is_empty() {
        params
    } else {
        let servers: Vec<_> = place.servers.iter().map(|s| s.inner()).collect();
        params.with_rpc_servers(&servers).map_err(|e| anyhow!("model {}: {e}", shown.display()))?
    };
    let lost = |during: &str| {
        place.servers.iter().find_map(|s| {
            let why = s.failure()?;
            Some(anyhow!(
                "RPC server {} was lost {during} model {}: {why}; restart rpc-server there and \
                 run again",
                s.endpoint(),
                shown.display()
            ))
        })
    };
    let model = LlamaModel::load_from_file(backend, path, &params).map_err(|_| {
        lost("while loading").unwrap_or_else(|| {
            let or_size =
                if place.servers.is_empty() { "" } else { ", or larger than the servers hold" };
            anyhow!(
                "cannot load model {}: llama.cpp rejected it (corrupt, truncated, or an \
                 architecture this build does not know{or_size})",
                shown.display()
            )
        })
    })?;
    if let Some(e) = lost("while loading") {
        return Err(e);
    }
    Ok(LoadedModel {
        path: path.to_path_buf(),
        n_gpu_layers: place.layers,
        servers: place.servers,
        model: Arc::new(model),
    })
}

/// Loads each distinct (model, adapter file) pair once. Needs the models before any context
/// exists (llama.cpp takes the model mutably).
fn load_adapters(
    policies: &[Policy],
    policy_model: &[usize],
    models: &mut [LoadedModel],
) -> Result<(Vec<LoadedAdapter>, Vec<Option<AdapterUse>>)> {
    let mut adapters: Vec<LoadedAdapter> = Vec::new();
    let mut policy_adapter = Vec::with_capacity(policies.len());
    for (policy, &m) in policies.iter().zip(policy_model) {
        let Some((lora, scale)) = &policy.lora else {
            policy_adapter.push(None);
            continue;
        };
        let path = check_gguf_file(lora, "LoRA adapter")?;
        let index = match adapters.iter().position(|a| a.path == path && a.model == m) {
            Some(i) => i,
            None => {
                let model = Arc::get_mut(&mut models[m].model).ok_or_else(|| {
                    anyhow!("internal: model shared before its adapters were loaded")
                })?;
                let adapter = model.lora_adapter_init(&path).map_err(|_| {
                    anyhow!(
                        "cannot load LoRA adapter {} for model {}: llama.cpp rejected it (not \
                         an adapter, or made for another model)",
                        lora.display(),
                        policy.model.display()
                    )
                })?;
                let adapter = Arc::new(Mutex::new(adapter));
                let names = gguf::tensor_names(&path)?;
                // The output projection, or the token embedding it is tied to in some models.
                let changes_output =
                    names.iter().any(|n| n.starts_with("output.") || n.starts_with("token_embd."));
                adapters.push(LoadedAdapter { path, model: m, adapter, changes_output });
                adapters.len() - 1
            }
        };
        policy_adapter.push(Some((index, *scale)));
    }
    Ok((adapters, policy_adapter))
}

/// Checks that `path` is a readable GGUF file; returns its canonical path. `what` names it
/// in messages ("model file", "LoRA adapter").
fn check_gguf_file(path: &Path, what: &str) -> Result<PathBuf> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if what == "model file" => {
            anyhow!("{what} {shown} not found (run models/fetch-default.sh for the default model)")
        }
        std::io::ErrorKind::NotFound => anyhow!("{what} {shown} not found"),
        _ => anyhow!("cannot open {what} {shown}: {e}"),
    })?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        bail!("{what} {shown} is a folder; give the path of a .gguf file");
    }
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| anyhow!("{what} {shown} is not a GGUF file (too short)"))?;
    if &magic != b"GGUF" {
        bail!("{what} {shown} is not a GGUF file (wrong magic bytes)");
    }
    path.canonicalize().with_context(|| format!("cannot resolve {what} {shown}"))
}

/// A loaded model's vocabulary, as the compatibility check sees it.
struct ModelVocab<'a> {
    model: &'a LoadedModel,
}

impl<'a> ModelVocab<'a> {
    fn new(model: &'a LoadedModel) -> Self {
        Self { model }
    }
}

impl VocabView for ModelVocab<'_> {
    fn origin(&self) -> String {
        self.model.path.display().to_string()
    }
    fn kind(&self) -> String {
        format!("{:?}", self.model.model.vocab().vocab_type())
    }
    fn n_tokens(&self) -> usize {
        usize::try_from(self.model.model.vocab().n_tokens()).unwrap_or(0)
    }
    fn add_bos(&self) -> bool {
        self.model.model.vocab().should_add_bos()
    }
    fn bos(&self) -> i32 {
        self.model.model.vocab().bos().0
    }
    fn add_eos(&self) -> bool {
        self.model.model.vocab().should_add_eos()
    }
    fn eos(&self) -> i32 {
        self.model.model.vocab().eos().0
    }
    fn text(&self, id: usize) -> Vec<u8> {
        let vocab = self.model.model.vocab();
        vocab.text(LlamaToken(id as i32)).map(|t| t.to_bytes().to_vec()).unwrap_or_default()
    }
}
