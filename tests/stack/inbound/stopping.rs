//! When `mailbridge run` must stop or must not start: a closed standard
//! output, a state directory that another process uses. And what it must
//! not log: the body of an unroutable AMQP message.

use std::time::Duration;

use crate::bridge::{PATIENCE, Setup, free_port};
use crate::mailbox::{append, flags, mail};
use crate::support::unique;

/// Returns the lines of `log` at level ERROR.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains(" ERROR "))
        .collect()
}

#[tokio::test]
async fn inbound_closed_stdout_stops_process() {
    let setup = Setup::new("inbound-epipe");
    setup
        .prepare("[inbound.lines]\naccount = \"watched\"\nafter_publish = \"mark_seen\"\n")
        .await;
    let mut bridge = setup.start_piped(&[]);
    setup.wait_ready().await;

    // The reader goes away before any line was written.
    drop(bridge.take_stdout());
    append(&setup.user, "INBOX", &mail(&unique("epipe"), "never read")).await;
    let status = bridge.exit_within(PATIENCE).await;
    let log = setup.log();
    let mails = flags(&setup.user, "INBOX").await;

    let status = status.unwrap_or_else(|| panic!("still running; log:\n{log}"));
    assert!(!status.success(), "exit status {status}; log:\n{log}");
    let errors = error_lines(&log);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("Broken pipe"), "{}", errors[0]);
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(
        !mails[0].1.iter().any(|flag| flag.contains("Seen")),
        "an unread mail was marked: {mails:?}"
    );
    let checkpoint = setup.checkpoint("lines", "INBOX");
    let last_uid = checkpoint
        .as_ref()
        .map_or(0, |c| c["last_uid"].as_u64().unwrap());
    assert_eq!(last_uid, 0, "{checkpoint:?}");
}

#[tokio::test]
async fn inbound_second_run_on_state_rejected() {
    let setup = Setup::new("inbound-lock");
    setup
        .prepare("[inbound.lines]\naccount = \"watched\"\nstart_from = \"new\"\n")
        .await;
    let first = setup.start();
    setup.wait_ready().await;

    let listen = format!("127.0.0.1:{}", free_port());
    let mut second = setup.start_piped(&[("MAILBRIDGE_METRICS__LISTEN", &listen)]);
    let status = second.exit_within(Duration::from_secs(10)).await;
    // Signing in again needs no lock, so it works next to the first run.
    setup.authorize_again().await;
    setup.wait_ready().await;
    first.stop().await;

    let log = setup.log();
    let status = status.unwrap_or_else(|| panic!("the second run keeps running; log:\n{log}"));
    assert!(!status.success(), "exit status {status}");
    let message = "another mailbridge process uses the state directory";
    assert!(log.contains(message), "{log}");
    assert!(
        log.contains(&setup.state().display().to_string()),
        "the message names the directory: {log}"
    );
}

#[tokio::test]
async fn inbound_unroutable_message_body_kept_out_of_log() {
    let setup = Setup::new("inbound-unroutable");
    let queue = unique("no-such-queue");
    let pipeline = format!(
        "[inbound.rabbitmq]\naccount = \"watched\"\nbroker = \"rabbitmq\"\n\
         exchange = \"\"\nrouting_key = \"{queue}\"\n"
    );
    setup.prepare(&pipeline).await;
    let subject = unique("confidential-subject");
    append(&setup.user, "INBOX", &mail(&unique("unroutable"), &subject)).await;

    // A level that does not name lapin, as an operator would set it.
    let bridge = setup.start_piped(&[("MAILBRIDGE_LOG__LEVEL", "debug")]);
    let reported = wait_for_log(&setup, &format!("no queue is named \"{queue}\"")).await;
    bridge.stop().await;

    let log = setup.log();
    assert!(reported, "our own error is missing; log:\n{log}");
    assert!(!log.contains("lapin::returned_messages"), "{log}");
    assert!(!log.contains("BasicReturnMessage"), "{log}");
    assert!(!log.contains(&subject), "{log}");
}

/// Waits until the log contains `text`, and returns false when it does not
/// within [`PATIENCE`].
async fn wait_for_log(setup: &Setup, text: &str) -> bool {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        if setup.log().contains(text) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
