//! The decoding thread of the server: a [`Decoder`] whose lanes serve the HTTP requests.
//! Requests wait in its queue, up to N decode side by side, and each streams its text back
//! as it goes. A request whose client went away is stopped at its next token.

use crate::pipeline::decode::{Decoder, Event as DecoderEvent, Flow, Generation, Request};
use crate::pipeline::engine::{Engine, SessionOptions};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError};
use tokio::sync::mpsc::UnboundedSender;

/// One request for the decoding thread, and where its events go.
pub struct Job {
    pub request: Request,
    pub events: UnboundedSender<Event>,
}

/// What the decoding thread tells a request's handler.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done(Generation),
    /// The request was refused (bad for this server: a 400).
    Invalid(String),
    /// The engine failed on it (a 500).
    Failed(String),
}

/// Serves jobs until every sender of `queue` is gone and the last job is answered.
pub fn run(engine: &Engine, lanes: usize, options: SessionOptions, queue: Receiver<Job>) {
    let mut decoder = Decoder::new(engine, lanes, options);
    let mut events: HashMap<u64, UnboundedSender<Event>> = HashMap::new();
    let mut next_tag = 0u64;
    let mut open = true;
    while open || !decoder.is_idle() {
        // Take what is waiting (block while there is nothing to decode).
        loop {
            let job = if decoder.is_idle() && open {
                queue.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                queue.try_recv()
            };
            match job {
                Ok(job) => {
                    let tag = next_tag;
                    next_tag += 1;
                    match decoder.submit(tag, job.request) {
                        Ok(()) => {
                            events.insert(tag, job.events);
                        }
                        Err(e) => {
                            let _ = job.events.send(Event::Invalid(format!("{e:#}")));
                        }
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let stepped = decoder.step(&mut |tag, event| {
            let Some(tx) = events.get(&tag) else { return Ok(Flow::Stop) };
            let gone = match event {
                DecoderEvent::Token { text, .. } | DecoderEvent::Text(text) => {
                    tx.is_closed()
                        || (!text.is_empty() && tx.send(Event::Text(text.into())).is_err())
                }
                DecoderEvent::Done(g) => {
                    let _ = tx.send(Event::Done(g));
                    events.remove(&tag);
                    false
                }
                DecoderEvent::Failed(e) => {
                    let _ = tx.send(Event::Failed(format!("{e:#}")));
                    events.remove(&tag);
                    false
                }
            };
            Ok(if gone { Flow::Stop } else { Flow::Continue })
        });
        if stepped.is_err() {
            return;
        }
    }
}
