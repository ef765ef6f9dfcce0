//! The `mood` binary: parses the command line and hands it to the front ends in `cli`.

use clap::Parser;

mod cli;

fn main() -> std::process::ExitCode {
    let parsed = cli::Cli::parse();
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
