//! The BG/NBD model (Fader, Hardie & Lee 2005): parameters, likelihood, per-customer
//! predictions and the prepared sample its fit evaluates.

use super::*;

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
    pub(super) fn expected_purchases_clamped(
        &self,
        horizon: f64,
        x: f64,
        t: f64,
        p_alive: f64,
    ) -> f64 {
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
    pub(super) fn from_log(theta: &[f64]) -> Option<Self> {
        let [r, alpha, a, b] = exp_in_bounds::<4>(theta)?;
        Some(Self { r, alpha, a, b })
    }

    /// Returns ln[(a/(b+x−1)) · ((α+T)/(α+t_x))^{r+x}], the log-odds that a customer with
    /// `x ≥ 1` has dropped out.
    pub(super) fn ln_dropout_odds(&self, x: f64, t_x: f64, t: f64) -> f64 {
        // ln_1p keeps precision when the silence t − t_x is short next to α + t_x.
        (self.a / (self.b + x - 1.0)).ln() + (self.r + x) * ((t - t_x) / (self.alpha + t_x)).ln_1p()
    }

    /// Returns P(alive) for inputs already passed through [`clamp_rfm`].
    pub(super) fn p_alive_clamped(&self, x: f64, t_x: f64, t: f64) -> f64 {
        if x == 0.0 {
            return 1.0;
        }
        // exp overflows to +inf for hopeless customers, which correctly gives 0.
        (1.0 / (1.0 + self.ln_dropout_odds(x, t_x, t).exp())).clamp(0.0, 1.0)
    }
}

/// Returns (x, t_x, t) clamped into the BG/NBD domain for the per-event predictions.
pub(super) fn clamp_rfm(x: f64, t_x: f64, t: f64) -> (f64, f64, f64) {
    // Comparisons are false for NaN, so NaN falls into the zero branches.
    let x = if x >= 1.0 && x.is_finite() { x } else { 0.0 };
    let t = if t > 0.0 && t.is_finite() { t } else { 0.0 };
    let t_x = if t_x > 0.0 { t_x.min(t) } else { 0.0 };
    (x, t_x, t)
}

/// Customers with the same number of repeat purchases; their rows sit together in
/// [`BgNbdSample::repeat`].
#[derive(Debug, Clone)]
pub(super) struct RepeatGroup {
    pub(super) x: f64,
    /// Customers in the group: the sum of its rows' weights.
    pub(super) weight: f64,
    pub(super) rows: Range<usize>,
}

/// A distinct (t_x, T) among the customers of one [`RepeatGroup`], with how many share it.
#[derive(Debug, Clone, Copy)]
pub(super) struct RepeatRow {
    pub(super) t_x: f64,
    pub(super) t: f64,
    pub(super) weight: f64,
}

/// Valid BG/NBD summaries prepared for repeated likelihood evaluation.
///
/// Identical summaries become one weighted row, and rows are grouped by x: the gamma-function
/// terms depend on x alone, so they are computed once per distinct x rather than per customer.
/// Customers without repeat purchases contribute through their age alone.
#[derive(Debug)]
pub(super) struct BgNbdSample {
    /// Valid summaries, duplicates included.
    pub(super) customers: usize,
    /// Distinct ages of the customers without repeat purchases, with multiplicities.
    pub(super) no_repeat: Vec<(f64, f64)>,
    pub(super) groups: Vec<RepeatGroup>,
    pub(super) repeat: Vec<RepeatRow>,
}

impl BgNbdSample {
    pub(super) fn new(data: &[RfmSummary]) -> Self {
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
    pub(super) fn log_likelihood(&self, params: &BgNbdParams) -> f64 {
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
    pub(super) fn log_likelihood_and_gradient(&self, params: &BgNbdParams) -> (f64, [f64; 4]) {
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
pub(super) struct BgNbdObjective<'a> {
    pub(super) sample: &'a BgNbdSample,
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
