use super::*;

const MINIMAL: &str = "
upstreams:
  api:
    backends:
      - addr: 127.0.0.1:3000
routes:
  - path_prefix: /
    upstream: api
";

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(p) => p,
    }
}

fn has(problems: &[Problem], at: &str, needle: &str) -> bool {
    problems
        .iter()
        .any(|p| p.at == at && p.message.contains(needle))
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen.proxy, "0.0.0.0:8000".parse().unwrap());
    assert_eq!(c.listen.admin, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(c.ping.as_ref().map(|p| p.path.as_str()), Some("/ping"));
    assert_eq!(c.routes[0].pool, 0);
    assert_eq!(c.routes[0].retries, 1);
    assert_eq!(c.correlation.header.as_str(), "x-request-id");
    assert_eq!(c.access_log.destination, Some(LogDestination::Stdout));
    assert!(c.server.grace_period <= Duration::from_secs(5));
}

#[test]
fn unknown_key_is_reported_with_path_and_line() {
    let p = problems(&format!(
        "{MINIMAL}  - path_prefix: /x\n    upstream: api\n    stirp_prefix: true\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].at, "routes[1].stirp_prefix");
    assert_eq!(p[0].line, Some(11));
    assert!(p[0].message.contains("unknown field `stirp_prefix`"));
}

#[test]
fn unknown_section_is_reported() {
    let p = problems(&format!("{MINIMAL}ratelimit: {{}}\n"));
    assert!(has(&p, "ratelimit", "unknown section"), "{p:?}");
}

#[test]
fn bad_duration_names_the_value() {
    let text = MINIMAL.replace(
        "    upstream: api\n",
        "    upstream: api\n    read_timeout: 5 parsecs\n",
    );
    let p = problems(&text);
    assert!(
        has(
            &p,
            "routes[0].read_timeout",
            "invalid duration \"5 parsecs\""
        ),
        "{p:?}"
    );
    assert_eq!(p[0].line, Some(9));
}

#[test]
fn missing_pool_lists_known_pools() {
    let p = problems(&MINIMAL.replace("upstream: api", "upstream: billing"));
    assert!(
        has(
            &p,
            "routes[0].upstream",
            "no pool named \"billing\" (pools: api)"
        ),
        "{p:?}"
    );
}

#[test]
fn bad_addresses_are_rejected_without_dns() {
    for (addr, needle) in [
        ("127.0.0.1", "is not host:port"),
        ("127.0.0.1:99999", "is not a port number"),
        ("127.0.0.1:0", "port 0"),
        ("::1:80", "IPv6"),
        (
            "bad_host!:80",
            "neither an IP address nor a valid host name",
        ),
        ("300.1.1.1:80", "neither an IP address"),
    ] {
        let p = problems(&MINIMAL.replace("127.0.0.1:3000", addr));
        assert!(
            has(&p, "upstreams.api.backends[0].addr", needle),
            "{addr}: {p:?}"
        );
    }
    assert_eq!(
        parse_backend_addr("backend.internal:8080"),
        Ok(BackendAddr::Name {
            host: "backend.internal".into(),
            port: 8080
        })
    );
    assert_eq!(
        parse_backend_addr("[::1]:80"),
        Ok(BackendAddr::Ip("[::1]:80".parse().unwrap()))
    );
    assert_eq!(
        parse_backend_addr("localhost:80"),
        Ok(BackendAddr::Ip("127.0.0.1:80".parse().unwrap()))
    );
}

#[test]
fn duplicate_route_is_rejected() {
    let p = problems(&format!("{MINIMAL}  - path_prefix: /\n    upstream: api\n"));
    assert!(
        has(&p, "routes[1].path_prefix", "duplicate route: routes[0]"),
        "{p:?}"
    );
    assert!(has(&p, "routes[1].name", "") || p.len() == 1);
}

#[test]
fn every_problem_is_collected() {
    let text = "
listen:
  proxy: nowhere
upstreams:
  api:
    backends:
      - addr: 127.0.0.1
    health_check:
      type: http
      interval: soon
routes:
  - path_prefix: api
    upstream: billing
  - upstream: api
    bogus: 1
correlation:
  header: \"bad header\"
";
    let p = problems(text);
    for at in [
        "listen.proxy",
        "upstreams.api.health_check.interval",
        "routes[0].path_prefix",
        "routes[0].upstream",
        "routes[1].bogus",
        "correlation.header",
    ] {
        assert!(p.iter().any(|x| x.at == at), "no problem at {at}: {p:#?}");
    }
    // The pool failed to deserialize as a whole; its route is not also reported missing.
    assert!(p.iter().all(|x| x.line.is_some()), "{p:#?}");
}

#[test]
fn not_yaml_reports_a_line() {
    let p = problems("routes: [\n  - a\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].message.starts_with("not valid YAML"));
    assert!(p[0].line.is_some());
}

#[test]
fn hash_key_only_with_consistent_hash() {
    let p = problems(&MINIMAL.replace("    backends:", "    hash_key: path\n    backends:"));
    assert!(has(
        &p,
        "upstreams.api.hash_key",
        "only used with selection: consistent_hash"
    ));
    let c = parse(&MINIMAL.replace(
        "    backends:",
        "    selection: consistent_hash\n    hash_key: header:X-User\n    backends:",
    ))
    .unwrap();
    assert_eq!(
        c.upstreams[0].hash_key,
        HashKey::Header(http::HeaderName::from_static("x-user"))
    );
}

#[test]
fn errors_display_with_line_and_path() {
    let p = problems(&MINIMAL.replace("upstream: api", "upstream: billing"));
    assert_eq!(
        p[0].to_string(),
        "line 8: routes[0].upstream: no pool named \"billing\" (pools: api)"
    );
}

#[test]
fn a_duplicate_key_is_reported_at_its_second_line() {
    let p = problems(&format!(
        "{MINIMAL}upstreams:\n  other:\n    backends: []\n"
    ));
    assert_eq!(
        p.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["line 9: upstreams: duplicate key `upstreams` (first at line 2)"]
    );
    let p = problems(&MINIMAL.replace(
        "    upstream: api\n",
        "    upstream: api\n    strip_prefix: true\n    upstream: api\n",
    ));
    assert_eq!(
        p.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["line 10: routes[0].upstream: duplicate key `upstream` (first at line 8)"]
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for text in [
        "[".repeat(10_000),
        format!("a: {}1{}", "[".repeat(10_000), "]".repeat(10_000)),
        "- ".repeat(10_000) + "x",
    ] {
        let p = problems(&text);
        assert!(!p.is_empty());
    }
}

#[test]
fn every_field_of_a_struct_is_reported() {
    // serde stops at the first bad field of a struct; every one is reported here, each
    // at its own line, and one that was written but unreadable is not also "missing".
    let text = "
upstreams:
  api:
    backends:
      - addr: 127.0.0.1:3000
routes:
  - path_prefix: /
    upstream: billing
    stirp_prefix: true
    retries: many
    connect_timeout: 0s
rate_limits:
  policies:
    p:
      rate: lots
      per: -1s
      burst: -2
      key: 5
";
    let p = problems(text);
    let got: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "line 8: routes[0].upstream: no pool named \"billing\" (pools: api)",
            "line 9: routes[0].stirp_prefix: unknown field `stirp_prefix`, expected one of `name`, `host`, `path_prefix`, `upstream`, `strip_prefix`, `connect_timeout`, `read_timeout`, `write_timeout`, `retries`, `rate_limit`, `auth`, `tiers`",
            "line 10: routes[0].retries: invalid type: string \"many\", expected a whole number",
            "line 11: routes[0].connect_timeout: must be at least 1ms, got 0s",
            "line 15: rate_limits.policies.p.rate: invalid type: string \"lots\", expected a whole number",
            "line 16: rate_limits.policies.p.per: invalid duration \"-1s\": expected number at 0 (write it like \"250ms\", \"5s\" or \"1m\")",
            "line 17: rate_limits.policies.p.burst: must be at least 1, got -2",
            "line 18: rate_limits.policies.p.key: invalid type: integer `5`, expected a string",
        ],
    );
}

#[test]
fn a_bad_list_item_keeps_the_others_numbered_as_written() {
    let text = "
trusted_proxies: [10.0.0.1, {a: 1}, bogus]
upstreams:
  api:
    backends:
      - 127.0.0.1:3000
      - addr: nowhere
      - {}
    health_check:
      type: ftp
      interval: soon
      timeout: 0s
routes:
  - path_prefix: /
    upstream: api
  - 5
  - upstream: api
    path_prefix: /x
    tiers: [anonymous, [x], gold]
";
    let p = problems(text);
    for (at, needle) in [
        ("trusted_proxies[1]", "invalid type: map"),
        ("trusted_proxies[2]", "\"bogus\" is not an IP address"),
        ("upstreams.api.backends[0]", "invalid type: string"),
        (
            "upstreams.api.backends[1].addr",
            "\"nowhere\" is not host:port",
        ),
        ("upstreams.api.backends[2]", "missing field `addr`"),
        ("upstreams.api.health_check.type", "unknown variant `ftp`"),
        (
            "upstreams.api.health_check.interval",
            "invalid duration \"soon\"",
        ),
        (
            "upstreams.api.health_check.timeout",
            "must be at least 1ms, got 0s",
        ),
        ("routes[1]", "invalid type: integer `5`"),
        ("routes[2].tiers[1]", "invalid type: sequence"),
        ("routes[2].tiers[2]", "unknown tier \"gold\""),
    ] {
        assert!(has(&p, at, needle), "no {needle:?} at {at}: {p:#?}");
    }
    assert_eq!(p.len(), 11, "{p:#?}");
    assert!(p.iter().all(|x| x.line.is_some()), "{p:#?}");
}

/// Every number and duration of the config, each at a valid value on a line of its own.
const FULL: &str = "
server:
  threads: 2
  grace_period: 1s
  graceful_shutdown_timeout: 2s
  upstream_keepalive_pool: 256
  upstream_idle_timeout: 30s
upstreams:
  api:
    backends:
      - addr: 127.0.0.1:3000
        weight: 1
    health_check:
      type: http
      expected_status: 200
      interval: 5s
      timeout: 1s
      healthy_threshold: 1
      unhealthy_threshold: 2
    circuit_breaker:
      consecutive_failures: 5
      failure_ratio: 0.5
      window: 10s
      min_requests: 20
      open_duration: 5s
      max_open_duration: 60s
      half_open_trials: 3
      close_after: 3
routes:
  - path_prefix: /
    upstream: api
    connect_timeout: 2s
    read_timeout: 30s
    write_timeout: 30s
    retries: 1
access_log:
  buffer_lines: 65536
rate_limits:
  max_keys: 100000
  policies:
    p:
      rate: 5
      per: 1m
      burst: 5
  redis:
    connect_timeout: 250ms
    command_timeout: 251ms
    sync_interval: 10ms
    lease_horizon: 50ms
    lease_min: 1
    lease_max: 1000
    lease_wait: 100ms
    cold_start_allowance: 1
    idle_return: 1s
    expected_instances: 1
auth:
  cache_size: 10000
  jwt:
    issuers:
      - issuer: https://auth.example.com
        audience: [api]
        default_tier: anonymous
        leeway: 30s
        keys:
          - algorithm: HS256
            secret: 0123456789abcdef0123456789abcdef
";

/// (line as written in FULL, the same line out of range, path, message).
#[rustfmt::skip]
const OUT_OF_RANGE: &[(&str, &str, &str, &str)] = &[
    ("  threads: 2", "  threads: 0", "server.threads", "must be at least 1, got 0"),
    ("  grace_period: 1s", "  grace_period: 500000000y", "server.grace_period", "must be at most 1h, got 500000000years"),
    ("  graceful_shutdown_timeout: 2s", "  graceful_shutdown_timeout: 61m", "server.graceful_shutdown_timeout", "must be at most 1h, got 1h 1m"),
    ("  upstream_keepalive_pool: 256", "  upstream_keepalive_pool: -1", "server.upstream_keepalive_pool", "must be at least 0, got -1"),
    ("  upstream_idle_timeout: 30s", "  upstream_idle_timeout: 0s", "server.upstream_idle_timeout", "must be at least 1ms, got 0s"),
    ("        weight: 1", "        weight: 1001", "upstreams.api.backends[0].weight", "must be at most 1000, got 1001"),
    ("      expected_status: 200", "      expected_status: 99", "upstreams.api.health_check.expected_status", "must be at least 100, got 99"),
    ("      interval: 5s", "      interval: 1ms", "upstreams.api.health_check.interval", "must be at least 10ms, got 1ms"),
    ("      timeout: 1s", "      timeout: 0s", "upstreams.api.health_check.timeout", "must be at least 1ms, got 0s"),
    ("      healthy_threshold: 1", "      healthy_threshold: 0", "upstreams.api.health_check.healthy_threshold", "must be at least 1, got 0"),
    ("      unhealthy_threshold: 2", "      unhealthy_threshold: 101", "upstreams.api.health_check.unhealthy_threshold", "must be at most 100, got 101"),
    ("      consecutive_failures: 5", "      consecutive_failures: 10001", "upstreams.api.circuit_breaker.consecutive_failures", "must be at most 10000, got 10001"),
    ("      failure_ratio: 0.5", "      failure_ratio: 1.5", "upstreams.api.circuit_breaker.failure_ratio", "must be at most 1, got 1.5"),
    ("      window: 10s", "      window: 50ms", "upstreams.api.circuit_breaker.window", "must be at least 100ms, got 50ms"),
    ("      min_requests: 20", "      min_requests: 0", "upstreams.api.circuit_breaker.min_requests", "must be at least 1, got 0"),
    ("      open_duration: 5s", "      open_duration: 0s", "upstreams.api.circuit_breaker.open_duration", "must be at least 1ms, got 0s"),
    ("      max_open_duration: 60s", "      max_open_duration: 2h", "upstreams.api.circuit_breaker.max_open_duration", "must be at most 1h, got 2h"),
    ("      half_open_trials: 3", "      half_open_trials: 0", "upstreams.api.circuit_breaker.half_open_trials", "must be at least 1, got 0"),
    ("      close_after: 3", "      close_after: 1001", "upstreams.api.circuit_breaker.close_after", "must be at most 1000, got 1001"),
    ("    connect_timeout: 2s", "    connect_timeout: 0s", "routes[0].connect_timeout", "must be at least 1ms, got 0s"),
    ("    read_timeout: 30s", "    read_timeout: 2h", "routes[0].read_timeout", "must be at most 1h, got 2h"),
    ("    write_timeout: 30s", "    write_timeout: 0s", "routes[0].write_timeout", "must be at least 1ms, got 0s"),
    ("    retries: 1", "    retries: 6", "routes[0].retries", "must be at most 5, got 6"),
    ("  buffer_lines: 65536", "  buffer_lines: 0", "access_log.buffer_lines", "must be at least 1, got 0"),
    ("  max_keys: 100000", "  max_keys: 10000001", "rate_limits.max_keys", "must be at most 10000000, got 10000001"),
    ("      rate: 5", "      rate: 18446744073709551615", "rate_limits.policies.p.rate", "must be at most 1000000000, got 18446744073709551615"),
    ("      per: 1m", "      per: 1ns", "rate_limits.policies.p.per", "must be at least 1ms, got 1ns"),
    ("      burst: 5", "      burst: 99999999999999999999999", "rate_limits.policies.p.burst", "must be at most 1000000000, got 99999999999999999999999"),
    ("    connect_timeout: 250ms", "    connect_timeout: 0s", "rate_limits.redis.connect_timeout", "must be at least 1ms, got 0s"),
    ("    command_timeout: 251ms", "    command_timeout: 2m", "rate_limits.redis.command_timeout", "must be at most 1m, got 2m"),
    ("    sync_interval: 10ms", "    sync_interval: 0s", "rate_limits.redis.sync_interval", "must be at least 1ms, got 0s"),
    ("    lease_horizon: 50ms", "    lease_horizon: 0s", "rate_limits.redis.lease_horizon", "must be at least 1ms, got 0s"),
    ("    lease_min: 1", "    lease_min: 0", "rate_limits.redis.lease_min", "must be at least 1, got 0"),
    ("    lease_max: 1000", "    lease_max: 1000001", "rate_limits.redis.lease_max", "must be at most 1000000, got 1000001"),
    ("    lease_wait: 100ms", "    lease_wait: 0s", "rate_limits.redis.lease_wait", "must be at least 1ms, got 0s"),
    ("    cold_start_allowance: 1", "    cold_start_allowance: 9223372036854775808", "rate_limits.redis.cold_start_allowance", "must be at most 1000000, got 9223372036854775808"),
    ("    idle_return: 1s", "    idle_return: 0s", "rate_limits.redis.idle_return", "must be at least 1ms, got 0s"),
    ("    expected_instances: 1", "    expected_instances: 0", "rate_limits.redis.expected_instances", "must be at least 1, got 0"),
    ("  cache_size: 10000", "  cache_size: 0", "auth.cache_size", "must be at least 1, got 0"),
    ("        leeway: 30s", "        leeway: 11m", "auth.jwt.issuers[0].leeway", "must be at most 10m, got 11m"),
];

fn line_of(text: &str, line: &str) -> usize {
    let found: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == line)
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(found.len(), 1, "{line:?} is not on exactly one line");
    found[0]
}

#[test]
fn every_number_and_duration_has_a_range() {
    parse(FULL).unwrap();
    for (good, bad, at, message) in OUT_OF_RANGE {
        let line = line_of(FULL, good);
        let p = problems(&FULL.replace(&format!("{good}\n"), &format!("{bad}\n")));
        assert_eq!(p.len(), 1, "{bad}: {p:#?}");
        assert_eq!(
            p[0].to_string(),
            format!("line {line}: {at}: {message}"),
            "{bad}"
        );
    }
}

#[test]
fn every_out_of_range_value_is_reported_at_once() {
    let mut text = FULL.to_string();
    for (good, bad, _, _) in OUT_OF_RANGE {
        text = text.replace(&format!("{good}\n"), &format!("{bad}\n"));
    }
    let p = problems(&text);
    let got: Vec<(String, Option<usize>)> = p.iter().map(|p| (p.at.clone(), p.line)).collect();
    let want: Vec<(String, Option<usize>)> = OUT_OF_RANGE
        .iter()
        .map(|(good, _, at, _)| (at.to_string(), Some(line_of(FULL, good))))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_rate_the_bucket_cannot_hold_is_refused() {
    let p = problems(
        &FULL
            .replace("      rate: 5\n", "      rate: 1000000000\n")
            .replace("      per: 1m\n", "      per: 1ms\n"),
    );
    assert_eq!(
        p.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![format!(
            "line {}: rate_limits.policies.p.rate: rate / per must be at most 1000000000 per second, got 1000000000000 per second (1000000000 per 1ms)",
            line_of(FULL, "      rate: 5")
        )]
    );
    // 10^9 per second is still fine, and so is a slow rate.
    parse(
        &FULL
            .replace("      rate: 5\n", "      rate: 1000000000\n")
            .replace("      per: 1m\n", "      per: 1s\n"),
    )
    .unwrap();
    parse(&FULL.replace("      per: 1m\n", "      per: 1d\n")).unwrap();
}

#[test]
fn the_lease_bounds_must_be_in_order() {
    let p = problems(&FULL.replace("    lease_min: 1\n", "    lease_min: 2000\n"));
    assert!(
        has(
            &p,
            "rate_limits.redis.lease_min",
            "must be at most lease_max (1000), got 2000"
        ),
        "{p:#?}"
    );
}

#[test]
fn an_integer_beyond_64_bits_is_a_value_out_of_range() {
    // It used to make the whole file "not valid YAML", hiding every other problem.
    let p = problems(
        &FULL
            .replace("      burst: 5\n", "      burst: 99999999999999999999999\n")
            .replace("  threads: 2\n", "  threads: 0\n"),
    );
    let got: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "line 3: server.threads: must be at least 1, got 0".to_string(),
            format!("line {}: rate_limits.policies.p.burst: must be at most 1000000000, got 99999999999999999999999", line_of(FULL, "      burst: 5")),
        ]
    );
    let p = problems(&MINIMAL.replace(
        "    upstream: api\n",
        "    upstream: api\n    retries: -99999999999999999999999\n",
    ));
    assert!(
        has(
            &p,
            "routes[0].retries",
            "must be at least 0, got -99999999999999999999999"
        ),
        "{p:#?}"
    );
}

#[test]
fn too_many_tiers_do_not_overflow_the_tier_set() {
    let names: Vec<String> = (0..70).map(|i| format!("t{i}")).collect();
    let text = format!(
        "{}    tiers: [t69]\nauth:\n  tiers: [{}]\n  api_keys:\n    keys: []\n",
        MINIMAL,
        names.join(", ")
    );
    let p = problems(&text);
    assert!(has(&p, "auth.tiers", "at most 63 tiers"), "{p:#?}");
}

/// Arbitrary text never panics the loader: it is a config, or problems.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const SHIPPED: [&str; 3] = [
        include_str!("../../conf/gateway.yaml"),
        include_str!("../../conf/multi-service.yaml"),
        include_str!("../../conf/auth.yaml"),
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

    /// One edit of a config's lines; `a` and `b` pick what and where.
    fn mutate(text: &str, edits: &[(u8, usize, usize)]) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for &(kind, a, b) in edits {
            if lines.is_empty() {
                break;
            }
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
                    lines[i] = if b % 2 == 0 {
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
        lines.join("\n") + "\n"
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
}

#[test]
fn configured_paths_must_be_normalised() {
    for bad in ["/a//b", "/a/../b", "/./a", "/%61dmin", "/a\\b", "/a/."] {
        let p = problems(&format!(
            "{MINIMAL}  - path_prefix: \"{bad}\"\n    upstream: api\n"
        ));
        assert!(
            has(&p, "routes[1].path_prefix", "is not a normalised path"),
            "{bad}: {p:?}"
        );
    }
    let p = problems(&format!("{MINIMAL}ping:\n  path: /a//ping\n"));
    assert!(has(&p, "ping.path", "is not a normalised path"), "{p:?}");
    assert!(parse(&format!(
        "{MINIMAL}  - path_prefix: /a.b/..c/\n    upstream: api\n"
    ))
    .is_ok());
}

#[test]
fn connection_limits_have_edge_defaults_and_ranges() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.client_header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(c.server.max_connections, 10_000);
    assert_eq!(c.server.max_header_bytes, 64 * 1024);
    let p = problems(&format!(
        "{MINIMAL}server:\n  client_header_timeout: 0s\n  keepalive_timeout: 2h\n  max_connections: 0\n  max_header_bytes: 100\n"
    ));
    assert!(
        has(&p, "server.client_header_timeout", "must be at least 100ms"),
        "{p:?}"
    );
    assert!(has(&p, "server.keepalive_timeout", "got 2h"), "{p:?}");
    assert!(has(&p, "server.max_connections", "got 0"), "{p:?}");
    assert!(has(&p, "server.max_header_bytes", "got 100"), "{p:?}");
}

#[test]
fn a_bare_number_as_a_duration_says_how_to_write_it() {
    let p = problems(&format!("{MINIMAL}server:\n  grace_period: 1000\n"));
    assert!(
        has(
            &p,
            "server.grace_period",
            "1000 has no unit: write a duration like \"1000ms\" or \"1000s\""
        ),
        "{p:?}"
    );
}
