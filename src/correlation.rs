//! Request ids and W3C trace context: read a sane incoming value or mint a new one.
//!
//! Pure functions over header values, so they are tested without a socket.

use http::HeaderValue;

/// Longest incoming request id we keep; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Where the request id of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// The client sent a valid id and the config trusts incoming ids.
    Kept,
    /// The gateway minted it (none sent, not trusted, or not valid).
    Minted,
}

/// True for 1 to 128 bytes of `[A-Za-z0-9._:-]`. Anything else (CRLF, spaces,
/// quotes, unicode, overlong values) is never forwarded or logged.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Keeps a valid, trusted incoming id, or mints a UUIDv7. `None` only when none is kept
/// and none could be minted (see [`MintedId::header_value`]): the request then goes
/// without an id rather than with an invented one.
pub fn assign(
    incoming: Option<&HeaderValue>,
    trust_incoming: bool,
) -> Option<(HeaderValue, IdSource)> {
    match incoming {
        Some(v) if trust_incoming && is_valid_request_id(v.as_bytes()) => {
            Some((v.clone(), IdSource::Kept))
        }
        _ => Some((mint_request_id()?, IdSource::Minted)),
    }
}

/// A new request id as a header value: [`MintedId::mint`], see [`MintedId::header_value`].
pub fn mint_request_id() -> Option<HeaderValue> {
    MintedId::mint().header_value()
}

/// A request id the gateway minted: a UUIDv7, time-ordered, so ids sort by arrival in
/// logs. Its text (`Display`) is the hyphenated lower-case UUID: 36 bytes of `[0-9a-f-]`,
/// a valid request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MintedId(uuid::Uuid);

impl MintedId {
    /// A new id, later than every id minted before it by this process.
    pub fn mint() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The id as a header value. `http` accepts every byte of `[0-9a-f-]`, so this is
    /// always `Some`; it is an `Option` only because `http`'s conversion is checked, and
    /// a caller without a value goes without one instead of inventing one.
    pub fn header_value(self) -> Option<HeaderValue> {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        HeaderValue::from_str(self.0.hyphenated().encode_lower(&mut buf)).ok()
    }
}

impl std::fmt::Display for MintedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

fn is_lower_hex(s: &[u8]) -> bool {
    s.iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Validates a W3C `traceparent` (trace-context level 1): `VV-<32 hex>-<16 hex>-<2 hex>`,
/// lower-case, version not `ff`, trace id and parent id not all zeros. Later versions
/// may append `-...` fields, which are accepted as the spec asks.
pub fn is_valid_traceparent(tp: &[u8]) -> bool {
    if tp.len() < 55 {
        return false;
    }
    let (version, trace, parent, flags) = (&tp[0..2], &tp[3..35], &tp[36..52], &tp[53..55]);
    if tp[2] != b'-' || tp[35] != b'-' || tp[52] != b'-' {
        return false;
    }
    if !(is_lower_hex(version)
        && is_lower_hex(trace)
        && is_lower_hex(parent)
        && is_lower_hex(flags))
    {
        return false;
    }
    if version == b"ff" || trace.iter().all(|&b| b == b'0') || parent.iter().all(|&b| b == b'0') {
        return false;
    }
    match version {
        b"00" => tp.len() == 55,
        _ => tp.len() == 55 || tp[55] == b'-',
    }
}

/// The trace id (32 hex chars) of a valid traceparent.
pub fn trace_id(tp: &HeaderValue) -> &str {
    tp.to_str().ok().and_then(|s| s.get(3..35)).unwrap_or("")
}

/// A new traceparent with a random trace id and parent id, sampled. Always `Some` (55
/// bytes of `[0-9a-f-]`, which `http` accepts); an `Option` only because `http`'s
/// conversion is checked. A caller without one sends no trace context: a fixed one
/// would join unrelated requests into one trace.
pub fn mint_traceparent() -> Option<HeaderValue> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // uuid's v4 generator is a fast thread-local CSPRNG; a v4 UUID has 122 random bits.
    let trace = uuid::Uuid::new_v4().as_u128() | 1; // never all zeros
    let span = uuid::Uuid::new_v4().as_u128() as u64 | 1;
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    for i in 0..32 {
        out[3 + i] = HEX[((trace >> (124 - 4 * i)) & 0xf) as usize];
    }
    for i in 0..16 {
        out[36 + i] = HEX[((span >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        assert!(is_valid_request_id(b"abc-123_X.y:z"));
        assert!(is_valid_request_id(&[b'a'; 128]));
        assert!(!is_valid_request_id(&[b'a'; 129]));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"a b"));
        assert!(!is_valid_request_id(b"a\r\nX-Evil: 1"));
        assert!(!is_valid_request_id("caf\u{e9}".as_bytes()));
        assert!(!is_valid_request_id(b"<script>"));
    }

    #[test]
    fn assign_keeps_or_mints() {
        let good = HeaderValue::from_static("req-1");
        assert_eq!(
            assign(Some(&good), true),
            Some((good.clone(), IdSource::Kept))
        );
        let (id, src) = assign(Some(&good), false).unwrap();
        assert_eq!(src, IdSource::Minted);
        assert_ne!(id, good);
        let bad = HeaderValue::from_static("has space");
        let (id, src) = assign(Some(&bad), true).unwrap();
        assert_eq!(src, IdSource::Minted);
        assert!(is_valid_request_id(id.as_bytes()));
        let (id, src) = assign(None, true).unwrap();
        assert_eq!(src, IdSource::Minted);
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn minted_ids_are_unique_and_ordered() {
        let a = mint_request_id().unwrap();
        let b = mint_request_id().unwrap();
        assert_ne!(a, b);
        assert!(a.as_bytes() < b.as_bytes(), "UUIDv7 ids sort by creation");
        assert_eq!(a.as_bytes()[14], b'7', "version nibble");
    }

    /// The text and the header value of a minted id are the same 36 bytes, always a
    /// valid request id: the header value is never missing, nor anything else.
    #[test]
    fn a_minted_id_is_its_text_as_a_header_value() {
        for _ in 0..1000 {
            let id = MintedId::mint();
            let text = id.to_string();
            assert_eq!(text.len(), 36);
            assert!(is_valid_request_id(text.as_bytes()), "{text}");
            assert!(text
                .bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(id.header_value().unwrap(), text.as_str());
        }
        let (a, b) = (MintedId::mint(), MintedId::mint());
        assert!(
            a < b && a.to_string() < b.to_string(),
            "ordered as text too"
        );
    }

    #[test]
    fn traceparent_rules() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_valid_traceparent(ok));
        assert!(!is_valid_traceparent(
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"
        ));
        assert!(!is_valid_traceparent(
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        assert!(is_valid_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        assert!(!is_valid_traceparent(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!is_valid_traceparent(
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
    }

    #[test]
    fn minted_traceparent_is_valid() {
        let mut traces = std::collections::HashSet::new();
        for _ in 0..1000 {
            let tp = mint_traceparent().unwrap();
            assert!(is_valid_traceparent(tp.as_bytes()), "{tp:?}");
            assert_eq!(trace_id(&tp).len(), 32);
            assert!(tp.as_bytes().starts_with(b"00-") && tp.as_bytes().ends_with(b"-01"));
            traces.insert(trace_id(&tp).to_string());
        }
        assert_eq!(traces.len(), 1000, "every request its own trace");
    }
}
