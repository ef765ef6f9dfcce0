//! `mood sweep`: wires flags to [`mood::apps::sweep`] and [`mood::apps::plot`], with a
//! progress bar on a terminal, and writes the files of the output folder.

use super::wiring::{build_recipe, load_engine, progress_bar, session_options, settings};
use super::SweepArgs;
use anyhow::{bail, Context, Result};
use mood::apps::plot;
use mood::apps::sweep::{self, files, input, stats, weights, Plan, GENERATIONS};
use mood::output::write_whole;
use std::io::Write;
use std::time::Instant;

pub fn run(args: SweepArgs) -> Result<()> {
    if args.policies.weights.is_some() {
        bail!("mood sweep takes its weight vectors from --grid, --simplex or --list; --weights does not apply");
    }
    let recipe = build_recipe(&args.policies)?;
    let m = recipe.experts.len();
    let (grid, flag) = match (&args.grid, args.simplex, &args.list) {
        (Some(g), _, _) => {
            if m != 2 {
                bail!("--grid is for two experts (the recipe has {m}); use --simplex N or --list");
            }
            (weights::grid(g)?, "grid")
        }
        (None, Some(n), _) => (weights::simplex(m, n)?, "simplex"),
        (None, None, Some(l)) => (weights::list(l)?, "list"),
        (None, None, None) => bail!("give the weights to sweep: --grid, --simplex or --list"),
    };
    weights::check_distinct(&grid, flag)?;
    let prompts = input::read_prompts(&args.input)?;
    let settings = settings(args.max_tokens, &[], &args.sampling, &recipe)?;
    let session = session_options(&args.run)?;
    let plan = Plan {
        recipe: &recipe,
        prompts: &prompts,
        weights: &grid,
        settings: &settings,
        beta: args.beta,
    };
    plan.check()?;
    let dir = &args.output_dir;
    let generations = dir.join(GENERATIONS);
    if args.merge {
        if generations.exists() {
            bail!("{} exists; merge the shards into a new --output-dir", generations.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let merged = sweep::merge(&plan, &args.shard_dirs, &generations)?;
        let outside = match merged.outside {
            0 => String::new(),
            n => format!(" ({n} records of weight vectors or prompts outside this sweep left out)"),
        };
        eprintln!(
            "mood sweep: merged {} shard(s): {} generations → {}{outside}",
            args.shard_dirs.len(),
            merged.records,
            generations.display()
        );
        return write_outputs(&args, &plan);
    }
    let shard = args.shard;
    if generations.exists() && !args.resume {
        bail!(
            "{} exists; pass --resume to continue that sweep, or choose another --output-dir",
            generations.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = plan.config();
    let (stored, cut) = files::read_generations(&generations, &config)?;
    if cut > 0 {
        eprintln!(
            "mood sweep: the last line of {} was incomplete ({cut} bytes); it is cut off and decoded again",
            generations.display()
        );
    }
    let mut todo = plan.pending(&stored);
    let mut total = plan.total();
    let mut of_shard = String::new();
    if let Some(s) = shard {
        todo.retain(|&(w, p)| s.contains(w * prompts.len() + p));
        total = (0..total).filter(|&i| s.contains(i)).count();
        of_shard = format!(", shard {s}: {total} of them");
    }
    eprintln!(
        "mood sweep: {} weight vectors × {} prompts = {} generations{of_shard}, {} to decode",
        grid.len(),
        prompts.len(),
        plan.total(),
        todo.len()
    );
    if !todo.is_empty() {
        let policies: Vec<_> = recipe.policies().cloned().collect();
        let engine = load_engine(&policies, &args.run)?;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&generations)
            .with_context(|| format!("cannot open {}", generations.display()))?;
        let before = (total - todo.len()) as u64;
        let bar = progress_bar(Some(total as u64), "generations");
        if let Some(bar) = &bar {
            bar.set_position(before);
            bar.reset_eta();
        }
        let started = Instant::now();
        let rate = |tokens: usize| tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let tally = sweep::decode(
            &engine,
            &plan,
            &todo,
            usize::from(args.parallel),
            session,
            &mut out,
            &mut |t| {
                if let Some(bar) = &bar {
                    bar.set_position(before + (t.done + t.errors) as u64);
                    bar.set_message(format!("{:.1} tok/s, {} errors", rate(t.tokens), t.errors));
                }
            },
        );
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let tally = tally?;
        eprintln!(
            "mood sweep: decoded {} generations ({} errors) in {:.1} s, {:.1} tok/s",
            tally.done + tally.errors,
            tally.errors,
            started.elapsed().as_secs_f64(),
            rate(tally.tokens)
        );
    }
    if let Some(s) = shard {
        eprintln!(
            "mood sweep: shard {s} holds its generations in {}; once every shard has run, join \
             them with mood sweep (the same flags) --merge DIR… --output-dir DIR",
            generations.display()
        );
        return Ok(());
    }
    write_outputs(&args, &plan)
}

/// Writes the table (CSV, JSONL) and the figure from the folder's generations.
fn write_outputs(args: &SweepArgs, plan: &Plan) -> Result<()> {
    let dir = &args.output_dir;
    let generations = dir.join(GENERATIONS);
    let (stored, _) = files::read_generations(&generations, &plan.config())?;
    let table = plan.table(&stored);
    if table.outside > 0 {
        eprintln!(
            "mood sweep: {} records of {GENERATIONS} are of weight vectors or prompts outside this sweep; the table leaves them out",
            table.outside
        );
    }
    let errors: usize = table.rows.iter().map(|r| r.errors).sum();
    if errors > 0 {
        eprintln!("mood sweep: {errors} generations failed; their errors are in {GENERATIONS}");
    }
    let names: Vec<String> = plan.recipe.experts.iter().map(|e| e.name.clone()).collect();
    write_whole(&dir.join("sweep.csv"), stats::csv(&names, &table.rows).as_bytes())?;
    let mut jsonl = Vec::new();
    for r in &table.rows {
        writeln!(jsonl, "{}", serde_json::to_string(r)?)?;
    }
    write_whole(&dir.join("sweep.jsonl"), &jsonl)?;
    let recipe_name = args.policies.recipe.as_ref().map_or_else(
        || "from flags".to_string(),
        |p| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into()),
    );
    let caption = plan.caption(&recipe_name, &table.rows);
    let figure = plot::Figure { rows: &table.rows, experts: &names, caption: &caption };
    plot::pareto(&figure, &dir.join("pareto"))?;
    let (w, h) = plot::size_inches(names.len());
    eprintln!(
        "mood sweep: wrote sweep.csv, sweep.jsonl, pareto.png ({w} × {h} in at {} dpi) and pareto.svg in {}",
        plot::DPI,
        dir.display()
    );
    Ok(())
}
