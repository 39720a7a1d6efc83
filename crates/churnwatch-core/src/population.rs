//! Population-wide fitting: gathers every customer's BTYD summaries, 12-month margin and
//! back-labelled history, then fits BG/NBD, Gamma-Gamma, the value-tier cuts and the churn-risk
//! model in one go.

use crate::assess::{ModelParams, margin_12m, rfm_summary, spend_summary};
use crate::btyd::{BgNbdParams, FitError, FitReport, GammaGammaParams, RfmSummary, SpendSummary};
use crate::churn::{RiskFitError, RiskModel, TrainingSet};
use crate::config::Thresholds;
use crate::profit::TierCuts;
use crate::state::CustomerState;
use crate::time::Timestamp;

/// Summaries of a population, gathered one customer at a time (so a store can stream them).
#[derive(Debug, Clone, Default)]
pub struct PopulationSummary {
    rfm: Vec<RfmSummary>,
    spend: Vec<SpendSummary>,
    margins: Vec<i64>,
    training: Option<TrainingSet>,
    customers: usize,
}

/// The outcome of a population fit: new parameters, with the fits that failed left at their
/// previous values and their errors reported.
#[derive(Debug)]
pub struct PopulationFit {
    /// The parameters to use from now on.
    pub params: ModelParams,
    /// The BG/NBD fit, or why it failed.
    pub bgnbd: Result<FitReport<BgNbdParams>, FitError>,
    /// The Gamma-Gamma fit, or why it failed.
    pub gamma_gamma: Result<FitReport<GammaGammaParams>, FitError>,
    /// The churn-risk model fit, or why there was none.
    pub risk: Result<RiskModel, RiskFitError>,
    /// Whether the tier cuts were recomputed (false when no customer had a positive margin).
    pub tiers_updated: bool,
    /// Customers looked at.
    pub customers: usize,
}

impl PopulationSummary {
    /// Adds one customer as of `now`.
    pub fn add(&mut self, state: &CustomerState, now: Timestamp, t: &Thresholds) {
        self.customers += 1;
        self.training
            .get_or_insert_with(|| TrainingSet::new(now, t))
            .add(state);
        if let Some(s) = rfm_summary(state, now, t) {
            self.rfm.push(s);
            self.margins.push(margin_12m(state, now, t));
        }
        if let Some(s) = spend_summary(state).filter(|s| s.x > 1.0) {
            self.spend.push(s);
        }
    }

    /// Returns the customers added.
    pub fn customers(&self) -> usize {
        self.customers
    }

    /// Fits every model, starting from (and falling back to) `previous`.
    pub fn fit(mut self, previous: &ModelParams, t: &Thresholds) -> PopulationFit {
        let bgnbd = BgNbdParams::fit(&self.rfm, Some(previous.bgnbd));
        let gamma_gamma = GammaGammaParams::fit(&self.spend, Some(previous.gamma_gamma));
        let tiers = TierCuts::from_margins(&mut self.margins, t);
        let bgnbd_params = bgnbd.as_ref().map_or(previous.bgnbd, |r| r.params);
        let risk = self
            .training
            .as_ref()
            .map_or(Err(RiskFitError::NoCustomers), |training| {
                training.fit(&bgnbd_params, t)
            });
        let params = ModelParams {
            bgnbd: bgnbd_params,
            gamma_gamma: gamma_gamma
                .as_ref()
                .map_or(previous.gamma_gamma, |r| r.params),
            tiers: tiers.unwrap_or(previous.tiers),
            risk: risk.as_ref().map_or(previous.risk, |m| *m),
        };
        PopulationFit {
            params,
            bgnbd,
            gamma_gamma,
            risk,
            tiers_updated: tiers.is_some(),
            customers: self.customers,
        }
    }
}
