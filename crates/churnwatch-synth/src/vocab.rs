//! The fixed vocabularies and constants of the simulation: archetypes and their shares,
//! categories and their catalog, currencies, channels, sources, campaigns and noise kinds.

use std::fmt;

macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Lists every value in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Returns the name used in events and in the truth CSV.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Returns the value with the given name, if there is one.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            #[allow(dead_code, reason = "generated for every vocabulary, not used by all")]
            pub(crate) const fn index(self) -> usize {
                self as usize
            }

            #[allow(dead_code, reason = "generated for every vocabulary, not used by all")]
            pub(crate) fn from_index(index: usize) -> Self {
                Self::ALL[index]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// The behaviour a simulated customer follows; see [`ARCHETYPE_SHARES`].
    pub enum Archetype {
        /// Signs up, orders once and never again.
        OneTime => "one_time",
        /// Orders on a steady cadence (every 2–6 weeks) with a stable basket until the end.
        Regular => "regular",
        /// Regular at first, then order value falls and the cadence slows until the customer
        /// churns; for half of them the last weeks go wrong (refunds, support contacts).
        Decliner => "decliner",
        /// Buys one category in every order, stops buying it at some point and keeps buying the
        /// others; not a churner.
        CategoryDropper => "category_dropper",
        /// Regular, then stops abruptly at a churn time; for half of them the last weeks before
        /// it go wrong (refunds, support contacts), the other half leave without a sign.
        SilentChurner => "silent_churner",
        /// Regular, goes silent for 3–7 months, then comes back and stays regular.
        Reactivator => "reactivator",
        /// Orders with heavy discounts, sells below cost, refunds often and contacts support a lot,
        /// so the customer's margin is negative.
        Unprofitable => "unprofitable",
        /// Buys and drops out by the BG/NBD process (only with `Process::BgNbd`, never drawn
        /// among the archetypes).
        BgNbd => "bgnbd",
        /// Signs up and never buys.
        Prospect => "prospect",
    }
}

impl Archetype {
    /// Returns the fixed share of customers drawn with this archetype.
    pub fn share(self) -> f64 {
        ARCHETYPE_SHARES[self.index()].1
    }

    /// Returns whether customers of this archetype stop ordering at a churn time
    /// (`churned_at` in the truth).
    pub fn is_churner(self) -> bool {
        matches!(
            self,
            Archetype::Decliner | Archetype::SilentChurner | Archetype::Reactivator
        )
    }
}

/// The share of customers drawn with each archetype; the shares sum to 1.
///
/// Regulars are the largest group, as in a healthy shop; one in four customers churns one way or
/// another (decliner, silent churner, reactivator), and a small group is unprofitable. Every
/// archetype that buys on a cadence has its own seasonal swing (up to ±50% of its rate, peaking
/// late in each year of the period), so a lull is not always a departure.
pub const ARCHETYPE_SHARES: [(Archetype, f64); 9] = [
    (Archetype::OneTime, 0.20),
    (Archetype::Regular, 0.30),
    (Archetype::Decliner, 0.10),
    (Archetype::CategoryDropper, 0.08),
    (Archetype::SilentChurner, 0.12),
    (Archetype::Reactivator, 0.07),
    (Archetype::Unprofitable, 0.05),
    (Archetype::BgNbd, 0.0),
    (Archetype::Prospect, 0.08),
];

vocabulary! {
    /// A product category of the simulated shop.
    pub enum Category {
        /// Coffee beans and capsules.
        Coffee => "coffee",
        /// Loose tea and tea bags.
        Tea => "tea",
        /// Snacks and sweets.
        Snacks => "snacks",
        /// Kitchen tools.
        Kitchen => "kitchen",
        /// Clothing.
        Apparel => "apparel",
        /// Cosmetics and care.
        Beauty => "beauty",
        /// Books.
        Books => "books",
        /// Toys.
        Toys => "toys",
        /// Gadgets and accessories.
        Electronics => "electronics",
        /// Garden supplies.
        Garden => "garden",
    }
}

/// Number of SKUs in each category; SKU ids are `<category>-<000..>`.
pub const SKUS_PER_CATEGORY: u16 = 50;

impl Category {
    /// Returns the (cheapest, dearest) unit price of the category in US cents.
    pub const fn usd_price_range(self) -> (u32, u32) {
        match self {
            Category::Coffee => (799, 3_499),
            Category::Tea => (499, 2_499),
            Category::Snacks => (199, 1_299),
            Category::Kitchen => (999, 7_999),
            Category::Apparel => (1_499, 8_999),
            Category::Beauty => (799, 5_999),
            Category::Books => (799, 3_999),
            Category::Toys => (999, 5_999),
            Category::Electronics => (1_999, 29_999),
            Category::Garden => (999, 11_999),
        }
    }

    /// Returns the unit price of SKU `sku` of this category in US cents; prices rise with the
    /// SKU number and end in .49 or .99.
    pub fn usd_price(self, sku: u16) -> u32 {
        let (lo, hi) = self.usd_price_range();
        let x = f64::from(sku.min(SKUS_PER_CATEGORY - 1)) / f64::from(SKUS_PER_CATEGORY - 1);
        let raw = f64::from(lo) + f64::from(hi - lo) * x.powf(1.5);
        (raw as u32 / 50) * 50 + 49
    }
}

vocabulary! {
    /// The currency a customer pays in.
    pub enum Currency {
        /// US dollar, 2 decimals.
        Usd => "USD",
        /// Euro, 2 decimals.
        Eur => "EUR",
        /// Pound sterling, 2 decimals.
        Gbp => "GBP",
        /// Japanese yen, no decimals.
        Jpy => "JPY",
    }
}

/// The exchange rates into US dollars of the non-USD currencies the generator uses, written as
/// `CODE=rate,...` (the form churnwatch's FX configuration takes); a consumer whose reporting
/// currency is USD needs these to accept every generated order.
pub const FX_RATES_TO_USD: &str = "EUR=1.087,GBP=1.266,JPY=0.00667";

/// The share of customers paying in each currency.
pub const CURRENCY_SHARES: [(Currency, f64); 4] = [
    (Currency::Usd, 0.85),
    (Currency::Eur, 0.07),
    (Currency::Gbp, 0.05),
    (Currency::Jpy, 0.03),
];

impl Currency {
    /// Returns the number of decimals of the currency's amounts (its minor-unit exponent).
    pub const fn decimals(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            _ => 2,
        }
    }

    /// Converts a US-cent price into this currency's minor units at a fixed rate, keeping
    /// shop-like endings (…9 for cents, whole tens for yen).
    pub fn from_usd_cents(self, cents: u32) -> u32 {
        let c = u64::from(cents);
        let minor = match self {
            Currency::Usd => c,
            Currency::Eur => (c * 92 / 100) / 10 * 10 + 9,
            Currency::Gbp => (c * 79 / 100) / 10 * 10 + 9,
            Currency::Jpy => (c * 15 + 50) / 100 * 10,
        };
        u32::try_from(minor).unwrap_or(u32::MAX)
    }

    /// Returns the value of one unit of this currency in US dollars, the inverse of the fixed
    /// rate [`Currency::from_usd_cents`] converts prices with.
    pub const fn usd_rate(self) -> f64 {
        match self {
            Currency::Usd => 1.0,
            Currency::Eur => 1.087,
            Currency::Gbp => 1.266,
            Currency::Jpy => 0.00667,
        }
    }

    /// Returns roughly what five US dollars (the default cost of one support contact) is in this
    /// currency's minor units.
    pub const fn five_usd_minor(self) -> i64 {
        match self {
            Currency::Usd | Currency::Eur => 500,
            Currency::Gbp => 400,
            Currency::Jpy => 750,
        }
    }
}

vocabulary! {
    /// Where an order was placed.
    pub enum OrderChannel {
        /// The web shop.
        Web => "web",
        /// The mobile app.
        App => "app",
        /// A physical store.
        Store => "store",
    }
}

vocabulary! {
    /// How a customer contacted support.
    pub enum SupportChannel {
        /// A phone call.
        Phone => "phone",
        /// An email.
        Email => "email",
        /// A chat session.
        Chat => "chat",
    }
}

vocabulary! {
    /// How a customer was acquired.
    pub enum SignupSource {
        /// Organic or paid search.
        Search => "search",
        /// Social media.
        Social => "social",
        /// Referred by another customer.
        Referral => "referral",
        /// An email campaign.
        Email => "email",
        /// An affiliate site.
        Affiliate => "affiliate",
    }
}

vocabulary! {
    /// Why an order was refunded.
    pub enum RefundReason {
        /// The goods arrived damaged.
        Damaged => "damaged",
        /// The goods were not as described.
        NotAsDescribed => "not_as_described",
        /// The delivery was late.
        LateDelivery => "late_delivery",
        /// The customer changed their mind.
        ChangedMind => "changed_mind",
        /// The wrong item was sent.
        WrongItem => "wrong_item",
    }
}

vocabulary! {
    /// The `type` of an input event (DESIGN.md §4).
    pub enum EventType {
        /// A purchase.
        Order => "order",
        /// Money returned for an order.
        Refund => "refund",
        /// A contact with customer support.
        SupportContact => "support_contact",
        /// A new customer account.
        CustomerSignup => "customer_signup",
        /// A retention action aimed at the customer.
        RetentionAction => "retention_action",
    }
}

vocabulary! {
    /// How an injected malformed line is broken.
    pub enum MalformedKind {
        /// The line is not valid JSON (truncated, or a trailing comma).
        InvalidJson => "invalid_json",
        /// A required field of the event's type is missing.
        MissingField => "missing_field",
        /// `occurred_at` is not an RFC 3339 timestamp (or not a real date).
        BadTimestamp => "bad_timestamp",
        /// The order `total` or refund `amount` is negative.
        NegativeAmount => "negative_amount",
        /// The currency is `XYZ`, which is no ISO 4217 code.
        UnknownCurrency => "unknown_currency",
        /// The `type` is not one of the known event types.
        UnknownType => "unknown_type",
    }
}

impl MalformedKind {
    /// Returns the rejection reason code (DESIGN.md §4) that order-ingest is expected to use.
    pub const fn reason_code(self) -> &'static str {
        match self {
            MalformedKind::InvalidJson => "malformed_json",
            MalformedKind::MissingField => "missing_field",
            MalformedKind::BadTimestamp => "bad_timestamp",
            MalformedKind::NegativeAmount => "negative_amount",
            MalformedKind::UnknownCurrency => "unknown_currency",
            MalformedKind::UnknownType => "unknown_type",
        }
    }
}

/// A retention campaign and its true effect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Campaign {
    /// The campaign name, sent as `campaign` in `retention_action` events.
    pub name: &'static str,
    /// The action, sent as `action` in `retention_action` events.
    pub action: &'static str,
    /// The probability that a targeted churned customer, who would otherwise never come back,
    /// resumes ordering because of the campaign.
    pub resume_probability: f64,
}

/// A phone call to lapsed customers that truly works: 35% of targeted churners resume ordering.
pub const WINBACK_CALL: Campaign = Campaign {
    name: "winback_call",
    action: "call",
    resume_probability: 0.35,
};

/// A newsletter that has no effect at all.
pub const NEWSLETTER_BLAST: Campaign = Campaign {
    name: "newsletter_blast",
    action: "email",
    resume_probability: 0.0,
};

/// The campaigns, in the order the generator picks from (each with equal probability).
pub const CAMPAIGNS: [Campaign; 2] = [WINBACK_CALL, NEWSLETTER_BLAST];

/// The probability that a repeat customer, the first time it has been silent for
/// [`AT_RISK_DELAY_DAYS`], is targeted by one of the [`CAMPAIGNS`]. The rule sees the silence,
/// not the churn, as a CRM would: it reaches churners (whom a campaign that works brings back)
/// and customers in a long gap who would have ordered anyway (on whom it changes nothing); the
/// others are the untreated comparison group.
pub const AT_RISK_TARGET_PROBABILITY: f64 = 0.5;

/// A repeat customer is reached no sooner than this many of its usual gaps into a silence.
pub const TARGET_SILENCE_GAPS: f64 = 3.0;

/// The range of days of silence (drawn per customer) at which a campaign reaches it.
pub const AT_RISK_DELAY_DAYS: (f64, f64) = (30.0, 75.0);

/// The range of days after a successful campaign before the customer's next order.
pub const CAMPAIGN_RESUME_DELAY_DAYS: (f64, f64) = (3.0, 21.0);

/// The probability that a buying customer has no `customer_signup` event (an account migrated
/// from an older system); their truth `signup_at` is empty.
pub const MISSING_SIGNUP_PROBABILITY: f64 = 0.01;

/// The longest delay, in seconds, between an event and its redelivered duplicate.
pub const DUPLICATE_MAX_DELAY_SECS: u32 = 2 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fx_rates_cover_every_non_usd_currency_and_match_the_price_conversion() {
        for currency in Currency::ALL.iter().filter(|c| **c != Currency::Usd) {
            let entry = format!("{}={}", currency.as_str(), currency.usd_rate());
            assert!(
                FX_RATES_TO_USD.split(',').any(|e| e == entry),
                "{entry} missing"
            );
            let price =
                f64::from(currency.from_usd_cents(10_000)) / 10f64.powi(currency.decimals() as i32);
            let back = price * currency.usd_rate();
            assert!(
                (back - 100.0).abs() < 2.0,
                "{currency}: $100 comes back as ${back}"
            );
        }
    }

    #[test]
    fn shares_sum_to_one() {
        assert!((ARCHETYPE_SHARES.iter().map(|(_, s)| s).sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((CURRENCY_SHARES.iter().map(|(_, s)| s).sum::<f64>() - 1.0).abs() < 1e-9);
        for (i, (archetype, _)) in ARCHETYPE_SHARES.iter().enumerate() {
            assert_eq!(Archetype::ALL[i], *archetype);
        }
    }

    #[test]
    fn sku_prices_rise_and_end_in_49_or_99() {
        for category in Category::ALL {
            let mut previous = 0;
            for sku in 0..SKUS_PER_CATEGORY {
                let price = category.usd_price(sku);
                assert!(
                    price >= previous && matches!(price % 100, 49 | 99),
                    "{category} {sku}: {price}"
                );
                previous = price;
            }
        }
    }
}
