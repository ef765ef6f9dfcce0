//! MOD with two prompted experts on one model file (one copy of the weights in memory): the
//! same prompt at three weightings, streamed as it is decoded.
//!
//!     cargo run --release --example steer [-- MODEL.gguf]

use mood::{Flow, Mood, Options, Params, Policy, Recipe};
use std::io::Write;

fn main() -> Result<(), mood::Error> {
    let model = std::env::args().nth(1).unwrap_or("models/gemma-3-270m-q4_k_m.gguf".into());
    mood::silence_llama_log();

    let recipe = Recipe::with_experts(vec![
        Policy::new("poet", &model).prefix("A short rhyming poem for children:\n\n"),
        Policy::new("scientist", &model).prefix("From a science textbook, chapter 4:\n\n"),
    ])?;
    let mood = Mood::load(recipe, Options::default())?;
    let mut session = mood.session();

    for weights in [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]] {
        print!("(poet, scientist) = {weights:?}\nThe ocean");
        let params = Params::new().weights(weights).max_tokens(40);
        let out = session.generate_streaming("The ocean", &params, |chunk| {
            print!("{}", chunk.text);
            let _ = std::io::stdout().flush();
            Flow::Continue
        })?;
        println!("\n[{} tokens, {:.1} tok/s]\n", out.tokens.len(), out.timings.tokens_per_second);
    }
    Ok(())
}
