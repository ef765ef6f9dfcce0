//! `mood serve` driven over HTTP on a loopback port: completions (plain and streaming),
//! per-request weights, concurrency, a client that disconnects, bad requests, the API key,
//! and the official `openai` Python client.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "test-key";

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let demo = demo_recipe();
    let ctx: &[&str] = if extra.contains(&"-c") { &[] } else { &["-c", "1024"] };
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["serve", "-r", demo.to_str().unwrap(), "--port", "0", "--api-key", KEY])
        .args(ctx)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    Server { child, addr }
}

/// One HTTP/1.1 request; returns (status, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, String) {
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

fn post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http(addr, "POST", path, Some(&body.to_string()), Some(KEY));
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}")))
}

fn completion_text(addr: &str, body: Value) -> String {
    let (status, v) = post(addr, "/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

/// The text of an SSE stream of completion chunks, and whether it ended with [DONE].
fn streamed_text(raw: &str, chat: bool) -> (String, bool) {
    let mut text = String::new();
    let mut done = false;
    for line in raw.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap();
        let c = &v["choices"][0];
        let piece = if chat { c["delta"]["content"].as_str() } else { c["text"].as_str() };
        text.push_str(piece.unwrap_or(""));
    }
    (text, done)
}

#[test]
fn completions_stream_and_weights() {
    let server = start(&["--parallel", "2"]);
    let a = &server.addr;
    let (status, health) = http(a, "GET", "/health", None, Some(KEY));
    assert_eq!((status, health.contains("ok")), (200, true));
    let (_, models) = http(a, "GET", "/v1/models", None, Some(KEY));
    assert!(models.contains("mood-demo"), "{models}");

    let body = json!({"prompt": "The ocean", "max_tokens": 10});
    let plain = completion_text(a, body.clone());
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let (status, raw) = http(a, "POST", "/v1/completions", Some(&streaming.to_string()), Some(KEY));
    assert_eq!(status, 200);
    let (text, done) = streamed_text(&raw, false);
    assert!(done, "the stream ends with data: [DONE]");
    assert_eq!(text, plain, "streamed and plain completions agree");

    // Per-request weights: (1, 0) is the first expert alone, as `mood generate` gives it.
    let poet =
        completion_text(a, json!({"prompt": "The ocean", "max_tokens": 10, "weights": [1, 0]}));
    let scientist = completion_text(
        a,
        json!({"prompt": "The ocean", "max_tokens": 10, "weights": {"poet": 0, "scientist": 1}}),
    );
    assert_ne!(poet, scientist);
    let g = generate_demo(&["-w", "1,0", "-p", "The ocean", "-n", "10"]);
    assert_eq!(poet, g["text"].as_str().unwrap());
    // Weights that need the reference grow the running policies; the result is still MOD's.
    let with_ref =
        completion_text(a, json!({"prompt": "The ocean", "max_tokens": 10, "weights": [0.6, 0.6]}));
    let g = generate_demo(&["-w", "0.6,0.6", "-p", "The ocean", "-n", "10"]);
    assert_eq!(with_ref, g["text"].as_str().unwrap());

    // Chat completions, plain and streamed.
    let chat = json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}], "max_tokens": 8});
    let (status, v) = post(a, "/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    let mut s = chat.clone();
    s["stream"] = json!(true);
    let (_, raw) = http(a, "POST", "/v1/chat/completions", Some(&s.to_string()), Some(KEY));
    let (text, done) = streamed_text(&raw, true);
    assert!(done);
    assert_eq!(text, v["choices"][0]["message"]["content"].as_str().unwrap());
}

#[test]
fn concurrent_requests_equal_their_sequential_results() {
    let server = start(&["--parallel", "3"]);
    let a = server.addr.clone();
    let bodies: Vec<Value> = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
        .iter()
        .map(|w| json!({"prompt": "The moon", "max_tokens": 8, "weights": w}))
        .collect();
    let sequential: Vec<String> = bodies.iter().map(|b| completion_text(&a, b.clone())).collect();
    let handles: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|b| {
            let a = a.clone();
            std::thread::spawn(move || completion_text(&a, b))
        })
        .collect();
    let concurrent: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(concurrent, sequential);
    assert_ne!(sequential[0], sequential[1], "the weights matter");
}

#[test]
fn a_client_that_disconnects_frees_its_slot() {
    let server = start(&["--parallel", "1"]);
    let a = &server.addr;
    let body =
        json!({"prompt": "The ocean", "max_tokens": 1000, "stream": true, "stop": "@@never@@"})
            .to_string();
    let mut s = TcpStream::connect(a).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = s.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).contains("200"), "the stream started");
    drop(s);
    // With one slot, the next request runs only once the abandoned one has let go; a
    // 1000-token generation would take far longer than this.
    let started = Instant::now();
    let text = completion_text(a, json!({"prompt": "The sky", "max_tokens": 4}));
    assert!(!text.is_empty());
    assert!(started.elapsed() < Duration::from_secs(20), "the slot was not freed");
}

#[test]
fn bad_requests_get_openai_style_errors_and_the_server_keeps_serving() {
    let server = start(&["--max-body-bytes", "2000", "-c", "64"]);
    let a = &server.addr;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/completions", "{not json".into(), 400, "not valid JSON"),
        (
            "/v1/completions",
            json!({"prompt": "x", "temperature": "hot"}).to_string(),
            400,
            "temperature",
        ),
        ("/v1/completions", json!({"prompt": "x", "n": 2}).to_string(), 400, "n = 1"),
        ("/v1/completions", json!({"prompt": "x", "weights": [1]}).to_string(), 400, "weights"),
        (
            "/v1/completions",
            json!({"prompt": "x", "weights": [1.5, -0.5], "divergence": "jsd"}).to_string(),
            400,
            "non-negative",
        ),
        ("/v1/completions", json!({"prompt": "x", "divergence": "tv"}).to_string(), 400, "barrier"),
        ("/v1/completions", json!({"max_tokens": 3}).to_string(), 400, "missing prompt"),
        ("/v1/completions", json!({"prompt": "word ".repeat(300)}).to_string(), 400, "context"),
        ("/v1/completions", json!({"prompt": "x".repeat(5000)}).to_string(), 413, ""),
        ("/v1/chat/completions", json!({"messages": []}).to_string(), 400, "messages"),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "wizard", "content": "x"}]}).to_string(),
            400,
            "role",
        ),
        ("/v1/nothing", "{}".into(), 404, "no such route"),
    ];
    for (path, body, want, text) in cases {
        let (status, got) = http(a, "POST", path, Some(&body), Some(KEY));
        assert_eq!(status, want, "{path} {body:.60}: {got}");
        if status != 413 {
            let v: Value = serde_json::from_str(&got).unwrap_or_else(|_| panic!("not JSON: {got}"));
            assert!(v["error"]["message"].as_str().unwrap().contains(text), "{got}");
        }
    }
    let (status, got) = http(a, "POST", "/v1/completions", Some(r#"{"prompt":"x"}"#), None);
    assert_eq!(status, 401, "{got}");
    let (status, _) = http(a, "POST", "/v1/completions", Some(r#"{"prompt":"x"}"#), Some("wrong"));
    assert_eq!(status, 401);
    let (status, _) = http(a, "GET", "/health", None, Some(KEY));
    assert_eq!(status, 200, "still serving");
    assert!(!completion_text(a, json!({"prompt": "The sea", "max_tokens": 3})).is_empty());
}

#[test]
fn the_official_openai_python_client_works() {
    let server = start(&["--parallel", "2"]);
    let script = root().join("tests/openai_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("MOOD_BASE_URL", format!("http://{}/v1", server.addr))
        .env("MOOD_API_KEY", KEY)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the openai client test failed (is the openai package installed? run models/setup.sh)\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("openai client: all checks passed"), "{stdout}");
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let mut server = start(&[]);
    let (status, _) = http(&server.addr, "GET", "/health", None, Some(KEY));
    assert_eq!(status, 200);
    let ok = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let started = Instant::now();
    let code = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
}
