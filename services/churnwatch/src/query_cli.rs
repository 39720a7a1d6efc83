//! `churnwatch query`: a command-line client of the query service's gRPC API. Tables for
//! people by default, `--json` (one JSON document, or JSON lines for streams) for scripts.

use anyhow::{Context, Result};
use churnwatch_proto::v1;
use churnwatch_proto::v1::customer_query_client::CustomerQueryClient;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use serde_json::json;
use tonic::transport::Channel;

use crate::stdout::{out, outln};

/// Arguments of `churnwatch query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Address of the query service's gRPC API (host:port or http://host:port).
    #[arg(long, env = "CHURNWATCH_QUERY_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Print JSON (JSON lines for lists and exports) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// Bearer token, when the service requires one.
    #[arg(long, env = "CHURNWATCH_QUERY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate of the authority that signed the service's TLS certificate (for an
    /// https:// address; without it the system's roots are trusted).
    #[arg(long, env = "CHURNWATCH_QUERY_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: QueryCommand,
}

/// What to ask.
#[derive(Debug, clap::Subcommand)]
pub enum QueryCommand {
    /// One customer's profile: stage, risk, reasons, value.
    Customer {
        /// The customer id.
        id: String,
    },
    /// Customers at a risk level or above, highest value at risk first (risk score with
    /// --by-score), each with the reasons in plain sentences.
    AtRisk {
        /// The lowest risk level shown: low, medium, high (high and critical) or critical.
        #[arg(long, default_value = "high", value_parser = ["low", "medium", "high", "critical"])]
        level: String,
        /// Most customers to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Order by risk score instead of value at risk.
        #[arg(long)]
        by_score: bool,
    },
    /// Customers per lifecycle stage now, and the moves between stages over recent months.
    Stages {
        /// Months of moves to show (1 to 24).
        #[arg(long, default_value_t = 12)]
        months: u32,
    },
    /// Customers lost over recent months and what they cost, customers acquired and
    /// reactivated, and the retention rate.
    Retention {
        /// Length of the window in months (1 to 24), ending at the latest evaluation.
        #[arg(long, default_value_t = 12)]
        months: u32,
    },
    /// Customers and margin per value tier, the divest candidates, and what the most
    /// profitable customers have in common.
    Profitability {
        /// Divest candidates listed (lowest margin first).
        #[arg(long, default_value_t = 10)]
        divest: u32,
    },
    /// For each retention campaign, how many targeted customers ordered again or left the
    /// high-risk levels, against at-risk customers no action reached.
    Campaigns {
        /// Days after an action in which an order or a drop in risk counts.
        #[arg(long, default_value_t = 90)]
        follow_up_days: u32,
    },
    /// Asks grpc.health.v1 whether the API serves (the view has caught up); exits 0 when it
    /// does and 1 when it does not, so it can serve as a readiness probe.
    Health,
    /// Follows risk-level and stage changes live until Ctrl-C, one line each (the position
    /// printed with each lets a later watch resume right after it).
    Watch {
        /// Only changes where the level before or after is at least this: low, medium, high
        /// or critical.
        #[arg(long, value_parser = ["low", "medium", "high", "critical"])]
        level: Option<String>,
        /// Only changes of this kind: risk or stage.
        #[arg(long, value_parser = ["risk", "stage"])]
        kind: Option<String>,
        /// Resume right after this position (from an earlier watch).
        #[arg(long, conflicts_with = "from_oldest")]
        after: Option<String>,
        /// Start at the oldest change the service keeps instead of now.
        #[arg(long)]
        from_oldest: bool,
    },
    /// Every profile, for a CRM import.
    Export {
        /// Output format.
        #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl"])]
        format: String,
    },
}

fn endpoint(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Adds the bearer token, when one was given, to every request.
#[derive(Debug, Clone)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            request.metadata_mut().insert("authorization", t.clone());
        }
        Ok(request)
    }
}

type Authed = tonic::service::interceptor::InterceptedService<Channel, Token>;
type Client = CustomerQueryClient<Authed>;

fn token(args: &QueryArgs) -> Result<Token> {
    args.token
        .as_ref()
        .map(|t| {
            format!("Bearer {t}")
                .parse()
                .map_err(|_| anyhow::anyhow!("--token holds characters a header cannot carry"))
        })
        .transpose()
        .map(Token)
}

async fn connect(args: &QueryArgs) -> Result<Channel> {
    let url = endpoint(&args.addr);
    let mut endpoint = Channel::from_shared(url.clone())
        .with_context(|| format!("--addr {:?} is not an address", args.addr))?;
    if url.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &args.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).context("TLS set-up failed")?;
    }
    let channel = endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(args.timeout_secs))
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach the query service at {url}; is it running (churnwatch demo, churnwatch run or query)?")
        })?;
    Ok(channel)
}

fn status_error(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", e.code().description(), e.message())
}

fn level_arg(level: &str) -> v1::RiskLevel {
    match level {
        "low" => v1::RiskLevel::Low,
        "medium" => v1::RiskLevel::Medium,
        "critical" => v1::RiskLevel::Critical,
        _ => v1::RiskLevel::High,
    }
}

/// Runs `churnwatch query`; a watch ends when `shutdown` is cancelled.
pub fn run(args: &QueryArgs, shutdown: &churnwatch_runtime::CancellationToken) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = connect(args).await?;
        let mut client = CustomerQueryClient::with_interceptor(channel.clone(), token(args)?);
        match &args.command {
            QueryCommand::Health => {
                let status = tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: "churnwatch.v1.CustomerQuery".into(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .status();
                let name = status.as_str_name();
                if args.json {
                    outln!("{}", json!({ "status": name }));
                } else {
                    outln!("{name}");
                }
                if status != tonic_health::pb::health_check_response::ServingStatus::Serving {
                    std::process::exit(1);
                }
            }
            QueryCommand::Customer { id } => {
                let p = client
                    .get_customer(v1::GetCustomerRequest {
                        customer_id: id.clone(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .profile
                    .context("the service answered without a profile")?;
                if args.json {
                    outln!("{}", serde_json::to_string_pretty(&profile_json(&p))?);
                } else {
                    out!("{}", customer_text(&p));
                }
            }
            QueryCommand::AtRisk {
                level,
                limit,
                by_score,
            } => {
                let level = level_arg(level);
                let order = if *by_score {
                    v1::CustomerOrder::RiskScore
                } else {
                    v1::CustomerOrder::ValueAtRisk
                };
                let customers = list(&mut client, level, order, *limit).await?;
                if args.json {
                    for p in &customers {
                        outln!("{}", profile_json(p));
                    }
                } else {
                    out!("{}", at_risk_table(&customers, level));
                }
            }
            QueryCommand::Stages { months } => {
                let s = client
                    .get_stage_summary(v1::GetStageSummaryRequest {
                        months: *months,
                        ..Default::default()
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if args.json {
                    outln!("{}", stages_json(&s));
                } else {
                    out!("{}", stages_text(&s));
                }
            }
            QueryCommand::Retention { months } => {
                let r = client
                    .get_retention_report(v1::GetRetentionReportRequest {
                        months: *months,
                        ..Default::default()
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                let window = format!(
                    "{} to {}",
                    r.window_start.as_ref().map(time_text).unwrap_or_default(),
                    r.window_end.as_ref().map(time_text).unwrap_or_default()
                );
                if args.json {
                    outln!(
                        "{}",
                        json!({
                            "window_start": r.window_start.as_ref().map(time_text),
                            "window_end": r.window_end.as_ref().map(time_text),
                            "customers_lost": r.customers_lost,
                            "lost_value_minor": r.lost_value_minor,
                            "lost_lifetime_value_minor": r.lost_lifetime_value_minor,
                            "customers_acquired": r.customers_acquired,
                            "customers_reactivated": r.customers_reactivated,
                            "active_at_start": r.active_at_start,
                            "retained": r.retained,
                            "retention_rate": r.retention_rate,
                            "months": r.months.iter().map(|m| json!({
                                "month": m.month,
                                "acquired": m.acquired,
                                "lost": m.lost,
                                "reactivated": m.reactivated,
                                "net": m.net,
                                "lost_value_minor": m.lost_value_minor,
                                "lost_lifetime_value_minor": m.lost_lifetime_value_minor,
                                "acquired_value_minor": m.acquired_value_minor,
                            })).collect::<Vec<_>>(),
                            "segments": r.segments.iter().map(|g| json!({
                                "dimension": g.dimension,
                                "value": g.value,
                                "active_at_start": g.active_at_start,
                                "lost": g.lost,
                                "churn_rate": g.churn_rate,
                            })).collect::<Vec<_>>(),
                        })
                    );
                } else {
                    outln!("Retention over the last {months} months ({window}):");
                    outln!(
                        "  customers lost:        {} (what they cost: {} over the next 12 months, {} over their lifetime)",
                        r.customers_lost,
                        money(r.lost_value_minor),
                        money(r.lost_lifetime_value_minor)
                    );
                    outln!("  customers acquired:    {}", r.customers_acquired);
                    outln!("  customers reactivated: {}", r.customers_reactivated);
                    outln!(
                        "  retention rate:        {} ({} of {} customers active at the start still active)",
                        r.retention_rate
                            .map_or("-".into(), |x| format!("{:.1}%", 100.0 * x)),
                        r.retained,
                        r.active_at_start
                    );
                    out!("{}", flow_table(&r.months));
                    out!("{}", segment_table(&r.segments));
                }
            }
            QueryCommand::Profitability { divest } => {
                let r = client
                    .get_profitability_report(v1::GetProfitabilityReportRequest {
                        divest_limit: *divest,
                        ..Default::default()
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if args.json {
                    outln!("{}", profitability_json(&r));
                } else {
                    out!("{}", profitability_text(&r));
                }
            }
            QueryCommand::Campaigns { follow_up_days } => {
                let r = client
                    .get_campaign_report(v1::GetCampaignReportRequest {
                        follow_up_days: *follow_up_days,
                        ..Default::default()
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                if args.json {
                    outln!("{}", campaigns_json(&r));
                } else {
                    out!("{}", campaigns_text(&r));
                }
            }
            QueryCommand::Watch {
                level,
                kind,
                after,
                from_oldest,
            } => {
                let mut stream = client
                    .watch_risk_changes(v1::WatchRiskChangesRequest {
                        after_position: after.clone().unwrap_or_default(),
                        from_oldest: *from_oldest,
                        kind: match kind.as_deref() {
                            Some("risk") => v1::ChangeKind::Risk,
                            Some("stage") => v1::ChangeKind::Stage,
                            _ => v1::ChangeKind::Unspecified,
                        } as i32,
                        min_risk_level: level.as_deref().map_or(0, |l| level_arg(l) as i32),
                        customer_ids: vec![],
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                eprintln!("watching risk and stage changes (Ctrl-C to stop)");
                loop {
                    let message = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        m = stream.message() => m.map_err(status_error)?,
                    };
                    let Some(change) = message.and_then(|m| m.change) else {
                        break;
                    };
                    if args.json {
                        outln!("{}", change_json(&change));
                    } else {
                        outln!("{}", change_text(&change));
                    }
                }
            }
            QueryCommand::Export { format } => {
                export(&mut client, format == "csv" && !args.json).await?;
            }
        }
        Ok(())
    })
}

fn stages_json(s: &v1::GetStageSummaryResponse) -> serde_json::Value {
    let stages: serde_json::Map<String, serde_json::Value> = s
        .stages
        .iter()
        .map(|c| (stage_name(c.stage()).to_owned(), json!(c.customers)))
        .collect();
    json!({
        "total_customers": s.total_customers,
        "stages": stages,
        "transitions": s.transitions.iter().map(|t| json!({
            "from": stage_name(t.from()), "to": stage_name(t.to()), "count": t.count
        })).collect::<Vec<_>>(),
        "window_start": s.window_start.as_ref().map(time_text),
        "window_end": s.window_end.as_ref().map(time_text),
    })
}

fn stages_text(s: &v1::GetStageSummaryResponse) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["stage", "customers", "share"]);
    for c in &s.stages {
        t.add_row([
            Cell::new(stage_name(c.stage())),
            Cell::new(c.customers).set_alignment(CellAlignment::Right),
            Cell::new(format!(
                "{:.1}%",
                100.0 * c.customers as f64 / s.total_customers.max(1) as f64
            ))
            .set_alignment(CellAlignment::Right),
        ]);
    }
    let mut out = format!("{t}\n{} customers\n", s.total_customers);
    if !s.transitions.is_empty() {
        let mut m = Table::new();
        m.load_preset(UTF8_FULL_CONDENSED);
        m.set_header(["from", "to", "moves"]);
        for x in &s.transitions {
            m.add_row([
                Cell::new(stage_name(x.from())),
                Cell::new(stage_name(x.to())),
                Cell::new(x.count).set_alignment(CellAlignment::Right),
            ]);
        }
        out.push_str(&format!(
            "\nMoves between {} and {}:\n{m}\n",
            s.window_start.as_ref().map(time_text).unwrap_or_default(),
            s.window_end.as_ref().map(time_text).unwrap_or_default()
        ));
    }
    out
}

fn profitability_json(r: &v1::GetProfitabilityReportResponse) -> serde_json::Value {
    json!({
        "tiers": r.tiers.iter().map(|t| json!({
            "tier": tier_name(t.tier()), "customers": t.customers,
            "margin_12m_minor": t.margin_12m_minor, "revenue_12m_minor": t.revenue_12m_minor,
        })).collect::<Vec<_>>(),
        "divest_count": r.divest_count,
        "divest_margin_12m_minor": r.divest_margin_12m_minor,
        "divest_candidates": r.divest_candidates.iter().map(|d| json!({
            "customer_id": d.customer_id, "margin_12m_minor": d.margin_12m_minor,
            "contacts_12m": d.contacts_12m,
        })).collect::<Vec<_>>(),
        "top_tier_traits": r.top_tier_traits.iter().map(|t| json!({
            "dimension": t.dimension, "value": t.value,
            "share_in_top_tier": t.share_in_top_tier, "share_overall": t.share_overall,
        })).collect::<Vec<_>>(),
    })
}

fn profitability_text(r: &v1::GetProfitabilityReportResponse) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["tier", "customers", "12-month margin", "12-month revenue"]);
    for x in &r.tiers {
        t.add_row([
            Cell::new(tier_name(x.tier())),
            Cell::new(x.customers).set_alignment(CellAlignment::Right),
            Cell::new(money(x.margin_12m_minor)).set_alignment(CellAlignment::Right),
            Cell::new(money(x.revenue_12m_minor)).set_alignment(CellAlignment::Right),
        ]);
    }
    let mut out = format!("{t}\n");
    out.push_str(&format!(
        "\n{} divest candidates (negative margin, high service load), {} together",
        r.divest_count,
        money(r.divest_margin_12m_minor)
    ));
    if !r.divest_candidates.is_empty() {
        let worst: Vec<String> = r
            .divest_candidates
            .iter()
            .map(|d| format!("{} ({})", d.customer_id, money(d.margin_12m_minor)))
            .collect();
        out.push_str(&format!("; worst: {}", worst.join(", ")));
    }
    out.push_str("\n\nWhat the top tier (A) has in common, against all customers:\n");
    let mut traits = Table::new();
    traits.load_preset(UTF8_FULL_CONDENSED);
    traits.set_header(["trait", "value", "in tier A", "overall"]);
    for x in &r.top_tier_traits {
        traits.add_row([
            Cell::new(&x.dimension),
            Cell::new(&x.value),
            Cell::new(format!("{:.1}%", 100.0 * x.share_in_top_tier))
                .set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.1}%", 100.0 * x.share_overall))
                .set_alignment(CellAlignment::Right),
        ]);
    }
    out.push_str(&format!("{traits}\n"));
    out
}

fn outcome_json(o: Option<&v1::CampaignOutcome>) -> serde_json::Value {
    let o = o.cloned().unwrap_or_default();
    json!({
        "judged": o.judged, "ordered_again": o.ordered_again, "left_risk": o.left_risk,
        "order_rate": o.order_rate,
    })
}

fn campaigns_json(r: &v1::GetCampaignReportResponse) -> serde_json::Value {
    json!({
        "follow_up_days": r.follow_up_days,
        "as_of": r.as_of.as_ref().map(time_text),
        "campaigns": r.campaigns.iter().map(|c| json!({
            "campaign": c.campaign, "targeted": c.targeted,
            "targeted_at_risk": c.targeted_at_risk, "outcome": outcome_json(c.outcome.as_ref()),
        })).collect::<Vec<_>>(),
        "untargeted_at_risk": outcome_json(r.untargeted_at_risk.as_ref()),
    })
}

fn campaigns_text(r: &v1::GetCampaignReportResponse) -> String {
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    let outcome = |o: Option<&v1::CampaignOutcome>| {
        let o = o.cloned().unwrap_or_default();
        let rate =
            |k: u64| (o.judged > 0).then(|| format!("{:.1}%", 100.0 * k as f64 / o.judged as f64));
        [
            o.judged.to_string(),
            rate(o.ordered_again).unwrap_or_else(|| "-".into()),
            rate(o.left_risk).unwrap_or_else(|| "-".into()),
        ]
    };
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "campaign",
        "targeted",
        "at risk then",
        "judged",
        "ordered again",
        "left high risk",
    ]);
    for c in &r.campaigns {
        let mut row = vec![
            Cell::new(&c.campaign),
            right(c.targeted.to_string()),
            right(c.targeted_at_risk.to_string()),
        ];
        row.extend(outcome(c.outcome.as_ref()).map(right));
        t.add_row(row);
    }
    let mut row = vec![
        Cell::new("(at risk, not targeted)"),
        right("-".into()),
        right("-".into()),
    ];
    row.extend(outcome(r.untargeted_at_risk.as_ref()).map(right));
    t.add_row(row);
    format!(
        "{t}\noutcome: an order within {} days of the action (or of the start of an untargeted at-risk spell); \
         leaving high risk is shown beside it, not counted as success. The untargeted row is a reference, \
         not a matched control group: the difference is not a campaign's effect\n",
        r.follow_up_days
    )
}

fn change_json(c: &v1::RiskChange) -> serde_json::Value {
    json!({
        "position": c.position,
        "customer_id": c.customer_id,
        "at": c.at.as_ref().map(time_text),
        "previous_level": level_name(c.previous_level()),
        "level": level_name(c.level()),
        "previous_stage": stage_name(c.previous_stage()),
        "stage": stage_name(c.stage()),
        "risk_score": c.risk_score,
        "value_at_risk_minor": c.value_at_risk_minor,
        "reasons": c.reasons.iter().map(|r| json!({"code": r.code, "detail": r.detail})).collect::<Vec<_>>(),
    })
}

fn change_text(c: &v1::RiskChange) -> String {
    let mut what = Vec::new();
    if c.previous_level != c.level {
        what.push(format!(
            "risk {} -> {}",
            level_name(c.previous_level()),
            level_name(c.level())
        ));
    }
    if c.previous_stage != c.stage {
        what.push(format!(
            "stage {} -> {}",
            stage_name(c.previous_stage()),
            stage_name(c.stage())
        ));
    }
    let why: Vec<&str> = c.reasons.iter().map(|r| r.detail.as_str()).collect();
    format!(
        "{}  {}  {}  value at risk {}{}  [{}]",
        c.at.as_ref().map(time_text).unwrap_or_default(),
        c.customer_id,
        what.join(", "),
        money(c.value_at_risk_minor),
        if why.is_empty() {
            String::new()
        } else {
            format!(": {}", why.join("; "))
        },
        c.position
    )
}

async fn list(
    client: &mut Client,
    level: v1::RiskLevel,
    order: v1::CustomerOrder,
    limit: u32,
) -> Result<Vec<v1::CustomerProfile>> {
    let mut out = Vec::new();
    let mut token = String::new();
    while out.len() < limit as usize {
        let page = client
            .list_customers(v1::ListCustomersRequest {
                min_risk_level: level as i32,
                order_by: order as i32,
                page_size: (limit as usize - out.len()).min(1000) as u32,
                page_token: token,
                ..Default::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        out.extend(page.customers);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(out)
}

const CSV_HEADER: [&str; 15] = [
    "customer_id",
    "stage",
    "risk_level",
    "risk_score",
    "value_at_risk",
    "clv_12m",
    "margin_12m",
    "value_tier",
    "divest",
    "orders",
    "last_order_at",
    "p_alive",
    "acquisition_source",
    "first_channel",
    "reasons",
];

async fn export(client: &mut Client, csv_out: bool) -> Result<()> {
    use std::io::Write;
    let mut stream = client
        .export_customers(v1::ExportCustomersRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let stdout = std::io::stdout();
    let mut csv = csv::Writer::from_writer(stdout.lock());
    if csv_out {
        csv.write_record(CSV_HEADER)?;
    }
    let mut lines = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0u64;
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        for p in &chunk.profiles {
            n += 1;
            if csv_out {
                csv.write_record([
                    p.customer_id.clone(),
                    stage_name(p.stage()).to_owned(),
                    level_name(p.risk_level()).to_owned(),
                    format!("{:.3}", p.risk_score),
                    money(p.value_at_risk_minor),
                    money(p.clv_12m_minor),
                    money(p.margin_12m_minor),
                    tier_name(p.value_tier()).to_owned(),
                    p.divest.to_string(),
                    p.orders.to_string(),
                    p.last_order_at.as_ref().map(time_text).unwrap_or_default(),
                    p.p_alive.map(|x| format!("{x:.3}")).unwrap_or_default(),
                    p.acquisition_source.clone(),
                    p.first_channel.clone(),
                    p.reasons
                        .iter()
                        .map(|r| r.code.as_str())
                        .collect::<Vec<_>>()
                        .join(";"),
                ])?;
            } else {
                writeln!(lines, "{}", profile_json(p))?;
            }
        }
    }
    csv.flush()?;
    lines.flush()?;
    eprintln!("exported {n} customers");
    Ok(())
}

/// Returns minor units as a decimal amount, e.g. 123456 → "1234.56".
fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

fn time_text(t: &churnwatch_proto::prost_types::Timestamp) -> String {
    churnwatch_core::Timestamp(t.seconds).to_string()
}

fn stage_name(s: v1::Stage) -> &'static str {
    churnwatch_proto::stage_from_proto(s).map_or("unspecified", |s| s.as_str())
}

fn level_name(l: v1::RiskLevel) -> &'static str {
    match l {
        v1::RiskLevel::Unspecified => "unspecified",
        v1::RiskLevel::Low => "low",
        v1::RiskLevel::Medium => "medium",
        v1::RiskLevel::High => "high",
        v1::RiskLevel::Critical => "critical",
    }
}

fn tier_name(t: v1::ValueTier) -> &'static str {
    match t {
        v1::ValueTier::Unspecified => "unspecified",
        v1::ValueTier::A => "A",
        v1::ValueTier::B => "B",
        v1::ValueTier::C => "C",
        v1::ValueTier::D => "D",
    }
}

/// Returns a profile as JSON with enums by name and money in minor units.
fn profile_json(p: &v1::CustomerProfile) -> serde_json::Value {
    let t = |t: &Option<churnwatch_proto::prost_types::Timestamp>| t.as_ref().map(time_text);
    json!({
        "customer_id": p.customer_id,
        "assessed_at": t(&p.assessed_at),
        "version": p.version,
        "stage": stage_name(p.stage()),
        "stage_since": t(&p.stage_since),
        "risk_level": level_name(p.risk_level()),
        "risk_score": p.risk_score,
        "reasons": p.reasons.iter().map(|r| json!({"code": r.code, "detail": r.detail, "contribution": r.contribution})).collect::<Vec<_>>(),
        "p_alive": p.p_alive,
        "expected_purchases": p.expected_purchases,
        "clv_12m_minor": p.clv_12m_minor,
        "value_at_risk_minor": p.value_at_risk_minor,
        "margin_12m_minor": p.margin_12m_minor,
        "revenue_12m_minor": p.revenue_12m_minor,
        "orders_12m": p.orders_12m,
        "contacts_12m": p.contacts_12m,
        "value_tier": tier_name(p.value_tier()),
        "divest": p.divest,
        "orders": p.orders,
        "revenue_minor": p.revenue_minor,
        "first_seen": t(&p.first_seen),
        "first_order_at": t(&p.first_order_at),
        "last_order_at": t(&p.last_order_at),
        "typical_interval_days": p.typical_interval_days,
        "acquisition_source": p.acquisition_source,
        "first_channel": p.first_channel,
        "first_categories": p.first_categories,
        "last_retention": p.last_retention.as_ref().map(|r| json!({
            "at": t(&r.at),
            "action": r.action,
            "campaign": r.campaign,
            "level_at_action": level_name(r.level_at_action()),
        })),
        "margin_breakdown": p.margin_breakdown.as_ref().map(|b| json!({
            "revenue_minor": b.revenue_minor,
            "discounts_minor": b.discounts_minor,
            "refunds_minor": b.refunds_minor,
            "cost_of_goods_minor": b.cost_of_goods_minor,
            "service_minor": b.service_minor,
            "margin_minor": b.margin_minor,
        })),
    })
}

fn customer_text(p: &v1::CustomerProfile) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let ts = |t: &Option<churnwatch_proto::prost_types::Timestamp>| {
        t.as_ref().map(time_text).unwrap_or_else(|| "-".into())
    };
    let rows: Vec<(&str, String)> = vec![
        ("customer", p.customer_id.clone()),
        (
            "stage",
            format!("{} since {}", stage_name(p.stage()), ts(&p.stage_since)),
        ),
        (
            "risk",
            format!("{} ({:.2})", level_name(p.risk_level()), p.risk_score),
        ),
        (
            "P(alive)",
            p.p_alive.map_or("-".into(), |x| format!("{x:.2}")),
        ),
        ("value at risk", money(p.value_at_risk_minor)),
        ("12-month CLV", money(p.clv_12m_minor)),
        ("12-month margin", money(p.margin_12m_minor)),
        (
            "lifetime margin",
            p.margin_breakdown.as_ref().map_or("-".into(), |b| {
                format!(
                    "{} = revenue {} - discounts {} - refunds {} - cost of goods {} - service {}",
                    money(b.margin_minor),
                    money(b.revenue_minor),
                    money(b.discounts_minor),
                    money(b.refunds_minor),
                    money(b.cost_of_goods_minor),
                    money(b.service_minor)
                )
            }),
        ),
        (
            "value tier",
            format!(
                "{}{}",
                tier_name(p.value_tier()),
                if p.divest { " (divest candidate)" } else { "" }
            ),
        ),
        (
            "orders",
            format!("{} ({} in 12 months)", p.orders, p.orders_12m),
        ),
        ("last order", ts(&p.last_order_at)),
        ("assessed at", ts(&p.assessed_at)),
    ];
    for (k, v) in rows {
        t.add_row([Cell::new(k), Cell::new(v)]);
    }
    let mut out = format!("{t}\n");
    if p.reasons.is_empty() {
        out.push_str("no risk reasons\n");
    } else {
        out.push_str("why:\n");
        for r in &p.reasons {
            out.push_str(&format!("  - {} ({})\n", r.detail, r.code));
        }
    }
    out
}

fn at_risk_table(customers: &[v1::CustomerProfile], level: v1::RiskLevel) -> String {
    if customers.is_empty() {
        return format!(
            "no customers at risk level {} or above\n",
            level_name(level)
        );
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["customer", "stage", "risk", "value at risk", "why"]);
    for p in customers {
        t.add_row([
            Cell::new(&p.customer_id),
            Cell::new(stage_name(p.stage())),
            Cell::new(format!(
                "{} {:.2}",
                level_name(p.risk_level()),
                p.risk_score
            )),
            Cell::new(money(p.value_at_risk_minor)).set_alignment(CellAlignment::Right),
            Cell::new(
                p.reasons
                    .iter()
                    .map(|r| r.detail.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ]);
    }
    format!(
        "{t}\n{} customers at risk level {} or above\n",
        customers.len(),
        level_name(level)
    )
}

/// The month-by-month flow of a retention report, with the months where defection outpaced
/// acquisition marked.
fn flow_table(months: &[v1::MonthFlow]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "month",
        "acquired",
        "reactivated",
        "lost",
        "net",
        "value acquired (12 months)",
        "value lost (12 months)",
        "",
    ]);
    for m in months {
        let right = |v: String| Cell::new(v).set_alignment(CellAlignment::Right);
        table.add_row([
            Cell::new(&m.month),
            right(m.acquired.to_string()),
            right(m.reactivated.to_string()),
            right(m.lost.to_string()),
            right(format!("{:+}", m.net)),
            right(money(m.acquired_value_minor)),
            right(money(m.lost_value_minor)),
            Cell::new(if m.net < 0 {
                "defection outpaces acquisition"
            } else {
                ""
            }),
        ]);
    }
    format!("Customer flow by month:\n{table}\n")
}

/// Churn per segment of a retention report: the share of each segment's customers active at
/// the window's start who were lost by its end.
fn segment_table(segments: &[v1::SegmentRetention]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["segment", "value", "active at start", "lost", "churn rate"]);
    for g in segments {
        let right = |v: String| Cell::new(v).set_alignment(CellAlignment::Right);
        table.add_row([
            Cell::new(&g.dimension),
            Cell::new(&g.value),
            right(g.active_at_start.to_string()),
            right(g.lost.to_string()),
            right(format!("{:.1}%", 100.0 * g.churn_rate)),
        ]);
    }
    format!("Churn by segment (customers active at the start, lost by the end):\n{table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_prints_minor_units_as_a_decimal_amount() {
        assert_eq!(money(123_456), "1234.56");
        assert_eq!(money(-5), "-0.05");
        assert_eq!(money(0), "0.00");
    }

    #[test]
    fn an_address_without_a_scheme_gets_http() {
        assert_eq!(endpoint("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(endpoint("https://q.example:443"), "https://q.example:443");
    }
}
