//! What a sweep reads: the prompt set, one JSON object per line with a `prompt` and
//! optionally an `id`; and the line reader that it and the kept generations are read with,
//! which bounds every line.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// One prompt of the set: its id (the line's `id`, or its line number) and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub id: Value,
    pub text: String,
}

/// The longest line read from a prompt file or a generations file.
pub const MAX_LINE_BYTES: usize = 64 << 20;
/// The most prompts a sweep takes.
pub const MAX_PROMPTS: usize = 100_000;

/// Receives a line: its number, its bytes, whether a newline ended it.
pub(super) type LineFn<'a> = dyn FnMut(usize, &[u8], bool) -> Result<()> + 'a;

/// Reads `path` a line at a time (each at most `max` bytes), handing each line,
/// without its newline, to `each` with its 1-based number and whether a newline ended it
/// (only the last line may lack one). Returns the length in bytes of the lines that a
/// newline ended.
pub(super) fn read_lines(path: &Path, max: usize, each: &mut LineFn) -> Result<u64> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let (mut buf, mut complete, mut number) = (Vec::new(), 0u64, 0usize);
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(max as u64 + 1)
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(complete);
        }
        number += 1;
        if buf.last() == Some(&b'\n') {
            each(number, &buf[..n - 1], true)?;
            complete += n as u64;
        } else if buf.len() > max {
            bail!("{} line {number}: longer than {max} bytes", path.display());
        } else {
            each(number, &buf, false)?;
            return Ok(complete);
        }
    }
}

/// Reads a prompt set: one JSON object per line with a non-empty `prompt` and optionally an
/// `id` (string or number; the line number otherwise); other keys are ignored.
pub fn read_prompts(path: &Path) -> Result<Vec<Prompt>> {
    let mut prompts = Vec::new();
    let mut ids = HashSet::new();
    let at = |n: usize| format!("{} line {n}", path.display());
    read_lines(path, MAX_LINE_BYTES, &mut |n, bytes, _| {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| anyhow!("{}: invalid JSON ({e})", at(n)))?;
        let text = match v.get("prompt") {
            Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
            _ => bail!("{}: needs a non-empty string \"prompt\"", at(n)),
        };
        let id = match v.get("id") {
            None | Some(Value::Null) => json!(n),
            Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
            Some(_) => bail!("{}: \"id\" must be a string or a number", at(n)),
        };
        if !ids.insert(id.to_string()) {
            bail!("{}: id {id} is used by an earlier line; give each prompt its own id", at(n));
        }
        if prompts.len() == MAX_PROMPTS {
            bail!("{} holds more than {MAX_PROMPTS} prompts", path.display());
        }
        prompts.push(Prompt { id, text });
        Ok(())
    })?;
    if prompts.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    Ok(prompts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mood-sweep-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn prompts_take_ids_or_line_numbers() {
        let p = scratch(
            "prompts.jsonl",
            b"{\"id\": \"a\", \"prompt\": \"The sea\"}\n\n{\"prompt\": \"The moon\", \"x\": 1}\n{\"id\": 7, \"prompt\": \"Stars\"}",
        );
        let got = read_prompts(&p).unwrap();
        let ids: Vec<Value> = got.iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids, vec![json!("a"), json!(3), json!(7)], "line 3 has no id");
        assert_eq!(got[2].text, "Stars", "a last line without a newline is read");
    }

    #[test]
    fn bad_prompt_files_say_which_line_and_why() {
        let cases: [(&[u8], &str); 7] = [
            (b"{\"prompt\": \"a\"}\nnot json\n", "line 2: invalid JSON"),
            (b"{\"id\": 1}\n", "line 1: needs a non-empty string \"prompt\""),
            (b"{\"prompt\": \"  \"}\n", "non-empty"),
            (b"{\"id\": [1], \"prompt\": \"a\"}\n", "\"id\" must be a string or a number"),
            (
                b"{\"id\": 1, \"prompt\": \"a\"}\n{\"id\": 1, \"prompt\": \"b\"}\n",
                "line 2: id 1 is used",
            ),
            (b"{\"prompt\": \"caf\xe9\"}\n", "line 1: invalid JSON"),
            (b"\n \n", "holds no prompts"),
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            let e = message(read_prompts(&scratch(&format!("bad{i}.jsonl"), bytes)));
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(message(read_prompts(Path::new("/nonexistent/p.jsonl"))).contains("cannot open"));
    }

    #[test]
    fn long_lines_are_refused_without_reading_them_whole() {
        let p = scratch("long.jsonl", &[b'x'; 100]);
        let e = message(read_lines(&p, 16, &mut |_, _, _| Ok(())));
        assert!(e.contains("line 1: longer than 16 bytes"), "{e}");
    }
}
