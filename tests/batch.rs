//! `mood batch` and `mood score` end to end: equality with `generate`, kill and resume, bad
//! lines, and implicit rewards against an independent log-likelihood.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-batch-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// A scratch JSONL file with one line `{"id": i, "prompt": prompts[i]}` per prompt.
fn prompts_file(name: &str, prompts: &[&str]) -> PathBuf {
    let lines: String = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{{\"id\": {i}, \"prompt\": \"{p}\"}}\n"))
        .collect();
    scratch_with(name, &lines)
}

/// A scratch file holding `text`.
fn scratch_with(name: &str, text: &str) -> PathBuf {
    let p = scratch(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `mood batch` of the demo recipe from `input` to `output`, with `extra` flags.
fn batch_command(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mood"));
    command.arg("batch").arg("-r").arg(demo_recipe()).arg("-i").arg(input).arg("-o").arg(output);
    command.args(extra);
    command
}

fn batch(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    batch_command(input, output, extra).output().unwrap()
}

#[test]
fn batch_records_equal_generate_json() {
    let input = scratch_with(
        "eq-in.jsonl",
        "{\"id\": 1, \"prompt\": \"The ocean\"}\n{\"id\": \"moon\", \"prompt\": \"The moon\", \"weights\": [0.8, 0.2], \"max_tokens\": 9, \"stop\": \"\\n\\n\"}\n",
    );
    let output = scratch("eq-out.jsonl");
    let out = batch(&input, &output, &["-n", "14"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = read_jsonl(&output);
    assert_eq!(recs.len(), 2);
    let g1 = generate_demo(&["-p", "The ocean", "-n", "14"]);
    let g2 = generate_demo(&["-p", "The moon", "-w", "0.8,0.2", "-n", "9", "--stop", "\n\n"]);
    for (r, g) in recs.iter().zip([&g1, &g2]) {
        for k in ["text", "tokens", "finish_reason", "weights", "prompt_tokens"] {
            assert_eq!(r[k], g[k], "{k} of {}", r["id"]);
        }
    }
    assert_eq!(recs[1]["settings"]["max_tokens"], 9);
    assert_eq!(recs[1]["id"], "moon");
}

#[test]
fn killed_batch_resumes_to_the_uninterrupted_result() {
    let prompts = ["The ocean", "The moon", "A river", "The forest", "My town", "The sky"];
    let input = prompts_file("kill-in.jsonl", &prompts);
    let full = scratch("kill-full.jsonl");
    // Without speculation: draft widths follow measured timings, and a wider verification
    // pass's batch noise can flip a greedy near-tie between two runs.
    let settings = ["-n", "40", "--draft-max", "0"];
    assert!(batch(&input, &full, &settings).status.success());

    let output = scratch("kill-out.jsonl");
    let mut child = batch_command(&input, &output, &settings).spawn().unwrap();
    // Kill it (SIGKILL) once a record or two are out, well before the end.
    let partial = kill_after_lines(&mut child, &output, 2, b"{\"id\": 99, \"text\": \"cut sh");
    assert!(partial < prompts.len(), "the run finished before it could be killed");

    let out = batch(&input, &output, &[&settings[..], &["--resume"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut got = read_jsonl(&output);
    got.sort_by_key(|r| r["id"].as_u64());
    let want = read_jsonl(&full);
    assert_eq!(got.len(), prompts.len(), "every id exactly once");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["id"], w["id"]);
        assert_eq!(g["tokens"], w["tokens"], "id {}", g["id"]);
    }
}

#[test]
fn bad_lines_get_error_records_and_fail_fast_stops() {
    let input = scratch_with(
        "bad-in.jsonl",
        "{\"id\": 1, \"prompt\": \"The ocean\"}\nnot json\n{\"id\": 1, \"prompt\": \"again\"}\n{\"id\": 3}\n{\"id\": 4, \"prompt\": \"x\", \"top_p\": 5}\n{\"id\": 5, \"prompt\": \"The sky\"}\n",
    );
    let output = scratch("bad-out.jsonl");
    let out = batch(&input, &output, &["-n", "4"]);
    assert!(out.status.success());
    let recs = read_jsonl(&output);
    assert_eq!(recs.len(), 6);
    let errors: Vec<(u64, &str)> = recs
        .iter()
        .filter_map(|r| r.get("error").map(|e| (r["line"].as_u64().unwrap(), e.as_str().unwrap())))
        .collect();
    assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    assert!(errors[0].1.contains("invalid JSON"));
    assert!(errors[1].1.contains("duplicate id"));
    // Records name settings as JSON writes them, never as command-line flags.
    assert!(errors[2].1.contains("prompt is missing"), "{}", errors[2].1);
    assert!(errors[3].1.contains("top_p must be in (0, 1]"), "{}", errors[3].1);
    assert!(errors.iter().all(|e| !e.1.contains("--")), "{errors:?}");
    assert!(recs[5]["text"].is_string(), "the line after the errors completes");

    let output = scratch("bad-ff.jsonl");
    let out = batch(&input, &output, &["-n", "4", "--fail-fast"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("input line 2"));
    // Every line is checked before decoding starts: nothing is decoded.
    assert_eq!(read_jsonl(&output).len(), 1, "just the error record");
}

/// Log-likelihood of `response` after `prompt` in a plain llama.cpp context (see
/// [`PlainScorer::log_likelihood`]).
fn plain_log_likelihood(
    model: &llama_cpp_2::model::LlamaModel,
    prompt: &str,
    response: &str,
) -> f64 {
    let r = model.vocab().tokenize(response.as_bytes(), false, false);
    PlainScorer::new(model)
        .log_likelihood(prompt, &r.iter().map(|t| t.0 as u32).collect::<Vec<_>>())
}

#[test]
fn implicit_rewards_equal_independent_log_likelihoods() {
    let response = " is a beautiful place, full of fish and waves.";
    let input = scratch_with(
        "score-in.jsonl",
        &format!("{{\"id\": 1, \"prompt\": \"The ocean\", \"response\": \"{response}\"}}\n"),
    );
    let output = scratch("score-out.jsonl");
    let demo = demo_recipe();
    let out = mood(&[
        "score",
        "-r",
        demo.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--beta",
        "0.5",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec = &read_jsonl(&output)[0];
    let s = &rec["scores"];
    let model = load_model(&default_model());
    let ll_ref = plain_log_likelihood(&model, "The ocean", response);
    let ll_poet = plain_log_likelihood(&model, &format!("{POET}The ocean"), response);
    let ll_sci = plain_log_likelihood(&model, &format!("{SCIENTIST}The ocean"), response);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-3 * b.abs().max(1.0);
    assert!(close(s["log_likelihood"]["reference"].as_f64().unwrap(), ll_ref), "{s} vs {ll_ref}");
    assert!(close(s["log_likelihood"]["poet"].as_f64().unwrap(), ll_poet), "{s} vs {ll_poet}");
    assert!(close(s["rewards"]["poet"].as_f64().unwrap(), 0.5 * (ll_poet - ll_ref)), "{s}");
    assert!(close(s["rewards"]["scientist"].as_f64().unwrap(), 0.5 * (ll_sci - ll_ref)), "{s}");

    // batch --score carries the same fields.
    let binput = scratch_with("score-batch-in.jsonl", "{\"id\": 1, \"prompt\": \"The ocean\"}\n");
    let boutput = scratch("score-batch-out.jsonl");
    assert!(batch(&binput, &boutput, &["-n", "6", "--score"]).status.success());
    let r = &read_jsonl(&boutput)[0];
    assert!(
        r["scores"]["rewards"]["poet"].is_number()
            && r["scores"]["rewards"]["scientist"].is_number()
    );
}

#[test]
fn parallel_lanes_give_greedy_mod_outputs_up_to_batch_noise() {
    use mood::pipeline::combine::Combiner;
    use mood::pipeline::engine::{SessionOptions, Strategy};
    let prompts = ["The ocean", "The moon", "A river", "The forest"];
    let input = prompts_file("par-in.jsonl", &prompts);
    let output = scratch("par-out.jsonl");
    // Drafts off: the noise checked here is that of lanes batched together, not that of
    // verification passes whose widths follow measured timings.
    let settings = ["-n", "24", "--parallel", "4", "--repeat-penalty", "1", "--draft-max", "0"];
    let out = batch(&input, &output, &settings);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = read_jsonl(&output);
    assert_eq!(recs.len(), 4);

    // Teacher-force each output through a plain one-lane session: every token must be the
    // greedy MOD choice, or within llama.cpp's batch-split noise of it (docs/mod.md: logits move
    // by up to ~0.2 nats with how tokens are batched; lanes batch tokens of several prompts).
    let recipe = mood::pipeline::recipe::Recipe::load(&demo_recipe()).unwrap();
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = common::engine(&policies, Default::default()).unwrap();
    let options = SessionOptions { threads: 2, ctx_size: 256, strategy: Strategy::Threads };
    let mut near_ties = 0;
    for rec in &recs {
        let prompt = prompts[rec["id"].as_u64().unwrap() as usize];
        let mut combiner = Combiner::new(recipe.divergence, &recipe.terms().unwrap(), 0.0).unwrap();
        let members = recipe.members().unwrap();
        let mut session = engine.open_session(&members, 1, options).unwrap();
        let tokens: Vec<_> = members
            .iter()
            .map(|&m| Some(engine.tokenize(m, &format!("{}{prompt}", policies[m].prefix))))
            .collect();
        session.prefill_lane(0, &tokens, false, None).unwrap();
        let mut combined = vec![0f32; engine.n_common_vocab()];
        for (step, t) in tokens_of(rec).into_iter().enumerate() {
            let inputs: Vec<&[f32]> = (0..members.len()).map(|k| session.logits_in(k, 0)).collect();
            combiner.combine(&inputs, true, &mut combined);
            let best = argmax(&combined);
            let gap = combined[best as usize] - combined[t as usize];
            assert!(gap < 0.3, "id {} step {step}: chose {t}, greedy {best}, gap {gap}", rec["id"]);
            near_ties += usize::from(best != t);
            session.step(&[Some(llama_cpp_2::token::LlamaToken(t as i32))]).unwrap();
        }
    }
    assert!(near_ties <= 4, "{near_ties} near-tie flips in 96 tokens");
}
