//! Wires a Pingora `Server` and its services (proxy, admin, health checks) from a [`Config`].

use crate::config::{Config, LogDestination};
use crate::dashboard::{Dashboard, Sampler};
use crate::drain::Drain;
use crate::observability::{AccessLog, Admin, Metrics};
use crate::proxy::{BareProxy, Gateway, Snapshot};
use crate::ratelimit::ceil_secs;
use crate::reload::Reloader;
use crate::routing::{describe_unresolved, resolve_backends, ResolveError};
use crate::server::{Connections, Limits, Signals};
use arc_swap::ArcSwap;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignalWatch, UnixShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why the server could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}", describe_unresolved(.0, "\n"))]
    Resolve(Vec<ResolveError>),
    #[error("listen.{which}: cannot listen on {addr}: {source}")]
    Listen {
        which: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("access_log.destination: cannot open {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Runtime(std::io::Error),
}

/// How to run, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take over the listening sockets of a running gateway (zero-downtime upgrade).
    pub upgrade: bool,
    /// Run a featureless pass-through proxy to the first route's first backend (for load tests).
    pub bare: bool,
    /// The config file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
}

/// Pingora's server settings from ours. `drained`: our [`Signals`] drain the proxy and
/// exit the process themselves, so Pingora's grace period (after which it drops every
/// task) is only a backstop, set past our own deadline.
pub fn server_conf(config: &Config, drained: bool) -> ServerConf {
    let s = &config.server;
    let grace = if drained {
        ceil_secs(s.grace_period + s.graceful_shutdown_timeout) + 1
    } else {
        ceil_secs(s.grace_period)
    };
    ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(ceil_secs(s.graceful_shutdown_timeout)),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        ..ServerConf::default()
    }
}

/// Pingora's read buffer in front of each client socket: none. Its default, 64 KiB
/// zero-filled by tokio's `BufReader` at every accept, is made for TLS's 16 KiB records;
/// on plain HTTP the request header and body are read into buffers of their own anyway,
/// so it only cost 64 KiB of memory per idle keep-alive client (74 KiB per connection
/// against nginx's 0.5, `loadtest/idle.sh`) and a 64 KiB memset per connection.
const CLIENT_READ_BUFFER: usize = 0;

/// Fails early, with a clear message, when a listen address is taken.
fn check_listen(which: &'static str, addr: SocketAddr) -> Result<(), BuildError> {
    if addr.port() == 0 {
        return Ok(());
    }
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| BuildError::Listen {
            which,
            addr,
            source,
        })
}

/// A built server and the signal handling it runs with.
pub struct App {
    pub server: Server,
    pub signals: Box<dyn ShutdownSignalWatch>,
}

impl App {
    /// Runs until a signal ends it. Returns when Pingora's shutdown has finished; a
    /// draining SIGTERM usually exits the process before that.
    pub fn run(self) {
        self.server.run(RunArgs {
            shutdown_signal: self.signals,
        });
    }
}

/// Builds the server with all its services, ready to [`App::run`].
pub fn build(config: &Config, options: &RunOptions) -> Result<App, BuildError> {
    let addrs = resolve_backends(config).map_err(BuildError::Resolve)?;
    if !options.upgrade {
        check_listen("proxy", config.listen.proxy)?;
        check_listen("admin", config.listen.admin)?;
    }
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    // The --bare baseline stays plain Pingora: its own signals and connection loop.
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(config, !options.bare));
    server.bootstrap();
    if options.bare {
        return Ok(bare(server, config, &addrs));
    }

    let metrics = Arc::new(Metrics::new()?);
    metrics.error_reasons(&crate::proxy::Failure::LABELS);
    let state = first_snapshot(&mut server, config, &addrs, &metrics)?;
    if let Some(path) = &options.config_path {
        if let Ok(bytes) = std::fs::read(path) {
            metrics.set_config_hash(&crate::reload::file_hash(&bytes));
        }
    }
    // The pools' health checks run in the reload service, which starts and stops them as
    // reloads add and drop pools.
    server.add_service(background_service(
        "config reload and health checks",
        Reloader {
            path: options.config_path.clone().unwrap_or_default(),
            current: Mutex::new(config.clone()),
            state: state.clone(),
            metrics: metrics.clone(),
        },
    ));
    let access_log = open_access_log(config, &metrics)?;
    let jwks_state = state.clone();
    server.add_service(background_service(
        "jwks reload",
        crate::auth::JwksReload {
            current: Box::new(move || jwks_state.load().auth.clone()),
        },
    ));

    let drain = Arc::new(Drain::new());
    let dashboard = Arc::new(Dashboard::new(options.config_path.clone()));
    let redis_state = state.clone();
    server.add_service(background_service(
        "dashboard sampler",
        Sampler {
            dashboard: dashboard.clone(),
            metrics: metrics.clone(),
            redis: Box::new(move || redis_state.load().limiter.redis_config().cloned()),
        },
    ));
    let admin = admin(config, &metrics, &state, &drain, &dashboard);
    let gateway = Gateway {
        state,
        metrics: metrics.clone(),
        access_log,
        upstream_idle_timeout: config.server.upstream_idle_timeout,
        drain: drain.clone(),
        dashboard,
    };
    add_listeners(&mut server, config, gateway, admin, &drain, metrics);
    let signals = Signals::new(
        drain,
        config.server.grace_period,
        config.server.graceful_shutdown_timeout,
    );
    Ok(App {
        server,
        signals: Box::new(signals),
    })
}

/// The featureless pass-through of `--bare`, to the first route's first backend.
fn bare(mut server: Server, config: &Config, addrs: &[Vec<SocketAddr>]) -> App {
    let backend = config
        .routes
        .first()
        .and_then(|r| addrs.get(r.pool.0))
        .and_then(|a| a.first())
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 80)));
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        BareProxy { backend },
        "bare proxy",
    );
    proxy.add_tcp(&config.listen.proxy.to_string());
    server.add_service(proxy);
    App {
        server,
        signals: Box::new(UnixShutdownSignalWatch),
    }
}

/// The snapshot of the config at start-up, with its limiter's service added to `server`
/// and every pool's backend list built, so requests can be served before the health
/// checks have run once.
fn first_snapshot(
    server: &mut Server,
    config: &Config,
    addrs: &[Vec<SocketAddr>],
    metrics: &Arc<Metrics>,
) -> Result<Arc<ArcSwap<Snapshot>>, BuildError> {
    let snapshot = Snapshot::build(config, addrs, metrics, None);
    // A reload that changes the policies starts the new limiter's service itself.
    server.add_service(background_service(
        "rate-limit sync",
        snapshot.limiter.service(),
    ));
    if !config.rate_limits.policies.is_empty() && !snapshot.limiter.is_distributed() {
        // The default config is meant to run alone: news, not a warning.
        log::info!(
            "rate limiting: no rate_limits.redis section, limits are enforced by this instance alone"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BuildError::Runtime)?;
    rt.block_on(async {
        for p in &snapshot.pools {
            p.prime().await;
        }
    });
    Ok(Arc::new(ArcSwap::from_pointee(snapshot)))
}

/// The access-log writer, when the config has a destination.
fn open_access_log(config: &Config, metrics: &Metrics) -> Result<Option<AccessLog>, BuildError> {
    let Some(dest) = &config.access_log.destination else {
        return Ok(None);
    };
    AccessLog::start(
        dest,
        config.access_log.buffer_lines,
        metrics.access_log_dropped.clone(),
    )
    .map(Some)
    .map_err(|source| BuildError::AccessLog {
        path: match dest {
            LogDestination::Stdout => "stdout".into(),
            LogDestination::File(p) => p.display().to_string(),
        },
        source,
    })
}

/// The admin endpoints, reading pool health from the snapshot in force; the token is the
/// one of the config at start (a change needs a restart, like the listeners).
fn admin(
    config: &Config,
    metrics: &Arc<Metrics>,
    state: &Arc<ArcSwap<Snapshot>>,
    drain: &Arc<Drain>,
    dashboard: &Arc<Dashboard>,
) -> Admin {
    let stats = {
        let (state, metrics, dashboard) = (state.clone(), metrics.clone(), dashboard.clone());
        move || {
            let snap = state.load();
            let stats = dashboard.stats(&snap.pools, &snap.limiter, &metrics);
            serde_json::to_vec(&stats).unwrap_or_default()
        }
    };
    let state = state.clone();
    Admin {
        stats: Box::new(stats),
        token: config.admin.token.clone(),
        metrics: metrics.clone(),
        pools_not_ready: Box::new(move || {
            state
                .load()
                .pools
                .iter()
                .filter_map(|p| p.health.not_ready_reason())
                .collect()
        }),
        drain: drain.clone(),
    }
}

/// The proxy listener, inside our connection loop (header deadlines, idle timeout, cap),
/// and the admin listener on one thread.
fn add_listeners(
    server: &mut Server,
    config: &Config,
    gateway: Gateway,
    admin: Admin,
    drain: &Arc<Drain>,
    metrics: Arc<Metrics>,
) {
    let connections = Connections::new(
        pingora::proxy::http_proxy(&server.configuration, gateway),
        Limits::from_config(&config.server),
        drain.clone(),
        metrics,
        config.correlation.header.clone(),
    );
    let mut proxy = Service::new("proxy".to_string(), connections);
    proxy.add_listener(
        ListenerConfig::tcp(config.listen.proxy.to_string())
            .l4_buffer(L4BufferSettings::default().read(CLIENT_READ_BUFFER)),
    );
    server.add_service(proxy);

    let mut admin = Service::new("admin".to_string(), admin);
    admin.add_tcp(&config.listen.admin.to_string());
    admin.threads = Some(1);
    server.add_service(admin);
}
