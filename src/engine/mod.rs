//! The engine: loads GGUF models through llama.cpp (one copy per file, however many policies
//! name it), checks that their vocabularies can be combined, tokenizes, and opens
//! [`Session`]s in which policies decode on worker threads.
//!
//! It knows nothing of the command line or of how distributions are combined.

mod session;
pub mod vocab;

pub use session::{Session, SessionOptions, Strategy};

use crate::recipe::Policy;
use anyhow::{anyhow, bail, Context, Result};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
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
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow!("cannot initialise llama.cpp: {e}"))
}

/// One loaded GGUF file.
struct LoadedModel {
    path: PathBuf,
    model: Arc<LlamaModel>,
}

/// Loaded models and the policies that run on them.
pub struct Engine {
    models: Vec<LoadedModel>,
    /// For each policy, the index of its model in `models`.
    policy_model: Vec<usize>,
    policies: Vec<Policy>,
    n_common: usize,
}

impl Engine {
    /// Loads every distinct model file named by `policies` and checks that all vocabularies
    /// are compatible (DESIGN.md §2).
    pub fn load(policies: &[Policy]) -> Result<Self> {
        if policies.is_empty() {
            bail!("no policies to load");
        }
        let backend = backend()?;
        let mut models: Vec<LoadedModel> = Vec::new();
        let mut policy_model = Vec::with_capacity(policies.len());
        for policy in policies {
            let path = check_model_file(&policy.model)?;
            let index = match models.iter().position(|m| m.path == path) {
                Some(i) => i,
                None => {
                    let params = LlamaModelParams::default();
                    let model = LlamaModel::load_from_file(backend, &path, &params).map_err(|_| {
                        anyhow!(
                            "cannot load model {}: llama.cpp rejected it (corrupt, truncated, or an \
                             architecture this build does not know)",
                            policy.model.display()
                        )
                    })?;
                    models.push(LoadedModel { path, model: Arc::new(model) });
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
        Ok(Self { models, policy_model, policies: policies.to_vec(), n_common })
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

    /// The context length policy `p`'s model was trained with.
    pub fn n_ctx_train(&self, p: usize) -> u32 {
        self.model(p).n_ctx_train()
    }

    /// Tokenizes `text` for policy `p` (BOS added where the model wants it).
    pub fn tokenize(&self, p: usize, text: &str) -> Vec<LlamaToken> {
        self.model(p).vocab().tokenize(text.as_bytes(), true, false)
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
    /// decode side by side.
    pub fn session(&self, members: &[usize], options: SessionOptions) -> Result<Session> {
        let models =
            members.iter().map(|&p| Arc::clone(&self.models[self.policy_model[p]].model)).collect();
        Session::start(models, options)
    }

    fn model(&self, p: usize) -> &LlamaModel {
        &self.models[self.policy_model[p]].model
    }
}

/// Checks that `path` is a readable GGUF file; returns its canonical path.
fn check_model_file(path: &Path) -> Result<PathBuf> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow!(
                "model file {shown} not found (run models/fetch-default.sh for the default model)"
            )
        }
        _ => anyhow!("cannot open model file {shown}: {e}"),
    })?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        bail!("model file {shown} is a folder; give the path of a .gguf file");
    }
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| anyhow!("model file {shown} is not a GGUF file (too short)"))?;
    if &magic != b"GGUF" {
        bail!("model file {shown} is not a GGUF file (wrong magic bytes)");
    }
    path.canonicalize().with_context(|| format!("cannot resolve model file {shown}"))
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
