//! Time of the BTYD maximum-likelihood fits on simulated populations: BG/NBD and Gamma-Gamma,
//! each from a cold start (the default parameters) and from a warm start (the true parameters
//! perturbed by 10%, as a periodic refit starts from the previous fit).
//!
//! Run: `cargo bench -p churnwatch-core --bench fit`. Set `FIT_BENCH_MILLION=1` to add a
//! population of 1,000,000 customers (slow to simulate and to sample ten times).

use std::hint::black_box;

use churnwatch_core::btyd::{BgNbdParams, GammaGammaParams, RfmSummary, SpendSummary};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp, Gamma};

/// Published CDNOW BG/NBD estimates in weeks (Fader, Hardie & Lee 2005).
const BG_NBD_TRUTH: BgNbdParams = BgNbdParams {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};

/// Published CDNOW Gamma-Gamma estimates, in dollars.
const GAMMA_GAMMA_TRUTH: GammaGammaParams = GammaGammaParams {
    p: 6.25,
    q: 3.74,
    v: 15.44,
};

/// The truth with every parameter moved by 10%, alternately up and down.
const BG_NBD_WARM: BgNbdParams = BgNbdParams {
    r: BG_NBD_TRUTH.r * 1.1,
    alpha: BG_NBD_TRUTH.alpha * 0.9,
    a: BG_NBD_TRUTH.a * 1.1,
    b: BG_NBD_TRUTH.b * 0.9,
};

/// As [`BG_NBD_WARM`].
const GAMMA_GAMMA_WARM: GammaGammaParams = GammaGammaParams {
    p: GAMMA_GAMMA_TRUTH.p * 1.1,
    q: GAMMA_GAMMA_TRUTH.q * 0.9,
    v: GAMMA_GAMMA_TRUTH.v * 1.1,
};

/// Simulates the BG/NBD story for `n` customers observed for 30 to 80 weeks each.
fn simulate_bg_nbd(truth: BgNbdParams, n: usize, seed: u64) -> Vec<RfmSummary> {
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
fn simulate_gamma_gamma(truth: GammaGammaParams, n: usize, seed: u64) -> Vec<SpendSummary> {
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

/// Population sizes to bench.
fn sizes() -> Vec<usize> {
    let mut sizes = vec![10_000, 100_000];
    if std::env::var_os("FIT_BENCH_MILLION").is_some() {
        sizes.push(1_000_000);
    }
    sizes
}

fn bg_nbd_fit(c: &mut Criterion) {
    let mut group = c.benchmark_group("bgnbd_fit");
    group.sample_size(10);
    for n in sizes() {
        let data = simulate_bg_nbd(BG_NBD_TRUTH, n, 42);
        for (name, start) in [("cold", None), ("warm", Some(BG_NBD_WARM))] {
            let report = BgNbdParams::fit(&data, start).unwrap();
            eprintln!("bgnbd {name} {n}: {report:?}");
            group.bench_with_input(BenchmarkId::new(name, n), &data, |b, data| {
                b.iter(|| BgNbdParams::fit(black_box(data), start).unwrap())
            });
        }
    }
    group.finish();
}

fn gamma_gamma_fit(c: &mut Criterion) {
    let mut group = c.benchmark_group("gamma_gamma_fit");
    group.sample_size(10);
    for n in sizes() {
        let data = simulate_gamma_gamma(GAMMA_GAMMA_TRUTH, n, 42);
        for (name, start) in [("cold", None), ("warm", Some(GAMMA_GAMMA_WARM))] {
            let report = GammaGammaParams::fit(&data, start).unwrap();
            eprintln!("gamma_gamma {name} {n}: {report:?}");
            group.bench_with_input(BenchmarkId::new(name, n), &data, |b, data| {
                b.iter(|| GammaGammaParams::fit(black_box(data), start).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bg_nbd_fit, gamma_gamma_fit);
criterion_main!(benches);
