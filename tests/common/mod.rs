//! Test harness: real processes on free ports. A gateway binary with a temp config, HTTP
//! upstreams that echo what they received, and `redis-server` processes, each stopped on drop.
#![allow(dead_code)]

pub mod relay;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use upstream::{HangUp, Upstream};

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// `GET url` with extra headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    request("GET", url, headers)
}

/// Any method, no body.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    try_request(method, url, headers).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`request`], but a failed exchange (refused, reset, no response) is an `Err`.
pub fn try_request(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).expect("valid request");
    let mut resp = agent()
        .run(req)
        .map_err(|e| format!("{method} {url}: {e}"))?;
    Ok(Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    })
}

/// Sends `raw` bytes as-is (for malformed requests no client library would send) and
/// returns the status and the response head and body text.
pub fn raw_request(port: u16, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(raw).expect("write");
    let (_, text) = read_response(&mut s);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Reads one response (the head and a Content-Length body) from `s`, or what arrived
/// before the peer closed. `true`: the whole response arrived.
pub fn read_response(s: &mut TcpStream) -> (bool, String) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&out);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return (true, text.to_string());
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (false, String::from_utf8_lossy(&out).to_string()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The `gateway` binary built by cargo for these tests.
pub fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gateway")
}

/// A running gateway process with its own temp dir, config and access log.
pub struct Gateway {
    child: Option<Child>,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub access_log: PathBuf,
    /// The sections the harness added in front of the test's YAML.
    pub prefix: String,
}

impl Gateway {
    /// Starts the gateway on `yaml` (at least `upstreams` and `routes`). Sections the test
    /// does not set get test defaults: free ports, a short grace period, a file access log.
    pub fn start(yaml: &str) -> Self {
        let gw = Self::spawn(yaml);
        gw.wait_alive();
        gw
    }

    /// Like [`Self::start`], with `server_extra` (indented `server:` keys, e.g.
    /// `"  keepalive_timeout: 1s\n"`) added to the test defaults of the `server` section.
    pub fn start_with_server(server_extra: &str, yaml: &str) -> Self {
        let gw = Self::spawn_on(yaml, free_port(), free_port(), server_extra);
        gw.wait_alive();
        gw
    }

    /// Starts the gateway on a config that sets its own listeners: `make(proxy, admin)`
    /// gets the two free ports to put in it.
    pub fn start_with(make: impl FnOnce(u16, u16) -> String) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let gw = Self::spawn_on(&make(port, admin_port), port, admin_port, "");
        gw.wait_alive();
        gw
    }

    /// Starts the process without waiting for it to listen.
    pub fn spawn(yaml: &str) -> Self {
        Self::spawn_on(yaml, free_port(), free_port(), "")
    }

    fn spawn_on(yaml: &str, port: u16, admin_port: u16, server_extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let access_log = dir.path().join("access.log");
        let mut text = String::new();
        let has = |section: &str| yaml.lines().any(|l| l.starts_with(&format!("{section}:")));
        if !has("listen") {
            text +=
                &format!("listen:\n  proxy: 127.0.0.1:{port}\n  admin: 127.0.0.1:{admin_port}\n");
        }
        if !has("server") {
            text += &format!(
                "server:\n  threads: 1\n  pid_file: {0}/gw.pid\n  upgrade_sock: {0}/upgrade.sock\n",
                dir.path().display()
            );
            // Test defaults, unless the test sets them.
            for (key, value) in [("grace_period", "1s"), ("graceful_shutdown_timeout", "1s")] {
                if !server_extra.contains(&format!("  {key}:")) {
                    text += &format!("  {key}: {value}\n");
                }
            }
            text += server_extra;
        }
        if !has("access_log") {
            text += &format!("access_log:\n  destination: {}\n", access_log.display());
        }
        let prefix = text.clone();
        text += yaml;
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, text).expect("write config");
        let child = Command::new(gateway_bin())
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "warn,gateway=info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file"),
            ))
            .spawn()
            .expect("spawn gateway");
        Gateway {
            child: Some(child),
            port,
            admin_port,
            dir,
            config_path,
            access_log,
            prefix,
        }
    }

    /// Rewrites the config file with `yaml` behind the same harness sections, sends
    /// SIGHUP, and waits until `gateway_config_reloads_total` counts one more reload.
    pub fn reload(&self, yaml: &str) {
        let count = |gw: &Self| -> f64 {
            ["applied", "invalid", "refused"]
                .iter()
                .map(|r| gw.metric(&format!("gateway_config_reloads_total{{result=\"{r}\"}}")))
                .sum()
        };
        let before = count(self);
        std::fs::write(&self.config_path, format!("{}{yaml}", self.prefix)).expect("write config");
        self.signal("HUP");
        wait_for("the reload to finish", Duration::from_secs(10), || {
            (count(self) > before).then_some(())
        });
    }

    /// Waits until both listeners answer.
    pub fn wait_alive(&self) {
        wait_for("gateway to listen", Duration::from_secs(15), || {
            let ok = TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok();
            ok.then_some(())
        });
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self, path: &str) -> Resp {
        get(&format!("http://127.0.0.1:{}{path}", self.admin_port), &[])
    }

    /// One sample of a metric by its exact series text (e.g. `gateway_requests_total{route="a",status="200"}`).
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.admin("/metrics").body;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// The sum of every series of metric `name` that has all of these `label="value"` pairs.
    pub fn metric_sum(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self.admin("/metrics").body;
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix('{')?;
                let (set, value) = rest.split_once("} ")?;
                labels
                    .iter()
                    .all(|want| set.split(',').any(|have| have == *want))
                    .then(|| value.trim().parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The access-log lines written so far, parsed.
    pub fn access_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` (e.g. "TERM", "HUP") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits for the process to exit (at most `timeout`) and returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("gateway to exit", timeout, || {
            child.try_wait().ok().flatten()
        });
        self.child = None;
        status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` (e.g. "TERM") and waits for the exit; returns the time it took and
    /// the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> (Duration, std::process::ExitStatus) {
        let started = Instant::now();
        self.signal(signal);
        let status = self.wait_exit(timeout);
        (started.elapsed(), status)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/install-deps.sh)");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || {
                Self::command_on(port, "PING")
                    .filter(|r| r.starts_with("+PONG"))
                    .map(drop)
            },
        );
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn command_on(port: u16, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = s.read(&mut buf).ok()?;
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            // A bulk string: "$<len>\r\n<data>\r\n"; anything else is one line.
            let complete = match text.strip_prefix('$') {
                Some(rest) => rest
                    .split_once("\r\n")
                    .and_then(|(len, data)| len.parse::<usize>().ok().map(|l| data.len() >= l + 2))
                    .unwrap_or(false),
                None => text.ends_with("\r\n"),
            };
            if n == 0 || complete {
                return Some(text.to_string());
            }
        }
    }

    /// An inline command's raw reply.
    pub fn command(&self, cmd: &str) -> String {
        Self::command_on(self.port, cmd).unwrap_or_default()
    }

    /// How many times `cmd` (e.g. "evalsha") has run, from INFO commandstats.
    pub fn calls(&self, cmd: &str) -> u64 {
        let info = self.command("INFO commandstats");
        let prefix = format!("cmdstat_{cmd}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
