//! Thresholds of the churn signals, the stage machine, risk levels and profitability, in one
//! struct with documented defaults.

use serde::{Deserialize, Serialize};

/// Every tunable threshold of the evaluation. Money is in minor units of the reporting currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Cost of one support contact (default 500 = $5.00).
    pub cost_per_contact: i64,
    /// Orders in the last 12 months that make a customer core (default 4).
    pub core_min_orders_12m: u32,
    /// Shortest silence after which a customer is lost, in days (default 180).
    pub lost_min_silence_days: f64,
    /// A customer with a cadence is lost after this many typical intervals of silence, if that
    /// is longer than `lost_min_silence_days` (default 6).
    pub lost_interval_multiple: f64,
    /// Orders needed before a typical interval is trusted (default 3).
    pub min_orders_for_cadence: u32,
    /// Silence of this many typical intervals starts the `overdue` signal (default 2).
    pub overdue_start_multiple: f64,
    /// Silence of this many typical intervals gives `overdue` full strength (default 4).
    pub overdue_full_multiple: f64,
    /// Recent monthly purchase rate at or below this share of the early rate is a decline
    /// (default 0.5).
    pub purchase_decline_max_ratio: f64,
    /// Orders in the first 3 months needed to judge a purchase decline (default 2).
    pub purchase_decline_min_early_orders: u32,
    /// A fall of at least this share in average order value is an `aov_decline` (default 0.25).
    pub aov_decline_min_drop: f64,
    /// Months (of the 6 before the last 3) a category must be bought in to count as a habit
    /// (default 4).
    pub category_habit_min_months: u32,
    /// P(alive) below this raises `low_p_alive` (default 0.3).
    pub low_p_alive: f64,
    /// Risk score at which the level becomes medium (default 0.3).
    pub medium_risk: f64,
    /// Risk score at which the level becomes high (default 0.5).
    pub high_risk: f64,
    /// Risk score at which the level becomes critical (default 0.75).
    pub critical_risk: f64,
    /// How far below a boundary the score must fall before the level drops (default 0.05), so
    /// a score hovering at a boundary does not flap.
    pub risk_hysteresis: f64,
    /// Days a core customer's risk must stay high or critical before it becomes a core
    /// defector, and a core defector's below high before it is core again (default 14): one
    /// long gap between regular orders is not a defection, nor one order a recovery. 0 moves
    /// at the first assessment, as the risk level does.
    pub stage_confirm_days: f64,
    /// Share of profitable customers in tier A (default 0.2).
    pub tier_a_share: f64,
    /// Share of profitable customers in tier B (default 0.3); the rest with margin ≥ 0 are C.
    pub tier_b_share: f64,
    /// Support contacts per order in the last 12 months that make a high service load
    /// (default 1.0).
    pub divest_contacts_per_order: f64,
    /// Fewest support contacts in the last 12 months for a high service load (default 3).
    pub divest_min_contacts: u32,
    /// Horizon of the expected-purchases prediction, in days (default 90).
    pub expected_purchases_days: f64,
    /// Annual discount rate applied to the 12-month CLV (default 0.0).
    pub annual_discount_rate: f64,
    /// Horizon of the churn-risk probability, in whole days: the risk score is the probability
    /// that the customer places no order within this many days (default 90).
    pub risk_horizon_days: f64,
    /// Count orders on the same UTC day as one purchase occasion in the BTYD models (default
    /// true), as lifetimes' `summary_data_from_transaction_data` does with its default daily
    /// frequency; false counts every order.
    pub count_same_day_orders_once: bool,
    /// How far ahead a customer's lifetime value looks, in years (default 3): a lost customer
    /// costs the margin it was predicted to bring over this horizon had it stayed.
    pub lifetime_horizon_years: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            cost_per_contact: 500,
            core_min_orders_12m: 4,
            lost_min_silence_days: 180.0,
            lost_interval_multiple: 6.0,
            min_orders_for_cadence: 3,
            overdue_start_multiple: 2.0,
            overdue_full_multiple: 4.0,
            purchase_decline_max_ratio: 0.5,
            purchase_decline_min_early_orders: 2,
            aov_decline_min_drop: 0.25,
            category_habit_min_months: 4,
            low_p_alive: 0.3,
            medium_risk: 0.3,
            high_risk: 0.5,
            critical_risk: 0.75,
            risk_hysteresis: 0.05,
            stage_confirm_days: 14.0,
            tier_a_share: 0.2,
            tier_b_share: 0.3,
            divest_contacts_per_order: 1.0,
            divest_min_contacts: 3,
            expected_purchases_days: 90.0,
            annual_discount_rate: 0.0,
            risk_horizon_days: 90.0,
            count_same_day_orders_once: true,
            lifetime_horizon_years: 3.0,
        }
    }
}

impl Thresholds {
    /// Returns every inconsistency at once, each naming the field to fix.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                errors.push(msg.to_owned());
            }
        };
        check(
            self.cost_per_contact >= 0,
            "cost_per_contact must not be negative",
        );
        check(
            self.core_min_orders_12m >= 2,
            "core_min_orders_12m must be at least 2",
        );
        check(
            self.lost_min_silence_days > 0.0,
            "lost_min_silence_days must be positive",
        );
        check(
            self.lost_interval_multiple > 0.0,
            "lost_interval_multiple must be positive",
        );
        check(
            self.min_orders_for_cadence >= 2,
            "min_orders_for_cadence must be at least 2",
        );
        check(
            0.0 < self.overdue_start_multiple
                && self.overdue_start_multiple < self.overdue_full_multiple,
            "overdue_start_multiple must be positive and below overdue_full_multiple",
        );
        check(
            (0.0..1.0).contains(&self.purchase_decline_max_ratio),
            "purchase_decline_max_ratio must be in [0, 1)",
        );
        check(
            (0.0..1.0).contains(&self.aov_decline_min_drop),
            "aov_decline_min_drop must be in [0, 1)",
        );
        check(
            (1..=6).contains(&self.category_habit_min_months),
            "category_habit_min_months must be between 1 and 6",
        );
        check(
            (0.0..=1.0).contains(&self.low_p_alive),
            "low_p_alive must be in [0, 1]",
        );
        check(
            0.0 < self.medium_risk
                && self.medium_risk < self.high_risk
                && self.high_risk < self.critical_risk
                && self.critical_risk <= 1.0,
            "risk boundaries must satisfy 0 < medium_risk < high_risk < critical_risk <= 1",
        );
        check(
            (0.0..self.medium_risk).contains(&self.risk_hysteresis),
            "risk_hysteresis must be in [0, medium_risk)",
        );
        check(
            (0.0..=365.0).contains(&self.stage_confirm_days),
            "stage_confirm_days must be from 0 to 365",
        );
        check(
            self.tier_a_share > 0.0
                && self.tier_b_share > 0.0
                && self.tier_a_share + self.tier_b_share < 1.0,
            "tier_a_share and tier_b_share must be positive and sum below 1",
        );
        check(
            self.divest_contacts_per_order >= 0.0,
            "divest_contacts_per_order must not be negative",
        );
        check(
            self.expected_purchases_days > 0.0,
            "expected_purchases_days must be positive",
        );
        check(
            self.risk_horizon_days >= 1.0
                && self.risk_horizon_days <= 3660.0
                && self.risk_horizon_days.fract() == 0.0,
            "risk_horizon_days must be a whole number of days from 1 to 3660",
        );
        check(
            (0.0..1.0).contains(&self.annual_discount_rate),
            "annual_discount_rate must be in [0, 1)",
        );
        check(
            self.lifetime_horizon_years > 0.0 && self.lifetime_horizon_years <= 100.0,
            "lifetime_horizon_years must be more than 0 and at most 100",
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Thresholds::default().validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let t = Thresholds {
            medium_risk: 0.9,
            tier_a_share: 0.9,
            cost_per_contact: -1,
            lifetime_horizon_years: 0.0,
            ..Thresholds::default()
        };
        let errors = t.validate().unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("cost_per_contact")));
        assert!(errors.iter().any(|e| e.contains("lifetime_horizon_years")));
        assert!(errors.iter().any(|e| e.contains("medium_risk")));
        assert!(errors.iter().any(|e| e.contains("tier_a_share")));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<Thresholds>(r#"{"hig_risk":0.5}"#).unwrap_err();
        assert!(err.to_string().contains("hig_risk"));
    }
}
