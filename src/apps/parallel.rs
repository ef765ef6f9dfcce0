//! Several generations at once: up to N requests decode side by side in the lanes of one
//! session (each context decodes one batch per step holding every active lane's token), and a
//! finished lane takes the next request. Each request keeps its own weights, divergence and
//! sampling, so its output is what [`crate::pipeline::decode::generate`] gives it alone.

use crate::pipeline::decode::{Generation, Settings, Stream};
use crate::pipeline::engine::Engine;
use crate::pipeline::recipe::Recipe;
use anyhow::Result;
use llama_cpp_2::token::LlamaToken;
use std::time::Instant;

/// One request: a prompt with its recipe (weights, divergence) and settings.
pub struct Job {
    pub recipe: Recipe,
    pub prompt: String,
    pub settings: Settings,
}

/// Decodes `jobs` with up to `parallel` at a time; `done(index, result)` receives each
/// job's outcome as soon as it finishes (in finishing order). A job that fails (a bad
/// request) reports its error and the others go on; an engine failure, or an error returned
/// by `done`, ends the run. Session-wide settings (threads, context size, strategy) come
/// from the first job.
pub fn run(
    engine: &Engine,
    jobs: Vec<Job>,
    parallel: usize,
    done: &mut dyn FnMut(usize, Result<Generation>) -> Result<()>,
) -> Result<()> {
    // Prepare every request; the policies any of them needs all run in every lane.
    let mut streams: Vec<Option<Stream>> = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        match Stream::new(engine, &job.recipe, &job.prompt, &job.settings) {
            Ok(s) => streams.push(Some(s)),
            Err(e) => {
                done(i, Err(e))?;
                streams.push(None);
            }
        }
    }
    let mut members: Vec<usize> =
        streams.iter().flatten().flat_map(|s| s.members.iter().copied()).collect();
    members.sort_unstable();
    members.dedup();
    let Some(first) = jobs.first() else { return Ok(()) };
    if members.is_empty() {
        return Ok(());
    }
    let lanes = parallel.clamp(1, streams.iter().flatten().count().max(1));
    let mut session = engine.session_lanes(&members, lanes, first.settings.session)?;
    let strategy = session.strategy().name();
    let contexts = session.n_contexts();

    // (job index, stream, slots of its terms in the session) per lane.
    let mut lane_jobs: Vec<Option<(usize, Stream, Vec<usize>)>> =
        (0..lanes).map(|_| None).collect();
    let mut queue = streams.into_iter().enumerate().filter_map(|(i, s)| s.map(|s| (i, s)));
    let mut tokens: Vec<Option<LlamaToken>> = vec![None; lanes];
    loop {
        // Fill free lanes with waiting requests and decode their prompts.
        for (lane, slot) in lane_jobs.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some((i, mut stream)) = queue.next() else { break };
            let started = Instant::now();
            session.prefill_lane(lane, &stream.prompts_for(&members))?;
            stream.prompt_ms = started.elapsed().as_secs_f64() * 1e3;
            stream.started = Instant::now();
            let slots = stream
                .members
                .iter()
                .map(|m| members.iter().position(|x| x == m).expect("a member"))
                .collect();
            *slot = Some((i, stream, slots));
        }
        if lane_jobs.iter().all(Option::is_none) {
            return Ok(());
        }
        // Each lane picks its next token; finished lanes report and free up.
        for lane in 0..lanes {
            tokens[lane] = None;
            let Some((_, stream, slots)) = &mut lane_jobs[lane] else { continue };
            let room = session.has_room_in(lane);
            match stream.advance(slots, |k| session.logits_in(k, lane), room, &mut |_| {}) {
                Some(t) => tokens[lane] = Some(LlamaToken(t as i32)),
                None => {
                    let (i, stream, _) = lane_jobs[lane].take().expect("an active lane");
                    done(i, Ok(stream.finish(strategy, contexts)))?;
                }
            }
        }
        if tokens.iter().any(Option::is_some) {
            let started = Instant::now();
            session.step(&tokens)?;
            let elapsed = started.elapsed().as_secs_f64();
            for (_, stream, _) in lane_jobs.iter_mut().flatten() {
                stream.forward += elapsed;
            }
        }
    }
}
