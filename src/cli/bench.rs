//! `mood bench`: wires flags to [`mood::apps::bench`] and prints its report as tables or JSON.

use super::wiring::{
    build_recipe, load_options, remeasure, session_options, settings, strategy_cache,
};
use super::BenchArgs;
use anyhow::{bail, Context, Result};
use mood::apps::bench::{self, Plan};
use std::io::{IsTerminal, Write};
use std::process::Command;

/// Runs this same command line in a fresh process with `--memory-probe K` and reads the peak
/// memory it prints.
fn probe_in_child(k: usize) -> Result<Option<f64>> {
    let exe = std::env::current_exe().context("cannot find the mood executable")?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("--memory-probe".into());
    args.push(k.to_string());
    let out = Command::new(exe).args(&args).output().context("cannot run the memory probe")?;
    if !out.status.success() {
        bail!(
            "memory probe with {k} experts failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
}

pub fn run(args: BenchArgs) -> Result<()> {
    let recipe = build_recipe(&args.policies)?;
    let settings = settings(args.max_tokens, &[], &args.sampling, &recipe)?;
    let session = session_options(&args.run)?;
    if args.max_tokens < 2 {
        bail!("--max-tokens must be at least 2 for a speed measurement");
    }
    let plan = Plan {
        recipe: &recipe,
        prompt: &args.prompt,
        settings,
        session,
        strategies: args.strategies.clone(),
        rounds: args.rounds,
        load: load_options(&args.run),
        draft_model: args.run.draft_model.clone(),
        strategy_cache: strategy_cache(),
        remeasure: remeasure(),
    };
    if let Some(k) = args.memory_probe {
        let peak = bench::memory_probe(&plan, k)?;
        println!("{}", peak.unwrap_or(f64::NAN));
        return Ok(());
    }
    let show_progress = std::io::stderr().is_terminal() || !args.json;
    let mut progress = |line: &str| {
        if show_progress {
            eprintln!("{line}");
        }
    };
    let mut report = bench::run(&plan, &mut progress)?;
    report.memory = bench::memory_runs(&peak_memory(&args.memory.0, &mut progress)?);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        return Ok(());
    }
    print_tables(&report, &mut out)
}

/// Peak memory with each number of prompted experts in `counts`, each in a process of its
/// own; none where the system cannot measure it.
fn peak_memory(counts: &[usize], progress: &mut dyn FnMut(&str)) -> Result<Vec<(usize, f64)>> {
    let mut peaks = Vec::new();
    let unavailable = if counts.is_empty() { None } else { bench::peak_rss_unavailable() };
    if let Some(why) = unavailable {
        progress(&format!("peak memory: not measured ({why})"));
        return Ok(peaks);
    }
    for &k in counts {
        match probe_in_child(k)? {
            Some(mb) => {
                progress(&format!("peak memory with {k} prompted experts: {mb:.0} MB"));
                peaks.push((k, mb));
            }
            None => {
                progress("peak memory: not measurable on this system");
                break;
            }
        }
    }
    Ok(peaks)
}

/// The report as tables, with a line of explanation under each.
fn print_tables(report: &bench::Report, out: &mut dyn Write) -> Result<()> {
    let prompt: String = report.prompt.chars().take(40).collect();
    writeln!(
        out,
        "\n{} tokens after {:?}…, {} threads, median of {} rounds\n",
        report.max_tokens, prompt, report.threads, report.rounds
    )?;
    writeln!(
        out,
        "{:<34} {:>12} {:>12} {:>7} {:>22}",
        "model alone", "prompt t/s", "decode t/s", "spread", "decode t/s at share"
    )?;
    for s in &report.single {
        writeln!(
            out,
            "{:<34} {:>12.1} {:>12.1} {:>6.0}% {:>12.1} ({} thr)",
            s.model,
            s.prompt_tokens_per_second,
            s.tokens_per_second,
            100.0 * s.spread,
            s.tokens_per_second_at_share,
            s.share_threads
        )?;
    }
    // With RPC servers each strategy has two rows: on the servers, and on this machine.
    let label = |m: &bench::ModRun| {
        let spec = if m.draft_max > 0 { "+spec" } else { "" };
        let remote = report.r#mod.iter().any(|m| m.rpc);
        match (remote, m.rpc) {
            (false, _) => format!("{}{spec}", m.strategy),
            (true, true) => format!("{}{spec}, RPC", m.strategy),
            (true, false) => format!("{}{spec}, local", m.strategy),
        }
    };
    writeln!(
        out,
        "\n{:<16} {:>8} {:>8} {:>10} {:>10} {:>7} {:>7} {:>7} {:>11} {:>11} {:>10}",
        "MOD",
        "policies",
        "contexts",
        "prompt t/s",
        "decode t/s",
        "spread",
        "ratio",
        "floor",
        "forward ms",
        "combine ms",
        "sample ms"
    )?;
    for m in &report.r#mod {
        writeln!(
            out,
            "{:<16} {:>8} {:>8} {:>10.1} {:>10.1} {:>6.0}% {:>7.2} {:>7.2} {:>11.2} {:>11.3} {:>10.3}",
            label(m),
            m.policies,
            m.contexts,
            m.prompt_tokens_per_second,
            m.tokens_per_second,
            100.0 * m.spread,
            m.ratio,
            m.floor_ratio,
            m.forward_ms,
            m.combine_ms,
            m.sample_ms
        )?;
    }
    writeln!(
        out,
        "ratio: MOD ÷ the slowest model alone on all threads; floor: MOD ÷ the physical floor, \
         that model alone on one policy's thread share (÷ passes per thread where policies \
         outnumber threads). Times are per generated token; spread: (max − min) ÷ median of \
         the rounds' decode speeds."
    )?;
    if report.r#mod.iter().any(|m| m.rpc) {
        writeln!(
            out,
            "RPC: the policies on the RPC servers the recipe (or --rpc) names; local: the same \
             recipe with every policy on this machine. Models alone run on this machine."
        )?;
    }
    for m in report.r#mod.iter().filter(|m| m.draft_max > 0) {
        let plain = report
            .r#mod
            .iter()
            .find(|p| p.draft_max == 0 && p.strategy == m.strategy && p.rpc == m.rpc);
        writeln!(
            out,
            "{}: speculative MOD as auto runs it, drafts of up to {} tokens by {}: \
             {} of {} draft tokens accepted ({:.0} %), {:.2} tokens per pass{}",
            label(m),
            m.draft_max,
            if report.draft_model.is_some() { "the draft model" } else { "prompt lookup" },
            m.accepted,
            m.drafted,
            100.0 * m.accepted as f64 / m.drafted.max(1) as f64,
            m.tokens_per_pass,
            plain.map_or(String::new(), |p| format!(
                "; {:.2} × {} without speculation",
                m.tokens_per_second / p.tokens_per_second,
                p.strategy
            ))
        )?;
    }
    for m in report.r#mod.iter().filter(|m| m.strategy == "mixed" && !m.mixed) {
        writeln!(
            out,
            "{}: the output layer ran per policy: {}",
            label(m),
            m.unmixed_because.unwrap_or("?")
        )?;
    }
    let a = &report.auto;
    let measured: Vec<String> =
        a.step_ms.iter().map(|(s, ms)| format!("{s} {ms:.2} ms/step")).collect();
    writeln!(
        out,
        "auto runs {} here ({}{})",
        a.strategy,
        if a.cached { "remembered; measured " } else { "measured " },
        if measured.is_empty() {
            "nothing: one candidate".to_string()
        } else {
            measured.join(", ")
        }
    )?;
    for w in &report.warnings {
        writeln!(out, "warning: {w}")?;
    }
    if !report.memory.is_empty() {
        writeln!(out, "\n{:<18} {:>12} {:>8}", "prompted experts", "peak RSS MB", "ratio")?;
        for m in &report.memory {
            writeln!(out, "{:<18} {:>12.0} {:>8.2}", m.policies, m.peak_rss_mb, m.ratio)?;
        }
    }
    Ok(())
}
