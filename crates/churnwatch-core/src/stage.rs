//! The lifecycle stage machine: prospect → first-time buyer → early repeat buyer → core
//! customer → core defector, lost, and reactivation out of lost. Every transition carries a
//! reason. The machine is a pure function of the previous stage and a handful of facts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::risk::RiskLevel;

/// Where a customer stands in its lifecycle.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Known (signed up, contacted support) but never ordered.
    #[default]
    Prospect,
    /// Exactly one order.
    FirstTime,
    /// Two or more orders, not (yet) core.
    EarlyRepeat,
    /// Orders regularly: at least `core_min_orders_12m` orders in the last 12 months.
    Core,
    /// Was core, now showing high churn risk, sustained for `stage_confirm_days`.
    CoreDefector,
    /// Silent for longer than the lost threshold.
    Lost,
}

impl Stage {
    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 6] = [
        Stage::Prospect,
        Stage::FirstTime,
        Stage::EarlyRepeat,
        Stage::Core,
        Stage::CoreDefector,
        Stage::Lost,
    ];

    /// Returns the snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Prospect => "prospect",
            Stage::FirstTime => "first_time",
            Stage::EarlyRepeat => "early_repeat",
            Stage::Core => "core",
            Stage::CoreDefector => "core_defector",
            Stage::Lost => "lost",
        }
    }

    /// Returns the stage for its name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a customer moved between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// The first order arrived.
    FirstOrder,
    /// A second order arrived.
    RepeatOrder,
    /// Enough orders in the last 12 months to count as core.
    BecameCore,
    /// A core customer's risk stayed high for `stage_confirm_days`.
    Defecting,
    /// A core defector's risk stayed below high for `stage_confirm_days`.
    Recovered,
    /// Silent for longer than the lost threshold.
    WentSilent,
    /// A lost customer ordered again.
    Reactivated,
    /// A late order, placed before a move that silence had made (to lost, or to core
    /// defector), showed that move wrong: it is undone, and this is not a reactivation.
    Corrected,
}

impl TransitionReason {
    /// Returns the snake_case code.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransitionReason::FirstOrder => "first_order",
            TransitionReason::RepeatOrder => "repeat_order",
            TransitionReason::BecameCore => "became_core",
            TransitionReason::Defecting => "defecting",
            TransitionReason::Recovered => "recovered",
            TransitionReason::WentSilent => "went_silent",
            TransitionReason::Reactivated => "reactivated",
            TransitionReason::Corrected => "corrected",
        }
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts the stage machine decides on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageFacts {
    /// Lifetime orders.
    pub orders: u32,
    /// Orders in the last 12 months.
    pub orders_12m: u32,
    /// Whether the silence since the last order has reached the lost threshold.
    pub silent_past_lost: bool,
    /// Whether an order was placed after the customer became lost.
    pub ordered_since_lost: bool,
    /// The current risk level.
    pub risk: RiskLevel,
    /// Whether the risk has stood on its side of the high boundary for `stage_confirm_days`
    /// (below high counts from the start when it never was high): what makes a core customer
    /// at high risk a core defector, and a core defector below high core again.
    pub risk_held: bool,
    /// Orders in the last 12 months that make a customer core.
    pub core_min_orders_12m: u32,
}

/// A move from one stage to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The stage left.
    pub from: Stage,
    /// The stage entered.
    pub to: Stage,
    /// Why.
    pub reason: TransitionReason,
}

/// Returns the transition the facts call for from `current`, or `None` to stay.
pub fn next_stage(current: Stage, f: &StageFacts) -> Option<Transition> {
    let go = |to: Stage, reason| {
        (to != current).then_some(Transition {
            from: current,
            to,
            reason,
        })
    };
    if f.orders == 0 {
        return None;
    }
    // What the order counts alone say, ignoring risk and history.
    let by_orders = if f.orders_12m >= f.core_min_orders_12m {
        Stage::Core
    } else if f.orders >= 2 {
        Stage::EarlyRepeat
    } else {
        Stage::FirstTime
    };
    match current {
        Stage::Lost if f.ordered_since_lost && !f.silent_past_lost => {
            go(by_orders, TransitionReason::Reactivated)
        }
        Stage::Lost => None,
        _ if f.silent_past_lost => go(Stage::Lost, TransitionReason::WentSilent),
        Stage::Core if f.risk >= RiskLevel::High && f.risk_held => {
            go(Stage::CoreDefector, TransitionReason::Defecting)
        }
        Stage::Core => None,
        Stage::CoreDefector if f.risk < RiskLevel::High && f.risk_held => {
            go(Stage::Core, TransitionReason::Recovered)
        }
        Stage::CoreDefector => None,
        Stage::Prospect | Stage::FirstTime | Stage::EarlyRepeat if by_orders > current => {
            let reason = match by_orders {
                Stage::Core => TransitionReason::BecameCore,
                Stage::EarlyRepeat => TransitionReason::RepeatOrder,
                _ => TransitionReason::FirstOrder,
            };
            go(by_orders, reason)
        }
        Stage::Prospect | Stage::FirstTime | Stage::EarlyRepeat => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RiskLevel::*;
    use Stage::*;
    use TransitionReason::*;

    fn facts(
        orders: u32,
        orders_12m: u32,
        silent: bool,
        ordered_since_lost: bool,
        risk: RiskLevel,
    ) -> StageFacts {
        StageFacts {
            orders,
            orders_12m,
            silent_past_lost: silent,
            ordered_since_lost,
            risk,
            risk_held: true,
            core_min_orders_12m: 4,
        }
    }

    fn unconfirmed(f: StageFacts) -> StageFacts {
        StageFacts {
            risk_held: false,
            ..f
        }
    }

    /// Every edge of the machine, and the important non-edges.
    #[test]
    fn transition_table() {
        #[rustfmt::skip]
        type Row = (Stage, StageFacts, Option<(Stage, TransitionReason)>);
        let table: &[Row] = &[
            // prospect
            (Prospect, facts(0, 0, false, false, Low), None),
            (
                Prospect,
                facts(1, 1, false, false, Low),
                Some((FirstTime, FirstOrder)),
            ),
            (
                Prospect,
                facts(2, 2, false, false, Low),
                Some((EarlyRepeat, RepeatOrder)),
            ),
            (
                Prospect,
                facts(5, 5, false, false, Low),
                Some((Core, BecameCore)),
            ),
            (
                Prospect,
                facts(1, 0, true, false, Low),
                Some((Lost, WentSilent)),
            ),
            // first-time buyer
            (FirstTime, facts(1, 1, false, false, High), None),
            (
                FirstTime,
                facts(2, 2, false, false, Low),
                Some((EarlyRepeat, RepeatOrder)),
            ),
            (
                FirstTime,
                facts(4, 4, false, false, Low),
                Some((Core, BecameCore)),
            ),
            (
                FirstTime,
                facts(1, 0, true, false, Low),
                Some((Lost, WentSilent)),
            ),
            // early repeat buyer
            (EarlyRepeat, facts(3, 3, false, false, Low), None),
            (
                EarlyRepeat,
                facts(4, 4, false, false, Low),
                Some((Core, BecameCore)),
            ),
            (
                EarlyRepeat,
                facts(3, 0, true, false, Low),
                Some((Lost, WentSilent)),
            ),
            // core customer
            (Core, facts(9, 6, false, false, Medium), None),
            (Core, facts(9, 2, false, false, Low), None),
            (
                Core,
                facts(9, 4, false, false, High),
                Some((CoreDefector, Defecting)),
            ),
            (
                Core,
                facts(9, 4, false, false, Critical),
                Some((CoreDefector, Defecting)),
            ),
            (
                Core,
                facts(9, 0, true, false, Critical),
                Some((Lost, WentSilent)),
            ),
            // ... but not before the high risk has lasted, nor the recovery
            (Core, unconfirmed(facts(9, 4, false, false, Critical)), None),
            (
                CoreDefector,
                unconfirmed(facts(9, 3, false, false, Low)),
                None,
            ),
            (
                Core,
                unconfirmed(facts(9, 0, true, false, Critical)),
                Some((Lost, WentSilent)),
            ),
            // core defector
            (CoreDefector, facts(9, 3, false, false, High), None),
            (
                CoreDefector,
                facts(9, 3, false, false, Medium),
                Some((Core, Recovered)),
            ),
            (
                CoreDefector,
                facts(9, 0, true, false, Critical),
                Some((Lost, WentSilent)),
            ),
            // lost, and reactivation out of it
            (Lost, facts(9, 0, true, false, Critical), None),
            (Lost, facts(9, 0, false, false, Low), None),
            (
                Lost,
                facts(2, 1, false, true, Low),
                Some((EarlyRepeat, Reactivated)),
            ),
            (
                Lost,
                facts(9, 4, false, true, Low),
                Some((Core, Reactivated)),
            ),
            (Lost, facts(9, 1, true, true, Low), None),
        ];
        for (from, f, expected) in table {
            let got = next_stage(*from, f).map(|t| (t.to, t.reason));
            assert_eq!(got, *expected, "from {from} with {f:?}");
            if let Some(t) = next_stage(*from, f) {
                assert_eq!(t.from, *from);
            }
        }
        // Every stage appears as a source and as a target in the table.
        for s in Stage::ALL {
            assert!(
                table.iter().any(|(from, _, _)| *from == s),
                "{s} never left"
            );
            assert!(
                s == Prospect || table.iter().any(|(_, _, e)| e.map(|(to, _)| to) == Some(s)),
                "{s} never entered"
            );
        }
    }

    #[test]
    fn stage_names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::from_name(s.as_str()), Some(s));
        }
    }
}
