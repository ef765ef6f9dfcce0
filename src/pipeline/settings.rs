//! The settings of one generation, their checks, and the one typed form in which a batch
//! line or an HTTP body overrides them.
//!
//! Errors about a setting are [`crate::error::SettingError`]s, worded by each front end.

use super::constraint::ConstraintSpec;
use super::logprobs::MAX_TOP_LOGPROBS;
use super::recipe::Recipe;
use super::sample::SamplingParams;
use crate::error::invalid;
use anyhow::Result;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Everything about one generation except the prompt and the policies.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_tokens: usize,
    pub stops: Vec<String>,
    pub sampling: SamplingParams,
    /// Plausibility threshold τ for sampling (`docs/mod.md` §1.4); 0 = the whole
    /// vocabulary.
    pub plausibility: f64,
    /// MOD over bytes: the share of each policy's probability of the text that pruning may
    /// drop at one byte (see [`crate::pipeline::bytes::ByteView`]); 0 = nothing beyond the
    /// tokenizations a view follows at most.
    pub byte_tolerance: f64,
    /// What the output must follow (a grammar, a JSON schema); `None`: free text.
    pub constraint: Option<ConstraintSpec>,
    /// Report each generated token's log-probabilities with this many alternatives;
    /// `None`: none.
    pub logprobs: Option<usize>,
    /// Speculation: the most tokens drafted (by prompt lookup) and checked per pass; 0 = off.
    /// The output is the same either way.
    pub draft_max: usize,
}

impl Default for Settings {
    /// 256 tokens at most, no stop strings, greedy (see [`SamplingParams::default`]), the
    /// default plausibility set for sampling, free text, no log-probabilities, speculation
    /// by prompt lookup.
    fn default() -> Self {
        Self {
            max_tokens: 256,
            stops: Vec::new(),
            sampling: SamplingParams::default(),
            plausibility: super::combine::DEFAULT_PLAUSIBILITY,
            byte_tolerance: super::bytes::DEFAULT_TOLERANCE,
            constraint: None,
            logprobs: None,
            draft_max: super::draft::DEFAULT_DRAFT_MAX,
        }
    }
}

/// The most draft tokens a pass may check.
pub const MAX_DRAFT: usize = 32;

/// The largest `max_tokens` accepted: more than any context holds.
pub const MAX_TOKENS_LIMIT: usize = 1 << 24;
/// The most stop strings a request may give, and the longest one (bytes).
pub const STOPS_LIMIT: usize = 16;
pub const STOP_BYTES_LIMIT: usize = 256;

impl Settings {
    /// Checks every setting.
    pub fn check(&self) -> Result<()> {
        if self.max_tokens == 0 || self.max_tokens > MAX_TOKENS_LIMIT {
            return Err(invalid(
                "max_tokens",
                format!("must be from 1 to {MAX_TOKENS_LIMIT}, got {}", self.max_tokens),
            ));
        }
        if self.stops.len() > STOPS_LIMIT {
            return Err(invalid(
                "stop",
                format!("holds {} strings; at most {STOPS_LIMIT} are allowed", self.stops.len()),
            ));
        }
        if let Some(s) = self.stops.iter().find(|s| s.len() > STOP_BYTES_LIMIT) {
            return Err(invalid(
                "stop",
                format!("strings may be {STOP_BYTES_LIMIT} bytes long; one is {}", s.len()),
            ));
        }
        if !(0.0..1.0).contains(&self.plausibility) {
            return Err(invalid(
                "plausibility",
                format!("must be in [0, 1) (0 = the whole vocabulary), got {}", self.plausibility),
            ));
        }
        if !(0.0..1.0).contains(&self.byte_tolerance) {
            return Err(invalid(
                "byte_tolerance",
                format!(
                    "must be in [0, 1) (0 = drop only beyond the tokenizations followed), got {}",
                    self.byte_tolerance
                ),
            ));
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
            return Err(invalid(
                "top_logprobs",
                format!("must be from 0 to {MAX_TOP_LOGPROBS}, got {n}"),
            ));
        }
        if self.draft_max > MAX_DRAFT {
            return Err(invalid(
                "draft_max",
                format!("must be from 0 (off) to {MAX_DRAFT}, got {}", self.draft_max),
            ));
        }
        if let Some(c) = &self.constraint {
            c.check()?;
        }
        self.sampling.check()
    }
}

/// What a batch line or an HTTP body may set for its own generation, on top of the
/// defaults. Every key is optional; `null` is the same as leaving it out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// An array (one weight per expert), or an object by expert name (changing only those).
    pub weights: Option<Value>,
    pub divergence: Option<String>,
    /// Rescale non-negative weights to sum to 1.
    pub normalize_weights: Option<bool>,
    pub max_tokens: Option<u64>,
    /// OpenAI's newer name of `max_tokens`.
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_k: Option<u64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<u64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Token id (a string, as OpenAI writes it) → bias from −100 to 100.
    pub logit_bias: Option<Map<String, Value>>,
    pub seed: Option<u64>,
    /// A string, or an array of strings; replaces the default stop strings.
    pub stop: Option<Value>,
    pub plausibility: Option<f64>,
    /// Speculation: the most draft tokens per pass (0 = off).
    pub draft_max: Option<u64>,
    /// A GBNF grammar the output follows.
    pub grammar: Option<String>,
    /// A JSON schema the output is valid against.
    pub json_schema: Option<Value>,
    /// OpenAI's form of the two above: `{"type": "text" | "json_object" | "json_schema",
    /// "json_schema": {"name", "schema", "strict", "description"}}`.
    pub response_format: Option<Value>,
}

impl Overrides {
    /// The keys an overrides object may hold.
    pub const KEYS: [&'static str; 21] = [
        "weights",
        "divergence",
        "normalize_weights",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repeat_penalty",
        "repeat_last_n",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "seed",
        "stop",
        "plausibility",
        "grammar",
        "json_schema",
        "response_format",
        "draft_max",
    ];

    /// Takes the override keys out of `object` (the caller's own keys stay) and reads them.
    pub fn take(object: &mut Map<String, Value>) -> Result<Self> {
        let mut mine = Map::new();
        for key in Self::KEYS {
            if let Some(v) = object.remove(key) {
                mine.insert(key.to_string(), v);
            }
        }
        from_json(Value::Object(mine))
    }

    /// Applies the overrides to a recipe and settings (the defaults); `normalize` is the
    /// default of `normalize_weights`. Checks the result.
    pub fn apply(
        &self,
        recipe: &mut Recipe,
        settings: &mut Settings,
        normalize: bool,
    ) -> Result<()> {
        if let Some(d) = &self.divergence {
            recipe.divergence =
                d.parse().map_err(|e: anyhow::Error| invalid("divergence", e.to_string()))?;
        }
        if let Some(w) = &self.weights {
            let weights = recipe.weights_from_json(w)?;
            recipe.set_weights(weights)?;
        }
        recipe.apply_weight_rules(self.normalize_weights.unwrap_or(normalize))?;
        let max_tokens = match (self.max_tokens, self.max_completion_tokens) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(
                    "max_completion_tokens",
                    format!("is {b} but `max_tokens` is {a}; give one of them"),
                ))
            }
            (a, b) => a.or(b),
        };
        if let Some(n) = max_tokens {
            settings.max_tokens = usize::try_from(n).unwrap_or(usize::MAX);
        }
        let s = &mut settings.sampling;
        if let Some(t) = self.temperature {
            s.temperature = t;
        }
        if let Some(k) = self.top_k {
            s.top_k = usize::try_from(k).unwrap_or(usize::MAX);
        }
        if let Some(p) = self.top_p {
            s.top_p = p;
        }
        if let Some(p) = self.min_p {
            s.min_p = p;
        }
        if let Some(r) = self.repeat_penalty {
            s.repeat_penalty = r;
        }
        if let Some(n) = self.repeat_last_n {
            s.repeat_last_n = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(p) = self.presence_penalty {
            s.presence_penalty = p;
        }
        if let Some(p) = self.frequency_penalty {
            s.frequency_penalty = p;
        }
        if let Some(bias) = &self.logit_bias {
            s.logit_bias = logit_bias(bias)?;
        }
        if let Some(seed) = self.seed {
            s.seed = Some(seed);
        }
        if let Some(c) = self.constraint()? {
            settings.constraint = Some(c);
        }
        if let Some(n) = self.draft_max {
            settings.draft_max = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(p) = self.plausibility {
            settings.plausibility = p;
        }
        match &self.stop {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => settings.stops = vec![s.clone()],
            Some(Value::Array(a)) => {
                settings.stops = a
                    .iter()
                    .map(|s| {
                        s.as_str().map(str::to_string).ok_or_else(|| {
                            invalid("stop", "must be a string or an array of strings")
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            Some(_) => return Err(invalid("stop", "must be a string or an array of strings")),
        }
        settings.check()
    }
}

impl Overrides {
    /// The constraint asked for by `grammar`, `json_schema` or `response_format` (at most
    /// one of them).
    fn constraint(&self) -> Result<Option<ConstraintSpec>> {
        let format = match &self.response_format {
            None | Some(Value::Null) => None,
            Some(f) => response_format(f)?,
        };
        let given: Vec<(&str, ConstraintSpec)> = [
            self.grammar.clone().map(|g| ("grammar", ConstraintSpec::Grammar(g))),
            self.json_schema.clone().map(|s| ("json_schema", ConstraintSpec::JsonSchema(s))),
            format.map(|f| ("response_format", f)),
        ]
        .into_iter()
        .flatten()
        .collect();
        match &given[..] {
            [] => Ok(None),
            [(_, c)] => Ok(Some(c.clone())),
            [(a, _), (b, _), ..] => {
                Err(invalid(b, format!("cannot be given with `{a}`: give one constraint")))
            }
        }
    }
}

/// OpenAI's `response_format`.
fn response_format(f: &Value) -> Result<Option<ConstraintSpec>> {
    let kind = f.get("type").and_then(Value::as_str).unwrap_or_default();
    let keys: Vec<&str> =
        f.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    let only = |allowed: &[&str]| match keys.iter().find(|k| !allowed.contains(k)) {
        Some(k) => Err(invalid("response_format", format!("has a key mood does not know: {k}"))),
        None => Ok(()),
    };
    match kind {
        "text" => only(&["type"]).map(|()| None),
        "json_object" => only(&["type"]).map(|()| Some(ConstraintSpec::JsonObject)),
        "json_schema" => {
            only(&["type", "json_schema"])?;
            let spec = f.get("json_schema").and_then(Value::as_object).ok_or_else(|| {
                invalid("response_format", "of type json_schema needs a `json_schema` object")
            })?;
            if let Some(k) = spec
                .keys()
                .find(|k| !["name", "schema", "strict", "description"].contains(&k.as_str()))
            {
                return Err(invalid(
                    "response_format",
                    format!("json_schema has a key mood does not know: {k}"),
                ));
            }
            let schema = spec.get("schema").cloned().unwrap_or(Value::Bool(true));
            Ok(Some(ConstraintSpec::JsonSchema(schema)))
        }
        _ => Err(invalid(
            "response_format",
            "must be an object whose type is text, json_object or json_schema",
        )),
    }
}

/// OpenAI's `logit_bias`: token ids as strings, biases from −100 to 100.
fn logit_bias(map: &Map<String, Value>) -> Result<Vec<(u32, f32)>> {
    map.iter()
        .map(|(k, v)| {
            let token: u32 = k.trim().parse().map_err(|_| {
                invalid("logit_bias", format!("keys must be token ids, got \"{k}\""))
            })?;
            let bias = v.as_f64().filter(|b| b.is_finite()).ok_or_else(|| {
                invalid("logit_bias", format!("values must be numbers, got {v} for token {token}"))
            })?;
            Ok((token, bias as f32))
        })
        .collect()
}

/// Refuses keys of `object` that are neither the caller's own (`own`) nor overrides.
pub fn refuse_unknown(object: &Map<String, Value>, own: &[&str]) -> Result<()> {
    match object.keys().find(|k| !own.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => {
            let known: Vec<&str> = own.iter().chain(&Overrides::KEYS).copied().collect();
            Err(invalid(k, format!("is not a setting mood knows (known: {})", known.join(", "))))
        }
    }
}

/// Reads a typed value from JSON; a wrong type or an unknown key becomes a [`crate::error::SettingError`]
/// naming the key.
pub fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            let key = rest.split('`').next().unwrap_or_default();
            return invalid(key, "is not a setting mood knows (a typo?)");
        }
        let setting = if path == "." { "request".to_string() } else { path };
        invalid(&setting, humanize(&inner))
    })
}

/// Rewords serde's "invalid type: string \"x\", expected f64" for people.
fn humanize(serde: &str) -> String {
    let Some((got, expected)) = serde.split_once(", expected ") else { return serde.to_string() };
    let got = got.trim_start_matches("invalid type: ").trim_start_matches("invalid value: ");
    let want = match expected {
        "f64" | "f32" => "a number",
        "u64" | "u32" | "usize" => "a whole number ≥ 0",
        "a string" => "a string",
        "a boolean" => "true or false",
        other => other,
    };
    format!("must be {want}, got {got}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SettingError;
    use serde_json::json;

    #[test]
    fn the_key_list_is_the_structs_fields() {
        // serde names every field of the struct when it refuses an unknown one.
        let e = serde_json::from_value::<Overrides>(json!({"no such key": 1})).unwrap_err();
        let message = e.to_string();
        let listed = message.split("expected one of ").nth(1).expect("serde lists the fields");
        let mut fields: Vec<&str> = listed
            .split(", ")
            .map(|f| f.trim_matches(|c: char| c == '`' || c.is_whitespace()))
            .collect();
        fields.retain(|f| !f.is_empty());
        let mut keys = Overrides::KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys, "Overrides::KEYS must name every field, and only those");
    }

    fn recipe() -> Recipe {
        Recipe::parse(
            "[reference]\nmodel='m'\n[[expert]]\nname='a'\nmodel='m'\nweight=0.5\n[[expert]]\nname='b'\nmodel='m'\nweight=0.5\n",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    fn defaults() -> Settings {
        Settings {
            max_tokens: 16,
            stops: vec!["x".into()],
            sampling: SamplingParams::default(),
            plausibility: 1e-4,
            byte_tolerance: crate::pipeline::bytes::DEFAULT_TOLERANCE,
            constraint: None,
            logprobs: None,
            draft_max: 0,
        }
    }

    fn apply(v: Value) -> Result<(Recipe, Settings)> {
        let Value::Object(mut m) = v else { panic!("an object") };
        let o = Overrides::take(&mut m)?;
        refuse_unknown(&m, &[])?;
        let (mut r, mut s) = (recipe(), defaults());
        o.apply(&mut r, &mut s, false)?;
        Ok((r, s))
    }

    #[test]
    fn overrides_apply_and_others_stay() {
        let (r, s) = apply(json!({"weights": {"b": 0.9}, "max_tokens": 3, "temperature": 0.5,
            "top_k": 2, "seed": 9, "stop": ["."], "top_p": 0.5, "min_p": 0.1, "plausibility": 0}))
        .unwrap();
        assert_eq!(r.weights, vec![0.5, 0.9]);
        assert_eq!(s.max_tokens, 3);
        assert_eq!(s.sampling.temperature, 0.5);
        assert_eq!((s.sampling.top_k, s.sampling.seed), (2, Some(9)));
        assert_eq!((s.sampling.top_p, s.sampling.min_p), (0.5, 0.1));
        assert_eq!(s.stops, vec!["."]);
        assert_eq!(s.plausibility, 0.0);
        let (r, s) =
            apply(json!({"weights": [1, 3], "divergence": "jsd", "normalize_weights": true,
            "stop": null}))
            .unwrap();
        assert_eq!(r.weights, vec![0.25, 0.75]);
        assert_eq!(s.stops, vec!["x"], "null leaves the default");
    }

    #[test]
    fn bad_overrides_name_the_setting() {
        let cases = [
            (json!({"temprature": 1}), "temprature", "not a setting"),
            (json!({"temperature": "hot"}), "temperature", "must be a number, got string"),
            (json!({"top_k": -1}), "top_k", "whole number"),
            (json!({"seed": 1.5}), "seed", "whole number"),
            (json!({"top_p": 2}), "top_p", "(0, 1]"),
            (json!({"max_tokens": 0}), "max_tokens", "from 1"),
            (json!({"weights": [1]}), "weights", "1 value(s)"),
            (json!({"weights": {"zz": 1}}), "weights", "'zz'"),
            (json!({"divergence": "tv"}), "divergence", "barrier"),
            (json!({"divergence": "jsd", "weights": [0.7, 0.7]}), "weights", "sum to 1"),
            (json!({"stop": 3}), "stop", "string"),
            (json!({"plausibility": 1}), "plausibility", "[0, 1)"),
            (json!({"normalize_weights": "yes"}), "normalize_weights", "true or false"),
        ];
        for (v, setting, want) in cases {
            let e = apply(v.clone()).unwrap_err();
            let s = e.downcast_ref::<SettingError>().unwrap_or_else(|| panic!("{v}: {e:#}"));
            assert_eq!(s.setting, setting, "{v}: {s}");
            assert!(s.to_string().contains(want), "{v}: {s}");
        }
    }

    #[test]
    fn rendering_words_every_setting_name() {
        let e = SettingError::new("weights", "must sum to 1; set `normalize_weights` to rescale");
        let flag = |s: &str| format!("--{}", s.replace('_', "-"));
        assert_eq!(e.render(&flag), "--weights must sum to 1; set --normalize-weights to rescale");
        assert_eq!(e.to_string(), "weights must sum to 1; set normalize_weights to rescale");
    }
}
