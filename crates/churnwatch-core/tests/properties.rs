//! Invariants of `apply`: order-insensitivity, idempotence under redelivery, bounded size.

mod support;

use churnwatch_core::state::{MAX_CATEGORIES, MAX_SEEN_EVENTS, RECENT_ORDERS, WINDOW_MONTHS};
use churnwatch_core::{Applied, CustomerState, Event, apply};
use proptest::prelude::*;
use support::*;

const CATEGORIES: [&str; 6] = ["coffee", "tea", "snacks", "kitchen", "books", "toys"];

/// One customer's events over at most 23 months, with distinct ids.
fn history() -> impl Strategy<Value = Vec<Event>> {
    let one = (
        0u8..5,
        0.0f64..700.0,
        1i64..50_000,
        proptest::sample::subsequence(CATEGORIES.to_vec(), 0..3),
    );
    proptest::collection::vec(one, 1..60).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (kind, d, amount, cats))| {
                let id = format!("e{i}");
                match kind {
                    0 | 1 => order("c", &id, day(d), amount, amount / 3, &cats),
                    2 => refund("c", &id, day(d), amount / 4),
                    3 => contact("c", &id, day(d)),
                    _ if i % 2 == 0 => {
                        signup("c", &id, day(d), cats.first().copied().unwrap_or("search"))
                    }
                    _ => retention("c", &id, day(d), "winback"),
                }
            })
            .collect()
    })
}

/// Returns whether some retention action has more than [`RECENT_ORDERS`] orders after it: an
/// action that arrives after all of them can only see the remembered ones, so when it learned
/// of the first order after it depends on arrival order (the documented limit of
/// `RetentionMark::ordered_again_at`).
fn beyond_order_memory(events: &[Event]) -> bool {
    use churnwatch_core::EventKind;
    events.iter().any(|a| {
        matches!(a.kind, EventKind::RetentionAction(_))
            && events
                .iter()
                .filter(|o| matches!(o.kind, EventKind::Order(_)) && o.occurred_at > a.occurred_at)
                .count()
                > RECENT_ORDERS
    })
}

fn fold(events: &[Event]) -> CustomerState {
    let mut s = CustomerState::new("c");
    for e in events {
        apply(&mut s, e);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_same_events_in_any_order_give_the_same_state(
        (events, shuffled) in history().prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle()))
    ) {
        let (mut a, mut b) = (fold(&events), fold(&shuffled));
        if beyond_order_memory(&events) {
            for m in a.retention.iter_mut().chain(b.retention.iter_mut()) {
                m.ordered_again_at = None;
            }
        }
        prop_assert_eq!(a, b);
    }

    #[test]
    fn redelivered_events_change_nothing(
        (events, picks) in history().prop_flat_map(|e| { let n = e.len(); (Just(e), proptest::collection::vec(0..n, 1..20)) })
    ) {
        // Redeliveries arrive right after the newest event, the way Kafka redelivers after a
        // crash: each is within the de-duplication horizon of the newest event.
        let mut sorted = events.clone();
        sorted.sort_by_key(|e| e.occurred_at);
        let clean = fold(&sorted);
        let newest = sorted.last().unwrap().occurred_at;
        let mut s = clean.clone();
        for i in picks {
            let e = &sorted[i];
            if newest.since(e.occurred_at) <= churnwatch_core::state::DEDUP_HORIZON_SECS
                && sorted.iter().filter(|x| newest.since(x.occurred_at) <= churnwatch_core::state::DEDUP_HORIZON_SECS).count() <= MAX_SEEN_EVENTS
            {
                prop_assert_eq!(apply(&mut s, e), Applied::Duplicate);
            }
        }
        prop_assert_eq!(s, clean);
    }
}

#[test]
fn state_stays_bounded_after_100_000_events_for_one_customer() {
    let mut s = CustomerState::new("c");
    let mut sizes = Vec::new();
    for i in 0..100_000u32 {
        let at = day(f64::from(i) * 0.05); // 5,000 days: far longer than the windows
        let cat = format!("category-{}", i % 50);
        let e = match i % 4 {
            0 | 1 => order(
                "c",
                &format!("e{i}"),
                at,
                1_000 + i64::from(i % 97),
                500,
                &[&cat, "tea"],
            ),
            2 => contact("c", &format!("e{i}"), at),
            _ => retention("c", &format!("e{i}"), at, &format!("campaign-{}", i % 7)),
        };
        assert_eq!(apply(&mut s, &e), Applied::Applied);
        if i % 10_000 == 9_999 {
            sizes.push(postcard::to_stdvec(&s).unwrap().len());
        }
    }
    assert!(s.months.len() <= WINDOW_MONTHS as usize);
    assert!(s.categories.len() <= MAX_CATEGORIES + 1);
    assert!(s.recent_orders.len() <= RECENT_ORDERS);
    assert!(s.seen.len() <= MAX_SEEN_EVENTS);
    assert!(
        s.months
            .iter()
            .all(|w| w.categories.len() <= MAX_CATEGORIES + 1)
    );
    assert_eq!(s.totals.orders, 50_000);
    // Size reaches a ceiling and stays there.
    let max = *sizes.iter().max().unwrap();
    assert!(
        max < 4 * 1024,
        "serialized state grew to {max} bytes: {sizes:?}"
    );
    // Once the windows are full, size only wobbles with the varint widths of the sums.
    let settled = &sizes[2..];
    let (lo, hi) = (settled.iter().min().unwrap(), settled.iter().max().unwrap());
    assert!(hi - lo < 64, "still growing: {sizes:?}");
}
