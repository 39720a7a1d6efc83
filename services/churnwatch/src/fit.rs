//! `churnwatch fit`: refits the population models of a scoring store on demand.

use std::path::PathBuf;

use anyhow::{Context, Result};
use churnwatch_core::{Model, Thresholds, Timestamp};

/// Arguments of `churnwatch fit`.
#[derive(Debug, clap::Args)]
pub struct FitArgs {
    /// The scoring state directory. A running scoring holds it locked: send that process
    /// SIGHUP (`kill -HUP <pid>`) to refit it instead.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Fit as of this time (RFC 3339) [default: now; for a store scored on the event clock,
    /// pass its latest event time].
    #[arg(long, value_parser = parse_time)]
    pub as_of: Option<Timestamp>,
    /// The scoring TOML configuration, for its [thresholds] (the value-tier cuts and the
    /// population summary use them) [default: built-in thresholds].
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z"))
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
    let now = args.as_of.unwrap_or_else(churnwatch_runtime::wall_now);
    let spinner = crate::progress::spinner("fitting");
    let fit = scoring::refit_population(&store, &refs, &model, now)
        .context("the refit could not be stored")?;
    spinner.finish_and_clear();
    let b = fit.params.bgnbd;
    let g = fit.params.gamma_gamma;
    println!("customers: {}", fit.customers);
    match &fit.bgnbd {
        Ok(_) => println!(
            "BG/NBD:      r {:.4}  alpha {:.4}  a {:.4}  b {:.4}",
            b.r, b.alpha, b.a, b.b
        ),
        Err(e) => println!(
            "BG/NBD:      not refitted ({e}); kept r {:.4}  alpha {:.4}  a {:.4}  b {:.4}",
            b.r, b.alpha, b.a, b.b
        ),
    }
    match &fit.gamma_gamma {
        Ok(_) => println!("Gamma-Gamma: p {:.4}  q {:.4}  v {:.4}", g.p, g.q, g.v),
        Err(e) => println!(
            "Gamma-Gamma: not refitted ({e}); kept p {:.4}  q {:.4}  v {:.4}",
            g.p, g.q, g.v
        ),
    }
    println!(
        "stored in {}; scoring uses them from its next start",
        args.state_dir.display()
    );
    Ok(())
}
