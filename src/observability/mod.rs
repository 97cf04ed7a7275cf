//! Metrics (Prometheus), the structured access log, the process logger, and the admin
//! endpoints that expose them.

mod access_log;
mod admin;
pub mod logger;
mod metrics;

pub use access_log::{AccessLog, AccessRecord, DRAIN_INTERVAL as ACCESS_LOG_INTERVAL};
pub use admin::Admin;
pub use metrics::{ConnClose, DecisionCounters, DecisionReason, Metrics, RouteLabel, RouteMetrics};
