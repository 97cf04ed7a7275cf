//! The proxy listener's connection loop: a deadline on every request header, an idle
//! timeout between keep-alive requests, a cap on open connections, and the in-flight
//! count that draining waits for. Everything after the request header is Pingora's.
//!
//! Why our own loop: Pingora 0.9 times each `read()` of a request header on its own
//! (60 s on a new connection, none at all on a reused one), so a client that sends one
//! byte every few seconds holds a connection and its ~90 KB forever. Here the header is
//! read into a buffer with one deadline for the whole of it, then handed to Pingora as a
//! "pipelined prefix": Pingora parses it from there without reading again.
//!
//! ```text
//! accept ─► cap (max_connections) ─► [h2 / ALPN: Pingora's own loop]
//!   ┌─► wait for the first byte  (new: client_header_timeout, reused: keepalive_timeout,
//!   │                             an idle reused connection also ends when draining starts)
//!   │   read up to the empty line (the whole header by the deadline, at most max_header_bytes)
//!   │   -> 408 / 431 JSON and close, or Pingora's session with the bytes as its prefix
//!   └── Pingora: hooks, upstream, response; a reusable connection comes back here
//! ```

use crate::correlation;
use crate::drain::Drain;
use crate::observability::{ConnClose, Metrics, RouteLabel};
use crate::proxy::Reply;
use async_trait::async_trait;
use bytes::BytesMut;
use http::HeaderName;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora_timeout::timeout;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

/// The first allocation for a request header: Pingora's own initial size.
const HEADER_BUF: usize = 4096;
/// How long writing a 408 or 431 to a client may take before it is dropped unanswered.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// The connection settings of the `server` section.
#[derive(Debug, Clone)]
pub struct Limits {
    pub client_header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
}

impl Limits {
    pub fn from_config(s: &crate::config::ServerSettings) -> Self {
        Self {
            client_header_timeout: s.client_header_timeout,
            keepalive_timeout: s.keepalive_timeout,
            max_connections: s.max_connections,
            max_header_bytes: s.max_header_bytes,
        }
    }
}

/// A Pingora `ServerApp` that runs HTTP/1 connections for the HTTP app `A` (the proxy).
pub struct Connections<A> {
    app: Arc<A>,
    limits: Limits,
    drain: Arc<Drain>,
    metrics: Arc<Metrics>,
    /// The request-id header a 408 or 431 carries.
    id_header: HeaderName,
    /// Open connections, for the cap (the gauge in `metrics` mirrors it).
    open: AtomicUsize,
}

impl<A: HttpServerApp + Send + Sync + 'static> Connections<A> {
    pub fn new(
        app: A,
        limits: Limits,
        drain: Arc<Drain>,
        metrics: Arc<Metrics>,
        id_header: HeaderName,
    ) -> Self {
        Self {
            app: Arc::new(app),
            limits,
            drain,
            metrics,
            id_header,
            open: AtomicUsize::new(0),
        }
    }

    /// Counts the connection in, or `None` when `max_connections` are already open.
    fn admit(&self) -> Option<OpenConnection<'_, A>> {
        // Relaxed: a counter; the bound holds because every increment is checked.
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.metrics.downstream_connection(1);
        Some(OpenConnection(self))
    }

    /// HTTP/2 (h2c or ALPN) and custom protocols keep Pingora's own loop.
    fn is_http1(&self, stream: &Stream) -> bool {
        let h2c = self
            .app
            .server_options()
            .is_some_and(|o| o.h2c || o.force_custom);
        !h2c && !matches!(
            stream.selected_alpn_proto(),
            Some(ALPN::H2) | Some(ALPN::Custom(_))
        )
    }

    /// Serves requests on one HTTP/1 connection until it closes.
    async fn serve_http1(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let accepted = Instant::now();
        let mut drain = self.drain.watch();
        // What the previous request of this connection leaves to the next (keep-alive count).
        let mut previous: Option<Option<HttpPersistentSettings>> = None;
        loop {
            let reused = previous.is_some();
            if reused && self.drain.is_draining() {
                self.metrics.downstream_closed(ConnClose::Drain);
                return;
            }
            let buf = match self
                .read_head(&mut stream, reused, accepted, &mut drain)
                .await
            {
                Head::Complete(buf) => buf,
                Head::Closed => return,
                Head::Dropped(why) => {
                    self.metrics.downstream_closed(why);
                    return;
                }
                Head::Refused(reply, why) => {
                    self.metrics.downstream_closed(why);
                    self.refuse(&mut stream, &reply, accepted).await;
                    return;
                }
            };
            // In flight from a complete header to the end of the response: what draining
            // waits for. A half-sent header is not counted (a slow client cannot hold it).
            let in_flight = self.drain.request();
            let mut session = ServerSession::new_http1(stream);
            match previous.take().flatten() {
                // This gateway never enables Pingora's pipelining, so the settings carry no
                // prefix bytes of their own to clash with ours.
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive_reuses_remaining(
                    self.app
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                ),
            }
            // Pingora's parser finds a whole header in the prefix and does not read. Should it
            // ever want more, its reads are then timed like a header read, not left unbounded
            // (Pingora replaces this value with the request's keep-alive once parsed).
            session.set_keepalive(Some(whole_seconds(self.limits.client_header_timeout)));
            session.set_pipelined_prefix(buf);
            let reusable = self.app.process_new_http(session, shutdown).await;
            drop(in_flight);
            let Some(reusable) = reusable else { return };
            let (next, settings) = reusable.consume();
            stream = next;
            previous = Some(settings);
        }
    }

    /// Reads one request header, up to and including its empty line (plus whatever else
    /// the same reads brought: body bytes, which Pingora takes from the buffer).
    ///
    /// Bounds: the first byte within `keepalive_timeout` (reused connection) or
    /// `client_header_timeout` of the accept (new connection); the whole header within
    /// `client_header_timeout` of the accept (new) or of the first byte (reused); at most
    /// `max_header_bytes` of header, and a buffer of at most twice that plus one read.
    /// Cost: one read and one timer when the header arrives in one piece, as in Pingora.
    async fn read_head(
        &self,
        stream: &mut Stream,
        reused: bool,
        accepted: Instant,
        drain: &mut watch::Receiver<bool>,
    ) -> Head {
        let limits = &self.limits;
        let (first_wait, mut deadline) = if reused {
            (limits.keepalive_timeout, None)
        } else {
            let deadline = accepted + limits.client_header_timeout;
            (
                deadline.saturating_duration_since(Instant::now()),
                Some(deadline),
            )
        };
        // An idle keep-alive connection is closed when draining starts; a new one is served
        // (with `Connection: close`): the listener is still open during the grace period.
        let first = tokio::select! {
            biased;
            read = timeout(first_wait, first_bytes(stream)) => read,
            _ = drain.changed(), if reused => return Head::Dropped(ConnClose::Drain),
        };
        let mut buf = match first {
            Err(_) if reused => return Head::Dropped(ConnClose::IdleTimeout),
            // A new connection that sent nothing: closed without an answer (nginx does the same).
            Err(_) => return Head::Dropped(ConnClose::HeaderTimeout),
            Ok(Err(_)) => return Head::Closed,
            Ok(Ok(buf)) if buf.is_empty() => return Head::Closed,
            Ok(Ok(buf)) => buf,
        };
        let max = limits.max_header_bytes;
        let mut scanned = 0;
        loop {
            match header_end(&buf, scanned) {
                Some(end) if end > max => {
                    return Head::Refused(Reply::HeaderTooLarge, ConnClose::HeaderTooLarge)
                }
                Some(_) => return Head::Complete(buf),
                None if buf.len() > max => {
                    return Head::Refused(Reply::HeaderTooLarge, ConnClose::HeaderTooLarge)
                }
                None => scanned = buf.len(),
            }
            // Only a header split over several reads pays for reading the clock here.
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + limits.client_header_timeout);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Head::Refused(Reply::HeaderTimeout, ConnClose::HeaderTimeout);
            }
            if buf.len() == buf.capacity() {
                // Doubling, so a large header costs few reads; `max + 1` bytes are enough
                // to know it is too large (here `buf.len() <= max`).
                buf.reserve(buf.len().min(max + 1 - buf.len()).max(HEADER_BUF));
            }
            match timeout(left, stream.read_buf(&mut buf)).await {
                Err(_) => return Head::Refused(Reply::HeaderTimeout, ConnClose::HeaderTimeout),
                Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Answers `reply` (408 or 431) as JSON with a fresh request id, then closes.
    async fn refuse(&self, stream: &mut Stream, reply: &Reply, accepted: Instant) {
        let id = correlation::MintedId::mint().to_string();
        let body = reply.body(&id);
        let status = reply.status();
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}: {id}\r\nconnection: close\r\n\r\n",
            body.len(),
            self.id_header
        );
        let write = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        if let Ok(Err(e)) = timeout(REFUSAL_WRITE, write).await {
            log::debug!("request_id={id} cannot send {status}: {e}");
        }
        self.metrics.observe_request(
            self.metrics.route(RouteLabel::Unrouted, &[]),
            status,
            accepted.elapsed().as_secs_f64(),
        );
    }
}

/// Waits for a request's first bytes without holding a buffer meanwhile, so that an idle
/// keep-alive connection costs no header buffer (it was 4 KiB of the ~10 KiB per idle
/// client). The bytes are read into scratch space on the stack of the poll that finds
/// them, then copied into a buffer of Pingora's usual size. Empty: the client closed.
async fn first_bytes(stream: &mut Stream) -> std::io::Result<BytesMut> {
    std::future::poll_fn(|cx| {
        let mut scratch = [MaybeUninit::<u8>::uninit(); HEADER_BUF];
        let mut read = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        let mut buf = BytesMut::with_capacity(HEADER_BUF);
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(buf))
    })
    .await
}

/// What reading a request header came to.
enum Head {
    /// A whole header, maybe followed by body bytes.
    Complete(BytesMut),
    /// The client closed the connection, or reading failed: nobody to answer.
    Closed,
    /// Closed by us without an answer.
    Dropped(ConnClose),
    /// Answered with this reply, then closed.
    Refused(Reply, ConnClose),
}

/// One open connection; dropping it releases its place under the cap.
struct OpenConnection<'a, A>(&'a Connections<A>);

impl<A> Drop for OpenConnection<'_, A> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.downstream_connection(-1);
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Connections<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_open) = self.admit() else {
            // Dropping the stream closes it: nothing read, nothing answered.
            self.metrics.downstream_refused();
            return None;
        };
        if !self.is_http1(&stream) {
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        // Every request of the connection is served here; nothing is handed back to
        // Pingora's accept loop.
        self.serve_http1(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        // Pingora calls this once the listener stopped accepting.
        self.drain.listener_closed();
        self.app.http_cleanup().await;
    }
}

/// `d` in whole seconds, at least 1 (Pingora's keep-alive setting; 0 would mean "forever").
fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The length of the request header at the start of `buf`, up to and including the empty
/// line that ends it, or `None` while that line has not arrived. Like httparse, a line may
/// end in CRLF or a bare LF, and empty lines before the request line are skipped.
/// `scanned`: how many bytes an earlier call already searched.
fn header_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    // A terminator can straddle two reads: look back two bytes.
    let from = scanned.saturating_sub(2).max(start);
    let rest = buf.get(from..)?;
    for i in memchr::memchr_iter(b'\n', rest) {
        let at = from + i;
        match (buf.get(at + 1), buf.get(at + 2)) {
            (Some(b'\n'), _) => return Some(at + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(at + 3),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::header_end;

    #[test]
    fn finds_the_empty_line_in_every_spelling() {
        assert_eq!(
            header_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
            Some(27)
        );
        assert_eq!(header_end(b"GET / HTTP/1.1\nHost: a\n\nbody", 0), Some(24));
        assert_eq!(header_end(b"GET / HTTP/1.1\r\nHost: a\r\n\nx", 0), Some(26));
        assert_eq!(header_end(b"GET / HTTP/1.1\nHost: a\n\r\n", 0), Some(25));
        assert_eq!(header_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(header_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
    }

    #[test]
    fn skips_empty_lines_before_the_request_line() {
        assert_eq!(header_end(b"\r\n\r\n", 0), None);
        assert_eq!(header_end(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0), Some(22));
    }

    #[test]
    fn finds_a_terminator_split_across_reads() {
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 1..full.len() {
            assert_eq!(header_end(&full[..cut], 0), None, "cut at {cut}");
            assert_eq!(header_end(full, cut), Some(full.len()), "cut at {cut}");
        }
    }
}
