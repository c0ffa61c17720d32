//! Token trouble during sends: a failing token endpoint makes the send
//! retry until the endpoint recovers, and a token that the SMTP server
//! rejects is refreshed once and the mail still goes out.

use serde_json::{Value, json};

use super::{KAFKA, Targets, request};
use crate::bridge::{ACCOUNT, PATIENCE, Setup};
use crate::mailbox::wait_for_mails;
use crate::records::{SETTLE, kafka_raw, produce};
use crate::support::{http, mail_address, stack, unique};

/// Token requests that fail: more than the token client's own five
/// attempts, so that the first send attempt fails and the pipeline
/// retries.
const FAILURES: u32 = 8;

async fn control(body: Value) -> Value {
    let response = http()
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

/// Restores the OAuth2 server's defaults when dropped, even after a
/// failed assert, because its settings are shared by every test.
struct RestoreControl;

impl Drop for RestoreControl {
    fn drop(&mut self) {
        let restore = || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(control(json!({
                "access_token_lifetime": 3600,
                "fail": {"endpoint": "token", "count": 0},
            })));
        };
        // A runtime cannot start inside the test's runtime thread.
        let _ = std::thread::spawn(restore).join();
    }
}

#[tokio::test]
async fn sends_wait_for_a_failing_token_endpoint_in_sequence() {
    let _restore = RestoreControl;
    let setup = Setup::new("outbound-token");
    let targets = Targets::new("token").await;
    // A short lifetime makes the token of the sign-in too old to use, so
    // the first send needs a refresh.
    control(json!({"access_token_lifetime": 30})).await;
    setup.prepare(&targets.kafka("")).await;
    let recipient = mail_address(&unique("recipient"));
    let fail = json!({"fail": {"endpoint": "token", "mode": "500", "count": FAILURES}});
    control(fail).await;

    let bridge = setup.start();
    produce(
        &targets.topic,
        "k",
        request(&recipient, "after the outage")
            .to_string()
            .as_bytes(),
    )
    .await;
    // The test's own mailbox reads need tokens too, so it waits until
    // the bridge used up the failures.
    let state = wait_for_recovery().await;
    let mails = wait_for_mails(&recipient, 1, PATIENCE).await;
    let dead = kafka_raw(&targets.topic_dead, 0, SETTLE).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    assert_eq!(mails.len(), 1, "log:\n{}", setup.log());
    assert!(state["failures"].get("token").is_none(), "{state}");
    assert!(
        dead.is_empty(),
        "a transient token failure was dead-lettered"
    );
    let series = |name: &str| format!("{name}{{pipeline=\"{KAFKA}\"");
    let retries = metric(&metrics, &series("mailbridge_outbound_retries_total"));
    assert!(retries >= 1.0, "no retry in\n{metrics}");
    let token_attempts = metric(
        &metrics,
        &(series("mailbridge_smtp_sent_total") + ",result=\"token\"}"),
    );
    assert!(token_attempts >= 1.0, "{metrics}");
    let failed_refreshes: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("mailbridge_oauth2_token_refreshes_total{"))
        .filter(|line| !line.contains("result=\"success\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // Other clients of the shared server may take some of the injected
    // failures, so only the bounds are certain.
    assert!(
        (1.0..=f64::from(FAILURES)).contains(&failed_refreshes),
        "{failed_refreshes} failed refreshes in\n{metrics}"
    );
    setup.assert_log_has_no_token();
}

/// Waits until no injected token failure is left; returns the state.
async fn wait_for_recovery() -> Value {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let state = http()
            .get(stack("STACK_OAUTH_CONTROL_URL"))
            .send()
            .await
            .expect("control state")
            .json::<Value>()
            .await
            .expect("control state is JSON");
        if state["failures"].get("token").is_none() || std::time::Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_revoked_access_token_is_refreshed_and_the_mail_sent() {
    let setup = Setup::new("outbound-revoked");
    let targets = Targets::new("revoked").await;
    setup.prepare(&targets.kafka("")).await;
    let recipient = mail_address(&unique("recipient"));
    revoke(&stored_access_token(&setup)).await;

    let bridge = setup.start();
    produce(
        &targets.topic,
        "k",
        request(&recipient, "with a new token")
            .to_string()
            .as_bytes(),
    )
    .await;
    let mails = wait_for_mails(&recipient, 1, PATIENCE).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    assert_eq!(mails.len(), 1, "log:\n{}", setup.log());
    let failures =
        format!("mailbridge_auth_failures_total{{account=\"{ACCOUNT}\",protocol=\"smtp\"");
    assert!(
        metric(&metrics, &failures) >= 1.0,
        "{failures} in\n{metrics}"
    );
    let sent = format!("mailbridge_smtp_sent_total{{pipeline=\"{KAFKA}\",result=\"success\"}} 1");
    assert!(metrics.contains(&sent), "{sent} in\n{metrics}");
    setup.assert_log_has_no_token();
}

fn stored_access_token(setup: &Setup) -> String {
    let file = setup.state().join("tokens").join(format!("{ACCOUNT}.json"));
    let tokens: Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("token file")).expect("JSON");
    tokens["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

/// Revokes one access token (RFC 7009); its refresh token stays valid.
async fn revoke(token: &str) {
    let response = http()
        .post(stack("STACK_OAUTH_REVOKE_URL"))
        .basic_auth(
            stack("STACK_OAUTH_CLIENT_ID"),
            Some(stack("STACK_OAUTH_CLIENT_SECRET")),
        )
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .expect("revoke request");
    assert!(
        response.status().is_success(),
        "revoke: {}",
        response.status()
    );
}

/// The sum of the samples whose line starts with `series`.
fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
