//! [`Session`]: the llama.cpp contexts of a [`super::Mood`] and the decoding loop on them,
//! kept from one call to the next.

use super::params::Params;
use super::steps::Steps;
use crate::apps::score::{Response, Scorer, Scores};
use crate::error::{Error, Result};
use crate::pipeline::decode::{Decoder, Event, Flow, Generation, Request};
use crate::pipeline::engine::chat::Message;
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::Recipe;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

self_cell::self_cell!(
    /// A decoder and the engine it borrows, held together.
    struct OwnedDecoder {
        owner: Arc<Engine>,
        #[not_covariant]
        dependent: Decoder,
    }
);

/// Stops a session's generation from anywhere (another thread, a signal handler's flag
/// watcher). Cheap to clone.
///
/// A cancellation ends the generation running now at its next token; one made while none
/// runs ends the next one at its first token. The call then returns
/// [`Error::Cancelled`] with what was generated.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Takes a pending cancellation.
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// A piece of a generation as it streams: the token and the text that became printable
/// with it (often empty: a character or a possible stop string is incomplete; `token` is
/// `None` for text held back until the end).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub token: Option<u32>,
    pub text: String,
}

/// A recipe's policies in llama.cpp contexts, with the decoding loop. Contexts open with the
/// first call and keep their caches: a call whose prompt starts with what an earlier one
/// decoded (a conversation) decodes only the rest.
pub struct Session {
    engine: Arc<Engine>,
    recipe: Recipe,
    options: SessionOptions,
    decoder: Option<OwnedDecoder>,
    lanes: usize,
    cancel: CancelHandle,
    /// A generation begun with [`Session::begin`] and not yet ended.
    current: Option<Current>,
}

impl Session {
    pub(super) fn new(engine: Arc<Engine>, recipe: Recipe, options: SessionOptions) -> Self {
        Self {
            engine,
            recipe,
            options,
            decoder: None,
            lanes: 0,
            cancel: CancelHandle::default(),
            current: None,
        }
    }

    /// A handle that cancels this session's generations.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Decodes `prompt` (after each policy's prefix) with MOD.
    pub fn generate(&mut self, prompt: &str, params: &Params) -> Result<Generation> {
        self.generate_streaming(prompt, params, |_| Flow::Continue)
    }

    /// As [`Session::generate`], telling `on_chunk` each piece as it is decoded; returning
    /// [`Flow::Stop`] ends the generation there (finish reason `cancelled`, no error).
    pub fn generate_streaming(
        &mut self,
        prompt: &str,
        params: &Params,
        mut on_chunk: impl FnMut(&Chunk) -> Flow,
    ) -> Result<Generation> {
        self.abandon();
        let request = self.completion(prompt, params).map_err(Error::from_chain)?;
        self.run_one(request, &mut on_chunk)
    }

    /// Iterates over the pieces of a generation as it is decoded; [`Chunks::finish`] gives
    /// the generation.
    pub fn stream(&mut self, prompt: &str, params: &Params) -> Result<Chunks<'_>> {
        self.begin(prompt, params)?;
        Ok(Chunks { session: self, ended: false })
    }

    /// Replies to a conversation: each policy renders `messages` with its chat template and
    /// system prompt (the recipe's `template`, else the model's own, else a plain
    /// transcript) and MOD decodes the reply. The caches keep the conversation, so the next
    /// turn decodes only what is new.
    pub fn chat(&mut self, messages: &[Message], params: &Params) -> Result<Generation> {
        let request = (|| {
            let template = "auto";
            let mut settings = params.settings.clone();
            if self.engine.uses_transcript(template) {
                settings.stops.push(crate::pipeline::engine::chat::TRANSCRIPT_STOP.into());
            }
            anyhow::Ok(Request::new(
                params.recipe(&self.recipe)?,
                settings,
                self.engine.chat_tokens(messages, template, None)?,
                true,
            ))
        })()
        .map_err(Error::from_chain)?;
        self.run_one(request, &mut |_| Flow::Continue)
    }

    /// Decodes `prompts` side by side on up to `lanes` lanes (one request per lane per
    /// step, sharing every forward pass); results in prompt order, each prompt's error its
    /// own.
    pub fn generate_many(
        &mut self,
        prompts: &[&str],
        params: &Params,
        lanes: usize,
    ) -> Vec<Result<Generation>> {
        self.abandon();
        let mut out: Vec<Option<Result<Generation>>> = (0..prompts.len()).map(|_| None).collect();
        let lanes = lanes.clamp(1, prompts.len().max(1));
        let cancel = self.cancel.clone();
        let recipe = self.recipe.clone();
        let decoder = self.decoder_with(lanes);
        decoder.with_dependent_mut(|engine, decoder| {
            for (i, prompt) in prompts.iter().enumerate() {
                let submitted = completion(engine, &recipe, prompt, params)
                    .and_then(|r| decoder.submit(i as u64, r));
                if let Err(e) = submitted {
                    out[i] = Some(Err(Error::from_chain(e)));
                }
            }
            let result = decoder.run(&mut |tag, event| {
                match event {
                    Event::Done(g) => out[tag as usize] = Some(Ok(*g)),
                    Event::Failed(e) => out[tag as usize] = Some(Err(Error::from_chain(e))),
                    Event::Token { .. } | Event::Text(_) => {
                        if cancel.take() {
                            return Ok(Flow::Stop);
                        }
                    }
                }
                Ok(Flow::Continue)
            });
            if let Err(e) = result {
                let message = format!("{e:#}");
                for slot in out.iter_mut().filter(|s| s.is_none()) {
                    *slot = Some(Err(Error::Engine { message: message.clone() }));
                }
            }
        });
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::Engine { message: "no result".into() })))
            .collect()
    }

    /// Each policy's log-likelihood of `response` after `prompt`, and each expert's implicit
    /// reward `beta · (log π_i − log π_ref)` (the recipe needs a reference).
    pub fn score(&mut self, prompt: &str, response: &str, beta: f64) -> Result<Scores> {
        let mut scorer = Scorer::new(&self.engine, &self.recipe, beta, self.options)
            .map_err(Error::from_chain)?;
        scorer.score(prompt, Response::Text(response)).map_err(Error::from_chain)
    }

    /// Step-by-step decoding in the caller's hands: each policy's next-token
    /// log-probabilities at every step, and the token the caller chooses (see [`Steps`]).
    pub fn steps(&mut self, prompt: &str, max_tokens: usize) -> Result<Steps> {
        // The decoder's contexts are not needed meanwhile: their memory goes back first.
        self.abandon();
        self.decoder = None;
        Steps::start(Arc::clone(&self.engine), prompt, max_tokens, self.options)
            .map_err(Error::from_chain)
    }

    /// The request of a completion.
    fn completion(&self, prompt: &str, params: &Params) -> anyhow::Result<Request> {
        completion(&self.engine, &self.recipe, prompt, params)
    }

    /// The decoder, with at least `lanes` lanes.
    fn decoder_with(&mut self, lanes: usize) -> &mut OwnedDecoder {
        if self.decoder.is_none() || self.lanes < lanes {
            let options = self.options;
            self.decoder = None;
            self.decoder = Some(OwnedDecoder::new(Arc::clone(&self.engine), |engine| {
                Decoder::new(engine, lanes, options)
            }));
            self.lanes = lanes;
        }
        self.decoder.as_mut().expect("a decoder was just made")
    }

    fn submit_one(&mut self, request: Request) -> Result<()> {
        // A generation begun and left behind would hold the lane.
        if self.current.is_some() {
            self.abandon();
        }
        self.decoder_with(1)
            .with_dependent_mut(|_, d| d.submit(0, request))
            .map_err(Error::from_chain)
    }

    /// Runs one request to its end, streaming its pieces.
    fn run_one(
        &mut self,
        request: Request,
        on_chunk: &mut dyn FnMut(&Chunk) -> Flow,
    ) -> Result<Generation> {
        self.submit_one(request)?;
        let cancel = self.cancel.clone();
        let mut outcome = None;
        let mut cancelled = false;
        let result = self.decoder_with(1).with_dependent_mut(|_, decoder| {
            decoder.run(&mut |_, event| {
                let flow = match event {
                    Event::Token { token, text, .. } => {
                        let flow = on_chunk(&Chunk { token: Some(token), text: text.into() });
                        if cancel.take() {
                            cancelled = true;
                            return Ok(Flow::Stop);
                        }
                        flow
                    }
                    Event::Text(text) => on_chunk(&Chunk { token: None, text: text.into() }),
                    Event::Done(g) => {
                        outcome = Some(Ok(*g));
                        Flow::Continue
                    }
                    Event::Failed(e) => {
                        outcome = Some(Err(Error::from_chain(e)));
                        Flow::Continue
                    }
                };
                Ok(flow)
            })
        });
        result.map_err(Error::from_chain)?;
        finish(outcome, cancelled)
    }
}

/// The outcome of a request: a cancelled generation is an error carrying what was decoded.
fn finish(outcome: Option<Result<Generation>>, cancelled: bool) -> Result<Generation> {
    match outcome {
        Some(Ok(g)) if cancelled => Err(Error::Cancelled { partial: Box::new(g) }),
        Some(result) => result,
        None => Err(Error::Engine { message: "the generation produced no result".into() }),
    }
}

/// The request of a completion of `prompt` with `params` on top of `recipe`.
fn completion(
    engine: &Engine,
    recipe: &Recipe,
    prompt: &str,
    params: &Params,
) -> anyhow::Result<Request> {
    Ok(Request::new(
        params.recipe(recipe)?,
        params.settings.clone(),
        engine.prompt_tokens(prompt)?,
        false,
    ))
}

/// A generation begun and not yet handed out (see [`Session::begin`]).
#[derive(Default)]
struct Current {
    pending: VecDeque<Chunk>,
    outcome: Option<Result<Generation>>,
    cancelled: bool,
}

impl Session {
    /// Begins a generation that [`Session::next_chunk`] decodes piece by piece and
    /// [`Session::end`] finishes: [`Session::stream`] without a borrow, for a binding that
    /// holds the session in an object of its own. A generation begun earlier and not ended
    /// is cancelled first.
    pub fn begin(&mut self, prompt: &str, params: &Params) -> Result<()> {
        self.abandon();
        let request = self.completion(prompt, params).map_err(Error::from_chain)?;
        self.submit_one(request)?;
        self.current = Some(Current::default());
        Ok(())
    }

    /// The next piece of the generation begun with [`Session::begin`]; `None` once it has
    /// ended (or when none was begun).
    pub fn next_chunk(&mut self) -> Option<Chunk> {
        loop {
            let current = self.current.as_mut()?;
            if let Some(chunk) = current.pending.pop_front() {
                return Some(chunk);
            }
            if !self.step_current() {
                return self.current.as_mut()?.pending.pop_front();
            }
        }
    }

    /// Decodes what is left of the generation begun with [`Session::begin`] and returns it.
    pub fn end(&mut self) -> Result<Generation> {
        while self.step_current() {}
        let current = self.current.take().unwrap_or_default();
        match current.outcome {
            None => Err(Error::Engine { message: "no generation was begun".into() }),
            outcome => finish(outcome, current.cancelled),
        }
    }

    /// Cancels a generation begun with [`Session::begin`] and not ended, freeing its lane
    /// (nothing happens when there is none).
    pub fn stop(&mut self) {
        self.abandon();
    }

    /// Cancels a generation begun and not ended, so that its lane is free.
    fn abandon(&mut self) {
        if self.current.as_ref().is_some_and(|c| c.outcome.is_none()) {
            self.cancel.cancel();
            while self.step_current() {}
            self.cancel.take();
        }
        self.current = None;
    }

    /// Decodes one step of the current generation; false once it has ended.
    fn step_current(&mut self) -> bool {
        let Some(current) = self.current.as_mut() else { return false };
        if current.outcome.is_some() {
            return false;
        }
        let Current { pending, outcome, cancelled } = current;
        let cancel = self.cancel.clone();
        let Some(decoder) = self.decoder.as_mut() else { return false };
        let more = decoder.with_dependent_mut(|_, decoder| {
            decoder.step(&mut |_, event| {
                match event {
                    Event::Token { token, text, .. } => {
                        pending.push_back(Chunk { token: Some(token), text: text.into() });
                        if cancel.take() {
                            *cancelled = true;
                            return Ok(Flow::Stop);
                        }
                    }
                    Event::Text(text) => {
                        pending.push_back(Chunk { token: None, text: text.into() })
                    }
                    Event::Done(g) => *outcome = Some(Ok(*g)),
                    Event::Failed(e) => *outcome = Some(Err(Error::from_chain(e))),
                }
                Ok(Flow::Continue)
            })
        });
        match more {
            Ok(more) => more && outcome.is_none(),
            Err(e) => {
                *outcome = Some(Err(Error::from_chain(e)));
                false
            }
        }
    }
}

/// The pieces of one generation, decoded as they are asked for (see [`Session::stream`]).
/// Dropping it before the end cancels the generation.
pub struct Chunks<'s> {
    session: &'s mut Session,
    ended: bool,
}

impl Chunks<'_> {
    /// Decodes what is left and returns the generation.
    pub fn finish(mut self) -> Result<Generation> {
        self.ended = true;
        self.session.end()
    }
}

impl Iterator for Chunks<'_> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        self.session.next_chunk()
    }
}

impl Drop for Chunks<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.session.abandon();
        }
    }
}
