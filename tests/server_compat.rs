//! `mood serve` with clients written for OpenAI and llama-server: lenient and strict request
//! bodies, CORS, `GET /v1/models/{id}`, `HEAD`, and the line logged per request (text and
//! JSON), read from the server's stderr.

mod common;

use common::demo_recipe;
use common::server::{listening_address, sse_events, Server, KEY};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server, and the lines it wrote on stderr so far.
struct Logged {
    server: Server,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn addr(&self) -> &str {
        &self.server.addr
    }

    /// Waits (up to 10 s) for a stderr line that `want` accepts, and returns it.
    fn line(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| want(l)) {
                return l.clone();
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!("no log line for {what} in:\n{}", self.lines.lock().unwrap().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// Starts `mood serve` on the demo recipe with the API key [`KEY`], keeping its stderr.
fn start(extra: &[&str]) -> Logged {
    let recipe = demo_recipe();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["serve", "-r", recipe.to_str().unwrap(), "--port", "0", "--api-key", KEY])
        .args(["-c", "1024", "--strategy", "threads"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let addr = listening_address(&mut err);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in err.lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    Logged { server: Server { child, addr }, lines }
}

/// One HTTP/1.1 request with these extra headers; (status, head, body). `key` adds the API key.
fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    key: bool,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if key {
        head.push_str(&format!("Authorization: Bearer {KEY}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    (status, head.to_string(), rest.to_string())
}

/// A header's value in a response head (names compared without case).
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// POSTs JSON with the key; (status, head, JSON body).
fn post(addr: &str, path: &str, body: &Value) -> (u16, String, Value) {
    let (status, head, text) = send(addr, "POST", path, &[], Some(&body.to_string()), true);
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, head, v)
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("not an OpenAI error: {v}"))
}

#[test]
fn lenient_bodies_drop_what_changes_nothing_and_say_so() {
    let s = start(&[]);
    let a = s.addr();
    let plain = json!({"prompt": "The ocean", "max_tokens": 4, "stop": "@@"});
    let (status, head, want) = post(a, "/v1/completions", &plain);
    assert_eq!(status, 200, "{want}");
    assert_eq!(header(&head, "x-mood-ignored"), None, "nothing ignored, no header");

    // What llama-server and OpenAI clients send: the same text, the dropped fields named.
    let body = json!({"prompt": "The ocean", "n_predict": 4, "stop": "@@",
        "metadata": {"team": "a"}, "user": "u-1", "store": true, "service_tier": "auto",
        "service_level": "default", "reasoning_effort": "low", "parallel_tool_calls": true,
        "cache_prompt": true, "id_slot": -1, "samplers": ["top_k", "temperature"],
        "timings_per_token": false, "return_progress": false, "repetition_penalty": 1.0,
        "favourite_colour": "blue"});
    let (status, head, got) = post(a, "/v1/completions", &body);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["text"], want["choices"][0]["text"], "the same completion");
    assert_eq!(got["usage"]["completion_tokens"], 4, "n_predict is max_tokens");
    assert_eq!(
        header(&head, "x-mood-ignored").as_deref(),
        Some(
            "metadata, user, store, service_tier, service_level, reasoning_effort, \
             parallel_tool_calls, id_slot, samplers, timings_per_token, return_progress, \
             favourite_colour"
        )
    );
    let line = s.line("the ignored fields", |l| l.contains("ignored=metadata,user,store"));
    assert!(line.contains("POST /v1/completions 200") && line.contains("tokens=4"), "{line}");

    // repetition_penalty is repeat_penalty.
    let mapped = json!({"prompt": "The ocean", "max_tokens": 24, "repetition_penalty": 2.0});
    let own = json!({"prompt": "The ocean", "max_tokens": 24, "repeat_penalty": 2.0});
    let (_, _, m) = post(a, "/v1/completions", &mapped);
    let (_, _, o) = post(a, "/v1/completions", &own);
    assert_eq!(m["choices"][0]["text"], o["choices"][0]["text"]);
    let (_, _, none) =
        post(a, "/v1/completions", &json!({"prompt": "The ocean", "max_tokens": 24}));
    assert_ne!(m["choices"][0]["text"], none["choices"][0]["text"], "the penalty applies");

    // A chat body as OpenAI clients echo answers back, streamed.
    let chat = json!({"messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "refusal": null, "tool_calls": [],
             "annotations": []},
            {"role": "user", "content": "Bye"}],
        "max_completion_tokens": 3, "stream": true, "metadata": {"k": "v"},
        "stream_options": {"include_usage": true, "include_obfuscation": false}});
    let (status, head, raw) =
        send(a, "POST", "/v1/chat/completions", &[], Some(&chat.to_string()), true);
    assert_eq!(status, 200, "{raw}");
    assert!(sse_events(&raw).last().is_some_and(|e| e == "[DONE]"), "{raw}");
    assert_eq!(
        header(&head, "x-mood-ignored").as_deref(),
        Some(
            "metadata, stream_options.include_obfuscation, messages[].refusal, \
             messages[].tool_calls, messages[].annotations"
        )
    );
}

#[test]
fn lenient_mode_still_refuses_what_would_change_the_output() {
    let s = start(&[]);
    let a = s.addr();
    let cases = [
        (
            json!({"prompt": "x", "wieghts": [1, 0]}),
            "unknown field 'wieghts' (did you mean 'weights'?)",
        ),
        (
            json!({"prompt": "x", "max_token": 3}),
            "unknown field 'max_token' (did you mean 'max_tokens'?)",
        ),
        (
            json!({"prompt": "x", "temprature": 0.5}),
            "unknown field 'temprature' (did you mean 'temperature'?)",
        ),
        (json!({"prompt": "x", "n": 2}), "only n = 1"),
        (json!({"prompt": "x", "tools": [{"type": "function"}]}), "tools is not supported"),
        (json!({"prompt": "x", "mirostat": 2}), "mirostat is not supported"),
        (json!({"prompt": "x", "ignore_eos": true}), "ignore_eos is not supported"),
        (json!({"prompt": "x", "n_probs": 5}), "n_probs is not supported"),
        (json!({"prompt": "x", "messages": []}), "messages is a field of /v1/chat/completions"),
        (
            json!({"prompt": "x", "n_predict": 3, "max_tokens": 4}),
            "n_predict is 3 but max_tokens is 4",
        ),
        (json!({"prompt": "x", "logit_bias": {"nope": 1}}), "logit_bias"),
    ];
    for (body, want) in cases {
        let (status, _, v) = post(a, "/v1/completions", &body);
        assert_eq!(status, 400, "{body}: {v}");
        assert!(message(&v).contains(want), "{body}: {v}");
        assert!(!message(&v).contains('\n'));
    }
    // The fields' "off" values are accepted.
    let off = json!({"prompt": "x", "max_tokens": 1, "mirostat": 0, "typical_p": 1.0,
        "tools": [], "n_probs": 0, "ignore_eos": false, "logit_bias": {}});
    let (status, _, v) = post(a, "/v1/completions", &off);
    assert_eq!(status, 200, "{v}");
}

#[test]
fn strict_mode_refuses_every_unknown_field_and_logs_json() {
    let s = start(&["--strict", "--log-format", "json"]);
    let a = s.addr();
    for field in ["metadata", "n_predict", "cache_prompt", "id_slot", "favourite_colour"] {
        let (status, _, v) = post(a, "/v1/completions", &json!({"prompt": "x", field: 1}));
        assert_eq!(status, 400, "{field}: {v}");
        assert!(message(&v).contains(&format!("unknown field '{field}'")), "{v}");
    }
    let (status, _, v) = post(a, "/v1/completions", &json!({"prompt": "x", "store": true}));
    assert_eq!((status, message(&v)), (400, "store is not supported: mood stores nothing"));
    let (status, _, v) = post(a, "/v1/completions", &json!({"prompt": "x", "wieghts": [1, 0]}));
    assert_eq!((status, message(&v)), (400, "unknown field 'wieghts' (did you mean 'weights'?)"));
    let secret = "Zanzibar-quokka-prompt";
    let body = json!({"prompt": secret, "max_tokens": 3, "user": "u", "model": "any"});
    let (status, head, v) = post(a, "/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&head, "x-mood-ignored"), None);
    let (status, _, _) = send(a, "GET", "/health", &[], None, false);
    assert_eq!(status, 200);

    // One JSON object per request, the prompt nowhere.
    let done = s.line("the completion", |l| l.contains("\"status\":200") && l.contains("tokens"));
    let v: Value = serde_json::from_str(&done).unwrap();
    assert_eq!((v["method"].as_str(), v["path"].as_str()), (Some("POST"), Some("/v1/completions")));
    assert_eq!(v["tokens"], 3);
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["client"], "127.0.0.1");
    assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    s.line("the health check", |l| {
        l.contains("\"path\":\"/health\"") && l.contains("\"status\":200")
    });
    let requests: Vec<Value> = s
        .all()
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let refused = requests.iter().filter(|r| r["status"] == 400).count();
    assert_eq!(refused, 7, "{requests:?}");
    assert!(s.all().iter().all(|l| !l.contains(secret)), "the prompt is never logged");
}

#[test]
fn a_text_line_per_request_and_no_prompt() {
    let s = start(&[]);
    let a = s.addr();
    let secret = "Walrus-on-a-unicycle";
    let body = json!({"prompt": secret, "max_tokens": 2});
    let (status, _, _) = post(a, "/v1/completions", &body);
    assert_eq!(status, 200);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, _, _) = send(a, "POST", "/v1/completions", &[], Some(&streamed.to_string()), true);
    assert_eq!(status, 200);
    let (status, _, _) = send(a, "POST", "/v1/completions", &[], Some(&body.to_string()), false);
    assert_eq!(status, 401);
    let (status, _, _) = send(a, "GET", "/v1/nothing", &[], None, true);
    assert_eq!(status, 404);
    let (status, _, _) = post(a, "/v1/completions", &json!({"prompt": secret, "top_p": "x"}));
    assert_eq!(status, 400);

    let whole = s.line("the completion", |l| {
        l.contains(" POST /v1/completions 200 ") && !l.contains("stream=")
    });
    let words: Vec<&str> = whole.split(' ').collect();
    assert!(words[0].ends_with('Z') && words[1] == "127.0.0.1", "{whole}");
    assert!(words[5].starts_with("ms=") && whole.contains(" tokens=2"), "{whole}");
    let stream =
        s.line("the stream", |l| l.contains(" POST /v1/completions 200 ") && l.contains("stream="));
    assert!(stream.contains(" tokens=2 stream=done"), "{stream}");
    s.line("the 401", |l| l.contains(" POST /v1/completions 401 "));
    s.line("the 404", |l| l.contains(" GET /v1/nothing 404 "));
    s.line("the 400", |l| l.contains(" POST /v1/completions 400 "));
    assert!(s.all().iter().all(|l| !l.contains(secret)), "the prompt is never logged");
}

#[test]
fn cors_for_the_origins_given() {
    let s = start(&["--cors", "http://example.com", "--cors", "http://localhost:3000"]);
    let a = s.addr();
    let preflight = [
        ("Origin", "http://example.com"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization, content-type, x-stainless-os"),
    ];
    // No API key: browsers send none with a preflight.
    let (status, head, body) = send(a, "OPTIONS", "/v1/chat/completions", &preflight, None, false);
    assert_eq!(status, 204, "{head}");
    assert!(body.is_empty());
    assert_eq!(header(&head, "access-control-allow-origin").as_deref(), Some("http://example.com"));
    let methods = header(&head, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
    let headers = header(&head, "access-control-allow-headers").unwrap();
    assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");
    s.line("the preflight", |l| l.contains(" OPTIONS /v1/chat/completions 204 "));

    let body = json!({"prompt": "x", "max_tokens": 1}).to_string();
    let from = |origin: &str, key: bool| {
        send(a, "POST", "/v1/completions", &[("Origin", origin)], Some(&body), key)
    };
    let (status, head, _) = from("http://localhost:3000", true);
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    assert!(header(&head, "access-control-expose-headers").unwrap().contains("x-mood-ignored"));
    assert!(header(&head, "vary").unwrap().to_lowercase().contains("origin"));
    // Errors carry it too, so that a page can read them.
    let (status, head, _) = from("http://example.com", false);
    assert_eq!(status, 401);
    assert_eq!(header(&head, "access-control-allow-origin").as_deref(), Some("http://example.com"));
    // Other origins get no CORS header (the browser then keeps the answer from the page).
    let (status, head, _) = from("http://evil.example", true);
    assert_eq!(status, 200);
    assert_eq!(header(&head, "access-control-allow-origin"), None);
    let evil = [("Origin", "http://evil.example"), ("Access-Control-Request-Method", "POST")];
    let (_, head, _) = send(a, "OPTIONS", "/v1/completions", &evil, None, false);
    assert_eq!(header(&head, "access-control-allow-origin"), None);
}

#[test]
fn cors_for_any_origin_and_none_without_the_flag() {
    let any = start(&["--cors", "*"]);
    let preflight = [("Origin", "http://anywhere.test"), ("Access-Control-Request-Method", "POST")];
    let (status, head, _) = send(any.addr(), "OPTIONS", "/v1/models", &preflight, None, false);
    assert_eq!(status, 204);
    assert_eq!(header(&head, "access-control-allow-origin").as_deref(), Some("*"));
    let (_, head, _) = send(any.addr(), "GET", "/v1/models", &preflight[..1], None, true);
    assert_eq!(header(&head, "access-control-allow-origin").as_deref(), Some("*"));
    drop(any);

    let off = start(&[]);
    let (status, head, body) =
        send(off.addr(), "OPTIONS", "/v1/chat/completions", &preflight, None, true);
    assert_eq!(status, 405, "{head}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, head, _) = send(off.addr(), "GET", "/v1/models", &preflight[..1], None, true);
    assert_eq!(status, 200);
    assert!(!head.to_lowercase().contains("access-control"), "{head}");

    let out = Command::new(env!("CARGO_BIN_EXE_mood"))
        .args(["serve", "-r", demo_recipe().to_str().unwrap(), "--cors", "example.com/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cors example.com/x") && err.trim().lines().count() == 1, "{err}");
}

#[test]
fn one_model_by_id_and_head_requests() {
    let s = start(&["--alias", "team/mood-x"]);
    let a = s.addr();
    let (status, _, body) = send(a, "GET", "/v1/models/team/mood-x", &[], None, true);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["id"].as_str(), v["object"].as_str()), (Some("team/mood-x"), Some("model")));
    assert!(v["created"].as_u64().unwrap() > 0);
    let (status, _, body) = send(a, "GET", "/v1/models/gpt-4o", &[], None, true);
    assert_eq!(status, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(message(&v).contains("gpt-4o"), "{v}");
    let (status, _, _) = send(a, "GET", "/v1/models/team/mood-x", &[], None, false);
    assert_eq!(status, 401, "behind the API key");

    for path in ["/health", "/v1/models", "/v1/models/team/mood-x", "/metrics"] {
        let (status, head, body) = send(a, "HEAD", path, &[], None, true);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(body.is_empty(), "{path}: a body after HEAD: {body:?}");
        assert!(header(&head, "content-type").is_some(), "{path}: {head}");
    }
    s.line("HEAD /health", |l| l.contains(" HEAD /health 200 "));
    let (status, _, body) = send(a, "HEAD", "/v1/models/nope", &[], None, true);
    assert_eq!((status, body.as_str()), (404, ""));
}

/// A small deterministic generator (xorshift), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn name(&mut self) -> String {
        const PIECES: [&str; 16] = [
            "a", "e", "n", "_", "max", "token", "top", "p", "w", "eights", "\"", "\n", "é", "💥",
            " ", "\\u0000",
        ];
        let n = 1 + self.below(6);
        (0..n).map(|_| PIECES[self.below(PIECES.len())]).collect()
    }

    fn value(&mut self) -> Value {
        match self.below(8) {
            0 => Value::Null,
            1 => json!(self.below(5) as i64 - 2),
            2 => json!(true),
            3 => json!("x"),
            4 => json!([]),
            5 => json!({"a": 1}),
            6 => json!(1e300),
            _ => json!("y".repeat(self.below(300))),
        }
    }
}

#[test]
fn random_field_names_get_200_or_400_never_a_crash() {
    for strict in [false, true] {
        let s = start(if strict { &["--strict"][..] } else { &[] });
        let a = s.addr();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + u64::from(strict));
        let mut seen = [0usize; 2];
        for i in 0..60 {
            let mut body = json!({"prompt": "The sea", "max_tokens": 1});
            for _ in 0..1 + rng.below(3) {
                let (name, value) = (rng.name(), rng.value());
                body[name] = value;
            }
            let path = if i % 2 == 0 { "/v1/completions" } else { "/v1/chat/completions" };
            if i % 2 == 1 {
                let map = body.as_object_mut().unwrap();
                map.remove("prompt");
                map.insert("messages".into(), json!([{"role": "user", "content": "Hi"}]));
            }
            let (status, head, text) = send(a, "POST", path, &[], Some(&body.to_string()), true);
            assert!(status == 200 || status == 400, "{body}: {status} {text}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text:?}"));
            if status == 400 {
                assert!(!message(&v).contains('\n'), "{v}");
            } else if let Some(ignored) = header(&head, "x-mood-ignored") {
                assert!(!strict, "strict mode ignores nothing: {ignored}");
                assert!(ignored.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{ignored}");
            }
            seen[usize::from(status == 200)] += 1;
        }
        assert!(strict || seen[1] > 0, "some bodies are answered ({seen:?})");
        let (status, _, _) = send(a, "GET", "/health", &[], None, false);
        assert_eq!(status, 200, "still serving");
    }
}
