//! The `mood` binary: parses the command line and hands it to the front ends in `cli`.

use clap::Parser;

mod cli;

fn main() -> std::process::ExitCode {
    let parsed = cli::Cli::parse();
    match cli::run(parsed) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("mood: error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
