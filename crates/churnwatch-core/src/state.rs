//! `CustomerState`: everything the core remembers about one customer, bounded in size whatever
//! the customer sends, and `apply`, which folds one event into it.
//!
//! `apply` is order-insensitive: the same set of events in any order gives the same state
//! (within the limits documented on the constants below). That is what lets a replay, a
//! redelivery after a crash and a live run agree.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::event::{Event, EventKind, Order};
use crate::profit::ValueTier;
use crate::risk::RiskLevel;
use crate::stage::Stage;
use crate::time::{DAY, MonthIndex, Timestamp};

/// Version of the state layout; bumped on every incompatible change.
pub const SCHEMA_VERSION: u16 = 5;
/// Calendar months kept in the rolling windows.
pub const WINDOW_MONTHS: i32 = 24;
/// Distinct named categories tracked per customer; further ones are counted as [`OTHER_CATEGORY`].
/// Beyond this many, which names are kept depends on arrival order.
pub const MAX_CATEGORIES: usize = 16;
// Category indices, "(other)" included, must fit the u32 mask `apply_order` counts them with.
const _: () = assert!(MAX_CATEGORIES < 32);
/// The name under which categories past [`MAX_CATEGORIES`] are counted.
pub const OTHER_CATEGORY: &str = "(other)";
/// Most recent order times kept for the purchase-interval statistics.
pub const RECENT_ORDERS: usize = 16;
/// Event ids remembered for de-duplication, at most.
pub const MAX_SEEN_EVENTS: usize = 32;
/// How far behind the newest event a duplicate is still recognised by the state itself, in
/// seconds. Older redeliveries are caught by the store's event-id index; the allowed lateness of
/// a service must not exceed this horizon.
pub const DEDUP_HORIZON_SECS: i64 = 14 * DAY;
/// Categories remembered from the first order.
pub const MAX_FIRST_CATEGORIES: usize = 5;
/// Retention actions remembered per customer (the newest), each with its outcome.
pub const MAX_RETENTION_MARKS: usize = 8;

/// At-risk spells kept per customer (the latest ones).
pub const MAX_RISK_EPISODES: usize = 6;

/// Standings kept per at-risk spell (the first ones).
pub const MAX_STANDINGS: usize = 12;
/// Stage changes remembered per customer (the newest), enough for reports over 24 months.
pub const MAX_STAGE_HISTORY: usize = 32;
/// How far back stage changes are remembered, in seconds (25 months of 31 days).
pub const STAGE_HISTORY_SECS: i64 = 25 * 31 * DAY;

/// What `apply` did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event changed the state.
    Applied,
    /// The event id was seen before; nothing changed.
    Duplicate,
    /// The event is for another customer; nothing changed.
    WrongCustomer,
}

/// Lifetime counts and sums. Money in minor units of the reporting currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Orders placed.
    pub orders: u32,
    /// Purchase occasions: distinct UTC days with at least one order (what the BTYD models
    /// count by default). Exact within the [`WINDOW_MONTHS`] the windows span; an order dated
    /// before them counts as an occasion of its own.
    pub occasions: u32,
    /// Revenue before discounts (order totals plus discounts).
    pub revenue: i64,
    /// Discounts granted.
    pub discounts: i64,
    /// Cost of goods sold, where the shop sent it.
    pub cost_of_goods: i64,
    /// Money refunded.
    pub refunds: i64,
    /// Refunds issued.
    pub refund_count: u32,
    /// Support contacts.
    pub support_contacts: u32,
    /// Minutes of support handling time.
    pub support_minutes: u32,
    /// Retention actions received.
    pub retention_actions: u32,
}

/// One calendar month of a customer's activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthWindow {
    /// The month.
    pub month: MonthIndex,
    /// Orders placed.
    pub orders: u16,
    /// Revenue before discounts.
    pub revenue: i64,
    /// Discounts granted.
    pub discounts: i64,
    /// Revenue − cost of goods − discounts − refunds (support cost is added at evaluation,
    /// where its price is known).
    pub goods_margin: i64,
    /// Support contacts.
    pub contacts: u16,
    /// Refunds issued.
    pub refunds: u16,
    /// The days of the month (bit 0 = the 1st) with at least one order.
    pub order_days: u32,
    /// Orders containing each category, as (index into `CustomerState::categories`, orders),
    /// sorted by index.
    pub categories: Vec<(u8, u16)>,
}

impl MonthWindow {
    fn new(month: MonthIndex) -> Self {
        Self {
            month,
            orders: 0,
            revenue: 0,
            discounts: 0,
            goods_margin: 0,
            contacts: 0,
            refunds: 0,
            order_days: 0,
            categories: Vec::new(),
        }
    }

    /// Returns the purchase occasions of the month: the days with at least one order.
    pub fn occasions(&self) -> u32 {
        self.order_days.count_ones()
    }

    /// Returns what customers paid this month (revenue after discounts).
    pub fn paid(&self) -> i64 {
        self.revenue - self.discounts
    }

    /// Returns the orders of the month containing the category with this index.
    pub fn category_orders(&self, index: u8) -> u16 {
        self.categories
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |(_, n)| *n)
    }
}

/// Statistics of the gaps between the recent orders; gaps under a day are one shopping trip,
/// not a cadence, and are left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalStats {
    /// Gaps of at least a day between consecutive recent orders.
    pub gaps: u8,
    /// Their median, in seconds.
    pub median_gap_secs: i64,
    /// Their mean, in seconds.
    pub mean_gap_secs: i64,
}

impl IntervalStats {
    /// Returns the statistics of the gaps between `recent` order times (sorted).
    pub fn of(recent: &[Timestamp]) -> Self {
        let mut gaps = [0i64; RECENT_ORDERS];
        let mut n = 0;
        for pair in recent.windows(2) {
            let gap = pair[1].since(pair[0]);
            if gap >= DAY {
                gaps[n] = gap;
                n += 1;
            }
        }
        if n == 0 {
            return Self::default();
        }
        let gaps = &mut gaps[..n];
        gaps.sort_unstable();
        let median = if n % 2 == 1 {
            gaps[n / 2]
        } else {
            (gaps[n / 2 - 1] + gaps[n / 2]) / 2
        };
        Self {
            gaps: n as u8,
            median_gap_secs: median,
            mean_gap_secs: gaps.iter().sum::<i64>() / n as i64,
        }
    }
}

/// How the customer was acquired: the earliest signup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signup {
    /// When the customer signed up.
    pub at: Timestamp,
    /// Acquisition source, when known.
    pub source: Option<String>,
    key: u64,
}

/// The customer's first order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstOrder {
    /// When it was placed.
    pub at: Timestamp,
    /// Where it was placed.
    pub channel: Option<String>,
    /// Its categories, sorted, at most [`MAX_FIRST_CATEGORIES`].
    pub categories: Vec<String>,
    key: u64,
}

/// A retention action aimed at the customer, and what followed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionMark {
    /// When it happened.
    pub at: Timestamp,
    /// What was done.
    pub action: String,
    /// Its campaign, when any.
    pub campaign: Option<String>,
    /// The customer's risk level when the action was taken: the state's last decision until
    /// the first assessment at or after the action, that assessment's from then on.
    pub level_at_action: RiskLevel,
    /// The customer's standing at the first assessment at or after the action (filled in by
    /// [`crate::assess::record`]): what it is matched to untargeted customers on.
    pub standing: Option<Standing>,
    /// The first order after the action. Exact when the action arrives before the orders after
    /// it or with at most [`RECENT_ORDERS`] of them behind it; an action arriving later still
    /// can only see the orders remembered.
    pub ordered_again_at: Option<Timestamp>,
    /// When an assessment after the action first put a customer who was at high or critical
    /// risk at the action below high.
    pub left_risk_at: Option<Timestamp>,
    key: u64,
}

/// The customer's standing at one assessment (at a retention action, or during an at-risk
/// spell): what an action and an untargeted customer are matched on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// When the assessment was taken.
    pub at: Timestamp,
    /// The risk probability it gave.
    pub risk: f32,
    /// The silence then, as [`crate::campaign::silence_bucket`].
    pub silence: u8,
    /// The stage it put the customer in.
    pub stage: Stage,
    /// The customer's value tier.
    pub tier: ValueTier,
}

/// A spell at high or critical risk, and what followed it: the yardstick for customers no
/// retention action reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskEpisode {
    /// When an assessment first put the customer at high or critical risk.
    pub since: Timestamp,
    /// The customer's standing at the first assessment of each risk band (tenths of the
    /// probability) and silence bucket the spell went through before the customer ordered
    /// again, in time order: at most [`MAX_STANDINGS`].
    pub standings: Vec<Standing>,
    /// The first order after that.
    pub ordered_again_at: Option<Timestamp>,
    /// When an assessment first put the customer below high again.
    pub left_risk_at: Option<Timestamp>,
}

/// A move between lifecycle stages, kept for the stage and retention reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageChange {
    /// When the assessment that made it was taken.
    pub at: Timestamp,
    /// The stage left.
    pub from: Stage,
    /// The stage entered.
    pub to: Stage,
    /// The customer's value at risk at that moment, minor units.
    pub value_at_risk: i64,
    /// The margin the customer was expected to bring over the next 12 months had it stayed,
    /// minor units: what a move to lost cost in a year.
    pub retained_12m: i64,
    /// The margin it was expected to bring over the lifetime horizon had it stayed, minor
    /// units: what a move to lost cost.
    pub lifetime_value: i64,
}

/// Everything the core remembers about one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    /// Layout version, [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u16,
    /// The customer.
    pub customer_id: String,
    /// Events applied (duplicates excluded); output event ids derive from it.
    pub applied_events: u64,
    /// Earliest event time seen.
    pub first_seen: Option<Timestamp>,
    /// Latest event time seen.
    pub last_event_at: Option<Timestamp>,
    /// Acquisition: the earliest signup.
    pub signup: Option<Signup>,
    /// The first order.
    pub first_order: Option<FirstOrder>,
    /// The latest order's time.
    pub last_order_at: Option<Timestamp>,
    /// Orders in each of the first three calendar months from the first order's month.
    pub early_months: [u16; 3],
    /// Lifetime sums.
    pub totals: Totals,
    /// Category names, sorted; `MonthWindow::categories` index into it.
    pub categories: Vec<String>,
    /// The rolling monthly windows, oldest first, at most [`WINDOW_MONTHS`].
    pub months: Vec<MonthWindow>,
    /// The most recent order times, oldest first, at most [`RECENT_ORDERS`].
    pub recent_orders: Vec<Timestamp>,
    /// Purchase-interval statistics over `recent_orders`.
    pub intervals: IntervalStats,
    /// The latest retention action.
    pub retention: Vec<RetentionMark>,
    /// The latest spells at high or critical risk, oldest first, at most [`MAX_RISK_EPISODES`].
    pub risk_episodes: Vec<RiskEpisode>,
    /// Stage changes, oldest first, at most [`MAX_STAGE_HISTORY`] within [`STAGE_HISTORY_SECS`].
    pub stage_history: Vec<StageChange>,
    /// Recently seen events as (time, id hash), sorted, at most [`MAX_SEEN_EVENTS`].
    pub seen: Vec<(Timestamp, u64)>,
    /// Lifecycle stage as of the last evaluation recorded.
    pub stage: Stage,
    /// When the stage was entered.
    pub stage_since: Option<Timestamp>,
    /// Risk level last emitted.
    pub risk_level: RiskLevel,
    /// Risk score of the last evaluation recorded.
    pub risk_score: f32,
    /// Evaluations recorded that changed the stage or the risk level.
    pub changes: u64,
    /// When the customer was last assessed.
    pub last_assessed_at: Option<Timestamp>,
}

impl CustomerState {
    /// Returns the empty state of a customer nothing is known about yet.
    pub fn new(customer_id: impl Into<String>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            customer_id: customer_id.into(),
            applied_events: 0,
            first_seen: None,
            last_event_at: None,
            signup: None,
            first_order: None,
            last_order_at: None,
            early_months: [0; 3],
            totals: Totals::default(),
            categories: Vec::new(),
            months: Vec::new(),
            recent_orders: Vec::new(),
            intervals: IntervalStats::default(),
            retention: Vec::new(),
            risk_episodes: Vec::new(),
            stage_history: Vec::new(),
            seen: Vec::new(),
            stage: Stage::Prospect,
            stage_since: None,
            risk_level: RiskLevel::Low,
            risk_score: 0.0,
            changes: 0,
            last_assessed_at: None,
        }
    }

    /// Returns the window for `month`, if it is kept.
    pub fn month(&self, month: MonthIndex) -> Option<&MonthWindow> {
        self.months
            .binary_search_by_key(&month, |w| w.month)
            .ok()
            .map(|i| &self.months[i])
    }

    /// Returns the windows of the months in `from..=to`, oldest first.
    pub fn months_between(&self, from: MonthIndex, to: MonthIndex) -> &[MonthWindow] {
        let start = self.months.partition_point(|w| w.month < from);
        let end = self.months.partition_point(|w| w.month <= to);
        &self.months[start..end.max(start)]
    }

    /// Returns the orders in the first three calendar months from the first order's month.
    pub fn early_orders(&self) -> u32 {
        self.early_months.iter().map(|n| u32::from(*n)).sum()
    }

    /// Returns the index of a category name, if tracked.
    pub fn category_index(&self, name: &str) -> Option<u8> {
        self.categories
            .binary_search_by(|c| c.as_str().cmp(name))
            .ok()
            .map(|i| i as u8)
    }

    /// Returns the latest retention action.
    pub fn last_retention(&self) -> Option<&RetentionMark> {
        self.retention.last()
    }

    /// Returns whether an event id is among the recently seen ones.
    pub fn has_seen(&self, event_id: &str) -> bool {
        let hash = xxh3_64(event_id.as_bytes());
        self.seen.iter().any(|(_, h)| *h == hash)
    }
}

/// Folds one event into the state and says what happened.
///
/// A repeated `event_id` (within [`DEDUP_HORIZON_SECS`] of the newest event) changes nothing.
pub fn apply(state: &mut CustomerState, event: &Event) -> Applied {
    if event.customer_id != state.customer_id {
        return Applied::WrongCustomer;
    }
    let key = xxh3_64(event.event_id.as_bytes());
    if state.seen.iter().any(|(_, h)| *h == key) {
        return Applied::Duplicate;
    }
    let at = event.occurred_at;
    state.applied_events += 1;
    state.first_seen = Some(state.first_seen.map_or(at, |t| t.min(at)));
    let newest = state.last_event_at.map_or(at, |t| t.max(at));
    state.last_event_at = Some(newest);
    remember(&mut state.seen, at, key, newest);

    match &event.kind {
        EventKind::Order(order) => apply_order(state, at, key, order),
        EventKind::Refund(refund) => {
            state.totals.refunds = state.totals.refunds.saturating_add(refund.amount);
            state.totals.refund_count = state.totals.refund_count.saturating_add(1);
            if let Some(w) = window_mut(state, at.month()) {
                w.goods_margin = w.goods_margin.saturating_sub(refund.amount);
                w.refunds = w.refunds.saturating_add(1);
            }
        }
        EventKind::SupportContact(contact) => {
            state.totals.support_contacts = state.totals.support_contacts.saturating_add(1);
            state.totals.support_minutes = state
                .totals
                .support_minutes
                .saturating_add(contact.minutes.unwrap_or(0));
            if let Some(w) = window_mut(state, at.month()) {
                w.contacts = w.contacts.saturating_add(1);
            }
        }
        EventKind::CustomerSignup(signup) => {
            if state
                .signup
                .as_ref()
                .is_none_or(|s| (at, key) < (s.at, s.key))
            {
                state.signup = Some(Signup {
                    at,
                    source: signup.source.clone(),
                    key,
                });
            }
        }
        EventKind::RetentionAction(action) => {
            state.totals.retention_actions = state.totals.retention_actions.saturating_add(1);
            // An action that arrives late still learns of the orders after it that are
            // remembered.
            let ordered_again_at = state.recent_orders.iter().copied().find(|o| *o > at);
            let pos = state
                .retention
                .partition_point(|r| (r.at, r.key) < (at, key));
            state.retention.insert(
                pos,
                RetentionMark {
                    at,
                    action: action.action.clone(),
                    campaign: action.campaign.clone(),
                    level_at_action: state.risk_level,
                    standing: None,
                    ordered_again_at,
                    left_risk_at: None,
                    key,
                },
            );
            if state.retention.len() > MAX_RETENTION_MARKS {
                state.retention.remove(0);
            }
        }
    }
    Applied::Applied
}

fn apply_order(state: &mut CustomerState, at: Timestamp, key: u64, order: &Order) {
    let first_after = |since: Timestamp, current: Option<Timestamp>| {
        if at > since {
            Some(current.map_or(at, |c| c.min(at)))
        } else {
            current
        }
    };
    for mark in &mut state.retention {
        mark.ordered_again_at = first_after(mark.at, mark.ordered_again_at);
    }
    for e in &mut state.risk_episodes {
        e.ordered_again_at = first_after(e.since, e.ordered_again_at);
    }
    let t = &mut state.totals;
    let revenue = order.total.saturating_add(order.discount);
    let cost = order.cost.unwrap_or(0);
    t.orders = t.orders.saturating_add(1);
    t.revenue = t.revenue.saturating_add(revenue);
    t.discounts = t.discounts.saturating_add(order.discount);
    t.cost_of_goods = t.cost_of_goods.saturating_add(cost);
    state.last_order_at = Some(state.last_order_at.map_or(at, |l| l.max(at)));

    let month = at.month();
    let previous_first = state.first_order.as_ref().map(|f| f.at.month());
    if state
        .first_order
        .as_ref()
        .is_none_or(|f| (at, key) < (f.at, f.key))
    {
        let mut names: Vec<String> = order
            .items
            .iter()
            .filter_map(|i| i.category.clone())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(MAX_FIRST_CATEGORIES);
        state.first_order = Some(FirstOrder {
            at,
            channel: order.channel.clone(),
            categories: names,
            key,
        });
    }

    insert_recent(&mut state.recent_orders, at);
    state.intervals = IntervalStats::of(&state.recent_orders);
    // Count each category once per order through a mask (indices are below
    // MAX_CATEGORIES + 1 <= 32). Interning a new name renumbers the names after it, so a pass
    // that added a name is redone; names are almost always known already.
    let mut mask = 0u32;
    for _ in 0..2 {
        let before = state.categories.len();
        mask = 0;
        for name in order.items.iter().filter_map(|i| i.category.as_deref()) {
            mask |= 1 << intern_category(state, name);
        }
        if state.categories.len() == before {
            break;
        }
    }
    let day_bit = 1u32 << (at.since(month.start()) / DAY).clamp(0, 30);
    let mut new_occasion = true;
    if let Some(w) = window_mut(state, month) {
        new_occasion = w.order_days & day_bit == 0;
        w.order_days |= day_bit;
        w.orders = w.orders.saturating_add(1);
        w.revenue = w.revenue.saturating_add(revenue);
        w.discounts = w.discounts.saturating_add(order.discount);
        w.goods_margin = w.goods_margin.saturating_add(order.total - cost);
        for index in (0..32u8).filter(|i| mask & (1 << i) != 0) {
            match w.categories.binary_search_by_key(&index, |(i, _)| *i) {
                Ok(i) => w.categories[i].1 = w.categories[i].1.saturating_add(1),
                Err(i) => w.categories.insert(i, (index, 1)),
            }
        }
    }
    if new_occasion {
        state.totals.occasions = state.totals.occasions.saturating_add(1);
    }

    let first = state.first_order.as_ref().map_or(month, |f| f.at.month());
    match previous_first {
        Some(previous) if first < previous => {
            // No order predates the previous first one, so the months between the new first
            // order and the previous one held only this order: shift the counts along.
            let shift = (previous.0 - first.0) as usize;
            let mut shifted = [0u16; 3];
            shifted[0] = 1;
            for (i, n) in state.early_months.iter().enumerate() {
                if i + shift < 3 {
                    shifted[i + shift] = shifted[i + shift].saturating_add(*n);
                }
            }
            state.early_months = shifted;
        }
        _ => {
            let offset = month.0 - first.0;
            if (0..3).contains(&offset) {
                let slot = &mut state.early_months[offset as usize];
                *slot = slot.saturating_add(1);
            }
        }
    }
}

/// Returns the window for `month`, creating it and dropping windows that fall out of the span;
/// `None` when the month is already older than the span.
fn window_mut(state: &mut CustomerState, month: MonthIndex) -> Option<&mut MonthWindow> {
    let newest = state.months.last().map_or(month, |w| w.month.max(month));
    let oldest_kept = newest.offset(-(WINDOW_MONTHS - 1));
    if month < oldest_kept {
        return None;
    }
    let stale = state.months.partition_point(|w| w.month < oldest_kept);
    state.months.drain(..stale);
    let i = match state.months.binary_search_by_key(&month, |w| w.month) {
        Ok(i) => i,
        Err(i) => {
            state.months.insert(i, MonthWindow::new(month));
            i
        }
    };
    Some(&mut state.months[i])
}

/// Returns the index of a category, adding it in sorted position (and re-numbering the windows)
/// when there is room, or the index of [`OTHER_CATEGORY`] when there is not.
fn intern_category(state: &mut CustomerState, name: &str) -> u8 {
    match state.categories.binary_search_by(|c| c.as_str().cmp(name)) {
        Ok(i) => return i as u8,
        Err(pos) if state.categories.len() < MAX_CATEGORIES => {
            state.categories.insert(pos, name.to_owned());
            renumber_from(state, pos as u8);
            return pos as u8;
        }
        Err(_) => {}
    }
    intern_category_other(state)
}

fn intern_category_other(state: &mut CustomerState) -> u8 {
    match state
        .categories
        .binary_search_by(|c| c.as_str().cmp(OTHER_CATEGORY))
    {
        Ok(i) => i as u8,
        Err(pos) => {
            state.categories.insert(pos, OTHER_CATEGORY.to_owned());
            renumber_from(state, pos as u8);
            pos as u8
        }
    }
}

/// Shifts window category indices at or after `pos` up by one, after an insertion there.
fn renumber_from(state: &mut CustomerState, pos: u8) {
    for w in &mut state.months {
        for (index, _) in &mut w.categories {
            if *index >= pos {
                *index += 1;
            }
        }
    }
}

fn insert_recent(recent: &mut Vec<Timestamp>, at: Timestamp) {
    let pos = recent.partition_point(|t| *t <= at);
    if recent.len() == RECENT_ORDERS {
        if pos == 0 {
            return;
        }
        recent.remove(0);
        recent.insert(pos - 1, at);
    } else {
        recent.insert(pos, at);
    }
}

/// Keeps the newest [`MAX_SEEN_EVENTS`] ids within the horizon of the newest event: a function of
/// the set of events applied, not of their order.
fn remember(seen: &mut Vec<(Timestamp, u64)>, at: Timestamp, key: u64, newest: Timestamp) {
    let horizon = newest.plus(-DEDUP_HORIZON_SECS);
    seen.retain(|(t, _)| *t >= horizon);
    if at < horizon {
        return;
    }
    let pos = seen.partition_point(|e| *e < (at, key));
    seen.insert(pos, (at, key));
    if seen.len() > MAX_SEEN_EVENTS {
        seen.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CustomerSignup, Item, RetentionAction, SupportContact};
    use crate::money::CurrencyCode;

    pub(crate) fn order(id: &str, day: i64, total: i64, categories: &[&str]) -> Event {
        Event {
            event_id: id.to_owned(),
            customer_id: "c".to_owned(),
            occurred_at: Timestamp(1_700_000_000 + day * DAY),
            kind: EventKind::Order(Order {
                order_id: format!("o-{id}"),
                total,
                discount: 0,
                cost: Some(total / 2),
                items: categories
                    .iter()
                    .map(|c| Item {
                        sku: "s".into(),
                        category: Some((*c).into()),
                        quantity: 1,
                        unit_price: total,
                    })
                    .collect(),
                channel: Some("web".into()),
                original_currency: CurrencyCode::default(),
                original_total: total,
            }),
        }
    }

    #[test]
    fn orders_fill_totals_windows_and_first_order() {
        let mut s = CustomerState::new("c");
        assert_eq!(
            apply(&mut s, &order("a", 0, 1000, &["tea", "coffee"])),
            Applied::Applied
        );
        assert_eq!(
            apply(&mut s, &order("b", 40, 3000, &["coffee"])),
            Applied::Applied
        );
        assert_eq!(s.totals.orders, 2);
        assert_eq!(s.totals.revenue, 4000);
        assert_eq!(s.totals.cost_of_goods, 2000);
        assert_eq!(s.categories, vec!["coffee", "tea"]);
        assert_eq!(s.months.len(), 2);
        let coffee = s.category_index("coffee").unwrap();
        assert!(s.months.iter().all(|w| w.category_orders(coffee) == 1));
        let first = s.first_order.as_ref().unwrap();
        assert_eq!(first.categories, vec!["coffee", "tea"]);
        assert_eq!(s.recent_orders.len(), 2);
        assert_eq!(s.early_orders(), 2);
    }

    #[test]
    fn interval_statistics_ignore_same_day_orders_and_take_the_median() {
        let at = |d: f64| Timestamp((d * DAY as f64) as i64);
        let odd = IntervalStats::of(&[at(0.0), at(10.0), at(10.2), at(30.0), at(33.0)]);
        assert_eq!((odd.gaps, odd.median_gap_secs), (3, 10 * DAY));
        let even = IntervalStats::of(&[at(0.0), at(10.0), at(20.0), at(50.0), at(54.0)]);
        assert_eq!((even.gaps, even.median_gap_secs), (4, 10 * DAY));
        assert_eq!(even.mean_gap_secs, (DAY * 54) / 4);
        assert_eq!(
            IntervalStats::of(&[at(0.0), at(0.5)]),
            IntervalStats::default()
        );
    }

    #[test]
    fn a_repeated_event_id_changes_nothing() {
        let mut s = CustomerState::new("c");
        apply(&mut s, &order("a", 0, 1000, &["tea"]));
        let before = s.clone();
        assert_eq!(
            apply(&mut s, &order("a", 0, 1000, &["tea"])),
            Applied::Duplicate
        );
        assert_eq!(s, before);
    }

    #[test]
    fn events_for_another_customer_are_refused() {
        let mut s = CustomerState::new("someone-else");
        assert_eq!(
            apply(&mut s, &order("a", 0, 1000, &[])),
            Applied::WrongCustomer
        );
        assert_eq!(s, CustomerState::new("someone-else"));
    }

    #[test]
    fn windows_roll_after_24_months_and_late_old_events_skip_them() {
        let mut s = CustomerState::new("c");
        for m in 0..30 {
            apply(&mut s, &order(&format!("m{m}"), m * 31, 1000, &["tea"]));
        }
        let newest = s.months.last().unwrap().month;
        assert!(s.months.len() <= WINDOW_MONTHS as usize);
        assert!(
            s.months
                .iter()
                .all(|w| w.month >= newest.offset(-(WINDOW_MONTHS - 1)))
        );
        assert_eq!(s.months[0].month, newest.offset(-(WINDOW_MONTHS - 1)));
        let oldest = s.months[0].month;
        apply(&mut s, &order("late", 0, 5000, &["tea"]));
        assert_eq!(s.months[0].month, oldest);
        assert_eq!(
            s.totals.orders, 31,
            "a late event still counts in the lifetime totals"
        );
    }

    #[test]
    fn categories_past_the_limit_fold_into_other() {
        let mut s = CustomerState::new("c");
        for i in 0..40 {
            apply(
                &mut s,
                &order(&format!("e{i}"), i, 1000, &[&format!("cat{i:02}")]),
            );
        }
        assert_eq!(s.categories.len(), MAX_CATEGORIES + 1);
        assert!(s.category_index(OTHER_CATEGORY).is_some());
        let total: u32 = s
            .months
            .iter()
            .flat_map(|w| &w.categories)
            .map(|(_, n)| u32::from(*n))
            .sum();
        assert_eq!(total, 40, "no category order is lost when folding");
    }

    #[test]
    fn an_order_mixing_a_known_category_with_an_overflowing_one_counts_both_right() {
        let mut s = CustomerState::new("c");
        for i in 0..MAX_CATEGORIES {
            apply(
                &mut s,
                &order(&format!("e{i}"), 0, 1000, &[&format!("cat{i:02}")]),
            );
        }
        // "(other)" sorts first: creating it renumbers every named category.
        apply(&mut s, &order("mixed", 0, 1000, &["cat05", "zzz-new"]));
        let w = &s.months[0];
        assert_eq!(w.category_orders(s.category_index("cat05").unwrap()), 2);
        assert_eq!(
            w.category_orders(s.category_index(OTHER_CATEGORY).unwrap()),
            1
        );
        assert_eq!(w.category_orders(s.category_index("cat04").unwrap()), 1);
    }

    #[test]
    fn refunds_contacts_signups_and_retention_are_recorded() {
        let mut s = CustomerState::new("c");
        let at = Timestamp(1_700_000_000);
        let ev = |id: &str, kind| Event {
            event_id: id.into(),
            customer_id: "c".into(),
            occurred_at: at,
            kind,
        };
        apply(&mut s, &order("o", 0, 1000, &[]));
        apply(
            &mut s,
            &ev(
                "r",
                EventKind::Refund(crate::event::Refund {
                    order_id: "o".into(),
                    amount: 300,
                    reason: None,
                }),
            ),
        );
        apply(
            &mut s,
            &ev(
                "s",
                EventKind::SupportContact(SupportContact {
                    channel: crate::event::ContactChannel::Chat,
                    minutes: Some(7),
                }),
            ),
        );
        apply(
            &mut s,
            &ev(
                "u",
                EventKind::CustomerSignup(CustomerSignup {
                    source: Some("referral".into()),
                }),
            ),
        );
        apply(
            &mut s,
            &ev(
                "k",
                EventKind::RetentionAction(RetentionAction {
                    action: "call".into(),
                    campaign: Some("w".into()),
                }),
            ),
        );
        assert_eq!((s.totals.refunds, s.totals.refund_count), (300, 1));
        assert_eq!(
            (s.totals.support_contacts, s.totals.support_minutes),
            (1, 7)
        );
        assert_eq!(s.months[0].goods_margin, 1000 - 500 - 300);
        assert_eq!(s.months[0].contacts, 1);
        assert_eq!(
            s.signup.as_ref().unwrap().source.as_deref(),
            Some("referral")
        );
        assert_eq!(s.last_retention().unwrap().campaign.as_deref(), Some("w"));
    }
}
