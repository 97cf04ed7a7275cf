//! Header-name hygiene: names with `_` are dropped, refused or let through (with the
//! gateway's own headers protected in every spelling).

use super::Refusal;
use crate::config::UnderscoreHeaders;
use http::{HeaderMap, HeaderName};

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
