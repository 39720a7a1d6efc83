//! The Prometheus side of operations: the alert rules pass their own unit tests
//! (`promtool test rules`), the scrape configuration is valid (`promtool check config`), the
//! Grafana dashboard parses, every metric the rules and the dashboard use is one the services
//! really export, and a real Prometheus server scrapes the services and evaluates the rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool cannot run ({e}): run scripts/install-prometheus.sh (scripts/test.sh does)")
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A running demo: all three services in one process, their API and their one admin endpoint.
struct Demo {
    demo: churnwatch_testkit::Service,
    api: String,
    admin: String,
}

fn demo(dir: &Path) -> Demo {
    let admin = format!("127.0.0.1:{}", churnwatch_testkit::free_port());
    let api = format!("127.0.0.1:{}", churnwatch_testkit::free_port());
    let demo = churnwatch_testkit::Service::start(
        &churnwatch_e2e::bin("churnwatch"),
        &[
            "demo",
            "--customers",
            "300",
            "--months",
            "12",
            "--grpc-addr",
            &api,
            "--admin-addr",
            &admin,
        ],
        &[],
        dir,
    );
    Demo { demo, api, admin }
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    // The alerts that look back 30 days are tested on an hourly evaluation, apart.
    let files = ["alerts_test.yml", "alerts_30d_test.yml"];
    let (ok, out) = promtool(&[&["test", "rules"][..], &files[..]].concat());
    assert!(ok && out.matches("SUCCESS").count() == files.len(), "{out}");
    // Every alert is shown firing (or staying silent) in one of them.
    let rules = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    let tests: String = files
        .iter()
        .map(|f| std::fs::read_to_string(deploy().join(f)).unwrap())
        .collect();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no promtool test"
        );
    }
}

#[test]
fn the_scrape_configuration_and_its_rules_are_valid() {
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"]);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"]);
    let rules = rules_in_file();
    assert!(ok && out.contains(&format!("{rules} rules found")), "{out}");
}

/// Returns how many alerting and recording rules alerts.yml declares.
fn rules_in_file() -> usize {
    let text = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    text.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("- alert:") || l.starts_with("- record:"))
        .count()
}

/// Returns the churnwatch metric names an expression file mentions (recording rules, with a
/// colon, are not exported metrics).
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("churnwatch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if !name.contains(':') {
            out.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Returns every query of the Grafana dashboard, after checking its shape.
fn dashboard_queries() -> Vec<String> {
    let path = deploy().join("../grafana/churnwatch.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "churnwatch");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Pipeline health",
        "Throughput",
        "Consumer lag",
        "Dead-lettered by reason",
        "Batch duration p99",
        "Retention overview",
        "Stage funnel",
        "Risk levels",
        "Lost value over 30 days",
    ] {
        assert!(titles.contains(&want), "no {want:?} panel in {titles:?}");
    }
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has a query")
                .to_owned()
        })
        .collect()
}

#[test]
fn every_metric_the_alert_rules_and_the_dashboard_use_is_exported_by_the_services() {
    let rules = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    let mut used = names_in(&rules);
    assert!(used.len() >= 8, "{used:?}");
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    for q in &queries {
        used.extend(names_in(q));
        // A recorded series must be recorded by the rules.
        for recorded in q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if recorded.starts_with("churnwatch:") {
                assert!(
                    rules.contains(&format!("record: {recorded}")),
                    "{recorded} is not recorded"
                );
            }
        }
    }
    // The demo runs all three services in one process, with one /metrics.
    let dir = tempfile::tempdir().unwrap();
    let Demo {
        mut demo,
        api,
        admin,
    } = demo(dir.path());
    let mut text = String::new();
    // Lag appears with librdkafka's first statistics (5 s); the gRPC series with a request.
    let complete = churnwatch_testkit::wait_until(Duration::from_secs(60), || {
        let _ = churnwatch_e2e::run("churnwatch", &["query", "--addr", &api, "stages"]);
        text = churnwatch_testkit::http_get(&admin, "/metrics")
            .map(|(_, t)| t)
            .unwrap_or_default();
        text.contains("churnwatch_consumer_lag_messages{")
            && text.contains("churnwatch_grpc_request_duration_seconds_bucket{")
    });
    assert!(complete, "no lag series:\n{text}\n{}", demo.log());
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    for name in &used {
        assert!(
            exported.contains(name),
            "the rules or the dashboard use {name}, which the services do not export"
        );
    }
    demo.terminate(Duration::from_secs(10))
        .expect("the demo stops");
}

#[test]
fn a_real_prometheus_scrapes_the_services_and_evaluates_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let Demo {
        mut demo, admin, ..
    } = demo(dir.path());
    // The shipped rules, with the scrape configuration pointed at the demo and fast intervals.
    std::fs::copy(deploy().join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\nscrape_configs:\n  - job_name: churnwatch-demo\n    static_configs:\n      - targets: [\"{admin}\"]\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", churnwatch_testkit::free_port());
    let mut prometheus = churnwatch_testkit::Service::start(
        Path::new("prometheus"),
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            &format!("--web.listen-address={web}"),
        ],
        &[],
        dir.path(),
    );
    let api = |path: &str| -> serde_json::Value {
        churnwatch_testkit::http_get(&web, path)
            .ok()
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    // The series the services export arrive through real scrapes.
    for series in [
        "churnwatch_ingest_messages_consumed_total",
        "churnwatch_scoring_events_applied_total",
        "churnwatch_customers_by_stage",
        "churnwatch_consumer_lag_messages",
    ] {
        let found = churnwatch_testkit::wait_until(Duration::from_secs(60), || {
            api(&format!("/api/v1/query?query={series}"))["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        });
        assert!(
            found,
            "Prometheus never saw {series}:\n{}",
            prometheus.log()
        );
    }
    // The rules load and evaluate without errors, and the recording rule produces a value.
    let evaluated = churnwatch_testkit::wait_until(Duration::from_secs(30), || {
        let rules = api("/api/v1/rules");
        let all: Vec<&serde_json::Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        all.len() == rules_in_file()
            && all
                .iter()
                .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z")
    });
    assert!(evaluated, "{}", api("/api/v1/rules"));
    let share = churnwatch_testkit::wait_until(Duration::from_secs(30), || {
        api("/api/v1/query?query=churnwatch:at_risk_share")["data"]["result"]
            .as_array()
            .is_some_and(|r| r.len() == 1)
    });
    assert!(share, "the recording rule gave no value");
    prometheus.terminate(Duration::from_secs(10));
    demo.terminate(Duration::from_secs(10))
        .expect("the demo stops");
}
