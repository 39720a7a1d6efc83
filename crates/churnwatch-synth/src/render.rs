//! Rendering of records as DESIGN.md §4 JSON lines, including the deliberately broken ones.
//!
//! Every string the generator emits is plain ASCII without quotes or backslashes, so values are
//! written without escaping.

use crate::format::{push_amount, push_customer_id, push_rfc3339, push_uint};
use crate::record::{Body, Line, Record};
use crate::vocab::{CAMPAIGNS, Currency, EventType, MalformedKind};

/// What a record needs from its data set to be rendered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) start_unix: i64,
    pub(crate) id_width: usize,
    pub(crate) currencies: &'a [Currency],
}

pub(crate) fn event_type(body: &Body) -> EventType {
    match body {
        Body::Order(_) => EventType::Order,
        Body::Refund { .. } => EventType::Refund,
        Body::Support { .. } => EventType::SupportContact,
        Body::Signup { .. } => EventType::CustomerSignup,
        Body::Retention { .. } => EventType::RetentionAction,
    }
}

/// The required fields of each type other than `type` (DESIGN.md §4), candidates for removal.
fn required_fields(event_type: EventType) -> &'static [&'static str] {
    match event_type {
        EventType::Order => &[
            "event_id",
            "order_id",
            "customer_id",
            "occurred_at",
            "currency",
            "total",
        ],
        EventType::Refund => &[
            "event_id",
            "order_id",
            "customer_id",
            "occurred_at",
            "currency",
            "amount",
        ],
        EventType::SupportContact => &["event_id", "customer_id", "occurred_at", "channel"],
        EventType::CustomerSignup => &["event_id", "customer_id", "occurred_at"],
        EventType::RetentionAction => &["event_id", "customer_id", "occurred_at", "action"],
    }
}

/// Returns the malformed kinds that can be applied to an event of this type (amount and currency
/// corruptions need an amount).
pub(crate) fn applicable_kinds(event_type: EventType) -> &'static [MalformedKind] {
    use MalformedKind::*;
    match event_type {
        EventType::Order | EventType::Refund => &[
            InvalidJson,
            MissingField,
            BadTimestamp,
            NegativeAmount,
            UnknownCurrency,
            UnknownType,
        ],
        _ => &[InvalidJson, MissingField, BadTimestamp, UnknownType],
    }
}

const BAD_TIMESTAMPS: [&str; 3] = ["2024-13-45T25:61:00Z", "2024-02-30T10:00:00Z", "yesterday"];
const UNKNOWN_TYPES: [&str; 2] = ["wishlist_add", "page_view"];

/// How the record's line is broken, if it is a malformed line.
#[derive(Debug, Clone, Copy, Default)]
struct Breakage {
    skip: Option<&'static str>,
    bad_timestamp: Option<&'static str>,
    negative: bool,
    bad_currency: bool,
    bad_type: Option<&'static str>,
    invalid_json: Option<u8>,
}

fn breakage(record: &Record, event_type: EventType) -> Breakage {
    let Some((kind, variant)) = record.malformed_kind() else {
        return Breakage::default();
    };
    let v = usize::from(variant);
    let mut b = Breakage::default();
    match kind {
        MalformedKind::InvalidJson => b.invalid_json = Some(variant % 2),
        MalformedKind::MissingField => {
            let fields = required_fields(event_type);
            b.skip = Some(fields[v % fields.len()]);
        }
        MalformedKind::BadTimestamp => {
            b.bad_timestamp = Some(BAD_TIMESTAMPS[v % BAD_TIMESTAMPS.len()])
        }
        MalformedKind::NegativeAmount => b.negative = true,
        MalformedKind::UnknownCurrency => b.bad_currency = true,
        MalformedKind::UnknownType => b.bad_type = Some(UNKNOWN_TYPES[v % UNKNOWN_TYPES.len()]),
    }
    b
}

/// Writes `"key":` pieces of one JSON object, leaving out the field a malformed line drops.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    skip: Option<&'static str>,
}

impl Object<'_> {
    /// Writes the separator and key; returns false if the field is to be left out.
    fn key(&mut self, key: &'static str) -> bool {
        if self.skip == Some(key) {
            return false;
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        true
    }

    fn str(&mut self, key: &'static str, value: &str) {
        if self.key(key) {
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        }
    }

    /// Writes a string value produced by `f`.
    fn quoted(&mut self, key: &'static str, f: impl FnOnce(&mut Vec<u8>)) {
        if self.key(key) {
            self.out.push(b'"');
            f(self.out);
            self.out.push(b'"');
        }
    }

    fn uint(&mut self, key: &'static str, value: u64) {
        if self.key(key) {
            push_uint(self.out, value, 1);
        }
    }
}

/// Appends the JSON object of `record` (no trailing newline) to `out`.
pub(crate) fn render(ctx: &Context<'_>, record: &Record, out: &mut Vec<u8>) {
    let begin = out.len();
    let event_type = event_type(&record.body);
    let broken = breakage(record, event_type);
    let currency = ctx.currencies[record.customer as usize];
    let decimals = currency.decimals();
    let customer = record.customer;
    let width = ctx.id_width;
    out.push(b'{');
    let mut o = Object {
        out,
        first: true,
        skip: broken.skip,
    };
    o.str("type", broken.bad_type.unwrap_or(event_type.as_str()));
    o.quoted("event_id", |out| {
        out.extend_from_slice(if record.line == Line::Malformed {
            b"m-"
        } else {
            b"e-"
        });
        push_customer_id(out, customer, width);
        out.push(b'-');
        push_uint(out, u64::from(record.seq), 1);
    });
    let order_id = |o: &mut Object<'_>, order_no: u16| {
        o.quoted("order_id", |out| {
            out.extend_from_slice(b"o-");
            push_customer_id(out, customer, width);
            out.push(b'-');
            push_uint(out, u64::from(order_no), 1);
        });
    };
    match &record.body {
        Body::Order(order) => order_id(&mut o, order.order_no),
        Body::Refund { order_no, .. } => order_id(&mut o, *order_no),
        _ => {}
    }
    o.quoted("customer_id", |out| push_customer_id(out, customer, width));
    match broken.bad_timestamp {
        Some(bad) => o.str("occurred_at", bad),
        None => o.quoted("occurred_at", |out| {
            push_rfc3339(out, ctx.start_unix + i64::from(record.occurred()));
        }),
    }
    let sign = if broken.negative { -1 } else { 1 };
    let currency_code = if broken.bad_currency {
        "XYZ"
    } else {
        currency.as_str()
    };
    match &record.body {
        Body::Order(order) => {
            o.str("currency", currency_code);
            let total = order.total() as i64;
            o.quoted("total", |out| push_amount(out, sign * total, decimals));
            if order.discount > 0 {
                o.quoted("discount", |out| {
                    push_amount(out, i64::from(order.discount), decimals)
                });
            }
            o.quoted("cost", |out| {
                push_amount(out, i64::from(order.cost), decimals)
            });
            o.str("channel", order.channel.as_str());
            if o.key("items") {
                o.out.push(b'[');
                for (i, item) in order.items().iter().enumerate() {
                    if i > 0 {
                        o.out.push(b',');
                    }
                    let mut it = Object {
                        out: &mut *o.out,
                        first: true,
                        skip: None,
                    };
                    it.out.push(b'{');
                    it.quoted("sku", |out| {
                        out.extend_from_slice(item.category.as_str().as_bytes());
                        out.push(b'-');
                        push_uint(out, u64::from(item.sku), 3);
                    });
                    it.str("category", item.category.as_str());
                    it.uint("quantity", u64::from(item.quantity));
                    it.quoted("unit_price", |out| {
                        push_amount(out, i64::from(item.unit_price), decimals)
                    });
                    it.out.push(b'}');
                }
                o.out.push(b']');
            }
        }
        Body::Refund { amount, reason, .. } => {
            o.str("currency", currency_code);
            o.quoted("amount", |out| {
                push_amount(out, sign * i64::from(*amount), decimals)
            });
            o.str("reason", reason.as_str());
        }
        Body::Support { channel, minutes } => {
            o.str("channel", channel.as_str());
            o.uint("minutes", u64::from(*minutes));
        }
        Body::Signup { source } => o.str("source", source.as_str()),
        Body::Retention { campaign } => {
            let campaign = &CAMPAIGNS[usize::from(*campaign)];
            o.str("action", campaign.action);
            o.str("campaign", campaign.name);
        }
    }
    out.push(b'}');
    match broken.invalid_json {
        // Cut the object short: an unterminated object is never valid JSON.
        Some(0) => {
            let len = out.len() - begin;
            out.truncate(begin + len * 3 / 5);
        }
        // A trailing comma before the closing brace.
        Some(_) => {
            out.pop();
            out.extend_from_slice(b",}");
        }
        None => {}
    }
}
