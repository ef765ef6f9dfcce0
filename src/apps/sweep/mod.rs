//! Weight sweeps: decode a prompt set ([`input`]) at every weight vector of a grid
//! ([`weights`]), score each output with the experts' implicit rewards, keep every
//! generation ([`files`]), and tabulate per weight vector the mean reward of each expert
//! with its standard error, the mean length and the Pareto set ([`stats`]) — the Pareto
//! front of MOD.
//!
//! The table is always computed from the kept generations, in the plan's order, so a sweep
//! that was killed and resumed gives the table of one that ran through.

pub mod files;
pub mod input;
pub mod stats;
pub mod weights;

pub use files::{Config, Stored, GENERATIONS};
pub use input::Prompt;
pub use stats::Row;

use crate::apps::score::{Response, Scorer};
use crate::pipeline::decode::{decode_all, Request};
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::{invalid, Settings};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Write;

/// What to sweep.
pub struct Plan<'a> {
    pub recipe: &'a Recipe,
    pub prompts: &'a [Prompt],
    pub weights: &'a [Vec<f64>],
    pub settings: &'a Settings,
    /// β of the implicit rewards.
    pub beta: f64,
}

/// The table of a sweep, and how many stored records it left out.
#[derive(Debug, Clone)]
pub struct Table {
    pub rows: Vec<Row>,
    /// Records of weight vectors or prompts that are not in the plan.
    pub outside: usize,
}

/// Counts of the generations decoded by [`decode`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub done: usize,
    pub errors: usize,
    pub tokens: usize,
}

impl Plan<'_> {
    /// Checks everything that can be checked before decoding: a reference and at least two
    /// experts, β, every weight vector valid for the recipe's divergence, none twice.
    pub fn check(&self) -> Result<()> {
        if self.recipe.reference.is_none() {
            bail!("a sweep scores outputs with implicit rewards log(π_i/π_ref): the recipe needs a [reference]");
        }
        let m = self.recipe.experts.len();
        if m < 2 {
            bail!("a sweep traces the trade-off between experts: the recipe has {m}, it needs at least 2");
        }
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(invalid("beta", format!("must be a positive number, got {}", self.beta)));
        }
        if self.weights.len() > weights::MAX_POINTS {
            bail!(
                "{} weight vectors; a sweep takes at most {}",
                self.weights.len(),
                weights::MAX_POINTS
            );
        }
        for (i, w) in self.weights.iter().enumerate() {
            self.recipe_at(w).with_context(|| format!("weight vector {} {w:?}", i + 1))?;
        }
        weights::check_distinct(self.weights, "weights")
    }

    /// The recipe at weight vector `w`, checked against its divergence.
    fn recipe_at(&self, w: &[f64]) -> Result<Recipe> {
        let mut r = self.recipe.clone();
        r.set_weights(w.to_vec())?;
        r.apply_weight_rules(false)?;
        r.terms()?;
        Ok(r)
    }

    /// What every record of this sweep carries.
    pub fn config(&self) -> Config {
        Config::new(self.recipe, self.settings, self.beta)
    }

    /// Generations in the plan: weight vectors × prompts.
    pub fn total(&self) -> usize {
        self.weights.len() * self.prompts.len()
    }

    /// For each stored record, its (weight vector, prompt) in the plan, if any.
    fn place(&self, stored: &[Stored]) -> Vec<Option<(usize, usize)>> {
        let w: HashMap<Vec<i64>, usize> =
            self.weights.iter().enumerate().map(|(i, w)| (weights::key(w), i)).collect();
        let p: HashMap<String, usize> =
            self.prompts.iter().enumerate().map(|(i, p)| (p.id.to_string(), i)).collect();
        stored
            .iter()
            .map(|s| Some((*w.get(&weights::key(&s.weights))?, *p.get(&s.id.to_string())?)))
            .collect()
    }

    /// The generations the stored records lack, as (weight vector, prompt) indices, weight
    /// vector by weight vector.
    pub fn pending(&self, stored: &[Stored]) -> Vec<(usize, usize)> {
        let have: std::collections::HashSet<(usize, usize)> =
            self.place(stored).into_iter().flatten().collect();
        (0..self.weights.len())
            .flat_map(|w| (0..self.prompts.len()).map(move |p| (w, p)))
            .filter(|k| !have.contains(k))
            .collect()
    }

    /// The table from the stored records (the first record of each generation), prompts
    /// taken in the plan's order.
    pub fn table(&self, stored: &[Stored]) -> Table {
        let mut slots: Vec<Vec<Option<&Stored>>> =
            vec![vec![None; self.prompts.len()]; self.weights.len()];
        let mut outside = 0;
        for (s, place) in stored.iter().zip(self.place(stored)) {
            match place {
                Some((w, p)) => {
                    slots[w][p].get_or_insert(s);
                }
                None => outside += 1,
            }
        }
        let samples: Vec<Vec<stats::Sample>> = slots
            .iter()
            .map(|row| row.iter().flatten().filter_map(|s| s.outcome.clone().ok()).collect())
            .collect();
        let errors: Vec<usize> = slots
            .iter()
            .map(|row| row.iter().flatten().filter(|s| s.outcome.is_err()).count())
            .collect();
        Table { rows: stats::table(self.weights, &samples, &errors), outside }
    }

    /// The caption of the sweep's figure, in parts: model files, recipe, divergence, β,
    /// prompts, tokens and decoding.
    pub fn caption(&self, recipe_name: &str, rows: &[Row]) -> Vec<String> {
        let mut models: Vec<String> = Vec::new();
        for p in self.recipe.policies() {
            let mut name = file_name(&p.model);
            if let Some((lora, _)) = &p.lora {
                name = format!("{name} + {}", file_name(lora));
            }
            if !models.contains(&name) {
                models.push(name);
            }
        }
        let generated: usize = rows.iter().map(|r| r.generations).sum();
        let tokens: f64 =
            rows.iter().map(|r| r.mean_tokens.unwrap_or(0.0) * r.generations as f64).sum();
        let s = &self.settings.sampling;
        let decoding = if s.temperature == 0.0 {
            "greedy".to_string()
        } else {
            format!(
                "temperature {}, top-p {}, top-k {}, min-p {}",
                s.temperature, s.top_p, s.top_k, s.min_p
            )
        };
        let mut parts = vec![
            format!("model {}", models.join(", ")),
            format!("recipe {recipe_name}"),
            self.recipe.divergence.name(),
            format!("β = {}", self.beta),
            format!("{} prompts × {} weight vectors", self.prompts.len(), self.weights.len()),
            format!("≤ {} tokens", self.settings.max_tokens),
        ];
        if generated > 0 {
            let last = parts.len() - 1;
            parts[last] = format!("{} (mean {:.1})", parts[last], tokens / generated as f64);
        }
        parts.push(decoding);
        parts
    }
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Decodes the `todo` generations of the plan, up to `parallel` at once, scores each output
/// and appends its record to `out` as it finishes (an error record for a generation that
/// failed). `progress` follows every record.
pub fn decode(
    engine: &Engine,
    plan: &Plan,
    todo: &[(usize, usize)],
    parallel: usize,
    session: SessionOptions,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&Tally),
) -> Result<Tally> {
    let mut tally = Tally::default();
    if todo.is_empty() {
        return Ok(tally);
    }
    let config = plan.config();
    let recipes: Vec<Recipe> =
        plan.weights.iter().map(|w| plan.recipe_at(w)).collect::<Result<_>>()?;
    let mut tokens: HashMap<usize, Vec<_>> = HashMap::new();
    let mut requests = Vec::with_capacity(todo.len());
    for &(w, p) in todo {
        if let std::collections::hash_map::Entry::Vacant(e) = tokens.entry(p) {
            e.insert(engine.prompt_tokens(&plan.prompts[p].text)?);
        }
        requests.push(Request {
            recipe: recipes[w].clone(),
            settings: plan.settings.clone(),
            prompts: tokens[&p].clone(),
            reuse_cache: false,
        });
    }
    let mut scorer = Scorer::new(engine, plan.recipe, plan.beta, session)?;
    decode_all(engine, requests, parallel, session, &mut |i, outcome| {
        let (w, p) = todo[i];
        let (weights, prompt) = (&plan.weights[w], &plan.prompts[p]);
        let scored = outcome.and_then(|g| {
            let s = scorer.score(&prompt.text, Response::Tokens(&g.tokens))?;
            Ok((g, s))
        });
        let record = match scored {
            Ok((g, s)) => {
                tally.done += 1;
                tally.tokens += g.tokens.len();
                files::record(&config, weights, prompt, &g, &s)
            }
            Err(e) => {
                tally.errors += 1;
                files::error_record(&config, weights, prompt, &format!("{e:#}"))
            }
        };
        files::append(out, &record)?;
        progress(&tally);
        Ok(())
    })?;
    Ok(tally)
}
