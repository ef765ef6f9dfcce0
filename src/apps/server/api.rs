//! The OpenAI-compatible request and response bodies: validation of a request into what the
//! decoding thread needs, and the JSON of answers, stream chunks and errors.

use crate::pipeline::decode::{FinishReason, Generation, Request};
use crate::pipeline::engine::chat::{Message, TRANSCRIPT_STOP};
use crate::pipeline::engine::Engine;
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::{from_json, Overrides, SettingError, Settings};
use llama_cpp_2::token::LlamaToken;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// A request error: HTTP status and OpenAI-style error fields.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(Into::into),
        }
    }

    /// A fault of the server's, not of the request.
    pub fn server(message: impl Into<String>) -> Self {
        Self::status(500, message)
    }

    /// An error with this HTTP status (4xx: the request's fault, 5xx: the server's).
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
        Self { status, message: message.into(), kind, param: None }
    }

    pub fn not_found() -> Self {
        Self::status(404, "no such route")
    }

    pub fn body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": Value::Null } })
    }
}

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Completion,
    Chat,
}

/// A validated request.
pub struct Parsed {
    pub request: Request,
    pub stream: bool,
}

/// The fields of a completion body besides the generation settings ([`Overrides`]).
/// `model` is accepted whatever it names (the server has one model); `user` (an end-user id
/// for OpenAI's abuse monitoring) is accepted and not used.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionBody {
    prompt: Option<Value>,
    stream: Option<bool>,
    n: Option<u64>,
    #[serde(rename = "model")]
    _model: Option<String>,
    #[serde(rename = "user")]
    _user: Option<String>,
}

/// The fields of a chat body besides the generation settings; as [`CompletionBody`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    messages: Option<Vec<ChatMessage>>,
    /// Per-policy system prompts, by policy name.
    system_prompts: Option<Map<String, Value>>,
    stream: Option<bool>,
    n: Option<u64>,
    #[serde(rename = "model")]
    _model: Option<String>,
    #[serde(rename = "user")]
    _user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatMessage {
    role: String,
    content: String,
    /// A participant's name (OpenAI); not used.
    #[serde(rename = "name")]
    _name: Option<String>,
}

/// An error from the pipeline as a 400 naming the setting it concerns.
fn bad(e: anyhow::Error, fallback: Option<&str>) -> ApiError {
    let setting = e.chain().find_map(|c| c.downcast_ref::<SettingError>());
    ApiError::invalid(format!("{e:#}"), setting.map(|s| s.setting.as_str()).or(fallback))
}

/// Validates a request body against the server's recipe and defaults. Unknown fields are
/// refused, as everywhere in mood.
pub fn parse(
    body: &[u8],
    kind: Kind,
    engine: &Engine,
    recipe: &Recipe,
    defaults: &Settings,
    template: &str,
) -> Result<Parsed, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}"), None))?;
    let Value::Object(mut obj) = v else {
        return Err(ApiError::invalid("the body must be a JSON object", None));
    };
    let overrides = Overrides::take(&mut obj).map_err(|e| bad(e, None))?;
    let (mut recipe, mut settings) = (recipe.clone(), defaults.clone());
    overrides.apply(&mut recipe, &mut settings, false).map_err(|e| bad(e, None))?;
    recipe.terms().map_err(|e| bad(e, Some("weights")))?;
    let rest = Value::Object(obj);
    let (prompts, n, stream) = match kind {
        Kind::Completion => {
            let body: CompletionBody = from_json(rest).map_err(|e| bad(e, None))?;
            let prompt = match body.prompt {
                Some(Value::String(p)) => p,
                Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                    a[0].as_str().unwrap_or_default().to_string()
                }
                Some(Value::Array(_)) => {
                    return Err(ApiError::invalid(
                        "prompt must be a string (or an array of one string)",
                        Some("prompt"),
                    ))
                }
                Some(_) => {
                    return Err(ApiError::invalid("prompt must be a string", Some("prompt")))
                }
                None => return Err(ApiError::invalid("missing prompt", Some("prompt"))),
            };
            let prompts = engine.prompt_tokens(&prompt).map_err(|e| bad(e, Some("prompt")))?;
            (prompts, body.n, body.stream)
        }
        Kind::Chat => {
            let body: ChatBody = from_json(rest).map_err(|e| bad(e, None))?;
            let prompts = chat_prompts(&body, engine, template, &mut settings)?;
            (prompts, body.n, body.stream)
        }
    };
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only n = 1 is supported", Some("n")));
    }
    let request = Request { recipe, settings, prompts, reuse_cache: true };
    Ok(Parsed { request, stream: stream.unwrap_or(false) })
}

fn chat_prompts(
    body: &ChatBody,
    engine: &Engine,
    template: &str,
    settings: &mut Settings,
) -> Result<Vec<Vec<LlamaToken>>, ApiError> {
    let msgs =
        body.messages.as_deref().filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::invalid("messages must be a non-empty array", Some("messages"))
        })?;
    let mut system: Vec<&str> = Vec::new();
    let mut turns = Vec::new();
    for m in msgs {
        match m.role.as_str() {
            "system" | "developer" => system.push(&m.content),
            "user" | "assistant" => {
                turns.push(Message { role: m.role.clone(), content: m.content.clone() })
            }
            other => {
                return Err(ApiError::invalid(
                    format!("unknown message role '{other}' (system, developer, user, assistant)"),
                    Some("messages"),
                ))
            }
        }
    }
    let names: Vec<&str> = engine.policies().iter().map(|p| p.name.as_str()).collect();
    let mut own = vec![None; names.len()];
    for (name, value) in body.system_prompts.iter().flatten() {
        let Some(p) = names.iter().position(|n| n == name) else {
            return Err(ApiError::invalid(
                format!(
                    "system_prompts names '{name}', which is not a policy ({})",
                    names.join(", ")
                ),
                Some("system_prompts"),
            ));
        };
        let Value::String(text) = value else {
            return Err(ApiError::invalid(
                format!("system_prompts.{name} must be a string"),
                Some("system_prompts"),
            ));
        };
        own[p] = Some(text.clone());
    }
    let shared = (!system.is_empty()).then(|| system.join("\n\n"));
    let systems: Vec<Option<String>> = own
        .into_iter()
        .zip(engine.policies())
        .map(|(own, policy)| own.or_else(|| shared.clone()).or_else(|| policy.system.clone()))
        .collect();
    let prompts = engine.chat_tokens(&turns, template, Some(&systems)).map_err(|e| ApiError {
        status: 500,
        message: format!("{e:#}"),
        kind: "server_error",
        param: None,
    })?;
    if engine.uses_transcript(template) && !settings.stops.iter().any(|s| s == TRANSCRIPT_STOP) {
        settings.stops.push(TRANSCRIPT_STOP.to_string());
    }
    Ok(prompts)
}

fn finish(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// The usage object: prompt tokens of the longest policy prompt.
fn usage(g: &Generation) -> Value {
    let prompt = g.prompt_tokens.iter().map(|(_, n)| *n).max().unwrap_or(0);
    json!({ "prompt_tokens": prompt, "completion_tokens": g.tokens.len(), "total_tokens": prompt + g.tokens.len() })
}

/// The non-streaming answer.
pub fn answer(
    kind: Kind,
    id: &str,
    model: &str,
    created: u64,
    recipe: &Recipe,
    g: &Generation,
) -> Value {
    let choice = match kind {
        Kind::Completion => {
            json!({ "index": 0, "text": g.text, "finish_reason": finish(g.finish_reason), "logprobs": Value::Null })
        }
        Kind::Chat => json!({
            "index": 0,
            "message": { "role": "assistant", "content": g.text },
            "finish_reason": finish(g.finish_reason),
        }),
    };
    json!({
        "id": id,
        "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(g),
        "mood": mood_fields(recipe, g),
    })
}

/// The `mood` object of an answer: the weights and divergence used, the seed drawn, and the
/// timings.
fn mood_fields(recipe: &Recipe, g: &Generation) -> Value {
    json!({
        "weights": recipe.weights,
        "divergence": recipe.divergence.name(),
        "seed": g.seed,
        "timings": g.timings,
    })
}

/// The last streamed chunk: the finish reason, and `usage` and `mood` as in the
/// non-streaming answer.
pub fn last_chunk(
    kind: Kind,
    id: &str,
    model: &str,
    created: u64,
    recipe: &Recipe,
    g: &Generation,
) -> Value {
    let mut v = chunk(kind, id, model, created, "", Some(g.finish_reason));
    v["usage"] = usage(g);
    v["mood"] = mood_fields(recipe, g);
    v
}

/// One streamed piece of text (`finish` on the last chunk, with `text` empty).
pub fn chunk(
    kind: Kind,
    id: &str,
    model: &str,
    created: u64,
    text: &str,
    finish_reason: Option<FinishReason>,
) -> Value {
    let reason = finish_reason.map(finish);
    let choice = match kind {
        Kind::Completion => {
            json!({ "index": 0, "text": text, "finish_reason": reason, "logprobs": Value::Null })
        }
        Kind::Chat => {
            let delta = if finish_reason.is_some() {
                json!({})
            } else {
                json!({ "role": "assistant", "content": text })
            };
            json!({ "index": 0, "delta": delta, "finish_reason": reason })
        }
    };
    json!({
        "id": id,
        "object": if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
        "created": created,
        "model": model,
        "choices": [choice],
    })
}
