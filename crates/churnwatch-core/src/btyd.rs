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

/// Minimum number of valid customer summaries a fit accepts.
///
/// Four (BG/NBD) or three (Gamma-Gamma) parameters estimated from fewer customers than this
/// swing wildly from one refit to the next; the weak default prior is the better answer then.
pub const MIN_CUSTOMERS_TO_FIT: usize = 50;

/// Relative tolerance at which [`hyp2f1`] stops summing.
const HYP2F1_TOLERANCE: f64 = 1e-10;

/// Maximum number of series terms [`hyp2f1`] sums before returning its partial sum.
const HYP2F1_MAX_TERMS: u32 = 10_000;

/// Largest absolute log-parameter the optimizer may visit; beyond it the cost is infinite.
///
/// e^20 ≈ 5·10^8 is far outside any plausible parameter, and the bound keeps a degenerate data
/// set from walking the optimizer towards overflow.
const LOG_PARAM_BOUND: f64 = 20.0;

/// Distance from the edge of the search box, in log-parameter units, within which a parameter
/// pushed outwards by the gradient is held still: 1% of e^±20 makes no difference, while
/// letting the one parameter crawl the rest of the way would dominate every step.
const EDGE_MARGIN: f64 = 0.01;

/// Quasi-Newton iteration cap; a fit that needs more continues with Nelder-Mead.
const MAX_QUASI_NEWTON_ITERS: u64 = 200;

/// Longest step along any log-parameter one quasi-Newton iteration may take: a factor of e.
///
/// The first steps from a cold start are taken before any curvature is known, and the cap
/// keeps them from leaping to where the likelihood underflows.
const MAX_STEP: f64 = 1.0;

/// Relative parameter change below which the quasi-Newton iteration has converged.
const PARAM_TOLERANCE: f64 = 1e-8;

/// Improvement of the mean log-likelihood per customer below which, twice in a row, the
/// quasi-Newton iteration has converged although the parameters still move.
const FLAT_TOLERANCE: f64 = 1e-12;

/// Longest predicted step, in log-parameter units, that the quasi-Newton iteration takes
/// without a line search once the improvement it predicts is below [`FLAT_TOLERANCE`].
const FINAL_STEP: f64 = 1e-4;

/// Fraction of the predicted decrease a line-search step must achieve (Armijo's constant).
const ARMIJO: f64 = 1e-4;

/// Relative size below which step·(change of gradient) counts as no curvature at all.
const CURVATURE_FLOOR: f64 = 1e-10;

/// Largest absolute log-parameter of a start or a result that [`minimize`] trusts on its own.
const FAR_OUT: f64 = 10.0;

/// Log-parameter step of the finite differences behind the first quasi-Newton iteration's
/// Hessian.
const HESSIAN_STEP: f64 = 1e-4;

/// Argument from which [`ln_gamma_ratio`] and [`digamma_ratio`] use asymptotic series.
const ASYMPTOTIC_MIN: f64 = 16.0;

/// Nelder-Mead iteration cap for one run (one simplex) of the fallback.
const MAX_ITERS_PER_RUN: u64 = 2_000;

/// Maximum number of Nelder-Mead runs of the fallback (the first plus restarts).
const MAX_RUNS: usize = 4;

/// Simplex edge, in log-parameter units, of each Nelder-Mead run: the fallback starts where
/// the quasi-Newton iteration stopped, close to the optimum.
const SIMPLEX_STEP: f64 = 0.05;

/// Spread of the simplex costs (mean negative log-likelihood per customer) that ends a run.
const SD_TOLERANCE: f64 = 1e-11;

/// Improvement in mean negative log-likelihood per customer below which a Nelder-Mead run
/// confirms convergence.
const CONVERGED_IMPROVEMENT: f64 = 1e-10;

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

/// Parameters of the BG/NBD model.
///
/// While alive a customer buys as a Poisson process with rate λ ~ Gamma(shape `r`, rate
/// `alpha`); after each repeat purchase the customer drops out with probability
/// p ~ Beta(`a`, `b`). `alpha` carries the time unit of the data it was fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgNbdParams {
    /// Shape of the purchase-rate distribution.
    pub r: f64,
    /// Rate (inverse time scale) of the purchase-rate distribution.
    pub alpha: f64,
    /// First shape of the dropout-probability distribution.
    pub a: f64,
    /// Second shape of the dropout-probability distribution.
    pub b: f64,
}

impl Default for BgNbdParams {
    /// Returns a weak prior, in weeks, used before any fit.
    ///
    /// The values sit near the published CDNOW estimates (r = 0.243, α = 4.414, a = 0.793,
    /// b = 2.426): a purchase every few months on average, and roughly a one-in-four chance of
    /// dropping out after each repeat purchase.
    fn default() -> Self {
        Self {
            r: 0.25,
            alpha: 4.0,
            a: 0.8,
            b: 2.5,
        }
    }
}

impl BgNbdParams {
    /// Returns whether every parameter is finite and positive.
    pub fn is_valid(&self) -> bool {
        [self.r, self.alpha, self.a, self.b]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0)
    }

    /// Returns the log-likelihood of one customer's summary, or NaN if the summary is invalid
    /// (see [`RfmSummary::is_valid`]).
    ///
    /// This is FHL (2005) equation 6 in logs: ln A₁ + ln A₂ + ln(A₃ + δ_{x>0} A₄), arranged so
    /// that no two large terms cancel (see `BgNbdSample::log_likelihood_and_gradient`).
    pub fn log_likelihood_one(&self, s: &RfmSummary) -> f64 {
        if !s.is_valid() {
            return f64::NAN;
        }
        let Self { r, alpha, a, b } = *self;
        let (x, t_x, t) = (s.x, s.t_x, s.t);
        let u = (t / alpha).ln_1p();
        let counts = ln_gamma_ratio(r, x) + ln_gamma_ratio(b, x) - ln_gamma_ratio(a + b, x);
        let recency = -(r + x) * u - x * alpha.ln();
        if x > 0.0 {
            counts + recency + softplus_and_logistic(self.ln_dropout_odds(x, t_x, t)).0
        } else {
            counts + recency
        }
    }

    /// Returns the summed log-likelihood of the valid summaries in `data`; invalid ones are
    /// skipped, as [`BgNbdParams::fit`] skips them.
    pub fn log_likelihood(&self, data: &[RfmSummary]) -> f64 {
        data.iter()
            .filter(|s| s.is_valid())
            .map(|s| self.log_likelihood_one(s))
            .sum()
    }

    /// Returns P(alive | x, t_x, T): the probability that a customer with `x` repeat purchases,
    /// the last at `t_x`, is still active at age `t` (FHL 2005, equation 13).
    ///
    /// A customer without repeat purchases has had no chance to drop out, so the model gives
    /// exactly 1. Inputs are clamped rather than rejected because this runs once per event:
    /// `x` below one counts as zero, negative or non-finite times count as zero, and `t_x` is
    /// capped at `t`. The result is in [0, 1] for valid parameters; it is computed from the
    /// log-odds of dropout, so `x` in the thousands and ages in the hundreds of weeks neither
    /// overflow nor produce NaN. Allocation-free.
    pub fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64 {
        let (x, t_x, t) = clamp_rfm(x, t_x, t);
        self.p_alive_clamped(x, t_x, t)
    }

    /// Returns E[X(horizon) | x, t_x, T]: the expected number of purchases in the next
    /// `horizon` time units of a customer with `x` repeat purchases, the last at `t_x`, at age
    /// `t` (FHL 2005, equation 10).
    ///
    /// The paper's form, (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+h))^{r+x} ₂F₁(r+x, b+x; a+b+x−1; z)]
    /// · P(alive) with z = h/(α+T+h), raises a ratio to the power r+x and multiplies it by a
    /// ₂F₁ that grows like the inverse power, which overflows for large `x`. Euler's
    /// transformation ₂F₁(A, B; C; z) = (1−z)^{C−A−B} ₂F₁(C−A, C−B; C; z) cancels the two
    /// exactly, leaving [1 − u^{a−1} ₂F₁(a+b−1−r, a−1; a+b+x−1; z)] with u = 1 − z, whose
    /// series converges faster the larger `x` is. The removable singularity at a = 1 is taken
    /// care of by the reduced series behind [`hyp2f1`] and by `exp_m1`.
    ///
    /// Inputs are clamped like [`BgNbdParams::p_alive`]; a non-positive or NaN horizon yields
    /// 0, and an infinite one the lifetime expectation (a+b+x−1)/(a−1) · P(alive), or infinity
    /// when a ≤ 1. The result is finite and non-negative for valid parameters and finite
    /// horizons. Allocation-free.
    pub fn expected_purchases(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        let (x, t_x, t) = clamp_rfm(x, t_x, t);
        let p_alive = self.p_alive_clamped(x, t_x, t);
        self.expected_purchases_clamped(horizon, x, t, p_alive)
    }

    /// Returns E[X(h) | x, T, alive] for each horizon `h`: the expected purchases of a customer
    /// with `x` repeat purchases at age `t` who has not dropped out yet (future dropout still
    /// counts). Dead customers buy nothing, so this is [`BgNbdParams::expected_purchases`]
    /// divided by P(alive), computed without the division. With `x` = 0 and `t` = 0 it is the
    /// unconditional expectation E[X(h)] of a new customer (FHL 2005, equation 9): the
    /// population's expectation. Inputs are clamped like [`BgNbdParams::p_alive`].
    pub fn expected_purchases_if_alive<const N: usize>(
        &self,
        horizons: [f64; N],
        x: f64,
        t: f64,
    ) -> [f64; N] {
        let (x, _, t) = clamp_rfm(x, 0.0, t);
        horizons.map(|h| self.expected_purchases_clamped(h, x, t, 1.0))
    }

    /// Returns P(X(T, T+h) = 0 | x, t_x, T): the probability that a customer with `x` repeat
    /// purchases, the last at `t_x`, makes no purchase in the next `horizon` time units.
    ///
    /// A customer who has dropped out buys nothing; one still alive buys as a Poisson process
    /// and, under BG/NBD, can only drop out right after a purchase, so none in the horizon has
    /// probability e^{−λh}. Alive, λ | data ~ Gamma(r + x, α + T), whose Laplace transform gives
    /// ((α+T)/(α+T+h))^{r+x}. Hence 1 − P(alive) + P(alive)·((α+T)/(α+T+h))^{r+x}. For a
    /// customer without repeat purchases it rises with the silence T. Inputs are clamped like
    /// [`BgNbdParams::p_alive`]; a non-positive or NaN horizon yields 1.
    /// Allocation-free.
    pub fn p_no_purchase(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        let (x, t_x, t) = clamp_rfm(x, t_x, t);
        if horizon.is_nan() || horizon <= 0.0 {
            return 1.0;
        }
        let p_alive = self.p_alive_clamped(x, t_x, t);
        let none_if_alive = (-(self.r + x) * (horizon / (self.alpha + t)).ln_1p()).exp();
        (1.0 - p_alive + p_alive * none_if_alive).clamp(0.0, 1.0)
    }

    /// Returns P(alive) and E[X(h) | x, t_x, T] for each horizon `h` in one go, computing
    /// P(alive) once: what an evaluation needs per customer.
    pub fn predict<const N: usize>(
        &self,
        horizons: [f64; N],
        x: f64,
        t_x: f64,
        t: f64,
    ) -> (f64, [f64; N]) {
        let (x, t_x, t) = clamp_rfm(x, t_x, t);
        let p_alive = self.p_alive_clamped(x, t_x, t);
        (
            p_alive,
            horizons.map(|h| self.expected_purchases_clamped(h, x, t, p_alive)),
        )
    }

    /// `expected_purchases` on clamped inputs with P(alive) already known.
    fn expected_purchases_clamped(&self, horizon: f64, x: f64, t: f64, p_alive: f64) -> f64 {
        if horizon.is_nan() || horizon <= 0.0 {
            return 0.0;
        }
        let eps = self.a - 1.0;
        let c = self.a + self.b + x - 1.0;
        let z = horizon / (self.alpha + t + horizon);
        // An infinite horizon makes z = ∞/∞ = NaN; a finite one that dwarfs α + T rounds z to 1.
        if z.is_nan() || z >= 1.0 {
            // Either way u^{a−1} has reached its limit.
            return if eps > 0.0 {
                (c / eps * p_alive).max(0.0)
            } else {
                f64::INFINITY
            };
        }
        let ln_u = -(horizon / (self.alpha + t)).ln_1p();
        // (1 − u^ε)/ε, written so that ε → 0 tends to −ln u instead of 0/0.
        let one_minus_u_eps_over_eps = if eps == 0.0 {
            -ln_u
        } else {
            -(eps * ln_u).exp_m1() / eps
        };
        let a_prime = self.a + self.b - 1.0 - self.r;
        let tail = hyp2f1_reduced_tail(a_prime, eps, c, z);
        // c · [1 − u^ε ₂F₁(a', ε; c; z)] / ε with ₂F₁ = 1 + (a'ε/c)·tail.
        let bracket = c * one_minus_u_eps_over_eps - (eps * ln_u).exp() * a_prime * tail;
        if !(bracket.is_finite() && bracket > 0.0) && self.is_valid() {
            // With a and b in the millions (a fit along the ridge where dropout is rare and
            // nearly the same for everyone) the series under- and overflows. The Beta is then
            // concentrated at its mean: with a fixed dropout probability p the expected
            // purchases of an alive customer are (1 − E[e^{−pλh}])/p, λ ~ Gamma(r+x, α+T).
            let p = self.a / (self.a + self.b + x);
            let none = (-(self.r + x) * (p * horizon / (self.alpha + t)).ln_1p()).exp();
            return ((1.0 - none) / p * p_alive).max(0.0);
        }
        let expected = bracket * p_alive;
        // max() also maps a NaN from invalid parameters to 0 rather than passing it on.
        expected.max(0.0)
    }

    /// Returns the maximum-likelihood parameters for `data`, starting from `start` or, when
    /// `None`, from [`BgNbdParams::default`].
    ///
    /// Invalid summaries (see [`RfmSummary::is_valid`]) are skipped; identical ones are merged,
    /// and the gamma-function terms are computed once per distinct `x`, so an iteration costs
    /// one pass over the distinct summaries.
    ///
    /// The optimizer works on the logs of the parameters, so every candidate stays positive:
    /// BFGS on the analytic gradient of the likelihood, starting from a finite-difference
    /// Hessian. It stops once the predicted remaining change of every parameter is below a
    /// relative 1e-8 or the predicted remaining gain below 1e-12 of mean log-likelihood per
    /// customer, or once the gain actually made stays below 1e-12 twice in a row, which is
    /// where it ends when the optimum lies out along a ridge or at the edge of the search box
    /// (e^±20). Should that take more than 200 iterations, restarted Nelder-Mead continues from
    /// the best point. When the start or the result lies beyond e^±10, the fit is repeated from
    /// the default start and the better result kept: that far out the likelihood flattens, and
    /// a warm start can stall on such a plateau.
    ///
    /// # Errors
    ///
    /// [`FitError::TooFewCustomers`] with fewer than [`MIN_CUSTOMERS_TO_FIT`] valid summaries,
    /// [`FitError::InvalidStart`] or [`FitError::NonFinite`] for an unusable start,
    /// [`FitError::NoConvergence`] when neither optimizer meets its stopping rule, and
    /// [`FitError::Solver`] if the Nelder-Mead library itself fails.
    pub fn fit(
        data: &[RfmSummary],
        start: Option<BgNbdParams>,
    ) -> Result<FitReport<BgNbdParams>, FitError> {
        let start = start.unwrap_or_default();
        if !start.is_valid() {
            return Err(FitError::InvalidStart);
        }
        let sample = BgNbdSample::new(data);
        let customers = sample.customers;
        if customers < MIN_CUSTOMERS_TO_FIT {
            return Err(FitError::TooFewCustomers {
                needed: MIN_CUSTOMERS_TO_FIT,
                got: customers,
            });
        }
        let log_params = |p: BgNbdParams| [p.r, p.alpha, p.a, p.b].map(f64::ln);
        let minimum = minimize(
            BgNbdObjective { sample: &sample },
            log_params(start),
            log_params(BgNbdParams::default()),
        )?;
        let params = BgNbdParams::from_log(&minimum.point).ok_or(FitError::NonFinite)?;
        let log_likelihood = sample.log_likelihood(&params);
        if !log_likelihood.is_finite() {
            return Err(FitError::NonFinite);
        }
        if !minimum.converged {
            return Err(FitError::NoConvergence {
                iterations: minimum.iterations,
                log_likelihood,
            });
        }
        Ok(FitReport {
            params,
            log_likelihood,
            iterations: minimum.iterations,
            customers,
        })
    }

    /// Returns the parameters whose logs are `theta`, or `None` outside the search box.
    fn from_log(theta: &[f64]) -> Option<Self> {
        let [r, alpha, a, b] = exp_in_bounds::<4>(theta)?;
        Some(Self { r, alpha, a, b })
    }

    /// Returns ln[(a/(b+x−1)) · ((α+T)/(α+t_x))^{r+x}], the log-odds that a customer with
    /// `x ≥ 1` has dropped out.
    fn ln_dropout_odds(&self, x: f64, t_x: f64, t: f64) -> f64 {
        // ln_1p keeps precision when the silence t − t_x is short next to α + t_x.
        (self.a / (self.b + x - 1.0)).ln() + (self.r + x) * ((t - t_x) / (self.alpha + t_x)).ln_1p()
    }

    /// Returns P(alive) for inputs already passed through [`clamp_rfm`].
    fn p_alive_clamped(&self, x: f64, t_x: f64, t: f64) -> f64 {
        if x == 0.0 {
            return 1.0;
        }
        // exp overflows to +inf for hopeless customers, which correctly gives 0.
        (1.0 / (1.0 + self.ln_dropout_odds(x, t_x, t).exp())).clamp(0.0, 1.0)
    }
}

/// Parameters of the Gamma-Gamma spend model.
///
/// Each transaction value is Gamma(shape `p`, rate ν); across customers ν ~ Gamma(shape `q`,
/// rate `v`) (the paper's γ). `v` carries the currency unit of the data it was fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GammaGammaParams {
    /// Shape of the transaction-value distribution.
    pub p: f64,
    /// Shape of the distribution of the customers' transaction-value rates ν.
    pub q: f64,
    /// Rate of the distribution of ν (the paper's γ), in the currency unit of the data.
    pub v: f64,
}

impl Default for GammaGammaParams {
    /// Returns a weak prior used before any fit: the published CDNOW estimates (p = 6.25,
    /// q = 3.74, γ = 15.44, in dollars), whose population mean transaction value is
    /// v·p/(q − 1) ≈ 35 currency units.
    fn default() -> Self {
        Self {
            p: 6.25,
            q: 3.74,
            v: 15.44,
        }
    }
}

impl GammaGammaParams {
    /// Returns whether every parameter is finite and positive.
    pub fn is_valid(&self) -> bool {
        [self.p, self.q, self.v]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0)
    }

    /// Returns the summed log-likelihood of the valid summaries in `data` (both fields finite
    /// and positive); others are skipped, as [`GammaGammaParams::fit`] skips them.
    ///
    /// Per customer this is the log-density of the mean of `x` transactions after integrating
    /// out ν: ln Γ(px+q) − ln Γ(px) − ln Γ(q) + q ln v + (px−1) ln m + px ln x − (px+q) ln(v+xm),
    /// computed as ln Γ(px+q)/Γ(px) − ln Γ(q) + (px−1) ln m + px ln(x/v) − (px+q) ln(1 + xm/v).
    pub fn log_likelihood(&self, data: &[SpendSummary]) -> f64 {
        let Self { p, q, v } = *self;
        let (ln_v, ln_gamma_q) = (v.ln(), ln_gamma(q));
        data.iter()
            .filter(|s| s.is_valid())
            .map(|s| {
                let (x, m) = (s.x, s.mean_spend);
                let px = p * x;
                ln_gamma_ratio(px, q) - ln_gamma_q + (px - 1.0) * m.ln() + px * (x.ln() - ln_v)
                    - (px + q) * (x * m / v).ln_1p()
            })
            .sum()
    }

    /// Returns E[M | x, m_x]: the conditional expected average transaction value of a customer
    /// whose `x` transactions averaged `mean_spend`.
    ///
    /// This is p(v + x·m_x)/(px + q − 1), a weighted mean of the population mean v·p/(q − 1)
    /// and the customer's own mean. Without usable history (`x` or `mean_spend` not finite and
    /// positive) the population mean is returned, which is infinite when q ≤ 1 because the
    /// model then has no finite mean. Allocation-free.
    pub fn conditional_expected_spend(&self, x: f64, mean_spend: f64) -> f64 {
        let usable = SpendSummary { x, mean_spend }.is_valid();
        let (x, m) = if usable { (x, mean_spend) } else { (0.0, 0.0) };
        let denominator = self.p * x + self.q - 1.0;
        if denominator.is_nan() || denominator <= 0.0 {
            return f64::INFINITY;
        }
        (self.p * (self.v + x * m) / denominator).max(0.0)
    }

    /// Returns the maximum-likelihood parameters for `data`, starting from `start` or, when
    /// `None`, from the default shapes with `v` chosen so the population mean equals the
    /// sample's mean spend.
    ///
    /// Only summaries with finite, positive `x` and `mean_spend` are used. Spend is divided by
    /// its sample mean before optimizing, so the search behaves the same in cents or in yen;
    /// `v` scales with the unit and is converted back. The optimizer and its stopping rules
    /// are those of [`BgNbdParams::fit`].
    ///
    /// # Errors
    ///
    /// As for [`BgNbdParams::fit`].
    pub fn fit(
        data: &[SpendSummary],
        start: Option<GammaGammaParams>,
    ) -> Result<FitReport<GammaGammaParams>, FitError> {
        if start.is_some_and(|s| !s.is_valid()) {
            return Err(FitError::InvalidStart);
        }
        let sample = GammaGammaSample::new(data);
        let customers = sample.customers;
        if customers < MIN_CUSTOMERS_TO_FIT {
            return Err(FitError::TooFewCustomers {
                needed: MIN_CUSTOMERS_TO_FIT,
                got: customers,
            });
        }
        let default_start = {
            let GammaGammaParams { p, q, .. } = GammaGammaParams::default();
            // Scaled spend has mean one, and the population mean is v·p/(q − 1).
            GammaGammaParams {
                p,
                q,
                v: (q - 1.0) / p,
            }
        };
        let scaled_start = start.map_or(default_start, |s| GammaGammaParams {
            v: s.v / sample.scale,
            ..s
        });
        let log_params = |p: GammaGammaParams| [p.p, p.q, p.v].map(f64::ln);
        let minimum = minimize(
            GammaGammaObjective { sample: &sample },
            log_params(scaled_start),
            log_params(default_start),
        )?;
        let scaled = GammaGammaParams::from_log(&minimum.point).ok_or(FitError::NonFinite)?;
        let params = GammaGammaParams {
            v: scaled.v * sample.scale,
            ..scaled
        };
        let log_likelihood = params.log_likelihood(data);
        if !(log_likelihood.is_finite() && params.is_valid()) {
            return Err(FitError::NonFinite);
        }
        if !minimum.converged {
            return Err(FitError::NoConvergence {
                iterations: minimum.iterations,
                log_likelihood,
            });
        }
        Ok(FitReport {
            params,
            log_likelihood,
            iterations: minimum.iterations,
            customers,
        })
    }

    /// Returns the parameters whose logs are `theta`, or `None` outside the search box.
    fn from_log(theta: &[f64]) -> Option<Self> {
        let [p, q, v] = exp_in_bounds::<3>(theta)?;
        Some(Self { p, q, v })
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

/// Returns the Gauss hypergeometric function ₂F₁(a, b; c; z) by summing its power series
/// Σₙ (a)ₙ(b)ₙ/((c)ₙ n!) zⁿ.
///
/// The series converges for |z| < 1; for |z| ≥ 1 or a non-finite `z` the function returns NaN,
/// and `c` must not be zero or a negative integer. Summation stops once a rigorous bound on
/// the rest of the series falls below 1e-10 of the sum (relative to ₂F₁ − 1, which is what
/// [`BgNbdParams::expected_purchases`] needs to stay accurate). The bound applies once n
/// exceeds −a, −b and −c: from then on each term ratio z(a+n)(b+n)/((c+n)(n+1)) is at most
/// ρ = |z|·max(1, (a+n)/(n+1))·max(1, (b+n)/(c+n)), because both fractions move monotonically
/// towards 1, so the rest is at most |term|·ρ/(1−ρ). After 10,000 terms the partial sum is
/// returned; for the BG/NBD expectation that only happens when the horizon is hundreds of
/// times α + T. Convergence is geometric with ratio about |z|, so z near 1 costs the most.
/// The plain series loses precision, or overflows, when its terms first grow large (ab ≫ c);
/// the BG/NBD expectation calls it only after an Euler transformation, where they do not.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    1.0 + a * b / c * hyp2f1_reduced_tail(a, b, c, z)
}

/// Returns the reduced tail T(a, b, c, z) defined by ₂F₁(a, b; c; z) = 1 + (ab/c)·T.
///
/// T = Σ_{n≥1} tₙ with t₁ = z and t_{n+1} = tₙ·z(a+n)(b+n)/((c+n)(n+1)). Dividing out the
/// first coefficient ab/c is what makes the BG/NBD expectation well defined at a = 1 (b = 0
/// here) and at a + b + x − 1 = 0 (c = 0 here): neither appears in T. Stopping rule and cap as
/// documented on [`hyp2f1`].
fn hyp2f1_reduced_tail(a: f64, b: f64, c: f64, z: f64) -> f64 {
    if z.is_nan() || z.abs() >= 1.0 {
        return f64::NAN;
    }
    if z == 0.0 {
        return 0.0;
    }
    let abs_z = z.abs();
    let mut term = z;
    let mut sum = z;
    for n in 1..HYP2F1_MAX_TERMS {
        let n = f64::from(n);
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if term == 0.0 {
            // a or b is a negative integer and the series has terminated.
            break;
        }
        // The bound costs two divisions, so it is only evaluated once the term itself is below
        // the tolerance; that is necessary for stopping whenever ρ ≥ 1/2, and for smaller ρ it
        // merely adds a few cheap terms.
        if term.abs() <= HYP2F1_TOLERANCE * sum.abs() && a + n > 0.0 && b + n > 0.0 && c + n > 0.0 {
            let rho = abs_z * ((a + n) / (n + 1.0)).max(1.0) * ((b + n) / (c + n)).max(1.0);
            if rho < 1.0 && term.abs() * rho <= HYP2F1_TOLERANCE * sum.abs() * (1.0 - rho) {
                break;
            }
        }
    }
    sum
}

/// Returns (x, t_x, t) clamped into the BG/NBD domain for the per-event predictions.
fn clamp_rfm(x: f64, t_x: f64, t: f64) -> (f64, f64, f64) {
    // Comparisons are false for NaN, so NaN falls into the zero branches.
    let x = if x >= 1.0 && x.is_finite() { x } else { 0.0 };
    let t = if t > 0.0 && t.is_finite() { t } else { 0.0 };
    let t_x = if t_x > 0.0 { t_x.min(t) } else { 0.0 };
    (x, t_x, t)
}

/// Returns ln(1 + eᵒ) and the logistic function eᵒ/(1 + eᵒ), without overflow for any `o`.
fn softplus_and_logistic(o: f64) -> (f64, f64) {
    let e = (-o.abs()).exp();
    if o > 0.0 {
        (o + e.ln_1p(), 1.0 / (1.0 + e))
    } else {
        (e.ln_1p(), e / (1.0 + e))
    }
}

/// Returns ln Γ(z + x) − ln Γ(z) for z > 0 and x ≥ 0.
///
/// For large z the two ln Γ values are huge and nearly equal (about 1.5·10⁸ each at z = 10⁷),
/// and subtracting them loses half the digits. A population whose purchase rates hardly vary
/// pushes r and α that far out, and the noise that subtraction adds to the likelihood there
/// kept the optimizer from ever settling. From [`ASYMPTOTIC_MIN`] on, the difference of
/// Stirling's series is formed term by term instead, so nothing large cancels.
fn ln_gamma_ratio(z: f64, x: f64) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    if z < ASYMPTOTIC_MIN {
        return ln_gamma(z + x) - ln_gamma(z);
    }
    let w = z + x;
    // (w − ½) ln w − w − [(z − ½) ln z − z], rearranged.
    (z - 0.5) * (x / z).ln_1p() + x * (w.ln() - 1.0) + stirling_correction(w)
        - stirling_correction(z)
}

/// Returns ln Γ(w) − [(w − ½) ln w − w + ½ ln 2π] for w ≥ [`ASYMPTOTIC_MIN`] by Stirling's
/// series; the first omitted term, 691/(360360 w¹¹), is about 10⁻¹⁶ there.
fn stirling_correction(w: f64) -> f64 {
    let v = 1.0 / (w * w);
    (1.0 / 12.0 - v * (1.0 / 360.0 - v * (1.0 / 1260.0 - v * (1.0 / 1680.0 - v / 1188.0)))) / w
}

/// Returns ψ(z + x) − ψ(z), the derivative of [`ln_gamma_ratio`] with respect to z, for z > 0
/// and x ≥ 0, without cancellation for large z.
fn digamma_ratio(z: f64, x: f64) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    if z < ASYMPTOTIC_MIN {
        return digamma(z + x) - digamma(z);
    }
    (x / z).ln_1p() + digamma_correction(z + x) - digamma_correction(z)
}

/// Returns ψ(w) − ln w for w ≥ [`ASYMPTOTIC_MIN`] by the asymptotic series; the first omitted
/// term, 691/(32760 w¹²), is below 10⁻¹⁶ there.
fn digamma_correction(w: f64) -> f64 {
    let v = 1.0 / (w * w);
    -0.5 / w
        - v * (1.0 / 12.0 - v * (1.0 / 120.0 - v * (1.0 / 252.0 - v * (1.0 / 240.0 - v / 132.0))))
}

/// Returns exp of each log-parameter, or `None` if one is outside ±[`LOG_PARAM_BOUND`].
fn exp_in_bounds<const N: usize>(theta: &[f64]) -> Option<[f64; N]> {
    let theta: &[f64; N] = theta.try_into().ok()?;
    if theta.iter().all(|t| t.abs() <= LOG_PARAM_BOUND) {
        Some(theta.map(f64::exp))
    } else {
        None
    }
}

/// Customers with the same number of repeat purchases; their rows sit together in
/// [`BgNbdSample::repeat`].
#[derive(Debug, Clone)]
struct RepeatGroup {
    x: f64,
    /// Customers in the group: the sum of its rows' weights.
    weight: f64,
    rows: Range<usize>,
}

/// A distinct (t_x, T) among the customers of one [`RepeatGroup`], with how many share it.
#[derive(Debug, Clone, Copy)]
struct RepeatRow {
    t_x: f64,
    t: f64,
    weight: f64,
}

/// Valid BG/NBD summaries prepared for repeated likelihood evaluation.
///
/// Identical summaries become one weighted row, and rows are grouped by x: the gamma-function
/// terms depend on x alone, so they are computed once per distinct x rather than per customer.
/// Customers without repeat purchases contribute through their age alone.
#[derive(Debug)]
struct BgNbdSample {
    /// Valid summaries, duplicates included.
    customers: usize,
    /// Distinct ages of the customers without repeat purchases, with multiplicities.
    no_repeat: Vec<(f64, f64)>,
    groups: Vec<RepeatGroup>,
    repeat: Vec<RepeatRow>,
}

impl BgNbdSample {
    fn new(data: &[RfmSummary]) -> Self {
        let mut rows: Vec<RfmSummary> = data.iter().copied().filter(RfmSummary::is_valid).collect();
        rows.sort_unstable_by(|p, q| {
            (p.x.total_cmp(&q.x))
                .then(p.t.total_cmp(&q.t))
                .then(p.t_x.total_cmp(&q.t_x))
        });
        let mut no_repeat: Vec<(f64, f64)> = Vec::new();
        let mut groups: Vec<RepeatGroup> = Vec::new();
        let mut repeat: Vec<RepeatRow> = Vec::new();
        for s in &rows {
            if s.x == 0.0 {
                // t_x plays no part without repeat purchases, so rows merge on the age alone.
                match no_repeat.last_mut() {
                    Some((t, weight)) if *t == s.t => *weight += 1.0,
                    _ => no_repeat.push((s.t, 1.0)),
                }
                continue;
            }
            let start_new_group = groups.last().is_none_or(|g| g.x != s.x);
            if start_new_group {
                groups.push(RepeatGroup {
                    x: s.x,
                    weight: 0.0,
                    rows: repeat.len()..repeat.len(),
                });
            }
            let Some(group) = groups.last_mut() else {
                continue;
            };
            group.weight += 1.0;
            match repeat[group.rows.clone()].last_mut() {
                Some(row) if row.t == s.t && row.t_x == s.t_x => row.weight += 1.0,
                _ => {
                    repeat.push(RepeatRow {
                        t_x: s.t_x,
                        t: s.t,
                        weight: 1.0,
                    });
                    group.rows.end = repeat.len();
                }
            }
        }
        Self {
            customers: rows.len(),
            no_repeat,
            groups,
            repeat,
        }
    }

    /// Returns the same value as [`BgNbdParams::log_likelihood`] over the valid summaries.
    fn log_likelihood(&self, params: &BgNbdParams) -> f64 {
        self.log_likelihood_and_gradient(params).0
    }

    /// Returns the log-likelihood under `params` and its gradient with respect to
    /// (ln r, ln α, ln a, ln b), in one pass over the rows.
    ///
    /// Per customer the log-likelihood is, with u = ln(1 + T/α), g = ln((α+T)/(α+t_x)) and the
    /// log-odds of dropout o = ln(a/(b+x−1)) + (r+x)·g,
    /// ln Γ(r+x)/Γ(r) + ln[B(a, b+x)/B(a, b)] − (r+x)·u − x ln α + δ_{x>0} ln(1 + eᵒ),
    /// which is FHL (2005) equation 6 with r ln α − (r+x) ln(α+T) written so that no two
    /// large terms cancel when r and α are large.
    fn log_likelihood_and_gradient(&self, params: &BgNbdParams) -> (f64, [f64; 4]) {
        let BgNbdParams { r, alpha, a, b } = *params;
        let (ln_alpha, inv_alpha) = (alpha.ln(), 1.0 / alpha);
        // Without repeat purchases only −r·u remains.
        let (mut sum_u, mut sum_share) = (0.0, 0.0);
        for &(t, weight) in &self.no_repeat {
            let q = t * inv_alpha;
            sum_u += weight * q.ln_1p();
            sum_share += weight * q / (1.0 + q);
        }
        let mut ll = -r * sum_u;
        let mut grad = [-r * sum_u, r * sum_share, 0.0, 0.0];
        for group in &self.groups {
            let (x, n) = (group.x, group.weight);
            let rx = r + x;
            let b_x = b + x - 1.0;
            let ln_odds_base = (a / b_x).ln();
            // Sums over the group of u, ln(1 + eᵒ), σ(o)·g, α·∂/∂α of the row and σ(o).
            let (mut s_u, mut s_softplus, mut s_sg, mut s_alpha, mut s_sigma) =
                (0.0, 0.0, 0.0, 0.0, 0.0);
            for row in &self.repeat[group.rows.clone()] {
                let q = row.t * inv_alpha;
                let u = q.ln_1p();
                let h = (row.t - row.t_x) / (alpha + row.t_x);
                let g = h.ln_1p();
                let (softplus, sigma) = softplus_and_logistic(ln_odds_base + rx * g);
                let w = row.weight;
                s_u += w * u;
                s_softplus += w * softplus;
                s_sg += w * sigma * g;
                s_alpha += w * (r * q - x - sigma * rx * h) / (1.0 + q);
                s_sigma += w * sigma;
            }
            let psi_ab = digamma_ratio(a + b, x);
            ll += n
                * (ln_gamma_ratio(r, x) + ln_gamma_ratio(b, x)
                    - ln_gamma_ratio(a + b, x)
                    - x * ln_alpha)
                - rx * s_u
                + s_softplus;
            grad[0] += r * (n * digamma_ratio(r, x) - s_u + s_sg);
            grad[1] += s_alpha;
            grad[2] += s_sigma - a * n * psi_ab;
            grad[3] += b * (n * (digamma_ratio(b, x) - psi_ab) - s_sigma / b_x);
        }
        (ll, grad)
    }
}

/// Mean negative log-likelihood per customer over log-parameters.
#[derive(Debug, Clone, Copy)]
struct BgNbdObjective<'a> {
    sample: &'a BgNbdSample,
}

impl Objective<4> for BgNbdObjective<'_> {
    fn cost_and_gradient(&self, theta: &[f64; 4]) -> Option<(f64, [f64; 4])> {
        let params = BgNbdParams::from_log(theta)?;
        let (ll, grad) = self.sample.log_likelihood_and_gradient(&params);
        mean_cost(ll, grad, self.sample.customers)
    }
}

impl CostFunction for BgNbdObjective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(cost_only(self, theta))
    }
}

/// Customers with the same number of transactions; their rows sit together in
/// [`GammaGammaSample::rows`].
#[derive(Debug, Clone)]
struct SpendGroup {
    x: f64,
    ln_x: f64,
    /// Customers in the group: the sum of its rows' weights.
    weight: f64,
    /// Σ ln m over the group's customers, m being scaled mean spend.
    sum_ln_m: f64,
    rows: Range<usize>,
}

/// A distinct scaled mean spend m within one [`SpendGroup`], stored as x·m, with how many
/// customers share it.
#[derive(Debug, Clone, Copy)]
struct SpendRow {
    xm: f64,
    weight: f64,
}

/// Valid Gamma-Gamma summaries prepared for repeated likelihood evaluation, grouped and merged
/// like [`BgNbdSample`].
#[derive(Debug)]
struct GammaGammaSample {
    /// Mean of the valid mean-spend values; spend is divided by it.
    scale: f64,
    /// Valid summaries, duplicates included.
    customers: usize,
    groups: Vec<SpendGroup>,
    rows: Vec<SpendRow>,
}

impl GammaGammaSample {
    fn new(data: &[SpendSummary]) -> Self {
        let valid: Vec<SpendSummary> = data
            .iter()
            .copied()
            .filter(SpendSummary::is_valid)
            .collect();
        let scale = if valid.is_empty() {
            1.0
        } else {
            valid.iter().map(|s| s.mean_spend).sum::<f64>() / valid.len() as f64
        };
        let mut scaled: Vec<(f64, f64)> =
            valid.iter().map(|s| (s.x, s.mean_spend / scale)).collect();
        scaled.sort_unstable_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
        let mut groups: Vec<SpendGroup> = Vec::new();
        let mut rows: Vec<SpendRow> = Vec::new();
        for &(x, m) in &scaled {
            if groups.last().is_none_or(|g| g.x != x) {
                groups.push(SpendGroup {
                    x,
                    ln_x: x.ln(),
                    weight: 0.0,
                    sum_ln_m: 0.0,
                    rows: rows.len()..rows.len(),
                });
            }
            let Some(group) = groups.last_mut() else {
                continue;
            };
            group.weight += 1.0;
            group.sum_ln_m += m.ln();
            let xm = x * m;
            match rows[group.rows.clone()].last_mut() {
                Some(row) if row.xm == xm => row.weight += 1.0,
                _ => {
                    rows.push(SpendRow { xm, weight: 1.0 });
                    group.rows.end = rows.len();
                }
            }
        }
        Self {
            scale,
            customers: valid.len(),
            groups,
            rows,
        }
    }

    /// Returns the log-likelihood of the scaled spend under `params` (in scaled units).
    #[cfg(test)]
    fn log_likelihood(&self, params: &GammaGammaParams) -> f64 {
        self.log_likelihood_and_gradient(params).0
    }

    /// Returns the log-likelihood of the scaled spend under `params` and its gradient with
    /// respect to (ln p, ln q, ln v), in one pass over the rows.
    ///
    /// Per customer this is the density of [`GammaGammaParams::log_likelihood`] with
    /// q ln v − (px+q) ln(v + xm) written as −px ln v − (px+q) ln(1 + xm/v).
    fn log_likelihood_and_gradient(&self, params: &GammaGammaParams) -> (f64, [f64; 3]) {
        let GammaGammaParams { p, q, v } = *params;
        let (ln_v, inv_v) = (v.ln(), 1.0 / v);
        let ln_gamma_q = ln_gamma(q);
        let mut ll = 0.0;
        let mut grad = [0.0; 3];
        for group in &self.groups {
            let (n, px) = (group.weight, p * group.x);
            // Sums over the group of ln(1 + y) and y/(1 + y), y = xm/v.
            let (mut s_log, mut s_share) = (0.0, 0.0);
            for row in &self.rows[group.rows.clone()] {
                let y = row.xm * inv_v;
                s_log += row.weight * y.ln_1p();
                s_share += row.weight * y / (1.0 + y);
            }
            ll += n * (ln_gamma_ratio(px, q) - ln_gamma_q + px * (group.ln_x - ln_v))
                + (px - 1.0) * group.sum_ln_m
                - (px + q) * s_log;
            grad[0] +=
                px * (n * (digamma_ratio(px, q) + group.ln_x - ln_v) + group.sum_ln_m - s_log);
            grad[1] += q * (n * digamma_ratio(q, px) - s_log);
            grad[2] += (px + q) * s_share - n * px;
        }
        (ll, grad)
    }
}

/// Mean negative log-likelihood per customer over log-parameters.
#[derive(Debug, Clone, Copy)]
struct GammaGammaObjective<'a> {
    sample: &'a GammaGammaSample,
}

impl Objective<3> for GammaGammaObjective<'_> {
    fn cost_and_gradient(&self, theta: &[f64; 3]) -> Option<(f64, [f64; 3])> {
        let params = GammaGammaParams::from_log(theta)?;
        let (ll, grad) = self.sample.log_likelihood_and_gradient(&params);
        mean_cost(ll, grad, self.sample.customers)
    }
}

impl CostFunction for GammaGammaObjective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(cost_only(self, theta))
    }
}

/// A fit's objective over log-parameters: the mean negative log-likelihood per customer.
///
/// Working in logs keeps every candidate positive, and dividing by the number of customers
/// keeps the tolerances independent of the sample size.
trait Objective<const N: usize> {
    /// Returns the cost at `theta` and its gradient, or `None` outside ±[`LOG_PARAM_BOUND`] or
    /// where either is not finite.
    fn cost_and_gradient(&self, theta: &[f64; N]) -> Option<(f64, [f64; N])>;
}

/// Returns (−ll/n, −grad/n), or `None` unless all of it is finite.
fn mean_cost<const N: usize>(ll: f64, grad: [f64; N], n: usize) -> Option<(f64, [f64; N])> {
    let n = n as f64;
    let cost = -ll / n;
    let grad = grad.map(|g| -g / n);
    (cost.is_finite() && grad.iter().all(|g| g.is_finite())).then_some((cost, grad))
}

/// Returns the cost alone for Nelder-Mead, +∞ where [`Objective::cost_and_gradient`] has none.
///
/// Nelder-Mead compares costs with `<`; a NaN would fail every comparison and stall it, while
/// +∞ simply loses.
fn cost_only<const N: usize>(objective: &impl Objective<N>, theta: &[f64]) -> f64 {
    <&[f64; N]>::try_from(theta)
        .ok()
        .and_then(|theta| objective.cost_and_gradient(theta))
        .map_or(f64::INFINITY, |(cost, _)| cost)
}

/// Best point found by [`minimize`].
#[derive(Debug)]
struct Minimum<const N: usize> {
    point: [f64; N],
    cost: f64,
    /// Quasi-Newton iterations plus any Nelder-Mead iterations.
    iterations: u64,
    /// Whether a stopping rule was met; false when the iteration caps ran out first.
    converged: bool,
}

/// Returns the minimum of `objective` found from `start` and, when either `start` or that
/// minimum lies far out, also from `default_start`: whichever is lower.
///
/// Far out (beyond e^±[`FAR_OUT`]) the likelihood flattens towards a limiting model, such as
/// no dropout at all (a → 0) or identical purchase rates (r, α → ∞), and the gradient fades
/// with it. A previous fit's parameters can sit on such a plateau while the new data's optimum
/// lies elsewhere, and the optimizer then stops where it started because nothing nearby is
/// better; the default start sees the likelihood from a region where it is not flat.
fn minimize<O, const N: usize>(
    objective: O,
    start: [f64; N],
    default_start: [f64; N],
) -> Result<Minimum<N>, FitError>
where
    O: Objective<N> + CostFunction<Param = Vec<f64>, Output = f64> + Clone,
{
    let far_out = |theta: &[f64; N]| theta.iter().any(|t| t.abs() > FAR_OUT);
    let minimum = minimize_from(&objective, start)?;
    if start == default_start || !(far_out(&start) || far_out(&minimum.point)) {
        return Ok(minimum);
    }
    let Ok(other) = minimize_from(&objective, default_start) else {
        return Ok(minimum);
    };
    let iterations = minimum.iterations + other.iterations;
    let better = other.converged && (!minimum.converged || other.cost < minimum.cost);
    let best = if better { other } else { minimum };
    Ok(Minimum { iterations, ..best })
}

/// Returns the minimum of `objective` found from `start` by BFGS on the analytic gradient,
/// continued by restarted Nelder-Mead from the best point should BFGS not converge within
/// [`MAX_QUASI_NEWTON_ITERS`].
fn minimize_from<O, const N: usize>(objective: &O, start: [f64; N]) -> Result<Minimum<N>, FitError>
where
    O: Objective<N> + CostFunction<Param = Vec<f64>, Output = f64> + Clone,
{
    let minimum = quasi_newton(objective, start)?;
    if minimum.converged {
        return Ok(minimum);
    }
    nelder_mead(objective.clone(), minimum)
}

/// Returns the minimum of `objective` found by BFGS from `start`.
///
/// Each iteration steps along −H·∇ with H the BFGS approximation of the inverse Hessian
/// (starting from [`inverse_hessian_estimate`]), kept inside the search box by
/// [`projected_direction`], capped at [`MAX_STEP`] per axis and shortened by backtracking
/// until the cost decreases enough (Armijo).
///
/// The run has converged when the predicted remaining step −H·∇ changes no parameter by more
/// than a relative [`PARAM_TOLERANCE`]; when, that step being short (within [`FINAL_STEP`]),
/// the improvement it predicts is below [`FLAT_TOLERANCE`], once the step is taken; or when
/// two iterations in a row improve the cost by less than [`FLAT_TOLERANCE`]: the optimum then
/// lies out along a ridge where the likelihood no longer changes (for instance r and α growing
/// together when purchase rates hardly vary between customers), or at the edge of the search
/// box. When no step along −H·∇ decreases the cost, H is reset to the identity; when not even
/// a step along −∇ does, the point is a minimum to within rounding.
fn quasi_newton<const N: usize>(
    objective: &impl Objective<N>,
    start: [f64; N],
) -> Result<Minimum<N>, FitError> {
    let (mut cost, mut grad) = objective
        .cost_and_gradient(&start)
        .ok_or(FitError::NonFinite)?;
    let mut minimum = Minimum {
        point: start,
        cost,
        iterations: 0,
        converged: false,
    };
    // A Hessian estimated from N more gradients saves BFGS the iterations it would spend
    // learning the curvature from the identity, which remains the fallback at the edge of the
    // search box.
    let estimate = inverse_hessian_estimate(objective, &start, &grad);
    // Whether inverse_hessian is the identity, with no curvature known.
    let mut fresh = estimate.is_none();
    let mut inverse_hessian = estimate.unwrap_or_else(identity);
    let mut flat_iterations = 0;
    while minimum.iterations < MAX_QUASI_NEWTON_ITERS {
        minimum.iterations += 1;
        let mut direction = projected_direction(&inverse_hessian, &grad, &minimum.point);
        let mut slope = dot(&grad, &direction);
        if slope.is_nan() || slope >= 0.0 {
            inverse_hessian = identity();
            fresh = true;
            direction = projected_direction(&inverse_hessian, &grad, &minimum.point);
            slope = dot(&grad, &direction);
        }
        let longest = max_abs(&direction);
        if longest == 0.0 || (!fresh && longest < PARAM_TOLERANCE) {
            minimum.converged = true;
            break;
        }
        // With curvature known, −∇·H·∇/2 predicts the remaining improvement of the cost. Close
        // to the optimum, once that is below what the cost can resolve, a line search could
        // not tell the step from rounding, so the step is taken as predicted unless it is
        // measurably worse. (Along a ridge the prediction is not to be trusted: the cost
        // there keeps improving by more than a quadratic model expects.)
        if !fresh && longest < FINAL_STEP && -0.5 * slope < FLAT_TOLERANCE {
            let last: [f64; N] = std::array::from_fn(|i| {
                (minimum.point[i] + direction[i]).clamp(-LOG_PARAM_BOUND, LOG_PARAM_BOUND)
            });
            if let Some((last_cost, _)) = objective.cost_and_gradient(&last)
                && last_cost <= cost + FLAT_TOLERANCE
            {
                minimum.point = last;
                minimum.cost = last_cost;
            }
            minimum.converged = true;
            break;
        }
        if longest > MAX_STEP {
            let shrink = MAX_STEP / longest;
            direction = direction.map(|d| d * shrink);
            slope *= shrink;
        }
        let Some((point, next_cost, next_grad)) =
            line_search(objective, &minimum.point, cost, &grad, &direction, slope)
        else {
            if fresh {
                minimum.converged = true;
                break;
            }
            inverse_hessian = identity();
            fresh = true;
            continue;
        };
        let step: [f64; N] = std::array::from_fn(|i| point[i] - minimum.point[i]);
        let change: [f64; N] = std::array::from_fn(|i| next_grad[i] - grad[i]);
        let curvature = dot(&step, &change);
        // Skipping the update when the curvature is not clearly positive keeps H positive
        // definite, so −H·∇ stays a descent direction.
        if curvature > CURVATURE_FLOOR * (dot(&step, &step) * dot(&change, &change)).sqrt() {
            if fresh {
                // Scales the identity to the curvature just seen before the first update.
                let scale = curvature / dot(&change, &change);
                inverse_hessian = identity::<N>().map(|row| row.map(|h| h * scale));
                fresh = false;
            }
            bfgs_update(&mut inverse_hessian, &step, &change, curvature);
        }
        let improvement = cost - next_cost;
        minimum.point = point;
        minimum.cost = next_cost;
        cost = next_cost;
        grad = next_grad;
        flat_iterations = if improvement < FLAT_TOLERANCE {
            flat_iterations + 1
        } else {
            0
        };
        if flat_iterations >= 2 {
            minimum.converged = true;
            break;
        }
    }
    Ok(minimum)
}

/// Returns the quasi-Newton direction −H·∇ at `point`, with `h` approximating the inverse
/// Hessian, for the parameters that are free to move: a parameter at the edge of the search
/// box (within [`EDGE_MARGIN`]) that the gradient or the direction pushes outwards is held
/// where it is, and the others move on along the edge.
///
/// Holding parameter k replaces H by its Schur complement H − H·e_k·e_kᵀ·H / H_kk, the
/// inverse Hessian of the problem with k fixed. Merely dropping row and column k would not
/// do: along a ridge where two parameters move together (a and b when both are large), H_kk
/// is huge for each of them, yet one is well determined once the other is fixed.
fn projected_direction<const N: usize>(
    h: &[[f64; N]; N],
    grad: &[f64; N],
    point: &[f64; N],
) -> [f64; N] {
    let edge = LOG_PARAM_BOUND - EDGE_MARGIN;
    let outwards =
        |i: usize, d: f64| (point[i] >= edge && d > 0.0) || (point[i] <= -edge && d < 0.0);
    let mut reduced = *h;
    let mut held = [false; N];
    for k in 0..N {
        if outwards(k, -grad[k]) {
            hold(&mut reduced, k);
            held[k] = true;
        }
    }
    // Each pass holds one more parameter, so this ends within N passes.
    loop {
        let direction = mat_vec(&reduced, grad).map(|d| -d);
        match (0..N).find(|&i| !held[i] && outwards(i, direction[i])) {
            Some(k) => {
                hold(&mut reduced, k);
                held[k] = true;
            }
            None => return direction,
        }
    }
}

/// Replaces the symmetric positive semi-definite `h` by its Schur complement with respect to
/// index `k`, which leaves row and column `k` zero.
fn hold<const N: usize>(h: &mut [[f64; N]; N], k: usize) {
    let pivot = h[k][k];
    let column: [f64; N] = std::array::from_fn(|i| h[i][k]);
    for (i, row) in h.iter_mut().enumerate() {
        for (j, value) in row.iter_mut().enumerate() {
            if i == k || j == k {
                *value = 0.0;
            } else if pivot > 0.0 {
                *value -= column[i] * column[j] / pivot;
            }
        }
    }
}

/// Returns the first point along `direction` from `point`, projected into the search box,
/// whose cost is finite and at most `cost + ARMIJO·∇·step`, trying the whole step and then
/// shorter ones, with its cost and gradient; `None` once the step would change no parameter by
/// more than [`PARAM_TOLERANCE`]. `slope` is ∇·direction.
fn line_search<const N: usize>(
    objective: &impl Objective<N>,
    point: &[f64; N],
    cost: f64,
    grad: &[f64; N],
    direction: &[f64; N],
    slope: f64,
) -> Option<([f64; N], f64, [f64; N])> {
    let longest = max_abs(direction);
    let mut t: f64 = 1.0;
    while t * longest >= PARAM_TOLERANCE {
        let trial: [f64; N] = std::array::from_fn(|i| {
            (point[i] + t * direction[i]).clamp(-LOG_PARAM_BOUND, LOG_PARAM_BOUND)
        });
        let predicted: f64 = (0..N).map(|i| grad[i] * (trial[i] - point[i])).sum();
        let evaluated = objective.cost_and_gradient(&trial);
        match evaluated {
            // Projection can turn a descent step into one that is not; shorter steps are
            // projected less.
            Some((trial_cost, trial_grad))
                if predicted < 0.0 && trial_cost <= cost + ARMIJO * predicted =>
            {
                return Some((trial, trial_cost, trial_grad));
            }
            Some((trial_cost, _)) => {
                // The minimum of the parabola through the cost, the slope and the trial cost,
                // kept within [0.1t, 0.5t].
                let excess = trial_cost - cost - slope * t;
                t = if excess > 0.0 {
                    (-slope * t * t / (2.0 * excess)).clamp(0.1 * t, 0.5 * t)
                } else {
                    0.5 * t
                };
            }
            None => t *= 0.1,
        }
    }
    None
}

/// Replaces `h`, an approximation of the inverse Hessian, by its BFGS update for a `step`
/// that changed the gradient by `change`, with `curvature` = step·change > 0:
/// H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ with ρ = 1/curvature.
fn bfgs_update<const N: usize>(
    h: &mut [[f64; N]; N],
    step: &[f64; N],
    change: &[f64; N],
    curvature: f64,
) {
    let rho = 1.0 / curvature;
    let hy = mat_vec(h, change);
    let yhy = dot(change, &hy);
    let ss = rho * rho * yhy + rho;
    for i in 0..N {
        for j in 0..N {
            h[i][j] += ss * step[i] * step[j] - rho * (hy[i] * step[j] + step[i] * hy[j]);
        }
    }
}

/// Returns the inverse of the Hessian of `objective` at `point`, estimated by forward
/// differences of the gradient `grad`, or `None` if a gradient is unavailable.
///
/// Away from the optimum the Hessian need not be positive definite; a multiple of the identity
/// is then added, the smallest of 10⁻³, 10⁻², … times its largest diagonal element that makes
/// it so, which turns the first step into a damped Newton step.
fn inverse_hessian_estimate<const N: usize>(
    objective: &impl Objective<N>,
    point: &[f64; N],
    grad: &[f64; N],
) -> Option<[[f64; N]; N]> {
    let mut hessian = [[0.0; N]; N];
    for j in 0..N {
        let mut shifted = *point;
        shifted[j] += HESSIAN_STEP;
        let (_, shifted_grad) = objective.cost_and_gradient(&shifted)?;
        for i in 0..N {
            hessian[i][j] = (shifted_grad[i] - grad[i]) / HESSIAN_STEP;
        }
    }
    let largest = (0..N).fold(0.0_f64, |m, i| m.max(hessian[i][i].abs()));
    let mut shift = 0.0;
    for _ in 0..16 {
        let shifted: [[f64; N]; N] = std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                0.5 * (hessian[i][j] + hessian[j][i]) + if i == j { shift } else { 0.0 }
            })
        });
        if let Some(inverse) = invert_positive_definite(&shifted) {
            return Some(inverse);
        }
        shift = if shift == 0.0 {
            1e-3 * largest
        } else {
            10.0 * shift
        };
    }
    None
}

/// Returns the inverse of the symmetric matrix `m` by its Cholesky factorisation, or `None`
/// unless `m` is positive definite.
fn invert_positive_definite<const N: usize>(m: &[[f64; N]; N]) -> Option<[[f64; N]; N]> {
    // m = L·Lᵀ with L lower triangular.
    let mut l = [[0.0; N]; N];
    for i in 0..N {
        for j in 0..=i {
            let partial: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let pivot = m[i][i] - partial;
                if pivot.is_nan() || pivot <= 0.0 {
                    return None;
                }
                l[i][i] = pivot.sqrt();
            } else {
                l[i][j] = (m[i][j] - partial) / l[j][j];
            }
        }
    }
    // Column c of m⁻¹ solves L·Lᵀ·x = e_c.
    let mut inverse = [[0.0; N]; N];
    for c in 0..N {
        let mut y = [0.0; N];
        for i in 0..N {
            let unit = if i == c { 1.0 } else { 0.0 };
            y[i] = (unit - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
        }
        let mut x = [0.0; N];
        for i in (0..N).rev() {
            x[i] = (y[i] - (i + 1..N).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
        }
        for (row, value) in inverse.iter_mut().zip(x) {
            row[c] = value;
        }
    }
    inverse
        .iter()
        .flatten()
        .all(|v| v.is_finite())
        .then_some(inverse)
}

/// Returns the N × N identity matrix.
fn identity<const N: usize>() -> [[f64; N]; N] {
    std::array::from_fn(|i| std::array::from_fn(|j| if i == j { 1.0 } else { 0.0 }))
}

/// Returns the product of `m` and `v`.
fn mat_vec<const N: usize>(m: &[[f64; N]; N], v: &[f64; N]) -> [f64; N] {
    m.map(|row| dot(&row, v))
}

/// Returns the dot product of `u` and `v`.
fn dot<const N: usize>(u: &[f64; N], v: &[f64; N]) -> f64 {
    u.iter().zip(v).map(|(a, b)| a * b).sum()
}

/// Returns the largest absolute component of `v`.
fn max_abs<const N: usize>(v: &[f64; N]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Returns the minimum of `objective` found by restarted Nelder-Mead from `from`, the best
/// point of a quasi-Newton run that did not converge.
///
/// A single Nelder-Mead run can stop on a collapsed simplex short of the optimum, the known
/// weakness of the method, so each run is followed by a fresh simplex around its best point;
/// the fit has converged once a run improves the cost by less than [`CONVERGED_IMPROVEMENT`].
fn nelder_mead<O, const N: usize>(objective: O, from: Minimum<N>) -> Result<Minimum<N>, FitError>
where
    O: CostFunction<Param = Vec<f64>, Output = f64> + Clone,
{
    let mut best = from;
    for _ in 0..MAX_RUNS {
        let solver = NelderMead::new(simplex_around(&best.point, SIMPLEX_STEP))
            .with_sd_tolerance(SD_TOLERANCE)
            .map_err(solver_error)?;
        let result = Executor::new(objective.clone(), solver)
            .configure(|state| state.max_iters(MAX_ITERS_PER_RUN))
            // The core reads no clock, and argmin's timer is only for observers.
            .timer(false)
            .run()
            .map_err(solver_error)?;
        let state = result.state;
        best.iterations += state.get_iter();
        let converged = matches!(
            state.get_termination_reason(),
            Some(TerminationReason::SolverConverged)
        );
        let improvement = best.cost - state.get_best_cost();
        if improvement > 0.0
            && let Some(point) = state.get_best_param()
            && let Ok(point) = <[f64; N]>::try_from(point.as_slice())
        {
            best.point = point;
            best.cost = state.get_best_cost();
        }
        if converged && improvement < CONVERGED_IMPROVEMENT {
            best.converged = true;
            break;
        }
    }
    Ok(best)
}

/// Returns the n + 1 vertices of a simplex with `center` as one vertex and edges `step` along
/// each axis.
fn simplex_around(center: &[f64], step: f64) -> Vec<Vec<f64>> {
    let mut simplex = vec![center.to_vec()];
    for i in 0..center.len() {
        let mut vertex = center.to_vec();
        vertex[i] += step;
        simplex.push(vertex);
    }
    simplex
}

/// Converts an argmin error into [`FitError::Solver`].
fn solver_error(err: argmin::core::Error) -> FitError {
    FitError::Solver(err.to_string())
}

/// Simulated populations and published estimates, shared by these tests and the fit bench.
#[cfg(test)]
mod simulate;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_purchases_stay_positive_when_dropout_is_rare_and_uniform() {
        // A fit along the ridge a, b -> infinity: dropout probability ~0.007 for everyone.
        let p = BgNbdParams {
            r: 1.3,
            alpha: 5.75,
            a: 3.6e6,
            b: 4.8e8,
        };
        let (x, t_x, t, h) = (10.0, 40.0, 45.0, 13.0);
        let e = p.expected_purchases(h, x, t_x, t);
        // Next to no dropout: about the posterior mean rate times the horizon.
        let rate = (p.r + x) / (p.alpha + t);
        let alive = p.p_alive(x, t_x, t);
        assert!(
            e > 0.0 && (e / (rate * h * alive) - 1.0).abs() < 0.05,
            "{e} vs {}",
            rate * h * alive
        );
    }

    #[test]
    fn p_no_purchase_matches_a_simulation_and_rises_with_silence_for_one_time_buyers() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Exp, Gamma};
        let p = simulate::CDNOW;
        // One-time buyers: more silence, more likely to stay silent.
        let fresh = p.p_no_purchase(13.0, 0.0, 0.0, 2.0);
        let old = p.p_no_purchase(13.0, 0.0, 0.0, 40.0);
        assert!(fresh < old && old < 1.0, "{fresh} {old}");
        // Monte Carlo for a customer with no repeat purchase at age 10 weeks: draw λ from the
        // posterior Gamma(r, α + T) and count those with no purchase in 13 weeks.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let posterior = Gamma::new(p.r, 1.0 / (p.alpha + 10.0)).unwrap();
        let n = 200_000;
        let none = (0..n)
            .filter(|_| {
                let lambda: f64 = posterior.sample(&mut rng);
                lambda <= 0.0 || Exp::new(lambda).unwrap().sample(&mut rng) > 13.0
            })
            .count();
        let simulated = none as f64 / f64::from(n);
        let exact = p.p_no_purchase(13.0, 0.0, 0.0, 10.0);
        assert!((simulated - exact).abs() < 0.005, "{simulated} vs {exact}");
        // A repeat buyer long silent is likely gone: the probability approaches 1 - P(alive)
        // from above.
        let gone = p.p_no_purchase(13.0, 5.0, 10.0, 60.0);
        assert!(gone >= 1.0 - p.p_alive(5.0, 10.0, 60.0));
    }
    use proptest::prelude::*;
    use simulate::{CDNOW, CDNOW_SPEND, simulate_bg_nbd, simulate_gamma_gamma};
    use statrs::function::gamma::gamma;

    fn rfm(x: f64, t_x: f64, t: f64) -> RfmSummary {
        RfmSummary { x, t_x, t }
    }

    fn relative_error(fitted: f64, truth: f64) -> f64 {
        (fitted / truth - 1.0).abs()
    }

    #[test]
    fn cdnow_expected_purchases_matches_published_value() {
        let e = CDNOW.expected_purchases(39.0, 2.0, 30.43, 38.86);
        assert!((e - 1.2260).abs() < 5e-5, "got {e}");
    }

    #[test]
    fn cdnow_p_alive_matches_published_values() {
        let recent = CDNOW.p_alive(2.0, 30.43, 38.86);
        assert!((recent - 0.7266).abs() < 5e-5, "got {recent}");
        let lapsed = CDNOW.p_alive(5.0, 10.0, 38.86);
        assert!((lapsed - 0.0248).abs() < 5e-5, "got {lapsed}");
    }

    #[test]
    fn customer_without_repeat_purchases_is_alive() {
        assert_eq!(CDNOW.p_alive(0.0, 0.0, 400.0), 1.0);
        // Below one repeat purchase counts as none.
        assert_eq!(CDNOW.p_alive(0.5, 3.0, 400.0), 1.0);
    }

    #[test]
    fn expected_purchases_is_zero_without_a_horizon() {
        assert_eq!(CDNOW.expected_purchases(0.0, 2.0, 30.43, 38.86), 0.0);
        assert_eq!(CDNOW.expected_purchases(-5.0, 2.0, 30.43, 38.86), 0.0);
        assert_eq!(CDNOW.expected_purchases(f64::NAN, 2.0, 30.43, 38.86), 0.0);
    }

    #[test]
    fn infinite_horizon_gives_lifetime_purchases() {
        let params = BgNbdParams { a: 3.0, ..CDNOW };
        let (x, t_x, t) = (2.0, 30.43, 38.86);
        let lifetime =
            (params.a + params.b + x - 1.0) / (params.a - 1.0) * params.p_alive(x, t_x, t);
        let got = params.expected_purchases(f64::INFINITY, x, t_x, t);
        assert!(
            (got - lifetime).abs() < 1e-12 * lifetime,
            "{got} vs {lifetime}"
        );
        // A very long finite horizon approaches the same limit from below.
        let long = params.expected_purchases(1e7, x, t_x, t);
        assert!(
            long < lifetime && long > 0.999 * lifetime,
            "{long} vs {lifetime}"
        );
        // With a ≤ 1 the expected number of lifetime purchases is unbounded.
        assert_eq!(
            CDNOW.expected_purchases(f64::INFINITY, x, t_x, t),
            f64::INFINITY
        );
    }

    #[test]
    fn expected_purchases_is_continuous_at_a_equal_to_one() {
        // a = 1 is a removable singularity of (…)/(a − 1); both sides must agree with it.
        let at_one = BgNbdParams { a: 1.0, ..CDNOW };
        let below = BgNbdParams {
            a: 1.0 - 1e-7,
            ..CDNOW
        };
        let above = BgNbdParams {
            a: 1.0 + 1e-7,
            ..CDNOW
        };
        let e = at_one.expected_purchases(52.0, 3.0, 20.0, 40.0);
        assert!(e.is_finite() && e > 0.0, "got {e}");
        for other in [below, above] {
            let o = other.expected_purchases(52.0, 3.0, 20.0, 40.0);
            assert!((o - e).abs() < 1e-6 * e, "{o} vs {e}");
        }
    }

    #[test]
    fn expected_purchases_handles_a_plus_b_below_one() {
        // With x = 0 the ₂F₁'s c = a + b − 1 is negative (−0.3) or exactly zero here, where
        // the paper's form is 0/0. References: that form at 50 digits with mpmath 1.3, the
        // second evaluated at b = 0.7 ± 1e-20, which agree to all printed digits.
        let negative_c = BgNbdParams {
            r: 0.5,
            alpha: 2.0,
            a: 0.3,
            b: 0.4,
        };
        let e = negative_c.expected_purchases(52.0, 0.0, 0.0, 10.0);
        assert!((e - 1.248_782_532_525_410_3).abs() < 1e-8, "got {e}");
        let zero_c = BgNbdParams {
            b: 0.7,
            ..negative_c
        };
        let e = zero_c.expected_purchases(52.0, 0.0, 0.0, 10.0);
        assert!((e - 1.429_419_062_377_435_3).abs() < 1e-8, "got {e}");
    }

    #[test]
    fn expected_purchases_stays_finite_for_heavy_buyers() {
        // Reference: the paper's formula at 40 digits (mpmath 1.3) gives 1.2982817536825223e-91;
        // the naive form overflows here because ((α+T)/(α+T+h))^{r+x} underflows while ₂F₁
        // overflows.
        let e = CDNOW.expected_purchases(52.0, 1000.0, 400.0, 500.0);
        assert!(
            (e / 1.298_281_753_682_522_3e-91 - 1.0).abs() < 1e-8,
            "got {e}"
        );
        let p = CDNOW.p_alive(1000.0, 400.0, 500.0);
        assert!(
            (p / 1.309_413_588_168_054_8e-93 - 1.0).abs() < 1e-10,
            "got {p}"
        );
    }

    #[test]
    fn clamps_inconsistent_inputs_instead_of_failing() {
        // t_x beyond T is capped at T: a purchase just now.
        assert_eq!(
            CDNOW.p_alive(3.0, 50.0, 40.0),
            CDNOW.p_alive(3.0, 40.0, 40.0)
        );
        for (x, t_x, t) in [
            (f64::NAN, 1.0, 2.0),
            (3.0, f64::NAN, 20.0),
            (3.0, 1.0, f64::INFINITY),
            (-4.0, -1.0, -2.0),
        ] {
            let p = CDNOW.p_alive(x, t_x, t);
            assert!((0.0..=1.0).contains(&p), "p_alive({x}, {t_x}, {t}) = {p}");
            let e = CDNOW.expected_purchases(13.0, x, t_x, t);
            assert!(
                e.is_finite() && e >= 0.0,
                "expected_purchases({x}, {t_x}, {t}) = {e}"
            );
        }
    }

    #[test]
    fn hyp2f1_matches_closed_forms() {
        for z in [0.0, 0.1, 0.5, 0.9, 0.99, -0.7_f64] {
            // ₂F₁(1, 1; 2; z) = −ln(1 − z)/z.
            let log_form = if z == 0.0 { 1.0 } else { -(-z).ln_1p() / z };
            let got = hyp2f1(1.0, 1.0, 2.0, z);
            assert!(
                (got - log_form).abs() < 1e-9 * log_form,
                "z = {z}: {got} vs {log_form}"
            );
            // ₂F₁(a, b; b; z) = (1 − z)^(−a).
            let power_form = (1.0 - z).powf(-2.5);
            let got = hyp2f1(2.5, 3.0, 3.0, z);
            assert!(
                (got - power_form).abs() < 1e-9 * power_form,
                "z = {z}: {got} vs {power_form}"
            );
        }
        // A negative integer a terminates the series: ₂F₁(−2, b; c; z) = 1 − 2bz/c + b(b+1)z²/(c(c+1)).
        let (b, c, z) = (1.5, 2.5, 0.8);
        let polynomial = 1.0 - 2.0 * b * z / c + b * (b + 1.0) * z * z / (c * (c + 1.0));
        assert!((hyp2f1(-2.0, b, c, z) - polynomial).abs() < 1e-14);
        // Reference: mpmath 1.3 hyp2f1(2.243, 4.426, 4.219, 0.5) at 40 digits.
        let got = hyp2f1(2.243, 4.426, 4.219, 0.5);
        assert!((got - 5.161_693_901_383_614).abs() < 1e-9, "got {got}");
        assert!(hyp2f1(1.0, 1.0, 2.0, 1.0).is_nan());
    }

    #[test]
    fn log_likelihood_matches_hand_computation() {
        let data = [
            rfm(0.0, 0.0, 38.86),
            rfm(2.0, 30.43, 38.86),
            rfm(5.0, 10.0, 38.86),
            rfm(1.0, 5.0, 20.0),
        ];
        // FHL (2005) equation 6 written out with plain gamma functions and powers, not logs.
        let BgNbdParams { r, alpha, a, b } = CDNOW;
        let by_hand: f64 = data
            .iter()
            .map(|s| {
                let x = s.x;
                let a1 = gamma(r + x) * alpha.powf(r) / gamma(r);
                let a2 = gamma(a + b) * gamma(b + x) / (gamma(b) * gamma(a + b + x));
                let a3 = (alpha + s.t).powf(-(r + x));
                let a4 = if x > 0.0 {
                    a / (b + x - 1.0) * (alpha + s.t_x).powf(-(r + x))
                } else {
                    0.0
                };
                (a1 * a2 * (a3 + a4)).ln()
            })
            .sum();
        let ll = CDNOW.log_likelihood(&data);
        assert!((ll - by_hand).abs() < 1e-9, "{ll} vs {by_hand}");
        // Reference: the same formula at 40 digits with mpmath 1.3.
        assert!((ll - -28.966_677_330_338_98).abs() < 1e-9, "got {ll}");
    }

    #[test]
    fn log_likelihood_skips_invalid_summaries() {
        let valid = [rfm(2.0, 30.43, 38.86), rfm(0.0, 0.0, 10.0)];
        let mut mixed = valid.to_vec();
        mixed.extend([
            rfm(f64::NAN, 1.0, 2.0),
            rfm(1.0, 5.0, 3.0),
            rfm(-1.0, 0.0, 3.0),
            rfm(0.5, 1.0, 3.0),
            rfm(2.0, -1.0, 3.0),
        ]);
        assert_eq!(CDNOW.log_likelihood(&mixed), CDNOW.log_likelihood(&valid));
        assert!(CDNOW.log_likelihood_one(&rfm(1.0, 5.0, 3.0)).is_nan());
    }

    #[test]
    fn grouped_likelihoods_match_the_per_customer_sums() {
        let rfm_data = simulate_bg_nbd(CDNOW, 300, 7);
        let grouped = BgNbdSample::new(&rfm_data).log_likelihood(&CDNOW);
        let direct = CDNOW.log_likelihood(&rfm_data);
        assert!(
            (grouped - direct).abs() < 1e-9 * direct.abs(),
            "{grouped} vs {direct}"
        );

        let spend = simulate_gamma_gamma(CDNOW_SPEND, 300, 7);
        let sample = GammaGammaSample::new(&spend);
        let scaled = GammaGammaParams {
            v: CDNOW_SPEND.v / sample.scale,
            ..CDNOW_SPEND
        };
        // The density of spend in original units is the scaled density divided by the scale.
        let grouped = sample.log_likelihood(&scaled) - spend.len() as f64 * sample.scale.ln();
        let direct = CDNOW_SPEND.log_likelihood(&spend);
        assert!(
            (grouped - direct).abs() < 1e-9 * direct.abs(),
            "{grouped} vs {direct}"
        );
    }

    #[test]
    fn gamma_gamma_log_likelihood_matches_hand_computation() {
        let data = [
            SpendSummary {
                x: 1.0,
                mean_spend: 20.0,
            },
            SpendSummary {
                x: 3.0,
                mean_spend: 35.5,
            },
            SpendSummary {
                x: 10.0,
                mean_spend: 12.25,
            },
        ];
        let GammaGammaParams { p, q, v } = CDNOW_SPEND;
        // The density of a mean of x Gamma(p, ν) values with ν ~ Gamma(q, v) integrated out.
        let by_hand: f64 = data
            .iter()
            .map(|s| {
                let (x, m) = (s.x, s.mean_spend);
                let density = gamma(p * x + q) / (gamma(p * x) * gamma(q))
                    * v.powf(q)
                    * m.powf(p * x - 1.0)
                    * x.powf(p * x)
                    / (v + x * m).powf(p * x + q);
                density.ln()
            })
            .sum();
        let ll = CDNOW_SPEND.log_likelihood(&data);
        assert!((ll - by_hand).abs() < 1e-9, "{ll} vs {by_hand}");
        // Reference: the same formula at 40 digits with mpmath 1.3.
        assert!((ll - -11.728_460_523_601_543).abs() < 1e-9, "got {ll}");
    }

    #[test]
    fn conditional_expected_spend_blends_population_and_customer_means() {
        let GammaGammaParams { p, q, v } = CDNOW_SPEND;
        let population = v * p / (q - 1.0);
        assert!((CDNOW_SPEND.conditional_expected_spend(0.0, 0.0) - population).abs() < 1e-12);
        assert!((CDNOW_SPEND.conditional_expected_spend(3.0, -5.0) - population).abs() < 1e-12);
        // The weight on the customer's own mean is px/(px + q − 1).
        let (x, m) = (4.0, 80.0);
        let w = p * x / (p * x + q - 1.0);
        let expected = w * m + (1.0 - w) * population;
        let got = CDNOW_SPEND.conditional_expected_spend(x, m);
        assert!(
            (got - expected).abs() < 1e-9 * expected,
            "{got} vs {expected}"
        );
        // Without a finite population mean and without history there is nothing to expect.
        let heavy_tailed = GammaGammaParams {
            q: 0.8,
            ..CDNOW_SPEND
        };
        assert_eq!(
            heavy_tailed.conditional_expected_spend(0.0, 0.0),
            f64::INFINITY
        );
        assert!(heavy_tailed.conditional_expected_spend(x, m).is_finite());
    }

    #[test]
    fn fit_reports_too_few_customers() {
        let few: Vec<RfmSummary> = (0..10)
            .map(|i| rfm(f64::from(i), f64::from(i), 40.0))
            .collect();
        assert_eq!(
            BgNbdParams::fit(&few, None).unwrap_err(),
            FitError::TooFewCustomers {
                needed: MIN_CUSTOMERS_TO_FIT,
                got: 10
            }
        );
        // Invalid summaries do not count towards the minimum.
        let junk = vec![rfm(f64::NAN, 0.0, 1.0); 500];
        assert_eq!(
            BgNbdParams::fit(&junk, None).unwrap_err(),
            FitError::TooFewCustomers {
                needed: MIN_CUSTOMERS_TO_FIT,
                got: 0
            }
        );
        let spend = vec![
            SpendSummary {
                x: 0.0,
                mean_spend: 10.0
            };
            500
        ];
        assert_eq!(
            GammaGammaParams::fit(&spend, None).unwrap_err(),
            FitError::TooFewCustomers {
                needed: MIN_CUSTOMERS_TO_FIT,
                got: 0
            }
        );
        let message = BgNbdParams::fit(&few, None).unwrap_err().to_string();
        assert!(message.starts_with("too few customers"), "{message}");
    }

    #[test]
    fn fit_rejects_an_invalid_start() {
        let data = simulate_bg_nbd(CDNOW, 100, 1);
        let start = BgNbdParams { a: -1.0, ..CDNOW };
        assert_eq!(
            BgNbdParams::fit(&data, Some(start)).unwrap_err(),
            FitError::InvalidStart
        );
        let spend = simulate_gamma_gamma(CDNOW_SPEND, 100, 1);
        let start = GammaGammaParams {
            q: f64::NAN,
            ..CDNOW_SPEND
        };
        assert_eq!(
            GammaGammaParams::fit(&spend, Some(start)).unwrap_err(),
            FitError::InvalidStart
        );
    }

    #[test]
    fn fit_skips_invalid_summaries() {
        let clean = simulate_bg_nbd(CDNOW, 500, 3);
        let mut dirty = clean.clone();
        dirty.extend([
            rfm(f64::NAN, 0.0, 10.0),
            rfm(2.0, 20.0, 10.0),
            rfm(-3.0, 0.0, 10.0),
            rfm(1.0, f64::INFINITY, f64::INFINITY),
        ]);
        let from_clean = BgNbdParams::fit(&clean, None).unwrap();
        let from_dirty = BgNbdParams::fit(&dirty, None).unwrap();
        assert_eq!(from_dirty, from_clean);
        assert_eq!(from_dirty.customers, 500);
        assert!(from_dirty.params.is_valid() && from_dirty.log_likelihood.is_finite());
    }

    #[test]
    fn degenerate_data_yields_a_report_or_an_error() {
        // Nobody came back: the likelihood keeps rising towards a boundary of the search box.
        let never_returned = vec![rfm(0.0, 0.0, 52.0); 200];
        if let Ok(report) = BgNbdParams::fit(&never_returned, None) {
            assert!(report.params.is_valid() && report.log_likelihood.is_finite());
        }
        // Identical spend makes the likelihood unbounded as the spread shrinks to nothing.
        let identical = vec![
            SpendSummary {
                x: 3.0,
                mean_spend: 25.0
            };
            200
        ];
        if let Ok(report) = GammaGammaParams::fit(&identical, None) {
            assert!(report.params.is_valid() && report.log_likelihood.is_finite());
        }
    }

    #[test]
    fn bg_nbd_fit_recovers_simulated_parameters() {
        let data = simulate_bg_nbd(CDNOW, 20_000, 42);
        let report = BgNbdParams::fit(&data, None).unwrap();
        let fitted = report.params;
        // The optimizer must reach at least the likelihood of the truth; this part does not
        // depend on sampling noise.
        assert!(
            report.log_likelihood >= CDNOW.log_likelihood(&data) - 1e-6,
            "{report:?}"
        );
        // The tolerances are sampling error, not optimizer error: over 12 seeds of 20,000
        // customers (30–80 weeks each) the largest relative errors were r 3%, α 5%, a 14% and
        // b 16%, and 3.5% for the mean dropout probability a/(a + b). a and b are weakly
        // identified individually because dropout is only observed indirectly, through
        // silences. Each bound below is about 3.5 standard errors; this seed lands at r 1.3%,
        // α 0.1%, a 1.1%, b 4.5%.
        assert!(relative_error(fitted.r, CDNOW.r) < 0.10, "{fitted:?}");
        assert!(
            relative_error(fitted.alpha, CDNOW.alpha) < 0.10,
            "{fitted:?}"
        );
        assert!(relative_error(fitted.a, CDNOW.a) < 0.25, "{fitted:?}");
        assert!(relative_error(fitted.b, CDNOW.b) < 0.25, "{fitted:?}");
        let mean_dropout = |p: &BgNbdParams| p.a / (p.a + p.b);
        assert!(
            relative_error(mean_dropout(&fitted), mean_dropout(&CDNOW)) < 0.07,
            "{fitted:?}"
        );
        assert_eq!(report.customers, 20_000);
    }

    #[test]
    fn gamma_gamma_fit_recovers_simulated_parameters() {
        let data = simulate_gamma_gamma(CDNOW_SPEND, 20_000, 42);
        let report = GammaGammaParams::fit(&data, None).unwrap();
        let fitted = report.params;
        assert!(
            report.log_likelihood >= CDNOW_SPEND.log_likelihood(&data) - 1e-6,
            "{report:?}"
        );
        // Over 12 seeds of 20,000 customers with 1–8 transactions each the largest relative
        // errors were p 16%, q 3% and v 18%: p and v trade off against each other along a
        // ridge, while the population mean v·p/(q − 1) they imply stayed within 0.8%. Each
        // bound below is about 3.5 standard errors; this seed lands at p 3.8%, q 1.4%, v 5.6%.
        assert!(relative_error(fitted.p, CDNOW_SPEND.p) < 0.30, "{fitted:?}");
        assert!(relative_error(fitted.q, CDNOW_SPEND.q) < 0.10, "{fitted:?}");
        assert!(relative_error(fitted.v, CDNOW_SPEND.v) < 0.30, "{fitted:?}");
        let population_mean = |g: &GammaGammaParams| g.v * g.p / (g.q - 1.0);
        assert!(
            relative_error(population_mean(&fitted), population_mean(&CDNOW_SPEND)) < 0.02,
            "{fitted:?}"
        );
    }

    #[test]
    fn gamma_gamma_fit_does_not_depend_on_the_currency_unit() {
        let dollars = simulate_gamma_gamma(CDNOW_SPEND, 1_000, 5);
        let cents: Vec<SpendSummary> = dollars
            .iter()
            .map(|s| SpendSummary {
                mean_spend: s.mean_spend * 100.0,
                ..*s
            })
            .collect();
        let in_dollars = GammaGammaParams::fit(&dollars, None).unwrap().params;
        let in_cents = GammaGammaParams::fit(&cents, None).unwrap().params;
        assert!(relative_error(in_cents.p, in_dollars.p) < 1e-6);
        assert!(relative_error(in_cents.q, in_dollars.q) < 1e-6);
        assert!(relative_error(in_cents.v, 100.0 * in_dollars.v) < 1e-6);
    }

    #[test]
    fn warm_and_cold_starts_reach_the_same_optimum() {
        // A periodic refit starts from the previous parameters, here the truth moved by 10%.
        let data = simulate_bg_nbd(CDNOW, 20_000, 42);
        let cold = BgNbdParams::fit(&data, None).unwrap();
        let nudged = BgNbdParams {
            r: CDNOW.r * 1.1,
            alpha: CDNOW.alpha * 0.9,
            a: CDNOW.a * 1.1,
            b: CDNOW.b * 0.9,
        };
        let warm = BgNbdParams::fit(&data, Some(nudged)).unwrap();
        let (w, c) = (warm.params, cold.params);
        for (w, c) in [(w.r, c.r), (w.alpha, c.alpha), (w.a, c.a), (w.b, c.b)] {
            assert!(relative_error(w, c) < 1e-6, "{warm:?} vs {cold:?}");
        }
        assert!(warm.iterations <= 15, "{warm:?}");

        let spend = simulate_gamma_gamma(CDNOW_SPEND, 20_000, 42);
        let cold = GammaGammaParams::fit(&spend, None).unwrap();
        let nudged = GammaGammaParams {
            p: CDNOW_SPEND.p * 1.1,
            q: CDNOW_SPEND.q * 0.9,
            v: CDNOW_SPEND.v * 1.1,
        };
        let warm = GammaGammaParams::fit(&spend, Some(nudged)).unwrap();
        let (w, c) = (warm.params, cold.params);
        for (w, c) in [(w.p, c.p), (w.q, c.q), (w.v, c.v)] {
            assert!(relative_error(w, c) < 1e-6, "{warm:?} vs {cold:?}");
        }
        assert!(warm.iterations <= 20, "{warm:?}");
    }

    #[test]
    fn warm_start_on_a_plateau_still_finds_the_optimum() {
        // Parameters a previous fit may have left far out, where nobody drops out and everyone
        // buys at the same rate: the likelihood is flat all around them, and the optimum for
        // these data lies elsewhere.
        let data = simulate_bg_nbd(CDNOW, 5_000, 11);
        let cold = BgNbdParams::fit(&data, None).unwrap();
        let plateau = BgNbdParams {
            r: 1e7,
            alpha: 5e7,
            a: 1e-6,
            b: 8.0,
        };
        let warm = BgNbdParams::fit(&data, Some(plateau)).unwrap();
        assert!(
            warm.log_likelihood >= cold.log_likelihood - 1e-6,
            "{warm:?} vs {cold:?}"
        );
        assert!(
            relative_error(warm.params.b, cold.params.b) < 1e-6,
            "{warm:?}"
        );
    }

    #[test]
    fn fit_settles_when_purchase_rates_do_not_vary() {
        // Everyone buys at rate 0.25 a week, so the gamma distribution of rates collapses to a
        // point: the likelihood keeps rising as r and α grow together, and its supremum lies
        // at infinity along that ridge. The fit must still stop, with the common rate r/α.
        let truth = BgNbdParams {
            r: 1e6,
            alpha: 4e6,
            ..CDNOW
        };
        let data = simulate_bg_nbd(truth, 5_000, 3);
        let report = BgNbdParams::fit(&data, None).unwrap();
        let BgNbdParams { r, alpha, .. } = report.params;
        assert!(r > 1e3, "{report:?}");
        assert!(relative_error(r / alpha, 0.25) < 0.03, "{report:?}");
        let again = BgNbdParams::fit(&data, Some(report.params)).unwrap();
        assert!(
            (again.log_likelihood - report.log_likelihood).abs() < 1e-6,
            "{again:?} vs {report:?}"
        );
    }

    #[test]
    fn nelder_mead_fallback_converges_from_where_bfgs_stopped() {
        let data = simulate_bg_nbd(CDNOW, 2_000, 5);
        let sample = BgNbdSample::new(&data);
        let objective = BgNbdObjective { sample: &sample };
        let start = [CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b].map(f64::ln);
        let optimum = quasi_newton(&objective, start).unwrap();
        assert!(optimum.converged);
        // As if BFGS had run out of iterations a little way off.
        let off = optimum.point.map(|t| t + 0.02);
        let stalled = Minimum {
            point: off,
            cost: objective.cost_and_gradient(&off).unwrap().0,
            iterations: MAX_QUASI_NEWTON_ITERS,
            converged: false,
        };
        let fallback = nelder_mead(objective, stalled).unwrap();
        assert!(fallback.converged);
        assert!(fallback.iterations > MAX_QUASI_NEWTON_ITERS);
        // Costs are means per customer.
        assert!(
            fallback.cost - optimum.cost < 1e-9,
            "{fallback:?} vs {optimum:?}"
        );
    }

    #[test]
    fn gamma_function_ratios_stay_exact_for_large_arguments() {
        // Γ(z + 1)/Γ(z) = z and ψ(z + 1) − ψ(z) = 1/z, on both sides of the switch to the
        // asymptotic series and far beyond it, where subtracting two ln Γ values near 10⁸
        // would leave about eight correct digits.
        for z in [0.3, 2.5, 15.999, 16.0, 16.001, 250.0, 1e7, 4e8_f64] {
            let ln_ratio = ln_gamma_ratio(z, 1.0);
            assert!(
                (ln_ratio - z.ln()).abs() < 1e-13 * z.ln().abs().max(1.0),
                "z = {z}: {ln_ratio}"
            );
            let psi_ratio = digamma_ratio(z, 1.0);
            assert!((psi_ratio * z - 1.0).abs() < 1e-12, "z = {z}: {psi_ratio}");
        }
        // Fractional steps agree with the plain differences where those are still accurate.
        for (z, x) in [(15.5, 0.7), (16.5, 0.7), (20.0, 33.3), (40.0, 2.5)] {
            let direct = ln_gamma(z + x) - ln_gamma(z);
            let got = ln_gamma_ratio(z, x);
            assert!(
                (got - direct).abs() < 1e-12 * direct.abs(),
                "({z}, {x}): {got} vs {direct}"
            );
            let direct = digamma(z + x) - digamma(z);
            let got = digamma_ratio(z, x);
            assert!(
                (got - direct).abs() < 1e-11 * direct.abs(),
                "({z}, {x}): {got} vs {direct}"
            );
        }
    }

    #[test]
    fn likelihood_gradients_match_finite_differences() {
        let rfm_data = simulate_bg_nbd(CDNOW, 2_000, 9);
        let sample = BgNbdSample::new(&rfm_data);
        let objective = BgNbdObjective { sample: &sample };
        // At the published estimates, and out where nobody drops out and rates do not vary.
        let far_out = BgNbdParams {
            r: 1e7,
            alpha: 5e7,
            a: 1e-6,
            b: 8.0,
        };
        for params in [CDNOW, far_out] {
            let theta = [params.r, params.alpha, params.a, params.b].map(f64::ln);
            assert_gradient_matches(&objective, theta);
        }
        let spend = simulate_gamma_gamma(CDNOW_SPEND, 2_000, 9);
        let sample = GammaGammaSample::new(&spend);
        let objective = GammaGammaObjective { sample: &sample };
        let low_shape = GammaGammaParams {
            p: 0.2,
            q: 2.5,
            v: 3_000.0,
        };
        for params in [CDNOW_SPEND, low_shape] {
            let theta = [params.p, params.q, params.v / sample.scale].map(f64::ln);
            assert_gradient_matches(&objective, theta);
        }
    }

    /// Checks the analytic gradient of `objective` at `theta` against central differences.
    fn assert_gradient_matches<const N: usize>(objective: &impl Objective<N>, theta: [f64; N]) {
        let (_, grad) = objective.cost_and_gradient(&theta).unwrap();
        let h = 1e-5;
        for i in 0..N {
            let cost_at = |delta: f64| {
                let mut shifted = theta;
                shifted[i] += delta;
                objective.cost_and_gradient(&shifted).unwrap().0
            };
            let numeric = (cost_at(h) - cost_at(-h)) / (2.0 * h);
            assert!(
                (grad[i] - numeric).abs() < 1e-7 * (1.0 + numeric.abs()),
                "θ = {theta:?}, component {i}: {} vs {numeric}",
                grad[i]
            );
        }
    }

    #[test]
    fn duplicate_summaries_are_merged_without_changing_the_likelihood() {
        let distinct = simulate_bg_nbd(CDNOW, 300, 13);
        // Every summary three times, plus customers without repeat purchases who differ only
        // in t_x, which plays no part for them.
        let mut data: Vec<RfmSummary> = distinct.iter().flat_map(|s| [*s; 3]).collect();
        data.extend((0..20).map(|i| rfm(0.0, f64::from(i), 40.0)));
        let sample = BgNbdSample::new(&data);
        let rows = sample.no_repeat.len() + sample.repeat.len();
        assert!(rows <= distinct.len() + 1, "{rows} rows");
        assert_eq!(sample.customers, data.len());
        let merged = sample.log_likelihood(&CDNOW);
        let direct = CDNOW.log_likelihood(&data);
        assert!(
            (merged - direct).abs() < 1e-9 * direct.abs(),
            "{merged} vs {direct}"
        );

        let distinct = simulate_gamma_gamma(CDNOW_SPEND, 300, 13);
        let data: Vec<SpendSummary> = distinct.iter().flat_map(|s| [*s; 3]).collect();
        let sample = GammaGammaSample::new(&data);
        assert!(
            sample.rows.len() <= distinct.len(),
            "{} rows",
            sample.rows.len()
        );
        assert_eq!(sample.customers, data.len());
        let scaled = GammaGammaParams {
            v: CDNOW_SPEND.v / sample.scale,
            ..CDNOW_SPEND
        };
        let merged = sample.log_likelihood(&scaled) - data.len() as f64 * sample.scale.ln();
        let direct = CDNOW_SPEND.log_likelihood(&data);
        assert!(
            (merged - direct).abs() < 1e-9 * direct.abs(),
            "{merged} vs {direct}"
        );
    }

    fn bg_nbd_params() -> impl Strategy<Value = BgNbdParams> {
        (0.01..10.0f64, 0.1..100.0f64, 0.01..10.0f64, 0.01..10.0f64)
            .prop_map(|(r, alpha, a, b)| BgNbdParams { r, alpha, a, b })
    }

    proptest! {
        #[test]
        fn p_alive_is_a_probability(
            params in bg_nbd_params(),
            x in 0u32..=1_000,
            recency in 0.0..=1.0f64,
            t in 0.0..=500.0f64,
        ) {
            let p = params.p_alive(f64::from(x), recency * t, t);
            prop_assert!((0.0..=1.0).contains(&p), "p_alive = {}", p);
        }

        #[test]
        fn expected_purchases_is_finite_and_non_negative(
            params in bg_nbd_params(),
            horizon in 0.0..=104.0f64,
            x in 0u32..=1_000,
            recency in 0.0..=1.0f64,
            t in 0.0..=500.0f64,
        ) {
            let e = params.expected_purchases(horizon, f64::from(x), recency * t, t);
            prop_assert!(e.is_finite() && e >= 0.0, "expected_purchases = {}", e);
        }

        #[test]
        fn longer_silence_never_raises_p_alive(
            params in bg_nbd_params(),
            x in 1u32..=1_000,
            t_x in 0.0..=250.0f64,
            silence in 0.0..=250.0f64,
            more in 0.0..=100.0f64,
        ) {
            let x = f64::from(x);
            let earlier = params.p_alive(x, t_x, t_x + silence);
            let later = params.p_alive(x, t_x, t_x + silence + more);
            // Allows for one rounding step in the final division and nothing more.
            prop_assert!(later <= earlier * (1.0 + 2.0 * f64::EPSILON), "{} > {}", later, earlier);
        }

        #[test]
        fn longer_horizon_never_lowers_expected_purchases(
            params in bg_nbd_params(),
            horizon in 0.0..=104.0f64,
            more in 0.0..=52.0f64,
            x in 0u32..=100,
            recency in 0.0..=1.0f64,
            t in 0.0..=200.0f64,
        ) {
            let (x, t_x) = (f64::from(x), recency * t);
            let shorter = params.expected_purchases(horizon, x, t_x, t);
            let longer = params.expected_purchases(horizon + more, x, t_x, t);
            // The series is summed to a relative 1e-10, so equal values may differ by that.
            prop_assert!(longer >= shorter * (1.0 - 1e-8), "{} < {}", longer, shorter);
        }

        #[test]
        fn expected_spend_lies_between_population_and_customer_means(
            p in 0.1..20.0f64,
            q in 1.1..20.0f64,
            v in 0.1..1_000.0f64,
            x in 1u32..=200,
            m in 0.01..10_000.0f64,
        ) {
            let params = GammaGammaParams { p, q, v };
            let population = v * p / (q - 1.0);
            let e = params.conditional_expected_spend(f64::from(x), m);
            let (lo, hi) = if population < m { (population, m) } else { (m, population) };
            prop_assert!(e >= lo * (1.0 - 1e-12) && e <= hi * (1.0 + 1e-12), "{} not in [{}, {}]", e, lo, hi);
        }
    }
}
