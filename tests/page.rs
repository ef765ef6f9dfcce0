//! The web page of `mood serve` in a real browser: headless Chromium (Debian's `chromium`,
//! installed by models/setup.sh) driven through the DevTools protocol, with every host but
//! the server's unreachable. The page loads without the API key and asks for it, a message
//! gets a streamed reply, a slider moved with the mouse changes the weights the next request
//! carries, and the page fits a phone-sized screen. Replies are drawn as Markdown without
//! letting any markup of the reply into the page, messages copy, the system prompt and token
//! limit go into the request, each slider marks its zero, and conversations are kept across
//! reloads. Screenshots are written to `target/tmp/page/`.

mod common;

use common::server::{post_json, serve};
use common::*;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "page-test-key";
const CHROMIUM: &str = "/usr/bin/chromium";

// ---- a WebSocket client, just enough for the DevTools protocol (RFC 6455) -----------------

struct WebSocket {
    stream: TcpStream,
}

impl WebSocket {
    /// Connects to `ws://host:port/path`.
    fn connect(url: &str) -> WebSocket {
        let rest = url.strip_prefix("ws://").unwrap_or_else(|| panic!("not a ws URL: {url}"));
        let (host, path) = rest.split_once('/').unwrap();
        let mut stream = TcpStream::connect(host).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "no WebSocket upgrade: {head}");
        WebSocket { stream }
    }

    /// Sends one text message (masked, as a client must).
    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x13, 0xc7, 0x2e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// Receives one text message (answering pings, joining fragments).
    fn receive(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.stream.read_exact(&mut h).expect("a DevTools message in time");
            let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).unwrap();
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut mask = [0u8; 4];
            if h[1] & 0x80 != 0 {
                self.stream.read_exact(&mut mask).unwrap();
            }
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).unwrap();
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
            match opcode {
                0x8 => panic!("the browser closed the DevTools connection"),
                0x9 => {
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    self.stream.write_all(&pong).unwrap();
                }
                0xa => {}
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).unwrap();
                    }
                }
            }
        }
    }
}

// ---- the browser and its page ---------------------------------------------------------------

struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One page of the browser, driven through the DevTools protocol.
struct Page {
    ws: WebSocket,
    next_id: u64,
    events: VecDeque<Value>,
    /// Every request the page made: (URL, method, body).
    requests: Vec<(String, String, Option<String>)>,
}

/// Starts headless Chromium with a fresh profile, nothing reachable but loopback, and the
/// DevTools protocol on a free port; returns it and its first page.
fn launch() -> (Browser, Page) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run models/setup.sh (it installs Debian's chromium)"
    );
    // A profile of its own for each browser (the tests of this file run at the same time).
    static BROWSERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BROWSERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile =
        std::env::temp_dir().join(format!("mood-page-chromium-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            // No network but this machine: names resolve to nothing, and anything that is not
            // loopback goes to a proxy that does not exist.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9",
            "--window-size=1100,760",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let mut seen = String::new();
    let browser_ws = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("chromium exited before it listened:\n{seen}");
        }
        if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
            break url.to_string();
        }
        seen.push_str(&line);
        assert!(started.elapsed() < Duration::from_secs(60), "chromium is slow to start:\n{seen}");
    };
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    let browser = Browser { child, profile };
    // The page target of about:blank, from the DevTools HTTP endpoint.
    let host = browser_ws.trim_start_matches("ws://").split('/').next().unwrap().to_string();
    let page_ws = loop {
        let body = devtools_get(&host, "/json/list");
        let targets: Value = serde_json::from_str(&body).unwrap();
        let page = targets.as_array().unwrap().iter().find(|t| t["type"] == "page");
        if let Some(url) = page.and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
            break url.to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no page target: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let page = Page {
        ws: WebSocket::connect(&page_ws),
        next_id: 0,
        events: VecDeque::new(),
        requests: Vec::new(),
    };
    (browser, page)
}

/// A GET from the DevTools HTTP endpoint (which keeps the connection open: the body is read
/// by its Content-Length).
fn devtools_get(host: &str, path: &str) -> String {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

impl Page {
    /// Calls a DevTools method and returns its result; events that arrive meanwhile are kept.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(&json!({ "id": id, "method": method, "params": params }).to_string());
        loop {
            let v: Value = serde_json::from_str(&self.ws.receive()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
            self.note(v);
        }
    }

    fn note(&mut self, event: Value) {
        if event["method"] == "Network.requestWillBeSent" {
            let r = &event["params"]["request"];
            self.requests.push((
                r["url"].as_str().unwrap_or_default().to_string(),
                r["method"].as_str().unwrap_or_default().to_string(),
                r["postData"].as_str().map(str::to_string),
            ));
        }
        self.events.push_back(event);
        if self.events.len() > 1000 {
            self.events.pop_front();
        }
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise) and returns its
    /// value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy.
    fn wait_for(&mut self, expression: &str, what: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let v = self.eval(expression);
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            let page = self.eval("document.body ? document.body.innerText : ''");
            assert!(
                started.elapsed() < timeout,
                "timed out waiting for {what}; the page reads:\n{page}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The centre of an element, or a point at `fraction` of its width.
    fn point(&mut self, selector: &str, fraction: f64) -> (f64, f64) {
        let r = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }})()"
        ));
        let r: Vec<f64> = r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        (r[0] + r[2] * fraction, r[1] + r[3] / 2.0)
    }

    /// A mouse click, as a person makes it.
    fn click_at(&mut self, (x, y): (f64, f64)) {
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    fn click(&mut self, selector: &str) {
        let p = self.point(selector, 0.5);
        self.click_at(p);
    }

    /// Types text into the focused element.
    fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({ "text": text }));
    }

    fn press_enter(&mut self) {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": if kind == "keyDown" { "\r" } else { "" } }),
            );
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64_decode(r["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The request bodies the page POSTed to the chat endpoint, in order.
    fn chat_requests(&mut self) -> Vec<Value> {
        // Collect the events that arrived since the last call.
        self.eval("0");
        self.requests
            .iter()
            .filter(|(url, method, _)| url.ends_with("/v1/chat/completions") && method == "POST")
            .map(|(_, _, body)| serde_json::from_str(body.as_deref().expect("a body")).unwrap())
            .collect()
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, &v)| n | (u32::from(v) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// The last assistant message: its text (the Markdown source), the text it shows, whether it
/// is still streaming, and its meta line.
const LAST_REPLY: &str = "(() => { const m = [...document.querySelectorAll('.msg.assistant')].pop(); \
    return m ? { text: m.dataset.markdown, shown: m.querySelector('.text').textContent, \
    streaming: m.classList.contains('streaming'), \
    meta: (m.querySelector('.meta') || {}).textContent || '', error: m.classList.contains('error') } : null; })()";

/// Records, in the page, every text (Markdown source) the last reply has while it streams.
const WATCH_REPLY: &str = "window.__seen = []; new MutationObserver(() => { \
    const m = [...document.querySelectorAll('.msg.assistant.streaming')].pop(); \
    if (m && window.__seen[window.__seen.length - 1] !== m.dataset.markdown) window.__seen.push(m.dataset.markdown); \
    }).observe(document.getElementById('messages'), \
    { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['data-markdown'] }); true";

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|w| w.as_f64().unwrap())
        .collect()
}

fn artefacts() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("page")
}

#[test]
fn the_page_chats_streams_and_steers_in_a_real_browser() {
    let server = serve(&assistant_recipe(), &["--api-key", KEY, "-c", "2048", "-n", "64"]);
    let origin = format!("http://{}", server.addr);
    let (_browser, mut page) = launch();
    page.call("Network.enable", json!({}));
    page.call("Page.enable", json!({}));

    // The browser reaches nothing but this machine.
    let r = page.call("Page.navigate", json!({ "url": "http://example.com/" }));
    assert!(r["errorText"].as_str().is_some_and(|e| e.starts_with("net::ERR")), "{r}");
    page.requests.clear();

    // The page loads without the key, and asks for it.
    page.call("Page.navigate", json!({ "url": format!("{origin}/") }));
    page.wait_for(
        "document.getElementById('key-dialog') && document.getElementById('key-dialog').open",
        "the key dialog",
        Duration::from_secs(30),
    );
    page.click("#key-input");
    page.type_text(KEY);
    page.click("#key-save");
    page.wait_for(
        "document.querySelectorAll('#sliders input[type=range]').length === 3",
        "one slider per expert",
        Duration::from_secs(30),
    );
    assert_eq!(page.eval("localStorage.getItem('mood.apiKey')"), json!(KEY), "the key is kept");
    let model = page.eval("document.getElementById('model').textContent");
    assert!(model.as_str().unwrap().contains("mood-assistant"), "{model}");
    let shown = page.eval(
        "[...document.querySelectorAll('#sliders output')].map(o => o.textContent).join(' ')",
    );
    assert_eq!(shown, json!("0.60 0.40 0.00"), "the recipe's weights");
    let range = page
        .eval("[document.getElementById('weight-0').min, document.getElementById('weight-0').max]");
    assert_eq!(range, json!(["-1", "2"]), "reverse KL: negative weights and extrapolation");

    // A message gets a streamed reply.
    page.eval(WATCH_REPLY);
    page.click("#input");
    page.type_text("Hi! How are you today?");
    page.press_enter();
    let started = Instant::now();
    page.wait_for(
        &format!("(r => r && !r.streaming && r.meta)({LAST_REPLY})"),
        "the first reply",
        Duration::from_secs(120),
    );
    let streamed_in = started.elapsed();
    let first = page.eval(LAST_REPLY);
    assert_eq!(first["error"], false, "{first}");
    let text = first["text"].as_str().unwrap().to_string();
    assert!(!text.trim().is_empty() && !text.contains("<|"), "{first}");
    assert!(!first["shown"].as_str().unwrap().trim().is_empty(), "{first}");
    let meta = first["meta"].as_str().unwrap();
    for part in ["concise 0.60", "reverse-kl", "tok/s", "prompt", "decode", "stop"] {
        assert!(meta.contains(part), "the timings line shows {part:?}: {meta}");
    }
    let seen = page.eval("window.__seen");
    let seen: Vec<&str> = seen.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(
        seen.iter().filter(|s| !s.is_empty() && **s != text).count() >= 2,
        "the reply appeared piece by piece, not at once: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[1].starts_with(w[0])), "it only grew: {seen:?}");
    let requests = page.chat_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(numbers(&requests[0]["weights"]), [0.6, 0.4, 0.0]);
    assert_eq!(requests[0]["stream"], true);
    // The same request without streaming gives the same text (greedy decoding).
    let mut plain = requests[0].clone();
    plain["stream"] = json!(false);
    let (status, answer) = post_json(&server.addr, "/v1/chat/completions", &plain, Some(KEY));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], json!(text));

    // Move the "playful" slider with the mouse (at 80 % of its track: about 1.4) and
    // regenerate: the next request carries the new weights, and the reply changes.
    let p = page.point("#weight-2", 0.8);
    page.click_at(p);
    let moved = page.eval("document.getElementById('weight-2-value').textContent");
    let playful: f64 = moved.as_str().unwrap().parse().unwrap();
    assert!(playful > 1.0, "the slider moved to {moved}");
    page.screenshot(&artefacts().join("page-before-regenerate.png"));
    page.eval(WATCH_REPLY);
    page.click("#regenerate");
    page.wait_for(
        &format!("(r => r && !r.streaming && r.meta)({LAST_REPLY})"),
        "the regenerated reply",
        Duration::from_secs(120),
    );
    let requests = page.chat_requests();
    assert_eq!(requests.len(), 2, "one more request");
    let weights = numbers(&requests[1]["weights"]);
    assert_eq!(&weights[..2], &[0.6, 0.4], "the other weights stay (reverse KL, a reference)");
    assert!(
        (weights[2] - playful).abs() < 0.005,
        "the request carries the slider's {playful}: {weights:?}"
    );
    assert_eq!(requests[1]["messages"], requests[0]["messages"], "the same conversation");
    let second = page.eval(LAST_REPLY);
    assert_eq!(second["error"], false, "{second}");
    assert_ne!(second["text"], json!(text), "the weights changed the reply");
    assert_eq!(
        page.eval("document.querySelectorAll('.msg').length"),
        json!(2),
        "regenerating replaced the reply"
    );
    page.eval("document.getElementById('controls').scrollTop = 0");
    page.screenshot(&artefacts().join("page.png"));

    // Another divergence keeps the weights on the simplex: the sliders run from 0 to 1, and
    // moving one moves the others so that the sum stays 1.
    page.eval(
        "(s => { s.value = 'jsd'; s.dispatchEvent(new Event('change')); return true; })(document.getElementById('divergence'))",
    );
    let range = page
        .eval("[document.getElementById('weight-0').min, document.getElementById('weight-0').max]");
    assert_eq!(range, json!(["0", "1"]), "the simplex");
    let p = page.point("#weight-0", 0.8);
    page.click_at(p);
    let concise: f64 = page
        .eval("document.getElementById('weight-0-value').textContent")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(concise > 0.6 && concise < 1.0, "the slider moved to {concise}");
    page.click("#input");
    page.type_text("Thank you!");
    page.press_enter();
    page.wait_for(
        &format!(
            "(r => r && !r.streaming && r.meta)({LAST_REPLY}) && document.querySelectorAll('.msg').length === 4"
        ),
        "the reply under JSD",
        Duration::from_secs(120),
    );
    let requests = page.chat_requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2]["divergence"], "jsd");
    let weights = numbers(&requests[2]["weights"]);
    assert!(weights.iter().all(|&w| w >= 0.0), "{weights:?}");
    assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-9, "the sum is 1: {weights:?}");
    assert!((weights[0] - concise).abs() < 0.005, "{weights:?} vs the slider's {concise}");
    assert!(
        weights[1] > 0.0 && weights[2] > weights[1],
        "the others keep their ratio: {weights:?}"
    );
    let third = page.eval(LAST_REPLY);
    assert_eq!(third["error"], false, "{third}");
    assert!(third["meta"].as_str().unwrap().contains("jsd"), "{third}");
    assert_eq!(requests[2]["messages"].as_array().unwrap().len(), 3, "the conversation so far");

    // A phone-sized screen: nothing wider than the screen, the controls fold away.
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
    );
    page.call("Page.reload", json!({}));
    page.wait_for(
        "document.querySelectorAll('#sliders input[type=range]').length === 3 && document.querySelectorAll('.msg').length === 4",
        "the page again, with the conversation kept",
        Duration::from_secs(30),
    );
    let width = page.eval("document.documentElement.scrollWidth");
    assert!(width.as_f64().unwrap() <= 390.0, "the page is {width} px wide on a 390 px screen");
    assert_eq!(page.eval("document.getElementById('controls').open"), json!(false));
    page.screenshot(&artefacts().join("page-phone.png"));

    // Everything the page loaded came from the server.
    page.eval("0");
    for (url, _, _) in &page.requests {
        assert!(
            url.starts_with(&origin) || url.starts_with("data:"),
            "the page loaded {url} from elsewhere"
        );
    }
    eprintln!(
        "page test: first reply streamed in {:.1} s; screenshots in {}",
        streamed_in.as_secs_f64(),
        artefacts().display()
    );
}

/// A reply in Markdown with markup that must stay text: HTML elements with script in them,
/// and a link to a `javascript:` URL.
const MARKDOWN_REPLY: &str = r###"## Plan

Here is **bold**, *italic*, `inline <code>` and ~~gone~~.

- first item
- second with **strong**
  - nested item

1. one
2. two

```rust
fn main() {
    println!("<b>hi</b>");
}
```

> quoted

Raw HTML: <img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script>

A [bad link](javascript:window.__xss=3) and a [good link](https://example.com/docs).

| a | b |
|---|---|
| 1 | 2 |
"###;

/// Runs in the page before its own script: answers the chat endpoint with a canned stream
/// (MARKDOWN_REPLY to "Show me Markdown", "Reply to: …" otherwise, nine characters an event)
/// and keeps each request body in `window.__sent`; everything else goes to the server.
const FAKE_REPLIES: &str = r#"(() => {
  const real = window.fetch.bind(window);
  window.__sent = [];
  window.fetch = (url, options) => {
    if (!String(url).endsWith('v1/chat/completions')) return real(url, options);
    const body = JSON.parse(options.body);
    window.__sent.push(body);
    const last = body.messages[body.messages.length - 1].content;
    const text = last === 'Show me Markdown' ? CANNED : 'Reply to: ' + last;
    const pieces = text.match(/[\s\S]{1,9}/g);
    const bytes = new TextEncoder();
    const event = (v) => bytes.encode('data: ' + JSON.stringify(v) + '\n\n');
    const stream = new ReadableStream({ async start(c) {
      for (const p of pieces) {
        c.enqueue(event({ choices: [{ index: 0, delta: { content: p } }] }));
        await new Promise((r) => setTimeout(r, 15));
      }
      c.enqueue(event({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }],
        mood: { weights: body.weights, divergence: body.divergence } }));
      c.enqueue(bytes.encode('data: [DONE]\n\n'));
      c.close();
    } });
    return Promise.resolve(new Response(stream, { status: 200, headers: { 'Content-Type': 'text/event-stream' } }));
  };
})()"#;

/// What the last reply shows: its Markdown drawn as elements, and anything that must never
/// be there (elements that load or run something, event-handler attributes, `window.__xss`).
const RENDERED: &str = r#"(() => {
  const t = [...document.querySelectorAll('.msg.assistant')].pop().querySelector('.text');
  const texts = (s) => [...t.querySelectorAll(s)].map((e) => e.textContent);
  return {
    pre: texts('pre > code'),
    strong: texts('strong'),
    em: texts('em'),
    code: texts(':not(pre) > code'),
    h2: texts('h2'),
    bullets: texts(':scope > ul > li').length,
    nested: texts('ul ul > li'),
    numbered: texts('ol > li'),
    quote: texts('blockquote'),
    cells: texts('th, td'),
    links: [...t.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.textContent, a.rel, a.target]),
    dangerous: document.querySelectorAll('#messages :is(img, script, iframe, object, embed, svg, style, link)').length,
    handlers: [...document.querySelectorAll('#messages *')].filter((e) => [...e.attributes].some((a) => a.name.startsWith('on'))).length,
    text: t.textContent,
    xss: typeof window.__xss,
  };
})()"#;

/// The titles in the list of conversations, and which one is shown.
const CONVERSATIONS: &str = "[...document.querySelectorAll('#conversations li')].map(li => \
    [li.querySelector('.open').textContent, li.classList.contains('current')])";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_page_renders_markdown_safely_copies_and_keeps_conversations() {
    let server = serve(&assistant_recipe(), &["--api-key", KEY, "-c", "1024", "-n", "48"]);
    let origin = format!("http://{}", server.addr);
    let (_browser, mut page) = launch();
    page.call("Page.enable", json!({}));
    let fake = FAKE_REPLIES.replace("CANNED", &serde_json::to_string(MARKDOWN_REPLY).unwrap());
    page.call("Page.addScriptToEvaluateOnNewDocument", json!({ "source": fake }));
    page.call("Page.navigate", json!({ "url": format!("{origin}/") }));
    page.wait_for(
        "document.getElementById('key-dialog') && document.getElementById('key-dialog').open",
        "the key dialog",
        Duration::from_secs(30),
    );
    page.eval(&format!("localStorage.setItem('mood.apiKey', {KEY:?}); true"));
    let loaded = "document.querySelectorAll('#sliders input[type=range]').length === 3";
    page.call("Page.reload", json!({}));
    page.wait_for(loaded, "the page with the key", Duration::from_secs(30));

    // The token limit starts at the server's (-n 48); the system prompt is empty.
    assert_eq!(page.eval("document.getElementById('max-tokens').value"), json!("48"));
    assert_eq!(page.eval("document.getElementById('system').value"), json!(""));

    // Each slider marks where its weight is 0: a click on the mark sets the weight to 0.
    // Under a divergence whose weights start at 0 the mark is hidden.
    assert_eq!(page.eval("document.getElementById('weight-0-value').textContent"), json!("0.60"));
    assert_eq!(page.eval("document.getElementById('weight-0-zero').hidden"), json!(false));
    let mark = page.point("#weight-0-zero", 0.5);
    let track = page.point("#weight-0", 0.0);
    let width = page.eval("document.getElementById('weight-0').getBoundingClientRect().width");
    let fraction = (mark.0 - track.0 - 8.0) / (width.as_f64().unwrap() - 16.0);
    assert!((fraction - 1.0 / 3.0).abs() < 0.01, "0 is a third along −1…2: {fraction}");
    page.click_at(mark);
    assert_eq!(page.eval("document.getElementById('weight-0-value').textContent"), json!("0.00"));
    page.eval(
        "(s => { s.value = 'jsd'; s.dispatchEvent(new Event('change')); return true; })(document.getElementById('divergence'))",
    );
    assert_eq!(page.eval("document.getElementById('weight-0-zero').hidden"), json!(true));
    page.click("#defaults");
    assert_eq!(page.eval("document.getElementById('weight-0-value').textContent"), json!("0.60"));
    assert_eq!(page.eval("document.getElementById('weight-0-zero').hidden"), json!(false));

    // A system prompt and a token limit, typed in, go into the request.
    page.click("#system");
    page.type_text("Answer like a pirate.");
    page.click("#max-tokens");
    page.eval("document.getElementById('max-tokens').select(); true");
    page.type_text("20");
    page.eval(
        "window.__drawnWhileStreaming = false; new MutationObserver(() => { \
         if (document.querySelector('.msg.assistant.streaming .text strong')) window.__drawnWhileStreaming = true; \
         }).observe(document.getElementById('messages'), { subtree: true, childList: true }); true",
    );
    page.click("#input");
    page.type_text("Show me Markdown");
    page.press_enter();
    page.wait_for(
        &format!("(r => r && !r.streaming && r.meta)({LAST_REPLY})"),
        "the canned reply",
        Duration::from_secs(30),
    );
    let sent = page.eval("window.__sent");
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    let sent = &sent[0];
    assert_eq!(
        sent["messages"],
        json!([
            { "role": "system", "content": "Answer like a pirate." },
            { "role": "user", "content": "Show me Markdown" },
        ]),
        "the system prompt first"
    );
    assert_eq!(sent["max_tokens"], 20);
    // The server takes that request as the page built it.
    let mut plain = sent.clone();
    plain["stream"] = json!(false);
    let (status, answer) = post_json(&server.addr, "/v1/chat/completions", &plain, Some(KEY));
    assert_eq!(status, 200, "{answer}");
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() <= 20, "{answer}");

    // The reply is drawn as Markdown, during the stream already; markup in it stays text.
    assert_eq!(page.eval(LAST_REPLY)["text"], json!(MARKDOWN_REPLY), "the source is kept");
    assert_eq!(page.eval("window.__drawnWhileStreaming"), json!(true), "drawn as it streamed");
    let r = page.eval(RENDERED);
    assert_eq!(strings(&r["pre"]), ["fn main() {\n    println!(\"<b>hi</b>\");\n}"], "{r}");
    assert_eq!(strings(&r["strong"]), ["bold", "strong"], "{r}");
    assert_eq!(strings(&r["em"]), ["italic"], "{r}");
    assert_eq!(strings(&r["code"]), ["inline <code>"], "{r}");
    assert_eq!(strings(&r["h2"]), ["Plan"], "{r}");
    assert_eq!(r["bullets"], 2, "{r}");
    assert_eq!(strings(&r["nested"]), ["nested item"], "{r}");
    assert_eq!(strings(&r["numbered"]), ["one", "two"], "{r}");
    assert_eq!(strings(&r["quote"]), ["quoted"], "{r}");
    assert_eq!(strings(&r["cells"]), ["a", "b", "1", "2"], "{r}");
    assert_eq!(
        r["links"],
        json!([[
            "https://example.com/docs",
            "good link",
            "noopener noreferrer nofollow",
            "_blank"
        ]]),
        "only the http(s) link is a link"
    );
    assert_eq!(r["dangerous"], 0, "no element of the reply's HTML: {r}");
    assert_eq!(r["handlers"], 0, "no event-handler attribute: {r}");
    let text = r["text"].as_str().unwrap();
    for literal in [
        "<img src=x onerror=\"window.__xss=1\">",
        "<script>window.__xss=2</script>",
        "A bad link and a good link.",
    ] {
        assert!(text.contains(literal), "{literal:?} shown as text: {text}");
    }
    assert!(!text.contains("**") && !text.contains("```"), "{text}");
    // Clicking the text of the javascript: link runs nothing either.
    page.click("#messages .link-off");
    assert_eq!(page.eval("typeof window.__xss"), json!("undefined"), "nothing ran");
    page.screenshot(&artefacts().join("page-markdown.png"));

    // Copy: the message's Markdown through the Clipboard API; without it, through a
    // selection; where that fails too, the message is left selected.
    page.eval(
        "Object.defineProperty(navigator, 'clipboard', { configurable: true, value: \
         { writeText: (t) => { window.__copied = t; return Promise.resolve(); } } }); true",
    );
    page.click("#messages .msg.assistant .copy");
    page.wait_for("window.__copied", "the copy", Duration::from_secs(5));
    assert_eq!(page.eval("window.__copied"), json!(MARKDOWN_REPLY), "the Markdown source");
    assert_eq!(
        page.eval("document.querySelector('#messages .msg.assistant .copy').textContent"),
        json!("Copied")
    );
    page.eval(
        "Object.defineProperty(navigator, 'clipboard', { configurable: true, value: undefined }); \
         document.execCommand = (c) => { window.__exec = [c, document.querySelector('textarea.offscreen').value]; return true; }; true",
    );
    page.click("#messages .msg.user .copy");
    page.wait_for("window.__exec", "the copy without the Clipboard API", Duration::from_secs(5));
    assert_eq!(page.eval("window.__exec"), json!(["copy", "Show me Markdown"]));
    page.eval("document.execCommand = () => false; true");
    page.click("#messages .msg.user .copy");
    page.wait_for(
        "document.querySelector('#messages .msg.user .copy').textContent.startsWith('Selected')",
        "the message selected",
        Duration::from_secs(5),
    );
    assert_eq!(page.eval("window.getSelection().toString()"), json!("Show me Markdown"));

    // Conversations: a new one starts empty, with its own system prompt; both stay in the
    // list, across a reload, and either can be shown again.
    assert_eq!(page.eval(CONVERSATIONS), json!([["Show me Markdown", true]]));
    page.click("#new-chat");
    assert_eq!(page.eval("document.querySelectorAll('.msg').length"), json!(0));
    assert_eq!(page.eval("document.getElementById('system').value"), json!(""));
    page.click("#input");
    page.type_text("Second question");
    page.press_enter();
    page.wait_for(
        &format!(
            "(r => r && !r.streaming && r.text === 'Reply to: Second question')({LAST_REPLY})"
        ),
        "the second conversation's reply",
        Duration::from_secs(30),
    );
    assert_eq!(
        page.eval("window.__sent[1].messages"),
        json!([{ "role": "user", "content": "Second question" }]),
        "a conversation of its own, without the other's system prompt"
    );
    assert_eq!(
        page.eval(CONVERSATIONS),
        json!([["Second question", true], ["Show me Markdown", false]])
    );
    page.call("Page.reload", json!({}));
    page.wait_for(
        &format!("{loaded} && document.querySelectorAll('.msg').length === 2"),
        "the page again, with the conversation shown before",
        Duration::from_secs(30),
    );
    assert_eq!(
        page.eval(CONVERSATIONS),
        json!([["Second question", true], ["Show me Markdown", false]])
    );
    page.click("#conversations li:nth-child(2) .open");
    assert_eq!(
        page.eval(CONVERSATIONS),
        json!([["Second question", false], ["Show me Markdown", true]])
    );
    assert_eq!(page.eval(LAST_REPLY)["text"], json!(MARKDOWN_REPLY));
    assert_eq!(
        page.eval("document.getElementById('system').value"),
        json!("Answer like a pirate.")
    );
    let r = page.eval(RENDERED);
    assert_eq!(strings(&r["strong"]), ["bold", "strong"], "drawn again from storage: {r}");
    assert_eq!((r["dangerous"].clone(), r["xss"].clone()), (json!(0), json!("undefined")));
    page.screenshot(&artefacts().join("page-conversations.png"));

    // On a phone-sized screen: the list and the controls fold away, the Markdown (a code
    // block, a table) fits the screen.
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
    );
    page.call("Page.reload", json!({}));
    page.wait_for(
        &format!("{loaded} && document.querySelectorAll('.msg').length === 2"),
        "the page on a phone",
        Duration::from_secs(30),
    );
    assert_eq!(
        page.eval(
            "[document.getElementById('history').open, document.getElementById('controls').open]"
        ),
        json!([false, false])
    );
    let width = page.eval("document.documentElement.scrollWidth");
    assert!(width.as_f64().unwrap() <= 390.0, "the page is {width} px wide on a 390 px screen");
    page.screenshot(&artefacts().join("page-phone-markdown.png"));
    page.click("#history summary");
    page.screenshot(&artefacts().join("page-phone-conversations.png"));
    page.call("Emulation.clearDeviceMetricsOverride", json!({}));

    // Deleting takes two clicks; what is deleted is gone after a reload too.
    page.click("#conversations li:nth-child(1) .delete");
    assert_eq!(
        page.eval("document.querySelector('#conversations li:nth-child(1) .delete').textContent"),
        json!("Delete?")
    );
    assert_eq!(page.eval("document.querySelectorAll('#conversations li').length"), json!(2));
    page.click("#conversations li:nth-child(1) .delete");
    assert_eq!(page.eval(CONVERSATIONS), json!([["Show me Markdown", true]]));
    page.call("Page.reload", json!({}));
    page.wait_for(
        &format!("{loaded} && document.querySelectorAll('.msg').length === 2"),
        "the page after deleting",
        Duration::from_secs(30),
    );
    assert_eq!(page.eval(CONVERSATIONS), json!([["Show me Markdown", true]]));
    let kept =
        page.eval("JSON.parse(localStorage.getItem('mood.conversations')).conversations.length");
    assert_eq!(kept, json!(1));
    // Deleting the last one leaves a new, empty conversation.
    page.click("#conversations li:nth-child(1) .delete");
    page.click("#conversations li:nth-child(1) .delete");
    assert_eq!(page.eval(CONVERSATIONS), json!([["New conversation", true]]));
    assert_eq!(page.eval("document.querySelectorAll('.msg').length"), json!(0));
}

#[test]
fn the_page_and_its_files_are_served_without_the_key_and_reference_nothing_outside() {
    let server = serve(&assistant_recipe(), &["--api-key", KEY, "-c", "512"]);
    for (path, kind) in
        [("/", "text/html"), ("/page.js", "text/javascript"), ("/page.css", "text/css")]
    {
        let (status, head, body) = common::server::request(&server.addr, "GET", path, None, None);
        assert_eq!(status, 200, "{path}: {body}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains(&format!("content-type: {kind}")), "{path}: {head}");
        assert!(head.contains("content-security-policy: default-src 'self'"), "{path}: {head}");
        for outside in ["http:", "https:", "//fonts", "@import", "url("] {
            assert!(!body.contains(outside), "{path} references {outside:?}");
        }
    }
    // The API stays behind the key.
    for path in ["/v1/mood", "/v1/models"] {
        let (status, _, _) = common::server::request(&server.addr, "GET", path, None, None);
        assert_eq!(status, 401, "{path}");
    }
    let (status, _, _) =
        common::server::request(&server.addr, "GET", "/page.js/x", None, Some(KEY));
    assert_eq!(status, 404);
}
