//! `evaluate`: a customer's state at a time, under a model, becomes an `Assessment` (stage,
//! risk with reasons, BTYD predictions, profitability); `record` writes the decision back into
//! the state and says what changed; `next_evaluation_at` says when silence alone would change
//! the answer, so a service knows when to look again.

use serde::{Deserialize, Serialize};

use crate::btyd::{BgNbdParams, GammaGammaParams, RfmSummary, SpendSummary};
use crate::churn::{self, RiskModel};
use crate::config::Thresholds;
use crate::profit::{self, TierCuts, ValueTier};
use crate::risk::RiskLevel;
use crate::signals::{self, Signal};
use crate::stage::{self, Stage, StageFacts, Transition, TransitionReason};
use crate::state::{
    CustomerState, MAX_RISK_EPISODES, MAX_STAGE_HISTORY, MAX_STANDINGS, RiskEpisode,
    STAGE_HISTORY_SECS, StageChange, Standing,
};
use crate::time::{DAY, Timestamp, WEEK};

/// Parameters fitted over the whole population.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelParams {
    /// Purchase-count and dropout model (time in weeks).
    pub bgnbd: BgNbdParams,
    /// Spend-per-order model.
    pub gamma_gamma: GammaGammaParams,
    /// Value tier boundaries.
    pub tiers: TierCuts,
    /// The churn-risk model combining BG/NBD with the signals; the prior (BG/NBD alone) until
    /// the first fit. Parameters stored before it existed load with the prior.
    #[serde(default)]
    pub risk: RiskModel,
}

/// What evaluation needs besides the customer: fitted parameters and thresholds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    /// Fitted parameters.
    pub params: ModelParams,
    /// Thresholds.
    pub thresholds: Thresholds,
}

/// The evaluation of one customer at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// When the evaluation applies.
    pub at: Timestamp,
    /// The lifecycle stage after this evaluation.
    pub stage: Stage,
    /// The stage change this evaluation makes, if any.
    pub transition: Option<Transition>,
    /// When the (new) stage began.
    pub stage_since: Option<Timestamp>,
    /// Risk score: the probability of no order within `risk_horizon_days`, 0..1 (0 for
    /// prospects).
    pub risk_score: f64,
    /// Risk level, with hysteresis against the previous level.
    pub risk_level: RiskLevel,
    /// The level before this evaluation.
    pub previous_level: RiskLevel,
    /// The signals that fired, strongest contribution first.
    pub reasons: Vec<Signal>,
    /// BG/NBD probability of still being active; `None` for prospects.
    pub p_alive: Option<f64>,
    /// Expected orders over the next `expected_purchases_days`.
    pub expected_purchases: f64,
    /// Expected margin over the next 12 months, minor units.
    pub clv_12m: i64,
    /// The margin expected over the next 12 months if the customer stays, minor units (for a
    /// one-time buyer, a new customer's expectation: see [`retained_margin`]).
    pub retained_12m: i64,
    /// The margin expected over `lifetime_horizon_years` if the customer stays, discounted
    /// yearly, minor units: what losing the customer costs. Computed when this evaluation moves
    /// the customer to lost (the move records it), 0 otherwise.
    pub lifetime_value: i64,
    /// The 12-month margin the business stands to lose: `retained_12m` weighted by the risk
    /// score; 0 once the customer is lost (the loss is then recorded in its stage history).
    pub value_at_risk: i64,
    /// Margin over the last 12 months (support cost included), minor units.
    pub margin_12m: i64,
    /// Revenue over the last 12 months, minor units.
    pub revenue_12m: i64,
    /// Orders over the last 12 months.
    pub orders_12m: u32,
    /// Support contacts over the last 12 months.
    pub contacts_12m: u32,
    /// Value tier by 12-month margin.
    pub value_tier: ValueTier,
    /// Negative margin with a high service load.
    pub divest: bool,
    /// Days since the last order.
    pub days_since_last_order: Option<f64>,
    /// Typical days between orders.
    pub typical_interval_days: Option<f64>,
    /// What the lifetime margin is made of.
    pub margin_breakdown: profit::MarginBreakdown,
}

/// What `record` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changes {
    /// The risk level moved (from, to).
    pub risk: Option<(RiskLevel, RiskLevel)>,
    /// The stage moved.
    pub stage: Option<Transition>,
}

impl Changes {
    /// Returns whether anything a consumer cares about changed.
    pub fn any(&self) -> bool {
        self.risk.is_some() || self.stage.is_some()
    }
}

/// Returns the BG/NBD summary (in weeks) of a customer with orders: repeat purchase occasions
/// (or repeat orders, when `count_same_day_orders_once` is off), the last one's age and the
/// customer's age.
pub fn rfm_summary(state: &CustomerState, now: Timestamp, t: &Thresholds) -> Option<RfmSummary> {
    let first = state.first_order.as_ref()?.at;
    let last = state.last_order_at?;
    let purchases = if t.count_same_day_orders_once {
        state.totals.occasions.min(state.totals.orders)
    } else {
        state.totals.orders
    };
    Some(RfmSummary {
        x: f64::from(purchases.saturating_sub(1)),
        t_x: last.weeks_since(first).max(0.0),
        t: now.weeks_since(first).max(last.weeks_since(first)).max(0.0),
    })
}

/// Returns the Gamma-Gamma summary of a customer with orders and positive spend.
pub fn spend_summary(state: &CustomerState) -> Option<SpendSummary> {
    let orders = state.totals.orders;
    let paid = state.totals.revenue - state.totals.discounts;
    (orders > 0 && paid > 0).then(|| SpendSummary {
        x: f64::from(orders),
        mean_spend: paid as f64 / f64::from(orders),
    })
}

/// Sums of the last 12 calendar months (the current one included).
#[derive(Debug, Clone, Copy, Default)]
struct Last12 {
    orders: u32,
    revenue: i64,
    goods_margin: i64,
    contacts: u32,
}

fn last_12_months(state: &CustomerState, now: Timestamp) -> Last12 {
    let current = now.month();
    state
        .months_between(current.offset(-11), current)
        .iter()
        .fold(Last12::default(), |acc, w| Last12 {
            orders: acc.orders + u32::from(w.orders),
            revenue: acc.revenue + w.revenue,
            goods_margin: acc.goods_margin + w.goods_margin,
            contacts: acc.contacts + u32::from(w.contacts),
        })
}

/// Returns the customer's 12-month margin (support cost included).
pub fn margin_12m(state: &CustomerState, now: Timestamp, t: &Thresholds) -> i64 {
    let l = last_12_months(state, now);
    l.goods_margin
        .saturating_sub(i64::from(l.contacts).saturating_mul(t.cost_per_contact))
}

/// Returns the margin a customer who stays brings over the next `years`, discounted at
/// `annual_discount_rate` per year, minor units.
///
/// The purchases are BG/NBD's expectation given that the customer has not dropped out yet
/// ([`BgNbdParams::expected_purchases_if_alive`]), so a customer already gone is valued at what
/// it would have brought, not at the model's near-zero expectation. A one-time buyer is valued
/// at the population's expectation: what a new customer brings, E[X(h)] at x = 0 and T = 0,
/// rather than a posterior that only its silence has informed. Each year's purchases are
/// discounted by (1 + rate)^-k, the k-th year's and a final part year's alike.
pub fn retained_margin(
    bgnbd: &BgNbdParams,
    rfm: RfmSummary,
    margin_per_order: f64,
    years: f64,
    t: &Thresholds,
) -> f64 {
    if years.is_nan() || years <= 0.0 || margin_per_order == 0.0 {
        return 0.0;
    }
    let (x, age) = if rfm.x < 1.0 {
        (0.0, 0.0)
    } else {
        (rfm.x, rfm.t)
    };
    let year_weeks = 365.0 * DAY as f64 / WEEK as f64;
    // Yearly steps, each year discounted; with nothing to discount one step spans the horizon
    // (each step is a hypergeometric series, the costliest prediction there is).
    let step = if t.annual_discount_rate == 0.0 {
        years
    } else {
        1.0
    };
    let mut value = 0.0;
    let mut before = 0.0;
    let mut k = 1.0_f64;
    loop {
        let until = (k * step).min(years);
        let [cumulative] = bgnbd.expected_purchases_if_alive([until * year_weeks], x, age);
        value += (cumulative - before) * margin_per_order / (1.0 + t.annual_discount_rate).powf(k);
        if until >= years {
            return value;
        }
        before = cumulative;
        k += 1.0;
    }
}

/// Returns the silence after the last order at which the customer counts as lost, in seconds.
fn lost_after_secs(typical_days: Option<f64>, t: &Thresholds) -> i64 {
    let days = typical_days.map_or(t.lost_min_silence_days, |d| {
        (d * t.lost_interval_multiple).max(t.lost_min_silence_days)
    });
    (days * DAY as f64) as i64
}

/// Evaluates a customer at `now`.
pub fn evaluate(state: &CustomerState, now: Timestamp, model: &Model) -> Assessment {
    let t = &model.thresholds;
    let params = &model.params;
    let last12 = last_12_months(state, now);
    let margin_12m = last12
        .goods_margin
        .saturating_sub(i64::from(last12.contacts).saturating_mul(t.cost_per_contact));
    let typical = signals::typical_interval_days(state, t);
    let days_since_last_order = state.last_order_at.map(|l| now.days_since(l).max(0.0));

    let rfm = rfm_summary(state, now, t);
    let weeks = |days: f64| days * DAY as f64 / WEEK as f64;
    let (p_alive, [expected_purchases, expected_12m]) = match rfm {
        Some(s) => {
            let horizons = [weeks(t.expected_purchases_days), weeks(365.0)];
            let (p, e) = params.bgnbd.predict(horizons, s.x, s.t_x, s.t);
            (Some(p), e)
        }
        None => (None, [0.0, 0.0]),
    };

    // Expected margin of one future order: the Gamma-Gamma spend estimate times the customer's
    // own margin ratio, less the support cost the customer causes per order.
    let totals = &state.totals;
    let paid = totals.revenue - totals.discounts;
    let margin_per_order = match spend_summary(state) {
        Some(s) => {
            let spend = params
                .gamma_gamma
                .conditional_expected_spend(s.x, s.mean_spend);
            let goods_margin = paid - totals.cost_of_goods - totals.refunds;
            let ratio = (goods_margin as f64 / paid as f64).clamp(-1.0, 1.0);
            let contacts_per_order =
                f64::from(totals.support_contacts) / f64::from(totals.orders.max(1));
            spend * ratio - contacts_per_order * t.cost_per_contact as f64
        }
        None => 0.0,
    };
    let discount = 1.0 / (1.0 + t.annual_discount_rate);
    let clv = expected_12m * margin_per_order * discount;

    let risk_model = params.risk.for_horizon(t.risk_horizon_days);
    let (risk_score, reasons) = rfm.map_or((0.0, Vec::new()), |s| {
        let path = churn::path_given(state, now, s, typical, &params.bgnbd, t);
        risk_model.explain(&path, t)
    });
    let risk_level = RiskLevel::with_hysteresis(risk_score, state.risk_level, t);

    let retained = |years: f64| {
        rfm.map_or(0.0, |r| {
            retained_margin(&params.bgnbd, r, margin_per_order, years, t).max(0.0)
        })
    };
    // A repeat buyer's 12 months if it stays are the CLV undone of the dropout already in it
    // (dead customers buy nothing), which costs no further series; a one-time buyer is valued
    // at a new customer's expectation, and a nearly certain dropout directly, without dividing
    // by a tiny P(alive).
    let retained_12m = match (rfm, p_alive) {
        (Some(r), Some(p)) if r.x >= 1.0 && p >= 1e-3 => (clv / p).max(0.0),
        _ => retained(1.0),
    };
    let mut value_at_risk = (risk_score * retained_12m).round() as i64;

    let lost_after = lost_after_secs(typical, t);
    let silent_past_lost = state
        .last_order_at
        .is_some_and(|l| now.since(l) >= lost_after);
    // How long the risk has stood on its side of the high boundary: a core customer defects,
    // and a defector recovers, only once that has lasted `stage_confirm_days`.
    let confirm = confirm_secs(t);
    let side_since = risk_side_since(state, risk_level, now);
    let facts = StageFacts {
        orders: totals.orders,
        orders_12m: last12.orders,
        silent_past_lost,
        ordered_since_lost: state.stage == Stage::Lost
            && state
                .last_order_at
                .zip(state.stage_since)
                .is_some_and(|(l, since)| l > since),
        risk: risk_level,
        risk_held: side_since.is_none_or(|s| now.since(s) >= confirm),
        core_min_orders_12m: t.core_min_orders_12m,
    };
    let transition = stage::next_stage(state.stage, &facts);
    let (stage, stage_since) = match transition {
        None => (state.stage, state.stage_since.or(state.first_seen)),
        Some(tr) => {
            // The time the fact behind the move happened, not when it was noticed, so a replay
            // and a live run agree.
            let since = match tr.reason {
                TransitionReason::WentSilent => state.last_order_at.map(|l| l.plus(lost_after)),
                // When the evidence had lasted long enough, whenever the assessment noticed.
                TransitionReason::Defecting | TransitionReason::Recovered => Some(
                    side_since
                        .map(|s| s.plus(confirm))
                        .filter(|c| *c <= now)
                        .unwrap_or(now),
                ),
                _ => state.last_order_at,
            };
            (tr.to, since)
        }
    };
    // The lifetime horizon's series is the costliest prediction, and only a move to lost records
    // it.
    let lifetime_value = if transition.is_some_and(|tr| tr.to == Stage::Lost) {
        retained(t.lifetime_horizon_years)
    } else {
        0.0
    };
    if stage == Stage::Lost {
        // Nothing is at risk any more: the value is lost, and counted as such (the move to lost
        // records `retained_12m` and `lifetime_value`), so lost customers do not crowd the
        // at-risk lists of those who can still be kept.
        value_at_risk = 0;
    }

    Assessment {
        at: now,
        stage,
        transition,
        stage_since,
        risk_score,
        risk_level,
        previous_level: state.risk_level,
        reasons,
        p_alive,
        expected_purchases,
        clv_12m: clv.round() as i64,
        retained_12m: retained_12m.round() as i64,
        lifetime_value: lifetime_value.round() as i64,
        value_at_risk,
        margin_12m,
        revenue_12m: last12.revenue,
        orders_12m: last12.orders,
        contacts_12m: last12.contacts,
        value_tier: params.tiers.tier(margin_12m),
        divest: profit::is_divest_candidate(margin_12m, last12.contacts, last12.orders, t),
        days_since_last_order,
        typical_interval_days: typical,
        margin_breakdown: profit::MarginBreakdown::of(totals, t),
    }
}

/// Writes an assessment's decisions (stage, risk level and score) into the state and returns
/// what changed.
pub fn record(state: &mut CustomerState, a: &Assessment) -> Changes {
    let changes = Changes {
        risk: (a.risk_level != state.risk_level).then_some((state.risk_level, a.risk_level)),
        stage: a.transition,
    };
    if let Some(t) = a.transition {
        let h = &mut state.stage_history;
        h.push(StageChange {
            at: a.at,
            from: t.from,
            to: t.to,
            value_at_risk: a.value_at_risk,
            retained_12m: a.retained_12m,
            lifetime_value: a.lifetime_value,
        });
        h.retain(|c| c.at >= a.at.plus(-STAGE_HISTORY_SECS));
        if h.len() > MAX_STAGE_HISTORY {
            h.drain(..h.len() - MAX_STAGE_HISTORY);
        }
    }
    let standing = Standing {
        at: a.at,
        risk: a.risk_score as f32,
        silence: crate::campaign::silence_bucket(a.days_since_last_order, a.typical_interval_days),
        stage: a.stage,
        tier: a.value_tier,
    };
    // The customer's standing at an action is the first assessment at or after it.
    for m in &mut state.retention {
        if m.standing.is_none() && a.at >= m.at {
            m.level_at_action = a.risk_level;
            m.standing = Some(standing);
        }
    }
    let at_risk = a.risk_level >= RiskLevel::High;
    if at_risk && state.risk_level < RiskLevel::High {
        let e = &mut state.risk_episodes;
        e.push(RiskEpisode {
            since: a.at,
            standings: Vec::new(),
            ordered_again_at: None,
            left_risk_at: None,
        });
        if e.len() > MAX_RISK_EPISODES {
            e.remove(0);
        }
    }
    if at_risk
        && let Some(e) = state.risk_episodes.last_mut()
        && e.ordered_again_at.is_none()
        && e.left_risk_at.is_none()
        && a.at >= e.since
    {
        let cell = |s: &Standing| (crate::campaign::risk_band(f64::from(s.risk)), s.silence);
        if e.standings.len() < MAX_STANDINGS
            && e.standings
                .last()
                .is_none_or(|s| cell(s) != cell(&standing))
        {
            e.standings.push(standing);
        }
    }
    if !at_risk {
        if let Some(e) = state.risk_episodes.last_mut()
            && e.left_risk_at.is_none()
            && a.at >= e.since
        {
            e.left_risk_at = Some(a.at);
        }
        for m in &mut state.retention {
            if m.level_at_action >= RiskLevel::High && m.left_risk_at.is_none() && a.at >= m.at {
                m.left_risk_at = Some(a.at);
            }
        }
    }
    state.stage = a.stage;
    state.stage_since = a.stage_since;
    state.risk_level = a.risk_level;
    state.risk_score = a.risk_score as f32;
    state.last_assessed_at = Some(state.last_assessed_at.map_or(a.at, |l| l.max(a.at)));
    if changes.any() {
        state.changes += 1;
    }
    changes
}

/// Undoes the customer's latest stage move when a late order, placed at `order_at`, shows it
/// was made without it: a move to lost (when the order falls before the customer became lost;
/// one after it is a real reactivation) or to core defector, judged at a time after the order.
/// The stage goes back to the one the move left and the move leaves the history, so reports
/// no longer count it. Returns the correction (from the undone stage back), or `None` when
/// nothing is contradicted. Call it after applying the order and before assessing.
pub fn undo_move_contradicted_by(
    state: &mut CustomerState,
    order_at: Timestamp,
) -> Option<Transition> {
    let last = state.stage_history.last()?;
    let silence_made = match last.to {
        Stage::Lost => state.stage_since.is_none_or(|since| order_at < since),
        Stage::CoreDefector => true,
        _ => false,
    };
    if last.to != state.stage || last.at <= order_at || !silence_made {
        return None;
    }
    let undone = state.stage_history.pop()?;
    state.stage = undone.from;
    state.stage_since = state
        .stage_history
        .last()
        .map(|c| c.at)
        .or(state.first_order.as_ref().map(|o| o.at));
    Some(Transition {
        from: undone.to,
        to: undone.from,
        reason: TransitionReason::Corrected,
    })
}

/// Returns `stage_confirm_days` in seconds.
fn confirm_secs(t: &Thresholds) -> i64 {
    (t.stage_confirm_days * DAY as f64).round() as i64
}

/// Returns since when the customer's risk has stood on the side of the high boundary that
/// `risk_level` is on: `now` when this assessment crosses it, the start of the latest at-risk
/// spell while it stays high, the spell's end while it stays below; `None` when it was never
/// high (or a state kept no spell).
fn risk_side_since(
    state: &CustomerState,
    risk_level: RiskLevel,
    now: Timestamp,
) -> Option<Timestamp> {
    let high = risk_level >= RiskLevel::High;
    if high != (state.risk_level >= RiskLevel::High) {
        return Some(now);
    }
    let spell = state.risk_episodes.last()?;
    if high {
        Some(spell.since)
    } else {
        spell.left_risk_at
    }
}

/// How often an active customer is looked at again even when no threshold is near, so month
/// boundaries and the slow decay of P(alive) are noticed.
pub const MAX_EVALUATION_GAP_SECS: i64 = 7 * DAY;

/// Returns the next time silence alone could change this customer's assessment (overdue
/// starting or saturating, lost, a defection or recovery confirmed), at most [`MAX_EVALUATION_GAP_SECS`] ahead; `None` for
/// prospects and lost customers, whom only a new event can change.
pub fn next_evaluation_at(
    state: &CustomerState,
    now: Timestamp,
    model: &Model,
) -> Option<Timestamp> {
    let t = &model.thresholds;
    let last = state.last_order_at?;
    if state.stage == Stage::Lost {
        return None;
    }
    let typical = signals::typical_interval_days(state, t);
    let mut candidates = vec![last.plus(lost_after_secs(typical, t))];
    if let Some(d) = typical {
        for multiple in [t.overdue_start_multiple, t.overdue_full_multiple] {
            candidates.push(last.plus((d * multiple * DAY as f64).ceil() as i64));
        }
    }
    // A core customer's defection, or a defector's recovery, is due once its risk has held.
    let high = state.risk_level >= RiskLevel::High;
    if (state.stage == Stage::Core && high) || (state.stage == Stage::CoreDefector && !high) {
        let since = risk_side_since(state, state.risk_level, now);
        candidates.extend(since.map(|s| s.plus(confirm_secs(t))));
    }
    let soonest = candidates.into_iter().filter(|c| *c > now).min();
    let cap = now.plus(MAX_EVALUATION_GAP_SECS);
    Some(soonest.map_or(cap, |s| s.min(cap)))
}

/// Evaluates a customer at `now` and records the result: what a service does after every
/// batch and timer.
pub fn assess(state: &mut CustomerState, now: Timestamp, model: &Model) -> (Assessment, Changes) {
    let assessment = evaluate(state, now, model);
    let changes = record(state, &assessment);
    (assessment, changes)
}
