//! An in-memory replay of a whole population on event time: events are applied in order,
//! each customer is assessed after its events and whenever its silence timer falls due, and the
//! population models are refitted on a fixed event-time interval. It is the scoring service's
//! decision loop without Kafka or sled, used by offline evaluation and as the reference the
//! streaming pipeline is checked against.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::assess::{Assessment, Changes, Model, assess, next_evaluation_at};
use crate::event::Event;
use crate::population::{PopulationFit, PopulationSummary};
use crate::state::{Applied, CustomerState, apply};
use crate::time::Timestamp;

/// Why an assessment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// After the customer's event.
    Event,
    /// A silence timer fell due.
    Timer,
    /// The closing assessment at the end of the replay.
    Final,
}

/// Receives every assessment a replay makes.
pub trait Observer {
    /// Called after each assessment has been recorded into the state.
    fn assessed(
        &mut self,
        state: &CustomerState,
        assessment: &Assessment,
        changes: Changes,
        trigger: Trigger,
    );

    /// Called after each model refit.
    fn refitted(&mut self, _at: Timestamp, _fit: &PopulationFit) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ignore;

impl Observer for Ignore {
    fn assessed(&mut self, _: &CustomerState, _: &Assessment, _: Changes, _: Trigger) {}
}

/// A population replayed on event time.
#[derive(Debug)]
pub struct Replay {
    model: Model,
    states: Vec<CustomerState>,
    index: HashMap<String, usize>,
    /// Pending re-evaluations as (due, customer index, generation).
    timers: BinaryHeap<Reverse<(Timestamp, usize, u64)>>,
    /// The generation of each customer's live timer; older heap entries are stale.
    generation: Vec<u64>,
    refit_every_secs: Option<i64>,
    next_refit: Option<Timestamp>,
    clock: Option<Timestamp>,
    duplicates: u64,
}

impl Replay {
    /// Returns an empty replay evaluating with `model`, refitting every `refit_every_secs` of
    /// event time (never, when `None`).
    pub fn new(model: Model, refit_every_secs: Option<i64>) -> Self {
        Self {
            model,
            states: Vec::new(),
            index: HashMap::new(),
            timers: BinaryHeap::new(),
            generation: Vec::new(),
            refit_every_secs: refit_every_secs.filter(|s| *s > 0),
            next_refit: None,
            clock: None,
            duplicates: 0,
        }
    }

    /// Returns the model in use.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Returns every customer's state.
    pub fn states(&self) -> &[CustomerState] {
        &self.states
    }

    /// Returns a customer's state.
    pub fn state(&self, customer_id: &str) -> Option<&CustomerState> {
        self.index.get(customer_id).map(|i| &self.states[*i])
    }

    /// Returns the duplicate events ignored so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Returns the pending timers (including superseded ones not yet discarded).
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Applies one event (events should come in event-time order; late ones are applied at
    /// the current clock), first firing the timers and refits due before it.
    pub fn apply(&mut self, event: &Event, observer: &mut impl Observer) -> Applied {
        let at = self
            .clock
            .map_or(event.occurred_at, |c| c.max(event.occurred_at));
        self.advance_to(at, observer);
        let i = match self.index.get(&event.customer_id) {
            Some(i) => *i,
            None => {
                self.states
                    .push(CustomerState::new(event.customer_id.clone()));
                self.generation.push(0);
                self.index
                    .insert(event.customer_id.clone(), self.states.len() - 1);
                self.states.len() - 1
            }
        };
        let outcome = apply(&mut self.states[i], event);
        match outcome {
            Applied::Applied => self.assess_one(i, at, Trigger::Event, observer),
            Applied::Duplicate => self.duplicates += 1,
            Applied::WrongCustomer => {}
        }
        outcome
    }

    /// Moves the clock to `to`, firing every timer and refit due up to then, in time order.
    pub fn advance_to(&mut self, to: Timestamp, observer: &mut impl Observer) {
        if self.clock.is_some_and(|c| c >= to) {
            return;
        }
        if self.next_refit.is_none() {
            self.next_refit = self.refit_every_secs.map(|s| to.plus(s));
        }
        loop {
            let timer = self
                .timers
                .peek()
                .map(|Reverse((due, _, _))| *due)
                .filter(|due| *due <= to);
            let refit = self.next_refit.filter(|r| *r <= to);
            match (timer, refit) {
                (Some(due), Some(r)) if r <= due => self.refit_at(r, observer),
                (None, Some(r)) => self.refit_at(r, observer),
                (Some(due), _) => {
                    let Some(Reverse((_, i, generation))) = self.timers.pop() else {
                        break;
                    };
                    if generation == self.generation[i] {
                        self.clock = Some(due);
                        self.assess_one(i, due, Trigger::Timer, observer);
                    }
                }
                (None, None) => break,
            }
        }
        self.clock = Some(to);
    }

    /// Fires everything due up to `as_of` and assesses every customer at `as_of`.
    pub fn finish(&mut self, as_of: Timestamp, observer: &mut impl Observer) {
        self.advance_to(as_of, observer);
        for i in 0..self.states.len() {
            let (assessment, changes) = assess(&mut self.states[i], as_of, &self.model);
            observer.assessed(&self.states[i], &assessment, changes, Trigger::Final);
        }
    }

    /// Refits the population models at `at` and uses the result from then on.
    pub fn refit(&mut self, at: Timestamp) -> PopulationFit {
        let mut summary = PopulationSummary::default();
        for s in &self.states {
            summary.add(s, at, &self.model.thresholds);
        }
        let fit = summary.fit(&self.model.params, &self.model.thresholds);
        self.model.params = fit.params;
        fit
    }

    fn refit_at(&mut self, at: Timestamp, observer: &mut impl Observer) {
        self.clock = Some(at);
        let fit = self.refit(at);
        observer.refitted(at, &fit);
        self.next_refit = self.refit_every_secs.map(|s| at.plus(s));
    }

    fn assess_one(
        &mut self,
        i: usize,
        now: Timestamp,
        trigger: Trigger,
        observer: &mut impl Observer,
    ) {
        let state = &mut self.states[i];
        let (assessment, changes) = assess(state, now, &self.model);
        observer.assessed(state, &assessment, changes, trigger);
        self.generation[i] += 1;
        if let Some(due) = next_evaluation_at(state, now, &self.model) {
            self.timers.push(Reverse((due, i, self.generation[i])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Order};
    use crate::money::CurrencyCode;
    use crate::stage::Stage;
    use crate::time::DAY;

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

    #[derive(Default)]
    struct Log(Vec<(String, Trigger, Option<Stage>)>);

    impl Observer for Log {
        fn assessed(&mut self, s: &CustomerState, _: &Assessment, c: Changes, trigger: Trigger) {
            self.0
                .push((s.customer_id.clone(), trigger, c.stage.map(|t| t.to)));
        }
    }

    #[test]
    fn a_customer_who_goes_silent_is_reached_by_timers_alone() {
        let mut replay = Replay::new(Model::default(), None);
        let mut log = Log::default();
        for n in 0..20 {
            replay.apply(&order("silent", n, i64::from(n) * 10), &mut log);
        }
        // Another customer's activity moves event time on; "silent" sends nothing more.
        for n in 0..40 {
            replay.apply(&order("busy", n, 200 + i64::from(n) * 10), &mut log);
        }
        let silent = replay.state("silent").unwrap();
        assert_eq!(
            silent.stage,
            Stage::Lost,
            "timers moved the silent customer to lost"
        );
        let lost_by = log
            .0
            .iter()
            .find(|(c, _, s)| c == "silent" && *s == Some(Stage::Lost))
            .unwrap();
        assert_eq!(lost_by.1, Trigger::Timer);
    }

    #[test]
    fn duplicates_are_counted_and_ignored() {
        let mut replay = Replay::new(Model::default(), None);
        replay.apply(&order("c", 1, 0), &mut Ignore);
        assert_eq!(
            replay.apply(&order("c", 1, 0), &mut Ignore),
            Applied::Duplicate
        );
        assert_eq!(replay.duplicates(), 1);
        assert_eq!(replay.state("c").unwrap().totals.orders, 1);
    }

    #[test]
    fn refits_happen_on_the_event_time_interval() {
        struct Count(u32);
        impl Observer for Count {
            fn assessed(&mut self, _: &CustomerState, _: &Assessment, _: Changes, _: Trigger) {}
            fn refitted(&mut self, _: Timestamp, _: &PopulationFit) {
                self.0 += 1;
            }
        }
        let mut replay = Replay::new(Model::default(), Some(30 * DAY));
        let mut count = Count(0);
        for n in 0..10 {
            replay.apply(&order("c", n, i64::from(n) * 31), &mut count);
        }
        assert_eq!(count.0, 9, "one refit per 30 days of event time crossed");
    }
}
