//! A broken config fails at start-up with the path, line and reason, exit code 2; every
//! example in conf/ is valid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `gateway <flag> <file>` on a temp file holding `text`; returns the exit code (-1 if
/// it was still running after 20 s and had to be killed) and stdout + stderr.
fn run(flag: &str, text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, text).unwrap();
    run_on(flag, &path)
}

fn run_on(flag: &str, path: &std::path::Path) -> (i32, String) {
    let mut child = Command::new(common::gateway_bin())
        .arg(flag)
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = common::wait_for("the gateway to exit", Duration::from_secs(30), || {
        child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    });
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (code, text)
}

fn check(text: &str) -> (i32, String) {
    run("--check-config", text)
}

/// Starts the gateway on `text` with free listen ports; for configs that must fail.
fn start(text: &str) -> (i32, String) {
    run("-c", text)
}

fn listen(proxy_port: u16) -> String {
    format!(
        "listen:\n  proxy: 127.0.0.1:{proxy_port}\n  admin: 127.0.0.1:{}\n",
        common::free_port()
    )
}

const GOOD: &str = "upstreams:
  api:
    backends:
      - addr: 127.0.0.1:3000
routes:
  - path_prefix: /
    upstream: api
";

#[test]
fn every_shipped_config_is_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (code, out) = run_on("--check-config", &path);
            assert_eq!(code, 0, "{}: {out}", path.display());
            assert_eq!(out.trim(), "ok");
            n += 1;
        }
    }
    assert!(n >= 3, "conf/ has {n} examples");
}

#[test]
fn each_kind_of_error_names_its_path_and_line() {
    let cases = [
        (GOOD.replace("    upstream: api\n", "    upstream: api\n    stirp_prefix: true\n"), "line 8: routes[0].stirp_prefix: unknown field `stirp_prefix`"),
        (GOOD.replace("    upstream: api\n", "    upstream: api\n    read_timeout: 5 parsecs\n"), "line 8: routes[0].read_timeout: invalid duration \"5 parsecs\""),
        (GOOD.replace("upstream: api", "upstream: billing"), "line 7: routes[0].upstream: no pool named \"billing\" (pools: api)"),
        (GOOD.replace("127.0.0.1:3000", "127.0.0.1:70000"), "line 4: upstreams.api.backends[0].addr: \"127.0.0.1:70000\": \"70000\" is not a port number"),
        (format!("{GOOD}  - path_prefix: /\n    upstream: api\n"), "line 8: routes[1].path_prefix: duplicate route: routes[0] already matches host * and prefix \"/\""),
        (format!("listen:\n  proxy: everywhere\n{GOOD}"), "line 2: listen.proxy: \"everywhere\" is not an IP address and port"),
        (format!("{GOOD}limits: 5\n"), "line 8: limits: unknown section `limits`"),
        ("routes: [\n".to_string(), "not valid YAML"),
    ];
    for (text, want) in cases {
        let (code, out) = check(&text);
        assert_eq!(code, 2, "{want}\n{out}");
        assert!(out.contains(want), "want {want:?} in:\n{out}");
        assert!(
            out.contains("gateway.yaml"),
            "the file path is named:\n{out}"
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = GOOD
        .replace("upstream: api", "upstream: billing")
        .replace("127.0.0.1:3000", "nowhere");
    let (code, out) = check(&format!("{text}server:\n  threads: 0\n"));
    assert_eq!(code, 2);
    assert!(out.contains("3 problem(s)"), "{out}");
}

/// Every problem of a broken file at once, each at its own line: values out of range,
/// several bad fields of one struct, an integer beyond 64 bits, a duplicate key.
#[test]
fn a_broken_file_exits_2_listing_every_problem() {
    let text = "server:
  grace_period: 500000000y
  graceful_shutdown_timeout: 0s
upstreams:
  api:
    backends:
      - addr: 127.0.0.1:3000
        weight: 0
routes:
  - path_prefix: /
    upstream: api
    connect_timeout: 0s
    read_timeout: 0s
    retries: 99999999999999999999999
rate_limits:
  policies:
    p:
      rate: 18446744073709551615
      per: 1ns
    q:
      rate: 5
      per: -1s
      burst: -2
server:
  threads: 4
";
    let want = [
        "line 2: server.grace_period: must be at most 1h, got 500000000years",
        "line 8: upstreams.api.backends[0].weight: must be at least 1, got 0",
        "line 12: routes[0].connect_timeout: must be at least 1ms, got 0s",
        "line 13: routes[0].read_timeout: must be at least 1ms, got 0s",
        "line 14: routes[0].retries: must be at most 5, got 99999999999999999999999",
        "line 18: rate_limits.policies.p.rate: must be at most 1000000000, got 18446744073709551615",
        "line 19: rate_limits.policies.p.per: must be at least 1ms, got 1ns",
        "line 22: rate_limits.policies.q.per: invalid duration \"-1s\"",
        "line 23: rate_limits.policies.q.burst: must be at least 1, got -2",
        "line 24: server: duplicate key `server` (first at line 1)",
    ];
    let (code, out) = check(text);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("{} problem(s)", want.len())), "{out}");
    for w in want {
        assert!(out.contains(w), "want {w:?} in:\n{out}");
    }
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn starting_with_a_broken_config_exits_2_without_panicking() {
    let (code, err) = start(&GOOD.replace("upstream: api", "upstream: nope"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("routes[0].upstream: no pool named \"nope\""),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_on("-c", &dir.path().join("missing.yaml"));
    assert_eq!(code, 2);
    assert!(err.contains("missing.yaml: cannot read"), "{err}");
}

#[test]
fn unresolvable_backend_name_exits_2_at_start() {
    let text = format!(
        "{}{}",
        listen(common::free_port()),
        GOOD.replace("127.0.0.1:3000", "no-such-host.invalid:80")
    );
    // --check-config refuses it as well, so the check and start-up agree.
    assert_eq!(check(&text).0, 2);
    let (code, err) = start(&text);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("upstreams.api.backends[0].addr: cannot resolve no-such-host.invalid:80"),
        "{err}"
    );
}

#[test]
fn port_in_use_exits_2_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, err) = start(&format!("{}{GOOD}", listen(port)));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("listen.proxy: cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn check_config_refuses_what_start_up_refuses() {
    // `.invalid` never resolves (RFC 6761), so no DNS is needed to know the answer.
    let text = "upstreams:\n  a:\n    backends:\n      - addr: nosuchhost.invalid:3000\n      - addr: 127.0.0.1:3000\n      - addr: alsonot.invalid:3000\nroutes:\n  - upstream: a\n";
    let (code, out) = run("-t", text);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("2 problem(s)"), "{out}");
    assert!(
        out.contains("upstreams.a.backends[0].addr: cannot resolve nosuchhost.invalid:3000"),
        "{out}"
    );
    assert!(
        out.contains("upstreams.a.backends[2].addr: cannot resolve alsonot.invalid:3000"),
        "{out}"
    );
    let (code, out) = start(&format!("{}{text}", listen(common::free_port())));
    assert_eq!(code, 2, "start-up refuses it too: {out}");
}

/// `gateway <flag> <path>` in the repository's root with `vars` set (`None`: removed).
fn run_env(flag: &str, path: &str, vars: &[(&str, Option<&str>)]) -> (i32, String) {
    let mut cmd = Command::new(common::gateway_bin());
    cmd.arg(flag)
        .arg(path)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in vars {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The line of `path` (in the repository) that holds `needle`.
fn line_of(path: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_container_configs_take_their_variables_from_the_environment() {
    const CONTAINER: &str = "deploy/container/gateway.yaml";
    let unset = [("GATEWAY_UPSTREAM", None), ("GATEWAY_ADMIN_TOKEN", None)];
    for flag in ["--check-config", "-c"] {
        let (code, out) = run_env(flag, CONTAINER, &unset);
        assert_eq!(code, 2, "{flag}: {out}");
        assert!(out.contains("2 problem(s)"), "{out}");
        let token = line_of(CONTAINER, "${GATEWAY_ADMIN_TOKEN}");
        let upstream = line_of(CONTAINER, "${GATEWAY_UPSTREAM}");
        assert!(
            out.contains(&format!(
                "line {token}: admin.token: environment variable GATEWAY_ADMIN_TOKEN is not set"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "line {upstream}: upstreams.app.backends[0].addr: environment variable GATEWAY_UPSTREAM is not set"
            )),
            "{out}"
        );
    }
    let set = [
        ("GATEWAY_UPSTREAM", Some("127.0.0.1:3000")),
        ("GATEWAY_ADMIN_TOKEN", Some("a-test-token-0123456789")),
    ];
    let (code, out) = run_env("--check-config", CONTAINER, &set);
    assert_eq!((code, out.trim()), (0, "ok"));
    // A value from the environment is checked as if written in the file.
    let short = [set[0], ("GATEWAY_ADMIN_TOKEN", Some("Xq7tok"))];
    let (code, out) = run_env("--check-config", CONTAINER, &short);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("admin.token"), "{out}");
    assert!(!out.contains("Xq7tok"), "the token is not echoed: {out}");
    // The compose config runs on its defaults from the repository's root.
    let compose_vars = [
        ("GATEWAY_UPSTREAM_1", None),
        ("GATEWAY_UPSTREAM_2", None),
        ("GATEWAY_REDIS_URL", None),
        ("GATEWAY_ADMIN_TOKEN_FILE", None),
    ];
    let (code, out) = run_env(
        "--check-config",
        "deploy/compose/gateway.yaml",
        &compose_vars,
    );
    assert_eq!((code, out.trim()), (0, "ok"));
}
