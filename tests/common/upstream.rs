//! A real HTTP/1.1 upstream for tests: echoes what it received as JSON, can answer a chosen
//! status or delay, counts connections and requests, and can be stopped and restarted on its port.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the upstream does; tests change it while it runs.
#[derive(Default)]
pub struct Behaviour {
    /// Status for non-health requests (0 = 200).
    pub status: AtomicU16,
    /// Status for `GET /healthz` (0 = 200).
    pub health_status: AtomicU16,
    /// Delay before answering non-health requests, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Requests other than `/healthz`.
    pub requests: AtomicUsize,
    /// Headers of the last non-health request.
    pub last_headers: Mutex<BTreeMap<String, String>>,
}

pub struct Upstream {
    pub name: String,
    pub port: u16,
    pub behaviour: Arc<Behaviour>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream named `name` on a free port.
    pub fn start(name: &str) -> Self {
        Self::start_on(name, super::free_port(), Arc::new(Behaviour::default()))
    }

    fn start_on(name: &str, port: u16, behaviour: Arc<Behaviour>) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let b = behaviour.clone();
        let label = name.to_string();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut stop = rx;
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            b.connections.fetch_add(1, Ordering::SeqCst);
                            let b = b.clone();
                            let label = label.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| handle(req, b.clone(), label.clone()));
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
            // Dropping the runtime here drops every connection task: clients see the close.
        });
        // Retry briefly: a restart may race the old socket's release.
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            other => panic!("upstream {name} cannot listen on {port}: {other:?}"),
        }
        Upstream {
            name: name.to_string(),
            port,
            behaviour,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> usize {
        self.behaviour.requests.load(Ordering::SeqCst)
    }

    pub fn set_status(&self, status: u16) {
        self.behaviour.status.store(status, Ordering::SeqCst);
    }

    pub fn set_health_status(&self, status: u16) {
        self.behaviour.health_status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.behaviour
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops listening and closes every open connection.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Starts again on the same port with the same behaviour and counters.
    pub fn restart(&mut self) {
        self.stop();
        let again = Self::start_on(&self.name, self.port, self.behaviour.clone());
        *self = again;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    b: Arc<Behaviour>,
    name: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        let status = match b.health_status.load(Ordering::SeqCst) {
            0 => 200,
            s => s,
        };
        return Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"health")))
            .unwrap_or_default());
    }
    b.requests.fetch_add(1, Ordering::SeqCst);
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).to_string(),
            )
        })
        .collect();
    *b.last_headers.lock().unwrap_or_else(|e| e.into_inner()) = headers.clone();
    let delay = b.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = match b.status.load(Ordering::SeqCst) {
        0 => 200,
        s => s,
    };
    let body = serde_json::json!({
        "upstream": name,
        "method": req.method().as_str(),
        "path": path,
        "uri": req.uri().to_string(),
        "headers": headers,
    });
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-request-id", "upstream-should-be-overridden")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default())
}

/// A broken backend: accepts, reads each request header, and closes the connection without
/// answering (a process dying mid-request). Counts the requests it swallowed.
pub struct HangUp {
    pub port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HangUp {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            use std::io::Read;
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !head.is_empty() {
                    r.fetch_add(1, Ordering::SeqCst);
                }
                // Dropping `conn` closes it: no response.
            }
        });
        HangUp {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HangUp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
