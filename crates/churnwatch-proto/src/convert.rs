//! Domain types to and from their protobuf messages; the one place where the two meet.

use churnwatch_core::output::{Profile, RetentionSummary};
use churnwatch_core::profit::ValueTier;
use churnwatch_core::{RiskLevel, Stage, Timestamp};

use crate::v1;

/// Returns the protobuf timestamp of a domain time (whole seconds).
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0,
        nanos: 0,
    }
}

/// Returns the protobuf stage of a domain stage.
pub fn stage_to_proto(s: Stage) -> v1::Stage {
    match s {
        Stage::Prospect => v1::Stage::Prospect,
        Stage::FirstTime => v1::Stage::FirstTime,
        Stage::EarlyRepeat => v1::Stage::EarlyRepeat,
        Stage::Core => v1::Stage::Core,
        Stage::CoreDefector => v1::Stage::CoreDefector,
        Stage::Lost => v1::Stage::Lost,
    }
}

/// Returns the domain stage of a protobuf stage; `None` for unspecified.
pub fn stage_from_proto(s: v1::Stage) -> Option<Stage> {
    Some(match s {
        v1::Stage::Unspecified => return None,
        v1::Stage::Prospect => Stage::Prospect,
        v1::Stage::FirstTime => Stage::FirstTime,
        v1::Stage::EarlyRepeat => Stage::EarlyRepeat,
        v1::Stage::Core => Stage::Core,
        v1::Stage::CoreDefector => Stage::CoreDefector,
        v1::Stage::Lost => Stage::Lost,
    })
}

/// Returns the protobuf risk level of a domain risk level.
pub fn risk_level_to_proto(l: RiskLevel) -> v1::RiskLevel {
    match l {
        RiskLevel::Low => v1::RiskLevel::Low,
        RiskLevel::Medium => v1::RiskLevel::Medium,
        RiskLevel::High => v1::RiskLevel::High,
        RiskLevel::Critical => v1::RiskLevel::Critical,
    }
}

/// Returns the domain risk level of a protobuf one; `None` for unspecified.
pub fn risk_level_from_proto(l: v1::RiskLevel) -> Option<RiskLevel> {
    Some(match l {
        v1::RiskLevel::Unspecified => return None,
        v1::RiskLevel::Low => RiskLevel::Low,
        v1::RiskLevel::Medium => RiskLevel::Medium,
        v1::RiskLevel::High => RiskLevel::High,
        v1::RiskLevel::Critical => RiskLevel::Critical,
    })
}

/// Returns the protobuf value tier of a domain tier.
pub fn tier_to_proto(t: ValueTier) -> v1::ValueTier {
    match t {
        ValueTier::A => v1::ValueTier::A,
        ValueTier::B => v1::ValueTier::B,
        ValueTier::C => v1::ValueTier::C,
        ValueTier::D => v1::ValueTier::D,
    }
}

/// Returns the domain value tier of a protobuf one; `None` for unspecified.
pub fn tier_from_proto(t: v1::ValueTier) -> Option<ValueTier> {
    Some(match t {
        v1::ValueTier::Unspecified => return None,
        v1::ValueTier::A => ValueTier::A,
        v1::ValueTier::B => ValueTier::B,
        v1::ValueTier::C => ValueTier::C,
        v1::ValueTier::D => ValueTier::D,
    })
}

fn retention(r: &RetentionSummary) -> v1::RetentionAction {
    v1::RetentionAction {
        at: Some(timestamp(r.at)),
        action: r.action.clone(),
        campaign: r.campaign.clone().unwrap_or_default(),
        level_at_action: risk_level_to_proto(r.level_at_action) as i32,
    }
}

/// Returns the protobuf message of a customer profile.
pub fn profile_to_proto(p: &Profile) -> v1::CustomerProfile {
    v1::CustomerProfile {
        customer_id: p.customer_id.clone(),
        assessed_at: Some(timestamp(p.assessed_at)),
        version: p.version,
        stage: stage_to_proto(p.stage) as i32,
        stage_since: p.stage_since.map(timestamp),
        risk_level: risk_level_to_proto(p.risk_level) as i32,
        risk_score: p.risk_score,
        reasons: p
            .reasons
            .iter()
            .map(|r| v1::Reason {
                code: r.code.clone(),
                detail: r.detail.clone(),
                contribution: r.contribution,
            })
            .collect(),
        p_alive: p.p_alive,
        expected_purchases: p.expected_purchases,
        clv_12m_minor: p.clv_12m,
        value_at_risk_minor: p.value_at_risk,
        margin_12m_minor: p.margin_12m,
        revenue_12m_minor: p.revenue_12m,
        orders_12m: p.orders_12m,
        contacts_12m: p.contacts_12m,
        value_tier: tier_to_proto(p.value_tier) as i32,
        divest: p.divest,
        orders: p.orders,
        revenue_minor: p.revenue,
        first_seen: p.first_seen.map(timestamp),
        first_order_at: p.first_order_at.map(timestamp),
        last_order_at: p.last_order_at.map(timestamp),
        typical_interval_days: p.typical_interval_days,
        acquisition_source: p.acquisition_source.clone().unwrap_or_default(),
        first_channel: p.first_channel.clone().unwrap_or_default(),
        first_categories: p.first_categories.clone(),
        last_retention: p.last_retention.as_ref().map(retention),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_level_and_tier_round_trips_and_unspecified_means_none() {
        for s in Stage::ALL {
            assert_eq!(stage_from_proto(stage_to_proto(s)), Some(s));
        }
        for l in [
            RiskLevel::Low,
            RiskLevel::Medium,
            RiskLevel::High,
            RiskLevel::Critical,
        ] {
            assert_eq!(risk_level_from_proto(risk_level_to_proto(l)), Some(l));
        }
        for t in [ValueTier::A, ValueTier::B, ValueTier::C, ValueTier::D] {
            assert_eq!(tier_from_proto(tier_to_proto(t)), Some(t));
        }
        assert_eq!(stage_from_proto(v1::Stage::Unspecified), None);
        assert_eq!(risk_level_from_proto(v1::RiskLevel::Unspecified), None);
        assert_eq!(tier_from_proto(v1::ValueTier::Unspecified), None);
    }

    #[test]
    fn the_descriptor_set_describes_the_query_service() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let file = set
            .file
            .iter()
            .find(|f| f.package() == "churnwatch.v1")
            .unwrap();
        assert!(file.service.iter().any(|s| s.name() == "CustomerQuery"));
    }
}
