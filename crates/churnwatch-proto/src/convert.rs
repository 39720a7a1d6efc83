//! Domain types to and from their protobuf messages; the one place where the two meet.

use churnwatch_core::output::{Profile, RetentionSummary, RiskSpell, Standing};
use churnwatch_core::profit::ValueTier;
use churnwatch_core::report::{
    CampaignReport, Outcome, ProfitabilityReport, RetentionReport, StageReport,
};
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
        ordered_again_at: r.ordered_again_at.map(timestamp),
        left_risk_at: r.left_risk_at.map(timestamp),
        standing: r.standing.as_ref().map(standing),
    }
}

fn standing(s: &Standing) -> v1::Standing {
    v1::Standing {
        at: Some(timestamp(s.at)),
        risk: s.risk,
        silence: u32::from(s.silence),
        stage: stage_to_proto(s.stage) as i32,
        tier: tier_to_proto(s.tier) as i32,
    }
}

fn risk_episode(e: &RiskSpell) -> v1::RiskEpisode {
    v1::RiskEpisode {
        since: Some(timestamp(e.since)),
        ordered_again_at: e.ordered_again_at.map(timestamp),
        left_risk_at: e.left_risk_at.map(timestamp),
        standings: e.standings.iter().map(standing).collect(),
    }
}

/// Returns the protobuf message of a risk reason.
pub fn reason_to_proto(r: &churnwatch_core::output::Reason) -> v1::Reason {
    v1::Reason {
        code: r.code.clone(),
        detail: r.detail.clone(),
        contribution: r.contribution,
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
        reasons: p.reasons.iter().map(reason_to_proto).collect(),
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
        retention_actions: p.retention_actions.iter().map(retention).collect(),
        risk_episode: p.risk_episodes.last().map(risk_episode),
        risk_episodes: p.risk_episodes.iter().map(risk_episode).collect(),
        margin_breakdown: Some(v1::MarginBreakdown {
            revenue_minor: p.margin_breakdown.revenue,
            discounts_minor: p.margin_breakdown.discounts,
            refunds_minor: p.margin_breakdown.refunds,
            cost_of_goods_minor: p.margin_breakdown.cost_of_goods,
            service_minor: p.margin_breakdown.service,
            margin_minor: p.margin_breakdown.margin,
        }),
        stage_history: p
            .stage_history
            .iter()
            .map(|c| v1::StageChange {
                at: Some(timestamp(c.at)),
                from: stage_to_proto(c.from) as i32,
                to: stage_to_proto(c.to) as i32,
                value_at_risk_minor: c.value_at_risk,
                retained_12m_minor: c.retained_12m,
                lifetime_value_minor: c.lifetime_value,
            })
            .collect(),
    }
}

/// Returns the protobuf answer of a stage report.
pub fn stage_report_to_proto(r: &StageReport) -> v1::GetStageSummaryResponse {
    v1::GetStageSummaryResponse {
        total_customers: r.stages.iter().map(|(_, n)| n).sum(),
        stages: r
            .stages
            .iter()
            .map(|(s, n)| v1::StageCount {
                stage: stage_to_proto(*s) as i32,
                customers: *n,
            })
            .collect(),
        transitions: r
            .transitions
            .iter()
            .map(|(from, to, n)| v1::StageTransition {
                from: stage_to_proto(*from) as i32,
                to: stage_to_proto(*to) as i32,
                count: *n,
            })
            .collect(),
        window_start: Some(timestamp(r.window.start)),
        window_end: Some(timestamp(r.window.end)),
    }
}

/// Returns the protobuf answer of a retention report.
pub fn retention_report_to_proto(r: &RetentionReport) -> v1::GetRetentionReportResponse {
    v1::GetRetentionReportResponse {
        window_start: Some(timestamp(r.window.start)),
        window_end: Some(timestamp(r.window.end)),
        customers_lost: r.customers_lost,
        lost_value_minor: r.lost_value,
        customers_acquired: r.customers_acquired,
        customers_reactivated: r.customers_reactivated,
        active_at_start: r.active_at_start,
        retained: r.retained,
        retention_rate: r.retention_rate,
        lost_lifetime_value_minor: r.lost_lifetime_value,
        months: r
            .months
            .iter()
            .map(|m| v1::MonthFlow {
                month: m.month.clone(),
                acquired: m.acquired,
                lost: m.lost,
                reactivated: m.reactivated,
                net: m.net,
                lost_value_minor: m.lost_value,
                lost_lifetime_value_minor: m.lost_lifetime_value,
                acquired_value_minor: m.acquired_value,
            })
            .collect(),
        segments: r
            .segments
            .iter()
            .map(|g| v1::SegmentRetention {
                dimension: g.dimension.to_owned(),
                value: g.value.clone(),
                active_at_start: g.active_at_start,
                lost: g.lost,
                churn_rate: g.churn_rate,
            })
            .collect(),
    }
}

/// Returns the protobuf answer of a profitability report, listing at most `trait_limit` traits.
pub fn profitability_report_to_proto(
    r: &ProfitabilityReport,
    trait_limit: usize,
) -> v1::GetProfitabilityReportResponse {
    v1::GetProfitabilityReportResponse {
        tiers: r
            .tiers
            .iter()
            .map(|t| v1::TierSummary {
                tier: tier_to_proto(t.tier) as i32,
                customers: t.customers,
                margin_12m_minor: t.margin_12m,
                revenue_12m_minor: t.revenue_12m,
            })
            .collect(),
        divest_count: r.divest_count,
        divest_margin_12m_minor: r.divest_margin_12m,
        divest_candidates: r
            .divest_candidates
            .iter()
            .map(|d| v1::DivestCandidate {
                customer_id: d.customer_id.clone(),
                margin_12m_minor: d.margin_12m,
                contacts_12m: d.contacts_12m,
            })
            .collect(),
        top_tier_traits: r
            .top_tier_traits
            .iter()
            .take(trait_limit)
            .map(|t| v1::TraitShare {
                dimension: t.dimension.to_owned(),
                value: t.value.clone(),
                share_in_top_tier: t.share_in_top_tier,
                share_overall: t.share_overall,
            })
            .collect(),
    }
}

fn outcome(o: &Outcome) -> v1::CampaignOutcome {
    v1::CampaignOutcome {
        judged: o.judged,
        ordered_again: o.ordered_again,
        left_risk: o.left_risk,
        order_rate: o.order_rate(),
    }
}

/// Returns the protobuf answer of a campaign report.
pub fn campaign_report_to_proto(r: &CampaignReport) -> v1::GetCampaignReportResponse {
    v1::GetCampaignReportResponse {
        follow_up_days: (r.follow_up_secs / 86_400) as u32,
        as_of: Some(timestamp(r.as_of)),
        campaigns: r
            .campaigns
            .iter()
            .map(|c| v1::CampaignResult {
                campaign: c.campaign.clone(),
                targeted: c.targeted,
                targeted_at_risk: c.targeted_at_risk,
                outcome: Some(outcome(&c.outcome)),
            })
            .collect(),
        untargeted_at_risk: Some(outcome(&r.untargeted_at_risk)),
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
