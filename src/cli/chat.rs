//! `mood chat`: a read-eval-print loop over [`mood::apps::chat::Chat`]. Replies stream to stdout;
//! prompts, command answers and per-reply figures go to stderr.

use super::wiring::{build_recipe, constraint, load_engine, one_line, session_options, settings};
use super::ChatArgs;
use anyhow::{Context, Result};
use mood::apps::chat::{Chat, Input, HELP};
use mood::input::{Line, Lines, LINE_LIMIT};
use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub fn run(args: ChatArgs) -> Result<()> {
    let mut recipe = build_recipe(&args.policies)?;
    if let Some(system) = &args.system {
        for p in recipe.reference.iter_mut().chain(recipe.experts.iter_mut()) {
            p.system.get_or_insert_with(|| system.clone());
        }
    }
    let mut settings = settings(args.max_tokens, &args.stop, &args.sampling)?;
    settings.constraint = constraint(&args.constraint)?;
    let options = session_options(&args.run)?;
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = load_engine(&policies, &args.run)?;
    let mut chat = Chat::new(&engine, recipe, settings, &args.template, options)?;

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;

    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("mood chat — {HELP}");
    }
    let mut lines = Lines::new(std::io::stdin().lock(), LINE_LIMIT);
    loop {
        if interactive {
            eprint!("> ");
        }
        let line = match lines.next_line().context("cannot read standard input")? {
            None => break, // Ctrl-D or end of the pipe
            Some(Line::Text(t)) => t,
            Some(Line::NotUtf8(_)) => {
                eprintln!("mood: that line is not UTF-8 text; nothing was sent");
                continue;
            }
            Some(Line::TooLong) => {
                eprintln!(
                    "mood: that line is longer than {} MiB; nothing was sent",
                    LINE_LIMIT >> 20
                );
                continue;
            }
        };
        let input = match Input::parse(&line) {
            Ok(Some(input)) => input,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("mood: {}", one_line(&e));
                continue;
            }
        };
        match input {
            Input::Message(text) => {
                let mut out = std::io::stdout().lock();
                let mut print = |s: &str| {
                    let _ = out.write_all(s.as_bytes());
                    let _ = out.flush();
                };
                match chat.reply(&text, &mut print, &cancel) {
                    Ok(r) => {
                        let _ = writeln!(out);
                        let g = &r.generation;
                        eprintln!(
                            "[{} tokens, {:.1} tok/s, {:?}, seed {}, {} prompt tokens reused]",
                            g.tokens.len(),
                            g.timings.tokens_per_second,
                            g.finish_reason,
                            g.seed,
                            r.reused_tokens
                        );
                    }
                    Err(e) => eprintln!("mood: {}", one_line(&e)),
                }
            }
            command => match chat.command(command) {
                Ok(msg) => eprintln!("{msg}"),
                Err(e) => eprintln!("mood: {}", one_line(&e)),
            },
        }
    }
    Ok(())
}
