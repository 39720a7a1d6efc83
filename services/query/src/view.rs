//! The query service's read-optimised view of the `customer-profiles` topic, in sled.
//!
//! One tree holds everything, so that a consumer batch's profiles, index entries, stage counts
//! and the offsets it reached land in one atomic sled batch: after a crash the view resumes
//! from offsets that match its contents exactly. Keys, by their first byte:
//!
//! - `p` customer → index header + the profile's JSON as published;
//! - `v` value at risk ↓, customer → facets; `r` risk score ↓; `m` margin ↓ (the three orders);
//! - `l` risk level, risk score ↓; `g` stage, value at risk ↓; `t` value tier, margin ↓;
//!   `d` margin ↓ of divest candidates only (filtered lists without a scan);
//! - `c` stage → customers in it; `k` risk level → customers at it; `o` partition → next offset to read; `a` the latest
//!   evaluation time of any profile (the "now" of reports);
//! - `x` sequence number → a risk-level or stage change seen between a customer's profiles
//!   (the log `WatchRiskChanges` streams and resumes from), `n` the next sequence number, `E`
//!   the view's epoch: a random number drawn when the view is created, so a position from
//!   before a rebuild is recognised as such.
//!
//! "↓" keys sort the highest value first. Every index entry's value holds the customer's
//! facets (stage, risk level, tier, divest), so filters that no prefix serves are applied
//! while scanning without reading the profile.

use std::collections::BTreeMap;
use std::path::Path;

use churnwatch_core::output::Profile;
use churnwatch_core::profit::ValueTier;
use churnwatch_core::{RiskLevel, Stage, Timestamp};

/// The view's layout version; another version's directory is refused.
pub const VIEW_VERSION: u32 = 2;

/// Changes kept in the log by default.
pub const DEFAULT_MAX_CHANGES: u64 = 1_000_000;

/// Errors of the view, each naming what to do.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// sled failed (disk, permissions, another process holding the directory).
    #[error("view at {path}: {source}")]
    Sled {
        /// The view directory.
        path: String,
        /// What sled said.
        #[source]
        source: sled::Error,
    },
    /// The directory holds another layout version.
    #[error(
        "view at {path} has layout version {found}, this build reads {expected}; empty the directory and the view is rebuilt from the profile topic"
    )]
    Version {
        /// The view directory.
        path: String,
        /// Version on disk.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// A stored record does not decode.
    #[error(
        "view at {path}: corrupt record for {key}: {message}; empty the directory to rebuild it"
    )]
    Corrupt {
        /// The view directory.
        path: String,
        /// The record.
        key: String,
        /// The decoder's complaint.
        message: String,
    },
}

/// The view's result type.
pub type Result<T> = std::result::Result<T, ViewError>;

const PROFILE: u8 = b'p';
const BY_VALUE_AT_RISK: u8 = b'v';
const BY_RISK_SCORE: u8 = b'r';
const BY_MARGIN: u8 = b'm';
const BY_LEVEL: u8 = b'l';
const BY_STAGE: u8 = b'g';
const BY_TIER: u8 = b't';
const DIVEST: u8 = b'd';
const STAGE_COUNT: u8 = b'c';
const LEVEL_COUNT: u8 = b'k';
const OFFSET: u8 = b'o';
const LATEST_ASSESSED: &[u8] = b"a";
const CHANGE: u8 = b'x';
const NEXT_CHANGE: &[u8] = b"n";
const EPOCH: &[u8] = b"E";
const VERSION_KEY: &[u8] = b"version";

/// A customer's facets: what filters look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facets {
    /// Lifecycle stage.
    pub stage: Stage,
    /// Risk level.
    pub risk_level: RiskLevel,
    /// Value tier.
    pub tier: ValueTier,
    /// Divest candidate.
    pub divest: bool,
}

/// What a list may be filtered by; `None` matches all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Stage.
    pub stage: Option<Stage>,
    /// Risk level.
    pub risk_level: Option<RiskLevel>,
    /// Lowest risk level.
    pub min_risk_level: Option<RiskLevel>,
    /// Value tier.
    pub tier: Option<ValueTier>,
    /// Divest flag.
    pub divest: Option<bool>,
}

impl Filter {
    /// Returns whether a customer with these facets matches.
    pub fn matches(&self, f: &Facets) -> bool {
        self.stage.is_none_or(|s| s == f.stage)
            && self.risk_level.is_none_or(|l| l == f.risk_level)
            && self.min_risk_level.is_none_or(|l| f.risk_level >= l)
            && self.tier.is_none_or(|t| t == f.tier)
            && self.divest.is_none_or(|d| d == f.divest)
    }
}

/// The order of a list, highest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Order {
    /// Value at risk.
    #[default]
    ValueAtRisk,
    /// Risk score.
    RiskScore,
    /// 12-month margin.
    Margin,
}

/// What a profile's index entries are computed from, stored before its JSON so an update can
/// remove the old entries without parsing the old profile.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Header {
    facets: Facets,
    version: u64,
    risk_score: f64,
    value_at_risk: i64,
    margin: i64,
}

const HEADER_LEN: usize = 4 + 8 + 8 + 8 + 8;

fn stage_byte(s: Stage) -> u8 {
    Stage::ALL
        .iter()
        .position(|x| *x == s)
        .expect("every stage is listed") as u8
}

fn level_byte(l: RiskLevel) -> u8 {
    match l {
        RiskLevel::Low => 0,
        RiskLevel::Medium => 1,
        RiskLevel::High => 2,
        RiskLevel::Critical => 3,
    }
}

fn tier_byte(t: ValueTier) -> u8 {
    match t {
        ValueTier::A => 0,
        ValueTier::B => 1,
        ValueTier::C => 2,
        ValueTier::D => 3,
    }
}

fn facets_bytes(f: &Facets) -> [u8; 4] {
    [
        stage_byte(f.stage),
        level_byte(f.risk_level),
        tier_byte(f.tier),
        u8::from(f.divest),
    ]
}

fn facets_from(b: &[u8]) -> Option<Facets> {
    let levels = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];
    let tiers = [ValueTier::A, ValueTier::B, ValueTier::C, ValueTier::D];
    Some(Facets {
        stage: *Stage::ALL.get(usize::from(*b.first()?))?,
        risk_level: *levels.get(usize::from(*b.get(1)?))?,
        tier: *tiers.get(usize::from(*b.get(2)?))?,
        divest: *b.get(3)? == 1,
    })
}

impl Header {
    fn of(p: &Profile) -> Self {
        Self {
            facets: Facets {
                stage: p.stage,
                risk_level: p.risk_level,
                tier: p.value_tier,
                divest: p.divest,
            },
            version: p.version,
            risk_score: p.risk_score,
            value_at_risk: p.value_at_risk,
            margin: p.margin_12m,
        }
    }

    fn encode(&self, json: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + json.len());
        out.extend_from_slice(&facets_bytes(&self.facets));
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.risk_score.to_be_bytes());
        out.extend_from_slice(&self.value_at_risk.to_be_bytes());
        out.extend_from_slice(&self.margin.to_be_bytes());
        out.extend_from_slice(json);
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let eight = |at: usize| -> Option<[u8; 8]> { b.get(at..at + 8)?.try_into().ok() };
        Some(Self {
            facets: facets_from(b.get(..4)?)?,
            version: u64::from_be_bytes(eight(4)?),
            risk_score: f64::from_be_bytes(eight(12)?),
            value_at_risk: i64::from_be_bytes(eight(20)?),
            margin: i64::from_be_bytes(eight(28)?),
        })
    }

    /// Returns every index key of the customer, with the value each holds.
    fn index_keys(&self, customer: &str) -> Vec<Vec<u8>> {
        let id = customer.as_bytes();
        let var = desc_i64(self.value_at_risk);
        let score = desc_f64(self.risk_score);
        let margin = desc_i64(self.margin);
        let f = &self.facets;
        let mut keys = vec![
            compose(&[&[BY_VALUE_AT_RISK], &var, id]),
            compose(&[&[BY_RISK_SCORE], &score, id]),
            compose(&[&[BY_MARGIN], &margin, id]),
            compose(&[&[BY_LEVEL, level_byte(f.risk_level)], &score, id]),
            compose(&[&[BY_STAGE, stage_byte(f.stage)], &var, id]),
            compose(&[&[BY_TIER, tier_byte(f.tier)], &margin, id]),
        ];
        if f.divest {
            keys.push(compose(&[&[DIVEST], &margin, id]));
        }
        keys
    }
}

fn compose(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// Encodes an integer so that byte order is descending numeric order.
fn desc_i64(v: i64) -> [u8; 8] {
    (!((v as u64) ^ (1 << 63))).to_be_bytes()
}

/// Encodes a float so that byte order is descending numeric order (NaN last).
fn desc_f64(v: f64) -> [u8; 8] {
    let v = if v.is_nan() { f64::NEG_INFINITY } else { v };
    let bits = v.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    (!ordered).to_be_bytes()
}

/// One profile as it arrives from the topic; `None` is a tombstone (the customer is deleted).
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    /// The message key: the customer id.
    pub customer_id: &'a str,
    /// The profile's JSON.
    pub json: Option<&'a [u8]>,
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Profiles written.
    pub written: u64,
    /// Profiles deleted by tombstones.
    pub deleted: u64,
    /// Profiles older than the stored one, ignored.
    pub stale: u64,
    /// Messages whose JSON is not a profile, skipped.
    pub invalid: u64,
}

/// A page of a list: the profiles (as JSON) and where the next page starts.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Profiles of this page, in order.
    pub profiles: Vec<Profile>,
    /// The key after which the next page starts; `None` on the last page.
    pub next_after: Option<Vec<u8>>,
}

/// The view: profiles, indexes, stage counts and the offsets they reflect.
#[derive(Debug, Clone)]
pub struct View {
    tree: sled::Tree,
    db: sled::Db,
    path: String,
    epoch: u64,
    max_changes: u64,
    /// The next change sequence number, published after every batch for live watchers.
    next_change: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

/// A risk-level or stage change, as kept in the view's change log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Its place in the log.
    pub seq: u64,
    /// The customer.
    pub customer_id: String,
    /// The evaluation time of the profile that showed it.
    pub at: Timestamp,
    /// The risk level before and after.
    pub risk: (RiskLevel, RiskLevel),
    /// The stage before and after.
    pub stage: (Stage, Stage),
    /// The risk score after.
    pub risk_score: f64,
    /// The value at risk after, minor units.
    pub value_at_risk: i64,
    /// The reasons after, strongest first.
    pub reasons: Vec<churnwatch_core::output::Reason>,
}

/// Where a watcher can start reading the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeStart {
    /// At this sequence number.
    At(u64),
    /// The position names another epoch: the view was rebuilt since.
    OtherEpoch,
    /// The position is older than the oldest change kept.
    Expired {
        /// The oldest sequence number kept.
        oldest: u64,
    },
}

impl View {
    /// Opens (creating if needed) the view in `dir`.
    ///
    /// # Errors
    ///
    /// [`ViewError::Sled`] when the directory cannot be opened, [`ViewError::Version`] when it
    /// holds another layout.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        let path = dir.display().to_string();
        let err = |source| ViewError::Sled {
            path: path.clone(),
            source,
        };
        let db = churnwatch_store::open_sled(
            sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .mode(sled::Mode::HighThroughput),
        )
        .map_err(err)?;
        let tree = db.open_tree("view").map_err(err)?;
        match db.get(VERSION_KEY).map_err(err)? {
            None => {
                db.insert(VERSION_KEY, &VIEW_VERSION.to_be_bytes())
                    .map_err(err)?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                if found != VIEW_VERSION {
                    return Err(ViewError::Version {
                        path,
                        found,
                        expected: VIEW_VERSION,
                    });
                }
            }
        }
        let epoch = match tree.get(EPOCH).map_err(err)? {
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| ViewError::Corrupt {
                    path: path.clone(),
                    key: "epoch".into(),
                    message: "not 8 bytes".into(),
                })?,
            None => {
                let seed = format!(
                    "{path}/{}/{:?}",
                    std::process::id(),
                    std::time::SystemTime::now()
                );
                let epoch = xxhash_rust::xxh3::xxh3_64(seed.as_bytes());
                tree.insert(EPOCH, &epoch.to_be_bytes()).map_err(err)?;
                epoch
            }
        };
        let next = tree
            .get(NEXT_CHANGE)
            .map_err(err)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(Self {
            tree,
            db,
            path,
            epoch,
            max_changes: DEFAULT_MAX_CHANGES,
            next_change: std::sync::Arc::new(tokio::sync::watch::channel(next).0),
        })
    }

    /// Keeps at most `n` changes in the log (the oldest go first).
    pub fn with_max_changes(mut self, n: u64) -> Self {
        self.max_changes = n.max(1);
        self
    }

    /// Returns the view's epoch: it changes only when the view is rebuilt from scratch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Returns a receiver of the next change sequence number, updated after every batch.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.next_change.subscribe()
    }

    /// Returns the next sequence number the log will give (the end of the log).
    pub fn next_change(&self) -> u64 {
        *self.next_change.borrow()
    }

    fn oldest_change(&self) -> Result<Option<u64>> {
        Ok(self
            .tree
            .scan_prefix([CHANGE])
            .next()
            .transpose()
            .map_err(|e| self.sled_err(e))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(&k[1..]).ok())
            .map(u64::from_be_bytes))
    }

    /// Returns where a watcher that last saw `position` (epoch, sequence number) resumes.
    pub fn resume(&self, epoch: u64, seq: u64) -> Result<ChangeStart> {
        if epoch != self.epoch {
            return Ok(ChangeStart::OtherEpoch);
        }
        let oldest = self.oldest_change()?.unwrap_or(self.next_change());
        Ok(if seq < oldest {
            ChangeStart::Expired { oldest }
        } else {
            ChangeStart::At(seq)
        })
    }

    /// Returns up to `limit` changes from sequence number `from` on.
    pub fn changes(&self, from: u64, limit: usize) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        for kv in self
            .tree
            .range(compose(&[&[CHANGE], &from.to_be_bytes()])..)
            .take(limit)
        {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            if k.first() != Some(&CHANGE) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(|e| self.corrupt("change log", e))?);
        }
        Ok(out)
    }

    fn sled_err(&self, source: sled::Error) -> ViewError {
        ViewError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, key: &str, message: impl ToString) -> ViewError {
        ViewError::Corrupt {
            path: self.path.clone(),
            key: key.to_owned(),
            message: message.to_string(),
        }
    }

    /// Returns the next offset to read of each partition the view has read from.
    pub fn offsets(&self) -> Result<BTreeMap<i32, i64>> {
        let mut out = BTreeMap::new();
        for kv in self.tree.scan_prefix([OFFSET]) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let p = k
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_be_bytes);
            let o = v.as_ref().try_into().ok().map(i64::from_be_bytes);
            match (p, o) {
                (Some(p), Some(o)) => {
                    out.insert(p, o);
                }
                _ => return Err(self.corrupt("offsets", "not 4 + 8 bytes")),
            }
        }
        Ok(out)
    }

    /// Applies one consumer batch atomically: every message of `messages` with the partition
    /// and offset it came from. Offsets already reflected are skipped, so a redelivered batch
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// Whatever sled reports, or a stored record that does not decode.
    pub fn apply(&self, messages: &[(i32, i64, Incoming<'_>)]) -> Result<Applied> {
        let offsets = self.offsets()?;
        let mut applied = Applied::default();
        let mut batch = sled::Batch::default();
        // The batch's own writes, seen by its later messages: customer → header now (None:
        // deleted).
        let mut pending: BTreeMap<String, Option<Header>> = BTreeMap::new();
        // When the profiles this batch wrote were assessed: what their stage moves came after.
        let mut pending_at: BTreeMap<String, Timestamp> = BTreeMap::new();
        // Count keys ([STAGE_COUNT, stage] or [LEVEL_COUNT, level]) → change in this batch.
        let mut counts: BTreeMap<[u8; 2], i64> = BTreeMap::new();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut latest = self.latest_assessed_at()?;
        let latest_before = latest;
        let first_seq = self.next_change();
        let mut seq = first_seq;
        for (partition, offset, m) in messages {
            if offsets.get(partition).is_some_and(|o| offset < o) {
                continue;
            }
            next.insert(*partition, offset + 1);
            let old = match pending.get(m.customer_id) {
                Some(h) => *h,
                None => self.header(m.customer_id)?,
            };
            let new = match m.json {
                None => None,
                Some(json) => match serde_json::from_slice::<Profile>(json) {
                    Ok(p) if p.customer_id == m.customer_id => {
                        latest = Some(latest.map_or(p.assessed_at, |l| l.max(p.assessed_at)));
                        Some((Header::of(&p), json, p))
                    }
                    Ok(_) | Err(_) => {
                        applied.invalid += 1;
                        continue;
                    }
                },
            };
            if let (Some(old), Some((new, _, _))) = (&old, &new)
                && new.version < old.version
            {
                applied.stale += 1;
                continue;
            }
            if let Some(old) = &old {
                for k in old.index_keys(m.customer_id) {
                    batch.remove(k);
                }
                *counts
                    .entry([STAGE_COUNT, stage_byte(old.facets.stage)])
                    .or_default() -= 1;
                *counts
                    .entry([LEVEL_COUNT, level_byte(old.facets.risk_level)])
                    .or_default() -= 1;
            }
            let profile_key = compose(&[&[PROFILE], m.customer_id.as_bytes()]);
            if let Some((header, _, p)) = &new {
                // A customer the view has not seen starts where scoring's states start.
                let (level, stage) = old.map_or((RiskLevel::Low, Stage::Prospect), |o| {
                    (o.facets.risk_level, o.facets.stage)
                });
                if (level, stage) != (header.facets.risk_level, header.facets.stage) {
                    let since = match (&old, pending_at.get(m.customer_id)) {
                        (None, _) => None,
                        (Some(_), Some(at)) => Some(*at),
                        (Some(o), None) if o.facets.stage != header.facets.stage => {
                            self.get(m.customer_id)?.map(|p| p.assessed_at)
                        }
                        (Some(_), None) => None,
                    };
                    for change in changes_between(p, level, stage, since) {
                        let change = Change { seq, ..change };
                        batch.insert(
                            compose(&[&[CHANGE], &seq.to_be_bytes()]),
                            serde_json::to_vec(&change).expect("a change serializes"),
                        );
                        seq += 1;
                    }
                }
            }
            match new {
                Some((header, json, p)) => {
                    let facets = facets_bytes(&header.facets);
                    for k in header.index_keys(m.customer_id) {
                        batch.insert(k, &facets);
                    }
                    batch.insert(profile_key, header.encode(json));
                    *counts
                        .entry([STAGE_COUNT, stage_byte(header.facets.stage)])
                        .or_default() += 1;
                    *counts
                        .entry([LEVEL_COUNT, level_byte(header.facets.risk_level)])
                        .or_default() += 1;
                    pending.insert(m.customer_id.to_owned(), Some(header));
                    pending_at.insert(m.customer_id.to_owned(), p.assessed_at);
                    applied.written += 1;
                }
                None => {
                    batch.remove(profile_key);
                    pending.insert(m.customer_id.to_owned(), None);
                    if old.is_some() {
                        applied.deleted += 1;
                    }
                }
            }
        }
        for (key, delta) in counts {
            if delta != 0 {
                let now = self.count_of(&key)? as i64 + delta;
                batch.insert(&key, &(now.max(0) as u64).to_be_bytes());
            }
        }
        if let Some(l) = latest.filter(|_| latest != latest_before) {
            batch.insert(LATEST_ASSESSED, &l.0.to_be_bytes());
        }
        if seq != first_seq {
            batch.insert(NEXT_CHANGE, &seq.to_be_bytes());
            // Keep the log bounded: drop the oldest beyond the limit.
            let keep_from = seq.saturating_sub(self.max_changes);
            for kv in self
                .tree
                .range(vec![CHANGE]..compose(&[&[CHANGE], &keep_from.to_be_bytes()]))
            {
                let (k, _) = kv.map_err(|e| self.sled_err(e))?;
                batch.remove(k);
            }
            // This batch's own changes past the limit (a later write in a batch wins).
            for old in first_seq..keep_from.min(seq) {
                batch.remove(compose(&[&[CHANGE], &old.to_be_bytes()]));
            }
        }
        for (partition, offset) in next {
            batch.insert(
                compose(&[&[OFFSET], &partition.to_be_bytes()]),
                &offset.to_be_bytes(),
            );
        }
        self.tree.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        if seq != first_seq {
            self.next_change.send_replace(seq);
        }
        Ok(applied)
    }

    fn count_of(&self, key: &[u8]) -> Result<u64> {
        Ok(self
            .tree
            .get(key)
            .map_err(|e| self.sled_err(e))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    fn raw_profile(&self, customer: &str) -> Result<Option<sled::IVec>> {
        self.tree
            .get(compose(&[&[PROFILE], customer.as_bytes()]))
            .map_err(|e| self.sled_err(e))
    }

    fn header(&self, customer: &str) -> Result<Option<Header>> {
        self.raw_profile(customer)?
            .map(|v| Header::decode(&v).ok_or_else(|| self.corrupt(customer, "short header")))
            .transpose()
    }

    fn decode_profile(&self, customer: &[u8], v: &[u8]) -> Result<Profile> {
        let json = v
            .get(HEADER_LEN..)
            .ok_or_else(|| self.corrupt(&String::from_utf8_lossy(customer), "short header"))?;
        serde_json::from_slice(json)
            .map_err(|e| self.corrupt(&String::from_utf8_lossy(customer), e))
    }

    /// Returns a customer's profile.
    pub fn get(&self, customer: &str) -> Result<Option<Profile>> {
        self.raw_profile(customer)?
            .map(|v| self.decode_profile(customer.as_bytes(), &v))
            .transpose()
    }

    /// Applies `profiles` as if read from `partition` at consecutive offsets from
    /// `first_offset` (for tests and benchmarks that fill a view without Kafka).
    ///
    /// # Errors
    ///
    /// As [`View::apply`].
    pub fn apply_profiles(
        &self,
        partition: i32,
        first_offset: i64,
        profiles: &[Profile],
    ) -> Result<Applied> {
        let json: Vec<Vec<u8>> = profiles
            .iter()
            .map(|p| serde_json::to_vec(p).expect("a profile serializes"))
            .collect();
        let messages: Vec<_> = profiles
            .iter()
            .zip(&json)
            .enumerate()
            .map(|(i, (p, j))| {
                (
                    partition,
                    first_offset + i as i64,
                    Incoming {
                        customer_id: &p.customer_id,
                        json: Some(j.as_slice()),
                    },
                )
            })
            .collect();
        self.apply(&messages)
    }

    /// Returns the latest evaluation time of any profile applied: the "now" of the data.
    pub fn latest_assessed_at(&self) -> Result<Option<Timestamp>> {
        let v = self
            .tree
            .get(LATEST_ASSESSED)
            .map_err(|e| self.sled_err(e))?;
        v.map(|b| {
            <[u8; 8]>::try_from(b.as_ref())
                .map(|b| Timestamp(i64::from_be_bytes(b)))
                .map_err(|_| self.corrupt("latest evaluation", "not 8 bytes"))
        })
        .transpose()
    }

    /// Calls `f` with every profile, in customer-id order; returns how many there were.
    pub fn scan(&self, mut f: impl FnMut(&Profile)) -> Result<u64> {
        let mut n = 0;
        for kv in self.tree.scan_prefix([PROFILE]) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            f(&self.decode_profile(&k[1..], &v)?);
            n += 1;
        }
        Ok(n)
    }

    /// Returns the customers in each stage, in lifecycle order.
    pub fn stage_counts(&self) -> Result<Vec<(Stage, u64)>> {
        Stage::ALL
            .iter()
            .map(|s| Ok((*s, self.count_of(&[STAGE_COUNT, stage_byte(*s)])?)))
            .collect()
    }

    /// Returns the customers at each risk level, lowest first.
    pub fn level_counts(&self) -> Result<Vec<(RiskLevel, u64)>> {
        [
            RiskLevel::Low,
            RiskLevel::Medium,
            RiskLevel::High,
            RiskLevel::Critical,
        ]
        .iter()
        .map(|l| Ok((*l, self.count_of(&[LEVEL_COUNT, level_byte(*l)])?)))
        .collect()
    }

    /// Returns the number of profiles.
    pub fn len(&self) -> Result<u64> {
        Ok(self.stage_counts()?.iter().map(|(_, n)| n).sum())
    }

    /// Returns whether the view holds no profile.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Returns the index prefix that serves `filter` in `order`: the narrowest one that
    /// sorts in that order.
    fn plan(filter: &Filter, order: Order) -> Vec<u8> {
        match (order, filter) {
            (
                Order::RiskScore,
                Filter {
                    risk_level: Some(l),
                    ..
                },
            ) => vec![BY_LEVEL, level_byte(*l)],
            (Order::ValueAtRisk, Filter { stage: Some(s), .. }) => vec![BY_STAGE, stage_byte(*s)],
            (Order::Margin, Filter { tier: Some(t), .. }) => vec![BY_TIER, tier_byte(*t)],
            (
                Order::Margin,
                Filter {
                    divest: Some(true), ..
                },
            ) => vec![DIVEST],
            (Order::ValueAtRisk, _) => vec![BY_VALUE_AT_RISK],
            (Order::RiskScore, _) => vec![BY_RISK_SCORE],
            (Order::Margin, _) => vec![BY_MARGIN],
        }
    }

    /// Returns up to `limit` customers matching `filter` in `order`, starting after the index
    /// key `after` (from the previous page's [`Page::next_after`]).
    ///
    /// Keyset paging: a page starts strictly after the last key of the one before, so
    /// customers whose position does not change are neither skipped nor repeated however the
    /// others change meanwhile.
    pub fn list(
        &self,
        filter: &Filter,
        order: Order,
        limit: usize,
        after: Option<&[u8]>,
    ) -> Result<Page> {
        let prefix = Self::plan(filter, order);
        let mut range_start = prefix.clone();
        if let Some(after) = after {
            if !after.starts_with(&prefix) {
                return Ok(Page::default());
            }
            range_start = after.to_vec();
            range_start.push(0);
        }
        let mut page = Page::default();
        let mut last_key = Vec::new();
        for kv in self.tree.range(range_start..) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let facets = facets_from(&v).ok_or_else(|| self.corrupt("index", "bad facets"))?;
            if !filter.matches(&facets) {
                continue;
            }
            if page.profiles.len() == limit {
                page.next_after = Some(last_key);
                break;
            }
            // Index keys end with the customer id after a fixed-size sort key.
            let id = &k[prefix.len() + 8..];
            let Some(v) = self
                .tree
                .get(compose(&[&[PROFILE], id]))
                .map_err(|e| self.sled_err(e))?
            else {
                continue;
            };
            page.profiles.push(self.decode_profile(id, &v)?);
            last_key = k.to_vec();
        }
        Ok(page)
    }

    /// Returns profiles in customer-id order, starting after `after`, at most `limit`.
    pub fn export_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Profile>> {
        let start = match after {
            Some(a) => {
                let mut k = compose(&[&[PROFILE], a.as_bytes()]);
                k.push(0);
                k
            }
            None => vec![PROFILE],
        };
        let mut out = Vec::new();
        for kv in self.tree.range(start..) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            if k.first() != Some(&PROFILE) || out.len() == limit {
                break;
            }
            out.push(self.decode_profile(&k[1..], &v)?);
        }
        Ok(out)
    }

    /// Returns the bytes the view occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(|e| self.sled_err(e))
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.sled_err(e))
    }
}

/// Returns the changes from a customer's previous (risk level, stage) to its profile `p`, in
/// order: one per stage move, when the profile's stage history chains them from the previous
/// stage (several moves can fall in one of scoring's batches, which publishes one profile), the
/// last carrying the risk level's change too; one change otherwise. Moves are only taken from
/// after `since`, when the previous profile was assessed. `seq` is left 0.
fn changes_between(
    p: &Profile,
    level: RiskLevel,
    stage: Stage,
    since: Option<Timestamp>,
) -> Vec<Change> {
    let change = |at, risk, stage, value_at_risk| Change {
        seq: 0,
        customer_id: p.customer_id.clone(),
        at,
        risk,
        stage,
        risk_score: p.risk_score,
        value_at_risk,
        reasons: p.reasons.clone(),
    };
    let merged = || {
        vec![change(
            p.assessed_at,
            (level, p.risk_level),
            (stage, p.stage),
            p.value_at_risk,
        )]
    };
    if stage == p.stage {
        return merged();
    }
    // The newest moves that lead from `stage` to the profile's stage, each from where the one
    // before it went.
    let history = &p.stage_history;
    let Some(start) = history.iter().rposition(|m| m.from == stage) else {
        return merged();
    };
    let steps = &history[start..];
    let chained = steps.windows(2).all(|w| w[0].to == w[1].from)
        && steps.last().is_some_and(|m| m.to == p.stage)
        && steps.iter().all(|m| since.is_none_or(|s| m.at > s));
    if !chained {
        return merged();
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let last = i + 1 == steps.len();
            let risk = (level, if last { p.risk_level } else { level });
            let value = if last {
                p.value_at_risk
            } else {
                m.value_at_risk
            };
            change(
                if last { p.assessed_at.max(m.at) } else { m.at },
                risk,
                (m.from, m.to),
                value,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use churnwatch_core::Timestamp;
    use proptest::prelude::*;

    const LEVELS: [RiskLevel; 4] = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];
    const TIERS: [ValueTier; 4] = [ValueTier::A, ValueTier::B, ValueTier::C, ValueTier::D];

    /// A profile whose facets and sort values come from small numbers.
    fn profile(id: &str, version: u64, n: [u8; 4], score: f64, var: i64, margin: i64) -> Profile {
        Profile {
            customer_id: id.into(),
            assessed_at: Timestamp(1_700_000_000),
            version,
            stage: Stage::ALL[usize::from(n[0]) % 6],
            stage_since: None,
            risk_level: LEVELS[usize::from(n[1]) % 4],
            risk_score: score,
            reasons: vec![],
            p_alive: None,
            expected_purchases: 0.0,
            clv_12m: 0,
            value_at_risk: var,
            margin_12m: margin,
            revenue_12m: 0,
            orders_12m: 0,
            contacts_12m: 0,
            value_tier: TIERS[usize::from(n[2]) % 4],
            divest: n[3] % 2 == 1,
            orders: 0,
            revenue: 0,
            first_seen: None,
            first_order_at: None,
            last_order_at: None,
            typical_interval_days: None,
            acquisition_source: None,
            first_channel: None,
            first_categories: vec![],
            last_retention: None,
            retention_actions: vec![],
            risk_episodes: Vec::new(),
            stage_history: vec![],
            margin_breakdown: Default::default(),
        }
    }

    fn apply_all(view: &View, partition: i32, first_offset: i64, profiles: &[Profile]) -> Applied {
        view.apply_profiles(partition, first_offset, profiles)
            .unwrap()
    }

    fn open() -> (tempfile::TempDir, View) {
        let dir = tempfile::tempdir().unwrap();
        let view = View::open(dir.path(), 16 << 20).unwrap();
        (dir, view)
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.profiles
            .iter()
            .map(|p| p.customer_id.as_str())
            .collect()
    }

    #[test]
    fn profiles_are_served_by_id_and_a_newer_version_replaces_the_older() {
        let (_dir, view) = open();
        let a1 = profile("a", 1, [1, 0, 0, 0], 0.1, 100, 50);
        let a3 = profile("a", 3, [4, 3, 0, 0], 0.9, 700, 50);
        let a2 = profile("a", 2, [2, 1, 0, 0], 0.5, 300, 50);
        let applied = apply_all(&view, 0, 0, &[a1, a3.clone(), a2]);
        assert_eq!(applied.written, 2);
        assert_eq!(applied.stale, 1, "version 2 arrived after version 3");
        assert_eq!(view.get("a").unwrap(), Some(a3));
        assert_eq!(view.get("b").unwrap(), None);
        let counts = view.stage_counts().unwrap();
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 1);
        assert_eq!(counts[4], (Stage::CoreDefector, 1));
        // The older version's index entries are gone: one entry per index.
        let page = view
            .list(&Filter::default(), Order::RiskScore, 10, None)
            .unwrap();
        assert_eq!(ids(&page), ["a"]);
    }

    #[test]
    fn redelivered_offsets_change_nothing_and_offsets_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let view = View::open(dir.path(), 16 << 20).unwrap();
            apply_all(&view, 2, 10, &[profile("a", 5, [1, 0, 0, 0], 0.1, 1, 1)]);
            // The same offset again, now carrying something else: ignored.
            let applied = apply_all(&view, 2, 10, &[profile("b", 9, [1, 0, 0, 0], 0.1, 1, 1)]);
            assert_eq!(applied, Applied::default());
            view.flush().unwrap();
        }
        let view = View::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(view.offsets().unwrap(), BTreeMap::from([(2, 11)]));
        assert!(view.get("b").unwrap().is_none());
        assert_eq!(view.len().unwrap(), 1);
    }

    #[test]
    fn a_tombstone_deletes_the_customer_and_its_index_entries() {
        let (_dir, view) = open();
        apply_all(&view, 0, 0, &[profile("a", 1, [5, 3, 3, 1], 0.9, 10, -5)]);
        let applied = view
            .apply(&[(
                0,
                1,
                Incoming {
                    customer_id: "a",
                    json: None,
                },
            )])
            .unwrap();
        assert_eq!(applied.deleted, 1);
        assert!(view.get("a").unwrap().is_none());
        assert!(view.is_empty().unwrap());
        for order in [Order::ValueAtRisk, Order::RiskScore, Order::Margin] {
            let divest = Filter {
                divest: Some(true),
                ..Filter::default()
            };
            assert!(
                view.list(&divest, order, 10, None)
                    .unwrap()
                    .profiles
                    .is_empty()
            );
        }
    }

    #[test]
    fn a_profile_that_does_not_decode_or_names_another_customer_is_skipped() {
        let (_dir, view) = open();
        let other = serde_json::to_vec(&profile("zz", 1, [0; 4], 0.0, 0, 0)).unwrap();
        let applied = view
            .apply(&[
                (
                    0,
                    0,
                    Incoming {
                        customer_id: "a",
                        json: Some(b"{not json"),
                    },
                ),
                (
                    0,
                    1,
                    Incoming {
                        customer_id: "a",
                        json: Some(&other),
                    },
                ),
            ])
            .unwrap();
        assert_eq!(applied.invalid, 2);
        assert!(view.is_empty().unwrap());
        assert_eq!(
            view.offsets().unwrap(),
            BTreeMap::from([(0, 2)]),
            "read past them"
        );
    }

    #[test]
    fn keyset_pages_neither_skip_nor_repeat_customers_that_did_not_move() {
        let (_dir, view) = open();
        let all: Vec<Profile> = (0..50)
            .map(|i| profile(&format!("c{i:02}"), 1, [0; 4], 0.0, i * 10, 0))
            .collect();
        apply_all(&view, 0, 0, &all);
        let first = view
            .list(&Filter::default(), Order::ValueAtRisk, 20, None)
            .unwrap();
        assert_eq!(first.profiles[0].customer_id, "c49", "highest first");
        // Meanwhile c45 (already served) drops to the bottom and c10 (not yet served) jumps
        // to the top; everyone else keeps their place.
        apply_all(
            &view,
            0,
            50,
            &[
                profile("c45", 2, [0; 4], 0.0, -1, 0),
                profile("c10", 2, [0; 4], 0.0, 10_000, 0),
            ],
        );
        let mut seen: Vec<String> = ids(&first).iter().map(|s| s.to_string()).collect();
        let mut after = first.next_after;
        while let Some(key) = after {
            let page = view
                .list(&Filter::default(), Order::ValueAtRisk, 20, Some(&key))
                .unwrap();
            seen.extend(ids(&page).iter().map(|s| s.to_string()));
            after = page.next_after;
        }
        for i in (0..50).filter(|i| *i != 10 && *i != 45) {
            let id = format!("c{i:02}");
            assert_eq!(seen.iter().filter(|s| **s == id).count(), 1, "{id}");
        }
        assert_eq!(
            seen.iter().filter(|s| *s == "c45").count(),
            2,
            "moved back behind"
        );
        assert_eq!(
            seen.iter().filter(|s| *s == "c10").count(),
            0,
            "moved ahead"
        );
    }

    #[test]
    fn the_change_log_records_level_and_stage_moves_and_keeps_only_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let view = View::open(dir.path(), 16 << 20)
            .unwrap()
            .with_max_changes(3);
        let mut notified = view.subscribe();
        // New customers start as prospects at low risk: only "b" (first-time, low) is news...
        apply_all(
            &view,
            0,
            0,
            &[
                profile("a", 1, [0, 0, 0, 0], 0.1, 1, 1),
                profile("b", 1, [1, 0, 0, 0], 0.1, 1, 1),
            ],
        );
        assert!(notified.has_changed().unwrap());
        notified.borrow_and_update();
        let log = view.changes(0, 10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].seq, log[0].customer_id.as_str()), (0, "b"));
        assert_eq!(log[0].stage, (Stage::Prospect, Stage::FirstTime));
        // ...then a version that changes nothing, one that raises "a"'s risk, and three more.
        apply_all(
            &view,
            0,
            2,
            &[
                profile("b", 2, [1, 0, 0, 0], 0.2, 1, 1),
                profile("a", 2, [0, 2, 0, 0], 0.8, 1, 1),
                profile("a", 3, [0, 3, 0, 0], 0.9, 1, 1),
                profile("a", 4, [0, 2, 0, 0], 0.8, 1, 1),
                profile("a", 5, [0, 1, 0, 0], 0.5, 1, 1),
            ],
        );
        assert_eq!(view.next_change(), 5);
        let log = view.changes(0, 10).unwrap();
        let seqs: Vec<u64> = log.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [2, 3, 4], "only the newest three are kept");
        assert_eq!(log[2].risk, (RiskLevel::High, RiskLevel::Medium));
        assert_eq!(view.resume(view.epoch(), 3).unwrap(), ChangeStart::At(3));
        assert_eq!(
            view.resume(view.epoch(), 1).unwrap(),
            ChangeStart::Expired { oldest: 2 }
        );
        assert_eq!(
            view.resume(view.epoch() ^ 1, 3).unwrap(),
            ChangeStart::OtherEpoch
        );
        // The epoch and the sequence survive a reopen; another directory is another epoch.
        let epoch = view.epoch();
        drop(view);
        let view = View::open(dir.path(), 16 << 20).unwrap();
        assert_eq!((view.epoch(), view.next_change()), (epoch, 5));
        let (_other_dir, other) = open();
        assert_ne!(other.epoch(), epoch);
    }

    #[test]
    fn stage_moves_published_in_one_profile_are_logged_one_step_each() {
        use churnwatch_core::output::StageMove;
        let (_dir, view) = open();
        let mv = |day: i64, from, to| StageMove {
            at: Timestamp(1_700_000_000 + day * 86_400),
            from,
            to,
            value_at_risk: day,
            retained_12m: 0,
            lifetime_value: 0,
        };
        let mut first = profile("c", 1, [1, 0, 0, 0], 0.1, 1, 1);
        first.assessed_at = Timestamp(1_700_000_000);
        first.stage_history = vec![mv(0, Stage::Prospect, Stage::FirstTime)];
        // One batch of scoring's moved the customer twice, then its risk to high.
        let mut later = profile("c", 2, [3, 2, 0, 0], 0.6, 9, 1);
        later.assessed_at = Timestamp(1_700_000_000 + 30 * 86_400);
        later.stage_history = vec![
            mv(0, Stage::Prospect, Stage::FirstTime),
            mv(20, Stage::FirstTime, Stage::EarlyRepeat),
            mv(30, Stage::EarlyRepeat, Stage::Core),
        ];
        apply_all(&view, 0, 0, &[first, later.clone()]);
        let log = view.changes(0, 10).unwrap();
        let steps: Vec<_> = log.iter().map(|c| (c.stage, c.risk, c.at)).collect();
        assert_eq!(
            steps,
            [
                (
                    (Stage::Prospect, Stage::FirstTime),
                    (RiskLevel::Low, RiskLevel::Low),
                    Timestamp(1_700_000_000)
                ),
                (
                    (Stage::FirstTime, Stage::EarlyRepeat),
                    (RiskLevel::Low, RiskLevel::Low),
                    Timestamp(1_700_000_000 + 20 * 86_400)
                ),
                (
                    (Stage::EarlyRepeat, Stage::Core),
                    (RiskLevel::Low, RiskLevel::High),
                    Timestamp(1_700_000_000 + 30 * 86_400)
                ),
            ]
        );
        assert_eq!(
            log[1].value_at_risk, 20,
            "the value at risk of the move itself"
        );
        // A move undone by a correction leaves the history: the stage goes back without a
        // chain of new moves, and the old moves are not logged again.
        let mut lost = later.clone();
        lost.version = 3;
        lost.stage = Stage::Lost;
        lost.assessed_at = Timestamp(1_700_000_000 + 300 * 86_400);
        lost.stage_history.push(mv(300, Stage::Core, Stage::Lost));
        let mut corrected = later;
        corrected.version = 4;
        corrected.assessed_at = Timestamp(1_700_000_000 + 301 * 86_400);
        // An old reactivation chains from lost to core too, but long before.
        corrected.stage_history = vec![
            mv(0, Stage::Prospect, Stage::FirstTime),
            mv(10, Stage::FirstTime, Stage::Lost),
            mv(15, Stage::Lost, Stage::EarlyRepeat),
            mv(30, Stage::EarlyRepeat, Stage::Core),
        ];
        apply_all(&view, 0, 2, &[lost, corrected]);
        let log = view.changes(3, 10).unwrap();
        let steps: Vec<_> = log.iter().map(|c| c.stage).collect();
        assert_eq!(
            steps,
            [(Stage::Core, Stage::Lost), (Stage::Lost, Stage::Core)],
            "{log:?}"
        );
    }

    fn arb_profiles() -> impl Strategy<Value = Vec<Profile>> {
        prop::collection::vec(
            (
                0u8..20,
                any::<[u8; 4]>(),
                0.0f64..1.0,
                -50i64..50,
                -50i64..50,
            ),
            1..80,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (c, n, score, var, margin))| {
                    profile(&format!("c{c}"), i as u64, n, score, var, margin)
                })
                .collect()
        })
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        (
            prop::option::of(0usize..6),
            prop::option::of(0usize..4),
            prop::option::of(0usize..4),
            prop::option::of(0usize..4),
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(s, l, m, t, d)| Filter {
                stage: s.map(|i| Stage::ALL[i]),
                risk_level: l.map(|i| LEVELS[i]),
                min_risk_level: m.map(|i| LEVELS[i]),
                tier: t.map(|i| TIERS[i]),
                divest: d,
            })
    }

    proptest! {
        #[test]
        fn paged_lists_equal_filtering_and_sorting_the_latest_profiles(
            profiles in arb_profiles(),
            filter in arb_filter(),
            order in prop_oneof![Just(Order::ValueAtRisk), Just(Order::RiskScore), Just(Order::Margin)],
            page_size in 1usize..7,
        ) {
            let (_dir, view) = open();
            apply_all(&view, 0, 0, &profiles);
            let mut latest: BTreeMap<String, Profile> = BTreeMap::new();
            for p in &profiles {
                latest.insert(p.customer_id.clone(), p.clone());
            }
            let mut expected: Vec<&Profile> = latest
                .values()
                .filter(|p| filter.matches(&Header::of(p).facets))
                .collect();
            let sort_key = |p: &Profile| match order {
                Order::ValueAtRisk => p.value_at_risk as f64,
                Order::RiskScore => p.risk_score,
                Order::Margin => p.margin_12m as f64,
            };
            expected.sort_by(|a, b| {
                sort_key(b)
                    .partial_cmp(&sort_key(a))
                    .unwrap()
                    .then_with(|| a.customer_id.cmp(&b.customer_id))
            });
            let mut got = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = view.list(&filter, order, page_size, after.as_deref()).unwrap();
                prop_assert!(page.profiles.len() <= page_size);
                got.extend(page.profiles.iter().map(|p| p.customer_id.clone()));
                match page.next_after {
                    Some(k) => after = Some(k),
                    None => break,
                }
            }
            let expected: Vec<String> = expected.iter().map(|p| p.customer_id.clone()).collect();
            prop_assert_eq!(got, expected);
            let total: u64 = view.stage_counts().unwrap().iter().map(|(_, n)| n).sum();
            prop_assert_eq!(total, latest.len() as u64);
            for (level, n) in view.level_counts().unwrap() {
                let want = latest.values().filter(|p| p.risk_level == level).count() as u64;
                prop_assert_eq!(n, want, "customers at {:?}", level);
            }
        }
    }
}
