//! The streaming pipeline against a real Kafka-protocol broker (tansu): order-ingest and
//! scoring run as separate processes, exactly as a user would start them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use churnwatch_core::money::{CurrencyCode, FxTable};
use churnwatch_core::replay::{Ignore, Replay};
use churnwatch_core::{CustomerState, Model, ParseConfig, Timestamp, parse_event};
use churnwatch_e2e::bin;
use churnwatch_synth::{FX_RATES_TO_USD, LineKind, SynthConfig, generate};
use churnwatch_testkit::{
    Broker, OtlpCollector, Service, Storage, consume_all, group_committed, header, http_get,
    metric, produce, set_group_committed, topic_end, wait_until,
};

/// Scoring's flags that keep its answers a function of the feed alone (no refits on event
/// time), so they can be compared with the pure core's.
const NO_EVENT_REFITS: &[&str] = &["--event-refit-interval", "off"];

/// A generated feed: its lines in feed order, with the label of each.
struct Feed {
    lines: Vec<(String, Vec<u8>, LineKind)>,
}

impl Feed {
    /// Returns how many lines order-ingest accepts (all but the malformed ones).
    fn accepted(&self) -> i64 {
        self.lines
            .iter()
            .filter(|(_, _, k)| !matches!(k, LineKind::Malformed(_)))
            .count() as i64
    }

    fn len(&self) -> i64 {
        self.lines.len() as i64
    }
}

fn feed(customers: u64, months: u32, seed: u64) -> Feed {
    feed_of(&SynthConfig {
        malformed_rate: 0.02,
        duplicate_rate: 0.03,
        ..SynthConfig::new(customers, months, seed)
    })
}

fn feed_of(config: &SynthConfig) -> Feed {
    let data = generate(config).expect("generated");
    let lines = data
        .events()
        .map(|e| {
            let mut line = Vec::new();
            e.append_json(&mut line);
            (e.customer_id(), line, e.line_kind())
        })
        .collect();
    Feed { lines }
}

/// The pure core's answer for a feed: a replay in feed order, as one partition sees it.
fn reference(feed: &Feed) -> BTreeMap<String, CustomerState> {
    let fx = FxTable::parse_rates(CurrencyCode::default(), FX_RATES_TO_USD).unwrap();
    let parse = ParseConfig {
        fx,
        ..ParseConfig::default()
    };
    let mut replay = Replay::new(Model::default(), None);
    for (_, line, _) in &feed.lines {
        if let Ok(event) = parse_event(line, Timestamp(i64::MAX / 4), &parse) {
            replay.apply(&event, &mut Ignore);
        }
    }
    replay
        .states()
        .map(|s| (s.customer_id.clone(), s.clone()))
        .collect()
}

fn export(state_dir: &Path) -> BTreeMap<String, CustomerState> {
    let out = std::process::Command::new(bin("scoring"))
        .args(["export", "--state-dir", state_dir.to_str().unwrap()])
        .output()
        .expect("scoring export runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let s: CustomerState = serde_json::from_str(l).expect("a state per line");
            (s.customer_id.clone(), s)
        })
        .collect()
}

struct Rig {
    broker: Broker,
    dir: tempfile::TempDir,
    /// The OTLP collector the services export spans to, if any.
    otlp: Option<String>,
}

impl Rig {
    fn new(storage: Storage) -> Self {
        Self {
            broker: Broker::start(storage),
            dir: tempfile::tempdir().unwrap(),
            otlp: None,
        }
    }

    /// The environment of a service: `extra`, and the OTLP endpoint.
    fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = extra.to_vec();
        if let Some(endpoint) = &self.otlp {
            env.push(("CHURNWATCH_OTLP_ENDPOINT", endpoint));
        }
        env
    }

    fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    fn ingest(&self) -> Service {
        let brokers = self.broker.brokers();
        Service::start(
            &bin("order-ingest"),
            &[
                "--brokers",
                &brokers,
                "--partitions",
                "1",
                "--fx-rates",
                FX_RATES_TO_USD,
                "--log-format",
                "json",
            ],
            &self.env(&[]),
            self.dir.path(),
        )
    }

    /// Scoring on event time with no lateness and no periodic refits, so its answers are a
    /// function of the feed alone; small batches so a crash lands mid-stream.
    fn scoring(&self) -> Service {
        self.scoring_with(NO_EVENT_REFITS)
    }

    /// [`Rig::scoring`] with more flags.
    fn scoring_with(&self, extra: &[&str]) -> Service {
        let config = self.dir.path().join("scoring.toml");
        // A short session timeout lets a restarted scoring take over the partitions of the
        // one that was killed within seconds instead of librdkafka's default 45.
        std::fs::write(
            &config,
            "batch_size = 150\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n",
        )
        .unwrap();
        let brokers = self.broker.brokers();
        let state = self.state_dir();
        let mut args = vec![
            "--brokers",
            &brokers,
            "--partitions",
            "1",
            "--state-dir",
            state.to_str().unwrap(),
            "--clock",
            "event",
            "--allowed-lateness",
            "0s",
            "--refit-interval",
            "off",
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        Service::start(
            &bin("scoring"),
            &args,
            &self.env(&[("CHURNWATCH_CONFIG", config.to_str().unwrap())]),
            self.dir.path(),
        )
    }

    /// Starts order-ingest and scoring, feeds `feed` into `orders` and waits until both have
    /// committed all of it; returns the running services.
    fn run_through(&self, feed: &Feed) -> (Service, Service) {
        self.run_through_with(feed, NO_EVENT_REFITS)
    }

    /// [`Rig::run_through`] with more flags for scoring.
    fn run_through_with(&self, feed: &Feed, scoring_flags: &[&str]) -> (Service, Service) {
        let mut ingest = self.ingest();
        let mut scoring = self.scoring_with(scoring_flags);
        produce(
            &self.broker.brokers(),
            "orders",
            feed.lines.iter().map(|(k, v, _)| (k.clone(), v.clone())),
        );
        self.wait_drained(
            feed.len(),
            feed.accepted(),
            &mut [&mut ingest, &mut scoring],
        );
        (ingest, scoring)
    }

    fn committed(&self, group: &str, topic: &str) -> Option<i64> {
        group_committed(&self.broker.brokers(), group, topic)
    }

    /// Waits until order-ingest has committed all `fed` messages of `orders` and scoring all
    /// `accepted` messages of `orders-accepted`. (tansu's reported log ends do not track
    /// message counts, so completion is judged by what the services committed.)
    fn wait_drained(&self, fed: i64, accepted: i64, services: &mut [&mut Service]) {
        let drained = wait_until(Duration::from_secs(180), || {
            self.committed("churnwatch-order-ingest", "orders") == Some(fed)
                && self.committed("churnwatch-scoring", "orders-accepted") == Some(accepted)
        });
        if !drained {
            for s in services.iter() {
                eprintln!("--- {} log ---\n{}", s.name(), s.log());
            }
            let brokers = self.broker.brokers();
            panic!(
                "the pipeline did not drain: ingest committed {:?} of {fed}, scoring committed {:?} of {accepted} (broker log ends: {:?}, {:?})",
                self.committed("churnwatch-order-ingest", "orders"),
                self.committed("churnwatch-scoring", "orders-accepted"),
                topic_end(&brokers, "orders"),
                topic_end(&brokers, "orders-accepted"),
            );
        }
    }
}

fn assert_same_states(
    got: &BTreeMap<String, CustomerState>,
    want: &BTreeMap<String, CustomerState>,
) {
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} customers missing from the pipeline's export: {missing:?}",
        missing.len()
    );
    assert_eq!(got.len(), want.len(), "customer count");
    for (id, w) in want {
        let g = got
            .get(id)
            .unwrap_or_else(|| panic!("{id} missing from the pipeline's export"));
        assert_eq!(g, w, "state of {id} differs");
    }
}

fn terminate_cleanly(service: &mut Service) {
    let (status, took) = service
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{} ignored SIGTERM for 10 s", service.name()));
    assert!(
        status.success(),
        "{} exited with {status}:\n{}",
        service.name(),
        service.log()
    );
    assert!(took < Duration::from_secs(10));
}

#[test]
fn the_pipeline_ends_in_the_same_state_as_the_pure_core_and_dead_letters_with_reasons() {
    let rig = Rig::new(Storage::Memory);
    let feed = feed(250, 12, 21);
    let (mut ingest, mut scoring) = rig.run_through(&feed);

    // What the services count is what happened, on their /metrics.
    let scrape = |s: &Service| {
        let addr = s.admin_addr().expect("the admin endpoint is logged");
        assert_eq!(http_get(&addr, "/readyz").unwrap().0, 200);
        assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
        let (status, text) = http_get(&addr, "/metrics").unwrap();
        assert_eq!(status, 200);
        text
    };
    let ingest_metrics = scrape(&ingest);
    let malformed = feed
        .lines
        .iter()
        .filter(|(_, _, k)| matches!(k, LineKind::Malformed(_)))
        .count() as f64;
    assert_eq!(
        metric(&ingest_metrics, "churnwatch_ingest_messages_consumed_total"),
        Some(feed.len() as f64)
    );
    assert_eq!(
        metric(&ingest_metrics, "churnwatch_ingest_dlq_produced_total"),
        Some(malformed)
    );
    assert!(
        ingest_metrics
            .contains("churnwatch_ingest_messages_rejected_total{reason=\"malformed_json\"}")
    );
    assert!(ingest_metrics.contains("churnwatch_ingest_batch_duration_seconds_bucket"));
    // Lag comes from librdkafka's statistics, every 5 s; drained, it is zero.
    let lag = "churnwatch_consumer_lag_messages{group=\"churnwatch-order-ingest\",topic=\"orders\",partition=\"0\"}";
    assert!(
        wait_until(Duration::from_secs(20), || metric(&scrape(&ingest), lag)
            == Some(0.0)),
        "{lag} in:\n{}",
        scrape(&ingest)
    );
    let scoring_metrics = scrape(&scoring);
    assert_eq!(
        metric(
            &scoring_metrics,
            "churnwatch_scoring_messages_consumed_total"
        ),
        Some(feed.accepted() as f64)
    );
    for series in [
        "churnwatch_scoring_events_applied_total",
        "churnwatch_scoring_pending_timers",
        "churnwatch_scoring_state_disk_bytes",
        // Every customer in the feed placed a first order here, and was worth something then.
        "churnwatch_scoring_customers_acquired_total",
        "churnwatch_scoring_acquired_value_minor_total",
    ] {
        assert!(
            metric(&scoring_metrics, series).is_some_and(|v| v > 0.0),
            "{series} in:\n{scoring_metrics}"
        );
    }

    terminate_cleanly(&mut scoring);
    terminate_cleanly(&mut ingest);

    assert_same_states(&export(&rig.state_dir()), &reference(&feed));

    // Every malformed line is in the DLQ with the reason it was made with, and its bytes.
    let mut expected: HashMap<String, usize> = HashMap::new();
    for (_, _, kind) in &feed.lines {
        if let LineKind::Malformed(k) = kind {
            *expected.entry(k.reason_code().to_owned()).or_default() += 1;
        }
    }
    let dlq = consume_all(&rig.broker.brokers(), "orders-dlq", Duration::from_secs(3));
    let mut got: HashMap<String, usize> = HashMap::new();
    for m in &dlq {
        *got.entry(header(m, "reason").expect("a reason header"))
            .or_default() += 1;
        assert_eq!(header(m, "source_topic").as_deref(), Some("orders"));
        assert!(header(m, "source_offset").is_some() && header(m, "message").is_some());
    }
    assert_eq!(got, expected);
}

#[test]
fn a_customer_who_goes_silent_gets_a_risk_event_from_timers_alone() {
    let rig = Rig::new(Storage::Memory);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = 86_400;
    // Weekly orders from 200 to 60 days ago, then nothing: the last message is an order.
    let mut lines = Vec::new();
    let mut last_order = 0;
    for (n, ago) in (60..=200).rev().step_by(7).enumerate() {
        let at = Timestamp(now - ago * day);
        last_order = at.0;
        let json = format!(
            r#"{{"type":"order","event_id":"quiet-{n}","order_id":"o{n}","customer_id":"quiet","occurred_at":"{at}","currency":"USD","total":"30.00","cost":"12.00"}}"#
        );
        lines.push(("quiet".to_owned(), json.into_bytes()));
    }
    let mut ingest = rig.ingest();
    let state = rig.state_dir();
    let brokers = rig.broker.brokers();
    let mut scoring = Service::start(
        &bin("scoring"),
        &[
            "--brokers",
            &brokers,
            "--partitions",
            "1",
            "--state-dir",
            state.to_str().unwrap(),
            "--clock",
            "wall",
            "--refit-interval",
            "off",
        ],
        &[],
        rig.dir.path(),
    );
    let fed = lines.len() as i64;
    produce(&brokers, "orders", lines);
    rig.wait_drained(fed, fed, &mut [&mut ingest, &mut scoring]);
    let risk = consume_all(&brokers, "customer-risk", Duration::from_secs(3));
    let events: Vec<serde_json::Value> = risk
        .iter()
        .filter_map(|m| {
            serde_json::from_slice(churnwatch_kafka::rdkafka::Message::payload(m)?).ok()
        })
        .collect();
    let from_timer = events
        .iter()
        .find(|e| {
            // Assessed by a timer, after the last order: the backlog's own orders are not
            // judged by the silence they end.
            e["customer_id"] == "quiet"
                && Timestamp::parse_rfc3339(e["at"].as_str().unwrap())
                    .unwrap()
                    .0
                    > last_order
                && (e["level"] == "high" || e["level"] == "critical")
        })
        .unwrap_or_else(|| {
            panic!(
                "no timer-driven high-risk event in {events:#?}\n{}",
                scoring.log()
            )
        });
    let reasons: Vec<&str> = from_timer["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    // Silence is the only thing that changed: the reasons say so.
    assert!(
        !reasons.is_empty()
            && reasons
                .iter()
                .all(|r| ["overdue", "purchase_decline", "low_p_alive", "no_repeat"].contains(r)),
        "{from_timer}"
    );
    assert!(
        from_timer["event_id"]
            .as_str()
            .unwrap()
            .starts_with("quiet/")
    );
    // Refits on demand: SIGHUP to the running service; the offline command points there.
    scoring.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(30), || scoring
            .log()
            .contains("models refitted")),
        "no refit after SIGHUP:\n{}",
        scoring.log()
    );
    let o = churnwatch_e2e::run(
        "churnwatch",
        &["fit", "--state-dir", state.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(
        churnwatch_e2e::stderr(&o).contains("kill -HUP"),
        "{}",
        churnwatch_e2e::stderr(&o)
    );
    terminate_cleanly(&mut scoring);
    // Stopped, the store is refitted by the command itself.
    let o = churnwatch_e2e::run(
        "churnwatch",
        &["fit", "--state-dir", state.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", churnwatch_e2e::stderr(&o));
    let out = churnwatch_e2e::stdout(&o);
    assert!(out.contains("customers: 1"), "{out}");
    // An event-clock store is fitted as of its watermark, not today.
    assert!(out.contains("as of the store's watermark"), "{out}");
    let o = churnwatch_e2e::run(
        "churnwatch",
        &[
            "fit",
            "--state-dir",
            state.to_str().unwrap(),
            "--as-of",
            "2024-06-01",
        ],
    );
    assert!(
        o.status.success(),
        "a bare date: {}",
        churnwatch_e2e::stderr(&o)
    );
    terminate_cleanly(&mut ingest);
}

#[test]
fn an_event_clock_replay_fits_its_models_rescores_everyone_and_a_restart_serves_the_parameters() {
    let rig = Rig::new(Storage::Memory);
    let feed = feed(400, 12, 31);
    let (mut ingest, mut scoring) = rig.run_through_with(&feed, &["--event-refit-interval", "30d"]);
    let admin = scoring.admin_addr().expect("the admin endpoint is logged");
    let (_, text) = http_get(&admin, "/metrics").unwrap();
    // A year of event time: a refit every 30 days of it, minutes of wall time.
    let fits = metric(&text, "churnwatch_scoring_model_fits_total").unwrap_or(0.0);
    assert!(
        fits >= 6.0,
        "{fits} refits in a replayed year:\n{}",
        scoring.log()
    );
    let series = |text: &str, p: &str| {
        metric(
            text,
            &format!("churnwatch_scoring_model_parameter{{parameter=\"{p}\"}}"),
        )
    };
    assert!(
        series(&text, "bgnbd_r").is_some(),
        "the fitted parameters are exported:\n{text}"
    );
    assert!(
        series(&text, "risk_model_samples").unwrap_or(0.0) > 0.0,
        "the risk model was fitted on the back-labelled history:\n{text}"
    );
    assert!(
        scoring.log().contains("risk model fitted"),
        "{}",
        scoring.log()
    );
    // After each refit every customer who has ordered is re-scored and republished: at least
    // one full sweep of the 400 customers, and none left going once the feed is done.
    let rescored = wait_until(Duration::from_secs(60), || {
        http_get(&admin, "/metrics").is_ok_and(|(_, t)| {
            metric(&t, "churnwatch_scoring_rescored_customers_total").unwrap_or(0.0) >= 400.0
                && metric(&t, "churnwatch_scoring_rescores_pending") == Some(0.0)
        })
    });
    assert!(
        rescored,
        "customers not re-scored after the refits:\n{}\n{}",
        http_get(&admin, "/metrics")
            .map(|(_, t)| t)
            .unwrap_or_default(),
        scoring.log()
    );
    assert!(
        scoring
            .log()
            .contains("every customer of the partition re-scored"),
        "{}",
        scoring.log()
    );
    terminate_cleanly(&mut scoring);

    // Restarted with no refit to come, it serves the stored parameters from the start.
    let mut scoring = rig.scoring();
    let admin = wait_until(Duration::from_secs(60), || scoring.admin_addr().is_some());
    assert!(admin, "{}", scoring.log());
    let admin = scoring.admin_addr().unwrap();
    // (The last refit may land after the scrape above, so the value itself can differ from
    // `r`; it is a fitted one, not the prior's 0.25.)
    let served = wait_until(Duration::from_secs(30), || {
        http_get(&admin, "/metrics").is_ok_and(|(_, t)| {
            series(&t, "bgnbd_r").is_some_and(|v| v != 0.25)
                && series(&t, "risk_model_samples").unwrap_or(0.0) > 0.0
        })
    });
    assert!(
        served,
        "stored parameters not served after a restart:\n{}",
        scoring.log()
    );
    terminate_cleanly(&mut scoring);
    terminate_cleanly(&mut ingest);
}

#[test]
fn kill_9_of_scoring_mid_stream_then_a_restart_ends_in_the_uninterrupted_state() {
    // sqlite storage: a restarted consumer resumes from a committed offset inside a stored
    // record batch, which tansu's memory engine answers from the next batch on (see Storage).
    let rig = Rig::new(Storage::Sqlite);
    let feed = feed(500, 12, 22);
    let mut ingest = rig.ingest();
    produce(
        &rig.broker.brokers(),
        "orders",
        feed.lines.iter().map(|(k, v, _)| (k.clone(), v.clone())),
    );
    let ingested = wait_until(Duration::from_secs(120), || {
        rig.committed("churnwatch-order-ingest", "orders") == Some(feed.len())
    });
    assert!(ingested, "{}", ingest.log());

    let mut scoring = rig.scoring();
    // Crash once some, but not all, of the work is committed.
    let started = wait_until(Duration::from_secs(120), || {
        rig.committed("churnwatch-scoring", "orders-accepted")
            .is_some_and(|c| c > feed.accepted() / 5)
    });
    assert!(started, "scoring committed too little:\n{}", scoring.log());
    scoring.kill9();
    let at_crash = rig.committed("churnwatch-scoring", "orders-accepted");
    assert!(
        at_crash.is_some_and(|c| c < feed.accepted()),
        "the crash came too late to test anything ({at_crash:?} of {} committed)",
        feed.accepted()
    );
    // What the crashed run made durable beyond its committed offset is redelivered to the
    // restart, which must recognise it rather than count it twice.
    let mut scoring = rig.scoring();
    rig.wait_drained(
        feed.len(),
        feed.accepted(),
        &mut [&mut ingest, &mut scoring],
    );
    let log = scoring.log();
    assert!(log.contains("resuming partition"), "{log}");
    assert!(!log.contains("skipped messages"), "{log}");
    terminate_cleanly(&mut scoring);
    terminate_cleanly(&mut ingest);
    assert_same_states(&export(&rig.state_dir()), &reference(&feed));
}

#[test]
fn the_broker_stopped_and_restarted_mid_run_loses_nothing() {
    let mut rig = Rig::new(Storage::Sqlite);
    let feed = feed(400, 12, 23);
    let mut ingest = rig.ingest();
    let mut scoring = rig.scoring();
    let half = feed.lines.len() / 2;
    produce(
        &rig.broker.brokers(),
        "orders",
        feed.lines[..half]
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone())),
    );
    let flowing = wait_until(Duration::from_secs(120), || {
        rig.committed("churnwatch-scoring", "orders-accepted")
            .is_some_and(|c| c > 0)
    });
    assert!(flowing, "scoring never committed:\n{}", scoring.log());
    // The broker goes away while both services are busy, and stays away for a while.
    rig.broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    rig.broker.restart();
    produce(
        &rig.broker.brokers(),
        "orders",
        feed.lines[half..]
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone())),
    );
    rig.wait_drained(
        feed.len(),
        feed.accepted(),
        &mut [&mut ingest, &mut scoring],
    );
    assert!(ingest.running() && scoring.running());
    terminate_cleanly(&mut scoring);
    terminate_cleanly(&mut ingest);
    assert_same_states(&export(&rig.state_dir()), &reference(&feed));
}

/// Asserts that the running `scoring` applied nothing and recognised every accepted event of
/// `feed` as already applied, then stops both services and compares the states with the
/// core's.
fn assert_all_recognised_again(
    rig: &Rig,
    feed: &Feed,
    ingest: &mut Service,
    scoring: &mut Service,
) {
    let admin = scoring.admin_addr().expect("the admin endpoint is logged");
    let (_, text) = http_get(&admin, "/metrics").unwrap();
    let count = |series| metric(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
    assert_eq!(
        count("churnwatch_scoring_events_applied_total"),
        0.0,
        "{}",
        scoring.log()
    );
    assert_eq!(
        count("churnwatch_scoring_events_duplicate_total"),
        feed.accepted() as f64
    );
    terminate_cleanly(scoring);
    terminate_cleanly(ingest);
    assert_same_states(&export(&rig.state_dir()), &reference(feed));
}

#[test]
fn a_history_in_customer_order_backfilled_ends_in_the_state_of_the_time_ordered_feed() {
    // Exports often come sorted by customer; fed that way, each partition's watermark would
    // jump ahead and silence timers judge later customers before their own orders arrive.
    // `backfill` sorts the file by event time first (here through its on-disk merge sort).
    let rig = Rig::new(Storage::Memory);
    let feed = feed_of(&SynthConfig {
        duplicate_rate: 0.03,
        ..SynthConfig::new(500, 12, 26)
    });
    let mut by_customer: Vec<&(String, Vec<u8>, LineKind)> = feed.lines.iter().collect();
    by_customer.sort_by(|a, b| a.0.cmp(&b.0));
    assert_ne!(
        by_customer.first().map(|l| &l.1),
        feed.lines.first().map(|l| &l.1),
        "the file is not in time order"
    );
    let file = rig.dir.path().join("history.jsonl");
    let mut text = Vec::new();
    for (_, line, _) in &by_customer {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    std::fs::write(&file, text).unwrap();

    let mut ingest = rig.ingest();
    let mut scoring = rig.scoring();
    let out = std::process::Command::new(bin("churnwatch"))
        .args([
            "backfill",
            "--file",
            file.to_str().unwrap(),
            "--brokers",
            &rig.broker.brokers(),
            "--partitions",
            "1",
            // Runs of about 1 MiB: the history (about 1.7 MB) is merged from disk.
            "--sort-memory-mb",
            "1",
            "--sort-dir",
            rig.dir.path().to_str().unwrap(),
        ])
        .output()
        .expect("churnwatch backfill runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sorted runs on disk"), "{stderr}");
    assert!(
        stderr.contains(&format!("imported {} events", feed.len())),
        "{stderr}"
    );
    rig.wait_drained(
        feed.len(),
        feed.accepted(),
        &mut [&mut ingest, &mut scoring],
    );
    let admin = scoring.admin_addr().expect("the admin endpoint is logged");
    let (_, metrics) = http_get(&admin, "/metrics").unwrap();
    assert_eq!(
        metric(&metrics, "churnwatch_scoring_events_late_total"),
        Some(0.0),
        "nothing arrived behind the watermark"
    );
    terminate_cleanly(&mut scoring);
    terminate_cleanly(&mut ingest);
    // Every state (stage, risk, timers' effects) as the core's replay in time order.
    assert_same_states(&export(&rig.state_dir()), &reference(&feed));
}

#[test]
fn a_committed_offset_behind_the_state_store_does_not_apply_events_twice() {
    // Offsets are committed asynchronously and not at all while the broker is away, so a
    // restarted scoring can be handed back far more than the event ids its store remembers
    // (30 days of event time). Here the whole topic comes back: it must all be skipped.
    let rig = Rig::new(Storage::Memory);
    let feed = feed(300, 12, 24);
    let (mut ingest, mut scoring) = rig.run_through(&feed);
    terminate_cleanly(&mut scoring);
    let brokers = rig.broker.brokers();
    set_group_committed(&brokers, "churnwatch-scoring", "orders-accepted", 0);
    assert_eq!(
        rig.committed("churnwatch-scoring", "orders-accepted"),
        Some(0)
    );

    let mut scoring = rig.scoring();
    rig.wait_drained(
        feed.len(),
        feed.accepted(),
        &mut [&mut ingest, &mut scoring],
    );
    assert_all_recognised_again(&rig, &feed, &mut ingest, &mut scoring);
}

#[test]
fn a_partition_resuming_past_its_stored_state_is_reported_as_missing_messages() {
    // What a second scoring replica with its own volume causes: the group's offset moves on
    // while this store's state of the partition does not.
    let rig = Rig::new(Storage::Sqlite);
    let feed = feed(200, 12, 27);
    let half = feed.lines.len() / 2;
    let first = Feed {
        lines: feed.lines[..half].to_vec(),
    };
    let (mut ingest, mut scoring) = rig.run_through(&first);
    terminate_cleanly(&mut scoring);
    produce(
        &rig.broker.brokers(),
        "orders",
        feed.lines[half..]
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone())),
    );
    let ingested = wait_until(Duration::from_secs(120), || {
        rig.committed("churnwatch-order-ingest", "orders") == Some(feed.len())
    });
    assert!(ingested, "{}", ingest.log());
    set_group_committed(
        &rig.broker.brokers(),
        "churnwatch-scoring",
        "orders-accepted",
        first.accepted() + 10,
    );

    let mut scoring = rig.scoring();
    rig.wait_drained(
        feed.len(),
        feed.accepted(),
        &mut [&mut ingest, &mut scoring],
    );
    let admin = scoring.admin_addr().expect("the admin endpoint is logged");
    let (_, text) = http_get(&admin, "/metrics").unwrap();
    assert_eq!(
        metric(
            &text,
            "churnwatch_scoring_messages_missing_from_state_total"
        ),
        Some(10.0),
        "{text}"
    );
    let log = scoring.log();
    assert!(
        log.contains("\"missing\":10") && log.contains("Run one scoring replica per state"),
        "{log}"
    );
    terminate_cleanly(&mut scoring);
    terminate_cleanly(&mut ingest);
}

#[test]
fn events_order_ingest_produces_again_are_recognised_however_old() {
    // order-ingest stores its offsets only after what it produced is acknowledged, so a
    // restart re-produces what it had not committed, as new messages. Here it re-produces the
    // whole feed, a year of events, most far behind scoring's watermark by then.
    let rig = Rig::new(Storage::Sqlite);
    let feed = feed(300, 12, 25);
    let (mut ingest, mut scoring) = rig.run_through(&feed);
    terminate_cleanly(&mut ingest);
    terminate_cleanly(&mut scoring);
    let brokers = rig.broker.brokers();
    set_group_committed(&brokers, "churnwatch-order-ingest", "orders", 0);

    let mut ingest = rig.ingest();
    let mut scoring = rig.scoring();
    rig.wait_drained(
        feed.len(),
        2 * feed.accepted(),
        &mut [&mut ingest, &mut scoring],
    );
    assert_all_recognised_again(&rig, &feed, &mut ingest, &mut scoring);
}

#[test]
fn the_services_export_their_batch_spans_over_otlp() {
    let collector = OtlpCollector::start();
    let mut rig = Rig::new(Storage::Memory);
    rig.otlp = Some(collector.endpoint());
    let feed = feed(30, 3, 26);
    let mut ingest = rig.ingest();
    let mut scoring = rig.scoring();
    for service in [&mut ingest, &mut scoring] {
        let started = wait_until(Duration::from_secs(20), || {
            !service.running() || service.log().contains("running")
        });
        assert!(
            started && service.running(),
            "{} did not start (scripts/test.sh builds the binaries with --all-features, which includes `otlp`):\n{}",
            service.name(),
            service.log()
        );
    }
    produce(
        &rig.broker.brokers(),
        "orders",
        feed.lines.iter().map(|(k, v, _)| (k.clone(), v.clone())),
    );
    rig.wait_drained(
        feed.len(),
        feed.accepted(),
        &mut [&mut ingest, &mut scoring],
    );
    // A clean stop exports the spans still buffered.
    terminate_cleanly(&mut scoring);
    terminate_cleanly(&mut ingest);
    let spans = collector.spans();
    let attribute = |span: &churnwatch_testkit::opentelemetry_proto::tonic::trace::v1::Span,
                     key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone()?.value)
            .map(|v| format!("{v:?}"))
    };
    // order-ingest's batches span partitions: one field lists each one's offset range.
    let ingest_first = spans.iter().find_map(|(from, span)| {
        (from == "order-ingest" && span.name == "batch")
            .then(|| attribute(span, "offsets"))
            .flatten()
    });
    assert!(
        ingest_first.as_deref().is_some_and(|o| o.contains("0:0-")),
        "order-ingest's first batch span names partition 0 from offset 0: {ingest_first:?} among {spans:?}"
    );
    // scoring's batch spans are per partition.
    let scoring = spans.iter().find(|(from, span)| {
        from == "scoring"
            && span.name == "batch"
            && ["partition", "first_offset", "last_offset"]
                .iter()
                .all(|key| attribute(span, key).is_some())
    });
    assert!(
        scoring.is_some(),
        "no scoring batch span with partition and offsets among {:?}",
        spans
            .iter()
            .map(|(from, s)| format!("{from}/{}", s.name))
            .collect::<Vec<_>>()
    );
}

/// Runs `churnwatch query --addr ADDR ARGS...` and returns its exit status and stdout.
fn ask(addr: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bin("churnwatch"))
        .args(["query", "--addr", addr])
        .args(args)
        .output()
        .expect("churnwatch query runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn start_query(rig: &Rig, port: u16, view_dir: &Path) -> Service {
    let brokers = rig.broker.brokers();
    let addr = format!("127.0.0.1:{port}");
    Service::start(
        &bin("query"),
        &[
            "--brokers",
            &brokers,
            "--grpc-addr",
            &addr,
            "--view-dir",
            view_dir.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        &[],
        rig.dir.path(),
    )
}

/// Waits until the query service says SERVING, then returns its export (customer → profile).
fn serving_export(addr: &str, query: &Service) -> BTreeMap<String, serde_json::Value> {
    let serving = wait_until(Duration::from_secs(60), || ask(addr, &["health"]).0);
    assert!(serving, "query never served:\n{}", query.log());
    let (ok, out) = ask(addr, &["--json", "export", "--format", "jsonl"]);
    assert!(ok, "export failed:\n{}", query.log());
    out.lines()
        .map(|l| {
            let p: serde_json::Value = serde_json::from_str(l).expect("a profile per line");
            (p["customer_id"].as_str().unwrap().to_owned(), p)
        })
        .collect()
}

#[test]
fn the_query_service_serves_what_scoring_computed_once_caught_up_and_rebuilds_an_empty_view() {
    // sqlite: a restarted query resumes from offsets inside record batches, which tansu's
    // memory engine does not deliver correctly (see Storage::Memory).
    let rig = Rig::new(Storage::Sqlite);
    let feed = feed(200, 12, 31);
    let (mut ingest, mut scoring) = rig.run_through(&feed);
    let want = reference(&feed);

    // Started after the profiles are all in the topic: once it says SERVING, the view holds
    // every customer as scoring left it.
    let port = churnwatch_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let view = rig.dir.path().join("view");
    let mut query = start_query(&rig, port, &view);
    let got = serving_export(&addr, &query);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "customers served"
    );
    for (id, state) in &want {
        let p = &got[id];
        assert_eq!(p["stage"], state.stage.as_str(), "stage of {id}");
        assert_eq!(
            p["risk_level"],
            state.risk_level.to_string(),
            "risk of {id}"
        );
        assert_eq!(p["version"], state.applied_events, "version of {id}");
    }
    let (ok, stages) = ask(&addr, &["--json", "stages"]);
    assert!(ok);
    let admin = query.admin_addr().expect("the admin endpoint is logged");
    assert_eq!(
        http_get(&admin, "/readyz").unwrap().0,
        200,
        "ready once caught up"
    );
    let (_, text) = http_get(&admin, "/metrics").unwrap();
    let core_now = want
        .values()
        .filter(|s| s.stage == churnwatch_core::Stage::Core)
        .count() as f64;
    assert_eq!(
        metric(&text, "churnwatch_customers_by_stage{stage=\"core\"}"),
        Some(core_now),
        "{text}"
    );
    let critical_now = want
        .values()
        .filter(|s| s.risk_level == churnwatch_core::RiskLevel::Critical)
        .count() as f64;
    assert_eq!(
        metric(
            &text,
            "churnwatch_customers_by_risk_level{level=\"critical\"}"
        ),
        Some(critical_now),
        "{text}"
    );
    let stages: serde_json::Value = serde_json::from_str(&stages).unwrap();
    assert_eq!(stages["total_customers"], want.len());
    // The at-risk list a retention manager reads: customers with their reasons in sentences.
    let at_risk = want
        .values()
        .filter(|s| s.risk_level >= churnwatch_core::RiskLevel::High)
        .count();
    assert!(at_risk > 0, "the feed has customers at risk");
    let (ok, table) = ask(&addr, &["at-risk", "--level", "high", "--limit", "1000"]);
    assert!(ok);
    assert!(
        table.contains(&format!("{at_risk} customers at risk level high or above")),
        "{table}"
    );
    assert!(
        table.contains("no order for"),
        "reasons in sentences:\n{table}"
    );
    let (ok, _) = ask(&addr, &["customer", "no-such-customer"]);
    assert!(!ok, "an unknown customer is an error");
    // A customer's lifetime margin, cost by cost, as scoring's state holds the totals.
    let buyer = want.values().find(|s| s.totals.orders > 1).unwrap();
    let (ok, json) = ask(&addr, &["--json", "customer", &buyer.customer_id]);
    assert!(ok, "{json}");
    let b = &serde_json::from_str::<serde_json::Value>(&json).unwrap()["margin_breakdown"];
    let field = |k: &str| b[k].as_i64().unwrap();
    assert_eq!(field("revenue_minor"), buyer.totals.revenue, "{b}");
    assert_eq!(field("discounts_minor"), buyer.totals.discounts, "{b}");
    assert_eq!(field("refunds_minor"), buyer.totals.refunds, "{b}");
    assert_eq!(
        field("cost_of_goods_minor"),
        buyer.totals.cost_of_goods,
        "{b}"
    );
    assert_eq!(
        field("margin_minor"),
        field("revenue_minor")
            - field("discounts_minor")
            - field("refunds_minor")
            - field("cost_of_goods_minor")
            - field("service_minor"),
        "{b}"
    );
    let (ok, text) = ask(&addr, &["customer", &buyer.customer_id]);
    assert!(ok && text.contains("lifetime margin"), "{text}");
    // The reports: every customer who ordered is in a tier; nobody is lost twice.
    let (ok, report) = ask(&addr, &["--json", "profitability"]);
    assert!(ok, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let in_tiers: u64 = report["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["customers"].as_u64().unwrap())
        .sum();
    let ordered = want.values().filter(|s| s.totals.orders > 0).count() as u64;
    assert_eq!(in_tiers, ordered);
    let (ok, report) = ask(&addr, &["--json", "retention", "--months", "24"]);
    assert!(ok, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let lost_now = want
        .values()
        .filter(|s| s.stage == churnwatch_core::Stage::Lost)
        .count() as u64;
    let lost = report["customers_lost"].as_u64().unwrap();
    assert!(
        lost >= lost_now && lost > 0,
        "{report} against {lost_now} lost now"
    );
    // Month by month: 24 or 25 calendar months, the moves adding up to the window's.
    let months = report["months"].as_array().unwrap();
    assert!((24..=25).contains(&months.len()), "{report}");
    let total = |k: &str| months.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert!(
        total("lost") >= lost,
        "every customer lost is a move: {report}"
    );
    assert_eq!(
        total("acquired"),
        report["customers_acquired"].as_u64().unwrap()
    );
    for m in months {
        let net = m["acquired"].as_i64().unwrap() + m["reactivated"].as_i64().unwrap()
            - m["lost"].as_i64().unwrap();
        assert_eq!(m["net"].as_i64(), Some(net), "{m}");
    }
    // Per segment: every customer active at the start counted once per dimension.
    let segments = report["segments"].as_array().unwrap();
    for dimension in ["acquisition_source", "first_channel", "value_tier"] {
        let active: u64 = segments
            .iter()
            .filter(|g| g["dimension"] == dimension)
            .map(|g| g["active_at_start"].as_u64().unwrap())
            .sum();
        assert_eq!(
            active,
            report["active_at_start"].as_u64().unwrap(),
            "{dimension}: {report}"
        );
    }
    let (ok, text) = ask(&addr, &["retention", "--months", "24"]);
    assert!(
        ok && text.contains("Customer flow by month") && text.contains("Churn by segment"),
        "{text}"
    );
    let (ok, report) = ask(&addr, &["campaigns"]);
    assert!(ok && report.contains("(at risk, not targeted)"), "{report}");
    // The change stream from the oldest change kept: high-risk moves with their reasons.
    let mut watch = Service::start(
        &bin("churnwatch"),
        &[
            "query",
            "--addr",
            &addr,
            "--json",
            "watch",
            "--from-oldest",
            "--level",
            "high",
        ],
        &[],
        rig.dir.path(),
    );
    let changes = || -> Vec<serde_json::Value> {
        watch
            .log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("a change per line"))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || changes().len() >= 3),
        "no changes streamed:\n{}",
        watch.log()
    );
    for c in changes() {
        let high = |k: &str| matches!(c[k].as_str(), Some("high" | "critical"));
        assert!(high("level") || high("previous_level"), "{c}");
        assert!(c["position"].as_str().is_some_and(|p| !p.is_empty()), "{c}");
    }
    terminate_cleanly(&mut watch);

    // A restart resumes from the view's own offsets; an empty directory is rebuilt.
    terminate_cleanly(&mut query);
    assert!(query.log().contains("caught up"), "{}", query.log());
    let mut query = start_query(&rig, port, &view);
    assert_eq!(serving_export(&addr, &query), got, "after a restart");
    assert!(
        query.log().contains(r#""resume_from":"{0: "#),
        "resumed from the view's offsets:\n{}",
        query.log()
    );
    terminate_cleanly(&mut query);
    let mut rebuilt = start_query(&rig, port, &rig.dir.path().join("view-empty"));
    assert_eq!(
        serving_export(&addr, &rebuilt),
        got,
        "rebuilt from the topic"
    );
    assert!(
        rebuilt.log().contains(r#""resume_from":"{}""#),
        "{}",
        rebuilt.log()
    );
    terminate_cleanly(&mut rebuilt);
    terminate_cleanly(&mut scoring);
    terminate_cleanly(&mut ingest);
}

#[test]
fn churnwatch_run_refits_on_sighup_and_keeps_running() {
    let rig = Rig::new(Storage::Memory);
    let feed = feed(150, 6, 41);
    let brokers = rig.broker.brokers();
    let dir = rig.dir.path();
    let state = dir.join("run-state");
    let view = dir.join("run-view");
    let grpc = format!("127.0.0.1:{}", churnwatch_testkit::free_port());
    let admin = format!("127.0.0.1:{}", churnwatch_testkit::free_port());
    let mut run = Service::start(
        &bin("churnwatch"),
        &[
            "run",
            "--brokers",
            &brokers,
            "--state-dir",
            state.to_str().unwrap(),
            "--view-dir",
            view.to_str().unwrap(),
            "--grpc-addr",
            &grpc,
            "--admin-addr",
            &admin,
            "--clock",
            "event",
            // No periodic refit within the test: the refit below is SIGHUP's.
            "--event-refit-interval",
            "3650d",
            "--fx-rates",
            FX_RATES_TO_USD,
        ],
        &[],
        dir,
    );
    // `run` creates the topics; feed once it answers on its admin port.
    let up = wait_until(Duration::from_secs(60), || {
        http_get(&admin, "/healthz").is_ok_and(|(status, _)| status == 200)
    });
    assert!(up, "{}", run.log());
    produce(
        &brokers,
        "orders",
        feed.lines.iter().map(|(k, v, _)| (k.clone(), v.clone())),
    );
    let drained = wait_until(Duration::from_secs(180), || {
        rig.committed("churnwatch-scoring", "orders-accepted") == Some(feed.accepted())
    });
    assert!(drained, "{}", run.log());
    assert!(!run.log().contains("models refitted"), "{}", run.log());
    run.signal("HUP");
    let refitted = wait_until(Duration::from_secs(60), || {
        run.log().contains("models refitted")
    });
    assert!(refitted, "no refit after SIGHUP:\n{}", run.log());
    // Still serving after the signal, and it stops cleanly.
    let (status, _) = http_get(&admin, "/healthz").unwrap();
    assert_eq!(status, 200);
    terminate_cleanly(&mut run);
}
