//! What one llama.cpp forward pass costs by its width (`mood::pipeline::engine::passes`):
//! passes of 1 to 8 sequences with one new token each, with every token's logits and with
//! one row (the output layer once, as `mixed` runs it); medians in milliseconds. Then, with
//! two threads or more, a one-token pass on half the threads alone and with another such pass
//! running at the same time (as the `threads` strategy runs two contexts).
//! `cargo bench --bench passes -- [ROUNDS] [THREADS] [MODEL.gguf …]` (default: 15 rounds,
//! all cores, the default model).

use mood::pipeline::engine::passes::{self, MAX_WIDTH};
use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut numbers = args.iter().filter_map(|a| a.parse::<usize>().ok());
    let rounds = numbers.next().unwrap_or(15).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = numbers.next().unwrap_or(cores).max(1);
    let mut models: Vec<PathBuf> =
        args.iter().filter(|a| a.parse::<usize>().is_err()).map(PathBuf::from).collect();
    if models.is_empty() {
        models.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/gemma-3-270m-q4_k_m.gguf"));
    }
    mood::silence_llama_log();
    println!("{rounds} rounds, {threads} threads; milliseconds per pass (median)\n");
    let widths: Vec<String> = (1..=MAX_WIDTH).map(|w| format!("w={w}")).collect();
    println!("| model | logits | {} |", widths.join(" | "));
    println!("|---|---|{}", "---|".repeat(MAX_WIDTH));
    for path in &models {
        let costs = passes::measure(path, threads, MAX_WIDTH, rounds).unwrap_or_else(|e| {
            eprintln!("passes bench: {e:#}");
            std::process::exit(1);
        });
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        for (label, row) in [("every token", &costs.every_row_ms), ("one row", &costs.one_row_ms)] {
            let cells: Vec<String> = row.iter().map(|m| format!("{m:.2}")).collect();
            println!("| {name} | {label} | {} |", cells.join(" | "));
        }
    }
    if threads < 2 {
        return;
    }
    let half = threads / 2;
    println!("\n| model | {half} thread(s), alone | {half} thread(s), 2 at once |\n|---|---|---|");
    for path in &models {
        let measured = passes::measure(path, half, 1, rounds)
            .and_then(|alone| Ok((alone, passes::measure_alongside(path, half, 2, rounds)?)));
        let (alone, both) = measured.unwrap_or_else(|e| {
            eprintln!("passes bench: {e:#}");
            std::process::exit(1);
        });
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        println!("| {name} | {:.2} | {:.2} |", alone.ms(1, true), both.ms(1, true));
    }
}
