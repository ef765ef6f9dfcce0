//! Reading what users give: files and streams, always with a limit, so that `/dev/zero`, a
//! runaway pipe or a file that is not text ends in a one-line error instead of exhausting
//! memory.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Read};
use std::path::Path;

/// The largest prompt, recipe or other whole file read (bytes).
pub const FILE_LIMIT: u64 = 16 << 20;
/// The longest line of a JSONL input or output file (bytes).
pub const LINE_LIMIT: usize = 16 << 20;

/// Reads a whole file (or standard input for `-`) as UTF-8 text, up to [`FILE_LIMIT`] bytes.
/// `what` names it in errors ("prompt file", "recipe").
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    let shown = path.display();
    let bytes = if path.as_os_str() == "-" {
        read_limited(&mut std::io::stdin().lock(), FILE_LIMIT)
            .with_context(|| format!("cannot read the {what} from standard input"))?
    } else {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {what} {shown}"))?;
        if meta.is_dir() {
            bail!("{what} {shown} is a folder; give a file");
        }
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot read {what} {shown}"))?;
        read_limited(&mut file, FILE_LIMIT)
            .with_context(|| format!("cannot read {what} {shown}"))?
    };
    let Some(bytes) = bytes else {
        bail!("{what} {shown} is larger than {} MiB; mood reads at most that", FILE_LIMIT >> 20);
    };
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {shown} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Reads everything up to `limit` bytes; `None` when there is more.
fn read_limited(r: &mut dyn Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    r.take(limit + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

/// One line of a line-oriented input, as read by [`Lines`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line of UTF-8 text (without its end of line).
    Text(String),
    /// A line that is not UTF-8; the byte offset of the first invalid byte.
    NotUtf8(usize),
    /// A line over the limit; its bytes were skipped.
    TooLong,
}

/// The lines of a stream, each read with a bounded buffer: a line over the limit is skipped
/// (as [`Line::TooLong`]) without holding it in memory.
pub struct Lines<R> {
    reader: R,
    limit: usize,
    buf: Vec<u8>,
    /// Whether the last line read ended with a newline.
    pub complete: bool,
    /// Bytes consumed from the stream so far (the end of the last line read).
    pub consumed: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R, limit: usize) -> Self {
        Self { reader, limit, buf: Vec::new(), complete: true, consumed: 0 }
    }

    /// The next line, or `None` at the end of the stream.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        self.buf.clear();
        let n = (&mut self.reader).take(self.limit as u64 + 1).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.consumed += n as u64;
        self.complete = self.buf.last() == Some(&b'\n');
        if self.complete {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        if self.buf.len() > self.limit {
            self.skip_rest()?;
            return Ok(Some(Line::TooLong));
        }
        let bytes = std::mem::take(&mut self.buf);
        Ok(Some(match String::from_utf8(bytes) {
            Ok(s) => Line::Text(s),
            Err(e) => Line::NotUtf8(e.utf8_error().valid_up_to()),
        }))
    }

    /// Skips to the end of the current line, in bounded chunks.
    fn skip_rest(&mut self) -> std::io::Result<()> {
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                self.complete = false;
                return Ok(());
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.reader.consume(i + 1);
                    self.consumed += i as u64 + 1;
                    self.complete = true;
                    return Ok(());
                }
                None => {
                    let n = chunk.len();
                    self.reader.consume(n);
                    self.consumed += n as u64;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], limit: usize) -> Vec<Line> {
        let mut lines = Lines::new(input, limit);
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().unwrap() {
            out.push(l);
        }
        out
    }

    #[test]
    fn lines_are_bounded_and_checked() {
        let got = all(b"ab\r\nxx\xffy\n0123456789abc\nlast", 8);
        assert_eq!(
            got,
            vec![
                Line::Text("ab".into()),
                Line::NotUtf8(2),
                Line::TooLong,
                Line::Text("last".into())
            ]
        );
        let mut l = Lines::new(&b"one\ntwo"[..], 8);
        l.next_line().unwrap();
        assert!(l.complete);
        assert_eq!(l.consumed, 4);
        l.next_line().unwrap();
        assert!(!l.complete, "the last line has no newline");
        assert_eq!(l.consumed, 7);
        let mut l = Lines::new(&b"0123456789abc\nx"[..], 8);
        assert_eq!(l.next_line().unwrap(), Some(Line::TooLong));
        assert_eq!(l.consumed, 14, "a skipped line is consumed whole");
    }

    #[test]
    fn an_endless_stream_is_refused_in_bounded_memory() {
        let zeros = std::io::repeat(0).take(100 << 20);
        let got = read_limited(&mut { zeros }, 1 << 20).unwrap();
        assert!(got.is_none());
        // A line that never ends is skipped chunk by chunk.
        let mut lines =
            Lines::new(std::io::BufReader::new(std::io::repeat(b'a').take(64 << 20)), 1024);
        assert_eq!(lines.next_line().unwrap(), Some(Line::TooLong));
        assert_eq!(lines.next_line().unwrap(), None);
    }
}
