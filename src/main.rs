//! The `mood` binary: parses the command line and hands it to the front ends in `cli`.

use clap::Parser;

mod cli;

fn main() -> std::process::ExitCode {
    // llama.cpp's spellings (-ngl, -fa, -cnv, …) first: clap would split them into letters.
    let args = match cli::llama_flags::rewrite(std::env::args_os().collect()) {
        Ok((args, notes)) => {
            for note in notes {
                eprintln!("mood: note: {note}");
            }
            args
        }
        Err(refusal) => {
            eprintln!("mood: error: {refusal}");
            return std::process::ExitCode::from(2);
        }
    };
    let parsed = cli::Cli::parse_from(args);
    // llama.cpp's own log lines are not shown: its errors reach the user as mood's messages.
    mood::silence_llama_log();
    #[cfg(feature = "dynamic-backends")]
    if let Some(dir) = std::env::var_os("MOOD_BACKENDS_DIR") {
        mood::pipeline::engine::use_backends_from(dir.into());
    }
    match cli::run(parsed) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mood: error: {}", cli::one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
