//! The sled store behind the scoring service: one tree per Kafka partition holding customer
//! states, the event-id de-duplication index, silence timers and the partition's watermark, plus
//! a meta tree for the schema version and the fitted model.
//! Everything a consumer batch changes in a partition is written in one atomic sled batch, and
//! [`Store::flush`] makes it durable before offsets are stored.
//!
//! sled is not the source of truth: every state can be rebuilt by replaying the
//! `orders-accepted` topic from the beginning into an empty directory.

use std::collections::HashMap;
use std::path::Path;

use churnwatch_core::engine::{StateStore, TimerChange, TimerIndex, Work};
use churnwatch_core::{CustomerState, ModelParams, Timestamp};

/// Version of the on-disk layout; a store written by another version is refused.
pub const STORE_VERSION: u32 = 7;

/// Errors of the store, each naming what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed (disk, permissions, corruption).
    #[error("state store at {path}: {source}")]
    Sled {
        /// The store directory.
        path: String,
        /// What sled said.
        #[source]
        source: sled::Error,
    },
    /// The directory was written by an incompatible version.
    #[error(
        "state store at {path} has layout version {found}, this build reads {expected}; rebuild it by starting with an empty --state-dir (scoring replays orders-accepted)"
    )]
    Version {
        /// The store directory.
        path: String,
        /// Version on disk.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// A stored value does not decode.
    #[error("state store at {path}: corrupt value under {key}: {message}")]
    Corrupt {
        /// The store directory.
        path: String,
        /// The key.
        key: String,
        /// The decoder's complaint.
        message: String,
    },
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// The page cache of a store opened with [`Store::open`]: 256 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

const META_VERSION: &[u8] = b"version";
const META_MODEL: &[u8] = b"model";

const STATE: u8 = b's';
/// Event ids, keyed by event time then id: one key serves both the lookup (a duplicate carries
/// its original's `occurred_at`) and expiry in time order.
const SEEN: u8 = b'e';
/// When to look at a remembered event id again, keyed by that processing time, then the id's
/// [`SEEN`] key: the expiry index of event ids.
const RECHECK: u8 = b'r';
/// Timers, keyed by due time then customer. The engine knows each customer's timer, so a change
/// names the key to remove without a read, and the index is only scanned when a partition is
/// adopted.
const TIMER: u8 = b't';
const WATERMARK: &[u8] = b"mwatermark";
/// The offset of the partition's next unapplied message, written in the same batch as the
/// states: what the input's committed offset may lag behind (it is committed asynchronously),
/// the store cannot.
const NEXT_OFFSET: &[u8] = b"moffset";
/// Present while the partition's customers are being re-scored after a refit: the id of the
/// last customer re-scored (empty before the first), so a restart resumes the sweep.
const RESCORE: &[u8] = b"mrescore";

/// Opens a sled database, waiting up to a second for its file lock: a database closed in this
/// process releases the lock only once sled's background threads have let go of it, so an
/// immediate reopen (a restart in place, `fit` after scoring stopped) can find it still held.
/// Another process holding it still fails, a second later.
///
/// # Errors
///
/// What sled says once the wait is over.
pub fn open_sled(config: sled::Config) -> sled::Result<sled::Db> {
    let mut attempts = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if attempts < 50 && e.to_string().contains("acquire lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The sled database of one scoring process.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    path: String,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with a cache of
    /// [`DEFAULT_CACHE_BYTES`].
    ///
    /// # Errors
    ///
    /// As [`Store::open_with_cache`].
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (creating if needed) the store in `dir`, keeping at most about `cache_bytes` of
    /// its pages in memory (the bulk of the store's resident memory once the data outgrows it).
    ///
    /// # Errors
    ///
    /// [`Error::Sled`] when the directory cannot be opened (in use by another process, not
    /// writable), [`Error::Version`] when it holds another layout version.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        let path = dir.display().to_string();
        let sled_err = |source| Error::Sled {
            path: path.clone(),
            source,
        };
        let db = open_sled(
            sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .mode(sled::Mode::HighThroughput),
        )
        .map_err(sled_err)?;
        let meta = db.open_tree("meta").map_err(sled_err)?;
        match meta.get(META_VERSION).map_err(sled_err)? {
            None => {
                meta.insert(META_VERSION, &STORE_VERSION.to_be_bytes())
                    .map_err(sled_err)?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                if found != STORE_VERSION {
                    return Err(Error::Version {
                        path,
                        found,
                        expected: STORE_VERSION,
                    });
                }
            }
        }
        Ok(Self { db, meta, path })
    }

    fn sled_err(&self, source: sled::Error) -> Error {
        Error::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// Returns the store of one partition.
    pub fn partition(&self, partition: i32) -> Result<Partition> {
        let tree = self
            .db
            .open_tree(format!("partition-{partition}"))
            .map_err(|e| self.sled_err(e))?;
        Ok(Partition {
            tree,
            partition,
            path: self.path.clone(),
        })
    }

    /// Returns the partitions that have data here.
    pub fn partitions(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| {
                std::str::from_utf8(n)
                    .ok()?
                    .strip_prefix("partition-")?
                    .parse()
                    .ok()
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Returns the stored model parameters, if a fit was ever stored.
    pub fn model_params(&self) -> Result<Option<ModelParams>> {
        let Some(bytes) = self.meta.get(META_MODEL).map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path: self.path.clone(),
                key: "meta/model".into(),
                message: e.to_string(),
            })
    }

    /// Stores the model parameters (durable after the next flush).
    pub fn set_model_params(&self, params: &ModelParams) -> Result<()> {
        let bytes = serde_json::to_vec(params).expect("model parameters serialize");
        self.meta
            .insert(META_MODEL, bytes)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Makes everything written so far durable; returns the bytes flushed.
    pub fn flush(&self) -> Result<usize> {
        self.db.flush().map_err(|e| self.sled_err(e))
    }

    /// Returns the bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(|e| self.sled_err(e))
    }
}

/// The data of one partition.
#[derive(Debug, Clone)]
pub struct Partition {
    tree: sled::Tree,
    partition: i32,
    path: String,
}

/// The bytes of keys and values a partition holds, by kind: the data itself, before sled's own
/// overhead (page headers, log segments awaiting compaction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveBytes {
    /// Customer states.
    pub states: u64,
    /// Remembered event ids, with their expiry index.
    pub seen: u64,
    /// Timers.
    pub timers: u64,
    /// Everything else (the watermark).
    pub other: u64,
}

impl LiveBytes {
    /// Returns the sum over all kinds.
    pub fn total(&self) -> u64 {
        self.states + self.seen + self.timers + self.other
    }
}

impl std::ops::AddAssign for LiveBytes {
    fn add_assign(&mut self, o: Self) {
        self.states += o.states;
        self.seen += o.seen;
        self.timers += o.timers;
        self.other += o.other;
    }
}

/// How long event ids are remembered, to recognise redelivered and repeated events.
///
/// An id is forgotten once it is both at least `min_age_secs` of processing time old and more
/// than `event_secs` of event time behind the partition's watermark. The first bound covers
/// redelivery, which happens soon after the original was processed whatever its event time
/// (a backfill of last year's orders, re-produced after a broker outage); the second covers
/// a client sending the same event twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenRetention {
    /// Event time behind the watermark, in seconds.
    pub event_secs: i64,
    /// Processing time since the id was recorded, in seconds.
    pub min_age_secs: i64,
}

impl Default for SeenRetention {
    /// 30 days of event time, one day of processing time.
    fn default() -> Self {
        Self {
            event_secs: 30 * 86_400,
            min_age_secs: 86_400,
        }
    }
}

impl SeenRetention {
    /// Returns the event time before which ids are out of the window, at `watermark`.
    fn horizon(&self, watermark: Option<Timestamp>) -> Option<Timestamp> {
        watermark.map(|w| w.plus(-self.event_secs))
    }
}

/// An id still inside the event-time window is looked at again once it would have left it,
/// at the earliest after this many seconds.
const MIN_RECHECK_SECS: i64 = 60;

/// Everything one batch changes in a partition, written atomically by [`Partition::commit`].
#[derive(Debug, Default)]
pub struct Commit<'a> {
    /// States to write.
    pub states: Vec<&'a CustomerState>,
    /// Event ids processed, with their event time.
    pub seen: &'a [(String, Timestamp)],
    /// Customers' timers changed, with their stored value before the batch.
    pub timers: Option<&'a HashMap<String, TimerChange>>,
    /// The partition's watermark.
    pub watermark: Option<Timestamp>,
    /// The processing time of the batch (wall-clock time in a service).
    pub now: Timestamp,
    /// How long event ids are remembered; `None` forgets none.
    pub retention: Option<SeenRetention>,
    /// The input offset after the batch's last message: every message before it is applied.
    pub next_offset: Option<i64>,
    /// Where the re-scoring sweep after a refit stands, when the batch moves it.
    pub rescore: Option<Rescore>,
}

/// The re-scoring sweep over a partition's customers after a refit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rescore {
    /// Customers after this id (all, when empty) are still to be re-scored.
    After(String),
    /// Every customer was re-scored.
    Done,
}

impl<'a> Commit<'a> {
    /// Returns what a batch's engine `work` changes, at the partition's `watermark`, processed
    /// at `now`, forgetting event ids as `retention` says.
    pub fn of_work(
        work: &'a Work,
        watermark: Option<Timestamp>,
        now: Timestamp,
        retention: SeenRetention,
    ) -> Self {
        Self {
            states: work.states.values().collect(),
            seen: &work.seen,
            timers: Some(&work.timers),
            watermark,
            now,
            retention: Some(retention),
            next_offset: None,
            rescore: None,
        }
    }
}

/// Encodes a timestamp so byte order is time order.
fn time_key(t: Timestamp) -> [u8; 8] {
    ((t.0 as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from_key(bytes: &[u8]) -> Option<Timestamp> {
    let raw = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    Some(Timestamp((raw ^ (1 << 63)) as i64))
}

fn key(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

fn key2(tag: u8, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + a.len() + b.len());
    k.push(tag);
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

impl Partition {
    /// Returns the partition number.
    pub fn id(&self) -> i32 {
        self.partition
    }

    fn sled_err(&self, source: sled::Error) -> Error {
        Error::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, what: &str, message: impl ToString) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            key: format!("partition-{}/{what}", self.partition),
            message: message.to_string(),
        }
    }

    /// Returns a customer's state.
    pub fn state(&self, customer_id: &str) -> Result<Option<CustomerState>> {
        let Some(bytes) = self
            .tree
            .get(key(STATE, customer_id.as_bytes()))
            .map_err(|e| self.sled_err(e))?
        else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| self.corrupt(&format!("state/{customer_id}"), e))
    }

    /// Returns every state of the partition, in customer-id order.
    pub fn states(&self) -> impl Iterator<Item = Result<CustomerState>> + '_ {
        self.tree
            .scan_prefix([STATE])
            .map(move |kv| self.decode_state(kv))
    }

    /// Decodes one entry of the state keyspace.
    fn decode_state(&self, kv: sled::Result<(sled::IVec, sled::IVec)>) -> Result<CustomerState> {
        let (k, v) = kv.map_err(|e| self.sled_err(e))?;
        postcard::from_bytes(&v)
            .map_err(|e| self.corrupt(&format!("state/{}", String::from_utf8_lossy(&k[1..])), e))
    }

    /// Returns up to `limit` states of customers whose id sorts after `after` (all, when it is
    /// empty), in customer-id order: one step of a sweep over the partition.
    pub fn states_after(&self, after: &str, limit: usize) -> Result<Vec<CustomerState>> {
        let mut from = key(STATE, after.as_bytes());
        if !after.is_empty() {
            // The smallest key after `after`'s own.
            from.push(0);
        }
        self.tree
            .range(from..vec![STATE + 1])
            .take(limit)
            .map(|kv| self.decode_state(kv))
            .collect()
    }

    /// Returns where an unfinished re-scoring sweep stands: the id of the last customer
    /// re-scored (empty before the first); `None` when no sweep is pending.
    pub fn rescore_after(&self) -> Result<Option<String>> {
        let v = self.tree.get(RESCORE).map_err(|e| self.sled_err(e))?;
        v.map(|b| String::from_utf8(b.to_vec()).map_err(|e| self.corrupt("rescore", e)))
            .transpose()
    }

    /// Returns whether an event id was processed (and not yet forgotten).
    pub fn was_seen(&self, event_id: &str, at: Timestamp) -> Result<bool> {
        self.tree
            .contains_key(key2(SEEN, &time_key(at), event_id.as_bytes()))
            .map_err(|e| self.sled_err(e))
    }

    /// Returns the number of event ids remembered.
    pub fn seen_count(&self) -> usize {
        self.tree.scan_prefix([SEEN]).count()
    }

    /// Returns the bytes of keys and values held, by kind (a full scan).
    pub fn live_bytes(&self) -> Result<LiveBytes> {
        let mut out = LiveBytes::default();
        for kv in self.tree.iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let n = (k.len() + v.len()) as u64;
            match k.first() {
                Some(&STATE) => out.states += n,
                Some(&SEEN | &RECHECK) => out.seen += n,
                Some(&TIMER) => out.timers += n,
                _ => out.other += n,
            }
        }
        Ok(out)
    }

    /// Returns the partition's watermark.
    pub fn watermark(&self) -> Result<Option<Timestamp>> {
        let v = self.tree.get(WATERMARK).map_err(|e| self.sled_err(e))?;
        v.map(|b| time_from_key(&b).ok_or_else(|| self.corrupt("watermark", "not 8 bytes")))
            .transpose()
    }

    /// Returns the input offset of the partition's next unapplied message, if a batch recorded
    /// one: messages before it are applied, whatever offset the consumer group has committed.
    pub fn next_offset(&self) -> Result<Option<i64>> {
        let v = self.tree.get(NEXT_OFFSET).map_err(|e| self.sled_err(e))?;
        v.map(|b| {
            <[u8; 8]>::try_from(b.as_ref())
                .map(i64::from_be_bytes)
                .map_err(|_| self.corrupt("next offset", "not 8 bytes"))
        })
        .transpose()
    }

    /// Returns every pending timer.
    pub fn timers(&self) -> Result<TimerIndex> {
        let mut timers = Vec::new();
        for kv in self.tree.scan_prefix([TIMER]) {
            let (k, _) = kv.map_err(|e| self.sled_err(e))?;
            let due = time_from_key(&k[1..]).ok_or_else(|| self.corrupt("timer", "short key"))?;
            let customer =
                String::from_utf8(k[9..].to_vec()).map_err(|e| self.corrupt("timer", e))?;
            timers.push((customer, due));
        }
        Ok(TimerIndex::from_timers(timers))
    }

    /// Writes one batch's changes atomically. Durable after [`Store::flush`].
    pub fn commit(&self, c: &Commit<'_>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for s in &c.states {
            let bytes = postcard::to_stdvec(s).expect("customer state serializes");
            batch.insert(key(STATE, s.customer_id.as_bytes()), bytes);
        }
        let retention = c.retention.unwrap_or_default();
        let horizon = retention.horizon(c.watermark);
        for (id, at) in c.seen {
            let seen = key2(SEEN, &time_key(*at), id.as_bytes());
            // First looked at once it is old enough and, at the watermark's pace, out of the
            // event window: live, where event time keeps pace with processing time, that is
            // the only look.
            let wait = retention.min_age_secs.max(until_out(*at, horizon, 0));
            batch.insert(key2(RECHECK, &time_key(c.now.plus(wait)), &seen), &[]);
            batch.insert(seen, &[]);
        }
        if let Some(retention) = c.retention {
            self.expire_seen(&mut batch, c.now, horizon, retention.min_age_secs)?;
        }
        for (customer, change) in c.timers.into_iter().flatten() {
            if change.is_noop() {
                continue;
            }
            if let Some(before) = change.before {
                batch.remove(key2(TIMER, &time_key(before), customer.as_bytes()));
            }
            if let Some(after) = change.after {
                batch.insert(key2(TIMER, &time_key(after), customer.as_bytes()), &[]);
            }
        }
        if let Some(w) = c.watermark {
            batch.insert(WATERMARK, &time_key(w));
        }
        if let Some(o) = c.next_offset {
            batch.insert(NEXT_OFFSET, &o.to_be_bytes());
        }
        match &c.rescore {
            Some(Rescore::After(id)) => batch.insert(RESCORE, id.as_bytes()),
            Some(Rescore::Done) => batch.remove(RESCORE),
            None => {}
        }
        self.tree.apply_batch(batch).map_err(|e| self.sled_err(e))
    }

    /// Adds to `batch` the expiry of event ids due for a look at `now`: each is forgotten
    /// when it is behind the event-time window (`horizon`), and otherwise looked at again once
    /// it would be.
    fn expire_seen(
        &self,
        batch: &mut sled::Batch,
        now: Timestamp,
        horizon: Option<Timestamp>,
        min_age_secs: i64,
    ) -> Result<()> {
        let due = key(RECHECK, &time_key(now.plus(1)));
        for kv in self.tree.range(vec![RECHECK]..due) {
            let (k, _) = kv.map_err(|e| self.sled_err(e))?;
            let seen = k
                .get(9..)
                .ok_or_else(|| self.corrupt("recheck", "short key"))?;
            let at = seen
                .get(1..)
                .and_then(time_from_key)
                .ok_or_else(|| self.corrupt("recheck", "short key"))?;
            batch.remove(k.as_ref());
            if horizon.is_some_and(|h| at < h) {
                batch.remove(seen);
            } else {
                let wait = until_out(at, horizon, min_age_secs).max(MIN_RECHECK_SECS);
                batch.insert(key2(RECHECK, &time_key(now.plus(wait)), seen), &[]);
            }
        }
        Ok(())
    }
}

/// Returns the seconds until an id of event time `at` leaves the event window, at the
/// watermark's pace; `unknown` when there is no watermark yet.
fn until_out(at: Timestamp, horizon: Option<Timestamp>, unknown: i64) -> i64 {
    horizon.map_or(unknown, |h| at.0 - h.0)
}

impl StateStore for Partition {
    type Error = Error;

    fn load(&mut self, customer_id: &str) -> Result<Option<CustomerState>> {
        self.state(customer_id)
    }

    fn seen(&mut self, event_id: &str, at: Timestamp) -> Result<bool> {
        self.was_seen(event_id, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(before: Option<i64>, after: Option<i64>) -> TimerChange {
        TimerChange {
            before: before.map(Timestamp),
            after: after.map(Timestamp),
        }
    }

    fn state(id: &str, orders: u32) -> CustomerState {
        let mut s = CustomerState::new(id);
        s.totals.orders = orders;
        s
    }

    #[test]
    fn a_rescoring_sweep_visits_every_customer_once_and_resumes_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ["a", "ab", "b", "c\u{e9}", "d", "z"];
        let mut visited = Vec::new();
        {
            let store = Store::open(dir.path()).unwrap();
            let p = store.partition(0).unwrap();
            let states: Vec<CustomerState> = ids.iter().map(|id| state(id, 1)).collect();
            p.commit(&Commit {
                states: states.iter().collect(),
                rescore: Some(Rescore::After(String::new())),
                // A timer's key must not be mistaken for a state's.
                timers: Some(&[("zz".to_owned(), change(None, Some(5)))].into()),
                ..Commit::default()
            })
            .unwrap();
            let step = p.states_after("", 4).unwrap();
            visited.extend(step.iter().map(|s| s.customer_id.clone()));
            p.commit(&Commit {
                rescore: Some(Rescore::After(visited.last().unwrap().clone())),
                ..Commit::default()
            })
            .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let p = store.partition(0).unwrap();
        let after = p
            .rescore_after()
            .unwrap()
            .expect("the sweep is still pending");
        assert_eq!(after, "c\u{e9}");
        let rest = p.states_after(&after, 4).unwrap();
        visited.extend(rest.iter().map(|s| s.customer_id.clone()));
        assert_eq!(visited, ids, "each once, in id order");
        assert!(p.states_after("z", 4).unwrap().is_empty());
        p.commit(&Commit {
            rescore: Some(Rescore::Done),
            ..Commit::default()
        })
        .unwrap();
        assert_eq!(p.rescore_after().unwrap(), None);
    }

    #[test]
    fn a_commit_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let p = store.partition(3).unwrap();
            let a = state("a", 2);
            let seen = vec![
                ("e1".to_owned(), Timestamp(100)),
                ("e2".to_owned(), Timestamp(200)),
            ];
            let timers: HashMap<_, _> = [
                ("a".to_owned(), change(None, Some(500))),
                ("b".to_owned(), change(None, Some(400))),
            ]
            .into();
            p.commit(&Commit {
                states: vec![&a],
                seen: &seen,
                timers: Some(&timers),
                watermark: Some(Timestamp(250)),
                next_offset: Some(42),
                ..Commit::default()
            })
            .unwrap();
            // A batch of nothing but redeliveries moves only the offset.
            p.commit(&Commit {
                next_offset: Some(57),
                ..Commit::default()
            })
            .unwrap();
            store.set_model_params(&ModelParams::default()).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.partitions(), vec![3]);
        let p = store.partition(3).unwrap();
        assert_eq!(p.state("a").unwrap().unwrap().totals.orders, 2);
        assert!(p.state("zz").unwrap().is_none());
        assert!(p.was_seen("e1", Timestamp(100)).unwrap());
        assert!(!p.was_seen("e3", Timestamp(100)).unwrap());
        assert_eq!(p.watermark().unwrap(), Some(Timestamp(250)));
        assert_eq!(p.next_offset().unwrap(), Some(57));
        assert_eq!(store.partition(4).unwrap().next_offset().unwrap(), None);
        let live = p.live_bytes().unwrap();
        let state_bytes = postcard::to_stdvec(&state("a", 2)).unwrap().len() as u64;
        assert_eq!(
            live,
            LiveBytes {
                states: 2 + state_bytes,
                // Each id's key, and its expiry key (tag, time, and the id's key).
                seen: 2 * (1 + 8 + 2) + 2 * (1 + 8 + 1 + 8 + 2),
                timers: 2 * (1 + 8 + 1),
                other: WATERMARK.len() as u64 + 8 + NEXT_OFFSET.len() as u64 + 8,
            }
        );
        let mut timers = p.timers().unwrap();
        assert_eq!(
            timers.pop_due(Timestamp(1_000)),
            Some((Timestamp(400), "b".into()))
        );
        assert_eq!(store.model_params().unwrap(), Some(ModelParams::default()));
    }

    #[test]
    fn timers_move_and_keys_are_replaced_not_added() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let p = store.partition(0).unwrap();
        let t1: HashMap<_, _> = [("a".to_owned(), change(None, Some(50)))].into();
        p.commit(&Commit {
            timers: Some(&t1),
            ..Commit::default()
        })
        .unwrap();
        let t2: HashMap<_, _> = [("a".to_owned(), change(Some(50), Some(90)))].into();
        p.commit(&Commit {
            timers: Some(&t2),
            ..Commit::default()
        })
        .unwrap();
        let mut timers = p.timers().unwrap();
        assert_eq!(timers.len(), 1);
        assert_eq!(
            timers.pop_due(Timestamp(100)),
            Some((Timestamp(90), "a".into()))
        );
        assert_eq!(
            p.tree.scan_prefix([TIMER]).count(),
            1,
            "the old timer key is gone"
        );
        let none: HashMap<_, _> = [("a".to_owned(), change(Some(90), None))].into();
        p.commit(&Commit {
            timers: Some(&none),
            ..Commit::default()
        })
        .unwrap();
        assert!(p.timers().unwrap().is_empty());
        assert_eq!(p.tree.scan_prefix([TIMER]).count(), 0);
    }

    #[test]
    fn event_ids_are_kept_for_their_minimum_age_then_until_the_event_window_passes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let p = store.partition(0).unwrap();
        let retention = Some(SeenRetention {
            event_secs: 100,
            min_age_secs: 1_000,
        });
        let at = |p: &Partition, now: i64, watermark: i64| {
            p.commit(&Commit {
                watermark: Some(Timestamp(watermark)),
                now: Timestamp(now),
                retention,
                ..Commit::default()
            })
            .unwrap();
        };
        // A backfill: "old" is far behind the watermark when it is processed.
        let seen = vec![
            ("old".to_owned(), Timestamp(10)),
            ("new".to_owned(), Timestamp(1_000)),
        ];
        p.commit(&Commit {
            seen: &seen,
            watermark: Some(Timestamp(1_000)),
            now: Timestamp(0),
            retention,
            ..Commit::default()
        })
        .unwrap();
        // Behind the event window, but not yet its minimum age: a redelivery is recognised.
        at(&p, 999, 1_000);
        assert!(p.was_seen("old", Timestamp(10)).unwrap());
        // Both are a minimum age old: "old" goes, "new" is still inside the window (horizon
        // 900) and is looked at again once it would have left it.
        at(&p, 1_000, 1_000);
        assert!(!p.was_seen("old", Timestamp(10)).unwrap(), "forgotten");
        assert!(p.was_seen("new", Timestamp(1_000)).unwrap());
        assert_eq!(p.seen_count(), 1);
        let rechecks: Vec<i64> = p
            .tree
            .scan_prefix([RECHECK])
            .map(|kv| time_from_key(&kv.unwrap().0[1..]).unwrap().0)
            .collect();
        assert_eq!(rechecks, vec![1_100]);
        // Commits without a retention forget nothing.
        p.commit(&Commit {
            watermark: Some(Timestamp(5_000)),
            now: Timestamp(5_000),
            ..Commit::default()
        })
        .unwrap();
        assert!(p.was_seen("new", Timestamp(1_000)).unwrap());
        at(&p, 1_100, 1_101);
        assert!(!p.was_seen("new", Timestamp(1_000)).unwrap());
        assert_eq!(p.tree.scan_prefix([SEEN]).count(), 0);
        assert_eq!(p.tree.scan_prefix([RECHECK]).count(), 0);
        // Live, an id is first looked at when the event window would have passed it.
        let live_p = store.partition(1).unwrap();
        let live = vec![("live".to_owned(), Timestamp(2_000))];
        live_p
            .commit(&Commit {
                seen: &live,
                watermark: Some(Timestamp(2_000)),
                now: Timestamp(2_000),
                retention: Some(SeenRetention {
                    event_secs: 5_000,
                    min_age_secs: 1_000,
                }),
                ..Commit::default()
            })
            .unwrap();
        let live_key = key2(SEEN, &time_key(Timestamp(2_000)), b"live");
        let recheck = key2(RECHECK, &time_key(Timestamp(7_000)), &live_key);
        assert!(live_p.tree.contains_key(&recheck).unwrap());
    }

    #[test]
    fn negative_and_positive_times_sort_in_order() {
        let mut keys: Vec<[u8; 8]> = [5, -3, 0, i64::MAX, i64::MIN, -1]
            .map(|t| time_key(Timestamp(t)))
            .to_vec();
        keys.sort();
        let back: Vec<i64> = keys.iter().map(|k| time_from_key(k).unwrap().0).collect();
        assert_eq!(back, vec![i64::MIN, -3, -1, 0, 5, i64::MAX]);
    }

    #[test]
    fn a_store_of_another_version_is_refused_with_a_way_out() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .meta
                .insert(META_VERSION, &99u32.to_be_bytes())
                .unwrap();
            store.flush().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("version 99") && err.contains("empty --state-dir"),
            "{err}"
        );
    }
}
