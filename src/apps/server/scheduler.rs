//! The decoding thread of the server: a [`Decoder`] whose lanes serve the HTTP requests.
//! Requests wait in its queue, up to N decode side by side, and each streams its text back
//! as it goes. A request whose client went away is stopped at its next token.
//!
//! Whatever one request does, the thread goes on: a bad request is answered and dropped, an
//! engine failure fails the requests it hit, and a panic inside a step — the last resort — fails
//! the requests in flight, rebuilds the decoder and keeps serving. A lost RPC server fails only
//! the requests that need its policies, with [`Event::Unavailable`]. [`Health`] tells `/health`
//! whether the thread can serve. Policies combined over bytes are served one request at a
//! time by a byte decoder.

use crate::pipeline::bytes::Unit;
use crate::pipeline::decode::bytes::ByteDecoder;
use crate::pipeline::decode::{Decoder, Event as DecoderEvent, Flow, Generation, Request};
use crate::pipeline::engine::rpc::ServerLost;
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::logprobs::TokenLogprob;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Mutex;
use tokio::sync::mpsc::UnboundedSender;

/// One request for the decoding thread, and where its events go.
pub struct Job {
    pub request: Request,
    pub events: UnboundedSender<Event>,
}

/// What the decoding thread tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// Text that became safe to send, and the log-probabilities of the token that gave it
    /// when the request asks for them (then every token has an event, even without text).
    Text(String, Option<Box<TokenLogprob>>),
    Done(Box<Generation>),
    /// The request was refused (bad for this server: a 400).
    Invalid(String),
    /// The engine failed on it (a 500).
    Failed(String),
    /// It needs a policy whose RPC server was lost (a 503; requests that do not need it go
    /// on).
    Unavailable(String),
}

/// Whether the decoding thread can serve; the reason when it cannot.
#[derive(Debug, Default)]
pub struct Health {
    problem: Mutex<Option<String>>,
    /// Requests decoding, and waiting for a lane, as of the last step.
    active: AtomicUsize,
    queued: AtomicUsize,
}

impl Health {
    /// Requests decoding now, and waiting for a lane.
    pub fn load(&self) -> (usize, usize) {
        (self.active.load(Ordering::Relaxed), self.queued.load(Ordering::Relaxed))
    }

    fn set_load(&self, decoder: &Decoder) {
        self.active.store(decoder.active(), Ordering::Relaxed);
        self.queued.store(decoder.queued(), Ordering::Relaxed);
    }

    /// `None` while serving, else why not.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().map_or_else(|p| p.into_inner().clone(), |p| p.clone())
    }

    fn set(&self, problem: Option<String>) {
        match self.problem.lock() {
            Ok(mut p) => *p = problem,
            Err(poisoned) => *poisoned.into_inner() = problem,
        }
    }
}

/// Marks the thread dead if it ends for any reason but a closed queue.
struct Watchdog<'h> {
    health: &'h Health,
    finished: bool,
}

impl Watchdog<'_> {
    /// Reports how the decoder's start went to the server waiting on `ready`; whether the
    /// thread goes on (it started, and someone is still waiting).
    fn started(&mut self, ready: &Sender<anyhow::Result<()>>, start: anyhow::Result<()>) -> bool {
        let sent = match start {
            Ok(()) => ready.send(Ok(())).is_ok(),
            Err(e) => {
                self.health.set(Some(format!("{e:#}")));
                let _ = ready.send(Err(e));
                false
            }
        };
        self.finished = !sent;
        sent
    }
}

impl Drop for Watchdog<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.health.set(Some("the decoding thread stopped".into()));
        }
    }
}

/// A fault injected for tests of the recovery path: `MOOD_FAILPOINT=panic-on-stop:WORD` makes
/// a step panic while a request with the stop string WORD decodes. Only in builds with the
/// `failpoints` feature, which the tests turn on; unset, it does nothing.
#[cfg(feature = "failpoints")]
fn failpoint() -> Option<String> {
    std::env::var("MOOD_FAILPOINT").ok()?.strip_prefix("panic-on-stop:").map(str::to_string)
}

#[cfg(not(feature = "failpoints"))]
fn failpoint() -> Option<String> {
    None
}

/// Serves jobs until every sender of `queue` is gone and the last job is answered. First
/// opens the policies `initial` and reports on `ready` whether that worked.
pub fn run(
    engine: &Engine,
    lanes: usize,
    options: SessionOptions,
    initial: &[usize],
    queue: Receiver<Job>,
    health: &Health,
    ready: Sender<anyhow::Result<()>>,
) {
    if engine.unit() == Unit::Bytes {
        return run_bytes(engine, options, queue, health, ready);
    }
    let mut watchdog = Watchdog { health, finished: false };
    let start = |d: &mut Decoder| d.prepare(initial);
    let mut decoder = Decoder::new(engine, lanes, options);
    if !watchdog.started(&ready, start(&mut decoder)) {
        return;
    }
    let fault = failpoint();
    let mut events: HashMap<u64, (UnboundedSender<Event>, bool)> = HashMap::new();
    let mut next_tag = 0u64;
    let mut open = true;
    while open || !decoder.is_idle() {
        if decoder.is_idle() && health.problem().is_some() && start(&mut decoder).is_ok() {
            health.set(None);
        }
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
                    let faulty =
                        fault.as_ref().is_some_and(|w| job.request.settings.stops.contains(w));
                    match decoder.submit(tag, job.request) {
                        Ok(()) => {
                            events.insert(tag, (job.events, faulty));
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
        health.set_load(&decoder);
        let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| {
            decoder.step(&mut |tag, event| {
                let Some((tx, faulty)) = events.get(&tag) else { return Ok(Flow::Stop) };
                let gone = match event {
                    DecoderEvent::Token { text, logprob, .. } => {
                        if *faulty {
                            panic!("injected fault (MOOD_FAILPOINT)");
                        }
                        let logprob = logprob.map(|l| Box::new(l.clone()));
                        let send = !text.is_empty() || logprob.is_some();
                        tx.is_closed()
                            || (send && tx.send(Event::Text(text.into(), logprob)).is_err())
                    }
                    DecoderEvent::Text(text) => {
                        tx.is_closed()
                            || (!text.is_empty()
                                && tx.send(Event::Text(text.into(), None)).is_err())
                    }
                    DecoderEvent::Done(g) => {
                        let _ = tx.send(Event::Done(g));
                        events.remove(&tag);
                        false
                    }
                    DecoderEvent::Failed(e) => {
                        let message = format!("{e:#}");
                        let lost = e.downcast_ref::<ServerLost>().is_some();
                        let _ = tx.send(if lost {
                            Event::Unavailable(message)
                        } else {
                            Event::Failed(message)
                        });
                        events.remove(&tag);
                        false
                    }
                };
                Ok(if gone { Flow::Stop } else { Flow::Continue })
            })
        }));
        if stepped.is_err() {
            health.set(Some("recovering from an internal error".into()));
            for (_, (tx, _)) in events.drain() {
                let message = "an internal error stopped this request; the server goes on";
                let _ = tx.send(Event::Failed(message.into()));
            }
            decoder = Decoder::new(engine, lanes, options);
            match start(&mut decoder) {
                Ok(()) => health.set(None),
                Err(e) => health.set(Some(format!("cannot restart decoding: {e:#}"))),
            }
        }
        // As of this step's end: an idle decoder waits for work with its load at zero.
        health.set_load(&decoder);
    }
    health.set_load(&decoder);
    watchdog.finished = true;
}

/// [`run`] for policies combined over bytes: one request at a time (the byte decoder runs
/// one generation), each streaming its text as it goes; a client gone stops its request.
fn run_bytes(
    engine: &Engine,
    options: SessionOptions,
    queue: Receiver<Job>,
    health: &Health,
    ready: Sender<anyhow::Result<()>>,
) {
    let mut watchdog = Watchdog { health, finished: false };
    let mut decoder = ByteDecoder::new(engine, options);
    if !watchdog.started(&ready, decoder.prepare()) {
        return;
    }
    while let Ok(Job { request: r, events: tx }) = queue.recv() {
        if let Err(e) = ByteDecoder::check(engine, &r.recipe, &r.settings) {
            let _ = tx.send(Event::Invalid(format!("{e:#}")));
            continue;
        }
        health.active.store(1, Ordering::Relaxed);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            decoder.generate(&r.recipe, r.prompts, &r.settings, r.reuse_cache, &mut |text| {
                let gone = tx.is_closed()
                    || (!text.is_empty() && tx.send(Event::Text(text.into(), None)).is_err());
                if gone {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })
        }));
        let _ = tx.send(match outcome {
            Ok(Ok(g)) => Event::Done(Box::new(g)),
            Ok(Err(e)) => Event::Failed(format!("{e:#}")),
            Err(_) => {
                decoder = ByteDecoder::new(engine, options);
                Event::Failed("an internal error stopped this request; the server goes on".into())
            }
        });
        health.active.store(0, Ordering::Relaxed);
    }
    watchdog.finished = true;
}
