//! What a build can run on and what a GGUF file holds: the facts `mood info` prints.

use super::vocab;
use super::{backend, check_gguf_file, LoadedModel, ModelVocab};
use anyhow::{anyhow, Result};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// The build: version, GPU backends compiled in, and the devices llama.cpp sees.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    /// GPU backends this binary has: the Cargo features it was built with, or for a
    /// `dynamic-backends` build the GPU backend modules it loaded.
    pub gpu_features: Vec<String>,
    pub gpu_offload: bool,
    /// Whether it has llama.cpp's RPC backend (models on other hosts).
    pub rpc: bool,
    pub devices: Vec<DeviceInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub name: String,
    pub description: String,
    pub backend: String,
    pub kind: String,
    pub memory_total_mb: u64,
    pub memory_free_mb: u64,
}

/// One GGUF model file.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub path: String,
    pub file_size: u64,
    pub name: Option<String>,
    pub architecture: String,
    pub parameters: u64,
    pub quantization: String,
    pub layers: u32,
    pub embedding_length: i32,
    pub context_length: u32,
    pub vocab_size: usize,
    pub vocab_type: String,
    pub bos: i32,
    pub eos: i32,
    /// Every end-of-generation token id.
    pub eog: Vec<i32>,
    pub chat_template: bool,
}

/// Whether two files can be combined, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct Compatibility {
    pub first: String,
    pub second: String,
    pub compatible: bool,
    pub reason: Option<String>,
    /// What a recipe of both is combined over by default: "tokens", or "bytes" when the
    /// vocabularies differ.
    pub unit: &'static str,
}

pub fn build_info() -> Result<BuildInfo> {
    backend()?;
    let mut gpu_features: Vec<String> = [
        (cfg!(feature = "cuda"), "cuda"),
        (cfg!(feature = "metal"), "metal"),
        (cfg!(feature = "vulkan"), "vulkan"),
    ]
    .into_iter()
    .filter(|&(on, _)| on)
    .map(|(_, name)| name.to_string())
    .collect();
    let devices: Vec<DeviceInfo> = llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| DeviceInfo {
            name: d.name,
            description: d.description,
            backend: d.backend,
            kind: format!("{:?}", d.device_type),
            memory_total_mb: (d.memory_total / (1 << 20)) as u64,
            memory_free_mb: (d.memory_free / (1 << 20)) as u64,
        })
        .collect();
    // A dynamic-backends build has the GPU backends whose modules it found at start-up.
    if cfg!(feature = "dynamic-backends") {
        for d in devices.iter().filter(|d| d.kind == "Gpu") {
            let name = d.backend.to_lowercase();
            if !gpu_features.contains(&name) {
                gpu_features.push(name);
            }
        }
    }
    Ok(BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        gpu_features,
        gpu_offload: super::local_gpu(),
        rpc: super::rpc::AVAILABLE,
        devices,
    })
}

/// Loads each file (memory-mapped, CPU) and reports its facts, then whether each later file
/// can be combined with the first.
pub fn inspect(paths: &[&Path]) -> Result<(Vec<ModelInfo>, Vec<Compatibility>)> {
    let backend = backend()?;
    let mut loaded = Vec::with_capacity(paths.len());
    let mut infos = Vec::with_capacity(paths.len());
    for &shown in paths {
        let path = check_gguf_file(shown, "model file")?;
        let model = LlamaModel::load_from_file(backend, &path, &LlamaModelParams::default())
            .map_err(|_| anyhow!("cannot load model {}: llama.cpp rejected it", shown.display()))?;
        let file_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        infos.push(describe(&model, shown, file_size));
        loaded.push(LoadedModel {
            path,
            n_gpu_layers: 0,
            servers: Vec::new(),
            model: Arc::new(model),
        });
    }
    let views: Vec<ModelVocab> = loaded.iter().map(ModelVocab::new).collect();
    let compat = views
        .iter()
        .skip(1)
        .zip(paths.iter().skip(1))
        .map(|(v, p)| {
            let r = vocab::check_compatible(&views[0], v);
            Compatibility {
                first: paths[0].display().to_string(),
                second: p.display().to_string(),
                compatible: r.is_ok(),
                unit: if r.is_ok() { "tokens" } else { "bytes" },
                reason: r.err().map(|e| e.to_string()),
            }
        })
        .collect();
    Ok((infos, compat))
}

fn describe(model: &LlamaModel, path: &Path, file_size: u64) -> ModelInfo {
    let meta = |k: &str| model.meta_val_str(k).ok();
    let vocab = model.vocab();
    let n_vocab = usize::try_from(vocab.n_tokens()).unwrap_or(0);
    let eog = (0..n_vocab as i32).filter(|&t| vocab.is_eog(LlamaToken(t))).collect();
    ModelInfo {
        path: path.display().to_string(),
        file_size,
        name: meta("general.name"),
        architecture: meta("general.architecture").unwrap_or_else(|| "unknown".into()),
        parameters: model.n_params(),
        quantization: meta("general.file_type")
            .and_then(|t| t.parse::<u32>().ok())
            .map_or_else(|| "unknown".into(), file_type_name),
        layers: model.n_layer(),
        embedding_length: model.n_embd(),
        context_length: model.n_ctx_train(),
        vocab_size: n_vocab,
        vocab_type: format!("{:?}", vocab.vocab_type()),
        bos: vocab.bos().0,
        eos: vocab.eos().0,
        eog,
        chat_template: model.chat_template(None).is_ok(),
    }
}

/// llama.cpp's names for `general.file_type` (its `llama_ftype`).
fn file_type_name(t: u32) -> String {
    let name = match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return format!("type {t}"),
    };
    name.to_string()
}
