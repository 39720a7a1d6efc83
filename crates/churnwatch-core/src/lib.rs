//! The pure domain core of churnwatch: it parses input events, folds them into bounded
//! per-customer state, and evaluates a customer (lifecycle stage, churn risk with reasons,
//! BTYD predictions, profitability) at a given time. It performs no I/O and reads no clock:
//! every "now" is a parameter, so replays and live runs give the same answers.

pub mod assess;
pub mod btyd;
pub mod campaign;
pub mod churn;
pub mod config;
pub mod engine;
pub mod event;
pub mod money;
pub mod output;
pub mod population;
pub mod profit;
pub mod quality;
pub mod replay;
pub mod report;
pub mod risk;
pub mod signals;
pub mod stage;
pub mod state;
pub mod time;

pub use assess::{
    Assessment, Changes, Model, ModelParams, assess, evaluate, next_evaluation_at, record,
};
pub use config::Thresholds;
pub use event::{Event, EventKind, ParseConfig, RejectCode, Rejection, parse_event};
pub use risk::RiskLevel;
pub use stage::Stage;
pub use state::{Applied, CustomerState, apply};
pub use time::Timestamp;
