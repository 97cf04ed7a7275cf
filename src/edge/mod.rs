//! The edge stage: what the gateway normalises and refuses before any decision is made on
//! a request, so that routing, auth and limits see the request exactly as the upstream will.
//!
//! ```text
//! request ─► path: raw target -> canonical origin-form path (or 400)   path.rs
//!         ─► headers: names with `_` dropped / refused / allowed       headers.rs
//! ```

pub mod headers;
pub mod path;

pub use path::PathError;

use crate::config::EdgeConfig;
use http::HeaderName;
use pingora::http::RequestHeader;
use std::borrow::Cow;

/// Why the edge refuses a request (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Path(PathError),
    UnderscoreHeader,
}

impl Refusal {
    /// The `reason` label of `gateway_edge_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Path(e) => e.label(),
            Refusal::UnderscoreHeader => "underscore_header",
        }
    }

    /// The `error` text of the 400 body.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Path(PathError::NotAbsolute) => "path must start with '/'",
            Refusal::Path(PathError::BadEscape) => "malformed percent-encoding in path",
            Refusal::Path(PathError::EncodedSlash) => "encoded slash or backslash in path",
            Refusal::Path(PathError::Backslash) => "backslash in path",
            Refusal::Path(PathError::ControlByte) => "control character in path",
            Refusal::Path(PathError::AboveRoot) => "path climbs above the root",
            Refusal::Path(PathError::DotSegmentParams) => "dot segment with parameters in path",
            Refusal::Path(PathError::NotUtf8) => "path is not valid UTF-8",
            Refusal::UnderscoreHeader => "header name with underscore",
        }
    }
}

/// What the edge stage changed in a request it let through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// The path (or the request-target form) was rewritten.
    pub path_rewritten: bool,
    /// Headers removed for `_` in their name.
    pub headers_dropped: usize,
}

/// The edge rules of one config, ready to apply.
#[derive(Debug, Clone)]
pub struct Edge {
    config: EdgeConfig,
    /// Headers the gateway sets itself; their `_` spellings never pass.
    protected: Vec<HeaderName>,
}

impl Edge {
    /// `correlation_header` is protected beside the identity and forwarding headers.
    pub fn new(config: &EdgeConfig, correlation_header: &HeaderName) -> Self {
        let mut protected: Vec<HeaderName> = [
            "x-consumer-id",
            "x-consumer-tier",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-real-ip",
            "forwarded",
            "traceparent",
        ]
        .into_iter()
        .map(HeaderName::from_static)
        .collect();
        protected.push(correlation_header.clone());
        Self {
            config: config.clone(),
            protected,
        }
    }

    /// Normalises the path and applies the header-name rule, in place. The request that
    /// leaves here is the one routed, authorised, limited, logged and forwarded.
    pub fn clean(&self, req: &mut RequestHeader) -> Result<Cleaned, Refusal> {
        let mut cleaned = Cleaned {
            path_rewritten: self.clean_path(req)?,
            headers_dropped: 0,
        };
        let drop = headers::underscored(
            &req.headers,
            self.config.headers_with_underscores,
            &self.protected,
        )?;
        for name in &drop {
            req.remove_header(name);
        }
        cleaned.headers_dropped = drop.len();
        Ok(cleaned)
    }

    /// Rewrites the target to its canonical origin form when it is not already; returns
    /// whether it did. An absolute-form target (`GET http://h/x`) is rewritten too, so
    /// the upstream never gets a target the gateway did not route on.
    fn clean_path(&self, req: &mut RequestHeader) -> Result<bool, Refusal> {
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let verbatim = req.raw_path() == pq.as_bytes();
        if !verbatim && std::str::from_utf8(req.raw_path()).is_err() {
            return Err(Refusal::Path(PathError::NotUtf8));
        }
        let path = req.uri.path();
        let normal = path::normalize(path, &self.config.path).map_err(Refusal::Path)?;
        if verbatim && matches!(normal, Cow::Borrowed(_)) {
            return Ok(false);
        }
        let target = match req.uri.query() {
            Some(q) => format!("{normal}?{q}"),
            None => normal.into_owned(),
        };
        let uri = target
            .parse::<http::Uri>()
            .map_err(|_| Refusal::Path(PathError::BadEscape))?;
        req.set_uri(uri);
        Ok(true)
    }
}
