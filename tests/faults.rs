//! `mood serve` under faults and hostile clients: a panic inside a decoding step, values at
//! the edge of their types, slow and stalled clients, too many connections or requests, and
//! error statuses from every layer — each answered with OpenAI-style JSON while the server
//! keeps serving.

mod common;

use common::server::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends raw bytes, then reads what comes back until the server closes or `wait` passes.
fn raw(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The JSON body of a raw response.
fn json_body(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body: {response:?}"))
}

fn health(addr: &str) -> (u16, String) {
    http(addr, "GET", "/health", None, None)
}

#[test]
fn a_panic_in_a_step_fails_the_requests_in_flight_and_the_server_goes_on() {
    let server = start_env(&[], &[("MOOD_FAILPOINT", "panic-on-stop:boom")]);
    let a = &server.addr;
    let plain = json!({"prompt": "The ocean", "max_tokens": 6});
    let before = completion_text(a, plain.clone());

    // A streamed request that hits the fault ends with an error event, not [DONE].
    let body = json!({"prompt": "The ocean", "max_tokens": 6, "stop": ["boom"], "stream": true});
    let (status, raw_stream) =
        http(a, "POST", "/v1/completions", Some(&body.to_string()), Some(KEY));
    assert_eq!(status, 200);
    let events: Vec<&str> = raw_stream.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert!(!events.contains(&"[DONE]"), "{raw_stream}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error", "{last}");
    // While the decoder is rebuilt, /health and new requests say so (503, Retry-After); then
    // health comes back.
    let recovered = || {
        let started = Instant::now();
        while health(a).0 != 200 {
            assert!(started.elapsed() < Duration::from_secs(30), "health never recovered");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    recovered();
    // Not streamed: a 500 with JSON.
    let body = json!({"prompt": "The ocean", "max_tokens": 6, "stop": "boom"});
    let (status, v) = post(a, "/v1/completions", &body);
    assert_eq!(status, 500, "{v}");
    recovered();
    // Answers are what they were.
    assert_eq!(completion_text(a, plain), before);
}

#[test]
fn values_at_the_edges_are_answered_and_nothing_breaks() {
    let server = start(&["-c", "256"]);
    let a = &server.addr;
    let plain = json!({"prompt": "The sea", "max_tokens": 4});
    let before = completion_text(a, plain.clone());
    let huge_k = json!({"prompt": "The sea", "max_tokens": 4, "temperature": 1,
        "top_k": u64::MAX, "seed": 3});
    let (status, v) = post(a, "/v1/completions", &huge_k);
    assert_eq!(status, 200, "top_k = 2^64 − 1 means the whole vocabulary: {v}");
    let cases = [
        (json!({"prompt": "   \n "}), "prompt"),
        (json!({"prompt": "x", "seed": 9007199254740993u64}), "seed"),
        (json!({"prompt": "x", "weights": [1e308, -1e308]}), "weights"),
        (json!({"prompt": "x", "divergence": "alpha:10000"}), "divergence"),
        (json!({"prompt": "x", "temperature": 1e-30}), "temperature"),
        (json!({"prompt": "x", "max_tokens": u64::MAX}), "max_tokens"),
        (json!({"prompt": "x", "stop": vec!["a"; 17]}), "stop"),
        (json!({"prompt": "x", "temprature": 1}), "temprature"),
    ];
    for (body, param) in cases {
        let (status, v) = post(a, "/v1/completions", &body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    let chat =
        json!({"messages": [{"role": "user", "content": "Hi"}], "system_prompts": {"poet": 5}});
    let (status, v) = post(a, "/v1/chat/completions", &chat);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("system_prompts.poet"), "{v}");
    assert_eq!(health(a).0, 200);
    assert_eq!(completion_text(a, plain), before);
}

#[test]
fn each_request_runs_only_the_policies_its_weights_need_and_draws_a_fresh_seed() {
    let server = start(&["-c", "256"]);
    let a = &server.addr;
    let policies = |weights: Value| {
        let (status, v) = post(
            a,
            "/v1/completions",
            &json!({"prompt": "The sea", "max_tokens": 3, "weights": weights}),
        );
        assert_eq!(status, 200, "{v}");
        v["mood"]["timings"]["policies"].as_u64().unwrap()
    };
    assert_eq!(policies(json!([0.5, 0.5])), 2);
    assert_eq!(policies(json!([0.6, 0.8])), 3, "weights not summing to 1 need the reference");
    assert_eq!(policies(json!([0.5, 0.5])), 2, "and the next request runs without it again");

    let sample = json!({"prompt": "The sea", "max_tokens": 12, "temperature": 1, "top_k": 0,
        "top_p": 1, "min_p": 0});
    let (_, x) = post(a, "/v1/completions", &sample);
    let (_, y) = post(a, "/v1/completions", &sample);
    let (sx, sy) = (x["mood"]["seed"].as_u64().unwrap(), y["mood"]["seed"].as_u64().unwrap());
    assert_ne!(sx, sy, "each request draws its own seed");
    assert!(sx < 1 << 53 && sy < 1 << 53);
    let mut replay = sample.clone();
    replay["seed"] = json!(sx);
    let (_, r) = post(a, "/v1/completions", &replay);
    assert_eq!(r["choices"][0]["text"], x["choices"][0]["text"], "the reported seed replays");
}

#[test]
fn stalled_clients_get_408_extra_connections_503_and_shutdown_does_not_wait() {
    let server = start(&["-c", "256", "--read-timeout", "1", "--max-connections", "4"]);
    let a = &server.addr;
    let wait = Duration::from_secs(5);

    let started = Instant::now();
    let r = raw(a, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n", wait);
    assert_eq!(status_of(&r), 408, "{r}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(json_body(&r)["error"]["type"], "invalid_request_error");
    let r = raw(
        a,
        format!("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100\r\n\r\n{{\"pro").as_bytes(),
        wait,
    );
    assert_eq!(status_of(&r), 408, "{r}");

    // Four idle connections fill the cap; the fifth is told to retry, and closed.
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = raw(a, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait);
    assert_eq!(status_of(&r), 503, "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 1"), "{r}");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(health(a).0, 200, "room again once they close");

    // SIGTERM with a client stalled mid-request: the server ends without waiting for it.
    let mut stalled = TcpStream::connect(a).unwrap();
    stalled
        .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        .unwrap();
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let code = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let server = start(&["-c", "256", "--parallel", "1", "--max-queue", "1"]);
    let addr = server.addr.clone();
    let body = json!({"prompt": "The ocean", "max_tokens": 48}).to_string();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, body) = (addr.clone(), body.clone());
            std::thread::spawn(move || {
                http(&addr, "POST", "/v1/completions", Some(&body), Some(KEY))
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let full = answers.iter().filter(|a| a.0 == 503).count();
    assert!(ok >= 2 && full >= 1 && ok + full == 4, "{answers:?}");
    let refused = answers.iter().find(|a| a.0 == 503).unwrap();
    let v: Value = serde_json::from_str(&refused.1).unwrap();
    assert_eq!(v["error"]["type"], "server_error");
}

#[test]
fn every_error_status_is_openai_json_and_health_is_public() {
    let server = start(&["-c", "256", "--max-body-bytes", "1000"]);
    let a = &server.addr;
    let wait = Duration::from_secs(5);
    let (status, body) = health(a);
    assert_eq!((status, body.contains("ok")), (200, true), "no API key needed: {body}");
    let close = "Connection: close\r\n";
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n{close}\r\n", "a".repeat(9000));
    let big_headers =
        format!("GET /health HTTP/1.1\r\nHost: x\r\n{close}X-Big: {}\r\n\r\n", "b".repeat(40_000));
    let big_body = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\n{close}Authorization: Bearer {KEY}\r\nContent-Length: 2000\r\n\r\n{{\"prompt\": \"{}\"}}",
        "x".repeat(1984)
    );
    let delete = format!(
        "DELETE /v1/completions HTTP/1.1\r\nHost: x\r\n{close}Authorization: Bearer {KEY}\r\n\r\n"
    );
    for (request, want) in [(long_uri, 414), (big_headers, 431), (big_body, 413), (delete, 405)] {
        let r = raw(a, request.as_bytes(), wait);
        assert_eq!(status_of(&r), want, "{:.80}: {r:.200}", request);
        let v = json_body(&r);
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    assert_eq!(health(a).0, 200);
}
