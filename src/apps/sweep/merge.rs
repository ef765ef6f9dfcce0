//! Joining sharded sweeps: the `generations.jsonl` of `mood sweep --shard K/N` runs, merged
//! into one folder in sweep order (weight vector after weight vector, prompt after prompt),
//! with every generation of the plan there exactly once — then the table and figure are those
//! of a sweep that ran on one machine.

use super::files::{parse_record, GENERATIONS};
use super::input::{read_lines, MAX_LINE_BYTES};
use super::Plan;
use crate::apps::shard::{write_merged, LineRef};
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a merge wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// Generations written: the plan's weight vectors × prompts.
    pub records: usize,
    /// Records of the shards outside the plan (other weight vectors or prompts), left out.
    pub outside: usize,
}

/// Merges the generations of the shard folders `dirs` into `output` (a `generations.jsonl`
/// that must not exist yet), in sweep order. Every record must have been made with the
/// plan's settings; a generation of the plan with no record, or with two, and a shard whose
/// last line was cut short, are errors that say which; nothing is written then.
pub fn merge(plan: &Plan, dirs: &[PathBuf], output: &Path) -> Result<Merged> {
    if dirs.is_empty() {
        bail!(
            "--merge needs the shards' output folders (mood sweep … --merge DIR… --output-dir DIR)"
        );
    }
    let config = plan.config();
    let files: Vec<PathBuf> = dirs.iter().map(|d| d.join(GENERATIONS)).collect();
    let n_prompts = plan.prompts.len();
    // (file, line) of the record found for each generation, by index in sweep order.
    let mut found: HashMap<usize, (LineRef, usize)> = HashMap::new();
    let mut outside = 0;
    for (f, path) in files.iter().enumerate() {
        if !path.exists() {
            bail!(
                "{} does not exist; give the folders the shards wrote (--output-dir)",
                path.display()
            );
        }
        let mut offset = 0u64;
        read_lines(path, MAX_LINE_BYTES, &mut |n, bytes, ended| {
            let here = LineRef { file: f, offset, len: bytes.len() };
            offset += bytes.len() as u64 + 1;
            if !ended {
                bail!(
                    "{} ends with a line cut short (a run that was killed); continue that shard \
                     with --resume first",
                    path.display()
                );
            }
            let stored = parse_record(bytes, &config)
                .map_err(|e| anyhow!("{} line {n}: {e}", path.display()))?;
            let Some((w, p)) = plan.place(std::slice::from_ref(&stored))[0] else {
                outside += 1;
                return Ok(());
            };
            if let Some((earlier, line)) = found.insert(w * n_prompts + p, (here, n)) {
                bail!(
                    "the generation of weights {:?} and prompt {} has two records, {} line \
                     {line} and {} line {n}: a duplicated record; merge each shard's folder once",
                    plan.weights[w],
                    plan.prompts[p].id,
                    files[earlier.file].display(),
                    path.display()
                );
            }
            Ok(())
        })?;
    }
    let total = plan.total();
    let missing: Vec<usize> = (0..total).filter(|i| !found.contains_key(i)).collect();
    if let Some(&first) = missing.first() {
        let (w, p) = (first / n_prompts, first % n_prompts);
        bail!(
            "{} of the sweep's {total} generations have no record in the shards (the first: \
             weights {:?}, prompt {}); run the missing shard, or continue an unfinished one with \
             --resume, then merge again",
            missing.len(),
            plan.weights[w],
            plan.prompts[p].id
        );
    }
    let refs: Vec<LineRef> = (0..total).map(|i| found[&i].0).collect();
    write_merged(output, &files, &refs)?;
    Ok(Merged { records: total, outside })
}
