//! The records of a batch output file, as a resumed run and a merge of shards read them
//! back: which input lines have a record, which ids have a generation, and the repair of a
//! last line a kill cut short. Both formats: mood's own records and OpenAI's batch output.

use crate::input::{self, Lines, LINE_LIMIT};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// What an existing output file holds, for resuming.
#[derive(Debug, Default)]
pub struct Done {
    /// Input line numbers that have a record (a generation or an error record of that line).
    pub lines: HashSet<usize>,
    /// Ids (as JSON text) of lines with a generation: another line with such an id is a
    /// duplicate.
    pub ids: HashSet<String>,
    /// Lines of the file that are not records (left in place, ignored).
    pub unreadable: Vec<usize>,
}

/// The output file of a run, locked for the run's whole life.
pub struct Output {
    pub file: std::fs::File,
    pub done: Done,
}

/// Opens the output: a new file, or with `resume` an existing one of ours (or a new one),
/// whose records are read (see [`Done`]). The file is locked until the run ends: a second
/// run on the same output is refused. Nothing in an existing file is ever deleted but a
/// last line that a kill cut short.
pub fn open_output(path: &Path, resume: bool) -> Result<Output> {
    let shown = path.display();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true);
    if resume {
        options.create(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow!("output {shown} exists; pass --resume to continue it, or choose another file")
        }
        _ => anyhow!("cannot open output {shown}: {e}"),
    })?;
    if !file.metadata().with_context(|| format!("cannot read output {shown}"))?.is_file() {
        bail!("output {shown} is not a regular file; give a file path");
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "output {shown} is in use by another mood batch run; wait for it to end, or choose \
             another file"
        ),
        Err(std::fs::TryLockError::Error(e)) => bail!("cannot lock output {shown}: {e}"),
    }
    let done = if resume { scan_output(&mut file, path)? } else { Done::default() };
    Ok(Output { file, done })
}

/// Reads the records of our output file. The first line must be a record (else the file is
/// not ours and is refused); later lines that are not records are left alone. A last line
/// without its end of line is kept if it is a whole record (the end of line is added), and
/// cut off otherwise (a write the kill interrupted).
fn scan_output(file: &mut std::fs::File, path: &Path) -> Result<Done> {
    use std::io::{Seek, SeekFrom};
    let shown = path.display();
    file.seek(SeekFrom::Start(0)).with_context(|| format!("cannot read output {shown}"))?;
    let mut lines = Lines::new(std::io::BufReader::new(&*file), LINE_LIMIT);
    let mut done = Done::default();
    let mut number = 0;
    let mut seen_record = false;
    // Where a cut-off last line starts, or that a whole last record lacks its end of line.
    let (mut cut_at, mut add_newline) = (None, false);
    loop {
        let start = lines.consumed;
        let Some(line) =
            lines.next_line().with_context(|| format!("cannot read output {shown}"))?
        else {
            break;
        };
        number += 1;
        let record = match &line {
            input::Line::Text(t) if t.trim().is_empty() => continue,
            input::Line::Text(t) => parse_record(t),
            _ => None,
        };
        match record {
            Some((line_no, id)) => {
                seen_record = true;
                done.lines.insert(line_no);
                if let Some(id) = id {
                    done.ids.insert(id);
                }
                add_newline = !lines.complete;
            }
            None if !lines.complete => cut_at = Some(start),
            None if !seen_record => bail!(
                "output {shown} is not a mood batch output (its line {number} is not a record); \
                 choose another file (nothing was changed)"
            ),
            None => done.unreadable.push(number),
        }
    }
    drop(lines);
    if let Some(at) = cut_at {
        file.set_len(at).with_context(|| format!("cannot repair output {shown}"))?;
    } else if add_newline {
        file.write_all(b"\n").with_context(|| format!("cannot repair output {shown}"))?;
    }
    Ok(done)
}

/// A record's input line number, and its id (as JSON text) if it is a generation (not an
/// error record), for either format.
pub(crate) fn parse_record(text: &str) -> Option<(usize, Option<String>)> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("custom_id").is_some() {
        return read_openai_record(&v);
    }
    let line = usize::try_from(v.get("line")?.as_u64()?).ok()?;
    let id = match v.get("error") {
        Some(_) => None,
        None => Some(v.get("id")?.to_string()),
    };
    Some((line, id))
}

/// A record of ours read back: its line number, and its `custom_id` (as JSON text) if it is
/// a 200 answer.
pub fn read_openai_record(v: &Value) -> Option<(usize, Option<String>)> {
    let line = usize::try_from(v.get("line")?.as_u64()?).ok()?;
    v.get("error")?;
    let ok = v.get("error").is_some_and(Value::is_null)
        && v.pointer("/response/status_code").and_then(Value::as_u64) == Some(200);
    // As JSON text, like the ids of mood's own records.
    let id =
        if ok { Some(v.get("custom_id").filter(|c| c.is_string())?.to_string()) } else { None };
    Some((line, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mood-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn resuming_reads_records_and_repairs_only_a_cut_last_line() {
        let path = scratch(
            "out.jsonl",
            "{\"id\":\"a\",\"line\":1}\n{\"id\":2,\"line\":3,\"error\":\"x\"}\n{\"id\":\"c\",\"li",
        );
        let done = open_output(&path, true).unwrap().done;
        assert!(done.ids.contains("\"a\""));
        assert!(!done.ids.contains("2"), "an error record marks its line, not its id");
        assert_eq!(done.lines, [1, 3].into_iter().collect());
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("\"error\":\"x\"}\n"));
        // A whole record that only lacks its end of line is kept.
        let path = scratch("whole.jsonl", "{\"id\":1,\"line\":1}\n{\"id\":2,\"line\":2}");
        assert_eq!(open_output(&path, true).unwrap().done.lines.len(), 2);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("\"line\":2}\n"));
        let missing =
            std::env::temp_dir().join(format!("mood-records-{}/new.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&missing);
        assert!(open_output(&missing, true).unwrap().done.lines.is_empty());
    }

    #[test]
    fn resuming_never_deletes_a_record_nor_a_foreign_file() {
        let foreign = "name,score\nalice,3\n";
        let path = scratch("notes.csv", foreign);
        let e = open_output(&path, true).err().unwrap().to_string();
        assert!(e.contains("not a mood batch output"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), foreign, "left as it was");
        // A broken line in the middle: the records after it stay and count.
        let mut text = String::new();
        for i in 1..=12 {
            text.push_str(&format!("{{\"id\":{i},\"line\":{i}}}\n"));
            if i == 3 {
                text.push_str("{\"id\":99,\"li\n");
            }
        }
        let path = scratch("broken.jsonl", &text);
        let done = open_output(&path, true).unwrap().done;
        assert_eq!(done.lines.len(), 12);
        assert_eq!(done.unreadable, vec![4]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "nothing deleted");
    }

    #[test]
    fn a_second_run_on_the_same_output_is_refused() {
        let path = scratch("locked.jsonl", "");
        let first = open_output(&path, true).unwrap();
        let e = open_output(&path, true).err().unwrap().to_string();
        assert!(e.contains("in use by another mood batch"), "{e}");
        drop(first);
        assert!(open_output(&path, true).is_ok(), "free once the first run ends");
        assert!(open_output(&path, false).err().unwrap().to_string().contains("--resume"));
    }
}
