//! Client connections: open, refused at the cap, and closed by the gateway.

use super::{Metrics, Registrar};
use prometheus::{IntCounter, IntGauge};

/// Why the gateway closed a client connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnClose {
    /// No complete request header within `client_header_timeout` (408, or silent if nothing came).
    HeaderTimeout,
    /// A request header over `max_header_bytes` (431).
    HeaderTooLarge,
    /// A keep-alive connection idle for `keepalive_timeout`.
    IdleTimeout,
    /// An idle keep-alive connection closed because the gateway is draining.
    Drain,
}

impl ConnClose {
    const ALL: [ConnClose; 4] = [
        ConnClose::HeaderTimeout,
        ConnClose::HeaderTooLarge,
        ConnClose::IdleTimeout,
        ConnClose::Drain,
    ];

    fn label(self) -> &'static str {
        match self {
            ConnClose::HeaderTimeout => "header_timeout",
            ConnClose::HeaderTooLarge => "header_too_large",
            ConnClose::IdleTimeout => "idle_timeout",
            ConnClose::Drain => "drain",
        }
    }
}

pub(super) struct Connections {
    open: IntGauge,
    refused: IntCounter,
    /// By [`ConnClose`], in the order of `ConnClose::ALL`.
    closed: [IntCounter; 4],
}

impl Connections {
    pub(super) fn register(r: &Registrar<'_>) -> prometheus::Result<Self> {
        let open = r.gauge(
            "gateway_downstream_connections",
            "Client connections open on the proxy listener",
        )?;
        let refused = r.counter(
            "gateway_downstream_refused_total",
            "Client connections closed at once because server.max_connections were open",
        )?;
        let closed = r.counter_vec(
            "gateway_downstream_closed_total",
            "Client connections the gateway closed: header_timeout, header_too_large, idle_timeout, drain",
            &["reason"],
        )?;
        Ok(Self {
            open,
            refused,
            closed: ConnClose::ALL.map(|c| closed.with_label_values(&[c.label()])),
        })
    }
}

impl Metrics {
    /// The open-connections gauge, +1 or -1.
    pub fn downstream_connection(&self, delta: i64) {
        self.connections.open.add(delta);
    }

    pub fn downstream_refused(&self) {
        self.connections.refused.inc();
    }

    pub fn downstream_closed(&self, why: ConnClose) {
        self.connections.closed[why as usize].inc();
    }
}
