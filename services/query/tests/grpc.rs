//! The query API over real gRPC on loopback: a view filled in-process, the server started on
//! port 0, and the generated client, health and reflection clients against it.

use std::net::SocketAddr;
use std::time::Duration;

use churnwatch_core::output::Profile;
use churnwatch_core::profit::ValueTier;
use churnwatch_core::{RiskLevel, Stage, Timestamp};
use churnwatch_proto::v1;
use churnwatch_proto::v1::customer_query_client::CustomerQueryClient;
use churnwatch_runtime::CancellationToken;
use query::{QueryConfig, View};
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn profile(id: &str, stage: Stage, level: RiskLevel, value_at_risk: i64) -> Profile {
    let mut p: Profile = serde_json::from_value(serde_json::json!({
        "customer_id": id,
        "assessed_at": "2025-01-01T00:00:00Z",
        "version": 1,
        "stage": "prospect",
        "stage_since": null,
        "risk_level": "low",
        "risk_score": 0.0,
        "reasons": [{"code": "overdue", "detail": "no order for 95 days; usually every 30 days", "contribution": 0.4}],
        "p_alive": 0.5,
        "expected_purchases": 1.0,
        "clv_12m": 1000,
        "value_at_risk": 0,
        "margin_12m": 500,
        "revenue_12m": 2000,
        "orders_12m": 3,
        "contacts_12m": 0,
        "value_tier": "B",
        "divest": false,
        "orders": 3,
        "revenue": 2000,
        "first_seen": "2024-01-01T00:00:00Z",
        "first_order_at": "2024-01-01T00:00:00Z",
        "last_order_at": "2024-10-01T00:00:00Z",
        "typical_interval_days": 30.0,
        "acquisition_source": "ads",
        "first_channel": "web",
        "first_categories": ["shoes"],
        "last_retention": null
    }))
    .unwrap();
    p.stage = stage;
    p.risk_level = level;
    p.risk_score = match level {
        RiskLevel::Low => 0.1,
        RiskLevel::Medium => 0.4,
        RiskLevel::High => 0.7,
        RiskLevel::Critical => 0.9,
    };
    p.value_at_risk = value_at_risk;
    p.value_tier = ValueTier::B;
    p.assessed_at = Timestamp(1_735_689_600);
    p
}

/// Applies profiles as if read from partition 0 from `first_offset` on.
fn fill_at(view: &View, first_offset: i64, profiles: &[Profile]) {
    view.apply_profiles(0, first_offset, profiles).unwrap();
}

struct Server {
    addr: SocketAddr,
    view: View,
    grpc: query::grpc_telemetry::GrpcMetrics,
    caught_up: watch::Sender<bool>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), query::QueryError>>,
    _dir: tempfile::TempDir,
}

async fn start(profiles: &[Profile]) -> Server {
    start_with(
        profiles,
        QueryConfig {
            shutdown_grace: Duration::from_secs(2),
            ..QueryConfig::default()
        },
    )
    .await
}

async fn start_with(profiles: &[Profile], config: QueryConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let view = View::open(dir.path(), 16 << 20).unwrap();
    fill_at(&view, 0, profiles);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (caught_up, rx) = watch::channel(false);
    let shutdown = CancellationToken::new();
    let grpc = query::grpc_telemetry::GrpcMetrics::default();
    let task = tokio::spawn(query::serve(
        config,
        listener,
        view.clone(),
        rx,
        grpc.clone(),
        shutdown.clone(),
    ));
    Server {
        addr,
        view,
        grpc,
        caught_up,
        shutdown,
        task,
        _dir: dir,
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn health(ch: &Channel, service: &str) -> ServingStatus {
    let r = HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    r.into_inner().status()
}

async fn wait_for_health(ch: &Channel, service: &str, want: ServingStatus) {
    for _ in 0..100 {
        if health(ch, service).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{service:?} never became {want:?}");
}

fn sample() -> Vec<Profile> {
    let mut out = Vec::new();
    for i in 0..30 {
        let level = [
            RiskLevel::Low,
            RiskLevel::Medium,
            RiskLevel::High,
            RiskLevel::Critical,
        ][i % 4];
        let stage = Stage::ALL[i % 6];
        out.push(profile(&format!("c{i:02}"), stage, level, (i as i64) * 100));
    }
    out
}

#[tokio::test]
async fn health_says_not_serving_until_the_view_has_caught_up_and_again_on_shutdown() {
    let s = start(&sample()).await;
    let ch = channel(s.addr).await;
    let name = "churnwatch.v1.CustomerQuery";
    assert_eq!(health(&ch, name).await, ServingStatus::NotServing);
    assert_eq!(health(&ch, "").await, ServingStatus::NotServing);
    s.caught_up.send_replace(true);
    wait_for_health(&ch, name, ServingStatus::Serving).await;
    assert_eq!(health(&ch, "").await, ServingStatus::Serving);
    s.shutdown.cancel();
    // NOT_SERVING is reported before the listener closes.
    let mut saw_not_serving = false;
    for _ in 0..50 {
        match HealthClient::new(ch.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: name.into(),
            })
            .await
        {
            Ok(r) if r.get_ref().status() == ServingStatus::NotServing => {
                saw_not_serving = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(_) => break,
        }
    }
    assert!(saw_not_serving, "shutdown reported NOT_SERVING first");
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("the server stops within its grace")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_customer_is_found_by_id_with_its_reasons_and_an_unknown_one_is_not_found() {
    let s = start(&sample()).await;
    let mut client = CustomerQueryClient::new(channel(s.addr).await);
    let p = client
        .get_customer(v1::GetCustomerRequest {
            customer_id: "c03".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert_eq!(p.customer_id, "c03");
    assert_eq!(p.risk_level(), v1::RiskLevel::Critical);
    assert_eq!(p.stage(), v1::Stage::Core);
    assert_eq!(p.value_at_risk_minor, 300);
    assert_eq!(p.reasons[0].code, "overdue");
    assert!(p.reasons[0].detail.contains("95 days"));
    assert_eq!(p.assessed_at.unwrap().seconds, 1_735_689_600);
    let err = client
        .get_customer(v1::GetCustomerRequest {
            customer_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nobody"));
    let err = client
        .get_customer(v1::GetCustomerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("customer_id:"),
        "{}",
        err.message()
    );
    // Every call was counted by method and code.
    let method = "churnwatch.v1.CustomerQuery/GetCustomer";
    assert_eq!(s.grpc.responses(method, "Ok"), 1);
    assert_eq!(s.grpc.responses(method, "NotFound"), 1);
    assert_eq!(s.grpc.responses(method, "InvalidArgument"), 1);
}

#[tokio::test]
async fn a_batch_reports_unknown_ids_instead_of_failing_and_limits_are_named() {
    let s = start(&sample()).await;
    let mut client = CustomerQueryClient::new(channel(s.addr).await);
    let r = client
        .batch_get_customers(v1::BatchGetCustomersRequest {
            customer_ids: vec!["c01".into(), "ghost".into(), "c02".into(), "c01".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = r.profiles.iter().map(|p| p.customer_id.as_str()).collect();
    assert_eq!(ids, ["c01", "c02"]);
    assert_eq!(r.not_found, ["ghost"]);
    for bad in [vec![], vec![String::new(); 1], vec!["x".to_owned(); 1001]] {
        let err = client
            .batch_get_customers(v1::BatchGetCustomersRequest { customer_ids: bad })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().starts_with("customer_ids"),
            "{}",
            err.message()
        );
    }
}

#[tokio::test]
async fn at_risk_customers_are_listed_by_value_at_risk_across_pages() {
    let s = start(&sample()).await;
    let mut client = CustomerQueryClient::new(channel(s.addr).await);
    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let r = client
            .list_customers(v1::ListCustomersRequest {
                risk_level: v1::RiskLevel::High as i32,
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.customers.len() <= 3);
        got.extend(r.customers.into_iter().map(|p| p.customer_id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    // High: i % 4 == 2 → c02, c06, ..., c26, highest value at risk first.
    let want: Vec<String> = (0..30)
        .rev()
        .filter(|i| i % 4 == 2)
        .map(|i| format!("c{i:02}"))
        .collect();
    assert_eq!(got, want);

    // A token is bound to its query.
    let first = client
        .list_customers(v1::ListCustomersRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = client
        .list_customers(v1::ListCustomersRequest {
            page_size: 2,
            order_by: v1::CustomerOrder::Margin as i32,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("page_token:"),
        "{}",
        err.message()
    );
    let err = client
        .list_customers(v1::ListCustomersRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("page_size:"), "{}", err.message());
    let err = client
        .list_customers(v1::ListCustomersRequest {
            stage: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("stage:"), "{}", err.message());
}

#[tokio::test]
async fn stage_counts_and_the_export_cover_every_customer() {
    let s = start(&sample()).await;
    let mut client = CustomerQueryClient::new(channel(s.addr).await);
    let summary = client
        .get_stage_summary(v1::GetStageSummaryRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.total_customers, 30);
    assert_eq!(summary.stages.len(), 6);
    assert_eq!(summary.stages[0].stage(), v1::Stage::Prospect);
    assert_eq!(summary.stages[0].customers, 5);
    let mut stream = client
        .export_customers(v1::ExportCustomersRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        ids.extend(chunk.profiles.into_iter().map(|p| p.customer_id));
    }
    let want: Vec<String> = (0..30).map(|i| format!("c{i:02}")).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn reflection_lists_the_api_health_and_reflection() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let s = start(&[]).await;
    let mut client = ServerReflectionClient::new(channel(s.addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "churnwatch.v1.CustomerQuery",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[tokio::test]
async fn reports_are_answered_from_the_view_and_their_arguments_are_checked() {
    use churnwatch_core::output::{RetentionSummary, StageMove};
    let day = |d: i64| Timestamp(1_735_689_600 + d * 86_400); // 2025-01-01 + d days
    let mut profiles = sample();
    // c00 was core and was lost 30 days before the latest evaluation, then worth 500 over a
    // year and 1,400 over its lifetime.
    let lost = &mut profiles[0];
    lost.first_seen = Some(day(-700));
    lost.stage = Stage::Lost;
    lost.stage_history = vec![
        StageMove {
            at: day(-700),
            from: Stage::Prospect,
            to: Stage::FirstTime,
            value_at_risk: 0,
            retained_12m: 0,
            lifetime_value: 0,
        },
        StageMove {
            at: day(-600),
            from: Stage::FirstTime,
            to: Stage::Core,
            value_at_risk: 0,
            retained_12m: 0,
            lifetime_value: 0,
        },
        StageMove {
            at: day(-30),
            from: Stage::Core,
            to: Stage::Lost,
            value_at_risk: 450,
            retained_12m: 500,
            lifetime_value: 1_400,
        },
    ];
    // c01 got a winback offer 200 days ago while at high risk and ordered 10 days later.
    profiles[1].retention_actions = vec![RetentionSummary {
        at: day(-200),
        action: "offer".into(),
        campaign: Some("winback".into()),
        level_at_action: RiskLevel::High,
        // A profile published before actions recorded the customer's standing.
        standing: None,
        ordered_again_at: Some(day(-190)),
        left_risk_at: None,
    }];
    let s = start(&profiles).await;
    let mut client = CustomerQueryClient::new(channel(s.addr).await);

    let r = client
        .get_retention_report(v1::GetRetentionReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            r.customers_lost,
            r.lost_value_minor,
            r.lost_lifetime_value_minor
        ),
        (1, 500, 1_400)
    );
    assert_eq!(
        r.window_end.unwrap().seconds,
        1_735_689_600 + 1,
        "ends just after the latest evaluation"
    );
    let twelve_months = r.window_end.unwrap().seconds - r.window_start.unwrap().seconds;
    assert_eq!(twelve_months, 31_557_600, "a year of 365.25 days");
    let short = client
        .get_retention_report(v1::GetRetentionReportRequest {
            months: 1,
            as_of: Some(churnwatch_proto::timestamp(day(-40))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(short.customers_lost, 0, "the loss is after that window");

    let stages = client
        .get_stage_summary(v1::GetStageSummaryRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stages.transitions.len(), 1, "{:?}", stages.transitions);
    assert_eq!(stages.transitions[0].to(), v1::Stage::Lost);

    let c = client
        .get_campaign_report(v1::GetCampaignReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.follow_up_days, 90);
    assert_eq!(c.campaigns.len(), 1);
    let winback = &c.campaigns[0];
    assert_eq!(
        (winback.campaign.as_str(), winback.targeted),
        ("winback", 1)
    );
    assert_eq!(winback.outcome.unwrap().order_rate, Some(1.0));

    let p = client
        .get_profitability_report(v1::GetProfitabilityReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.tiers.len(), 4);
    assert_eq!(p.tiers.iter().map(|t| t.customers).sum::<u64>(), 30);
    assert!(!p.top_tier_traits.is_empty() || p.tiers[0].customers == 0);

    for (field, err) in [
        (
            "months:",
            client
                .get_retention_report(v1::GetRetentionReportRequest {
                    months: 25,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        ),
        (
            "follow_up_days:",
            client
                .get_campaign_report(v1::GetCampaignReportRequest {
                    follow_up_days: 400,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        ),
        (
            "divest_limit:",
            client
                .get_profitability_report(v1::GetProfitabilityReportRequest {
                    divest_limit: 5000,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        ),
    ] {
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
}

async fn next(stream: &mut tonic::Streaming<v1::WatchRiskChangesResponse>) -> v1::RiskChange {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a change within 5 s")
        .unwrap()
        .unwrap()
        .change
        .unwrap()
}

#[tokio::test]
async fn risk_changes_stream_live_resume_from_a_position_and_filter() {
    let s = start(&[]).await;
    let mut client = CustomerQueryClient::new(channel(s.addr).await);
    let mut live = client
        .watch_risk_changes(v1::WatchRiskChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut critical_only = client
        .watch_risk_changes(v1::WatchRiskChangesRequest {
            kind: v1::ChangeKind::Risk as i32,
            min_risk_level: v1::RiskLevel::Critical as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // After the streams opened: "a" becomes a core customer, then goes high, then critical.
    let mut a = profile("a", Stage::Core, RiskLevel::Low, 10);
    fill_at(&s.view, 0, &[a.clone()]);
    a.version = 2;
    a.risk_level = RiskLevel::High;
    fill_at(&s.view, 1, &[a.clone()]);
    a.version = 3;
    a.risk_level = RiskLevel::Critical;
    fill_at(&s.view, 2, &[a.clone()]);
    let first = next(&mut live).await;
    assert_eq!(first.customer_id, "a");
    assert_eq!(
        (first.previous_stage(), first.stage()),
        (v1::Stage::Prospect, v1::Stage::Core)
    );
    let second = next(&mut live).await;
    assert_eq!(
        (second.previous_level(), second.level()),
        (v1::RiskLevel::Low, v1::RiskLevel::High)
    );
    assert_eq!(second.reasons[0].code, "overdue");
    let third = next(&mut live).await;
    assert_eq!(third.level(), v1::RiskLevel::Critical);
    let only = next(&mut critical_only).await;
    assert_eq!(
        only.position, third.position,
        "the filter let only the critical one through"
    );

    // Resuming after the first change gives the second and third again.
    let mut resumed = client
        .watch_risk_changes(v1::WatchRiskChangesRequest {
            after_position: first.position.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut resumed).await.position, second.position);
    assert_eq!(next(&mut resumed).await.position, third.position);

    let err = client
        .watch_risk_changes(v1::WatchRiskChangesRequest {
            after_position: "not-a-position".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("after_position:"),
        "{}",
        err.message()
    );
    // A position from another view (rebuilt since): its epoch is not this view's.
    let other = tempfile::tempdir().unwrap();
    let other_view = View::open(other.path(), 1 << 20).unwrap();
    let mut forged = Vec::from(other_view.epoch().to_be_bytes());
    forged.extend_from_slice(&0u64.to_be_bytes());
    use base64::Engine as _;
    let err = client
        .watch_risk_changes(v1::WatchRiskChangesRequest {
            after_position: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

    // Shutdown ends the open streams, so the server stops within its grace.
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("the server stops with watchers connected")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn with_tokens_configured_only_a_valid_bearer_token_gets_answers_and_health_stays_open() {
    let token = "s3cret-token-0123456789";
    let s = start_with(
        &sample(),
        QueryConfig {
            auth_tokens: vec![token.into()],
            ..QueryConfig::default()
        },
    )
    .await;
    let ch = channel(s.addr).await;
    let ask = |header: Option<String>| {
        let ch = ch.clone();
        async move {
            let mut request = tonic::Request::new(v1::GetStageSummaryRequest::default());
            if let Some(h) = header {
                request
                    .metadata_mut()
                    .insert("authorization", h.parse().unwrap());
            }
            CustomerQueryClient::new(ch)
                .get_stage_summary(request)
                .await
        }
    };
    let err = ask(None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("authorization: Bearer"),
        "{}",
        err.message()
    );
    let err = ask(Some("Bearer wrong-token-0123456789".into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let ok = ask(Some(format!("Bearer {token}"))).await.unwrap();
    assert_eq!(ok.into_inner().total_customers, 30);
    // Probes need no token.
    assert_eq!(health(&ch, "").await, ServingStatus::NotServing);
}

#[tokio::test]
async fn with_a_certificate_the_api_speaks_tls_only() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let s = start_with(
        &sample(),
        QueryConfig {
            tls_cert: Some(cert_path),
            tls_key: Some(key_path),
            ..QueryConfig::default()
        },
    )
    .await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert.pem()))
        .domain_name("localhost");
    let secure = Channel::from_shared(format!("https://{}", s.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let summary = CustomerQueryClient::new(secure)
        .get_stage_summary(v1::GetStageSummaryRequest::default())
        .await
        .unwrap();
    assert_eq!(summary.into_inner().total_customers, 30);
    // Plain text gets nowhere.
    let plain = Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let r = CustomerQueryClient::new(plain)
            .get_stage_summary(v1::GetStageSummaryRequest::default())
            .await;
        assert!(r.is_err(), "a plain-text request was answered");
    }
}

#[tokio::test]
async fn oversized_requests_are_refused_and_an_expired_deadline_ends_a_call() {
    let many: Vec<Profile> = (0..3000)
        .map(|i| profile(&format!("p{i:05}"), Stage::Core, RiskLevel::Low, i))
        .collect();
    let s = start_with(
        &many,
        QueryConfig {
            max_message_bytes: 4096,
            ..QueryConfig::default()
        },
    )
    .await;
    let mut client = CustomerQueryClient::new(channel(s.addr).await);
    let err = client
        .batch_get_customers(v1::BatchGetCustomersRequest {
            customer_ids: (0..100).map(|i| format!("{i:0>100}")).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // A report reads all 3,000 profiles; a deadline of a microsecond cannot be met.
    let mut request = tonic::Request::new(v1::GetRetentionReportRequest::default());
    request.set_timeout(Duration::from_micros(1));
    let err = client.get_retention_report(request).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
}
