//! A TCP relay that delays every byte by a fixed one-way time in each direction: a Redis
//! "in another zone" for the limiter's latency tests. Order is kept; throughput is not
//! limited. The link can be cut (every connection closed, new ones refused) and healed.
//! Stops accepting when dropped (open connections end with the test process).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct DelayRelay {
    pub port: u16,
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
}

impl DelayRelay {
    /// Relays 127.0.0.1:<port> to `target`, `one_way` late in each direction.
    pub fn start(target: String, one_way: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let (stopped, is_cut) = (stop.clone(), cut.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                if is_cut.load(Ordering::Relaxed) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pipe(&client, &server, one_way, is_cut.clone());
                pipe(&server, &client, one_way, is_cut.clone());
            }
        });
        Self { port, stop, cut }
    }

    /// Closes every relayed connection and refuses new ones until [`DelayRelay::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; both ends are
/// shut down once the link is cut.
fn pipe(from: &TcpStream, to: &TcpStream, delay: Duration, cut: Arc<AtomicBool>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (Ok(watched_from), Ok(watched_to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        while !cut.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = watched_from.shutdown(Shutdown::Both);
        let _ = watched_to.shutdown(Shutdown::Both);
    });
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0
                || tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
