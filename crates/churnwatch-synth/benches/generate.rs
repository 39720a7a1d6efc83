//! Throughput of the generator: simulating and sorting a data set, and rendering it as JSON Lines.
//!
//! Run: `cargo bench -p churnwatch-synth --bench generate`.

use std::hint::black_box;

use churnwatch_synth::{SynthConfig, generate};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn config() -> SynthConfig {
    SynthConfig {
        customers: 2_000,
        months: 24,
        seed: 1,
        ..SynthConfig::default()
    }
}

fn bench_generate(c: &mut Criterion) {
    let config = config();
    let mut group = c.benchmark_group("synth");
    group.sample_size(10);
    group.throughput(Throughput::Elements(config.customers));
    group.bench_function("generate 2k customers x 24 months", |b| {
        b.iter(|| generate(black_box(&config)).unwrap().len())
    });
    let dataset = generate(&config).unwrap();
    group.throughput(Throughput::Elements(dataset.len() as u64));
    group.bench_function("write_jsonl per line", |b| {
        b.iter(|| dataset.write_jsonl(std::io::sink()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_generate);
criterion_main!(benches);
