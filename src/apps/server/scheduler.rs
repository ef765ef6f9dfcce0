//! The decoding thread of the server: requests wait in a queue, up to N decode side by side
//! in the lanes of one session (one batch per context and step), and each streams its text
//! back as it goes. A request whose client went away is dropped at its next token.
//!
//! The session runs the policies the requests so far have needed (at first, those of the
//! recipe's own weights: the reference is skipped while weights sum to 1). A request that
//! needs another policy waits until the running ones finish; the session is then rebuilt
//! with the union.

use crate::pipeline::decode::{Generation, Settings, Stream};
use crate::pipeline::engine::{Engine, Session};
use crate::pipeline::recipe::Recipe;
use llama_cpp_2::token::LlamaToken;
use std::collections::VecDeque;
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
    /// Where the stream's policies sit in the session.
    slots: Vec<usize>,
    events: UnboundedSender<Event>,
}

/// The session and the engine policies it runs, in order.
struct Running {
    members: Vec<usize>,
    session: Session,
}

/// Serves requests until every sender of `queue` is gone. `initial` are the engine policies
/// to start with.
pub fn run(
    engine: &Engine,
    lanes: usize,
    settings: &Settings,
    initial: Vec<usize>,
    queue: Receiver<Request>,
) {
    let open = |members: Vec<usize>| -> anyhow::Result<Running> {
        let session = engine.session_lanes(&members, lanes, settings.session)?;
        Ok(Running { members, session })
    };
    let mut running = match open(initial) {
        Ok(r) => r,
        Err(e) => {
            // Answer every request with the error until the server stops.
            while let Ok(req) = queue.recv() {
                let _ = req.events.send(Event::Error(format!("{e:#}")));
            }
            return;
        }
    };
    let mut active: Vec<Option<Active>> = (0..lanes).map(|_| None).collect();
    let mut tokens: Vec<Option<LlamaToken>> = vec![None; lanes];
    // A checked request whose policies the session lacks, waiting for the lanes to drain.
    let mut held: VecDeque<(Stream, UnboundedSender<Event>)> = VecDeque::new();
    loop {
        // Take waiting requests into free lanes (block when nothing is running).
        for lane in 0..lanes {
            if active[lane].is_some() {
                continue;
            }
            let idle = active.iter().all(Option::is_none);
            let (stream, events) = match held.pop_front() {
                Some(h) => h,
                None => {
                    let req = if idle {
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
                    match Stream::with_prompts(engine, &req.recipe, &req.settings, req.prompts) {
                        Ok(s) => (s, req.events),
                        Err(e) => {
                            let _ = req.events.send(Event::Error(format!("{e:#}")));
                            continue;
                        }
                    }
                }
            };
            if !stream.members.iter().all(|m| running.members.contains(m)) {
                if !idle {
                    held.push_front((stream, events));
                    break;
                }
                let mut union = running.members.clone();
                union.extend(stream.members.iter().copied());
                union.sort_unstable();
                union.dedup();
                match open(union) {
                    Ok(r) => running = r,
                    Err(e) => {
                        let _ = events.send(Event::Error(format!("{e:#}")));
                        continue;
                    }
                }
            }
            let started = Instant::now();
            let mut stream = stream;
            let prompts = stream.prompts_for(&running.members);
            if let Err(e) = running.session.continue_lane(lane, &prompts) {
                let _ = events.send(Event::Error(format!("{e:#}")));
                continue;
            }
            stream.prompt_ms = started.elapsed().as_secs_f64() * 1e3;
            stream.started = Instant::now();
            let slots = stream
                .members
                .iter()
                .map(|m| running.members.iter().position(|x| x == m).expect("a member"))
                .collect();
            active[lane] = Some(Active { stream, slots, events });
        }
        let session = &mut running.session;
        let (strategy, contexts) = (session.strategy().name(), session.n_contexts());
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
            let room = session.has_room_in(lane);
            let next = a.stream.advance(&a.slots, |k| session.logits_in(k, lane), room, &mut send);
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
