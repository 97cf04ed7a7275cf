//! The access log: one JSON object per request, formatted on the request path and written
//! by a dedicated thread, so no request ever waits on a disk or a pipe.

use crate::config::LogDestination;
use prometheus::IntCounter;
use serde::Serialize;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{SystemTime, UNIX_EPOCH};

/// One request, as logged. Borrowed fields: building a record allocates nothing.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub time: &'a str,
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub trace_id: &'a str,
    pub client_ip: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    pub route: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<&'a str>,
    pub bytes_sent: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// Text that successive lines of one thread mostly repeat, formatted once and reused: the
/// upstream address (a backend serves many requests in a row) and the time down to the
/// second. Formatting either from scratch cost ~1,600 instructions per line (callgrind).
#[derive(Default)]
pub struct RepeatedText {
    upstream: Option<SocketAddr>,
    upstream_text: String,
    second: Option<u64>,
    /// `2026-12-01T02:55:12.` for `second`, then this line's milliseconds and `Z`.
    time: String,
    second_len: usize,
}

impl RepeatedText {
    /// Runs `f` with this thread's cache (the log call is synchronous: never held across
    /// an await).
    pub fn with<R>(f: impl FnOnce(&mut RepeatedText) -> R) -> R {
        thread_local! {
            static TEXT: RefCell<RepeatedText> = RefCell::new(RepeatedText::default());
        }
        TEXT.with(|t| f(&mut t.borrow_mut()))
    }

    /// `now` in RFC 3339 with milliseconds, UTC (`2026-12-01T02:55:12.345Z`), and
    /// `upstream` as text (`127.0.0.1:8080`).
    pub fn texts(&mut self, now: SystemTime, upstream: Option<SocketAddr>) -> (&str, Option<&str>) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.second != Some(since.as_secs()) {
            self.time.clear();
            let _ = write!(self.time, "{}", humantime::format_rfc3339_seconds(now));
            self.time.pop(); // the `Z`: the milliseconds come first
            self.time.push('.');
            self.second_len = self.time.len();
            self.second = Some(since.as_secs());
        }
        self.time.truncate(self.second_len);
        let _ = write!(self.time, "{:03}Z", since.subsec_millis());
        if let Some(addr) = upstream.filter(|a| self.upstream != Some(*a)) {
            self.upstream_text.clear();
            let _ = write!(self.upstream_text, "{addr}");
            self.upstream = Some(addr);
        }
        (&self.time, upstream.map(|_| self.upstream_text.as_str()))
    }
}

/// The sending side of the access log. Cheap to share; never blocks.
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Opens the destination and starts the writer thread. `capacity` lines may wait in
    /// the queue; past that, lines are dropped and counted (never a blocked request).
    pub fn start(
        destination: &LogDestination,
        capacity: usize,
        dropped: IntCounter,
    ) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match destination {
            LogDestination::Stdout => Box::new(std::io::stdout()),
            LogDestination::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel(capacity);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out))?;
        Ok(Self { tx, dropped })
    }

    /// Queues one record. Formatting is the only work done on the caller's thread.
    pub fn log(&self, record: &AccessRecord<'_>) {
        let mut line = Vec::with_capacity(320);
        if serde_json::to_writer(&mut line, record).is_err() {
            return;
        }
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// How often the writer wakes to drain the queue. Polling instead of blocking in `recv`
/// means a request never pays for waking the writer (a futex call and a context switch
/// per line on a 2-core machine); a line reaches the file at most this late.
pub const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// The writer loop: drains the queue into a buffer and flushes each batch.
fn write_lines(rx: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    loop {
        let mut wrote = false;
        let mut ok = true;
        let disconnected = loop {
            match rx.try_recv() {
                Ok(line) => {
                    ok &= out.write_all(&line).is_ok();
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if wrote {
            ok &= out.flush().is_ok();
        }
        if !ok {
            eprintln!("access log: write failed; lines are being lost");
        }
        if disconnected {
            return;
        }
        std::thread::sleep(DRAIN_INTERVAL);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn repeated_text_matches_formatting_from_scratch() {
        use super::RepeatedText;
        use std::time::{Duration, UNIX_EPOCH};
        let mut text = RepeatedText::default();
        let a: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let b: std::net::SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        // Same second twice, the next second, a jump back, milliseconds 0 and 999.
        for (ms, upstream) in [
            (1_764_556_512_345u64, Some(a)),
            (1_764_556_512_999, Some(a)),
            (1_764_556_513_000, Some(b)),
            (1_764_556_513_007, None),
            (1_700_000_000_000, Some(a)),
        ] {
            let now = UNIX_EPOCH + Duration::from_millis(ms);
            let (time, up) = text.texts(now, upstream);
            assert_eq!(time, humantime::format_rfc3339_millis(now).to_string());
            assert_eq!(up.map(str::to_owned), upstream.map(|u| u.to_string()));
        }
    }

    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn writes_json_lines_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let dropped = IntCounter::new("d", "d").unwrap();
        let log = AccessLog::start(&LogDestination::File(path.clone()), 16, dropped).unwrap();
        let rec = AccessRecord {
            time: "2026-01-01T00:00:00.000Z",
            request_id: "abc",
            trace_id: "",
            client_ip: "127.0.0.1",
            method: "GET",
            host: "example.com",
            path: "/a\"b",
            status: 200,
            duration_ms: 1.5,
            upstream: Some("127.0.0.1:3000"),
            route: "api",
            consumer: None,
            tier: None,
            bytes_sent: 12,
            error: None,
        };
        log.log(&rec);
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.ends_with('\n') || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["status"], 200);
        assert!(v.get("trace_id").is_none());
        assert!(v.get("error").is_none());
    }
}
