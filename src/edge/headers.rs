//! Header-name hygiene: names with `_` are dropped, refused or let through (with the
//! gateway's own headers protected in every spelling); the client's spelling of names is
//! kept or forgotten.

use super::Refusal;
use crate::config::UnderscoreHeaders;
use http::{HeaderMap, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};

/// Drops the record of how the client spelt each header name: Pingora keeps it in a second
/// header map that every later insert, removal and the upstream copy pay for twice. The
/// upstream then gets names in lower case (a few framing ones, like `Host`, Title-Cased by
/// Pingora). A request whose target Pingora would forward as raw bytes that differ from its
/// parsed URI (an absolute-form target, or bytes the URI parser escaped) keeps it: rebuilt
/// without the map, the header would be forwarded with the URI's form of the target.
pub fn forget_case(req: &mut RequestHeader) {
    let target_is_uri =
        req.uri.path_and_query().map(|p| p.as_str().as_bytes()) == Some(req.raw_path());
    if !req.has_case() || !target_is_uri {
        return;
    }
    let spelt = std::mem::replace(
        req,
        RequestHeader::from(http::Request::new(()).into_parts().0),
    );
    *req = RequestHeader::from(http::request::Parts::from(spelt));
}

/// The same for a response from the upstream (a reason phrase of its own is kept).
pub fn forget_response_case(resp: &mut ResponseHeader) {
    if !resp.has_case() {
        return;
    }
    let reason = resp.get_reason_phrase().map(str::to_owned);
    let spelt = std::mem::replace(
        resp,
        ResponseHeader::from(http::Response::new(()).into_parts().0),
    );
    *resp = ResponseHeader::from(http::response::Parts::from(spelt));
    if let Some(reason) = reason {
        // Cannot fail: the phrase was accepted when the upstream's response was parsed.
        let _ = resp.set_reason_phrase(Some(&reason));
    }
}

/// The names in `headers` that contain `_`. Allocates only when there is one.
fn names_with_underscore(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|n| n.as_str().as_bytes().contains(&b'_'))
        .cloned()
        .collect()
}

/// Whether `name`, read with `_` as `-` (as CGI does), is one of `protected`.
fn spells_protected(name: &HeaderName, protected: &[HeaderName]) -> bool {
    let n = name.as_str().as_bytes();
    protected.iter().any(|p| {
        let p = p.as_str().as_bytes();
        p.len() == n.len()
            && p.iter()
                .zip(n)
                .all(|(&a, &b)| a == b || (a == b'-' && b == b'_'))
    })
}

/// Which headers with `_` in their name to remove from a request (empty: none), or
/// an error when the request must be refused. `protected` are the (lower-case, `-`)
/// names the gateway sets itself: in `allow` mode their `_` spellings are still removed.
pub fn underscored(
    headers: &HeaderMap,
    action: UnderscoreHeaders,
    protected: &[HeaderName],
) -> Result<Vec<HeaderName>, Refusal> {
    // http lower-cases header names, so one byte search per name is the whole check.
    if !headers
        .keys()
        .any(|n| n.as_str().as_bytes().contains(&b'_'))
    {
        return Ok(Vec::new());
    }
    match action {
        UnderscoreHeaders::Reject => Err(Refusal::UnderscoreHeader),
        UnderscoreHeaders::Drop => Ok(names_with_underscore(headers)),
        UnderscoreHeaders::Allow => Ok(names_with_underscore(headers)
            .into_iter()
            .filter(|n| spells_protected(n, protected))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_spelling_is_forgotten_unless_the_target_is_not_the_uri() {
        let mut req = RequestHeader::build("GET", b"/a/b?q=1", None).unwrap();
        req.append_header("X-Custom", "1").unwrap();
        forget_case(&mut req);
        assert!(!req.has_case());
        assert_eq!(req.raw_path(), b"/a/b?q=1");
        assert_eq!(req.headers["x-custom"], "1");
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"x-custom: 1\r\n");
        // An absolute-form target is forwarded as sent: the spelling map stays with it.
        let mut req = RequestHeader::build("GET", b"http://a.example/x", None).unwrap();
        req.append_header("X-Custom", "1").unwrap();
        forget_case(&mut req);
        assert!(req.has_case());
    }

    fn map(names: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for n in names {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                "v".parse().unwrap(),
            );
        }
        m
    }

    fn protected() -> Vec<HeaderName> {
        vec![
            HeaderName::from_static("x-consumer-id"),
            HeaderName::from_static("x-forwarded-for"),
        ]
    }

    #[test]
    fn clean_requests_pass_untouched() {
        let m = map(&["host", "x-consumer-id", "accept"]);
        for action in [
            UnderscoreHeaders::Drop,
            UnderscoreHeaders::Reject,
            UnderscoreHeaders::Allow,
        ] {
            assert_eq!(underscored(&m, action, &protected()), Ok(vec![]));
        }
    }

    #[test]
    fn drop_removes_every_underscored_name() {
        let m = map(&["X_Consumer_ID", "x_custom", "accept"]);
        let mut got = underscored(&m, UnderscoreHeaders::Drop, &protected()).unwrap();
        got.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(got, vec!["x_consumer_id", "x_custom"]);
    }

    #[test]
    fn reject_refuses() {
        let m = map(&["x_custom"]);
        assert_eq!(
            underscored(&m, UnderscoreHeaders::Reject, &protected()),
            Err(Refusal::UnderscoreHeader)
        );
    }

    #[test]
    fn allow_still_removes_spellings_of_gateway_headers() {
        let m = map(&[
            "X_Consumer_ID",
            "x-consumer_id",
            "x_forwarded_for",
            "x_custom",
        ]);
        let mut got = underscored(&m, UnderscoreHeaders::Allow, &protected()).unwrap();
        got.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(
            got,
            vec!["x-consumer_id", "x_consumer_id", "x_forwarded_for"]
        );
    }
}
