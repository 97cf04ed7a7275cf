//! The shipped Prometheus files, checked by the real `promtool` and used by a real
//! Prometheus (Debian's `prometheus` package, installed by scripts/install-deps.sh)
//! scraping a real gateway that asks for its admin token; and every query of the shipped
//! Grafana dashboard (deploy/grafana) run by that Prometheus while traffic flows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{free_port, get, wait_for, Gateway, RedisServer, Upstream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "prometheus-scrapes-with-this-0123";

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/prometheus")
        .join(file)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy(""))
        .output()
        .expect("promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_config_and_the_rules_and_their_unit_tests_pass() {
    promtool(&["check", "config", "prometheus.yml"]);
    let rules = promtool(&["check", "rules", "alerts.yml"]);
    assert!(rules.contains("6 rules found"), "{rules}");
    promtool(&["test", "rules", "alerts_test.yml"]);
}

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus on the shipped config, pointed at `admin` with the token file and a 1 s
/// scrape interval.
fn prometheus(admin: u16) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let shipped = std::fs::read_to_string(deploy("prometheus.yml")).unwrap();
    let config = shipped
        .replace("127.0.0.1:9100", &format!("127.0.0.1:{admin}"))
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("evaluation_interval: 5s", "evaluation_interval: 1s")
        .replace(
            "  - alerts.yml",
            &format!("  - {}", deploy("alerts.yml").display()),
        )
        .replace("    # authorization:", "    authorization:")
        .replace("    #   type: Bearer", "      type: Bearer")
        .replace(
            "    #   credentials_file: /etc/prometheus/gateway-admin-token",
            &format!("      credentials_file: {}", token_file.display()),
        );
    assert!(config.contains("credentials_file: /"), "{config}");
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("log")).unwrap(),
        ))
        .spawn()
        .expect("prometheus (Debian package; scripts/install-deps.sh installs it)");
    Prometheus {
        child,
        port,
        _dir: dir,
    }
}

impl Prometheus {
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let r = common::try_request("GET", &format!("http://127.0.0.1:{}{path}", self.port), &[])
            .ok()?;
        (r.status == 200).then(|| r.json())
    }
}

#[test]
fn a_real_prometheus_scrapes_the_gateway_with_its_token_and_loads_the_alerts() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&format!(
        "admin:\n  token: {TOKEN}\n\
         upstreams:\n  app:\n    backends:\n      - addr: {}\n\
         routes:\n  - name: api\n    path_prefix: /\n    upstream: app\n",
        up.addr()
    ));
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/hello"), &[]).status, 200);
    }
    let prom = prometheus(gw.admin_port);
    let health = wait_for(
        "the gateway target to be up",
        Duration::from_secs(60),
        || {
            let targets = prom.api("/api/v1/targets")?;
            let target = targets["data"]["activeTargets"].get(0)?.clone();
            (target["health"] == "up").then_some(target)
        },
    );
    assert_eq!(health["labels"]["job"], "gateway", "{health}");
    let series = wait_for(
        "the gateway's series in Prometheus",
        Duration::from_secs(30),
        || {
            let q =
                prom.api("/api/v1/query?query=gateway_requests_total%7Broute%3D%22api%22%7D")?;
            let result = q["data"]["result"].as_array()?.clone();
            (!result.is_empty()).then_some(result)
        },
    );
    let value: f64 = series[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert_eq!(value, 5.0, "{series:?}");
    let rules = prom.api("/api/v1/rules").unwrap();
    let names: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.contains(&"GatewayBreakerOpen"), "{names:?}");
    // Without the token the same scrape is refused: the target would be down.
    assert_eq!(gw.admin("/metrics").status, 401);
}

/// The shipped Grafana dashboard.
fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards/gateway.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every `targets[].expr` of the dashboard with its panel's title, rows' panels (a
/// collapsed row keeps its panels inside it) included.
fn panel_queries(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
    for p in panels.as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no expr in {t}"));
            out.push((
                format!("{title} [{}]", t["refId"].as_str().unwrap_or("?")),
                expr.to_string(),
            ));
        }
        panel_queries(&p["panels"], out);
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// An instant query: its series, or Prometheus's error (an invalid expression).
    fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            encode(expr)
        );
        let r = common::try_request("GET", &url, &[])?;
        let body = r.json();
        if r.status != 200 || body["status"] != "success" {
            return Err(format!("{} {}", r.status, body["error"]));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

/// What Grafana puts in place of its variables, for a test Prometheus that scrapes every
/// second: `$__rate_interval` is at least four scrape intervals (15s here), `$__interval`
/// the step (5s), `$__range` the dashboard's time range (5m), and a template variable the
/// `(a|b|...)` regex of every value its `label_values(metric, label)` query finds, as
/// Grafana writes "All" of a multi-value variable.
fn substitute(expr: &str, variables: &[(String, String)]) -> String {
    let mut e = expr
        .replace("$__rate_interval", "15s")
        .replace("$__interval", "5s")
        .replace("$__range", "5m");
    for (name, regex) in variables {
        e = e.replace(&format!("${{{name}}}"), regex);
        e = e.replace(&format!("${name}"), regex);
    }
    e
}

/// A variable left in `expr` (`$name`, `${name}`, `[[name]]`); `${1}` is label_replace's.
fn leftover_variable(expr: &str) -> Option<String> {
    for (i, _) in expr.match_indices('$') {
        let rest = &expr[i + 1..];
        let name = rest.strip_prefix('{').unwrap_or(rest);
        let starts_name = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if starts_name {
            return Some(expr[i..].chars().take(20).collect());
        }
    }
    expr.contains("[[").then(|| "[[".to_string())
}

/// The gateway of the dashboard test: a route of each kind, so that every panel has data.
/// Its admin listener is open (the harness reads /metrics without a token); Prometheus's
/// bearer token is ignored there.
fn dashboard_gateway(redis: &RedisServer, app: &Upstream, flaky: &Upstream, dead: u16) -> Gateway {
    Gateway::start(&format!(
        "upstreams:
  app:
    backends:
      - addr: {app}
  flaky:
    backends:
      - addr: {flaky}
    circuit_breaker:
      consecutive_failures: 2
      open_duration: 1s
  dead:
    backends:
      - addr: 127.0.0.1:{dead}
    health_check:
      type: tcp
      interval: 100ms
      timeout: 100ms
      unhealthy_threshold: 1
auth:
  tiers: [free]
  api_keys:
    keys:
      - consumer: acme
        tier: free
        sha256: {key}
rate_limits:
  redis:
    url: {redis}
    expected_instances: 1
    lease_wait: 50ms
  policies:
    tight:
      rate: 5
      per: 1m
      key: client_ip
      on_redis_error: local
    roomy:
      rate: 100000
      per: 1s
      key: client_ip
      on_redis_error: local
ping:
  rate_limit: tight
routes:
  - name: secure
    path_prefix: /secure
    upstream: app
    auth: required
  - name: limited
    path_prefix: /limited
    upstream: app
    rate_limit: tight
  - name: flaky
    path_prefix: /flaky
    upstream: flaky
  - name: dead
    path_prefix: /dead
    upstream: dead
  - name: api
    path_prefix: /api
    upstream: app
    rate_limit: roomy
",
        app = app.addr(),
        flaky = flaky.addr(),
        key = gateway::auth::hash_key("acme-key"),
        redis = redis.url(),
    ))
}

/// One round of every kind of request the dashboard shows.
fn traffic(gw: &Gateway) {
    for _ in 0..5 {
        get(&gw.url("/api/x"), &[]);
    }
    get(&gw.url("/secure"), &[]);
    get(&gw.url("/secure"), &[("X-API-Key", "wrong")]);
    get(&gw.url("/secure"), &[("X-API-Key", "acme-key")]);
    get(&gw.url("/limited"), &[]);
    get(&gw.url("/ping"), &[]);
    get(&gw.url("/flaky"), &[]);
    get(&gw.url("/dead"), &[]);
    common::raw_request(gw.port, b"GET /x HTTP/1.1\r\n\r\n");
}

#[test]
fn every_query_of_the_grafana_dashboard_returns_series_from_a_real_gateway() {
    let mut redis = RedisServer::start();
    let app = Upstream::start("app");
    let flaky = Upstream::start("flaky");
    flaky.set_status(500);
    let gw = dashboard_gateway(&redis, &app, &flaky, free_port());
    traffic(&gw);
    // Statuses the panels split: 200, 400, 401, 429, 500, 503.
    for (route, status) in [
        ("api", 200),
        ("none", 400),
        ("secure", 401),
        ("limited", 429),
        ("flaky", 500),
        ("dead", 503),
    ] {
        wait_for(
            &format!("{route} {status}"),
            Duration::from_secs(10),
            || {
                traffic(&gw);
                let series =
                    format!("gateway_requests_total{{route=\"{route}\",status=\"{status}\"}}");
                (gw.metric(&series) > 0.0).then_some(())
            },
        );
    }
    let prom = prometheus(gw.admin_port);

    // Traffic flows while Prometheus scrapes, and while the queries run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, port) = (stop.clone(), gw.port);
        std::thread::spawn(move || {
            let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for p in [
                    "/api/a", "/api/b", "/secure", "/limited", "/flaky", "/dead", "/ping",
                ] {
                    let _ = common::try_request("GET", &url(p), &[]);
                }
                let _ = common::try_request("GET", &url("/secure"), &[("X-API-Key", "acme-key")]);
                common::raw_request(port, b"GET /x HTTP/1.1\r\n\r\n");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Redis goes away for a while: fallback decisions and Redis errors, then it is back.
    redis.kill();
    wait_for("fallback decisions", Duration::from_secs(20), || {
        let n = gw.metric_sum(
            "gateway_ratelimit_decisions_total",
            &["outcome=\"fallback\""],
        );
        let errors = gw.metric("gateway_ratelimit_redis_errors_total");
        (n > 0.0 && errors > 0.0).then_some(())
    });
    redis.restart();
    // A reload, for the reloads panel.
    let config = std::fs::read_to_string(&gw.config_path).unwrap();
    gw.reload(config.strip_prefix(gw.prefix.as_str()).unwrap());

    let dash = dashboard();
    let mut variables = Vec::new();
    let mut failures = Vec::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap().to_string();
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap();
        // label_values(metric, label): Grafana asks for the label's values of the series.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!("variable {name}: only label_values(metric, label) is handled: {query}")
            });
        let (metric, label) = inner.rsplit_once(',').unwrap();
        let expr = format!("count by ({}) ({})", label.trim(), metric.trim());
        let values = wait_for(&format!("variable {name}"), Duration::from_secs(30), || {
            let series = prom.query(&expr).ok()?;
            let values: Vec<String> = series
                .iter()
                .filter_map(|s| s["metric"][label.trim()].as_str().map(str::to_string))
                .collect();
            (!values.is_empty()).then_some(values)
        });
        variables.push((name, format!("({})", values.join("|"))));
    }
    assert_eq!(variables.len(), 2, "{variables:?}");

    let mut queries = Vec::new();
    panel_queries(&dash["panels"], &mut queries);
    assert!(queries.len() >= 30, "{}", queries.len());
    // Each expression until it returns a series (some need a few scrapes for a rate), at
    // most a minute for all; an invalid one fails at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut pending: Vec<(String, String, String)> = queries
        .iter()
        .map(|(at, expr)| (at.clone(), expr.clone(), substitute(expr, &variables)))
        .collect();
    for (at, _, expr) in &pending {
        if let Some(v) = leftover_variable(expr) {
            failures.push(format!("{at}: variable {v} not substituted in {expr}"));
        }
    }
    while !pending.is_empty() && std::time::Instant::now() < deadline {
        pending.retain(|(at, _, expr)| match prom.query(expr) {
            Ok(series) => series.is_empty(),
            Err(e) => {
                failures.push(format!("{at}: invalid: {e}\n    {expr}"));
                false
            }
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    for (at, _, expr) in &pending {
        failures.push(format!("{at}: no series\n    {expr}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
    eprintln!("{} dashboard queries return series", queries.len());
}

/// docker-compose.yml cannot run here (no Docker engine; CI runs `docker-compose config`):
/// what it mounts exists, its Prometheus config passes promtool once its container paths
/// are the repository's, and the dashboard uses the datasource Grafana is given.
#[test]
fn the_compose_files_fit_together() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("docker-compose.yml")).unwrap())
            .unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let mut mounts = Vec::new();
    for (name, service) in services {
        for v in service["volumes"].as_sequence().into_iter().flatten() {
            let (from, to) = v.as_str().unwrap().split_once(':').unwrap();
            let from = from
                .strip_prefix("./")
                .unwrap_or_else(|| panic!("{name:?}: {from}"));
            assert!(
                root.join(from).exists(),
                "{name:?} mounts {from}, which is missing"
            );
            mounts.push((from.to_string(), to.split(':').next().unwrap().to_string()));
        }
    }
    // The container path of a repository file, through the mounts.
    let inside = |file: &str| -> Vec<String> {
        mounts
            .iter()
            .filter_map(|(from, to)| {
                let rest = file.strip_prefix(from.as_str())?;
                Some(format!("{to}{rest}"))
            })
            .collect()
    };
    let prometheus = std::fs::read_to_string(root.join("deploy/compose/prometheus.yml")).unwrap();
    for (file, at) in [
        ("deploy/prometheus/alerts.yml", "/etc/prometheus/alerts.yml"),
        (
            "deploy/compose/admin-token",
            "/etc/gateway-compose/admin-token",
        ),
    ] {
        assert!(
            inside(file).contains(&at.to_string()),
            "{file} is not at {at}"
        );
        assert!(prometheus.contains(at), "{at}");
    }
    let dir = tempfile::tempdir().unwrap();
    let local = prometheus
        .replace(
            "/etc/prometheus/alerts.yml",
            &deploy("alerts.yml").display().to_string(),
        )
        .replace(
            "/etc/gateway-compose/admin-token",
            &root
                .join("deploy/compose/admin-token")
                .display()
                .to_string(),
        );
    std::fs::write(dir.path().join("prometheus.yml"), local).unwrap();
    promtool(&[
        "check",
        "config",
        &dir.path().join("prometheus.yml").display().to_string(),
    ]);
    // The gateway reads the token Prometheus sends.
    let gateway = &services["gateway"]["environment"];
    assert!(inside("deploy/compose/admin-token").contains(
        &gateway["GATEWAY_ADMIN_TOKEN_FILE"]
            .as_str()
            .unwrap()
            .to_string()
    ));
    assert!(inside("deploy/compose/gateway.yaml").contains(&"/etc/gateway/gateway.yaml".into()));
    // Grafana: the home dashboard is the mounted one, on the provisioned datasource.
    let grafana = &services["grafana"]["environment"];
    let home = grafana["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .unwrap();
    assert!(inside("deploy/grafana/dashboards/gateway.json").contains(&home.to_string()));
    let datasources: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            root.join("deploy/grafana/provisioning/datasources/prometheus.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        datasources["datasources"][0]["url"],
        "http://prometheus:9090"
    );
    let uid = datasources["datasources"][0]["uid"].as_str().unwrap();
    let dash = dashboard();
    let mut used = Vec::new();
    fn datasources_of(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(ds) = m.get("datasource") {
                    if ds["type"] == "prometheus" {
                        out.push(ds["uid"].as_str().unwrap_or("").to_string());
                    }
                }
                m.values().for_each(|v| datasources_of(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| datasources_of(v, out)),
            _ => {}
        }
    }
    datasources_of(&dash, &mut used);
    assert!(used.len() > 30, "{used:?}");
    assert!(used.iter().all(|u| u == uid), "{used:?} vs {uid}");
    let providers: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/provisioning/dashboards/gateway.yml"))
            .unwrap(),
    )
    .unwrap();
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(inside("deploy/grafana/dashboards").contains(&path.to_string()));
    assert!(inside("deploy/grafana/provisioning").contains(&"/etc/grafana/provisioning".into()));
}
