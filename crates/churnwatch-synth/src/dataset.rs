//! Generation of a whole data set and access to its time-ordered lines and truth.

use std::fmt;
use std::io::Write;

use rand::RngExt;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::config::SynthConfig;
use crate::error::Result;
use crate::format::{customer_id, id_width};
use crate::record::{Body, Line, Record};
use crate::render::{Context, applicable_kinds, event_type, render};
use crate::sim::{Draft, NOISE_STREAM, customer_rng, simulate};
use crate::truth::{TruthRecord, write_truth_csv};
use crate::vocab::{CAMPAIGNS, Currency, DUPLICATE_MAX_DELAY_SECS, EventType, MalformedKind};

/// Counts describing a generated data set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DatasetStats {
    /// Number of customers.
    pub customers: u64,
    /// Number of real, distinct events (what a perfect consumer would accept once each).
    pub events: u64,
    /// Number of real `order` events.
    pub orders: u64,
    /// Number of injected malformed lines.
    pub malformed_lines: u64,
    /// Number of redelivered duplicate lines.
    pub duplicate_lines: u64,
    /// Number of lines in the output: events + malformed lines + duplicate lines.
    pub lines: u64,
    /// Malformed lines per kind, in [`MalformedKind::ALL`] order.
    pub malformed_by_kind: [u64; 6],
}

/// A generated data set: compact records of every output line in emission order, and the truth.
///
/// Strings are produced only when a line is rendered, so a data set costs 64 bytes per line plus
/// about 100 bytes per customer.
pub struct Dataset {
    config: SynthConfig,
    start: OffsetDateTime,
    end: OffsetDateTime,
    id_width: usize,
    currencies: Vec<Currency>,
    records: Vec<Record>,
    truth: Vec<TruthRecord>,
    stats: DatasetStats,
}

/// Generates the data set described by `config`, after validating it.
///
/// Customers are simulated one after the other, each on its own random stream, and all lines
/// are then sorted by emission time (ties: customer index, event number, original before its
/// malformed twin).
pub fn generate(config: &SynthConfig) -> Result<Dataset> {
    config.validate()?;
    let start = config.start_time();
    let end = config.end_time().unwrap_or(start);
    let period = u32::try_from((end - start).whole_seconds()).unwrap_or(u32::MAX);
    let customers = u32::try_from(config.customers).unwrap_or(u32::MAX);
    let id_width = id_width(config.customers);

    let mut records: Vec<Record> = Vec::new();
    let mut truth = Vec::with_capacity(customers as usize);
    let mut currencies = Vec::with_capacity(customers as usize);
    let mut stats = DatasetStats {
        customers: config.customers,
        ..DatasetStats::default()
    };
    let mut drafts: Vec<Draft> = Vec::new();
    let at = |t: Option<u32>| t.map(|t| start + Duration::seconds(i64::from(t)));

    for customer in 0..customers {
        let story = simulate(config.seed, customer, period, config.process, &mut drafts);
        currencies.push(story.currency);
        let campaign = story
            .campaign
            .map(|(c, t, e)| (CAMPAIGNS[usize::from(c)], t, e));
        truth.push(TruthRecord {
            customer_id: customer_id(customer, id_width),
            archetype: story.archetype,
            signup_at: at(story.signup),
            churned_at: at(story.churned),
            reactivated_at: at(story.reactivated),
            dropped_category: story.dropped.map(|(c, _)| c),
            dropped_at: at(story.dropped.map(|(_, t)| t)),
            order_rate_per_day: story.rate_per_day,
            campaign: campaign.map(|(c, _, _)| c),
            campaign_at: at(campaign.map(|(_, t, _)| t)),
            campaign_effect: campaign.map(|(_, _, e)| e),
        });

        let mut noise = customer_rng(config.seed, customer, NOISE_STREAM);
        for (i, draft) in drafts.iter().enumerate() {
            let event = Record {
                emitted: draft.t,
                customer,
                seq: i as u32 + 1,
                line: Line::Event,
                malformed: 0,
                delay: 0,
                body: draft.body,
            };
            records.push(event);
            stats.events += 1;
            stats.orders += u64::from(matches!(draft.body, Body::Order(_)));
            // Every draw is made for every event, so a lower rate yields a subset of the lines a
            // higher rate yields, and the noise never shifts between settings.
            let malformed_draw: f64 = noise.random();
            let kind_draw: f64 = noise.random();
            let variant: u8 = noise.random_range(0..16);
            let duplicate_draw: f64 = noise.random();
            let delay = noise.random_range(1..=DUPLICATE_MAX_DELAY_SECS);
            if malformed_draw < config.malformed_rate {
                let kinds = applicable_kinds(event_type(&draft.body));
                let kind = kinds[((kind_draw * kinds.len() as f64) as usize).min(kinds.len() - 1)];
                records.push(Record {
                    line: Line::Malformed,
                    malformed: kind.index() as u8 | (variant << 4),
                    ..event
                });
                stats.malformed_lines += 1;
                stats.malformed_by_kind[kind.index()] += 1;
            }
            if duplicate_draw < config.duplicate_rate {
                let emitted = draft
                    .t
                    .saturating_add(delay)
                    .min(period.saturating_sub(1))
                    .max(draft.t);
                records.push(Record {
                    emitted,
                    line: Line::Duplicate,
                    delay: (emitted - draft.t) as u16,
                    ..event
                });
                stats.duplicate_lines += 1;
            }
        }
        // Size the buffer once from a sample instead of letting it double its way up, which
        // matters at millions of customers.
        if customer == 1_999 && customers > 2_000 {
            let per_customer = records.len() as f64 / 2_000.0;
            let expected = (per_customer * f64::from(customers) * 1.05) as usize;
            records.reserve_exact(expected.saturating_sub(records.len()));
        }
    }
    records.sort_unstable_by_key(Record::sort_key);
    records.shrink_to_fit();
    stats.lines = records.len() as u64;
    Ok(Dataset {
        config: config.clone(),
        start,
        end,
        id_width,
        currencies,
        records,
        truth,
        stats,
    })
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("config", &self.config)
            .field("end", &self.end)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for GeneratedEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedEvent")
            .field("event_id", &self.event_id())
            .field("line_kind", &self.line_kind())
            .field("emitted_at", &self.emitted_at())
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// Returns the configuration the data set was generated from.
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    /// Returns the start of the simulated period.
    pub fn start(&self) -> OffsetDateTime {
        self.start
    }

    /// Returns the end of the simulated period (exclusive): start plus the configured months.
    /// Every event occurs before it.
    pub fn end(&self) -> OffsetDateTime {
        self.end
    }

    /// Returns the number of output lines (events, malformed lines and duplicates).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Returns whether there are no output lines at all.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Returns the counts of events, malformed lines and duplicates.
    pub fn stats(&self) -> &DatasetStats {
        &self.stats
    }

    /// Returns the truth, one record per customer in customer index order.
    pub fn truth(&self) -> &[TruthRecord] {
        &self.truth
    }

    /// Returns the currency customer `index` pays in, if the customer exists.
    pub fn currency(&self, index: u64) -> Option<Currency> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.currencies.get(i).copied())
    }

    /// Returns the id of customer `index` (`c` and the zero-padded index, at least 6 digits).
    pub fn customer_id(&self, index: u64) -> String {
        customer_id(u32::try_from(index).unwrap_or(u32::MAX), self.id_width)
    }

    /// Returns every output line in emission order.
    ///
    /// Emission times never decrease. A line's `occurred_at` equals its emission time except for
    /// duplicates, which are emitted up to [`DUPLICATE_MAX_DELAY_SECS`] after the original with
    /// the original's bytes (so their `occurred_at` lags the stream by that much at most).
    pub fn events(&self) -> impl ExactSizeIterator<Item = GeneratedEvent<'_>> + '_ {
        self.records.iter().map(move |record| GeneratedEvent {
            dataset: self,
            record,
        })
    }

    /// Writes every line as JSON Lines (one object and `\n` per line) in emission order.
    pub fn write_jsonl<W: Write>(&self, mut w: W) -> Result<()> {
        let ctx = self.context();
        let mut buf = Vec::with_capacity(1 << 16);
        for record in &self.records {
            render(&ctx, record, &mut buf);
            buf.push(b'\n');
            if buf.len() >= (1 << 16) - 1024 {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        w.write_all(&buf)?;
        w.flush()?;
        Ok(())
    }

    /// Writes the truth as CSV: a [`crate::TRUTH_CSV_HEADER`] row, then one row per customer.
    pub fn write_truth_csv<W: Write>(&self, w: W) -> Result<()> {
        write_truth_csv(&self.truth, w)
    }

    fn context(&self) -> Context<'_> {
        Context {
            start_unix: self.start.unix_timestamp(),
            id_width: self.id_width,
            currencies: &self.currencies,
        }
    }
}

/// What kind of line a [`GeneratedEvent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// A real event, emitted for the first time.
    Event,
    /// A redelivery of an earlier real event: the same bytes, the same `event_id`.
    Duplicate,
    /// An injected broken line (extra to the real events; its `event_id`, if present, starts
    /// with `m-` so it never collides with a real one).
    Malformed(MalformedKind),
}

/// One output line of a [`Dataset`], rendered on demand.
#[derive(Clone, Copy)]
pub struct GeneratedEvent<'a> {
    dataset: &'a Dataset,
    record: &'a Record,
}

impl GeneratedEvent<'_> {
    /// Returns the event's own time, as written in `occurred_at` (for a malformed line, the time
    /// of the event it was derived from, whatever its JSON says).
    pub fn occurred_at(&self) -> OffsetDateTime {
        self.dataset.start + Duration::seconds(i64::from(self.record.occurred()))
    }

    /// Returns when the line is emitted in the stream; non-decreasing across [`Dataset::events`].
    pub fn emitted_at(&self) -> OffsetDateTime {
        self.dataset.start + Duration::seconds(i64::from(self.record.emitted))
    }

    /// Returns the customer's index (0-based).
    pub fn customer_index(&self) -> u64 {
        u64::from(self.record.customer)
    }

    /// Returns the customer id, e.g. `c000123`.
    pub fn customer_id(&self) -> String {
        customer_id(self.record.customer, self.dataset.id_width)
    }

    /// Returns the Kafka message key for the `orders` topic: the customer id, so that one
    /// customer's lines (malformed ones included) land on one partition.
    pub fn key(&self) -> String {
        self.customer_id()
    }

    /// Returns the event id: `e-<customer>-<n>` with `n` the customer's 1-based event number
    /// (`m-<customer>-<n>` for a malformed line derived from event `n`).
    pub fn event_id(&self) -> String {
        let prefix = if self.record.line == Line::Malformed {
            'm'
        } else {
            'e'
        };
        format!("{prefix}-{}-{}", self.customer_id(), self.record.seq)
    }

    /// Returns the type of the event (for a malformed line, of the event it was derived from).
    pub fn event_type(&self) -> EventType {
        event_type(&self.record.body)
    }

    /// Returns whether this is a real event, a duplicate or a malformed line.
    pub fn line_kind(&self) -> LineKind {
        match self.record.malformed_kind() {
            Some((kind, _)) => LineKind::Malformed(kind),
            None if self.record.line == Line::Duplicate => LineKind::Duplicate,
            None => LineKind::Event,
        }
    }

    /// Returns whether this line is an injected malformed line.
    pub fn is_malformed(&self) -> bool {
        self.record.line == Line::Malformed
    }

    /// Returns whether this line is a redelivery of an earlier event.
    pub fn is_duplicate(&self) -> bool {
        self.record.line == Line::Duplicate
    }

    /// Appends the line's JSON object (no trailing newline) to `buf`.
    pub fn append_json(&self, buf: &mut Vec<u8>) {
        render(&self.dataset.context(), self.record, buf);
    }

    /// Returns the line's JSON object without a trailing newline, e.g. as a Kafka payload.
    pub fn to_json_line(&self) -> String {
        let mut buf = Vec::with_capacity(256);
        self.append_json(&mut buf);
        // Rendering emits ASCII only; a truncated malformed line is cut at a byte boundary of
        // ASCII text and so stays valid UTF-8.
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Writes the line's JSON object (no trailing newline) to `w`.
    pub fn write_json<W: Write + ?Sized>(&self, w: &mut W) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(256);
        self.append_json(&mut buf);
        w.write_all(&buf)
    }
}
