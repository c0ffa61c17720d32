//! A restart in the middle of a stream of requests: after SIGTERM the
//! bridge drains and commits, so nothing repeats; after SIGKILL only the
//! requests after the last committed offset repeat, with the same
//! Message-ID, derived from the request's `id`. Either way every request
//! is sent, and a further restart sends nothing again.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::{Targets, message_id, parse};
use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::wait_for_mails;
use crate::records::{SETTLE, produce};
use crate::support::{mail_address, unique};

/// Requests in the stream.
const REQUESTS: usize = 60;
/// `max_in_flight` of the pipeline.
const IN_FLIGHT: usize = 2;

/// Bound on repeats after SIGKILL. Up to `IN_FLIGHT` requests are being
/// sent and as many sent ones wait for their status event and commit.
/// Kafka commits a partition only up to its first unfinished offset, and
/// one commit at a time covers a partition, so those that finished after
/// a slower earlier one or while a commit was on its way are repeated too.
/// On a loaded machine a commit takes as long as a few sends, so this is
/// an estimate with room for that.
const MAX_REPEATS: usize = 6 * IN_FLIGHT;

#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

#[tokio::test]
async fn sigterm_mid_stream_loses_and_repeats_nothing() {
    let repeats = restart_mid_stream(Stop::Term).await;
    assert_eq!(repeats, 0, "a drained stop repeated requests");
}

#[tokio::test]
async fn sigkill_mid_stream_loses_nothing() {
    let repeats = restart_mid_stream(Stop::Kill).await;
    assert!(repeats <= MAX_REPEATS, "{repeats} repeats");
}

/// Runs the stream with one stop of kind `stop`, checks that every
/// request arrived and returns the number of repeated mails.
async fn restart_mid_stream(stop: Stop) -> usize {
    let setup = Setup::new("outbound-restart");
    let targets = Targets::new("restart").await;
    let extra = format!("max_in_flight = {IN_FLIGHT}");
    setup.prepare(&targets.kafka(&extra)).await;
    let recipient = mail_address(&unique("recipient"));
    let run = unique("run");
    for index in 0..REQUESTS {
        let request = json!({
            // The Message-ID is derived from the id, so a repeat has the
            // same one.
            "id": format!("{run}-{index}"),
            "to": [recipient],
            "subject": format!("request {index}"),
            "text": "One of a stream.",
        });
        produce(
            &targets.topic,
            &index.to_string(),
            request.to_string().as_bytes(),
        )
        .await;
    }

    let bridge = setup.start();
    let before = wait_until_some(&setup).await;
    match stop {
        Stop::Term => drop(bridge.stop().await),
        Stop::Kill => bridge.kill().await,
    }
    let at_stop = wait_for_mails(&recipient, REQUESTS * 2, Duration::from_millis(500)).await;
    assert!(
        at_stop.len() < REQUESTS,
        "the stream ended before the stop ({} of {REQUESTS} after {before})",
        at_stop.len()
    );

    let bridge = setup.start();
    let mails = wait_for_distinct(&recipient, REQUESTS).await;
    bridge.stop().await;
    let again = setup.start();
    tokio::time::sleep(SETTLE * 2).await;
    again.stop().await;
    let after = wait_for_mails(&recipient, mails.len() + 1, SETTLE).await;

    assert_eq!(
        after.len(),
        mails.len(),
        "a committed request was sent again"
    );
    let counts = count_by_message_id(&after);
    assert_eq!(counts.len(), REQUESTS, "log:\n{}", setup.log());
    let subjects: std::collections::BTreeSet<String> = after
        .iter()
        .map(|raw| parse(raw).subject().unwrap_or_default().to_owned())
        .collect();
    for index in 0..REQUESTS {
        let subject = format!("request {index}");
        assert!(
            subjects.contains(&subject),
            "{subject} is missing after {stop:?}"
        );
    }
    setup.assert_log_has_no_token();
    after.len() - REQUESTS
}

/// Waits until a few, but not all, requests were sent, by the metrics,
/// which answer much faster than a mailbox.
async fn wait_until_some(setup: &Setup) -> f64 {
    let series = r#"mailbridge_smtp_sent_total{pipeline="kafka",result="success"}"#;
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        if let Some(sent) = setup
            .sample_if_listening(series)
            .await
            .filter(|sent| *sent >= 3.0)
        {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing was sent; log:\n{}", setup.log());
}

/// Waits until `count` distinct Message-IDs arrived; returns every mail.
async fn wait_for_distinct(recipient: &str, count: usize) -> Vec<Vec<u8>> {
    // A killed member stays in the group until its session times out
    // (session.timeout.ms, 6 s in the tests' broker properties), and only
    // then does the restarted one get the partition.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mails = wait_for_mails(recipient, count, PATIENCE).await;
        let distinct = count_by_message_id(&mails).len();
        if distinct >= count || std::time::Instant::now() > deadline {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Counts the mails of each Message-ID, and checks that mails with the
/// same Message-ID are the same request.
fn count_by_message_id(mails: &[Vec<u8>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut subjects: BTreeMap<String, String> = BTreeMap::new();
    for raw in mails {
        let id = message_id(raw);
        let subject = parse(raw).subject().unwrap_or_default().to_owned();
        let first = subjects
            .entry(id.clone())
            .or_insert_with(|| subject.clone());
        assert_eq!(*first, subject, "{id} names two requests");
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}
