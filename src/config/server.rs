//! The `listen` and `server` sections: listeners, worker threads, shutdown and the
//! limits on client connections, with their ranges.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub threads: usize,
    pub work_stealing: bool,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub upstream_keepalive_pool: usize,
    /// How long an idle upstream connection stays pooled; `None`: until the upstream closes it.
    pub upstream_idle_timeout: Option<Duration>,
    pub pid_file: String,
    pub upgrade_sock: String,
    /// A client must send a whole request header within this time: 408, or a silent close
    /// if it sent nothing.
    pub client_header_timeout: Duration,
    /// How long a keep-alive client connection may sit idle between two requests.
    pub keepalive_timeout: Duration,
    /// Client connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// The largest request header accepted (request line and headers); larger is 431.
    pub max_header_bytes: usize,
}

// Ranges of the `server` section.
const THREADS: Range<usize> = Range::new(1, 1024);
const GRACE_PERIOD: Range<Duration> = Range::new(Duration::ZERO, HOUR);
const GRACEFUL_SHUTDOWN_TIMEOUT: Range<Duration> = Range::new(Duration::ZERO, HOUR);
/// Idle connections kept per worker thread.
const UPSTREAM_KEEPALIVE_POOL: Range<usize> = Range::new(0, 65_536);
const UPSTREAM_IDLE_TIMEOUT: Range<Duration> = TIMEOUT;
const CLIENT_HEADER_TIMEOUT: Range<Duration> =
    Range::new(Duration::from_millis(100), Duration::from_secs(600));
const KEEPALIVE_TIMEOUT: Range<Duration> = Range::new(Duration::from_millis(100), HOUR);
const MAX_CONNECTIONS: Range<usize> = Range::new(1, 1_000_000);
/// Keeps the header buffer (plus one read) under Pingora's own 1 MiB cap.
const MAX_HEADER_BYTES: Range<usize> = Range::new(1024, 512 * 1024);

impl Validator<'_> {
    pub(super) fn listen_addr(&mut self, at: &str, s: &str) -> SocketAddr {
        match s.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    at,
                    format!("\"{s}\" is not an IP address and port, e.g. \"0.0.0.0:8000\""),
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        }
    }

    pub(super) fn server(&mut self, s: raw::Server) -> ServerSettings {
        let at = |key: &str| format!("server.{key}");
        ServerSettings {
            threads: self.int(&at("threads"), s.threads, THREADS),
            work_stealing: s.work_stealing,
            grace_period: self.duration(&at("grace_period"), s.grace_period.0, GRACE_PERIOD),
            graceful_shutdown_timeout: self.duration(
                &at("graceful_shutdown_timeout"),
                s.graceful_shutdown_timeout.0,
                GRACEFUL_SHUTDOWN_TIMEOUT,
            ),
            upstream_keepalive_pool: self.int(
                &at("upstream_keepalive_pool"),
                s.upstream_keepalive_pool,
                UPSTREAM_KEEPALIVE_POOL,
            ),
            upstream_idle_timeout: s
                .upstream_idle_timeout
                .map(|d| self.duration(&at("upstream_idle_timeout"), d.0, UPSTREAM_IDLE_TIMEOUT)),
            pid_file: s.pid_file,
            upgrade_sock: s.upgrade_sock,
            client_header_timeout: self.duration(
                &at("client_header_timeout"),
                s.client_header_timeout.0,
                CLIENT_HEADER_TIMEOUT,
            ),
            keepalive_timeout: self.duration(
                &at("keepalive_timeout"),
                s.keepalive_timeout.0,
                KEEPALIVE_TIMEOUT,
            ),
            max_connections: self.int(&at("max_connections"), s.max_connections, MAX_CONNECTIONS),
            max_header_bytes: self.int(
                &at("max_header_bytes"),
                s.max_header_bytes,
                MAX_HEADER_BYTES,
            ),
        }
    }
}

/// The section as written: serde structs that reject unknown keys, and the one home of
/// every default of the section (validation checks ranges and never invents a value).
pub(super) mod raw {
    use super::super::values::{HumanDuration, Int};
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Listen {
        pub proxy: String,
        pub admin: String,
    }

    impl Default for Listen {
        fn default() -> Self {
            Self {
                proxy: "0.0.0.0:8000".into(),
                admin: "127.0.0.1:9100".into(),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Server {
        pub threads: Int,
        pub work_stealing: bool,
        pub grace_period: HumanDuration,
        pub graceful_shutdown_timeout: HumanDuration,
        pub upstream_keepalive_pool: Int,
        pub upstream_idle_timeout: Option<HumanDuration>,
        pub pid_file: String,
        pub upgrade_sock: String,
        pub client_header_timeout: HumanDuration,
        pub keepalive_timeout: HumanDuration,
        pub max_connections: Int,
        pub max_header_bytes: Int,
    }

    impl Default for Server {
        fn default() -> Self {
            Self {
                threads: Int(2),
                work_stealing: false,
                grace_period: HumanDuration(Duration::from_secs(1)),
                graceful_shutdown_timeout: HumanDuration(Duration::from_secs(2)),
                upstream_keepalive_pool: Int(256),
                upstream_idle_timeout: None,
                pid_file: "/tmp/gateway.pid".into(),
                upgrade_sock: "/tmp/gateway_upgrade.sock".into(),
                client_header_timeout: HumanDuration(Duration::from_secs(10)),
                keepalive_timeout: HumanDuration(Duration::from_secs(60)),
                max_connections: Int(10_000),
                max_header_bytes: Int(64 * 1024),
            }
        }
    }
}
