//! `mood sweep`: wires flags to [`mood::apps::sweep`] and [`mood::apps::plot`], and writes the files.

use super::wiring::{build_recipe, load_options, session_options, settings};
use super::SweepArgs;
use anyhow::{bail, Context, Result};
use mood::apps::{plot, sweep};
use mood::pipeline::engine::Engine;
use serde_json::Value;
use std::io::{BufReader, IsTerminal, Write};

pub fn run(args: SweepArgs) -> Result<()> {
    let recipe = build_recipe(&args.policies)?;
    let m = recipe.experts.len();
    let weights = match (&args.grid, args.simplex, &args.list) {
        (Some(g), _, _) => {
            if m != 2 {
                bail!("--grid is for two experts (the recipe has {m}); use --simplex N or --list");
            }
            sweep::grid(g)?
        }
        (None, Some(n), _) => sweep::simplex(m, n)?,
        (None, None, Some(l)) => sweep::list(l)?,
        (None, None, None) => bail!("give the weights to sweep: --grid, --simplex or --list"),
    };
    let prompts = read_prompts(&args.input)?;
    let settings = settings(args.max_tokens, &[], &args.sampling)?;
    let session = session_options(&args.run)?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = Engine::load(&policies, load_options(&args.run))?;
    let terminal = std::io::stderr().is_terminal();
    eprintln!(
        "mood sweep: {} weight vectors × {} prompts = {} generations",
        weights.len(),
        prompts.len(),
        weights.len() * prompts.len()
    );
    let plan = sweep::Plan {
        recipe: &recipe,
        prompts: &prompts,
        weights: &weights,
        settings: &settings,
        beta: args.beta,
        parallel: usize::from(args.parallel),
        session,
    };
    let rows = sweep::run(&engine, &plan, &mut |done, total| {
        if terminal {
            eprint!("\r{done}/{total} generations");
            if done == total {
                eprintln!();
            }
        }
    })?;
    let dir = &args.output_dir;
    std::fs::write(dir.join("sweep.csv"), sweep::csv(&recipe, &rows))
        .context("cannot write sweep.csv")?;
    let mut jsonl =
        std::fs::File::create(dir.join("sweep.jsonl")).context("cannot write sweep.jsonl")?;
    for r in &rows {
        writeln!(jsonl, "{}", serde_json::to_string(r)?)?;
    }
    let names: Vec<String> = recipe.experts.iter().map(|e| e.name.clone()).collect();
    let labelled = plot::pareto(&rows, &names, &dir.join("pareto"))?;
    if !labelled {
        eprintln!("mood sweep: no TrueType font found; pareto.png has no text (pareto.svg does)");
    }
    eprintln!(
        "mood sweep: wrote sweep.csv, sweep.jsonl, pareto.png, pareto.svg in {}",
        dir.display()
    );
    Ok(())
}

fn read_prompts(path: &std::path::Path) -> Result<Vec<String>> {
    use mood::input::{Line, Lines, LINE_LIMIT};
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut prompts = Vec::new();
    let mut lines = Lines::new(BufReader::new(file), LINE_LIMIT);
    let mut number = 0;
    while let Some(line) =
        lines.next_line().with_context(|| format!("cannot read {}", path.display()))?
    {
        number += 1;
        let text = match line {
            Line::Text(t) if t.trim().is_empty() => continue,
            Line::Text(t) => t,
            Line::NotUtf8(_) => bail!("{} line {number} is not UTF-8 text", path.display()),
            Line::TooLong => {
                bail!("{} line {number} is longer than {} MiB", path.display(), LINE_LIMIT >> 20)
            }
        };
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} line {number}: invalid JSON", path.display()))?;
        match v.get("prompt").and_then(Value::as_str) {
            Some(p) if !p.trim().is_empty() => prompts.push(p.to_string()),
            _ => bail!("{} line {number}: needs a non-empty \"prompt\"", path.display()),
        }
    }
    if prompts.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    Ok(prompts)
}
