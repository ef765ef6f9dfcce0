//! `mood serve`: an OpenAI-compatible HTTP API over MOD, with per-request weights.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions` (plain and SSE streaming),
//! `GET /v1/models`, `GET /v1/models/{id}`, `GET /v1/mood` (the recipe, for the page), `POST /tokenize`,
//! `POST /detokenize`, `GET /metrics` (`inspect`), `GET /health` (public) and the web page
//! at `/` ([`page`], public). Handlers read a request under size and time limits, validate
//! it ([`api`]) and queue it for the decoding thread ([`scheduler`]), which decodes up to
//! `parallel` requests side by side and streams their text back ([`answer`]); a request's
//! weights affect only that request. Connections are accepted and timed by `listener`.
//! Every error, whatever produced it, is OpenAI-style JSON. Bodies are read leniently unless
//! `strict` ([`crate::apps::openai::fields`]): fields dropped are named in an `X-Mood-Ignored`
//! header and in the request's log line ([`log`]); [`cors`] answers browsers' preflights.

pub mod cors;
mod inspect;
mod listener;
pub mod log;
pub mod page;
pub mod scheduler;

use crate::apps::openai::answer;
use crate::apps::openai::fields::{self, Mode};
use crate::apps::openai::request::{self as api, ApiError, Kind};
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::Settings;
use anyhow::{anyhow, Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use scheduler::{Event, Health};
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

pub use cors::Cors;
pub use listener::Limits;
pub use log::LogFormat;

/// How the server runs.
pub struct Config {
    pub host: String,
    pub port: u16,
    pub parallel: usize,
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    /// Requests that may wait for a lane beyond the `parallel` decoding; more get 503.
    pub max_queue: usize,
    /// Time a client has to send a request's head, and its body.
    pub read_timeout: Duration,
    pub max_connections: usize,
    /// Chat template for policies that set none.
    pub template: String,
    /// Name reported as the model id.
    pub model_name: String,
    pub session: SessionOptions,
    /// Refuse every body field mood does not read (else fields that change nothing are
    /// dropped and reported).
    pub strict: bool,
    /// Origins allowed to call the API from a browser (none: no CORS headers).
    pub cors: Cors,
    /// How the line logged per request is written.
    pub log_format: LogFormat,
}

/// The longest request target and the most header bytes answered with JSON errors (414,
/// 431); heads beyond [`MAX_HEAD_BYTES`] are refused by the HTTP layer itself.
const MAX_URI_BYTES: usize = 8 << 10;
const MAX_HEADER_BYTES: usize = 32 << 10;
const MAX_HEAD_BYTES: usize = 64 << 10;
/// How long requests in flight may take to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(30);

struct Shared {
    engine: Arc<Engine>,
    metrics: inspect::Metrics,
    /// When the (first) model file was written: the model's `created`.
    created: u64,
    recipe: Recipe,
    settings: Settings,
    template: String,
    model_name: String,
    api_key: Option<String>,
    queue: Mutex<Sender<scheduler::Job>>,
    health: Arc<Health>,
    /// Requests accepted and not yet answered, and how many may be.
    pending: Arc<AtomicUsize>,
    capacity: usize,
    max_body_bytes: usize,
    read_timeout: Duration,
    mode: Mode,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Serves until Ctrl-C or SIGTERM; `ready(address)` is called once the socket listens. Every
/// policy of the recipe gets its context first — a server that could not decode never starts
/// listening, and a request whose weights bring in a policy the previous ones left out (the
/// reference, an expert at weight 0) does not make the others read their prompts again.
pub fn serve(
    engine: Engine,
    recipe: Recipe,
    settings: Settings,
    config: Config,
    ready: &mut dyn FnMut(&str),
) -> Result<()> {
    let engine = Arc::new(engine);
    let health = Arc::new(Health::default());
    recipe.members()?;
    let initial: Vec<usize> = (0..engine.policies().len()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let decoder = {
        let (engine, health) = (Arc::clone(&engine), Arc::clone(&health));
        let (lanes, options) = (config.parallel.max(1), config.session);
        std::thread::Builder::new()
            .name("mood-decoder".into())
            .spawn(move || scheduler::run(&engine, lanes, options, &initial, rx, &health, ready_tx))
            .context("cannot start the decoding thread")?
    };
    ready_rx.recv().map_err(|_| anyhow!("the decoding thread stopped while starting"))??;
    let created = engine
        .policies()
        .first()
        .and_then(|p| std::fs::metadata(&p.model).ok()?.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let shared = Arc::new(Shared {
        engine,
        metrics: inspect::Metrics::default(),
        created,
        recipe,
        settings,
        template: config.template.clone(),
        model_name: config.model_name.clone(),
        api_key: config.api_key.clone(),
        queue: Mutex::new(tx),
        health,
        pending: Arc::new(AtomicUsize::new(0)),
        capacity: config.parallel.max(1) + config.max_queue,
        max_body_bytes: config.max_body_bytes,
        read_timeout: config.read_timeout,
        mode: if config.strict { Mode::Strict } else { Mode::Lenient },
    });
    let api = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .route("/v1/models", get(inspect::models))
        .route("/v1/models/{*id}", get(inspect::model))
        .route("/tokenize", post(inspect::tokenize))
        .route("/detokenize", post(inspect::detokenize))
        .route("/metrics", get(inspect::metrics))
        .merge(page::routes())
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), authorize));
    let app = Router::new()
        .route("/health", get(health_check))
        .merge(api)
        .fallback(|| async { ApiError::not_found() })
        .layer(middleware::map_response(as_json_error))
        .layer(middleware::from_fn(limit_head))
        .layer(middleware::map_response_with_state(Arc::clone(&shared), count))
        .layer(middleware::from_fn_with_state(Arc::new(config.cors.clone()), cors::handle))
        .layer(middleware::from_fn_with_state(config.log_format, log::requests))
        .with_state(Arc::clone(&shared));
    let limits = Limits {
        max_connections: config.max_connections.max(1),
        header_timeout: config.read_timeout,
        drain: DRAIN,
        max_head_bytes: MAX_HEAD_BYTES,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let addr = format!("{}:{}", config.host, config.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr().context("no local address")?;
        ready(&local.to_string());
        listener::serve(listener, app, limits, shutdown_signal()).await
    })?;
    // Requests still running after the drain are abandoned with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    // Closing the queue ends the decoding thread once the last request is answered.
    drop(shared);
    let _ = decoder.join();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn unix_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `/health`: 200 while the decoding thread can serve, 503 with the reason otherwise — and
/// 503 `degraded` while an RPC server holding some policies is lost (requests that do not
/// need them are still served). It needs no API key (load balancers and supervisors ask it).
async fn health_check(State(shared): State<Arc<Shared>>) -> Response {
    let closed = shared.queue.lock().map_or(true, |_| false);
    let (status, reason) = match shared.health.problem() {
        None if !closed => match lost_reason(&shared.engine) {
            None => return Json(json!({ "status": "ok" })).into_response(),
            Some(reason) => ("degraded", reason),
        },
        problem => ("unavailable", problem.unwrap_or_else(|| "the server is shutting down".into())),
    };
    let body = Json(json!({ "status": status, "reason": reason }));
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Why some policies cannot decode (their RPC server was lost), or `None`.
fn lost_reason(engine: &Engine) -> Option<String> {
    let lost = engine.lost();
    let mut reasons: Vec<String> = Vec::new();
    for e in lost.iter().filter_map(|&p| engine.unavailable(p)) {
        if !reasons.contains(&e.message) {
            reasons.push(e.message);
        }
    }
    if reasons.is_empty() {
        return None;
    }
    Some(format!(
        "{}; requests that need these policies are answered 503, the others are served",
        reasons.join("; ")
    ))
}

/// Counts every answer's status for `/metrics`.
async fn count(State(shared): State<Arc<Shared>>, response: Response) -> Response {
    shared.metrics.answered(response.status().as_u16());
    response
}

/// Refuses request targets and header sections over the limits, as JSON.
async fn limit_head(req: HttpRequest, next: Next) -> Response {
    let uri = req.uri().to_string().len();
    if uri > MAX_URI_BYTES {
        let message = format!("the request target is {uri} bytes; at most {MAX_URI_BYTES}");
        return ApiError::status(414, message).into_response();
    }
    let headers: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers > MAX_HEADER_BYTES {
        let message = format!("the headers are {headers} bytes; at most {MAX_HEADER_BYTES}");
        return ApiError::status(431, message).into_response();
    }
    next.run(req).await
}

/// Turns any error response that is not JSON yet (an unsupported method, a panic caught by
/// the HTTP layer, …) into an OpenAI-style error.
async fn as_json_error(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || json {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method".to_string(),
        s => s.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    ApiError::status(status.as_u16(), message).into_response()
}

/// Constant-time equality, so that the API key cannot be guessed byte by byte from timings.
fn same_secret(given: &[u8], key: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != key.len());
    for (i, k) in key.iter().enumerate() {
        diff |= k ^ given.get(i).copied().unwrap_or(!k);
    }
    diff == 0
}

async fn authorize(State(shared): State<Arc<Shared>>, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = shared.api_key.as_ref().filter(|_| !page::is_public(req.uri().path())) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !same_secret(given, key.as_bytes()) {
            return ApiError::status(401, "missing or wrong API key (Authorization: Bearer …)")
                .into_response();
        }
    }
    next.run(req).await
}

async fn chat(State(shared): State<Arc<Shared>>, req: HttpRequest) -> Response {
    handle(shared, req, Kind::Chat).await
}

async fn completion(State(shared): State<Arc<Shared>>, req: HttpRequest) -> Response {
    handle(shared, req, Kind::Completion).await
}

/// Reads a request body within the size and time limits.
async fn read_body(shared: &Shared, body: Body) -> Result<Bytes, ApiError> {
    let limit = shared.max_body_bytes;
    match tokio::time::timeout(shared.read_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::status(408, "the request body did not arrive in time")),
        Ok(Err(_)) => Err(ApiError::status(
            413,
            format!("the request body is larger than {limit} bytes (--max-body-bytes)"),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// A request counted in `pending` until it is answered.
struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes a place among the pending requests, or says the server is full.
fn admit(shared: &Shared) -> Result<Pending, ApiError> {
    let pending = Arc::clone(&shared.pending);
    if pending.fetch_add(1, Ordering::SeqCst) >= shared.capacity {
        pending.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::status(
            503,
            format!(
                "{} requests are decoding or waiting, the most this server queues; retry shortly",
                shared.capacity
            ),
        ));
    }
    Ok(Pending(pending))
}

async fn handle(shared: Arc<Shared>, req: HttpRequest, kind: Kind) -> Response {
    shared.metrics.request(kind == Kind::Chat);
    let body = match read_body(&shared, req.into_body()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let mut parsed = match api::parse_with(
        &body,
        kind,
        &shared.engine,
        &shared.recipe,
        &shared.settings,
        &shared.template,
        shared.mode,
    ) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let ignored = std::mem::take(&mut parsed.ignored);
    let mut response = generate(shared, parsed, kind).await;
    if !ignored.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&fields::report(&ignored)) {
            response.headers_mut().insert(IGNORED_HEADER, v);
        }
        match response.extensions_mut().get_mut::<log::Note>() {
            Some(note) => note.ignored = ignored,
            None => {
                response.extensions_mut().insert(log::Note { ignored, ..log::Note::default() });
            }
        }
    }
    response
}

/// Names the body fields dropped in lenient mode.
const IGNORED_HEADER: &str = "x-mood-ignored";

/// Decodes a validated request and answers it, whole or streamed.
async fn generate(shared: Arc<Shared>, parsed: api::Parsed, kind: Kind) -> Response {
    if let Some(problem) = shared.health.problem() {
        return ApiError::status(503, format!("the server cannot decode now: {problem}"))
            .into_response();
    }
    if let Some(e) = shared.engine.unavailable_for(&parsed.members) {
        return ApiError::status(503, format!("{e:#}")).into_response();
    }
    let pending = match admit(&shared) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let recipe = parsed.request.recipe.clone();
    let policies: Vec<String> =
        parsed.members.iter().map(|&m| shared.engine.policies()[m].name.clone()).collect();
    let include_usage = parsed.include_usage;
    let job = scheduler::Job { request: parsed.request, events: events_tx };
    let queued = shared.queue.lock().map(|q| q.send(job).is_ok()).unwrap_or(false);
    if !queued {
        return ApiError::status(503, "the server is shutting down").into_response();
    }
    let created = unix_time();
    let id = format!(
        "{}-{created}-{:x}",
        if kind == Kind::Chat { "chatcmpl" } else { "cmpl" },
        rand_id()
    );
    let model = shared.model_name.clone();
    if !parsed.stream {
        let _pending = pending;
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Text(..) => {}
                Event::Done(g) => {
                    record(&shared, &g);
                    let h = answer::Header { kind, id: &id, model: &model, created };
                    let mut response = Json(answer::answer(&h, &recipe, &g)).into_response();
                    let note = log::Note { tokens: Some(g.tokens.len()), ..log::Note::default() };
                    response.extensions_mut().insert(note);
                    return response;
                }
                Event::Invalid(e) => return ApiError::invalid(e, None).into_response(),
                Event::Failed(e) => return ApiError::server(e).into_response(),
                Event::Unavailable(e) => return ApiError::status(503, e).into_response(),
            }
        }
        return ApiError::server("the decoding thread stopped").into_response();
    }
    // Streamed: chunks as text comes, then `data: [DONE]` — or an error event and no
    // `[DONE]` when the request fails midway.
    let (sse_tx, sse_rx) = tokio::sync::mpsc::unbounded_channel::<SseEvent>();
    let (guard, note) = log::StreamGuard::new();
    tokio::spawn(async move {
        let _pending = pending;
        // The whole guard moves here (not just the field assigned), so that it reports when
        // this task ends.
        let mut guard = guard;
        let h = answer::Header { kind, id: &id, model: &model, created };
        let mut ended = false;
        let mut logprobs = answer::StreamedLogprobs::default();
        while let Some(ev) = events.recv().await {
            let data = match ev {
                Event::Text(t, None) => answer::chunk(&h, &t, None).to_string(),
                Event::Text(t, Some(lp)) => {
                    let (offset, spelled) = logprobs.push(*lp, &t);
                    if t.is_empty() && spelled.is_empty() {
                        continue;
                    }
                    answer::token_chunk(&h, &t, &spelled, &policies, offset).to_string()
                }
                Event::Done(g) => {
                    ended = true;
                    guard.end = log::StreamEnd::Done(g.tokens.len());
                    record(&shared, &g);
                    let last = answer::last_chunk(&h, &recipe, &g);
                    let _ = sse_tx.send(SseEvent::default().data(last.to_string()));
                    if include_usage {
                        let usage = answer::usage_chunk(&h, &g);
                        let _ = sse_tx.send(SseEvent::default().data(usage.to_string()));
                    }
                    "[DONE]".to_string()
                }
                Event::Invalid(e) => {
                    ended = true;
                    guard.end = log::StreamEnd::Error;
                    ApiError::invalid(e, None).body().to_string()
                }
                Event::Failed(e) => {
                    ended = true;
                    guard.end = log::StreamEnd::Error;
                    ApiError::server(e).body().to_string()
                }
                Event::Unavailable(e) => {
                    ended = true;
                    guard.end = log::StreamEnd::Error;
                    ApiError::status(503, e).body().to_string()
                }
            };
            if sse_tx.send(SseEvent::default().data(data)).is_err() {
                if !ended {
                    guard.end = log::StreamEnd::ClientGone;
                }
                return;
            }
            if ended {
                return;
            }
        }
        guard.end = log::StreamEnd::Error;
        let stopped = ApiError::server("the decoding thread stopped").body().to_string();
        let _ = sse_tx.send(SseEvent::default().data(stopped));
    });
    let mut response =
        Sse::new(UnboundedReceiverStream::new(sse_rx).map(Ok::<_, Infallible>)).into_response();
    response.extensions_mut().insert(note);
    response
}

/// Adds a finished generation to the metrics.
fn record(shared: &Shared, g: &crate::pipeline::decode::Generation) {
    let prompt = answer::usage(g)["prompt_tokens"].as_u64().unwrap_or(0) as usize;
    shared.metrics.generated(prompt, g.tokens.len(), g.timings.decode_ms);
}

/// A request id suffix: the time's nanoseconds mixed with a counter.
fn rand_id() -> u64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u64;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (t << 20) ^ n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret(b"key-123", b"key-123"));
        for wrong in [&b"key-124"[..], b"key-12", b"key-1234", b"", b"KEY-123"] {
            assert!(!same_secret(wrong, b"key-123"), "{wrong:?}");
        }
        assert!(same_secret(b"", b""));
    }
}
