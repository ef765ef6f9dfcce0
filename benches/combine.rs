//! Host-side cost of one decoding step at the default model's vocabulary (262,144 tokens):
//! the combiner for every divergence with M = 1, 2, 4 experts, greedy and sampling, and the
//! sampler. Logits are synthetic but shaped like a language model's: a bulk around 0 and a
//! few tokens 15–20 nats above it. Policies are variants of one model (as prompted experts
//! are): a shared base plus noise of their own and a few boosted tokens of their own.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use mood::pipeline::combine::{logsumexp, Combiner, DEFAULT_PLAUSIBILITY};
use mood::pipeline::divergence::Divergence;
use mood::pipeline::recipe::{Policy, Recipe};
use mood::pipeline::sample::{Rng, Sampler, SamplingParams};

const VOCAB: usize = 262_144;

fn logits(seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut l: Vec<f32> = (0..VOCAB)
        .map(|_| {
            // Sum of 4 uniforms: roughly normal, σ ≈ 2.
            let s: f64 = (0..4).map(|_| rng.next_f64()).sum();
            ((s - 2.0) * 3.5) as f32
        })
        .collect();
    for k in 0..20 {
        let v = (rng.next_u64() % VOCAB as u64) as usize;
        l[v] = 15.0 + (k % 6) as f32;
    }
    l
}

/// Policy `k`: the shared base, plus per-token noise (σ ≈ 0.5) and boosted tokens of its own.
fn policy(base: &[f32], k: u64) -> Vec<f32> {
    let own = logits(100 + k);
    base.iter().zip(&own).map(|(b, o)| if *o > 10.0 { *o } else { b + 0.25 * o }).collect()
}

/// A recipe with a reference and one expert per weight, and its combiner.
fn recipe_and_combiner(div: Divergence, w: &[f64], plausibility: f64) -> (Recipe, Combiner) {
    let policy = |name: String| Policy { name, ..Policy::default() };
    let experts = (0..w.len()).map(|i| policy(format!("e{i}"))).collect();
    let recipe = Recipe::new(div, Some(policy("reference".into())), experts, w.to_vec()).unwrap();
    let combiner = Combiner::new(div, &recipe.terms().unwrap(), plausibility).unwrap();
    (recipe, combiner)
}

/// The logits the combiner takes, in term order (policy k of the recipe is `policies[k]`).
fn inputs<'a>(recipe: &Recipe, comb: &Combiner, policies: &'a [Vec<f32>]) -> Vec<&'a [f32]> {
    comb.terms().iter().map(|(r, _)| &policies[recipe.index_of(*r)][..]).collect()
}

fn bench_combine(c: &mut Criterion) {
    let base = logits(0);
    let policies: Vec<Vec<f32>> = (0..5).map(|k| policy(&base, k)).collect();
    let divergences = [
        Divergence::ReverseKl,
        Divergence::ForwardKl,
        Divergence::Jsd,
        Divergence::Alpha(0.5),
        Divergence::Jeffreys,
    ];
    let mut out = vec![0f32; VOCAB];
    for greedy in [true, false] {
        let mode = if greedy { "greedy" } else { "sample" };
        let mut group = c.benchmark_group(format!("combine_{mode}"));
        for div in divergences {
            for m in [1usize, 2, 4] {
                let w = vec![1.0 / m as f64; m];
                let (recipe, mut comb) = recipe_and_combiner(div, &w, DEFAULT_PLAUSIBILITY);
                let inputs = inputs(&recipe, &comb, &policies);
                group.bench_with_input(BenchmarkId::new(div.name(), m), &m, |b, _| {
                    b.iter(|| comb.combine(black_box(&inputs), greedy, &mut out))
                });
            }
        }
        group.finish();
    }
    // Exact sampling over the whole vocabulary (--plausibility 0), M = 2.
    let mut group = c.benchmark_group("combine_sample_whole_vocabulary");
    group.sample_size(10);
    for div in divergences {
        let (recipe, mut comb) = recipe_and_combiner(div, &[0.5, 0.5], 0.0);
        let inputs = inputs(&recipe, &comb, &policies);
        group.bench_function(div.name(), |b| {
            b.iter(|| comb.combine(black_box(&inputs), false, &mut out))
        });
    }
    group.finish();
    let x = logits(9);
    c.bench_function("logsumexp_262k", |b| b.iter(|| logsumexp(black_box(&x))));
}

fn bench_sample(c: &mut Criterion) {
    let mut group = c.benchmark_group("sample");
    let base = logits(7);
    let history: Vec<u32> = (0..64).collect();
    let configs = [
        ("greedy", SamplingParams { temperature: 0.0, ..SamplingParams::default() }),
        ("top_k40_top_p_min_p", SamplingParams { temperature: 0.8, ..SamplingParams::default() }),
        (
            "full_vocabulary",
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..SamplingParams::default()
            },
        ),
    ];
    for (name, params) in configs {
        let mut sampler = Sampler::new(params, 1);
        let mut work = base.clone();
        group.bench_function(name, |b| {
            b.iter(|| {
                work.copy_from_slice(&base);
                black_box(sampler.sample(&mut work, &history))
            })
        });
    }
    group.finish();
}

/// The same sampling done by llama.cpp's sampler chain (penalties, top-k, top-p, min-p,
/// temperature, a seeded draw) on the same logits, the candidate array built each step as a
/// caller of the chain must: the measurement behind keeping the sampler of our own.
fn bench_llama_cpp_chain(c: &mut Criterion) {
    use llama_cpp_2::sampling::LlamaSampler;
    use llama_cpp_2::token::data::LlamaTokenData;
    use llama_cpp_2::token::data_array::LlamaTokenDataArray;
    use llama_cpp_2::token::LlamaToken;

    let mut group = c.benchmark_group("llama_cpp_chain");
    let base = logits(7);
    let history: Vec<u32> = (0..64).collect();
    let n_vocab = VOCAB as i32;
    let penalties = || LlamaSampler::penalties(n_vocab, 64, 1.1, 0.0, 0.0);
    let chains = [
        ("greedy", vec![penalties(), LlamaSampler::greedy()]),
        (
            "top_k40_top_p_min_p",
            vec![
                penalties(),
                LlamaSampler::top_k(40),
                LlamaSampler::top_p(0.95, 1),
                LlamaSampler::min_p(0.05, 1),
                LlamaSampler::temp(0.8),
                LlamaSampler::dist(1),
            ],
        ),
        ("full_vocabulary", vec![penalties(), LlamaSampler::temp(1.0), LlamaSampler::dist(1)]),
    ];
    for (name, samplers) in chains {
        let mut chain = LlamaSampler::chain_simple(samplers);
        for &t in &history {
            chain.accept(LlamaToken(t as i32));
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let data = base
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0));
                let mut array = LlamaTokenDataArray::from_iter(data, false);
                array.apply_sampler(&mut chain);
                black_box(array.selected_token())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_combine, bench_sample, bench_llama_cpp_chain);
criterion_main!(benches);
