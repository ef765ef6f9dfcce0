//! `mood quantize`: [`mood::pipeline::engine::quantize`] with progress and the size written.

use super::QuantizeArgs;
use anyhow::Result;
use mood::pipeline::engine::quantize;

/// `mood quantize`: llama.cpp's quantizer with progress and the size written.
pub fn run(args: QuantizeArgs) -> Result<()> {
    quantize::file_type(&args.r#type)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores);
    if threads == 0 || threads > 4 * cores.max(64) {
        anyhow::bail!("--threads {threads} is out of range; give 1 to {}", 4 * cores.max(64));
    }
    eprintln!(
        "mood: quantizing {} to {} on {threads} threads…",
        args.input.display(),
        args.r#type.to_uppercase()
    );
    quantize::quantize(&args.input, &args.output, &args.r#type, threads)?;
    let size = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    eprintln!("mood: wrote {} ({:.1} MB)", args.output.display(), size as f64 / 1e6);
    Ok(())
}
