//! The admin listener: `/metrics`, `/healthz`, `/readyz`. Bound to loopback by default;
//! with `admin.token` (required elsewhere) everything but the two probes asks for it as a
//! bearer token.

use super::Metrics;
use crate::drain::Drain;
use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The admin endpoints' application.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// Why the pools of the config in force (a reload may replace them) cannot serve:
    /// one reason per pool without a healthy backend or still on its first health check.
    pub pools_not_ready: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// Draining (after SIGTERM): not ready, so load balancers stop sending.
    pub drain: Arc<Drain>,
    /// The digest of the bearer token asked for, if any (see `config::AdminConfig`).
    pub token: Option<crate::config::AdminToken>,
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

    /// Whether a request may see `path`: the probes always (load balancers and kubelets
    /// carry no token), the rest with the bearer token when one is configured. Digests
    /// compared in constant time: the time taken says nothing of how much matched.
    fn allowed(&self, path: &str, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if matches!(path, "/healthz" | "/readyz") {
            return true;
        }
        let Some(sent) = authorization.and_then(|a| a.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let digest = crate::config::AdminToken::digest(sent);
        digest.ct_eq(&token.0).into()
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
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let authorization = req.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        let mut reply = Response::builder();
        let (status, content_type, body) = if self.allowed(&path, authorization) {
            self.answer(&path)
        } else {
            reply = reply.header(header::WWW_AUTHENTICATE, "Bearer realm=\"gateway admin\"");
            let body = br#"{"error":"unauthorized: send the admin token as Authorization: Bearer <token>"}"#;
            (StatusCode::UNAUTHORIZED, "application/json", body.to_vec())
        };
        reply
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
