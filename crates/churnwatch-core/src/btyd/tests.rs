//! Unit tests of the BTYD models, the special functions and the fits.

use super::bgnbd::*;
use super::gamma_gamma::*;
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
    let lifetime = (params.a + params.b + x - 1.0) / (params.a - 1.0) * params.p_alive(x, t_x, t);
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
