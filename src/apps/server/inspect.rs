//! The routes that look at the server rather than generate: `/tokenize` and `/detokenize`
//! (per policy: prefixes and chat templates differ), `/metrics` (Prometheus text),
//! `/v1/models` and `/v1/models/{id}`.

use super::Shared;
use crate::apps::openai::request::{render_messages, ApiError, ChatMessage};
use crate::pipeline::settings::from_json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llama_cpp_2::token::LlamaToken;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of the server's work since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    chat_requests: AtomicU64,
    completion_requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    decode_micros: AtomicU64,
    /// Error answers by HTTP status.
    errors: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    /// A generation request arrived (`chat`: at the chat route).
    pub fn request(&self, chat: bool) {
        let c = if chat { &self.chat_requests } else { &self.completion_requests };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A generation finished.
    pub fn generated(&self, prompt: usize, completion: usize, decode_ms: f64) {
        self.prompt_tokens.fetch_add(prompt as u64, Ordering::Relaxed);
        self.completion_tokens.fetch_add(completion as u64, Ordering::Relaxed);
        self.decode_micros.fetch_add((decode_ms * 1e3) as u64, Ordering::Relaxed);
    }

    /// An answer with this status went out.
    pub fn answered(&self, status: u16) {
        if status >= 400 {
            let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
            *errors.entry(status).or_default() += 1;
        }
    }

    fn render(&self, active: usize, queued: usize, pending: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let decode_s = get(&self.decode_micros) as f64 / 1e6;
        let tokens = get(&self.completion_tokens);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP mood_{name} {help}\n# TYPE mood_{name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "mood_{name}{labels} {v}");
            }
        };
        metric(
            "requests_total",
            "counter",
            "Generation requests received, by endpoint.",
            &[
                ("{endpoint=\"chat\"}".into(), get(&self.chat_requests) as f64),
                ("{endpoint=\"completions\"}".into(), get(&self.completion_requests) as f64),
            ],
        );
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let by_status: Vec<(String, f64)> = errors
            .iter()
            .map(|(s, n)| {
                let kind = if *s >= 500 { "server_error" } else { "invalid_request_error" };
                (format!("{{status=\"{s}\",type=\"{kind}\"}}"), *n as f64)
            })
            .collect();
        metric("errors_total", "counter", "Error answers, by HTTP status and type.", &by_status);
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens of finished generations (the longest policy prompt of each).",
            &[(String::new(), get(&self.prompt_tokens) as f64)],
        );
        metric(
            "completion_tokens_total",
            "counter",
            "Tokens generated.",
            &[(String::new(), tokens as f64)],
        );
        metric(
            "decode_seconds_total",
            "counter",
            "Time finished generations spent decoding (they overlap when decoded side by side).",
            &[(String::new(), decode_s)],
        );
        let rate = if decode_s > 0.0 { tokens as f64 / decode_s } else { 0.0 };
        metric(
            "tokens_per_second",
            "gauge",
            "Tokens generated per second of decoding, over all finished generations.",
            &[(String::new(), rate)],
        );
        metric(
            "requests_decoding",
            "gauge",
            "Requests decoding now.",
            &[(String::new(), active as f64)],
        );
        metric(
            "queue_length",
            "gauge",
            "Requests waiting for a lane.",
            &[(String::new(), queued as f64)],
        );
        metric(
            "requests_pending",
            "gauge",
            "Requests accepted and not yet answered.",
            &[(String::new(), pending as f64)],
        );
        out
    }
}

/// `GET /metrics`.
pub async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let (active, queued) = shared.health.load();
    let pending = shared.pending.load(Ordering::SeqCst);
    let text = shared.metrics.render(active, queued, pending);
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
        .into_response()
}

/// `GET /v1/models`: the one model this server serves; `created` is when its (first) model
/// file was written.
pub async fn models(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "object": "list", "data": [model_object(&shared)] })).into_response()
}

/// `GET /v1/models/{id}`: the model, if `id` is the one this server serves (its alias); a 404
/// as OpenAI answers it (`code: model_not_found`) otherwise.
pub async fn model(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if id == shared.model_name {
        return Json(model_object(&shared)).into_response();
    }
    let shown: String = id.chars().take(200).collect();
    let mut body = ApiError::status(
        404,
        format!("the model '{shown}' does not exist; this server serves '{}'", shared.model_name),
    )
    .body();
    body["error"]["param"] = json!("model");
    body["error"]["code"] = json!("model_not_found");
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

fn model_object(shared: &Shared) -> Value {
    json!({ "id": shared.model_name, "object": "model", "created": shared.created, "owned_by": "mood" })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeBody {
    /// Text, tokenized as a completion prompt.
    content: Option<String>,
    /// A conversation, tokenized in each policy's chat template.
    messages: Option<Vec<ChatMessage>>,
    system_prompts: Option<Map<String, Value>>,
    /// Give each token's text beside its id.
    with_pieces: Option<bool>,
}

/// `POST /tokenize`: `{"content": "…"}` or `{"messages": […]}` → `{"tokens": [ids of the
/// content alone], "policies": {name: [ids of the prompt that policy decodes]}}`.
pub async fn tokenize(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: TokenizeBody = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}"), None))
        .and_then(|v| from_json(v).map_err(|e| ApiError::invalid(format!("{e:#}"), None)))
    {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let engine = &shared.engine;
    let (alone, prompts) = match (&body.content, &body.messages) {
        (Some(text), None) => {
            let alone = engine.tokenize_continuation(0, text);
            let prompts = engine
                .policies()
                .iter()
                .enumerate()
                .map(|(p, policy)| engine.tokenize(p, &format!("{}{text}", policy.prefix)));
            (alone, prompts.collect())
        }
        (None, Some(messages)) => {
            match render_messages(
                Some(messages),
                body.system_prompts.as_ref(),
                engine,
                &shared.template,
            ) {
                Ok(p) => (Vec::new(), p),
                Err(e) => return e.into_response(),
            }
        }
        _ => {
            return ApiError::invalid("give one of content or messages", Some("content"))
                .into_response()
        }
    };
    let pieces = body.with_pieces.unwrap_or(false);
    let show = |tokens: &[LlamaToken]| -> Value {
        if !pieces {
            return json!(tokens.iter().map(|t| t.0).collect::<Vec<_>>());
        }
        let mut bytes = Vec::new();
        tokens
            .iter()
            .map(|t| {
                engine.piece(t.0 as u32, &mut bytes);
                json!({ "id": t.0, "piece": String::from_utf8_lossy(&bytes) })
            })
            .collect()
    };
    let policies: Map<String, Value> =
        engine.policies().iter().zip(&prompts).map(|(p, t)| (p.name.clone(), show(t))).collect();
    Json(json!({ "tokens": show(&alone), "policies": policies })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetokenizeBody {
    tokens: Vec<i64>,
}

/// `POST /detokenize`: `{"tokens": [ids]}` → `{"content": "…"}` (the vocabulary every policy
/// shares).
pub async fn detokenize(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: DetokenizeBody = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}"), None))
        .and_then(|v| from_json(v).map_err(|e| ApiError::invalid(format!("{e:#}"), None)))
    {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let n = shared.engine.n_common_vocab();
    if let Some(bad) = body.tokens.iter().find(|&&t| t < 0 || t as u64 >= n as u64) {
        return ApiError::invalid(
            format!("token {bad} is not in the vocabulary (ids 0 to {})", n - 1),
            Some("tokens"),
        )
        .into_response();
    }
    let (mut all, mut piece) = (Vec::new(), Vec::new());
    for &t in &body.tokens {
        shared.engine.piece(t as u32, &mut piece);
        all.extend_from_slice(&piece);
    }
    Json(json!({ "content": String::from_utf8_lossy(&all) })).into_response()
}
