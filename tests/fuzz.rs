//! Property tests of every input path: recipes, batch lines, HTTP bodies, sampling settings
//! and logits, chat commands, stop strings. Generated values lean hostile (NaN, ±∞, 1e308,
//! negative, huge integers, odd Unicode, wrong types, unknown keys). The properties: nothing
//! panics, a refusal is one line (or a 4xx with JSON), and afterwards a normal request still
//! gets the right answer.

mod common;

use common::*;
use mood::apps::batch::{openai, parse_line};
use mood::apps::chat::{Chat, Input};
use mood::apps::openai::request::{self as api, Kind};
use mood::apps::records::read_openai_record;
use mood::pipeline::decode;
use mood::pipeline::divergence::Divergence;
use mood::pipeline::engine::{Engine, SessionOptions, Strategy as Layout};
use mood::pipeline::recipe::Recipe;
use mood::pipeline::sample::{Sampler, SamplingParams};
use mood::pipeline::settings::Settings;
use mood::pipeline::text::TextStream;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::OnceLock;

/// Two prompted experts and a reference on the tiny test model.
fn tiny_recipe() -> Recipe {
    let model = tiny("a");
    let text = format!(
        "[reference]\nmodel = {model:?}\n[[expert]]\nname = 'a'\nmodel = {model:?}\nprefix = 'the '\nweight = 0.5\n\
         [[expert]]\nname = 'b'\nmodel = {model:?}\nprefix = 'a '\nweight = 0.5\n"
    );
    Recipe::parse(&text, Path::new(".")).unwrap()
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let policies: Vec<_> = tiny_recipe().policies().cloned().collect();
        common::engine(&policies, Default::default()).unwrap()
    })
}

fn defaults() -> Settings {
    Settings {
        max_tokens: 6,
        stops: vec![],
        sampling: SamplingParams { repeat_penalty: 1.0, ..SamplingParams::default() },
        plausibility: 1e-4,
        byte_tolerance: mood::pipeline::bytes::DEFAULT_TOLERANCE,
        constraint: None,
        logprobs: None,
        draft_max: 0,
    }
}

const OPTIONS: SessionOptions =
    SessionOptions { threads: 1, ctx_size: 64, strategy: Layout::Threads };

/// A normal request gets the greedy tokens of an independent llama.cpp loop (reverse KL
/// with weights (1, 0) is expert a alone).
fn a_normal_request_still_works() {
    let engine = engine();
    let mut recipe = tiny_recipe();
    recipe.set_weights(vec![1.0, 0.0]).unwrap();
    let g = decode::generate(engine, &recipe, "cat", &defaults(), OPTIONS, &mut |_| {}).unwrap();
    let model = load_model(&tiny("a"));
    let mut plain = Plain::new(&model, 64, 1);
    let mut logits = plain.prompt("the cat");
    let mut want = Vec::new();
    while want.len() < 6 {
        let t = argmax(&logits);
        if plain.is_eog(t) {
            break;
        }
        want.push(t);
        logits = plain.feed(t);
    }
    assert_eq!(g.tokens, want);
}

/// Hostile JSON values.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(1e308),
            Just(-1e308),
            Just(5e-324),
            Just(0.0),
            Just(-0.0),
            Just(0.5),
            Just(1.0),
            Just(2.0),
            -3.0..3.0f64
        ]
        .prop_map(|x| json!(x)),
        ".{0,12}".prop_map(Value::String),
        Just(json!("   ")),
        Just(json!("\u{0}\u{202e}\u{fffd}é€😀")),
        Just(json!("alpha:1e-300")),
        Just(json!("jsd")),
        Just(json!("tv")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}|a|b|poet", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object with keys a request may hold (and some it may not).
fn object(extra: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    let keys: Vec<&'static str> = [
        "weights",
        "divergence",
        "normalize_weights",
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repeat_penalty",
        "repeat_last_n",
        "seed",
        "stop",
        "plausibility",
        "temprature",
        "n",
        "stream",
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    prop::collection::vec((prop::sample::select(keys), value()), 0..6)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn one_line(e: &anyhow::Error) -> bool {
    !format!("{e:#}").contains('\n')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn recipes_never_panic(fragments in prop::collection::vec(prop_oneof![
        Just("[reference]\n".to_string()),
        Just("[[expert]]\n".to_string()),
        Just("model = 'm.gguf'\n".to_string()),
        Just("name = 'reference'\n".to_string()),
        Just("name = 'x'\n".to_string()),
        Just("divergence = 'alpha:0'\n".to_string()),
        Just("weight = nan\n".to_string()),
        Just("weight = 1e308\n".to_string()),
        Just("weight = -inf\n".to_string()),
        Just("lora_scale = 2\n".to_string()),
        Just("n_gpu_layers = -1\n".to_string()),
        Just("colour = 'red'\n".to_string()),
        ".{0,20}",
    ], 0..10)) {
        let text = fragments.concat();
        if let Err(e) = Recipe::parse(&text, Path::new(".")) {
            prop_assert!(one_line(&e), "{text:?}: {e:#}");
        }
    }

    #[test]
    fn batch_lines_never_panic(mut obj in object(&["id", "prompt"]), id in value(), prompt in value()) {
        if !obj.contains_key("id") { obj.insert("id".into(), id); }
        if !obj.contains_key("prompt") { obj.insert("prompt".into(), prompt); }
        let line = Value::Object(obj).to_string();
        match parse_line(&line, &tiny_recipe(), &defaults(), false) {
            Ok(req) => {
                prop_assert!(req.settings.check().is_ok());
                prop_assert!(req.recipe.terms().is_ok());
            }
            Err(e) => prop_assert!(one_line(&e), "{line}: {e:#}"),
        }
    }

    #[test]
    fn http_bodies_get_a_request_or_a_4xx(obj in object(&["prompt", "messages", "system_prompts", "model", "user"]), chat in any::<bool>()) {
        let body = Value::Object(obj).to_string();
        let kind = if chat { Kind::Chat } else { Kind::Completion };
        match api::parse(body.as_bytes(), kind, engine(), &tiny_recipe(), &defaults(), "none") {
            Ok(parsed) => prop_assert!(parsed.request.settings.check().is_ok()),
            Err(e) => {
                prop_assert!((400..500).contains(&e.status), "{body}: {} {}", e.status, e.message);
                prop_assert!(e.body()["error"]["message"].is_string());
            }
        }
    }

    #[test]
    fn openai_batch_lines_run_or_get_a_record_that_resume_reads_back(
        body in object(&["prompt", "messages", "model"]),
        custom_id in prop_oneof![3 => Just(json!("c1")), 1 => value()],
        url in prop_oneof![Just(json!("/v1/completions")), Just(json!("/v1/chat/completions")), value()],
        method in prop_oneof![3 => Just(json!("POST")), 1 => value()],
        extra in prop::option::weighted(0.2, value()),
        number in 1..1_000_000usize,
    ) {
        let mut line = serde_json::Map::new();
        line.insert("custom_id".into(), custom_id);
        line.insert("method".into(), method);
        line.insert("url".into(), url);
        line.insert("body".into(), Value::Object(body));
        if let Some(v) = extra {
            line.insert("colour".into(), v);
        }
        let text = Value::Object(line).to_string();
        let cx = openai::Context { model: "m", created: 0, template: "none" };
        match openai::parse(&text, engine(), &tiny_recipe(), &defaults(), &cx) {
            Ok(l) => prop_assert!(l.request.settings.check().is_ok() && !l.request.reuse_cache),
            Err(refusal) => {
                if let openai::Refusal::Body { error, .. } = &refusal {
                    prop_assert!((400..500).contains(&error.status), "{text}: {}", error.message);
                }
                let rec = openai::failure_record(&refusal, number);
                // Resuming reads it back as this line's record, not as an answer.
                prop_assert_eq!(read_openai_record(&rec), Some((number, None)), "{}", rec);
            }
        }
    }

    #[test]
    fn raw_openai_batch_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let cx = openai::Context { model: "m", created: 0, template: "none" };
        prop_assert!(openai::parse(&text, engine(), &tiny_recipe(), &defaults(), &cx).is_err());
    }

    #[test]
    fn raw_http_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Err(e) = api::parse(&bytes, Kind::Completion, engine(), &tiny_recipe(), &defaults(), "none") {
            prop_assert_eq!(e.status, 400);
        }
    }

    #[test]
    fn the_sampler_draws_a_finite_scored_token_or_says_there_is_none(
        logits in prop::collection::vec(prop_oneof![
            Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(f32::MAX),
            Just(f32::MIN), -50.0..50.0f32,
        ], 1..40),
        temperature in prop_oneof![Just(0.0), 0.001..1000.0f64],
        top_k in prop_oneof![Just(0usize), Just(usize::MAX), 1..50usize],
        top_p in 0.001..=1.0f64,
        min_p in 0.0..=1.0f64,
        penalty in 0.001..1000.0f64,
        presence in -2.0..=2.0f64,
        frequency in -2.0..=2.0f64,
        logit_bias in prop::collection::vec((0..60u32, -100.0..=100.0f32), 0..5),
        seed in any::<u64>(),
        history in prop::collection::vec(0..60u32, 0..10),
    ) {
        let params = SamplingParams { temperature, top_k, top_p, min_p, repeat_penalty: penalty,
            repeat_last_n: 64, presence_penalty: presence, frequency_penalty: frequency,
            logit_bias, seed: None };
        prop_assert!(params.check().is_ok());
        let mut sampler = Sampler::new(params, seed);
        let mut work = logits.clone();
        if let Some(t) = sampler.sample(&mut work, &history) {
            prop_assert!((t as usize) < logits.len());
            prop_assert!(work[t as usize].is_finite());
        }
    }

    #[test]
    fn sampling_settings_are_checked_not_trusted(
        temperature in any::<f64>(), top_p in any::<f64>(), min_p in any::<f64>(),
        penalty in any::<f64>(), presence in any::<f64>(), frequency in any::<f64>(),
        bias in any::<f32>(), seed in any::<u64>(),
    ) {
        let params = SamplingParams { temperature, top_k: 40, top_p, min_p, repeat_penalty: penalty,
            repeat_last_n: 64, presence_penalty: presence, frequency_penalty: frequency,
            logit_bias: vec![(1, bias)], seed: Some(seed) };
        if params.check().is_ok() {
            let mut sampler = Sampler::new(params, seed);
            let _ = sampler.sample(&mut [0.0, 1.0, f32::NAN], &[0]);
        }
    }

    #[test]
    fn divergence_names_never_panic(name in ".{0,16}|alpha:.{0,8}") {
        if let Err(e) = name.parse::<Divergence>() {
            prop_assert!(one_line(&e));
        }
    }

    #[test]
    fn chat_commands_never_panic(lines in prop::collection::vec(prop_oneof![
        Just("/weights 1e308,0".to_string()), Just("/weights nan".to_string()),
        Just("/weights -1,2".to_string()), Just("/divergence jsd".to_string()),
        Just("/divergence alpha:99".to_string()), Just("/temperature -1".to_string()),
        Just("/temperature 1e-9".to_string()), Just("/save /nonexistent/dir/x.json".to_string()),
        Just("/reset".to_string()), Just("/frob".to_string()), "/.{0,10}", ".{0,10}",
    ], 1..6)) {
        let mut chat = Chat::new(engine(), tiny_recipe(), defaults(), "none", OPTIONS).unwrap();
        for line in lines {
            match Input::parse(&line) {
                Ok(Some(Input::Message(_))) | Ok(None) => {}
                Ok(Some(input)) => {
                    if let Err(e) = chat.command(input) {
                        prop_assert!(one_line(&e), "{line}: {e:#}");
                    }
                }
                Err(e) => prop_assert!(one_line(&e), "{line}: {e:#}"),
            }
        }
    }

    #[test]
    fn text_streams_emit_exactly_their_text(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5), 0..20),
        stops in prop::collection::vec(".{1,3}", 0..3),
    ) {
        let mut t = TextStream::new(&stops);
        let mut emitted = String::new();
        for p in &pieces {
            let pushed = t.push(p);
            emitted.push_str(pushed.emit);
            if pushed.stopped { break; }
        }
        emitted.push_str(t.finish());
        prop_assert_eq!(&emitted, t.text());
        for s in &stops {
            prop_assert!(!t.text().contains(s.as_str()), "a stop string was let through");
        }
    }
}

#[test]
fn after_all_that_a_normal_request_gets_the_right_answer() {
    // Runs the hostile inputs above once more through one engine, then a normal request.
    let engine = engine();
    let bad = [
        r#"{"prompt": "   "}"#,
        r#"{"prompt": "x", "top_k": 18446744073709551615, "temperature": 1}"#,
        r#"{"prompt": "x", "weights": [1e308, -1e308]}"#,
        r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
    ];
    for body in bad {
        let _ = api::parse(
            body.as_bytes(),
            Kind::Completion,
            engine,
            &tiny_recipe(),
            &defaults(),
            "none",
        );
        let _ =
            api::parse(body.as_bytes(), Kind::Chat, engine, &tiny_recipe(), &defaults(), "none");
    }
    a_normal_request_still_works();
}
