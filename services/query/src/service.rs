//! The `churnwatch.v1.CustomerQuery` gRPC service over the view. Requests are validated here;
//! view errors become a `tonic::Status` in one place ([`status`]).

use std::pin::Pin;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use churnwatch_core::Timestamp;
use churnwatch_core::output::Profile;
use churnwatch_core::report::{
    CampaignAccumulator, ProfitabilityAccumulator, RetentionAccumulator, StageAccumulator, Window,
};
use churnwatch_proto::prost_types;
use churnwatch_proto::v1;
use churnwatch_proto::v1::customer_query_server::CustomerQuery;
use churnwatch_proto::{
    campaign_report_to_proto, profile_to_proto, profitability_report_to_proto,
    retention_report_to_proto, risk_level_from_proto, stage_from_proto, stage_report_to_proto,
    tier_from_proto,
};
use churnwatch_runtime::CancellationToken;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::view::{Change, ChangeStart, Filter, Order, View, ViewError};

/// Most ids in one `BatchGetCustomers`.
pub const MAX_BATCH_IDS: usize = 1_000;
/// Largest page of `ListCustomers`.
pub const MAX_PAGE_SIZE: u32 = 1_000;
/// Page size when none is asked.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Profiles per message of `ExportCustomers`.
pub const EXPORT_CHUNK: usize = 500;

const TOKEN_VERSION: u8 = 1;

/// Maps a view failure to the status a client sees; the details go to the log.
fn status(e: ViewError) -> Status {
    tracing::error!(error = %e, "view failure");
    Status::internal(format!("the query view failed: {e}"))
}

/// The query service.
#[derive(Debug, Clone)]
pub struct QueryService {
    view: View,
    shutdown: CancellationToken,
}

impl QueryService {
    /// Returns the service over `view`; streams end when `shutdown` is cancelled.
    pub fn new(view: View, shutdown: CancellationToken) -> Self {
        Self { view, shutdown }
    }

    /// Returns the time reports are made at: `as_of` when given, else the latest evaluation in
    /// the view (just after it, as windows end exclusively), else the wall clock.
    fn as_of(&self, as_of: Option<&prost_types::Timestamp>) -> Result<Timestamp, Status> {
        match as_of {
            Some(t) if t.seconds <= 0 => Err(invalid("as_of", "must be after 1970")),
            Some(t) => Ok(Timestamp(t.seconds)),
            None => Ok(self
                .view
                .latest_assessed_at()
                .map_err(status)?
                .map_or_else(churnwatch_runtime::wall_now, |t| t.plus(1))),
        }
    }

    /// Returns the window of `months` (0: 12) ending at [`Self::as_of`].
    fn window(
        &self,
        as_of: Option<&prost_types::Timestamp>,
        months: u32,
    ) -> Result<Window, Status> {
        let months = match months {
            0 => 12,
            m @ 1..=24 => m,
            m => return Err(invalid("months", format!("1 to 24, not {m}"))),
        };
        let end = self.as_of(as_of)?;
        Ok(Window {
            start: end.plus(-(i64::from(months) * MONTH_SECS)),
            end,
        })
    }

    /// Folds every profile of the view into `acc` on a blocking thread (a report reads them
    /// all).
    async fn report<A: Send + 'static>(
        &self,
        mut acc: A,
        add: fn(&mut A, &Profile),
    ) -> Result<A, Status> {
        let view = self.view.clone();
        tokio::task::spawn_blocking(move || view.scan(|p| add(&mut acc, p)).map(|_| acc))
            .await
            .map_err(|_| Status::internal("the report was interrupted"))?
            .map_err(status)
    }
}

/// A month in reports: a twelfth of a year of 365.25 days.
const MONTH_SECS: i64 = (365 * 86_400 + 86_400 / 4) / 12;

/// Returns a list limit: `raw`, or `default` when 0; at most 1,000.
fn limit(field: &str, raw: u32, default: usize) -> Result<usize, Status> {
    match raw {
        0 => Ok(default),
        n @ 1..=1000 => Ok(n as usize),
        n => Err(invalid(field, format!("at most 1000, not {n}"))),
    }
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

fn enum_field<E: TryFrom<i32>>(field: &str, raw: i32) -> Result<E, Status> {
    E::try_from(raw).map_err(|_| invalid(field, format!("unknown value {raw}")))
}

/// Returns the filter and order of a list request.
fn list_query(r: &v1::ListCustomersRequest) -> Result<(Filter, Order), Status> {
    let filter = Filter {
        stage: stage_from_proto(enum_field("stage", r.stage)?),
        risk_level: risk_level_from_proto(enum_field("risk_level", r.risk_level)?),
        min_risk_level: risk_level_from_proto(enum_field("min_risk_level", r.min_risk_level)?),
        tier: tier_from_proto(enum_field("value_tier", r.value_tier)?),
        divest: r.divest,
    };
    let order = match enum_field::<v1::CustomerOrder>("order_by", r.order_by)? {
        v1::CustomerOrder::Unspecified | v1::CustomerOrder::ValueAtRisk => Order::ValueAtRisk,
        v1::CustomerOrder::RiskScore => Order::RiskScore,
        v1::CustomerOrder::Margin => Order::Margin,
    };
    Ok((filter, order))
}

/// Fingerprint of a list query, so a token is only accepted with the query it came from.
fn fingerprint(filter: &Filter, order: Order) -> [u8; 8] {
    xxhash_rust::xxh3::xxh3_64(format!("{filter:?}/{order:?}").as_bytes()).to_be_bytes()
}

/// Encodes a page token: version, query fingerprint, the last index key.
fn encode_token(filter: &Filter, order: Order, after: &[u8]) -> String {
    let mut raw = vec![TOKEN_VERSION];
    raw.extend_from_slice(&fingerprint(filter, order));
    raw.extend_from_slice(after);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Returns the index key a page token resumes after.
fn decode_token(token: &str, filter: &Filter, order: Order) -> Result<Vec<u8>, Status> {
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid("page_token", "not a token this service issued"))?;
    match raw.split_first() {
        Some((&TOKEN_VERSION, rest))
            if rest.len() > 8 && rest[..8] == fingerprint(filter, order) =>
        {
            Ok(rest[8..].to_vec())
        }
        Some((&TOKEN_VERSION, _)) => Err(invalid(
            "page_token",
            "issued for other filters or another order; repeat the first request's filters and order_by",
        )),
        _ => Err(invalid("page_token", "not a token this service issued")),
    }
}

/// Which changes a watcher asked for.
#[derive(Debug, Clone)]
struct ChangeFilter {
    kind: v1::ChangeKind,
    min_level: Option<churnwatch_core::RiskLevel>,
    customers: std::collections::HashSet<String>,
}

impl ChangeFilter {
    fn matches(&self, c: &Change) -> bool {
        let kind = match self.kind {
            v1::ChangeKind::Unspecified => true,
            v1::ChangeKind::Risk => c.risk.0 != c.risk.1,
            v1::ChangeKind::Stage => c.stage.0 != c.stage.1,
        };
        kind && self
            .min_level
            .is_none_or(|m| c.risk.0 >= m || c.risk.1 >= m)
            && (self.customers.is_empty() || self.customers.contains(&c.customer_id))
    }
}

fn encode_position(epoch: u64, seq: u64) -> String {
    let mut raw = epoch.to_be_bytes().to_vec();
    raw.extend_from_slice(&seq.to_be_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_position(p: &str) -> Result<(u64, u64), Status> {
    let raw = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .filter(|r| r.len() == 16)
        .ok_or_else(|| invalid("after_position", "not a position this service gave"))?;
    let word = |i: usize| u64::from_be_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
    Ok((word(0), word(8)))
}

fn change_to_proto(epoch: u64, c: &Change) -> v1::WatchRiskChangesResponse {
    use churnwatch_proto::{risk_level_to_proto, stage_to_proto, timestamp};
    v1::WatchRiskChangesResponse {
        change: Some(v1::RiskChange {
            position: encode_position(epoch, c.seq),
            customer_id: c.customer_id.clone(),
            at: Some(timestamp(c.at)),
            previous_level: risk_level_to_proto(c.risk.0) as i32,
            level: risk_level_to_proto(c.risk.1) as i32,
            previous_stage: stage_to_proto(c.stage.0) as i32,
            stage: stage_to_proto(c.stage.1) as i32,
            risk_score: c.risk_score,
            value_at_risk_minor: c.value_at_risk,
            reasons: c
                .reasons
                .iter()
                .map(churnwatch_proto::reason_to_proto)
                .collect(),
        }),
    }
}

/// Changes read from the log per step of a watch.
const WATCH_CHUNK: usize = 256;

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<v1::WatchRiskChangesResponse, Status>> + Send + 'static>>;

type ExportStream =
    Pin<Box<dyn Stream<Item = Result<v1::ExportCustomersResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl CustomerQuery for QueryService {
    async fn get_customer(
        &self,
        request: Request<v1::GetCustomerRequest>,
    ) -> Result<Response<v1::GetCustomerResponse>, Status> {
        let id = request.into_inner().customer_id;
        if id.is_empty() {
            return Err(invalid("customer_id", "must not be empty"));
        }
        match self.view.get(&id).map_err(status)? {
            Some(p) => Ok(Response::new(v1::GetCustomerResponse {
                profile: Some(profile_to_proto(&p)),
            })),
            None => Err(Status::not_found(format!("no customer with id {id:?}"))),
        }
    }

    async fn batch_get_customers(
        &self,
        request: Request<v1::BatchGetCustomersRequest>,
    ) -> Result<Response<v1::BatchGetCustomersResponse>, Status> {
        let ids = request.into_inner().customer_ids;
        if ids.is_empty() || ids.len() > MAX_BATCH_IDS {
            return Err(invalid(
                "customer_ids",
                format!("give 1 to {MAX_BATCH_IDS} ids, not {}", ids.len()),
            ));
        }
        if let Some(i) = ids.iter().position(String::is_empty) {
            return Err(invalid(&format!("customer_ids[{i}]"), "must not be empty"));
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = v1::BatchGetCustomersResponse::default();
        for id in ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            match self.view.get(&id).map_err(status)? {
                Some(p) => out.profiles.push(profile_to_proto(&p)),
                None => out.not_found.push(id),
            }
        }
        Ok(Response::new(out))
    }

    async fn list_customers(
        &self,
        request: Request<v1::ListCustomersRequest>,
    ) -> Result<Response<v1::ListCustomersResponse>, Status> {
        let r = request.into_inner();
        let (filter, order) = list_query(&r)?;
        let size = match r.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(invalid(
                    "page_size",
                    format!("at most {MAX_PAGE_SIZE}, not {n}"),
                ));
            }
            n => n,
        };
        let after = match r.page_token.as_str() {
            "" => None,
            t => Some(decode_token(t, &filter, order)?),
        };
        let page = self
            .view
            .list(&filter, order, size as usize, after.as_deref())
            .map_err(status)?;
        Ok(Response::new(v1::ListCustomersResponse {
            customers: page.profiles.iter().map(profile_to_proto).collect(),
            next_page_token: page
                .next_after
                .map(|k| encode_token(&filter, order, &k))
                .unwrap_or_default(),
        }))
    }

    async fn get_stage_summary(
        &self,
        request: Request<v1::GetStageSummaryRequest>,
    ) -> Result<Response<v1::GetStageSummaryResponse>, Status> {
        let r = request.into_inner();
        let window = self.window(r.as_of.as_ref(), r.months)?;
        let report = self
            .report(StageAccumulator::new(window), StageAccumulator::add)
            .await?
            .finish();
        Ok(Response::new(stage_report_to_proto(&report)))
    }

    async fn get_retention_report(
        &self,
        request: Request<v1::GetRetentionReportRequest>,
    ) -> Result<Response<v1::GetRetentionReportResponse>, Status> {
        let r = request.into_inner();
        let window = self.window(r.as_of.as_ref(), r.months)?;
        let report = self
            .report(RetentionAccumulator::new(window), RetentionAccumulator::add)
            .await?
            .finish();
        Ok(Response::new(retention_report_to_proto(&report)))
    }

    async fn get_profitability_report(
        &self,
        request: Request<v1::GetProfitabilityReportRequest>,
    ) -> Result<Response<v1::GetProfitabilityReportResponse>, Status> {
        let r = request.into_inner();
        let divest_limit = limit("divest_limit", r.divest_limit, 20)?;
        let trait_limit = limit("trait_limit", r.trait_limit, 10)?;
        let report = self
            .report(
                ProfitabilityAccumulator::new(divest_limit),
                ProfitabilityAccumulator::add,
            )
            .await?
            .finish();
        Ok(Response::new(profitability_report_to_proto(
            &report,
            trait_limit,
        )))
    }

    async fn get_campaign_report(
        &self,
        request: Request<v1::GetCampaignReportRequest>,
    ) -> Result<Response<v1::GetCampaignReportResponse>, Status> {
        let r = request.into_inner();
        let days = match r.follow_up_days {
            0 => 90,
            d @ 1..=365 => d,
            d => return Err(invalid("follow_up_days", format!("1 to 365, not {d}"))),
        };
        let as_of = self.as_of(r.as_of.as_ref())?;
        let report = self
            .report(
                CampaignAccumulator::new(i64::from(days) * 86_400, as_of),
                CampaignAccumulator::add,
            )
            .await?
            .finish();
        Ok(Response::new(campaign_report_to_proto(&report)))
    }

    type WatchRiskChangesStream = WatchStream;

    async fn watch_risk_changes(
        &self,
        request: Request<v1::WatchRiskChangesRequest>,
    ) -> Result<Response<Self::WatchRiskChangesStream>, Status> {
        let r = request.into_inner();
        if r.customer_ids.len() > MAX_BATCH_IDS {
            return Err(invalid(
                "customer_ids",
                format!("at most {MAX_BATCH_IDS}, not {}", r.customer_ids.len()),
            ));
        }
        let filter = ChangeFilter {
            kind: enum_field("kind", r.kind)?,
            min_level: risk_level_from_proto(enum_field("min_risk_level", r.min_risk_level)?),
            customers: r.customer_ids.into_iter().collect(),
        };
        let view = self.view.clone();
        let epoch = view.epoch();
        // Subscribe before reading, so no change between the read and the wait is missed.
        let mut notify = view.subscribe();
        let start = if r.after_position.is_empty() {
            if r.from_oldest {
                match view.resume(epoch, 0).map_err(status)? {
                    ChangeStart::Expired { oldest } => oldest,
                    _ => 0,
                }
            } else {
                view.next_change()
            }
        } else {
            let (e, seq) = decode_position(&r.after_position)?;
            match view.resume(e, seq + 1).map_err(status)? {
                ChangeStart::At(seq) => seq,
                ChangeStart::OtherEpoch => {
                    return Err(Status::failed_precondition(
                        "after_position: the view was rebuilt since this position was given; watch again without a position",
                    ));
                }
                ChangeStart::Expired { oldest } => {
                    return Err(Status::out_of_range(format!(
                        "after_position: the changes after it are no longer kept (the oldest kept is {} changes later); watch again with from_oldest or without a position",
                        oldest - seq
                    )));
                }
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut next = start;
            loop {
                notify.borrow_and_update();
                let chunk = match view.changes(next, WATCH_CHUNK) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                if chunk.first().is_some_and(|c| c.seq > next) {
                    // The log was trimmed past this watcher while it was slow.
                    let _ = tx
                        .send(Err(Status::out_of_range(
                            "the watcher fell behind the changes the service keeps; resume with from_oldest",
                        )))
                        .await;
                    return;
                }
                if chunk.is_empty() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tx.closed() => return,
                        changed = notify.changed() => if changed.is_err() { return },
                    }
                    continue;
                }
                for c in &chunk {
                    next = c.seq + 1;
                    if filter.matches(c) && tx.send(Ok(change_to_proto(epoch, c))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type ExportCustomersStream = ExportStream;

    async fn export_customers(
        &self,
        _request: Request<v1::ExportCustomersRequest>,
    ) -> Result<Response<Self::ExportCustomersStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let view = self.view.clone();
        // Pages are read as the client takes them (the channel holds four), so a slow client
        // holds back the reading instead of filling memory.
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            loop {
                let chunk = match view.export_page(after.as_deref(), EXPORT_CHUNK) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                let Some(last) = chunk.last() else { return };
                after = Some(last.customer_id.clone());
                let message = v1::ExportCustomersResponse {
                    profiles: chunk.iter().map(profile_to_proto).collect(),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_is_refused_with_other_filters_and_garbage_is_refused() {
        let f = Filter::default();
        let t = encode_token(&f, Order::Margin, b"mkey");
        assert_eq!(decode_token(&t, &f, Order::Margin).unwrap(), b"mkey");
        let err = decode_token(&t, &f, Order::RiskScore).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with("page_token:"),
            "{}",
            err.message()
        );
        let err = decode_token("%%%", &f, Order::Margin).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
