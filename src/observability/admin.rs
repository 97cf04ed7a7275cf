//! The admin listener: `/metrics`, `/healthz`, `/readyz`. Bound to loopback by default.

use super::Metrics;
use crate::drain::Drain;
use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The admin endpoints' application.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// Why the pools of the config in force (a reload may replace them) cannot serve:
    /// one reason per pool without a healthy backend or still on its first health check.
    pub pools_not_ready: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// Draining (after SIGTERM): not ready, so load balancers stop sending.
    pub drain: Arc<Drain>,
}

impl Admin {
    /// Reasons the gateway is not ready to serve; empty when it is.
    pub fn not_ready(&self) -> Vec<String> {
        let draining = self
            .drain
            .is_draining()
            .then(|| "shutting down: draining in-flight requests".to_string());
        draining
            .into_iter()
            .chain((self.pools_not_ready)())
            .collect()
    }

    fn answer(&self, path: &str) -> (StatusCode, &'static str, Vec<u8>) {
        const JSON: &str = "application/json";
        match path {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render().into_bytes(),
            ),
            "/healthz" => (StatusCode::OK, JSON, br#"{"status":"alive"}"#.to_vec()),
            "/readyz" => {
                let reasons = self.not_ready();
                let (status, body) = if reasons.is_empty() {
                    (StatusCode::OK, serde_json::json!({"status": "ready"}))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({"status": "not ready", "reasons": reasons}),
                    )
                };
                (status, JSON, body.to_string().into_bytes())
            }
            _ => (
                StatusCode::NOT_FOUND,
                JSON,
                br#"{"error":"not found","endpoints":["/metrics","/healthz","/readyz"]}"#.to_vec(),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let (status, content_type, body) = self.answer(&path);
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
