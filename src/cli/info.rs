//! `mood info`: prints [`mood::pipeline::engine::info`] as text or JSON.

use super::InfoArgs;
use anyhow::Result;
use mood::pipeline::engine::{info, rpc};
use serde_json::json;
use std::io::Write;
use std::path::Path;

pub fn run(args: InfoArgs) -> Result<()> {
    let endpoints = rpc::parse_list(&args.rpc)?;
    rpc::check_built(!endpoints.is_empty())?;
    let build = info::build_info()?;
    let servers = rpc::probe(&endpoints)?;
    let paths: Vec<&Path> = args.files.iter().map(|p| p.as_path()).collect();
    let (models, compat) = info::inspect(&paths)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = json!({ "build": build, "models": models, "compatibility": compat });
        if !args.rpc.is_empty() {
            v["rpc_servers"] = json!(servers);
        }
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let features = if build.gpu_features.is_empty() {
        "none (CPU only)".into()
    } else {
        build.gpu_features.join(", ")
    };
    writeln!(
        out,
        "mood {}  GPU backends: {features}  offload: {}  RPC: {}",
        build.version,
        yes(build.gpu_offload),
        yes(build.rpc)
    )?;
    for d in &build.devices {
        writeln!(
            out,
            "  device {} ({}, {}): {}, {} MB ({} MB free)",
            d.name, d.backend, d.kind, d.description, d.memory_total_mb, d.memory_free_mb
        )?;
    }
    for s in &servers {
        match &s.error {
            None => writeln!(out, "  RPC server {}: reachable", s.endpoint)?,
            Some(e) => writeln!(out, "  RPC server {}: unreachable: {e}", s.endpoint)?,
        }
        for d in &s.devices {
            writeln!(
                out,
                "    device {} ({}): {} MB ({} MB free)",
                d.name, d.description, d.memory_total_mb, d.memory_free_mb
            )?;
        }
        if let Some(w) = &s.warning {
            eprintln!("mood: warning: {w}");
        }
    }
    for m in &models {
        writeln!(out, "\n{}", m.path)?;
        if let Some(name) = &m.name {
            writeln!(out, "  name            {name}")?;
        }
        writeln!(out, "  architecture    {}", m.architecture)?;
        writeln!(out, "  parameters      {} ({:.1} M)", m.parameters, m.parameters as f64 / 1e6)?;
        writeln!(out, "  quantization    {}", m.quantization)?;
        writeln!(
            out,
            "  file size       {} bytes ({:.1} MB)",
            m.file_size,
            m.file_size as f64 / 1e6
        )?;
        writeln!(out, "  layers          {}, embedding {}", m.layers, m.embedding_length)?;
        writeln!(out, "  context length  {} (trained)", m.context_length)?;
        writeln!(out, "  vocabulary      {} tokens, {}", m.vocab_size, m.vocab_type)?;
        writeln!(
            out,
            "  special tokens  BOS {}, EOS {}, end-of-generation {:?}",
            m.bos, m.eos, m.eog
        )?;
        writeln!(out, "  chat template   {}", if m.chat_template { "yes" } else { "no" })?;
    }
    for c in &compat {
        match &c.reason {
            None => writeln!(out, "\n{} and {} are combined over tokens", c.first, c.second)?,
            Some(why) => {
                let detail = why.split_once("cannot be combined: ").map_or(why.as_str(), |x| x.1);
                writeln!(
                    out,
                    "\n{} and {} are combined over bytes (over tokens they cannot be: {detail})",
                    c.first, c.second
                )?
            }
        }
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
