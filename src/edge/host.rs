//! The `Host` header in one canonical spelling: lower case, no trailing dot, a numeric
//! port. `admin.example.`, `ADMIN.example` and `admin.example` are one host to DNS, nginx
//! and most frameworks, so they must be one host to the router too.

use std::borrow::Cow;

/// Why a host is refused (the client gets a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// Empty, or characters no host name or IP literal has.
    Invalid,
    /// A port that is not 1-65535 in decimal.
    BadPort,
}

fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

/// Whether `host` (without port) is already canonical: the common case, one pass.
fn is_canonical_name(host: &[u8]) -> bool {
    !host.is_empty()
        && host.last() != Some(&b'.')
        && host
            .iter()
            .all(|&b| host_byte(b) && !b.is_ascii_uppercase())
}

/// The canonical `host[:port]` of a `Host` header value or an absolute-form authority.
pub fn canonical_host(value: &str) -> Result<Cow<'_, str>, HostError> {
    let (host, port) = split_port(value)?;
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HostError::BadPort);
        }
        if !matches!(p.parse::<u32>(), Ok(1..=65535)) {
            return Err(HostError::BadPort);
        }
    }
    let bracketed = host.starts_with('[');
    if bracketed {
        // An IPv6 literal: hex digits, `:` and `.` in brackets; compared case-insensitively.
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(HostError::Invalid);
        }
    } else if is_canonical_name(host.as_bytes()) {
        return Ok(Cow::Borrowed(value));
    }
    let name = match bracketed {
        true => host,
        false => host.strip_suffix('.').unwrap_or(host),
    };
    if !bracketed && (name.is_empty() || !name.bytes().all(host_byte)) {
        return Err(HostError::Invalid);
    }
    let mut out = name.to_ascii_lowercase();
    if let Some(p) = port {
        out.push(':');
        out.push_str(p);
    }
    if out == value {
        return Ok(Cow::Borrowed(value));
    }
    Ok(Cow::Owned(out))
}

/// `host` and the port text after its last `:` (IPv6 literals in brackets).
fn split_port(value: &str) -> Result<(&str, Option<&str>), HostError> {
    if value.starts_with('[') {
        let end = value.find(']').ok_or(HostError::Invalid)?;
        let (host, rest) = value.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(HostError::Invalid),
        };
    }
    Ok(match value.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (value, None),
    })
}

/// The authority of an absolute-form target (`http://host:port/path`), if it is one.
/// `Err` when it carries userinfo (`http://user@host/`), which HTTP forbids.
pub fn absolute_form_authority(target: &[u8]) -> Option<Result<&str, HostError>> {
    let text = std::str::from_utf8(target).ok()?;
    let scheme_end = text.find("://")?;
    let scheme = &text[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &text[scheme_end + 3..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') || authority.is_empty() {
        return Some(Err(HostError::Invalid));
    }
    Some(Ok(authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_hosts_are_borrowed() {
        for h in [
            "a.example",
            "a.example:8080",
            "127.0.0.1:80",
            "[::1]:8000",
            "[::1]",
            "x_y.internal",
        ] {
            assert!(matches!(canonical_host(h), Ok(Cow::Borrowed(_))), "{h}");
        }
    }

    #[test]
    fn spellings_of_one_host_become_one() {
        assert_eq!(canonical_host("Admin.Example").unwrap(), "admin.example");
        assert_eq!(canonical_host("admin.example.").unwrap(), "admin.example");
        assert_eq!(
            canonical_host("ADMIN.example.:8080").unwrap(),
            "admin.example:8080"
        );
        assert_eq!(canonical_host("[::ABCD]:80").unwrap(), "[::abcd]:80");
    }

    #[test]
    fn refusals() {
        for (h, e) in [
            ("admin.example:8o", HostError::BadPort),
            ("admin.example:", HostError::BadPort),
            ("admin.example:0", HostError::BadPort),
            ("admin.example:65536", HostError::BadPort),
            ("a b", HostError::Invalid),
            ("a/b", HostError::Invalid),
            ("", HostError::Invalid),
            (".", HostError::Invalid),
            ("[::1", HostError::Invalid),
            ("[::1]x", HostError::Invalid),
            ("[zz]", HostError::Invalid),
            ("a@b", HostError::Invalid),
        ] {
            assert_eq!(canonical_host(h), Err(e), "{h:?}");
        }
    }

    #[test]
    fn absolute_form_authorities() {
        assert_eq!(
            absolute_form_authority(b"http://a.example/x"),
            Some(Ok("a.example"))
        );
        assert_eq!(absolute_form_authority(b"HTTPS://a:1?q"), Some(Ok("a:1")));
        assert_eq!(
            absolute_form_authority(b"http://u@a/x"),
            Some(Err(HostError::Invalid))
        );
        assert_eq!(absolute_form_authority(b"/x"), None);
        assert_eq!(absolute_form_authority(b"ftp://a/x"), None);
    }
}
