//! The churnwatch gRPC API: the only crate that generates code from `proto/churnwatch/v1`, and
//! the one place where domain types become their protobuf messages.

/// The generated messages, client and server of `churnwatch.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("churnwatch.v1");
}

/// The encoded file descriptor set of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/churnwatch_v1_descriptor.bin"));

mod convert;

pub use convert::{
    campaign_report_to_proto, profile_to_proto, profitability_report_to_proto, reason_to_proto,
    retention_report_to_proto, risk_level_from_proto, risk_level_to_proto, stage_from_proto,
    stage_report_to_proto, stage_to_proto, tier_from_proto, tier_to_proto, timestamp,
};

/// The well-known protobuf types (timestamps) the messages use.
pub use prost_types;
