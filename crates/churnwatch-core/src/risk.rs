//! Risk levels and the hysteresis that keeps a score hovering at a boundary from flapping.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Thresholds;

/// How likely a customer is to be leaving, in four levels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Nothing worrying.
    #[default]
    Low,
    /// Early signs.
    Medium,
    /// Likely leaving; worth a retention action.
    High,
    /// Leaving or gone unless something changes.
    Critical,
}

impl RiskLevel {
    /// Every level, lowest first.
    pub const ALL: [RiskLevel; 4] = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];

    /// Returns the snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    /// Returns the level for its name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// Returns the score at which this level starts.
    pub fn lower_bound(self, t: &Thresholds) -> f64 {
        match self {
            RiskLevel::Low => 0.0,
            RiskLevel::Medium => t.medium_risk,
            RiskLevel::High => t.high_risk,
            RiskLevel::Critical => t.critical_risk,
        }
    }

    /// Returns the level a score maps to with no history.
    pub fn for_score(score: f64, t: &Thresholds) -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|l| score >= l.lower_bound(t))
            .unwrap_or(RiskLevel::Low)
    }

    /// Returns the level for `score` given the `previous` level: rising takes effect at the
    /// boundary, falling only once the score is `risk_hysteresis` below it.
    pub fn with_hysteresis(score: f64, previous: RiskLevel, t: &Thresholds) -> Self {
        let raw = Self::for_score(score, t);
        if raw >= previous {
            return raw;
        }
        Self::ALL
            .into_iter()
            .rev()
            .filter(|l| *l <= previous)
            .find(|l| *l == RiskLevel::Low || score >= l.lower_bound(t) - t.risk_hysteresis)
            .unwrap_or(RiskLevel::Low)
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_map_to_levels_at_the_boundaries() {
        let t = Thresholds::default();
        assert_eq!(RiskLevel::for_score(0.0, &t), RiskLevel::Low);
        assert_eq!(RiskLevel::for_score(0.3, &t), RiskLevel::Medium);
        assert_eq!(RiskLevel::for_score(0.5, &t), RiskLevel::High);
        assert_eq!(RiskLevel::for_score(0.75, &t), RiskLevel::Critical);
        assert_eq!(RiskLevel::for_score(1.0, &t), RiskLevel::Critical);
    }

    #[test]
    fn a_score_hovering_at_a_boundary_does_not_flap() {
        let t = Thresholds::default();
        let mut level = RiskLevel::Medium;
        let mut changes = 0;
        for score in [0.49, 0.51, 0.49, 0.52, 0.47, 0.50, 0.48, 0.46] {
            let next = RiskLevel::with_hysteresis(score, level, &t);
            changes += usize::from(next != level);
            level = next;
        }
        assert_eq!(changes, 1, "only the first rise changes the level");
        assert_eq!(level, RiskLevel::High);
        assert_eq!(
            RiskLevel::with_hysteresis(0.44, RiskLevel::High, &t),
            RiskLevel::Medium
        );
        assert_eq!(
            RiskLevel::with_hysteresis(0.1, RiskLevel::Critical, &t),
            RiskLevel::Low
        );
        assert_eq!(
            RiskLevel::with_hysteresis(0.72, RiskLevel::Critical, &t),
            RiskLevel::Critical
        );
    }
}
