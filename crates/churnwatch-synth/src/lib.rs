//! churnwatch-synth generates a deterministic synthetic e-commerce event stream together with the
//! ground truth behind it. Every customer is drawn from a fixed set of archetypes (one-time buyers,
//! regulars, decliners, category droppers, silent churners, reactivators, unprofitable customers and
//! prospects), simulated on its own seeded random stream, and turned into the JSON input events of
//! DESIGN.md §4 in time order, optionally salted with malformed lines and redeliveries. The truth
//! (archetype, churn and reactivation times, dropped categories, retention campaigns and their real
//! effect) is kept beside the events so that tests, benchmarks and the `eval` command can measure
//! how well churnwatch recovers it. The crate does no I/O of its own beyond writing to the
//! `std::io::Write` it is handed.
//!
//! ```
//! use churnwatch_synth::{SynthConfig, generate};
//!
//! let config = SynthConfig { customers: 50, months: 6, ..SynthConfig::default() };
//! let dataset = generate(&config).unwrap();
//! let mut jsonl = Vec::new();
//! dataset.write_jsonl(&mut jsonl).unwrap();
//! let mut truth = Vec::new();
//! dataset.write_truth_csv(&mut truth).unwrap();
//! assert_eq!(jsonl.iter().filter(|b| **b == b'\n').count(), dataset.len());
//! ```

mod config;
mod dataset;
mod error;
mod format;
mod record;
mod render;
mod sim;
mod truth;
mod vocab;

pub use config::{BgNbdProcess, MAX_CUSTOMERS, MAX_MONTHS, Process, SynthConfig};
pub use dataset::{Dataset, DatasetStats, GeneratedEvent, LineKind, generate};
pub use error::{ConfigProblem, Error, Result};
pub use truth::{CampaignEffect, TRUTH_CSV_HEADER, TruthRecord, read_truth_csv};
pub use vocab::{
    ARCHETYPE_SHARES, AT_RISK_DELAY_DAYS, AT_RISK_TARGET_PROBABILITY, Archetype,
    CAMPAIGN_RESUME_DELAY_DAYS, CAMPAIGNS, CURRENCY_SHARES, Campaign, Category, Currency,
    DUPLICATE_MAX_DELAY_SECS, EventType, FX_RATES_TO_USD, MISSING_SIGNUP_PROBABILITY,
    MalformedKind, NEWSLETTER_BLAST, OrderChannel, RefundReason, SKUS_PER_CATEGORY, SignupSource,
    SupportChannel, TARGET_SILENCE_GAPS, WINBACK_CALL,
};
