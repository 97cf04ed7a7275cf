//! The `gateway` binary: command line -> config::load -> app::build -> run. No logic here.

use clap::{Parser, Subcommand};
use gateway::app::{self, RunOptions};
use gateway::config;
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An API gateway on Pingora, run from one YAML file.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The config file.
    #[arg(short, long, default_value = "conf/gateway.yaml")]
    config: PathBuf,
    /// Validate FILE as start-up would (backends resolved too), print "ok" or every
    /// problem, and exit 0 or 2. `-t` as with nginx.
    #[arg(short = 't', long, value_name = "FILE", conflicts_with_all = ["bare", "upgrade"])]
    check_config: Option<PathBuf>,
    /// Take over the listening sockets of a running gateway (send it SIGQUIT).
    #[arg(short, long)]
    upgrade: bool,
    /// Featureless pass-through to the first route's first backend, to measure feature cost.
    #[arg(long)]
    bare: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the SHA-256 digest of an API key, for `auth.api_keys.keys[].sha256`.
    /// Reads the key from standard input when not given (keeps it out of shell history).
    HashKey { key: Option<String> },
    /// Print a test JWT that the config (-c) accepts, signed with its HMAC key: to try
    /// authenticated routes and tiers, e.g.
    /// `curl -H "Authorization: Bearer $(gateway -c conf/auth.yaml token --tier premium)"`.
    Token {
        /// The subject (the consumer).
        #[arg(long, default_value = "test-user")]
        sub: String,
        /// A tier name: the issuer's tier claim is set to a value that maps to it.
        #[arg(long)]
        tier: Option<String>,
        /// How long the token is valid.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Which issuer (its `issuer` value); the first with an HMAC key by default.
        #[arg(long)]
        issuer: Option<String>,
        /// More claims, NAME=VALUE (repeatable).
        #[arg(long = "claim", value_name = "NAME=VALUE")]
        claims: Vec<String>,
    },
}

/// Replaces SIGHUP's default action (terminate) before anything else runs: tokio's handler
/// is process-wide and stays installed after this runtime is gone, and the reload service
/// listens on it later. A HUP during start-up, a `-u` hand-over or `--bare` is then
/// ignored instead of killing the process.
fn handle_sighup_from_now_on() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        if let Err(e) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            eprintln!("cannot handle SIGHUP: {e}");
        }
    });
}

/// Loads the config, printing every problem (and, for a missing file at a relative
/// path, what to pass instead).
fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("{e}");
        if let config::ConfigError::Read { source, .. } = &e {
            if source.kind() == std::io::ErrorKind::NotFound && path.is_relative() {
                let cwd = std::env::current_dir().unwrap_or_default();
                eprintln!(
                    "(relative to the current directory {}: give the config's full path)",
                    cwd.display()
                );
            }
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Exit code for a bad config or command line.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    handle_sighup_from_now_on();
    let cli = Cli::parse();
    gateway::observability::logger::Logger::install("warn,gateway=info");

    if let Some(Command::HashKey { key }) = &cli.command {
        let key = match key {
            Some(k) => k.clone(),
            None => {
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line).is_err() {
                    eprintln!("cannot read the key from standard input");
                    return ExitCode::from(EXIT_CONFIG);
                }
                line
            }
        };
        if key.trim().is_empty() {
            eprintln!("the key is empty");
            return ExitCode::from(EXIT_CONFIG);
        }
        println!("{}", gateway::auth::hash_key(&key));
        return ExitCode::SUCCESS;
    }

    if let Some(Command::Token {
        sub,
        tier,
        ttl,
        issuer,
        claims,
    }) = &cli.command
    {
        let config = match load(&cli.config) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let mut pairs = Vec::new();
        for c in claims {
            match c.split_once('=') {
                Some((k, v)) => pairs.push((k.to_string(), v.to_string())),
                None => {
                    eprintln!("--claim {c}: write it as NAME=VALUE");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        let request = gateway::auth::TokenRequest {
            issuer: issuer.as_deref(),
            subject: sub,
            tier: tier.as_deref(),
            claims: &pairs,
            lifetime: (*ttl).into(),
            now: gateway::auth::unix_now(),
        };
        return match gateway::auth::mint(&config.auth, &request) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", cli.config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }

    if let Some(path) = &cli.check_config {
        let config = match load(path) {
            Ok(c) => c,
            Err(code) => return code,
        };
        // What start-up would also refuse: backend names that do not resolve.
        let unresolved = app::unresolvable_backends(&config);
        if unresolved.is_empty() {
            println!("ok");
            return ExitCode::SUCCESS;
        }
        eprintln!("{}: {} problem(s):", path.display(), unresolved.len());
        for problem in unresolved {
            eprintln!("  {problem}");
        }
        return ExitCode::from(EXIT_CONFIG);
    }

    let config = match load(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let options = RunOptions {
        upgrade: cli.upgrade,
        bare: cli.bare,
        config_path: Some(cli.config.clone()),
    };
    let app = match app::build(&config, &options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", cli.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.bare {
        log::info!(
            "bare proxy listening on {} (no admin listener, no features)",
            config.listen.proxy
        );
    } else {
        log::info!(
            "gateway listening on {} (admin {}), {} route(s), {} pool(s)",
            config.listen.proxy,
            config.listen.admin,
            config.routes.len(),
            config.upstreams.len()
        );
    }
    app.run();
    ExitCode::SUCCESS
}
