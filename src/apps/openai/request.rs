//! The OpenAI-compatible request bodies: validation of a request into what the decoding
//! thread needs (its errors are [`super::error`]'s). Which fields are read, refused or dropped is
//! [`super::fields`]'s: in strict mode every field mood does not read is refused with a 400
//! naming it; in lenient mode fields that change nothing are dropped and reported.

pub use super::error::{ApiError, Kind};
use super::fields::{self, Mode};
use crate::error::SettingError;
use crate::pipeline::decode::Request;
use crate::pipeline::engine::chat::{Message, TRANSCRIPT_STOP};
use crate::pipeline::engine::Engine;
use crate::pipeline::logprobs::MAX_TOP_LOGPROBS;
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::{from_json, Overrides, Settings};
use llama_cpp_2::token::LlamaToken;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A validated request.
pub struct Parsed {
    pub request: Request,
    /// The policies the request needs (engine indices, in the combiner's order).
    pub members: Vec<usize>,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage and no choices.
    pub include_usage: bool,
    /// The fields dropped in lenient mode, in the order they came (empty in strict mode).
    pub ignored: Vec<String>,
}

/// OpenAI's `stream_options`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The fields of a completion body besides the generation settings ([`Overrides`]).
/// `model` is accepted whatever it names (the server has one model); `user` (an end-user id
/// for OpenAI's abuse monitoring) is accepted and not used.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionBody {
    prompt: Option<Value>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
    /// Alternatives per token (the chosen token's log-probability is always given).
    logprobs: Option<u64>,
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
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
    logprobs: Option<bool>,
    top_logprobs: Option<u64>,
    #[serde(rename = "model")]
    _model: Option<String>,
    #[serde(rename = "user")]
    _user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    role: String,
    /// A string, or an array of text parts.
    content: Option<Value>,
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
/// refused, as everywhere in mood ([`Mode::Strict`]).
pub fn parse(
    body: &[u8],
    kind: Kind,
    engine: &Engine,
    recipe: &Recipe,
    defaults: &Settings,
    template: &str,
) -> Result<Parsed, ApiError> {
    parse_with(body, kind, engine, recipe, defaults, template, Mode::Strict)
}

/// As [`parse`], screening the body's fields in `mode` (see [`super::fields`]).
pub fn parse_with(
    body: &[u8],
    kind: Kind,
    engine: &Engine,
    recipe: &Recipe,
    defaults: &Settings,
    template: &str,
    mode: Mode,
) -> Result<Parsed, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}"), None))?;
    let Value::Object(mut obj) = v else {
        return Err(ApiError::invalid("the body must be a JSON object", None));
    };
    // llama-server's `cache_prompt: false`: the prompt is decoded afresh, not continued from
    // what the caches hold (the same numbers as a request on a fresh server).
    let fresh = obj.get("cache_prompt") == Some(&Value::Bool(false));
    let ignored = fields::screen(&mut obj, kind, mode)?;
    let overrides = Overrides::take(&mut obj).map_err(|e| bad(e, None))?;
    let (mut recipe, mut settings) = (recipe.clone(), defaults.clone());
    overrides.apply(&mut recipe, &mut settings, false).map_err(|e| bad(e, None))?;
    let members = recipe.members().map_err(|e| bad(e, Some("weights")))?;
    let rest = Value::Object(obj);
    let (prompts, n, stream, stream_options) = match kind {
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
            if let Some(n) = body.logprobs {
                settings.logprobs = Some(top_logprobs(n, "logprobs")?);
            }
            (prompts, body.n, body.stream, body.stream_options)
        }
        Kind::Chat => {
            let body: ChatBody = from_json(rest).map_err(|e| bad(e, None))?;
            let prompts = chat_prompts(&body, engine, template, &mut settings)?;
            match (body.logprobs, body.top_logprobs) {
                (Some(true), n) => {
                    settings.logprobs = Some(top_logprobs(n.unwrap_or(0), "top_logprobs")?);
                }
                (_, Some(_)) => {
                    return Err(ApiError::invalid(
                        "top_logprobs needs logprobs: true",
                        Some("top_logprobs"),
                    ))
                }
                _ => {}
            }
            (prompts, body.n, body.stream, body.stream_options)
        }
    };
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "only n = 1 is supported (send several requests for several completions)",
            Some("n"),
        ));
    }
    // Compiled here, so that a bad grammar is a 400 before any streaming starts; the
    // decoder takes it as it is.
    let grammar = match &settings.constraint {
        Some(c) => Some(engine.grammar(c).map_err(|e| bad(e, Some(c.setting())))?),
        None => None,
    };
    let include_usage = stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let request = Request { recipe, settings, prompts, reuse_cache: !fresh, grammar };
    Ok(Parsed { request, members, stream: stream.unwrap_or(false), include_usage, ignored })
}

/// A number of alternatives per token, checked.
fn top_logprobs(n: u64, field: &str) -> Result<usize, ApiError> {
    usize::try_from(n).ok().filter(|&n| n <= MAX_TOP_LOGPROBS).ok_or_else(|| {
        ApiError::invalid(format!("{field} must be from 0 to {MAX_TOP_LOGPROBS}"), Some(field))
    })
}

/// A message's text: a string, or the text of an array of parts (joined by new lines).
fn content_text(i: usize, content: Option<&Value>) -> Result<String, ApiError> {
    let field = Some("messages");
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                match (kind, part.get("text").and_then(Value::as_str)) {
                    ("text", Some(text)) => texts.push(text),
                    ("text", None) => {
                        return Err(ApiError::invalid(
                            format!("messages[{i}].content has a text part without text"),
                            field,
                        ))
                    }
                    (other, _) => {
                        return Err(ApiError::invalid(
                            format!(
                                "messages[{i}].content has a part of type '{other}'; mood takes \
                                 text parts only"
                            ),
                            field,
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(ApiError::invalid(
            format!("messages[{i}].content must be a string or an array of text parts"),
            field,
        )),
    }
}

fn chat_prompts(
    body: &ChatBody,
    engine: &Engine,
    template: &str,
    settings: &mut Settings,
) -> Result<Vec<Vec<LlamaToken>>, ApiError> {
    let prompts =
        render_messages(body.messages.as_deref(), body.system_prompts.as_ref(), engine, template)?;
    if engine.uses_transcript(template) && !settings.stops.iter().any(|s| s == TRANSCRIPT_STOP) {
        settings.stops.push(TRANSCRIPT_STOP.to_string());
    }
    Ok(prompts)
}

/// Every policy's prompt for a conversation: the messages in its chat template, with its
/// system prompt (its own from `system_prompts`, else the messages', else the recipe's).
pub fn render_messages(
    messages: Option<&[ChatMessage]>,
    system_prompts: Option<&Map<String, Value>>,
    engine: &Engine,
    template: &str,
) -> Result<Vec<Vec<LlamaToken>>, ApiError> {
    let msgs = messages
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("messages must be a non-empty array", Some("messages")))?;
    let mut system: Vec<String> = Vec::new();
    let mut turns = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let content = content_text(i, m.content.as_ref())?;
        match m.role.as_str() {
            "system" | "developer" => system.push(content),
            "user" | "assistant" => turns.push(Message { role: m.role.clone(), content }),
            "tool" | "function" => {
                return Err(ApiError::invalid(
                    format!("messages[{i}] has role '{}': mood has no tool calling", m.role),
                    Some("messages"),
                ))
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
    for (name, value) in system_prompts.into_iter().flatten() {
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
    engine.chat_tokens(&turns, template, Some(&systems)).map_err(|e| ApiError {
        status: 500,
        message: format!("{e:#}"),
        kind: "server_error",
        param: None,
    })
}
