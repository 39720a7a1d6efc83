//! Maximum-likelihood fitting over log-parameters: a bounded quasi-Newton (BFGS) iteration on
//! analytic gradients, with restarted Nelder-Mead (argmin) as the fallback.

use super::*;

/// Largest absolute log-parameter the optimizer may visit; beyond it the cost is infinite.
///
/// e^20 ≈ 5·10^8 is far outside any plausible parameter, and the bound keeps a degenerate data
/// set from walking the optimizer towards overflow.
pub(super) const LOG_PARAM_BOUND: f64 = 20.0;

/// Distance from the edge of the search box, in log-parameter units, within which a parameter
/// pushed outwards by the gradient is held still: 1% of e^±20 makes no difference, while
/// letting the one parameter crawl the rest of the way would dominate every step.
pub(super) const EDGE_MARGIN: f64 = 0.01;

/// Quasi-Newton iteration cap; a fit that needs more continues with Nelder-Mead.
pub(super) const MAX_QUASI_NEWTON_ITERS: u64 = 200;

/// Longest step along any log-parameter one quasi-Newton iteration may take: a factor of e.
///
/// The first steps from a cold start are taken before any curvature is known, and the cap
/// keeps them from leaping to where the likelihood underflows.
pub(super) const MAX_STEP: f64 = 1.0;

/// Relative parameter change below which the quasi-Newton iteration has converged.
pub(super) const PARAM_TOLERANCE: f64 = 1e-8;

/// Improvement of the mean log-likelihood per customer below which, twice in a row, the
/// quasi-Newton iteration has converged although the parameters still move.
pub(super) const FLAT_TOLERANCE: f64 = 1e-12;

/// Longest predicted step, in log-parameter units, that the quasi-Newton iteration takes
/// without a line search once the improvement it predicts is below [`FLAT_TOLERANCE`].
pub(super) const FINAL_STEP: f64 = 1e-4;

/// Fraction of the predicted decrease a line-search step must achieve (Armijo's constant).
pub(super) const ARMIJO: f64 = 1e-4;

/// Relative size below which step·(change of gradient) counts as no curvature at all.
pub(super) const CURVATURE_FLOOR: f64 = 1e-10;

/// Largest absolute log-parameter of a start or a result that [`minimize`] trusts on its own.
pub(super) const FAR_OUT: f64 = 10.0;

/// Log-parameter step of the finite differences behind the first quasi-Newton iteration's
/// Hessian.
pub(super) const HESSIAN_STEP: f64 = 1e-4;

/// Nelder-Mead iteration cap for one run (one simplex) of the fallback.
pub(super) const MAX_ITERS_PER_RUN: u64 = 2_000;

/// Maximum number of Nelder-Mead runs of the fallback (the first plus restarts).
pub(super) const MAX_RUNS: usize = 4;

/// Simplex edge, in log-parameter units, of each Nelder-Mead run: the fallback starts where
/// the quasi-Newton iteration stopped, close to the optimum.
pub(super) const SIMPLEX_STEP: f64 = 0.05;

/// Spread of the simplex costs (mean negative log-likelihood per customer) that ends a run.
pub(super) const SD_TOLERANCE: f64 = 1e-11;

/// Improvement in mean negative log-likelihood per customer below which a Nelder-Mead run
/// confirms convergence.
pub(super) const CONVERGED_IMPROVEMENT: f64 = 1e-10;

/// Returns exp of each log-parameter, or `None` if one is outside ±[`LOG_PARAM_BOUND`].
pub(super) fn exp_in_bounds<const N: usize>(theta: &[f64]) -> Option<[f64; N]> {
    let theta: &[f64; N] = theta.try_into().ok()?;
    if theta.iter().all(|t| t.abs() <= LOG_PARAM_BOUND) {
        Some(theta.map(f64::exp))
    } else {
        None
    }
}

/// A fit's objective over log-parameters: the mean negative log-likelihood per customer.
///
/// Working in logs keeps every candidate positive, and dividing by the number of customers
/// keeps the tolerances independent of the sample size.
pub(super) trait Objective<const N: usize> {
    /// Returns the cost at `theta` and its gradient, or `None` outside ±[`LOG_PARAM_BOUND`] or
    /// where either is not finite.
    fn cost_and_gradient(&self, theta: &[f64; N]) -> Option<(f64, [f64; N])>;
}

/// Returns (−ll/n, −grad/n), or `None` unless all of it is finite.
pub(super) fn mean_cost<const N: usize>(
    ll: f64,
    grad: [f64; N],
    n: usize,
) -> Option<(f64, [f64; N])> {
    let n = n as f64;
    let cost = -ll / n;
    let grad = grad.map(|g| -g / n);
    (cost.is_finite() && grad.iter().all(|g| g.is_finite())).then_some((cost, grad))
}

/// Returns the cost alone for Nelder-Mead, +∞ where [`Objective::cost_and_gradient`] has none.
///
/// Nelder-Mead compares costs with `<`; a NaN would fail every comparison and stall it, while
/// +∞ simply loses.
pub(super) fn cost_only<const N: usize>(objective: &impl Objective<N>, theta: &[f64]) -> f64 {
    <&[f64; N]>::try_from(theta)
        .ok()
        .and_then(|theta| objective.cost_and_gradient(theta))
        .map_or(f64::INFINITY, |(cost, _)| cost)
}

/// Best point found by [`minimize`].
#[derive(Debug)]
pub(super) struct Minimum<const N: usize> {
    pub(super) point: [f64; N],
    pub(super) cost: f64,
    /// Quasi-Newton iterations plus any Nelder-Mead iterations.
    pub(super) iterations: u64,
    /// Whether a stopping rule was met; false when the iteration caps ran out first.
    pub(super) converged: bool,
}

/// Returns the minimum of `objective` found from `start` and, when either `start` or that
/// minimum lies far out, also from `default_start`: whichever is lower.
///
/// Far out (beyond e^±[`FAR_OUT`]) the likelihood flattens towards a limiting model, such as
/// no dropout at all (a → 0) or identical purchase rates (r, α → ∞), and the gradient fades
/// with it. A previous fit's parameters can sit on such a plateau while the new data's optimum
/// lies elsewhere, and the optimizer then stops where it started because nothing nearby is
/// better; the default start sees the likelihood from a region where it is not flat.
pub(super) fn minimize<O, const N: usize>(
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
pub(super) fn minimize_from<O, const N: usize>(
    objective: &O,
    start: [f64; N],
) -> Result<Minimum<N>, FitError>
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
pub(super) fn quasi_newton<const N: usize>(
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
pub(super) fn projected_direction<const N: usize>(
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
pub(super) fn hold<const N: usize>(h: &mut [[f64; N]; N], k: usize) {
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
pub(super) fn line_search<const N: usize>(
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
pub(super) fn bfgs_update<const N: usize>(
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
pub(super) fn inverse_hessian_estimate<const N: usize>(
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
pub(super) fn invert_positive_definite<const N: usize>(m: &[[f64; N]; N]) -> Option<[[f64; N]; N]> {
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
pub(super) fn identity<const N: usize>() -> [[f64; N]; N] {
    std::array::from_fn(|i| std::array::from_fn(|j| if i == j { 1.0 } else { 0.0 }))
}

/// Returns the product of `m` and `v`.
pub(super) fn mat_vec<const N: usize>(m: &[[f64; N]; N], v: &[f64; N]) -> [f64; N] {
    m.map(|row| dot(&row, v))
}

/// Returns the dot product of `u` and `v`.
pub(super) fn dot<const N: usize>(u: &[f64; N], v: &[f64; N]) -> f64 {
    u.iter().zip(v).map(|(a, b)| a * b).sum()
}

/// Returns the largest absolute component of `v`.
pub(super) fn max_abs<const N: usize>(v: &[f64; N]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Returns the minimum of `objective` found by restarted Nelder-Mead from `from`, the best
/// point of a quasi-Newton run that did not converge.
///
/// A single Nelder-Mead run can stop on a collapsed simplex short of the optimum, the known
/// weakness of the method, so each run is followed by a fresh simplex around its best point;
/// the fit has converged once a run improves the cost by less than [`CONVERGED_IMPROVEMENT`].
pub(super) fn nelder_mead<O, const N: usize>(
    objective: O,
    from: Minimum<N>,
) -> Result<Minimum<N>, FitError>
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
pub(super) fn simplex_around(center: &[f64], step: f64) -> Vec<Vec<f64>> {
    let mut simplex = vec![center.to_vec()];
    for i in 0..center.len() {
        let mut vertex = center.to_vec();
        vertex[i] += step;
        simplex.push(vertex);
    }
    simplex
}

/// Converts an argmin error into [`FitError::Solver`].
pub(super) fn solver_error(err: argmin::core::Error) -> FitError {
    FitError::Solver(err.to_string())
}
