//! `churnwatch footprint`: what the scoring service's state costs per customer. Events are
//! folded by the core engine into the real sled store exactly as scoring does (one atomic batch
//! per partition per batch of events, flushed), without Kafka in the way, so that a million
//! customers can be measured in minutes. Reports sled bytes on disk and the process's resident
//! memory, each per customer.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use churnwatch_core::engine::{Clock, Engine, Work};
use churnwatch_core::{Model, Timestamp, parse_event};
use churnwatch_store::{Commit, LiveBytes, Store};

use crate::stdout::outln;

/// Arguments of `churnwatch footprint`.
#[derive(Debug, clap::Args)]
pub struct FootprintArgs {
    /// The events, one JSON object per line in time order ("-" for standard input), e.g. from
    /// `churnwatch generate --customers 1000000 --months 12`.
    #[arg(long)]
    pub events: PathBuf,
    /// Directory of the sled store to fill; must be empty or missing.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Partitions to spread customers over, as Kafka would by key.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Events per batch (one sled batch per partition, flushed).
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// sled's page cache in MiB, as scoring's `state_cache_mb`.
    #[arg(long, default_value_t = scoring::ScoringConfig::default().state_cache_mb)]
    pub cache_mb: u64,
    #[command(flatten)]
    pub core: crate::eval::CoreArgs,
}

/// Reads a figure in kB from /proc/self/status (Linux).
fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `churnwatch footprint`.
pub fn run(args: &FootprintArgs) -> Result<()> {
    anyhow::ensure!(args.partitions >= 1, "--partitions must be at least 1");
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    if args
        .state_dir
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        anyhow::bail!(
            "--state-dir {} is not empty; give a new directory so only this run is measured",
            args.state_dir.display()
        );
    }
    let parse = args.core.parse_config()?;
    let store = Store::open_with_cache(&args.state_dir, args.cache_mb << 20)?;
    let mut parts = Vec::new();
    for p in 0..args.partitions {
        let engine = Engine::new(
            Model::default(),
            Clock::Event { lateness_secs: 0 },
            None,
            Default::default(),
        );
        parts.push((engine, store.partition(p as i32)?, Work::default()));
    }
    let (lines, bar) = crate::eval::open_lines(&args.events)?;
    let started = Instant::now();
    let mut events = 0u64;
    let mut rejected = 0u64;
    let mut in_batch = 0usize;
    let far_future = Timestamp(i64::MAX / 4);
    // As scoring by default, with the feed arriving in real time: processing time is the
    // watermark, so the event ids held are those of a live deployment's steady state rather
    // than of a backfill (which keeps every id for `dedup_min_age`).
    let retention = scoring::ScoringConfig::default().seen_retention();
    let flush = |parts: &mut Vec<(Engine, churnwatch_store::Partition, Work)>| -> Result<()> {
        for (engine, partition, work) in parts.iter_mut() {
            let done = std::mem::take(work);
            if done.is_empty() {
                continue;
            }
            let watermark = engine.watermark();
            partition.commit(&Commit::of_work(
                &done,
                watermark,
                watermark.unwrap_or_default(),
                retention,
            ))?;
        }
        store.flush()?;
        Ok(())
    };
    for line in lines {
        let line = line?;
        bar.inc(line.len() as u64 + 1);
        let Ok(event) = parse_event(&line, far_future, &parse) else {
            rejected += 1;
            continue;
        };
        let p = (xxhash_rust::xxh3::xxh3_64(event.customer_id.as_bytes())
            % u64::from(args.partitions)) as u32;
        let (engine, partition, work) = &mut parts[p as usize];
        engine.on_event(work, partition, &event, far_future)?;
        events += 1;
        in_batch += 1;
        if in_batch == args.batch_size {
            flush(&mut parts)?;
            in_batch = 0;
        }
    }
    flush(&mut parts)?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let total: u64 = parts
        .iter()
        .map(|(_, partition, _)| partition.states().count() as u64)
        .sum();
    let mut live = LiveBytes::default();
    for (_, partition, _) in &parts {
        live += partition.live_bytes()?;
    }
    let disk = store.size_on_disk()?;
    let peak_kb = proc_status_kb("VmHWM:").unwrap_or(0);
    let rss_kb = proc_status_kb("VmRSS:").unwrap_or(0);
    let per = |bytes: u64| bytes as f64 / total.max(1) as f64;
    outln!(
        "customers:        {total} over {} partitions",
        args.partitions
    );
    outln!(
        "events:           {events} applied in {secs:.1} s ({:.0} events/s), {rejected} rejected",
        events as f64 / secs
    );
    outln!(
        "sled on disk:     {:.1} MiB = {:.0} bytes per customer",
        disk as f64 / 1048576.0,
        per(disk)
    );
    outln!(
        "live data:        {:.1} MiB = {:.0} bytes per customer (states {:.0}, event ids {:.0}, timers {:.0}); sled uses {:.1}x that on disk",
        live.total() as f64 / 1048576.0,
        per(live.total()),
        per(live.states),
        per(live.seen),
        per(live.timers),
        disk as f64 / live.total().max(1) as f64
    );
    outln!(
        "peak RSS:         {:.1} MiB = {:.0} bytes per customer (now {:.1} MiB)",
        peak_kb as f64 / 1024.0,
        per(peak_kb * 1024),
        rss_kb as f64 / 1024.0
    );
    Ok(())
}
