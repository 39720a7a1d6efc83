//! Throughput of the domain core on one core: `apply` + `assess` per event, `parse_event` per
//! message, and the serialized size of a typical customer's state.
//!
//! Run: `cargo bench -p churnwatch-core --bench core`.

use std::hint::black_box;

use churnwatch_core::event::{ContactChannel, Event, EventKind, Item, Order, SupportContact};
use churnwatch_core::money::CurrencyCode;
use churnwatch_core::time::{DAY, Timestamp};
use churnwatch_core::{CustomerState, Model, ParseConfig, apply, assess, parse_event};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CATEGORIES: [&str; 8] = [
    "coffee", "tea", "snacks", "kitchen", "books", "toys", "beauty", "garden",
];
/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200;

/// A time-ordered stream for `customers` customers over 24 months: orders every 1–6 weeks with
/// 1–3 categories from a personal set of 5, and an occasional support contact.
fn stream(customers: usize, seed: u64) -> Vec<(usize, Event)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut events = Vec::new();
    for c in 0..customers {
        let every = rng.random_range(7.0..42.0) * DAY as f64;
        let basket = rng.random_range(1_500..9_000);
        let first = rng.random_range(0..5);
        let mut at = T0 as f64 + rng.random_range(0.0..90.0) * DAY as f64;
        let mut n = 0;
        while at < (T0 + 730 * DAY) as f64 {
            let cats: Vec<&str> = (0..rng.random_range(1..=3))
                .map(|k| CATEGORIES[(first + (n + k) % 5) % CATEGORIES.len()])
                .collect();
            let id = format!("evt-{c:06}-{n:05}");
            let kind = if rng.random_bool(0.1) {
                EventKind::SupportContact(SupportContact {
                    channel: ContactChannel::Email,
                    minutes: Some(4),
                })
            } else {
                let total = basket + rng.random_range(0..2_000);
                EventKind::Order(Order {
                    order_id: format!("o{n}"),
                    total,
                    discount: 0,
                    cost: Some(total * 55 / 100),
                    items: cats
                        .iter()
                        .map(|c| Item {
                            sku: format!("sku-{c}"),
                            category: Some((*c).into()),
                            quantity: 1,
                            unit_price: total,
                        })
                        .collect(),
                    channel: Some("web".into()),
                    original_currency: CurrencyCode::default(),
                    original_total: total,
                })
            };
            events.push((
                c,
                Event {
                    event_id: id,
                    customer_id: format!("c{c:06}"),
                    occurred_at: Timestamp(at as i64),
                    kind,
                },
            ));
            at += every * rng.random_range(0.6..1.4);
            n += 1;
        }
    }
    events.sort_by_key(|(_, e)| e.occurred_at);
    events
}

fn apply_and_evaluate(c: &mut Criterion) {
    // A working set the size of a service batch: a few hundred customers' states and their
    // events, hot in cache as they are right after a batch is parsed and its states loaded.
    // With tens of thousands of pre-built events scattered over the heap, the loop measures
    // the DRAM latency of the benchmark's own layout instead (about 2x slower here).
    let customers = 300;
    let events = stream(customers, 7);
    let model = Model::default();
    let fresh: Vec<CustomerState> = (0..customers)
        .map(|c| CustomerState::new(format!("c{c:06}")))
        .collect();

    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(20);
    group.bench_function("apply_and_assess_per_event", |b| {
        b.iter_batched(
            || fresh.clone(),
            |mut states| {
                for (c, e) in &events {
                    let s = &mut states[*c];
                    apply(s, e);
                    black_box(assess(s, e.occurred_at, &model));
                }
                states
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("apply_only_per_event", |b| {
        b.iter_batched(
            || fresh.clone(),
            |mut states| {
                for (c, e) in &events {
                    apply(&mut states[*c], e);
                }
                states
            },
            BatchSize::LargeInput,
        )
    });

    let wire: Vec<Vec<u8>> = events
        .iter()
        .take(50_000)
        .map(|(_, e)| {
            let EventKind::Order(o) = &e.kind else {
                return format!(
                    r#"{{"type":"support_contact","event_id":"{}","customer_id":"{}","occurred_at":"{}","channel":"email","minutes":4}}"#,
                    e.event_id, e.customer_id, e.occurred_at
                )
                .into_bytes();
            };
            format!(
                r#"{{"type":"order","event_id":"{}","order_id":"{}","customer_id":"{}","occurred_at":"{}","currency":"USD","total":"{}.{:02}","cost":"{}.{:02}","channel":"web","items":[{{"sku":"s1","category":"coffee","quantity":1,"unit_price":"{}.{:02}"}}]}}"#,
                e.event_id, o.order_id, e.customer_id, e.occurred_at,
                o.total / 100, o.total % 100, o.cost.unwrap() / 100, o.cost.unwrap() % 100, o.total / 100, o.total % 100
            )
            .into_bytes()
        })
        .collect();
    let config = ParseConfig::default();
    let now = Timestamp(T0 + 800 * DAY);
    group.throughput(Throughput::Elements(wire.len() as u64));
    group.bench_function("parse_event_per_message", |b| {
        b.iter(|| {
            for w in &wire {
                black_box(parse_event(w, now, &config).unwrap());
            }
        })
    });
    group.finish();

    // Serialized state sizes after 24 months (postcard, the store's encoding).
    let customers = 2_000;
    let events = stream(customers, 11);
    let mut states: Vec<CustomerState> = (0..customers)
        .map(|c| CustomerState::new(format!("c{c:06}")))
        .collect();
    for (c, e) in &events {
        apply(&mut states[*c], e);
        assess(&mut states[*c], e.occurred_at, &model);
    }
    let mut sizes: Vec<usize> = states
        .iter()
        .map(|s| postcard::to_stdvec(s).unwrap().len())
        .collect();
    sizes.sort_unstable();
    let cats =
        states.iter().map(|s| s.categories.len()).sum::<usize>() as f64 / states.len() as f64;
    let months = states.iter().map(|s| s.months.len()).sum::<usize>() as f64 / states.len() as f64;
    eprintln!(
        "state size over {} customers after 24 months ({months:.1} month windows, {cats:.1} categories on average): median {} B, p99 {} B, max {} B",
        sizes.len(),
        sizes[sizes.len() / 2],
        sizes[sizes.len() * 99 / 100],
        sizes[sizes.len() - 1]
    );
}

criterion_group!(benches, apply_and_evaluate);
criterion_main!(benches);
