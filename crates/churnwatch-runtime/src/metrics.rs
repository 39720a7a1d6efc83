//! Helpers for services that expose counters they already keep (atomics shared with their
//! summaries) as Prometheus metrics: a service implements
//! [`prometheus_client::collector::Collector`] for its stats and writes each figure at scrape
//! time with these functions, so no figure is counted twice.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Writes a counter (`_total` is appended by the encoder).
pub fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes a counter with one label, one series per value.
pub fn counter_by(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (String, u64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (v, n) in values {
        let labels = [(label, v)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a gauge.
pub fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: f64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes a gauge with one label, one series per value.
pub fn gauge_by(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (String, f64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (v, x) in values {
        let labels = [(label, v)];
        ConstGauge::new(x).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a histogram the service observes into.
pub fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &prometheus_client::metrics::histogram::Histogram,
) -> fmt::Result {
    h.encode(enc.encode_descriptor(name, help, None, h.metric_type())?)
}

/// Returns a histogram of durations in seconds, 1 ms to about 16 s.
pub fn seconds_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(seconds_buckets())
}

/// Returns a histogram of batch sizes in messages, 1 to about 32,000.
pub fn messages_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(
        prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 16),
    )
}

/// Returns histogram buckets for durations in seconds, from 1 ms to about 16 s.
pub fn seconds_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)
}

#[cfg(test)]
mod tests {
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
            counter(&mut enc, "churnwatch_demo_events", "Events.", 7)?;
            counter_by(
                &mut enc,
                "churnwatch_demo_rejected",
                "Rejections.",
                "reason",
                [
                    ("malformed_json".to_owned(), 2),
                    ("too_large".to_owned(), 1),
                ],
            )?;
            gauge(&mut enc, "churnwatch_demo_lag", "Lag.", 3.0)?;
            gauge_by(
                &mut enc,
                "churnwatch_demo_customers",
                "Customers.",
                "stage",
                [("core".to_owned(), 5.0)],
            )
        }
    }

    #[test]
    fn collected_figures_are_written_in_the_text_format() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE churnwatch_demo_events counter",
            "churnwatch_demo_events_total 7",
            "churnwatch_demo_rejected_total{reason=\"malformed_json\"} 2",
            "churnwatch_demo_rejected_total{reason=\"too_large\"} 1",
            "churnwatch_demo_lag 3.0",
            "churnwatch_demo_customers{stage=\"core\"} 5.0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
