//! Host-side cost of one decoding step at the default model's vocabulary (262,144 tokens):
//! combining M policies' logits (reverse KL) and sampling from the result.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use mood::combine::{log_softmax, weighted_sum};
use mood::sample::{Rng, Sampler, SamplingParams};

const VOCAB: usize = 262_144;

fn logits(seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..VOCAB).map(|_| (rng.next_f64() * 30.0 - 20.0) as f32).collect()
}

fn bench_combine(c: &mut Criterion) {
    let mut group = c.benchmark_group("reverse_kl_combine");
    for m in [1usize, 2, 4] {
        let inputs: Vec<Vec<f32>> = (0..m as u64).map(logits).collect();
        let views: Vec<&[f32]> = inputs.iter().map(|v| &v[..]).collect();
        let coeffs = vec![1.0 / m as f32; m];
        let mut out = vec![0f32; VOCAB];
        group.bench_with_input(BenchmarkId::new("weighted_sum", m), &m, |b, _| {
            b.iter(|| weighted_sum(black_box(&coeffs), black_box(&views), &mut out))
        });
    }
    let mut x = logits(9);
    group.bench_function("log_softmax", |b| b.iter(|| log_softmax(black_box(&mut x))));
    group.finish();
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
        let mut sampler = Sampler::new(params);
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

criterion_group!(benches, bench_combine, bench_sample);
criterion_main!(benches);
