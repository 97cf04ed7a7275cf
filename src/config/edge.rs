//! The `edge` section: how request paths are normalised, what happens to header names
//! with underscores, and whether header names keep the client's spelling. Defaults are the safe values an edge proxy needs (see SECURITY.md).

use serde::Deserialize;

/// What to do with an encoded `/` or `\` (`%2F`, `%5C`) in a path.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// 400: upstreams disagree on whether `%2F` separates segments (Envoy's REJECT_REQUEST).
    #[default]
    Reject,
    /// Forward it encoded; it never separates segments for routing.
    Keep,
}

/// What to do with a literal `;` in a path (a path parameter, `/admin;x/secret`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PathParameters {
    /// 400: Tomcat, Jetty and Spring drop `;...` from each segment, so `/admin;x` is
    /// `/admin` to them while it is another path to the router.
    #[default]
    Reject,
    /// Forward them (only `.;x` and `..;x` are still refused).
    Allow,
}

/// `edge.path`: normalisation before routing (Envoy's `normalize_path` + `merge_slashes`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PathConfig {
    /// Decode percent-encoded unreserved characters and remove `.` / `..` segments.
    /// Off: the path is routed and forwarded as sent (control bytes are still refused).
    pub normalize: bool,
    /// `//a` is `/a`.
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
    pub parameters: PathParameters,
}

impl Default for PathConfig {
    fn default() -> Self {
        Self {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            parameters: PathParameters::Reject,
        }
    }
}

/// What to do with a request header whose name contains `_`. CGI, WSGI, PHP and many
/// frameworks read `X_Consumer_ID` and `X-Consumer-ID` as the same variable, so a name
/// with `_` can smuggle a value past a rule about the `-` spelling.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Remove the header and proxy the request (nginx's `underscores_in_headers off`).
    #[default]
    Drop,
    /// Answer 400 (Envoy's `headers_with_underscores_action: REJECT_REQUEST`).
    Reject,
    /// Forward it, except the `_` spellings of headers the gateway sets itself.
    Allow,
}

/// The `edge` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    pub path: PathConfig,
    pub headers_with_underscores: UnderscoreHeaders,
    /// Pass header names in the spelling they came in: the client's to the upstream, the
    /// upstream's to the client (nginx). Off (the default): in lower case, as HAProxy and
    /// Envoy pass them and HTTP/2 requires (HTTP/1.1 names are case-insensitive); Pingora
    /// Title-Cases a few framing ones such as `Host`. Pingora keeps a second header map
    /// for the spelling; without it a request costs ~6,000 fewer instructions
    /// (loadtest/callgrind.sh).
    pub preserve_header_case: bool,
}
