use super::*;

mod env;
mod fuzz;
mod ranges;

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
    assert_eq!(c.routes[0].pool, PoolId(0));
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
    let text = MINIMAL.replace("upstream: api", "upstream: billing")
        + "    stirp_prefix: true
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
    let p = problems(&text);
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

#[test]
fn a_health_check_path_must_be_a_request_path() {
    let p = problems(&MINIMAL.replace(
        "    backends:",
        "    health_check:\n      type: http\n      path: \"/a b\"\n    backends:",
    ));
    assert!(
        has(
            &p,
            "upstreams.api.health_check.path",
            "is not a valid request path"
        ),
        "{p:#?}"
    );
}

#[test]
fn redis_needs_the_number_of_instances() {
    let text = format!(
        "{MINIMAL}rate_limits:\n  redis:\n    url: redis://127.0.0.1:6379/\n  policies:\n    p:\n      rate: 5\n      per: 1m\n"
    );
    let p = problems(&text);
    assert!(
        has(
            &p,
            "rate_limits.redis",
            "missing field `expected_instances`"
        ),
        "{p:#?}"
    );
    parse(&text.replace(
        "    url: redis",
        "    expected_instances: 3\n    url: redis",
    ))
    .unwrap();
}

const REGIONS: &str = "rate_limits:
  redis:
    url: redis://127.0.0.1:6379/
    expected_instances: 2
  regions:
    region: eu
    members:
      - name: eu
      - name: us
        redis: redis://10.0.0.2:6379/
      - name: ap
        redis: redis://10.0.0.3:6379/
  policies:
    p:
      rate: 5
      per: 1m
";

#[test]
fn regions_get_equal_shares_and_defaults() {
    let c = parse(&format!("{MINIMAL}{REGIONS}")).unwrap();
    let r = c.rate_limits.regions.unwrap();
    assert_eq!(r.this, 0);
    assert_eq!(r.this().redis, "redis://127.0.0.1:6379/");
    let shares: Vec<u64> = r.members.iter().map(|m| m.initial_share).collect();
    assert_eq!(shares, [333_334, 333_333, 333_333]);
    assert_eq!(shares.iter().sum::<u64>(), SHARE_UNITS);
    assert_eq!(r.replicate_every, Duration::from_millis(500));
    assert_eq!(r.stale_after, Duration::from_secs(2));
    assert_eq!((r.hysteresis, r.min_share), (50_000, 50_000));
}

#[test]
fn written_shares_must_add_up_to_one_and_respect_the_floor() {
    let text = format!("{MINIMAL}{REGIONS}")
        .replace(
            "      - name: eu\n",
            "      - name: eu\n        share: 0.5\n",
        )
        .replace(
            "        redis: redis://10.0.0.2:6379/\n",
            "        redis: redis://10.0.0.2:6379/\n        share: 0.49\n",
        )
        .replace(
            "        redis: redis://10.0.0.3:6379/\n",
            "        redis: redis://10.0.0.3:6379/\n        share: 0.01\n",
        );
    let p = problems(&text);
    assert!(
        has(
            &p,
            "rate_limits.regions.members[2].share",
            "at least min_share"
        ),
        "{p:#?}"
    );
    let p = problems(&text.replace("share: 0.01", "share: 0.2"));
    assert!(
        has(&p, "rate_limits.regions.members", "add up to 1, got 1.19"),
        "{p:#?}"
    );
    let p = problems(&text.replace("        share: 0.01\n", ""));
    assert!(
        has(
            &p,
            "rate_limits.regions.members",
            "every member a `share` or none"
        ),
        "{p:#?}"
    );
    let c = parse(
        &text
            .replace("share: 0.01", "share: 0.06")
            .replace("share: 0.5", "share: 0.45"),
    )
    .unwrap();
    let shares: Vec<u64> = c
        .rate_limits
        .regions
        .unwrap()
        .members
        .iter()
        .map(|m| m.initial_share)
        .collect();
    assert_eq!(shares, [450_000, 490_000, 60_000]);
}

#[test]
fn every_regions_problem_is_reported_at_once() {
    let text = format!("{MINIMAL}{REGIONS}")
        .replace("    region: eu\n", "    region: mars\n    replicate_every: 1s\n    stale_after: 1s\n    min_share: 0.4\n    hysteresis: 0.9\n")
        .replace("      - name: ap\n", "      - name: us\n")
        .replace("redis://10.0.0.3:6379/", "http://x");
    let p = problems(&text);
    for (at, needle) in [
        (
            "rate_limits.regions.region",
            "\"mars\" is not one of the members (eu, us, us)",
        ),
        (
            "rate_limits.regions.stale_after",
            "at least twice replicate_every (2s)",
        ),
        ("rate_limits.regions.min_share", "must be at most 0.333"),
        (
            "rate_limits.regions.hysteresis",
            "must be at most 0.5, got 0.9",
        ),
        ("rate_limits.regions.members[2].name", "listed twice"),
        ("rate_limits.regions.members[2].redis", "is not a Redis URL"),
    ] {
        assert!(has(&p, at, needle), "{at}: {needle}\n{p:#?}");
    }
}

#[test]
fn this_regions_redis_is_the_limiters() {
    let text = format!("{MINIMAL}{REGIONS}").replace(
        "      - name: eu\n",
        "      - name: eu\n        redis: redis://127.0.0.1:6380/\n",
    );
    let p = problems(&text);
    assert!(
        has(
            &p,
            "rate_limits.regions.members[0].redis",
            "rate_limits.redis.url"
        ),
        "{p:#?}"
    );
    let without = format!("{MINIMAL}{REGIONS}").replace(
        "  redis:\n    url: redis://127.0.0.1:6379/\n    expected_instances: 2\n",
        "",
    );
    let p = problems(&without);
    assert!(
        has(&p, "rate_limits.regions", "needs rate_limits.redis"),
        "{p:#?}"
    );
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let open = format!("listen:\n  proxy: 0.0.0.0:8000\n  admin: 0.0.0.0:9100\n{MINIMAL}");
    let p = problems(&open);
    assert!(has(&p, "listen.admin", "set admin.token"), "{p:#?}");
    let with = format!("{open}admin:\n  token: a-long-enough-admin-token\n");
    let c = parse(&with).unwrap();
    assert_eq!(
        c.admin.token,
        Some(AdminToken(AdminToken::digest(b"a-long-enough-admin-token")))
    );
    assert!(
        !format!("{:?}", c.admin).contains("a-long-enough"),
        "the token is never printed"
    );
    // Loopback needs none; a token there is still honoured.
    assert_eq!(parse(MINIMAL).unwrap().admin.token, None);
}

#[test]
fn admin_tokens_are_checked() {
    let p = problems(&format!("{MINIMAL}admin:\n  token: short\n"));
    assert!(
        has(
            &p,
            "admin.token",
            "must be at least 16 characters, got 5 characters"
        ),
        "{p:#?}"
    );
    let p = problems(&format!(
        "{MINIMAL}admin:\n  token: \"has a space in it ok\"\n"
    ));
    assert!(has(&p, "admin.token", "visible ASCII"), "{p:#?}");
    let p = problems(&format!(
        "{MINIMAL}admin:\n  token: a-long-enough-admin-token\n  token_file: /nonexistent\n"
    ));
    assert!(has(&p, "admin", "not both"), "{p:#?}");
    let p = problems(&format!(
        "{MINIMAL}admin:\n  token_file: /nonexistent/token\n"
    ));
    assert!(
        has(&p, "admin.token_file", "cannot read \"/nonexistent/token\""),
        "{p:#?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
    let c = parse(&format!(
        "{MINIMAL}admin:\n  token_file: {}\n",
        file.display()
    ))
    .unwrap();
    assert_eq!(
        c.admin.token,
        Some(AdminToken(AdminToken::digest(b"from-a-file-0123456789"))),
        "the trailing newline is not part of the token"
    );
}
