//! Batch work split over machines: shard K of N takes the items whose index is K − 1 modulo
//! N (`mood batch --shard K/N`: input lines; `mood sweep --shard K/N`: generations in sweep
//! order), each shard with its own output, resumable as a whole run is; a job-array scheduler
//! (Slurm, Kubernetes Jobs, GNU parallel over ssh) runs one shard per task. Merging joins the
//! shards' outputs back in input order, and checks that every item has exactly one record:
//! a missing or duplicated one is an error that names it.
//!
//! This module owns the shard arithmetic, the merge of batch outputs, and the writing of a
//! merged file; the sweep's merge (which places records by weight vector and prompt) is in
//! [`crate::apps::sweep`].

use crate::input::{Line, Lines, LINE_LIMIT};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The most shards a job is split into.
pub const MAX_SHARDS: usize = 1_000_000;

/// Shard `k` (1-based) of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: usize,
    pub n: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            anyhow!(
                "--shard takes K/N, shard K (from 1 to N) of N (at most {MAX_SHARDS}), e.g. 2/8; \
                 got '{}'",
                s.escape_debug()
            )
        };
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let (k, n): (usize, usize) =
            (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if n == 0 || n > MAX_SHARDS || k == 0 || k > n {
            return Err(bad());
        }
        Ok(Self { k, n })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl Shard {
    /// Whether the item of 0-based `index` belongs to this shard.
    pub fn contains(&self, index: usize) -> bool {
        index % self.n == self.k - 1
    }
}

/// Where a record sits: in which of the merged files, at which byte, how long (without its
/// end of line). Records are copied from there byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef {
    pub file: usize,
    pub offset: u64,
    pub len: usize,
}

/// Writes the records `refs` of `files`, in order, one per line, to `output`: first to a
/// temporary file beside it, then renamed, so that a merge cut short leaves no partial output.
/// An existing `output` is refused.
pub fn write_merged(output: &Path, files: &[PathBuf], refs: &[LineRef]) -> Result<()> {
    let shown = output.display();
    if output.exists() {
        bail!("{shown} exists; merge into a new file");
    }
    let name = output.file_name().ok_or_else(|| anyhow!("{shown} is not a file path"))?;
    let tmp = output.with_file_name(format!(".{}.merging", name.to_string_lossy()));
    let result = (|| -> Result<()> {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&tmp).with_context(|| format!("cannot create {shown}"))?,
        );
        let mut readers = files
            .iter()
            .map(|f| {
                std::fs::File::open(f)
                    .map(BufReader::new)
                    .with_context(|| format!("cannot open {}", f.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut buf = Vec::new();
        for r in refs {
            let reader = &mut readers[r.file];
            let shown = files[r.file].display();
            reader
                .seek(SeekFrom::Start(r.offset))
                .with_context(|| format!("cannot read {shown}"))?;
            buf.resize(r.len, 0);
            reader.read_exact(&mut buf).with_context(|| format!("cannot read {shown}"))?;
            out.write_all(&buf).and_then(|()| out.write_all(b"\n"))?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })()
    .with_context(|| format!("cannot write {shown}"));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, output).with_context(|| format!("cannot write {shown}"))
}

/// What a batch merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// Records written (one per non-blank input line).
    pub records: usize,
    /// Lines of the shard files that are not records (damaged lines a resume left in place),
    /// skipped.
    pub skipped: usize,
}

/// The non-blank line numbers of a batch input (every one of them gets a record: a
/// generation, or an error record for a bad line).
fn input_lines(input: &Path) -> Result<Vec<usize>> {
    let file = std::fs::File::open(input)
        .with_context(|| format!("cannot open input {}", input.display()))?;
    let mut lines = Lines::new(BufReader::new(file), LINE_LIMIT);
    let (mut out, mut number) = (Vec::new(), 0);
    while let Some(line) =
        lines.next_line().with_context(|| format!("cannot read input {}", input.display()))?
    {
        number += 1;
        if !matches!(&line, Line::Text(t) if t.trim().is_empty()) {
            out.push(number);
        }
    }
    Ok(out)
}

/// Joins the outputs of `mood batch --shard` runs over `input` into `output`, in input
/// order: every non-blank input line must have exactly one record among the shards. A
/// missing record (a shard not run to its end), a record twice (a shard run twice, or into
/// two files), a record of a line the input does not have (another input), or a last line
/// cut short is an error that names the lines and files; nothing is written then.
pub fn merge_batch(input: &Path, shards: &[PathBuf], output: &Path) -> Result<MergeSummary> {
    if shards.is_empty() {
        bail!("--merge needs the shards' output files (mood batch --merge --input FILE --output FILE SHARD…)");
    }
    let expected = input_lines(input)?;
    let mut found: HashMap<usize, LineRef> = HashMap::with_capacity(expected.len());
    let mut summary = MergeSummary::default();
    for (f, path) in shards.iter().enumerate() {
        let shown = path.display();
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
        let mut lines = Lines::new(BufReader::new(file), LINE_LIMIT);
        let mut number = 0;
        loop {
            let offset = lines.consumed;
            let Some(line) = lines.next_line().with_context(|| format!("cannot read {shown}"))?
            else {
                break;
            };
            number += 1;
            let record = match &line {
                Line::Text(t) if t.trim().is_empty() => continue,
                Line::Text(t) => crate::apps::records::parse_record(t).map(|(l, _)| (l, t.len())),
                _ => None,
            };
            let Some((at, len)) = record else {
                if !lines.complete {
                    bail!(
                        "{shown} ends with a line cut short (a run that was killed); continue \
                         that shard with --resume first"
                    );
                }
                summary.skipped += 1;
                continue;
            };
            let here = LineRef { file: f, offset, len };
            if let Some(earlier) = found.insert(at, here) {
                bail!(
                    "input line {at} has two records, in {} and {shown} (line {number}): a \
                     duplicated record; merge each shard's output once",
                    shards[earlier.file].display()
                );
            }
        }
    }
    let known: std::collections::HashSet<usize> = expected.iter().copied().collect();
    let mut strangers: Vec<usize> = found.keys().copied().filter(|l| !known.contains(l)).collect();
    if !strangers.is_empty() {
        strangers.sort_unstable();
        bail!(
            "the shards hold records of {} line(s) that {} does not have (first: line {}); \
             merge with the input the shards were run on",
            strangers.len(),
            input.display(),
            strangers[0]
        );
    }
    let missing: Vec<usize> = expected.iter().copied().filter(|l| !found.contains_key(l)).collect();
    if !missing.is_empty() {
        bail!(
            "{} line(s) of {} have no record in the shards ({}); run the missing shard, or \
             continue an unfinished one with --resume, then merge again",
            missing.len(),
            input.display(),
            list(&missing)
        );
    }
    let ordered: BTreeMap<usize, LineRef> = found.into_iter().collect();
    let refs: Vec<LineRef> = ordered.into_values().collect();
    write_merged(output, shards, &refs)?;
    summary.records = refs.len();
    Ok(summary)
}

/// Up to ten line numbers, written out ("line 3, line 7, … and 12 more").
pub fn list(numbers: &[usize]) -> String {
    let mut out: Vec<String> = numbers.iter().take(10).map(|n| format!("line {n}")).collect();
    if numbers.len() > 10 {
        out.push(format!("and {} more", numbers.len() - 10));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mood-shard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn shards_split_every_index_once() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!((s.k, s.n), (2, 3));
        assert_eq!(s.to_string(), "2/3");
        let shards: Vec<Shard> = (1..=3).map(|k| Shard { k, n: 3 }).collect();
        for i in 0..30 {
            assert_eq!(shards.iter().filter(|s| s.contains(i)).count(), 1, "{i}");
        }
        assert!(Shard { k: 1, n: 3 }.contains(0) && Shard { k: 1, n: 3 }.contains(3));
        assert!("1/1".parse::<Shard>().unwrap().contains(17));
        for bad in ["0/3", "4/3", "1/0", "x/3", "3", "1/2/3", "-1/3", "1/2000000"] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains("--shard takes K/N"), "{bad}: {e}");
        }
    }

    #[test]
    fn merging_puts_records_in_input_order_and_checks_each_line_once() {
        let input = scratch("in.jsonl", "{\"id\":1}\n\n{\"id\":3}\nnot json\n{\"id\":5}\n");
        let a = scratch(
            "a.jsonl",
            "{\"id\":5,\"line\":5,\"text\":\"e\"}\n{\"id\":1,\"line\":1,\"text\":\"a\"}\n",
        );
        let b = scratch("b.jsonl", "{\"id\":3,\"line\":3,\"text\":\"c\"}\n{\"broken\n{\"id\":null,\"line\":4,\"error\":\"x\"}\n");
        let out = std::env::temp_dir().join(format!("mood-shard-{}/out.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let s = merge_batch(&input, &[a.clone(), b.clone()], &out).unwrap();
        assert_eq!(s, MergeSummary { records: 4, skipped: 1 });
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["line"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(lines, vec![1, 3, 4, 5]);
        let again = merge_batch(&input, &[a.clone(), b.clone()], &out).unwrap_err().to_string();
        assert!(again.contains("exists"), "{again}");
        let _ = std::fs::remove_file(&out);

        let e = format!("{:#}", merge_batch(&input, std::slice::from_ref(&a), &out).unwrap_err());
        assert!(e.contains("2 line(s)") && e.contains("line 3, line 4"), "{e}");
        let e = format!(
            "{:#}",
            merge_batch(&input, &[a.clone(), b.clone(), a.clone()], &out).unwrap_err()
        );
        assert!(e.contains("two records") && e.contains("duplicated"), "{e}");
        let c = scratch("c.jsonl", "{\"id\":9,\"line\":9}\n");
        let e = format!("{:#}", merge_batch(&input, &[a.clone(), b.clone(), c], &out).unwrap_err());
        assert!(e.contains("does not have") && e.contains("line 9"), "{e}");
        let cut = scratch(
            "cut.jsonl",
            "{\"id\":3,\"line\":3}\n{\"id\":null,\"line\":4,\"error\":\"x\"}\n{\"id\":5,\"li",
        );
        let e = format!("{:#}", merge_batch(&input, &[a, cut], &out).unwrap_err());
        assert!(e.contains("cut short") && e.contains("--resume"), "{e}");
        assert!(!out.exists(), "a failed merge writes nothing");
    }
}
