//! The process logger: env_logger, with Pingora's known-noisy lines turned into counters so
//! that a real error is not drowned.
//!
//! Pingora 0.9 logs `ERROR failed to acquire reusable stream` each time its upstream pool
//! loses a race and closes a healthy pooled connection instead of reusing it (Pingora issue
//! 998): thousands of lines per second under load, while no request fails. Each becomes an
//! increment of `gateway_upstream_pool_reuse_races_total`, and a DEBUG line for whoever
//! asks for `RUST_LOG=pingora_core::connectors=debug`.

use log::{Level, Log, Metadata, Record};
use prometheus::IntCounter;
use std::sync::OnceLock;

const POOL_RACE_TARGET: &str = "pingora_core::connectors";
const POOL_RACE_MESSAGE: &str = "failed to acquire reusable stream";

/// Pooled upstream connections closed instead of reused, for the whole process. `None`
/// only if the metric definition were invalid (a unit test rules that out).
pub fn pool_reuse_races() -> Option<&'static IntCounter> {
    static COUNTER: OnceLock<Option<IntCounter>> = OnceLock::new();
    COUNTER
        .get_or_init(|| {
            IntCounter::new(
                "gateway_upstream_pool_reuse_races_total",
                "Pooled upstream connections closed instead of reused (Pingora issue 998, logged by Pingora as 'failed to acquire reusable stream')",
            )
            .ok()
        })
        .as_ref()
}

/// A logger that counts instead of printing the lines listed above.
pub struct Logger {
    inner: env_logger::Logger,
}

impl Logger {
    pub fn new(inner: env_logger::Logger) -> Self {
        Self { inner }
    }

    /// Installs `RUST_LOG` (default `default_filter`) through this filter as the process logger.
    pub fn install(default_filter: &str) {
        let inner = env_logger::Builder::from_env(
            env_logger::Env::default().default_filter_or(default_filter),
        )
        .build();
        // ERROR records always reach this filter, so pool races are counted even with
        // RUST_LOG=off; the inner logger still applies RUST_LOG to what is printed.
        log::set_max_level(inner.filter().max(log::LevelFilter::Error));
        let _ = log::set_boxed_logger(Box::new(Self::new(inner)));
    }

    /// Pingora's own "becomes unhealthy / healthy" lines, in debug format
    /// (`Backend { addr: Inet(..), weight: 1, ext: {} }`): the pool logs the same change
    /// in plain words, so these go to DEBUG.
    fn is_duplicate_health_line(record: &Record) -> bool {
        record.target().starts_with("pingora_load_balancing")
            && matches!(record.level(), Level::Warn | Level::Info)
            && record.args().to_string().contains("becomes ")
    }

    /// Pingora's "No incoming socket transfer, sleep 1s and try again" (ERROR) is what a
    /// new process started with `-u` says while it waits for the old one's sockets: a
    /// normal step of an upgrade, so INFO.
    fn is_upgrade_wait(record: &Record) -> bool {
        record.level() == Level::Error
            && record
                .target()
                .starts_with("pingora_core::server::transfer_fd")
            && record
                .args()
                .to_string()
                .starts_with("No incoming socket transfer")
    }

    fn is_pool_race(record: &Record) -> bool {
        record.level() == Level::Error
            && record.target() == POOL_RACE_TARGET
            && record.args().as_str() == Some(POOL_RACE_MESSAGE)
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        let level = if Self::is_pool_race(record) {
            if let Some(c) = pool_reuse_races() {
                c.inc();
            }
            Level::Debug
        } else if Self::is_duplicate_health_line(record) {
            Level::Debug
        } else if Self::is_upgrade_wait(record) {
            Level::Info
        } else {
            self.inner.log(record);
            return;
        };
        let demoted = Metadata::builder()
            .level(level)
            .target(record.target())
            .build();
        if self.inner.enabled(&demoted) {
            self.inner.log(
                &Record::builder()
                    .metadata(demoted)
                    .args(*record.args())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logger(filter: &str) -> (Logger, Captured) {
        let out = Captured::default();
        let inner = env_logger::Builder::new()
            .parse_filters(filter)
            .target(env_logger::Target::Pipe(Box::new(out.clone())))
            .build();
        (Logger::new(inner), out)
    }

    fn log(l: &Logger, level: Level, target: &str, args: std::fmt::Arguments) {
        l.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(args)
                .build(),
        );
    }

    #[test]
    fn pool_races_are_counted_not_printed() {
        let (l, out) = logger("warn");
        let counter = pool_reuse_races().unwrap();
        let before = counter.get();
        for _ in 0..3 {
            log(
                &l,
                Level::Error,
                POOL_RACE_TARGET,
                format_args!("failed to acquire reusable stream"),
            );
        }
        log(
            &l,
            Level::Error,
            POOL_RACE_TARGET,
            format_args!("some other connector error"),
        );
        log(
            &l,
            Level::Error,
            "gateway",
            format_args!("failed to acquire reusable stream"),
        );
        assert!(counter.get() >= before + 3);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.matches("failed to acquire reusable stream").count(),
            1,
            "{text}"
        );
        assert!(text.contains("some other connector error"), "{text}");
    }

    #[test]
    fn pingora_health_lines_are_demoted() {
        let (l, out) = logger("warn");
        log(
            &l,
            Level::Warn,
            "pingora_load_balancing",
            format_args!(
                "Backend {{ addr: Inet(127.0.0.1:1), weight: 1, ext: {{}} }} becomes unhealthy, x"
            ),
        );
        log(
            &l,
            Level::Warn,
            "pingora_load_balancing",
            format_args!("health check task failed: x"),
        );
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("becomes unhealthy"), "{text}");
        assert!(text.contains("health check task failed"), "{text}");
    }

    #[test]
    fn the_upgrade_wait_is_info() {
        let (l, out) = logger("info");
        log(
            &l,
            Level::Error,
            "pingora_core::server::transfer_fd",
            format_args!("No incoming socket transfer, sleep {:?} and try again", 1),
        );
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("INFO") && !text.contains("ERROR"), "{text}");
    }

    #[test]
    fn pool_races_can_be_seen_at_debug() {
        let (l, out) = logger("warn,pingora_core::connectors=debug");
        log(
            &l,
            Level::Error,
            POOL_RACE_TARGET,
            format_args!("failed to acquire reusable stream"),
        );
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("DEBUG") && text.contains("failed to acquire"),
            "{text}"
        );
    }
}
