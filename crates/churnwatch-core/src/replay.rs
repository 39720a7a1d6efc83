//! An in-memory replay of a whole population on event time, through the same [`Engine`] the
//! scoring service runs per partition: events are applied in order, customers are assessed
//! after their events and whenever their silence timers fall due, and the population models are
//! refitted on a fixed event-time interval. Used by offline evaluation, the in-process demo and
//! as the reference the streaming pipeline is checked against.

use std::collections::HashMap;
use std::convert::Infallible;

use crate::assess::{Assessment, Model, assess};
use crate::engine::{Clock, Engine, Output, StateStore, TimerIndex, Work};
use crate::event::Event;
use crate::population::{PopulationFit, PopulationSummary};
use crate::state::{Applied, CustomerState};
use crate::time::Timestamp;

/// Receives what a replay publishes.
pub trait Observer {
    /// Called for every change event, in order.
    fn published(&mut self, output: &Output);
    /// Called for every customer's closing assessment by [`Replay::finish`].
    fn finished(&mut self, _state: &CustomerState, _assessment: &Assessment) {}
    /// Called after each model refit.
    fn refitted(&mut self, _at: Timestamp, _fit: &PopulationFit) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ignore;

impl Observer for Ignore {
    fn published(&mut self, _: &Output) {}
}

/// The states of a replay, kept in memory.
#[derive(Debug, Default)]
struct Memory {
    states: HashMap<String, CustomerState>,
}

impl StateStore for Memory {
    type Error = Infallible;

    fn load(&mut self, customer_id: &str) -> Result<Option<CustomerState>, Infallible> {
        // The engine hands the state back through `Work`; taking it avoids a clone.
        Ok(self.states.remove(customer_id))
    }

    fn seen(&mut self, _event_id: &str, _occurred_at: Timestamp) -> Result<bool, Infallible> {
        // In memory there is no event-id index beyond what each state remembers.
        Ok(false)
    }
}

/// A population replayed on event time.
#[derive(Debug)]
pub struct Replay {
    engine: Engine,
    memory: Memory,
    refit_every_secs: Option<i64>,
    next_refit: Option<Timestamp>,
    duplicates: u64,
}

impl Replay {
    /// Returns an empty replay evaluating with `model`, refitting every `refit_every_secs` of
    /// event time (never, when `None`).
    pub fn new(model: Model, refit_every_secs: Option<i64>) -> Self {
        Self {
            engine: Engine::new(
                model,
                Clock::Event { lateness_secs: 0 },
                None,
                TimerIndex::default(),
            ),
            memory: Memory::default(),
            refit_every_secs: refit_every_secs.filter(|s| *s > 0),
            next_refit: None,
            duplicates: 0,
        }
    }

    /// Returns the model in use.
    pub fn model(&self) -> &Model {
        &self.engine.model
    }

    /// Returns every customer's state, in no particular order.
    pub fn states(&self) -> impl Iterator<Item = &CustomerState> {
        self.memory.states.values()
    }

    /// Returns a customer's state.
    pub fn state(&self, customer_id: &str) -> Option<&CustomerState> {
        self.memory.states.get(customer_id)
    }

    /// Returns the duplicate events ignored so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Returns the pending timers.
    pub fn pending_timers(&self) -> usize {
        self.engine.timers().len()
    }

    /// Applies one event (in event-time order), first firing the timers and refits due before it.
    pub fn apply(&mut self, event: &Event, observer: &mut impl Observer) -> Applied {
        self.refits_until(event.occurred_at, observer);
        let mut work = Work::default();
        let Ok(outcome) =
            self.engine
                .on_event(&mut work, &mut self.memory, event, event.occurred_at);
        self.duplicates += work.stats.duplicates;
        self.commit(work, observer);
        outcome
    }

    /// Moves the clock to `to`, firing every timer and refit due up to then, in time order.
    pub fn advance_to(&mut self, to: Timestamp, observer: &mut impl Observer) {
        self.refits_until(to, observer);
        let mut work = Work::default();
        let Ok(()) = self.engine.advance(&mut work, &mut self.memory, to);
        self.commit(work, observer);
    }

    /// Fires everything due up to `as_of` and assesses every customer at `as_of`.
    pub fn finish(&mut self, as_of: Timestamp, observer: &mut impl Observer) {
        self.advance_to(as_of, observer);
        let mut ids: Vec<String> = self.memory.states.keys().cloned().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(state) = self.memory.states.get_mut(&id) {
                let at = state.last_assessed_at.map_or(as_of, |l| l.max(as_of));
                let (assessment, _) = assess(state, at, &self.engine.model);
                observer.finished(state, &assessment);
            }
        }
    }

    /// Refits the population models at `at` and uses the result from then on.
    pub fn refit(&mut self, at: Timestamp) -> PopulationFit {
        let mut summary = PopulationSummary::default();
        for s in self.memory.states.values() {
            summary.add(s, at, &self.engine.model.thresholds);
        }
        let fit = summary.fit(&self.engine.model.params, &self.engine.model.thresholds);
        self.engine.model.params = fit.params;
        fit
    }

    fn refits_until(&mut self, to: Timestamp, observer: &mut impl Observer) {
        let Some(every) = self.refit_every_secs else {
            return;
        };
        let next = *self.next_refit.get_or_insert(to.plus(every));
        if next > to {
            return;
        }
        // Timers due before the refit see the old parameters.
        let mut work = Work::default();
        let Ok(()) = self.engine.advance(&mut work, &mut self.memory, next);
        self.commit(work, observer);
        let fit = self.refit(next);
        observer.refitted(next, &fit);
        self.next_refit = Some(next.plus(every));
        self.refits_until(to, observer);
    }

    fn commit(&mut self, work: Work, observer: &mut impl Observer) {
        for output in &work.outputs {
            observer.published(output);
        }
        self.memory.states.extend(work.states);
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
    struct Log(Vec<Output>, u32);

    impl Observer for Log {
        fn published(&mut self, output: &Output) {
            self.0.push(output.clone());
        }
        fn refitted(&mut self, _: Timestamp, _: &PopulationFit) {
            self.1 += 1;
        }
    }

    #[test]
    fn a_customer_who_goes_silent_is_reached_by_timers_alone() {
        let mut replay = Replay::new(Model::default(), None);
        let mut log = Log::default();
        for n in 0..20 {
            replay.apply(&order("silent", n, i64::from(n) * 10), &mut log);
        }
        let last_order = Timestamp(1_704_067_200 + 190 * DAY);
        // Another customer's activity moves event time on; "silent" sends nothing more.
        for n in 0..40 {
            replay.apply(&order("busy", n, 200 + i64::from(n) * 10), &mut log);
        }
        assert_eq!(replay.state("silent").unwrap().stage, Stage::Lost);
        let lost = log
            .0
            .iter()
            .find_map(|o| match o {
                Output::Stage(s) if s.customer_id == "silent" && s.to == Stage::Lost => Some(s),
                _ => None,
            })
            .expect("a stage event for the silent customer");
        assert_eq!(lost.at, last_order.plus(180 * DAY));
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
        let mut replay = Replay::new(Model::default(), Some(30 * DAY));
        let mut log = Log::default();
        for n in 0..10 {
            replay.apply(&order("c", n, i64::from(n) * 31), &mut log);
        }
        assert_eq!(log.1, 9, "one refit per 30 days of event time crossed");
    }

    /// Replays a weekly core customer who falls silent for `gap` days, then orders weekly
    /// again, with `confirm` days of `stage_confirm_days`; returns its stage events and the
    /// risk events that put it at high risk.
    fn stage_moves_through_a_gap(gap: i64, confirm: f64) -> (Vec<Output>, Vec<Timestamp>) {
        let model = Model {
            thresholds: crate::Thresholds {
                stage_confirm_days: confirm,
                ..Default::default()
            },
            ..Model::default()
        };
        let mut replay = Replay::new(model, None);
        let mut log = Log::default();
        let mut day = 0;
        for n in 0..30 {
            replay.apply(&order("c", n, day), &mut log);
            day += if n == 19 { gap } else { 7 };
        }
        let stages = log
            .0
            .iter()
            .filter(|o| matches!(o, Output::Stage(_)))
            .cloned()
            .collect();
        let high = log
            .0
            .iter()
            .filter_map(|o| match o {
                Output::Risk(r)
                    if r.level >= crate::RiskLevel::High
                        && r.previous_level < crate::RiskLevel::High =>
                {
                    Some(r.at)
                }
                _ => None,
            })
            .collect();
        (stages, high)
    }

    fn moves(stages: &[Output]) -> Vec<(Stage, Stage)> {
        stages
            .iter()
            .filter_map(|o| match o {
                Output::Stage(s) => Some((s.from, s.to)),
                Output::Risk(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_core_customer_defects_only_once_its_high_risk_has_lasted() {
        use Stage::*;
        let path = [
            (Prospect, FirstTime),
            (FirstTime, EarlyRepeat),
            (EarlyRepeat, Core),
        ];
        // A 40-day gap in a weekly habit puts the risk at high for a while: with no
        // confirmation that is a defection and a recovery; held to 14 days, it is neither
        // when the spell is shorter.
        let (flap, high) = stage_moves_through_a_gap(40, 0.0);
        assert!(!high.is_empty(), "the gap raised the risk to high");
        let mut want = path.to_vec();
        want.extend([(Core, CoreDefector), (CoreDefector, Core)]);
        assert_eq!(moves(&flap), want);
        let (held, high) = stage_moves_through_a_gap(40, 30.0);
        assert!(!high.is_empty());
        assert_eq!(moves(&held), path.to_vec(), "a spell shorter than 30 days");
        // A long silence is a defection, dated when the high risk had lasted 14 days (a timer
        // notices it then), and one order back is not yet a recovery: 14 days below high are.
        let (long, high) = stage_moves_through_a_gap(120, 14.0);
        let mut want = path.to_vec();
        want.extend([(Core, CoreDefector), (CoreDefector, Core)]);
        assert_eq!(moves(&long), want);
        let at = |from: Stage, to: Stage| {
            long.iter()
                .find_map(|o| match o {
                    Output::Stage(s) if (s.from, s.to) == (from, to) => Some(s.at),
                    _ => None,
                })
                .unwrap()
        };
        let gap_from = Timestamp(1_704_067_200 + 19 * 7 * DAY);
        let high_in_gap = high.iter().find(|h| **h > gap_from).unwrap();
        assert_eq!(at(Core, CoreDefector), high_in_gap.plus(14 * DAY));
        let back = gap_from.plus(120 * DAY);
        let recovered = at(CoreDefector, Core);
        assert!(recovered >= back.plus(14 * DAY), "{recovered} vs {back}");
    }
}
