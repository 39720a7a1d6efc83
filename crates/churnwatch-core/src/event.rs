//! The input event contract (DESIGN §4): the wire format, the validated event, and the one
//! parse function from bytes to an event or a rejection with a stable reason code.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::{AmountError, CurrencyCode, FxTable, parse_minor_units};
use crate::time::{DAY, Timestamp};

/// Why an input event was rejected: a stable, machine-readable code.
///
/// The codes are part of the public contract (DLQ headers, metrics labels); never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The message is larger than the configured limit.
    TooLarge,
    /// The message is not valid UTF-8 JSON, or not a JSON object.
    MalformedJson,
    /// The `type` names no known event type.
    UnknownType,
    /// A required field is absent, null or empty.
    MissingField,
    /// A field has the wrong JSON type or an unacceptable value.
    InvalidField,
    /// `occurred_at` is not an RFC 3339 timestamp.
    BadTimestamp,
    /// `occurred_at` lies further in the future than the allowed clock skew.
    TooFarInFuture,
    /// An amount is below zero.
    NegativeAmount,
    /// An amount is not a decimal number, is too large, or is more precise than the currency.
    BadAmount,
    /// `currency` is not an ISO 4217 code.
    UnknownCurrency,
    /// `currency` is valid but no exchange rate into the reporting currency is configured.
    UnsupportedCurrency,
}

impl RejectCode {
    /// Every code, in a stable order (for metrics pre-registration and docs).
    pub const ALL: [RejectCode; 11] = [
        RejectCode::TooLarge,
        RejectCode::MalformedJson,
        RejectCode::UnknownType,
        RejectCode::MissingField,
        RejectCode::InvalidField,
        RejectCode::BadTimestamp,
        RejectCode::TooFarInFuture,
        RejectCode::NegativeAmount,
        RejectCode::BadAmount,
        RejectCode::UnknownCurrency,
        RejectCode::UnsupportedCurrency,
    ];

    /// Returns the snake_case code, e.g. `unknown_currency`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectCode::TooLarge => "too_large",
            RejectCode::MalformedJson => "malformed_json",
            RejectCode::UnknownType => "unknown_type",
            RejectCode::MissingField => "missing_field",
            RejectCode::InvalidField => "invalid_field",
            RejectCode::BadTimestamp => "bad_timestamp",
            RejectCode::TooFarInFuture => "too_far_in_future",
            RejectCode::NegativeAmount => "negative_amount",
            RejectCode::BadAmount => "bad_amount",
            RejectCode::UnknownCurrency => "unknown_currency",
            RejectCode::UnsupportedCurrency => "unsupported_currency",
        }
    }

    /// Returns the code for its snake_case name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected input event: the reason code, the offending field if any, and a sentence naming
/// what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// The stable reason code.
    pub code: RejectCode,
    /// The JSON path of the offending field, when one field is to blame.
    pub field: Option<String>,
    /// What is wrong, for the sender.
    pub message: String,
}

impl Rejection {
    fn new(code: RejectCode, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// Limits and conversions the parser applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParseConfig {
    /// Largest accepted message in bytes.
    pub max_bytes: usize,
    /// How far `occurred_at` may lie ahead of the parser's clock, in seconds (clock skew).
    pub max_future_skew_secs: i64,
    /// Exchange rates into the reporting currency.
    pub fx: FxTable,
}

impl Default for ParseConfig {
    /// Returns 64 KiB messages, 5 minutes of clock skew, US dollars only.
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_future_skew_secs: 300,
            fx: FxTable::default(),
        }
    }
}

/// Longest accepted identifier (event, customer, order, sku) in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest accepted free-text label (category, channel, source, campaign) in bytes.
pub const MAX_LABEL_BYTES: usize = 64;
/// Most line items accepted on one order.
pub const MAX_ITEMS: usize = 500;

/// A validated input event with money in minor units of the reporting currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id chosen by the sender; repeats are duplicates.
    pub event_id: String,
    /// The customer this event is about; the partitioning key downstream.
    pub customer_id: String,
    /// When it happened (event time).
    pub occurred_at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of input event, tagged by `type` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A purchase.
    Order(Order),
    /// Money returned for an order.
    Refund(Refund),
    /// The customer contacted support.
    SupportContact(SupportContact),
    /// The customer created an account.
    CustomerSignup(CustomerSignup),
    /// The business did something to keep the customer (a call, an offer, an email).
    RetentionAction(RetentionAction),
}

/// A purchase, with amounts in minor units of the reporting currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id in the shop.
    pub order_id: String,
    /// What the customer paid, after discounts.
    pub total: i64,
    /// Discounts granted on the order.
    pub discount: i64,
    /// Cost of goods sold, when the shop sends it.
    pub cost: Option<i64>,
    /// Line items.
    pub items: Vec<Item>,
    /// Where the order was placed (web, app, store, ...).
    pub channel: Option<String>,
    /// The currency the order was placed in.
    pub original_currency: CurrencyCode,
    /// `total` in minor units of `original_currency`.
    pub original_total: i64,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stock-keeping unit.
    pub sku: String,
    /// Product category, when known.
    pub category: Option<String>,
    /// Units bought (at least 1).
    pub quantity: u32,
    /// Price of one unit in minor units of the reporting currency.
    pub unit_price: i64,
}

/// Money returned for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// The refunded order.
    pub order_id: String,
    /// Amount refunded in minor units of the reporting currency.
    pub amount: i64,
    /// Why, as given by the shop.
    pub reason: Option<String>,
}

/// Channels a customer can reach support through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactChannel {
    /// A phone call.
    Phone,
    /// An email.
    Email,
    /// A chat session.
    Chat,
}

/// The customer contacted support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportContact {
    /// How the customer got in touch.
    pub channel: ContactChannel,
    /// Handling time in minutes, when known.
    pub minutes: Option<u32>,
}

/// The customer created an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerSignup {
    /// Acquisition source (search, social, referral, ...), when known.
    pub source: Option<String>,
}

/// The business acted to retain the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionAction {
    /// What was done (call, offer, email, ...).
    pub action: String,
    /// The campaign it belongs to, when any.
    pub campaign: Option<String>,
}

/// An amount on the wire: a decimal string or a JSON number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireAmount {
    Text(String),
    Number(serde_json::Number),
}

impl WireAmount {
    fn text(&self) -> String {
        match self {
            WireAmount::Text(s) => s.clone(),
            // The shortest round-trip rendering of the number is what the sender wrote.
            WireAmount::Number(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct WireItem {
    sku: Option<String>,
    category: Option<String>,
    quantity: Option<i64>,
    unit_price: Option<WireAmount>,
}

/// The union of every event type's fields; unknown fields are ignored so senders can add
/// their own without breaking ingestion.
#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    event_id: Option<String>,
    customer_id: Option<String>,
    occurred_at: Option<String>,
    order_id: Option<String>,
    currency: Option<String>,
    total: Option<WireAmount>,
    discount: Option<WireAmount>,
    cost: Option<WireAmount>,
    amount: Option<WireAmount>,
    items: Option<Vec<WireItem>>,
    channel: Option<String>,
    reason: Option<String>,
    minutes: Option<i64>,
    source: Option<String>,
    action: Option<String>,
    campaign: Option<String>,
}

/// The known event types, as written in `type`.
pub const EVENT_TYPES: [&str; 5] = [
    "order",
    "refund",
    "support_contact",
    "customer_signup",
    "retention_action",
];

/// Parses one message into a validated event, or says why it is rejected.
///
/// `now` is the parser's clock, used only to reject events too far in the future.
pub fn parse_event(bytes: &[u8], now: Timestamp, config: &ParseConfig) -> Result<Event, Rejection> {
    if bytes.len() > config.max_bytes {
        return Err(Rejection::new(
            RejectCode::TooLarge,
            None,
            format!(
                "message is {} bytes; the limit is {}",
                bytes.len(),
                config.max_bytes
            ),
        ));
    }
    let wire = decode(bytes)?;
    Validator { config, now }.event(wire)
}

fn decode(bytes: &[u8]) -> Result<WireEvent, Rejection> {
    // serde would happily read a struct from a JSON array; the contract says object.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            return Err(Rejection::new(
                RejectCode::MalformedJson,
                None,
                "an event must be a JSON object",
            ));
        }
        None => {
            return Err(Rejection::new(
                RejectCode::MalformedJson,
                None,
                "the message is empty",
            ));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let wire: WireEvent = match serde_path_to_error::deserialize(&mut de) {
        Ok(wire) => wire,
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => Rejection::new(
                    RejectCode::InvalidField,
                    Some(&path),
                    format!("field {path}: {}", strip_position(&inner)),
                ),
                _ => Rejection::new(
                    RejectCode::MalformedJson,
                    None,
                    format!("not valid JSON: {inner}"),
                ),
            });
        }
    };
    de.end().map_err(|e| {
        Rejection::new(
            RejectCode::MalformedJson,
            None,
            format!("trailing data after the JSON object: {e}"),
        )
    })?;
    Ok(wire)
}

fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

struct Validator<'a> {
    config: &'a ParseConfig,
    now: Timestamp,
}

impl Validator<'_> {
    fn event(&self, w: WireEvent) -> Result<Event, Rejection> {
        let kind_name = required(w.kind.as_deref(), "type")?;
        if !EVENT_TYPES.contains(&kind_name) {
            return Err(Rejection::new(
                RejectCode::UnknownType,
                Some("type"),
                format!(
                    "unknown event type {kind_name:?}; expected one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        let event_id = id(w.event_id.as_deref(), "event_id")?;
        let customer_id = id(w.customer_id.as_deref(), "customer_id")?;
        let occurred_at = self.timestamp(w.occurred_at.as_deref())?;
        let kind = match kind_name {
            "order" => EventKind::Order(self.order(&w)?),
            "refund" => {
                let currency = self.currency(w.currency.as_deref())?;
                let amount = self.money(w.amount.as_ref(), "amount", currency)?;
                EventKind::Refund(Refund {
                    order_id: id(w.order_id.as_deref(), "order_id")?,
                    amount,
                    reason: label(w.reason, "reason", 512)?,
                })
            }
            "support_contact" => {
                let channel = match required(w.channel.as_deref(), "channel")? {
                    "phone" => ContactChannel::Phone,
                    "email" => ContactChannel::Email,
                    "chat" => ContactChannel::Chat,
                    other => {
                        return Err(Rejection::new(
                            RejectCode::InvalidField,
                            Some("channel"),
                            format!("support channel {other:?} must be phone, email or chat"),
                        ));
                    }
                };
                let minutes = match w.minutes {
                    None => None,
                    Some(m) if (0..=24 * 60).contains(&m) => Some(m as u32),
                    Some(m) => {
                        return Err(Rejection::new(
                            RejectCode::InvalidField,
                            Some("minutes"),
                            format!("minutes {m} must be between 0 and 1440"),
                        ));
                    }
                };
                EventKind::SupportContact(SupportContact { channel, minutes })
            }
            "customer_signup" => EventKind::CustomerSignup(CustomerSignup {
                source: label(w.source, "source", MAX_LABEL_BYTES)?,
            }),
            _ => EventKind::RetentionAction(RetentionAction {
                action: required(w.action.as_deref(), "action").and_then(|a| {
                    label(Some(a.to_owned()), "action", MAX_LABEL_BYTES)
                        .map(Option::unwrap_or_default)
                })?,
                campaign: label(w.campaign, "campaign", MAX_LABEL_BYTES)?,
            }),
        };
        Ok(Event {
            event_id,
            customer_id,
            occurred_at,
            kind,
        })
    }

    fn order(&self, w: &WireEvent) -> Result<Order, Rejection> {
        let order_id = id(w.order_id.as_deref(), "order_id")?;
        let currency = self.currency(w.currency.as_deref())?;
        let original_total = amount_in(w.total.as_ref(), "total", currency)?;
        let total = self.convert(original_total, currency)?;
        let discount = match &w.discount {
            Some(a) => self.money(Some(a), "discount", currency)?,
            None => 0,
        };
        let cost = match &w.cost {
            Some(a) => Some(self.money(Some(a), "cost", currency)?),
            None => None,
        };
        let wire_items = w.items.as_deref().unwrap_or_default();
        if wire_items.len() > MAX_ITEMS {
            return Err(Rejection::new(
                RejectCode::TooLarge,
                Some("items"),
                format!(
                    "order has {} items; the limit is {MAX_ITEMS}",
                    wire_items.len()
                ),
            ));
        }
        let mut items = Vec::with_capacity(wire_items.len());
        for (i, item) in wire_items.iter().enumerate() {
            let at = |f: &str| format!("items[{i}].{f}");
            let sku = id(item.sku.as_deref(), &at("sku"))?;
            let quantity = match item.quantity {
                Some(q) if (1..=1_000_000).contains(&q) => q as u32,
                Some(q) => {
                    return Err(Rejection::new(
                        RejectCode::InvalidField,
                        Some(&at("quantity")),
                        format!("quantity {q} must be between 1 and 1000000"),
                    ));
                }
                None => return Err(missing(&at("quantity"))),
            };
            let unit_price = self.money(item.unit_price.as_ref(), &at("unit_price"), currency)?;
            let category = label(item.category.clone(), &at("category"), MAX_LABEL_BYTES)?;
            items.push(Item {
                sku,
                category,
                quantity,
                unit_price,
            });
        }
        Ok(Order {
            order_id,
            total,
            discount,
            cost,
            items,
            channel: label(w.channel.clone(), "channel", MAX_LABEL_BYTES)?,
            original_currency: currency,
            original_total,
        })
    }

    fn timestamp(&self, text: Option<&str>) -> Result<Timestamp, Rejection> {
        let text = required(text, "occurred_at")?;
        let at = Timestamp::parse_rfc3339(text).ok_or_else(|| {
            Rejection::new(
                RejectCode::BadTimestamp,
                Some("occurred_at"),
                format!(
                    "occurred_at {text:?} is not an RFC 3339 timestamp such as 2025-03-01T12:00:00Z"
                ),
            )
        })?;
        // Before 1990 is almost certainly a zero or a unit mix-up, not a real order.
        if at < Timestamp(631_152_000) {
            return Err(Rejection::new(
                RejectCode::BadTimestamp,
                Some("occurred_at"),
                format!("occurred_at {text:?} is before 1990"),
            ));
        }
        let limit = self.now.plus(self.config.max_future_skew_secs);
        if at > limit {
            let ahead = at.since(self.now);
            return Err(Rejection::new(
                RejectCode::TooFarInFuture,
                Some("occurred_at"),
                format!(
                    "occurred_at {text:?} is {} ahead of the receiver's clock (limit {} s); check the sender's clock",
                    human_duration(ahead),
                    self.config.max_future_skew_secs
                ),
            ));
        }
        Ok(at)
    }

    fn currency(&self, code: Option<&str>) -> Result<CurrencyCode, Rejection> {
        let code = required(code, "currency")?;
        let currency = CurrencyCode::parse(code).ok_or_else(|| {
            Rejection::new(
                RejectCode::UnknownCurrency,
                Some("currency"),
                format!("currency {code:?} is not an ISO 4217 code such as USD or EUR"),
            )
        })?;
        if !self.config.fx.supports(currency) {
            return Err(Rejection::new(
                RejectCode::UnsupportedCurrency,
                Some("currency"),
                format!(
                    "no exchange rate from {currency} to the reporting currency {} is configured; add one (e.g. {currency}=1.0)",
                    self.config.fx.reporting
                ),
            ));
        }
        Ok(currency)
    }

    fn money(
        &self,
        amount: Option<&WireAmount>,
        field: &str,
        currency: CurrencyCode,
    ) -> Result<i64, Rejection> {
        let minor = amount_in(amount, field, currency)?;
        self.convert(minor, currency)
    }

    fn convert(&self, minor: i64, currency: CurrencyCode) -> Result<i64, Rejection> {
        self.config.fx.to_reporting(minor, currency).ok_or_else(|| {
            Rejection::new(
                RejectCode::BadAmount,
                None,
                format!("amount {minor} {currency} cannot be converted"),
            )
        })
    }
}

fn amount_in(
    amount: Option<&WireAmount>,
    field: &str,
    currency: CurrencyCode,
) -> Result<i64, Rejection> {
    let amount = amount.ok_or_else(|| missing(field))?;
    parse_minor_units(&amount.text(), currency).map_err(|e| {
        let code = match e {
            AmountError::Negative(_) => RejectCode::NegativeAmount,
            _ => RejectCode::BadAmount,
        };
        Rejection::new(code, Some(field), format!("{field}: {e}"))
    })
}

fn missing(field: &str) -> Rejection {
    Rejection::new(
        RejectCode::MissingField,
        Some(field),
        format!("required field {field} is missing"),
    )
}

fn required<'a>(value: Option<&'a str>, field: &str) -> Result<&'a str, Rejection> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(Rejection::new(
            RejectCode::MissingField,
            Some(field),
            format!("required field {field} is empty"),
        )),
        None => Err(missing(field)),
    }
}

fn id(value: Option<&str>, field: &str) -> Result<String, Rejection> {
    let v = required(value, field)?;
    if v.len() > MAX_ID_BYTES {
        return Err(Rejection::new(
            RejectCode::InvalidField,
            Some(field),
            format!("{field} is {} bytes; the limit is {MAX_ID_BYTES}", v.len()),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(Rejection::new(
            RejectCode::InvalidField,
            Some(field),
            format!("{field} contains control characters"),
        ));
    }
    Ok(v.to_owned())
}

fn label(value: Option<String>, field: &str, max: usize) -> Result<Option<String>, Rejection> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) if v.len() > max => Err(Rejection::new(
            RejectCode::InvalidField,
            Some(field),
            format!("{field} is {} bytes; the limit is {max}", v.len()),
        )),
        Some(v) if v.chars().any(char::is_control) => Err(Rejection::new(
            RejectCode::InvalidField,
            Some(field),
            format!("{field} contains control characters"),
        )),
        Some(v) => Ok(Some(v)),
    }
}

fn human_duration(seconds: i64) -> String {
    if seconds >= 2 * DAY {
        format!("{} days", seconds / DAY)
    } else if seconds >= 7200 {
        format!("{} hours", seconds / 3600)
    } else {
        format!("{seconds} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_750_000_000); // 2025-06-15

    fn parse(json: &str) -> Result<Event, Rejection> {
        let fx = FxTable::parse_rates(CurrencyCode::default(), "EUR=1.10").unwrap();
        parse_event(
            json.as_bytes(),
            NOW,
            &ParseConfig {
                fx,
                ..ParseConfig::default()
            },
        )
    }

    fn code(json: &str) -> RejectCode {
        parse(json).expect_err("should be rejected").code
    }

    const ORDER: &str = r#"{"type":"order","event_id":"e1","order_id":"o1","customer_id":"c1",
        "occurred_at":"2025-06-01T10:00:00Z","currency":"USD","total":"42.50","discount":5,
        "cost":"20","channel":"web","items":[{"sku":"s1","category":"coffee","quantity":2,"unit_price":"23.75"}]}"#;

    #[test]
    fn a_full_order_is_parsed_into_minor_units() {
        let e = parse(ORDER).unwrap();
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.customer_id, "c1");
        assert_eq!(e.occurred_at.to_string(), "2025-06-01T10:00:00Z");
        let EventKind::Order(o) = e.kind else {
            panic!("not an order")
        };
        assert_eq!((o.total, o.discount, o.cost), (4250, 500, Some(2000)));
        assert_eq!(o.items[0].unit_price, 2375);
        assert_eq!(o.items[0].category.as_deref(), Some("coffee"));
        assert_eq!(o.channel.as_deref(), Some("web"));
    }

    #[test]
    fn every_event_type_parses() {
        let base = r#""event_id":"e","customer_id":"c","occurred_at":"2025-06-01T10:00:00Z""#;
        for body in [
            r#""type":"refund","order_id":"o","currency":"USD","amount":"3.10","reason":"broken""#,
            r#""type":"support_contact","channel":"chat","minutes":12"#,
            r#""type":"customer_signup","source":"referral""#,
            r#""type":"retention_action","action":"call","campaign":"winback""#,
        ] {
            let json = format!("{{{base},{body}}}");
            assert!(parse(&json).is_ok(), "{json}: {:?}", parse(&json));
        }
    }

    #[test]
    fn foreign_currency_is_converted_to_the_reporting_currency() {
        let json = ORDER.replace("\"USD\"", "\"EUR\"");
        let EventKind::Order(o) = parse(&json).unwrap().kind else {
            panic!()
        };
        assert_eq!(o.total, 4675); // 42.50 EUR at 1.10
        assert_eq!(o.original_total, 4250);
        assert_eq!(o.original_currency.code(), "EUR");
    }

    #[test]
    fn rejections_carry_stable_reason_codes() {
        assert_eq!(code("{not json"), RejectCode::MalformedJson);
        assert_eq!(code("[1,2]"), RejectCode::MalformedJson);
        assert_eq!(code("  "), RejectCode::MalformedJson);
        assert_eq!(code("\"order\""), RejectCode::MalformedJson);
        assert_eq!(
            code(&format!("{ORDER} trailing")),
            RejectCode::MalformedJson
        );
        assert_eq!(
            code(&ORDER.replace("\"order\"", "\"purchase\"")),
            RejectCode::UnknownType
        );
        assert_eq!(
            code(&ORDER.replace("\"customer_id\":\"c1\",", "")),
            RejectCode::MissingField
        );
        assert_eq!(
            code(&ORDER.replace("\"c1\"", "\"  \"")),
            RejectCode::MissingField
        );
        assert_eq!(
            code(&ORDER.replace("\"c1\"", "17")),
            RejectCode::InvalidField
        );
        assert_eq!(
            code(&ORDER.replace("2025-06-01T10:00:00Z", "01/06/2025")),
            RejectCode::BadTimestamp
        );
        assert_eq!(
            code(&ORDER.replace("2025-06-01T10:00:00Z", "2025-07-01T10:00:00Z")),
            RejectCode::TooFarInFuture
        );
        assert_eq!(
            code(&ORDER.replace("\"42.50\"", "\"-42.50\"")),
            RejectCode::NegativeAmount
        );
        assert_eq!(
            code(&ORDER.replace("\"42.50\"", "\"42.505\"")),
            RejectCode::BadAmount
        );
        assert_eq!(
            code(&ORDER.replace("\"42.50\"", "\"lots\"")),
            RejectCode::BadAmount
        );
        assert_eq!(
            code(&ORDER.replace("\"USD\"", "\"XYZ\"")),
            RejectCode::UnknownCurrency
        );
        assert_eq!(
            code(&ORDER.replace("\"USD\"", "\"GBP\"")),
            RejectCode::UnsupportedCurrency
        );
        assert_eq!(
            code(&ORDER.replace("\"quantity\":2", "\"quantity\":0")),
            RejectCode::InvalidField
        );
    }

    #[test]
    fn rejections_name_the_field_to_fix() {
        let r = parse(&ORDER.replace("\"c1\"", "17")).unwrap_err();
        assert_eq!(r.field.as_deref(), Some("customer_id"));
        assert!(r.message.contains("customer_id"), "{}", r.message);
        let r = parse(&ORDER.replace("\"quantity\":2", "\"quantity\":0")).unwrap_err();
        assert_eq!(r.field.as_deref(), Some("items[0].quantity"));
        let r = parse(&ORDER.replace("\"USD\"", "\"GBP\"")).unwrap_err();
        assert!(r.message.contains("GBP=1.0"), "{}", r.message);
    }

    #[test]
    fn invalid_utf8_is_malformed_json() {
        let mut bytes = ORDER.as_bytes().to_vec();
        let at = ORDER.find("c1").unwrap();
        bytes[at] = 0xff;
        let r = parse_event(&bytes, NOW, &ParseConfig::default()).unwrap_err();
        assert_eq!(r.code, RejectCode::MalformedJson);
    }

    #[test]
    fn oversized_messages_are_rejected_before_parsing() {
        let big = format!("{{\"type\":\"order\",\"pad\":\"{}\"}}", "x".repeat(70_000));
        assert_eq!(code(&big), RejectCode::TooLarge);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let json = ORDER.replace(
            "\"channel\":\"web\"",
            "\"channel\":\"web\",\"x_shop\":{\"a\":1}",
        );
        assert!(parse(&json).is_ok());
    }

    #[test]
    fn reject_code_names_round_trip() {
        for c in RejectCode::ALL {
            assert_eq!(RejectCode::from_name(c.as_str()), Some(c));
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
    }

    #[test]
    fn validated_events_round_trip_through_json() {
        let e = parse(ORDER).unwrap();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }
}
