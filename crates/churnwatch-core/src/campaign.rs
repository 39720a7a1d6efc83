//! The effect of retention campaigns, measured against matched controls.
//!
//! A retention action records the customer's standing when it was taken: its calibrated risk
//! probability, lifecycle stage and value tier. The comparison group is the at-risk spells no
//! action reached, each with the standing at the spell's start. Both are judged by the same
//! outcome, an order within the follow-up window; leaving the high and critical levels is
//! reported beside it, not as success.
//!
//! Treated and control customers are matched exactly on a stratum: the risk band (tenths of
//! the probability of no order in the risk horizon), the silence in usual gaps
//! ([`silence_bucket`]), the stage, the tier and the calendar quarter of the standing. A control's standings are taken at every change of band or silence
//! bucket during an at-risk spell, before the customer orders again. Because the risk is a calibrated probability, a
//! stratum holds customers with the same chance of ordering without help, so the difference in
//! order rates within it is the campaign's effect. The uplift is the average of those
//! differences weighted by the treated in each stratum (the effect on the treated); treated
//! customers in a stratum without controls (typically customers who were not at risk when
//! targeted: controls come from at-risk spells only) are counted as unmatched and left out.
//! The 95% interval is the normal approximation, with each rate's variance taken at the
//! Laplace-smoothed rate `(k + 1) / (n + 2)` so that a small stratum with no or only successes
//! does not claim certainty.
//!
//! **Status.** The uplift is not served yet (the gRPC report and the CLI show the outcome
//! rates only): `churnwatch eval` sets it against the generator's true campaign effects, and
//! there it is biased low by 10–30 points, with intervals that miss a true effect of zero. The
//! risk probability is not calibrated conditionally on a long silence (customers reached 3+
//! usual gaps into a silence order far less often than their risk says), so a stratum's
//! controls are not exchangeable with the treated. It is kept, with `eval`'s check, as the
//! yardstick for the next estimator.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::output::{Profile, RetentionSummary, Standing};
use crate::profit::ValueTier;
use crate::risk::RiskLevel;
use crate::stage::Stage;
use crate::time::Timestamp;

/// Risk bands the probability is cut into for matching: tenths.
pub const RISK_BANDS: u8 = 10;

/// The two-sided 95% quantile of the standard normal distribution.
const Z_95: f64 = 1.959_963_984_540_054;

/// How one group fared within the follow-up window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Customers whose follow-up window has fully passed (the others are not judged yet).
    pub judged: u64,
    /// Of those, the ones who ordered again within the window: the outcome.
    pub ordered_again: u64,
    /// Of those, the ones who left the high and critical levels within the window (reported
    /// beside the outcome; a customer can leave high risk without ordering).
    pub left_risk: u64,
}

impl Outcome {
    fn count(&mut self, ordered: bool, left: bool) {
        self.judged += 1;
        self.ordered_again += u64::from(ordered);
        self.left_risk += u64::from(left);
    }

    /// Returns the share who ordered again, `None` when nobody was judged.
    pub fn order_rate(&self) -> Option<f64> {
        (self.judged > 0).then(|| self.ordered_again as f64 / self.judged as f64)
    }
}

/// A campaign's effect on the customers it reached, against matched controls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Uplift {
    /// Judged treated customers in a stratum that has controls.
    pub matched: u64,
    /// Judged control customers in those strata.
    pub controls: u64,
    /// The treated customers' order rate.
    pub treated_order_rate: f64,
    /// The controls' order rate, weighted to the treated customers' strata: what the treated
    /// would have done without the campaign.
    pub control_order_rate: f64,
    /// The difference: orders the campaign brought per customer reached.
    pub uplift: f64,
    /// The lower end of its 95% interval.
    pub low: f64,
    /// The upper end of its 95% interval.
    pub high: f64,
}

/// One campaign's effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignResult {
    /// The campaign ("(none)" for actions given without one).
    pub campaign: String,
    /// Customers it targeted (among the actions profiles remember).
    pub targeted: u64,
    /// Of those, the ones at high or critical risk when targeted.
    pub targeted_at_risk: u64,
    /// How the targeted customers fared, all of them.
    pub outcome: Outcome,
    /// The effect against matched controls; `None` when no judged customer could be matched.
    pub uplift: Option<Uplift>,
    /// Judged customers without a control in their stratum (or whose profile predates the
    /// standing at the action), left out of the uplift.
    pub unmatched: u64,
}

/// The effect of retention campaigns against matched at-risk customers nobody targeted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignReport {
    /// The follow-up window, in seconds.
    pub follow_up_secs: i64,
    /// The time outcomes are judged at.
    pub as_of: Timestamp,
    /// One entry per campaign, most targeted first.
    pub campaigns: Vec<CampaignResult>,
    /// At-risk spells no retention action reached: the pool the controls are drawn from.
    pub untargeted_at_risk: Outcome,
}

/// What treated and control customers are matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Stratum {
    band: u8,
    silence: u8,
    stage: Stage,
    tier: ValueTier,
    quarter: i32,
}

/// Returns the silence bucket of a customer: whole usual gaps since its last order (0 to 4,
/// 4 standing for four or more), or for a customer without a usual gap (a one-time buyer)
/// 10 plus whole months of silence (10 to 14). Matching on it as well as on the risk band keeps
/// a customer reached deep into a silence from being compared with customers just entering
/// the same band.
pub fn silence_bucket(days_silent: Option<f64>, typical_gap_days: Option<f64>) -> u8 {
    let days = days_silent.unwrap_or(0.0).max(0.0);
    match typical_gap_days.filter(|g| *g > 0.0) {
        Some(gap) => (days / gap).floor().min(4.0) as u8,
        None => 10 + (days / 30.0).floor().min(4.0) as u8,
    }
}

/// Returns the risk band of a probability: 0 for [0, 0.1), …, 9 for [0.9, 1].
pub fn risk_band(risk: f64) -> u8 {
    ((risk.clamp(0.0, 1.0) * f64::from(RISK_BANDS)) as u8).min(RISK_BANDS - 1)
}

impl Stratum {
    fn of(s: &Standing) -> Self {
        Self {
            band: risk_band(s.risk),
            silence: s.silence,
            stage: s.stage,
            tier: s.tier,
            quarter: s.at.month().0.div_euclid(3),
        }
    }
}

/// Each campaign's first action in a profile, with the campaign's name ("(none)" for actions
/// without one): a customer targeted twice by one campaign counts once, by its first action.
fn first_actions(p: &Profile) -> impl Iterator<Item = (&str, &RetentionSummary)> {
    let mut seen: Vec<&str> = Vec::new();
    p.retention_actions.iter().filter_map(move |r| {
        let name = r.campaign.as_deref().unwrap_or("(none)");
        if seen.contains(&name) {
            None
        } else {
            seen.push(name);
            Some((name, r))
        }
    })
}

/// Orders within the follow-up window in one stratum: (customers, of them ordered).
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    n: u64,
    ordered: u64,
}

impl Cell {
    fn add(&mut self, ordered: bool) {
        self.n += 1;
        self.ordered += u64::from(ordered);
    }

    fn rate(self) -> f64 {
        self.ordered as f64 / self.n as f64
    }

    /// The variance of the rate, at the Laplace-smoothed rate.
    fn variance(self) -> f64 {
        let p = (self.ordered as f64 + 1.0) / (self.n as f64 + 2.0);
        p * (1.0 - p) / self.n as f64
    }
}

#[derive(Debug, Clone)]
struct Treated {
    result: CampaignResult,
    cells: BTreeMap<Stratum, Cell>,
}

/// Builds a [`CampaignReport`].
#[derive(Debug, Clone)]
pub struct CampaignAccumulator {
    follow_up: i64,
    as_of: Timestamp,
    campaigns: BTreeMap<String, Treated>,
    control: Outcome,
    controls: HashMap<Stratum, Cell>,
}

impl CampaignAccumulator {
    /// Starts a report judging outcomes within `follow_up_secs` of each action (or of the
    /// start of an untargeted at-risk spell), as of `as_of`.
    pub fn new(follow_up_secs: i64, as_of: Timestamp) -> Self {
        Self {
            follow_up: follow_up_secs,
            as_of,
            campaigns: BTreeMap::new(),
            control: Outcome::default(),
            controls: HashMap::new(),
        }
    }

    /// Counts one profile.
    pub fn add(&mut self, p: &Profile) {
        let within = |start: Timestamp, t: Option<Timestamp>| {
            t.is_some_and(|t| t >= start && t.since(start) <= self.follow_up)
        };
        let judged = |start: Timestamp| self.as_of.since(start) >= self.follow_up;
        for (name, r) in first_actions(p) {
            let c = self
                .campaigns
                .entry(name.to_owned())
                .or_insert_with(|| Treated {
                    result: CampaignResult {
                        campaign: name.to_owned(),
                        targeted: 0,
                        targeted_at_risk: 0,
                        outcome: Outcome::default(),
                        uplift: None,
                        unmatched: 0,
                    },
                    cells: BTreeMap::new(),
                });
            c.result.targeted += 1;
            c.result.targeted_at_risk += u64::from(r.level_at_action >= RiskLevel::High);
            if judged(r.at) {
                let ordered = within(r.at, r.ordered_again_at);
                c.result
                    .outcome
                    .count(ordered, within(r.at, r.left_risk_at));
                match r.standing.as_ref().map(Stratum::of) {
                    Some(s) => c.cells.entry(s).or_default().add(ordered),
                    None => c.result.unmatched += 1,
                }
            }
        }
        // A customer is one control per stratum (its earliest standing there): a customer who
        // keeps lapsing and returning would otherwise stand for many.
        let mut counted: Vec<Stratum> = Vec::new();
        for e in &p.risk_episodes {
            // A standing is a control when no action reached the customer from the spell's
            // start to the end of the standing's follow-up window.
            let unreached = |s: &Standing| {
                let end = s.at.plus(self.follow_up);
                !p.retention_actions
                    .iter()
                    .any(|r| r.at >= e.since && r.at <= end)
            };
            for (i, s) in e.standings.iter().enumerate() {
                if !judged(s.at) || !unreached(s) {
                    continue;
                }
                let ordered = within(s.at, e.ordered_again_at);
                if i == 0 {
                    self.control.count(ordered, within(s.at, e.left_risk_at));
                }
                let stratum = Stratum::of(s);
                if !counted.contains(&stratum) {
                    counted.push(stratum);
                    self.controls.entry(stratum).or_default().add(ordered);
                }
            }
        }
    }

    /// Returns the campaigns (with the action's time) for which `p`, a profile already added,
    /// counts among the matched treated customers: its first action of the campaign is judged
    /// and its stratum has controls. Call it once every profile has been added: for checking
    /// the uplift against a known truth on exactly the customers it is computed over.
    pub fn matched_actions<'p>(&self, p: &'p Profile) -> Vec<(&'p str, Timestamp)> {
        first_actions(p)
            .filter(|(_, r)| {
                self.as_of.since(r.at) >= self.follow_up
                    && r.standing
                        .as_ref()
                        .is_some_and(|s| self.controls.contains_key(&Stratum::of(s)))
            })
            .map(|(name, r)| (name, r.at))
            .collect()
    }

    /// Returns the report.
    pub fn finish(self) -> CampaignReport {
        let controls = self.controls;
        let mut campaigns: Vec<CampaignResult> = self
            .campaigns
            .into_values()
            .map(|t| {
                let mut result = t.result;
                let matched: Vec<(Cell, Cell)> = t
                    .cells
                    .iter()
                    .filter_map(|(s, treated)| match controls.get(s) {
                        Some(control) => Some((*treated, *control)),
                        None => {
                            result.unmatched += treated.n;
                            None
                        }
                    })
                    .collect();
                result.uplift = uplift(&matched);
                result
            })
            .collect();
        campaigns.sort_by(|a, b| {
            b.targeted
                .cmp(&a.targeted)
                .then_with(|| a.campaign.cmp(&b.campaign))
        });
        CampaignReport {
            follow_up_secs: self.follow_up,
            as_of: self.as_of,
            campaigns,
            untargeted_at_risk: self.control,
        }
    }
}

/// The effect on the treated over matched strata: (treated, control) cells.
fn uplift(strata: &[(Cell, Cell)]) -> Option<Uplift> {
    let matched: u64 = strata.iter().map(|(t, _)| t.n).sum();
    if matched == 0 {
        return None;
    }
    let total = matched as f64;
    let (mut treated_rate, mut control_rate, mut variance) = (0.0, 0.0, 0.0);
    for (t, c) in strata {
        let w = t.n as f64 / total;
        treated_rate += w * t.rate();
        control_rate += w * c.rate();
        variance += w * w * (t.variance() + c.variance());
    }
    let uplift = treated_rate - control_rate;
    let half = Z_95 * variance.sqrt();
    Some(Uplift {
        matched,
        controls: strata.iter().map(|(_, c)| c.n).sum(),
        treated_order_rate: treated_rate,
        control_order_rate: control_rate,
        uplift,
        low: uplift - half,
        high: uplift + half,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{action, day, every, replay};
    use crate::time::DAY;

    #[test]
    fn a_campaign_is_judged_against_at_risk_customers_nobody_reached() {
        // Both ordered every 20 days for 300 days and then went quiet; "saved" got an offer on
        // day 400 and ordered again from day 420 on, "ignored" got nothing and never came back.
        let mut events = every("saved", 0, 300, 20);
        events.push(action("saved", 400, "winback"));
        events.extend(every("saved", 420, 720, 20));
        events.extend(every("ignored", 0, 300, 20));
        let profiles = replay(events, 730);
        let saved = &profiles["saved"];
        assert_eq!(saved.retention_actions.len(), 1);
        let mark = &saved.retention_actions[0];
        assert_eq!(mark.ordered_again_at, Some(day(420)));
        assert!(
            mark.level_at_action >= RiskLevel::High,
            "silent for 100 days: at risk when the offer went out"
        );
        assert!(mark.standing.is_some_and(|s| s.risk > 0.5), "{mark:?}");
        let ignored = profiles["ignored"]
            .risk_episodes
            .last()
            .expect("ignored went at risk");
        assert_eq!(ignored.ordered_again_at, None);
        let cells: Vec<(u8, u8)> = ignored
            .standings
            .iter()
            .map(|s| (risk_band(s.risk), s.silence))
            .collect();
        assert!(!cells.is_empty(), "{ignored:?}");
        assert!(
            cells.windows(2).all(|w| w[0] < w[1]),
            "one standing per band and silence bucket, as the silence grows: {cells:?}"
        );

        let mut acc = CampaignAccumulator::new(90 * DAY, day(730));
        for p in profiles.values() {
            acc.add(p);
        }
        let r = acc.finish();
        assert_eq!(r.campaigns.len(), 1);
        let c = &r.campaigns[0];
        assert_eq!(
            (c.campaign.as_str(), c.targeted, c.targeted_at_risk),
            ("winback", 1, 1)
        );
        assert_eq!((c.outcome.judged, c.outcome.ordered_again), (1, 1));
        // Every spell the offer did not reach counts: "ignored"'s last one, which ended in
        // silence, and the brief ones between orders, which ended in an order.
        let pool = r.untargeted_at_risk;
        assert_eq!(pool.judged - pool.ordered_again, 1, "{r:?}");
        let offer = day(400);
        let brief = profiles
            .values()
            .flat_map(|p| &p.risk_episodes)
            .filter(|e| e.ordered_again_at.is_some())
            .filter(|e| !(e.since <= offer && offer <= e.since.plus(90 * DAY)))
            .count();
        assert_eq!(pool.ordered_again as usize, brief, "{r:?}");

        // Judged too early, nobody's follow-up window has passed.
        let mut early = CampaignAccumulator::new(90 * DAY, day(450));
        for p in profiles.values() {
            early.add(p);
        }
        assert_eq!(early.finish().campaigns[0].outcome.judged, 0);
    }

    fn cell(n: u64, ordered: u64) -> Cell {
        Cell { n, ordered }
    }

    #[test]
    fn the_uplift_weights_each_stratum_by_its_treated_and_its_interval_shrinks_with_size() {
        // Stratum 1: treated 30/100 ordered, controls 10/100; stratum 2: treated 50/100,
        // controls 50/100. Effect on the treated: (0.2 + 0) / 2.
        let u = uplift(&[
            (cell(100, 30), cell(100, 10)),
            (cell(100, 50), cell(100, 50)),
        ])
        .unwrap();
        assert!((u.uplift - 0.1).abs() < 1e-12, "{u:?}");
        assert!((u.treated_order_rate - 0.4).abs() < 1e-12);
        assert!((u.control_order_rate - 0.3).abs() < 1e-12);
        assert_eq!((u.matched, u.controls), (200, 200));
        assert!(u.low < 0.1 && 0.1 < u.high && u.low > 0.0, "{u:?}");
        let big = uplift(&[
            (cell(1000, 300), cell(1000, 100)),
            (cell(1000, 500), cell(1000, 500)),
        ])
        .unwrap();
        assert!(
            big.high - big.low < (u.high - u.low) / 3.0,
            "{big:?} vs {u:?}"
        );
        // A stratum of one treated and one control, both failing, is not certain.
        let tiny = uplift(&[(cell(1, 0), cell(1, 0))]).unwrap();
        assert!(tiny.low < -0.5 && tiny.high > 0.5, "{tiny:?}");
        assert_eq!(uplift(&[]), None);
    }

    #[test]
    fn a_treated_customer_is_compared_only_with_controls_in_its_stratum() {
        let base = replay(every("x", 0, 300, 20), 730)["x"].clone();
        let treated = |id: &str, risk: f64, ordered: bool| {
            let mut p = base.clone();
            p.customer_id = id.into();
            p.risk_episodes = vec![];
            p.retention_actions = vec![crate::output::RetentionSummary {
                at: day(400),
                action: "call".into(),
                campaign: Some("call".into()),
                level_at_action: RiskLevel::High,
                standing: Some(Standing {
                    at: day(400),
                    risk,
                    silence: 3,
                    stage: Stage::CoreDefector,
                    tier: ValueTier::B,
                }),
                ordered_again_at: ordered.then(|| day(410)),
                left_risk_at: None,
            }];
            p
        };
        let control = |id: &str, risk: f64, ordered: bool| {
            let mut p = base.clone();
            p.customer_id = id.into();
            p.retention_actions = vec![];
            p.risk_episodes = vec![crate::output::RiskSpell {
                since: day(380),
                standings: vec![Standing {
                    at: day(395),
                    risk,
                    silence: 3,
                    stage: Stage::CoreDefector,
                    tier: ValueTier::B,
                }],
                ordered_again_at: ordered.then(|| day(420)),
                left_risk_at: None,
            }];
            p
        };
        let mut acc = CampaignAccumulator::new(90 * DAY, day(730));
        // Band 0.8: both treated order, one of two controls does. Band 0.5: a treated customer
        // with no control there, which stays out. A control in band 0.3 has no treated.
        for p in [
            treated("t1", 0.85, true),
            treated("t2", 0.82, true),
            treated("t3", 0.55, false),
            control("c1", 0.81, true),
            control("c2", 0.88, false),
            control("c3", 0.33, true),
        ] {
            acc.add(&p);
        }
        let r = acc.finish();
        let c = &r.campaigns[0];
        assert_eq!((c.targeted, c.unmatched), (3, 1));
        let u = c.uplift.unwrap();
        assert_eq!((u.matched, u.controls), (2, 2));
        assert!((u.uplift - 0.5).abs() < 1e-12, "{u:?}");
        assert_eq!(r.untargeted_at_risk.judged, 3);
    }
}
