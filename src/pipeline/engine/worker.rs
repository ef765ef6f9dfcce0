//! A worker thread of a [`super::Session`]: it owns some llama.cpp contexts (groups), and
//! decodes prompts, steps and scores for them on request.
//!
//! A group is one context holding `members × lanes` sequences: sequence `j·lanes + l` is
//! member `j` of the group in lane `l`. Lanes are independent streams (different prompts and
//! tokens); members of a lane receive the same tokens.

use super::rpc::Server;
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

/// How many tokens each sequence of a context of `seqs` sequences may be fed in one step:
/// a step's batch fits one physical batch (an output mix must cover the whole batch).
pub(super) fn tokens_per_step(seqs: usize) -> usize {
    (UBATCH.max(seqs) / seqs.max(1)).max(1)
}

/// A LoRA adapter and the scale a context applies it with.
pub(super) type Lora = (Arc<Mutex<LlamaLoraAdapter>>, f32);

pub(super) enum Job {
    /// Make each member's cache in lane `lane` hold exactly its prompt and fetch the next
    /// logits. With `reuse`, the longest start of the prompt cached in any lane is kept (only
    /// the rest is decoded); without, the lane starts from scratch (the same numbers as a
    /// fresh context).
    /// A member whose prompt is `None` sits the lane out (its cache there is left alone).
    /// Several lanes are prefilled together, their prompts sharing the decode batches.
    Prefill { lanes: Vec<LanePrompts>, logits: Vec<Vec<f32>> },
    /// Feed each (member slot, lane) its tokens, index `slot · lanes + lane` (none: it sits
    /// out this step), after dropping the last `drop` tokens of its cache (drafts that were
    /// not accepted). Logits come back for every token fed, position after position in one
    /// buffer. `mix` holds, same index, the member's coefficient in its lane's output mix
    /// (NaN: the lane takes each member's own logits); a mixed lane's logits go to its first
    /// member with tokens.
    Step { feed: StepBuffers, logits: Vec<Vec<f32>> },
    /// Log-likelihood of each member's (prompt, continuation) in lane 0; clears the caches.
    Score { texts: Vec<(Vec<LlamaToken>, Vec<LlamaToken>)>, logits: Vec<Vec<f32>> },
}

/// A step's buffers, one entry per (member slot, lane), that travel to the worker with the
/// job and back with the reply, so that nothing is allocated per step.
#[derive(Debug, Default)]
pub(super) struct StepBuffers {
    pub tokens: Vec<Vec<LlamaToken>>,
    pub drop: Vec<usize>,
    pub mix: Vec<f32>,
}

impl StepBuffers {
    pub fn new(slots: usize) -> Self {
        Self { tokens: vec![Vec::new(); slots], drop: vec![0; slots], mix: vec![f32::NAN; slots] }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// One lane of a prefill: a prompt per member slot of the worker.
pub(super) struct LanePrompts {
    pub lane: usize,
    pub prompts: Vec<Option<Vec<LlamaToken>>>,
    pub reuse: bool,
}

pub(super) struct Reply {
    /// One buffer per (member slot, lane): index `slot · lanes + lane`.
    pub logits: Vec<Vec<f32>>,
    /// A step's buffers, handed back for the next step (empty for other jobs).
    pub feed: StepBuffers,
    pub scores: Vec<f64>,
    /// For a prefill: how many prompt tokens each member found already cached, lane after
    /// lane (`usize::MAX` for a member that sits the lane out).
    pub reused: Vec<usize>,
    pub result: Result<(), String>,
}

/// What a worker thread decodes: groups of session members, each group one context.
pub(super) struct Plan {
    // Adapters before models: fields drop in order, and an adapter belongs to its model.
    /// For each group, each member's LoRA adapter and scale.
    pub loras_of_group: Vec<Vec<Option<Lora>>>,
    pub model_of_group: Vec<Arc<LlamaModel>>,
    /// For each group, the RPC servers holding its model (checked after every decode: a lost
    /// server's outputs are zeros, not an error of llama.cpp's).
    pub servers_of_group: Vec<Vec<Arc<Server>>>,
    /// For each group, how many members it holds.
    pub group_sizes: Vec<usize>,
    pub lanes: usize,
    pub threads: usize,
    pub ctx_size: u32,
    /// One KV cache for all sequences of a context (see `create_contexts`).
    pub unified: bool,
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
        let mut step_feed = StepBuffers::default();
        let logits = match job {
            Job::Prefill { lanes: fills, mut logits } => {
                let members: usize = groups.iter().map(|g| g.members).sum();
                reused = vec![usize::MAX; fills.len() * members];
                // Every context is served even when one fails (a lost RPC server): the
                // lanes that do not need the failed one stay as they should be.
                for g in &mut groups {
                    let out = &mut logits[slot * lanes..];
                    match prefill(g, &mut batch, &fills, slot, out) {
                        Ok(kept) => {
                            for (i, k) in kept.chunks(g.members).enumerate() {
                                reused[i * members + slot..][..g.members].copy_from_slice(k);
                            }
                        }
                        Err(e) => result = result.and(Err(e)),
                    }
                    slot += g.members;
                }
                logits
            }
            Job::Step { feed, mut logits } => {
                for g in &mut groups {
                    let range = slot * lanes..(slot + g.members) * lanes;
                    let group_feed = Feed {
                        tokens: &feed.tokens[range.clone()],
                        drop: &feed.drop[range.clone()],
                        mix: &feed.mix[range.clone()],
                    };
                    result = result.and(step(g, &mut batch, &group_feed, &mut logits[range]));
                    slot += g.members;
                }
                step_feed = feed;
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
        let reply = Reply { logits, feed: step_feed, scores, reused, result };
        if replies.send(reply).is_err() {
            return;
        }
    }
}

/// A context and, for each of its sequences, the tokens in its KV cache.
struct GroupContext<'m> {
    ctx: LlamaContext<'m>,
    servers: &'m [Arc<Server>],
    members: usize,
    lanes: usize,
    history: Vec<Vec<LlamaToken>>,
    /// Scratch of a mixed step: each sequence's first batch index, the mix rows (one per
    /// position of a mixed lane, or per position of each member of an unmixed lane) and the
    /// buffer each row's logits go to.
    index: Vec<usize>,
    rows: Vec<f32>,
    targets: Vec<usize>,
}

/// What a step feeds one group: per sequence the tokens, how many cached tokens to drop
/// first, and the output-mix coefficient (see [`Job::Step`]).
struct Feed<'a> {
    tokens: &'a [Vec<LlamaToken>],
    drop: &'a [usize],
    mix: &'a [f32],
}

fn create_contexts(plan: &Plan) -> Result<Vec<GroupContext<'_>>, String> {
    let backend = super::backend().map_err(|e| e.to_string())?;
    let threads = i32::try_from(plan.threads).unwrap_or(i32::MAX);
    let _one_at_a_time = CONTEXT_CREATION.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    plan.model_of_group
        .iter()
        .zip(&plan.group_sizes)
        .zip(&plan.loras_of_group)
        .zip(&plan.servers_of_group)
        .map(|(((model, &members), loras), servers)| {
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
                // An output mix must cover the whole batch in one pass; with a cache per
                // sequence llama.cpp splits a batch wherever its sequence ids are not
                // consecutive (idle lanes), so mixing contexts keep one cache for all their
                // sequences. Others keep a cache per sequence: the same numbers as a plain
                // context of their own.
                .with_kv_unified(plan.unified && seqs > 1)
                .with_n_threads(threads)
                .with_n_threads_batch(threads);
            let mut ctx = model.new_context(backend, params).map_err(|e| {
                check_servers(servers).err().unwrap_or_else(|| {
                    format!(
                        "cannot create a llama.cpp context of {n_ctx} tokens ({seqs} sequence(s) \
                         of {} tokens): {e}; lower the context size, the requests decoded at \
                         once or the policies",
                        plan.ctx_size
                    )
                })
            })?;
            set_adapters(&mut ctx, loras, plan.lanes)
                .map_err(|e| format!("cannot apply LoRA adapters to a context: {e}"))?;
            Ok(GroupContext {
                ctx,
                servers,
                members,
                lanes: plan.lanes,
                history: vec![Vec::new(); seqs],
                index: vec![0; seqs],
                rows: Vec::new(),
                targets: Vec::with_capacity(seqs),
            })
        })
        .collect()
}

/// Applies the members' LoRA adapters: one adapter for the whole context where every member
/// has the same (llama.cpp's own path), else each adapter scaled per sequence — sequence
/// `j · lanes + l` gets member `j`'s scale of its own adapter and 0 of the others.
fn set_adapters(
    ctx: &mut LlamaContext<'_>,
    loras: &[Option<Lora>],
    lanes: usize,
) -> Result<(), llama_cpp_2::LlamaLoraAdapterSetError> {
    let same = |a: &Option<Lora>, b: &Option<Lora>| match (a, b) {
        (None, None) => true,
        (Some((x, s)), Some((y, t))) => Arc::ptr_eq(x, y) && s == t,
        _ => false,
    };
    if loras.windows(2).all(|w| same(&w[0], &w[1])) {
        if let Some(Some((adapter, scale))) = loras.first() {
            let mut adapter = adapter.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            ctx.lora_adapter_set(&mut adapter, *scale)?;
        }
        return Ok(());
    }
    let mut distinct: Vec<&Arc<Mutex<LlamaLoraAdapter>>> = Vec::new();
    for (adapter, _) in loras.iter().flatten() {
        if !distinct.iter().any(|d| Arc::ptr_eq(d, adapter)) {
            distinct.push(adapter);
        }
    }
    let n_seq = loras.len() * lanes;
    let mut scales = vec![0f32; distinct.len() * n_seq];
    for (j, lora) in loras.iter().enumerate() {
        let Some((adapter, scale)) = lora else { continue };
        let Some(i) = distinct.iter().position(|d| Arc::ptr_eq(d, adapter)) else { continue };
        for l in 0..lanes {
            scales[i * n_seq + j * lanes + l] = *scale;
        }
    }
    let mut guards: Vec<_> = distinct
        .iter()
        .map(|a| a.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
        .collect();
    let mut adapters: Vec<&mut LlamaLoraAdapter> = guards.iter_mut().map(|g| &mut **g).collect();
    ctx.lora_adapters_set_per_sequence(&mut adapters, &scales, n_seq)
}

/// Makes the members' caches in each lane of `fills` hold their prompts (the group's members
/// are the fills' prompts from index `first`), decoding what is not cached packed into
/// batches of up to PREFILL_CHUNK tokens, all lanes together; copies each member's
/// last-token logits into `out[j · lanes + lane]`. With `reuse`, a member keeps the longest
/// start of its prompt that the context holds for it (see [`reuse_prefix`]). Returns the
/// tokens reused per (lane, member), lane after lane.
fn prefill(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    fills: &[LanePrompts],
    first: usize,
    out: &mut [Vec<f32>],
) -> Result<Vec<usize>, String> {
    let lanes = g.lanes;
    let mut kept = Vec::with_capacity(fills.len() * g.members);
    for f in fills {
        for (j, prompt) in f.prompts[first..first + g.members].iter().enumerate() {
            let Some(prompt) = prompt else {
                kept.push(usize::MAX);
                continue;
            };
            let keep = if f.reuse {
                reuse_prefix(g, j, f.lane, prompt)?
            } else {
                clear_sequence(g, j * lanes + f.lane)?;
                0
            };
            kept.push(keep);
        }
    }
    // (output buffer, batch index) of last tokens in the pending batch.
    let mut wanted: Vec<(usize, i32)> = Vec::new();
    batch.clear();
    for (i, f) in fills.iter().enumerate() {
        for (j, prompt) in f.prompts[first..first + g.members].iter().enumerate() {
            let Some(prompt) = prompt else { continue };
            let seq = j * lanes + f.lane;
            for (p, &t) in prompt.iter().enumerate().skip(kept[i * g.members + j]) {
                let last = p + 1 == prompt.len();
                if last {
                    wanted.push((seq, batch.n_tokens()));
                }
                batch.add(t, p as i32, &[seq as i32], last).map_err(|e| e.to_string())?;
                if batch.n_tokens() as usize == PREFILL_CHUNK {
                    decode_and_copy(g, batch, &mut wanted, out)?;
                }
            }
            g.history[seq] = prompt.clone();
        }
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
            // The lane's own cells go first (in a cache shared by all sequences a copy adds
            // the other lane's cells to this sequence, it does not replace them); then the
            // whole other sequence is copied, and its tail dropped below.
            clear_sequence(g, seq)?;
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
    let decoded = g.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"));
    check_servers(g.servers)?;
    decoded?;
    for &(o, i) in wanted.iter() {
        out[o].clear();
        out[o].extend_from_slice(g.ctx.get_logits_ith(i));
    }
    wanted.clear();
    batch.clear();
    Ok(())
}

/// Drops the last `feed.drop[seq]` tokens of each sequence's cache, then feeds each
/// (member j, lane l) of the group its tokens `feed.tokens[j · lanes + l]`, all in one batch,
/// and copies the logits of every position into `out[j · lanes + l]`, one after another.
/// Lanes with mix coefficients (not NaN) get, per position, one row of logits: the output
/// layer applied to the coefficient-weighted sum of their members' hidden states, in their
/// first member's buffer.
fn step(
    g: &mut GroupContext<'_>,
    batch: &mut LlamaBatch,
    feed: &Feed<'_>,
    out: &mut [Vec<f32>],
) -> Result<(), String> {
    batch.clear();
    let mut mixing = false;
    for seq in 0..g.members * g.lanes {
        let drop = feed.drop[seq].min(g.history[seq].len());
        if drop > 0 {
            let keep = g.history[seq].len() - drop;
            let removed = g
                .ctx
                .clear_kv_cache_seq(Some(seq as u32), Some(keep as u32), None)
                .map_err(|e| e.to_string())?;
            if !removed {
                return Err("llama.cpp could not drop rejected draft tokens".into());
            }
            g.history[seq].truncate(keep);
        }
    }
    for j in 0..g.members {
        for l in 0..g.lanes {
            let seq = j * g.lanes + l;
            let tokens = &feed.tokens[seq];
            if tokens.is_empty() {
                continue;
            }
            mixing |= !feed.mix[seq].is_nan();
            g.index[seq] = batch.n_tokens() as usize;
            for &token in tokens {
                let pos = g.history[seq].len() as i32;
                batch.add(token, pos, &[seq as i32], true).map_err(|e| e.to_string())?;
                g.history[seq].push(token);
            }
        }
    }
    if batch.n_tokens() == 0 {
        return Ok(());
    }
    if !mixing {
        let decoded = g.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"));
        check_servers(g.servers)?;
        decoded?;
        for (seq, tokens) in feed.tokens.iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            out[seq].clear();
            for i in 0..tokens.len() {
                out[seq].extend_from_slice(g.ctx.get_logits_ith((g.index[seq] + i) as i32));
            }
        }
        batch.clear();
        return Ok(());
    }
    // Per position, one row per mixed lane (its members' coefficients at their tokens of
    // that position), one per member of an unmixed lane (weight 1 at its own token).
    let n = batch.n_tokens() as usize;
    g.rows.clear();
    g.targets.clear();
    let (members, lanes) = (g.members, g.lanes);
    for l in 0..lanes {
        let seqs = move || (0..members).map(move |j| j * lanes + l);
        let positions = seqs().map(|seq| feed.tokens[seq].len()).max().unwrap_or(0);
        for i in 0..positions {
            let mut first = None;
            for seq in seqs().filter(|&seq| i < feed.tokens[seq].len()) {
                if feed.mix[seq].is_nan() {
                    g.targets.push(seq);
                    g.rows.extend(std::iter::repeat_n(0.0, n));
                    let row = g.rows.len() - n;
                    g.rows[row + g.index[seq] + i] = 1.0;
                    continue;
                }
                let row = *first.get_or_insert_with(|| {
                    g.targets.push(seq);
                    g.rows.extend(std::iter::repeat_n(0.0, n));
                    g.rows.len() - n
                });
                g.rows[row + g.index[seq] + i] = feed.mix[seq];
            }
        }
    }
    let k = g.targets.len();
    g.ctx.set_output_mix(&g.rows, k, n).map_err(|e| format!("llama.cpp output mix: {e}"))?;
    let decoded = g.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"));
    let mut result = check_servers(g.servers).and(decoded);
    if result.is_ok() {
        for &target in &g.targets {
            out[target].clear();
        }
        for (row, &target) in g.targets.iter().enumerate() {
            match g.ctx.get_logits_mix(row as i32) {
                Some(logits) => out[target].extend_from_slice(logits),
                None => result = Err("llama.cpp gave no mixed logits".to_string()),
            }
        }
    }
    g.ctx.clear_output_mix();
    batch.clear();
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
        let decoded = g.ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"));
        check_servers(g.servers)?;
        decoded?;
        for (i, next) in wanted {
            let logits = g.ctx.get_logits_ith(i);
            let lse = crate::pipeline::combine::logsumexp(logits);
            total += f64::from(logits[next.0 as usize]) - lse;
        }
    }
    Ok(total)
}

/// An error when an RPC server of the context was lost: its outputs are then zeros, and
/// llama.cpp's decode may still have reported success.
fn check_servers(servers: &[Arc<Server>]) -> Result<(), String> {
    match servers.iter().find_map(|s| Some((s, s.failure()?))) {
        Some((server, why)) => Err(format!("RPC server {} was lost: {why}", server.endpoint())),
        None => Ok(()),
    }
}
