//! `mood serve` driven over HTTP on a loopback port: completions (plain and streaming),
//! per-request weights, concurrency, a client that disconnects, bad requests, the API key,
//! and the official `openai` Python client.

mod common;

use common::server::*;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

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
    // Weights that need the reference bring it in while the experts keep their caches; with
    // llama-server's `cache_prompt: false` the prompt is decoded afresh, the numbers of
    // `mood generate` exactly.
    let with_ref =
        completion_text(a, json!({"prompt": "The ocean", "max_tokens": 10, "weights": [0.6, 0.6]}));
    assert!(!with_ref.is_empty());
    let fresh = completion_text(
        a,
        json!({"prompt": "The ocean", "max_tokens": 10, "weights": [0.6, 0.6], "cache_prompt": false}),
    );
    let g = generate_demo(&["-w", "0.6,0.6", "-p", "The ocean", "-n", "10"]);
    assert_eq!(fresh, g["text"].as_str().unwrap());

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
