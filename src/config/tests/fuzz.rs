//! Mutated and random configs: the loader never panics and every problem has a
//! message and a line inside the file.

use super::*;
use proptest::prelude::*;

const SHIPPED: [&str; 3] = [
    include_str!("../../../conf/gateway.yaml"),
    include_str!("../../../conf/multi-service.yaml"),
    include_str!("../../../conf/auth.yaml"),
];

/// Values that trip loaders: wrong kinds, huge and negative numbers, odd durations,
/// tags, anchors, aliases, merge keys.
const ODD: &[&str] = &[
    "",
    "~",
    "0",
    "-1",
    "1.5",
    ".nan",
    "-.inf",
    "1e400",
    "0x7fffffffffffffff",
    "0o17",
    "9223372036854775808",
    "18446744073709551616",
    "99999999999999999999999",
    "-99999999999999999999999",
    "340282366920938463463374607431768211456",
    "0s",
    "1ns",
    "500000000y",
    "99999999999999999999y",
    "-1s",
    "1h 1ns",
    "soon",
    "[]",
    "{}",
    "[1, [2, {}]]",
    "{a: {b: c}}",
    "!tag x",
    "!!int x",
    "!!str 5",
    "!x {}",
    "&a x",
    "*a",
    "*nope",
    "'q'",
    "\"\\u0000\"",
    "|\n  block",
    "true",
    "null",
    "<<: *a",
    "? k",
    "- item",
    "api",
    "anonymous",
    "/",
    "header:",
    "header:X",
    "cookie:",
    "127.0.0.1:1",
    "redis://",
    "HS256",
    "RS256",
];

const KEYS: &[&str] = &[
    "listen",
    "proxy",
    "admin",
    "server",
    "threads",
    "grace_period",
    "upstream_keepalive_pool",
    "upstream_idle_timeout",
    "ping",
    "enabled",
    "path",
    "rate_limit",
    "upstreams",
    "api",
    "backends",
    "addr",
    "weight",
    "selection",
    "hash_key",
    "health_check",
    "type",
    "expected_status",
    "interval",
    "timeout",
    "healthy_threshold",
    "circuit_breaker",
    "consecutive_failures",
    "failure_ratio",
    "window",
    "open_duration",
    "max_open_duration",
    "close_after",
    "routes",
    "name",
    "host",
    "path_prefix",
    "upstream",
    "connect_timeout",
    "retries",
    "auth",
    "tiers",
    "correlation",
    "header",
    "access_log",
    "buffer_lines",
    "trusted_proxies",
    "rate_limits",
    "redis",
    "url",
    "lease_min",
    "lease_max",
    "lease_wait",
    "cold_start_allowance",
    "policies",
    "p",
    "rate",
    "per",
    "burst",
    "key",
    "max_keys",
    "jwt",
    "api_keys",
    "cache_size",
    "issuers",
    "issuer",
    "audience",
    "keys",
    "leeway",
    "default_tier",
    "algorithm",
    "secret",
    "consumer",
    "tier",
    "sha256",
    "bogus",
];

fn check(text: &str) -> Result<(), TestCaseError> {
    if let Err(problems) = parse(text) {
        prop_assert!(!problems.is_empty(), "no problem listed for:\n{text}");
        for p in &problems {
            prop_assert!(!p.message.is_empty(), "{p:?}");
            prop_assert!(
                p.line
                    .is_none_or(|l| l >= 1 && l <= text.lines().count() + 1),
                "{p:?} in:\n{text}"
            );
        }
    }
    Ok(())
}

/// Edits of a config's lines; each `(kind, a, b)` is one [`edit`].
fn mutate(text: &str, edits: &[(u8, usize, usize)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for &(kind, a, b) in edits {
        if lines.is_empty() {
            break;
        }
        edit(&mut lines, kind, a, b);
    }
    lines.join("\n") + "\n"
}

/// One edit of a non-empty list of lines; `kind` picks the edit, `a` and `b` what and where.
fn edit(lines: &mut Vec<String>, kind: u8, a: usize, b: usize) {
    let i = a % lines.len();
    let odd = ODD[b % ODD.len()];
    match kind {
        0 => {
            // Replace the value.
            let line = &lines[i];
            lines[i] = match line.find(':') {
                Some(c) => format!("{} {odd}", &line[..=c]),
                None => format!("{line} {odd}"),
            };
        }
        1 => {
            lines.remove(i);
        }
        2 => {
            let copy = lines[i].clone();
            lines.insert(i, copy);
        }
        3 => {
            // Indent or outdent.
            lines[i] = if b.is_multiple_of(2) {
                format!("  {}", lines[i])
            } else {
                lines[i].trim_start().to_string()
            };
        }
        4 => {
            // A key from anywhere in the schema.
            let indent = lines[i].len() - lines[i].trim_start().len();
            let key = KEYS[b % KEYS.len()];
            lines.insert(i, format!("{}{key}: {odd}", " ".repeat(indent)));
        }
        5 => {
            let j = b % lines.len();
            lines.swap(i, j);
        }
        _ => {
            // A YAML special character somewhere in the line.
            let special = [
                ':', '-', '[', '{', '&', '*', '!', '#', '"', '\'', '|', '>', '%', '@', '\t',
            ];
            let mut chars: Vec<char> = lines[i].chars().collect();
            let at = b % (chars.len() + 1);
            chars.insert(at, special[a % special.len()]);
            lines[i] = chars.into_iter().collect();
        }
    }
}

/// Lines of keys and odd values at random depths.
fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (0usize..5, any::<bool>(), 0..KEYS.len(), 0..ODD.len()),
        0..40,
    )
    .prop_map(|lines| {
        lines
            .into_iter()
            .map(|(depth, dash, k, v)| {
                format!(
                    "{}{}{}: {}\n",
                    "  ".repeat(depth),
                    if dash { "- " } else { "" },
                    KEYS[k],
                    ODD[v]
                )
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn shipped_configs_mutated(
        which in 0..SHIPPED.len(),
        edits in prop::collection::vec((0u8..7, any::<usize>(), any::<usize>()), 1..8),
    ) {
        check(&mutate(SHIPPED[which], &edits))?;
    }

    #[test]
    fn yaml_like_text(text in yamlish()) {
        check(&text)?;
    }

    #[test]
    fn any_text(text in "[ -~\n\t]{0,300}") {
        check(&text)?;
    }
}
