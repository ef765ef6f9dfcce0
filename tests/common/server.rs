//! A `mood serve` child process on a free loopback port, and plain HTTP/1.1 requests to it.

use super::demo_recipe;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The API key of the servers [`start`] runs.
pub const KEY: &str = "test-key";

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address a server prints on the first line of its stderr once it listens.
pub fn listening_address(err: &mut impl BufRead) -> String {
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    line.split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

/// Starts `mood serve -r RECIPE --port 0 ARGS…` with extra environment variables and waits
/// until it listens.
pub fn serve_env(recipe: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["serve", "-r", recipe.to_str().unwrap(), "--port", "0"])
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let addr = listening_address(&mut err);
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    Server { child, addr }
}

/// Starts `mood serve -r RECIPE --port 0 ARGS…` and waits until it listens.
pub fn serve(recipe: &Path, args: &[&str]) -> Server {
    serve_env(recipe, args, &[])
}

/// The demo recipe served with the API key [`KEY`] (and `-c 1024` unless `extra` sets `-c`,
/// `--strategy threads` unless it sets one, as [`super::generate_demo`] does, so that the two
/// give the same numbers).
pub fn start(extra: &[&str]) -> Server {
    start_env(extra, &[])
}

/// As [`start`], with extra environment variables.
pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut args = vec!["--api-key", KEY];
    if !extra.contains(&"-c") {
        args.extend(["-c", "1024"]);
    }
    if !extra.contains(&"--strategy") {
        args.extend(["--strategy", "threads"]);
    }
    args.extend_from_slice(extra);
    serve_env(&demo_recipe(), &args, env)
}

/// One HTTP/1.1 request; returns (status, head, body), the body de-chunked.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.unwrap_or("");
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

/// One HTTP/1.1 request; returns (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, String) {
    let (status, _, body) = request(addr, method, path, body, key);
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// POSTs a JSON body; returns (status, JSON answer).
pub fn post_json(addr: &str, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let (status, text) = http(addr, "POST", path, Some(&body.to_string()), key);
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}")))
}

/// POSTs a JSON body with the key [`KEY`].
pub fn post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    post_json(addr, path, body, Some(KEY))
}

/// The text of a completion (status 200 expected).
pub fn completion_text(addr: &str, body: Value) -> String {
    let (status, v) = post(addr, "/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_events(raw: &str) -> Vec<String> {
    raw.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

/// The text of an SSE stream of completion chunks, and whether it ended with [DONE].
pub fn streamed_text(raw: &str, chat: bool) -> (String, bool) {
    let mut text = String::new();
    let mut done = false;
    for line in sse_events(raw) {
        if line == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        let c = &v["choices"][0];
        let piece = if chat { c["delta"]["content"].as_str() } else { c["text"].as_str() };
        text.push_str(piece.unwrap_or(""));
    }
    (text, done)
}
