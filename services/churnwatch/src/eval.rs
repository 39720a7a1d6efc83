//! `churnwatch eval`: runs the core over an event file and scores it against the generator's
//! ground truth: precision and recall of "level ≥ high" for churners, the lead time of the
//! alarm, the confusion of true archetypes against the stages churnwatch assigned, and each
//! campaign's measured uplift against its true effect.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use churnwatch_core::time::DAY;
use churnwatch_core::{RiskLevel, Stage, Timestamp};
use churnwatch_synth::{Archetype, TruthRecord};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::offline::CoreRun;
use crate::stdout::{out, outln};

/// Churners whose churn lies at least this long before the as-of time count as detectable.
pub const DETECTABLE_AFTER_DAYS: i64 = 60;

/// Precision, recall and lead time of the high-risk flag, and the stage confusion matrix.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// The evaluation time, RFC 3339.
    pub as_of: String,
    /// Lines read.
    pub lines: u64,
    /// Events applied.
    pub applied: u64,
    /// Duplicates ignored.
    pub duplicates: u64,
    /// Rejections by reason code.
    pub rejected: BTreeMap<String, u64>,
    /// Valid events after the as-of time.
    pub after_as_of: u64,
    /// Customers in the truth file.
    pub customers: usize,
    /// Churned by as-of and not back (one-time buyers count as churned since they bought).
    pub churners: u64,
    /// Customers at high or critical risk at as-of.
    pub flagged: u64,
    /// Flagged churners.
    pub true_positives: u64,
    /// true_positives / flagged.
    pub precision: f64,
    /// true_positives / churners.
    pub recall: f64,
    /// Recall over churners who churned at least `DETECTABLE_AFTER_DAYS` before as-of.
    pub recall_detectable: f64,
    /// Churn time minus the start of the standing high-risk alarm, in days, over flagged
    /// churners: positive when the alarm came before the churn.
    pub lead_time_days: LeadTime,
    /// Customers per (archetype, stage).
    pub stage_matrix: BTreeMap<String, BTreeMap<String, u64>>,
    /// Customers per risk level at as-of.
    pub risk_levels: BTreeMap<String, u64>,
    /// Each campaign's uplift, as the campaign report measures it, against its true effect.
    pub campaigns: Vec<CampaignCheck>,
    /// Stage changes published over the replay, by "from -> to".
    pub stage_moves: BTreeMap<String, u64>,
}

/// A campaign's measured uplift against the truth, over the same customers.
#[derive(Debug, Serialize)]
pub struct CampaignCheck {
    /// The campaign.
    pub campaign: String,
    /// Judged treated customers matched to controls: the customers both figures are over.
    pub matched: u64,
    /// The uplift the campaign report measures, against matched controls.
    pub measured_uplift: f64,
    /// Its 95% interval.
    pub low: f64,
    /// Its 95% interval.
    pub high: f64,
    /// The true effect on those customers: the share the campaign brought back within the
    /// follow-up window, who would not have ordered without it.
    pub true_effect: f64,
    /// Whether the true effect lies inside the interval.
    pub covered: bool,
}

/// Follow-up window of the campaign check, as the campaign report's default.
pub const CAMPAIGN_FOLLOW_UP_DAYS: i64 = 90;

/// Measures every campaign's uplift with the campaign report over the run's final profiles and
/// sets it against the truth's per-customer effects.
pub fn check_campaigns(
    run: &CoreRun,
    replay: &churnwatch_core::replay::Replay,
    truth: &[TruthRecord],
    as_of: Timestamp,
) -> Vec<CampaignCheck> {
    use churnwatch_core::campaign::CampaignAccumulator;
    use churnwatch_synth::CampaignEffect;

    let follow_up = CAMPAIGN_FOLLOW_UP_DAYS * DAY;
    let profiles: Vec<churnwatch_core::output::Profile> = replay
        .states()
        .filter_map(|s| {
            run.finals
                .get(&s.customer_id)
                .map(|a| churnwatch_core::output::profile(s, a))
        })
        .collect();
    let mut acc = CampaignAccumulator::new(follow_up, as_of);
    for p in &profiles {
        acc.add(p);
    }
    let ts = |t: time::OffsetDateTime| Timestamp(t.unix_timestamp());
    let truth: HashMap<&str, &TruthRecord> =
        truth.iter().map(|t| (t.customer_id.as_str(), t)).collect();
    // Per campaign: matched treated customers, of them brought back by it.
    let mut effects: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for p in &profiles {
        for (campaign, at) in acc.matched_actions(p) {
            let brought_back = truth.get(p.customer_id.as_str()).is_some_and(|t| {
                t.campaign_effect == Some(CampaignEffect::Resumed)
                    && t.reactivated_at
                        .map(ts)
                        .is_some_and(|r| r >= at && r.since(at) <= follow_up)
            });
            let e = effects.entry(campaign).or_default();
            e.0 += 1;
            e.1 += u64::from(brought_back);
        }
    }
    let report = acc.finish();
    report
        .campaigns
        .iter()
        .filter_map(|c| {
            let u = c.uplift?;
            let (n, back) = effects
                .get(c.campaign.as_str())
                .copied()
                .unwrap_or_default();
            let true_effect = ratio(back, n);
            Some(CampaignCheck {
                campaign: c.campaign.clone(),
                matched: u.matched,
                measured_uplift: u.uplift,
                low: u.low,
                high: u.high,
                true_effect,
                covered: u.low <= true_effect && true_effect <= u.high,
            })
        })
        .collect()
}

/// Quantiles of the lead time.
#[derive(Debug, Serialize, Default)]
pub struct LeadTime {
    /// Flagged churners measured.
    pub n: usize,
    /// 25th percentile.
    pub p25: Option<f64>,
    /// Median.
    pub median: Option<f64>,
    /// 75th percentile.
    pub p75: Option<f64>,
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Scores a core run against the truth at `as_of`.
pub fn score(run: &CoreRun, truth: &[TruthRecord], as_of: Timestamp) -> EvalReport {
    let ts = |t: time::OffsetDateTime| Timestamp(t.unix_timestamp());
    let (mut churners, mut flagged, mut tp, mut detectable, mut detected) = (0, 0, 0, 0, 0);
    let mut leads = Vec::new();
    let mut matrix: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut levels: BTreeMap<String, u64> = RiskLevel::ALL
        .iter()
        .map(|l| (l.as_str().to_owned(), 0))
        .collect();
    for t in truth {
        let final_ = run.finals.get(&t.customer_id);
        let stage = final_.map_or(Stage::Prospect, |a| a.stage);
        let level = final_.map_or(RiskLevel::Low, |a| a.risk_level);
        *levels.entry(level.as_str().to_owned()).or_default() += 1;
        *matrix
            .entry(t.archetype.as_str().to_owned())
            .or_default()
            .entry(stage.as_str().to_owned())
            .or_default() += 1;
        let is_flagged = level >= RiskLevel::High;
        flagged += u64::from(is_flagged);
        // A one-time buyer never orders again: it has churned since its first order, which
        // follows its signup within days.
        let churned = t
            .churned_at
            .or_else(|| {
                (t.archetype == Archetype::OneTime)
                    .then_some(t.signup_at)
                    .flatten()
            })
            .map(ts)
            .filter(|c| *c <= as_of);
        let back = t.reactivated_at.map(ts).is_some_and(|r| r <= as_of);
        let Some(churned_at) = churned.filter(|_| !back) else {
            continue;
        };
        churners += 1;
        let is_detectable = as_of.since(churned_at) >= DETECTABLE_AFTER_DAYS * DAY;
        detectable += u64::from(is_detectable);
        if is_flagged {
            tp += 1;
            detected += u64::from(is_detectable);
            if let Some(since) = run.flags.get(&t.customer_id).and_then(|f| f.high_since) {
                leads.push(churned_at.since(since) as f64 / DAY as f64);
            }
        }
    }
    leads.sort_by(f64::total_cmp);
    EvalReport {
        as_of: as_of.to_string(),
        lines: run.lines,
        applied: run.applied,
        duplicates: run.duplicates,
        rejected: run
            .rejected
            .iter()
            .map(|(c, n)| (c.as_str().to_owned(), *n))
            .collect(),
        after_as_of: run.after_as_of,
        customers: truth.len(),
        churners,
        flagged,
        true_positives: tp,
        precision: ratio(tp, flagged),
        recall: ratio(tp, churners),
        recall_detectable: ratio(detected, detectable),
        lead_time_days: LeadTime {
            n: leads.len(),
            p25: quantile(&leads, 0.25),
            median: quantile(&leads, 0.5),
            p75: quantile(&leads, 0.75),
        },
        stage_matrix: matrix,
        risk_levels: levels,
        campaigns: Vec::new(),
        stage_moves: run
            .stage_moves
            .iter()
            .map(|((from, to), n)| (format!("{from} -> {to}"), *n))
            .collect(),
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rejected: u64 = self.rejected.values().sum();
        writeln!(f, "churnwatch evaluation as of {}", self.as_of)?;
        writeln!(
            f,
            "  {} lines: {} events applied, {} duplicates ignored, {} rejected, {} after as-of",
            self.lines, self.applied, self.duplicates, rejected, self.after_as_of
        )?;
        if rejected > 0 {
            let list: Vec<String> = self
                .rejected
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            writeln!(f, "  rejected by reason: {}", list.join(", "))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Churn detection (level >= high at as-of, churned = stopped by as-of and not back; one-time buyers included)"
        )?;
        writeln!(
            f,
            "  churners {}   flagged {}   true positives {}",
            self.churners, self.flagged, self.true_positives
        )?;
        writeln!(
            f,
            "  precision {:.3}   recall {:.3}   recall on churns >= {DETECTABLE_AFTER_DAYS} days old {:.3}",
            self.precision, self.recall, self.recall_detectable
        )?;
        let days = |d: Option<f64>| d.map_or("-".to_owned(), |d| format!("{d:+.0}"));
        writeln!(
            f,
            "  lead time (churn time - alarm start, days; negative = alarm after the last order): median {} (p25 {}, p75 {}, n {})",
            days(self.lead_time_days.median),
            days(self.lead_time_days.p25),
            days(self.lead_time_days.p75),
            self.lead_time_days.n
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Stage confusion: true archetype (rows) against assigned stage (columns)"
        )?;
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        let mut header = vec![Cell::new("archetype")];
        header.extend(Stage::ALL.iter().map(|s| Cell::new(s.as_str())));
        header.push(Cell::new("total"));
        table.set_header(header);
        for archetype in Archetype::ALL {
            let Some(row) = self.stage_matrix.get(archetype.as_str()) else {
                continue;
            };
            let mut cells = vec![Cell::new(archetype.as_str())];
            for s in Stage::ALL {
                let n = row.get(s.as_str()).copied().unwrap_or(0);
                cells.push(Cell::new(n).set_alignment(CellAlignment::Right));
            }
            cells.push(Cell::new(row.values().sum::<u64>()).set_alignment(CellAlignment::Right));
            table.add_row(cells);
        }
        writeln!(f, "{table}")?;
        let levels: Vec<String> = RiskLevel::ALL
            .iter()
            .map(|l| format!("{l} {}", self.risk_levels.get(l.as_str()).unwrap_or(&0)))
            .collect();
        writeln!(f, "Risk levels at as-of: {}", levels.join(", "))?;
        let moves: Vec<String> = self
            .stage_moves
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        writeln!(f, "Stage moves over the replay: {}", moves.join(", "))?;
        if !self.campaigns.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "Campaigns: uplift against matched controls (order within {CAMPAIGN_FOLLOW_UP_DAYS} days) and the true effect on the same customers"
            )?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header([
                "campaign",
                "matched",
                "uplift",
                "95% interval",
                "true effect",
                "inside",
            ]);
            let pts = |x: f64| format!("{:+.1} pts", 100.0 * x);
            for c in &self.campaigns {
                table.add_row([
                    Cell::new(&c.campaign),
                    Cell::new(c.matched).set_alignment(CellAlignment::Right),
                    Cell::new(pts(c.measured_uplift)).set_alignment(CellAlignment::Right),
                    Cell::new(format!("{} to {}", pts(c.low), pts(c.high))),
                    Cell::new(pts(c.true_effect)).set_alignment(CellAlignment::Right),
                    Cell::new(if c.covered { "yes" } else { "no" }),
                ]);
            }
            writeln!(f, "{table}")?;
        }
        Ok(())
    }
}

/// Options shared by commands that run the core: money and model refits.
#[derive(Debug, Clone, clap::Args)]
pub struct CoreArgs {
    /// Currency all customer money is kept and reported in (ISO 4217).
    #[arg(long, default_value = "USD", value_parser = parse_currency)]
    pub reporting_currency: churnwatch_core::money::CurrencyCode,
    /// Exchange rates into the reporting currency, e.g. "EUR=1.08,GBP=1.27"; events in other
    /// currencies are rejected as unsupported_currency. The default holds the rates the
    /// synthetic generator priced with.
    #[arg(long, default_value = churnwatch_synth::FX_RATES_TO_USD)]
    pub fx_rates: String,
    /// Refit the BG/NBD and Gamma-Gamma models every this many days of event time.
    #[arg(long, default_value_t = 30)]
    pub refit_days: u32,
}

fn parse_currency(s: &str) -> Result<churnwatch_core::money::CurrencyCode, String> {
    churnwatch_core::money::CurrencyCode::parse(s)
        .ok_or_else(|| format!("{s:?} is not an ISO 4217 currency code such as USD"))
}

impl CoreArgs {
    /// Returns the parser configuration.
    pub fn parse_config(&self) -> anyhow::Result<churnwatch_core::ParseConfig> {
        let fx =
            churnwatch_core::money::FxTable::parse_rates(self.reporting_currency, &self.fx_rates)
                .map_err(|e| anyhow::anyhow!("--fx-rates: {e}"))?;
        Ok(churnwatch_core::ParseConfig {
            fx,
            ..churnwatch_core::ParseConfig::default()
        })
    }

    /// Returns the refit interval in seconds.
    pub fn refit_every_secs(&self) -> Option<i64> {
        (self.refit_days > 0).then(|| i64::from(self.refit_days) * DAY)
    }
}

/// Arguments of `churnwatch eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The events, one JSON object per line ("-" for standard input).
    #[arg(long)]
    pub events: std::path::PathBuf,
    /// The ground truth written by `churnwatch generate --truth`.
    #[arg(long)]
    pub truth: std::path::PathBuf,
    /// Evaluate as of this time (RFC 3339, or a date for its midnight UTC); events after it
    /// are left out. Defaults to the latest event.
    #[arg(long, value_parser = parse_time)]
    pub as_of: Option<Timestamp>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Days a core customer's risk must stay high before it becomes a core defector, and a
    /// defector's below high before it is core again (the scoring configuration's
    /// `stage_confirm_days`); 0 moves at the first assessment.
    #[arg(long, default_value_t = churnwatch_core::Thresholds::default().stage_confirm_days)]
    pub stage_confirm_days: f64,
    #[command(flatten)]
    pub core: CoreArgs,
}

/// Parses a time given on the command line: RFC 3339, or a bare date for its midnight UTC.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s)
        .or_else(|| {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(s, format)
                .ok()
                .map(|d| Timestamp(d.midnight().assume_utc().unix_timestamp()))
        })
        .ok_or_else(|| {
            format!("{s:?} is not a date such as 2026-01-01 or an RFC 3339 time such as 2026-01-01T12:00:00Z")
        })
}

/// Opens an events file ("-": standard input) as lines, with a progress bar over its bytes.
pub fn open_lines(
    path: &std::path::Path,
) -> anyhow::Result<(
    impl Iterator<Item = anyhow::Result<Vec<u8>>>,
    indicatif::ProgressBar,
)> {
    use anyhow::Context;
    use std::io::BufRead;

    let (reader, len): (Box<dyn std::io::Read>, u64) = if path.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open the events file {}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), len)
    };
    let shown = path.display().to_string();
    let lines = std::io::BufReader::with_capacity(1 << 20, reader)
        .split(b'\n')
        .map(move |l| l.with_context(|| format!("cannot read {shown}")));
    Ok((lines, crate::progress::bytes(len)))
}

/// Runs `churnwatch eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    use anyhow::Context;

    let parse = args.core.parse_config()?;
    let truth_file = std::fs::File::open(&args.truth)
        .with_context(|| format!("cannot open the truth file {}", args.truth.display()))?;
    let truth = churnwatch_synth::read_truth_csv(std::io::BufReader::new(truth_file))
        .with_context(|| {
            format!(
                "{} is not a truth file written by churnwatch generate",
                args.truth.display()
            )
        })?;

    let (lines, bar) = open_lines(&args.events)?;
    let thresholds = churnwatch_core::Thresholds {
        stage_confirm_days: args.stage_confirm_days,
        ..Default::default()
    };
    thresholds
        .validate()
        .map_err(|e| anyhow::anyhow!("--stage-confirm-days: {}", e.join("; ")))?;
    let (run, as_of, replay) = crate::offline::run_core(
        lines,
        &parse,
        churnwatch_core::Model {
            thresholds,
            ..Default::default()
        },
        args.as_of,
        args.core.refit_every_secs(),
        &bar,
    )?;
    let mut report = score(&run, &truth, as_of);
    report.campaigns = check_campaigns(&run, &replay, &truth, as_of);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{report}");
    }
    Ok(())
}
