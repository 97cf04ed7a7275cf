//! The config in force: reload attempts by result, and the hash of the file applied.

use super::{Metrics, Registrar};
use prometheus::{IntCounterVec, IntGaugeVec};

pub(super) struct Reloads {
    results: IntCounterVec,
    config_info: IntGaugeVec,
}

impl Reloads {
    pub(super) fn register(r: &Registrar<'_>) -> prometheus::Result<Self> {
        Ok(Self {
            results: r.counter_vec(
                "gateway_config_reloads_total",
                "Config reloads (SIGHUP) by result: applied, invalid (the file has problems), refused (a change needs a restart)",
                &["result"],
            )?,
            config_info: r.gauge_vec(
                "gateway_config_info",
                "1 for the SHA-256 of the config file in force",
                &["sha256"],
            )?,
        })
    }
}

impl Metrics {
    /// Counts a reload attempt: `applied`, `invalid` or `refused`.
    pub fn observe_reload(&self, result: &str) {
        self.reloads.results.with_label_values(&[result]).inc();
    }

    /// Names the config in force by the SHA-256 (hex) of its file.
    pub fn set_config_hash(&self, sha256: &str) {
        self.reloads.config_info.reset();
        self.reloads.config_info.with_label_values(&[sha256]).set(1);
    }

    /// The SHA-256 of the config file in force, once one was set.
    pub fn config_hash(&self) -> Option<String> {
        use prometheus::core::Collector;
        let families = self.reloads.config_info.collect();
        let m = families.first()?.metric.first()?;
        super::requests::label(m, "sha256").map(str::to_string)
    }
}
