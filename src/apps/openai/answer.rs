//! The OpenAI-compatible answers: whole responses, stream chunks, usage and log-probabilities
//! in OpenAI's shapes for chat and for text completions, with mood's own fields beside them.

use super::error::Kind;
use crate::pipeline::decode::{FinishReason, Generation};
use crate::pipeline::logprobs::{Alternative, TokenLogprob};
use crate::pipeline::recipe::Recipe;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;

/// What every answer of one request shares.
pub struct Header<'a> {
    pub kind: Kind,
    pub id: &'a str,
    pub model: &'a str,
    pub created: u64,
}

impl Header<'_> {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn wrap(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

fn finish(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// The usage object. `prompt_tokens` counts the longest prompt among the policies that ran
/// (each policy decodes its own prefix or template around the prompt; `mood.prompt_tokens`
/// gives them all).
pub fn usage(g: &Generation) -> Value {
    let prompt = g
        .prompt_tokens
        .iter()
        .filter(|(name, _)| g.policies.contains(name))
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    json!({ "prompt_tokens": prompt, "completion_tokens": g.tokens.len(), "total_tokens": prompt + g.tokens.len() })
}

/// The non-streaming answer.
pub fn answer(h: &Header, recipe: &Recipe, g: &Generation) -> Value {
    let spelled = covering(&g.logprobs, g.text.len());
    let logprobs = (!g.logprobs.is_empty()).then(|| logprobs_of(h.kind, &g.policies, spelled, 0));
    let choice = match h.kind {
        Kind::Completion => json!({
            "index": 0,
            "text": g.text,
            "finish_reason": finish(g.finish_reason),
            "logprobs": logprobs,
        }),
        Kind::Chat => json!({
            "index": 0,
            "message": { "role": "assistant", "content": g.text, "refusal": Value::Null },
            "finish_reason": finish(g.finish_reason),
            "logprobs": logprobs,
        }),
    };
    let mut v = h.wrap(false, json!([choice]));
    v["usage"] = usage(g);
    v["mood"] = mood_fields(recipe, g);
    v
}

/// The `mood` object of an answer: the weights and divergence used, the seed drawn, every
/// policy's prompt tokens, and the timings.
fn mood_fields(recipe: &Recipe, g: &Generation) -> Value {
    let prompt_tokens: Map<String, Value> =
        g.prompt_tokens.iter().map(|(n, c)| (n.clone(), json!(c))).collect();
    json!({
        "weights": recipe.weights,
        "divergence": recipe.divergence.name(),
        "seed": g.seed,
        "prompt_tokens": prompt_tokens,
        "timings": g.timings,
    })
}

/// The streamed chunk that ends the choice: its finish reason, and `usage` and `mood` as in
/// the non-streaming answer.
pub fn last_chunk(h: &Header, recipe: &Recipe, g: &Generation) -> Value {
    let mut v = chunk(h, "", Some(g.finish_reason));
    v["usage"] = usage(g);
    v["mood"] = mood_fields(recipe, g);
    v
}

/// The chunk `stream_options.include_usage` asks for: no choices, the usage.
pub fn usage_chunk(h: &Header, g: &Generation) -> Value {
    let mut v = h.wrap(true, json!([]));
    v["usage"] = usage(g);
    v
}

/// One streamed piece of text (`finish` on the last chunk, with `text` empty).
pub fn chunk(h: &Header, text: &str, finish_reason: Option<FinishReason>) -> Value {
    let reason = finish_reason.map(finish);
    let logprobs = Value::Null;
    let choice = match h.kind {
        Kind::Completion => {
            json!({ "index": 0, "text": text, "finish_reason": reason, "logprobs": logprobs })
        }
        Kind::Chat => {
            let delta = if finish_reason.is_some() {
                json!({})
            } else {
                json!({ "role": "assistant", "content": text })
            };
            json!({ "index": 0, "delta": delta, "finish_reason": reason, "logprobs": logprobs })
        }
    };
    h.wrap(true, json!([choice]))
}

/// A streamed chunk of text with the log-probabilities of the tokens it completes
/// (`policies`: the names of the policies the request runs; `offset`: where the first of those
/// tokens starts in the completion).
pub fn token_chunk(
    h: &Header,
    text: &str,
    logprobs: &[TokenLogprob],
    policies: &[String],
    offset: usize,
) -> Value {
    let mut v = chunk(h, text, None);
    v["choices"][0]["logprobs"] = logprobs_of(h.kind, policies, logprobs, offset);
    v
}

/// The first tokens whose text spells `len` bytes of the completion: the tokens of a stop
/// string cut from the text have no log-probabilities in the answer.
fn covering(tokens: &[TokenLogprob], len: usize) -> &[TokenLogprob] {
    let mut at = 0;
    let n = tokens
        .iter()
        .take_while(|t| {
            let before = at;
            at += t.chosen.bytes.len();
            before < len
        })
        .count();
    &tokens[..n]
}

/// The log-probabilities of a streamed completion, each held until the text it spells has
/// been sent: a possible stop string's tokens wait, and are never sent if it is one.
#[derive(Default)]
pub struct StreamedLogprobs {
    pending: VecDeque<TokenLogprob>,
    /// Bytes of text sent, and bytes spelled by the tokens given out.
    sent: usize,
    spelled: usize,
}

impl StreamedLogprobs {
    /// Takes a token's log-probabilities and the text sent with it; returns where the tokens
    /// now spelled out start in the completion, and those tokens.
    pub fn push(&mut self, logprob: TokenLogprob, text: &str) -> (usize, Vec<TokenLogprob>) {
        self.pending.push_back(logprob);
        self.sent += text.len();
        let offset = self.spelled;
        let mut out = Vec::new();
        while self.spelled < self.sent {
            let Some(t) = self.pending.pop_front() else { break };
            self.spelled += t.chosen.bytes.len();
            out.push(t);
        }
        (offset, out)
    }
}

/// Chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}`; completions:
/// `{"tokens", "token_logprobs", "top_logprobs": [{text: logprob}], "text_offset"}`. Each
/// token also carries `policies`: every policy's own log-probability of it, by name.
fn logprobs_of(kind: Kind, policies: &[String], tokens: &[TokenLogprob], offset: usize) -> Value {
    let own = |t: &TokenLogprob| -> Value {
        let m: Map<String, Value> =
            policies.iter().zip(&t.policies).map(|(n, l)| (n.clone(), json!(l))).collect();
        Value::Object(m)
    };
    let text = |a: &Alternative| String::from_utf8_lossy(&a.bytes).into_owned();
    match kind {
        Kind::Chat => {
            let entry = |a: &Alternative| json!({ "token": text(a), "logprob": a.logprob, "bytes": a.bytes });
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let mut e = entry(&t.chosen);
                    e["top_logprobs"] = t.top.iter().map(entry).collect();
                    e["policies"] = own(t);
                    e
                })
                .collect();
            json!({ "content": content, "refusal": Value::Null })
        }
        Kind::Completion => {
            let mut at = offset;
            let mut offsets = Vec::with_capacity(tokens.len());
            for t in tokens {
                offsets.push(at);
                at += text(&t.chosen).len();
            }
            json!({
                "tokens": tokens.iter().map(|t| text(&t.chosen)).collect::<Vec<_>>(),
                "token_logprobs": tokens.iter().map(|t| t.chosen.logprob).collect::<Vec<_>>(),
                "top_logprobs": tokens.iter().map(|t| {
                    t.top.iter().map(|a| (text(a), json!(a.logprob))).collect::<Map<String, Value>>()
                }).collect::<Vec<_>>(),
                "text_offset": offsets,
                "policies": tokens.iter().map(own).collect::<Vec<_>>(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> TokenLogprob {
        let chosen = Alternative { token: 0, bytes: text.as_bytes().to_vec(), logprob: -1.0 };
        TokenLogprob { chosen, top: Vec::new(), policies: Vec::new() }
    }

    fn texts(ts: &[TokenLogprob]) -> Vec<String> {
        ts.iter().map(|t| String::from_utf8_lossy(&t.chosen.bytes).into_owned()).collect()
    }

    #[test]
    fn the_tokens_of_a_cut_stop_string_have_no_logprobs() {
        let ts: Vec<_> = [" Hello", "!", "\n", "User", ":"].map(token).into();
        assert_eq!(texts(covering(&ts, " Hello!".len())), [" Hello", "!"]);
        assert_eq!(texts(covering(&ts, 0)), Vec::<String>::new());
        // A token that straddles the end is the text's.
        assert_eq!(texts(covering(&ts, " Hel".len())), [" Hello"]);
        assert_eq!(covering(&ts, 100).len(), 5);
    }

    #[test]
    fn streamed_logprobs_wait_for_their_text() {
        let mut s = StreamedLogprobs::default();
        let (at, out) = s.push(token(" Hello"), " Hello");
        assert_eq!((at, texts(&out)), (0, vec![" Hello".to_string()]));
        // A possible stop string holds its text and its tokens back...
        assert!(s.push(token("\n"), "").1.is_empty());
        assert!(s.push(token("Us"), "").1.is_empty());
        // ...and gives both out once it is not one.
        let (at, out) = s.push(token("a"), "\nUsa");
        assert_eq!((at, texts(&out)), (6, vec!["\n".into(), "Us".into(), "a".into()]));
        // A token whose text is split over chunks (a character cut in two) waits for the end.
        let (_, out) = s.push(token("é"), "");
        assert!(out.is_empty());
        let (at, out) = s.push(token("!"), "é!");
        assert_eq!((at, texts(&out)), (10, vec!["é".into(), "!".into()]));
    }
}
