//! Recipes: which policies take part in MOD and how they are weighted.
//!
//! A recipe is a TOML file (format in docs/recipes.md) or the same thing built from command-line
//! flags. Model paths in a file are relative to the file's folder. This module knows nothing
//! of llama.cpp: it only describes policies.

use super::divergence::{Divergence, UNIT_SUM_TOLERANCE};
use crate::error::invalid;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One policy: a GGUF model file, optionally a LoRA adapter on it, and the text placed
/// before the prompt.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// Name used in messages and output (`reference`, or the expert's name).
    pub name: String,
    /// The GGUF file.
    pub model: PathBuf,
    /// Text placed before the prompt (a "prompted expert"); may be empty.
    pub prefix: String,
    /// A LoRA adapter (GGUF) applied to this policy only, and its scale.
    pub lora: Option<(PathBuf, f32)>,
    /// Layers of the model to offload to the GPU; `None` takes the command line's value.
    pub n_gpu_layers: Option<u32>,
    /// llama.cpp RPC servers (`HOST:PORT`) that hold and compute this policy's model
    /// (checked by the engine); `None` takes the command line's, an empty list keeps it here.
    pub rpc: Option<Vec<String>>,
    /// Chat template for `mood chat` and the server: `auto` (the GGUF's own where it has
    /// one, else a plain transcript), `none` (a plain transcript), `model` (the GGUF's own) or
    /// a llama.cpp built-in name (`gemma`, `chatml`, `llama3`, …); `None` takes the command
    /// line's value.
    pub template: Option<String>,
    /// System prompt of this policy in chat form.
    pub system: Option<String>,
}

/// A set of policies with weights: what `mood` decodes with.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub divergence: Divergence,
    pub reference: Option<Policy>,
    pub experts: Vec<Policy>,
    /// One weight per expert.
    pub weights: Vec<f64>,
    /// The sampling temperature the recipe was saved with (`temperature = 0.7` in the file);
    /// the command line's `--temp` overrides it.
    pub temperature: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    divergence: Option<String>,
    temperature: Option<f64>,
    reference: Option<ReferenceEntry>,
    #[serde(default)]
    expert: Vec<ExpertEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceEntry {
    model: PathBuf,
    #[serde(default)]
    prefix: String,
    lora: Option<PathBuf>,
    lora_scale: Option<f32>,
    n_gpu_layers: Option<u32>,
    rpc: Option<Vec<String>>,
    template: Option<String>,
    system: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpertEntry {
    name: Option<String>,
    model: PathBuf,
    #[serde(default)]
    prefix: String,
    weight: Option<f64>,
    lora: Option<PathBuf>,
    lora_scale: Option<f32>,
    n_gpu_layers: Option<u32>,
    rpc: Option<Vec<String>>,
    template: Option<String>,
    system: Option<String>,
}

/// The LoRA setting of an entry: `lora_scale` without `lora` is an error.
fn lora_of(
    name: &str,
    lora: Option<PathBuf>,
    scale: Option<f32>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Option<(PathBuf, f32)>> {
    match (lora, scale) {
        (None, Some(_)) => bail!("policy '{name}' has lora_scale but no lora adapter"),
        (None, None) => Ok(None),
        (Some(path), scale) => {
            let scale = scale.unwrap_or(1.0);
            if !scale.is_finite() {
                bail!("policy '{name}': lora_scale must be a finite number");
            }
            Ok(Some((resolve(&path), scale)))
        }
    }
}

impl Recipe {
    /// Reads and checks a recipe file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::input::read_text(path, "recipe")?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).with_context(|| format!("recipe {}", path.display()))
    }

    /// Parses recipe text; relative model paths are taken from `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let file: RecipeFile = toml::from_str(text).map_err(|e| one_line_toml_error(text, &e))?;
        let divergence = match &file.divergence {
            Some(name) => name.parse()?,
            None => Divergence::default(),
        };
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
        let reference = match file.reference {
            Some(r) => Some(Policy {
                lora: lora_of("reference", r.lora, r.lora_scale, &resolve)?,
                name: "reference".into(),
                model: resolve(&r.model),
                prefix: r.prefix,
                n_gpu_layers: r.n_gpu_layers,
                rpc: r.rpc,
                template: r.template,
                system: r.system,
            }),
            None => None,
        };
        if file.expert.is_empty() {
            bail!("no [[expert]] entries: a recipe needs at least one expert");
        }
        let given = file.expert.iter().filter(|e| e.weight.is_some()).count();
        if given != 0 && given != file.expert.len() {
            let missing = file.expert.iter().position(|e| e.weight.is_none()).unwrap_or(0);
            bail!(
                "expert {} has no weight: give every expert a weight, or none (equal weights)",
                missing + 1
            );
        }
        // Named by the recipe's own key (`weight`), not by the flag that overrides it.
        for (i, e) in file.expert.iter().enumerate() {
            if let Some(w) = e.weight.filter(|w| !w.is_finite() || w.abs() > MAX_WEIGHT) {
                let name = e.name.clone().unwrap_or_else(|| format!("expert{}", i + 1));
                bail!(
                    "expert '{name}': weight = {w:?} cannot be used; a weight is a finite number \
                     from -{MAX_WEIGHT} to {MAX_WEIGHT}"
                );
            }
        }
        let m = file.expert.len();
        let weights = file.expert.iter().map(|e| e.weight.unwrap_or(1.0 / m as f64)).collect();
        let experts = file
            .expert
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let name = e.name.unwrap_or_else(|| format!("expert{}", i + 1));
                Ok(Policy {
                    lora: lora_of(&name, e.lora, e.lora_scale, &resolve)?,
                    name,
                    model: resolve(&e.model),
                    prefix: e.prefix,
                    n_gpu_layers: e.n_gpu_layers,
                    rpc: e.rpc,
                    template: e.template,
                    system: e.system,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(t) = file.temperature.filter(|t| !t.is_finite() || *t < 0.0 || *t > 100.0) {
            bail!("temperature = {t:?} cannot be used; a temperature is from 0 (greedy) to 100");
        }
        let recipe =
            Recipe { divergence, reference, experts, weights, temperature: file.temperature };
        recipe.check()?;
        Ok(recipe)
    }

    /// A recipe from its parts, checked (weights in range, expert names unique).
    pub fn new(
        divergence: Divergence,
        reference: Option<Policy>,
        experts: Vec<Policy>,
        weights: Vec<f64>,
    ) -> Result<Self> {
        let recipe = Recipe { divergence, reference, experts, weights, temperature: None };
        recipe.check()?;
        Ok(recipe)
    }

    /// The recipe as the text of a recipe file, which [`Recipe::parse`] reads back to the same
    /// recipe. Model and adapter paths are written as given (make them absolute first for a
    /// file that works from any folder).
    pub fn to_toml(&self) -> Result<String> {
        use toml::{Table, Value};
        fn entry(p: &Policy, table: &mut Table) -> Result<()> {
            let path = |p: &Path| {
                p.to_str().map(|s| Value::String(s.into())).with_context(|| {
                    format!("path {} is not UTF-8 and cannot be written in TOML", p.display())
                })
            };
            table.insert("model".into(), path(&p.model)?);
            if !p.prefix.is_empty() {
                table.insert("prefix".into(), Value::String(p.prefix.clone()));
            }
            if let Some((lora, scale)) = &p.lora {
                table.insert("lora".into(), path(lora)?);
                table.insert("lora_scale".into(), Value::Float(f64::from(*scale)));
            }
            if let Some(n) = p.n_gpu_layers {
                table.insert("n_gpu_layers".into(), Value::Integer(i64::from(n)));
            }
            if let Some(rpc) = &p.rpc {
                let list = rpc.iter().map(|s| Value::String(s.clone())).collect();
                table.insert("rpc".into(), Value::Array(list));
            }
            if let Some(t) = &p.template {
                table.insert("template".into(), Value::String(t.clone()));
            }
            if let Some(s) = &p.system {
                table.insert("system".into(), Value::String(s.clone()));
            }
            Ok(())
        }
        let mut top = Table::new();
        top.insert("divergence".into(), Value::String(self.divergence.name()));
        if let Some(t) = self.temperature {
            top.insert("temperature".into(), Value::Float(t));
        }
        if let Some(r) = &self.reference {
            let mut table = Table::new();
            entry(r, &mut table)?;
            top.insert("reference".into(), Value::Table(table));
        }
        let mut experts = Vec::new();
        for (e, w) in self.experts.iter().zip(&self.weights) {
            let mut table = Table::new();
            table.insert("name".into(), Value::String(e.name.clone()));
            entry(e, &mut table)?;
            table.insert("weight".into(), Value::Float(*w));
            experts.push(Value::Table(table));
        }
        top.insert("expert".into(), Value::Array(experts));
        Ok(toml::to_string(&top)?)
    }

    /// Replaces the weights.
    pub fn set_weights(&mut self, weights: Vec<f64>) -> Result<()> {
        if weights.len() != self.experts.len() {
            return Err(invalid(
                "weights",
                format!(
                    "has {} value(s) but the recipe has {} expert(s) ({}); give one weight per expert",
                    weights.len(),
                    self.experts.len(),
                    self.experts.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        check_weight_values(&weights, &self.experts)?;
        self.weights = weights;
        Ok(())
    }

    /// Weights from JSON: an array (one per expert), or an object by expert name (experts it
    /// does not name keep their weight).
    pub fn weights_from_json(&self, v: &serde_json::Value) -> Result<Vec<f64>> {
        use serde_json::Value;
        let number = |x: &Value| x.as_f64().ok_or_else(|| invalid("weights", "must be numbers"));
        match v {
            Value::Array(a) => a.iter().map(number).collect(),
            Value::Object(m) => {
                let mut w = self.weights.clone();
                for (name, x) in m {
                    let i = self.experts.iter().position(|e| &e.name == name).ok_or_else(|| {
                        invalid(
                            "weights",
                            format!("names '{name}', which is not an expert of the recipe"),
                        )
                    })?;
                    w[i] = number(x)?;
                }
                Ok(w)
            }
            _ => Err(invalid("weights", "must be an array or an object by expert name")),
        }
    }

    /// Applies the divergence's weight rules (see [`Divergence::check_weights`]); with
    /// `normalize`, non-negative weights are rescaled to sum to 1.
    pub fn apply_weight_rules(&mut self, normalize: bool) -> Result<()> {
        self.divergence.check_weights(&mut self.weights, normalize)
    }

    /// Every policy, the reference first when there is one.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.reference.iter().chain(&self.experts)
    }

    /// The policies MOD runs for these weights and this divergence, with their coefficients
    /// (see `docs/mod.md`):
    /// * reverse KL combines `(1 − S)·logits_ref + Σ_i w_i·logits_i`: the reference takes part
    ///   only when S ≠ 1 (it cancels otherwise), an expert only when its weight is not 0;
    /// * the other divergences take the reference (coefficient 0: it enters through the
    ///   ratios π_i/π_ref), then every expert of positive weight with its weight.
    ///
    /// Errors when the weights break the divergence's rules or need a reference the recipe
    /// lacks.
    pub fn terms(&self) -> Result<Vec<Term>> {
        if self.experts.is_empty() {
            bail!("no experts: a recipe needs at least one [[expert]]");
        }
        self.divergence.check_weights(&mut self.weights.clone(), false)?;
        let has_reference = self.reference.is_some();
        let mut terms = Vec::with_capacity(self.weights.len() + 1);
        if self.divergence == Divergence::ReverseKl {
            let ref_coeff = 1.0 - self.weights.iter().sum::<f64>();
            if ref_coeff.abs() > UNIT_SUM_TOLERANCE {
                if !has_reference {
                    return Err(invalid(
                        "weights",
                        format!(
                            "sum to {} (not 1), so reverse-KL MOD needs the reference policy's \
                             factor π_ref^(1−S); add a [reference] to the recipe, or make the \
                             weights sum to 1",
                            1.0 - ref_coeff
                        ),
                    ));
                }
                terms.push((Role::Reference, ref_coeff));
            }
        } else {
            if !has_reference {
                return Err(invalid(
                    "divergence",
                    format!(
                        "{} needs the reference policy (π_ref does not cancel as in \
                         reverse-kl); add a [reference] to the recipe",
                        self.divergence.name()
                    ),
                ));
            }
            terms.push((Role::Reference, 0.0));
        }
        let experts = self.weights.iter().enumerate();
        terms.extend(experts.filter(|(_, w)| **w != 0.0).map(|(i, w)| (Role::Expert(i), *w)));
        Ok(terms)
    }

    /// Indices into [`Recipe::policies`] of the policies the terms need, in term order.
    pub fn members(&self) -> Result<Vec<usize>> {
        Ok(self.terms()?.iter().map(|(role, _)| self.index_of(*role)).collect())
    }

    /// Index into [`Recipe::policies`] of the policy with this role.
    pub fn index_of(&self, role: Role) -> usize {
        match role {
            Role::Reference => 0,
            Role::Expert(i) => usize::from(self.reference.is_some()) + i,
        }
    }

    fn check(&self) -> Result<()> {
        check_weight_values(&self.weights, &self.experts)?;
        let mut names: Vec<&str> = self.experts.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("two experts are named '{}'; expert names must be unique", w[0]);
        }
        if names.contains(&"reference") {
            bail!("an expert is named 'reference', the name of the reference policy; rename it");
        }
        Ok(())
    }
}

/// The largest weight magnitude: far beyond any useful steering, and small enough that
/// weighted logits stay finite in f32.
pub const MAX_WEIGHT: f64 = 1e6;

fn check_weight_values(weights: &[f64], experts: &[Policy]) -> Result<()> {
    if let Some((i, w)) =
        weights.iter().enumerate().find(|(_, w)| !w.is_finite() || w.abs() > MAX_WEIGHT)
    {
        let name = experts.get(i).map_or("?", |e| e.name.as_str());
        return Err(invalid(
            "weights",
            format!("of expert '{name}' is {w:?}; weights must be finite numbers from -{MAX_WEIGHT} to {MAX_WEIGHT}"),
        ));
    }
    Ok(())
}

/// Which policy of a recipe a combiner term applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The reference policy π_ref.
    Reference,
    /// Expert policy number `i` (0-based, in recipe order).
    Expert(usize),
}

/// A policy and its coefficient in the combination (see [`Recipe::terms`]).
pub type Term = (Role, f64);

/// Parses weights written `0.3,0.7` (spaces allowed); each must be a finite number.
pub fn parse_weights(s: &str) -> Result<Vec<f64>> {
    s.split(',')
        .map(|part| {
            let part = part.trim();
            match part.parse::<f64>() {
                Ok(w) if w.is_finite() => Ok(w),
                Ok(_) => Err(invalid("weights", format!("'{part}' is not a finite number"))),
                Err(_) => Err(invalid(
                    "weights",
                    format!("'{part}' is not a number (expected e.g. 0.3,0.7)"),
                )),
            }
        })
        .collect()
}

/// toml's errors span several lines (with a source excerpt); ours are one line.
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            anyhow::anyhow!("line {line}: {msg}")
        }
        None => anyhow::anyhow!("{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"
divergence = "reverse-kl"
[reference]
model = "base.gguf"
[[expert]]
name = "cheerful"
model = "base.gguf"
prefix = "Cheer.\n"
weight = 0.25
[[expert]]
model = "/abs/other.gguf"
weight = 0.75
"#;

    #[test]
    fn a_written_recipe_reads_back_the_same() {
        let text = r#"
divergence = "alpha:0.5"
temperature = 0.7
[reference]
model = "/m/b.gguf"
system = "Be \"kind\".\nAlways."
[[expert]]
name = "a"
model = "/m/b.gguf"
prefix = "x = [1]\n"
weight = -0.25
template = "model"
rpc = ["h:1"]
[[expert]]
name = "b"
model = "/m/c.gguf"
lora = "/m/l.gguf"
lora_scale = 0.5
n_gpu_layers = 7
weight = 1.25
"#;
        let r = Recipe::parse(text, Path::new("/elsewhere")).unwrap();
        assert_eq!(r.temperature, Some(0.7));
        assert_eq!(r.experts[0].prefix, "x = [1]\n");
        let again = Recipe::parse(&r.to_toml().unwrap(), Path::new("/other")).unwrap();
        assert_eq!(again, r);
        let mut fresh = r.clone();
        fresh.temperature = None;
        fresh.reference = None;
        fresh.divergence = Divergence::ReverseKl;
        let again = Recipe::parse(&fresh.to_toml().unwrap(), Path::new("/other")).unwrap();
        assert_eq!(again, fresh);
    }

    #[test]
    fn a_recipe_temperature_must_be_usable() {
        for t in ["-1.0", "nan", "inf", "1000.0"] {
            let text = format!("temperature = {t}\n[[expert]]\nmodel = 'a.gguf'\n");
            let e = Recipe::parse(&text, Path::new(".")).unwrap_err().to_string();
            assert!(e.contains("temperature"), "{t}: {e}");
        }
    }

    #[test]
    fn parses_the_documented_format() {
        let r = Recipe::parse(DEMO, Path::new("models")).unwrap();
        assert_eq!(r.divergence, Divergence::ReverseKl);
        assert_eq!(r.reference.as_ref().unwrap().model, PathBuf::from("models/base.gguf"));
        assert_eq!(r.experts[0].name, "cheerful");
        assert_eq!(r.experts[0].prefix, "Cheer.\n");
        assert_eq!(r.experts[1].name, "expert2");
        assert_eq!(r.experts[1].model, PathBuf::from("/abs/other.gguf"));
        assert_eq!(r.weights, vec![0.25, 0.75]);
        assert_eq!(r.policies().count(), 3);
    }

    #[test]
    fn lora_and_offload_keys() {
        let text = "[reference]\nmodel='b.gguf'\nn_gpu_layers=99\n[[expert]]\nmodel='b.gguf'\nlora='l.gguf'\n\
                    [[expert]]\nmodel='b.gguf'\nlora='/x/l.gguf'\nlora_scale=0.5\n";
        let r = Recipe::parse(text, Path::new("m")).unwrap();
        assert_eq!(r.reference.as_ref().unwrap().n_gpu_layers, Some(99));
        assert_eq!(r.experts[0].lora, Some((PathBuf::from("m/l.gguf"), 1.0)));
        assert_eq!(r.experts[1].lora, Some((PathBuf::from("/x/l.gguf"), 0.5)));
        assert_eq!(r.experts[1].n_gpu_layers, None);
        let text = "[[expert]]\nmodel='b.gguf'\nrpc=['10.0.0.2:50052']\n[[expert]]\nmodel='b.gguf'\nrpc=[]\n\
                    [[expert]]\nmodel='b.gguf'\n";
        let r = Recipe::parse(text, Path::new("m")).unwrap();
        assert_eq!(r.experts[0].rpc, Some(vec!["10.0.0.2:50052".to_string()]));
        assert_eq!(r.experts[1].rpc, Some(vec![]), "an empty list keeps the policy here");
        assert_eq!(r.experts[2].rpc, None, "no key: the command line decides");
        let e = Recipe::parse("[[expert]]\nmodel='b'\nrpc='h:1'\n", Path::new(".")).unwrap_err();
        assert!(format!("{e:#}").contains("line 3"), "{e:#}");
        let e = Recipe::parse("[[expert]]\nmodel='b'\nlora_scale=2\n", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lora_scale but no lora"), "{e}");
    }

    #[test]
    fn missing_weights_mean_equal_weights() {
        let r = Recipe::parse("[[expert]]\nmodel='a'\n[[expert]]\nmodel='b'\n", Path::new("."))
            .unwrap();
        assert_eq!(r.weights, vec![0.5, 0.5]);
        assert!(r.reference.is_none());
        let e = Recipe::parse(
            "[[expert]]\nmodel='a'\nweight=1\n[[expert]]\nmodel='b'\n",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("expert 2 has no weight"), "{e}");
    }

    #[test]
    fn a_bad_weight_in_a_file_is_named_by_its_key() {
        for w in ["nan", "inf", "-inf", "2e6"] {
            let text = format!("[[expert]]\nname = 'a'\nmodel = 'm'\nweight = {w}\n");
            let e = Recipe::parse(&text, Path::new(".")).unwrap_err();
            let message = format!("{e:#}");
            assert!(message.contains("expert 'a': weight = "), "{w}: {message}");
            assert!(
                e.downcast_ref::<crate::error::SettingError>().is_none(),
                "not a flag: {message}"
            );
        }
    }

    #[test]
    fn errors_are_one_line_and_name_the_problem() {
        let cases = [
            ("[[expert]]\nmodel='a'\ncolour='red'\n", "unknown field `colour`"),
            ("[[expert]]\nmodel='a'\nweight='x'\n", "line 3"),
            ("[[expert\n", "line 1"),
            ("divergence='reverse-kl'\n", "no [[expert]]"),
            ("divergence='nope'\n[[expert]]\nmodel='a'\n", "unknown divergence 'nope'"),
            ("[[expert]]\nmodel='a'\nweight=nan\n", "finite"),
            ("[[expert]]\nname='x'\nmodel='a'\n[[expert]]\nname='x'\nmodel='b'\n", "unique"),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", Recipe::parse(text, Path::new(".")).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "multi-line error: {e}");
        }
    }

    #[test]
    fn weights_override_checks_count_and_values() {
        let mut r = Recipe::parse(DEMO, Path::new(".")).unwrap();
        r.set_weights(vec![1.0, -0.5]).unwrap();
        assert_eq!(r.weights, vec![1.0, -0.5]);
        let e = r.set_weights(vec![1.0]).unwrap_err().to_string();
        assert!(e.contains("1 value(s)") && e.contains("2 expert(s)"), "{e}");
        assert!(r.set_weights(vec![f64::INFINITY, 0.0]).is_err());
        assert_eq!(parse_weights("0.3, 0.7").unwrap(), vec![0.3, 0.7]);
        assert_eq!(parse_weights("-1.5,2.5").unwrap(), vec![-1.5, 2.5]);
        assert!(parse_weights("0.3,x").unwrap_err().to_string().contains("'x'"));
        assert!(parse_weights("nan,1").is_err());
        assert!(parse_weights("inf").is_err());
    }

    #[test]
    fn huge_weights_are_refused() {
        let mut r = Recipe::parse(DEMO, Path::new(".")).unwrap();
        let e = r.set_weights(vec![1e308, -1e308]).unwrap_err().to_string();
        assert!(e.starts_with("weights ") && e.contains("1000000"), "{e}");
        r.set_weights(vec![1e6, -1e6]).unwrap();
    }

    #[test]
    fn terms_follow_the_weights_and_the_divergence() {
        let mut r = Recipe::parse(DEMO, Path::new(".")).unwrap();
        r.set_weights(vec![0.4, 0.6]).unwrap();
        assert_eq!(r.terms().unwrap(), vec![(Role::Expert(0), 0.4), (Role::Expert(1), 0.6)]);
        assert_eq!(r.members().unwrap(), vec![1, 2]);
        r.set_weights(vec![1.1, 0.0]).unwrap();
        let t = r.terms().unwrap();
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0].0, Role::Reference);
        assert!((t[0].1 + 0.1).abs() < 1e-12);
        assert_eq!(t[1], (Role::Expert(0), 1.1));
        assert_eq!(r.members().unwrap(), vec![0, 1]);
        r.divergence = Divergence::Jsd;
        assert!(r.terms().is_err(), "jsd needs the simplex");
        r.set_weights(vec![0.0, 1.0]).unwrap();
        assert_eq!(r.terms().unwrap(), vec![(Role::Reference, 0.0), (Role::Expert(1), 1.0)]);
        let mut no_ref = r.clone();
        no_ref.reference = None;
        let e = no_ref.terms().unwrap_err().to_string();
        assert!(e.contains("jsd needs the reference"), "{e}");
        no_ref.divergence = Divergence::ReverseKl;
        no_ref.set_weights(vec![0.6, 0.8]).unwrap();
        let e = no_ref.terms().unwrap_err().to_string();
        assert!(e.starts_with("weights sum to 1.4") && e.contains("reference"), "{e}");
        assert_eq!(no_ref.index_of(Role::Expert(1)), 1);
    }
}
