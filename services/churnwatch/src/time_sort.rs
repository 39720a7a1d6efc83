//! Sorting a history by event time for `churnwatch backfill`: in memory when it fits the memory
//! budget, otherwise by an external merge sort (the `extsort` crate) over sorted runs on disk.
//!
//! The sort is stable: lines with the same `occurred_at` keep their order in the file (a
//! customer's events at one time, a redelivery after its original), because every line carries
//! its position as the second key. Lines without a readable `occurred_at` go last, in file
//! order; order-ingest dead-letters them with their reason.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use extsort::{ExternalSorter, Sortable};

/// One message on its way through the sort.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Line {
    /// `occurred_at` in seconds; `i64::MAX` when unreadable.
    time: i64,
    /// Position in the input.
    seq: u64,
    key: String,
    payload: Vec<u8>,
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_bytes(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(read_u64(r)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut v = vec![0u8; len];
    r.read_exact(&mut v)?;
    Ok(v)
}

impl Sortable for Line {
    fn encode<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        w.write_all(&self.time.to_le_bytes())?;
        w.write_all(&self.seq.to_le_bytes())?;
        for bytes in [self.key.as_bytes(), &self.payload] {
            w.write_all(&(bytes.len() as u64).to_le_bytes())?;
            w.write_all(bytes)?;
        }
        Ok(())
    }

    fn decode<R: Read>(r: &mut R) -> std::io::Result<Self> {
        let time = read_u64(r)? as i64;
        let seq = read_u64(r)?;
        let key = String::from_utf8(read_bytes(r)?)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let payload = read_bytes(r)?;
        Ok(Self {
            time,
            seq,
            key,
            payload,
        })
    }
}

/// Returns an event's `occurred_at`, if it has a readable one.
fn event_time(message: &[u8]) -> Option<churnwatch_core::Timestamp> {
    #[derive(serde::Deserialize)]
    struct Time<'a> {
        #[serde(borrow)]
        occurred_at: Option<&'a str>,
    }
    let t: Time<'_> = serde_json::from_slice(message).ok()?;
    churnwatch_core::Timestamp::parse_rfc3339(t.occurred_at?)
}

/// The messages of a history, sorted by event time.
pub struct Sorted {
    /// Messages in the input.
    pub messages: u64,
    /// Messages that stood after a later one in the input.
    pub out_of_order: u64,
    /// Sorted runs written to disk (0: the history fitted in memory).
    pub runs_on_disk: usize,
    lines: Box<dyn Iterator<Item = std::io::Result<Line>>>,
}

impl std::fmt::Debug for Sorted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sorted")
            .field("messages", &self.messages)
            .field("out_of_order", &self.out_of_order)
            .field("runs_on_disk", &self.runs_on_disk)
            .finish()
    }
}

impl Iterator for Sorted {
    type Item = Result<(String, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.lines.next().map(|l| {
            l.map(|l| (l.key, l.payload))
                .context("cannot read back the sorted history from its temporary files")
        })
    }
}

/// How two lines compare: by time, then position.
type LineOrder = fn(&Line, &Line) -> std::cmp::Ordering;

enum Buffer {
    Memory { lines: Vec<Line>, bytes: usize },
    Disk(Box<extsort::PushExternalSorter<Line, LineOrder>>),
}

/// Collects messages and sorts them by event time, spilling sorted runs of about
/// `memory_budget` bytes to `dir` once the history outgrows it.
pub struct TimeSorter {
    memory_budget: usize,
    dir: Option<PathBuf>,
    buffer: Buffer,
    messages: u64,
    out_of_order: u64,
    newest: i64,
}

impl std::fmt::Debug for TimeSorter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeSorter")
            .field("memory_budget", &self.memory_budget)
            .field("messages", &self.messages)
            .finish()
    }
}

/// Bytes a buffered line costs beyond its key and payload (the struct and vector slack).
const LINE_OVERHEAD: usize = 64;

impl TimeSorter {
    /// Returns a sorter keeping up to `memory_budget` bytes of messages in memory, writing its
    /// sorted runs under `dir` (the system's temporary directory when `None`).
    pub fn new(memory_budget: usize, dir: Option<PathBuf>) -> Self {
        Self {
            memory_budget: memory_budget.max(1),
            dir,
            buffer: Buffer::Memory {
                lines: Vec::new(),
                bytes: 0,
            },
            messages: 0,
            out_of_order: 0,
            newest: i64::MIN,
        }
    }

    /// Adds a message keyed `key`.
    ///
    /// # Errors
    ///
    /// A sorted run could not be written to disk.
    pub fn push(&mut self, key: String, payload: Vec<u8>) -> Result<()> {
        let time = event_time(&payload).map_or(i64::MAX, |t| t.0);
        self.out_of_order += u64::from(time < self.newest);
        self.newest = self.newest.max(time);
        let line = Line {
            time,
            seq: self.messages,
            key,
            payload,
        };
        self.messages += 1;
        match &mut self.buffer {
            Buffer::Memory { lines, bytes } => {
                *bytes += line.key.len() + line.payload.len() + LINE_OVERHEAD;
                lines.push(line);
                if *bytes > self.memory_budget {
                    self.spill()?;
                }
            }
            Buffer::Disk(sorter) => sorter.push(line).context(self.disk_error())?,
        }
        Ok(())
    }

    fn disk_error(&self) -> String {
        format!(
            "cannot write a sorted run of the history to {} (free some space there, or point TMPDIR elsewhere)",
            self.dir
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .display()
        )
    }

    /// Moves to sorting on disk, in runs as long as what the memory budget held.
    fn spill(&mut self) -> Result<()> {
        let Buffer::Memory { lines, .. } = &mut self.buffer else {
            return Ok(());
        };
        let lines = std::mem::take(lines);
        let mut sorter = ExternalSorter::new().with_segment_size(lines.len().max(1));
        if let Some(dir) = &self.dir {
            sorter = sorter.with_sort_dir(dir.clone());
        }
        let cmp: LineOrder = Line::cmp;
        let mut sorter = sorter.pushed_by(cmp);
        let error = self.disk_error();
        sorter.push_iter(lines).context(error)?;
        self.buffer = Buffer::Disk(Box::new(sorter));
        Ok(())
    }

    /// Returns the messages in event-time order.
    ///
    /// # Errors
    ///
    /// The last sorted run could not be written to disk.
    pub fn finish(self) -> Result<Sorted> {
        let error = self.disk_error();
        let (lines, runs_on_disk): (Box<dyn Iterator<Item = _>>, _) = match self.buffer {
            Buffer::Memory { mut lines, .. } => {
                if self.out_of_order > 0 {
                    lines.sort_unstable();
                }
                (Box::new(lines.into_iter().map(Ok)), 0)
            }
            Buffer::Disk(sorter) => {
                let sorted = sorter.done().context(error)?;
                let runs = sorted.disk_segment_count();
                (Box::new(sorted), runs)
            }
        };
        Ok(Sorted {
            messages: self.messages,
            out_of_order: self.out_of_order,
            runs_on_disk,
            lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(customer: &str, at: &str) -> (String, Vec<u8>) {
        let json = format!(r#"{{"type":"order","customer_id":"{customer}","occurred_at":"{at}"}}"#);
        (customer.to_owned(), json.into_bytes())
    }

    fn sort(messages: &[(String, Vec<u8>)], budget: usize, dir: &std::path::Path) -> Sorted {
        let mut s = TimeSorter::new(budget, Some(dir.to_owned()));
        for (k, v) in messages {
            s.push(k.clone(), v.clone()).unwrap();
        }
        s.finish().unwrap()
    }

    #[test]
    fn a_feed_in_customer_order_is_sorted_by_event_time_stably() {
        let dir = tempfile::tempdir().unwrap();
        let m = vec![
            line("a", "2025-01-03T00:00:00Z"),
            line("a", "2025-03-01T00:00:00Z"),
            (String::new(), b"not json".to_vec()),
            line("b", "2025-01-01T00:00:00Z"),
            line("b", "2025-03-01T00:00:00Z"),
            line("c", "2025-02-01T00:00:00+01:00"),
        ];
        let sorted = sort(&m, 1 << 20, dir.path());
        // b, b and c stand after a later time (the unreadable line counts as the latest).
        assert_eq!((sorted.messages, sorted.out_of_order), (6, 3));
        assert_eq!(sorted.runs_on_disk, 0, "it fits in memory");
        let keys: Vec<String> = sorted.map(|r| r.unwrap().0).collect();
        assert_eq!(keys, ["b", "a", "c", "a", "b", ""]);
    }

    #[test]
    fn a_history_larger_than_the_memory_budget_is_sorted_on_disk_in_the_same_order() {
        let dir = tempfile::tempdir().unwrap();
        // 3,000 events of 300 customers, in customer order, with ties in time: what a sort in
        // memory does with them is the reference.
        let m: Vec<(String, Vec<u8>)> = (0..300)
            .flat_map(|c| {
                (0..10).map(move |n| {
                    line(
                        &format!("c{c:03}"),
                        &format!("2025-{:02}-{:02}T00:00:00Z", 1 + n, 1 + c % 3),
                    )
                })
            })
            .collect();
        let in_memory = sort(&m, usize::MAX, dir.path());
        assert_eq!(in_memory.runs_on_disk, 0);
        let expected: Vec<(String, Vec<u8>)> = in_memory.map(Result::unwrap).collect();
        // About 100 lines per run.
        let on_disk = sort(&m, 100 * (m[0].1.len() + 4 + LINE_OVERHEAD), dir.path());
        assert!(on_disk.runs_on_disk >= 25, "{on_disk:?}");
        assert_eq!(on_disk.messages, 3_000);
        let got: Vec<(String, Vec<u8>)> = on_disk.map(Result::unwrap).collect();
        assert_eq!(got, expected);
        let times: Vec<i64> = got.iter().map(|(_, v)| event_time(v).unwrap().0).collect();
        assert!(times.is_sorted());
    }
}
