//! What the upstream is told about the request: the gateway's request id, identity and
//! trace context, and the hop it came over. Pure functions over the upstream request
//! header, so each case is unit-tested without a socket.

use http::header::FORWARDED;
use http::HeaderName;
use http::HeaderValue;
use pingora::http::RequestHeader;
use std::fmt::Write as _;
use std::net::IpAddr;

// Names looked up or removed on every request: built once, never parsed per request.
// (Inserts take `&'static str`: Pingora parses the name either way, and a `HeaderName`
// would also be copied for its case-preserving twin map.)
const X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
const X_CONSUMER_TIER: HeaderName = HeaderName::from_static("x-consumer-tier");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// What the gateway knows about the hop a request came over.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The socket peer (X-Forwarded-For appends this hop).
    pub peer: Option<IpAddr>,
    /// The request's `Host`, in the canonical form the edge stage left it in (shared into
    /// X-Forwarded-Host, not copied).
    pub host: Option<&'a HeaderValue>,
}

/// Who the gateway vouches for, as forwarded upstream.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub consumer: &'a str,
    pub tier: &'a str,
}

/// Sets the request id and trace context, and the identity headers from `identity` only:
/// a client's own `X-Consumer-*` never pass.
pub fn set_correlation_and_identity(
    upstream: &mut RequestHeader,
    id_header: &HeaderName,
    request_id: Option<&HeaderValue>,
    traceparent: Option<&HeaderValue>,
    identity: Option<Identity<'_>>,
) -> pingora::Result<()> {
    if let Some(id) = request_id {
        upstream.insert_header(id_header.clone(), id.clone())?;
    }
    // Removing an absent header costs a lookup; most requests carry neither.
    upstream.remove_header(&X_CONSUMER_ID);
    upstream.remove_header(&X_CONSUMER_TIER);
    if let Some(who) = identity {
        upstream.insert_header("x-consumer-id", who.consumer)?;
        upstream.insert_header("x-consumer-tier", who.tier)?;
    }
    match traceparent {
        Some(tp) => upstream.insert_header("traceparent", tp.clone())?,
        None => {
            upstream.remove_header(&TRACEPARENT);
        }
    }
    Ok(())
}

/// X-Forwarded-For and Forwarded (RFC 7239) get this hop appended; X-Forwarded-Host and
/// X-Forwarded-Proto are the gateway's alone; a client's X-Real-IP never passes
/// (frameworks believe it, and the gateway does not set it).
pub fn set_forwarding(upstream: &mut RequestHeader, hop: Hop<'_>) -> pingora::Result<()> {
    upstream.remove_header(&X_REAL_IP);
    // A static value: neither validated nor copied per request.
    upstream.insert_header("x-forwarded-proto", HeaderValue::from_static("http"))?;
    let Some(ip) = hop.peer else {
        upstream.remove_header(&X_FORWARDED_HOST);
        return Ok(());
    };
    // One allocation, sized for the previous hops and this one.
    let prev = upstream
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok());
    let mut xff = String::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
    if let Some(prev) = prev {
        xff.push_str(prev);
        xff.push_str(", ");
    }
    let _ = write!(xff, "{ip}");
    upstream.insert_header("x-forwarded-for", xff)?;
    let mut element = String::with_capacity(64);
    let _ = match ip {
        IpAddr::V4(v4) => write!(element, "for={v4};proto=http"),
        IpAddr::V6(v6) => write!(element, "for=\"[{v6}]\";proto=http"),
    };
    // RFC 7239: a token as it is, quoted when it has a port or an IPv6 literal (`:` and
    // brackets are not token characters). Any other host the edge stage has refused.
    let host = hop.host.and_then(|h| h.to_str().ok());
    if let Some(h) = host.filter(|h| {
        h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
    }) {
        if h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            let _ = write!(element, ";host={h}");
        } else {
            let _ = write!(element, ";host=\"{h}\"");
        }
    }
    let forwarded = match upstream
        .headers
        .get(FORWARDED)
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    upstream.insert_header(FORWARDED, forwarded)?;
    match hop.host {
        Some(host) => upstream.insert_header("x-forwarded-host", host.clone())?,
        None => {
            upstream.remove_header(&X_FORWARDED_HOST);
        }
    }
    Ok(())
}

/// Replaces the upstream path by `rest` (what is left after a stripped route prefix;
/// empty means `/`), keeping the query.
pub fn set_path(upstream: &mut RequestHeader, rest: &str) -> pingora::Result<()> {
    let path = if rest.is_empty() { "/" } else { rest };
    let uri = match upstream.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    match uri.parse::<http::Uri>() {
        Ok(uri) => {
            upstream.set_uri(uri);
            Ok(())
        }
        Err(_) => pingora::Error::e_explain(
            pingora::ErrorType::HTTPStatus(400),
            "bad path after prefix strip",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x?q=1", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get<'a>(r: &'a RequestHeader, name: &str) -> Option<&'a str> {
        r.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn the_hop_is_appended_and_client_claims_are_replaced() {
        let mut r = req(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        let hop = Hop {
            peer: Some("192.0.2.7".parse().unwrap()),
            host: Some(&HeaderValue::from_static("api.example:8443")),
        };
        set_forwarding(&mut r, hop).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), Some("10.0.0.1, 192.0.2.7"));
        assert_eq!(
            get(&r, "forwarded"),
            Some("for=10.0.0.1, for=192.0.2.7;proto=http;host=\"api.example:8443\"")
        );
        assert_eq!(
            get(&r, "x-forwarded-host"),
            Some("api.example:8443"),
            "the port is kept"
        );
        assert_eq!(get(&r, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&r, "x-real-ip"), None);
    }

    #[test]
    fn ipv6_peers_are_quoted_and_a_missing_host_forwards_none() {
        let mut r = req(&[("x-forwarded-host", "evil.example")]);
        set_forwarding(
            &mut r,
            Hop {
                peer: Some("192.0.2.7".parse().unwrap()),
                host: Some(&HeaderValue::from_static("shop.example.com")),
            },
        )
        .unwrap();
        assert_eq!(
            get(&r, "forwarded"),
            Some("for=192.0.2.7;proto=http;host=shop.example.com"),
            "a plain host is a token, unquoted"
        );
        let mut r = req(&[("x-forwarded-host", "evil.example")]);
        let hop = Hop {
            peer: Some("2001:db8::1".parse().unwrap()),
            host: None,
        };
        set_forwarding(&mut r, hop).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), Some("2001:db8::1"));
        assert_eq!(
            get(&r, "forwarded"),
            Some("for=\"[2001:db8::1]\";proto=http")
        );
        assert_eq!(
            get(&r, "x-forwarded-host"),
            None,
            "a client's is never forwarded"
        );
    }

    #[test]
    fn identity_comes_only_from_the_gateway() {
        let id_header = HeaderName::from_static("x-request-id");
        let mut r = req(&[
            ("x-consumer-id", "admin"),
            ("X-Consumer-Tier", "premium"),
            ("traceparent", "forged"),
        ]);
        let id = HeaderValue::from_static("abc");
        set_correlation_and_identity(&mut r, &id_header, Some(&id), None, None).unwrap();
        assert_eq!(get(&r, "x-request-id"), Some("abc"));
        assert_eq!(get(&r, "x-consumer-id"), None);
        assert_eq!(get(&r, "x-consumer-tier"), None);
        assert_eq!(get(&r, "traceparent"), None);
        let who = Identity {
            consumer: "acme",
            tier: "free",
        };
        let tp =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        set_correlation_and_identity(&mut r, &id_header, None, Some(&tp), Some(who)).unwrap();
        assert_eq!(get(&r, "x-consumer-id"), Some("acme"));
        assert_eq!(get(&r, "x-consumer-tier"), Some("free"));
        assert_eq!(get(&r, "traceparent"), Some(tp.to_str().unwrap()));
    }

    #[test]
    fn a_stripped_prefix_keeps_the_query() {
        let mut r = req(&[]);
        set_path(&mut r, "/users").unwrap();
        assert_eq!(r.uri.to_string(), "/users?q=1");
        set_path(&mut r, "").unwrap();
        assert_eq!(r.uri.to_string(), "/?q=1");
    }
}
