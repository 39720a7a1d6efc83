//! The churnwatch command line as a user meets it: generate a feed, evaluate it against its
//! truth, run the demo, and get clear errors for mistakes.

use churnwatch_e2e::{run, stderr, stdout};
use serde_json::Value;

#[test]
fn generate_is_deterministic_and_writes_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    for (out, truth) in [("a.jsonl", "a.csv"), ("b.jsonl", "b.csv")] {
        let o = run(
            "churnwatch",
            &[
                "generate",
                "--customers",
                "300",
                "--months",
                "6",
                "--seed",
                "9",
                "--truth",
                &path(truth),
                "--output",
                &path(out),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("for 300 customers"), "{}", stderr(&o));
    }
    let a = std::fs::read(path("a.jsonl")).unwrap();
    assert_eq!(a, std::fs::read(path("b.jsonl")).unwrap());
    assert_eq!(
        std::fs::read(path("a.csv")).unwrap(),
        std::fs::read(path("b.csv")).unwrap()
    );
    let truth = std::fs::read_to_string(path("a.csv")).unwrap();
    assert!(truth.starts_with("customer_id,archetype,"));
    assert_eq!(truth.lines().count(), 301);
    // Standard output is the default destination.
    let o = run(
        "churnwatch",
        &[
            "generate",
            "--customers",
            "300",
            "--months",
            "6",
            "--seed",
            "9",
        ],
    );
    assert_eq!(o.stdout, a);
}

#[test]
fn eval_scores_a_generated_feed_against_its_truth() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    let truth = dir.path().join("t.csv");
    let o = run(
        "churnwatch",
        &[
            "generate",
            "--customers",
            "1500",
            "--months",
            "18",
            "--seed",
            "3",
            "--malformed-rate",
            "0.02",
            "--duplicate-rate",
            "0.02",
            "--truth",
            truth.to_str().unwrap(),
            "--output",
            events.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        "churnwatch",
        &[
            "eval",
            "--events",
            events.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
            "--as-of",
            "2025-07-01T00:00:00Z",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let lines = std::fs::read_to_string(&events).unwrap().lines().count() as u64;
    assert_eq!(report["lines"].as_u64(), Some(lines));
    assert!(
        report["duplicates"].as_u64().unwrap() > 0,
        "redeliveries are recognised: {report}"
    );
    let rejected = report["rejected"].as_object().unwrap();
    for code in [
        "malformed_json",
        "missing_field",
        "bad_timestamp",
        "negative_amount",
        "unknown_currency",
        "unknown_type",
    ] {
        assert!(
            rejected.get(code).and_then(Value::as_u64).unwrap_or(0) > 0,
            "no {code} in {rejected:?}"
        );
    }
    assert_eq!(report["customers"].as_u64(), Some(1500));
    assert!(report["churners"].as_u64().unwrap() > 50, "{report}");
    // Quality floor on the synthetic archetypes, well below what the core reaches.
    assert!(report["precision"].as_f64().unwrap() > 0.8, "{report}");
    assert!(
        report["recall_detectable"].as_f64().unwrap() > 0.8,
        "{report}"
    );
    assert!(report["lead_time_days"]["median"].as_f64().is_some());
    let stages = report["stage_matrix"]["prospect"].as_object().unwrap();
    assert!(stages["prospect"].as_u64().unwrap() > 0);
    // Every published stage move, counted by its two ends.
    let moves = report["stage_moves"].as_object().unwrap();
    assert!(
        moves["prospect -> first_time"].as_u64().unwrap() > 0,
        "{moves:?}"
    );
    assert!(
        moves["first_time -> early_repeat"].as_u64().unwrap() > 0,
        "{moves:?}"
    );
    // The campaign check: the matched uplift beside the true effect on the same customers.
    let campaigns = report["campaigns"].as_array().unwrap();
    assert!(!campaigns.is_empty(), "{report}");
    for c in campaigns {
        let (low, uplift, high) = (
            c["low"].as_f64().unwrap(),
            c["measured_uplift"].as_f64().unwrap(),
            c["high"].as_f64().unwrap(),
        );
        assert!(low <= uplift && uplift <= high, "{c}");
        assert!(c["matched"].as_u64().unwrap() > 0, "{c}");
        let truth = c["true_effect"].as_f64().unwrap();
        assert_eq!(
            c["covered"].as_bool(),
            Some(low <= truth && truth <= high),
            "{c}"
        );
        if c["campaign"] == "newsletter_blast" {
            assert_eq!(truth, 0.0, "the newsletter does nothing: {c}");
        }
    }

    let o = run(
        "churnwatch",
        &[
            "eval",
            "--events",
            events.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "precision",
        "recall",
        "lead time",
        "Stage confusion",
        "Stage moves over the replay: ",
        "silent_churner",
        "core_defector",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn eval_errors_name_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let truth = dir.path().join("t.csv");
    let o = run(
        "churnwatch",
        &[
            "generate",
            "--customers",
            "5",
            "--months",
            "2",
            "--truth",
            truth.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        "churnwatch",
        &[
            "eval",
            "--events",
            missing.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope.jsonl"), "{}", stderr(&o));

    let bad_truth = dir.path().join("bad.csv");
    std::fs::write(&bad_truth, "customer_id,archetype\nc1,wizard\n").unwrap();
    let o = run(
        "churnwatch",
        &[
            "eval",
            "--events",
            missing.to_str().unwrap(),
            "--truth",
            bad_truth.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a truth file"), "{}", stderr(&o));

    let o = run(
        "churnwatch",
        &[
            "eval",
            "--events",
            "x",
            "--truth",
            "y",
            "--as-of",
            "yesterday",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("RFC 3339"), "{}", stderr(&o));

    let o = run(
        "churnwatch",
        &["eval", "--events", "x", "--truth", "y", "--fx-rates", "EUR"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--fx-rates"), "{}", stderr(&o));

    let o = run(
        "churnwatch",
        &["generate", "--customers", "10", "--duplicate-rate", "1.5"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("duplicate_rate"), "{}", stderr(&o));
}

#[test]
fn the_demo_runs_the_pipeline_on_an_embedded_broker_and_exits_when_done() {
    let o = run(
        "churnwatch",
        &[
            "demo",
            "--customers",
            "400",
            "--months",
            "12",
            "--once",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "all events processed",
        "rejected to orders-dlq",
        "Customers per stage",
        "core_defector",
        "Top",
        "value at risk",
        "overdue: no order for",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    for needle in [
        "embedded Kafka broker",
        "gRPC API (churnwatch.v1.CustomerQuery) at 127.0.0.1:",
    ] {
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
}

#[test]
fn while_the_demo_runs_its_api_lists_the_customers_at_risk_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let port = churnwatch_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{}", churnwatch_testkit::free_port());
    let mut demo = churnwatch_testkit::Service::start(
        &churnwatch_e2e::bin("churnwatch"),
        &[
            "demo",
            "--customers",
            "400",
            "--months",
            "12",
            "--grpc-addr",
            &addr,
            "--admin-addr",
            &admin,
        ],
        &[],
        dir.path(),
    );
    let ask = |args: &[&str]| {
        let o = run(
            "churnwatch",
            &[&["query", "--addr", &addr][..], args].concat(),
        );
        (o.status.success(), stdout(&o))
    };
    // The feed takes a few seconds; the list fills as scoring publishes profiles.
    let mut table = String::new();
    let listed = churnwatch_testkit::wait_until(std::time::Duration::from_secs(120), || {
        let (ok, out) = ask(&["at-risk", "--level", "high"]);
        table = out;
        ok && table.contains("customers at risk level high or above") && !table.starts_with("no ")
    });
    assert!(
        listed,
        "no at-risk list from the demo's API:\n{table}\n{}",
        demo.log()
    );
    assert!(
        [
            "no order for",
            "chance of still being an active customer",
            "none since"
        ]
        .iter()
        .any(|s| table.contains(s)),
        "reasons in sentences:\n{table}"
    );
    let (ok, health) = ask(&["health"]);
    assert!(ok && health.trim() == "SERVING", "{health}");
    // One /metrics for the three services running in the process. Scoring counts a batch
    // after publishing its profiles, so the query view can list customers a moment before
    // scoring's counters move: wait for them.
    let (status, _) = churnwatch_testkit::http_get(&admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    let series = [
        "churnwatch_ingest_messages_consumed_total",
        "churnwatch_scoring_events_applied_total",
        "churnwatch_customers_by_stage{stage=\"core\"}",
        "churnwatch_query_profiles_written_total",
    ];
    let mut text = String::new();
    let all = churnwatch_testkit::wait_until(std::time::Duration::from_secs(30), || {
        text = churnwatch_testkit::http_get(&admin, "/metrics").unwrap().1;
        series
            .iter()
            .all(|s| churnwatch_testkit::metric(&text, s).is_some_and(|v| v > 0.0))
    });
    assert!(all, "{series:?} not all above zero in:\n{text}");

    // The README's Python client, built from the proto, against the same API.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/python-client/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-python-client.sh (scripts/test.sh does)",
        python.display()
    );
    let o = std::process::Command::new(&python)
        .arg(root.join("examples/python/client.py"))
        .arg(&addr)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for needle in [
        "STAGE_CORE",
        "last 12 months:",
        "at high risk or above",
        "no order for",
    ] {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }
    let (status, _) = demo
        .terminate(std::time::Duration::from_secs(10))
        .expect("the demo stops on SIGTERM");
    assert!(status.success(), "{}", demo.log());
}

#[test]
fn every_binary_has_a_complete_help() {
    for (bin, needles) in [
        (
            "churnwatch",
            &[
                "demo",
                "generate",
                "eval",
                "bench",
                "bench-query",
                "footprint",
                "query",
            ][..],
        ),
        (
            "order-ingest",
            &[
                "--brokers",
                "orders-dlq",
                "CHURNWATCH_BROKERS",
                "--kafka-property",
                "--admin-addr",
            ][..],
        ),
        (
            "scoring",
            &[
                "--state-dir",
                "--clock",
                "--allowed-lateness",
                "customer-profiles",
            ][..],
        ),
        (
            "query",
            &["--grpc-addr", "--view-dir", "grpc.health.v1"][..],
        ),
    ] {
        let o = run(bin, &["--help"]);
        assert!(o.status.success(), "{bin}: {}", stderr(&o));
        let help = stdout(&o);
        for n in needles {
            assert!(help.contains(n), "{bin} --help lacks {n}:\n{help}");
        }
    }
}

#[test]
fn bench_query_rebuilds_a_view_and_reports_latency_and_throughput() {
    let o = run(
        "churnwatch",
        &[
            "bench-query",
            "--profiles",
            "1500",
            "--rate",
            "200",
            "--secs",
            "1",
            "--concurrency",
            "4",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "view rebuilt from the topic: 1500 profiles",
        "GetCustomer at 200 requests/s (200 sent",
        "0 errors): p50",
        "GetCustomer maximum:",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn footprint_fills_a_real_store_and_reports_its_cost_per_customer() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    let state = dir.path().join("state");
    let o = run(
        "churnwatch",
        &[
            "generate",
            "--customers",
            "200",
            "--months",
            "6",
            "--seed",
            "4",
            "--output",
            events.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let args = [
        "footprint",
        "--events",
        events.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--partitions",
        "3",
        "--batch-size",
        "100",
    ];
    let o = run("churnwatch", &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let customers: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("customers:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // Generated customers who never ordered in the window may have no events at all.
    assert!((150..=200).contains(&customers), "{out}");
    assert!(
        out.contains("bytes per customer") && out.contains("peak RSS"),
        "{out}"
    );
    // What it wrote is a scoring store: the export reads the same customers back.
    let export = run(
        "scoring",
        &["export", "--state-dir", state.to_str().unwrap()],
    );
    assert!(export.status.success(), "{}", stderr(&export));
    assert_eq!(stdout(&export).lines().count() as u64, customers);
    // A second run refuses to mix its figures with the first's.
    let o = run("churnwatch", &args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
}

/// Runs `churnwatch` with its standard output a pipe whose reader has already gone, as
/// `churnwatch … | head` is once `head` has read enough.
fn run_into_a_closed_pipe(args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(churnwatch_e2e::bin("churnwatch"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_reader_that_goes_away_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    let events = events.to_str().unwrap();
    let truth = dir.path().join("t.csv");
    let truth = truth.to_str().unwrap();
    let o = run(
        "churnwatch",
        &[
            "generate",
            "--customers",
            "200",
            "--months",
            "12",
            "--seed",
            "3",
            "--truth",
            truth,
            "--output",
            events,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // A writer that propagates the error (generate's JSON lines), and commands that print a
    // report (backtest's tables; eval's).
    for args in [
        &["generate", "--customers", "2000", "--months", "12"][..],
        &["backtest", "--events", events][..],
        &["eval", "--events", events, "--truth", truth][..],
    ] {
        let o = run_into_a_closed_pipe(args);
        assert!(
            o.status.success(),
            "{args:?}: {:?}\n{}",
            o.status,
            stderr(&o)
        );
        assert!(
            !stderr(&o).contains("panicked") && !stderr(&o).contains("Broken pipe"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
