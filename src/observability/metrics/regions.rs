//! Rate-limit rights across regions: the replication's reads of each region's Redis, which
//! peers are stale, the rights given, the keys replicated and the bytes it moves.

use super::{Metrics, Registrar};
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};

pub(super) struct Regions {
    reads: IntCounterVec,
    stale: IntGaugeVec,
    gives: IntCounterVec,
    keys: IntGauge,
    bytes: IntCounterVec,
    commands: IntCounterVec,
}

impl Regions {
    pub(super) fn register(r: &Registrar<'_>) -> prometheus::Result<Self> {
        Ok(Self {
            reads: r.counter_vec(
                "gateway_ratelimit_region_reads_total",
                "Replication reads of a region's Redis (this region's included), by outcome (ok, error)",
                &["region", "outcome"],
            )?,
            stale: r.gauge_vec(
                "gateway_ratelimit_region_stale",
                "1 while a peer region has not been read for stale_after: no rights move to or from it",
                &["region"],
            )?,
            gives: r.counter_vec(
                "gateway_ratelimit_region_gives_total",
                "Transfers of rate-limit rights this instance made from its region to another",
                &["to"],
            )?,
            keys: r.gauge(
                "gateway_ratelimit_region_keys",
                "Keys whose rights this instance replicated in its last round",
            )?,
            bytes: r.counter_vec(
                "gateway_ratelimit_region_bytes_total",
                "Replication payload bytes (field names and values, without RESP framing), read from every region's Redis and written to this region's",
                &["direction"],
            )?,
            commands: r.counter_vec(
                "gateway_ratelimit_redis_commands_total",
                "Commands the limiter sent to a region's Redis (leases, replication), by region (\"\" without regions); a script counts as one",
                &["region"],
            )?,
        })
    }
}

impl Metrics {
    pub fn region_read(&self, region: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.regions
            .reads
            .with_label_values(&[region, outcome])
            .inc();
    }

    pub fn set_region_stale(&self, region: &str, stale: bool) {
        self.regions
            .stale
            .with_label_values(&[region])
            .set(i64::from(stale));
    }

    pub fn region_give(&self, to: &str) {
        self.regions.gives.with_label_values(&[to]).inc();
    }

    pub fn set_region_keys(&self, n: usize) {
        self.regions.keys.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn limit_redis_commands(&self, region: &str, n: usize) {
        self.regions
            .commands
            .with_label_values(&[region])
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    pub fn region_bytes(&self, read: usize, written: usize) {
        let count = |dir: &str, n: usize| {
            self.regions
                .bytes
                .with_label_values(&[dir])
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        };
        count("read", read);
        count("write", written);
    }
}
