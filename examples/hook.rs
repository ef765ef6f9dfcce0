//! A combination of one's own, step by step: each policy's next-token log-probabilities
//! come to the caller, who picks the token. Here: the reverse-KL MOD of two prompted
//! experts written out by hand (the argmax of the weighted sum of their log-probabilities),
//! printed next to the library's own greedy MOD for the same weights, without repetition
//! penalty: the two texts agree (unless two tokens tie to within llama.cpp's rounding).
//!
//!     cargo run --release --example hook [-- MODEL.gguf]

use mood::{Mood, Options, Params, Policy, Recipe};

fn main() -> Result<(), mood::Error> {
    let model = std::env::args().nth(1).unwrap_or("models/gemma-3-270m-q4_k_m.gguf".into());
    mood::silence_llama_log();
    let recipe = Recipe::with_experts(vec![
        Policy::new("poet", &model).prefix("A short rhyming poem for children:\n\n"),
        Policy::new("scientist", &model).prefix("From a science textbook, chapter 4:\n\n"),
    ])?;
    let mood = Mood::load(recipe, Options::default())?;
    let weights = [0.3f32, 0.7];

    let mut session = mood.session();
    let mut steps = session.steps("The ocean", 32)?;
    while !steps.is_done() {
        let lp = steps.logprobs();
        let score = |v: usize| weights[0] * lp[0][v] + weights[1] * lp[1][v];
        let best = (0..lp[0].len()).max_by(|&a, &b| score(a).total_cmp(&score(b)));
        steps.choose(best.unwrap_or(0) as u32)?;
    }
    println!("by hand: The ocean{}", steps.text());

    let params = Params::new().weights([0.3, 0.7]).repeat_penalty(1.0).max_tokens(32);
    let out = mood.session().generate("The ocean", &params)?;
    println!("mood:    The ocean{}", out.text);
    Ok(())
}
