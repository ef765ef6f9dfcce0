//! Which top-level fields of a request body mood reads, and what it does with the others.
//!
//! Clients written for OpenAI or llama-server send fields mood has no use for. In lenient
//! mode (the server's default) a body is screened before it is read:
//!
//! * fields that would change the output if ignored ([`REFUSED`], [`REFUSED_LENIENT`]) are
//!   refused with a 400 naming them, unless their value means "off";
//! * llama-server's names of mood's own settings are mapped ([`MAPPED`]): `n_predict` is
//!   `max_tokens`, `repetition_penalty` is `repeat_penalty`, `cache_prompt` is honoured
//!   (mood always keeps its caches);
//! * a field of the other endpoint (`messages` sent to `/v1/completions`) is refused;
//! * fields that do not change the output ([`IGNORED`]) are dropped and reported;
//! * an unknown field close to one of mood's own names (`wieghts`, `max_token`) is refused
//!   as a typo ("did you mean 'weights'?"); any other unknown field is dropped and reported.
//!
//! Strict mode refuses every field mood does not read, as mood always did.

use super::error::{ApiError, Kind};
use crate::pipeline::settings::Overrides;
use serde_json::{json, Map, Value};

/// How a body's fields are screened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every field mood does not read is refused with a 400.
    #[default]
    Strict,
    /// Fields that do not change the output are dropped and reported; see the module.
    Lenient,
}

/// OpenAI fields mood does not do, and why; a request giving one (other than null or the
/// value that means "off") is refused in both modes.
pub const REFUSED: [(&str, &str); 13] = [
    ("tools", "mood has no tool calling"),
    ("tool_choice", "mood has no tool calling"),
    ("functions", "mood has no function calling"),
    ("function_call", "mood has no function calling"),
    ("parallel_tool_calls", "mood has no tool calling"),
    ("audio", "mood generates text only"),
    ("modalities", "mood generates text only"),
    ("prediction", "mood does not take predicted outputs"),
    ("echo", "mood does not echo the prompt"),
    ("best_of", "mood generates one completion per request"),
    ("suffix", "mood does not insert text before a suffix"),
    ("store", "mood stores nothing"),
    ("web_search_options", "mood does not search the web"),
];

/// Fields of llama-server (and others) that change the output when on; refused in lenient
/// mode unless off (strict mode refuses them as unknown).
pub const REFUSED_LENIENT: [(&str, &str); 13] = [
    ("mirostat", "mood has no mirostat sampler"),
    ("typical_p", "mood has no typical sampler"),
    ("dry_multiplier", "mood has no DRY sampler"),
    ("xtc_probability", "mood has no XTC sampler"),
    ("top_n_sigma", "mood has no top-n-sigma sampler"),
    ("dynatemp_range", "mood has no dynamic temperature"),
    ("min_keep", "mood's samplers keep at least one token, no more"),
    ("ignore_eos", "mood always stops at the end of text"),
    ("n_probs", "give logprobs (and top_logprobs) instead"),
    ("chat_template_kwargs", "mood's chat templates take no arguments"),
    ("t_max_predict_ms", "mood has no time limit on generation; give max_tokens"),
    ("n_indent", "mood does not stop on indentation"),
    ("grammar_lazy", "mood applies a grammar from the first token"),
];

/// Fields read in lenient mode under another name: llama-server's name → mood's.
pub const MAPPED: [(&str, &str); 3] =
    [("n_predict", "max_tokens"), ("repetition_penalty", "repeat_penalty"), ("cache_prompt", "")];

/// Fields of the OpenAI and llama-server APIs dropped in lenient mode: none changes what mood
/// generates. (`store` and `parallel_tool_calls` are refused in strict mode unless off.)
pub const IGNORED: [&str; 33] = [
    // OpenAI: bookkeeping, routing and caching hints.
    "user",
    "metadata",
    "store",
    "service_tier",
    "service_level",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    // Only with tools, which are refused.
    "parallel_tool_calls",
    "parse_tool_calls",
    // Reasoning controls: mood's models run without a reasoning switch, and mood never splits
    // reasoning from the reply.
    "reasoning_effort",
    "verbosity",
    "reasoning_format",
    // llama-server: slots, caches, timings and progress reports.
    "id_slot",
    "slot_id",
    "n_keep",
    "n_discard",
    "timings_per_token",
    "return_progress",
    "return_tokens",
    "response_fields",
    "post_sampling_probs",
    // llama-server: the sampler order (mood's is fixed) and the parameters of samplers that
    // are off (a sampler that is on is refused, see REFUSED_LENIENT).
    "samplers",
    "mirostat_tau",
    "mirostat_eta",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "dry_sequence_breakers",
    "xtc_threshold",
    "dynatemp_exponent",
    "grammar_triggers",
    "preserved_tokens",
];

/// The fields each endpoint reads besides the settings ([`Overrides::KEYS`]).
pub const COMPLETION_KEYS: [&str; 7] =
    ["prompt", "stream", "stream_options", "n", "logprobs", "model", "user"];
pub const CHAT_KEYS: [&str; 9] = [
    "messages",
    "system_prompts",
    "stream",
    "stream_options",
    "n",
    "logprobs",
    "top_logprobs",
    "model",
    "user",
];

/// The longest field name, and the most names, reported back (a hostile body may send
/// thousands of long names).
const NAME_CHARS: usize = 64;
const NAMES_REPORTED: usize = 32;

fn own_keys(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Completion => &COMPLETION_KEYS,
        Kind::Chat => &CHAT_KEYS,
    }
}

/// Whether a refused field's value means "off" (so that clients sending defaults work).
fn is_off(key: &str, v: &Value) -> bool {
    let num = |x: f64| v.as_f64() == Some(x);
    match key {
        "tools" | "functions" | "lora" | "grammar_triggers" => {
            v.as_array().is_some_and(Vec::is_empty)
        }
        "tool_choice" | "function_call" => v.as_str() == Some("none"),
        "modalities" => v == &json!(["text"]),
        "echo" | "store" | "parallel_tool_calls" | "ignore_eos" | "grammar_lazy" => {
            v == &json!(false)
        }
        "best_of" => v == &json!(1),
        "suffix" => v.as_str() == Some(""),
        "mirostat" | "dry_multiplier" | "xtc_probability" | "dynatemp_range" | "n_probs"
        | "t_max_predict_ms" | "n_indent" => num(0.0),
        "typical_p" => num(1.0),
        "min_keep" => num(0.0) || num(1.0),
        "top_n_sigma" => v.as_f64().is_some_and(|x| x <= 0.0),
        "chat_template_kwargs" => v.as_object().is_some_and(Map::is_empty),
        _ => false,
    }
}

/// Screens a body's fields before it is read: refuses what must be refused, maps
/// llama-server's names (lenient), and drops the fields mood does not use (lenient).
/// Returns the names dropped, in the order they came, for the caller to report.
pub fn screen(
    obj: &mut Map<String, Value>,
    kind: Kind,
    mode: Mode,
) -> Result<Vec<String>, ApiError> {
    let lenient = mode == Mode::Lenient;
    let mut ignored = Vec::new();
    for (key, why) in REFUSED {
        if lenient && IGNORED.contains(&key) {
            continue;
        }
        refuse_unless_off(obj, key, why)?;
    }
    if lenient {
        for (key, why) in REFUSED_LENIENT {
            refuse_unless_off(obj, key, why)?;
        }
        map_llama_names(obj)?;
    }
    let own = own_keys(kind);
    let mut unknown = Vec::new();
    for key in obj.keys() {
        let k = key.as_str();
        // `user` is read (and not used) in strict mode, as it always was; lenient mode says so.
        if lenient && k == "user" {
            unknown.push(key.clone());
            continue;
        }
        if own.contains(&k) || Overrides::KEYS.contains(&k) {
            continue;
        }
        let other = match kind {
            Kind::Completion => (&CHAT_KEYS[..], "/v1/chat/completions", "/v1/completions"),
            Kind::Chat => (&COMPLETION_KEYS[..], "/v1/completions", "/v1/chat/completions"),
        };
        if other.0.contains(&k) {
            return Err(ApiError::invalid(
                format!("{k} is a field of {}, not of {}", other.1, other.2),
                Some(k),
            ));
        }
        let named = IGNORED.contains(&k) || REFUSED_LENIENT.iter().any(|(r, _)| *r == k);
        if let Some(near) = suggestion(k, kind, mode).filter(|_| !named) {
            let name = shown(k);
            return Err(ApiError::invalid(
                format!("unknown field '{name}' (did you mean '{near}'?)"),
                Some(&name),
            ));
        }
        if !lenient {
            let name = shown(k);
            return Err(ApiError::invalid(
                format!("unknown field '{name}': not a field mood knows"),
                Some(&name),
            ));
        }
        unknown.push(key.clone());
    }
    for key in unknown {
        if obj.shift_remove(&key).is_some_and(|v| !v.is_null()) {
            ignored.push(key);
        }
    }
    if lenient {
        screen_nested(obj, &mut ignored);
    }
    ignored.dedup();
    Ok(ignored)
}

fn refuse_unless_off(obj: &mut Map<String, Value>, key: &str, why: &str) -> Result<(), ApiError> {
    match obj.shift_remove(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if is_off(key, &v) => Ok(()),
        Some(_) => Err(ApiError::invalid(format!("{key} is not supported: {why}"), Some(key))),
    }
}

/// llama-server's `n_predict`, `repetition_penalty` and `cache_prompt`, read as mood's own
/// settings (a conflict with mood's name of the same setting is a 400).
fn map_llama_names(obj: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(v) = obj.shift_remove("n_predict").filter(|v| !v.is_null()) {
        let n = v.as_i64().filter(|&n| n == -1 || n == -2 || n >= 1).ok_or_else(|| {
            ApiError::invalid(
                "n_predict must be -1 (no limit: until the end of text or a full context) or a \
                 whole number from 1",
                Some("n_predict"),
            )
        })?;
        let limit = u64::try_from(n)
            .unwrap_or(crate::pipeline::settings::MAX_TOKENS_LIMIT as u64)
            .min(crate::pipeline::settings::MAX_TOKENS_LIMIT as u64);
        for other in ["max_tokens", "max_completion_tokens"] {
            match obj.get(other) {
                None | Some(Value::Null) => {}
                Some(given) if given.as_u64() == Some(limit) => {}
                Some(given) => {
                    return Err(ApiError::invalid(
                        format!("n_predict is {n} but {other} is {given}; give one of them"),
                        Some("n_predict"),
                    ))
                }
            }
        }
        if obj.get("max_completion_tokens").is_none_or(Value::is_null) {
            obj.insert("max_tokens".into(), json!(limit));
        }
    }
    if let Some(v) = obj.shift_remove("repetition_penalty").filter(|v| !v.is_null()) {
        match obj.get("repeat_penalty") {
            None | Some(Value::Null) => {
                obj.insert("repeat_penalty".into(), v);
            }
            Some(given) if given.as_f64().is_some() && given.as_f64() == v.as_f64() => {}
            Some(given) => {
                return Err(ApiError::invalid(
                    format!(
                        "repetition_penalty is {v} but repeat_penalty is {given}; give one of them"
                    ),
                    Some("repetition_penalty"),
                ))
            }
        }
    }
    match obj.shift_remove("cache_prompt") {
        // `false` (read by the request parser before screening) decodes the prompt afresh.
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "cache_prompt must be true or false",
                Some("cache_prompt"),
            ))
        }
    }
    Ok(())
}

/// Lenient mode inside the body: keys of `stream_options` other than `include_usage`, and
/// empty keys of messages (`"refusal": null`, `"tool_calls": []` as clients echo an answer
/// back) are dropped and reported.
fn screen_nested(obj: &mut Map<String, Value>, ignored: &mut Vec<String>) {
    if let Some(Value::Object(options)) = obj.get_mut("stream_options") {
        let extra: Vec<String> =
            options.keys().filter(|k| *k != "include_usage").cloned().collect();
        for key in extra {
            options.shift_remove(&key);
            ignored.push(format!("stream_options.{key}"));
        }
    }
    if let Some(Value::Array(messages)) = obj.get_mut("messages") {
        for m in messages.iter_mut().filter_map(Value::as_object_mut) {
            let empty: Vec<String> = m
                .iter()
                .filter(|(k, v)| !["role", "content", "name"].contains(&k.as_str()) && is_empty(v))
                .map(|(k, _)| k.clone())
                .collect();
            for key in empty {
                m.shift_remove(&key);
                let name = format!("messages[].{key}");
                if !ignored.contains(&name) {
                    ignored.push(name);
                }
            }
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// One of mood's own names (llama-server's too in lenient mode) that `key` is likely a typo of: the same once case, `_`, `-` and
/// spaces are set aside, or within one edit (two for names of 8 characters or more).
pub fn suggestion(key: &str, kind: Kind, mode: Mode) -> Option<&'static str> {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' ' | '.'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let given = norm(key);
    if given.is_empty() || given.len() > 40 {
        return None;
    }
    let budget = match given.len() {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    };
    let candidates = own_keys(kind)
        .iter()
        .chain(&Overrides::KEYS)
        .chain(MAPPED.iter().map(|(k, _)| k).filter(|_| mode == Mode::Lenient))
        .copied();
    candidates
        .filter(|c| *c != key)
        .map(|c| (distance(&given, &norm(c)), c))
        .filter(|&(d, _)| d <= budget)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// The optimal-string-alignment distance: insertions, deletions, substitutions and
/// transpositions of neighbours.
fn distance(a: &[char], b: &[char]) -> usize {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[n][m]
}

/// A field name as it may be shown in a header or a log line: printable ASCII, cut short.
pub fn shown(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(NAME_CHARS)
        .map(|c| if c.is_ascii_graphic() && c != ',' && c != '"' && c != '\\' { c } else { '?' })
        .collect();
    if name.chars().count() > NAME_CHARS {
        out.push_str("...");
    }
    out
}

/// The names of dropped fields as one line: `metadata, user` (at most `NAMES_REPORTED`
/// names, then how many more).
pub fn report(names: &[String]) -> String {
    let mut parts: Vec<String> = names.iter().take(NAMES_REPORTED).map(|n| shown(n)).collect();
    if names.len() > NAMES_REPORTED {
        parts.push(format!("(+{} more)", names.len() - NAMES_REPORTED));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn screened(body: Value, kind: Kind, mode: Mode) -> Result<(Value, Vec<String>), ApiError> {
        let Value::Object(mut obj) = body else { panic!("an object") };
        let ignored = screen(&mut obj, kind, mode)?;
        Ok((Value::Object(obj), ignored))
    }

    #[test]
    fn lenient_mode_drops_and_names_the_fields_that_change_nothing() {
        let body = json!({"prompt": "x", "metadata": {"a": "b"}, "user": "u", "store": true,
            "reasoning_effort": "low", "id_slot": 2, "samplers": ["top_k"], "colour": "red",
            "stream_options": {"include_usage": true, "include_obfuscation": false}});
        let (rest, ignored) = screened(body, Kind::Completion, Mode::Lenient).unwrap();
        assert_eq!(
            ignored,
            [
                "metadata",
                "user",
                "store",
                "reasoning_effort",
                "id_slot",
                "samplers",
                "colour",
                "stream_options.include_obfuscation"
            ]
        );
        assert_eq!(rest, json!({"prompt": "x", "stream_options": {"include_usage": true}}));
    }

    #[test]
    fn strict_mode_refuses_every_unknown_field() {
        for field in ["metadata", "colour", "n_predict", "cache_prompt", "samplers"] {
            let body = json!({"prompt": "x", field: 1});
            let e = screened(body, Kind::Completion, Mode::Strict).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(field), "{}", e.message);
        }
        // `user` and `model` are read, as they always were.
        let body = json!({"prompt": "x", "user": "u", "model": "m"});
        assert!(screened(body, Kind::Completion, Mode::Strict).unwrap().1.is_empty());
        let e = screened(json!({"prompt": "x", "store": true}), Kind::Completion, Mode::Strict)
            .unwrap_err();
        assert!(e.message.contains("store is not supported"), "{}", e.message);
    }

    #[test]
    fn llama_server_names_are_mapped() {
        let body = json!({"prompt": "x", "n_predict": 7, "repetition_penalty": 1.1,
            "cache_prompt": true});
        let (rest, ignored) = screened(body, Kind::Completion, Mode::Lenient).unwrap();
        assert_eq!(rest, json!({"prompt": "x", "max_tokens": 7, "repeat_penalty": 1.1}));
        assert!(ignored.is_empty());
        let body = json!({"prompt": "x", "n_predict": -1, "cache_prompt": false});
        let (rest, ignored) = screened(body, Kind::Completion, Mode::Lenient).unwrap();
        assert_eq!(rest["max_tokens"], json!(crate::pipeline::settings::MAX_TOKENS_LIMIT));
        assert!(ignored.is_empty());
        for bad in [
            json!({"prompt": "x", "n_predict": 7, "max_tokens": 8}),
            json!({"prompt": "x", "n_predict": 0}),
            json!({"prompt": "x", "n_predict": "many"}),
            json!({"prompt": "x", "repetition_penalty": 1.1, "repeat_penalty": 1.2}),
            json!({"prompt": "x", "cache_prompt": "yes"}),
        ] {
            let e = screened(bad.clone(), Kind::Completion, Mode::Lenient).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
    }

    #[test]
    fn typos_of_moods_own_fields_are_refused_with_a_suggestion() {
        for (typo, meant) in [
            ("wieghts", "weights"),
            ("max_token", "max_tokens"),
            ("temprature", "temperature"),
            ("maxTokens", "max_tokens"),
            ("top-p", "top_p"),
            ("repeat_penality", "repeat_penalty"),
        ] {
            for mode in [Mode::Lenient, Mode::Strict] {
                let e =
                    screened(json!({"prompt": "x", typo: 1}), Kind::Completion, mode).unwrap_err();
                let want = format!("unknown field '{typo}' (did you mean '{meant}'?)");
                assert_eq!(e.message, want);
                assert_eq!(e.param.as_deref(), Some(typo), "the field as sent");
            }
        }
    }

    #[test]
    fn llama_server_names_are_suggested_in_lenient_mode_only() {
        let body = json!({"prompt": "x", "num_predict": 1});
        let e = screened(body.clone(), Kind::Completion, Mode::Lenient).unwrap_err();
        assert_eq!(e.message, "unknown field 'num_predict' (did you mean 'n_predict'?)");
        let e = screened(body, Kind::Completion, Mode::Strict).unwrap_err();
        assert_eq!(e.message, "unknown field 'num_predict': not a field mood knows");
    }

    #[test]
    fn refused_fields_stay_refused_unless_off() {
        for (body, field) in [
            (json!({"tools": [{"type": "function"}]}), "tools"),
            (json!({"mirostat": 2}), "mirostat"),
            (json!({"typical_p": 0.5}), "typical_p"),
            (json!({"ignore_eos": true}), "ignore_eos"),
            (json!({"chat_template_kwargs": {"enable_thinking": true}}), "chat_template_kwargs"),
            (json!({"n_probs": 3}), "n_probs"),
        ] {
            let e = screened(body, Kind::Chat, Mode::Lenient).unwrap_err();
            assert!(e.message.starts_with(&format!("{field} is not supported")), "{}", e.message);
        }
        let off = json!({"messages": [], "tools": [], "mirostat": 0, "typical_p": 1.0,
            "ignore_eos": false, "top_n_sigma": -1, "n_probs": 0, "min_keep": 0});
        let (rest, ignored) = screened(off, Kind::Chat, Mode::Lenient).unwrap();
        assert_eq!((rest, ignored), (json!({"messages": []}), vec![]));
    }

    #[test]
    fn the_other_endpoints_fields_are_refused() {
        let e = screened(json!({"prompt": "x", "messages": []}), Kind::Completion, Mode::Lenient)
            .unwrap_err();
        assert!(e.message.contains("/v1/chat/completions"), "{}", e.message);
        let e = screened(json!({"messages": [], "prompt": "x"}), Kind::Chat, Mode::Lenient)
            .unwrap_err();
        assert!(e.message.contains("/v1/completions"), "{}", e.message);
    }

    #[test]
    fn empty_message_fields_are_dropped() {
        let body = json!({"messages": [{"role": "assistant", "content": "hi", "refusal": null,
            "tool_calls": [], "annotations": []}, {"role": "user", "content": "x", "refusal": null}]});
        let (rest, ignored) = screened(body, Kind::Chat, Mode::Lenient).unwrap();
        assert_eq!(
            ignored,
            ["messages[].refusal", "messages[].tool_calls", "messages[].annotations"]
        );
        assert_eq!(rest["messages"][0], json!({"role": "assistant", "content": "hi"}));
    }

    #[test]
    fn reported_names_are_printable_and_bounded() {
        let names: Vec<String> =
            (0..40).map(|i| format!("f{i}\n\"x,{}", "y".repeat(i * 5))).collect();
        let line = report(&names);
        assert!(line.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{line}");
        assert!(line.ends_with("(+8 more)"), "{line}");
        assert!(line.len() < 32 * 70 + 20);
    }

    proptest! {
        #[test]
        fn any_field_name_is_screened_without_panic(
            names in prop::collection::vec(".{0,24}", 0..6),
            values in prop::collection::vec(prop_oneof![
                Just(Value::Null), Just(json!(0)), Just(json!(-1)), Just(json!(true)),
                Just(json!("s")), Just(json!([])), Just(json!({})), Just(json!(1.5)),
            ], 6),
            chat in any::<bool>(),
            lenient in any::<bool>(),
        ) {
            let mut obj = Map::new();
            for (n, v) in names.iter().zip(&values) {
                obj.insert(n.clone(), v.clone());
            }
            let kind = if chat { Kind::Chat } else { Kind::Completion };
            let mode = if lenient { Mode::Lenient } else { Mode::Strict };
            match screen(&mut obj, kind, mode) {
                Ok(ignored) => {
                    for key in obj.keys() {
                        let known = own_keys(kind).contains(&key.as_str())
                            || Overrides::KEYS.contains(&key.as_str());
                        prop_assert!(known, "{key} left in the body");
                    }
                    prop_assert!(lenient || ignored.is_empty());
                }
                Err(e) => {
                    prop_assert_eq!(e.status, 400);
                    prop_assert!(!e.message.contains('\n'));
                }
            }
        }
    }
}
