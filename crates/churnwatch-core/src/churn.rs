//! The churn-risk probability: the probability that a buyer places no order within the risk
//! horizon, defined for every customer who has ordered, one-time buyers included.
//!
//! The horizon is split into steps of about a month ([`Steps`]), and the model predicts one step
//! at a time: the probability of no order in the next step, given what the customer looks like
//! at its start. The probability of no order in the whole horizon is the product over the steps,
//! each seen from the customer as it will be if it stays silent until then (longer silence,
//! fading recent months): a discrete-time survival model. Its base is the BG/NBD probability of
//! no purchase in the step, which grows with silence and needs nothing but the purchase history
//! (the product of BG/NBD's step probabilities is exactly its probability over the horizon, so
//! the prior is BG/NBD itself). A logistic model combines that probability (through its
//! log-odds) with the recency and frequency of purchases and the seed signals (purchases
//! declining against the first months, average order value falling, a regular order overdue, a
//! habitual category dropped, refunds, support contacts).
//!
//! The model is fitted on the stream's own history, back-labelled: every customer's state is
//! rewound to the start of the latest month whose step has ended ([`rewind_to`]), its features
//! computed there, and labelled by whether it ordered in the step that followed. One step of
//! labels needs only a month of hindsight, so the model learns from the most recent behaviour
//! (a model fitted on whole horizons learns from customers as they were a horizon and more
//! ago: in backtests the ranking gained 0.002–0.019 ROC AUC from the change). Logistic regression is calibrated in-sample, so the score is a probability in the sense
//! a backtest can check. Before the first fit (too little history) the weights are those of the
//! BG/NBD probability alone.

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::btyd::{BgNbdParams, RfmSummary};
use crate::config::Thresholds;
use crate::signals::{self, Moment, ReasonCode, Signal};
use crate::state::{CustomerState, IntervalStats};
use crate::time::{DAY, MonthIndex, Timestamp, WEEK};

/// The number of inputs of the risk model.
pub const FEATURES: usize = 11;

/// The length the risk horizon's steps aim at, in days: about a month, the granularity of the
/// windows the features are computed from.
pub const STEP_TARGET_DAYS: f64 = 30.0;

/// How the risk horizon is split into the steps the model predicts one at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Steps {
    /// The number of steps (at least 1).
    pub count: u32,
    /// The length of each, in days.
    pub days: f64,
}

impl Steps {
    /// Returns the steps of a horizon: as many as make each closest to
    /// [`STEP_TARGET_DAYS`], of equal length (90 days: 3 of 30; 14 days: 1 of 14).
    pub fn of(horizon_days: f64) -> Self {
        let count = (horizon_days / STEP_TARGET_DAYS).round().max(1.0);
        Self {
            count: count as u32,
            days: horizon_days / count,
        }
    }

    fn secs(self) -> i64 {
        (self.days * DAY as f64).round() as i64
    }
}

/// The inputs of the risk model, in the order of [`Features::values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Log-odds of the BG/NBD probability of no purchase in the step.
    BgNbd,
    /// 1 for a customer with one purchase occasion.
    OneTime,
    /// ln(1 + days since the last order).
    Recency,
    /// ln((1 + days since the last order) / (1 + the customer's typical days between
    /// purchase occasions)); 0 for a one-time buyer: a regular order drying up, continuously.
    SilenceRatio,
    /// ln(purchase occasions).
    Frequency,
    /// Strength of `overdue`.
    Overdue,
    /// Strength of `purchase_decline`.
    PurchaseDecline,
    /// Strength of `aov_decline`.
    AovDecline,
    /// Strength of `category_drop`.
    CategoryDrop,
    /// ln(1 + refunds in the last 3 months).
    Refunds,
    /// ln(1 + support contacts in the last 3 months).
    Support,
}

impl Feature {
    /// Every feature, in order.
    pub const ALL: [Feature; FEATURES] = [
        Feature::BgNbd,
        Feature::OneTime,
        Feature::Recency,
        Feature::SilenceRatio,
        Feature::Frequency,
        Feature::Overdue,
        Feature::PurchaseDecline,
        Feature::AovDecline,
        Feature::CategoryDrop,
        Feature::Refunds,
        Feature::Support,
    ];

    /// Returns the snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Feature::BgNbd => "bgnbd_log_odds",
            Feature::OneTime => "one_time",
            Feature::Recency => "log_recency_days",
            Feature::SilenceRatio => "log_silence_ratio",
            Feature::Frequency => "log_occasions",
            Feature::Overdue => "overdue",
            Feature::PurchaseDecline => "purchase_decline",
            Feature::AovDecline => "aov_decline",
            Feature::CategoryDrop => "category_drop",
            Feature::Refunds => "log_refunds_3m",
            Feature::Support => "log_contacts_3m",
        }
    }

    /// Whether the feature describes the purchase history (recency, frequency, BG/NBD): these
    /// explain the probability together, as one reason.
    const fn is_history(self) -> bool {
        matches!(
            self,
            Feature::BgNbd
                | Feature::OneTime
                | Feature::Recency
                | Feature::SilenceRatio
                | Feature::Frequency
        )
    }
}

/// What the risk model sees of one customer at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// The inputs, indexed like [`Feature::ALL`].
    pub values: [f64; FEATURES],
    /// The BG/NBD probability of no purchase in the step.
    pub p_none_bgnbd: f64,
    /// BG/NBD P(alive).
    pub p_alive: f64,
    /// The signals that fired, with their sentences (effects not yet known).
    pub signals: Vec<Signal>,
    /// Days since the last order.
    pub days_silent: f64,
    /// Purchase occasions counted (repeat purchases + 1).
    pub occasions: f64,
}

/// Returns the model inputs of a customer at `now`, for the first step of the configured risk
/// horizon; `None` for a customer without orders.
pub fn features(
    state: &CustomerState,
    now: Timestamp,
    bgnbd: &BgNbdParams,
    t: &Thresholds,
) -> Option<Features> {
    let (s, typical) = history(state, now, t)?;
    let step = Steps::of(t.risk_horizon_days);
    Some(features_given(state, now, s, typical, bgnbd, t, step.days))
}

/// Returns what every step's features start from: the RFM summary at `now` and the typical
/// interval; `None` for a customer without orders.
fn history(
    state: &CustomerState,
    now: Timestamp,
    t: &Thresholds,
) -> Option<(RfmSummary, Option<f64>)> {
    let s = crate::assess::rfm_summary(state, now, t)?;
    Some((s, signals::typical_interval_days(state, t)))
}

/// Returns the model inputs at the start of every step of the configured risk horizon, the
/// customer staying silent meanwhile: the first at `now`; `None` for a customer without orders.
pub fn path(
    state: &CustomerState,
    now: Timestamp,
    bgnbd: &BgNbdParams,
    t: &Thresholds,
) -> Option<Vec<Features>> {
    let (s, typical) = history(state, now, t)?;
    Some(path_given(state, now, s, typical, bgnbd, t))
}

/// [`path`] for an RFM summary and typical interval already computed (as `evaluate` has).
pub(crate) fn path_given(
    state: &CustomerState,
    now: Timestamp,
    s: RfmSummary,
    typical: Option<f64>,
    bgnbd: &BgNbdParams,
    t: &Thresholds,
) -> Vec<Features> {
    let step = Steps::of(t.risk_horizon_days);
    (0..step.count)
        .map(|j| {
            let at = now.plus(i64::from(j) * step.secs());
            // Silent until then: the same purchases, an older customer.
            let later = RfmSummary {
                t: s.t + f64::from(j) * step.days * DAY as f64 / WEEK as f64,
                ..s
            };
            features_given(state, at, later, typical, bgnbd, t, step.days)
        })
        .collect()
}

/// The model inputs at `now` for a step of `step_days`, given the RFM summary and typical
/// interval at `now`.
fn features_given(
    state: &CustomerState,
    now: Timestamp,
    s: RfmSummary,
    typical: Option<f64>,
    bgnbd: &BgNbdParams,
    t: &Thresholds,
    step_days: f64,
) -> Features {
    let step_weeks = step_days * DAY as f64 / WEEK as f64;
    let p_alive = bgnbd.p_alive(s.x, s.t_x, s.t);
    let p_none = bgnbd.p_no_purchase(step_weeks, s.x, s.t_x, s.t);
    let days_silent = state
        .last_order_at
        .map_or(0.0, |l| now.days_since(l).max(0.0));
    let moment = Moment::from(now);
    let fired: Vec<Signal> = [
        signals::overdue_given(state, typical, &moment, t),
        signals::purchase_decline(state, &moment, t),
        signals::aov_decline(state, &moment, t),
        signals::category_drop(state, &moment, t),
    ]
    .into_iter()
    .flatten()
    .collect();
    let strength = |code: ReasonCode| {
        fired
            .iter()
            .find(|s| s.code == code)
            .map_or(0.0, |s| s.strength)
    };
    let (refunds, contacts) = state
        .months_between(moment.month.offset(-2), moment.month)
        .iter()
        .fold((0u32, 0u32), |(r, c), w| {
            (r + u32::from(w.refunds), c + u32::from(w.contacts))
        });
    let gap_days = typical.or_else(|| (s.x > 0.0).then(|| s.t_x * 7.0 / s.x));
    let silence_ratio = gap_days.map_or(0.0, |g| ((1.0 + days_silent) / (1.0 + g)).ln());
    let values = [
        log_odds(p_none),
        if s.x == 0.0 { 1.0 } else { 0.0 },
        days_silent.ln_1p(),
        silence_ratio,
        (s.x + 1.0).ln(),
        strength(ReasonCode::Overdue),
        strength(ReasonCode::PurchaseDecline),
        strength(ReasonCode::AovDecline),
        strength(ReasonCode::CategoryDrop),
        f64::from(refunds).ln_1p(),
        f64::from(contacts).ln_1p(),
    ];
    Features {
        values,
        p_none_bgnbd: p_none,
        p_alive,
        signals: fired,
        days_silent,
        occasions: s.x + 1.0,
    }
}

/// Probabilities are kept this far from 0 and 1 before taking log-odds.
const P_FLOOR: f64 = 1e-6;

fn log_odds(p: f64) -> f64 {
    let p = p.clamp(P_FLOOR, 1.0 - P_FLOOR);
    (p / (1.0 - p)).ln()
}

fn logistic(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The fitted logistic combination of the features: the probability of no order in one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskModel {
    /// The intercept, in log-odds.
    pub intercept: f64,
    /// One weight per feature, indexed like [`Feature::ALL`].
    pub weights: [f64; FEATURES],
    /// The features' mean over the customers it was fitted on: the reference a reason's
    /// effect on the history is measured from.
    pub reference: [f64; FEATURES],
    /// Back-labelled rows (a customer at the start of a step) it was fitted on; 0 for the
    /// prior (BG/NBD alone).
    pub samples: u32,
    /// The share of them that placed no order in the step.
    pub base_rate: f64,
    /// The horizon it was fitted for, in days; a different configured horizon falls back to
    /// the prior until the next fit.
    pub horizon_days: f64,
    /// The step it predicts, in days ([`Steps::of`] the horizon); 0 for a model stored before
    /// the horizon was split into steps, which falls back to the prior until the next fit.
    #[serde(default)]
    pub step_days: f64,
}

impl Default for RiskModel {
    /// Returns the prior: the BG/NBD probability of no purchase, unchanged.
    fn default() -> Self {
        let mut weights = [0.0; FEATURES];
        weights[0] = 1.0;
        Self {
            intercept: 0.0,
            weights,
            reference: [0.0; FEATURES],
            samples: 0,
            base_rate: 0.0,
            horizon_days: 0.0,
            step_days: 0.0,
        }
    }
}

impl RiskModel {
    /// Returns whether the model was fitted (rather than being the prior).
    pub fn is_fitted(&self) -> bool {
        self.samples > 0
    }

    /// Returns whether every number is finite.
    pub fn is_valid(&self) -> bool {
        self.intercept.is_finite()
            && self.weights.iter().all(|w| w.is_finite())
            && self.reference.iter().all(|w| w.is_finite())
    }

    /// Returns the model to use for a horizon: this one, or the prior when it was fitted for
    /// another horizon or its steps.
    pub fn for_horizon(&self, horizon_days: f64) -> RiskModel {
        let steps = Steps::of(horizon_days);
        if self.is_fitted()
            && ((self.horizon_days - horizon_days).abs() > 1e-9
                || (self.step_days - steps.days).abs() > 1e-9)
        {
            RiskModel::default()
        } else {
            *self
        }
    }

    fn linear(&self, values: &[f64; FEATURES]) -> f64 {
        self.intercept
            + self
                .weights
                .iter()
                .zip(values)
                .map(|(w, v)| w * v)
                .sum::<f64>()
    }

    /// Returns the probability of no order in one step, for the features at its start.
    pub fn step_probability(&self, f: &Features) -> f64 {
        logistic(self.linear(&f.values))
    }

    /// Returns the probability of no order in the horizon: the product of the steps' along a
    /// [`path`].
    pub fn probability(&self, path: &[Features]) -> f64 {
        path.iter().map(|f| self.step_probability(f)).product()
    }

    /// The probability along `path` with `shift(f)` taken off each step's log-odds.
    fn probability_without(&self, path: &[Features], shift: impl Fn(&Features) -> f64) -> f64 {
        path.iter()
            .map(|f| logistic(self.linear(&f.values) - shift(f)))
            .product()
    }

    /// Returns the probability of no order in the horizon along a [`path`] and the reasons
    /// behind it: each signal that fired at its start with how much it moved the probability
    /// (the probability less the one without it, at every step), and the purchase history
    /// (BG/NBD, recency, frequency) against the fitted population's mean, strongest first.
    /// Reasons that lower the probability are left out. An empty path has probability 0.
    pub fn explain(&self, path: &[Features], t: &Thresholds) -> (f64, Vec<Signal>) {
        let Some(f) = path.first() else {
            return (0.0, Vec::new());
        };
        let p = self.probability(path);
        let effect_of =
            |i: usize| p - self.probability_without(path, |g| self.weights[i] * g.values[i]);
        let mut reasons: Vec<Signal> = Vec::new();
        for s in &f.signals {
            let i = match s.code {
                ReasonCode::Overdue => Feature::Overdue,
                ReasonCode::PurchaseDecline => Feature::PurchaseDecline,
                ReasonCode::AovDecline => Feature::AovDecline,
                ReasonCode::CategoryDrop => Feature::CategoryDrop,
                _ => continue,
            } as usize;
            let effect = effect_of(i);
            if effect >= 0.0 {
                reasons.push(Signal {
                    effect,
                    ..s.clone()
                });
            }
        }
        for (i, code) in [
            (Feature::Refunds as usize, ReasonCode::Refunds),
            (Feature::Support as usize, ReasonCode::SupportContacts),
        ] {
            if f.values[i] > 0.0 {
                let effect = effect_of(i);
                if effect > 0.0 {
                    reasons.push(Signal {
                        code,
                        strength: 1.0,
                        observed: f.values[i].exp_m1().round(),
                        baseline: 3.0,
                        category: None,
                        effect,
                    });
                }
            }
        }
        // The history against the mean customer the model was fitted on (the prior's
        // reference is the log-odds 0, an even chance).
        let history_shift = |g: &Features| -> f64 {
            Feature::ALL
                .iter()
                .filter(|k| k.is_history())
                .map(|k| {
                    self.weights[*k as usize]
                        * (g.values[*k as usize] - self.reference[*k as usize])
                })
                .sum()
        };
        let effect = p - self.probability_without(path, history_shift);
        if effect > 0.0 {
            let history = if f.occasions <= 1.0 {
                Signal {
                    code: ReasonCode::NoRepeat,
                    strength: 1.0,
                    observed: f.days_silent,
                    baseline: t.risk_horizon_days,
                    category: None,
                    effect,
                }
            } else {
                Signal {
                    code: ReasonCode::LowPAlive,
                    strength: 1.0,
                    observed: f.p_alive,
                    baseline: f.days_silent,
                    category: None,
                    effect,
                }
            };
            reasons.push(history);
        }
        reasons.sort_by(|a, b| b.effect.total_cmp(&a.effect).then(a.code.cmp(&b.code)));
        (p, reasons)
    }
}

/// The previous scoring rule (before the calibrated probability), kept as a baseline for
/// backtests: 1 − Π(1 − weight × strength) over the signals that fire, `low_p_alive` included,
/// and 0 for a customer with a single order.
pub fn legacy_score(
    state: &CustomerState,
    now: Timestamp,
    bgnbd: &BgNbdParams,
    t: &Thresholds,
) -> f64 {
    if state.totals.orders == 0 {
        return 0.0;
    }
    let moment = Moment::from(now);
    let typical = signals::typical_interval_days(state, t);
    let p_alive = crate::assess::rfm_summary(state, now, t).map(|s| bgnbd.p_alive(s.x, s.t_x, s.t));
    let weighted = [
        (signals::overdue_given(state, typical, &moment, t), 0.85),
        (signals::purchase_decline(state, &moment, t), 0.6),
        (signals::aov_decline(state, &moment, t), 0.45),
        (signals::category_drop(state, &moment, t), 0.3),
        (signals::low_p_alive(p_alive, t), 0.8),
    ];
    let keep: f64 = weighted
        .iter()
        .filter_map(|(s, w)| s.as_ref().map(|s| 1.0 - w * s.strength))
        .product();
    (1.0 - keep).clamp(0.0, 1.0)
}

/// Returns the customer's state as it was at the start of `month`, as far as the state can
/// tell: what the risk model's features need. `None` when the customer had not ordered by then.
///
/// Exact for everything kept per month (orders, purchase occasions, money, contacts, refunds,
/// categories) within the windows' span. The order times before the month are those among the
/// most recent ones kept; when all of those are later, the last order before the month is
/// dated to the last day with an order in the windows. Lifetime costs of goods and refund
/// amounts are not rewound (no feature uses them).
pub fn rewind_to(state: &CustomerState, month: MonthIndex) -> Option<CustomerState> {
    let cut = month.start();
    if state.first_order.as_ref()?.at >= cut {
        return None;
    }
    let mut s = state.clone();
    let keep = s.months.partition_point(|w| w.month < month);
    for w in s.months.drain(keep..) {
        let t = &mut s.totals;
        t.orders = t.orders.saturating_sub(u32::from(w.orders));
        t.occasions = t.occasions.saturating_sub(w.occasions());
        t.revenue -= w.revenue;
        t.discounts -= w.discounts;
        t.refund_count = t.refund_count.saturating_sub(u32::from(w.refunds));
        t.support_contacts = t.support_contacts.saturating_sub(u32::from(w.contacts));
    }
    s.totals.orders = s.totals.orders.max(1);
    s.totals.occasions = s.totals.occasions.max(1);
    s.recent_orders.retain(|t| *t < cut);
    s.intervals = IntervalStats::of(&s.recent_orders);
    let first_at = s.first_order.as_ref().map(|f| f.at);
    s.last_order_at = s
        .recent_orders
        .last()
        .copied()
        .or_else(|| {
            s.months.iter().rev().find(|w| w.order_days != 0).map(|w| {
                // Bit d stands for day d + 1 of the month: the day starts d days in.
                let last_bit = 31 - i64::from(w.order_days.leading_zeros());
                w.month.start().plus(last_bit * DAY)
            })
        })
        .or(first_at)
        .map(|l| first_at.map_or(l, |f| l.max(f)));
    if let Some(first) = s.first_order.as_ref().map(|f| f.at.month()) {
        for (i, n) in s.early_months.iter_mut().enumerate() {
            if first.offset(i as i32) >= month {
                *n = 0;
            }
        }
    }
    s.last_event_at = s.last_event_at.map(|l| l.min(cut));
    s.retention.retain(|r| r.at < cut);
    Some(s)
}

/// Returns whether the customer ordered in `[from, to)`, judged by the days with orders kept in
/// the windows (exact for day-aligned bounds within their span).
pub fn ordered_between(state: &CustomerState, from: Timestamp, to: Timestamp) -> bool {
    state
        .months_between(from.month(), to.plus(-1).month())
        .iter()
        .any(|w| {
            let start = w.month.start();
            (0..31).any(|d| {
                let day = start.plus(d * DAY);
                w.order_days & (1 << d) != 0 && day.plus(DAY) > from && day < to
            })
        })
}

/// Back-labelled rows at most kept for one fit; beyond it a deterministic sample by customer id
/// is kept (every row of a customer kept), so the fit's cost is bounded whatever the population.
pub const MAX_TRAINING_ROWS: usize = 200_000;

/// The fewest back-labelled rows, and of each outcome, that a fit needs.
pub const MIN_TRAINING_ROWS: usize = 200;
/// See [`MIN_TRAINING_ROWS`].
pub const MIN_TRAINING_PER_CLASS: usize = 20;

/// The month starts a fit rewinds customers to: the latest one whose step has ended. Measured
/// against the last horizon's worth (three origins for 90 days) with `churnwatch backtest` on
/// four archetype histories (seeds 7, 13, 21, 29) at three cut-offs each: the same ranking
/// (ROC AUC within ±0.003) and a lower calibration error at 9 of the 12 cut-offs, since older
/// months describe customers as they were further from the time scored.
pub const TRAINING_ORIGINS: usize = 1;

/// One back-labelled row: a customer's state at the start of a step, and whether it stayed
/// silent through the step.
#[derive(Debug, Clone)]
struct Row {
    key: u64,
    at: Timestamp,
    state: CustomerState,
    silent: bool,
}

/// The back-labelled history of a population, gathered one customer at a time.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// The months whose starts the customers are rewound to, latest first.
    origins: Vec<MonthIndex>,
    step: Steps,
    rows: Vec<Row>,
    keep_below: u64,
}

/// Why the risk model was not fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RiskFitError {
    /// Too little back-labelled history.
    #[error(
        "too little history to fit the risk model: {rows} customer-months from the starts of {origins} (needed {MIN_TRAINING_ROWS}), {silent} of them stayed silent and {ordered} ordered in the {step_days:.0} days after (needed {MIN_TRAINING_PER_CLASS} each)"
    )]
    TooLittleHistory {
        /// The months the customers were rewound to.
        origins: String,
        /// The step the rows were labelled by, in days.
        step_days: f64,
        /// Rows labelled (customers at a month start who had ordered by then).
        rows: usize,
        /// Of them, silent over the step.
        silent: usize,
        /// Of them, ordering in the step.
        ordered: usize,
    },
    /// No customer was looked at.
    #[error("no customers to fit the risk model on")]
    NoCustomers,
    /// The optimiser failed.
    #[error("the risk model's optimiser failed: {0}")]
    Solver(String),
}

impl TrainingSet {
    /// Returns an empty set for a fit at `now`: customers are rewound to the starts of the
    /// latest [`TRAINING_ORIGINS`] months whose following step ended by `now`, and each labelled
    /// by the step after it.
    pub fn new(now: Timestamp, t: &Thresholds) -> Self {
        let step = Steps::of(t.risk_horizon_days);
        let origins = (1..)
            .map(|k| now.month().offset(-k))
            .filter(|m| m.start().plus(step.secs()) <= now)
            .take(TRAINING_ORIGINS)
            .collect();
        Self {
            origins,
            step,
            rows: Vec::new(),
            keep_below: u64::MAX,
        }
    }

    /// Adds one customer: a row for every origin by which it had ordered.
    pub fn add(&mut self, state: &CustomerState) {
        let key = xxh3_64(state.customer_id.as_bytes());
        if key > self.keep_below {
            return;
        }
        for month in &self.origins {
            let Some(rewound) = rewind_to(state, *month) else {
                // Not a customer yet then, nor at any earlier origin.
                break;
            };
            let at = month.start();
            let silent = !ordered_between(state, at, at.plus(self.step.secs()));
            self.rows.push(Row {
                key,
                at,
                state: rewound,
                silent,
            });
        }
        if self.rows.len() > 2 * MAX_TRAINING_ROWS {
            self.keep_below /= 2;
            let limit = self.keep_below;
            self.rows.retain(|r| r.key <= limit);
        }
    }

    /// Returns the rows labelled so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Returns whether no row was labelled.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Fits the risk model with the BG/NBD parameters to be used alongside it.
    pub fn fit(&self, bgnbd: &BgNbdParams, t: &Thresholds) -> Result<RiskModel, RiskFitError> {
        let data: Vec<([f64; FEATURES], bool)> = self
            .rows
            .iter()
            .filter_map(|r| {
                let (s, typical) = history(&r.state, r.at, t)?;
                let f = features_given(&r.state, r.at, s, typical, bgnbd, t, self.step.days);
                Some((f.values, r.silent))
            })
            .collect();
        let silent = data.iter().filter(|(_, s)| *s).count();
        let ordered = data.len() - silent;
        if data.len() < MIN_TRAINING_ROWS
            || silent < MIN_TRAINING_PER_CLASS
            || ordered < MIN_TRAINING_PER_CLASS
        {
            let origins = match (self.origins.last(), self.origins.first()) {
                (Some(first), Some(last)) if first != last => format!("{first} to {last}"),
                (Some(only), _) => only.to_string(),
                _ => "no month".to_owned(),
            };
            return Err(RiskFitError::TooLittleHistory {
                origins,
                step_days: self.step.days,
                rows: data.len(),
                silent,
                ordered,
            });
        }
        let mut model = fit_logistic(&data)?;
        model.horizon_days = t.risk_horizon_days;
        model.step_days = self.step.days;
        Ok(model)
    }
}

/// L2 penalty on the standardised weights (not the intercept), per customer.
const RIDGE: f64 = 1e-3;

/// Mean log-loss of a logistic model over standardised features, with its gradient.
struct LogLoss<'a> {
    x: &'a [[f64; FEATURES]],
    y: &'a [bool],
}

impl LogLoss<'_> {
    fn cost_and_gradient(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let n = self.x.len() as f64;
        let mut cost = 0.0;
        let mut grad = vec![0.0; FEATURES + 1];
        for (x, y) in self.x.iter().zip(self.y) {
            let z = theta[0] + x.iter().zip(&theta[1..]).map(|(a, b)| a * b).sum::<f64>();
            // log(1 + e^z) − y z, computed without overflow.
            let softplus = if z > 0.0 {
                z + (-z).exp().ln_1p()
            } else {
                z.exp().ln_1p()
            };
            cost += softplus - if *y { z } else { 0.0 };
            let residual = logistic(z) - if *y { 1.0 } else { 0.0 };
            grad[0] += residual;
            for (g, v) in grad[1..].iter_mut().zip(x) {
                *g += residual * v;
            }
        }
        cost /= n;
        grad.iter_mut().for_each(|g| *g /= n);
        for (g, w) in grad[1..].iter_mut().zip(&theta[1..]) {
            cost += 0.5 * RIDGE * w * w;
            *g += RIDGE * w;
        }
        (cost, grad)
    }
}

impl CostFunction for LogLoss<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, theta: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.cost_and_gradient(theta).0)
    }
}

impl Gradient for LogLoss<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.cost_and_gradient(theta).1)
    }
}

/// Fits a ridge-penalised logistic regression of "silent" on the features with L-BFGS, on
/// standardised features, and returns it on the raw scale.
fn fit_logistic(data: &[([f64; FEATURES], bool)]) -> Result<RiskModel, RiskFitError> {
    let n = data.len() as f64;
    let mut mean = [0.0; FEATURES];
    for (x, _) in data {
        for (m, v) in mean.iter_mut().zip(x) {
            *m += v / n;
        }
    }
    let mut sd = [0.0; FEATURES];
    for (x, _) in data {
        for ((s, v), m) in sd.iter_mut().zip(x).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    // A constant feature carries nothing; its weight stays 0.
    let sd = sd.map(|v| if v > 1e-12 { v.sqrt() } else { f64::INFINITY });
    let x: Vec<[f64; FEATURES]> = data
        .iter()
        .map(|(x, _)| std::array::from_fn(|i| (x[i] - mean[i]) / sd[i]))
        .collect();
    let y: Vec<bool> = data.iter().map(|(_, y)| *y).collect();
    let base_rate = y.iter().filter(|v| **v).count() as f64 / n;
    let mut start = vec![0.0; FEATURES + 1];
    start[0] = log_odds(base_rate);
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7)
        .with_tolerance_grad(1e-9)
        .and_then(|s| s.with_tolerance_cost(1e-13))
        .map_err(|e| RiskFitError::Solver(e.to_string()))?;
    let result = Executor::new(LogLoss { x: &x, y: &y }, solver)
        .configure(|s| s.param(start).max_iters(500))
        .run()
        .map_err(|e| RiskFitError::Solver(e.to_string()))?;
    let theta = result
        .state()
        .get_best_param()
        .cloned()
        .ok_or_else(|| RiskFitError::Solver("no parameters".into()))?;
    let weights: [f64; FEATURES] = std::array::from_fn(|i| theta[i + 1] / sd[i]);
    let intercept = theta[0] - weights.iter().zip(&mean).map(|(w, m)| w * m).sum::<f64>();
    let model = RiskModel {
        intercept,
        weights,
        reference: mean,
        samples: data.len() as u32,
        base_rate,
        horizon_days: 0.0,
        step_days: 0.0,
    };
    if !model.is_valid() {
        return Err(RiskFitError::Solver("non-finite weights".into()));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn the_prior_is_the_bgnbd_probability_itself() {
        let m = RiskModel::default();
        let mut values = [0.0; FEATURES];
        values[0] = log_odds(0.8);
        values[4] = 1.0;
        let f = Features {
            values,
            p_none_bgnbd: 0.8,
            p_alive: 0.9,
            signals: vec![],
            days_silent: 30.0,
            occasions: 3.0,
        };
        assert!((m.step_probability(&f) - 0.8).abs() < 1e-12);
        assert!((m.probability(&[f.clone(), f]) - 0.64).abs() < 1e-12);
        assert_eq!(m.probability(&[]), 1.0);
        assert_eq!(m.explain(&[], &Thresholds::default()).0, 0.0);
    }

    #[test]
    fn a_horizon_splits_into_steps_of_about_a_month() {
        for (horizon, count, days) in [
            (90.0, 3, 30.0),
            (14.0, 1, 14.0),
            (44.0, 1, 44.0),
            (46.0, 2, 23.0),
        ] {
            assert_eq!(Steps::of(horizon), Steps { count, days }, "{horizon} days");
        }
        let year = Steps::of(365.0);
        assert_eq!(year.count, 12);
        assert!((year.days * 12.0 - 365.0).abs() < 1e-9);
    }

    #[test]
    fn the_prior_along_the_steps_is_bgnbd_over_the_whole_horizon() {
        // Silent through each step, a customer is older with the same purchases, and BG/NBD's
        // step probabilities multiply to its probability over the horizon (the chain rule).
        let t = Thresholds::default();
        let bgnbd = BgNbdParams {
            r: 0.4,
            alpha: 5.0,
            a: 0.9,
            b: 2.5,
        };
        let mut state = CustomerState::new("c");
        let t0 = Timestamp(1_704_067_200);
        for (n, day) in [0, 20, 45, 70].into_iter().enumerate() {
            crate::state::apply(
                &mut state,
                &crate::event::Event {
                    event_id: format!("e{n}"),
                    customer_id: "c".into(),
                    occurred_at: t0.plus(day * DAY),
                    kind: crate::event::EventKind::Order(crate::event::Order {
                        order_id: format!("o{n}"),
                        total: 2_000,
                        discount: 0,
                        cost: None,
                        items: vec![],
                        channel: None,
                        original_currency: Default::default(),
                        original_total: 2_000,
                    }),
                },
            );
        }
        let now = t0.plus(110 * DAY);
        let path = path(&state, now, &bgnbd, &t).unwrap();
        assert_eq!(path.len(), 3);
        assert!(path[1].days_silent > path[0].days_silent);
        let s = crate::assess::rfm_summary(&state, now, &t).unwrap();
        let whole = bgnbd.p_no_purchase(90.0 / 7.0, s.x, s.t_x, s.t);
        let p = RiskModel::default().probability(&path);
        assert!((p - whole).abs() < 1e-9, "{p} vs {whole}");
    }

    #[test]
    fn training_rows_start_at_the_months_of_the_last_horizon() {
        let t = Thresholds::default();
        let mid = Timestamp(1_704_067_200 + 200 * DAY); // 2024-07-19
        let set = TrainingSet::new(mid, &t);
        let names: Vec<String> = set.origins.iter().map(|m| m.to_string()).collect();
        assert_eq!(names, ["2024-06"]);
        // On the 1st the month before has only just ended: with 30-day steps, a 31-day month's
        // start is a whole step back, and a 30-day month's start too.
        let first = Timestamp(1_704_067_200).month().offset(7).start(); // 2024-08-01
        let names: Vec<String> = TrainingSet::new(first, &t)
            .origins
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(names, ["2024-07"]);
        let march = Timestamp(1_704_067_200).month().offset(2).start(); // 2024-03-01, after February
        let names: Vec<String> = TrainingSet::new(march, &t)
            .origins
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(names, ["2024-01"]);
    }

    #[test]
    fn logistic_regression_recovers_known_weights() {
        // y ~ Bernoulli(σ(−0.5 + 2 x0 − 1 x4)), x0 and x4 standard normal-ish.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let data: Vec<([f64; FEATURES], bool)> = (0..20_000)
            .map(|_| {
                let mut x = [0.0; FEATURES];
                x[0] = rng.random::<f64>() * 4.0 - 2.0;
                x[4] = rng.random::<f64>() * 4.0 - 2.0;
                x[FEATURES - 1] = 1.0; // constant: ignored
                let p = logistic(-0.5 + 2.0 * x[0] - 1.0 * x[4]);
                (x, rng.random::<f64>() < p)
            })
            .collect();
        let m = fit_logistic(&data).unwrap();
        assert!((m.weights[0] - 2.0).abs() < 0.1, "{m:?}");
        assert!((m.weights[4] + 1.0).abs() < 0.1, "{m:?}");
        assert!((m.intercept + 0.5).abs() < 0.1, "{m:?}");
        assert_eq!(m.weights[FEATURES - 1], 0.0);
        // Calibrated in the large: the mean prediction equals the base rate.
        let mean_p: f64 =
            data.iter().map(|(x, _)| logistic(m.linear(x))).sum::<f64>() / data.len() as f64;
        assert!(
            (mean_p - m.base_rate).abs() < 1e-3,
            "{mean_p} vs {}",
            m.base_rate
        );
    }
}

#[cfg(test)]
mod rewind_tests {
    use super::*;
    use crate::assess::Model;
    use crate::event::{Event, EventKind, Order};
    use crate::money::CurrencyCode;
    use crate::state::apply;

    const T0: i64 = 1_704_067_200; // 2024-01-01

    fn order(n: u32, day: f64, total: i64, category: &str) -> Event {
        Event {
            event_id: format!("e{n}"),
            customer_id: "c".into(),
            occurred_at: Timestamp(T0 + (day * DAY as f64) as i64),
            kind: EventKind::Order(Order {
                order_id: format!("o{n}"),
                total,
                discount: 0,
                cost: Some(total / 2),
                items: vec![crate::event::Item {
                    sku: "s".into(),
                    category: Some(category.into()),
                    quantity: 1,
                    unit_price: total,
                }],
                channel: None,
                original_currency: CurrencyCode::default(),
                original_total: total,
            }),
        }
    }

    #[test]
    fn a_rewound_state_has_the_features_of_the_state_at_that_time() {
        let t = Thresholds::default();
        let bgnbd = BgNbdParams::default();
        // Orders every 9 days for 400 days, with a category dropped and the basket shrinking
        // late: the features at the cut exercise every signal.
        let events: Vec<Event> = (0..45)
            .map(|n| {
                let day = f64::from(n) * 9.0 + 0.3;
                let category = if n % 3 == 0 && n < 25 {
                    "tea"
                } else {
                    "coffee"
                };
                order(n, day, 4_000 - i64::from(n) * 50, category)
            })
            .collect();
        for cut_month in [3, 6, 9, 11, 13] {
            let month = Timestamp(T0).month().offset(cut_month);
            let cut = month.start();
            let mut full = CustomerState::new("c");
            let mut before = CustomerState::new("c");
            for e in &events {
                apply(&mut full, e);
                if e.occurred_at < cut {
                    apply(&mut before, e);
                }
            }
            let rewound = rewind_to(&full, month).expect("ordered before the cut");
            let want = features(&before, cut, &bgnbd, &t).unwrap();
            let got = features(&rewound, cut, &bgnbd, &t).unwrap();
            // Exact while the recent order times kept reach back before the cut; otherwise the
            // last order is dated to its day and the cadence is unknown.
            let exact = full.recent_orders.first().is_some_and(|o| *o < cut);
            let tolerance = if exact { 1e-9 } else { 0.05 };
            for (i, f) in Feature::ALL.iter().enumerate() {
                if !exact
                    && matches!(
                        f,
                        Feature::Recency | Feature::SilenceRatio | Feature::Overdue
                    )
                {
                    continue;
                }
                assert!(
                    (want.values[i] - got.values[i]).abs() < tolerance,
                    "month {cut_month}: {} {} vs {}",
                    f.as_str(),
                    got.values[i],
                    want.values[i]
                );
            }
            // The label: an order within the 90 days after the cut.
            let horizon_end = cut.plus(90 * DAY);
            let truth = events
                .iter()
                .any(|e| e.occurred_at >= cut && e.occurred_at < horizon_end);
            assert_eq!(ordered_between(&full, cut, horizon_end), truth);
        }
        assert!(rewind_to(&CustomerState::new("c"), Timestamp(T0).month()).is_none());
    }

    #[test]
    fn a_population_fit_learns_the_risk_model_from_its_own_history() {
        // Half the customers order every 12 days throughout; the other half stop after 6
        // months. A year in, the back-labelled history tells them apart.
        let mut training = TrainingSet::new(Timestamp(T0 + 365 * DAY), &Thresholds::default());
        let mut n = 0;
        for c in 0..400u32 {
            let mut s = CustomerState::new(format!("c{c}"));
            let stops = c % 2 == 0;
            let start = f64::from(c % 30);
            let mut day = start;
            while day < if stops { 180.0 + start } else { 365.0 } {
                n += 1;
                let mut e = order(n, day, 3_000, "tea");
                e.customer_id = s.customer_id.clone();
                apply(&mut s, &e);
                day += 12.0;
            }
            training.add(&s);
        }
        // A row for the month before: every customer had ordered by then.
        assert_eq!(training.len(), 400);
        let model = Model::default();
        let fitted = training
            .fit(&model.params.bgnbd, &model.thresholds)
            .expect("enough history");
        assert!(fitted.is_fitted() && fitted.is_valid());
        assert_eq!(fitted.horizon_days, 90.0);
        assert_eq!(fitted.step_days, 30.0);
        assert_eq!(fitted.for_horizon(90.0), fitted);
        assert_eq!(fitted.for_horizon(60.0), RiskModel::default());
        // A model stored before steps (step 0) is not used for a horizon split into steps.
        let unstepped = RiskModel {
            step_days: 0.0,
            ..fitted
        };
        assert_eq!(unstepped.for_horizon(90.0), RiskModel::default());
        assert!((fitted.base_rate - 0.5).abs() < 0.05, "{fitted:?}");
        // Too little history is an error naming what is missing.
        let empty = TrainingSet::new(Timestamp(T0), &Thresholds::default());
        let err = empty
            .fit(&model.params.bgnbd, &model.thresholds)
            .unwrap_err();
        assert!(err.to_string().contains("too little history"), "{err}");
    }
}
