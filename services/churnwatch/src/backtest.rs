//! `churnwatch backtest`: measures the churn-risk score on a purchase history against what
//! happened next. The history is replayed through the same engine the scoring service runs, up
//! to each cut-off (rolling origin); every customer who has ordered by then is labelled by
//! whether it placed no order in the horizon after the cut-off, and the risk score is compared
//! with simple baselines computed in the same run (recency, frequency, BG/NBD expected purchases,
//! P(alive), BG/NBD's own probability of no purchase and the previous scoring rule): ranking (ROC
//! AUC, PR AUC, lift in the top decile), calibration (Brier score, expected calibration error,
//! a reliability table) and precision and recall at each risk level. With the generator's truth
//! file the oracle's AUC (from the true latent state) shows how far from the best possible the
//! score is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use churnwatch_core::churn;
use churnwatch_core::event::EventKind;
use churnwatch_core::quality::{self, Calibration, Ranking, ReliabilityBin};
use churnwatch_core::replay::{Ignore, Replay};
use churnwatch_core::time::DAY;
use churnwatch_core::{Model, RiskLevel, Thresholds, Timestamp, evaluate};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::eval::{CoreArgs, open_lines, parse_time};
use crate::stdout::{out, outln};

/// Arguments of `churnwatch backtest`.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// The purchase history, one JSON event per line ("-" for standard input), in any order.
    #[arg(long)]
    pub events: PathBuf,
    /// A cut-off to score at (a date such as 2025-06-01, or RFC 3339); repeat it for several.
    /// [default: three cut-offs, one, two and three horizons before the latest event]
    #[arg(long = "cutoff", value_parser = parse_time)]
    pub cutoffs: Vec<Timestamp>,
    /// The horizon in days: a customer is positive ("churned") when it places no order in the
    /// horizon after the cut-off. The risk score is fitted and served for the same horizon.
    #[arg(long, default_value_t = 90)]
    pub horizon_days: u32,
    /// The generator's truth file (`churnwatch generate --truth`), for the oracle's AUC.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// The BG/NBD parameters r,alpha,a,b the history was generated with (`churnwatch generate
    /// --process bgnbd --bgnbd ...`): adds the posterior oracle, BG/NBD's probability of no
    /// purchase under the true parameters, the best any score can do from purchase histories
    /// drawn from that process.
    #[arg(long, value_parser = crate::generate::parse_bgnbd)]
    pub true_bgnbd: Option<churnwatch_synth::BgNbdProcess>,
    /// Bins of the reliability table.
    #[arg(long, default_value_t = 10)]
    pub bins: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub core: CoreArgs,
}

/// One score's quality at one cut-off.
#[derive(Debug, Serialize)]
pub struct ScoreQuality {
    /// The score's name.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// How well it ranks.
    pub ranking: Ranking,
    /// How well it is calibrated, for scores that claim to be probabilities.
    pub calibration: Option<Calibration>,
}

/// Precision and recall of flagging customers at a risk level or above.
#[derive(Debug, Serialize)]
pub struct LevelQuality {
    /// The level.
    pub level: &'static str,
    /// Customers at it or above.
    pub flagged: usize,
    /// Of them, the share who placed no order in the horizon.
    pub precision: Option<f64>,
    /// Of the customers who placed no order, the share flagged.
    pub recall: Option<f64>,
}

/// What the risk model was at the cut-off.
#[derive(Debug, Serialize)]
pub struct ModelInUse {
    /// Whether the risk model was fitted on back-labelled history (false: BG/NBD alone).
    pub risk_model_fitted: bool,
    /// Customers it was fitted on.
    pub risk_model_samples: u32,
    /// The weights, by feature name.
    pub risk_model_weights: BTreeMap<&'static str, f64>,
    /// BG/NBD r, alpha, a, b.
    pub bgnbd: [f64; 4],
}

/// The backtest at one cut-off.
#[derive(Debug, Serialize)]
pub struct CutoffReport {
    /// The cut-off, RFC 3339.
    pub cutoff: String,
    /// The horizon in days.
    pub horizon_days: u32,
    /// Customers who had ordered by the cut-off.
    pub customers: usize,
    /// Of them, placed no order in the horizon.
    pub silent: usize,
    /// Of them, one-time buyers at the cut-off.
    pub one_time_buyers: usize,
    /// Every score's quality.
    pub scores: Vec<ScoreQuality>,
    /// The risk score's quality among repeat customers only.
    pub repeat_customers: Option<Ranking>,
    /// Precision and recall at each risk level.
    pub levels: Vec<LevelQuality>,
    /// The model in use.
    pub model: ModelInUse,
}

/// The whole backtest.
#[derive(Debug, Serialize)]
pub struct BacktestReport {
    /// Lines read.
    pub lines: u64,
    /// Events replayed.
    pub events: usize,
    /// Lines rejected by the parser, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// One report per cut-off, earliest first.
    pub cutoffs: Vec<CutoffReport>,
}

/// A score of every customer at a cut-off: higher means more likely to place no order.
struct Column {
    name: &'static str,
    description: &'static str,
    probability: bool,
    values: Vec<f64>,
}

/// Truth the generator knows about a customer: when it stopped (and came back), and its
/// order rate while active, if the generator records one.
struct Latent {
    churned_at: Option<Timestamp>,
    reactivated_at: Option<Timestamp>,
    rate_per_day: Option<f64>,
}

impl Latent {
    /// The oracle's probability of no order in `(cutoff, cutoff + horizon]`: certain for a
    /// customer stopped at the cut-off, e^(−rate·horizon) for an active one.
    fn p_none(&self, cutoff: Timestamp, horizon_days: f64) -> Option<f64> {
        let stopped = self.churned_at.is_some_and(|c| c <= cutoff)
            && self.reactivated_at.is_none_or(|r| r > cutoff);
        if stopped {
            return Some(1.0);
        }
        self.rate_per_day.map(|rate| (-rate * horizon_days).exp())
    }
}

fn read_truth(path: &std::path::Path) -> Result<HashMap<String, Latent>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the truth file {}", path.display()))?;
    let truth =
        churnwatch_synth::read_truth_csv(std::io::BufReader::new(file)).with_context(|| {
            format!(
                "{} is not a truth file written by churnwatch generate",
                path.display()
            )
        })?;
    let ts = |t: time::OffsetDateTime| Timestamp(t.unix_timestamp());
    Ok(truth
        .into_iter()
        .map(|t| {
            let latent = Latent {
                churned_at: t.churned_at.map(ts),
                reactivated_at: t.reactivated_at.map(ts),
                rate_per_day: t.order_rate_per_day,
            };
            (t.customer_id, latent)
        })
        .collect())
}

/// Runs `churnwatch backtest`.
pub fn run(args: &BacktestArgs) -> Result<()> {
    anyhow::ensure!(args.horizon_days >= 1, "--horizon-days must be at least 1");
    anyhow::ensure!(args.bins >= 1, "--bins must be at least 1");
    let parse = args.core.parse_config()?;
    let truth = args.truth.as_deref().map(read_truth).transpose()?;
    let (lines, bar) = open_lines(&args.events)?;
    let feed = crate::offline::read_feed(lines, &parse, &bar)?;
    bar.finish_and_clear();
    anyhow::ensure!(
        !feed.events.is_empty(),
        "{} holds no valid event to backtest on",
        args.events.display()
    );
    let horizon = i64::from(args.horizon_days) * DAY;
    let mut cutoffs = args.cutoffs.clone();
    if cutoffs.is_empty() {
        let last = feed
            .events
            .last()
            .map(|e| e.occurred_at)
            .unwrap_or_default();
        cutoffs = (1..=3).rev().map(|k| last.plus(-k * horizon)).collect();
    }
    cutoffs.sort_unstable();
    cutoffs.dedup();
    let first = feed.events[0].occurred_at;
    anyhow::ensure!(
        cutoffs[0] > first,
        "the cut-off {} lies before the first event ({first}); choose cut-offs inside the history",
        cutoffs[0]
    );

    let thresholds = Thresholds {
        risk_horizon_days: f64::from(args.horizon_days),
        ..Thresholds::default()
    };
    let mut replay = Replay::new(
        Model {
            params: Default::default(),
            thresholds,
        },
        args.core.refit_every_secs(),
    );
    let bar = crate::progress::items(feed.events.len() as u64, "events");
    bar.set_message("replaying");
    let mut next = 0;
    let mut reports = Vec::new();
    for cutoff in cutoffs {
        while next < feed.events.len() && feed.events[next].occurred_at <= cutoff {
            replay.apply(&feed.events[next], &mut Ignore);
            next += 1;
            if next % 4096 == 0 {
                bar.set_position(next as u64);
            }
        }
        replay.advance_to(cutoff, &mut Ignore);
        // Fit on everything known at the cut-off, as a live refit would.
        replay.refit(cutoff);
        let ordered: HashSet<&str> = feed.events[next..]
            .iter()
            .take_while(|e| e.occurred_at <= cutoff.plus(horizon))
            .filter(|e| matches!(e.kind, EventKind::Order(_)))
            .map(|e| e.customer_id.as_str())
            .collect();
        reports.push(score_cutoff(
            &replay,
            cutoff,
            &ordered,
            truth.as_ref(),
            args,
        ));
    }
    bar.finish_and_clear();
    let report = BacktestReport {
        lines: feed.lines,
        events: feed.events.len(),
        rejected: feed
            .rejected
            .iter()
            .map(|(c, n)| (c.as_str().to_owned(), *n))
            .collect(),
        cutoffs: reports,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{report}");
    }
    Ok(())
}

fn score_cutoff(
    replay: &Replay,
    cutoff: Timestamp,
    ordered: &HashSet<&str>,
    truth: Option<&HashMap<String, Latent>>,
    args: &BacktestArgs,
) -> CutoffReport {
    let model = replay.model();
    let t = &model.thresholds;
    let bgnbd = &model.params.bgnbd;
    let horizon_weeks = f64::from(args.horizon_days) / 7.0;
    let mut columns = vec![
        Column {
            name: "risk_score",
            description: "churnwatch: calibrated P(no order in the horizon)",
            probability: true,
            values: vec![],
        },
        Column {
            name: "bgnbd_p_none",
            description: "BG/NBD P(no purchase in the horizon) alone",
            probability: true,
            values: vec![],
        },
        Column {
            name: "recency",
            description: "days since the last order",
            probability: false,
            values: vec![],
        },
        Column {
            name: "frequency",
            description: "fewer purchase occasions",
            probability: false,
            values: vec![],
        },
        Column {
            name: "bgnbd_expected",
            description: "fewer BG/NBD expected purchases in the horizon",
            probability: false,
            values: vec![],
        },
        Column {
            name: "p_alive",
            description: "1 - BG/NBD P(alive)",
            probability: false,
            values: vec![],
        },
        Column {
            name: "previous_rule",
            description: "the previous scoring rule (signals combined by fixed weights)",
            probability: false,
            values: vec![],
        },
    ];
    let mut oracle = Column {
        name: "oracle",
        description: "the generator's true latent state (rate, stopped or not): a ceiling",
        probability: true,
        values: vec![],
    };
    let truth_params = args.true_bgnbd.map(|p| churnwatch_core::btyd::BgNbdParams {
        r: p.r,
        alpha: p.alpha,
        a: p.a,
        b: p.b,
    });
    let mut posterior = Column {
        name: "oracle_posterior",
        description: "BG/NBD P(no purchase) under the true parameters: the best from the data",
        probability: true,
        values: vec![],
    };
    let mut labels = Vec::new();
    let mut levels = Vec::new();
    let mut repeat = Vec::new();
    let mut one_time = 0;
    let mut oracle_complete = truth.is_some();
    let mut states: Vec<_> = replay.states().filter(|s| s.totals.orders > 0).collect();
    states.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    for state in states {
        let Some(s) = churnwatch_core::assess::rfm_summary(state, cutoff, t) else {
            continue;
        };
        let a = evaluate(state, cutoff, model);
        let silent = !ordered.contains(state.customer_id.as_str());
        labels.push(silent);
        levels.push(a.risk_level);
        one_time += usize::from(s.x == 0.0);
        if s.x > 0.0 {
            repeat.push((a.risk_score, silent));
        }
        let values = [
            a.risk_score,
            bgnbd.p_no_purchase(horizon_weeks, s.x, s.t_x, s.t),
            a.days_since_last_order.unwrap_or(0.0),
            -(s.x + 1.0),
            -bgnbd.expected_purchases(horizon_weeks, s.x, s.t_x, s.t),
            1.0 - bgnbd.p_alive(s.x, s.t_x, s.t),
            churn::legacy_score(state, cutoff, bgnbd, t),
        ];
        if let Some(p) = &truth_params {
            posterior
                .values
                .push(p.p_no_purchase(horizon_weeks, s.x, s.t_x, s.t));
        }
        for (c, v) in columns.iter_mut().zip(values) {
            c.values.push(v);
        }
        if let Some(truth) = truth {
            match truth
                .get(&state.customer_id)
                .and_then(|l| l.p_none(cutoff, f64::from(args.horizon_days)))
            {
                Some(p) => oracle.values.push(p),
                None => oracle_complete = false,
            }
        }
    }
    if truth_params.is_some() {
        columns.push(posterior);
    }
    if oracle_complete {
        columns.push(oracle);
    }
    let scored = |values: &[f64]| -> Vec<(f64, bool)> {
        values.iter().copied().zip(labels.iter().copied()).collect()
    };
    let scores = columns
        .iter()
        .map(|c| {
            let pairs = scored(&c.values);
            ScoreQuality {
                name: c.name,
                description: c.description,
                ranking: quality::ranking(&pairs),
                calibration: c
                    .probability
                    .then(|| quality::calibration(&pairs, args.bins)),
            }
        })
        .collect();
    let positives = labels.iter().filter(|l| **l).count();
    let level_quality = RiskLevel::ALL[1..]
        .iter()
        .map(|level| {
            let flagged: Vec<bool> = levels
                .iter()
                .zip(&labels)
                .filter(|(l, _)| **l >= *level)
                .map(|(_, s)| *s)
                .collect();
            let hits = flagged.iter().filter(|s| **s).count();
            LevelQuality {
                level: level.as_str(),
                flagged: flagged.len(),
                precision: (!flagged.is_empty()).then(|| hits as f64 / flagged.len() as f64),
                recall: (positives > 0).then(|| hits as f64 / positives as f64),
            }
        })
        .collect();
    let risk = model.params.risk;
    CutoffReport {
        cutoff: cutoff.to_string(),
        horizon_days: args.horizon_days,
        customers: labels.len(),
        silent: positives,
        one_time_buyers: one_time,
        scores,
        repeat_customers: (!repeat.is_empty()).then(|| quality::ranking(&repeat)),
        levels: level_quality,
        model: ModelInUse {
            risk_model_fitted: risk.is_fitted(),
            risk_model_samples: risk.samples,
            risk_model_weights: churn::Feature::ALL
                .iter()
                .map(|f| (f.as_str(), risk.weights[*f as usize]))
                .chain([("intercept", risk.intercept)])
                .collect(),
            bgnbd: [bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b],
        },
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.3}"))
}

fn right<T: fmt::Display>(v: T) -> Cell {
    Cell::new(v).set_alignment(CellAlignment::Right)
}

impl fmt::Display for BacktestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rejected: u64 = self.rejected.values().sum();
        writeln!(
            f,
            "churnwatch backtest: {} lines, {} events replayed, {} rejected",
            self.lines, self.events, rejected
        )?;
        for c in &self.cutoffs {
            writeln!(f)?;
            writeln!(
                f,
                "Cut-off {} - horizon {} days: {} customers had ordered, {} ({:.1}%) placed no order in the horizon; {} one-time buyers",
                c.cutoff,
                c.horizon_days,
                c.customers,
                c.silent,
                100.0 * c.silent as f64 / c.customers.max(1) as f64,
                c.one_time_buyers
            )?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header([
                "score",
                "ROC AUC",
                "PR AUC",
                "lift top 10%",
                "Brier",
                "ECE",
                "what it is",
            ]);
            for s in &c.scores {
                table.add_row(vec![
                    Cell::new(s.name),
                    right(opt(s.ranking.roc_auc)),
                    right(opt(s.ranking.pr_auc)),
                    right(opt(s.ranking.lift_top_decile)),
                    right(opt(s.calibration.as_ref().map(|c| c.brier))),
                    right(opt(s.calibration.as_ref().map(|c| c.ece))),
                    Cell::new(s.description),
                ]);
            }
            writeln!(f, "{table}")?;
            if let Some(r) = &c.repeat_customers {
                writeln!(
                    f,
                    "  risk_score among the {} repeat customers: ROC AUC {}",
                    r.n,
                    opt(r.roc_auc)
                )?;
            }
            let levels: Vec<String> = c
                .levels
                .iter()
                .map(|l| {
                    format!(
                        "{}+ {} flagged, precision {}, recall {}",
                        l.level,
                        l.flagged,
                        opt(l.precision),
                        opt(l.recall)
                    )
                })
                .collect();
            writeln!(f, "  risk levels: {}", levels.join("; "))?;
            if let Some(cal) = c.scores.first().and_then(|s| s.calibration.as_ref()) {
                writeln!(
                    f,
                    "  reliability of risk_score (predicted -> observed, customers):"
                )?;
                let bins: Vec<String> = cal
                    .reliability
                    .iter()
                    .map(|b: &ReliabilityBin| {
                        format!(
                            "[{:.1},{:.1}) {:.2}->{:.2} n={}",
                            b.lo, b.hi, b.mean_score, b.observed, b.n
                        )
                    })
                    .collect();
                for chunk in bins.chunks(4) {
                    writeln!(f, "    {}", chunk.join("   "))?;
                }
            }
            writeln!(
                f,
                "  model: risk model {} ({} customers), BG/NBD r {:.3} alpha {:.3} a {:.3} b {:.3}",
                if c.model.risk_model_fitted {
                    "fitted"
                } else {
                    "prior (BG/NBD alone)"
                },
                c.model.risk_model_samples,
                c.model.bgnbd[0],
                c.model.bgnbd[1],
                c.model.bgnbd[2],
                c.model.bgnbd[3]
            )?;
        }
        Ok(())
    }
}
