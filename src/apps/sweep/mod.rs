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
mod merge;
pub mod stats;
pub mod weights;

pub use merge::{merge, Merged};

pub use files::{Config, Stored, GENERATIONS};
pub use input::Prompt;
pub use stats::Row;

use crate::apps::score::{Response, Scorer};
use crate::error::invalid;
use crate::pipeline::decode::{decode_all, Request};
use crate::pipeline::engine::{Engine, SessionOptions};
use crate::pipeline::recipe::Recipe;
use crate::pipeline::settings::Settings;
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

    /// For each stored record, its (weight vector, prompt) in the plan, if any: a record
    /// belongs to a prompt of the same id and text.
    fn place(&self, stored: &[Stored]) -> Vec<Option<(usize, usize)>> {
        let w: HashMap<Vec<i64>, usize> =
            self.weights.iter().enumerate().map(|(i, w)| (weights::key(w), i)).collect();
        let p: HashMap<String, usize> =
            self.prompts.iter().enumerate().map(|(i, p)| (p.id.to_string(), i)).collect();
        stored
            .iter()
            .map(|s| {
                let prompt = *p.get(&s.id.to_string())?;
                (self.prompts[prompt].text == s.prompt)
                    .then_some((*w.get(&weights::key(&s.weights))?, prompt))
            })
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
        requests.push(Request::new(
            recipes[w].clone(),
            plan.settings.clone(),
            tokens[&p].clone(),
            false,
        ));
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
            Err(_) if !engine.lost().is_empty() => {
                return Err(crate::apps::batch::stopped_by_lost_server(engine));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::divergence::Divergence;
    use crate::pipeline::recipe::Policy;
    use crate::pipeline::sample::SamplingParams;
    use serde_json::{json, Value};
    use stats::Sample;

    fn recipe(experts: usize) -> Recipe {
        let policy = |name: String| Policy { name, model: "m.gguf".into(), ..Policy::default() };
        let e: Vec<Policy> = (0..experts).map(|i| policy(format!("e{i}"))).collect();
        let w = vec![1.0 / experts as f64; experts];
        Recipe::new(Divergence::default(), Some(policy("reference".into())), e, w).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            max_tokens: 8,
            stops: vec![],
            sampling: SamplingParams::default(),
            plausibility: 1e-4,
            byte_tolerance: crate::pipeline::bytes::DEFAULT_TOLERANCE,
            constraint: None,
            logprobs: None,
            draft_max: 0,
        }
    }

    fn stored(w: &[f64], id: Value, prompt: &str, reward: Option<f64>) -> Stored {
        Stored {
            line: 0,
            weights: w.to_vec(),
            id,
            prompt: prompt.into(),
            outcome: match reward {
                Some(r) => Ok(Sample { rewards: vec![r, -r], tokens: 4 }),
                None => Err("failed".into()),
            },
        }
    }

    #[test]
    fn stored_records_are_placed_by_weights_id_and_text() {
        let r = recipe(2);
        let s = settings();
        let prompts = [
            Prompt { id: json!("a"), text: "A".into() },
            Prompt { id: json!(2), text: "B".into() },
        ];
        let grid = weights::grid("0:1:0.5").unwrap();
        let plan = Plan { recipe: &r, prompts: &prompts, weights: &grid, settings: &s, beta: 1.0 };
        plan.check().unwrap();
        let records = vec![
            stored(&[0.0, 1.0], json!("a"), "A", Some(1.0)),
            // A last digit off still finds its weight vector.
            stored(&[0.5 + 1e-15, 0.5], json!(2), "B", Some(3.0)),
            stored(&[0.5, 0.5], json!("a"), "A", None),
            // A second record of a generation: the first one counts.
            stored(&[0.0, 1.0], json!("a"), "A", Some(100.0)),
            // Outside: a weight vector, an id and a prompt text the plan does not have.
            stored(&[0.25, 0.75], json!("a"), "A", Some(5.0)),
            stored(&[1.0, 0.0], json!("b"), "B", Some(5.0)),
            stored(&[1.0, 0.0], json!(2), "changed", Some(5.0)),
            // The number 2 and the string "2" are different ids.
            stored(&[1.0, 0.0], json!("2"), "B", Some(5.0)),
        ];
        assert_eq!(plan.pending(&records), vec![(0, 1), (2, 0), (2, 1)]);
        let table = plan.table(&records);
        assert_eq!(table.outside, 4);
        let rows = &table.rows;
        assert_eq!((rows[0].generations, rows[0].rewards[0]), (1, Some(1.0)));
        assert_eq!((rows[1].generations, rows[1].errors, rows[1].rewards[0]), (1, 1, Some(3.0)));
        assert_eq!((rows[2].generations, rows[2].rewards[0]), (0, None));
        assert!(plan.pending(&[]).len() == plan.total() && plan.total() == 6);
    }

    #[test]
    fn plans_are_checked_before_decoding() {
        let s = settings();
        let prompts = [Prompt { id: json!(1), text: "A".into() }];
        let message = |r: &Recipe, w: &[Vec<f64>], beta: f64| {
            let plan = Plan { recipe: r, prompts: &prompts, weights: w, settings: &s, beta };
            plan.check().err().map(|e| format!("{e:#}"))
        };
        let two = recipe(2);
        assert_eq!(message(&two, &[vec![0.5, 0.5]], 1.0), None);
        assert!(message(&recipe(1), &[vec![1.0]], 1.0).unwrap().contains("at least 2"));
        assert!(message(&two, &[vec![0.5, 0.5]], 0.0).unwrap().contains("beta"));
        assert!(message(&two, &[vec![0.5, 0.5]], f64::NAN).unwrap().contains("beta"));
        let e = message(&two, &[vec![0.5, 0.5], vec![1.0, 0.0, 0.0]], 1.0).unwrap();
        assert!(e.contains("weight vector 2") && e.contains("3 value(s)"), "{e}");
        let e = message(&two, &[vec![0.5, 0.5], vec![0.5, 0.5]], 1.0).unwrap();
        assert!(e.contains("twice"), "{e}");
        let mut jsd = two.clone();
        jsd.divergence = "jsd".parse().unwrap();
        assert!(message(&jsd, &[vec![1.5, -0.5]], 1.0).is_some(), "JSD takes the simplex only");
        let mut no_reference = two.clone();
        no_reference.reference = None;
        assert!(message(&no_reference, &[vec![0.5, 0.5]], 1.0).unwrap().contains("[reference]"));
    }
}
