//! `mood chat`: a read-eval-print loop over [`mood::apps::chat::Chat`]. Replies stream to stdout;
//! prompts, command answers and per-reply figures go to stderr. In a terminal the line is
//! edited with rustyline (arrows, history, Ctrl-R); from a pipe lines are read as they come.

use super::wiring::{build_recipe, constraint, load_engine, one_line, session_options, settings};
use super::ChatArgs;
use anyhow::{Context, Result};
use mood::apps::chat::{Chat, Input, Reply};
use mood::input::{Line, Lines, LINE_LIMIT};
use rustyline::config::{Behavior, Config};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use std::io::{IsTerminal, StdinLock, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn run(args: ChatArgs) -> Result<()> {
    let mut recipe = build_recipe(&args.policies)?;
    if let Some(system) = &args.system {
        for p in recipe.reference.iter_mut().chain(recipe.experts.iter_mut()) {
            p.system.get_or_insert_with(|| system.clone());
        }
    }
    let mut settings = settings(args.max_tokens, &args.stop, &args.sampling, &recipe)?;
    settings.constraint = constraint(&args.constraint)?;
    let options = session_options(&args.run)?;
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = load_engine(&policies, &args.run)?;
    let mut chat = Chat::new(&engine, recipe, settings, &args.template, options)?;

    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;

    let mut reader = Reader::new()?;
    if reader.interactive() {
        eprintln!("mood chat — /help lists the experts and the commands, /quit exits");
    }
    while let Some(line) = reader.next_line()? {
        let input = match Input::parse(&line) {
            Ok(Some(input)) => input,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("mood: {}", one_line(&e));
                continue;
            }
        };
        match input {
            Input::Quit => break,
            Input::Message(text) => {
                let started = Instant::now();
                let mut first: Option<Duration> = None;
                let mut out = std::io::stdout().lock();
                let mut print = |s: &str| {
                    if !s.is_empty() {
                        first.get_or_insert_with(|| started.elapsed());
                    }
                    let _ = out.write_all(s.as_bytes());
                    let _ = out.flush();
                };
                match chat.reply(&text, &mut print, &cancel) {
                    Ok(r) => {
                        let _ = writeln!(out);
                        eprintln!("{}", figures(&r, first, chat.settings().sampling.temperature));
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

/// The line after a reply: `[42 tokens, 61.3 tok/s, eog, first text after 0.21 s,
/// 118 prompt tokens reused, 35 decoded]` (reused: the fewest any policy found in its cache;
/// decoded: summed over the policies), with the seed when the reply was sampled; bytes and
/// bytes/s for policies combined over bytes.
fn figures(r: &Reply, first: Option<Duration>, temperature: f64) -> String {
    let g = &r.generation;
    // Policies combined over bytes count bytes.
    let (unit, rate) = if g.bytes.is_some() { ("bytes", "bytes/s") } else { ("tokens", "tok/s") };
    let mut parts = vec![
        format!("{} {unit}", g.tokens.len()),
        format!("{:.1} {rate}", g.timings.tokens_per_second),
        g.finish_reason.name().to_string(),
    ];
    if let Some(t) = first {
        parts.push(format!("first text after {:.2} s", t.as_secs_f64()));
    }
    if temperature > 0.0 {
        parts.push(format!("seed {}", g.seed));
    }
    parts.push(format!(
        "{} prompt tokens reused, {} decoded",
        r.reused_tokens, g.timings.prompt_tokens_decoded
    ));
    format!("[{}]", parts.join(", "))
}

/// Where lines come from: a line editor on a terminal, else standard input as it is.
enum Reader {
    Terminal(Box<DefaultEditor>),
    Pipe(Lines<StdinLock<'static>>),
}

impl Reader {
    fn new() -> Result<Self> {
        if std::io::stdin().is_terminal() {
            // The editor talks to the terminal itself, so a reply piped from stdout holds
            // only replies.
            let config = Config::builder()
                .behavior(Behavior::PreferTerm)
                .auto_add_history(true)
                .max_history_size(1000)
                .context("cannot set up line editing")?
                .build();
            if let Ok(editor) = DefaultEditor::with_config(config) {
                return Ok(Reader::Terminal(Box::new(editor)));
            }
        }
        Ok(Reader::Pipe(Lines::new(std::io::stdin().lock(), LINE_LIMIT)))
    }

    fn interactive(&self) -> bool {
        matches!(self, Reader::Terminal(_))
    }

    /// The next line; `None` at the end of input (Ctrl-D).
    fn next_line(&mut self) -> Result<Option<String>> {
        loop {
            match self {
                Reader::Terminal(editor) => match editor.readline("> ") {
                    Ok(line) => return Ok(Some(line)),
                    // Ctrl-C at the prompt clears the line, as in a shell.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(e).context("cannot read from the terminal"),
                },
                Reader::Pipe(lines) => {
                    match lines.next_line().context("cannot read standard input")? {
                        None => return Ok(None),
                        Some(Line::Text(t)) => return Ok(Some(t)),
                        Some(Line::NotUtf8(_)) => {
                            eprintln!("mood: that line is not UTF-8 text; nothing was sent")
                        }
                        Some(Line::TooLong) => eprintln!(
                            "mood: that line is longer than {} MiB; nothing was sent",
                            LINE_LIMIT >> 20
                        ),
                    }
                }
            }
        }
    }
}
