//! A draft model for speculative decoding: any GGUF model whose vocabulary passes the
//! vocabulary check against the policies' (a smaller model of the same family, or the
//! reference itself without a prefix) guesses the next tokens greedily, in a llama.cpp
//! context of its own with one sequence per lane. The policies then check the guesses as
//! they check prompt-lookup drafts (see the decoder): the output does not depend on them.

use super::{
    backend, check_gguf_file, load_model, vocab, Engine, LoadedModel, ModelVocab, Placement,
};
use crate::pipeline::sample::argmax;
use anyhow::{anyhow, bail, Context, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::Path;

/// Tokens decoded per batch when the draft model catches up with a lane.
const CHUNK: usize = 512;

impl Engine {
    /// Loads `path` as the draft model on this machine (a file the policies already use
    /// here is shared, not loaded again), after checking its vocabulary against the policies'.
    pub fn load_draft_model(&mut self, path: &Path, n_gpu_layers: u32) -> Result<()> {
        let resolved = check_gguf_file(path, "draft model file")?;
        let here = |m: &LoadedModel| m.path == resolved && m.servers.is_empty();
        if let Some(i) = self.models.iter().position(here) {
            self.draft = Some(i);
            return Ok(());
        }
        let place = Placement { layers: n_gpu_layers, main_gpu: 0, servers: Vec::new() };
        let model = load_model(backend()?, path, &resolved, place)?;
        vocab::check_compatible(&ModelVocab::new(&self.models[0]), &ModelVocab::new(&model))
            .with_context(|| format!("draft model {}", path.display()))?;
        self.models.push(model);
        self.draft = Some(self.models.len() - 1);
        Ok(())
    }

    /// Whether a draft model is loaded.
    pub fn has_draft_model(&self) -> bool {
        self.draft.is_some()
    }

    /// A context of the draft model with `lanes` sequences of `ctx_size` tokens each, or
    /// `None` without a draft model.
    ///
    /// It computes on the decoding thread alone. The session's workers already run as many
    /// llama.cpp threads as there are cores; a draft context with threads of its own would
    /// be a second OpenMP team, and OpenMP, managing more threads than there are cores, stops
    /// spinning at its barriers: every pass of the policies then took about 1.6 times as
    /// long (demo recipe, 2 cores: 19 against 31 tokens/s with Gemma 3 270M drafting). A
    /// draft model is small, so one thread costs it little.
    pub fn open_drafter(&self, lanes: usize, ctx_size: u32) -> Result<Option<Drafter<'_>>> {
        let Some(i) = self.draft else { return Ok(None) };
        let LoadedModel { model, .. } = &self.models[i];
        let n_ctx = ctx_size.saturating_mul(lanes as u32);
        let threads = 1;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(CHUNK as u32)
            .with_n_seq_max(lanes as u32)
            .with_swa_full(false)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model
            .new_context(backend()?, params)
            .map_err(|e| anyhow!("cannot create a draft model context of {n_ctx} tokens: {e}"))?;
        Ok(Some(Drafter {
            ctx,
            batch: LlamaBatch::new(CHUNK, 1),
            history: vec![Vec::new(); lanes],
            n_ctx: ctx_size as usize,
            n_vocab: self.n_common,
        }))
    }
}

/// The draft model's context (see the module documentation).
pub struct Drafter<'e> {
    ctx: LlamaContext<'e>,
    batch: LlamaBatch<'e>,
    /// The tokens each lane's sequence holds.
    history: Vec<Vec<u32>>,
    /// Tokens each sequence may hold, and the vocabulary the drafts come from.
    n_ctx: usize,
    n_vocab: usize,
}

impl Drafter<'_> {
    /// Appends to `out` up to `n` tokens the draft model expects after `context` (a lane's
    /// prompt and output so far), greedily. The lane's sequence keeps what it holds of
    /// `context` and decodes only the rest.
    pub fn propose(
        &mut self,
        lane: usize,
        context: &[u32],
        n: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if n == 0 || context.is_empty() || context.len() + n > self.n_ctx {
            return Ok(());
        }
        let seq = lane as i32;
        let history = &mut self.history[lane];
        let common = history.iter().zip(context).take_while(|(a, b)| a == b).count();
        // At least the last token is decoded again, for its logits.
        let keep = common.min(context.len() - 1);
        if keep < history.len() {
            let dropped = self
                .ctx
                .clear_kv_cache_seq(Some(lane as u32), Some(keep as u32), None)
                .map_err(|e| anyhow!("draft model: {e}"))?;
            if !dropped {
                self.ctx.clear_kv_cache_seq(Some(lane as u32), None, None).ok();
                history.clear();
            } else {
                history.truncate(keep);
            }
        }
        let mut next = None;
        for chunk in context[history.len()..].chunks(CHUNK) {
            next = Some(self.decode(seq, chunk, lane)?);
        }
        let Some(mut token) = next else { bail!("draft model: nothing to decode") };
        let start = out.len();
        loop {
            out.push(token);
            if out.len() - start >= n {
                return Ok(());
            }
            token = self.decode(seq, &[token], lane)?;
        }
    }

    /// Decodes `tokens` at the end of the lane's sequence; returns the argmax after the last.
    fn decode(&mut self, seq: i32, tokens: &[u32], lane: usize) -> Result<u32> {
        self.batch.clear();
        let start = self.history[lane].len();
        for (i, &t) in tokens.iter().enumerate() {
            let last = i + 1 == tokens.len();
            self.batch
                .add(LlamaToken(t as i32), (start + i) as i32, &[seq], last)
                .map_err(|e| anyhow!("draft model: {e}"))?;
        }
        self.ctx.decode(&mut self.batch).map_err(|e| anyhow!("draft model decode failed: {e}"))?;
        self.history[lane].extend_from_slice(tokens);
        let logits = self.ctx.get_logits_ith(self.batch.n_tokens() - 1);
        Ok(argmax(&logits[..self.n_vocab.min(logits.len())]))
    }
}
