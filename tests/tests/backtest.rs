//! `churnwatch backtest` as a user runs it on a history: the risk score against the baselines
//! computed in the same run, on data from a known process, with deterministic seeds.

use churnwatch_e2e::{run, stderr, stdout};
use serde_json::Value;

/// Generates a feed and its truth into `dir` and returns their paths.
fn generate(dir: &std::path::Path, name: &str, args: &[&str]) -> (String, String) {
    let events = dir
        .join(format!("{name}.jsonl"))
        .to_str()
        .unwrap()
        .to_owned();
    let truth = dir.join(format!("{name}.csv")).to_str().unwrap().to_owned();
    let mut all = vec!["generate", "--truth", &truth, "--output", &events];
    all.extend_from_slice(args);
    let o = run("churnwatch", &all);
    assert!(o.status.success(), "{}", stderr(&o));
    (events, truth)
}

/// Returns one score's report at a cut-off.
fn score<'a>(cutoff: &'a Value, name: &str) -> &'a Value {
    cutoff["scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {cutoff}"))
}

fn auc(cutoff: &Value, name: &str) -> f64 {
    score(cutoff, name)["ranking"]["roc_auc"].as_f64().unwrap()
}

fn ece(cutoff: &Value, name: &str) -> f64 {
    score(cutoff, name)["calibration"]["ece"].as_f64().unwrap()
}

#[test]
fn on_the_bgnbd_process_the_risk_score_matches_the_best_possible_from_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (events, truth) = generate(
        dir.path(),
        "bgnbd",
        &[
            "--process",
            "bgnbd",
            "--customers",
            "2000",
            "--months",
            "24",
            "--seed",
            "3",
        ],
    );
    let o = run(
        "churnwatch",
        &[
            "backtest",
            "--events",
            &events,
            "--truth",
            &truth,
            "--true-bgnbd",
            "0.3,6,1,3",
            "--cutoff",
            "2025-04-01",
            "--cutoff",
            "2025-07-01",
            "--cutoff",
            "2025-10-01",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cutoffs = report["cutoffs"].as_array().unwrap();
    assert_eq!(cutoffs.len(), 3);
    for c in cutoffs {
        assert_eq!(c["model"]["risk_model_fitted"], true, "{c}");
        let risk = auc(c, "risk_score");
        for baseline in ["recency", "frequency", "p_alive", "previous_rule"] {
            assert!(risk > auc(c, baseline), "risk {risk} vs {baseline} in {c}");
        }
        // BG/NBD itself is the right model here: no worse than it, and at the posterior
        // oracle (the true parameters).
        assert!(risk > auc(c, "bgnbd_expected") - 0.01, "{c}");
        assert!(risk > auc(c, "oracle_posterior") - 0.01, "{c}");
        assert!(
            auc(c, "oracle") > risk,
            "the latent state is a ceiling: {c}"
        );
        assert!(ece(c, "risk_score") < 0.05, "{c}");
    }
}

#[test]
fn on_the_archetypes_the_risk_score_ranks_above_every_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let (events, truth) = generate(
        dir.path(),
        "arch",
        &["--customers", "1000", "--months", "18", "--seed", "5"],
    );
    let o = run(
        "churnwatch",
        &[
            "backtest",
            "--events",
            &events,
            "--truth",
            &truth,
            "--horizon-days",
            "60",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cutoffs = report["cutoffs"].as_array().unwrap();
    assert_eq!(cutoffs.len(), 3, "three default cut-offs");
    for c in cutoffs {
        assert_eq!(c["horizon_days"], 60);
        let risk = auc(c, "risk_score");
        for baseline in [
            "recency",
            "frequency",
            "bgnbd_expected",
            "p_alive",
            "previous_rule",
        ] {
            assert!(risk > auc(c, baseline), "risk {risk} vs {baseline} in {c}");
        }
        // Defined for every buyer: one-time buyers are scored, not left at 0.
        assert!(c["one_time_buyers"].as_u64().unwrap() > 0);
    }

    // The table a user reads.
    let o = run(
        "churnwatch",
        &["backtest", "--events", &events, "--cutoff", "2025-01-15"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "Cut-off 2025-01-15",
        "ROC AUC",
        "ECE",
        "risk_score",
        "recency",
        "reliability",
        "precision",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// Runs `churnwatch` expecting it to fail with a message containing `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let o = run("churnwatch", args);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(
        stderr(&o).contains(needle),
        "{needle:?} not in: {}",
        stderr(&o)
    );
}

#[test]
fn backtest_errors_name_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = generate(dir.path(), "small", &["--customers", "20", "--months", "3"]);
    let backtest = |extra: &[&str], needle: &str| {
        let mut args = vec!["backtest", "--events", &events];
        args.extend_from_slice(extra);
        fails_with(&args, needle);
    };
    backtest(&["--cutoff", "2019-01-01"], "before the first event");
    backtest(&["--cutoff", "June"], "is not a date such as");
    backtest(
        &["--horizon-days", "0"],
        "--horizon-days must be at least 1",
    );
    fails_with(
        &["backtest", "--events", "/nonexistent/feed.jsonl"],
        "feed.jsonl",
    );
}
