//! Reports over customer profiles: the stage funnel and its movements, retention over a
//! window (customers lost and what they cost, acquired, reactivated, the retention rate),
//! profitability by value tier with what the best customers have in common, and the effect of
//! retention campaigns against matched at-risk customers nobody reached ([`crate::campaign`]).
//!
//! Each report is an accumulator: `add` one profile at a time (a service streams a million
//! from its store without holding them), then `finish`. Everything is a function of the
//! profiles and the window passed in; nothing reads a clock.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::output::Profile;
use crate::profit::ValueTier;
use crate::stage::Stage;
use crate::time::{MonthIndex, Timestamp};

pub use crate::campaign::{CampaignAccumulator, CampaignReport, CampaignResult, Outcome, Uplift};

/// A half-open time window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// First instant inside.
    pub start: Timestamp,
    /// First instant after.
    pub end: Timestamp,
}

impl Window {
    /// Returns whether `t` falls inside.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// Returns the stage a customer was in at `t` according to its profile, or `None` when the
/// customer was not known yet. Exact within the 25 months of stage history a profile keeps.
pub fn stage_at(p: &Profile, t: Timestamp) -> Option<Stage> {
    if p.first_seen.is_none_or(|f| f > t) {
        return None;
    }
    match p.stage_history.iter().rev().find(|c| c.at <= t) {
        Some(c) => Some(c.to),
        None => Some(p.stage_history.first().map_or(p.stage, |c| c.from)),
    }
}

fn active(stage: Option<Stage>) -> bool {
    matches!(
        stage,
        Some(Stage::FirstTime | Stage::EarlyRepeat | Stage::Core | Stage::CoreDefector)
    )
}

/// Customers per stage now and the moves between stages within a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageReport {
    /// Customers in each stage, in lifecycle order.
    pub stages: Vec<(Stage, u64)>,
    /// Moves inside the window: (from, to) → how many, most frequent first.
    pub transitions: Vec<(Stage, Stage, u64)>,
    /// The window of the moves.
    pub window: Window,
}

/// Builds a [`StageReport`].
#[derive(Debug, Clone)]
pub struct StageAccumulator {
    window: Window,
    stages: BTreeMap<Stage, u64>,
    moves: BTreeMap<(Stage, Stage), u64>,
}

impl StageAccumulator {
    /// Starts a report of the moves within `window`.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            stages: BTreeMap::new(),
            moves: BTreeMap::new(),
        }
    }

    /// Counts one profile.
    pub fn add(&mut self, p: &Profile) {
        *self.stages.entry(p.stage).or_default() += 1;
        for c in p
            .stage_history
            .iter()
            .filter(|c| self.window.contains(c.at))
        {
            *self.moves.entry((c.from, c.to)).or_default() += 1;
        }
    }

    /// Returns the report.
    pub fn finish(self) -> StageReport {
        let mut transitions: Vec<(Stage, Stage, u64)> = self
            .moves
            .into_iter()
            .map(|((from, to), n)| (from, to, n))
            .collect();
        transitions.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
        StageReport {
            stages: Stage::ALL
                .iter()
                .map(|s| (*s, self.stages.get(s).copied().unwrap_or(0)))
                .collect(),
            transitions,
            window: self.window,
        }
    }
}

/// Retention over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionReport {
    /// The window.
    pub window: Window,
    /// Customers who became lost inside the window (each counted once).
    pub customers_lost: u64,
    /// The margin they were expected to bring over the next 12 months had they stayed, summed at
    /// the moment each became lost, minor units: what losing them cost in a year.
    pub lost_value: i64,
    /// Their lifetime value (over `lifetime_horizon_years`) at the moment each became lost,
    /// minor units: what losing them cost.
    pub lost_lifetime_value: i64,
    /// Customers whose first order fell inside the window.
    pub customers_acquired: u64,
    /// Lost customers who ordered again inside the window (each counted once).
    pub customers_reactivated: u64,
    /// Customers active (ordered, not lost) at the window's start.
    pub active_at_start: u64,
    /// Of those, the ones not lost at the window's end.
    pub retained: u64,
    /// `retained / active_at_start`; `None` without customers active at the start.
    pub retention_rate: Option<f64>,
    /// The flow of customers in every calendar month the window touches, oldest first.
    pub months: Vec<MonthFlow>,
    /// Retention per segment (acquisition source, first order channel, value tier now),
    /// ordered by dimension then value.
    pub segments: Vec<SegmentRetention>,
}

/// Retention over the window among the customers of one segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentRetention {
    /// What the segment is cut by: `acquisition_source`, `first_channel` or `value_tier`.
    pub dimension: &'static str,
    /// The segment's value ("(none)" when the customer's profile has none).
    pub value: String,
    /// Its customers active at the window's start.
    pub active_at_start: u64,
    /// Of those, the ones lost at the window's end.
    pub lost: u64,
    /// `lost / active_at_start`.
    pub churn_rate: f64,
}

/// The flow of customers in one calendar month (the part of it inside the report's window).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthFlow {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// Customers whose first order fell in it.
    pub acquired: u64,
    /// Moves to lost in it.
    pub lost: u64,
    /// Lost customers who ordered again in it.
    pub reactivated: u64,
    /// `acquired + reactivated − lost`: how the active base changed.
    pub net: i64,
    /// What the customers lost were expected to bring over the next 12 months, minor units.
    pub lost_value: i64,
    /// Their lifetime value, minor units.
    pub lost_lifetime_value: i64,
    /// What the customers acquired were expected to bring over their first 12 months when they
    /// first ordered (a new customer's expectation), minor units.
    pub acquired_value: i64,
}

impl MonthFlow {
    fn new(month: MonthIndex) -> Self {
        Self {
            month: month.to_string(),
            acquired: 0,
            lost: 0,
            reactivated: 0,
            net: 0,
            lost_value: 0,
            lost_lifetime_value: 0,
            acquired_value: 0,
        }
    }

    /// Returns whether more customers were lost than acquired and won back.
    pub fn defection_outpaces_acquisition(&self) -> bool {
        self.net < 0
    }
}

/// Builds a [`RetentionReport`].
#[derive(Debug, Clone)]
pub struct RetentionAccumulator {
    report: RetentionReport,
    months: BTreeMap<MonthIndex, MonthFlow>,
    /// (dimension, value) → (active at the start, lost by the end).
    segments: BTreeMap<(&'static str, String), (u64, u64)>,
}

impl RetentionAccumulator {
    /// Starts a report over `window`.
    pub fn new(window: Window) -> Self {
        Self {
            report: RetentionReport {
                window,
                customers_lost: 0,
                lost_value: 0,
                lost_lifetime_value: 0,
                customers_acquired: 0,
                customers_reactivated: 0,
                active_at_start: 0,
                retained: 0,
                retention_rate: None,
                months: Vec::new(),
                segments: Vec::new(),
            },
            months: BTreeMap::new(),
            segments: BTreeMap::new(),
        }
    }

    fn month(&mut self, at: Timestamp) -> &mut MonthFlow {
        let m = at.month();
        self.months.entry(m).or_insert_with(|| MonthFlow::new(m))
    }

    /// Counts one profile.
    pub fn add(&mut self, p: &Profile) {
        let w = self.report.window;
        for c in p.stage_history.iter().filter(|c| w.contains(c.at)) {
            if c.to == Stage::Lost {
                let m = self.month(c.at);
                m.lost += 1;
                m.lost_value = m.lost_value.saturating_add(c.retained_12m.max(0));
                m.lost_lifetime_value = m
                    .lost_lifetime_value
                    .saturating_add(c.lifetime_value.max(0));
            }
            if c.from == Stage::Lost {
                self.month(c.at).reactivated += 1;
            }
        }
        if let Some(first) = p.first_order_at.filter(|t| w.contains(*t)) {
            // The move out of prospect carries what the new customer was expected to bring.
            let value = p
                .stage_history
                .iter()
                .find(|c| c.from == Stage::Prospect)
                .map_or(0, |c| c.retained_12m.max(0));
            let m = self.month(first);
            m.acquired += 1;
            m.acquired_value = m.acquired_value.saturating_add(value);
        }
        let r = &mut self.report;
        let in_window = || p.stage_history.iter().filter(|c| w.contains(c.at));
        if let Some(lost) = in_window().rfind(|c| c.to == Stage::Lost) {
            r.customers_lost += 1;
            r.lost_value = r.lost_value.saturating_add(lost.retained_12m.max(0));
            r.lost_lifetime_value = r
                .lost_lifetime_value
                .saturating_add(lost.lifetime_value.max(0));
        }
        if in_window().any(|c| c.from == Stage::Lost) {
            r.customers_reactivated += 1;
        }
        if p.first_order_at.is_some_and(|t| w.contains(t)) {
            r.customers_acquired += 1;
        }
        if active(stage_at(p, w.start)) {
            r.active_at_start += 1;
            // The end is exclusive: the stage just before it.
            let retained = stage_at(p, w.end.plus(-1)) != Some(Stage::Lost);
            if retained {
                r.retained += 1;
            }
            let none = || "(none)".to_owned();
            for key in [
                (
                    "acquisition_source",
                    p.acquisition_source.clone().unwrap_or_else(none),
                ),
                (
                    "first_channel",
                    p.first_channel.clone().unwrap_or_else(none),
                ),
                ("value_tier", p.value_tier.to_string()),
            ] {
                let (active, lost) = self.segments.entry(key).or_default();
                *active += 1;
                *lost += u64::from(!retained);
            }
        }
    }

    /// Returns the report.
    pub fn finish(mut self) -> RetentionReport {
        let r = &mut self.report;
        r.retention_rate =
            (r.active_at_start > 0).then(|| r.retained as f64 / r.active_at_start as f64);
        r.segments = std::mem::take(&mut self.segments)
            .into_iter()
            .map(|((dimension, value), (active, lost))| SegmentRetention {
                dimension,
                value,
                active_at_start: active,
                lost,
                churn_rate: lost as f64 / active as f64,
            })
            .collect();
        if r.window.end > r.window.start {
            let (first, last) = (r.window.start.month(), r.window.end.plus(-1).month());
            let mut m = first;
            while m <= last {
                let mut flow = self.months.remove(&m).unwrap_or_else(|| MonthFlow::new(m));
                flow.net = (flow.acquired + flow.reactivated) as i64 - flow.lost as i64;
                r.months.push(flow);
                m = m.offset(1);
            }
        }
        self.report
    }
}

/// Customers and margin of one value tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierSummary {
    /// The tier.
    pub tier: ValueTier,
    /// Customers in it.
    pub customers: u64,
    /// Their 12-month margin together, minor units.
    pub margin_12m: i64,
    /// Their 12-month revenue together, minor units.
    pub revenue_12m: i64,
}

/// How common one trait is among the top tier against among all customers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraitShare {
    /// What is shared: `acquisition_source`, `first_channel` or `first_category`.
    pub dimension: &'static str,
    /// Its value, e.g. "referral"; "(unknown)" when not given.
    pub value: String,
    /// Share of top-tier customers with it, 0..1.
    pub share_in_top_tier: f64,
    /// Share of all customers with it, 0..1.
    pub share_overall: f64,
}

/// A divest candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DivestCandidate {
    /// The customer.
    pub customer_id: String,
    /// 12-month margin, minor units (negative).
    pub margin_12m: i64,
    /// Support contacts over 12 months.
    pub contacts_12m: u32,
}

/// Profitability by tier, the divest candidates and what the top tier has in common.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfitabilityReport {
    /// Every tier, A first.
    pub tiers: Vec<TierSummary>,
    /// Divest candidates in all.
    pub divest_count: u64,
    /// Their 12-month margin together, minor units.
    pub divest_margin_12m: i64,
    /// The worst divest candidates (lowest margin first), at most the limit asked.
    pub divest_candidates: Vec<DivestCandidate>,
    /// Traits of the top tier against all customers, the most over-represented first.
    pub top_tier_traits: Vec<TraitShare>,
}

/// Builds a [`ProfitabilityReport`].
#[derive(Debug, Clone)]
pub struct ProfitabilityAccumulator {
    tiers: BTreeMap<ValueTier, TierSummary>,
    divest_count: u64,
    divest_margin: i64,
    worst: Vec<DivestCandidate>,
    limit: usize,
    customers: u64,
    top: u64,
    traits: HashMap<(&'static str, String), (u64, u64)>,
}

const TIERS: [ValueTier; 4] = [ValueTier::A, ValueTier::B, ValueTier::C, ValueTier::D];

impl ProfitabilityAccumulator {
    /// Starts a report listing at most `divest_limit` divest candidates.
    pub fn new(divest_limit: usize) -> Self {
        Self {
            tiers: TIERS
                .iter()
                .map(|t| {
                    (
                        *t,
                        TierSummary {
                            tier: *t,
                            customers: 0,
                            margin_12m: 0,
                            revenue_12m: 0,
                        },
                    )
                })
                .collect(),
            divest_count: 0,
            divest_margin: 0,
            worst: Vec::new(),
            limit: divest_limit,
            customers: 0,
            top: 0,
            traits: HashMap::new(),
        }
    }

    /// Counts one profile. Prospects (no order) have no margin and are left out.
    pub fn add(&mut self, p: &Profile) {
        if p.orders == 0 {
            return;
        }
        self.customers += 1;
        let t = self
            .tiers
            .get_mut(&p.value_tier)
            .expect("every tier is there");
        t.customers += 1;
        t.margin_12m = t.margin_12m.saturating_add(p.margin_12m);
        t.revenue_12m = t.revenue_12m.saturating_add(p.revenue_12m);
        if p.divest {
            self.divest_count += 1;
            self.divest_margin = self.divest_margin.saturating_add(p.margin_12m);
            self.worst.push(DivestCandidate {
                customer_id: p.customer_id.clone(),
                margin_12m: p.margin_12m,
                contacts_12m: p.contacts_12m,
            });
            if self.worst.len() > self.limit.max(1) * 2 {
                self.trim();
            }
        }
        let top = p.value_tier == ValueTier::A;
        self.top += u64::from(top);
        let unknown = || "(unknown)".to_owned();
        let mut traits = vec![
            (
                "acquisition_source",
                p.acquisition_source.clone().unwrap_or_else(unknown),
            ),
            (
                "first_channel",
                p.first_channel.clone().unwrap_or_else(unknown),
            ),
        ];
        traits.extend(
            p.first_categories
                .iter()
                .map(|c| ("first_category", c.clone())),
        );
        for key in traits {
            let e = self.traits.entry(key).or_default();
            e.0 += u64::from(top);
            e.1 += 1;
        }
    }

    fn trim(&mut self) {
        self.worst.sort_by(|a, b| {
            a.margin_12m
                .cmp(&b.margin_12m)
                .then_with(|| a.customer_id.cmp(&b.customer_id))
        });
        self.worst.truncate(self.limit);
    }

    /// Returns the report.
    pub fn finish(mut self) -> ProfitabilityReport {
        self.trim();
        let (top, all) = (self.top.max(1) as f64, self.customers.max(1) as f64);
        let mut traits: Vec<TraitShare> = self
            .traits
            .into_iter()
            .map(|((dimension, value), (in_top, overall))| TraitShare {
                dimension,
                value,
                share_in_top_tier: in_top as f64 / top,
                share_overall: overall as f64 / all,
            })
            .collect();
        let lift = |t: &TraitShare| t.share_in_top_tier - t.share_overall;
        traits.sort_by(|a, b| {
            lift(b)
                .total_cmp(&lift(a))
                .then_with(|| (a.dimension, &a.value).cmp(&(b.dimension, &b.value)))
        });
        ProfitabilityReport {
            tiers: self.tiers.into_values().collect(),
            divest_count: self.divest_count,
            divest_margin_12m: self.divest_margin,
            divest_candidates: self.worst,
            top_tier_traits: traits,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::assess::{Assessment, Model};
    use crate::engine::Output;
    use crate::event::{Event, EventKind, Order, RetentionAction};
    use crate::money::CurrencyCode;
    use crate::output::profile;
    use crate::replay::{Observer, Replay};
    use crate::state::CustomerState;
    use crate::time::DAY;

    const T0: i64 = 1_704_067_200; // 2024-01-01

    pub(crate) fn day(d: i64) -> Timestamp {
        Timestamp(T0 + d * DAY)
    }

    fn order(customer: &str, d: i64) -> Event {
        Event {
            event_id: format!("{customer}-o{d}"),
            customer_id: customer.into(),
            occurred_at: day(d),
            kind: EventKind::Order(Order {
                order_id: format!("{customer}-{d}"),
                total: 5_000,
                discount: 0,
                cost: Some(2_000),
                items: vec![],
                channel: None,
                original_currency: CurrencyCode::default(),
                original_total: 5_000,
            }),
        }
    }

    pub(crate) fn action(customer: &str, d: i64, campaign: &str) -> Event {
        Event {
            event_id: format!("{customer}-a{d}"),
            customer_id: customer.into(),
            occurred_at: day(d),
            kind: EventKind::RetentionAction(RetentionAction {
                action: "offer".into(),
                campaign: Some(campaign.into()),
            }),
        }
    }

    pub(crate) fn every(customer: &str, from: i64, to: i64, step: usize) -> Vec<Event> {
        (from..=to)
            .step_by(step)
            .map(|d| order(customer, d))
            .collect()
    }

    #[derive(Default)]
    struct Profiles(BTreeMap<String, Profile>);

    impl Observer for Profiles {
        fn published(&mut self, _: &Output) {}
        fn finished(&mut self, s: &CustomerState, a: &Assessment) {
            self.0.insert(s.customer_id.clone(), profile(s, a));
        }
    }

    /// Replays the events on event time and returns every profile as of day `end`.
    pub(crate) fn replay(mut events: Vec<Event>, end: i64) -> BTreeMap<String, Profile> {
        events.sort_by_key(|e| e.occurred_at);
        let mut replay = Replay::new(Model::default(), None);
        let mut out = Profiles::default();
        for e in &events {
            replay.apply(e, &mut out);
        }
        replay.finish(day(end), &mut out);
        out.0
    }

    fn lifecycle() -> BTreeMap<String, Profile> {
        let mut events = every("steady", 0, 725, 20);
        events.extend(every("quitter", 0, 400, 20));
        events.extend(every("newbie", 500, 725, 15));
        events.extend(every("comeback", 0, 100, 20));
        events.extend(every("comeback", 500, 725, 20));
        replay(events, 730)
    }

    #[test]
    fn the_year_reports_who_was_lost_acquired_reactivated_and_the_retention_rate() {
        let profiles = lifecycle();
        assert_eq!(profiles["quitter"].stage, Stage::Lost);
        assert_eq!(
            stage_at(&profiles["comeback"], day(365)),
            Some(Stage::Lost),
            "lost in the first year"
        );
        let year2 = Window {
            start: day(365),
            end: day(730),
        };
        let mut acc = RetentionAccumulator::new(year2);
        for p in profiles.values() {
            acc.add(p);
        }
        let r = acc.finish();
        assert_eq!(r.customers_lost, 1, "{r:?}");
        assert!(r.lost_value > 0, "losing a regular costs something: {r:?}");
        assert!(
            r.lost_lifetime_value > r.lost_value,
            "three years of a regular are worth more than one: {r:?}"
        );
        assert_eq!(r.customers_acquired, 1, "{r:?}");
        assert_eq!(r.customers_reactivated, 1, "{r:?}");
        assert_eq!((r.active_at_start, r.retained), (2, 1), "{r:?}");
        assert_eq!(r.retention_rate, Some(0.5));
        // Per segment: the two active at the start share a channel (none), so one of two left.
        let channel: Vec<_> = r
            .segments
            .iter()
            .filter(|s| s.dimension == "first_channel")
            .map(|s| (s.value.as_str(), s.active_at_start, s.lost))
            .collect();
        assert_eq!(channel, [("(none)", 2, 1)], "{:?}", r.segments);
        let tiers: u64 = r
            .segments
            .iter()
            .filter(|s| s.dimension == "value_tier")
            .map(|s| s.active_at_start)
            .sum();
        assert_eq!(tiers, r.active_at_start);
        assert!(
            r.segments
                .iter()
                .all(|s| s.churn_rate == s.lost as f64 / s.active_at_start as f64)
        );
        // Month by month: every month the window touches, the moves in the month they fell.
        assert_eq!(r.months.len(), 13, "2024-12 (from day 365) to 2025-12");
        assert_eq!(r.months[0].month, "2024-12");
        let sum = |f: fn(&MonthFlow) -> u64| r.months.iter().map(f).sum::<u64>();
        assert_eq!(sum(|m| m.lost), 1);
        assert_eq!(sum(|m| m.acquired), 1);
        assert_eq!(sum(|m| m.reactivated), 1);
        let newbie = profiles["newbie"]
            .first_order_at
            .unwrap()
            .month()
            .to_string();
        let comeback = profiles["comeback"]
            .stage_history
            .iter()
            .find(|c| c.from == Stage::Lost)
            .unwrap()
            .at
            .month()
            .to_string();
        for m in &r.months {
            assert_eq!(m.net, (m.acquired + m.reactivated) as i64 - m.lost as i64);
            assert_eq!(m.acquired, u64::from(m.month == newbie), "{m:?}");
            assert_eq!(m.reactivated, u64::from(m.month == comeback), "{m:?}");
            if m.lost > 0 {
                assert_eq!(m.lost_value, r.lost_value);
                assert!(m.defection_outpaces_acquisition() || m.acquired + m.reactivated > 0);
            }
            if m.acquired > 0 {
                assert!(
                    m.acquired_value > 0,
                    "a new customer is worth something: {m:?}"
                );
            }
        }

        // Over the first year the comeback customer is the one lost, and nobody came back.
        let mut acc = RetentionAccumulator::new(Window {
            start: day(-30),
            end: day(365),
        });
        for p in profiles.values() {
            acc.add(p);
        }
        let r = acc.finish();
        assert_eq!((r.customers_lost, r.customers_reactivated), (1, 0), "{r:?}");
        assert_eq!(r.customers_acquired, 3, "{r:?}");
        assert_eq!(r.active_at_start, 0, "nobody had ordered before day 0");
    }

    #[test]
    fn stage_moves_are_counted_inside_the_window_only() {
        let profiles = lifecycle();
        let mut all = StageAccumulator::new(Window {
            start: day(-1),
            end: day(731),
        });
        let mut none = StageAccumulator::new(Window {
            start: day(800),
            end: day(900),
        });
        for p in profiles.values() {
            all.add(p);
            none.add(p);
        }
        let (all, none) = (all.finish(), none.finish());
        let moves = |r: &StageReport, from, to| {
            r.transitions
                .iter()
                .find(|(f, t, _)| (*f, *t) == (from, to))
                .map_or(0, |m| m.2)
        };
        assert_eq!(moves(&all, Stage::Prospect, Stage::FirstTime), 4);
        assert_eq!(
            moves(&all, Stage::Lost, Stage::FirstTime)
                + moves(&all, Stage::Lost, Stage::EarlyRepeat)
                + moves(&all, Stage::Lost, Stage::Core),
            1
        );
        assert!(none.transitions.is_empty());
        assert_eq!(none.stages.iter().map(|(_, n)| n).sum::<u64>(), 4);
        assert_eq!(
            none.stages, all.stages,
            "counts now do not depend on the window"
        );
    }

    #[test]
    fn the_top_tier_traits_compare_its_shares_with_everyone_and_divest_candidates_are_worst_first()
    {
        let base = lifecycle()["steady"].clone();
        let make = |id: &str, tier: ValueTier, source: &str, margin: i64, divest: bool| {
            let mut p = base.clone();
            p.customer_id = id.into();
            p.value_tier = tier;
            p.acquisition_source = Some(source.into());
            p.margin_12m = margin;
            p.divest = divest;
            p
        };
        let profiles = [
            make("a1", ValueTier::A, "referral", 900, false),
            make("a2", ValueTier::A, "referral", 800, false),
            make("b1", ValueTier::B, "ads", 300, false),
            make("d1", ValueTier::D, "ads", -50, true),
            make("d2", ValueTier::D, "ads", -70, true),
            make("d3", ValueTier::D, "ads", -10, true),
        ];
        let mut acc = ProfitabilityAccumulator::new(2);
        for p in &profiles {
            acc.add(p);
        }
        let r = acc.finish();
        let tier = |t: ValueTier| r.tiers.iter().find(|s| s.tier == t).unwrap();
        assert_eq!(
            (tier(ValueTier::A).customers, tier(ValueTier::A).margin_12m),
            (2, 1700)
        );
        assert_eq!(tier(ValueTier::C).customers, 0);
        assert_eq!((r.divest_count, r.divest_margin_12m), (3, -130));
        let worst: Vec<&str> = r
            .divest_candidates
            .iter()
            .map(|d| d.customer_id.as_str())
            .collect();
        assert_eq!(worst, ["d2", "d1"]);
        let first = &r.top_tier_traits[0];
        assert_eq!(
            (first.dimension, first.value.as_str()),
            ("acquisition_source", "referral")
        );
        assert_eq!(first.share_in_top_tier, 1.0);
        assert!((first.share_overall - 2.0 / 6.0).abs() < 1e-12);
    }
}
