//! Metrics (Prometheus), the structured access log, and the admin endpoints that expose them.

mod access_log;
mod admin;
mod metrics;

pub use access_log::{AccessLog, AccessRecord, DRAIN_INTERVAL as ACCESS_LOG_INTERVAL};
pub use admin::Admin;
pub use metrics::{ConnClose, Metrics, RouteLabel};
