//! Special functions behind the BTYD likelihoods and predictions: the Gauss hypergeometric
//! series, and ratios of gamma and digamma functions that stay accurate for huge arguments.

use super::*;

/// Relative tolerance at which [`hyp2f1`] stops summing.
pub(super) const HYP2F1_TOLERANCE: f64 = 1e-10;

/// Maximum number of series terms [`hyp2f1`] sums before returning its partial sum.
pub(super) const HYP2F1_MAX_TERMS: u32 = 10_000;

/// Argument from which [`ln_gamma_ratio`] and [`digamma_ratio`] use asymptotic series.
pub(super) const ASYMPTOTIC_MIN: f64 = 16.0;

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
pub(super) fn hyp2f1_reduced_tail(a: f64, b: f64, c: f64, z: f64) -> f64 {
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

/// Returns ln(1 + eᵒ) and the logistic function eᵒ/(1 + eᵒ), without overflow for any `o`.
pub(super) fn softplus_and_logistic(o: f64) -> (f64, f64) {
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
pub(super) fn ln_gamma_ratio(z: f64, x: f64) -> f64 {
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
pub(super) fn stirling_correction(w: f64) -> f64 {
    let v = 1.0 / (w * w);
    (1.0 / 12.0 - v * (1.0 / 360.0 - v * (1.0 / 1260.0 - v * (1.0 / 1680.0 - v / 1188.0)))) / w
}

/// Returns ψ(z + x) − ψ(z), the derivative of [`ln_gamma_ratio`] with respect to z, for z > 0
/// and x ≥ 0, without cancellation for large z.
pub(super) fn digamma_ratio(z: f64, x: f64) -> f64 {
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
pub(super) fn digamma_correction(w: f64) -> f64 {
    let v = 1.0 / (w * w);
    -0.5 / w
        - v * (1.0 / 12.0 - v * (1.0 / 120.0 - v * (1.0 / 252.0 - v * (1.0 / 240.0 - v / 132.0))))
}
