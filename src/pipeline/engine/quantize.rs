//! Quantizing a GGUF model with llama.cpp's own quantizer (what `llama-quantize` does), so
//! that models made in F16 or F32 — the random-weight bench models of `models/`, a fresh
//! conversion — can be run in the types people deploy.

use super::{backend, check_gguf_file};
use anyhow::{anyhow, bail, Context, Result};
use llama_cpp_sys_2 as sys;
use std::ffi::CString;
use std::path::Path;

/// The quantization types offered: the name (as `llama-quantize` spells it, any case) and
/// llama.cpp's file type.
pub const TYPES: [(&str, sys::llama_ftype); 10] = [
    ("Q4_0", sys::LLAMA_FTYPE_MOSTLY_Q4_0),
    ("Q4_1", sys::LLAMA_FTYPE_MOSTLY_Q4_1),
    ("Q5_0", sys::LLAMA_FTYPE_MOSTLY_Q5_0),
    ("Q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0),
    ("Q4_K_S", sys::LLAMA_FTYPE_MOSTLY_Q4_K_S),
    ("Q4_K_M", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M),
    ("Q5_K_M", sys::LLAMA_FTYPE_MOSTLY_Q5_K_M),
    ("Q6_K", sys::LLAMA_FTYPE_MOSTLY_Q6_K),
    ("F16", sys::LLAMA_FTYPE_MOSTLY_F16),
    ("BF16", sys::LLAMA_FTYPE_MOSTLY_BF16),
];

/// llama.cpp's file type for a type name of [`TYPES`] (any case).
pub fn file_type(name: &str) -> Result<sys::llama_ftype> {
    TYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, t)| t).ok_or_else(|| {
        let names: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
        anyhow!("quantization type '{name}' is not one of {}", names.join(", "))
    })
}

/// Writes `input` quantized to `type_name` to `output`, on `threads` threads. The output
/// appears whole or not at all: llama.cpp writes a temporary file beside it, renamed at
/// the end.
pub fn quantize(input: &Path, output: &Path, type_name: &str, threads: usize) -> Result<()> {
    let ftype = file_type(type_name)?;
    let resolved = check_gguf_file(input, "model file")?;
    if output.is_dir() {
        bail!("output {} is a directory; name a file", output.display());
    }
    if std::fs::canonicalize(output).is_ok_and(|o| o == resolved) {
        bail!("output {} is the input; name another file", output.display());
    }
    backend()?;
    let name =
        output.file_name().ok_or_else(|| anyhow!("output {} names no file", output.display()))?;
    let partial = output.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let c_path = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| anyhow!("path {} holds a NUL byte", p.display()))
    };
    let (c_in, c_out) = (c_path(&resolved)?, c_path(&partial)?);
    // SAFETY: llama.cpp's default parameters, a plain struct returned by value.
    let mut params = unsafe { sys::llama_model_quantize_default_params() };
    params.nthread = i32::try_from(threads.max(1)).unwrap_or(i32::MAX);
    params.ftype = ftype;
    // SAFETY: both paths are NUL-terminated strings that outlive the call, and `params` is
    // a valid parameter struct; llama.cpp reads the input and writes the output file only.
    let status = unsafe { sys::llama_model_quantize(c_in.as_ptr(), c_out.as_ptr(), &params) };
    if status != 0 {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "llama.cpp could not quantize {} to {type_name} (status {status}): it is not a \
             model llama.cpp reads, or it is already quantized",
            input.display()
        );
    }
    std::fs::rename(&partial, output)
        .with_context(|| format!("cannot move the quantized model to {}", output.display()))
}
