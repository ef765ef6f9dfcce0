//! The OpenAI-compatible request and response bodies: validation of a request into what the
//! decoding thread needs, and the JSON of answers, stream chunks and errors.

use crate::pipeline::decode::{FinishReason, Generation, Settings};
use crate::pipeline::engine::chat::{Message, TRANSCRIPT_STOP};
use crate::pipeline::engine::Engine;
use crate::pipeline::recipe::Recipe;
use llama_cpp_2::token::LlamaToken;
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
    pub recipe: Recipe,
    pub settings: Settings,
    pub prompts: Vec<Vec<LlamaToken>>,
    pub stream: bool,
}

/// Validates a request body against the server's recipe and defaults.
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
    let obj =
        v.as_object().ok_or_else(|| ApiError::invalid("the body must be a JSON object", None))?;
    // Fields other OpenAI clients send (frequency_penalty, logprobs, …) are accepted and
    // ignored; the ones honoured here are type-checked.
    let mut settings = defaults.clone();
    let mut recipe = recipe.clone();
    if let Some(n) = uint(obj, "max_tokens")? {
        if n == 0 {
            return Err(ApiError::invalid("max_tokens must be at least 1", Some("max_tokens")));
        }
        settings.max_tokens = n as usize;
    }
    if let Some(t) = number(obj, "temperature")? {
        settings.sampling.temperature = t as f32;
    }
    if let Some(p) = number(obj, "top_p")? {
        settings.sampling.top_p = p as f32;
    }
    if let Some(p) = number(obj, "min_p")? {
        settings.sampling.min_p = p as f32;
    }
    if let Some(k) = uint(obj, "top_k")? {
        settings.sampling.top_k = k as usize;
    }
    if let Some(s) = uint(obj, "seed")? {
        settings.sampling.seed = s;
    }
    if let Some(p) = number(obj, "plausibility")? {
        settings.plausibility = p;
    }
    match obj.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => settings.stops.push(s.clone()),
        Some(Value::Array(a)) => {
            for s in a {
                let s = s.as_str().ok_or_else(|| {
                    ApiError::invalid("stop must be a string or an array of strings", Some("stop"))
                })?;
                settings.stops.push(s.to_string());
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "stop must be a string or an array of strings",
                Some("stop"),
            ))
        }
    }
    if let Some(n) = uint(obj, "n")? {
        if n != 1 {
            return Err(ApiError::invalid("only n = 1 is supported", Some("n")));
        }
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("stream must be true or false", Some("stream"))),
    };
    settings
        .sampling
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string().replace("--", ""), None))?;
    if let Some(d) = obj.get("divergence") {
        let d = d
            .as_str()
            .ok_or_else(|| ApiError::invalid("divergence must be a string", Some("divergence")))?;
        recipe.divergence = d
            .parse()
            .map_err(|e: anyhow::Error| ApiError::invalid(e.to_string(), Some("divergence")))?;
    }
    if let Some(w) = obj.get("weights") {
        let weights = recipe
            .weights_from_json(w)
            .map_err(|e| ApiError::invalid(e.to_string(), Some("weights")))?;
        recipe
            .set_weights(weights)
            .map_err(|e| ApiError::invalid(e.to_string().replace("--", ""), Some("weights")))?;
    }
    recipe
        .apply_weight_rules(false)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("weights")))?;

    let prompts = match kind {
        Kind::Completion => {
            let prompt = match obj.get("prompt") {
                Some(Value::String(p)) if !p.is_empty() => p.clone(),
                Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                    a[0].as_str().unwrap_or_default().to_string()
                }
                Some(Value::String(_)) => {
                    return Err(ApiError::invalid("prompt is empty", Some("prompt")))
                }
                Some(_) => {
                    return Err(ApiError::invalid("prompt must be a string", Some("prompt")))
                }
                None => return Err(ApiError::invalid("missing prompt", Some("prompt"))),
            };
            (0..engine.policies().len())
                .map(|p| engine.tokenize(p, &format!("{}{prompt}", engine.policies()[p].prefix)))
                .collect::<Vec<_>>()
        }
        Kind::Chat => chat_prompts(obj, engine, &recipe, template, &mut settings)?,
    };
    let limit = settings.session.ctx_size as usize;
    if let Some(longest) = prompts.iter().map(Vec::len).max() {
        if longest >= limit {
            return Err(ApiError::invalid(
                format!("the prompt is {longest} tokens but the context holds {limit}"),
                Some(if kind == Kind::Chat { "messages" } else { "prompt" }),
            ));
        }
    }
    Ok(Parsed { recipe, settings, prompts, stream })
}

fn chat_prompts(
    obj: &Map<String, Value>,
    engine: &Engine,
    recipe: &Recipe,
    template: &str,
    settings: &mut Settings,
) -> Result<Vec<Vec<LlamaToken>>, ApiError> {
    let msgs =
        obj.get("messages").and_then(Value::as_array).filter(|a| !a.is_empty()).ok_or_else(
            || ApiError::invalid("messages must be a non-empty array", Some("messages")),
        )?;
    let mut system: Vec<String> = Vec::new();
    let mut turns = Vec::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str);
        let content = m.get("content").and_then(Value::as_str);
        let (Some(role), Some(content)) = (role, content) else {
            return Err(ApiError::invalid(
                "each message needs a string role and content",
                Some("messages"),
            ));
        };
        match role {
            "system" | "developer" => system.push(content.to_string()),
            "user" | "assistant" => {
                turns.push(Message { role: role.into(), content: content.into() })
            }
            other => {
                return Err(ApiError::invalid(
                    format!("unknown message role '{other}'"),
                    Some("messages"),
                ))
            }
        }
    }
    let overrides = match obj.get("system_prompts") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "system_prompts must be an object by expert name",
                Some("system_prompts"),
            ))
        }
    };
    for name in overrides.keys() {
        if !recipe.experts.iter().any(|e| &e.name == name) && name != "reference" {
            return Err(ApiError::invalid(
                format!("system_prompts names '{name}', which is not a policy"),
                Some("system_prompts"),
            ));
        }
    }
    let shared = (!system.is_empty()).then(|| system.join("\n\n"));
    let mut prompts = Vec::with_capacity(engine.policies().len());
    let mut transcript = false;
    for (p, policy) in engine.policies().iter().enumerate() {
        let own = overrides.get(&policy.name).and_then(Value::as_str).map(str::to_string);
        let system = own.or_else(|| shared.clone()).or_else(|| policy.system.clone());
        transcript |= policy.template.as_deref().unwrap_or(template) == "none";
        let text =
            engine.render_chat_with(p, &turns, template, system.as_deref()).map_err(|e| {
                ApiError {
                    status: 500,
                    message: format!("{e:#}"),
                    kind: "server_error",
                    param: None,
                }
            })?;
        prompts.push(engine.tokenize_chat(p, &text));
    }
    if transcript && !settings.stops.iter().any(|s| s == TRANSCRIPT_STOP) {
        settings.stops.push(TRANSCRIPT_STOP.to_string());
    }
    Ok(prompts)
}

fn number(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("{key} must be a number"), Some(key))),
    }
}

fn uint(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::invalid(format!("{key} must be a whole number ≥ 0"), Some(key))
        }),
    }
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
        "mood": { "weights": recipe.weights, "divergence": recipe.divergence.name(), "timings": g.timings },
    })
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
