//! The edge rules: requests refused, paths rewritten, header names dropped.

use super::{Metrics, Registrar};
use prometheus::{IntCounter, IntCounterVec};

pub(super) struct Edge {
    refused: IntCounterVec,
    paths_rewritten: IntCounter,
    headers_dropped: IntCounter,
}

impl Edge {
    pub(super) fn register(r: &Registrar<'_>) -> prometheus::Result<Self> {
        Ok(Self {
            refused: r.counter_vec(
                "gateway_edge_refused_total",
                "Requests answered 400 by the edge rules, by reason (path or header name)",
                &["reason"],
            )?,
            paths_rewritten: r.counter(
                "gateway_edge_paths_normalized_total",
                "Requests whose path was rewritten to its canonical form before routing",
            )?,
            headers_dropped: r.counter(
                "gateway_edge_underscore_headers_dropped_total",
                "Request headers removed because their name contains '_'",
            )?,
        })
    }
}

impl Metrics {
    /// Counts what the edge stage changed in a request it let through.
    pub fn observe_edge_cleaned(&self, path_rewritten: bool, headers_dropped: usize) {
        if path_rewritten {
            self.edge.paths_rewritten.inc();
        }
        if headers_dropped > 0 {
            self.edge.headers_dropped.inc_by(headers_dropped as u64);
        }
    }

    /// Counts a request the edge refused, by reason.
    pub fn observe_edge_refusal(&self, reason: &str) {
        self.edge.refused.with_label_values(&[reason]).inc();
    }
}
