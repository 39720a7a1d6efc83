//! The Gamma-Gamma spend model (Fader, Hardie & Lee 2005): parameters, likelihood, expected
//! spend and the prepared sample its fit evaluates.

use super::*;

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
    pub(super) fn from_log(theta: &[f64]) -> Option<Self> {
        let [p, q, v] = exp_in_bounds::<3>(theta)?;
        Some(Self { p, q, v })
    }
}

/// Customers with the same number of transactions; their rows sit together in
/// [`GammaGammaSample::rows`].
#[derive(Debug, Clone)]
pub(super) struct SpendGroup {
    pub(super) x: f64,
    pub(super) ln_x: f64,
    /// Customers in the group: the sum of its rows' weights.
    pub(super) weight: f64,
    /// Σ ln m over the group's customers, m being scaled mean spend.
    pub(super) sum_ln_m: f64,
    pub(super) rows: Range<usize>,
}

/// A distinct scaled mean spend m within one [`SpendGroup`], stored as x·m, with how many
/// customers share it.
#[derive(Debug, Clone, Copy)]
pub(super) struct SpendRow {
    pub(super) xm: f64,
    pub(super) weight: f64,
}

/// Valid Gamma-Gamma summaries prepared for repeated likelihood evaluation, grouped and merged
/// like [`BgNbdSample`].
#[derive(Debug)]
pub(super) struct GammaGammaSample {
    /// Mean of the valid mean-spend values; spend is divided by it.
    pub(super) scale: f64,
    /// Valid summaries, duplicates included.
    pub(super) customers: usize,
    pub(super) groups: Vec<SpendGroup>,
    pub(super) rows: Vec<SpendRow>,
}

impl GammaGammaSample {
    pub(super) fn new(data: &[SpendSummary]) -> Self {
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
    pub(super) fn log_likelihood(&self, params: &GammaGammaParams) -> f64 {
        self.log_likelihood_and_gradient(params).0
    }

    /// Returns the log-likelihood of the scaled spend under `params` and its gradient with
    /// respect to (ln p, ln q, ln v), in one pass over the rows.
    ///
    /// Per customer this is the density of [`GammaGammaParams::log_likelihood`] with
    /// q ln v − (px+q) ln(v + xm) written as −px ln v − (px+q) ln(1 + xm/v).
    pub(super) fn log_likelihood_and_gradient(&self, params: &GammaGammaParams) -> (f64, [f64; 3]) {
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
pub(super) struct GammaGammaObjective<'a> {
    pub(super) sample: &'a GammaGammaSample,
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
