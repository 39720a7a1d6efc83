//! Time of the BTYD maximum-likelihood fits on simulated populations: BG/NBD and Gamma-Gamma,
//! each from a cold start (the default parameters) and from a warm start (the true parameters
//! perturbed by 10%, as a periodic refit starts from the previous fit).
//!
//! Run: `cargo bench -p churnwatch-core --bench fit`. Set `FIT_BENCH_MILLION=1` to add a
//! population of 1,000,000 customers (slow to simulate and to sample ten times).

use std::hint::black_box;

use churnwatch_core::btyd::{BgNbdParams, GammaGammaParams, RfmSummary, SpendSummary};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use simulate::{CDNOW as BG_NBD_TRUTH, CDNOW_SPEND as GAMMA_GAMMA_TRUTH};
use simulate::{simulate_bg_nbd, simulate_gamma_gamma};

#[path = "../src/btyd/simulate.rs"]
mod simulate;

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
