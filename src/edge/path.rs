//! Request-path normalisation: one canonical spelling of the path is routed, authorised,
//! rate-limited and forwarded, so that `/%61dmin`, `//admin` or `/public/../admin` cannot
//! reach `/admin` past a rule written for `/admin`.
//!
//! ```text
//! raw path ──► percent-decode unreserved (%61 -> a, %2e -> .), upper-case other escapes
//!          ──► refuse %2F %5C (encoded / and \), raw \, control bytes (raw or encoded)
//!          ──► merge repeated slashes
//!          ──► remove dot segments (RFC 3986 5.2.4); climbing above / is refused
//! ```
//!
//! The result is a fixed point: normalising it again returns it unchanged, and it never
//! contains `//`, `/./` or `/../` (property-tested below).

use crate::config::{EscapedSlashes, PathConfig, PathParameters};
use std::borrow::Cow;

/// Why a path is refused (the client gets a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    EncodedSlash,
    Backslash,
    ControlByte,
    AboveRoot,
    /// `..;x` or `.;x`: Tomcat and Jetty read these as dot segments, others do not.
    DotSegmentParams,
    NotUtf8,
    /// A literal `;` (`edge.path.parameters: reject`).
    Parameters,
}

impl PathError {
    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "not_absolute",
            PathError::BadEscape => "bad_escape",
            PathError::EncodedSlash => "encoded_slash",
            PathError::Backslash => "backslash",
            PathError::ControlByte => "control_byte",
            PathError::AboveRoot => "above_root",
            PathError::DotSegmentParams => "dot_segment_params",
            PathError::NotUtf8 => "not_utf8",
            PathError::Parameters => "path_parameters",
        }
    }

    /// The text a client reads in the 400 body (and `Display`).
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path must start with '/'",
            PathError::BadEscape => "malformed percent-encoding in path",
            PathError::EncodedSlash => "encoded slash or backslash in path",
            PathError::Backslash => "backslash in path",
            PathError::ControlByte => "control character in path",
            PathError::AboveRoot => "path climbs above the root",
            PathError::DotSegmentParams => "dot segment with parameters in path",
            PathError::NotUtf8 => "path is not valid UTF-8",
            PathError::Parameters => "path parameter (';') in path",
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathError {}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// RFC 3986 2.3: the characters whose percent-encoding means the same as the character.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `path` (no query) is already canonical under `config`: the common case, checked
/// in one pass without allocating.
fn is_canonical(path: &[u8], config: &PathConfig) -> bool {
    let mut prev = 0u8;
    for &b in path {
        if b == b'%' || b == b'\\' || b == b';' || is_control(b) {
            return false;
        }
        if prev == b'/' && (b == b'.' || (b == b'/' && config.merge_slashes)) {
            return false;
        }
        prev = b;
    }
    true
}

/// Decodes what may be decoded and refuses what must not pass; dot segments are left for
/// the next step.
fn decode(path: &[u8], config: &PathConfig) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        i += 1;
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    path.get(i).copied().and_then(hex_value),
                    path.get(i + 1).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::BadEscape);
                };
                i += 2;
                let v = hi << 4 | lo;
                if is_control(v) {
                    return Err(PathError::ControlByte);
                }
                if v == b'/' || v == b'\\' {
                    if config.escaped_slashes == EscapedSlashes::Reject {
                        return Err(PathError::EncodedSlash);
                    }
                } else if is_unreserved(v) {
                    out.push(v);
                    continue;
                }
                // Kept encoded, in the canonical upper-case spelling (RFC 3986 6.2.2.1).
                out.extend_from_slice(&[
                    b'%',
                    HEX_UPPER[usize::from(hi)],
                    HEX_UPPER[usize::from(lo)],
                ]);
            }
            b'\\' => return Err(PathError::Backslash),
            b';' if config.parameters == PathParameters::Reject => {
                return Err(PathError::Parameters)
            }
            _ if is_control(b) => return Err(PathError::ControlByte),
            _ => out.push(b),
        }
    }
    Ok(out)
}

/// The path in its canonical form, or why it is refused. Borrows when nothing changes.
///
/// `path` is the path component only (no query). With `config.normalize` off, the path
/// is only checked for control bytes.
pub fn normalize<'a>(path: &'a str, config: &PathConfig) -> Result<Cow<'a, str>, PathError> {
    let bytes = path.as_bytes();
    if !config.normalize {
        return match bytes.iter().any(|&b| is_control(b)) {
            true => Err(PathError::ControlByte),
            false => Ok(Cow::Borrowed(path)),
        };
    }
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(bytes, config) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(bytes, config)?;
    let out = remove_dot_segments(&decoded, config.merge_slashes)?;
    // Only ASCII was decoded and other bytes were copied whole, so this cannot fail on a
    // `&str` input; the error is kept rather than assumed away.
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::NotUtf8)
}

/// RFC 3986 5.2.4 on an absolute path, segment by segment, with empty segments merged
/// when `merge_slashes` is set. `..` above the root is an error, not silently dropped
/// (as nginx answers 400): a client that writes it is probing. Writes straight into the
/// output: `..` truncates it back to the previous `/`.
fn remove_dot_segments(path: &[u8], merge_slashes: bool) -> Result<Vec<u8>, PathError> {
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    // The path starts with '/', so the first split item is the empty string before it.
    let mut segments = path.split(|&b| b == b'/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(seg) = segments.next() {
        let is_last = segments.peek().is_none();
        let name = seg.split(|&b| b == b';').next().unwrap_or(seg);
        trailing_slash = false;
        match name {
            b"." | b".." if name.len() != seg.len() => return Err(PathError::DotSegmentParams),
            b"." => trailing_slash = is_last,
            b".." => {
                // `out` is "/s1/s2/..": drop the last "/segment", or climb above the root.
                let cut = out
                    .iter()
                    .rposition(|&b| b == b'/')
                    .ok_or(PathError::AboveRoot)?;
                out.truncate(cut);
                trailing_slash = is_last;
            }
            b"" if is_last => trailing_slash = true,
            b"" if merge_slashes => {}
            _ => {
                out.push(b'/');
                out.extend_from_slice(seg);
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn on() -> PathConfig {
        PathConfig::default()
    }

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p, &on()).map(Cow::into_owned)
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in [
            "/",
            "/api",
            "/api/v1/users",
            "/a.b/c-d_e~f",
            "/x/",
            "/a/b..c/c.",
            "/a:b=c",
        ] {
            assert!(matches!(normalize(p, &on()), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn the_bypass_variants_become_the_protected_path() {
        assert_eq!(norm("/%61dmin/secret").unwrap(), "/admin/secret");
        assert_eq!(norm("/%61%64%6D%69%6E/secret").unwrap(), "/admin/secret");
        assert_eq!(norm("//admin/secret").unwrap(), "/admin/secret");
        assert_eq!(norm("///admin//secret").unwrap(), "/admin/secret");
        assert_eq!(norm("/public/../admin/secret").unwrap(), "/admin/secret");
        assert_eq!(
            norm("/public/%2e%2e/admin/secret").unwrap(),
            "/admin/secret"
        );
        assert_eq!(
            norm("/public/%2E%2e/admin/secret").unwrap(),
            "/admin/secret"
        );
        assert_eq!(norm("/public/.%2e/admin/secret").unwrap(), "/admin/secret");
        assert_eq!(norm("/./admin/./secret").unwrap(), "/admin/secret");
        assert_eq!(norm("/public/..//admin/secret").unwrap(), "/admin/secret");
    }

    #[test]
    fn dot_segments_follow_rfc3986() {
        assert_eq!(norm("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/.").unwrap(), "/");
        assert_eq!(norm("/a/b/").unwrap(), "/a/b/");
        // Not dot segments: dots inside names stay.
        assert_eq!(norm("/a/...").unwrap(), "/a/...");
        assert_eq!(norm("/a/.b/..c").unwrap(), "/a/.b/..c");
    }

    #[test]
    fn escapes_are_decoded_only_when_unreserved() {
        assert_eq!(norm("/%7euser").unwrap(), "/~user");
        assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
        assert_eq!(norm("/a%3fb").unwrap(), "/a%3Fb", "hex made upper case");
        assert_eq!(
            norm("/100%25").unwrap(),
            "/100%25",
            "an encoded % stays encoded"
        );
        assert_eq!(norm("/%2541").unwrap(), "/%2541", "decoded once, not twice");
        assert_eq!(norm("/caf%C3%A9").unwrap(), "/caf%C3%A9");
        assert_eq!(norm("/café").unwrap(), "/café");
    }

    #[test]
    fn refusals() {
        for (p, e) in [
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%5cb", PathError::EncodedSlash),
            ("/a%5Cb", PathError::EncodedSlash),
            ("/a\\b", PathError::Backslash),
            ("/a%00b", PathError::ControlByte),
            ("/a%0d%0aX-Evil:1", PathError::ControlByte),
            ("/a%7f", PathError::ControlByte),
            ("/a\u{1}b", PathError::ControlByte),
            ("/a\tb", PathError::ControlByte),
            ("/..", PathError::AboveRoot),
            ("/../admin", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("/%2e%2e/admin", PathError::AboveRoot),
            ("/a%", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/a%%41", PathError::BadEscape),
            ("/public/..;/admin", PathError::Parameters),
            ("/admin;x/secret", PathError::Parameters),
            ("/admin;/secret", PathError::Parameters),
            ("admin", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ] {
            assert_eq!(norm(p), Err(e), "{p:?}");
        }
    }

    #[test]
    fn options_switch_steps_off() {
        let keep = PathConfig {
            escaped_slashes: EscapedSlashes::Keep,
            ..on()
        };
        assert_eq!(normalize("/a%2fb", &keep).unwrap(), "/a%2Fb");
        let no_merge = PathConfig {
            merge_slashes: false,
            ..on()
        };
        assert_eq!(normalize("//a//b", &no_merge).unwrap(), "//a//b");
        assert_eq!(normalize("//a/./b", &no_merge).unwrap(), "//a/b");
        let off = PathConfig {
            normalize: false,
            ..on()
        };
        assert_eq!(normalize("/a/../%2f", &off).unwrap(), "/a/../%2f");
        assert_eq!(normalize("/a\u{0}", &off), Err(PathError::ControlByte));
        let params = PathConfig {
            parameters: PathParameters::Allow,
            ..on()
        };
        assert_eq!(normalize("/a;x/b", &params).unwrap(), "/a;x/b");
        assert_eq!(
            normalize("/a/..;x/b", &params),
            Err(PathError::DotSegmentParams)
        );
        assert_eq!(
            normalize("/a/.;x/b", &params),
            Err(PathError::DotSegmentParams)
        );
        assert_eq!(
            normalize("/a/%3b", &on()).unwrap(),
            "/a/%3B",
            "an encoded ';' is data"
        );
    }

    /// Paths built from the characters that matter: separators, dots, escapes of both.
    fn path_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E".to_string()),
            Just("%2f".to_string()),
            Just("%25".to_string()),
            Just("%41".to_string()),
            Just("%7e".to_string()),
            Just("%3b".to_string()),
            Just(";".to_string()),
            Just("%".to_string()),
            Just("\\".to_string()),
            "[a-z]{1,3}",
            "[ -~]{1,4}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn normalising_twice_is_normalising_once(p in path_strategy()) {
            if let Ok(once) = norm(&p) {
                prop_assert_eq!(norm(&once), Ok(once.clone()));
            }
        }

        #[test]
        fn results_have_no_dot_segments_or_double_slashes(p in path_strategy()) {
            if let Ok(n) = norm(&p) {
                prop_assert!(n.starts_with('/'));
                prop_assert!(!n.contains("//"), "{}", n);
                prop_assert!(!n.contains("/./") && !n.ends_with("/."), "{}", n);
                prop_assert!(!n.contains("/../") && !n.ends_with("/.."), "{}", n);
                prop_assert!(!n.bytes().any(is_control));
                prop_assert!(!n.contains('\\'));
            }
        }

        #[test]
        fn never_panics_on_any_text(p in "\\PC{0,64}") {
            let _ = norm(&p);
        }
    }
}
