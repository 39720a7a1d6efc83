//! Per-customer profitability: margin, value tiers from population quantiles, and divest
//! candidates.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Thresholds;

/// Returns revenue − cost of goods − discounts − refunds − contacts × cost per contact.
pub fn margin(
    revenue: i64,
    cost_of_goods: i64,
    discounts: i64,
    refunds: i64,
    contacts: u32,
    cost_per_contact: i64,
) -> i64 {
    revenue
        .saturating_sub(cost_of_goods)
        .saturating_sub(discounts)
        .saturating_sub(refunds)
        .saturating_sub(i64::from(contacts).saturating_mul(cost_per_contact))
}

/// What a customer's lifetime margin is made of, minor units of the reporting currency: the
/// revenue, and each cost taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MarginBreakdown {
    /// Revenue before discounts.
    pub revenue: i64,
    /// Discounts granted.
    pub discounts: i64,
    /// Money refunded.
    pub refunds: i64,
    /// Cost of goods sold, where the shop sent it.
    pub cost_of_goods: i64,
    /// Support contacts at `cost_per_contact` each.
    pub service: i64,
    /// What is left: revenue − discounts − refunds − cost of goods − service.
    pub margin: i64,
}

impl MarginBreakdown {
    /// Returns the lifetime breakdown of a customer's totals.
    pub fn of(totals: &crate::state::Totals, t: &Thresholds) -> Self {
        Self {
            revenue: totals.revenue,
            discounts: totals.discounts,
            refunds: totals.refunds,
            cost_of_goods: totals.cost_of_goods,
            service: i64::from(totals.support_contacts).saturating_mul(t.cost_per_contact),
            margin: margin(
                totals.revenue,
                totals.cost_of_goods,
                totals.discounts,
                totals.refunds,
                totals.support_contacts,
                t.cost_per_contact,
            ),
        }
    }
}

/// A customer's value tier by 12-month margin.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub enum ValueTier {
    /// The most profitable customers.
    A,
    /// Profitable.
    B,
    /// Marginal: margin at or above zero.
    #[default]
    C,
    /// Negative margin.
    D,
}

impl ValueTier {
    /// Every tier, best first.
    pub const ALL: [ValueTier; 4] = [ValueTier::A, ValueTier::B, ValueTier::C, ValueTier::D];

    /// Returns the tier's letter.
    pub const fn as_str(self) -> &'static str {
        match self {
            ValueTier::A => "A",
            ValueTier::B => "B",
            ValueTier::C => "C",
            ValueTier::D => "D",
        }
    }
}

impl fmt::Display for ValueTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The 12-month margins at which tiers A and B start, taken from population quantiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierCuts {
    /// Lowest 12-month margin in tier A.
    pub a_min: i64,
    /// Lowest 12-month margin in tier B.
    pub b_min: i64,
}

impl Default for TierCuts {
    /// Returns cuts used before any population is seen: $500 for A, $100 for B.
    fn default() -> Self {
        Self {
            a_min: 50_000,
            b_min: 10_000,
        }
    }
}

impl TierCuts {
    /// Returns cuts putting the top `tier_a_share` of customers with a positive margin in A and
    /// the next `tier_b_share` in B; `None` when no customer has a positive margin.
    pub fn from_margins(margins: &mut [i64], t: &Thresholds) -> Option<Self> {
        margins.sort_unstable();
        let first_positive = margins.partition_point(|m| *m <= 0);
        let positive = &margins[first_positive..];
        if positive.is_empty() {
            return None;
        }
        let n = positive.len();
        let at_share = |share: f64| -> i64 {
            let from_top = ((share * n as f64).ceil() as usize).clamp(1, n);
            positive[n - from_top]
        };
        let a_min = at_share(t.tier_a_share);
        let b_min = at_share(t.tier_a_share + t.tier_b_share).min(a_min);
        Some(Self { a_min, b_min })
    }

    /// Returns the tier of a 12-month margin.
    pub fn tier(&self, margin_12m: i64) -> ValueTier {
        if margin_12m < 0 {
            ValueTier::D
        } else if margin_12m >= self.a_min && margin_12m > 0 {
            ValueTier::A
        } else if margin_12m >= self.b_min && margin_12m > 0 {
            ValueTier::B
        } else {
            ValueTier::C
        }
    }
}

/// Returns whether a customer is a divest candidate: negative margin with a high service load.
pub fn is_divest_candidate(
    margin_12m: i64,
    contacts_12m: u32,
    orders_12m: u32,
    t: &Thresholds,
) -> bool {
    let load = f64::from(contacts_12m) / f64::from(orders_12m.max(1));
    margin_12m < 0 && contacts_12m >= t.divest_min_contacts && load >= t.divest_contacts_per_order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_subtracts_every_cost() {
        assert_eq!(margin(10_000, 4_000, 1_000, 500, 3, 500), 3_000);
        assert_eq!(margin(1_000, 800, 0, 0, 4, 500), -1_800);
        let totals = crate::state::Totals {
            revenue: 10_000,
            discounts: 1_000,
            cost_of_goods: 4_000,
            refunds: 500,
            support_contacts: 3,
            ..Default::default()
        };
        let b = MarginBreakdown::of(&totals, &Thresholds::default());
        assert_eq!(
            (
                b.revenue,
                b.discounts,
                b.refunds,
                b.cost_of_goods,
                b.service
            ),
            (10_000, 1_000, 500, 4_000, 1_500)
        );
        assert_eq!(b.margin, 3_000);
        assert_eq!(
            b.margin,
            b.revenue - b.discounts - b.refunds - b.cost_of_goods - b.service
        );
    }

    #[test]
    fn tiers_follow_population_quantiles() {
        let t = Thresholds::default();
        let mut margins: Vec<i64> = (1..=100).map(|i| i * 100).collect();
        margins.extend([-500, -1, 0, 0]);
        let cuts = TierCuts::from_margins(&mut margins, &t).unwrap();
        assert_eq!(cuts.a_min, 8_100); // top 20 of 100 positive
        assert_eq!(cuts.b_min, 5_100); // next 30
        let count = |tier| margins.iter().filter(|m| cuts.tier(**m) == tier).count();
        assert_eq!(count(ValueTier::A), 20);
        assert_eq!(count(ValueTier::B), 30);
        assert_eq!(count(ValueTier::C), 52);
        assert_eq!(count(ValueTier::D), 2);
    }

    #[test]
    fn no_profitable_customer_gives_no_cuts() {
        assert!(TierCuts::from_margins(&mut [-1, 0, -5], &Thresholds::default()).is_none());
        assert!(TierCuts::from_margins(&mut [], &Thresholds::default()).is_none());
    }

    #[test]
    fn divest_needs_negative_margin_and_high_service_load() {
        let t = Thresholds::default();
        assert!(is_divest_candidate(-100, 6, 4, &t));
        assert!(
            !is_divest_candidate(100, 6, 4, &t),
            "profitable customers are kept"
        );
        assert!(
            !is_divest_candidate(-100, 1, 4, &t),
            "few contacts is no load"
        );
        assert!(
            !is_divest_candidate(-100, 3, 10, &t),
            "fewer contacts than orders"
        );
    }
}
