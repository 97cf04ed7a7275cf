//! `${NAME}` and `${NAME:-default}` in string values.

use super::*;
use std::collections::HashMap;

fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, Vec<Problem>> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_with_env(text, &|name| vars.get(name).cloned())
}

const CONTAINER: &str = "
listen:
  proxy: ${PROXY_LISTEN:-0.0.0.0:8000}
  admin: 0.0.0.0:9100
admin:
  token: ${ADMIN_TOKEN}
upstreams:
  api:
    backends:
      - addr: ${API_ADDR:-127.0.0.1:3000}
      - addr: ${API_ADDR_2}
routes:
  - path_prefix: ${PREFIX:-/}
    upstream: api
";

#[test]
fn variables_and_defaults_fill_string_values() {
    let c = with_env(
        CONTAINER,
        &[
            ("ADMIN_TOKEN", "a-token-long-enough-0123456789"),
            ("API_ADDR_2", "10.0.0.2:80"),
            ("PREFIX", ""),
        ],
    )
    .unwrap();
    assert_eq!(c.listen.proxy, "0.0.0.0:8000".parse().unwrap());
    assert_eq!(
        c.upstreams[0].backends[0].addr,
        BackendAddr::Ip("127.0.0.1:3000".parse().unwrap())
    );
    assert_eq!(
        c.upstreams[0].backends[1].addr,
        BackendAddr::Ip("10.0.0.2:80".parse().unwrap())
    );
    assert_eq!(
        c.routes[0].path_prefix, "/",
        "an empty variable takes the default"
    );
    assert!(c.admin.token.is_some());
    let set = with_env(
        CONTAINER,
        &[
            ("ADMIN_TOKEN", "a-token-long-enough-0123456789"),
            ("API_ADDR", "api.internal:8080"),
            ("API_ADDR_2", "10.0.0.2:80"),
        ],
    )
    .unwrap();
    assert_eq!(
        set.upstreams[0].backends[0].addr,
        BackendAddr::Name {
            host: "api.internal".into(),
            port: 8080
        }
    );
}

#[test]
fn every_unset_variable_is_reported_with_its_path_and_line() {
    let p = with_env(CONTAINER, &[]).unwrap_err();
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0].at, "admin.token");
    assert_eq!(p[0].line, Some(6));
    assert!(
        p[0].message
            .contains("environment variable ADMIN_TOKEN is not set"),
        "{p:?}"
    );
    assert_eq!(p[1].at, "upstreams.api.backends[1].addr");
    assert_eq!(p[1].line, Some(11));
    assert!(p[1].message.contains("API_ADDR_2"), "{p:?}");
    // No second problem about what stands in for them (a missing token on a public
    // admin listener, a missing addr).
}

#[test]
fn problems_of_interpolation_come_with_the_others() {
    let text = format!("{MINIMAL}  - path_prefix: ${{NOPE}}\n    upstream: nowhere\n");
    let p = with_env(&text, &[]).unwrap_err();
    assert!(has(&p, "routes[1].path_prefix", "NOPE is not set"), "{p:?}");
    assert!(has(&p, "routes[1].upstream", "nowhere"), "{p:?}");
}

#[test]
fn several_in_one_value_and_escapes() {
    let text = MINIMAL.replace("127.0.0.1:3000", "${HOST:-127.0.0.1}:${PORT:-3000}");
    let c = with_env(&text, &[("PORT", "3001")]).unwrap();
    assert_eq!(
        c.upstreams[0].backends[0].addr,
        BackendAddr::Ip("127.0.0.1:3001".parse().unwrap())
    );
    let env = |n: &str| (n == "X").then(|| "x".to_string());
    assert_eq!(crate::config::env::expand("no dollar", &env), Ok(None));
    assert_eq!(crate::config::env::expand("$HOME and $", &env), Ok(None));
    assert_eq!(
        crate::config::env::expand("a$${X}b", &env),
        Ok(Some("a${X}b".into()))
    );
    assert_eq!(
        crate::config::env::expand("${X}${X}", &env),
        Ok(Some("xx".into()))
    );
    assert_eq!(
        crate::config::env::expand("${Y:-a:-b}", &env),
        Ok(Some("a:-b".into()))
    );
    assert_eq!(
        crate::config::env::expand("${Y:-}", &env),
        Ok(Some(String::new()))
    );
}

#[test]
fn malformed_expressions_are_each_reported() {
    let env = |_: &str| None;
    let p = crate::config::env::expand("${1BAD} ${} ${A-B} ${UNSET}", &env).unwrap_err();
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p[0].contains("\"1BAD\" is not a variable name"), "{p:?}");
    assert!(p[1].contains("\"\" is not a variable name"), "{p:?}");
    assert!(p[2].contains("\"A-B\" is not a variable name"), "{p:?}");
    assert!(p[3].contains("UNSET is not set"), "{p:?}");
    let p = crate::config::env::expand("${OPEN", &env).unwrap_err();
    assert!(p[0].contains("without its"), "{p:?}");
}

#[test]
fn keys_numbers_and_comments_are_left_alone() {
    // A `${` in a comment, or a number, is not read; only string values are.
    let text = format!("# ${{NOT_READ}}\n{MINIMAL}");
    assert!(with_env(&text, &[]).is_ok());
}

#[test]
fn a_value_from_the_environment_is_validated_like_a_written_one() {
    let text = MINIMAL.replace("127.0.0.1:3000", "${ADDR}");
    let p = with_env(&text, &[("ADDR", "not an address")]).unwrap_err();
    assert!(
        has(&p, "upstreams.api.backends[0].addr", "not host:port"),
        "{p:?}"
    );
}
