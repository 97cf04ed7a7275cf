//! Every number and duration has a range, reported at its own path and line.

use super::*;

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
