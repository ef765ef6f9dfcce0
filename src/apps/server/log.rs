//! One line on stderr per request: when it came, from where, the method and path, the
//! status, how long it took, and for completions the tokens generated and the fields the body
//! gave that were dropped (lenient mode). No body, prompt or header is ever written.
//!
//! `text` (the default):
//! `2025-01-02T03:04:05.678Z 127.0.0.1 POST /v1/completions 200 ms=412.3 tokens=16 ignored=metadata,user`
//!
//! `json`, one object per line:
//! `{"time":"…","client":"127.0.0.1","method":"POST","path":"/v1/completions","status":200,"duration_ms":412.3,"tokens":16,"ignored":["metadata","user"]}`
//!
//! A streamed answer is logged when its stream ends (`stream=done`, `error` or `client_gone`;
//! `ms` is then the whole stream's time), a request whose client left before the answer as
//! status 499.

use super::listener::ClientAddr;
use crate::apps::openai::fields::shown;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// How request lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Space-separated words and `key=value` pairs.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => anyhow::bail!("unknown log format '{other}' (text, json)"),
        }
    }
}

/// How a streamed answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// With `data: [DONE]`, and this many tokens generated.
    Done(usize),
    /// With an error event.
    Error,
    /// The client went away first.
    ClientGone,
}

/// What a generation handler tells the request log about its answer (a response extension).
#[derive(Debug, Clone, Default)]
pub struct Note {
    /// Tokens generated (a whole answer).
    pub tokens: Option<usize>,
    /// The fields dropped from the body.
    pub ignored: Vec<String>,
    /// A streamed answer: how it ended, once it has.
    pub stream: Option<Arc<Mutex<Option<oneshot::Receiver<StreamEnd>>>>>,
}

/// Sends how a stream ended when dropped (so that every way out of a stream is logged).
pub struct StreamGuard {
    tx: Option<oneshot::Sender<StreamEnd>>,
    pub end: StreamEnd,
}

impl StreamGuard {
    /// A guard and the note that waits on it; the stream counts as gone until told otherwise.
    pub fn new() -> (Self, Note) {
        let (tx, rx) = oneshot::channel();
        let note = Note { stream: Some(Arc::new(Mutex::new(Some(rx)))), ..Note::default() };
        (Self { tx: Some(tx), end: StreamEnd::ClientGone }, note)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(self.end);
        }
    }
}

/// The request as it came, for its line.
struct Seen {
    format: LogFormat,
    started: Instant,
    client: Option<String>,
    method: String,
    path: String,
    /// Written already (a request dropped before its answer is logged as 499).
    written: bool,
}

impl Drop for Seen {
    fn drop(&mut self) {
        if !self.written {
            self.write(499, &Note::default(), None);
        }
    }
}

/// The longest path written (request targets may be up to 8 KiB).
const PATH_CHARS: usize = 200;

impl Seen {
    fn write(&mut self, status: u16, note: &Note, stream: Option<Option<StreamEnd>>) {
        self.written = true;
        let ms = (self.started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
        let tokens = match stream {
            Some(Some(StreamEnd::Done(n))) => Some(n),
            _ => note.tokens,
        };
        let end = stream.map(|e| match e {
            Some(StreamEnd::Done(_)) => "done",
            Some(StreamEnd::Error) => "error",
            Some(StreamEnd::ClientGone) | None => "client_gone",
        });
        let ignored: Vec<String> = note.ignored.iter().map(|n| shown(n)).collect();
        let line = match self.format {
            LogFormat::Text => {
                let mut line = format!(
                    "{} {} {} {} {status} ms={ms}",
                    utc_now(),
                    self.client.as_deref().unwrap_or("-"),
                    self.method,
                    self.path
                );
                if let Some(n) = tokens {
                    let _ = write!(line, " tokens={n}");
                }
                if let Some(end) = end {
                    let _ = write!(line, " stream={end}");
                }
                if !ignored.is_empty() {
                    let _ = write!(line, " ignored={}", ignored.join(","));
                }
                line
            }
            LogFormat::Json => {
                let mut o = Map::new();
                o.insert("time".into(), json!(utc_now()));
                o.insert("client".into(), json!(self.client));
                o.insert("method".into(), json!(self.method));
                o.insert("path".into(), json!(self.path));
                o.insert("status".into(), json!(status));
                o.insert("duration_ms".into(), json!(ms));
                if let Some(n) = tokens {
                    o.insert("tokens".into(), json!(n));
                }
                if let Some(end) = end {
                    o.insert("stream".into(), json!(end));
                }
                if !ignored.is_empty() {
                    o.insert("ignored".into(), json!(ignored));
                }
                Value::Object(o).to_string()
            }
        };
        eprintln!("{line}");
    }
}

/// The middleware writing each request's line.
pub async fn requests(State(format): State<LogFormat>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let mut seen = Seen {
        format,
        started: Instant::now(),
        client: req.extensions().get::<ClientAddr>().map(|c| c.0.ip().to_string()),
        method: req.method().as_str().chars().take(16).collect(),
        path: path.chars().take(PATH_CHARS).collect::<String>()
            + if path.len() > PATH_CHARS { "..." } else { "" },
        written: false,
    };
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let note = response.extensions().get::<Note>().cloned().unwrap_or_default();
    let waiting = note.stream.as_ref().and_then(|s| s.lock().ok()?.take());
    match waiting {
        None => seen.write(status, &note, None),
        Some(rx) => {
            // Written when the stream ends, not when its head goes out.
            tokio::spawn(async move {
                let end = rx.await.ok();
                seen.write(status, &note, Some(end));
            });
        }
    }
    response
}

/// Now in UTC, as `2025-01-02T03:04:05.678Z`.
fn utc_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    utc(now.as_secs(), now.subsec_millis())
}

fn utc(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(utc(1_735_787_045, 678), "2025-01-02T03:04:05.678Z");
        assert_eq!(utc(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn formats_are_named() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
