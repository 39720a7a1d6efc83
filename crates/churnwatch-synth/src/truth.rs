//! The ground truth per customer and its CSV form.

use std::io::{Read, Write};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};
use crate::format::rfc3339;
use crate::vocab::{Archetype, CAMPAIGNS, Campaign, Category};

/// The header row of the truth CSV.
pub const TRUTH_CSV_HEADER: [&str; 11] = [
    "customer_id",
    "archetype",
    "signup_at",
    "churned_at",
    "reactivated_at",
    "dropped_category",
    "dropped_at",
    "campaign",
    "campaign_at",
    "campaign_effect",
    "order_rate_per_day",
];

/// Columns of truth files written before `order_rate_per_day` existed; still read.
const TRUTH_CSV_HEADER_V1: usize = 10;

/// What a retention campaign really did to the customer it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CampaignEffect {
    /// The campaign made a churned customer order again; without it they would not have.
    Resumed,
    /// The campaign changed nothing (a reactivator who returns does so on its own schedule).
    None,
}

impl CampaignEffect {
    /// Returns the name used in the truth CSV (`resumed` or `none`).
    pub const fn as_str(self) -> &'static str {
        match self {
            CampaignEffect::Resumed => "resumed",
            CampaignEffect::None => "none",
        }
    }

    /// Returns the effect with the given name, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "resumed" => Some(CampaignEffect::Resumed),
            "none" => Some(CampaignEffect::None),
            _ => None,
        }
    }
}

/// What really happened to one customer. All times are event times within the period.
///
/// - `signup_at`: the time of the `customer_signup` event; `None` for the few customers
///   generated without one (see [`crate::MISSING_SIGNUP_PROBABILITY`]).
/// - `churned_at`: for churners (decliner, silent churner, reactivator) the `occurred_at` of the
///   last order before they stopped ordering — the moment they churned, which an observer can
///   only recognise later. `None` for every other archetype (a one-time buyer is not labelled a
///   churner).
/// - `reactivated_at`: the `occurred_at` of the first order after the silence, for reactivators
///   and for churners brought back by a campaign; `None` if they never came back within the period.
///   No order lies strictly between `churned_at` and `reactivated_at` (or the end of the period).
/// - `dropped_category` / `dropped_at`: for category droppers, the category they stopped buying
///   and the `occurred_at` of the last order containing it (later orders exist and never contain it).
/// - `campaign` / `campaign_at` / `campaign_effect`: the retention campaign that reached the
///   customer, the time of its `retention_action` event, and what it really did.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthRecord {
    /// The customer id, e.g. `c000123`.
    pub customer_id: String,
    /// The behaviour the customer was generated with.
    pub archetype: Archetype,
    /// When the customer signed up.
    pub signup_at: Option<OffsetDateTime>,
    /// When the customer churned: the time of their last order before stopping.
    pub churned_at: Option<OffsetDateTime>,
    /// When the customer came back: the time of their first order after the silence.
    pub reactivated_at: Option<OffsetDateTime>,
    /// The category a category dropper stopped buying.
    pub dropped_category: Option<Category>,
    /// The time of the last order containing the dropped category.
    pub dropped_at: Option<OffsetDateTime>,
    /// The campaign that reached the customer.
    pub campaign: Option<Campaign>,
    /// The time of the campaign's `retention_action` event.
    pub campaign_at: Option<OffsetDateTime>,
    /// What the campaign really did.
    pub campaign_effect: Option<CampaignEffect>,
    /// The customer's order rate while active (orders per day): 0 for a one-time buyer, the
    /// Poisson rate λ under the BG/NBD process, the inverse of the usual gap for the other
    /// buying archetypes; `None` for prospects and truth files that predate it. With
    /// `churned_at` it tells the true probability of no order in a horizon.
    pub order_rate_per_day: Option<f64>,
}

impl TruthRecord {
    fn csv_row(&self) -> [String; 11] {
        let time = |t: Option<OffsetDateTime>| t.map(rfc3339).unwrap_or_default();
        [
            self.customer_id.clone(),
            self.archetype.as_str().to_owned(),
            time(self.signup_at),
            time(self.churned_at),
            time(self.reactivated_at),
            self.dropped_category
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            time(self.dropped_at),
            self.campaign.map(|c| c.name.to_owned()).unwrap_or_default(),
            time(self.campaign_at),
            self.campaign_effect
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
            self.order_rate_per_day
                .map(|r| r.to_string())
                .unwrap_or_default(),
        ]
    }
}

/// Writes `records` as CSV with [`TRUTH_CSV_HEADER`]; empty cells mean "not applicable".
pub(crate) fn write_truth_csv<W: Write>(records: &[TruthRecord], w: W) -> Result<()> {
    let mut writer = csv::Writer::from_writer(w);
    writer.write_record(TRUTH_CSV_HEADER)?;
    for record in records {
        writer.write_record(record.csv_row())?;
    }
    writer.flush()?;
    Ok(())
}

/// Reads a truth CSV written by [`crate::Dataset::write_truth_csv`].
pub fn read_truth_csv<R: Read>(r: R) -> Result<Vec<TruthRecord>> {
    let mut reader = csv::Reader::from_reader(r);
    let header = reader.headers()?.clone();
    if header.iter().ne(TRUTH_CSV_HEADER)
        && header
            .iter()
            .ne(TRUTH_CSV_HEADER[..TRUTH_CSV_HEADER_V1].iter().copied())
    {
        return Err(Error::BadTruth {
            line: 1,
            message: format!("expected header {}", TRUTH_CSV_HEADER.join(",")),
        });
    }
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row?;
        let line = row.position().map_or(0, |p| p.line());
        let bad = |message: String| Error::BadTruth { line, message };
        let cell = |i: usize| row.get(i).unwrap_or("");
        let time = |i: usize| -> Result<Option<OffsetDateTime>> {
            let text = cell(i);
            if text.is_empty() {
                return Ok(None);
            }
            OffsetDateTime::parse(text, &Rfc3339)
                .map(Some)
                .map_err(|e| {
                    bad(format!(
                        "{} is not an RFC 3339 time: {e}",
                        TRUTH_CSV_HEADER[i]
                    ))
                })
        };
        let optional = |i: usize| Some(cell(i)).filter(|s| !s.is_empty());
        let unknown = |i: usize| bad(format!("unknown {} `{}`", TRUTH_CSV_HEADER[i], cell(i)));
        out.push(TruthRecord {
            customer_id: cell(0).to_owned(),
            archetype: Archetype::from_name(cell(1)).ok_or_else(|| unknown(1))?,
            signup_at: time(2)?,
            churned_at: time(3)?,
            reactivated_at: time(4)?,
            dropped_category: optional(5)
                .map(|s| Category::from_name(s).ok_or_else(|| unknown(5)))
                .transpose()?,
            dropped_at: time(6)?,
            campaign: optional(7)
                .map(|s| {
                    CAMPAIGNS
                        .into_iter()
                        .find(|c| c.name == s)
                        .ok_or_else(|| unknown(7))
                })
                .transpose()?,
            campaign_at: time(8)?,
            campaign_effect: optional(9)
                .map(|s| CampaignEffect::from_name(s).ok_or_else(|| unknown(9)))
                .transpose()?,
            order_rate_per_day: optional(10)
                .map(|s| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r >= 0.0)
                        .ok_or_else(|| bad(format!("order_rate_per_day `{s}` is not a rate")))
                })
                .transpose()?,
        });
    }
    Ok(out)
}
