//! Metrics (Prometheus), the structured access log, the process logger, and the admin
//! endpoints that expose them.

mod access_log;
mod admin;
pub mod logger;
mod metrics;

pub use access_log::{
    AccessLog, AccessRecord, RepeatedText, DRAIN_INTERVAL as ACCESS_LOG_INTERVAL,
};
pub use admin::Admin;
pub use metrics::{
    ConnClose, DecisionCounters, DecisionReason, LimiterTotals, Metrics, RequestTotals, RouteLabel,
    RouteMetrics, RouteTotals,
};

/// What this binary is: shown by `--version`, the dashboard and `gateway_build_info`.
pub struct Build {
    pub version: &'static str,
    /// The git commit it was built from (build.rs), or `GATEWAY_COMMIT` when built
    /// outside a checkout (the Dockerfile passes it), else "unknown".
    pub commit: &'static str,
}

pub const BUILD: Build = Build {
    version: env!("CARGO_PKG_VERSION"),
    commit: match option_env!("GATEWAY_COMMIT") {
        Some(c) => c,
        None => "unknown",
    },
};
