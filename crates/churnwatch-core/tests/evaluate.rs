//! `evaluate`, `record` and `next_evaluation_at` on hand-made customer histories.

mod support;

use churnwatch_core::profit::ValueTier;
use churnwatch_core::signals::ReasonCode;
use churnwatch_core::stage::TransitionReason;
use churnwatch_core::{
    CustomerState, Event, Model, RiskLevel, Stage, Timestamp, apply, assess, evaluate,
    next_evaluation_at, record,
};
use support::*;

/// Applies the events in time order, evaluating and recording after each one and on a weekly
/// tick, as a service would; returns the state and every transition seen.
fn live(
    customer: &str,
    mut events: Vec<Event>,
    until: Timestamp,
    model: &Model,
) -> (
    CustomerState,
    Vec<(Timestamp, Stage, Stage, TransitionReason)>,
) {
    events.sort_by_key(|e| e.occurred_at);
    let mut s = CustomerState::new(customer);
    let mut moves = Vec::new();
    let mut step = |s: &mut CustomerState, now: Timestamp| {
        let a = evaluate(s, now, model);
        if let Some(t) = record(s, &a).stage {
            moves.push((now, t.from, t.to, t.reason));
        }
    };
    let mut next_tick = events.first().map_or(until, |e| e.occurred_at);
    for e in &events {
        while next_tick < e.occurred_at {
            step(&mut s, next_tick);
            next_tick = next_tick.plus(7 * 86_400);
        }
        apply(&mut s, e);
        step(&mut s, e.occurred_at);
    }
    while next_tick <= until {
        step(&mut s, next_tick);
        next_tick = next_tick.plus(7 * 86_400);
    }
    step(&mut s, until);
    (s, moves)
}

#[test]
fn a_steady_regular_is_a_low_risk_core_customer() {
    let model = Model::default();
    let events = cadence("c", "o", 14.0, 0.0, 400.0, 4_000, &["coffee", "tea"]);
    let (s, moves) = live("c", events, day(400.0), &model);
    assert_eq!(s.stage, Stage::Core);
    let stages: Vec<Stage> = moves.iter().map(|m| m.2).collect();
    assert_eq!(
        stages,
        vec![Stage::FirstTime, Stage::EarlyRepeat, Stage::Core]
    );
    let a = evaluate(&s, day(400.0), &model);
    assert_eq!(a.risk_level, RiskLevel::Low, "{a:?}");
    assert!(a.reasons.is_empty(), "{:?}", a.reasons);
    assert!(a.p_alive.unwrap() > 0.8);
    assert!(
        a.expected_purchases > 3.0,
        "about 6 orders expected in 90 days, got {}",
        a.expected_purchases
    );
    assert!(a.clv_12m > 0);
    assert!(a.margin_12m > 0);
    assert_eq!(a.typical_interval_days, Some(14.0));
}

#[test]
fn a_silent_churner_becomes_a_core_defector_then_lost() {
    let model = Model::default();
    let events = cadence("c", "o", 10.0, 0.0, 300.0, 4_000, &["coffee"]);
    let last = events.last().unwrap().occurred_at;
    let (s, moves) = live("c", events, day(700.0), &model);
    let reasons: Vec<_> = moves.iter().map(|m| (m.2, m.3)).collect();
    assert!(
        reasons.contains(&(Stage::CoreDefector, TransitionReason::Defecting)),
        "{moves:?}"
    );
    assert_eq!(s.stage, Stage::Lost);
    assert_eq!(moves.last().unwrap().3, TransitionReason::WentSilent);
    // Lost is dated when the silence crossed the threshold, not when a timer noticed it.
    assert_eq!(s.stage_since, Some(last.plus(180 * 86_400)));
    let a = evaluate(&s, day(700.0), &model);
    assert_eq!(a.risk_level, RiskLevel::Critical);
    // Under the prior the purchase history carries the probability; the broken cadence is
    // still named.
    assert_eq!(a.reasons[0].code, ReasonCode::LowPAlive);
    assert!(a.reasons[0].contribution() > 0.4, "{:?}", a.reasons);
    assert!(a.reasons.iter().any(|r| r.code == ReasonCode::Overdue));
    assert!(a.reasons.iter().all(|r| !r.detail().is_empty()));
}

#[test]
fn the_defection_is_flagged_within_a_few_intervals_of_silence() {
    let model = Model::default();
    let events = cadence("c", "o", 10.0, 0.0, 300.0, 4_000, &["coffee"]);
    let last = events.last().unwrap().occurred_at;
    let (_, moves) = live("c", events, day(700.0), &model);
    let flagged = moves.iter().find(|m| m.2 == Stage::CoreDefector).unwrap().0;
    let days = flagged.days_since(last);
    // Weekly re-evaluation puts the risk at high within five intervals of silence; the stage
    // follows once that has lasted `stage_confirm_days`.
    let confirm = model.thresholds.stage_confirm_days;
    assert!(
        (20.0 + confirm..=50.0 + confirm).contains(&days),
        "flagged {days} days after the last order"
    );
}

#[test]
fn a_lost_customer_who_orders_again_is_reactivated() {
    let model = Model::default();
    let mut events = cadence("c", "o", 10.0, 0.0, 120.0, 4_000, &["coffee"]);
    events.push(order("c", "back", day(500.0), 4_000, 2_000, &["coffee"]));
    let (s, moves) = live("c", events, day(505.0), &model);
    let last = moves.last().unwrap();
    assert_eq!(
        (last.1, last.3),
        (Stage::Lost, TransitionReason::Reactivated),
        "{moves:?}"
    );
    assert_eq!(s.stage, Stage::EarlyRepeat);
    assert_eq!(s.stage_since, Some(day(500.0)));
}

#[test]
fn a_prospect_has_no_risk_and_no_timer() {
    let model = Model::default();
    let mut s = CustomerState::new("p");
    apply(&mut s, &signup("p", "s", day(0.0), "social"));
    let a = evaluate(&s, day(300.0), &model);
    assert_eq!(a.stage, Stage::Prospect);
    assert_eq!(a.risk_score, 0.0);
    assert!(a.p_alive.is_none());
    assert_eq!(next_evaluation_at(&s, day(300.0), &model), None);
}

#[test]
fn an_unprofitable_high_contact_customer_is_tier_d_and_a_divest_candidate() {
    let model = Model::default();
    let mut s = CustomerState::new("u");
    for (i, e) in cadence("u", "o", 20.0, 0.0, 200.0, 3_000, &["toys"])
        .iter()
        .enumerate()
    {
        apply(&mut s, e);
        apply(&mut s, &refund("u", &format!("r{i}"), e.occurred_at, 1_200));
        apply(&mut s, &contact("u", &format!("k{i}a"), e.occurred_at));
        apply(&mut s, &contact("u", &format!("k{i}b"), e.occurred_at));
    }
    let a = evaluate(&s, day(200.0), &model);
    assert!(a.margin_12m < 0, "{}", a.margin_12m);
    assert_eq!(a.value_tier, ValueTier::D);
    assert!(a.divest);
    assert!(
        a.clv_12m < 0,
        "a customer who costs money has a negative CLV"
    );
    assert_eq!(a.value_at_risk, 0, "losing them loses nothing");
}

#[test]
fn recording_twice_reports_a_change_once() {
    let model = Model::default();
    let mut s = CustomerState::new("c");
    apply(&mut s, &order("c", "a", day(0.0), 1_000, 500, &["tea"]));
    let (_, first) = assess(&mut s, day(0.0), &model);
    assert_eq!(first.stage.map(|t| t.to), Some(Stage::FirstTime));
    let (_, again) = assess(&mut s, day(0.0), &model);
    assert!(!again.any());
    assert_eq!(s.changes, 1);
}

#[test]
fn timers_point_at_the_next_threshold_or_a_week_ahead() {
    let model = Model::default();
    let mut s = CustomerState::new("c");
    for e in cadence("c", "o", 10.0, 0.0, 100.0, 4_000, &["tea"]) {
        apply(&mut s, &e);
    }
    let last = s.last_order_at.unwrap();
    // Right after the last order, a week ahead is sooner than 2x the interval (20 days).
    assert_eq!(
        next_evaluation_at(&s, last, &model),
        Some(last.plus(7 * 86_400))
    );
    // Two weeks later the overdue threshold (day 20) comes first.
    let now = last.plus(14 * 86_400);
    assert_eq!(
        next_evaluation_at(&s, now, &model),
        Some(last.plus(20 * 86_400))
    );
    assess(&mut s, last.plus(400 * 86_400), &model);
    assert_eq!(s.stage, Stage::Lost);
    assert_eq!(
        next_evaluation_at(&s, last.plus(400 * 86_400), &model),
        None,
        "only an order revives a lost customer"
    );
}

#[test]
fn a_typical_customer_state_serializes_within_1_kib() {
    let mut s = CustomerState::new("c000123");
    apply(&mut s, &signup("c000123", "signup", day(0.0), "search"));
    let cats = ["coffee", "tea", "snacks", "kitchen", "books"];
    for i in 0..(24 * 3) {
        let d = f64::from(i) * 10.0;
        let pick = [cats[i as usize % 5], cats[(i as usize + 2) % 5]];
        apply(
            &mut s,
            &order(
                "c000123",
                &format!("evt-000123-{i:05}"),
                day(d),
                2_500 + i64::from(i) * 13,
                1_100,
                &pick,
            ),
        );
        if i % 9 == 0 {
            apply(
                &mut s,
                &contact("c000123", &format!("evt-000123-k{i:05}"), day(d + 1.0)),
            );
        }
    }
    assert_eq!(s.months.len(), 24);
    assert_eq!(s.categories.len(), 5);
    let bytes = postcard::to_stdvec(&s).unwrap();
    assert!(bytes.len() <= 1024, "{} bytes", bytes.len());
    let back: CustomerState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, s);
}

#[test]
fn a_one_time_buyers_risk_rises_with_silence() {
    let model = Model::default();
    let mut s = CustomerState::new("o");
    apply(
        &mut s,
        &order("o", "only", day(0.0), 3_000, 1_500, &["tea"]),
    );
    let risks: Vec<f64> = [1.0, 30.0, 90.0, 180.0, 365.0]
        .iter()
        .map(|d| evaluate(&s, day(*d), &model).risk_score)
        .collect();
    assert!(risks[0] > 0.0, "a one-time buyer has a risk: {risks:?}");
    assert!(
        risks.windows(2).all(|w| w[0] < w[1]),
        "strictly rising with silence: {risks:?}"
    );
    let a = evaluate(&s, day(180.0), &model);
    assert_eq!(a.reasons[0].code, ReasonCode::NoRepeat, "{:?}", a.reasons);
    assert!(a.reasons[0].detail().contains("180 days ago"));
    let not_yet_lost = evaluate(&s, day(120.0), &model);
    assert!(
        not_yet_lost.value_at_risk > 0,
        "losing a one-time buyer costs its expected orders"
    );
    assert_eq!(a.stage, Stage::Lost, "silent for the lost threshold");
    assert_eq!(a.value_at_risk, 0, "nothing left at risk once lost");
}

#[test]
fn same_day_orders_count_as_one_purchase_occasion() {
    let mut model = Model::default();
    let mut s = CustomerState::new("d");
    // Three orders on the first day, none after: one occasion, no repeat purchase.
    for (i, hour) in [1.0, 5.0, 20.0].iter().enumerate() {
        apply(
            &mut s,
            &order(
                "d",
                &format!("o{i}"),
                day(hour / 24.0),
                2_000,
                1_000,
                &["tea"],
            ),
        );
    }
    assert_eq!((s.totals.orders, s.totals.occasions), (3, 1));
    let per_day = evaluate(&s, day(60.0), &model);
    assert_eq!(
        per_day.p_alive,
        Some(1.0),
        "no repeat occasion, no chance to drop out"
    );
    model.thresholds.count_same_day_orders_once = false;
    let per_order = evaluate(&s, day(60.0), &model);
    assert!(
        per_order.p_alive.unwrap() < 0.5,
        "counted per order, two quick repeats then silence look like a dropout: {per_order:?}"
    );
    // An order on another day is a new occasion, whatever the arrival order.
    let mut late = s.clone();
    apply(
        &mut late,
        &order("d", "o3", day(10.0), 2_000, 1_000, &["tea"]),
    );
    apply(
        &mut late,
        &order("d", "o4", day(10.2), 2_000, 1_000, &["tea"]),
    );
    assert_eq!(late.totals.occasions, 2);
}

#[test]
fn a_one_time_buyer_is_valued_at_a_new_customers_expectation_whatever_its_silence() {
    let model = Model::default();
    let mut s = CustomerState::new("o");
    apply(
        &mut s,
        &order("o", "only", day(0.0), 3_000, 1_500, &["tea"]),
    );
    let soon = evaluate(&s, day(10.0), &model);
    let late = evaluate(&s, day(150.0), &model);
    assert!(soon.retained_12m > 0, "{soon:?}");
    assert_eq!(
        soon.retained_12m, late.retained_12m,
        "silence does not shrink what a retained one-time buyer would bring"
    );
    // Lost at 180 days of silence: the move records its lifetime value, three years of it.
    let lost = evaluate(&s, day(200.0), &model);
    assert_eq!(lost.stage, Stage::Lost);
    assert_eq!(lost.retained_12m, soon.retained_12m);
    assert!(
        lost.lifetime_value > lost.retained_12m,
        "three years bring more than one: {lost:?}"
    );
}

#[test]
fn a_lost_regular_costs_its_lifetime_margin_not_the_models_expectation_after_silence() {
    let model = Model::default();
    let events = cadence("c", "o", 14.0, 0.0, 300.0, 4_000, &["coffee"]);
    let (s, _) = live("c", events, day(600.0), &model);
    assert_eq!(s.stage, Stage::Lost);
    let lost = s
        .stage_history
        .iter()
        .rfind(|c| c.to == Stage::Lost)
        .expect("the move to lost is recorded");
    let a = evaluate(&s, day(600.0), &model);
    assert_eq!(a.value_at_risk, 0, "nothing left at risk once lost");
    assert!(
        a.clv_12m * 10 < lost.retained_12m,
        "the model expects little from a lost customer ({}), yet it cost {} in a year",
        a.clv_12m,
        lost.retained_12m
    );
    assert!(lost.lifetime_value > 2 * lost.retained_12m, "{lost:?}");
}

#[test]
fn a_thousand_a_month_for_twenty_years_is_worth_240_thousand() {
    use churnwatch_core::assess::retained_margin;
    use churnwatch_core::btyd::{BgNbdParams, RfmSummary};
    use churnwatch_core::config::Thresholds;
    // Twelve orders a year, known precisely (a tight Gamma), with a negligible dropout.
    let per_week = 12.0 / (365.0 / 7.0);
    let bgnbd = BgNbdParams {
        r: 1e6,
        alpha: 1e6 / per_week,
        a: 1e-3,
        b: 1e6,
    };
    let rfm = RfmSummary {
        x: 24.0,
        t_x: 104.0,
        t: 104.3,
    };
    let t = Thresholds::default();
    let value = retained_margin(&bgnbd, rfm, 100_000.0, 20.0, &t);
    assert!(
        (value - 24_000_000.0).abs() < 0.01 * 24_000_000.0,
        "$1,000 a month for 20 years: {value}"
    );
    let discounted = retained_margin(
        &bgnbd,
        rfm,
        100_000.0,
        20.0,
        &Thresholds {
            annual_discount_rate: 0.1,
            ..t
        },
    );
    // Σ 1.1^-k for k = 1..20 = 8.5136.
    assert!(
        (discounted - 12.0 * 100_000.0 * 8.5136).abs() < 0.01 * discounted,
        "{discounted}"
    );
}
