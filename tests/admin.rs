//! The admin listener's bearer token: asked for everything but the probes, compared in
//! constant time, required when the listener is reachable from other hosts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{free_port, get, Gateway, Upstream};

const TOKEN: &str = "s3cret-admin-token-0123456789";

fn config(up: &Upstream, proxy: u16, admin: u16, extra: &str) -> String {
    format!(
        "listen:\n  proxy: 127.0.0.1:{proxy}\n  admin: 0.0.0.0:{admin}\n{extra}\
         upstreams:\n  app:\n    backends:\n      - addr: {}\n\
         routes:\n  - name: api\n    path_prefix: /\n    upstream: app\n",
        up.addr()
    )
}

#[test]
fn metrics_need_the_token_and_the_probes_do_not() {
    let up = Upstream::start("app");
    let gw = Gateway::start_with(|proxy, admin| {
        config(&up, proxy, admin, &format!("admin:\n  token: {TOKEN}\n"))
    });
    let at = |path: &str| format!("http://127.0.0.1:{}{path}", gw.admin_port);
    let bearer = format!("Bearer {TOKEN}");
    let wrong_same_length = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    let longer = format!("Bearer {TOKEN}x");
    let lower = format!("bearer {TOKEN}");
    for (what, headers) in [
        ("no token", vec![]),
        (
            "a wrong token",
            vec![("authorization", wrong_same_length.as_str())],
        ),
        ("a longer token", vec![("authorization", longer.as_str())]),
        ("the token without Bearer", vec![("authorization", TOKEN)]),
        (
            "another scheme spelling",
            vec![("authorization", lower.as_str())],
        ),
        ("the token as a cookie", vec![("cookie", TOKEN)]),
    ] {
        for path in ["/metrics", "/nothing-here"] {
            let r = get(&at(path), &headers);
            assert_eq!(r.status, 401, "{what} on {path}: {}", r.body);
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{what}: {:?}",
                r.headers
            );
            assert!(!r.body.contains("gateway_"), "{what}: no metrics leak");
        }
    }
    let ok = get(&at("/metrics"), &[("authorization", &bearer)]);
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("gateway_config_info"), "{}", ok.body);
    assert_eq!(
        get(&at("/nothing-here"), &[("authorization", &bearer)]).status,
        404
    );
    for probe in ["/healthz", "/readyz"] {
        let r = get(&at(probe), &[]);
        assert!(r.status == 200 || r.status == 503, "{probe}: {}", r.status);
    }
}

#[test]
fn an_open_admin_listener_off_loopback_is_refused_at_start() {
    let up = Upstream::start("app");
    let (proxy, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config(&up, proxy, admin, "")).unwrap();
    let out = std::process::Command::new(common::gateway_bin())
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("listen.admin") && text.contains("admin.token"),
        "{text}"
    );
}

/// A browser cannot send a bearer token when it opens a page: the dashboard takes the
/// token as the password of Basic authentication (the browser asks for it on the 401,
/// then sends it with the page's every request), any user name, nothing else.
#[test]
fn the_dashboard_takes_the_token_as_a_basic_password_and_nothing_less() {
    use base64::Engine;
    let up = Upstream::start("app");
    let gw = Gateway::start_with(|proxy, admin| {
        config(&up, proxy, admin, &format!("admin:\n  token: {TOKEN}\n"))
    });
    let at = |path: &str| format!("http://127.0.0.1:{}{path}", gw.admin_port);
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    let refused = [
        basic(&format!("admin:{TOKEN}x")),
        basic(&format!("admin:{}", &TOKEN[..TOKEN.len() - 1])),
        basic(&format!("{TOKEN}:")), // the token as the user name
        basic(TOKEN),                // no colon at all
        "Basic !!!not-base64!!!".to_string(),
        format!("Basic {TOKEN}"), // the raw token, not encoded
    ];
    for path in ["/dashboard", "/api/stats"] {
        let r = get(&at(path), &[]);
        assert_eq!(r.status, 401, "{path}");
        let challenges: Vec<&str> = r
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic realm=")),
            "a browser must be asked: {challenges:?}"
        );
        assert!(!r.body.contains("<html"), "no page before the token");
        for header in &refused {
            let r = get(&at(path), &[("authorization", header.as_str())]);
            assert_eq!(r.status, 401, "{header} on {path}");
        }
        for user in ["admin", "", "anyone"] {
            let r = get(
                &at(path),
                &[("authorization", &basic(&format!("{user}:{TOKEN}")))],
            );
            assert_eq!(r.status, 200, "user {user:?} on {path}: {}", r.body);
        }
    }
    let page = get(
        &at("/dashboard"),
        &[("authorization", &basic(&format!("ops:{TOKEN}")))],
    );
    assert!(page.body.contains("<canvas"), "the page itself");
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"),
        "{csp}"
    );
    let stats = get(
        &at("/api/stats"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(stats.json()["version"], env!("CARGO_PKG_VERSION"));
}
