//! The Prometheus side of operations: the alert rules pass their own unit tests
//! (`promtool test rules`), the scrape configuration is valid (`promtool check config`), and
//! every metric the rules use is one the services really export.

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

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_scrape_configuration_and_its_rules_are_valid() {
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"]);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"]);
    assert!(ok && out.contains("9 rules found"), "{out}");
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

#[test]
fn every_metric_the_alert_rules_use_is_exported_by_the_services() {
    let rules = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    let used = names_in(&rules);
    assert!(used.len() >= 8, "{used:?}");
    // The demo runs all three services in one process, with one /metrics.
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", churnwatch_testkit::free_port());
    let mut demo = churnwatch_testkit::Service::start(
        &churnwatch_e2e::bin("churnwatch"),
        &[
            "demo",
            "--customers",
            "300",
            "--months",
            "12",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            &admin,
        ],
        &[],
        dir.path(),
    );
    let mut text = String::new();
    // Lag appears with librdkafka's first statistics (5 s).
    let complete = churnwatch_testkit::wait_until(Duration::from_secs(60), || {
        text = churnwatch_testkit::http_get(&admin, "/metrics")
            .map(|(_, t)| t)
            .unwrap_or_default();
        text.contains("churnwatch_consumer_lag_messages{")
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
            "the rules use {name}, which the services do not export"
        );
    }
    demo.terminate(Duration::from_secs(10))
        .expect("the demo stops");
}
