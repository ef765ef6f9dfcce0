//! The web page of `mood serve`: a chat with a slider per expert, served at `/`.
//!
//! The page is plain HTML, CSS and JavaScript embedded in the binary (no network, no
//! dependency): it talks to the same OpenAI-compatible API as any client, and learns the
//! server's experts, weights and divergence from `GET /v1/mood`. The page itself loads
//! without the API key (it asks for the key and sends it with its API calls); `/v1/mood` is
//! behind the key like every other API route.

use super::Shared;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

const INDEX: &str = include_str!("page/index.html");
const STYLE: &str = include_str!("page/page.css");
const SCRIPT: &str = include_str!("page/page.js");

/// Where the page's own files are served; these need no API key.
const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", INDEX),
    ("/page.css", "text/css; charset=utf-8", STYLE),
    ("/page.js", "text/javascript; charset=utf-8", SCRIPT),
];

/// Nothing but this server: a page that tried to load anything from elsewhere is stopped by
/// the browser.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'";

/// Whether `path` is one of the page's own files (served without the API key).
pub fn is_public(path: &str) -> bool {
    ASSETS.iter().any(|(p, _, _)| *p == path)
}

/// The page's files and `GET /v1/mood`.
pub(super) fn routes() -> Router<Arc<Shared>> {
    let mut router = Router::new().route("/v1/mood", get(recipe_info));
    for (path, kind, body) in ASSETS {
        router = router.route(path, get(move || async move { asset(kind, body) }));
    }
    router
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// What the page needs to draw its controls: the experts with their default weights and
/// what sets each apart, the divergence, whether there is a reference (weights that do not
/// sum to 1 need it), and the default temperature and token limit.
async fn recipe_info(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(info(&shared))
}

fn info(shared: &Shared) -> Value {
    let recipe = &shared.recipe;
    let experts: Vec<Value> = recipe
        .experts
        .iter()
        .zip(&recipe.weights)
        .map(|(e, w)| {
            json!({
                "name": e.name,
                "weight": w,
                "system": e.system,
                "prefix": (!e.prefix.is_empty()).then_some(&e.prefix),
            })
        })
        .collect();
    json!({
        "object": "mood.recipe",
        "model": shared.model_name,
        "experts": experts,
        "weights": recipe.weights,
        "divergence": recipe.divergence.name(),
        "reference": recipe.reference.is_some(),
        "temperature": shared.settings.sampling.temperature,
        "max_tokens": shared.settings.max_tokens,
    })
}
