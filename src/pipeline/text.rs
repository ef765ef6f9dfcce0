//! Incremental text: turns token pieces (raw bytes, which may split a UTF-8 character) into
//! text that is safe to print as it arrives, and watches for stop strings.
//!
//! Text that could still turn out to be the start of a stop string is held back until it is
//! known not to be, so a stop string is never printed, even in part.

/// What pushing a piece produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed<'a> {
    /// Text that may be printed now.
    pub emit: &'a str,
    /// True when a stop string was found; the text ends before it and nothing more is taken.
    pub stopped: bool,
}

/// Accumulates generated text. See the module documentation. After the first few tokens it
/// allocates nothing: pieces are decoded in place and emitted text is lent out.
#[derive(Debug, Default)]
pub struct TextStream {
    text: String,
    /// Bytes of a character not yet complete (at most 3).
    partial: Vec<u8>,
    /// Length of `text` already handed out.
    emitted: usize,
    stops: Vec<String>,
    stopped: bool,
}

impl TextStream {
    /// A stream that stops at the first of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        let stops = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        Self { stops, ..Self::default() }
    }

    /// The whole text so far (without any stop string, and without held-back bytes of an
    /// incomplete character).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Takes the bytes of one token piece.
    pub fn push(&mut self, piece: &[u8]) -> Pushed<'_> {
        if self.stopped {
            return Pushed { emit: "", stopped: true };
        }
        let before = self.text.len();
        self.partial.extend_from_slice(piece);
        self.decode_partial();
        if let Some(at) = self.find_stop(before) {
            self.text.truncate(at);
            self.partial.clear();
            self.stopped = true;
            let end = self.text.len();
            return Pushed { emit: self.take(end), stopped: true };
        }
        let safe = self.text.len() - self.held_back();
        Pushed { emit: self.take(safe), stopped: false }
    }

    /// Ends the stream: returns whatever was held back (an incomplete character becomes
    /// U+FFFD).
    pub fn finish(&mut self) -> &str {
        if !self.stopped && !self.partial.is_empty() {
            let rest = String::from_utf8_lossy(&self.partial).into_owned();
            self.text.push_str(&rest);
            self.partial.clear();
        }
        let end = self.text.len();
        self.take(end)
    }

    fn take(&mut self, upto: usize) -> &str {
        let from = self.emitted;
        self.emitted = upto;
        &self.text[from..upto]
    }

    /// Moves every complete character from `partial` into `text`; invalid bytes become
    /// U+FFFD; an incomplete trailing character stays in `partial`.
    fn decode_partial(&mut self) {
        let mut used = 0;
        loop {
            let rest = &self.partial[used..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    self.text.push_str(s);
                    used = self.partial.len();
                    break;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // The first `good` bytes were just checked to be UTF-8.
                    self.text.push_str(std::str::from_utf8(&rest[..good]).unwrap_or_default());
                    used += good;
                    match e.error_len() {
                        Some(n) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            used += n;
                        }
                        None => break,
                    }
                }
            }
        }
        self.partial.drain(..used);
    }

    /// The earliest stop string that ends after byte `before` (new text), if any.
    fn find_stop(&self, before: usize) -> Option<usize> {
        let longest = self.stops.iter().map(String::len).max()?;
        let mut from = before.saturating_sub(longest - 1).min(self.text.len());
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hay = &self.text[from..];
        self.stops.iter().filter_map(|s| hay.find(s.as_str())).min().map(|i| from + i)
    }

    /// Bytes at the end of the unemitted text that are a proper prefix of a stop string.
    fn held_back(&self) -> usize {
        let tail = &self.text[self.emitted..];
        let mut hold = 0;
        for stop in &self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if i > hold && tail.ends_with(&stop[..i]) {
                    hold = i;
                }
            }
        }
        hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&[u8]], stops: &[&str]) -> (Vec<String>, String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut t = TextStream::new(&stops);
        let mut emitted = Vec::new();
        let mut stopped = false;
        for p in pieces {
            let r = t.push(p);
            emitted.push(r.emit.to_string());
            if r.stopped {
                stopped = true;
                break;
            }
        }
        emitted.push(t.finish().to_string());
        (emitted, t.text().to_string(), stopped)
    }

    #[test]
    fn split_utf8_character_is_held_until_complete() {
        let euro = "€".as_bytes(); // 3 bytes
        let (emitted, text, _) = run(&[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"], &[]);
        assert_eq!(emitted, ["a", "", "", "€", "b", ""]);
        assert_eq!(text, "a€b");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (_, text, _) = run(&[b"x\xffy"], &[]);
        assert_eq!(text, "x\u{fffd}y");
        let (emitted, text, _) = run(&[b"z", &"€".as_bytes()[..2]], &[]);
        assert_eq!(text, "z\u{fffd}");
        assert_eq!(emitted.concat(), "z\u{fffd}");
    }

    #[test]
    fn stop_string_across_pieces_is_never_printed() {
        let (emitted, text, stopped) =
            run(&[b"Hello wo", b"rld", b"END", b"more"], &["\nUser:", "ldEN"]);
        assert!(stopped);
        assert_eq!(text, "Hello wor");
        assert_eq!(emitted.concat(), "Hello wor");
        // "wo" could start nothing; "l" could start "ldEN" and is held back until disproved.
        let (emitted, _, stopped) = run(&[b"al", b"x"], &["ldEN"]);
        assert!(!stopped);
        assert_eq!(emitted, ["a", "lx", ""]);
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (_, text, stopped) = run(&[b"one two three"], &["three", "two"]);
        assert!(stopped);
        assert_eq!(text, "one ");
    }

    #[test]
    fn held_back_prefix_is_flushed_at_the_end() {
        let (emitted, text, stopped) = run(&[b"abc\n", b"Us"], &["\nUser:"]);
        assert!(!stopped);
        assert_eq!(text, "abc\nUs");
        assert_eq!(emitted, ["abc", "", "\nUs"]);
    }

    #[test]
    fn multibyte_stop_strings_work() {
        let (_, text, stopped) = run(&[b"caf", "é!".as_bytes()], &["é"]);
        assert!(stopped);
        assert_eq!(text, "caf");
    }
}
