//! Policies on other hosts through llama.cpp's RPC backend, on loopback only: `rpc-server`
//! processes (built from vendor/ by models/build-rpc-server.sh, which the tests run first) on
//! free 127.0.0.1 ports, started and killed by the tests.
//!
//! With the `rpc` feature: greedy MOD with each expert on its own server gives the tokens of
//! all-local decoding on every step whose top two tokens are apart (llama.cpp's kernels differ
//! a little between a local context and a server's); `mood info` reports reachable and
//! unreachable servers; an unreachable server and one killed mid-generation are one-line
//! errors naming it; `mood serve` answers the requests that need a lost server 503, reports
//! the reason on `/health` and keeps serving the policies it still has; a batch stops at a
//! lost server and resumes once it is back; the vocabulary check covers remote policies; an
//! address that is not loopback or private draws a warning naming it; `mood bench` measures a
//! recipe on its servers and all-local side by side.
//! Without the feature: `--rpc` and the recipe key are refused with a one-line error.

mod common;

use common::*;

/// A recipe file of the two prompted experts of the demo, each with its `rpc` list (`None`:
/// no key); no reference (the weights sum to 1).
fn two_experts(name: &str, poet: Option<&str>, scientist: Option<&str>) -> std::path::PathBuf {
    let key = |e: Option<&str>| e.map_or(String::new(), |e| format!("rpc = [\"{e}\"]\n"));
    let model = default_model();
    let text = format!(
        "[[expert]]\nname = \"poet\"\nmodel = {model:?}\nprefix = {POET:?}\nweight = 0.5\n{}\n\
         [[expert]]\nname = \"scientist\"\nmodel = {model:?}\nprefix = {SCIENTIST:?}\nweight = 0.5\n{}",
        key(poet),
        key(scientist)
    );
    let dir = std::env::temp_dir().join(format!("mood-rpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Asserts a failed run with a one-line error containing every `want`, and no panic.
fn assert_one_line_error(out: &std::process::Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("mood: error: "), "{err}");
    for w in want {
        assert!(err.contains(w), "{w:?} missing from {err}");
    }
    assert!(!err.contains("panicked") && !err.contains("GGML_ASSERT"), "{err}");
}

#[cfg(not(feature = "rpc"))]
#[test]
fn a_build_without_the_rpc_feature_refuses_servers() {
    let model = default_model();
    let model = model.to_str().unwrap();
    let flag = mood(&["generate", "-m", model, "-p", "The sea", "--rpc", "127.0.0.1:50052"]);
    assert_one_line_error(&flag, &["--rpc", "no RPC backend", "--features rpc"]);
    let recipe = two_experts("refused.toml", None, Some("127.0.0.1:50052"));
    let key = mood(&["generate", "-r", recipe.to_str().unwrap(), "-p", "The sea"]);
    assert_one_line_error(&key, &["rpc", "no RPC backend", "--features rpc"]);
    let info = mood(&["info", "--rpc", "127.0.0.1:50052"]);
    assert_one_line_error(&info, &["--rpc", "--features rpc"]);
    // A malformed address is named before anything else.
    let bad = mood(&["generate", "-m", model, "-p", "The sea", "--rpc", "localhost"]);
    assert_one_line_error(&bad, &["--rpc", "'localhost' has no port"]);
    let info = mood_json(&["info", "--json"]);
    assert_eq!(info["build"]["rpc"], false);
}

#[cfg(feature = "rpc")]
mod with_servers {
    use super::*;
    use common::server::{http, post_json, serve};
    use serde_json::{json, Value};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// The rpc-server binary, built from vendor/ by models/build-rpc-server.sh (once per test
    /// process: seconds when it is up to date, so it always matches the sources).
    fn rpc_server_binary() -> PathBuf {
        static BUILT: Mutex<bool> = Mutex::new(false);
        let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        if !*built {
            let status = Command::new(root().join("models/build-rpc-server.sh"))
                .stdout(Stdio::null())
                .status()
                .expect("run models/build-rpc-server.sh");
            assert!(status.success(), "models/build-rpc-server.sh failed");
            *built = true;
        }
        root().join("target/rpc-server/rpc-server")
    }

    /// An rpc-server child process on a free loopback port; killed when dropped.
    struct RpcServer {
        child: Child,
        endpoint: String,
    }

    impl RpcServer {
        fn start() -> Self {
            let binary = rpc_server_binary();
            for _attempt in 0..5 {
                let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                let endpoint = format!("127.0.0.1:{port}");
                let child = Command::new(&binary)
                    .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--threads", "1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start rpc-server");
                let mut server = RpcServer { child, endpoint };
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if server.child.try_wait().unwrap().is_some() {
                        break; // the port was taken meanwhile: another one
                    }
                    // A connection that closes at once: the server serves the next client.
                    if TcpStream::connect(&server.endpoint).is_ok() {
                        return server;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            panic!("rpc-server did not start");
        }

        /// SIGKILL, as a crash or a power cut would end it.
        fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        /// Starts it again on the same port.
        fn restart(&mut self) {
            self.kill();
            let port = self.endpoint.rsplit(':').next().unwrap().to_string();
            self.child = Command::new(rpc_server_binary())
                .args(["--host", "127.0.0.1", "--port", &port, "--threads", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(&self.endpoint).is_err() {
                assert!(Instant::now() < deadline, "rpc-server did not restart");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    impl Drop for RpcServer {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// A loopback port nothing listens on.
    fn dead_endpoint() -> String {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        format!("127.0.0.1:{port}")
    }

    /// The top two of 0.5·(poet's logits) + 0.5·(scientist's logits) are at least this far
    /// apart on the steps compared. A server computes with llama.cpp's plain CPU kernels and
    /// this machine with weights repacked for its instruction sets: the gap between the top
    /// two moves by up to about 0.3 between the two.
    const MARGIN: f64 = 0.5;

    #[test]
    fn greedy_mod_with_each_expert_on_a_server_equals_all_local_on_tie_free_steps() {
        let (a, b) = (RpcServer::start(), RpcServer::start());
        let remote = two_experts("remote.toml", Some(&a.endpoint), Some(&b.endpoint));
        let local = two_experts("local.toml", None, None);
        let run = |recipe: &PathBuf| {
            let args = ["generate", "-r", recipe.to_str().unwrap(), "-p", "The ocean", "-n", "24"];
            let mut all = args.to_vec();
            // No repetition penalty: greedy is the argmax of the combined logits.
            all.extend(["--strategy", "threads", "--repeat-penalty", "1", "--json"]);
            mood_json(&all)
        };
        let here = run(&local);
        let there = run(&remote);
        assert_eq!(there["prompt_tokens"], here["prompt_tokens"]);
        let (mine, theirs) = (tokens_of(&here), tokens_of(&there));

        // Each step's margin, from each expert's own logits in a plain context.
        let model = load_model(&default_model());
        let (mut poet, mut scientist) = (Plain::new(&model, 512, 2), Plain::new(&model, 512, 2));
        let (mut lp, mut ls) = (
            poet.prompt(&format!("{POET}The ocean")),
            scientist.prompt(&format!("{SCIENTIST}The ocean")),
        );
        // Until the runs part (only where the top two are near), every tie-free step agrees.
        let mut compared = 0;
        for (step, &token) in mine.iter().enumerate() {
            let mut combined: Vec<f64> = lp
                .iter()
                .zip(&ls)
                .map(|(&x, &y)| 0.5 * f64::from(x) + 0.5 * f64::from(y))
                .collect();
            combined.sort_by(|x, y| y.total_cmp(x));
            let margin = combined[0] - combined[1];
            if theirs.get(step) != Some(&token) {
                assert!(
                    margin < MARGIN,
                    "step {step} (margin {margin:.3}): {theirs:?} vs {mine:?}"
                );
                break;
            }
            compared += usize::from(margin >= MARGIN);
            lp = poet.feed(token);
            ls = scientist.feed(token);
        }
        assert!(compared >= 12, "only {compared} tie-free steps compared: {mine:?}");

        // mood info: both servers with their memory, and a dead one.
        let dead = dead_endpoint();
        let list = format!("{},{},{dead}", a.endpoint, b.endpoint);
        let info = mood_json(&["info", "--rpc", &list, "--json"]);
        assert_eq!(info["build"]["rpc"], true);
        let servers = info["rpc_servers"].as_array().unwrap();
        for s in &servers[..2] {
            assert_eq!(s["reachable"], true, "{s}");
            assert!(s["devices"][0]["memory_total_mb"].as_u64().unwrap() > 0, "{s}");
        }
        assert_eq!(servers[2]["reachable"], false);
        let why = servers[2]["error"].as_str().unwrap();
        assert!(why.contains(&dead) && why.contains("refused"), "{why}");
    }

    #[test]
    fn unreachable_and_lost_servers_are_one_line_errors_naming_them() {
        // Unreachable at start.
        let dead = dead_endpoint();
        let recipe = two_experts("dead.toml", None, Some(&dead));
        let out = mood(&["generate", "-r", recipe.to_str().unwrap(), "-p", "The sea", "-n", "4"]);
        assert_one_line_error(&out, &[&format!("cannot reach RPC server {dead}"), "'scientist'"]);

        // Lost mid-generation: killed once text has streamed.
        let mut b = RpcServer::start();
        let recipe = two_experts("lost.toml", None, Some(&b.endpoint));
        let mut child = Command::new(env!("CARGO_BIN_EXE_mood"))
            .args(["generate", "-r", recipe.to_str().unwrap(), "-p", "The ocean", "-n", "400"])
            .args(["--stop", "zzzz"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 1];
        child.stdout.as_mut().unwrap().read_exact(&mut first).expect("some text before the kill");
        b.kill();
        let out = child.wait_with_output().unwrap();
        assert_one_line_error(
            &out,
            &[&format!("RPC server {} was lost", b.endpoint), "'scientist'"],
        );
    }

    /// Sends a streamed completion and reads its SSE events; `on_first` runs once the first
    /// event has arrived. Returns the `data:` payloads.
    fn stream_until_end(addr: &str, body: &Value, on_first: impl FnOnce()) -> Vec<String> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let body = body.to_string();
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let (mut events, mut on_first) = (Vec::new(), Some(on_first));
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                events.push(data.to_string());
                if let Some(f) = on_first.take() {
                    f();
                }
            }
            line.clear();
        }
        events
    }

    #[test]
    fn serve_answers_503_for_a_lost_server_and_keeps_serving_local_policies() {
        let b = Mutex::new(RpcServer::start());
        let endpoint = b.lock().unwrap().endpoint.clone();
        let recipe = two_experts("serve.toml", None, Some(&endpoint));
        let server = serve(&recipe, &["-c", "1024", "--strategy", "threads"]);
        let addr = &server.addr;
        let (status, health) = http(addr, "GET", "/health", None, None);
        assert_eq!((status, health.contains("\"ok\"")), (200, true), "{health}");

        // Both experts: the server holding one is killed mid-stream.
        let body =
            json!({"prompt": "The ocean", "max_tokens": 400, "stop": ["zzzz"], "stream": true});
        let events = stream_until_end(addr, &body, || b.lock().unwrap().kill());
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        let message = last["error"]["message"].as_str().unwrap_or_else(|| panic!("{last}"));
        assert!(message.contains(&format!("RPC server {endpoint} was lost")), "{message}");
        assert!(!events.iter().any(|e| e == "[DONE]"), "a failed stream has no [DONE]");

        let (status, health) = http(addr, "GET", "/health", None, None);
        let health: Value = serde_json::from_str(&health).unwrap();
        assert_eq!((status, health["status"].as_str()), (503, Some("degraded")), "{health}");
        assert!(health["reason"].as_str().unwrap().contains(&endpoint), "{health}");

        // What needs the lost server: 503 JSON naming it. What does not: served.
        for weights in [json!([0.5, 0.5]), json!([0, 1])] {
            let body = json!({"prompt": "The moon", "max_tokens": 4, "weights": weights});
            let (status, v) = post_json(addr, "/v1/completions", &body, None);
            assert_eq!(status, 503, "{v}");
            assert!(v["error"]["message"].as_str().unwrap().contains(&endpoint), "{v}");
        }
        let body = json!({"prompt": "The moon", "max_tokens": 6, "weights": [1, 0]});
        let (status, v) = post_json(addr, "/v1/completions", &body, None);
        assert_eq!(status, 200, "{v}");
        let local = two_experts("serve-local.toml", None, None);
        let poet = mood_json(&[
            "generate",
            "-r",
            local.to_str().unwrap(),
            "-w",
            "1,0",
            "-p",
            "The moon",
            "-n",
            "6",
            "--json",
        ]);
        assert_eq!(v["choices"][0]["text"], poet["text"], "the local policy decodes as before");
    }

    #[test]
    fn a_batch_stops_at_a_lost_server_and_resumes_once_it_is_back() {
        let mut b = RpcServer::start();
        let recipe = two_experts("batch.toml", None, Some(&b.endpoint));
        let dir = std::env::temp_dir().join(format!("mood-rpc-{}", std::process::id()));
        let (input, output) = (dir.join("batch-in.jsonl"), dir.join("batch-out.jsonl"));
        let _ = std::fs::remove_file(&output);
        let lines: String =
            (0..6).map(|i| format!("{{\"id\": {i}, \"prompt\": \"Story {i}:\"}}\n")).collect();
        std::fs::write(&input, lines).unwrap();
        let batch = |resume: bool| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_mood"));
            c.args(["batch", "-r", recipe.to_str().unwrap(), "-n", "40", "--stop", "zzzz"])
                .args(["-c", "256", "--strategy", "threads", "-i"])
                .arg(&input)
                .arg("-o")
                .arg(&output)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if resume {
                c.arg("--resume");
            }
            c
        };
        let child = batch(false).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::fs::read_to_string(&output).map_or(0, |t| t.lines().count()) < 1 {
            assert!(Instant::now() < deadline, "no record written");
            std::thread::sleep(Duration::from_millis(20));
        }
        b.kill();
        let out = child.wait_with_output().unwrap();
        assert_one_line_error(
            &out,
            &["stopped", "--resume", &format!("RPC server {} was lost", b.endpoint)],
        );
        let written = std::fs::read_to_string(&output).unwrap();
        assert!(written.lines().count() < 6, "the batch stopped early");
        assert!(!written.contains("\"error\""), "no error records for the lost server: {written}");

        b.restart();
        let out = batch(true).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut lines: Vec<u64> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["line"].as_u64().unwrap())
            .collect();
        lines.sort_unstable();
        assert_eq!(lines, (1..=6).collect::<Vec<u64>>(), "every line once");
    }

    #[test]
    fn the_vocabulary_check_covers_remote_policies() {
        let a = RpcServer::start();
        let dir = std::env::temp_dir().join(format!("mood-rpc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let recipe = dir.join("mixed-vocab.toml");
        std::fs::write(
            &recipe,
            format!(
                "[[expert]]\nmodel = {:?}\n[[expert]]\nmodel = {:?}\nrpc = [\"{}\"]\n",
                default_model(),
                assistant_model(),
                a.endpoint
            ),
        )
        .unwrap();
        let out = mood(&[
            "generate",
            "--unit",
            "tokens",
            "-r",
            recipe.to_str().unwrap(),
            "-p",
            "Hi",
            "-n",
            "2",
        ]);
        assert_one_line_error(
            &out,
            &["gemma-3-270m-q4_k_m.gguf", "smollm2-135m-instruct-q4_1.gguf"],
        );
    }

    /// An address that is not loopback or private draws a warning that names it, from every
    /// command that connects. 0.0.0.0 reaches this machine's servers on Linux but is neither.
    #[test]
    fn exposed_addresses_are_warned_about() {
        let a = RpcServer::start();
        let port = a.endpoint.rsplit(':').next().unwrap();
        let exposed = format!("0.0.0.0:{port}");
        let warned = |out: &std::process::Output| {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{err}");
            let line = err.lines().find(|l| l.starts_with("mood: warning: ")).unwrap_or_default();
            assert!(
                line.contains(&format!(
                    "RPC server {exposed} is not on a loopback or private address"
                )) && line.contains("no authentication"),
                "{err}"
            );
        };
        warned(&mood(&["info", "--rpc", &exposed]));
        let model = default_model();
        let args = ["generate", "-m", model.to_str().unwrap(), "-p", "The sea", "-n", "2"];
        warned(&mood(&[&args[..], &["--rpc", &exposed]].concat()));
        // Loopback: no warning.
        let out = mood(&[&args[..], &["--rpc", &a.endpoint]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("warning"), "{err}");
    }

    /// `mood bench` of a recipe with servers measures each strategy on the servers and, in
    /// the same rounds, with every policy on this machine.
    #[test]
    fn bench_measures_the_recipe_on_its_servers_and_all_local() {
        let (a, b) = (RpcServer::start(), RpcServer::start());
        let bench = |recipe: &std::path::Path, draft_max: &str| {
            let recipe = recipe.to_str().unwrap();
            mood_json(&[
                "bench",
                "-r",
                recipe,
                "--strategies",
                "threads",
                "--rounds",
                "1",
                "-n",
                "8",
                "--memory",
                "",
                "--draft-max",
                draft_max,
                "--json",
            ])
        };
        let remote = two_experts("bench.toml", Some(&a.endpoint), Some(&b.endpoint));
        let report = bench(&remote, "4");
        let rows = report["mod"].as_array().unwrap();
        let placed: Vec<(u64, bool)> =
            rows.iter().map(|m| (m["draft_max"].as_u64().unwrap(), m["rpc"] == true)).collect();
        // threads, then speculative MOD as auto runs it: each on the servers, then here.
        assert_eq!(placed, [(0, true), (0, false), (4, true), (4, false)], "{report}");
        assert_eq!(rows[0]["strategy"], "threads");
        for m in rows {
            assert!(m["tokens_per_second"].as_f64().unwrap() > 0.0, "{m}");
            assert_eq!(m["policies"], 2, "{m}");
        }
        // A recipe without servers has one row per strategy, on this machine.
        let local = two_experts("bench-local.toml", None, None);
        let report = bench(&local, "0");
        let rows = report["mod"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{report}");
        assert_eq!(rows[0]["rpc"], false);
    }
}
