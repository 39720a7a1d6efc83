//! Builders for hand-made customer histories shared by the core's integration tests.
#![allow(dead_code)]

use churnwatch_core::event::{
    ContactChannel, CustomerSignup, Event, EventKind, Item, Order, Refund, RetentionAction,
    SupportContact,
};
use churnwatch_core::money::CurrencyCode;
use churnwatch_core::time::{DAY, Timestamp};

/// 2024-01-01T00:00:00Z.
pub const T0: i64 = 1_704_067_200;

/// Returns the instant `day` days after 2024-01-01.
pub fn day(d: f64) -> Timestamp {
    Timestamp(T0 + (d * DAY as f64) as i64)
}

/// Returns an order event.
pub fn order(
    customer: &str,
    id: &str,
    at: Timestamp,
    total: i64,
    cost: i64,
    categories: &[&str],
) -> Event {
    Event {
        event_id: id.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at: at,
        kind: EventKind::Order(Order {
            order_id: format!("o-{id}"),
            total,
            discount: 0,
            cost: Some(cost),
            items: categories
                .iter()
                .map(|c| Item {
                    sku: format!("sku-{c}"),
                    category: Some((*c).to_owned()),
                    quantity: 1,
                    unit_price: total,
                })
                .collect(),
            channel: Some("web".to_owned()),
            original_currency: CurrencyCode::default(),
            original_total: total,
        }),
    }
}

/// Returns a refund event.
pub fn refund(customer: &str, id: &str, at: Timestamp, amount: i64) -> Event {
    Event {
        event_id: id.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at: at,
        kind: EventKind::Refund(Refund {
            order_id: "o".into(),
            amount,
            reason: None,
        }),
    }
}

/// Returns a support contact event.
pub fn contact(customer: &str, id: &str, at: Timestamp) -> Event {
    Event {
        event_id: id.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at: at,
        kind: EventKind::SupportContact(SupportContact {
            channel: ContactChannel::Phone,
            minutes: Some(5),
        }),
    }
}

/// Returns a signup event.
pub fn signup(customer: &str, id: &str, at: Timestamp, source: &str) -> Event {
    Event {
        event_id: id.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at: at,
        kind: EventKind::CustomerSignup(CustomerSignup {
            source: Some(source.to_owned()),
        }),
    }
}

/// Returns a retention action event.
pub fn retention(customer: &str, id: &str, at: Timestamp, campaign: &str) -> Event {
    Event {
        event_id: id.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at: at,
        kind: EventKind::RetentionAction(RetentionAction {
            action: "call".into(),
            campaign: Some(campaign.to_owned()),
        }),
    }
}

/// Returns orders every `every` days in `[from, to)`.
pub fn cadence(
    customer: &str,
    prefix: &str,
    every: f64,
    from: f64,
    to: f64,
    total: i64,
    cats: &[&str],
) -> Vec<Event> {
    let mut out = Vec::new();
    let mut d = from;
    let mut i = 0;
    while d < to {
        out.push(order(
            customer,
            &format!("{prefix}{i}"),
            day(d),
            total,
            total / 2,
            cats,
        ));
        d += every;
        i += 1;
    }
    out
}
