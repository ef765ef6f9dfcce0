//! The decoding thread of the server: requests wait in a queue, up to N decode side by side
//! in the lanes of one session (one batch per context and step), and each streams its text
//! back as it goes. A request whose client went away is dropped at its next token.

use crate::decode::{Generation, Settings, Stream};
use crate::engine::Engine;
use crate::recipe::Recipe;
use llama_cpp_2::token::LlamaToken;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// One request for the decoding thread.
pub struct Request {
    pub recipe: Recipe,
    pub settings: Settings,
    /// Every policy's prompt tokens (completion text or rendered chat).
    pub prompts: Vec<Vec<LlamaToken>>,
    pub events: UnboundedSender<Event>,
}

/// What the decoding thread tells a request's handler.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done(Generation),
    Error(String),
}

struct Active<'e> {
    stream: Stream<'e>,
    events: UnboundedSender<Event>,
}

/// Serves requests until every sender of `queue` is gone. All policies run in every lane,
/// so any request's weights can be served by the same session.
pub fn run(engine: &Engine, lanes: usize, settings: &Settings, queue: Receiver<Request>) {
    let members: Vec<usize> = (0..engine.policies().len()).collect();
    let mut session = match engine.session_lanes(&members, lanes, settings.session) {
        Ok(s) => s,
        Err(e) => {
            // Answer every request with the error until the server stops.
            while let Ok(req) = queue.recv() {
                let _ = req.events.send(Event::Error(format!("{e:#}")));
            }
            return;
        }
    };
    let strategy = session.strategy().name();
    let contexts = session.n_contexts();
    let mut active: Vec<Option<Active>> = (0..lanes).map(|_| None).collect();
    let mut tokens: Vec<Option<LlamaToken>> = vec![None; lanes];
    loop {
        // Take waiting requests into free lanes (block when nothing is running).
        for lane in 0..lanes {
            if active[lane].is_some() {
                continue;
            }
            let req = if active.iter().all(Option::is_none) {
                match queue.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                }
            } else {
                match queue.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            };
            let started = Instant::now();
            let stream = Stream::with_prompts(engine, &req.recipe, &req.settings, req.prompts)
                .and_then(|s| session.continue_lane(lane, &s.prompts_for(&members)).map(|_| s));
            match stream {
                Ok(mut stream) => {
                    stream.prompt_ms = started.elapsed().as_secs_f64() * 1e3;
                    stream.started = Instant::now();
                    active[lane] = Some(Active { stream, events: req.events });
                }
                Err(e) => {
                    let _ = req.events.send(Event::Error(format!("{e:#}")));
                }
            }
        }
        // Each lane picks its token; finished or abandoned lanes free up.
        for lane in 0..lanes {
            tokens[lane] = None;
            let Some(a) = &mut active[lane] else { continue };
            let events = a.events.clone();
            let mut gone = false;
            let mut send = |s: &str| {
                if !s.is_empty() && events.send(Event::Text(s.to_string())).is_err() {
                    gone = true;
                }
            };
            let slots = a.stream.members.clone();
            let room = session.has_room_in(lane);
            let next = a.stream.advance(&slots, |k| session.logits_in(k, lane), room, &mut send);
            match next {
                Some(t) if !gone && !a.events.is_closed() => {
                    tokens[lane] = Some(LlamaToken(t as i32))
                }
                _ => {
                    let a = active[lane].take().expect("an active lane");
                    let _ = a.events.send(Event::Done(a.stream.finish(strategy, contexts)));
                }
            }
        }
        if tokens.iter().any(Option::is_some) {
            let started = Instant::now();
            if let Err(e) = session.step(&tokens) {
                for a in active.iter_mut().filter_map(Option::take) {
                    let _ = a.events.send(Event::Error(format!("{e:#}")));
                }
                continue;
            }
            let elapsed = started.elapsed().as_secs_f64();
            for a in active.iter_mut().flatten() {
                a.stream.forward += elapsed;
            }
        }
    }
}
