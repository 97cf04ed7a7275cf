//! The shipped Prometheus files, checked by the real `promtool` and used by a real
//! Prometheus (Debian's `prometheus` package, installed by scripts/install-deps.sh)
//! scraping a real gateway that asks for its admin token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{free_port, get, wait_for, Gateway, Upstream};
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
