//! A LoRA expert: one base model file, an adapter applied to one policy's context only, and
//! MOD between the base and the adapted policy. `models/fixtures/test-lora.gguf` is a random
//! test adapter (made by `models/setup.sh`); put a real one, tuned for an objective, in its
//! place.
//!
//!     cargo run --release --example lora [-- MODEL.gguf ADAPTER.gguf]

use mood::{Mood, Options, Params, Policy, Recipe};

fn main() -> Result<(), mood::Error> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or("models/gemma-3-270m-q4_k_m.gguf".into());
    let adapter = args.next().unwrap_or("models/fixtures/test-lora.gguf".into());
    mood::silence_llama_log();

    let recipe = Recipe::with_experts(vec![
        Policy::new("base", &model),
        Policy::new("adapted", &model).lora(&adapter, 1.0),
    ])?;
    let mood = Mood::load(recipe, Options::default())?;
    let mut session = mood.session();
    for weights in [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]] {
        let out = session.generate("The ocean", &Params::new().weights(weights).max_tokens(24))?;
        println!("(base, adapted) = {weights:?}: The ocean{}", out.text);
    }
    Ok(())
}
