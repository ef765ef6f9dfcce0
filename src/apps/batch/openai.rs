//! Lines of OpenAI's Batch API files: `{"custom_id", "method", "url", "body"}` in, and
//! `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}` out.
//!
//! A body is validated as the server validates the same body sent to `url` (chat messages go
//! through each policy's chat template), so a line runs in a batch exactly as it would over
//! HTTP, streaming apart. A body the server would refuse gets the server's 400 answer as its
//! response; a line that is not a request at all (no `custom_id`, another `url`) gets an
//! `error` object and no response, as OpenAI's own batches do. Every record also carries
//! `line`, the input line number, which resuming relies on.

use crate::apps::openai::answer::{self, Header};
use crate::apps::openai::request::{self, ApiError, Kind};
use crate::pipeline::decode::{Generation, Request};
use crate::pipeline::engine::Engine;
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::Settings;
use serde_json::{json, Value};

/// The longest `custom_id` (bytes).
const MAX_CUSTOM_ID_BYTES: usize = 1024;

/// What answers need besides the generation: the model name and the time of the run.
pub struct Context<'a> {
    pub model: &'a str,
    pub created: u64,
    /// Chat template for policies that set none.
    pub template: &'a str,
}

/// One valid line: its request and where it was sent.
pub struct Line {
    pub custom_id: String,
    pub kind: Kind,
    pub request: Request,
}

/// Why a line does not run.
pub enum Refusal {
    /// The line itself is not a batch request (OpenAI's `error` object).
    Line { custom_id: Option<String>, message: String },
    /// The body sent to `kind`'s endpoint is refused, as the server would answer it (a 4xx
    /// response), or failed while decoding (a 5xx one).
    Body { custom_id: String, kind: Kind, error: ApiError },
}

/// Whether a file's first line is in OpenAI's batch format (an object with `custom_id`).
pub fn is_openai_line(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|v| v.get("custom_id").is_some())
}

/// Validates one line into a request.
pub fn parse(
    text: &str,
    engine: &Engine,
    recipe: &Recipe,
    defaults: &Settings,
    cx: &Context,
) -> Result<Line, Refusal> {
    let line = |custom_id: Option<String>, message: String| Refusal::Line { custom_id, message };
    let v: Value =
        serde_json::from_str(text).map_err(|e| line(None, format!("invalid JSON: {e}")))?;
    let Value::Object(mut obj) = v else {
        return Err(line(None, "a line must be a JSON object".into()));
    };
    let custom_id = match obj.remove("custom_id") {
        Some(Value::String(s)) if s.len() <= MAX_CUSTOM_ID_BYTES => s,
        Some(Value::String(_)) => {
            return Err(line(None, format!("custom_id is longer than {MAX_CUSTOM_ID_BYTES} bytes")))
        }
        Some(_) => return Err(line(None, "custom_id must be a string".into())),
        None => return Err(line(
            None,
            "custom_id is missing (this file is in OpenAI's batch format, told by its first line)"
                .into(),
        )),
    };
    let id = Some(custom_id.clone());
    match obj.remove("method") {
        Some(Value::String(m)) if m == "POST" => {}
        Some(m) => return Err(line(id, format!("method {m} is not supported; use \"POST\""))),
        None => return Err(line(id, "method is missing; use \"POST\"".into())),
    }
    let kind = match obj.remove("url") {
        Some(Value::String(u)) if u == "/v1/chat/completions" => Kind::Chat,
        Some(Value::String(u)) if u == "/v1/completions" => Kind::Completion,
        Some(u) => {
            return Err(line(
                id,
                format!(
                    "url {u} is not supported; use \"/v1/chat/completions\" or \"/v1/completions\""
                ),
            ))
        }
        None => return Err(line(id, "url is missing".into())),
    };
    let body = match obj.remove("body") {
        Some(b @ Value::Object(_)) => b,
        Some(_) => return Err(line(id, "body must be a JSON object".into())),
        None => return Err(line(id, "body is missing".into())),
    };
    if let Some(key) = obj.keys().next() {
        return Err(line(
            id,
            format!("unknown field '{key}' (a line has custom_id, method, url and body)"),
        ));
    }
    let refused = |error: ApiError| Refusal::Body { custom_id: custom_id.clone(), kind, error };
    if body.get("stream").is_some_and(|s| s == &json!(true)) {
        return Err(refused(ApiError::invalid(
            "stream is not supported in a batch file (each answer is written whole)",
            Some("stream"),
        )));
    }
    let bytes = body.to_string().into_bytes();
    let parsed =
        request::parse(&bytes, kind, engine, recipe, defaults, cx.template).map_err(&refused)?;
    let mut request = parsed.request;
    // A batch line's output is a function of the line alone.
    request.reuse_cache = false;
    Ok(Line { custom_id, kind, request })
}

/// The `id` of a line's record (unique within the output) and the `request_id` of its answer.
fn ids(kind: Kind, line: usize) -> (String, String) {
    let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
    (format!("batch_req_{line}"), format!("{prefix}-batch-{line}"))
}

/// The record of a generation: the answer the server would have given, as a 200 response.
pub fn record(l: &Line, line: usize, g: &Generation, cx: &Context) -> Value {
    let (id, request_id) = ids(l.kind, line);
    let h = Header { kind: l.kind, id: &request_id, model: cx.model, created: cx.created };
    let body = answer::answer(&h, &l.request.recipe, g);
    json!({
        "id": id,
        "custom_id": l.custom_id,
        "line": line,
        "response": { "status_code": 200, "request_id": request_id, "body": body },
        "error": Value::Null,
    })
}

/// The record of a line that did not run: an error response (a refused body, or a failure
/// while decoding), or OpenAI's `error` object for a line that is no request.
pub fn failure_record(refusal: &Refusal, line: usize) -> Value {
    match refusal {
        Refusal::Line { custom_id, message } => json!({
            "id": format!("batch_req_{line}"),
            "custom_id": custom_id,
            "line": line,
            "response": Value::Null,
            "error": { "code": "invalid_request", "message": message },
        }),
        Refusal::Body { custom_id, kind, error } => {
            let (id, request_id) = ids(*kind, line);
            json!({
                "id": id,
                "custom_id": custom_id,
                "line": line,
                "response": { "status_code": error.status, "request_id": request_id, "body": error.body() },
                "error": Value::Null,
            })
        }
    }
}
