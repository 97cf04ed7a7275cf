//! The live dashboard: its JSON checked against known traffic, and the page in a real
//! headless Chromium (Debian's `chromium`, installed by scripts/install-deps.sh), driven
//! over the DevTools protocol while real traffic, some of it refused, flows through two
//! gateways sharing one Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, wait_for, Gateway, RedisServer, Upstream};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Two routes, one limited to one request a minute per client; clients named by
/// X-Forwarded-For from loopback; limits shared through `redis`.
fn config(up: &Upstream, redis: &RedisServer) -> String {
    format!(
        "upstreams:\n  app:\n    backends:\n      - addr: {}\n\
         routes:\n  - name: api\n    path_prefix: /api\n    upstream: app\n\
         \x20 - name: login\n    path_prefix: /login\n    upstream: app\n    rate_limit: strict\n\
         rate_limits:\n  redis:\n    url: {}\n    sync_interval: 5ms\n    expected_instances: 2\n\
         \x20 policies:\n    strict:\n      rate: 1\n      per: 1m\n      burst: 1\n      key: client_ip\n\
         trusted_proxies: [127.0.0.1/32]\n",
        up.addr(),
        redis.url()
    )
}

fn stats(gw: &Gateway) -> Value {
    let r = gw.admin("/api/stats");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn stats_report_the_refusals_errors_and_rates_that_happened() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&up, &redis));
    let client = [("x-forwarded-for", "198.51.100.23")];
    assert_eq!(get(&gw.url("/login"), &client).status, 200);
    let mut refused_ids = Vec::new();
    for _ in 0..7 {
        let r = get(&gw.url("/login"), &client);
        assert_eq!(r.status, 429);
        refused_ids.push(r.header("x-request-id").unwrap().to_string());
    }
    let missing = get(&gw.url("/nowhere"), &[]);
    assert_eq!(missing.status, 404);
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/api/x"), &[]).status, 200);
    }
    let s = wait_for(
        "two samples with the traffic",
        Duration::from_secs(10),
        || {
            let s = stats(&gw);
            let twos: u64 = s["traffic"]["by_class"]["2xx"]
                .as_array()?
                .iter()
                .map(|v| v.as_u64().unwrap())
                .sum();
            (twos == 21).then_some(s)
        },
    );
    let fours: u64 = s["traffic"]["by_class"]["4xx"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(fours, 8, "7 refused + 1 not found: {s}");
    let blocked = &s["blocked"]["top"][0];
    assert_eq!(
        (&blocked["client"], &blocked["status"], &blocked["count"]),
        (&json!("198.51.100.23"), &json!(429), &json!(7)),
        "{s}"
    );
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 8, "{s}");
    assert_eq!(errors[0]["status"], 404, "newest first");
    assert_eq!(
        errors[0]["request_id"],
        missing.header("x-request-id").unwrap()
    );
    let logged: Vec<&str> = errors[1..]
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = refused_ids.iter().map(String::as_str).collect();
    expected.reverse();
    assert_eq!(logged, expected, "the refused requests' ids, newest first");
    assert_eq!(errors[1]["route"], "login");
    assert_eq!(errors[1]["reason"], "rate limited");
    let latency = s["latency"].as_array().unwrap();
    let api = latency.iter().find(|l| l["route"] == "api").unwrap();
    assert_eq!(api["requests"], 20);
    assert!(api["p99_ms"].as_f64().unwrap() >= api["p50_ms"].as_f64().unwrap());
    assert_eq!(s["limiter"]["redis"], "reachable", "{s}");
    assert_eq!(s["limiter"]["limited"], 7);
    assert_eq!(
        gw.metric("gateway_errors_total{reason=\"rate_limited\"}"),
        7.0
    );
    assert_eq!(gw.metric("gateway_errors_total{reason=\"no_route\"}"), 1.0);
    assert_eq!(gw.metric("gateway_errors_total{reason=\"internal\"}"), 0.0);
    assert_eq!(
        s["upstreams"][0]["backends"][0]["backend"],
        json!(up.addr())
    );
    assert_eq!(
        s["config_sha256"].as_str().unwrap().len(),
        64,
        "the config's hash: {s}"
    );
}

/// Headless Chromium with its DevTools endpoint on a free port, killed on drop.
struct Browser {
    child: Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Console errors, uncaught exceptions and error log entries, as text.
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium (Debian package; scripts/install-deps.sh installs it)");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/<id>"
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let browser_url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium's DevTools endpoint");
        let port = browser_url
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let targets = get(&format!("http://127.0.0.1:{port}/json/list"), &[]).json();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target")["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let (mut ws, _) = tungstenite::connect(page).expect("DevTools websocket");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        let mut b = Self {
            child,
            ws,
            next_id: 0,
            errors: Vec::new(),
            _profile: profile,
        };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(domain, json!({}));
        }
        b
    }

    /// Sends one command and returns its result, collecting the errors reported meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.ws.read().expect("a DevTools message");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    fn note(&mut self, event: &Value) {
        let p = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.consoleAPICalled")
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                self.errors
                    .push(format!("console.{}: {}", p["type"], p["args"]));
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", p["exceptionDetails"]));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", p["entry"]));
            }
            _ => {}
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// The acceptance test: the page, opened on one gateway, shows a non-zero request
/// rate and the key of a client refused by the other gateway (merged through Redis), with
/// nothing in the browser console; screenshots at a laptop's and a phone's width.
#[test]
fn a_real_browser_shows_live_traffic_and_the_client_refused_by_another_instance() {
    let redis = RedisServer::start();
    let up = Upstream::start("app");
    let (a, b) = (
        Gateway::start(&config(&up, &redis)),
        Gateway::start(&config(&up, &redis)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let (on_a, on_b, on_b_login) = (a.url("/login"), b.url("/api/hello"), b.url("/login"));
        std::thread::spawn(move || {
            let mut refused = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // One abuser hits gateway A, another B; ordinary traffic flows through B.
                if get(&on_a, &[("x-forwarded-for", "203.0.113.77")]).status == 429 {
                    refused += 1;
                }
                if get(&on_b_login, &[("x-forwarded-for", "198.51.100.9")]).status == 429 {
                    refused += 1;
                }
                for _ in 0..5 {
                    assert_eq!(get(&on_b, &[]).status, 200);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            refused
        })
    };
    let mut browser = Browser::start();
    browser.viewport(1280, 900, false);
    browser.call(
        "Page.navigate",
        json!({"url": format!("http://127.0.0.1:{}/dashboard", b.admin_port)}),
    );
    let started = Instant::now();
    let shown = loop {
        let v = browser.eval(
            "JSON.stringify({rps: document.getElementById('rps')?.textContent, \
             blocked: document.getElementById('blocked')?.textContent, \
             title: document.getElementById('blockedTitle')?.textContent, \
             status: document.getElementById('status')?.className})",
        );
        let v: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
        let rps: f64 = v["rps"]
            .as_str()
            .and_then(|s| s.replace(',', "").parse().ok())
            .unwrap_or(0.0);
        let blocked = v["blocked"].as_str().unwrap_or("");
        if rps > 0.0 && blocked.contains("203.0.113.77") && v["status"] == "live" {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the page never showed traffic and the refused client: {v}; errors {:?}",
            browser.errors
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        shown["title"].as_str().unwrap().contains("all instances"),
        "merged through Redis: {shown}"
    );
    // Some seconds of history, so that the screenshots show charts, not a first point.
    std::thread::sleep(Duration::from_secs(8));
    let laptop = browser.screenshot("dashboard-laptop.png");
    browser.viewport(390, 844, true);
    browser.eval("window.dispatchEvent(new Event('resize'))");
    std::thread::sleep(Duration::from_millis(1500));
    let overflow = browser.eval("document.documentElement.scrollWidth - window.innerWidth");
    assert!(
        overflow.as_f64().unwrap() <= 0.0,
        "no sideways scrolling at a phone's width: {overflow}"
    );
    let phone = browser.screenshot("dashboard-phone.png");
    stop.store(true, Ordering::Relaxed);
    let refused = traffic.join().unwrap();
    assert!(refused > 0);
    // Late events (the last polls) are collected by one more round trip.
    browser.eval("1");
    assert!(
        browser.errors.is_empty(),
        "the browser console: {:?}",
        browser.errors
    );
    eprintln!(
        "screenshots: {} and {} ({refused} requests refused during the test)",
        laptop.display(),
        phone.display()
    );
}
