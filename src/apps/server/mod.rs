//! `mood serve`: an OpenAI-compatible HTTP API over MOD, with per-request weights.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions` (plain and SSE streaming),
//! `GET /v1/models`, `GET /health`, `GET /v1/mood` (the recipe, for the page) and the web page
//! at `/` ([`page`]). Handlers validate a request ([`api`]) and queue it for the
//! decoding thread ([`scheduler`]), which decodes up to `parallel` requests side by side and
//! streams their text back; a request's weights affect only that request.

pub mod api;
pub mod page;
pub mod scheduler;

use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::Settings;
use anyhow::{Context, Result};
use api::{ApiError, Kind};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use scheduler::Event;
use serde_json::json;
use std::convert::Infallible;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

/// How the server runs.
pub struct Config {
    pub host: String,
    pub port: u16,
    pub parallel: usize,
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    /// Chat template for policies that set none.
    pub template: String,
    /// Name reported as the model id.
    pub model_name: String,
    pub session: SessionOptions,
}

struct Shared {
    engine: Arc<Engine>,
    recipe: Recipe,
    settings: Settings,
    template: String,
    model_name: String,
    api_key: Option<String>,
    queue: Mutex<Sender<scheduler::Job>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(self.body())).into_response()
    }
}

/// Serves until Ctrl-C or SIGTERM; `ready(address)` is called once the socket listens.
pub fn serve(
    engine: Engine,
    recipe: Recipe,
    settings: Settings,
    config: Config,
    ready: &mut dyn FnMut(&str),
) -> Result<()> {
    let engine = Arc::new(engine);
    let (tx, rx) = std::sync::mpsc::channel();
    let decoder = {
        let engine = Arc::clone(&engine);
        let (lanes, options) = (config.parallel.max(1), config.session);
        std::thread::Builder::new()
            .name("mood-decoder".into())
            .spawn(move || scheduler::run(&engine, lanes, options, rx))
            .context("cannot start the decoding thread")?
    };
    let shared = Arc::new(Shared {
        engine,
        recipe,
        settings,
        template: config.template.clone(),
        model_name: config.model_name.clone(),
        api_key: config.api_key.clone(),
        queue: Mutex::new(tx),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .merge(page::routes())
        .fallback(|| async {
            ApiError {
                status: 404,
                message: "no such route".into(),
                kind: "invalid_request_error",
                param: None,
            }
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), authorize))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(Arc::clone(&shared));
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
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the server failed")
    })?;
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

async fn authorize(State(shared): State<Arc<Shared>>, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = shared.api_key.as_ref().filter(|_| !page::is_public(req.uri().path())) {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(&format!("Bearer {key}")) {
            return ApiError {
                status: 401,
                message: "missing or wrong API key (Authorization: Bearer …)".into(),
                kind: "invalid_request_error",
                param: None,
            }
            .into_response();
        }
    }
    next.run(req).await
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "object": "list", "data": [{ "id": shared.model_name, "object": "model", "created": 0, "owned_by": "mood" }] }))
        .into_response()
}

async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(shared, body, Kind::Chat).await
}

async fn completion(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    handle(shared, body, Kind::Completion).await
}

async fn handle(shared: Arc<Shared>, body: Bytes, kind: Kind) -> Response {
    let parsed = match api::parse(
        &body,
        kind,
        &shared.engine,
        &shared.recipe,
        &shared.settings,
        &shared.template,
    ) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let recipe = parsed.request.recipe.clone();
    let job = scheduler::Job { request: parsed.request, events: events_tx };
    let queued = shared.queue.lock().map(|q| q.send(job).is_ok()).unwrap_or(false);
    if !queued {
        return ApiError {
            status: 503,
            message: "the server is shutting down".into(),
            kind: "server_error",
            param: None,
        }
        .into_response();
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = format!(
        "{}-{created}-{:x}",
        if kind == Kind::Chat { "chatcmpl" } else { "cmpl" },
        rand_id()
    );
    let model = shared.model_name.clone();
    if !parsed.stream {
        let mut text = String::new();
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Text(t) => text.push_str(&t),
                Event::Done(g) => {
                    return Json(api::answer(kind, &id, &model, created, &recipe, &g))
                        .into_response()
                }
                Event::Invalid(e) => return ApiError::invalid(e, None).into_response(),
                Event::Failed(e) => return ApiError::server(e).into_response(),
            }
        }
        return ApiError {
            status: 500,
            message: "the decoding thread stopped".into(),
            kind: "server_error",
            param: None,
        }
        .into_response();
    }
    let stream = UnboundedReceiverStream::new(events).map(move |ev| {
        let data = match ev {
            Event::Text(t) => api::chunk(kind, &id, &model, created, &t, None).to_string(),
            Event::Done(g) => api::last_chunk(kind, &id, &model, created, &recipe, &g).to_string(),
            Event::Invalid(e) => ApiError::invalid(e, None).body().to_string(),
            Event::Failed(e) => ApiError::server(e).body().to_string(),
        };
        Ok::<_, Infallible>(SseEvent::default().data(data))
    });
    let done = tokio_stream::once(Ok::<_, Infallible>(SseEvent::default().data("[DONE]")));
    Sse::new(stream.chain(done)).into_response()
}

/// A request id suffix: the time's nanoseconds mixed with a counter.
fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (t << 20) ^ n
}
