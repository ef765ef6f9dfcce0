//! Weight sweeps: decode a prompt set at every weight vector of a grid, score each output
//! with the experts' implicit rewards, and tabulate the means — the Pareto front of MOD.

use crate::apps::score::{Response, Scorer};
use crate::pipeline::decode::{decode_all, Request};
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::{invalid, Settings};
use anyhow::{bail, Result};
use serde::Serialize;

/// Weight vectors from `--grid A:B:STEP` (two experts: (w, 1 − w) for w = A, A+STEP, …, B).
pub fn grid(spec: &str) -> Result<Vec<Vec<f64>>> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [a, b, step] = parts[..] else {
        return Err(invalid("grid", "takes START:END:STEP, e.g. 0:1:0.1"));
    };
    let num = |s: &str| -> Result<f64> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| invalid("grid", format!("'{s}' is not a number")))
    };
    let (a, b, step) = (num(a)?, num(b)?, num(step)?);
    if step <= 0.0 || b < a {
        return Err(invalid("grid", "needs START ≤ END and STEP > 0"));
    }
    let n = ((b - a) / step + 1e-9).floor();
    if n > 10_000.0 {
        return Err(invalid("grid", format!("gives {} points; use a larger STEP", n + 1.0)));
    }
    let n = n as usize;
    Ok((0..=n).map(|i| a + i as f64 * step).map(|w| vec![round(w), round(1.0 - w)]).collect())
}

/// Every weight vector on the simplex of `experts` dimensions with coordinates in steps of
/// 1/n (a simplex lattice).
pub fn simplex(experts: usize, n: usize) -> Result<Vec<Vec<f64>>> {
    if experts == 0 || n == 0 {
        return Err(invalid("simplex", "needs N ≥ 1 and at least one expert"));
    }
    // C(n + experts − 1, experts − 1) points: refuse early, before enumerating them.
    let mut count = 1.0f64;
    for k in 1..experts {
        count = count * (n + k) as f64 / k as f64;
    }
    if count > 10_000.0 {
        return Err(invalid(
            "simplex",
            format!("{n} gives {count:.0} points for {experts} experts; use a smaller N"),
        ));
    }
    let mut out = Vec::new();
    let mut counts = vec![0usize; experts];
    fn fill(i: usize, left: usize, n: usize, counts: &mut Vec<usize>, out: &mut Vec<Vec<f64>>) {
        if i + 1 == counts.len() {
            counts[i] = left;
            out.push(counts.iter().map(|&c| round(c as f64 / n as f64)).collect());
            return;
        }
        for c in (0..=left).rev() {
            counts[i] = c;
            fill(i + 1, left - c, n, counts, out);
        }
    }
    fill(0, n, n, &mut counts, &mut out);
    Ok(out)
}

/// An explicit list: `0.2,0.8;0.5,0.5`.
pub fn list(spec: &str) -> Result<Vec<Vec<f64>>> {
    spec.split(';')
        .filter(|s| !s.trim().is_empty())
        .map(crate::pipeline::recipe::parse_weights)
        .collect()
}

fn round(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// One row of the sweep table: means over the prompt set at one weight vector.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub weights: Vec<f64>,
    /// Mean implicit reward per expert, in recipe order.
    pub rewards: Vec<f64>,
    pub mean_tokens: f64,
    pub tokens_per_second: f64,
    pub errors: usize,
}

/// What to sweep.
pub struct Plan<'a> {
    pub recipe: &'a Recipe,
    pub prompts: &'a [String],
    pub weights: &'a [Vec<f64>],
    pub settings: &'a Settings,
    /// β of the implicit rewards.
    pub beta: f64,
    /// Generations decoded at once.
    pub parallel: usize,
    pub session: SessionOptions,
}

/// Decodes every prompt at every weight vector (up to `parallel` at once), scores the outputs
/// and returns one row per weight vector. `progress(done, total)` follows the decoding.
pub fn run(
    engine: &Engine,
    plan: &Plan,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Row>> {
    let Plan { recipe, prompts, weights, settings, beta, parallel, session } = *plan;
    if recipe.reference.is_none() {
        bail!("a sweep scores outputs with implicit rewards log(π_i/π_ref): the recipe needs a [reference]");
    }
    let tokens: Vec<_> = prompts.iter().map(|p| engine.prompt_tokens(p)).collect::<Result<_>>()?;
    let mut requests = Vec::with_capacity(weights.len() * prompts.len());
    for w in weights {
        let mut r = recipe.clone();
        r.set_weights(w.clone())?;
        r.apply_weight_rules(false)?;
        r.terms()?;
        for t in &tokens {
            requests.push(Request {
                recipe: r.clone(),
                settings: settings.clone(),
                prompts: t.clone(),
                reuse_cache: false,
            });
        }
    }
    let total = requests.len();
    let m = recipe.experts.len();
    let mut rows: Vec<Row> = weights
        .iter()
        .map(|w| Row {
            weights: w.clone(),
            rewards: vec![0.0; m],
            mean_tokens: 0.0,
            tokens_per_second: 0.0,
            errors: 0,
        })
        .collect();
    let mut counts = vec![0usize; weights.len()];
    let mut seconds = vec![0.0f64; weights.len()];
    let mut finished = 0;
    let mut scorer = Scorer::new(engine, recipe, beta, session)?;
    decode_all(engine, requests, parallel, session, &mut |i, outcome| {
        let (w, p) = (i / prompts.len(), i % prompts.len());
        finished += 1;
        progress(finished, total);
        let Ok(g) = outcome else {
            rows[w].errors += 1;
            return Ok(());
        };
        let s = scorer.score(&prompts[p], Response::Tokens(&g.tokens))?;
        for (k, e) in recipe.experts.iter().enumerate() {
            rows[w].rewards[k] += s.rewards.get(&e.name).and_then(|v| v.as_f64()).unwrap_or(0.0);
        }
        rows[w].mean_tokens += g.tokens.len() as f64;
        seconds[w] += g.timings.decode_ms / 1e3;
        counts[w] += 1;
        Ok(())
    })?;
    for ((row, &n), &secs) in rows.iter_mut().zip(&counts).zip(&seconds) {
        if n > 0 {
            row.rewards.iter_mut().for_each(|r| *r /= n as f64);
            row.tokens_per_second = row.mean_tokens / secs.max(1e-9);
            row.mean_tokens /= n as f64;
        }
    }
    Ok(rows)
}

/// The table as CSV: `w_<expert>…, reward_<expert>…, mean_tokens, tokens_per_second, errors`.
pub fn csv(recipe: &Recipe, rows: &[Row]) -> String {
    let names: Vec<&str> = recipe.experts.iter().map(|e| e.name.as_str()).collect();
    let mut out = String::new();
    let header: Vec<String> = names
        .iter()
        .map(|n| format!("w_{n}"))
        .chain(names.iter().map(|n| format!("reward_{n}")))
        .chain(["mean_tokens".into(), "tokens_per_second".into(), "errors".into()])
        .collect();
    out.push_str(&header.join(","));
    out.push('\n');
    for r in rows {
        let cells: Vec<String> = r
            .weights
            .iter()
            .chain(&r.rewards)
            .map(|x| format!("{x}"))
            .chain([
                format!("{:.3}", r.mean_tokens),
                format!("{:.2}", r.tokens_per_second),
                r.errors.to_string(),
            ])
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_lattices_and_lists() {
        let g = grid("0:1:0.25").unwrap();
        assert_eq!(
            g,
            vec![
                vec![0.0, 1.0],
                vec![0.25, 0.75],
                vec![0.5, 0.5],
                vec![0.75, 0.25],
                vec![1.0, 0.0]
            ]
        );
        assert_eq!(grid("0:1:0.1").unwrap().len(), 11);
        assert!(grid("0:1").is_err() && grid("1:0:0.1").is_err() && grid("0:1:0").is_err());
        let s = simplex(3, 2).unwrap();
        assert_eq!(s.len(), 6, "C(2+2, 2) points");
        assert!(s
            .iter()
            .all(|w| (w.iter().sum::<f64>() - 1.0).abs() < 1e-9 && w.iter().all(|x| *x >= 0.0)));
        assert_eq!(simplex(2, 4).unwrap().len(), 5);
        assert_eq!(list("0.2,0.8; 0.5,0.5").unwrap(), vec![vec![0.2, 0.8], vec![0.5, 0.5]]);
        assert!(list("0.2,x").is_err());
    }
}
