//! The scoring decisions for one partition, free of I/O: recognise duplicates, move the clock,
//! fire the silence timers that fall due, apply events, assess customers and say what to
//! publish. The scoring service carries the decisions out against sled and Kafka; the offline
//! [`crate::replay::Replay`] carries them out in memory. Both therefore agree by construction.
//!
//! Time: with [`Clock::Event`] the clock is the event-time watermark (the newest event time
//! seen in the partition minus the allowed lateness), so a replay of history gives the same
//! answers as living through it. With [`Clock::Wall`] the caller passes the wall-clock time.
//! An event is always assessed at its own time (or at the customer's last assessment, if that
//! is later); a timer is assessed at its due time.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::assess::{
    Assessment, Changes, Model, assess, evaluate, next_evaluation_at, undo_move_contradicted_by,
};
use crate::event::{Event, EventKind};
use crate::output::{Profile, RiskEvent, StageEvent, change_events, profile, stage_event};
use crate::state::{Applied, CustomerState, apply};
use crate::time::Timestamp;

/// Where "now" comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Live: the caller's wall-clock time.
    Wall,
    /// Replay: the newest event time seen minus `lateness_secs`.
    Event {
        /// How far behind the newest event a late event may still arrive, in seconds.
        lateness_secs: i64,
    },
}

/// The pending re-evaluation of each customer of a partition: at most one per customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimerIndex {
    by_due: BTreeSet<(Timestamp, String)>,
    by_customer: HashMap<String, Timestamp>,
}

impl TimerIndex {
    /// Returns an index holding the given (customer, due) timers.
    pub fn from_timers(timers: impl IntoIterator<Item = (String, Timestamp)>) -> Self {
        let mut index = Self::default();
        for (customer, due) in timers {
            index.set(&customer, Some(due));
        }
        index
    }

    /// Sets (or, with `None`, clears) a customer's timer, replacing any earlier one.
    pub fn set(&mut self, customer: &str, due: Option<Timestamp>) {
        if let Some(old) = self.by_customer.remove(customer) {
            self.by_due.remove(&(old, customer.to_owned()));
        }
        if let Some(due) = due {
            self.by_customer.insert(customer.to_owned(), due);
            self.by_due.insert((due, customer.to_owned()));
        }
    }

    /// Removes and returns the earliest timer due at or before `up_to`.
    pub fn pop_due(&mut self, up_to: Timestamp) -> Option<(Timestamp, String)> {
        let first = self
            .by_due
            .first()
            .filter(|(due, _)| *due <= up_to)?
            .clone();
        self.by_due.remove(&first);
        self.by_customer.remove(&first.1);
        Some(first)
    }

    /// Returns a customer's timer.
    pub fn due_of(&self, customer: &str) -> Option<Timestamp> {
        self.by_customer.get(customer).copied()
    }

    /// Returns the number of pending timers.
    pub fn len(&self) -> usize {
        self.by_customer.len()
    }

    /// Returns whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.by_customer.is_empty()
    }

    /// Returns the earliest due time.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.by_due.first().map(|(due, _)| *due)
    }
}

/// What the engine needs to ask of the storage side.
pub trait StateStore {
    /// Why storage could not answer.
    type Error;
    /// Returns a customer's stored state, if any.
    fn load(&mut self, customer_id: &str) -> Result<Option<CustomerState>, Self::Error>;
    /// Returns whether an event was processed before, beyond what the states remember. An
    /// event is known by its `event_id`; a redelivery or duplicate carries its original's
    /// `occurred_at`, which lets a store index ids by time and expire them in time order.
    fn seen(&mut self, event_id: &str, occurred_at: Timestamp) -> Result<bool, Self::Error>;
}

/// Something to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// To `customer-risk`.
    Risk(RiskEvent),
    /// To `customer-stage`.
    Stage(StageEvent),
}

/// Counters of one piece of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkStats {
    /// Events applied.
    pub applied: u64,
    /// Duplicates ignored.
    pub duplicates: u64,
    /// Timers fired.
    pub timers_fired: u64,
    /// Events that arrived behind the event-time watermark (the newest event time less the
    /// allowed lateness): silence timers may already have judged the customer without them.
    pub late: u64,
    /// Assessments made.
    pub assessments: u64,
}

/// How a batch changed one customer's timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerChange {
    /// The timer when the batch began (`None`: no timer).
    pub before: Option<Timestamp>,
    /// The timer now (`None`: no timer).
    pub after: Option<Timestamp>,
}

impl TimerChange {
    /// Returns whether the batch left the timer as it was.
    pub fn is_noop(&self) -> bool {
        self.before == self.after
    }
}

/// The effects of a batch, to be written atomically and then published.
#[derive(Debug, Default)]
pub struct Work {
    /// Every state touched, as it is now.
    pub states: HashMap<String, CustomerState>,
    /// Event ids processed in this batch, with their event time.
    pub seen: Vec<(String, Timestamp)>,
    seen_set: HashSet<String>,
    /// Timers changed in this batch, each with its value before the batch, so a store can
    /// move the timer's key without reading it first.
    pub timers: HashMap<String, TimerChange>,
    /// Change events, in the order they happened.
    pub outputs: Vec<Output>,
    /// The latest profile of every customer assessed.
    pub profiles: HashMap<String, Profile>,
    /// Counters.
    pub stats: WorkStats,
}

impl Work {
    /// Returns whether the batch did nothing that needs writing.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.seen.is_empty() && self.timers.is_empty()
    }
}

/// The scoring decisions of one partition.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The model customers are evaluated with.
    pub model: Model,
    clock: Clock,
    watermark: Option<Timestamp>,
    timers: TimerIndex,
}

impl Engine {
    /// Returns an engine resuming at `watermark` with the partition's stored `timers`.
    pub fn new(
        model: Model,
        clock: Clock,
        watermark: Option<Timestamp>,
        timers: TimerIndex,
    ) -> Self {
        Self {
            model,
            clock,
            watermark,
            timers,
        }
    }

    /// Returns the current watermark (the clock's "now" in event mode).
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }

    /// Returns the pending timers.
    pub fn timers(&self) -> &TimerIndex {
        &self.timers
    }

    /// Processes one event: fires the timers its time makes due (event clock) or that the wall
    /// clock `wall_now` has passed, then applies and assesses it.
    ///
    /// # Errors
    ///
    /// Whatever the store reports; the work done so far stays in `work` but must not be
    /// committed, since the batch is incomplete.
    pub fn on_event<S: StateStore>(
        &mut self,
        work: &mut Work,
        store: &mut S,
        event: &Event,
        wall_now: Timestamp,
    ) -> Result<Applied, S::Error> {
        if work.seen_set.contains(&event.event_id)
            || store.seen(&event.event_id, event.occurred_at)?
        {
            work.stats.duplicates += 1;
            return Ok(Applied::Duplicate);
        }
        if matches!(self.clock, Clock::Event { .. })
            && self.watermark.is_some_and(|w| event.occurred_at < w)
        {
            work.stats.late += 1;
        }
        let now = match self.clock {
            Clock::Wall => wall_now,
            Clock::Event { lateness_secs } => {
                let candidate = event.occurred_at.plus(-lateness_secs);
                self.watermark.map_or(candidate, |w| w.max(candidate))
            }
        };
        if self.clock == Clock::Wall {
            self.settle_own_timers(work, store, &event.customer_id, event.occurred_at)?;
        }
        self.advance(work, store, now)?;
        let mut state = take_state(work, store, &event.customer_id)?;
        let late_for_customer = state
            .last_assessed_at
            .is_some_and(|l| event.occurred_at < l);
        let outcome = apply(&mut state, event);
        match outcome {
            Applied::Applied => {
                work.stats.applied += 1;
                work.seen_set.insert(event.event_id.clone());
                work.seen.push((event.event_id.clone(), event.occurred_at));
                let at = state
                    .last_assessed_at
                    .map_or(event.occurred_at, |l| l.max(event.occurred_at));
                if late_for_customer && matches!(event.kind, EventKind::Order(_)) {
                    self.correct_for_late_order(work, &mut state, event.occurred_at, at);
                }
                self.assess_into(work, state, at);
            }
            Applied::Duplicate => {
                work.stats.duplicates += 1;
                work.states.insert(event.customer_id.clone(), state);
            }
            Applied::WrongCustomer => {
                work.states.insert(event.customer_id.clone(), state);
            }
        }
        Ok(outcome)
    }

    /// Moves the clock to `now` (never backwards) and fires every timer due by then, each
    /// assessed at its due time.
    ///
    /// # Errors
    ///
    /// Whatever the store reports.
    pub fn advance<S: StateStore>(
        &mut self,
        work: &mut Work,
        store: &mut S,
        now: Timestamp,
    ) -> Result<(), S::Error> {
        // The clock never goes back, but timers set since it last moved may already be due
        // (an event assessed at its own, earlier time), so they are fired even when it stays.
        let now = self.watermark.map_or(now, |w| w.max(now));
        self.watermark = Some(now);
        while let Some((due, customer)) = self.timers.pop_due(now) {
            self.fire(work, store, &customer, due)?;
        }
        Ok(())
    }

    /// Re-assesses a customer under the engine's current model at `now` (or its last
    /// assessment, if later), as after a refit: the state goes into `work` with its new
    /// decisions, timer and profile, and any change it makes is published. A prospect, whom
    /// the purchase models do not judge, is left alone; returns whether the customer was
    /// assessed.
    pub fn reassess(&mut self, work: &mut Work, state: CustomerState, now: Timestamp) -> bool {
        if state.last_order_at.is_none() {
            return false;
        }
        let at = state.last_assessed_at.map_or(now, |l| l.max(now));
        self.assess_into(work, state, at);
        true
    }

    /// Fires a customer's timer, already taken out of the index: the customer is assessed at
    /// its due time (or its last assessment, if later).
    fn fire<S: StateStore>(
        &mut self,
        work: &mut Work,
        store: &mut S,
        customer: &str,
        due: Timestamp,
    ) -> Result<(), S::Error> {
        record_timer(work, customer, Some(due), None);
        work.stats.timers_fired += 1;
        let state = take_state(work, store, customer)?;
        let at = state.last_assessed_at.map_or(due, |l| l.max(due));
        self.assess_into(work, state, at);
        Ok(())
    }

    /// On the wall clock, fires a customer's timers due before its event and drops the one
    /// the event overtakes. Without this, a backlog (history fed to a live service) would let
    /// the customer's timers run on to now, judging the silence that its own later orders in
    /// the batch end (a weekly buyer made critical, even lost and reactivated, by timers).
    fn settle_own_timers<S: StateStore>(
        &mut self,
        work: &mut Work,
        store: &mut S,
        customer: &str,
        event_at: Timestamp,
    ) -> Result<(), S::Error> {
        while let Some(due) = self.timers.due_of(customer).filter(|d| *d < event_at) {
            self.timers.set(customer, None);
            self.fire(work, store, customer, due)?;
        }
        // The event's own assessment sets the next timer.
        if let Some(due) = self.timers.due_of(customer) {
            self.timers.set(customer, None);
            record_timer(work, customer, Some(due), None);
        }
        Ok(())
    }

    /// Undoes a stage move that a late order (placed at `order_at`) contradicts, unless the
    /// customer, judged at `at` with the order known, would make the same move again; the
    /// correction is published as a stage event of its own.
    fn correct_for_late_order(
        &self,
        work: &mut Work,
        state: &mut CustomerState,
        order_at: Timestamp,
        at: Timestamp,
    ) {
        let mut corrected = state.clone();
        let Some(t) = undo_move_contradicted_by(&mut corrected, order_at) else {
            return;
        };
        if evaluate(&corrected, at, &self.model).stage == t.from {
            // Still the same stage with the order known: the move stands (silence made it
            // later than it was judged, not wrongly).
            return;
        }
        corrected.changes += 1;
        work.outputs
            .push(Output::Stage(stage_event(&corrected, order_at, t)));
        *state = corrected;
    }

    fn assess_into(&mut self, work: &mut Work, mut state: CustomerState, at: Timestamp) {
        let (assessment, changes) = assess(&mut state, at, &self.model);
        work.stats.assessments += 1;
        self.publish(work, &state, &assessment, changes);
        let next = next_evaluation_at(&state, at, &self.model);
        let before = self.timers.due_of(&state.customer_id);
        self.timers.set(&state.customer_id, next);
        record_timer(work, &state.customer_id, before, next);
        work.states.insert(state.customer_id.clone(), state);
    }

    fn publish(&self, work: &mut Work, state: &CustomerState, a: &Assessment, changes: Changes) {
        let out = change_events(state, a, changes);
        if let Some(stage) = out.stage {
            work.outputs.push(Output::Stage(stage));
        }
        if let Some(risk) = out.risk {
            work.outputs.push(Output::Risk(risk));
        }
        work.profiles
            .insert(state.customer_id.clone(), profile(state, a));
    }
}

/// Notes a timer change in the batch, keeping the value the batch began with.
fn record_timer(
    work: &mut Work,
    customer: &str,
    before: Option<Timestamp>,
    after: Option<Timestamp>,
) {
    match work.timers.get_mut(customer) {
        Some(change) => change.after = after,
        None => {
            work.timers
                .insert(customer.to_owned(), TimerChange { before, after });
        }
    }
}

fn take_state<S: StateStore>(
    work: &mut Work,
    store: &mut S,
    customer: &str,
) -> Result<CustomerState, S::Error> {
    Ok(match work.states.remove(customer) {
        Some(state) => state,
        None => store
            .load(customer)?
            .unwrap_or_else(|| CustomerState::new(customer)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Order};
    use crate::money::CurrencyCode;
    use crate::risk::RiskLevel;
    use crate::stage::{Stage, TransitionReason};
    use crate::time::DAY;

    #[derive(Default)]
    struct Memory {
        states: HashMap<String, CustomerState>,
        seen: HashSet<String>,
        timers: HashMap<String, Timestamp>,
    }

    impl StateStore for Memory {
        type Error = std::convert::Infallible;
        fn load(&mut self, customer_id: &str) -> Result<Option<CustomerState>, Self::Error> {
            Ok(self.states.get(customer_id).cloned())
        }
        fn seen(&mut self, event_id: &str, _: Timestamp) -> Result<bool, Self::Error> {
            Ok(self.seen.contains(event_id))
        }
    }

    impl Memory {
        fn commit(&mut self, work: Work) {
            self.states.extend(work.states);
            self.seen.extend(work.seen.into_iter().map(|(id, _)| id));
            for (customer, change) in work.timers {
                assert_eq!(
                    self.timers.get(&customer).copied(),
                    change.before,
                    "a timer change starts from the stored timer of {customer}"
                );
                match change.after {
                    Some(due) => self.timers.insert(customer, due),
                    None => self.timers.remove(&customer),
                };
            }
        }
    }

    fn order(customer: &str, n: u32, day: i64) -> Event {
        Event {
            event_id: format!("{customer}-{n}"),
            customer_id: customer.into(),
            occurred_at: Timestamp(1_704_067_200 + day * DAY),
            kind: EventKind::Order(Order {
                order_id: format!("o{n}"),
                total: 3_000,
                discount: 0,
                cost: Some(1_500),
                items: vec![],
                channel: None,
                original_currency: CurrencyCode::default(),
                original_total: 3_000,
            }),
        }
    }

    fn engine(lateness_secs: i64) -> Engine {
        Engine::new(
            Model::default(),
            Clock::Event { lateness_secs },
            None,
            TimerIndex::default(),
        )
    }

    #[test]
    fn timer_index_keeps_one_timer_per_customer() {
        let mut t = TimerIndex::default();
        t.set("a", Some(Timestamp(10)));
        t.set("b", Some(Timestamp(5)));
        t.set("a", Some(Timestamp(20)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.pop_due(Timestamp(15)), Some((Timestamp(5), "b".into())));
        assert_eq!(t.pop_due(Timestamp(15)), None);
        t.set("a", None);
        assert!(t.is_empty());
    }

    #[test]
    fn batch_boundaries_do_not_change_the_outcome() {
        let mut events = Vec::new();
        for n in 0..30 {
            events.push(order("regular", n, i64::from(n) * 10));
            if n < 12 {
                events.push(order("quits", n, i64::from(n) * 10 + 3));
            }
        }
        events.sort_by_key(|e| e.occurred_at);
        let run = |batch: usize| {
            let mut memory = Memory::default();
            let mut engine = engine(DAY);
            let mut outputs = Vec::new();
            for chunk in events.chunks(batch) {
                let mut work = Work::default();
                for e in chunk {
                    engine
                        .on_event(&mut work, &mut memory, e, Timestamp(0))
                        .unwrap();
                }
                outputs.append(&mut work.outputs);
                memory.commit(work);
                let mut stored: Vec<_> = memory.timers.iter().map(|(c, d)| (*d, c)).collect();
                stored.sort();
                let mut live = engine.timers().clone();
                let mut pending = Vec::new();
                while let Some((due, customer)) = live.pop_due(Timestamp(i64::MAX)) {
                    pending.push((due, customer));
                }
                assert_eq!(
                    stored,
                    pending.iter().map(|(d, c)| (*d, c)).collect::<Vec<_>>(),
                    "the committed timer changes leave the store with the engine's timers"
                );
            }
            let mut states: Vec<_> = memory.states.into_values().collect();
            states.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
            (states, outputs)
        };
        let (one, out_one) = run(1);
        let (seven, out_seven) = run(7);
        let (all, out_all) = run(events.len());
        assert_eq!(one, seven);
        assert_eq!(one, all);
        assert_eq!(out_one, out_seven);
        assert_eq!(out_one, out_all);
        let quits = one.iter().find(|s| s.customer_id == "quits").unwrap();
        assert_eq!(
            quits.stage,
            Stage::CoreDefector,
            "timers reached the silent customer"
        );
    }

    #[test]
    fn on_the_wall_clock_a_history_already_overdue_is_flagged_without_waiting_for_the_clock() {
        // Three monthly orders, the last 90 days before "now": each event is assessed at its own
        // time, and the timer that follows is already due. It fires at the same wall time.
        let now = Timestamp(1_704_067_200 + 150 * DAY);
        let mut memory = Memory::default();
        let mut engine = Engine::new(Model::default(), Clock::Wall, None, TimerIndex::default());
        let mut work = Work::default();
        engine.advance(&mut work, &mut memory, now).unwrap();
        for n in 0..3 {
            engine
                .on_event(
                    &mut work,
                    &mut memory,
                    &order("c", n, i64::from(n) * 30),
                    now,
                )
                .unwrap();
        }
        engine.advance(&mut work, &mut memory, now).unwrap();
        assert!(
            work.outputs
                .iter()
                .any(|o| matches!(o, Output::Risk(r) if r.level >= crate::RiskLevel::High)),
            "{:?}",
            work.outputs
        );
    }

    #[test]
    fn events_behind_the_watermark_less_the_lateness_are_counted_late() {
        let mut memory = Memory::default();
        // Two days of allowed lateness.
        let mut engine = engine(2 * DAY);
        let mut work = Work::default();
        for (n, customer, day) in [(1, "a", 10), (2, "b", 9), (3, "c", 7), (4, "a", 30)] {
            engine
                .on_event(
                    &mut work,
                    &mut memory,
                    &order(customer, n, day),
                    Timestamp(0),
                )
                .unwrap();
        }
        // Day 9 is within two days of day 10; day 7 is not.
        assert_eq!(work.stats.late, 1);
        memory.commit(work);
        let mut work = Work::default();
        engine
            .on_event(&mut work, &mut memory, &order("d", 5, 12), Timestamp(0))
            .unwrap();
        // Day 12 is far behind day 30; a redelivery is a duplicate, not late.
        engine
            .on_event(&mut work, &mut memory, &order("a", 1, 10), Timestamp(0))
            .unwrap();
        assert_eq!((work.stats.late, work.stats.duplicates), (1, 1));
    }

    #[test]
    fn on_the_wall_clock_a_backlog_is_not_judged_by_the_silence_its_own_orders_end() {
        // Weekly orders from 200 to 60 days before now, fed in one batch to a live engine.
        let now = Timestamp(1_704_067_200 + 200 * DAY);
        let mut memory = Memory::default();
        let mut engine = Engine::new(Model::default(), Clock::Wall, None, TimerIndex::default());
        let mut work = Work::default();
        for (n, day) in (0..=140).step_by(7).enumerate() {
            engine
                .on_event(&mut work, &mut memory, &order("w", n as u32, day), now)
                .unwrap();
        }
        // Timers fired only where the customer really was silent: up to now after the last
        // order, never between two of its orders a week apart.
        let risk_at: Vec<Timestamp> = work
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::Risk(r) if r.level >= crate::RiskLevel::Critical => Some(r.at),
                _ => None,
            })
            .collect();
        let last_order = Timestamp(1_704_067_200 + 140 * DAY);
        assert!(
            risk_at.iter().all(|at| *at >= last_order),
            "critical while still ordering weekly: {risk_at:?}"
        );
        engine.advance(&mut work, &mut memory, now).unwrap();
        let state = work.states.get("w").unwrap();
        assert_eq!(state.totals.orders, 21);
        assert!(
            state
                .stage_history
                .iter()
                .all(|c| c.to != crate::Stage::Lost)
        );
    }

    #[test]
    fn redelivered_events_are_ignored_across_batches() {
        let mut memory = Memory::default();
        let mut engine = engine(0);
        let mut work = Work::default();
        engine
            .on_event(&mut work, &mut memory, &order("c", 1, 0), Timestamp(0))
            .unwrap();
        assert_eq!(
            engine.on_event(&mut work, &mut memory, &order("c", 1, 0), Timestamp(0)),
            Ok(Applied::Duplicate)
        );
        memory.commit(work);
        let mut work = Work::default();
        assert_eq!(
            engine.on_event(&mut work, &mut memory, &order("c", 1, 0), Timestamp(0)),
            Ok(Applied::Duplicate)
        );
        assert_eq!(work.stats.duplicates, 1);
        assert!(
            work.states.is_empty(),
            "a duplicate known to the store does not even load the state"
        );
    }

    #[test]
    fn the_wall_clock_fires_timers_without_events() {
        let mut memory = Memory::default();
        let mut engine = Engine::new(Model::default(), Clock::Wall, None, TimerIndex::default());
        let mut work = Work::default();
        for n in 0..10 {
            let e = order("c", n, i64::from(n) * 7);
            engine
                .on_event(&mut work, &mut memory, &e, e.occurred_at)
                .unwrap();
        }
        memory.commit(work);
        let mut work = Work::default();
        engine
            .advance(&mut work, &mut memory, Timestamp(1_704_067_200 + 400 * DAY))
            .unwrap();
        assert!(work.stats.timers_fired >= 1);
        assert_eq!(work.states["c"].stage, Stage::Lost);
        assert!(
            work.outputs
                .iter()
                .any(|o| matches!(o, Output::Stage(s) if s.to == Stage::Lost))
        );
    }

    #[test]
    fn a_reassessment_under_a_new_model_republishes_the_profile_and_the_change() {
        let mut memory = Memory::default();
        let mut engine = engine(0);
        let mut work = Work::default();
        for n in 0..4 {
            let e = order("c", n, i64::from(n) * 10);
            engine
                .on_event(&mut work, &mut memory, &e, Timestamp(0))
                .unwrap();
        }
        memory.commit(work);
        let before = memory.states["c"].clone();
        assert!(before.risk_level < RiskLevel::High, "{before:?}");

        // A population that hardly ever buys again: the same history is now likely to stay
        // silent for the whole horizon.
        engine.model.params.bgnbd = crate::btyd::BgNbdParams {
            r: 0.1,
            alpha: 200.0,
            a: 0.8,
            b: 2.5,
        };
        let now = engine.watermark().unwrap();
        let mut work = Work::default();
        assert!(engine.reassess(&mut work, before.clone(), now));
        assert!(
            !engine.reassess(&mut work, CustomerState::new("prospect"), now),
            "a prospect is not judged by the purchase models"
        );
        let after = &work.states["c"];
        assert!(after.risk_score > before.risk_score, "{after:?}");
        assert_eq!(work.profiles["c"].risk_score as f32, after.risk_score);
        assert!(!work.profiles.contains_key("prospect"));
        assert!(
            work.outputs
                .iter()
                .any(|o| matches!(o, Output::Risk(r) if r.level > before.risk_level)),
            "the level change is published: {:?}",
            work.outputs
        );
        assert_eq!(work.stats.assessments, 1);
        memory.commit(work);
    }

    /// Runs "a" (an order every 20 days to day 80) and "b" (whose order on day 270 moves the
    /// watermark there, so a's silence timers make it lost as of day 260), then a late order of
    /// a's on `late_day`; returns the outputs of that last order and a's state.
    fn lost_then_late_order(late_day: i64) -> (Vec<Output>, CustomerState) {
        let mut memory = Memory::default();
        let mut engine = engine(0);
        let mut work = Work::default();
        let mut events: Vec<Event> = (0..5).map(|n| order("a", n, i64::from(n) * 20)).collect();
        events.push(order("b", 0, 0));
        events.push(order("b", 1, 270));
        for e in &events {
            engine
                .on_event(&mut work, &mut memory, e, Timestamp(0))
                .unwrap();
        }
        memory.commit(work);
        assert_eq!(memory.states["a"].stage, Stage::Lost);
        let mut work = Work::default();
        engine
            .on_event(
                &mut work,
                &mut memory,
                &order("a", 9, late_day),
                Timestamp(0),
            )
            .unwrap();
        assert_eq!(work.stats.late, 1);
        let state = work.states["a"].clone();
        (work.outputs, state)
    }

    fn stage_moves(outputs: &[Output]) -> Vec<(Stage, Stage, TransitionReason)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Stage(s) => Some((s.from, s.to, s.reason)),
                Output::Risk(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_late_order_from_before_a_timers_lost_move_corrects_it_and_is_no_reactivation() {
        let (outputs, a) = lost_then_late_order(200);
        let moves = stage_moves(&outputs);
        assert_eq!(moves.len(), 1, "{moves:?}");
        let (from, to, reason) = moves[0];
        assert_eq!((from, reason), (Stage::Lost, TransitionReason::Corrected));
        assert_ne!(to, Stage::Lost);
        assert_eq!(a.stage, to);
        assert!(
            a.stage_history.iter().all(|c| c.to != Stage::Lost),
            "the undone move leaves the history: {:?}",
            a.stage_history
        );
        // Its event id is distinct from the move it corrects.
        let ids: HashSet<&str> = outputs
            .iter()
            .map(|o| match o {
                Output::Stage(s) => s.event_id.as_str(),
                Output::Risk(r) => r.event_id.as_str(),
            })
            .collect();
        assert_eq!(ids.len(), outputs.len());
    }

    #[test]
    fn a_late_order_from_after_the_customer_was_lost_is_a_reactivation() {
        let (outputs, a) = lost_then_late_order(265);
        let moves = stage_moves(&outputs);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(
            (moves[0].0, moves[0].2),
            (Stage::Lost, TransitionReason::Reactivated)
        );
        assert_ne!(a.stage, Stage::Lost);
    }
}
