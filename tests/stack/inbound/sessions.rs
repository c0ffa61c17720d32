//! IMAP sessions that fail or end: a mailbox that does not exist leaves
//! the other mailboxes of its pipeline alone, and a session that Dovecot
//! ends is opened again without losing the mail that arrived meanwhile.
//! A sign-in that Dovecot cannot check for now is retried as transient.

use std::time::{Duration, Instant};

use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::{append, mail};
use crate::records::{create_topic, kafka_records, kafka_settled};
use crate::support::{stack, unique};

/// Writes a Kafka pipeline on `mailboxes` (a TOML array) with a topic of
/// its own, signs the account in, and returns the topic.
async fn prepare(setup: &Setup, mailboxes: &str) -> String {
    let topic = unique("sessions.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nmailboxes = {mailboxes}\n\
         broker = \"kafka\"\ntopic = \"{topic}\"\n"
    );
    setup.prepare(&pipeline).await;
    topic
}

/// Waits until the metric line that starts with `series` has a value of
/// at least `minimum`, and returns the last value read.
async fn wait_for_sample(setup: &Setup, series: &str, minimum: f64) -> Option<f64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = setup.sample(series).await;
        if value.is_some_and(|value| value >= minimum) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn inbound_missing_mailbox_leaves_others_running() {
    let setup = Setup::new("inbound-isolation");
    let topic = prepare(&setup, "[\"INBOX\", \"Missing\"]").await;
    append(&setup.user, "INBOX", &mail(&unique("i"), "before")).await;
    let bridge = setup.start();
    let first = kafka_records(&topic, 1, PATIENCE).await;

    let missing = "mailbridge_imap_reconnects_total{account=\"watched\",mailbox=\"Missing\",\
                   reason=\"mailbox_not_found\"}";
    let failures = wait_for_sample(&setup, missing, 2.0).await;
    append(&setup.user, "INBOX", &mail(&unique("i"), "after")).await;
    let records = kafka_settled(&topic, 2, PATIENCE).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    assert_eq!(first.len(), 1, "log:\n{}", setup.log());
    assert!(
        failures.is_some_and(|failures| failures >= 2.0),
        "the missing mailbox was not retried: {failures:?}"
    );
    assert_eq!(records.len(), 2, "log:\n{}", setup.log());
    assert_eq!(records[1].document["subject"], "after");
    assert_eq!(records[1].document["mailbox"], "INBOX");
    let connected = |mailbox: &str| {
        let series =
            format!("mailbridge_imap_connected{{account=\"watched\",mailbox=\"{mailbox}\"}}");
        metrics
            .lines()
            .find(|line| line.starts_with(&series))
            .map(str::to_owned)
    };
    assert_eq!(
        connected("INBOX")
            .as_deref()
            .map(|line| line.ends_with(" 1")),
        Some(true)
    );
    assert_eq!(
        connected("Missing")
            .as_deref()
            .map(|line| line.ends_with(" 0")),
        Some(true)
    );
    assert!(setup.checkpoint("kafka", "Missing").is_none());
    let log = setup.log();
    assert!(log.contains("Mailbox watch failed; reconnecting"), "{log}");
    assert!(
        log.contains("\"Missing\""),
        "the error names the mailbox: {log}"
    );
}

/// Ends every IMAP session of `user` with `doveadm kick`, against the
/// stack's own Dovecot instance, and returns what doveadm printed.
async fn kick(user: &str) -> String {
    let config = std::path::Path::new(&stack("STACK_DIR")).join("dovecot/dovecot.conf");
    let user = user.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("doveadm")
            .arg("-c")
            .arg(&config)
            .args(["kick", &user])
            .output()
            .expect("run doveadm kick")
    })
    .await
    .expect("join doveadm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "doveadm kick failed: {text}");
    text
}

#[tokio::test]
async fn inbound_kicked_session_reconnects_without_loss() {
    let setup = Setup::new("inbound-kick");
    let topic = prepare(&setup, "[\"INBOX\"]").await;
    let bridge = setup.start();
    setup.wait_ready().await;
    append(&setup.user, "INBOX", &mail(&unique("k"), "before the kick")).await;
    let before = kafka_records(&topic, 1, PATIENCE).await;

    let kicked = kick(&setup.user).await;
    // The watch waits at least a second before it reconnects, so this mail
    // arrives while no session is open.
    append(&setup.user, "INBOX", &mail(&unique("k"), "during the kick")).await;
    let during = kafka_records(&topic, 2, PATIENCE).await;
    append(&setup.user, "INBOX", &mail(&unique("k"), "after the kick")).await;
    let records = kafka_settled(&topic, 3, PATIENCE).await;
    let reconnects = setup.metrics().await;
    bridge.stop().await;

    let log = setup.log();
    assert_eq!(before.len(), 1, "log:\n{log}");
    assert!(kicked.contains("kicked"), "doveadm output: {kicked}");
    assert_eq!(during.len(), 2, "log:\n{log}");
    let subjects: Vec<&str> = records
        .iter()
        .map(|record| record.document["subject"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        subjects,
        ["before the kick", "during the kick", "after the kick"],
        "each mail once, in order"
    );
    let uids: Vec<u64> = records
        .iter()
        .map(|record| record.document["uid"].as_u64().expect("uid"))
        .collect();
    assert_eq!(uids, [1, 2, 3]);
    assert!(
        reconnects.lines().any(|line| line
            .starts_with("mailbridge_imap_reconnects_total{account=\"watched\",mailbox=\"INBOX\"")),
        "{reconnects}"
    );
    let sign_ins = log.matches("Signed in to IMAP server").count();
    assert!(sign_ins >= 2, "{sign_ins} sign-ins:\n{log}");
    let checkpoint = setup.checkpoint("kafka", "INBOX").expect("checkpoint");
    assert_eq!(checkpoint["last_uid"], 3);
}

/// Makes the OAuth2 server's `/introspect` fail until dropped, also after
/// a failed assert. Dovecot then rejects every sign-in with
/// `NO [UNAVAILABLE] Temporary authentication failure.` Every test shares
/// the OAuth2 server, so a test that uses it runs alone.
struct IntrospectionOutage;

impl IntrospectionOutage {
    async fn begin(count: u32) -> Self {
        let fail = serde_json::json!({"endpoint": "introspect", "mode": "503", "count": count});
        oauth2_control(serde_json::json!({ "fail": fail })).await;
        Self
    }

    /// Returns how many of the injected failures were not used yet.
    async fn remaining() -> u64 {
        let state = oauth2_control(serde_json::json!({})).await;
        state["failures"]["introspect"]["remaining"]
            .as_u64()
            .unwrap_or(0)
    }
}

impl Drop for IntrospectionOutage {
    fn drop(&mut self) {
        let clear = || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let body = serde_json::json!({"fail": {"endpoint": "introspect", "count": 0}});
            runtime.block_on(oauth2_control(body));
        };
        // A runtime cannot start inside the test's runtime thread.
        let _ = std::thread::spawn(clear).join();
    }
}

async fn oauth2_control(body: serde_json::Value) -> serde_json::Value {
    let response = crate::support::http()
        .post(stack("STACK_OAUTH_CONTROL_URL"))
        .json(&body)
        .send()
        .await
        .expect("control request");
    assert!(
        response.status().is_success(),
        "control: {}",
        response.status()
    );
    response.json().await.expect("control response is JSON")
}

/// Dovecot cannot check tokens while introspection fails. The watch must
/// treat its `NO [UNAVAILABLE]` as transient: no forced refresh, no mark
/// that the account needs authorization, and reconnects with backoff
/// until a sign-in succeeds.
#[tokio::test]
async fn inbound_introspection_outage_retries_in_sequence() {
    const FAILURES: u32 = 2;
    let setup = Setup::new("inbound-introspect");
    let topic = prepare(&setup, "[\"INBOX\"]").await;
    append(
        &setup.user,
        "INBOX",
        &mail(&unique("i"), "during the outage"),
    )
    .await;

    let outage = IntrospectionOutage::begin(FAILURES).await;
    let bridge = setup.start();
    let records = kafka_records(&topic, 1, PATIENCE).await;
    let remaining = IntrospectionOutage::remaining().await;
    drop(outage);
    let metrics = setup.metrics().await;
    bridge.stop().await;

    let log = setup.log();
    assert_eq!(records.len(), 1, "log:\n{log}");
    assert_eq!(remaining, 0, "the injected failures were not all used");
    let sample = |series: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let unavailable = sample(
        "mailbridge_imap_reconnects_total{account=\"watched\",mailbox=\"INBOX\",\
         reason=\"auth_unavailable\"}",
    );
    assert_eq!(unavailable, Some(f64::from(FAILURES)), "{metrics}");
    let failures = sample(
        "mailbridge_auth_failures_total{account=\"watched\",protocol=\"imap\",\
         reason=\"auth_unavailable\"}",
    );
    assert_eq!(failures, Some(f64::from(FAILURES)), "{metrics}");
    let token_rejected = sample(
        "mailbridge_auth_failures_total{account=\"watched\",protocol=\"imap\",\
         reason=\"token_rejected\"}",
    );
    assert_eq!(token_rejected, None, "{metrics}");
    let refreshes =
        sample("mailbridge_oauth2_token_refreshes_total{account=\"watched\",result=\"success\"}");
    assert_eq!(refreshes.unwrap_or(0.0), 0.0, "a token was refreshed");
    let required = sample("mailbridge_oauth2_authorization_required{account=\"watched\"}");
    assert_eq!(required, Some(0.0), "{metrics}");
    assert!(!log.contains("Account needs authorization"), "{log}");
    // Dovecot ends the reply with its host name and the time to the
    // second, so the log's rate limit drops a second warning within the
    // same second as a repeat.
    let retries: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("Mailbox watch failed; reconnecting"))
        .collect();
    assert!(!retries.is_empty(), "log:\n{log}");
    assert!(retries.len() <= FAILURES as usize, "{retries:#?}");
    for (index, line) in retries.iter().enumerate() {
        assert!(line.contains("auth_unavailable"), "{line}");
        assert!(line.contains(&format!("attempt={}", index + 1)), "{line}");
        assert!(line.contains("retry_in_ms="), "{line}");
    }
}

#[tokio::test]
async fn inbound_state_write_retried_in_place() {
    let setup = Setup::new("inbound-state-fails");
    let topic = unique("sessions.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nmailboxes = [\"INBOX\"]\n\
         broker = \"kafka\"\ntopic = \"{topic}\"\nbatch_size = 5\n"
    );
    setup.prepare(&pipeline).await;
    for n in 0..12 {
        append(
            &setup.user,
            "INBOX",
            &mail(&unique("s"), &format!("mail {n}")),
        )
        .await;
    }
    // A directory where the keys file belongs makes every write fail, as
    // a full disk would, until it is removed.
    let known = setup.state().join("checkpoints/kafka/INBOX.known");
    std::fs::create_dir_all(&known).expect("create the blocking directory");

    let bridge = setup.start();
    let (status, body) = setup
        .wait_readyz(PATIENCE, |_, body| body.to_string().contains("INBOX.known"))
        .await;
    // Several attempts fail meanwhile, after random delays of up to 0.5 s
    // at first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = kafka_settled(&topic, 5, PATIENCE).await;
    // The mails fetched count though no batch was checkpointed yet.
    let fetched = "mailbridge_imap_messages_fetched_total{account=\"watched\",mailbox=\"INBOX\"}";
    let fetched_during = setup.sample(fetched).await;
    std::fs::remove_dir(&known).expect("remove the blocking directory");
    let records = kafka_settled(&topic, 12, PATIENCE).await;
    bridge.stop().await;

    let log = setup.log();
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("free space"), "{body}");
    assert_eq!(during.len(), 5, "the first batch went out again:\n{log}");
    assert!(
        fetched_during.is_some_and(|fetched| fetched >= 5.0),
        "fetched mails not counted: {fetched_during:?}"
    );
    assert_eq!(records.len(), 12, "log:\n{log}");
    let ids: std::collections::BTreeSet<_> = records
        .iter()
        .map(|record| record.document["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 12, "repeats:\n{log}");
    assert!(
        log.contains("Checkpoint not saved; retrying"),
        "log:\n{log}"
    );
    assert!(
        log.contains("Checkpoint saved after failed attempts"),
        "log:\n{log}"
    );
}
