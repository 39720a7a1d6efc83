//! Churn signals, each its own function over a customer's state at a given time. A signal that
//! fires returns its strength (0..1) and the numbers its sentence is built from; the sentence
//! itself is only formatted when someone reads it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Thresholds;
use crate::state::{CustomerState, OTHER_CATEGORY};
use crate::time::{DAY, MonthIndex, Timestamp};

/// The machine code of a churn reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Purchases in the last 3 months fell against the first 3 months after the first order.
    PurchaseDecline,
    /// Average order value of the last 3 months fell against the 3 months before.
    AovDecline,
    /// The time since the last order is well past the customer's typical interval.
    Overdue,
    /// A habitual category stopped while other purchases continue.
    CategoryDrop,
    /// The purchase history (BG/NBD P(alive), recency, frequency) makes a repeat order
    /// unlikely.
    LowPAlive,
    /// A one-time buyer has not come back.
    NoRepeat,
    /// Refunds in the last 3 months.
    Refunds,
    /// Support contacts in the last 3 months.
    SupportContacts,
}

impl ReasonCode {
    /// Every code.
    pub const ALL: [ReasonCode; 8] = [
        ReasonCode::PurchaseDecline,
        ReasonCode::AovDecline,
        ReasonCode::Overdue,
        ReasonCode::CategoryDrop,
        ReasonCode::LowPAlive,
        ReasonCode::NoRepeat,
        ReasonCode::Refunds,
        ReasonCode::SupportContacts,
    ];

    /// Returns the snake_case code.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReasonCode::PurchaseDecline => "purchase_decline",
            ReasonCode::AovDecline => "aov_decline",
            ReasonCode::Overdue => "overdue",
            ReasonCode::CategoryDrop => "category_drop",
            ReasonCode::LowPAlive => "low_p_alive",
            ReasonCode::NoRepeat => "no_repeat",
            ReasonCode::Refunds => "refunds",
            ReasonCode::SupportContacts => "support_contacts",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signal that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Which signal.
    pub code: ReasonCode,
    /// How strongly it fired, 0..1.
    pub strength: f64,
    /// The observed quantity (recent orders, recent AOV, days silent, months with the
    /// category, P(alive)).
    pub observed: f64,
    /// What it is compared with (early orders, prior AOV, typical interval in days, months
    /// looked at, the P(alive) threshold).
    pub baseline: f64,
    /// The category, for `category_drop`.
    pub category: Option<String>,
    /// How much the reason moved the churn probability: the probability less the one without
    /// it (0 until the risk model has weighed it).
    pub effect: f64,
}

impl Signal {
    /// Returns the reason's contribution to the risk score: how much it moved the probability.
    pub fn contribution(&self) -> f64 {
        self.effect
    }

    /// Returns the sentence a retention manager reads.
    pub fn detail(&self) -> String {
        match self.code {
            ReasonCode::PurchaseDecline => format!(
                "ordered {} times in the last 3 months against {} times in the first 3 months after the first order",
                self.observed as i64, self.baseline as i64
            ),
            ReasonCode::AovDecline => format!(
                "average order value fell {:.0}% over the last 3 months against the 3 months before",
                100.0 * (1.0 - self.observed / self.baseline)
            ),
            ReasonCode::Overdue => format!(
                "no order for {:.0} days; usually orders every {:.0} days",
                self.observed, self.baseline
            ),
            ReasonCode::CategoryDrop => format!(
                "stopped buying {} (bought in {} of the {} months before the last 3) while still ordering other things",
                self.category.as_deref().unwrap_or("a category"),
                self.observed as i64,
                self.baseline as i64
            ),
            ReasonCode::LowPAlive => format!(
                "last ordered {:.0} days ago: a {:.0}% chance of still being an active customer given the purchase history",
                self.baseline,
                100.0 * self.observed
            ),
            ReasonCode::NoRepeat => format!(
                "one order {:.0} days ago and none since; most one-time buyers do not order again",
                self.observed
            ),
            ReasonCode::Refunds => format!("{:.0} refunds in the last 3 months", self.observed),
            ReasonCode::SupportContacts => format!(
                "contacted support {:.0} times in the last 3 months",
                self.observed
            ),
        }
    }
}

/// Months in the recent window ("the last 3 months", the current month included).
const RECENT_MONTHS: i32 = 3;

/// An evaluation instant with the calendar facts every signal needs, computed once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moment {
    /// The instant.
    pub at: Timestamp,
    /// Its calendar month.
    pub month: MonthIndex,
    /// How many months the recent window spans: two full months plus the elapsed part of the
    /// current one, so a rate early in a month is not biased low.
    pub recent_span_months: f64,
}

impl From<Timestamp> for Moment {
    fn from(at: Timestamp) -> Self {
        let month = at.month();
        let start = month.start();
        let length = month.offset(1).start().since(start).max(1) as f64;
        let elapsed = (at.since(start) as f64 / length).clamp(0.05, 1.0);
        Self {
            at,
            month,
            recent_span_months: (RECENT_MONTHS - 1) as f64 + elapsed,
        }
    }
}

fn orders_in(state: &CustomerState, from: i32, to: i32, now: &Moment) -> (u32, i64) {
    state
        .months_between(now.month.offset(from), now.month.offset(to))
        .iter()
        .fold((0, 0), |(n, paid), w| {
            (n + u32::from(w.orders), paid + w.paid())
        })
}

/// `purchase_decline`: purchases in the last 3 months against the first 3 months after the
/// first order, as monthly rates.
pub fn purchase_decline(state: &CustomerState, now: &Moment, t: &Thresholds) -> Option<Signal> {
    let first = state.first_order.as_ref()?.at.month();
    // The two windows must not overlap.
    if now.month < first.offset(2 * RECENT_MONTHS - 1) {
        return None;
    }
    let early = state.early_orders();
    if early < t.purchase_decline_min_early_orders {
        return None;
    }
    let (recent, _) = orders_in(state, -(RECENT_MONTHS - 1), 0, now);
    let ratio = (recent as f64 / now.recent_span_months) / (early as f64 / RECENT_MONTHS as f64);
    (ratio <= t.purchase_decline_max_ratio).then(|| Signal {
        code: ReasonCode::PurchaseDecline,
        strength: (1.0 - ratio).clamp(0.0, 1.0),
        observed: recent as f64,
        baseline: early as f64,
        category: None,
        effect: 0.0,
    })
}

/// `aov_decline`: average order value of the last 3 months against the 3 months before.
pub fn aov_decline(state: &CustomerState, now: &Moment, t: &Thresholds) -> Option<Signal> {
    let (recent_n, recent_paid) = orders_in(state, -(RECENT_MONTHS - 1), 0, now);
    let (prior_n, prior_paid) = orders_in(state, -(2 * RECENT_MONTHS - 1), -RECENT_MONTHS, now);
    if recent_n == 0 || prior_n < 2 || prior_paid <= 0 {
        return None;
    }
    let recent_aov = recent_paid as f64 / recent_n as f64;
    let prior_aov = prior_paid as f64 / prior_n as f64;
    let drop = 1.0 - recent_aov / prior_aov;
    (drop >= t.aov_decline_min_drop).then(|| Signal {
        code: ReasonCode::AovDecline,
        strength: (2.0 * drop).clamp(0.0, 1.0),
        observed: recent_aov,
        baseline: prior_aov,
        category: None,
        effect: 0.0,
    })
}

/// Returns the customer's typical interval between orders in days (the median of the recent
/// intervals), once there are enough orders to trust it.
pub fn typical_interval_days(state: &CustomerState, t: &Thresholds) -> Option<f64> {
    let stats = &state.intervals;
    (state.totals.orders >= t.min_orders_for_cadence && stats.gaps >= 2)
        .then(|| stats.median_gap_secs as f64 / DAY as f64)
}

/// `overdue`: a regular cadence broken, the time since the last order against the typical
/// interval.
pub fn overdue(state: &CustomerState, now: &Moment, t: &Thresholds) -> Option<Signal> {
    overdue_given(state, typical_interval_days(state, t), now, t)
}

/// `overdue` for a typical interval already computed.
pub(crate) fn overdue_given(
    state: &CustomerState,
    typical: Option<f64>,
    now: &Moment,
    t: &Thresholds,
) -> Option<Signal> {
    let typical = typical?;
    let silent = now.at.days_since(state.last_order_at?);
    let ratio = silent / typical;
    (ratio >= t.overdue_start_multiple).then(|| {
        let progress = (ratio - t.overdue_start_multiple)
            / (t.overdue_full_multiple - t.overdue_start_multiple);
        Signal {
            code: ReasonCode::Overdue,
            strength: 0.3 + 0.7 * progress.clamp(0.0, 1.0),
            observed: silent,
            baseline: typical,
            category: None,
            effect: 0.0,
        }
    })
}

/// `category_drop`: a category bought in most of the 6 months before the last 3, absent in the
/// last 3 while other purchases continue.
pub fn category_drop(state: &CustomerState, now: &Moment, t: &Thresholds) -> Option<Signal> {
    let current = now.month;
    let recent_from = current.offset(-(RECENT_MONTHS - 1));
    let window = state.months_between(current.offset(-(3 * RECENT_MONTHS - 1)), current);
    // One pass: months with the category in the prior 6 months, orders with it in the last 3.
    let mut habit = [0u8; crate::state::MAX_CATEGORIES + 1];
    let mut recent = [0u32; crate::state::MAX_CATEGORIES + 1];
    let mut recent_orders = 0u32;
    for w in window {
        if w.month >= recent_from {
            recent_orders += u32::from(w.orders);
        }
        for &(index, n) in &w.categories {
            let i = usize::from(index);
            if i >= habit.len() || n == 0 {
                continue;
            }
            if w.month >= recent_from {
                recent[i] += u32::from(n);
            } else if w.month <= current.offset(-RECENT_MONTHS) {
                habit[i] += 1;
            }
        }
    }
    if recent_orders == 0 {
        return None;
    }
    // "(other)" only exists once the named categories are full.
    let other = (state.categories.len() > crate::state::MAX_CATEGORIES)
        .then(|| state.category_index(OTHER_CATEGORY).map(usize::from))
        .flatten();
    let (index, months) = (0..state.categories.len().min(habit.len()))
        .filter(|i| {
            Some(*i) != other
                && recent[*i] == 0
                && u32::from(habit[*i]) >= t.category_habit_min_months
        })
        .map(|i| (i, habit[i]))
        // Most habitual first; ties go to the lower index, the alphabetically first name.
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
    Some(Signal {
        code: ReasonCode::CategoryDrop,
        strength: f64::from(months) / 6.0,
        observed: f64::from(months),
        baseline: 6.0,
        category: Some(state.categories[index].clone()),
        effect: 0.0,
    })
}

/// `low_p_alive`: the probability of still being an active customer is below the threshold.
pub fn low_p_alive(p_alive: Option<f64>, t: &Thresholds) -> Option<Signal> {
    let p = p_alive?;
    (p < t.low_p_alive).then(|| Signal {
        code: ReasonCode::LowPAlive,
        strength: ((t.low_p_alive - p) / t.low_p_alive).clamp(0.0, 1.0),
        observed: p,
        baseline: t.low_p_alive,
        category: None,
        effect: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind, Item, Order};
    use crate::money::CurrencyCode;
    use crate::state::apply;

    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200;

    fn at_day(day: f64) -> Timestamp {
        Timestamp(T0 + (day * DAY as f64) as i64)
    }

    /// Builds a customer from (day, total in cents, categories) orders.
    fn history(orders: &[(f64, i64, &[&str])]) -> CustomerState {
        let mut s = CustomerState::new("c");
        for (i, (day, total, cats)) in orders.iter().enumerate() {
            let e = Event {
                event_id: format!("e{i}"),
                customer_id: "c".into(),
                occurred_at: at_day(*day),
                kind: EventKind::Order(Order {
                    order_id: format!("o{i}"),
                    total: *total,
                    discount: 0,
                    cost: None,
                    items: cats
                        .iter()
                        .map(|c| Item {
                            sku: "x".into(),
                            category: Some((*c).into()),
                            quantity: 1,
                            unit_price: 1,
                        })
                        .collect(),
                    channel: None,
                    original_currency: CurrencyCode::default(),
                    original_total: *total,
                }),
            };
            apply(&mut s, &e);
        }
        s
    }

    fn every(
        days: f64,
        from: f64,
        to: f64,
        total: i64,
        cats: &'static [&'static str],
    ) -> Vec<(f64, i64, &'static [&'static str])> {
        let mut v = Vec::new();
        let mut d = from;
        while d < to {
            v.push((d, total, cats));
            d += days;
        }
        v
    }

    fn t() -> Thresholds {
        Thresholds::default()
    }

    #[test]
    fn purchase_decline_fires_when_recent_months_fall_below_half_the_early_rate() {
        // Weekly in the first 3 months, then once a month.
        let mut orders = every(7.0, 0.0, 91.0, 3000, &["tea"]);
        orders.extend(every(30.0, 100.0, 300.0, 3000, &["tea"]));
        let s = history(&orders);
        let sig = purchase_decline(&s, &at_day(300.0).into(), &t()).expect("decline");
        assert_eq!(sig.baseline, 13.0);
        assert!(sig.observed <= 3.0);
        assert!(sig.strength > 0.7, "{sig:?}");
        assert!(
            sig.detail().contains("in the first 3 months"),
            "{}",
            sig.detail()
        );
    }

    #[test]
    fn purchase_decline_is_quiet_for_a_steady_customer_and_a_young_one() {
        let s = history(&every(10.0, 0.0, 300.0, 3000, &["tea"]));
        assert!(purchase_decline(&s, &at_day(300.0).into(), &t()).is_none());
        let young = history(&every(7.0, 0.0, 60.0, 3000, &["tea"]));
        assert!(
            purchase_decline(&young, &at_day(100.0).into(), &t()).is_none(),
            "windows would overlap"
        );
    }

    #[test]
    fn aov_decline_fires_on_a_falling_basket() {
        // Day 182 is 2024-07-01: the basket halves exactly at a month boundary.
        let mut orders = every(14.0, 0.0, 182.0, 6000, &["tea"]);
        orders.extend(every(14.0, 182.0, 270.0, 3000, &["tea"]));
        let s = history(&orders);
        let sig = aov_decline(&s, &at_day(270.0).into(), &t()).expect("aov decline");
        assert!(
            sig.detail().starts_with("average order value fell 50%"),
            "{}",
            sig.detail()
        );
        assert!((sig.strength - 1.0).abs() < 1e-9);
        let steady = history(&every(14.0, 0.0, 270.0, 6000, &["tea"]));
        assert!(aov_decline(&steady, &at_day(270.0).into(), &t()).is_none());
    }

    #[test]
    fn aov_decline_needs_orders_on_both_sides() {
        let s = history(&[(0.0, 6000, &["tea"]), (100.0, 1000, &["tea"])]);
        assert!(aov_decline(&s, &at_day(120.0).into(), &t()).is_none());
    }

    #[test]
    fn overdue_grows_with_silence_past_the_typical_interval() {
        let s = history(&every(10.0, 0.0, 200.0, 3000, &["tea"]));
        let last = 190.0;
        assert_eq!(typical_interval_days(&s, &t()), Some(10.0));
        assert!(overdue(&s, &at_day(last + 15.0).into(), &t()).is_none());
        let early = overdue(&s, &at_day(last + 20.0).into(), &t()).expect("2x is overdue");
        let late = overdue(&s, &at_day(last + 45.0).into(), &t()).expect("4.5x is overdue");
        assert!(early.strength < late.strength);
        assert_eq!(late.strength, 1.0);
        assert_eq!(
            late.detail(),
            "no order for 45 days; usually orders every 10 days"
        );
    }

    #[test]
    fn overdue_needs_a_cadence() {
        let s = history(&[(0.0, 3000, &["tea"]), (30.0, 3000, &["tea"])]);
        assert!(overdue(&s, &at_day(400.0).into(), &t()).is_none());
        let same_day = history(&[(0.0, 1, &[]), (0.1, 1, &[]), (0.2, 1, &[]), (0.3, 1, &[])]);
        assert!(typical_interval_days(&same_day, &t()).is_none());
    }

    #[test]
    fn category_drop_names_the_habit_that_stopped() {
        // Coffee and tea monthly for 9 months, then tea only.
        let mut orders = every(30.0, 0.0, 270.0, 3000, &["coffee", "tea"]);
        orders.extend(every(30.0, 270.0, 365.0, 3000, &["tea"]));
        let s = history(&orders);
        let sig = category_drop(&s, &at_day(365.0).into(), &t()).expect("coffee dropped");
        assert_eq!(sig.category.as_deref(), Some("coffee"));
        assert!(
            sig.detail().starts_with("stopped buying coffee"),
            "{}",
            sig.detail()
        );
    }

    #[test]
    fn category_drop_is_quiet_when_everything_stops_or_nothing_does() {
        let stopped = history(&every(30.0, 0.0, 270.0, 3000, &["coffee", "tea"]));
        assert!(
            category_drop(&stopped, &at_day(365.0).into(), &t()).is_none(),
            "that is churn, not a category drop"
        );
        let steady = history(&every(30.0, 0.0, 365.0, 3000, &["coffee", "tea"]));
        assert!(category_drop(&steady, &at_day(365.0).into(), &t()).is_none());
        let occasional = history(&[
            (0.0, 1, &["coffee"]),
            (200.0, 1, &["tea"]),
            (330.0, 1, &["tea"]),
        ]);
        assert!(
            category_drop(&occasional, &at_day(340.0).into(), &t()).is_none(),
            "one month is no habit"
        );
    }

    #[test]
    fn low_p_alive_fires_below_the_threshold() {
        assert!(low_p_alive(Some(0.5), &t()).is_none());
        assert!(low_p_alive(None, &t()).is_none());
        let sig = low_p_alive(Some(0.12), &t()).unwrap();
        assert!(sig.detail().contains("12% chance"));
        assert!(sig.strength > 0.5);
    }
}
