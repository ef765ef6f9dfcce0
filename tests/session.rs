//! Sessions keep cached prompt starts: a lane's next prompt reuses what its own cache or
//! another lane's holds (a shared prefix is copied, not decoded again), and never reuses a
//! start that a sliding-window layer has already forgotten.

mod common;

use common::*;
use llama_cpp_2::token::LlamaToken;
use mood::pipeline::engine::{Engine, Session, SessionOptions, Strategy};
use mood::pipeline::recipe::Recipe;

const PREFIX: &str = "A short rhyming poem for children about the sea, the sky and the wind:\n\n";

fn poet_engine() -> Engine {
    let recipe = Recipe::load(&demo_recipe()).unwrap();
    let policies: Vec<_> = recipe.policies().cloned().collect();
    common::engine(&policies[..1], Default::default()).unwrap()
}

fn lanes(engine: &Engine, n: usize, ctx_size: u32) -> Session {
    let options = SessionOptions { threads: 1, ctx_size, strategy: Strategy::Threads };
    engine.open_session(&[0], n, options).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Logits after `next` from a plain llama.cpp context that decoded `first`, dropped all but
/// its first `keep` tokens, and decoded the rest of `next` (what a lane does when it reuses
/// its own cache; batch splits change llama.cpp's numbers, so the plain side mirrors them).
fn plain_reusing(first: &[LlamaToken], keep: usize, next: &[LlamaToken]) -> Vec<f32> {
    let model = load_model(&default_model());
    let mut plain = Plain::new(&model, 1024, 1);
    plain.decode(first);
    plain.truncate(keep);
    plain.decode(&next[keep..])
}

#[test]
fn a_lane_copies_the_prefix_another_lane_holds() {
    let engine = poet_engine();
    let first = engine.tokenize(0, &format!("{PREFIX}The ocean"));
    let second = engine.tokenize(0, &format!("{PREFIX}My town has a mill by the river"));
    let shared = first.iter().zip(&second).take_while(|(a, b)| a == b).count();
    assert!(shared >= 16, "the prompts share their prefix ({shared} tokens)");

    let mut session = lanes(&engine, 2, 512);
    // Lane 1 held something else before: the copy replaces it, it does not add to it.
    let other = engine.tokenize(0, "Tomorrow we will sail to the islands and fish");
    session.prefill_lane(1, &[Some(other)], false, None).unwrap();
    session.prefill_lane(0, &[Some(first.clone())], false, None).unwrap();
    let before = session.logits_in(0, 0).to_vec();
    let reused = session.prefill_lane(1, &[Some(second.clone())], true, None).unwrap();
    assert_eq!(reused, shared, "lane 1 takes the whole shared prefix from lane 0");

    // Lane 1 holds exactly the second prompt over lane 0's prefix: its logits are those of
    // a plain context that reuses its own cache the same way, and far from the first prompt's.
    let want = plain_reusing(&first, shared, &second);
    let got = session.logits_in(0, 1);
    assert!(max_diff(got, &want) < 1e-3, "copied prefix: {}", max_diff(got, &want));
    assert!(max_diff(got, &before) > 1.0, "lane 1 decoded its own prompt");
    // Lane 0 is untouched by the copy: stepping both lanes gives each its own continuation.
    let t = LlamaToken(argmax(&want) as i32);
    session.step(&[Some(t), Some(t)]).unwrap();
    let model = load_model(&default_model());
    let mut plain = Plain::new(&model, 1024, 1);
    plain.decode(&first);
    let want0 = plain.feed(t.0 as u32);
    assert!(max_diff(session.logits_in(0, 0), &want0) < 1e-3, "lane 0 after the copy");
}

#[test]
fn a_start_the_sliding_window_forgot_is_decoded_again() {
    let engine = poet_engine();
    // Gemma 3's sliding-window layers attend to the last 512 positions and keep cells for
    // 512 + 256 (one physical batch): a 1000-token prompt overwrites the start there.
    let filler = "The waves roll in and the waves roll out. ".repeat(100);
    let long = engine.tokenize(0, &format!("{PREFIX}{filler}"));
    assert!(long.len() > 900, "{} tokens", long.len());
    let next = engine.tokenize(0, &format!("{PREFIX}My town has a mill by the river"));
    let shared = long.iter().zip(&next).take_while(|(a, b)| a == b).count();

    for lane in [0, 1] {
        let mut session = lanes(&engine, 2, 1200);
        session.prefill_lane(0, &[Some(long.clone())], false, None).unwrap();
        let reused = session.prefill_lane(lane, &[Some(next.clone())], true, None).unwrap();
        assert_eq!(reused, 0, "lane {lane}: the {shared}-token start is gone from the window");
        let mut fresh = lanes(&engine, 2, 1200);
        fresh.prefill_lane(lane, &[Some(next.clone())], false, None).unwrap();
        let d = max_diff(session.logits_in(0, lane), fresh.logits_in(0, lane));
        assert!(d < 1e-4, "lane {lane}: {d}");
    }
}
