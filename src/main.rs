//! The `gateway` binary: command line -> config::load -> app::build -> run. No logic here.

use clap::{Args, Parser, Subcommand};
use gateway::app::{self, RunOptions};
use gateway::config;
use std::path::{Path, PathBuf};
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
    Token(TokenArgs),
}

/// The options of `gateway token`.
#[derive(Args, Debug)]
struct TokenArgs {
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
fn load(path: &Path) -> Result<config::Config, ExitCode> {
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

/// What a command came to: `Err` carries the exit code of a failure already reported on
/// standard error.
type Done = Result<(), ExitCode>;

fn main() -> ExitCode {
    handle_sighup_from_now_on();
    let cli = Cli::parse();
    gateway::observability::logger::Logger::install("warn,gateway=info");
    // A subcommand wins over the options; `--check-config` over running.
    let done = match (&cli.command, &cli.check_config) {
        (Some(Command::HashKey { key }), _) => hash_key(key.as_deref()),
        (Some(Command::Token(args)), _) => token(&cli.config, args),
        (None, Some(path)) => check_config(path),
        (None, None) => run(&cli),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// `gateway hash-key [KEY]`: the key's digest, the key read from standard input when not given.
fn hash_key(key: Option<&str>) -> Done {
    let key = match key {
        Some(k) => k.to_string(),
        None => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("cannot read the key from standard input");
                return Err(ExitCode::from(EXIT_CONFIG));
            }
            line
        }
    };
    if key.trim().is_empty() {
        eprintln!("the key is empty");
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    println!("{}", gateway::auth::hash_key(&key));
    Ok(())
}

/// `gateway token`: a test JWT that the config at `config_path` accepts.
fn token(config_path: &Path, args: &TokenArgs) -> Done {
    let config = load(config_path)?;
    let claims = claim_pairs(&args.claims)?;
    let request = gateway::auth::TokenRequest {
        issuer: args.issuer.as_deref(),
        subject: &args.sub,
        tier: args.tier.as_deref(),
        claims: &claims,
        lifetime: args.ttl.into(),
        now: gateway::auth::unix_now(),
    };
    match gateway::auth::mint(&config.auth, &request) {
        Ok(token) => {
            println!("{token}");
            Ok(())
        }
        Err(e) => {
            eprintln!("{}: {e}", config_path.display());
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// The `--claim NAME=VALUE` options as pairs.
fn claim_pairs(claims: &[String]) -> Result<Vec<(String, String)>, ExitCode> {
    claims
        .iter()
        .map(|c| match c.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => {
                eprintln!("--claim {c}: write it as NAME=VALUE");
                Err(ExitCode::from(EXIT_CONFIG))
            }
        })
        .collect()
}

/// `--check-config FILE`: "ok", or every problem start-up would also refuse.
fn check_config(path: &Path) -> Done {
    let config = load(path)?;
    // What start-up would also refuse: backend names that do not resolve.
    let Err(unresolved) = gateway::routing::resolve_backends(&config) else {
        println!("ok");
        return Ok(());
    };
    eprintln!("{}: {} problem(s):", path.display(), unresolved.len());
    for problem in unresolved {
        eprintln!("  {problem}");
    }
    Err(ExitCode::from(EXIT_CONFIG))
}

/// Runs the gateway (or the `--bare` baseline) until a signal ends it.
fn run(cli: &Cli) -> Done {
    let config = load(&cli.config)?;
    let options = RunOptions {
        upgrade: cli.upgrade,
        bare: cli.bare,
        config_path: Some(cli.config.clone()),
    };
    let app = app::build(&config, &options).map_err(|e| {
        eprintln!("{}: {e}", cli.config.display());
        ExitCode::from(EXIT_CONFIG)
    })?;
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
    Ok(())
}
