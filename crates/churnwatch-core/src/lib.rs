//! The pure domain core of churnwatch: it parses input events, folds them into bounded
//! per-customer state, and evaluates a customer (lifecycle stage, churn risk with reasons,
//! BTYD predictions, profitability) at a given time. It performs no I/O and reads no clock.

pub mod event;
pub mod money;
pub mod time;
