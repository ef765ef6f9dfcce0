//! A worker thread of a [`super::Session`]: it owns some llama.cpp contexts (groups), and
//! decodes prompts, steps and scores for them on request.
//!
//! A group is one context holding `members × lanes` sequences: sequence `j·lanes + l` is
//! member `j` of the group in lane `l`. Lanes are independent streams (different prompts and
//! tokens); members of a lane receive the same tokens.

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Prompt tokens are decoded in chunks of at most this many.
pub(super) const PREFILL_CHUNK: usize = 512;
/// llama.cpp's physical batch: smaller than the chunk to keep each context's compute buffer
/// and sliding-window cache small (it costs little prompt speed on a CPU).
const UBATCH: usize = 256;

/// llama.cpp contexts must be created one at a time.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

/// A LoRA adapter and the scale a context applies it with.
pub(super) type Lora = (Arc<Mutex<LlamaLoraAdapter>>, f32);

pub(super) enum Job {
    /// Make each member's cache in lane `lane` hold exactly its prompt and fetch the next
    /// logits. With `reuse`, the longest start of the prompt cached in any lane is kept (only
    /// the rest is decoded); without, the lane starts from scratch (the same numbers as a
    /// fresh context).
    /// A member whose prompt is `None` sits the lane out (its cache there is left alone).
    Prefill {
        lane: usize,
        prompts: Vec<Option<Vec<LlamaToken>>>,
        reuse: bool,
        logits: Vec<Vec<f32>>,
    },
    /// Feed each (member slot, lane) its token, index `slot · lanes + lane` (`None`: it sits
    /// out this step).
    Step { tokens: Vec<Option<LlamaToken>>, logits: Vec<Vec<f32>> },
    /// Log-likelihood of each member's (prompt, continuation) in lane 0; clears the caches.
    Score { texts: Vec<(Vec<LlamaToken>, Vec<LlamaToken>)>, logits: Vec<Vec<f32>> },
}

pub(super) struct Reply {
    /// One buffer per (member slot, lane): index `slot · lanes + lane`.
    pub logits: Vec<Vec<f32>>,
    /// A step's token buffer, handed back for the next step (empty for other jobs).
    pub tokens: Vec<Option<LlamaToken>>,
    pub scores: Vec<f64>,
    /// For a prefill: how many prompt tokens each member found already cached.
    pub reused: Vec<usize>,
    pub result: Result<(), String>,
}

/// What a worker thread decodes: groups of session members, each group one context.
pub(super) struct Plan {
    // Adapters before models: fields drop in order, and an adapter belongs to its model.
    pub lora_of_group: Vec<Option<Lora>>,
    pub model_of_group: Vec<Arc<LlamaModel>>,
    /// For each group, how many members it holds.
    pub group_sizes: Vec<usize>,
    pub lanes: usize,
    pub threads: usize,
    pub ctx_size: u32,
}

/// The thread body: creates the contexts (one at a time, process-wide), signals `ready`,
/// then serves jobs until the session drops its sender.
pub(super) fn run(
    plan: Plan,
    jobs: Receiver<Job>,
    replies: Sender<Reply>,
    ready: Sender<Result<(), String>>,
) {
    let mut groups = match create_contexts(&plan) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let max_seqs = plan.group_sizes.iter().copied().max().unwrap_or(1) * plan.lanes;
    let mut batch = LlamaBatch::new(PREFILL_CHUNK.max(max_seqs), 1);
    if ready.send(Ok(())).is_err() {
        return;
    }
    let lanes = plan.lanes;
    while let Ok(job) = jobs.recv() {
        let mut scores = Vec::new();
        let mut reused = Vec::new();
        let mut result = Ok(());
        let mut slot = 0;
        let mut step_tokens = Vec::new();
        let logits = match job {
            Job::Prefill { lane, prompts, reuse, mut logits } => {
                for g in &mut groups {
                    let n = g.members;
                    let prompts = &prompts[slot..slot + n];
                    let out = &mut logits[slot * lanes..];
                    match prefill(g, &mut batch, lane, prompts, reuse, out) {
                        Ok(kept) => reused.extend(kept),
                        Err(e) => result = Err(e),
                    }
                    slot += n;
                    if result.is_err() {
                        break;
                    }
                }
                logits
            }
            Job::Step { tokens, mut logits } => {
                for g in &mut groups {
                    let range = slot * lanes..(slot + g.members) * lanes;
                    result = step(g, &mut batch, &tokens[range.clone()], &mut logits[range]);
                    slot += g.members;
                    if result.is_err() {
                        break;
                    }
                }
                step_tokens = tokens;
                logits
            }
            Job::Score { texts, logits } => {
                for g in &mut groups {
                    for j in 0..g.members {
                        let (prompt, cont) = &texts[slot + j];
                        match score(g, &mut batch, j * lanes, prompt, cont) {
                            Ok(v) => scores.push(v),
                            Err(e) => result = Err(e),
                        }
                    }
                    slot += g.members;
                    if result.is_err() {
                        break;
                    }
                }
                logits
            }
        };
        let reply = Reply { logits, tokens: step_tokens, scores, reused, result };
        if replies.send(reply).is_err() {
            return;
        }
    }
}

/// A context and, for each of its sequences, the tokens in its KV cache.
struct GroupContext<'m> {
    ctx: LlamaContext<'m>,
    members: usize,
    lanes: usize,
    history: Vec<Vec<LlamaToken>>,
    /// Scratch: (output buffer, batch index) of the logits a step reads.
    wanted: Vec<(usize, i32)>,
}

fn create_contexts(plan: &Plan) -> Result<Vec<GroupContext<'_>>, String> {
    let backend = super::backend().map_err(|e| e.to_string())?;
    let threads = i32::try_from(plan.threads).unwrap_or(i32::MAX);
    let _one_at_a_time = CONTEXT_CREATION.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    plan.model_of_group
        .iter()
        .zip(&plan.group_sizes)
        .zip(&plan.lora_of_group)
        .map(|((model, &members), lora)| {
            let seqs = members * plan.lanes;
            // Each sequence gets ctx_size tokens of the context's cache.
            let n_ctx = plan.ctx_size.saturating_mul(seqs as u32);
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(n_ctx))
                .with_n_batch(PREFILL_CHUNK.max(seqs) as u32)
                .with_n_ubatch(UBATCH.max(seqs) as u32)
                .with_n_seq_max(seqs as u32)
                // Sliding-window layers keep only their window (Gemma 3: 5 of every 6
                // layers); sessions never roll tokens back, which is what a full cache allows.
                .with_swa_full(false)
                .with_n_threads(threads)
                .with_n_threads_batch(threads);
            let mut ctx = model
                .new_context(backend, params)
                .map_err(|e| format!("cannot create a llama.cpp context of {n_ctx} tokens: {e}"))?;
            if let Some((adapter, scale)) = lora {
                let mut adapter = adapter.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                ctx.lora_adapter_set(&mut adapter, *scale)
                    .map_err(|e| format!("cannot apply a LoRA adapter to a context: {e}"))?;
            }
            Ok(GroupContext {
                ctx,
                members,
                lanes: plan.lanes,
                history: vec![Vec::new(); seqs],
                wanted: Vec::with_capacity(seqs),
            })
        })
        .collect()
}

/// Makes the members' caches in `lane` hold their prompts, decoding what is not cached packed
/// into batches of up to PREFILL_CHUNK tokens; copies each member's last-token logits into
/// `out[j · lanes + lane]`. With `reuse`, each member keeps the longest start of its prompt that
/// the context holds for it (see [`reuse_prefix`]). Returns the tokens reused per member.
fn prefill(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    lane: usize,
    prompts: &[Option<Vec<LlamaToken>>],
    reuse: bool,
    out: &mut [Vec<f32>],
) -> Result<Vec<usize>, String> {
    let lanes = g.lanes;
    let mut kept = Vec::with_capacity(prompts.len());
    for (j, prompt) in prompts.iter().enumerate() {
        let Some(prompt) = prompt else {
            kept.push(usize::MAX);
            continue;
        };
        let keep = if reuse {
            reuse_prefix(g, j, lane, prompt)?
        } else {
            clear_sequence(g, j * lanes + lane)?;
            0
        };
        kept.push(keep);
    }
    // (output buffer, batch index) of last tokens in the pending batch.
    let mut wanted: Vec<(usize, i32)> = Vec::new();
    batch.clear();
    for (j, prompt) in prompts.iter().enumerate() {
        let Some(prompt) = prompt else { continue };
        let seq = j * lanes + lane;
        for (i, &t) in prompt.iter().enumerate().skip(kept[j]) {
            let last = i + 1 == prompt.len();
            if last {
                wanted.push((seq, batch.n_tokens()));
            }
            batch.add(t, i as i32, &[seq as i32], last).map_err(|e| e.to_string())?;
            if batch.n_tokens() as usize == PREFILL_CHUNK {
                decode_and_copy(g, batch, &mut wanted, out)?;
            }
        }
        g.history[seq] = prompt.clone();
    }
    if batch.n_tokens() > 0 {
        decode_and_copy(g, batch, &mut wanted, out)?;
    }
    Ok(kept)
}

/// Below this many more shared tokens, a prefix is decoded again rather than copied from
/// another lane (a copy moves the lane's whole cache buffer).
const MIN_COPIED_PREFIX: usize = 4;

/// Leaves in member `j`'s sequence of `lane` the longest start of `prompt` that the context
/// holds for member `j` in any lane: its own cache trimmed, or another lane's cache copied
/// and trimmed (prompted experts and system prompts share their prefix across prompts). At
/// least the last prompt token is left to decode, for its logits. Returns the tokens kept
/// (0: the sequence was cleared).
fn reuse_prefix(
    g: &mut GroupContext<'_>,
    j: usize,
    lane: usize,
    prompt: &[LlamaToken],
) -> Result<usize, String> {
    let lanes = g.lanes;
    let seq = j * lanes + lane;
    let common = |h: &[LlamaToken]| {
        h.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1)
    };
    let own = common(&g.history[seq]);
    let best = (0..lanes)
        .map(|l| (common(&g.history[j * lanes + l]), l))
        .filter(|&(n, l)| l != lane && n >= own + MIN_COPIED_PREFIX)
        .max();
    let keep = match best {
        Some((n, l)) => {
            // A whole-sequence copy between the context's per-sequence caches (llama.cpp
            // copies the buffers at the next decode), then the tail is dropped below.
            g.ctx
                .copy_kv_cache_seq((j * lanes + l) as i32, seq as i32, None, None)
                .map_err(|e| e.to_string())?;
            n
        }
        None => own,
    };
    let trimmed = keep > 0
        && g.ctx.clear_kv_cache_seq(Some(seq as u32), Some(keep as u32), None).map_err(|e| e.to_string())?
        // A sliding-window layer forgets tokens that fell out of its window: what is kept
        // must still start at position 0, or the prefix is decoded again.
        && g.ctx.kv_cache_seq_pos_min(seq as i32) == 0;
    if !trimmed {
        clear_sequence(g, seq)?;
        return Ok(0);
    }
    g.history[seq].clear();
    g.history[seq].extend_from_slice(&prompt[..keep]);
    Ok(keep)
}

fn clear_sequence(g: &mut GroupContext<'_>, seq: usize) -> Result<(), String> {
    g.ctx.clear_kv_cache_seq(Some(seq as u32), None, None).map_err(|e| e.to_string())?;
    g.history[seq].clear();
    Ok(())
}

fn decode_and_copy(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    wanted: &mut Vec<(usize, i32)>,
    out: &mut [Vec<f32>],
) -> Result<(), String> {
    g.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"))?;
    for &(o, i) in wanted.iter() {
        out[o].clear();
        out[o].extend_from_slice(g.ctx.get_logits_ith(i));
    }
    wanted.clear();
    batch.clear();
    Ok(())
}

/// Feeds each (member j, lane l) of the group its token `tokens[j · lanes + l]`, all in one
/// batch, and copies the logits into `out[j · lanes + l]`.
fn step(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    tokens: &[Option<LlamaToken>],
    out: &mut [Vec<f32>],
) -> Result<(), String> {
    batch.clear();
    // The list of logits to copy is reused from step to step: no allocation per step.
    let mut wanted = std::mem::take(&mut g.wanted);
    wanted.clear();
    for j in 0..g.members {
        for l in 0..g.lanes {
            let seq = j * g.lanes + l;
            let Some(token) = tokens[seq] else { continue };
            wanted.push((seq, batch.n_tokens()));
            let pos = g.history[seq].len() as i32;
            batch.add(token, pos, &[seq as i32], true).map_err(|e| e.to_string())?;
            g.history[seq].push(token);
        }
    }
    let result =
        if wanted.is_empty() { Ok(()) } else { decode_and_copy(g, batch, &mut wanted, out) };
    g.wanted = wanted;
    result
}

/// Log-likelihood of `cont` after `prompt` in sequence `seq`: one pass over both (in
/// chunks), logits only where a continuation token is predicted.
fn score(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    seq: usize,
    prompt: &[LlamaToken],
    cont: &[LlamaToken],
) -> Result<f64, String> {
    g.ctx.clear_kv_cache();
    g.history.iter_mut().for_each(Vec::clear);
    let all: Vec<LlamaToken> = prompt.iter().chain(cont).copied().collect();
    let first_predicting = prompt.len() - 1;
    let mut total = 0.0;
    for (c, chunk) in all.chunks(PREFILL_CHUNK).enumerate() {
        let start = c * PREFILL_CHUNK;
        batch.clear();
        let mut wanted = Vec::new();
        for (i, &t) in chunk.iter().enumerate() {
            let pos = start + i;
            let want = pos >= first_predicting && pos + 1 < all.len();
            if want {
                wanted.push((batch.n_tokens(), all[pos + 1]));
            }
            batch.add(t, pos as i32, &[seq as i32], want).map_err(|e| e.to_string())?;
        }
        g.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"))?;
        for (i, next) in wanted {
            let logits = g.ctx.get_logits_ith(i);
            let lse = crate::pipeline::combine::logsumexp(logits);
            total += f64::from(logits[next.0 as usize]) - lse;
        }
    }
    Ok(total)
}
