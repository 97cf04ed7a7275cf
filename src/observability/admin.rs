//! The admin listener: `/metrics`, `/healthz`, `/readyz`, the live `/dashboard` and its
//! `/api/stats`. Bound to loopback by default; with `admin.token` (required elsewhere)
//! everything but the two probes asks for it: as a bearer token (Prometheus, curl), or as
//! the password of HTTP Basic authentication (a browser asks for it, then sends it with
//! every request of the page), any user name.

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
    /// The digest of the bearer token asked for, if any (see `config::AdminToken`).
    pub token: Option<crate::config::AdminToken>,
    /// The JSON of `/api/stats`, for the config in force.
    pub stats: Box<dyn Fn() -> Vec<u8> + Send + Sync>,
}

/// One reply of the admin listener.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    /// Extra headers (the page's content security policy, no caching of stats).
    headers: Vec<(header::HeaderName, String)>,
}

impl Answer {
    fn new(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }
}

/// The page's content security policy: nothing from elsewhere, its inline script and
/// style allowed by their digests only, its requests to this listener only.
fn page_csp() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        let digest = |open: &str, close: &str| {
            use base64::Engine;
            use sha2::Digest;
            let inner = crate::dashboard::PAGE
                .split_once(open)
                .and_then(|(_, rest)| rest.split_once(close))
                .map_or("", |(inner, _)| inner);
            let hash = sha2::Sha256::digest(inner.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(hash)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            digest("<script>", "</script>"),
            digest("<style>", "</style>")
        )
    })
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
        let Some(sent) = authorization.and_then(presented_token) else {
            return false;
        };
        let digest = crate::config::AdminToken::digest(&sent);
        digest.ct_eq(&token.0).into()
    }

    fn answer(&self, path: &str) -> Answer {
        const JSON: &str = "application/json";
        match path {
            "/metrics" => Answer::new(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render().into_bytes(),
            ),
            "/healthz" => Answer::new(StatusCode::OK, JSON, br#"{"status":"alive"}"#.to_vec()),
            "/dashboard" => Answer {
                headers: vec![
                    (header::CONTENT_SECURITY_POLICY, page_csp().to_string()),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
                    (header::REFERRER_POLICY, "no-referrer".into()),
                    (header::CACHE_CONTROL, "no-cache".into()),
                ],
                ..Answer::new(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    crate::dashboard::PAGE.as_bytes().to_vec(),
                )
            },
            "/api/stats" => Answer {
                headers: vec![(header::CACHE_CONTROL, "no-store".into())],
                ..Answer::new(StatusCode::OK, JSON, (self.stats)())
            },
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
                Answer::new(status, JSON, body.to_string().into_bytes())
            }
            _ => Answer::new(
                StatusCode::NOT_FOUND,
                JSON,
                br#"{"error":"not found","endpoints":["/metrics","/healthz","/readyz","/dashboard","/api/stats"]}"#.to_vec(),
            ),
        }
    }
}

/// The token in an `Authorization` header: `Bearer <token>`, or `Basic` with the token as
/// the password (the user name is ignored).
fn presented_token(authorization: &[u8]) -> Option<Vec<u8>> {
    if let Some(token) = authorization.strip_prefix(b"Bearer ") {
        return Some(token.to_vec());
    }
    use base64::Engine;
    let encoded = authorization.strip_prefix(b"Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded.get(colon + 1..)?.to_vec())
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let authorization = req.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        let answer = if self.allowed(&path, authorization) {
            self.answer(&path)
        } else {
            // Bearer for programs; Basic so that a browser asks for the token (as password).
            let body = br#"{"error":"unauthorized: send the admin token as Authorization: Bearer <token> (or as the password of Basic authentication)"}"#;
            Answer {
                headers: vec![
                    (
                        header::WWW_AUTHENTICATE,
                        "Bearer realm=\"gateway admin\"".into(),
                    ),
                    (
                        header::WWW_AUTHENTICATE,
                        "Basic realm=\"gateway admin\", charset=\"UTF-8\"".into(),
                    ),
                ],
                ..Answer::new(StatusCode::UNAUTHORIZED, "application/json", body.to_vec())
            }
        };
        let mut reply = Response::builder()
            .status(answer.status)
            .header(header::CONTENT_TYPE, answer.content_type)
            .header(header::CONTENT_LENGTH, answer.body.len());
        for (name, value) in answer.headers {
            reply = reply.header(name, value);
        }
        reply
            .body(answer.body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
