//! Batched passes on a Q4_K model give every sequence the logits it gets alone. llama.cpp
//! repacks Q4_K weights for its batched kernels; rows left over from its 4-row blocks (a pass
//! of 2 or 3 sequences, or 5 to 7) go through vendor/'s kernel that unpacks the weights once
//! for all of them. Each row's arithmetic is the one-row kernel's, so a pass of 1, 2 or 3
//! sequences must agree to the bit, with the same token in every sequence and with
//! different ones (which would show rows mixed up or written to the wrong place). Also: the
//! pass measurement behind the cost model (`engine::passes`) covers the widths asked for and
//! refuses impossible ones.

mod common;

use common::*;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::Command;

/// A random-weight llama model with Q4_K matrices (embedding 512, two layers), made by
/// models/make-bench-model.py and `mood quantize`.
fn q4_k_model() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-batch-rows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f16 = dir.join("rows-f16.gguf");
    let q4k = dir.join("rows-q4_k_m.gguf");
    let made = Command::new("python3")
        .arg(root().join("models/make-bench-model.py"))
        .arg(&f16)
        .args(["--layers", "2", "--embd", "512", "--ff", "1024", "--heads", "8", "--vocab", "1000"])
        .output()
        .expect("run python3");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let out = mood(&["quantize", f16.to_str().unwrap(), q4k.to_str().unwrap(), "Q4_K_M"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    q4k
}

/// A pass of `tokens.len()` sequences, token `i` to sequence `i` at `pos`; every row's logits.
/// The tokens are removed afterwards.
fn pass(ctx: &mut LlamaContext, tokens: &[i32], pos: i32) -> Vec<Vec<f32>> {
    let mut batch = LlamaBatch::new(tokens.len(), tokens.len() as i32);
    for (s, &t) in tokens.iter().enumerate() {
        batch.add(LlamaToken(t), pos, &[s as i32], true).unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    let rows = (0..tokens.len()).map(|i| ctx.get_logits_ith(i as i32).to_vec()).collect();
    for s in 0..tokens.len() {
        ctx.clear_kv_cache_seq(Some(s as u32), Some(pos as u32), None).unwrap();
    }
    rows
}

#[test]
fn two_and_three_sequences_get_the_logits_each_gets_alone() {
    let path = q4_k_model();
    let info = mood_json(&["info", path.to_str().unwrap(), "--json"]);
    assert_eq!(info["models"][0]["quantization"], "Q4_K_M");
    let model = load_model(&path);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(1024))
        .with_n_batch(64)
        .with_n_seq_max(4)
        .with_n_threads(2)
        .with_n_threads_batch(2);
    let mut ctx = model.new_context(backend(), params).unwrap();
    let prompt = model.vocab().tokenize(b"the harbour town woke slowly", true, false);
    let mut batch = LlamaBatch::new(prompt.len(), 1);
    for (i, &t) in prompt.iter().enumerate() {
        batch.add(t, i as i32, &[0], i + 1 == prompt.len()).unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    for s in 1..4 {
        ctx.copy_kv_cache_seq(0, s, None, None).unwrap();
    }
    let pos = prompt.len() as i32;
    let tokens = [300, 301, 777];
    let alone: Vec<Vec<f32>> =
        tokens.iter().map(|&t| pass(&mut ctx, &[t], pos).remove(0)).collect();
    assert_ne!(alone[0], alone[1], "different tokens give different logits");
    for w in [2, 3] {
        let same = pass(&mut ctx, &vec![tokens[0]; w], pos);
        for (s, row) in same.iter().enumerate() {
            assert!(row == &alone[0], "{w} sequences, the same token: row {s} differs");
        }
        let different = pass(&mut ctx, &tokens[..w], pos);
        for (s, row) in different.iter().enumerate() {
            assert!(row == &alone[s], "{w} sequences, different tokens: row {s} differs");
        }
    }
}

#[test]
fn pass_costs_cover_every_width_asked_and_refuse_impossible_ones() {
    use mood::pipeline::engine::passes::{measure, MAX_WIDTH};
    backend();
    let tiny = tiny("a");
    let costs = measure(&tiny, 1, 3, 2).unwrap();
    assert_eq!((costs.every_row_ms.len(), costs.one_row_ms.len(), costs.threads), (3, 3, 1));
    assert_eq!(costs.alongside, 1);
    for ms in costs.every_row_ms.iter().chain(&costs.one_row_ms) {
        assert!(ms.is_finite() && *ms > 0.0, "{costs:?}");
    }
    // A width beyond those measured reads the widest one.
    assert_eq!(costs.ms(7, true), costs.every_row_ms[2]);
    for (threads, widest, rounds) in [(0, 1, 1), (1, 0, 1), (1, MAX_WIDTH + 1, 1), (1, 1, 0)] {
        assert!(measure(&tiny, threads, widest, rounds).is_err());
    }
    let missing = measure(std::path::Path::new("/nonexistent/model.gguf"), 1, 1, 1).unwrap_err();
    assert!(format!("{missing:#}").contains("/nonexistent/model.gguf"), "{missing:#}");
}

#[test]
fn passes_alongside_run_one_context_per_worker_and_refuse_impossible_ones() {
    use mood::pipeline::engine::passes::measure_alongside;
    backend();
    let tiny = tiny("a");
    let costs = measure_alongside(&tiny, 1, 3, 2).unwrap();
    assert_eq!((costs.threads, costs.alongside), (1, 3));
    assert_eq!((costs.every_row_ms.len(), costs.one_row_ms.len()), (1, 1));
    assert!(costs.ms(1, true).is_finite() && costs.ms(1, true) > 0.0, "{costs:?}");
    let many = mood::pipeline::engine::passes::MAX_WORKERS + 1;
    for (threads, workers, rounds) in [(0, 1, 1), (1, 0, 1), (1, 1, 0), (1, many, 1)] {
        assert!(measure_alongside(&tiny, threads, workers, rounds).is_err());
    }
    let missing = measure_alongside(std::path::Path::new("/nonexistent/m.gguf"), 1, 2, 1);
    let missing = missing.unwrap_err();
    assert!(format!("{missing:#}").contains("/nonexistent/m.gguf"), "{missing:#}");
}
