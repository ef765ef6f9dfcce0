//! The `mood` binary: parses the command line and hands it to the front ends in `cli`.

use clap::Parser;

mod cli;

fn main() -> std::process::ExitCode {
    let parsed = cli::Cli::parse();
    match cli::run(parsed) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mood: error: {}", cli::one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
