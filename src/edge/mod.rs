//! The edge stage: what the gateway normalises and refuses before any decision is made on
//! a request, so that routing, auth and limits see the request exactly as the upstream will.
//!
//! ```text
//! request ─► path: raw target -> canonical origin-form path (or 400)   path.rs
//!         ─► Host: lower case, no trailing dot, numeric port (or 400)  host.rs
//!         ─► Content-Length: one value (or 400)
//!         ─► headers: names with `_` dropped / refused / allowed       headers.rs
//! ```

pub mod headers;
pub mod host;
pub mod path;

pub use host::HostError;
pub use path::PathError;

use crate::config::EdgeConfig;
use http::HeaderName;
use pingora::http::RequestHeader;
use std::borrow::Cow;

/// Why the edge refuses a request (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Path(PathError),
    Host(HostError),
    /// HTTP/1.1 without `Host` (RFC 9112 3.2: a server must answer 400).
    MissingHost,
    /// `Content-Length` repeated with different values, or not a number.
    ContentLength,
    UnderscoreHeader,
}

impl Refusal {
    /// The `reason` label of `gateway_edge_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Path(e) => e.label(),
            Refusal::Host(_) => "bad_host",
            Refusal::MissingHost => "missing_host",
            Refusal::ContentLength => "bad_content_length",
            Refusal::UnderscoreHeader => "underscore_header",
        }
    }

    /// The `error` text of the 400 body.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Path(e) => e.message(),
            Refusal::Host(HostError::Invalid) => "invalid Host",
            Refusal::Host(HostError::BadPort) => "invalid port in Host",
            Refusal::MissingHost => "missing Host header",
            Refusal::ContentLength => "conflicting or invalid Content-Length",
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
    /// `also_protected`: the request-id header and the credential headers of the auth
    /// config; they are protected beside identity, forwarding, framing and credential
    /// headers that every config has.
    pub fn new(config: &EdgeConfig, also_protected: &[HeaderName]) -> Self {
        let mut protected: Vec<HeaderName> = [
            "x-consumer-id",
            "x-consumer-tier",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-real-ip",
            "forwarded",
            "traceparent",
            "authorization",
            "cookie",
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "upgrade",
            "te",
        ]
        .into_iter()
        .map(HeaderName::from_static)
        .collect();
        protected.extend(also_protected.iter().cloned());
        Self {
            config: config.clone(),
            protected,
        }
    }

    /// Whether header names keep the client's and the upstream's spelling.
    pub fn preserve_header_case(&self) -> bool {
        self.config.preserve_header_case
    }

    /// Normalises the path and applies the header-name rule, in place. The request that
    /// leaves here is the one routed, authorised, limited, logged and forwarded.
    pub fn clean(&self, req: &mut RequestHeader) -> Result<Cleaned, Refusal> {
        // First: the rules below then edit one header map, not two.
        if !self.config.preserve_header_case {
            headers::forget_case(req);
        }
        let authority = Self::target_authority(req)?;
        Self::clean_host(req, authority)?;
        Self::clean_content_length(req)?;
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

    /// The authority of an absolute-form target (`GET http://host/x`), `None` for the
    /// origin form (`/x`). Any other form (`*`, `?q`, `admin/x`) is refused: the proxy
    /// would forward it as sent, after routing it as `/`.
    fn target_authority(req: &RequestHeader) -> Result<Option<String>, Refusal> {
        let raw = req.raw_path();
        if raw.first() == Some(&b'/') {
            return Ok(None);
        }
        match host::absolute_form_authority(raw) {
            Some(Ok(a)) => Ok(Some(a.to_string())),
            Some(Err(e)) => Err(Refusal::Host(e)),
            None => Err(Refusal::Path(PathError::NotAbsolute)),
        }
    }

    /// `Host` in canonical form; taken from an absolute-form target when missing; required
    /// for HTTP/1.1.
    fn clean_host(req: &mut RequestHeader, authority: Option<String>) -> Result<(), Refusal> {
        let canonical = match req.headers.get(http::header::HOST) {
            Some(v) => {
                let text = v.to_str().map_err(|_| Refusal::Host(HostError::Invalid))?;
                match host::canonical_host(text).map_err(Refusal::Host)? {
                    Cow::Borrowed(_) => return Ok(()),
                    Cow::Owned(h) => h,
                }
            }
            None => match authority {
                Some(a) => host::canonical_host(&a)
                    .map_err(Refusal::Host)?
                    .into_owned(),
                None if req.version == http::Version::HTTP_11 => return Err(Refusal::MissingHost),
                None => return Ok(()),
            },
        };
        req.insert_header(http::header::HOST, canonical)
            .map_err(|_| Refusal::Host(HostError::Invalid))
    }

    /// One `Content-Length`: identical repeats (`5, 5`, or two lines) are merged, as an
    /// upstream may read the first or the last; different ones are refused (RFC 9112 6.3).
    fn clean_content_length(req: &mut RequestHeader) -> Result<(), Refusal> {
        let mut values = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
        let Some(first) = values.next() else {
            return Ok(());
        };
        let single = values.next().is_none();
        if single && !first.as_bytes().contains(&b',') {
            return Ok(());
        }
        let mut length: Option<u64> = None;
        for v in req.headers.get_all(http::header::CONTENT_LENGTH) {
            let text = v.to_str().map_err(|_| Refusal::ContentLength)?;
            for part in text.split(',') {
                let n = part
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| Refusal::ContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Refusal::ContentLength);
                }
                length = Some(n);
            }
        }
        let n = length.ok_or(Refusal::ContentLength)?;
        req.insert_header(http::header::CONTENT_LENGTH, n)
            .map_err(|_| Refusal::ContentLength)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EdgeConfig;

    fn req(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", target.as_bytes(), None).unwrap();
        r.insert_header("host", "a.example").unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn edge() -> Edge {
        Edge::new(&EdgeConfig::default(), &[])
    }

    #[test]
    fn content_length_is_one_number_or_refused() {
        for (values, want) in [
            (&["5"][..], Ok(Some("5"))),
            (&["5, 5"][..], Ok(Some("5"))),
            (&["5", "5"][..], Ok(Some("5"))),
            (&["5, 6"][..], Err(Refusal::ContentLength)),
            (&["5", "6"][..], Err(Refusal::ContentLength)),
            (&["five", "five"][..], Err(Refusal::ContentLength)),
            (&["-1, -1"][..], Err(Refusal::ContentLength)),
            (&["5,"][..], Err(Refusal::ContentLength)),
            (
                &["99999999999999999999999, 1"][..],
                Err(Refusal::ContentLength),
            ),
            // A single value is left to Pingora's parser, which refuses a bad one itself.
            (&["five"][..], Ok(Some("five"))),
        ] {
            let headers: Vec<(&str, &str)> =
                values.iter().map(|v| ("content-length", *v)).collect();
            let mut r = req("/x", &headers);
            let got = edge().clean(&mut r).map(|_| {
                let all: Vec<&str> = r
                    .headers
                    .get_all("content-length")
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                (all.len() == 1).then(|| all[0])
            });
            assert_eq!(got, want, "{values:?}");
        }
    }

    #[test]
    fn odd_targets_and_hosts_are_refused() {
        for (target, host, want) in [
            (
                "*",
                Some("a.example"),
                Refusal::Path(PathError::NotAbsolute),
            ),
            (
                "?q=/../admin",
                Some("a.example"),
                Refusal::Path(PathError::NotAbsolute),
            ),
            (
                "/x",
                Some("a.example:99999"),
                Refusal::Host(HostError::BadPort),
            ),
            ("/x", Some("a b"), Refusal::Host(HostError::Invalid)),
            ("/x", None, Refusal::MissingHost),
        ] {
            let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
            if let Some(h) = host {
                r.insert_header("host", h).unwrap();
            }
            assert_eq!(edge().clean(&mut r), Err(want), "{target} {host:?}");
        }
    }
}
