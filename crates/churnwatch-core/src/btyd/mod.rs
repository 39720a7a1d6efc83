//! BTYD ("buy till you die") models for the churnwatch domain core: the BG/NBD model of
//! repeat-purchase counts and silent dropout (Fader, Hardie & Lee 2005, "Counting Your
//! Customers the Easy Way: An Alternative to the Pareto/NBD Model") and the Gamma-Gamma model of
//! spend per transaction (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves for
//! Customer Base Analysis"). The module holds the likelihoods, the per-customer predictions used
//! while scoring events (probability of being alive, expected purchases, expected spend) and
//! maximum-likelihood fitting over log-parameters: BFGS on analytic gradients, with restarted
//! Nelder-Mead as a fallback. Everything here is a pure function of its arguments: no clock,
//! no I/O, and the per-event predictions do not allocate.

use std::ops::Range;

use argmin::core::{CostFunction, Executor, State, TerminationReason};
use argmin::solver::neldermead::NelderMead;
use serde::{Deserialize, Serialize};
use statrs::function::gamma::{digamma, ln_gamma};

mod bgnbd;
mod gamma_gamma;
mod optim;
mod special;

pub use bgnbd::BgNbdParams;
pub use gamma_gamma::GammaGammaParams;
pub use special::hyp2f1;

use self::{optim::*, special::*};

/// Minimum number of valid customer summaries a fit accepts.
///
/// Four (BG/NBD) or three (Gamma-Gamma) parameters estimated from fewer customers than this
/// swing wildly from one refit to the next; the weak default prior is the better answer then.
pub const MIN_CUSTOMERS_TO_FIT: usize = 50;

/// One customer's purchase summary in the model's time unit (the caller uses weeks).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RfmSummary {
    /// Number of repeat purchases: orders − 1.
    pub x: f64,
    /// Time of the last purchase, measured from the first purchase.
    pub t_x: f64,
    /// Age of the customer (the paper's T): time from the first purchase to the present.
    pub t: f64,
}

impl RfmSummary {
    /// Returns whether the summary can enter the BG/NBD likelihood.
    ///
    /// A valid summary has finite fields, a repeat-purchase count `x` that is either zero or at
    /// least one (the model counts whole purchases, and `b + x − 1` must stay positive), and
    /// `0 ≤ t_x ≤ t`.
    pub fn is_valid(&self) -> bool {
        self.x.is_finite()
            && self.t_x.is_finite()
            && self.t.is_finite()
            && (self.x == 0.0 || self.x >= 1.0)
            && self.t_x >= 0.0
            && self.t >= self.t_x
    }
}

/// One customer's spend summary for the Gamma-Gamma model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpendSummary {
    /// Number of transactions the mean is over (> 0).
    pub x: f64,
    /// Mean value of those transactions (> 0).
    pub mean_spend: f64,
}

impl SpendSummary {
    /// Returns whether the summary can enter the Gamma-Gamma likelihood: both fields finite and
    /// positive.
    pub fn is_valid(&self) -> bool {
        self.x.is_finite() && self.mean_spend.is_finite() && self.x > 0.0 && self.mean_spend > 0.0
    }
}

/// Outcome of a successful maximum-likelihood fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitReport<P> {
    /// The fitted parameters.
    pub params: P,
    /// Log-likelihood of the fitted parameters over the customers used.
    pub log_likelihood: f64,
    /// Optimizer iterations: quasi-Newton iterations plus any Nelder-Mead iterations.
    pub iterations: u64,
    /// Number of valid customer summaries the fit used.
    pub customers: usize,
}

/// Reasons a BTYD fit produces no parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Too few valid customer summaries to estimate the parameters reliably.
    #[error(
        "too few customers to fit the model: need at least {needed} valid summaries, got {got}; keep using the default parameters"
    )]
    TooFewCustomers {
        /// The minimum, [`MIN_CUSTOMERS_TO_FIT`].
        needed: usize,
        /// Valid summaries found.
        got: usize,
    },
    /// The starting parameters are not all finite and positive.
    #[error("starting parameters must all be finite and positive")]
    InvalidStart,
    /// The optimizer kept improving the likelihood until its iteration caps ran out.
    #[error(
        "the fit did not converge after {iterations} iterations (log-likelihood {log_likelihood}); check the summaries' time unit or pass a closer start"
    )]
    NoConvergence {
        /// Optimizer iterations, as in [`FitReport::iterations`].
        iterations: u64,
        /// Best log-likelihood reached, summed over customers.
        log_likelihood: f64,
    },
    /// The likelihood is not finite at the start or at the optimum.
    #[error(
        "the log-likelihood is not finite for these data; check for extreme summaries or pass a different start"
    )]
    NonFinite,
    /// The optimizer library reported an error.
    #[error("the optimizer failed: {0}")]
    Solver(String),
}

/// Simulated populations and published estimates, shared by these tests and the fit bench.
#[cfg(test)]
mod simulate;

#[cfg(test)]
mod tests;
