//! The `correlation`, `access_log` and `trusted_proxies` sections.

use super::*;

#[derive(Debug, Clone)]
pub struct CorrelationConfig {
    pub header: http::HeaderName,
    pub trust_incoming: bool,
    pub traceparent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDestination {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub destination: Option<LogDestination>,
    pub buffer_lines: usize,
}

// Ranges of the `access_log` section.
/// Lines waiting for the writer thread, a few hundred bytes each.
const BUFFER_LINES: Range<usize> = Range::new(1, 1_000_000);

impl Validator<'_> {
    pub(super) fn correlation(&mut self, c: raw::Correlation) -> CorrelationConfig {
        let header = match http::HeaderName::from_bytes(c.header.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                self.problem(
                    "correlation.header",
                    format!("\"{}\" is not a valid header name", c.header),
                );
                http::HeaderName::from_static("x-request-id")
            }
        };
        CorrelationConfig {
            header,
            trust_incoming: c.trust_incoming,
            traceparent: c.traceparent,
        }
    }

    pub(super) fn access_log(&mut self, a: raw::AccessLog) -> AccessLogConfig {
        let buffer_lines = self.int("access_log.buffer_lines", a.buffer_lines, BUFFER_LINES);
        let destination = match a.destination.as_str() {
            _ if !a.enabled => None,
            "stdout" | "-" => Some(LogDestination::Stdout),
            "" => {
                self.problem(
                    "access_log.destination",
                    "must be \"stdout\" or a file path",
                );
                None
            }
            p => Some(LogDestination::File(PathBuf::from(p))),
        };
        AccessLogConfig {
            destination,
            buffer_lines,
        }
    }

    pub(super) fn trusted_proxies(&mut self, list: Vec<String>) -> Vec<ipnet::IpNet> {
        let mut nets = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let parsed = s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => nets.push(n.trunc()),
                Err(_) => self.problem(
                    format!("trusted_proxies[{i}]"),
                    format!("\"{s}\" is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                ),
            }
        }
        nets
    }
}

/// The section as written: serde structs that reject unknown keys, and the one home of
/// every default of the section (validation checks ranges and never invents a value).
pub(super) mod raw {
    use super::super::values::Int;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Correlation {
        pub header: String,
        pub trust_incoming: bool,
        pub traceparent: bool,
    }

    impl Default for Correlation {
        fn default() -> Self {
            Self {
                header: "X-Request-ID".into(),
                trust_incoming: true,
                traceparent: true,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct AccessLog {
        pub enabled: bool,
        /// `stdout`, or a file path.
        pub destination: String,
        pub buffer_lines: Int,
    }

    impl Default for AccessLog {
        fn default() -> Self {
            Self {
                enabled: true,
                destination: "stdout".into(),
                buffer_lines: Int(65_536),
            }
        }
    }
}
