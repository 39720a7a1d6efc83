//! `churnwatch fit`: refits the population models of a scoring store on demand.

use std::path::PathBuf;

use anyhow::{Context, Result};
use churnwatch_core::{Model, Thresholds, Timestamp};

use crate::stdout::outln;

/// Arguments of `churnwatch fit`.
#[derive(Debug, clap::Args)]
pub struct FitArgs {
    /// The scoring state directory. A running scoring holds it locked: send that process
    /// SIGHUP (`kill -HUP <pid>`) to refit it instead.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Fit as of this time (a date such as 2025-10-01, or RFC 3339) [default: the newest event
    /// time the store has seen, its watermark: right for a store scored on the event clock,
    /// and close to now for a live one].
    #[arg(long, value_parser = crate::eval::parse_time)]
    pub as_of: Option<Timestamp>,
    /// The scoring TOML configuration, for its [thresholds] (the value-tier cuts and the
    /// population summary use them) [default: built-in thresholds].
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs `churnwatch fit`.
pub fn run(args: &FitArgs) -> Result<()> {
    anyhow::ensure!(
        args.state_dir.is_dir(),
        "--state-dir {} does not exist; give the directory scoring keeps its state in",
        args.state_dir.display()
    );
    let store = churnwatch_store::Store::open(&args.state_dir).map_err(|e| {
        let text = e.to_string();
        if text.contains("lock") || text.contains("WouldBlock") || text.contains("temporarily unavailable") {
            anyhow::anyhow!(
                "{text}\nthe store is in use by a running scoring; send that process SIGHUP (kill -HUP <pid>) to refit it now"
            )
        } else {
            anyhow::Error::new(e)
        }
    })?;
    let model = Model {
        params: store.model_params()?.unwrap_or_default(),
        thresholds: match &args.config {
            Some(path) => {
                let config: scoring::ScoringConfig =
                    churnwatch_runtime::layered(Some(path), serde_json::json!({}))?;
                config.thresholds
            }
            None => Thresholds::default(),
        },
    };
    let partitions = store
        .partitions()
        .into_iter()
        .map(|p| store.partition(p))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&churnwatch_store::Partition> = partitions.iter().collect();
    let watermark = partitions
        .iter()
        .map(|p| p.watermark())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .max();
    let now = match (args.as_of, watermark) {
        (Some(t), _) => t,
        (None, Some(w)) => {
            outln!("as of the store's watermark {w} (--as-of to choose another time)");
            w
        }
        (None, None) => churnwatch_runtime::wall_now(),
    };
    let spinner = crate::progress::spinner("fitting");
    let fit = scoring::refit_population(&store, &refs, &model, now)
        .context("the refit could not be stored")?;
    spinner.finish_and_clear();
    let b = fit.params.bgnbd;
    let g = fit.params.gamma_gamma;
    outln!("customers: {}", fit.customers);
    match &fit.bgnbd {
        Ok(_) => outln!(
            "BG/NBD:      r {:.4}  alpha {:.4}  a {:.4}  b {:.4}",
            b.r,
            b.alpha,
            b.a,
            b.b
        ),
        Err(e) => outln!(
            "BG/NBD:      not refitted ({e}); kept r {:.4}  alpha {:.4}  a {:.4}  b {:.4}",
            b.r,
            b.alpha,
            b.a,
            b.b
        ),
    }
    match &fit.risk {
        Ok(m) => outln!(
            "risk model:  fitted on {} back-labelled customers, {:.1}% of them silent over the {:.0} days after (a step of the {}-day horizon)",
            m.samples,
            100.0 * m.base_rate,
            m.step_days,
            m.horizon_days
        ),
        Err(e) => outln!("risk model:  not refitted ({e})"),
    }
    match &fit.gamma_gamma {
        Ok(_) => outln!("Gamma-Gamma: p {:.4}  q {:.4}  v {:.4}", g.p, g.q, g.v),
        Err(e) => outln!(
            "Gamma-Gamma: not refitted ({e}); kept p {:.4}  q {:.4}  v {:.4}",
            g.p,
            g.q,
            g.v
        ),
    }
    outln!(
        "stored in {}; scoring serves them from its next start",
        args.state_dir.display()
    );
    Ok(())
}
