//! PENDING (not compiled): the kill -9 recovery test of issue 3. It currently FAILS against
//! tansu: after `kill -9` of scoring and a restart, the restarted consumer resumes at the
//! group's committed offset, yet some customers whose events lie before that offset are
//! missing from the store (e.g. 14 of 500 customers, 40 with incomplete state). sled's own
//! durability was ruled out (kill -9 after `Db::flush` never lost an acknowledged batch in a
//! separate experiment); the next step is to log, per batch, the offsets processed and stored by
//! the first run and compare them with the offset the second run resumes at. Move it back into
//! `tests/tests/pipeline.rs` (it uses the `Rig` there) once fixed.

#[test]
fn kill_9_of_scoring_mid_stream_then_a_restart_ends_in_the_uninterrupted_state() {
    let rig = Rig::new(Storage::Memory);
    let feed = feed(500, 12, 22);
    let mut ingest = rig.ingest();
    produce(
        &rig.broker.brokers(),
        "orders",
        feed.lines.iter().map(|(k, v, _)| (k.clone(), v.clone())),
    );
    let ingested = wait_until(Duration::from_secs(120), || {
        rig.committed("churnwatch-order-ingest", "orders") == Some(feed.len())
    });
    assert!(ingested, "{}", ingest.log());

    let mut scoring = rig.scoring();
    // Crash once some, but not all, of the work is committed.
    let started = wait_until(Duration::from_secs(120), || {
        rig.committed("churnwatch-scoring", "orders-accepted")
            .is_some_and(|c| c > 0)
    });
    assert!(
        started,
        "scoring never committed anything:\n{}",
        scoring.log()
    );
    scoring.kill9();
    let at_crash = rig.committed("churnwatch-scoring", "orders-accepted");
    std::fs::write(
        "/tmp/k9-order.txt",
        accepted_ids
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    assert!(
        at_crash.is_some_and(|c| c < feed.accepted()),
        "the crash came too late to test anything ({at_crash:?} of {} committed)",
        feed.accepted()
    );
    eprintln!(
        "DEBUG states after crash: {}; c000121 present: {}",
        after_crash.len(),
        after_crash.contains_key("c000121")
    );
    eprintln!(
        "DEBUG first run log: {}",
        scoring
            .log()
            .lines()
            .filter(|l| l.contains("offset") && !l.contains("\"batch\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut scoring = rig.scoring();
    rig.wait_drained(
        feed.len(),
        feed.accepted(),
        &mut [&mut ingest, &mut scoring],
    );
    eprintln!(
        "DEBUG second run log: {}",
        scoring
            .log()
            .lines()
            .filter(|l| l.contains("partition"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    terminate_cleanly(&mut scoring);
    terminate_cleanly(&mut ingest);
    assert_same_states(&export(&rig.state_dir()), &reference(&feed));
}

