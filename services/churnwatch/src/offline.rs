//! Runs the domain core over a whole feed in-process: parse every line, replay the accepted
//! events on event time with silence timers and periodic refits, and keep what the reports
//! need. Shared by `eval` and the offline `demo`.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use churnwatch_core::engine::Output;
use churnwatch_core::population::PopulationFit;
use churnwatch_core::replay::{Observer, Replay};
use churnwatch_core::{
    Assessment, CustomerState, Event, Model, ParseConfig, RejectCode, RiskLevel, Stage, Timestamp,
    parse_event,
};
use indicatif::ProgressBar;

/// When each customer was flagged at high risk or above.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    /// The first time the level reached high.
    pub first_high: Option<Timestamp>,
    /// Start of the current uninterrupted spell at high or above.
    pub high_since: Option<Timestamp>,
}

/// Everything a core run leaves behind.
#[derive(Debug, Default)]
pub struct CoreRun {
    /// Lines read.
    pub lines: u64,
    /// Lines rejected by the parser, by reason.
    pub rejected: BTreeMap<RejectCode, u64>,
    /// Valid events dated after the as-of time, left out.
    pub after_as_of: u64,
    /// Events applied (duplicates excluded).
    pub applied: u64,
    /// Duplicate events ignored.
    pub duplicates: u64,
    /// Flag history per customer.
    pub flags: HashMap<String, Flags>,
    /// The closing assessment of every customer, by customer id.
    pub finals: BTreeMap<String, Assessment>,
    /// Model refits and their outcome, as (time, customers, BG/NBD ok, Gamma-Gamma ok).
    pub refits: Vec<(Timestamp, usize, bool, bool)>,
    /// The model in use at the end.
    pub model: Model,
    /// Risk-level changes emitted.
    pub risk_changes: u64,
    /// Stage changes emitted.
    pub stage_changes: u64,
    /// Stage changes emitted, by (from, to).
    pub stage_moves: BTreeMap<(Stage, Stage), u64>,
}

impl Observer for CoreRun {
    fn published(&mut self, output: &Output) {
        match output {
            Output::Stage(s) => {
                self.stage_changes += 1;
                *self.stage_moves.entry((s.from, s.to)).or_default() += 1;
            }
            Output::Risk(r) => {
                self.risk_changes += 1;
                let flags = self.flags.entry(r.customer_id.clone()).or_default();
                if r.level >= RiskLevel::High && r.previous_level < RiskLevel::High {
                    flags.first_high.get_or_insert(r.at);
                    flags.high_since = Some(r.at);
                } else if r.level < RiskLevel::High {
                    flags.high_since = None;
                }
            }
        }
    }

    fn finished(&mut self, state: &CustomerState, a: &Assessment) {
        self.finals.insert(state.customer_id.clone(), a.clone());
    }

    fn refitted(&mut self, at: Timestamp, fit: &PopulationFit) {
        self.refits.push((
            at,
            fit.customers,
            fit.bgnbd.is_ok(),
            fit.gamma_gamma.is_ok(),
        ));
    }
}

/// An event file parsed: the valid events in time order and what was rejected.
#[derive(Debug, Default)]
pub struct Feed {
    /// Lines read (blank ones excluded).
    pub lines: u64,
    /// Lines rejected by the parser, by reason.
    pub rejected: BTreeMap<RejectCode, u64>,
    /// The valid events, sorted by `occurred_at` (stable: a redelivery stays after its original).
    pub events: Vec<Event>,
}

/// Parses every line of a feed. No event is too far in the future here: a file is judged by
/// its own time, and the caller cuts it where it wants.
pub fn read_feed<I>(lines: I, parse: &ParseConfig, progress: &ProgressBar) -> Result<Feed>
where
    I: IntoIterator<Item = Result<Vec<u8>>>,
{
    let mut feed = Feed::default();
    let parse_now = Timestamp(i64::MAX / 4);
    progress.set_message("parsing");
    for line in lines {
        let line = line?;
        progress.inc(line.len() as u64 + 1);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        feed.lines += 1;
        match parse_event(&line, parse_now, parse) {
            Ok(e) => feed.events.push(e),
            Err(r) => *feed.rejected.entry(r.code).or_default() += 1,
        }
    }
    feed.events.sort_by_key(|e| e.occurred_at);
    Ok(feed)
}

/// Parses `lines`, replays the accepted events up to `as_of` (the latest event when `None`)
/// and returns the run and the as-of time used.
pub fn run_core<I>(
    lines: I,
    parse: &ParseConfig,
    model: Model,
    as_of: Option<Timestamp>,
    refit_every_secs: Option<i64>,
    progress: &ProgressBar,
) -> Result<(CoreRun, Timestamp, Replay)>
where
    I: IntoIterator<Item = Result<Vec<u8>>>,
{
    let mut feed = read_feed(lines, parse, progress)?;
    let mut run = CoreRun {
        lines: feed.lines,
        rejected: std::mem::take(&mut feed.rejected),
        ..CoreRun::default()
    };
    if let Some(t) = as_of {
        let kept = feed.events.partition_point(|e| e.occurred_at <= t);
        run.after_as_of = (feed.events.len() - kept) as u64;
        feed.events.truncate(kept);
    }
    let events = feed.events;
    let as_of = as_of
        .or_else(|| events.last().map(|e| e.occurred_at))
        .unwrap_or_default();

    progress.set_position(0);
    progress.set_length(events.len() as u64);
    progress.set_message("replaying");
    let mut replay = Replay::new(model, refit_every_secs);
    for (n, e) in events.iter().enumerate() {
        replay.apply(e, &mut run);
        if n % 4096 == 0 {
            progress.set_position(n as u64);
        }
    }
    progress.set_message("final assessment");
    // A refit at the end gives every customer the best parameters the whole history allows.
    replay.advance_to(as_of, &mut run);
    let fit = replay.refit(as_of);
    run.refitted(as_of, &fit);
    replay.finish(as_of, &mut run);
    progress.finish_and_clear();
    run.duplicates = replay.duplicates();
    run.applied = events.len() as u64 - run.duplicates;
    run.model = replay.model().clone();
    Ok((run, as_of, replay))
}
