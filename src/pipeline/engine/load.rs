//! Loading: the llama.cpp backend, model files (one copy per file and placement), LoRA
//! adapters, and the vocabulary check, for [`Engine::load`].

use super::vocab::{self, VocabView};
use super::{gguf, rpc, AdapterUse, Engine, LoadedAdapter, LoadedModel};
use crate::error::{invalid, tagged, Tag, Tagged};
use crate::pipeline::bytes::Unit;
use crate::pipeline::recipe::Policy;
use anyhow::{anyhow, bail, Context, Result};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The process-wide llama.cpp backend (llama.cpp allows one initialisation per process).
pub fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            #[cfg(feature = "dynamic-backends")]
            load_backends();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow!("cannot initialise llama.cpp: {e}"))
}

/// The folder a `dynamic-backends` build loads llama.cpp's backend libraries from, when the
/// caller names one before the backend starts ([`use_backends_from`]).
#[cfg(feature = "dynamic-backends")]
static BACKENDS_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Names the folder of llama.cpp's backend libraries (a `dynamic-backends` build), before
/// the first model is loaded; without it they come from the folder of the executable, else
/// from the folder the build made them in. Returns whether it was taken (only the first call
/// counts, and only before the backend starts).
#[cfg(feature = "dynamic-backends")]
pub fn use_backends_from(dir: PathBuf) -> bool {
    BACKENDS_DIR.set(dir).is_ok()
}

/// Loads llama.cpp's backend libraries (see [`use_backends_from`]); llama.cpp picks the best
/// CPU variant for the machine it runs on.
#[cfg(feature = "dynamic-backends")]
fn load_backends() {
    let chosen = BACKENDS_DIR.get().cloned().or_else(|| {
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
    /// What the policies' distributions are combined over; with `Auto`, bytes where the
    /// vocabularies differ.
    pub unit: Unit,
}

/// Layers offloaded to a policy's devices when nothing says how many: all of them (llama.cpp
/// caps the count at the model's layers and its output layer).
const ALL_LAYERS: u32 = 999;

/// Whether llama.cpp sees a GPU on this machine (RPC servers do not count).
pub(super) fn local_gpu() -> bool {
    use llama_cpp_2::LlamaBackendDeviceType as Kind;
    llama_cpp_2::list_llama_ggml_backend_devices()
        .iter()
        .any(|d| matches!(d.device_type, Kind::Gpu | Kind::IntegratedGpu) && d.backend != "RPC")
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
                    let loaded = load_model(backend, &policy.model, path, place).map_err(|e| {
                        if e.downcast_ref::<Tagged>().is_some() {
                            e
                        } else {
                            tagged(Tag::ModelFile(policy.model.clone()), format!("{e:#}"))
                        }
                    })?;
                    models.push(loaded);
                    models.len() - 1
                }
            };
            policy_model.push(index);
        }
        let views: Vec<ModelVocab> = models.iter().map(ModelVocab::new).collect();
        let mut vocab_difference = None;
        for other in &views[1..] {
            if let Err(e) = vocab::check_compatible(&views[0], other) {
                if options.unit == Unit::Tokens {
                    let files =
                        Tag::Vocabulary(views[0].model.path.clone(), other.model.path.clone());
                    return Err(tagged(
                        files,
                        format!("{e:#} over tokens; combine them over bytes (--unit bytes)"),
                    ));
                }
                vocab_difference = Some(format!("{e:#}"));
                break;
            }
        }
        let n_common = views.iter().map(|v| v.n_tokens()).min().unwrap_or(0);
        drop(views);
        let unit = if vocab_difference.is_some() || options.unit == Unit::Bytes {
            Unit::Bytes
        } else {
            Unit::Tokens
        };
        let (adapters, policy_adapter) = load_adapters(policies, &policy_model, &mut models)?;
        let n_models = models.len();
        Ok(Self {
            adapters,
            models,
            policy_model,
            policy_adapter,
            policies: policies.to_vec(),
            n_common,
            unit,
            vocab_difference,
            byte_vocabs: (0..n_models).map(|_| OnceLock::new()).collect(),
            draft: None,
            strategy_memory: Default::default(),
        })
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
pub(super) struct Placement {
    pub(super) layers: u32,
    pub(super) main_gpu: i32,
    pub(super) servers: Vec<Arc<rpc::Server>>,
}

/// Loads one model file with its offload setting, on this machine or over RPC servers.
pub(super) fn load_model(
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
            Some(tagged(
                Tag::Rpc(s.endpoint().to_string()),
                format!(
                    "RPC server {} was lost {during} model {}: {why}; restart rpc-server there \
                     and run again",
                    s.endpoint(),
                    shown.display()
                ),
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
                    tagged(
                        Tag::ModelFile(lora.clone()),
                        format!(
                            "cannot load LoRA adapter {} for model {}: llama.cpp rejected it \
                             (not an adapter, or made for another model)",
                            lora.display(),
                            policy.model.display()
                        ),
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
pub fn check_gguf_file(path: &Path, what: &str) -> Result<PathBuf> {
    check_gguf_file_untagged(path, what).map_err(|e| {
        let message = format!("{e:#}");
        tagged(Tag::ModelFile(path.to_path_buf()), message)
    })
}

fn check_gguf_file_untagged(path: &Path, what: &str) -> Result<PathBuf> {
    let shown = path.display();
    let not_opened = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound if what == "model file" => {
            anyhow!("{what} {shown} not found (run models/fetch-default.sh for the default model)")
        }
        std::io::ErrorKind::NotFound => anyhow!("{what} {shown} not found"),
        _ => anyhow!("cannot open {what} {shown}: {e}"),
    };
    // Asked before opening: opening a pipe waits for a writer, possibly for ever.
    let meta = std::fs::metadata(path).map_err(not_opened)?;
    if meta.is_dir() {
        bail!("{what} {shown} is a folder; give the path of a .gguf file");
    }
    if !meta.is_file() {
        bail!("{what} {shown} is not a regular file (a pipe or a device); give a .gguf file");
    }
    let mut file = std::fs::File::open(path).map_err(not_opened)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| anyhow!("{what} {shown} is not a GGUF file (too short)"))?;
    if &magic != b"GGUF" {
        bail!("{what} {shown} is not a GGUF file (wrong magic bytes)");
    }
    path.canonicalize().with_context(|| format!("cannot resolve {what} {shown}"))
}

/// A loaded model's vocabulary, as the compatibility check sees it.
pub(super) struct ModelVocab<'a> {
    pub(super) model: &'a LoadedModel,
}

impl<'a> ModelVocab<'a> {
    pub(super) fn new(model: &'a LoadedModel) -> Self {
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
