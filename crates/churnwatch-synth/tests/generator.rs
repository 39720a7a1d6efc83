//! Specifications of the synthetic generator: determinism, format, time order, archetype
//! behaviour, campaigns, noise and configuration checks.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use churnwatch_synth::{
    ARCHETYPE_SHARES, AT_RISK_DELAY_DAYS, Archetype, CAMPAIGNS, CampaignEffect, Category, Currency,
    DUPLICATE_MAX_DELAY_SECS, Dataset, EventType, LineKind, MalformedKind, NEWSLETTER_BLAST,
    SynthConfig, TRUTH_CSV_HEADER, WINBACK_CALL, generate, read_truth_csv,
};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const MALFORMED_RATE: f64 = 0.02;
const DUPLICATE_RATE: f64 = 0.03;

/// A line of the shared data set with its parsed JSON (None for unparsable lines).
struct Line {
    kind: LineKind,
    event_type: EventType,
    customer: u64,
    emitted_at: OffsetDateTime,
    occurred_at: OffsetDateTime,
    text: String,
    json: Option<Value>,
}

struct Shared {
    dataset: Dataset,
    lines: Vec<Line>,
}

/// Returns a 5,000-customer, 24-month data set with noise, generated once for all tests.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let config = SynthConfig {
            customers: 5_000,
            months: 24,
            seed: 7,
            malformed_rate: MALFORMED_RATE,
            duplicate_rate: DUPLICATE_RATE,
            ..SynthConfig::default()
        };
        let dataset = generate(&config).unwrap();
        let lines = dataset
            .events()
            .map(|e| {
                let text = e.to_json_line();
                Line {
                    kind: e.line_kind(),
                    event_type: e.event_type(),
                    customer: e.customer_index(),
                    emitted_at: e.emitted_at(),
                    occurred_at: e.occurred_at(),
                    json: serde_json::from_str(&text).ok(),
                    text,
                }
            })
            .collect();
        Shared { dataset, lines }
    })
}

/// The real (first-delivery) events of the shared data set.
fn real_events() -> impl Iterator<Item = (&'static Line, &'static Value)> {
    shared()
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Event)
        .map(|l| (l, l.json.as_ref().expect("real events are valid json")))
}

fn render(config: &SynthConfig) -> (Vec<u8>, Vec<u8>) {
    let dataset = generate(config).unwrap();
    let mut events = Vec::new();
    dataset.write_jsonl(&mut events).unwrap();
    let mut truth = Vec::new();
    dataset.write_truth_csv(&mut truth).unwrap();
    (events, truth)
}

fn noisy(customers: u64, months: u32, seed: u64) -> SynthConfig {
    SynthConfig {
        customers,
        months,
        seed,
        malformed_rate: 0.05,
        duplicate_rate: 0.05,
        ..SynthConfig::default()
    }
}

fn str_field<'a>(json: &'a Value, field: &str) -> &'a str {
    json.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing string {field} in {json}"))
}

fn time_field(json: &Value, field: &str) -> OffsetDateTime {
    let text = str_field(json, field);
    assert!(text.ends_with('Z'), "{field} is not UTC with Z: {text}");
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("bad {field} {text}: {e}"))
}

/// Parses an amount string that must have exactly the currency's number of decimals.
fn amount(json: &Value, field: &str, currency: Currency) -> i64 {
    let text = str_field(json, field);
    let decimals = currency.decimals() as usize;
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    assert_eq!(
        fraction.len(),
        decimals,
        "{field} {text} must have {decimals} decimals in {currency}"
    );
    assert!(
        !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()),
        "{field} {text} is not a non-negative decimal"
    );
    assert!(
        fraction.bytes().all(|b| b.is_ascii_digit()),
        "{field} {text} is not a decimal"
    );
    format!("{whole}{fraction}").parse().unwrap()
}

fn currency_of(json: &Value) -> Currency {
    let code = str_field(json, "currency");
    Currency::from_name(code).unwrap_or_else(|| panic!("unknown currency {code}"))
}

fn orders_by_customer() -> HashMap<u64, Vec<(OffsetDateTime, &'static Value)>> {
    let mut orders: HashMap<u64, Vec<(OffsetDateTime, &Value)>> = HashMap::new();
    for (line, json) in real_events().filter(|(l, _)| l.event_type == EventType::Order) {
        orders
            .entry(line.customer)
            .or_default()
            .push((line.occurred_at, json));
    }
    orders
}

#[test]
fn same_seed_gives_identical_output() {
    let config = noisy(300, 12, 11);
    let (events_a, truth_a) = render(&config);
    let (events_b, truth_b) = render(&config);
    assert!(!events_a.is_empty());
    assert!(
        events_a == events_b,
        "events differ between two runs with the same seed"
    );
    assert!(
        truth_a == truth_b,
        "truth differs between two runs with the same seed"
    );
}

#[test]
fn different_seed_gives_different_output() {
    let (events_a, truth_a) = render(&noisy(300, 12, 11));
    let (events_b, truth_b) = render(&noisy(300, 12, 12));
    assert!(events_a != events_b);
    assert!(truth_a != truth_b);
}

#[test]
fn customer_history_does_not_depend_on_customer_count() {
    let small = generate(&noisy(10, 24, 3)).unwrap();
    let large = generate(&noisy(20, 24, 3)).unwrap();
    let lines_of = |d: &Dataset, index: u64| -> Vec<String> {
        d.events()
            .filter(|e| e.customer_index() == index)
            .map(|e| e.to_json_line())
            .collect()
    };
    for index in [0, 5, 9] {
        let a = lines_of(&small, index);
        assert!(!a.is_empty());
        assert_eq!(a, lines_of(&large, index), "customer {index} differs");
        assert_eq!(small.truth()[index as usize], large.truth()[index as usize]);
    }
}

#[test]
fn noise_does_not_change_the_real_events_or_the_truth() {
    let clean = generate(&SynthConfig {
        malformed_rate: 0.0,
        duplicate_rate: 0.0,
        ..noisy(200, 12, 5)
    })
    .unwrap();
    let dirty = generate(&noisy(200, 12, 5)).unwrap();
    let real = |d: &Dataset| -> Vec<String> {
        d.events()
            .filter(|e| e.line_kind() == LineKind::Event)
            .map(|e| e.to_json_line())
            .collect()
    };
    assert_eq!(
        clean.stats().malformed_lines + clean.stats().duplicate_lines,
        0
    );
    assert!(dirty.stats().malformed_lines > 0 && dirty.stats().duplicate_lines > 0);
    assert_eq!(real(&clean), real(&dirty));
    assert_eq!(clean.truth(), dirty.truth());
}

#[test]
fn events_are_emitted_in_time_order() {
    let shared = shared();
    let (start, end) = (shared.dataset.start(), shared.dataset.end());
    let mut last_emitted = start;
    let mut last_occurred = start;
    for line in &shared.lines {
        assert!(
            line.emitted_at >= last_emitted,
            "emission went back in time at {}",
            line.text
        );
        last_emitted = line.emitted_at;
        assert!(
            line.occurred_at >= start && line.occurred_at < end,
            "{} outside the period",
            line.text
        );
        if line.kind == LineKind::Duplicate {
            let lag = line.emitted_at - line.occurred_at;
            assert!(lag.whole_seconds() <= i64::from(DUPLICATE_MAX_DELAY_SECS));
        } else {
            assert!(
                line.occurred_at >= last_occurred,
                "occurred_at went back in time at {}",
                line.text
            );
            last_occurred = line.occurred_at;
        }
    }
    // The occurred_at written in the JSON is the one the iterator reports.
    for (line, json) in real_events() {
        assert_eq!(time_field(json, "occurred_at"), line.occurred_at);
    }
}

#[test]
fn every_line_parses_with_the_required_fields_of_its_type() {
    let shared = shared();
    let unprofitable: HashSet<u64> = shared
        .dataset
        .truth()
        .iter()
        .enumerate()
        .filter(|(_, t)| t.archetype == Archetype::Unprofitable)
        .map(|(i, _)| i as u64)
        .collect();
    let mut event_ids = HashSet::new();
    let mut order_ids = HashSet::new();
    let mut currencies: HashMap<Currency, usize> = HashMap::new();
    let mut orders = 0;
    for (line, json) in real_events() {
        let customer_id = shared.dataset.customer_id(line.customer);
        assert_eq!(str_field(json, "type"), line.event_type.as_str());
        let event_id = str_field(json, "event_id");
        assert!(
            event_id.starts_with(&format!("e-{customer_id}-")),
            "{event_id}"
        );
        assert!(
            event_ids.insert(event_id.to_owned()),
            "event id {event_id} is not unique"
        );
        assert_eq!(str_field(json, "customer_id"), customer_id);
        time_field(json, "occurred_at");
        match line.event_type {
            EventType::Order => {
                orders += 1;
                let currency = currency_of(json);
                *currencies.entry(currency).or_default() += 1;
                assert_eq!(Some(currency), shared.dataset.currency(line.customer));
                let order_id = str_field(json, "order_id");
                assert!(
                    order_id.starts_with(&format!("o-{customer_id}-")),
                    "{order_id}"
                );
                assert!(
                    order_ids.insert(order_id.to_owned()),
                    "order id {order_id} is not unique"
                );
                let total = amount(json, "total", currency);
                let discount = json
                    .get("discount")
                    .map_or(0, |_| amount(json, "discount", currency));
                let cost = amount(json, "cost", currency);
                assert!(matches!(
                    str_field(json, "channel"),
                    "web" | "app" | "store"
                ));
                let items = json["items"].as_array().expect("items");
                assert!((1..=4).contains(&items.len()));
                let mut subtotal = 0;
                for item in items {
                    let category = str_field(item, "category");
                    assert!(
                        Category::from_name(category).is_some(),
                        "unknown category {category}"
                    );
                    assert!(str_field(item, "sku").starts_with(&format!("{category}-")));
                    let quantity = item["quantity"].as_i64().expect("quantity");
                    assert!(quantity >= 1);
                    subtotal += quantity * amount(item, "unit_price", currency);
                }
                assert_eq!(
                    total,
                    subtotal - discount,
                    "total is not items minus discount: {}",
                    line.text
                );
                assert!(total > 0 && discount >= 0 && cost > 0);
                if !unprofitable.contains(&line.customer) {
                    assert!(
                        cost < total,
                        "cost above total for a profitable customer: {}",
                        line.text
                    );
                }
            }
            EventType::Refund => {
                let currency = currency_of(json);
                assert!(amount(json, "amount", currency) > 0);
                assert!(
                    order_ids.contains(str_field(json, "order_id")),
                    "refund before its order"
                );
                str_field(json, "reason");
            }
            EventType::SupportContact => {
                assert!(matches!(
                    str_field(json, "channel"),
                    "phone" | "email" | "chat"
                ));
                assert!(json["minutes"].as_u64().is_some());
            }
            EventType::CustomerSignup => {
                assert!(matches!(
                    str_field(json, "source"),
                    "search" | "social" | "referral" | "email" | "affiliate"
                ));
            }
            EventType::RetentionAction => {
                let action = str_field(json, "action");
                let campaign = str_field(json, "campaign");
                assert!(
                    CAMPAIGNS
                        .iter()
                        .any(|c| c.name == campaign && c.action == action)
                );
            }
        }
    }
    assert_eq!(orders, shared.dataset.stats().orders);
    let usd = currencies[&Currency::Usd] as f64 / orders as f64;
    assert!(usd > 0.7 && usd < 0.95, "USD share of orders {usd}");
    for currency in [Currency::Eur, Currency::Gbp, Currency::Jpy] {
        assert!(
            currencies.get(&currency).copied().unwrap_or(0) > 0,
            "no {currency} orders"
        );
    }
}

#[test]
fn duplicates_repeat_an_earlier_line_byte_for_byte() {
    let shared = shared();
    let mut seen: HashMap<&str, &str> = HashMap::new();
    let mut duplicates = 0;
    for line in &shared.lines {
        match line.kind {
            LineKind::Event => {
                let json = line.json.as_ref().unwrap();
                seen.insert(str_field(json, "event_id"), &line.text);
            }
            LineKind::Duplicate => {
                duplicates += 1;
                let json = line.json.as_ref().unwrap();
                let original = seen
                    .get(str_field(json, "event_id"))
                    .expect("duplicate before its original");
                assert_eq!(*original, line.text);
            }
            LineKind::Malformed(_) => {}
        }
    }
    assert_eq!(duplicates, shared.dataset.stats().duplicate_lines);
}

#[test]
fn malformed_lines_are_broken_as_labelled() {
    let shared = shared();
    let mut kinds = HashSet::new();
    for line in &shared.lines {
        let LineKind::Malformed(kind) = line.kind else {
            continue;
        };
        kinds.insert(kind);
        if kind == MalformedKind::InvalidJson {
            assert!(
                line.json.is_none(),
                "invalid_json line parses: {}",
                line.text
            );
            continue;
        }
        let json = line
            .json
            .as_ref()
            .unwrap_or_else(|| panic!("{kind} line is not json: {}", line.text));
        if let Some(id) = json.get("event_id").and_then(Value::as_str) {
            assert!(
                id.starts_with("m-"),
                "malformed line reuses a real event id: {id}"
            );
        }
        match kind {
            MalformedKind::MissingField => {
                let required: &[&str] = match line.event_type {
                    EventType::Order => &[
                        "event_id",
                        "order_id",
                        "customer_id",
                        "occurred_at",
                        "currency",
                        "total",
                    ],
                    EventType::Refund => &[
                        "event_id",
                        "order_id",
                        "customer_id",
                        "occurred_at",
                        "currency",
                        "amount",
                    ],
                    EventType::SupportContact => {
                        &["event_id", "customer_id", "occurred_at", "channel"]
                    }
                    EventType::CustomerSignup => &["event_id", "customer_id", "occurred_at"],
                    EventType::RetentionAction => {
                        &["event_id", "customer_id", "occurred_at", "action"]
                    }
                };
                assert_eq!(
                    required.iter().filter(|f| json.get(**f).is_none()).count(),
                    1,
                    "{}",
                    line.text
                );
            }
            MalformedKind::BadTimestamp => {
                let text = str_field(json, "occurred_at");
                assert!(
                    OffsetDateTime::parse(text, &Rfc3339).is_err(),
                    "{text} parses"
                );
            }
            MalformedKind::NegativeAmount => {
                let field = if line.event_type == EventType::Order {
                    "total"
                } else {
                    "amount"
                };
                assert!(str_field(json, field).starts_with('-'), "{}", line.text);
            }
            MalformedKind::UnknownCurrency => assert_eq!(str_field(json, "currency"), "XYZ"),
            MalformedKind::UnknownType => {
                assert!(
                    EventType::from_name(str_field(json, "type")).is_none(),
                    "{}",
                    line.text
                );
            }
            MalformedKind::InvalidJson => unreachable!(),
        }
    }
    assert_eq!(
        kinds.len(),
        MalformedKind::ALL.len(),
        "not every malformed kind was produced"
    );
}

#[test]
fn duplicate_and_malformed_rates_are_roughly_honoured() {
    let stats = shared().dataset.stats();
    let events = stats.events as f64;
    for (name, count, rate) in [
        ("malformed", stats.malformed_lines, MALFORMED_RATE),
        ("duplicate", stats.duplicate_lines, DUPLICATE_RATE),
    ] {
        let sigma = (events * rate * (1.0 - rate)).sqrt();
        let expected = events * rate;
        assert!(
            (count as f64 - expected).abs() < 4.0 * sigma,
            "{name}: {count} lines, expected {expected:.0}"
        );
    }
    assert_eq!(
        stats.lines,
        stats.events + stats.malformed_lines + stats.duplicate_lines
    );
    assert_eq!(stats.lines as usize, shared().dataset.len());
    assert_eq!(
        stats.malformed_by_kind.iter().sum::<u64>(),
        stats.malformed_lines
    );
}

#[test]
fn archetype_shares_match_the_configured_shares() {
    let truth = shared().dataset.truth();
    let n = truth.len() as f64;
    assert!((ARCHETYPE_SHARES.iter().map(|(_, s)| s).sum::<f64>() - 1.0).abs() < 1e-9);
    for (archetype, share) in ARCHETYPE_SHARES {
        let count = truth.iter().filter(|t| t.archetype == archetype).count() as f64;
        if share == 0.0 {
            assert_eq!(
                count, 0.0,
                "{archetype} is never drawn among the archetypes"
            );
            continue;
        }
        let sigma = (share * (1.0 - share) / n).sqrt();
        assert!(
            (count / n - share).abs() < 4.0 * sigma,
            "{archetype}: {} vs {share}",
            count / n
        );
    }
}

#[test]
fn unprofitable_customers_have_negative_margin() {
    let shared = shared();
    #[derive(Default)]
    struct Margin {
        revenue: i64,
        cost: i64,
        discount: i64,
        refunds: i64,
        contacts: i64,
        orders: u32,
    }
    let mut margins: HashMap<u64, Margin> = HashMap::new();
    for (line, json) in real_events() {
        let m = margins.entry(line.customer).or_default();
        match line.event_type {
            EventType::Order => {
                let currency = currency_of(json);
                m.orders += 1;
                m.revenue += amount(json, "total", currency);
                m.cost += amount(json, "cost", currency);
                m.discount += json
                    .get("discount")
                    .map_or(0, |_| amount(json, "discount", currency));
            }
            EventType::Refund => m.refunds += amount(json, "amount", currency_of(json)),
            EventType::SupportContact => m.contacts += 1,
            _ => {}
        }
    }
    let mut checked = 0;
    let mut profitable_regulars = 0;
    let mut regulars = 0;
    for (index, truth) in shared.dataset.truth().iter().enumerate() {
        let Some(m) = margins.get(&(index as u64)).filter(|m| m.orders > 0) else {
            continue;
        };
        let service = m.contacts
            * shared
                .dataset
                .currency(index as u64)
                .unwrap()
                .five_usd_minor();
        let margin = m.revenue - m.cost - m.discount - m.refunds - service;
        match truth.archetype {
            Archetype::Unprofitable => {
                // Negative even when the discount is taken as already netted out of the total
                // and support costs nothing.
                assert!(
                    m.revenue - m.cost - m.refunds < 0,
                    "{} has a positive margin",
                    truth.customer_id
                );
                assert!(margin < 0);
                assert!(
                    m.contacts >= i64::from(m.orders),
                    "{} has few support contacts",
                    truth.customer_id
                );
                checked += 1;
            }
            Archetype::Regular => {
                regulars += 1;
                profitable_regulars += usize::from(margin > 0);
            }
            _ => {}
        }
    }
    assert!(
        checked > 100,
        "only {checked} unprofitable customers with orders"
    );
    assert!(profitable_regulars as f64 > 0.95 * regulars as f64);
}

#[test]
fn churners_do_not_order_between_churn_and_reactivation() {
    let shared = shared();
    let orders = orders_by_customer();
    let end = shared.dataset.end();
    let mut churned = 0;
    let mut visible = 0;
    let mut reactivated = 0;
    for (index, truth) in shared.dataset.truth().iter().enumerate() {
        let times: Vec<OffsetDateTime> = orders
            .get(&(index as u64))
            .map(|o| o.iter().map(|(t, _)| *t).collect())
            .unwrap_or_default();
        let Some(churned_at) = truth.churned_at else {
            assert!(truth.reactivated_at.is_none());
            if truth.archetype.is_churner() {
                assert!(
                    times.is_empty(),
                    "{} churner without churned_at",
                    truth.customer_id
                );
            }
            continue;
        };
        assert!(
            truth.archetype.is_churner(),
            "{} is not a churner",
            truth.customer_id
        );
        assert!(
            times.contains(&churned_at),
            "churned_at is not an order of {}",
            truth.customer_id
        );
        churned += 1;
        visible += usize::from(end - churned_at > time::Duration::days(90));
        let back = truth.reactivated_at.unwrap_or(end);
        if let Some(reactivated_at) = truth.reactivated_at {
            assert!(
                times.contains(&reactivated_at),
                "reactivated_at is not an order of {}",
                truth.customer_id
            );
            reactivated += 1;
        }
        let silent: Vec<_> = times
            .iter()
            .filter(|t| **t > churned_at && **t < back)
            .collect();
        assert!(
            silent.is_empty(),
            "{} ordered while churned: {silent:?}",
            truth.customer_id
        );
    }
    let churners = shared
        .dataset
        .truth()
        .iter()
        .filter(|t| t.archetype.is_churner())
        .count();
    assert!(
        churned as f64 > 0.95 * churners as f64,
        "{churned} of {churners} churners churned"
    );
    assert!(
        visible as f64 > 0.8 * churned as f64,
        "only {visible} churns are 90 days before the end"
    );
    assert!(reactivated > 0);
    for truth in shared.dataset.truth() {
        if truth.archetype == Archetype::Reactivator && truth.churned_at.is_some() {
            let silence = truth.reactivated_at.map(|r| r - truth.churned_at.unwrap());
            assert!(
                silence.is_none_or(|s| s >= time::Duration::days(90)),
                "{}",
                truth.customer_id
            );
        }
    }
}

#[test]
fn decliners_order_less_before_they_churn() {
    let shared = shared();
    let orders = orders_by_customer();
    let mut declined = 0;
    let mut decliners = 0;
    for (index, truth) in shared.dataset.truth().iter().enumerate() {
        if truth.archetype != Archetype::Decliner {
            continue;
        }
        let Some(list) = orders.get(&(index as u64)) else {
            continue;
        };
        let churned_at = truth.churned_at.unwrap();
        // Enough orders before the churn to compare its first and last thirds (a campaign can
        // add orders after it, which do not count).
        let before: Vec<_> = list.iter().filter(|(t, _)| *t <= churned_at).collect();
        if before.len() < 6 {
            continue;
        }
        let value =
            |(_, json): &&(OffsetDateTime, &Value)| amount(json, "total", currency_of(json));
        let third = before.len() / 3;
        let early: i64 = before[..third].iter().map(value).sum::<i64>() / third as i64;
        let late: i64 = before[before.len() - third..]
            .iter()
            .map(value)
            .sum::<i64>()
            / third as i64;
        decliners += 1;
        declined += usize::from(late < early);
    }
    assert!(decliners > 100);
    assert!(
        declined as f64 > 0.8 * decliners as f64,
        "{declined} of {decliners} decliners declined"
    );
}

#[test]
fn category_droppers_stop_buying_the_dropped_category_only() {
    let shared = shared();
    let orders = orders_by_customer();
    let mut droppers = 0;
    for (index, truth) in shared.dataset.truth().iter().enumerate() {
        let (Some(category), Some(dropped_at)) = (truth.dropped_category, truth.dropped_at) else {
            assert!(truth.dropped_category.is_none() && truth.dropped_at.is_none());
            continue;
        };
        assert_eq!(truth.archetype, Archetype::CategoryDropper);
        assert!(truth.churned_at.is_none());
        droppers += 1;
        let has = |json: &Value| {
            json["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| str_field(i, "category") == category.as_str())
        };
        let list = &orders[&(index as u64)];
        let before: Vec<_> = list.iter().filter(|(t, _)| *t <= dropped_at).collect();
        let after: Vec<_> = list.iter().filter(|(t, _)| *t > dropped_at).collect();
        assert!(
            before.iter().all(|(_, j)| has(j)),
            "{} skipped {category} before the drop",
            truth.customer_id
        );
        assert!(before.iter().any(|(t, _)| *t == dropped_at));
        assert!(
            !after.is_empty(),
            "{} stopped ordering altogether",
            truth.customer_id
        );
        assert!(
            after.iter().all(|(_, j)| !has(j)),
            "{} bought {category} after the drop",
            truth.customer_id
        );
    }
    let expected = shared
        .dataset
        .truth()
        .iter()
        .filter(|t| t.archetype == Archetype::CategoryDropper)
        .count();
    assert!(
        droppers as f64 > 0.9 * expected as f64,
        "{droppers} of {expected} droppers dropped"
    );
}

#[test]
fn winback_call_brings_back_about_a_third_and_newsletter_nobody() {
    let shared = shared();
    let orders = orders_by_customer();
    let actions: HashMap<u64, (OffsetDateTime, String)> = real_events()
        .filter(|(l, _)| l.event_type == EventType::RetentionAction)
        .map(|(l, j)| {
            (
                l.customer,
                (l.occurred_at, str_field(j, "campaign").to_owned()),
            )
        })
        .collect();
    let mut targeted: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut reached_in_a_gap = 0;
    for (index, truth) in shared.dataset.truth().iter().enumerate() {
        let Some(campaign) = truth.campaign else {
            assert!(!actions.contains_key(&(index as u64)));
            continue;
        };
        let campaign_at = truth.campaign_at.unwrap();
        assert_eq!(
            actions[&(index as u64)],
            (campaign_at, campaign.name.to_owned())
        );
        let mine = orders.get(&(index as u64)).cloned().unwrap_or_default();
        let last_before = mine
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t < campaign_at)
            .max();
        let silent_days = (campaign_at - last_before.expect("reached after an order")).whole_days();
        assert!(
            silent_days >= AT_RISK_DELAY_DAYS.0 as i64 - 1,
            "{}: reached after {silent_days} days of silence",
            truth.customer_id
        );
        let ordered_after = mine.iter().any(|(t, _)| *t > campaign_at);
        // The rule sees silence, not churn: a customer reached in a gap of its orders (not yet
        // churned, or never) orders again on its own, and the campaign changed nothing.
        let final_silence = truth.churned_at.is_some_and(|c| c < campaign_at);
        if !final_silence || truth.archetype == Archetype::Reactivator {
            assert_eq!(truth.campaign_effect, Some(CampaignEffect::None));
            // (Or in the silence that runs to the end of the period, with nothing after it.)
            reached_in_a_gap += usize::from(!final_silence && ordered_after);
            continue;
        }
        let resumed = truth.campaign_effect == Some(CampaignEffect::Resumed);
        assert_eq!(ordered_after, resumed, "{}", truth.customer_id);
        let entry = targeted.entry(campaign.name).or_default();
        entry.0 += 1;
        entry.1 += usize::from(resumed);
    }
    assert!(
        reached_in_a_gap > 20,
        "campaigns also reach customers who are not churning: {reached_in_a_gap}"
    );
    let (winback, winback_resumed) = targeted[WINBACK_CALL.name];
    let (newsletter, newsletter_resumed) = targeted[NEWSLETTER_BLAST.name];
    assert!(
        winback > 30 && newsletter > 30,
        "{winback} winback, {newsletter} newsletter targets"
    );
    assert_eq!(newsletter_resumed, 0);
    let rate = winback_resumed as f64 / winback as f64;
    let sigma = (0.35 * 0.65 / winback as f64).sqrt();
    assert!(
        (rate - WINBACK_CALL.resume_probability).abs() < 4.0 * sigma,
        "winback resumed {rate}"
    );
}

#[test]
fn buyers_sign_up_before_their_first_order() {
    let shared = shared();
    let mut first_event: HashMap<u64, EventType> = HashMap::new();
    let mut signups: HashMap<u64, OffsetDateTime> = HashMap::new();
    for (line, _) in real_events() {
        first_event.entry(line.customer).or_insert(line.event_type);
        if line.event_type == EventType::CustomerSignup {
            assert!(
                signups.insert(line.customer, line.occurred_at).is_none(),
                "two signups"
            );
        }
    }
    let truth = shared.dataset.truth();
    let mut missing = 0;
    for (index, t) in truth.iter().enumerate() {
        assert_eq!(
            t.signup_at,
            signups.get(&(index as u64)).copied(),
            "{}",
            t.customer_id
        );
        match t.signup_at {
            Some(_) => assert_eq!(first_event[&(index as u64)], EventType::CustomerSignup),
            None => missing += 1,
        }
        if t.archetype == Archetype::Prospect {
            assert!(t.signup_at.is_some());
            assert!(first_event.get(&(index as u64)) == Some(&EventType::CustomerSignup));
        }
    }
    assert!(
        missing > 0 && missing < truth.len() / 40,
        "{missing} customers without a signup"
    );
    // Acquisition is spread over the period, with a large early cohort.
    let (start, end) = (shared.dataset.start(), shared.dataset.end());
    let month = |t: OffsetDateTime| ((t - start).whole_days() / 30) as usize;
    let mut per_month = vec![0usize; month(end) + 1];
    for t in signups.values() {
        per_month[month(*t)] += 1;
    }
    assert!(per_month[0] > per_month[20] * 2);
    assert!(per_month[12..24].iter().all(|c| *c > 0));
}

#[test]
fn one_time_buyers_and_prospects_behave_as_named() {
    let shared = shared();
    let orders = orders_by_customer();
    for (index, truth) in shared.dataset.truth().iter().enumerate() {
        let count = orders.get(&(index as u64)).map_or(0, Vec::len);
        match truth.archetype {
            Archetype::OneTime => {
                assert!(count <= 1, "{} ordered {count} times", truth.customer_id)
            }
            Archetype::Prospect => assert_eq!(count, 0, "{} ordered", truth.customer_id),
            _ => {}
        }
    }
}

#[test]
fn invalid_config_names_the_bad_field() {
    let cases: [(SynthConfig, &str); 7] = [
        (
            SynthConfig {
                customers: 0,
                ..SynthConfig::default()
            },
            "customers",
        ),
        (
            SynthConfig {
                months: 0,
                ..SynthConfig::default()
            },
            "months",
        ),
        (
            SynthConfig {
                malformed_rate: 1.5,
                ..SynthConfig::default()
            },
            "malformed_rate",
        ),
        (
            SynthConfig {
                duplicate_rate: -0.1,
                ..SynthConfig::default()
            },
            "duplicate_rate",
        ),
        (
            SynthConfig {
                duplicate_rate: f64::NAN,
                ..SynthConfig::default()
            },
            "duplicate_rate",
        ),
        (
            SynthConfig {
                start: time::macros::date!(9500 - 01 - 01),
                ..SynthConfig::default()
            },
            "start",
        ),
        (
            SynthConfig {
                start: time::macros::date!(1985 - 06 - 01),
                ..SynthConfig::default()
            },
            "start",
        ),
    ];
    for (config, field) in cases {
        let error = generate(&config).unwrap_err();
        assert_eq!(error.fields(), vec![field]);
        assert!(error.to_string().contains(field), "{error}");
    }
    let error = SynthConfig {
        customers: 0,
        months: 0,
        malformed_rate: 2.0,
        ..SynthConfig::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        error.fields(),
        vec!["customers", "months", "malformed_rate"]
    );
    assert!(SynthConfig::default().validate().is_ok());
}

#[test]
fn truth_csv_round_trips() {
    let shared = shared();
    let mut csv = Vec::new();
    shared.dataset.write_truth_csv(&mut csv).unwrap();
    let text = String::from_utf8(csv.clone()).unwrap();
    assert_eq!(text.lines().next().unwrap(), TRUTH_CSV_HEADER.join(","));
    assert_eq!(text.lines().count(), shared.dataset.truth().len() + 1);
    assert_eq!(
        read_truth_csv(csv.as_slice()).unwrap(),
        shared.dataset.truth()
    );
}

#[test]
fn tiny_periods_and_single_customers_still_work() {
    for months in [1, 2, 3] {
        for seed in 0..20 {
            let dataset = generate(&SynthConfig {
                customers: 1,
                months,
                seed,
                ..noisy(1, 1, 0)
            })
            .unwrap();
            assert_eq!(dataset.truth().len(), 1);
            assert!(dataset.events().all(|e| e.occurred_at() < dataset.end()));
        }
    }
}

#[test]
fn the_bgnbd_process_draws_rates_and_dropouts_with_their_truth() {
    use churnwatch_synth::{BgNbdProcess, Process, SynthConfig, generate};
    let process = BgNbdProcess::default();
    let config = SynthConfig {
        process: Process::BgNbd(process),
        ..SynthConfig::new(4_000, 24, 21)
    };
    let data = generate(&config).unwrap();
    let mut orders: HashMap<String, Vec<OffsetDateTime>> = HashMap::new();
    for e in data.events() {
        let v: Value = serde_json::from_str(&e.to_json_line()).unwrap();
        if v["type"] == "order" {
            let at = OffsetDateTime::parse(v["occurred_at"].as_str().unwrap(), &Rfc3339).unwrap();
            orders.entry(e.customer_id()).or_default().push(at);
        }
    }
    let truth = data.truth();
    assert!(truth.iter().all(|t| t.archetype == Archetype::BgNbd));
    let rates: Vec<f64> = truth
        .iter()
        .map(|t| t.order_rate_per_day.unwrap())
        .collect();
    // λ ~ Gamma(r, α) per week: mean r / α.
    let mean_per_week = 7.0 * rates.iter().sum::<f64>() / rates.len() as f64;
    assert!(
        (mean_per_week / (process.r / process.alpha) - 1.0).abs() < 0.15,
        "mean rate {mean_per_week} per week"
    );
    let mut one_time = 0;
    for t in truth {
        let mine = orders.get(&t.customer_id).map_or(&[][..], |v| &v[..]);
        one_time += usize::from(mine.len() == 1);
        if let Some(churned) = t.churned_at {
            // Dropout happens right after a repeat purchase: the last order.
            assert!(mine.len() >= 2, "{t:?}");
            assert_eq!(mine.iter().max(), Some(&churned), "{t:?}");
        }
    }
    assert!(
        one_time * 3 > truth.len(),
        "most buy once or twice: {one_time}"
    );
    // The same seed, the same data; bad parameters are refused by name.
    assert_eq!(generate(&config).unwrap().truth(), truth);
    let bad = SynthConfig {
        process: Process::BgNbd(BgNbdProcess { r: -1.0, ..process }),
        ..config
    };
    let err = generate(&bad).unwrap_err().to_string();
    assert!(err.contains("BG/NBD parameter r"), "{err}");
}
