//! The events and profiles churnwatch publishes (DESIGN §5): `customer-risk` and
//! `customer-stage` change events, and the full customer profile for the compacted
//! `customer-profiles` topic. Event ids are derived from the customer and the number of changes
//! recorded in its state, so a redelivered or re-emitted event carries the same id and
//! consumers can drop duplicates.

use serde::{Deserialize, Serialize};

use crate::assess::{Assessment, Changes};
use crate::profit::{MarginBreakdown, ValueTier};
use crate::risk::RiskLevel;
use crate::signals::Signal;
use crate::stage::{Stage, Transition, TransitionReason};
use crate::state::CustomerState;
use crate::time::Timestamp;

/// A churn reason as published: a machine code and a sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Machine code, e.g. `aov_decline`.
    pub code: String,
    /// What a retention manager reads.
    pub detail: String,
    /// How much it moved the risk probability (the probability less the one without it).
    pub contribution: f64,
}

impl From<&Signal> for Reason {
    fn from(s: &Signal) -> Self {
        Self {
            code: s.code.as_str().to_owned(),
            detail: s.detail(),
            contribution: s.contribution(),
        }
    }
}

/// A `customer-risk` event: the risk level crossed a boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskEvent {
    /// Deterministic id: `<customer>/<change number>/risk`.
    pub event_id: String,
    /// The customer.
    pub customer_id: String,
    /// When the change applies (event time or timer due time).
    #[serde(with = "crate::time::rfc3339")]
    pub at: Timestamp,
    /// Risk score, 0..1.
    pub score: f64,
    /// New level.
    pub level: RiskLevel,
    /// Level before.
    pub previous_level: RiskLevel,
    /// BG/NBD probability of still being active; absent for prospects.
    pub p_alive: Option<f64>,
    /// Why, strongest first.
    pub reasons: Vec<Reason>,
    /// Expected margin over the next 12 months, minor units of the reporting currency.
    pub clv: i64,
    /// 12-month margin at stake, minor units of the reporting currency.
    pub value_at_risk: i64,
}

/// A `customer-stage` event: the lifecycle stage changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageEvent {
    /// Deterministic id: `<customer>/<change number>/stage`.
    pub event_id: String,
    /// The customer.
    pub customer_id: String,
    /// When the stage began.
    #[serde(with = "crate::time::rfc3339")]
    pub at: Timestamp,
    /// Stage left.
    pub from: Stage,
    /// Stage entered.
    pub to: Stage,
    /// Why.
    pub reason: TransitionReason,
}

/// The full customer profile published to `customer-profiles` and served by the query service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The customer.
    pub customer_id: String,
    /// When this profile was evaluated.
    #[serde(with = "crate::time::rfc3339")]
    pub assessed_at: Timestamp,
    /// Events applied so far; grows with every profile of the customer.
    pub version: u64,
    /// Lifecycle stage.
    pub stage: Stage,
    /// When the stage began.
    #[serde(with = "crate::time::rfc3339::option")]
    pub stage_since: Option<Timestamp>,
    /// Risk level.
    pub risk_level: RiskLevel,
    /// Risk score, 0..1.
    pub risk_score: f64,
    /// Why, strongest first.
    pub reasons: Vec<Reason>,
    /// BG/NBD probability of still being active.
    pub p_alive: Option<f64>,
    /// Expected orders in the evaluation horizon (90 days by default).
    pub expected_purchases: f64,
    /// Expected margin over the next 12 months.
    pub clv_12m: i64,
    /// 12-month margin at stake.
    pub value_at_risk: i64,
    /// Margin over the last 12 months, support cost included.
    pub margin_12m: i64,
    /// Revenue over the last 12 months.
    pub revenue_12m: i64,
    /// Orders over the last 12 months.
    pub orders_12m: u32,
    /// Support contacts over the last 12 months.
    pub contacts_12m: u32,
    /// Value tier.
    pub value_tier: ValueTier,
    /// Negative margin with a high service load.
    pub divest: bool,
    /// Lifetime orders.
    pub orders: u32,
    /// Lifetime revenue before discounts.
    pub revenue: i64,
    /// First event seen.
    #[serde(with = "crate::time::rfc3339::option")]
    pub first_seen: Option<Timestamp>,
    /// First order.
    #[serde(with = "crate::time::rfc3339::option")]
    pub first_order_at: Option<Timestamp>,
    /// Latest order.
    #[serde(with = "crate::time::rfc3339::option")]
    pub last_order_at: Option<Timestamp>,
    /// Days between orders, typically.
    pub typical_interval_days: Option<f64>,
    /// Acquisition source from the signup.
    pub acquisition_source: Option<String>,
    /// Channel of the first order.
    pub first_channel: Option<String>,
    /// Categories of the first order.
    pub first_categories: Vec<String>,
    /// The latest retention action's campaign, action, time and the risk level then.
    pub last_retention: Option<RetentionSummary>,
    /// The latest retention actions (at most 8), oldest first, each with its outcome.
    #[serde(default)]
    pub retention_actions: Vec<RetentionSummary>,
    /// The latest spells at high or critical risk (at most 6), oldest first, and what followed
    /// each.
    #[serde(default)]
    pub risk_episodes: Vec<RiskSpell>,
    /// Stage changes over the last 25 months, oldest first.
    #[serde(default)]
    pub stage_history: Vec<StageMove>,
    /// What the lifetime margin is made of: revenue, discounts, refunds, cost of goods and
    /// service.
    #[serde(default)]
    pub margin_breakdown: MarginBreakdown,
}

/// A retention action, as published in a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionSummary {
    /// When.
    #[serde(with = "crate::time::rfc3339")]
    pub at: Timestamp,
    /// What was done.
    pub action: String,
    /// The campaign.
    pub campaign: Option<String>,
    /// The risk level at the time.
    pub level_at_action: RiskLevel,
    /// The customer's standing at the first assessment at or after it; `None` until then and
    /// in profiles that predate it.
    #[serde(default)]
    pub standing: Option<Standing>,
    /// The first order after it.
    #[serde(default, with = "crate::time::rfc3339::option")]
    pub ordered_again_at: Option<Timestamp>,
    /// When a customer at high or critical risk at the action was first assessed below high.
    #[serde(default, with = "crate::time::rfc3339::option")]
    pub left_risk_at: Option<Timestamp>,
}

/// A spell at high or critical risk, as published in a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskSpell {
    /// When it began.
    #[serde(with = "crate::time::rfc3339")]
    pub since: Timestamp,
    /// The customer's standing at the first assessment of each risk band and silence bucket
    /// the spell went through before an order, in time order.
    #[serde(default)]
    pub standings: Vec<Standing>,
    /// The first order after that.
    #[serde(with = "crate::time::rfc3339::option")]
    pub ordered_again_at: Option<Timestamp>,
    /// When the customer was first assessed below high again.
    #[serde(with = "crate::time::rfc3339::option")]
    pub left_risk_at: Option<Timestamp>,
}

/// A customer's standing at one assessment (at a retention action, or during an at-risk
/// spell), as published in a profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// When.
    #[serde(with = "crate::time::rfc3339")]
    pub at: Timestamp,
    /// The risk probability.
    pub risk: f64,
    /// The silence, as [`crate::campaign::silence_bucket`].
    pub silence: u8,
    /// The lifecycle stage.
    pub stage: Stage,
    /// The value tier.
    pub tier: ValueTier,
}

/// A stage change, as published in a profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageMove {
    /// When.
    #[serde(with = "crate::time::rfc3339")]
    pub at: Timestamp,
    /// The stage left.
    pub from: Stage,
    /// The stage entered.
    pub to: Stage,
    /// The value at risk at that moment, minor units.
    pub value_at_risk: i64,
    /// The margin expected over the next 12 months had the customer stayed, minor units.
    #[serde(default)]
    pub retained_12m: i64,
    /// The margin expected over the lifetime horizon had the customer stayed, minor units.
    #[serde(default)]
    pub lifetime_value: i64,
}

/// What one assessment publishes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outputs {
    /// The risk event, when the level changed.
    pub risk: Option<RiskEvent>,
    /// The stage event, when the stage changed.
    pub stage: Option<StageEvent>,
}

/// Returns the change events for an assessment already recorded into `state`.
pub fn change_events(state: &CustomerState, a: &Assessment, changes: Changes) -> Outputs {
    Outputs {
        risk: changes.risk.map(|(from, to)| RiskEvent {
            event_id: event_id(state, "risk"),
            customer_id: state.customer_id.clone(),
            at: a.at,
            score: a.risk_score,
            level: to,
            previous_level: from,
            p_alive: a.p_alive,
            reasons: a.reasons.iter().map(Reason::from).collect(),
            clv: a.clv_12m,
            value_at_risk: a.value_at_risk,
        }),
        stage: changes
            .stage
            .map(|t| stage_event(state, a.stage_since.unwrap_or(a.at), t)),
    }
}

/// Returns the deterministic id of the state's latest change of `kind`: `<customer>/<change
/// number>/<kind>`, the same on every replay.
fn event_id(state: &CustomerState, kind: &str) -> String {
    format!("{}/{}/{kind}", state.customer_id, state.changes)
}

/// Returns the stage event of a move already counted in `state.changes`, effective `at`.
pub fn stage_event(state: &CustomerState, at: Timestamp, t: Transition) -> StageEvent {
    StageEvent {
        event_id: event_id(state, "stage"),
        customer_id: state.customer_id.clone(),
        at,
        from: t.from,
        to: t.to,
        reason: t.reason,
    }
}

/// Returns the profile of a customer from its state and its latest assessment.
pub fn profile(state: &CustomerState, a: &Assessment) -> Profile {
    Profile {
        customer_id: state.customer_id.clone(),
        assessed_at: a.at,
        version: state.applied_events,
        stage: a.stage,
        stage_since: a.stage_since,
        risk_level: a.risk_level,
        risk_score: a.risk_score,
        reasons: a.reasons.iter().map(Reason::from).collect(),
        p_alive: a.p_alive,
        expected_purchases: a.expected_purchases,
        clv_12m: a.clv_12m,
        value_at_risk: a.value_at_risk,
        margin_12m: a.margin_12m,
        revenue_12m: a.revenue_12m,
        orders_12m: a.orders_12m,
        contacts_12m: a.contacts_12m,
        value_tier: a.value_tier,
        divest: a.divest,
        orders: state.totals.orders,
        revenue: state.totals.revenue,
        first_seen: state.first_seen,
        first_order_at: state.first_order.as_ref().map(|f| f.at),
        last_order_at: state.last_order_at,
        typical_interval_days: a.typical_interval_days,
        acquisition_source: state.signup.as_ref().and_then(|s| s.source.clone()),
        first_channel: state.first_order.as_ref().and_then(|f| f.channel.clone()),
        first_categories: state
            .first_order
            .as_ref()
            .map(|f| f.categories.clone())
            .unwrap_or_default(),
        last_retention: state.last_retention().map(retention_summary),
        retention_actions: state.retention.iter().map(retention_summary).collect(),
        risk_episodes: state
            .risk_episodes
            .iter()
            .map(|e| RiskSpell {
                since: e.since,
                standings: e.standings.iter().map(standing).collect(),
                ordered_again_at: e.ordered_again_at,
                left_risk_at: e.left_risk_at,
            })
            .collect(),
        stage_history: state
            .stage_history
            .iter()
            .map(|c| StageMove {
                at: c.at,
                from: c.from,
                to: c.to,
                value_at_risk: c.value_at_risk,
                retained_12m: c.retained_12m,
                lifetime_value: c.lifetime_value,
            })
            .collect(),
        margin_breakdown: a.margin_breakdown,
    }
}

fn standing(s: &crate::state::Standing) -> Standing {
    Standing {
        at: s.at,
        risk: f64::from(s.risk),
        silence: s.silence,
        stage: s.stage,
        tier: s.tier,
    }
}

fn retention_summary(r: &crate::state::RetentionMark) -> RetentionSummary {
    RetentionSummary {
        at: r.at,
        action: r.action.clone(),
        campaign: r.campaign.clone(),
        level_at_action: r.level_at_action,
        standing: r.standing.as_ref().map(standing),
        ordered_again_at: r.ordered_again_at,
        left_risk_at: r.left_risk_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assess::{Model, assess};
    use crate::event::{Event, EventKind, Order};
    use crate::money::CurrencyCode;
    use crate::state::apply;
    use crate::time::DAY;

    fn order(n: u32, day: i64) -> Event {
        Event {
            event_id: format!("e{n}"),
            customer_id: "c1".into(),
            occurred_at: Timestamp(1_704_067_200 + day * DAY),
            kind: EventKind::Order(Order {
                order_id: format!("o{n}"),
                total: 2_000,
                discount: 0,
                cost: Some(800),
                items: vec![],
                channel: Some("app".into()),
                original_currency: CurrencyCode::default(),
                original_total: 2_000,
            }),
        }
    }

    #[test]
    fn change_events_have_deterministic_ids_and_carry_reasons() {
        let model = Model::default();
        let mut s = CustomerState::new("c1");
        apply(&mut s, &order(0, 0));
        let (a, ch) = assess(&mut s, Timestamp(1_704_067_200), &model);
        let out = change_events(&s, &a, ch);
        let stage = out.stage.expect("first order moves the stage");
        assert_eq!(stage.event_id, "c1/1/stage");
        assert_eq!((stage.from, stage.to), (Stage::Prospect, Stage::FirstTime));
        // Under the prior most first-time buyers never order again: the first order already
        // carries a risk level above low, announced by the same change.
        let first_risk = out.risk.expect("a first-time buyer's risk is above low");
        assert_eq!(first_risk.event_id, "c1/1/risk");
        assert!(first_risk.reasons.iter().any(|r| r.code == "no_repeat"));

        for n in 1..10 {
            apply(&mut s, &order(n, i64::from(n) * 7));
            assess(
                &mut s,
                Timestamp(1_704_067_200 + i64::from(n) * 7 * DAY),
                &model,
            );
        }
        let later = Timestamp(1_704_067_200 + 200 * DAY);
        let (a, ch) = assess(&mut s, later, &model);
        let out = change_events(&s, &a, ch);
        let risk = out.risk.expect("a long silence raises the risk");
        assert_eq!(risk.event_id, format!("c1/{}/risk", s.changes));
        assert!(risk.level > risk.previous_level);
        assert!(
            risk.reasons
                .iter()
                .any(|r| r.code == "overdue" && r.detail.contains("no order for"))
        );
        let json = serde_json::to_value(&risk).unwrap();
        assert_eq!(json["level"], "critical");
        assert!(
            json["at"].as_str().unwrap().ends_with('Z'),
            "times are RFC 3339: {json}"
        );
        assert!(json["reasons"][0]["detail"].is_string());

        let p = profile(&s, &a);
        assert_eq!(p.orders, 10);
        assert_eq!(p.first_channel.as_deref(), Some("app"));
        let back: Profile = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
