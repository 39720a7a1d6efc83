//! Simulated BG/NBD and Gamma-Gamma populations with known parameters, and the published CDNOW
//! estimates, for the unit tests of `btyd` and for `benches/fit.rs` (which includes this file
//! by path). Only public items of the parent are used, so it compiles in both places.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp, Gamma};

use super::{BgNbdParams, GammaGammaParams, RfmSummary, SpendSummary};

/// Published CDNOW estimates in weeks (FHL 2005, section 5).
pub const CDNOW: BgNbdParams = BgNbdParams {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};

/// Published CDNOW Gamma-Gamma estimates (FHL 2005, RFM and CLV).
pub const CDNOW_SPEND: GammaGammaParams = GammaGammaParams {
    p: 6.25,
    q: 3.74,
    v: 15.44,
};

/// Simulates the BG/NBD story for `n` customers observed for 30 to 80 weeks each.
pub fn simulate_bg_nbd(truth: BgNbdParams, n: usize, seed: u64) -> Vec<RfmSummary> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rates = Gamma::new(truth.r, 1.0 / truth.alpha).unwrap();
    let dropouts = Beta::new(truth.a, truth.b).unwrap();
    (0..n)
        .map(|_| {
            let lambda: f64 = rates.sample(&mut rng);
            let p: f64 = dropouts.sample(&mut rng);
            let age: f64 = rng.random_range(30.0..80.0);
            let (mut x, mut t_x, mut now) = (0.0, 0.0, 0.0);
            // A rate that underflowed to zero never buys again.
            if lambda > 0.0 {
                let gaps = Exp::new(lambda).unwrap();
                loop {
                    now += gaps.sample(&mut rng);
                    if now > age {
                        break;
                    }
                    x += 1.0;
                    t_x = now;
                    if rng.random_bool(p) {
                        break;
                    }
                }
            }
            RfmSummary { x, t_x, t: age }
        })
        .collect()
}

/// Simulates the Gamma-Gamma story for `n` customers with 1 to 8 transactions each.
pub fn simulate_gamma_gamma(truth: GammaGammaParams, n: usize, seed: u64) -> Vec<SpendSummary> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rates = Gamma::new(truth.q, 1.0 / truth.v).unwrap();
    (0..n)
        .map(|_| {
            let nu: f64 = rates.sample(&mut rng);
            let values = Gamma::new(truth.p, 1.0 / nu).unwrap();
            let x: u32 = rng.random_range(1..=8);
            let total: f64 = (0..x).map(|_| values.sample(&mut rng)).sum();
            SpendSummary {
                x: f64::from(x),
                mean_spend: total / f64::from(x),
            }
        })
        .collect()
}
